/*
 * The SQL every warehouse dialect speaks, parametrized by the table and by
 * what the dialect table says (text and tenant types, table options): quoting,
 * the manifest's type names, the bookkeeping tables, CREATE and ALTER TABLE,
 * the small building blocks of the merge statements, and the staging
 * statements that only name the stage (CREATE TABLE, ALTER TABLE, DELETE ...
 * USING, INSERT ... SELECT, UPDATE ... FROM and window functions run on both
 * PostgreSQL and Redshift).
 *
 * Identifiers are always quoted; the only literals are numbers we computed.
 */
#include "sinks/warehouse/wh_dialect.h"

#include "common/sqlquote.h"
#include "common/buf.h"
#include "common/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- identifiers, types --------------------------------------------------- */

/* s between quotes q, a q inside doubled. */
/* alias."name" */
void zetl_wh_sql_qual(struct zetl_buf *b, const char *alias, const char *s)
{
    zetl_buf_printf(b, "%s.", alias);
    zetl_sql_append_ident(b, s);
}

char *zetl_wh_sql_take(struct zetl_buf *b)
{
    char *out = zetl_strndup(b->data ? b->data : "", b->len);

    zetl_buf_release(b);
    return out;
}

/* "schema"."table" */
void zetl_wh_sql_table(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    zetl_sql_append_ident(b, t->schema);
    zetl_buf_putc(b, '.');
    zetl_sql_append_ident(b, t->table);
}

static bool is_ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/*
 * A built-in type as the manifest writes it: [a-z0-9_]+ with an optional
 * "(n)" or "(p,s)" modifier.  Anything else (custom "schema.name", "oid:N",
 * unexpected text) lands as text, and never reaches DDL as written.
 */
bool zetl_wh_system_column(const struct zetl_wh_dialect *d, const char *name)
{
    for (const char *const *n = d->system_columns; n != NULL && *n != NULL; n++)
        if (strcmp(*n, name) == 0)
            return true;
    return false;
}

const char *zetl_wh_canon_type(const char *mt)
{
    const char *p = mt;

    if (mt == NULL || *mt == '\0' || strlen(mt) > 60)
        return "text";
    while (is_ident_char(*p))
        p++;
    if (p == mt)
        return "text";
    if (*p == '\0')
        return mt;
    if (*p != '(' || mt[0] == '_')
        return "text";
    p++;
    if (*p == '-')
        p++;
    if (!(*p >= '0' && *p <= '9'))
        return "text";
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p == ',') {
        p++;
        if (*p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return "text";
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (p[0] != ')' || p[1] != '\0')
        return "text";
    return mt;
}

/* ---- DDL and bookkeeping -------------------------------------------------- */

size_t zetl_wh_sql_nkeys(const struct zetl_wh_table *t)
{
    size_t n = 0;

    for (size_t i = 0; i < t->ncols; i++)
        n += t->cols[i].key;
    return n;
}

/*
 * "._zetl_table_state (...)": one row per stream and table.  A table's
 * last_lsn is an LSN of that stream: LSNs of different slots do not compare.
 */
static void state_table_columns(struct zetl_buf *b, const struct zetl_wh_dialect *d)
{
    zetl_buf_printf(b,
                    "._zetl_table_state (stream %s NOT NULL, table_name %s NOT NULL, "
                    "state %s NOT NULL, reason %s, stopped_at_lsn bigint, "
                    "updated_at timestamptz, last_lsn bigint, PRIMARY KEY (stream, table_name))",
                    d->text_type, d->text_type, d->text_type, d->text_type);
}

char *zetl_wh_sql_bootstrap(const struct zetl_wh_dialect *d, const char *schema)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "CREATE SCHEMA IF NOT EXISTS ");
    zetl_sql_append_ident(&b, schema);
    zetl_buf_puts(&b, ";\nCREATE TABLE IF NOT EXISTS ");
    zetl_sql_append_ident(&b, schema);
    zetl_buf_printf(&b,
                    "._zetl_offsets (stream %s PRIMARY KEY, last_lsn bigint NOT NULL, "
                    "end_lsn bigint, batch %s, applied_at timestamptz);\n"
                    "CREATE TABLE IF NOT EXISTS ",
                    d->text_type, d->text_type);
    zetl_sql_append_ident(&b, schema);
    state_table_columns(&b, d);
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_sql_state_upgrade(const struct zetl_wh_dialect *d, const char *schema)
{
    struct zetl_buf b;

    /*
     * Through a temporary copy: a renamed table would keep its primary key
     * index's name, which the new table's key needs.  The old per-table
     * last_lsn is kept only where one stream wrote it: with several streams
     * it mixed their LSNs and proves nothing.
     */
    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "CREATE TEMPORARY TABLE _zetl_state_v1 AS SELECT * FROM ");
    zetl_sql_append_ident(&b, schema);
    zetl_buf_puts(&b, "._zetl_table_state;\nDROP TABLE ");
    zetl_sql_append_ident(&b, schema);
    zetl_buf_puts(&b, "._zetl_table_state;\nCREATE TABLE ");
    zetl_sql_append_ident(&b, schema);
    state_table_columns(&b, d);
    zetl_buf_puts(&b, ";\nINSERT INTO ");
    zetl_sql_append_ident(&b, schema);
    zetl_buf_puts(&b, "._zetl_table_state (stream, table_name, state, reason, stopped_at_lsn, "
                      "updated_at, last_lsn) SELECT CASE WHEN o.n = 1 THEN o.s ELSE '' END, "
                      "v.table_name, v.state, v.reason, v.stopped_at_lsn, v.updated_at, "
                      "CASE WHEN o.n = 1 THEN v.last_lsn END FROM _zetl_state_v1 AS v CROSS "
                      "JOIN (SELECT count(*) AS n, max(stream) AS s FROM ");
    zetl_sql_append_ident(&b, schema);
    zetl_buf_puts(&b, "._zetl_offsets) AS o;\nDROP TABLE _zetl_state_v1");
    return zetl_wh_sql_take(&b);
}

