/*
 * The S3 client's requests on libcurl (see s3_http.h): one easy handle per
 * attempt, the body streamed from a file or memory, the answer into a
 * capped buffer or a file; a scheduler that runs several requests on one
 * multi handle; the judgement of an attempt (ok, transient, final) and the
 * message that names it.
 */
#include "sinks/s3_http.h"

#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"
#include "sinks/s3_sign.h"
#include "sinks/s3_xml.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#define S3_CONNECT_TIMEOUT_MS 10000L
#define S3_HASH_CHUNK ((size_t)1 << 20)
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* ---- policy: which failures are transient, how long to wait ---------------- */

enum zetl_err zetl_s3_classify(int curl_code, long status, const char *s3_code)
{
    switch ((CURLcode)curl_code) {
    case CURLE_OK:
        break;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
    case CURLE_SEND_FAIL_REWIND:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UPLOAD_FAILED:
    case CURLE_AGAIN:
        return ZETL_ERR_RETRY;
    default:
        return ZETL_ERR_FATAL;
    }
    if (status >= 200 && status < 300)
        return ZETL_OK;
    if (status >= 500 || status == 429 || status == 408 || status == 0)
        return ZETL_ERR_RETRY;
    if (s3_code != NULL &&
        (strcmp(s3_code, "RequestTimeout") == 0 || strcmp(s3_code, "SlowDown") == 0 ||
         strcmp(s3_code, "InternalError") == 0 || strcmp(s3_code, "ServiceUnavailable") == 0))
        return ZETL_ERR_RETRY;
    return ZETL_ERR_FATAL;
}

long zetl_s3_backoff_ms(int attempt, uint32_t rnd)
{
    long d = ZETL_S3_BACKOFF_BASE_MS;

    for (int i = 1; i < attempt && d < ZETL_S3_BACKOFF_MAX_MS; i++)
        d *= 2;
    if (d > ZETL_S3_BACKOFF_MAX_MS)
        d = ZETL_S3_BACKOFF_MAX_MS;
    return d / 2 + (long)(rnd % (uint32_t)(d / 2 + 1));
}

/* ---- the process and the client's connection pool ------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

enum zetl_err zetl_s3_http_init(struct zetl_errbuf *eb)
{
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not initialize libcurl: %s",
                            curl_easy_strerror(curl_init_rc));
    return ZETL_OK;
}

void zetl_s3_http_release(struct zetl_s3 *s3)
{
    for (size_t i = 0; i < s3->npool; i++)
        curl_multi_cleanup(s3->pool[i]);
    s3->npool = 0;
}

static CURLM *pool_get(struct zetl_s3 *s3)
{
    CURLM *m = NULL;

    pthread_mutex_lock(&s3->mu);
    if (s3->npool > 0)
        m = s3->pool[--s3->npool];
    pthread_mutex_unlock(&s3->mu);
    if (m == NULL) {
        m = curl_multi_init();
        if (m == NULL) {
            fprintf(stderr, "FATAL:  could not create a curl multi handle\n");
            abort();
        }
        curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)(2 * ZETL_S3_MAX_INFLIGHT));
    }
    return m;
}

static void pool_put(struct zetl_s3 *s3, CURLM *m)
{
    pthread_mutex_lock(&s3->mu);
    if (s3->npool < ZETL_S3_POOL_MAX) {
        s3->pool[s3->npool++] = m;
        m = NULL;
    }
    pthread_mutex_unlock(&s3->mu);
    if (m != NULL)
        curl_multi_cleanup(m);
}

static uint32_t s3_rand(struct zetl_s3 *s3)
{
    uint64_t x;

    pthread_mutex_lock(&s3->mu);
    /* xorshift64*: jitter only, not security. */
    x = s3->rnd;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s3->rnd = x;
    pthread_mutex_unlock(&s3->mu);
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

/* ---- one request --------------------------------------------------------- */

struct zetl_s3_req *zetl_s3_req_new(const char *op, const char *method, const char *key,
                                    const char *query)
{
    struct zetl_s3_req *r = zetl_calloc(1, sizeof(*r));

    r->op = op;
    r->method = method;
    r->key = zetl_strdup(key);
    r->query = query ? zetl_strdup(query) : NULL;
    r->body_fd = -1;
    r->out_fd = -1;
    r->expect_size = -1;
    zetl_buf_init(&r->resp, ZETL_S3_ERROR_BODY_MAX);
    return r;
}

static void req_end_attempt(struct zetl_s3_req *r)
{
    if (r->easy != NULL)
        curl_easy_cleanup(r->easy);
    r->easy = NULL;
    curl_slist_free_all(r->hdrs);
    r->hdrs = NULL;
    if (r->hashing)
        zetl_sha256_release(&r->out_hash);
    r->hashing = false;
}

