/*
 * The S3 client (see s3.h): request building, signing inputs, a small
 * scheduler that runs several requests on one curl multi handle with
 * retries, the S3 operations on top, and the minimal XML reading S3's
 * answers need.  libcurl is used by this file only.
 */
#include "sinks/s3.h"

#include "common/log.h"
#include "common/mem.h"
#include "common/sha256.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S3_DEFAULT_PART ((uint64_t)8 << 20)
#define S3_CHECK_ATTEMPTS 3
#define S3_CREDS_FILE_MAX ((off_t)1 << 20)
#define S3_CONNECT_TIMEOUT_MS 10000L
#define S3_HASH_CHUNK ((size_t)1 << 20)
#define S3_POOL_MAX 16
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct zetl_s3 {
    char *bucket;             /* owned */
    struct zetl_s3_opts opts; /* region and endpoint point at the owned copies below */
    char *region;             /* owned */
    char *endpoint;           /* owned or NULL */
    struct zetl_s3_creds cr;
    char *sigv4; /* owned: "aws:amz:<region>:s3" */

    pthread_mutex_t mu;      /* guards pool and rnd */
    void *pool[S3_POOL_MAX]; /* idle CURLM handles: connections stay alive in them */
    size_t npool;
    uint64_t rnd;
};

/* ---- pure helpers ------------------------------------------------------- */

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

void zetl_s3_uri_encode(const char *s, size_t n, bool keep_slash, struct zetl_buf *out)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (unreserved(c) || (keep_slash && c == '/')) {
            zetl_buf_putc(out, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            zetl_buf_append(out, e, 3);
        }
    }
}

struct qpair {
    char *k, *v; /* owned: encoded */
};

static int cmp_qpair(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    int c = strcmp(x->k, y->k);

    return c != 0 ? c : strcmp(x->v, y->v);
}

void zetl_s3_query(const char *const *kv, size_t npairs, struct zetl_buf *out)
{
    struct qpair *p = zetl_calloc(npairs ? npairs : 1, sizeof(*p));
    struct zetl_buf t;

    zetl_buf_init(&t, 0);
    for (size_t i = 0; i < npairs; i++) {
        const char *v = kv[2 * i + 1] ? kv[2 * i + 1] : "";

        zetl_buf_reset(&t);
        zetl_s3_uri_encode(kv[2 * i], strlen(kv[2 * i]), false, &t);
        p[i].k = zetl_strndup(t.data ? t.data : "", t.len);
        zetl_buf_reset(&t);
        zetl_s3_uri_encode(v, strlen(v), false, &t);
        p[i].v = zetl_strndup(t.data ? t.data : "", t.len);
    }
    qsort(p, npairs, sizeof(*p), cmp_qpair);
    for (size_t i = 0; i < npairs; i++) {
        zetl_buf_printf(out, "%s%s=%s", i ? "&" : "", p[i].k, p[i].v);
        free(p[i].k);
        free(p[i].v);
    }
    zetl_buf_release(&t);
    free(p);
}

void zetl_s3_url(const struct zetl_s3_opts *o, const char *bucket, const char *key,
                 const char *query, struct zetl_buf *out)
{
    const char *region = o->region ? o->region : "us-east-1";

    if (o->endpoint != NULL) {
        const char *ep = o->endpoint;
        size_t n = strlen(ep);

        while (n > 0 && ep[n - 1] == '/')
            n--;
        if (o->path_style) {
            zetl_buf_printf(out, "%.*s/%s", (int)n, ep, bucket);
        } else {
            /* scheme://host[:port][/path] -> scheme://bucket.host... */
            const char *host = strstr(ep, "://");
            size_t sl = host ? (size_t)(host - ep) + 3 : 0;

            zetl_buf_printf(out, "%.*s%s.%.*s", (int)sl, ep, bucket, (int)(n - sl), ep + sl);
        }
    } else if (o->path_style) {
        zetl_buf_printf(out, "https://s3.%s.amazonaws.com/%s", region, bucket);
    } else {
        zetl_buf_printf(out, "https://%s.s3.%s.amazonaws.com", bucket, region);
    }
    if (key[0] != '\0' || !o->path_style) {
        zetl_buf_putc(out, '/');
        zetl_s3_uri_encode(key, strlen(key), true, out);
    }
    if (query != NULL && query[0] != '\0')
        zetl_buf_printf(out, "?%s", query);
}

void zetl_s3_sigv4_param(const char *region, struct zetl_buf *out)
{
    zetl_buf_printf(out, "aws:amz:%s:s3", region ? region : "us-east-1");
}

