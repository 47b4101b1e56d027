/*
 * Unit tests of the batch reader: batches written by the real batcher into a
 * temp directory, read back and compared field by field with what was
 * written, in write order; corrupted, truncated and hand-made malformed
 * files; and a rough speed figure.
 */
#include "sinks/batch_read.h"
#include "tests/unit/batch_fixture.h"
#include "tests/unit/tap.h"

#include "common/buf.h"
#include "common/sha256.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <zstd.h>

#define LSN0 UINT64_C(0x16B374D848)
#define TS1 INT64_C(762957296789012) /* 2024-03-05 12:34:56.789012 UTC */
#define MAXCOLS 8

static char tmpdir[256];

/* ---- relations, plans and values (as in test_sinks_batch.c) -------------- */

/* ---- what was written -------------------------------------------------- */

struct exp_row {
    char op;
    uint64_t lsn;
    uint32_t seq;
    int64_t ts;
    const char *tenant;
    const char *table;
    size_t ncols;
    const char *val[MAXCOLS]; /* NULL: SQL NULL */
    size_t len[MAXCOLS];
    unsigned char unch[MAXCOLS];
    bool any_unch;
};

/* A writer and the rows it was given, in order. */
struct wtest {
    struct zetl_batch_writer *w;
    struct exp_row *rows;
    size_t nrows, alloc;
    uint64_t lsn;
    int64_t ts;
    uint32_t seq;
};

static bool wt_new(struct wtest *t, const char *name)
{
    struct zetl_errbuf eb = {""};
    char spool[512];

    memset(t, 0, sizeof(*t));
    snprintf(spool, sizeof(spool), "%s/%s", tmpdir, name);
    if (zetl_batch_writer_new(spool, "s", "tenant_id", NULL, &t->w, &eb) != ZETL_OK) {
        fprintf(stderr, "  %s\n", eb.msg);
        CHECK(0);
        return false;
    }
    return true;
}

static void wt_free(struct wtest *t)
{
    zetl_batch_writer_free(t->w);
    free(t->rows);
}

static void wt_begin(struct wtest *t, uint64_t lsn, int64_t ts)
{
    struct zetl_errbuf eb = {""};

    CHECK(zetl_batch_begin_txn(t->w, lsn, ts, &eb) == ZETL_OK);
    t->lsn = lsn;
    t->ts = ts;
    t->seq = 0;
}

static void wt_end(struct wtest *t)
{
    struct zetl_errbuf eb = {""};

    CHECK(zetl_batch_end_txn(t->w, t->lsn + 0x30, &eb) == ZETL_OK);
}

/* Adds a change to the batch and to the expected rows; values NULL: truncate. */
static void wt_put(struct wtest *t, enum zetl_op op, const char *tenant, const char *table,
                   uint16_t nout, uint16_t *out_index, const struct zetl_relation *rel,
                   const struct zetl_value *values)
{
    struct zetl_row row = {op, mkplan(tenant, table, nout, out_index), rel, values};
    struct zetl_errbuf eb = {""};
    struct exp_row *e;
    enum zetl_err err = zetl_batch_add(t->w, &row, &eb);

    CHECK(err == ZETL_OK);
    if (err != ZETL_OK)
        fprintf(stderr, "  %s\n", eb.msg);
    if (t->nrows == t->alloc) {
        t->alloc = t->alloc ? t->alloc * 2 : 64;
        t->rows = realloc(t->rows, t->alloc * sizeof(*t->rows));
    }
    e = &t->rows[t->nrows++];
    memset(e, 0, sizeof(*e));
    e->op = (char)op;
    e->lsn = t->lsn;
    e->seq = t->seq++;
    e->ts = t->ts;
    e->tenant = tenant;
    e->table = table;
    e->ncols = nout;
    for (size_t k = 0; values != NULL && k < nout; k++) {
        if (values[k].kind == ZETL_COL_TEXT) {
            e->val[k] = values[k].val.ptr;
            e->len[k] = values[k].val.len;
        } else if (values[k].kind == ZETL_COL_UNCHANGED_TOAST) {
            e->unch[k] = 1;
            e->any_unch = true;
        }
    }
}

static struct zetl_batch *wt_seal(struct wtest *t)
{
    struct zetl_batch *b = NULL;
    struct zetl_errbuf eb = {""};

    CHECK(zetl_batch_seal(t->w, &b, &eb) == ZETL_OK && b != NULL);
    if (b == NULL)
        fprintf(stderr, "  %s\n", eb.msg);
    return b;
}

