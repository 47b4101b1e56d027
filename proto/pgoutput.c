/*
 * pgoutput logical replication message decoder (protocol versions 1-4) and a
 * stable one-line text rendering for golden tests and debug logs.
 *
 * Wire types below follow the PostgreSQL documentation ("Logical Replication
 * Message Formats"): Int8/16/32/64 are big-endian, String is NUL-terminated,
 * LSNs are Int64, timestamps are Int64 microseconds since 2000-01-01 UTC.
 * "[Int32 xid]" marks the xid that change messages carry only inside a
 * streamed block (protocol 2+, between Stream Start and Stream Stop).
 */
#include "proto/pgoutput.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/lsn.h"
#include "proto/reader.h"
#include "proto/relcache.h"

/* First protocol versions of the optional message families. */
#define PGO_STREAM_VERSION 2
#define PGO_TWOPHASE_VERSION 3
#define PGO_PARALLEL_VERSION 4

/*
 * Per-call decoding state.  A read past the end sets rd.err (truncation); a
 * byte that is present but not allowed sets `bad` with the offending byte and
 * its offset.  Decoders stop at the first `bad` and the caller reports it.
 */
struct pgo_ctx {
    struct zetl_reader rd;
    struct zetl_arena *ar;
    const char *bad; /* static text: "unknown column kind" ... */
    size_t bad_off;
    uint8_t bad_byte;
};

static void pgo_mark_bad(struct pgo_ctx *cx, const char *what, size_t off, uint8_t byte)
{
    if (cx->bad == NULL) {
        cx->bad = what;
        cx->bad_off = off;
        cx->bad_byte = byte;
    }
}

static bool pgo_ok(const struct pgo_ctx *cx)
{
    return cx->bad == NULL && !cx->rd.err;
}

/* String: NUL-terminated; the slice excludes the NUL. */
static void pgo_read_str(struct pgo_ctx *cx, struct zetl_slice *s)
{
    size_t len;
    const char *p = zetl_reader_cstr(&cx->rd, &len);

    if (p == NULL || len > UINT32_MAX) {
        cx->rd.err = true;
        s->ptr = NULL;
        s->len = 0;
        return;
    }
    s->ptr = p;
    s->len = (uint32_t)len;
}

/*
 * TupleData:
 *   Int16 ncols
 *   ncols x { Byte1 kind: 'n' null | 'u' unchanged TOAST |
 *                         't' text  -> Int32 len, Byte(len) |
 *                         'b' binary -> Int32 len, Byte(len) }
 */
static void pgo_read_tuple(struct pgo_ctx *cx, struct zetl_tuple *tup)
{
    struct zetl_reader *rd = &cx->rd;
    uint16_t ncols = zetl_reader_u16be(rd);

    tup->ncols = 0;
    tup->cols = NULL;
    if (rd->err || ncols == 0)
        return;
    /* Every column takes at least its kind byte: refuse to allocate for more. */
    if (ncols > zetl_reader_remaining(rd)) {
        rd->err = true;
        return;
    }
    tup->cols = zetl_arena_alloc(cx->ar, (size_t)ncols * sizeof(*tup->cols));
    tup->ncols = ncols;
    for (uint16_t i = 0; i < ncols; i++) {
        struct zetl_tuple_col *col = &tup->cols[i];
        size_t off = zetl_reader_offset(rd);
        uint8_t kind = zetl_reader_u8(rd);

        col->kind = (char)kind;
        col->val.ptr = NULL;
        col->val.len = 0;
        switch (kind) {
        case ZETL_COL_NULL:
        case ZETL_COL_UNCHANGED_TOAST:
            break;
        case ZETL_COL_TEXT:
        case ZETL_COL_BINARY: {
            uint32_t len = zetl_reader_u32be(rd);
            /* zetl_reader_bytes checks len against what is left before we use it. */
            const uint8_t *p = zetl_reader_bytes(rd, len);
            col->val.ptr = (const char *)p;
            col->val.len = p != NULL ? len : 0;
            break;
        }
        default:
            if (!rd->err)
                pgo_mark_bad(cx, "unknown column kind", off, kind);
            break;
        }
        if (!pgo_ok(cx)) {
            tup->ncols = i;
            return;
        }
    }
}

/* Begin: Byte1('B') Int64 final_lsn, Int64 commit_time, Int32 xid */
static void pgo_begin(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.begin.final_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.begin.commit_time = (int64_t)zetl_reader_u64be(&cx->rd);
    msg->u.begin.xid = zetl_reader_u32be(&cx->rd);
}

/* Commit: Byte1('C') Int8 flags, Int64 commit_lsn, Int64 end_lsn, Int64 commit_time */
static void pgo_commit(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.commit.flags = zetl_reader_u8(&cx->rd);
    msg->u.commit.commit_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.commit.end_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.commit.commit_time = (int64_t)zetl_reader_u64be(&cx->rd);
}

