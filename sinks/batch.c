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
#include "common/sha256.h"
#include "proto/relcache.h"
#include "sinks/csv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

/* Level 1: capture must keep up with the walsender; level 3 costs twice the CPU for ~8% smaller
 * files. */
#define ZETL_BATCH_ZSTD_LEVEL 1
/* 1 MiB window: each open file's compressor stays around 1-2 MB. */
#define ZETL_BATCH_ZSTD_WINDOW_LOG 20
/* A row under construction goes to the compressor once it is this big. */
#define ZETL_BATCH_ROW_FLUSH ((size_t)1 << 20)
/* Cap of the row buffer: the flush threshold plus one quoted 1 GB value. */
#define ZETL_BATCH_ROW_MAX ((size_t)3 << 30)
/* Compressors kept across batches for reuse. */
#define ZETL_BATCH_POOL_MAX 16

/* PostgreSQL type OIDs whose typmod we render (pg_type.dat). */
#define OID_BPCHAR 1042
#define OID_VARCHAR 1043
#define OID_TIME 1083
#define OID_TIMESTAMP 1114
#define OID_TIMESTAMPTZ 1184
#define OID_INTERVAL 1186
#define OID_TIMETZ 1266
#define OID_BIT 1560
#define OID_VARBIT 1562
#define OID_NUMERIC 1700
#define VARHDRSZ 4
#define INTERVAL_FULL_PRECISION 0xFFFF

/* A compressor and its fixed-size output buffer. */
struct zcomp {
    ZSTD_CCtx *cctx;
    unsigned char *obuf;
    size_t ocap;
};

/* One open file of the batch: one logical table in one column shape. */
struct bfile {
    struct bfile *hnext; /* hash chain */
    uint64_t hash;       /* of table + shape */
    char *table;         /* owned */
    char *file;          /* owned: name within the batch directory */
    char *path;          /* owned: full path, for messages */
    size_t ncols;
    struct zetl_batch_col *cols; /* owned */
    int fd;
    struct zcomp zc;
    size_t opos; /* bytes waiting in zc.obuf */
    struct zetl_sha256 sha;
    uint64_t rows;
    uint64_t bytes; /* compressed bytes written */
    /* Tenants with rows here: a list in first-seen order plus an open-addressing set. */
    char **tenants; /* owned strings */
    size_t ntenants, tenants_alloc;
    size_t *tset; /* indexes + 1 into tenants; 0 = empty slot */
    size_t tset_cap;
    size_t last_tenant; /* index of the tenant of the previous row */
};

struct zetl_batch_writer {
    char *stream;                   /* owned */
    char *tenant_column;            /* owned */
    char *stream_dir;               /* owned: <spool_dir>/<stream> */
    struct zetl_relcache *relcache; /* borrowed, may be NULL */

    uint64_t seq;
    char *dir;   /* owned: open-<seq> path once created, else NULL */
    bool broken; /* an I/O failure left the batch unusable until discard */

    struct bfile **files; /* owned, in creation order */
    size_t nfiles, files_alloc;
    struct bfile **buckets;
    size_t nbuckets;
    struct bfile *last; /* file of the previous row */

    uint64_t first_lsn, last_lsn, end_lsn;
    int64_t first_commit_time, last_commit_time;
    uint64_t ntxns, nrows, raw_bytes;
    int64_t opened_ms;

    bool in_txn;
    uint64_t txn_lsn;
    int64_t txn_time;
    uint64_t txn_rows; /* also the _zetl_seq of the next row */
    char lsn_text[24];
    size_t lsn_len;
    char ts_text[ZETL_BATCH_TIME_LEN];
    size_t ts_len;

    struct zetl_buf row;     /* reused for every row */
    struct zetl_buf scratch; /* reused for the _zetl_unchanged array */

    struct zcomp pool[ZETL_BATCH_POOL_MAX];
    size_t npool;
};

/* ---- small helpers ---------------------------------------------------- */

int64_t zetl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

