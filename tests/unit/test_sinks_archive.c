/*
 * Unit tests of the file:// archive: real sealed batches put into a temp
 * directory; the manifest read back with jansson (an independent reader)
 * and with proto/manifest.c, the files with sha256sum.
 */
#include "sinks/archive.h"
#include "tests/unit/tap.h"

#include "common/buf.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LSN1 UINT64_C(0x16B374D848)
#define LSN2 UINT64_C(0x16B374D900)
#define TS1 INT64_C(762957296789012) /* 2024-03-05 12:34:56.789012 UTC */
#define TS2 INT64_C(762957297000001) /* 2024-03-05 12:34:57.000001 UTC */

static char tmpdir[256];

/* zetl_archive_open with a config holding only archive.url. */
static enum zetl_err open_url(const char *url, struct zetl_archive **out, struct zetl_errbuf *eb)
{
    struct zetl_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.archive.url = (char *)url;
    return zetl_archive_open(&cfg, out, eb);
}

static struct zetl_relcol users_cols[] = {
    {"id", 23, -1, true, NULL},
    {"name", 25, -1, false, NULL},
    {"amount", 1700, ((12 << 16) | 3) + 4, false, NULL},
};
static struct zetl_relation rel_users = {16401, "tenant_a", "users", 'd', 3, users_cols, 1, NULL};
static struct zetl_relcol events_cols[] = {
    {"id", 20, -1, true, NULL},
    {"kind", 16390, -1, false, NULL},
};
static struct zetl_relation rel_events = {16402, "tenant_a",  "events", 'd',
                                          2,     events_cols, 1,        NULL};
static uint16_t idx_all[] = {0, 1, 2};

static struct zetl_value T(const char *s) {
    struct zetl_value v = {ZETL_COL_TEXT, {s, (uint32_t)strlen(s)}};
    return v;
}

/*
 * Seals a batch of two transactions (first, last) with rows in two tables and
 * two tenants, the last committed at ts_last.
 */
static struct zetl_batch *
make_batch_at(const char *spool, const char *stream, uint64_t first, uint64_t last, int64_t ts_last)
{
    struct zetl_batch_writer *w = NULL;
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_batch_target users_a, users_b, events_a;
    struct zetl_value vu[] = {T("1"), T("a,b"), T("1.500")};
    struct zetl_value ve[] = {T("7"), T("click")};

    memset(&users_a, 0, sizeof(users_a));
    users_a.tenant = "tenant_a";
    users_a.table = "users";
    users_a.nout = 3;
    users_a.out_index = idx_all;
    users_b = users_a;
    users_b.tenant = "tenant_b";
    events_a = users_a;
    events_a.table = "events";
    events_a.nout = 2;

    if (zetl_batch_writer_new(spool, stream, "tenant_id", NULL, &w, &eb) != ZETL_OK)
        goto fail;
    if (zetl_batch_begin_txn(w, first, TS1, &eb) != ZETL_OK ||
        zetl_batch_add(w, &(struct zetl_row){ZETL_OP_INSERT, users_a, &rel_users, vu}, &eb) ||
        zetl_batch_add(w, &(struct zetl_row){ZETL_OP_INSERT, events_a, &rel_events, ve}, &eb) ||
        zetl_batch_end_txn(w, first + 8, &eb) != ZETL_OK)
        goto fail;
    if (zetl_batch_begin_txn(w, last, ts_last, &eb) != ZETL_OK ||
        zetl_batch_add(w, &(struct zetl_row){ZETL_OP_UPDATE, users_b, &rel_users, vu}, &eb) ||
        zetl_batch_end_txn(w, last + 0x28, &eb) != ZETL_OK)
        goto fail;
    if (zetl_batch_seal(w, &b, &eb) != ZETL_OK)
        goto fail;
    zetl_batch_writer_free(w);
    return b;

fail:
    fprintf(stderr, "make_batch: %s\n", eb.msg);
    zetl_batch_writer_free(w);
    return NULL;
}

static struct zetl_batch *make_batch(const char *spool, const char *stream, uint64_t first,
                                     uint64_t last)
{
    return make_batch_at(spool, stream, first, last, TS2);
}