static void strlist_add(struct zetl_strlist *l, char *s)
{
    l->items = zetl_realloc(l->items, (l->n + 1) * sizeof(char *));
    l->items[l->n++] = s;
}

void zetl_s3_headers(const char *payload_sha256, const char *token, const char *content_type,
                     struct zetl_strlist *out)
{
    struct zetl_buf h;

    zetl_buf_init(&h, 0);
    zetl_buf_printf(&h, "x-amz-content-sha256: %s", payload_sha256);
    strlist_add(out, zetl_strndup(h.data, h.len));
    if (token != NULL) {
        zetl_buf_reset(&h);
        zetl_buf_printf(&h, "x-amz-security-token: %s", token);
        strlist_add(out, zetl_strndup(h.data, h.len));
    }
    if (content_type != NULL) {
        zetl_buf_reset(&h);
        zetl_buf_printf(&h, "Content-Type: %s", content_type);
        strlist_add(out, zetl_strndup(h.data, h.len));
    }
    zetl_buf_release(&h);
}

static void put_utf8(struct zetl_buf *out, uint32_t cp)
{
    char u[4];

    if (cp < 0x80) {
        zetl_buf_putc(out, (char)cp);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        zetl_buf_append(out, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        zetl_buf_append(out, u, 3);
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        zetl_buf_append(out, u, 4);
    }
}

bool zetl_s3_xml_decode(const char *s, size_t n, struct zetl_buf *out)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};

    for (size_t i = 0; i < n; i++) {
        const char *semi;
        size_t elen;
        bool done = false;

        if (s[i] != '&') {
            zetl_buf_putc(out, s[i]);
            continue;
        }
        semi = memchr(s + i + 1, ';', n - i - 1);
        if (semi == NULL)
            return false;
        elen = (size_t)(semi - (s + i + 1));
        if (elen >= 2 && s[i + 1] == '#') {
            bool hexa = s[i + 2] == 'x';
            size_t start = hexa ? 3 : 2;
            uint32_t cp = 0;

            /* Digits are s[i+start .. i+elen]: at least one, at most 8. */
            if (elen + 1 <= start || elen + 1 - start > 8)
                return false;
            for (size_t k = i + start; k < i + 1 + elen; k++) {
                char c = s[k];
                int d;

                if (c >= '0' && c <= '9')
                    d = c - '0';
                else if (hexa && c >= 'a' && c <= 'f')
                    d = c - 'a' + 10;
                else if (hexa && c >= 'A' && c <= 'F')
                    d = c - 'A' + 10;
                else
                    return false;
                cp = cp * (hexa ? 16 : 10) + (uint32_t)d;
                if (cp > 0x10FFFF)
                    return false;
            }
            if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
                return false;
            put_utf8(out, cp);
            done = true;
        } else {
            for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++) {
                if (strlen(named[k].name) == elen && memcmp(named[k].name, s + i + 1, elen) == 0) {
                    zetl_buf_putc(out, named[k].c);
                    done = true;
                    break;
                }
            }
        }
        if (!done)
            return false;
        i += elen + 1;
    }
    return true;
}

/*
 * Finds the next element <tag ...>content</tag> (or <tag/>) in [*p, end):
 * its content span; *p moves past the element.  Elements are not nested in
 * themselves in S3's answers.  False when there is none or it is not closed.
 */
static bool xml_next(const char **p, const char *end, const char *tag, const char **content,
                     size_t *clen)
{
    size_t tl = strlen(tag);
    const char *s = *p;

    while (s < end) {
        const char *lt = memchr(s, '<', (size_t)(end - s));
        const char *gt, *close;

        if (lt == NULL || (size_t)(end - lt) < tl + 2)
            return false;
        s = lt + 1;
        if (memcmp(s, tag, tl) != 0 || (s[tl] != '>' && s[tl] != '/' && s[tl] != ' ' &&
                                        s[tl] != '\t' && s[tl] != '\r' && s[tl] != '\n'))
            continue;
        gt = memchr(s + tl, '>', (size_t)(end - (s + tl)));
        if (gt == NULL)
            return false;
        if (gt[-1] == '/') { /* <tag/> */
            *content = gt + 1;
            *clen = 0;
            *p = gt + 1;
            return true;
        }
        for (close = gt + 1; close < end;) {
            const char *c = memchr(close, '<', (size_t)(end - close));
            if (c == NULL || (size_t)(end - c) < tl + 3)
                return false;
            if (c[1] == '/' && memcmp(c + 2, tag, tl) == 0 && c[2 + tl] == '>') {
                *content = gt + 1;
                *clen = (size_t)(c - (gt + 1));
                *p = c + 3 + tl;
                return true;
            }
            close = c + 1;
        }
        return false;
    }
    return false;
}

