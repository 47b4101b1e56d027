/*
 * The S3 client (see s3.h): making and freeing a client, and the S3
 * operations as requests for the scheduler in s3_http.c: HEAD, GET into
 * memory or files, PUT from memory or files, multipart upload, DELETE,
 * ListObjectsV2 with pagination.
 */
#include "sinks/s3.h"

#include "common/log.h"
#include "common/mem.h"
#include "sinks/s3_http.h"
#include "sinks/s3_sign.h"
#include "sinks/s3_xml.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S3_DEFAULT_PART ((uint64_t)8 << 20)

/* ---- the client ---------------------------------------------------------- */

static long env_long(const char *name, long dflt, long min, long max)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (v == NULL || v[0] == '\0')
        return dflt;
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < min || n > max) {
        zetl_warn("ignoring %s=\"%s\": expected an integer from %ld to %ld", name, v, min, max);
        return dflt;
    }
    return n;
}

enum zetl_err zetl_s3_new_with(const char *bucket, const struct zetl_s3_opts *opts,
                               struct zetl_s3_creds *cr, struct zetl_s3 **out,
                               struct zetl_errbuf *eb)
{
    struct zetl_s3 *s3;
    struct zetl_buf sig;
    struct timespec now;

    *out = NULL;
    if (zetl_s3_http_init(eb) != ZETL_OK) {
        zetl_s3_creds_release(cr);
        return ZETL_ERR_FATAL;
    }
    s3 = zetl_calloc(1, sizeof(*s3));
    s3->bucket = zetl_strdup(bucket);
    s3->opts = *opts;
    s3->region = zetl_strdup(opts->region ? opts->region : "us-east-1");
    s3->opts.region = s3->region;
    s3->endpoint = opts->endpoint ? zetl_strdup(opts->endpoint) : NULL;
    s3->opts.endpoint = s3->endpoint;
    if (s3->opts.part_size == 0)
        s3->opts.part_size = S3_DEFAULT_PART;
    if (s3->opts.part_size < ZETL_S3_MIN_PART)
        s3->opts.part_size = ZETL_S3_MIN_PART;
    if (s3->opts.part_attempts <= 0)
        s3->opts.part_attempts = ZETL_S3_PART_ATTEMPTS;
    if (s3->opts.timeout_ms <= 0)
        s3->opts.timeout_ms = env_long("ZETL_S3_TIMEOUT_MS", ZETL_S3_TIMEOUT_MS, 100, 3600000);
    if (s3->opts.list_page <= 0)
        s3->opts.list_page = (int)env_long("ZETL_S3_LIST_PAGE", 1000, 1, 1000);
    s3->cr = *cr;
    memset(cr, 0, sizeof(*cr));
    zetl_buf_init(&sig, 0);
    zetl_s3_sigv4_param(s3->region, &sig);
    s3->sigv4 = zetl_strndup(sig.data, sig.len);
    zetl_buf_release(&sig);
    pthread_mutex_init(&s3->mu, NULL);
    clock_gettime(CLOCK_REALTIME, &now);
    s3->rnd = ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ ((uint64_t)getpid() << 40) ^
              (uint64_t)(uintptr_t)s3;
    *out = s3;
    return ZETL_OK;
}

enum zetl_err zetl_s3_new(const char *bucket, const struct zetl_s3_opts *opts, struct zetl_s3 **out,
                          struct zetl_errbuf *eb)
{
    struct zetl_s3_creds cr;
    enum zetl_err err;

    *out = NULL;
    if ((err = zetl_s3_creds_load(&cr, eb)) != ZETL_OK)
        return err;
    return zetl_s3_new_with(bucket, opts, &cr, out, eb);
}

void zetl_s3_free(struct zetl_s3 *s3)
{
    if (s3 == NULL)
        return;
    zetl_s3_http_release(s3);
    pthread_mutex_destroy(&s3->mu);
    zetl_s3_creds_release(&s3->cr);
    free(s3->sigv4);
    free(s3->endpoint);
    free(s3->region);
    free(s3->bucket);
    free(s3);
}

const char *zetl_s3_bucket(const struct zetl_s3 *s3)
{
    return s3->bucket;
}

