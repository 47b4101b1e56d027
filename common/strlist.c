/* A growable list of owned strings. */
#include "common/strlist.h"

#include "common/mem.h"

#include <stdlib.h>
#include <string.h>

void zetl_strlist_add(struct zetl_strlist *l, const char *s)
{
    zetl_strlist_addn(l, s, strlen(s));
}

void zetl_strlist_addn(struct zetl_strlist *l, const char *s, size_t n)
{
    l->items = zetl_realloc(l->items, (l->n + 1) * sizeof(*l->items));
    l->items[l->n++] = zetl_strndup(s, n);
}

void zetl_strlist_release(struct zetl_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}
