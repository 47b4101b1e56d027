/*
 * The warehouse sink's dialect layer, private to sinks/warehouse/.  The
 * driver (wh.c) applies a batch the same way on every warehouse and calls
 * one table of functions, struct zetl_wh_dialect, for everything a warehouse
 * spells or does differently: PostgreSQL (wh_pg.c) and Redshift
 * (wh_redshift.c, SQL in wh_redshift_sql.c) each define one.  A new
 * warehouse is one more file that fills one more table, listed in wh.c's
 * `dialects`.
 *
 * Also here: the SQL generators the dialects share (wh_sql.c) and each
 * dialect's own (pinned by the unit tests), and the few driver services a
 * dialect's operations call.  Generators are pure functions (no
 * connection); every identifier in the generated SQL is quoted, and no value
 * is ever part of the text (values travel by COPY or as parameters) but
 * numbers computed here and Redshift's escaped S3 URL, IAM role and region.
 */
#ifndef ZETL_WH_DIALECT_H
#define ZETL_WH_DIALECT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "config/config.h"
#include "sinks/warehouse/wh.h"

/* ---- what the generators see ------------------------------------------------ */

/* How a column's type may change when a batch brings `to` and the warehouse has `from`. */
enum zetl_wh_type_change {
    ZETL_WH_TYPE_SAME = 0,
    ZETL_WH_TYPE_WIDER,        /* `to` holds every value of `from`: ALTER COLUMN TYPE */
    ZETL_WH_TYPE_NARROWER,     /* `from` holds every value of `to`: keep the warehouse type */
    ZETL_WH_TYPE_INCOMPATIBLE, /* the table stops */
};

/* A column of a warehouse table, as the generators see it. */
struct zetl_wh_col {
    const char *name; /* borrowed */
    const char *type; /* borrowed: canonical manifest type ("varchar(20)", "_int4") */
    bool key;         /* part of the source primary key */
};

/* One table of one batch: the warehouse table and its staging table. */
struct zetl_wh_table {
    const char *schema;        /* borrowed: warehouse.schema */
    const char *table;         /* borrowed: logical table name */
    const char *tenant_column; /* borrowed */
    const char *stage;         /* borrowed: temporary staging table name */
    enum zetl_wh_deletes deletes;
    size_t ncols;
    const struct zetl_wh_col *cols; /* borrowed: union of the batch's columns, source order */
    /*
     * Keyed tables of a dialect with table_rows_sql: the merge looks up the
     * batch's keys in the warehouse table's primary key index (nested loop)
     * instead of letting the planner choose; set when the table is much
     * larger than the batch.
     */
    bool by_key;
};

/* One file of the batch: map[k] is the index in zetl_wh_table.cols of the file's column k. */
struct zetl_wh_shape {
    size_t ncols;
    const size_t *map; /* borrowed */
};

/* Statements on the bookkeeping tables of warehouse.schema (parameters in comments). */
enum zetl_wh_offsets_stmt {
    ZETL_WH_SQL_OFFSET_GET,        /* $1 stream -> last_lsn, end_lsn */
    ZETL_WH_SQL_OFFSET_LOCK,       /* $1 stream: makes sure the row exists */
    ZETL_WH_SQL_OFFSET_LOCKED_GET, /* $1 stream -> last_lsn, row locked */
    ZETL_WH_SQL_OFFSET_SET,        /* $1 stream, $2 last_lsn, $3 end_lsn, $4 batch */
    ZETL_WH_SQL_OFFSET_PROGRESS,   /* $1 stream, $2 end_lsn (only forward) */
    /* $1 stream -> table_name, state (stopped by any stream), the stream's last_lsn, reason */
    ZETL_WH_SQL_STATE_GET,
    ZETL_WH_SQL_STATE_APPLIED, /* $1 table, $2 last_lsn, $3 stream */
    ZETL_WH_SQL_STATE_STOP,    /* $1 table, $2 reason, $3 stopped_at_lsn, $4 stream */
    /* $1 schema, $2 table -> name, the dialect's type column(s), primary key flag ("t") last */
    ZETL_WH_SQL_COLUMNS,
};

