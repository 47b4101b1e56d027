/* Decoded changes into transformed batch rows: the handlers of the dispatch table. */
#include "replicator/capture.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/lsn.h"
#include "replicator/dispatch.h"
#include "transforms/transform.h"

static const struct zetl_change_handlers capture_handlers;

void zetl_capture_init(struct zetl_capture *cap, const struct zetl_capture_env *env)
{
    memset(cap, 0, sizeof(*cap));
    cap->env = *env;
    zetl_arena_init(&cap->msg_arena, 64 * 1024);
    zetl_arena_init(&cap->replay_arena, 64 * 1024);
}

void zetl_capture_release(struct zetl_capture *cap)
{
    zetl_arena_release(&cap->msg_arena);
    zetl_arena_release(&cap->replay_arena);
    free(cap->values);
}

void zetl_capture_reset(struct zetl_capture *cap, int proto_version)
{
    zetl_pgo_decoder_init(&cap->dec, proto_version);
    cap->in_txn = false;
    cap->txn_begun = false;
    cap->stream_xid = 0;
}

bool zetl_capture_busy(const struct zetl_capture *cap)
{
    return cap->in_txn;
}

void zetl_capture_keepalive(struct zetl_capture *cap, uint64_t wal_end)
{
    struct zetl_positions *pos = cap->env.pos;

    if (zetl_capture_busy(cap))
        return;
    if (wal_end > pos->progress_lsn)
        pos->progress_lsn = wal_end;
    if (wal_end > pos->idle_lsn)
        pos->idle_lsn = wal_end;
}

enum zetl_err zetl_capture_message(struct zetl_capture *cap, const uint8_t *data, size_t len,
                                   uint64_t lsn, struct zetl_errbuf *eb)
{
    struct zetl_pgo_msg m;
    enum zetl_err err;

    zetl_arena_reset(&cap->msg_arena);
    err = zetl_pgoutput_decode(&cap->dec, data, len, lsn, &m, &cap->msg_arena, eb);
    if (err)
        return err;
    return zetl_dispatch(&capture_handlers, cap, &m, cap->dec.in_stream, data, len, lsn,
                         &cap->msg_arena, eb);
}

/* ---- transactions ---- */

static enum zetl_err on_begin(void *arg, uint64_t commit_lsn, int64_t commit_time,
                              struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;

    if (cap->in_txn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "transaction begins inside another");
    cap->in_txn = true;
    cap->txn_begun = false;
    cap->txn_commit_lsn = commit_lsn;
    cap->txn_commit_time = commit_time;
    cap->txn_skip = commit_lsn <= cap->env.pos->last_sealed_lsn;
    if (cap->txn_skip)
        zetl_debug("stream %s: skipping transaction committed at " ZETL_LSN_FMT
                   ", already archived",
                   cap->env.name, ZETL_LSN_ARGS(commit_lsn));
    return ZETL_OK;
}

static enum zetl_err on_commit(void *arg, uint64_t commit_lsn, uint64_t end_lsn,
                               struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    struct zetl_positions *pos = cap->env.pos;
    enum zetl_err err = ZETL_OK;

    if (!cap->in_txn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "commit outside a transaction");
    if (commit_lsn != cap->txn_commit_lsn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "commit lsn " ZETL_LSN_FMT " does not match the transaction's "
                            "final lsn " ZETL_LSN_FMT,
                            ZETL_LSN_ARGS(commit_lsn), ZETL_LSN_ARGS(cap->txn_commit_lsn));
    if (cap->txn_begun)
        err = zetl_batch_end_txn(cap->env.bw, end_lsn, eb);
    else if (end_lsn > pos->idle_lsn)
        pos->idle_lsn = end_lsn;
    cap->in_txn = false;
    cap->txn_begun = false;
    if (end_lsn > pos->progress_lsn)
        pos->progress_lsn = end_lsn;
    return err;
}

/* ---- relations ---- */

static enum zetl_err on_relation(void *arg, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    struct zetl_relation *rel = zetl_relcache_update(cap->env.rc, m);

    /* A replayed Relation message had its key looked up when it was spilled. */
    if (cap->replaying)
        return zetl_relmap_apply_keys(cap->env.rm, rel, eb);
    return zetl_relmap_relation(cap->env.rm, m, false, eb);
}

static enum zetl_err on_type(void *arg, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;

    (void)eb;
    zetl_relcache_update_type(cap->env.rc, m);
    return ZETL_OK;
}

/* The batcher's view of a plan: where the row goes and which columns it keeps. */
static struct zetl_batch_target target_of(const struct zetl_table_plan *plan)
{
    struct zetl_batch_target t = {plan->tenant, plan->table, plan->nout, plan->out_index};

    return t;
}

/* ---- changes ---- */

static struct zetl_value *values_room(struct zetl_capture *cap, size_t n)
{
    if (n > cap->values_cap) {
        cap->values_cap = n;
        cap->values = zetl_realloc(cap->values, n * sizeof(*cap->values));
    }
    return cap->values;
}

