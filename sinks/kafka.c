/* Kafka helpers shared by the sink and the loader (kafka.h). */
#include "sinks/kafka.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/mem.h"

/* Appends one topic name part, adjusted when Kafka would refuse it (kafka.h). */
static void topic_part(struct zetl_buf *b, const char *s)
{
    uint32_t h = 2166136261u;
    size_t n = strlen(s);
    bool adjusted = n == 0 || n > 100;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        h = (h ^ c) * 16777619u;
        if (!ok)
            adjusted = true;
        if (i < 100)
            zetl_buf_putc(b, ok ? (char)c : '_');
    }
    if (adjusted)
        zetl_buf_printf(b, "_%08" PRIx32, h);
}

char *zetl_kafka_topic(const struct zetl_config *cfg, const char *table, const char *tenant)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, cfg->kafka.topic_prefix);
    if (cfg->kafka.per_tenant && tenant != NULL) {
        zetl_buf_putc(&b, '.');
        topic_part(&b, tenant);
    }
    zetl_buf_putc(&b, '.');
    topic_part(&b, table);
    return b.data;
}

char *zetl_kafka_meta_topic(const struct zetl_config *cfg, const char *suffix)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "%s%s", cfg->kafka.topic_prefix, suffix);
    return b.data;
}

char *zetl_kafka_offsets_topic(const struct zetl_config *cfg, const char *stream)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "%s%s.", cfg->kafka.topic_prefix, ZETL_KAFKA_OFFSETS_SUFFIX);
    topic_part(&b, stream);
    return b.data;
}

bool zetl_kafka_meta_topic_name(const char *topic)
{
    const char *o = strstr(topic, ZETL_KAFKA_OFFSETS_SUFFIX);
    const char *s = strstr(topic, ZETL_KAFKA_SCHEMAS_SUFFIX);

    return (o != NULL && (o[strlen(ZETL_KAFKA_OFFSETS_SUFFIX)] == '.' ||
                          o[strlen(ZETL_KAFKA_OFFSETS_SUFFIX)] == '\0')) ||
           (s != NULL && s[strlen(ZETL_KAFKA_SCHEMAS_SUFFIX)] == '\0');
}

/* librdkafka's log lines, at the level they deserve: its warnings are ours, the rest is debug. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /*
     * kafka.properties go to the producer and the consumers alike: each warns
     * about the others' settings (CONFWARN), which is expected.
     */
    if (level <= 4 && strcmp(fac, "CONFWARN") != 0)
        zetl_warn("kafka: %s: %s", fac, buf);
    else
        zetl_debug("kafka: %s: %s", fac, buf);
}

/*
 * Client errors that librdkafka recovers from by itself (a broker down, a
 * timeout) are logged; what they mean for a batch shows in its delivery
 * reports and transaction calls.
 */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL)
        zetl_error("kafka: fatal client error: %s", reason);
    else if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        zetl_warn("kafka: no broker reachable: %s", reason);
    else
        zetl_debug("kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

enum zetl_err zetl_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                                  struct zetl_errbuf *eb)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        return zetl_err_set(eb, ZETL_ERR_USAGE, "kafka property \"%s\": %s", name, errstr);
    return ZETL_OK;
}

enum zetl_err zetl_kafka_conf_default(const struct zetl_config *cfg, rd_kafka_conf_t *conf,
                                      const char *name, const char *value, struct zetl_errbuf *eb)
{
    for (size_t i = 0; i < cfg->kafka.nproperties; i++)
        if (strcmp(cfg->kafka.properties[2 * i], name) == 0)
            return ZETL_OK;
    return zetl_kafka_conf_set(conf, name, value, eb);
}

rd_kafka_conf_t *zetl_kafka_conf(const struct zetl_config *cfg, struct zetl_errbuf *eb)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    if (zetl_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka.brokers, eb) != ZETL_OK)
        goto fail;
    for (size_t i = 0; i < cfg->kafka.nproperties; i++)
        if (zetl_kafka_conf_set(conf, cfg->kafka.properties[2 * i],
                                cfg->kafka.properties[2 * i + 1], eb) != ZETL_OK)
            goto fail;
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

