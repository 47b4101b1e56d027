/* Allocation that aborts on failure, and a bump arena for per-message data. */
#ifndef ZETL_MEM_H
#define ZETL_MEM_H

#include <stddef.h>

/* Allocation failure aborts the process: a restart resumes from the slot. */
void *zetl_malloc(size_t n);
void *zetl_calloc(size_t nmemb, size_t size);
void *zetl_realloc(void *p, size_t n);
/* Returns an owned NUL-terminated copy. */
char *zetl_strdup(const char *s);
/* Returns an owned NUL-terminated copy of the first `n` bytes of `s`. */
char *zetl_strndup(const char *s, size_t n);

/*
 * A bump allocator: many small allocations, one reset.  Used per message and
 * per transaction so decoding never frees piecemeal.  Blocks are kept across
 * resets, so steady-state decoding allocates nothing.
 */
struct zetl_arena_block;
struct zetl_arena {
    struct zetl_arena_block *head; /* owned: block currently allocated from */
    struct zetl_arena_block *free; /* owned: blocks kept for reuse after reset */
    size_t block_size;
};

void zetl_arena_init(struct zetl_arena *ar, size_t block_size);
/* Returns memory valid until the next zetl_arena_reset/release; 16-byte aligned. */
void *zetl_arena_alloc(struct zetl_arena *ar, size_t n);
/* Returns a NUL-terminated copy of `n` bytes of `s`, valid until reset. */
char *zetl_arena_strndup(struct zetl_arena *ar, const char *s, size_t n);
void zetl_arena_reset(struct zetl_arena *ar);
void zetl_arena_release(struct zetl_arena *ar);

#endif
