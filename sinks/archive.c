/*
 * The archive of sealed batches: <root>/<stream>/<first>-<last>/ holding the
 * batch's .csv.zst files and manifest.json.  The functions of archive.h
 * render the manifest and dispatch to a backend; the file:// backend lives
 * in the file_* functions below, and an s3:// backend plugs in beside it
 * through struct archive_backend.
 */
#include "sinks/archive.h"
#include "sinks/archive_backend.h"

#include "common/buf.h"
#include "common/fs.h"
#include "common/lsn.h"
#include "common/mem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ZETL_ARCHIVE_MANIFEST "manifest.json"
#define ZETL_ARCHIVE_TMP_PREFIX ".tmp-"
/* A manifest larger than this is not one we wrote. */
#define ZETL_ARCHIVE_MANIFEST_MAX ((off_t)64 << 20)
#define ZETL_ARCHIVE_COPY_CHUNK ((size_t)1 << 20)

/* ---- manifest ---------------------------------------------------------- */

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

/*
 * A JSON string for a name from the source.  Names in a non-UTF-8 database
 * (SQL_ASCII) may hold bytes JSON cannot carry; those become U+FFFD.
 */
static json_t *jstr(const char *s)
{
    size_t n = strlen(s);
    struct zetl_buf b;
    json_t *j;

    if (utf8_valid((const unsigned char *)s, n))
        return json_stringn(s, n);
    zetl_buf_init(&b, 0);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x80)
            zetl_buf_putc(&b, s[i]);
        else
            zetl_buf_puts(&b, "\xEF\xBF\xBD");
    }
    j = json_stringn(b.data, b.len);
    zetl_buf_release(&b);
    return j;
}

static json_t *jlsn(uint64_t lsn)
{
    char s[24];

    snprintf(s, sizeof(s), ZETL_LSN_FMT, ZETL_LSN_ARGS(lsn));
    return json_string(s);
}

static json_t *jtime(int64_t pg_usec)
{
    char s[ZETL_BATCH_TIME_LEN];

    zetl_batch_format_time(pg_usec, true, s);
    return json_string(s);
}

static json_t *manifest_json(const struct zetl_batch *b)
{
    json_t *root = json_object(), *format = json_object(), *meta = json_array();
    json_t *files = json_array();
    struct timespec now;
    static const char *const meta_cols[] = {"_zetl_op", "_zetl_lsn", "_zetl_seq", "_zetl_commit_ts",
                                            "_zetl_unchanged"};

    clock_gettime(CLOCK_REALTIME, &now);
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "stream", jstr(b->stream));
    json_object_set_new(root, "first_lsn", jlsn(b->first_lsn));
    json_object_set_new(root, "last_lsn", jlsn(b->last_lsn));
    json_object_set_new(root, "end_lsn", jlsn(b->end_lsn));
    json_object_set_new(root, "first_lsn_int", json_integer((json_int_t)b->first_lsn));
    json_object_set_new(root, "last_lsn_int", json_integer((json_int_t)b->last_lsn));
    json_object_set_new(root, "end_lsn_int", json_integer((json_int_t)b->end_lsn));
    json_object_set_new(root, "transactions", json_integer((json_int_t)b->ntxns));
    json_object_set_new(root, "rows", json_integer((json_int_t)b->nrows));
    json_object_set_new(root, "raw_bytes", json_integer((json_int_t)b->raw_bytes));
    json_object_set_new(root, "first_commit_time", jtime(b->first_commit_time));
    json_object_set_new(root, "last_commit_time", jtime(b->last_commit_time));
    json_object_set_new(
        root, "created_at",
        jtime((int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000 - ZETL_PG_EPOCH_OFFSET_USEC));
    json_object_set_new(root, "tenant_column", jstr(b->tenant_column));

    json_object_set_new(format, "type", json_string("csv"));
    json_object_set_new(format, "compression", json_string("zstd"));
    json_object_set_new(format, "header", json_false());
    json_object_set_new(format, "null", json_string("unquoted empty field"));
    for (size_t i = 0; i < sizeof(meta_cols) / sizeof(meta_cols[0]); i++)
        json_array_append_new(meta, json_string(meta_cols[i]));
    json_object_set_new(format, "meta_columns", meta);
    json_object_set_new(root, "format", format);

    for (size_t i = 0; i < b->nfiles; i++) {
        const struct zetl_batch_file *bf = &b->files[i];
        json_t *f = json_object(), *tenants = json_array(), *cols = json_array();

        json_object_set_new(f, "table", jstr(bf->table));
        json_object_set_new(f, "file", jstr(bf->file));
        json_object_set_new(f, "rows", json_integer((json_int_t)bf->rows));
        json_object_set_new(f, "bytes", json_integer((json_int_t)bf->bytes));
        json_object_set_new(f, "sha256", json_string(bf->sha256));
        for (size_t k = 0; k < bf->ntenants; k++)
            json_array_append_new(tenants, jstr(bf->tenants[k]));
        json_object_set_new(f, "tenants", tenants);
        for (size_t k = 0; k < bf->ncols; k++) {
            const struct zetl_batch_col *c = &bf->cols[k];
            json_t *col = json_object();

            json_object_set_new(col, "name", jstr(c->name));
            json_object_set_new(col, "type", jstr(c->type));
            json_object_set_new(col, "typoid", json_integer(c->typoid));
            json_object_set_new(col, "key", json_boolean(c->key));
            json_array_append_new(cols, col);
        }
        json_object_set_new(f, "columns", cols);
        json_array_append_new(files, f);
    }
    json_object_set_new(root, "files", files);
    return root;
}

