/*
 * Unit tests of the batcher: real files in a temp directory, read back with
 * libzstd and with the zstd and sha256sum command-line tools.  Plans,
 * relations and values are built by hand.
 */
#include "sinks/batch.h"
#include "tests/unit/batch_fixture.h"
#include "tests/unit/tap.h"

#include "common/time.h"
#include "common/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <zstd.h>

#define LSN1 UINT64_C(0x16B374D848)
#define LSN2 UINT64_C(0x16B374D900)
#define END1 (LSN1 + 0x30)
#define END2 (LSN2 + 0x30)
#define TS1 INT64_C(762957296789012) /* 2024-03-05 12:34:56.789012 UTC */
#define TS2 INT64_C(762957297000001) /* 2024-03-05 12:34:57.000001 UTC */

static char tmpdir[256];

/* ---- hand-built relations, plans and values ------------------------------ */

/* ---- reading files back ----------------------------------------------- */

static bool read_file(const char *path, struct zetl_buf *out)
{
    FILE *f = fopen(path, "rb");
    char chunk[65536];
    size_t n;

    if (f == NULL)
        return false;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        zetl_buf_append(out, chunk, n);
    fclose(f);
    return true;
}

/* Decompresses with ZSTD_decompressStream into out. */
static bool zstd_decompress_file(const char *path, struct zetl_buf *out)
{
    struct zetl_buf in;
    ZSTD_DCtx *d = ZSTD_createDCtx();
    size_t outcap = ZSTD_DStreamOutSize();
    char *obuf = malloc(outcap);
    bool ok = true;

    zetl_buf_init(&in, 0);
    if (!read_file(path, &in))
        ok = false;
    ZSTD_inBuffer ib = {in.data, in.len, 0};
    size_t r = 1;
    while (ok && ib.pos < ib.size) {
        ZSTD_outBuffer ob = {obuf, outcap, 0};
        r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r)) {
            fprintf(stderr, "zstd: %s\n", ZSTD_getErrorName(r));
            ok = false;
            break;
        }
        zetl_buf_append(out, obuf, ob.pos);
    }
    if (ok && r != 0)
        ok = false; /* truncated frame */
    free(obuf);
    ZSTD_freeDCtx(d);
    zetl_buf_release(&in);
    return ok;
}

/* Runs a shell command and captures its stdout. */
static bool run_capture(const char *cmd, struct zetl_buf *out)
{
    FILE *p = popen(cmd, "r");
    char chunk[65536];
    size_t n;

    if (p == NULL)
        return false;
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
        zetl_buf_append(out, chunk, n);
    return pclose(p) == 0;
}

static const struct zetl_batch_file *find_file(const struct zetl_batch *b, const char *name)
{
    for (size_t i = 0; i < b->nfiles; i++)
        if (strcmp(b->files[i].file, name) == 0)
            return &b->files[i];
    return NULL;
}

/* Checks one sealed file: CSV text (libzstd and the zstd CLI), sha256, size, rows. */
static void check_file(const struct zetl_batch *b, const char *name, const char *table,
                       const char *expected, uint64_t rows, const char *tenants)
{
    const struct zetl_batch_file *bf = find_file(b, name);
    struct zetl_buf path, got, cmd, tl;
    struct stat st;

    CHECK(bf != NULL);
    if (bf == NULL) {
        fprintf(stderr, "  no file %s\n", name);
        return;
    }
    zetl_buf_init(&path, 0);
    zetl_buf_init(&got, 0);
    zetl_buf_init(&cmd, 0);
    zetl_buf_init(&tl, 0);
    zetl_buf_printf(&path, "%s/%s", b->dir, name);

    CHECK_STR(bf->table, table);
    CHECK(bf->rows == rows);
    CHECK(stat(path.data, &st) == 0 && (uint64_t)st.st_size == bf->bytes);

    CHECK(zstd_decompress_file(path.data, &got));
    CHECK_STR(got.data ? got.data : "", expected);

    zetl_buf_reset(&got);
    zetl_buf_printf(&cmd, "zstd -q -dc '%s'", path.data);
    CHECK(run_capture(cmd.data, &got));
    CHECK_STR(got.data ? got.data : "", expected);

    zetl_buf_reset(&got);
    zetl_buf_reset(&cmd);
    zetl_buf_printf(&cmd, "sha256sum '%s'", path.data);
    CHECK(run_capture(cmd.data, &got));
    CHECK(got.len > 64 && strncmp(got.data, bf->sha256, 64) == 0);

    for (size_t i = 0; i < bf->ntenants; i++)
        zetl_buf_printf(&tl, "%s%s", i ? "," : "", bf->tenants[i]);
    CHECK_STR(tl.data ? tl.data : "", tenants);

    zetl_buf_release(&tl);
    zetl_buf_release(&cmd);
    zetl_buf_release(&got);
    zetl_buf_release(&path);
}

