/* Status-update and receive-timeout timing of a replication connection. */
#include "replicator/status.h"

void zetl_status_connected(struct zetl_status *s, int64_t now_ms)
{
    s->last_status_ms = 0;
    s->reply_requested = false;
    zetl_status_heard(s, now_ms);
}

void zetl_status_heard(struct zetl_status *s, int64_t now_ms)
{
    s->last_recv_ms = now_ms;
    s->ping_sent = false;
}

bool zetl_status_due(const struct zetl_status *s, int64_t now_ms, uint64_t flush)
{
    return s->reply_requested || flush != s->reported_flush || s->last_status_ms == 0 ||
           now_ms - s->last_status_ms >= ZETL_STATUS_INTERVAL_MS;
}

void zetl_status_sent(struct zetl_status *s, int64_t now_ms, uint64_t flush)
{
    s->reported_flush = flush;
    s->last_status_ms = now_ms;
    s->reply_requested = false;
}

/*
 * A frozen walsender, or a connection that died without a word, sends
 * nothing.  After half the timeout ask the server for a reply (as
 * walreceiver does: the walsender answers with a keepalive even when idle);
 * after the whole timeout give the connection up.
 */
enum zetl_recv_state zetl_status_recv_check(const struct zetl_status *s, int64_t now_ms)
{
    int64_t silent = now_ms - s->last_recv_ms;

    if (silent >= s->receive_timeout_ms)
        return ZETL_RECV_TIMEOUT;
    if (silent >= s->receive_timeout_ms / 2 && !s->ping_sent)
        return ZETL_RECV_PING;
    return ZETL_RECV_OK;
}

int64_t zetl_status_deadline(const struct zetl_status *s)
{
    int64_t status = s->last_status_ms + ZETL_STATUS_INTERVAL_MS;
    int64_t recv =
        s->last_recv_ms + (s->ping_sent ? s->receive_timeout_ms : s->receive_timeout_ms / 2);

    if (s->reply_requested)
        return 0;
    return status < recv ? status : recv;
}

int zetl_poll_timeout(int64_t now_ms, const int64_t *deadlines, int n)
{
    int64_t wait = ZETL_STATUS_INTERVAL_MS;

    for (int i = 0; i < n; i++) {
        if (deadlines[i] < 0)
            continue;
        if (deadlines[i] - now_ms < wait)
            wait = deadlines[i] - now_ms;
    }
    return wait < 0 ? 0 : (int)wait;
}
