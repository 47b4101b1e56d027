/*
 * The callback table between decoding and what consumes the changes (as
 * Bottled Water's frame_reader): decoded pgoutput messages are routed to one
 * handler per kind, so the consumer (replicator/capture.c: transforms and the
 * batcher) never switches on wire details, and another consumer can be
 * plugged in by filling another table.
 */
#ifndef ZETL_DISPATCH_H
#define ZETL_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/mem.h"
#include "proto/pgoutput.h"

/*
 * Every handler gets the consumer's `arg` first; `m` is valid during the
 * call only (its slices point into the receive buffer or `ar`).
 */
struct zetl_change_handlers {
    enum zetl_err (*begin)(void *arg, uint64_t final_lsn, int64_t commit_time,
                           struct zetl_errbuf *eb);
    enum zetl_err (*commit)(void *arg, uint64_t commit_lsn, uint64_t end_lsn,
                            struct zetl_errbuf *eb);
    enum zetl_err (*relation)(void *arg, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb);
    enum zetl_err (*type)(void *arg, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb);
    /* Insert, Update, Delete; new values may be allocated in ar. */
    enum zetl_err (*change)(void *arg, const struct zetl_pgo_msg *m, struct zetl_arena *ar,
                            struct zetl_errbuf *eb);
    enum zetl_err (*truncate)(void *arg, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb);
    enum zetl_err (*stream_start)(void *arg, uint32_t xid, struct zetl_errbuf *eb);
    enum zetl_err (*stream_stop)(void *arg, struct zetl_errbuf *eb);
    /*
     * A message of an uncommitted streamed transaction (between Stream Start
     * and Stream Stop): its raw bytes, to keep until Stream Commit.
     */
    enum zetl_err (*stream_data)(void *arg, const struct zetl_pgo_msg *m, const uint8_t *raw,
                                 size_t len, struct zetl_errbuf *eb);
    enum zetl_err (*stream_commit)(void *arg, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb);
    enum zetl_err (*stream_abort)(void *arg, uint32_t xid, uint32_t subxid, struct zetl_errbuf *eb);
    /* A logical decoding message (pg_logical_emit_message); may be NULL. */
    enum zetl_err (*message)(void *arg, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb);
};

/*
 * Routes one decoded message to its handler.  `in_stream` (the decoder was
 * inside a Stream Start block) sends changes to stream_data; raw/len are the
 * message's bytes.  Origin messages are ignored;
 * two-phase messages are a protocol error (two_phase is not enabled).
 */
enum zetl_err zetl_dispatch(const struct zetl_change_handlers *h, void *arg,
                            const struct zetl_pgo_msg *m, bool in_stream, const uint8_t *raw,
                            size_t len, uint64_t lsn, struct zetl_arena *ar,
                            struct zetl_errbuf *eb);

#endif
