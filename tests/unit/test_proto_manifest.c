/*
 * Unit tests of proto/manifest.c: write -> read round trips, golden
 * manifests written by a real capture (tests/fixtures/manifest, see
 * README there) read and rewritten byte for byte, every rule of the
 * validation policy refused with a message naming the field, and every
 * fixture cut at every byte offset refused cleanly.
 */
#include "proto/manifest.h"
#include "tests/unit/tap.h"

#include "common/buf.h"
#include "common/fs.h"
#include "common/mem.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const fixture_names[] = {"two_tables", "types"};

static bool fixture_load(const char *name, struct zetl_buf *out)
{
    const char *src = getenv("ZETL_SOURCE_DIR");
    struct zetl_errbuf eb;
    char path[4096];

    snprintf(path, sizeof(path), "%s/tests/fixtures/manifest/%s.json", src ? src : ".", name);
    zetl_buf_reset(out);
    if (zetl_fs_read_file(path, ZETL_MANIFEST_MAX, out, &eb) != ZETL_OK) {
        fprintf(stderr, "%s (is ZETL_SOURCE_DIR set?)\n", eb.msg);
        return false;
    }
    return true;
}

static bool str_eq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static bool files_equal(const struct zetl_manifest_file *a, const struct zetl_manifest_file *b)
{
    if (!str_eq(a->table, b->table) || !str_eq(a->file, b->file) || a->rows != b->rows ||
        a->bytes != b->bytes || strcmp(a->sha256, b->sha256) != 0 || a->ntenants != b->ntenants ||
        a->ncols != b->ncols)
        return false;
    for (size_t k = 0; k < a->ntenants; k++)
        if (!str_eq(a->tenants[k], b->tenants[k]))
            return false;
    for (size_t k = 0; k < a->ncols; k++)
        if (!str_eq(a->cols[k].name, b->cols[k].name) ||
            !str_eq(a->cols[k].type, b->cols[k].type) || a->cols[k].typoid != b->cols[k].typoid ||
            a->cols[k].key != b->cols[k].key)
            return false;
    return true;
}

static bool manifests_equal(const struct zetl_manifest *a, const struct zetl_manifest *b)
{
    if (!str_eq(a->stream, b->stream) || a->first_lsn != b->first_lsn ||
        a->last_lsn != b->last_lsn || a->end_lsn != b->end_lsn ||
        a->transactions != b->transactions || a->rows != b->rows || a->raw_bytes != b->raw_bytes ||
        !str_eq(a->first_commit_time, b->first_commit_time) ||
        !str_eq(a->last_commit_time, b->last_commit_time) ||
        !str_eq(a->created_at, b->created_at) || !str_eq(a->tenant_column, b->tenant_column) ||
        a->nfiles != b->nfiles)
        return false;
    for (size_t i = 0; i < a->nfiles; i++)
        if (!files_equal(&a->files[i], &b->files[i]))
            return false;
    return true;
}

/* zetl_manifest_read of exactly n bytes in a buffer of their own (ASan sees any overread). */
static enum zetl_err read_exact(const char *text, size_t n, const char *stream,
                                struct zetl_manifest *m, struct zetl_errbuf *eb)
{
    char *copy = zetl_malloc(n ? n : 1);
    enum zetl_err err;

    memcpy(copy, text, n);
    err = zetl_manifest_read(copy, n, stream, m, eb);
    free(copy);
    return err;
}

