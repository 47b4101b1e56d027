/*
 * One stream: a slot group's replication connection (replicator/walreader.h),
 * the capture of decoded changes into batches (replicator/capture.h, through
 * the dispatch table of replicator/dispatch.h), and the sinks
 * (sinks/sink.h), run by a sink thread behind a bounded queue
 * (replicator/sinkq.h).  The reader never blocks on a sink: when the queue is
 * full it stops reading the socket (backpressure) but keeps sending status
 * updates on time.
 *
 * The slot's flush position only moves to the minimum, over the sinks that
 * must be durable, of the end LSN each made durable (or, when nothing at all
 * is pending, to the server's reported WAL end, so idle slots do not hold WAL).
 */
#ifndef ZETL_STREAM_H
#define ZETL_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "replicator/snapshot.h"
#include "replicator/source.h"
#include "sinks/archive.h"

struct zetl_stream;

struct zetl_stream_opts {
    bool once;           /* stop once caught up with target_lsn */
    uint64_t target_lsn; /* source WAL position at start (once mode) */
};

/* cfg, group and archive are borrowed and must outlive the stream. */
enum zetl_err zetl_stream_new(const struct zetl_config *cfg, const struct zetl_source_group *grp,
                              struct zetl_archive *ar, const struct zetl_stream_opts *opts,
                              struct zetl_stream **out, struct zetl_errbuf *eb);
void zetl_stream_free(struct zetl_stream *st);

/* The stream's snapshot windows (borrowed; before zetl_stream_run). */
void zetl_stream_set_snapshot(struct zetl_stream *st, struct zetl_snapwin *w);
/* <buffer.dir>/spool/<stream>: where the stream spools (borrowed). */
const char *zetl_stream_spool_dir(const struct zetl_stream *st);

/*
 * Runs the stream until zetl_stop_request() is called (then seals what is
 * complete and exits), until caught up (and its snapshots copied) in once
 * mode, or until a fatal error.
 * Retriable errors (connection lost) reconnect with backoff.
 */
enum zetl_err zetl_stream_run(struct zetl_stream *st, struct zetl_errbuf *eb);

#endif
