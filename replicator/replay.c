/*
 * zetl replay: archived batches of every stream the archive holds, applied
 * to the warehouse schema (or, --into, another one) under the exactly-once
 * rules of zetl run; and zetl tenant purge.  docs/replay.md says what the
 * user sees; the decision that matters is which replays move offsets:
 *
 *   - A prefix replay (no --tenant, --table or --from) applies whole
 *     transactions of each stream in LSN order up to --to and records the
 *     stream offset and table states exactly as zetl run does, so it is
 *     safe into the live schema and resumable.
 *   - A filtered replay leaves rows out, so it must not record that a
 *     stream or table is applied up to a point: it records nothing, and is
 *     refused into warehouse.schema (only --into another schema), where a
 *     later zetl run would otherwise apply its rows a second time.
 *
 * --from and --to are turned into commit LSNs per stream before anything is
 * applied: an LSN as given, a time through the batches' manifests and, in the
 * one batch a time falls into, the rows' commit times.
 */
#include "replicator/replay.h"

#include "common/backoff.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "common/time.h"
#include "replicator/bufdir.h"
#include "replicator/stop.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_JOB 1
#define EXIT_USAGE 2
/* Tries of one batch before the command gives up (about 2 minutes). */
#define REPLAY_ATTEMPTS 10

bool zetl_replay_parse_point(const char *s, struct zetl_replay_point *p)
{
    memset(p, 0, sizeof(*p));
    p->text = s;
    if (strchr(s, '/') != NULL) {
        if (!zetl_lsn_parse(s, &p->lsn))
            return false;
    } else if (zetl_time_parse(s, &p->usec)) {
        p->is_time = true;
    } else {
        return false;
    }
    p->set = true;
    return true;
}

bool zetl_replay_schema_ok(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && n <= 63;
}

enum zetl_err zetl_replay_batch(struct zetl_archive *ar, struct zetl_wh *wh, const char *stream,
                                const char *name, const char *table, const struct zetl_wh_replay *r,
                                uint64_t *rows, bool *skipped, struct zetl_errbuf *eb)
{
    struct zetl_backoff bo;
    enum zetl_err err;
    int attempts = 0;

    zetl_backoff_init(&bo, 500, 30000);
    for (;;) {
        char *dir = NULL;

        *rows = 0;
        *skipped = false;
        err = zetl_archive_fetch(ar, stream, name, &dir, eb);
        if (err == ZETL_OK)
            err = r != NULL ? zetl_wh_replay_dir(wh, dir, r, rows, skipped, eb)
                            : zetl_wh_apply_dir_table(wh, dir, table, eb);
        zetl_archive_fetch_done(ar, dir);
        if (err != ZETL_ERR_RETRY || ++attempts >= REPLAY_ATTEMPTS || zetl_stop_requested())
            return err;
        int64_t delay = zetl_backoff_next(&bo);
        zetl_warn("batch %s of stream %s: %s; retrying in %lld ms", name, stream, eb->msg,
                  (long long)delay);
        zetl_stop_sleep(delay);
    }
}

/* ---- the archive's batches and the range ------------------------------------------ */

struct rbatch {
    char *name; /* borrowed from the stream's list */
    uint64_t first, last;
    int64_t t_first, t_last; /* commit times, when a time bound asked for them */
};

struct rstream {
    char *name; /* borrowed from the list of streams */
    struct zetl_strlist names;
    struct rbatch *b; /* owned */
    size_t n;
    uint64_t from_lsn, to_lsn; /* resolved bounds; to_lsn 0: none */
    bool nothing;              /* no transaction of the stream is in the range */
};

struct replay {
    const struct zetl_config *cfg;
    const struct zetl_replay_opts *o;
    struct zetl_archive *ar;
    struct zetl_strlist snames;
    struct rstream *s; /* owned */
    size_t ns;
};

