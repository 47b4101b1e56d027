/*
 * Password redaction for connection strings before they reach a log line.
 *
 * Handles both libpq forms: key/value conninfo ("host=h password='a b\'c'")
 * and URIs ("postgresql://user:secret@host/db?password=secret").  The parsing
 * mirrors libpq's (conninfo_parse, conninfo_uri_parse_options) closely enough
 * that whatever libpq would read as the password is what gets masked; a
 * string libpq could not parse is masked from the first doubtful point on.
 *
 * libpq's messages about a connection string it cannot use quote the whole
 * string or the piece it stumbled on ("invalid percent-encoded token:
 * \"s3cr%zzet\""), so zetl_config_redact_conn_error also masks every
 * spelling of each password the redaction found: as written, unescaped and
 * percent-decoded.
 */
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "common/buf.h"
#include "common/mem.h"
#include "common/strlist.h"

#define REDACTED "********"

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_uri(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* Records a URI password as written and, when that differs, percent-decoded. */
static void add_uri_secret(struct zetl_strlist *secrets, const char *s, size_t n)
{
    struct zetl_buf d;

    if (n == 0)
        return;
    zetl_strlist_addn(secrets, s, n);
    zetl_buf_init(&d, 0);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && zetl_hex_value(s[i + 1]) >= 0 &&
            zetl_hex_value(s[i + 2]) >= 0) {
            zetl_buf_putc(&d, (char)(zetl_hex_value(s[i + 1]) * 16 + zetl_hex_value(s[i + 2])));
            i += 2;
        } else {
            zetl_buf_putc(&d, s[i]);
        }
    }
    if (d.len > 0 && (d.len != n || memcmp(d.data, s, n) != 0))
        zetl_strlist_addn(secrets, d.data, d.len);
    zetl_buf_release(&d);
}

/*
 * URI form: the password in the userinfo, and any password= query
 * parameter.  What is masked is added to `secrets`.
 */
static void redact_uri(struct zetl_buf *b, const char *s, struct zetl_strlist *secrets)
{
    const char *p = strstr(s, "://") + 3;

    zetl_buf_append(b, s, (size_t)(p - s));
    /*
     * libpq takes the userinfo up to the first '@' before any '/'; a raw '@'
     * in a password is a user mistake, so mask up to the last one instead.
     */
    size_t hostpart = strcspn(p, "/?");
    size_t auth = hostpart;
    while (auth > 0 && p[auth - 1] != '@')
        auth--;
    if (auth > 0) {
        auth--; /* index of the '@' */
        size_t user = strcspn(p, ":@");
        zetl_buf_append(b, p, user);
        if (p[user] == ':' && user + 1 < auth) {
            zetl_buf_puts(b, ":" REDACTED);
            add_uri_secret(secrets, p + user + 1, auth - user - 1);
        } else {
            zetl_buf_append(b, p + user, auth - user);
        }
        p += auth;
    }
    const char *query = strchr(p, '?');
    if (query == NULL) {
        zetl_buf_puts(b, p);
        return;
    }
    zetl_buf_append(b, p, (size_t)(query + 1 - p));
    p = query + 1;
    while (*p) {
        size_t param = strcspn(p, "&");
        if (strncmp(p, "password=", 9) == 0 && param >= 9) {
            zetl_buf_puts(b, "password=" REDACTED);
            add_uri_secret(secrets, p + 9, param - 9);
        } else {
            zetl_buf_append(b, p, param);
        }
        p += param;
        if (*p == '&')
            zetl_buf_putc(b, *p++);
    }
}

static void redact_into(struct zetl_buf *b, const char *dsn, struct zetl_strlist *secrets);

/* A value after "password" in a string libpq cannot parse: up to a blank or a quote. */
static void add_tail_secret(struct zetl_strlist *secrets, const char *tail)
{
    const char *v = strstr(tail, "password");

    zetl_strlist_add(secrets, tail);
    if (v == NULL)
        return;
    v += 8;
    while (is_space(*v) || *v == '=' || *v == '\'')
        v++;
    size_t n = 0;
    while (v[n] && !is_space(v[n]) && v[n] != '\'')
        n++;
    if (n > 0)
        zetl_strlist_addn(secrets, v, n);
}

/*
 * Key/value form.  Values are bare words or single-quoted, and in both a
 * backslash escapes the next byte.  The separators and quoting of the input
 * are kept, so the output differs only where a secret was.  What is masked
 * is added to `secrets`.
 */