bool zetl_s3_xml_text(const char *xml, size_t len, const char *tag, struct zetl_buf *out)
{
    const char *p = xml, *c;
    size_t cl;

    zetl_buf_reset(out);
    if (!xml_next(&p, xml + len, tag, &c, &cl))
        return false;
    /* Element content with markup inside is not text. */
    if (memchr(c, '<', cl) != NULL)
        return false;
    if (!zetl_s3_xml_decode(c, cl, out))
        return false;
    zetl_buf_putc(out, '\0');
    out->len--;
    return true;
}

static bool parse_u64(const char *s, uint64_t *v)
{
    char *end;

    if (s[0] < '0' || s[0] > '9')
        return false;
    errno = 0;
    *v = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0';
}

void zetl_s3_list_page_release(struct zetl_s3_list_page *page)
{
    for (size_t i = 0; i < page->nkeys; i++)
        free(page->keys[i]);
    free(page->keys);
    free(page->sizes);
    zetl_strlist_release(&page->prefixes);
    free(page->next_token);
    memset(page, 0, sizeof(*page));
}

enum zetl_err zetl_s3_parse_list(const char *xml, size_t len, struct zetl_s3_list_page *page,
                                 struct zetl_errbuf *eb)
{
    const char *end = xml + len, *p, *c, *root;
    size_t cl, rl;
    struct zetl_buf t;
    enum zetl_err err = ZETL_OK;

    memset(page, 0, sizeof(*page));
    zetl_buf_init(&t, 0);
    p = xml;
    if (!xml_next(&p, end, "ListBucketResult", &root, &rl)) {
        err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "answer is not a ListBucketResult");
        goto fail;
    }
    p = root;
    while (xml_next(&p, root + rl, "Contents", &c, &cl)) {
        uint64_t size = 0;

        if (!zetl_s3_xml_text(c, cl, "Key", &t)) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "ListBucketResult has a malformed <Key>");
            goto fail;
        }
        page->keys = zetl_realloc(page->keys, (page->nkeys + 1) * sizeof(char *));
        page->sizes = zetl_realloc(page->sizes, (page->nkeys + 1) * sizeof(uint64_t));
        page->keys[page->nkeys] = zetl_strndup(t.data, t.len);
        if (zetl_s3_xml_text(c, cl, "Size", &t) && !parse_u64(t.data, &size)) {
            page->nkeys++;
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "ListBucketResult has a malformed <Size>");
            goto fail;
        }
        page->sizes[page->nkeys++] = size;
    }
    p = root;
    while (xml_next(&p, root + rl, "CommonPrefixes", &c, &cl)) {
        if (!zetl_s3_xml_text(c, cl, "Prefix", &t)) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "ListBucketResult has a malformed <CommonPrefixes>");
            goto fail;
        }
        strlist_add(&page->prefixes, zetl_strndup(t.data, t.len));
    }
    if (zetl_s3_xml_text(root, rl, "IsTruncated", &t)) {
        if (strcmp(t.data, "true") == 0) {
            page->truncated = true;
        } else if (strcmp(t.data, "false") != 0) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "ListBucketResult has a malformed <IsTruncated>");
            goto fail;
        }
    }
    if (page->truncated) {
        if (!zetl_s3_xml_text(root, rl, "NextContinuationToken", &t) || t.len == 0) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "ListBucketResult is truncated without a continuation token");
            goto fail;
        }
        page->next_token = zetl_strndup(t.data, t.len);
    }
    zetl_buf_release(&t);
    return ZETL_OK;

fail:
    zetl_buf_release(&t);
    zetl_s3_list_page_release(page);
    return err;
}

static void copy_text(const char *xml, size_t len, const char *tag, struct zetl_buf *t, char *dst,
                      size_t dstlen)
{
    dst[0] = '\0';
    if (zetl_s3_xml_text(xml, len, tag, t)) {
        /* Printable ASCII only: these end up in one log line. */
        size_t j = 0;
        for (size_t i = 0; i < t->len && j + 1 < dstlen; i++) {
            unsigned char ch = (unsigned char)t->data[i];
            dst[j++] = ch >= 0x20 && ch < 0x7F ? (char)ch : ch == '\n' || ch == '\t' ? ' ' : '?';
        }
        dst[j] = '\0';
    }
}