static bool path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Names in a directory, sorted, comma separated; "" when missing. */
static void list_dir(const char *path, struct zetl_buf *out)
{
    struct dirent **ents = NULL;
    int n = scandir(path, &ents, NULL, alphasort);

    zetl_buf_reset(out);
    zetl_buf_puts(out, "");
    for (int i = 0; i < n; i++) {
        if (strcmp(ents[i]->d_name, ".") != 0 && strcmp(ents[i]->d_name, "..") != 0)
            zetl_buf_printf(out, "%s%s", out->len ? "," : "", ents[i]->d_name);
        free(ents[i]);
    }
    free(ents);
}

static bool run_capture(const char *cmd, struct zetl_buf *out)
{
    FILE *p = popen(cmd, "r");
    char chunk[4096];
    size_t n;

    if (p == NULL)
        return false;
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
        zetl_buf_append(out, chunk, n);
    return pclose(p) == 0;
}

static const char *jget_str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "(missing)";
}

static long long jget_int(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static void check_manifest(const char *dir, const struct zetl_batch *b)
{
    struct zetl_buf path, text, cmd, out;
    json_t *root, *format, *files, *f, *cols;
    json_error_t jerr;
    FILE *fp;
    char chunk[4096];
    size_t n;

    zetl_buf_init(&path, 0);
    zetl_buf_init(&text, 0);
    zetl_buf_init(&cmd, 0);
    zetl_buf_init(&out, 0);
    zetl_buf_printf(&path, "%s/manifest.json", dir);
    fp = fopen(path.data, "r");
    CHECK(fp != NULL);
    if (fp == NULL)
        goto done;
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        zetl_buf_append(&text, chunk, n);
    fclose(fp);

    root = json_loads(text.data, 0, &jerr);
    CHECK(root != NULL);
    if (root == NULL) {
        fprintf(stderr, "  %s\n", jerr.text);
        goto done;
    }
    CHECK(jget_int(root, "version") == 1);
    CHECK_STR(jget_str(root, "stream"), "s1");
    CHECK_STR(jget_str(root, "first_lsn"), "16/B374D848");
    CHECK_STR(jget_str(root, "last_lsn"), "16/B374D900");
    CHECK_STR(jget_str(root, "end_lsn"), "16/B374D928");
    CHECK(jget_int(root, "first_lsn_int") == (long long)LSN1);
    CHECK(jget_int(root, "last_lsn_int") == (long long)LSN2);
    CHECK(jget_int(root, "end_lsn_int") == (long long)(LSN2 + 0x28));
    CHECK(jget_int(root, "transactions") == 2);
    CHECK(jget_int(root, "rows") == 3);
    CHECK(jget_int(root, "raw_bytes") == (long long)b->raw_bytes);
    CHECK_STR(jget_str(root, "first_commit_time"), "2024-03-05T12:34:56.789012Z");
    CHECK_STR(jget_str(root, "last_commit_time"), "2024-03-05T12:34:57.000001Z");
    CHECK(strlen(jget_str(root, "created_at")) == 27);
    CHECK_STR(jget_str(root, "tenant_column"), "tenant_id");
    format = json_object_get(root, "format");
    CHECK_STR(jget_str(format, "type"), "csv");
    CHECK_STR(jget_str(format, "compression"), "zstd");
    CHECK(json_is_false(json_object_get(format, "header")));
    CHECK_STR(jget_str(format, "null"), "unquoted empty field");
    {
        json_t *meta = json_object_get(format, "meta_columns");
        CHECK(json_array_size(meta) == 5);
        CHECK_STR(json_string_value(json_array_get(meta, 0)), "_zetl_op");
        CHECK_STR(json_string_value(json_array_get(meta, 4)), "_zetl_unchanged");
    }

    files = json_object_get(root, "files");
    CHECK(json_array_size(files) == 2);
    f = json_array_get(files, 0);
    CHECK_STR(jget_str(f, "table"), "users");
    CHECK_STR(jget_str(f, "file"), "users.csv.zst");
    CHECK(jget_int(f, "rows") == 2);
    CHECK(jget_int(f, "bytes") == (long long)b->files[0].bytes);
    CHECK_STR(jget_str(f, "sha256"), b->files[0].sha256);
    CHECK(json_array_size(json_object_get(f, "tenants")) == 2);
    CHECK_STR(json_string_value(json_array_get(json_object_get(f, "tenants"), 1)), "tenant_b");
    cols = json_object_get(f, "columns");
    CHECK(json_array_size(cols) == 3);
    CHECK_STR(jget_str(json_array_get(cols, 0), "name"), "id");
    CHECK_STR(jget_str(json_array_get(cols, 0), "type"), "int4");
    CHECK(jget_int(json_array_get(cols, 0), "typoid") == 23);
    CHECK(json_is_true(json_object_get(json_array_get(cols, 0), "key")));
    CHECK_STR(jget_str(json_array_get(cols, 2), "type"), "numeric(12,3)");
    CHECK(json_is_false(json_object_get(json_array_get(cols, 2), "key")));
    f = json_array_get(files, 1);
    CHECK_STR(jget_str(f, "file"), "events.csv.zst");
    CHECK_STR(jget_str(json_array_get(json_object_get(f, "columns"), 1), "type"), "oid:16390");

    /* The archived file is what the manifest says. */
    zetl_buf_printf(&cmd, "sha256sum '%s/users.csv.zst'", dir);
    CHECK(run_capture(cmd.data, &out));
    CHECK(out.len > 64 && strncmp(out.data, b->files[0].sha256, 64) == 0);
    zetl_buf_reset(&cmd);
    zetl_buf_reset(&out);
    zetl_buf_printf(&cmd, "zstd -q -dc '%s/events.csv.zst'", dir);
    CHECK(run_capture(cmd.data, &out));
    CHECK_STR(out.data ? out.data : "",
              "I,97500059720,1,2024-03-05 12:34:56.789012+00,,tenant_a,7,click\n");

    /* Keys in a stable order, pretty-printed. */
    {
        static const char *const order[] = {"\"version\"",
                                            "\"stream\"",
                                            "\"first_lsn\"",
                                            "\"last_lsn\"",
                                            "\"end_lsn\"",
                                            "\"first_lsn_int\"",
                                            "\"last_lsn_int\"",
                                            "\"end_lsn_int\"",
                                            "\"transactions\"",
                                            "\"rows\"",
                                            "\"raw_bytes\"",
                                            "\"first_commit_time\"",
                                            "\"last_commit_time\"",
                                            "\"created_at\"",
                                            "\"tenant_column\"",
                                            "\"format\"",
                                            "\"files\"",
                                            "\"table\"",
                                            "\"file\"",
                                            "\"bytes\"",
                                            "\"sha256\"",
                                            "\"tenants\"",
                                            "\"columns\"",
                                            "\"name\"",
                                            "\"type\"",
                                            "\"typoid\"",
                                            "\"key\""};
        const char *at = text.data;
        for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
            const char *next = strstr(at, order[i]);
            CHECK(next != NULL);
            if (next == NULL)
                fprintf(stderr, "  key %s out of order\n", order[i]);
            else
                at = next;
        }
        CHECK(strncmp(text.data, "{\n  \"version\": 1,\n  \"stream\": \"s1\",\n", 35) == 0);
        CHECK(text.data[text.len - 1] == '\n');
    }
    json_decref(root);
done:
    zetl_buf_release(&out);
    zetl_buf_release(&cmd);
    zetl_buf_release(&text);
    zetl_buf_release(&path);
}

