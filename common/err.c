/* Error buffer helpers. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum zetl_err zetl_err_set(struct zetl_errbuf *eb, enum zetl_err err, const char *fmt, ...)
{
    va_list ap;

    if (eb == NULL)
        return err;
    va_start(ap, fmt);
    vsnprintf(eb->msg, sizeof(eb->msg), fmt, ap);
    va_end(ap);
    return err;
}

void zetl_err_prefix(struct zetl_errbuf *eb, const char *fmt, ...)
{
    char prefix[ZETL_ERRBUF_SIZE];
    char old[ZETL_ERRBUF_SIZE];
    va_list ap;

    if (eb == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, eb->msg, sizeof(old));
    /* Truncation is fine here: the start of a message is the useful part. */
    size_t n = strlen(prefix);
    if (n > sizeof(eb->msg) - 3)
        n = sizeof(eb->msg) - 3;
    memcpy(eb->msg, prefix, n);
    memcpy(eb->msg + n, ": ", 2);
    size_t rest = sizeof(eb->msg) - n - 3;
    size_t olen = strnlen(old, rest);
    memcpy(eb->msg + n + 2, old, olen);
    eb->msg[n + 2 + olen] = '\0';
}

const char *zetl_err_name(enum zetl_err err)
{
    switch (err) {
    case ZETL_OK:
        return "ok";
    case ZETL_ERR_USAGE:
        return "usage";
    case ZETL_ERR_RETRY:
        return "retriable";
    case ZETL_ERR_PROTOCOL:
        return "protocol";
    case ZETL_ERR_IO:
        return "i/o";
    case ZETL_ERR_FATAL:
        return "fatal";
    }
    return "unknown";
}
