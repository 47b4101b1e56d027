/*
 * Tenants that come and go while zetl runs.  Every source.tenants.refresh_ms
 * a thread lists the schemas matching source.tenants.schemas and their
 * tables: a new schema (or, with table-list publications, a new table) is
 * queued for a snapshot first and then added to its slot group's
 * publication, so every row is either copied or streamed, without a
 * restart, a new slot or a pause of the other tenants.  A dropped schema
 * stops being followed.  The same thread takes the requests `zetl snapshot`
 * leaves in <buffer.dir>/snapshot/requests/ for a running daemon.
 */
#ifndef ZETL_TENANTS_H
#define ZETL_TENANTS_H

#include <libpq-fe.h>

#include "common/err.h"
#include "common/strlist.h"
#include "config/config.h"
#include "replicator/snapshot.h"
#include "replicator/source.h"

struct zetl_tenants;

/* Starts the thread (cfg, plan and snap borrowed; they must outlive it). */
enum zetl_err zetl_tenants_start(const struct zetl_config *cfg, const struct zetl_source_plan *plan,
                                 struct zetl_snapshotter *snap, struct zetl_tenants **out,
                                 struct zetl_errbuf *eb);
/* Stops and joins the thread. */
void zetl_tenants_stop(struct zetl_tenants *t);

/*
 * At start, before the publications are set: tenant schemas (or, with
 * table-list publications, tables) that the set will add to a publication
 * whose slot exists appeared while zetl was stopped; they are recorded for
 * a snapshot (zetl_snapshot_mark_onboarding), copied once the streams run.
 */
enum zetl_err zetl_tenants_mark_new(PGconn *conn, const struct zetl_config *cfg,
                                    const struct zetl_source_plan *plan, struct zetl_errbuf *eb);

/*
 * Queues snapshots of the published tables of `tenants` (none: all) named
 * `tables` (none: all), over the groups of plan.  *queued: how many.  A
 * tenant or table that matches nothing is an error naming it.
 */
enum zetl_err zetl_tenants_request(PGconn *conn, const struct zetl_config *cfg,
                                   const struct zetl_source_plan *plan,
                                   struct zetl_snapshotter *snap,
                                   const struct zetl_strlist *tenants,
                                   const struct zetl_strlist *tables, size_t *queued,
                                   struct zetl_errbuf *eb);

/*
 * `zetl snapshot` while a daemon holds buffer.dir: leaves the request for
 * it.  *path gets the request file (owned); it disappears once taken.
 */
enum zetl_err zetl_tenants_leave_request(const struct zetl_config *cfg,
                                         const struct zetl_strlist *tenants,
                                         const struct zetl_strlist *tables, char **path,
                                         struct zetl_errbuf *eb);

#endif
