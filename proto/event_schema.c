/*
 * Event schemas: the key and envelope schemas of one topic and column shape
 * as JSON text (jansson), their Parsing Canonical Form and CRC-64-AVRO
 * fingerprint (Avro specification, "Schema Resolution" / "Schema
 * Fingerprints"), checked by avro-c's own parser; and the way back from a
 * registered envelope schema to the columns it was made from.
 *
 * Value schema (keys in this order; Key has the same record properties):
 *   { type: record, name: Envelope, namespace: <ns>, pg.table, zetl.tenant_column,
 *     fields: [
 *       { name: before, type: [null, { type: record, name: Value, pg.table,
 *           zetl.tenant_column, fields: [
 *             { name: <tenant>, type: string, pg.name },
 *             { name: <col>, type: [null, T], default: null, pg.name, pg.type, pg.key }...
 *           ] }], default: null },
 *       { name: after, type: [null, "<ns>.Value"], default: null },
 *       { name: source, type: <io.zetl.Source> },
 *       { name: op, type: string },
 *       { name: ts_ms, type: [null, long], default: null },
 *       { name: unchanged, type: { type: array, items: string }, default: [] } ] }
 */
#include "proto/event_int.h"

#include <avro.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The seven built-in types with an Avro type of their own, by OID and by type text. */
static const struct {
    const char *type;
    uint32_t typoid;
    enum ev_kind kind;
} builtin_types[] = {
    {"bool", 16, EV_BOOL},   {"int2", 21, EV_SHORT},    {"int4", 23, EV_INT},
    {"int8", 20, EV_LONG},   {"float4", 700, EV_FLOAT}, {"float8", 701, EV_DOUBLE},
    {"bytea", 17, EV_BYTES},
};
#define NBUILTIN (sizeof(builtin_types) / sizeof(builtin_types[0]))

static uint32_t builtin_oid(const char *type)
{
    for (size_t i = 0; i < NBUILTIN; i++)
        if (strcmp(type, builtin_types[i].type) == 0)
            return builtin_types[i].typoid;
    return 0;
}

static enum ev_kind col_kind(const struct zetl_ev_col *c)
{
    uint32_t oid = c->typoid != 0 ? c->typoid : builtin_oid(c->type);

    for (size_t i = 0; i < NBUILTIN; i++)
        if (builtin_types[i].typoid == oid)
            return builtin_types[i].kind;
    return EV_STRING;
}

/* ---- names ---------------------------------------------------------------- */

static bool name_char(char c, bool first)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

static bool name_valid(const char *s)
{
    if (!name_char(s[0], true))
        return false;
    for (s++; *s; s++)
        if (!name_char(*s, false))
            return false;
    return true;
}

/*
 * Every character outside [A-Za-z0-9_] becomes one '_' (the bytes of a
 * UTF-8 sequence count once), and a leading digit or an empty name gets a
 * '_' in front.  Returns an owned string.
 */
static char *name_adjust(const char *s)
{
    struct zetl_buf b;
    char *r;

    zetl_buf_init(&b, 0);
    if (s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
        zetl_buf_putc(&b, '_');
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];

        if (name_char(s[i], false))
            zetl_buf_putc(&b, s[i]);
        else if (!((c & 0xC0) == 0x80 && i > 0 && (unsigned char)s[i - 1] >= 0x80))
            zetl_buf_putc(&b, '_');
    }
    r = zetl_strndup(b.data, b.len);
    zetl_buf_release(&b);
    return r;
}

/* Each dotted part adjusted; an owned string. */
static char *ns_adjust(const char *ns)
{
    struct zetl_buf b;
    char *r;

    zetl_buf_init(&b, 0);
    for (const char *p = ns;;) {
        const char *dot = strchr(p, '.');
        char *part = zetl_strndup(p, dot ? (size_t)(dot - p) : strlen(p));
        char *adj = name_adjust(part);

        zetl_buf_puts(&b, adj);
        free(adj);
        free(part);
        if (dot == NULL)
            break;
        zetl_buf_putc(&b, '.');
        p = dot + 1;
    }
    r = zetl_strndup(b.data, b.len);
    zetl_buf_release(&b);
    return r;
}

