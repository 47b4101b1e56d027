/*
 * The sections of the configuration file, one parser each (source,
 * transforms, buffer, archive, warehouse, then the root that ties them
 * together): defaults, environment overrides, DSNs from secret files and
 * the checks that need more than one value's type, such as slot names,
 * bucket names and which destinations are configured.
 */
#include "config/config_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/mem.h"

/* The environment variable's value when set and non-empty, else NULL. */
static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* Slot and publication names get "_<N>" appended (zetl_0), so stay well inside NAMEDATALEN. */
static bool slot_name_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 50)
        return false;
    if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

/*
 * Resolves SECTION.dsn into *out (owned), the first found winning: env
 * `env` (ZETL_SOURCE_DSN), the file named by env `env`_FILE, the file named
 * by SECTION.dsn_file, SECTION.dsn.  A config that gives both keys is
 * refused even when the environment wins: it is wrong wherever it is used.  A lower
 * source is not read once a higher one is set, so a stale path left in the
 * file does not stop a deployment that sets the environment.  *out stays
 * NULL when nothing gives a DSN; *line is then the section's line.
 */
static enum zetl_err resolve_dsn(struct cfg_parse *cp, const struct cfg_map *m, const char *section,
                                 const char *env, char **out, int *line)
{
    char key[ZETL_CONFIG_PATH_MAX], key_file[ZETL_CONFIG_PATH_MAX], env_file[64];
    struct zetl_errbuf eb;
    yaml_node_t *x, *xf;
    int xl, xfl;
    char *path = NULL;
    const char *v;
    enum zetl_err err;

    *out = NULL;
    zetl_config_child_path(key, section, "dsn");
    zetl_config_child_path(key_file, section, "dsn_file");
    snprintf(env_file, sizeof(env_file), "%s_FILE", env);
    x = zetl_config_map_get_value(cp, m, "dsn", &xl);
    xf = zetl_config_map_get_value(cp, m, "dsn_file", &xfl);
    *line = xl;
    if (x != NULL && xf != NULL)
        return zetl_config_err(cp, xfl, key_file, "give %s or %s, not both (%s is on line %d)", key,
                               key_file, key, xl);

    if ((v = env_nonempty(env)) != NULL) {
        *out = zetl_strdup(v);
        return ZETL_OK;
    }
    if ((v = env_nonempty(env_file)) != NULL) {
        if (zetl_config_read_secret(v, out, &eb) != ZETL_OK)
            return zetl_err_set(cp->eb, ZETL_ERR_USAGE, "%s: %s", env_file, eb.msg);
        return ZETL_OK;
    }
    if (xf != NULL) {
        if ((err = zetl_config_get_string(cp, xf, xfl, key_file, true, &path)) != ZETL_OK)
            return err;
        err = zetl_config_read_secret(path, out, &eb);
        free(path);
        if (err != ZETL_OK)
            return zetl_config_err(cp, xfl, key_file, "%s", eb.msg);
        return ZETL_OK;
    }
    if (x != NULL)
        return zetl_config_get_string(cp, x, xl, key, true, out);
    return ZETL_OK;
}

static enum zetl_err parse_source(struct cfg_parse *cp, yaml_node_t *v, int line,
                                  struct zetl_config *cfg)
{
    static const char *const keys[] = {
        "dsn",         "dsn_file",           "tenants",  "tables",           "slot",
        "slot_groups", "receive_timeout_ms", "snapshot", "snapshot_workers", NULL};
    static const char *const tkeys[] = {"schemas", "refresh_ms", NULL};
    static const char *const snapshot_modes[] = {"initial", "never", NULL};
    struct cfg_map m, tm;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;
    char q[ZETL_CONFIG_QUOTE_SIZE];

    if (v == NULL)
        return zetl_config_err(cp, line, "source", "missing required key");
    if ((err = zetl_config_map_open(cp, v, line, "source", keys, &m)) != ZETL_OK)
        return err;

