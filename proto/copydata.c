/*
 * The streaming replication CopyData envelope: decodes XLogData ('w') and
 * Primary keepalive ('k') frames, encodes Standby status updates ('r').
 */
#include "proto/copydata.h"

#include <string.h>
#include <time.h>

#include "proto/pgoutput.h"
#include "proto/reader.h"

/* Names the frame kind like the pgoutput decoder does: 'w' (0x77) or 0x00. */
static enum zetl_err cd_fail(struct zetl_errbuf *eb, uint8_t kind, const char *detail, size_t off)
{
    if (kind >= 0x20 && kind < 0x7f && kind != '\'' && kind != '\\')
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "malformed replication CopyData message '%c' (0x%02X): %s at byte "
                            "offset %zu",
                            kind, kind, detail, off);
    return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                        "malformed replication CopyData message 0x%02X: %s at byte offset %zu",
                        kind, detail, off);
}

/*
 * XLogData:          Byte1('w') Int64 dataStart, Int64 walEnd, Int64 sendTime, Byte(n) payload
 * Primary keepalive: Byte1('k') Int64 walEnd, Int64 sendTime, Byte1 replyRequested
 */
enum zetl_err zetl_copydata_decode(const uint8_t *buf, size_t len, struct zetl_copydata *cd,
                                   struct zetl_errbuf *eb)
{
    struct zetl_reader rd;

    memset(cd, 0, sizeof(*cd));
    if (len == 0)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "malformed replication CopyData message: empty message");
    zetl_reader_init(&rd, buf, len);
    uint8_t kind = zetl_reader_u8(&rd);
    switch (kind) {
    case 'w':
        cd->wal_start = zetl_reader_u64be(&rd);
        cd->wal_end = zetl_reader_u64be(&rd);
        cd->send_time = (int64_t)zetl_reader_u64be(&rd);
        if (rd.err)
            break;
        cd->len = zetl_reader_remaining(&rd);
        cd->data = zetl_reader_bytes(&rd, cd->len);
        break;
    case 'k':
        cd->wal_end = zetl_reader_u64be(&rd);
        cd->send_time = (int64_t)zetl_reader_u64be(&rd);
        /* The server sends 0 or 1; any other value is read as a request, like a C bool. */
        cd->reply_requested = zetl_reader_u8(&rd) != 0;
        break;
    default:
        return cd_fail(eb, kind, "unknown message type", 0);
    }
    if (rd.err)
        return cd_fail(eb, kind, "truncated", zetl_reader_offset(&rd));
    if (!zetl_reader_end(&rd))
        return cd_fail(eb, kind, "trailing bytes", zetl_reader_offset(&rd));
    cd->kind = (char)kind;
    return ZETL_OK;
}

static uint8_t *cd_put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(v >> (i * 8));
    return p;
}

/*
 * Standby status update: Byte1('r') Int64 write, Int64 flush, Int64 apply,
 * Int64 clientTime, Byte1 replyRequested
 */
void zetl_copydata_encode_status(uint8_t out[ZETL_STATUS_UPDATE_LEN], uint64_t write_lsn,
                                 uint64_t flush_lsn, uint64_t apply_lsn, int64_t now_pg_usec,
                                 bool reply_requested)
{
    uint8_t *p = out;

    *p++ = 'r';
    p = cd_put64(p, write_lsn);
    p = cd_put64(p, flush_lsn);
    p = cd_put64(p, apply_lsn);
    p = cd_put64(p, (uint64_t)now_pg_usec);
    *p = reply_requested ? 1 : 0;
}

int64_t zetl_pg_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - ZETL_PG_EPOCH_OFFSET_USEC;
}
