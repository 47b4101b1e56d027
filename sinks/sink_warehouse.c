/*
 * The warehouse as a sink: applies the batch directories the archive sink
 * stored, each in one warehouse transaction with the stream's offset
 * (exactly-once effect; wh.h).  It comes after the archive in the registry,
 * and at start it applies the archived batches it has not seen (a crash
 * between archive and apply), so it never holds the slot back on its own.
 */
#include "sinks/sink.h"

#include <stdlib.h>

#include "common/log.h"
#include "common/mem.h"
#include "sinks/warehouse/wh.h"

struct wh_sink {
    struct zetl_wh *wh;      /* owned */
    struct zetl_archive *ar; /* borrowed */
    const char *stream;      /* borrowed */
    uint64_t noted_lsn;      /* idle progress last recorded in the warehouse */
};

static bool wh_configured(const struct zetl_config *cfg)
{
    return cfg->warehouse.kind != ZETL_WH_NONE;
}

static void wh_close(void *state)
{
    struct wh_sink *ws = state;

    if (ws == NULL)
        return;
    zetl_wh_free(ws->wh);
    free(ws);
}

static enum zetl_err wh_open(const struct zetl_sink_env *env, void **state,
                             struct zetl_sink_pos *pos, struct zetl_errbuf *eb)
{
    struct wh_sink *ws = zetl_calloc(1, sizeof(*ws));
    uint64_t last = 0;
    enum zetl_err err;

    ws->ar = env->ar;
    ws->stream = env->stream;
    if ((err = zetl_wh_open(env->cfg, &ws->wh, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "could not open the warehouse");
        goto fail;
    }
    if ((err = zetl_wh_offset(ws->wh, ws->stream, &last, &pos->end_lsn, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "could not read the warehouse offset");
        goto fail;
    }
    /* What the archive holds beyond the offset is applied in start. */
    pos->last_lsn = ZETL_SINK_FOLLOWS;
    ws->noted_lsn = pos->end_lsn;
    *state = ws;
    return ZETL_OK;

fail:
    wh_close(ws);
    return err;
}

/* Applies archived batch `name`; ZETL_OK also when it was applied before. */
static enum zetl_err apply_archived(struct wh_sink *ws, const char *name, struct zetl_errbuf *eb)
{
    char *dir = NULL;
    enum zetl_err err = zetl_archive_fetch(ws->ar, ws->stream, name, &dir, eb);

    if (err == ZETL_OK)
        err = zetl_wh_apply_dir(ws->wh, dir, eb);
    zetl_archive_fetch_done(ws->ar, dir);
    if (err)
        zetl_err_prefix(eb, "could not apply batch %s to the warehouse", name);
    return err;
}

/*
 * Catch-up from the archive.  A retry starts over from the offset, which
 * moves with every applied batch, so nothing is applied twice and little is
 * redone.
 */
static enum zetl_err wh_start(void *state, struct zetl_sink_pos *pos, struct zetl_errbuf *eb)
{
    struct wh_sink *ws = state;
    struct zetl_strlist names = {NULL, 0};
    uint64_t last = 0, end = 0;
    enum zetl_err err;

    if ((err = zetl_wh_offset(ws->wh, ws->stream, &last, &end, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "warehouse unavailable");
        return err;
    }
    if ((err = zetl_archive_list(ws->ar, ws->stream, last, &names, eb)) != ZETL_OK)
        return err;
    if (names.n > 0)
        zetl_logmsg("stream %s: applying %zu archived batch(es) the warehouse has not seen",
                    ws->stream, names.n);
    for (size_t i = 0; i < names.n && err == ZETL_OK; i++)
        err = apply_archived(ws, names.items[i], eb);
    zetl_strlist_release(&names);
    if (err == ZETL_OK && (err = zetl_wh_offset(ws->wh, ws->stream, &last, &end, eb)) == ZETL_OK)
        pos->end_lsn = end;
    return err;
}

static enum zetl_err wh_put(void *state, const struct zetl_batch *b, struct zetl_errbuf *eb)
{
    char name[40];

    zetl_archive_batch_name(b, name);
    return apply_archived(state, name, eb);
}

static enum zetl_err wh_note_idle(void *state, uint64_t end_lsn, struct zetl_errbuf *eb)
{
    struct wh_sink *ws = state;
    enum zetl_err err;

    if (end_lsn <= ws->noted_lsn)
        return ZETL_OK;
    if ((err = zetl_wh_note_progress(ws->wh, ws->stream, end_lsn, eb)) == ZETL_OK)
        ws->noted_lsn = end_lsn;
    return err;
}

const struct zetl_sink_ops zetl_sink_warehouse_ops = {
    .name = "warehouse",
    .must_be_durable = true,
    .configured = wh_configured,
    .open = wh_open,
    .start = wh_start,
    .put = wh_put,
    .note_idle = wh_note_idle,
    .close = wh_close,
};