static bool name_taken(char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (names[i] != NULL && strcmp(names[i], s) == 0)
            return true;
    return false;
}

/*
 * Avro field names for src[0..n): names already valid keep themselves
 * (first come, first served), then the others are adjusted and a clash gets
 * "_<n>" appended, so a valid source name is never renamed by another.
 */
static void names_assign(const char *const *src, size_t n, char **out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = name_valid(src[i]) && !name_taken(out, n, src[i]) ? zetl_strdup(src[i]) : NULL;
    for (size_t i = 0; i < n; i++) {
        char *base, *cand;

        if (out[i] != NULL)
            continue;
        base = name_adjust(src[i]);
        cand = zetl_strdup(base);
        for (unsigned k = 1; name_taken(out, n, cand); k++) {
            size_t len = strlen(base) + 16;

            free(cand);
            cand = zetl_malloc(len);
            snprintf(cand, len, "%s_%u", base, k);
        }
        free(base);
        out[i] = cand;
    }
}

static void field_init(struct ev_field *f, enum ev_kind kind, char *aname, const char *src)
{
    struct zetl_buf b;

    f->kind = kind;
    f->aname = aname;
    f->aname_len = strlen(aname);
    zetl_buf_init(&b, 0);
    ev_utf8_sanitize(&b, src, strlen(src));
    f->jname = zetl_strndup(b.data ? b.data : "", b.len);
    f->jname_len = b.len;
    zetl_buf_reset(&b);
    ev_json_quote(&b, f->jname, f->jname_len);
    zetl_buf_putc(&b, ':');
    f->jkey = zetl_strndup(b.data, b.len);
    f->jkey_len = b.len;
    zetl_buf_release(&b);
}

static void field_release(struct ev_field *f)
{
    free(f->aname);
    free(f->jname);
    free(f->jkey);
}

/* ---- JSON ------------------------------------------------------------------ */

/* A JSON string for a name from the source (U+FFFD for bytes that are not UTF-8). */
static json_t *jstr(const char *s)
{
    struct zetl_buf b;
    json_t *j;

    zetl_buf_init(&b, 0);
    ev_utf8_sanitize(&b, s, strlen(s));
    j = json_stringn(b.data ? b.data : "", b.len);
    zetl_buf_release(&b);
    return j;
}

static json_t *jfield(const char *name, json_t *type, bool default_null)
{
    json_t *f = json_object();

    json_object_set_new(f, "name", json_string(name));
    json_object_set_new(f, "type", type);
    if (default_null)
        json_object_set_new(f, "default", json_null());
    return f;
}

static json_t *jopt(const char *type)
{
    return json_pack("[s, s]", "null", type);
}

static json_t *jrecord(const struct zetl_ev_schema *s, const char *name, const char *ns)
{
    json_t *r = json_object();

    json_object_set_new(r, "type", json_string("record"));
    json_object_set_new(r, "name", json_string(name));
    if (ns != NULL)
        json_object_set_new(r, "namespace", json_string(ns));
    json_object_set_new(r, "pg.table", jstr(s->table));
    json_object_set_new(r, "zetl.tenant_column", jstr(s->tenant_column));
    return r;
}

/* Fields of Key (key columns, not nullable) or of Value (every column, nullable). */
static json_t *jcolumns(const struct zetl_ev_schema *s, bool key)
{
    json_t *fields = json_array(), *tf;

    tf = jfield(s->tenant.aname, json_string("string"), false);
    json_object_set_new(tf, "pg.name", jstr(s->tenant_column));
    json_array_append_new(fields, tf);
    for (size_t i = 0; i < s->ncols; i++) {
        const char *prim = ev_kind_name(s->fields[i].kind);
        json_t *f;

        if (key && !s->cols[i].key)
            continue;
        f = jfield(s->fields[i].aname, key ? json_string(prim) : jopt(prim), !key);
        json_object_set_new(f, "pg.name", jstr(s->cols[i].name));
        json_object_set_new(f, "pg.type", jstr(s->cols[i].type));
        json_object_set_new(f, "pg.key", json_boolean(s->cols[i].key));
        json_array_append_new(fields, f);
    }
    return fields;
}

