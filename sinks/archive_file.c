/*
 * The file:// archive backend: <root>/<stream>/<first>-<last>/ directories.
 * A batch is assembled in ".tmp-<first>-<last>/", its manifest.json written
 * last, and the directory renamed in, so a directory with a batch name is
 * always complete (docs/archive-format.md).  Retention works the other way
 * round: the directory is renamed out to ".del-<first>-<last>/" first, then
 * removed.
 */
#include "sinks/archive_backend.h"

#include "common/buf.h"
#include "common/fs.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "proto/manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A batch directory being written: never read, removed when found at start. */
#define FILE_TMP_PREFIX ".tmp-"
/* A batch directory being removed by retention: no longer a batch, removed by the next pass. */
#define FILE_DEL_PREFIX ".del-"

struct archive_file {
    char *root; /* owned: absolute root directory */
};

static const char *file_root(const struct zetl_archive *ar)
{
    return ((const struct archive_file *)ar->state)->root;
}

/* Directory <root>/<stream>[/<name>] into out (reset first). */
static void file_path(const struct zetl_archive *ar, struct zetl_buf *out, const char *stream,
                      const char *name)
{
    zetl_buf_reset(out);
    zetl_buf_printf(out, "%s/%s", file_root(ar), stream);
    if (name != NULL)
        zetl_buf_printf(out, "/%s", name);
}

/* Opens <root>/<stream> (path into sdir); *d is NULL (ZETL_OK) when the stream has none yet. */
static enum zetl_err file_open_stream(const struct zetl_archive *ar, const char *stream,
                                      struct zetl_buf *sdir, DIR **d, struct zetl_errbuf *eb)
{
    file_path(ar, sdir, stream, NULL);
    *d = opendir(sdir->data);
    if (*d == NULL && errno != ENOENT)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open directory \"%s\": %s", sdir->data,
                            strerror(errno));
    return ZETL_OK;
}

/*
 * Reads the manifest of batch directory `dir` of `stream` into *m (released
 * by the caller).  *found is false when the directory does not exist; one
 * that exists without a valid manifest is damaged (ZETL_ERR_IO).
 */
static enum zetl_err file_read_manifest(const char *dir, const char *stream, bool *found,
                                        struct zetl_manifest *m, struct zetl_errbuf *eb)
{
    struct zetl_buf p;
    struct stat st;
    enum zetl_err err = ZETL_OK;

    zetl_manifest_init(m);
    *found = false;
    if (stat(dir, &st) != 0 && errno == ENOENT)
        return ZETL_OK;
    *found = true;
    zetl_buf_init(&p, 0);
    zetl_buf_printf(&p, "%s/%s", dir, ZETL_MANIFEST_NAME);
    if (zetl_manifest_read_file(p.data, stream, m, eb) != ZETL_OK) {
        zetl_err_prefix(eb, "archive batch \"%s\" is damaged", dir);
        err = ZETL_ERR_IO;
    }
    zetl_buf_release(&p);
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
            if ((err = zetl_fs_copy_file(src, dst, eb)) != ZETL_OK)
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

static enum zetl_err file_put(struct zetl_archive *ar, const struct zetl_batch *b,
                              const char *manifest, size_t len, struct zetl_errbuf *eb)
{
    struct zetl_buf sdir, tmp, final, src, dst;
    struct zetl_manifest m;
    struct zetl_errbuf ignore;
    char name[40], tmpname[48];
    bool created, found;
    enum zetl_err err = ZETL_OK;

    zetl_manifest_init(&m);
    zetl_buf_init(&sdir, 0);
    zetl_buf_init(&tmp, 0);
    zetl_buf_init(&final, 0);
    zetl_buf_init(&src, 0);
    zetl_buf_init(&dst, 0);
    zetl_archive_batch_name(b, name);
    snprintf(tmpname, sizeof(tmpname), "%s%s", FILE_TMP_PREFIX, name);
    file_path(ar, &sdir, b->stream, NULL);
    file_path(ar, &tmp, b->stream, tmpname);
    file_path(ar, &final, b->stream, name);

    created = access(sdir.data, F_OK) != 0;
    if ((err = zetl_fs_mkdirs(sdir.data, eb)) != ZETL_OK ||
        (created && (err = zetl_fs_fsync_dir(file_root(ar), eb)) != ZETL_OK))
        goto fail;

    /* A replay after a crash: the batch is in already. */
    if ((err = file_read_manifest(final.data, b->stream, &found, &m, eb)) != ZETL_OK)
        goto fail;
    if (found)
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
    zetl_buf_printf(&dst, "%s/%s", tmp.data, ZETL_MANIFEST_NAME);
    if ((err = zetl_fs_write_file(dst.data, manifest, len, eb)) != ZETL_OK)
        goto fail;
    if ((err = zetl_fs_fsync_dir(tmp.data, eb)) != ZETL_OK)
        goto fail;
    if (rename(tmp.data, final.data) != 0) {
        int saved = errno;

        /* Someone else put the same batch meanwhile: fine if it is whole. */
        zetl_manifest_release(&m);
        if ((saved == EEXIST || saved == ENOTEMPTY) &&
            file_read_manifest(final.data, b->stream, &found, &m, &ignore) == ZETL_OK && found)
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
    zetl_manifest_release(&m);
    return err;
}

static enum zetl_err file_last_lsn(struct zetl_archive *ar, const char *stream, uint64_t *last_lsn,
                                   uint64_t *end_lsn, struct zetl_errbuf *eb)
{
    struct zetl_buf sdir, p;
    DIR *d = NULL;
    struct dirent *de;
    struct zetl_manifest m;
    char best[40] = "";
    uint64_t best_first = 0, best_last = 0, first, last;
    bool found;
    enum zetl_err err = ZETL_OK;

    *last_lsn = *end_lsn = 0;
    zetl_manifest_init(&m);
    zetl_buf_init(&sdir, 0);
    zetl_buf_init(&p, 0);
    if ((err = file_open_stream(ar, stream, &sdir, &d, eb)) != ZETL_OK || d == NULL)
        goto fail;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, FILE_TMP_PREFIX, strlen(FILE_TMP_PREFIX)) == 0) {
            /* Never renamed in: a put that did not finish.  The batch comes again. */
            file_path(ar, &p, stream, de->d_name);
            if ((err = zetl_fs_rmtree(p.data, eb)) != ZETL_OK)
                goto fail;
            continue;
        }
        if (!zetl_archive_parse_name(de->d_name, strlen(de->d_name), &first, &last))
            continue;
        if (best[0] == '\0' || last > best_last || (last == best_last && first > best_first)) {
            best_first = first;
            best_last = last;
            memcpy(best, de->d_name, 34); /* checked above: 33 bytes and NUL */
        }
    }
    if (best[0] == '\0')
        goto fail;
    file_path(ar, &p, stream, best);
    if ((err = file_read_manifest(p.data, stream, &found, &m, eb)) != ZETL_OK)
        goto fail;
    if (!found) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "archive batch \"%s\" is damaged: it disappeared",
                           p.data);
        goto fail;
    }
    if (m.first_lsn != best_first || m.last_lsn != best_last) {
        err = zetl_err_set(eb, ZETL_ERR_IO,
                           "archive batch \"%s\" has a manifest for " ZETL_LSN_FMT "-" ZETL_LSN_FMT,
                           p.data, ZETL_LSN_ARGS(m.first_lsn), ZETL_LSN_ARGS(m.last_lsn));
        goto fail;
    }
    *last_lsn = m.last_lsn;
    *end_lsn = m.end_lsn;

