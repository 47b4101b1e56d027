/*
 * zetl load: Kafka -> warehouse.  Consumes the change topics that zetl run
 * publishes (kafka.topic_prefix) in the consumer group kafka.group,
 * read_committed, decodes each event back into a change and writes it with
 * the batcher, and applies each batch with the same merge as zetl run.  The
 * consumer offsets are stored in the warehouse in the batch's transaction
 * (zetl_wh_apply_kafka), one _zetl_offsets row per partition; Kafka's own
 * committed offsets follow for monitoring only.  A batch whose partitions
 * another loader of the group applied meanwhile (a rebalance) is dropped and
 * the partitions are read again from the warehouse's offsets: exactly-once
 * effect with any number of loaders (docs/kafka.md).
 */
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/backoff.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"
#include "proto/event.h"
#include "proto/relcache.h"
#include "replicator/bufdir.h"
#include "replicator/load.h"
#include "replicator/stop.h"
#include "sinks/archive.h"
#include "sinks/batch.h"
#include "sinks/kafka.h"
#include "sinks/kafka_registry.h"
#include "sinks/warehouse/wh.h"

#define EXIT_JOB 1
#define EXIT_USAGE 2

/* Milliseconds between the Unix epoch and the PostgreSQL epoch (2000-01-01). */
#define PG_EPOCH_UNIX_MS 946684800000LL

/* A partition the loader is assigned, and what the open batch holds of it. */
struct lpart {
    char *topic; /* owned */
    int32_t partition;
    char *key;       /* owned: "kafka:<group>/<topic>/<partition>" */
    uint64_t stored; /* next offset stored in the warehouse (0: none) */
    bool in_batch;   /* the open batch holds messages of it */
    uint64_t next;   /* offset after the batch's last message of it */
};

/* A value schema seen, with the relation the batcher takes its rows as. */
struct lschema {
    int32_t id;  /* registry id, or -1 */
    uint64_t fp; /* single-object fingerprint, or 0 */
    struct zetl_ev_schema *es;
    struct zetl_relation rel; /* cols owned (names borrowed from es) */
    uint16_t *out_index;      /* owned: identity */
    struct zetl_value *vals;  /* owned: one row's values */
    struct zetl_value *bvals; /* owned: an update's old row */
};

struct loader {
    const struct zetl_config *cfg; /* with warehouse.schema = --into */
    const char *group;
    rd_kafka_t *rk;
    rd_kafka_t *schemas_rk; /* reads <prefix>._zetl_schemas (no registry) */
    int64_t schemas_end;    /* offset read up to in it */
    json_t *schemas;        /* fingerprint hex -> schema JSON text */
    struct zetl_registry *reg;
    struct zetl_ev_decoder *dec;
    struct zetl_wh *wh;
    struct zetl_batch_writer *bw;
    struct zetl_buf tenant; /* the current message's tenant, NUL-terminated */
    char *spool;            /* owned: the batcher's spool directory */
    int lock_fd;
    bool from_time;
    int64_t from_ms;

    struct lpart *parts; /* owned, assigned partitions */
    size_t nparts;
    struct lschema **sch;
    size_t nsch;
    uint64_t batch_rows;
    int64_t batch_started_ms;
    uint64_t min_lsn, max_lsn;
    bool reseek; /* read the partitions again from the warehouse's offsets */
    enum zetl_err fatal;
    struct zetl_errbuf feb;
    uint64_t applied_batches, applied_rows;
};

/* ---- partitions ------------------------------------------------------------------ */

static struct lpart *part_find(struct loader *l, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < l->nparts; i++)
        if (l->parts[i].partition == partition && strcmp(l->parts[i].topic, topic) == 0)
            return &l->parts[i];
    return NULL;
}

static void parts_clear(struct loader *l)
{
    for (size_t i = 0; i < l->nparts; i++) {
        free(l->parts[i].topic);
        free(l->parts[i].key);
    }
    free(l->parts);
    l->parts = NULL;
    l->nparts = 0;
}

/* Throws the open batch away: nothing of it reached the warehouse. */
static void batch_drop(struct loader *l)
{
    zetl_batch_discard(l->bw);
    for (size_t i = 0; i < l->nparts; i++)
        l->parts[i].in_batch = false;
    l->batch_rows = 0;
    l->min_lsn = UINT64_MAX;
    l->max_lsn = 0;
}

/*
 * Sets each partition of `list` to where the warehouse says it stands, or
 * (nothing stored) to --from: the earliest offset or the first at the time.
 */
