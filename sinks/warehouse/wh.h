/*
 * The warehouse sink: applies archived batches to a warehouse exactly once.
 * Each batch is applied in one warehouse transaction that also records the
 * batch's last commit LSN in <schema>._zetl_offsets; a batch at or below the
 * stored offset is skipped.  Dialects: PostgreSQL (COPY FROM STDIN + merge)
 * and, later, Redshift (COPY FROM S3 + merge).
 */
#ifndef ZETL_WH_H
#define ZETL_WH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"

struct zetl_wh;

/*
 * Connects to cfg->warehouse.dsn, creates the schema and _zetl_offsets if
 * missing.  ZETL_ERR_RETRY when the server is unreachable, ZETL_ERR_FATAL for
 * authentication or permission problems.  cfg is borrowed and must outlive wh.
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
 * Applies only the rows of `table` in the batch at `dir`, regardless of the
 * stream offset (which it neither checks nor moves): the resync of a table
 * that was stopped, dropped and whose _zetl_table_state row was deleted.
 * Idempotent: the table's own last applied LSN (in _zetl_table_state) skips
 * what was applied before.  ZETL_ERR_FATAL when the table is still stopped.
 */
enum zetl_err zetl_wh_apply_dir_table(struct zetl_wh *wh, const char *dir, const char *table,
                                      struct zetl_errbuf *eb);

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
    ZETL_WH_SQL_STATE_GET,         /* -> table_name, state, last_lsn, reason */
    ZETL_WH_SQL_STATE_APPLIED,     /* $1 table, $2 last_lsn */
    ZETL_WH_SQL_STATE_STOP,        /* $1 table, $2 reason, $3 stopped_at_lsn */
    ZETL_WH_SQL_COLUMNS,           /* $1 schema, $2 table -> attname, atttypid, atttypmod, pk */
};
char *zetl_wh_pg_offsets_sql(const char *schema, enum zetl_wh_offsets_stmt which);

#endif
