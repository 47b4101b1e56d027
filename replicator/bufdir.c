/* buffer.dir preflight: created, writable and syncable before anything connects. */
#include "replicator/bufdir.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fs.h"

enum zetl_err zetl_bufdir_check(const struct zetl_config *cfg, const char *sub,
                                struct zetl_errbuf *eb)
{
    struct zetl_buf path;
    enum zetl_err err;
    int fd;

    zetl_buf_init(&path, 0);
    zetl_buf_puts(&path, cfg->buffer.dir);
    if (sub != NULL)
        zetl_buf_printf(&path, "/%s", sub);
    if ((err = zetl_fs_mkdirs(path.data, eb)) != ZETL_OK)
        goto fail;
    zetl_buf_puts(&path, "/.write-test");
    fd = open(path.data, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, "x", 1) != 1 || fsync(fd) != 0) {
        err =
            zetl_err_set(eb, ZETL_ERR_IO, "could not write \"%s\": %s", path.data, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto fail;
    }
    close(fd);
    unlink(path.data);
    zetl_buf_release(&path);
    return ZETL_OK;

fail:
    /* The same shape as the config loader's messages: FILE:LINE: KEY: what is wrong. */
    zetl_err_prefix(eb, "%s:%d: buffer.dir", cfg->path, cfg->buffer.dir_line);
    zetl_buf_release(&path);
    return err;
}
