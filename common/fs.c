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
