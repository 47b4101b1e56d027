/*
 * Unit tests of the Redshift dialect (no server): the type mapping, the
 * golden text of every statement for a table with every mapped type
 * (tests/fixtures/redshift/<mode>.sql; ZETL_UPDATE_GOLDEN=1 rewrites them), hostile
 * names quoted everywhere, and the IAM role, S3 URL and region escaped.
 *
 * With ZETL_RS_SQL_DIR set, it also writes the statements for the table
 * tests/integration/test_redshift_sql.py uses into that directory, one file
 * per statement (<mode>/<name>.sql), for that test to run on PostgreSQL.
 */
#include "sinks/warehouse/wh_dialect.h"
#include "tests/unit/tap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HOSTILE "a\"; drop table x; --"
#define HOSTILE_Q "\"a\"\"; drop table x; --\""

static const char *const mode_names[] = {"hard", "soft", "history"};

static void check_type(const char *manifest, const char *expect)
{
    char *t = zetl_wh_rs_type(manifest);

    CHECK_STR(t, expect);
    free(t);
}

static void test_type_mapping(void)
{
    check_type("int2", "SMALLINT");
    check_type("int4", "INTEGER");
    check_type("int8", "BIGINT");
    check_type("float4", "REAL");
    check_type("float8", "DOUBLE PRECISION");
    check_type("bool", "BOOLEAN");
    check_type("date", "DATE");
    check_type("timestamp(3)", "TIMESTAMP");
    check_type("timestamptz", "TIMESTAMPTZ");
    check_type("time", "TIME");
    check_type("timetz(6)", "TIMETZ");
    check_type("text", "VARCHAR(65535)");
    check_type("varchar", "VARCHAR(65535)");
    check_type("varchar(20)", "VARCHAR(80)");
    check_type("varchar(16383)", "VARCHAR(65532)");
    check_type("varchar(20000)", "VARCHAR(65535)");
    check_type("bpchar(5)", "VARCHAR(20)");
    check_type("json", "SUPER");
    check_type("jsonb", "SUPER");
    check_type("_int4", "SUPER");
    check_type("_text", "SUPER");
    check_type("bytea", "VARBYTE(1024000)");
    check_type("numeric(12,2)", "NUMERIC(12,2)");
    check_type("numeric(38,0)", "NUMERIC(38,0)");
    /* Redshift's scale stops at 37: the exact text rather than a failing load. */
    check_type("numeric(38,37)", "NUMERIC(38,37)");
    check_type("numeric(38,38)", "VARCHAR(65535)");
    check_type("numeric(7)", "NUMERIC(7,0)");
    check_type("numeric(39,2)", "VARCHAR(65535)");
    check_type("numeric", "VARCHAR(65535)");
    check_type("numeric(5,-2)", "VARCHAR(65535)");
    check_type("numeric(3,5)", "VARCHAR(65535)");
    check_type("uuid", "CHAR(36)");
    check_type("interval", "VARCHAR(128)");
    check_type("interval(3)", "VARCHAR(128)");
    check_type("tenant_a.mood", "VARCHAR(65535)");
    check_type("oid:16384", "VARCHAR(65535)");
    check_type("bit(8)", "VARCHAR(65535)");
    check_type("inet", "VARCHAR(65535)");
    /* A warehouse type passes through unchanged. */
    check_type("VARCHAR(400)", "VARCHAR(400)");

    {
        static const char *const cat[][2] = {
            {"character varying(65535)", "VARCHAR(65535)"},
            {"character(36)", "CHAR(36)"},
            {"numeric(12,2)", "NUMERIC(12,2)"},
            {"integer", "INTEGER"},
            {"timestamp with time zone", "TIMESTAMPTZ"},
            {"super", "SUPER"},
            {"varbyte(1024000)", "VARBYTE(1024000)"},
            {"geometry", "GEOMETRY"},
        };
        for (size_t i = 0; i < sizeof(cat) / sizeof(cat[0]); i++) {
            char *t = zetl_wh_rs_catalog_type(cat[i][0]);

            CHECK_STR(t, cat[i][1]);
            free(t);
        }
    }
}

