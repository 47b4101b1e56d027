/* Unit tests of the CSV field encoder: every quoting rule, and the fast path. */
#include "sinks/csv.h"
#include "tests/unit/tap.h"

#include <stdlib.h>
#include <string.h>

/* Encodes one field (p may be NULL) and returns it as a static string. */
static const char *enc(const char *p, size_t n)
{
    static struct zetl_buf b;
    static bool init;

    if (!init) {
        zetl_buf_init(&b, 0);
        init = true;
    }
    zetl_buf_reset(&b);
    zetl_buf_puts(&b, "<");
    CHECK(zetl_csv_append_field(&b, p, n));
    zetl_buf_puts(&b, ">");
    return b.data;
}

#define ENC(s) enc((s), strlen(s))

static void test_quoting(void)
{
    /* NULL is nothing; the empty string is ""; the text NULL stays raw. */
    CHECK_STR(enc(NULL, 0), "<>");
    CHECK_STR(enc("", 0), "<\"\">");
    CHECK_STR(ENC("NULL"), "<NULL>");
    CHECK_STR(ENC("null"), "<null>");
    CHECK_STR(ENC("plain"), "<plain>");
    CHECK_STR(ENC("a,b"), "<\"a,b\">");
    CHECK_STR(ENC("say \"hi\""), "<\"say \"\"hi\"\"\">");
    CHECK_STR(ENC("\""), "<\"\"\"\">");
    CHECK_STR(ENC("\"\""), "<\"\"\"\"\"\">");
    CHECK_STR(ENC("line1\nline2"), "<\"line1\nline2\">");
    CHECK_STR(ENC("cr\rhere"), "<\"cr\rhere\">");
    CHECK_STR(ENC("c:\\path"), "<\"c:\\path\">");
    CHECK_STR(ENC("\\."), "<\"\\.\">");
    CHECK_STR(ENC("\\"), "<\"\\\">");
    CHECK_STR(ENC(" lead"), "<\" lead\">");
    CHECK_STR(ENC("trail "), "<\"trail \">");
    CHECK_STR(ENC("\ttab"), "<\"\ttab\">");
    CHECK_STR(ENC("tab\t"), "<\"tab\t\">");
    CHECK_STR(ENC("in side"), "<in side>");
    CHECK_STR(ENC("in\tside"), "<in\tside>");
    CHECK_STR(ENC(" "), "<\" \">");
    CHECK_STR(ENC("."), "<.>");
    CHECK_STR(ENC("héllo wörld ✓ 日本"), "<héllo wörld ✓ 日本>");
    CHECK_STR(ENC("日本,語"), "<\"日本,語\">");
    CHECK_STR(ENC("{1,2,3}"), "<\"{1,2,3}\">");
    CHECK_STR(ENC("{\"a\": 1}"), "<\"{\"\"a\"\": 1}\">");

    /* Embedded NUL bytes are data (bytea text is hex, but the encoder must not care). */
    CHECK(memcmp(enc("a\0b", 3), "<a\0b>", 5) == 0);

    CHECK(zetl_csv_needs_quote("", 0));
    CHECK(!zetl_csv_needs_quote("x", 1));
}

/* Every special byte at every position of strings long enough for the 8-byte scan. */
static void test_scan_positions(void)
{
    static const char specials[] = {',', '"', '\r', '\n', '\\'};
    char s[40];

    for (size_t len = 1; len < sizeof(s); len++) {
        memset(s, 'x', len);
        CHECK(!zetl_csv_needs_quote(s, len));
        for (size_t pos = 0; pos < len; pos++) {
            for (size_t k = 0; k < sizeof(specials); k++) {
                memset(s, 'x', len);
                s[pos] = specials[k];
                if (!zetl_csv_needs_quote(s, len)) {
                    CHECK(!"special byte missed");
                    fprintf(stderr, "  len %zu pos %zu byte %d\n", len, pos, specials[k]);
                }
            }
        }
    }
    /* High bytes next to specials' values must not trip the scan. */
    for (int c = 0; c < 256; c++) {
        char t[16];
        bool special = c == ',' || c == '"' || c == '\r' || c == '\n' || c == '\\';
        memset(t, 'y', sizeof(t));
        t[9] = (char)c;
        if (zetl_csv_needs_quote(t, sizeof(t)) != special) {
            CHECK(!"wrong classification");
            fprintf(stderr, "  byte %d\n", c);
        }
    }
}

static void test_cap(void)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 8);
    CHECK(zetl_csv_append_field(&b, "abc", 3));
    CHECK(!zetl_csv_append_field(&b, "abcdef", 6));
    CHECK_STR(b.data, "abc");
    /* Quoting pushes past the cap: rolled back whole. */
    CHECK(!zetl_csv_append_field(&b, "\"\"", 2));
    CHECK(b.len == 3);
    CHECK_STR(b.data, "abc");
    zetl_buf_release(&b);
}

int main(void)
{
    test_quoting();
    test_scan_positions();
    test_cap();
    return zetl_tap_done();
}
