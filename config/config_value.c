/*
 * Typed values of the configuration: strings, booleans, integers, sizes
 * ("64MiB"), durations ("30d"), one-of-a-list names and lists of strings or globs.  YAML's own
 * typing is deliberately narrowed: a quoted "true" or "10" is a string, so
 * what a key means never depends on how a YAML library guesses.
 */
#include "config/config_parse.h"

#include <stdio.h>
#include <string.h>

#include "common/glob.h"
#include "common/mem.h"

/* Copies a non-null scalar; *out is owned by the caller. */
enum zetl_err zetl_config_get_string(struct cfg_parse *cp, yaml_node_t *v, int line,
                                     const char *path, bool nonempty, char **out)
{
    if (v->type != YAML_SCALAR_NODE || zetl_config_is_null(v))
        return zetl_config_err(cp, line, path, "expected a string, got %s",
                               zetl_config_node_kind(v));
    if (strlen(zetl_config_scalar(v)) != v->data.scalar.length)
        return zetl_config_err(cp, line, path, "must not contain NUL bytes");
    if (nonempty && zetl_config_scalar(v)[0] == '\0')
        return zetl_config_err(cp, line, path, "must not be empty");
    *out = zetl_strdup(zetl_config_scalar(v));
    return ZETL_OK;
}

/* Booleans are plain true/false only: a quoted "true" is a string, not a bool. */
enum zetl_err zetl_config_get_bool(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                   bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE"};
    static const char *const no[] = {"false", "False", "FALSE"};
    char q[ZETL_CONFIG_QUOTE_SIZE];

    if (v->type != YAML_SCALAR_NODE || zetl_config_is_null(v))
        return zetl_config_err(cp, line, path, "expected true or false, got %s",
                               zetl_config_node_kind(v));
    if (!zetl_config_is_plain(v))
        return zetl_config_err(cp, line, path, "expected true or false, got the quoted string %s",
                               zetl_config_quote(q, sizeof(q), zetl_config_scalar(v)));
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(zetl_config_scalar(v), yes[i]) == 0) {
            *out = true;
            return ZETL_OK;
        }
        if (strcmp(zetl_config_scalar(v), no[i]) == 0) {
            *out = false;
            return ZETL_OK;
        }
    }
    return zetl_config_err(cp, line, path, "expected true or false, got %s",
                           zetl_config_quote(q, sizeof(q), zetl_config_scalar(v)));
}

/* A plain decimal integer in [min, max]. */
enum zetl_err zetl_config_get_uint(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                   uint64_t min, uint64_t max, uint64_t *out)
{
    char q[ZETL_CONFIG_QUOTE_SIZE];
    uint64_t n = 0;

    if (v->type != YAML_SCALAR_NODE || zetl_config_is_null(v))
        return zetl_config_err(cp, line, path, "expected an integer, got %s",
                               zetl_config_node_kind(v));
    const char *s = zetl_config_scalar(v);
    if (!zetl_config_is_plain(v))
        return zetl_config_err(cp, line, path, "expected an integer, got the quoted string %s",
                               zetl_config_quote(q, sizeof(q), s));
    const char *p = s;
    if (*p == '+')
        p++;
    if (*p == '\0')
        return zetl_config_err(cp, line, path, "expected an integer, got %s",
                               zetl_config_quote(q, sizeof(q), s));
    if (s[0] == '-' && s[1] >= '0' && s[1] <= '9')
        goto range;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return zetl_config_err(cp, line, path, "expected an integer, got %s",
                                   zetl_config_quote(q, sizeof(q), s));
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return zetl_config_err(cp, line, path, "integer %s is too large",
                                   zetl_config_quote(q, sizeof(q), s));
        n = n * 10 + d;
    }
    if (n < min || n > max)
        goto range;
    *out = n;
    return ZETL_OK;

range:
    if (max == UINT64_MAX && min == 1)
        return zetl_config_err(cp, line, path, "must be greater than 0, got %s",
                               zetl_config_quote(q, sizeof(q), s));
    if (max == UINT64_MAX)
        return zetl_config_err(cp, line, path, "must be at least %llu, got %s",
                               (unsigned long long)min, zetl_config_quote(q, sizeof(q), s));
    return zetl_config_err(cp, line, path, "must be between %llu and %llu, got %s",
                           (unsigned long long)min, (unsigned long long)max,
                           zetl_config_quote(q, sizeof(q), s));
}