/* ---- pure helpers -------------------------------------------------------- */

uint64_t zetl_s3_part_size(uint64_t size, uint64_t want)
{
    const uint64_t mib = (uint64_t)1 << 20;
    uint64_t p = want < ZETL_S3_MIN_PART ? ZETL_S3_MIN_PART : want;

    if ((size + p - 1) / p > ZETL_S3_MAX_PARTS) {
        p = (size + ZETL_S3_MAX_PARTS - 1) / ZETL_S3_MAX_PARTS;
        p = (p + mib - 1) / mib * mib;
    }
    return p;
}

enum zetl_err zetl_s3_parse_url(const char *url, char **bucket, char **prefix,
                                struct zetl_errbuf *eb)
{
    const char *b, *p;
    size_t bl, pl;

    *bucket = *prefix = NULL;
    if (strncmp(url, "s3://", 5) != 0)
        return zetl_err_set(eb, ZETL_ERR_USAGE, "not an s3:// url");
    b = url + 5;
    bl = strcspn(b, "/");
    if (bl == 0)
        return zetl_err_set(eb, ZETL_ERR_USAGE, "s3 url has no bucket");
    p = b + bl;
    while (*p == '/')
        p++;
    pl = strlen(p);
    while (pl > 0 && p[pl - 1] == '/')
        pl--;
    *bucket = zetl_strndup(b, bl);
    *prefix = zetl_strndup(p, pl);
    return ZETL_OK;
}

/* ---- operations ---------------------------------------------------------- */

enum zetl_err zetl_s3_check(struct zetl_s3 *s3, const char *prefix, struct zetl_errbuf *eb)
{
    const char *kv[] = {"list-type", "2", "max-keys", "1", "prefix", prefix};
    struct zetl_buf q;
    struct zetl_s3_req *r;
    enum zetl_err err;

    zetl_buf_init(&q, 0);
    zetl_s3_query(kv, 3, &q);
    r = zetl_s3_req_new("LIST", "GET", "", q.data);
    r->shown = zetl_strdup(prefix);
    r->out_max = ZETL_S3_LIST_MAX;
    err = zetl_s3_run1(s3, r, eb);
    if (err == ZETL_OK) {
        struct zetl_s3_list_page page;
        if ((err = zetl_s3_parse_list(r->resp.data ? r->resp.data : "", r->resp.len, &page, eb)) ==
            ZETL_OK)
            zetl_s3_list_page_release(&page);
        else
            zetl_err_prefix(eb, "s3 LIST s3://%s/%s", s3->bucket, prefix);
    }
    zetl_s3_req_free(r);
    zetl_buf_release(&q);
    return err;
}

enum zetl_err zetl_s3_head(struct zetl_s3 *s3, const char *key, bool *found, uint64_t *size,
                           struct zetl_errbuf *eb)
{
    struct zetl_s3_req *r = zetl_s3_req_new("HEAD", "HEAD", key, NULL);
    enum zetl_err err;

    *found = false;
    r->ok_404 = true;
    err = zetl_s3_run1(s3, r, eb);
    if (err == ZETL_OK && r->status != 404) {
        *found = true;
        if (size != NULL)
            *size = r->content_length >= 0 ? (uint64_t)r->content_length : 0;
    }
    zetl_s3_req_free(r);
    return err;
}

enum zetl_err zetl_s3_get_mem(struct zetl_s3 *s3, const char *key, size_t max, struct zetl_buf *out,
                              bool *found, struct zetl_errbuf *eb)
{
    struct zetl_s3_req *r = zetl_s3_req_new("GET", "GET", key, NULL);
    enum zetl_err err;

    *found = false;
    zetl_buf_reset(out);
    r->ok_404 = true;
    r->out_max = max;
    err = zetl_s3_run1(s3, r, eb);
    if (err == ZETL_OK && r->status != 404) {
        *found = true;
        if (r->resp.len > 0 && !zetl_buf_append(out, r->resp.data, r->resp.len))
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "s3 GET s3://%s/%s: object is too large",
                               s3->bucket, key);
    }
    zetl_s3_req_free(r);
    return err;
}

