/* Exponential backoff between retries. */
#include "common/backoff.h"

void zetl_backoff_init(struct zetl_backoff *bo, int64_t initial_ms, int64_t max_ms)
{
    bo->initial_ms = initial_ms;
    bo->max_ms = max_ms;
    bo->next_ms = initial_ms;
}

int64_t zetl_backoff_next(struct zetl_backoff *bo)
{
    int64_t now = bo->next_ms;

    bo->next_ms = now > bo->max_ms / 2 ? bo->max_ms : now * 2;
    return now;
}

void zetl_backoff_reset(struct zetl_backoff *bo)
{
    bo->next_ms = bo->initial_ms;
}
