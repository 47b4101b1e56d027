/* The sink queue and runner thread: sealed batches through every sink, retried in one place. */
#include "replicator/sinkq.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/backoff.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "common/time.h"
#include "replicator/retention.h"
#include "replicator/stop.h"

const struct zetl_sinkq_opts zetl_sinkq_default_opts = {
    .capacity = 2,
    .retry_initial_ms = 500,
    .retry_max_ms = 30000,
    .idle_note_ms = 1000,
    .retention_floor = NULL,
    .retention_arg = NULL,
};

struct sink {
    const struct zetl_sink_ops *ops; /* borrowed: static */
    void *state;                     /* owned by ops */
    struct zetl_sink_pos pos;        /* end_lsn under the queue's mutex */
};

struct zetl_sinkq {
    struct zetl_sink_env env;
    struct zetl_sinkq_opts opts;
    struct sink *sinks; /* owned */
    size_t nsinks;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct zetl_batch **queue; /* owned ring of opts.capacity */
    size_t qhead, qlen;
    bool busy;      /* the runner is making a batch durable */
    bool shutdown;  /* no more batches will come */
    bool abandoned; /* stopped while a sink was unavailable */
    uint64_t idle_lsn;
    int wake_fd; /* owned eventfd: the reader's wake-up when a batch is done (or -1) */
    enum zetl_err err;
    struct zetl_errbuf err_eb;

    bool retention;           /* archive.retention is set and there is an archive */
    int64_t retention_due_ms; /* zetl_now_ms() of the next retention pass (runner only) */
};

/* What the queue asks of a sink; each is retried as a whole. */
enum sink_call { CALL_OPEN, CALL_START, CALL_PUT };

static enum zetl_err call_sink(struct zetl_sinkq *q, struct sink *s, enum sink_call call,
                               const struct zetl_batch *b, struct zetl_errbuf *eb)
{
    struct zetl_sink_pos pos;
    enum zetl_err err;

    if (call == CALL_OPEN)
        return s->ops->open(&q->env, &s->state, &s->pos, eb); /* before the runner starts */
    if (call == CALL_PUT)
        return s->ops->put(s->state, b, eb);
    pthread_mutex_lock(&q->mu);
    pos = s->pos;
    pthread_mutex_unlock(&q->mu);
    if ((err = s->ops->start(s->state, &pos, eb)) == ZETL_OK) {
        pthread_mutex_lock(&q->mu);
        s->pos = pos;
        pthread_mutex_unlock(&q->mu);
    }
    return err;
}

/*
 * The one retry loop: calls the sink until it succeeds, fails for good, or a
 * stop is requested (then ZETL_ERR_RETRY).
 */
static enum zetl_err call_with_retry(struct zetl_sinkq *q, struct sink *s, enum sink_call call,
                                     const struct zetl_batch *b, struct zetl_errbuf *eb)
{
    struct zetl_backoff bo;
    enum zetl_err err;

    zetl_backoff_init(&bo, q->opts.retry_initial_ms, q->opts.retry_max_ms);
    while ((err = call_sink(q, s, call, b, eb)) == ZETL_ERR_RETRY && !zetl_stop_requested()) {
        int64_t delay = zetl_backoff_next(&bo);
        zetl_warn("stream %s: %s: %s; retrying in %lld ms", q->env.stream, s->ops->name, eb->msg,
                  (long long)delay);
        zetl_stop_sleep(delay);
    }
    return err;
}

static void wake_reader(struct zetl_sinkq *q)
{
    uint64_t one = 1;

    if (q->wake_fd >= 0 && write(q->wake_fd, &one, sizeof(one)) < 0)
        return; /* the counter is full: the reader is woken anyway */
}

static void runner_fail(struct zetl_sinkq *q, enum zetl_err err, const struct zetl_errbuf *eb)
{
    pthread_mutex_lock(&q->mu);
    if (err == ZETL_ERR_RETRY) {
        /* Stopping while a sink is down: what is archived is applied at the next start,
         * what is not is sent again by the server (the slot did not move past it). */
        q->abandoned = true;
    } else {
        q->err = err;
        q->err_eb = *eb;
    }
    q->busy = false;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    wake_reader(q);
}

