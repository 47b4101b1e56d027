/*
 * Decoded changes into the batcher: the consumer side of the dispatch table
 * (replicator/dispatch.h).  Tracks the transaction being received, skips the
 * server's resends of transactions the sinks already hold, spills streamed
 * transactions per xid and replays them at Stream Commit, and turns each
 * captured change into a transformed row of the batch.
 */
#ifndef ZETL_CAPTURE_H
#define ZETL_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/mem.h"
#include "proto/pgoutput.h"
#include "proto/relcache.h"
#include "replicator/relmap.h"
#include "replicator/snapshot.h"
#include "replicator/spill.h"
#include "replicator/status.h"
#include "sinks/batch.h"

/* Called every few thousand replayed messages: a long replay must keep status updates going. */
typedef enum zetl_err (*zetl_capture_tick_fn)(void *arg, struct zetl_errbuf *eb);

/* Everything a capture works on; all borrowed, outliving the capture. */
struct zetl_capture_env {
    const char *name; /* stream name, for messages */
    struct zetl_relcache *rc;
    struct zetl_relmap *rm;
    struct zetl_batch_writer *bw;
    struct zetl_spill *spill;
    struct zetl_positions *pos; /* last_sealed_lsn read, progress/idle moved */
    zetl_capture_tick_fn tick;
    void *tick_arg;
    struct zetl_snapwin *snap; /* snapshot windows of the stream; NULL without snapshots */
};

struct zetl_capture {
    struct zetl_capture_env env;
    struct zetl_pgo_decoder dec;
    struct zetl_arena msg_arena;    /* per message */
    struct zetl_arena replay_arena; /* per replayed message */
    struct zetl_value *values;      /* owned: room for one row */
    size_t values_cap;

    /* the transaction in progress */
    bool in_txn;
    bool txn_begun; /* zetl_batch_begin_txn called (first captured row seen) */
    bool txn_skip;  /* the sinks hold it already: drop its changes */
    bool replaying; /* inside zetl_spill_replay */
    uint64_t txn_commit_lsn;
    int64_t txn_commit_time;
    uint32_t stream_xid; /* xid of the open Stream Start block, 0 outside */
    uint64_t replayed;   /* spilled messages replayed, for pacing status updates */
};

void zetl_capture_init(struct zetl_capture *cap, const struct zetl_capture_env *env);
void zetl_capture_release(struct zetl_capture *cap);

/* A new connection speaking proto_version: no transaction open. */
void zetl_capture_reset(struct zetl_capture *cap, int proto_version);

/* Decodes one pgoutput message received at `lsn` and routes it through the handlers. */
enum zetl_err zetl_capture_message(struct zetl_capture *cap, const uint8_t *data, size_t len,
                                   uint64_t lsn, struct zetl_errbuf *eb);

/* A keepalive reported the server's WAL end: progress when no transaction is open. */
void zetl_capture_keepalive(struct zetl_capture *cap, uint64_t wal_end);

/*
 * True while a transaction is being received between its Begin and Commit.
 * An open streamed transaction (spilled, not committed) does not count: it
 * commits after every position the server has reported so far, and the
 * server sends it again whole after a restart from any of them, so those
 * positions may be confirmed (if they were not, a fast shutdown of the
 * source would wait for zetl's flush forever).
 */
bool zetl_capture_busy(const struct zetl_capture *cap);

#endif
