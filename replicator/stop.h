/*
 * The process-wide stop request (SIGINT/SIGTERM, or one stream failing).  It
 * is a flag plus a pipe that becomes readable, so a thread waiting in poll()
 * wakes at once instead of noticing at its next timeout.
 */
#ifndef ZETL_STOP_H
#define ZETL_STOP_H

#include <stdbool.h>
#include <stdint.h>

/* Creates the wake-up pipe; idempotent, thread-safe.  Before it, stops only set the flag. */
void zetl_stop_init(void);
/* Asks every stream to finish; async-signal-safe. */
void zetl_stop_request(void);
bool zetl_stop_requested(void);
/* Readable once a stop was requested (never drained); -1 before zetl_stop_init. */
int zetl_stop_fd(void);
/* Sleeps ms milliseconds, less when a stop is requested meanwhile. */
void zetl_stop_sleep(int64_t ms);
/* Forgets a request (unit tests run several stops in one process). */
void zetl_stop_reset(void);

#endif