void zetl_s3_req_free(struct zetl_s3_req *r)
{
    if (r == NULL)
        return;
    req_end_attempt(r);
    zetl_buf_release(&r->resp);
    free(r->shown);
    free(r->query);
    free(r->key);
    free(r);
}

/* "s3 PUT s3://bucket/key" into eb-ready text. */
static void req_name(const struct zetl_s3 *s3, const struct zetl_s3_req *r, char *out, size_t n)
{
    snprintf(out, n, "s3 %s s3://%s/%s", r->op, s3->bucket, r->shown ? r->shown : r->key);
}

static size_t cb_read(char *buf, size_t size, size_t nitems, void *arg)
{
    struct zetl_s3_req *r = arg;
    size_t want = size * nitems;
    uint64_t left = r->body_len - r->body_pos;

    if (want > left)
        want = (size_t)left;
    if (want == 0)
        return 0;
    if (r->body_fd >= 0) {
        ssize_t n;

        do {
            n = pread(r->body_fd, buf, want, (off_t)(r->body_off + r->body_pos));
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
            r->body_read_failed = true;
            r->read_errno = n < 0 ? errno : EIO;
            return CURL_READFUNC_ABORT;
        }
        want = (size_t)n;
    } else {
        memcpy(buf, r->body_mem + r->body_off + r->body_pos, want);
    }
    r->body_pos += want;
    return want;
}

static int cb_seek(void *arg, curl_off_t offset, int origin)
{
    struct zetl_s3_req *r = arg;

    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > r->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->body_pos = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t cb_header(char *buf, size_t size, size_t nitems, void *arg)
{
    struct zetl_s3_req *r = arg;
    size_t n = size * nitems, vl;
    const char *v;

    if (n > 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue): forget what the last one said. */
        r->etag[0] = '\0';
        r->bucket_region[0] = '\0';
        r->content_length = -1;
        return n;
    }
    v = memchr(buf, ':', n);
    if (v == NULL)
        return n;
    vl = n - (size_t)(v + 1 - buf);
    v++;
    while (vl > 0 && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    if ((size_t)(v - buf) >= 5 && strncasecmp(buf, "etag:", 5) == 0 && vl < sizeof(r->etag)) {
        memcpy(r->etag, v, vl);
        r->etag[vl] = '\0';
    } else if ((size_t)(v - buf) >= 19 && strncasecmp(buf, "x-amz-bucket-region:", 20) == 0 &&
               vl < sizeof(r->bucket_region)) {
        memcpy(r->bucket_region, v, vl);
        r->bucket_region[vl] = '\0';
    } else if ((size_t)(v - buf) >= 15 && strncasecmp(buf, "content-length:", 15) == 0 && vl > 0 &&
               vl < 20) {
        char num[24];
        uint64_t cl;
        memcpy(num, v, vl);
        num[vl] = '\0';
        r->content_length = zetl_s3_parse_u64(num, &cl) && cl <= INT64_MAX ? (int64_t)cl : -1;
    }
    return n;
}

static size_t cb_write(char *buf, size_t size, size_t nitems, void *arg)
{
    struct zetl_s3_req *r = arg;
    size_t n = size * nitems;
    long status = 0;

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) {
        /* An error body: keep what fits, it is only for the message. */
        zetl_buf_append(&r->resp, buf,
                        n < r->resp.max - r->resp.len ? n : r->resp.max - r->resp.len);
        return n;
    }
    if (r->out_fd < 0) {
        if (!zetl_buf_append(&r->resp, buf, n)) {
            r->resp_overflow = true;
            return 0;
        }
        return n;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(r->out_fd, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            r->write_failed = true;
            r->write_errno = errno;
            return 0;
        }
        off += (size_t)w;
    }
    if (r->hashing)
        zetl_sha256_update(&r->out_hash, buf, n);
    r->out_len += n;
    return n;
}

static enum zetl_err req_hash_body(struct zetl_s3 *s3, struct zetl_s3_req *r,
                                   struct zetl_errbuf *eb)
{
    struct zetl_sha256 h;
    char *chunk;
    char name[512];

