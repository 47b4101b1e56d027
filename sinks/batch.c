/*
 * The batcher: committed transactions streamed, row by row, as CSV through
 * one zstd compressor per (table, column shape) into files of a spool
 * directory <spool_dir>/<stream>/open-<seq>/, sealed (fsynced, renamed to
 * sealed-<seq>) when a limit is reached.  Nothing of a row outlives the call
 * that adds it: memory is the compressors plus one reused row buffer.
 */
#include "sinks/batch.h"

#include "common/buf.h"
#include "common/fs.h"
#include "common/mem.h"
#include "common/time.h"
#include "sinks/batch_file.h"
#include "sinks/csv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A row under construction goes to the compressor once it is this big. */
#define ZETL_BATCH_ROW_FLUSH ((size_t)1 << 20)
/* Cap of the row buffer: the flush threshold plus one quoted 1 GB value. */
#define ZETL_BATCH_ROW_MAX ((size_t)3 << 30)

/* ---- small helpers ---------------------------------------------------- */

size_t zetl_batch_format_time(int64_t pg_usec, bool iso, char out[ZETL_BATCH_TIME_LEN])
{
    int64_t unix_usec, secs, usec;
    time_t t;
    struct tm tm;
    int n;

    if (pg_usec > INT64_MAX - ZETL_PG_EPOCH_OFFSET_USEC)
        pg_usec = INT64_MAX - ZETL_PG_EPOCH_OFFSET_USEC;
    unix_usec = pg_usec + ZETL_PG_EPOCH_OFFSET_USEC;
    secs = unix_usec / 1000000;
    usec = unix_usec % 1000000;
    if (usec < 0) {
        usec += 1000000;
        secs--;
    }
    t = (time_t)secs;
    if (gmtime_r(&t, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    n = snprintf(out, ZETL_BATCH_TIME_LEN, "%04d-%02d-%02d%c%02d:%02d:%02d.%06d%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, iso ? 'T' : ' ', tm.tm_hour,
                 tm.tm_min, tm.tm_sec, (int)usec, iso ? "Z" : "+00");
    return n < 0 ? 0 : (size_t)n;
}

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc, saved;

    if (fd < 0)
        return -1;
    rc = fsync(fd);
    saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Removes a directory holding only plain files (a spool batch directory). */
static void remove_flat_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    struct zetl_buf p;

    if (d == NULL)
        return;
    zetl_buf_init(&p, 0);
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        zetl_buf_reset(&p);
        zetl_buf_printf(&p, "%s/%s", path, de->d_name);
        unlink(p.data);
    }
    closedir(d);
    zetl_buf_release(&p);
    rmdir(path);
}

static bool stream_name_valid(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Appends the decimal digits of v. */
static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* ---- batch state ------------------------------------------------------- */

/* Drops the files of the open batch (closing them) and starts a new one. */
static void batch_reset(struct zetl_batch_writer *w)
{
    for (size_t i = 0; i < w->nfiles; i++)
        zetl_batch_file_free(w, w->files[i]);
    w->nfiles = 0;
    if (w->nbuckets)
        memset(w->buckets, 0, w->nbuckets * sizeof(*w->buckets));
    w->last = NULL;
    free(w->dir);
    w->dir = NULL;
    w->seq++;
    w->first_lsn = w->last_lsn = w->end_lsn = 0;
    w->first_commit_time = w->last_commit_time = 0;
    w->ntxns = w->nrows = w->raw_bytes = w->snapshot_rows = 0;
    w->nsnapshot_lsns = 0;
    w->opened_ms = 0;
    w->in_txn = false;
    w->txn_rows = 0;
    w->broken = false;
}

void zetl_batch_free(struct zetl_batch *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->nfiles; i++) {
        struct zetl_batch_file *bf = &b->files[i];
        free(bf->table);
        free(bf->file);
        for (size_t k = 0; k < bf->ncols; k++) {
            free(bf->cols[k].name);
            free(bf->cols[k].type);
        }
        free(bf->cols);
        for (size_t k = 0; k < bf->ntenants; k++)
            free(bf->tenants[k]);
        free(bf->tenants);
    }
    free(b->files);
    free(b->snapshot_lsns);
    free(b->stream);
    free(b->dir);
    free(b->tenant_column);
    free(b);
}