static enum zetl_err position(struct loader *l, rd_kafka_topic_partition_list_t *list,
                              struct zetl_errbuf *eb)
{
    bool by_time = false;
    enum zetl_err err;

    for (int i = 0; i < list->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &list->elems[i];
        struct lpart *p = part_find(l, tp->topic, tp->partition);
        if (p == NULL)
            continue;
        if ((err = zetl_wh_kafka_offset(l->wh, p->key, &p->stored, eb)) != ZETL_OK)
            return err;
        if (p->stored > 0) {
            tp->offset = (int64_t)p->stored;
        } else if (l->from_time) {
            tp->offset = l->from_ms;
            by_time = true;
        } else {
            tp->offset = RD_KAFKA_OFFSET_BEGINNING;
        }
    }
    if (by_time) {
        /* offsets_for_times wants every entry to be a time: resolve only those. */
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(list->cnt);
        for (int i = 0; i < list->cnt; i++)
            if (list->elems[i].offset >= 0 &&
                part_find(l, list->elems[i].topic, list->elems[i].partition)->stored == 0)
                rd_kafka_topic_partition_list_add(t, list->elems[i].topic, list->elems[i].partition)
                    ->offset = list->elems[i].offset;
        rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(l->rk, t, 10000);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_topic_partition_list_destroy(t);
            return zetl_err_set(eb, ZETL_ERR_RETRY,
                                "kafka: could not find the offsets at --from: %s",
                                rd_kafka_err2str(e));
        }
        for (int i = 0; i < t->cnt; i++) {
            rd_kafka_topic_partition_t *src = &t->elems[i];
            if (src->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                enum zetl_err r =
                    zetl_err_set(eb, ZETL_ERR_RETRY,
                                 "kafka: the offset of topic \"%s\" partition %d at --from: %s",
                                 src->topic, (int)src->partition, rd_kafka_err2str(src->err));
                rd_kafka_topic_partition_list_destroy(t);
                return r;
            }
            rd_kafka_topic_partition_t *dst =
                rd_kafka_topic_partition_list_find(list, src->topic, src->partition);
            /* -1: nothing at or after the time yet: start at the end. */
            dst->offset = src->offset >= 0 ? src->offset : RD_KAFKA_OFFSET_END;
        }
        rd_kafka_topic_partition_list_destroy(t);
    }
    return ZETL_OK;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *list, void *opaque)
{
    struct loader *l = opaque;
    struct zetl_errbuf eb;

    /* Whatever the open batch holds may now belong to another loader. */
    batch_drop(l);
    parts_clear(l);
    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        zetl_logmsg("load: %d partition(s) revoked", list->cnt);
        rd_kafka_assign(rk, NULL);
        return;
    }
    l->parts = zetl_calloc(list->cnt ? (size_t)list->cnt : 1, sizeof(*l->parts));
    for (int i = 0; i < list->cnt; i++) {
        struct lpart *p = &l->parts[l->nparts];
        struct zetl_buf k;
        if (zetl_kafka_meta_topic_name(list->elems[i].topic))
            continue;
        p->topic = zetl_strdup(list->elems[i].topic);
        p->partition = list->elems[i].partition;
        zetl_buf_init(&k, 0);
        zetl_buf_printf(&k, "kafka:%s/%s/%d", l->group, p->topic, (int)p->partition);
        p->key = k.data;
        l->nparts++;
    }
    for (int attempt = 0;; attempt++) {
        enum zetl_err e = position(l, list, &eb);
        if (e == ZETL_OK)
            break;
        if (e != ZETL_ERR_RETRY || attempt >= 30 || zetl_stop_requested()) {
            l->fatal = e == ZETL_ERR_RETRY ? ZETL_ERR_FATAL : e;
            zetl_err_set(&l->feb, l->fatal,
                         "could not read the kafka offsets from the warehouse: %s", eb.msg);
            break;
        }
        zetl_warn("load: %s; retrying", eb.msg);
        sleep(1);
    }
    zetl_logmsg("load: assigned %d partition(s)", list->cnt);
    rd_kafka_assign(rk, list);
}

