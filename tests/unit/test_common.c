/*
 * Unit tests for common/: error buffers, aborting allocators and the arena,
 * capped buffers, LSN text forms, globs, SHA-256, log level names, string
 * lists and the monotonic clock.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/glob.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "common/sha256.h"
#include "common/strlist.h"
#include "common/time.h"
#include "tests/unit/tap.h"

static void test_err(void)
{
    struct zetl_errbuf eb;
    char big[3000];

    CHECK(zetl_err_set(&eb, ZETL_ERR_PROTOCOL, "could not read %s: %d", "x", 7) ==
          ZETL_ERR_PROTOCOL);
    CHECK_STR(eb.msg, "could not read x: 7");
    CHECK(zetl_err_set(NULL, ZETL_ERR_IO, "ignored") == ZETL_ERR_IO);
    CHECK(zetl_err_set(&eb, ZETL_OK, "%s", "") == ZETL_OK);
    CHECK_STR(eb.msg, "");

    zetl_err_set(&eb, ZETL_ERR_RETRY, "connection lost");
    zetl_err_prefix(&eb, "slot %s", "zetl_0");
    CHECK_STR(eb.msg, "slot zetl_0: connection lost");
    zetl_err_prefix(&eb, "tenant_a.users");
    CHECK_STR(eb.msg, "tenant_a.users: slot zetl_0: connection lost");
    zetl_err_prefix(NULL, "nothing happens");

    /* A message longer than the buffer is cut, and still terminated. */
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    zetl_err_set(&eb, ZETL_ERR_FATAL, "%s", big);
    CHECK(strlen(eb.msg) == ZETL_ERRBUF_SIZE - 1);
    CHECK(eb.msg[0] == 'a' && eb.msg[ZETL_ERRBUF_SIZE - 2] == 'a');

    /* Prefixing a full buffer keeps the prefix whole and cuts the old tail. */
    zetl_err_prefix(&eb, "ctx");
    CHECK(strlen(eb.msg) == ZETL_ERRBUF_SIZE - 1);
    CHECK(strncmp(eb.msg, "ctx: aaa", 8) == 0);

    /* A prefix longer than the buffer is itself cut. */
    zetl_err_set(&eb, ZETL_ERR_FATAL, "tail");
    memset(big, 'p', sizeof(big) - 1);
    zetl_err_prefix(&eb, "%s", big);
    CHECK(strlen(eb.msg) < ZETL_ERRBUF_SIZE);
    CHECK(eb.msg[0] == 'p');

    CHECK_STR(zetl_err_name(ZETL_OK), "ok");
    CHECK_STR(zetl_err_name(ZETL_ERR_USAGE), "usage");
    CHECK_STR(zetl_err_name(ZETL_ERR_RETRY), "retriable");
    CHECK_STR(zetl_err_name(ZETL_ERR_PROTOCOL), "protocol");
    CHECK_STR(zetl_err_name(ZETL_ERR_IO), "i/o");
    CHECK_STR(zetl_err_name(ZETL_ERR_FATAL), "fatal");
}

static void test_alloc(void)
{
    char *s = zetl_strdup("hello");
    CHECK_STR(s, "hello");
    free(s);
    s = zetl_strndup("hello world", 5);
    CHECK_STR(s, "hello");
    free(s);
    s = zetl_strndup("ab\0cd", 5); /* copies n bytes, embedded NUL included */
    CHECK(memcmp(s, "ab\0cd", 6) == 0);
    free(s);

    unsigned char *z = zetl_calloc(100, 4);
    bool zero = true;
    for (int i = 0; i < 400; i++)
        zero = zero && z[i] == 0;
    CHECK(zero);
    z = zetl_realloc(z, 100000);
    z[99999] = 1;
    free(z);

    void *p = zetl_malloc(0);
    CHECK(p != NULL);
    free(p);
    p = zetl_calloc(0, 0);
    CHECK(p != NULL);
    free(p);
}

static bool aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

