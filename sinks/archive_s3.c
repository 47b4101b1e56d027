/*
 * The s3:// archive backend: the file archive's layout as object keys,
 *   <prefix>/<stream>/<first>-<last>/{<table>.csv.zst..., <table>.csv.zst.manifest...,
 *                                     copy.manifest, manifest.json}
 * S3 has no rename, so "a batch appears whole" becomes "a batch counts only
 * once its manifest.json exists": the data files and copy.manifest (a
 * Redshift COPY manifest of the data files) go first, manifest.json last,
 * and readers skip batch prefixes without one.  Retention removes in the
 * reverse order: manifest.json first (the batch stops counting), then the
 * rest, which the next pass finishes when a crash came between.
 */
#include "sinks/archive_backend.h"

#include "common/buf.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "proto/manifest.h"
#include "sinks/s3.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S3A_COPY_MANIFEST "copy.manifest"
/* "<file>.manifest": the COPY manifest of one data file (Redshift loads one shape per COPY). */
#define S3A_FILE_MANIFEST_SUFFIX ".manifest"
#define S3A_MAX_BATCHES ((size_t)16 << 20) /* cap on batches of one stream held while scanning */

struct archive_s3 {
    struct zetl_s3 *s3; /* owned */
    char *bucket;       /* owned */
    char *prefix;       /* owned: without leading or trailing '/'; "" for the bucket root */
    char *fetch_root;   /* owned: absolute directory for fetched batches */
};

/* One batch prefix of a stream found by a scan. */
struct s3a_batch {
    char name[40];
    uint64_t first, last;
    bool complete; /* its manifest.json exists */
};

struct s3a_scan {
    const char *base; /* "<prefix>/<stream>/" */
    size_t base_len;
    struct s3a_batch *b; /* owned */
    size_t n, cap;
    bool overflow;
};

/* "<prefix>/<stream>/[<name>/[<file>]]" into out (reset first). */
static void s3a_key(const struct archive_s3 *a, struct zetl_buf *out, const char *stream,
                    const char *name, const char *file)
{
    zetl_buf_reset(out);
    if (a->prefix[0] != '\0')
        zetl_buf_printf(out, "%s/", a->prefix);
    zetl_buf_printf(out, "%s/", stream);
    if (name != NULL)
        zetl_buf_printf(out, "%s/", name);
    if (file != NULL)
        zetl_buf_puts(out, file);
}

static struct s3a_batch *scan_find(struct s3a_scan *sc, const char *name)
{
    /* Keys come in order, so a batch's keys are adjacent: look at the last one only. */
    if (sc->n > 0 && strcmp(sc->b[sc->n - 1].name, name) == 0)
        return &sc->b[sc->n - 1];
    return NULL;
}

static bool scan_key(void *arg, const char *key, uint64_t size, bool is_prefix)
{
    struct s3a_scan *sc = arg;
    const char *rest, *slash;
    char name[40];
    uint64_t first, last;
    struct s3a_batch *b;

    (void)size;
    (void)is_prefix;
    if (strncmp(key, sc->base, sc->base_len) != 0)
        return true;
    rest = key + sc->base_len;
    slash = strchr(rest, '/');
    if (slash == NULL || !zetl_archive_parse_name(rest, (size_t)(slash - rest), &first, &last))
        return true;
    memcpy(name, rest, 33);
    name[33] = '\0';
    if ((b = scan_find(sc, name)) == NULL) {
        if (sc->n == S3A_MAX_BATCHES) {
            sc->overflow = true;
            return false;
        }
        if (sc->n == sc->cap) {
            sc->cap = sc->cap ? sc->cap * 2 : 64;
            sc->b = zetl_realloc(sc->b, sc->cap * sizeof(*sc->b));
        }
        b = &sc->b[sc->n++];
        memset(b, 0, sizeof(*b));
        memcpy(b->name, name, 34);
        b->first = first;
        b->last = last;
    }
    if (strcmp(slash + 1, ZETL_MANIFEST_NAME) == 0)
        b->complete = true;
    return true;
}

/* Every batch prefix of `stream`, in name order, with whether its manifest exists. */
static enum zetl_err scan_stream(struct archive_s3 *a, const char *stream, struct s3a_scan *sc,
                                 struct zetl_errbuf *eb)
{
    struct zetl_buf base;
    enum zetl_err err;

