/*
 * The warehouse sink: applies archived batches to a warehouse exactly once.
 * Each batch is applied in one warehouse transaction that also records the
 * batch's last commit LSN in <schema>._zetl_offsets; a batch at or below the
 * stored offset is skipped.  Dialects: PostgreSQL (COPY FROM STDIN + merge,
 * wh_pg.c) and Redshift (COPY FROM S3 + merge, wh_redshift.c), chosen by
 * warehouse.kind; what they share and how they plug in is private to this
 * folder (wh_dialect.h).
 */
#ifndef ZETL_WH_H
#define ZETL_WH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "common/strlist.h"
#include "config/config.h"

struct zetl_wh;

/*
 * Connects to cfg->warehouse.dsn, creates the schema and _zetl_offsets if
 * missing.  ZETL_ERR_RETRY when the server is unreachable, ZETL_ERR_FATAL for
 * authentication or permission problems.  With warehouse.kind redshift,
 * ZETL_ERR_USAGE unless archive.url is s3:// (on Amazon S3, no
 * archive.s3.endpoint) and warehouse.iam_role is set.  cfg is borrowed and
 * must outlive wh.
 */
enum zetl_err zetl_wh_open(const struct zetl_config *cfg, struct zetl_wh **out,
                           struct zetl_errbuf *eb);
void zetl_wh_free(struct zetl_wh *wh);

/* One line of the live probe: a construct, whether it behaves as zetl expects, and why not. */
typedef void (*zetl_wh_probe_fn)(void *arg, const char *construct, bool ok, const char *detail);

/*
 * The live probe: connects to the warehouse (no bootstrap) and checks,
 * each on a scratch table in a transaction that is rolled back, the
 * constructs zetl's SQL for this warehouse relies on and its documentation
 * does not settle; calls fn once per construct.  *failed: how many do not
 * behave as expected.  Nothing to probe (PostgreSQL): no call, *failed 0.
 * Errors: the connection, or the dialect's configuration.
 */
enum zetl_err zetl_wh_probe(const struct zetl_config *cfg, zetl_wh_probe_fn fn, void *arg,
                            int *failed, struct zetl_errbuf *eb);

/*
 * The last applied commit LSN and end LSN of `stream` (0, 0 when none).
 * ZETL_ERR_RETRY when the connection is lost (reconnects on the next call).
 */
enum zetl_err zetl_wh_offset(struct zetl_wh *wh, const char *stream, uint64_t *last_lsn,
                             uint64_t *end_lsn, struct zetl_errbuf *eb);

/*
 * Applies the batch stored in directory `dir` (manifest.json + its files),
 * verifying every file's sha256 against the manifest while reading it.
 * Redshift reads only manifest.json from `dir` and COPYs the files from the
 * batch's S3 prefix; a failing COPY is ZETL_ERR_FATAL with the server's load
 * error detail, the batch and the file (the transaction is rolled back).
 * Returns ZETL_OK also when the batch was already applied (skipped).
 * ZETL_ERR_RETRY: connection lost or server unavailable (nothing committed;
 * call again).  ZETL_ERR_FATAL: the batch cannot be applied as is (checksum
 * mismatch, a table that can no longer take its rows): the message names the
 * batch, file and table.  Tables stopped earlier are skipped with a warning.
 */
enum zetl_err zetl_wh_apply_dir(struct zetl_wh *wh, const char *dir, struct zetl_errbuf *eb);

/*
 * Records that `stream` has seen everything up to end_lsn with nothing left
 * to apply (idle progress), so `zetl verify` can tell the warehouse is
 * current.  Never moves the offset backwards.
 */
enum zetl_err zetl_wh_note_progress(struct zetl_wh *wh, const char *stream, uint64_t end_lsn,
                                    struct zetl_errbuf *eb);

/*
 * Applies only the rows of `table` (NULL: of every table) in the batch at
 * `dir`, regardless of the stream offset (which it neither checks nor
 * moves): the resync of a table that was stopped, dropped and whose
 * _zetl_table_state rows were deleted, or a rebuild.  Idempotent: the
 * table's own last applied LSN of the batch's stream (in _zetl_table_state)
 * skips what was applied before.  ZETL_ERR_FATAL when the table is still
 * stopped.
 */