static void add_row(struct zetl_batch_writer *w, enum zetl_op op,
                    const struct zetl_batch_target *plan, const struct zetl_relation *rel,
                    const struct zetl_value *values)
{
    struct zetl_row row = {op, *plan, rel, values};
    struct zetl_errbuf eb = {""};
    enum zetl_err err = zetl_batch_add(w, &row, &eb);

    CHECK(err == ZETL_OK);
    if (err != ZETL_OK)
        fprintf(stderr, "  %s\n", eb.msg);
}

static bool path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* ---- tests ------------------------------------------------------------ */

static void test_times_and_types(void)
{
    char s[ZETL_BATCH_TIME_LEN];
    char *t;

    zetl_batch_format_time(TS1, false, s);
    CHECK_STR(s, "2024-03-05 12:34:56.789012+00");
    zetl_batch_format_time(TS1, true, s);
    CHECK_STR(s, "2024-03-05T12:34:56.789012Z");
    zetl_batch_format_time(0, false, s);
    CHECK_STR(s, "2000-01-01 00:00:00.000000+00");
    zetl_batch_format_time(-500000, false, s);
    CHECK_STR(s, "1999-12-31 23:59:59.500000+00");

#define TYPE_IS(oid, mod, want)                                                                    \
    do {                                                                                           \
        t = zetl_batch_type_text(NULL, (oid), (mod));                                              \
        CHECK_STR(t, (want));                                                                      \
        free(t);                                                                                   \
    } while (0)
    TYPE_IS(OID_INT4, -1, "int4");
    TYPE_IS(OID_INT4ARR, -1, "_int4");
    TYPE_IS(OID_NUMERIC, -1, "numeric");
    TYPE_IS(OID_NUMERIC, ((30 << 16) | 2) + 4, "numeric(30,2)");
    TYPE_IS(OID_NUMERIC, ((5 << 16) | 0) + 4, "numeric(5,0)");
    TYPE_IS(OID_VARCHAR, 24, "varchar(20)");
    TYPE_IS(OID_VARCHAR, -1, "varchar");
    TYPE_IS(1042, 5 + 4, "bpchar(5)");
    TYPE_IS(1114, 3, "timestamp(3)");
    TYPE_IS(1184, -1, "timestamptz");
    TYPE_IS(1184, 0, "timestamptz(0)");
    TYPE_IS(OID_ENUM, -1, "oid:16390");
#undef TYPE_IS
}

