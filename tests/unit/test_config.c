/* Unit tests for config/: YAML parsing, defaults, every error message, sizes, env overrides,
 * redaction. */
#include "config/config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "tests/unit/tap.h"

/* Minimal valid prefix: a source and a destination; tests append to or replace parts of it. */
#define SRC                                                                                        \
    "source:\n"                                                                                    \
    "  dsn: \"host=127.0.0.1 dbname=app\"\n"                                                       \
    "  tenants:\n"                                                                                 \
    "    schemas: [\"tenant_*\"]\n"
#define ARCHIVE                                                                                    \
    "archive:\n"                                                                                   \
    "  url: file:///tmp/zetl-archive\n"

static void clear_env(void)
{
    unsetenv("ZETL_SOURCE_DSN");
    unsetenv("ZETL_WAREHOUSE_DSN");
    unsetenv("ZETL_SOURCE_DSN_FILE");
    unsetenv("ZETL_WAREHOUSE_DSN_FILE");
    unsetenv("ZETL_MASK_SALT");
    unsetenv("AWS_REGION");
}

static struct zetl_config *parse_ok(const char *text, int line)
{
    struct zetl_config *cfg = NULL;
    struct zetl_errbuf eb = {{0}};
    enum zetl_err err = zetl_config_parse("zetl.yaml", text, strlen(text), &cfg, &eb);

    if (err != ZETL_OK) {
        fprintf(stderr, "%s:%d: unexpected error: %s\n", __FILE__, line, eb.msg);
        zetl_tap_failed++;
        return NULL;
    }
    zetl_tap_passed++;
    return cfg;
}

/* Parses `text` as zetl.yaml and checks the error class and that the message contains `want`. */
static void expect_error(const char *text, enum zetl_err want_err, const char *want, int line)
{
    struct zetl_config *cfg = (struct zetl_config *)1;
    struct zetl_errbuf eb = {{0}};
    enum zetl_err err = zetl_config_parse("zetl.yaml", text, strlen(text), &cfg, &eb);

    if (err == want_err && cfg == NULL && strstr(eb.msg, want) != NULL) {
        zetl_tap_passed++;
    } else {
        zetl_tap_failed++;
        fprintf(stderr, "%s:%d: expected error %d containing\n  %s\ngot error %d:\n  %s\n",
                __FILE__, line, (int)want_err, want, (int)err, eb.msg);
    }
    if (err == ZETL_OK && cfg != NULL)
        zetl_config_free(cfg);
}

#define PARSE_OK(text) parse_ok((text), __LINE__)
#define EXPECT_USAGE(text, want) expect_error((text), ZETL_ERR_USAGE, (want), __LINE__)

static char *fixture(const char *name)
{
    const char *dir = getenv("ZETL_SOURCE_DIR");
    char path[4096];

    snprintf(path, sizeof(path), "%s/tests/fixtures/config/%s", dir ? dir : ".", name);
    return strdup(path);
}

static void test_full(void)
{
    struct zetl_config *cfg = NULL;
    struct zetl_errbuf eb = {{0}};
    char *path = fixture("full.yaml");

    clear_env();
    setenv("ZETL_MASK_SALT", "pepper", 1);
    CHECK(zetl_config_load(path, &cfg, &eb) == ZETL_OK);
    if (cfg == NULL) {
        fprintf(stderr, "full.yaml: %s\n", eb.msg);
        free(path);
        return;
    }
    CHECK_STR(cfg->path, path);
    CHECK_STR(cfg->source.dsn,
              "host=src.example port=5433 dbname=app user=zetl password='s3 cret'");
    CHECK(cfg->source.schemas.n == 2);
    CHECK_STR(cfg->source.schemas.items[0], "tenant_*");
    CHECK_STR(cfg->source.schemas.items[1], "acme");
    CHECK(cfg->source.tables.n == 3);
    CHECK_STR(cfg->source.tables.items[0], "users");
    CHECK_STR(cfg->source.tables.items[1], "order?");
    CHECK_STR(cfg->source.tables.items[2], "[a-c]*");
    CHECK_STR(cfg->source.slot, "zetl_prod");
    CHECK(cfg->source.slot_groups == 4);

    CHECK_STR(cfg->transforms.tenant_column, "org_id");
    CHECK(cfg->transforms.nclean == 3);
    if (cfg->transforms.nclean == 3) {
        const struct zetl_clean_rule *r = cfg->transforms.clean;
        CHECK(r[0].columns.n == 1);
        CHECK_STR(r[0].columns.items[0], "*");
        CHECK(r[0].null_strings.n == 3);
        CHECK_STR(r[0].null_strings.items[0], "NULL");
        CHECK_STR(r[0].null_strings.items[1], "");
        CHECK_STR(r[0].null_strings.items[2], "n/a");
        CHECK(r[0].trim && !r[0].lower && r[0].mask == ZETL_MASK_NONE && !r[0].drop);
        CHECK(r[0].line == 12);
        CHECK_STR(r[1].columns.items[0], "users.email");
        CHECK(r[1].null_strings.n == 0);
        CHECK(!r[1].trim && r[1].lower && r[1].mask == ZETL_MASK_SHA256 && !r[1].drop);
        CHECK(r[1].line == 15);
        CHECK(r[2].columns.n == 2);
        CHECK_STR(r[2].columns.items[1], "ssn");
        CHECK(r[2].drop && !r[2].trim && !r[2].lower && r[2].mask == ZETL_MASK_NONE);
        CHECK(r[2].line == 18);
    }

    CHECK_STR(cfg->buffer.dir, "/var/lib/zetl");
    CHECK(cfg->buffer.dir_line == 21); /* for messages about the directory */
    CHECK(cfg->buffer.max_rows == 5000);
    CHECK(cfg->buffer.max_bytes == 10000000);
    CHECK(cfg->buffer.max_age_ms == 250);

    CHECK_STR(cfg->archive.url, "s3://zetl-archive/prod/cdc");
    CHECK_STR(cfg->archive.s3.region, "eu-west-1");
    CHECK_STR(cfg->archive.s3.endpoint, "http://127.0.0.1:4569");
    CHECK(cfg->archive.s3.path_style == false);
    CHECK(cfg->archive.s3.part_size == 16ull * 1024 * 1024);
    CHECK(cfg->archive.retention_ms == 45ull * 60 * 1000);
    CHECK(cfg->archive.retention_interval_ms == 30000);
    CHECK(cfg->archive.retention_ignore_snapshot);

    CHECK(cfg->warehouse.kind == ZETL_WH_REDSHIFT);
    CHECK_STR(cfg->warehouse.dsn, "host=wh.example port=5439 dbname=dw user=loader");
    CHECK_STR(cfg->warehouse.schema, "raw");
    CHECK(cfg->warehouse.deletes == ZETL_DELETES_HISTORY);
    CHECK_STR(cfg->warehouse.iam_role, "arn:aws:iam::123456789012:role/zetl-copy");
    CHECK_STR(cfg->log_level, "debug");

    zetl_config_free(cfg);
    free(path);
    clear_env();
}

/* Reads a file of the source tree (ZETL_SOURCE_DIR) whole; NULL when it cannot be read. */
static char *read_source_file(const char *rel)
{
    const char *dir = getenv("ZETL_SOURCE_DIR");
    char path[4096];
    char *text = NULL;
    long n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir ? dir : ".", rel);
    f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        text = calloc(1, (size_t)n + 1);
        if (text != NULL && fread(text, 1, (size_t)n, f) != (size_t)n) {
            free(text);
            text = NULL;
        }
    }
    fclose(f);
    return text;
}

/* True when `key:` starts a word in text (a key, set or commented out). */
static bool mentions_key(const char *text, const char *key)
{
    size_t n = strlen(key);

    for (const char *p = strstr(text, key); p != NULL; p = strstr(p + 1, key)) {
        bool starts = p == text || !((p[-1] >= 'a' && p[-1] <= 'z') || p[-1] == '_');
        if (starts && p[n] == ':')
            return true;
    }
    return false;
}

/*
 * zetl.example.yaml at the root: the real parser takes it as it is, its
 * values are the defaults, and it names every key the parser accepts (read
 * from the key tables of config/config_sections.c, so a new key without an
 * entry in the example fails here).
 */