static void replay_release(struct replay *rp)
{
    for (size_t i = 0; i < rp->ns; i++) {
        free(rp->s[i].b);
        zetl_strlist_release(&rp->s[i].names);
    }
    free(rp->s);
    zetl_strlist_release(&rp->snames);
}

static bool parse_batch_name(const char *s, uint64_t *first, uint64_t *last)
{
    char a[17], b[17];

    if (strlen(s) != 33 || s[16] != '-')
        return false;
    memcpy(a, s, 16);
    a[16] = '\0';
    memcpy(b, s + 17, 16);
    b[16] = '\0';
    return zetl_lsn_from_hex16(a, first) && zetl_lsn_from_hex16(b, last);
}

/* The batches of stream st, with their commit times when `times`. */
static enum zetl_err load_stream(struct replay *rp, struct rstream *st, bool times,
                                 struct zetl_errbuf *eb)
{
    enum zetl_err err;

    if ((err = zetl_archive_list(rp->ar, st->name, 0, &st->names, eb)) != ZETL_OK)
        return err;
    st->b = zetl_calloc(st->names.n ? st->names.n : 1, sizeof(*st->b));
    for (size_t i = 0; i < st->names.n; i++) {
        struct rbatch *b = &st->b[st->n];
        struct zetl_manifest m;

        b->name = st->names.items[i];
        if (!parse_batch_name(b->name, &b->first, &b->last))
            continue;
        st->n++;
        if (!times)
            continue;
        err = zetl_archive_read_manifest(rp->ar, st->name, b->name, &m, eb);
        if (err == ZETL_OK && (!zetl_time_parse(m.first_commit_time, &b->t_first) ||
                               !zetl_time_parse(m.last_commit_time, &b->t_last)))
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "its manifest has no valid first_commit_time and last_commit_time");
        zetl_manifest_release(&m);
        if (err != ZETL_OK) {
            zetl_err_prefix(eb, "batch %s of stream \"%s\"", b->name, st->name);
            return err;
        }
    }
    return ZETL_OK;
}

/* A point as the message shows it: the argument and, for a time, how it was read. */
static void point_text(const struct zetl_replay_point *p, char *out, size_t n)
{
    char t[40];

    if (!p->is_time) {
        snprintf(out, n, "%s", p->text);
        return;
    }
    zetl_time_format(p->usec, t, sizeof(t));
    snprintf(out, n, "\"%s\" (%s)", p->text, t);
}

/*
 * Refuses a bound outside what the archive holds, over every stream: a
 * --from after the newest archived transaction or before the oldest, a
 * --to before the oldest or after the newest.  The message says which part
 * is missing.
 */
static enum zetl_err check_covered(const struct replay *rp, struct zetl_errbuf *eb)
{
    const struct zetl_replay_opts *o = rp->o;
    const struct rstream *lo = NULL, *hi = NULL;
    const struct zetl_replay_point *pts[2] = {&o->from, &o->to};
    static const char *const opt[2] = {"--from", "--to"};

