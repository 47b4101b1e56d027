/*
 * Unit tests of the sink runner and queue (replicator/sinkq.c) with sinks
 * defined here: batches go through the sinks in order, the flush position is
 * the minimum over the sinks that must be durable, ZETL_ERR_RETRY is retried
 * with backoff, a fatal error stops the queue, a stop while a sink is down
 * abandons it, catch-up (start) and idle notes run on the runner, and
 * archive retention removes only what every sink applied, above the keep
 * floor, at start and between batches.
 */
#include "replicator/sinkq.h"
#include "tests/unit/tap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/mem.h"
#include "replicator/stop.h"
#include "sinks/archive.h"

/* A scripted sink: what it was opened with, how it fails, what it saw. */
struct test_sink {
    const char *name;
    struct zetl_sink_pos open_pos;
    uint64_t start_end_lsn; /* start sets pos.end_lsn to this */
    int retries_left;       /* put returns ZETL_ERR_RETRY this many times */
    int start_retries;      /* start returns ZETL_ERR_RETRY this many times */
    bool always_retry;
    enum zetl_err fatal; /* put returns this when non-zero */
    bool gate;           /* put waits while set */
    int puts, starts;
    uint64_t noted;
};

static struct test_sink sinks[3];
static char order[256]; /* "a1 b1 a2 ..." sink name + batch seq, in call order */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static enum zetl_err t_open(struct test_sink *ts, void **state, struct zetl_sink_pos *pos)
{
    *state = ts;
    *pos = ts->open_pos;
    return ZETL_OK;
}

#define OPEN_FN(i)                                                                                 \
    static enum zetl_err t_open##i(const struct zetl_sink_env *env, void **state,                  \
                                   struct zetl_sink_pos *pos, struct zetl_errbuf *eb)              \
    {                                                                                              \
        (void)env;                                                                                 \
        (void)eb;                                                                                  \
        return t_open(&sinks[i], state, pos);                                                      \
    }
OPEN_FN(0)
OPEN_FN(1)
OPEN_FN(2)

static bool gate_closed(struct test_sink *ts)
{
    bool closed;

    pthread_mutex_lock(&mu);
    closed = ts->gate;
    pthread_mutex_unlock(&mu);
    return closed;
}

static enum zetl_err t_put(void *state, const struct zetl_batch *b, struct zetl_errbuf *eb)
{
    struct test_sink *ts = state;
    char item[16];

    while (gate_closed(ts)) {
        struct timespec ts1 = {0, 1000000};
        nanosleep(&ts1, NULL);
    }
    pthread_mutex_lock(&mu);
    ts->puts++;
    pthread_mutex_unlock(&mu);
    if (ts->fatal)
        return zetl_err_set(eb, ts->fatal, "%s is broken", ts->name);
    if (ts->always_retry || ts->retries_left-- > 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "%s is down", ts->name);
    snprintf(item, sizeof(item), "%s%llu ", ts->name, (unsigned long long)b->seq);
    pthread_mutex_lock(&mu);
    strcat(order, item);
    pthread_mutex_unlock(&mu);
    return ZETL_OK;
}

static enum zetl_err t_start(void *state, struct zetl_sink_pos *pos, struct zetl_errbuf *eb)
{
    struct test_sink *ts = state;

    ts->starts++;
    if (ts->start_retries-- > 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "%s catalog unavailable", ts->name);
    pos->end_lsn = ts->start_end_lsn;
    return ZETL_OK;
}

static enum zetl_err t_note(void *state, uint64_t end_lsn, struct zetl_errbuf *eb)
{
    struct test_sink *ts = state;

    (void)eb;
    pthread_mutex_lock(&mu);
    ts->noted = end_lsn;
    pthread_mutex_unlock(&mu);
    return ZETL_OK;
}

static void t_close(void *state)
{
    (void)state;
}

static const struct zetl_sink_ops ops_a = {"a", true, NULL, t_open0, NULL, t_put, t_note, t_close};
static const struct zetl_sink_ops ops_b = {"b", true, NULL, t_open1, t_start, t_put, NULL, t_close};
/* A sink the flush position does not wait for. */
static const struct zetl_sink_ops ops_c = {"c", false, NULL, t_open2, NULL, t_put, NULL, t_close};

static const struct zetl_sinkq_opts fast = {
    .capacity = 2, .retry_initial_ms = 1, .retry_max_ms = 4, .idle_note_ms = 10};

static void reset(void)
{
    memset(sinks, 0, sizeof(sinks));
    sinks[0].name = "a";
    sinks[1].name = "b";
    sinks[2].name = "c";
    order[0] = '\0';
    zetl_stop_reset();
}