static void test_example(void)
{
    struct zetl_config *cfg = NULL;
    struct zetl_errbuf eb = {{0}};
    char *example = read_source_file("zetl.example.yaml");
    char *sections = read_source_file("config/config_sections.c");
    char *kafka_keys = read_source_file("config/config_kafka.c");
    const char *dir = getenv("ZETL_SOURCE_DIR");
    char path[4096];
    int nkeys = 0;

    CHECK(example != NULL && sections != NULL && kafka_keys != NULL);
    if (example == NULL || sections == NULL || kafka_keys == NULL)
        goto done;
    /* The kafka section's keys live in a file of their own. */
    sections = realloc(sections, strlen(sections) + strlen(kafka_keys) + 1);
    strcat(sections, kafka_keys);
    clear_env();
    snprintf(path, sizeof(path), "%s/zetl.example.yaml", dir ? dir : ".");
    CHECK(zetl_config_load(path, &cfg, &eb) == ZETL_OK);
    if (cfg == NULL) {
        fprintf(stderr, "zetl.example.yaml: %s\n", eb.msg);
        goto done;
    }
    CHECK_STR(cfg->source.dsn, "host=127.0.0.1 port=5432 dbname=app user=zetl");
    CHECK(cfg->source.schemas.n == 1);
    CHECK_STR(cfg->source.schemas.items[0], "tenant_*");
    CHECK(cfg->source.refresh_ms == 5000);
    CHECK(cfg->source.tables.n == 1);
    CHECK_STR(cfg->source.tables.items[0], "*");
    CHECK_STR(cfg->source.slot, "zetl");
    CHECK(cfg->source.slot_groups == 1);
    CHECK(cfg->source.receive_timeout_ms == 60000);
    CHECK(cfg->source.snapshot);
    CHECK(cfg->source.snapshot_workers == 2);
    CHECK_STR(cfg->transforms.tenant_column, "tenant_id");
    CHECK(cfg->transforms.nclean == 2);
    CHECK_STR(cfg->buffer.dir, "./zetl-data");
    CHECK(cfg->buffer.max_rows == 100000);
    CHECK(cfg->buffer.max_bytes == 64ull * 1024 * 1024);
    CHECK(cfg->buffer.max_age_ms == 1000);
    CHECK_STR(cfg->archive.url, "file://./zetl-data/archive");
    CHECK(cfg->archive.retention_ms == 0);
    CHECK(cfg->archive.retention_interval_ms == 600000);
    CHECK(!cfg->archive.retention_ignore_snapshot);
    CHECK_STR(cfg->archive.s3.region, "us-east-1");
    CHECK(cfg->archive.s3.endpoint == NULL);
    CHECK(!cfg->archive.s3.path_style);
    CHECK(cfg->archive.s3.part_size == 8ull * 1024 * 1024);
    CHECK(cfg->warehouse.kind == ZETL_WH_POSTGRES);
    CHECK_STR(cfg->warehouse.schema, "zetl_raw");
    CHECK(cfg->warehouse.deletes == ZETL_DELETES_HARD);
    CHECK(cfg->warehouse.iam_role == NULL);
    CHECK_STR(cfg->log_level, "log");
    CHECK(!cfg->log_json);
    zetl_config_free(cfg);

    /* Every string of every `keys[] = {...}` table of the parser. */
    for (const char *p = strstr(sections, "keys[] = {"); p != NULL;
         p = strstr(p + 1, "keys[] = {")) {
        const char *end = strstr(p, "NULL}");
        for (const char *q = strchr(p, '"'); q != NULL && end != NULL && q < end;) {
            const char *close = strchr(q + 1, '"');
            char key[64];
            if (close == NULL || close - q - 1 >= (long)sizeof(key))
                break;
            snprintf(key, sizeof(key), "%.*s", (int)(close - q - 1), q + 1);
            nkeys++;
            if (!mentions_key(example, key)) {
                fprintf(stderr, "zetl.example.yaml does not mention key \"%s\"\n", key);
                zetl_tap_failed++;
            }
            q = strchr(close + 1, '"');
        }
    }
    /* The tables were found (source, tenants, clean rules, transforms, buffer, archive, ...). */
    CHECK(nkeys >= 50);
done:
    free(kafka_keys);
    free(example);
    free(sections);
    clear_env();
}

static void test_defaults(void)
{
    struct zetl_config *cfg = NULL;
    struct zetl_errbuf eb = {{0}};
    char *path = fixture("minimal.yaml");

    clear_env();
    CHECK(zetl_config_load(path, &cfg, &eb) == ZETL_OK);
    free(path);
    if (cfg == NULL) {
        fprintf(stderr, "minimal.yaml: %s\n", eb.msg);
        return;
    }
    CHECK_STR(cfg->source.dsn, "host=127.0.0.1 dbname=app user=zetl");
    CHECK(cfg->source.tables.n == 1);
    CHECK_STR(cfg->source.tables.items[0], "*");
    CHECK_STR(cfg->source.slot, "zetl");
    CHECK(cfg->source.slot_groups == 1);
    CHECK(cfg->source.receive_timeout_ms == 60000);
    CHECK_STR(cfg->transforms.tenant_column, "tenant_id");
    CHECK(cfg->transforms.nclean == 0);
    CHECK_STR(cfg->buffer.dir, "./zetl-data");
    CHECK(cfg->buffer.dir_line == 1); /* the default, with no buffer section */
    CHECK(cfg->buffer.max_rows == 100000);
    CHECK(cfg->buffer.max_bytes == 64ull * 1024 * 1024);
    CHECK(cfg->buffer.max_age_ms == 1000);
    CHECK_STR(cfg->archive.url, "file://./zetl-data/archive");
    CHECK_STR(cfg->archive.s3.region, "us-east-1");
    CHECK(cfg->archive.s3.endpoint == NULL);
    CHECK(cfg->archive.s3.path_style == false);
    CHECK(cfg->archive.s3.part_size == 8ull * 1024 * 1024);
    CHECK(cfg->warehouse.kind == ZETL_WH_NONE);
    CHECK(cfg->warehouse.dsn == NULL);
    CHECK(cfg->log_level == NULL);
    zetl_config_free(cfg);

    /* Warehouse only, with its own defaults; empty sections read as absent. */
    cfg = PARSE_OK(SRC "transforms:\nbuffer:\nwarehouse:\n  kind: postgres\n  dsn: host=wh\n");
    if (cfg != NULL) {
        CHECK(cfg->archive.url == NULL);
        CHECK(cfg->warehouse.kind == ZETL_WH_POSTGRES);
        CHECK_STR(cfg->warehouse.dsn, "host=wh");
        CHECK_STR(cfg->warehouse.schema, "zetl_raw");
        CHECK(cfg->warehouse.deletes == ZETL_DELETES_HARD);
        CHECK(cfg->warehouse.iam_role == NULL);
        CHECK_STR(cfg->transforms.tenant_column, "tenant_id");
        CHECK(cfg->buffer.max_rows == 100000);
        zetl_config_free(cfg);
    }

    /* An endpoint makes path-style the default; AWS_REGION is the default region. */
    setenv("AWS_REGION", "ap-south-1", 1);
    cfg = PARSE_OK(SRC "archive:\n  url: s3://bucket\n  s3:\n    endpoint: https://s3.local\n");
    if (cfg != NULL) {
        CHECK(cfg->archive.s3.path_style == true);
        CHECK_STR(cfg->archive.s3.region, "ap-south-1");
        CHECK_STR(cfg->archive.s3.endpoint, "https://s3.local");
        zetl_config_free(cfg);
    }
    clear_env();

    /* Flow style, True/False, and the limits that are still valid. */
    cfg = PARSE_OK("{source: {dsn: h, tenants: {schemas: [a]}, slot_groups: 64,"
                   " receive_timeout_ms: 100,"
                   " slot: _aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa},"
                   " transforms: {tenant_column: ccccccccccccccccccccccccccccccccccccccccccccccc"
                   "cccccccccccccccc, clean: [{columns: [x], trim: True, lower: False}]},"
                   " archive: {url: 'file:///a', s3: {part_size: 5MiB}}}");
    if (cfg != NULL) {
        CHECK(cfg->source.slot_groups == 64);
        CHECK(cfg->source.receive_timeout_ms == 100);
        CHECK(strlen(cfg->source.slot) == 50);
        CHECK(strlen(cfg->transforms.tenant_column) == 63);
        CHECK(cfg->transforms.nclean == 1 && cfg->transforms.clean[0].trim &&
              !cfg->transforms.clean[0].lower);
        CHECK(cfg->archive.s3.part_size == 5ull * 1024 * 1024);
        zetl_config_free(cfg);
    }
}