/* Seeks every assigned partition back to the warehouse's offset. */
static enum zetl_err reseek(struct loader *l, struct zetl_errbuf *eb)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)l->nparts + 1);
    enum zetl_err err;

    for (size_t i = 0; i < l->nparts; i++)
        rd_kafka_topic_partition_list_add(list, l->parts[i].topic, l->parts[i].partition);
    if ((err = position(l, list, eb)) == ZETL_OK) {
        /* Seeking needs a fetched position: assign again, which resets it. */
        rd_kafka_resp_err_t e = rd_kafka_assign(l->rk, list);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            err =
                zetl_err_set(eb, ZETL_ERR_RETRY, "kafka: could not seek: %s", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(list);
    if (err == ZETL_OK)
        l->reseek = false;
    return err;
}

/* ---- schemas ----------------------------------------------------------------------- */

static void lschema_free(struct lschema *s)
{
    if (s == NULL)
        return;
    zetl_ev_schema_free(s->es);
    free(s->rel.cols);
    free(s->out_index);
    free(s->vals);
    free(s->bvals);
    free(s);
}

/* Builds the relation rows of this schema are written as (relcol names borrowed from es). */
static struct lschema *lschema_new(struct zetl_ev_schema *es)
{
    struct lschema *s = zetl_calloc(1, sizeof(*s));
    size_t n = zetl_ev_schema_ncols(es);

    s->es = es;
    s->rel.relname = (char *)zetl_ev_schema_table(es);
    s->rel.ncols = (uint16_t)n;
    s->rel.cols = zetl_calloc(n ? n : 1, sizeof(*s->rel.cols));
    s->out_index = zetl_calloc(n ? n : 1, sizeof(*s->out_index));
    s->vals = zetl_calloc(n ? n : 1, sizeof(*s->vals));
    s->bvals = zetl_calloc(n ? n : 1, sizeof(*s->bvals));
    for (size_t i = 0; i < n; i++) {
        const struct zetl_ev_col *c = zetl_ev_schema_col(es, i);
        s->rel.cols[i].name = (char *)c->name;
        s->rel.cols[i].typoid = c->typoid;
        s->rel.cols[i].key = c->key;
        s->rel.cols[i].type = c->type;
        s->out_index[i] = (uint16_t)i;
    }
    return s;
}

/* Reads the schemas topic from where it was left into l->schemas. */
static enum zetl_err schemas_refresh(struct loader *l, struct zetl_errbuf *eb)
{
    char *topic = zetl_kafka_meta_topic(l->cfg, ZETL_KAFKA_SCHEMAS_SUFFIX);
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t e;
    enum zetl_err err = ZETL_OK;

    e = rd_kafka_query_watermark_offsets(l->schemas_rk, topic, 0, &lo, &hi, 10000);
    if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        (e == RD_KAFKA_RESP_ERR_NO_ERROR && hi <= l->schemas_end)) {
        free(topic);
        return ZETL_OK;
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        err =
            zetl_err_set(eb, ZETL_ERR_RETRY, "kafka topic \"%s\": %s", topic, rd_kafka_err2str(e));
        free(topic);
        return err;
    }
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tp, topic, 0)->offset =
        l->schemas_end > lo ? l->schemas_end : lo;
    rd_kafka_assign(l->schemas_rk, tp);
    rd_kafka_topic_partition_list_destroy(tp);
    for (int idle = 0; idle < 20;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(l->schemas_rk, 500);
        if (m == NULL) {
            idle++;
            continue;
        }
        idle = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->key_len == 16 && m->payload) {
            char k[17];
            memcpy(k, m->key, 16);
            k[16] = '\0';
            json_object_set_new(l->schemas, k, json_stringn(m->payload, m->len));
        }
        l->schemas_end = m->offset + 1;
        bool done = m->offset >= hi - 1;
        rd_kafka_message_destroy(m);
        if (done)
            break;
    }
    rd_kafka_assign(l->schemas_rk, NULL);
    free(topic);
    return err;
}

/* The value schema of a message, by registry id or fingerprint; learned on first sight. */
static enum zetl_err schema_of(struct loader *l, int32_t id, uint64_t fp, struct lschema **out,
                               struct zetl_errbuf *eb)
{
    struct zetl_ev_schema *es = NULL;
    char *text = NULL;
    enum zetl_err err;

