/* The per-slot-group stream: replication loop, decoding, batching, sink thread. */
#include "replicator/stream.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/backoff.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "proto/copydata.h"
#include "proto/pgoutput.h"
#include "proto/relcache.h"
#include "replicator/spill.h"
#include "sinks/batch.h"
#include "sinks/warehouse/wh.h"
#include "transforms/transform.h"

#define SINK_QUEUE_MAX 2        /* sealed batches waiting for the sink */
#define STATUS_INTERVAL_MS 1000 /* standby status update at least this often */
#define READ_BUDGET 2000        /* messages per loop tick before looking around */
#define BACKOFF_MAX_MS 30000

static atomic_int stop_requested;

void zetl_stream_stop_all(void)
{
    atomic_store(&stop_requested, 1);
}

bool zetl_stream_stopping(void)
{
    return atomic_load(&stop_requested) != 0;
}

/* Per-relation state: the transform plan for the relation version it was built for. */
struct rel_entry {
    uint32_t relid; /* 0 = empty slot */
    uint32_t version;
    bool selected;
    bool warned_nokey;
    struct zetl_table_plan *plan; /* owned */
};

struct zetl_stream {
    const struct zetl_config *cfg;
    const struct zetl_source_group *grp;
    struct zetl_archive *ar;
    struct zetl_wh *wh; /* owned; NULL without a warehouse; used by the sink thread only */
    struct zetl_stream_opts opts;
    char *name;
    char *spool_dir; /* <buffer.dir>/spool/<stream> */
    const uint8_t *salt;
    size_t salt_len;

    PGconn *conn;
    PGconn *catalog; /* owned: normal connection for catalog look-ups, opened on first need */
    struct zetl_pgo_decoder dec;
    struct zetl_relcache *rc;
    struct zetl_arena msg_arena;
    struct zetl_arena replay_arena;
    struct zetl_batch_writer *bw;
    struct zetl_spill *spill;
    struct rel_entry *rels; /* open addressing by relid */
    size_t rels_cap;
    size_t rels_n;
    struct zetl_value *values;
    size_t values_cap;

    /* transaction in progress */
    bool in_txn;
    bool txn_begun; /* batch_begin_txn called (first selected row seen) */
    bool txn_skip;  /* already archived: drop its changes */
    uint64_t txn_commit_lsn;
    int64_t txn_commit_time;
    uint32_t stream_xid; /* xid of the open Stream Start block, 0 outside */
    uint64_t replayed;   /* spilled messages replayed, for pacing status updates */

    /* positions */
    uint64_t last_sealed_lsn; /* commit LSN of the newest transaction queued to the sink (or
                               * archived by an earlier run): the server's resends up to it
                               * are skipped */
    uint64_t progress_lsn;    /* how far the server has certainly sent us (commits, keepalives) */
    uint64_t idle_lsn;        /* confirmable when nothing is pending */
    uint64_t received_lsn;
    uint64_t reported_flush;
    int64_t last_status_ms;
    bool reply_requested;
    int64_t last_recv_ms; /* when the server last sent anything (receive timeout) */
    bool ping_sent;       /* a status update asking for a reply went out since then */

    /* sink thread */
    pthread_t sink_thread;
    bool sink_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct zetl_batch *queue[SINK_QUEUE_MAX];
    size_t qhead, qlen;
    bool sink_busy;      /* a batch is being made durable */
    bool sink_shutdown;  /* no more batches will come */
    bool sink_abandoned; /* stopped while the warehouse was unavailable */
    uint64_t durable_end_lsn;
    uint64_t sink_idle_lsn; /* reader's position while nothing is pending */
    uint64_t wh_noted_lsn;  /* idle progress last recorded in the warehouse */
    enum zetl_err sink_err;
    struct zetl_errbuf sink_eb;
};

/* ---- relation map ---- */

static struct rel_entry *rel_slot(struct zetl_stream *st, uint32_t relid)
{
    if (st->rels_n * 2 >= st->rels_cap) {
        size_t old_cap = st->rels_cap;
        struct rel_entry *old = st->rels;
        st->rels_cap = old_cap ? old_cap * 2 : 64;
        st->rels = zetl_calloc(st->rels_cap, sizeof(*st->rels));
        st->rels_n = 0;
        for (size_t i = 0; i < old_cap; i++) {
            if (old[i].relid == 0)
                continue;
            struct rel_entry *e = rel_slot(st, old[i].relid);
            *e = old[i];
            st->rels_n++;
        }
        free(old);
    }
    size_t mask = st->rels_cap - 1;
    size_t i = (relid * 2654435761u) & mask;
    while (st->rels[i].relid != 0 && st->rels[i].relid != relid)
        i = (i + 1) & mask;
    return &st->rels[i];
}

static void rels_clear(struct zetl_stream *st)
{
    for (size_t i = 0; i < st->rels_cap; i++)
        zetl_transform_plan_free(st->rels[i].plan);
    free(st->rels);
    st->rels = NULL;
    st->rels_cap = st->rels_n = 0;
}

/* Returns the plan for a relation, or NULL when its changes are not captured. */
static struct zetl_table_plan *plan_for(struct zetl_stream *st, const struct zetl_relation *rel)
{
    struct rel_entry *e = rel_slot(st, rel->relid);

    if (e->relid == 0) {
        e->relid = rel->relid;
        st->rels_n++;
    } else if (e->version == rel->version && (e->plan != NULL || !e->selected)) {
        return e->plan;
    }
    zetl_transform_plan_free(e->plan);
    e->plan = NULL;
    e->version = rel->version;
    e->selected = zetl_transform_schema_selected(st->cfg, rel->nspname) &&
                  zetl_transform_table_selected(st->cfg, rel->relname);
    if (!e->selected)
        return NULL;
    e->plan = zetl_transform_plan_new(st->cfg, rel, st->salt, st->salt_len);
    if (!e->plan->has_key && !e->warned_nokey) {
        e->warned_nokey = true;
        zetl_warn("stream %s: table \"%s\".\"%s\" has no replica identity key: its rows are "
                  "archived, but updates and deletes carry no old key unless REPLICA IDENTITY "
                  "FULL is set",
                  st->name, rel->nspname, rel->relname);
    }
    return e->plan;
}