static void test_golden(void)
{
    struct zetl_buf text, again;
    struct zetl_manifest m;
    struct zetl_errbuf eb = {""};

    zetl_buf_init(&text, 0);
    zetl_buf_init(&again, 0);
    zetl_manifest_init(&m);

    CHECK(fixture_load("two_tables", &text));
    CHECK(zetl_manifest_read(text.data, text.len, "zetl_0", &m, &eb) == ZETL_OK);
    if (eb.msg[0])
        fprintf(stderr, "  %s\n", eb.msg);
    CHECK_STR(m.stream, "zetl_0");
    CHECK(m.first_lsn == 0x22693F8 && m.last_lsn == 0x226A490 && m.end_lsn == 0x226A600);
    CHECK(m.transactions == 5 && m.rows == 9 && m.raw_bytes == 581);
    CHECK_STR(m.first_commit_time, "2026-11-29T20:53:28.718461Z");
    CHECK_STR(m.created_at, "2026-11-29T20:53:28.867917Z");
    CHECK_STR(m.tenant_column, "tenant_id");
    CHECK(m.nfiles == 2);
    if (m.nfiles == 2) {
        const struct zetl_manifest_file *f = &m.files[1];

        CHECK_STR(m.files[0].table, "users");
        CHECK(m.files[0].ntenants == 2);
        CHECK_STR(m.files[0].tenants[1], "tenant_b");
        CHECK_STR(f->table, "orders");
        CHECK_STR(f->file, "orders.csv.zst");
        CHECK(f->rows == 2 && f->bytes == 96);
        CHECK_STR(f->sha256, "eeec7b2682df27a29db34a59b3a9493f841d94d3cb4bce846edb54820b4a75f6");
        CHECK(f->ncols == 4);
        CHECK_STR(f->cols[0].name, "id");
        CHECK_STR(f->cols[0].type, "int8");
        CHECK(f->cols[0].typoid == 20 && f->cols[0].key);
        CHECK_STR(f->cols[2].type, "numeric(12,2)");
        CHECK(!f->cols[2].key);
    }
    zetl_manifest_release(&m);

    /* What the writer wrote, read and written again, is the same bytes. */
    for (size_t i = 0; i < sizeof(fixture_names) / sizeof(fixture_names[0]); i++) {
        CHECK(fixture_load(fixture_names[i], &text));
        CHECK(zetl_manifest_read(text.data, text.len, NULL, &m, &eb) == ZETL_OK);
        zetl_buf_reset(&again);
        zetl_manifest_write(&m, &again);
        CHECK(again.len == text.len && memcmp(again.data, text.data, text.len) == 0);
        zetl_manifest_release(&m);
    }

    /* A custom type and arrays keep their text. */
    CHECK(fixture_load("types", &text));
    CHECK(zetl_manifest_read(text.data, text.len, NULL, &m, &eb) == ZETL_OK);
    {
        bool mood = false, arr = false;

        for (size_t k = 0; m.nfiles == 1 && k < m.files[0].ncols; k++) {
            mood = mood || strcmp(m.files[0].cols[k].type, "tenant_t.mood") == 0;
            arr = arr || strcmp(m.files[0].cols[k].type, "_int4") == 0;
        }
        CHECK(mood && arr);
    }
    zetl_manifest_release(&m);
    zetl_buf_release(&again);
    zetl_buf_release(&text);
}

static void test_round_trip(void)
{
    static const char *const tenants[] = {"tenant_a", "a\"; drop table x; --"};
    static const struct zetl_manifest_col cols[] = {
        {"id", "int4", 23, true},
        {"Mixed \"Case\"\n", "numeric(30,2)", 1700, false},
        {"mood", "tenant_a.mood", UINT32_MAX, false},
    };
    struct zetl_manifest_file files[2];
    struct zetl_manifest m, back;
    struct zetl_buf text, again;
    struct zetl_errbuf eb = {""};

    zetl_manifest_init(&m);
    m.stream = "zetl_1";
    m.first_lsn = UINT64_C(0x16B374D848);
    m.last_lsn = UINT64_C(0x16B374D900);
    m.end_lsn = UINT64_C(0x7FFFFFFFFFFFFFFF);
    m.transactions = 3;
    m.rows = 12;
    m.raw_bytes = UINT64_C(1) << 40;
    m.first_commit_time = "2024-03-05T12:34:56.789012Z";
    m.last_commit_time = "2024-03-05T12:34:57.000001Z";
    m.created_at = "2024-03-05T12:34:58.104275Z";
    m.tenant_column = "tenant id";
    memset(files, 0, sizeof(files));
    files[0].table = "Order Items";
    files[0].file = "Order%20Items.csv.zst";
    files[0].rows = 12;
    files[0].bytes = 159;
    memcpy(files[0].sha256, "ef7b9f707e6c1c526fa3e94c3de1cca379a68ea5b341dad418de888eb0c7676d", 65);
    files[0].ntenants = 2;
    files[0].tenants = tenants;
    files[0].ncols = 3;
    files[0].cols = cols;
    files[1] = files[0];
    files[1].table = "café";
    files[1].file = "caf%C3%A9.2.csv.zst";
    files[1].ntenants = 0;
    files[1].ncols = 0; /* CREATE TABLE t () */
    m.nfiles = 2;
    m.files = files;

    zetl_buf_init(&text, 0);
    zetl_buf_init(&again, 0);
    zetl_manifest_write(&m, &text);
    CHECK(text.len > 0 && text.data[text.len - 1] == '\n');
    CHECK(zetl_manifest_read(text.data, text.len, "zetl_1", &back, &eb) == ZETL_OK);
    if (eb.msg[0])
        fprintf(stderr, "  %s\n", eb.msg);
    CHECK(manifests_equal(&m, &back));
    zetl_manifest_write(&back, &again);
    CHECK_STR(again.data, text.data);
    zetl_manifest_release(&back);

    /* No files, no optional text: still a manifest. */
    m.nfiles = 0;
    m.tenant_column = "";
    zetl_buf_reset(&text);
    zetl_manifest_write(&m, &text);
    CHECK(zetl_manifest_read(text.data, text.len, NULL, &back, &eb) == ZETL_OK);
    CHECK(manifests_equal(&m, &back));
    zetl_manifest_release(&back);

    /* A SQL_ASCII name that is not UTF-8: U+FFFD per byte, and it reads back. */
    m.nfiles = 1;
    files[0].table = "caf\xE9";
    zetl_buf_reset(&text);
    zetl_manifest_write(&m, &text);
    CHECK(zetl_manifest_read(text.data, text.len, NULL, &back, &eb) == ZETL_OK);
    CHECK(back.nfiles == 1 && str_eq(back.files[0].table, "caf\xEF\xBF\xBD"));
    zetl_manifest_release(&back);

    zetl_manifest_release(&m);
    zetl_buf_release(&again);
    zetl_buf_release(&text);
}