static void test_type_change(void)
{
    CHECK(zetl_wh_rs_type_change("INTEGER", "INTEGER") == ZETL_WH_TYPE_SAME);
    CHECK(zetl_wh_rs_type_change("VARBYTE(64000)", "VARBYTE(1024000)") == ZETL_WH_TYPE_SAME);
    CHECK(zetl_wh_rs_type_change("VARCHAR(40)", "VARCHAR(80)") == ZETL_WH_TYPE_WIDER);
    CHECK(zetl_wh_rs_type_change("VARCHAR(80)", "VARCHAR(40)") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_rs_type_change("VARCHAR(65535)", "INTEGER") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_rs_type_change("VARCHAR(65535)", "SUPER") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_rs_type_change("BIGINT", "INTEGER") == ZETL_WH_TYPE_NARROWER);
    /* Redshift alters nothing but a VARCHAR's length in place. */
    CHECK(zetl_wh_rs_type_change("SMALLINT", "INTEGER") == ZETL_WH_TYPE_INCOMPATIBLE);
    CHECK(zetl_wh_rs_type_change("NUMERIC(12,2)", "NUMERIC(10,2)") == ZETL_WH_TYPE_NARROWER);
    CHECK(zetl_wh_rs_type_change("NUMERIC(10,2)", "NUMERIC(12,2)") == ZETL_WH_TYPE_INCOMPATIBLE);
    CHECK(zetl_wh_rs_type_change("INTEGER", "VARCHAR(65535)") == ZETL_WH_TYPE_INCOMPATIBLE);
    CHECK(zetl_wh_rs_type_change("VARCHAR(80)", "INTEGER") == ZETL_WH_TYPE_INCOMPATIBLE);
}

/* ---- statements -------------------------------------------------------------- */

struct stmt {
    const char *name;
    char *sql; /* owned */
};

#define MAX_STMTS 64

struct stmts {
    size_t n;
    struct stmt s[MAX_STMTS];
};

static void add(struct stmts *l, const char *name, char *sql)
{
    if (l->n >= MAX_STMTS) {
        CHECK(!"too many statements");
        free(sql);
        return;
    }
    l->s[l->n].name = name;
    l->s[l->n].sql = sql;
    l->n++;
}

static void release(struct stmts *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->s[i].sql);
    l->n = 0;
}

/* Every statement of one table's apply, in the order the apply runs them. */
static void table_stmts(struct stmts *l, const struct zetl_wh_table *t,
                        const struct zetl_wh_shape *shapes, size_t nshapes)
{
    add(l, "create", zetl_wh_sql_create_table(&zetl_wh_rs_dialect, t));
    add(l, "add_column", zetl_wh_sql_add_column(&zetl_wh_rs_dialect, t, &t->cols[t->ncols - 1]));
    add(l, "alter_type", zetl_wh_sql_alter_type(&zetl_wh_rs_dialect, t, &t->cols[t->ncols - 1]));
    add(l, "stage", zetl_wh_rs_stage_sql(t));
    add(l, "copy_1",
        zetl_wh_rs_copy_sql(t, &shapes[nshapes - 1],
                            "s3://zetl-bucket/prod/zetl_0/0000000000000064-00000000000000C8/"
                            "items.2.csv.zst.manifest",
                            "arn:aws:iam::123456789012:role/zetl-redshift", "eu-west-1"));
    add(l, "file_mark_1", zetl_wh_rs_file_mark_sql(t, nshapes - 1));
    add(l, "copy_0",
        zetl_wh_rs_copy_sql(t, &shapes[0],
                            "s3://zetl-bucket/prod/zetl_0/0000000000000064-00000000000000C8/"
                            "items.csv.zst.manifest",
                            "arn:aws:iam::123456789012:role/zetl-redshift", "eu-west-1"));
    add(l, "skip_applied", zetl_wh_rs_skip_applied_sql(t));
    add(l, "stage_stats", zetl_wh_rs_stage_stats_sql(t, shapes, nshapes));
    add(l, "truncate", zetl_wh_rs_truncate_sql(t));
    add(l, "fill_prepare", zetl_wh_rs_fill_prepare_sql(t, shapes, nshapes));
    add(l, "fill_round", zetl_wh_rs_fill_round_sql(t));
    add(l, "merge", zetl_wh_rs_merge_sql(t, shapes, nshapes));
    add(l, "drop_stage", zetl_wh_rs_drop_stage_sql(t));
}