fail:
    if (d != NULL)
        closedir(d);
    zetl_buf_release(&p);
    zetl_buf_release(&sdir);
    zetl_manifest_release(&m);
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
    if ((err = file_open_stream(ar, stream, &sdir, &d, eb)) != ZETL_OK || d == NULL)
        goto fail;
    while ((de = readdir(d)) != NULL) {
        if (!zetl_archive_parse_name(de->d_name, strlen(de->d_name), &first, &last) ||
            last <= after_lsn)
            continue;
        zetl_strlist_add(out, de->d_name);
    }
    closedir(d);
    if (out->n > 1)
        qsort(out->items, out->n, sizeof(char *), cmp_names);
fail:
    zetl_buf_release(&sdir);
    return err;
}

static enum zetl_err file_streams(struct zetl_archive *ar, struct zetl_strlist *out,
                                  struct zetl_errbuf *eb)
{
    DIR *d = opendir(file_root(ar));
    struct dirent *de;

    if (d == NULL)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open directory \"%s\": %s", file_root(ar),
                            strerror(errno));
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        struct zetl_buf p;

        if (de->d_name[0] == '.')
            continue;
        zetl_buf_init(&p, 0);
        file_path(ar, &p, de->d_name, NULL);
        if (stat(p.data, &st) == 0 && S_ISDIR(st.st_mode))
            zetl_strlist_add(out, de->d_name);
        zetl_buf_release(&p);
    }
    closedir(d);
    return ZETL_OK;
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

static enum zetl_err file_manifest(struct zetl_archive *ar, const char *stream, const char *name,
                                   struct zetl_manifest *m, struct zetl_errbuf *eb)
{
    struct zetl_buf p;
    uint64_t first, last;
    bool found;
    enum zetl_err err;

    zetl_buf_init(&p, 0);
    file_path(ar, &p, stream, name);
    if ((err = file_read_manifest(p.data, stream, &found, m, eb)) != ZETL_OK)
        goto fail;
    if (!found) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "archive batch \"%s\" does not exist", p.data);
        goto fail;
    }
    if (!zetl_archive_parse_name(name, strlen(name), &first, &last) || m->first_lsn != first ||
        m->last_lsn != last)
        err = zetl_err_set(eb, ZETL_ERR_IO,
                           "archive batch \"%s\" has a manifest for " ZETL_LSN_FMT "-" ZETL_LSN_FMT,
                           p.data, ZETL_LSN_ARGS(m->first_lsn), ZETL_LSN_ARGS(m->last_lsn));
fail:
    zetl_buf_release(&p);
    return err;
}