    if ((err = resolve_dsn(cp, &m, "source", "ZETL_SOURCE_DSN", &cfg->source.dsn, &xl)) != ZETL_OK)
        return err;
    if (cfg->source.dsn == NULL)
        return zetl_config_err(cp, xl, "source.dsn",
                               "missing required key (or set source.dsn_file, ZETL_SOURCE_DSN or "
                               "ZETL_SOURCE_DSN_FILE)");

    x = zetl_config_map_get_value(cp, &m, "tenants", &xl);
    if (x != NULL && x->type == YAML_SEQUENCE_NODE)
        return zetl_config_err(cp, xl, "source.tenants",
                               "expected a mapping, got a list (write tenants: {schemas: [...]})");
    if ((err = zetl_config_map_open(cp, x, xl, "source.tenants", tkeys, &tm)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &tm, "schemas", &xl);
    if (x == NULL)
        return zetl_config_err(cp, xl, "source.tenants.schemas", "missing required key");
    if ((err = zetl_config_get_strlist(cp, x, xl, "source.tenants.schemas", true, true,
                                       &cfg->source.schemas)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &tm, "refresh_ms", &xl);
    cfg->source.refresh_ms = 5000;
    if (x != NULL && (err = zetl_config_get_uint(cp, x, xl, "source.tenants.refresh_ms", 0,
                                                 86400000, &cfg->source.refresh_ms)) != ZETL_OK)
        return err;

    x = zetl_config_map_get_value(cp, &m, "tables", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_strlist(cp, x, xl, "source.tables", true, true,
                                           &cfg->source.tables)) != ZETL_OK)
            return err;
    } else {
        zetl_strlist_add(&cfg->source.tables, "*");
    }

    x = zetl_config_map_get_value(cp, &m, "slot", &xl);
    if (x != NULL) {
        char *slot = NULL;
        if ((err = zetl_config_get_string(cp, x, xl, "source.slot", true, &slot)) != ZETL_OK)
            return err;
        if (!slot_name_valid(slot)) {
            err = zetl_config_err(
                cp, xl, "source.slot",
                "invalid name %s (lower-case letters, digits and _, not starting with a "
                "digit, at most 50 characters)",
                zetl_config_quote(q, sizeof(q), slot));
            free(slot);
            return err;
        }
        cfg->source.slot = slot;
    } else {
        cfg->source.slot = zetl_strdup("zetl");
    }

    x = zetl_config_map_get_value(cp, &m, "slot_groups", &xl);
    cfg->source.slot_groups = 1;
    if (x != NULL) {
        uint64_t n;
        if ((err = zetl_config_get_uint(cp, x, xl, "source.slot_groups", 1, 64, &n)) != ZETL_OK)
            return err;
        cfg->source.slot_groups = (int)n;
    }

    x = zetl_config_map_get_value(cp, &m, "receive_timeout_ms", &xl);
    cfg->source.receive_timeout_ms = 60000;
    /* At least 100 ms: the half-way ping needs a round trip; at most a day. */
    if (x != NULL &&
        (err = zetl_config_get_uint(cp, x, xl, "source.receive_timeout_ms", 100, 86400000,
                                    &cfg->source.receive_timeout_ms)) != ZETL_OK)
        return err;

    x = zetl_config_map_get_value(cp, &m, "snapshot", &xl);
    cfg->source.snapshot = true;
    if (x != NULL) {
        int k;
        if ((err = zetl_config_get_enum(cp, x, xl, "source.snapshot", snapshot_modes, &k)) !=
            ZETL_OK)
            return err;
        cfg->source.snapshot = k == 0;
    }
    x = zetl_config_map_get_value(cp, &m, "snapshot_workers", &xl);
    cfg->source.snapshot_workers = 2;
    if (x != NULL) {
        uint64_t n;
        if ((err = zetl_config_get_uint(cp, x, xl, "source.snapshot_workers", 1, 64, &n)) !=
            ZETL_OK)
            return err;
        cfg->source.snapshot_workers = (int)n;
    }
    return ZETL_OK;
}

static enum zetl_err parse_clean_rule(struct cfg_parse *cp, yaml_node_t *v, const char *path,
                                      struct zetl_clean_rule *rule)
{
    static const char *const keys[] = {"columns", "null_strings", "trim", "lower",
                                       "mask",    "drop",         NULL};
    static const char *const masks[] = {"sha256", NULL};
    char kpath[ZETL_CONFIG_PATH_MAX];
    struct cfg_map m;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;

