/*
 * The Redshift dialect's SQL for one table of a batch, as pure text
 * generators (no connection) the unit tests pin as golden text: the type
 * mapping, the staging table and its COPY from S3, truncate, the fill of
 * unchanged values and the merge.  The dialect's table, its operations and
 * its bookkeeping statements are in wh_redshift.c; the DDL skeleton and the
 * small building blocks come from wh_sql.c.  What is here is what Redshift
 * spells differently (docs/warehouse.md, "Redshift"):
 *
 *   - values come from S3 by COPY ... MANIFEST, one COPY per archive file;
 *   - no arrays: an update's unchanged-column set is the string ",2,5," and
 *     membership is a LIKE '%,2,%' test; the file's _zetl_unchanged "{2,5}"
 *     is tested as ',' || trim('{}' FROM u) || ',';
 *   - no DISTINCT ON: the last image per key is ROW_NUMBER() = 1;
 *   - no alias for the target of DELETE (nor of UPDATE here): target columns
 *     are qualified by the table's own quoted name, and every alias starts
 *     with _zetl_ so no user table (those names are refused) can clash;
 *   - GETDATE() instead of now(), which runs on the leader node only;
 *   - VARCHAR comparisons ignore trailing blanks ('a' = 'a '): every match
 *     and grouping of text key columns also compares OCTET_LENGTH, so keys
 *     that differ only in trailing spaces stay two keys;
 *   - temporary tables are not ON COMMIT DROP: the apply drops them.
 *
 * Every statement except the staging DDL and the COPY also runs on
 * PostgreSQL unchanged (given a getdate() function), which is how
 * tests/integration/test_redshift_sql.py executes them.  Identifiers are
 * always quoted; the only literals are numbers we computed, the S3 URL, the
 * IAM role and the region, which are escaped.
 */
#include "sinks/warehouse/wh_dialect.h"

#include "common/sqlquote.h"
#include "common/mem.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Redshift's widest VARCHAR, in bytes. */
#define RS_VARCHAR_MAX 65535
/* Widest VARBYTE. */
#define RS_VARBYTE_MAX 1024000
/* Widest NUMERIC precision. */
#define RS_NUMERIC_MAX 38
/* Redshift's largest NUMERIC scale (SQL reference, "Numeric types"): one below its precision. */
#define RS_NUMERIC_SCALE_MAX 37

/* How every COPY of a batch file reads it (zetl_wh_rs_copy_sql). */
#define RS_COPY_OPTIONS                                                                            \
    "FORMAT AS CSV ZSTD MANIFEST NULL AS '' TIMEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF"

/* ---- types ------------------------------------------------------------------ */

/* "NAME(a)" or, with nargs 2, "NAME(a,b)"; owned. */
static char *sized(const char *name, long a, long b, int nargs)
{
    char tmp[64];

    if (nargs == 2)
        snprintf(tmp, sizeof(tmp), "%s(%ld,%ld)", name, a, b);
    else
        snprintf(tmp, sizeof(tmp), "%s(%ld)", name, a);
    return zetl_strdup(tmp);
}

/* "name(a,b)" -> base and up to two numbers; returns the count, -1 when malformed. */
static int split_type(const char *t, char base[64], long args[2])
{
    size_t n = strcspn(t, "(");
    int got = 0;

    args[0] = args[1] = 0;
    if (n >= 64)
        return -1;
    memcpy(base, t, n);
    base[n] = '\0';
    if (t[n] == '(') {
        char close = 0;

        got = sscanf(t + n, "(%ld,%ld%c", &args[0], &args[1], &close);
        if (got == 3 && close == ')')
            return 2;
        got = sscanf(t + n, "(%ld%c", &args[0], &close);
        return got == 2 && close == ')' ? 1 : -1;
    }
    return 0;
}

static bool is_bytea(const char *type)
{
    return strcmp(type, "bytea") == 0;
}

static bool is_array(const char *type)
{
    return type[0] == '_';
}

/* Bytes a varchar(n) of PostgreSQL characters may take (UTF-8: up to 4 per character). */
static long varchar_bytes(long chars)
{
    return chars > 0 && chars <= RS_VARCHAR_MAX / 4 ? chars * 4 : RS_VARCHAR_MAX;
}

char *zetl_wh_rs_type(const char *manifest_type)
{
    const char *c;
    char base[64];
    long a[2];
    int n;

    /* Already a Redshift type (the warehouse's own, read from its catalog). */
    if (manifest_type != NULL && manifest_type[0] >= 'A' && manifest_type[0] <= 'Z')
        return zetl_strdup(manifest_type);
    c = zetl_wh_canon_type(manifest_type);
    if (is_array(c))
        return zetl_strdup("SUPER");
    n = split_type(c, base, a);
    if (n < 0)
        return sized("VARCHAR", RS_VARCHAR_MAX, 0, 1);
    if (strcmp(base, "int2") == 0)
        return zetl_strdup("SMALLINT");
    if (strcmp(base, "int4") == 0)
        return zetl_strdup("INTEGER");
    if (strcmp(base, "int8") == 0)
        return zetl_strdup("BIGINT");
    if (strcmp(base, "float4") == 0)
        return zetl_strdup("REAL");
    if (strcmp(base, "float8") == 0)
        return zetl_strdup("DOUBLE PRECISION");
    if (strcmp(base, "bool") == 0)
        return zetl_strdup("BOOLEAN");
    if (strcmp(base, "date") == 0)
        return zetl_strdup("DATE");
    if (strcmp(base, "timestamp") == 0)
        return zetl_strdup("TIMESTAMP");
    if (strcmp(base, "timestamptz") == 0)
        return zetl_strdup("TIMESTAMPTZ");
    if (strcmp(base, "time") == 0)
        return zetl_strdup("TIME");
    if (strcmp(base, "timetz") == 0)
        return zetl_strdup("TIMETZ");
    if (strcmp(base, "json") == 0 || strcmp(base, "jsonb") == 0)
        return zetl_strdup("SUPER");
    if (strcmp(base, "bytea") == 0)
        return sized("VARBYTE", RS_VARBYTE_MAX, 0, 1);
    if (strcmp(base, "uuid") == 0)
        return zetl_strdup("CHAR(36)");
    /* PostgreSQL's text form: Redshift's INTERVAL is no column type. */
    if (strcmp(base, "interval") == 0)
        return zetl_strdup("VARCHAR(128)");
    /* Redshift counts bytes, and CHAR holds single-byte characters only. */
    if ((strcmp(base, "varchar") == 0 || strcmp(base, "bpchar") == 0) && n == 1)
        return sized("VARCHAR", varchar_bytes(a[0]), 0, 1);
    /* numeric(p) is numeric(p,0); the scale must lie in 0..p, and 0..37 in Redshift. */
    if (strcmp(base, "numeric") == 0 && n >= 1 && a[0] >= 1 && a[0] <= RS_NUMERIC_MAX &&
        a[1] >= 0 && a[1] <= a[0] && a[1] <= RS_NUMERIC_SCALE_MAX)
        return sized("NUMERIC", a[0], a[1], 2);
    /*
     * Everything else keeps PostgreSQL's exact text: text, unconstrained
     * varchar, numeric beyond NUMERIC(38) or unconstrained (NaN, Infinity,
     * any precision), enums and custom types, bit, inet, xml, ...
     */
    return sized("VARCHAR", RS_VARCHAR_MAX, 0, 1);
}

