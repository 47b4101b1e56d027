/*
 * The sink interface: one table of functions per kind of sink (archive,
 * warehouse, and next Kafka).  A sink takes sealed batches in commit order and
 * makes each durable; the stream confirms to the slot only the minimum, over
 * the sinks that must be durable, of what each has made durable
 * (DESIGN.md invariant 1).
 *
 * Sinks never retry: an operation that fails for a passing reason returns
 * ZETL_ERR_RETRY and the sink runner (replicator/sinkq.c) calls it again with
 * backoff, so there is one retry policy and no retries inside retries.  Every
 * operation therefore must be safe to repeat (a put of a batch already stored
 * is a success that changes nothing).
 *
 * Adding a sink: write sinks/sink_<name>.c that defines one
 * `const struct zetl_sink_ops` and list it in zetl_sink_registry (sink.c).
 */
#ifndef ZETL_SINK_H
#define ZETL_SINK_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "sinks/archive.h"
#include "sinks/batch.h"

/* What a sink is opened with; every pointer is borrowed and outlives the sink. */
struct zetl_sink_env {
    const struct zetl_config *cfg;
    const char *stream;      /* the stream (slot) name: positions are per stream */
    struct zetl_archive *ar; /* the archive, shared by the streams of a process */
};

/* Where a sink stands, as commit LSN and end LSN of its newest durable transaction. */
struct zetl_sink_pos {
    /*
     * Commit LSN up to which the sink holds, or recovers by itself in start,
     * every transaction: what the server sends again up to here is skipped.
     */
    uint64_t last_lsn;
    uint64_t end_lsn; /* end LSN durable now: what the slot may confirm for this sink */
};

/* last_lsn of a sink that recovers in start whatever the sinks before it hold. */
#define ZETL_SINK_FOLLOWS UINT64_MAX

struct zetl_sink_ops {
    const char *name; /* static: "archive", "warehouse" (logs) */
    /* False: the slot's flush position does not wait for this sink. */
    bool must_be_durable;
    /* True when cfg configures this sink; the runner opens only those. */
    bool (*configured)(const struct zetl_config *cfg);
    /*
     * Opens the sink (*state owned, freed by close) and reports where it
     * stands.  Runs on the stream's creating thread; failing stops the start.
     */
    enum zetl_err (*open)(const struct zetl_sink_env *env, void **state, struct zetl_sink_pos *pos,
                          struct zetl_errbuf *eb);
    /*
     * Optional: catches up on the sink thread before the first batch (the
     * warehouse applies archived batches it has not seen) and updates pos.
     * Retried as a whole on ZETL_ERR_RETRY.
     */
    enum zetl_err (*start)(void *state, struct zetl_sink_pos *pos, struct zetl_errbuf *eb);
    /*
     * Makes a sealed batch durable (b borrowed; the batch's files may be
     * moved away by an earlier sink).  ZETL_ERR_RETRY: nothing or only part
     * of it is durable, call again; anything else stops the stream.
     */
    enum zetl_err (*put)(void *state, const struct zetl_batch *b, struct zetl_errbuf *eb);
    /*
     * Optional: records that everything up to end_lsn is seen with nothing
     * left to make durable (idle progress; `zetl verify` reads it).  Best
     * effort, never retried.
     */
    enum zetl_err (*note_idle)(void *state, uint64_t end_lsn, struct zetl_errbuf *eb);
    void (*close)(void *state); /* NULL state is a no-op */
};

extern const struct zetl_sink_ops zetl_sink_archive_ops;
extern const struct zetl_sink_ops zetl_sink_warehouse_ops;
extern const struct zetl_sink_ops zetl_sink_kafka_ops;

/*
 * Every known sink, in the order batches go through them (a sink that reads
 * what an earlier one stored comes after it), NULL-terminated.
 */
extern const struct zetl_sink_ops *const zetl_sink_registry[];

#endif
