/*
 * What the Kafka sink (sink_kafka.c) and the loader (zetl load) share: topic
 * names, client configuration, and the two topics zetl keeps beside the
 * change topics (docs/kafka.md):
 *
 *   <prefix>._zetl_offsets.<stream>
 *                           one record per published batch, key = stream,
 *                           value = {"stream","last_lsn","end_lsn","batch",
 *                           "rows","positions":{topic:{partition:[first,last]}}},
 *                           written last in the batch's transaction: where the
 *                           stream stands in Kafka.  One partition, one topic
 *                           per stream, so that no other stream's open
 *                           transaction hides a stream's newest record.
 *   <prefix>._zetl_schemas  without a schema registry: each Avro schema once,
 *                           key = its fingerprint as 16 hex digits, value =
 *                           the schema's JSON text.  One partition, compacted.
 */
#ifndef ZETL_KAFKA_H
#define ZETL_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"

#define ZETL_KAFKA_OFFSETS_SUFFIX "._zetl_offsets"
#define ZETL_KAFKA_SCHEMAS_SUFFIX "._zetl_schemas"

/*
 * The topic of `table` (and of `tenant` with kafka.topics: tenant_table):
 * "<prefix>.<table>" or "<prefix>.<tenant>.<table>".  A name part with
 * characters Kafka does not allow in topic names (anything but letters,
 * digits, '.', '_', '-') has them replaced by '_' and gets "_<8 hex digits>"
 * of its original text appended, so distinct names stay distinct.  Owned.
 */
char *zetl_kafka_topic(const struct zetl_config *cfg, const char *table, const char *tenant);
/* "<prefix><suffix>", owned. */
char *zetl_kafka_meta_topic(const struct zetl_config *cfg, const char *suffix);
/* "<prefix>._zetl_offsets.<stream>", owned. */
char *zetl_kafka_offsets_topic(const struct zetl_config *cfg, const char *stream);
/* True for the topics zetl keeps beside the change topics (of any prefix). */
bool zetl_kafka_meta_topic_name(const char *topic);

/*
 * A client configuration with kafka.brokers, kafka.properties and zetl's
 * logging; the caller adds its own settings.  NULL with eb set when a
 * property is refused by librdkafka (names it).
 */
rd_kafka_conf_t *zetl_kafka_conf(const struct zetl_config *cfg, struct zetl_errbuf *eb);
/* Sets name=value on conf; ZETL_ERR_USAGE naming both when librdkafka refuses it. */
enum zetl_err zetl_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                                  struct zetl_errbuf *eb);
/* Sets name=value unless kafka.properties sets it. */
enum zetl_err zetl_kafka_conf_default(const struct zetl_config *cfg, rd_kafka_conf_t *conf,
                                      const char *name, const char *value, struct zetl_errbuf *eb);

/*
 * Checks the brokers answer (cluster metadata within timeout_ms):
 * ZETL_ERR_RETRY naming kafka.brokers when they do not.
 */
enum zetl_err zetl_kafka_probe(rd_kafka_t *rk, const struct zetl_config *cfg, int timeout_ms,
                               struct zetl_errbuf *eb);

/*
 * Before anything is created on the source: kafka.properties are valid
 * (ZETL_ERR_USAGE naming the property) and the brokers answer within 10 s
 * (ZETL_ERR_FATAL, one line naming kafka.brokers; librdkafka's own
 * connection errors stay at debug level).
 */
enum zetl_err zetl_kafka_check(const struct zetl_config *cfg, struct zetl_errbuf *eb);

/*
 * The partition count of `topic`, creating the topic (kafka.partitions,
 * kafka.replication_factor, and `compact` for cleanup.policy=compact) when
 * the cluster does not have it; a broker that auto-creates topics on a
 * metadata request is fine too.  ZETL_ERR_RETRY on timeouts.
 */
enum zetl_err zetl_kafka_partitions(rd_kafka_t *rk, const struct zetl_config *cfg,
                                    const char *topic, int partitions, bool compact, int32_t *count,
                                    struct zetl_errbuf *eb);

/*
 * The value of the newest committed record with key `key` in partition 0
 * of `topic` (read_committed), scanning back from the end; *value NULL
 * when there is none.  `rk` is a consumer that only assigns.  Owned.
 * ZETL_ERR_RETRY when the partition cannot be read to its end.
 */
enum zetl_err zetl_kafka_last_record(rd_kafka_t *rk, const char *topic, const char *key,
                                     char **value, struct zetl_errbuf *eb);

#endif
