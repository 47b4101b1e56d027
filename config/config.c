/*
 * YAML configuration file -> one validated struct zetl_config.
 *
 * The file is loaded with libyaml's document API and walked section by
 * section.  Every problem is reported as "FILE:LINE: KEY: what is wrong" with
 * KEY the dotted path of the offending key, so a user can go straight to it.
 * Unknown and duplicate keys are errors at every level: a misspelt key that
 * silently falls back to a default is worse than a refusal to start.
 * Secrets (DSNs) can come from the environment or from secret files (secret.c).
 *
 * This file loads the text and the YAML document; config_sections.c walks
 * it with the readers of config_node.c and config_value.c (config_parse.h).
 */
#include "config/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "common/buf.h"
#include "common/mem.h"
#include "config/config_parse.h"

#define CONFIG_MAX_FILE (16u * 1024 * 1024)
/*
 * What a document may hold once its aliases are expanded (docs/config.md).
 * libyaml's loader shares an aliased node instead of copying it, but the
 * section readers copy what they read, so "clean: [*rule, *rule, ...]" with
 * a rule of many columns would make a small file allocate without bound.
 * A real configuration has a few hundred nodes and a handful of aliases.
 */
#define CONFIG_MAX_NODES 100000
#define CONFIG_MAX_ALIASES 1000

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

/* An anchored node of the document, with what it expands to. */
struct cfg_anchor {
    char *name;       /* owned */
    uint64_t nodes;   /* nodes it expands to (itself included) */
    uint64_t aliases; /* aliases it expands to */
};

/* A mapping or sequence still open in the event stream. */
struct cfg_open {
    char *anchor;            /* owned or NULL */
    uint64_t nodes, aliases; /* the counts when it started */
};

/* Room for one more of n items of `size` bytes at *p, whose capacity is *cap. */
static void *grow(void *p, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return p;
    *cap = *cap ? 2 * *cap : 16;
    return zetl_realloc(p, *cap * size);
}

static struct cfg_anchor *find_anchor(struct cfg_anchor *anchors, size_t n, const char *name)
{
    /* The latest definition wins, as in the loader. */
    for (size_t i = n; i-- > 0;)
        if (strcmp(anchors[i].name, name) == 0)
            return &anchors[i];
    return NULL;
}

/*
 * Counts the nodes and aliases of `text` as if every alias were expanded,
 * from libyaml's events, before the document is loaded: an alias adds what
 * its anchor expands to.  Refuses past CONFIG_MAX_NODES or
 * CONFIG_MAX_ALIASES, and an alias inside the node it names (a cycle: it
 * expands without end), naming the line and column where the limit was
 * crossed.  The anchor table and the stack of open nodes hold at most
 * CONFIG_MAX_NODES entries and at most CONFIG_MAX_ALIASES lookups are made,
 * so time and memory stay small whatever the file.
 */
static enum zetl_err check_expansion(struct cfg_parse *cp, const char *text, size_t len)
{
    struct cfg_anchor *anchors = NULL;
    struct cfg_open *open = NULL;
    size_t nanchors = 0, nopen = 0, anchors_cap = 0, open_cap = 0;
    uint64_t nodes = 0, aliases = 0;
    yaml_parser_t parser;
    yaml_event_t ev;
    bool done = false;
    enum zetl_err err = ZETL_OK;

