/*
 * Streams one archive file into a COPY ... FROM STDIN: read in bounded
 * chunks, hashed (sha256 of the compressed bytes, as the manifest records
 * it) and decompressed through zstd straight into the COPY, so memory stays
 * the same whatever the file's size.  A file that does not match its
 * manifest aborts the COPY, and with it the apply's transaction.
 */
#include "sinks/warehouse/wh_driver.h"

#include "common/mem.h"
#include "common/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#define WH_READ_CHUNK ((size_t)128 << 10)
/* Largest zstd window accepted (the archive writes 1 MiB). */
#define WH_ZSTD_WINDOW_LOG_MAX 23

/* The decoder of one file and where its output goes. */
struct zcopy {
    struct zetl_wh *wh; /* borrowed */
    ZSTD_DCtx *dctx;    /* owned */
    unsigned char *out; /* owned, out_size bytes */
    size_t out_size;
    size_t zret;      /* the decoder's last hint: 0 once a frame is complete */
    const char *zerr; /* static: the first zstd error, or NULL */
};

/* Drains the results of a finished COPY; ZETL_OK when the server accepted it. */
static enum zetl_err copy_finish(struct zetl_wh *wh, const char *abort_msg, struct zetl_errbuf *eb)
{
    enum zetl_err err = ZETL_OK;
    PGresult *res;

    if (PQputCopyEnd(wh->conn, abort_msg) != 1)
        return zetl_wh_fail_res(wh, NULL, eb);
    while ((res = PQgetResult(wh->conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && err == ZETL_OK)
            err = zetl_wh_fail_res(wh, res, eb);
        PQclear(res);
        if (wh->conn == NULL)
            break;
    }
    return err;
}

/*
 * One step of the decoder over zin into the COPY; *produced is how many
 * bytes it made.  A zstd error is kept in z->zerr, not returned: the caller
 * goes on hashing, since a checksum mismatch is the better message.
 */
static enum zetl_err zcopy_step(struct zcopy *z, ZSTD_inBuffer *zin, size_t *produced,
                                struct zetl_errbuf *eb)
{
    ZSTD_outBuffer zout = {z->out, z->out_size, 0};

    *produced = 0;
    z->zret = ZSTD_decompressStream(z->dctx, &zout, zin);
    if (ZSTD_isError(z->zret)) {
        z->zerr = ZSTD_getErrorName(z->zret);
        return ZETL_OK;
    }
    if (zout.pos > 0 && PQputCopyData(z->wh->conn, (const char *)z->out, (int)zout.pos) != 1)
        return zetl_wh_fail_res(z->wh, NULL, eb);
    *produced = zout.pos;
    return ZETL_OK;
}

/* Decompresses in[n] into the COPY. */
static enum zetl_err zcopy_feed(struct zcopy *z, const unsigned char *in, size_t n,
                                struct zetl_errbuf *eb)
{
    ZSTD_inBuffer zin = {in, n, 0};
    enum zetl_err err = ZETL_OK;
    size_t produced;

    while (err == ZETL_OK && z->zerr == NULL && zin.pos < zin.size)
        err = zcopy_step(z, &zin, &produced, eb);
    return err;
}

/* Flushes what the decoder still holds at the end of the file. */
static enum zetl_err zcopy_flush(struct zcopy *z, struct zetl_errbuf *eb)
{
    enum zetl_err err = ZETL_OK;

    while (err == ZETL_OK && z->zerr == NULL && z->zret != 0) {
        ZSTD_inBuffer zin = {NULL, 0, 0};
        size_t produced;

        err = zcopy_step(z, &zin, &produced, eb);
        if (err == ZETL_OK && z->zerr == NULL && produced == 0)
            z->zerr = "truncated frame";
    }
    return err;
}

/*
 * Reads fd to its end into the COPY; *hex and *total describe the bytes
 * read.  ZETL_ERR_IO (the COPY still open) when the file cannot be read.
 */
static enum zetl_err zcopy_stream(struct zcopy *z, int fd, const char *path, char hex[65],
                                  uint64_t *total, struct zetl_errbuf *eb)
{
    struct zetl_sha256 sha;
    unsigned char *in = zetl_malloc(WH_READ_CHUNK);
    enum zetl_err err = ZETL_OK;

    zetl_sha256_init(&sha);
    *total = 0;
    for (;;) {
        ssize_t n = read(fd, in, WH_READ_CHUNK);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not read \"%s\": %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        zetl_sha256_update(&sha, in, (size_t)n);
        *total += (uint64_t)n;
        if (z->zerr == NULL && (err = zcopy_feed(z, in, (size_t)n, eb)) != ZETL_OK)
            break;
    }
    if (err == ZETL_OK)
        err = zcopy_flush(z, eb);
    zetl_sha256_final_hex(&sha, hex);
    zetl_sha256_release(&sha);
    free(in);
    return err;
}

/* Streams dir/f->name into the COPY already started and ends it. */
static enum zetl_err copy_into(struct zetl_wh *wh, const char *dir, const struct zetl_wh_file *f,
                               struct zetl_errbuf *eb)
{
    struct zcopy z = {wh, NULL, NULL, ZSTD_DStreamOutSize(), 1, NULL};
    char path[4096];
    char hex[65];
    uint64_t total = 0;
    enum zetl_err err;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, f->name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not open \"%s\": %s", path, strerror(errno));
        copy_finish(wh, "zetl: file missing", &(struct zetl_errbuf){""});
        return err;
    }
    z.out = zetl_malloc(z.out_size);
    z.dctx = ZSTD_createDCtx();
    if (z.dctx == NULL)
        abort();
    ZSTD_DCtx_setParameter(z.dctx, ZSTD_d_windowLogMax, WH_ZSTD_WINDOW_LOG_MAX);

    err = zcopy_stream(&z, fd, path, hex, &total, eb);
    if (err == ZETL_ERR_IO)
        goto abort_copy;
    if (err != ZETL_OK)
        goto fail;
    if (strcmp(hex, f->sha256) != 0 || total != f->bytes) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "file \"%s\" does not match its manifest (sha256 %s, %" PRIu64
                           " bytes; manifest: sha256 %s, %" PRIu64 " bytes)",
                           f->name, hex, total, f->sha256, f->bytes);
        goto abort_copy;
    }
    if (z.zerr != NULL) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "file \"%s\": zstd: %s", f->name, z.zerr);
        goto abort_copy;
    }
    if ((err = copy_finish(wh, NULL, eb)) != ZETL_OK)
        zetl_err_prefix(eb, "file \"%s\"", f->name);
    goto fail;

abort_copy:
    if (wh->conn)
        copy_finish(wh, "zetl: batch file rejected", &(struct zetl_errbuf){""});
fail:
    ZSTD_freeDCtx(z.dctx);
    free(z.out);
    close(fd);
    return err;
}

enum zetl_err zetl_wh_copy_file(struct zetl_wh *wh, char *copy_sql, const char *dir,
                                const struct zetl_wh_file *f, struct zetl_errbuf *eb)
{
    PGresult *res = PQexec(wh->conn, copy_sql);
    enum zetl_err err = ZETL_OK;

    free(copy_sql);
    if (PQresultStatus(res) != PGRES_COPY_IN)
        err = zetl_wh_fail_res(wh, res, eb);
    PQclear(res);
    return err == ZETL_OK ? copy_into(wh, dir, f, eb) : err;
}
