/* Clocks, and timestamps as users and the archive write them. */
#ifndef ZETL_TIME_H
#define ZETL_TIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Milliseconds on a monotonic clock: for deadlines and durations, never for dates. */
int64_t zetl_now_ms(void);

/*
 * Parses a timestamp into microseconds since 1970-01-01 00:00:00 UTC:
 * "YYYY-MM-DD", then optionally 'T' or ' ' and "HH:MM[:SS[.ffffff]]", then
 * optionally a zone: "Z", "+HH", "+HHMM", "+HH:MM" (or '-'), alone or after
 * one space.  Without a zone the time is UTC.  This reads RFC 3339 (the
 * manifest's commit times), PostgreSQL's timestamptz output ("2024-03-05
 * 12:34:56.789012+00", the archive's commit times) and what a user types.
 * Returns false on anything else (also trailing bytes, a day that does not
 * exist, more than 6 fraction digits).
 */
bool zetl_time_parse(const char *s, int64_t *usec);
/* Writes usec as "YYYY-MM-DD HH:MM:SS.ffffff+00" (n >= 32) for messages. */
void zetl_time_format(int64_t usec, char *out, size_t n);

#endif
