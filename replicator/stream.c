/*
 * The per-slot-group stream: composes the replication reader, the capture of
 * decoded changes into the batcher, and the sink queue, and runs the loop of
 * one connection.  Each tick: check the sinks, stop or finish, seal when a
 * limit is reached, send status, then read a budget of messages or wait in
 * poll() until the earliest deadline (status update, receive timeout, batch
 * age) or until the sinks, the catalog or a stop wake it.
 */
#include "replicator/stream.h"

#include <stdlib.h>
#include <string.h>

#include "common/time.h"
#include "common/backoff.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "proto/relcache.h"
#include "replicator/capture.h"
#include "replicator/walreader.h"
#include "replicator/relmap.h"
#include "replicator/retention.h"
#include "replicator/sinkq.h"
#include "replicator/spill.h"
#include "replicator/status.h"
#include "replicator/stop.h"
#include "sinks/batch.h"
#include "sinks/sink.h"

#define READ_BUDGET 2000 /* messages per loop tick before looking around */
#define RECONNECT_INITIAL_MS 1000
#define RECONNECT_MAX_MS 30000
#define HEALTHY_CONNECTION_MS 60000 /* a connection that lasted this long resets the backoff */

struct zetl_stream {
    const struct zetl_config *cfg; /* borrowed */
    struct zetl_stream_opts opts;
    char *name;      /* owned */
    char *spool_dir; /* owned: <buffer.dir>/spool/<stream> */

    struct zetl_walreader rd;
    struct zetl_relcache *rc;     /* owned */
    struct zetl_relmap *rm;       /* owned */
    struct zetl_batch_writer *bw; /* owned */
    struct zetl_spill *spill;     /* owned */
    struct zetl_capture cap;
    struct zetl_sinkq *q; /* owned */
    struct zetl_positions pos;
    struct zetl_snapwin *snap; /* borrowed, may be NULL */
};

/* ---- positions and status ---- */

static bool nothing_pending(struct zetl_stream *st)
{
    return !zetl_capture_busy(&st->cap) && !zetl_batch_in_txn(st->bw) &&
           zetl_batch_pending_rows(st->bw) == 0 && zetl_sinkq_idle(st->q);
}

/*
 * What the slot may confirm: what every sink made durable or, when nothing
 * at all is pending, the server's position (so an idle slot does not hold WAL).
 */
static uint64_t flush_position(struct zetl_stream *st)
{
    uint64_t flush = zetl_sinkq_durable_lsn(st->q);

    if (st->pos.idle_lsn > flush && nothing_pending(st)) {
        flush = st->pos.idle_lsn;
        zetl_sinkq_set_idle_lsn(st->q, flush);
    }
    return flush;
}

static enum zetl_err send_status(struct zetl_stream *st, bool force, struct zetl_errbuf *eb)
{
    return zetl_walreader_send_status(&st->rd, flush_position(st), force, false, eb);
}

/* The capture's pacing hook during a long replay. */
static enum zetl_err replay_tick(void *arg, struct zetl_errbuf *eb)
{
    return send_status(arg, false, eb);
}

/* ---- batches ---- */

/* Seals the open batch (if it holds a transaction) and queues it; waits for room. */
static enum zetl_err seal_and_queue(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    struct zetl_batch *b = NULL;
    enum zetl_err err = zetl_batch_seal(st->bw, &b, eb);
    uint64_t last_lsn;

    if (err) {
        zetl_err_prefix(eb, "stream %s: could not seal batch", st->name);
        return err;
    }
    if (b == NULL)
        return ZETL_OK;
    last_lsn = b->last_lsn;
    if (!zetl_sinkq_push(st->q, b)) {
        zetl_batch_free(b);
        return zetl_sinkq_error(st->q, eb);
    }
    /* Only a queued batch survives a reconnect (reset_connection_state): its
     * transactions are skipped when the server sends them again.  A batch
     * dropped above must not move the mark, or a later reconnect would skip
     * transactions that were never made durable. */
    st->pos.last_sealed_lsn = last_lsn;
    zetl_snapwin_sealed(st->snap, last_lsn);
    return ZETL_OK;
}

/*
 * Seals when a limit is reached and the queue has room.  *backpressure: a
 * sealable batch waits for the sinks, and so does the socket.
 */
static enum zetl_err seal_if_due(struct zetl_stream *st, bool *backpressure, struct zetl_errbuf *eb)
{
    const struct zetl_config *cfg = st->cfg;
    enum zetl_err err;

