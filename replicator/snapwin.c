/*
 * A stream's side of the snapshot windows (see snapshot.h): the keys each
 * change between a chunk's watermarks touches, the chunk's rows added at its
 * high watermark, and the progress moved when they are durable.  Called by
 * the stream's thread only; what the workers share is under the
 * snapshotter's lock.
 */
#include "replicator/snapshot_int.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/time.h"

/* ---- COPY text format ------------------------------------------------------- */

/* One field (without its delimiters) unescaped into ar. */
static void unescape(const char *p, size_t n, struct zetl_tuple_col *col, struct zetl_arena *ar)
{
    char *out, *o;

    if (n == 2 && p[0] == '\\' && p[1] == 'N') {
        col->kind = ZETL_COL_NULL;
        col->val = (struct zetl_slice){NULL, 0};
        return;
    }
    col->kind = ZETL_COL_TEXT;
    if (memchr(p, '\\', n) == NULL) {
        col->val = (struct zetl_slice){p, (uint32_t)n};
        return;
    }
    out = o = zetl_arena_alloc(ar, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\' || i + 1 == n) {
            *o++ = p[i];
            continue;
        }
        char c = p[++i];
        switch (c) {
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'v':
            *o++ = '\v';
            break;
        case 'x': {
            int v = 0, k = 0;
            while (k < 2 && i + 1 < n && zetl_hex_value(p[i + 1]) >= 0)
                v = v * 16 + zetl_hex_value(p[++i]), k++;
            *o++ = k ? (char)v : 'x';
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                int v = c - '0', k = 1;
                while (k < 3 && i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '7')
                    v = v * 8 + (p[++i] - '0'), k++;
                *o++ = (char)v;
            } else {
                *o++ = c;
            }
        }
    }
    col->val = (struct zetl_slice){out, (uint32_t)(o - out)};
}

bool zetl_snap_parse_line(const char *line, size_t len, struct zetl_tuple *tup, uint16_t ncols,
                          struct zetl_arena *ar)
{
    const char *p = line, *end = line + len;

    tup->ncols = ncols;
    tup->cols = zetl_arena_alloc(ar, (ncols ? ncols : 1) * sizeof(*tup->cols));
    for (uint16_t i = 0; i < ncols; i++) {
        const char *tab = memchr(p, '\t', (size_t)(end - p));
        const char *fe = tab ? tab : end;

        if ((tab == NULL) != (i + 1 == ncols))
            return false;
        unescape(p, (size_t)(fe - p), &tup->cols[i], ar);
        p = fe + 1;
    }
    return true;
}

/* ---- keys touched in a window ------------------------------------------------ */

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Appends one value of a key: length (or ~0 for NULL) then bytes. */
static void key_put(struct zetl_buf *b, const struct zetl_tuple_col *col)
{
    uint32_t len = col->kind == ZETL_COL_TEXT ? col->val.len : UINT32_MAX;

    zetl_buf_append(b, &len, sizeof(len));
    if (col->kind == ZETL_COL_TEXT)
        zetl_buf_append(b, col->val.ptr, col->val.len);
}

static struct snap_touch *touch_find(struct snap_chunk *c, const struct zetl_buf *key, bool add)
{
    size_t mask, i;

    if (add && (c->ntouched + 1) * 2 > c->touched_cap) {
        size_t cap = c->touched_cap ? c->touched_cap * 2 : 64;
        struct snap_touch *old = c->touched;
        size_t oldcap = c->touched_cap;

        c->touched = zetl_calloc(cap, sizeof(*c->touched));
        c->touched_cap = cap;
        for (size_t k = 0; k < oldcap; k++) {
            if (old[k].key == NULL)
                continue;
            i = fnv(old[k].key, old[k].keylen) & (cap - 1);
            while (c->touched[i].key)
                i = (i + 1) & (cap - 1);
            c->touched[i] = old[k];
        }
        free(old);
    }
    if (c->touched_cap == 0)
        return NULL;
    mask = c->touched_cap - 1;
    for (i = fnv((const uint8_t *)key->data, key->len) & mask; c->touched[i].key;
         i = (i + 1) & mask)
        if (c->touched[i].keylen == key->len && memcmp(c->touched[i].key, key->data, key->len) == 0)
            return &c->touched[i];
    if (!add)
        return NULL;
    c->touched[i].key = zetl_malloc(key->len ? key->len : 1);
    memcpy(c->touched[i].key, key->data, key->len);
    c->touched[i].keylen = key->len;
    c->touched[i].set = zetl_calloc((size_t)c->rel->ncols / 8 + 1, 1);
    c->ntouched++;
    return &c->touched[i];
}

