/*
 * Unit tests of the loop's timing (replicator/status.c): when a status
 * update is due, when the receive timeout pings or gives up, and how long
 * the loop may wait in poll().
 */
#include "replicator/status.h"
#include "tests/unit/tap.h"

static void test_poll_timeout(void)
{
    int64_t none[2] = {-1, -1};
    int64_t d[3] = {1500, 1200, -1};
    int64_t past[2] = {900, 5000};

    /* No deadline: at most the status interval, never forever. */
    CHECK(zetl_poll_timeout(1000, none, 2) == ZETL_STATUS_INTERVAL_MS);
    CHECK(zetl_poll_timeout(1000, d, 3) == 200);
    CHECK(zetl_poll_timeout(1000, past, 2) == 0);
    CHECK(zetl_poll_timeout(1000, d, 0) == ZETL_STATUS_INTERVAL_MS);
    int64_t far[1] = {100000};
    CHECK(zetl_poll_timeout(1000, far, 1) == ZETL_STATUS_INTERVAL_MS);
}

static void test_status_due(void)
{
    struct zetl_status s = {0};

    s.receive_timeout_ms = 60000;
    zetl_status_connected(&s, 10000);
    CHECK(zetl_status_due(&s, 10000, 0)); /* the first update of a connection */
    zetl_status_sent(&s, 10000, 0x100);
    CHECK(!zetl_status_due(&s, 10500, 0x100));
    CHECK(zetl_status_due(&s, 10500, 0x200)); /* a new flush position goes out at once */
    CHECK(zetl_status_due(&s, 11000, 0x100)); /* and at least every interval */
    s.reply_requested = true;
    CHECK(zetl_status_due(&s, 10001, 0x100));
    CHECK(zetl_status_deadline(&s) == 0);
    zetl_status_sent(&s, 10001, 0x100);
    CHECK(!s.reply_requested);
    CHECK(zetl_status_deadline(&s) == 10001 + ZETL_STATUS_INTERVAL_MS);
}

static void test_receive_timeout(void)
{
    struct zetl_status s = {0};

    s.receive_timeout_ms = 4000;
    zetl_status_connected(&s, 1000);
    zetl_status_sent(&s, 1000, 0);
    CHECK(zetl_status_recv_check(&s, 2999) == ZETL_RECV_OK);
    CHECK(zetl_status_recv_check(&s, 3000) == ZETL_RECV_PING);
    s.ping_sent = true;
    CHECK(zetl_status_recv_check(&s, 4000) == ZETL_RECV_OK);
    CHECK(zetl_status_recv_check(&s, 5000) == ZETL_RECV_TIMEOUT);
    /* Status updates every second come before the ping and the timeout. */
    CHECK(zetl_status_deadline(&s) == 2000);
    zetl_status_sent(&s, 4500, 0);
    CHECK(zetl_status_deadline(&s) == 5000); /* the timeout, after the ping */
    zetl_status_heard(&s, 4600);
    CHECK(!s.ping_sent);
    CHECK(zetl_status_recv_check(&s, 6000) == ZETL_RECV_OK);
    CHECK(zetl_status_deadline(&s) == 5500);
}

int main(void)
{
    test_poll_timeout();
    test_status_due();
    test_receive_timeout();
    return zetl_tap_done();
}