/*
 * With no ENCODE on any column a table is ENCODE AUTO, and Redshift may
 * later give a VARCHAR column BYTEDICT, RUNLENGTH, TEXT255 or TEXT32K, with
 * which ALTER COLUMN ... TYPE is refused: VARCHAR columns are ZSTD, and the
 * rest get Redshift's defaults for a table that is not ENCODE AUTO.
 */
char *zetl_wh_rs_col_def(const char *manifest_type)
{
    char *type = zetl_wh_rs_type(manifest_type);
    struct zetl_buf b;

    if (strncmp(type, "VARCHAR", 7) != 0)
        return type;
    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "%s ENCODE ZSTD", type);
    free(type);
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_rs_catalog_type(const char *ft)
{
    static const struct {
        const char *pg;
        const char *rs;
    } plain[] = {
        {"smallint", "SMALLINT"},
        {"integer", "INTEGER"},
        {"bigint", "BIGINT"},
        {"real", "REAL"},
        {"double precision", "DOUBLE PRECISION"},
        {"boolean", "BOOLEAN"},
        {"date", "DATE"},
        {"timestamp without time zone", "TIMESTAMP"},
        {"timestamp with time zone", "TIMESTAMPTZ"},
        {"time without time zone", "TIME"},
        {"time with time zone", "TIMETZ"},
        {"super", "SUPER"},
    };
    static const struct {
        const char *pg;
        const char *rs;
    } sized[] = {
        {"character varying", "VARCHAR"}, {"character", "CHAR"},         {"numeric", "NUMERIC"},
        {"varbyte", "VARBYTE"},           {"binary varying", "VARBYTE"},
    };
    struct zetl_buf b;

    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        if (strcmp(ft, plain[i].pg) == 0)
            return zetl_strdup(plain[i].rs);
    zetl_buf_init(&b, 0);
    for (size_t i = 0; i < sizeof(sized) / sizeof(sized[0]); i++) {
        size_t n = strlen(sized[i].pg);

        if (strncmp(ft, sized[i].pg, n) == 0 && ft[n] == '(') {
            zetl_buf_printf(&b, "%s%s", sized[i].rs, ft + n);
            return zetl_wh_sql_take(&b);
        }
    }
    /* Unknown: upper-cased, so it never reads as a manifest type. */
    for (const char *p = ft; *p; p++)
        zetl_buf_putc(&b, (char)toupper((unsigned char)*p));
    if (b.len == 0 || !(b.data[0] >= 'A' && b.data[0] <= 'Z'))
        zetl_buf_puts(&b, "?");
    return zetl_wh_sql_take(&b);
}

/*
 * Redshift changes a column's type in place only for a longer VARCHAR;
 * anything else that does not fit stops the table (docs/warehouse.md).
 */
enum zetl_wh_type_change zetl_wh_rs_type_change(const char *from, const char *to)
{
    char bf[64], bt[64];
    long af[2], at[2];
    int nf = split_type(from, bf, af), nt = split_type(to, bt, at);

    if (strcmp(from, to) == 0)
        return ZETL_WH_TYPE_SAME;
    if (nf < 0 || nt < 0)
        return ZETL_WH_TYPE_INCOMPATIBLE;
    if (strcmp(bf, "VARBYTE") == 0 && strcmp(bt, "VARBYTE") == 0)
        return ZETL_WH_TYPE_SAME;
    if (strcmp(bf, "VARCHAR") == 0 && strcmp(bt, "VARCHAR") == 0)
        return at[0] > af[0] ? ZETL_WH_TYPE_WIDER : ZETL_WH_TYPE_NARROWER;
    /* Every value's text form fits the widest VARCHAR, as with text in PostgreSQL. */
    if (strcmp(bf, "VARCHAR") == 0 && af[0] == RS_VARCHAR_MAX)
        return ZETL_WH_TYPE_NARROWER;
    if ((strcmp(bf, "INTEGER") == 0 && strcmp(bt, "SMALLINT") == 0) ||
        (strcmp(bf, "BIGINT") == 0 && (strcmp(bt, "SMALLINT") == 0 || strcmp(bt, "INTEGER") == 0)))
        return ZETL_WH_TYPE_NARROWER;
    if (strcmp(bf, "NUMERIC") == 0 && strcmp(bt, "NUMERIC") == 0 && nf == 2 && nt == 2 &&
        at[1] <= af[1] && at[0] - at[1] <= af[0] - af[1])
        return ZETL_WH_TYPE_NARROWER;
    return ZETL_WH_TYPE_INCOMPATIBLE;
}

/* ---- references ---------------------------------------------------------------- */

/* "<stage><suffix>": temporary tables are found first without a schema. */
static void stage(struct zetl_buf *b, const struct zetl_wh_table *t, const char *suffix)
{
    struct zetl_buf n;

    zetl_buf_init(&n, 0);
    zetl_buf_printf(&n, "%s%s", t->stage, suffix);
    zetl_sql_append_ident(b, n.data);
    zetl_buf_release(&n);
}