static void test_arena(void)
{
    struct zetl_arena ar;
    bool ok = true;

    zetl_arena_init(&ar, 1024);
    CHECK(ar.head == NULL && ar.free == NULL && ar.block_size == 1024);

    /* Every allocation is 16-byte aligned, whatever the sizes before it. */
    size_t sizes[] = {1, 3, 0, 17, 15, 16, 31, 100, 7, 1000, 2};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *q = zetl_arena_alloc(&ar, sizes[i]);
        ok = ok && q != NULL && aligned16(q);
        memset(q, 0xab, sizes[i]);
    }
    CHECK(ok);

    /* Allocations do not overlap: fill many and verify each. */
    char *ptrs[200];
    for (int i = 0; i < 200; i++) {
        ptrs[i] = zetl_arena_alloc(&ar, 37);
        memset(ptrs[i], i, 37);
    }
    ok = true;
    for (int i = 0; i < 200; i++)
        for (int j = 0; j < 37; j++)
            ok = ok && (unsigned char)ptrs[i][j] == (unsigned char)i;
    CHECK(ok);

    /* Larger than a block: its own block, usable end to end. */
    size_t big = 1024 * 1024 + 3;
    char *b = zetl_arena_alloc(&ar, big);
    CHECK(aligned16(b));
    memset(b, 0x5a, big);
    CHECK(b[0] == 0x5a && b[big - 1] == 0x5a);
    char *after = zetl_arena_alloc(&ar, 8);
    CHECK(aligned16(after));
    memset(after, 1, 8);

    char *d = zetl_arena_strndup(&ar, "abcdef", 3);
    CHECK_STR(d, "abc");
    d = zetl_arena_strndup(&ar, "", 0);
    CHECK_STR(d, "");

    /* Reset keeps blocks: the same memory comes back, no new block. */
    zetl_arena_reset(&ar);
    CHECK(ar.head == NULL);
    CHECK(ar.free != NULL);
    zetl_arena_release(&ar);

    zetl_arena_init(&ar, 4096);
    char *first = zetl_arena_alloc(&ar, 64);
    zetl_arena_reset(&ar);
    char *again = zetl_arena_alloc(&ar, 64);
    CHECK(first == again);
    /* Steady state: repeated reset/fill cycles keep reusing the same blocks. */
    char *cycle_first = NULL;
    ok = true;
    for (int cycle = 0; cycle < 50; cycle++) {
        zetl_arena_reset(&ar);
        char *q = NULL;
        for (int i = 0; i < 100; i++)
            q = zetl_arena_alloc(&ar, 100); /* 3+ blocks' worth */
        (void)q;
        char *f = zetl_arena_alloc(&ar, 1);
        if (cycle == 1)
            cycle_first = f;
        else if (cycle > 1)
            ok = ok && f == cycle_first;
    }
    CHECK(ok);
    /* A huge allocation after reset, then normal use again. */
    zetl_arena_reset(&ar);
    b = zetl_arena_alloc(&ar, 64 * 4096);
    memset(b, 1, 64 * 4096);
    zetl_arena_reset(&ar);
    b = zetl_arena_alloc(&ar, 10);
    CHECK(aligned16(b));
    zetl_arena_release(&ar);
    CHECK(ar.head == NULL && ar.free == NULL);

    /* Default block size. */
    zetl_arena_init(&ar, 0);
    CHECK(ar.block_size > 0);
    CHECK(aligned16(zetl_arena_alloc(&ar, 5)));
    zetl_arena_release(&ar);
    zetl_arena_release(&ar); /* releasing twice is harmless */
}