    for (size_t i = 0; i < l->nsch; i++)
        if ((id >= 0 && l->sch[i]->id == id) || (id < 0 && l->sch[i]->fp == fp)) {
            *out = l->sch[i];
            return ZETL_OK;
        }
    if (id >= 0) {
        if (l->reg == NULL)
            return zetl_err_set(eb, ZETL_ERR_FATAL,
                                "a message names schema registry id %d but kafka.schema_registry "
                                "is not set",
                                (int)id);
        if ((err = zetl_registry_get(l->reg, id, &text, eb)) != ZETL_OK)
            return err;
    } else {
        char k[17];
        snprintf(k, sizeof(k), "%016" PRIx64, fp);
        if (json_object_get(l->schemas, k) == NULL && (err = schemas_refresh(l, eb)) != ZETL_OK)
            return err;
        const char *s = json_string_value(json_object_get(l->schemas, k));
        /* Another stream's open transaction may hide a committed schema for a while. */
        if (s == NULL)
            return zetl_err_set(eb, ZETL_ERR_RETRY,
                                "no schema with fingerprint %s in kafka topic \"%s%s\" yet", k,
                                l->cfg->kafka.topic_prefix, ZETL_KAFKA_SCHEMAS_SUFFIX);
        text = zetl_strdup(s);
    }
    err = zetl_ev_schema_parse(text, strlen(text), &es, eb);
    free(text);
    if (err != ZETL_OK)
        return err;
    struct lschema *s = lschema_new(es);
    s->id = id;
    s->fp = fp;
    l->sch = zetl_realloc(l->sch, (l->nsch + 1) * sizeof(*l->sch));
    l->sch[l->nsch++] = s;
    *out = s;
    return ZETL_OK;
}

/* ---- messages ---------------------------------------------------------------------- */

/* Fills vals (n entries) from an image; unchanged: flags or NULL. */
static enum zetl_err fill_values(const struct lschema *s, struct zetl_value *vals,
                                 const char *const *v, const size_t *len,
                                 const unsigned char *unchanged, struct zetl_errbuf *eb)
{
    size_t n = zetl_ev_schema_ncols(s->es);

    for (size_t i = 0; i < n; i++) {
        if (unchanged && unchanged[i]) {
            vals[i].kind = ZETL_COL_UNCHANGED_TOAST;
            vals[i].val = (struct zetl_slice){NULL, 0};
        } else if (v[i] == NULL) {
            vals[i].kind = ZETL_COL_NULL;
            vals[i].val = (struct zetl_slice){NULL, 0};
        } else if (len[i] > UINT32_MAX) {
            return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "table \"%s\": a value of %zu bytes",
                                zetl_ev_schema_table(s->es), len[i]);
        } else {
            vals[i].kind = ZETL_COL_TEXT;
            vals[i].val = (struct zetl_slice){v[i], (uint32_t)len[i]};
        }
    }
    return ZETL_OK;
}

/*
 * Writes one decoded event as a transaction of its own, with its source
 * LSN and order: an update with its old row (REPLICA IDENTITY FULL) as the
 * before image and the new row, as zetl run writes them (the merge of a
 * table without a key removes the old row by it).
 */
static enum zetl_err write_change(struct loader *l, struct lschema *s,
                                  const struct zetl_ev_decoded *d, struct zetl_errbuf *eb)
{
    size_t n = zetl_ev_schema_ncols(s->es);
    const char *const *v = NULL;
    const size_t *len = NULL;
    struct zetl_row row = {0}, before = {0};
    const char *tenant;
    enum zetl_err err = ZETL_OK;

    switch (d->op) {
    case 'c':
    case 'r':
        row.op = ZETL_OP_INSERT;
        v = d->after, len = d->after_len;
        break;
    case 'u':
        row.op = ZETL_OP_UPDATE;
        v = d->after, len = d->after_len;
        break;
    case 'd':
        row.op = ZETL_OP_DELETE;
        v = d->before, len = d->before_len;
        break;
    case 't':
        row.op = ZETL_OP_TRUNCATE;
        break;
    default:
        err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "table \"%s\": unknown change op '%c'",
                           zetl_ev_schema_table(s->es), d->op);
        goto done;
    }
    if (row.op != ZETL_OP_TRUNCATE && v == NULL) {
        err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "table \"%s\": a '%c' change without its row",
                           zetl_ev_schema_table(s->es), d->op);
        goto done;
    }
    /* The envelope's unchanged list is about the new row (after); a delete's row is complete. */
    if (v != NULL &&
        (err = fill_values(s, s->vals, v, len, row.op == ZETL_OP_DELETE ? NULL : d->unchanged,
                           eb)) != ZETL_OK)
        goto done;
    /* NUL-terminated for the batcher, in a buffer reused across messages. */
    zetl_buf_reset(&l->tenant);
    zetl_buf_append(&l->tenant, d->tenant, d->tenant_len);
    tenant = l->tenant.data;
    row.target.tenant = tenant;
    row.target.table = zetl_ev_schema_table(s->es);
    row.target.nout = (uint16_t)n;
    row.target.out_index = s->out_index;
    row.rel = &s->rel;
    row.values = row.op == ZETL_OP_TRUNCATE ? NULL : s->vals;
    if (row.op == ZETL_OP_UPDATE && d->before != NULL) {
        if (d->src.seq == 0) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "table \"%s\": an update with its old row at order 0",
                               zetl_ev_schema_table(s->es));
            goto done;
        }
        if ((err = fill_values(s, s->bvals, d->before, d->before_len, NULL, eb)) != ZETL_OK)
            goto done;
        before = row;
        before.op = ZETL_OP_BEFORE;
        before.values = s->bvals;
    }
    int64_t commit_us = (d->src.ts_ms - PG_EPOCH_UNIX_MS) * 1000;
    if ((err = zetl_batch_begin_txn(l->bw, d->src.lsn, commit_us, eb)) != ZETL_OK)
        goto done;
    if (before.op == ZETL_OP_BEFORE) {
        zetl_batch_set_next_seq(l->bw, d->src.seq - 1);
        err = zetl_batch_add(l->bw, &before, eb);
    }
    if (err == ZETL_OK) {
        zetl_batch_set_next_seq(l->bw, d->src.seq);
        err = zetl_batch_add(l->bw, &row, eb);
    }
    if (err == ZETL_OK)
        err = zetl_batch_end_txn(l->bw, d->src.lsn, eb);
    if (err == ZETL_OK) {
        if (d->src.lsn < l->min_lsn)
            l->min_lsn = d->src.lsn;
        if (d->src.lsn > l->max_lsn)
            l->max_lsn = d->src.lsn;
    }