/* Owned text of a reference, to qualify columns with ("schema"."table", "stage"). */
static char *target_ref(const struct zetl_wh_table *t)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_wh_sql_table(&b, t);
    return zetl_wh_sql_take(&b);
}

static char *stage_ref(const struct zetl_wh_table *t, const char *suffix)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    stage(&b, t, suffix);
    return zetl_wh_sql_take(&b);
}

/* The staging type of a column: bytea and arrays arrive as PostgreSQL's text. */
static char *stage_type(const char *type)
{
    if (is_bytea(type) || is_array(type))
        return sized("VARCHAR", RS_VARCHAR_MAX, 0, 1);
    return zetl_wh_rs_type(type);
}

/* A staged value as the warehouse column takes it. */
static void to_warehouse(struct zetl_buf *b, const struct zetl_wh_col *c, const char *alias)
{
    if (is_bytea(c->type)) {
        /* "\x0a0b" -> the bytes (TO_VARBYTE's documented form; the probe checks it) */
        zetl_buf_puts(b, "TO_VARBYTE(SUBSTRING(");
        zetl_wh_sql_qual(b, alias, c->name);
        zetl_buf_puts(b, ", 3), 'hex')");
    } else {
        /* An array's text lands in SUPER as a string. */
        zetl_wh_sql_qual(b, alias, c->name);
    }
}

/* A warehouse value as the staging column holds it (the reverse of to_warehouse). */
static void to_stage(struct zetl_buf *b, const struct zetl_wh_col *c, const char *alias)
{
    if (is_bytea(c->type)) {
        zetl_buf_puts(b, "CHR(92) || 'x' || TO_HEX(");
        zetl_wh_sql_qual(b, alias, c->name);
        zetl_buf_putc(b, ')');
    } else if (is_array(c->type)) {
        zetl_buf_puts(b, "CAST(");
        zetl_wh_sql_qual(b, alias, c->name);
        zetl_buf_printf(b, " AS VARCHAR(%d))", RS_VARCHAR_MAX);
    } else {
        zetl_wh_sql_qual(b, alias, c->name);
    }
}

/* tenant, c1, ... of a staged row, converted for the warehouse. */
static void values(struct zetl_buf *b, const struct zetl_wh_table *t, const char *alias)
{
    zetl_wh_sql_qual(b, alias, t->tenant_column);
    for (size_t i = 0; i < t->ncols; i++) {
        zetl_buf_puts(b, ", ");
        to_warehouse(b, &t->cols[i], alias);
    }
}

/*
 * A key column whose values Redshift compares ignoring trailing blanks: its
 * matches and groupings also compare OCTET_LENGTH, which counts them.
 */
static bool blank_padded(const struct zetl_wh_col *c)
{
    char *type = zetl_wh_rs_type(c->type);
    bool padded = strncmp(type, "VARCHAR", 7) == 0 || strncmp(type, "CHAR", 4) == 0;

    free(type);
    return padded;
}

/* a.tenant = c.tenant AND a.k = c.k ..., text keys compared to the last byte. */
static void key_match(struct zetl_buf *b, const struct zetl_wh_table *t, const char *a,
                      const char *c)
{
    zetl_wh_sql_key_match(b, t, a, c);
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key && blank_padded(&t->cols[i])) {
            zetl_buf_puts(b, " AND OCTET_LENGTH(");
            zetl_wh_sql_qual(b, a, t->cols[i].name);
            zetl_buf_puts(b, ") = OCTET_LENGTH(");
            zetl_wh_sql_qual(b, c, t->cols[i].name);
            zetl_buf_putc(b, ')');
        }
}

/* The key as PARTITION BY and GROUP BY take it, text keys with their byte length. */
static void key_sort(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    zetl_wh_sql_key_list_sort(b, t);
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key && blank_padded(&t->cols[i])) {
            zetl_buf_puts(b, ", OCTET_LENGTH(");
            zetl_sql_append_ident(b, t->cols[i].name);
            zetl_buf_putc(b, ')');
        }
}

/* Redshift refuses a SUPER column (json, arrays) as DISTKEY or in a SORTKEY. */
static bool sortable(const struct zetl_wh_col *c)
{
    char *type = zetl_wh_rs_type(c->type);
    bool ok = strcmp(type, "SUPER") != 0;

    free(type);
    return ok;
}

static const struct zetl_wh_col *first_key(const struct zetl_wh_table *t)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key && sortable(&t->cols[i]))
            return &t->cols[i];
    return NULL;
}

/* Rows spread by the first key column, so the merge's joins on the key stay on one slice. */
static void dist_key(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    const struct zetl_wh_col *k = first_key(t);

    if (k) {
        zetl_buf_puts(b, " DISTKEY(");
        zetl_sql_append_ident(b, k->name);
        zetl_buf_putc(b, ')');
    } else {
        zetl_buf_puts(b, " DISTSTYLE EVEN");
    }
}

void zetl_wh_rs_table_options(struct zetl_buf *b, const struct zetl_wh_table *t)
{
    dist_key(b, t);
    zetl_buf_puts(b, " COMPOUND SORTKEY(");
    zetl_sql_append_ident(b, t->tenant_column);
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key && sortable(&t->cols[i])) {
            zetl_buf_puts(b, ", ");
            zetl_sql_append_ident(b, t->cols[i].name);
        }
    zetl_buf_putc(b, ')');
}

/* ---- staging ------------------------------------------------------------------ */

char *zetl_wh_rs_stage_sql(const struct zetl_wh_table *t)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "CREATE TEMP TABLE ");
    stage(&b, t, "");
    zetl_buf_printf(&b,
                    " (_zetl_id BIGINT IDENTITY(1, 1), _zetl_file INTEGER DEFAULT 0, "
                    "_zetl_op CHAR(1), _zetl_lsn BIGINT, _zetl_seq BIGINT, _zetl_commit_ts "
                    "TIMESTAMPTZ, _zetl_unchanged VARCHAR(%d), _zetl_unch VARCHAR(%d), _zetl_kb "
                    "BIGINT, _zetl_prev BIGINT, ",
                    RS_VARCHAR_MAX, RS_VARCHAR_MAX);
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_printf(&b, " %s", zetl_wh_rs_dialect.tenant_type);
    zetl_wh_sql_col_defs(&b, t, stage_type);
    zetl_buf_putc(&b, ')');
    dist_key(&b, t);
    return zetl_wh_sql_take(&b);
}