/* Records idle progress in the sinks that keep it, so `zetl verify` sees they are current. */
static void note_idle(struct zetl_sinkq *q, uint64_t end_lsn, bool final)
{
    struct zetl_errbuf eb;

    for (size_t i = 0; i < q->nsinks; i++) {
        struct sink *s = &q->sinks[i];
        if (s->ops->note_idle == NULL || s->ops->note_idle(s->state, end_lsn, &eb) == ZETL_OK)
            continue;
        if (final)
            zetl_warn("stream %s: could not record progress in the %s: %s", q->env.stream,
                      s->ops->name, eb.msg);
        else
            zetl_debug("stream %s: could not record progress: %s", q->env.stream, eb.msg);
    }
}

/* Lowest end LSN over every sink (durable or not): what all of them applied. */
static uint64_t applied_lsn(struct zetl_sinkq *q)
{
    uint64_t lsn = UINT64_MAX;

    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < q->nsinks; i++)
        if (q->sinks[i].pos.end_lsn < lsn)
            lsn = q->sinks[i].pos.end_lsn;
    pthread_mutex_unlock(&q->mu);
    return lsn == UINT64_MAX ? 0 : lsn;
}

/*
 * A retention pass when one is due (`now`: at once).  A failed pass only
 * warns: nothing was lost, and the next pass, an interval later, finishes
 * what it left.
 */
static void retention_tick(struct zetl_sinkq *q, bool now)
{
    const struct zetl_config *cfg = q->env.cfg;
    struct zetl_errbuf eb;
    uint64_t floor;
    bool again = false;

    if (!q->retention || zetl_stop_requested() || (!now && zetl_now_ms() < q->retention_due_ms))
        return;
    floor = q->opts.retention_floor != NULL
                ? q->opts.retention_floor(q->opts.retention_arg, q->env.stream)
                : UINT64_MAX;
    if (zetl_retention_pass(q->env.ar, q->env.stream, cfg->archive.retention_ms, applied_lsn(q),
                            floor, &again, &eb) != ZETL_OK)
        zetl_warn("stream %s: archive retention: %s; next pass in %llu ms", q->env.stream, eb.msg,
                  (unsigned long long)cfg->archive.retention_interval_ms);
    q->retention_due_ms = zetl_now_ms() + (again ? 0 : (int64_t)cfg->archive.retention_interval_ms);
}

/* The next batch to make durable, or NULL at shutdown; notes idle progress meanwhile. */
static struct zetl_batch *runner_next(struct zetl_sinkq *q)
{
    struct zetl_batch *b = NULL;

    pthread_mutex_lock(&q->mu);
    while (q->qlen == 0 && !q->shutdown) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += q->opts.idle_note_ms / 1000;
        ts.tv_nsec += (q->opts.idle_note_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT && q->qlen == 0) {
            uint64_t idle = q->idle_lsn;
            pthread_mutex_unlock(&q->mu);
            note_idle(q, idle, false);
            retention_tick(q, false);
            pthread_mutex_lock(&q->mu);
        }
    }
    if (q->qlen > 0) {
        b = q->queue[q->qhead];
        q->busy = true;
    }
    pthread_mutex_unlock(&q->mu);
    return b;
}

/* Makes one batch durable in every sink; on success it leaves the queue. */
static enum zetl_err runner_put(struct zetl_sinkq *q, struct zetl_batch *b, struct zetl_errbuf *eb)
{
    char name[40];
    struct zetl_buf names;
    enum zetl_err err = ZETL_OK;

    zetl_archive_batch_name(b, name);
    zetl_buf_init(&names, 0);
    for (size_t i = 0; i < q->nsinks; i++) {
        struct sink *s = &q->sinks[i];
        if ((err = call_with_retry(q, s, CALL_PUT, b, eb)) != ZETL_OK) {
            zetl_err_prefix(eb, "stream %s: %s: batch %s", q->env.stream, s->ops->name, name);
            goto fail;
        }
        pthread_mutex_lock(&q->mu);
        s->pos.last_lsn = b->last_lsn;
        s->pos.end_lsn = b->end_lsn;
        pthread_mutex_unlock(&q->mu);
        zetl_buf_printf(&names, "%s%s", i ? ", " : "", s->ops->name);
    }
    zetl_info("stream %s: batch %s durable in %s: %llu rows in %llu transactions, commit lsn "
              "%X/%X to %X/%X",
              q->env.stream, name, names.len ? names.data : "no sink", (unsigned long long)b->nrows,
              (unsigned long long)b->ntxns, ZETL_LSN_ARGS(b->first_lsn),
              ZETL_LSN_ARGS(b->last_lsn));
    if (zetl_fs_rmtree(b->dir, eb) != ZETL_OK)
        zetl_warn("stream %s: %s", q->env.stream, eb->msg);
    pthread_mutex_lock(&q->mu);
    q->qhead = (q->qhead + 1) % q->opts.capacity;
    q->qlen--;
    q->busy = false;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    wake_reader(q);
    zetl_batch_free(b);
fail:
    zetl_buf_release(&names);
    return err;
}