static json_t *jsource(void)
{
    static const struct {
        const char *name, *type;
        bool opt;
    } src[] = {
        {"version", "string", false}, {"connector", "string", false}, {"name", "string", false},
        {"ts_ms", "long", false},     {"snapshot", "string", false},  {"db", "string", false},
        {"sequence", "string", true}, {"schema", "string", false},    {"table", "string", false},
        {"txId", "long", true},       {"lsn", "long", true},          {"xmin", "long", true},
        {"tenant", "string", false},  {"seq", "long", false},
    };
    json_t *r = json_object(), *fields = json_array();

    json_object_set_new(r, "type", json_string("record"));
    json_object_set_new(r, "name", json_string("Source"));
    json_object_set_new(r, "namespace", json_string("io.zetl"));
    for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++)
        json_array_append_new(
            fields, jfield(src[i].name, src[i].opt ? jopt(src[i].type) : json_string(src[i].type),
                           src[i].opt));
    json_object_set_new(r, "fields", fields);
    return r;
}

static json_t *jkey_schema(const struct zetl_ev_schema *s)
{
    json_t *r = jrecord(s, "Key", s->ns);

    json_object_set_new(r, "fields", jcolumns(s, true));
    return r;
}

static json_t *jvalue_schema(const struct zetl_ev_schema *s)
{
    json_t *env = jrecord(s, "Envelope", s->ns), *value = jrecord(s, "Value", NULL);
    json_t *fields = json_array(), *unchanged, *f;
    struct zetl_buf ref;

    zetl_buf_init(&ref, 0);
    zetl_buf_printf(&ref, "%s.Value", s->ns);
    json_object_set_new(value, "fields", jcolumns(s, false));
    /* Value is defined once, in `before`; `after` names it. */
    json_array_append_new(fields, jfield("before", json_pack("[s, o]", "null", value), true));
    json_array_append_new(fields, jfield("after", jopt(ref.data), true));
    json_array_append_new(fields, jfield("source", jsource(), false));
    json_array_append_new(fields, jfield("op", json_string("string"), false));
    json_array_append_new(fields, jfield("ts_ms", jopt("long"), true));
    f = jfield("unchanged", json_pack("{s:s, s:s}", "type", "array", "items", "string"), false);
    unchanged = json_array();
    json_object_set_new(f, "default", unchanged);
    json_array_append_new(fields, f);
    json_object_set_new(env, "fields", fields);
    zetl_buf_release(&ref);
    return env;
}

/* ---- Parsing Canonical Form ------------------------------------------------ */

static bool pcf_primitive(const char *t)
{
    static const char *const prims[] = {"null",  "boolean", "int",   "long",
                                        "float", "double",  "bytes", "string"};

    for (size_t i = 0; i < sizeof(prims) / sizeof(prims[0]); i++)
        if (strcmp(t, prims[i]) == 0)
            return true;
    return false;
}

/* [STRINGS]: UTF-8 as is; only what JSON requires is escaped. */
static void pcf_str(struct zetl_buf *b, const char *s)
{
    zetl_buf_putc(b, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            zetl_buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            zetl_buf_printf(b, "\\u%04x", c);
        else
            zetl_buf_putc(b, (char)c);
    }
    zetl_buf_putc(b, '"');
}

/* [FULLNAMES]: a dotted name is full; else the explicit namespace, else the enclosing one. */
static char *pcf_fullname(const char *name, const char *explicit_ns, const char *enclosing)
{
    const char *ns = explicit_ns != NULL ? explicit_ns : enclosing;
    struct zetl_buf b;
    char *r;

    if (strchr(name, '.') != NULL || ns == NULL || ns[0] == '\0')
        return zetl_strdup(name);
    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "%s.%s", ns, name);
    r = zetl_strndup(b.data, b.len);
    zetl_buf_release(&b);
    return r;
}

static bool pcf_write(const json_t *sch, const char *ns, struct zetl_buf *b, int depth);

