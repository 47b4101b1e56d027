/* Bounds-checked big-endian reader with a sticky error flag (see reader.h). */
#include "proto/reader.h"

#include <string.h>

/*
 * On the first read past the end, err is set and p stays at the start of the
 * field that could not be read, so zetl_reader_offset() names where the input
 * fell short.  Every later read returns 0 / NULL without moving.
 */

void zetl_reader_init(struct zetl_reader *rd, const void *data, size_t len)
{
    rd->start = data;
    rd->p = rd->start;
    rd->end = rd->start + len;
    rd->err = false;
    if (data == NULL) {
        /* An empty input may come with a NULL pointer; arithmetic on NULL is undefined. */
        rd->start = rd->p = rd->end = (const uint8_t *)"";
        rd->err = len != 0;
    }
}

static inline bool reader_has(struct zetl_reader *rd, size_t n)
{
    if (rd->err)
        return false;
    if ((size_t)(rd->end - rd->p) < n) {
        rd->err = true;
        return false;
    }
    return true;
}

uint8_t zetl_reader_u8(struct zetl_reader *rd)
{
    if (!reader_has(rd, 1))
        return 0;
    return *rd->p++;
}

uint16_t zetl_reader_u16be(struct zetl_reader *rd)
{
    if (!reader_has(rd, 2))
        return 0;
    const uint8_t *q = rd->p;
    rd->p += 2;
    return (uint16_t)((unsigned)q[0] << 8 | q[1]);
}

uint32_t zetl_reader_u32be(struct zetl_reader *rd)
{
    if (!reader_has(rd, 4))
        return 0;
    const uint8_t *q = rd->p;
    rd->p += 4;
    return (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
}

uint64_t zetl_reader_u64be(struct zetl_reader *rd)
{
    if (!reader_has(rd, 8))
        return 0;
    const uint8_t *q = rd->p;
    rd->p += 8;
    return (uint64_t)q[0] << 56 | (uint64_t)q[1] << 48 | (uint64_t)q[2] << 40 |
           (uint64_t)q[3] << 32 | (uint64_t)q[4] << 24 | (uint64_t)q[5] << 16 |
           (uint64_t)q[6] << 8 | q[7];
}

const uint8_t *zetl_reader_bytes(struct zetl_reader *rd, size_t n)
{
    if (!reader_has(rd, n))
        return NULL;
    const uint8_t *q = rd->p;
    rd->p += n;
    return q;
}

const char *zetl_reader_cstr(struct zetl_reader *rd, size_t *len)
{
    *len = 0;
    if (rd->err)
        return NULL;
    /* Only the bytes we were given are searched: a NUL past `end` does not count. */
    const uint8_t *nul = memchr(rd->p, '\0', (size_t)(rd->end - rd->p));
    if (nul == NULL) {
        rd->err = true;
        return NULL;
    }
    const char *s = (const char *)rd->p;
    *len = (size_t)(nul - rd->p);
    rd->p = nul + 1;
    return s;
}

size_t zetl_reader_offset(const struct zetl_reader *rd)
{
    return (size_t)(rd->p - rd->start);
}

size_t zetl_reader_remaining(const struct zetl_reader *rd)
{
    if (rd->err)
        return 0;
    return (size_t)(rd->end - rd->p);
}

bool zetl_reader_end(const struct zetl_reader *rd)
{
    return !rd->err && rd->p == rd->end;
}