static void test_batch_contents(void)
{
    struct zetl_batch_writer *w = NULL;
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf spool, p;
    struct zetl_batch_target users_a = mkplan("tenant_a", "users", 4, idx_all);
    struct zetl_batch_target users_b = mkplan("tenant_b", "users", 4, idx_all);
    struct zetl_batch_target users_c = mkplan("tenant_c", "users", 5, idx_all);
    struct zetl_batch_target orders_a = mkplan("tenant_a", "orders", 3, idx_all);
    struct zetl_batch_target orders_b = mkplan("tenant_b", "orders", 3, idx_orders_b);

    zetl_buf_init(&spool, 0);
    zetl_buf_init(&p, 0);
    zetl_buf_printf(&spool, "%s/spool", tmpdir);
    CHECK(zetl_batch_writer_new(spool.data, "s1", "tenant_id", NULL, &w, &eb) == ZETL_OK);
    if (w == NULL) {
        fprintf(stderr, "  %s\n", eb.msg);
        return;
    }
    CHECK(!zetl_batch_in_txn(w));

    /* txn 1: three inserts over two tenants and two tables */
    CHECK(zetl_batch_begin_txn(w, LSN1, TS1, &eb) == ZETL_OK);
    CHECK(zetl_batch_in_txn(w));
    {
        struct zetl_value v1[] = {T("1"), T("alice"), N, T("{1,2}")};
        struct zetl_value v2[] = {T("1"), T(""), T("NULL"), T("a,b \"q\"\nx")};
        struct zetl_value v3[] = {T("10"), T("12.50"), T("\\.")};
        add_row(w, ZETL_OP_INSERT, &users_a, &rel_users_a, v1);
        add_row(w, ZETL_OP_INSERT, &users_b, &rel_users_b, v2);
        add_row(w, ZETL_OP_INSERT, &orders_a, &rel_orders_a, v3);
    }
    CHECK(zetl_batch_end_txn(w, END1, &eb) == ZETL_OK);
    CHECK(zetl_batch_pending_rows(w) == 3);

    /* txn 2: update with unchanged TOAST, delete through a dropped column, a
     * second shape, a before-image, and a truncate */
    CHECK(zetl_batch_begin_txn(w, LSN2, TS2, &eb) == ZETL_OK);
    {
        struct zetl_value v1[] = {T("1"), T("alice2"), U, U};
        struct zetl_value v2[] = {T("11"), N, N};
        struct zetl_value v3[] = {T("5"), T("carol"), T(" lead"), T("{}"), T("happy")};
        struct zetl_value v4[] = {T("1"), T("bob"), U, N};
        add_row(w, ZETL_OP_UPDATE, &users_a, &rel_users_a, v1);
        add_row(w, ZETL_OP_DELETE, &orders_b, &rel_orders_b, v2);
        add_row(w, ZETL_OP_INSERT, &users_c, &rel_users_c, v3);
        add_row(w, ZETL_OP_BEFORE, &users_b, &rel_users_b, v4);
        add_row(w, ZETL_OP_TRUNCATE, &users_b, &rel_users_b, NULL);
    }
    CHECK(!zetl_batch_should_seal(w, 1, 0, 0, zetl_now_ms()));
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_ERR_FATAL); /* inside a transaction: refused */
    CHECK(b == NULL);
    CHECK(zetl_batch_end_txn(w, END2, &eb) == ZETL_OK);
    CHECK(zetl_batch_pending_rows(w) == 8);
    CHECK(zetl_batch_should_seal(w, 8, 0, 0, zetl_now_ms()));

    zetl_buf_printf(&p, "%s/s1/open-1", spool.data);
    CHECK(path_exists(p.data));
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK);
    CHECK(b != NULL);
    if (b == NULL) {
        fprintf(stderr, "  %s\n", eb.msg);
        goto done;
    }
    CHECK(!path_exists(p.data));
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/s1/sealed-1", spool.data);
    CHECK_STR(b->dir, p.data);
    CHECK_STR(b->stream, "s1");
    CHECK_STR(b->tenant_column, "tenant_id");
    CHECK(b->seq == 1);
    CHECK(b->first_lsn == LSN1);
    CHECK(b->last_lsn == LSN2);
    CHECK(b->end_lsn == END2);
    CHECK(b->first_commit_time == TS1);
    CHECK(b->last_commit_time == TS2);
    CHECK(b->ntxns == 2);
    CHECK(b->nrows == 8);
    CHECK(b->nfiles == 3);
    CHECK(zetl_batch_pending_rows(w) == 0);

    {
        const char *users =
            "I,97500059720,0,2024-03-05 12:34:56.789012+00,,tenant_a,1,alice,,\"{1,2}\"\n"
            "I,97500059720,1,2024-03-05 12:34:56.789012+00,,tenant_b,1,\"\",NULL,\"a,b "
            "\"\"q\"\"\nx\"\n"
            "U,97500059904,0,2024-03-05 12:34:57.000001+00,\"{2,3}\",tenant_a,1,alice2,,\n"
            "B,97500059904,3,2024-03-05 12:34:57.000001+00,{2},tenant_b,1,bob,,\n"
            "T,97500059904,4,2024-03-05 12:34:57.000001+00,,tenant_b,,,,\n";
        const char *orders = "I,97500059720,2,2024-03-05 12:34:56.789012+00,,tenant_a,10,12.50,"
                             "\"\\.\"\n"
                             "D,97500059904,1,2024-03-05 12:34:57.000001+00,,tenant_b,11,,\n";
        const char *users2 = "I,97500059904,2,2024-03-05 12:34:57.000001+00,,tenant_c,5,carol,"
                             "\" lead\",{},happy\n";

        check_file(b, "users.csv.zst", "users", users, 5, "tenant_a,tenant_b");
        check_file(b, "orders.csv.zst", "orders", orders, 2, "tenant_a,tenant_b");
        check_file(b, "users.2.csv.zst", "users", users2, 1, "tenant_c");
        CHECK(b->raw_bytes == strlen(users) + strlen(orders) + strlen(users2));
    }
    {
        const struct zetl_batch_file *bf = find_file(b, "orders.csv.zst");
        if (bf != NULL && bf->ncols == 3) {
            CHECK_STR(bf->cols[0].name, "id");
            CHECK_STR(bf->cols[0].type, "int4");
            CHECK(bf->cols[0].key);
            CHECK_STR(bf->cols[1].name, "amount");
            CHECK_STR(bf->cols[1].type, "numeric(10,2)");
            CHECK(!bf->cols[1].key);
            CHECK_STR(bf->cols[2].type, "varchar(20)");
            CHECK(bf->cols[2].typoid == OID_VARCHAR && bf->cols[2].typmod == 24);
        } else {
            CHECK(!"orders has 3 columns");
        }
        bf = find_file(b, "users.2.csv.zst");
        if (bf != NULL && bf->ncols == 5) {
            CHECK_STR(bf->cols[3].type, "_int4");
            CHECK_STR(bf->cols[4].type, "oid:16390");
        } else {
            CHECK(!"users.2 has 5 columns");
        }
    }

    /* The next batch numbers on; an empty writer seals to nothing. */
    zetl_batch_free(b);
    b = NULL;
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK && b == NULL);
    CHECK(zetl_batch_begin_txn(w, LSN2 + 0x100, TS2, &eb) == ZETL_OK);
    CHECK(zetl_batch_end_txn(w, LSN2 + 0x130, &eb) == ZETL_OK);
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK && b != NULL);
    if (b != NULL) {
        CHECK(b->seq == 2 && b->nfiles == 0 && b->nrows == 0 && b->ntxns == 1);
        CHECK(b->end_lsn == LSN2 + 0x130);
    }