static const char *const offsets_names[] = {
    "offset_get", "offset_lock",   "offset_locked_get", "offset_set", "offset_progress",
    "state_get",  "state_applied", "state_stop",        "columns",
};

/* Bookkeeping statements, one file per part: "<name>.<part>". */
static void offsets_stmts(struct stmts *l, const char *schema, char names[][40])
{
    size_t k = 0;

    add(l, "bootstrap", zetl_wh_sql_bootstrap(&zetl_wh_rs_dialect, schema));
    add(l, "state_upgrade", zetl_wh_sql_state_upgrade(&zetl_wh_rs_dialect, schema));
    add(l, "begin", zetl_wh_rs_begin_sql(schema));
    for (int w = ZETL_WH_SQL_OFFSET_GET; w <= ZETL_WH_SQL_COLUMNS; w++) {
        for (size_t part = 0;; part++) {
            int np = -1;
            char *sql = zetl_wh_rs_offsets_sql(schema, (enum zetl_wh_offsets_stmt)w, part, &np);

            if (sql == NULL)
                break;
            CHECK(np >= 0 && np <= 4);
            snprintf(names[k], 40, "%s.%zu.p%d", offsets_names[w], part, np);
            add(l, names[k++], sql);
        }
    }
}

static char *text_of(const struct stmts *l)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    for (size_t i = 0; i < l->n; i++)
        zetl_buf_printf(&b, "-- %s\n%s;\n\n", l->s[i].name, l->s[i].sql);
    return zetl_wh_sql_take(&b);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct zetl_buf b;
    char chunk[4096];
    size_t n;

    if (f == NULL)
        return NULL;
    zetl_buf_init(&b, 0);
    zetl_buf_reserve(&b, 1);
    zetl_buf_reset(&b);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        zetl_buf_append(&b, chunk, n);
    fclose(f);
    return b.data;
}

static bool write_all(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    bool ok;

    if (f == NULL) {
        fprintf(stderr, "could not create \"%s\": %s\n", path, strerror(errno));
        return false;
    }
    ok = fwrite(text, 1, strlen(text), f) == strlen(text);
    return fclose(f) == 0 && ok;
}

static void golden(const char *name, const char *text)
{
    const char *src = getenv("ZETL_SOURCE_DIR");
    const char *update = getenv("ZETL_UPDATE_GOLDEN");
    char path[4096];
    char *want;

    snprintf(path, sizeof(path), "%s/tests/fixtures/redshift/%s.sql", src ? src : ".", name);
    if (update != NULL && strcmp(update, "1") == 0) {
        CHECK(write_all(path, text));
        fprintf(stderr, "wrote %s\n", path);
        return;
    }
    want = read_all(path);
    if (want == NULL) {
        fprintf(stderr, "could not read %s (is ZETL_SOURCE_DIR set?)\n", path);
        CHECK(want != NULL);
        return;
    }
    if (strcmp(want, text) != 0) {
        size_t k = 0, line = 1;

        while (want[k] && want[k] == text[k]) {
            line += want[k] == '\n';
            k++;
        }
        fprintf(stderr,
                "%s: differs from the golden file at line %zu (ZETL_UPDATE_GOLDEN=1 "
                "rewrites it)\n",
                path, line);
    }
    CHECK(strcmp(want, text) == 0);
    free(want);
}

