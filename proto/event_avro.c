/*
 * Avro binary encoding of event keys and envelopes, written and read by
 * hand for the fixed schemas of event_schema.c.  avro-c's generic values
 * cost a function-pointer dispatch, a copy and a size pass per field; this
 * writes each message straight into the caller's buffer in one pass
 * (tests/unit/test_proto_event.c compares its bytes with avro-c's and times
 * both).  The reader is bounds-checked with a sticky error, because it reads
 * whatever a topic holds.
 *
 * Avro binary (specification, "Binary Encoding"): int and long are zigzag
 * varints; float and double 4 / 8 bytes little-endian; boolean one byte 0 or
 * 1; bytes and string a long length then the bytes; a union a long branch
 * index then the branch; an array blocks of (long count, items), a count 0
 * ends it (a negative count -n is followed by the block's byte size).
 *
 * Key:      tenant string, each key column T (not nullable)
 * Envelope: before union{null, Value}, after union{null, Value},
 *           Source { version, connector, name: string, ts_ms: long,
 *                    snapshot, db: string, sequence: union{null, string},
 *                    schema, table: string, txId, lsn, xmin: union{null, long},
 *                    tenant: string, seq: long },
 *           op string, ts_ms union{null, long}, unchanged array<string>
 * Value:    tenant string, each column union{null, T}
 */
#include "proto/event_int.h"

#include <string.h>

/* Longest varint (a 64-bit zigzag long). */
#define AV_VARINT_MAX 10

/* ---- writer ---------------------------------------------------------------- */

static inline uint8_t *av_long(uint8_t *p, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63));

    while (z > 0x7f) {
        *p++ = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    *p++ = (uint8_t)z;
    return p;
}

static inline uint8_t *av_bytes(uint8_t *p, const void *s, size_t n)
{
    p = av_long(p, (int64_t)n);
    if (n)
        memcpy(p, s, n);
    return p + n;
}

static inline uint8_t *av_cstr(uint8_t *p, const char *s)
{
    return av_bytes(p, s ? s : "", s ? strlen(s) : 0);
}

static inline uint8_t *av_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

/* One value of kind k from its text; false (nothing written) when the text is not one. */
static bool av_put_value(struct zetl_ev_encoder *e, enum ev_kind k, const char *v, size_t n,
                         uint8_t **pp)
{
    uint8_t *p = *pp;
    int64_t i;
    bool b;

    switch (k) {
    case EV_STRING:
        p = av_bytes(p, v, n);
        break;
    case EV_BOOL:
        if (!ev_parse_bool(v, n, &b))
            return false;
        *p++ = b;
        break;
    case EV_SHORT:
        if (!ev_parse_int(v, n, INT16_MIN, INT16_MAX, &i))
            return false;
        p = av_long(p, i);
        break;
    case EV_INT:
        if (!ev_parse_int(v, n, INT32_MIN, INT32_MAX, &i))
            return false;
        p = av_long(p, i);
        break;
    case EV_LONG:
        if (!ev_parse_int(v, n, INT64_MIN, INT64_MAX, &i))
            return false;
        p = av_long(p, i);
        break;
    case EV_FLOAT: {
        float f;
        uint32_t u;

        if (!ev_parse_float(&e->tmp, v, n, &f))
            return false;
        memcpy(&u, &f, 4);
        p = av_le(p, u, 4);
        break;
    }
    case EV_DOUBLE: {
        double d;
        uint64_t u;

        if (!ev_parse_double(&e->tmp, v, n, &d))
            return false;
        memcpy(&u, &d, 8);
        p = av_le(p, u, 8);
        break;
    }
    case EV_BYTES: {
        size_t nb;

        if (!ev_hex_check(v, n, &nb))
            return false;
        p = av_long(p, (int64_t)nb);
        ev_hex_decode(v, n, p);
        p += nb;
        break;
    }
    }
    *pp = p;
    return true;
}

/* Upper bound of a value's encoding: a union byte, a varint and at most the text's length. */
static size_t av_image_bound(const struct zetl_ev_schema *s, size_t tenant_len, const size_t *lens,
                             const char *const *vals)
{
    size_t n = 1 + AV_VARINT_MAX + tenant_len;

    if (vals == NULL)
        return 1;
    for (size_t i = 0; i < s->ncols; i++)
        n += 1 + (vals[i] != NULL ? AV_VARINT_MAX + lens[i] : 0);
    return n;
}