/* The column maps between the live relation (as pgoutput sends it) and the copy's. */
static void map_live(struct snap_chunk *c, const struct zetl_relation *rel)
{
    if (c->map_rel == rel && c->map_version == rel->version)
        return;
    c->map_rel = rel;
    c->map_version = rel->version;
    c->colmap = zetl_realloc(c->colmap, (rel->ncols ? rel->ncols : 1) * sizeof(int));
    c->livekeys = zetl_realloc(c->livekeys, (c->rel->ncols ? c->rel->ncols : 1) * sizeof(int));
    for (uint16_t i = 0; i < rel->ncols; i++) {
        c->colmap[i] = -1;
        for (uint16_t j = 0; j < c->rel->ncols; j++)
            if (strcmp(rel->cols[i].name, c->rel->cols[j].name) == 0)
                c->colmap[i] = j;
    }
    for (uint16_t j = 0; j < c->rel->ncols; j++) {
        c->livekeys[j] = -1;
        for (uint16_t i = 0; i < rel->ncols; i++)
            if (c->colmap[i] == j)
                c->livekeys[j] = i;
    }
}

/* Whether the copy's column j is part of the key a row is matched by. */
static bool chunk_key(const struct snap_chunk *c, uint16_t j)
{
    /* Without a primary key a row is matched by all its values. */
    return c->keyed ? c->rel->cols[j].key : true;
}

/* The key of a live tuple in the copy's terms; false when a key column is missing. */
static bool live_key(struct snap_chunk *c, const struct zetl_tuple *tup, struct zetl_buf *key)
{
    static const struct zetl_tuple_col null_col = {ZETL_COL_NULL, {NULL, 0}};

    zetl_buf_reset(key);
    for (uint16_t j = 0; j < c->rel->ncols; j++) {
        int i = c->livekeys[j];

        if (!chunk_key(c, j))
            continue;
        if (i < 0 || i >= tup->ncols)
            return false;
        key_put(key, tup->cols[i].kind == ZETL_COL_TEXT ? &tup->cols[i] : &null_col);
    }
    return true;
}

static void record(struct snap_chunk *c, const struct zetl_tuple *tup, bool deleted,
                   struct zetl_buf *key)
{
    struct snap_touch *t;

    if (!live_key(c, tup, key))
        return;
    t = touch_find(c, key, true);
    t->deleted = deleted;
    if (deleted)
        return;
    for (uint16_t i = 0; i < tup->ncols; i++) {
        int j = c->colmap[i];
        if (j >= 0 && tup->cols[i].kind != ZETL_COL_UNCHANGED_TOAST)
            t->set[j / 8] |= (uint8_t)(1u << (j % 8));
    }
}

bool zetl_snapwin_watching(const struct zetl_snapwin *w)
{
    return w != NULL && w->open > 0;
}

void zetl_snapwin_touch(struct zetl_snapwin *w, const struct zetl_relation *rel,
                        const struct zetl_pgo_msg *m)
{
    struct zetl_buf *key, *oldkey;

    if (!zetl_snapwin_watching(w))
        return;
    key = &w->key;
    oldkey = &w->oldkey;
    /* Workers append chunks under the lock; the windows themselves are this thread's. */
    pthread_mutex_lock(&w->s->mu);
    for (struct snap_chunk *c = w->chunks; c; c = c->next) {
        if (!c->window || c->relid != rel->relid)
            continue;
        map_live(c, rel);
        switch (m->kind) {
        case ZETL_PGO_INSERT:
            record(c, &m->u.insert.newtup, false, key);
            break;
        case ZETL_PGO_UPDATE:
            /* A changed key: the old one is gone. */
            if (m->u.update.oldkind != 0 && live_key(c, &m->u.update.oldtup, oldkey) &&
                live_key(c, &m->u.update.newtup, key) &&
                (oldkey->len != key->len || memcmp(oldkey->data, key->data, key->len) != 0))
                record(c, &m->u.update.oldtup, true, oldkey);
            record(c, &m->u.update.newtup, false, key);
            break;
        case ZETL_PGO_DELETE:
            record(c, &m->u.delete_.oldtup, true, key);
            break;
        default:
            break;
        }
    }
    pthread_mutex_unlock(&w->s->mu);
}