    if (!r->has_body || r->body_len == 0) {
        memcpy(r->sha256, S3_EMPTY_SHA256, sizeof(r->sha256));
        return ZETL_OK;
    }
    if (r->body_fd < 0) {
        zetl_sha256_hex(r->body_mem + r->body_off, (size_t)r->body_len, r->sha256);
        return ZETL_OK;
    }
    zetl_sha256_init(&h);
    chunk = zetl_malloc(S3_HASH_CHUNK);
    for (uint64_t pos = 0; pos < r->body_len;) {
        size_t want =
            r->body_len - pos < S3_HASH_CHUNK ? (size_t)(r->body_len - pos) : S3_HASH_CHUNK;
        ssize_t n = pread(r->body_fd, chunk, want, (off_t)(r->body_off + pos));

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            free(chunk);
            zetl_sha256_release(&h);
            req_name(s3, r, name, sizeof(name));
            return zetl_err_set(eb, ZETL_ERR_IO, "%s: could not read the local file: %s", name,
                                n < 0 ? strerror(e) : "it is shorter than expected");
        }
        zetl_sha256_update(&h, chunk, (size_t)n);
        pos += (uint64_t)n;
    }
    free(chunk);
    zetl_sha256_final_hex(&h, r->sha256);
    return ZETL_OK;
}

/* Sets up a fresh easy handle for the next attempt of r. */
static enum zetl_err req_start(struct zetl_s3 *s3, struct zetl_s3_req *r, struct zetl_errbuf *eb)
{
    struct zetl_buf url;
    struct zetl_strlist hl = {NULL, 0};
    CURL *e;
    enum zetl_err err;

    if (r->sha256[0] == '\0' && (err = req_hash_body(s3, r, eb)) != ZETL_OK)
        return err;
    req_end_attempt(r);
    zetl_buf_reset(&r->resp);
    r->resp.max = r->out_fd < 0 && r->out_max > 0 ? r->out_max : ZETL_S3_ERROR_BODY_MAX;
    r->resp_overflow = r->write_failed = r->body_read_failed = false;
    r->body_pos = 0;
    r->out_len = 0;
    r->etag[0] = r->bucket_region[0] = r->curl_err[0] = '\0';
    r->content_length = -1;
    r->status = 0;
    r->cc = CURLE_OK;
    if (r->out_fd >= 0) {
        if (ftruncate(r->out_fd, 0) != 0 || lseek(r->out_fd, 0, SEEK_SET) != 0) {
            char name[512];
            req_name(s3, r, name, sizeof(name));
            return zetl_err_set(eb, ZETL_ERR_IO, "%s: could not truncate file \"%s\": %s", name,
                                r->out_path ? r->out_path : "?", strerror(errno));
        }
        if (r->expect_sha256 != NULL) {
            zetl_sha256_init(&r->out_hash);
            r->hashing = true;
        }
    }

    if ((e = curl_easy_init()) == NULL) {
        fprintf(stderr, "FATAL:  could not create a curl handle\n");
        abort();
    }
    r->easy = e;
    zetl_buf_init(&url, 0);
    zetl_s3_url(&s3->opts, s3->bucket, r->key, r->query, &url);
    curl_easy_setopt(e, CURLOPT_URL, url.data);
    zetl_buf_release(&url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L); /* the signed path is the sent path */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "zetl/" ZETL_VERSION);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_err);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     s3->opts.timeout_ms < S3_CONNECT_TIMEOUT_MS ? s3->opts.timeout_ms
                                                                 : S3_CONNECT_TIMEOUT_MS);
    /* A stalled transfer (no byte for timeout_ms) fails the attempt; large ones may take long. */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (s3->opts.timeout_ms + 999) / 1000);
    curl_easy_setopt(e, CURLOPT_AWS_SIGV4, s3->sigv4);
    curl_easy_setopt(e, CURLOPT_USERNAME, s3->cr.access_key);
    curl_easy_setopt(e, CURLOPT_PASSWORD, s3->cr.secret_key);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, cb_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, cb_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);

    if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
    }
    if (r->has_body) {
        curl_easy_setopt(e, CURLOPT_READFUNCTION, cb_read);
        curl_easy_setopt(e, CURLOPT_READDATA, r);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, cb_seek);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
    }
    zetl_s3_headers(r->sha256, s3->cr.token, r->content_type, &hl);
    for (size_t i = 0; i < hl.n; i++) {
        struct curl_slist *h = curl_slist_append(r->hdrs, hl.items[i]);
        if (h == NULL) {
            fprintf(stderr, "FATAL:  out of memory\n");
            abort();
        }
        r->hdrs = h;
    }
    /* The token is a secret too: wipe our copies of the header lines. */
    for (size_t i = 0; i < hl.n; i++)
        memset(hl.items[i], 0, strlen(hl.items[i]));
    zetl_strlist_release(&hl);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    return ZETL_OK;
}

/*
 * Judges a finished attempt: ZETL_OK, ZETL_ERR_RETRY (may be tried again),
 * or a final error; eb gets the message either way.
 */