static bool pcf_named(const json_t *sch, const char *type, const char *ns, struct zetl_buf *b,
                      int depth)
{
    const json_t *name = json_object_get(sch, "name"), *jns = json_object_get(sch, "namespace");
    const char *dot;
    char *full, *inner;
    bool ok = true;

    if (!json_is_string(name) || (jns != NULL && !json_is_string(jns)))
        return false;
    full = pcf_fullname(json_string_value(name), jns ? json_string_value(jns) : NULL, ns);
    /* Names inside take the namespace of this full name. */
    dot = strrchr(full, '.');
    inner = zetl_strndup(full, dot ? (size_t)(dot - full) : 0);
    zetl_buf_puts(b, "{\"name\":");
    pcf_str(b, full);
    zetl_buf_puts(b, ",\"type\":");
    pcf_str(b, type);
    if (strcmp(type, "record") == 0 || strcmp(type, "error") == 0) {
        const json_t *fields = json_object_get(sch, "fields");
        size_t i;
        const json_t *f;

        ok = json_is_array(fields);
        zetl_buf_puts(b, ",\"fields\":[");
        json_array_foreach(fields, i, f)
        {
            const json_t *fname = json_object_get(f, "name"), *ftype = json_object_get(f, "type");

            if (!ok || !json_is_string(fname) || ftype == NULL) {
                ok = false;
                break;
            }
            zetl_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
            pcf_str(b, json_string_value(fname));
            zetl_buf_puts(b, ",\"type\":");
            ok = pcf_write(ftype, inner, b, depth + 1);
            zetl_buf_putc(b, '}');
        }
        zetl_buf_putc(b, ']');
    } else if (strcmp(type, "enum") == 0) {
        const json_t *syms = json_object_get(sch, "symbols"), *sym;
        size_t i;

        ok = json_is_array(syms);
        zetl_buf_puts(b, ",\"symbols\":[");
        json_array_foreach(syms, i, sym)
        {
            if (!ok || !json_is_string(sym)) {
                ok = false;
                break;
            }
            if (i)
                zetl_buf_putc(b, ',');
            pcf_str(b, json_string_value(sym));
        }
        zetl_buf_putc(b, ']');
    } else {
        const json_t *size = json_object_get(sch, "size");

        /* [INTEGERS]: no quotes, no leading zeros. */
        ok = json_is_integer(size) && json_integer_value(size) >= 0;
        if (ok)
            zetl_buf_printf(b, ",\"size\":%lld", (long long)json_integer_value(size));
    }
    zetl_buf_putc(b, '}');
    free(inner);
    free(full);
    return ok;
}

/* [PRIMITIVES] [FULLNAMES] [STRIP] [ORDER] [STRINGS] [INTEGERS] [WHITESPACE]. */
static bool pcf_write(const json_t *sch, const char *ns, struct zetl_buf *b, int depth)
{
    /* Our schemas nest four deep; a deeper one is not ours (and could exhaust the stack). */
    if (depth > 64)
        return false;
    if (json_is_string(sch)) {
        const char *t = json_string_value(sch);
        char *full;

        if (pcf_primitive(t)) {
            pcf_str(b, t);
            return true;
        }
        full = pcf_fullname(t, NULL, ns);
        pcf_str(b, full);
        free(full);
        return true;
    }
    if (json_is_array(sch)) {
        size_t i;
        const json_t *branch;

        zetl_buf_putc(b, '[');
        json_array_foreach(sch, i, branch)
        {
            if (i)
                zetl_buf_putc(b, ',');
            if (!pcf_write(branch, ns, b, depth + 1))
                return false;
        }
        zetl_buf_putc(b, ']');
        return true;
    }
    if (json_is_object(sch)) {
        const json_t *jt = json_object_get(sch, "type");
        const char *t;

        if (!json_is_string(jt))
            return false;
        t = json_string_value(jt);
        if (pcf_primitive(t)) {
            pcf_str(b, t);
            return true;
        }
        if (strcmp(t, "record") == 0 || strcmp(t, "error") == 0 || strcmp(t, "enum") == 0 ||
            strcmp(t, "fixed") == 0)
            return pcf_named(sch, t, ns, b, depth);
        if (strcmp(t, "array") == 0 || strcmp(t, "map") == 0) {
            bool arr = strcmp(t, "array") == 0;
            const json_t *inner = json_object_get(sch, arr ? "items" : "values");
            bool ok;

            if (inner == NULL)
                return false;
            zetl_buf_puts(b,
                          arr ? "{\"type\":\"array\",\"items\":" : "{\"type\":\"map\",\"values\":");
            ok = pcf_write(inner, ns, b, depth + 1);
            zetl_buf_putc(b, '}');
            return ok;
        }
        /* {"type": "<a named type>"} is a reference to it. */
        return pcf_write(jt, ns, b, depth + 1);
    }
    return false;
}