enum unit_result {
    UNIT_OK,
    UNIT_MALFORMED,
    UNIT_NOT_POSITIVE,
    UNIT_OVERFLOW,
};

struct unit {
    const char *name;
    uint64_t mult;
};

/* KiB/MiB/GiB/TiB and k/K/M/G/T 1024-based, kB/KB/MB/GB/TB 1000-based; a bare number is bytes. */
static const struct unit size_units[] = {
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

/* In milliseconds: a bare number says nothing about its unit. */
static const struct unit duration_units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 86400 * 1000},
};

/*
 * "<digits><unit>" with one of `units`, greater than 0, into *out.  With
 * `lax` (sizes), a leading '+' and one space before the unit are accepted.
 */
static enum unit_result unit_parse(const char *s, const struct unit *units, size_t nunits, bool lax,
                                   uint64_t *out)
{
    const char *p = s;
    uint64_t n = 0;
    bool overflow = false;

    if (*p == '-')
        return p[1] >= '0' && p[1] <= '9' ? UNIT_NOT_POSITIVE : UNIT_MALFORMED;
    if (lax && *p == '+')
        p++;
    if (*p < '0' || *p > '9')
        return UNIT_MALFORMED;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            n = n * 10 + d;
    }
    if (lax && *p == ' ')
        p++;
    for (size_t i = 0; i < nunits; i++) {
        if (strcmp(p, units[i].name) != 0)
            continue;
        if (p > s && p[-1] == ' ' && units[i].name[0] == '\0')
            return UNIT_MALFORMED; /* trailing space */
        if (overflow || (n != 0 && n > UINT64_MAX / units[i].mult))
            return UNIT_OVERFLOW;
        if (n == 0)
            return UNIT_NOT_POSITIVE;
        *out = n * units[i].mult;
        return UNIT_OK;
    }
    return UNIT_MALFORMED;
}

static enum unit_result size_parse(const char *s, uint64_t *out)
{
    return unit_parse(s, size_units, sizeof(size_units) / sizeof(size_units[0]), true, out);
}

static enum unit_result duration_parse(const char *s, uint64_t *out)
{
    return unit_parse(s, duration_units, sizeof(duration_units) / sizeof(duration_units[0]), false,
                      out);
}

bool zetl_config_parse_size(const char *s, uint64_t *out)
{
    return size_parse(s, out) == UNIT_OK;
}

bool zetl_config_parse_duration(const char *s, uint64_t *ms)
{
    return duration_parse(s, ms) == UNIT_OK;
}

enum zetl_err zetl_config_get_duration(struct cfg_parse *cp, yaml_node_t *v, int line,
                                       const char *path, uint64_t min_ms, uint64_t max_ms,
                                       uint64_t *out)
{
    char q[ZETL_CONFIG_QUOTE_SIZE];
    uint64_t n = 0;

    if (v->type != YAML_SCALAR_NODE || zetl_config_is_null(v))
        return zetl_config_err(cp, line, path, "expected a duration such as 30d, got %s",
                               zetl_config_node_kind(v));
    zetl_config_quote(q, sizeof(q), zetl_config_scalar(v));
    switch (duration_parse(zetl_config_scalar(v), &n)) {
    case UNIT_OK:
        break;
    case UNIT_MALFORMED:
        return zetl_config_err(cp, line, path,
                               "invalid duration %s (expected a number with a unit: ms, s, m, "
                               "h or d, such as 30d)",
                               q);
    case UNIT_NOT_POSITIVE:
        return zetl_config_err(cp, line, path, "duration %s must be greater than 0", q);
    case UNIT_OVERFLOW:
        return zetl_config_err(cp, line, path, "duration %s is too large", q);
    }
    if (n < min_ms)
        return zetl_config_err(cp, line, path, "duration %s is below the minimum of %llu ms", q,
                               (unsigned long long)min_ms);
    if (n > max_ms)
        return zetl_config_err(cp, line, path, "duration %s is above the maximum of %llu days", q,
                               (unsigned long long)(max_ms / 86400000));
    *out = n;
    return ZETL_OK;
}

