/*
 * One file of a batch: the rows of one logical table in one column shape,
 * CSV through a zstd compressor (pooled across batches) into a file of the
 * open batch directory, with the sha256 of what reached the disk and the
 * tenants that have rows in it.  A file name is derived from the table name
 * so that any name, whatever its bytes or case, is a valid and distinct file
 * name on any file system.
 */
#include "sinks/batch_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/mem.h"
#include "proto/relcache.h"

/* ---- column types ------------------------------------------------------ */

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

/* ---- small helpers ---------------------------------------------------- */

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

void zetl_batch_file_free(struct zetl_batch_writer *w, struct bfile *f)
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
enum zetl_err zetl_batch_file_feed(struct bfile *f, const void *p, size_t n, ZSTD_EndDirective mode,
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
void zetl_batch_file_note_tenant(struct bfile *f, const char *tenant)
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
static bool bfile_matches(const struct bfile *f, const struct zetl_batch_target *plan,
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
            rc->key != f->cols[k].key || strcmp(rc->name, f->cols[k].name) != 0 ||
            (rc->type != NULL && strcmp(rc->type, f->cols[k].type) != 0))
            return false;
    }
    return true;
}

static enum zetl_err shape_hash(const struct zetl_batch_target *plan,
                                const struct zetl_relation *rel, uint64_t *out,
                                struct zetl_errbuf *eb)
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
        if (rc->type != NULL)
            h = fnv_bytes(h, rc->type, strlen(rc->type) + 1);
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

static enum zetl_err bfile_create(struct zetl_batch_writer *w, const struct zetl_batch_target *plan,
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
        f->cols[k].type = rc->type ? zetl_strdup(rc->type)
                                   : zetl_batch_type_text(w->relcache, rc->typoid, rc->typmod);
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
    zetl_batch_file_free(w, f);
    return err;
}

/* Finds or creates the file for the row's (table, shape). */
enum zetl_err zetl_batch_file_route(struct zetl_batch_writer *w,
                                    const struct zetl_batch_target *plan,
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

/* Finishes one file: zstd frame end, write, fsync, close. */
enum zetl_err zetl_batch_file_finish(struct bfile *f, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    if ((err = zetl_batch_file_feed(f, NULL, 0, ZSTD_e_end, eb)) != ZETL_OK ||
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
