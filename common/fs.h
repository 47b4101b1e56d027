/* File system helpers: mkdir -p, rm -rf, whole-file read and write, fsync of a directory. */
#ifndef ZETL_FS_H
#define ZETL_FS_H

#include <stddef.h>

#include "common/err.h"

/* mkdir -p with mode 0755 for new directories; fails unless the path ends up a directory.
 * ZETL_ERR_IO naming the path on failure. */
enum zetl_err zetl_fs_mkdirs(const char *path, struct zetl_errbuf *eb);
/* rm -rf; a missing path is not an error. */
enum zetl_err zetl_fs_rmtree(const char *path, struct zetl_errbuf *eb);
struct zetl_buf;
/* Appends `path` made absolute against the working directory (a leading "./" dropped) to out. */
enum zetl_err zetl_fs_absolute(const char *path, struct zetl_buf *out, struct zetl_errbuf *eb);

/*
 * Takes an exclusive lock on `dir`/zetl.lock (created if missing; it holds
 * the holder's pid) for as long as *fd stays open: one zetl process per
 * buffer.dir.  ZETL_ERR_FATAL naming the holder's pid when another process
 * has it, ZETL_ERR_IO when the file cannot be opened.
 */
enum zetl_err zetl_fs_lock_dir(const char *dir, int *fd, struct zetl_errbuf *eb);

/*
 * Appends the whole file at `path` to out.  ZETL_ERR_IO naming the path when
 * it cannot be read or holds more than `max` bytes (or more than out's cap).
 */
enum zetl_err zetl_fs_read_file(const char *path, size_t max, struct zetl_buf *out,
                                struct zetl_errbuf *eb);

/* Creates or truncates `path`, writes `len` bytes of `data`, fsyncs and closes it. */
enum zetl_err zetl_fs_write_file(const char *path, const void *data, size_t len,
                                 struct zetl_errbuf *eb);

/*
 * Copies `src` to `dst` (created or truncated) and fsyncs the copy; a failed
 * copy is removed.  ZETL_ERR_IO naming the file that failed.
 */
enum zetl_err zetl_fs_copy_file(const char *src, const char *dst, struct zetl_errbuf *eb);

/* fsync(2) of a directory, so a rename or create inside it is durable. */
enum zetl_err zetl_fs_fsync_dir(const char *path, struct zetl_errbuf *eb);

#endif
