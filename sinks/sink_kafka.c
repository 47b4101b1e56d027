/*
 * Kafka as a sink: every change of a sealed batch becomes one message
 * (proto/event.h: key {tenant, primary key}, value the Debezium-compatible
 * envelope), and the whole batch is one Kafka transaction of a
 * transactional producer whose transactional.id belongs to the stream.  The
 * last message of the transaction is the stream's record in the offsets
 * topic (sinks/kafka.h): a read_committed consumer sees a batch whole or not
 * at all, and the record says how far the stream got, so the slot moves only
 * past what Kafka committed.
 *
 * It comes first in the registry: it reads the batch files where the
 * batcher sealed them, before the archive moves them.
 */
#include "sinks/sink.h"

#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "common/time.h"
#include "proto/event.h"
#include "sinks/batch_read.h"
#include "sinks/kafka.h"
#include "sinks/kafka_registry.h"

/* Milliseconds between the PostgreSQL epoch (2000-01-01) and the Unix epoch. */
#define PG_EPOCH_UNIX_MS 946684800000LL
/*
 * transaction.timeout.ms unless kafka.properties sets it: a batch holds whole
 * source transactions, so it must be able to take long; 15 minutes is the
 * brokers' default transaction.max.timeout.ms.
 */
#define KAFKA_TXN_TIMEOUT "900000"

/* A topic the stream publishes to, with this batch's offsets per partition. */
struct ktopic {
    char *name;            /* owned */
    rd_kafka_topic_t *rkt; /* owned; each message's opaque is this struct */
    int32_t partitions;
    int64_t *first, *last; /* owned, per partition: offsets of this batch's messages, -1: none */
};

/* One event schema: a topic and a column shape. */
struct kshape {
    char *sig; /* owned: topic, table, columns, NUL-separated */
    size_t siglen;
    struct ktopic *topic;      /* borrowed from the sink */
    struct zetl_ev_schema *es; /* owned */
    int32_t key_id, value_id;  /* schema registry ids; -1: single-object framing */
    bool announced;            /* registered, or committed to the schemas topic */
    bool announcing;           /* in the open transaction's schemas records */
};

/* The before image of a key-changing or REPLICA IDENTITY FULL update, kept for its U row. */
struct before {
    bool held;
    const struct zetl_batch_file *file;
    struct zetl_buf data; /* the values, back to back */
    const char **val;     /* owned, ncols: into data (NULL: SQL NULL), fixed up on use */
    size_t *off, *len;    /* owned, ncols */
    unsigned char *unch;  /* owned, ncols */
    size_t cap;
};

struct ksink {
    const struct zetl_config *cfg; /* borrowed */
    const char *stream;            /* borrowed */
    char *txn_id;                  /* owned */
    char *db;                      /* owned: the source database, for events */
    rd_kafka_t *rk;                /* owned producer; NULL until (re)created */
    rd_kafka_t *reader;            /* owned consumer for the offsets topic */
    bool txn_open;
    struct zetl_registry *reg; /* owned or NULL */
    struct zetl_ev_encoder *enc;
    enum zetl_ev_format format;
    size_t max_bytes; /* message.max.bytes of the producer */
    int call_ms;      /* how long a flush or transaction call may take: transaction.timeout.ms */
    bool reread;      /* a new producer: read where the stream stands before publishing */

    struct ktopic **topics; /* owned */
    size_t ntopics;
    struct kshape **shapes; /* owned */
    size_t nshapes;
    struct ktopic *offsets, *schemas; /* among topics */

    uint64_t last_lsn, end_lsn; /* what Kafka holds */

    /* Delivery reports of the open transaction. */
    rd_kafka_resp_err_t dr_err;
    char dr_what[256];
    uint64_t delivered;

    struct zetl_buf key, val, scratch, tenant;
    struct before bf;
    int64_t now_ms;
};

static bool kafka_configured(const struct zetl_config *cfg)
{
    return cfg->kafka.enabled;
}

/* ---- topics and schemas ---------------------------------------------------------- */

static void topic_free(struct ktopic *t)
{
    if (t == NULL)
        return;
    if (t->rkt)
        rd_kafka_topic_destroy(t->rkt);
    free(t->first);
    free(t->last);
    free(t->name);
    free(t);
}

/* Drops the producer's topic handles (before the producer goes). */
static void topics_detach(struct ksink *ks)
{
    for (size_t i = 0; i < ks->ntopics; i++)
        if (ks->topics[i]->rkt) {
            rd_kafka_topic_destroy(ks->topics[i]->rkt);
            ks->topics[i]->rkt = NULL;
        }
}

/* The topic `name`, looked up or made ready (created, partitions known, a producer handle). */
static enum zetl_err topic_get(struct ksink *ks, const char *name, int partitions, bool compact,
                               struct ktopic **out, struct zetl_errbuf *eb)
{
    struct ktopic *t = NULL;
    enum zetl_err err;

