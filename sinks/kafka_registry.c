/* The Schema Registry client (kafka_registry.h). */
#include "sinks/kafka_registry.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/mem.h"

/* Bodies larger than this are not a registry's answer. */
#define REGISTRY_MAX_BODY (16u << 20)

struct zetl_registry {
    char *url; /* owned, without a trailing '/' */
    CURL *curl;
    struct zetl_buf body; /* the last response */
};

struct zetl_registry *zetl_registry_new(const char *url)
{
    struct zetl_registry *r = zetl_calloc(1, sizeof(*r));
    size_t n = strlen(url);

    while (n > 0 && url[n - 1] == '/')
        n--;
    r->url = zetl_strndup(url, n);
    zetl_buf_init(&r->body, REGISTRY_MAX_BODY);
    return r;
}

void zetl_registry_free(struct zetl_registry *r)
{
    if (r == NULL)
        return;
    if (r->curl)
        curl_easy_cleanup(r->curl);
    zetl_buf_release(&r->body);
    free(r->url);
    free(r);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct zetl_registry *r = arg;

    return zetl_buf_append(&r->body, p, size * n) ? size * n : 0;
}

/* The registry's own reason from an error body {"error_code":..,"message":..}, or the body. */
static void reason_of(struct zetl_registry *r, char *out, size_t size)
{
    json_t *j = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;

    if (m != NULL)
        snprintf(out, size, "%s", m);
    else
        snprintf(out, size, "%.*s", (int)(r->body.len > 200 ? 200 : r->body.len),
                 r->body.data ? r->body.data : "");
    json_decref(j);
}

/* One request; *status the HTTP status.  Transport failures are ZETL_ERR_RETRY. */
static enum zetl_err request(struct zetl_registry *r, const char *path, const char *post,
                             long *status, struct zetl_errbuf *eb)
{
    struct curl_slist *h = NULL;
    char url[2048];
    CURLcode rc;

    if (r->curl == NULL && (r->curl = curl_easy_init()) == NULL)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not create a curl handle");
    snprintf(url, sizeof(url), "%s%s", r->url, path);
    zetl_buf_reset(&r->body);
    curl_easy_reset(r->curl);
    curl_easy_setopt(r->curl, CURLOPT_URL, url);
    curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(r->curl, CURLOPT_TIMEOUT_MS, 30000L);
    h = curl_slist_append(h, "Accept: application/vnd.schemaregistry.v1+json, application/json");
    if (post != NULL) {
        h = curl_slist_append(h, "Content-Type: application/vnd.schemaregistry.v1+json");
        curl_easy_setopt(r->curl, CURLOPT_POSTFIELDS, post);
    }
    curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, h);
    rc = curl_easy_perform(r->curl);
    curl_slist_free_all(h);
    if (rc != CURLE_OK)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "schema registry %s: %s", r->url,
                            curl_easy_strerror(rc));
    curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, status);
    if (*status >= 500 || *status == 429)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "schema registry %s answered %ld", r->url, *status);
    return ZETL_OK;
}

/* Appends s to b with every byte that is not unreserved percent-encoded. */
static void url_escape(struct zetl_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            zetl_buf_putc(b, (char)*p);
        } else {
            zetl_buf_putc(b, '%');
            zetl_buf_putc(b, hex[*p >> 4]);
            zetl_buf_putc(b, hex[*p & 15]);
        }
    }
}

enum zetl_err zetl_registry_register(struct zetl_registry *r, const char *subject,
                                     const char *schema, int32_t *id, struct zetl_errbuf *eb)
{
    struct zetl_buf path;
    json_t *req = json_pack("{s:s}", "schema", schema), *res;
    char *post = json_dumps(req, JSON_COMPACT);
    char reason[256];
    long status = 0;
    enum zetl_err err;

    json_decref(req);
    zetl_buf_init(&path, 0);
    zetl_buf_puts(&path, "/subjects/");
    url_escape(&path, subject);
    zetl_buf_puts(&path, "/versions");
    err = request(r, path.data, post, &status, eb);
    zetl_buf_release(&path);
    free(post);
    if (err != ZETL_OK) {
        zetl_err_prefix(eb, "could not register the schema of subject \"%s\"", subject);
        return err;
    }
    if (status != 200) {
        reason_of(r, reason, sizeof(reason));
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "schema registry refused the schema of subject \"%s\" (HTTP %ld): %s",
                            subject, status, reason);
    }
    res = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    json_t *jid = res ? json_object_get(res, "id") : NULL;
    if (!json_is_integer(jid) || json_integer_value(jid) < 0 ||
        json_integer_value(jid) > INT32_MAX) {
        json_decref(res);
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "schema registry %s: no schema id in its answer for subject \"%s\"",
                            r->url, subject);
    }
    *id = (int32_t)json_integer_value(jid);
    json_decref(res);
    return ZETL_OK;
}

enum zetl_err zetl_registry_get(struct zetl_registry *r, int32_t id, char **schema,
                                struct zetl_errbuf *eb)
{
    char path[64], reason[256];
    long status = 0;
    enum zetl_err err;

    snprintf(path, sizeof(path), "/schemas/ids/%d", (int)id);
    if ((err = request(r, path, NULL, &status, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "could not fetch schema id %d", (int)id);
        return err;
    }
    if (status != 200) {
        reason_of(r, reason, sizeof(reason));
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "schema registry %s has no schema id %d (HTTP %ld): %s", r->url,
                            (int)id, status, reason);
    }
    json_t *res = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    const char *s = res ? json_string_value(json_object_get(res, "schema")) : NULL;
    if (s == NULL) {
        json_decref(res);
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "schema registry %s: no schema in its answer for id %d", r->url,
                            (int)id);
    }
    *schema = zetl_strdup(s);
    json_decref(res);
    return ZETL_OK;
}