/* Compares one read row with the expected one; returns false (and says why) on a difference. */
static bool same_row(const struct zetl_batch_rec *r, const struct exp_row *e, size_t i)
{
    const char *why = NULL;

    if ((char)r->op != e->op)
        why = "op";
    else if (r->lsn != e->lsn || r->seq != e->seq)
        why = "lsn/seq";
    else if (r->commit_us != e->ts)
        why = "commit time";
    else if (r->tenant == NULL || r->tenant_len != strlen(e->tenant) ||
             memcmp(r->tenant, e->tenant, r->tenant_len) != 0)
        why = "tenant";
    else if (strcmp(r->file->table, e->table) != 0 || r->file->ncols != e->ncols)
        why = "file";
    else if (r->any_unchanged != e->any_unch)
        why = "any_unchanged";
    for (size_t k = 0; why == NULL && k < e->ncols; k++) {
        if ((r->val[k] == NULL) != (e->val[k] == NULL))
            why = "NULL-ness of a value";
        else if (r->val[k] != NULL &&
                 (r->len[k] != e->len[k] || memcmp(r->val[k], e->val[k], e->len[k]) != 0))
            why = "value";
        else if (r->val[k] == NULL && r->len[k] != 0)
            why = "length of a NULL";
        else if (r->unchanged[k] != e->unch[k])
            why = "unchanged flag";
    }
    if (why != NULL)
        fprintf(stderr, "  row %zu (lsn %" PRIu64 " seq %" PRIu32 "): %s differs\n", i, e->lsn,
                e->seq, why);
    return why == NULL;
}

/* Reads the whole batch from dir and compares it with everything t wrote, in write order. */
static void read_and_compare(const struct zetl_batch *b, const char *dir, const struct wtest *t)
{
    struct zetl_batch_reader *r = NULL;
    struct zetl_errbuf eb = {""};
    const struct zetl_batch_rec *rec;
    size_t n = 0, bad = 0;
    bool ordered = true;
    uint64_t plsn = 0;
    uint32_t pseq = 0;
    enum zetl_err err;

    CHECK(zetl_batch_reader_open(b, dir, &r, &eb) == ZETL_OK);
    if (r == NULL) {
        fprintf(stderr, "  %s\n", eb.msg);
        return;
    }
    while ((err = zetl_batch_reader_next(r, &rec, &eb)) == ZETL_OK && rec != NULL) {
        if (n > 0 && (rec->lsn < plsn || (rec->lsn == plsn && rec->seq <= pseq)))
            ordered = false;
        plsn = rec->lsn;
        pseq = rec->seq;
        if (n < t->nrows && !same_row(rec, &t->rows[n], n) && ++bad > 5)
            break;
        n++;
    }
    CHECK(err == ZETL_OK);
    if (err != ZETL_OK)
        fprintf(stderr, "  %s\n", eb.msg);
    CHECK(bad == 0);
    CHECK(ordered);
    CHECK(n == t->nrows);
    /* The end stays the end. */
    CHECK(zetl_batch_reader_next(r, &rec, &eb) == ZETL_OK && rec == NULL);
    zetl_batch_reader_free(r);
}

/* ---- tests -------------------------------------------------------------- */

static const char *tricky[] = {
    "",
    "NULL",
    "null",
    "a,b",
    "say \"hi\"",
    "\"",
    "\"\"",
    "\",\"",
    "line1\nline2",
    "cr\rlf\r\n",
    "\n",
    "\r",
    ",",
    "back\\slash\\",
    "\\.",
    "\\N",
    "ünïcödé ✓ 日本語 🙂",
    " leading space",
    "trailing tab\t",
    "{1,2,3}",
    "ends with quote\"",
    "\"starts with quote",
    "x",
};
#define NTRICKY (sizeof(tricky) / sizeof(tricky[0]))