static enum zetl_err add_tuple_row(struct zetl_capture *cap, enum zetl_op op,
                                   const struct zetl_relation *rel,
                                   const struct zetl_table_plan *plan, const struct zetl_tuple *tup,
                                   struct zetl_arena *ar, struct zetl_errbuf *eb)
{
    struct zetl_value *vals = values_room(cap, plan->nout ? plan->nout : 1);
    struct zetl_row row = {op, target_of(plan), rel, vals};
    enum zetl_err err = zetl_transform_tuple(plan, tup, vals, ar, eb);

    if (err)
        return err;
    return zetl_batch_add(cap->env.bw, &row, eb);
}

/* The batch transaction of the source transaction, begun with its first captured row. */
static enum zetl_err txn_begin_once(struct zetl_capture *cap, struct zetl_errbuf *eb)
{
    if (cap->txn_begun)
        return ZETL_OK;
    cap->txn_begun = true;
    return zetl_batch_begin_txn(cap->env.bw, cap->txn_commit_lsn, cap->txn_commit_time, eb);
}

/*
 * Whether a change of the current transaction is kept, with its relation and
 * plan, the batch transaction begun on the first captured row.  *plan is
 * NULL when the change is dropped (skipped transaction, table not captured).
 */
static enum zetl_err row_target(struct zetl_capture *cap, char kind, uint32_t relid,
                                struct zetl_relation **rel, struct zetl_table_plan **plan,
                                struct zetl_errbuf *eb)
{
    *plan = NULL;
    if (!cap->in_txn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "change message '%c' outside a transaction",
                            kind);
    if (cap->txn_skip)
        return ZETL_OK;
    if ((*rel = zetl_relcache_get(cap->env.rc, relid)) == NULL)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "change for relation %u before its Relation message", relid);
    if ((*plan = zetl_relmap_plan(cap->env.rm, *rel)) == NULL)
        return ZETL_OK;
    return txn_begin_once(cap, eb);
}

/* Insert, Update, Delete of the current transaction. */
static enum zetl_err on_change(void *arg, const struct zetl_pgo_msg *m, struct zetl_arena *ar,
                               struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    struct zetl_relation *rel;
    struct zetl_table_plan *plan;
    enum zetl_err err;

    switch (m->kind) {
    case ZETL_PGO_INSERT:
        if ((err = row_target(cap, 'I', m->u.insert.relid, &rel, &plan, eb)) || plan == NULL)
            return err;
        zetl_snapwin_touch(cap->env.snap, rel, m);
        return add_tuple_row(cap, ZETL_OP_INSERT, rel, plan, &m->u.insert.newtup, ar, eb);
    case ZETL_PGO_UPDATE:
        if ((err = row_target(cap, 'U', m->u.update.relid, &rel, &plan, eb)) || plan == NULL)
            return err;
        zetl_snapwin_touch(cap->env.snap, rel, m);
        if (m->u.update.oldkind != 0) {
            err = add_tuple_row(cap, ZETL_OP_BEFORE, rel, plan, &m->u.update.oldtup, ar, eb);
            if (err)
                return err;
        }
        return add_tuple_row(cap, ZETL_OP_UPDATE, rel, plan, &m->u.update.newtup, ar, eb);
    default:
        if ((err = row_target(cap, 'D', m->u.delete_.relid, &rel, &plan, eb)) || plan == NULL)
            return err;
        zetl_snapwin_touch(cap->env.snap, rel, m);
        return add_tuple_row(cap, ZETL_OP_DELETE, rel, plan, &m->u.delete_.oldtup, ar, eb);
    }
}

static enum zetl_err on_truncate(void *arg, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    struct zetl_relation *rel;
    struct zetl_table_plan *plan;
    enum zetl_err err;

    if (!cap->in_txn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "change message 'T' outside a transaction");
    for (uint32_t i = 0; i < m->u.truncate.nrelids; i++) {
        if ((err = row_target(cap, 'T', m->u.truncate.relids[i], &rel, &plan, eb)))
            return err;
        if (plan == NULL)
            continue;
        zetl_snapwin_truncate(cap->env.snap, rel->relid);
        struct zetl_row row = {ZETL_OP_TRUNCATE, target_of(plan), rel, NULL};
        if ((err = zetl_batch_add(cap->env.bw, &row, eb)))
            return err;
    }
    return ZETL_OK;
}

/* ---- snapshot watermarks ---- */

/* A row of a snapshot chunk, into the transaction of its high watermark. */
static enum zetl_err snapshot_row(void *arg, enum zetl_op op, const struct zetl_relation *rel,
                                  const struct zetl_table_plan *plan, const struct zetl_tuple *tup,
                                  struct zetl_arena *ar, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    enum zetl_err err = txn_begin_once(cap, eb);

    return err ? err : add_tuple_row(cap, op, rel, plan, tup, ar, eb);
}