/* Renders into an owned string ending in a newline; *len gets its length. */
static char *manifest_text(const struct zetl_batch *b, size_t *len)
{
    json_t *root = manifest_json(b);
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    size_t n;
    char *t;

    json_decref(root);
    if (s == NULL) {
        fprintf(stderr, "FATAL:  could not render manifest\n");
        abort();
    }
    n = strlen(s);
    t = zetl_malloc(n + 2);
    memcpy(t, s, n);
    t[n] = '\n';
    t[n + 1] = '\0';
    free(s);
    *len = n + 1;
    return t;
}

void zetl_archive_manifest(const struct zetl_batch *b, struct zetl_buf *out)
{
    size_t len;
    char *s = manifest_text(b, &len);

    zetl_buf_append(out, s, len);
    free(s);
}

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

static bool parse_batch_name(const char *s, uint64_t *first, uint64_t *last)
{
    return zetl_archive_parse_name(s, strlen(s), first, last);
}

static bool stream_name_valid(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* ---- file:// backend -------------------------------------------------- */

/* Directory <root>/<stream>[/<name>] into out (reset first). */
static void file_path(const struct zetl_archive *ar, struct zetl_buf *out, const char *stream,
                      const char *name)
{
    zetl_buf_reset(out);
    zetl_buf_printf(out, "%s/%s", ar->root, stream);
    if (name != NULL)
        zetl_buf_printf(out, "/%s", name);
}

/*
 * Reads <dir>/manifest.json and checks it is a version 1 manifest of
 * `stream` (NULL: any).  Returns 1 when valid, 0 when the directory does not
 * exist, -1 (with why filled) when it exists without a valid manifest.
 */
static int file_read_manifest(const char *dir, const char *stream, uint64_t *first, uint64_t *last,
                              uint64_t *end, char *why, size_t whylen)
{
    struct zetl_buf p;
    struct stat st;
    json_t *root = NULL;
    json_error_t jerr;
    const char *s;
    int rc = -1;

    zetl_buf_init(&p, 0);
    if (stat(dir, &st) != 0 && errno == ENOENT) {
        rc = 0;
        goto done;
    }
    zetl_buf_printf(&p, "%s/%s", dir, ZETL_ARCHIVE_MANIFEST);
    if (stat(p.data, &st) != 0) {
        snprintf(why, whylen, "could not stat file \"%s\": %s", p.data, strerror(errno));
        goto done;
    }
    if (st.st_size > ZETL_ARCHIVE_MANIFEST_MAX) {
        snprintf(why, whylen, "file \"%s\" is larger than %lld bytes", p.data,
                 (long long)ZETL_ARCHIVE_MANIFEST_MAX);
        goto done;
    }
    root = json_load_file(p.data, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(why, whylen, "could not parse file \"%s\": line %d: %s", p.data, jerr.line,
                 jerr.text);
        goto done;
    }
    if (!json_is_object(root) || json_integer_value(json_object_get(root, "version")) != 1) {
        snprintf(why, whylen, "file \"%s\" is not a version 1 manifest", p.data);
        goto done;
    }
    s = json_string_value(json_object_get(root, "stream"));
    if (s == NULL || (stream != NULL && strcmp(s, stream) != 0)) {
        snprintf(why, whylen, "file \"%s\" is the manifest of another stream", p.data);
        goto done;
    }
    if ((s = json_string_value(json_object_get(root, "first_lsn"))) == NULL ||
        !zetl_lsn_parse(s, first) ||
        (s = json_string_value(json_object_get(root, "last_lsn"))) == NULL ||
        !zetl_lsn_parse(s, last) ||
        (s = json_string_value(json_object_get(root, "end_lsn"))) == NULL ||
        !zetl_lsn_parse(s, end) || !json_is_array(json_object_get(root, "files"))) {
        snprintf(why, whylen, "file \"%s\" lacks valid first_lsn, last_lsn, end_lsn or files",
                 p.data);
        goto done;
    }
    rc = 1;

done:
    json_decref(root);
    zetl_buf_release(&p);
    return rc;
}

static enum zetl_err file_copy(const char *src, const char *dst, struct zetl_errbuf *eb)
{
    char *chunk = NULL;
    int in = -1, out = -1;
    enum zetl_err err;

    if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not open file \"%s\": %s", src, strerror(errno));
        goto fail;
    }
    if ((out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        err =
            zetl_err_set(eb, ZETL_ERR_IO, "could not create file \"%s\": %s", dst, strerror(errno));
        goto fail;
    }
    chunk = zetl_malloc(ZETL_ARCHIVE_COPY_CHUNK);
    for (;;) {
        ssize_t n = read(in, chunk, ZETL_ARCHIVE_COPY_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not read file \"%s\": %s", src,
                               strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, chunk + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                err = zetl_err_set(eb, ZETL_ERR_IO, "could not write file \"%s\": %s", dst,
                                   strerror(errno));
                goto fail;
            }
            off += w;
        }
    }
    if (fsync(out) != 0) {
        err =
            zetl_err_set(eb, ZETL_ERR_IO, "could not fsync file \"%s\": %s", dst, strerror(errno));
        goto fail;
    }
    if (close(out) != 0) {
        out = -1;
        err =
            zetl_err_set(eb, ZETL_ERR_IO, "could not close file \"%s\": %s", dst, strerror(errno));
        goto fail;
    }
    close(in);
    free(chunk);
    return ZETL_OK;