/* One archive file of the table being staged, as the batch's manifest describes it. */
struct zetl_wh_file {
    const char *name;   /* borrowed: file name inside the batch directory */
    const char *sha256; /* borrowed: hex digest of the compressed bytes */
    uint64_t bytes;     /* compressed size */
};

/* Where a dialect's stage finds one table's rows of a batch. */
struct zetl_wh_stage_src {
    const char *dir;    /* borrowed: the local batch directory (manifest.json, the files) */
    const char *stream; /* borrowed */
    uint64_t first_lsn, last_lsn;
    size_t nfiles;
    const struct zetl_wh_file *files;   /* borrowed, in manifest order */
    const struct zetl_wh_shape *shapes; /* borrowed, one per file */
};

/* ---- the dialect table ----------------------------------------------------------
 * Generators return owned SQL text (one or more statements separated by
 * ";\n").  Fields documented "NULL:" are optional; every other one is set.
 */
struct zetl_wh_dialect {
    const char *name;       /* static: "postgres", "redshift" */
    enum zetl_wh_kind kind; /* the warehouse.kind it serves */

    /* -- session -- */
    /*
     * Checks the configuration for this warehouse (ZETL_ERR_USAGE naming the
     * key) and makes the dialect's state, handed to stage and
     * explain_failure; *state may stay NULL.  cfg outlives the state.  NULL:
     * nothing to check or keep.
     */
    enum zetl_err (*open)(const struct zetl_config *cfg, void **state, struct zetl_errbuf *eb);
    void (*release)(void *state); /* frees open's state; NULL when open keeps none */
    const char *session_sql;      /* static: runs on every new connection; NULL: none */
    /*
     * Static, NULL-terminated: substrings of a server error message that make
     * it retriable beyond the SQLSTATE classes the driver knows; NULL: none.
     */
    const char *const *retry_messages;

    /* -- bookkeeping -- */
    char *(*begin_sql)(const char *schema); /* starts an apply's transaction */
    /*
     * Part `part` (0, 1, ...) of bookkeeping statement `which`, NULL past the
     * last; *nparams is how many of the statement's parameters (the first
     * ones) the part takes.  Only part 0 may return rows.
     */
    char *(*offsets_sql)(const char *schema, enum zetl_wh_offsets_stmt which, size_t part,
                         int *nparams);
    /* Idle progress is written in a transaction of its own, begun by begin_sql. */
    bool progress_in_txn;
    /* The type of row `row` of the COLUMNS result in manifest form; owned. */
    char *(*catalog_type)(const PGresult *res, int row);

    /* -- tables (the shared DDL generators of wh_sql.c read these) -- */
    const char *text_type;               /* static: text columns of the bookkeeping tables */
    const char *tenant_type;             /* static: the tenant column */
    char *(*col_type)(const char *type); /* owned DDL type of a manifest column type */
    /* Owned column definition (type and attributes) of CREATE and ADD COLUMN; NULL: col_type. */
    char *(*col_def)(const char *type);
    /* Appends what follows the column list of CREATE TABLE; NULL: nothing. */
    void (*table_options)(struct zetl_buf *b, const struct zetl_wh_table *t);
    /*
     * Static: takes a lock, held to the end of the transaction, that
     * serializes DDL on table $2 of schema $1 ('' for the schema itself)
     * between sessions; NULL when the dialect's applies never overlap.
     */
    const char *ddl_lock_sql;
    /* How a warehouse column of type `from` (catalog_type's form) takes manifest type `to`. */
    enum zetl_wh_type_change (*type_change)(const char *from, const char *to);
    /* A primary key column's type never changes: a wider one stops the table. */
    bool key_type_fixed;
    /*
     * Static, NULL-terminated: the warehouse's system column names, which a
     * source column may not have (its table stops); NULL: none beyond the
     * source's own.
     */
    const char *const *system_columns;