static size_t slen(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Reserves `bound` bytes of out; the writers then need no checks. */
static enum zetl_err av_reserve(const struct zetl_ev_schema *s, struct zetl_buf *out, size_t bound,
                                struct zetl_errbuf *eb)
{
    if (!zetl_buf_reserve(out, bound))
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "could not encode an event of table \"%s\": it would exceed %zu bytes",
                            s->table, out->max);
    return ZETL_OK;
}

enum zetl_err ev_avro_key(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                          const char *tenant, size_t tenant_len, const char *const *vals,
                          const size_t *lens, struct zetl_buf *out, struct zetl_errbuf *eb)
{
    size_t bound = AV_VARINT_MAX + tenant_len;
    enum zetl_err err;
    uint8_t *p;

    for (size_t k = 0; k < s->nkeys; k++) {
        size_t i = s->keys[k];

        if (vals == NULL || vals[i] == NULL)
            return ev_err_key_null(s, i, eb);
        bound += AV_VARINT_MAX + lens[i];
    }
    if ((err = av_reserve(s, out, bound, eb)) != ZETL_OK)
        return err;
    p = (uint8_t *)out->data + out->len;
    p = av_bytes(p, tenant, tenant_len);
    for (size_t k = 0; k < s->nkeys; k++) {
        size_t i = s->keys[k];

        if (!av_put_value(e, s->fields[i].kind, vals[i], lens[i], &p))
            return ev_err_value(s, i, eb);
    }
    out->len = (size_t)((char *)p - out->data);
    out->data[out->len] = '\0';
    return ZETL_OK;
}

/* An image; `unchanged` (the after image's flags, or NULL) makes those columns null. */
static bool av_put_image(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                         const struct zetl_ev_change *c, const char *const *vals,
                         const size_t *lens, const unsigned char *unchanged, uint8_t **pp,
                         size_t *bad_col)
{
    uint8_t *p = *pp;

    if (vals == NULL) {
        *p++ = 0;
        *pp = p;
        return true;
    }
    *p++ = 2; /* branch 1, zigzag */
    p = av_bytes(p, c->tenant, c->tenant_len);
    for (size_t i = 0; i < s->ncols; i++) {
        if (vals[i] == NULL || (unchanged != NULL && unchanged[i])) {
            *p++ = 0;
            continue;
        }
        *p++ = 2;
        if (!av_put_value(e, s->fields[i].kind, vals[i], lens[i], &p)) {
            *bad_col = i;
            return false;
        }
    }
    *pp = p;
    return true;
}

static uint8_t *av_put_source(uint8_t *p, const struct zetl_ev_change *c)
{
    const struct zetl_ev_source *src = &c->src;
    char seq[EV_SEQUENCE_MAX];

    p = av_cstr(p, src->version);
    p = av_bytes(p, "zetl", 4);
    p = av_cstr(p, src->name);
    p = av_long(p, src->ts_ms);
    p = src->snapshot ? av_bytes(p, "true", 4) : av_bytes(p, "false", 5);
    p = av_cstr(p, src->db);
    *p++ = 2;
    p = av_bytes(p, seq, ev_sequence(seq, src->lsn));
    p = av_cstr(p, src->schema);
    p = av_cstr(p, src->table);
    if (src->txid < 0) {
        *p++ = 0;
    } else {
        *p++ = 2;
        p = av_long(p, src->txid);
    }
    *p++ = 2;
    p = av_long(p, (int64_t)src->lsn);
    *p++ = 0; /* xmin */
    p = av_bytes(p, c->tenant, c->tenant_len);
    return av_long(p, src->seq);
}

enum zetl_err ev_avro_value(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                            const struct zetl_ev_change *c, struct zetl_buf *out,
                            struct zetl_errbuf *eb)
{
    const struct zetl_ev_source *src = &c->src;
    size_t bound, bad_col = 0, nunchanged = 0;
    enum zetl_err err;
    uint8_t *p;