char *zetl_batch_type_text(struct zetl_relcache *relcache, uint32_t typoid, int32_t typmod)
{
    const char *base = zetl_pgtype_name(typoid);
    struct zetl_buf buf;
    char *s;

    if (base == NULL && relcache != NULL)
        base = zetl_relcache_type_name(relcache, typoid);
    zetl_buf_init(&buf, 0);
    if (base == NULL)
        zetl_buf_printf(&buf, "oid:%u", typoid);
    else
        zetl_buf_puts(&buf, base);

    /* Typmod conventions of PostgreSQL's format_type() per type. */
    switch (typoid) {
    case OID_NUMERIC:
        if (typmod >= VARHDRSZ) {
            int32_t m = typmod - VARHDRSZ;
            int precision = (m >> 16) & 0xffff;
            int scale = ((m & 0x7ff) ^ 1024) - 1024; /* PostgreSQL 15 allows a negative scale */
            zetl_buf_printf(&buf, "(%d,%d)", precision, scale);
        }
        break;
    case OID_BPCHAR:
    case OID_VARCHAR:
        if (typmod >= VARHDRSZ)
            zetl_buf_printf(&buf, "(%d)", (int)(typmod - VARHDRSZ));
        break;
    case OID_BIT:
    case OID_VARBIT:
    case OID_TIME:
    case OID_TIMETZ:
    case OID_TIMESTAMP:
    case OID_TIMESTAMPTZ:
        if (typmod >= 0)
            zetl_buf_printf(&buf, "(%d)", (int)typmod);
        break;
    case OID_INTERVAL:
        if (typmod >= 0 && (typmod & 0xffff) != INTERVAL_FULL_PRECISION)
            zetl_buf_printf(&buf, "(%d)", (int)(typmod & 0xffff));
        break;
    default:
        break;
    }
    s = zetl_strndup(buf.data, buf.len);
    zetl_buf_release(&buf);
    return s;
}

