/*
 * Unit tests of the warehouse dialect layer (no server): type mapping, type
 * widening rules, and that every generated statement quotes hostile names.
 */
#include "sinks/warehouse/wh_dialect.h"
#include "tests/unit/tap.h"

#include <stdlib.h>
#include <string.h>

#define HOSTILE "a\"; drop table x; --"
#define HOSTILE_Q "\"a\"\"; drop table x; --\""

static void check_type(const char *manifest, const char *expect)
{
    char *t = zetl_wh_pg_type(manifest);

    CHECK_STR(t, expect);
    free(t);
}

static void test_type_mapping(void)
{
    check_type("int4", "int4");
    check_type("numeric(30,2)", "numeric(30,2)");
    check_type("numeric(5,-2)", "numeric(5,-2)");
    check_type("numeric", "numeric");
    check_type("varchar(20)", "varchar(20)");
    check_type("timestamptz(3)", "timestamptz(3)");
    check_type("bpchar(5)", "bpchar(5)");
    check_type("interval(3)", "interval(3)");
    check_type("_int4", "int4[]");
    check_type("_text", "text[]");
    check_type("_numeric", "numeric[]");
    check_type("char", "\"char\"");
    check_type("_char", "\"char\"[]");
    /* Custom types (enums differ per tenant schema) and unknown OIDs land as text. */
    check_type("tenant_a.mood", "text");
    check_type("oid:16390", "text");
    check_type("tenant_a._mood", "text");
    /* Nothing unexpected ever reaches DDL as written. */
    check_type("int4; drop table x", "text");
    check_type("varchar(20) collate \"C\"", "text");
    check_type("Int4", "text");
    check_type("_int4(3)", "text");
    check_type("numeric(3,", "text");
    check_type("", "text");
    CHECK_STR(zetl_wh_canon_type("public.t"), "text");
    CHECK_STR(zetl_wh_canon_type("_int8"), "_int8");
}

static void test_type_change(void)
{
    CHECK(zetl_wh_pg_type_change("int4", "int4") == ZETL_WH_TYPE_SAME);
    CHECK(zetl_wh_pg_type_change("int2", "int4") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("int2", "int8") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("int8", "int4") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_pg_type_change("varchar(10)", "varchar(20)") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("varchar(20)", "varchar(10)") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_pg_type_change("varchar(10)", "varchar") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("varchar(10)", "text") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("varchar", "text") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("text", "varchar(10)") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_pg_type_change("numeric(10,2)", "numeric(12,2)") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("numeric(10,2)", "numeric(12,4)") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("numeric(10,2)", "numeric") == ZETL_WH_TYPE_WIDER);
    /* Fewer integer digits is not wider even with a higher precision. */
    CHECK(zetl_wh_pg_type_change("numeric(10,2)", "numeric(11,5)") == ZETL_WH_TYPE_INCOMPATIBLE);
    CHECK(zetl_wh_pg_type_change("timestamp(3)", "timestamp") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("timestamptz(3)", "timestamptz(6)") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_pg_type_change("timestamptz", "timestamptz(3)") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_pg_type_change("timestamp", "timestamptz") == ZETL_WH_TYPE_INCOMPATIBLE);
    CHECK(zetl_wh_pg_type_change("text", "int4") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_pg_type_change("text", "_jsonb") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_pg_type_change("int4", "text") == ZETL_WH_TYPE_INCOMPATIBLE);
    CHECK(zetl_wh_pg_type_change("int4", "text") == ZETL_WH_TYPE_INCOMPATIBLE);
    CHECK(zetl_wh_pg_type_change("int4", "int4[]") == ZETL_WH_TYPE_INCOMPATIBLE);
    CHECK(zetl_wh_pg_type_change("int4", "numeric") == ZETL_WH_TYPE_INCOMPATIBLE);
}

/* After removing every quoted occurrence, the hostile name must not remain. */
static void check_quoted(const char *what, char *sql)
{
    char *copy = strdup(sql);
    char *p;
    bool clean;

    while ((p = strstr(copy, HOSTILE_Q)) != NULL)
        memset(p, '#', strlen(HOSTILE_Q));
    clean = strstr(copy, "drop table x") == NULL;
    if (!clean)
        fprintf(stderr, "%s: unquoted name in:\n%s\n", what, sql);
    CHECK(clean);
    free(copy);
    free(sql);
}

