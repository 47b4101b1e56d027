/* Aborting allocators and the bump arena. */
#include "common/mem.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct zetl_arena_block {
    struct zetl_arena_block *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
};

static void oom(size_t n)
{
    fprintf(stderr, "FATAL:  out of memory (requested %zu bytes)\n", n);
    abort();
}

void *zetl_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        oom(n);
    return p;
}

void *zetl_calloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

    if (p == NULL)
        oom(nmemb * size);
    return p;
}

void *zetl_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL)
        oom(n);
    return q;
}

char *zetl_strndup(const char *s, size_t n)
{
    char *d = zetl_malloc(n + 1);

    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *zetl_strdup(const char *s)
{
    return zetl_strndup(s, strlen(s));
}

void zetl_arena_init(struct zetl_arena *ar, size_t block_size)
{
    ar->head = NULL;
    ar->free = NULL;
    ar->block_size = block_size ? block_size : 64 * 1024;
}

void *zetl_arena_alloc(struct zetl_arena *ar, size_t n)
{
    struct zetl_arena_block *b = ar->head;
    size_t need = (n + 15) & ~(size_t)15;

    if (b == NULL || b->size - b->used < need) {
        size_t size = need > ar->block_size ? need : ar->block_size;
        struct zetl_arena_block **pp = &ar->free;

        /* Reuse a kept block when one is large enough. */
        b = NULL;
        while (*pp != NULL) {
            if ((*pp)->size >= size) {
                b = *pp;
                *pp = b->next;
                break;
            }
            pp = &(*pp)->next;
        }
        if (b == NULL) {
            b = zetl_malloc(sizeof(*b) + size);
            b->size = size;
        }
        b->used = 0;
        b->next = ar->head;
        ar->head = b;
    }
    void *p = b->data + b->used;
    b->used += need;
    return p;
}

char *zetl_arena_strndup(struct zetl_arena *ar, const char *s, size_t n)
{
    char *d = zetl_arena_alloc(ar, n + 1);

    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void zetl_arena_reset(struct zetl_arena *ar)
{
    struct zetl_arena_block *b = ar->head;

    /* Keep at most a few blocks so one huge message does not pin memory forever. */
    size_t kept = 0;
    for (struct zetl_arena_block *f = ar->free; f != NULL; f = f->next)
        kept++;
    while (b != NULL) {
        struct zetl_arena_block *next = b->next;
        if (kept < 4 && b->size <= 4 * ar->block_size) {
            b->next = ar->free;
            ar->free = b;
            kept++;
        } else {
            free(b);
        }
        b = next;
    }
    ar->head = NULL;
}

void zetl_arena_release(struct zetl_arena *ar)
{
    zetl_arena_reset(ar);
    while (ar->free != NULL) {
        struct zetl_arena_block *next = ar->free->next;
        free(ar->free);
        ar->free = next;
    }
}
