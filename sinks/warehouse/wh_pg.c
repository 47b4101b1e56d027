/*
 * The PostgreSQL dialect of the warehouse sink: its table of functions
 * (zetl_wh_pg_dialect, at the end), the type mapping, and every statement of
 * an apply that is PostgreSQL's own, as pure text generators (no
 * connection) the unit tests pin: arrays, DISTINCT ON, LATERAL, temporary
 * tables ON COMMIT DROP, and COPY FROM STDIN, through which the stage
 * streams each archive file (wh_copy.c).  What Redshift speaks too is in
 * wh_sql.c.
 *
 * The staging table of one (table, batch) holds the meta columns, the tenant
 * column and the union of the table's columns over the batch's files:
 *
 *   _zetl_id        row id (identity), the target of the links below
 *   _zetl_file      which file (column shape) the row came from
 *   _zetl_op .. _zetl_unchanged   as in the file (sinks/batch.h)
 *   _zetl_unch      for U rows: union column indices whose value is not in
 *                   the row (unchanged TOAST, or absent from the row's file)
 *   _zetl_kb        for such U rows: the B row just before (a key change)
 *   _zetl_prev      the image the missing values come from (NULL: the
 *                   current warehouse row of the key)
 *
 * Identifiers are always quoted; the only literals are numbers we computed.
 */
#include "sinks/warehouse/wh_dialect.h"

#include "common/sqlquote.h"
#include "common/buf.h"
#include "common/mem.h"
#include "sinks/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- types ---------------------------------------------------------------- */

char *zetl_wh_pg_type(const char *manifest_type)
{
    const char *c = zetl_wh_canon_type(manifest_type);
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    if (c[0] == '_') {
        /* "_x" is the array of x; the internal one-byte "char" needs quotes. */
        if (strcmp(c + 1, "char") == 0)
            zetl_buf_puts(&b, "\"char\"");
        else
            zetl_buf_puts(&b, c + 1);
        zetl_buf_puts(&b, "[]");
    } else if (strcmp(c, "char") == 0) {
        zetl_buf_puts(&b, "\"char\"");
    } else {
        zetl_buf_puts(&b, c);
    }
    return zetl_wh_sql_take(&b);
}

/* Splits "name(a,b)" into its base name and up to two numbers; nargs -1 when malformed. */
static void type_parse(const char *t, char base[64], long args[2], int *nargs)
{
    size_t n = strcspn(t, "(");

    *nargs = 0;
    args[0] = args[1] = 0;
    if (n >= 64)
        n = 63;
    memcpy(base, t, n);
    base[n] = '\0';
    if (t[n] == '(') {
        char *end;

        args[0] = strtol(t + n + 1, &end, 10);
        *nargs = 1;
        if (*end == ',') {
            args[1] = strtol(end + 1, &end, 10);
            *nargs = 2;
        }
        if (*end != ')')
            *nargs = -1;
    }
}

static int int_rank(const char *base)
{
    if (strcmp(base, "int2") == 0)
        return 1;
    if (strcmp(base, "int4") == 0)
        return 2;
    if (strcmp(base, "int8") == 0)
        return 3;
    return 0;
}

/* True when every value of `from` fits `to` unchanged (and they differ). */
static bool type_widens(const char *from, const char *to)
{
    char bf[64], bt[64];
    long af[2], at[2];
    int nf, nt;

    if (strcmp(from, to) == 0)
        return false;
    type_parse(from, bf, af, &nf);
    type_parse(to, bt, at, &nt);
    if (nf < 0 || nt < 0)
        return false;
    if (int_rank(bf) && int_rank(bt))
        return nf == 0 && nt == 0 && int_rank(bf) < int_rank(bt);
    if (strcmp(bf, "varchar") == 0) {
        if (strcmp(bt, "text") == 0 && nt == 0)
            return true;
        if (strcmp(bt, "varchar") == 0)
            return nt == 0 || (nf == 1 && nt == 1 && at[0] > af[0]);
        return false;
    }
    if (strcmp(bf, "numeric") == 0 && strcmp(bt, "numeric") == 0) {
        if (nt == 0)
            return nf == 2;
        /* Neither the integer digits nor the scale may shrink. */
        return nf == 2 && nt == 2 && at[1] >= af[1] && at[0] - at[1] >= af[0] - af[1];
    }
    if ((strcmp(bf, "timestamp") == 0 || strcmp(bf, "timestamptz") == 0) && strcmp(bf, bt) == 0)
        return nf == 1 && (nt == 0 || (nt == 1 && at[0] > af[0]));
    return false;
}

enum zetl_wh_type_change zetl_wh_pg_type_change(const char *from, const char *to)
{
    if (strcmp(from, to) == 0)
        return ZETL_WH_TYPE_SAME;
    /* Every type's text form fits a text column: nothing to change, nothing to stop. */
    if (strcmp(from, "text") == 0)
        return ZETL_WH_TYPE_NARROWER;
    if (type_widens(from, to))
        return ZETL_WH_TYPE_WIDER;
    if (type_widens(to, from))
        return ZETL_WH_TYPE_NARROWER;
    return ZETL_WH_TYPE_INCOMPATIBLE;
}

/* ---- DDL -------------------------------------------------------------------- */

char *zetl_wh_pg_bootstrap_sql(const char *schema)
{
    return zetl_wh_sql_bootstrap(&zetl_wh_pg_dialect, schema);
}