    *backpressure = false;
    /* should_seal is false inside a transaction: batches hold whole transactions. */
    if (!zetl_batch_should_seal(st->bw, cfg->buffer.max_rows, cfg->buffer.max_bytes,
                                cfg->buffer.max_age_ms, zetl_now_ms()))
        return ZETL_OK;
    if (!zetl_sinkq_full(st->q) && (err = seal_and_queue(st, eb)) != ZETL_OK)
        return err;
    *backpressure = zetl_batch_pending_rows(st->bw) > 0 && zetl_sinkq_full(st->q);
    return ZETL_OK;
}

/* ---- the loop ---- */

static bool caught_up(struct zetl_stream *st)
{
    return st->opts.once && !zetl_capture_busy(&st->cap) &&
           st->pos.progress_lsn >= st->opts.target_lsn && zetl_snapwin_idle(st->snap);
}

/* A stop waits for the transaction being received: it is bounded by
 * logical_decoding_work_mem (larger ones are streamed and spilled). */
static bool stop_now(struct zetl_stream *st)
{
    return zetl_stop_requested() && !st->cap.in_txn;
}

/* Reads up to a budget of frames already received; *n is how many. */
static enum zetl_err read_messages(struct zetl_stream *st, int *n, struct zetl_errbuf *eb)
{
    struct zetl_copydata cd;
    enum zetl_err err;
    bool got;

    for (*n = 0; *n < READ_BUDGET; (*n)++) {
        if ((err = zetl_walreader_next(&st->rd, &cd, &got, eb)) != ZETL_OK || !got)
            return err;
        if (cd.kind == 'k') {
            zetl_capture_keepalive(&st->cap, cd.wal_end);
            continue;
        }
        err = zetl_capture_message(&st->cap, cd.data, cd.len, cd.wal_start, eb);
        if (err) {
            if (err != ZETL_ERR_IO)
                zetl_err_prefix(eb, "stream %s at " ZETL_LSN_FMT, st->name,
                                ZETL_LSN_ARGS(cd.wal_start));
            return err;
        }
        /* A primary key look-up in flight holds the next message back. */
        if (stop_now(st) || zetl_relmap_pending(st->rm)) {
            (*n)++;
            break;
        }
    }
    return ZETL_OK;
}

/*
 * Waits until the earliest deadline or a wake-up.  `read`: the replication
 * socket is watched too (not under backpressure, nor while a key look-up
 * holds the messages back).
 */
static enum zetl_err wait_for_work(struct zetl_stream *st, bool read, struct zetl_errbuf *eb)
{
    int64_t deadlines[2] = {zetl_status_deadline(&st->rd.status), -1};
    int fds[2] = {zetl_sinkq_fd(st->q), zetl_relmap_fd(st->rm)};
    int timeout;
    enum zetl_err err;

    if (read)
        deadlines[1] = zetl_batch_seal_deadline(st->bw, st->cfg->buffer.max_age_ms);
    timeout = zetl_poll_timeout(zetl_now_ms(), deadlines, 2);
    if ((err = zetl_walreader_poll(&st->rd, read, fds, 2, timeout, eb)) != ZETL_OK)
        return err;
    zetl_sinkq_ack(st->q);
    return zetl_relmap_poll(st->rm, eb);
}

/*
 * The loop of one connection.  Returns ZETL_OK when asked to stop or caught
 * up, ZETL_ERR_RETRY when the connection broke, anything else is fatal.
 */
static enum zetl_err stream_loop(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    for (;;) {
        bool backpressure, held;
        int n = 0;

        if ((err = zetl_sinkq_error(st->q, eb)) != ZETL_OK)
            return err;
        if (stop_now(st) || caught_up(st))
            return ZETL_OK;
        if ((err = seal_if_due(st, &backpressure, eb)) != ZETL_OK ||
            (err = send_status(st, false, eb)) != ZETL_OK ||
            (err = zetl_snapwin_durable(st->snap, flush_position(st), eb)) != ZETL_OK)
            return err;
        /*
         * Stopping while the sinks hold the reader back: the transaction being
         * received (if any) is never completed, so leave now; it was not
         * confirmed and the server sends it again.
         */
        if (backpressure && zetl_stop_requested())
            return ZETL_OK;
        held = backpressure || zetl_relmap_pending(st->rm);
        if (!held && (err = read_messages(st, &n, eb)) != ZETL_OK)
            return err;
        /* Not reading is our doing: the receive timeout starts over. */
        if (n > 0 || held)
            zetl_status_heard(&st->rd.status, zetl_now_ms());
        else if ((err = zetl_walreader_check_timeout(&st->rd, flush_position(st), eb)) != ZETL_OK)
            return err;
        if (n == READ_BUDGET)
            continue;
        if (n == 0 || held) {
            if ((err = wait_for_work(st, !held, eb)) != ZETL_OK)
                return err;
        }
    }
}