void zetl_wh_sql_col_defs(struct zetl_buf *b, const struct zetl_wh_table *t,
                          char *(*type)(const char *type))
{
    for (size_t i = 0; i < t->ncols; i++) {
        char *ty = type(t->cols[i].type);

        zetl_buf_puts(b, ", ");
        zetl_sql_append_ident(b, t->cols[i].name);
        zetl_buf_printf(b, " %s", ty);
        free(ty);
    }
}

char *zetl_wh_sql_create_table(const struct zetl_wh_dialect *d, const struct zetl_wh_table *t)
{
    struct zetl_buf b;
    bool keyed = zetl_wh_sql_nkeys(t) > 0;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "CREATE TABLE ");
    zetl_wh_sql_table(&b, t);
    zetl_buf_puts(&b, " (");
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_printf(&b, " %s NOT NULL", d->tenant_type);
    zetl_wh_sql_col_defs(&b, t, d->col_def ? d->col_def : d->col_type);
    zetl_buf_puts(&b, ", _zetl_lsn bigint, _zetl_synced_at timestamptz");
    if (t->deletes == ZETL_DELETES_SOFT)
        zetl_buf_puts(&b, ", _zetl_deleted boolean NOT NULL DEFAULT false");
    else if (t->deletes == ZETL_DELETES_HISTORY)
        zetl_buf_puts(&b, ", _zetl_valid_from bigint NOT NULL, _zetl_valid_to bigint");
    if (keyed) {
        zetl_buf_puts(&b, ", PRIMARY KEY (");
        zetl_sql_append_ident(&b, t->tenant_column);
        for (size_t i = 0; i < t->ncols; i++)
            if (t->cols[i].key) {
                zetl_buf_puts(&b, ", ");
                zetl_sql_append_ident(&b, t->cols[i].name);
            }
        if (t->deletes == ZETL_DELETES_HISTORY)
            zetl_buf_puts(&b, ", _zetl_valid_from");
        zetl_buf_putc(&b, ')');
    }
    zetl_buf_putc(&b, ')');
    if (d->table_options)
        d->table_options(&b, t);
    return zetl_wh_sql_take(&b);
}

