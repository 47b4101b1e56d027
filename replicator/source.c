/* Source connection, preflight, tenant discovery, publications and slots. */
#include "replicator/source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sqlquote.h"
#include "common/buf.h"
#include "common/glob.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "transforms/transform.h"

/* First line of a libpq error message, without the trailing newline. */
static void first_line(const char *msg, char *out, size_t outsz)
{
    size_t n = strcspn(msg, "\n");

    if (n >= outsz)
        n = outsz - 1;
    memcpy(out, msg, n);
    out[n] = '\0';
}

enum zetl_err zetl_source_connect(const char *dsn, bool replication, const char *app_name,
                                  PGconn **out, struct zetl_errbuf *eb)
{
    /* expand_dbname = 1: the DSN is a conninfo string or URI; later keys override it. */
    const char *keys[] = {"dbname", "fallback_application_name", "replication", NULL};
    const char *vals[] = {dsn, app_name, "database", NULL};
    char line[512];
    PGconn *conn;

    if (!replication)
        keys[2] = NULL;
    conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(conn);
        /* libpq quotes a DSN it cannot parse, password and all. */
        char *safe = zetl_config_redact_conn_error(dsn, msg);
        enum zetl_err err = ZETL_ERR_RETRY;

        first_line(safe, line, sizeof(line));
        free(safe);
        if (strstr(msg, "authentication failed") || strstr(msg, "no pg_hba.conf entry") ||
            strstr(msg, "password") || strstr(msg, "does not exist") ||
            strstr(msg, "permission denied") || strstr(msg, "invalid") ||
            strstr(msg, "must be superuser or replication role"))
            err = ZETL_ERR_FATAL;
        PQfinish(conn);
        return zetl_err_set(eb, err, "%s", line);
    }
    *out = conn;
    return ZETL_OK;
}

/* Runs a query expected to return tuples; *res owned by the caller. */
static enum zetl_err query(PGconn *conn, const char *sql, PGresult **res, struct zetl_errbuf *eb)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    char line[512];

    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        first_line(PQresultErrorMessage(r), line, sizeof(line));
        PQclear(r);
        return zetl_err_set(eb, PQstatus(conn) == CONNECTION_OK ? ZETL_ERR_FATAL : ZETL_ERR_RETRY,
                            "%s", line);
    }
    *res = r;
    return ZETL_OK;
}

enum zetl_err zetl_source_exec(PGconn *conn, const char *sql, int n, const char *const *params,
                               PGresult **res, struct zetl_errbuf *eb)
{
    PGresult *r = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    char line[512];

    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        first_line(PQresultErrorMessage(r), line, sizeof(line));
        PQclear(r);
        return zetl_err_set(eb, PQstatus(conn) == CONNECTION_OK ? ZETL_ERR_FATAL : ZETL_ERR_RETRY,
                            "%s", line);
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return ZETL_OK;
}

enum zetl_err zetl_source_preflight_role(PGconn *conn, struct zetl_errbuf *eb)
{
    PGresult *res = NULL;
    enum zetl_err err;
    char *q;

    err = query(conn,
                "SELECT r.rolsuper OR r.rolreplication OR "
                "coalesce((SELECT pg_has_role(current_user, oid, 'member') FROM pg_roles "
                "WHERE rolname = 'rds_replication'), false), current_user "
                "FROM pg_roles r WHERE r.rolname = current_user",
                &res, eb);
    if (err)
        return err;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not read the source role's privileges");
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        PQclear(res);
        return ZETL_OK;
    }
    q = zetl_sql_quote_ident(PQgetvalue(res, 0, 1));
    err = zetl_err_set(eb, ZETL_ERR_FATAL,
                       "source role \"%s\" lacks the REPLICATION privilege: run ALTER ROLE %s "
                       "REPLICATION (on Aurora/RDS: GRANT rds_replication TO %s)",
                       PQgetvalue(res, 0, 1), q, q);
    free(q);
    PQclear(res);
    return err;
}

