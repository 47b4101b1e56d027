/*
 * YAML configuration file -> one validated struct zetl_config.
 *
 * The file is loaded with libyaml's document API and walked section by
 * section.  Every problem is reported as "FILE:LINE: KEY: what is wrong" with
 * KEY the dotted path of the offending key, so a user can go straight to it.
 * Unknown and duplicate keys are errors at every level: a misspelt key that
 * silently falls back to a default is worse than a refusal to start.
 * Secrets (DSNs) can come from the environment instead of the file.
 */
#include "config/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "common/buf.h"
#include "common/glob.h"
#include "common/mem.h"

#define CONFIG_MAX_FILE (16u * 1024 * 1024)
#define CONFIG_PATH_MAX 256
#define MIB (1024ull * 1024)

/* State of one parse: the loaded document and where errors go. */
struct cfg_parse {
    const char *name; /* borrowed: file name for messages */
    yaml_document_t doc;
    struct zetl_errbuf *eb; /* borrowed */
};

static enum zetl_err perr(struct cfg_parse *cp, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reports "NAME:LINE: KEY: message" as a usage error. */
static enum zetl_err perr(struct cfg_parse *cp, int line, const char *key, const char *fmt, ...)
{
    char msg[ZETL_ERRBUF_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return zetl_err_set(cp->eb, ZETL_ERR_USAGE, "%s:%d: %s: %s", cp->name, line, key, msg);
}

/*
 * Writes `s` into `dst` as a double-quoted string with " \ and control bytes
 * escaped, cut short with "..." so one absurd value cannot fill the message.
 * Returns dst.
 */
static const char *quote(char *dst, size_t size, const char *s)
{
    size_t o = 0;
    size_t limit = size - 6; /* room for `..."` and NUL */

    dst[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (o + 4 >= limit) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (*p == '"' || *p == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(dst + o, size - o, "\\x%02x", *p);
        } else {
            dst[o++] = (char)*p;
        }
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}

#define QUOTE_SIZE 96

static int node_line(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_plain(const yaml_node_t *n)
{
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* YAML's null: an empty or ~/null plain scalar ("key:" with nothing after it). */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || !is_plain(n))
        return false;
    const char *v = scalar(n);
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* "a mapping", "a list", "null" or "a string": what the user wrote instead. */
static const char *node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_SCALAR_NODE:
        return is_null(n) ? "null" : "a string";
    default:
        return "nothing";
    }
}

/* "parent.key" into dst (CONFIG_PATH_MAX bytes); a very long path is cut short. */
static void child_path(char *dst, const char *parent, const char *key)
{
    size_t o = 0;

    for (const char *p = parent; *p && o < CONFIG_PATH_MAX - 1; p++)
        dst[o++] = *p;
    if (parent[0] != '\0' && o < CONFIG_PATH_MAX - 1)
        dst[o++] = '.';
    for (const char *p = key; *p && o < CONFIG_PATH_MAX - 1; p++)
        dst[o++] = *p;
    dst[o] = '\0';
}

static void item_path(char *dst, const char *parent, size_t i)
{
    snprintf(dst, CONFIG_PATH_MAX, "%s[%zu]", parent, i);
}

/* Edit distance, for "did you mean"; long keys are not worth comparing. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[65];

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/*
 * A mapping node with its known keys checked.  `node` is NULL when the
 * section is absent or null, which reads as an empty mapping.
 */
struct cfg_map {
    yaml_node_t *node;
    int line; /* line of the key that holds the mapping (1 for the root) */
};

/*
 * Checks that `node` (the value of `path`, found on `line`) is a mapping whose
 * keys are all in `known` and unique.  A null value counts as empty.
 */
static enum zetl_err map_open(struct cfg_parse *cp, yaml_node_t *node, int line, const char *path,
                              const char *const *known, struct cfg_map *map)
{
    char kpath[CONFIG_PATH_MAX];
    char q[QUOTE_SIZE];

    map->node = NULL;
    map->line = line;
    if (node == NULL || is_null(node))
        return ZETL_OK;
    if (node->type != YAML_MAPPING_NODE)
        return perr(cp, line, path[0] ? path : "(top level)", "expected a mapping, got %s",
                    node_kind(node));
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(&cp->doc, pair->key);
        if (k->type != YAML_SCALAR_NODE || is_null(k))
            return perr(cp, node_line(k), path[0] ? path : "(top level)",
                        "keys must be strings, got %s", node_kind(k));
        const char *name = scalar(k);
        if (strlen(name) != k->data.scalar.length)
            return perr(cp, node_line(k), path[0] ? path : "(top level)",
                        "key contains a NUL byte");
        child_path(kpath, path, name);

        bool found = false;
        const char *best = NULL;
        size_t best_d = SIZE_MAX;
        for (const char *const *kn = known; *kn != NULL; kn++) {
            if (strcmp(*kn, name) == 0) {
                found = true;
                break;
            }
            size_t d = edit_distance(*kn, name);
            if (d < best_d) {
                best_d = d;
                best = *kn;
            }
        }
        if (!found) {
            /* A key with control bytes is echoed escaped, never raw. */
            bool clean = true;
            for (const unsigned char *c = (const unsigned char *)name; *c; c++)
                if (*c < 0x20 || *c == 0x7f || *c == '"')
                    clean = false;
            const char *shown = clean ? kpath : quote(q, sizeof(q), kpath);
            if (best != NULL && best_d <= 2 && best_d < strlen(name)) {
                char sugg[CONFIG_PATH_MAX];
                child_path(sugg, path, best);
                return perr(cp, node_line(k), shown, "unknown key (did you mean %s?)", sugg);
            }
            return perr(cp, node_line(k), shown, "unknown key");
        }
        for (yaml_node_pair_t *prev = node->data.mapping.pairs.start; prev < pair; prev++) {
            yaml_node_t *pk = yaml_document_get_node(&cp->doc, prev->key);
            if (strcmp(scalar(pk), name) == 0)
                return perr(cp, node_line(k), kpath, "duplicate key (first set on line %d)",
                            node_line(pk));
        }
    }
    map->node = node;
    return ZETL_OK;
}

/* The value of `key` in `map` or NULL; *line gets the key's line (the map's when absent). */
static yaml_node_t *map_get(struct cfg_parse *cp, const struct cfg_map *map, const char *key,
                            int *line)
{
    *line = map->line;
    if (map->node == NULL)
        return NULL;
    for (yaml_node_pair_t *pair = map->node->data.mapping.pairs.start;
         pair < map->node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(&cp->doc, pair->key);
        if (strcmp(scalar(k), key) == 0) {
            *line = node_line(k);
            return yaml_document_get_node(&cp->doc, pair->value);
        }
    }
    return NULL;
}

/* Like map_get, but a null value ("key:" alone) reads as absent. */
static yaml_node_t *map_get_value(struct cfg_parse *cp, const struct cfg_map *map, const char *key,
                                  int *line)
{
    yaml_node_t *v = map_get(cp, map, key, line);

    return v != NULL && is_null(v) ? NULL : v;
}

/* Copies a non-null scalar; *out is owned by the caller. */
static enum zetl_err get_string(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                bool nonempty, char **out)
{
    if (v->type != YAML_SCALAR_NODE || is_null(v))
        return perr(cp, line, path, "expected a string, got %s", node_kind(v));
    if (strlen(scalar(v)) != v->data.scalar.length)
        return perr(cp, line, path, "must not contain NUL bytes");
    if (nonempty && scalar(v)[0] == '\0')
        return perr(cp, line, path, "must not be empty");
    *out = zetl_strdup(scalar(v));
    return ZETL_OK;
}

/* Booleans are plain true/false only: a quoted "true" is a string, not a bool. */
static enum zetl_err get_bool(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                              bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE"};
    static const char *const no[] = {"false", "False", "FALSE"};
    char q[QUOTE_SIZE];

    if (v->type != YAML_SCALAR_NODE || is_null(v))
        return perr(cp, line, path, "expected true or false, got %s", node_kind(v));
    if (!is_plain(v))
        return perr(cp, line, path, "expected true or false, got the quoted string %s",
                    quote(q, sizeof(q), scalar(v)));
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(scalar(v), yes[i]) == 0) {
            *out = true;
            return ZETL_OK;
        }
        if (strcmp(scalar(v), no[i]) == 0) {
            *out = false;
            return ZETL_OK;
        }
    }
    return perr(cp, line, path, "expected true or false, got %s", quote(q, sizeof(q), scalar(v)));
}

