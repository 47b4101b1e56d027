/*
 * The archive of sealed batches: <root>/<stream>/<first>-<last>/ holding the
 * batch's .csv.zst files and manifest.json.  This file turns a batch into
 * its manifest (proto/manifest.c renders and reads the JSON), names batch
 * directories, and dispatches to the backend of the URL's scheme: one file
 * each, archive_file.c (file://) and archive_s3.c (s3://), behind struct
 * archive_backend.
 */
#include "sinks/archive.h"
#include "sinks/archive_backend.h"

#include "common/buf.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "proto/manifest.h"
#include "proto/pgoutput.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct archive_backend *const backends[] = {
    &zetl_archive_file_backend,
    &zetl_archive_s3_backend,
};

/* ---- manifest ---------------------------------------------------------- */

static const char *arena_time(struct zetl_arena *arena, int64_t pg_usec)
{
    char s[ZETL_BATCH_TIME_LEN];
    size_t n = zetl_batch_format_time(pg_usec, true, s);

    return zetl_arena_strndup(arena, s, n);
}

void zetl_archive_manifest_of(const struct zetl_batch *b, struct zetl_manifest *out)
{
    struct zetl_manifest_file *files;
    struct timespec now;

    zetl_manifest_init(out);
    clock_gettime(CLOCK_REALTIME, &now);
    out->stream = b->stream;
    out->first_lsn = b->first_lsn;
    out->last_lsn = b->last_lsn;
    out->end_lsn = b->end_lsn;
    out->transactions = b->ntxns;
    out->rows = b->nrows;
    out->raw_bytes = b->raw_bytes;
    out->snapshot_rows = b->snapshot_rows;
    out->first_commit_time = arena_time(&out->arena, b->first_commit_time);
    out->last_commit_time = arena_time(&out->arena, b->last_commit_time);
    out->created_at = arena_time(&out->arena, (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000 -
                                                  ZETL_PG_EPOCH_OFFSET_USEC);
    out->tenant_column = b->tenant_column;
    out->nfiles = b->nfiles;
    files = zetl_arena_alloc(&out->arena, (b->nfiles ? b->nfiles : 1) * sizeof(*files));
    for (size_t i = 0; i < b->nfiles; i++) {
        const struct zetl_batch_file *bf = &b->files[i];
        struct zetl_manifest_file *f = &files[i];
        struct zetl_manifest_col *cols;

        memset(f, 0, sizeof(*f));
        f->table = bf->table;
        f->file = bf->file;
        f->rows = bf->rows;
        f->bytes = bf->bytes;
        memcpy(f->sha256, bf->sha256, sizeof(f->sha256));
        f->ntenants = bf->ntenants;
        f->tenants = (const char *const *)bf->tenants;
        f->ncols = bf->ncols;
        cols = zetl_arena_alloc(&out->arena, (bf->ncols ? bf->ncols : 1) * sizeof(*cols));
        for (size_t k = 0; k < bf->ncols; k++) {
            cols[k].name = bf->cols[k].name;
            cols[k].type = bf->cols[k].type;
            cols[k].typoid = bf->cols[k].typoid;
            cols[k].key = bf->cols[k].key;
        }
        f->cols = cols;
    }
    out->files = files;
}

void zetl_archive_manifest(const struct zetl_batch *b, struct zetl_buf *out)
{
    struct zetl_manifest m;

    zetl_archive_manifest_of(b, &m);
    zetl_manifest_write(&m, out);
    zetl_manifest_release(&m);
}

/* ---- batch names -------------------------------------------------------- */

void zetl_archive_batch_name(const struct zetl_batch *b, char name[40])
{
    char first[17], last[17];

    zetl_lsn_to_hex16(b->first_lsn, first);
    zetl_lsn_to_hex16(b->last_lsn, last);
    snprintf(name, 40, "%s-%s", first, last);
}

bool zetl_archive_parse_name(const char *s, size_t n, uint64_t *first, uint64_t *last)
{
    char tmp[34];

    if (n != 33)
        return false;
    for (size_t i = 0; i < 33; i++) {
        char c = s[i];
        if (i == 16 ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
            return false;
    }
    memcpy(tmp, s, 33);
    tmp[16] = '\0';
    tmp[33] = '\0';
    return zetl_lsn_from_hex16(tmp, first) && zetl_lsn_from_hex16(tmp + 17, last);
}

/* ---- public entry points ------------------------------------------------ */

enum zetl_err zetl_archive_open(const struct zetl_config *cfg, struct zetl_archive **out,
                                struct zetl_errbuf *eb)
{
    struct zetl_archive *ar = zetl_calloc(1, sizeof(*ar));
    const char *url = cfg->archive.url ? cfg->archive.url : "";
    enum zetl_err err;

    *out = NULL;
    ar->url = zetl_strdup(url);
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        size_t n = strlen(backends[i]->scheme);

        if (strncmp(url, backends[i]->scheme, n) == 0 && strncmp(url + n, "://", 3) == 0) {
            ar->be = backends[i];
            break;
        }
    }
    if (ar->be == NULL) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE,
                           "unsupported archive url \"%s\": expected file://PATH or s3://BUCKET",
                           url);
        goto fail;
    }
    if ((err = ar->be->open(ar, url + strlen(ar->be->scheme) + 3, cfg, eb)) != ZETL_OK)
        goto fail;
    *out = ar;
    return ZETL_OK;