bool zetl_s3_parse_error(const char *xml, size_t len, struct zetl_s3_error *out)
{
    const char *p = xml, *c;
    size_t cl;
    struct zetl_buf t;

    memset(out, 0, sizeof(*out));
    if (!xml_next(&p, xml + len, "Error", &c, &cl))
        return false;
    zetl_buf_init(&t, 0);
    copy_text(c, cl, "Code", &t, out->code, sizeof(out->code));
    copy_text(c, cl, "Message", &t, out->message, sizeof(out->message));
    copy_text(c, cl, "Region", &t, out->region, sizeof(out->region));
    copy_text(c, cl, "Endpoint", &t, out->endpoint, sizeof(out->endpoint));
    zetl_buf_release(&t);
    return out->code[0] != '\0';
}

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

void zetl_s3_complete_xml(char *const *etags, size_t n, struct zetl_buf *out)
{
    zetl_buf_puts(out,
                  "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (size_t i = 0; i < n; i++) {
        zetl_buf_printf(out, "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
        for (const char *e = etags[i]; *e; e++) {
            switch (*e) {
            case '&':
                zetl_buf_puts(out, "&amp;");
                break;
            case '<':
                zetl_buf_puts(out, "&lt;");
                break;
            case '>':
                zetl_buf_puts(out, "&gt;");
                break;
            case '"':
                zetl_buf_puts(out, "&quot;");
                break;
            default:
                zetl_buf_putc(out, *e);
            }
        }
        zetl_buf_puts(out, "</ETag></Part>");
    }
    zetl_buf_puts(out, "</CompleteMultipartUpload>");
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

/* ---- credentials -------------------------------------------------------- */

void zetl_s3_creds_release(struct zetl_s3_creds *cr)
{
    /* Wipe secrets before freeing: they must not linger in freed memory dumps. */
    if (cr->secret_key != NULL) {
        volatile char *s = cr->secret_key;
        while (*s)
            *s++ = '\0';
    }
    free(cr->access_key);
    free(cr->secret_key);
    free(cr->token);
    memset(cr, 0, sizeof(*cr));
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r'))
        (*n)--;
}

enum zetl_err zetl_s3_creds_parse(const char *name, const char *text, size_t len,
                                  const char *profile, struct zetl_s3_creds *cr,
                                  struct zetl_errbuf *eb)
{
    const char *p = text, *end = text + len;
    bool in = false, seen = false;

    memset(cr, 0, sizeof(*cr));
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line = p, *eq;
        size_t n = (size_t)((nl ? nl : end) - p);

        p = nl ? nl + 1 : end;
        trim(&line, &n);
        if (n == 0 || line[0] == '#' || line[0] == ';')
            continue;
        if (line[0] == '[') {
            const char *sec = line + 1;
            size_t sl = n >= 2 && line[n - 1] == ']' ? n - 2 : 0;

            trim(&sec, &sl);
            /* ~/.aws/config style "[profile x]" is accepted too. */
            if (sl > 8 && strncmp(sec, "profile ", 8) == 0) {
                sec += 8;
                sl -= 8;
                trim(&sec, &sl);
            }
            in = sl == strlen(profile) && memcmp(sec, profile, sl) == 0;
            seen = seen || in;
            continue;
        }
        if (!in || (eq = memchr(line, '=', n)) == NULL)
            continue;
        {
            const char *k = line, *v = eq + 1;
            size_t kl = (size_t)(eq - line), vl = n - kl - 1;
            char **dst = NULL;

            trim(&k, &kl);
            trim(&v, &vl);
            if (kl == 17 && strncmp(k, "aws_access_key_id", kl) == 0)
                dst = &cr->access_key;
            else if (kl == 21 && strncmp(k, "aws_secret_access_key", kl) == 0)
                dst = &cr->secret_key;
            else if (kl == 17 && strncmp(k, "aws_session_token", kl) == 0)
                dst = &cr->token;
            if (dst != NULL && vl > 0) {
                free(*dst);
                *dst = zetl_strndup(v, vl);
            }
        }
    }
    if (!seen) {
        zetl_s3_creds_release(cr);
        return zetl_err_set(eb, ZETL_ERR_FATAL, "%s has no profile \"%s\"", name, profile);
    }
    if (cr->access_key == NULL || cr->secret_key == NULL) {
        zetl_s3_creds_release(cr);
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "profile \"%s\" of %s lacks aws_access_key_id or "
                            "aws_secret_access_key",
                            profile, name);
    }
    return ZETL_OK;
}

enum zetl_err zetl_s3_creds_load(struct zetl_s3_creds *cr, struct zetl_errbuf *eb)
{
    const char *ak = env_nonempty("AWS_ACCESS_KEY_ID"), *sk = env_nonempty("AWS_SECRET_ACCESS_KEY");
    const char *file = env_nonempty("AWS_SHARED_CREDENTIALS_FILE");
    const char *profile = env_nonempty("AWS_PROFILE");
    struct zetl_buf path, text;
    struct stat st;
    FILE *f = NULL;
    enum zetl_err err;