/* Writes the whole buffer, retrying short writes and EINTR. */
static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t r = write(fd, c, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
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

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;

    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

#define FNV_SEED UINT64_C(0xcbf29ce484222325)

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

/* ---- compressors ------------------------------------------------------- */

static void zcomp_get(struct zetl_batch_writer *w, struct zcomp *zc)
{
    if (w->npool > 0) {
        *zc = w->pool[--w->npool];
        ZSTD_CCtx_reset(zc->cctx, ZSTD_reset_session_only);
        return;
    }
    zc->cctx = ZSTD_createCCtx();
    if (zc->cctx == NULL) {
        fprintf(stderr, "FATAL:  could not create zstd context\n");
        abort();
    }
    ZSTD_CCtx_setParameter(zc->cctx, ZSTD_c_compressionLevel, ZETL_BATCH_ZSTD_LEVEL);
    ZSTD_CCtx_setParameter(zc->cctx, ZSTD_c_windowLog, ZETL_BATCH_ZSTD_WINDOW_LOG);
    ZSTD_CCtx_setParameter(zc->cctx, ZSTD_c_checksumFlag, 1);
    zc->ocap = ZSTD_CStreamOutSize();
    zc->obuf = zetl_malloc(zc->ocap);
}

static void zcomp_put(struct zetl_batch_writer *w, struct zcomp *zc)
{
    if (zc->cctx == NULL)
        return;
    if (w->npool < ZETL_BATCH_POOL_MAX) {
        w->pool[w->npool++] = *zc;
    } else {
        ZSTD_freeCCtx(zc->cctx);
        free(zc->obuf);
    }
    zc->cctx = NULL;
    zc->obuf = NULL;
}

/* ---- files --------------------------------------------------------------- */

static void bfile_free(struct zetl_batch_writer *w, struct bfile *f)
{
    if (f == NULL)
        return;
    if (f->fd >= 0)
        close(f->fd);
    zcomp_put(w, &f->zc);
    zetl_sha256_release(&f->sha);
    free(f->table);
    free(f->file);
    free(f->path);
    for (size_t i = 0; i < f->ncols; i++) {
        free(f->cols[i].name);
        free(f->cols[i].type);
    }
    free(f->cols);
    for (size_t i = 0; i < f->ntenants; i++)
        free(f->tenants[i]);
    free(f->tenants);
    free(f->tset);
    free(f);
}

static enum zetl_err bfile_flush(struct bfile *f, struct zetl_errbuf *eb)
{
    if (f->opos == 0)
        return ZETL_OK;
    if (write_all(f->fd, f->zc.obuf, f->opos) != 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not write file \"%s\": %s", f->path,
                            strerror(errno));
    zetl_sha256_update(&f->sha, f->zc.obuf, f->opos);
    f->bytes += f->opos;
    f->opos = 0;
    return ZETL_OK;
}

/* Pushes n bytes through the compressor; ZSTD_e_end also finishes the frame. */
static enum zetl_err bfile_feed(struct bfile *f, const void *p, size_t n, ZSTD_EndDirective mode,
                                struct zetl_errbuf *eb)
{
    ZSTD_inBuffer in = {p, n, 0};
    enum zetl_err err;

    for (;;) {
        ZSTD_outBuffer out = {f->zc.obuf, f->zc.ocap, f->opos};
        size_t r = ZSTD_compressStream2(f->zc.cctx, &out, &in, mode);

        f->opos = out.pos;
        if (ZSTD_isError(r))
            return zetl_err_set(eb, ZETL_ERR_FATAL, "could not compress file \"%s\": %s", f->path,
                                ZSTD_getErrorName(r));
        if (f->opos == f->zc.ocap && (err = bfile_flush(f, eb)) != ZETL_OK)
            return err;
        if (mode == ZSTD_e_end ? r == 0 : in.pos == in.size)
            return ZETL_OK;
    }
}

static size_t tenant_slot(const struct bfile *f, const char *tenant, uint64_t h)
{
    size_t mask = f->tset_cap - 1;
    size_t i = (size_t)h & mask;

    while (f->tset[i] != 0 && strcmp(f->tenants[f->tset[i] - 1], tenant) != 0)
        i = (i + 1) & mask;
    return i;
}

/* Records that `tenant` has rows in f. */
static void bfile_note_tenant(struct bfile *f, const char *tenant)
{
    size_t len, i;
    uint64_t h;

    if (f->ntenants > 0 && strcmp(f->tenants[f->last_tenant], tenant) == 0)
        return;
    len = strlen(tenant);
    h = fnv_bytes(FNV_SEED, tenant, len);
    if (f->tset_cap == 0) {
        f->tset_cap = 16;
        f->tset = zetl_calloc(f->tset_cap, sizeof(*f->tset));
    }
    i = tenant_slot(f, tenant, h);
    if (f->tset[i] != 0) {
        f->last_tenant = f->tset[i] - 1;
        return;
    }
    if (f->ntenants == f->tenants_alloc) {
        f->tenants_alloc = f->tenants_alloc ? f->tenants_alloc * 2 : 8;
        f->tenants = zetl_realloc(f->tenants, f->tenants_alloc * sizeof(*f->tenants));
    }
    f->tenants[f->ntenants] = zetl_strndup(tenant, len);
    f->last_tenant = f->ntenants++;
    f->tset[i] = f->ntenants;
    if (f->ntenants * 2 > f->tset_cap) {
        /* Keep the set at most half full. */
        size_t *old = f->tset, oldcap = f->tset_cap;
        f->tset_cap *= 2;
        f->tset = zetl_calloc(f->tset_cap, sizeof(*f->tset));
        for (size_t k = 0; k < oldcap; k++) {
            if (old[k] == 0)
                continue;
            const char *t = f->tenants[old[k] - 1];
            f->tset[tenant_slot(f, t, fnv_bytes(FNV_SEED, t, strlen(t)))] = old[k];
        }
        free(old);
    }
}

/* True when rows of (plan, rel) belong in f: same table, same kept columns. */
static bool bfile_matches(const struct bfile *f, const struct zetl_table_plan *plan,
                          const struct zetl_relation *rel)
{
    if (f->ncols != plan->nout || strcmp(f->table, plan->table) != 0)
        return false;
    for (size_t k = 0; k < f->ncols; k++) {
        uint16_t src = plan->out_index[k];
        const struct zetl_relcol *rc;

        if (src >= rel->ncols)
            return false;
        rc = &rel->cols[src];
        if (rc->typoid != f->cols[k].typoid || rc->typmod != f->cols[k].typmod ||
            rc->key != f->cols[k].key || strcmp(rc->name, f->cols[k].name) != 0)
            return false;
    }
    return true;
}

static enum zetl_err shape_hash(const struct zetl_table_plan *plan, const struct zetl_relation *rel,
                                uint64_t *out, struct zetl_errbuf *eb)
{
    uint64_t h = fnv_bytes(FNV_SEED, plan->table, strlen(plan->table) + 1);

    for (size_t k = 0; k < plan->nout; k++) {
        uint16_t src = plan->out_index[k];
        const struct zetl_relcol *rc;

        if (src >= rel->ncols)
            return zetl_err_set(eb, ZETL_ERR_FATAL,
                                "table plan of \"%s\" names column %u but the relation has %u",
                                plan->table, (unsigned)src, (unsigned)rel->ncols);
        rc = &rel->cols[src];
        h = fnv_bytes(h, rc->name, strlen(rc->name) + 1);
        h = fnv_bytes(h, &rc->typoid, sizeof(rc->typoid));
        h = fnv_bytes(h, &rc->typmod, sizeof(rc->typmod));
        h = fnv_bytes(h, &rc->key, sizeof(rc->key));
    }
    *out = h;
    return ZETL_OK;
}

/*
 * File names: the table name with every byte outside [A-Za-z0-9_.-]
 * percent-encoded, a leading '.' too (no hidden files, no "." or ".."), so
 * any table name is a valid file name on any file system.
 */
static void safe_name(struct zetl_buf *out, const char *table)
{
    static const char hex[] = "0123456789ABCDEF";

    if (table[0] == '\0')
        zetl_buf_putc(out, '%'); /* impossible in PostgreSQL; still a unique name */
    for (const unsigned char *p = (const unsigned char *)table; *p; p++) {
        bool keep = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
                    (*p == '.' && p != (const unsigned char *)table);
        if (keep) {
            zetl_buf_putc(out, (char)*p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            zetl_buf_append(out, e, 3);
        }
    }
}

static bool file_name_taken(const struct zetl_batch_writer *w, const char *name)
{
    /* Case-insensitive: "Users" and "users" must not collide on macOS or Windows. */
    for (size_t i = 0; i < w->nfiles; i++)
        if (strcasecmp(w->files[i]->file, name) == 0)
            return true;
    return false;
}

static void buckets_insert(struct zetl_batch_writer *w, struct bfile *f)
{
    if (w->nfiles > w->nbuckets) {
        size_t n = w->nbuckets ? w->nbuckets * 2 : 64;
        struct bfile **b = zetl_calloc(n, sizeof(*b));
        for (size_t i = 0; i < w->nfiles; i++) {
            struct bfile *g = w->files[i];
            if (g == f)
                continue;
            g->hnext = b[g->hash & (n - 1)];
            b[g->hash & (n - 1)] = g;
        }
        free(w->buckets);
        w->buckets = b;
        w->nbuckets = n;
    }
    f->hnext = w->buckets[f->hash & (w->nbuckets - 1)];
    w->buckets[f->hash & (w->nbuckets - 1)] = f;
}

static enum zetl_err bfile_create(struct zetl_batch_writer *w, const struct zetl_table_plan *plan,
                                  const struct zetl_relation *rel, uint64_t hash,
                                  struct bfile **out, struct zetl_errbuf *eb)
{
    struct bfile *f = zetl_calloc(1, sizeof(*f));
    struct zetl_buf name;
    size_t base_len, shapes = 0;
    enum zetl_err err;

    f->fd = -1;
    f->hash = hash;
    f->table = zetl_strdup(plan->table);
    zetl_buf_init(&name, 0);

    /* The n-th shape of a table in this batch is "<safe>.<n>.csv.zst" (n >= 2). */
    for (size_t i = 0; i < w->nfiles; i++)
        if (strcmp(w->files[i]->table, plan->table) == 0)
            shapes++;
    safe_name(&name, plan->table);
    base_len = name.len;
    for (size_t n = shapes + 1;; n++) {
        name.len = base_len;
        if (n == 1)
            zetl_buf_puts(&name, ".csv.zst");
        else
            zetl_buf_printf(&name, ".%zu.csv.zst", n);
        if (!file_name_taken(w, name.data))
            break;
    }
    f->file = zetl_strndup(name.data, name.len);
    zetl_buf_reset(&name);
    zetl_buf_printf(&name, "%s/%s", w->dir, f->file);
    f->path = zetl_strndup(name.data, name.len);
    zetl_buf_release(&name);

    f->ncols = plan->nout;
    f->cols = zetl_calloc(f->ncols ? f->ncols : 1, sizeof(*f->cols));
    for (size_t k = 0; k < f->ncols; k++) {
        const struct zetl_relcol *rc = &rel->cols[plan->out_index[k]];
        f->cols[k].name = zetl_strdup(rc->name);
        f->cols[k].type = zetl_batch_type_text(w->relcache, rc->typoid, rc->typmod);
        f->cols[k].typoid = rc->typoid;
        f->cols[k].typmod = rc->typmod;
        f->cols[k].key = rc->key;
    }

    f->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not create file \"%s\": %s", f->path,
                           strerror(errno));
        goto fail;
    }
    zcomp_get(w, &f->zc);
    zetl_sha256_init(&f->sha);

    if (w->nfiles == w->files_alloc) {
        w->files_alloc = w->files_alloc ? w->files_alloc * 2 : 8;
        w->files = zetl_realloc(w->files, w->files_alloc * sizeof(*w->files));
    }
    w->files[w->nfiles++] = f;
    buckets_insert(w, f);
    *out = f;
    return ZETL_OK;

fail:
    bfile_free(w, f);
    return err;
}