    for (size_t i = 0; i < rp->ns; i++) {
        const struct rstream *st = &rp->s[i];
        if (st->n == 0)
            continue;
        if (lo == NULL || st->b[0].first < lo->b[0].first)
            lo = st;
        if (hi == NULL || st->b[st->n - 1].last > hi->b[hi->n - 1].last)
            hi = st;
    }
    if (lo == NULL)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "archive %s holds no batches",
                            rp->cfg->archive.url);
    for (int k = 0; k < 2; k++) {
        const struct zetl_replay_point *p = pts[k];
        const struct rbatch *first = &lo->b[0], *last = &hi->b[hi->n - 1];
        char pt[160], t[40];
        bool before, after;

        if (!p->set)
            continue;
        point_text(p, pt, sizeof(pt));
        if (p->is_time) {
            /* Times order batches of different streams only roughly: look at every stream. */
            const struct rstream *tlo = lo, *thi = hi;
            int64_t tmin = INT64_MAX, tmax = INT64_MIN;

            for (size_t i = 0; i < rp->ns; i++) {
                const struct rstream *st = &rp->s[i];
                if (st->n == 0)
                    continue;
                if (st->b[0].t_first < tmin) {
                    tmin = st->b[0].t_first;
                    tlo = st;
                }
                if (st->b[st->n - 1].t_last > tmax) {
                    tmax = st->b[st->n - 1].t_last;
                    thi = st;
                }
            }
            before = p->usec < tmin;
            after = p->usec > tmax;
            zetl_time_format(before ? tmin : tmax, t, sizeof(t));
            if (before)
                return zetl_err_set(eb, ZETL_ERR_FATAL,
                                    "%s %s is before the oldest archived transaction (committed "
                                    "%s, stream \"%s\", batch %s): the archive does not hold the "
                                    "changes from %s to then",
                                    opt[k], pt, t, tlo->name, tlo->b[0].name, p->text);
            if (after)
                return zetl_err_set(eb, ZETL_ERR_FATAL,
                                    "%s %s is after the newest archived transaction (committed "
                                    "%s, stream \"%s\", batch %s): the archive does not hold the "
                                    "changes from then to %s (not archived yet?)",
                                    opt[k], pt, t, thi->name, thi->b[thi->n - 1].name, p->text);
            continue;
        }
        before = p->lsn < first->first;
        after = p->lsn > last->last;
        if (before)
            return zetl_err_set(eb, ZETL_ERR_FATAL,
                                "%s %s is before the oldest archived transaction (" ZETL_LSN_FMT
                                ", stream \"%s\", batch %s): the archive does not hold "
                                "%s to " ZETL_LSN_FMT,
                                opt[k], pt, ZETL_LSN_ARGS(first->first), lo->name, first->name,
                                p->text, ZETL_LSN_ARGS(first->first));
        if (after)
            return zetl_err_set(
                eb, ZETL_ERR_FATAL,
                "%s %s is after the newest archived transaction (" ZETL_LSN_FMT
                ", stream \"%s\", batch %s): the archive does not hold " ZETL_LSN_FMT
                " to %s (not archived yet?)",
                opt[k], pt, ZETL_LSN_ARGS(last->last), hi->name, last->name,
                ZETL_LSN_ARGS(last->last), p->text);
    }
    return ZETL_OK;
}

/* What a scan of one batch's rows looks for: transactions around the time `usec`. */
struct tscan {
    int64_t usec;
    uint64_t min_at_or_after; /* smallest commit LSN committed at or after usec */
    uint64_t min_after;       /* smallest commit LSN committed after usec */
    uint64_t max_below;       /* largest commit LSN below `limit` */
    uint64_t limit;
};

static void tscan_row(void *arg, uint64_t lsn, int64_t usec)
{
    struct tscan *ts = arg;

    if (usec >= ts->usec && lsn < ts->min_at_or_after)
        ts->min_at_or_after = lsn;
    if (usec > ts->usec && lsn < ts->min_after)
        ts->min_after = lsn;
    if (lsn < ts->limit && lsn > ts->max_below)
        ts->max_below = lsn;
}

/* Scans the rows of batch b of st (fetched for the purpose) with ts. */
static enum zetl_err scan_batch(struct replay *rp, struct rstream *st, const struct rbatch *b,
                                struct tscan *ts, struct zetl_errbuf *eb)
{
    struct zetl_manifest m;
    char *dir = NULL;
    char path[4200];
    enum zetl_err err;

    zetl_manifest_init(&m);
    if ((err = zetl_archive_fetch(rp->ar, st->name, b->name, &dir, eb)) != ZETL_OK)
        goto done;
    snprintf(path, sizeof(path), "%s/%s", dir, ZETL_MANIFEST_NAME);
    zetl_manifest_release(&m);
    if ((err = zetl_manifest_read_file(path, st->name, &m, eb)) != ZETL_OK ||
        (err = zetl_archive_scan_commits(dir, &m, tscan_row, ts, eb)) != ZETL_OK)
        goto done;
    if (ts->limit != 0) {
        /* Second pass: the last transaction before the first one after the time. */
        ts->limit = ts->min_after;
        err = zetl_archive_scan_commits(dir, &m, tscan_row, ts, eb);
    }
done:
    zetl_manifest_release(&m);
    zetl_archive_fetch_done(rp->ar, dir);
    if (err != ZETL_OK)
        zetl_err_prefix(eb, "batch %s of stream \"%s\"", b->name, st->name);
    return err;
}

