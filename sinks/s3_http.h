/*
 * Private to the S3 client (s3.c, s3_http.c): the client's state and one
 * request on curl.  libcurl is included by the sinks module only, and within
 * it by the S3 client's files only.
 */
#ifndef ZETL_S3_HTTP_H
#define ZETL_S3_HTTP_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/sha256.h"
#include "sinks/s3.h"

#define ZETL_S3_POOL_MAX 16

struct zetl_s3 {
    char *bucket;             /* owned */
    struct zetl_s3_opts opts; /* region and endpoint point at the owned copies below */
    char *region;             /* owned */
    char *endpoint;           /* owned or NULL */
    struct zetl_s3_creds cr;
    char *sigv4; /* owned: "aws:amz:<region>:s3" */

    pthread_mutex_t mu;            /* guards pool and rnd */
    CURLM *pool[ZETL_S3_POOL_MAX]; /* owned: idle multi handles; connections stay alive in them */
    size_t npool;
    uint64_t rnd;
};

enum zetl_s3_req_state {
    REQ_WAITING = 0,
    REQ_RUNNING,
    REQ_DONE,
};

struct zetl_s3_req {
    /* what to send */
    const char *op;              /* for messages: "PUT", "LIST", "UploadPart", ... */
    char *shown;                 /* owned or NULL: what messages name instead of the key */
    const char *method;          /* HTTP method */
    char *key;                   /* owned: object key, "" for the bucket */
    char *query;                 /* owned or NULL: canonical query string */
    const char *content_type;    /* static or NULL */
    int body_fd;                 /* >= 0: body read from this file (borrowed) */
    const char *body_mem;        /* borrowed: body when body_fd < 0 */
    uint64_t body_off, body_len; /* body: bytes [off, off+len) of the file or memory */
    bool has_body;
    char sha256[65];  /* of the body; computed on first start when empty */
    int max_attempts; /* 0: one attempt; more only for the parts of a multipart upload */
    bool ok_404;      /* a 404 is an answer (probe), not an error */

    /* where the answer goes */
    int out_fd;                /* >= 0: a 2xx body is written here (borrowed) */
    const char *out_path;      /* for messages */
    size_t out_max;            /* cap of a 2xx body kept in resp (out_fd < 0) */
    int64_t expect_size;       /* of a 2xx body written to out_fd, or -1 */
    const char *expect_sha256; /* borrowed or NULL */

    /* per attempt */
    CURL *easy;
    struct curl_slist *hdrs;
    uint64_t body_pos;
    struct zetl_buf resp; /* 2xx body (out_fd < 0) or the error body, capped */
    bool resp_overflow;   /* a 2xx body exceeded out_max */
    bool write_failed;    /* writing out_fd failed: local I/O */
    int write_errno;
    bool body_read_failed;
    int read_errno;
    struct zetl_sha256 out_hash;
    bool hashing;
    uint64_t out_len;
    char etag[256];
    char bucket_region[64];
    int64_t content_length; /* from the headers, -1 when absent */
    long status;
    CURLcode cc;
    char curl_err[CURL_ERROR_SIZE];

    /* scheduling */
    enum zetl_s3_req_state state;
    int attempts;
    int64_t not_before; /* monotonic ms */
    enum zetl_err err;
    struct zetl_errbuf eb;
};

/* curl_global_init, once per process.  ZETL_ERR_FATAL when it failed. */
enum zetl_err zetl_s3_http_init(struct zetl_errbuf *eb);
/* Frees the idle multi handles of s3's pool. */
void zetl_s3_http_release(struct zetl_s3 *s3);

/*
 * A request for `key` ("" for the bucket) with an optional canonical
 * `query` (both copied); `op` (static) names it in messages.  Owned by the
 * caller: zetl_s3_req_free.
 */
struct zetl_s3_req *zetl_s3_req_new(const char *op, const char *method, const char *key,
                                    const char *query);
void zetl_s3_req_free(struct zetl_s3_req *r);

/*
 * Runs the requests, at most ZETL_S3_MAX_INFLIGHT at once, each for
 * max_attempts attempts (default one).  A transient failure does not stop
 * the others; a final error aborts them.  Returns the first final error,
 * else the first transient one (ZETL_ERR_RETRY), else ZETL_OK; each
 * request's err/eb tell its own outcome.
 */
enum zetl_err zetl_s3_run(struct zetl_s3 *s3, struct zetl_s3_req **reqs, size_t n,
                          struct zetl_errbuf *eb);
enum zetl_err zetl_s3_run1(struct zetl_s3 *s3, struct zetl_s3_req *r, struct zetl_errbuf *eb);

#endif