static void test_roundtrip(void)
{
    struct wtest t;
    struct zetl_batch *b = NULL;
    char *big = NULL, moved[512];
    const size_t BIG = 4u << 20;
    uint64_t lsn = LSN0;
    char ids[64][16];

    if (!wt_new(&t, "spool-rt"))
        return;
    for (int i = 0; i < 64; i++)
        snprintf(ids[i], sizeof(ids[i]), "%d", i);
    big = malloc(BIG + 1);
    for (size_t i = 0; i < BIG; i++)
        big[i] = i % 997 == 5    ? '"'
                 : i % 1999 == 7 ? '\n'
                 : i % 501 == 3  ? ','
                                 : (char)('a' + i % 26);
    big[BIG] = '\0';

    /* txn 1: every tricky value, interleaved over four files (two shapes of users) */
    wt_begin(&t, lsn, TS1);
    for (size_t i = 0; i < NTRICKY; i++) {
        const char *v = tricky[i], *w2 = tricky[(i + 7) % NTRICKY];
        struct zetl_value ua[] = {T(ids[i]), T(v), i % 3 ? T(w2) : N, T("{1,2}")};
        struct zetl_value uc[] = {T(ids[i]), T(w2), N, T("{}"), T(v)};
        struct zetl_value oa[] = {T(ids[i]), T("12.50"), T(v)};
        struct zetl_value ub[] = {T(ids[i]), N, T(v), T("")};

        wt_put(&t, ZETL_OP_INSERT, "tenant_a", "users", 4, idx_all, &rel_users_a, ua);
        wt_put(&t, ZETL_OP_INSERT, "tenant_c", "users", 5, idx_all, &rel_users_c, uc);
        wt_put(&t, ZETL_OP_INSERT, "tenant_a", "orders", 3, idx_all, &rel_orders_a, oa);
        wt_put(&t, ZETL_OP_INSERT, "tenant_b", "users", 4, idx_all, &rel_users_b, ub);
    }
    wt_end(&t);

    /* txn 2: unchanged TOAST, a key-changing update (B + U), deletes, a big value */
    lsn += 0x100;
    wt_begin(&t, lsn, TS1 + 1000001);
    {
        struct zetl_value u1[] = {T("1"), T("alice2"), U, U};
        struct zetl_value b1[] = {T("2"), N, N, N}; /* default replica identity: the key */
        struct zetl_value u2[] = {T("20"), T("bob"), U, T("{7}")};
        struct zetl_value bc[] = {T("3"), T("carol"), U, N, T("sad")}; /* FULL, unchanged */
        struct zetl_value uc[] = {T("3"), T("carol"), U, N, T("happy")};
        struct zetl_value d1[] = {T("1"), N, N, N};           /* delete, default identity */
        struct zetl_value d2[] = {T("11"), N, N};             /* through a dropped column */
        struct zetl_value ib[] = {T("30"), T(big), T(""), N}; /* 4 MB, quotes, LFs, commas */
        struct zetl_value u3[] = {T("31"), U, T("x"), U};

        wt_put(&t, ZETL_OP_UPDATE, "tenant_a", "users", 4, idx_all, &rel_users_a, u1);
        wt_put(&t, ZETL_OP_BEFORE, "tenant_a", "users", 4, idx_all, &rel_users_a, b1);
        wt_put(&t, ZETL_OP_UPDATE, "tenant_a", "users", 4, idx_all, &rel_users_a, u2);
        wt_put(&t, ZETL_OP_BEFORE, "tenant_c", "users", 5, idx_all, &rel_users_c, bc);
        wt_put(&t, ZETL_OP_UPDATE, "tenant_c", "users", 5, idx_all, &rel_users_c, uc);
        wt_put(&t, ZETL_OP_DELETE, "tenant_a", "users", 4, idx_all, &rel_users_a, d1);
        wt_put(&t, ZETL_OP_DELETE, "tenant_b", "orders", 3, idx_orders_b, &rel_orders_b, d2);
        wt_put(&t, ZETL_OP_INSERT, "tenant_b", "users", 4, idx_all, &rel_users_b, ib);
        wt_put(&t, ZETL_OP_UPDATE, "tenant_b", "users", 4, idx_all, &rel_users_b, u3);
    }
    wt_end(&t);

    /* txn 3: truncates between rows of the same files */
    lsn += 0x100;
    wt_begin(&t, lsn, TS1 + 2000000);
    {
        struct zetl_value ib[] = {T("40"), T("after truncate"), N, N};
        struct zetl_value oa[] = {T("41"), T("1.00"), N};

        wt_put(&t, ZETL_OP_TRUNCATE, "tenant_b", "users", 4, idx_all, &rel_users_b, NULL);
        wt_put(&t, ZETL_OP_INSERT, "tenant_b", "users", 4, idx_all, &rel_users_b, ib);
        wt_put(&t, ZETL_OP_TRUNCATE, "tenant_c", "users", 5, idx_all, &rel_users_c, NULL);
        wt_put(&t, ZETL_OP_INSERT, "tenant_a", "orders", 3, idx_all, &rel_orders_a, oa);
        wt_put(&t, ZETL_OP_TRUNCATE, "tenant_b", "orders", 3, idx_orders_b, &rel_orders_b, NULL);
    }
    wt_end(&t);

    /* Many small transactions alternating between files: the merge decides every row. */
    for (int i = 0; i < 300; i++) {
        struct zetl_value ua[] = {T(ids[i % 64]), T(tricky[i % NTRICKY]), N, T("{}")};
        struct zetl_value oa[] = {T(ids[i % 64]), T("0.01"), T(tricky[(i * 5) % NTRICKY])};
        struct zetl_value uc[] = {T(ids[i % 64]), N, N, N, T(tricky[(i * 3) % NTRICKY])};

        lsn += 0x40;
        wt_begin(&t, lsn, TS1 + 3000000 + i);
        if (i % 2)
            wt_put(&t, ZETL_OP_INSERT, "tenant_a", "users", 4, idx_all, &rel_users_a, ua);
        if (i % 3)
            wt_put(&t, ZETL_OP_INSERT, "tenant_a", "orders", 3, idx_all, &rel_orders_a, oa);
        wt_put(&t, ZETL_OP_INSERT, "tenant_c", "users", 5, idx_all, &rel_users_c, uc);
        if (i % 5 == 0)
            wt_put(&t, ZETL_OP_INSERT, "tenant_a", "users", 4, idx_all, &rel_users_a, ua);
        wt_end(&t);
    }

    if ((b = wt_seal(&t)) == NULL)
        goto done;
    CHECK(b->nfiles == 3);
    read_and_compare(b, b->dir, &t);

    /* Read again from elsewhere: the files were moved (an archive, a fetch). */
    snprintf(moved, sizeof(moved), "%s/moved-rt", tmpdir);
    CHECK(rename(b->dir, moved) == 0);
    read_and_compare(b, moved, &t);
done:
    zetl_batch_free(b);
    wt_free(&t);
    free(big);
}