static void test_put(void)
{
    struct zetl_archive *ar = NULL;
    struct zetl_batch *b = NULL, *b2 = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf url, spool, p, ls, m1, m2;
    uint64_t last = 1, end = 1;
    char name[40];

    zetl_buf_init(&url, 0);
    zetl_buf_init(&spool, 0);
    zetl_buf_init(&p, 0);
    zetl_buf_init(&ls, 0);
    zetl_buf_init(&m1, 0);
    zetl_buf_init(&m2, 0);
    zetl_buf_printf(&url, "file://%s/archive/root", tmpdir);
    zetl_buf_printf(&spool, "%s/spool", tmpdir);

    CHECK(open_url(url.data, &ar, &eb) == ZETL_OK);
    if (ar == NULL) {
        fprintf(stderr, "  %s\n", eb.msg);
        goto done;
    }
    zetl_buf_printf(&p, "%s/archive/root", tmpdir);
    CHECK(path_exists(p.data));
    CHECK(zetl_archive_last_lsn(ar, "s1", &last, &end, &eb) == ZETL_OK);
    CHECK(last == 0 && end == 0);

    b = make_batch(spool.data, "s1", LSN1, LSN2);
    CHECK(b != NULL);
    if (b == NULL)
        goto done;
    zetl_archive_batch_name(b, name);
    CHECK_STR(name, "00000016B374D848-00000016B374D900");
    zetl_archive_manifest(b, &m1);
    CHECK(m1.len > 0 && strstr(m1.data, "\"first_lsn\": \"16/B374D848\"") != NULL);
    /* The batch's manifest reads back as the batch (proto/manifest.c's policy). */
    {
        struct zetl_manifest m;

        CHECK(zetl_manifest_read(m1.data, m1.len, "s1", &m, &eb) == ZETL_OK);
        CHECK(m.first_lsn == LSN1 && m.last_lsn == LSN2 && m.end_lsn == LSN2 + 0x28);
        CHECK(m.transactions == 2 && m.rows == 3 && m.raw_bytes == b->raw_bytes);
        CHECK_STR(m.first_commit_time, "2024-03-05T12:34:56.789012Z");
        CHECK_STR(m.tenant_column, "tenant_id");
        CHECK(m.nfiles == 2);
        if (m.nfiles == 2) {
            CHECK_STR(m.files[0].file, "users.csv.zst");
            CHECK_STR(m.files[0].sha256, b->files[0].sha256);
            CHECK(m.files[0].bytes == b->files[0].bytes && m.files[0].ntenants == 2);
            CHECK(m.files[0].ncols == 3 && m.files[0].cols[0].key && !m.files[0].cols[2].key);
            CHECK_STR(m.files[0].cols[2].type, "numeric(12,3)");
            CHECK_STR(m.files[1].cols[1].type, "oid:16390");
        }
        zetl_manifest_release(&m);
    }

    CHECK(zetl_archive_put(ar, b, &eb) == ZETL_OK);
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/archive/root/s1", tmpdir);
    list_dir(p.data, &ls);
    CHECK_STR(ls.data, "00000016B374D848-00000016B374D900"); /* no .tmp- left */
    zetl_buf_printf(&p, "/%s", name);
    list_dir(p.data, &ls);
    CHECK_STR(ls.data, "events.csv.zst,manifest.json,users.csv.zst");
    check_manifest(p.data, b);
    list_dir(b->dir, &ls);
    CHECK_STR(ls.data, ""); /* moved out of the spool */

    CHECK(zetl_archive_last_lsn(ar, "s1", &last, &end, &eb) == ZETL_OK);
    CHECK(last == LSN2 && end == LSN2 + 0x28);

    /* Replay after a crash: the same batch again (from a fresh spool) is a success, once. */
    {
        struct zetl_buf before, after, mpath;
        zetl_buf_init(&before, 0);
        zetl_buf_init(&after, 0);
        zetl_buf_init(&mpath, 0);
        zetl_buf_printf(&mpath, "cat '%s/manifest.json'", p.data);
        CHECK(run_capture(mpath.data, &before));
        zetl_buf_reset(&spool);
        zetl_buf_printf(&spool, "%s/spool-replay", tmpdir);
        b2 = make_batch(spool.data, "s1", LSN1, LSN2);
        CHECK(b2 != NULL);
        if (b2 != NULL) {
            CHECK(zetl_archive_put(ar, b2, &eb) == ZETL_OK);
            zetl_buf_reset(&ls);
            list_dir(p.data, &ls);
            CHECK_STR(ls.data, "events.csv.zst,manifest.json,users.csv.zst");
            CHECK(run_capture(mpath.data, &after));
            CHECK_STR(after.data, before.data); /* not rewritten */
            zetl_buf_reset(&mpath);
            zetl_buf_printf(&mpath, "%s/archive/root/s1", tmpdir);
            list_dir(mpath.data, &ls);
            CHECK_STR(ls.data, "00000016B374D848-00000016B374D900");
        }
        zetl_buf_release(&mpath);
        zetl_buf_release(&after);
        zetl_buf_release(&before);
    }

done:
    zetl_batch_free(b2);
    zetl_batch_free(b);
    zetl_archive_free(ar);
    zetl_buf_release(&m2);
    zetl_buf_release(&m1);
    zetl_buf_release(&ls);
    zetl_buf_release(&p);
    zetl_buf_release(&spool);
    zetl_buf_release(&url);
}

