/*
 * buffer.dir, checked first: every command that keeps files there calls
 * zetl_bufdir_check before it connects to anything, so a path it cannot use
 * is named with the config file and line, like any other config error, and
 * not found only after a source connection (or a slot) was made.
 */
#ifndef ZETL_BUFDIR_H
#define ZETL_BUFDIR_H

#include "common/err.h"
#include "config/config.h"

/*
 * Creates buffer.dir and `sub` under it (NULL: none) when missing, and
 * proves a file can be created, written and synced in the deeper of the two.
 * ZETL_ERR_IO with "FILE:LINE: buffer.dir: could not ...: REASON" on failure.
 */
enum zetl_err zetl_bufdir_check(const struct zetl_config *cfg, const char *sub,
                                struct zetl_errbuf *eb);

#endif
