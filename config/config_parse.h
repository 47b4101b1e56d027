/*
 * Private to config/: the state of one parse and the YAML readers that the
 * section parsers share.  config_node.c walks mappings (unknown and
 * duplicate keys refused), config_value.c reads typed scalars and lists,
 * config_sections.c turns each section into struct zetl_config, config.c
 * loads the document.  Every reader reports "FILE:LINE: KEY: what is wrong"
 * through zetl_config_err.  Not for use outside config/.
 */
#ifndef ZETL_CONFIG_PARSE_H
#define ZETL_CONFIG_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "common/err.h"
#include "common/strlist.h"
#include "config/config.h"

/* Room for a dotted key path such as "transforms.clean[3].null_strings". */
#define ZETL_CONFIG_PATH_MAX 256
/* Room for a value echoed back in a message by zetl_config_quote. */
#define ZETL_CONFIG_QUOTE_SIZE 96
#define ZETL_CONFIG_MIB (1024ull * 1024)

/* State of one parse: the loaded document and where errors go. */
struct cfg_parse {
    const char *name; /* borrowed: file name for messages */
    yaml_document_t doc;
    struct zetl_errbuf *eb; /* borrowed */
};

/*
 * A mapping node with its known keys checked.  `node` is NULL when the
 * section is absent or null, which reads as an empty mapping.
 */
struct cfg_map {
    yaml_node_t *node; /* borrowed from cp->doc */
    int line;          /* line of the key that holds the mapping (1 for the root) */
};

static inline int zetl_config_node_line(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

/* Valid as long as cp->doc. */
static inline const char *zetl_config_scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static inline bool zetl_config_is_plain(const yaml_node_t *n)
{
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* ---- config_node.c: messages, nodes, key paths, mappings ---------------- */

enum zetl_err zetl_config_err(struct cfg_parse *cp, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Writes into dst (ZETL_CONFIG_QUOTE_SIZE bytes is enough) and returns it. */
const char *zetl_config_quote(char *dst, size_t size, const char *s);
bool zetl_config_is_null(const yaml_node_t *n);
/* Static text. */
const char *zetl_config_node_kind(const yaml_node_t *n);
/* dst has ZETL_CONFIG_PATH_MAX bytes. */
void zetl_config_child_path(char *dst, const char *parent, const char *key);
void zetl_config_item_path(char *dst, const char *parent, size_t i);
enum zetl_err zetl_config_map_open(struct cfg_parse *cp, yaml_node_t *node, int line,
                                   const char *path, const char *const *known, struct cfg_map *map);
/* The returned nodes are borrowed from cp->doc. */
yaml_node_t *zetl_config_map_get(struct cfg_parse *cp, const struct cfg_map *map, const char *key,
                                 int *line);
yaml_node_t *zetl_config_map_get_value(struct cfg_parse *cp, const struct cfg_map *map,
                                       const char *key, int *line);

/* ---- config_value.c: typed values; `v` is the value of `path` on `line` - */

/* *out is owned by the caller. */
enum zetl_err zetl_config_get_string(struct cfg_parse *cp, yaml_node_t *v, int line,
                                     const char *path, bool nonempty, char **out);
enum zetl_err zetl_config_get_bool(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                   bool *out);
enum zetl_err zetl_config_get_uint(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                   uint64_t min, uint64_t max, uint64_t *out);
enum zetl_err zetl_config_get_size(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                   uint64_t min, uint64_t max, uint64_t *out);
/* A duration ("30d", "12h", "45m", "90s", "500ms") in [min_ms, max_ms] milliseconds. */
enum zetl_err zetl_config_get_duration(struct cfg_parse *cp, yaml_node_t *v, int line,
                                       const char *path, uint64_t min_ms, uint64_t max_ms,
                                       uint64_t *out);
/* `names` is NULL-terminated. */
enum zetl_err zetl_config_get_enum(struct cfg_parse *cp, yaml_node_t *v, int line, const char *path,
                                   const char *const *names, int *out);
/* Adds owned copies to `out`; on failure `out` is released. */
enum zetl_err zetl_config_get_strlist(struct cfg_parse *cp, yaml_node_t *v, int line,
                                      const char *path, bool globs, bool nonempty,
                                      struct zetl_strlist *out);

/* ---- config_kafka.c ----------------------------------------------------- */

/* The kafka section; `v` NULL when absent (cfg->kafka.enabled stays false). */
enum zetl_err zetl_config_parse_kafka(struct cfg_parse *cp, yaml_node_t *v, int line,
                                      struct zetl_config *cfg);

/* ---- config_sections.c -------------------------------------------------- */

/*
 * Fills cfg (owned by the caller, which frees it also on failure) from the
 * document's root node (NULL for an empty document).
 */
enum zetl_err zetl_config_parse_root(struct cfg_parse *cp, yaml_node_t *root,
                                     struct zetl_config *cfg);

#endif
