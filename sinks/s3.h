/*
 * A small S3 client on libcurl: requests signed with AWS Signature V4 by
 * curl (CURLOPT_AWS_SIGV4) plus the x-amz-content-sha256 payload hash;
 * retries with exponential backoff and jitter on 5xx, 429, timeouts, resets
 * and partial bodies; several transfers in flight on one curl multi handle
 * (bounded); multipart upload above the part size; ListObjectsV2 with
 * pagination; virtual-hosted or path-style addressing.
 *
 * Errors: ZETL_ERR_RETRY when the attempts ran out on a transient failure
 * (the caller may try again later), ZETL_ERR_FATAL for any other answer of
 * the server (4xx, with S3's error code and message), ZETL_ERR_PROTOCOL for a
 * response we cannot read, ZETL_ERR_IO for local files.  Messages read like
 * "s3 PUT s3://bucket/key: 403 AccessDenied: Access Denied".  Credentials
 * never appear in a message or a log line.
 *
 * A client may be used from several threads at once: each call borrows a
 * curl multi handle from a pool, so connections are kept alive per thread of
 * use and reused across calls.
 */
#ifndef ZETL_S3_H
#define ZETL_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "config/config.h"

#define ZETL_S3_MAX_INFLIGHT 4 /* transfers in flight per call */
#define ZETL_S3_MAX_ATTEMPTS 6 /* per request, before ZETL_ERR_RETRY */
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
    int max_attempts;     /* 0: ZETL_S3_MAX_ATTEMPTS */
    long timeout_ms;      /* 0: env ZETL_S3_TIMEOUT_MS, else ZETL_S3_TIMEOUT_MS */
    int list_page; /* max-keys of a ListObjectsV2 page; 0: env ZETL_S3_LIST_PAGE, else 1000 */
};

/* AWS credentials; every member owned.  Never log them. */
struct zetl_s3_creds {
    char *access_key;
    char *secret_key;
    char *token; /* NULL without a session token */
};

/*
 * Loads credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+
 * AWS_SESSION_TOKEN), else the shared credentials file
 * (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials), profile AWS_PROFILE
 * or "default".  ZETL_ERR_FATAL when none are found.
 */
enum zetl_err zetl_s3_creds_load(struct zetl_s3_creds *cr, struct zetl_errbuf *eb);
/*
 * Reads profile `profile` of a shared credentials file's text (INI: [name]
 * sections, key = value lines, '#' and ';' comments).  ZETL_ERR_FATAL when
 * the profile or its keys are missing; `name` is for messages.
 */
enum zetl_err zetl_s3_creds_parse(const char *name, const char *text, size_t len,
                                  const char *profile, struct zetl_s3_creds *cr,
                                  struct zetl_errbuf *eb);
void zetl_s3_creds_release(struct zetl_s3_creds *cr);

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
 * is one clear message before anything else happens.  Fewer attempts than
 * ordinary requests.
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
 * Percent-encodes bytes outside A-Z a-z 0-9 - . _ ~ as %XX (upper-case),
 * keeping '/' when keep_slash: SigV4's UriEncode.  Appends to out.
 */
void zetl_s3_uri_encode(const char *s, size_t n, bool keep_slash, struct zetl_buf *out);

/*
 * Canonical query string of `npairs` key/value pairs (kv[2i], kv[2i+1]; a
 * NULL value is an empty one): each encoded, sorted by encoded key, joined
 * as k=v&k=v.  curl 7.88 signs the query as sent, so we send it canonical.
 * Appends to out.
 */
void zetl_s3_query(const char *const *kv, size_t npairs, struct zetl_buf *out);

/*
 * URL of `key` (may be "" for the bucket) with an optional canonical
 * `query`: virtual-hosted https://bucket.s3.<region>.amazonaws.com/key, or
 * path-style <endpoint>/bucket/key.  Appends to out.
 */
void zetl_s3_url(const struct zetl_s3_opts *o, const char *bucket, const char *key,
                 const char *query, struct zetl_buf *out);

/* "aws:amz:<region>:s3", curl's CURLOPT_AWS_SIGV4 parameter.  Appends to out. */
void zetl_s3_sigv4_param(const char *region, struct zetl_buf *out);

/*
 * Headers we add to a request besides curl's own (all of them signed):
 * x-amz-content-sha256, x-amz-security-token when `token`, Content-Type
 * when `content_type`.  Appends owned strings to out.
 */
void zetl_s3_headers(const char *payload_sha256, const char *token, const char *content_type,
                     struct zetl_strlist *out);

/*
 * Decodes XML character data: the five predefined entities and numeric
 * character references (as UTF-8).  False on a malformed or unknown entity
 * or a reference to an invalid code point.  Appends to out.
 */
bool zetl_s3_xml_decode(const char *s, size_t n, struct zetl_buf *out);

/*
 * Text of the first element <tag>...</tag> in xml[0..len) (decoded, into
 * out after a reset).  False when absent or malformed.
 */
bool zetl_s3_xml_text(const char *xml, size_t len, const char *tag, struct zetl_buf *out);

/* One page of a ListObjectsV2 answer. */
struct zetl_s3_list_page {
    char **keys;     /* owned, each owned */
    uint64_t *sizes; /* owned: size of keys[i] */
    size_t nkeys;
    struct zetl_strlist prefixes; /* common prefixes */
    bool truncated;
    char *next_token; /* owned or NULL: NextContinuationToken */
};

/*
 * Parses a ListBucketResult.  ZETL_ERR_PROTOCOL when it is not one, an
 * element is malformed, or it is truncated without a continuation token.
 */
enum zetl_err zetl_s3_parse_list(const char *xml, size_t len, struct zetl_s3_list_page *page,
                                 struct zetl_errbuf *eb);
void zetl_s3_list_page_release(struct zetl_s3_list_page *page);

/* What an S3 <Error> body says; empty strings when absent. */
struct zetl_s3_error {
    char code[64];
    char message[256];
    char region[64];    /* AuthorizationHeaderMalformed: the bucket's region */
    char endpoint[256]; /* PermanentRedirect: where the bucket is */
};

/* Parses an <Error> body; false when the body is not one. */
bool zetl_s3_parse_error(const char *xml, size_t len, struct zetl_s3_error *out);

/*
 * Class of a finished attempt: ZETL_OK for 2xx, ZETL_ERR_RETRY for
 * transient failures (connection refused or reset, timeouts, partial
 * bodies: curl_code; 5xx, 408, 429, or S3 codes RequestTimeout, SlowDown,
 * InternalError), ZETL_ERR_FATAL otherwise.  curl_code is a CURLcode;
 * s3_code may be NULL.
 */
enum zetl_err zetl_s3_classify(int curl_code, long status, const char *s3_code);

/*
 * Delay before retry number `attempt` (1-based): exponential from
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
 * CompleteMultipartUpload body for parts 1..n with their ETags (as the
 * server sent them, quotes included).  Appends to out.
 */
void zetl_s3_complete_xml(char *const *etags, size_t n, struct zetl_buf *out);

/*
 * Splits "s3://bucket[/prefix]" into bucket and prefix (owned; the prefix
 * without leading or trailing '/', "" when none).  ZETL_ERR_USAGE when the
 * url is not one.
 */
enum zetl_err zetl_s3_parse_url(const char *url, char **bucket, char **prefix,
                                struct zetl_errbuf *eb);

#endif