/* ALTER TABLE "s"."t" <verb> "c" <type> */
static char *alter_column(const struct zetl_wh_dialect *d, const struct zetl_wh_table *t,
                          const struct zetl_wh_col *c, const char *verb, const char *type_kw)
{
    struct zetl_buf b;
    /* A new column gets the whole definition, a type change the type alone. */
    char *ty = type_kw[0] == '\0' && d->col_def ? d->col_def(c->type) : d->col_type(c->type);

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "ALTER TABLE ");
    zetl_wh_sql_table(&b, t);
    zetl_buf_printf(&b, " %s ", verb);
    zetl_sql_append_ident(&b, c->name);
    zetl_buf_printf(&b, " %s%s", type_kw, ty);
    free(ty);
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_sql_add_column(const struct zetl_wh_dialect *d, const struct zetl_wh_table *t,
                             const struct zetl_wh_col *c)
{
    return alter_column(d, t, c, "ADD COLUMN", "");
}

char *zetl_wh_sql_alter_type(const struct zetl_wh_dialect *d, const struct zetl_wh_table *t,
                             const struct zetl_wh_col *c)
{
    return alter_column(d, t, c, "ALTER COLUMN", "TYPE ");
}

void zetl_wh_sql_state_get(struct zetl_buf *b, const char *schema, const char *stream_param)
{
    /*
     * A table stopped by any stream is stopped for all (the warehouse table
     * cannot take the rows); its last_lsn is the stream's own only.
     */
    zetl_buf_printf(b,
                    "SELECT table_name, CASE WHEN max(CASE WHEN state = 'stopped' THEN 1 ELSE 0 "
                    "END) = 1 THEN 'stopped' ELSE 'active' END, coalesce(max(CASE WHEN stream "
                    "= %s THEN last_lsn END), 0), max(CASE WHEN state = 'stopped' THEN reason "
                    "END) FROM ",
                    stream_param);
    zetl_sql_append_ident(b, schema);
    zetl_buf_puts(b, "._zetl_table_state GROUP BY table_name");
}

/* ---- merge building blocks ------------------------------------------------- */

/* a.tenant = b.tenant AND a.k1 = b.k1 ... (keys are NOT NULL) */
void zetl_wh_sql_key_match(struct zetl_buf *b, const struct zetl_wh_table *t, const char *a,
                           const char *c)
{
    zetl_wh_sql_qual(b, a, t->tenant_column);
    zetl_buf_puts(b, " = ");
    zetl_wh_sql_qual(b, c, t->tenant_column);
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key) {
            zetl_buf_puts(b, " AND ");
            zetl_wh_sql_qual(b, a, t->cols[i].name);
            zetl_buf_puts(b, " = ");
            zetl_wh_sql_qual(b, c, t->cols[i].name);
        }
}

/* tenant, k1, k2 (unqualified) */
void zetl_wh_sql_key_list(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    zetl_sql_append_ident(b, t->tenant_column);
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key) {
            zetl_buf_puts(b, ", ");
            zetl_sql_append_ident(b, t->cols[i].name);
        }
}

/*
 * k1, k2, tenant (unqualified): the key in the order a sort or a partition by
 * key should compare it.  Any order groups the same rows; the tenant column
 * is text with few distinct values, so comparing it first costs a string
 * comparison per pair that almost never decides (a sort of the stage by
 * (tenant, id, ...) took 4-6 times as long as by (id, tenant, ...)).
 */
void zetl_wh_sql_key_list_sort(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key) {
            zetl_sql_append_ident(b, t->cols[i].name);
            zetl_buf_puts(b, ", ");
        }
    zetl_sql_append_ident(b, t->tenant_column);
}

/* tenant, c1, c2, ... with an optional alias prefix */
void zetl_wh_sql_col_list(struct zetl_buf *b, const struct zetl_wh_table *t, const char *alias)
{
    if (alias)
        zetl_wh_sql_qual(b, alias, t->tenant_column);
    else
        zetl_sql_append_ident(b, t->tenant_column);
    for (size_t i = 0; i < t->ncols; i++) {
        zetl_buf_puts(b, ", ");
        if (alias)
            zetl_wh_sql_qual(b, alias, t->cols[i].name);
        else
            zetl_sql_append_ident(b, t->cols[i].name);
    }
}

/* The warehouse rows that are current, for soft and history modes ("" or " AND ..."). */
void zetl_wh_sql_live(struct zetl_buf *b, const struct zetl_wh_table *t, const char *alias)
{
    if (t->deletes == ZETL_DELETES_SOFT)
        zetl_buf_printf(b, " AND NOT %s._zetl_deleted", alias);
    else if (t->deletes == ZETL_DELETES_HISTORY)
        zetl_buf_printf(b, " AND %s._zetl_valid_to IS NULL", alias);
}

