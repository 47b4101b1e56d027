/*
 * Unit tests of proto/event*.c: schema JSON for hostile names, canonical
 * forms and fingerprints against known values, encode -> decode round trips
 * of every type in both formats, the Avro bytes compared with avro-c's own
 * encoding of the same values, malformed input refused cleanly (every cut,
 * bad unions, huge lengths, random damage), key and value errors, framing,
 * and tests/unit/event_check.py: python3-avro (an independent reader) decodes
 * what the encoder wrote, with the schema JSON it wrote.  Prints the encoding
 * rate of a narrow row (avro-c's generic values vs ours), never asserts it.
 */
#include "proto/event.h"
#include "tests/unit/tap.h"

#include "common/buf.h"
#include "common/mem.h"

#include <avro.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NTYPES 14

/* Every Avro type, hostile names, a name that adjusts like another, typoid 0 (by type text). */
static const struct zetl_ev_col type_cols[NTYPES] = {
    {"id", "int8", 20, true},
    {"we\"ird col", "text", 25, true},
    {"b", "bool", 16, false},
    {"i2", "int2", 21, false},
    {"i4", "int4", 23, false},
    {"f4", "float4", 700, false},
    {"f8", "float8", 701, false},
    {"by", "bytea", 17, false},
    {"1abc", "numeric(30,2)", 1700, false},
    {"émoji 😀", "text", 25, false},
    {"a b", "jsonb", 3802, false},
    {"a-b", "int4", 0, false},
    {"t", "timestamptz", 1184, false},
    {"big", "text", 25, false},
};

/* Rows in PostgreSQL text form (NULL: SQL NULL); `out` where the decoded text differs. */
struct row {
    const char *in[NTYPES];
    const char *out[NTYPES];
};

