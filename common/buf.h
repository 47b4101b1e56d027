/* Growable byte buffer with a hard cap, for anything that grows from remote input. */
#ifndef ZETL_BUF_H
#define ZETL_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct zetl_buf {
    char *data; /* owned; always NUL-terminated after len when non-NULL */
    size_t len;
    size_t alloc;
    size_t max; /* hard cap on len; 0 means SIZE_MAX/2 */
};

void zetl_buf_init(struct zetl_buf *b, size_t max);
void zetl_buf_release(struct zetl_buf *b);
void zetl_buf_reset(struct zetl_buf *b);
/* Each returns false (buffer unchanged) when the cap would be exceeded. */
bool zetl_buf_append(struct zetl_buf *b, const void *p, size_t n);
bool zetl_buf_putc(struct zetl_buf *b, char c);
bool zetl_buf_puts(struct zetl_buf *b, const char *s);
bool zetl_buf_printf(struct zetl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Ensures room for `n` more bytes; returns false past the cap. */
bool zetl_buf_reserve(struct zetl_buf *b, size_t n);

#endif