fail:
    zetl_archive_free(ar);
    return err;
}

void zetl_archive_free(struct zetl_archive *ar)
{
    if (ar == NULL)
        return;
    if (ar->be != NULL)
        ar->be->release(ar);
    free(ar->url);
    free(ar);
}

static enum zetl_err check_stream(const char *stream, struct zetl_errbuf *eb)
{
    if (!zetl_manifest_stream_name_ok(stream))
        return zetl_err_set(eb, ZETL_ERR_USAGE, "invalid stream name \"%s\"", stream);
    return ZETL_OK;
}

enum zetl_err zetl_archive_last_lsn(struct zetl_archive *ar, const char *stream, uint64_t *last_lsn,
                                    uint64_t *end_lsn, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    *last_lsn = *end_lsn = 0;
    if ((err = check_stream(stream, eb)) != ZETL_OK)
        return err;
    return ar->be->last_lsn(ar, stream, last_lsn, end_lsn, eb);
}

enum zetl_err zetl_archive_put(struct zetl_archive *ar, const struct zetl_batch *b,
                               struct zetl_errbuf *eb)
{
    struct zetl_buf text;
    enum zetl_err err;

    if ((err = check_stream(b->stream, eb)) != ZETL_OK)
        return err;
    zetl_buf_init(&text, 0);
    zetl_archive_manifest(b, &text);
    err = ar->be->put(ar, b, text.data, text.len, eb);
    zetl_buf_release(&text);
    return err;
}

enum zetl_err zetl_archive_list(struct zetl_archive *ar, const char *stream, uint64_t after_lsn,
                                struct zetl_strlist *out, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    out->items = NULL;
    out->n = 0;
    if ((err = check_stream(stream, eb)) != ZETL_OK)
        return err;
    return ar->be->list(ar, stream, after_lsn, out, eb);
}

/* A replication slot name: what zetl names its streams (zetl_0, zetl_1, ...). */
static bool stream_dir_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

enum zetl_err zetl_archive_streams(struct zetl_archive *ar, struct zetl_strlist *out,
                                   struct zetl_errbuf *eb)
{
    struct zetl_strlist all = {NULL, 0};
    enum zetl_err err;

    out->items = NULL;
    out->n = 0;
    if ((err = ar->be->streams(ar, &all, eb)) != ZETL_OK)
        goto done;
    for (size_t i = 0; i < all.n; i++)
        if (stream_dir_name(all.items[i]))
            zetl_strlist_add(out, all.items[i]);
    if (out->n > 1)
        qsort(out->items, out->n, sizeof(char *), cmp_str);
done:
    zetl_strlist_release(&all);
    return err;
}