done:
    return err;
}

static enum zetl_err handle(struct loader *l, const rd_kafka_message_t *m, struct zetl_errbuf *eb)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    struct lpart *p = part_find(l, topic, m->partition);
    struct zetl_ev_decoded d;
    struct lschema *s = NULL;
    const void *body;
    size_t blen;
    int32_t id = -1;
    uint64_t fp = 0;
    enum zetl_err err;

    if (p == NULL || zetl_kafka_meta_topic_name(topic))
        return ZETL_OK;
    /*
     * Below the warehouse's offset: applied already.  The consumer gets here
     * when the stored offset is out of the log's range and auto.offset.reset
     * moved it back.
     */
    if (p->stored > 0 && (uint64_t)m->offset < p->stored)
        return ZETL_OK;
    if (m->payload != NULL) {
        enum zetl_ev_framing f = zetl_ev_frame(m->payload, m->len, &id, &fp, &body, &blen);
        if (f == ZETL_EV_FRAME_NONE)
            return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                                "kafka topic \"%s\" partition %d offset %" PRId64
                                ": not an Avro change event (zetl load reads kafka.format avro)",
                                topic, (int)m->partition, m->offset);
        if (f == ZETL_EV_FRAME_SINGLE_OBJECT)
            id = -1;
        if ((err = schema_of(l, id, fp, &s, eb)) != ZETL_OK ||
            (err = zetl_ev_decode_value(l->dec, s->es, ZETL_EV_AVRO, body, blen, &d, eb)) !=
                ZETL_OK ||
            (err = write_change(l, s, &d, eb)) != ZETL_OK) {
            zetl_err_prefix(eb, "kafka topic \"%s\" partition %d offset %" PRId64, topic,
                            (int)m->partition, m->offset);
            return err;
        }
        if (l->batch_rows++ == 0)
            l->batch_started_ms = zetl_now_ms();
    }
    /* A tombstone only moves the position. */
    p->in_batch = true;
    p->next = (uint64_t)m->offset + 1;
    return ZETL_OK;
}

/* Applies the open batch with the offsets of its partitions; drops it when fenced. */
static enum zetl_err flush(struct loader *l, struct zetl_errbuf *eb)
{
    struct zetl_batch *b = NULL;
    struct zetl_wh_kafka_pos *pos = NULL;
    struct zetl_buf man, path;
    size_t n = 0;
    uint64_t rows = 0;
    bool fenced = false;
    enum zetl_err err;