/* Bytes of the plain files in a batch directory (it holds nothing else); 0 when unreadable. */
static uint64_t file_dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    struct zetl_buf p;
    struct stat st;
    uint64_t bytes = 0;

    if (d == NULL)
        return 0;
    zetl_buf_init(&p, 0);
    while ((de = readdir(d)) != NULL) {
        zetl_buf_reset(&p);
        zetl_buf_printf(&p, "%s/%s", dir, de->d_name);
        if (lstat(p.data, &st) == 0 && S_ISREG(st.st_mode))
            bytes += (uint64_t)st.st_size;
    }
    closedir(d);
    zetl_buf_release(&p);
    return bytes;
}

/*
 * Renamed aside first, so a crash at any point leaves either the whole
 * batch or a ".del-" directory nobody reads, which the next sweep removes.
 */
static enum zetl_err file_remove(struct zetl_archive *ar, const char *stream, const char *name,
                                 uint64_t *bytes, struct zetl_errbuf *eb)
{
    struct zetl_buf sdir, final, aside;
    char asidename[48];
    enum zetl_err err = ZETL_OK;

    *bytes = 0;
    zetl_buf_init(&sdir, 0);
    zetl_buf_init(&final, 0);
    zetl_buf_init(&aside, 0);
    snprintf(asidename, sizeof(asidename), "%s%s", FILE_DEL_PREFIX, name);
    file_path(ar, &sdir, stream, NULL);
    file_path(ar, &final, stream, name);
    file_path(ar, &aside, stream, asidename);
    if (rename(final.data, aside.data) != 0) {
        if (errno != ENOENT) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not rename directory \"%s\" to \"%s\": %s",
                               final.data, aside.data, strerror(errno));
            goto fail;
        }
    } else if ((err = zetl_fs_fsync_dir(sdir.data, eb)) != ZETL_OK) {
        goto fail;
    }
    *bytes = file_dir_bytes(aside.data);
    err = zetl_fs_rmtree(aside.data, eb);
fail:
    zetl_buf_release(&aside);
    zetl_buf_release(&final);
    zetl_buf_release(&sdir);
    return err;
}

/* Every ".del-" directory is a removal decided before a crash: finished here. */
static enum zetl_err file_sweep(struct zetl_archive *ar, const char *stream, uint64_t below_last,
                                size_t *n, uint64_t *bytes, struct zetl_errbuf *eb)
{
    struct zetl_buf sdir, p;
    DIR *d = NULL;
    struct dirent *de;
    enum zetl_err err;

    (void)below_last;
    *n = 0;
    *bytes = 0;
    zetl_buf_init(&sdir, 0);
    zetl_buf_init(&p, 0);
    if ((err = file_open_stream(ar, stream, &sdir, &d, eb)) != ZETL_OK || d == NULL)
        goto fail;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, FILE_DEL_PREFIX, strlen(FILE_DEL_PREFIX)) != 0)
            continue;
        file_path(ar, &p, stream, de->d_name);
        *bytes += file_dir_bytes(p.data);
        if ((err = zetl_fs_rmtree(p.data, eb)) != ZETL_OK)
            goto fail;
        ++*n;
    }
fail:
    if (d != NULL)
        closedir(d);
    zetl_buf_release(&p);
    zetl_buf_release(&sdir);
    return err;
}

static void file_release(struct zetl_archive *ar)
{
    struct archive_file *af = ar->state;

    if (af == NULL)
        return;
    free(af->root);
    free(af);
    ar->state = NULL;
}

/* Resolves the path of a file:// URL to an absolute root and creates it. */
static enum zetl_err file_open(struct zetl_archive *ar, const char *path,
                               const struct zetl_config *cfg, struct zetl_errbuf *eb)
{
    struct archive_file *af = zetl_calloc(1, sizeof(*af));
    struct zetl_buf p;
    enum zetl_err err = ZETL_OK;

    (void)cfg;
    ar->state = af;
    zetl_buf_init(&p, 0);
    if (path[0] == '\0') {
        err = zetl_err_set(eb, ZETL_ERR_USAGE, "archive url \"%s\" has no path", ar->url);
        goto fail;
    }
    if ((err = zetl_fs_absolute(path, &p, eb)) != ZETL_OK)
        goto fail;
    while (p.len > 1 && p.data[p.len - 1] == '/')
        p.data[--p.len] = '\0';
    af->root = zetl_strndup(p.data, p.len);
    if ((err = zetl_fs_mkdirs(af->root, eb)) != ZETL_OK)
        goto fail;
    if (access(af->root, W_OK | X_OK) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not write directory \"%s\": %s", af->root,
                           strerror(errno));
        goto fail;
    }
fail:
    zetl_buf_release(&p);
    return err;
}

const struct archive_backend zetl_archive_file_backend = {
    .scheme = "file",
    .open = file_open,
    .last_lsn = file_last_lsn,
    .put = file_put,
    .list = file_list,
    .streams = file_streams,
    .fetch = file_fetch,
    .manifest = file_manifest,
    .remove = file_remove,
    .sweep = file_sweep,
    .release = file_release,
};