    rule->line = zetl_config_node_line(v);
    if (v->type != YAML_MAPPING_NODE)
        return zetl_config_err(cp, rule->line, path, "expected a mapping (a cleaning rule), got %s",
                               zetl_config_node_kind(v));
    if ((err = zetl_config_map_open(cp, v, rule->line, path, keys, &m)) != ZETL_OK)
        return err;

    zetl_config_child_path(kpath, path, "columns");
    x = zetl_config_map_get_value(cp, &m, "columns", &xl);
    if (x == NULL)
        return zetl_config_err(cp, xl, kpath, "missing required key");
    if ((err = zetl_config_get_strlist(cp, x, xl, kpath, true, true, &rule->columns)) != ZETL_OK)
        return err;

    zetl_config_child_path(kpath, path, "null_strings");
    x = zetl_config_map_get_value(cp, &m, "null_strings", &xl);
    if (x != NULL && (err = zetl_config_get_strlist(cp, x, xl, kpath, false, false,
                                                    &rule->null_strings)) != ZETL_OK)
        return err;

    zetl_config_child_path(kpath, path, "trim");
    x = zetl_config_map_get_value(cp, &m, "trim", &xl);
    if (x != NULL && (err = zetl_config_get_bool(cp, x, xl, kpath, &rule->trim)) != ZETL_OK)
        return err;

    zetl_config_child_path(kpath, path, "lower");
    x = zetl_config_map_get_value(cp, &m, "lower", &xl);
    if (x != NULL && (err = zetl_config_get_bool(cp, x, xl, kpath, &rule->lower)) != ZETL_OK)
        return err;

    zetl_config_child_path(kpath, path, "mask");
    x = zetl_config_map_get_value(cp, &m, "mask", &xl);
    if (x != NULL) {
        int k;
        if ((err = zetl_config_get_enum(cp, x, xl, kpath, masks, &k)) != ZETL_OK)
            return err;
        rule->mask = ZETL_MASK_SHA256;
        /* The salt stays in the environment; it is never copied or printed. */
        if (env_nonempty("ZETL_MASK_SALT") == NULL)
            return zetl_config_err(
                cp, rule->line, kpath,
                "masking requires the environment variable ZETL_MASK_SALT to be set "
                "and non-empty");
    }

    zetl_config_child_path(kpath, path, "drop");
    x = zetl_config_map_get_value(cp, &m, "drop", &xl);
    if (x != NULL && (err = zetl_config_get_bool(cp, x, xl, kpath, &rule->drop)) != ZETL_OK)
        return err;

    bool acts = rule->null_strings.n > 0 || rule->trim || rule->lower || rule->mask;
    if (rule->drop && acts)
        return zetl_config_err(
            cp, xl, kpath,
            "a rule that drops columns cannot also clean them (use a separate rule)");
    if (!rule->drop && !acts)
        return zetl_config_err(cp, rule->line, path,
                               "rule has no action (set null_strings, trim, lower, mask or drop)");
    return ZETL_OK;
}

static enum zetl_err parse_transforms(struct cfg_parse *cp, yaml_node_t *v, int line,
                                      struct zetl_config *cfg)
{
    static const char *const keys[] = {"tenant_column", "clean", NULL};
    char rpath[ZETL_CONFIG_PATH_MAX];
    struct cfg_map m;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;

    if ((err = zetl_config_map_open(cp, v, line, "transforms", keys, &m)) != ZETL_OK)
        return err;

