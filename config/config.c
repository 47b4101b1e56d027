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