    /* -- staging -- */
    /*
     * Creates the staging table t->stage and loads the table's files of the
     * batch into it, each row's _zetl_file being its file's index in src.
     */
    enum zetl_err (*stage)(struct zetl_wh *wh, void *state, const struct zetl_wh_table *t,
                           const struct zetl_wh_stage_src *src, struct zetl_errbuf *eb);
    /* Removes staged rows at or below the LSN given as $1. */
    char *(*skip_applied_sql)(const struct zetl_wh_table *t);
    /*
     * Removes the staged rows a replay leaves out: of transactions below $1 or
     * above $2 (BIGINT LSNs), and, with ntenants > 0, of tenants other than
     * $3 ... $(ntenants + 2).
     */
    char *(*replay_filter_sql)(const struct zetl_wh_table *t, size_t ntenants);
    /* One row: counts of truncates, deletes, updates needing a fill, and all rows staged. */
    char *(*stage_stats_sql)(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                             size_t nshapes);
    /* Indexes (and analyzes) a large stage whose updates need a fill; NULL: never. */
    char *(*stage_index_sql)(const struct zetl_wh_table *t);
    /* Analyzes any other large stage; NULL: never. */
    char *(*stage_analyze_sql)(const struct zetl_wh_table *t);
    /*
     * Static: $1 schema, $2 table -> the planner's row estimate of the
     * warehouse table (a keyed table much larger than the stage is merged
     * by_key); NULL: never by key.
     */
    const char *table_rows_sql;
    /*
     * Static: the reason a table without a primary key is stopped when it
     * gets deletes or before-images; NULL when such a table takes them.
     */
    const char *keyless_deletes_stop;

    /* -- merge -- */
    /* Truncates: the tenants' warehouse rows, and staged rows ordered before the truncate. */
    char *(*truncate_sql)(const struct zetl_wh_table *t);
    /* Unchanged-column sets of updates, predecessor links, fill from the warehouse. */
    char *(*fill_prepare_sql)(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                              size_t nshapes);
    /* One round of filling unchanged values from predecessor images; repeated until 0 rows. */
    char *(*fill_round_sql)(const struct zetl_wh_table *t);
    /* The merge of the (filled) stage into the warehouse table, per warehouse.deletes. */
    char *(*merge_sql)(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                       size_t nshapes);
    /* Deletes the rows of tenant $1 from t's warehouse table (only schema, table, tenant_column
     * set). */
    char *(*purge_sql)(const struct zetl_wh_table *t);
    /* Drops the stage and its helper tables; NULL: they go with the transaction. */
    char *(*drop_stage_sql)(const struct zetl_wh_table *t);
    /*
     * After a failed apply was rolled back: appends to eb what the warehouse
     * recorded about the failure (a COPY's load error); NULL: nothing.
     */
    void (*explain_failure)(struct zetl_wh *wh, void *state, struct zetl_errbuf *eb);
    /*
     * The live probe (zetl_wh_probe) on wh's connection, bootstrap not run:
     * fn per construct, *failed counts those that misbehave.  NULL: nothing
     * to probe.
     */
    enum zetl_err (*probe)(struct zetl_wh *wh, void *state, zetl_wh_probe_fn fn, void *arg,
                           int *failed, struct zetl_errbuf *eb);
};

extern const struct zetl_wh_dialect zetl_wh_pg_dialect;
extern const struct zetl_wh_dialect zetl_wh_rs_dialect;

/* ---- driver services for a dialect's operations (wh.c, wh_copy.c) ---------------- */

/*
 * Runs one statement with n parameters (n == 0: possibly several
 * statements); *out (owned by the caller) gets the result when out is not
 * NULL.  Errors are classified ZETL_ERR_RETRY or ZETL_ERR_FATAL; a lost
 * connection is dropped (re-opened by the next public call).
 */
enum zetl_err zetl_wh_exec(struct zetl_wh *wh, const char *sql, int n, const char *const *params,
                           PGresult **out, struct zetl_errbuf *eb);
/* zetl_wh_exec of owned SQL text, which it frees. */
enum zetl_err zetl_wh_exec_owned(struct zetl_wh *wh, char *sql, PGresult **out,
                                 struct zetl_errbuf *eb);
/*
 * Starts `copy_sql` (owned, freed here: a COPY ... FROM STDIN) and streams
 * dir/f->name through zstd into it, checking the compressed bytes against
 * f's sha256 and size (ZETL_ERR_FATAL naming the file when they differ).
 */
enum zetl_err zetl_wh_copy_file(struct zetl_wh *wh, char *copy_sql, const char *dir,
                                const struct zetl_wh_file *f, struct zetl_errbuf *eb);