/* Origin: Byte1('O') Int64 origin_lsn, String name.  Never carries an xid. */
static void pgo_origin(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.origin.origin_lsn = zetl_reader_u64be(&cx->rd);
    pgo_read_str(cx, &msg->u.origin.name);
}

/*
 * Relation: Byte1('R') [Int32 xid] Int32 relid, String nspname, String relname,
 *   Int8 replident ('d','n','f','i'), Int16 ncols,
 *   ncols x { Int8 flags (1 = key), String name, Int32 typoid, Int32 typmod }
 */
static void pgo_relation(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    struct zetl_reader *rd = &cx->rd;

    msg->u.relation.relid = zetl_reader_u32be(rd);
    pgo_read_str(cx, &msg->u.relation.nspname);
    pgo_read_str(cx, &msg->u.relation.relname);
    size_t off = zetl_reader_offset(rd);
    uint8_t ri = zetl_reader_u8(rd);
    msg->u.relation.replident = (char)ri;
    if (!rd->err && ri != 'd' && ri != 'n' && ri != 'f' && ri != 'i') {
        pgo_mark_bad(cx, "unknown replica identity", off, ri);
        return;
    }
    uint16_t ncols = zetl_reader_u16be(rd);
    msg->u.relation.ncols = 0;
    msg->u.relation.cols = NULL;
    if (rd->err || ncols == 0)
        return;
    /* flags + empty name + typoid + typmod: at least 10 bytes per column. */
    if ((size_t)ncols * 10 > zetl_reader_remaining(rd)) {
        rd->err = true;
        return;
    }
    struct zetl_rel_col *cols = zetl_arena_alloc(cx->ar, (size_t)ncols * sizeof(*cols));
    for (uint16_t i = 0; i < ncols && !rd->err; i++) {
        cols[i].flags = zetl_reader_u8(rd);
        pgo_read_str(cx, &cols[i].name);
        cols[i].typoid = zetl_reader_u32be(rd);
        cols[i].typmod = (int32_t)zetl_reader_u32be(rd);
    }
    if (rd->err)
        return;
    msg->u.relation.ncols = ncols;
    msg->u.relation.cols = cols;
}

/* Type: Byte1('Y') [Int32 xid] Int32 typoid, String nspname, String typname */
static void pgo_type(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.type.typoid = zetl_reader_u32be(&cx->rd);
    pgo_read_str(cx, &msg->u.type.nspname);
    pgo_read_str(cx, &msg->u.type.typname);
}

/* Insert: Byte1('I') [Int32 xid] Int32 relid, Byte1('N'), TupleData new */
static void pgo_insert(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    struct zetl_reader *rd = &cx->rd;

    msg->u.insert.relid = zetl_reader_u32be(rd);
    size_t off = zetl_reader_offset(rd);
    uint8_t mark = zetl_reader_u8(rd);
    if (!rd->err && mark != 'N') {
        pgo_mark_bad(cx, "unknown tuple marker", off, mark);
        return;
    }
    pgo_read_tuple(cx, &msg->u.insert.newtup);
}

/*
 * Update: Byte1('U') [Int32 xid] Int32 relid,
 *   optionally Byte1('K') TupleData old key | Byte1('O') TupleData old row,
 *   Byte1('N') TupleData new
 */
static void pgo_update(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    struct zetl_reader *rd = &cx->rd;

    msg->u.update.relid = zetl_reader_u32be(rd);
    size_t off = zetl_reader_offset(rd);
    uint8_t mark = zetl_reader_u8(rd);
    if (!rd->err && (mark == 'K' || mark == 'O')) {
        msg->u.update.oldkind = (char)mark;
        pgo_read_tuple(cx, &msg->u.update.oldtup);
        if (!pgo_ok(cx))
            return;
        off = zetl_reader_offset(rd);
        mark = zetl_reader_u8(rd);
    }
    if (!rd->err && mark != 'N') {
        pgo_mark_bad(cx, "unknown tuple marker", off, mark);
        return;
    }
    pgo_read_tuple(cx, &msg->u.update.newtup);
}

/* Delete: Byte1('D') [Int32 xid] Int32 relid, Byte1('K' | 'O'), TupleData old */
static void pgo_delete(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    struct zetl_reader *rd = &cx->rd;

    msg->u.delete_.relid = zetl_reader_u32be(rd);
    size_t off = zetl_reader_offset(rd);
    uint8_t mark = zetl_reader_u8(rd);
    if (!rd->err && mark != 'K' && mark != 'O') {
        pgo_mark_bad(cx, "unknown old tuple marker", off, mark);
        return;
    }
    msg->u.delete_.oldkind = (char)mark;
    pgo_read_tuple(cx, &msg->u.delete_.oldtup);
}