/*
 * NULL AS '': per the COPY documentation an empty field is "two delimiters
 * in succession with no characters between", which `""` is not, so an
 * unquoted empty field loads as NULL and `""` as the empty string; the text
 * NULL is not special (the default null string \N is replaced).  No
 * EMPTYASNULL, BLANKSASNULL, TRUNCATECOLUMNS or ACCEPTINVCHARS: a value that
 * does not fit fails the COPY instead of changing.
 */
char *zetl_wh_rs_copy_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shape,
                          const char *manifest_url, const char *iam_role, const char *region)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "COPY ");
    stage(&b, t, "");
    zetl_wh_sql_copy_columns(&b, t, shape);
    zetl_buf_puts(&b, " FROM ");
    zetl_sql_append_literal(&b, manifest_url);
    zetl_buf_puts(&b, " IAM_ROLE ");
    zetl_sql_append_literal(&b, iam_role);
    if (region != NULL && region[0] != '\0') {
        zetl_buf_puts(&b, " REGION ");
        zetl_sql_append_literal(&b, region);
    }
    zetl_buf_puts(&b, " " RS_COPY_OPTIONS);
    return zetl_wh_sql_take(&b);
}

/*
 * Rows get file 0 by default; files are copied last to first, each COPY
 * but file 0's followed by this, so it touches only the rows just loaded.
 */
char *zetl_wh_rs_file_mark_sql(const struct zetl_wh_table *t, size_t file_no)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "UPDATE ");
    stage(&b, t, "");
    zetl_buf_printf(&b, " SET _zetl_file = %zu WHERE _zetl_file = 0", file_no);
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_rs_stage_stats_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                 size_t nshapes)
{
    char *s = stage_ref(t, "");
    char *sql = zetl_wh_sql_stage_stats(s, t, shapes, nshapes);

    free(s);
    return sql;
}

char *zetl_wh_rs_skip_applied_sql(const struct zetl_wh_table *t)
{
    char *s = stage_ref(t, "");
    char *sql = zetl_wh_sql_skip_applied(s);

    free(s);
    return sql;
}

char *zetl_wh_rs_replay_filter_sql(const struct zetl_wh_table *t, size_t ntenants)
{
    char *s = stage_ref(t, "");
    char *sql = zetl_wh_sql_replay_filter(s, t, ntenants, "VARCHAR(128)");

    free(s);
    return sql;
}

/* The target is not aliased: Redshift's DELETE takes none. */
char *zetl_wh_rs_purge_sql(const struct zetl_wh_table *t)
{
    return zetl_wh_sql_purge(t, "CAST($1 AS VARCHAR(128))");
}

/* ---- truncate -------------------------------------------------------------------- */

char *zetl_wh_rs_truncate_sql(const struct zetl_wh_table *t)
{
    char *w = target_ref(t), *s = stage_ref(t, ""), *tr = stage_ref(t, "_tr");
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    /* Each truncated tenant's last truncate (Redshift's DELETE ... USING takes tables only). */
    zetl_buf_printf(&b, "CREATE TEMP TABLE %s AS SELECT tn, lsn, seq FROM (SELECT ", tr);
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_puts(&b,
                  " AS tn, _zetl_lsn AS lsn, _zetl_seq AS seq, ROW_NUMBER() OVER (PARTITION BY ");
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_printf(&b,
                    " ORDER BY _zetl_lsn DESC, _zetl_seq DESC) AS rn FROM %s WHERE _zetl_op = 'T') "
                    "AS _zetl_q WHERE rn = 1;\n",
                    s);
    /* The rows of each truncated tenant older than its last truncate (as in wh_pg.c). */
    if (t->deletes == ZETL_DELETES_HARD) {
        zetl_buf_printf(&b, "DELETE FROM %s USING %s WHERE ", w, tr);
        zetl_wh_sql_qual(&b, w, t->tenant_column);
        zetl_buf_printf(&b, " = %s.tn AND %s._zetl_lsn < %s.lsn", tr, w, tr);
    } else {
        zetl_buf_printf(&b, "UPDATE %s SET ", w);
        zetl_buf_printf(
            &b,
            t->deletes == ZETL_DELETES_SOFT
                ? "_zetl_deleted = true, _zetl_lsn = GREATEST(_zetl_tr.lsn, %s._zetl_lsn)"
                : "_zetl_valid_to = GREATEST(_zetl_tr.lsn, %s._zetl_lsn)",
            w);
        zetl_buf_puts(&b, ", _zetl_synced_at = GETDATE() FROM (SELECT ");
        zetl_sql_append_ident(&b, t->tenant_column);
        zetl_buf_printf(&b,
                        " AS tn, min(_zetl_lsn) AS lsn, max(_zetl_lsn) AS maxlsn FROM %s WHERE "
                        "_zetl_op = 'T' GROUP BY 1) AS _zetl_tr WHERE ",
                        s);
        zetl_wh_sql_qual(&b, w, t->tenant_column);
        zetl_buf_printf(&b, " = _zetl_tr.tn AND %s._zetl_lsn < _zetl_tr.maxlsn", w);
        zetl_wh_sql_live(&b, t, w);
    }
    /* Staged changes of the tenant up to its last truncate are void. */
    zetl_buf_printf(&b, ";\nDELETE FROM %s USING %s WHERE ", s, tr);
    zetl_wh_sql_qual(&b, s, t->tenant_column);
    zetl_buf_printf(&b,
                    " = %s.tn AND (%s._zetl_lsn < %s.lsn OR (%s._zetl_lsn = %s.lsn AND "
                    "%s._zetl_seq <= %s.seq))",
                    tr, s, tr, s, tr, s, tr);
    free(tr);
    free(s);
    free(w);
    return zetl_wh_sql_take(&b);
}

/* ---- unchanged values ------------------------------------------------------------- */

/* ",i," is in the set string `set` (SQL text). */
static void in_set(struct zetl_buf *b, const char *set, size_t i)
{
    zetl_buf_printf(b, "%s LIKE '%%,%zu,%%'", set, i);
}

