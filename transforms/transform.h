/*
 * In-flight transforms: tenant tagging, union of same-named tables across
 * tenant schemas, and the cleaning rules of transforms.clean.  Pure functions
 * of (config, relation, values): no I/O, no global state.
 *
 * Rules are resolved once per relation version into a table plan (which
 * columns are dropped, which rule steps apply to each column) so the per-row
 * path does no glob matching.
 */
#ifndef ZETL_TRANSFORM_H
#define ZETL_TRANSFORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/mem.h"
#include "config/config.h"
#include "proto/pgoutput.h"
#include "proto/relcache.h"

/*
 * Cleaning steps for one source column, in rule order.  Only rules with a
 * cleaning step (trim, null_strings, lower, mask) are listed; a dropped column
 * lists none.
 */
struct zetl_col_plan {
    bool drop;
    size_t nrules;
    const struct zetl_clean_rule **rules; /* owned array of borrowed rules (from the config) */
    char *name;                           /* owned: column name, for messages */
};

struct zetl_table_plan {
    char *tenant;               /* owned: tenant id (= the source schema name) */
    char *table;                /* owned: unqualified table name: tables of this name union */
    uint16_t ncols;             /* source columns */
    struct zetl_col_plan *cols; /* owned, ncols entries */
    uint16_t nout;              /* columns kept (not dropped) */
    uint16_t *out_index;        /* owned, nout entries: source column index of each kept column */
    bool has_key;               /* the relation has replica identity key columns */
    bool any_clean;             /* some column has rules: per-row work needed */
    const uint8_t *salt;        /* borrowed: mask salt (from ZETL_MASK_SALT), may be NULL */
    size_t salt_len;
};

/*
 * Builds the plan for `rel` under `cfg`.  `salt` (borrowed, may be NULL) is
 * the mask salt.  Returns an owned plan.
 */
struct zetl_table_plan *zetl_transform_plan_new(const struct zetl_config *cfg,
                                                const struct zetl_relation *rel,
                                                const uint8_t *salt, size_t salt_len);
void zetl_transform_plan_free(struct zetl_table_plan *plan);

/*
 * Applies the plan to one tuple: writes plan->nout values into out (caller
 * provides room for plan->nout).  New values (lowered, masked) are allocated
 * in `ar`; untouched and trimmed values stay slices of the input.  A tuple with
 * a column count different from the relation's, or holding a binary ('b') or
 * unknown column kind, is a protocol error.
 */
enum zetl_err zetl_transform_tuple(const struct zetl_table_plan *plan, const struct zetl_tuple *tup,
                                   struct zetl_value *out, struct zetl_arena *ar,
                                   struct zetl_errbuf *eb);

/* True when `table` (unqualified) is selected by source.tables (an empty list selects all). */
bool zetl_transform_table_selected(const struct zetl_config *cfg, const char *table);
/*
 * True when `schema` is a tenant schema under source.tenants.schemas (an empty
 * list selects none).  System schemas (pg_*, information_schema) never are.
 */
bool zetl_transform_schema_selected(const struct zetl_config *cfg, const char *schema);

#endif