/* A plain decimal integer in [min, max]. */
static enum zetl_err get_uint(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                              uint64_t min, uint64_t max, uint64_t *out)
{
    char q[QUOTE_SIZE];
    uint64_t n = 0;

    if (v->type != YAML_SCALAR_NODE || is_null(v))
        return perr(cp, line, path, "expected an integer, got %s", node_kind(v));
    const char *s = scalar(v);
    if (!is_plain(v))
        return perr(cp, line, path, "expected an integer, got the quoted string %s",
                    quote(q, sizeof(q), s));
    const char *p = s;
    if (*p == '+')
        p++;
    if (*p == '\0')
        return perr(cp, line, path, "expected an integer, got %s", quote(q, sizeof(q), s));
    if (s[0] == '-' && s[1] >= '0' && s[1] <= '9')
        goto range;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return perr(cp, line, path, "expected an integer, got %s", quote(q, sizeof(q), s));
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return perr(cp, line, path, "integer %s is too large", quote(q, sizeof(q), s));
        n = n * 10 + d;
    }
    if (n < min || n > max)
        goto range;
    *out = n;
    return ZETL_OK;

range:
    if (max == UINT64_MAX && min == 1)
        return perr(cp, line, path, "must be greater than 0, got %s", quote(q, sizeof(q), s));
    if (max == UINT64_MAX)
        return perr(cp, line, path, "must be at least %llu, got %s", (unsigned long long)min,
                    quote(q, sizeof(q), s));
    return perr(cp, line, path, "must be between %llu and %llu, got %s", (unsigned long long)min,
                (unsigned long long)max, quote(q, sizeof(q), s));
}

enum size_result {
    SIZE_OK,
    SIZE_MALFORMED,
    SIZE_NOT_POSITIVE,
    SIZE_OVERFLOW,
};