/* An owned canonical form, or NULL when sch is not a schema this writer understands. */
static char *pcf(const json_t *sch)
{
    struct zetl_buf b;
    char *r = NULL;

    zetl_buf_init(&b, 0);
    if (pcf_write(sch, NULL, &b, 0))
        r = zetl_strndup(b.data, b.len);
    zetl_buf_release(&b);
    return r;
}

uint64_t zetl_ev_crc64_avro(const void *p, size_t n)
{
    const uint64_t empty = 0xc15d213aa4d7a795ULL;
    const unsigned char *u = p;
    uint64_t table[256], fp = empty;

    /* Schemas are fingerprinted once each; a table on the stack keeps this thread-safe. */
    for (unsigned i = 0; i < 256; i++) {
        uint64_t x = i;

        for (int j = 0; j < 8; j++)
            x = (x >> 1) ^ (empty & (0 - (x & 1)));
        table[i] = x;
    }
    for (size_t i = 0; i < n; i++)
        fp = (fp >> 8) ^ table[(fp ^ u[i]) & 0xff];
    return fp;
}

/* ---- building -------------------------------------------------------------- */

void zetl_ev_schema_free(struct zetl_ev_schema *s)
{
    if (s == NULL)
        return;
    for (int p = 0; p < 2; p++) {
        free(s->json[p]);
        free(s->canon[p]);
    }
    for (size_t i = 0; i < s->ncols; i++) {
        free((char *)s->cols[i].name);
        free((char *)s->cols[i].type);
        if (s->fields != NULL)
            field_release(&s->fields[i]);
    }
    field_release(&s->tenant);
    free(s->keys);
    free(s->fields);
    free(s->cols);
    free(s->tenant_column);
    free(s->table);
    free(s->ns);
    free(s);
}

/* JSON text, canonical form and fingerprint of one part, checked by avro-c's parser. */
static enum zetl_err schema_part(struct zetl_ev_schema *s, enum zetl_ev_part part, json_t *root,
                                 struct zetl_errbuf *eb)
{
    avro_schema_t as = NULL;

    s->json[part] = json_dumps(root, JSON_COMPACT);
    s->canon[part] = pcf(root);
    if (s->json[part] == NULL || s->canon[part] == NULL)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not write the %s schema of table \"%s\"",
                            part == ZETL_EV_KEY ? "key" : "value", s->table);
    s->fp[part] = zetl_ev_crc64_avro(s->canon[part], strlen(s->canon[part]));
    if (avro_schema_from_json_length(s->json[part], strlen(s->json[part]), &as) != 0)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "avro-c refused the %s schema of table \"%s\": %s",
                            part == ZETL_EV_KEY ? "key" : "value", s->table, avro_strerror());
    avro_schema_decref(as);
    return ZETL_OK;
}

enum zetl_err zetl_ev_schema_new(const char *ns, const char *table, const char *tenant_column,
                                 const struct zetl_ev_col *cols, size_t ncols,
                                 struct zetl_ev_schema **out, struct zetl_errbuf *eb)
{
    struct zetl_ev_schema *s;
    const char **src = NULL;
    char **anames = NULL;
    json_t *key = NULL, *value = NULL;
    enum zetl_err err;

