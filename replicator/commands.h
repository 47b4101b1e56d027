/* The one-shot commands: check (preflight) and verify (source vs warehouse). */
#ifndef ZETL_COMMANDS_H
#define ZETL_COMMANDS_H

#include "config/config.h"

/* Prints one line per finding; returns 0 when nothing blocks replication, 1 otherwise. */
int zetl_cmd_check(const struct zetl_config *cfg);
/* Returns 0 when source and warehouse agree, 1 with a diff report, 2 on bad usage. */
int zetl_cmd_verify(const struct zetl_config *cfg);

#endif
