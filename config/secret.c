/*
 * Secrets read from files (source.dsn_file, ZETL_SOURCE_DSN_FILE, ...), as
 * Docker and Kubernetes mount them.  A secret that other users could read or
 * change is refused rather than used: the check is on the opened file
 * (fstat), so it holds for what is actually read, also through the symlinks
 * Kubernetes puts in front of its secret files.  Messages name the path and
 * the mode, never a byte of the content.
 */
#include "config/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/mem.h"

/* A DSN is a few hundred bytes; anything near this is not a secret file. */
#define SECRET_MAX (64u * 1024)

enum zetl_err zetl_config_read_secret(const char *path, char **out, struct zetl_errbuf *eb)
{
    struct stat sb;
    char *text = NULL;
    size_t len = 0;
    enum zetl_err err;
    int fd;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return zetl_err_set(eb, ZETL_ERR_USAGE, "could not open secret file \"%s\": %s", path,
                            strerror(errno));
    if (fstat(fd, &sb) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE, "could not stat secret file \"%s\": %s", path,
                           strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE, "secret file \"%s\" is not a regular file", path);
        goto fail;
    }
    if ((sb.st_mode & S_IRWXO) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE,
                           "secret file \"%s\" is accessible by other users (mode %04o); "
                           "refusing to use it (chmod o-rwx it, e.g. to 0600 or 0400)",
                           path, (unsigned)(sb.st_mode & 07777));
        goto fail;
    }
    /* One byte more than the cap, so an oversized file is noticed. */
    text = zetl_malloc(SECRET_MAX + 1);
    for (;;) {
        ssize_t n = read(fd, text + len, SECRET_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = zetl_err_set(eb, ZETL_ERR_USAGE, "could not read secret file \"%s\": %s", path,
                               strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > SECRET_MAX) {
            err = zetl_err_set(eb, ZETL_ERR_USAGE, "secret file \"%s\" is larger than %u KiB", path,
                               SECRET_MAX / 1024);
            goto fail;
        }
    }
    close(fd);
    fd = -1;

    /* Editors and `echo` end the file with a newline; it is not part of the secret. */
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    if (len == 0) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE, "secret file \"%s\" is empty", path);
        goto fail;
    }
    if (memchr(text, '\0', len) != NULL) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE, "secret file \"%s\" contains a NUL byte", path);
        goto fail;
    }
    text[len] = '\0';
    *out = zetl_strdup(text);
    /* The copy is exact; scrub the scratch buffer so the secret lives in one place. */
    memset(text, 0, SECRET_MAX + 1);
    free(text);
    return ZETL_OK;

fail:
    if (text != NULL) {
        memset(text, 0, SECRET_MAX + 1);
        free(text);
    }
    if (fd >= 0)
        close(fd);
    return err;
}