    x = zetl_config_map_get_value(cp, &m, "tenant_column", &xl);
    if (x != NULL) {
        char *col = NULL;
        if ((err = zetl_config_get_string(cp, x, xl, "transforms.tenant_column", true, &col)) !=
            ZETL_OK)
            return err;
        cfg->transforms.tenant_column = col;
        if (strlen(col) > 63)
            return zetl_config_err(cp, xl, "transforms.tenant_column",
                                   "must be at most 63 bytes (a PostgreSQL identifier), got %zu",
                                   strlen(col));
        /*
         * The warehouse tables' own columns (_zetl_lsn, _zetl_synced_at, ...)
         * start so; any case, as Redshift folds names to lower case.
         */
        if (strncasecmp(col, "_zetl_", 6) == 0) {
            char q[ZETL_CONFIG_QUOTE_SIZE];
            return zetl_config_err(cp, xl, "transforms.tenant_column",
                                   "%s starts with \"_zetl_\", which is reserved for the columns "
                                   "zetl adds to warehouse tables (_zetl_lsn, _zetl_synced_at, "
                                   "...)",
                                   zetl_config_quote(q, sizeof(q), col));
        }
    } else {
        cfg->transforms.tenant_column = zetl_strdup("tenant_id");
    }

    x = zetl_config_map_get_value(cp, &m, "clean", &xl);
    if (x == NULL)
        return ZETL_OK;
    if (x->type != YAML_SEQUENCE_NODE)
        return zetl_config_err(cp, xl, "transforms.clean", "expected a list of rules, got %s",
                               zetl_config_node_kind(x));
    size_t n = (size_t)(x->data.sequence.items.top - x->data.sequence.items.start);
    cfg->transforms.clean = zetl_calloc(n, sizeof(*cfg->transforms.clean));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(&cp->doc, x->data.sequence.items.start[i]);
        zetl_config_item_path(rpath, "transforms.clean", i);
        /* Count the rule first so zetl_config_free releases what it holds on failure. */
        cfg->transforms.nclean = i + 1;
        if ((err = parse_clean_rule(cp, item, rpath, &cfg->transforms.clean[i])) != ZETL_OK)
            return err;
    }
    return ZETL_OK;
}

static enum zetl_err parse_buffer(struct cfg_parse *cp, yaml_node_t *v, int line,
                                  struct zetl_config *cfg)
{
    static const char *const keys[] = {"dir", "max_rows", "max_bytes", "max_age_ms", NULL};
    struct cfg_map m;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;

    cfg->buffer.max_rows = 100000;
    cfg->buffer.max_bytes = 64 * ZETL_CONFIG_MIB;
    cfg->buffer.max_age_ms = 1000;
    if ((err = zetl_config_map_open(cp, v, line, "buffer", keys, &m)) != ZETL_OK)
        return err;

    x = zetl_config_map_get_value(cp, &m, "dir", &xl);
    cfg->buffer.dir_line = xl;
    if (x != NULL) {
        if ((err = zetl_config_get_string(cp, x, xl, "buffer.dir", true, &cfg->buffer.dir)) !=
            ZETL_OK)
            return err;
    } else {
        cfg->buffer.dir = zetl_strdup("./zetl-data");
    }
    x = zetl_config_map_get_value(cp, &m, "max_rows", &xl);
    if (x != NULL && (err = zetl_config_get_uint(cp, x, xl, "buffer.max_rows", 1, UINT64_MAX,
                                                 &cfg->buffer.max_rows)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &m, "max_bytes", &xl);
    if (x != NULL && (err = zetl_config_get_size(cp, x, xl, "buffer.max_bytes", 1, UINT64_MAX,
                                                 &cfg->buffer.max_bytes)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &m, "max_age_ms", &xl);
    if (x != NULL && (err = zetl_config_get_uint(cp, x, xl, "buffer.max_age_ms", 1, UINT64_MAX,
                                                 &cfg->buffer.max_age_ms)) != ZETL_OK)
        return err;
    return ZETL_OK;
}

/* S3 bucket names: 3..63 of [a-z0-9.-], starting and ending with a letter or digit. */
static bool bucket_valid(const char *b, size_t n)
{
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '.' && c != '-')
            return false;
        if ((i == 0 || i == n - 1) && !alnum)
            return false;
    }
    return true;
}

static enum zetl_err check_archive_url(struct cfg_parse *cp, int line, const char *url)
{
    char q[ZETL_CONFIG_QUOTE_SIZE];

