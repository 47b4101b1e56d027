/*
 * The slots and publications zetl left on the source, checked against the
 * current plan before anything is created: a slot that was dropped or
 * invalidated after zetl consumed from it (a gap), a tenant schema that an
 * existing publication streams through another slot group than the plan
 * says (a move), and zetl slots the configuration no longer uses (they hold
 * WAL).  Also `zetl slots drop-unused | regroup`.
 */
#ifndef ZETL_SLOTS_H
#define ZETL_SLOTS_H

#include <libpq-fe.h>

#include "common/err.h"
#include "config/config.h"
#include "replicator/source.h"
#include "sinks/archive.h"

enum zetl_slot_finding {
    ZETL_SLOT_LOST,   /* dropped after zetl consumed from it, or invalidated: blocks start */
    ZETL_SLOT_MOVED,  /* a tenant schema published by another group's publication: blocks */
    ZETL_SLOT_UNUSED, /* a zetl slot or publication the plan does not use: holds WAL */
};

/*
 * Inspects the zetl slots and publications of the source database (names
 * "<source.slot>_<N>") against plan, and calls report once per finding with
 * its message (valid during the call).  What zetl consumed is read from ar
 * and the warehouse (cfg->warehouse), each optional (ar may be NULL).
 * Returns an error only when the inspection itself fails.  *blocking (when
 * not NULL) gets the number of LOST and MOVED findings.
 */
enum zetl_err zetl_slots_inspect(PGconn *conn, const struct zetl_config *cfg,
                                 const struct zetl_source_plan *plan, struct zetl_archive *ar,
                                 void (*report)(void *arg, enum zetl_slot_finding kind,
                                                const char *msg),
                                 void *arg, size_t *blocking, struct zetl_errbuf *eb);

/*
 * `zetl run`'s check before zetl_source_setup: logs every finding (LOST and
 * MOVED as fatal, UNUSED as a warning) and returns ZETL_ERR_FATAL when any
 * blocks the start.
 */
enum zetl_err zetl_slots_preflight(PGconn *conn, const struct zetl_config *cfg,
                                   const struct zetl_source_plan *plan, struct zetl_archive *ar,
                                   struct zetl_errbuf *eb);

/* `zetl slots SUBCOMMAND`: drop-unused, regroup.  Returns the exit code (0, 1, 2). */
int zetl_cmd_slots(const struct zetl_config *cfg, const char *sub);

#endif
