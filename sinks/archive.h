/*
 * The archive: sealed batches stored as
 *   <archive>/<stream>/<first_lsn>-<last_lsn>/{<table>.csv.zst..., manifest.json}
 * with LSNs as 16 hex digits (so names sort by LSN).  A batch directory
 * appears whole or not at all: files are written under a ".tmp-" name,
 * fsynced, the manifest written last, and the directory renamed in.
 */
#ifndef ZETL_ARCHIVE_H
#define ZETL_ARCHIVE_H

#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "config/config.h"
#include "proto/manifest.h"
#include "sinks/batch.h"

struct zetl_archive;

/*
 * Opens the archive at cfg->archive.url (cfg borrowed, only during the call):
 * "file://PATH" (a relative PATH is relative to the working directory;
 * creates the root directory) or "s3://BUCKET[/PREFIX]" (with
 * cfg->archive.s3; checks the bucket is reachable, exists, is ours to list
 * and is in the configured region).  ZETL_ERR_USAGE for an unsupported URL,
 * ZETL_ERR_IO when the directory is not writable, ZETL_ERR_FATAL or
 * ZETL_ERR_RETRY (endpoint unreachable) when the bucket check fails.
 */
enum zetl_err zetl_archive_open(const struct zetl_config *cfg, struct zetl_archive **out,
                                struct zetl_errbuf *eb);
void zetl_archive_free(struct zetl_archive *ar);

/*
 * Finds the newest complete batch of `stream`: its last commit LSN and end
 * LSN, or 0 and 0 when the stream has none.  Leftover ".tmp-" directories
 * are removed.
 */
enum zetl_err zetl_archive_last_lsn(struct zetl_archive *ar, const char *stream, uint64_t *last_lsn,
                                    uint64_t *end_lsn, struct zetl_errbuf *eb);

/*
 * Stores the batch durably (the files in b->dir are moved or copied).  When
 * the batch directory already exists with a valid manifest (a replay after a
 * crash) this is a success that changes nothing, and b->dir is left as is.
 */
enum zetl_err zetl_archive_put(struct zetl_archive *ar, const struct zetl_batch *b,
                               struct zetl_errbuf *eb);

/*
 * Lists the complete batches of `stream` whose last commit LSN is above
 * after_lsn, oldest first: batch directory names in out (owned; free with
 * zetl_strlist_release).
 */
enum zetl_err zetl_archive_list(struct zetl_archive *ar, const char *stream, uint64_t after_lsn,
                                struct zetl_strlist *out, struct zetl_errbuf *eb);

/*
 * Makes batch `name` of `stream` readable as a local directory named `name`:
 * the archive's own directory for file://, a fresh copy for remote archives.
 * Hand *dir back with zetl_archive_fetch_done.
 */
enum zetl_err zetl_archive_fetch(struct zetl_archive *ar, const char *stream, const char *name,
                                 char **dir, struct zetl_errbuf *eb);
/* Releases a fetched directory (removing it when it is a copy); frees dir. NULL is a no-op. */
void zetl_archive_fetch_done(struct zetl_archive *ar, char *dir);

/*
 * The manifest of a batch (created_at: now) into *out, initialized here;
 * release it with zetl_manifest_release.  Its strings and tenant lists are
 * borrowed from b, which must outlive it.
 */
void zetl_archive_manifest_of(const struct zetl_batch *b, struct zetl_manifest *out);

/* Renders the manifest JSON of a batch into out (appended; out uncapped). */
void zetl_archive_manifest(const struct zetl_batch *b, struct zetl_buf *out);

/* "<first>-<last>" directory name of a batch (34 bytes with NUL). */
void zetl_archive_batch_name(const struct zetl_batch *b, char name[40]);

#endif