static void test_hostile_names(void)
{
    struct zetl_wh_col cols[] = {
        {HOSTILE, "int4", true},
        {"name", "varchar(20)", false},
        {"tags", "_text", false},
    };
    struct zetl_wh_col keyless_cols[] = {
        {HOSTILE, "text", false},
        {"n", "int4", false},
    };
    size_t map0[] = {0, 1, 2};
    size_t map1[] = {0, 2};
    size_t mapk[] = {0, 1};
    struct zetl_wh_shape shapes[] = {{3, map0}, {2, map1}};
    struct zetl_wh_shape kshapes[] = {{2, mapk}, {1, mapk}};
    struct zetl_wh_table t = {HOSTILE,           HOSTILE, HOSTILE, "_zetl_stage_1",
                              ZETL_DELETES_HARD, 3,       cols,    false};
    enum zetl_wh_deletes modes[] = {ZETL_DELETES_HARD, ZETL_DELETES_SOFT, ZETL_DELETES_HISTORY};

    check_quoted("bootstrap", zetl_wh_pg_bootstrap_sql(HOSTILE));
    {
        char *sql = zetl_wh_pg_create_table_sql(&t);

        /* schema.table, tenant column, key column: all quoted the same way. */
        CHECK(strstr(sql, "CREATE TABLE " HOSTILE_Q "." HOSTILE_Q " (" HOSTILE_Q
                          " text NOT NULL, " HOSTILE_Q " int4") != NULL);
        free(sql);
    }
    for (size_t i = 0; i < 3; i++) {
        t.deletes = modes[i];
        t.ncols = 3;
        t.cols = cols;
        check_quoted("create", zetl_wh_pg_create_table_sql(&t));
        check_quoted("add column", zetl_wh_pg_add_column_sql(&t, &cols[0]));
        check_quoted("alter type", zetl_wh_pg_alter_type_sql(&t, &cols[0]));
        check_quoted("stage", zetl_wh_pg_stage_sql(&t));
        check_quoted("file default", zetl_wh_pg_file_default_sql(&t, 1));
        check_quoted("copy", zetl_wh_pg_copy_sql(&t, &shapes[1]));
        check_quoted("stats", zetl_wh_pg_stage_stats_sql(&t, shapes, 2));
        check_quoted("skip", zetl_wh_pg_skip_applied_sql(&t));
        check_quoted("replay filter", zetl_wh_pg_replay_filter_sql(&t, 2));
        check_quoted("purge", zetl_wh_pg_purge_sql(&t));
        check_quoted("truncate", zetl_wh_pg_truncate_sql(&t));
        check_quoted("fill prepare", zetl_wh_pg_fill_prepare_sql(&t, shapes, 2));
        check_quoted("fill round", zetl_wh_pg_fill_round_sql(&t));
        check_quoted("stage index", zetl_wh_pg_stage_index_sql(&t));
        check_quoted("merge", zetl_wh_pg_merge_sql(&t, shapes, 2));
        t.ncols = 2;
        t.cols = keyless_cols;
        check_quoted("keyless merge", zetl_wh_pg_merge_sql(&t, kshapes, 2));
        check_quoted("keyless fill", zetl_wh_pg_fill_prepare_sql(&t, kshapes, 2));
    }
    for (int w = ZETL_WH_SQL_OFFSET_GET; w <= ZETL_WH_SQL_COLUMNS; w++) {
        char *sql = zetl_wh_pg_offsets_sql(HOSTILE, (enum zetl_wh_offsets_stmt)w);

        if (w == ZETL_WH_SQL_COLUMNS) {
            /* Schema and table travel as parameters here. */
            CHECK(strstr(sql, "drop table") == NULL);
            CHECK(strstr(sql, "$1") != NULL && strstr(sql, "$2") != NULL);
            free(sql);
        } else {
            check_quoted("offsets", sql);
        }
    }
}

