/*
 * Private to the archive: the backend table between archive.c (manifest,
 * dispatch, file://) and the remote backends (archive_s3.c), and the
 * archive object they share.  Not for use outside sinks/archive*.c.
 */
#ifndef ZETL_ARCHIVE_BACKEND_H
#define ZETL_ARCHIVE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "sinks/archive.h"
#include "sinks/batch.h"

struct archive_backend {
    const char *scheme;
    enum zetl_err (*last_lsn)(struct zetl_archive *ar, const char *stream, uint64_t *last_lsn,
                              uint64_t *end_lsn, struct zetl_errbuf *eb);
    /* Stores the batch files, then the manifest (text of len bytes) last. */
    enum zetl_err (*put)(struct zetl_archive *ar, const struct zetl_batch *b, const char *manifest,
                         size_t len, struct zetl_errbuf *eb);
    /* Names of complete batches whose last LSN is above after_lsn, oldest first. */
    enum zetl_err (*list)(struct zetl_archive *ar, const char *stream, uint64_t after_lsn,
                          struct zetl_strlist *out, struct zetl_errbuf *eb);
    /* A local directory named after the batch, holding it. */
    enum zetl_err (*fetch)(struct zetl_archive *ar, const char *stream, const char *name,
                           char **dir, struct zetl_errbuf *eb);
    /* Releases what fetch made (NULL: nothing to do). */
    void (*fetch_done)(struct zetl_archive *ar, const char *dir);
    void (*release)(struct zetl_archive *ar);
};

/* "<hex16>-<hex16>" exactly (n bytes of s), upper-case digits: a batch directory name. */
bool zetl_archive_parse_name(const char *s, size_t n, uint64_t *first, uint64_t *last);

struct archive_s3;

struct zetl_archive {
    const struct archive_backend *be;
    char *url;             /* owned */
    char *root;            /* owned: file backend: absolute root directory */
    struct archive_s3 *s3; /* owned: s3 backend state; freed by its release */
};

/*
 * Sets up the s3:// backend for ar->url (sets ar->be and ar->s3) and checks
 * the bucket: a missing bucket, denied access, a wrong region or an
 * unreachable endpoint fails here with one line (ZETL_ERR_FATAL, or
 * ZETL_ERR_RETRY for the unreachable endpoint).  Uses cfg->archive.s3 and
 * cfg->buffer.dir (where fetched batches are put); cfg is borrowed.
 */
enum zetl_err zetl_archive_s3_open(struct zetl_archive *ar, const struct zetl_config *cfg,
                                   struct zetl_errbuf *eb);

#endif