enum zetl_err zetl_s3_delete(struct zetl_s3 *s3, const char *key, struct zetl_errbuf *eb)
{
    struct zetl_s3_req *r = zetl_s3_req_new("DELETE", "DELETE", key, NULL);
    enum zetl_err err = zetl_s3_run1(s3, r, eb);

    zetl_s3_req_free(r);
    return err;
}

enum zetl_err zetl_s3_list(struct zetl_s3 *s3, const char *prefix, const char *start_after,
                           const char *delimiter,
                           bool (*fn)(void *arg, const char *key, uint64_t size, bool is_prefix),
                           void *arg, struct zetl_errbuf *eb)
{
    struct zetl_buf q, page_size;
    char *token = NULL;
    enum zetl_err err = ZETL_OK;
    bool stop = false;

    zetl_buf_init(&q, 0);
    zetl_buf_init(&page_size, 0);
    zetl_buf_printf(&page_size, "%d", s3->opts.list_page);
    while (!stop) {
        const char *kv[12];
        size_t np = 0;
        struct zetl_s3_req *r;
        struct zetl_s3_list_page page;

        kv[2 * np] = "list-type", kv[2 * np + 1] = "2", np++;
        kv[2 * np] = "max-keys", kv[2 * np + 1] = page_size.data, np++;
        kv[2 * np] = "prefix", kv[2 * np + 1] = prefix, np++;
        if (delimiter != NULL)
            kv[2 * np] = "delimiter", kv[2 * np + 1] = delimiter, np++;
        if (token != NULL)
            kv[2 * np] = "continuation-token", kv[2 * np + 1] = token, np++;
        else if (start_after != NULL)
            kv[2 * np] = "start-after", kv[2 * np + 1] = start_after, np++;
        zetl_buf_reset(&q);
        zetl_s3_query(kv, np, &q);
        r = zetl_s3_req_new("LIST", "GET", "", q.data);
        r->shown = zetl_strdup(prefix);
        r->out_max = ZETL_S3_LIST_MAX;
        err = zetl_s3_run1(s3, r, eb);
        if (err == ZETL_OK && (err = zetl_s3_parse_list(r->resp.data ? r->resp.data : "",
                                                        r->resp.len, &page, eb)) != ZETL_OK)
            zetl_err_prefix(eb, "s3 LIST s3://%s/%s", s3->bucket, prefix);
        zetl_s3_req_free(r);
        if (err != ZETL_OK)
            break;
        for (size_t i = 0; !stop && i < page.nkeys; i++)
            stop = !fn(arg, page.keys[i], page.sizes[i], false);
        for (size_t i = 0; !stop && i < page.prefixes.n; i++)
            stop = !fn(arg, page.prefixes.items[i], 0, true);
        if (!page.truncated) {
            stop = true;
        } else if (token != NULL && strcmp(token, page.next_token) == 0) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "s3 LIST s3://%s/%s: the server repeats its continuation token",
                               s3->bucket, prefix);
            stop = true;
        } else {
            free(token);
            token = page.next_token;
            page.next_token = NULL;
        }
        zetl_s3_list_page_release(&page);
    }
    free(token);
    zetl_buf_release(&page_size);
    zetl_buf_release(&q);
    return err;
}

/* CreateMultipartUpload: *upload_id (owned) on success. */
static enum zetl_err multipart_create(struct zetl_s3 *s3, const char *key, char **upload_id,
                                      struct zetl_errbuf *eb)
{
    struct zetl_s3_req *r = zetl_s3_req_new("CreateMultipartUpload", "POST", key, "uploads=");
    struct zetl_buf t;
    enum zetl_err err;

    *upload_id = NULL;
    zetl_buf_init(&t, 0);
    r->has_body = true; /* empty */
    r->content_type = "application/octet-stream";
    r->out_max = ZETL_S3_ERROR_BODY_MAX;
    if ((err = zetl_s3_run1(s3, r, eb)) == ZETL_OK) {
        if (zetl_s3_xml_text(r->resp.data ? r->resp.data : "", r->resp.len, "UploadId", &t) &&
            t.len > 0)
            *upload_id = zetl_strndup(t.data, t.len);
        else
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "s3 CreateMultipartUpload s3://%s/%s: answer has no <UploadId>",
                               s3->bucket, key);
    }
    zetl_buf_release(&t);
    zetl_s3_req_free(r);
    return err;
}