/* A table with every mapped type; file 1 lacks "doc" and "raw". */
static void test_golden(void)
{
    struct zetl_wh_col cols[] = {
        {"id", "int4", true},
        {"part", "int2", true},
        {"big", "int8", false},
        {"r", "float4", false},
        {"d", "float8", false},
        {"flag", "bool", false},
        {"day", "date", false},
        {"ts", "timestamp(3)", false},
        {"tstz", "timestamptz", false},
        {"t", "time", false},
        {"ttz", "timetz", false},
        {"body", "text", false},
        {"name", "varchar(20)", false},
        {"code", "bpchar(5)", false},
        {"doc", "jsonb", false},
        {"j", "json", false},
        {"tags", "_text", false},
        {"nums", "_int4", false},
        {"raw", "bytea", false},
        {"price", "numeric(12,2)", false},
        {"huge", "numeric(50,10)", false},
        {"anynum", "numeric", false},
        {"uid", "uuid", false},
        {"dur", "interval", false},
        {"mood", "text", false},
        {"bits", "bit(8)", false},
        {"ip", "inet", false},
        {"Mixed Case", "varchar", false},
    };
    size_t ncols = sizeof(cols) / sizeof(cols[0]);
    size_t map0[sizeof(cols) / sizeof(cols[0])];
    size_t map1[sizeof(cols) / sizeof(cols[0])];
    size_t n1 = 0;
    struct zetl_wh_shape shapes[2];
    struct zetl_wh_table t = {"zetl_raw",        "every_type", "tenant_id", "_zetl_stage_1",
                              ZETL_DELETES_HARD, ncols,        cols,        false};
    struct stmts l = {0};
    char names[64][40];

    for (size_t i = 0; i < ncols; i++) {
        map0[i] = i;
        if (strcmp(cols[i].name, "doc") != 0 && strcmp(cols[i].name, "raw") != 0)
            map1[n1++] = i;
    }
    shapes[0].ncols = ncols;
    shapes[0].map = map0;
    shapes[1].ncols = n1;
    shapes[1].map = map1;

    for (size_t m = 0; m < 3; m++) {
        char *text;

        t.deletes = (enum zetl_wh_deletes)m;
        table_stmts(&l, &t, shapes, 2);
        text = text_of(&l);
        golden(mode_names[m], text);
        free(text);
        release(&l);
    }
    {
        struct zetl_wh_col kcols[] = {{"line", "text", false}, {"n", "int4", false}};
        size_t kmap[] = {0, 1};
        struct zetl_wh_shape ks[] = {{2, kmap}};
        struct zetl_wh_table kt = {"zetl_raw",        "log", "tenant_id", "_zetl_stage_2",
                                   ZETL_DELETES_HARD, 2,     kcols,       false};
        char *text;

        table_stmts(&l, &kt, ks, 1);
        text = text_of(&l);
        golden("keyless", text);
        free(text);
        release(&l);
    }
    {
        /* A text key: every match and grouping also compares OCTET_LENGTH. */
        struct zetl_wh_col pcols[] = {{"code", "text", true}, {"n", "int4", false}};
        size_t pmap[] = {0, 1};
        struct zetl_wh_shape ps[] = {{2, pmap}};
        struct zetl_wh_table pt = {"zetl_raw",           "codes", "tenant_id", "_zetl_stage_3",
                                   ZETL_DELETES_HISTORY, 2,       pcols,       false};
        char *text;

        table_stmts(&l, &pt, ps, 1);
        text = text_of(&l);
        golden("padded", text);
        free(text);
        release(&l);
    }
    {
        struct zetl_wh_rs_probe pr[ZETL_WH_RS_NPROBES];
        struct zetl_wh_rs_probe_files f = {"s3://b/p/_zetl_probe/x/good.csv.zst.manifest",
                                           "s3://b/p/_zetl_probe/x/bad.csv.zst.manifest",
                                           "s3://b/p/_zetl_probe/x/bad.csv.zst",
                                           "arn:aws:iam::1:role/r", "eu-west-1"};
        size_t n = zetl_wh_rs_probes("zetl_raw", &f, pr);
        char *text;

        CHECK(n == 7);
        CHECK(pr[n - 1].setup_fails && pr[n - 1].param == f.bad_data);
        for (size_t i = 0; i < n; i++) {
            /* add() keeps the name: one buffer per statement. */
            static char pnames[2 * ZETL_WH_RS_NPROBES][40];

            snprintf(pnames[2 * i], sizeof(pnames[0]), "probe_%zu_setup", i);
            add(&l, pnames[2 * i], strdup(pr[i].setup));
            snprintf(pnames[2 * i + 1], sizeof(pnames[0]), "probe_%zu_check", i);
            add(&l, pnames[2 * i + 1], strdup(pr[i].check));
        }
        text = text_of(&l);
        golden("probe", text);
        free(text);
        release(&l);
        zetl_wh_rs_probes_release(pr, n);
        /* Without S3 files, the COPY probes are left out. */
        n = zetl_wh_rs_probes("zetl_raw", NULL, pr);
        CHECK(n == 5);
        zetl_wh_rs_probes_release(pr, n);
    }
    {
        char *text;

        offsets_stmts(&l, "zetl_raw", names);
        add(&l, "load_error_provisioned", strdup(zetl_wh_rs_load_error_sql(false)));
        add(&l, "load_error_serverless", strdup(zetl_wh_rs_load_error_sql(true)));
        text = text_of(&l);
        golden("offsets", text);
        free(text);
        release(&l);
    }
}