/* Truncate: Byte1('T') [Int32 xid] Int32 nrelids, Int8 options, nrelids x Int32 relid */
static void pgo_truncate(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    struct zetl_reader *rd = &cx->rd;
    uint32_t n = zetl_reader_u32be(rd);

    msg->u.truncate.options = zetl_reader_u8(rd);
    msg->u.truncate.nrelids = 0;
    msg->u.truncate.relids = NULL;
    if (rd->err || n == 0)
        return;
    if ((uint64_t)n * 4 > zetl_reader_remaining(rd)) {
        rd->err = true;
        return;
    }
    uint32_t *relids = zetl_arena_alloc(cx->ar, (size_t)n * sizeof(*relids));
    for (uint32_t i = 0; i < n; i++)
        relids[i] = zetl_reader_u32be(rd);
    msg->u.truncate.nrelids = n;
    msg->u.truncate.relids = relids;
}

/*
 * Message: Byte1('M') [Int32 xid] Int8 flags (1 = transactional), Int64 lsn,
 *   String prefix, Int32 len, Byte(len) content
 */
static void pgo_message(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    struct zetl_reader *rd = &cx->rd;

    msg->u.message.flags = zetl_reader_u8(rd);
    msg->u.message.lsn = zetl_reader_u64be(rd);
    pgo_read_str(cx, &msg->u.message.prefix);
    uint32_t len = zetl_reader_u32be(rd);
    const uint8_t *p = zetl_reader_bytes(rd, len);
    msg->u.message.content.ptr = (const char *)p;
    msg->u.message.content.len = p != NULL ? len : 0;
}

/* Stream Start: Byte1('S') Int32 xid, Int8 first_segment */
static void pgo_stream_start(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.stream_start.xid = zetl_reader_u32be(&cx->rd);
    msg->u.stream_start.first_segment = zetl_reader_u8(&cx->rd);
}

/*
 * Stream Commit: Byte1('c') Int32 xid, Int8 flags, Int64 commit_lsn,
 *   Int64 end_lsn, Int64 commit_time
 */
static void pgo_stream_commit(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.stream_commit.xid = zetl_reader_u32be(&cx->rd);
    msg->u.stream_commit.flags = zetl_reader_u8(&cx->rd);
    msg->u.stream_commit.commit_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.stream_commit.end_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.stream_commit.commit_time = (int64_t)zetl_reader_u64be(&cx->rd);
}

/*
 * Stream Abort: Byte1('A') Int32 xid, Int32 subxid,
 *   and with protocol 4 + streaming = parallel: Int64 abort_lsn, Int64 abort_time
 */
static void pgo_stream_abort(struct pgo_ctx *cx, const struct zetl_pgo_decoder *dec,
                             struct zetl_pgo_msg *msg)
{
    msg->u.stream_abort.xid = zetl_reader_u32be(&cx->rd);
    msg->u.stream_abort.subxid = zetl_reader_u32be(&cx->rd);
    if (dec->parallel_abort && dec->proto_version >= PGO_PARALLEL_VERSION) {
        msg->u.stream_abort.has_abort_info = true;
        msg->u.stream_abort.abort_lsn = zetl_reader_u64be(&cx->rd);
        msg->u.stream_abort.abort_time = (int64_t)zetl_reader_u64be(&cx->rd);
    }
}

/*
 * Begin Prepare: Byte1('b') Int64 prepare_lsn, Int64 end_lsn, Int64 prepare_time,
 *   Int32 xid, String gid
 */
static void pgo_begin_prepare(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.begin_prepare.prepare_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.begin_prepare.end_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.begin_prepare.prepare_time = (int64_t)zetl_reader_u64be(&cx->rd);
    msg->u.begin_prepare.xid = zetl_reader_u32be(&cx->rd);
    pgo_read_str(cx, &msg->u.begin_prepare.gid);
}

/*
 * Prepare ('P') and Stream Prepare ('p'): Int8 flags, Int64 prepare_lsn,
 *   Int64 end_lsn, Int64 prepare_time, Int32 xid, String gid
 */
static void pgo_prepare(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.prepare.flags = zetl_reader_u8(&cx->rd);
    msg->u.prepare.prepare_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.prepare.end_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.prepare.prepare_time = (int64_t)zetl_reader_u64be(&cx->rd);
    msg->u.prepare.xid = zetl_reader_u32be(&cx->rd);
    pgo_read_str(cx, &msg->u.prepare.gid);
}

/*
 * Commit Prepared: Byte1('K') Int8 flags, Int64 commit_lsn, Int64 end_lsn,
 *   Int64 commit_time, Int32 xid, String gid
 */
static void pgo_commit_prepared(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.commit_prepared.flags = zetl_reader_u8(&cx->rd);
    msg->u.commit_prepared.commit_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.commit_prepared.end_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.commit_prepared.commit_time = (int64_t)zetl_reader_u64be(&cx->rd);
    msg->u.commit_prepared.xid = zetl_reader_u32be(&cx->rd);
    pgo_read_str(cx, &msg->u.commit_prepared.gid);
}

/*
 * Rollback Prepared: Byte1('r') Int8 flags, Int64 prepare_end_lsn,
 *   Int64 rollback_end_lsn, Int64 prepare_time, Int64 rollback_time,
 *   Int32 xid, String gid
 */
