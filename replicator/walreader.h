/*
 * The replication connection of a stream: connect, START_REPLICATION on the
 * slot, read CopyData frames without blocking, standby status updates, the
 * receive timeout.  After START_REPLICATION nothing here blocks: frames come
 * from PQgetCopyData(conn, &buf, 1) and waiting is poll() with a timeout the
 * caller computes (zetl_walreader_deadline and its own deadlines).
 */
#ifndef ZETL_WALREADER_H
#define ZETL_WALREADER_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "proto/copydata.h"
#include "replicator/status.h"

struct zetl_walreader {
    const char *dsn;  /* borrowed: source.dsn */
    const char *slot; /* borrowed: slot and publication name */
    PGconn *conn;     /* owned; NULL when not connected */
    char *buf;        /* owned (libpq): the frame last returned by zetl_walreader_next */
    int proto_version;
    struct zetl_status status;
};

/* dsn and slot are borrowed and must outlive the reader. */
void zetl_walreader_init(struct zetl_walreader *rd, const char *dsn, const char *slot,
                         int64_t receive_timeout_ms);
/* Closes the connection (ending the copy first when `polite`). */
void zetl_walreader_close(struct zetl_walreader *rd, bool polite);

/*
 * Connects and starts replication from the slot's confirmed position.
 * `consumed_lsn` is only for the message when the slot turns out lost.
 * ZETL_ERR_RETRY for a broken connection or a busy slot (55006),
 * ZETL_ERR_FATAL for a dropped or invalidated slot.
 */
enum zetl_err zetl_walreader_start(struct zetl_walreader *rd, uint64_t consumed_lsn,
                                   struct zetl_errbuf *eb);

/*
 * The next frame already received, if any (*got); cd->data is valid until
 * the next call.  Keepalives update the status clock here.  ZETL_ERR_RETRY
 * when the server ended replication or the connection broke.
 */
enum zetl_err zetl_walreader_next(struct zetl_walreader *rd, struct zetl_copydata *cd, bool *got,
                                  struct zetl_errbuf *eb);

/*
 * Sends a standby status update reporting `flush` when one is due (or
 * `force`); with `ping` it asks the server for an immediate reply.
 */
enum zetl_err zetl_walreader_send_status(struct zetl_walreader *rd, uint64_t flush, bool force,
                                         bool ping, struct zetl_errbuf *eb);

/* Pings or gives up a silent connection (receive timeout); call when nothing was read. */
enum zetl_err zetl_walreader_check_timeout(struct zetl_walreader *rd, uint64_t flush,
                                           struct zetl_errbuf *eb);

/*
 * Waits up to timeout_ms for the socket (when `read`), the stop pipe or one
 * of the nextra descriptors of extra (-1 entries are skipped) to become
 * readable, then consumes what arrived on the socket.
 */
enum zetl_err zetl_walreader_poll(struct zetl_walreader *rd, bool read, const int *extra,
                                  int nextra, int timeout_ms, struct zetl_errbuf *eb);

#endif