enum zetl_err zetl_archive_read_manifest(struct zetl_archive *ar, const char *stream,
                                         const char *name, struct zetl_manifest *m,
                                         struct zetl_errbuf *eb)
{
    enum zetl_err err;

    if ((err = check_stream(stream, eb)) != ZETL_OK) {
        zetl_manifest_init(m);
        return err;
    }
    return ar->be->manifest(ar, stream, name, m, eb);
}

enum zetl_err zetl_archive_fetch(struct zetl_archive *ar, const char *stream, const char *name,
                                 char **dir, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    *dir = NULL;
    if ((err = check_stream(stream, eb)) != ZETL_OK)
        return err;
    return ar->be->fetch(ar, stream, name, dir, eb);
}

void zetl_archive_fetch_done(struct zetl_archive *ar, char *dir)
{
    if (dir != NULL && ar->be->fetch_done != NULL)
        ar->be->fetch_done(ar, dir);
    free(dir);
}

/* ---- retention ----------------------------------------------------------- */

/*
 * Whether batch `name` is old enough to go: its last commit time, or when a
 * manifest has none its creation time.  A batch without either is kept.
 */
static enum zetl_err prune_old_enough(struct zetl_archive *ar, const char *stream, const char *name,
                                      int64_t before_unix_usec, bool *old, struct zetl_errbuf *eb)
{
    struct zetl_manifest m;
    int64_t t;
    enum zetl_err err;

    *old = false;
    if ((err = ar->be->manifest(ar, stream, name, &m, eb)) != ZETL_OK) {
        zetl_manifest_release(&m);
        return err;
    }
    if (zetl_manifest_parse_time(m.last_commit_time, &t) ||
        zetl_manifest_parse_time(m.created_at, &t))
        *old = t < before_unix_usec;
    else
        zetl_debug("archive: stream %s: batch %s has no commit time: kept", stream, name);
    zetl_manifest_release(&m);
    return ZETL_OK;
}

enum zetl_err zetl_archive_prune(struct zetl_archive *ar, const char *stream,
                                 int64_t before_unix_usec, uint64_t below_lsn,
                                 struct zetl_archive_prune_result *res, struct zetl_errbuf *eb)
{
    struct zetl_strlist names = {NULL, 0};
    uint64_t first, last, newest_last, bytes;
    size_t i = 0;
    enum zetl_err err;

    memset(res, 0, sizeof(*res));
    if ((err = check_stream(stream, eb)) != ZETL_OK)
        return err;
    if ((err = ar->be->list(ar, stream, 0, &names, eb)) != ZETL_OK || names.n == 0)
        goto done;
    if (!zetl_archive_parse_name(names.items[names.n - 1], strlen(names.items[names.n - 1]), &first,
                                 &newest_last)) {
        err =
            zetl_err_set(eb, ZETL_ERR_FATAL, "invalid batch name \"%s\"", names.items[names.n - 1]);
        goto done;
    }
    if ((err = ar->be->sweep(ar, stream, newest_last, &res->leftovers, &res->bytes, eb)) != ZETL_OK)
        goto done;
    /* names.n - 1: the newest batch always stays. */
    for (; i + 1 < names.n; i++) {
        const char *name = names.items[i];
        bool old;

        if (res->removed == ZETL_ARCHIVE_PRUNE_MAX) {
            res->more = true;
            break;
        }
        if (!zetl_archive_parse_name(name, strlen(name), &first, &last) || last >= below_lsn)
            break;
        if ((err = prune_old_enough(ar, stream, name, before_unix_usec, &old, eb)) != ZETL_OK)
            goto done;
        if (!old)
            break;
        if ((err = ar->be->remove(ar, stream, name, &bytes, eb)) != ZETL_OK)
            goto done;
        res->removed++;
        res->bytes += bytes;
        zetl_debug("archive: stream %s: removed batch %s (%llu bytes)", stream, name,
                   (unsigned long long)bytes);
    }
done:
    if (i < names.n)
        snprintf(res->oldest, sizeof(res->oldest), "%s", names.items[i]);
    zetl_strlist_release(&names);
    return err;
}