static void test_generated_shapes(void)
{
    struct zetl_wh_col cols[] = {
        {"id", "int4", true},
        {"body", "text", false},
        {"tags", "_text", false},
    };
    size_t map0[] = {0, 1, 2};
    size_t map1[] = {0, 2};
    struct zetl_wh_shape shapes[] = {{3, map0}, {2, map1}};
    struct zetl_wh_table t = {"zetl_raw",        "docs", "tenant_id", "_zetl_stage_1",
                              ZETL_DELETES_HARD, 3,      cols,        false};
    char *sql;

    sql = zetl_wh_pg_create_table_sql(&t);
    CHECK_STR(sql, "CREATE TABLE \"zetl_raw\".\"docs\" (\"tenant_id\" text NOT NULL, \"id\" int4, "
                   "\"body\" text, \"tags\" text[], _zetl_lsn bigint, _zetl_synced_at "
                   "timestamptz, PRIMARY KEY (\"tenant_id\", \"id\"))");
    free(sql);
    t.deletes = ZETL_DELETES_HISTORY;
    sql = zetl_wh_pg_create_table_sql(&t);
    CHECK(strstr(sql, "_zetl_valid_from bigint NOT NULL, _zetl_valid_to bigint, PRIMARY KEY "
                      "(\"tenant_id\", \"id\", _zetl_valid_from)") != NULL);
    free(sql);
    t.deletes = ZETL_DELETES_SOFT;
    sql = zetl_wh_pg_create_table_sql(&t);
    CHECK(strstr(sql, "_zetl_deleted boolean NOT NULL DEFAULT false") != NULL);
    free(sql);
    sql = zetl_wh_pg_copy_sql(&t, &shapes[1]);
    CHECK_STR(sql, "COPY pg_temp.\"_zetl_stage_1\" (_zetl_op, _zetl_lsn, _zetl_seq, "
                   "_zetl_commit_ts, _zetl_unchanged, \"tenant_id\", \"id\", \"tags\") FROM "
                   "STDIN WITH (FORMAT csv)");
    free(sql);
    /* File 1 lacks "body" (index 1): its updates count it as unchanged; keys never are. */
    sql = zetl_wh_pg_fill_prepare_sql(&t, shapes, 2);
    CHECK(strstr(sql, "WHEN 0 THEN ARRAY(SELECT m FROM (SELECT (ARRAY[NULL, 1, 2]::int[])") !=
          NULL);
    CHECK(strstr(sql, "WHEN 1 THEN ARRAY(SELECT m FROM (SELECT (ARRAY[NULL, 2]::int[])") != NULL);
    CHECK(strstr(sql, "|| ARRAY[1]::int[]") != NULL);
    CHECK(strstr(sql, "OR _zetl_file IN (1)") != NULL);
    free(sql);
    /*
     * Hard deletes: every touched key goes (looked up by the primary key when
     * the table is large), then each key's last image comes back; the sort
     * compares the key before the tenant and carries only the merged columns.
     */
    t.deletes = ZETL_DELETES_HARD;
    t.by_key = true;
    sql = zetl_wh_pg_merge_sql(&t, shapes, 2);
    CHECK_STR(sql, "SET LOCAL enable_hashjoin = off;\nSET LOCAL enable_mergejoin = off;\n"
                   "DELETE FROM \"zetl_raw\".\"docs\" AS w USING (SELECT DISTINCT \"id\", "
                   "\"tenant_id\" FROM pg_temp.\"_zetl_stage_1\" WHERE _zetl_op <> 'T') AS x "
                   "WHERE w.\"tenant_id\" = x.\"tenant_id\" AND w.\"id\" = x.\"id\";\n"
                   "SET LOCAL enable_hashjoin TO DEFAULT;\nSET LOCAL enable_mergejoin TO DEFAULT;\n"
                   "INSERT INTO \"zetl_raw\".\"docs\" (\"tenant_id\", \"id\", \"body\", "
                   "\"tags\", _zetl_lsn, _zetl_synced_at) SELECT x.\"tenant_id\", x.\"id\", "
                   "x.\"body\", x.\"tags\", x._zetl_lsn, now() FROM (SELECT DISTINCT ON "
                   "(\"id\", \"tenant_id\") \"tenant_id\", \"id\", \"body\", \"tags\", "
                   "_zetl_op, _zetl_lsn FROM pg_temp.\"_zetl_stage_1\" WHERE _zetl_op <> 'T' "
                   "ORDER BY \"id\", \"tenant_id\", _zetl_lsn DESC, _zetl_seq DESC) AS x WHERE "
                   "x._zetl_op IN ('I', 'U')");
    free(sql);
    /* Otherwise the planner chooses; the other modes steer the same way. */
    t.by_key = false;
    sql = zetl_wh_pg_merge_sql(&t, shapes, 2);
    CHECK(strstr(sql, "SET LOCAL") == NULL);
    {
        const char *want = "DELETE FROM \"zetl_raw\".\"docs\" AS w USING pg_temp.\"_zetl_stage_1\" "
                           "AS x WHERE x._zetl_op <> 'T' AND w.\"tenant_id\" = x.\"tenant_id\" AND "
                           "w.\"id\" = x.\"id\";\nINSERT INTO ";

        CHECK(strncmp(sql, want, strlen(want)) == 0);
    }
    free(sql);
    t.by_key = true;
    for (int m = 0; m < 2; m++) {
        const char *p;
        int on = 0, off = 0;

        t.deletes = m == 0 ? ZETL_DELETES_SOFT : ZETL_DELETES_HISTORY;
        sql = zetl_wh_pg_merge_sql(&t, shapes, 2);
        for (p = sql; (p = strstr(p, "enable_hashjoin = off")) != NULL; p++)
            off++;
        for (p = sql; (p = strstr(p, "enable_hashjoin TO DEFAULT")) != NULL; p++)
            on++;
        CHECK(off == (m == 0 ? 2 : 1) && on == off);
        CHECK(strstr(sql, "DISTINCT ON (\"id\", \"tenant_id\"") != NULL);
        free(sql);
    }
    t.by_key = false;
    /* A table without a key has no primary key. */
    cols[0].key = false;
    t.deletes = ZETL_DELETES_HARD;
    sql = zetl_wh_pg_create_table_sql(&t);
    CHECK(strstr(sql, "PRIMARY KEY") == NULL);
    free(sql);
}