fail:
    free(chunk);
    if (out >= 0) {
        close(out);
        unlink(dst);
    }
    if (in >= 0)
        close(in);
    return err;
}

/*
 * Moves one batch file into the tmp directory (rename, or copy across file
 * systems), then checks its size and fsyncs it.  A file already moved by an
 * earlier, interrupted attempt is accepted when its size is right.
 */
static enum zetl_err file_move_in(const char *src, const char *dst, uint64_t bytes,
                                  struct zetl_errbuf *eb)
{
    struct stat st;
    enum zetl_err err;
    int fd;

    if (rename(src, dst) != 0) {
        if (errno == EXDEV) {
            if ((err = file_copy(src, dst, eb)) != ZETL_OK)
                return err;
            if (unlink(src) != 0)
                return zetl_err_set(eb, ZETL_ERR_IO, "could not remove file \"%s\": %s", src,
                                    strerror(errno));
        } else if (errno != ENOENT || stat(dst, &st) != 0) {
            return zetl_err_set(eb, ZETL_ERR_IO, "could not move file \"%s\" to \"%s\": %s", src,
                                dst, strerror(errno));
        }
    }
    if ((fd = open(dst, O_RDONLY | O_CLOEXEC)) < 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open file \"%s\": %s", dst,
                            strerror(errno));
    if (fstat(fd, &st) != 0 || fsync(fd) != 0) {
        err =
            zetl_err_set(eb, ZETL_ERR_IO, "could not fsync file \"%s\": %s", dst, strerror(errno));
        close(fd);
        return err;
    }
    close(fd);
    if ((uint64_t)st.st_size != bytes)
        return zetl_err_set(eb, ZETL_ERR_IO, "file \"%s\" has %lld bytes, the batch says %" PRIu64,
                            dst, (long long)st.st_size, bytes);
    return ZETL_OK;
}

/* Removes from the tmp directory anything an earlier attempt left that this batch lacks. */
static enum zetl_err file_clean_tmp(const char *tmp, const struct zetl_batch *b,
                                    struct zetl_errbuf *eb)
{
    DIR *d = opendir(tmp);
    struct dirent *de;
    struct zetl_buf p;
    enum zetl_err err = ZETL_OK;