    if (l->batch_rows == 0)
        return ZETL_OK;
    if ((err = zetl_batch_seal(l->bw, &b, eb)) != ZETL_OK || b == NULL)
        return err;
    /* Changes of many streams and partitions: the batch spans all their LSNs. */
    b->first_lsn = l->min_lsn;
    b->last_lsn = b->end_lsn = l->max_lsn;
    zetl_buf_init(&man, 0);
    zetl_buf_init(&path, 0);
    zetl_archive_manifest(b, &man);
    zetl_buf_printf(&path, "%s/manifest.json", b->dir);
    if ((err = zetl_fs_write_file(path.data, man.data, man.len, eb)) != ZETL_OK)
        goto done;
    pos = zetl_calloc(l->nparts ? l->nparts : 1, sizeof(*pos));
    for (size_t i = 0; i < l->nparts; i++)
        if (l->parts[i].in_batch) {
            pos[n].key = l->parts[i].key;
            pos[n].start = l->parts[i].stored;
            pos[n].next = l->parts[i].next;
            n++;
        }
    err = zetl_wh_apply_kafka(l->wh, b->dir, pos, n, &rows, &fenced, eb);
    if (err == ZETL_OK && fenced) {
        l->reseek = true;
    } else if (err == ZETL_OK) {
        rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new((int)n + 1);
        for (size_t i = 0; i < l->nparts; i++)
            if (l->parts[i].in_batch) {
                l->parts[i].stored = l->parts[i].next;
                rd_kafka_topic_partition_list_add(c, l->parts[i].topic, l->parts[i].partition)
                    ->offset = (int64_t)l->parts[i].next;
            }
        /* Kafka's committed offsets are for lag monitoring; the warehouse's are the truth. */
        rd_kafka_commit(l->rk, c, 1);
        rd_kafka_topic_partition_list_destroy(c);
        l->applied_batches++;
        l->applied_rows += b->nrows;
        zetl_info("load: applied %" PRIu64 " changes from %zu partition(s), %" PRIu64
                  " rows merged",
                  b->nrows, n, rows);
    } else {
        /* Nothing committed: read the partitions again from the warehouse's offsets. */
        l->reseek = true;
    }
done:
    zetl_fs_rmtree(b->dir, &(struct zetl_errbuf){0});
    zetl_batch_free(b);
    free(pos);
    zetl_buf_release(&man);
    zetl_buf_release(&path);
    for (size_t i = 0; i < l->nparts; i++)
        l->parts[i].in_batch = false;
    l->batch_rows = 0;
    l->min_lsn = UINT64_MAX;
    l->max_lsn = 0;
    return err;
}

/* ---- setup ------------------------------------------------------------------------- */

static enum zetl_err consumer_new(struct loader *l, bool group, rd_kafka_t **out,
                                  struct zetl_errbuf *eb)
{
    rd_kafka_conf_t *conf = zetl_kafka_conf(l->cfg, eb);
    char errstr[512];

    if (conf == NULL)
        return ZETL_ERR_USAGE;
    if (zetl_kafka_conf_set(conf, "isolation.level", "read_committed", eb) != ZETL_OK ||
        zetl_kafka_conf_set(conf, "enable.auto.commit", "false", eb) != ZETL_OK ||
        zetl_kafka_conf_set(conf, "enable.partition.eof", group ? "false" : "true", eb) !=
            ZETL_OK ||
        /* The schemas reader only assigns, but librdkafka wants a group all the same. */
        zetl_kafka_conf_set(conf, "group.id", group ? l->group : "zetl-schemas", eb) != ZETL_OK ||
        (group &&
         zetl_kafka_conf_default(l->cfg, conf, "auto.offset.reset", "earliest", eb) != ZETL_OK) ||
        /* New change topics appear with new tables: find them soon. */
        (group && zetl_kafka_conf_default(l->cfg, conf, "topic.metadata.refresh.interval.ms",
                                          "10000", eb) != ZETL_OK)) {
        rd_kafka_conf_destroy(conf);
        return ZETL_ERR_USAGE;
    }
    if (group) {
        char v[256];
        size_t vn = sizeof(v);
        /* The rebalance callback assigns whole assignments: an eager protocol. */
        if (rd_kafka_conf_get(conf, "partition.assignment.strategy", v, &vn) == RD_KAFKA_CONF_OK &&
            strstr(v, "cooperative") != NULL) {
            rd_kafka_conf_destroy(conf);
            return zetl_err_set(eb, ZETL_ERR_USAGE,
                                "kafka.properties: partition.assignment.strategy \"%s\": zetl load "
                                "needs an eager strategy (range, roundrobin)",
                                v);
        }
        rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
        rd_kafka_conf_set_opaque(conf, l);
    }
    if ((*out = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr))) == NULL) {
        rd_kafka_conf_destroy(conf);
        return zetl_err_set(eb, ZETL_ERR_USAGE, "kafka: could not create a consumer: %s", errstr);
    }
    if (group)
        rd_kafka_poll_set_consumer(*out);
    return ZETL_OK;
}