/*
 * The parts (several at once, each retried here: see s3.h), then
 * CompleteMultipartUpload with their ETags.
 */
static enum zetl_err multipart_send(struct zetl_s3 *s3, const char *key, const char *upload_id,
                                    int fd, uint64_t size, uint64_t part, size_t nparts,
                                    struct zetl_errbuf *eb)
{
    struct zetl_s3_req **parts = zetl_calloc(nparts, sizeof(*parts)), *r = NULL;
    char **etags = zetl_calloc(nparts, sizeof(char *));
    struct zetl_buf q, body;
    enum zetl_err err;

    zetl_buf_init(&q, 0);
    zetl_buf_init(&body, 0);
    for (size_t i = 0; i < nparts; i++) {
        char pn[24];
        const char *kv[] = {"partNumber", pn, "uploadId", upload_id};

        snprintf(pn, sizeof(pn), "%zu", i + 1);
        zetl_buf_reset(&q);
        zetl_s3_query(kv, 2, &q);
        parts[i] = zetl_s3_req_new("UploadPart", "PUT", key, q.data);
        parts[i]->has_body = true;
        parts[i]->max_attempts = s3->opts.part_attempts;
        parts[i]->body_fd = fd;
        parts[i]->body_off = (uint64_t)i * part;
        parts[i]->body_len = i + 1 < nparts ? part : size - (uint64_t)i * part;
    }
    if ((err = zetl_s3_run(s3, parts, nparts, eb)) != ZETL_OK)
        goto fail;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i]->etag[0] == '\0') {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "s3 UploadPart s3://%s/%s: part %zu answer has no ETag", s3->bucket,
                               key, i + 1);
            goto fail;
        }
        etags[i] = parts[i]->etag;
    }
    zetl_s3_complete_xml(etags, nparts, &body);
    {
        const char *kv[] = {"uploadId", upload_id};
        zetl_buf_reset(&q);
        zetl_s3_query(kv, 1, &q);
    }
    r = zetl_s3_req_new("CompleteMultipartUpload", "POST", key, q.data);
    r->has_body = true;
    r->body_mem = body.data;
    r->body_len = body.len;
    r->content_type = "application/xml";
    r->out_max = ZETL_S3_ERROR_BODY_MAX;
    err = zetl_s3_run1(s3, r, eb);

fail:
    zetl_s3_req_free(r);
    for (size_t i = 0; i < nparts; i++)
        zetl_s3_req_free(parts[i]);
    free(parts);
    free(etags);
    zetl_buf_release(&body);
    zetl_buf_release(&q);
    return err;
}

/* AbortMultipartUpload, best effort: what it leaves, a bucket lifecycle rule removes. */
static void multipart_abort(struct zetl_s3 *s3, const char *key, const char *upload_id)
{
    const char *kv[] = {"uploadId", upload_id};
    struct zetl_errbuf aeb;
    struct zetl_s3_req *a;
    struct zetl_buf q;

    zetl_buf_init(&q, 0);
    zetl_s3_query(kv, 1, &q);
    a = zetl_s3_req_new("AbortMultipartUpload", "DELETE", key, q.data);
    if (zetl_s3_run1(s3, a, &aeb) != ZETL_OK)
        zetl_warn("%s (the parts stay until a bucket lifecycle rule removes them)", aeb.msg);
    zetl_s3_req_free(a);
    zetl_buf_release(&q);
}

/* A multipart upload of one file: create, parts, complete; aborted on failure. */
static enum zetl_err put_multipart(struct zetl_s3 *s3, const struct zetl_s3_xfer *x, int fd,
                                   uint64_t size, struct zetl_errbuf *eb)
{
    uint64_t part = zetl_s3_part_size(size, s3->opts.part_size);
    size_t nparts = (size_t)((size + part - 1) / part);
    char *upload_id;
    enum zetl_err err;

    if ((err = multipart_create(s3, x->key, &upload_id, eb)) != ZETL_OK)
        return err;
    zetl_debug("s3 multipart upload of s3://%s/%s: %zu parts of %" PRIu64 " bytes", s3->bucket,
               x->key, nparts, part);
    if ((err = multipart_send(s3, x->key, upload_id, fd, size, part, nparts, eb)) != ZETL_OK)
        multipart_abort(s3, x->key, upload_id);
    free(upload_id);
    return err;
}