/* After removing every quoted occurrence, the hostile name must not remain. */
static void check_quoted(const char *what, const char *sql)
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
}

static void test_hostile(void)
{
    struct zetl_wh_col cols[] = {
        {HOSTILE, "int4", true},
        {"name", "varchar(20)", false},
        {"tags", "_text", false},
        {"raw", "bytea", false},
    };
    struct zetl_wh_col kcols[] = {{HOSTILE, "text", false}};
    size_t map0[] = {0, 1, 2, 3};
    size_t map1[] = {0, 2};
    size_t kmap[] = {0};
    struct zetl_wh_shape shapes[] = {{4, map0}, {2, map1}};
    struct zetl_wh_shape kshapes[] = {{1, kmap}};
    struct zetl_wh_table t = {HOSTILE,           HOSTILE, HOSTILE, "_zetl_stage_1",
                              ZETL_DELETES_HARD, 4,       cols,    false};
    struct stmts l = {0};
    char names[64][40];

    for (size_t m = 0; m < 3; m++) {
        t.deletes = (enum zetl_wh_deletes)m;
        t.ncols = 4;
        t.cols = cols;
        table_stmts(&l, &t, shapes, 2);
        t.ncols = 1;
        t.cols = kcols;
        table_stmts(&l, &t, kshapes, 1);
        for (size_t i = 0; i < l.n; i++)
            check_quoted(l.s[i].name, l.s[i].sql);
        release(&l);
    }
    offsets_stmts(&l, HOSTILE, names);
    for (size_t i = 0; i < l.n; i++)
        check_quoted(l.s[i].name, l.s[i].sql);
    release(&l);

    {
        char *sql = zetl_wh_sql_create_table(&zetl_wh_rs_dialect, &t);

        /* The keyless hostile table: tenant column typed, sort key quoted. */
        CHECK(strstr(sql, "CREATE TABLE " HOSTILE_Q "." HOSTILE_Q " (" HOSTILE_Q
                          " VARCHAR(128) NOT NULL, " HOSTILE_Q " VARCHAR(65535)") != NULL);
        CHECK(strstr(sql, " DISTSTYLE EVEN COMPOUND SORTKEY(" HOSTILE_Q ")") != NULL);
        free(sql);
    }
}