/* Subscribes to every change topic of the prefix (a regular expression subscription). */
static enum zetl_err subscribe(struct loader *l, struct zetl_errbuf *eb)
{
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    struct zetl_buf re;
    rd_kafka_resp_err_t e;

    zetl_buf_init(&re, 0);
    zetl_buf_putc(&re, '^');
    for (const char *p = l->cfg->kafka.topic_prefix; *p; p++) {
        if (*p == '.')
            zetl_buf_putc(&re, '\\');
        zetl_buf_putc(&re, *p);
    }
    zetl_buf_puts(&re, "\\..*");
    rd_kafka_topic_partition_list_add(t, re.data, RD_KAFKA_PARTITION_UA);
    e = rd_kafka_subscribe(l->rk, t);
    rd_kafka_topic_partition_list_destroy(t);
    zetl_buf_release(&re);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "kafka: could not subscribe: %s",
                            rd_kafka_err2str(e));
    return ZETL_OK;
}

/* A spool directory of our own under buffer.dir: load/<n>, the first not locked by another. */
static enum zetl_err spool_claim(struct loader *l, struct zetl_errbuf *eb)
{
    struct zetl_buf p;
    enum zetl_err err = ZETL_OK;

    zetl_buf_init(&p, 0);
    for (int n = 0; n < 64; n++) {
        zetl_buf_reset(&p);
        zetl_buf_printf(&p, "%s/load/%d", l->cfg->buffer.dir, n);
        if ((err = zetl_fs_mkdirs(p.data, eb)) != ZETL_OK)
            break;
        if (zetl_fs_lock_dir(p.data, &l->lock_fd, eb) == ZETL_OK) {
            l->spool = zetl_strndup(p.data, p.len);
            break;
        }
        err = ZETL_ERR_FATAL;
    }
    zetl_buf_release(&p);
    return l->spool ? ZETL_OK : err;
}

static void loader_release(struct loader *l)
{
    if (l->rk) {
        rd_kafka_consumer_close(l->rk);
        rd_kafka_destroy(l->rk);
    }
    if (l->schemas_rk) {
        rd_kafka_consumer_close(l->schemas_rk);
        rd_kafka_destroy(l->schemas_rk);
    }
    zetl_batch_writer_free(l->bw);
    zetl_buf_release(&l->tenant);
    parts_clear(l);
    for (size_t i = 0; i < l->nsch; i++)
        lschema_free(l->sch[i]);
    free(l->sch);
    json_decref(l->schemas);
    zetl_registry_free(l->reg);
    zetl_ev_decoder_free(l->dec);
    zetl_wh_free(l->wh);
    if (l->lock_fd > 0)
        close(l->lock_fd);
    free(l->spool);
}

