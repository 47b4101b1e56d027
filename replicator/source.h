/*
 * The source side: connecting (normal and replication connections),
 * preflight checks, discovering tenant schemas, and creating the
 * publications and slots each slot group streams from.
 */
#ifndef ZETL_SOURCE_H
#define ZETL_SOURCE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"

/* One slot group: the tenant schemas streamed through one slot. */
struct zetl_source_group {
    int index;
    char
        *name; /* owned: slot and publication name, "<source.slot>_<index>"; also the stream name */
    char **schemas; /* owned */
    size_t nschemas;
};

struct zetl_source_plan {
    struct zetl_source_group *groups; /* owned; only groups with at least one schema */
    size_t ngroups;
    bool superuser;     /* the source role is a superuser (FOR TABLES IN SCHEMA allowed) */
    int server_version; /* PQserverVersion */
};

/*
 * Connects to the source.  With `replication`, opens a logical replication
 * connection (replication=database).  Classifies failures: unreachable server
 * is ZETL_ERR_RETRY, authentication failure ZETL_ERR_FATAL.  Messages never
 * contain the password.  *out is owned by the caller (PQfinish).
 */
enum zetl_err zetl_source_connect(const char *dsn, bool replication, const char *app_name,
                                  PGconn **out, struct zetl_errbuf *eb);

/*
 * The connected role may replicate: superuser, the REPLICATION attribute or
 * membership in rds_replication (Aurora/RDS); the error names the role and
 * the statement that fixes it.
 */
enum zetl_err zetl_source_preflight_role(PGconn *conn, struct zetl_errbuf *eb);
/* Server version >= 14 and wal_level = logical. */
enum zetl_err zetl_source_preflight_server(PGconn *conn, struct zetl_errbuf *eb);
/* Both of the above, the role first. */
enum zetl_err zetl_source_preflight(PGconn *conn, struct zetl_errbuf *eb);

/* Finds tenant schemas (source.tenants.schemas) and spreads them over slot groups. */
enum zetl_err zetl_source_discover(PGconn *conn, const struct zetl_config *cfg,
                                   struct zetl_source_plan *plan, struct zetl_errbuf *eb);
void zetl_source_plan_release(struct zetl_source_plan *plan);

/*
 * Creates or updates each group's publication and creates missing slots
 * (pgoutput).  Idempotent.  Warns about published tables that lack a primary
 * key and whose replica identity is not FULL.
 */
enum zetl_err zetl_source_setup(PGconn *conn, const struct zetl_config *cfg,
                                const struct zetl_source_plan *plan, struct zetl_errbuf *eb);

/*
 * Whether the publications name tenant schemas (FOR TABLES IN SCHEMA: every
 * table selected, a superuser, PostgreSQL 15) rather than tables: then a
 * table created in a tenant schema is published from its creation on.
 */
bool zetl_source_schema_publication(const struct zetl_config *cfg,
                                    const struct zetl_source_plan *plan);

/* pg_current_wal_insert_lsn() of the source: includes commits not yet written out. */
enum zetl_err zetl_source_current_lsn(PGconn *conn, uint64_t *lsn, struct zetl_errbuf *eb);

/*
 * Runs one statement with text parameters.  With res, the result is the
 * caller's (PQclear); without, it is cleared.  A server error is
 * ZETL_ERR_FATAL, a lost connection ZETL_ERR_RETRY; the message is the
 * server's first line.
 */
enum zetl_err zetl_source_exec(PGconn *conn, const char *sql, int n, const char *const *params,
                               PGresult **res, struct zetl_errbuf *eb);

/* Group index of a schema: stable across runs for the same slot_groups. */
int zetl_source_group_of(const char *schema, int slot_groups);

#endif