static void reset_connection_state(struct zetl_stream *st)
{
    /*
     * Everything not sealed is sent again from the slot's confirmed position,
     * so what the old connection reported is no longer ours to confirm: an
     * idle position kept from it would confirm, between the resent
     * transactions, past those not received again yet.
     */
    st->pos.idle_lsn = 0;
    st->pos.progress_lsn = st->pos.last_sealed_lsn;
    zetl_batch_discard(st->bw);
    zetl_spill_clear(st->spill);
    zetl_relcache_clear(st->rc);
    zetl_relmap_clear(st->rm);
    zetl_capture_reset(&st->cap, st->rd.proto_version);
    zetl_snapwin_reconnect(st->snap, st->pos.last_sealed_lsn);
    zetl_walreader_close(&st->rd, false);
}

static enum zetl_err connect_and_stream(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    /* The catalog connection first: opening it later would block the replication loop. */
    if ((err = zetl_relmap_connect(st->rm, eb)) != ZETL_OK ||
        (err = zetl_walreader_start(&st->rd, st->pos.last_sealed_lsn, eb)) != ZETL_OK)
        return err;
    zetl_capture_reset(&st->cap, st->rd.proto_version);
    return stream_loop(st, eb);
}

/* Seals what is complete, hands it to the sinks, waits until it is durable. */
static enum zetl_err drain(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    struct zetl_errbuf ignore;
    enum zetl_err err = ZETL_OK, drained;

    if (!st->cap.in_txn && !zetl_batch_in_txn(st->bw))
        err = seal_and_queue(st, eb);
    drained = zetl_sinkq_drain(st->q, err ? &ignore : eb);
    return err ? err : drained;
}

/* After a clean stop: the final position to the slot and to the sinks. */
static void report_final(struct zetl_stream *st)
{
    struct zetl_errbuf ignore;
    uint64_t flush = flush_position(st);

    /* The final position, so the slot does not replay what is durable ... */
    if (st->rd.conn && send_status(st, true, &ignore) == ZETL_OK)
        zetl_logmsg("stream %s: stopped at confirmed flush " ZETL_LSN_FMT, st->name,
                    ZETL_LSN_ARGS(st->rd.status.reported_flush));
    /* ... and the sinks know they are current up to there (zetl verify). */
    zetl_sinkq_note_final(st->q, flush);
    /* Snapshot chunks made durable by the drain: their progress is saved. */
    if (zetl_snapwin_durable(st->snap, flush, &ignore) != ZETL_OK)
        zetl_warn("stream %s: %s", st->name, ignore.msg);
}

enum zetl_err zetl_stream_run(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    enum zetl_err err;
    struct zetl_backoff bo;

    if ((err = zetl_sinkq_start(st->q, eb)) != ZETL_OK)
        return err;
    zetl_backoff_init(&bo, RECONNECT_INITIAL_MS, RECONNECT_MAX_MS);
    for (;;) {
        int64_t started = zetl_now_ms(), delay;

        if ((err = connect_and_stream(st, eb)) != ZETL_ERR_RETRY)
            break;
        /* A connection that lasted was healthy: this is a new failure, not the same one. */
        if (zetl_now_ms() - started > HEALTHY_CONNECTION_MS)
            zetl_backoff_reset(&bo);
        delay = zetl_backoff_next(&bo);
        zetl_warn("stream %s: %s; reconnecting in %lld ms", st->name, eb->msg, (long long)delay);
        reset_connection_state(st);
        if (zetl_stop_requested()) {
            err = ZETL_OK;
            break;
        }
        zetl_stop_sleep(delay);
    }
    if (err != ZETL_OK) {
        /* Fatal: nothing more is sealed; the sinks finish what they hold. */
        zetl_sinkq_shutdown(st->q);
        return err;
    }
    if ((err = drain(st, eb)) == ZETL_OK)
        report_final(st);
    return err;
}