enum zetl_err zetl_s3_put(struct zetl_s3 *s3, const struct zetl_s3_xfer *x, size_t n,
                          struct zetl_errbuf *eb)
{
    struct zetl_s3_req **reqs = zetl_calloc(n ? n : 1, sizeof(*reqs));
    int *fds = zetl_calloc(n ? n : 1, sizeof(int));
    uint64_t *sizes = zetl_calloc(n ? n : 1, sizeof(uint64_t));
    size_t nr = 0;
    enum zetl_err err = ZETL_OK;

    for (size_t i = 0; i < n; i++)
        fds[i] = -1;
    for (size_t i = 0; i < n; i++) {
        struct stat st;

        if (x[i].path == NULL) {
            sizes[i] = x[i].len;
            continue;
        }
        if ((fds[i] = open(x[i].path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fds[i], &st) != 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not open file \"%s\": %s", x[i].path,
                               strerror(errno));
            goto fail;
        }
        sizes[i] = (uint64_t)st.st_size;
        if (x[i].size >= 0 && (uint64_t)x[i].size != sizes[i]) {
            err = zetl_err_set(eb, ZETL_ERR_IO,
                               "file \"%s\" has %" PRIu64 " bytes, expected %" PRId64, x[i].path,
                               sizes[i], x[i].size);
            goto fail;
        }
    }
    /* Single PUTs first, all together; then each large file as a multipart upload. */
    for (size_t i = 0; i < n; i++) {
        struct zetl_s3_req *r;

        if (x[i].path != NULL && sizes[i] > s3->opts.part_size)
            continue;
        r = zetl_s3_req_new("PUT", "PUT", x[i].key, NULL);
        r->has_body = true;
        r->body_fd = fds[i];
        r->body_mem = x[i].data;
        r->body_len = sizes[i];
        if (x[i].sha256 != NULL && strlen(x[i].sha256) == 64)
            memcpy(r->sha256, x[i].sha256, 65);
        reqs[nr++] = r;
    }
    if (nr > 0 && (err = zetl_s3_run(s3, reqs, nr, eb)) != ZETL_OK)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (x[i].path != NULL && sizes[i] > s3->opts.part_size &&
            (err = put_multipart(s3, &x[i], fds[i], sizes[i], eb)) != ZETL_OK)
            goto fail;
    }

fail:
    for (size_t i = 0; i < nr; i++)
        zetl_s3_req_free(reqs[i]);
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(sizes);
    free(fds);
    free(reqs);
    return err;
}

enum zetl_err zetl_s3_get(struct zetl_s3 *s3, const struct zetl_s3_xfer *x, size_t n,
                          struct zetl_errbuf *eb)
{
    struct zetl_s3_req **reqs = zetl_calloc(n ? n : 1, sizeof(*reqs));
    enum zetl_err err = ZETL_OK;
    size_t nr = 0;

    for (size_t i = 0; i < n; i++) {
        struct zetl_s3_req *r = zetl_s3_req_new("GET", "GET", x[i].key, NULL);

        reqs[nr++] = r;
        r->out_path = x[i].path;
        r->expect_size = x[i].size;
        r->expect_sha256 = x[i].sha256;
        if ((r->out_fd = open(x[i].path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not create file \"%s\": %s", x[i].path,
                               strerror(errno));
            goto fail;
        }
    }
    if ((err = zetl_s3_run(s3, reqs, nr, eb)) != ZETL_OK)
        goto fail;
    for (size_t i = 0; i < nr; i++) {
        if (fsync(reqs[i]->out_fd) != 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not fsync file \"%s\": %s", x[i].path,
                               strerror(errno));
            goto fail;
        }
    }

fail:
    for (size_t i = 0; i < nr; i++) {
        if (reqs[i]->out_fd >= 0)
            close(reqs[i]->out_fd);
        zetl_s3_req_free(reqs[i]);
    }
    free(reqs);
    return err;
}