int zetl_cmd_load(const struct zetl_config *cfg, const struct zetl_load_opts *o)
{
    struct zetl_config into = *cfg;
    struct loader l = {0};
    struct zetl_buf group;
    struct zetl_errbuf eb;
    struct zetl_backoff bo;
    enum zetl_err err = ZETL_OK;
    int rc = EXIT_JOB;

    if (!cfg->kafka.enabled || cfg->warehouse.kind == ZETL_WH_NONE) {
        fprintf(stderr, "zetl load: %s needs both a kafka and a warehouse section\n", cfg->path);
        return EXIT_USAGE;
    }
    if (cfg->kafka.format != ZETL_KAFKA_AVRO) {
        fprintf(stderr,
                "zetl load: %s: kafka.format is json; zetl load reads the avro format (the json "
                "events carry no column types)\n",
                cfg->path);
        return EXIT_USAGE;
    }
    /* Its spool before the brokers and the warehouse, like zetl run. */
    if (zetl_bufdir_check(cfg, "load", &eb) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        return EXIT_JOB;
    }
    zetl_buf_init(&group, 0);
    zetl_buf_puts(&group, cfg->kafka.group);
    if (o->into != NULL) {
        into.warehouse.schema = (char *)o->into;
        /* A rebuild reads every partition: a group of its own, so the live loaders keep theirs. */
        zetl_buf_printf(&group, ".%s", o->into);
    }
    l.cfg = &into;
    l.group = group.data;
    l.from_time = o->from_set && !o->from_earliest;
    l.from_ms = o->from_usec / 1000;
    l.min_lsn = UINT64_MAX;
    l.lock_fd = -1;
    l.schemas = json_object();
    zetl_buf_init(&l.tenant, 0);
    l.dec = zetl_ev_decoder_new();
    if (cfg->kafka.schema_registry)
        l.reg = zetl_registry_new(cfg->kafka.schema_registry);

    if ((err = zetl_kafka_check(cfg, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        rc = err == ZETL_ERR_USAGE ? EXIT_USAGE : EXIT_JOB;
        goto done;
    }
    if ((err = zetl_wh_open(&into, &l.wh, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "could not open the warehouse: %s", eb.msg);
        rc = err == ZETL_ERR_USAGE ? EXIT_USAGE : EXIT_JOB;
        goto done;
    }
    if ((err = spool_claim(&l, &eb)) != ZETL_OK ||
        (err = zetl_batch_writer_new(l.spool, "kafka", cfg->transforms.tenant_column, NULL, &l.bw,
                                     &eb)) != ZETL_OK ||
        (err = consumer_new(&l, false, &l.schemas_rk, &eb)) != ZETL_OK ||
        (err = consumer_new(&l, true, &l.rk, &eb)) != ZETL_OK ||
        (err = subscribe(&l, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "load: %s", eb.msg);
        rc = err == ZETL_ERR_USAGE ? EXIT_USAGE : EXIT_JOB;
        goto done;
    }
    zetl_logmsg("load: consuming topics \"%s.*\" in group \"%s\" into schema \"%s\"",
                cfg->kafka.topic_prefix, l.group, into.warehouse.schema);
    zetl_backoff_init(&bo, 200, 10000);
    while (!zetl_stop_requested()) {
        rd_kafka_message_t *m;

        /*
         * After a batch was dropped, nothing is read until every partition is
         * back at the warehouse's offset: what was fetched past it would
         * otherwise be applied without the dropped messages before it.
         */
        if (l.reseek) {
            if ((err = reseek(&l, &eb)) != ZETL_OK) {
                if (err != ZETL_ERR_RETRY) {
                    zetl_log(ZETL_LOG_FATAL, "load: %s", eb.msg);
                    goto done;
                }
                int64_t ms = zetl_backoff_next(&bo);
                zetl_warn("load: %s; retrying in %lld ms", eb.msg, (long long)ms);
                usleep((useconds_t)ms * 1000);
                /* Serve the group (a rebalance assigns from the warehouse's offsets itself). */
                if ((m = rd_kafka_consumer_poll(l.rk, 0)) != NULL)
                    rd_kafka_message_destroy(m);
                continue;
            }
        }
        m = rd_kafka_consumer_poll(l.rk, 100);
        if (l.fatal != ZETL_OK) {
            if (m != NULL)
                rd_kafka_message_destroy(m);
            zetl_log(ZETL_LOG_FATAL, "load: %s", l.feb.msg);
            goto done;
        }
        err = ZETL_OK;
        if (m != NULL) {
            if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                err = handle(&l, m, &eb);
            } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                /* Transport trouble is retried by librdkafka; say so, do not stop. */
                zetl_warn("load: kafka: %s", rd_kafka_message_errstr(m));
            }
            rd_kafka_message_destroy(m);
            if (err == ZETL_ERR_RETRY) {
                /* A schema not visible yet, say: read the partitions again in a while. */
                zetl_warn("load: %s; reading the partitions again", eb.msg);
                batch_drop(&l);
                l.reseek = true;
                usleep((useconds_t)zetl_backoff_next(&bo) * 1000);
                continue;
            }
            if (err != ZETL_OK) {
                zetl_log(ZETL_LOG_FATAL, "load: %s", eb.msg);
                goto done;
            }
        }
        bool full = zetl_batch_should_seal(l.bw, cfg->buffer.max_rows, cfg->buffer.max_bytes,
                                           cfg->buffer.max_age_ms, zetl_now_ms());
        if (l.batch_rows > 0 && (m == NULL || full)) {
            err = flush(&l, &eb);
            if (err == ZETL_ERR_RETRY) {
                int64_t ms = zetl_backoff_next(&bo);
                zetl_warn("load: %s; retrying in %lld ms", eb.msg, (long long)ms);
                usleep((useconds_t)ms * 1000);
            } else if (err != ZETL_OK) {
                zetl_log(ZETL_LOG_FATAL, "load: %s", eb.msg);
                goto done;
            } else if (!l.reseek) {
                zetl_backoff_reset(&bo);
            }
        }
    }
    /* Stopped by a signal: the open batch is dropped; the warehouse's offsets say where it was. */
    batch_drop(&l);
    zetl_logmsg("load: stopped after %" PRIu64 " batch(es), %" PRIu64 " changes", l.applied_batches,
                l.applied_rows);
    rc = 0;
done:
    loader_release(&l);
    zetl_buf_release(&group);
    return rc;
}