enum zetl_err zetl_kafka_probe(rd_kafka_t *rk, const struct zetl_config *cfg, int timeout_ms,
                               struct zetl_errbuf *eb)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);

    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "kafka brokers \"%s\" did not answer within %d ms: %s",
                            cfg->kafka.brokers, timeout_ms, rd_kafka_err2str(err));
    rd_kafka_metadata_destroy(md);
    return ZETL_OK;
}

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    zetl_debug("kafka: %s: %s", fac, buf);
}

static void quiet_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    zetl_debug("kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

enum zetl_err zetl_kafka_check(const struct zetl_config *cfg, struct zetl_errbuf *eb)
{
    rd_kafka_conf_t *conf = zetl_kafka_conf(cfg, eb);
    char errstr[512];
    rd_kafka_t *rk;
    enum zetl_err err;

    if (conf == NULL)
        return ZETL_ERR_USAGE;
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    rd_kafka_conf_set_error_cb(conf, quiet_error);
    if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))) == NULL) {
        rd_kafka_conf_destroy(conf);
        return zetl_err_set(eb, ZETL_ERR_USAGE, "kafka: %s", errstr);
    }
    err = zetl_kafka_probe(rk, cfg, 10000, eb);
    rd_kafka_destroy(rk);
    if (err == ZETL_ERR_RETRY)
        err = ZETL_ERR_FATAL;
    return err;
}

/* The topic's partition count from the cluster's metadata; 0 when the topic does not exist. */
static enum zetl_err topic_partitions(rd_kafka_t *rk, const char *topic, int32_t *count,
                                      struct zetl_errbuf *eb)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err;

    *count = 0;
    if (rkt == NULL)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "kafka topic \"%s\": %s", topic,
                            rd_kafka_err2str(rd_kafka_last_error()));
    err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "metadata of kafka topic \"%s\": %s", topic,
                            rd_kafka_err2str(err));
    if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        *count = md->topics[0].partition_cnt;
    else if (md->topic_cnt == 1 && md->topics[0].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART &&
             md->topics[0].err != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) {
        err = md->topics[0].err;
        rd_kafka_metadata_destroy(md);
        return zetl_err_set(eb,
                            err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
                                    err == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION
                                ? ZETL_ERR_FATAL
                                : ZETL_ERR_RETRY,
                            "kafka topic \"%s\": %s", topic, rd_kafka_err2str(err));
    }
    rd_kafka_metadata_destroy(md);
    return ZETL_OK;
}

/* Asks the cluster to create the topic; a topic that exists by now is fine. */
static enum zetl_err create_topic(rd_kafka_t *rk, const struct zetl_config *cfg, const char *topic,
                                  int partitions, bool compact, struct zetl_errbuf *eb)
{
    char errstr[512];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(
        topic, partitions, cfg->kafka.replication_factor, errstr, sizeof(errstr));
    rd_kafka_queue_t *q;
    rd_kafka_event_t *ev;
    enum zetl_err err = ZETL_OK;

    if (nt == NULL)
        return zetl_err_set(eb, ZETL_ERR_USAGE, "kafka topic \"%s\": %s", topic, errstr);
    if (compact)
        rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
    q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opt, 10000, NULL, 0);
    rd_kafka_CreateTopics(rk, &nt, 1, opt, q);
    ev = rd_kafka_queue_poll(q, 15000);
    rd_kafka_AdminOptions_destroy(opt);
    if (ev == NULL) {
        /* Brokers without a controller to ask (a mock): the metadata check decides. */
        zetl_debug("kafka: creating topic \"%s\": no answer", topic);
    } else if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* Brokers without the CreateTopics API: leave it to their auto-creation. */
        zetl_debug("kafka: creating topic \"%s\": %s", topic, rd_kafka_event_error_string(ev));
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t n = 0;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
        /* Not allowed to create topics, say: fine when it exists already (checked next). */
        if (n == 1 && rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            zetl_debug("kafka: creating topic \"%s\": %s", topic,
                       rd_kafka_topic_result_error_string(tr[0]));
        else if (n == 1 && rd_kafka_topic_result_error(tr[0]) == RD_KAFKA_RESP_ERR_NO_ERROR)
            zetl_logmsg("created kafka topic \"%s\" with %d partitions", topic, partitions);
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return err;
}