static const struct row rows[] = {
    {{"1", "hello", "t", "-32768", "-2147483648", "NaN", "Infinity", "\\x00ff00", "123.45",
      "ünïcödé 😀", "{\"a\": [1, 2]}", "2147483647", "2024-01-02 03:04:05.123456+00", "x"},
     {NULL}},
    {{"-9223372036854775808", "", "f", "32767", "2147483647", "-Infinity", "-Infinity", "\\x",
      "-0.01", "", "null", "-1", "infinity", NULL},
     {NULL}},
    {{"9223372036854775807", "NULL", NULL, NULL, "0", "3.4028235e+38", "1.7976931348623157e+308",
      "\\xDEADbeef", NULL,
      "quote\" back\\slash\nnewline\ttab\x01"
      "ctl\r",
      NULL, NULL, NULL, NULL},
     {[7] = "\\xdeadbeef"}},
    {{"42", "tab\there", "t", "0", "0", "-0", "5e-324", "\\x0a1b", "0", "😀", "[]", "0", "-infinity",
      "yyy"},
     {NULL}},
    {{"7", "x", "f", "1", "-1", "1e-45", "0.1", "\\x00", "1e+30", "a,b", "\"s\"", "5", "2000-01-01",
      "z"},
     {NULL}},
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

static size_t lens_of(const char *const *vals, size_t *lens)
{
    for (size_t i = 0; i < NTYPES; i++)
        lens[i] = vals[i] ? strlen(vals[i]) : 0;
    return NTYPES;
}

/* The test's own idea of the Avro type: 'b' 'i' 'l' 'f' 'd' 'y' (bytes) 's'. */
static char test_kind(const struct zetl_ev_col *c)
{
    static const struct {
        const char *type;
        uint32_t oid;
        char kind;
    } k[] = {{"bool", 16, 'b'},    {"int2", 21, 'i'},    {"int4", 23, 'i'}, {"int8", 20, 'l'},
             {"float4", 700, 'f'}, {"float8", 701, 'd'}, {"bytea", 17, 'y'}};

    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
        if (c->typoid == k[i].oid || (c->typoid == 0 && strcmp(c->type, k[i].type) == 0))
            return k[i].kind;
    return 's';
}

static struct zetl_ev_schema *types_schema(void)
{
    struct zetl_ev_schema *s = NULL;
    struct zetl_errbuf eb = {""};

    if (zetl_ev_schema_new("zetl.types", "types", "tenant_id", type_cols, NTYPES, &s, &eb) !=
        ZETL_OK)
        fprintf(stderr, "  %s\n", eb.msg);
    return s;
}

/* ---- changes --------------------------------------------------------------- */

struct tchange {
    struct zetl_ev_change c;
    size_t blen[NTYPES], alen[NTYPES];
    unsigned char unch[NTYPES];
    const struct row *brow, *arow;
};

static void tchange_init(struct tchange *t, char op, const struct row *before,
                         const struct row *after, const char *tenant)
{
    memset(t, 0, sizeof(*t));
    t->brow = before;
    t->arow = after;
    t->c.op = op;
    t->c.tenant = tenant;
    t->c.tenant_len = strlen(tenant);
    if (before) {
        t->c.before = before->in;
        lens_of(before->in, t->blen);
        t->c.before_len = t->blen;
    }
    if (after) {
        t->c.after = after->in;
        lens_of(after->in, t->alen);
        t->c.after_len = t->alen;
    }
    t->c.src.version = "0.1.0";
    t->c.src.name = "zetl_0";
    t->c.src.db = "app";
    t->c.src.schema = tenant;
    t->c.src.table = "types";
    t->c.src.ts_ms = 1700000000123;
    t->c.src.lsn = UINT64_C(0x16B374D848);
    t->c.src.txid = 7777;
    t->c.src.seq = 3;
    t->c.ts_ms = 1700000000456;
}

/* The changes every round trip runs: each op, NULLs, unchanged TOAST values. */
static size_t make_changes(struct tchange *t)
{
    size_t n = 0;

    tchange_init(&t[n++], 'c', NULL, &rows[0], "tenant_a");
    tchange_init(&t[n++], 'c', NULL, &rows[1], "a\"; drop table x; --");
    tchange_init(&t[n], 'u', &rows[0], &rows[2], "tenant_a");
    t[n].unch[13] = 1; /* big: unchanged TOAST (its entry is NULL) */
    t[n].unch[10] = 1;
    t[n].c.unchanged = t[n].unch;
    n++;
    tchange_init(&t[n++], 'u', &rows[3], &rows[4], "tenant_b");
    tchange_init(&t[n++], 'd', &rows[1], NULL, "tenant_a");
    tchange_init(&t[n], 't', NULL, NULL, "tenant_a");
    t[n++].c.src.txid = -1;
    tchange_init(&t[n], 'r', NULL, &rows[3], "");
    t[n].c.src.snapshot = true;
    t[n].c.src.ts_ms = -1;
    t[n++].c.src.seq = UINT32_MAX;
    return n;
}

static bool float_same(char kind, const char *a, const char *b)
{
    if (kind == 'f') {
        float x = strtof(a, NULL), y = strtof(b, NULL);
        return (isnan(x) && isnan(y)) || memcmp(&x, &y, sizeof(x)) == 0;
    }
    double x = strtod(a, NULL), y = strtod(b, NULL);
    return (isnan(x) && isnan(y)) || memcmp(&x, &y, sizeof(x)) == 0;
}

static bool image_equal(const struct zetl_ev_schema *s, const struct row *r,
                        const unsigned char *unch, const char *const *vals, const size_t *lens)
{
    for (size_t i = 0; i < NTYPES; i++) {
        const char *want = r->in[i] == NULL || (unch && unch[i]) ? NULL
                           : r->out[i] != NULL                   ? r->out[i]
                                                                 : r->in[i];
        char kind = test_kind(zetl_ev_schema_col(s, i));

        if ((want == NULL) != (vals[i] == NULL)) {
            fprintf(stderr, "  column %zu: NULL mismatch\n", i);
            return false;
        }
        if (want == NULL)
            continue;
        if (strlen(vals[i]) != lens[i] ||
            ((kind == 'f' || kind == 'd')
                 ? !float_same(kind, want, vals[i])
                 : strlen(want) != lens[i] || memcmp(want, vals[i], lens[i]) != 0)) {
            fprintf(stderr, "  column %zu: got [%s] want [%s]\n", i, vals[i], want);
            return false;
        }
    }
    return true;
}

static bool decoded_equal(const struct zetl_ev_schema *s, const struct tchange *t,
                          const struct zetl_ev_decoded *d)
{
    const struct zetl_ev_change *c = &t->c;
    bool ok = d->op == c->op && d->tenant_len == c->tenant_len &&
              memcmp(d->tenant, c->tenant, c->tenant_len) == 0 &&
              d->has_before == (c->before != NULL) && d->has_after == (c->after != NULL) &&
              d->ts_ms == c->ts_ms && strcmp(d->src.version, c->src.version) == 0 &&
              strcmp(d->src.name, c->src.name) == 0 && strcmp(d->src.db, c->src.db) == 0 &&
              strcmp(d->src.schema, c->src.schema) == 0 &&
              strcmp(d->src.table, c->src.table) == 0 && d->src.ts_ms == c->src.ts_ms &&
              d->src.lsn == c->src.lsn && d->src.txid == c->src.txid && d->src.seq == c->src.seq &&
              d->src.snapshot == c->src.snapshot;

    if (!ok)
        fprintf(stderr, "  envelope fields differ (op %c)\n", c->op);
    if (ok && c->before)
        ok = image_equal(s, t->brow, NULL, d->before, d->before_len);
    if (ok && c->after)
        ok = image_equal(s, t->arow, c->unchanged, d->after, d->after_len);
    for (size_t i = 0; ok && i < NTYPES; i++)
        ok = (d->unchanged[i] != 0) == (c->unchanged != NULL && c->unchanged[i] != 0);
    return ok;
}

/* The key of a change: from its after image, else its before image. */
static const char *const *key_vals(const struct tchange *t, const size_t **lens)
{
    *lens = t->c.after ? t->alen : t->blen;
    return t->c.after ? t->c.after : t->c.before;
}

/* ---- schema ---------------------------------------------------------------- */

static const json_t *value_fields(const json_t *env)
{
    const json_t *before = json_array_get(json_object_get(env, "fields"), 0);

    return json_object_get(json_array_get(json_object_get(before, "type"), 1), "fields");
}

static void test_schema_names(void)
{
    static const struct zetl_ev_col cols[] = {
        {"a b", "text", 25, false},         {"a-b", "text", 25, false},
        {"a_b_1", "int4", 23, true},        {"1abc", "int8", 20, false},
        {"tenant id", "text", 0, false},    {"café", "bool", 16, false},
        {"名前", "text", 0, false},         {"x\xff", "text", 0, false},
        {"we\"ird col", "bytea", 0, false}, {"", "text", 0, false},
    };
    static const char *const want[] = {"tenant_id", "a_b",         "a_b_2", "a_b_1",
                                       "_1abc",     "tenant_id_1", "caf_",  "__",
                                       "x_",        "we_ird_col",  "_"};
    struct zetl_ev_schema *s = NULL;
    struct zetl_errbuf eb = {""};
    json_t *env, *key;
    const json_t *fields;

    CHECK(zetl_ev_schema_new("zetl.my table.1x", "my table", "tenant_id", cols,
                             sizeof(cols) / sizeof(cols[0]), &s, &eb) == ZETL_OK);
    if (s == NULL) {
        fprintf(stderr, "  %s\n", eb.msg);
        return;
    }
    env = json_loads(zetl_ev_schema_json(s, ZETL_EV_VALUE), 0, NULL);
    key = json_loads(zetl_ev_schema_json(s, ZETL_EV_KEY), 0, NULL);
    CHECK(env != NULL && key != NULL);
    CHECK_STR(json_string_value(json_object_get(env, "namespace")), "zetl.my_table._1x");
    CHECK_STR(json_string_value(json_object_get(env, "name")), "Envelope");
    CHECK_STR(json_string_value(json_object_get(env, "pg.table")), "my table");
    CHECK_STR(json_string_value(json_object_get(env, "zetl.tenant_column")), "tenant_id");
    fields = value_fields(env);
    CHECK(json_array_size(fields) == 11);
    for (size_t i = 0; i < json_array_size(fields) && i < 11; i++) {
        const json_t *f = json_array_get(fields, i);

        CHECK_STR(json_string_value(json_object_get(f, "name")), want[i]);
        /* The source name always, even when it needs no adjusting. */
        if (i > 0 && strcmp(cols[i - 1].name, "x\xff") != 0)
            CHECK_STR(json_string_value(json_object_get(f, "pg.name")), cols[i - 1].name);
    }
    CHECK_STR(json_string_value(json_object_get(json_array_get(fields, 8), "pg.name")),
              "x\xEF\xBF\xBD");
    CHECK_STR(json_string_value(json_object_get(json_array_get(fields, 0), "pg.name")),
              "tenant_id");
    CHECK_STR(
        json_string_value(json_array_get(json_object_get(json_array_get(fields, 6), "type"), 1)),
        "boolean");
    CHECK(json_is_true(json_object_get(json_array_get(fields, 3), "pg.key")));
    CHECK(json_is_false(json_object_get(json_array_get(fields, 1), "pg.key")));
    /* Key: the tenant and the key column, not nullable. */
    CHECK(json_array_size(json_object_get(key, "fields")) == 2);
    CHECK_STR(json_string_value(
                  json_object_get(json_array_get(json_object_get(key, "fields"), 1), "type")),
              "int");
    CHECK_STR(json_string_value(json_object_get(key, "name")), "Key");
    CHECK(zetl_ev_schema_keyed(s));
    json_decref(env);
    json_decref(key);
    zetl_ev_schema_free(s);

    /* Usage errors. */
    s = NULL;
    CHECK(zetl_ev_schema_new("zetl.x", "x", "tenant_id", cols, 0, &s, &eb) == ZETL_ERR_USAGE);
    CHECK(s == NULL);
    {
        struct zetl_ev_col clash[] = {{"id", "int4", 23, true}, {"tenant_id", "text", 25, false}};

        CHECK(zetl_ev_schema_new("zetl.x", "x", "tenant_id", clash, 2, &s, &eb) == ZETL_ERR_USAGE);
        CHECK(strstr(eb.msg, "tenant_id") != NULL);
        CHECK(zetl_ev_schema_new("zetl.x", "x", "tenant_id", clash, 1, &s, &eb) == ZETL_OK);
        CHECK(zetl_ev_schema_keyed(s));
        zetl_ev_schema_free(s);
        clash[0].key = false;
        CHECK(zetl_ev_schema_new("zetl.x", "x", "tenant_id", clash, 1, &s, &eb) == ZETL_OK);
        CHECK(!zetl_ev_schema_keyed(s));
        zetl_ev_schema_free(s);
    }
    zetl_ev_schema_free(NULL);
}

/*
 * Known values: CRC-64-AVRO of canonical forms from the Avro project's
 * share/test/data/schema-tests.txt (fingerprints there are signed decimals),
 * and the canonical form and fingerprint of a small event schema computed
 * with Debian's python3-avro 1.11.1 (avro.schema.parse(json).canonical_form)
 * and the specification's CRC-64-AVRO written in Python (as in
 * tests/unit/event_check.py).
 */
static void test_canonical(void)
{
    static const struct {
        const char *canon;
        int64_t fp;
    } known[] = {
        {"\"null\"", INT64_C(7195948357588979594)},
        {"\"int\"", INT64_C(8247732601305521295)},
        {"\"string\"", INT64_C(-8142146995180207161)},
        {"[\"int\",\"boolean\"]", INT64_C(5392556393470105090)},
        {"{\"name\":\"x.y.foo\",\"type\":\"record\",\"fields\":[]}", INT64_C(5916914534497305771)},
        {"{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"},"
         "{\"name\":\"f2\",\"type\":\"int\"}]}",
         INT64_C(-4860222112080293046)},
        {"{\"name\":\"PigValue\",\"type\":\"record\",\"fields\":[{\"name\":\"value\",\"type\":"
         "[\"null\",\"int\",\"long\",\"PigValue\"]}]}",
         INT64_C(-1759257747318642341)},
    };
    static const struct zetl_ev_col cols[] = {{"id", "int8", 20, true},
                                              {"name", "text", 25, false}};
    static const char key_canon[] =
        "{\"name\":\"zetl.users.Key\",\"type\":\"record\",\"fields\":[{\"name\":\"tenant_id\","
        "\"type\":\"string\"},{\"name\":\"id\",\"type\":\"long\"}]}";
    static const char value_canon[] =
        "{\"name\":\"zetl.users.Envelope\",\"type\":\"record\",\"fields\":[{\"name\":\"before\","
        "\"type\":[\"null\",{\"name\":\"zetl.users.Value\",\"type\":\"record\",\"fields\":[{"
        "\"name\":\"tenant_id\",\"type\":\"string\"},{\"name\":\"id\",\"type\":[\"null\","
        "\"long\"]},{\"name\":\"name\",\"type\":[\"null\",\"string\"]}]}]},{\"name\":\"after\","
        "\"type\":[\"null\",\"zetl.users.Value\"]},{\"name\":\"source\",\"type\":{\"name\":"
        "\"io.zetl.Source\",\"type\":\"record\",\"fields\":[{\"name\":\"version\",\"type\":"
        "\"string\"},{\"name\":\"connector\",\"type\":\"string\"},{\"name\":\"name\",\"type\":"
        "\"string\"},{\"name\":\"ts_ms\",\"type\":\"long\"},{\"name\":\"snapshot\",\"type\":"
        "\"string\"},{\"name\":\"db\",\"type\":\"string\"},{\"name\":\"sequence\",\"type\":[\"null"
        "\",\"string\"]},{\"name\":\"schema\",\"type\":\"string\"},{\"name\":\"table\",\"type\":"
        "\"string\"},{\"name\":\"txId\",\"type\":[\"null\",\"long\"]},{\"name\":\"lsn\",\"type\":"
        "[\"null\",\"long\"]},{\"name\":\"xmin\",\"type\":[\"null\",\"long\"]},{\"name\":\"tenant"
        "\",\"type\":\"string\"},{\"name\":\"seq\",\"type\":\"long\"}]}},{\"name\":\"op\",\"type\":"
        "\"string\"},{\"name\":\"ts_ms\",\"type\":[\"null\",\"long\"]},{\"name\":\"unchanged\","
        "\"type\":{\"type\":\"array\",\"items\":\"string\"}}]}";
    struct zetl_ev_schema *s = NULL;
    struct zetl_errbuf eb = {""};

    CHECK(zetl_ev_crc64_avro("", 0) == UINT64_C(0xc15d213aa4d7a795));
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        CHECK(zetl_ev_crc64_avro(known[i].canon, strlen(known[i].canon)) == (uint64_t)known[i].fp);

    CHECK(zetl_ev_schema_new("zetl.users", "users", "tenant_id", cols, 2, &s, &eb) == ZETL_OK);
    if (s == NULL)
        return;
    CHECK_STR(zetl_ev_schema_canonical(s, ZETL_EV_KEY), key_canon);
    CHECK_STR(zetl_ev_schema_canonical(s, ZETL_EV_VALUE), value_canon);
    CHECK(zetl_ev_schema_fingerprint(s, ZETL_EV_KEY) == UINT64_C(0x91f9605f1e3189db));
    CHECK(zetl_ev_schema_fingerprint(s, ZETL_EV_VALUE) == UINT64_C(0x88b73f039c0c61ff));
    zetl_ev_schema_free(s);
}