/* SET "c" = CASE WHEN <i in _zetl_unch>[ AND i not in <not_in_set>] THEN src.vi ELSE "c" END, ...,
 */
static void fill_set(struct zetl_buf *b, const struct zetl_wh_table *t, const char *src_alias,
                     const char *not_in_set)
{
    bool first = true;

    for (size_t i = 0; i < t->ncols; i++) {
        if (t->cols[i].key)
            continue;
        zetl_buf_puts(b, first ? " SET " : ", ");
        first = false;
        zetl_sql_append_ident(b, t->cols[i].name);
        zetl_buf_puts(b, " = CASE WHEN ");
        in_set(b, "_zetl_unch", i);
        if (not_in_set)
            zetl_buf_printf(b, " AND coalesce(%s, '') NOT LIKE '%%,%zu,%%'", not_in_set, i);
        zetl_buf_printf(b, " THEN %s.v%zu ELSE ", src_alias, i);
        zetl_sql_append_ident(b, t->cols[i].name);
        zetl_buf_puts(b, " END");
    }
    zetl_buf_puts(b, first ? " SET " : ", ");
}

/* The key an update came from: the B row's when it changed the key. */
static void from_key(struct zetl_buf *b, const char *name)
{
    zetl_buf_puts(b, "CASE WHEN _zetl_b._zetl_id IS NULL THEN ");
    zetl_wh_sql_qual(b, "_zetl_r", name);
    zetl_buf_puts(b, " ELSE ");
    zetl_wh_sql_qual(b, "_zetl_b", name);
    zetl_buf_puts(b, " END");
}

/* _zetl_r (the update), _zetl_b (its B row, if any) joined to `other`."tenant"/keys. */
static void from_key_match(struct zetl_buf *b, const struct zetl_wh_table *t, const char *other)
{
    zetl_wh_sql_qual(b, other, t->tenant_column);
    zetl_buf_puts(b, " = ");
    from_key(b, t->tenant_column);
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].key) {
            zetl_buf_puts(b, " AND ");
            zetl_wh_sql_qual(b, other, t->cols[i].name);
            zetl_buf_puts(b, " = ");
            from_key(b, t->cols[i].name);
            if (blank_padded(&t->cols[i])) {
                zetl_buf_puts(b, " AND OCTET_LENGTH(");
                zetl_wh_sql_qual(b, other, t->cols[i].name);
                zetl_buf_puts(b, ") = OCTET_LENGTH(");
                from_key(b, t->cols[i].name);
                zetl_buf_putc(b, ')');
            }
        }
}

char *zetl_wh_rs_fill_prepare_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                                  size_t nshapes)
{
    char *s = stage_ref(t, "");
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    /*
     * 1. Unchanged columns as the union-index set ",u,v,": the file's
     *    _zetl_unchanged translated through its column map, plus the columns
     *    its shape lacks.  Key columns are never filled.
     */
    zetl_buf_printf(&b, "UPDATE %s SET _zetl_unch = CASE _zetl_file", s);
    for (size_t f = 0; f < nshapes; f++) {
        zetl_buf_printf(&b, " WHEN %zu THEN NULLIF(','", f);
        for (size_t k = 0; k < shapes[f].ncols; k++) {
            size_t u = shapes[f].map[k];

            if (t->cols[u].key)
                continue;
            zetl_buf_puts(&b, " || CASE WHEN ");
            in_set(&b, "',' || trim('{}' FROM _zetl_unchanged) || ','", k);
            zetl_buf_printf(&b, " THEN '%zu,' ELSE '' END", u);
        }
        for (size_t u = 0; u < t->ncols; u++) {
            bool present = false;

            for (size_t k = 0; k < shapes[f].ncols && !present; k++)
                present = shapes[f].map[k] == u;
            if (!present && !t->cols[u].key)
                zetl_buf_printf(&b, " || '%zu,'", u);
        }
        zetl_buf_puts(&b, ", ',')");
    }
    zetl_buf_puts(&b, " END WHERE _zetl_op = 'U' AND (_zetl_unchanged IS NOT NULL");
    zetl_wh_sql_files_absent(&b, t, shapes, nshapes);
    zetl_buf_puts(&b, ")");

    /* 2. The B row right before an update (same transaction, seq - 1): its old key. */
    zetl_buf_printf(&b, ";\nUPDATE %s SET _zetl_kb = _zetl_x.id FROM (SELECT _zetl_id AS id, ", s);
    zetl_sql_append_ident(&b, t->tenant_column);
    zetl_buf_printf(&b,
                    " AS tn, _zetl_lsn AS lsn, _zetl_seq AS seq FROM %s WHERE _zetl_op = 'B') "
                    "AS _zetl_x WHERE %s._zetl_unch IS NOT NULL AND _zetl_x.lsn = %s._zetl_lsn AND "
                    "_zetl_x.seq = %s._zetl_seq - 1 AND _zetl_x.tn = ",
                    s, s, s, s);
    zetl_wh_sql_qual(&b, s, t->tenant_column);

    if (zetl_wh_sql_nkeys(t) == 0) {
        /* Without a key only the before-image of the same change can supply values. */
        zetl_buf_printf(&b, ";\nUPDATE %s SET _zetl_prev = _zetl_kb WHERE _zetl_unch IS NOT NULL",
                        s);
        free(s);
        return zetl_wh_sql_take(&b);
    }

    /*
     * 3. The latest earlier image (I or U) of the key the update came from,
     *    by ROW_NUMBER over the pairs (no LATERAL ... LIMIT 1 in Redshift).
     */
    zetl_buf_printf(&b,
                    ";\nUPDATE %s SET _zetl_prev = _zetl_x.pid FROM (SELECT rid, pid FROM (SELECT "
                    "_zetl_r._zetl_id AS rid, _zetl_p._zetl_id AS pid, ROW_NUMBER() OVER "
                    "(PARTITION BY _zetl_r._zetl_id ORDER BY _zetl_p._zetl_lsn DESC, "
                    "_zetl_p._zetl_seq DESC) AS rn FROM %s AS _zetl_r LEFT JOIN %s AS _zetl_b ON "
                    "_zetl_b._zetl_id = _zetl_r._zetl_kb JOIN %s AS _zetl_p ON _zetl_p._zetl_op IN "
                    "('I', 'U') AND ",
                    s, s, s, s);
    from_key_match(&b, t, "_zetl_p");
    zetl_buf_printf(&b,
                    " AND (_zetl_p._zetl_lsn < _zetl_r._zetl_lsn OR (_zetl_p._zetl_lsn = "
                    "_zetl_r._zetl_lsn AND _zetl_p._zetl_seq < _zetl_r._zetl_seq)) WHERE "
                    "_zetl_r._zetl_unch IS NOT NULL) AS _zetl_q WHERE rn = 1) AS _zetl_x WHERE "
                    "%s._zetl_id = _zetl_x.rid",
                    s);

    /* 4. Updates without an earlier image in the batch: the current warehouse row. */
    zetl_buf_printf(&b, ";\nUPDATE %s", s);
    fill_set(&b, t, "_zetl_x", NULL);
    zetl_buf_puts(&b, "_zetl_unch = NULL FROM (SELECT _zetl_r._zetl_id AS rid");
    for (size_t i = 0; i < t->ncols; i++)
        if (!t->cols[i].key) {
            zetl_buf_puts(&b, ", ");
            to_stage(&b, &t->cols[i], "_zetl_w");
            zetl_buf_printf(&b, " AS v%zu", i);
        }
    zetl_buf_printf(&b,
                    " FROM %s AS _zetl_r LEFT JOIN %s AS _zetl_b ON _zetl_b._zetl_id = "
                    "_zetl_r._zetl_kb JOIN ",
                    s, s);
    zetl_wh_sql_table(&b, t);
    zetl_buf_puts(&b, " AS _zetl_w ON ");
    from_key_match(&b, t, "_zetl_w");
    zetl_wh_sql_live(&b, t, "_zetl_w");
    zetl_buf_printf(&b,
                    " WHERE _zetl_r._zetl_unch IS NOT NULL AND _zetl_r._zetl_prev IS NULL) AS "
                    "_zetl_x WHERE %s._zetl_id = _zetl_x.rid",
                    s);
    free(s);
    return zetl_wh_sql_take(&b);
}

