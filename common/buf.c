/* Growable byte buffer with a hard cap. */
#include "common/buf.h"
#include "common/mem.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void zetl_buf_init(struct zetl_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->max = max ? max : SIZE_MAX / 2;
}

void zetl_buf_release(struct zetl_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
}

void zetl_buf_reset(struct zetl_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

bool zetl_buf_reserve(struct zetl_buf *b, size_t n)
{
    if (n > b->max - b->len)
        return false;
    if (b->len + n + 1 > b->alloc) {
        size_t a = b->alloc ? b->alloc : 256;
        while (a < b->len + n + 1)
            a *= 2;
        b->data = zetl_realloc(b->data, a);
        b->alloc = a;
    }
    return true;
}

bool zetl_buf_append(struct zetl_buf *b, const void *p, size_t n)
{
    if (!zetl_buf_reserve(b, n))
        return false;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

bool zetl_buf_putc(struct zetl_buf *b, char c)
{
    return zetl_buf_append(b, &c, 1);
}

bool zetl_buf_puts(struct zetl_buf *b, const char *s)
{
    return zetl_buf_append(b, s, strlen(s));
}

bool zetl_buf_printf(struct zetl_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !zetl_buf_reserve(b, (size_t)n))
        return false;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}