/* Commit times survive the text form, to the microsecond, over the whole range the format has. */
static void test_commit_times(void)
{
    static const int64_t times[] = {
        0,
        1,
        -1,
        -500000,
        TS1,
        INT64_C(-946684800000000),    /* 1970-01-01 */
        INT64_C(-63082281600000000),  /* 0001-01-01 */
        INT64_C(252455615999999999),  /* 9999-12-31 23:59:59.999999 */
        INT64_C(252455616000000000),  /* 10000-01-01: a five-digit year */
        INT64_C(4107542400000000),    /* 2130-03-01 */
        INT64_C(4170614400000000),    /* 2132-02-29 */
        INT64_C(-3150576000000000),   /* 1900-03-01 (1900 is not a leap year) */
        INT64_C(-2208988800000000),   /* 1930-01-01 */
        INT64_C(-100000000000000000), /* a negative year */
        INT64_MAX,                    /* clamped by the formatter */
    };
    const size_t n = sizeof(times) / sizeof(times[0]);
    struct wtest t;
    struct zetl_batch *b = NULL;
    struct zetl_batch_reader *r = NULL;
    struct zetl_errbuf eb = {""};
    const struct zetl_batch_rec *rec;
    size_t i = 0;

    if (!wt_new(&t, "spool-ts"))
        return;
    for (size_t k = 0; k < n; k++) {
        struct zetl_value v[] = {T("1"), N, N};

        wt_begin(&t, LSN0 + k, times[k]);
        wt_put(&t, ZETL_OP_INSERT, "tenant_a", "orders", 3, idx_all, &rel_orders_a, v);
        wt_end(&t);
    }
    if ((b = wt_seal(&t)) == NULL)
        goto done;
    CHECK(zetl_batch_reader_open(b, b->dir, &r, &eb) == ZETL_OK);
    while (r != NULL && zetl_batch_reader_next(r, &rec, &eb) == ZETL_OK && rec != NULL) {
        int64_t want = times[i] == INT64_MAX ? INT64_MAX - ZETL_PG_EPOCH_OFFSET_USEC : times[i];
        char a[ZETL_BATCH_TIME_LEN], c[ZETL_BATCH_TIME_LEN];

        CHECK(rec->commit_us == want);
        if (rec->commit_us != want) {
            zetl_batch_format_time(rec->commit_us, false, a);
            zetl_batch_format_time(want, false, c);
            fprintf(stderr, "  got %" PRId64 " (%s), expected %" PRId64 " (%s)\n", rec->commit_us,
                    a, want, c);
        }
        i++;
    }
    CHECK(i == n);
    if (i != n)
        fprintf(stderr, "  %s\n", eb.msg);
done:
    zetl_batch_reader_free(r);
    zetl_batch_free(b);
    wt_free(&t);
}

/* ---- broken files --------------------------------------------------------- */

/* A batch of two files (users: 4 columns, orders: 3) with `rows` rows each. */
static struct zetl_batch *small_batch(const char *name, int rows)
{
    struct wtest t;
    struct zetl_batch *b = NULL;
    char id[16], name_v[64];