    memset(cr, 0, sizeof(*cr));
    if (ak != NULL && sk != NULL) {
        const char *tok = env_nonempty("AWS_SESSION_TOKEN");
        cr->access_key = zetl_strdup(ak);
        cr->secret_key = zetl_strdup(sk);
        cr->token = tok ? zetl_strdup(tok) : NULL;
        return ZETL_OK;
    }
    zetl_buf_init(&path, 0);
    zetl_buf_init(&text, (size_t)S3_CREDS_FILE_MAX);
    if (file != NULL) {
        zetl_buf_puts(&path, file);
    } else {
        const char *home = env_nonempty("HOME");
        if (home == NULL) {
            err = zetl_err_set(eb, ZETL_ERR_FATAL,
                               "no AWS credentials: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE");
            goto fail;
        }
        zetl_buf_printf(&path, "%s/.aws/credentials", home);
    }
    if ((f = fopen(path.data, "r")) == NULL) {
        if (errno == ENOENT)
            err = zetl_err_set(eb, ZETL_ERR_FATAL,
                               "no AWS credentials: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or write \"%s\"",
                               path.data);
        else
            err = zetl_err_set(eb, ZETL_ERR_FATAL, "could not open file \"%s\": %s", path.data,
                               strerror(errno));
        goto fail;
    }
    if (fstat(fileno(f), &st) != 0 || st.st_size > S3_CREDS_FILE_MAX ||
        !zetl_buf_reserve(&text, (size_t)st.st_size + 1)) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "credentials file \"%s\" is not a file of at most %lld bytes", path.data,
                           (long long)S3_CREDS_FILE_MAX);
        goto fail;
    }
    text.len = fread(text.data, 1, (size_t)st.st_size, f);
    if (ferror(f)) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "could not read file \"%s\": %s", path.data,
                           strerror(errno));
        goto fail;
    }
    err =
        zetl_s3_creds_parse(path.data, text.data, text.len, profile ? profile : "default", cr, eb);

fail:
    if (f != NULL)
        fclose(f);
    if (text.data != NULL)
        memset(text.data, 0, text.alloc);
    zetl_buf_release(&text);
    zetl_buf_release(&path);
    return err;
}

/* ---- the client ---------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static long env_long(const char *name, long dflt, long min, long max)
{
    const char *v = env_nonempty(name);
    char *end;
    long n;

    if (v == NULL)
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
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        zetl_s3_creds_release(cr);
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not initialize libcurl: %s",
                            curl_easy_strerror(curl_init_rc));
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
    if (s3->opts.max_attempts <= 0)
        s3->opts.max_attempts = ZETL_S3_MAX_ATTEMPTS;
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
    for (size_t i = 0; i < s3->npool; i++)
        curl_multi_cleanup(s3->pool[i]);
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
    if (s3->npool < S3_POOL_MAX) {
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

/* ---- requests and the scheduler ------------------------------------------ */

enum req_state {
    REQ_WAITING = 0,
    REQ_RUNNING,
    REQ_DONE,
};

