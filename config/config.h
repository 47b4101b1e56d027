/* The validated, immutable configuration: YAML file plus environment overrides. */
#ifndef ZETL_CONFIG_H
#define ZETL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/strlist.h"

enum zetl_mask_kind {
    ZETL_MASK_NONE = 0,
    ZETL_MASK_SHA256, /* hex sha256 of salt || value; salt from ZETL_MASK_SALT */
};

/* One entry of transforms.clean; rules apply in file order. */
struct zetl_clean_rule {
    struct zetl_strlist columns;      /* globs on "table.column" or "column" */
    struct zetl_strlist null_strings; /* values that become NULL (exact match, after trim) */
    bool trim;                        /* strip leading/trailing ASCII white space */
    bool lower;                       /* ASCII/UTF-8-safe lower-casing of A-Z */
    enum zetl_mask_kind mask;
    bool drop; /* remove the column from the output entirely */
    int line;  /* line of the rule in the config file, for messages */
};

enum zetl_wh_kind {
    ZETL_WH_NONE = 0,
    ZETL_WH_POSTGRES,
    ZETL_WH_REDSHIFT,
};

enum zetl_kafka_format {
    ZETL_KAFKA_AVRO = 0,
    ZETL_KAFKA_JSON,
};

enum zetl_wh_deletes {
    ZETL_DELETES_HARD = 0,
    ZETL_DELETES_SOFT,
    ZETL_DELETES_HISTORY,
};

struct zetl_config {
    char *path; /* owned: the file this came from */

    struct {
        char *dsn;                   /* owned; see zetl_config_load for where it comes from */
        struct zetl_strlist schemas; /* source.tenants.schemas */
        struct zetl_strlist tables;  /* source.tables; default ["*"] */
        char *slot;                  /* owned; default "zetl" */
        int slot_groups;             /* default 1; 1..64 */
        uint64_t receive_timeout_ms; /* default 60000; a silent replication connection is
                                      * dropped and reconnected after this long */
        bool snapshot;               /* source.snapshot: initial (default, true) | never */
        int snapshot_workers;        /* default 2; 1..64 connections copying tables */
        uint64_t refresh_ms;         /* source.tenants.refresh_ms, default 5000; 0: no
                                      * live discovery of new tenants and tables */
    } source;

    struct {
        char *tenant_column;           /* owned; default "tenant_id" */
        struct zetl_clean_rule *clean; /* owned array */
        size_t nclean;
    } transforms;

    struct {
        char *dir;           /* owned; default "./zetl-data" */
        int dir_line;        /* line of buffer.dir (of the buffer section, or 1, when unset) */
        uint64_t max_rows;   /* default 100000 */
        uint64_t max_bytes;  /* default 64 MiB */
        uint64_t max_age_ms; /* default 1000 */
    } buffer;

    struct {
        char *url; /* owned; NULL when no archive; "file://..." or "s3://bucket/prefix" */
        struct {
            char *region;       /* owned; default "us-east-1" or AWS_REGION */
            char *endpoint;     /* owned or NULL */
            bool path_style;    /* default: true when endpoint is set, else false */
            uint64_t part_size; /* default 8 MiB, min 5 MiB */
        } s3;
        /*
         * archive.retention: batches whose last commit is older than this and
         * that every sink applied are removed (docs/operations.md); 0 (the
         * default): kept for ever.
         */
        uint64_t retention_ms;
        uint64_t retention_interval_ms; /* default 600000: time between retention passes */
        bool retention_ignore_snapshot; /* default false: keep what a replay from the last
                                         * snapshot needs */
    } archive;

    struct {
        enum zetl_wh_kind kind;       /* ZETL_WH_NONE when the section is absent */
        char *dsn;                    /* owned; see zetl_config_load */
        char *schema;                 /* owned; default "zetl_raw" */
        enum zetl_wh_deletes deletes; /* default hard */
        char *iam_role;               /* owned or NULL; redshift only */
    } warehouse;

    struct {
        bool enabled;                  /* the section is present */
        char *brokers;                 /* owned: bootstrap servers, comma-separated */
        char *topic_prefix;            /* owned; default "zetl" */
        bool per_tenant;               /* kafka.topics: table (default) | tenant_table */
        enum zetl_kafka_format format; /* default avro */
        char *schema_registry;         /* owned URL or NULL: single-object encoding */
        char *group;                   /* owned; default "zetl-loader" (zetl load) */
        bool tombstones;               /* default true: a null-valued message after a delete */
        int partitions;                /* default 6: of the topics zetl creates */
        int replication_factor;        /* default -1: the broker's default */
        /* kafka.properties, passed to librdkafka as they are: name, value, name, ... */
        char **properties; /* owned strings, 2 * nproperties */
        size_t nproperties;
    } kafka;

    bool log_json;   /* log.format: json (one JSON object per line); default text */
    char *log_level; /* owned or NULL: "debug" | "info" | "log" | "warning" | "error" */
};

/*
 * Parses and validates `path`.  On success *out is an owned config (free with
 * zetl_config_free).  On failure returns ZETL_ERR_USAGE with
 * "FILE:LINE: KEY: what is wrong" in eb (ZETL_ERR_IO when the file cannot be read).
 * The DSNs are resolved here, first found wins: ZETL_SOURCE_DSN, the file named
 * by ZETL_SOURCE_DSN_FILE, the file named by source.dsn_file, source.dsn (and
 * likewise ZETL_WAREHOUSE_DSN[_FILE], warehouse.dsn_file, warehouse.dsn).
 */
enum zetl_err zetl_config_load(const char *path, struct zetl_config **out, struct zetl_errbuf *eb);
/* Same, from a string; `name` stands in for the file name in messages. */
enum zetl_err zetl_config_parse(const char *name, const char *text, size_t len,
                                struct zetl_config **out, struct zetl_errbuf *eb);
void zetl_config_free(struct zetl_config *cfg);

/* Parses "64MiB", "10MB", "512k", "1048576" into bytes; false when malformed. */
bool zetl_config_parse_size(const char *s, uint64_t *out);

/*
 * Parses a duration "<digits><unit>" with unit ms, s, m, h or d ("90s",
 * "45m", "12h", "30d") into milliseconds; false when malformed, zero or too
 * large.
 */
bool zetl_config_parse_duration(const char *s, uint64_t *ms);

/*
 * Reads the secret in the file at `path` (trailing newlines stripped) into
 * *out (owned).  Refuses, with ZETL_ERR_USAGE and a message naming the path
 * but never the content: a file that cannot be opened or read, that is not a
 * regular file, whose mode gives other users any access (mode & 007), that
 * is empty, larger than 64 KiB or holds a NUL byte.
 */
enum zetl_err zetl_config_read_secret(const char *path, char **out, struct zetl_errbuf *eb);

/*
 * Copies a libpq conninfo string with any password value replaced by "********",
 * for logs.  Returns owned memory.
 */
char *zetl_config_redact_dsn(const char *dsn);

/*
 * Copies `msg`, libpq's message about connecting with `dsn` (either may be
 * NULL), with `dsn` replaced by its redacted form and every password found
 * in it, as written, unescaped or percent-decoded, replaced by "********":
 * libpq quotes a connection string it cannot parse, or the piece of it it
 * stumbled on.  A short password masks its every occurrence, wanted or not.
 * Returns owned memory.
 */
char *zetl_config_redact_conn_error(const char *dsn, const char *msg);

#endif