void zetl_snapwin_truncate(struct zetl_snapwin *w, uint32_t relid)
{
    if (!zetl_snapwin_watching(w))
        return;
    pthread_mutex_lock(&w->s->mu);
    for (struct snap_chunk *c = w->chunks; c; c = c->next)
        if (c->window && c->relid == relid)
            c->truncated = true;
    pthread_mutex_unlock(&w->s->mu);
}

/* ---- watermarks ---------------------------------------------------------------- */

/* The chunk of a window id; only this thread frees chunks, so it stays valid after. */
static struct snap_chunk *chunk_find(struct zetl_snapwin *w, const char *id)
{
    struct snap_chunk *c;

    pthread_mutex_lock(&w->s->mu);
    for (c = w->chunks; c; c = c->next)
        if (strcmp(c->id, id) == 0)
            break;
    pthread_mutex_unlock(&w->s->mu);
    return c;
}

/* Adds the chunk's rows, but those the window saw change; *added rows. */
static enum zetl_err emit(struct snap_chunk *c, const struct zetl_snap_sink *sink, uint64_t *added,
                          struct zetl_errbuf *eb)
{
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct zetl_arena ar;
    struct zetl_buf key;
    enum zetl_err err = ZETL_OK;
    uint64_t lineno = 0;

    *added = 0;
    if (c->truncated || c->rows == 0)
        return ZETL_OK;
    for (size_t i = 0; i < c->ntypes; i++) {
        const char *name = c->type_names[i], *dot = strchr(name, '.');
        struct zetl_pgo_msg m = {.kind = ZETL_PGO_TYPE};

        m.u.type.typoid = c->type_oids[i];
        m.u.type.nspname = (struct zetl_slice){name, (uint32_t)(dot ? dot - name : 0)};
        m.u.type.typname =
            (struct zetl_slice){dot ? dot + 1 : name, (uint32_t)strlen(dot ? dot + 1 : name)};
        zetl_relcache_update_type(sink->rc, &m);
    }
    if ((f = fopen(c->path, "r")) == NULL)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not read snapshot chunk %s", c->path);
    zetl_arena_init(&ar, 64 * 1024);
    zetl_buf_init(&key, 0);
    while ((n = getline(&line, &cap, f)) > 0) {
        struct zetl_tuple tup;
        struct snap_touch *t = NULL;
        enum zetl_op op = ZETL_OP_INSERT;

        lineno++;
        zetl_arena_reset(&ar);
        if (line[n - 1] == '\n')
            n--;
        if (!zetl_snap_parse_line(line, (size_t)n, &tup, c->rel->ncols, &ar)) {
            err = zetl_err_set(eb, ZETL_ERR_FATAL,
                               "snapshot chunk %s line %" PRIu64 ": not %u columns", c->path,
                               lineno, c->rel->ncols);
            break;
        }
        if (c->ntouched) {
            zetl_buf_reset(&key);
            for (uint16_t j = 0; j < c->rel->ncols; j++)
                if (chunk_key(c, j))
                    key_put(&key, &tup.cols[j]);
            t = touch_find(c, &key, false);
        }
        if (t != NULL) {
            bool all = true;

            if (t->deleted)
                continue;
            /* Columns a change in the window sent are the warehouse's; the rest are ours. */
            for (uint16_t j = 0; j < c->rel->ncols; j++) {
                if (chunk_key(c, j))
                    continue;
                if (t->set[j / 8] & (1u << (j % 8)))
                    tup.cols[j].kind = ZETL_COL_UNCHANGED_TOAST;
                else
                    all = false;
            }
            if (all)
                continue;
            op = ZETL_OP_UPDATE;
        }
        if ((err = sink->row(sink->arg, op, c->rel, c->plan, &tup, &ar, eb)) != ZETL_OK)
            break;
        (*added)++;
    }
    free(line);
    fclose(f);
    zetl_arena_release(&ar);
    zetl_buf_release(&key);
    return err;
}