    memset(sc, 0, sizeof(*sc));
    zetl_buf_init(&base, 0);
    s3a_key(a, &base, stream, NULL, NULL);
    sc->base = base.data;
    sc->base_len = base.len;
    err = zetl_s3_list(a->s3, base.data, NULL, NULL, scan_key, sc, eb);
    if (err == ZETL_OK && sc->overflow)
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "s3 LIST s3://%s/%s: more than %zu batches in one stream", a->bucket,
                           base.data, S3A_MAX_BATCHES);
    sc->base = NULL;
    zetl_buf_release(&base);
    if (err != ZETL_OK) {
        free(sc->b);
        memset(sc, 0, sizeof(*sc));
    }
    return err;
}

/* Deletes every object under the prefix of an incomplete batch. */
static bool collect_key(void *arg, const char *key, uint64_t size, bool is_prefix)
{
    struct zetl_strlist *l = arg;

    (void)size;
    (void)is_prefix;
    if (l->n >= 100000)
        return false; /* a batch has one file per table: this is not ours */
    zetl_strlist_add(l, key);
    return true;
}

static enum zetl_err remove_incomplete(struct archive_s3 *a, const char *stream, const char *name,
                                       struct zetl_errbuf *eb)
{
    struct zetl_buf p;
    struct zetl_strlist keys = {NULL, 0};
    enum zetl_err err;

    zetl_buf_init(&p, 0);
    s3a_key(a, &p, stream, name, NULL);
    zetl_logmsg("archive: removing incomplete batch s3://%s/%s (no manifest: it comes again)",
                a->bucket, p.data);
    err = zetl_s3_list(a->s3, p.data, NULL, NULL, collect_key, &keys, eb);
    for (size_t i = 0; err == ZETL_OK && i < keys.n; i++) {
        /* Never the manifest: a batch that has one is complete. */
        size_t kl = strlen(keys.items[i]);
        if (kl >= strlen(ZETL_MANIFEST_NAME) &&
            strcmp(keys.items[i] + kl - strlen(ZETL_MANIFEST_NAME), ZETL_MANIFEST_NAME) == 0)
            continue;
        err = zetl_s3_delete(a->s3, keys.items[i], eb);
    }
    zetl_strlist_release(&keys);
    zetl_buf_release(&p);
    return err;
}

static int cmp_newest_first(const void *x, const void *y)
{
    const struct s3a_batch *a = x, *b = y;

    if (a->last != b->last)
        return a->last > b->last ? -1 : 1;
    if (a->first != b->first)
        return a->first > b->first ? -1 : 1;
    return 0;
}

/*
 * GETs the manifest.json of batch `name` into *text (reset first) and reads
 * it into *m (initialized here; the caller releases it).  The batch name must
 * say what the manifest says: lists and replays go by the name.
 */
static enum zetl_err s3a_get_manifest(struct archive_s3 *a, const char *stream, const char *name,
                                      struct zetl_buf *text, struct zetl_manifest *m,
                                      struct zetl_errbuf *eb)
{
    struct zetl_buf key;
    uint64_t first, last;
    bool found;
    enum zetl_err err;

    zetl_manifest_init(m);
    zetl_buf_init(&key, 0);
    if (!zetl_archive_parse_name(name, strlen(name), &first, &last)) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE, "invalid batch name \"%s\"", name);
        goto fail;
    }
    s3a_key(a, &key, stream, name, ZETL_MANIFEST_NAME);
    if ((err = zetl_s3_get_mem(a->s3, key.data, ZETL_MANIFEST_MAX, text, &found, eb)) != ZETL_OK)
        goto fail;
    if (!found) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "archive batch s3://%s/%s does not exist", a->bucket,
                           key.data);
        goto fail;
    }
    if ((err = zetl_manifest_read(text->data, text->len, stream, m, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "archive batch s3://%s/%s is damaged", a->bucket, key.data);
        goto fail;
    }
    if (m->first_lsn != first || m->last_lsn != last)
        err = zetl_err_set(
            eb, ZETL_ERR_PROTOCOL,
            "archive batch s3://%s/%s has a manifest for " ZETL_LSN_FMT "-" ZETL_LSN_FMT, a->bucket,
            key.data, ZETL_LSN_ARGS(m->first_lsn), ZETL_LSN_ARGS(m->last_lsn));
fail:
    zetl_buf_release(&key);
    return err;
}

