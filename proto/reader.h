/*
 * Bounds-checked big-endian reader with a sticky error flag.  Decode straight
 * through, then check rd.err once (and zetl_reader_end for leftover bytes),
 * like PostgreSQL's pq_getmsg* / pq_getmsgend.
 */
#ifndef ZETL_READER_H
#define ZETL_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct zetl_reader {
    const uint8_t *start; /* borrowed */
    const uint8_t *p;
    const uint8_t *end;
    bool err; /* set on the first read past the end; reads then return 0 / NULL */
};

void zetl_reader_init(struct zetl_reader *rd, const void *data, size_t len);
uint8_t zetl_reader_u8(struct zetl_reader *rd);
uint16_t zetl_reader_u16be(struct zetl_reader *rd);
uint32_t zetl_reader_u32be(struct zetl_reader *rd);
uint64_t zetl_reader_u64be(struct zetl_reader *rd);
/* Returns a pointer into the input (borrowed) to `n` bytes, or NULL and sets err. */
const uint8_t *zetl_reader_bytes(struct zetl_reader *rd, size_t n);
/*
 * Reads a NUL-terminated string; returns a pointer into the input and its
 * length (excluding NUL).  Sets err when no NUL occurs before the end.
 */
const char *zetl_reader_cstr(struct zetl_reader *rd, size_t *len);
/* Offset of the next byte from the start. */
size_t zetl_reader_offset(const struct zetl_reader *rd);
size_t zetl_reader_remaining(const struct zetl_reader *rd);
/* True when nothing was read past the end and no bytes are left over. */
bool zetl_reader_end(const struct zetl_reader *rd);

#endif