done:
    zetl_batch_free(b);
    zetl_batch_writer_free(w);

    /* A new writer numbers after the sealed batches left in the spool. */
    w = NULL;
    CHECK(zetl_batch_writer_new(spool.data, "s1", "tenant_id", NULL, &w, &eb) == ZETL_OK);
    if (w != NULL) {
        b = NULL;
        CHECK(zetl_batch_begin_txn(w, 1, 0, &eb) == ZETL_OK);
        CHECK(zetl_batch_end_txn(w, 2, &eb) == ZETL_OK);
        CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK && b != NULL && b->seq == 3);
        zetl_batch_free(b);
        zetl_batch_writer_free(w);
    }
    zetl_buf_release(&p);
    zetl_buf_release(&spool);
}

static void test_file_names(void)
{
    struct zetl_batch_writer *w = NULL;
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf spool;
    struct zetl_batch_target p_users = mkplan("tenant_a", "users", 4, idx_all);
    struct zetl_batch_target p_users_c = mkplan("tenant_c", "users", 5, idx_all);
    struct zetl_batch_target p_users2 = mkplan("tenant_a", "users.2", 4, idx_all);
    struct zetl_batch_target p_upper = mkplan("tenant_a", "USERS", 4, idx_all);
    struct zetl_batch_target p_slash = mkplan("tenant_a", "a/b c\xC3\xA9", 4, idx_all);
    struct zetl_batch_target p_dot = mkplan("tenant_a", ".hidden", 4, idx_all);
    struct zetl_batch_target p_dotdot = mkplan("tenant_a", "..", 4, idx_all);
    struct zetl_batch_target p_quote = mkplan("a\"; drop table x; --", "t%1", 4, idx_all);
    struct zetl_value v[] = {T("1"), T("x"), N, N, N};

    zetl_buf_init(&spool, 0);
    zetl_buf_printf(&spool, "%s/spool-names", tmpdir);
    CHECK(zetl_batch_writer_new(spool.data, "s", "tenant", NULL, &w, &eb) == ZETL_OK);
    if (w == NULL)
        goto done;
    CHECK(zetl_batch_begin_txn(w, 100, 0, &eb) == ZETL_OK);
    add_row(w, ZETL_OP_INSERT, &p_users, &rel_users_a, v);
    add_row(w, ZETL_OP_INSERT, &p_users_c, &rel_users_c, v);
    add_row(w, ZETL_OP_INSERT, &p_users2, &rel_users_a, v);
    add_row(w, ZETL_OP_INSERT, &p_upper, &rel_users_a, v);
    add_row(w, ZETL_OP_INSERT, &p_slash, &rel_users_a, v);
    add_row(w, ZETL_OP_INSERT, &p_dot, &rel_users_a, v);
    add_row(w, ZETL_OP_INSERT, &p_dotdot, &rel_users_a, v);
    add_row(w, ZETL_OP_INSERT, &p_quote, &rel_users_a, v);
    add_row(w, ZETL_OP_INSERT, &p_users, &rel_users_a, v);
    CHECK(zetl_batch_end_txn(w, 101, &eb) == ZETL_OK);
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK && b != NULL);
    if (b == NULL)
        goto done;
    CHECK(b->nfiles == 8);
    if (b->nfiles == 8) {
        CHECK_STR(b->files[0].file, "users.csv.zst");
        CHECK_STR(b->files[1].file, "users.2.csv.zst");
        CHECK_STR(b->files[2].file, "users.2.2.csv.zst"); /* "users.2" must not take users' name */
        CHECK_STR(b->files[3].file, "USERS.3.csv.zst");   /* distinct on case-insensitive disks */
        CHECK_STR(b->files[4].file, "a%2Fb%20c%C3%A9.csv.zst");
        CHECK_STR(b->files[5].file, "%2Ehidden.csv.zst");
        CHECK_STR(b->files[6].file, "%2E..csv.zst");
        CHECK_STR(b->files[7].file, "t%251.csv.zst");
        CHECK(b->files[0].rows == 2);
        check_file(b, "t%251.csv.zst", "t%1",
                   "I,100,7,2000-01-01 00:00:00.000000+00,,\"a\"\"; drop table x; --\",1,x,,\n", 1,
                   "a\"; drop table x; --");
    }