/* ---- sink thread ---- */

static void sleep_ms(int64_t ms);

/*
 * Applies an archived batch to the warehouse, retrying with backoff while the
 * warehouse is unavailable.  Returns ZETL_ERR_RETRY only when asked to stop
 * meanwhile.
 */
static enum zetl_err apply_with_retry(struct zetl_stream *st, const char *name,
                                      struct zetl_errbuf *eb)
{
    struct zetl_backoff bo;
    enum zetl_err err;

    zetl_backoff_init(&bo, 500, BACKOFF_MAX_MS);
    for (;;) {
        char *dir = NULL;
        int64_t delay;

        err = zetl_archive_fetch(st->ar, st->name, name, &dir, eb);
        if (err == ZETL_OK)
            err = zetl_wh_apply_dir(st->wh, dir, eb);
        zetl_archive_fetch_done(st->ar, dir);
        if (err != ZETL_ERR_RETRY)
            return err;
        if (zetl_stream_stopping())
            return err;
        delay = zetl_backoff_next(&bo);
        zetl_warn("stream %s: could not apply batch %s to the warehouse: %s; retrying in %lld ms",
                  st->name, name, eb->msg, (long long)delay);
        sleep_ms(delay);
    }
}

/*
 * Stores a sealed batch in the archive, retrying with backoff while the
 * archive is unavailable (S3 5xx, throttling, network).  Returns
 * ZETL_ERR_RETRY only when asked to stop meanwhile.
 */
static enum zetl_err put_with_retry(struct zetl_stream *st, const struct zetl_batch *b,
                                    const char *name, struct zetl_errbuf *eb)
{
    struct zetl_backoff bo;
    enum zetl_err err;

    zetl_backoff_init(&bo, 500, BACKOFF_MAX_MS);
    while ((err = zetl_archive_put(st->ar, b, eb)) == ZETL_ERR_RETRY && !zetl_stream_stopping()) {
        int64_t delay = zetl_backoff_next(&bo);
        zetl_warn("stream %s: could not archive batch %s: %s; retrying in %lld ms", st->name, name,
                  eb->msg, (long long)delay);
        sleep_ms(delay);
    }
    return err;
}

/* Applies archived batches the warehouse has not seen (a crash between archive and apply). */
static enum zetl_err catch_up_warehouse(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    uint64_t last = 0, end = 0;
    struct zetl_strlist names = {NULL, 0};
    enum zetl_err err;
    struct zetl_backoff bo;

    zetl_backoff_init(&bo, 500, BACKOFF_MAX_MS);
    while ((err = zetl_wh_offset(st->wh, st->name, &last, &end, eb)) == ZETL_ERR_RETRY &&
           !zetl_stream_stopping()) {
        int64_t delay = zetl_backoff_next(&bo);
        zetl_warn("stream %s: warehouse unavailable: %s; retrying in %lld ms", st->name, eb->msg,
                  (long long)delay);
        sleep_ms(delay);
    }
    if (err)
        return err;
    if ((err = zetl_archive_list(st->ar, st->name, last, &names, eb)) != ZETL_OK)
        return err;
    if (names.n > 0)
        zetl_logmsg("stream %s: applying %zu archived batch(es) the warehouse has not seen",
                    st->name, names.n);
    for (size_t i = 0; i < names.n && err == ZETL_OK; i++)
        err = apply_with_retry(st, names.items[i], eb);
    zetl_strlist_release(&names);
    return err;
}

static void sink_fail(struct zetl_stream *st, enum zetl_err err, const struct zetl_errbuf *eb)
{
    pthread_mutex_lock(&st->mu);
    if (err == ZETL_ERR_RETRY) {
        /* Stopping while a sink is down: what is archived is applied at the next start,
         * what is not is sent again by the server (the slot did not move past it). */
        st->sink_abandoned = true;
    } else {
        st->sink_err = err;
        st->sink_eb = *eb;
    }
    st->sink_busy = false;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* Records idle progress in the warehouse so `zetl verify` sees it is current. */
static void note_idle_progress(struct zetl_stream *st)
{
    uint64_t idle;
    struct zetl_errbuf eb;

    pthread_mutex_lock(&st->mu);
    idle = st->sink_idle_lsn;
    pthread_mutex_unlock(&st->mu);
    if (st->wh == NULL || idle <= st->wh_noted_lsn)
        return;
    if (zetl_wh_note_progress(st->wh, st->name, idle, &eb) == ZETL_OK)
        st->wh_noted_lsn = idle;
    else
        zetl_debug("stream %s: could not record progress: %s", st->name, eb.msg);
}

static void *sink_main(void *arg)
{
    struct zetl_stream *st = arg;
    struct zetl_errbuf eb;
    enum zetl_err err;

    if (st->wh != NULL && (err = catch_up_warehouse(st, &eb)) != ZETL_OK) {
        zetl_err_prefix(&eb, "stream %s", st->name);
        sink_fail(st, err, &eb);
        return NULL;
    }
    for (;;) {
        struct zetl_batch *b;
        char name[40];

        pthread_mutex_lock(&st->mu);
        while (st->qlen == 0 && !st->sink_shutdown) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&st->cv, &st->mu, &ts) == ETIMEDOUT && st->qlen == 0) {
                pthread_mutex_unlock(&st->mu);
                note_idle_progress(st);
                pthread_mutex_lock(&st->mu);
            }
        }
        if (st->qlen == 0) {
            pthread_mutex_unlock(&st->mu);
            break;
        }
        b = st->queue[st->qhead];
        st->sink_busy = true;
        pthread_mutex_unlock(&st->mu);

        zetl_archive_batch_name(b, name);
        err = put_with_retry(st, b, name, &eb);
        if (err) {
            zetl_err_prefix(&eb, "stream %s: could not archive batch %s", st->name, name);
            sink_fail(st, err, &eb);
            break;
        }
        if (st->wh != NULL && (err = apply_with_retry(st, name, &eb)) != ZETL_OK) {
            zetl_err_prefix(&eb, "stream %s: batch %s", st->name, name);
            sink_fail(st, err, &eb);
            break;
        }
        zetl_info("stream %s: %s batch %s: %llu rows in %llu transactions, commit lsn "
                  "%X/%X to %X/%X",
                  st->name, st->wh ? "archived and applied" : "archived", name,
                  (unsigned long long)b->nrows, (unsigned long long)b->ntxns,
                  ZETL_LSN_ARGS(b->first_lsn), ZETL_LSN_ARGS(b->last_lsn));
        if (zetl_fs_rmtree(b->dir, &eb) != ZETL_OK)
            zetl_warn("stream %s: %s", st->name, eb.msg);

        pthread_mutex_lock(&st->mu);
        st->durable_end_lsn = b->end_lsn;
        st->qhead = (st->qhead + 1) % SINK_QUEUE_MAX;
        st->qlen--;
        st->sink_busy = false;
        pthread_cond_broadcast(&st->cv);
        pthread_mutex_unlock(&st->mu);
        zetl_batch_free(b);
    }
    return NULL;
}