char *zetl_wh_pg_create_table_sql(const struct zetl_wh_table *t)
{
    return zetl_wh_sql_create_table(&zetl_wh_pg_dialect, t);
}

char *zetl_wh_pg_add_column_sql(const struct zetl_wh_table *t, const struct zetl_wh_col *c)
{
    return zetl_wh_sql_add_column(&zetl_wh_pg_dialect, t, c);
}

char *zetl_wh_pg_alter_type_sql(const struct zetl_wh_table *t, const struct zetl_wh_col *c)
{
    return zetl_wh_sql_alter_type(&zetl_wh_pg_dialect, t, c);
}

/* ---- staging ---------------------------------------------------------------- */

/* pg_temp."<stage><suffix>" */
static void qstage(struct zetl_buf *b, const struct zetl_wh_table *t, const char *suffix)
{
    struct zetl_buf n;

    zetl_buf_init(&n, 0);
    zetl_buf_puts(&n, t->stage);
    zetl_buf_puts(&n, suffix);
    zetl_buf_puts(b, "pg_temp.");
    zetl_sql_append_ident(b, n.data);
    zetl_buf_release(&n);
}

char *zetl_wh_pg_stage_sql(const struct zetl_wh_table *t)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "CREATE TEMP TABLE ");
    qstage(&b, t, "");
    zetl_buf_puts(&b, " (_zetl_id bigint GENERATED BY DEFAULT AS IDENTITY, "
                      "_zetl_file int NOT NULL DEFAULT 0, _zetl_op char(1), _zetl_lsn bigint, "
                      "_zetl_seq bigint, _zetl_commit_ts timestamptz, _zetl_unchanged int[], "
                      "_zetl_unch int[], _zetl_kb bigint, _zetl_prev bigint, ");
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_puts(&b, " text");
    zetl_wh_sql_col_defs(&b, t, zetl_wh_pg_type);
    zetl_buf_puts(&b, ") ON COMMIT DROP");
    return zetl_wh_sql_take(&b);
}

/* The file number the next COPY's rows get (a column default: no per-row work). */
char *zetl_wh_pg_file_default_sql(const struct zetl_wh_table *t, size_t file_no)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "ALTER TABLE ");
    qstage(&b, t, "");
    zetl_buf_printf(&b, " ALTER COLUMN _zetl_file SET DEFAULT %zu", file_no);
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_pg_copy_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shape)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "COPY ");
    qstage(&b, t, "");
    zetl_wh_sql_copy_columns(&b, t, shape);
    zetl_buf_puts(&b, " FROM STDIN WITH (FORMAT csv)");
    return zetl_wh_sql_take(&b);
}

/* pg_temp."<stage>" as owned text. */
static char *stage_text(const struct zetl_wh_table *t)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    qstage(&b, t, "");
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_pg_stage_stats_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                 size_t nshapes)
{
    char *stage = stage_text(t);
    char *sql = zetl_wh_sql_stage_stats(stage, t, shapes, nshapes);

    free(stage);
    return sql;
}

char *zetl_wh_pg_skip_applied_sql(const struct zetl_wh_table *t)
{
    char *stage = stage_text(t);
    char *sql = zetl_wh_sql_skip_applied(stage);

    free(stage);
    return sql;
}

char *zetl_wh_pg_replay_filter_sql(const struct zetl_wh_table *t, size_t ntenants)
{
    char *stage = stage_text(t);
    char *sql = zetl_wh_sql_replay_filter(stage, t, ntenants, "text");

    free(stage);
    return sql;
}

char *zetl_wh_pg_purge_sql(const struct zetl_wh_table *t)
{
    return zetl_wh_sql_purge(t, "$1");
}

char *zetl_wh_pg_truncate_sql(const struct zetl_wh_table *t)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    /*
     * The warehouse rows of each truncated tenant, and only those (invariant
     * 3), that are older than the truncate: zetl run's always are, while zetl
     * load may have applied a later change from another Kafka partition first.
     */
    if (t->deletes == ZETL_DELETES_HARD) {
        zetl_buf_puts(&b, "DELETE FROM ");
        zetl_wh_sql_table(&b, t);
        zetl_buf_puts(&b, " AS w USING (SELECT ");
        zetl_sql_append_ident(&b, t->tenant_column);
        zetl_buf_puts(&b, " AS tn, max(_zetl_lsn) AS lsn FROM ");
        qstage(&b, t, "");
        zetl_buf_puts(&b, " WHERE _zetl_op = 'T' GROUP BY 1) AS tr WHERE ");
        zetl_wh_sql_qual(&b, "w", t->tenant_column);
        zetl_buf_puts(&b, " = tr.tn AND w._zetl_lsn < tr.lsn");
    } else {
        /*
         * Deleted (closed) at the first truncate of the batch, or, for a row
         * zetl load applied between two of them, at its own LSN.
         */
        zetl_buf_puts(&b, "UPDATE ");
        zetl_wh_sql_table(&b, t);
        if (t->deletes == ZETL_DELETES_SOFT)
            zetl_buf_puts(&b, " AS w SET _zetl_deleted = true, _zetl_lsn = GREATEST(tr.lsn, "
                              "w._zetl_lsn), _zetl_synced_at = now()");
        else
            zetl_buf_puts(&b, " AS w SET _zetl_valid_to = GREATEST(tr.lsn, w._zetl_lsn), "
                              "_zetl_synced_at = now()");
        zetl_buf_puts(&b, " FROM (SELECT ");
        zetl_sql_append_ident(&b, t->tenant_column);
        zetl_buf_puts(&b, " AS tn, min(_zetl_lsn) AS lsn, max(_zetl_lsn) AS maxlsn FROM ");
        qstage(&b, t, "");
        zetl_buf_puts(&b, " WHERE _zetl_op = 'T' GROUP BY 1) AS tr WHERE ");
        zetl_wh_sql_qual(&b, "w", t->tenant_column);
        zetl_buf_puts(&b, " = tr.tn AND w._zetl_lsn < tr.maxlsn");
        zetl_wh_sql_live(&b, t, "w");
    }
    /* Staged changes of the tenant up to its last truncate are void. */
    zetl_buf_puts(&b, ";\nDELETE FROM ");
    qstage(&b, t, "");
    zetl_buf_puts(&b, " AS x USING (SELECT DISTINCT ON (");
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_puts(&b, ") ");
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_puts(&b, " AS tn, _zetl_lsn AS lsn, _zetl_seq AS seq FROM ");
    qstage(&b, t, "");
    zetl_buf_puts(&b, " WHERE _zetl_op = 'T' ORDER BY ");
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_puts(&b, ", _zetl_lsn DESC, _zetl_seq DESC) AS tr WHERE ");
    zetl_wh_sql_qual(&b, "x", t->tenant_column);
    zetl_buf_puts(&b, " = tr.tn AND (x._zetl_lsn, x._zetl_seq) <= (tr.lsn, tr.seq)");
    return zetl_wh_sql_take(&b);
}

