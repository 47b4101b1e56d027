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

/* What one zetl_archive_prune did. */
struct zetl_archive_prune_result {
    size_t removed;   /* batches removed */
    uint64_t bytes;   /* bytes they held (and the leftovers) */
    size_t leftovers; /* batches an interrupted earlier removal had left half removed */
    bool more;        /* stopped at ZETL_ARCHIVE_PRUNE_MAX: more may be due at once */
    char oldest[40];  /* name of the oldest batch left ("" when the stream has none) */
};

/* Batches one zetl_archive_prune removes at most, so a first pass does not stall the stream. */
#define ZETL_ARCHIVE_PRUNE_MAX 256

/*
 * Retention: removes the oldest batches of `stream`, oldest first, while
 * each one's last commit time (manifest) is before `before_unix_usec` and
 * its last commit LSN is below `below_lsn`, stopping at the first batch
 * that is not (the archive stays one contiguous range) and never removing
 * the newest batch (zetl_archive_last_lsn derives the stream's position
 * from it).  The caller passes as below_lsn the lowest end LSN every sink
 * applied (an applied batch's last commit is below it, an unapplied one's
 * is not), lowered to what must be kept for other reasons.  First finishes
 * removals a crash cut short.  *res is filled also after an error.
 */
enum zetl_err zetl_archive_prune(struct zetl_archive *ar, const char *stream,
                                 int64_t before_unix_usec, uint64_t below_lsn,
                                 struct zetl_archive_prune_result *res, struct zetl_errbuf *eb);

/*
 * The streams the archive holds: the directories under its root whose name
 * is a replication slot's ([a-z0-9_], at most 63 bytes), sorted; a stream
 * set aside by hand ("zetl_0.lost-2024-05-01", docs/operations.md) is not
 * one.  out is owned (free with zetl_strlist_release).
 */
enum zetl_err zetl_archive_streams(struct zetl_archive *ar, struct zetl_strlist *out,
                                   struct zetl_errbuf *eb);

/*
 * Reads only the manifest of batch `name` of `stream` into *m (initialized
 * here; release it even after an error): for S3 one GET, not the batch.
 */
enum zetl_err zetl_archive_read_manifest(struct zetl_archive *ar, const char *stream,
                                         const char *name, struct zetl_manifest *m,
                                         struct zetl_errbuf *eb);

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
 * Calls fn(arg, commit_lsn, commit time in microseconds since the epoch)
 * for every row of every file of manifest m's batch in local directory
 * `dir` (a zetl_archive_fetch directory), in file order.  Memory stays
 * bounded whatever the file sizes.  ZETL_ERR_PROTOCOL naming the file for
 * a file that is not the archive's CSV.zst.
 */
enum zetl_err zetl_archive_scan_commits(const char *dir, const struct zetl_manifest *m,
                                        void (*fn)(void *arg, uint64_t lsn, int64_t usec),
                                        void *arg, struct zetl_errbuf *eb);

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