/* ---- status updates ---- */

static bool nothing_pending(struct zetl_stream *st)
{
    bool idle;

    if (st->in_txn || zetl_batch_in_txn(st->bw) || zetl_batch_pending_rows(st->bw) > 0 ||
        zetl_spill_open_count(st->spill) > 0)
        return false;
    pthread_mutex_lock(&st->mu);
    idle = st->qlen == 0 && !st->sink_busy;
    pthread_mutex_unlock(&st->mu);
    return idle;
}

static uint64_t flush_position(struct zetl_stream *st)
{
    uint64_t flush;

    pthread_mutex_lock(&st->mu);
    flush = st->durable_end_lsn;
    pthread_mutex_unlock(&st->mu);
    if (nothing_pending(st) && st->idle_lsn > flush) {
        flush = st->idle_lsn;
        pthread_mutex_lock(&st->mu);
        st->sink_idle_lsn = st->idle_lsn;
        pthread_mutex_unlock(&st->mu);
    }
    return flush;
}

/* With `ping`, the update asks the server for an immediate reply (a keepalive). */
static enum zetl_err send_status_msg(struct zetl_stream *st, bool force, bool ping,
                                     struct zetl_errbuf *eb)
{
    int64_t now = zetl_now_ms();
    uint64_t flush = flush_position(st);
    uint8_t msg[ZETL_STATUS_UPDATE_LEN];

    if (!force && !ping && !st->reply_requested && flush == st->reported_flush &&
        now - st->last_status_ms < STATUS_INTERVAL_MS)
        return ZETL_OK;
    uint64_t write = st->received_lsn > flush ? st->received_lsn : flush;
    zetl_copydata_encode_status(msg, write, flush, flush, zetl_pg_now(), ping);
    if (PQputCopyData(st->conn, (const char *)msg, sizeof(msg)) != 1 || PQflush(st->conn) < 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "could not send standby status update: %s",
                            PQerrorMessage(st->conn));
    if (flush != st->reported_flush)
        zetl_debug("stream %s: confirmed flush " ZETL_LSN_FMT, st->name, ZETL_LSN_ARGS(flush));
    st->reported_flush = flush;
    st->last_status_ms = now;
    st->reply_requested = false;
    return ZETL_OK;
}

static enum zetl_err send_status(struct zetl_stream *st, bool force, struct zetl_errbuf *eb)
{
    return send_status_msg(st, force, false, eb);
}

/* ---- batches ---- */

static bool queue_full(struct zetl_stream *st)
{
    bool full;

    pthread_mutex_lock(&st->mu);
    full = st->qlen >= SINK_QUEUE_MAX;
    pthread_mutex_unlock(&st->mu);
    return full;
}

static enum zetl_err check_sink(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    pthread_mutex_lock(&st->mu);
    err = st->sink_err;
    if (err)
        *eb = st->sink_eb;
    pthread_mutex_unlock(&st->mu);
    return err;
}

/* Seals the open batch (if it holds a transaction) and queues it; waits for room. */
static enum zetl_err seal_and_queue(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    struct zetl_batch *b = NULL;
    enum zetl_err err = zetl_batch_seal(st->bw, &b, eb);

    if (err) {
        zetl_err_prefix(eb, "stream %s: could not seal batch", st->name);
        return err;
    }
    if (b == NULL)
        return ZETL_OK;
    pthread_mutex_lock(&st->mu);
    while (st->qlen >= SINK_QUEUE_MAX && st->sink_err == ZETL_OK && !st->sink_abandoned)
        pthread_cond_wait(&st->cv, &st->mu);
    if (st->sink_err == ZETL_OK && !st->sink_abandoned) {
        /* Only a queued batch survives a reconnect (reset_connection_state): its
         * transactions are skipped when the server sends them again.  A batch
         * dropped here must not move the mark, or a later reconnect would skip
         * transactions that were never made durable. */
        st->last_sealed_lsn = b->last_lsn;
        st->queue[(st->qhead + st->qlen) % SINK_QUEUE_MAX] = b;
        st->qlen++;
        b = NULL;
        pthread_cond_broadcast(&st->cv);
    }
    pthread_mutex_unlock(&st->mu);
    if (b != NULL) {
        zetl_batch_free(b);
        return check_sink(st, eb);
    }
    return ZETL_OK;
}

/* ---- applying decoded messages ---- */

static struct zetl_value *values_room(struct zetl_stream *st, size_t n)
{
    if (n > st->values_cap) {
        st->values_cap = n;
        st->values = zetl_realloc(st->values, n * sizeof(*st->values));
    }
    return st->values;
}