static void test_structure_errors(void)
{
    struct zetl_config *cfg = NULL;
    struct zetl_errbuf eb = {{0}};
    char *path;

    clear_env();

    /* Unknown keys, with a did-you-mean when a sibling is close. */
    path = fixture("bad-unknown-key.yaml");
    CHECK(zetl_config_load(path, &cfg, &eb) == ZETL_ERR_USAGE);
    CHECK(cfg == NULL);
    CHECK(strstr(eb.msg, "bad-unknown-key.yaml:4: source.tenant: unknown key (did you mean "
                         "source.tenants?)") != NULL);
    free(path);
    EXPECT_USAGE(SRC ARCHIVE "wharehouse:\n  kind: postgres\n",
                 "zetl.yaml:7: wharehouse: unknown key (did you mean warehouse?)");
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  max_rows: 1\n  colour: blue\n",
                 "zetl.yaml:9: buffer.colour: unknown key");
    EXPECT_USAGE(SRC "archive:\n  url: s3://bucket\n  s3:\n    regoin: x\n",
                 "zetl.yaml:8: archive.s3.regoin: unknown key (did you mean archive.s3.region?)");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - columns: [a]\n      trimm: true\n",
                 "zetl.yaml:10: transforms.clean[0].trimm: unknown key (did you mean "
                 "transforms.clean[0].trim?)");

    /* Duplicate keys, at the top and nested. */
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  max_rows: 1\n  max_rows: 2\n",
                 "zetl.yaml:9: buffer.max_rows: duplicate key (first set on line 8)");
    EXPECT_USAGE(SRC ARCHIVE ARCHIVE, "zetl.yaml:7: archive: duplicate key (first set on line 5)");

    /* Missing required keys name the line of the nearest enclosing key. */
    EXPECT_USAGE("source:\n  dsn: x\n" ARCHIVE,
                 "zetl.yaml:1: source.tenants.schemas: missing required key");
    EXPECT_USAGE("source:\n  dsn: x\n  tenants:\n    other: 1\n" ARCHIVE,
                 "zetl.yaml:4: source.tenants.other: unknown key");
    EXPECT_USAGE("source:\n  dsn: x\n  tenants: {}\n" ARCHIVE,
                 "zetl.yaml:3: source.tenants.schemas: missing required key");
    EXPECT_USAGE("source:\n  tenants:\n    schemas: [a]\n" ARCHIVE,
                 "zetl.yaml:1: source.dsn: missing required key (or set source.dsn_file, "
                 "ZETL_SOURCE_DSN or ZETL_SOURCE_DSN_FILE)");
    EXPECT_USAGE(ARCHIVE, "zetl.yaml:1: source: missing required key");
    EXPECT_USAGE("", "zetl.yaml:1: source: missing required key");
    EXPECT_USAGE(SRC, "zetl.yaml:1: archive.url: no destination configured");
    EXPECT_USAGE(SRC "archive:\n", "zetl.yaml:5: archive.url: missing required key");
    EXPECT_USAGE(SRC "warehouse:\n", "zetl.yaml:5: warehouse.kind: missing required key");
    EXPECT_USAGE(SRC "warehouse:\n  kind: postgres\n",
                 "zetl.yaml:5: warehouse.dsn: missing required key (or set warehouse.dsn_file, "
                 "ZETL_WAREHOUSE_DSN or ZETL_WAREHOUSE_DSN_FILE)");
    EXPECT_USAGE(SRC "warehouse:\n  dsn: x\n", "zetl.yaml:5: warehouse.kind: missing required key");

    /* Wrong types. */
    EXPECT_USAGE("source:\n  dsn: x\n  tenants:\n    schemas: {a: 1}\n" ARCHIVE,
                 "zetl.yaml:4: source.tenants.schemas: expected a list of strings, got a mapping");
    EXPECT_USAGE("source:\n  dsn: x\n  tenants:\n    schemas: tenant_a\n" ARCHIVE,
                 "zetl.yaml:4: source.tenants.schemas: expected a list of strings, got a string");
    EXPECT_USAGE("source:\n  dsn: x\n  tenants:\n    schemas:\n      - a\n      - [b]\n" ARCHIVE,
                 "zetl.yaml:6: source.tenants.schemas[1]: expected a string, got a list");
    EXPECT_USAGE("source:\n  dsn: x\n  tenants:\n    schemas: []\n" ARCHIVE,
                 "zetl.yaml:4: source.tenants.schemas: must not be an empty list");
    EXPECT_USAGE("source:\n  dsn: x\n  tenants: [a]\n" ARCHIVE,
                 "zetl.yaml:3: source.tenants: expected a mapping, got a list");
    EXPECT_USAGE("source:\n  dsn: [x]\n  tenants:\n    schemas: [a]\n" ARCHIVE,
                 "zetl.yaml:2: source.dsn: expected a string, got a list");
    EXPECT_USAGE("source:\n  dsn: \"\"\n  tenants:\n    schemas: [a]\n" ARCHIVE,
                 "zetl.yaml:2: source.dsn: must not be empty");
    EXPECT_USAGE("source: x\n" ARCHIVE, "zetl.yaml:1: source: expected a mapping, got a string");
    EXPECT_USAGE("- a\n- b\n", "zetl.yaml:1: (top level): expected a mapping, got a list");
    EXPECT_USAGE(SRC ARCHIVE "? [a]\n: b\n", "zetl.yaml:7: (top level): keys must be strings");
    EXPECT_USAGE(SRC ARCHIVE "buffer: [1]\n",
                 "zetl.yaml:7: buffer: expected a mapping, got a list");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean: {columns: [a]}\n",
                 "zetl.yaml:8: transforms.clean: expected a list of rules, got a mapping");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - x\n",
                 "zetl.yaml:9: transforms.clean[0]: expected a mapping (a cleaning rule), got a "
                 "string");

    /* Multiple documents. */
    EXPECT_USAGE(SRC ARCHIVE "---\nlog_level: info\n",
                 "zetl.yaml:8: (top level): expected a single YAML document");
}

