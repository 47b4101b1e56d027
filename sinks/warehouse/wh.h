/*
 * The warehouse sink: applies archived batches to a warehouse exactly once.
 * Each batch is applied in one warehouse transaction that also records the
 * batch's last commit LSN in <schema>._zetl_offsets; a batch at or below the
 * stored offset is skipped.  Dialects: PostgreSQL (COPY FROM STDIN + merge,
 * wh_pg.c) and Redshift (COPY FROM S3 + merge, wh_redshift.c), chosen by
 * warehouse.kind.
 */
#ifndef ZETL_WH_H
#define ZETL_WH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "config/config.h"

struct zetl_wh;

/*
 * Connects to cfg->warehouse.dsn, creates the schema and _zetl_offsets if
 * missing.  ZETL_ERR_RETRY when the server is unreachable, ZETL_ERR_FATAL for
 * authentication or permission problems.  With warehouse.kind redshift,
 * ZETL_ERR_USAGE unless archive.url is s3:// (on Amazon S3, no
 * archive.s3.endpoint) and warehouse.iam_role is set.  cfg is borrowed and
 * must outlive wh.
 */
enum zetl_err zetl_wh_open(const struct zetl_config *cfg, struct zetl_wh **out,
                           struct zetl_errbuf *eb);
void zetl_wh_free(struct zetl_wh *wh);

/*
 * The last applied commit LSN and end LSN of `stream` (0, 0 when none).
 * ZETL_ERR_RETRY when the connection is lost (reconnects on the next call).
 */
enum zetl_err zetl_wh_offset(struct zetl_wh *wh, const char *stream, uint64_t *last_lsn,
                             uint64_t *end_lsn, struct zetl_errbuf *eb);

/*
 * Applies the batch stored in directory `dir` (manifest.json + its files),
 * verifying every file's sha256 against the manifest while reading it.
 * Redshift reads only manifest.json from `dir` and COPYs the files from the
 * batch's S3 prefix; a failing COPY is ZETL_ERR_FATAL with the server's load
 * error detail, the batch and the file (the transaction is rolled back).
 * Returns ZETL_OK also when the batch was already applied (skipped).
 * ZETL_ERR_RETRY: connection lost or server unavailable (nothing committed;
 * call again).  ZETL_ERR_FATAL: the batch cannot be applied as is (checksum
 * mismatch, a table that can no longer take its rows): the message names the
 * batch, file and table.  Tables stopped earlier are skipped with a warning.
 */
enum zetl_err zetl_wh_apply_dir(struct zetl_wh *wh, const char *dir, struct zetl_errbuf *eb);

/*
 * Records that `stream` has seen everything up to end_lsn with nothing left
 * to apply (idle progress), so `zetl verify` can tell the warehouse is
 * current.  Never moves the offset backwards.
 */
enum zetl_err zetl_wh_note_progress(struct zetl_wh *wh, const char *stream, uint64_t end_lsn,
                                    struct zetl_errbuf *eb);

/*
 * Applies only the rows of `table` (NULL: of every table) in the batch at
 * `dir`, regardless of the stream offset (which it neither checks nor
 * moves): the resync of a table that was stopped, dropped and whose
 * _zetl_table_state rows were deleted, or a rebuild.  Idempotent: the
 * table's own last applied LSN of the batch's stream (in _zetl_table_state)
 * skips what was applied before.  ZETL_ERR_FATAL when the table is still
 * stopped.
 */
enum zetl_err zetl_wh_apply_dir_table(struct zetl_wh *wh, const char *dir, const char *table,
                                      struct zetl_errbuf *eb);

/*
 * In one transaction, deletes every row of warehouse table `table` (NULL:
 * of every table of warehouse.schema but zetl's bookkeeping) and its
 * _zetl_table_state rows, so that zetl_wh_apply_dir_table rebuilds it from
 * the archive.  The stream offsets stay.
 */
enum zetl_err zetl_wh_clear_table(struct zetl_wh *wh, const char *table, struct zetl_errbuf *eb);

/* PostgreSQL type text of a manifest column type ("_int4" -> "int4[]", "tenant.mood" -> "text"). */
char *zetl_wh_pg_type(const char *manifest_type);