    for (size_t i = 0; i < ks->ntopics && t == NULL; i++)
        if (strcmp(ks->topics[i]->name, name) == 0)
            t = ks->topics[i];
    if (t == NULL) {
        int32_t n = 0;
        if ((err = zetl_kafka_partitions(ks->rk, ks->cfg, name, partitions, compact, &n, eb)) !=
            ZETL_OK)
            return err;
        t = zetl_calloc(1, sizeof(*t));
        t->name = zetl_strdup(name);
        t->partitions = n;
        t->first = zetl_malloc((size_t)n * sizeof(*t->first));
        t->last = zetl_malloc((size_t)n * sizeof(*t->last));
        for (int32_t p = 0; p < n; p++)
            t->first[p] = t->last[p] = -1;
        ks->topics = zetl_realloc(ks->topics, (ks->ntopics + 1) * sizeof(*ks->topics));
        ks->topics[ks->ntopics++] = t;
    }
    if (t->rkt == NULL) {
        if ((t->rkt = rd_kafka_topic_new(ks->rk, name, NULL)) == NULL)
            return zetl_err_set(eb, ZETL_ERR_FATAL, "kafka topic \"%s\": %s", name,
                                rd_kafka_err2str(rd_kafka_last_error()));
    }
    *out = t;
    return ZETL_OK;
}

static void shape_free(struct kshape *s)
{
    if (s == NULL)
        return;
    zetl_ev_schema_free(s->es);
    free(s->sig);
    free(s);
}

/* Publishes (registry) or queues in the transaction (schemas topic) the shape's schemas. */
static enum zetl_err shape_announce(struct ksink *ks, struct kshape *s, struct zetl_errbuf *eb);

/* The shape of rows of `file` going to topic `tname`. */
static enum zetl_err shape_get(struct ksink *ks, const struct zetl_batch *b,
                               const struct zetl_batch_file *file, const char *tname,
                               struct kshape **out, struct zetl_errbuf *eb)
{
    struct zetl_buf sig;
    struct kshape *s = NULL;
    enum zetl_err err;

    zetl_buf_init(&sig, 0);
    zetl_buf_printf(&sig, "%s%c%s", tname, 0, file->table);
    for (size_t i = 0; i < file->ncols; i++)
        zetl_buf_printf(&sig, "%c%s%c%s%c%d", 0, file->cols[i].name, 0, file->cols[i].type, 0,
                        file->cols[i].key);
    for (size_t i = 0; i < ks->nshapes && s == NULL; i++)
        if (ks->shapes[i]->siglen == sig.len && memcmp(ks->shapes[i]->sig, sig.data, sig.len) == 0)
            s = ks->shapes[i];
    if (s == NULL) {
        struct zetl_ev_col *cols = zetl_calloc(file->ncols ? file->ncols : 1, sizeof(*cols));
        struct zetl_buf ns;

        for (size_t i = 0; i < file->ncols; i++) {
            cols[i].name = file->cols[i].name;
            cols[i].type = file->cols[i].type;
            cols[i].typoid = file->cols[i].typoid;
            cols[i].key = file->cols[i].key;
        }
        s = zetl_calloc(1, sizeof(*s));
        s->sig = zetl_malloc(sig.len + 1);
        memcpy(s->sig, sig.data, sig.len + 1);
        s->siglen = sig.len;
        s->key_id = s->value_id = -1;
        zetl_buf_init(&ns, 0);
        zetl_buf_puts(&ns, tname);
        err = zetl_ev_schema_new(ns.data, file->table, b->tenant_column, cols, file->ncols, &s->es,
                                 eb);
        zetl_buf_release(&ns);
        free(cols);
        if (err == ZETL_OK)
            err = topic_get(ks, tname, ks->cfg->kafka.partitions, false, &s->topic, eb);
        if (err != ZETL_OK) {
            shape_free(s);
            zetl_buf_release(&sig);
            zetl_err_prefix(eb, "table \"%s\"", file->table);
            return err;
        }
        ks->shapes = zetl_realloc(ks->shapes, (ks->nshapes + 1) * sizeof(*ks->shapes));
        ks->shapes[ks->nshapes++] = s;
    }
    zetl_buf_release(&sig);
    if (!s->announced && !s->announcing && (err = shape_announce(ks, s, eb)) != ZETL_OK)
        return err;
    *out = s;
    return ZETL_OK;
}

/* ---- the producer ------------------------------------------------------------------ */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct ksink *ks = opaque;
    /* The message's opaque, not the topic's: a topic handle made earlier may carry none. */
    struct ktopic *t = m->_private;

    (void)rk;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (ks->dr_err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            ks->dr_err = m->err;
            snprintf(ks->dr_what, sizeof(ks->dr_what), "topic \"%s\" partition %d: %s",
                     rd_kafka_topic_name(m->rkt), (int)m->partition, rd_kafka_err2str(m->err));
        }
        return;
    }
    ks->delivered++;
    if (t != NULL && m->partition >= 0 && m->partition < t->partitions) {
        if (t->first[m->partition] < 0 || m->offset < t->first[m->partition])
            t->first[m->partition] = m->offset;
        if (m->offset > t->last[m->partition])
            t->last[m->partition] = m->offset;
    }
}

