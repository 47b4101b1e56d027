/*
 * A small S3 client on libcurl: requests signed with AWS Signature V4 by
 * curl (CURLOPT_AWS_SIGV4) plus the x-amz-content-sha256 payload hash;
 * several transfers in flight on one curl multi handle (bounded); multipart
 * upload above the part size; ListObjectsV2 with pagination;
 * virtual-hosted or path-style addressing.
 *
 * Retries: one attempt per call.  A transient failure (5xx, 429, timeouts,
 * resets, partial bodies) returns ZETL_ERR_RETRY at once and the caller,
 * which knows how long it may wait and when to stop, owns the retry loop
 * (the daemon's sink thread retries with backoff until the archive is back).
 * The one exception is the parts of a multipart upload: a part is retried
 * here with backoff and jitter (zetl_s3_opts.part_attempts), because
 * retrying the call would abort the upload and send every part again.
 * Within one call of several objects every object gets its attempt even
 * after another failed transiently; a final error stops the call.
 *
 * Errors: ZETL_ERR_RETRY for a transient failure (the caller may try again
 * later), ZETL_ERR_FATAL for any other answer of the server (4xx, with S3's
 * error code and message), ZETL_ERR_PROTOCOL for a response we cannot read,
 * ZETL_ERR_IO for local files.  Messages read like "s3 PUT
 * s3://bucket/key: 403 AccessDenied: Access Denied".  Credentials never
 * appear in a message or a log line.
 *
 * A client may be used from several threads at once: each call borrows a
 * curl multi handle from a pool, so connections are kept alive per thread of
 * use and reused across calls.
 *
 * Files: s3.c (the client and its operations), s3_http.c (requests on curl,
 * the scheduler), s3_sign.c (URLs and what gets signed), s3_xml.c (S3's XML
 * answers), s3_creds.c (credentials).
 */
#ifndef ZETL_S3_H
#define ZETL_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "sinks/s3_creds.h"

#define ZETL_S3_MAX_INFLIGHT 4  /* transfers in flight per call */
#define ZETL_S3_PART_ATTEMPTS 6 /* per part of a multipart upload, before ZETL_ERR_RETRY */
#define ZETL_S3_BACKOFF_BASE_MS 100
#define ZETL_S3_BACKOFF_MAX_MS 5000
#define ZETL_S3_TIMEOUT_MS 30000           /* no byte moving for this long: the attempt failed */
#define ZETL_S3_LIST_MAX ((size_t)8 << 20) /* cap on one ListObjectsV2 page */
#define ZETL_S3_ERROR_BODY_MAX ((size_t)64 << 10) /* cap on an error body we keep */
#define ZETL_S3_MIN_PART ((uint64_t)5 << 20)
#define ZETL_S3_MAX_PARTS 10000

/* Where and how to reach the bucket. */
struct zetl_s3_opts {
    const char *region;   /* borrowed; NULL: "us-east-1" */
    const char *endpoint; /* borrowed; NULL: AWS ("https://s3.<region>.amazonaws.com") */
    bool path_style;      /* endpoint/bucket/key rather than bucket.host/key */
    uint64_t part_size;   /* objects above this go multipart; 0: 8 MiB; at least 5 MiB */
    int part_attempts;    /* 0: ZETL_S3_PART_ATTEMPTS */
    long timeout_ms;      /* 0: env ZETL_S3_TIMEOUT_MS, else ZETL_S3_TIMEOUT_MS */
    int list_page; /* max-keys of a ListObjectsV2 page; 0: env ZETL_S3_LIST_PAGE, else 1000 */
};

struct zetl_s3;

/*
 * Makes a client for `bucket` (copied) with credentials from
 * zetl_s3_creds_load.  Does no network I/O; see zetl_s3_check.
 */
enum zetl_err zetl_s3_new(const char *bucket, const struct zetl_s3_opts *opts, struct zetl_s3 **out,
                          struct zetl_errbuf *eb);
/* Same with given credentials (taken over: *cr is left empty). */
enum zetl_err zetl_s3_new_with(const char *bucket, const struct zetl_s3_opts *opts,
                               struct zetl_s3_creds *cr, struct zetl_s3 **out,
                               struct zetl_errbuf *eb);
void zetl_s3_free(struct zetl_s3 *s3);
const char *zetl_s3_bucket(const struct zetl_s3 *s3);

/*
 * Startup check: one ListObjectsV2 of at most one key under `prefix`, so a
 * missing bucket, denied access, a wrong region or an unreachable endpoint
 * is one clear message before anything else happens.
 */