static void pgo_rollback_prepared(struct pgo_ctx *cx, struct zetl_pgo_msg *msg)
{
    msg->u.rollback_prepared.flags = zetl_reader_u8(&cx->rd);
    msg->u.rollback_prepared.prepare_end_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.rollback_prepared.rollback_end_lsn = zetl_reader_u64be(&cx->rd);
    msg->u.rollback_prepared.prepare_time = (int64_t)zetl_reader_u64be(&cx->rd);
    msg->u.rollback_prepared.rollback_time = (int64_t)zetl_reader_u64be(&cx->rd);
    msg->u.rollback_prepared.xid = zetl_reader_u32be(&cx->rd);
    pgo_read_str(cx, &msg->u.rollback_prepared.gid);
}

/* Where a message may appear: outside a streamed block, inside one, or both. */
enum pgo_place { PGO_OUTSIDE = 1, PGO_INSIDE = 2, PGO_ANYWHERE = 3 };

struct pgo_rule {
    int min_version; /* 0: unknown message type */
    enum pgo_place place;
    bool stream_xid; /* carries [Int32 xid] inside a streamed block */
};

/* Indexed by the type byte; only the bytes in enum zetl_pgo_kind have a rule. */
static const struct pgo_rule pgo_rules[256] = {
    ['B'] = {1, PGO_OUTSIDE, false},
    ['C'] = {1, PGO_OUTSIDE, false},
    /* pgoutput sends Origin after Begin and after Stream Start. */
    ['O'] = {1, PGO_ANYWHERE, false},
    ['R'] = {1, PGO_ANYWHERE, true},
    ['Y'] = {1, PGO_ANYWHERE, true},
    ['I'] = {1, PGO_ANYWHERE, true},
    ['U'] = {1, PGO_ANYWHERE, true},
    ['D'] = {1, PGO_ANYWHERE, true},
    ['T'] = {1, PGO_ANYWHERE, true},
    /* Non-transactional messages arrive outside any transaction. */
    ['M'] = {1, PGO_ANYWHERE, true},
    ['S'] = {PGO_STREAM_VERSION, PGO_OUTSIDE, false},
    ['E'] = {PGO_STREAM_VERSION, PGO_INSIDE, false},
    /* Stream Commit / Abort / Prepare follow the Stream Stop of the last block. */
    ['c'] = {PGO_STREAM_VERSION, PGO_OUTSIDE, false},
    ['A'] = {PGO_STREAM_VERSION, PGO_OUTSIDE, false},
    ['b'] = {PGO_TWOPHASE_VERSION, PGO_OUTSIDE, false},
    ['P'] = {PGO_TWOPHASE_VERSION, PGO_OUTSIDE, false},
    ['K'] = {PGO_TWOPHASE_VERSION, PGO_OUTSIDE, false},
    ['r'] = {PGO_TWOPHASE_VERSION, PGO_OUTSIDE, false},
    ['p'] = {PGO_TWOPHASE_VERSION, PGO_OUTSIDE, false},
};

static const char *pgo_kind_name(int kind)
{
    switch (kind) {
    case ZETL_PGO_BEGIN:
        return "BEGIN";
    case ZETL_PGO_COMMIT:
        return "COMMIT";
    case ZETL_PGO_ORIGIN:
        return "ORIGIN";
    case ZETL_PGO_RELATION:
        return "RELATION";
    case ZETL_PGO_TYPE:
        return "TYPE";
    case ZETL_PGO_INSERT:
        return "INSERT";
    case ZETL_PGO_UPDATE:
        return "UPDATE";
    case ZETL_PGO_DELETE:
        return "DELETE";
    case ZETL_PGO_TRUNCATE:
        return "TRUNCATE";
    case ZETL_PGO_MESSAGE:
        return "MESSAGE";
    case ZETL_PGO_STREAM_START:
        return "STREAM START";
    case ZETL_PGO_STREAM_STOP:
        return "STREAM STOP";
    case ZETL_PGO_STREAM_COMMIT:
        return "STREAM COMMIT";
    case ZETL_PGO_STREAM_ABORT:
        return "STREAM ABORT";
    case ZETL_PGO_BEGIN_PREPARE:
        return "BEGIN PREPARE";
    case ZETL_PGO_PREPARE:
        return "PREPARE";
    case ZETL_PGO_COMMIT_PREPARED:
        return "COMMIT PREPARED";
    case ZETL_PGO_ROLLBACK_PREPARED:
        return "ROLLBACK PREPARED";
    case ZETL_PGO_STREAM_PREPARE:
        return "STREAM PREPARE";
    }
    return "UNKNOWN";
}

/* Renders a byte for an error detail: 'x' (0x78) or 0x0A. */
static void pgo_byte_text(uint8_t b, char out[16])
{
    if (b >= 0x20 && b < 0x7f && b != '\'' && b != '\\')
        snprintf(out, 16, "'%c' (0x%02X)", b, b);
    else
        snprintf(out, 16, "0x%02X", b);
}