static void test_last_lsn_and_leftovers(void)
{
    struct zetl_archive *ar = NULL;
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf url, spool, p, ls;
    uint64_t last = 0, end = 0;
    FILE *f;

    zetl_buf_init(&url, 0);
    zetl_buf_init(&spool, 0);
    zetl_buf_init(&p, 0);
    zetl_buf_init(&ls, 0);
    zetl_buf_printf(&url, "file://%s/arch2/", tmpdir);
    zetl_buf_printf(&spool, "%s/spool2", tmpdir);
    CHECK(open_url(url.data, &ar, &eb) == ZETL_OK);
    if (ar == NULL)
        goto done;

    /* Put out of LSN order: the newest is found by name, not by time of writing. */
    uint64_t ranges[][2] = {{0x3000, 0x3100}, {0x1000, 0x1100}, {0x5000, 0x5200}, {0x2000, 0x2000}};
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        b = make_batch(spool.data, "s2", ranges[i][0], ranges[i][1]);
        CHECK(b != NULL);
        if (b != NULL)
            CHECK(zetl_archive_put(ar, b, &eb) == ZETL_OK);
        zetl_batch_free(b);
        b = NULL;
    }

    /* Leftovers of crashed puts, and names that are not batches. */
    zetl_buf_printf(&p, "%s/arch2/s2/.tmp-0000000000009000-0000000000009100", tmpdir);
    CHECK(mkdir(p.data, 0755) == 0);
    zetl_buf_puts(&p, "/users.csv.zst");
    f = fopen(p.data, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs("partial", f);
        fclose(f);
    }
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/arch2/s2/notes", tmpdir);
    mkdir(p.data, 0755);
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/arch2/s2/0000000000009000-000000000000910", tmpdir);
    mkdir(p.data, 0755);
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/arch2/s2/0000000000009000-000000000000910g", tmpdir);
    mkdir(p.data, 0755);
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/arch2/s2/0000000000009000-000000000000910a", tmpdir);
    mkdir(p.data, 0755); /* lower-case hex: not ours */

    CHECK(zetl_archive_last_lsn(ar, "s2", &last, &end, &eb) == ZETL_OK);
    CHECK(last == 0x5200 && end == 0x5200 + 0x28);
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/arch2/s2", tmpdir);
    list_dir(p.data, &ls);
    CHECK_STR(ls.data, "0000000000001000-0000000000001100,0000000000002000-0000000000002000,"
                       "0000000000003000-0000000000003100,0000000000005000-0000000000005200,"
                       "0000000000009000-000000000000910,0000000000009000-000000000000910a,"
                       "0000000000009000-000000000000910g,notes");

    /* Another stream is independent. */
    CHECK(zetl_archive_last_lsn(ar, "other", &last, &end, &eb) == ZETL_OK);
    CHECK(last == 0 && end == 0);
    CHECK(zetl_archive_last_lsn(ar, "..", &last, &end, &eb) == ZETL_ERR_USAGE);

    /* An interrupted put of the same batch left its tmp directory: the retry completes it. */
    b = make_batch(spool.data, "s2", 0x6000, 0x6100);
    CHECK(b != NULL);
    if (b != NULL) {
        zetl_buf_reset(&p);
        zetl_buf_printf(&p, "%s/arch2/s2/.tmp-0000000000006000-0000000000006100", tmpdir);
        CHECK(mkdir(p.data, 0755) == 0);
        zetl_buf_puts(&p, "/stray.csv.zst");
        f = fopen(p.data, "w");
        if (f != NULL)
            fclose(f);
        CHECK(zetl_archive_put(ar, b, &eb) == ZETL_OK);
        zetl_buf_reset(&p);
        zetl_buf_printf(&p, "%s/arch2/s2/0000000000006000-0000000000006100", tmpdir);
        list_dir(p.data, &ls);
        CHECK_STR(ls.data, "events.csv.zst,manifest.json,users.csv.zst");
        zetl_buf_reset(&p);
        zetl_buf_printf(&p, "%s/arch2/s2/.tmp-0000000000006000-0000000000006100", tmpdir);
        CHECK(!path_exists(p.data));
    }
    zetl_batch_free(b);
    b = NULL;

    /* A newest batch directory without a manifest is damage, not something to skip. */
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/arch2/s2/0000000000007000-0000000000007000", tmpdir);
    CHECK(mkdir(p.data, 0755) == 0);
    CHECK(zetl_archive_last_lsn(ar, "s2", &last, &end, &eb) == ZETL_ERR_IO);
    CHECK(strstr(eb.msg, "0000000000007000-0000000000007000") != NULL);
    zetl_buf_puts(&p, "/manifest.json");
    f = fopen(p.data, "w");
    if (f != NULL) {
        fputs("{\"version\": 1, \"stream\": \"s2\", \"first_lsn\": ", f);
        fclose(f);
    }
    CHECK(zetl_archive_last_lsn(ar, "s2", &last, &end, &eb) == ZETL_ERR_IO);
    CHECK(strstr(eb.msg, "could not parse") != NULL);
    /* A manifest of another stream: the message names the field. */
    f = fopen(p.data, "w");
    if (f != NULL) {
        fputs("{\"version\": 1, \"stream\": \"s9\", \"first_lsn\": \"0/7000\", "
              "\"last_lsn\": \"0/7000\", \"end_lsn\": \"0/7028\", \"files\": []}\n",
              f);
        fclose(f);
    }
    CHECK(zetl_archive_last_lsn(ar, "s2", &last, &end, &eb) == ZETL_ERR_IO);
    CHECK(strstr(eb.msg, "is damaged") != NULL &&
          strstr(eb.msg, "stream \"s9\" is not the expected \"s2\"") != NULL);