    bound = av_image_bound(s, c->tenant_len, c->before_len, c->before) +
            av_image_bound(s, c->tenant_len, c->after_len, c->after);
    /* Source: 14 fields, each at most a union byte and a varint, plus the strings. */
    bound += 14 * (1 + AV_VARINT_MAX) + slen(src->version) + 4 + slen(src->name) + 5 +
             slen(src->db) + EV_SEQUENCE_MAX + slen(src->schema) + slen(src->table) + c->tenant_len;
    bound += 2 + 1 + AV_VARINT_MAX + 2 * AV_VARINT_MAX;
    for (size_t i = 0; c->unchanged != NULL && i < s->ncols; i++)
        if (c->unchanged[i]) {
            bound += AV_VARINT_MAX + s->fields[i].aname_len;
            nunchanged++;
        }
    if ((err = av_reserve(s, out, bound, eb)) != ZETL_OK)
        return err;
    p = (uint8_t *)out->data + out->len;
    if (!av_put_image(e, s, c, c->before, c->before_len, NULL, &p, &bad_col) ||
        !av_put_image(e, s, c, c->after, c->after_len, c->unchanged, &p, &bad_col))
        return ev_err_value(s, bad_col, eb);
    p = av_put_source(p, c);
    p = av_bytes(p, &c->op, 1);
    *p++ = 2;
    p = av_long(p, c->ts_ms);
    /* unchanged: one block of the names, as the Avro fields are named, then the end. */
    if (nunchanged > 0) {
        p = av_long(p, (int64_t)nunchanged);
        for (size_t i = 0; i < s->ncols; i++)
            if (c->unchanged[i])
                p = av_bytes(p, s->fields[i].aname, s->fields[i].aname_len);
    }
    *p++ = 0;
    out->len = (size_t)((char *)p - out->data);
    out->data[out->len] = '\0';
    return ZETL_OK;
}

/* ---- reader ---------------------------------------------------------------- */

/*
 * Reads stop at the first problem: `bad` names it (static text) and `bad_off`
 * where; later reads return zeros and NULLs, so decoding goes straight
 * through and is checked once.
 */
struct av_rd {
    const uint8_t *start, *p, *end;
    const char *bad;
    size_t bad_off;
};

static void av_bad(struct av_rd *rd, const char *what)
{
    if (rd->bad == NULL) {
        rd->bad = what;
        rd->bad_off = (size_t)(rd->p - rd->start);
    }
}

static int64_t av_rd_long(struct av_rd *rd)
{
    uint64_t v = 0;

    for (int shift = 0; rd->bad == NULL; shift += 7) {
        uint8_t b;

        if (rd->p == rd->end) {
            av_bad(rd, "input cut short");
            break;
        }
        b = *rd->p;
        /* The tenth byte holds the 64th bit only. */
        if (shift == 63 && b > 1) {
            av_bad(rd, "varint longer than 64 bits");
            break;
        }
        rd->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
    }
    return 0;
}

static const uint8_t *av_rd_fixed(struct av_rd *rd, size_t n)
{
    const uint8_t *p = rd->p;

    if (rd->bad != NULL)
        return NULL;
    if ((size_t)(rd->end - rd->p) < n) {
        av_bad(rd, "input cut short");
        return NULL;
    }
    rd->p += n;
    return p;
}

/* bytes / string: a length, then that many bytes (checked before anything is allocated). */
static const uint8_t *av_rd_bytes(struct av_rd *rd, size_t *n)
{
    int64_t len = av_rd_long(rd);

    *n = 0;
    if (rd->bad != NULL)
        return NULL;
    if (len < 0) {
        av_bad(rd, "negative length");
        return NULL;
    }
    if ((uint64_t)len > (uint64_t)(rd->end - rd->p)) {
        av_bad(rd, "length past the end of the message");
        return NULL;
    }
    *n = (size_t)len;
    return av_rd_fixed(rd, (size_t)len);
}

/* A string: PostgreSQL's text (and the C strings of the decoded source) never holds a NUL. */
static const uint8_t *av_rd_text(struct av_rd *rd, size_t *n)
{
    const uint8_t *p = av_rd_bytes(rd, n);

    if (p != NULL && memchr(p, 0, *n) != NULL) {
        av_bad(rd, "NUL byte in a string");
        return NULL;
    }
    return p;
}

/* A [null, T] union: false for null, true for T. */
static bool av_rd_opt(struct av_rd *rd)
{
    int64_t b = av_rd_long(rd);

    if (b != 0 && b != 1)
        av_bad(rd, "union branch other than 0 or 1");
    return b == 1 && rd->bad == NULL;
}

static int64_t av_rd_range(struct av_rd *rd, int64_t min, int64_t max)
{
    int64_t v = av_rd_long(rd);

    if (v < min || v > max) {
        av_bad(rd, "integer out of its column's range");
        return 0;
    }
    return v;
}