/* The literals of a COPY: a quote in the role, URL or region is doubled, never closes. */
static void test_literals(void)
{
    struct zetl_wh_col cols[] = {{"id", "int4", true}};
    size_t map[] = {0};
    struct zetl_wh_shape shape = {1, map};
    struct zetl_wh_table t = {"s", "t",  "tenant_id", "_zetl_stage_1", ZETL_DELETES_HARD,
                              1,   cols, false};
    char *sql = zetl_wh_rs_copy_sql(&t, &shape, "s3://b/it's/x.csv.zst.manifest",
                                    "arn:aws:iam::1:role/o'; drop table x; --", "eu-'west");

    CHECK(strstr(sql, "FROM 's3://b/it''s/x.csv.zst.manifest' ") != NULL);
    CHECK(strstr(sql, "IAM_ROLE 'arn:aws:iam::1:role/o''; drop table x; --' ") != NULL);
    CHECK(strstr(sql, "REGION 'eu-''west' ") != NULL);
    CHECK(strstr(sql, "NULL AS '' ") != NULL);
    CHECK(strstr(sql, "EMPTYASNULL") == NULL && strstr(sql, "BLANKSASNULL") == NULL &&
          strstr(sql, "ACCEPTINVCHARS") == NULL && strstr(sql, "TRUNCATECOLUMNS") == NULL);
    free(sql);
    /* Without a region the bucket's region is the cluster's. */
    sql = zetl_wh_rs_copy_sql(&t, &shape, "s3://b/x", "r", NULL);
    CHECK(strstr(sql, "REGION") == NULL);
    free(sql);
}

/* Redshift refuses a SUPER column as DISTKEY or in a SORTKEY: such key columns stay out. */
static void test_super_keys(void)
{
    struct zetl_wh_col cols[] = {
        {"doc", "jsonb", true}, {"id", "int4", true}, {"v", "text", false}};
    struct zetl_wh_table t = {"s", "t",  "tenant_id", "_zetl_stage_1", ZETL_DELETES_HARD,
                              3,   cols, false};
    char *sql = zetl_wh_sql_create_table(&zetl_wh_rs_dialect, &t);

    CHECK(strstr(sql, "DISTKEY(\"id\") COMPOUND SORTKEY(\"tenant_id\", \"id\")") != NULL);
    free(sql);
    t.ncols = 1; /* only the json key */
    sql = zetl_wh_sql_create_table(&zetl_wh_rs_dialect, &t);
    CHECK(strstr(sql, "DISTSTYLE EVEN COMPOUND SORTKEY(\"tenant_id\")") != NULL);
    CHECK(strstr(sql, "PRIMARY KEY (\"tenant_id\", \"doc\")") != NULL);
    free(sql);
}

/*
 * The table of tests/integration/test_redshift_sql.py: "zetl_raw"."items"
 * (tenant_id; id key, name, note, tags text[], amount numeric(12,2)), file 1
 * lacking "note"; and a keyless "zetl_raw"."events" (line, n).
 */