static void redact_conninfo(struct zetl_buf *b, const char *s, struct zetl_strlist *secrets)
{
    const char *p = s;
    const char *key = s;

    while (*p) {
        const char *start = p;
        while (is_space(*p))
            p++;
        zetl_buf_append(b, start, (size_t)(p - start));
        if (*p == '\0')
            break;

        key = p;
        while (*p && *p != '=' && !is_space(*p))
            p++;
        size_t keylen = (size_t)(p - key);
        while (is_space(*p))
            p++;
        if (*p != '=')
            goto bad; /* libpq rejects this; mask the rest in case it holds a secret */
        p++;
        while (is_space(*p))
            p++;
        const char *vstart = p;

        /* Unescaped value, for dbname values that are themselves connection strings. */
        struct zetl_buf val;
        zetl_buf_init(&val, 0);
        if (*p == '\'') {
            p++;
            while (*p && *p != '\'') {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                zetl_buf_putc(&val, *p++);
            }
            if (*p != '\'') {
                zetl_buf_release(&val);
                goto bad; /* unterminated quote */
            }
            p++;
        } else {
            while (*p && !is_space(*p)) {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                zetl_buf_putc(&val, *p++);
            }
        }

        bool done = false;
        if (keylen == 8 && strncmp(key, "password", 8) == 0) {
            zetl_buf_append(b, key, (size_t)(vstart - key));
            zetl_buf_puts(b, REDACTED);
            /* As written (quotes and escapes included), inside its quotes, and unescaped. */
            zetl_strlist_addn(secrets, vstart, (size_t)(p - vstart));
            if (*vstart == '\'' && p - vstart > 2)
                zetl_strlist_addn(secrets, vstart + 1, (size_t)(p - vstart - 2));
            if (val.len > 0)
                zetl_strlist_addn(secrets, val.data, val.len);
            done = true;
        } else if (keylen == 6 && strncmp(key, "dbname", 6) == 0 && val.data != NULL &&
                   (is_uri(val.data) || strchr(val.data, '=') != NULL)) {
            /* libpq expands such a dbname as a full connection string. */
            struct zetl_buf inner;
            zetl_buf_init(&inner, 0);
            redact_into(&inner, val.data, secrets);
            if (strcmp(inner.data, val.data) != 0) {
                zetl_buf_append(b, key, (size_t)(vstart - key));
                zetl_buf_putc(b, '\'');
                for (const char *c = inner.data; *c; c++) {
                    if (*c == '\'' || *c == '\\')
                        zetl_buf_putc(b, '\\');
                    zetl_buf_putc(b, *c);
                }
                zetl_buf_putc(b, '\'');
                done = true;
            }
            zetl_buf_release(&inner);
        }
        if (!done)
            zetl_buf_append(b, key, (size_t)(p - key));
        zetl_buf_release(&val);
    }
    return;

bad:
    /* libpq would reject the rest; show it unless it might hold a password. */
    if (strstr(key, "password") != NULL) {
        zetl_buf_puts(b, REDACTED);
        add_tail_secret(secrets, key);
    } else {
        zetl_buf_puts(b, key);
    }
}

static void redact_into(struct zetl_buf *b, const char *dsn, struct zetl_strlist *secrets)
{
    if (is_uri(dsn))
        redact_uri(b, dsn, secrets);
    else
        redact_conninfo(b, dsn, secrets);
    if (b->data == NULL)
        zetl_buf_puts(b, "");
}

char *zetl_config_redact_dsn(const char *dsn)
{
    struct zetl_strlist secrets = {NULL, 0};
    struct zetl_buf b;

    if (dsn == NULL)
        return zetl_strdup("");
    zetl_buf_init(&b, 0);
    redact_into(&b, dsn, &secrets);
    zetl_strlist_release(&secrets);
    return b.data; /* ownership passes to the caller */
}

/* `s` with every occurrence of `needle` (not empty) replaced by `with`; owned by the caller. */
static char *replace_all(const char *s, const char *needle, const char *with)
{
    size_t n = strlen(needle);
    struct zetl_buf b;
    const char *hit;

    if (n == 0)
        return zetl_strdup(s);
    zetl_buf_init(&b, 0);
    while ((hit = strstr(s, needle)) != NULL) {
        zetl_buf_append(&b, s, (size_t)(hit - s));
        zetl_buf_puts(&b, with);
        s = hit + n;
    }
    zetl_buf_puts(&b, s);
    return b.data ? b.data : zetl_strdup("");
}

/* Longest first, so a password is masked whole before a shorter spelling of it. */
static int by_length_desc(const void *a, const void *b)
{
    size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);

    return la < lb ? 1 : la > lb ? -1 : 0;
}

char *zetl_config_redact_conn_error(const char *dsn, const char *msg)
{
    struct zetl_strlist secrets = {NULL, 0};
    struct zetl_buf red;
    char *out;

    if (msg == NULL)
        msg = "";
    if (dsn == NULL || dsn[0] == '\0')
        return zetl_strdup(msg);
    zetl_buf_init(&red, 0);
    redact_into(&red, dsn, &secrets);
    out = replace_all(msg, dsn, red.data);
    if (secrets.n > 1)
        qsort(secrets.items, secrets.n, sizeof(*secrets.items), by_length_desc);
    for (size_t i = 0; i < secrets.n; i++) {
        char *next = replace_all(out, secrets.items[i], REDACTED);
        free(out);
        out = next;
    }
    zetl_buf_release(&red);
    zetl_strlist_release(&secrets);
    return out;
}