    if (d == NULL)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open directory \"%s\": %s", tmp,
                            strerror(errno));
    zetl_buf_init(&p, 0);
    while ((de = readdir(d)) != NULL) {
        bool keep = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;

        for (size_t i = 0; !keep && i < b->nfiles; i++)
            keep = strcmp(de->d_name, b->files[i].file) == 0;
        if (keep)
            continue;
        zetl_buf_reset(&p);
        zetl_buf_printf(&p, "%s/%s", tmp, de->d_name);
        if ((err = zetl_fs_rmtree(p.data, eb)) != ZETL_OK)
            break;
    }
    closedir(d);
    zetl_buf_release(&p);
    return err;
}

static enum zetl_err file_write_manifest(const char *path, const char *text, size_t len,
                                         struct zetl_errbuf *eb)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const char *p = text;
    enum zetl_err err;

    if (fd < 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not create file \"%s\": %s", path,
                            strerror(errno));
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not write file \"%s\": %s", path,
                               strerror(errno));
            goto fail;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fsync(fd) != 0) {
        err =
            zetl_err_set(eb, ZETL_ERR_IO, "could not fsync file \"%s\": %s", path, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not close file \"%s\": %s", path,
                            strerror(errno));
    return ZETL_OK;

fail:
    close(fd);
    return err;
}

static enum zetl_err file_put(struct zetl_archive *ar, const struct zetl_batch *b,
                              const char *manifest, size_t len, struct zetl_errbuf *eb)
{
    struct zetl_buf sdir, tmp, final, src, dst;
    char name[40], tmpname[48], why[512];
    uint64_t first, last, end;
    bool created;
    enum zetl_err err = ZETL_OK;
    int rc;

    zetl_buf_init(&sdir, 0);
    zetl_buf_init(&tmp, 0);
    zetl_buf_init(&final, 0);
    zetl_buf_init(&src, 0);
    zetl_buf_init(&dst, 0);
    zetl_archive_batch_name(b, name);
    snprintf(tmpname, sizeof(tmpname), "%s%s", ZETL_ARCHIVE_TMP_PREFIX, name);
    file_path(ar, &sdir, b->stream, NULL);
    file_path(ar, &tmp, b->stream, tmpname);
    file_path(ar, &final, b->stream, name);

    created = access(sdir.data, F_OK) != 0;
    if ((err = zetl_fs_mkdirs(sdir.data, eb)) != ZETL_OK ||
        (created && (err = zetl_fs_fsync_dir(ar->root, eb)) != ZETL_OK))
        goto fail;

    /* A replay after a crash: the batch is in already. */
    rc = file_read_manifest(final.data, b->stream, &first, &last, &end, why, sizeof(why));
    if (rc < 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "archive batch \"%s\" is damaged: %s", final.data, why);
        goto fail;
    }
    if (rc > 0)
        goto done;

    if (mkdir(tmp.data, 0755) != 0 && errno != EEXIST) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not create directory \"%s\": %s", tmp.data,
                           strerror(errno));
        goto fail;
    }
    if ((err = file_clean_tmp(tmp.data, b, eb)) != ZETL_OK)
        goto fail;
    for (size_t i = 0; i < b->nfiles; i++) {
        zetl_buf_reset(&src);
        zetl_buf_printf(&src, "%s/%s", b->dir, b->files[i].file);
        zetl_buf_reset(&dst);
        zetl_buf_printf(&dst, "%s/%s", tmp.data, b->files[i].file);
        if ((err = file_move_in(src.data, dst.data, b->files[i].bytes, eb)) != ZETL_OK)
            goto fail;
    }
    zetl_buf_reset(&dst);
    zetl_buf_printf(&dst, "%s/%s", tmp.data, ZETL_ARCHIVE_MANIFEST);
    if ((err = file_write_manifest(dst.data, manifest, len, eb)) != ZETL_OK)
        goto fail;
    if ((err = zetl_fs_fsync_dir(tmp.data, eb)) != ZETL_OK)
        goto fail;
    if (rename(tmp.data, final.data) != 0) {
        int saved = errno;

        /* Someone else put the same batch meanwhile: fine if it is whole. */
        if ((saved == EEXIST || saved == ENOTEMPTY) &&
            file_read_manifest(final.data, b->stream, &first, &last, &end, why, sizeof(why)) > 0)
            goto done;
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not rename directory \"%s\" to \"%s\": %s",
                           tmp.data, final.data, strerror(saved));
        goto fail;
    }
    if ((err = zetl_fs_fsync_dir(sdir.data, eb)) != ZETL_OK)
        goto fail;
    /* The spool directory is empty now; the caller may still remove it itself. */
    rmdir(b->dir);