/* "<digits>[ ]<unit>" with KiB/MiB/GiB/TiB and k/K/M/G/T 1024-based, kB/KB/MB/GB/TB 1000-based. */
static enum size_result size_parse(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"B", 1},
        {"k", 1024ull},
        {"K", 1024ull},
        {"M", 1024ull * 1024},
        {"G", 1024ull * 1024 * 1024},
        {"T", 1024ull * 1024 * 1024 * 1024},
        {"KiB", 1024ull},
        {"MiB", 1024ull * 1024},
        {"GiB", 1024ull * 1024 * 1024},
        {"TiB", 1024ull * 1024 * 1024 * 1024},
        {"kB", 1000ull},
        {"KB", 1000ull},
        {"MB", 1000ull * 1000},
        {"GB", 1000ull * 1000 * 1000},
        {"TB", 1000ull * 1000 * 1000 * 1000},
    };
    const char *p = s;
    uint64_t n = 0;
    bool overflow = false;

    if (*p == '-')
        return p[1] >= '0' && p[1] <= '9' ? SIZE_NOT_POSITIVE : SIZE_MALFORMED;
    if (*p == '+')
        p++;
    if (*p < '0' || *p > '9')
        return SIZE_MALFORMED;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            n = n * 10 + d;
    }
    if (*p == ' ')
        p++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit) != 0)
            continue;
        if (p > s && p[-1] == ' ' && units[i].unit[0] == '\0')
            return SIZE_MALFORMED; /* trailing space */
        if (overflow || (n != 0 && n > UINT64_MAX / units[i].mult))
            return SIZE_OVERFLOW;
        if (n == 0)
            return SIZE_NOT_POSITIVE;
        *out = n * units[i].mult;
        return SIZE_OK;
    }
    return SIZE_MALFORMED;
}

bool zetl_config_parse_size(const char *s, uint64_t *out)
{
    return size_parse(s, out) == SIZE_OK;
}

/* A size (string or integer) in [min, max] bytes. */
static enum zetl_err get_size(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                              uint64_t min, uint64_t max, uint64_t *out)
{
    char q[QUOTE_SIZE];
    uint64_t n = 0;

    if (v->type != YAML_SCALAR_NODE || is_null(v))
        return perr(cp, line, path, "expected a size such as 64MiB, got %s", node_kind(v));
    quote(q, sizeof(q), scalar(v));
    switch (size_parse(scalar(v), &n)) {
    case SIZE_OK:
        break;
    case SIZE_MALFORMED:
        return perr(cp, line, path,
                    "invalid size %s (expected a number with an optional unit such as 64MiB)", q);
    case SIZE_NOT_POSITIVE:
        return perr(cp, line, path, "size %s must be greater than 0", q);
    case SIZE_OVERFLOW:
        return perr(cp, line, path, "size %s is too large", q);
    }
    if (n < min)
        return perr(cp, line, path, "size %s is below the minimum of %llu MiB", q,
                    (unsigned long long)(min / MIB));
    if (n > max)
        return perr(cp, line, path, "size %s is above the maximum of %llu MiB", q,
                    (unsigned long long)(max / MIB));
    *out = n;
    return ZETL_OK;
}

/* One of `names`; *out gets its index. */
static enum zetl_err get_enum(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                              const char *const *names, int *out)
{
    char q[QUOTE_SIZE];
    char list[256];
    size_t o = 0;

    list[0] = '\0';
    for (int i = 0; names[i] != NULL; i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", names[i]);
    if (v->type != YAML_SCALAR_NODE || is_null(v))
        return perr(cp, line, path, "expected one of %s, got %s", list, node_kind(v));
    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(scalar(v), names[i]) == 0) {
            *out = i;
            return ZETL_OK;
        }
    }
    return perr(cp, line, path, "invalid value %s (expected one of %s)",
                quote(q, sizeof(q), scalar(v)), list);
}

void zetl_strlist_release(struct zetl_strlist *sl)
{
    for (size_t i = 0; i < sl->n; i++)
        free(sl->items[i]);
    free(sl->items);
    sl->items = NULL;
    sl->n = 0;
}

static void strlist_push(struct zetl_strlist *sl, const char *s)
{
    sl->items = zetl_realloc(sl->items, (sl->n + 1) * sizeof(*sl->items));
    sl->items[sl->n++] = zetl_strdup(s);
}

/*
 * A list of strings into `out` (which must be empty); with `globs` each item
 * must be a valid glob, with `nonempty` the list must have an item.
 */
static enum zetl_err get_strlist(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                 bool globs, bool nonempty, struct zetl_strlist *out)
{
    char ipath[CONFIG_PATH_MAX];
    char q[QUOTE_SIZE];
    enum zetl_err err = ZETL_OK;