/* The JSON value at a path of object keys and array indexes ("files.1.sha256"). */
static json_t *walk(json_t *root, const char *path, char *last, size_t lastlen)
{
    char buf[256];
    char *save = NULL, *seg, *next;
    json_t *at = root;

    snprintf(buf, sizeof(buf), "%s", path);
    seg = strtok_r(buf, ".", &save);
    while (seg != NULL && (next = strtok_r(NULL, ".", &save)) != NULL) {
        at = json_is_array(at) ? json_array_get(at, strtoul(seg, NULL, 10))
                               : json_object_get(at, seg);
        seg = next;
    }
    snprintf(last, lastlen, "%s", seg ? seg : "");
    return at;
}

/* One change to a manifest: the JSON `value` at `path` (NULL value: removed). */
struct edit {
    const char *path, *value;
};

static void apply_edit(json_t *root, const struct edit *e)
{
    json_error_t jerr;
    json_t *parent, *v = NULL;
    char key[64];

    parent = walk(root, e->path, key, sizeof(key));
    if (e->value != NULL)
        v = json_loads(e->value, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (json_is_array(parent)) {
        if (v != NULL)
            json_array_set_new(parent, strtoul(key, NULL, 10), v);
        else
            json_array_remove(parent, strtoul(key, NULL, 10));
    } else if (v != NULL) {
        json_object_set_new(parent, key, v);
    } else {
        json_object_del(parent, key);
    }
}

/*
 * Reads the two_tables fixture with up to two edits (NULL path: none) and
 * checks the outcome: refused with a message containing `expect`, or
 * accepted when expect is NULL.
 */
static void check_edit(const struct edit e[2], const char *stream, const char *expect)
{
    struct zetl_buf text;
    struct zetl_manifest m;
    struct zetl_errbuf eb = {""};
    json_error_t jerr;
    json_t *root;
    char *out;
    enum zetl_err err;

    zetl_buf_init(&text, 0);
    if (!fixture_load("two_tables", &text)) {
        CHECK(false);
        return;
    }
    root = json_loadb(text.data, text.len, 0, &jerr);
    for (size_t i = 0; i < 2 && e[i].path != NULL; i++)
        apply_edit(root, &e[i]);
    out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    err = zetl_manifest_read(out, strlen(out), stream, &m, &eb);
    if (expect == NULL) {
        CHECK(err == ZETL_OK);
        if (err != ZETL_OK)
            fprintf(stderr, "  %s=%s: %s\n", e[0].path, e[0].value ? e[0].value : "(removed)",
                    eb.msg);
    } else {
        CHECK(err == ZETL_ERR_PROTOCOL && strstr(eb.msg, expect) != NULL);
        if (err != ZETL_ERR_PROTOCOL || strstr(eb.msg, expect) == NULL)
            fprintf(stderr, "  %s=%s: got \"%s\", expected \"%s\"\n", e[0].path,
                    e[0].value ? e[0].value : "(removed)", eb.msg, expect);
        CHECK(m.nfiles == 0 && m.files == NULL); /* released */
    }
    zetl_manifest_release(&m);
    free(out);
    json_decref(root);
    zetl_buf_release(&text);
}

static void test_policy(void)
{
    static const struct {
        struct edit e[2];
        const char *expect;
    } cases[] = {
        {{{"version", NULL}}, "version is missing"},
        {{{"version", "2"}}, "version 2 is not supported"},
        {{{"version", "\"1\""}}, "version is not an integer"},
        {{{"stream", NULL}}, "stream is missing"},
        {{{"stream", "\"\""}}, "stream is empty"},
        {{{"stream", "7"}}, "stream is not a string"},
        {{{"stream", "\"a/b\""}}, "stream \"a/b\" is not a valid stream name"},
        {{{"stream", "\"..\""}}, "is not a valid stream name"},
        {{{"stream", "\"a\\u0000b\""}}, "could not parse manifest"},
        {{{"first_lsn", "\"zz\""}}, "first_lsn is not an LSN"},
        {{{"first_lsn", "36082680"}}, "first_lsn is not an LSN"},
        {{{"first_lsn", NULL}, {"first_lsn_int", NULL}}, "first_lsn is missing"},
        {{{"first_lsn", NULL}}, NULL}, /* the integer form suffices */
        {{{"first_lsn_int", "36082681"}}, "first_lsn_int does not match first_lsn 0/22693F8"},
        {{{"first_lsn_int", "\"36082680\""}}, "first_lsn_int is not an integer"},
        {{{"last_lsn", "\"0/1000\""}, {"last_lsn_int", NULL}},
         "last_lsn 0/1000 is below first_lsn 0/22693F8"},
        {{{"last_lsn_int", "4096"}}, "last_lsn_int does not match last_lsn"},
        {{{"end_lsn", NULL}, {"end_lsn_int", "36082680"}},
         "end_lsn 0/22693F8 is below last_lsn 0/226A490"},
        {{{"end_lsn_int", NULL}}, NULL}, /* the text form suffices */
        {{{"transactions", "-1"}}, "transactions is not an integer between 0 and"},
        {{{"rows", "1.5"}}, "rows is not an integer"},
        {{{"raw_bytes", NULL}}, NULL},
        {{{"created_at", "5"}}, "created_at is not a string"},
        {{{"tenant_column", NULL}}, NULL},
        {{{"format", "[]"}}, "format is not an object"},
        {{{"format.type", "\"parquet\""}}, "format.type \"parquet\" is not \"csv\""},
        {{{"format.compression", "\"gzip\""}}, "format.compression \"gzip\" is not \"zstd\""},
        {{{"format", NULL}}, NULL},
        {{{"unknown_key", "{\"x\": 1}"}}, NULL},
        {{{"files", NULL}}, "files is missing"},
        {{{"files", "{}"}}, "files is not an array"},
        {{{"files", "[]"}}, NULL},
        {{{"files.1", "3"}}, "files[1] is not an object"},
        {{{"files.1.table", NULL}}, "files[1].table is missing"},
        {{{"files.1.table", "\"\""}}, "files[1].table is empty"},
        {{{"files.1.file", NULL}}, "files[1].file is missing"},
        {{{"files.1.file", "\"../x.csv.zst\""}}, "files[1].file \"../x.csv.zst\" is not a safe"},
        {{{"files.1.file", "\"a/b.csv.zst\""}}, "files[1].file \"a/b.csv.zst\" is not a safe"},
        {{{"files.1.file", "\"..\""}}, "files[1].file \"..\" is not a safe"},
        {{{"files.1.file", "\".hidden\""}}, "is not a safe file name"},
        {{{"files.1.file", "\"manifest.json\""}}, "is not a safe file name"},
        {{{"files.1.file", "\"x y.csv.zst\""}}, "is not a safe file name"},
        {{{"files.1.file", "\"a..b.csv.zst\""}}, NULL}, /* the table "a..b" */
        {{{"files.1.file", "\"USERS.csv.zst\""}}, "files[1].file repeats files[0].file"},
        {{{"files.1.sha256", NULL}}, "files[1].sha256 is missing"},
        {{{"files.1.sha256",
           "\"EEEC7B2682DF27A29DB34A59B3A9493F841D94D3CB4BCE846EDB54820B4A75F6\""}},
         "files[1].sha256 is not 64 lower-case hex digits"},
        {{{"files.1.sha256", "\"eeec\""}}, "files[1].sha256 is not 64 lower-case hex digits"},
        {{{"files.0.rows", "\"7\""}}, "files[0].rows is not an integer"},
        {{{"files.0.rows", NULL}}, "files[0].rows is missing"},
        {{{"files.0.bytes", "-1"}}, "files[0].bytes is not an integer"},
        {{{"files.0.tenants", "\"x\""}}, "files[0].tenants is not an array"},
        {{{"files.0.tenants", "[1]"}}, "files[0].tenants[0] is not a string"},
        {{{"files.0.tenants", NULL}}, NULL},
        {{{"files.0.columns", NULL}}, "files[0].columns is missing"},
        {{{"files.0.columns", "[]"}}, NULL},
        {{{"files.0.columns.2", "\"x\""}}, "files[0].columns[2] is not an object"},
        {{{"files.0.columns.2.name", "\"\""}}, "files[0].columns[2].name is empty"},
        {{{"files.0.columns.2.type", NULL}}, "files[0].columns[2].type is missing"},
        {{{"files.0.columns.1.typoid", "4294967296"}},
         "files[0].columns[1].typoid is not an integer between 0 and 4294967295"},
        {{{"files.0.columns.1.typoid", NULL}}, NULL},
        {{{"files.0.columns.1.key", "\"yes\""}}, "files[0].columns[1].key is not a boolean"},
        {{{"files.0.columns.1.key", NULL}}, NULL},
    };
    static const struct edit stream_edit[2] = {{"stream", "\"zetl_0\""}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_edit(cases[i].e, NULL, cases[i].expect);
    check_edit(stream_edit, "zetl_1", "stream \"zetl_0\" is not the expected \"zetl_1\"");
    check_edit(stream_edit, "zetl_0", NULL);
}

static void check_text(const char *text, const char *expect)
{
    struct zetl_manifest m;
    struct zetl_errbuf eb = {""};
    enum zetl_err err = read_exact(text, strlen(text), NULL, &m, &eb);

    CHECK(expect == NULL ? err == ZETL_OK
                         : err == ZETL_ERR_PROTOCOL && strstr(eb.msg, expect) != NULL);
    if (expect != NULL && strstr(eb.msg, expect) == NULL)
        fprintf(stderr, "  got \"%s\", expected \"%s\"\n", eb.msg, expect);
    zetl_manifest_release(&m);
}

static void test_text(void)
{
    struct zetl_manifest m;
    struct zetl_errbuf eb = {""};
    const char *lsn_ints = "{\"version\": 1, \"stream\": \"s\", \"first_lsn_int\": 16, "
                           "\"last_lsn_int\": 32, \"end_lsn_int\": 40, \"files\": []}";

    check_text("", "could not parse manifest");
    check_text("[]", "manifest is not a JSON object");
    check_text("{\"version\": 1, \"version\": 1}", "duplicate object key");
    check_text("{\"version\": 1} x", "could not parse manifest");
    /* Integers only (no reader needs the text form when it has these). */
    CHECK(read_exact(lsn_ints, strlen(lsn_ints), "s", &m, &eb) == ZETL_OK);
    CHECK(m.first_lsn == 16 && m.last_lsn == 32 && m.end_lsn == 40 && m.nfiles == 0);
    CHECK_STR(m.tenant_column, "");
    zetl_manifest_release(&m);
    check_text("{\"version\": 1, \"stream\": \"s\", \"first_lsn_int\": -16, "
               "\"last_lsn_int\": 32, \"end_lsn_int\": 40, \"files\": []}",
               "first_lsn_int is negative");
    /* Over the cap: refused before a byte is looked at. */
    CHECK(zetl_manifest_read("{}", ZETL_MANIFEST_MAX + 1, NULL, &m, &eb) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(eb.msg, "larger than") != NULL);
    zetl_manifest_release(&m);
}

static void test_cut_everywhere(void)
{
    struct zetl_buf text;
    struct zetl_manifest m;
    struct zetl_errbuf eb;

    zetl_buf_init(&text, 0);
    for (size_t i = 0; i < sizeof(fixture_names) / sizeof(fixture_names[0]); i++) {
        size_t refused = 0, cuts;

        if (!fixture_load(fixture_names[i], &text)) {
            CHECK(false);
            continue;
        }
        /* Every proper prefix lacks the closing brace; the last cut drops only the newline. */
        cuts = text.len - 1;
        for (size_t n = 0; n < cuts; n++) {
            eb.msg[0] = '\0';
            if (read_exact(text.data, n, NULL, &m, &eb) == ZETL_ERR_PROTOCOL && eb.msg[0] != '\0')
                refused++;
            zetl_manifest_release(&m);
        }
        CHECK(refused == cuts);
        CHECK(read_exact(text.data, cuts, NULL, &m, &eb) == ZETL_OK);
        zetl_manifest_release(&m);
    }
    zetl_buf_release(&text);
}

static void test_read_file(void)
{
    struct zetl_manifest m;
    struct zetl_errbuf eb = {""};
    const char *src = getenv("ZETL_SOURCE_DIR");
    char path[4096];

    snprintf(path, sizeof(path), "%s/tests/fixtures/manifest/types.json", src ? src : ".");
    CHECK(zetl_manifest_read_file(path, "zetl_0", &m, &eb) == ZETL_OK);
    CHECK(m.nfiles == 1);
    zetl_manifest_release(&m);
    CHECK(zetl_manifest_read_file(path, "other", &m, &eb) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(eb.msg, path) != NULL && strstr(eb.msg, "is not the expected") != NULL);
    zetl_manifest_release(&m);
    snprintf(path, sizeof(path), "%s/tests/fixtures/manifest/none.json", src ? src : ".");
    CHECK(zetl_manifest_read_file(path, NULL, &m, &eb) == ZETL_ERR_IO);
    CHECK(strstr(eb.msg, "none.json") != NULL);
    zetl_manifest_release(&m);
}

static void test_names(void)
{
    CHECK(zetl_manifest_stream_name_ok("zetl_0"));
    CHECK(!zetl_manifest_stream_name_ok(""));
    CHECK(!zetl_manifest_stream_name_ok("."));
    CHECK(!zetl_manifest_stream_name_ok("a/b"));
    CHECK(zetl_manifest_file_name_ok("50%25.csv.zst"));
    CHECK(zetl_manifest_file_name_ok("users.2.2.csv.zst"));
    CHECK(!zetl_manifest_file_name_ok("%2Ehidden.csv.zst/"));
    CHECK(!zetl_manifest_file_name_ok("a\\b"));
    {
        char longname[300];

        memset(longname, 'a', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        CHECK(!zetl_manifest_file_name_ok(longname));
        longname[255] = '\0';
        CHECK(zetl_manifest_file_name_ok(longname));
    }
}

/* Manifest times back to microseconds, as retention reads them. */
static void test_times(void)
{
    static const struct {
        const char *s;
        bool ok;
        int64_t want;
    } cases[] = {
        {"2024-03-05T12:34:57.000001Z", true, INT64_C(1709642097000001)},
        /* what zetl_batch_format_time renders for the tests' TS1 */
        {"2024-03-05T12:34:56.789012Z", true, INT64_C(762957296789012) + INT64_C(946684800000000)},
        {"2024-03-05T12:34:57Z", true, INT64_C(1709642097000000)},
        {"2024-03-05T12:34:57.5Z", true, INT64_C(1709642097500000)},
        {"1970-01-01T00:00:00.000000Z", true, 0},
        {"1969-12-31T23:59:59.000000Z", true, -INT64_C(1000000)},
        {"", false, 0},
        {"2024-03-05 12:34:57.000001+00", false, 0},
        {"2024-03-05T12:34:57.0000001Z", false, 0},
        {"2024-03-05T12:34:57.Z", false, 0},
        {"2024-03-05T12:34:57.000001", false, 0},
        {"2024-13-05T12:34:57Z", false, 0},
        {"2024-03-05T24:00:00Z", false, 0},
        {"2024-03-05T12:34:57ZZ", false, 0},
        {"x024-03-05T12:34:57Z", false, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got = 0;
        bool ok = zetl_manifest_parse_time(cases[i].s, &got);
        if (ok != cases[i].ok || (ok && got != cases[i].want))
            fprintf(stderr, "time \"%s\": got ok=%d %lld\n", cases[i].s, ok, (long long)got);
        CHECK(ok == cases[i].ok);
        if (ok && cases[i].ok)
            CHECK(got == cases[i].want);
    }
}

int main(void)
{
    test_golden();
    test_round_trip();
    test_policy();
    test_text();
    test_cut_everywhere();
    test_read_file();
    test_names();
    test_times();
    return zetl_tap_done();
}