/* Formats "malformed pgoutput message 'I' (0x49) at 0/16B3748: <detail>". */
static enum zetl_err pgo_fail(struct zetl_errbuf *eb, uint8_t type, uint64_t wal_lsn,
                              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static enum zetl_err pgo_fail(struct zetl_errbuf *eb, uint8_t type, uint64_t wal_lsn,
                              const char *fmt, ...)
{
    char detail[256];
    char what[16];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    pgo_byte_text(type, what);
    return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                        "malformed pgoutput message %s at " ZETL_LSN_FMT ": %s", what,
                        ZETL_LSN_ARGS(wal_lsn), detail);
}

void zetl_pgo_decoder_init(struct zetl_pgo_decoder *dec, int proto_version)
{
    dec->proto_version = proto_version;
    dec->in_stream = false;
    dec->parallel_abort = false;
}

enum zetl_err zetl_pgoutput_decode(struct zetl_pgo_decoder *dec, const uint8_t *data, size_t len,
                                   uint64_t wal_lsn, struct zetl_pgo_msg *msg,
                                   struct zetl_arena *ar, struct zetl_errbuf *eb)
{
    struct pgo_ctx cx;

    memset(msg, 0, sizeof(*msg));
    if (len == 0)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "malformed pgoutput message at " ZETL_LSN_FMT ": empty message",
                            ZETL_LSN_ARGS(wal_lsn));

    zetl_reader_init(&cx.rd, data, len);
    cx.ar = ar;
    cx.bad = NULL;
    cx.bad_off = 0;
    cx.bad_byte = 0;

    uint8_t type = zetl_reader_u8(&cx.rd);
    const struct pgo_rule *rule = &pgo_rules[type];

    if (rule->min_version == 0)
        return pgo_fail(eb, type, wal_lsn, "unknown message type at byte offset 0");
    if (dec->proto_version < rule->min_version)
        return pgo_fail(eb, type, wal_lsn,
                        "%s needs protocol version %d, stream uses %d at byte offset 0",
                        pgo_kind_name(type), rule->min_version, dec->proto_version);
    if (dec->in_stream && !(rule->place & PGO_INSIDE))
        return pgo_fail(eb, type, wal_lsn, "%s inside a streamed block at byte offset 0",
                        pgo_kind_name(type));
    if (!dec->in_stream && !(rule->place & PGO_OUTSIDE))
        return pgo_fail(eb, type, wal_lsn, "%s outside a streamed block at byte offset 0",
                        pgo_kind_name(type));

    msg->kind = (enum zetl_pgo_kind)type;
    if (rule->stream_xid && dec->in_stream)
        msg->xid = zetl_reader_u32be(&cx.rd);

    switch (type) {
    case ZETL_PGO_BEGIN:
        pgo_begin(&cx, msg);
        break;
    case ZETL_PGO_COMMIT:
        pgo_commit(&cx, msg);
        break;
    case ZETL_PGO_ORIGIN:
        pgo_origin(&cx, msg);
        break;
    case ZETL_PGO_RELATION:
        pgo_relation(&cx, msg);
        break;
    case ZETL_PGO_TYPE:
        pgo_type(&cx, msg);
        break;
    case ZETL_PGO_INSERT:
        pgo_insert(&cx, msg);
        break;
    case ZETL_PGO_UPDATE:
        pgo_update(&cx, msg);
        break;
    case ZETL_PGO_DELETE:
        pgo_delete(&cx, msg);
        break;
    case ZETL_PGO_TRUNCATE:
        pgo_truncate(&cx, msg);
        break;
    case ZETL_PGO_MESSAGE:
        pgo_message(&cx, msg);
        break;
    case ZETL_PGO_STREAM_START:
        pgo_stream_start(&cx, msg);
        break;
    case ZETL_PGO_STREAM_STOP:
        /* Stream Stop: Byte1('E'), nothing else. */
        break;
    case ZETL_PGO_STREAM_COMMIT:
        pgo_stream_commit(&cx, msg);
        break;
    case ZETL_PGO_STREAM_ABORT:
        pgo_stream_abort(&cx, dec, msg);
        break;
    case ZETL_PGO_BEGIN_PREPARE:
        pgo_begin_prepare(&cx, msg);
        break;
    case ZETL_PGO_PREPARE:
    case ZETL_PGO_STREAM_PREPARE:
        pgo_prepare(&cx, msg);
        break;
    case ZETL_PGO_COMMIT_PREPARED:
        pgo_commit_prepared(&cx, msg);
        break;
    case ZETL_PGO_ROLLBACK_PREPARED:
        pgo_rollback_prepared(&cx, msg);
        break;
    }

    if (cx.bad != NULL) {
        char b[16];
        pgo_byte_text(cx.bad_byte, b);
        return pgo_fail(eb, type, wal_lsn, "%s %s at byte offset %zu", cx.bad, b, cx.bad_off);
    }
    if (cx.rd.err)
        return pgo_fail(eb, type, wal_lsn, "truncated at byte offset %zu",
                        zetl_reader_offset(&cx.rd));
    if (!zetl_reader_end(&cx.rd))
        return pgo_fail(eb, type, wal_lsn, "%zu trailing bytes at byte offset %zu",
                        zetl_reader_remaining(&cx.rd), zetl_reader_offset(&cx.rd));

    if (type == ZETL_PGO_STREAM_START)
        dec->in_stream = true;
    else if (type == ZETL_PGO_STREAM_STOP)
        dec->in_stream = false;
    return ZETL_OK;
}