done:
    zetl_batch_free(b);
    zetl_archive_free(ar);
    zetl_buf_release(&ls);
    zetl_buf_release(&p);
    zetl_buf_release(&spool);
    zetl_buf_release(&url);
}

static void test_urls(void)
{
    struct zetl_archive *ar = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf p;
    char cwd[1024];
    FILE *f;

    zetl_buf_init(&p, 0);
    CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
    CHECK(chdir(tmpdir) == 0);

    CHECK(open_url("file://./rel/a", &ar, &eb) == ZETL_OK);
    zetl_archive_free(ar);
    ar = NULL;
    CHECK(path_exists("rel/a"));
    CHECK(open_url("file://rel2", &ar, &eb) == ZETL_OK);
    zetl_archive_free(ar);
    ar = NULL;
    CHECK(path_exists("rel2"));

    /* s3:// is the s3 backend's: without credentials it stops before any network I/O. */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/zetl-test-credentials", 1);
    CHECK(open_url("s3://bucket/prefix", &ar, &eb) == ZETL_ERR_FATAL && ar == NULL);
    CHECK(strstr(eb.msg, "no AWS credentials") != NULL);
    CHECK(open_url("http://example.com/x", &ar, &eb) == ZETL_ERR_USAGE && ar == NULL);
    CHECK(strstr(eb.msg, "unsupported archive url") != NULL);
    CHECK(open_url("file://", &ar, &eb) == ZETL_ERR_USAGE && ar == NULL);
    CHECK(open_url("/abs/no/scheme", &ar, &eb) == ZETL_ERR_USAGE && ar == NULL);

    f = fopen("plain", "w");
    if (f != NULL)
        fclose(f);
    zetl_buf_printf(&p, "file://%s/plain/archive", tmpdir);
    CHECK(open_url(p.data, &ar, &eb) == ZETL_ERR_IO && ar == NULL);
    CHECK(strstr(eb.msg, "could not create directory") != NULL);

    CHECK(chdir(cwd) == 0);
    zetl_buf_release(&p);
}