/*
 * Takes what the predecessor has, then points past it (pointer jumping): a
 * chain of n updates resolves in about log2(n) rounds.
 */
char *zetl_wh_rs_fill_round_sql(const struct zetl_wh_table *t)
{
    char *s = stage_ref(t, "");
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "UPDATE %s", s);
    fill_set(&b, t, "_zetl_x", "_zetl_x.unch");
    /* The columns still missing: missing here and at the predecessor too. */
    zetl_buf_puts(&b, "_zetl_unch = NULLIF(','");
    for (size_t i = 0; i < t->ncols; i++)
        if (!t->cols[i].key) {
            zetl_buf_puts(&b, " || CASE WHEN ");
            in_set(&b, "_zetl_unch", i);
            zetl_buf_puts(&b, " AND ");
            in_set(&b, "_zetl_x.unch", i);
            zetl_buf_printf(&b, " THEN '%zu,' ELSE '' END", i);
        }
    zetl_buf_puts(&b, ", ','), _zetl_prev = _zetl_x.prev FROM (SELECT _zetl_id AS pid, _zetl_unch "
                      "AS unch, _zetl_prev AS prev");
    for (size_t i = 0; i < t->ncols; i++)
        if (!t->cols[i].key) {
            zetl_buf_puts(&b, ", ");
            zetl_sql_append_ident(&b, t->cols[i].name);
            zetl_buf_printf(&b, " AS v%zu", i);
        }
    zetl_buf_printf(&b,
                    " FROM %s) AS _zetl_x WHERE _zetl_x.pid = %s._zetl_prev AND %s._zetl_unch IS "
                    "NOT NULL",
                    s, s, s);
    free(s);
    return zetl_wh_sql_take(&b);
}

/* ---- merge ------------------------------------------------------------------------ */

/* The last staged change per key (and per transaction), among rows matching `cond`. */
static void last_images(struct zetl_buf *b, const struct zetl_wh_table *t, bool per_txn,
                        const char *cond)
{
    zetl_buf_puts(b, "SELECT * FROM (SELECT _zetl_s.*, ROW_NUMBER() OVER (PARTITION BY ");
    key_sort(b, t);
    if (per_txn)
        zetl_buf_puts(b, ", _zetl_lsn");
    zetl_buf_puts(b, " ORDER BY _zetl_lsn DESC, _zetl_seq DESC) AS _zetl_rn FROM ");
    stage(b, t, "");
    zetl_buf_printf(b, " AS _zetl_s WHERE %s) AS _zetl_q WHERE _zetl_rn = 1", cond);
}