static void producer_drop(struct ksink *ks)
{
    if (ks->rk == NULL)
        return;
    topics_detach(ks);
    rd_kafka_purge(ks->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(ks->rk);
    ks->rk = NULL;
    ks->txn_open = false;
    for (size_t i = 0; i < ks->nshapes; i++)
        ks->shapes[i]->announcing = false;
}

/* A transaction call failed: the batch is retried, on a new producer when this one is done. */
static enum zetl_err txn_failed(struct ksink *ks, rd_kafka_error_t *error, const char *what,
                                struct zetl_errbuf *eb)
{
    enum zetl_err err =
        zetl_err_set(eb, ZETL_ERR_RETRY, "kafka: %s: %s", what, rd_kafka_error_string(error));
    bool fatal = rd_kafka_error_is_fatal(error);

    rd_kafka_error_destroy(error);
    if (!fatal && ks->txn_open) {
        rd_kafka_error_t *e2 = rd_kafka_abort_transaction(ks->rk, ks->call_ms);
        if (e2 == NULL) {
            ks->txn_open = false;
            for (size_t i = 0; i < ks->nshapes; i++)
                ks->shapes[i]->announcing = false;
            return err;
        }
        rd_kafka_error_destroy(e2);
    }
    producer_drop(ks);
    return err;
}

/* Creates the producer and fences any earlier one of the stream (init_transactions). */
static enum zetl_err producer_make(struct ksink *ks, struct zetl_errbuf *eb)
{
    rd_kafka_conf_t *conf;
    char errstr[512], v[32];
    size_t vn = sizeof(v);
    rd_kafka_error_t *error;

    if (ks->rk != NULL)
        return ZETL_OK;
    if ((conf = zetl_kafka_conf(ks->cfg, eb)) == NULL)
        return ZETL_ERR_USAGE;
    if (zetl_kafka_conf_set(conf, "transactional.id", ks->txn_id, eb) != ZETL_OK ||
        /* Java's partitioner: keys land where Kafka Streams and Connect expect them. */
        zetl_kafka_conf_default(ks->cfg, conf, "partitioner", "murmur2_random", eb) != ZETL_OK ||
        zetl_kafka_conf_default(ks->cfg, conf, "linger.ms", "5", eb) != ZETL_OK ||
        /* Topics are created with kafka.partitions, not a broker's defaults (kafka.c). */
        zetl_kafka_conf_default(ks->cfg, conf, "allow.auto.create.topics", "false", eb) !=
            ZETL_OK ||
        zetl_kafka_conf_default(ks->cfg, conf, "batch.num.messages", "10000", eb) != ZETL_OK ||
        /* Bounded memory: the queue never holds more than this (invariant 4). */
        zetl_kafka_conf_default(ks->cfg, conf, "queue.buffering.max.kbytes", "4096", eb) !=
            ZETL_OK ||
        /* librdkafka counts only payloads against the bytes: bookkeeping needs a count too. */
        zetl_kafka_conf_default(ks->cfg, conf, "queue.buffering.max.messages", "20000", eb) !=
            ZETL_OK ||
        zetl_kafka_conf_default(ks->cfg, conf, "transaction.timeout.ms", KAFKA_TXN_TIMEOUT, eb) !=
            ZETL_OK) {
        rd_kafka_conf_destroy(conf);
        return ZETL_ERR_USAGE;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, ks);
    if (rd_kafka_conf_get(conf, "message.max.bytes", v, &vn) == RD_KAFKA_CONF_OK)
        ks->max_bytes = strtoull(v, NULL, 10);
    vn = sizeof(v);
    if (rd_kafka_conf_get(conf, "transaction.timeout.ms", v, &vn) == RD_KAFKA_CONF_OK)
        ks->call_ms = atoi(v);
    if (ks->call_ms <= 0)
        ks->call_ms = 60000;
    if ((ks->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))) == NULL) {
        rd_kafka_conf_destroy(conf);
        return zetl_err_set(eb, ZETL_ERR_USAGE, "kafka: could not create a producer: %s", errstr);
    }
    if ((error = rd_kafka_init_transactions(ks->rk, ks->call_ms)) != NULL)
        return txn_failed(ks, error, "could not initialize transactions", eb);
    /*
     * The producer this one replaces may have committed its last transaction
     * after all (a commit that timed out goes on in the background): where
     * the stream stands is read again before anything is published.
     */
    ks->reread = true;
    return ZETL_OK;
}

/* ---- reading back where the stream stands ---------------------------------------- */

static enum zetl_err reader_make(struct ksink *ks, struct zetl_errbuf *eb)
{
    rd_kafka_conf_t *conf;
    char errstr[512];

    if ((conf = zetl_kafka_conf(ks->cfg, eb)) == NULL)
        return ZETL_ERR_USAGE;
    /* librdkafka wants a group even for assign(); nothing is ever committed in it. */
    if (zetl_kafka_conf_set(conf, "group.id", ks->txn_id, eb) != ZETL_OK ||
        zetl_kafka_conf_set(conf, "isolation.level", "read_committed", eb) != ZETL_OK ||
        zetl_kafka_conf_set(conf, "enable.partition.eof", "true", eb) != ZETL_OK ||
        zetl_kafka_conf_set(conf, "enable.auto.commit", "false", eb) != ZETL_OK) {
        rd_kafka_conf_destroy(conf);
        return ZETL_ERR_USAGE;
    }
    if ((ks->reader = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr))) == NULL) {
        rd_kafka_conf_destroy(conf);
        return zetl_err_set(eb, ZETL_ERR_USAGE, "kafka: could not create a consumer: %s", errstr);
    }
    return ZETL_OK;
}