/* Spool and archive on different file systems: rename gives EXDEV, the files are copied. */
static void test_cross_device(void)
{
    struct zetl_archive *ar = NULL;
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf url, ls, p;
    struct stat a, s;
    char spool[] = "/dev/shm/zetl-test-archive-XXXXXX";

    if (stat("/dev/shm", &s) != 0 || stat(tmpdir, &a) != 0 || a.st_dev == s.st_dev ||
        mkdtemp(spool) == NULL) {
        fprintf(stderr, "# skipped: no second file system for the EXDEV test\n");
        return;
    }
    zetl_buf_init(&url, 0);
    zetl_buf_init(&ls, 0);
    zetl_buf_init(&p, 0);
    zetl_buf_printf(&url, "file://%s/arch3", tmpdir);
    CHECK(open_url(url.data, &ar, &eb) == ZETL_OK);
    b = make_batch(spool, "s1", LSN1, LSN2);
    CHECK(b != NULL);
    if (ar != NULL && b != NULL) {
        CHECK(zetl_archive_put(ar, b, &eb) == ZETL_OK);
        zetl_buf_printf(&p, "%s/arch3/s1/00000016B374D848-00000016B374D900", tmpdir);
        list_dir(p.data, &ls);
        CHECK_STR(ls.data, "events.csv.zst,manifest.json,users.csv.zst");
        check_manifest(p.data, b);
        list_dir(b->dir, &ls);
        CHECK_STR(ls.data, "");
    }
    zetl_batch_free(b);
    zetl_archive_free(ar);
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "rm -rf '%s'", spool);
    if (system(p.data) != 0)
        fprintf(stderr, "could not remove %s\n", spool);
    zetl_buf_release(&p);
    zetl_buf_release(&ls);
    zetl_buf_release(&url);
}