static void *runner_main(void *arg)
{
    struct zetl_sinkq *q = arg;
    struct zetl_batch *b;
    struct zetl_errbuf eb;
    enum zetl_err err;

    /* Before the catch-up: the positions are what each sink reported at open. */
    retention_tick(q, true);
    for (size_t i = 0; i < q->nsinks; i++) {
        struct sink *s = &q->sinks[i];
        if (s->ops->start == NULL)
            continue;
        if ((err = call_with_retry(q, s, CALL_START, NULL, &eb)) != ZETL_OK) {
            zetl_err_prefix(&eb, "stream %s: %s", q->env.stream, s->ops->name);
            runner_fail(q, err, &eb);
            return NULL;
        }
    }
    pthread_mutex_lock(&q->mu);
    q->busy = false;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    wake_reader(q);
    while ((b = runner_next(q)) != NULL) {
        if ((err = runner_put(q, b, &eb)) != ZETL_OK) {
            runner_fail(q, err, &eb);
            break;
        }
        retention_tick(q, false);
    }
    return NULL;
}

enum zetl_err zetl_sinkq_new(const struct zetl_sink_env *env,
                             const struct zetl_sink_ops *const *ops,
                             const struct zetl_sinkq_opts *opts, struct zetl_sinkq **out,
                             struct zetl_errbuf *eb)
{
    struct zetl_sinkq *q = zetl_calloc(1, sizeof(*q));
    size_t n = 0;
    enum zetl_err err = ZETL_OK;

    q->env = *env;
    q->opts = *opts;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    /* Without it the reader still sees the runner's progress, at its next timeout. */
    q->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    q->queue = zetl_calloc(opts->capacity, sizeof(*q->queue));
    while (ops[n] != NULL)
        n++;
    q->sinks = zetl_calloc(n ? n : 1, sizeof(*q->sinks));
    q->retention = env->cfg != NULL && env->ar != NULL && env->cfg->archive.retention_ms > 0;
    for (size_t i = 0; i < n; i++) {
        struct sink *s = &q->sinks[q->nsinks];
        if (ops[i]->configured != NULL && !ops[i]->configured(env->cfg))
            continue;
        s->ops = ops[i];
        /* A sink that is down for a moment at start (S3, the warehouse) is waited for. */
        if ((err = call_with_retry(q, s, CALL_OPEN, NULL, eb)) != ZETL_OK) {
            zetl_err_prefix(eb, "%s", s->ops->name);
            goto fail;
        }
        q->nsinks++;
    }
    *out = q;
    return ZETL_OK;

fail:
    zetl_sinkq_free(q);
    return err;
}

