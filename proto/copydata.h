/*
 * The streaming replication CopyData envelope: XLogData ('w') and Primary
 * keepalive ('k') from the server, Standby status update ('r') to it.
 */
#ifndef ZETL_COPYDATA_H
#define ZETL_COPYDATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct zetl_copydata {
    char kind;            /* 'w' or 'k' */
    uint64_t wal_start;   /* 'w': dataStart */
    uint64_t wal_end;     /* 'w' and 'k': server's WAL end */
    int64_t send_time;    /* microseconds since 2000-01-01 */
    bool reply_requested; /* 'k' */
    const uint8_t *data;  /* 'w': borrowed payload (the pgoutput message) */
    size_t len;
};

/* Decodes one CopyData frame from the server. ZETL_ERR_PROTOCOL on anything malformed. */
enum zetl_err zetl_copydata_decode(const uint8_t *buf, size_t len, struct zetl_copydata *cd,
                                   struct zetl_errbuf *eb);

#define ZETL_STATUS_UPDATE_LEN 34

/* Encodes a Standby status update ('r'): 34 bytes into out. */
void zetl_copydata_encode_status(uint8_t out[ZETL_STATUS_UPDATE_LEN], uint64_t write_lsn,
                                 uint64_t flush_lsn, uint64_t apply_lsn, int64_t now_pg_usec,
                                 bool reply_requested);

/* Current time in microseconds since 2000-01-01 UTC. */
int64_t zetl_pg_now(void);

#endif
