/* zetl load: Kafka change topics -> warehouse (load.c). */
#ifndef ZETL_LOAD_H
#define ZETL_LOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"

struct zetl_load_opts {
    bool from_set;      /* --from given */
    bool from_earliest; /* --from earliest */
    int64_t from_usec;  /* --from TIME: microseconds since the Unix epoch */
    const char *into;   /* --into SCHEMA, or NULL: warehouse.schema */
};

/*
 * Consumes until SIGINT/SIGTERM; returns the exit code: 0 stopped by a
 * signal, 1 the job failed, 2 bad usage.
 */
int zetl_cmd_load(const struct zetl_config *cfg, const struct zetl_load_opts *o);

#endif
