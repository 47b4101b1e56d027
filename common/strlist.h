/* A growable list of owned strings: names, globs, keys, header lines. */
#ifndef ZETL_STRLIST_H
#define ZETL_STRLIST_H

#include <stddef.h>

struct zetl_strlist {
    char **items; /* owned, each owned */
    size_t n;
};

/* Appends an owned copy of `s`. */
void zetl_strlist_add(struct zetl_strlist *l, const char *s);
/* Appends an owned NUL-terminated copy of the first `n` bytes of `s`. */
void zetl_strlist_addn(struct zetl_strlist *l, const char *s, size_t n);
/* Frees every item and the array; leaves an empty list. */
void zetl_strlist_release(struct zetl_strlist *l);

#endif