    if (!yaml_parser_initialize(&parser))
        return zetl_err_set(cp->eb, ZETL_ERR_FATAL, "%s: could not initialize the YAML parser",
                            cp->name);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    while (!done && err == ZETL_OK) {
        const char *anchor = NULL;

        if (!yaml_parser_parse(&parser, &ev)) {
            err = yaml_error(cp, &parser, text, len);
            break;
        }
        size_t line = ev.start_mark.line + 1, col = ev.start_mark.column + 1;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_SCALAR_EVENT:
            nodes++;
            anchor = (const char *)ev.data.scalar.anchor;
            if (anchor != NULL) {
                anchors = grow(anchors, nanchors, &anchors_cap, sizeof(*anchors));
                anchors[nanchors++] = (struct cfg_anchor){zetl_strdup(anchor), 1, 0};
            }
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            anchor =
                (const char *)(ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                                    : ev.data.mapping_start.anchor);
            open = grow(open, nopen, &open_cap, sizeof(*open));
            open[nopen++] = (struct cfg_open){anchor ? zetl_strdup(anchor) : NULL, nodes, aliases};
            nodes++;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (nopen == 0)
                break;
            nopen--;
            if (open[nopen].anchor != NULL) {
                anchors = grow(anchors, nanchors, &anchors_cap, sizeof(*anchors));
                anchors[nanchors++] = (struct cfg_anchor){
                    open[nopen].anchor, nodes - open[nopen].nodes, aliases - open[nopen].aliases};
            }
            break;
        case YAML_ALIAS_EVENT: {
            const char *name = (const char *)ev.data.alias.anchor;
            struct cfg_anchor *a = find_anchor(anchors, nanchors, name);

            /* The loader gives an anchor to its node when the node starts. */
            for (size_t i = 0; i < nopen && err == ZETL_OK; i++)
                if (open[i].anchor != NULL && strcmp(open[i].anchor, name) == 0)
                    err = zetl_err_set(cp->eb, ZETL_ERR_USAGE,
                                       "%s:%zu:%zu: alias *%.64s refers to a node that contains "
                                       "it",
                                       cp->name, line, col, name);
            /* An undefined alias is the loader's to report; count it as one node. */
            nodes += a ? a->nodes : 1;
            aliases += 1 + (a ? a->aliases : 0);
            if (err == ZETL_OK && aliases > CONFIG_MAX_ALIASES)
                err = zetl_err_set(cp->eb, ZETL_ERR_USAGE,
                                   "%s:%zu:%zu: alias *%.64s: the document uses more than %d "
                                   "aliases once aliases are expanded",
                                   cp->name, line, col, name, CONFIG_MAX_ALIASES);
            if (err == ZETL_OK && nodes > CONFIG_MAX_NODES)
                err = zetl_err_set(cp->eb, ZETL_ERR_USAGE,
                                   "%s:%zu:%zu: alias *%.64s: the document expands to more than "
                                   "%d nodes",
                                   cp->name, line, col, name, CONFIG_MAX_NODES);
            break;
        }
        default:
            break;
        }
        if (err == ZETL_OK && nodes > CONFIG_MAX_NODES)
            err = zetl_err_set(cp->eb, ZETL_ERR_USAGE,
                               "%s:%zu:%zu: the document has more than %d nodes", cp->name, line,
                               col, CONFIG_MAX_NODES);
        yaml_event_delete(&ev);
    }
    for (size_t i = 0; i < nopen; i++)
        free(open[i].anchor);
    for (size_t i = 0; i < nanchors; i++)
        free(anchors[i].name);
    free(open);
    free(anchors);
    yaml_parser_delete(&parser);
    return err;
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
    if ((err = check_expansion(&cp, text, len)) != ZETL_OK)
        goto fail;
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
    int extra_line = extra_root ? zetl_config_node_line(extra_root) : 0;
    yaml_document_delete(&extra);
    if (extra_root != NULL) {
        err = zetl_err_set(eb, ZETL_ERR_USAGE,
                           "%s:%d: (top level): expected a single YAML document, found another",
                           name, extra_line);
        goto fail;
    }

    cfg = zetl_calloc(1, sizeof(*cfg));
    cfg->path = zetl_strdup(name);
    if ((err = zetl_config_parse_root(&cp, yaml_document_get_root_node(&cp.doc), cfg)) != ZETL_OK)
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
    for (size_t i = 0; i < 2 * cfg->kafka.nproperties; i++)
        free(cfg->kafka.properties[i]);
    free(cfg->kafka.properties);
    free(cfg->kafka.group);
    free(cfg->kafka.schema_registry);
    free(cfg->kafka.topic_prefix);
    free(cfg->kafka.brokers);
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
