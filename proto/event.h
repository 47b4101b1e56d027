/*
 * Change events for Kafka: the Debezium-compatible envelope, its Avro schemas
 * (avro-c) and its JSON form, and the way back (zetl load).
 *
 * One event schema per (topic, column shape).  Its key is a record
 * {<tenant column>: string, <primary key columns>}; its value the envelope
 * {before, after: [null, Value], source: Source, op: string, ts_ms, unchanged:
 * array<string>}, where Value is {<tenant column>: string, <each column>:
 * [null, T]}.  Avro names must match [A-Za-z_][A-Za-z0-9_]*: a table or
 * column name that does not is adjusted (other characters become '_', a
 * leading digit gets a '_' in front, a clash gets "_<n>" appended) and the
 * source's own name is kept in the field's "pg.name" property, beside
 * "pg.type" (the type text of the manifest) and "pg.key"; the record's
 * "pg.table" and "zetl.tenant_column" properties name the table and the
 * tenant column.  Those properties are what zetl_ev_schema_parse reads back.
 *
 * Column types: bool -> boolean, int2/int4 -> int, int8 -> long,
 * float4 -> float, float8 -> double, bytea -> bytes, everything else ->
 * string holding PostgreSQL's text form (numeric, timestamps, json, arrays,
 * enums: exact, as the source printed them).  JSON: the same envelope, with
 * bytes as base64 text and non-finite floats as the strings "NaN",
 * "Infinity", "-Infinity".
 *
 * Framing of Avro messages: with a schema registry, the Confluent wire
 * format (magic 0, 4-byte big-endian schema id, body); without one, Avro
 * single-object encoding (C3 01, 8-byte little-endian CRC-64-AVRO
 * fingerprint of the schema's Parsing Canonical Form, body).  JSON messages
 * are unframed.
 */
#ifndef ZETL_EVENT_H
#define ZETL_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

/* A source column as the batch's manifest describes it. */
struct zetl_ev_col {
    const char *name; /* source column name, any text */
    const char *type; /* type text: "int4", "numeric(30,2)", "_text", "schema.enum", ... */
    uint32_t typoid;  /* decides the Avro type (see above); 0: by `type` */
    bool key;         /* part of the primary key (the message key) */
};

enum zetl_ev_part { ZETL_EV_KEY, ZETL_EV_VALUE };
enum zetl_ev_format { ZETL_EV_AVRO, ZETL_EV_JSON };

struct zetl_ev_schema;

/*
 * Builds the schemas of one topic and column shape: `ns` the Avro namespace
 * (a dotted name, each part adjusted as above; e.g. "zetl.users"), `table`
 * the source's (unioned) table name, `tenant_column` the tenant column's
 * name, cols (copied) in source order.  ZETL_ERR_USAGE when ncols is 0 or a
 * column name equals the tenant column.
 */
enum zetl_err zetl_ev_schema_new(const char *ns, const char *table, const char *tenant_column,
                                 const struct zetl_ev_col *cols, size_t ncols,
                                 struct zetl_ev_schema **out, struct zetl_errbuf *eb);
/*
 * Reads a value (envelope) schema this module wrote, from a registry or
 * the archive: table, tenant column and columns from its properties.
 * ZETL_ERR_PROTOCOL when it is not one (names what is missing).
 */
enum zetl_err zetl_ev_schema_parse(const char *json, size_t len, struct zetl_ev_schema **out,
                                   struct zetl_errbuf *eb);
void zetl_ev_schema_free(struct zetl_ev_schema *s); /* NULL: no-op */

const char *zetl_ev_schema_table(const struct zetl_ev_schema *s);
const char *zetl_ev_schema_tenant_column(const struct zetl_ev_schema *s);
size_t zetl_ev_schema_ncols(const struct zetl_ev_schema *s);
const struct zetl_ev_col *zetl_ev_schema_col(const struct zetl_ev_schema *s, size_t i);
/* True when the table has primary key columns (the key holds more than the tenant). */
bool zetl_ev_schema_keyed(const struct zetl_ev_schema *s);

/* The schema's JSON text, with the pg.* properties (what is registered and archived). */
const char *zetl_ev_schema_json(const struct zetl_ev_schema *s, enum zetl_ev_part part);
/* Its Parsing Canonical Form (Avro specification), and that form's CRC-64-AVRO fingerprint. */
const char *zetl_ev_schema_canonical(const struct zetl_ev_schema *s, enum zetl_ev_part part);
uint64_t zetl_ev_schema_fingerprint(const struct zetl_ev_schema *s, enum zetl_ev_part part);

/* CRC-64-AVRO (Rabin) of n bytes, as the Avro specification defines it. */
uint64_t zetl_ev_crc64_avro(const void *p, size_t n);