/* Bytes of the plain files in a directory. */
static uint64_t dir_bytes(const char *path)
{
    struct dirent **ents = NULL;
    int n = scandir(path, &ents, NULL, alphasort);
    uint64_t bytes = 0;
    char p[600];
    struct stat st;

    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof(p), "%s/%s", path, ents[i]->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            bytes += (uint64_t)st.st_size;
        free(ents[i]);
    }
    free(ents);
    return bytes;
}

static int64_t now_pg_usec(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000 - INT64_C(946684800000000);
}

static int64_t now_unix_usec(void)
{
    return now_pg_usec() + INT64_C(946684800000000);
}

#define HOUR_USEC INT64_C(3600000000)

/*
 * Retention (zetl_archive_prune): only the oldest batches go, only below the
 * applied LSN, only older than the cut-off, never the newest; removal is
 * crash-safe and leaves last_lsn and list answering as before for what stays.
 */
static void test_prune(void)
{
    struct zetl_archive *ar = NULL;
    struct zetl_archive_prune_result res;
    struct zetl_errbuf eb = {""};
    struct zetl_buf url, spool, p, ls;
    struct zetl_strlist names = {NULL, 0};
    uint64_t last = 0, end = 0, b1 = 0, b2 = 0;
    /* B4 committed now; the others in 2024, B5 (the newest) included. */
    uint64_t ranges[][2] = {
        {0x1000, 0x1100}, {0x2000, 0x2100}, {0x3000, 0x3100}, {0x4000, 0x4100}, {0x5000, 0x5100}};
    FILE *f;

    zetl_buf_init(&url, 0);
    zetl_buf_init(&spool, 0);
    zetl_buf_init(&p, 0);
    zetl_buf_init(&ls, 0);
    zetl_buf_printf(&url, "file://%s/arch4", tmpdir);
    zetl_buf_printf(&spool, "%s/spool4", tmpdir);
    CHECK(open_url(url.data, &ar, &eb) == ZETL_OK);
    if (ar == NULL)
        goto done;

    /* A stream without batches: nothing to do. */
    CHECK(zetl_archive_prune(ar, "r", now_unix_usec(), UINT64_MAX, &res, &eb) == ZETL_OK);
    CHECK(res.removed == 0 && res.oldest[0] == '\0');

    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        struct zetl_batch *b = make_batch_at(spool.data, "r", ranges[i][0], ranges[i][1],
                                             i == 3 ? now_pg_usec() : TS2);
        CHECK(b != NULL);
        if (b != NULL)
            CHECK(zetl_archive_put(ar, b, &eb) == ZETL_OK);
        zetl_batch_free(b);
    }
    zetl_buf_printf(&p, "%s/arch4/r/0000000000001000-0000000000001100", tmpdir);
    b1 = dir_bytes(p.data);
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/arch4/r/0000000000002000-0000000000002100", tmpdir);
    b2 = dir_bytes(p.data);
    CHECK(b1 > 0 && b2 > 0);
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/arch4/r", tmpdir);

    /* Nothing applied: nothing goes, however old. */
    CHECK(zetl_archive_prune(ar, "r", now_unix_usec(), 0, &res, &eb) == ZETL_OK);
    CHECK(res.removed == 0 && res.bytes == 0 && !res.more);
    CHECK_STR(res.oldest, "0000000000001000-0000000000001100");

    /* Applied up to B2's last commit LSN exactly: B2 itself is not below it and stays. */
    CHECK(zetl_archive_prune(ar, "r", now_unix_usec() - HOUR_USEC, 0x2100, &res, &eb) == ZETL_OK);
    CHECK(res.removed == 1 && res.bytes == b1);
    CHECK_STR(res.oldest, "0000000000002000-0000000000002100");
    list_dir(p.data, &ls);
    CHECK_STR(ls.data, "0000000000002000-0000000000002100,0000000000003000-0000000000003100,"
                       "0000000000004000-0000000000004100,0000000000005000-0000000000005100");

    /* Too recent: B2 was committed before the cut-off of an earlier moment. */
    CHECK(zetl_archive_prune(ar, "r", TS1 + INT64_C(946684800000000), UINT64_MAX, &res, &eb) ==
          ZETL_OK);
    CHECK(res.removed == 0);

    /* A crash between the rename aside and the removal: the next pass finishes it. */
    zetl_buf_reset(&ls);
    zetl_buf_printf(&ls, "%s/arch4/r/.del-0000000000000100-0000000000000200", tmpdir);
    CHECK(mkdir(ls.data, 0755) == 0);
    zetl_buf_puts(&ls, "/users.csv.zst");
    f = fopen(ls.data, "w");
    if (f != NULL) {
        fputs("12345", f);
        fclose(f);
    }
    /* Everything applied: B2 and B3 go; B4 is too recent, so B5 stays although old. */
    CHECK(zetl_archive_prune(ar, "r", now_unix_usec() - HOUR_USEC, UINT64_MAX, &res, &eb) ==
          ZETL_OK);
    CHECK(res.removed == 2 && res.leftovers == 1 && res.bytes > b2 + 5);
    CHECK_STR(res.oldest, "0000000000004000-0000000000004100");
    list_dir(p.data, &ls);
    CHECK_STR(ls.data, "0000000000004000-0000000000004100,0000000000005000-0000000000005100");

    /* All old and applied: the newest batch still stays, and the stream's position with it. */
    CHECK(zetl_archive_prune(ar, "r", now_unix_usec() + HOUR_USEC, UINT64_MAX, &res, &eb) ==
          ZETL_OK);
    CHECK(res.removed == 1);
    CHECK_STR(res.oldest, "0000000000005000-0000000000005100");
    CHECK(zetl_archive_prune(ar, "r", now_unix_usec() + HOUR_USEC, UINT64_MAX, &res, &eb) ==
          ZETL_OK);
    CHECK(res.removed == 0);
    list_dir(p.data, &ls);
    CHECK_STR(ls.data, "0000000000005000-0000000000005100");
    CHECK(zetl_archive_last_lsn(ar, "r", &last, &end, &eb) == ZETL_OK);
    CHECK(last == 0x5100 && end == 0x5100 + 0x28);
    CHECK(zetl_archive_list(ar, "r", 0, &names, &eb) == ZETL_OK);
    CHECK(names.n == 1 && strcmp(names.items[0], "0000000000005000-0000000000005100") == 0);
    zetl_strlist_release(&names);

    /* A damaged old batch stops the pass with its name; nothing after it goes. */
    {
        struct zetl_batch *b = make_batch(spool.data, "r", 0x6000, 0x6100);
        CHECK(b != NULL);
        if (b != NULL)
            CHECK(zetl_archive_put(ar, b, &eb) == ZETL_OK);
        zetl_batch_free(b);
    }
    zetl_buf_reset(&ls);
    zetl_buf_printf(&ls, "%s/arch4/r/0000000000000010-0000000000000020", tmpdir);
    CHECK(mkdir(ls.data, 0755) == 0);
    CHECK(zetl_archive_prune(ar, "r", now_unix_usec(), UINT64_MAX, &res, &eb) == ZETL_ERR_IO);
    CHECK(strstr(eb.msg, "0000000000000010-0000000000000020") != NULL);
    CHECK(res.removed == 0);
    list_dir(p.data, &ls);
    CHECK_STR(ls.data, "0000000000000010-0000000000000020,0000000000005000-0000000000005100,"
                       "0000000000006000-0000000000006100");
    CHECK(zetl_archive_prune(ar, "..", now_unix_usec(), UINT64_MAX, &res, &eb) == ZETL_ERR_USAGE);

done:
    zetl_archive_free(ar);
    zetl_buf_release(&ls);
    zetl_buf_release(&p);
    zetl_buf_release(&spool);
    zetl_buf_release(&url);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/zetl-test-archive-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_put();
    test_last_lsn_and_leftovers();
    test_urls();
    test_cross_device();
    test_prune();
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    return zetl_tap_done();
}