/* ---- unchanged values ----------------------------------------------------------- */

/* SET "c" = CASE WHEN i = ANY(r._zetl_unch)<cond> THEN <src>."c" ELSE r."c" END, ... */
static void fill_set(struct zetl_buf *b, const struct zetl_wh_table *t, const char *src,
                     bool by_value_alias, const char *extra_cond)
{
    bool first = true;

    for (size_t i = 0; i < t->ncols; i++) {
        if (t->cols[i].key)
            continue;
        zetl_buf_puts(b, first ? " SET " : ", ");
        first = false;
        zetl_sql_append_ident(b, t->cols[i].name);
        zetl_buf_printf(b, " = CASE WHEN %zu = ANY(r._zetl_unch)", i);
        if (extra_cond)
            zetl_buf_printf(b, " AND NOT (%zu = ANY(%s))", i, extra_cond);
        zetl_buf_puts(b, " THEN ");
        if (by_value_alias)
            zetl_buf_printf(b, "%s.v%zu", src, i);
        else
            zetl_wh_sql_qual(b, src, t->cols[i].name);
        zetl_buf_puts(b, " ELSE ");
        zetl_wh_sql_qual(b, "r", t->cols[i].name);
        zetl_buf_puts(b, " END");
    }
    zetl_buf_puts(b, first ? " SET " : ", ");
}

/* CASE WHEN b._zetl_id IS NULL THEN r2."c" ELSE b."c" END: the key an update came from. */
static void lookup_key(struct zetl_buf *b, const char *name)
{
    zetl_buf_puts(b, "CASE WHEN b._zetl_id IS NULL THEN ");
    zetl_wh_sql_qual(b, "r2", name);
    zetl_buf_puts(b, " ELSE ");
    zetl_wh_sql_qual(b, "b", name);
    zetl_buf_puts(b, " END");
}

/*
 * 1. Unchanged columns as union indices: the file's _zetl_unchanged
 *    translated through its column map, plus the columns its shape lacks.
 *    Key columns are never filled.
 */
static void fill_unchanged_sets(struct zetl_buf *b, const struct zetl_wh_table *t,
                                const struct zetl_wh_shape *shapes, size_t nshapes)
{
    zetl_buf_puts(b, "UPDATE ");
    qstage(b, t, "");
    zetl_buf_puts(b, " SET _zetl_unch = NULLIF(CASE _zetl_file");
    for (size_t f = 0; f < nshapes; f++) {
        bool any = false;

        zetl_buf_printf(b, " WHEN %zu THEN ARRAY(SELECT m FROM (SELECT (ARRAY[", f);
        for (size_t k = 0; k < shapes[f].ncols; k++) {
            size_t u = shapes[f].map[k];

            if (k)
                zetl_buf_puts(b, ", ");
            if (t->cols[u].key)
                zetl_buf_puts(b, "NULL");
            else
                zetl_buf_printf(b, "%zu", u);
        }
        zetl_buf_puts(b, "]::int[])[i + 1] AS m FROM unnest(_zetl_unchanged) AS i) AS q "
                         "WHERE m IS NOT NULL) || ARRAY[");
        for (size_t u = 0; u < t->ncols; u++) {
            bool present = false;

            for (size_t k = 0; k < shapes[f].ncols && !present; k++)
                present = shapes[f].map[k] == u;
            if (present || t->cols[u].key)
                continue;
            zetl_buf_printf(b, "%s%zu", any ? ", " : "", u);
            any = true;
        }
        zetl_buf_puts(b, "]::int[]");
    }
    zetl_buf_puts(b, " END, '{}') WHERE _zetl_op = 'U' AND (_zetl_unchanged IS NOT NULL");
    zetl_wh_sql_files_absent(b, t, shapes, nshapes);
    zetl_buf_puts(b, ")");
}