static void test_value_errors(void)
{
    clear_env();

    /* Globs. */
    EXPECT_USAGE("source:\n  dsn: x\n  tenants:\n    schemas: [\"tenant_[ab\"]\n" ARCHIVE,
                 "zetl.yaml:4: source.tenants.schemas[0]: invalid glob \"tenant_[ab\"");
    EXPECT_USAGE(SRC "  tables:\n    - users\n    - \"bad\\\\\"\n" ARCHIVE,
                 "zetl.yaml:7: source.tables[1]: invalid glob \"bad\\\\\"");
    EXPECT_USAGE(SRC "  tables: []\n" ARCHIVE,
                 "zetl.yaml:5: source.tables: must not be an empty list");

    /* Slot names and groups. */
    EXPECT_USAGE(SRC "  slot: Zetl\n" ARCHIVE, "zetl.yaml:5: source.slot: invalid name \"Zetl\"");
    EXPECT_USAGE(SRC "  slot: 1zetl\n" ARCHIVE, "zetl.yaml:5: source.slot: invalid name");
    EXPECT_USAGE(SRC "  slot: zetl-prod\n" ARCHIVE, "zetl.yaml:5: source.slot: invalid name");
    EXPECT_USAGE(SRC "  slot: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n" ARCHIVE,
                 "source.slot: invalid name");
    EXPECT_USAGE(SRC "  slot_groups: 0\n" ARCHIVE,
                 "zetl.yaml:5: source.slot_groups: must be between 1 and 64, got \"0\"");
    EXPECT_USAGE(SRC "  slot_groups: 65\n" ARCHIVE,
                 "zetl.yaml:5: source.slot_groups: must be between 1 and 64, got \"65\"");
    EXPECT_USAGE(SRC "  slot_groups: two\n" ARCHIVE,
                 "zetl.yaml:5: source.slot_groups: expected an integer, got \"two\"");
    EXPECT_USAGE(SRC "  slot_groups: \"2\"\n" ARCHIVE,
                 "zetl.yaml:5: source.slot_groups: expected an integer, got the quoted string");
    EXPECT_USAGE(SRC "  receive_timeout_ms: 99\n" ARCHIVE,
                 "zetl.yaml:5: source.receive_timeout_ms: must be between 100 and 86400000, got "
                 "\"99\"");
    EXPECT_USAGE(SRC "  receive_timeout_ms: 86400001\n" ARCHIVE,
                 "zetl.yaml:5: source.receive_timeout_ms: must be between 100 and 86400000");
    EXPECT_USAGE(SRC "  receive_timeout_ms: 1m\n" ARCHIVE,
                 "zetl.yaml:5: source.receive_timeout_ms: expected an integer, got \"1m\"");
    EXPECT_USAGE(SRC "  receive_timeou_ms: 5000\n" ARCHIVE,
                 "zetl.yaml:5: source.receive_timeou_ms: unknown key (did you mean "
                 "source.receive_timeout_ms?)");

    /* Integers. */
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  max_rows: 0\n",
                 "zetl.yaml:8: buffer.max_rows: must be greater than 0, got \"0\"");
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  max_rows: -5\n",
                 "zetl.yaml:8: buffer.max_rows: must be greater than 0, got \"-5\"");
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  max_rows: 1.5\n",
                 "zetl.yaml:8: buffer.max_rows: expected an integer, got \"1.5\"");
    EXPECT_USAGE(
        SRC ARCHIVE "buffer:\n  max_age_ms: 99999999999999999999999\n",
        "zetl.yaml:8: buffer.max_age_ms: integer \"99999999999999999999999\" is too large");
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  max_age_ms: {}\n",
                 "zetl.yaml:8: buffer.max_age_ms: expected an integer, got a mapping");

    /* Sizes. */
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  dir: /x\n  max_bytes: 12 apples\n",
                 "zetl.yaml:9: buffer.max_bytes: invalid size \"12 apples\" (expected a number "
                 "with an optional unit such as 64MiB)");
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  max_bytes: 0MiB\n",
                 "zetl.yaml:8: buffer.max_bytes: size \"0MiB\" must be greater than 0");
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  max_bytes: -64MiB\n",
                 "zetl.yaml:8: buffer.max_bytes: size \"-64MiB\" must be greater than 0");
    EXPECT_USAGE(SRC ARCHIVE "buffer:\n  max_bytes: 20000000000GiB\n",
                 "zetl.yaml:8: buffer.max_bytes: size \"20000000000GiB\" is too large");
    EXPECT_USAGE(SRC "archive:\n  url: s3://bucket\n  s3:\n    part_size: 4MiB\n",
                 "zetl.yaml:8: archive.s3.part_size: size \"4MiB\" is below the minimum of 5 MiB");
    EXPECT_USAGE(SRC "archive:\n  url: s3://bucket\n  s3:\n    part_size: 6GiB\n",
                 "zetl.yaml:8: archive.s3.part_size: size \"6GiB\" is above the maximum");

    /* Identifiers. */
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  tenant_column: \"\"\n",
                 "zetl.yaml:8: transforms.tenant_column: must not be empty");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  tenant_column: "
                             "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\n",
                 "zetl.yaml:8: transforms.tenant_column: must be at most 63 bytes");
    /* zetl's own warehouse columns: every apply would fail on the clash. */
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  tenant_column: _zetl_lsn\n",
                 "zetl.yaml:8: transforms.tenant_column: \"_zetl_lsn\" starts with \"_zetl_\", "
                 "which is reserved for the columns zetl adds to warehouse tables");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  tenant_column: _ZETL_Tenant\n",
                 "zetl.yaml:8: transforms.tenant_column: \"_ZETL_Tenant\" starts with \"_zetl_\"");

    /* Cleaning rules. */
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - columns: [a]\n      trim: true\n"
                             "      drop: true\n",
                 "zetl.yaml:11: transforms.clean[0].drop: a rule that drops columns cannot also "
                 "clean them");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - columns: [a]\n      trim: true\n"
                             "    - columns: [b]\n      trim: false\n",
                 "zetl.yaml:11: transforms.clean[1]: rule has no action");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - columns: [a]\n      null_strings: []\n",
                 "zetl.yaml:9: transforms.clean[0]: rule has no action");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - trim: true\n",
                 "zetl.yaml:9: transforms.clean[0].columns: missing required key");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - columns: [\"[x\"]\n      trim: true\n",
                 "zetl.yaml:9: transforms.clean[0].columns[0]: invalid glob");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - columns: [a]\n      trim: \"true\"\n",
                 "zetl.yaml:10: transforms.clean[0].trim: expected true or false, got the quoted "
                 "string \"true\"");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - columns: [a]\n      trim: yes\n",
                 "zetl.yaml:10: transforms.clean[0].trim: expected true or false, got \"yes\"");
    EXPECT_USAGE(SRC ARCHIVE "transforms:\n  clean:\n    - columns: [a]\n      mask: md5\n",
                 "zetl.yaml:10: transforms.clean[0].mask: invalid value \"md5\" (expected one of "
                 "sha256)");

    /* Archive and S3. */
    EXPECT_USAGE(SRC "archive:\n  url: http://example.com/x\n",
                 "zetl.yaml:6: archive.url: unsupported url (scheme \"http\"; expected "
                 "file://PATH or s3://BUCKET[/PREFIX])");
    EXPECT_USAGE(SRC "archive:\n  url: /var/archive\n",
                 "zetl.yaml:6: archive.url: unsupported url");
    EXPECT_USAGE(SRC "archive:\n  url: file://\n",
                 "zetl.yaml:6: archive.url: file:// url has no path");
    EXPECT_USAGE(SRC "archive:\n  url: s3://\n",
                 "zetl.yaml:6: archive.url: invalid S3 bucket name \"\"");
    EXPECT_USAGE(SRC "archive:\n  url: s3://My_Bucket/p\n",
                 "zetl.yaml:6: archive.url: invalid S3 bucket name \"My_Bucket\"");
    EXPECT_USAGE(SRC "archive:\n  url: s3://bucket\n  s3:\n    endpoint: ftp://x\n",
                 "zetl.yaml:8: archive.s3.endpoint: expected an http:// or https:// url");
    EXPECT_USAGE(SRC "archive:\n  url: s3://bucket\n  s3:\n    endpoint: http://\n",
                 "zetl.yaml:8: archive.s3.endpoint: expected an http:// or https:// url");
    EXPECT_USAGE(SRC "archive:\n  url: s3://bucket\n  s3:\n    path_style: 1\n",
                 "zetl.yaml:8: archive.s3.path_style: expected true or false, got \"1\"");

    /* Warehouse. */
    EXPECT_USAGE(SRC "warehouse:\n  kind: mysql\n  dsn: x\n",
                 "zetl.yaml:6: warehouse.kind: invalid value \"mysql\" (expected one of postgres, "
                 "redshift)");
    EXPECT_USAGE(SRC "warehouse:\n  kind: postgres\n  dsn: x\n  deletes: archive\n",
                 "zetl.yaml:8: warehouse.deletes: invalid value \"archive\" (expected one of "
                 "hard, soft, history)");
    EXPECT_USAGE(SRC "warehouse:\n  kind: postgres\n  dsn: x\n  iam_role: arn:x\n",
                 "zetl.yaml:8: warehouse.iam_role: only valid when warehouse.kind is redshift");
    EXPECT_USAGE(SRC "warehouse:\n  kind: postgres\n  dsn: x\n  schema: \"\"\n",
                 "zetl.yaml:8: warehouse.schema: must not be empty");

    /* Top level. */
    EXPECT_USAGE(SRC ARCHIVE "log_level: verbose\n",
                 "zetl.yaml:7: log_level: invalid value \"verbose\" (expected one of debug, info, "
                 "log, warning, error)");

    /* Values are echoed escaped, and cut short. */
    EXPECT_USAGE(SRC ARCHIVE "log_level: \"a\\tb\\\"c\"\n",
                 "log_level: invalid value \"a\\x09b\\\"c\"");
}

static void test_mask_salt(void)
{
    const char *text =
        SRC ARCHIVE "transforms:\n  clean:\n    - columns: [a]\n      trim: true\n"
                    "    - columns: [email]\n      lower: true\n      mask: sha256\n";
    struct zetl_config *cfg;
    struct zetl_errbuf eb = {{0}};

    clear_env();
    EXPECT_USAGE(text, "zetl.yaml:11: transforms.clean[1].mask: masking requires the environment "
                       "variable ZETL_MASK_SALT");
    setenv("ZETL_MASK_SALT", "", 1);
    EXPECT_USAGE(text, "zetl.yaml:11: transforms.clean[1].mask: masking requires");
    setenv("ZETL_MASK_SALT", "very-secret-salt", 1);
    cfg = PARSE_OK(text);
    if (cfg != NULL) {
        CHECK(cfg->transforms.clean[1].mask == ZETL_MASK_SHA256);
        zetl_config_free(cfg);
    }
    /* The salt never appears in a message, even when another error follows. */
    cfg = NULL;
    CHECK(zetl_config_parse("zetl.yaml", "source: 1", 9, &cfg, &eb) == ZETL_ERR_USAGE);
    CHECK(strstr(eb.msg, "very-secret-salt") == NULL);
    clear_env();
}