/* INSERT INTO "s"."t" (tenant, cols, _zetl_lsn, _zetl_synced_at[, mode columns]) */
void zetl_wh_sql_insert_head(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    zetl_buf_puts(b, "INSERT INTO ");
    zetl_wh_sql_table(b, t);
    zetl_buf_puts(b, " (");
    zetl_wh_sql_col_list(b, t, NULL);
    zetl_buf_puts(b, ", _zetl_lsn, _zetl_synced_at");
    if (t->deletes == ZETL_DELETES_SOFT)
        zetl_buf_puts(b, ", _zetl_deleted");
    else if (t->deletes == ZETL_DELETES_HISTORY)
        zetl_buf_puts(b, ", _zetl_valid_from, _zetl_valid_to");
    zetl_buf_puts(b, ")");
}

/* ---- staging ------------------------------------------------------------- */

void zetl_wh_sql_copy_columns(struct zetl_buf *b, const struct zetl_wh_table *t,
                              const struct zetl_wh_shape *shape)
{
    zetl_buf_puts(b, " (_zetl_op, _zetl_lsn, _zetl_seq, _zetl_commit_ts, _zetl_unchanged, ");
    zetl_sql_append_ident(b, t->tenant_column);
    for (size_t k = 0; k < shape->ncols; k++) {
        zetl_buf_puts(b, ", ");
        zetl_sql_append_ident(b, t->cols[shape->map[k]].name);
    }
    zetl_buf_putc(b, ')');
}

/* "IN (f, ...)" of the files that lack some union column; false when none does. */
bool zetl_wh_sql_files_absent(struct zetl_buf *b, const struct zetl_wh_table *t,
                              const struct zetl_wh_shape *shapes, size_t nshapes)
{
    bool any = false;

    for (size_t f = 0; f < nshapes; f++)
        if (shapes[f].ncols < t->ncols) {
            zetl_buf_printf(b, "%s%zu", any ? ", " : " OR _zetl_file IN (", f);
            any = true;
        }
    if (any)
        zetl_buf_putc(b, ')');
    return any;
}

/* Counts of truncates, deletes, updates needing a fill, and all rows; `stage` is SQL text. */
char *zetl_wh_sql_stage_stats(const char *stage, const struct zetl_wh_table *t,
                              const struct zetl_wh_shape *shapes, size_t nshapes)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "SELECT count(CASE WHEN _zetl_op = 'T' THEN 1 END), "
                      "count(CASE WHEN _zetl_op IN ('B', 'D') THEN 1 END), "
                      "count(CASE WHEN _zetl_op = 'U' AND (_zetl_unchanged IS NOT NULL");
    zetl_wh_sql_files_absent(&b, t, shapes, nshapes);
    zetl_buf_printf(&b, ") THEN 1 END), count(*) FROM %s", stage);
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_sql_replay_filter(const char *stage, const struct zetl_wh_table *t, size_t ntenants,
                                const char *text_type)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b,
                    "DELETE FROM %s WHERE _zetl_lsn < CAST($1 AS BIGINT) OR _zetl_lsn > "
                    "CAST($2 AS BIGINT)",
                    stage);
    if (ntenants > 0) {
        zetl_buf_puts(&b, " OR ");
        zetl_sql_append_ident(&b, t->tenant_column);
        zetl_buf_puts(&b, " NOT IN (");
        for (size_t i = 0; i < ntenants; i++)
            zetl_buf_printf(&b, "%sCAST($%zu AS %s)", i ? ", " : "", i + 3, text_type);
        zetl_buf_putc(&b, ')');
    }
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_sql_skip_applied(const char *stage)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "DELETE FROM %s WHERE _zetl_lsn <= CAST($1 AS BIGINT)", stage);
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_sql_purge(const struct zetl_wh_table *t, const char *param)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "DELETE FROM ");
    zetl_wh_sql_table(&b, t);
    zetl_buf_puts(&b, " WHERE ");
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_printf(&b, " = %s", param);
    return zetl_wh_sql_take(&b);
}