/*
 * Every dialect table fills what the driver calls without checking, and
 * speaks every bookkeeping statement with at most the parameters it has.
 */
static void test_dialect_tables(void)
{
    const struct zetl_wh_dialect *ds[] = {&zetl_wh_pg_dialect, &zetl_wh_rs_dialect};

    for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) {
        const struct zetl_wh_dialect *d = ds[i];

        CHECK(d->name != NULL && d->kind != ZETL_WH_NONE);
        CHECK(d->begin_sql && d->offsets_sql && d->catalog_type && d->text_type && d->tenant_type &&
              d->col_type && d->type_change && d->stage && d->skip_applied_sql &&
              d->stage_stats_sql && d->truncate_sql && d->fill_prepare_sql && d->fill_round_sql &&
              d->merge_sql && d->replay_filter_sql && d->purge_sql);
        CHECK(d->open != NULL || d->release == NULL);
        for (int w = ZETL_WH_SQL_OFFSET_GET; w <= ZETL_WH_SQL_COLUMNS; w++) {
            int np = -1;
            char *sql = d->offsets_sql("s", (enum zetl_wh_offsets_stmt)w, 0, &np);

            CHECK(sql != NULL && np >= 1 && np <= 4);
            free(sql);
        }
        free(d->begin_sql("s"));
    }
}

/* zetl replay's stage filter and zetl tenant purge, in both dialects: values only as parameters. */
static void test_replay_and_purge_sql(void)
{
    struct zetl_wh_col cols[] = {{"id", "int4", true}};
    struct zetl_wh_table t = {"zetl_raw",        "users", "tenant_id", "_zetl_stage_7",
                              ZETL_DELETES_HARD, 1,       cols,        false};
    char *sql;

    sql = zetl_wh_pg_replay_filter_sql(&t, 0);
    CHECK_STR(sql, "DELETE FROM pg_temp.\"_zetl_stage_7\" WHERE _zetl_lsn < CAST($1 AS BIGINT) OR "
                   "_zetl_lsn > CAST($2 AS BIGINT)");
    free(sql);
    sql = zetl_wh_pg_replay_filter_sql(&t, 2);
    CHECK_STR(sql, "DELETE FROM pg_temp.\"_zetl_stage_7\" WHERE _zetl_lsn < CAST($1 AS BIGINT) OR "
                   "_zetl_lsn > CAST($2 AS BIGINT) OR \"tenant_id\" NOT IN (CAST($3 AS text), "
                   "CAST($4 AS text))");
    free(sql);
    sql = zetl_wh_rs_replay_filter_sql(&t, 1);
    CHECK_STR(sql, "DELETE FROM \"_zetl_stage_7\" WHERE _zetl_lsn < CAST($1 AS BIGINT) OR "
                   "_zetl_lsn > CAST($2 AS BIGINT) OR \"tenant_id\" NOT IN (CAST($3 AS "
                   "VARCHAR(128)))");
    free(sql);
    sql = zetl_wh_pg_purge_sql(&t);
    CHECK_STR(sql, "DELETE FROM \"zetl_raw\".\"users\" WHERE \"tenant_id\" = $1");
    free(sql);
    sql = zetl_wh_rs_purge_sql(&t);
    CHECK_STR(sql, "DELETE FROM \"zetl_raw\".\"users\" WHERE \"tenant_id\" = CAST($1 AS "
                   "VARCHAR(128))");
    free(sql);
}

int main(void)
{
    test_dialect_tables();
    test_replay_and_purge_sql();
    test_type_mapping();
    test_type_change();
    test_hostile_names();
    test_generated_shapes();
    return zetl_tap_done();
}