static void test_env_overrides(void)
{
    struct zetl_config *cfg;
    const char *wh = SRC "warehouse:\n  kind: postgres\n  dsn: host=file-wh\n";
    const char *nodsn = "source:\n  tenants:\n    schemas: [a]\n"
                        "warehouse:\n  kind: redshift\n";

    clear_env();
    setenv("ZETL_SOURCE_DSN", "host=env-src password=x", 1);
    setenv("ZETL_WAREHOUSE_DSN", "host=env-wh", 1);
    cfg = PARSE_OK(wh);
    if (cfg != NULL) {
        CHECK_STR(cfg->source.dsn, "host=env-src password=x");
        CHECK_STR(cfg->warehouse.dsn, "host=env-wh");
        zetl_config_free(cfg);
    }
    /* With the env set, the file may leave both DSNs out. */
    cfg = PARSE_OK(nodsn);
    if (cfg != NULL) {
        CHECK_STR(cfg->source.dsn, "host=env-src password=x");
        CHECK_STR(cfg->warehouse.dsn, "host=env-wh");
        CHECK(cfg->warehouse.kind == ZETL_WH_REDSHIFT);
        zetl_config_free(cfg);
    }
    /* An empty variable counts as unset. */
    setenv("ZETL_SOURCE_DSN", "", 1);
    setenv("ZETL_WAREHOUSE_DSN", "", 1);
    cfg = PARSE_OK(wh);
    if (cfg != NULL) {
        CHECK_STR(cfg->source.dsn, "host=127.0.0.1 dbname=app");
        CHECK_STR(cfg->warehouse.dsn, "host=file-wh");
        zetl_config_free(cfg);
    }
    EXPECT_USAGE(nodsn, "zetl.yaml:1: source.dsn: missing required key");
    setenv("ZETL_SOURCE_DSN", "host=env-src", 1);
    EXPECT_USAGE(nodsn, "zetl.yaml:4: warehouse.dsn: missing required key");
    /* ZETL_WAREHOUSE_DSN alone does not make a warehouse. */
    setenv("ZETL_WAREHOUSE_DSN", "host=env-wh", 1);
    cfg = PARSE_OK(SRC ARCHIVE);
    if (cfg != NULL) {
        CHECK(cfg->warehouse.kind == ZETL_WH_NONE);
        CHECK(cfg->warehouse.dsn == NULL);
        zetl_config_free(cfg);
    }
    clear_env();
}

/* Writes `text` to a new file in `dir` with `mode`; returns the owned path. */
static char *secret_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    FILE *f;

    sprintf(path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
    CHECK(chmod(path, mode) == 0);
    return path;
}

/* Parses `text` and checks the DSNs; either may be NULL for "no warehouse". */
static void expect_dsns(const char *text, const char *src, const char *wh, int line)
{
    struct zetl_config *cfg = parse_ok(text, line);

    if (cfg == NULL)
        return;
    if (strcmp(cfg->source.dsn, src) == 0 &&
        (wh == NULL ? cfg->warehouse.dsn == NULL
                    : cfg->warehouse.dsn != NULL && strcmp(cfg->warehouse.dsn, wh) == 0)) {
        zetl_tap_passed++;
    } else {
        zetl_tap_failed++;
        fprintf(stderr, "%s:%d: got source.dsn %s, warehouse.dsn %s\n", __FILE__, line,
                cfg->source.dsn, cfg->warehouse.dsn ? cfg->warehouse.dsn : "(null)");
    }
    zetl_config_free(cfg);
}
#define EXPECT_DSNS(text, src, wh) expect_dsns((text), (src), (wh), __LINE__)

static void test_dsn_files(void)
{
    char dir[] = "/tmp/zetl-test-secrets-XXXXXX";
    char text[2048], msg[1024];
    struct zetl_config *cfg = NULL;
    struct zetl_errbuf eb = {{0}};
    char *src, *wh, *crlf, *other_r, *other_w, *group, *empty, *got = NULL;

    clear_env();
    CHECK(mkdtemp(dir) != NULL);
    src = secret_file(dir, "src", "host=file-src password=s3cret-src\n", 0600);
    wh = secret_file(dir, "wh", "host=file-wh password=s3cret-wh", 0400);
    crlf = secret_file(dir, "crlf", "host=crlf\r\n\n", 0600);
    group = secret_file(dir, "group", "host=group-ok\n", 0640);
    other_r = secret_file(dir, "other-r", "host=leak password=s3cret-other\n", 0604);
    other_w = secret_file(dir, "other-w", "host=leak password=s3cret-other\n", 0602);
    empty = secret_file(dir, "empty", "\n", 0600);

    /* The reader: trailing newlines stripped, mode checked, content never in messages. */
    CHECK(zetl_config_read_secret(src, &got, &eb) == ZETL_OK);
    CHECK_STR(got, "host=file-src password=s3cret-src");
    free(got);
    CHECK(zetl_config_read_secret(crlf, &got, &eb) == ZETL_OK);
    CHECK_STR(got, "host=crlf");
    free(got);
    CHECK(zetl_config_read_secret(group, &got, &eb) == ZETL_OK);
    free(got);
    got = (char *)1;
    CHECK(zetl_config_read_secret(other_r, &got, &eb) == ZETL_ERR_USAGE);
    CHECK(got == NULL);
    snprintf(msg, sizeof(msg), "secret file \"%s\" is accessible by other users (mode 0604)",
             other_r);
    CHECK(strstr(eb.msg, msg) != NULL);
    CHECK(strstr(eb.msg, "s3cret") == NULL);
    CHECK(zetl_config_read_secret(other_w, &got, &eb) == ZETL_ERR_USAGE);
    CHECK(strstr(eb.msg, "(mode 0602)") != NULL);
    CHECK(zetl_config_read_secret(empty, &got, &eb) == ZETL_ERR_USAGE);
    CHECK(strstr(eb.msg, "is empty") != NULL);
    CHECK(zetl_config_read_secret(dir, &got, &eb) == ZETL_ERR_USAGE);
    CHECK(strstr(eb.msg, "is not a regular file") != NULL);

    /* source.dsn_file and warehouse.dsn_file in the file. */
    snprintf(text, sizeof(text),
             "source:\n  dsn_file: %s\n  tenants:\n    schemas: [a]\n"
             "warehouse:\n  kind: postgres\n  dsn_file: \"%s\"\n",
             src, wh);
    EXPECT_DSNS(text, "host=file-src password=s3cret-src", "host=file-wh password=s3cret-wh");

    /* Precedence: ZETL_X_DSN > ZETL_X_DSN_FILE > x.dsn_file > x.dsn. */
    setenv("ZETL_SOURCE_DSN_FILE", crlf, 1);
    setenv("ZETL_WAREHOUSE_DSN_FILE", group, 1);
    EXPECT_DSNS(text, "host=crlf", "host=group-ok");
    EXPECT_DSNS(SRC "warehouse:\n  kind: postgres\n  dsn: host=inline\n", "host=crlf",
                "host=group-ok");
    setenv("ZETL_SOURCE_DSN", "host=env-src", 1);
    setenv("ZETL_WAREHOUSE_DSN", "host=env-wh", 1);
    EXPECT_DSNS(text, "host=env-src", "host=env-wh");
    /* A higher source wins without the lower file being read at all. */
    setenv("ZETL_SOURCE_DSN_FILE", other_r, 1);
    snprintf(text, sizeof(text),
             "source:\n  dsn_file: %s/missing\n  tenants:\n    schemas: [a]\n" ARCHIVE, dir);
    EXPECT_DSNS(text, "host=env-src", NULL);
    clear_env();
    snprintf(text, sizeof(text), "source:\n  dsn_file: %s\n  tenants:\n    schemas: [a]\n" ARCHIVE,
             src);
    setenv("ZETL_SOURCE_DSN_FILE", crlf, 1);
    EXPECT_DSNS(text, "host=crlf", NULL);
    setenv("ZETL_SOURCE_DSN_FILE", "", 1); /* empty counts as unset */
    EXPECT_DSNS(text, "host=file-src password=s3cret-src", NULL);
    EXPECT_DSNS(SRC ARCHIVE, "host=127.0.0.1 dbname=app", NULL);
    clear_env();

    /* Both keys in one section: refused, whatever the environment says. */
    snprintf(text, sizeof(text),
             "source:\n  dsn: host=x\n  tenants:\n    schemas: [a]\n  dsn_file: %s\n" ARCHIVE, src);
    EXPECT_USAGE(text, "zetl.yaml:5: source.dsn_file: give source.dsn or source.dsn_file, not "
                       "both (source.dsn is on line 2)");
    setenv("ZETL_SOURCE_DSN", "host=env-src", 1);
    EXPECT_USAGE(text, "zetl.yaml:5: source.dsn_file: give source.dsn or source.dsn_file");
    clear_env();
    snprintf(text, sizeof(text),
             SRC "warehouse:\n  kind: postgres\n  dsn_file: %s\n  dsn: host=y\n", wh);
    EXPECT_USAGE(text, "zetl.yaml:7: warehouse.dsn_file: give warehouse.dsn or "
                       "warehouse.dsn_file, not both (warehouse.dsn is on line 8)");

    /* World-accessible, missing and empty files: located errors naming the path. */
    snprintf(text, sizeof(text), "source:\n  tenants:\n    schemas: [a]\n  dsn_file: %s\n" ARCHIVE,
             other_r);
    snprintf(msg, sizeof(msg),
             "zetl.yaml:4: source.dsn_file: secret file \"%s\" is accessible by other users "
             "(mode 0604); refusing to use it",
             other_r);
    CHECK(zetl_config_parse("zetl.yaml", text, strlen(text), &cfg, &eb) == ZETL_ERR_USAGE);
    CHECK(cfg == NULL);
    CHECK(strstr(eb.msg, msg) != NULL);
    CHECK(strstr(eb.msg, "s3cret") == NULL);
    snprintf(text, sizeof(text), SRC "warehouse:\n  kind: postgres\n  dsn_file: %s/missing\n", dir);
    snprintf(msg, sizeof(msg),
             "zetl.yaml:7: warehouse.dsn_file: could not open secret file \"%s/missing\": No "
             "such file or directory",
             dir);
    EXPECT_USAGE(text, msg);
    snprintf(text, sizeof(text), "source:\n  dsn_file: %s\n  tenants:\n    schemas: [a]\n" ARCHIVE,
             empty);
    EXPECT_USAGE(text, "zetl.yaml:2: source.dsn_file: secret file");
    EXPECT_USAGE("source:\n  dsn_file: \"\"\n  tenants:\n    schemas: [a]\n" ARCHIVE,
                 "zetl.yaml:2: source.dsn_file: ");
    setenv("ZETL_WAREHOUSE_DSN_FILE", other_w, 1);
    snprintf(msg, sizeof(msg),
             "ZETL_WAREHOUSE_DSN_FILE: secret file \"%s\" is accessible by other users (mode "
             "0602)",
             other_w);
    EXPECT_USAGE(SRC "warehouse:\n  kind: postgres\n", msg);
    setenv("ZETL_WAREHOUSE_DSN_FILE", "/nonexistent/secret", 1);
    EXPECT_USAGE(SRC "warehouse:\n  kind: postgres\n",
                 "ZETL_WAREHOUSE_DSN_FILE: could not open secret file \"/nonexistent/secret\"");
    clear_env();

    char *files[] = {src, wh, crlf, group, other_r, other_w, empty};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        unlink(files[i]);
        free(files[i]);
    }
    rmdir(dir);
}

