/* CSV field encoder: the per-value hot path of the batcher. */
#include "sinks/csv.h"

#include <stdint.h>
#include <string.h>

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Nonzero when some byte of x equals the byte whose broadcast is `pat`. */
static inline uint64_t has_byte(uint64_t x, uint64_t pat)
{
    uint64_t t = x ^ pat;

    return (t - ONES) & ~t & HIGHS;
}

static inline bool is_special(unsigned char c)
{
    return c == ',' || c == '"' || c == '\r' || c == '\n' || c == '\\';
}

/* Scans 8 bytes at a time (like memchr) for any byte that forces quoting. */
static bool has_special(const char *p, size_t n)
{
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t x;

        memcpy(&x, p + i, 8);
        if (has_byte(x, ',' * ONES) | has_byte(x, '"' * ONES) | has_byte(x, '\r' * ONES) |
            has_byte(x, '\n' * ONES) | has_byte(x, '\\' * ONES))
            return true;
    }
    for (; i < n; i++)
        if (is_special((unsigned char)p[i]))
            return true;
    return false;
}

bool zetl_csv_needs_quote(const char *p, size_t n)
{
    if (n == 0)
        return true;
    if (p[0] == ' ' || p[0] == '\t' || p[n - 1] == ' ' || p[n - 1] == '\t')
        return true;
    /* "\." alone is COPY's end-of-data marker; its backslash makes has_special() catch it too. */
    return has_special(p, n);
}

bool zetl_csv_append_field(struct zetl_buf *out, const char *p, size_t n)
{
    size_t start = out->len;
    const char *end;

    if (p == NULL)
        return true;
    if (!zetl_csv_needs_quote(p, n))
        return zetl_buf_append(out, p, n);

    /* Room for the quotes and the text; doubled quotes grow it further below. */
    if (!zetl_buf_reserve(out, n + 2))
        return false;
    out->data[out->len++] = '"';
    end = p + n;
    while (p < end) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        size_t seg = q ? (size_t)(q - p) + 1 : (size_t)(end - p);

        if (!zetl_buf_append(out, p, seg) || (q && !zetl_buf_putc(out, '"'))) {
            out->len = start;
            out->data[start] = '\0';
            return false;
        }
        p += seg;
    }
    if (!zetl_buf_putc(out, '"')) {
        out->len = start;
        out->data[start] = '\0';
        return false;
    }
    return true;
}