/* An LSN of the offsets record: a decimal string. */
static bool json_lsn(json_t *o, const char *k, uint64_t *v)
{
    const char *s = json_string_value(json_object_get(o, k));
    char *end;

    if (s == NULL)
        return false;
    *v = strtoull(s, &end, 10);
    return *end == '\0' && end != s;
}

/* Where the stream stands in Kafka: its newest record in the offsets topic. */
static enum zetl_err read_position(struct ksink *ks, struct zetl_errbuf *eb)
{
    char *value = NULL;
    enum zetl_err err;
    json_t *j;

    if ((err = zetl_kafka_last_record(ks->reader, ks->offsets->name, ks->stream, &value, eb)) !=
        ZETL_OK)
        return err;
    ks->last_lsn = ks->end_lsn = 0;
    if (value == NULL)
        return ZETL_OK;
    j = json_loads(value, 0, NULL);
    free(value);
    if (j == NULL || !json_lsn(j, "last_lsn", &ks->last_lsn) ||
        !json_lsn(j, "end_lsn", &ks->end_lsn)) {
        json_decref(j);
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "kafka topic \"%s\": the record of stream \"%s\" is not zetl's",
                            ks->offsets->name, ks->stream);
    }
    json_decref(j);
    return ZETL_OK;
}

/* ---- open and close --------------------------------------------------------------- */

static void kafka_close(void *state)
{
    struct ksink *ks = state;

    if (ks == NULL)
        return;
    if (ks->rk && ks->txn_open) {
        rd_kafka_error_t *e = rd_kafka_abort_transaction(ks->rk, 5000);
        if (e)
            rd_kafka_error_destroy(e);
        ks->txn_open = false;
    }
    topics_detach(ks);
    if (ks->rk)
        rd_kafka_destroy(ks->rk);
    if (ks->reader) {
        rd_kafka_consumer_close(ks->reader);
        rd_kafka_destroy(ks->reader);
    }
    for (size_t i = 0; i < ks->nshapes; i++)
        shape_free(ks->shapes[i]);
    free(ks->shapes);
    for (size_t i = 0; i < ks->ntopics; i++)
        topic_free(ks->topics[i]);
    free(ks->topics);
    zetl_ev_encoder_free(ks->enc);
    zetl_registry_free(ks->reg);
    zetl_buf_release(&ks->key);
    zetl_buf_release(&ks->val);
    zetl_buf_release(&ks->scratch);
    zetl_buf_release(&ks->tenant);
    zetl_buf_release(&ks->bf.data);
    free(ks->bf.val);
    free(ks->bf.off);
    free(ks->bf.len);
    free(ks->bf.unch);
    free(ks->txn_id);
    free(ks->db);
    free(ks);
}

/* The source database's name, from source.dsn. */
static char *dsn_dbname(const char *dsn)
{
    PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
    char *db = NULL, *user = NULL;

    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
    }
    /* libpq's own default: the database named like the user. */
    db = zetl_strdup(db ? db : user ? user : "");
    PQconninfoFree(opts);
    return db;
}

static enum zetl_err kafka_open(const struct zetl_sink_env *env, void **state,
                                struct zetl_sink_pos *pos, struct zetl_errbuf *eb)
{
    const struct zetl_config *cfg = env->cfg;
    struct ksink *ks = zetl_calloc(1, sizeof(*ks));
    struct zetl_buf b;
    char *name;
    enum zetl_err err;

    ks->cfg = cfg;
    ks->stream = env->stream;
    ks->format = cfg->kafka.format == ZETL_KAFKA_JSON ? ZETL_EV_JSON : ZETL_EV_AVRO;
    ks->db = dsn_dbname(cfg->source.dsn ? cfg->source.dsn : "");
    ks->max_bytes = 1000000;
    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "zetl.%s.%s", cfg->kafka.topic_prefix, env->stream);
    ks->txn_id = b.data;
    zetl_buf_init(&ks->key, 0);
    zetl_buf_init(&ks->val, 0);
    zetl_buf_init(&ks->scratch, 0);
    zetl_buf_init(&ks->tenant, 0);
    zetl_buf_init(&ks->bf.data, 0);
    ks->enc = zetl_ev_encoder_new();
    if (cfg->kafka.schema_registry && ks->format == ZETL_EV_AVRO)
        ks->reg = zetl_registry_new(cfg->kafka.schema_registry);

    if ((err = producer_make(ks, eb)) != ZETL_OK ||
        (err = zetl_kafka_probe(ks->rk, cfg, 10000, eb)) != ZETL_OK)
        goto fail;
    name = zetl_kafka_offsets_topic(cfg, env->stream);
    err = topic_get(ks, name, 1, true, &ks->offsets, eb);
    free(name);
    if (err != ZETL_OK)
        goto fail;
    if (ks->reg == NULL && ks->format == ZETL_EV_AVRO) {
        name = zetl_kafka_meta_topic(cfg, ZETL_KAFKA_SCHEMAS_SUFFIX);
        err = topic_get(ks, name, 1, true, &ks->schemas, eb);
        free(name);
        if (err != ZETL_OK)
            goto fail;
    }
    if ((err = reader_make(ks, eb)) != ZETL_OK || (err = read_position(ks, eb)) != ZETL_OK)
        goto fail;
    ks->reread = false;
    pos->last_lsn = ks->last_lsn;
    pos->end_lsn = ks->end_lsn;
    if (ks->last_lsn > 0)
        zetl_logmsg("stream %s: kafka holds its changes up to commit lsn " ZETL_LSN_FMT, ks->stream,
                    ZETL_LSN_ARGS(ks->last_lsn));
    *state = ks;
    return ZETL_OK;