static void merge_keyed(struct zetl_buf *b, const struct zetl_wh_table *t, const char *w,
                        const char *s)
{
    char *last = stage_ref(t, "_last"), *image = stage_ref(t, "_image");

    if (t->deletes == ZETL_DELETES_HARD) {
        /* Every key the batch touched (old keys of key changes too) goes ... */
        zetl_buf_printf(b, "DELETE FROM %s USING %s WHERE %s._zetl_op <> 'T' AND ", w, s, s);
        key_match(b, t, w, s);
        /* ... and comes back as its last image when that is not a delete. */
        zetl_buf_puts(b, ";\n");
        zetl_wh_sql_insert_head(b, t);
        zetl_buf_puts(b, " SELECT ");
        values(b, t, "_zetl_x");
        zetl_buf_puts(b, ", _zetl_x._zetl_lsn, GETDATE() FROM (");
        last_images(b, t, false, "_zetl_op <> 'T'");
        zetl_buf_puts(b, ") AS _zetl_x WHERE _zetl_x._zetl_op IN ('I', 'U')");
        goto done;
    }

    zetl_buf_printf(b, "CREATE TEMP TABLE %s AS ", last);
    last_images(b, t, t->deletes == ZETL_DELETES_HISTORY, "_zetl_op <> 'T'");
    zetl_buf_puts(b, ";\n");

    if (t->deletes == ZETL_DELETES_SOFT) {
        /* A deleted key keeps its last values: the warehouse's, or the batch's latest image. */
        zetl_buf_printf(b,
                        "UPDATE %s SET _zetl_deleted = true, _zetl_lsn = %s._zetl_lsn, "
                        "_zetl_synced_at = GETDATE() FROM %s WHERE %s._zetl_op IN ('D', 'B') AND ",
                        w, last, last, last);
        key_match(b, t, w, last);
        zetl_buf_printf(b, ";\nCREATE TEMP TABLE %s AS ", image);
        last_images(b, t, false, "_zetl_op IN ('I', 'U')");
        zetl_buf_printf(b, ";\nDELETE FROM %s USING %s WHERE ", w, image);
        key_match(b, t, w, image);
        zetl_buf_puts(b, ";\n");
        zetl_wh_sql_insert_head(b, t);
        zetl_buf_puts(b, " SELECT ");
        values(b, t, "_zetl_x");
        zetl_buf_printf(b,
                        ", _zetl_l._zetl_lsn, GETDATE(), _zetl_l._zetl_op IN ('D', 'B') FROM %s "
                        "AS _zetl_x JOIN %s AS _zetl_l ON ",
                        image, last);
        key_match(b, t, "_zetl_x", "_zetl_l");
        goto done;
    }

    /* History: close the current version at the key's first change in the batch ... */
    zetl_buf_printf(b,
                    "UPDATE %s SET _zetl_valid_to = _zetl_x._zetl_lsn, _zetl_synced_at = "
                    "GETDATE() FROM (SELECT ",
                    w);
    zetl_wh_sql_key_list_sort(b, t);
    zetl_buf_printf(b, ", min(_zetl_lsn) AS _zetl_lsn FROM %s GROUP BY ", last);
    key_sort(b, t);
    zetl_buf_puts(b, ") AS _zetl_x WHERE ");
    key_match(b, t, w, "_zetl_x");
    zetl_buf_printf(b, " AND %s._zetl_valid_to IS NULL;\n", w);
    /* ... and add one version per transaction's last image, valid until the next change. */
    zetl_wh_sql_insert_head(b, t);
    zetl_buf_puts(b, " SELECT ");
    values(b, t, "_zetl_x");
    zetl_buf_puts(b, ", _zetl_x._zetl_lsn, GETDATE(), _zetl_x._zetl_lsn, _zetl_x._zetl_next FROM "
                     "(SELECT _zetl_s.*, LEAD(_zetl_lsn) OVER (PARTITION BY ");
    key_sort(b, t);
    zetl_buf_printf(b,
                    " ORDER BY _zetl_lsn) AS _zetl_next FROM %s AS _zetl_s) AS _zetl_x WHERE "
                    "_zetl_x._zetl_op IN ('I', 'U')",
                    last);
done:
    free(image);
    free(last);
}

char *zetl_wh_rs_merge_sql(const struct zetl_wh_table *t, const struct zetl_wh_shape *shapes,
                           size_t nshapes)
{
    char *w = target_ref(t), *s = stage_ref(t, "");
    struct zetl_buf b;

    (void)shapes;
    (void)nshapes;
    zetl_buf_init(&b, 0);
    if (zetl_wh_sql_nkeys(t) > 0) {
        merge_keyed(&b, t, w, s);
    } else {
        /*
         * Appended.  Removing one of several equal rows needs a row id, which
         * Redshift tables lack: the apply stops a keyless table that gets
         * deletes or before-images (docs/warehouse.md).
         */
        zetl_wh_sql_insert_head(&b, t);
        zetl_buf_puts(&b, " SELECT ");
        values(&b, t, "_zetl_x");
        zetl_buf_puts(&b, ", _zetl_x._zetl_lsn, GETDATE()");
        if (t->deletes == ZETL_DELETES_SOFT)
            zetl_buf_puts(&b, ", false");
        else if (t->deletes == ZETL_DELETES_HISTORY)
            zetl_buf_puts(&b, ", _zetl_x._zetl_lsn, NULL");
        zetl_buf_printf(&b, " FROM %s AS _zetl_x WHERE _zetl_x._zetl_op IN ('I', 'U')", s);
    }
    free(s);
    free(w);
    return zetl_wh_sql_take(&b);
}

char *zetl_wh_rs_drop_stage_sql(const struct zetl_wh_table *t)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "DROP TABLE IF EXISTS ");
    stage(&b, t, "_last");
    zetl_buf_puts(&b, ", ");
    stage(&b, t, "_image");
    zetl_buf_puts(&b, ", ");
    stage(&b, t, "_tr");
    zetl_buf_puts(&b, ", ");
    stage(&b, t, "");
    return zetl_wh_sql_take(&b);
}

/* ---- the probe ---------------------------------------------------------------------- */

/* FROM '<url>' IAM_ROLE '<role>'[ REGION '<region>'] <options> */
static void copy_from(struct zetl_buf *b, const char *url, const char *role, const char *region)
{
    zetl_buf_puts(b, " FROM ");
    zetl_sql_append_literal(b, url);
    zetl_buf_puts(b, " IAM_ROLE ");
    zetl_sql_append_literal(b, role);
    if (region != NULL && region[0] != '\0') {
        zetl_buf_puts(b, " REGION ");
        zetl_sql_append_literal(b, region);
    }
    zetl_buf_puts(b, " " RS_COPY_OPTIONS);
}

static struct zetl_wh_rs_probe *probe_add(struct zetl_wh_rs_probe *out, size_t *n, const char *name,
                                          const char *expect)
{
    struct zetl_wh_rs_probe *p = &out[(*n)++];

    memset(p, 0, sizeof(*p));
    p->name = name;
    p->expect = expect;
    return p;
}

size_t zetl_wh_rs_probes(const char *schema, const struct zetl_wh_rs_probe_files *f,
                         struct zetl_wh_rs_probe out[ZETL_WH_RS_NPROBES])
{
    struct zetl_buf b;
    struct zetl_wh_rs_probe *p;
    char *qs;
    size_t n = 0;

    /* Case kept: "Probe" and "probe" are two columns only when the session says so. */
    p = probe_add(out, &n, "quoted identifiers keep their case", "2");
    p->setup = zetl_strdup("CREATE TEMP TABLE \"_zetl_probe_case\" (\"Mixed\" INTEGER, \"mixed\" "
                           "INTEGER)");
    p->check = zetl_strdup("SELECT CAST(count(*) AS VARCHAR(8)) FROM pg_catalog.pg_attribute a "
                           "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE c.relname = "
                           "'_zetl_probe_case' AND a.attname IN ('Mixed', 'mixed')");