static struct zetl_batch *batch(uint64_t seq, uint64_t last_lsn)
{
    struct zetl_batch *b = zetl_calloc(1, sizeof(*b));

    b->stream = zetl_strdup("s");
    b->dir = zetl_strdup("/nonexistent/zetl-test-batch");
    b->seq = seq;
    b->first_lsn = last_lsn - 8;
    b->last_lsn = last_lsn;
    b->end_lsn = last_lsn + 8;
    return b;
}

static struct zetl_sinkq *open_q(const struct zetl_sink_ops *const *ops)
{
    struct zetl_sink_env env = {NULL, "s", NULL};
    struct zetl_sinkq *q = NULL;
    struct zetl_errbuf eb;

    CHECK(zetl_sinkq_new(&env, ops, &fast, &q, &eb) == ZETL_OK);
    CHECK(zetl_sinkq_start(q, &eb) == ZETL_OK);
    return q;
}

static void wait_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_order_and_positions(void)
{
    const struct zetl_sink_ops *ops[] = {&ops_a, &ops_b, &ops_c, NULL};
    struct zetl_errbuf eb;
    struct zetl_sinkq *q;

    reset();
    sinks[0].open_pos = (struct zetl_sink_pos){0x300, 0x308};
    sinks[1].open_pos = (struct zetl_sink_pos){ZETL_SINK_FOLLOWS, 0x108};
    sinks[1].start_end_lsn = 0x208;
    sinks[2].open_pos = (struct zetl_sink_pos){0x50, 0x58};
    q = open_q(ops);
    CHECK(zetl_sinkq_count(q) == 3);
    CHECK_STR(zetl_sinkq_name(q, 1), "b");
    /* Resends are skipped up to what every sink holds or recovers by itself. */
    CHECK(zetl_sinkq_covered_lsn(q) == 0x50);
    for (uint64_t i = 1; i <= 3; i++)
        CHECK(zetl_sinkq_push(q, batch(i, 0x400 + i * 0x100)));
    CHECK(zetl_sinkq_drain(q, &eb) == ZETL_OK);
    CHECK_STR(order, "a1 b1 c1 a2 b2 c2 a3 b3 c3 ");
    CHECK(zetl_sinkq_durable_lsn(q) == 0x708);
    CHECK(zetl_sinkq_idle(q));
    CHECK(sinks[1].starts == 1);
    zetl_sinkq_note_final(q, 0x900);
    CHECK(sinks[0].noted == 0x900);
    zetl_sinkq_free(q);
}

static void test_min_durable(void)
{
    const struct zetl_sink_ops *ops[] = {&ops_a, &ops_b, &ops_c, NULL};
    struct zetl_errbuf eb;
    struct zetl_sinkq *q;

    reset();
    sinks[0].open_pos = (struct zetl_sink_pos){0x300, 0x308};
    sinks[1].open_pos = (struct zetl_sink_pos){0x100, 0x108};
    sinks[1].start_end_lsn = 0x108;
    sinks[2].open_pos = (struct zetl_sink_pos){0x10, 0x18}; /* not waited for */
    sinks[1].gate = true;
    q = open_q(ops);
    CHECK(zetl_sinkq_durable_lsn(q) == 0x108);
    CHECK(zetl_sinkq_push(q, batch(1, 0x400)));
    CHECK(zetl_sinkq_push(q, batch(2, 0x500)));
    CHECK(zetl_sinkq_full(q));
    while (strstr(order, "a1") == NULL)
        wait_ms(1);
    /* a holds batch 1, b does not yet: the slot may not move past b. */
    CHECK(zetl_sinkq_durable_lsn(q) == 0x108);
    CHECK(!zetl_sinkq_idle(q));
    pthread_mutex_lock(&mu);
    sinks[1].gate = false;
    pthread_mutex_unlock(&mu);
    CHECK(zetl_sinkq_drain(q, &eb) == ZETL_OK);
    CHECK(zetl_sinkq_durable_lsn(q) == 0x508);
    zetl_sinkq_free(q);
}

static void test_retry(void)
{
    const struct zetl_sink_ops *ops[] = {&ops_a, &ops_b, NULL};
    struct zetl_errbuf eb;
    struct zetl_sinkq *q;

    reset();
    sinks[1].start_retries = 2; /* start fails twice, then put is fine */
    q = open_q(ops);
    CHECK(zetl_sinkq_push(q, batch(1, 0x400)));
    CHECK(zetl_sinkq_drain(q, &eb) == ZETL_OK);
    CHECK(sinks[1].starts == 3);
    CHECK_STR(order, "a1 b1 ");
    zetl_sinkq_free(q);

    reset();
    sinks[1].retries_left = 3;
    q = open_q(ops);
    CHECK(zetl_sinkq_push(q, batch(1, 0x400)));
    CHECK(zetl_sinkq_drain(q, &eb) == ZETL_OK);
    /* Only the failing sink is called again: a is not asked twice. */
    CHECK(sinks[0].puts == 1);
    CHECK(sinks[1].puts == 4);
    CHECK_STR(order, "a1 b1 ");
    zetl_sinkq_free(q);
}

