/*
 * libFuzzer target for what `zetl load` reads from Kafka: change events
 * (Avro bodies and JSON messages) decoded with a fixed schema of every
 * column type, their framing, and event schemas from a registry.
 *
 * Input: one selector byte, then the bytes.
 *   bits 0-1  0: Avro body, 1: JSON message, 2: a framed Avro message,
 *             3: schema JSON for zetl_ev_schema_parse
 */
#include "proto/event.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct zetl_ev_col fz_cols[] = {
    {"id", "int8", 20, true},     {"name", "text", 25, true}, {"b", "bool", 16, false},
    {"i2", "int2", 21, false},    {"i4", "int4", 23, false},  {"f4", "float4", 700, false},
    {"f8", "float8", 701, false}, {"by", "bytea", 17, false}, {"n", "numeric", 1700, false},
};

static struct zetl_ev_schema *fz_schema;
static struct zetl_ev_decoder *fz_dec;

/* Every decoded value must be as long as its length says. */
static void fz_check(const struct zetl_ev_decoded *out, size_t ncols)
{
    for (size_t i = 0; i < ncols; i++) {
        if (out->has_before && out->before[i] != NULL &&
            strlen(out->before[i]) != out->before_len[i])
            __builtin_trap();
        if (out->has_after && out->after[i] != NULL && strlen(out->after[i]) != out->after_len[i])
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct zetl_errbuf eb;
    struct zetl_ev_decoded out;
    size_t n = sizeof(fz_cols) / sizeof(fz_cols[0]);

    if (fz_schema == NULL) {
        if (zetl_ev_schema_new("zetl.fuzz", "fuzz", "tenant_id", fz_cols, n, &fz_schema, &eb) !=
            ZETL_OK)
            __builtin_trap();
        fz_dec = zetl_ev_decoder_new();
    }
    if (size == 0)
        return 0;
    switch (data[0] & 3) {
    case 0:
    case 1:
        if (zetl_ev_decode_value(fz_dec, fz_schema, (data[0] & 3) ? ZETL_EV_JSON : ZETL_EV_AVRO,
                                 data + 1, size - 1, &out, &eb) == ZETL_OK)
            fz_check(&out, n);
        break;
    case 2: {
        int32_t id;
        uint64_t fp;
        const void *body;
        size_t len;

        if (zetl_ev_frame(data + 1, size - 1, &id, &fp, &body, &len) != ZETL_EV_FRAME_NONE &&
            zetl_ev_decode_value(fz_dec, fz_schema, ZETL_EV_AVRO, body, len, &out, &eb) == ZETL_OK)
            fz_check(&out, n);
        break;
    }
    default: {
        struct zetl_ev_schema *s = NULL;

        if (zetl_ev_schema_parse((const char *)data + 1, size - 1, &s, &eb) == ZETL_OK &&
            zetl_ev_schema_ncols(s) == 0)
            __builtin_trap();
        zetl_ev_schema_free(s);
        break;
    }
    }
    return 0;
}