static enum zetl_err add_tuple_row(struct zetl_stream *st, enum zetl_op op,
                                   const struct zetl_relation *rel,
                                   const struct zetl_table_plan *plan, const struct zetl_tuple *tup,
                                   struct zetl_arena *ar, struct zetl_errbuf *eb)
{
    struct zetl_value *vals = values_room(st, plan->nout ? plan->nout : 1);
    struct zetl_row row = {op, plan, rel, vals};
    enum zetl_err err = zetl_transform_tuple(plan, tup, vals, ar, eb);

    if (err)
        return err;
    return zetl_batch_add(st->bw, &row, eb);
}

static enum zetl_err txn_ensure_begun(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    if (st->txn_begun)
        return ZETL_OK;
    st->txn_begun = true;
    return zetl_batch_begin_txn(st->bw, st->txn_commit_lsn, st->txn_commit_time, eb);
}

static enum zetl_err lookup_rel(struct zetl_stream *st, uint32_t relid, struct zetl_relation **rel,
                                struct zetl_errbuf *eb)
{
    *rel = zetl_relcache_get(st->rc, relid);
    if (*rel == NULL)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "change for relation %u before its Relation message", relid);
    return ZETL_OK;
}

/*
 * The relation and plan of a change, with the batch transaction begun on the
 * first captured row.  *plan is NULL when the table is not captured.
 */
static enum zetl_err row_target(struct zetl_stream *st, uint32_t relid, struct zetl_relation **rel,
                                struct zetl_table_plan **plan, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    *plan = NULL;
    if ((err = lookup_rel(st, relid, rel, eb)) != ZETL_OK)
        return err;
    if ((*plan = plan_for(st, *rel)) == NULL)
        return ZETL_OK;
    return txn_ensure_begun(st, eb);
}

/* Insert, Update, Delete, Truncate of the current transaction. */
static enum zetl_err apply_change(struct zetl_stream *st, const struct zetl_pgo_msg *m,
                                  struct zetl_arena *ar, struct zetl_errbuf *eb)
{
    struct zetl_relation *rel;
    struct zetl_table_plan *plan;
    enum zetl_err err;

    if (!st->in_txn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "change message '%c' outside a transaction",
                            (char)m->kind);
    if (st->txn_skip)
        return ZETL_OK;

    switch (m->kind) {
    case ZETL_PGO_INSERT:
        if ((err = row_target(st, m->u.insert.relid, &rel, &plan, eb)) || plan == NULL)
            return err;
        return add_tuple_row(st, ZETL_OP_INSERT, rel, plan, &m->u.insert.newtup, ar, eb);
    case ZETL_PGO_UPDATE:
        if ((err = row_target(st, m->u.update.relid, &rel, &plan, eb)) || plan == NULL)
            return err;
        if (m->u.update.oldkind != 0) {
            err = add_tuple_row(st, ZETL_OP_BEFORE, rel, plan, &m->u.update.oldtup, ar, eb);
            if (err)
                return err;
        }
        return add_tuple_row(st, ZETL_OP_UPDATE, rel, plan, &m->u.update.newtup, ar, eb);
    case ZETL_PGO_DELETE:
        if ((err = row_target(st, m->u.delete_.relid, &rel, &plan, eb)) || plan == NULL)
            return err;
        return add_tuple_row(st, ZETL_OP_DELETE, rel, plan, &m->u.delete_.oldtup, ar, eb);
    case ZETL_PGO_TRUNCATE:
        for (uint32_t i = 0; i < m->u.truncate.nrelids; i++) {
            if ((err = row_target(st, m->u.truncate.relids[i], &rel, &plan, eb)))
                return err;
            if (plan == NULL)
                continue;
            struct zetl_row row = {ZETL_OP_TRUNCATE, plan, rel, NULL};
            if ((err = zetl_batch_add(st->bw, &row, eb)))
                return err;
        }
        return ZETL_OK;
    default:
        return ZETL_OK;
    }
}

static enum zetl_err txn_begin(struct zetl_stream *st, uint64_t commit_lsn, int64_t commit_time,
                               struct zetl_errbuf *eb)
{
    if (st->in_txn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "transaction begins inside another");
    st->in_txn = true;
    st->txn_begun = false;
    st->txn_commit_lsn = commit_lsn;
    st->txn_commit_time = commit_time;
    st->txn_skip = commit_lsn <= st->last_sealed_lsn;
    if (st->txn_skip)
        zetl_debug("stream %s: skipping transaction committed at " ZETL_LSN_FMT
                   ", already archived",
                   st->name, ZETL_LSN_ARGS(commit_lsn));
    return ZETL_OK;
}

static enum zetl_err txn_commit(struct zetl_stream *st, uint64_t commit_lsn, uint64_t end_lsn,
                                struct zetl_errbuf *eb)
{
    enum zetl_err err = ZETL_OK;

    if (!st->in_txn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "commit outside a transaction");
    if (commit_lsn != st->txn_commit_lsn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "commit lsn " ZETL_LSN_FMT " does not match the transaction's "
                            "final lsn " ZETL_LSN_FMT,
                            ZETL_LSN_ARGS(commit_lsn), ZETL_LSN_ARGS(st->txn_commit_lsn));
    if (st->txn_begun)
        err = zetl_batch_end_txn(st->bw, end_lsn, eb);
    else if (end_lsn > st->idle_lsn)
        st->idle_lsn = end_lsn;
    st->in_txn = false;
    st->txn_begun = false;
    if (end_lsn > st->progress_lsn)
        st->progress_lsn = end_lsn;
    return err;
}

/*
 * With REPLICA IDENTITY FULL every column arrives flagged as key, but the
 * warehouse key must be the primary key: look it up in the source catalog.
 * A FULL table without a primary key gets no key (its rows are appended).
 */