static void export_for_integration(const char *dir)
{
    struct zetl_wh_col cols[] = {
        {"id", "int4", true},
        {"name", "text", false},
        {"note", "text", false},
        {"tags", "_text", false},
        {"amount", "numeric(12,2)", false},
    };
    struct zetl_wh_col kcols[] = {{"line", "text", false}, {"n", "int4", false}};
    size_t map0[] = {0, 1, 2, 3, 4};
    size_t map1[] = {0, 1, 3, 4};
    size_t kmap[] = {0, 1};
    struct zetl_wh_shape shapes[] = {{5, map0}, {4, map1}};
    struct zetl_wh_shape kshapes[] = {{2, kmap}};
    struct zetl_wh_table t = {"zetl_raw",        "items", "tenant_id", "_zetl_stage_1",
                              ZETL_DELETES_HARD, 5,       cols,        false};
    struct zetl_wh_table kt = {"zetl_raw",        "events", "tenant_id", "_zetl_stage_2",
                               ZETL_DELETES_HARD, 2,        kcols,       false};
    char names[64][40];
    char path[4096];

    for (size_t m = 0; m < 4; m++) {
        struct stmts l = {0};
        const char *mode = m < 3 ? mode_names[m] : "offsets";

        snprintf(path, sizeof(path), "%s/%s", dir, mode);
        CHECK(mkdir(path, 0755) == 0 || errno == EEXIST);
        if (m < 3) {
            t.deletes = kt.deletes = (enum zetl_wh_deletes)m;
            table_stmts(&l, &t, shapes, 2);
            for (size_t i = 0; i < l.n; i++) {
                snprintf(path, sizeof(path), "%s/%s/%s.sql", dir, mode, l.s[i].name);
                CHECK(write_all(path, l.s[i].sql));
            }
            release(&l);
            table_stmts(&l, &kt, kshapes, 1);
            for (size_t i = 0; i < l.n; i++) {
                snprintf(path, sizeof(path), "%s/%s/keyless_%s.sql", dir, mode, l.s[i].name);
                CHECK(write_all(path, l.s[i].sql));
            }
        } else {
            offsets_stmts(&l, "zetl_raw", names);
            for (size_t i = 0; i < l.n; i++) {
                snprintf(path, sizeof(path), "%s/%s/%s.sql", dir, mode, l.s[i].name);
                CHECK(write_all(path, l.s[i].sql));
            }
        }
        release(&l);
    }
    {
        struct zetl_wh_col pcols[] = {{"code", "text", true}, {"n", "int4", false}};
        size_t pmap[] = {0, 1};
        struct zetl_wh_shape ps[] = {{2, pmap}};
        struct zetl_wh_table pt = {"zetl_raw",        "codes", "tenant_id", "_zetl_stage_3",
                                   ZETL_DELETES_HARD, 2,       pcols,       false};
        struct zetl_wh_rs_probe pr[ZETL_WH_RS_NPROBES];
        struct zetl_wh_rs_probe_files f = {"s3://b/good.manifest", "s3://b/bad.manifest",
                                           "s3://b/bad.csv.zst", "arn:aws:iam::1:role/r", NULL};
        size_t n;

        for (size_t m = 0; m < 3; m++) {
            struct stmts l = {0};

            pt.deletes = (enum zetl_wh_deletes)m;
            table_stmts(&l, &pt, ps, 1);
            for (size_t i = 0; i < l.n; i++) {
                snprintf(path, sizeof(path), "%s/%s/padded_%s.sql", dir, mode_names[m],
                         l.s[i].name);
                CHECK(write_all(path, l.s[i].sql));
            }
            release(&l);
        }
        snprintf(path, sizeof(path), "%s/probe", dir);
        CHECK(mkdir(path, 0755) == 0 || errno == EEXIST);
        n = zetl_wh_rs_probes("zetl_raw", &f, pr);
        for (size_t i = 0; i < n; i++) {
            snprintf(path, sizeof(path), "%s/probe/%zu_setup.sql", dir, i);
            CHECK(write_all(path, pr[i].setup));
            snprintf(path, sizeof(path), "%s/probe/%zu_check.sql", dir, i);
            CHECK(write_all(path, pr[i].check));
            snprintf(path, sizeof(path), "%s/probe/%zu_expect.sql", dir, i);
            CHECK(write_all(path, pr[i].expect));
        }
        zetl_wh_rs_probes_release(pr, n);
    }
    fprintf(stderr, "wrote the statements for test_redshift_sql.py to %s\n", dir);
}

/* Redshift's system column names stop a table (and may not be the tenant column). */
static void test_system_columns(void)
{
    CHECK(zetl_wh_system_column(&zetl_wh_rs_dialect, "oid"));
    CHECK(zetl_wh_system_column(&zetl_wh_rs_dialect, "ctid"));
    CHECK(!zetl_wh_system_column(&zetl_wh_rs_dialect, "OID"));
    CHECK(!zetl_wh_system_column(&zetl_wh_rs_dialect, "id"));
    CHECK(!zetl_wh_system_column(&zetl_wh_pg_dialect, "oid"));
    CHECK(zetl_wh_rs_dialect.key_type_fixed && !zetl_wh_pg_dialect.key_type_fixed);
    {
        char *def = zetl_wh_rs_col_def("varchar(20)"), *ty = zetl_wh_rs_col_def("int4");

        CHECK(strcmp(def, "VARCHAR(80) ENCODE ZSTD") == 0);
        CHECK(strcmp(ty, "INTEGER") == 0);
        free(def);
        free(ty);
    }
}

int main(void)
{
    const char *dir = getenv("ZETL_RS_SQL_DIR");

    test_type_mapping();
    test_type_change();
    test_golden();
    test_hostile();
    test_literals();
    test_super_keys();
    test_system_columns();
    if (dir != NULL && dir[0] != '\0')
        export_for_integration(dir);
    return zetl_tap_done();
}
