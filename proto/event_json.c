/*
 * The JSON form of event keys and envelopes: the Avro layout of
 * event_avro.c as JSON objects, written by hand (one pass, no tree) and read
 * with jansson.  Members are named by the source's names (as valid UTF-8),
 * not the adjusted Avro names; `unchanged` lists those same names.  Values:
 * strings as they are, boolean true/false, integers as numbers, floats as
 * the shortest number that reads back the same or the strings "NaN",
 * "Infinity", "-Infinity", bytea as base64 text.
 *
 *   key:   { <tenant>: string, <key column>: value... }
 *   value: { before: null | Value, after: null | Value,
 *            source: { version, connector, name, ts_ms, snapshot, db, sequence,
 *                      schema, table, txId, lsn, xmin, tenant, seq },
 *            op, ts_ms, unchanged: [name...] }
 *   Value: { <tenant>: string, <column>: null | value... }
 */
#include "proto/event_int.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

/* ---- writer ---------------------------------------------------------------- */

/* Appends to b; a write past b's cap makes `fail` stick, checked once at the end. */
struct jw {
    struct zetl_buf *b;
    bool fail;
};

static void jw_raw(struct jw *w, const char *s, size_t n)
{
    if (!w->fail && !zetl_buf_append(w->b, s, n))
        w->fail = true;
}

#define JW_LIT(w, lit) jw_raw((w), (lit), sizeof(lit) - 1)

static void jw_str(struct jw *w, const char *s, size_t n)
{
    if (!w->fail && !ev_json_quote(w->b, s ? s : "", s ? n : 0))
        w->fail = true;
}

static void jw_cstr(struct jw *w, const char *s)
{
    jw_str(w, s, s ? strlen(s) : 0);
}

static void jw_i64(struct jw *w, int64_t v)
{
    char num[EV_NUM_MAX];

    jw_raw(w, num, ev_fmt_i64(num, v));
}

/*
 * A float's number, or its name as a string when it is not finite.  A number
 * without '.' or exponent gets ".0": JSON readers take "-0" for the integer 0.
 */
static void jw_float(struct jw *w, const char *num, size_t n, bool finite)
{
    if (finite) {
        jw_raw(w, num, n);
        if (strpbrk(num, ".e") == NULL)
            JW_LIT(w, ".0");
    } else {
        jw_raw(w, "\"", 1);
        jw_raw(w, num, n);
        jw_raw(w, "\"", 1);
    }
}

static void jw_base64_hex(struct jw *w, const char *hex, size_t n)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t nb = (n - 2) / 2;
    unsigned char in[3];
    char q[4];

    jw_raw(w, "\"", 1);
    for (size_t i = 0; i < nb; i += 3) {
        size_t k = nb - i < 3 ? nb - i : 3;

        memset(in, 0, sizeof(in));
        /* Bytes i..i+k of the hex text "\x...": characters 2 + 2i onwards. */
        ev_hex_decode(hex + 2 * i, 2 + 2 * k, in);
        q[0] = b64[in[0] >> 2];
        q[1] = b64[((in[0] & 3) << 4) | (in[1] >> 4)];
        q[2] = k > 1 ? b64[((in[1] & 15) << 2) | (in[2] >> 6)] : '=';
        q[3] = k > 2 ? b64[in[2] & 63] : '=';
        jw_raw(w, q, 4);
    }
    jw_raw(w, "\"", 1);
}