    if (strncmp(url, "file://", 7) == 0) {
        if (url[7] == '\0')
            return zetl_config_err(cp, line, "archive.url", "file:// url has no path");
        return ZETL_OK;
    }
    if (strncmp(url, "s3://", 5) == 0) {
        const char *b = url + 5;
        size_t n = strcspn(b, "/");
        if (!bucket_valid(b, n)) {
            char bucket[72];
            snprintf(bucket, sizeof(bucket), "%.*s", (int)(n > 64 ? 64 : n), b);
            return zetl_config_err(
                cp, line, "archive.url",
                "invalid S3 bucket name %s (3 to 63 characters of a-z, 0-9, '.' and '-')",
                zetl_config_quote(q, sizeof(q), bucket));
        }
        return ZETL_OK;
    }
    /* Only the scheme is echoed: a url may carry credentials. */
    size_t sl = strcspn(url, ":/@");
    char scheme[40];
    snprintf(scheme, sizeof(scheme), "%.*s", (int)(sl > 32 ? 32 : sl), url);
    return zetl_config_err(
        cp, line, "archive.url",
        "unsupported url (scheme %s; expected file://PATH or s3://BUCKET[/PREFIX])",
        zetl_config_quote(q, sizeof(q), scheme));
}

static enum zetl_err parse_archive(struct cfg_parse *cp, yaml_node_t *v, int line,
                                   struct zetl_config *cfg)
{
    static const char *const keys[] = {
        "url", "s3", "retention", "retention_interval_ms", "retention_ignore_snapshot", NULL};
    static const char *const s3keys[] = {"region", "endpoint", "path_style", "part_size", NULL};
    struct cfg_map m, sm;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;

    cfg->archive.s3.part_size = 8 * ZETL_CONFIG_MIB;
    cfg->archive.retention_interval_ms = 600000;
    if ((err = zetl_config_map_open(cp, v, line, "archive", keys, &m)) != ZETL_OK)
        return err;
    if (v == NULL) {
        const char *region = env_nonempty("AWS_REGION");
        cfg->archive.s3.region = zetl_strdup(region ? region : "us-east-1");
        return ZETL_OK;
    }

    x = zetl_config_map_get_value(cp, &m, "url", &xl);
    if (x == NULL)
        return zetl_config_err(cp, xl, "archive.url", "missing required key");
    if ((err = zetl_config_get_string(cp, x, xl, "archive.url", true, &cfg->archive.url)) !=
        ZETL_OK)
        return err;
    if ((err = check_archive_url(cp, xl, cfg->archive.url)) != ZETL_OK)
        return err;

    /* At least a second: below that a batch would go while the warehouse still loads it. */
    x = zetl_config_map_get_value(cp, &m, "retention", &xl);
    if (x != NULL && (err = zetl_config_get_duration(cp, x, xl, "archive.retention", 1000,
                                                     UINT64_C(36500) * 86400000,
                                                     &cfg->archive.retention_ms)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &m, "retention_interval_ms", &xl);
    if (x != NULL &&
        (err = zetl_config_get_uint(cp, x, xl, "archive.retention_interval_ms", 100, 86400000,
                                    &cfg->archive.retention_interval_ms)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &m, "retention_ignore_snapshot", &xl);
    if (x != NULL &&
        (err = zetl_config_get_bool(cp, x, xl, "archive.retention_ignore_snapshot",
                                    &cfg->archive.retention_ignore_snapshot)) != ZETL_OK)
        return err;

    x = zetl_config_map_get_value(cp, &m, "s3", &xl);
    if ((err = zetl_config_map_open(cp, x, xl, "archive.s3", s3keys, &sm)) != ZETL_OK)
        return err;

    x = zetl_config_map_get_value(cp, &sm, "region", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_string(cp, x, xl, "archive.s3.region", true,
                                          &cfg->archive.s3.region)) != ZETL_OK)
            return err;
    } else {
        const char *region = env_nonempty("AWS_REGION");
        cfg->archive.s3.region = zetl_strdup(region ? region : "us-east-1");
    }