static enum zetl_err update_relation(struct zetl_stream *st, const struct zetl_pgo_msg *m,
                                     struct zetl_errbuf *eb)
{
    struct zetl_relation *rel = zetl_relcache_update(st->rc, m);
    char relid[16];
    const char *params[1] = {relid};
    PGresult *res;
    enum zetl_err err;

    if (rel->replident != 'f')
        return ZETL_OK;
    if (st->catalog == NULL || PQstatus(st->catalog) != CONNECTION_OK) {
        if (st->catalog)
            PQfinish(st->catalog);
        st->catalog = NULL;
        if ((err = zetl_source_connect(st->cfg->source.dsn, false, "zetl catalog", &st->catalog,
                                       eb)) != ZETL_OK)
            return err;
    }
    snprintf(relid, sizeof(relid), "%u", rel->relid);
    res = PQexecParams(st->catalog,
                       "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                       "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::oid AND "
                       "i.indisprimary",
                       1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err =
            zetl_err_set(eb, ZETL_ERR_RETRY, "could not read the primary key of \"%s\".\"%s\": %s",
                         rel->nspname, rel->relname, PQresultErrorMessage(res));
        PQclear(res);
        return err;
    }
    for (uint16_t c = 0; c < rel->ncols; c++) {
        rel->cols[c].key = false;
        for (int r = 0; r < PQntuples(res); r++)
            if (strcmp(PQgetvalue(res, r, 0), rel->cols[c].name) == 0)
                rel->cols[c].key = true;
    }
    PQclear(res);
    return ZETL_OK;
}

/* Replays one spilled message of a committed streamed transaction. */
static enum zetl_err replay_one(void *arg, const uint8_t *data, size_t len, struct zetl_errbuf *eb)
{
    struct zetl_stream *st = arg;
    struct zetl_pgo_decoder dec;
    struct zetl_pgo_msg m;
    enum zetl_err err;

    /* A replay of millions of rows takes a while: keep the walsender from timing out. */
    if ((++st->replayed & 4095) == 0 && (err = send_status(st, false, eb)) != ZETL_OK)
        return err;
    zetl_pgo_decoder_init(&dec, st->dec.proto_version);
    dec.in_stream = true;
    zetl_arena_reset(&st->replay_arena);
    err = zetl_pgoutput_decode(&dec, data, len, st->txn_commit_lsn, &m, &st->replay_arena, eb);
    if (err)
        return err;
    switch (m.kind) {
    case ZETL_PGO_RELATION:
        return update_relation(st, &m, eb);
    case ZETL_PGO_TYPE:
        zetl_relcache_update_type(st->rc, &m);
        return ZETL_OK;
    case ZETL_PGO_MESSAGE:
        return ZETL_OK;
    default:
        return apply_change(st, &m, &st->replay_arena, eb);
    }
}

static enum zetl_err handle_message(struct zetl_stream *st, const uint8_t *data, size_t len,
                                    uint64_t lsn, struct zetl_errbuf *eb)
{
    struct zetl_pgo_msg m;
    enum zetl_err err;

    zetl_arena_reset(&st->msg_arena);
    err = zetl_pgoutput_decode(&st->dec, data, len, lsn, &m, &st->msg_arena, eb);
    if (err)
        return err;

    /* Changes inside a stream block belong to an uncommitted transaction: spill them. */
    if (st->dec.in_stream && m.kind != ZETL_PGO_STREAM_START) {
        switch (m.kind) {
        case ZETL_PGO_RELATION:
        case ZETL_PGO_TYPE:
        case ZETL_PGO_INSERT:
        case ZETL_PGO_UPDATE:
        case ZETL_PGO_DELETE:
        case ZETL_PGO_TRUNCATE:
        case ZETL_PGO_MESSAGE:
            return zetl_spill_append(st->spill, st->stream_xid, data, len, eb);
        default:
            break;
        }
    }

    switch (m.kind) {
    case ZETL_PGO_BEGIN:
        return txn_begin(st, m.u.begin.final_lsn, m.u.begin.commit_time, eb);
    case ZETL_PGO_COMMIT:
        return txn_commit(st, m.u.commit.commit_lsn, m.u.commit.end_lsn, eb);
    case ZETL_PGO_RELATION:
        return update_relation(st, &m, eb);
    case ZETL_PGO_TYPE:
        zetl_relcache_update_type(st->rc, &m);
        return ZETL_OK;
    case ZETL_PGO_INSERT:
    case ZETL_PGO_UPDATE:
    case ZETL_PGO_DELETE:
    case ZETL_PGO_TRUNCATE:
        return apply_change(st, &m, &st->msg_arena, eb);
    case ZETL_PGO_ORIGIN:
    case ZETL_PGO_MESSAGE:
        return ZETL_OK;
    case ZETL_PGO_STREAM_START:
        if (st->in_txn)
            return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "stream start inside a transaction");
        st->stream_xid = m.u.stream_start.xid;
        return ZETL_OK;
    case ZETL_PGO_STREAM_STOP:
        st->stream_xid = 0;
        return ZETL_OK;
    case ZETL_PGO_STREAM_ABORT:
        zetl_spill_abort(st->spill, m.u.stream_abort.xid, m.u.stream_abort.subxid);
        return ZETL_OK;
    case ZETL_PGO_STREAM_COMMIT: {
        uint32_t xid = m.u.stream_commit.xid;
        err = txn_begin(st, m.u.stream_commit.commit_lsn, m.u.stream_commit.commit_time, eb);
        if (err)
            return err;
        if (st->txn_skip)
            zetl_spill_abort(st->spill, xid, xid);
        else if ((err = zetl_spill_replay(st->spill, xid, replay_one, st, eb)) != ZETL_OK)
            return err;
        return txn_commit(st, m.u.stream_commit.commit_lsn, m.u.stream_commit.end_lsn, eb);
    }
    default:
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "unexpected two-phase message '%c' at " ZETL_LSN_FMT
                            " (two_phase is not enabled on the slot)",
                            (char)m.kind, ZETL_LSN_ARGS(lsn));
    }
}

