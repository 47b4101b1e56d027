/*
 * The kafka section: where change events are published (zetl run) and read
 * back from (zetl load).  Its keys are documented in docs/config.md.
 */
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"
#include "config/config_parse.h"

/* brokers: "h1:9092,h2:9092" or a list of "host:port". */
static enum zetl_err parse_brokers(struct cfg_parse *cp, yaml_node_t *x, int xl,
                                   struct zetl_config *cfg)
{
    struct zetl_strlist l = {0};
    size_t n = 0;
    enum zetl_err err;

    if (x->type == YAML_SCALAR_NODE)
        return zetl_config_get_string(cp, x, xl, "kafka.brokers", true, &cfg->kafka.brokers);
    if ((err = zetl_config_get_strlist(cp, x, xl, "kafka.brokers", false, true, &l)) != ZETL_OK)
        return err;
    for (size_t i = 0; i < l.n; i++)
        n += strlen(l.items[i]) + 1;
    cfg->kafka.brokers = zetl_malloc(n);
    cfg->kafka.brokers[0] = '\0';
    for (size_t i = 0; i < l.n; i++) {
        if (i > 0)
            strcat(cfg->kafka.brokers, ",");
        strcat(cfg->kafka.brokers, l.items[i]);
    }
    zetl_strlist_release(&l);
    return ZETL_OK;
}

/* properties: a mapping of librdkafka settings; values are passed as text. */
static enum zetl_err parse_properties(struct cfg_parse *cp, yaml_node_t *x, int xl,
                                      struct zetl_config *cfg)
{
    /* Settings zetl owns: a different value would break exactly-once or the framing. */
    static const char *const owned[] = {"bootstrap.servers",
                                        "transactional.id",
                                        "enable.idempotence",
                                        "group.id",
                                        "isolation.level",
                                        "enable.auto.commit",
                                        NULL};
    char path[ZETL_CONFIG_PATH_MAX];

    if (zetl_config_is_null(x))
        return ZETL_OK;
    if (x->type != YAML_MAPPING_NODE)
        return zetl_config_err(cp, xl, "kafka.properties", "expected a mapping, got %s",
                               zetl_config_node_kind(x));
    size_t n = (size_t)(x->data.mapping.pairs.top - x->data.mapping.pairs.start);
    cfg->kafka.properties = zetl_calloc(2 * n + 1, sizeof(char *));
    for (yaml_node_pair_t *pair = x->data.mapping.pairs.start; pair < x->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(&cp->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(&cp->doc, pair->value);
        int kl = zetl_config_node_line(k);

        if (k->type != YAML_SCALAR_NODE || zetl_config_is_null(k))
            return zetl_config_err(cp, kl, "kafka.properties", "keys must be strings, got %s",
                                   zetl_config_node_kind(k));
        const char *name = zetl_config_scalar(k);
        zetl_config_child_path(path, "kafka.properties", name);
        for (const char *const *o = owned; *o != NULL; o++)
            if (strcmp(*o, name) == 0)
                return zetl_config_err(cp, kl, path,
                                       "zetl sets this itself (use kafka.brokers / kafka.group; "
                                       "transactions and isolation are required for exactly-once)");
        for (size_t i = 0; i < cfg->kafka.nproperties; i++)
            if (strcmp(cfg->kafka.properties[2 * i], name) == 0)
                return zetl_config_err(cp, kl, path, "duplicate key");
        if (v->type != YAML_SCALAR_NODE || zetl_config_is_null(v))
            return zetl_config_err(cp, zetl_config_node_line(v), path,
                                   "expected a string, number or boolean, got %s",
                                   zetl_config_node_kind(v));
        cfg->kafka.properties[2 * cfg->kafka.nproperties] = zetl_strdup(name);
        cfg->kafka.properties[2 * cfg->kafka.nproperties + 1] = zetl_strdup(zetl_config_scalar(v));
        cfg->kafka.nproperties++;
    }
    return ZETL_OK;
}

enum zetl_err zetl_config_parse_kafka(struct cfg_parse *cp, yaml_node_t *v, int line,
                                      struct zetl_config *cfg)
{
    static const char *const keys[] = {"brokers",
                                       "topic_prefix",
                                       "topics",
                                       "format",
                                       "schema_registry",
                                       "group",
                                       "tombstones",
                                       "partitions",
                                       "replication_factor",
                                       "properties",
                                       NULL};
    static const char *const topics[] = {"table", "tenant_table", NULL};
    static const char *const formats[] = {"avro", "json", NULL};
    struct cfg_map m;
    yaml_node_t *x;
    uint64_t u;
    int xl, k;
    enum zetl_err err;