static void test_syntax_and_io(void)
{
    struct zetl_config *cfg = NULL;
    struct zetl_errbuf eb = {{0}};
    char *path;

    clear_env();
    path = fixture("bad-syntax.yaml");
    CHECK(zetl_config_load(path, &cfg, &eb) == ZETL_ERR_USAGE);
    CHECK(cfg == NULL);
    CHECK(strstr(eb.msg, "bad-syntax.yaml:4:") != NULL);
    CHECK(strstr(eb.msg, "invalid YAML: ") != NULL);
    free(path);

    EXPECT_USAGE("source:\n  dsn: \"unterminated\n",
                 "zetl.yaml:3:1: invalid YAML: found unexpected end of stream");
    EXPECT_USAGE("a: [1, 2\nb: 3\n", "invalid YAML: ");
    EXPECT_USAGE("a: *nope\n", "zetl.yaml:1:4: invalid YAML: found undefined alias");
    EXPECT_USAGE("a: b\n\xff\xfe\n", "zetl.yaml:2: invalid YAML: invalid leading UTF-8 octet");

    cfg = NULL;
    CHECK(zetl_config_load("/nonexistent/zetl.yaml", &cfg, &eb) == ZETL_ERR_IO);
    CHECK(cfg == NULL);
    CHECK_STR(eb.msg,
              "could not open config file \"/nonexistent/zetl.yaml\": No such file or directory");
    CHECK(zetl_config_load("/", &cfg, &eb) == ZETL_ERR_IO);
    CHECK(strstr(eb.msg, "could not read config file \"/\"") != NULL);

    zetl_config_free(NULL);
}

/* Every prefix of the full fixture parses or fails cleanly with a located message. */
static void test_truncations(void)
{
    char *path = fixture("full.yaml");
    FILE *f = fopen(path, "rb");
    char text[8192];
    size_t len = 0;
    int bad = 0;

    free(path);
    CHECK(f != NULL);
    if (f == NULL)
        return;
    len = fread(text, 1, sizeof(text), f);
    fclose(f);
    clear_env();
    setenv("ZETL_MASK_SALT", "pepper", 1);
    for (size_t n = 0; n <= len; n++) {
        struct zetl_config *cfg = NULL;
        struct zetl_errbuf eb = {{0}};
        enum zetl_err err = zetl_config_parse("zetl.yaml", text, n, &cfg, &eb);
        if (err == ZETL_OK) {
            zetl_config_free(cfg);
        } else if (err != ZETL_ERR_USAGE || cfg != NULL || strncmp(eb.msg, "zetl.yaml:", 10) != 0) {
            if (bad++ < 5)
                fprintf(stderr, "prefix %zu: error %d: %s\n", n, (int)err, eb.msg);
        }
    }
    CHECK(bad == 0);
    clear_env();
}

static void test_sizes(void)
{
    static const struct {
        const char *s;
        bool ok;
        uint64_t want;
    } cases[] = {
        {"64MiB", true, 64ull << 20},
        {"10MB", true, 10000000ull},
        {"512KiB", true, 512ull << 10},
        {"1GiB", true, 1ull << 30},
        {"1048576", true, 1048576ull},
        {"64M", true, 64ull << 20},
        {"512k", true, 512ull << 10},
        {"512K", true, 512ull << 10},
        {"2G", true, 2ull << 30},
        {"1TiB", true, 1ull << 40},
        {"3kB", true, 3000ull},
        {"3KB", true, 3000ull},
        {"7GB", true, 7000000000ull},
        {"100B", true, 100ull},
        {"64 MiB", true, 64ull << 20},
        {"+5", true, 5ull},
        {"18446744073709551615", true, UINT64_MAX},
        {"0", false, 0},
        {"0MiB", false, 0},
        {"-1", false, 0},
        {"-64MiB", false, 0},
        {"", false, 0},
        {"MiB", false, 0},
        {"12 apples", false, 0},
        {"1.5GiB", false, 0},
        {"64mib", false, 0},
        {"64 ", false, 0},
        {" 64", false, 0},
        {"64  MiB", false, 0},
        {"64MiBs", false, 0},
        {"18446744073709551616", false, 0},
        {"17179869184GiB", false, 0},
        {"99999999999999999999999999", false, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t got = 0;
        bool ok = zetl_config_parse_size(cases[i].s, &got);
        if (ok != cases[i].ok || (ok && got != cases[i].want)) {
            fprintf(stderr, "size \"%s\": got ok=%d %llu\n", cases[i].s, ok,
                    (unsigned long long)got);
        }
        CHECK(ok == cases[i].ok);
        if (ok && cases[i].ok)
            CHECK(got == cases[i].want);
    }
}

static void test_durations(void)
{
    static const struct {
        const char *s;
        bool ok;
        uint64_t want;
    } cases[] = {
        {"90s", true, 90000},
        {"45m", true, 2700000},
        {"12h", true, 43200000},
        {"30d", true, 2592000000ull},
        {"500ms", true, 500},
        {"0s", false, 0},
        {"30", false, 0},
        {"-5s", false, 0},
        {"", false, 0},
        {"d", false, 0},
        {"1.5h", false, 0},
        {"30 d", false, 0},
        {"30D", false, 0},
        {"30days", false, 0},
        {" 30d", false, 0},
        {"213503982335d", false, 0},
        {"99999999999999999999999s", false, 0},
    };
    struct zetl_config *cfg;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t got = 0;
        bool ok = zetl_config_parse_duration(cases[i].s, &got);
        if (ok != cases[i].ok || (ok && got != cases[i].want))
            fprintf(stderr, "duration \"%s\": got ok=%d %llu\n", cases[i].s, ok,
                    (unsigned long long)got);
        CHECK(ok == cases[i].ok);
        if (ok && cases[i].ok)
            CHECK(got == cases[i].want);
    }

    /* archive.retention and its companions: off by default. */
    clear_env();
    cfg = PARSE_OK(SRC ARCHIVE);
    if (cfg != NULL) {
        CHECK(cfg->archive.retention_ms == 0);
        CHECK(cfg->archive.retention_interval_ms == 600000);
        CHECK(!cfg->archive.retention_ignore_snapshot);
        zetl_config_free(cfg);
    }
    cfg = PARSE_OK(SRC ARCHIVE "  retention: 30d\n  retention_interval_ms: 250\n"
                               "  retention_ignore_snapshot: true\n");
    if (cfg != NULL) {
        CHECK(cfg->archive.retention_ms == 30ull * 86400 * 1000);
        CHECK(cfg->archive.retention_interval_ms == 250);
        CHECK(cfg->archive.retention_ignore_snapshot);
        zetl_config_free(cfg);
    }
    EXPECT_USAGE(SRC ARCHIVE "  retention: 30\n",
                 "zetl.yaml:7: archive.retention: invalid duration \"30\" (expected a number "
                 "with a unit");
    EXPECT_USAGE(SRC ARCHIVE "  retention: 2 weeks\n",
                 "zetl.yaml:7: archive.retention: invalid duration \"2 weeks\"");
    EXPECT_USAGE(SRC ARCHIVE "  retention: 0d\n",
                 "zetl.yaml:7: archive.retention: duration \"0d\" must be greater than 0");
    EXPECT_USAGE(SRC ARCHIVE "  retention: 500ms\n",
                 "zetl.yaml:7: archive.retention: duration \"500ms\" is below the minimum of "
                 "1000 ms");
    EXPECT_USAGE(SRC ARCHIVE "  retention: [1d]\n",
                 "zetl.yaml:7: archive.retention: expected a duration such as 30d, got a list");
    EXPECT_USAGE(SRC ARCHIVE "  retention_interval_ms: 10\n",
                 "zetl.yaml:7: archive.retention_interval_ms: must be between 100 and 86400000");
    EXPECT_USAGE(SRC ARCHIVE "  retention_ignore_snapshot: yes\n",
                 "zetl.yaml:7: archive.retention_ignore_snapshot: expected true or false");
    EXPECT_USAGE(SRC ARCHIVE "  retension: 30d\n",
                 "zetl.yaml:7: archive.retension: unknown key (did you mean archive.retention?)");
}