enum zetl_err zetl_source_preflight_server(PGconn *conn, struct zetl_errbuf *eb)
{
    PGresult *res = NULL;
    enum zetl_err err;

    if (PQserverVersion(conn) < 140000)
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "source server version %d is not supported (PostgreSQL 14 or later is "
                            "required for pgoutput streaming)",
                            PQserverVersion(conn));
    if ((err = query(conn, "SELECT current_setting('wal_level')", &res, eb)) != ZETL_OK)
        return err;
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "logical") != 0)
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "source wal_level is \"%s\", logical replication needs \"logical\": set "
                           "wal_level = logical (on Aurora/RDS: rds.logical_replication = 1 in the "
                           "parameter group) and restart the server",
                           PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return err;
}

enum zetl_err zetl_source_preflight(PGconn *conn, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    /* The role first: it is what a newcomer's setup most often misses. */
    if ((err = zetl_source_preflight_role(conn, eb)) != ZETL_OK)
        return err;
    return zetl_source_preflight_server(conn, eb);
}

int zetl_source_group_of(const char *schema, int slot_groups)
{
    /* FNV-1a: stable across runs and platforms, unlike any hash seeded at start. */
    uint32_t h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)schema; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return slot_groups > 1 ? (int)(h % (uint32_t)slot_groups) : 0;
}

void zetl_source_plan_release(struct zetl_source_plan *plan)
{
    for (size_t i = 0; i < plan->ngroups; i++) {
        struct zetl_source_group *g = &plan->groups[i];
        for (size_t j = 0; j < g->nschemas; j++)
            free(g->schemas[j]);
        free(g->schemas);
        free(g->name);
    }
    free(plan->groups);
    plan->groups = NULL;
    plan->ngroups = 0;
}

static void patterns_text(const struct zetl_strlist *l, struct zetl_buf *b)
{
    for (size_t i = 0; i < l->n; i++)
        zetl_buf_printf(b, "%s\"%s\"", i ? ", " : "", l->items[i]);
}

enum zetl_err zetl_source_discover(PGconn *conn, const struct zetl_config *cfg,
                                   struct zetl_source_plan *plan, struct zetl_errbuf *eb)
{
    int ngroups = cfg->source.slot_groups > 0 ? cfg->source.slot_groups : 1;
    struct zetl_source_group *groups = zetl_calloc((size_t)ngroups, sizeof(*groups));
    PGresult *res = NULL;
    enum zetl_err err;
    size_t found = 0;

    memset(plan, 0, sizeof(*plan));
    err = query(conn,
                "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> "
                "'information_schema' ORDER BY nspname",
                &res, eb);
    if (err)
        goto fail;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *s = PQgetvalue(res, i, 0);
        if (!zetl_transform_schema_selected(cfg, s))
            continue;
        struct zetl_source_group *g = &groups[zetl_source_group_of(s, ngroups)];
        g->schemas = zetl_realloc(g->schemas, (g->nschemas + 1) * sizeof(char *));
        g->schemas[g->nschemas++] = zetl_strdup(s);
        found++;
    }
    PQclear(res);
    res = NULL;
    if (found == 0) {
        struct zetl_buf b;
        zetl_buf_init(&b, 0);
        patterns_text(&cfg->source.schemas, &b);
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "no schema in the source database matches source.tenants.schemas [%s]: "
                           "check the patterns and that the tenant schemas exist",
                           b.data ? b.data : "");
        zetl_buf_release(&b);
        goto fail;
    }
    err = query(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &res, eb);
    if (err)
        goto fail;
    plan->superuser = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    plan->server_version = PQserverVersion(conn);

    plan->groups = zetl_calloc((size_t)ngroups, sizeof(*plan->groups));
    for (int i = 0; i < ngroups; i++) {
        struct zetl_source_group *g = &groups[i];
        char name[128];
        /* An empty group streams too: a tenant created later may belong to it. */
        snprintf(name, sizeof(name), "%s_%d", cfg->source.slot, i);
        g->index = i;
        g->name = zetl_strdup(name);
        plan->groups[plan->ngroups++] = *g;
    }
    free(groups);
    return ZETL_OK;