done:
    zetl_batch_free(b);
    zetl_batch_writer_free(w);
    zetl_buf_release(&spool);
}

static void test_thresholds_and_discard(void)
{
    struct zetl_batch_writer *w = NULL;
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf spool, p;
    struct zetl_batch_target users_a = mkplan("tenant_a", "users", 4, idx_all);
    struct zetl_value v[] = {T("1"), T("alice"), N, N};
    int64_t now;

    zetl_buf_init(&spool, 0);
    zetl_buf_init(&p, 0);
    zetl_buf_printf(&spool, "%s/spool-thr", tmpdir);
    CHECK(zetl_batch_writer_new(spool.data, "s", "tenant_id", NULL, &w, &eb) == ZETL_OK);
    if (w == NULL)
        goto done;
    now = zetl_now_ms();
    CHECK(!zetl_batch_should_seal(w, 1, 1, 1, now + 100000)); /* no transaction yet */
    CHECK(zetl_batch_add(w, &(struct zetl_row){ZETL_OP_INSERT, users_a, &rel_users_a, v}, &eb) ==
          ZETL_ERR_FATAL); /* outside a transaction */
    CHECK(zetl_batch_end_txn(w, 1, &eb) == ZETL_ERR_FATAL);

    CHECK(zetl_batch_begin_txn(w, 10, 0, &eb) == ZETL_OK);
    CHECK(zetl_batch_begin_txn(w, 11, 0, &eb) == ZETL_ERR_FATAL);
    for (int i = 0; i < 3; i++)
        add_row(w, ZETL_OP_INSERT, &users_a, &rel_users_a, v);
    CHECK(!zetl_batch_should_seal(w, 1, 1, 1, zetl_now_ms() + 100000)); /* inside a txn */
    CHECK(zetl_batch_pending_rows(w) == 0);
    CHECK(zetl_batch_end_txn(w, 20, &eb) == ZETL_OK);
    now = zetl_now_ms();
    CHECK(zetl_batch_pending_rows(w) == 3);
    CHECK(zetl_batch_should_seal(w, 3, 0, 0, now));
    CHECK(!zetl_batch_should_seal(w, 4, 0, 0, now));
    CHECK(zetl_batch_should_seal(w, 4, 100, 0, now)); /* 3 rows of ~50 bytes */
    CHECK(!zetl_batch_should_seal(w, 4, 1000, 0, now));
    CHECK(zetl_batch_should_seal(w, 4, 1000, 500, now + 600));
    CHECK(!zetl_batch_should_seal(w, 4, 1000, 60000, now));
    CHECK(!zetl_batch_should_seal(w, 0, 0, 0, now + 600000));

    /* Discard: the open directory goes, including an open transaction. */
    CHECK(zetl_batch_begin_txn(w, 30, 0, &eb) == ZETL_OK);
    add_row(w, ZETL_OP_INSERT, &users_a, &rel_users_a, v);
    zetl_buf_printf(&p, "%s/s/open-1", spool.data);
    CHECK(path_exists(p.data));
    zetl_batch_discard(w);
    CHECK(!path_exists(p.data));
    CHECK(!zetl_batch_in_txn(w));
    CHECK(zetl_batch_pending_rows(w) == 0);
    CHECK(!zetl_batch_should_seal(w, 1, 1, 1, now + 100000));
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK && b == NULL);

    /* And the writer carries on with a fresh batch. */
    CHECK(zetl_batch_begin_txn(w, 40, TS1, &eb) == ZETL_OK);
    add_row(w, ZETL_OP_INSERT, &users_a, &rel_users_a, v);
    CHECK(zetl_batch_end_txn(w, 41, &eb) == ZETL_OK);
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK && b != NULL);
    if (b != NULL) {
        CHECK(b->nrows == 1 && b->first_lsn == 40 && b->end_lsn == 41);
        check_file(b, "users.csv.zst", "users",
                   "I,40,0,2024-03-05 12:34:56.789012+00,,tenant_a,1,alice,,\n", 1, "tenant_a");
    }
    /* Discard after a seal leaves the sealed batch alone. */
    zetl_batch_discard(w);
    CHECK(b != NULL && path_exists(b->dir));