    x = zetl_config_map_get_value(cp, &sm, "endpoint", &xl);
    if (x != NULL) {
        char *ep = NULL;
        if ((err = zetl_config_get_string(cp, x, xl, "archive.s3.endpoint", true, &ep)) != ZETL_OK)
            return err;
        cfg->archive.s3.endpoint = ep;
        const char *host = strncmp(ep, "http://", 7) == 0    ? ep + 7
                           : strncmp(ep, "https://", 8) == 0 ? ep + 8
                                                             : NULL;
        if (host == NULL || host[0] == '\0' || host[0] == '/')
            return zetl_config_err(cp, xl, "archive.s3.endpoint",
                                   "expected an http:// or https:// url with a host");
        cfg->archive.s3.path_style = true;
    }

    x = zetl_config_map_get_value(cp, &sm, "path_style", &xl);
    if (x != NULL && (err = zetl_config_get_bool(cp, x, xl, "archive.s3.path_style",
                                                 &cfg->archive.s3.path_style)) != ZETL_OK)
        return err;

    /* S3 multipart: parts other than the last must be 5 MiB..5 GiB. */
    x = zetl_config_map_get_value(cp, &sm, "part_size", &xl);
    if (x != NULL && (err = zetl_config_get_size(cp, x, xl, "archive.s3.part_size",
                                                 5 * ZETL_CONFIG_MIB, 5 * 1024 * ZETL_CONFIG_MIB,
                                                 &cfg->archive.s3.part_size)) != ZETL_OK)
        return err;
    return ZETL_OK;
}

static enum zetl_err parse_warehouse(struct cfg_parse *cp, yaml_node_t *v, int line,
                                     struct zetl_config *cfg)
{
    static const char *const keys[] = {"kind",    "dsn",      "dsn_file", "schema",
                                       "deletes", "iam_role", NULL};
    static const char *const kinds[] = {"postgres", "redshift", NULL};
    static const char *const deletes[] = {"hard", "soft", "history", NULL};
    struct cfg_map m;
    yaml_node_t *x;
    int xl, k;
    enum zetl_err err;

    cfg->warehouse.kind = ZETL_WH_NONE;
    cfg->warehouse.deletes = ZETL_DELETES_HARD;
    if ((err = zetl_config_map_open(cp, v, line, "warehouse", keys, &m)) != ZETL_OK)
        return err;
    if (v == NULL)
        return ZETL_OK;

    x = zetl_config_map_get_value(cp, &m, "kind", &xl);
    if (x == NULL)
        return zetl_config_err(cp, xl, "warehouse.kind",
                               "missing required key (postgres or redshift)");
    if ((err = zetl_config_get_enum(cp, x, xl, "warehouse.kind", kinds, &k)) != ZETL_OK)
        return err;
    cfg->warehouse.kind = k == 0 ? ZETL_WH_POSTGRES : ZETL_WH_REDSHIFT;

    if ((err = resolve_dsn(cp, &m, "warehouse", "ZETL_WAREHOUSE_DSN", &cfg->warehouse.dsn, &xl)) !=
        ZETL_OK)
        return err;
    if (cfg->warehouse.dsn == NULL)
        return zetl_config_err(
            cp, xl, "warehouse.dsn",
            "missing required key (or set warehouse.dsn_file, ZETL_WAREHOUSE_DSN or "
            "ZETL_WAREHOUSE_DSN_FILE)");

    x = zetl_config_map_get_value(cp, &m, "schema", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_string(cp, x, xl, "warehouse.schema", true,
                                          &cfg->warehouse.schema)) != ZETL_OK)
            return err;
        if (strlen(cfg->warehouse.schema) > 63)
            return zetl_config_err(cp, xl, "warehouse.schema",
                                   "must be at most 63 bytes (a PostgreSQL identifier), got %zu",
                                   strlen(cfg->warehouse.schema));
    } else {
        cfg->warehouse.schema = zetl_strdup("zetl_raw");
    }

    x = zetl_config_map_get_value(cp, &m, "deletes", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_enum(cp, x, xl, "warehouse.deletes", deletes, &k)) != ZETL_OK)
            return err;
        cfg->warehouse.deletes = k == 0   ? ZETL_DELETES_HARD
                                 : k == 1 ? ZETL_DELETES_SOFT
                                          : ZETL_DELETES_HISTORY;
    }

    x = zetl_config_map_get_value(cp, &m, "iam_role", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_string(cp, x, xl, "warehouse.iam_role", true,
                                          &cfg->warehouse.iam_role)) != ZETL_OK)
            return err;
        if (cfg->warehouse.kind != ZETL_WH_REDSHIFT)
            return zetl_config_err(cp, xl, "warehouse.iam_role",
                                   "only valid when warehouse.kind is redshift");
    }
    return ZETL_OK;
}

