/*
 * Reads the commit LSN and commit time of every row of an archived batch
 * (CSV columns 2 and 4 of docs/archive-format.md), for a replay that must
 * turn a time into the LSN of a transaction.  Files are decompressed in
 * bounded chunks and parsed as they come, so memory does not grow with the
 * file; only the two meta fields of the current record are kept.
 */
#include "sinks/archive.h"

#include "common/buf.h"
#include "common/mem.h"
#include "common/time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define SCAN_READ_CHUNK ((size_t)64 << 10)
/* Largest zstd window accepted (the archive writes 1 MiB). */
#define SCAN_ZSTD_WINDOW_LOG_MAX 23
/* "2024-03-05 12:34:56.789012+00" and a decimal LSN fit easily. */
#define SCAN_FIELD_MAX 48

/* CSV state over the decompressed bytes of one file. */
struct scan {
    int field;       /* 0-based index of the field being read */
    bool quoted;     /* inside a quoted field */
    bool quote_seen; /* a '"' ended a quoted part: '"' next is an escaped quote */
    char lsn[SCAN_FIELD_MAX + 1], ts[SCAN_FIELD_MAX + 1];
    size_t nlsn, nts;
    uint64_t record; /* 1-based, for messages */
    bool bad;
    void (*fn)(void *arg, uint64_t lsn, int64_t usec);
    void *arg;
};

static void scan_keep(struct scan *s, char c)
{
    char *dst = s->field == 1 ? s->lsn : s->field == 3 ? s->ts : NULL;
    size_t *n = s->field == 1 ? &s->nlsn : &s->nts;

    if (dst == NULL)
        return;
    if (*n == SCAN_FIELD_MAX)
        s->bad = true;
    else
        dst[(*n)++] = c;
}

static void scan_record(struct scan *s)
{
    char *end;
    uint64_t lsn;
    int64_t usec;

    s->record++;
    s->lsn[s->nlsn] = '\0';
    s->ts[s->nts] = '\0';
    errno = 0;
    lsn = strtoull(s->lsn, &end, 10);
    if (s->field < 5 || s->nlsn == 0 || *end != '\0' || errno != 0 ||
        !zetl_time_parse(s->ts, &usec))
        s->bad = true;
    else
        s->fn(s->arg, lsn, usec);
    s->field = 0;
    s->nlsn = s->nts = 0;
}

static void scan_bytes(struct scan *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !s->bad; i++) {
        char c = p[i];

        if (s->quoted) {
            if (c == '"') {
                s->quoted = false;
                s->quote_seen = true;
            } else {
                scan_keep(s, c);
            }
            continue;
        }
        if (s->quote_seen && c == '"') {
            scan_keep(s, c);
            s->quoted = true;
            s->quote_seen = false;
            continue;
        }
        s->quote_seen = false;
        if (c == '"')
            s->quoted = true;
        else if (c == ',')
            s->field++;
        else if (c == '\n')
            scan_record(s);
        else
            scan_keep(s, c);
    }
}

/* Decompresses and scans one file; the frame must be complete and end a record. */
static enum zetl_err scan_file(const char *path, struct scan *s, ZSTD_DCtx *dctx,
                               struct zetl_errbuf *eb)
{
    unsigned char *in = zetl_malloc(SCAN_READ_CHUNK);
    size_t out_size = ZSTD_DStreamOutSize();
    char *out = zetl_malloc(out_size);
    FILE *f = fopen(path, "rb");
    size_t zret = 1, n;
    enum zetl_err err = ZETL_OK;

    if (f == NULL) {
        err =
            zetl_err_set(eb, ZETL_ERR_IO, "could not open file \"%s\": %s", path, strerror(errno));
        goto done;
    }
    ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
    while ((n = fread(in, 1, SCAN_READ_CHUNK, f)) > 0 && !s->bad) {
        ZSTD_inBuffer zin = {in, n, 0};

        while (zin.pos < zin.size && !s->bad) {
            ZSTD_outBuffer zout = {out, out_size, 0};

            zret = ZSTD_decompressStream(dctx, &zout, &zin);
            if (ZSTD_isError(zret)) {
                err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "could not decompress \"%s\": %s", path,
                                   ZSTD_getErrorName(zret));
                goto done;
            }
            scan_bytes(s, out, zout.pos);
        }
    }
    if (ferror(f))
        err =
            zetl_err_set(eb, ZETL_ERR_IO, "could not read file \"%s\": %s", path, strerror(errno));
    else if (s->bad)
        err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                           "file \"%s\": record %llu has no valid commit lsn and time", path,
                           (unsigned long long)s->record + 1);
    else if (zret != 0 || s->field != 0 || s->quoted || s->nlsn != 0 || s->nts != 0)
        err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "file \"%s\" is cut short", path);
done:
    if (f != NULL)
        fclose(f);
    free(out);
    free(in);
    return err;
}

enum zetl_err zetl_archive_scan_commits(const char *dir, const struct zetl_manifest *m,
                                        void (*fn)(void *arg, uint64_t lsn, int64_t usec),
                                        void *arg, struct zetl_errbuf *eb)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    struct zetl_buf path;
    enum zetl_err err = ZETL_OK;

    if (dctx == NULL)
        abort(); /* out of memory, as zetl_malloc */
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, SCAN_ZSTD_WINDOW_LOG_MAX);
    zetl_buf_init(&path, 0);
    for (size_t i = 0; i < m->nfiles && err == ZETL_OK; i++) {
        struct scan s;

        memset(&s, 0, sizeof(s));
        s.fn = fn;
        s.arg = arg;
        zetl_buf_reset(&path);
        zetl_buf_printf(&path, "%s/%s", dir, m->files[i].file);
        err = scan_file(path.data, &s, dctx, eb);
    }
    zetl_buf_release(&path);
    ZSTD_freeDCtx(dctx);
    return err;
}