/* One value of kind k from its text; false (nothing written) when the text is not one. */
static bool jw_value(struct jw *w, struct zetl_ev_encoder *e, enum ev_kind k, const char *v,
                     size_t n)
{
    char num[EV_NUM_MAX];
    int64_t i;
    size_t nb;
    bool b;

    switch (k) {
    case EV_STRING:
        jw_str(w, v, n);
        return true;
    case EV_BOOL:
        if (!ev_parse_bool(v, n, &b))
            return false;
        if (b)
            JW_LIT(w, "true");
        else
            JW_LIT(w, "false");
        return true;
    case EV_SHORT:
    case EV_INT:
    case EV_LONG:
        if (!ev_parse_int(v, n,
                          k == EV_SHORT ? INT16_MIN
                          : k == EV_INT ? INT32_MIN
                                        : INT64_MIN,
                          k == EV_SHORT ? INT16_MAX
                          : k == EV_INT ? INT32_MAX
                                        : INT64_MAX,
                          &i))
            return false;
        jw_i64(w, i);
        return true;
    case EV_FLOAT: {
        float f;

        if (!ev_parse_float(&e->tmp, v, n, &f))
            return false;
        jw_float(w, num, ev_fmt_float(num, f), isfinite(f));
        return true;
    }
    case EV_DOUBLE: {
        double d;

        if (!ev_parse_double(&e->tmp, v, n, &d))
            return false;
        jw_float(w, num, ev_fmt_double(num, d), isfinite(d));
        return true;
    }
    case EV_BYTES:
        if (!ev_hex_check(v, n, &nb))
            return false;
        jw_base64_hex(w, v, n);
        return true;
    }
    return false;
}

static enum zetl_err jw_end(struct jw *w, const struct zetl_ev_schema *s, size_t start,
                            struct zetl_errbuf *eb)
{
    if (!w->fail)
        return ZETL_OK;
    w->b->len = start;
    if (w->b->data != NULL)
        w->b->data[start] = '\0';
    return zetl_err_set(eb, ZETL_ERR_FATAL,
                        "could not encode an event of table \"%s\": it would exceed %zu bytes",
                        s->table, w->b->max);
}

enum zetl_err ev_json_key(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                          const char *tenant, size_t tenant_len, const char *const *vals,
                          const size_t *lens, struct zetl_buf *out, struct zetl_errbuf *eb)
{
    struct jw w = {out, false};
    size_t start = out->len;

    for (size_t k = 0; k < s->nkeys; k++)
        if (vals == NULL || vals[s->keys[k]] == NULL)
            return ev_err_key_null(s, s->keys[k], eb);
    jw_raw(&w, "{", 1);
    jw_raw(&w, s->tenant.jkey, s->tenant.jkey_len);
    jw_str(&w, tenant, tenant_len);
    for (size_t k = 0; k < s->nkeys; k++) {
        size_t i = s->keys[k];

        jw_raw(&w, ",", 1);
        jw_raw(&w, s->fields[i].jkey, s->fields[i].jkey_len);
        if (!jw_value(&w, e, s->fields[i].kind, vals[i], lens[i]))
            return ev_err_value(s, i, eb);
    }
    jw_raw(&w, "}", 1);
    return jw_end(&w, s, start, eb);
}

/* An image; `unchanged` (the after image's flags, or NULL) makes those columns null. */
static bool jw_image(struct jw *w, struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                     const struct zetl_ev_change *c, const char *const *vals, const size_t *lens,
                     const unsigned char *unchanged, size_t *bad_col)
{
    if (vals == NULL) {
        JW_LIT(w, "null");
        return true;
    }
    jw_raw(w, "{", 1);
    jw_raw(w, s->tenant.jkey, s->tenant.jkey_len);
    jw_str(w, c->tenant, c->tenant_len);
    for (size_t i = 0; i < s->ncols; i++) {
        jw_raw(w, ",", 1);
        jw_raw(w, s->fields[i].jkey, s->fields[i].jkey_len);
        if (vals[i] == NULL || (unchanged != NULL && unchanged[i])) {
            JW_LIT(w, "null");
        } else if (!jw_value(w, e, s->fields[i].kind, vals[i], lens[i])) {
            *bad_col = i;
            return false;
        }
    }
    jw_raw(w, "}", 1);
    return true;
}