/* 2. The B row right before an update (same transaction, seq - 1): its old key. */
static void fill_key_before(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    zetl_buf_puts(b, ";\nUPDATE ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS r SET _zetl_kb = b._zetl_id FROM ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS b WHERE r._zetl_unch IS NOT NULL AND b._zetl_op = 'B' AND "
                     "b._zetl_lsn = r._zetl_lsn AND b._zetl_seq = r._zetl_seq - 1 AND ");
    zetl_wh_sql_qual(b, "b", t->tenant_column);
    zetl_buf_puts(b, " = ");
    zetl_wh_sql_qual(b, "r", t->tenant_column);
}

/* 3. The latest earlier image (I or U) of the key the update came from. */
static void fill_predecessor(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    size_t kn = 0;

    zetl_buf_puts(b, ";\nUPDATE ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS r SET _zetl_prev = x.pid FROM (SELECT r2._zetl_id AS rid, "
                     "(SELECT p._zetl_id FROM ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS p WHERE p._zetl_op IN ('I', 'U') AND ");
    zetl_wh_sql_qual(b, "p", t->tenant_column);
    zetl_buf_puts(b, " = lk.t");
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key) {
            zetl_buf_puts(b, " AND ");
            zetl_wh_sql_qual(b, "p", t->cols[i].name);
            zetl_buf_printf(b, " = lk.k%zu", kn++);
        }
    zetl_buf_puts(b, " AND (p._zetl_lsn, p._zetl_seq) < (r2._zetl_lsn, r2._zetl_seq) "
                     "ORDER BY p._zetl_lsn DESC, p._zetl_seq DESC LIMIT 1) AS pid FROM ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS r2 LEFT JOIN ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS b ON b._zetl_id = r2._zetl_kb CROSS JOIN LATERAL (SELECT ");
    lookup_key(b, t->tenant_column);
    zetl_buf_puts(b, " AS t");
    kn = 0;
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key) {
            zetl_buf_puts(b, ", ");
            lookup_key(b, t->cols[i].name);
            zetl_buf_printf(b, " AS k%zu", kn++);
        }
    zetl_buf_puts(b, ") AS lk WHERE r2._zetl_unch IS NOT NULL) AS x "
                     "WHERE r._zetl_id = x.rid AND x.pid IS NOT NULL");
}

/* 4. Updates without an earlier image in the batch: the current warehouse row. */
static void fill_from_warehouse(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    zetl_buf_puts(b, ";\nUPDATE ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS r");
    fill_set(b, t, "x", true, NULL);
    zetl_buf_puts(b, "_zetl_unch = NULL FROM (SELECT r2._zetl_id AS rid");
    for (size_t i = 0; i < t->ncols; i++)
        if (!t->cols[i].key) {
            zetl_buf_puts(b, ", ");
            zetl_wh_sql_qual(b, "w", t->cols[i].name);
            zetl_buf_printf(b, " AS v%zu", i);
        }
    zetl_buf_puts(b, " FROM ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS r2 LEFT JOIN ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS b ON b._zetl_id = r2._zetl_kb JOIN ");
    zetl_wh_sql_table(b, t);
    zetl_buf_puts(b, " AS w ON ");
    zetl_wh_sql_qual(b, "w", t->tenant_column);
    zetl_buf_puts(b, " = ");
    lookup_key(b, t->tenant_column);
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key) {
            zetl_buf_puts(b, " AND ");
            zetl_wh_sql_qual(b, "w", t->cols[i].name);
            zetl_buf_puts(b, " = ");
            lookup_key(b, t->cols[i].name);
        }
    zetl_wh_sql_live(b, t, "w");
    zetl_buf_puts(b, " WHERE r2._zetl_unch IS NOT NULL AND r2._zetl_prev IS NULL) AS x "
                     "WHERE r._zetl_id = x.rid");
}

char *zetl_wh_pg_fill_prepare_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                  size_t nshapes)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    fill_unchanged_sets(&b, t, shapes, nshapes);
    fill_key_before(&b, t);
    if (zetl_wh_sql_nkeys(t) == 0) {
        /* Without a key only the before-image of the same change can supply values. */
        zetl_buf_puts(&b, ";\nUPDATE ");
        qstage(&b, t, "");
        zetl_buf_puts(&b, " SET _zetl_prev = _zetl_kb WHERE _zetl_unch IS NOT NULL");
        return zetl_wh_sql_take(&b);
    }
    fill_predecessor(&b, t);
    fill_from_warehouse(&b, t);
    return zetl_wh_sql_take(&b);
}

/*
 * Takes what the predecessor has, then points past it (pointer jumping): a
 * chain of n updates resolves in about log2(n) rounds.
 */
char *zetl_wh_pg_fill_round_sql(const struct zetl_wh_table *t)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "UPDATE ");
    qstage(&b, t, "");
    zetl_buf_puts(&b, " AS r");
    fill_set(&b, t, "p", false, "coalesce(p._zetl_unch, '{}')");
    zetl_buf_puts(&b, "_zetl_unch = NULLIF(ARRAY(SELECT e FROM unnest(r._zetl_unch) AS e "
                      "WHERE e = ANY(coalesce(p._zetl_unch, '{}'))), '{}'), "
                      "_zetl_prev = p._zetl_prev FROM ");
    qstage(&b, t, "");
    zetl_buf_puts(&b, " AS p WHERE p._zetl_id = r._zetl_prev AND r._zetl_unch IS NOT NULL");
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_pg_stage_index_sql(const struct zetl_wh_table *t)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "CREATE INDEX ON ");
    qstage(&b, t, "");
    zetl_buf_puts(&b, " (_zetl_id)");
    if (zetl_wh_sql_nkeys(t) > 0) {
        zetl_buf_puts(&b, ";\nCREATE INDEX ON ");
        qstage(&b, t, "");
        zetl_buf_puts(&b, " (");
        zetl_wh_sql_key_list(&b, t);
        zetl_buf_puts(&b, ", _zetl_lsn, _zetl_seq)");
    }
    zetl_buf_puts(&b, ";\nSET LOCAL default_statistics_target = 10;\nANALYZE ");
    qstage(&b, t, "");
    return zetl_wh_sql_take(&b);
}