struct s3_req {
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
    char sha256[65]; /* of the body; computed on first start when empty */
    int max_attempts;
    bool ok_404; /* a 404 is an answer (probe), not an error */

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
    enum req_state state;
    int attempts;
    int64_t not_before; /* monotonic ms */
    enum zetl_err err;
    struct zetl_errbuf eb;
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct s3_req *req_new(const char *op, const char *method, const char *key,
                              const char *query)
{
    struct s3_req *r = zetl_calloc(1, sizeof(*r));

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

static void req_end_attempt(struct s3_req *r)
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

static void req_free(struct s3_req *r)
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
static void req_name(const struct zetl_s3 *s3, const struct s3_req *r, char *out, size_t n)
{
    snprintf(out, n, "s3 %s s3://%s/%s", r->op, s3->bucket, r->shown ? r->shown : r->key);
}

static size_t cb_read(char *buf, size_t size, size_t nitems, void *arg)
{
    struct s3_req *r = arg;
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
    struct s3_req *r = arg;

    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > r->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->body_pos = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t cb_header(char *buf, size_t size, size_t nitems, void *arg)
{
    struct s3_req *r = arg;
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
        r->content_length = parse_u64(num, &cl) && cl <= INT64_MAX ? (int64_t)cl : -1;
    }
    return n;
}

static size_t cb_write(char *buf, size_t size, size_t nitems, void *arg)
{
    struct s3_req *r = arg;
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

static enum zetl_err req_hash_body(struct zetl_s3 *s3, struct s3_req *r, struct zetl_errbuf *eb)
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
static enum zetl_err req_start(struct zetl_s3 *s3, struct s3_req *r, struct zetl_errbuf *eb)
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
static enum zetl_err req_judge(struct zetl_s3 *s3, struct s3_req *r, struct zetl_errbuf *eb)
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

/*
 * Runs the requests, at most ZETL_S3_MAX_INFLIGHT at once, each retried with
 * backoff while its failures are transient.  Stops at the first final error
 * (aborting the others) and returns it.  Each request's err/eb tell its own
 * outcome.
 */
static enum zetl_err s3_run(struct zetl_s3 *s3, struct s3_req **reqs, size_t n,
                            struct zetl_errbuf *eb)
{
    CURLM *m = pool_get(s3);
    size_t running = 0, done = 0;
    enum zetl_err first = ZETL_OK;

    for (size_t i = 0; i < n; i++) {
        reqs[i]->state = REQ_WAITING;
        reqs[i]->attempts = 0;
        reqs[i]->not_before = 0;
        reqs[i]->err = ZETL_OK;
        if (reqs[i]->max_attempts <= 0)
            reqs[i]->max_attempts = s3->opts.max_attempts;
    }
    while (done < n) {
        int64_t now = now_ms();
        long wait = 1000;
        int still;
        CURLMsg *msg;
        int q;

        for (size_t i = 0; first == ZETL_OK && i < n && running < ZETL_S3_MAX_INFLIGHT; i++) {
            struct s3_req *r = reqs[i];

            if (r->state != REQ_WAITING || r->not_before > now)
                continue;
            r->attempts++;
            if ((r->err = req_start(s3, r, &r->eb)) != ZETL_OK) {
                r->state = REQ_DONE;
                done++;
                first = r->err;
                *eb = r->eb;
                break;
            }
            curl_multi_add_handle(m, r->easy);
            r->state = REQ_RUNNING;
            running++;
        }
        if (first != ZETL_OK)
            break;
        curl_multi_perform(m, &still);
        while ((msg = curl_multi_info_read(m, &q)) != NULL) {
            struct s3_req *r = NULL;
            enum zetl_err e;

            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            r->cc = msg->data.result;
            curl_multi_remove_handle(m, r->easy);
            running--;
            e = req_judge(s3, r, &r->eb);
            if (e == ZETL_ERR_RETRY && r->attempts < r->max_attempts) {
                long d = zetl_s3_backoff_ms(r->attempts, s3_rand(s3));
                zetl_warn("%s; retrying in %ld ms (attempt %d of %d)", r->eb.msg, d,
                          r->attempts + 1, r->max_attempts);
                req_end_attempt(r);
                r->state = REQ_WAITING;
                r->not_before = now_ms() + d;
                continue;
            }
            if (e == ZETL_ERR_RETRY) {
                size_t l = strlen(r->eb.msg);
                snprintf(r->eb.msg + l, sizeof(r->eb.msg) - l, " (gave up after %d attempts)",
                         r->attempts);
            }
            req_end_attempt(r);
            r->state = REQ_DONE;
            r->err = e;
            done++;
            if (e != ZETL_OK && first == ZETL_OK) {
                first = e;
                *eb = r->eb;
            }
        }
        if (first != ZETL_OK)
            break;
        if (done == n)
            break;
        now = now_ms();
        for (size_t i = 0; i < n; i++) {
            if (reqs[i]->state == REQ_WAITING) {
                long d = reqs[i]->not_before > now ? (long)(reqs[i]->not_before - now) : 0;
                if (running < ZETL_S3_MAX_INFLIGHT && d < wait)
                    wait = d;
            }
        }
        if (wait > 0)
            curl_multi_poll(m, NULL, 0, (int)wait, NULL);
    }
    /* After a final error: abort what is still in flight. */
    for (size_t i = 0; i < n; i++) {
        if (reqs[i]->state == REQ_RUNNING) {
            curl_multi_remove_handle(m, reqs[i]->easy);
            reqs[i]->state = REQ_DONE;
        }
        req_end_attempt(reqs[i]);
    }
    pool_put(s3, m);
    return first;
}

static enum zetl_err s3_run1(struct zetl_s3 *s3, struct s3_req *r, struct zetl_errbuf *eb)
{
    return s3_run(s3, &r, 1, eb);
}

/* ---- operations ---------------------------------------------------------- */

enum zetl_err zetl_s3_check(struct zetl_s3 *s3, const char *prefix, struct zetl_errbuf *eb)
{
    const char *kv[] = {"list-type", "2", "max-keys", "1", "prefix", prefix};
    struct zetl_buf q;
    struct s3_req *r;
    enum zetl_err err;

    zetl_buf_init(&q, 0);
    zetl_s3_query(kv, 3, &q);
    r = req_new("LIST", "GET", "", q.data);
    r->shown = zetl_strdup(prefix);
    r->out_max = ZETL_S3_LIST_MAX;
    r->max_attempts = S3_CHECK_ATTEMPTS;
    err = s3_run1(s3, r, eb);
    if (err == ZETL_OK) {
        struct zetl_s3_list_page page;
        if ((err = zetl_s3_parse_list(r->resp.data ? r->resp.data : "", r->resp.len, &page, eb)) ==
            ZETL_OK)
            zetl_s3_list_page_release(&page);
        else
            zetl_err_prefix(eb, "s3 LIST s3://%s/%s", s3->bucket, prefix);
    }
    req_free(r);
    zetl_buf_release(&q);
    return err;
}

enum zetl_err zetl_s3_head(struct zetl_s3 *s3, const char *key, bool *found, uint64_t *size,
                           struct zetl_errbuf *eb)
{
    struct s3_req *r = req_new("HEAD", "HEAD", key, NULL);
    enum zetl_err err;

    *found = false;
    r->ok_404 = true;
    err = s3_run1(s3, r, eb);
    if (err == ZETL_OK && r->status != 404) {
        *found = true;
        if (size != NULL)
            *size = r->content_length >= 0 ? (uint64_t)r->content_length : 0;
    }
    req_free(r);
    return err;
}

enum zetl_err zetl_s3_get_mem(struct zetl_s3 *s3, const char *key, size_t max, struct zetl_buf *out,
                              bool *found, struct zetl_errbuf *eb)
{
    struct s3_req *r = req_new("GET", "GET", key, NULL);
    enum zetl_err err;

    *found = false;
    zetl_buf_reset(out);
    r->ok_404 = true;
    r->out_max = max;
    err = s3_run1(s3, r, eb);
    if (err == ZETL_OK && r->status != 404) {
        *found = true;
        if (r->resp.len > 0 && !zetl_buf_append(out, r->resp.data, r->resp.len))
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "s3 GET s3://%s/%s: object is too large",
                               s3->bucket, key);
    }
    req_free(r);
    return err;
}

enum zetl_err zetl_s3_delete(struct zetl_s3 *s3, const char *key, struct zetl_errbuf *eb)
{
    struct s3_req *r = req_new("DELETE", "DELETE", key, NULL);
    enum zetl_err err = s3_run1(s3, r, eb);

    req_free(r);
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
        struct s3_req *r;
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
        r = req_new("LIST", "GET", "", q.data);
        r->shown = zetl_strdup(prefix);
        r->out_max = ZETL_S3_LIST_MAX;
        err = s3_run1(s3, r, eb);
        if (err == ZETL_OK && (err = zetl_s3_parse_list(r->resp.data ? r->resp.data : "",
                                                        r->resp.len, &page, eb)) != ZETL_OK)
            zetl_err_prefix(eb, "s3 LIST s3://%s/%s", s3->bucket, prefix);
        req_free(r);
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

/* A multipart upload of one file: create, parts (several at once), complete; abort on failure. */
static enum zetl_err put_multipart(struct zetl_s3 *s3, const struct zetl_s3_xfer *x, int fd,
                                   uint64_t size, struct zetl_errbuf *eb)
{
    uint64_t part = zetl_s3_part_size(size, s3->opts.part_size);
    size_t nparts = (size_t)((size + part - 1) / part);
    struct s3_req *r = NULL, **parts = NULL;
    struct zetl_buf t, q, body;
    char **etags = NULL;
    char *upload_id = NULL;
    enum zetl_err err;

    zetl_buf_init(&t, 0);
    zetl_buf_init(&q, 0);
    zetl_buf_init(&body, 0);

    r = req_new("CreateMultipartUpload", "POST", x->key, "uploads=");
    r->has_body = true; /* empty */
    r->content_type = "application/octet-stream";
    r->out_max = ZETL_S3_ERROR_BODY_MAX;
    if ((err = s3_run1(s3, r, eb)) != ZETL_OK)
        goto fail;
    if (!zetl_s3_xml_text(r->resp.data ? r->resp.data : "", r->resp.len, "UploadId", &t) ||
        t.len == 0) {
        err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                           "s3 CreateMultipartUpload s3://%s/%s: answer has no <UploadId>",
                           s3->bucket, x->key);
        goto fail;
    }
    upload_id = zetl_strndup(t.data, t.len);
    req_free(r);
    r = NULL;
    zetl_debug("s3 multipart upload of s3://%s/%s: %zu parts of %" PRIu64 " bytes", s3->bucket,
               x->key, nparts, part);

    parts = zetl_calloc(nparts, sizeof(*parts));
    for (size_t i = 0; i < nparts; i++) {
        char pn[24];
        const char *kv[] = {"partNumber", pn, "uploadId", upload_id};

        snprintf(pn, sizeof(pn), "%zu", i + 1);
        zetl_buf_reset(&q);
        zetl_s3_query(kv, 2, &q);
        parts[i] = req_new("UploadPart", "PUT", x->key, q.data);
        parts[i]->has_body = true;
        parts[i]->body_fd = fd;
        parts[i]->body_off = (uint64_t)i * part;
        parts[i]->body_len = i + 1 < nparts ? part : size - (uint64_t)i * part;
    }
    if ((err = s3_run(s3, parts, nparts, eb)) != ZETL_OK)
        goto abort;
    etags = zetl_calloc(nparts, sizeof(char *));
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i]->etag[0] == '\0') {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "s3 UploadPart s3://%s/%s: part %zu answer has no ETag", s3->bucket,
                               x->key, i + 1);
            goto abort;
        }
        etags[i] = parts[i]->etag;
    }
    zetl_s3_complete_xml(etags, nparts, &body);
    {
        const char *kv[] = {"uploadId", upload_id};
        zetl_buf_reset(&q);
        zetl_s3_query(kv, 1, &q);
    }
    r = req_new("CompleteMultipartUpload", "POST", x->key, q.data);
    r->has_body = true;
    r->body_mem = body.data;
    r->body_len = body.len;
    r->content_type = "application/xml";
    r->out_max = ZETL_S3_ERROR_BODY_MAX;
    if ((err = s3_run1(s3, r, eb)) != ZETL_OK)
        goto abort;
    goto fail; /* done */

