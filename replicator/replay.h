/*
 * zetl replay (archived batches -> warehouse, or into another schema) and
 * zetl tenant purge; docs/replay.md.  Also the one fetch-and-apply retry
 * loop that zetl resync shares.
 */
#ifndef ZETL_REPLAY_H
#define ZETL_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "common/strlist.h"
#include "config/config.h"
#include "sinks/archive.h"
#include "sinks/warehouse/wh.h"

/* A --from or --to argument: an LSN ("16/B374D848") or a time (common/time.h). */
struct zetl_replay_point {
    bool set;
    bool is_time;
    uint64_t lsn;     /* when !is_time */
    int64_t usec;     /* when is_time: microseconds since the epoch, UTC */
    const char *text; /* borrowed: the argument as given, for messages */
};

/* Parses `s` (borrowed, kept in p->text); false when it is neither an LSN nor a time. */
bool zetl_replay_parse_point(const char *s, struct zetl_replay_point *p);

/* A warehouse schema name --into accepts: 1 to 63 bytes (PostgreSQL would cut a longer one). */
bool zetl_replay_schema_ok(const char *s);

struct zetl_replay_opts {
    struct zetl_replay_point from, to;
    struct zetl_strlist tenants; /* owned by the caller */
    struct zetl_strlist tables;  /* owned by the caller */
    const char *into;            /* borrowed; NULL: warehouse.schema */
};

/* Returns the exit code: 0 done, 1 the job failed (or a range not archived), 2 bad usage. */
int zetl_cmd_replay(const struct zetl_config *cfg, const struct zetl_replay_opts *o);
/* Prints the rows removed per table; 0 also when the tenant had none. */
int zetl_cmd_tenant_purge(const struct zetl_config *cfg, const char *tenant);

/*
 * Fetches batch `name` of `stream` and applies it: with r, as a replay
 * (*rows, *skipped set); else as a resync of `table` (NULL: every table).
 * Waits out a moment of unavailability of the archive or the warehouse
 * (ZETL_ERR_RETRY, about two minutes) before it gives up.
 */
enum zetl_err zetl_replay_batch(struct zetl_archive *ar, struct zetl_wh *wh, const char *stream,
                                const char *name, const char *table, const struct zetl_wh_replay *r,
                                uint64_t *rows, bool *skipped, struct zetl_errbuf *eb);

#endif