static void jw_source(struct jw *w, const struct zetl_ev_change *c)
{
    const struct zetl_ev_source *src = &c->src;
    char seq[EV_SEQUENCE_MAX];

    JW_LIT(w, "{\"version\":");
    jw_cstr(w, src->version);
    JW_LIT(w, ",\"connector\":\"zetl\",\"name\":");
    jw_cstr(w, src->name);
    JW_LIT(w, ",\"ts_ms\":");
    jw_i64(w, src->ts_ms);
    if (src->snapshot)
        JW_LIT(w, ",\"snapshot\":\"true\",\"db\":");
    else
        JW_LIT(w, ",\"snapshot\":\"false\",\"db\":");
    jw_cstr(w, src->db);
    JW_LIT(w, ",\"sequence\":");
    jw_str(w, seq, ev_sequence(seq, src->lsn));
    JW_LIT(w, ",\"schema\":");
    jw_cstr(w, src->schema);
    JW_LIT(w, ",\"table\":");
    jw_cstr(w, src->table);
    JW_LIT(w, ",\"txId\":");
    if (src->txid < 0)
        JW_LIT(w, "null");
    else
        jw_i64(w, src->txid);
    JW_LIT(w, ",\"lsn\":");
    jw_i64(w, (int64_t)src->lsn);
    JW_LIT(w, ",\"xmin\":null,\"tenant\":");
    jw_str(w, c->tenant, c->tenant_len);
    JW_LIT(w, ",\"seq\":");
    jw_i64(w, src->seq);
    JW_LIT(w, "}");
}

enum zetl_err ev_json_value(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                            const struct zetl_ev_change *c, struct zetl_buf *out,
                            struct zetl_errbuf *eb)
{
    struct jw w = {out, false};
    size_t start = out->len, bad_col = 0;
    bool first = true;

    JW_LIT(&w, "{\"before\":");
    if (!jw_image(&w, e, s, c, c->before, c->before_len, NULL, &bad_col))
        goto bad_value;
    JW_LIT(&w, ",\"after\":");
    if (!jw_image(&w, e, s, c, c->after, c->after_len, c->unchanged, &bad_col))
        goto bad_value;
    JW_LIT(&w, ",\"source\":");
    jw_source(&w, c);
    JW_LIT(&w, ",\"op\":");
    jw_str(&w, &c->op, 1);
    JW_LIT(&w, ",\"ts_ms\":");
    jw_i64(&w, c->ts_ms);
    JW_LIT(&w, ",\"unchanged\":[");
    for (size_t i = 0; c->unchanged != NULL && i < s->ncols; i++) {
        if (!c->unchanged[i])
            continue;
        if (!first)
            jw_raw(&w, ",", 1);
        jw_str(&w, s->fields[i].jname, s->fields[i].jname_len);
        first = false;
    }
    JW_LIT(&w, "]}");
    return jw_end(&w, s, start, eb);

bad_value:
    out->len = start;
    if (out->data != NULL)
        out->data[start] = '\0';
    return ev_err_value(s, bad_col, eb);
}

