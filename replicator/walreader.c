/* The replication connection: START_REPLICATION, non-blocking reads, status updates. */
#include "replicator/walreader.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "common/time.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/lsn.h"
#include "replicator/source.h"
#include "replicator/stop.h"
#include "sinks/batch.h"

void zetl_walreader_init(struct zetl_walreader *rd, const char *dsn, const char *slot,
                         int64_t receive_timeout_ms)
{
    memset(rd, 0, sizeof(*rd));
    rd->dsn = dsn;
    rd->slot = slot;
    rd->status.receive_timeout_ms = receive_timeout_ms;
}

void zetl_walreader_close(struct zetl_walreader *rd, bool polite)
{
    if (rd->buf != NULL) {
        PQfreemem(rd->buf);
        rd->buf = NULL;
    }
    if (rd->conn == NULL)
        return;
    if (polite)
        PQputCopyEnd(rd->conn, NULL);
    PQfinish(rd->conn);
    rd->conn = NULL;
}

/*
 * Classifies a failed START_REPLICATION.  A slot another process holds
 * (object_in_use: a second consumer, or a walsender left over from a broken
 * connection that the server has not noticed yet) is retried.  A slot that is
 * gone or invalidated is a clear stop: recreating it would skip, without a
 * trace, every change committed since what zetl consumed.
 */
static enum zetl_err start_failed(struct zetl_walreader *rd, const PGresult *res,
                                  uint64_t consumed_lsn, struct zetl_errbuf *eb)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    enum zetl_err err;

    if (PQstatus(rd->conn) != CONNECTION_OK || state == NULL || primary == NULL) {
        err = zetl_err_set(eb, ZETL_ERR_RETRY, "could not start replication on slot \"%s\": %s",
                           rd->slot, PQerrorMessage(rd->conn));
        /* Drop the trailing newline libpq leaves. */
        size_t n = strlen(eb->msg);
        if (n && eb->msg[n - 1] == '\n')
            eb->msg[n - 1] = '\0';
        return err;
    }
    if (strcmp(state, "55006") == 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "could not start replication: %s (another consumer, or a walsender "
                            "left over from a broken connection that the server has not ended yet)",
                            primary);
    if (strcmp(state, "42704") == 0 ||
        (strcmp(state, "55000") == 0 && strstr(primary, "can no longer get changes") != NULL))
        return zetl_err_set(
            eb, ZETL_ERR_FATAL,
            "replication slot \"%s\" was %s while zetl streamed from it (%s%s%s); zetl has "
            "consumed transactions up to commit lsn " ZETL_LSN_FMT
            ": the changes committed after that to this slot group's tenant schemas are lost to "
            "zetl, and it does not recreate the slot over the gap; to recover, follow \"A "
            "replication slot was lost\" in docs/operations.md (set the stream's archive and "
            "warehouse offset aside, restart, re-snapshot the slot group's tenants)",
            rd->slot, state[0] == '4' ? "dropped" : "invalidated", primary, detail ? ": " : "",
            detail ? detail : "", ZETL_LSN_ARGS(consumed_lsn));
    return zetl_err_set(eb, ZETL_ERR_FATAL, "could not start replication on slot \"%s\": %s",
                        rd->slot, primary);
}

enum zetl_err zetl_walreader_start(struct zetl_walreader *rd, uint64_t consumed_lsn,
                                   struct zetl_errbuf *eb)
{
    char app[128];
    struct zetl_buf cmd;
    PGresult *res;
    enum zetl_err err;
    int version;

    snprintf(app, sizeof(app), "zetl %s", rd->slot);
    if ((err = zetl_source_connect(rd->dsn, true, app, &rd->conn, eb)) != ZETL_OK)
        return err;
    version = PQserverVersion(rd->conn);
    rd->proto_version = version >= 160000 ? 4 : version >= 150000 ? 3 : 2;
    zetl_buf_init(&cmd, 0);
    /* Start at 0/0: the server resumes from the slot's confirmed flush position. */
    zetl_buf_printf(&cmd,
                    "START_REPLICATION SLOT \"%s\" LOGICAL 0/0 (proto_version '%d', "
                    "publication_names '\"%s\"', streaming 'on', messages 'true')",
                    rd->slot, rd->proto_version, rd->slot);
    res = PQexec(rd->conn, cmd.data);
    zetl_buf_release(&cmd);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        err = start_failed(rd, res, consumed_lsn, eb);
        PQclear(res);
        return err;
    }
    PQclear(res);
    zetl_logmsg("stream %s: replication started (protocol version %d, streaming on)", rd->slot,
                rd->proto_version);
    zetl_status_connected(&rd->status, zetl_now_ms());
    return ZETL_OK;
}