/*
 * --from TIME: the first transaction, in LSN order, committed at or after
 * it.  --to TIME: the transactions before the first one committed after it
 * (commit times of concurrent transactions can be microseconds out of LSN
 * order; cutting at the first later one keeps what is applied a prefix).
 */
static enum zetl_err resolve_times(struct replay *rp, struct rstream *st, struct zetl_errbuf *eb)
{
    const struct zetl_replay_opts *o = rp->o;
    enum zetl_err err;

    if (o->from.set && o->from.is_time) {
        size_t i = 0;
        while (i < st->n && st->b[i].t_last < o->from.usec)
            i++;
        if (i == st->n) {
            st->nothing = true;
        } else if (st->b[i].t_first >= o->from.usec) {
            st->from_lsn = st->b[i].first;
        } else {
            struct tscan ts = {o->from.usec, UINT64_MAX, UINT64_MAX, 0, 0};
            if ((err = scan_batch(rp, st, &st->b[i], &ts, eb)) != ZETL_OK)
                return err;
            st->from_lsn = ts.min_at_or_after != UINT64_MAX ? ts.min_at_or_after : st->b[i].last;
        }
    }
    if (o->to.set && o->to.is_time) {
        size_t i = 0;
        while (i < st->n && st->b[i].t_last <= o->to.usec)
            i++;
        if (i == st->n) {
            st->to_lsn = st->n ? st->b[st->n - 1].last : 0;
        } else if (st->b[i].t_first > o->to.usec) {
            st->nothing = st->nothing || i == 0;
            st->to_lsn = i > 0 ? st->b[i - 1].last : 0;
        } else {
            struct tscan ts = {o->to.usec, UINT64_MAX, UINT64_MAX, 0, 1};
            if ((err = scan_batch(rp, st, &st->b[i], &ts, eb)) != ZETL_OK)
                return err;
            st->to_lsn = ts.max_below != 0 ? ts.max_below : i > 0 ? st->b[i - 1].last : 0;
            st->nothing = st->nothing || st->to_lsn == 0;
        }
    }
    return ZETL_OK;
}

/* Loads every stream of the archive, checks the range is archived and resolves it per stream. */
static enum zetl_err plan(struct replay *rp, size_t *total, struct zetl_errbuf *eb)
{
    const struct zetl_replay_opts *o = rp->o;
    bool times = (o->from.set && o->from.is_time) || (o->to.set && o->to.is_time);
    enum zetl_err err;

    *total = 0;
    if ((err = zetl_archive_streams(rp->ar, &rp->snames, eb)) != ZETL_OK)
        return err;
    rp->s = zetl_calloc(rp->snames.n ? rp->snames.n : 1, sizeof(*rp->s));
    for (size_t i = 0; i < rp->snames.n; i++) {
        struct rstream *st = &rp->s[rp->ns++];

        st->name = rp->snames.items[i];
        if ((err = load_stream(rp, st, times, eb)) != ZETL_OK)
            return err;
    }
    if ((err = check_covered(rp, eb)) != ZETL_OK)
        return err;
    for (size_t i = 0; i < rp->ns; i++) {
        struct rstream *st = &rp->s[i];

        if (o->from.set && !o->from.is_time)
            st->from_lsn = o->from.lsn;
        if (o->to.set && !o->to.is_time)
            st->to_lsn = o->to.lsn;
        if ((err = resolve_times(rp, st, eb)) != ZETL_OK)
            return err;
        if (o->to.set && st->to_lsn < st->from_lsn)
            st->nothing = true;
        for (size_t j = 0; j < st->n && !st->nothing; j++)
            *total +=
                st->b[j].last >= st->from_lsn && (st->to_lsn == 0 || st->b[j].first <= st->to_lsn);
        if (st->nothing)
            zetl_info("stream \"%s\": no archived transaction in the range", st->name);
        else if (o->from.set || o->to.set)
            zetl_info("stream \"%s\": transactions " ZETL_LSN_FMT " to " ZETL_LSN_FMT, st->name,
                      ZETL_LSN_ARGS(st->from_lsn), ZETL_LSN_ARGS(st->to_lsn));
    }
    return ZETL_OK;
}