/* log: {format: text | json, level: ...}; log.level is log_level's other spelling. */
static enum zetl_err parse_log(struct cfg_parse *cp, yaml_node_t *v, int line,
                               struct zetl_config *cfg)
{
    static const char *const keys[] = {"format", "level", NULL};
    static const char *const formats[] = {"text", "json", NULL};
    static const char *const levels[] = {"debug", "info", "log", "warning", "error", NULL};
    struct cfg_map m;
    yaml_node_t *x;
    int xl, k;
    enum zetl_err err;

    if ((err = zetl_config_map_open(cp, v, line, "log", keys, &m)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &m, "format", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_enum(cp, x, xl, "log.format", formats, &k)) != ZETL_OK)
            return err;
        cfg->log_json = k == 1;
    }
    x = zetl_config_map_get_value(cp, &m, "level", &xl);
    if (x != NULL) {
        if (cfg->log_level != NULL)
            return zetl_config_err(cp, xl, "log.level",
                                   "log_level is set too: keep one of the two");
        if ((err = zetl_config_get_enum(cp, x, xl, "log.level", levels, &k)) != ZETL_OK)
            return err;
        cfg->log_level = zetl_strdup(levels[k]);
    }
    return ZETL_OK;
}

enum zetl_err zetl_config_parse_root(struct cfg_parse *cp, yaml_node_t *root,
                                     struct zetl_config *cfg)
{
    static const char *const keys[] = {"source", "transforms", "buffer",    "archive", "warehouse",
                                       "kafka",  "log",        "log_level", NULL};
    static const char *const levels[] = {"debug", "info", "log", "warning", "error", NULL};
    struct cfg_map m;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;

    if (root != NULL && root->type != YAML_MAPPING_NODE && !zetl_config_is_null(root))
        return zetl_config_err(cp, zetl_config_node_line(root), "(top level)",
                               "expected a mapping, got %s", zetl_config_node_kind(root));
    if ((err = zetl_config_map_open(cp, root, 1, "", keys, &m)) != ZETL_OK)
        return err;

    x = zetl_config_map_get_value(cp, &m, "source", &xl);
    if ((err = parse_source(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &m, "transforms", &xl);
    if ((err = parse_transforms(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &m, "buffer", &xl);
    if ((err = parse_buffer(cp, x, xl, cfg)) != ZETL_OK)
        return err;

    /* A present but empty section ("archive:") counts as configured, so it must be complete. */
    x = zetl_config_map_get(cp, &m, "archive", &xl);
    if ((err = parse_archive(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    /* Likewise "warehouse:" alone: it then misses warehouse.kind. */
    x = zetl_config_map_get(cp, &m, "warehouse", &xl);
    if ((err = parse_warehouse(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    x = zetl_config_map_get(cp, &m, "kafka", &xl);
    if (x != NULL && (err = zetl_config_parse_kafka(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    if (cfg->archive.url == NULL && cfg->warehouse.kind == ZETL_WH_NONE && !cfg->kafka.enabled)
        return zetl_config_err(cp, 1, "archive.url",
                               "no destination configured (set archive.url, add a warehouse or a "
                               "kafka section, or several)");

    x = zetl_config_map_get_value(cp, &m, "log_level", &xl);
    if (x != NULL) {
        int k;
        if ((err = zetl_config_get_enum(cp, x, xl, "log_level", levels, &k)) != ZETL_OK)
            return err;
        cfg->log_level = zetl_strdup(levels[k]);
    }
    x = zetl_config_map_get(cp, &m, "log", &xl);
    if (x != NULL && (err = parse_log(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    return ZETL_OK;
}
