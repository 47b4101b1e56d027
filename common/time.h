/* Clocks. */
#ifndef ZETL_TIME_H
#define ZETL_TIME_H

#include <stdint.h>

/* Milliseconds on a monotonic clock: for deadlines and durations, never for dates. */
int64_t zetl_now_ms(void);

#endif