static void test_schema_parse(void)
{
    struct zetl_ev_schema *s = types_schema(), *p = NULL;
    struct zetl_errbuf eb = {""};
    const char *json;
    size_t n;
    char *bad, *at;

    if (s == NULL)
        return;
    json = zetl_ev_schema_json(s, ZETL_EV_VALUE);
    n = strlen(json);
    CHECK(zetl_ev_schema_parse(json, n, &p, &eb) == ZETL_OK);
    if (p != NULL) {
        CHECK_STR(zetl_ev_schema_table(p), "types");
        CHECK_STR(zetl_ev_schema_tenant_column(p), "tenant_id");
        CHECK(zetl_ev_schema_ncols(p) == NTYPES);
        for (size_t i = 0; i < NTYPES && i < zetl_ev_schema_ncols(p); i++) {
            const struct zetl_ev_col *c = zetl_ev_schema_col(p, i);
            char k = test_kind(&type_cols[i]);

            CHECK_STR(c->name, type_cols[i].name);
            CHECK_STR(c->type, type_cols[i].type);
            CHECK(c->key == type_cols[i].key);
            /* Built-ins get their OID back from the type text; other types 0. */
            CHECK(c->typoid == (k == 's' ? 0 : type_cols[i].typoid ? type_cols[i].typoid : 23));
        }
        CHECK(zetl_ev_schema_col(p, NTYPES) == NULL);
        CHECK(zetl_ev_schema_keyed(p));
        for (int part = 0; part < 2; part++) {
            CHECK(zetl_ev_schema_fingerprint(p, part) == zetl_ev_schema_fingerprint(s, part));
            CHECK_STR(zetl_ev_schema_json(p, part), zetl_ev_schema_json(s, part));
        }
        zetl_ev_schema_free(p);
    }

    /* Not an envelope, not JSON, cut anywhere, altered. */
    CHECK(zetl_ev_schema_parse(zetl_ev_schema_json(s, ZETL_EV_KEY),
                               strlen(zetl_ev_schema_json(s, ZETL_EV_KEY)), &p,
                               &eb) == ZETL_ERR_PROTOCOL);
    CHECK(p == NULL);
    CHECK(zetl_ev_schema_parse("\"int\"", 5, &p, &eb) == ZETL_ERR_PROTOCOL);
    CHECK(zetl_ev_schema_parse("", 0, &p, &eb) == ZETL_ERR_PROTOCOL);
    CHECK(zetl_ev_schema_parse("[1,{}]", 6, &p, &eb) == ZETL_ERR_PROTOCOL);
    {
        int cut_ok = 0;

        for (size_t k = 0; k < n; k++) {
            char *copy = zetl_malloc(k ? k : 1);

            memcpy(copy, json, k);
            cut_ok += zetl_ev_schema_parse(copy, k, &p, &eb) == ZETL_ERR_PROTOCOL && p == NULL;
            free(copy);
        }
        CHECK(cut_ok == (int)n);
    }
    bad = zetl_strdup(json);
    at = strstr(bad, "\"pg.type\":\"int4\"");
    CHECK(at != NULL);
    if (at != NULL) {
        memcpy(at, "\"pg.type\":\"int8\"", 16); /* long is not the int the bytes hold */
        CHECK(zetl_ev_schema_parse(bad, strlen(bad), &p, &eb) == ZETL_ERR_PROTOCOL);
        CHECK(strstr(eb.msg, "canonical") != NULL);
    }
    free(bad);
    bad = zetl_strdup(json);
    at = strstr(bad, "\"pg.table\"");
    if (at != NULL) {
        memcpy(at, "\"pg.tablx\"", 10);
        CHECK(zetl_ev_schema_parse(bad, strlen(bad), &p, &eb) == ZETL_ERR_PROTOCOL);
        CHECK(strstr(eb.msg, "pg.table") != NULL);
    }
    free(bad);
    zetl_ev_schema_free(s);
}