static enum zetl_err s3a_last_lsn(struct zetl_archive *ar, const char *stream, uint64_t *last_lsn,
                                  uint64_t *end_lsn, struct zetl_errbuf *eb)
{
    struct archive_s3 *a = ar->state;
    struct s3a_scan sc;
    struct zetl_buf text;
    struct zetl_manifest m;
    enum zetl_err err;

    *last_lsn = *end_lsn = 0;
    if ((err = scan_stream(a, stream, &sc, eb)) != ZETL_OK)
        return err;
    zetl_manifest_init(&m);
    zetl_buf_init(&text, ZETL_MANIFEST_MAX);
    if (sc.n > 1)
        qsort(sc.b, sc.n, sizeof(*sc.b), cmp_newest_first);
    for (size_t i = 0; i < sc.n; i++) {
        if (!sc.b[i].complete) {
            /* Never completed: a put that did not finish.  The batch comes again. */
            if ((err = remove_incomplete(a, stream, sc.b[i].name, eb)) != ZETL_OK)
                goto fail;
            continue;
        }
        if ((err = s3a_get_manifest(a, stream, sc.b[i].name, &text, &m, eb)) != ZETL_OK)
            goto fail;
        *last_lsn = m.last_lsn;
        *end_lsn = m.end_lsn;
        break;
    }

fail:
    zetl_manifest_release(&m);
    zetl_buf_release(&text);
    free(sc.b);
    return err;
}

static int cmp_name(const void *x, const void *y)
{
    /* Batch names are fixed-width hex: text order is LSN order. */
    return strcmp(((const struct s3a_batch *)x)->name, ((const struct s3a_batch *)y)->name);
}

static enum zetl_err s3a_list(struct zetl_archive *ar, const char *stream, uint64_t after_lsn,
                              struct zetl_strlist *out, struct zetl_errbuf *eb)
{
    struct s3a_scan sc;
    enum zetl_err err;

    out->items = NULL;
    out->n = 0;
    if ((err = scan_stream(ar->state, stream, &sc, eb)) != ZETL_OK)
        return err;
    if (sc.n > 1)
        qsort(sc.b, sc.n, sizeof(*sc.b), cmp_name);
    for (size_t i = 0; i < sc.n; i++) {
        if (!sc.b[i].complete || sc.b[i].last <= after_lsn)
            continue;
        zetl_strlist_add(out, sc.b[i].name);
    }
    free(sc.b);
    return ZETL_OK;
}

/* The first key under "<prefix>/" that a listing saw, when it is in a stream directory. */
struct s3a_first {
    size_t base_len;     /* of "<prefix>/" (0 for the bucket root) */
    struct zetl_buf dir; /* "<prefix>/<stream>/" of that key; empty when none */
};

static bool first_key(void *arg, const char *key, uint64_t size, bool is_prefix)
{
    struct s3a_first *f = arg;
    const char *slash;

    (void)size;
    (void)is_prefix;
    if (strlen(key) <= f->base_len || (slash = strchr(key + f->base_len, '/')) == NULL)
        return true; /* an object beside the streams: not ours, look further */
    zetl_buf_reset(&f->dir);
    zetl_buf_append(&f->dir, key, (size_t)(slash - key) + 1);
    return false;
}

/*
 * The stream directories, one listing per stream: each asks for the first key
 * after the previous stream's directory ("<prefix>/zetl_0/" is followed by
 * "<prefix>/zetl_00", its last byte plus one).  Not a delimiter listing:
 * S3-compatible stores (s3rver among them) return no common prefixes two
 * levels up from the objects.
 */
static enum zetl_err s3a_streams(struct zetl_archive *ar, struct zetl_strlist *out,
                                 struct zetl_errbuf *eb)
{
    struct archive_s3 *a = ar->state;
    struct s3a_first f;
    struct zetl_buf base, after;
    enum zetl_err err = ZETL_OK;