/* ---- the replication connection ---- */

static void reset_connection_state(struct zetl_stream *st)
{
    /* Everything not sealed is sent again from the slot's confirmed position. */
    zetl_batch_discard(st->bw);
    zetl_spill_clear(st->spill);
    zetl_relcache_clear(st->rc);
    rels_clear(st);
    st->in_txn = false;
    st->txn_begun = false;
    st->stream_xid = 0;
    if (st->conn) {
        PQfinish(st->conn);
        st->conn = NULL;
    }
}

/*
 * Classifies a failed START_REPLICATION.  A slot another process holds
 * (object_in_use: a second consumer, or a walsender left over from a broken
 * connection that the server has not noticed yet) is retried.  A slot that is
 * gone or invalidated is a clear stop: recreating it would skip, without a
 * trace, every change committed since what zetl consumed.
 */
static enum zetl_err start_failed(struct zetl_stream *st, const PGresult *res,
                                  struct zetl_errbuf *eb)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    enum zetl_err err;

    if (PQstatus(st->conn) != CONNECTION_OK || state == NULL || primary == NULL) {
        err = zetl_err_set(eb, ZETL_ERR_RETRY, "could not start replication on slot \"%s\": %s",
                           st->name, PQerrorMessage(st->conn));
        /* Drop the trailing newline libpq leaves. */
        size_t n = strlen(eb->msg);
        if (n && eb->msg[n - 1] == '\n')
            eb->msg[n - 1] = '\0';
        return err;
    }
    if (strcmp(state, "55006") == 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "could not start replication: %s (another consumer, or a walsender "
                            "left over from a broken connection that the server has not ended yet)",
                            primary);
    if (strcmp(state, "42704") == 0 ||
        (strcmp(state, "55000") == 0 && strstr(primary, "can no longer get changes") != NULL))
        return zetl_err_set(
            eb, ZETL_ERR_FATAL,
            "replication slot \"%s\" was %s while zetl streamed from it (%s%s%s); zetl has "
            "consumed transactions up to commit lsn " ZETL_LSN_FMT
            ": the changes committed after that to this slot group's tenant schemas are lost to "
            "zetl, and it does not recreate the slot over the gap; to recover, follow \"A "
            "replication slot was lost\" in docs/operations.md (set the stream's archive and "
            "warehouse offset aside, restart, re-snapshot the slot group's tenants)",
            st->name, state[0] == '4' ? "dropped" : "invalidated", primary, detail ? ": " : "",
            detail ? detail : "", ZETL_LSN_ARGS(st->last_sealed_lsn));
    return zetl_err_set(eb, ZETL_ERR_FATAL, "could not start replication on slot \"%s\": %s",
                        st->name, primary);
}

static enum zetl_err start_replication(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    char app[128];
    struct zetl_buf cmd;
    PGresult *res;
    enum zetl_err err;
    int version;

    snprintf(app, sizeof(app), "zetl %s", st->name);
    err = zetl_source_connect(st->cfg->source.dsn, true, app, &st->conn, eb);
    if (err)
        return err;
    version = PQserverVersion(st->conn);
    zetl_pgo_decoder_init(&st->dec, version >= 160000 ? 4 : version >= 150000 ? 3 : 2);
    zetl_buf_init(&cmd, 0);
    /* Start at 0/0: the server resumes from the slot's confirmed flush position. */
    zetl_buf_printf(&cmd,
                    "START_REPLICATION SLOT \"%s\" LOGICAL 0/0 (proto_version '%d', "
                    "publication_names '\"%s\"', streaming 'on')",
                    st->name, st->dec.proto_version, st->name);
    res = PQexec(st->conn, cmd.data);
    zetl_buf_release(&cmd);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        err = start_failed(st, res, eb);
        PQclear(res);
        return err;
    }
    PQclear(res);
    zetl_logmsg("stream %s: replication started (protocol version %d, streaming on)", st->name,
                st->dec.proto_version);
    st->last_status_ms = 0;
    st->last_recv_ms = zetl_now_ms();
    st->ping_sent = false;
    return ZETL_OK;
}

/*
 * A frozen walsender, or a connection that died without a word, sends
 * nothing.  After half the timeout ask the server for a reply (as
 * walreceiver does: the walsender answers with a keepalive even when idle);
 * after the whole timeout give the connection up.
 */
static enum zetl_err check_receive_timeout(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    int64_t timeout = (int64_t)st->cfg->source.receive_timeout_ms;
    int64_t silent = zetl_now_ms() - st->last_recv_ms;

    if (silent >= timeout)
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "receive timeout: no message from the server on slot \"%s\" for "
                            "%lld ms (source.receive_timeout_ms is %lld): the connection or its "
                            "walsender is not responding; dropping the connection",
                            st->name, (long long)silent, (long long)timeout);
    if (silent >= timeout / 2 && !st->ping_sent) {
        st->ping_sent = true;
        zetl_debug("stream %s: nothing received for %lld ms, asking the server for a reply",
                   st->name, (long long)silent);
        return send_status_msg(st, true, true, eb);
    }
    return ZETL_OK;
}

static bool caught_up(struct zetl_stream *st)
{
    return st->opts.once && !st->in_txn && zetl_spill_open_count(st->spill) == 0 &&
           st->progress_lsn >= st->opts.target_lsn;
}

/* One CopyData frame from the server. */
static enum zetl_err handle_copydata(struct zetl_stream *st, const uint8_t *buf, size_t len,
                                     struct zetl_errbuf *eb)
{
    struct zetl_copydata cd;
    enum zetl_err err = zetl_copydata_decode(buf, len, &cd, eb);