/* ---- round trips ----------------------------------------------------------- */

/* zetl_ev_decode_value of exactly n bytes in a buffer of their own (ASan sees any overread). */
static enum zetl_err decode_exact(struct zetl_ev_decoder *d, const struct zetl_ev_schema *s,
                                  enum zetl_ev_format f, const void *p, size_t n,
                                  struct zetl_ev_decoded *out, struct zetl_errbuf *eb)
{
    void *copy = zetl_malloc(n ? n : 1);
    enum zetl_err err;

    memcpy(copy, p, n);
    err = zetl_ev_decode_value(d, s, f, copy, n, out, eb);
    free(copy);
    return err;
}

static void test_round_trip(void)
{
    struct zetl_ev_schema *s = types_schema(), *parsed = NULL;
    struct zetl_ev_encoder *e = zetl_ev_encoder_new();
    struct zetl_ev_decoder *d = zetl_ev_decoder_new();
    struct tchange t[16];
    size_t nt = make_changes(t);
    struct zetl_buf out;
    struct zetl_errbuf eb = {""};

    zetl_buf_init(&out, 0);
    if (s == NULL)
        goto done;
    CHECK(zetl_ev_schema_parse(zetl_ev_schema_json(s, ZETL_EV_VALUE),
                               strlen(zetl_ev_schema_json(s, ZETL_EV_VALUE)), &parsed,
                               &eb) == ZETL_OK);
    for (size_t i = 0; i < nt; i++) {
        for (int f = 0; f < 2; f++) {
            struct zetl_ev_decoded dec;
            const void *body;
            size_t body_len;
            int32_t id = -2;
            uint64_t fp = 0;
            enum zetl_err err;

            zetl_buf_reset(&out);
            err = zetl_ev_encode_value(e, s, f ? ZETL_EV_JSON : ZETL_EV_AVRO, i % 2 ? 7 : -1,
                                       &t[i].c, &out, &eb);
            CHECK(err == ZETL_OK);
            if (err != ZETL_OK) {
                fprintf(stderr, "  change %zu: %s\n", i, eb.msg);
                continue;
            }
            if (f == 0) {
                enum zetl_ev_framing fr =
                    zetl_ev_frame(out.data, out.len, &id, &fp, &body, &body_len);

                CHECK(fr == (i % 2 ? ZETL_EV_FRAME_CONFLUENT : ZETL_EV_FRAME_SINGLE_OBJECT));
                CHECK(i % 2 ? id == 7 : fp == zetl_ev_schema_fingerprint(s, ZETL_EV_VALUE));
            } else {
                CHECK(zetl_ev_frame(out.data, out.len, &id, &fp, &body, &body_len) ==
                      ZETL_EV_FRAME_NONE);
                {
                    json_t *j = json_loadb(out.data, out.len, 0, NULL);

                    CHECK(j != NULL);
                    json_decref(j);
                }
                body = out.data;
                body_len = out.len;
            }
            /* Decoded with the schema as built and as read back from its JSON. */
            for (int k = 0; k < 2; k++) {
                err = decode_exact(d, k ? parsed : s, f ? ZETL_EV_JSON : ZETL_EV_AVRO, body,
                                   body_len, &dec, &eb);
                CHECK(err == ZETL_OK);
                if (err != ZETL_OK) {
                    fprintf(stderr, "  change %zu format %d: %s\n", i, f, eb.msg);
                    continue;
                }
                CHECK(decoded_equal(s, &t[i], &dec));
            }
        }
    }

    /* Text forms of the decoder, exactly. */
    {
        static const struct {
            int col;
            const char *in, *out;
        } forms[] = {
            {5, "NaN", "NaN"},
            {5, "-Infinity", "-Infinity"},
            {5, "0.1", "0.1"},
            {5, "-0", "-0"},
            {5, "3.4028235e+38", "3.4028235e+38"},
            {6, "0.1", "0.1"},
            {6, "Infinity", "Infinity"},
            {6, "1e+300", "1e+300"},
            {6, "-1.5", "-1.5"},
            {2, "t", "t"},
            {2, "f", "f"},
            {3, "-32768", "-32768"},
            {7, "\\xDEADBEEF", "\\xdeadbeef"},
            {7, "\\x", "\\x"},
        };
        for (size_t k = 0; k < sizeof(forms) / sizeof(forms[0]); k++) {
            struct row r = rows[0];
            struct tchange tc;
            struct zetl_ev_decoded dec;

            r.in[forms[k].col] = forms[k].in;
            tchange_init(&tc, 'c', NULL, &r, "t");
            for (int f = 0; f < 2; f++) {
                zetl_buf_reset(&out);
                CHECK(zetl_ev_encode_value(e, s, f ? ZETL_EV_JSON : ZETL_EV_AVRO, 1, &tc.c, &out,
                                           &eb) == ZETL_OK);
                CHECK(zetl_ev_decode_value(d, s, f ? ZETL_EV_JSON : ZETL_EV_AVRO,
                                           out.data + (f ? 0 : 5), out.len - (f ? 0 : 5), &dec,
                                           &eb) == ZETL_OK);
                if (dec.after != NULL) {
                    CHECK_STR(dec.after[forms[k].col], forms[k].out);
                    CHECK(dec.after_len[forms[k].col] == strlen(forms[k].out));
                }
            }
        }
    }
done:
    zetl_ev_schema_free(parsed);
    zetl_buf_release(&out);
    zetl_ev_decoder_free(d);
    zetl_ev_encoder_free(e);
    zetl_ev_schema_free(s);
}

/* ---- errors ---------------------------------------------------------------- */

