/*
 * libFuzzer target for the replication input path: CopyData frames and
 * pgoutput messages, decoded, rendered and fed to the relation cache.
 *
 * Input: one selector byte, then the bytes to decode.
 *   bits 0-1  protocol version - 1 (1..4)
 *   bit 2     start inside a streamed block
 *   bit 3     streaming = parallel (Stream Abort carries lsn + time on v4)
 *   bit 4     the rest is a CopyData frame; an XLogData payload goes on to pgoutput
 *   bit 5     the rest is a sequence of [Int16 length][message] for one decoder,
 *             so stream state carries across messages
 */

/* The fuzz build instruments every library (-fsanitize=fuzzer-no-link), so linking zetl_proto is
 * enough. */
#include "proto/copydata.h"
#include "proto/pgoutput.h"
#include "proto/relcache.h"

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct zetl_arena fz_arena;
static struct zetl_buf fz_out;
static bool fz_ready;

static void fz_consume(struct zetl_pgo_decoder *dec, struct zetl_relcache *rc, const uint8_t *p,
                       size_t n, uint64_t lsn)
{
    struct zetl_pgo_msg msg;
    struct zetl_errbuf eb;

    zetl_arena_reset(&fz_arena);
    if (zetl_pgoutput_decode(dec, p, n, lsn, &msg, &fz_arena, &eb) != ZETL_OK)
        return;
    zetl_buf_reset(&fz_out);
    zetl_pgoutput_describe(&msg, &fz_out);
    if (msg.kind == ZETL_PGO_RELATION) {
        struct zetl_relation *rel = zetl_relcache_update(rc, &msg);
        if (rel == NULL || rel != zetl_relcache_get(rc, msg.u.relation.relid))
            __builtin_trap();
    } else if (msg.kind == ZETL_PGO_TYPE) {
        zetl_relcache_update_type(rc, &msg);
        if (zetl_relcache_type_name(rc, msg.u.type.typoid) == NULL)
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct zetl_pgo_decoder dec;
    struct zetl_copydata cd;
    struct zetl_errbuf eb;

    if (!fz_ready) {
        zetl_arena_init(&fz_arena, 0);
        zetl_buf_init(&fz_out, 1 << 20);
        fz_ready = true;
    }
    if (size == 0)
        return 0;

    uint8_t sel = data[0];
    data++;
    size--;
    zetl_pgo_decoder_init(&dec, 1 + (sel & 3));
    dec.in_stream = (sel & 4) != 0;
    dec.parallel_abort = (sel & 8) != 0;
    struct zetl_relcache *rc = zetl_relcache_new();

    if (sel & 16) {
        if (zetl_copydata_decode(data, size, &cd, &eb) == ZETL_OK && cd.kind == 'w')
            fz_consume(&dec, rc, cd.data, cd.len, cd.wal_start);
    } else if (sel & 32) {
        while (size >= 2) {
            size_t n = (size_t)data[0] << 8 | data[1];
            data += 2;
            size -= 2;
            if (n > size)
                n = size;
            fz_consume(&dec, rc, data, n, size);
            data += n;
            size -= n;
        }
    } else {
        fz_consume(&dec, rc, data, size, 0);
        /* The same bytes as a CopyData frame too. */
        (void)zetl_copydata_decode(data, size, &cd, &eb);
    }
    zetl_relcache_free(rc);
    return 0;
}