    zetl_buf_init(&base, 0);
    zetl_buf_init(&after, 0);
    zetl_buf_init(&f.dir, 0);
    if (a->prefix[0] != '\0')
        zetl_buf_printf(&base, "%s/", a->prefix);
    f.base_len = base.len;
    for (;;) {
        zetl_buf_reset(&f.dir);
        err = zetl_s3_list(a->s3, base.data ? base.data : "", after.len ? after.data : NULL, NULL,
                           first_key, &f, eb);
        if (err != ZETL_OK || f.dir.len == 0)
            break;
        if (after.len > 0 && strcmp(f.dir.data, after.data) <= 0) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "s3 LIST s3://%s/%s: the store ignores start-after", a->bucket,
                               base.data ? base.data : "");
            break;
        }
        zetl_strlist_addn(out, f.dir.data + f.base_len, f.dir.len - f.base_len - 1);
        zetl_buf_reset(&after);
        zetl_buf_append(&after, f.dir.data, f.dir.len);
        after.data[after.len - 1]++; /* '/' + 1: past every key of that stream */
    }
    zetl_buf_release(&f.dir);
    zetl_buf_release(&after);
    zetl_buf_release(&base);
    return err;
}

/*
 * A Redshift COPY manifest: of every data file of the batch (only < 0), or of
 * file number `only` alone (Redshift loads one table shape per COPY).
 */
static char *copy_manifest(const struct archive_s3 *a, const struct zetl_batch *b, const char *name,
                           long only, size_t *len)
{
    json_t *root = json_object(), *entries = json_array();
    struct zetl_buf key, url;
    char *s, *t;

    zetl_buf_init(&key, 0);
    zetl_buf_init(&url, 0);
    for (size_t i = 0; i < b->nfiles; i++) {
        if (only >= 0 && i != (size_t)only)
            continue;
        json_t *e = json_object(), *meta = json_object();

        s3a_key(a, &key, b->stream, name, b->files[i].file);
        zetl_buf_reset(&url);
        zetl_buf_printf(&url, "s3://%s/%s", a->bucket, key.data);
        json_object_set_new(e, "url", json_stringn(url.data, url.len));
        json_object_set_new(e, "mandatory", json_true());
        json_object_set_new(meta, "content_length", json_integer((json_int_t)b->files[i].bytes));
        json_object_set_new(e, "meta", meta);
        json_array_append_new(entries, e);
    }
    json_object_set_new(root, "entries", entries);
    s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    zetl_buf_release(&url);
    zetl_buf_release(&key);
    if (s == NULL) {
        fprintf(stderr, "FATAL:  could not render copy manifest\n");
        abort();
    }
    *len = strlen(s);
    t = zetl_malloc(*len + 2);
    memcpy(t, s, *len);
    t[(*len)++] = '\n';
    t[*len] = '\0';
    free(s);
    return t;
}