    if (v->type != YAML_SEQUENCE_NODE)
        return perr(cp, line, path, "expected a list of strings, got %s", node_kind(v));
    if (nonempty && v->data.sequence.items.top == v->data.sequence.items.start)
        return perr(cp, line, path, "must not be an empty list");
    size_t i = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *item = yaml_document_get_node(&cp->doc, *it);
        item_path(ipath, path, i);
        if (item->type != YAML_SCALAR_NODE || is_null(item)) {
            err = perr(cp, node_line(item), ipath, "expected a string, got %s", node_kind(item));
            goto fail;
        }
        if (strlen(scalar(item)) != item->data.scalar.length) {
            err = perr(cp, node_line(item), ipath, "must not contain NUL bytes");
            goto fail;
        }
        if (globs && !zetl_glob_valid(scalar(item))) {
            err = perr(cp, node_line(item), ipath,
                       "invalid glob %s (empty, unbalanced '[' or trailing backslash)",
                       quote(q, sizeof(q), scalar(item)));
            goto fail;
        }
        strlist_push(out, scalar(item));
    }
    return ZETL_OK;

fail:
    zetl_strlist_release(out);
    return err;
}

/* The environment variable's value when set and non-empty, else NULL. */
static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* Slot and publication names get "_g<N>" appended, so stay well inside NAMEDATALEN. */
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

static enum zetl_err parse_source(struct cfg_parse *cp, yaml_node_t *v, int line,
                                  struct zetl_config *cfg)
{
    static const char *const keys[] = {
        "dsn", "tenants", "tables", "slot", "slot_groups", "receive_timeout_ms", NULL};
    static const char *const tkeys[] = {"schemas", NULL};
    struct cfg_map m, tm;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;
    char q[QUOTE_SIZE];

    if (v == NULL)
        return perr(cp, line, "source", "missing required key");
    if ((err = map_open(cp, v, line, "source", keys, &m)) != ZETL_OK)
        return err;

    const char *env = env_nonempty("ZETL_SOURCE_DSN");
    x = map_get_value(cp, &m, "dsn", &xl);
    if (x != NULL) {
        char *dsn = NULL;
        if ((err = get_string(cp, x, xl, "source.dsn", true, &dsn)) != ZETL_OK)
            return err;
        cfg->source.dsn = dsn;
    }
    if (env != NULL) {
        free(cfg->source.dsn);
        cfg->source.dsn = zetl_strdup(env);
    } else if (cfg->source.dsn == NULL) {
        return perr(cp, xl, "source.dsn", "missing required key (or set ZETL_SOURCE_DSN)");
    }

    x = map_get_value(cp, &m, "tenants", &xl);
    if (x != NULL && x->type == YAML_SEQUENCE_NODE)
        return perr(cp, xl, "source.tenants",
                    "expected a mapping, got a list (write tenants: {schemas: [...]})");
    if ((err = map_open(cp, x, xl, "source.tenants", tkeys, &tm)) != ZETL_OK)
        return err;
    x = map_get_value(cp, &tm, "schemas", &xl);
    if (x == NULL)
        return perr(cp, xl, "source.tenants.schemas", "missing required key");
    if ((err = get_strlist(cp, x, xl, "source.tenants.schemas", true, true,
                           &cfg->source.schemas)) != ZETL_OK)
        return err;

    x = map_get_value(cp, &m, "tables", &xl);
    if (x != NULL) {
        if ((err = get_strlist(cp, x, xl, "source.tables", true, true, &cfg->source.tables)) !=
            ZETL_OK)
            return err;
    } else {
        strlist_push(&cfg->source.tables, "*");
    }

    x = map_get_value(cp, &m, "slot", &xl);
    if (x != NULL) {
        char *slot = NULL;
        if ((err = get_string(cp, x, xl, "source.slot", true, &slot)) != ZETL_OK)
            return err;
        if (!slot_name_valid(slot)) {
            err = perr(cp, xl, "source.slot",
                       "invalid name %s (lower-case letters, digits and _, not starting with a "
                       "digit, at most 50 characters)",
                       quote(q, sizeof(q), slot));
            free(slot);
            return err;
        }
        cfg->source.slot = slot;
    } else {
        cfg->source.slot = zetl_strdup("zetl");
    }

    x = map_get_value(cp, &m, "slot_groups", &xl);
    cfg->source.slot_groups = 1;
    if (x != NULL) {
        uint64_t n;
        if ((err = get_uint(cp, x, xl, "source.slot_groups", 1, 64, &n)) != ZETL_OK)
            return err;
        cfg->source.slot_groups = (int)n;
    }

    x = map_get_value(cp, &m, "receive_timeout_ms", &xl);
    cfg->source.receive_timeout_ms = 60000;
    /* At least 100 ms: the half-way ping needs a round trip; at most a day. */
    if (x != NULL && (err = get_uint(cp, x, xl, "source.receive_timeout_ms", 100, 86400000,
                                     &cfg->source.receive_timeout_ms)) != ZETL_OK)
        return err;
    return ZETL_OK;
}

static enum zetl_err parse_clean_rule(struct cfg_parse *cp, yaml_node_t *v, const char *path,
                                      struct zetl_clean_rule *rule)
{
    static const char *const keys[] = {"columns", "null_strings", "trim", "lower",
                                       "mask",    "drop",         NULL};
    static const char *const masks[] = {"sha256", NULL};
    char kpath[CONFIG_PATH_MAX];
    struct cfg_map m;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;

