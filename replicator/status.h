/*
 * Positions of a stream and the timing of its standby status updates and
 * receive timeout: plain state and pure functions of the clock, so the loop's
 * decisions (when to send, when to ping, how long to poll) are testable
 * without a server.
 */
#ifndef ZETL_STATUS_H
#define ZETL_STATUS_H

#include <stdbool.h>
#include <stdint.h>

#define ZETL_STATUS_INTERVAL_MS 1000 /* standby status update at least this often */

/* Where the stream is in the server's WAL (reader thread only). */
struct zetl_positions {
    /*
     * Commit LSN of the newest transaction queued to the sinks (or held by
     * them from an earlier run): the server's resends up to it are skipped.
     * Moves only when a batch is queued.
     */
    uint64_t last_sealed_lsn;
    uint64_t progress_lsn; /* how far the server has certainly sent us (commits, keepalives) */
    uint64_t idle_lsn;     /* confirmable when nothing is pending */
};

/* The replication connection's status-update and receive-timeout clock. */
struct zetl_status {
    int64_t receive_timeout_ms;
    uint64_t received_lsn;   /* newest WAL position seen (write position) */
    uint64_t reported_flush; /* flush position last sent */
    int64_t last_status_ms;  /* 0: none sent on this connection */
    bool reply_requested;    /* the server asked for an update */
    int64_t last_recv_ms;    /* when the server last sent anything, or we chose not to read */
    bool ping_sent;          /* an update asking for a reply went out since then */
};

/* What the receive timeout asks for at a given time. */
enum zetl_recv_state {
    ZETL_RECV_OK,      /* heard from the server recently enough */
    ZETL_RECV_PING,    /* half the timeout silent: ask the server for a reply */
    ZETL_RECV_TIMEOUT, /* the whole timeout silent: give the connection up */
};

/* A fresh connection at now_ms. */
void zetl_status_connected(struct zetl_status *s, int64_t now_ms);
/* The server sent something (or the reader chose not to read: not its silence). */
void zetl_status_heard(struct zetl_status *s, int64_t now_ms);
/* True when an update must go out now (forced, asked for, a new flush, or the interval). */
bool zetl_status_due(const struct zetl_status *s, int64_t now_ms, uint64_t flush);
/* Records an update sent at now_ms reporting `flush`. */
void zetl_status_sent(struct zetl_status *s, int64_t now_ms, uint64_t flush);
enum zetl_recv_state zetl_status_recv_check(const struct zetl_status *s, int64_t now_ms);
/* The next time the status or receive-timeout clock needs the loop (monotonic ms). */
int64_t zetl_status_deadline(const struct zetl_status *s);

/*
 * Milliseconds to wait in poll() at now_ms: until the earliest of the
 * deadlines (each < 0 means none), 0 when one has passed, and at most
 * ZETL_STATUS_INTERVAL_MS.
 */
int zetl_poll_timeout(int64_t now_ms, const int64_t *deadlines, int n);

#endif