    if (err)
        return err;
    if (cd.kind == 'k') {
        if (cd.wal_end > st->received_lsn)
            st->received_lsn = cd.wal_end;
        if (!st->in_txn && zetl_spill_open_count(st->spill) == 0) {
            if (cd.wal_end > st->progress_lsn)
                st->progress_lsn = cd.wal_end;
            if (cd.wal_end > st->idle_lsn)
                st->idle_lsn = cd.wal_end;
        }
        if (cd.reply_requested)
            st->reply_requested = true;
        return ZETL_OK;
    }
    if (cd.wal_start > st->received_lsn)
        st->received_lsn = cd.wal_start;
    err = handle_message(st, cd.data, cd.len, cd.wal_start, eb);
    if (err && err != ZETL_ERR_IO)
        zetl_err_prefix(eb, "stream %s at " ZETL_LSN_FMT, st->name, ZETL_LSN_ARGS(cd.wal_start));
    return err;
}

/*
 * The loop of one connection.  Returns ZETL_OK when asked to stop or caught
 * up, ZETL_ERR_RETRY when the connection broke, anything else is fatal.
 */
static enum zetl_err stream_loop(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    int fd = PQsocket(st->conn);
    enum zetl_err err;

    for (;;) {
        bool backpressure;
        int budget = READ_BUDGET;

        if ((err = check_sink(st, eb)) != ZETL_OK)
            return err;
        /* A stop waits for the transaction being received: it is bounded by
         * logical_decoding_work_mem (larger ones are streamed and spilled). */
        if ((zetl_stream_stopping() && !st->in_txn) || caught_up(st))
            return ZETL_OK;
        /* should_seal is false inside a transaction: batches hold whole transactions. */
        if (zetl_batch_should_seal(st->bw, st->cfg->buffer.max_rows, st->cfg->buffer.max_bytes,
                                   st->cfg->buffer.max_age_ms, zetl_now_ms())) {
            if (!queue_full(st) && (err = seal_and_queue(st, eb)) != ZETL_OK)
                return err;
            /* Still full: the open batch waits, and so does the socket. */
            backpressure = zetl_batch_pending_rows(st->bw) > 0 && queue_full(st);
        } else {
            backpressure = false;
        }
        if ((err = send_status(st, false, eb)) != ZETL_OK)
            return err;
        if (backpressure) {
            /* Leave the socket alone (the server buffers), keep status updates flowing. */
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
            /* Not reading is our doing: the receive timeout starts over. */
            st->last_recv_ms = zetl_now_ms();
            st->ping_sent = false;
            continue;
        }

        while (budget > 0) {
            char *buf = NULL;
            int n = PQgetCopyData(st->conn, &buf, 1);

            if (n > 0) {
                err = handle_copydata(st, (const uint8_t *)buf, (size_t)n, eb);
                PQfreemem(buf);
                if (err)
                    return err;
                budget--;
                if (zetl_stream_stopping() && !st->in_txn)
                    break;
                continue;
            }
            if (n == 0)
                break;
            if (n == -1) {
                PGresult *res = PQgetResult(st->conn);
                err = zetl_err_set(eb, ZETL_ERR_RETRY, "server ended replication: %s",
                                   res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res)
                                                                       : "no error reported");
                PQclear(res);
                return err;
            }
            return zetl_err_set(eb, ZETL_ERR_RETRY, "could not read replication data: %s",
                                PQerrorMessage(st->conn));
        }
        if (budget < READ_BUDGET) {
            st->last_recv_ms = zetl_now_ms();
            st->ping_sent = false;
        } else if ((err = check_receive_timeout(st, eb)) != ZETL_OK) {
            return err;
        }
        if (budget > 0) {
            struct pollfd pfd = {fd, POLLIN, 0};
            int r = poll(&pfd, 1, 100);
            if (r < 0 && errno != EINTR)
                return zetl_err_set(eb, ZETL_ERR_RETRY, "poll failed: %s", strerror(errno));
            if (r > 0 && PQconsumeInput(st->conn) == 0)
                return zetl_err_set(eb, ZETL_ERR_RETRY, "connection to source lost: %s",
                                    PQerrorMessage(st->conn));
        }
    }
}

/* Seals what is complete, hands it to the sink, waits until it is durable. */
static enum zetl_err drain(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    enum zetl_err err = ZETL_OK;

    if (!st->in_txn && !zetl_batch_in_txn(st->bw))
        err = seal_and_queue(st, eb);
    pthread_mutex_lock(&st->mu);
    st->sink_shutdown = true;
    pthread_cond_broadcast(&st->cv);
    while ((st->qlen > 0 || st->sink_busy) && st->sink_err == ZETL_OK && !st->sink_abandoned)
        pthread_cond_wait(&st->cv, &st->mu);
    bool abandoned = st->sink_abandoned;
    pthread_mutex_unlock(&st->mu);
    if (err == ZETL_OK)
        err = check_sink(st, eb);
    if (err == ZETL_OK && abandoned)
        err = zetl_err_set(eb, ZETL_ERR_RETRY,
                           "stream %s: stopped while a sink was unavailable: the slot was not "
                           "confirmed past what is durable, so nothing is lost; the rest follows "
                           "at the next start",
                           st->name);
    return err;
}