enum zetl_err zetl_batch_writer_new(const char *spool_dir, const char *stream,
                                    const char *tenant_column, struct zetl_relcache *relcache,
                                    struct zetl_batch_writer **out, struct zetl_errbuf *eb)
{
    struct zetl_batch_writer *w = NULL;
    struct zetl_buf p;
    enum zetl_err err;
    DIR *d = NULL;
    struct dirent *de;
    uint64_t maxseq = 0;

    *out = NULL;
    zetl_buf_init(&p, 0);
    if (!stream_name_valid(stream)) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE, "invalid stream name \"%s\"", stream);
        goto fail;
    }
    w = zetl_calloc(1, sizeof(*w));
    w->stream = zetl_strdup(stream);
    w->tenant_column = zetl_strdup(tenant_column ? tenant_column : "tenant_id");
    w->relcache = relcache;
    zetl_buf_init(&w->row, ZETL_BATCH_ROW_MAX);
    zetl_buf_init(&w->scratch, 0);
    zetl_buf_printf(&p, "%s/%s", spool_dir, stream);
    w->stream_dir = zetl_strndup(p.data, p.len);

    if ((err = zetl_fs_mkdirs(w->stream_dir, eb)) != ZETL_OK)
        goto fail;
    if (access(w->stream_dir, W_OK | X_OK) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not write directory \"%s\": %s", w->stream_dir,
                           strerror(errno));
        goto fail;
    }

    /*
     * An open-<seq> directory left by a crash was never sealed: its
     * transactions come again from the slot, so it goes.  Sealed ones stay
     * for the caller; new batches number after all of them.
     */
    d = opendir(w->stream_dir);
    if (d == NULL) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not open directory \"%s\": %s", w->stream_dir,
                           strerror(errno));
        goto fail;
    }
    while ((de = readdir(d)) != NULL) {
        const char *num = NULL;
        char *end;
        unsigned long long v;

        if (strncmp(de->d_name, "open-", 5) == 0)
            num = de->d_name + 5;
        else if (strncmp(de->d_name, "sealed-", 7) == 0)
            num = de->d_name + 7;
        if (num == NULL || *num < '0' || *num > '9')
            continue;
        errno = 0;
        v = strtoull(num, &end, 10);
        if (errno != 0 || *end != '\0')
            continue;
        if (v > maxseq)
            maxseq = v;
        if (num == de->d_name + 5) {
            zetl_buf_reset(&p);
            zetl_buf_printf(&p, "%s/%s", w->stream_dir, de->d_name);
            remove_flat_dir(p.data);
        }
    }
    closedir(d);
    w->seq = maxseq + 1;
    zetl_buf_release(&p);
    *out = w;
    return ZETL_OK;

fail:
    zetl_buf_release(&p);
    zetl_batch_writer_free(w);
    return err;
}

void zetl_batch_writer_free(struct zetl_batch_writer *w)
{
    if (w == NULL)
        return;
    zetl_batch_discard(w);
    for (size_t i = 0; i < w->npool; i++) {
        ZSTD_freeCCtx(w->pool[i].cctx);
        free(w->pool[i].obuf);
    }
    free(w->files);
    free(w->buckets);
    free(w->snapshot_lsns);
    free(w->dir);
    free(w->stream);
    free(w->tenant_column);
    free(w->stream_dir);
    zetl_buf_release(&w->row);
    zetl_buf_release(&w->scratch);
    free(w);
}

