/*
 * The YAML node layer of the configuration reader: error messages that name
 * file, line and key; key paths; and mappings whose keys are checked against
 * the known ones, so a misspelt or repeated key is refused with a "did you
 * mean" rather than silently ignored.
 */
#include "config/config_parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Reports "NAME:LINE: KEY: message" as a usage error. */
enum zetl_err zetl_config_err(struct cfg_parse *cp, int line, const char *key, const char *fmt, ...)
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
const char *zetl_config_quote(char *dst, size_t size, const char *s)
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

/* YAML's null: an empty or ~/null plain scalar ("key:" with nothing after it). */
bool zetl_config_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || !zetl_config_is_plain(n))
        return false;
    const char *v = zetl_config_scalar(n);
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* "a mapping", "a list", "null" or "a string": what the user wrote instead. */
const char *zetl_config_node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_SCALAR_NODE:
        return zetl_config_is_null(n) ? "null" : "a string";
    default:
        return "nothing";
    }
}

/* "parent.key" into dst (ZETL_CONFIG_PATH_MAX bytes); a very long path is cut short. */
void zetl_config_child_path(char *dst, const char *parent, const char *key)
{
    size_t o = 0;

    for (const char *p = parent; *p && o < ZETL_CONFIG_PATH_MAX - 1; p++)
        dst[o++] = *p;
    if (parent[0] != '\0' && o < ZETL_CONFIG_PATH_MAX - 1)
        dst[o++] = '.';
    for (const char *p = key; *p && o < ZETL_CONFIG_PATH_MAX - 1; p++)
        dst[o++] = *p;
    dst[o] = '\0';
}

void zetl_config_item_path(char *dst, const char *parent, size_t i)
{
    snprintf(dst, ZETL_CONFIG_PATH_MAX, "%s[%zu]", parent, i);
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
 * Checks that `node` (the value of `path`, found on `line`) is a mapping whose
 * keys are all in `known` and unique.  A null value counts as empty.
 */
enum zetl_err zetl_config_map_open(struct cfg_parse *cp, yaml_node_t *node, int line,
                                   const char *path, const char *const *known, struct cfg_map *map)
{
    char kpath[ZETL_CONFIG_PATH_MAX];
    char q[ZETL_CONFIG_QUOTE_SIZE];

    map->node = NULL;
    map->line = line;
    if (node == NULL || zetl_config_is_null(node))
        return ZETL_OK;
    if (node->type != YAML_MAPPING_NODE)
        return zetl_config_err(cp, line, path[0] ? path : "(top level)",
                               "expected a mapping, got %s", zetl_config_node_kind(node));
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(&cp->doc, pair->key);
        if (k->type != YAML_SCALAR_NODE || zetl_config_is_null(k))
            return zetl_config_err(cp, zetl_config_node_line(k), path[0] ? path : "(top level)",
                                   "keys must be strings, got %s", zetl_config_node_kind(k));
        const char *name = zetl_config_scalar(k);
        if (strlen(name) != k->data.scalar.length)
            return zetl_config_err(cp, zetl_config_node_line(k), path[0] ? path : "(top level)",
                                   "key contains a NUL byte");
        zetl_config_child_path(kpath, path, name);

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
            const char *shown = clean ? kpath : zetl_config_quote(q, sizeof(q), kpath);
            if (best != NULL && best_d <= 2 && best_d < strlen(name)) {
                char sugg[ZETL_CONFIG_PATH_MAX];
                zetl_config_child_path(sugg, path, best);
                return zetl_config_err(cp, zetl_config_node_line(k), shown,
                                       "unknown key (did you mean %s?)", sugg);
            }
            return zetl_config_err(cp, zetl_config_node_line(k), shown, "unknown key");
        }
        for (yaml_node_pair_t *prev = node->data.mapping.pairs.start; prev < pair; prev++) {
            yaml_node_t *pk = yaml_document_get_node(&cp->doc, prev->key);
            if (strcmp(zetl_config_scalar(pk), name) == 0)
                return zetl_config_err(cp, zetl_config_node_line(k), kpath,
                                       "duplicate key (first set on line %d)",
                                       zetl_config_node_line(pk));
        }
    }
    map->node = node;
    return ZETL_OK;
}

/* The value of `key` in `map` or NULL; *line gets the key's line (the map's when absent). */
yaml_node_t *zetl_config_map_get(struct cfg_parse *cp, const struct cfg_map *map, const char *key,
                                 int *line)
{
    *line = map->line;
    if (map->node == NULL)
        return NULL;
    for (yaml_node_pair_t *pair = map->node->data.mapping.pairs.start;
         pair < map->node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(&cp->doc, pair->key);
        if (strcmp(zetl_config_scalar(k), key) == 0) {
            *line = zetl_config_node_line(k);
            return yaml_document_get_node(&cp->doc, pair->value);
        }
    }
    return NULL;
}

/* Like zetl_config_map_get, but a null value ("key:" alone) reads as absent. */
yaml_node_t *zetl_config_map_get_value(struct cfg_parse *cp, const struct cfg_map *map,
                                       const char *key, int *line)
{
    yaml_node_t *v = zetl_config_map_get(cp, map, key, line);

    return v != NULL && zetl_config_is_null(v) ? NULL : v;
}