static void close_window(struct zetl_snapwin *w, struct snap_chunk *c)
{
    if (c->window) {
        c->window = false;
        w->open--;
    }
}

enum zetl_err zetl_snapwin_message(struct zetl_snapwin *w, const struct zetl_slice *content,
                                   uint64_t commit_lsn, bool skipped,
                                   const struct zetl_snap_sink *sink, struct zetl_errbuf *eb)
{
    json_t *root = json_loadb(content->ptr, content->len, 0, NULL);
    const char *kind, *id, *stream;
    struct snap_chunk *c;
    enum zetl_err err = ZETL_OK;
    uint64_t added;

    if (root == NULL)
        return ZETL_OK; /* not ours */
    kind = json_string_value(json_object_get(root, "w"));
    id = json_string_value(json_object_get(root, "id"));
    stream = json_string_value(json_object_get(root, "stream"));
    if (w == NULL || kind == NULL || id == NULL || stream == NULL || strcmp(stream, w->name) != 0)
        goto done;
    if ((c = chunk_find(w, id)) == NULL) {
        zetl_debug("stream %s: watermark %s of an earlier run at " ZETL_LSN_FMT " ignored", w->name,
                   id, ZETL_LSN_ARGS(commit_lsn));
        goto done;
    }
    pthread_mutex_lock(&w->s->mu);
    enum snap_chunk_state state = c->state;
    pthread_mutex_unlock(&w->s->mu);
    if (state == CHUNK_CANCELLED) {
        close_window(w, c);
        goto done;
    }
    if (kind[0] == 'l') {
        if (!c->window && state != CHUNK_EMITTED && state != CHUNK_QUEUED) {
            c->window = true;
            w->open++;
        }
        /*
         * Without a key the copy cannot be told from rows already there: it
         * replaces the tenant's rows of the table, from the low watermark on
         * (the window's changes land on the empty table, the copy at the end).
         */
        if (!skipped && !c->keyed && c->replace)
            err = sink->truncate(sink->arg, c->rel, c->plan, eb);
        goto done;
    }
    /* The high watermark: from here on the chunk is the stream's, not the worker's to cancel. */
    if (skipped || state != CHUNK_READY)
        goto done;
    pthread_mutex_lock(&w->s->mu);
    c->state = CHUNK_EMITTING;
    pthread_mutex_unlock(&w->s->mu);
    if (!c->window) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "snapshot chunk %s of \"%s\".\"%s\": high watermark at " ZETL_LSN_FMT
                           " without its low watermark",
                           id, c->task->schema, c->task->table, ZETL_LSN_ARGS(commit_lsn));
        goto done;
    }
    err = emit(c, sink, &added, eb);
    if (err == ZETL_OK && added && sink->note)
        sink->note(sink->arg, added);
    if (err != ZETL_OK) {
        zetl_err_prefix(eb, "snapshot of \"%s\".\"%s\"", c->task->schema, c->task->table);
        goto done;
    }
    zetl_debug("stream %s: snapshot chunk %s of \"%s\".\"%s\": %" PRIu64 " of %" PRIu64
               " row(s) added at " ZETL_LSN_FMT ", %zu changed in its window",
               w->name, id, c->task->schema, c->task->table, added, c->rows,
               ZETL_LSN_ARGS(commit_lsn), c->ntouched);
    close_window(w, c);
    pthread_mutex_lock(&w->s->mu);
    c->lsn = commit_lsn;
    /* Without a row the transaction is not in any batch: nothing to wait for but durability. */
    c->state = added ? CHUNK_EMITTED : CHUNK_QUEUED;
    w->ready--;
    pthread_cond_broadcast(&w->s->cv);
    pthread_mutex_unlock(&w->s->mu);
done:
    json_decref(root);
    return err;
}

/* ---- progress ------------------------------------------------------------------- */