static enum zetl_err s3a_put(struct zetl_archive *ar, const struct zetl_batch *b,
                             const char *manifest, size_t len, struct zetl_errbuf *eb)
{
    struct archive_s3 *a = ar->state;
    /* Per data file: the file and its own COPY manifest; then copy.manifest of all. */
    size_t nx = 2 * b->nfiles + 1;
    struct zetl_s3_xfer *x = zetl_calloc(nx, sizeof(*x));
    char **keys = zetl_calloc(nx, sizeof(char *));
    char **paths = zetl_calloc(nx, sizeof(char *));
    char **copies = zetl_calloc(nx, sizeof(char *));
    struct zetl_buf k;
    char name[40];
    bool found;
    enum zetl_err err;

    zetl_buf_init(&k, 0);
    zetl_archive_batch_name(b, name);

    /* A replay after a crash: the batch is in already. */
    s3a_key(a, &k, b->stream, name, ZETL_MANIFEST_NAME);
    if ((err = zetl_s3_head(a->s3, k.data, &found, NULL, eb)) != ZETL_OK)
        goto fail;
    if (found) {
        zetl_debug("archive: batch s3://%s/%s is stored already", a->bucket, k.data);
        goto fail;
    }

    /* Data files and the COPY manifest, several at once; manifest.json only after all. */
    for (size_t i = 0; i < b->nfiles; i++) {
        s3a_key(a, &k, b->stream, name, b->files[i].file);
        keys[i] = zetl_strndup(k.data, k.len);
        zetl_buf_reset(&k);
        zetl_buf_printf(&k, "%s/%s", b->dir, b->files[i].file);
        paths[i] = zetl_strndup(k.data, k.len);
        x[i].key = keys[i];
        x[i].path = paths[i];
        x[i].sha256 = b->files[i].sha256;
        x[i].size = (int64_t)b->files[i].bytes;
    }
    for (size_t i = 0; i <= b->nfiles; i++) {
        size_t j = b->nfiles + i;
        if (i < b->nfiles) {
            s3a_key(a, &k, b->stream, name, b->files[i].file);
            zetl_buf_puts(&k, S3A_FILE_MANIFEST_SUFFIX);
        } else {
            s3a_key(a, &k, b->stream, name, S3A_COPY_MANIFEST);
        }
        keys[j] = zetl_strndup(k.data, k.len);
        copies[j] = copy_manifest(a, b, name, i < b->nfiles ? (long)i : -1, &x[j].len);
        x[j].key = keys[j];
        x[j].data = copies[j];
        x[j].size = -1;
    }
    if ((err = zetl_s3_put(a->s3, x, nx, eb)) != ZETL_OK)
        goto fail;

    s3a_key(a, &k, b->stream, name, ZETL_MANIFEST_NAME);
    memset(x, 0, sizeof(*x));
    x[0].key = k.data;
    x[0].data = manifest;
    x[0].len = len;
    x[0].size = -1;
    err = zetl_s3_put(a->s3, x, 1, eb);

fail:
    for (size_t i = 0; i < nx; i++) {
        free(keys[i]);
        free(paths[i]);
        free(copies[i]);
    }
    free(keys);
    free(paths);
    free(copies);
    free(x);
    zetl_buf_release(&k);
    return err;
}

static enum zetl_err s3a_manifest(struct zetl_archive *ar, const char *stream, const char *name,
                                  struct zetl_manifest *m, struct zetl_errbuf *eb)
{
    struct zetl_buf text;
    enum zetl_err err;

    zetl_buf_init(&text, ZETL_MANIFEST_MAX);
    err = s3a_get_manifest(ar->state, stream, name, &text, m, eb);
    zetl_buf_release(&text);
    return err;
}

/* Keys under one batch prefix and their total size. */
struct s3a_keys {
    struct zetl_strlist keys;
    uint64_t bytes;
    bool overflow;
};

static bool collect_sized(void *arg, const char *key, uint64_t size, bool is_prefix)
{
    struct s3a_keys *k = arg;

    (void)is_prefix;
    if (k->keys.n >= 100000) {
        k->overflow = true; /* a batch has a few files per table: this is not ours */
        return false;
    }
    zetl_strlist_add(&k->keys, key);
    k->bytes += size;
    return true;
}

static enum zetl_err s3a_remove(struct zetl_archive *ar, const char *stream, const char *name,
                                uint64_t *bytes, struct zetl_errbuf *eb)
{
    struct archive_s3 *a = ar->state;
    struct s3a_keys k;
    struct zetl_buf p, man;
    enum zetl_err err;

    *bytes = 0;
    memset(&k, 0, sizeof(k));
    zetl_buf_init(&p, 0);
    zetl_buf_init(&man, 0);
    s3a_key(a, &p, stream, name, NULL);
    s3a_key(a, &man, stream, name, ZETL_MANIFEST_NAME);
    if ((err = zetl_s3_list(a->s3, p.data, NULL, NULL, collect_sized, &k, eb)) != ZETL_OK)
        goto fail;
    if (k.overflow) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "archive batch s3://%s/%s holds more objects than a batch can: not "
                           "removed",
                           a->bucket, p.data);
        goto fail;
    }
    /* The manifest first: from here on the batch no longer counts, whatever happens next. */
    if ((err = zetl_s3_delete(a->s3, man.data, eb)) != ZETL_OK)
        goto fail;
    for (size_t i = 0; i < k.keys.n; i++) {
        if (strcmp(k.keys.items[i], man.data) == 0)
            continue;
        if ((err = zetl_s3_delete(a->s3, k.keys.items[i], eb)) != ZETL_OK)
            goto fail;
    }
    *bytes = k.bytes;