static void test_buf(void)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    CHECK(b.data == NULL && b.len == 0 && b.max > 0);
    CHECK(zetl_buf_puts(&b, "hello"));
    CHECK(zetl_buf_putc(&b, ' '));
    CHECK(zetl_buf_append(&b, "world!!", 5));
    CHECK_STR(b.data, "hello world");
    CHECK(b.len == 11);
    CHECK(zetl_buf_printf(&b, " %d/%s", 42, "x"));
    CHECK_STR(b.data, "hello world 42/x");
    CHECK(zetl_buf_append(&b, "\0z", 2)); /* binary bytes are fine */
    CHECK(b.len == 18 && b.data[16] == '\0' && b.data[17] == 'z' && b.data[18] == '\0');
    zetl_buf_reset(&b);
    CHECK(b.len == 0 && b.data[0] == '\0');

    /* Growth past the first allocation, many times. */
    for (int i = 0; i < 10000; i++)
        zetl_buf_printf(&b, "%04d", i % 10000);
    CHECK(b.len == 40000);
    CHECK(memcmp(b.data + 4 * 9999, "9999", 4) == 0 && b.data[40000] == '\0');
    zetl_buf_release(&b);
    CHECK(b.data == NULL && b.len == 0);
    zetl_buf_release(&b);

    /* The cap: writes that would pass it fail and leave the buffer as it was. */
    zetl_buf_init(&b, 10);
    CHECK(zetl_buf_append(&b, "0123456", 7));
    CHECK(!zetl_buf_append(&b, "7890", 4));
    CHECK(b.len == 7);
    CHECK_STR(b.data, "0123456");
    CHECK(!zetl_buf_printf(&b, "%s", "abcd"));
    CHECK_STR(b.data, "0123456");
    CHECK(!zetl_buf_puts(&b, "abcd"));
    CHECK(!zetl_buf_reserve(&b, 4));
    CHECK(zetl_buf_reserve(&b, 3));
    CHECK(zetl_buf_printf(&b, "%d", 789));
    CHECK_STR(b.data, "0123456789");
    CHECK(b.len == 10);
    CHECK(!zetl_buf_putc(&b, 'x'));
    CHECK(zetl_buf_append(&b, "", 0)); /* nothing more always fits */
    CHECK(!zetl_buf_reserve(&b, SIZE_MAX));
    zetl_buf_reset(&b);
    CHECK(zetl_buf_puts(&b, "0123456789"));
    zetl_buf_release(&b);

    /* printf on an empty buffer still gives a terminated string. */
    zetl_buf_init(&b, 0);
    CHECK(zetl_buf_printf(&b, "%s", ""));
    CHECK(b.data != NULL && b.len == 0 && b.data[0] == '\0');
    zetl_buf_release(&b);
}