static void test_encode_errors(void)
{
    struct zetl_ev_schema *s = types_schema();
    struct zetl_ev_encoder *e = zetl_ev_encoder_new();
    struct zetl_buf out;
    struct zetl_errbuf eb = {""};
    static const struct {
        int col;
        const char *text;
    } bad[] = {
        {0, "12a"},        {0, "9223372036854775808"},
        {0, ""},           {0, " 1"},
        {0, "-"},          {3, "32768"},
        {4, "2147483648"}, {4, "1.0"},
        {2, "true"},       {2, "T"},
        {5, "1e39"},       {5, "abc"},
        {6, "1e400"},      {6, " 1"},
        {6, "1x"},         {7, "\\x0"},
        {7, "\\xzz"},      {7, "abc"},
        {7, "\\000"},      {11, "x"},
    };

    zetl_buf_init(&out, 0);
    if (s == NULL)
        goto done;
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        struct row r = rows[0];
        struct tchange tc;
        const size_t *lens;
        const char *const *vals;

        r.in[bad[k].col] = bad[k].text;
        tchange_init(&tc, 'c', NULL, &r, "t");
        for (int f = 0; f < 2; f++) {
            zetl_buf_reset(&out);
            zetl_buf_append(&out, "keep", 4);
            CHECK(zetl_ev_encode_value(e, s, f ? ZETL_EV_JSON : ZETL_EV_AVRO, -1, &tc.c, &out,
                                       &eb) == ZETL_ERR_FATAL);
            /* Names table, column and type; never the value; `out` as it was. */
            CHECK(strstr(eb.msg, "\"types\"") != NULL &&
                  strstr(eb.msg, type_cols[bad[k].col].name) != NULL &&
                  strstr(eb.msg, type_cols[bad[k].col].type) != NULL);
            CHECK(strlen(bad[k].text) < 3 || strstr(eb.msg, bad[k].text) == NULL);
            if (!(strlen(bad[k].text) < 3 || strstr(eb.msg, bad[k].text) == NULL))
                fprintf(stderr, "  %s\n", eb.msg);
            CHECK(out.len == 4 && memcmp(out.data, "keep", 5) == 0);
            if (type_cols[bad[k].col].key) {
                vals = key_vals(&tc, &lens);
                CHECK(zetl_ev_encode_key(e, s, f ? ZETL_EV_JSON : ZETL_EV_AVRO, 3, "t", 1, vals,
                                         lens, &out, &eb) == ZETL_ERR_FATAL);
                CHECK(out.len == 4);
            }
        }
    }
    /* A NULL key column. */
    {
        struct row r = rows[0];
        size_t lens[NTYPES];

        r.in[1] = NULL;
        lens_of(r.in, lens);
        for (int f = 0; f < 2; f++) {
            zetl_buf_reset(&out);
            CHECK(zetl_ev_encode_key(e, s, f ? ZETL_EV_JSON : ZETL_EV_AVRO, -1, "t", 1, r.in, lens,
                                     &out, &eb) == ZETL_ERR_FATAL);
            CHECK(strstr(eb.msg, "we\"ird col") != NULL && strstr(eb.msg, "NULL") != NULL);
            CHECK(out.len == 0);
        }
        /* A NULL non-key column is fine in a key. */
        r = rows[0];
        r.in[5] = NULL;
        lens_of(r.in, lens);
        CHECK(zetl_ev_encode_key(e, s, ZETL_EV_AVRO, -1, "t", 1, r.in, lens, &out, &eb) == ZETL_OK);
    }
    /* The buffer's cap. */
    {
        struct zetl_buf small;
        struct tchange tc;

        zetl_buf_init(&small, 64);
        tchange_init(&tc, 'c', NULL, &rows[0], "t");
        CHECK(zetl_ev_encode_value(e, s, ZETL_EV_AVRO, -1, &tc.c, &small, &eb) == ZETL_ERR_FATAL);
        CHECK(small.len == 0);
        CHECK(zetl_ev_encode_value(e, s, ZETL_EV_JSON, -1, &tc.c, &small, &eb) == ZETL_ERR_FATAL);
        CHECK(small.len == 0);
        zetl_buf_release(&small);
    }