static void test_redact(void)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"host=h dbname=d", "host=h dbname=d"},
        {"host=h password=secret dbname=d", "host=h password=******** dbname=d"},
        {"password=secret", "password=********"},
        {"host=h password='with spaces' user=u", "host=h password=******** user=u"},
        {"host=h password='it\\'s \\\\ here' user=u", "host=h password=******** user=u"},
        {"host=h password = 'x' user=u", "host=h password = ******** user=u"},
        {"  host=h\tpassword=a\\ b  ", "  host=h\tpassword=********  "},
        {"host=h passwordx=keep", "host=h passwordx=keep"},
        {"host='pass word=x' user=u", "host='pass word=x' user=u"},
        {"host=h password='unterminated", "host=h ********"},
        {"host=h password", "host=h ********"},
        {"host=h junk", "host=h junk"},
        {"", ""},
        {"postgresql://user:secret@host:5432/db", "postgresql://user:********@host:5432/db"},
        {"postgres://user:secret@host/db?sslmode=require",
         "postgres://user:********@host/db?sslmode=require"},
        {"postgresql://user@host/db", "postgresql://user@host/db"},
        {"postgresql://host/db", "postgresql://host/db"},
        {"postgresql://user:@host/db", "postgresql://user:@host/db"},
        {"postgresql://u:p@ss@host/db", "postgresql://u:********@host/db"},
        {"postgresql://host/db?user=u&password=secret&sslmode=disable",
         "postgresql://host/db?user=u&password=********&sslmode=disable"},
        {"postgresql://host/db?password=secret", "postgresql://host/db?password=********"},
        {"postgresql:///db?host=/tmp", "postgresql:///db?host=/tmp"},
        {"dbname='postgresql://u:pw@h/d' connect_timeout=5",
         "dbname='postgresql://u:********@h/d' connect_timeout=5"},
        {"dbname='host=h password=pw' user=x", "dbname='host=h password=********' user=x"},
        {"dbname=app", "dbname=app"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = zetl_config_redact_dsn(cases[i].in);
        CHECK_STR(got, cases[i].want);
        free(got);
    }
    char *got = zetl_config_redact_dsn(NULL);
    CHECK_STR(got, "");
    free(got);
}

/* A libpq message about a DSN keeps saying what is wrong, without the password. */
static void test_redact_conn_error(void)
{
    static const struct {
        const char *dsn, *msg, *want;
    } cases[] = {
        /* The whole URI quoted. */
        {"postgresql://u:s3cret@[::1/db",
         "end of string reached when looking for matching \"]\" in IPv6 host address in URI: "
         "\"postgresql://u:s3cret@[::1/db\"\n",
         "end of string reached when looking for matching \"]\" in IPv6 host address in URI: "
         "\"postgresql://u:********@[::1/db\"\n"},
        /* The password alone, as written. */
        {"postgresql://u:s3c%zzret@127.0.0.1:1/db", "invalid percent-encoded token: \"s3c%zzret\"",
         "invalid percent-encoded token: \"********\""},
        /* Percent-decoded, and in the query. */
        {"postgresql://u:s3%63ret@h/db", "x s3cret y", "x ******** y"},
        {"postgresql://h/db?password=p%41ss&bogus", "p%41ss pAss \"bogus\"",
         "******** ******** \"bogus\""},
        /* Key/value: quoted, escaped, unescaped. */
        {"host=h password='it\\'s' port=x", "'it\\'s' it\\'s it's", "******** ******** ********"},
        /* libpq stopped where the redaction did too. */
        {"host=h password='s3cret", "\"password='s3cret\" s3cret", "\"********\" ********"},
        /* Nothing of the DSN: unchanged. */
        {"host=h password=pw",
         "connection to server at \"h\" (127.0.0.1), port 5432 failed: Connection refused",
         "connection to server at \"h\" (127.0.0.1), port 5432 failed: Connection refused"},
        {"host=h dbname=d", "invalid connection option \"bogus\" in \"host=h dbname=d\"",
         "invalid connection option \"bogus\" in \"host=h dbname=d\""},
        /* An empty password masks nothing and does not loop. */
        {"host=h password=''", "could not connect", "could not connect"},
        {"postgresql://u:@h/db?password=", "could not connect", "could not connect"},
        {NULL, "m", "m"},
        {"", "m", "m"},
        {"host=h password=pw", NULL, ""},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = zetl_config_redact_conn_error(cases[i].dsn, cases[i].msg);
        CHECK_STR(got, cases[i].want);
        free(got);
    }
}

/* Appends `n` copies of `item` to b. */
static void repeat(struct zetl_buf *b, const char *item, size_t n)
{
    for (size_t i = 0; i < n; i++)
        zetl_buf_puts(b, item);
}

#define BOMB_HEAD "source:\n  dsn: \"dbname=a\"\n  tenants:\n    schemas: "

/*
 * Expects the refusal of BOMB_HEAD, `first`, `item` n times, and a closing
 * bracket: the message contains `where` and `what`.
 */
static void expect_long_list(const char *first, const char *item, size_t n, const char *where,
                             const char *what)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, BOMB_HEAD);
    zetl_buf_puts(&b, first);
    repeat(&b, item, n);
    zetl_buf_puts(&b, "]\n" ARCHIVE);
    EXPECT_USAGE(b.data, where);
    EXPECT_USAGE(b.data, what);
    zetl_buf_release(&b);
}

/*
 * Alias bombs under known keys are refused while the document is read,
 * before any section copies what an alias names.  Each would otherwise
 * take gigabytes: 10^9 strings, or 2000 rules of 30000 columns.
 */
