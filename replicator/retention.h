/*
 * Archive retention (archive.retention): one pass over one stream's archived
 * batches that removes those older than the retention which every sink has
 * applied, and the keep floor that snapshots put under it.  Passes run on
 * the stream's sink thread (replicator/sinkq.c), never on the reader.
 */
#ifndef ZETL_RETENTION_H
#define ZETL_RETENTION_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "sinks/archive.h"

/*
 * The keep floor of `stream` from snapshots: archived batches whose last
 * commit LSN is below it may go, the rest is what a replay from the
 * stream's last snapshot needs (UINT64_MAX: no limit; 0: keep everything).
 * The snapshot state supplies it: the start LSN of the stream's last
 * finished snapshot.  arg: the process's struct zetl_config (borrowed).
 * The signature of struct zetl_sinkq_opts.retention_floor.
 */
uint64_t zetl_retention_snapshot_floor(void *arg, const char *stream);

/* No floor (archive.retention_ignore_snapshot: true): UINT64_MAX. */
uint64_t zetl_retention_no_floor(void *arg, const char *stream);

/*
 * One pass: removes the batches of `stream` whose last commit is more than
 * retention_ms ago and below min(applied_lsn, floor_lsn), where applied_lsn
 * is the lowest end LSN every sink has applied (zetl_archive_prune has the
 * rules), and logs one line.  *again: the pass stopped at its cap and more
 * is due at once.
 */
enum zetl_err zetl_retention_pass(struct zetl_archive *ar, const char *stream,
                                  uint64_t retention_ms, uint64_t applied_lsn, uint64_t floor_lsn,
                                  bool *again, struct zetl_errbuf *eb);

#endif
