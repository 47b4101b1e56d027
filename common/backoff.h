/* Exponential backoff between retries: one place for the doubling and the cap. */
#ifndef ZETL_BACKOFF_H
#define ZETL_BACKOFF_H

#include <stdint.h>

struct zetl_backoff {
    int64_t initial_ms;
    int64_t max_ms;
    int64_t next_ms; /* the delay the next call to zetl_backoff_next returns */
};

void zetl_backoff_init(struct zetl_backoff *bo, int64_t initial_ms, int64_t max_ms);
/* Returns the delay to wait now and doubles the following one, up to max_ms. */
int64_t zetl_backoff_next(struct zetl_backoff *bo);
/* Back to initial_ms (after a success that lasted). */
void zetl_backoff_reset(struct zetl_backoff *bo);

#endif
