/* What the S3 client signs and sends (see s3_sign.h). */
#include "sinks/s3_sign.h"

#include "common/mem.h"

#include <stdlib.h>
#include <string.h>

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

void zetl_s3_headers(const char *payload_sha256, const char *token, const char *content_type,
                     struct zetl_strlist *out)
{
    struct zetl_buf h;

    zetl_buf_init(&h, 0);
    zetl_buf_printf(&h, "x-amz-content-sha256: %s", payload_sha256);
    zetl_strlist_addn(out, h.data, h.len);
    if (token != NULL) {
        zetl_buf_reset(&h);
        zetl_buf_printf(&h, "x-amz-security-token: %s", token);
        zetl_strlist_addn(out, h.data, h.len);
    }
    if (content_type != NULL) {
        zetl_buf_reset(&h);
        zetl_buf_printf(&h, "Content-Type: %s", content_type);
        zetl_strlist_addn(out, h.data, h.len);
    }
    zetl_buf_release(&h);
}