static enum zetl_err req_judge(struct zetl_s3 *s3, struct zetl_s3_req *r, struct zetl_errbuf *eb)
{
    struct zetl_s3_error se;
    char name[512];
    enum zetl_err cls;
    bool have_se = false;

    req_name(s3, r, name, sizeof(name));
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->write_failed)
        return zetl_err_set(eb, ZETL_ERR_IO, "%s: could not write file \"%s\": %s", name,
                            r->out_path ? r->out_path : "?", strerror(r->write_errno));
    if (r->body_read_failed)
        return zetl_err_set(eb, ZETL_ERR_IO, "%s: could not read the local file: %s", name,
                            strerror(r->read_errno));
    if (r->resp_overflow)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "%s: answer is larger than %zu bytes", name,
                            r->out_max);
    if (r->status >= 300 || (r->status >= 200 && r->out_fd < 0 && r->resp.len > 0 &&
                             strcmp(r->op, "CompleteMultipartUpload") == 0))
        have_se = zetl_s3_parse_error(r->resp.data ? r->resp.data : "", r->resp.len, &se);
    if (r->cc == CURLE_OK && r->status == 404 && r->ok_404)
        return ZETL_OK;
    if (r->cc == CURLE_OK && r->status >= 200 && r->status < 300 && have_se) {
        /* CompleteMultipartUpload can fail after its 200 status line. */
        cls = zetl_s3_classify(CURLE_OK, 500, se.code);
        return zetl_err_set(eb, cls, "%s: %s: %s", name, se.code, se.message);
    }
    cls = zetl_s3_classify(r->cc, r->status, have_se ? se.code : NULL);
    if (cls == ZETL_OK) {
        if (r->out_fd >= 0 && r->expect_size >= 0 && r->out_len != (uint64_t)r->expect_size)
            return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                                "%s: object has %" PRIu64 " bytes, expected %" PRId64, name,
                                r->out_len, r->expect_size);
        if (r->hashing) {
            char hex[65];
            zetl_sha256_final_hex(&r->out_hash, hex);
            r->hashing = false;
            if (strcmp(hex, r->expect_sha256) != 0)
                return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "%s: object has sha256 %s, expected %s",
                                    name, hex, r->expect_sha256);
        }
        return ZETL_OK;
    }
    if (r->cc != CURLE_OK) {
        const char *ep = s3->endpoint ? s3->endpoint : "the s3 endpoint";
        return zetl_err_set(eb, cls, "%s: %s %s: %s", name,
                            r->cc == CURLE_COULDNT_CONNECT || r->cc == CURLE_COULDNT_RESOLVE_HOST
                                ? "could not connect to"
                                : "transfer with",
                            ep, r->curl_err[0] ? r->curl_err : curl_easy_strerror(r->cc));
    }
    if (have_se) {
        const char *region = se.region[0] ? se.region : r->bucket_region;
        if (region[0] != '\0' && strcmp(region, s3->region) != 0)
            return zetl_err_set(eb, cls,
                                "%s: %ld %s: %s (the bucket is in region %s: set "
                                "archive.s3.region: %s)",
                                name, r->status, se.code, se.message, region, region);
        return zetl_err_set(eb, cls, "%s: %ld %s: %s", name, r->status, se.code, se.message);
    }
    /* No error body (HEAD, or not S3 speaking): name the status. */
    if (r->bucket_region[0] != '\0' && strcmp(r->bucket_region, s3->region) != 0)
        return zetl_err_set(eb, cls,
                            "%s: %ld: the bucket is in region %s (set archive.s3.region: %s)", name,
                            r->status, r->bucket_region, r->bucket_region);
    return zetl_err_set(eb, cls, "%s: %ld %s", name, r->status,
                        r->status == 403   ? "AccessDenied: access denied"
                        : r->status == 404 ? "NotFound: no such bucket or key"
                        : r->status == 301 ? "PermanentRedirect: wrong region or endpoint"
                                           : "unexpected answer");
}

/* ---- the scheduler ------------------------------------------------------- */

/*
 * Records the outcome of r in the call's: the call returns one error, so
 * the failures it does not return are logged here, each as it happened.
 */
static void run_record(struct zetl_s3_req *r, enum zetl_err e, enum zetl_err *first,
                       struct zetl_errbuf *eb)
{
    r->state = REQ_DONE;
    r->err = e;
    if (e == ZETL_OK)
        return;
    /* A final error outranks a transient one: the caller must not retry it. */
    if (*first == ZETL_OK || (*first == ZETL_ERR_RETRY && e != ZETL_ERR_RETRY)) {
        if (*first != ZETL_OK)
            zetl_warn("%s", eb->msg);
        *first = e;
        *eb = r->eb;
    } else {
        zetl_warn("%s", r->eb.msg);
    }
}