void zetl_sinkq_shutdown(struct zetl_sinkq *q)
{
    pthread_mutex_lock(&q->mu);
    q->shutdown = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Tells the runner no more batches come, and waits for it to end. */
static void runner_stop(struct zetl_sinkq *q)
{
    zetl_sinkq_shutdown(q);
    if (q->started)
        pthread_join(q->thread, NULL);
    q->started = false;
}

void zetl_sinkq_free(struct zetl_sinkq *q)
{
    if (q == NULL)
        return;
    runner_stop(q);
    for (size_t i = 0; i < q->qlen; i++)
        zetl_batch_free(q->queue[(q->qhead + i) % q->opts.capacity]);
    for (size_t i = 0; i < q->nsinks; i++)
        q->sinks[i].ops->close(q->sinks[i].state);
    free(q->sinks);
    free(q->queue);
    if (q->wake_fd >= 0)
        close(q->wake_fd);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

size_t zetl_sinkq_count(const struct zetl_sinkq *q)
{
    return q->nsinks;
}

const char *zetl_sinkq_name(const struct zetl_sinkq *q, size_t i)
{
    return q->sinks[i].ops->name;
}

uint64_t zetl_sinkq_covered_lsn(const struct zetl_sinkq *q)
{
    uint64_t lsn = ZETL_SINK_FOLLOWS;

    for (size_t i = 0; i < q->nsinks; i++)
        if (q->sinks[i].pos.last_lsn < lsn)
            lsn = q->sinks[i].pos.last_lsn;
    return lsn == ZETL_SINK_FOLLOWS ? 0 : lsn;
}

enum zetl_err zetl_sinkq_start(struct zetl_sinkq *q, struct zetl_errbuf *eb)
{
    /* Busy until every sink's start (the warehouse's catch-up) is done: a drain waits for it. */
    pthread_mutex_lock(&q->mu);
    q->busy = true;
    pthread_mutex_unlock(&q->mu);
    if (pthread_create(&q->thread, NULL, runner_main, q) != 0) {
        q->busy = false;
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not start sink thread");
    }
    q->started = true;
    return ZETL_OK;
}

bool zetl_sinkq_push(struct zetl_sinkq *q, struct zetl_batch *b)
{
    bool accepted;

    pthread_mutex_lock(&q->mu);
    while (q->qlen >= q->opts.capacity && q->err == ZETL_OK && !q->abandoned)
        pthread_cond_wait(&q->cv, &q->mu);
    accepted = q->err == ZETL_OK && !q->abandoned;
    if (accepted) {
        q->queue[(q->qhead + q->qlen) % q->opts.capacity] = b;
        q->qlen++;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return accepted;
}

bool zetl_sinkq_full(struct zetl_sinkq *q)
{
    bool full;

    pthread_mutex_lock(&q->mu);
    full = q->qlen >= q->opts.capacity;
    pthread_mutex_unlock(&q->mu);
    return full;
}

bool zetl_sinkq_idle(struct zetl_sinkq *q)
{
    bool idle;

    pthread_mutex_lock(&q->mu);
    /* A queue that failed or was abandoned holds back what it refused. */
    idle = q->qlen == 0 && !q->busy && q->err == ZETL_OK && !q->abandoned;
    pthread_mutex_unlock(&q->mu);
    return idle;
}

int zetl_sinkq_fd(const struct zetl_sinkq *q)
{
    return q->wake_fd;
}

void zetl_sinkq_ack(struct zetl_sinkq *q)
{
    uint64_t n;

    if (q->wake_fd >= 0 && read(q->wake_fd, &n, sizeof(n)) < 0)
        return; /* EAGAIN: nothing to empty */
}

enum zetl_err zetl_sinkq_error(struct zetl_sinkq *q, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    pthread_mutex_lock(&q->mu);
    err = q->err;
    if (err)
        *eb = q->err_eb;
    pthread_mutex_unlock(&q->mu);
    return err;
}

uint64_t zetl_sinkq_durable_lsn(struct zetl_sinkq *q)
{
    uint64_t lsn = UINT64_MAX;

    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < q->nsinks; i++)
        if (q->sinks[i].ops->must_be_durable && q->sinks[i].pos.end_lsn < lsn)
            lsn = q->sinks[i].pos.end_lsn;
    pthread_mutex_unlock(&q->mu);
    return lsn == UINT64_MAX ? 0 : lsn;
}

void zetl_sinkq_set_idle_lsn(struct zetl_sinkq *q, uint64_t end_lsn)
{
    pthread_mutex_lock(&q->mu);
    if (end_lsn > q->idle_lsn)
        q->idle_lsn = end_lsn;
    pthread_mutex_unlock(&q->mu);
}

enum zetl_err zetl_sinkq_drain(struct zetl_sinkq *q, struct zetl_errbuf *eb)
{
    enum zetl_err err;
    bool abandoned;

    pthread_mutex_lock(&q->mu);
    q->shutdown = true;
    pthread_cond_broadcast(&q->cv);
    while ((q->qlen > 0 || q->busy) && q->err == ZETL_OK && !q->abandoned)
        pthread_cond_wait(&q->cv, &q->mu);
    abandoned = q->abandoned;
    pthread_mutex_unlock(&q->mu);
    if ((err = zetl_sinkq_error(q, eb)) != ZETL_OK)
        return err;
    if (abandoned)
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "stream %s: stopped while a sink was unavailable: the slot was not "
                            "confirmed past what is durable, so nothing is lost; the rest follows "
                            "at the next start",
                            q->env.stream);
    /* The runner is done: its sinks are the caller's now. */
    runner_stop(q);
    return ZETL_OK;
}

void zetl_sinkq_note_final(struct zetl_sinkq *q, uint64_t end_lsn)
{
    note_idle(q, end_lsn, true);
}