fail:
    zetl_strlist_release(&k.keys);
    zetl_buf_release(&man);
    zetl_buf_release(&p);
    return err;
}

/*
 * A batch prefix without manifest.json below the newest complete batch is
 * a removal a crash cut short (a put in progress is always above it: the
 * stream puts in LSN order and only above what the archive holds).
 */
static enum zetl_err s3a_sweep(struct zetl_archive *ar, const char *stream, uint64_t below_last,
                               size_t *n, uint64_t *bytes, struct zetl_errbuf *eb)
{
    struct s3a_scan sc;
    uint64_t b;
    enum zetl_err err;

    *n = 0;
    *bytes = 0;
    if ((err = scan_stream(ar->state, stream, &sc, eb)) != ZETL_OK)
        return err;
    for (size_t i = 0; i < sc.n; i++) {
        if (sc.b[i].complete || sc.b[i].last >= below_last)
            continue;
        if ((err = s3a_remove(ar, stream, sc.b[i].name, &b, eb)) != ZETL_OK)
            break;
        ++*n;
        *bytes += b;
    }
    free(sc.b);
    return err;
}

/* Removes a fetched copy: <fetch_root>/<stream>-XXXXXX/<name>, parent included. */
static void s3a_fetch_done(struct zetl_archive *ar, const char *dir)
{
    struct zetl_errbuf ignore;
    char *parent = zetl_strdup(dir);
    char *slash = strrchr(parent, '/');

    (void)ar;
    if (slash != NULL)
        *slash = '\0';
    if (zetl_fs_rmtree(parent, &ignore) != ZETL_OK)
        zetl_warn("archive: %s", ignore.msg);
    free(parent);
}

static enum zetl_err s3a_fetch(struct zetl_archive *ar, const char *stream, const char *name,
                               char **dir, struct zetl_errbuf *eb)
{
    struct archive_s3 *a = ar->state;
    struct zetl_buf d, k, text;
    struct zetl_manifest m;
    struct zetl_s3_xfer *x = NULL;
    char **keys = NULL, **paths = NULL;
    bool made = false;
    enum zetl_err err;

    *dir = NULL;
    zetl_buf_init(&d, 0);
    zetl_buf_init(&k, 0);
    zetl_buf_init(&text, ZETL_MANIFEST_MAX);
    /* Every file name in it is checked safe to create here (proto/manifest.h). */
    if ((err = s3a_get_manifest(a, stream, name, &text, &m, eb)) != ZETL_OK)
        goto fail;

    if ((err = zetl_fs_mkdirs(a->fetch_root, eb)) != ZETL_OK)
        goto fail;
    /* <fetch_root>/<stream>-XXXXXX/<name>: unique, and named like the batch it holds. */
    zetl_buf_printf(&d, "%s/%s-XXXXXX", a->fetch_root, stream);
    if (mkdtemp(d.data) == NULL) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not create directory \"%s\": %s", d.data,
                           strerror(errno));
        goto fail;
    }
    made = true;
    zetl_buf_printf(&d, "/%s", name);
    if (mkdir(d.data, 0755) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not create directory \"%s\": %s", d.data,
                           strerror(errno));
        goto fail;
    }
    zetl_buf_reset(&k);
    zetl_buf_printf(&k, "%s/%s", d.data, ZETL_MANIFEST_NAME);
    if ((err = zetl_fs_write_file(k.data, text.data, text.len, eb)) != ZETL_OK)
        goto fail;

    x = zetl_calloc(m.nfiles + 1, sizeof(*x));
    keys = zetl_calloc(m.nfiles + 1, sizeof(char *));
    paths = zetl_calloc(m.nfiles + 1, sizeof(char *));
    for (size_t i = 0; i < m.nfiles; i++) {
        const struct zetl_manifest_file *f = &m.files[i];

        s3a_key(a, &k, stream, name, f->file);
        keys[i] = zetl_strndup(k.data, k.len);
        zetl_buf_reset(&k);
        zetl_buf_printf(&k, "%s/%s", d.data, f->file);
        paths[i] = zetl_strndup(k.data, k.len);
        x[i].key = keys[i];
        x[i].path = paths[i];
        x[i].sha256 = f->sha256;
        x[i].size = (int64_t)f->bytes;
    }
    if ((err = zetl_s3_get(a->s3, x, m.nfiles, eb)) != ZETL_OK)
        goto fail;
    *dir = zetl_strndup(d.data, d.len);