/* ---- reader ---------------------------------------------------------------- */

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Strict base64 (padded, no blanks) into bytea's "\x<hex>"; NULL when it is not that. */
static const char *jd_base64(struct zetl_ev_decoder *d, const char *s, size_t n, size_t *len)
{
    unsigned char *bytes;
    size_t nb = 0;
    const char *t;

    if (n % 4 != 0)
        return NULL;
    bytes = zetl_arena_alloc(&d->ar, n / 4 * 3 + 1);
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;

        for (int j = 0; j < 4; j++) {
            unsigned char c = (unsigned char)s[i + j];

            /* '=' only as the last one or two characters of the text. */
            if (c == '=' && i + 4 == n && j >= 2 && (j == 3 || s[i + 3] == '=')) {
                v[j] = 0;
                pad++;
            } else if ((v[j] = b64val(c)) < 0 || pad > 0) {
                return NULL;
            }
        }
        bytes[nb++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
        if (pad < 2)
            bytes[nb++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
        if (pad < 1)
            bytes[nb++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
    }
    t = ev_text_bytea(d, bytes, nb, len);
    return t;
}

/* A float column's value: a number, or "NaN" / "Infinity" / "-Infinity". */
static bool jd_float(const json_t *v, double *out)
{
    const char *t = json_string_value(v);

    if (json_is_number(v)) {
        *out = json_number_value(v);
        return true;
    }
    if (t == NULL)
        return false;
    if (strcmp(t, "NaN") == 0)
        *out = NAN;
    else if (strcmp(t, "Infinity") == 0)
        *out = INFINITY;
    else if (strcmp(t, "-Infinity") == 0)
        *out = -INFINITY;
    else
        return false;
    return true;
}

/* One value of kind k as PostgreSQL text in d's arena; NULL when v is not one. */
static const char *jd_value(struct zetl_ev_decoder *d, enum ev_kind k, const json_t *v, size_t *len)
{
    char num[EV_NUM_MAX];
    size_t n;
    double f;
    json_int_t i;

    switch (k) {
    case EV_STRING:
        if (!json_is_string(v))
            return NULL;
        *len = json_string_length(v);
        return ev_text_copy(d, json_string_value(v), *len);
    case EV_BOOL:
        if (!json_is_boolean(v))
            return NULL;
        *len = 1;
        return json_is_true(v) ? "t" : "f";
    case EV_SHORT:
    case EV_INT:
    case EV_LONG:
        if (!json_is_integer(v))
            return NULL;
        i = json_integer_value(v);
        if ((k == EV_SHORT && (i < INT16_MIN || i > INT16_MAX)) ||
            (k == EV_INT && (i < INT32_MIN || i > INT32_MAX)))
            return NULL;
        n = ev_fmt_i64(num, (int64_t)i);
        break;
    case EV_FLOAT:
        if (!jd_float(v, &f))
            return NULL;
        if (isfinite(f)) {
            /* The shortest form of FLT_MAX reads as a double a little above it. */
            if (fabs(f) >= ldexp(1.0, 128) - ldexp(1.0, 103))
                return NULL;
            if (fabs(f) > FLT_MAX)
                f = copysign(FLT_MAX, f);
        }
        n = ev_fmt_float(num, (float)f);
        break;
    case EV_DOUBLE:
        if (!jd_float(v, &f))
            return NULL;
        n = ev_fmt_double(num, f);
        break;
    case EV_BYTES:
        if (!json_is_string(v))
            return NULL;
        return jd_base64(d, json_string_value(v), json_string_length(v), len);
    default:
        return NULL;
    }
    *len = n;
    return ev_text_copy(d, num, n);
}

/* Value object or null into vals; *what names the problem. */
static bool jd_image(struct zetl_ev_decoder *d, const struct zetl_ev_schema *s, const json_t *img,
                     const char **vals, size_t *lens, const json_t **tenant, const char **what)
{
    if (!json_is_object(img) || json_object_size(img) != s->ncols + 1) {
        *what = "an image that is not an object of the tenant and every column";
        return false;
    }
    *tenant = json_object_get(img, s->tenant.jname);
    if (!json_is_string(*tenant)) {
        *what = "an image without the tenant column as a string";
        return false;
    }
    for (size_t i = 0; i < s->ncols; i++) {
        const json_t *v = json_object_get(img, s->fields[i].jname);

        if (v == NULL) {
            *what = "an image without one of the columns";
            return false;
        }
        if (json_is_null(v))
            continue;
        if ((vals[i] = jd_value(d, s->fields[i].kind, v, &lens[i])) == NULL) {
            *what = "a value that is not of its column's type";
            return false;
        }
    }
    return true;
}

static const char *jd_str(struct zetl_ev_decoder *d, const json_t *o, const char *key, bool *ok)
{
    const json_t *v = json_object_get(o, key);

    if (!json_is_string(v)) {
        *ok = false;
        return "";
    }
    return ev_text_copy(d, json_string_value(v), json_string_length(v));
}

/* An integer member, or `dflt` when it is null and nullable. */
static int64_t jd_int(const json_t *o, const char *key, bool nullable, int64_t dflt, bool *ok)
{
    const json_t *v = json_object_get(o, key);

    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (!(nullable && json_is_null(v)))
        *ok = false;
    return dflt;
}

static bool jd_source(struct zetl_ev_decoder *d, const json_t *src, struct zetl_ev_decoded *out)
{
    struct zetl_ev_source *o = &out->src;
    const json_t *tenant = json_object_get(src, "tenant");
    const char *snap;
    int64_t seq;
    bool ok = json_is_object(src) && json_is_string(tenant);

    o->version = jd_str(d, src, "version", &ok);
    o->name = jd_str(d, src, "name", &ok);
    o->db = jd_str(d, src, "db", &ok);
    o->schema = jd_str(d, src, "schema", &ok);
    o->table = jd_str(d, src, "table", &ok);
    snap = jd_str(d, src, "snapshot", &ok);
    o->snapshot = strcmp(snap, "true") == 0;
    if (!o->snapshot && strcmp(snap, "false") != 0)
        ok = false;
    o->ts_ms = jd_int(src, "ts_ms", false, 0, &ok);
    o->txid = jd_int(src, "txId", true, -1, &ok);
    o->lsn = (uint64_t)jd_int(src, "lsn", true, 0, &ok);
    seq = jd_int(src, "seq", false, 0, &ok);
    if (seq < 0 || seq > UINT32_MAX)
        ok = false;
    o->seq = (uint32_t)seq;
    if (ok) {
        out->tenant_len = json_string_length(tenant);
        out->tenant = ev_text_copy(d, json_string_value(tenant), out->tenant_len);
    }
    return ok;
}

static bool jd_unchanged(struct zetl_ev_decoder *d, const struct zetl_ev_schema *s,
                         const json_t *arr)
{
    size_t k;
    const json_t *name;

    if (!json_is_array(arr))
        return false;
    json_array_foreach(arr, k, name)
    {
        size_t i;

        if (!json_is_string(name))
            return false;
        for (i = 0; i < s->ncols; i++)
            if (s->fields[i].jname_len == json_string_length(name) &&
                memcmp(s->fields[i].jname, json_string_value(name), s->fields[i].jname_len) == 0)
                break;
        if (i == s->ncols || d->unchanged[i])
            return false;
        d->unchanged[i] = 1;
    }
    return true;
}

static bool jd_tenant_is(const struct zetl_ev_decoded *out, const json_t *t)
{
    return json_string_length(t) == out->tenant_len &&
           memcmp(json_string_value(t), out->tenant, out->tenant_len) == 0;
}

enum zetl_err ev_json_decode(struct zetl_ev_decoder *d, const struct zetl_ev_schema *s,
                             const void *body, size_t len, struct zetl_ev_decoded *out,
                             struct zetl_errbuf *eb)
{
    json_error_t jerr;
    json_t *root;
    const json_t *before, *after, *op, *bt = NULL, *at = NULL;
    const char *what = NULL;
    bool ok = true;

    memset(out, 0, sizeof(*out));
    ev_decoder_prepare(d, s->ncols);
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "could not decode a JSON event of table \"%s\": %s at offset %d",
                            s->table, jerr.text, jerr.position);
    before = json_object_get(root, "before");
    after = json_object_get(root, "after");
    op = json_object_get(root, "op");
    if (!json_is_object(root) || before == NULL || after == NULL) {
        what = "not an object with \"before\" and \"after\"";
        goto fail;
    }
    out->has_before = !json_is_null(before);
    out->has_after = !json_is_null(after);
    if ((out->has_before && !jd_image(d, s, before, d->before, d->before_len, &bt, &what)) ||
        (out->has_after && !jd_image(d, s, after, d->after, d->after_len, &at, &what)))
        goto fail;
    if (!jd_source(d, json_object_get(root, "source"), out)) {
        what = "no \"source\" object of the members this version writes";
        goto fail;
    }
    if (json_string_length(op) != 1 || strchr("cudtr", json_string_value(op)[0]) == NULL ||
        json_string_value(op)[0] == '\0') {
        what = "\"op\" other than c, u, d, t or r";
        goto fail;
    }
    out->op = json_string_value(op)[0];
    out->ts_ms = jd_int(root, "ts_ms", true, 0, &ok);
    if (!ok) {
        what = "\"ts_ms\" that is not an integer";
        goto fail;
    }
    if (!jd_unchanged(d, s, json_object_get(root, "unchanged"))) {
        what = "\"unchanged\" that is not an array of distinct column names";
        goto fail;
    }
    if ((bt != NULL && !jd_tenant_is(out, bt)) || (at != NULL && !jd_tenant_is(out, at))) {
        what = "the tenant of an image differs from source.tenant";
        goto fail;
    }
    json_decref(root);
    out->before = out->has_before ? d->before : NULL;
    out->before_len = out->has_before ? d->before_len : NULL;
    out->after = out->has_after ? d->after : NULL;
    out->after_len = out->has_after ? d->after_len : NULL;
    out->unchanged = d->unchanged;
    return ZETL_OK;

fail:
    json_decref(root);
    memset(out, 0, sizeof(*out));
    return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "could not decode a JSON event of table \"%s\": %s",
                        s->table, what);
}