/* ---- rendering ---------------------------------------------------------- */

/* Values longer than this render as a prefix plus their length and a hash. */
#define PGO_DESCRIBE_MAX 128
#define PGO_DESCRIBE_PREFIX 48

static uint64_t pgo_fnv1a(const char *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/*
 * 'text' with ' doubled, \ doubled, and every byte outside printable ASCII as
 * \n, \r, \t or \xHH, so the rendering is one line of ASCII whatever the input.
 */
static void pgo_put_quoted(struct zetl_buf *out, const char *p, size_t n)
{
    size_t shown = n > PGO_DESCRIBE_MAX ? PGO_DESCRIBE_PREFIX : n;

    zetl_buf_putc(out, '\'');
    for (size_t i = 0; i < shown; i++) {
        uint8_t c = (uint8_t)p[i];
        if (c == '\'')
            zetl_buf_puts(out, "''");
        else if (c == '\\')
            zetl_buf_puts(out, "\\\\");
        else if (c == '\n')
            zetl_buf_puts(out, "\\n");
        else if (c == '\r')
            zetl_buf_puts(out, "\\r");
        else if (c == '\t')
            zetl_buf_puts(out, "\\t");
        else if (c < 0x20 || c >= 0x7f)
            zetl_buf_printf(out, "\\x%02X", c);
        else
            zetl_buf_putc(out, (char)c);
    }
    zetl_buf_putc(out, '\'');
    if (shown < n)
        zetl_buf_printf(out, "...[%zu bytes fnv1a=%016" PRIx64 "]", n, pgo_fnv1a(p, n));
}

static void pgo_put_hex(struct zetl_buf *out, const char *p, size_t n)
{
    size_t shown = n > PGO_DESCRIBE_MAX ? PGO_DESCRIBE_PREFIX : n;

    zetl_buf_puts(out, "\\x");
    for (size_t i = 0; i < shown; i++)
        zetl_buf_printf(out, "%02x", (uint8_t)p[i]);
    if (shown < n)
        zetl_buf_printf(out, "...[%zu bytes fnv1a=%016" PRIx64 "]", n, pgo_fnv1a(p, n));
}

static void pgo_put_slice(struct zetl_buf *out, struct zetl_slice s)
{
    pgo_put_quoted(out, s.ptr != NULL ? s.ptr : "", s.len);
}

static void pgo_put_lsn(struct zetl_buf *out, const char *name, uint64_t lsn)
{
    zetl_buf_printf(out, " %s=" ZETL_LSN_FMT, name, ZETL_LSN_ARGS(lsn));
}

/* PostgreSQL timestamptz as UTC text: 2024-05-01 12:00:00.123456+00. */
static void pgo_put_time(struct zetl_buf *out, const char *name, int64_t t)
{
    if (t == INT64_MIN || t == INT64_MAX) {
        zetl_buf_printf(out, " %s=%s", name, t == INT64_MIN ? "-infinity" : "infinity");
        return;
    }
    int64_t secs = t / 1000000;
    int64_t usec = t % 1000000;
    if (usec < 0) {
        usec += 1000000;
        secs--;
    }
    time_t tt = (time_t)(secs + ZETL_PG_EPOCH_OFFSET_USEC / 1000000);
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
        zetl_buf_printf(out, " %s=%" PRId64, name, t);
        return;
    }
    zetl_buf_printf(out, " %s=%04d-%02d-%02d %02d:%02d:%02d.%06d+00", name, tm.tm_year + 1900,
                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)usec);
}

/* K(t:'1',n,u,b:\x00ff) */
static void pgo_put_tuple(struct zetl_buf *out, char mark, const struct zetl_tuple *tup)
{
    zetl_buf_printf(out, " %c(", mark);
    for (uint16_t i = 0; i < tup->ncols; i++) {
        const struct zetl_tuple_col *col = &tup->cols[i];
        if (i > 0)
            zetl_buf_putc(out, ',');
        switch (col->kind) {
        case ZETL_COL_TEXT:
            zetl_buf_puts(out, "t:");
            pgo_put_slice(out, col->val);
            break;
        case ZETL_COL_BINARY:
            zetl_buf_puts(out, "b:");
            pgo_put_hex(out, col->val.ptr != NULL ? col->val.ptr : "", col->val.len);
            break;
        default:
            zetl_buf_putc(out, col->kind);
            break;
        }
    }
    zetl_buf_putc(out, ')');
}