enum zetl_err zetl_batch_begin_txn(struct zetl_batch_writer *w, uint64_t commit_lsn,
                                   int64_t commit_time, struct zetl_errbuf *eb)
{
    if (w->broken)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "batch %" PRIu64 " failed earlier; discard it",
                            w->seq);
    if (w->in_txn)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "a transaction is already open in the batch");
    if (w->dir == NULL) {
        struct zetl_buf p;

        zetl_buf_init(&p, 0);
        zetl_buf_printf(&p, "%s/open-%" PRIu64, w->stream_dir, w->seq);
        if (mkdir(p.data, 0755) != 0) {
            enum zetl_err err = zetl_err_set(
                eb, ZETL_ERR_IO, "could not create directory \"%s\": %s", p.data, strerror(errno));
            zetl_buf_release(&p);
            return err;
        }
        w->dir = zetl_strndup(p.data, p.len);
        zetl_buf_release(&p);
    }
    if (w->ntxns == 0) {
        w->first_lsn = commit_lsn;
        w->first_commit_time = commit_time;
        w->opened_ms = zetl_now_ms();
    }
    w->in_txn = true;
    w->txn_lsn = commit_lsn;
    w->txn_time = commit_time;
    w->txn_rows = 0;
    w->seq_base = 0;
    w->lsn_len = (size_t)(put_u64(w->lsn_text, commit_lsn) - w->lsn_text);
    w->ts_len = zetl_batch_format_time(commit_time, false, w->ts_text);
    return ZETL_OK;
}

/* Builds the _zetl_unchanged field ("{2,5}", CSV-quoted) in w->scratch; empty when none. */
static void unchanged_field(struct zetl_batch_writer *w, const struct zetl_value *values, size_t n)
{
    char num[24];
    bool any = false;

    zetl_buf_reset(&w->scratch);
    for (size_t k = 0; k < n; k++) {
        if (values[k].kind != ZETL_COL_UNCHANGED_TOAST)
            continue;
        zetl_buf_putc(&w->scratch, any ? ',' : '{');
        zetl_buf_append(&w->scratch, num, (size_t)(put_u64(num, k) - num));
        any = true;
    }
    if (any)
        zetl_buf_putc(&w->scratch, '}');
}

enum zetl_err zetl_batch_add(struct zetl_batch_writer *w, const struct zetl_row *row,
                             struct zetl_errbuf *eb)
{
    const struct zetl_batch_target *plan = &row->target;
    struct zetl_buf *buf = &w->row;
    struct bfile *f = NULL;
    enum zetl_err err;
    char *p;

    if (w->broken)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "batch %" PRIu64 " failed earlier; discard it",
                            w->seq);
    if (!w->in_txn)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "change outside of a transaction");
    if (plan == NULL || row->rel == NULL || plan->table == NULL || plan->tenant == NULL ||
        (row->values == NULL && row->op != ZETL_OP_TRUNCATE))
        return zetl_err_set(eb, ZETL_ERR_FATAL, "incomplete change for the batch");
    switch (row->op) {
    case ZETL_OP_INSERT:
    case ZETL_OP_UPDATE:
    case ZETL_OP_DELETE:
    case ZETL_OP_BEFORE:
    case ZETL_OP_TRUNCATE:
        break;
    default:
        return zetl_err_set(eb, ZETL_ERR_FATAL, "unknown change kind %d", (int)row->op);
    }
    if ((err = zetl_batch_file_route(w, plan, row->rel, &f, eb)) != ZETL_OK)
        goto fail;

    /* Meta columns: _zetl_op,_zetl_lsn,_zetl_seq,_zetl_commit_ts,_zetl_unchanged,tenant */
    zetl_buf_reset(buf);
    if (!zetl_buf_reserve(buf, 4 + w->lsn_len + 20 + w->ts_len + 8)) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "row buffer is full");
        goto fail;
    }
    p = buf->data;
    *p++ = (char)row->op;
    *p++ = ',';
    memcpy(p, w->lsn_text, w->lsn_len);
    p += w->lsn_len;
    *p++ = ',';
    p = put_u64(p, w->seq_base + w->txn_rows);
    *p++ = ',';
    memcpy(p, w->ts_text, w->ts_len);
    p += w->ts_len;
    *p++ = ',';
    buf->len = (size_t)(p - buf->data);
    if (row->values != NULL) {
        unchanged_field(w, row->values, plan->nout);
        if (w->scratch.len > 0)
            zetl_csv_append_field(buf, w->scratch.data, w->scratch.len);
    }
    zetl_buf_putc(buf, ',');
    if (!zetl_csv_append_field(buf, plan->tenant, strlen(plan->tenant))) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "row buffer is full");
        goto fail;
    }

    for (size_t k = 0; k < plan->nout; k++) {
        const struct zetl_value *v = row->values ? &row->values[k] : NULL;
        bool ok = zetl_buf_putc(buf, ',');

        if (v != NULL && v->kind == ZETL_COL_TEXT)
            ok = ok && zetl_csv_append_field(buf, v->val.len ? v->val.ptr : "", v->val.len);
        else if (v != NULL && v->kind != ZETL_COL_NULL && v->kind != ZETL_COL_UNCHANGED_TOAST) {
            err = zetl_err_set(eb, ZETL_ERR_FATAL, "unexpected value kind '%c' in column \"%s\"",
                               v->kind, f->cols[k].name);
            goto fail;
        }
        if (!ok) {
            err = zetl_err_set(eb, ZETL_ERR_FATAL, "row of \"%s\" is larger than %zu bytes",
                               plan->table, buf->max);
            goto fail;
        }
        /* A huge row goes to the compressor in pieces rather than growing the buffer. */
        if (buf->len >= ZETL_BATCH_ROW_FLUSH) {
            if ((err = zetl_batch_file_feed(f, buf->data, buf->len, ZSTD_e_continue, eb)) !=
                ZETL_OK)
                goto fail;
            w->raw_bytes += buf->len;
            zetl_buf_reset(buf);
        }
    }
    zetl_buf_putc(buf, '\n');
    if ((err = zetl_batch_file_feed(f, buf->data, buf->len, ZSTD_e_continue, eb)) != ZETL_OK)
        goto fail;
    w->raw_bytes += buf->len;
    zetl_batch_file_note_tenant(f, plan->tenant);
    f->rows++;
    w->txn_rows++;
    return ZETL_OK;