fail:
    PQclear(res);
    for (int i = 0; i < ngroups; i++) {
        for (size_t j = 0; j < groups[i].nschemas; j++)
            free(groups[i].schemas[j]);
        free(groups[i].schemas);
    }
    free(groups);
    return err;
}

/*
 * Publication body for a group: FOR TABLES IN SCHEMA when every table is
 * selected and the role may do that (superuser in PostgreSQL 15), else an
 * explicit table list (which needs table ownership, and new tables join at
 * the next start).
 */
bool zetl_source_schema_publication(const struct zetl_config *cfg,
                                    const struct zetl_source_plan *plan)
{
    bool all_tables = cfg->source.tables.n == 0 ||
                      (cfg->source.tables.n == 1 && strcmp(cfg->source.tables.items[0], "*") == 0);

    return all_tables && plan->superuser && plan->server_version >= 150000;
}

static enum zetl_err publication_target(PGconn *conn, const struct zetl_config *cfg,
                                        const struct zetl_source_plan *plan,
                                        const struct zetl_source_group *g, struct zetl_buf *sql,
                                        bool *empty, struct zetl_errbuf *eb)
{
    *empty = g->nschemas == 0;
    if (*empty)
        return ZETL_OK;
    if (zetl_source_schema_publication(cfg, plan)) {
        zetl_buf_puts(sql, "TABLES IN SCHEMA ");
        for (size_t i = 0; i < g->nschemas; i++) {
            char *q = zetl_sql_quote_ident(g->schemas[i]);
            zetl_buf_printf(sql, "%s%s", i ? ", " : "", q);
            free(q);
        }
        return ZETL_OK;
    }
    size_t n = 0;
    zetl_buf_puts(sql, "TABLE ");
    for (size_t i = 0; i < g->nschemas; i++) {
        const char *params[1] = {g->schemas[i]};
        PGresult *res;
        enum zetl_err err = zetl_source_exec(
            conn,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "ORDER BY c.relname",
            1, params, &res, eb);
        if (err)
            return err;
        for (int r = 0; r < PQntuples(res); r++) {
            const char *t = PQgetvalue(res, r, 0);
            if (!zetl_transform_table_selected(cfg, t))
                continue;
            char *qs = zetl_sql_quote_ident(g->schemas[i]);
            char *qt = zetl_sql_quote_ident(t);
            zetl_buf_printf(sql, "%s%s.%s", n ? ", " : "", qs, qt);
            free(qs);
            free(qt);
            n++;
        }
        PQclear(res);
    }
    *empty = n == 0;
    return ZETL_OK;
}

/* Warns once per published table that cannot replicate UPDATE/DELETE as is. */
static void warn_replica_identity(PGconn *conn, const struct zetl_config *cfg,
                                  const struct zetl_source_group *g)
{
    for (size_t i = 0; i < g->nschemas; i++) {
        const char *params[1] = {g->schemas[i]};
        PGresult *res;
        struct zetl_errbuf eb;

        if (zetl_source_exec(
                conn,
                "SELECT c.relname, c.relreplident FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND "
                "((c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE "
                "i.indrelid = c.oid AND i.indisprimary)) OR c.relreplident = 'n' OR "
                "(c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE "
                "i.indrelid = c.oid AND i.indisreplident))) ORDER BY 1",
                1, params, &res, &eb) != ZETL_OK)
            continue;
        for (int r = 0; r < PQntuples(res); r++) {
            if (!zetl_transform_table_selected(cfg, PQgetvalue(res, r, 0)))
                continue;
            zetl_warn("table \"%s\".\"%s\" has no primary key or replica identity index: inserts "
                      "replicate, but UPDATE and DELETE on it fail on the source while it is "
                      "published; run ALTER TABLE ... REPLICA IDENTITY FULL or add a primary key",
                      g->schemas[i], PQgetvalue(res, r, 0));
        }
        PQclear(res);
    }
}