/* Judges a finished transfer: done, or waiting for its next attempt after a backoff. */
static void run_finished(struct zetl_s3 *s3, struct zetl_s3_req *r, enum zetl_err *first,
                         struct zetl_errbuf *eb)
{
    enum zetl_err e = req_judge(s3, r, &r->eb);

    req_end_attempt(r);
    if (e == ZETL_ERR_RETRY && r->attempts < r->max_attempts) {
        long d = zetl_s3_backoff_ms(r->attempts, s3_rand(s3));
        zetl_warn("%s; retrying in %ld ms (attempt %d of %d)", r->eb.msg, d, r->attempts + 1,
                  r->max_attempts);
        r->state = REQ_WAITING;
        r->not_before = zetl_now_ms() + d;
        return;
    }
    if (e == ZETL_ERR_RETRY && r->attempts > 1) {
        size_t l = strlen(r->eb.msg);
        snprintf(r->eb.msg + l, sizeof(r->eb.msg) - l, " (gave up after %d attempts)", r->attempts);
    }
    run_record(r, e, first, eb);
}

/* How long the scheduler may sleep: until the next waiting request may start, at most 1 s. */
static long run_wait_ms(struct zetl_s3_req **reqs, size_t n, size_t running)
{
    int64_t now = zetl_now_ms();
    long wait = 1000;

    for (size_t i = 0; running < ZETL_S3_MAX_INFLIGHT && i < n; i++) {
        if (reqs[i]->state == REQ_WAITING) {
            long d = reqs[i]->not_before > now ? (long)(reqs[i]->not_before - now) : 0;
            if (d < wait)
                wait = d;
        }
    }
    return wait;
}

enum zetl_err zetl_s3_run(struct zetl_s3 *s3, struct zetl_s3_req **reqs, size_t n,
                          struct zetl_errbuf *eb)
{
    CURLM *m = pool_get(s3);
    size_t running = 0;
    enum zetl_err first = ZETL_OK;

    for (size_t i = 0; i < n; i++) {
        reqs[i]->state = REQ_WAITING;
        reqs[i]->attempts = 0;
        reqs[i]->not_before = 0;
        reqs[i]->err = ZETL_OK;
        if (reqs[i]->max_attempts <= 0)
            reqs[i]->max_attempts = 1;
    }
    /* Until every request is done, or a final error stops the call. */
    while (first == ZETL_OK || first == ZETL_ERR_RETRY) {
        int64_t now = zetl_now_ms();
        bool pending = false;
        long wait;
        int still, q;
        CURLMsg *msg;

        for (size_t i = 0; i < n && running < ZETL_S3_MAX_INFLIGHT; i++) {
            struct zetl_s3_req *r = reqs[i];
            enum zetl_err e;

            if (r->state != REQ_WAITING || r->not_before > now)
                continue;
            r->attempts++;
            if ((e = req_start(s3, r, &r->eb)) != ZETL_OK) {
                run_record(r, e, &first, eb);
                break;
            }
            curl_multi_add_handle(m, r->easy);
            r->state = REQ_RUNNING;
            running++;
        }
        if (first != ZETL_OK && first != ZETL_ERR_RETRY)
            break;
        curl_multi_perform(m, &still);
        while ((msg = curl_multi_info_read(m, &q)) != NULL) {
            struct zetl_s3_req *r = NULL;

            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            r->cc = msg->data.result;
            curl_multi_remove_handle(m, r->easy);
            running--;
            run_finished(s3, r, &first, eb);
        }
        for (size_t i = 0; i < n; i++)
            pending = pending || reqs[i]->state != REQ_DONE;
        if (!pending)
            break;
        if ((wait = run_wait_ms(reqs, n, running)) > 0)
            curl_multi_poll(m, NULL, 0, (int)wait, NULL);
    }
    /* After a final error: abort what is still in flight. */
    for (size_t i = 0; i < n; i++) {
        if (reqs[i]->state == REQ_RUNNING)
            curl_multi_remove_handle(m, reqs[i]->easy);
        reqs[i]->state = REQ_DONE;
        req_end_attempt(reqs[i]);
    }
    pool_put(s3, m);
    return first;
}

enum zetl_err zetl_s3_run1(struct zetl_s3 *s3, struct zetl_s3_req *r, struct zetl_errbuf *eb)
{
    return zetl_s3_run(s3, &r, 1, eb);
}