    *out = NULL;
    if (ncols == 0)
        return zetl_err_set(eb, ZETL_ERR_USAGE, "table \"%s\" has no columns for an event schema",
                            table);
    for (size_t i = 0; i < ncols; i++)
        if (strcmp(cols[i].name, tenant_column) == 0)
            return zetl_err_set(eb, ZETL_ERR_USAGE,
                                "table \"%s\" has a column \"%s\", the name of the tenant column",
                                table, tenant_column);
    s = zetl_calloc(1, sizeof(*s));
    s->ns = ns_adjust(ns);
    s->table = zetl_strdup(table);
    s->tenant_column = zetl_strdup(tenant_column);
    s->ncols = ncols;
    s->cols = zetl_calloc(ncols, sizeof(*s->cols));
    s->fields = zetl_calloc(ncols, sizeof(*s->fields));
    s->keys = zetl_calloc(ncols, sizeof(*s->keys));
    src = zetl_calloc(ncols + 1, sizeof(*src));
    anames = zetl_calloc(ncols + 1, sizeof(*anames));
    src[0] = tenant_column;
    for (size_t i = 0; i < ncols; i++) {
        s->cols[i].name = zetl_strdup(cols[i].name);
        s->cols[i].type = zetl_strdup(cols[i].type);
        s->cols[i].typoid = cols[i].typoid;
        s->cols[i].key = cols[i].key;
        if (cols[i].key)
            s->keys[s->nkeys++] = i;
        src[i + 1] = cols[i].name;
    }
    names_assign(src, ncols + 1, anames);
    field_init(&s->tenant, EV_STRING, anames[0], tenant_column);
    for (size_t i = 0; i < ncols; i++)
        field_init(&s->fields[i], col_kind(&cols[i]), anames[i + 1], cols[i].name);

    key = jkey_schema(s);
    value = jvalue_schema(s);
    if ((err = schema_part(s, ZETL_EV_KEY, key, eb)) != ZETL_OK ||
        (err = schema_part(s, ZETL_EV_VALUE, value, eb)) != ZETL_OK)
        goto fail;
    json_decref(value);
    json_decref(key);
    free(anames);
    free(src);
    *out = s;
    return ZETL_OK;

fail:
    json_decref(value);
    json_decref(key);
    free(anames);
    free(src);
    zetl_ev_schema_free(s);
    return err;
}

/* ---- reading back ---------------------------------------------------------- */

static const char *jget_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The Value record inside `before`: [null, {record}]. */
static const json_t *parse_value_record(const json_t *env)
{
    const json_t *fields = json_object_get(env, "fields"), *before, *type, *rec;

    before = json_array_get(fields, 0);
    if (!json_is_string(json_object_get(before, "name")) ||
        strcmp(jget_str(before, "name"), "before") != 0)
        return NULL;
    type = json_object_get(before, "type");
    rec = json_array_get(type, 1);
    if (json_array_size(type) != 2 || !json_is_object(rec) ||
        !json_is_array(json_object_get(rec, "fields")))
        return NULL;
    return rec;
}

/* The column of one Value field; its strings are borrowed from the JSON. */
static bool parse_col(const json_t *f, struct zetl_ev_col *col)
{
    const json_t *type = json_object_get(f, "type"), *key = json_object_get(f, "pg.key");

    col->name = jget_str(f, "pg.name");
    col->type = jget_str(f, "pg.type");
    if (col->name == NULL || col->type == NULL || !json_is_boolean(key) ||
        json_array_size(type) != 2 || !json_is_string(json_array_get(type, 1)))
        return false;
    col->key = json_is_true(key);
    /* The Avro type follows from the type text; the canonical form check below holds it to that. */
    col->typoid = builtin_oid(col->type);
    return true;
}

