/*
 * Change events: encoder and decoder state, message framing, and the
 * dispatch to the Avro (event_avro.c) and JSON (event_json.c) forms.
 *
 * Framing of Avro messages:
 *   Confluent:      Byte 0x00, Int32 schema id (big-endian), body
 *   single-object:  Byte 0xC3, Byte 0x01, Int64 CRC-64-AVRO fingerprint of the
 *                   schema's canonical form (little-endian), body
 */
#include "proto/event_int.h"

#include <stdlib.h>
#include <string.h>

#define FRAME_CONFLUENT_LEN 5
#define FRAME_SINGLE_OBJECT_LEN 10

struct zetl_ev_encoder *zetl_ev_encoder_new(void)
{
    struct zetl_ev_encoder *e = zetl_calloc(1, sizeof(*e));

    /* Float texts are a few dozen bytes; this only ever holds one. */
    zetl_buf_init(&e->tmp, 1 << 20);
    return e;
}

void zetl_ev_encoder_free(struct zetl_ev_encoder *e)
{
    if (e == NULL)
        return;
    zetl_buf_release(&e->tmp);
    free(e);
}

static bool frame_put(const struct zetl_ev_schema *s, enum zetl_ev_part part, int32_t schema_id,
                      struct zetl_buf *out)
{
    unsigned char h[FRAME_SINGLE_OBJECT_LEN];

    if (schema_id >= 0) {
        uint32_t id = (uint32_t)schema_id;

        h[0] = 0;
        h[1] = (unsigned char)(id >> 24);
        h[2] = (unsigned char)(id >> 16);
        h[3] = (unsigned char)(id >> 8);
        h[4] = (unsigned char)id;
        return zetl_buf_append(out, h, FRAME_CONFLUENT_LEN);
    }
    h[0] = 0xC3;
    h[1] = 0x01;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char)(s->fp[part] >> (8 * i));
    return zetl_buf_append(out, h, FRAME_SINGLE_OBJECT_LEN);
}

/* Undoes a partial append, so a failed encode leaves `out` as it was. */
static enum zetl_err encode_end(struct zetl_buf *out, size_t start, enum zetl_err err)
{
    if (err != ZETL_OK) {
        out->len = start;
        if (out->data != NULL)
            out->data[start] = '\0';
    }
    return err;
}

enum zetl_err zetl_ev_encode_key(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                                 enum zetl_ev_format f, int32_t schema_id, const char *tenant,
                                 size_t tenant_len, const char *const *vals, const size_t *lens,
                                 struct zetl_buf *out, struct zetl_errbuf *eb)
{
    size_t start = out->len;

    if (f == ZETL_EV_JSON)
        return encode_end(out, start, ev_json_key(e, s, tenant, tenant_len, vals, lens, out, eb));
    if (!frame_put(s, ZETL_EV_KEY, schema_id, out))
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "could not encode an event of table \"%s\": it would exceed %zu bytes",
                            s->table, out->max);
    return encode_end(out, start, ev_avro_key(e, s, tenant, tenant_len, vals, lens, out, eb));
}

enum zetl_err zetl_ev_encode_value(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                                   enum zetl_ev_format f, int32_t schema_id,
                                   const struct zetl_ev_change *c, struct zetl_buf *out,
                                   struct zetl_errbuf *eb)
{
    size_t start = out->len;

    if (f == ZETL_EV_JSON)
        return encode_end(out, start, ev_json_value(e, s, c, out, eb));
    if (!frame_put(s, ZETL_EV_VALUE, schema_id, out))
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "could not encode an event of table \"%s\": it would exceed %zu bytes",
                            s->table, out->max);
    return encode_end(out, start, ev_avro_value(e, s, c, out, eb));
}

enum zetl_ev_framing zetl_ev_frame(const void *msg, size_t len, int32_t *schema_id,
                                   uint64_t *fingerprint, const void **body, size_t *body_len)
{
    const unsigned char *m = msg;

    if (len >= FRAME_CONFLUENT_LEN && m[0] == 0x00) {
        *schema_id = (int32_t)((uint32_t)m[1] << 24 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 8 |
                               (uint32_t)m[4]);
        *body = m + FRAME_CONFLUENT_LEN;
        *body_len = len - FRAME_CONFLUENT_LEN;
        return ZETL_EV_FRAME_CONFLUENT;
    }
    if (len >= FRAME_SINGLE_OBJECT_LEN && m[0] == 0xC3 && m[1] == 0x01) {
        uint64_t fp = 0;

        for (int i = 0; i < 8; i++)
            fp |= (uint64_t)m[2 + i] << (8 * i);
        *fingerprint = fp;
        *body = m + FRAME_SINGLE_OBJECT_LEN;
        *body_len = len - FRAME_SINGLE_OBJECT_LEN;
        return ZETL_EV_FRAME_SINGLE_OBJECT;
    }
    return ZETL_EV_FRAME_NONE;
}

struct zetl_ev_decoder *zetl_ev_decoder_new(void)
{
    struct zetl_ev_decoder *d = zetl_calloc(1, sizeof(*d));

    zetl_arena_init(&d->ar, 64 * 1024);
    return d;
}

void zetl_ev_decoder_free(struct zetl_ev_decoder *d)
{
    if (d == NULL)
        return;
    zetl_arena_release(&d->ar);
    free(d->before);
    free(d->after);
    free(d->before_len);
    free(d->after_len);
    free(d->unchanged);
    free(d);
}

enum zetl_err zetl_ev_decode_value(struct zetl_ev_decoder *d, const struct zetl_ev_schema *s,
                                   enum zetl_ev_format f, const void *body, size_t len,
                                   struct zetl_ev_decoded *out, struct zetl_errbuf *eb)
{
    if (body == NULL) /* an empty message: no pointer arithmetic on NULL */
        body = "";
    if (f == ZETL_EV_JSON)
        return ev_json_decode(d, s, body, len, out, eb);
    return ev_avro_decode(d, s, body, len, out, eb);
}