/* The first line of msg (NULL: ""), cut to fit out[n]. */
void zetl_wh_first_line(const char *msg, char *out, size_t n);

/* True when `name` is one of d's system_columns (names are case-sensitive, as zetl quotes them). */
bool zetl_wh_system_column(const struct zetl_wh_dialect *d, const char *name);

/* ---- shared by the dialects (wh_sql.c) --------------------------------------------
 * The parts of the SQL every dialect speaks, parametrized by the table.
 */

/*
 * The manifest type a warehouse column is compared in: built-in types as the
 * manifest spells them, custom types ("schema.name", "oid:N") and anything
 * unexpected as "text".  Returns a pointer into `manifest_type` or a static
 * string (borrowed).
 */
const char *zetl_wh_canon_type(const char *manifest_type);

char *zetl_wh_sql_bootstrap(const struct zetl_wh_dialect *d, const char *schema);
/* Brings a _zetl_table_state of an earlier release (one row per table) to one row per stream. */
char *zetl_wh_sql_state_upgrade(const struct zetl_wh_dialect *d, const char *schema);
/* The STATE_GET query; `stream_param` is the dialect's text of parameter $1. */
void zetl_wh_sql_state_get(struct zetl_buf *b, const char *schema, const char *stream_param);
char *zetl_wh_sql_create_table(const struct zetl_wh_dialect *d, const struct zetl_wh_table *t);
char *zetl_wh_sql_add_column(const struct zetl_wh_dialect *d, const struct zetl_wh_table *t,
                             const struct zetl_wh_col *c);
char *zetl_wh_sql_alter_type(const struct zetl_wh_dialect *d, const struct zetl_wh_table *t,
                             const struct zetl_wh_col *c);

/*
 * Building blocks: each appends to b.  Aliases are SQL text written as given.
 * Identifiers and literals are quoted by common/sqlquote.h; a literal only
 * for text the caller has refused backslashes and control characters in.
 */
void zetl_wh_sql_qual(struct zetl_buf *b, const char *alias, const char *s); /* alias."s" */
void zetl_wh_sql_table(struct zetl_buf *b, const struct zetl_wh_table *t);   /* "schema"."table" */
size_t zetl_wh_sql_nkeys(const struct zetl_wh_table *t);
/* a.tenant = c.tenant AND a.k1 = c.k1 ... */
void zetl_wh_sql_key_match(struct zetl_buf *b, const struct zetl_wh_table *t, const char *a,
                           const char *c);
void zetl_wh_sql_key_list(struct zetl_buf *b, const struct zetl_wh_table *t); /* tenant, k1, ... */
/* k1, ..., tenant: the key as sorts, DISTINCT ON and PARTITION BY compare it (cheapest first) */
void zetl_wh_sql_key_list_sort(struct zetl_buf *b, const struct zetl_wh_table *t);
/* tenant, c1, c2, ... qualified by alias when not NULL */
void zetl_wh_sql_col_list(struct zetl_buf *b, const struct zetl_wh_table *t, const char *alias);
/* " AND NOT alias._zetl_deleted" (soft), " AND alias._zetl_valid_to IS NULL" (history), "" */
void zetl_wh_sql_live(struct zetl_buf *b, const struct zetl_wh_table *t, const char *alias);
/* INSERT INTO "s"."t" (tenant, cols, _zetl_lsn, _zetl_synced_at[, mode columns]) */
void zetl_wh_sql_insert_head(struct zetl_buf *b, const struct zetl_wh_table *t);
/* " OR _zetl_file IN (f, ...)" of the files lacking a union column; false when none does. */
bool zetl_wh_sql_files_absent(struct zetl_buf *b, const struct zetl_wh_table *t,
                              const struct zetl_wh_shape *shapes, size_t nshapes);
/* ", "c1" <type(c1)>, ...": the table's columns and types (type returns owned text). */
void zetl_wh_sql_col_defs(struct zetl_buf *b, const struct zetl_wh_table *t,
                          char *(*type)(const char *type));
/* " (_zetl_op, ..., _zetl_unchanged, tenant, c...)": a COPY's column list for one file. */
void zetl_wh_sql_copy_columns(struct zetl_buf *b, const struct zetl_wh_table *t,
                              const struct zetl_wh_shape *shape);