enum zetl_err zetl_ev_schema_parse(const char *json, size_t len, struct zetl_ev_schema **out,
                                   struct zetl_errbuf *eb)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    const json_t *value, *vfields;
    const char *name, *jns, *table, *tenant, *what = NULL, *dot;
    struct zetl_ev_col *cols = NULL;
    size_t ncols = 0;
    char *ns = NULL, *canon = NULL;
    enum zetl_err err = ZETL_ERR_PROTOCOL;

    *out = NULL;
    if (root == NULL)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "could not read event schema: %s", jerr.text);
    name = jget_str(root, "name");
    jns = jget_str(root, "namespace");
    table = jget_str(root, "pg.table");
    tenant = jget_str(root, "zetl.tenant_column");
    if (!json_is_object(root) || name == NULL) {
        what = "not a named record";
        goto fail;
    }
    if (table == NULL || tenant == NULL) {
        what = table == NULL ? "no \"pg.table\" property" : "no \"zetl.tenant_column\" property";
        goto fail;
    }
    /* The namespace is the one the writer was given (already adjusted). */
    dot = strrchr(name, '.');
    if (strcmp(dot ? dot + 1 : name, "Envelope") != 0 || (dot == NULL && jns == NULL)) {
        what = "not a <namespace>.Envelope record";
        goto fail;
    }
    ns = dot ? zetl_strndup(name, (size_t)(dot - name)) : zetl_strdup(jns);
    if ((value = parse_value_record(root)) == NULL) {
        what = "no Value record in \"before\"";
        goto fail;
    }
    vfields = json_object_get(value, "fields");
    if (json_array_size(vfields) < 2 ||
        !json_is_string(json_object_get(json_array_get(vfields, 0), "pg.name")) ||
        strcmp(jget_str(json_array_get(vfields, 0), "pg.name"), tenant) != 0) {
        what = "Value does not start with the tenant column and hold columns after it";
        goto fail;
    }
    ncols = json_array_size(vfields) - 1;
    cols = zetl_calloc(ncols, sizeof(*cols));
    for (size_t i = 0; i < ncols; i++) {
        if (!parse_col(json_array_get(vfields, i + 1), &cols[i])) {
            what = "a column without \"pg.name\", \"pg.type\", \"pg.key\" or a [null, T] type";
            goto fail;
        }
    }
    if (zetl_ev_schema_new(ns, table, tenant, cols, ncols, out, eb) != ZETL_OK) {
        err = ZETL_ERR_PROTOCOL;
        zetl_err_prefix(eb, "could not read event schema of table \"%s\"", table);
        goto done;
    }
    /*
     * The decoders read the layout this version writes, so the schema must be
     * exactly that layout for its columns: same canonical form.
     */
    canon = pcf(root);
    if (canon == NULL || strcmp(canon, (*out)->canon[ZETL_EV_VALUE]) != 0) {
        zetl_ev_schema_free(*out);
        *out = NULL;
        what = "not the envelope this version writes for its columns (canonical forms differ)";
        goto fail;
    }
    err = ZETL_OK;
    goto done;

fail:
    zetl_err_set(eb, ZETL_ERR_PROTOCOL, "could not read event schema%s%s%s: %s",
                 table ? " of table \"" : "", table ? table : "", table ? "\"" : "", what);
done:
    free(canon);
    free(cols);
    free(ns);
    json_decref(root);
    return err;
}

/* ---- accessors ------------------------------------------------------------- */

const char *zetl_ev_schema_table(const struct zetl_ev_schema *s)
{
    return s->table;
}

const char *zetl_ev_schema_tenant_column(const struct zetl_ev_schema *s)
{
    return s->tenant_column;
}

size_t zetl_ev_schema_ncols(const struct zetl_ev_schema *s)
{
    return s->ncols;
}

const struct zetl_ev_col *zetl_ev_schema_col(const struct zetl_ev_schema *s, size_t i)
{
    return i < s->ncols ? &s->cols[i] : NULL;
}

bool zetl_ev_schema_keyed(const struct zetl_ev_schema *s)
{
    return s->nkeys > 0;
}

const char *zetl_ev_schema_json(const struct zetl_ev_schema *s, enum zetl_ev_part part)
{
    return s->json[part == ZETL_EV_KEY ? ZETL_EV_KEY : ZETL_EV_VALUE];
}

const char *zetl_ev_schema_canonical(const struct zetl_ev_schema *s, enum zetl_ev_part part)
{
    return s->canon[part == ZETL_EV_KEY ? ZETL_EV_KEY : ZETL_EV_VALUE];
}

uint64_t zetl_ev_schema_fingerprint(const struct zetl_ev_schema *s, enum zetl_ev_part part)
{
    return s->fp[part == ZETL_EV_KEY ? ZETL_EV_KEY : ZETL_EV_VALUE];
}