    if (!wt_new(&t, name))
        return NULL;
    wt_begin(&t, LSN0, TS1);
    for (int i = 0; i < rows; i++) {
        snprintf(id, sizeof(id), "%d", i);
        snprintf(name_v, sizeof(name_v), "name %d, \"%x\"", i, (unsigned)i * 2654435761u);
        struct zetl_value ua[] = {T(id), T(name_v), N, T("{}")};
        struct zetl_value oa[] = {T(id), T("9.99"), T(name_v)};
        wt_put(&t, ZETL_OP_INSERT, "tenant_a", "users", 4, idx_all, &rel_users_a, ua);
        wt_put(&t, ZETL_OP_INSERT, "tenant_a", "orders", 3, idx_all, &rel_orders_a, oa);
    }
    wt_end(&t);
    b = wt_seal(&t);
    wt_free(&t);
    return b;
}

/* Reads everything; returns the error of the first failing call and the rows before it. */
static enum zetl_err drain(const struct zetl_batch *b, struct zetl_errbuf *eb, size_t *nrows)
{
    struct zetl_batch_reader *r = NULL;
    const struct zetl_batch_rec *rec = NULL;
    enum zetl_err err;

    *nrows = 0;
    if ((err = zetl_batch_reader_open(b, b->dir, &r, eb)) != ZETL_OK)
        return err;
    while ((err = zetl_batch_reader_next(r, &rec, eb)) == ZETL_OK && rec != NULL)
        (*nrows)++;
    if (err != ZETL_OK) {
        struct zetl_errbuf again = {""};
        /* Failure is sticky. */
        CHECK(zetl_batch_reader_next(r, &rec, &again) == err && rec == NULL);
        CHECK_STR(again.msg, eb->msg);
    }
    zetl_batch_reader_free(r);
    return err;
}

static void file_path(const struct zetl_batch *b, size_t i, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", b->dir, b->files[i].file);
}

/*
 * Expects a ZETL_ERR_FATAL whose message names file i and holds `want`, and
 * says the file does not match its batch exactly when `corrupt`.
 */
static void expect_fatal(const struct zetl_batch *b, size_t i, const char *want, bool corrupt)
{
    struct zetl_errbuf eb = {""};
    char path[512];
    size_t n;
    enum zetl_err err = drain(b, &eb, &n);

    file_path(b, i, path, sizeof(path));
    CHECK(err == ZETL_ERR_FATAL);
    CHECK(strstr(eb.msg, path) != NULL);
    CHECK(strstr(eb.msg, want) != NULL);
    CHECK((strstr(eb.msg, "does not match its batch") != NULL) == corrupt);
    if (err != ZETL_ERR_FATAL || strstr(eb.msg, path) == NULL || strstr(eb.msg, want) == NULL)
        fprintf(stderr, "  expected \"%s\" about %s, got %d: %s\n", want, path, (int)err, eb.msg);
}

static bool slurp(const char *path, struct zetl_buf *out)
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

static bool spit(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    bool ok;

    if (f == NULL)
        return false;
    ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static void test_corruption(void)
{
    struct zetl_batch *b = small_batch("spool-bad", 3000);
    struct zetl_buf orig, mod;
    struct zetl_errbuf eb = {""};
    char path[512];
    size_t n;

    zetl_buf_init(&orig, 0);
    zetl_buf_init(&mod, 0);
    if (b == NULL || b->nfiles != 2)
        goto done;
    CHECK(drain(b, &eb, &n) == ZETL_OK && n == 6000);
    file_path(b, 1, path, sizeof(path));
    CHECK(slurp(path, &orig) && orig.len == b->files[1].bytes && orig.len > 100);

    /* A flipped byte anywhere: decompression, the zstd checksum or the sha256 catch it. */
    {
        size_t at[] = {orig.len / 2, 3, orig.len - 1, orig.len - 5, 20};
        for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
            zetl_buf_reset(&mod);
            zetl_buf_append(&mod, orig.data, orig.len);
            mod.data[at[k]] ^= 0x20;
            CHECK(spit(path, mod.data, mod.len));
            expect_fatal(b, 1, "does not match its batch", true);
            expect_fatal(b, 1, b->files[1].sha256, true);
        }
    }
    /* Cut short anywhere, down to nothing. */
    {
        size_t at[] = {0, 1, orig.len / 3, orig.len / 2, orig.len - 4, orig.len - 1};
        for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
            CHECK(spit(path, orig.data, at[k]));
            expect_fatal(b, 1, "does not match its batch", true);
        }
        CHECK(spit(path, orig.data, orig.len / 2));
        expect_fatal(b, 1, "truncated", true);
    }
    /* Bytes appended after the frame. */
    zetl_buf_reset(&mod);
    zetl_buf_append(&mod, orig.data, orig.len);
    zetl_buf_append(&mod, "xyzzy", 5);
    CHECK(spit(path, mod.data, mod.len));
    expect_fatal(b, 1, "does not match its batch", true);

    /* The original again: fine.  Then row counts that the file does not have. */
    CHECK(spit(path, orig.data, orig.len));
    CHECK(drain(b, &eb, &n) == ZETL_OK && n == 6000);
    b->files[1].rows++;
    expect_fatal(b, 1, "has 3000 rows; its batch says 3001", false);
    b->files[1].rows -= 2;
    expect_fatal(b, 1, "more rows than the 2999 its batch says", false);
    b->files[1].rows++;
    /* A wrong sha256 in the batch itself. */
    {
        char keep = b->files[0].sha256[10];
        b->files[0].sha256[10] = keep == '0' ? '1' : '0';
        expect_fatal(b, 0, "does not match its batch", true);
        b->files[0].sha256[10] = keep;
    }
    CHECK(drain(b, &eb, &n) == ZETL_OK && n == 6000);

    /* A missing file: I/O error at open. */
    CHECK(unlink(path) == 0);
    CHECK(drain(b, &eb, &n) == ZETL_ERR_IO);
    CHECK(strstr(eb.msg, path) != NULL);