enum zetl_err zetl_source_setup(PGconn *conn, const struct zetl_config *cfg,
                                const struct zetl_source_plan *plan, struct zetl_errbuf *eb)
{
    enum zetl_err err = ZETL_OK;
    struct zetl_buf sql;

    zetl_buf_init(&sql, 0);
    for (size_t i = 0; i < plan->ngroups; i++) {
        const struct zetl_source_group *g = &plan->groups[i];
        const char *params[1] = {g->name};
        PGresult *res;
        bool exists, empty;
        char *qname = zetl_sql_quote_ident(g->name);

        err = zetl_source_exec(conn, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, params,
                               &res, eb);
        if (err) {
            free(qname);
            goto fail;
        }
        exists = PQntuples(res) > 0;
        PQclear(res);

        zetl_buf_reset(&sql);
        zetl_buf_printf(&sql, exists ? "ALTER PUBLICATION %s SET " : "CREATE PUBLICATION %s FOR ",
                        qname);
        err = publication_target(conn, cfg, plan, g, &sql, &empty, eb);
        if (err == ZETL_OK && empty) {
            /* Nothing to publish yet: tenants and tables join while zetl runs. */
            zetl_buf_reset(&sql);
            if (!exists)
                zetl_buf_printf(&sql, "CREATE PUBLICATION %s", qname);
        }
        if (err == ZETL_OK && !exists)
            zetl_buf_puts(&sql, " WITH (publish = 'insert, update, delete, truncate')");
        if (err == ZETL_OK && sql.len > 0)
            err = zetl_source_exec(conn, sql.data, 0, NULL, NULL, eb);
        free(qname);
        if (err) {
            zetl_err_prefix(eb, "could not %s publication \"%s\"", exists ? "update" : "create",
                            g->name);
            goto fail;
        }
        zetl_info("publication \"%s\" %s for %zu tenant schema(s)", g->name,
                  exists ? "updated" : "created", g->nschemas);

        err = zetl_source_exec(conn,
                               "SELECT plugin, database = current_database() FROM "
                               "pg_replication_slots WHERE slot_name = $1",
                               1, params, &res, eb);
        if (err)
            goto fail;
        if (PQntuples(res) > 0) {
            if (strcmp(PQgetvalue(res, 0, 0), "pgoutput") != 0 ||
                strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
                err = zetl_err_set(eb, ZETL_ERR_FATAL,
                                   "replication slot \"%s\" exists but is not a pgoutput slot of "
                                   "this database: drop it or choose another source.slot",
                                   g->name);
                PQclear(res);
                goto fail;
            }
            PQclear(res);
        } else {
            PQclear(res);
            err = zetl_source_exec(
                conn, "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')", 1,
                params, &res, eb);
            if (err) {
                zetl_err_prefix(eb, "could not create replication slot \"%s\"", g->name);
                goto fail;
            }
            zetl_logmsg("replication slot \"%s\" created at %s", g->name, PQgetvalue(res, 0, 0));
            PQclear(res);
        }
        warn_replica_identity(conn, cfg, g);
    }
fail:
    zetl_buf_release(&sql);
    return err;
}

enum zetl_err zetl_source_current_lsn(PGconn *conn, uint64_t *lsn, struct zetl_errbuf *eb)
{
    PGresult *res;
    enum zetl_err err = query(conn, "SELECT pg_current_wal_insert_lsn()::text", &res, eb);

    if (err)
        return err;
    if (PQntuples(res) != 1 || !zetl_lsn_parse(PQgetvalue(res, 0, 0), lsn)) {
        PQclear(res);
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not read the source's current WAL position");
    }
    PQclear(res);
    return ZETL_OK;
}