done:
    zetl_buf_release(&out);
    zetl_ev_encoder_free(e);
    zetl_ev_schema_free(s);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_malformed(void)
{
    struct zetl_ev_schema *s = types_schema();
    struct zetl_ev_encoder *e = zetl_ev_encoder_new();
    struct zetl_ev_decoder *d = zetl_ev_decoder_new();
    struct zetl_ev_decoded dec;
    struct tchange t[16];
    size_t nt = make_changes(t);
    struct zetl_buf out;
    struct zetl_errbuf eb = {""};

    zetl_buf_init(&out, 0);
    if (s == NULL)
        goto done;
    for (int f = 0; f < 2; f++) {
        enum zetl_ev_format fmt = f ? ZETL_EV_JSON : ZETL_EV_AVRO;
        size_t skip = f ? 0 : 10;

        for (size_t i = 0; i < nt; i++) {
            int cut_ok = 0, n, fuzz_ok = 0;

            zetl_buf_reset(&out);
            CHECK(zetl_ev_encode_value(e, s, fmt, -1, &t[i].c, &out, &eb) == ZETL_OK);
            n = (int)(out.len - skip);
            /* Every cut is refused. */
            for (int k = 0; k < n; k++)
                cut_ok += decode_exact(d, s, fmt, out.data + skip, (size_t)k, &dec, &eb) ==
                          ZETL_ERR_PROTOCOL;
            CHECK(cut_ok == n);
            CHECK(strstr(eb.msg, "\"types\"") != NULL);
            /* A byte left over is refused. */
            zetl_buf_putc(&out, f ? 'x' : 0);
            CHECK(decode_exact(d, s, fmt, out.data + skip, (size_t)n + 1, &dec, &eb) ==
                  ZETL_ERR_PROTOCOL);
            /* Random damage: decoded or refused, never a crash (ASan, UBSan watch). */
            for (int k = 0; k < 3000; k++) {
                char *copy = zetl_malloc((size_t)n);
                enum zetl_err err;

                memcpy(copy, out.data + skip, (size_t)n);
                for (int m = 1 + (int)(rng() % 4); m > 0; m--) {
                    size_t at = rng() % (size_t)n;

                    /* A random byte, or one bit flipped. */
                    copy[at] = rng() % 4 == 0 ? (char)rng() : (char)(copy[at] ^ (1 << (rng() % 8)));
                }
                err = zetl_ev_decode_value(d, s, fmt, copy, (size_t)n, &dec, &eb);
                fuzz_ok += err == ZETL_OK || err == ZETL_ERR_PROTOCOL;
                free(copy);
            }
            CHECK(fuzz_ok == 3000);
        }
    }

    /* Hand-made Avro: a bad union index, huge and negative lengths, an overlong varint. */
    {
        static const struct {
            const char *bytes;
            size_t n;
            const char *what;
        } bad[] = {
            {"\x04", 1, "union"},
            {"\x01", 1, "union"},
            {"\x02\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", 10, "length past"},
            {"\x02\x01", 2, "negative length"},
            {"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 11, "varint"},
            {"\x02\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 12, "varint"},
            {"", 0, "cut short"},
        };
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
            CHECK(decode_exact(d, s, ZETL_EV_AVRO, bad[k].bytes, bad[k].n, &dec, &eb) ==
                  ZETL_ERR_PROTOCOL);
            CHECK(strstr(eb.msg, bad[k].what) != NULL);
        }
    }
    /* A valid message with its unchanged array made huge, or naming an unknown column. */
    {
        struct tchange tc;
        const char *const tails[] = {"\xfe\xff\xff\xff\x0f", "\x02\x02z\x00", "\x01\x02",
                                     "\x04\x02"
                                     "b\x02"
                                     "b\x00"};
        const char *whats[] = {"past the end", "unknown column", "block", "twice"};

        tchange_init(&tc, 't', NULL, NULL, "a");
        for (size_t k = 0; k < 4; k++) {
            size_t tl = k == 0 ? 5 : k == 1 ? 4 : k == 2 ? 2 : 6;

            zetl_buf_reset(&out);
            CHECK(zetl_ev_encode_value(e, s, ZETL_EV_AVRO, -1, &tc.c, &out, &eb) == ZETL_OK);
            out.len--; /* the empty array's end */
            zetl_buf_append(&out, tails[k], tl);
            CHECK(decode_exact(d, s, ZETL_EV_AVRO, out.data + 10, out.len - 10, &dec, &eb) ==
                  ZETL_ERR_PROTOCOL);
            CHECK(strstr(eb.msg, whats[k]) != NULL);
        }
    }
    /* JSON of the wrong shapes. */
    {
        static const char *const bad[] = {
            "",
            "[]",
            "{}",
            "null",
            "{\"before\":null,\"after\":null}",
            "{\"before\":1,\"after\":null,\"op\":\"c\"}",
            "{\"before\":null,\"after\":{},\"op\":\"c\"}",
        };
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
            CHECK(decode_exact(d, s, ZETL_EV_JSON, bad[k], strlen(bad[k]), &dec, &eb) ==
                  ZETL_ERR_PROTOCOL);
    }
done:
    zetl_buf_release(&out);
    zetl_ev_decoder_free(d);
    zetl_ev_encoder_free(e);
    zetl_ev_schema_free(s);
}

static void test_frame(void)
{
    static const unsigned char conf[] = {0x00, 0x00, 0x01, 0x02, 0x03, 0xAA};
    static const unsigned char so[] = {0xC3, 0x01, 0x01, 0x02, 0x03, 0x04,
                                       0x05, 0x06, 0x07, 0x88, 0xBB, 0xCC};
    int32_t id = 0;
    uint64_t fp = 0;
    const void *body = NULL;
    size_t n = 99;

    CHECK(zetl_ev_frame(conf, sizeof(conf), &id, &fp, &body, &n) == ZETL_EV_FRAME_CONFLUENT);
    CHECK(id == 0x010203 && body == conf + 5 && n == 1);
    CHECK(zetl_ev_frame(conf, 5, &id, &fp, &body, &n) == ZETL_EV_FRAME_CONFLUENT && n == 0);
    CHECK(zetl_ev_frame(conf, 4, &id, &fp, &body, &n) == ZETL_EV_FRAME_NONE);
    CHECK(zetl_ev_frame(so, sizeof(so), &id, &fp, &body, &n) == ZETL_EV_FRAME_SINGLE_OBJECT);
    CHECK(fp == UINT64_C(0x8807060504030201) && body == so + 10 && n == 2);
    CHECK(zetl_ev_frame(so, 10, &id, &fp, &body, &n) == ZETL_EV_FRAME_SINGLE_OBJECT && n == 0);
    CHECK(zetl_ev_frame(so, 9, &id, &fp, &body, &n) == ZETL_EV_FRAME_NONE);
    CHECK(zetl_ev_frame("\xC3\x02"
                        "12345678",
                        10, &id, &fp, &body, &n) == ZETL_EV_FRAME_NONE);
    CHECK(zetl_ev_frame("{\"a\":1}", 7, &id, &fp, &body, &n) == ZETL_EV_FRAME_NONE);
    CHECK(zetl_ev_frame("", 0, &id, &fp, &body, &n) == ZETL_EV_FRAME_NONE);
}

/* ---- avro-c: the same values through its generic values ---------------------- */

static void avc_set(avro_value_t *v, const struct zetl_ev_col *col, const char *t, size_t n)
{
    switch (test_kind(col)) {
    case 'b':
        avro_value_set_boolean(v, t[0] == 't');
        break;
    case 'i':
        avro_value_set_int(v, (int32_t)strtol(t, NULL, 10));
        break;
    case 'l':
        avro_value_set_long(v, strtoll(t, NULL, 10));
        break;
    case 'f':
        avro_value_set_float(v, strtof(t, NULL));
        break;
    case 'd':
        avro_value_set_double(v, strtod(t, NULL));
        break;
    case 'y': {
        unsigned char bytes[256];
        size_t nb = (n - 2) / 2;

        for (size_t i = 0; i < nb && i < sizeof(bytes); i++) {
            unsigned x;
            sscanf(t + 2 + 2 * i, "%2x", &x);
            bytes[i] = (unsigned char)x;
        }
        avro_value_set_bytes(v, bytes, nb);
        break;
    }
    default:
        avro_value_set_string_len(v, t, n + 1); /* avro-c counts the NUL */
        break;
    }
}

static void avc_image(avro_value_t *field, const struct zetl_ev_schema *s,
                      const struct zetl_ev_change *c, const char *const *vals, const size_t *lens,
                      const unsigned char *unch)
{
    avro_value_t rec, f, br;

    if (vals == NULL) {
        avro_value_set_branch(field, 0, &br);
        avro_value_set_null(&br);
        return;
    }
    avro_value_set_branch(field, 1, &rec);
    avro_value_get_by_index(&rec, 0, &f, NULL);
    avro_value_set_string_len(&f, c->tenant, c->tenant_len + 1);
    for (size_t i = 0; i < zetl_ev_schema_ncols(s); i++) {
        avro_value_get_by_index(&rec, i + 1, &f, NULL);
        if (vals[i] == NULL || (unch && unch[i])) {
            avro_value_set_branch(&f, 0, &br);
            avro_value_set_null(&br);
        } else {
            avro_value_set_branch(&f, 1, &br);
            avc_set(&br, zetl_ev_schema_col(s, i), vals[i], lens[i]);
        }
    }
}

static void avc_opt_long(avro_value_t *f, bool present, int64_t v)
{
    avro_value_t br;

    avro_value_set_branch(f, present, &br);
    if (present)
        avro_value_set_long(&br, v);
    else
        avro_value_set_null(&br);
}

/* Fills val (an envelope) from c the way avro-c's users would. */
static void avc_fill(avro_value_t *val, avro_schema_t env, const struct zetl_ev_schema *s,
                     const struct zetl_ev_change *c)
{
    avro_value_t f, src, x, br;
    char seq[64];
    avro_schema_t value_rec =
        avro_schema_union_branch(avro_schema_record_field_get(env, "before"), 1);

    avro_value_reset(val);
    avro_value_get_by_index(val, 0, &f, NULL);
    avc_image(&f, s, c, c->before, c->before_len, NULL);
    avro_value_get_by_index(val, 1, &f, NULL);
    avc_image(&f, s, c, c->after, c->after_len, c->unchanged);
    avro_value_get_by_index(val, 2, &src, NULL);
    avro_value_get_by_index(&src, 0, &x, NULL);
    avro_value_set_string(&x, c->src.version);
    avro_value_get_by_index(&src, 1, &x, NULL);
    avro_value_set_string(&x, "zetl");
    avro_value_get_by_index(&src, 2, &x, NULL);
    avro_value_set_string(&x, c->src.name);
    avro_value_get_by_index(&src, 3, &x, NULL);
    avro_value_set_long(&x, c->src.ts_ms);
    avro_value_get_by_index(&src, 4, &x, NULL);
    avro_value_set_string(&x, c->src.snapshot ? "true" : "false");
    avro_value_get_by_index(&src, 5, &x, NULL);
    avro_value_set_string(&x, c->src.db);
    avro_value_get_by_index(&src, 6, &x, NULL);
    avro_value_set_branch(&x, 1, &br);
    snprintf(seq, sizeof(seq), "[null,\"%" PRIu64 "\"]", c->src.lsn);
    avro_value_set_string(&br, seq);
    avro_value_get_by_index(&src, 7, &x, NULL);
    avro_value_set_string(&x, c->src.schema);
    avro_value_get_by_index(&src, 8, &x, NULL);
    avro_value_set_string(&x, c->src.table);
    avro_value_get_by_index(&src, 9, &x, NULL);
    avc_opt_long(&x, c->src.txid >= 0, c->src.txid);
    avro_value_get_by_index(&src, 10, &x, NULL);
    avc_opt_long(&x, true, (int64_t)c->src.lsn);
    avro_value_get_by_index(&src, 11, &x, NULL);
    avc_opt_long(&x, false, 0);
    avro_value_get_by_index(&src, 12, &x, NULL);
    avro_value_set_string_len(&x, c->tenant, c->tenant_len + 1);
    avro_value_get_by_index(&src, 13, &x, NULL);
    avro_value_set_long(&x, c->src.seq);
    avro_value_get_by_index(val, 3, &f, NULL);
    {
        char op[2] = {c->op, 0};
        avro_value_set_string(&f, op);
    }
    avro_value_get_by_index(val, 4, &f, NULL);
    avc_opt_long(&f, true, c->ts_ms);
    avro_value_get_by_index(val, 5, &f, NULL);
    for (size_t i = 0; c->unchanged != NULL && i < zetl_ev_schema_ncols(s); i++)
        if (c->unchanged[i]) {
            avro_value_append(&f, &x, NULL);
            avro_value_set_string(&x, avro_schema_record_field_name(value_rec, (int)i + 1));
        }
}

/* Writes val into buf; returns its length. */
static size_t avc_write(avro_value_t *val, char *buf, size_t cap)
{
    size_t size = 0;
    avro_writer_t w;

    avro_value_sizeof(val, &size);
    if (size > cap)
        return 0;
    w = avro_writer_memory(buf, (int64_t)cap);
    avro_value_write(w, val);
    size = (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    return size;
}

static void test_avro_c_bytes(void)
{
    struct zetl_ev_schema *s = types_schema();
    struct zetl_ev_encoder *e = zetl_ev_encoder_new();
    avro_schema_t env = NULL, keys = NULL;
    avro_value_iface_t *iface = NULL, *kiface = NULL;
    avro_value_t val, kval;
    struct tchange t[16];
    size_t nt = make_changes(t);
    struct zetl_buf out;
    struct zetl_errbuf eb = {""};
    static char buf[1 << 16];

    zetl_buf_init(&out, 0);
    if (s == NULL)
        goto done;
    CHECK(avro_schema_from_json_length(zetl_ev_schema_json(s, ZETL_EV_VALUE),
                                       strlen(zetl_ev_schema_json(s, ZETL_EV_VALUE)), &env) == 0);
    CHECK(avro_schema_from_json_length(zetl_ev_schema_json(s, ZETL_EV_KEY),
                                       strlen(zetl_ev_schema_json(s, ZETL_EV_KEY)), &keys) == 0);
    if (env == NULL || keys == NULL)
        goto done;
    iface = avro_generic_class_from_schema(env);
    kiface = avro_generic_class_from_schema(keys);
    avro_generic_value_new(iface, &val);
    avro_generic_value_new(kiface, &kval);
    for (size_t i = 0; i < nt; i++) {
        size_t n;

        zetl_buf_reset(&out);
        CHECK(zetl_ev_encode_value(e, s, ZETL_EV_AVRO, 5, &t[i].c, &out, &eb) == ZETL_OK);
        avc_fill(&val, env, s, &t[i].c);
        n = avc_write(&val, buf, sizeof(buf));
        CHECK(n == out.len - 5 && memcmp(buf, out.data + 5, n) == 0);
        if (t[i].c.after != NULL || t[i].c.before != NULL) {
            const size_t *lens;
            const char *const *vals = key_vals(&t[i], &lens);
            avro_value_t f;
            size_t k = 1;

            zetl_buf_reset(&out);
            CHECK(zetl_ev_encode_key(e, s, ZETL_EV_AVRO, 5, t[i].c.tenant, t[i].c.tenant_len, vals,
                                     lens, &out, &eb) == ZETL_OK);
            avro_value_reset(&kval);
            avro_value_get_by_index(&kval, 0, &f, NULL);
            avro_value_set_string_len(&f, t[i].c.tenant, t[i].c.tenant_len + 1);
            for (size_t c = 0; c < NTYPES; c++)
                if (type_cols[c].key) {
                    avro_value_get_by_index(&kval, k++, &f, NULL);
                    avc_set(&f, &type_cols[c], vals[c], lens[c]);
                }
            n = avc_write(&kval, buf, sizeof(buf));
            CHECK(n == out.len - 5 && memcmp(buf, out.data + 5, n) == 0);
        }
    }
    avro_value_decref(&kval);
    avro_value_decref(&val);
done:
    avro_value_iface_decref(kiface);
    avro_value_iface_decref(iface);
    if (keys)
        avro_schema_decref(keys);
    if (env)
        avro_schema_decref(env);
    zetl_buf_release(&out);
    zetl_ev_encoder_free(e);
    zetl_ev_schema_free(s);
}

/* ---- python3-avro reads what we wrote ----------------------------------------- */

static json_t *jvals(const char *const *vals)
{
    json_t *a;

    if (vals == NULL)
        return json_null();
    a = json_array();
    for (size_t i = 0; i < NTYPES; i++)
        json_array_append_new(a, vals[i] ? json_string(vals[i]) : json_null());
    return a;
}

static json_t *jchange(const struct zetl_ev_change *c)
{
    json_t *unch = json_array();

    for (size_t i = 0; i < NTYPES; i++)
        json_array_append_new(unch, json_boolean(c->unchanged != NULL && c->unchanged[i]));
    return json_pack("{s:s%, s:s%, s:o, s:o, s:o, s:I, s:{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, "
                     "s:I, s:b}}",
                     "op", &c->op, (size_t)1, "tenant", c->tenant, c->tenant_len, "before",
                     jvals(c->before), "after", jvals(c->after), "unchanged", unch, "ts_ms",
                     (json_int_t)c->ts_ms, "source", "version", c->src.version, "name", c->src.name,
                     "db", c->src.db, "schema", c->src.schema, "table", c->src.table, "ts_ms",
                     (json_int_t)c->src.ts_ms, "lsn", (json_int_t)c->src.lsn, "txid",
                     (json_int_t)c->src.txid, "seq", (json_int_t)c->src.seq, "snapshot",
                     c->src.snapshot);
}

static json_t *jhex(const char *p, size_t n)
{
    char *h = zetl_malloc(2 * n + 1);
    json_t *j;

    for (size_t i = 0; i < n; i++)
        snprintf(h + 2 * i, 3, "%02x", (unsigned char)p[i]);
    h[2 * n] = '\0';
    j = json_string(h);
    free(h);
    return j;
}

static void test_python(void)
{
    struct zetl_ev_schema *s = types_schema();
    struct zetl_ev_encoder *e = zetl_ev_encoder_new();
    struct tchange t[16];
    size_t nt = make_changes(t);
    struct zetl_buf out;
    struct zetl_errbuf eb = {""};
    json_t *cases, *msgs, *cols;
    const char *src = getenv("ZETL_SOURCE_DIR");
    char dir[] = "/tmp/zetl-event-XXXXXX", path[4200], cmd[8600];
    int rc;

    zetl_buf_init(&out, 0);
    if (s == NULL || mkdtemp(dir) == NULL) {
        CHECK(false);
        goto done;
    }
    msgs = json_array();
    cols = json_array();
    for (size_t i = 0; i < NTYPES; i++)
        json_array_append_new(cols, json_pack("{s:s, s:s, s:b}", "name", type_cols[i].name, "type",
                                              type_cols[i].type, "key", type_cols[i].key));
    for (size_t i = 0; i < nt; i++) {
        for (int f = 0; f < 3; f++) {
            enum zetl_ev_format fmt = f == 2 ? ZETL_EV_JSON : ZETL_EV_AVRO;
            int32_t id = f == 1 ? 4242 : -1;
            json_t *m =
                json_pack("{s:s, s:i, s:o}", "format", fmt == ZETL_EV_JSON ? "json" : "avro",
                          "schema_id", id, "change", jchange(&t[i].c));

            zetl_buf_reset(&out);
            CHECK(zetl_ev_encode_value(e, s, fmt, id, &t[i].c, &out, &eb) == ZETL_OK);
            json_object_set_new(m, "value", jhex(out.data, out.len));
            if (t[i].c.after || t[i].c.before) {
                const size_t *lens;
                const char *const *vals = key_vals(&t[i], &lens);

                zetl_buf_reset(&out);
                CHECK(zetl_ev_encode_key(e, s, fmt, id, t[i].c.tenant, t[i].c.tenant_len, vals,
                                         lens, &out, &eb) == ZETL_OK);
                json_object_set_new(m, "key", jhex(out.data, out.len));
            }
            json_array_append_new(msgs, m);
        }
    }
    cases = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "key_schema",
                      zetl_ev_schema_json(s, ZETL_EV_KEY), "value_schema",
                      zetl_ev_schema_json(s, ZETL_EV_VALUE), "key_canonical",
                      zetl_ev_schema_canonical(s, ZETL_EV_KEY), "value_canonical",
                      zetl_ev_schema_canonical(s, ZETL_EV_VALUE), "tenant_column", "tenant_id",
                      "key_fp", "", "value_fp", "", "columns", cols, "messages", msgs);
    for (int part = 0; part < 2; part++) {
        char fp[17];

        snprintf(fp, sizeof(fp), "%016" PRIx64, zetl_ev_schema_fingerprint(s, part));
        json_object_set_new(cases, part == ZETL_EV_KEY ? "key_fp" : "value_fp", json_string(fp));
    }
    snprintf(path, sizeof(path), "%s/cases.json", dir);
    CHECK(json_dump_file(cases, path, JSON_INDENT(1)) == 0);
    json_decref(cases);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s/tests/unit/event_check.py' '%s'",
             src ? src : ".", path);
    rc = system(cmd);
    CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    if (!(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0))
        fprintf(stderr, "  %s failed (Debian's python3-avro is needed)\n", cmd);
    unlink(path);
    rmdir(dir);
done:
    zetl_buf_release(&out);
    zetl_ev_encoder_free(e);
    zetl_ev_schema_free(s);
}