done:
    zetl_buf_release(&mod);
    zetl_buf_release(&orig);
    zetl_batch_free(b);
}

/*
 * Replaces file i with `csv` compressed (as `frames` concatenated frames)
 * and makes the batch describe it: its bytes are what the batch says, so
 * only the content can be wrong.
 */
static void put_file(struct zetl_batch *b, size_t i, const char *csv, uint64_t rows, int frames)
{
    size_t len = strlen(csv), cap = ZSTD_compressBound(len) * 2 + 64, out = 0, from = 0;
    char *z = malloc(cap), path[512];

    for (int k = 0; k < frames; k++) {
        size_t to = k == frames - 1 ? len : len * (size_t)(k + 1) / (size_t)frames;
        size_t r = ZSTD_compress(z + out, cap - out, csv + from, to - from, 1);
        CHECK(!ZSTD_isError(r));
        out += r;
        from = to;
    }
    file_path(b, i, path, sizeof(path));
    CHECK(spit(path, z, out));
    b->files[i].bytes = out;
    b->files[i].rows = rows;
    zetl_sha256_hex(z, out, b->files[i].sha256);
    free(z);
}

#define TSX "2024-03-05 12:34:56.789012+00"

static void test_malformed(void)
{
    static const struct {
        const char *csv; /* file 1: orders, 3 columns (9 fields) */
        uint64_t rows;
        const char *err; /* NULL: reads fine */
    } cases[] = {
        {"I,5,0," TSX ",,t,1,2,3\n", 1, NULL},
        {"I,5,0," TSX ",,t,1,2\n", 1, "row 1: fewer fields"},
        {"I,5,0," TSX ",,t,1,2,3,4\n", 1, "row 1: more fields"},
        {"I,5,0," TSX ",,t,1,2,3\nI,5,1," TSX ",,t,1,2,3", 2, "row 2 is cut short"},
        {"I,5,0," TSX ",,t,1,2,\"3\n", 1, "row 1 is cut short"}, /* ends inside quotes */
        {"I,5,0," TSX ",,t,1,\"2\"x,3\n", 1, "row 1: unexpected character after a closing quote"},
        {"X,5,0," TSX ",,t,1,2,3\n", 1, "row 1: invalid _zetl_op"},
        {"II,5,0," TSX ",,t,1,2,3\n", 1, "invalid _zetl_op"},
        {"\"I\",5,0," TSX ",,t,1,2,3\n", 1, "invalid _zetl_op"},
        {",5,0," TSX ",,t,1,2,3\n", 1, "invalid _zetl_op"},
        {"I,5x,0," TSX ",,t,1,2,3\n", 1, "invalid _zetl_lsn"},
        {"I,,0," TSX ",,t,1,2,3\n", 1, "invalid _zetl_lsn"},
        {"I,18446744073709551616,0," TSX ",,t,1,2,3\n", 1, "invalid _zetl_lsn"},
        {"I,18446744073709551615,0," TSX ",,t,1,2,3\n", 1, NULL},
        {"I,5,4294967296," TSX ",,t,1,2,3\n", 1, "invalid _zetl_seq"},
        {"I,5,-1," TSX ",,t,1,2,3\n", 1, "invalid _zetl_seq"},
        {"I,5,0,2024-02-30 00:00:00.000000+00,,t,1,2,3\n", 1, "invalid _zetl_commit_ts"},
        {"I,5,0,2024-03-05 24:00:00.000000+00,,t,1,2,3\n", 1, "invalid _zetl_commit_ts"},
        {"I,5,0,2024-03-05 12:00:00.000000+01,,t,1,2,3\n", 1, "invalid _zetl_commit_ts"},
        {"I,5,0,2024-03-05 12:00:00.00000+00,,t,1,2,3\n", 1, "invalid _zetl_commit_ts"},
        {"I,5,0,2024-03-05T12:00:00.000000+00,,t,1,2,3\n", 1, "invalid _zetl_commit_ts"},
        {"I,5,0,,,t,1,2,3\n", 1, "invalid _zetl_commit_ts"},
        {"I,5,0,2024-02-29 00:00:00.000000+00,,t,1,2,3\n", 1, NULL},
        {"I,5,0," TSX ",{3},t,1,2,3\n", 1, "invalid _zetl_unchanged"},
        {"I,5,0," TSX ",\"{0,x}\",t,1,2,3\n", 1, "invalid _zetl_unchanged"},
        {"I,5,0," TSX ",\"{0,}\",t,1,2,3\n", 1, "invalid _zetl_unchanged"},
        {"I,5,0," TSX ",{0,t,1,2,3\n", 1, "invalid _zetl_unchanged"},
        {"I,5,0," TSX ",\"{0,2}\",t,1,2,3\n", 1, NULL},
        {"I,5,0," TSX ",,,1,2,3\n", 1, "row 1: tenant is NULL"},
        {"I,5,0," TSX ",,\"\",1,2,3\n", 1, NULL},
        {"I,5,1," TSX ",,t,1,2,3\nI,5,0," TSX ",,t,1,2,3\n", 2, "row 2: (_zetl_lsn, _zetl_seq)"},
        {"I,5,1," TSX ",,t,1,2,3\nI,5,1," TSX ",,t,1,2,3\n", 2, "does not follow"},
        {"I,6,0," TSX ",,t,1,2,3\nI,5,1," TSX ",,t,1,2,3\n", 2, "does not follow"},
        {"I,5,0," TSX ",,t,1,2,3\r\n", 1, NULL}, /* CR is data of an unquoted field */
        {"", 0, NULL},
        {"I,5,0," TSX ",,t,1,2,3\n", 0, "more rows than the 0"},
        {"I,5,0," TSX ",,t,1,2,3\n", 2, "has 1 rows; its batch says 2"},
    };
    struct zetl_batch *b = small_batch("spool-malformed", 1);
    struct zetl_errbuf eb = {""};
    size_t n;

    if (b == NULL || b->nfiles != 2)
        goto done;
    /* file 0 (users) keeps its one row at (LSN0, 0); LSN0 is far above 5 */
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        put_file(b, 1, cases[k].csv, cases[k].rows, 1);
        if (cases[k].err == NULL) {
            enum zetl_err err = drain(b, &eb, &n);
            CHECK(err == ZETL_OK && n == 1 + cases[k].rows);
            if (err != ZETL_OK)
                fprintf(stderr, "  case %zu: %s\n", k, eb.msg);
        } else {
            /* The bytes match the batch: the message must not blame corruption. */
            expect_fatal(b, 1, cases[k].err, false);
        }
    }

    /* Several zstd frames in one file read as one stream. */
    {
        struct zetl_buf csv;
        zetl_buf_init(&csv, 0);
        for (int i = 0; i < 5000; i++)
            zetl_buf_printf(&csv, "U,7,%d," TSX ",,\"t,\"\"x\"\"\",%d,\"a\nb\",\"\"\n", i, i);
        put_file(b, 1, csv.data, 5000, 3);
        CHECK(drain(b, &eb, &n) == ZETL_OK && n == 5001);
        zetl_buf_release(&csv);
    }

    /* The same change in two files. */
    put_file(b, 1, "I,5,0," TSX ",,t,1,2,3\n", 1, 1);
    put_file(b, 0, "I,5,0," TSX ",,t,1,2,3,4\n", 1, 1);
    {
        enum zetl_err err = drain(b, &eb, &n);
        CHECK(err == ZETL_ERR_FATAL && strstr(eb.msg, "both hold the change") != NULL);
    }