/* ---- applying -------------------------------------------------------------------- */

struct progress {
    bool tty;
    size_t done, total, skipped;
    uint64_t rows;
    int64_t start_ms, shown_ms;
};

static double rate(const struct progress *pg, int64_t now)
{
    double secs = (double)(now - pg->start_ms) / 1000.0;

    return secs > 0 ? (double)pg->rows / secs : 0;
}

static void progress_show(struct progress *pg, bool last)
{
    int64_t now = zetl_now_ms();

    if (!pg->tty || (!last && now - pg->shown_ms < 200))
        return;
    pg->shown_ms = now;
    fprintf(stderr, "\rreplay: %zu/%zu batches, %" PRIu64 " rows, %.0f rows/s%s", pg->done,
            pg->total, pg->rows, rate(pg, now), last ? "\n" : "");
    fflush(stderr);
}

static enum zetl_err apply_all(struct replay *rp, struct zetl_wh *wh, struct progress *pg,
                               struct zetl_errbuf *eb)
{
    const struct zetl_replay_opts *o = rp->o;

    for (size_t i = 0; i < rp->ns; i++) {
        struct rstream *st = &rp->s[i];
        struct zetl_wh_replay r = {&o->tenants, &o->tables, st->from_lsn, st->to_lsn,
                                   !(o->tenants.n > 0 || o->tables.n > 0 || o->from.set)};

        for (size_t j = 0; j < st->n && !st->nothing; j++) {
            const struct rbatch *b = &st->b[j];
            uint64_t rows;
            bool skipped;
            enum zetl_err err;

            if (b->last < st->from_lsn || (st->to_lsn != 0 && b->first > st->to_lsn))
                continue;
            if (zetl_stop_requested())
                return zetl_err_set(eb, ZETL_ERR_FATAL, "stopped by a signal");
            err = zetl_replay_batch(rp->ar, wh, st->name, b->name, NULL, &r, &rows, &skipped, eb);
            if (err != ZETL_OK)
                return err;
            pg->done++;
            pg->skipped += skipped;
            pg->rows += rows;
            progress_show(pg, false);
        }
    }
    return ZETL_OK;
}