/* The Debezium `source` block of one change. */
struct zetl_ev_source {
    const char *version;   /* zetl's version */
    const char *name;      /* the stream (slot) */
    const char *db;        /* source database */
    const char *schema;    /* source schema (the tenant's) */
    const char *table;     /* source table */
    int64_t ts_ms;         /* commit time, Unix milliseconds */
    uint64_t lsn;          /* commit LSN */
    int64_t txid;          /* transaction id; -1: unknown (null) */
    uint32_t seq;          /* order of the change within its transaction */
    bool snapshot;         /* copied by a snapshot ("true"), else "false" */
};

/*
 * One change.  before/after: ncols values each, or NULL when the event has
 * no such image; a NULL entry is SQL NULL; lengths in the *_len arrays.
 * unchanged: ncols flags (nonzero: the column's value is not in the change,
 * an unchanged TOAST value; its entry is NULL) or NULL for none.
 */
struct zetl_ev_change {
    char op; /* 'c' insert, 'u' update, 'd' delete, 't' truncate, 'r' snapshot row */
    const char *tenant;
    size_t tenant_len;
    const char *const *before;
    const size_t *before_len;
    const char *const *after;
    const size_t *after_len;
    const unsigned char *unchanged;
    struct zetl_ev_source src;
    int64_t ts_ms; /* when zetl made the event, Unix milliseconds */
};

/* Reusable encoding state (avro-c values per schema); one per thread. */
struct zetl_ev_encoder;
struct zetl_ev_encoder *zetl_ev_encoder_new(void);
void zetl_ev_encoder_free(struct zetl_ev_encoder *e); /* NULL: no-op */

/*
 * Appends the key of a change to `out`: the tenant and, of vals (ncols
 * entries, NULL entries and non-key columns ignored), the key columns.
 * Avro framing: schema_id >= 0 Confluent with that id, -1 single-object.
 * ZETL_ERR_FATAL when a key value does not parse as its type (names the
 * column and type, never the value).
 */
enum zetl_err zetl_ev_encode_key(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                                 enum zetl_ev_format f, int32_t schema_id, const char *tenant,
                                 size_t tenant_len, const char *const *vals, const size_t *lens,
                                 struct zetl_buf *out, struct zetl_errbuf *eb);
/* Appends the envelope of change c to `out`; framing and errors as zetl_ev_encode_key. */
enum zetl_err zetl_ev_encode_value(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                                   enum zetl_ev_format f, int32_t schema_id,
                                   const struct zetl_ev_change *c, struct zetl_buf *out,
                                   struct zetl_errbuf *eb);

/* How an Avro message is framed (zetl_ev_frame). */
enum zetl_ev_framing { ZETL_EV_FRAME_NONE, ZETL_EV_FRAME_CONFLUENT, ZETL_EV_FRAME_SINGLE_OBJECT };

/*
 * Recognizes a message's framing: Confluent (*schema_id set) or
 * single-object (*fingerprint set); *body / *body_len the Avro body after
 * it.  FRAME_NONE when neither (a JSON message, or garbage).
 */
enum zetl_ev_framing zetl_ev_frame(const void *msg, size_t len, int32_t *schema_id,
                                   uint64_t *fingerprint, const void **body, size_t *body_len);

/* A decoded envelope; every pointer is into the decoder and valid until its next decode. */
struct zetl_ev_decoded {
    char op;
    const char *tenant;
    size_t tenant_len;
    bool has_before, has_after;
    const char *const *before; /* ncols entries (PostgreSQL text form; NULL: SQL NULL) */
    const size_t *before_len;
    const char *const *after;
    const size_t *after_len;
    const unsigned char *unchanged; /* ncols flags */
    struct zetl_ev_source src;      /* strings point into the decoder */
    int64_t ts_ms;
};

struct zetl_ev_decoder;
struct zetl_ev_decoder *zetl_ev_decoder_new(void);
void zetl_ev_decoder_free(struct zetl_ev_decoder *d); /* NULL: no-op */

/*
 * Decodes a value of schema s: an Avro body (framing removed) or a JSON
 * message.  Values come back in PostgreSQL's text form (bool "t"/"f",
 * integers in decimal, floats in shortest round-trip form, bytea as
 * "\x<hex>", strings as they were).  ZETL_ERR_PROTOCOL when the bytes do not
 * decode as s (names the table).
 */
enum zetl_err zetl_ev_decode_value(struct zetl_ev_decoder *d, const struct zetl_ev_schema *s,
                                   enum zetl_ev_format f, const void *body, size_t len,
                                   struct zetl_ev_decoded *out, struct zetl_errbuf *eb);

#endif