enum zetl_err zetl_walreader_next(struct zetl_walreader *rd, struct zetl_copydata *cd, bool *got,
                                  struct zetl_errbuf *eb)
{
    enum zetl_err err;
    int n;

    *got = false;
    if (rd->buf != NULL) {
        PQfreemem(rd->buf);
        rd->buf = NULL;
    }
    n = PQgetCopyData(rd->conn, &rd->buf, 1);
    if (n == 0)
        return ZETL_OK;
    if (n == -1) {
        PGresult *res = PQgetResult(rd->conn);
        err = zetl_err_set(eb, ZETL_ERR_RETRY, "server ended replication: %s",
                           res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res)
                                                               : "no error reported");
        PQclear(res);
        return err;
    }
    if (n < 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "could not read replication data: %s",
                            PQerrorMessage(rd->conn));
    if ((err = zetl_copydata_decode((const uint8_t *)rd->buf, (size_t)n, cd, eb)) != ZETL_OK)
        return err;
    if (cd->kind == 'k') {
        if (cd->wal_end > rd->status.received_lsn)
            rd->status.received_lsn = cd->wal_end;
        if (cd->reply_requested)
            rd->status.reply_requested = true;
    } else if (cd->wal_start > rd->status.received_lsn) {
        rd->status.received_lsn = cd->wal_start;
    }
    *got = true;
    return ZETL_OK;
}

enum zetl_err zetl_walreader_send_status(struct zetl_walreader *rd, uint64_t flush, bool force,
                                         bool ping, struct zetl_errbuf *eb)
{
    int64_t now = zetl_now_ms();
    uint8_t msg[ZETL_STATUS_UPDATE_LEN];
    uint64_t write;

    if (!force && !ping && !zetl_status_due(&rd->status, now, flush))
        return ZETL_OK;
    write = rd->status.received_lsn > flush ? rd->status.received_lsn : flush;
    zetl_copydata_encode_status(msg, write, flush, flush, zetl_pg_now(), ping);
    if (PQputCopyData(rd->conn, (const char *)msg, sizeof(msg)) != 1 || PQflush(rd->conn) < 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "could not send standby status update: %s",
                            PQerrorMessage(rd->conn));
    if (flush != rd->status.reported_flush)
        zetl_debug("stream %s: confirmed flush " ZETL_LSN_FMT, rd->slot, ZETL_LSN_ARGS(flush));
    zetl_status_sent(&rd->status, now, flush);
    return ZETL_OK;
}

enum zetl_err zetl_walreader_check_timeout(struct zetl_walreader *rd, uint64_t flush,
                                           struct zetl_errbuf *eb)
{
    int64_t now = zetl_now_ms();
    int64_t silent = now - rd->status.last_recv_ms;

    switch (zetl_status_recv_check(&rd->status, now)) {
    case ZETL_RECV_TIMEOUT:
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "receive timeout: no message from the server on slot \"%s\" for "
                            "%lld ms (source.receive_timeout_ms is %lld): the connection or its "
                            "walsender is not responding; dropping the connection",
                            rd->slot, (long long)silent, (long long)rd->status.receive_timeout_ms);
    case ZETL_RECV_PING:
        rd->status.ping_sent = true;
        zetl_debug("stream %s: nothing received for %lld ms, asking the server for a reply",
                   rd->slot, (long long)silent);
        return zetl_walreader_send_status(rd, flush, true, true, eb);
    default:
        return ZETL_OK;
    }
}

enum zetl_err zetl_walreader_poll(struct zetl_walreader *rd, bool read, const int *extra,
                                  int nextra, int timeout_ms, struct zetl_errbuf *eb)
{
    struct pollfd pfd[8];
    int n = 0, r;

    if (read)
        pfd[n++] = (struct pollfd){PQsocket(rd->conn), POLLIN, 0};
    /* Once a stop is seen the pipe stays readable: watching it then would spin. */
    if (zetl_stop_fd() >= 0 && !zetl_stop_requested())
        pfd[n++] = (struct pollfd){zetl_stop_fd(), POLLIN, 0};
    for (int i = 0; i < nextra && n < 8; i++)
        if (extra[i] >= 0)
            pfd[n++] = (struct pollfd){extra[i], POLLIN, 0};
    r = poll(pfd, (nfds_t)n, timeout_ms);
    if (r < 0 && errno != EINTR)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "poll failed: %s", strerror(errno));
    if (r > 0 && read && pfd[0].revents != 0 && PQconsumeInput(rd->conn) == 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "connection to source lost: %s",
                            PQerrorMessage(rd->conn));
    return ZETL_OK;
}