    /* Keys that differ in trailing blanks: = ignores them, OCTET_LENGTH counts them. */
    p = probe_add(out, &n, "OCTET_LENGTH counts trailing blanks (text keys)", "2");
    p->setup = zetl_strdup("CREATE TEMP TABLE \"_zetl_probe_pad\" (k VARCHAR(4));\n"
                           "INSERT INTO \"_zetl_probe_pad\" VALUES ('a'), ('a ')");
    p->check = zetl_strdup("SELECT CAST(count(*) AS VARCHAR(8)) FROM \"_zetl_probe_pad\" AS "
                           "_zetl_x JOIN \"_zetl_probe_pad\" AS _zetl_y ON _zetl_x.k = _zetl_y.k "
                           "AND OCTET_LENGTH(_zetl_x.k) = OCTET_LENGTH(_zetl_y.k)");

    /* bytea arrives as "\x0a0b": TO_VARBYTE of the rest, on a column, not a literal. */
    p = probe_add(out, &n, "TO_VARBYTE(column, 'hex') and TO_HEX (bytea columns)", "0a0bff");
    p->setup = zetl_strdup("CREATE TEMP TABLE \"_zetl_probe_hex\" (h VARCHAR(16));\n"
                           "INSERT INTO \"_zetl_probe_hex\" VALUES (CHR(92) || 'x0a0bff')");
    p->check = zetl_strdup("SELECT LOWER(TO_HEX(TO_VARBYTE(SUBSTRING(h, 3), 'hex'))) FROM "
                           "\"_zetl_probe_hex\"");

    /* The fill's UPDATE ... FROM (SELECT ... LEFT JOIN ...) (zetl_wh_rs_fill_prepare_sql). */
    p = probe_add(out, &n, "UPDATE ... FROM a derived table with a LEFT JOIN (unchanged values)",
                  "b,none");
    p->setup = zetl_strdup(
        "CREATE TEMP TABLE \"_zetl_probe_upd\" (k INTEGER, v VARCHAR(8));\n"
        "INSERT INTO \"_zetl_probe_upd\" VALUES (1, 'a'), (2, 'b');\n"
        "UPDATE \"_zetl_probe_upd\" SET v = _zetl_x.w FROM (SELECT _zetl_r.k AS rk, "
        "coalesce(_zetl_b.v, 'none') AS w FROM \"_zetl_probe_upd\" AS _zetl_r LEFT JOIN "
        "\"_zetl_probe_upd\" AS _zetl_b ON _zetl_b.k = _zetl_r.k + 1) AS _zetl_x WHERE "
        "\"_zetl_probe_upd\".k = _zetl_x.rk");
    p->check = zetl_strdup("SELECT min(v) || ',' || max(v) FROM \"_zetl_probe_upd\"");

    /* The merge's "schema"."table"."column" in DELETE ... USING and UPDATE ... FROM. */
    p = probe_add(out, &n, "schema.table.column references in DELETE and UPDATE (merge)", "2,c,z");
    qs = zetl_sql_quote_ident(schema);
    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b,
                    "CREATE SCHEMA IF NOT EXISTS %s;\n"
                    "CREATE TABLE %s._zetl_probe (k INTEGER, v VARCHAR(8));\n"
                    "INSERT INTO %s._zetl_probe VALUES (1, 'a'), (2, 'b'), (3, 'c');\n"
                    "CREATE TEMP TABLE \"_zetl_probe_key\" (k INTEGER);\n"
                    "INSERT INTO \"_zetl_probe_key\" VALUES (1);\n"
                    "DELETE FROM %s._zetl_probe USING \"_zetl_probe_key\" WHERE "
                    "%s.\"_zetl_probe\".\"k\" = \"_zetl_probe_key\".k;\n"
                    "UPDATE %s._zetl_probe SET v = 'z' FROM \"_zetl_probe_key\" WHERE "
                    "%s.\"_zetl_probe\".\"k\" = \"_zetl_probe_key\".k + 1",
                    qs, qs, qs, qs, qs, qs, qs);
    p->setup = zetl_wh_sql_take(&b);
    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b,
                    "SELECT CAST(count(*) AS VARCHAR(8)) || ',' || min(v) || ',' || max(v) "
                    "FROM %s._zetl_probe",
                    qs);
    p->check = zetl_wh_sql_take(&b);
    free(qs);

    if (f == NULL)
        return n;

    /* A batch file's empty field is NULL, its "" the empty string (zetl_wh_rs_copy_sql). */
    p = probe_add(out, &n, "COPY ... CSV NULL AS '': empty field NULL, \"\" empty string",
                  "null,empty");
    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "CREATE TEMP TABLE \"_zetl_probe_copy\" (a INTEGER, b VARCHAR(8), c "
                      "VARCHAR(8));\nCOPY \"_zetl_probe_copy\" (a, b, c)");
    copy_from(&b, f->good_manifest, f->iam_role, f->region);
    p->setup = zetl_wh_sql_take(&b);
    p->check = zetl_strdup("SELECT CASE WHEN b IS NULL THEN 'null' WHEN b = '' THEN 'empty' ELSE "
                           "b END || ',' || CASE WHEN c IS NULL THEN 'null' WHEN c = '' THEN "
                           "'empty' ELSE c END FROM \"_zetl_probe_copy\"");

    /* A COPY that fails, rolled back: its load error is found (explain_failure). */
    p = probe_add(out, &n, "load errors found by file and session after a rollback", "1");
    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "CREATE TEMP TABLE \"_zetl_probe_err\" (a INTEGER);\n"
                      "COPY \"_zetl_probe_err\" (a)");
    copy_from(&b, f->bad_manifest, f->iam_role, f->region);
    p->setup = zetl_wh_sql_take(&b);
    p->setup_fails = true;
    /* explain_failure's lookup: the view, else the STL table; the line is its column 1. */
    p->check = zetl_strdup(zetl_wh_rs_load_error_sql(true));
    p->param = f->bad_data;
    return n;
}

void zetl_wh_rs_probes_release(struct zetl_wh_rs_probe *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].setup);
        free(p[i].check);
    }
}