/* relid=16385 nsp='public' rel='t' replident=d cols=[key 'id' int4(23), ...] */
static void pgo_describe_relation(const struct zetl_pgo_msg *msg, struct zetl_buf *out)
{
    const char *tname;

    zetl_buf_printf(out, " relid=%" PRIu32 " nsp=", msg->u.relation.relid);
    pgo_put_slice(out, msg->u.relation.nspname);
    zetl_buf_puts(out, " rel=");
    pgo_put_slice(out, msg->u.relation.relname);
    zetl_buf_printf(out, " replident=%c cols=[", msg->u.relation.replident);
    for (uint16_t i = 0; i < msg->u.relation.ncols; i++) {
        const struct zetl_rel_col *c = &msg->u.relation.cols[i];
        if (i > 0)
            zetl_buf_puts(out, ", ");
        if (c->flags & 1)
            zetl_buf_puts(out, "key ");
        if (c->flags & ~1u)
            zetl_buf_printf(out, "flags=%u ", c->flags);
        pgo_put_slice(out, c->name);
        tname = zetl_pgtype_name(c->typoid);
        zetl_buf_printf(out, " %s(%" PRIu32 ")", tname != NULL ? tname : "?", c->typoid);
        if (c->typmod != -1)
            zetl_buf_printf(out, " typmod=%" PRId32, c->typmod);
    }
    zetl_buf_putc(out, ']');
}

static void pgo_describe_truncate(const struct zetl_pgo_msg *msg, struct zetl_buf *out)
{
    zetl_buf_printf(out, " options=%u", msg->u.truncate.options);
    if (msg->u.truncate.options & 1)
        zetl_buf_puts(out, "(cascade)");
    if (msg->u.truncate.options & 2)
        zetl_buf_puts(out, "(restart_identity)");
    zetl_buf_puts(out, " relids=[");
    for (uint32_t i = 0; i < msg->u.truncate.nrelids; i++)
        zetl_buf_printf(out, "%s%" PRIu32, i > 0 ? "," : "", msg->u.truncate.relids[i]);
    zetl_buf_putc(out, ']');
}

/* Streamed transactions (protocol 2+). */
static void pgo_describe_stream(const struct zetl_pgo_msg *msg, struct zetl_buf *out)
{
    switch (msg->kind) {
    case ZETL_PGO_STREAM_START:
        zetl_buf_printf(out, " xid=%" PRIu32 " first_segment=%u", msg->u.stream_start.xid,
                        msg->u.stream_start.first_segment);
        break;
    case ZETL_PGO_STREAM_STOP:
        break;
    case ZETL_PGO_STREAM_COMMIT:
        zetl_buf_printf(out, " xid=%" PRIu32 " flags=%u", msg->u.stream_commit.xid,
                        msg->u.stream_commit.flags);
        pgo_put_lsn(out, "commit_lsn", msg->u.stream_commit.commit_lsn);
        pgo_put_lsn(out, "end_lsn", msg->u.stream_commit.end_lsn);
        pgo_put_time(out, "commit_time", msg->u.stream_commit.commit_time);
        break;
    case ZETL_PGO_STREAM_ABORT:
        zetl_buf_printf(out, " xid=%" PRIu32 " subxid=%" PRIu32, msg->u.stream_abort.xid,
                        msg->u.stream_abort.subxid);
        if (msg->u.stream_abort.has_abort_info) {
            pgo_put_lsn(out, "abort_lsn", msg->u.stream_abort.abort_lsn);
            pgo_put_time(out, "abort_time", msg->u.stream_abort.abort_time);
        }
        break;
    default:
        break;
    }
}

/* Two-phase commit (protocol 3+). */
static void pgo_describe_twophase(const struct zetl_pgo_msg *msg, struct zetl_buf *out)
{
    switch (msg->kind) {
    case ZETL_PGO_BEGIN_PREPARE:
        pgo_put_lsn(out, "prepare_lsn", msg->u.begin_prepare.prepare_lsn);
        pgo_put_lsn(out, "end_lsn", msg->u.begin_prepare.end_lsn);
        pgo_put_time(out, "prepare_time", msg->u.begin_prepare.prepare_time);
        zetl_buf_printf(out, " xid=%" PRIu32 " gid=", msg->u.begin_prepare.xid);
        pgo_put_slice(out, msg->u.begin_prepare.gid);
        break;
    case ZETL_PGO_PREPARE:
    case ZETL_PGO_STREAM_PREPARE:
        zetl_buf_printf(out, " flags=%u", msg->u.prepare.flags);
        pgo_put_lsn(out, "prepare_lsn", msg->u.prepare.prepare_lsn);
        pgo_put_lsn(out, "end_lsn", msg->u.prepare.end_lsn);
        pgo_put_time(out, "prepare_time", msg->u.prepare.prepare_time);
        zetl_buf_printf(out, " xid=%" PRIu32 " gid=", msg->u.prepare.xid);
        pgo_put_slice(out, msg->u.prepare.gid);
        break;
    case ZETL_PGO_COMMIT_PREPARED:
        zetl_buf_printf(out, " flags=%u", msg->u.commit_prepared.flags);
        pgo_put_lsn(out, "commit_lsn", msg->u.commit_prepared.commit_lsn);
        pgo_put_lsn(out, "end_lsn", msg->u.commit_prepared.end_lsn);
        pgo_put_time(out, "commit_time", msg->u.commit_prepared.commit_time);
        zetl_buf_printf(out, " xid=%" PRIu32 " gid=", msg->u.commit_prepared.xid);
        pgo_put_slice(out, msg->u.commit_prepared.gid);
        break;
    case ZETL_PGO_ROLLBACK_PREPARED:
        zetl_buf_printf(out, " flags=%u", msg->u.rollback_prepared.flags);
        pgo_put_lsn(out, "prepare_end_lsn", msg->u.rollback_prepared.prepare_end_lsn);
        pgo_put_lsn(out, "rollback_end_lsn", msg->u.rollback_prepared.rollback_end_lsn);
        pgo_put_time(out, "prepare_time", msg->u.rollback_prepared.prepare_time);
        pgo_put_time(out, "rollback_time", msg->u.rollback_prepared.rollback_time);
        zetl_buf_printf(out, " xid=%" PRIu32 " gid=", msg->u.rollback_prepared.xid);
        pgo_put_slice(out, msg->u.rollback_prepared.gid);
        break;
    default:
        break;
    }
}