fail:
    /* Part of the row may be in the file already: the batch can only be discarded. */
    w->broken = true;
    return err;
}

void zetl_batch_note_snapshot_rows(struct zetl_batch_writer *w, uint64_t n)
{
    w->snapshot_rows += n;
    if (n == 0 || (w->nsnapshot_lsns > 0 && w->snapshot_lsns[w->nsnapshot_lsns - 1] == w->txn_lsn))
        return;
    if (w->nsnapshot_lsns == w->snapshot_lsns_alloc) {
        w->snapshot_lsns_alloc = w->snapshot_lsns_alloc ? 2 * w->snapshot_lsns_alloc : 8;
        w->snapshot_lsns =
            zetl_realloc(w->snapshot_lsns, w->snapshot_lsns_alloc * sizeof(*w->snapshot_lsns));
    }
    w->snapshot_lsns[w->nsnapshot_lsns++] = w->txn_lsn;
}

void zetl_batch_set_next_seq(struct zetl_batch_writer *w, uint64_t seq)
{
    w->seq_base = seq - w->txn_rows;
}

enum zetl_err zetl_batch_end_txn(struct zetl_batch_writer *w, uint64_t end_lsn,
                                 struct zetl_errbuf *eb)
{
    if (w->broken)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "batch %" PRIu64 " failed earlier; discard it",
                            w->seq);
    if (!w->in_txn)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "no transaction is open in the batch");
    w->in_txn = false;
    w->ntxns++;
    w->nrows += w->txn_rows;
    w->txn_rows = 0;
    w->last_lsn = w->txn_lsn;
    w->last_commit_time = w->txn_time;
    w->end_lsn = end_lsn;
    return ZETL_OK;
}

bool zetl_batch_should_seal(const struct zetl_batch_writer *w, uint64_t max_rows,
                            uint64_t max_bytes, uint64_t max_age_ms, int64_t now_ms)
{
    if (w->in_txn || w->broken || w->ntxns == 0)
        return false;
    if (max_rows > 0 && w->nrows >= max_rows)
        return true;
    if (max_bytes > 0 && w->raw_bytes >= max_bytes)
        return true;
    return max_age_ms > 0 && now_ms - w->opened_ms >= 0 &&
           (uint64_t)(now_ms - w->opened_ms) >= max_age_ms;
}

int64_t zetl_batch_seal_deadline(const struct zetl_batch_writer *w, uint64_t max_age_ms)
{
    if (w->in_txn || w->broken || w->ntxns == 0 || max_age_ms == 0)
        return -1;
    return w->opened_ms + (int64_t)max_age_ms;
}

uint64_t zetl_batch_pending_rows(const struct zetl_batch_writer *w)
{
    return w->nrows;
}