/* A size (string or integer) in [min, max] bytes. */
enum zetl_err zetl_config_get_size(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                   uint64_t min, uint64_t max, uint64_t *out)
{
    char q[ZETL_CONFIG_QUOTE_SIZE];
    uint64_t n = 0;

    if (v->type != YAML_SCALAR_NODE || zetl_config_is_null(v))
        return zetl_config_err(cp, line, path, "expected a size such as 64MiB, got %s",
                               zetl_config_node_kind(v));
    zetl_config_quote(q, sizeof(q), zetl_config_scalar(v));
    switch (size_parse(zetl_config_scalar(v), &n)) {
    case UNIT_OK:
        break;
    case UNIT_MALFORMED:
        return zetl_config_err(
            cp, line, path,
            "invalid size %s (expected a number with an optional unit such as 64MiB)", q);
    case UNIT_NOT_POSITIVE:
        return zetl_config_err(cp, line, path, "size %s must be greater than 0", q);
    case UNIT_OVERFLOW:
        return zetl_config_err(cp, line, path, "size %s is too large", q);
    }
    if (n < min)
        return zetl_config_err(cp, line, path, "size %s is below the minimum of %llu MiB", q,
                               (unsigned long long)(min / ZETL_CONFIG_MIB));
    if (n > max)
        return zetl_config_err(cp, line, path, "size %s is above the maximum of %llu MiB", q,
                               (unsigned long long)(max / ZETL_CONFIG_MIB));
    *out = n;
    return ZETL_OK;
}

/* One of `names`; *out gets its index. */
enum zetl_err zetl_config_get_enum(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                   const char *const *names, int *out)
{
    char q[ZETL_CONFIG_QUOTE_SIZE];
    char list[256];
    size_t o = 0;

    list[0] = '\0';
    for (int i = 0; names[i] != NULL; i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", names[i]);
    if (v->type != YAML_SCALAR_NODE || zetl_config_is_null(v))
        return zetl_config_err(cp, line, path, "expected one of %s, got %s", list,
                               zetl_config_node_kind(v));
    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(zetl_config_scalar(v), names[i]) == 0) {
            *out = i;
            return ZETL_OK;
        }
    }
    return zetl_config_err(cp, line, path, "invalid value %s (expected one of %s)",
                           zetl_config_quote(q, sizeof(q), zetl_config_scalar(v)), list);
}

/*
 * A list of strings into `out` (which must be empty); with `globs` each item
 * must be a valid glob, with `nonempty` the list must have an item.
 */
enum zetl_err zetl_config_get_strlist(struct cfg_parse *cp, yaml_node_t *v, int line,
                                      const char *path, bool globs, bool nonempty,
                                      struct zetl_strlist *out)
{
    char ipath[ZETL_CONFIG_PATH_MAX];
    char q[ZETL_CONFIG_QUOTE_SIZE];
    enum zetl_err err = ZETL_OK;

    if (v->type != YAML_SEQUENCE_NODE)
        return zetl_config_err(cp, line, path, "expected a list of strings, got %s",
                               zetl_config_node_kind(v));
    if (nonempty && v->data.sequence.items.top == v->data.sequence.items.start)
        return zetl_config_err(cp, line, path, "must not be an empty list");
    size_t i = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *item = yaml_document_get_node(&cp->doc, *it);
        zetl_config_item_path(ipath, path, i);
        if (item->type != YAML_SCALAR_NODE || zetl_config_is_null(item)) {
            err = zetl_config_err(cp, zetl_config_node_line(item), ipath,
                                  "expected a string, got %s", zetl_config_node_kind(item));
            goto fail;
        }
        if (strlen(zetl_config_scalar(item)) != item->data.scalar.length) {
            err = zetl_config_err(cp, zetl_config_node_line(item), ipath,
                                  "must not contain NUL bytes");
            goto fail;
        }
        if (globs && !zetl_glob_valid(zetl_config_scalar(item))) {
            err = zetl_config_err(cp, zetl_config_node_line(item), ipath,
                                  "invalid glob %s (empty, unbalanced '[' or trailing backslash)",
                                  zetl_config_quote(q, sizeof(q), zetl_config_scalar(item)));
            goto fail;
        }
        zetl_strlist_add(out, zetl_config_scalar(item));
    }
    return ZETL_OK;

fail:
    zetl_strlist_release(out);
    return err;
}