/* A small sample is plenty for the merge's join choices. */
char *zetl_wh_pg_stage_analyze_sql(const struct zetl_wh_table *t)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "SET LOCAL default_statistics_target = 10; ANALYZE ");
    qstage(&b, t, "");
    return zetl_wh_sql_take(&b);
}

/* ---- merge ---------------------------------------------------------------------- */

/*
 * SELECT DISTINCT ON (keys[, _zetl_lsn]) tenant, cols, _zetl_op, _zetl_lsn
 * FROM stage WHERE <cond> ORDER BY keys, ...: the last image per key (per
 * transaction with per_txn).  Only the columns the merge reads are sorted,
 * not the whole stage row with its meta columns (half the sort time).
 */
static void last_images(struct zetl_buf *b, const struct zetl_wh_table *t, bool per_txn,
                        const char *cond)
{
    zetl_buf_puts(b, "SELECT DISTINCT ON (");
    zetl_wh_sql_key_list_sort(b, t);
    if (per_txn)
        zetl_buf_puts(b, ", _zetl_lsn");
    zetl_buf_puts(b, ") ");
    zetl_wh_sql_col_list(b, t, NULL);
    zetl_buf_puts(b, ", _zetl_op, _zetl_lsn FROM ");
    qstage(b, t, "");
    zetl_buf_printf(b, " WHERE %s ORDER BY ", cond);
    zetl_wh_sql_key_list_sort(b, t);
    zetl_buf_puts(b, per_txn ? ", _zetl_lsn, _zetl_seq DESC" : ", _zetl_lsn DESC, _zetl_seq DESC");
}

/*
 * Around a statement that finds warehouse rows by key, with t->by_key: a
 * nested loop over the primary key index.  Left to itself the planner
 * hashes the batch's keys and scans the whole warehouse table even for a
 * small batch and a large table, a cost that grows with the table instead of
 * the batch.  Only the one statement is affected.
 */
static void by_key_begin(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    if (t->by_key)
        zetl_buf_puts(b, "SET LOCAL enable_hashjoin = off;\nSET LOCAL enable_mergejoin = off;\n");
}

static void by_key_end(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    zetl_buf_puts(b, ";\n");
    if (t->by_key)
        zetl_buf_puts(b, "SET LOCAL enable_hashjoin TO DEFAULT;\n"
                         "SET LOCAL enable_mergejoin TO DEFAULT;\n");
}