    cfg->kafka.enabled = true;
    cfg->kafka.tombstones = true;
    cfg->kafka.partitions = 6;
    cfg->kafka.replication_factor = -1;
    if ((err = zetl_config_map_open(cp, v, line, "kafka", keys, &m)) != ZETL_OK)
        return err;

    x = zetl_config_map_get_value(cp, &m, "brokers", &xl);
    if (x == NULL)
        return zetl_config_err(cp, xl, "kafka.brokers",
                               "missing required key (bootstrap servers, e.g. \"host:9092\")");
    if ((err = parse_brokers(cp, x, xl, cfg)) != ZETL_OK)
        return err;

    x = zetl_config_map_get_value(cp, &m, "topic_prefix", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_string(cp, x, xl, "kafka.topic_prefix", true,
                                          &cfg->kafka.topic_prefix)) != ZETL_OK)
            return err;
        for (const char *p = cfg->kafka.topic_prefix; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
                return zetl_config_err(cp, xl, "kafka.topic_prefix",
                                       "a Kafka topic name allows only letters, digits, '.', "
                                       "'_' and '-'");
        if (strlen(cfg->kafka.topic_prefix) > 100)
            return zetl_config_err(cp, xl, "kafka.topic_prefix", "must be at most 100 bytes");
    } else {
        cfg->kafka.topic_prefix = zetl_strdup("zetl");
    }

    x = zetl_config_map_get_value(cp, &m, "topics", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_enum(cp, x, xl, "kafka.topics", topics, &k)) != ZETL_OK)
            return err;
        cfg->kafka.per_tenant = k == 1;
    }
    x = zetl_config_map_get_value(cp, &m, "format", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_enum(cp, x, xl, "kafka.format", formats, &k)) != ZETL_OK)
            return err;
        cfg->kafka.format = k == 0 ? ZETL_KAFKA_AVRO : ZETL_KAFKA_JSON;
    }
    x = zetl_config_map_get_value(cp, &m, "schema_registry", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_string(cp, x, xl, "kafka.schema_registry", true,
                                          &cfg->kafka.schema_registry)) != ZETL_OK)
            return err;
        if (strncmp(cfg->kafka.schema_registry, "http://", 7) != 0 &&
            strncmp(cfg->kafka.schema_registry, "https://", 8) != 0)
            return zetl_config_err(cp, xl, "kafka.schema_registry",
                                   "expected an http:// or https:// URL");
    }
    x = zetl_config_map_get_value(cp, &m, "group", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_string(cp, x, xl, "kafka.group", true, &cfg->kafka.group)) !=
            ZETL_OK)
            return err;
    } else {
        cfg->kafka.group = zetl_strdup("zetl-loader");
    }
    x = zetl_config_map_get_value(cp, &m, "tombstones", &xl);
    if (x != NULL && (err = zetl_config_get_bool(cp, x, xl, "kafka.tombstones",
                                                 &cfg->kafka.tombstones)) != ZETL_OK)
        return err;
    x = zetl_config_map_get_value(cp, &m, "partitions", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_uint(cp, x, xl, "kafka.partitions", 1, 10000, &u)) != ZETL_OK)
            return err;
        cfg->kafka.partitions = (int)u;
    }
    x = zetl_config_map_get_value(cp, &m, "replication_factor", &xl);
    if (x != NULL) {
        if ((err = zetl_config_get_uint(cp, x, xl, "kafka.replication_factor", 1, 100, &u)) !=
            ZETL_OK)
            return err;
        cfg->kafka.replication_factor = (int)u;
    }
    x = zetl_config_map_get_value(cp, &m, "properties", &xl);
    if (x != NULL && (err = parse_properties(cp, x, xl, cfg)) != ZETL_OK)
        return err;
    return ZETL_OK;
}
