/*
 * The warehouse driver's own parts, shared by its files, from the bottom up:
 * wh_conn.c (the connection, statements, the catalog cache's lifetime),
 * wh_copy.c (streaming a file into COPY), wh_schema.c (the tables of a
 * batch, creating and evolving warehouse tables), wh.c (bookkeeping, the
 * apply transaction).  Dialects see only wh_dialect.h.
 */
#ifndef ZETL_WH_DRIVER_H
#define ZETL_WH_DRIVER_H

#include "sinks/warehouse/wh_dialect.h"
#include "sinks/warehouse/wh_manifest.h"

/* A column of a warehouse table as the catalog describes it. */
struct whcol {
    char *name; /* owned */
    char *type; /* owned: the dialect's catalog_type form ("varchar(20)", "oid:N" when unknown) */
    bool key;   /* part of the primary key */
};

/* Cached shape of one warehouse table; dropped on every rollback. */
struct whtab {
    char *name; /* owned */
    bool exists;
    size_t ncols;
    struct whcol *cols; /* owned */
};

/*
 * A column type change the apply found and left for its own statement
 * outside the apply's transaction (wh_schema.c), or one that failed there.
 */
struct whalter {
    char *table, *column; /* owned */
    char *type;           /* owned: the manifest type to widen to */
    char *failed;         /* owned: the warehouse's reason it could not; NULL: pending */
};

struct zetl_wh {
    const struct zetl_config *cfg;   /* borrowed */
    const struct zetl_wh_dialect *d; /* static: the dialect of warehouse.kind */
    void *dstate;                    /* owned: the dialect's (d->open, freed by d->release) */
    PGconn *conn;                    /* owned; NULL after a lost connection */
    struct whtab *tabs;              /* owned cache of warehouse tables (wh_schema.c) */
    size_t ntabs;
    uint64_t stage_no;
    struct whalter *alters; /* owned: pending type changes, then those that failed */
    size_t nalters;
};

/* One table of the batch: its files, the union of their columns, and the shapes. */
struct tplan {
    const char *table; /* borrowed */
    size_t nfiles;
    const struct mfile **files;       /* owned array of borrowed */
    struct zetl_wh_file *stage_files; /* owned array, one per file; strings borrowed */
    size_t ncols;
    struct zetl_wh_col *cols;     /* owned array; names borrowed, types borrowed/static */
    struct zetl_wh_shape *shapes; /* owned, one per file */
    size_t *maps;                 /* owned storage of every shape's map */
};

/* ---- wh_conn.c ---- */

/* Connects to warehouse.dsn and applies the dialect's session settings. */
enum zetl_err zetl_wh_conn_open(struct zetl_wh *wh, struct zetl_errbuf *eb);
/* Closes the connection (if any) and forgets the catalog cache. */
void zetl_wh_drop_conn(struct zetl_wh *wh);
/* Frees a cached table's columns. */
void zetl_wh_tab_release_cols(struct whtab *t);
/* Forgets every cached table (after DDL was rolled back, or a lost connection). */
void zetl_wh_cache_clear(struct zetl_wh *wh);
/* Fills eb from a failed result (res may be NULL: the connection's error); drops a dead one. */
enum zetl_err zetl_wh_fail_res(struct zetl_wh *wh, const PGresult *res, struct zetl_errbuf *eb);
/*
 * Runs bookkeeping statement `which` with its parameters (the first n of
 * them at most), part by part; *out (owned) gets part 0's result.
 */
enum zetl_err zetl_wh_run_stmt(struct zetl_wh *wh, enum zetl_wh_offsets_stmt which, int n,
                               const char *const *params, PGresult **out, struct zetl_errbuf *eb);

/* ---- wh_schema.c ---- */

/*
 * Takes the dialect's DDL lock on `table` (NULL: the schema) for the rest
 * of the transaction.
 */
enum zetl_err zetl_wh_ddl_lock(struct zetl_wh *wh, const char *table, struct zetl_errbuf *eb);
/*
 * The batch's tables in the order the manifest first names them, with their
 * files; *plans (owned, released with zetl_wh_plan_release each) has
 * *nplans entries.  m must outlive them.
 */
void zetl_wh_plan_tables(const struct manifest *m, struct tplan **plans, size_t *nplans);
void zetl_wh_plan_release(struct tplan *p);
/*
 * Makes the warehouse table ready for the batch's rows of p->table (t
 * describes it; its cols are ignored): the union of the files' columns in
 * p, the table created or evolved to them, p's types the warehouse's.  Sets
 * *reason (owned) instead when the table must stop.
 */
enum zetl_err zetl_wh_plan_prepare(struct zetl_wh *wh, const struct zetl_wh_table *t,
                                   struct tplan *p, char **reason, struct zetl_errbuf *eb);
/* True when the last plan_prepare left column type changes pending (wh->alters). */
bool zetl_wh_alters_pending(const struct zetl_wh *wh);
/*
 * Runs the pending type changes, each in a statement (or, with a DDL lock,
 * a transaction) of its own, outside any apply: only where the catalog
 * still has the narrower type, so running one again changes nothing.  One
 * the warehouse refuses is kept as failed: the next plan_prepare stops its
 * table with the warehouse's reason.  Errors other than a refusal (a lost
 * connection) are returned.
 */
enum zetl_err zetl_wh_run_alters(struct zetl_wh *wh, struct zetl_errbuf *eb);
/* Forgets the pending type changes. */
void zetl_wh_alters_drop_pending(struct zetl_wh *wh);
/* Forgets every pending and failed type change. */
void zetl_wh_alters_clear(struct zetl_wh *wh);

/* ---- wh.c ---- */

/* (Re)connects when the connection was lost, bootstrapping the schema. */
enum zetl_err zetl_wh_ensure_conn(struct zetl_wh *wh, struct zetl_errbuf *eb);

#endif