static void test_fatal(void)
{
    const struct zetl_sink_ops *ops[] = {&ops_a, &ops_b, NULL};
    struct zetl_errbuf eb;
    struct zetl_sinkq *q;
    struct zetl_batch *b;

    reset();
    sinks[0].fatal = ZETL_ERR_IO;
    q = open_q(ops);
    CHECK(zetl_sinkq_push(q, batch(1, 0x400)));
    while (zetl_sinkq_error(q, &eb) == ZETL_OK)
        wait_ms(1);
    CHECK(zetl_sinkq_error(q, &eb) == ZETL_ERR_IO);
    CHECK(strstr(eb.msg, "a is broken") != NULL);
    CHECK(strstr(eb.msg, "stream s: a: batch") != NULL);
    CHECK(sinks[1].puts == 0); /* nothing after a fatal sink */
    b = batch(2, 0x500);
    CHECK(!zetl_sinkq_push(q, b)); /* refused: still the caller's */
    zetl_batch_free(b);
    CHECK(zetl_sinkq_drain(q, &eb) == ZETL_ERR_IO);
    CHECK(zetl_sinkq_durable_lsn(q) == 0);
    zetl_sinkq_free(q);
}

static void test_abandon_on_stop(void)
{
    const struct zetl_sink_ops *ops[] = {&ops_a, &ops_b, NULL};
    struct zetl_errbuf eb;
    struct zetl_sinkq *q;

    reset();
    zetl_stop_init();
    sinks[1].always_retry = true;
    q = open_q(ops);
    CHECK(zetl_sinkq_push(q, batch(1, 0x400)));
    while (sinks[1].puts < 3)
        wait_ms(1);
    zetl_stop_request();
    CHECK(zetl_sinkq_drain(q, &eb) == ZETL_ERR_RETRY);
    CHECK(strstr(eb.msg, "stopped while a sink was unavailable") != NULL);
    /* a made batch 1 durable, b did not: the flush position stays behind. */
    CHECK(zetl_sinkq_durable_lsn(q) == 0);
    CHECK(zetl_sinkq_error(q, &eb) == ZETL_OK);
    zetl_sinkq_free(q);
    zetl_stop_reset();
}

static void test_idle_note(void)
{
    const struct zetl_sink_ops *ops[] = {&ops_a, NULL};
    struct zetl_sinkq *q;
    int waited = 0;

    reset();
    q = open_q(ops);
    CHECK(zetl_sinkq_fd(q) >= 0);
    zetl_sinkq_set_idle_lsn(q, 0x1234);
    zetl_sinkq_set_idle_lsn(q, 0x1000); /* never backwards */
    for (;;) {
        uint64_t noted;
        pthread_mutex_lock(&mu);
        noted = sinks[0].noted;
        pthread_mutex_unlock(&mu);
        if (noted != 0 || waited++ > 2000)
            break;
        wait_ms(1);
    }
    CHECK(sinks[0].noted == 0x1234);
    zetl_sinkq_free(q);
}

/* Retention's keep floor as the snapshot state would give it; records its calls. */
static uint64_t floor_lsn = UINT64_MAX;
static int floor_calls;
static char floor_stream[16];

static uint64_t t_floor(void *arg, const char *stream)
{
    (void)arg;
    floor_calls++;
    snprintf(floor_stream, sizeof(floor_stream), "%s", stream);
    return floor_lsn;
}

/* A batch directory with a manifest only (last commit in 2024: old), as the archive lists it. */
static void archived(const char *root, uint64_t first, uint64_t last)
{
    char dir[512], path[600];
    FILE *f;

    snprintf(dir, sizeof(dir), "%s/s/%016llX-%016llX", root, (unsigned long long)first,
             (unsigned long long)last);
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    f = fopen(path, "w");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    fprintf(f,
            "{\"version\": 1, \"stream\": \"s\", \"first_lsn\": \"0/%llX\", \"last_lsn\": "
            "\"0/%llX\", \"end_lsn\": \"0/%llX\", \"last_commit_time\": "
            "\"2024-03-05T12:34:57.000001Z\", \"files\": []}\n",
            (unsigned long long)first, (unsigned long long)last, (unsigned long long)last + 8);
    fclose(f);
}

static bool archived_exists(const char *root, uint64_t first, uint64_t last)
{
    char dir[512];
    struct stat st;

    snprintf(dir, sizeof(dir), "%s/s/%016llX-%016llX", root, (unsigned long long)first,
             (unsigned long long)last);
    return stat(dir, &st) == 0;
}