static void forget_window(struct snap_chunk *c)
{
    for (size_t i = 0; i < c->touched_cap; i++) {
        free(c->touched[i].key);
        free(c->touched[i].set);
    }
    free(c->touched);
    c->touched = NULL;
    c->touched_cap = c->ntouched = 0;
}

void zetl_snapwin_sealed(struct zetl_snapwin *w, uint64_t lsn)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->s->mu);
    for (struct snap_chunk *c = w->chunks; c; c = c->next)
        if (c->state == CHUNK_EMITTED && c->lsn <= lsn) {
            c->state = CHUNK_QUEUED;
            forget_window(c);
        }
    pthread_mutex_unlock(&w->s->mu);
}

void zetl_snapwin_reconnect(struct zetl_snapwin *w, uint64_t last_sealed)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->s->mu);
    for (struct snap_chunk *c = w->chunks; c; c = c->next) {
        /* The relation cache starts over: an entry may come back at the same address. */
        c->map_rel = NULL;
        if ((c->state == CHUNK_EMITTED && c->lsn > last_sealed) || c->state == CHUNK_EMITTING) {
            /* Its batch was never queued: the server sends the window again. */
            if (c->state == CHUNK_EMITTED)
                w->ready++; /* an interrupted emit never left the count */
            c->state = CHUNK_READY;
            if (!c->window) {
                c->window = true;
                w->open++;
            }
        }
    }
    pthread_mutex_unlock(&w->s->mu);
}

enum zetl_err zetl_snapwin_durable(struct zetl_snapwin *w, uint64_t lsn, struct zetl_errbuf *eb)
{
    struct zetl_snapshotter *s;
    struct snap_chunk **pp;
    bool changed = false, removed = false;
    enum zetl_err err = ZETL_OK;

    if (w == NULL)
        return ZETL_OK;
    s = w->s;
    pthread_mutex_lock(&s->mu);
    for (pp = &w->chunks; *pp;) {
        struct snap_chunk *c = *pp;
        struct snap_task *t = c->task;

        if (c->state == CHUNK_CANCELLED) {
            if (c->window) {
                c->window = false;
                w->open--;
            }
        } else if (c->state != CHUNK_QUEUED || c->lsn > lsn) {
            pp = &c->next;
            continue;
        } else {
            zetl_snap_key_copy(&t->after, &c->end);
            t->rows_durable += c->rows;
            t->inflight--;
            changed = true;
            if (c->last) {
                int64_t ms = zetl_now_ms() - t->started_ms;
                t->state = TASK_DONE;
                t->done_lsn = c->lsn;
                t->last_done_started = t->started_lsn;
                zetl_logmsg("stream %s: snapshot of \"%s\".\"%s\" done: %" PRIu64
                            " row(s) in %.1f s (%.0f rows/s), consistent from " ZETL_LSN_FMT,
                            w->name, t->schema, t->table, t->rows_durable, (double)ms / 1000.0,
                            ms > 0 ? (double)t->rows_durable * 1000.0 / (double)ms : 0.0,
                            ZETL_LSN_ARGS(c->lsn));
                zetl_snap_key_free(&t->after);
                t->started_lsn = 0;
                if (t->restart)
                    zetl_snap_task_again(t, NULL);
            }
        }
        *pp = c->next;
        zetl_snap_chunk_free(c);
        removed = true;
    }
    if (changed)
        err = zetl_snap_save(w, eb);
    /*
     * Workers wait for windows and chunks to go: wake them only when one did
     * (the stream calls this on every pass; waking them each time cost a
     * quarter of zetl's CPU in idle context switches).
     */
    if (removed)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return err;
}

bool zetl_snapwin_idle(struct zetl_snapwin *w)
{
    bool idle = true;

    if (w == NULL)
        return true;
    pthread_mutex_lock(&w->s->mu);
    for (struct snap_task *t = w->tasks; t && idle; t = t->next)
        idle = t->state == TASK_DONE || t->state == TASK_DISPATCHED;
    for (struct snap_chunk *c = w->chunks; c && idle; c = c->next)
        idle = c->state == CHUNK_QUEUED || c->state == CHUNK_CANCELLED;
    pthread_mutex_unlock(&w->s->mu);
    return idle;
}