/* Staging statements over `stage`, the staging table as SQL text. */
char *zetl_wh_sql_stage_stats(const char *stage, const struct zetl_wh_table *t,
                              const struct zetl_wh_shape *shapes, size_t nshapes);
char *zetl_wh_sql_skip_applied(const char *stage); /* $1: the LSN */
/* zetl_wh_dialect.replay_filter_sql over `stage`, the tenants compared as `text_type`. */
/* DELETE FROM t WHERE <tenant column> = <param>: a tenant purge, the tenant as $1. */
char *zetl_wh_sql_purge(const struct zetl_wh_table *t, const char *param);
char *zetl_wh_sql_replay_filter(const char *stage, const struct zetl_wh_table *t, size_t ntenants,
                                const char *text_type);
/* The buffer's text as an owned string; releases b. */
char *zetl_wh_sql_take(struct zetl_buf *b);

/* ---- PostgreSQL dialect (wh_pg.c) ---------------------------------------------------
 * Arrays, DISTINCT ON, LATERAL, temporary tables ON COMMIT DROP, COPY FROM
 * STDIN.  Manifest types are PostgreSQL's, so the driver also merges the
 * files' column types with zetl_wh_pg_type_change.
 */

/* PostgreSQL type text of a manifest column type ("_int4" -> "int4[]", "tenant.mood" -> "text"). */
char *zetl_wh_pg_type(const char *manifest_type);
/* Both arguments in canonical manifest form (zetl_wh_canon_type). */
enum zetl_wh_type_change zetl_wh_pg_type_change(const char *from, const char *to);

char *zetl_wh_pg_bootstrap_sql(const char *schema);
char *zetl_wh_pg_create_table_sql(const struct zetl_wh_table *t);
char *zetl_wh_pg_add_column_sql(const struct zetl_wh_table *t, const struct zetl_wh_col *c);
char *zetl_wh_pg_alter_type_sql(const struct zetl_wh_table *t, const struct zetl_wh_col *c);
char *zetl_wh_pg_stage_sql(const struct zetl_wh_table *t);
/* Sets the file number the rows of the next COPY get. */
char *zetl_wh_pg_file_default_sql(const struct zetl_wh_table *t, size_t file_no);
/* COPY of one file (its columns in file order) into the staging table. */
char *zetl_wh_pg_copy_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shape);
char *zetl_wh_pg_stage_stats_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                 size_t nshapes);
char *zetl_wh_pg_skip_applied_sql(const struct zetl_wh_table *t);
char *zetl_wh_pg_truncate_sql(const struct zetl_wh_table *t);
char *zetl_wh_pg_replay_filter_sql(const struct zetl_wh_table *t, size_t ntenants);
char *zetl_wh_pg_purge_sql(const struct zetl_wh_table *t);
char *zetl_wh_pg_fill_prepare_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                  size_t nshapes);
char *zetl_wh_pg_fill_round_sql(const struct zetl_wh_table *t);
char *zetl_wh_pg_stage_index_sql(const struct zetl_wh_table *t);
char *zetl_wh_pg_stage_analyze_sql(const struct zetl_wh_table *t);
char *zetl_wh_pg_merge_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                           size_t nshapes);
char *zetl_wh_pg_offsets_sql(const char *schema, enum zetl_wh_offsets_stmt which);

/* ---- Redshift dialect (wh_redshift.c, wh_redshift_sql.c) ----------------------------
 * Same staging table layout and merge as PostgreSQL, in SQL Redshift speaks:
 * no arrays (the unchanged-column sets are ",i,j," strings), no DISTINCT ON
 * (ROW_NUMBER), no ON CONFLICT (UPDATE + INSERT ... WHERE NOT EXISTS under a
 * LOCK), no target aliases in DELETE, GETDATE() for now().  The staging
 * table is temporary but not ON COMMIT DROP: zetl_wh_rs_drop_stage_sql
 * removes it and its helpers at the end of the table's apply.
 */

