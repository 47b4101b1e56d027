/*
 * Private to the archive: the backend table between archive.c (manifest,
 * dispatch) and the backends, one file each (archive_file.c for file://,
 * archive_s3.c for s3://), and the archive object they share.  Not for use
 * outside sinks/archive*.c.
 */
#ifndef ZETL_ARCHIVE_BACKEND_H
#define ZETL_ARCHIVE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "proto/manifest.h"
#include "sinks/archive.h"
#include "sinks/batch.h"

struct archive_backend {
    const char *scheme; /* "file": serves URLs "file://..." */
    /*
     * Sets up ar->state for ar->url (`rest` is the URL after "<scheme>://";
     * cfg borrowed, only during the call) and checks the store is usable.
     */
    enum zetl_err (*open)(struct zetl_archive *ar, const char *rest, const struct zetl_config *cfg,
                          struct zetl_errbuf *eb);
    enum zetl_err (*last_lsn)(struct zetl_archive *ar, const char *stream, uint64_t *last_lsn,
                              uint64_t *end_lsn, struct zetl_errbuf *eb);
    /* Stores the batch files, then the manifest (text of len bytes) last. */
    enum zetl_err (*put)(struct zetl_archive *ar, const struct zetl_batch *b, const char *manifest,
                         size_t len, struct zetl_errbuf *eb);
    /* Names of complete batches whose last LSN is above after_lsn, oldest first. */
    enum zetl_err (*list)(struct zetl_archive *ar, const char *stream, uint64_t after_lsn,
                          struct zetl_strlist *out, struct zetl_errbuf *eb);
    /* Names of the stream directories under the root (any order); see zetl_archive_streams. */
    enum zetl_err (*streams)(struct zetl_archive *ar, struct zetl_strlist *out,
                             struct zetl_errbuf *eb);
    /* A local directory named after the batch, holding it. */
    enum zetl_err (*fetch)(struct zetl_archive *ar, const char *stream, const char *name,
                           char **dir, struct zetl_errbuf *eb);
    /* Releases what fetch made (NULL: nothing to do). */
    void (*fetch_done)(struct zetl_archive *ar, const char *dir);
    /*
     * The manifest of complete batch `name` into *m (initialized here; the
     * caller releases it), checked to be the batch the name says.
     */
    enum zetl_err (*manifest)(struct zetl_archive *ar, const char *stream, const char *name,
                              struct zetl_manifest *m, struct zetl_errbuf *eb);
    /*
     * Removes batch `name`, crash-safe: first it stops being a batch (list
     * and last_lsn no longer see it), then its files go; *bytes: what it
     * held.  Safe to repeat on a batch half removed.
     */
    enum zetl_err (*remove)(struct zetl_archive *ar, const char *stream, const char *name,
                            uint64_t *bytes, struct zetl_errbuf *eb);
    /*
     * Finishes the removals a crash cut short, of batches whose last LSN is
     * below `below_last` (the newest complete batch's: nothing at or above
     * it can be one); *n and *bytes: how many and what they held.
     */
    enum zetl_err (*sweep)(struct zetl_archive *ar, const char *stream, uint64_t below_last,
                           size_t *n, uint64_t *bytes, struct zetl_errbuf *eb);
    /* Frees ar->state (which may be NULL or half set up after a failed open). */
    void (*release)(struct zetl_archive *ar);
};

extern const struct archive_backend zetl_archive_file_backend;
extern const struct archive_backend zetl_archive_s3_backend;

/* "<hex16>-<hex16>" exactly (n bytes of s), upper-case digits: a batch directory name. */
bool zetl_archive_parse_name(const char *s, size_t n, uint64_t *first, uint64_t *last);

struct zetl_archive {
    const struct archive_backend *be; /* static */
    char *url;                        /* owned */
    void *state;                      /* owned by the backend: freed by its release */
};

#endif