static void test_alias_bomb(void)
{
    struct zetl_config *cfg;
    struct zetl_buf b;

    /* Billion laughs: each anchored list holds ten aliases of the one before. */
    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, BOMB_HEAD);
    zetl_buf_puts(&b, "[&a [\"t\",\"t\",\"t\",\"t\",\"t\",\"t\",\"t\",\"t\",\"t\",\"t\"]");
    for (char c = 'b'; c <= 'i'; c++) {
        zetl_buf_printf(&b, ", &%c [", c);
        for (int i = 0; i < 10; i++)
            zetl_buf_printf(&b, "%s*%c", i ? "," : "", c - 1);
        zetl_buf_puts(&b, "]");
    }
    zetl_buf_puts(&b, "]\n" ARCHIVE);
    EXPECT_USAGE(b.data, "zetl.yaml:4:");
    EXPECT_USAGE(b.data, ": the document uses more than 1000 aliases once aliases are expanded");
    zetl_buf_release(&b);

    /* Quadratic: one long list of columns, named by rule after rule. */
    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, BOMB_HEAD);
    zetl_buf_puts(&b, "[\"t_*\"]\n  tables: &cols [a");
    repeat(&b, ",a", 29999);
    zetl_buf_puts(&b, "]\n" ARCHIVE
                      "transforms:\n  clean:\n    - &rule {columns: *cols, trim: true}\n");
    repeat(&b, "    - *rule\n", 2000);
    EXPECT_USAGE(b.data, "zetl.yaml:12:7: alias *rule: the document expands to more than 100000 "
                         "nodes");
    zetl_buf_release(&b);

    /* Many aliases of a small node. */
    expect_long_list("[&s \"t_*\"]\n  tables: [*s", ", *s", 1000, "zetl.yaml:5:",
                     ": alias *s: the document uses more than 1000 aliases once aliases are "
                     "expanded");

    /* An alias inside the node it names. */
    EXPECT_USAGE(SRC ARCHIVE "transforms: &t\n  clean:\n    - columns: *t\n",
                 "zetl.yaml:9:16: alias *t refers to a node that contains it");
    /* A plain document of many nodes. */
    expect_long_list("[t", ",t", 100000,
                     "zetl.yaml:4:", ": the document has more than 100000 nodes");

    /* Aliases within the limits still work, and mean what they name. */
    cfg = parse_ok(SRC "  tables: &t [users, orders]\n" ARCHIVE
                       "transforms:\n  clean:\n    - {columns: *t, trim: true}\n"
                       "    - {columns: *t, lower: true}\n",
                   __LINE__);
    if (cfg != NULL) {
        CHECK(cfg->source.tables.n == 2);
        CHECK(cfg->transforms.nclean == 2);
        CHECK(cfg->transforms.clean[1].columns.n == 2);
        CHECK_STR(cfg->transforms.clean[1].columns.items[1], "orders");
    }
    zetl_config_free(cfg);
}

/* The log section: format and level, and log.level beside log_level. */
static void test_log_section(void)
{
    static const char base[] = "source: {dsn: \"dbname=a\", tenants: {schemas: [t_*]}}\n"
                               "archive: {url: \"file://x\"}\n";
    char text[1024];
    struct zetl_config *cfg;

    snprintf(text, sizeof(text), "%slog: {format: json, level: warning}\n", base);
    if ((cfg = PARSE_OK(text)) != NULL) {
        CHECK(cfg->log_json);
        CHECK_STR(cfg->log_level, "warning");
        zetl_config_free(cfg);
    }
    snprintf(text, sizeof(text), "%slog:\n", base);
    if ((cfg = PARSE_OK(text)) != NULL) {
        CHECK(!cfg->log_json && cfg->log_level == NULL);
        zetl_config_free(cfg);
    }
    snprintf(text, sizeof(text), "%slog: {format: xml}\n", base);
    EXPECT_USAGE(text, "zetl.yaml:3: log.format");
    snprintf(text, sizeof(text), "%slog_level: info\nlog: {level: debug}\n", base);
    EXPECT_USAGE(text, "zetl.yaml:4: log.level: log_level is set too");
    snprintf(text, sizeof(text), "%slog: {colour: red}\n", base);
    EXPECT_USAGE(text, "log.colour");
}

/* The kafka section: defaults, lists, the keys zetl owns, bad values. */
static void test_kafka(void)
{
    static const char base[] = "source: {dsn: \"dbname=a\", tenants: {schemas: [t_*]}}\n";
    char text[2048];
    struct zetl_config *cfg;

    snprintf(text, sizeof(text), "%skafka: {brokers: \"h1:9092\"}\n", base);
    if ((cfg = PARSE_OK(text)) != NULL) {
        CHECK(cfg->kafka.enabled);
        CHECK_STR(cfg->kafka.brokers, "h1:9092");
        CHECK_STR(cfg->kafka.topic_prefix, "zetl");
        CHECK(!cfg->kafka.per_tenant);
        CHECK(cfg->kafka.format == ZETL_KAFKA_AVRO);
        CHECK(cfg->kafka.schema_registry == NULL);
        CHECK_STR(cfg->kafka.group, "zetl-loader");
        CHECK(cfg->kafka.tombstones);
        CHECK(cfg->kafka.partitions == 6);
        CHECK(cfg->kafka.replication_factor == -1);
        CHECK(cfg->kafka.nproperties == 0);
        /* Kafka alone is a destination. */
        CHECK(cfg->archive.url == NULL && cfg->warehouse.kind == ZETL_WH_NONE);
        zetl_config_free(cfg);
    }
    snprintf(text, sizeof(text),
             "%skafka:\n  brokers: [\"a:1\", \"b:2\"]\n  topic_prefix: app.cdc\n  topics: "
             "tenant_table\n  format: json\n  schema_registry: http://r:8081\n  group: g\n  "
             "tombstones: false\n  partitions: 3\n  replication_factor: 2\n  properties:\n    "
             "compression.type: zstd\n    linger.ms: 20\n",
             base);
    if ((cfg = PARSE_OK(text)) != NULL) {
        CHECK_STR(cfg->kafka.brokers, "a:1,b:2");
        CHECK_STR(cfg->kafka.topic_prefix, "app.cdc");
        CHECK(cfg->kafka.per_tenant);
        CHECK(cfg->kafka.format == ZETL_KAFKA_JSON);
        CHECK_STR(cfg->kafka.schema_registry, "http://r:8081");
        CHECK_STR(cfg->kafka.group, "g");
        CHECK(!cfg->kafka.tombstones);
        CHECK(cfg->kafka.partitions == 3 && cfg->kafka.replication_factor == 2);
        CHECK(cfg->kafka.nproperties == 2);
        CHECK_STR(cfg->kafka.properties[0], "compression.type");
        CHECK_STR(cfg->kafka.properties[1], "zstd");
        CHECK_STR(cfg->kafka.properties[3], "20");
        zetl_config_free(cfg);
    }
    snprintf(text, sizeof(text), "%skafka: {topic_prefix: x}\n", base);
    EXPECT_USAGE(text, "zetl.yaml:2: kafka.brokers: missing required key");
    snprintf(text, sizeof(text), "%skafka:\n", base);
    EXPECT_USAGE(text, "kafka.brokers: missing required key");
    snprintf(text, sizeof(text), "%skafka: {brokers: b, topic_prefix: \"a b\"}\n", base);
    EXPECT_USAGE(text, "kafka.topic_prefix: a Kafka topic name allows only");
    snprintf(text, sizeof(text), "%skafka: {brokers: b, format: protobuf}\n", base);
    EXPECT_USAGE(text, "kafka.format");
    snprintf(text, sizeof(text), "%skafka: {brokers: b, schema_registry: r:8081}\n", base);
    EXPECT_USAGE(text, "kafka.schema_registry: expected an http:// or https:// URL");
    snprintf(text, sizeof(text), "%skafka: {brokers: b, partitions: 0}\n", base);
    EXPECT_USAGE(text, "kafka.partitions");
    snprintf(text, sizeof(text),
             "%skafka:\n  brokers: b\n  properties:\n    transactional.id: mine\n", base);
    EXPECT_USAGE(text, "zetl.yaml:5: kafka.properties.transactional.id: zetl sets this itself");
    snprintf(text, sizeof(text), "%skafka:\n  brokers: b\n  properties:\n    linger.ms: [1]\n",
             base);
    EXPECT_USAGE(text, "kafka.properties.linger.ms: expected a string");
    snprintf(text, sizeof(text), "%skafka: {brokers: b, topics: tenant}\n", base);
    EXPECT_USAGE(text, "kafka.topics");
    snprintf(text, sizeof(text), "%skafka: {brokers: b, bootstrap: c}\n", base);
    EXPECT_USAGE(text, "kafka.bootstrap");
}

int main(void)
{
    test_full();
    test_kafka();
    test_log_section();
    test_example();
    test_defaults();
    test_structure_errors();
    test_value_errors();
    test_mask_salt();
    test_env_overrides();
    test_dsn_files();
    test_syntax_and_io();
    test_truncations();
    test_sizes();
    test_durations();
    test_redact();
    test_redact_conn_error();
    test_alias_bomb();
    return zetl_tap_done();
}