static void test_retention(void)
{
    const struct zetl_sink_ops *ops[] = {&ops_a, &ops_c, NULL};
    char root[] = "/tmp/zetl-test-sinkq-XXXXXX";
    char url[64], cmd[128], sdir[64];
    struct zetl_config cfg;
    struct zetl_archive *ar = NULL;
    struct zetl_sinkq_opts o = fast;
    struct zetl_sink_env env;
    struct zetl_sinkq *q = NULL;
    struct zetl_errbuf eb;

    reset();
    if (mkdtemp(root) == NULL) {
        CHECK(false);
        return;
    }
    snprintf(url, sizeof(url), "file://%s", root);
    snprintf(sdir, sizeof(sdir), "%s/s", root);
    CHECK(mkdir(sdir, 0755) == 0);
    for (uint64_t i = 1; i <= 5; i++)
        archived(root, i * 0x1000, i * 0x1000 + 0x100);
    memset(&cfg, 0, sizeof(cfg));
    cfg.archive.url = url;
    cfg.archive.retention_ms = 1000;
    cfg.archive.retention_interval_ms = 60000;
    CHECK(zetl_archive_open(&cfg, &ar, &eb) == ZETL_OK);
    env = (struct zetl_sink_env){&cfg, "s", ar};

    /* a applied up to batch 3, c (not waited for by the slot) only up to batch 2. */
    sinks[0].open_pos = (struct zetl_sink_pos){0x3100, 0x3108};
    sinks[2].open_pos = (struct zetl_sink_pos){0x2100, 0x2108};
    o.retention_floor = t_floor;
    floor_lsn = 0x2000; /* the last snapshot started inside batch 2's range */
    floor_calls = 0;
    CHECK(zetl_sinkq_new(&env, ops, &o, &q, &eb) == ZETL_OK);
    CHECK(zetl_sinkq_start(q, &eb) == ZETL_OK);
    /* The pass at start: the floor keeps batch 2 although every sink applied it. */
    CHECK(zetl_sinkq_drain(q, &eb) == ZETL_OK);
    CHECK(floor_calls == 1);
    CHECK_STR(floor_stream, "s");
    CHECK(!archived_exists(root, 0x1000, 0x1100));
    CHECK(archived_exists(root, 0x2000, 0x2100));
    zetl_sinkq_free(q);

    /* No floor: the pass stops at the slowest sink, c, which has not applied batch 3. */
    reset();
    sinks[0].open_pos = (struct zetl_sink_pos){0x3100, 0x3108};
    sinks[2].open_pos = (struct zetl_sink_pos){0x2100, 0x2108};
    floor_lsn = UINT64_MAX;
    cfg.archive.retention_interval_ms = 1;
    CHECK(zetl_sinkq_new(&env, ops, &o, &q, &eb) == ZETL_OK);
    CHECK(zetl_sinkq_start(q, &eb) == ZETL_OK);
    /* The pass at start runs before any batch comes. */
    for (int i = 0; i < 2000 && archived_exists(root, 0x2000, 0x2100); i++)
        wait_ms(1);
    CHECK(!archived_exists(root, 0x2000, 0x2100));
    CHECK(archived_exists(root, 0x3000, 0x3100));
    /* Both sinks apply a batch past batch 4: the pass after it takes 3 and 4, never 5 (the newest).
     */
    wait_ms(5);
    CHECK(zetl_sinkq_push(q, batch(1, 0x6100)));
    CHECK(zetl_sinkq_drain(q, &eb) == ZETL_OK);
    CHECK(!archived_exists(root, 0x3000, 0x3100));
    CHECK(!archived_exists(root, 0x4000, 0x4100));
    CHECK(archived_exists(root, 0x5000, 0x5100));
    zetl_sinkq_free(q);

    /* Retention off (the default): nothing is touched. */
    reset();
    cfg.archive.retention_ms = 0;
    archived(root, 0x100, 0x200);
    CHECK(zetl_sinkq_new(&env, ops, &o, &q, &eb) == ZETL_OK);
    CHECK(zetl_sinkq_start(q, &eb) == ZETL_OK);
    CHECK(zetl_sinkq_push(q, batch(1, 0x7100)));
    CHECK(zetl_sinkq_drain(q, &eb) == ZETL_OK);
    CHECK(archived_exists(root, 0x100, 0x200));
    zetl_sinkq_free(q);

    zetl_archive_free(ar);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
}

int main(void)
{
    test_order_and_positions();
    test_min_durable();
    test_retry();
    test_fatal();
    test_abandon_on_stop();
    test_idle_note();
    test_retention();
    return zetl_tap_done();
}