done:
    zetl_batch_free(b);
    zetl_batch_writer_free(w);
    zetl_buf_release(&p);
    zetl_buf_release(&spool);
}

static void test_io_errors(void)
{
    struct zetl_batch_writer *w = NULL;
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf p;
    struct zetl_batch_target users_a = mkplan("tenant_a", "users", 4, idx_all);
    struct rlimit old, lim;
    enum zetl_err err = ZETL_OK;
    char text[256];
    unsigned seed = 12345;
    FILE *f;

    zetl_buf_init(&p, 0);

    /* A spool under a regular file cannot be created. */
    zetl_buf_printf(&p, "%s/plainfile", tmpdir);
    f = fopen(p.data, "w");
    if (f != NULL)
        fclose(f);
    zetl_buf_puts(&p, "/spool");
    CHECK(zetl_batch_writer_new(p.data, "s", "tenant_id", NULL, &w, &eb) == ZETL_ERR_IO);
    CHECK(w == NULL);
    CHECK(strstr(eb.msg, "could not create directory") != NULL);
    CHECK(zetl_batch_writer_new("/tmp", "../x", "tenant_id", NULL, &w, &eb) == ZETL_ERR_USAGE);

    /* Unwritable by permissions (root ignores them, so only as another user). */
    if (geteuid() != 0) {
        zetl_buf_reset(&p);
        zetl_buf_printf(&p, "%s/ro", tmpdir);
        mkdir(p.data, 0500);
        CHECK(zetl_batch_writer_new(p.data, "s", "tenant_id", NULL, &w, &eb) == ZETL_ERR_IO);
        CHECK(w == NULL);
    }

    /* A write failure (file size limit: EFBIG, like ENOSPC) is an I/O error naming the file. */
    zetl_buf_reset(&p);
    zetl_buf_printf(&p, "%s/spool-full", tmpdir);
    CHECK(zetl_batch_writer_new(p.data, "s", "tenant_id", NULL, &w, &eb) == ZETL_OK);
    if (w == NULL)
        goto done;
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 64 * 1024;
    setrlimit(RLIMIT_FSIZE, &lim);
    CHECK(zetl_batch_begin_txn(w, 10, 0, &eb) == ZETL_OK);
    for (int i = 0; i < 20000 && err == ZETL_OK; i++) {
        /* incompressible text so the compressor has to write */
        for (size_t k = 0; k + 1 < sizeof(text); k++)
            text[k] = (char)('a' + (rand_r(&seed) % 26));
        text[sizeof(text) - 1] = '\0';
        struct zetl_value v[] = {T("1"), T(text), N, N};
        err = zetl_batch_add(w, &(struct zetl_row){ZETL_OP_INSERT, users_a, &rel_users_a, v}, &eb);
    }
    if (err == ZETL_OK && zetl_batch_end_txn(w, 11, &eb) == ZETL_OK)
        err = zetl_batch_seal(w, &b, &eb);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK(err == ZETL_ERR_IO);
    CHECK(b == NULL);
    CHECK(strstr(eb.msg, "could not write file") != NULL &&
          strstr(eb.msg, "users.csv.zst") != NULL && strstr(eb.msg, strerror(EFBIG)) != NULL);
    /* The failed batch is refused until discarded, then the writer works again. */
    CHECK(zetl_batch_end_txn(w, 11, &eb) == ZETL_ERR_FATAL);
    CHECK(zetl_batch_seal(w, &b, &eb) != ZETL_OK && b == NULL);
    zetl_batch_discard(w);
    CHECK(zetl_batch_begin_txn(w, 20, 0, &eb) == ZETL_OK);
    CHECK(zetl_batch_end_txn(w, 21, &eb) == ZETL_OK);
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK && b != NULL);
done:
    zetl_batch_free(b);
    zetl_batch_writer_free(w);
    zetl_buf_release(&p);
}