enum zetl_err zetl_wh_apply_dir_table(struct zetl_wh *wh, const char *dir, const char *table,
                                      struct zetl_errbuf *eb);

/*
 * What `zetl replay` applies of a batch.  A prefix replay (record) applies
 * every table's rows up to to_lsn and moves the stream offset and the
 * tables' states there, as zetl run does.  A filtered one (!record: tenants,
 * tables or from_lsn) applies only the rows asked for and records nothing,
 * so a later run or unfiltered replay still applies every other row.  Both
 * skip what the schema's stream offset and table states say is applied.
 */
struct zetl_wh_replay {
    const struct zetl_strlist *tenants; /* borrowed; NULL or empty: every tenant */
    const struct zetl_strlist *tables;  /* borrowed; NULL or empty: every table */
    uint64_t from_lsn;                  /* transactions below it are left out; 0: none */
    uint64_t to_lsn;                    /* transactions above it are left out; 0: none */
    bool record;                        /* move the offset and table states (prefix only) */
};

/*
 * Applies the batch at `dir` under the rules of *r in one transaction.
 * *rows: the rows it merged (0 when skipped); *skipped: it was applied
 * already.  Errors as zetl_wh_apply_dir.
 */
enum zetl_err zetl_wh_replay_dir(struct zetl_wh *wh, const char *dir,
                                 const struct zetl_wh_replay *r, uint64_t *rows, bool *skipped,
                                 struct zetl_errbuf *eb);

/* One Kafka partition's part of a batch that zetl load applies. */
struct zetl_wh_kafka_pos {
    const char *key; /* borrowed: "kafka:<group>/<topic>/<partition>", its _zetl_offsets row */
    uint64_t start;  /* offset of the batch's first message of the partition */
    uint64_t next;   /* offset after its last one: what is stored */
};

/*
 * zetl load: applies every row of the batch at `dir` (no stream offset, no
 * table states) and, in the same transaction, stores each partition's next
 * offset.  *fenced, and nothing applied, when a partition's stored offset
 * is set and is not pos->start: another loader of the group applied those
 * messages meanwhile.  *rows: rows merged.  Errors as zetl_wh_apply_dir.
 */
enum zetl_err zetl_wh_apply_kafka(struct zetl_wh *wh, const char *dir,
                                  const struct zetl_wh_kafka_pos *pos, size_t n, uint64_t *rows,
                                  bool *fenced, struct zetl_errbuf *eb);
/* The next offset stored for partition `key` (0: none). */
enum zetl_err zetl_wh_kafka_offset(struct zetl_wh *wh, const char *key, uint64_t *next,
                                   struct zetl_errbuf *eb);

/* Rows one tenant purge removed from one table. */
struct zetl_wh_purged {
    char *table; /* owned */
    uint64_t rows;
};

/*
 * In one transaction, deletes every row whose tenant column is `tenant`
 * from every table of warehouse.schema that has that column (zetl's
 * bookkeeping tables excepted), whatever warehouse.deletes says: the rows
 * are gone, not flagged.  *out (owned, *n entries, free with
 * zetl_wh_purged_free) lists every table, also those without such rows.
 */
enum zetl_err zetl_wh_purge_tenant(struct zetl_wh *wh, const char *tenant,
                                   struct zetl_wh_purged **out, size_t *n, struct zetl_errbuf *eb);
void zetl_wh_purged_free(struct zetl_wh_purged *p, size_t n);

/*
 * In one transaction, deletes every row of warehouse table `table` (NULL:
 * of every table of warehouse.schema but zetl's bookkeeping) and its
 * _zetl_table_state rows, so that zetl_wh_apply_dir_table rebuilds it from
 * the archive.  The stream offsets stay.
 */
enum zetl_err zetl_wh_clear_table(struct zetl_wh *wh, const char *table, struct zetl_errbuf *eb);

#endif
