/*
 * Password redaction for connection strings before they reach a log line.
 *
 * Handles both libpq forms: key/value conninfo ("host=h password='a b\'c'")
 * and URIs ("postgresql://user:secret@host/db?password=secret").  The parsing
 * mirrors libpq's (conninfo_parse, conninfo_uri_parse_options) closely enough
 * that whatever libpq would read as the password is what gets masked; a
 * string libpq could not parse is masked from the first doubtful point on.
 */
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/mem.h"

#define REDACTED "********"

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_uri(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* URI form: the password in the userinfo, and any password= query parameter. */
static void redact_uri(struct zetl_buf *b, const char *s)
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
        if (p[user] == ':' && user + 1 < auth)
            zetl_buf_puts(b, ":" REDACTED);
        else
            zetl_buf_append(b, p + user, auth - user);
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
        } else {
            zetl_buf_append(b, p, param);
        }
        p += param;
        if (*p == '&')
            zetl_buf_putc(b, *p++);
    }
}

static void redact_into(struct zetl_buf *b, const char *dsn);

/*
 * Key/value form.  Values are bare words or single-quoted, and in both a
 * backslash escapes the next byte.  The separators and quoting of the input
 * are kept, so the output differs only where a secret was.
 */
static void redact_conninfo(struct zetl_buf *b, const char *s)
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
            done = true;
        } else if (keylen == 6 && strncmp(key, "dbname", 6) == 0 && val.data != NULL &&
                   (is_uri(val.data) || strchr(val.data, '=') != NULL)) {
            /* libpq expands such a dbname as a full connection string. */
            struct zetl_buf inner;
            zetl_buf_init(&inner, 0);
            redact_into(&inner, val.data);
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
    zetl_buf_puts(b, strstr(key, "password") != NULL ? REDACTED : key);
}

static void redact_into(struct zetl_buf *b, const char *dsn)
{
    if (is_uri(dsn))
        redact_uri(b, dsn);
    else
        redact_conninfo(b, dsn);
    if (b->data == NULL)
        zetl_buf_puts(b, "");
}

char *zetl_config_redact_dsn(const char *dsn)
{
    struct zetl_buf b;

    if (dsn == NULL)
        return zetl_strdup("");
    zetl_buf_init(&b, 0);
    redact_into(&b, dsn);
    return b.data; /* ownership passes to the caller */
}