static void merge_keyed(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    if (t->deletes == ZETL_DELETES_HARD) {
        /*
         * Every key the batch touched (old keys of key changes too) goes ...
         * Probed by index, each key once; hashed, deduplicating first costs
         * more than it saves.
         */
        by_key_begin(b, t);
        zetl_buf_puts(b, "DELETE FROM ");
        zetl_wh_sql_table(b, t);
        if (t->by_key) {
            zetl_buf_puts(b, " AS w USING (SELECT DISTINCT ");
            zetl_wh_sql_key_list_sort(b, t);
            zetl_buf_puts(b, " FROM ");
            qstage(b, t, "");
            zetl_buf_puts(b, " WHERE _zetl_op <> 'T') AS x WHERE ");
        } else {
            zetl_buf_puts(b, " AS w USING ");
            qstage(b, t, "");
            zetl_buf_puts(b, " AS x WHERE x._zetl_op <> 'T' AND ");
        }
        zetl_wh_sql_key_match(b, t, "w", "x");
        by_key_end(b, t);
        /* ... and comes back as its last image when that is not a delete. */
        zetl_wh_sql_insert_head(b, t);
        zetl_buf_puts(b, " SELECT ");
        zetl_wh_sql_col_list(b, t, "x");
        zetl_buf_puts(b, ", x._zetl_lsn, now() FROM (");
        last_images(b, t, false, "_zetl_op <> 'T'");
        zetl_buf_puts(b, ") AS x WHERE x._zetl_op IN ('I', 'U')");
        return;
    }

    zetl_buf_puts(b, "CREATE TEMP TABLE ");
    qstage(b, t, "_last");
    zetl_buf_puts(b, " ON COMMIT DROP AS ");
    last_images(b, t, t->deletes == ZETL_DELETES_HISTORY, "_zetl_op <> 'T'");
    zetl_buf_puts(b, ";\n");

    if (t->deletes == ZETL_DELETES_SOFT) {
        /* A deleted key keeps its last values: the warehouse's, or the batch's latest image. */
        by_key_begin(b, t);
        zetl_buf_puts(b, "UPDATE ");
        zetl_wh_sql_table(b, t);
        zetl_buf_puts(b, " AS w SET _zetl_deleted = true, _zetl_lsn = x._zetl_lsn, "
                         "_zetl_synced_at = now() FROM ");
        qstage(b, t, "_last");
        zetl_buf_puts(b, " AS x WHERE x._zetl_op IN ('D', 'B') AND ");
        zetl_wh_sql_key_match(b, t, "w", "x");
        by_key_end(b, t);
        zetl_buf_puts(b, "CREATE TEMP TABLE ");
        qstage(b, t, "_image");
        zetl_buf_puts(b, " ON COMMIT DROP AS ");
        last_images(b, t, false, "_zetl_op IN ('I', 'U')");
        zetl_buf_puts(b, ";\n");
        by_key_begin(b, t);
        zetl_buf_puts(b, "DELETE FROM ");
        zetl_wh_sql_table(b, t);
        zetl_buf_puts(b, " AS w USING ");
        qstage(b, t, "_image");
        zetl_buf_puts(b, " AS x WHERE ");
        zetl_wh_sql_key_match(b, t, "w", "x");
        by_key_end(b, t);
        zetl_wh_sql_insert_head(b, t);
        zetl_buf_puts(b, " SELECT ");
        zetl_wh_sql_col_list(b, t, "x");
        zetl_buf_puts(b, ", l._zetl_lsn, now(), l._zetl_op IN ('D', 'B') FROM ");
        qstage(b, t, "_image");
        zetl_buf_puts(b, " AS x JOIN ");
        qstage(b, t, "_last");
        zetl_buf_puts(b, " AS l ON ");
        zetl_wh_sql_key_match(b, t, "x", "l");
        return;
    }

    /* History: close the current version at the key's first change in the batch ... */
    by_key_begin(b, t);
    zetl_buf_puts(b, "UPDATE ");
    zetl_wh_sql_table(b, t);
    zetl_buf_puts(b, " AS w SET _zetl_valid_to = x._zetl_lsn, _zetl_synced_at = now() FROM "
                     "(SELECT ");
    zetl_wh_sql_key_list_sort(b, t);
    zetl_buf_puts(b, ", min(_zetl_lsn) AS _zetl_lsn FROM ");
    qstage(b, t, "_last");
    zetl_buf_puts(b, " GROUP BY ");
    zetl_wh_sql_key_list_sort(b, t);
    zetl_buf_puts(b, ") AS x WHERE ");
    zetl_wh_sql_key_match(b, t, "w", "x");
    zetl_buf_puts(b, " AND w._zetl_valid_to IS NULL");
    by_key_end(b, t);
    /* ... and add one version per transaction's last image, valid until the next change. */
    zetl_wh_sql_insert_head(b, t);
    zetl_buf_puts(b, " SELECT ");
    zetl_wh_sql_col_list(b, t, "x");
    zetl_buf_puts(b, ", x._zetl_lsn, now(), x._zetl_lsn, x._zetl_next FROM (SELECT *, "
                     "lead(_zetl_lsn) OVER (PARTITION BY ");
    zetl_wh_sql_key_list_sort(b, t);
    zetl_buf_puts(b, " ORDER BY _zetl_lsn) AS _zetl_next FROM ");
    qstage(b, t, "_last");
    zetl_buf_puts(b, ") AS x WHERE x._zetl_op IN ('I', 'U')");
}

/* ROW(a."c1", a."c2", ...)::text over the columns of one file shape. */
static void row_text(struct zetl_buf *b, const struct zetl_wh_table *t,
                     const struct zetl_wh_shape *s, const char *alias)
{
    zetl_buf_puts(b, "ROW(");
    for (size_t k = 0; k < s->ncols; k++) {
        if (k)
            zetl_buf_puts(b, ", ");
        zetl_wh_sql_qual(b, alias, t->cols[s->map[k]].name);
    }
    zetl_buf_puts(b, ")::text");
}

static void merge_keyless(struct zetl_buf *b, const struct zetl_wh_table *t,
                          const struct zetl_wh_shape *shapes, size_t nshapes)
{
    /* Rows are appended; removals take one matching current row each (multiset). */
    zetl_wh_sql_insert_head(b, t);
    zetl_buf_puts(b, " SELECT ");
    zetl_wh_sql_col_list(b, t, "x");
    zetl_buf_puts(b, ", x._zetl_lsn, now()");
    if (t->deletes == ZETL_DELETES_SOFT)
        zetl_buf_puts(b, ", false");
    else if (t->deletes == ZETL_DELETES_HISTORY)
        zetl_buf_puts(b, ", x._zetl_lsn, NULL");
    zetl_buf_puts(b, " FROM ");
    qstage(b, t, "");
    zetl_buf_puts(b, " AS x WHERE x._zetl_op IN ('I', 'U') ORDER BY x._zetl_lsn, x._zetl_seq");

    for (size_t f = 0; f < nshapes; f++) {
        zetl_buf_puts(b, ";\nWITH d AS (SELECT ");
        zetl_wh_sql_qual(b, "s", t->tenant_column);
        zetl_buf_puts(b, " AS tn, ");
        row_text(b, t, &shapes[f], "s");
        zetl_buf_puts(b, " AS r, min(s._zetl_lsn) AS lsn, count(*) AS n FROM ");
        qstage(b, t, "");
        zetl_buf_printf(b,
                        " AS s WHERE s._zetl_file = %zu AND s._zetl_op IN ('B', 'D') AND "
                        "s._zetl_unchanged IS NULL GROUP BY 1, 2), ",
                        f);
        zetl_buf_puts(b, "m AS (SELECT w.ctid AS rid, d.lsn, d.n, row_number() OVER "
                         "(PARTITION BY d.tn, d.r ORDER BY w.ctid) AS rn FROM ");
        zetl_wh_sql_table(b, t);
        zetl_buf_puts(b, " AS w JOIN d ON ");
        zetl_wh_sql_qual(b, "w", t->tenant_column);
        zetl_buf_puts(b, " = d.tn AND ");
        row_text(b, t, &shapes[f], "w");
        zetl_buf_puts(b, " = d.r WHERE true");
        zetl_wh_sql_live(b, t, "w");
        zetl_buf_puts(b, ") ");
        if (t->deletes == ZETL_DELETES_HARD) {
            zetl_buf_puts(b, "DELETE FROM ");
            zetl_wh_sql_table(b, t);
            zetl_buf_puts(b, " AS w USING m");
        } else {
            zetl_buf_puts(b, "UPDATE ");
            zetl_wh_sql_table(b, t);
            zetl_buf_puts(b, t->deletes == ZETL_DELETES_SOFT
                                 ? " AS w SET _zetl_deleted = true, _zetl_lsn = m.lsn, "
                                   "_zetl_synced_at = now() FROM m"
                                 : " AS w SET _zetl_valid_to = m.lsn, _zetl_synced_at = now() "
                                   "FROM m");
        }
        zetl_buf_puts(b, " WHERE w.ctid = m.rid AND m.rn <= m.n");
    }
}