int zetl_cmd_replay(const struct zetl_config *cfg, const struct zetl_replay_opts *o)
{
    /* The same configuration but for the schema: wh borrows it, so it lives as long. */
    struct zetl_config into = *cfg;
    bool filtered = o->tenants.n > 0 || o->tables.n > 0 || o->from.set;
    struct replay rp = {cfg, o, NULL, {NULL, 0}, NULL, 0};
    struct progress pg = {0};
    struct zetl_wh *wh = NULL;
    struct zetl_errbuf eb;
    enum zetl_err err;
    int rc = EXIT_JOB;
    int64_t now;

    if (cfg->warehouse.kind == ZETL_WH_NONE || cfg->archive.url == NULL) {
        fprintf(stderr, "zetl replay: %s needs both an archive and a warehouse section\n",
                cfg->path);
        return EXIT_USAGE;
    }
    if (o->into != NULL)
        into.warehouse.schema = (char *)o->into;
    if (filtered && strcmp(into.warehouse.schema, cfg->warehouse.schema) == 0) {
        fprintf(stderr,
                "zetl replay: --tenant, --table and --from need --into SCHEMA, a schema other "
                "than warehouse.schema \"%s\": a filtered replay records no offsets, so zetl run "
                "would apply its rows again (see docs/replay.md)\n",
                cfg->warehouse.schema);
        return EXIT_USAGE;
    }
    /* Batches fetched from S3 go under buffer.dir: checked before anything connects. */
    if (strncmp(cfg->archive.url, "s3://", 5) == 0 &&
        zetl_bufdir_check(cfg, "s3-fetch", &eb) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        return EXIT_JOB;
    }
    if ((err = zetl_archive_open(cfg, &rp.ar, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        return err == ZETL_ERR_USAGE ? EXIT_USAGE : EXIT_JOB;
    }
    if ((err = plan(&rp, &pg.total, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "replay: %s", eb.msg);
        goto done;
    }
    if ((err = zetl_wh_open(&into, &wh, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "could not open the warehouse: %s", eb.msg);
        rc = err == ZETL_ERR_USAGE ? EXIT_USAGE : EXIT_JOB;
        goto done;
    }
    pg.tty = isatty(STDERR_FILENO) == 1;
    pg.start_ms = zetl_now_ms();
    err = apply_all(&rp, wh, &pg, &eb);
    progress_show(&pg, true);
    now = zetl_now_ms();
    if (err != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "replay into schema \"%s\": %s", into.warehouse.schema, eb.msg);
        zetl_log(ZETL_LOG_FATAL,
                 "replay stopped after %zu of %zu batch(es); running it again "
                 "goes on from there",
                 pg.done, pg.total);
        goto done;
    }
    zetl_logmsg("replay into schema \"%s\"%s: %zu batch(es), %zu of them applied already, "
                "%" PRIu64 " row(s) in %.1f s (%.0f rows/s)",
                into.warehouse.schema, filtered ? " (filtered, nothing recorded)" : "", pg.done,
                pg.skipped, pg.rows, (double)(now - pg.start_ms) / 1000.0, rate(&pg, now));
    rc = 0;
done:
    zetl_wh_free(wh);
    zetl_archive_free(rp.ar);
    replay_release(&rp);
    return rc;
}

/* ---- tenant purge ----------------------------------------------------------------- */

int zetl_cmd_tenant_purge(const struct zetl_config *cfg, const char *tenant)
{
    struct zetl_wh_purged *p = NULL;
    struct zetl_wh *wh = NULL;
    struct zetl_errbuf eb;
    uint64_t total = 0;
    size_t n = 0;
    enum zetl_err err;

    if (cfg->warehouse.kind == ZETL_WH_NONE) {
        fprintf(stderr, "zetl tenant purge: %s has no warehouse section\n", cfg->path);
        return EXIT_USAGE;
    }
    if ((err = zetl_wh_open(cfg, &wh, &eb)) != ZETL_OK ||
        (err = zetl_wh_purge_tenant(wh, tenant, &p, &n, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "%s", eb.msg);
        zetl_wh_free(wh);
        return err == ZETL_ERR_USAGE ? EXIT_USAGE : EXIT_JOB;
    }
    for (size_t i = 0; i < n; i++) {
        total += p[i].rows;
        if (p[i].rows > 0)
            printf("%s.%s: %" PRIu64 " row(s) removed\n", cfg->warehouse.schema, p[i].table,
                   p[i].rows);
    }
    if (total == 0)
        printf("tenant \"%s\" has no rows in warehouse schema \"%s\" (%zu table(s) looked at); "
               "nothing removed\n",
               tenant, cfg->warehouse.schema, n);
    else
        printf("tenant \"%s\": %" PRIu64 " row(s) removed from warehouse schema \"%s\"\n", tenant,
               total, cfg->warehouse.schema);
    zetl_logmsg("tenant purge of \"%s\" in warehouse schema \"%s\": %" PRIu64 " row(s) removed",
                tenant, cfg->warehouse.schema, total);
    zetl_wh_purged_free(p, n);
    zetl_wh_free(wh);
    return 0;
}