static void test_lsn(void)
{
    uint64_t lsn = 1;
    char text[32];
    char hex[17];

    CHECK(zetl_lsn_parse("16/B374D848", &lsn));
    CHECK(lsn == UINT64_C(0x16B374D848));
    snprintf(text, sizeof(text), ZETL_LSN_FMT, ZETL_LSN_ARGS(lsn));
    CHECK_STR(text, "16/B374D848");
    CHECK(zetl_lsn_parse("0/0", &lsn) && lsn == 0);
    CHECK(zetl_lsn_parse("FFFFFFFF/FFFFFFFF", &lsn) && lsn == UINT64_MAX);
    CHECK(zetl_lsn_parse("16/b374d848", &lsn) && lsn == UINT64_C(0x16B374D848));
    CHECK(zetl_lsn_parse("0/1", &lsn) && lsn == 1);
    snprintf(text, sizeof(text), ZETL_LSN_FMT, ZETL_LSN_ARGS(UINT64_C(0x100000000)));
    CHECK_STR(text, "1/0");

    /* Anything else is rejected, like PostgreSQL's pg_lsn input. */
    const char *bad[] = {
        "",      "16",    "16/",         "/B374D848",    "16/B374D848 ", "16/B374D848/1",
        "G/0",   "1/1x",  "16:B374D848", " 16/B374D848", "16/ B374D848", "-1/0",
        "16/-1", "+16/B", "0x16/B",      "100000000/0",  "0/100000000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        lsn = 12345;
        bool ok = zetl_lsn_parse(bad[i], &lsn);
        if (ok)
            fprintf(stderr, "lsn parse accepted bad input \"%s\"\n", bad[i]);
        CHECK(!ok);
    }

    /* hex16: fixed width, upper case, round trip. */
    zetl_lsn_to_hex16(UINT64_C(0x16B374D848), hex);
    CHECK_STR(hex, "00000016B374D848");
    zetl_lsn_to_hex16(0, hex);
    CHECK_STR(hex, "0000000000000000");
    zetl_lsn_to_hex16(UINT64_MAX, hex);
    CHECK_STR(hex, "FFFFFFFFFFFFFFFF");
    uint64_t samples[] = {0,
                          1,
                          15,
                          16,
                          0xFFFFFFFF,
                          UINT64_C(0x100000000),
                          UINT64_C(0x16B374D848),
                          UINT64_C(0x16B374D849),
                          UINT64_C(0x0123456789ABCDEF),
                          UINT64_C(0xA000000000000000),
                          UINT64_MAX - 1,
                          UINT64_MAX};
    size_t ns = sizeof(samples) / sizeof(samples[0]);
    char prevhex[17] = "";
    bool ok = true;
    for (size_t i = 0; i < ns; i++) {
        uint64_t back = 0;
        zetl_lsn_to_hex16(samples[i], hex);
        ok = ok && strlen(hex) == 16;
        ok = ok && zetl_lsn_from_hex16(hex, &back) && back == samples[i];
        /* samples ascend, so the text must too: file names sort by LSN */
        if (i > 0)
            ok = ok && strcmp(prevhex, hex) < 0;
        memcpy(prevhex, hex, 17);
    }
    CHECK(ok);
    CHECK(!zetl_lsn_from_hex16("00000016B374D84", &lsn));  /* short */
    CHECK(!zetl_lsn_from_hex16("00000016B374D84G", &lsn)); /* not hex */
    CHECK(!zetl_lsn_from_hex16("", &lsn));
    CHECK(!zetl_lsn_from_hex16("-0000016B374D848", &lsn));
}

static void test_glob(void)
{
    CHECK(zetl_glob_match("*", "anything"));
    CHECK(zetl_glob_match("*", ""));
    CHECK(zetl_glob_match("tenant_*", "tenant_a"));
    CHECK(zetl_glob_match("tenant_*", "tenant_"));
    CHECK(!zetl_glob_match("tenant_*", "tenant"));
    CHECK(!zetl_glob_match("tenant_*", "xtenant_a"));
    CHECK(zetl_glob_match("t?", "ta"));
    CHECK(!zetl_glob_match("t?", "t"));
    CHECK(!zetl_glob_match("t?", "tab"));
    CHECK(zetl_glob_match("[ab]x", "bx"));
    CHECK(!zetl_glob_match("[ab]x", "cx"));
    CHECK(zetl_glob_match("[!ab]x", "cx"));
    CHECK(zetl_glob_match("[a-c]*", "cz"));
    CHECK(zetl_glob_match("users", "users"));
    CHECK(!zetl_glob_match("users", "Users"));
    CHECK(zetl_glob_match("*.email", "users.email")); /* '*' matches across dots */
    CHECK(zetl_glob_match("*", "a.b/c"));             /* and slashes: no FNM_PATHNAME */
    CHECK(zetl_glob_match(".*", ".hidden"));
    CHECK(zetl_glob_match("*", ".hidden"));
    CHECK(zetl_glob_match("\\*", "*"));
    CHECK(!zetl_glob_match("\\*", "a"));
    CHECK(zetl_glob_match("a\"; drop table x; --", "a\"; drop table x; --"));

    CHECK(zetl_glob_valid("*"));
    CHECK(zetl_glob_valid("tenant_*"));
    CHECK(zetl_glob_valid("[a-z]*"));
    CHECK(zetl_glob_valid("[]]"));
    CHECK(zetl_glob_valid("[!]]"));
    CHECK(zetl_glob_valid("a]"));
    CHECK(zetl_glob_valid("\\*"));
    CHECK(zetl_glob_valid("\\["));
    CHECK(!zetl_glob_valid(""));
    CHECK(!zetl_glob_valid("a["));
    CHECK(!zetl_glob_valid("[abc"));
    CHECK(!zetl_glob_valid("a[]"));
    CHECK(!zetl_glob_valid("[!]"));
    CHECK(!zetl_glob_valid("a\\"));
}