char *zetl_wh_pg_merge_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                           size_t nshapes)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    if (zetl_wh_sql_nkeys(t) > 0)
        merge_keyed(&b, t);
    else
        merge_keyless(&b, t, shapes, nshapes);
    return zetl_wh_sql_take(&b);
}

/* ---- bookkeeping ------------------------------------------------------------------ */

char *zetl_wh_pg_offsets_sql(const char *schema, enum zetl_wh_offsets_stmt which)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    switch (which) {
    case ZETL_WH_SQL_OFFSET_GET:
        zetl_buf_puts(&b, "SELECT last_lsn, end_lsn FROM ");
        zetl_sql_append_ident(&b, schema);
        zetl_buf_puts(&b, "._zetl_offsets WHERE stream = $1");
        break;
    case ZETL_WH_SQL_OFFSET_LOCK:
        /* The row exists before it is locked, so two appliers serialize on it. */
        zetl_buf_puts(&b, "INSERT INTO ");
        zetl_sql_append_ident(&b, schema);
        zetl_buf_puts(&b, "._zetl_offsets (stream, last_lsn) VALUES ($1, 0) "
                          "ON CONFLICT (stream) DO NOTHING");
        break;
    case ZETL_WH_SQL_OFFSET_LOCKED_GET:
        zetl_buf_puts(&b, "SELECT last_lsn FROM ");
        zetl_sql_append_ident(&b, schema);
        zetl_buf_puts(&b, "._zetl_offsets WHERE stream = $1 FOR UPDATE");
        break;
    case ZETL_WH_SQL_OFFSET_SET:
        zetl_buf_puts(&b, "INSERT INTO ");
        zetl_sql_append_ident(&b, schema);
        zetl_buf_puts(&b, "._zetl_offsets AS o (stream, last_lsn, end_lsn, batch, applied_at) "
                          "VALUES ($1, $2::bigint, $3::bigint, $4, now()) ON CONFLICT (stream) "
                          "DO UPDATE SET last_lsn = EXCLUDED.last_lsn, end_lsn = "
                          "GREATEST(o.end_lsn, EXCLUDED.end_lsn), batch = EXCLUDED.batch, "
                          "applied_at = EXCLUDED.applied_at");
        break;
    case ZETL_WH_SQL_OFFSET_PROGRESS:
        zetl_buf_puts(&b, "INSERT INTO ");
        zetl_sql_append_ident(&b, schema);
        zetl_buf_puts(&b, "._zetl_offsets AS o (stream, last_lsn, end_lsn) VALUES ($1, 0, "
                          "$2::bigint) ON CONFLICT (stream) DO UPDATE SET end_lsn = "
                          "EXCLUDED.end_lsn WHERE o.end_lsn IS NULL OR o.end_lsn < "
                          "EXCLUDED.end_lsn");
        break;
    case ZETL_WH_SQL_STATE_GET:
        zetl_wh_sql_state_get(&b, schema, "$1");
        break;
    case ZETL_WH_SQL_STATE_APPLIED:
        zetl_buf_puts(&b, "INSERT INTO ");
        zetl_sql_append_ident(&b, schema);
        zetl_buf_puts(&b, "._zetl_table_state AS s (stream, table_name, state, last_lsn, "
                          "updated_at) VALUES ($3, $1, 'active', $2::bigint, now()) ON CONFLICT "
                          "(stream, table_name) DO UPDATE SET last_lsn = GREATEST(s.last_lsn, "
                          "EXCLUDED.last_lsn), updated_at = now()");
        break;
    case ZETL_WH_SQL_STATE_STOP:
        zetl_buf_puts(&b, "INSERT INTO ");
        zetl_sql_append_ident(&b, schema);
        zetl_buf_puts(&b, "._zetl_table_state AS s (stream, table_name, state, reason, "
                          "stopped_at_lsn, updated_at) VALUES ($4, $1, 'stopped', $2, $3::bigint, "
                          "now()) ON CONFLICT (stream, table_name) DO UPDATE SET state = "
                          "'stopped', reason = EXCLUDED.reason, stopped_at_lsn = "
                          "EXCLUDED.stopped_at_lsn, updated_at = now()");
        break;
    case ZETL_WH_SQL_COLUMNS:
        /* Columns of one table with their primary key membership. */
        zetl_buf_puts(&b, "SELECT a.attname, a.atttypid, a.atttypmod, "
                          "coalesce(a.attnum = ANY(i.indkey), false) "
                          "FROM pg_catalog.pg_attribute a "
                          "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                          "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                          "LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND "
                          "i.indisprimary "
                          "WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND "
                          "NOT a.attisdropped ORDER BY a.attnum");
        break;
    }
    return zetl_wh_sql_take(&b);
}

