/* Error classes and the caller-owned error buffer every fallible function fills. */
#ifndef ZETL_ERR_H
#define ZETL_ERR_H

#include <stddef.h>

/*
 * Every function that can fail returns one of these; ZETL_OK is 0.  The class
 * decides what the caller does: retry (connection lost, 5xx), stop the job
 * (protocol violation, local I/O failure), or exit 2 (bad usage or config).
 */
enum zetl_err {
    ZETL_OK = 0,
    ZETL_ERR_USAGE,    /* bad command line or invalid config: exit 2 */
    ZETL_ERR_RETRY,    /* transient: connection lost, server busy; retry with backoff */
    ZETL_ERR_PROTOCOL, /* malformed or unexpected bytes from a peer: fatal */
    ZETL_ERR_IO,       /* local file system failure (disk full, permissions): fatal */
    ZETL_ERR_FATAL,    /* any other failure of the job */
};

#define ZETL_ERRBUF_SIZE 1024

/* Detail for the caller; functions fill it, callers prepend their context. */
struct zetl_errbuf {
    char msg[ZETL_ERRBUF_SIZE];
};

/* Replaces the message. Returns `err` so callers can write `return zetl_err_set(...)`. */
enum zetl_err zetl_err_set(struct zetl_errbuf *eb, enum zetl_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to the message already in `eb`. */
void zetl_err_prefix(struct zetl_errbuf *eb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Short lowercase name of an error class, for logs. */
const char *zetl_err_name(enum zetl_err err);

#endif