/* A value bigger than the row buffer's flush threshold goes to the compressor in pieces. */
static void test_huge_value(void)
{
    enum { LEN = 3 << 20 };
    struct zetl_batch_writer *w = NULL;
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf spool, expected, got, path;
    struct zetl_batch_target users_a = mkplan("tenant_a", "users", 4, idx_all);
    char *big = malloc(LEN + 1);

    zetl_buf_init(&spool, 0);
    zetl_buf_init(&expected, 0);
    zetl_buf_init(&got, 0);
    zetl_buf_init(&path, 0);
    for (size_t i = 0; i < LEN; i++)
        big[i] = i % 1000 == 999 ? '"' : (char)('a' + i % 26);
    big[LEN] = '\0';
    zetl_buf_puts(&expected, "I,5,0,2000-01-01 00:00:00.000000+00,,tenant_a,1,\"");
    for (size_t i = 0; i < LEN; i++) {
        zetl_buf_putc(&expected, big[i]);
        if (big[i] == '"')
            zetl_buf_putc(&expected, '"');
    }
    zetl_buf_puts(&expected, "\",\"\",\n");

    zetl_buf_printf(&spool, "%s/spool-huge", tmpdir);
    CHECK(zetl_batch_writer_new(spool.data, "s", "tenant_id", NULL, &w, &eb) == ZETL_OK);
    if (w == NULL)
        goto done;
    CHECK(zetl_batch_begin_txn(w, 5, 0, &eb) == ZETL_OK);
    {
        struct zetl_value v[] = {T("1"), T(big), T(""), N};
        add_row(w, ZETL_OP_INSERT, &users_a, &rel_users_a, v);
    }
    CHECK(zetl_batch_end_txn(w, 6, &eb) == ZETL_OK);
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK && b != NULL);
    if (b == NULL)
        goto done;
    CHECK(b->raw_bytes == expected.len);
    zetl_buf_printf(&path, "%s/users.csv.zst", b->dir);
    CHECK(zstd_decompress_file(path.data, &got));
    CHECK(got.len == expected.len && memcmp(got.data, expected.data, got.len) == 0);
done:
    zetl_batch_free(b);
    zetl_batch_writer_free(w);
    free(big);
    zetl_buf_release(&path);
    zetl_buf_release(&got);
    zetl_buf_release(&expected);
    zetl_buf_release(&spool);
}