static void test_sha256(void)
{
    char hex[65];
    unsigned char raw[32];
    struct zetl_sha256 h;

    zetl_sha256_hex("", 0, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    zetl_sha256_hex("abc", 3, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    zetl_sha256_raw("abc", 3, raw);
    CHECK(raw[0] == 0xba && raw[1] == 0x78 && raw[31] == 0xad);

    /* Incremental, in pieces (including empty ones), equals one-shot. */
    const char *msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    zetl_sha256_init(&h);
    zetl_sha256_update(&h, msg, 10);
    zetl_sha256_update(&h, NULL, 0);
    zetl_sha256_update(&h, msg + 10, strlen(msg) - 10);
    zetl_sha256_final_hex(&h, hex);
    CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    zetl_sha256_release(&h); /* safe after final */

    zetl_sha256_init(&h);
    zetl_sha256_final_hex(&h, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    /* Abandoned without a digest: released, nothing leaks. */
    zetl_sha256_init(&h);
    zetl_sha256_update(&h, "abc", 3);
    zetl_sha256_release(&h);

    /* Binary input with NULs; a million 'a's (FIPS 180-2 vector). */
    char *m = zetl_malloc(1000000);
    memset(m, 'a', 1000000);
    zetl_sha256_hex(m, 1000000, hex);
    CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(m);
}

static void test_log_levels(void)
{
    CHECK(zetl_log_parse_level("debug") == ZETL_LOG_DEBUG);
    CHECK(zetl_log_parse_level("info") == ZETL_LOG_INFO);
    CHECK(zetl_log_parse_level("log") == ZETL_LOG_LOG);
    CHECK(zetl_log_parse_level("WARNING") == ZETL_LOG_WARNING);
    CHECK(zetl_log_parse_level("error") == ZETL_LOG_ERROR);
    CHECK(zetl_log_parse_level("verbose") == -1);
    CHECK(zetl_log_parse_level("") == -1);
    zetl_log_set_level(ZETL_LOG_ERROR);
    CHECK(!zetl_log_enabled(ZETL_LOG_WARNING));
    CHECK(zetl_log_enabled(ZETL_LOG_ERROR));
    CHECK(zetl_log_enabled(ZETL_LOG_FATAL));
    zetl_debug("not shown %d", 1);
}

static void test_strlist(void)
{
    struct zetl_strlist l = {NULL, 0};
    char src[] = "abcdef";

    zetl_strlist_add(&l, src);
    zetl_strlist_addn(&l, src + 2, 3);
    zetl_strlist_addn(&l, src, 0);
    src[0] = 'X'; /* the list holds copies */
    CHECK(l.n == 3);
    if (l.n == 3) {
        CHECK_STR(l.items[0], "abcdef");
        CHECK_STR(l.items[1], "cde");
        CHECK_STR(l.items[2], "");
    }
    zetl_strlist_release(&l);
    CHECK(l.n == 0 && l.items == NULL);
    zetl_strlist_release(&l); /* releasing an empty list is fine */
    CHECK(l.n == 0);
}

static void test_now_ms(void)
{
    int64_t a = zetl_now_ms(), b;
    struct timespec ts = {0, 20 * 1000000L};

    nanosleep(&ts, NULL);
    b = zetl_now_ms();
    CHECK(a >= 0);
    CHECK(b - a >= 19 && b - a < 5000);
}

/* Timestamps as users, the manifest (RFC 3339) and the archive's CSV (timestamptz) write them. */
static void test_time_parse(void)
{
    /* 2024-03-05 12:34:56.789012 UTC, checked against `date -u -d ... +%s`: 1709642096. */
    const int64_t want = INT64_C(1709642096) * 1000000 + 789012;
    const char *same[] = {"2024-03-05T12:34:56.789012Z",      "2024-03-05 12:34:56.789012+00",
                          "2024-03-05 12:34:56.789012",       "2024-03-05T13:34:56.789012+01:00",
                          "2024-03-05 07:04:56.789012-05:30", "2024-03-05 13:34:56.789012 +0100",
                          "2024-03-05t12:34:56.789012z"};
    const char *bad[] = {"",
                         "2024-3-05",
                         "2024-02-30",
                         "2023-02-29 00:00:00",
                         "2024-03-05 24:00:00",
                         "2024-03-05 12:60",
                         "2024-03-05 12:34:56.",
                         "2024-03-05 12:34:56.1234567",
                         "2024-03-05 12:34:56+",
                         "2024-03-05 12:34:56+1",
                         "2024-03-05 12:34:56 x",
                         "2024-03-05 12:34:56Zx",
                         "16/B374D848",
                         "yesterday"};
    char out[40];
    int64_t v;

    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        CHECK(zetl_time_parse(same[i], &v));
        CHECK(v == want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!zetl_time_parse(bad[i], &v));
    CHECK(zetl_time_parse("1970-01-01", &v) && v == 0);
    CHECK(zetl_time_parse("2024-02-29 23:59", &v) && v == INT64_C(1709251140) * 1000000);
    CHECK(zetl_time_parse("1969-12-31 23:59:59.5", &v) && v == -500000);
    CHECK(zetl_time_parse("2024-03-05 12:34:56.5", &v) && v % 1000000 == 500000);
    zetl_time_format(want, out, sizeof(out));
    CHECK_STR(out, "2024-03-05 12:34:56.789012+00");
    zetl_time_format(-500000, out, sizeof(out));
    CHECK_STR(out, "1969-12-31 23:59:59.500000+00");
    CHECK(zetl_time_parse(out, &v) && v == -500000);
}

/* The text and JSON lines of one message: escaping, broken UTF-8, truncation. */
static void test_log_lines(void)
{
    char line[256];
    size_t n;

    CHECK(zetl_log_parse_format("json") == ZETL_LOG_JSON);
    CHECK(zetl_log_parse_format("TEXT") == ZETL_LOG_TEXT);
    CHECK(zetl_log_parse_format("yaml") == -1);
    /* 2024-03-05 12:34:56.789 UTC */
    n = zetl_log_format_line(line, sizeof(line), ZETL_LOG_TEXT, ZETL_LOG_WARNING, "slot \"x\" lost",
                             1709642096, 789123, 42);
    CHECK_STR(line, "2024-03-05 12:34:56.789 UTC [42] WARNING:  slot \"x\" lost\n");
    CHECK(n == strlen(line));
    n = zetl_log_format_line(line, sizeof(line), ZETL_LOG_JSON, ZETL_LOG_FATAL,
                             "a \"quote\", a \\ and\na tab\t, \x01, \xc3\xb1, \xff!", 1709642096,
                             789123, 42);
    CHECK_STR(line, "{\"ts\":\"2024-03-05T12:34:56.789Z\",\"level\":\"fatal\",\"pid\":42,"
                    "\"msg\":\"a \\\"quote\\\", a \\\\ and\\u000aa tab\\u0009, \\u0001, "
                    "\xc3\xb1, \xef\xbf\xbd!\"}\n");
    CHECK(n == strlen(line));
    /* A long message is cut inside the text; the line stays one JSON object. */
    char big[600];
    memset(big, '"', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    n = zetl_log_format_line(line, sizeof(line), ZETL_LOG_JSON, ZETL_LOG_LOG, big, 0, 0, 1);
    CHECK(n == strlen(line) && n < sizeof(line));
    CHECK(n >= 3 && strcmp(line + n - 3, "\"}\n") == 0);
    CHECK(line[n - 4] == '"' && line[n - 5] == '\\'); /* cut after a whole escape */
}

int main(void)
{
    test_time_parse();
    test_log_lines();
    test_err();
    test_alloc();
    test_arena();
    test_buf();
    test_lsn();
    test_glob();
    test_sha256();
    test_log_levels();
    test_strlist();
    test_now_ms();
    return zetl_tap_done();
}