/* Finds or creates the file for the row's (table, shape). */
static enum zetl_err route(struct zetl_batch_writer *w, const struct zetl_table_plan *plan,
                           const struct zetl_relation *rel, struct bfile **out,
                           struct zetl_errbuf *eb)
{
    uint64_t h = 0;
    enum zetl_err err;

    if (w->last != NULL && bfile_matches(w->last, plan, rel)) {
        *out = w->last;
        return ZETL_OK;
    }
    if ((err = shape_hash(plan, rel, &h, eb)) != ZETL_OK)
        return err;
    if (w->nbuckets > 0)
        for (struct bfile *f = w->buckets[h & (w->nbuckets - 1)]; f; f = f->hnext)
            if (f->hash == h && bfile_matches(f, plan, rel)) {
                *out = w->last = f;
                return ZETL_OK;
            }
    if ((err = bfile_create(w, plan, rel, h, out, eb)) != ZETL_OK)
        return err;
    w->last = *out;
    return ZETL_OK;
}

/* ---- batch state ------------------------------------------------------- */

/* Drops the files of the open batch (closing them) and starts a new one. */
static void batch_reset(struct zetl_batch_writer *w)
{
    for (size_t i = 0; i < w->nfiles; i++)
        bfile_free(w, w->files[i]);
    w->nfiles = 0;
    if (w->nbuckets)
        memset(w->buckets, 0, w->nbuckets * sizeof(*w->buckets));
    w->last = NULL;
    free(w->dir);
    w->dir = NULL;
    w->seq++;
    w->first_lsn = w->last_lsn = w->end_lsn = 0;
    w->first_commit_time = w->last_commit_time = 0;
    w->ntxns = w->nrows = w->raw_bytes = 0;
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
    const struct zetl_table_plan *plan = row->plan;
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
    if ((err = route(w, plan, row->rel, &f, eb)) != ZETL_OK)
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
    p = put_u64(p, w->txn_rows);
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
            if ((err = bfile_feed(f, buf->data, buf->len, ZSTD_e_continue, eb)) != ZETL_OK)
                goto fail;
            w->raw_bytes += buf->len;
            zetl_buf_reset(buf);
        }
    }
    zetl_buf_putc(buf, '\n');
    if ((err = bfile_feed(f, buf->data, buf->len, ZSTD_e_continue, eb)) != ZETL_OK)
        goto fail;
    w->raw_bytes += buf->len;
    bfile_note_tenant(f, plan->tenant);
    f->rows++;
    w->txn_rows++;
    return ZETL_OK;

fail:
    /* Part of the row may be in the file already: the batch can only be discarded. */
    w->broken = true;
    return err;
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

uint64_t zetl_batch_pending_rows(const struct zetl_batch_writer *w)
{
    return w->nrows;
}

bool zetl_batch_in_txn(const struct zetl_batch_writer *w)
{
    return w->in_txn;
}

/* Finishes one file: zstd frame end, write, fsync, close. */
static enum zetl_err bfile_finish(struct bfile *f, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    if ((err = bfile_feed(f, NULL, 0, ZSTD_e_end, eb)) != ZETL_OK ||
        (err = bfile_flush(f, eb)) != ZETL_OK)
        return err;
    if (fsync(f->fd) != 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not fsync file \"%s\": %s", f->path,
                            strerror(errno));
    if (close(f->fd) != 0) {
        f->fd = -1;
        return zetl_err_set(eb, ZETL_ERR_IO, "could not close file \"%s\": %s", f->path,
                            strerror(errno));
    }
    f->fd = -1;
    return ZETL_OK;
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
        if ((err = bfile_finish(w->files[i], eb)) != ZETL_OK)
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