static enum zetl_err snapshot_truncate(void *arg, const struct zetl_relation *rel,
                                       const struct zetl_table_plan *plan, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    struct zetl_row row = {ZETL_OP_TRUNCATE, target_of(plan), rel, NULL};
    enum zetl_err err = txn_begin_once(cap, eb);

    return err ? err : zetl_batch_add(cap->env.bw, &row, eb);
}

static void snapshot_note(void *arg, uint64_t n)
{
    struct zetl_capture *cap = arg;

    zetl_batch_note_snapshot_rows(cap->env.bw, n);
}

static enum zetl_err on_message(void *arg, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    const struct zetl_slice *prefix = &m->u.message.prefix;
    struct zetl_snap_sink sink = {snapshot_row, snapshot_truncate, snapshot_note, cap, cap->env.rc};

    /* Watermarks are transactional: they order with the changes by commit. */
    if (!(m->u.message.flags & 1) || !cap->in_txn || cap->env.snap == NULL ||
        prefix->len != strlen(ZETL_SNAPSHOT_PREFIX) ||
        memcmp(prefix->ptr, ZETL_SNAPSHOT_PREFIX, prefix->len) != 0)
        return ZETL_OK;
    return zetl_snapwin_message(cap->env.snap, &m->u.message.content, cap->txn_commit_lsn,
                                cap->txn_skip, &sink, eb);
}

/* ---- streamed transactions ---- */

static enum zetl_err on_stream_start(void *arg, uint32_t xid, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;

    if (cap->in_txn)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "stream start inside a transaction");
    cap->stream_xid = xid;
    return ZETL_OK;
}

static enum zetl_err on_stream_stop(void *arg, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;

    (void)eb;
    cap->stream_xid = 0;
    return ZETL_OK;
}

/* Changes inside a stream block belong to an uncommitted transaction: spill them. */
static enum zetl_err on_stream_data(void *arg, const struct zetl_pgo_msg *m, const uint8_t *raw,
                                    size_t len, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    enum zetl_err err = zetl_spill_append(cap->env.spill, cap->stream_xid, raw, len, eb);

    /* Look the key up now, so the replay finds it without a query. */
    if (err == ZETL_OK && m->kind == ZETL_PGO_RELATION)
        err = zetl_relmap_relation(cap->env.rm, m, true, eb);
    return err;
}

static enum zetl_err on_stream_abort(void *arg, uint32_t xid, uint32_t subxid,
                                     struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;

    (void)eb;
    zetl_spill_abort(cap->env.spill, xid, subxid);
    return ZETL_OK;
}

/* Replays one spilled message of a committed streamed transaction. */
static enum zetl_err replay_one(void *arg, const uint8_t *data, size_t len, struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    struct zetl_pgo_decoder dec;
    struct zetl_pgo_msg m;
    enum zetl_err err;

    /* A replay of millions of rows takes a while: keep the walsender from timing out. */
    if ((++cap->replayed & 4095) == 0 && (err = cap->env.tick(cap->env.tick_arg, eb)) != ZETL_OK)
        return err;
    zetl_pgo_decoder_init(&dec, cap->dec.proto_version);
    dec.in_stream = true;
    zetl_arena_reset(&cap->replay_arena);
    err = zetl_pgoutput_decode(&dec, data, len, cap->txn_commit_lsn, &m, &cap->replay_arena, eb);
    if (err)
        return err;
    /*
     * Of a transaction already archived only the schema counts: pgoutput
     * sent its Relation and Type messages inside the stream and will not
     * send them again for the changes that follow.
     */
    if (cap->txn_skip && m.kind != ZETL_PGO_RELATION && m.kind != ZETL_PGO_TYPE)
        return ZETL_OK;
    return zetl_dispatch(&capture_handlers, cap, &m, false, data, len, cap->txn_commit_lsn,
                         &cap->replay_arena, eb);
}

static enum zetl_err on_stream_commit(void *arg, const struct zetl_pgo_msg *m,
                                      struct zetl_errbuf *eb)
{
    struct zetl_capture *cap = arg;
    uint32_t xid = m->u.stream_commit.xid;
    enum zetl_err err;

    err = on_begin(cap, m->u.stream_commit.commit_lsn, m->u.stream_commit.commit_time, eb);
    if (err)
        return err;
    cap->replaying = true;
    err = zetl_spill_replay(cap->env.spill, xid, replay_one, cap, eb);
    cap->replaying = false;
    if (err)
        return err;
    return on_commit(cap, m->u.stream_commit.commit_lsn, m->u.stream_commit.end_lsn, eb);
}

static const struct zetl_change_handlers capture_handlers = {
    .begin = on_begin,
    .commit = on_commit,
    .relation = on_relation,
    .type = on_type,
    .change = on_change,
    .truncate = on_truncate,
    .message = on_message,
    .stream_start = on_stream_start,
    .stream_stop = on_stream_stop,
    .stream_data = on_stream_data,
    .stream_commit = on_stream_commit,
    .stream_abort = on_stream_abort,
};