static long max_rss_kb(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static double now_s(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Many rows in one transaction: nothing is held, every row comes back. */
static void test_many_rows(void)
{
    enum { NROWS = 300000 };
    struct zetl_batch_writer *w = NULL;
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};
    struct zetl_buf spool, cmd, out;
    struct zetl_batch_target plans[2] = {mkplan("tenant_a", "users", 4, idx_all),
                                         mkplan("tenant_b", "users", 4, idx_all)};
    char id[16], name[64], bio[64];
    long rss_warm, rss_end;
    double t0, t1;
    enum zetl_err err = ZETL_OK;

    zetl_buf_init(&spool, 0);
    zetl_buf_init(&cmd, 0);
    zetl_buf_init(&out, 0);
    zetl_buf_printf(&spool, "%s/spool-many", tmpdir);
    CHECK(zetl_batch_writer_new(spool.data, "s", "tenant_id", NULL, &w, &eb) == ZETL_OK);
    if (w == NULL)
        goto done;
    CHECK(zetl_batch_begin_txn(w, LSN1, TS1, &eb) == ZETL_OK);
    t0 = now_s();
    rss_warm = 0;
    for (int i = 0; i < NROWS && err == ZETL_OK; i++) {
        snprintf(id, sizeof(id), "%d", i);
        snprintf(name, sizeof(name), "user number %d, the \"%x\"", i, (unsigned)i * 2654435761u);
        snprintf(bio, sizeof(bio), "bio %08x %08x %08x", (unsigned)i * 40503u,
                 (unsigned)i * 2246822519u, (unsigned)i ^ 0x5bd1e995u);
        struct zetl_value v[] = {T(id), T(name), T(bio), i % 7 ? N : U};
        err = zetl_batch_add(w, &(struct zetl_row){ZETL_OP_INSERT, plans[i & 1], &rel_users_a, v},
                             &eb);
        if (i == 20000)
            rss_warm = max_rss_kb();
    }
    CHECK(err == ZETL_OK);
    CHECK(zetl_batch_end_txn(w, END1, &eb) == ZETL_OK);
    CHECK(zetl_batch_seal(w, &b, &eb) == ZETL_OK && b != NULL);
    t1 = now_s();
    rss_end = max_rss_kb();
    if (b == NULL)
        goto done;
    fprintf(stderr,
            "# %d rows (%.1f MB raw, %.1f MB compressed) in %.3f s: %.0f rows/s; "
            "peak rss %ld kB after 20k rows, %ld kB at the end\n",
            NROWS, (double)b->raw_bytes / 1e6, (double)b->files[0].bytes / 1e6, t1 - t0,
            NROWS / (t1 - t0), rss_warm, rss_end);
    /* Rows are not held: the 30 MB of rows after the warm-up must not show in RSS. */
    CHECK(rss_end - rss_warm < 8 * 1024);
    CHECK(b->nrows == NROWS && b->nfiles == 1 && b->files[0].rows == NROWS);
    CHECK(b->files[0].ntenants == 2);
    zetl_buf_printf(&cmd, "zstd -q -dc '%s/users.csv.zst' | wc -l", b->dir);
    CHECK(run_capture(cmd.data, &out));
    CHECK(out.data != NULL && strtol(out.data, NULL, 10) == NROWS);
    zetl_buf_reset(&cmd);
    zetl_buf_reset(&out);
    zetl_buf_printf(&cmd, "zstd -q -dc '%s/users.csv.zst' | sed -n '7p;300000p'", b->dir);
    CHECK(run_capture(cmd.data, &out));
    CHECK_STR(out.data ? out.data : "",
              "I,97500059720,6,2024-03-05 12:34:56.789012+00,,tenant_a,6,"
              "\"user number 6, the \"\"b54cda26\"\"\",bio 0003b54a 2386beca 5bd1e993,\n"
              "I,97500059720,299999,2024-03-05 12:34:56.789012+00,{3},tenant_b,299999,"
              "\"user number 299999, the \"\"93f7a42f\"\"\",bio d43f66e9 3783b2a9 5bd57a4a,\n");
done:
    zetl_batch_free(b);
    zetl_batch_writer_free(w);
    zetl_buf_release(&out);
    zetl_buf_release(&cmd);
    zetl_buf_release(&spool);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/zetl-test-batch-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_times_and_types();
    test_batch_contents();
    test_file_names();
    test_thresholds_and_discard();
    test_io_errors();
    test_many_rows(); /* first of the big ones: it measures peak RSS */
    test_huge_value();
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    return zetl_tap_done();
}