fail:
    if (err != ZETL_OK && made) {
        struct zetl_errbuf ignore;
        char *slash = strrchr(d.data, '/');
        if (slash != NULL && strcmp(slash + 1, name) == 0)
            *slash = '\0'; /* the unique parent */
        zetl_fs_rmtree(d.data, &ignore);
    }
    for (size_t i = 0; keys != NULL && i < m.nfiles; i++) {
        free(keys[i]);
        free(paths[i]);
    }
    free(keys);
    free(paths);
    free(x);
    zetl_manifest_release(&m);
    zetl_buf_release(&text);
    zetl_buf_release(&k);
    zetl_buf_release(&d);
    return err;
}

static void s3a_release(struct zetl_archive *ar)
{
    struct archive_s3 *a = ar->state;

    if (a == NULL)
        return;
    zetl_s3_free(a->s3);
    free(a->fetch_root);
    free(a->prefix);
    free(a->bucket);
    free(a);
    ar->state = NULL;
}

/*
 * Sets up the backend for ar->url and checks the bucket: a missing bucket,
 * denied access, a wrong region or an unreachable endpoint fails here with
 * one line (ZETL_ERR_FATAL, or ZETL_ERR_RETRY for the unreachable endpoint).
 * Uses cfg->archive.s3 and cfg->buffer.dir (where fetched batches are put).
 */
static enum zetl_err s3a_open(struct zetl_archive *ar, const char *rest,
                              const struct zetl_config *cfg, struct zetl_errbuf *eb)
{
    struct archive_s3 *a = zetl_calloc(1, sizeof(*a));
    struct zetl_s3_opts o = {0};
    struct zetl_buf p;
    const char *bdir = cfg->buffer.dir;
    enum zetl_err err;

    (void)rest; /* the URL is parsed whole, scheme included */
    ar->state = a;
    zetl_buf_init(&p, 0);
    if ((err = zetl_s3_parse_url(ar->url, &a->bucket, &a->prefix, eb)) != ZETL_OK)
        goto fail;

    /* Fetched batches go under the buffer directory: the space the user set aside. */
    if (bdir == NULL) {
        const char *tmp = getenv("TMPDIR");
        zetl_buf_printf(&p, "%s/zetl-s3-fetch", tmp && tmp[0] ? tmp : "/tmp");
    } else {
        if ((err = zetl_fs_absolute(bdir, &p, eb)) != ZETL_OK)
            goto fail;
        zetl_buf_puts(&p, "/s3-fetch");
    }
    a->fetch_root = zetl_strndup(p.data, p.len);

    o.region = cfg->archive.s3.region;
    o.endpoint = cfg->archive.s3.endpoint;
    o.path_style = cfg->archive.s3.path_style;
    o.part_size = cfg->archive.s3.part_size;
    if ((err = zetl_s3_new(a->bucket, &o, &a->s3, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "archive %s", ar->url);
        goto fail;
    }
    zetl_buf_reset(&p);
    if (a->prefix[0] != '\0')
        zetl_buf_printf(&p, "%s/", a->prefix);
    if ((err = zetl_s3_check(a->s3, p.data ? p.data : "", eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "archive %s", ar->url);
        goto fail;
    }

fail:
    zetl_buf_release(&p);
    return err;
}

const struct archive_backend zetl_archive_s3_backend = {
    .scheme = "s3",
    .open = s3a_open,
    .last_lsn = s3a_last_lsn,
    .put = s3a_put,
    .list = s3a_list,
    .streams = s3a_streams,
    .fetch = s3a_fetch,
    .fetch_done = s3a_fetch_done,
    .manifest = s3a_manifest,
    .remove = s3a_remove,
    .sweep = s3a_sweep,
    .release = s3a_release,
};