/* The spool directories and the batcher's and spill's state on disk. */
static enum zetl_err open_spool(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    struct zetl_buf path;
    enum zetl_err err;

    zetl_buf_init(&path, 0);
    zetl_buf_printf(&path, "%s/spool/%s", st->cfg->buffer.dir, st->name);
    st->spool_dir = zetl_strdup(path.data);
    /* Whatever a previous run left in the spool was never confirmed: start clean. */
    if ((err = zetl_fs_rmtree(st->spool_dir, eb)) != ZETL_OK ||
        (err = zetl_fs_mkdirs(st->spool_dir, eb)) != ZETL_OK)
        goto fail;
    zetl_buf_reset(&path);
    zetl_buf_printf(&path, "%s/spool", st->cfg->buffer.dir);
    err = zetl_batch_writer_new(path.data, st->name, st->cfg->transforms.tenant_column, st->rc,
                                &st->bw, eb);
    if (err)
        goto fail;
    zetl_buf_reset(&path);
    zetl_buf_printf(&path, "%s/streams", st->spool_dir);
    err = zetl_spill_new(path.data, &st->spill, eb);
fail:
    zetl_buf_release(&path);
    return err;
}

enum zetl_err zetl_stream_new(const struct zetl_config *cfg, const struct zetl_source_group *grp,
                              struct zetl_archive *ar, const struct zetl_stream_opts *opts,
                              struct zetl_stream **out, struct zetl_errbuf *eb)
{
    struct zetl_stream *st = zetl_calloc(1, sizeof(*st));
    const char *salt = getenv("ZETL_MASK_SALT");
    struct zetl_sink_env env = {cfg, NULL, ar};
    struct zetl_sinkq_opts qopts = zetl_sinkq_default_opts;
    struct zetl_capture_env cenv;
    enum zetl_err err;

    zetl_stop_init();
    st->cfg = cfg;
    st->opts = *opts;
    st->name = zetl_strdup(grp->name);
    zetl_walreader_init(&st->rd, cfg->source.dsn, st->name,
                        (int64_t)cfg->source.receive_timeout_ms);
    st->rc = zetl_relcache_new();
    st->rm = zetl_relmap_new(cfg, st->name, st->rc, (const uint8_t *)salt, salt ? strlen(salt) : 0);
    if ((err = open_spool(st, eb)) != ZETL_OK)
        goto fail;
    cenv = (struct zetl_capture_env){st->name, st->rc,      st->rm, st->bw, st->spill,
                                     &st->pos, replay_tick, st,     NULL};
    zetl_capture_init(&st->cap, &cenv);

    env.stream = st->name;
    /* Retention keeps what a replay from the last snapshot needs unless told otherwise. */
    qopts.retention_floor = cfg->archive.retention_ignore_snapshot ? zetl_retention_no_floor
                                                                   : zetl_retention_snapshot_floor;
    qopts.retention_arg = (void *)cfg;
    if ((err = zetl_sinkq_new(&env, zetl_sink_registry, &qopts, &st->q, eb)) != ZETL_OK)
        goto fail;
    st->pos.last_sealed_lsn = zetl_sinkq_covered_lsn(st->q);
    if (st->pos.last_sealed_lsn)
        zetl_logmsg("stream %s: archive holds transactions up to commit lsn " ZETL_LSN_FMT,
                    st->name, ZETL_LSN_ARGS(st->pos.last_sealed_lsn));
    *out = st;
    return ZETL_OK;

fail:
    zetl_err_prefix(eb, "stream %s", grp->name);
    zetl_stream_free(st);
    return err;
}

void zetl_stream_set_snapshot(struct zetl_stream *st, struct zetl_snapwin *w)
{
    st->snap = w;
    st->cap.env.snap = w;
}

const char *zetl_stream_spool_dir(const struct zetl_stream *st)
{
    return st->spool_dir;
}

void zetl_stream_free(struct zetl_stream *st)
{
    if (st == NULL)
        return;
    zetl_sinkq_free(st->q);
    zetl_walreader_close(&st->rd, true);
    zetl_batch_writer_free(st->bw);
    zetl_spill_free(st->spill);
    zetl_relmap_free(st->rm);
    zetl_relcache_free(st->rc);
    zetl_capture_release(&st->cap);
    free(st->spool_dir);
    free(st->name);
    free(st);
}