/* What each bookkeeping statement takes, by enum zetl_wh_offsets_stmt. */
static const int offsets_nparams[] = {
    [ZETL_WH_SQL_OFFSET_GET] = 1,        [ZETL_WH_SQL_OFFSET_LOCK] = 1,
    [ZETL_WH_SQL_OFFSET_LOCKED_GET] = 1, [ZETL_WH_SQL_OFFSET_SET] = 4,
    [ZETL_WH_SQL_OFFSET_PROGRESS] = 2,   [ZETL_WH_SQL_STATE_GET] = 1,
    [ZETL_WH_SQL_STATE_APPLIED] = 3,     [ZETL_WH_SQL_STATE_STOP] = 4,
    [ZETL_WH_SQL_COLUMNS] = 2,
};

/* Every bookkeeping statement is one statement: ON CONFLICT makes the upserts. */
static char *offsets_sql(const char *schema, enum zetl_wh_offsets_stmt which, size_t part,
                         int *nparams)
{
    *nparams = offsets_nparams[which];
    return part == 0 ? zetl_wh_pg_offsets_sql(schema, which) : NULL;
}

/* The apply's sort and hash steps get room; the offset row is locked later (FOR UPDATE). */
static char *begin_sql(const char *schema)
{
    (void)schema;
    return zetl_strdup("BEGIN; SET LOCAL work_mem = '64MB'");
}

/* COLUMNS reports atttypid and atttypmod: named the way the manifest names types. */
static char *catalog_type(const PGresult *res, int row)
{
    return zetl_batch_type_text(NULL, (uint32_t)strtoul(PQgetvalue(res, row, 1), NULL, 10),
                                (int32_t)strtol(PQgetvalue(res, row, 2), NULL, 10));
}

/*
 * The staging table, then one COPY FROM STDIN per file with the file's own
 * column list, each file streamed from the batch directory.
 */
static enum zetl_err stage(struct zetl_wh *wh, void *state, const struct zetl_wh_table *t,
                           const struct zetl_wh_stage_src *src, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    (void)state;
    if ((err = zetl_wh_exec_owned(wh, zetl_wh_pg_stage_sql(t), NULL, eb)) != ZETL_OK)
        return err;
    for (size_t i = 0; i < src->nfiles && err == ZETL_OK; i++) {
        /* A lone file's rows are file 0 by the column's default. */
        if (src->nfiles > 1 &&
            (err = zetl_wh_exec_owned(wh, zetl_wh_pg_file_default_sql(t, i), NULL, eb)) != ZETL_OK)
            break;
        err = zetl_wh_copy_file(wh, zetl_wh_pg_copy_sql(t, &src->shapes[i]), src->dir,
                                &src->files[i], eb);
    }
    return err;
}

const struct zetl_wh_dialect zetl_wh_pg_dialect = {
    .name = "postgres",
    .kind = ZETL_WH_POSTGRES,
    /* Staging tables are temporary: room for them before the first one exists. */
    .session_sql = "SET temp_buffers = '64MB'",
    .begin_sql = begin_sql,
    .offsets_sql = offsets_sql,
    .catalog_type = catalog_type,
    .text_type = "text",
    .tenant_type = "text",
    .col_type = zetl_wh_pg_type,
    /*
     * Streams apply concurrently: creating or altering a table (or the
     * bookkeeping schema) is serialized per table until the transaction ends.
     */
    .ddl_lock_sql = "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
    .type_change = zetl_wh_pg_type_change,
    .stage = stage,
    .skip_applied_sql = zetl_wh_pg_skip_applied_sql,
    .stage_stats_sql = zetl_wh_pg_stage_stats_sql,
    .stage_index_sql = zetl_wh_pg_stage_index_sql,
    .stage_analyze_sql = zetl_wh_pg_stage_analyze_sql,
    /*
     * As the planner estimates: rows per page as of the last VACUUM or
     * ANALYZE times the pages the table has now, so the estimate follows a
     * table that grew since (as it does batch after batch).
     */
    .table_rows_sql = "SELECT CASE WHEN c.relpages > 0 THEN c.reltuples::float8 / c.relpages * "
                      "(pg_catalog.pg_relation_size(c.oid) / "
                      "pg_catalog.current_setting('block_size')::int8) ELSE c.reltuples END "
                      "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = "
                      "c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
    .replay_filter_sql = zetl_wh_pg_replay_filter_sql,
    .truncate_sql = zetl_wh_pg_truncate_sql,
    .purge_sql = zetl_wh_pg_purge_sql,
    .fill_prepare_sql = zetl_wh_pg_fill_prepare_sql,
    .fill_round_sql = zetl_wh_pg_fill_round_sql,
    .merge_sql = zetl_wh_pg_merge_sql,
};