    rule->line = node_line(v);
    if (v->type != YAML_MAPPING_NODE)
        return perr(cp, rule->line, path, "expected a mapping (a cleaning rule), got %s",
                    node_kind(v));
    if ((err = map_open(cp, v, rule->line, path, keys, &m)) != ZETL_OK)
        return err;

    child_path(kpath, path, "columns");
    x = map_get_value(cp, &m, "columns", &xl);
    if (x == NULL)
        return perr(cp, xl, kpath, "missing required key");
    if ((err = get_strlist(cp, x, xl, kpath, true, true, &rule->columns)) != ZETL_OK)
        return err;

    child_path(kpath, path, "null_strings");
    x = map_get_value(cp, &m, "null_strings", &xl);
    if (x != NULL &&
        (err = get_strlist(cp, x, xl, kpath, false, false, &rule->null_strings)) != ZETL_OK)
        return err;

    child_path(kpath, path, "trim");
    x = map_get_value(cp, &m, "trim", &xl);
    if (x != NULL && (err = get_bool(cp, x, xl, kpath, &rule->trim)) != ZETL_OK)
        return err;

    child_path(kpath, path, "lower");
    x = map_get_value(cp, &m, "lower", &xl);
    if (x != NULL && (err = get_bool(cp, x, xl, kpath, &rule->lower)) != ZETL_OK)
        return err;

    child_path(kpath, path, "mask");
    x = map_get_value(cp, &m, "mask", &xl);
    if (x != NULL) {
        int k;
        if ((err = get_enum(cp, x, xl, kpath, masks, &k)) != ZETL_OK)
            return err;
        rule->mask = ZETL_MASK_SHA256;
        /* The salt stays in the environment; it is never copied or printed. */
        if (env_nonempty("ZETL_MASK_SALT") == NULL)
            return perr(cp, rule->line, kpath,
                        "masking requires the environment variable ZETL_MASK_SALT to be set "
                        "and non-empty");
    }

    child_path(kpath, path, "drop");
    x = map_get_value(cp, &m, "drop", &xl);
    if (x != NULL && (err = get_bool(cp, x, xl, kpath, &rule->drop)) != ZETL_OK)
        return err;

    bool acts = rule->null_strings.n > 0 || rule->trim || rule->lower || rule->mask;
    if (rule->drop && acts)
        return perr(cp, xl, kpath,
                    "a rule that drops columns cannot also clean them (use a separate rule)");
    if (!rule->drop && !acts)
        return perr(cp, rule->line, path,
                    "rule has no action (set null_strings, trim, lower, mask or drop)");
    return ZETL_OK;
}

static enum zetl_err parse_transforms(struct cfg_parse *cp, yaml_node_t *v, int line,
                                      struct zetl_config *cfg)
{
    static const char *const keys[] = {"tenant_column", "clean", NULL};
    char rpath[CONFIG_PATH_MAX];
    struct cfg_map m;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;

    if ((err = map_open(cp, v, line, "transforms", keys, &m)) != ZETL_OK)
        return err;

    x = map_get_value(cp, &m, "tenant_column", &xl);
    if (x != NULL) {
        char *col = NULL;
        if ((err = get_string(cp, x, xl, "transforms.tenant_column", true, &col)) != ZETL_OK)
            return err;
        cfg->transforms.tenant_column = col;
        if (strlen(col) > 63)
            return perr(cp, xl, "transforms.tenant_column",
                        "must be at most 63 bytes (a PostgreSQL identifier), got %zu", strlen(col));
    } else {
        cfg->transforms.tenant_column = zetl_strdup("tenant_id");
    }

    x = map_get_value(cp, &m, "clean", &xl);
    if (x == NULL)
        return ZETL_OK;
    if (x->type != YAML_SEQUENCE_NODE)
        return perr(cp, xl, "transforms.clean", "expected a list of rules, got %s", node_kind(x));
    size_t n = (size_t)(x->data.sequence.items.top - x->data.sequence.items.start);
    cfg->transforms.clean = zetl_calloc(n, sizeof(*cfg->transforms.clean));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(&cp->doc, x->data.sequence.items.start[i]);
        item_path(rpath, "transforms.clean", i);
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
    cfg->buffer.max_bytes = 64 * MIB;
    cfg->buffer.max_age_ms = 1000;
    if ((err = map_open(cp, v, line, "buffer", keys, &m)) != ZETL_OK)
        return err;