fail:
    kafka_close(ks);
    return err;
}

/* ---- publishing --------------------------------------------------------------------- */

/* Queues one message; waits for room when the producer's queue is full. */
static enum zetl_err produce(struct ksink *ks, struct ktopic *t, int32_t partition, const void *key,
                             size_t klen, const void *val, size_t vlen, struct zetl_errbuf *eb)
{
    /* A producer made again (after a fatal error) needs its topic handles again. */
    if (t->rkt == NULL && (t->rkt = rd_kafka_topic_new(ks->rk, t->name, NULL)) == NULL)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "kafka topic \"%s\": %s", t->name,
                            rd_kafka_err2str(rd_kafka_last_error()));
    for (;;) {
        if (rd_kafka_produce(t->rkt, partition, RD_KAFKA_MSG_F_COPY, (void *)val, vlen, key, klen,
                             t) == 0)
            return ZETL_OK;
        rd_kafka_resp_err_t e = rd_kafka_last_error();
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(ks->rk, 10);
            continue;
        }
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "kafka: could not queue a message for topic \"%s\": %s", t->name,
                            rd_kafka_err2str(e));
    }
}

/* Appends "(k1, k2)=(v1, v2)" of the key columns, for a message that names a row. */
static void key_text(struct zetl_buf *out, const struct zetl_batch_file *f, const char *const *val,
                     const size_t *len)
{
    bool first = true;

    zetl_buf_putc(out, '(');
    for (size_t i = 0; i < f->ncols; i++)
        if (f->cols[i].key) {
            zetl_buf_printf(out, "%s%s", first ? "" : ", ", f->cols[i].name);
            first = false;
        }
    zetl_buf_puts(out, ")=(");
    first = true;
    for (size_t i = 0; i < f->ncols; i++)
        if (f->cols[i].key) {
            zetl_buf_puts(out, first ? "" : ", ");
            if (val[i])
                zetl_buf_append(out, val[i], len[i] > 64 ? 64 : len[i]);
            else
                zetl_buf_puts(out, "NULL");
            first = false;
        }
    zetl_buf_putc(out, ')');
}

static enum zetl_err too_large(struct ksink *ks, const struct zetl_batch_file *f,
                               const char *tenant, size_t tlen, const char *const *val,
                               const size_t *len, size_t size, struct zetl_errbuf *eb)
{
    zetl_buf_reset(&ks->scratch);
    key_text(&ks->scratch, f, val, len);
    return zetl_err_set(eb, ZETL_ERR_FATAL,
                        "kafka: the change of table \"%s\", tenant \"%.*s\", key %s is %zu bytes, "
                        "more than message.max.bytes (%zu): raise it in kafka.properties (and the "
                        "topic's max.message.bytes)",
                        f->table, (int)tlen, tenant, ks->scratch.data, size, ks->max_bytes);
}