done:
    err = zetl_fs_rmtree(tmp.data, eb);
fail:
    zetl_buf_release(&dst);
    zetl_buf_release(&src);
    zetl_buf_release(&final);
    zetl_buf_release(&tmp);
    zetl_buf_release(&sdir);
    return err;
}

static enum zetl_err file_last_lsn(struct zetl_archive *ar, const char *stream, uint64_t *last_lsn,
                                   uint64_t *end_lsn, struct zetl_errbuf *eb)
{
    struct zetl_buf sdir, p;
    DIR *d = NULL;
    struct dirent *de;
    char best[40] = "", why[512];
    uint64_t best_first = 0, best_last = 0, first, last, end;
    enum zetl_err err = ZETL_OK;
    int rc;

    *last_lsn = *end_lsn = 0;
    zetl_buf_init(&sdir, 0);
    zetl_buf_init(&p, 0);
    file_path(ar, &sdir, stream, NULL);
    d = opendir(sdir.data);
    if (d == NULL) {
        if (errno != ENOENT)
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not open directory \"%s\": %s", sdir.data,
                               strerror(errno));
        goto fail;
    }
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, ZETL_ARCHIVE_TMP_PREFIX, strlen(ZETL_ARCHIVE_TMP_PREFIX)) == 0) {
            /* Never renamed in: a put that did not finish.  The batch comes again. */
            file_path(ar, &p, stream, de->d_name);
            if ((err = zetl_fs_rmtree(p.data, eb)) != ZETL_OK)
                goto fail;
            continue;
        }
        if (!parse_batch_name(de->d_name, &first, &last))
            continue;
        if (best[0] == '\0' || last > best_last || (last == best_last && first > best_first)) {
            best_first = first;
            best_last = last;
            memcpy(best, de->d_name, 34); /* parse_batch_name checked: 33 bytes and NUL */
        }
    }
    if (best[0] == '\0')
        goto fail;
    file_path(ar, &p, stream, best);
    rc = file_read_manifest(p.data, stream, &first, &last, &end, why, sizeof(why));
    if (rc <= 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "archive batch \"%s\" is damaged: %s", p.data,
                           rc == 0 ? "it disappeared" : why);
        goto fail;
    }
    if (first != best_first || last != best_last) {
        err = zetl_err_set(eb, ZETL_ERR_IO,
                           "archive batch \"%s\" has a manifest for " ZETL_LSN_FMT "-" ZETL_LSN_FMT,
                           p.data, ZETL_LSN_ARGS(first), ZETL_LSN_ARGS(last));
        goto fail;
    }
    *last_lsn = last;
    *end_lsn = end;

fail:
    if (d != NULL)
        closedir(d);
    zetl_buf_release(&p);
    zetl_buf_release(&sdir);
    return err;
}

static int cmp_names(const void *a, const void *b)
{
    /* Batch names are fixed-width hex: text order is LSN order. */
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static enum zetl_err file_list(struct zetl_archive *ar, const char *stream, uint64_t after_lsn,
                               struct zetl_strlist *out, struct zetl_errbuf *eb)
{
    struct zetl_buf sdir;
    DIR *d;
    struct dirent *de;
    uint64_t first, last;
    enum zetl_err err = ZETL_OK;

    out->items = NULL;
    out->n = 0;
    zetl_buf_init(&sdir, 0);
    file_path(ar, &sdir, stream, NULL);
    d = opendir(sdir.data);
    if (d == NULL) {
        if (errno != ENOENT)
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not open directory \"%s\": %s", sdir.data,
                               strerror(errno));
        goto fail;
    }
    while ((de = readdir(d)) != NULL) {
        if (!parse_batch_name(de->d_name, &first, &last) || last <= after_lsn)
            continue;
        out->items = zetl_realloc(out->items, (out->n + 1) * sizeof(char *));
        out->items[out->n++] = zetl_strdup(de->d_name);
    }
    closedir(d);
    if (out->n > 1)
        qsort(out->items, out->n, sizeof(char *), cmp_names);
fail:
    zetl_buf_release(&sdir);
    return err;
}