static uint64_t av_rd_le(struct av_rd *rd, int n)
{
    const uint8_t *p = av_rd_fixed(rd, (size_t)n);
    uint64_t v = 0;

    for (int i = 0; p != NULL && i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* One value of kind k as PostgreSQL text, in d's arena (NULL after a problem). */
static const char *av_rd_value(struct av_rd *rd, struct zetl_ev_decoder *d, enum ev_kind k,
                               size_t *len)
{
    char num[EV_NUM_MAX];
    const uint8_t *p;
    size_t n = 0;

    switch (k) {
    case EV_STRING:
        p = av_rd_text(rd, &n);
        *len = n;
        return p != NULL ? ev_text_copy(d, p, n) : NULL;
    case EV_BOOL:
        p = av_rd_fixed(rd, 1);
        if (p != NULL && *p > 1)
            av_bad(rd, "boolean other than 0 or 1");
        *len = 1;
        return rd->bad == NULL ? (*p ? "t" : "f") : NULL;
    case EV_SHORT:
        n = ev_fmt_i64(num, av_rd_range(rd, INT16_MIN, INT16_MAX));
        break;
    case EV_INT:
        n = ev_fmt_i64(num, av_rd_range(rd, INT32_MIN, INT32_MAX));
        break;
    case EV_LONG:
        n = ev_fmt_i64(num, av_rd_long(rd));
        break;
    case EV_FLOAT: {
        uint32_t u = (uint32_t)av_rd_le(rd, 4);
        float f;

        memcpy(&f, &u, 4);
        n = ev_fmt_float(num, f);
        break;
    }
    case EV_DOUBLE: {
        uint64_t u = av_rd_le(rd, 8);
        double v;

        memcpy(&v, &u, 8);
        n = ev_fmt_double(num, v);
        break;
    }
    case EV_BYTES:
        p = av_rd_bytes(rd, &n);
        return p != NULL ? ev_text_bytea(d, p, n, len) : NULL;
    }
    if (rd->bad != NULL)
        return NULL;
    *len = n;
    return ev_text_copy(d, num, n);
}

/* union{null, Value}: true when there is an image; its tenant in *tenant. */
static bool av_rd_image(struct av_rd *rd, struct zetl_ev_decoder *d, const struct zetl_ev_schema *s,
                        const char **vals, size_t *lens, const uint8_t **tenant, size_t *tenant_len)
{
    if (!av_rd_opt(rd))
        return false;
    *tenant = av_rd_text(rd, tenant_len);
    for (size_t i = 0; i < s->ncols && rd->bad == NULL; i++)
        if (av_rd_opt(rd))
            vals[i] = av_rd_value(rd, d, s->fields[i].kind, &lens[i]);
    return rd->bad == NULL;
}

static const char *av_rd_str(struct av_rd *rd, struct zetl_ev_decoder *d, size_t *len)
{
    size_t n;
    const uint8_t *p = av_rd_text(rd, &n);

    if (len != NULL)
        *len = n;
    return p != NULL ? ev_text_copy(d, p, n) : "";
}

static void av_rd_source(struct av_rd *rd, struct zetl_ev_decoder *d, struct zetl_ev_decoded *out)
{
    struct zetl_ev_source *src = &out->src;
    const char *snap;
    int64_t seq;

    src->version = av_rd_str(rd, d, NULL);
    (void)av_rd_bytes(rd, &(size_t){0}); /* connector */
    src->name = av_rd_str(rd, d, NULL);
    src->ts_ms = av_rd_long(rd);
    snap = av_rd_str(rd, d, NULL);
    if (rd->bad == NULL && strcmp(snap, "true") != 0 && strcmp(snap, "false") != 0)
        av_bad(rd, "source.snapshot other than \"true\" or \"false\"");
    src->snapshot = strcmp(snap, "true") == 0;
    src->db = av_rd_str(rd, d, NULL);
    if (av_rd_opt(rd))
        (void)av_rd_bytes(rd, &(size_t){0}); /* sequence */
    src->schema = av_rd_str(rd, d, NULL);
    src->table = av_rd_str(rd, d, NULL);
    src->txid = av_rd_opt(rd) ? av_rd_long(rd) : -1;
    src->lsn = av_rd_opt(rd) ? (uint64_t)av_rd_long(rd) : 0;
    if (av_rd_opt(rd))
        (void)av_rd_long(rd); /* xmin */
    out->tenant = av_rd_str(rd, d, &out->tenant_len);
    seq = av_rd_range(rd, 0, UINT32_MAX);
    src->seq = (uint32_t)seq;
}

/* The column an `unchanged` name refers to; SIZE_MAX when none. */
static size_t av_col_by_aname(const struct zetl_ev_schema *s, const uint8_t *name, size_t n)
{
    for (size_t i = 0; i < s->ncols; i++)
        if (s->fields[i].aname_len == n && memcmp(s->fields[i].aname, name, n) == 0)
            return i;
    return SIZE_MAX;
}

static void av_rd_unchanged(struct av_rd *rd, struct zetl_ev_decoder *d,
                            const struct zetl_ev_schema *s)
{
    for (;;) {
        int64_t count = av_rd_long(rd);

        if (rd->bad != NULL || count == 0)
            return;
        if (count < 0) {
            if (count == INT64_MIN) {
                av_bad(rd, "array block count out of range");
                return;
            }
            count = -count;
            if (av_rd_long(rd) < 0) {
                av_bad(rd, "negative array block size");
                return;
            }
        }
        /* Each name takes at least its length byte. */
        if ((uint64_t)count > (uint64_t)(rd->end - rd->p)) {
            av_bad(rd, "array block count past the end of the message");
            return;
        }
        for (int64_t j = 0; j < count && rd->bad == NULL; j++) {
            size_t n, i;
            const uint8_t *name = av_rd_bytes(rd, &n);

            if (name == NULL)
                return;
            /* A name once only: a flood of names costs ncols lookups at most. */
            if ((i = av_col_by_aname(s, name, n)) == SIZE_MAX || d->unchanged[i]) {
                av_bad(rd, i == SIZE_MAX ? "unknown column in unchanged"
                                         : "column named twice in unchanged");
                return;
            }
            d->unchanged[i] = 1;
        }
    }
}

static bool same_tenant(const struct zetl_ev_decoded *out, const uint8_t *t, size_t n)
{
    return n == out->tenant_len && (n == 0 || memcmp(t, out->tenant, n) == 0);
}

enum zetl_err ev_avro_decode(struct zetl_ev_decoder *d, const struct zetl_ev_schema *s,
                             const void *body, size_t len, struct zetl_ev_decoded *out,
                             struct zetl_errbuf *eb)
{
    struct av_rd rd = {.start = body, .p = body, .end = (const uint8_t *)body + len};
    const uint8_t *bt = NULL, *at = NULL, *op;
    size_t btl = 0, atl = 0, opl;

    memset(out, 0, sizeof(*out));
    ev_decoder_prepare(d, s->ncols);
    out->has_before = av_rd_image(&rd, d, s, d->before, d->before_len, &bt, &btl);
    out->has_after = av_rd_image(&rd, d, s, d->after, d->after_len, &at, &atl);
    av_rd_source(&rd, d, out);
    op = av_rd_bytes(&rd, &opl);
    if (op != NULL && (opl != 1 || strchr("cudtr", op[0]) == NULL || op[0] == '\0'))
        av_bad(&rd, "op other than c, u, d, t or r");
    out->op = op != NULL && opl == 1 ? (char)op[0] : 0;
    out->ts_ms = av_rd_opt(&rd) ? av_rd_long(&rd) : 0;
    av_rd_unchanged(&rd, d, s);
    if (rd.bad == NULL && ((out->has_before && !same_tenant(out, bt, btl)) ||
                           (out->has_after && !same_tenant(out, at, atl))))
        av_bad(&rd, "tenant of an image differs from source.tenant");
    if (rd.bad == NULL && rd.p != rd.end)
        av_bad(&rd, "bytes left over");
    if (rd.bad != NULL) {
        memset(out, 0, sizeof(*out));
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "could not decode an Avro event of table \"%s\": %s at offset %zu of "
                            "%zu",
                            s->table, rd.bad, rd.bad_off, len);
    }
    out->before = out->has_before ? d->before : NULL;
    out->before_len = out->has_before ? d->before_len : NULL;
    out->after = out->has_after ? d->after : NULL;
    out->after_len = out->has_after ? d->after_len : NULL;
    out->unchanged = d->unchanged;
    return ZETL_OK;
}