enum zetl_err zetl_s3_check(struct zetl_s3 *s3, const char *prefix, struct zetl_errbuf *eb);

/* One object of zetl_s3_put / zetl_s3_get. */
struct zetl_s3_xfer {
    const char *key;    /* borrowed: object key, without a leading '/' */
    const char *path;   /* borrowed: local file (put: read; get: created or truncated) */
    const char *data;   /* borrowed: put: the body when path is NULL */
    size_t len;         /* put: length of data */
    const char *sha256; /* borrowed or NULL: put: hex digest of the content when known
                         * (saves reading the file twice); get: the expected digest */
    int64_t size;       /* put from a file / get: expected size, or -1 */
};

/*
 * Stores each object, several at once (at most ZETL_S3_MAX_INFLIGHT); a
 * file above the part size goes as a multipart upload (aborted on failure).
 * Returns ZETL_OK only when every object is stored.
 */
enum zetl_err zetl_s3_put(struct zetl_s3 *s3, const struct zetl_s3_xfer *x, size_t n,
                          struct zetl_errbuf *eb);
/*
 * Downloads each object into its path, several at once, streaming (memory
 * stays bounded); checks size and sha256 when given (ZETL_ERR_PROTOCOL on a
 * mismatch).
 */
enum zetl_err zetl_s3_get(struct zetl_s3 *s3, const struct zetl_s3_xfer *x, size_t n,
                          struct zetl_errbuf *eb);
/*
 * Reads an object of at most `max` bytes into out (reset first).  *found is
 * false (and ZETL_OK returned) when there is no such key.
 */
enum zetl_err zetl_s3_get_mem(struct zetl_s3 *s3, const char *key, size_t max, struct zetl_buf *out,
                              bool *found, struct zetl_errbuf *eb);
/* HEAD object: *found, and its size when found (size may be NULL). */
enum zetl_err zetl_s3_head(struct zetl_s3 *s3, const char *key, bool *found, uint64_t *size,
                           struct zetl_errbuf *eb);
/* DELETE object; a missing key is a success (S3 says 204 either way). */
enum zetl_err zetl_s3_delete(struct zetl_s3 *s3, const char *key, struct zetl_errbuf *eb);

/*
 * ListObjectsV2 over every page: calls fn once per key (keys in UTF-8 binary
 * order), or, with a delimiter, once per common prefix too (is_prefix
 * true).  `start_after` and `delimiter` may be NULL.  fn returns false to
 * stop early (not an error).  The strings passed to fn are valid during the
 * call only.
 */
enum zetl_err zetl_s3_list(struct zetl_s3 *s3, const char *prefix, const char *start_after,
                           const char *delimiter,
                           bool (*fn)(void *arg, const char *key, uint64_t size, bool is_prefix),
                           void *arg, struct zetl_errbuf *eb);

/* ---- pure helpers (exposed for tests) ----------------------------------- */

/*
 * Class of a finished attempt: ZETL_OK for 2xx, ZETL_ERR_RETRY for
 * transient failures (connection refused or reset, timeouts, partial
 * bodies: curl_code; 5xx, 408, 429, or S3 codes RequestTimeout, SlowDown,
 * InternalError), ZETL_ERR_FATAL otherwise.  curl_code is a CURLcode;
 * s3_code may be NULL.
 */
enum zetl_err zetl_s3_classify(int curl_code, long status, const char *s3_code);

/*
 * Delay before retry number `attempt` (1-based) of a part: exponential from
 * ZETL_S3_BACKOFF_BASE_MS, capped at ZETL_S3_BACKOFF_MAX_MS, the upper half
 * drawn from `rnd` ("equal jitter").
 */
long zetl_s3_backoff_ms(int attempt, uint32_t rnd);

/*
 * Part size for a multipart upload of `size` bytes: `want`, raised so the
 * upload needs at most ZETL_S3_MAX_PARTS parts (whole MiB), at least 5 MiB.
 */
uint64_t zetl_s3_part_size(uint64_t size, uint64_t want);

/*
 * Splits "s3://bucket[/prefix]" into bucket and prefix (owned; the prefix
 * without leading or trailing '/', "" when none).  ZETL_ERR_USAGE when the
 * url is not one.
 */
enum zetl_err zetl_s3_parse_url(const char *url, char **bucket, char **prefix,
                                struct zetl_errbuf *eb);

#endif