    x = map_get_value(cp, &m, "dir", &xl);
    if (x != NULL) {
        if ((err = get_string(cp, x, xl, "buffer.dir", true, &cfg->buffer.dir)) != ZETL_OK)
            return err;
    } else {
        cfg->buffer.dir = zetl_strdup("./zetl-data");
    }
    x = map_get_value(cp, &m, "max_rows", &xl);
    if (x != NULL && (err = get_uint(cp, x, xl, "buffer.max_rows", 1, UINT64_MAX,
                                     &cfg->buffer.max_rows)) != ZETL_OK)
        return err;
    x = map_get_value(cp, &m, "max_bytes", &xl);
    if (x != NULL && (err = get_size(cp, x, xl, "buffer.max_bytes", 1, UINT64_MAX,
                                     &cfg->buffer.max_bytes)) != ZETL_OK)
        return err;
    x = map_get_value(cp, &m, "max_age_ms", &xl);
    if (x != NULL && (err = get_uint(cp, x, xl, "buffer.max_age_ms", 1, UINT64_MAX,
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
    char q[QUOTE_SIZE];

    if (strncmp(url, "file://", 7) == 0) {
        if (url[7] == '\0')
            return perr(cp, line, "archive.url", "file:// url has no path");
        return ZETL_OK;
    }
    if (strncmp(url, "s3://", 5) == 0) {
        const char *b = url + 5;
        size_t n = strcspn(b, "/");
        if (!bucket_valid(b, n)) {
            char bucket[72];
            snprintf(bucket, sizeof(bucket), "%.*s", (int)(n > 64 ? 64 : n), b);
            return perr(cp, line, "archive.url",
                        "invalid S3 bucket name %s (3 to 63 characters of a-z, 0-9, '.' and '-')",
                        quote(q, sizeof(q), bucket));
        }
        return ZETL_OK;
    }
    /* Only the scheme is echoed: a url may carry credentials. */
    size_t sl = strcspn(url, ":/@");
    char scheme[40];
    snprintf(scheme, sizeof(scheme), "%.*s", (int)(sl > 32 ? 32 : sl), url);
    return perr(cp, line, "archive.url",
                "unsupported url (scheme %s; expected file://PATH or s3://BUCKET[/PREFIX])",
                quote(q, sizeof(q), scheme));
}

static enum zetl_err parse_archive(struct cfg_parse *cp, yaml_node_t *v, int line,
                                   struct zetl_config *cfg)
{
    static const char *const keys[] = {"url", "s3", NULL};
    static const char *const s3keys[] = {"region", "endpoint", "path_style", "part_size", NULL};
    struct cfg_map m, sm;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;

    cfg->archive.s3.part_size = 8 * MIB;
    if ((err = map_open(cp, v, line, "archive", keys, &m)) != ZETL_OK)
        return err;
    if (v == NULL) {
        const char *region = env_nonempty("AWS_REGION");
        cfg->archive.s3.region = zetl_strdup(region ? region : "us-east-1");
        return ZETL_OK;
    }

    x = map_get_value(cp, &m, "url", &xl);
    if (x == NULL)
        return perr(cp, xl, "archive.url", "missing required key");
    if ((err = get_string(cp, x, xl, "archive.url", true, &cfg->archive.url)) != ZETL_OK)
        return err;
    if ((err = check_archive_url(cp, xl, cfg->archive.url)) != ZETL_OK)
        return err;

    x = map_get_value(cp, &m, "s3", &xl);
    if ((err = map_open(cp, x, xl, "archive.s3", s3keys, &sm)) != ZETL_OK)
        return err;

    x = map_get_value(cp, &sm, "region", &xl);
    if (x != NULL) {
        if ((err = get_string(cp, x, xl, "archive.s3.region", true, &cfg->archive.s3.region)) !=
            ZETL_OK)
            return err;
    } else {
        const char *region = env_nonempty("AWS_REGION");
        cfg->archive.s3.region = zetl_strdup(region ? region : "us-east-1");
    }

    x = map_get_value(cp, &sm, "endpoint", &xl);
    if (x != NULL) {
        char *ep = NULL;
        if ((err = get_string(cp, x, xl, "archive.s3.endpoint", true, &ep)) != ZETL_OK)
            return err;
        cfg->archive.s3.endpoint = ep;
        const char *host = strncmp(ep, "http://", 7) == 0    ? ep + 7
                           : strncmp(ep, "https://", 8) == 0 ? ep + 8
                                                             : NULL;
        if (host == NULL || host[0] == '\0' || host[0] == '/')
            return perr(cp, xl, "archive.s3.endpoint",
                        "expected an http:// or https:// url with a host");
        cfg->archive.s3.path_style = true;
    }

    x = map_get_value(cp, &sm, "path_style", &xl);
    if (x != NULL && (err = get_bool(cp, x, xl, "archive.s3.path_style",
                                     &cfg->archive.s3.path_style)) != ZETL_OK)
        return err;

    /* S3 multipart: parts other than the last must be 5 MiB..5 GiB. */
    x = map_get_value(cp, &sm, "part_size", &xl);
    if (x != NULL && (err = get_size(cp, x, xl, "archive.s3.part_size", 5 * MIB, 5 * 1024 * MIB,
                                     &cfg->archive.s3.part_size)) != ZETL_OK)
        return err;
    return ZETL_OK;
}

static enum zetl_err parse_warehouse(struct cfg_parse *cp, yaml_node_t *v, int line,
                                     struct zetl_config *cfg)
{
    static const char *const keys[] = {"kind", "dsn", "schema", "deletes", "iam_role", NULL};
    static const char *const kinds[] = {"postgres", "redshift", NULL};
    static const char *const deletes[] = {"hard", "soft", "history", NULL};
    struct cfg_map m;
    yaml_node_t *x;
    int xl, k;
    enum zetl_err err;

    cfg->warehouse.kind = ZETL_WH_NONE;
    cfg->warehouse.deletes = ZETL_DELETES_HARD;
    if ((err = map_open(cp, v, line, "warehouse", keys, &m)) != ZETL_OK)
        return err;
    if (v == NULL)
        return ZETL_OK;

    x = map_get_value(cp, &m, "kind", &xl);
    if (x == NULL)
        return perr(cp, xl, "warehouse.kind", "missing required key (postgres or redshift)");
    if ((err = get_enum(cp, x, xl, "warehouse.kind", kinds, &k)) != ZETL_OK)
        return err;
    cfg->warehouse.kind = k == 0 ? ZETL_WH_POSTGRES : ZETL_WH_REDSHIFT;

    const char *env = env_nonempty("ZETL_WAREHOUSE_DSN");
    x = map_get_value(cp, &m, "dsn", &xl);
    if (x != NULL &&
        (err = get_string(cp, x, xl, "warehouse.dsn", true, &cfg->warehouse.dsn)) != ZETL_OK)
        return err;
    if (env != NULL) {
        free(cfg->warehouse.dsn);
        cfg->warehouse.dsn = zetl_strdup(env);
    } else if (cfg->warehouse.dsn == NULL) {
        return perr(cp, xl, "warehouse.dsn", "missing required key (or set ZETL_WAREHOUSE_DSN)");
    }

    x = map_get_value(cp, &m, "schema", &xl);
    if (x != NULL) {
        if ((err = get_string(cp, x, xl, "warehouse.schema", true, &cfg->warehouse.schema)) !=
            ZETL_OK)
            return err;
        if (strlen(cfg->warehouse.schema) > 63)
            return perr(cp, xl, "warehouse.schema",
                        "must be at most 63 bytes (a PostgreSQL identifier), got %zu",
                        strlen(cfg->warehouse.schema));
    } else {
        cfg->warehouse.schema = zetl_strdup("zetl_raw");
    }

    x = map_get_value(cp, &m, "deletes", &xl);
    if (x != NULL) {
        if ((err = get_enum(cp, x, xl, "warehouse.deletes", deletes, &k)) != ZETL_OK)
            return err;
        cfg->warehouse.deletes = k == 0   ? ZETL_DELETES_HARD
                                 : k == 1 ? ZETL_DELETES_SOFT
                                          : ZETL_DELETES_HISTORY;
    }

    x = map_get_value(cp, &m, "iam_role", &xl);
    if (x != NULL) {
        if ((err = get_string(cp, x, xl, "warehouse.iam_role", true, &cfg->warehouse.iam_role)) !=
            ZETL_OK)
            return err;
        if (cfg->warehouse.kind != ZETL_WH_REDSHIFT)
            return perr(cp, xl, "warehouse.iam_role", "only valid when warehouse.kind is redshift");
    }
    return ZETL_OK;
}

static enum zetl_err parse_root(struct cfg_parse *cp, yaml_node_t *root, struct zetl_config *cfg)
{
    static const char *const keys[] = {"source",    "transforms", "buffer", "archive",
                                       "warehouse", "log_level",  NULL};
    static const char *const levels[] = {"debug", "info", "log", "warning", "error", NULL};
    struct cfg_map m;
    yaml_node_t *x;
    int xl;
    enum zetl_err err;

    if (root != NULL && root->type != YAML_MAPPING_NODE && !is_null(root))
        return perr(cp, node_line(root), "(top level)", "expected a mapping, got %s",
                    node_kind(root));
    if ((err = map_open(cp, root, 1, "", keys, &m)) != ZETL_OK)
        return err;

    x = map_get_value(cp, &m, "source", &xl);
    if ((err = parse_source(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    x = map_get_value(cp, &m, "transforms", &xl);
    if ((err = parse_transforms(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    x = map_get_value(cp, &m, "buffer", &xl);
    if ((err = parse_buffer(cp, x, xl, cfg)) != ZETL_OK)
        return err;

    /* A present but empty section ("archive:") counts as configured, so it must be complete. */
    x = map_get(cp, &m, "archive", &xl);
    if ((err = parse_archive(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    /* Likewise "warehouse:" alone: it then misses warehouse.kind. */
    x = map_get(cp, &m, "warehouse", &xl);
    if ((err = parse_warehouse(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    if (cfg->archive.url == NULL && cfg->warehouse.kind == ZETL_WH_NONE)
        return perr(cp, 1, "archive.url",
                    "no destination configured (set archive.url, add a warehouse section, or "
                    "both)");

    x = map_get_value(cp, &m, "log_level", &xl);
    if (x != NULL) {
        int k;
        if ((err = get_enum(cp, x, xl, "log_level", levels, &k)) != ZETL_OK)
            return err;
        cfg->log_level = zetl_strdup(levels[k]);
    }
    return ZETL_OK;
}

/* Line of a byte offset, for reader errors that carry only an offset. */
static int offset_line(const char *text, size_t len, size_t off)
{
    int line = 1;

    for (size_t i = 0; i < off && i < len; i++)
        if (text[i] == '\n')
            line++;
    return line;
}

static enum zetl_err yaml_error(struct cfg_parse *cp, const yaml_parser_t *parser, const char *text,
                                size_t len)
{
    const char *problem = parser->problem ? parser->problem : "unknown error";

    switch (parser->error) {
    case YAML_MEMORY_ERROR:
        return zetl_err_set(cp->eb, ZETL_ERR_FATAL, "%s: out of memory while parsing YAML",
                            cp->name);
    case YAML_READER_ERROR:
        return zetl_err_set(cp->eb, ZETL_ERR_USAGE, "%s:%d: invalid YAML: %s (at byte %zu)",
                            cp->name, offset_line(text, len, parser->problem_offset), problem,
                            parser->problem_offset);
    default:
        break;
    }
    if (parser->context != NULL)
        return zetl_err_set(
            cp->eb, ZETL_ERR_USAGE, "%s:%zu:%zu: invalid YAML: %s (%s at line %zu column %zu)",
            cp->name, parser->problem_mark.line + 1, parser->problem_mark.column + 1, problem,
            parser->context, parser->context_mark.line + 1, parser->context_mark.column + 1);
    return zetl_err_set(cp->eb, ZETL_ERR_USAGE, "%s:%zu:%zu: invalid YAML: %s", cp->name,
                        parser->problem_mark.line + 1, parser->problem_mark.column + 1, problem);
}

enum zetl_err zetl_config_parse(const char *name, const char *text, size_t len,
                                struct zetl_config **out, struct zetl_errbuf *eb)
{
    struct cfg_parse cp = {.name = name, .eb = eb};
    struct zetl_config *cfg = NULL;
    yaml_parser_t parser;
    yaml_document_t extra;
    bool parser_ok = false, doc_ok = false;
    enum zetl_err err;

    *out = NULL;
    if (!yaml_parser_initialize(&parser)) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "%s: could not initialize the YAML parser", name);
        goto fail;
    }
    parser_ok = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &cp.doc)) {
        err = yaml_error(&cp, &parser, text, len);
        goto fail;
    }
    doc_ok = true;

    /* A second document would be silently ignored by a reader that stops at the first. */
    if (!yaml_parser_load(&parser, &extra)) {
        err = yaml_error(&cp, &parser, text, len);
        goto fail;
    }
    yaml_node_t *extra_root = yaml_document_get_root_node(&extra);
    int extra_line = extra_root ? node_line(extra_root) : 0;
    yaml_document_delete(&extra);
    if (extra_root != NULL) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE,
                           "%s:%d: (top level): expected a single YAML document, found another",
                           name, extra_line);
        goto fail;
    }

    cfg = zetl_calloc(1, sizeof(*cfg));
    cfg->path = zetl_strdup(name);
    if ((err = parse_root(&cp, yaml_document_get_root_node(&cp.doc), cfg)) != ZETL_OK)
        goto fail;

    yaml_document_delete(&cp.doc);
    yaml_parser_delete(&parser);
    *out = cfg;
    return ZETL_OK;

fail:
    zetl_config_free(cfg);
    if (doc_ok)
        yaml_document_delete(&cp.doc);
    if (parser_ok)
        yaml_parser_delete(&parser);
    return err;
}

enum zetl_err zetl_config_load(const char *path, struct zetl_config **out, struct zetl_errbuf *eb)
{
    struct zetl_buf text;
    char chunk[8192];
    FILE *f = NULL;
    enum zetl_err err;

    *out = NULL;
    zetl_buf_init(&text, CONFIG_MAX_FILE);
    f = fopen(path, "rb");
    if (f == NULL) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not open config file \"%s\": %s", path,
                           strerror(errno));
        goto fail;
    }
    for (;;) {
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n > 0 && !zetl_buf_append(&text, chunk, n)) {
            err = zetl_err_set(eb, ZETL_ERR_USAGE, "config file \"%s\" is larger than %u MiB", path,
                               CONFIG_MAX_FILE / (1024 * 1024));
            goto fail;
        }
        if (n < sizeof(chunk)) {
            if (ferror(f)) {
                err = zetl_err_set(eb, ZETL_ERR_IO, "could not read config file \"%s\": %s", path,
                                   strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    f = NULL;

    err = zetl_config_parse(path, text.data ? text.data : "", text.len, out, eb);
    zetl_buf_release(&text);
    return err;

fail:
    if (f != NULL)
        fclose(f);
    zetl_buf_release(&text);
    return err;
}

void zetl_config_free(struct zetl_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->log_level);
    free(cfg->warehouse.iam_role);
    free(cfg->warehouse.schema);
    free(cfg->warehouse.dsn);
    free(cfg->archive.s3.endpoint);
    free(cfg->archive.s3.region);
    free(cfg->archive.url);
    free(cfg->buffer.dir);
    for (size_t i = 0; i < cfg->transforms.nclean; i++) {
        zetl_strlist_release(&cfg->transforms.clean[i].columns);
        zetl_strlist_release(&cfg->transforms.clean[i].null_strings);
    }
    free(cfg->transforms.clean);
    free(cfg->transforms.tenant_column);
    free(cfg->source.slot);
    zetl_strlist_release(&cfg->source.tables);
    zetl_strlist_release(&cfg->source.schemas);
    free(cfg->source.dsn);
    free(cfg->path);
    free(cfg);
}
