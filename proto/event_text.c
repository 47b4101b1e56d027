/*
 * PostgreSQL text forms <-> the typed values of change events: the strict
 * parsers the encoders use (a value that is not exactly what PostgreSQL
 * prints for its type is refused, never guessed at) and the printers the
 * decoders use (the forms PostgreSQL reads back to the same value).
 */
#include "proto/event_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "common/utf8.h"

const char *ev_kind_name(enum ev_kind k)
{
    switch (k) {
    case EV_BOOL:
        return "boolean";
    case EV_SHORT:
    case EV_INT:
        return "int";
    case EV_LONG:
        return "long";
    case EV_FLOAT:
        return "float";
    case EV_DOUBLE:
        return "double";
    case EV_BYTES:
        return "bytes";
    case EV_STRING:
        break;
    }
    return "string";
}

bool ev_parse_bool(const char *s, size_t n, bool *out)
{
    if (n != 1 || (s[0] != 't' && s[0] != 'f'))
        return false;
    *out = s[0] == 't';
    return true;
}

bool ev_parse_int(const char *s, size_t n, int64_t min, int64_t max, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    uint64_t v = 0, lim;

    if (n == 0)
        return false;
    if (s[0] == '-' || s[0] == '+') {
        neg = s[0] == '-';
        if (++i == n)
            return false;
    }
    /* The magnitude's limit: -(min + 1) + 1 cannot overflow for INT64_MIN. */
    lim = neg ? (uint64_t)(-(min + 1)) + 1 : (uint64_t)max;
    for (; i < n; i++) {
        unsigned d = (unsigned)((unsigned char)s[i] - '0');

        if (d > 9 || v > (lim - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = !neg ? (int64_t)v : v == 0 ? 0 : -(int64_t)(v - 1) - 1;
    return true;
}

/* A NUL-terminated copy for strtod: on the stack when short, else in tmp. */
static const char *float_text(struct zetl_buf *tmp, char *stack, size_t stack_size, const char *s,
                              size_t n)
{
    if (n < stack_size) {
        memcpy(stack, s, n);
        stack[n] = '\0';
        return stack;
    }
    zetl_buf_reset(tmp);
    return zetl_buf_append(tmp, s, n) ? tmp->data : NULL;
}

/*
 * strtod's grammar is PostgreSQL's float input ("NaN", "Infinity",
 * "-Infinity", exponents), except that it skips leading blanks, which
 * PostgreSQL never prints; overflow is refused as float8in refuses it.
 */
bool ev_parse_double(struct zetl_buf *tmp, const char *s, size_t n, double *out)
{
    char stack[64], *end;
    const char *t;

    if (n == 0 || s[0] == ' ' || (s[0] >= '\t' && s[0] <= '\r'))
        return false;
    if ((t = float_text(tmp, stack, sizeof(stack), s, n)) == NULL || strlen(t) != n)
        return false;
    errno = 0;
    *out = strtod(t, &end);
    return end == t + n && !(errno == ERANGE && isinf(*out));
}

bool ev_parse_float(struct zetl_buf *tmp, const char *s, size_t n, float *out)
{
    char stack[64], *end;
    const char *t;

    if (n == 0 || s[0] == ' ' || (s[0] >= '\t' && s[0] <= '\r'))
        return false;
    if ((t = float_text(tmp, stack, sizeof(stack), s, n)) == NULL || strlen(t) != n)
        return false;
    errno = 0;
    *out = strtof(t, &end);
    return end == t + n && !(errno == ERANGE && isinf(*out));
}

bool ev_hex_check(const char *s, size_t n, size_t *nbytes)
{
    if (n < 2 || s[0] != '\\' || s[1] != 'x' || (n - 2) % 2 != 0)
        return false;
    for (size_t i = 2; i < n; i++)
        if (zetl_hex_value((unsigned char)s[i]) < 0)
            return false;
    *nbytes = (n - 2) / 2;
    return true;
}

void ev_hex_decode(const char *s, size_t n, unsigned char *out)
{
    for (size_t i = 2; i + 1 < n; i += 2)
        *out++ = (unsigned char)(zetl_hex_value((unsigned char)s[i]) << 4 |
                                 zetl_hex_value((unsigned char)s[i + 1]));
}

size_t ev_fmt_i64(char *out, int64_t v)
{
    char rev[24];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        rev[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        out[len++] = '-';
    while (n > 0)
        out[len++] = rev[--n];
    out[len] = '\0';
    return len;
}

static size_t fmt_nonfinite(char *out, double d)
{
    const char *t = isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity";

    strcpy(out, t);
    return strlen(t);
}

/* The fewest significant digits that read back as the same value (what PostgreSQL prints). */
size_t ev_fmt_double(char *out, double d)
{
    int n = 0;

    if (!isfinite(d))
        return fmt_nonfinite(out, d);
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, EV_NUM_MAX, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    return (size_t)n;
}

size_t ev_fmt_float(char *out, float f)
{
    int n = 0;

    if (!isfinite(f))
        return fmt_nonfinite(out, f);
    for (int prec = 6; prec <= 9; prec++) {
        n = snprintf(out, EV_NUM_MAX, "%.*g", prec, (double)f);
        if (strtof(out, NULL) == f)
            break;
    }
    return (size_t)n;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    size_t k = s[0] < 0x80 ? 1 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;

    if (k > n || !zetl_utf8_valid(s, k))
        return 0;
    return k;
}

bool ev_utf8_sanitize(struct zetl_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    while (i < n) {
        size_t k = utf8_seq(u + i, n - i);

        if (k == 0) {
            if (!zetl_buf_append(b, "\xEF\xBF\xBD", 3))
                return false;
            i++;
        } else {
            if (!zetl_buf_append(b, s + i, k))
                return false;
            i += k;
        }
    }
    return true;
}

char *ev_text_copy(struct zetl_ev_decoder *d, const void *s, size_t n)
{
    return zetl_arena_strndup(&d->ar, s, n);
}

char *ev_text_bytea(struct zetl_ev_decoder *d, const unsigned char *p, size_t n, size_t *len)
{
    static const char hex[] = "0123456789abcdef";
    char *t = zetl_arena_alloc(&d->ar, 2 * n + 3), *q = t;

    *q++ = '\\';
    *q++ = 'x';
    for (size_t i = 0; i < n; i++) {
        *q++ = hex[p[i] >> 4];
        *q++ = hex[p[i] & 15];
    }
    *q = '\0';
    *len = 2 * n + 2;
    return t;
}

void ev_decoder_prepare(struct zetl_ev_decoder *d, size_t ncols)
{
    zetl_arena_reset(&d->ar);
    if (ncols > d->cap) {
        d->before = zetl_realloc(d->before, ncols * sizeof(*d->before));
        d->after = zetl_realloc(d->after, ncols * sizeof(*d->after));
        d->before_len = zetl_realloc(d->before_len, ncols * sizeof(*d->before_len));
        d->after_len = zetl_realloc(d->after_len, ncols * sizeof(*d->after_len));
        d->unchanged = zetl_realloc(d->unchanged, ncols);
        d->cap = ncols;
    }
    for (size_t i = 0; i < ncols; i++) {
        d->before[i] = d->after[i] = NULL;
        d->before_len[i] = d->after_len[i] = 0;
        d->unchanged[i] = 0;
    }
}

enum zetl_err ev_err_value(const struct zetl_ev_schema *s, size_t col, struct zetl_errbuf *eb)
{
    return zetl_err_set(eb, ZETL_ERR_FATAL,
                        "could not encode column \"%s\" of table \"%s\": value is not valid %s "
                        "text for Avro %s",
                        s->cols[col].name, s->table, s->cols[col].type,
                        ev_kind_name(s->fields[col].kind));
}

enum zetl_err ev_err_key_null(const struct zetl_ev_schema *s, size_t col, struct zetl_errbuf *eb)
{
    return zetl_err_set(eb, ZETL_ERR_FATAL,
                        "could not encode the key of table \"%s\": key column \"%s\" is NULL",
                        s->table, s->cols[col].name);
}

size_t ev_sequence(char *out, uint64_t lsn)
{
    char rev[24];
    size_t r = 0, n;

    /* Unsigned decimal, as Debezium prints LSNs in its sequence. */
    do {
        rev[r++] = (char)('0' + lsn % 10);
        lsn /= 10;
    } while (lsn != 0);
    memcpy(out, "[null,\"", 7);
    n = 7;
    while (r > 0)
        out[n++] = rev[--r];
    memcpy(out + n, "\"]", 2);
    return n + 2;
}

bool ev_json_quote(struct zetl_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    if (!zetl_buf_putc(b, '"'))
        return false;
    while (i < n) {
        size_t j = i, k;
        char esc[6];

        while (j < n && u[j] >= 0x20 && u[j] < 0x80 && u[j] != '"' && u[j] != '\\')
            j++;
        if (j > i && !zetl_buf_append(b, s + i, j - i))
            return false;
        if ((i = j) == n)
            break;
        if (u[i] >= 0x80) {
            k = utf8_seq(u + i, n - i);
            if (!(k ? zetl_buf_append(b, s + i, k) : zetl_buf_append(b, "\xEF\xBF\xBD", 3)))
                return false;
            i += k ? k : 1;
            continue;
        }
        esc[0] = '\\';
        switch (u[i]) {
        case '"':
        case '\\':
            esc[1] = (char)u[i];
            k = 2;
            break;
        case '\n':
            esc[1] = 'n';
            k = 2;
            break;
        case '\r':
            esc[1] = 'r';
            k = 2;
            break;
        case '\t':
            esc[1] = 't';
            k = 2;
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[u[i] >> 4];
            esc[5] = hex[u[i] & 15];
            k = 6;
            break;
        }
        if (!zetl_buf_append(b, esc, k))
            return false;
        i++;
    }
    return zetl_buf_putc(b, '"');
}
