/* The command line's help texts: the overview and one page per command. */
#ifndef ZETL_HELP_H
#define ZETL_HELP_H

#include <stdbool.h>
#include <stdio.h>

/* The overview of every command (zetl --help, zetl help); static storage. */
const char *zetl_help_usage(void);

/* True when `cmd` is a command with a help page (tenant and slots included). */
bool zetl_help_known(const char *cmd);

/*
 * Prints the help page of `cmd` to `out`: its synopsis, options and what it
 * does.  `sub` (may be NULL) is a subcommand of tenant or slots, which must be
 * one of theirs.  Returns false, printing nothing, for an unknown command or
 * subcommand.
 */
bool zetl_help_print(FILE *out, const char *cmd, const char *sub);

#endif
