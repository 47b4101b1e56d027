/* File system helpers. */
#include "common/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/mem.h"

/* Read and write size of zetl_fs_copy_file. */
#define ZETL_FS_COPY_CHUNK ((size_t)1 << 20)

enum zetl_err zetl_fs_mkdirs(const char *path, struct zetl_errbuf *eb)
{
    char tmp[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(tmp))
        return zetl_err_set(eb, ZETL_ERR_IO, "invalid directory path \"%s\"", path);
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return zetl_err_set(eb, ZETL_ERR_IO, "could not create directory \"%s\": %s", tmp,
                                strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not create directory \"%s\": %s", tmp,
                            strerror(errno));
    struct stat st;
    if (stat(tmp, &st) != 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not create directory \"%s\": %s", tmp,
                            strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return zetl_err_set(eb, ZETL_ERR_IO, "could not create directory \"%s\": %s", tmp,
                            strerror(ENOTDIR));
    return ZETL_OK;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(p) : unlink(p)) == 0 || errno == ENOENT ? 0 : -1;
}

enum zetl_err zetl_fs_rmtree(const char *path, struct zetl_errbuf *eb)
{
    struct stat st;

    if (lstat(path, &st) != 0 && errno == ENOENT)
        return ZETL_OK;
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not remove \"%s\": %s", path, strerror(errno));
    return ZETL_OK;
}

enum zetl_err zetl_fs_absolute(const char *path, struct zetl_buf *out, struct zetl_errbuf *eb)
{
    if (path[0] != '/') {
        char *cwd = getcwd(NULL, 0);
        if (cwd == NULL)
            return zetl_err_set(eb, ZETL_ERR_IO, "could not get the working directory: %s",
                                strerror(errno));
        zetl_buf_printf(out, "%s/", strcmp(cwd, "/") == 0 ? "" : cwd);
        free(cwd);
        if (strncmp(path, "./", 2) == 0)
            path += 2;
    }
    zetl_buf_puts(out, path);
    return ZETL_OK;
}

enum zetl_err zetl_fs_fsync_dir(const char *path, struct zetl_errbuf *eb)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY);

    if (fd < 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open directory \"%s\": %s", path,
                            strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return zetl_err_set(eb, ZETL_ERR_IO, "could not fsync directory \"%s\": %s", path,
                            strerror(e));
    }
    close(fd);
    return ZETL_OK;
}

enum zetl_err zetl_fs_lock_dir(const char *dir, int *fd, struct zetl_errbuf *eb)
{
    char path[4096], pid[32] = "";
    ssize_t n;
    int f;

    *fd = -1;
    snprintf(path, sizeof(path), "%s/zetl.lock", dir);
    f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open \"%s\": %s", path, strerror(errno));
    /* flock: released by the kernel when the process dies, however it dies. */
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;

        n = pread(f, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? strcspn(pid, "\n") : 0] = '\0';
        close(f);
        if (e == EWOULDBLOCK)
            return zetl_err_set(eb, ZETL_ERR_FATAL,
                                "\"%s\" is in use by another zetl process (pid %s); one process "
                                "per buffer.dir",
                                dir, pid[0] ? pid : "unknown");
        return zetl_err_set(eb, ZETL_ERR_IO, "could not lock \"%s\": %s", path, strerror(e));
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)n, 0) != n) {
        int e = errno;

        close(f);
        return zetl_err_set(eb, ZETL_ERR_IO, "could not write \"%s\": %s", path, strerror(e));
    }
    *fd = f;
    return ZETL_OK;
}

enum zetl_err zetl_fs_read_file(const char *path, size_t max, struct zetl_buf *out,
                                struct zetl_errbuf *eb)
{
    char chunk[65536];
    size_t total = 0;
    enum zetl_err err = ZETL_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open file \"%s\": %s", path,
                            strerror(errno));
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not read file \"%s\": %s", path,
                               strerror(errno));
            break;
        }
        if (n == 0)
            break;
        total += (size_t)n;
        /* Checked as it grows: the file may be larger than its size said, or endless. */
        if (total > max || !zetl_buf_append(out, chunk, (size_t)n)) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "file \"%s\" is larger than %zu bytes", path,
                               total > max ? max : out->max);
            break;
        }
    }
    close(fd);
    return err;
}

/* write(2) of all `len` bytes, across short writes and EINTR. */
static enum zetl_err write_all(int fd, const char *path, const char *data, size_t len,
                               struct zetl_errbuf *eb)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return zetl_err_set(eb, ZETL_ERR_IO, "could not write file \"%s\": %s", path,
                                strerror(errno));
        data += n;
        len -= (size_t)n;
    }
    return ZETL_OK;
}

/* fsync(2) and close(2) of a file just written; fd is closed whatever happens. */
static enum zetl_err sync_close(int fd, const char *path, struct zetl_errbuf *eb)
{
    if (fsync(fd) != 0) {
        int e = errno;

        close(fd);
        return zetl_err_set(eb, ZETL_ERR_IO, "could not fsync file \"%s\": %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not close file \"%s\": %s", path,
                            strerror(errno));
    return ZETL_OK;
}

static int create_file(const char *path, struct zetl_errbuf *eb)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    if (fd < 0)
        zetl_err_set(eb, ZETL_ERR_IO, "could not create file \"%s\": %s", path, strerror(errno));
    return fd;
}

enum zetl_err zetl_fs_write_file(const char *path, const void *data, size_t len,
                                 struct zetl_errbuf *eb)
{
    enum zetl_err err;
    int fd = create_file(path, eb);

    if (fd < 0)
        return ZETL_ERR_IO;
    if ((err = write_all(fd, path, data, len, eb)) != ZETL_OK) {
        close(fd);
        return err;
    }
    return sync_close(fd, path, eb);
}

enum zetl_err zetl_fs_copy_file(const char *src, const char *dst, struct zetl_errbuf *eb)
{
    char *chunk = NULL;
    int in = -1, out = -1;
    enum zetl_err err;

    if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open file \"%s\": %s", src,
                            strerror(errno));
    if ((out = create_file(dst, eb)) < 0) {
        close(in);
        return ZETL_ERR_IO;
    }
    chunk = zetl_malloc(ZETL_FS_COPY_CHUNK);
    for (;;) {
        ssize_t n = read(in, chunk, ZETL_FS_COPY_CHUNK);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not read file \"%s\": %s", src,
                               strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        if ((err = write_all(out, dst, chunk, (size_t)n, eb)) != ZETL_OK)
            goto fail;
    }
    err = sync_close(out, dst, eb);
    out = -1;
    if (err != ZETL_OK)
        goto fail;
    close(in);
    free(chunk);
    return ZETL_OK;

fail:
    free(chunk);
    if (out >= 0)
        close(out);
    unlink(dst);
    close(in);
    return err;
}