done:
    zetl_batch_free(b);
}

/* ---- big ones ----------------------------------------------------------- */

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

/* A 100 MB value (quotes and newlines in it) comes back whole. */
static void test_huge_value(void)
{
    const size_t LEN = (size_t)100 << 20;
    struct wtest t;
    struct zetl_batch *b = NULL;
    char *big = malloc(LEN + 1);

    for (size_t i = 0; i < LEN; i++)
        big[i] = i % 1000 == 999 ? '"' : i % 777 == 0 ? '\n' : (char)('a' + i % 26);
    big[LEN] = '\0';
    if (!wt_new(&t, "spool-huge"))
        goto done;
    wt_begin(&t, 5, 0);
    {
        struct zetl_value v1[] = {T("1"), T(big), T(""), N};
        struct zetl_value v2[] = {T("2"), T("small"), N, T(big)};
        wt_put(&t, ZETL_OP_INSERT, "tenant_a", "users", 4, idx_all, &rel_users_a, v1);
        wt_put(&t, ZETL_OP_INSERT, "tenant_a", "users", 4, idx_all, &rel_users_a, v2);
    }
    for (int i = 0; i < 10; i++) {
        struct zetl_value v[] = {T("3"), T("after"), N, N};
        wt_put(&t, ZETL_OP_INSERT, "tenant_a", "users", 4, idx_all, &rel_users_a, v);
    }
    wt_end(&t);
    if ((b = wt_seal(&t)) != NULL)
        read_and_compare(b, b->dir, &t);
    zetl_batch_free(b);
    wt_free(&t);
done:
    free(big);
}

