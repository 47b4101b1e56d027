/*
 * The sink queue and its runner thread.  The reader hands sealed batches to a
 * bounded queue and never waits for a sink (invariant 5); the runner thread
 * passes each batch through every sink in registry order, retrying an
 * operation that failed for a passing reason with backoff (the one retry
 * loop of the sinks), and records per sink what it made durable.  The slot's
 * flush position is the minimum of those over the sinks that must be durable.
 *
 * A stop request (replicator/stop.h) while a sink is down abandons the
 * queue: what no sink confirmed is not confirmed to the slot, so the server
 * sends it again at the next start.
 *
 * With archive.retention set, the runner also prunes the stream's archive
 * (replicator/retention.h): once at start, before the sinks catch up, then
 * every archive.retention_interval_ms between batches, only ever below what
 * every sink has applied.
 */
#ifndef ZETL_SINKQ_H
#define ZETL_SINKQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "sinks/batch.h"
#include "sinks/sink.h"

struct zetl_sinkq_opts {
    size_t capacity;          /* sealed batches waiting for the sinks */
    int64_t retry_initial_ms; /* first backoff delay after ZETL_ERR_RETRY */
    int64_t retry_max_ms;
    int64_t idle_note_ms; /* how often an idle runner records idle progress */
    /*
     * Retention's keep floor for `stream` (zetl_retention_snapshot_floor has
     * the contract): archived batches whose last commit LSN is below it may
     * go, as far as snapshots are concerned; UINT64_MAX: no limit, 0: keep
     * everything.  Called on the runner thread before each retention pass.
     * NULL: no limit.
     */
    uint64_t (*retention_floor)(void *arg, const char *stream);
    void *retention_arg; /* borrowed: passed to retention_floor */
};

/* The defaults the stream runs with. */
extern const struct zetl_sinkq_opts zetl_sinkq_default_opts;

struct zetl_sinkq;

/*
 * Opens the sinks of `ops` (borrowed, NULL-terminated, in order; usually
 * zetl_sink_registry) that env->cfg configures; env is copied, what it
 * points to is borrowed and must outlive the queue.  Does not start the
 * runner thread.
 */
enum zetl_err zetl_sinkq_new(const struct zetl_sink_env *env,
                             const struct zetl_sink_ops *const *ops,
                             const struct zetl_sinkq_opts *opts, struct zetl_sinkq **out,
                             struct zetl_errbuf *eb);
/* No more batches, without waiting (a fatal error): the runner ends after the queued ones. */
void zetl_sinkq_shutdown(struct zetl_sinkq *q);
/* Stops the runner without draining, frees queued batches, closes the sinks.  NULL: no-op. */
void zetl_sinkq_free(struct zetl_sinkq *q);

/* Number of sinks opened, and the name of the i-th (static). */
size_t zetl_sinkq_count(const struct zetl_sinkq *q);
const char *zetl_sinkq_name(const struct zetl_sinkq *q, size_t i);

/*
 * Commit LSN up to which every sink holds (or recovers at start) every
 * transaction: the server's resends up to it are skipped.  0 when none.
 */
uint64_t zetl_sinkq_covered_lsn(const struct zetl_sinkq *q);

/* Starts the runner thread (which first runs each sink's start). */
enum zetl_err zetl_sinkq_start(struct zetl_sinkq *q, struct zetl_errbuf *eb);

/*
 * Queues a sealed batch (ownership passes to the queue on true), waiting for
 * room when the queue is full.  False when the sinks failed or were
 * abandoned: the batch stays the caller's.
 */
bool zetl_sinkq_push(struct zetl_sinkq *q, struct zetl_batch *b);
bool zetl_sinkq_full(struct zetl_sinkq *q);
/* True when no batch is queued or being made durable. */
bool zetl_sinkq_idle(struct zetl_sinkq *q);
/*
 * Readable when the runner finished a batch or failed: the reader polls it
 * (with its socket, or alone under backpressure) instead of sleeping, and
 * reports a new flush position at once.  zetl_sinkq_ack empties it.
 */
int zetl_sinkq_fd(const struct zetl_sinkq *q);
void zetl_sinkq_ack(struct zetl_sinkq *q);

/* The fatal error of a sink (copied into eb), or ZETL_OK. */
enum zetl_err zetl_sinkq_error(struct zetl_sinkq *q, struct zetl_errbuf *eb);

/* Minimum over the sinks that must be durable of the end LSN each made durable. */
uint64_t zetl_sinkq_durable_lsn(struct zetl_sinkq *q);
/* The reader's position while nothing is pending: an idle runner notes it in the sinks. */
void zetl_sinkq_set_idle_lsn(struct zetl_sinkq *q, uint64_t end_lsn);

/*
 * No more batches: waits until the queue is empty, then joins the runner.
 * ZETL_ERR_RETRY when the queue was abandoned on a stop request while a sink
 * was down; a sink's fatal error otherwise.
 */
enum zetl_err zetl_sinkq_drain(struct zetl_sinkq *q, struct zetl_errbuf *eb);

/* After a drain: records end_lsn as idle progress in every sink (warns on failure). */
void zetl_sinkq_note_final(struct zetl_sinkq *q, uint64_t end_lsn);

#endif