static bool is_snapshot_lsn(const struct zetl_batch *b, uint64_t lsn)
{
    size_t lo = 0, hi = b->nsnapshot_lsns;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (b->snapshot_lsns[mid] == lsn)
            return true;
        if (b->snapshot_lsns[mid] < lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* One event: its key and value encoded and queued (and a tombstone after a delete). */
static enum zetl_err publish(struct ksink *ks, struct kshape *s, const struct zetl_batch_file *f,
                             const struct zetl_ev_change *c, const char *const *kval,
                             const size_t *klen, struct zetl_errbuf *eb)
{
    int32_t kid = ks->reg ? s->key_id : -1, vid = ks->reg ? s->value_id : -1;
    enum zetl_err err;

    zetl_buf_reset(&ks->key);
    zetl_buf_reset(&ks->val);
    if ((err = zetl_ev_encode_value(ks->enc, s->es, ks->format, vid, c, &ks->val, eb)) != ZETL_OK)
        return err;
    if (c->op == 't') {
        /* A truncate has no key: it goes to every partition, ordered before what follows it. */
        for (int32_t p = 0; p < s->topic->partitions; p++)
            if ((err = produce(ks, s->topic, p, NULL, 0, ks->val.data, ks->val.len, eb)) != ZETL_OK)
                return err;
        return ZETL_OK;
    }
    if ((err = zetl_ev_encode_key(ks->enc, s->es, ks->format, kid, c->tenant, c->tenant_len, kval,
                                  klen, &ks->key, eb)) != ZETL_OK)
        return err;
    if (ks->max_bytes > 0 && ks->key.len + ks->val.len + 512 > ks->max_bytes)
        return too_large(ks, f, c->tenant, c->tenant_len, kval, klen, ks->key.len + ks->val.len,
                         eb);
    if ((err = produce(ks, s->topic, RD_KAFKA_PARTITION_UA, ks->key.data, ks->key.len, ks->val.data,
                       ks->val.len, eb)) != ZETL_OK)
        return err;
    if (c->op == 'd' && ks->cfg->kafka.tombstones)
        err = produce(ks, s->topic, RD_KAFKA_PARTITION_UA, ks->key.data, ks->key.len, NULL, 0, eb);
    return err;
}

/* Keeps the before image of rec until its U row comes. */
static void hold_before(struct ksink *ks, const struct zetl_batch_rec *rec)
{
    struct before *bf = &ks->bf;
    size_t n = rec->file->ncols;

    if (n > bf->cap) {
        bf->val = zetl_realloc(bf->val, n * sizeof(*bf->val));
        bf->off = zetl_realloc(bf->off, n * sizeof(*bf->off));
        bf->len = zetl_realloc(bf->len, n * sizeof(*bf->len));
        bf->unch = zetl_realloc(bf->unch, n);
        bf->cap = n;
    }
    zetl_buf_reset(&bf->data);
    for (size_t i = 0; i < n; i++) {
        bf->off[i] = rec->val[i] ? bf->data.len : SIZE_MAX;
        bf->len[i] = rec->val[i] ? rec->len[i] : 0;
        if (rec->val[i])
            zetl_buf_append(&bf->data, rec->val[i], rec->len[i]);
        bf->unch[i] = rec->unchanged ? rec->unchanged[i] : 0;
    }
    for (size_t i = 0; i < n; i++)
        bf->val[i] = bf->off[i] == SIZE_MAX ? NULL : bf->data.data + bf->off[i];
    bf->file = rec->file;
    bf->held = true;
}

/* True when the key columns of the held before image and rec differ. */
static bool key_changed(const struct ksink *ks, const struct zetl_batch_rec *rec)
{
    const struct zetl_batch_file *f = rec->file;

    for (size_t i = 0; i < f->ncols; i++) {
        if (!f->cols[i].key)
            continue;
        if ((ks->bf.val[i] == NULL) != (rec->val[i] == NULL))
            return true;
        if (rec->val[i] &&
            (ks->bf.len[i] != rec->len[i] || memcmp(ks->bf.val[i], rec->val[i], rec->len[i]) != 0))
            return true;
    }
    return false;
}

/* The change events of one row (with the before image held for it, if any). */
static enum zetl_err publish_rec(struct ksink *ks, const struct zetl_batch *b,
                                 const struct zetl_batch_rec *rec, struct kshape *s,
                                 struct zetl_errbuf *eb)
{
    const struct zetl_batch_file *f = rec->file;
    const char *const *val = (const char *const *)rec->val;
    struct zetl_ev_change c = {
        .tenant = rec->tenant,
        .tenant_len = rec->tenant_len,
        .unchanged = rec->any_unchanged ? rec->unchanged : NULL,
        .src =
            {
                .version = ZETL_VERSION,
                .name = ks->stream,
                .db = ks->db,
                .table = f->table,
                .ts_ms = rec->commit_us / 1000 + PG_EPOCH_UNIX_MS,
                .lsn = rec->lsn,
                .txid = -1,
                .seq = rec->seq,
            },
        .ts_ms = ks->now_ms,
    };
    enum zetl_err err;

    /* The tenant is the source schema, NUL-terminated for the event: copied when it changes. */
    if (ks->tenant.len != rec->tenant_len ||
        memcmp(ks->tenant.data, rec->tenant, rec->tenant_len)) {
        zetl_buf_reset(&ks->tenant);
        zetl_buf_append(&ks->tenant, rec->tenant, rec->tenant_len);
    }
    c.src.schema = ks->tenant.data;
    switch (rec->op) {
    case ZETL_OP_INSERT:
        c.src.snapshot = is_snapshot_lsn(b, rec->lsn);
        c.op = c.src.snapshot ? 'r' : 'c';
        c.after = val;
        c.after_len = rec->len;
        err = publish(ks, s, f, &c, val, rec->len, eb);
        break;
    case ZETL_OP_UPDATE:
        if (ks->bf.held && ks->bf.file == f && key_changed(ks, rec)) {
            /* A new key is a new row: a delete of the old key (and its tombstone), then a create.
             */
            struct zetl_ev_change d = c;
            d.op = 'd';
            d.before = ks->bf.val;
            d.before_len = ks->bf.len;
            d.unchanged = NULL;
            if ((err = publish(ks, s, f, &d, ks->bf.val, ks->bf.len, eb)) != ZETL_OK)
                break;
            c.op = 'c';
        } else {
            c.op = 'u';
            if (ks->bf.held && ks->bf.file == f) {
                c.before = ks->bf.val;
                c.before_len = ks->bf.len;
            }
        }
        c.after = val;
        c.after_len = rec->len;
        err = publish(ks, s, f, &c, val, rec->len, eb);
        break;
    case ZETL_OP_DELETE:
        c.op = 'd';
        c.before = val;
        c.before_len = rec->len;
        err = publish(ks, s, f, &c, val, rec->len, eb);
        break;
    case ZETL_OP_TRUNCATE:
        c.op = 't';
        c.unchanged = NULL;
        err = publish(ks, s, f, &c, NULL, NULL, eb);
        break;
    default:
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "kafka: unexpected change '%c' in table \"%s\"",
                           (char)rec->op, f->table);
        break;
    }
    ks->bf.held = false;
    return err;
}

static enum zetl_err shape_announce(struct ksink *ks, struct kshape *s, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    if (ks->format == ZETL_EV_JSON) /* self-describing: no schemas to publish */
        return ZETL_OK;
    if (ks->reg != NULL) {
        /* TopicNameStrategy: <topic>-key and <topic>-value. */
        char subject[512];
        snprintf(subject, sizeof(subject), "%s-key", s->topic->name);
        if ((err = zetl_registry_register(ks->reg, subject, zetl_ev_schema_json(s->es, ZETL_EV_KEY),
                                          &s->key_id, eb)) != ZETL_OK)
            return err;
        snprintf(subject, sizeof(subject), "%s-value", s->topic->name);
        if ((err =
                 zetl_registry_register(ks->reg, subject, zetl_ev_schema_json(s->es, ZETL_EV_VALUE),
                                        &s->value_id, eb)) != ZETL_OK)
            return err;
        s->announced = true;
        return ZETL_OK;
    }
    /* In the open transaction, before any message that needs them. */
    for (int part = ZETL_EV_KEY; part <= ZETL_EV_VALUE; part++) {
        char fp[17];
        const char *json = zetl_ev_schema_json(s->es, (enum zetl_ev_part)part);
        snprintf(fp, sizeof(fp), "%016" PRIx64,
                 zetl_ev_schema_fingerprint(s->es, (enum zetl_ev_part)part));
        if ((err = produce(ks, ks->schemas, 0, fp, 16, json, strlen(json), eb)) != ZETL_OK)
            return err;
    }
    s->announcing = true;
    return ZETL_OK;
}

/* Waits until every queued message is delivered or failed. */
static enum zetl_err flush_all(struct ksink *ks, struct zetl_errbuf *eb)
{
    int64_t deadline = zetl_now_ms() + ks->call_ms;

    while (rd_kafka_outq_len(ks->rk) > 0) {
        if (zetl_now_ms() > deadline)
            return zetl_err_set(eb, ZETL_ERR_RETRY, "kafka: %d messages not delivered within %d ms",
                                rd_kafka_outq_len(ks->rk), ks->call_ms);
        rd_kafka_flush(ks->rk, 500);
    }
    if (ks->dr_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (ks->dr_err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
            return zetl_err_set(eb, ZETL_ERR_FATAL,
                                "kafka: a message was refused as too large (%s): raise the topic's "
                                "max.message.bytes",
                                ks->dr_what);
        return zetl_err_set(eb, ZETL_ERR_RETRY, "kafka: delivery failed: %s", ks->dr_what);
    }
    return ZETL_OK;
}

/* The stream's record for the offsets topic: where it stands, and what this batch wrote. */
static void offsets_record(struct ksink *ks, const struct zetl_batch *b, uint64_t rows,
                           struct zetl_buf *out)
{
    bool tfirst = true;

    zetl_buf_reset(out);
    zetl_buf_printf(out,
                    "{\"stream\":\"%s\",\"last_lsn\":\"%" PRIu64 "\",\"end_lsn\":\"%" PRIu64
                    "\",\"batch\":\"%016" PRIX64 "-%016" PRIX64 "\",\"rows\":%" PRIu64
                    ",\"positions\":{",
                    ks->stream, b->last_lsn, b->end_lsn, b->first_lsn, b->last_lsn, rows);
    for (size_t i = 0; i < ks->ntopics; i++) {
        struct ktopic *t = ks->topics[i];
        bool pfirst = true;
        if (t == ks->offsets)
            continue;
        for (int32_t p = 0; p < t->partitions; p++) {
            if (t->first[p] < 0)
                continue;
            if (pfirst)
                zetl_buf_printf(out, "%s\"%s\":{", tfirst ? "" : ",", t->name);
            zetl_buf_printf(out, "%s\"%d\":[%" PRId64 ",%" PRId64 "]", pfirst ? "" : ",", (int)p,
                            t->first[p], t->last[p]);
            pfirst = tfirst = false;
        }
        if (!pfirst)
            zetl_buf_putc(out, '}');
    }
    zetl_buf_puts(out, "}}");
}

static enum zetl_err publish_batch(struct ksink *ks, const struct zetl_batch *b, uint64_t *rows,
                                   struct zetl_errbuf *eb)
{
    struct zetl_batch_reader *r = NULL;
    const struct zetl_batch_rec *rec;
    const struct zetl_batch_file *last_file = NULL;
    char *last_tenant = NULL;
    struct kshape *s = NULL;
    enum zetl_err err;

    if ((err = zetl_batch_reader_open(b, b->dir, &r, eb)) != ZETL_OK)
        return err;
    while ((err = zetl_batch_reader_next(r, &rec, eb)) == ZETL_OK && rec != NULL) {
        /* What Kafka holds already (a batch formed again after a restart) is not sent twice. */
        if (rec->lsn <= ks->last_lsn)
            continue;
        if (rec->op == ZETL_OP_BEFORE) {
            hold_before(ks, rec);
            continue;
        }
        bool same_tenant =
            !ks->cfg->kafka.per_tenant || (last_tenant && strlen(last_tenant) == rec->tenant_len &&
                                           memcmp(last_tenant, rec->tenant, rec->tenant_len) == 0);
        if (rec->file != last_file || !same_tenant) {
            free(last_tenant);
            last_tenant = zetl_strndup(rec->tenant, rec->tenant_len);
            char *topic = zetl_kafka_topic(ks->cfg, rec->file->table, last_tenant);
            err = shape_get(ks, b, rec->file, topic, &s, eb);
            free(topic);
            if (err != ZETL_OK)
                break;
            last_file = rec->file;
        }
        if ((err = publish_rec(ks, b, rec, s, eb)) != ZETL_OK)
            break;
        if ((++*rows & 1023) == 0)
            rd_kafka_poll(ks->rk, 0);
    }
    free(last_tenant);
    zetl_batch_reader_free(r);
    return err;
}

static enum zetl_err kafka_put(void *state, const struct zetl_batch *b, struct zetl_errbuf *eb)
{
    struct ksink *ks = state;
    rd_kafka_error_t *error;
    uint64_t rows = 0;
    enum zetl_err err;

    if (b->last_lsn <= ks->last_lsn)
        return ZETL_OK;
    if ((err = producer_make(ks, eb)) != ZETL_OK)
        return err;
    if (ks->reread) {
        if ((err = read_position(ks, eb)) != ZETL_OK)
            return err;
        ks->reread = false;
        if (b->last_lsn <= ks->last_lsn)
            return ZETL_OK;
    }
    for (size_t i = 0; i < ks->ntopics; i++)
        for (int32_t p = 0; p < ks->topics[i]->partitions; p++)
            ks->topics[i]->first[p] = ks->topics[i]->last[p] = -1;
    ks->dr_err = RD_KAFKA_RESP_ERR_NO_ERROR;
    ks->delivered = 0;
    ks->now_ms = zetl_now_ms();
    ks->bf.held = false;
    if ((error = rd_kafka_begin_transaction(ks->rk)) != NULL)
        return txn_failed(ks, error, "could not begin a transaction", eb);
    ks->txn_open = true;

    if ((err = publish_batch(ks, b, &rows, eb)) != ZETL_OK || (err = flush_all(ks, eb)) != ZETL_OK)
        goto abort;
    /* The stream's record last, once every change is delivered (see kafka.h). */
    offsets_record(ks, b, rows, &ks->val);
    if ((err = produce(ks, ks->offsets, 0, ks->stream, strlen(ks->stream), ks->val.data,
                       ks->val.len, eb)) != ZETL_OK ||
        (err = flush_all(ks, eb)) != ZETL_OK)
        goto abort;
    /* A retriable commit error leaves the outcome open: committing again settles it. */
    for (int attempt = 0; (error = rd_kafka_commit_transaction(ks->rk, ks->call_ms)) != NULL &&
                          rd_kafka_error_is_retriable(error) && attempt < 10;
         attempt++) {
        zetl_warn("stream %s: kafka: committing the transaction again: %s", ks->stream,
                  rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    if (error != NULL)
        return txn_failed(ks, error, "could not commit the transaction", eb);
    ks->txn_open = false;
    for (size_t i = 0; i < ks->nshapes; i++)
        if (ks->shapes[i]->announcing) {
            ks->shapes[i]->announcing = false;
            ks->shapes[i]->announced = true;
        }
    ks->last_lsn = b->last_lsn;
    ks->end_lsn = b->end_lsn;
    zetl_debug("stream %s: kafka committed %" PRIu64 " changes up to commit lsn " ZETL_LSN_FMT,
               ks->stream, rows, ZETL_LSN_ARGS(b->last_lsn));
    return ZETL_OK;

abort:
    if (ks->rk && ks->txn_open) {
        error = rd_kafka_abort_transaction(ks->rk, ks->call_ms);
        ks->txn_open = false;
        if (error != NULL) {
            zetl_warn("stream %s: kafka: could not abort the transaction: %s", ks->stream,
                      rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            producer_drop(ks);
        }
        for (size_t i = 0; i < ks->nshapes; i++)
            ks->shapes[i]->announcing = false;
    }
    return err;
}

const struct zetl_sink_ops zetl_sink_kafka_ops = {
    .name = "kafka",
    .must_be_durable = true,
    .configured = kafka_configured,
    .open = kafka_open,
    .put = kafka_put,
    .close = kafka_close,
};