/* Redshift DDL type of a manifest type (docs/warehouse.md, "Redshift"); owned. */
char *zetl_wh_rs_type(const char *manifest_type);
/* The type and, for VARCHAR, "ENCODE ZSTD": an encoding that lets ALTER widen it; owned. */
char *zetl_wh_rs_col_def(const char *manifest_type);
/*
 * The type a Redshift catalog reports (format_type() text: "character
 * varying(256)", "numeric(12,2)", "super") in the form zetl_wh_rs_type
 * produces ("VARCHAR(256)"); owned.
 */
char *zetl_wh_rs_catalog_type(const char *format_type);
/* Like zetl_wh_pg_type_change, for Redshift types (zetl_wh_rs_type form). */
enum zetl_wh_type_change zetl_wh_rs_type_change(const char *from, const char *to);
/* DISTKEY and SORTKEY of a warehouse table (zetl_wh_dialect.table_options). */
void zetl_wh_rs_table_options(struct zetl_buf *b, const struct zetl_wh_table *t);

char *zetl_wh_rs_stage_sql(const struct zetl_wh_table *t);
/*
 * COPY of one file from S3: `manifest_url` is the file's COPY manifest,
 * `iam_role` and `region` are written as escaped string literals.
 */
char *zetl_wh_rs_copy_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shape,
                          const char *manifest_url, const char *iam_role, const char *region);
/* Marks the rows the last COPY loaded (file 0 by default) as file `file_no`. */
char *zetl_wh_rs_file_mark_sql(const struct zetl_wh_table *t, size_t file_no);
char *zetl_wh_rs_stage_stats_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                 size_t nshapes);
char *zetl_wh_rs_skip_applied_sql(const struct zetl_wh_table *t);
char *zetl_wh_rs_truncate_sql(const struct zetl_wh_table *t);
char *zetl_wh_rs_replay_filter_sql(const struct zetl_wh_table *t, size_t ntenants);
char *zetl_wh_rs_purge_sql(const struct zetl_wh_table *t);
char *zetl_wh_rs_fill_prepare_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                  size_t nshapes);
char *zetl_wh_rs_fill_round_sql(const struct zetl_wh_table *t);
char *zetl_wh_rs_merge_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                           size_t nshapes);
char *zetl_wh_rs_drop_stage_sql(const struct zetl_wh_table *t);
/* BEGIN and the lock that serializes appliers (Redshift has no SELECT ... FOR UPDATE). */
char *zetl_wh_rs_begin_sql(const char *schema);
/* zetl_wh_dialect.offsets_sql: the upserts are an UPDATE and an INSERT ... WHERE none. */
char *zetl_wh_rs_offsets_sql(const char *schema, enum zetl_wh_offsets_stmt which, size_t part,
                             int *nparams);
/*
 * Load error detail of the COPY of the data file $1 (its s3:// URL) in this
 * session: SYS_LOAD_ERROR_DETAIL with sys_view, else STL_LOAD_ERRORS.
 */
const char *zetl_wh_rs_load_error_sql(bool sys_view);

/*
 * The live probe (docs/warehouse.md, "Redshift"): a construct zetl's SQL
 * relies on that the documentation does not settle, checked on a scratch
 * table in a transaction that is rolled back.  The setup's statements run,
 * then the check, a query of one text value, must return `expect`.  With
 * setup_fails the setup (a bad COPY) must fail, and the check is the load
 * error lookup of data file `param`, after the rollback: its line must be
 * `expect`.
 */
struct zetl_wh_rs_probe {
    const char *name;   /* static: the construct, as reported */
    char *setup;        /* owned: statements separated by ";\n" */
    char *check;        /* owned */
    const char *expect; /* static */
    bool setup_fails;
    const char *param; /* borrowed or NULL */
};

/* Where the probe's COPY files are: a good and a bad CSV file with their COPY manifests. */
struct zetl_wh_rs_probe_files {
    const char *good_manifest, *bad_manifest, *bad_data; /* s3:// URLs */
    const char *iam_role, *region;                       /* region may be NULL */
};

#define ZETL_WH_RS_NPROBES 8

/* The probes, those that COPY only when f is given; returns how many went into out. */
size_t zetl_wh_rs_probes(const char *schema, const struct zetl_wh_rs_probe_files *f,
                         struct zetl_wh_rs_probe out[ZETL_WH_RS_NPROBES]);
void zetl_wh_rs_probes_release(struct zetl_wh_rs_probe *p, size_t n);

#endif