/* A 1M-row narrow batch: rows/s (printed, not asserted) and memory that does not grow. */
static void test_speed(void)
{
    int nrows = 1000000;
    struct wtest t;
    struct zetl_batch *b = NULL;
    struct zetl_batch_reader *r = NULL;
    struct zetl_errbuf eb = {""};
    const struct zetl_batch_rec *rec;
    struct zetl_batch_target plan = mkplan("tenant_a", "users", 4, idx_all);
    char id[16], name[32], bio[32];
    uint64_t sum = 0, want = 0;
    long rss_warm = 0, rss_end;
    enum zetl_err err = ZETL_OK;
    double t0, t1;
    int n = 0;

    if (getenv("ZETL_BENCH_ROWS") != NULL)
        nrows = atoi(getenv("ZETL_BENCH_ROWS"));
    if (!wt_new(&t, "spool-speed"))
        return;
    wt_begin(&t, LSN0, TS1);
    for (int i = 0; i < nrows && err == ZETL_OK; i++) {
        snprintf(id, sizeof(id), "%d", i);
        snprintf(name, sizeof(name), "user %d", i * 7);
        snprintf(bio, sizeof(bio), "%d.%02d", i % 1000, i % 100);
        struct zetl_value v[] = {T(id), T(name), i % 3 ? T(bio) : N, T("t")};
        err = zetl_batch_add(t.w, &(struct zetl_row){ZETL_OP_INSERT, plan, &rel_users_a, v}, &eb);
        want += (uint64_t)i;
    }
    CHECK(err == ZETL_OK);
    wt_end(&t);
    if ((b = wt_seal(&t)) == NULL)
        goto done;

    t0 = now_s();
    CHECK(zetl_batch_reader_open(b, b->dir, &r, &eb) == ZETL_OK);
    while (r != NULL && (err = zetl_batch_reader_next(r, &rec, &eb)) == ZETL_OK && rec != NULL) {
        uint64_t v = 0;
        for (size_t k = 0; k < rec->len[0]; k++)
            v = v * 10 + (uint64_t)(rec->val[0][k] - '0');
        sum += v;
        if (++n == 20000)
            rss_warm = max_rss_kb();
    }
    t1 = now_s();
    rss_end = max_rss_kb();
    CHECK(err == ZETL_OK && n == nrows && sum == want);
    if (err != ZETL_OK)
        fprintf(stderr, "  %s\n", eb.msg);
    printf("# read %d rows of 4 columns (%.1f MB raw, %.1f MB compressed) in %.3f s: %.0f "
           "rows/s, %.0f MB/s raw; peak rss %ld kB after 20k rows, %ld kB at the end\n",
           n, (double)b->raw_bytes / 1e6, (double)b->files[0].bytes / 1e6, t1 - t0, n / (t1 - t0),
           (double)b->raw_bytes / 1e6 / (t1 - t0), rss_warm, rss_end);
    /* Rows are not held: reading the rest must not show in RSS. */
    CHECK(nrows < 20000 || rss_end - rss_warm < 8 * 1024);
done:
    zetl_batch_reader_free(r);
    zetl_batch_free(b);
    wt_free(&t);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/zetl-test-bread-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_speed(); /* first: it measures peak RSS */
    test_roundtrip();
    test_commit_times();
    test_corruption();
    test_malformed();
    test_huge_value();
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    return zetl_tap_done();
}