bool zetl_batch_in_txn(const struct zetl_batch_writer *w)
{
    return w->in_txn;
}

enum zetl_err zetl_batch_seal(struct zetl_batch_writer *w, struct zetl_batch **out,
                              struct zetl_errbuf *eb)
{
    struct zetl_batch *b = NULL;
    struct zetl_buf p;
    enum zetl_err err;

    *out = NULL;
    zetl_buf_init(&p, 0);
    if (w->broken)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "batch %" PRIu64 " failed earlier; discard it",
                            w->seq);
    if (w->in_txn)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "cannot seal a batch inside a transaction");
    if (w->ntxns == 0)
        return ZETL_OK;

    for (size_t i = 0; i < w->nfiles; i++)
        if ((err = zetl_batch_file_finish(w->files[i], eb)) != ZETL_OK)
            goto fail;
    if (fsync_path(w->dir) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not fsync directory \"%s\": %s", w->dir,
                           strerror(errno));
        goto fail;
    }
    zetl_buf_printf(&p, "%s/sealed-%" PRIu64, w->stream_dir, w->seq);
    if (rename(w->dir, p.data) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not rename directory \"%s\" to \"%s\": %s",
                           w->dir, p.data, strerror(errno));
        goto fail;
    }
    if (fsync_path(w->stream_dir) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not fsync directory \"%s\": %s", w->stream_dir,
                           strerror(errno));
        /* The directory is renamed already: discard must find it under its new name. */
        free(w->dir);
        w->dir = zetl_strndup(p.data, p.len);
        goto fail;
    }

    b = zetl_calloc(1, sizeof(*b));
    b->stream = zetl_strdup(w->stream);
    b->dir = zetl_strndup(p.data, p.len);
    b->seq = w->seq;
    b->first_lsn = w->first_lsn;
    b->last_lsn = w->last_lsn;
    b->end_lsn = w->end_lsn;
    b->first_commit_time = w->first_commit_time;
    b->last_commit_time = w->last_commit_time;
    b->ntxns = w->ntxns;
    b->nrows = w->nrows;
    b->raw_bytes = w->raw_bytes;
    b->snapshot_rows = w->snapshot_rows;
    if (w->nsnapshot_lsns > 0) {
        b->snapshot_lsns = zetl_malloc(w->nsnapshot_lsns * sizeof(*b->snapshot_lsns));
        memcpy(b->snapshot_lsns, w->snapshot_lsns, w->nsnapshot_lsns * sizeof(*b->snapshot_lsns));
        b->nsnapshot_lsns = w->nsnapshot_lsns;
    }
    b->tenant_column = zetl_strdup(w->tenant_column);
    b->nfiles = w->nfiles;
    b->files = zetl_calloc(w->nfiles ? w->nfiles : 1, sizeof(*b->files));
    for (size_t i = 0; i < w->nfiles; i++) {
        struct bfile *f = w->files[i];
        struct zetl_batch_file *bf = &b->files[i];

        /* Ownership of names, columns and tenants moves to the batch. */
        bf->table = f->table;
        bf->file = f->file;
        bf->ncols = f->ncols;
        bf->cols = f->cols;
        bf->rows = f->rows;
        bf->bytes = f->bytes;
        zetl_sha256_final_hex(&f->sha, bf->sha256);
        bf->ntenants = f->ntenants;
        bf->tenants = f->tenants;
        f->table = f->file = NULL;
        f->cols = NULL;
        f->ncols = 0;
        f->tenants = NULL;
        f->ntenants = 0;
    }
    zetl_buf_release(&p);
    batch_reset(w);
    *out = b;
    return ZETL_OK;

fail:
    zetl_buf_release(&p);
    w->broken = true;
    return err;
}

void zetl_batch_discard(struct zetl_batch_writer *w)
{
    for (size_t i = 0; i < w->nfiles; i++) {
        struct bfile *f = w->files[i];
        if (f->fd >= 0) {
            close(f->fd);
            f->fd = -1;
        }
    }
    if (w->dir != NULL)
        remove_flat_dir(w->dir);
    if (w->dir != NULL || w->nfiles > 0 || w->in_txn || w->ntxns > 0)
        batch_reset(w);
}