/* ---- speed ----------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A narrow insert (int8 id, text, int4, timestamptz as text): our encoder vs avro-c's values. */
static void test_speed(void)
{
    static const struct zetl_ev_col cols[] = {{"id", "int8", 20, true},
                                              {"name", "text", 25, false},
                                              {"qty", "int4", 23, false},
                                              {"created_at", "timestamptz", 1184, false}};
    const char *vals[] = {"1234567", "some customer name", "42", "2024-03-05 12:34:56.789012+00"};
    size_t lens[4];
    const char *n_env = getenv("ZETL_EV_BENCH");
    long n = n_env ? atol(n_env) : 200000;
    struct zetl_ev_schema *s = NULL;
    struct zetl_ev_encoder *e = zetl_ev_encoder_new();
    struct zetl_ev_change c;
    struct zetl_buf out;
    struct zetl_errbuf eb = {""};
    avro_schema_t env = NULL;
    avro_value_iface_t *iface;
    avro_value_t val;
    static char buf[4096], ours[4096];
    struct zetl_ev_decoder *d = zetl_ev_decoder_new();
    double t0, t_ours, t_json, t_avroc, t_decode;
    size_t bytes = 0, avroc_bytes = 0;
    bool ok = true;

    for (int i = 0; i < 4; i++)
        lens[i] = strlen(vals[i]);
    zetl_buf_init(&out, 0);
    CHECK(zetl_ev_schema_new("zetl.orders", "orders", "tenant_id", cols, 4, &s, &eb) == ZETL_OK);
    if (s == NULL)
        goto done;
    memset(&c, 0, sizeof(c));
    c.op = 'c';
    c.tenant = "tenant_a";
    c.tenant_len = 8;
    c.after = vals;
    c.after_len = lens;
    c.src = (struct zetl_ev_source){"0.1.0",       "zetl_0",     "app", "tenant_a", "orders",
                                    1700000000123, 0x16B374D848, 7777,  3,          false};
    c.ts_ms = 1700000000456;

    t0 = now_s();
    for (long i = 0; i < n; i++) {
        zetl_buf_reset(&out);
        ok = ok && zetl_ev_encode_key(e, s, ZETL_EV_AVRO, 1, c.tenant, c.tenant_len, vals, lens,
                                      &out, &eb) == ZETL_OK;
        zetl_buf_reset(&out);
        ok = ok && zetl_ev_encode_value(e, s, ZETL_EV_AVRO, 1, &c, &out, &eb) == ZETL_OK;
    }
    t_ours = now_s() - t0;
    bytes = out.len;
    memcpy(ours, out.data, out.len < sizeof(ours) ? out.len : sizeof(ours));
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        zetl_buf_reset(&out);
        ok = ok && zetl_ev_encode_value(e, s, ZETL_EV_JSON, -1, &c, &out, &eb) == ZETL_OK;
    }
    t_json = now_s() - t0;
    CHECK(ok);

    CHECK(avro_schema_from_json_length(zetl_ev_schema_json(s, ZETL_EV_VALUE),
                                       strlen(zetl_ev_schema_json(s, ZETL_EV_VALUE)), &env) == 0);
    iface = avro_generic_class_from_schema(env);
    avro_generic_value_new(iface, &val);
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        avc_fill(&val, env, s, &c);
        avroc_bytes = avc_write(&val, buf, sizeof(buf));
    }
    t_avroc = now_s() - t0;
    CHECK(avroc_bytes == bytes - 5 && memcmp(buf, ours + 5, avroc_bytes) == 0);
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        struct zetl_ev_decoded dec;

        ok = ok &&
             zetl_ev_decode_value(d, s, ZETL_EV_AVRO, ours + 5, bytes - 5, &dec, &eb) == ZETL_OK;
    }
    t_decode = now_s() - t0;
    CHECK(ok);
    printf("# narrow insert, %ld messages: ours (avro key+value) %.0f msg/s, ours (json value) "
           "%.0f msg/s, avro-c generic values (value only) %.0f msg/s; %zu bytes; "
           "decoding ours (avro value) %.0f msg/s\n",
           n, n / t_ours, n / t_json, n / t_avroc, bytes, n / t_decode);
    avro_value_decref(&val);
    avro_value_iface_decref(iface);
    avro_schema_decref(env);
done:
    zetl_buf_release(&out);
    zetl_ev_decoder_free(d);
    zetl_ev_encoder_free(e);
    zetl_ev_schema_free(s);
}

int main(void)
{
    test_schema_names();
    test_canonical();
    test_schema_parse();
    test_round_trip();
    test_encode_errors();
    test_malformed();
    test_frame();
    test_avro_c_bytes();
    test_python();
    test_speed();
    return zetl_tap_done();
}