/* ---- SQL generation: the dialect layer, pure functions (wh_pg.c) ------------
 * Used by wh.c and by the unit tests; a Redshift dialect provides its own.
 * Every identifier in the generated SQL is quoted; no value is ever part of
 * the text (values travel by COPY or as parameters).
 */

/* Identifier quoted for SQL: a"b -> "a""b".  Returns owned memory. */
char *zetl_wh_quote_ident(const char *s);

/*
 * The manifest type a warehouse column is compared in: built-in types as the
 * manifest spells them, custom types ("schema.name", "oid:N") and anything
 * unexpected as "text".  Returns a pointer into `manifest_type` or a static
 * string (borrowed).
 */
const char *zetl_wh_canon_type(const char *manifest_type);

/* How a column's type may change when a batch brings `to` and the warehouse has `from`. */
enum zetl_wh_type_change {
    ZETL_WH_TYPE_SAME = 0,
    ZETL_WH_TYPE_WIDER,        /* `to` holds every value of `from`: ALTER COLUMN TYPE */
    ZETL_WH_TYPE_NARROWER,     /* `from` holds every value of `to`: keep the warehouse type */
    ZETL_WH_TYPE_INCOMPATIBLE, /* the table stops */
};

/* Both arguments in canonical manifest form (zetl_wh_canon_type). */
enum zetl_wh_type_change zetl_wh_pg_type_change(const char *from, const char *to);

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
     * PostgreSQL, keyed tables: the merge looks up the batch's keys in the
     * warehouse table's primary key index (nested loop) instead of letting
     * the planner choose; set when the table is much larger than the batch.
     */
    bool by_key;
};

/* One file of the batch: map[k] is the index in zetl_wh_table.cols of the file's column k. */
struct zetl_wh_shape {
    size_t ncols;
    const size_t *map; /* borrowed */
};

/* Each returns owned SQL text (one or more statements separated by ";\n"). */
char *zetl_wh_pg_bootstrap_sql(const char *schema);
char *zetl_wh_pg_create_table_sql(const struct zetl_wh_table *t);
char *zetl_wh_pg_add_column_sql(const struct zetl_wh_table *t, const struct zetl_wh_col *c);
char *zetl_wh_pg_alter_type_sql(const struct zetl_wh_table *t, const struct zetl_wh_col *c);
char *zetl_wh_pg_stage_sql(const struct zetl_wh_table *t);
/* Sets the file number the rows of the next COPY get. */
char *zetl_wh_pg_file_default_sql(const struct zetl_wh_table *t, size_t file_no);
/* COPY of one file (its columns in file order) into the staging table. */
char *zetl_wh_pg_copy_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shape);
/* Counts of truncates, deletes, updates needing a fill, and all rows in the stage. */
char *zetl_wh_pg_stage_stats_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                 size_t nshapes);
/* Removes staged rows at or below the LSN given as $1. */
char *zetl_wh_pg_skip_applied_sql(const struct zetl_wh_table *t);
/* Truncates: the tenants' warehouse rows, and staged rows ordered before the truncate. */
char *zetl_wh_pg_truncate_sql(const struct zetl_wh_table *t);
/* Unchanged-column sets of updates, predecessor links, fill from the warehouse. */
char *zetl_wh_pg_fill_prepare_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                  size_t nshapes);
/* One round of filling unchanged values from predecessor images; repeat until 0 rows. */
char *zetl_wh_pg_fill_round_sql(const struct zetl_wh_table *t);
/* Indexes the staging table for the fill on large batches. */
char *zetl_wh_pg_stage_index_sql(const struct zetl_wh_table *t);
/* The merge of the (filled) stage into the warehouse table, per warehouse.deletes. */
char *zetl_wh_pg_merge_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                           size_t nshapes);

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
    ZETL_WH_SQL_COLUMNS,       /* $1 schema, $2 table -> attname, atttypid, atttypmod, pk */
};
char *zetl_wh_pg_offsets_sql(const char *schema, enum zetl_wh_offsets_stmt which);
/* $1 schema, $2 table -> the planner's row count estimate (-1: never vacuumed nor analyzed). */
char *zetl_wh_pg_table_rows_sql(void);

