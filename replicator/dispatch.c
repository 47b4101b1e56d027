/* Routing of decoded pgoutput messages to a table of handlers. */
#include "replicator/dispatch.h"

#include "common/lsn.h"

/* Messages that belong to the transaction of an open stream block. */
static bool streamed_kind(enum zetl_pgo_kind kind)
{
    switch (kind) {
    case ZETL_PGO_RELATION:
    case ZETL_PGO_TYPE:
    case ZETL_PGO_INSERT:
    case ZETL_PGO_UPDATE:
    case ZETL_PGO_DELETE:
    case ZETL_PGO_TRUNCATE:
    case ZETL_PGO_MESSAGE:
        return true;
    default:
        return false;
    }
}

enum zetl_err zetl_dispatch(const struct zetl_change_handlers *h, void *arg,
                            const struct zetl_pgo_msg *m, bool in_stream, const uint8_t *raw,
                            size_t len, uint64_t lsn, struct zetl_arena *ar, struct zetl_errbuf *eb)
{
    if (in_stream && streamed_kind(m->kind))
        return h->stream_data(arg, m, raw, len, eb);
    switch (m->kind) {
    case ZETL_PGO_BEGIN:
        return h->begin(arg, m->u.begin.final_lsn, m->u.begin.commit_time, eb);
    case ZETL_PGO_COMMIT:
        return h->commit(arg, m->u.commit.commit_lsn, m->u.commit.end_lsn, eb);
    case ZETL_PGO_RELATION:
        return h->relation(arg, m, eb);
    case ZETL_PGO_TYPE:
        return h->type(arg, m, eb);
    case ZETL_PGO_INSERT:
    case ZETL_PGO_UPDATE:
    case ZETL_PGO_DELETE:
        return h->change(arg, m, ar, eb);
    case ZETL_PGO_TRUNCATE:
        return h->truncate(arg, m, eb);
    case ZETL_PGO_MESSAGE:
        return h->message ? h->message(arg, m, eb) : ZETL_OK;
    case ZETL_PGO_ORIGIN:
        return ZETL_OK;
    case ZETL_PGO_STREAM_START:
        return h->stream_start(arg, m->u.stream_start.xid, eb);
    case ZETL_PGO_STREAM_STOP:
        return h->stream_stop(arg, eb);
    case ZETL_PGO_STREAM_ABORT:
        return h->stream_abort(arg, m->u.stream_abort.xid, m->u.stream_abort.subxid, eb);
    case ZETL_PGO_STREAM_COMMIT:
        return h->stream_commit(arg, m, eb);
    default:
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "unexpected two-phase message '%c' at " ZETL_LSN_FMT
                            " (two_phase is not enabled on the slot)",
                            (char)m->kind, ZETL_LSN_ARGS(lsn));
    }
}