abort : {
    struct zetl_errbuf aeb;
    const char *kv[] = {"uploadId", upload_id};
    struct s3_req *a;

    zetl_buf_reset(&q);
    zetl_s3_query(kv, 1, &q);
    a = req_new("AbortMultipartUpload", "DELETE", x->key, q.data);
    a->max_attempts = 2;
    if (s3_run1(s3, a, &aeb) != ZETL_OK)
        zetl_warn("%s (the parts stay until a bucket lifecycle rule removes them)", aeb.msg);
    req_free(a);
}
fail:
    if (parts != NULL)
        for (size_t i = 0; i < nparts; i++)
            req_free(parts[i]);
    free(parts);
    free(etags);
    free(upload_id);
    req_free(r);
    zetl_buf_release(&body);
    zetl_buf_release(&q);
    zetl_buf_release(&t);
    return err;
}

enum zetl_err zetl_s3_put(struct zetl_s3 *s3, const struct zetl_s3_xfer *x, size_t n,
                          struct zetl_errbuf *eb)
{
    struct s3_req **reqs = zetl_calloc(n ? n : 1, sizeof(*reqs));
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
        struct s3_req *r;

        if (x[i].path != NULL && sizes[i] > s3->opts.part_size)
            continue;
        r = req_new("PUT", "PUT", x[i].key, NULL);
        r->has_body = true;
        r->body_fd = fds[i];
        r->body_mem = x[i].data;
        r->body_len = sizes[i];
        if (x[i].sha256 != NULL && strlen(x[i].sha256) == 64)
            memcpy(r->sha256, x[i].sha256, 65);
        reqs[nr++] = r;
    }
    if (nr > 0 && (err = s3_run(s3, reqs, nr, eb)) != ZETL_OK)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (x[i].path != NULL && sizes[i] > s3->opts.part_size &&
            (err = put_multipart(s3, &x[i], fds[i], sizes[i], eb)) != ZETL_OK)
            goto fail;
    }

fail:
    for (size_t i = 0; i < nr; i++)
        req_free(reqs[i]);
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
    struct s3_req **reqs = zetl_calloc(n ? n : 1, sizeof(*reqs));
    enum zetl_err err = ZETL_OK;
    size_t nr = 0;

    for (size_t i = 0; i < n; i++) {
        struct s3_req *r = req_new("GET", "GET", x[i].key, NULL);

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
    if ((err = s3_run(s3, reqs, nr, eb)) != ZETL_OK)
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
        req_free(reqs[i]);
    }
    free(reqs);
    return err;
}