enum zetl_err zetl_kafka_partitions(rd_kafka_t *rk, const struct zetl_config *cfg,
                                    const char *topic, int partitions, bool compact, int32_t *count,
                                    struct zetl_errbuf *eb)
{
    enum zetl_err err;

    /*
     * The producer asks for metadata without auto-creation (a broker that
     * creates topics on a metadata request would use its own defaults), so
     * a missing topic is created here with ours.
     */
    if ((err = topic_partitions(rk, topic, count, eb)) != ZETL_OK || *count > 0)
        return err;
    if ((err = create_topic(rk, cfg, topic, partitions, compact, eb)) != ZETL_OK)
        return err;
    /* Metadata may lag the creation a little. */
    for (int i = 0; i < 50; i++) {
        if ((err = topic_partitions(rk, topic, count, eb)) != ZETL_OK || *count > 0)
            return err;
        nanosleep(&(struct timespec){.tv_nsec = 200 * 1000000L}, NULL);
    }
    return zetl_err_set(eb, ZETL_ERR_FATAL,
                        "kafka topic \"%s\" does not exist and could not be created (create it, or "
                        "allow the brokers to auto-create topics)",
                        topic);
}

/* Reads [from, to) of partition 0, keeping the last value under `key`. */
static enum zetl_err scan(rd_kafka_t *rk, const char *topic, int64_t from, int64_t to,
                          const char *key, char **value, struct zetl_errbuf *eb)
{
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
    size_t klen = strlen(key);
    enum zetl_err err = ZETL_OK;
    int idle = 0;

    rd_kafka_topic_partition_list_add(tp, topic, 0)->offset = from;
    rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, tp);
    if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(tp);
        return zetl_err_set(eb, ZETL_ERR_RETRY, "could not read kafka topic \"%s\": %s", topic,
                            rd_kafka_err2str(aerr));
    }
    rd_kafka_topic_partition_list_destroy(tp);
    for (;;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (m == NULL) {
            /* The end of the partition is announced (enable.partition.eof): silence is trouble. */
            if (++idle >= 20) {
                err = zetl_err_set(eb, ZETL_ERR_RETRY,
                                   "reading kafka topic \"%s\": no answer within 10 s", topic);
                break;
            }
            continue;
        }
        idle = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            err = zetl_err_set(eb, ZETL_ERR_RETRY, "reading kafka topic \"%s\": %s", topic,
                               rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->key_len == klen && memcmp(m->key, key, klen) == 0 && m->payload != NULL) {
            free(*value);
            *value = zetl_strndup(m->payload, m->len);
        }
        bool done = m->offset >= to - 1;
        rd_kafka_message_destroy(m);
        if (done)
            break;
    }
    rd_kafka_assign(rk, NULL);
    return err;
}

enum zetl_err zetl_kafka_last_record(rd_kafka_t *rk, const char *topic, const char *key,
                                     char **value, struct zetl_errbuf *eb)
{
    int64_t lo = 0, hi = 0, window = 64;
    rd_kafka_resp_err_t rerr;
    enum zetl_err err;

    *value = NULL;
    rerr = rd_kafka_query_watermark_offsets(rk, topic, 0, &lo, &hi, 10000);
    if (rerr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        return ZETL_OK;
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "could not read the offsets of kafka topic \"%s\": %s", topic,
                            rd_kafka_err2str(rerr));
    /* Newest first: windows grow backwards from the end until one holds the key. */
    for (int64_t end = hi; end > lo; window *= 2) {
        int64_t from = end - window > lo ? end - window : lo;
        if ((err = scan(rk, topic, from, end, key, value, eb)) != ZETL_OK)
            return err;
        if (*value != NULL)
            return ZETL_OK;
        end = from;
    }
    return ZETL_OK;
}