/* ---- shared by the dialects (wh_pg.c) ----------------------------------------
 * The parts of the SQL both dialects speak, parametrized by what differs.
 */

/* What the shared DDL generators need to know of a dialect. */
struct zetl_wh_dialect {
    const char *name;                    /* static: "postgres", "redshift" */
    const char *text_type;               /* static: text columns of the bookkeeping tables */
    const char *tenant_type;             /* static: the tenant column */
    char *(*col_type)(const char *type); /* owned DDL type of a column type */
    /* Appends what follows the column list of CREATE TABLE; NULL for nothing. */
    void (*table_options)(struct zetl_buf *b, const struct zetl_wh_table *t);
    /*
     * Static: takes a lock, held to the end of the transaction, that
     * serializes DDL on table $2 of schema $1 ('' for the schema itself)
     * between sessions; NULL when the dialect's applies never overlap.
     */
    const char *ddl_lock_sql;
};

extern const struct zetl_wh_dialect zetl_wh_pg_dialect;
extern const struct zetl_wh_dialect zetl_wh_rs_dialect;

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

/* Building blocks: each appends to b.  Aliases are SQL text written as given. */
void zetl_wh_sql_ident(struct zetl_buf *b, const char *s);                   /* "a""b" */
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
/* Staging statements over `stage`, the staging table as SQL text. */
char *zetl_wh_sql_stage_stats(const char *stage, const struct zetl_wh_table *t,
                              const struct zetl_wh_shape *shapes, size_t nshapes);
char *zetl_wh_sql_skip_applied(const char *stage); /* $1: the LSN */
/* The buffer's text as an owned string; releases b. */
char *zetl_wh_sql_take(struct zetl_buf *b);

/* ---- Redshift dialect (wh_redshift.c) ---------------------------------------
 * Same staging table layout and merge as PostgreSQL, in SQL Redshift speaks:
 * no arrays (the unchanged-column sets are ",i,j," strings), no DISTINCT ON
 * (ROW_NUMBER), no ON CONFLICT (UPDATE + INSERT ... WHERE NOT EXISTS under a
 * LOCK), no target aliases in DELETE, GETDATE() for now().  The staging
 * table is temporary but not ON COMMIT DROP: zetl_wh_rs_drop_stage_sql
 * removes it and its helpers at the end of the table's apply.
 */

/* Redshift DDL type of a manifest type (docs/warehouse.md, "Redshift"); owned. */
char *zetl_wh_rs_type(const char *manifest_type);
/*
 * The type a Redshift catalog reports (format_type() text: "character
 * varying(256)", "numeric(12,2)", "super") in the form zetl_wh_rs_type
 * produces ("VARCHAR(256)"); owned.
 */
char *zetl_wh_rs_catalog_type(const char *format_type);
/* Like zetl_wh_pg_type_change, for Redshift types (zetl_wh_rs_type form). */
enum zetl_wh_type_change zetl_wh_rs_type_change(const char *from, const char *to);

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
char *zetl_wh_rs_fill_prepare_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                  size_t nshapes);
char *zetl_wh_rs_fill_round_sql(const struct zetl_wh_table *t);
char *zetl_wh_rs_merge_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                           size_t nshapes);
char *zetl_wh_rs_drop_stage_sql(const struct zetl_wh_table *t);
/* BEGIN and the lock that serializes appliers (Redshift has no SELECT ... FOR UPDATE). */
char *zetl_wh_rs_begin_sql(const char *schema);
/*
 * Statement `part` (0, 1, ...) of `which`, NULL past the last; *nparams is
 * how many of the statement's parameters (the first ones) it takes.
 */
char *zetl_wh_rs_offsets_sql(const char *schema, enum zetl_wh_offsets_stmt which, size_t part,
                             int *nparams);
/* Load error detail of the session's last COPY (STL_LOAD_ERRORS, else SYS_LOAD_ERROR_DETAIL). */
const char *zetl_wh_rs_load_error_sql(bool serverless);

#endif