void zetl_pgoutput_describe(const struct zetl_pgo_msg *msg, struct zetl_buf *out)
{
    zetl_buf_puts(out, pgo_kind_name(msg->kind));
    if (msg->xid != 0)
        zetl_buf_printf(out, " xid=%" PRIu32, msg->xid);

    switch (msg->kind) {
    case ZETL_PGO_BEGIN:
        pgo_put_lsn(out, "final_lsn", msg->u.begin.final_lsn);
        pgo_put_time(out, "commit_time", msg->u.begin.commit_time);
        zetl_buf_printf(out, " xid=%" PRIu32, msg->u.begin.xid);
        break;
    case ZETL_PGO_COMMIT:
        zetl_buf_printf(out, " flags=%u", msg->u.commit.flags);
        pgo_put_lsn(out, "commit_lsn", msg->u.commit.commit_lsn);
        pgo_put_lsn(out, "end_lsn", msg->u.commit.end_lsn);
        pgo_put_time(out, "commit_time", msg->u.commit.commit_time);
        break;
    case ZETL_PGO_ORIGIN:
        pgo_put_lsn(out, "origin_lsn", msg->u.origin.origin_lsn);
        zetl_buf_puts(out, " name=");
        pgo_put_slice(out, msg->u.origin.name);
        break;
    case ZETL_PGO_RELATION:
        pgo_describe_relation(msg, out);
        break;
    case ZETL_PGO_TYPE:
        zetl_buf_printf(out, " typoid=%" PRIu32 " nsp=", msg->u.type.typoid);
        pgo_put_slice(out, msg->u.type.nspname);
        zetl_buf_puts(out, " typ=");
        pgo_put_slice(out, msg->u.type.typname);
        break;
    case ZETL_PGO_INSERT:
        zetl_buf_printf(out, " relid=%" PRIu32, msg->u.insert.relid);
        pgo_put_tuple(out, 'N', &msg->u.insert.newtup);
        break;
    case ZETL_PGO_UPDATE:
        zetl_buf_printf(out, " relid=%" PRIu32, msg->u.update.relid);
        if (msg->u.update.oldkind != 0)
            pgo_put_tuple(out, msg->u.update.oldkind, &msg->u.update.oldtup);
        pgo_put_tuple(out, 'N', &msg->u.update.newtup);
        break;
    case ZETL_PGO_DELETE:
        zetl_buf_printf(out, " relid=%" PRIu32, msg->u.delete_.relid);
        pgo_put_tuple(out, msg->u.delete_.oldkind, &msg->u.delete_.oldtup);
        break;
    case ZETL_PGO_TRUNCATE:
        pgo_describe_truncate(msg, out);
        break;
    case ZETL_PGO_MESSAGE:
        zetl_buf_printf(out, " flags=%u", msg->u.message.flags);
        pgo_put_lsn(out, "lsn", msg->u.message.lsn);
        zetl_buf_puts(out, " prefix=");
        pgo_put_slice(out, msg->u.message.prefix);
        zetl_buf_puts(out, " content=");
        pgo_put_slice(out, msg->u.message.content);
        break;
    case ZETL_PGO_STREAM_START:
    case ZETL_PGO_STREAM_STOP:
    case ZETL_PGO_STREAM_COMMIT:
    case ZETL_PGO_STREAM_ABORT:
        pgo_describe_stream(msg, out);
        break;
    case ZETL_PGO_BEGIN_PREPARE:
    case ZETL_PGO_PREPARE:
    case ZETL_PGO_STREAM_PREPARE:
    case ZETL_PGO_COMMIT_PREPARED:
    case ZETL_PGO_ROLLBACK_PREPARED:
        pgo_describe_twophase(msg, out);
        break;
    }
}