static void sleep_ms(int64_t ms)
{
    while (ms > 0 && !zetl_stream_stopping()) {
        int64_t step = ms > 100 ? 100 : ms;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

enum zetl_err zetl_stream_run(struct zetl_stream *st, struct zetl_errbuf *eb)
{
    enum zetl_err err;
    struct zetl_backoff bo;

    if (pthread_create(&st->sink_thread, NULL, sink_main, st) != 0)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not start sink thread");
    st->sink_started = true;

    zetl_backoff_init(&bo, 1000, BACKOFF_MAX_MS);
    for (;;) {
        int64_t started = zetl_now_ms(), delay;

        err = start_replication(st, eb);
        if (err == ZETL_OK)
            err = stream_loop(st, eb);
        if (err != ZETL_ERR_RETRY)
            break;
        /* A connection that lasted was healthy: this is a new failure, not the same one. */
        if (zetl_now_ms() - started > 60000)
            zetl_backoff_reset(&bo);
        delay = zetl_backoff_next(&bo);
        zetl_warn("stream %s: %s; reconnecting in %lld ms", st->name, eb->msg, (long long)delay);
        reset_connection_state(st);
        if (zetl_stream_stopping()) {
            err = ZETL_OK;
            break;
        }
        sleep_ms(delay);
    }

    if (err == ZETL_OK) {
        err = drain(st, eb);
        if (err == ZETL_OK) {
            struct zetl_errbuf ignore;
            uint64_t flush;

            /* The sink is done: its warehouse connection is ours now. */
            pthread_join(st->sink_thread, NULL);
            st->sink_started = false;
            flush = flush_position(st);
            /* The final position, so the slot does not replay what is durable ... */
            if (st->conn && send_status(st, true, &ignore) == ZETL_OK)
                zetl_logmsg("stream %s: stopped at confirmed flush " ZETL_LSN_FMT, st->name,
                            ZETL_LSN_ARGS(st->reported_flush));
            /* ... and the warehouse knows it is current up to there (zetl verify). */
            if (st->wh && flush > st->wh_noted_lsn &&
                zetl_wh_note_progress(st->wh, st->name, flush, &ignore) != ZETL_OK)
                zetl_warn("stream %s: could not record progress in the warehouse: %s", st->name,
                          ignore.msg);
        }
    } else {
        /* Fatal: stop the sink without sealing; nothing more becomes durable. */
        pthread_mutex_lock(&st->mu);
        st->sink_shutdown = true;
        pthread_cond_broadcast(&st->cv);
        pthread_mutex_unlock(&st->mu);
    }
    return err;
}

enum zetl_err zetl_stream_new(const struct zetl_config *cfg, const struct zetl_source_group *grp,
                              struct zetl_archive *ar, const struct zetl_stream_opts *opts,
                              struct zetl_stream **out, struct zetl_errbuf *eb)
{
    struct zetl_stream *st = zetl_calloc(1, sizeof(*st));
    struct zetl_buf path;
    enum zetl_err err;
    const char *salt = getenv("ZETL_MASK_SALT");

    st->cfg = cfg;
    st->grp = grp;
    st->ar = ar;
    st->opts = *opts;
    st->name = zetl_strdup(grp->name);
    if (salt != NULL) {
        st->salt = (const uint8_t *)salt;
        st->salt_len = strlen(salt);
    }
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    zetl_arena_init(&st->msg_arena, 64 * 1024);
    zetl_arena_init(&st->replay_arena, 64 * 1024);
    st->rc = zetl_relcache_new();

    zetl_buf_init(&path, 0);
    zetl_buf_printf(&path, "%s/spool/%s", cfg->buffer.dir, st->name);
    st->spool_dir = zetl_strdup(path.data);
    /* Whatever a previous run left in the spool was never confirmed: start clean. */
    if ((err = zetl_fs_rmtree(st->spool_dir, eb)) != ZETL_OK ||
        (err = zetl_fs_mkdirs(st->spool_dir, eb)) != ZETL_OK)
        goto fail;
    zetl_buf_reset(&path);
    zetl_buf_printf(&path, "%s/spool", cfg->buffer.dir);
    err = zetl_batch_writer_new(path.data, st->name, cfg->transforms.tenant_column, st->rc, &st->bw,
                                eb);
    if (err)
        goto fail;
    zetl_buf_reset(&path);
    zetl_buf_printf(&path, "%s/streams", st->spool_dir);
    if ((err = zetl_spill_new(path.data, &st->spill, eb)) != ZETL_OK)
        goto fail;

    uint64_t end_lsn = 0;
    err = zetl_archive_last_lsn(ar, st->name, &st->last_sealed_lsn, &end_lsn, eb);
    if (err)
        goto fail;
    st->durable_end_lsn = end_lsn;
    if (cfg->warehouse.kind != ZETL_WH_NONE) {
        uint64_t wh_last = 0, wh_end = 0;
        if ((err = zetl_wh_open(cfg, &st->wh, eb)) != ZETL_OK) {
            zetl_err_prefix(eb, "could not open the warehouse");
            goto fail;
        }
        if ((err = zetl_wh_offset(st->wh, st->name, &wh_last, &wh_end, eb)) != ZETL_OK) {
            zetl_err_prefix(eb, "could not read the warehouse offset");
            goto fail;
        }
        /* Durable means durable in every sink: the warehouse may lag the archive. */
        if (wh_end < st->durable_end_lsn)
            st->durable_end_lsn = wh_end;
        st->wh_noted_lsn = wh_end;
    }
    if (st->last_sealed_lsn)
        zetl_logmsg("stream %s: archive holds transactions up to commit lsn " ZETL_LSN_FMT,
                    st->name, ZETL_LSN_ARGS(st->last_sealed_lsn));
    zetl_buf_release(&path);
    *out = st;
    return ZETL_OK;

fail:
    zetl_buf_release(&path);
    zetl_err_prefix(eb, "stream %s", grp->name);
    zetl_stream_free(st);
    return err;
}

void zetl_stream_free(struct zetl_stream *st)
{
    if (st == NULL)
        return;
    if (st->sink_started) {
        pthread_mutex_lock(&st->mu);
        st->sink_shutdown = true;
        pthread_cond_broadcast(&st->cv);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->sink_thread, NULL);
    }
    for (size_t i = 0; i < st->qlen; i++)
        zetl_batch_free(st->queue[(st->qhead + i) % SINK_QUEUE_MAX]);
    if (st->conn) {
        PQputCopyEnd(st->conn, NULL);
        PQfinish(st->conn);
    }
    if (st->catalog)
        PQfinish(st->catalog);
    zetl_wh_free(st->wh);
    zetl_batch_writer_free(st->bw);
    zetl_spill_free(st->spill);
    rels_clear(st);
    zetl_relcache_free(st->rc);
    zetl_arena_release(&st->msg_arena);
    zetl_arena_release(&st->replay_arena);
    free(st->values);
    free(st->spool_dir);
    free(st->name);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st);
}