static enum zetl_err file_fetch(struct zetl_archive *ar, const char *stream, const char *name,
                                char **dir, struct zetl_errbuf *eb)
{
    struct zetl_buf p;

    (void)eb;
    zetl_buf_init(&p, 0);
    file_path(ar, &p, stream, name);
    *dir = p.data; /* the archive's own directory: read in place */
    return ZETL_OK;
}

static void file_release(struct zetl_archive *ar)
{
    free(ar->root);
    ar->root = NULL;
}

static const struct archive_backend file_backend = {
    .scheme = "file",
    .last_lsn = file_last_lsn,
    .put = file_put,
    .list = file_list,
    .fetch = file_fetch,
    .release = file_release,
};

/* Resolves the path of a file:// URL to an absolute root and creates it. */
static enum zetl_err file_open(struct zetl_archive *ar, const char *path, struct zetl_errbuf *eb)
{
    struct zetl_buf p;
    enum zetl_err err = ZETL_OK;

    zetl_buf_init(&p, 0);
    if (path[0] == '\0') {
        err = zetl_err_set(eb, ZETL_ERR_USAGE, "archive url \"%s\" has no path", ar->url);
        goto fail;
    }
    if ((err = zetl_fs_absolute(path, &p, eb)) != ZETL_OK)
        goto fail;
    while (p.len > 1 && p.data[p.len - 1] == '/')
        p.data[--p.len] = '\0';
    ar->root = zetl_strndup(p.data, p.len);
    if ((err = zetl_fs_mkdirs(ar->root, eb)) != ZETL_OK)
        goto fail;
    if (access(ar->root, W_OK | X_OK) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not write directory \"%s\": %s", ar->root,
                           strerror(errno));
        goto fail;
    }
fail:
    zetl_buf_release(&p);
    return err;
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
    if (strncmp(url, "file://", 7) == 0) {
        ar->be = &file_backend;
        if ((err = file_open(ar, url + 7, eb)) != ZETL_OK)
            goto fail;
    } else if (strncmp(url, "s3://", 5) == 0) {
        if ((err = zetl_archive_s3_open(ar, cfg, eb)) != ZETL_OK)
            goto fail;
    } else {
        err = zetl_err_set(eb, ZETL_ERR_USAGE,
                           "unsupported archive url \"%s\": expected file://PATH or s3://BUCKET",
                           url);
        goto fail;
    }
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
    free(ar->root);
    free(ar->url);
    free(ar);
}

enum zetl_err zetl_archive_last_lsn(struct zetl_archive *ar, const char *stream, uint64_t *last_lsn,
                                    uint64_t *end_lsn, struct zetl_errbuf *eb)
{
    *last_lsn = *end_lsn = 0;
    if (!stream_name_valid(stream))
        return zetl_err_set(eb, ZETL_ERR_USAGE, "invalid stream name \"%s\"", stream);
    return ar->be->last_lsn(ar, stream, last_lsn, end_lsn, eb);
}

enum zetl_err zetl_archive_put(struct zetl_archive *ar, const struct zetl_batch *b,
                               struct zetl_errbuf *eb)
{
    size_t len;
    char *manifest;
    enum zetl_err err;

    if (!stream_name_valid(b->stream))
        return zetl_err_set(eb, ZETL_ERR_USAGE, "invalid stream name \"%s\"", b->stream);
    manifest = manifest_text(b, &len);
    err = ar->be->put(ar, b, manifest, len, eb);
    free(manifest);
    return err;
}

enum zetl_err zetl_archive_list(struct zetl_archive *ar, const char *stream, uint64_t after_lsn,
                                struct zetl_strlist *out, struct zetl_errbuf *eb)
{
    out->items = NULL;
    out->n = 0;
    if (!stream_name_valid(stream))
        return zetl_err_set(eb, ZETL_ERR_USAGE, "invalid stream name \"%s\"", stream);
    return ar->be->list(ar, stream, after_lsn, out, eb);
}

enum zetl_err zetl_archive_fetch(struct zetl_archive *ar, const char *stream, const char *name,
                                 char **dir, struct zetl_errbuf *eb)
{
    *dir = NULL;
    if (!stream_name_valid(stream))
        return zetl_err_set(eb, ZETL_ERR_USAGE, "invalid stream name \"%s\"", stream);
    return ar->be->fetch(ar, stream, name, dir, eb);
}

void zetl_archive_fetch_done(struct zetl_archive *ar, char *dir)
{
    if (dir != NULL && ar->be->fetch_done != NULL)
        ar->be->fetch_done(ar, dir);
    free(dir);
}
