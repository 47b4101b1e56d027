/*
 * The warehouse sink's driver: the bookkeeping tables
 * (_zetl_offsets, _zetl_table_state), and the apply of one archived batch in
 * one warehouse transaction: manifest, per table the warehouse table made
 * ready (wh_schema.c), a staging table loaded, then filled and merged, the
 * table's state and the stream's offset written.  Every statement and
 * operation that differs between warehouses comes from the dialect's table
 * (wh_dialect.h: wh_pg.c, wh_redshift.c).
 */
#include "sinks/warehouse/wh_driver.h"

#include "common/sqlquote.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Staging tables above this many rows are analyzed (and indexed for a fill). */
#define WH_STAGE_BIG 10000

/*
 * The merge looks keys up in the warehouse table's primary key index when
 * the table has at least this many times the staged rows; below that, a hash
 * join over a scan of the table is as fast or faster (measured: 100,000
 * staged rows against 150,000 warehouse rows 0.45 s hashed, 0.64 s by index;
 * against 1,000,000 rows 1.6 s and 1.4 s; 5,000 against 1,000,000 0.58 s
 * and 0.07 s).
 */
#define WH_BY_KEY_RATIO 4
/* Pointer jumping halves every chain per round; this is far beyond any batch. */
#define WH_FILL_MAX_ROUNDS 200

/* The warehouses zetl_wh_open knows, by warehouse.kind. */
static const struct zetl_wh_dialect *const dialects[] = {
    &zetl_wh_pg_dialect,
    &zetl_wh_rs_dialect,
};

/*
 * Creates the schema and the bookkeeping tables, or brings those of an
 * earlier release to today's layout; several streams connect at once, so
 * under the schema's DDL lock.
 */
static enum zetl_err bootstrap(struct zetl_wh *wh, struct zetl_errbuf *eb)
{
    const char *schema = wh->cfg->warehouse.schema;
    const char *params[] = {schema, "_zetl_table_state"};
    PGresult *res = NULL;
    bool upgrade = true;
    enum zetl_err err;

    if ((err = zetl_wh_exec(wh, "BEGIN", 0, NULL, NULL, eb)) != ZETL_OK ||
        (err = zetl_wh_ddl_lock(wh, NULL, eb)) != ZETL_OK ||
        (err = zetl_wh_exec_owned(wh, zetl_wh_sql_bootstrap(wh->d, schema), NULL, eb)) != ZETL_OK ||
        (err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_COLUMNS, 2, params, &res, eb)) != ZETL_OK)
        goto fail;
    for (int i = 0; i < PQntuples(res); i++)
        upgrade = upgrade && strcmp(PQgetvalue(res, i, 0), "stream") != 0;
    PQclear(res);
    res = NULL;
    if (upgrade) {
        struct zetl_buf b;
        long streams;

        zetl_buf_init(&b, 0);
        zetl_buf_puts(&b, "SELECT count(*) FROM ");
        zetl_sql_append_ident(&b, schema);
        zetl_buf_puts(&b, "._zetl_offsets");
        if ((err = zetl_wh_exec_owned(wh, zetl_wh_sql_take(&b), &res, eb)) != ZETL_OK ||
            (err = zetl_wh_exec_owned(wh, zetl_wh_sql_state_upgrade(wh->d, schema), NULL, eb)) !=
                ZETL_OK)
            goto fail;
        streams = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        zetl_info("warehouse schema \"%s\": _zetl_table_state now has one row per stream and "
                  "table",
                  schema);
        /*
         * Earlier releases skipped a table's rows of one stream at or below
         * what another stream had applied to it: rows may be missing.
         */
        if (streams > 1)
            zetl_warn("warehouse schema \"%s\" was written by an earlier zetl from %ld streams, "
                      "which could lose rows of tables that several streams feed; rebuild it "
                      "from the archive with \"zetl resync --config FILE --rebuild --all\" "
                      "(docs/warehouse.md, \"Repair\")",
                      schema, streams);
    }
    if ((err = zetl_wh_exec(wh, "COMMIT", 0, NULL, NULL, eb)) != ZETL_OK)
        goto fail;
    PQclear(res);
    return ZETL_OK;

fail:
    PQclear(res);
    if (wh->conn != NULL)
        PQclear(PQexec(wh->conn, "ROLLBACK"));
    return err;
}

static enum zetl_err wh_connect(struct zetl_wh *wh, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    if ((err = zetl_wh_conn_open(wh, eb)) != ZETL_OK)
        return err;
    if ((err = bootstrap(wh, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "warehouse schema \"%s\"", wh->cfg->warehouse.schema);
        zetl_wh_drop_conn(wh);
        return err;
    }
    return ZETL_OK;
}

static enum zetl_err ensure_conn(struct zetl_wh *wh, struct zetl_errbuf *eb)
{
    if (wh->conn != NULL && PQstatus(wh->conn) == CONNECTION_OK)
        return ZETL_OK;
    zetl_wh_drop_conn(wh);
    return wh_connect(wh, eb);
}

enum zetl_err zetl_wh_ensure_conn(struct zetl_wh *wh, struct zetl_errbuf *eb)
{
    return ensure_conn(wh, eb);
}

/* A warehouse handle of cfg's dialect with its state, not yet connected. */
static enum zetl_err wh_new(const struct zetl_config *cfg, struct zetl_wh **out,
                            struct zetl_errbuf *eb)
{
    const struct zetl_wh_dialect *d = NULL;
    struct zetl_wh *wh;
    enum zetl_err err;

    *out = NULL;
    for (size_t i = 0; i < sizeof(dialects) / sizeof(dialects[0]); i++)
        if (dialects[i]->kind == cfg->warehouse.kind)
            d = dialects[i];
    if (d == NULL)
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.kind: only postgres and redshift are supported");
    wh = zetl_calloc(1, sizeof(*wh));
    wh->cfg = cfg;
    wh->d = d;
    if (d->open != NULL && (err = d->open(cfg, &wh->dstate, eb)) != ZETL_OK) {
        zetl_wh_free(wh);
        return err;
    }
    *out = wh;
    return ZETL_OK;
}

enum zetl_err zetl_wh_open(const struct zetl_config *cfg, struct zetl_wh **out,
                           struct zetl_errbuf *eb)
{
    enum zetl_err err;

    if ((err = wh_new(cfg, out, eb)) == ZETL_OK && (err = wh_connect(*out, eb)) != ZETL_OK) {
        zetl_wh_free(*out);
        *out = NULL;
    }
    return err;
}

enum zetl_err zetl_wh_probe(const struct zetl_config *cfg, zetl_wh_probe_fn fn, void *arg,
                            int *failed, struct zetl_errbuf *eb)
{
    struct zetl_wh *wh;
    enum zetl_err err;

    *failed = 0;
    if ((err = wh_new(cfg, &wh, eb)) != ZETL_OK)
        return err;
    if (wh->d->probe != NULL && (err = zetl_wh_conn_open(wh, eb)) == ZETL_OK)
        err = wh->d->probe(wh, wh->dstate, fn, arg, failed, eb);
    zetl_wh_free(wh);
    return err;
}

void zetl_wh_free(struct zetl_wh *wh)
{
    if (wh == NULL)
        return;
    zetl_wh_drop_conn(wh);
    zetl_wh_alters_clear(wh);
    if (wh->d->release != NULL)
        wh->d->release(wh->dstate);
    free(wh);
}

static void u64_text(uint64_t v, char out[24])
{
    snprintf(out, 24, "%" PRIu64, v);
}

enum zetl_err zetl_wh_offset(struct zetl_wh *wh, const char *stream, uint64_t *last_lsn,
                             uint64_t *end_lsn, struct zetl_errbuf *eb)
{
    const char *params[] = {stream};
    PGresult *res = NULL;
    enum zetl_err err;

    *last_lsn = *end_lsn = 0;
    if ((err = ensure_conn(wh, eb)) != ZETL_OK ||
        (err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_OFFSET_GET, 1, params, &res, eb)) != ZETL_OK)
        goto fail;
    if (PQntuples(res) == 1) {
        *last_lsn = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        if (!PQgetisnull(res, 0, 1))
            *end_lsn = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
    }
    PQclear(res);
    return ZETL_OK;

fail:
    zetl_err_prefix(eb, "could not read the warehouse offset of stream \"%s\"", stream);
    return err;
}

enum zetl_err zetl_wh_note_progress(struct zetl_wh *wh, const char *stream, uint64_t end_lsn,
                                    struct zetl_errbuf *eb)
{
    char lsn[24];
    const char *params[] = {stream, lsn};
    bool txn = wh->d->progress_in_txn;
    enum zetl_err err;

    u64_text(end_lsn, lsn);
    if ((err = ensure_conn(wh, eb)) != ZETL_OK)
        goto fail;
    /* Where the dialect's upsert is several statements: under the lock an apply takes. */
    if (txn)
        err = zetl_wh_exec_owned(wh, wh->d->begin_sql(wh->cfg->warehouse.schema), NULL, eb);
    if (err == ZETL_OK)
        err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_OFFSET_PROGRESS, 2, params, NULL, eb);
    if (txn && err == ZETL_OK)
        err = zetl_wh_exec(wh, "COMMIT", 0, NULL, NULL, eb);
    if (txn && err != ZETL_OK && wh->conn != NULL)
        PQclear(PQexec(wh->conn, "ROLLBACK"));
fail:
    if (err)
        zetl_err_prefix(eb, "could not record the progress of stream \"%s\"", stream);
    return err;
}

/* ---- apply ------------------------------------------------------------------ */

struct tstate {
    const char *table; /* borrowed from the state result */
    bool stopped;
    uint64_t last_lsn;
    const char *reason; /* borrowed */
};

/* A table stopped by this batch: logged once the transaction committed. */
struct stop {
    char *table;  /* owned */
    char *reason; /* owned */
};

/* One apply of one batch. */
struct apply {
    const char *dir;                      /* borrowed: the batch directory */
    bool by_table;                        /* a resync: per-table skips, no stream offset */
    const char *only;                     /* borrowed: the one table to apply, or NULL for all */
    const struct zetl_wh_replay *rp;      /* borrowed: a replay's selection, or NULL */
    const struct zetl_wh_kafka_pos *kpos; /* borrowed: zetl load's partitions, or NULL */
    size_t nkpos;
    bool fenced; /* a partition of kpos was applied by another loader */
    struct manifest m;
    uint64_t upto;         /* the last LSN applied: m.last_lsn, or a replay's to_lsn below it */
    uint64_t rows;         /* rows merged */
    uint64_t offset;       /* the stream's offset (0 with by_table) */
    PGresult *sres;        /* owned: the states' strings */
    struct tstate *states; /* owned */
    size_t nstates;
    struct tplan *plans; /* owned, each released */
    size_t nplans;
    struct stop *stops; /* owned, one per plan */
};

static void apply_release(struct apply *a)
{
    for (size_t j = 0; j < a->nplans; j++) {
        zetl_wh_plan_release(&a->plans[j]);
        if (a->stops) {
            free(a->stops[j].table);
            free(a->stops[j].reason);
        }
    }
    free(a->stops);
    free(a->plans);
    free(a->states);
    PQclear(a->sres);
    zetl_wh_manifest_release(&a->m);
}

static const struct tstate *state_find(const struct apply *a, const char *table)
{
    for (size_t i = 0; i < a->nstates; i++)
        if (strcmp(a->states[i].table, table) == 0)
            return &a->states[i];
    return NULL;
}

/* Runs owned SQL that returns one row of `n` counts. */
static enum zetl_err query_counts(struct zetl_wh *wh, char *sql, uint64_t *v, int n,
                                  struct zetl_errbuf *eb)
{
    PGresult *res = NULL;
    enum zetl_err err = zetl_wh_exec_owned(wh, sql, &res, eb);

    if (err)
        return err;
    for (int i = 0; i < n; i++)
        v[i] = strtoull(PQgetvalue(res, 0, i), NULL, 10);
    PQclear(res);
    return ZETL_OK;
}

/*
 * Sets t->by_key when the warehouse table is large against the `rows` staged
 * for it, by the planner's estimate (unknown before the table's first
 * ANALYZE or VACUUM: the planner chooses then).
 */
static enum zetl_err table_rows(struct zetl_wh *wh, struct zetl_wh_table *t, uint64_t rows,
                                struct zetl_errbuf *eb)
{
    const char *params[] = {t->schema, t->table};
    PGresult *res = NULL;
    enum zetl_err err = zetl_wh_exec(wh, wh->d->table_rows_sql, 2, params, &res, eb);

    if (err)
        return err;
    t->by_key = PQntuples(res) == 1 &&
                strtod(PQgetvalue(res, 0, 0), NULL) >= (double)rows * WH_BY_KEY_RATIO;
    PQclear(res);
    return ZETL_OK;
}

/* A BIGINT no LSN reaches: the open end of a replay's range. */
#define WH_LSN_NONE "9223372036854775807"

/* Drops the staged rows a replay leaves out: other tenants, transactions outside its range. */
static enum zetl_err replay_filter(struct zetl_wh *wh, const struct apply *a,
                                   const struct zetl_wh_table *t, struct zetl_errbuf *eb)
{
    const struct zetl_wh_replay *rp = a->rp;
    size_t ntenants = rp && rp->tenants ? rp->tenants->n : 0;
    char from[24], to[24];
    const char **params;
    char *sql;
    enum zetl_err err;

    if (rp == NULL || (ntenants == 0 && rp->from_lsn <= a->m.first_lsn &&
                       (rp->to_lsn == 0 || rp->to_lsn >= a->m.last_lsn)))
        return ZETL_OK;
    params = zetl_calloc(ntenants + 2, sizeof(*params));
    u64_text(rp->from_lsn, from);
    u64_text(rp->to_lsn, to);
    params[0] = from;
    params[1] = rp->to_lsn ? to : WH_LSN_NONE;
    for (size_t i = 0; i < ntenants; i++)
        params[i + 2] = rp->tenants->items[i];
    sql = wh->d->replay_filter_sql(t, ntenants);
    err = zetl_wh_exec(wh, sql, (int)ntenants + 2, params, NULL, eb);
    free(sql);
    free(params);
    return err;
}

/*
 * Loads the table's files into its stage and drops what the warehouse has
 * already (an overlapping replay); st[]: truncates, deletes, updates to
 * fill, rows.
 */
static enum zetl_err stage_table(struct zetl_wh *wh, const struct apply *a,
                                 const struct zetl_wh_table *t, const struct tplan *p,
                                 uint64_t skip_lsn, uint64_t st[4], struct zetl_errbuf *eb)
{
    const struct zetl_wh_stage_src src = {a->dir,    a->m.stream,    a->m.first_lsn, a->m.last_lsn,
                                          p->nfiles, p->stage_files, p->shapes};
    enum zetl_err err;

    if ((err = wh->d->stage(wh, wh->dstate, t, &src, eb)) != ZETL_OK)
        return err;
    if (skip_lsn >= a->m.first_lsn) {
        char lsn[24];
        const char *params[] = {lsn};
        char *sql = wh->d->skip_applied_sql(t);

        u64_text(skip_lsn, lsn);
        err = zetl_wh_exec(wh, sql, 1, params, NULL, eb);
        free(sql);
        if (err)
            return err;
    }
    if ((err = replay_filter(wh, a, t, eb)) != ZETL_OK)
        return err;
    return query_counts(wh, wh->d->stage_stats_sql(t, p->shapes, p->nfiles), st, 4, eb);
}

/* Fills the unchanged values of staged updates, round by round until none is left. */
static enum zetl_err fill(struct zetl_wh *wh, const struct zetl_wh_table *t, const struct tplan *p,
                          struct zetl_errbuf *eb)
{
    char *round = wh->d->fill_round_sql(t);
    int rounds = 0;
    enum zetl_err err =
        zetl_wh_exec_owned(wh, wh->d->fill_prepare_sql(t, p->shapes, p->nfiles), NULL, eb);

    while (err == ZETL_OK && rounds++ < WH_FILL_MAX_ROUNDS) {
        PGresult *res = NULL;
        bool more;

        if ((err = zetl_wh_exec(wh, round, 0, NULL, &res, eb)) != ZETL_OK)
            break;
        more = strcmp(PQcmdTuples(res), "0") != 0;
        PQclear(res);
        if (!more)
            break;
    }
    free(round);
    return err;
}

/* The staged rows (st[] as stage_table counted them) into the warehouse table. */
static enum zetl_err merge_table(struct zetl_wh *wh, struct zetl_wh_table *t, const struct tplan *p,
                                 const uint64_t st[4], struct zetl_errbuf *eb)
{
    const struct zetl_wh_dialect *d = wh->d;
    enum zetl_err err;

    if (st[3] > WH_STAGE_BIG) {
        char *sql = st[2] > 0 && d->stage_index_sql ? d->stage_index_sql(t)
                    : d->stage_analyze_sql          ? d->stage_analyze_sql(t)
                                                    : NULL;

        if (sql != NULL && (err = zetl_wh_exec_owned(wh, sql, NULL, eb)) != ZETL_OK)
            return err;
    }
    if (st[0] > 0 && (err = zetl_wh_exec_owned(wh, d->truncate_sql(t), NULL, eb)) != ZETL_OK)
        return err;
    if (st[2] > 0 && (err = fill(wh, t, p, eb)) != ZETL_OK)
        return err;
    if (d->table_rows_sql != NULL && zetl_wh_sql_nkeys(t) > 0 &&
        (err = table_rows(wh, t, st[3], eb)) != ZETL_OK)
        return err;
    return zetl_wh_exec_owned(wh, d->merge_sql(t, p->shapes, p->nfiles), NULL, eb);
}

/* Drops the stage where the dialect's outlives the transaction. */
static enum zetl_err drop_stage(struct zetl_wh *wh, const struct zetl_wh_table *t,
                                struct zetl_errbuf *eb)
{
    if (wh->d->drop_stage_sql == NULL)
        return ZETL_OK;
    return zetl_wh_exec_owned(wh, wh->d->drop_stage_sql(t), NULL, eb);
}

/* Records that the batch stopped table p->table; takes `reason` (owned) on success. */
static enum zetl_err stop_table(struct zetl_wh *wh, const struct apply *a, const struct tplan *p,
                                char *reason, struct stop *stop, struct zetl_errbuf *eb)
{
    char lsn[24];
    const char *params[] = {p->table, reason, lsn, a->m.stream};
    enum zetl_err err;

    u64_text(a->m.first_lsn, lsn);
    if ((err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_STATE_STOP, 4, params, NULL, eb)) != ZETL_OK)
        return err;
    stop->table = zetl_strdup(p->table);
    stop->reason = reason;
    return ZETL_OK;
}

/* Stages and merges one table's rows of the batch (rows at or below `skip_lsn` are dropped). */
static enum zetl_err apply_table(struct zetl_wh *wh, struct apply *a, struct tplan *p,
                                 uint64_t skip_lsn, struct stop *stop, struct zetl_errbuf *eb)
{
    const struct zetl_config *cfg = wh->cfg;
    char stage[48];
    char lsn[24];
    const char *params[3];
    struct zetl_wh_table t;
    char *reason = NULL;
    uint64_t st[4]; /* truncates, deletes, fills, rows */
    enum zetl_err err;

    snprintf(stage, sizeof(stage), "_zetl_stage_%" PRIu64, ++wh->stage_no);
    memset(&t, 0, sizeof(t));
    t.schema = cfg->warehouse.schema;
    t.table = p->table;
    t.tenant_column = cfg->transforms.tenant_column;
    t.stage = stage;
    t.deletes = cfg->warehouse.deletes;

    if ((err = zetl_wh_plan_prepare(wh, &t, p, &reason, eb)) != ZETL_OK)
        goto fail;
    if (reason != NULL)
        goto stopped;
    t.ncols = p->ncols;
    t.cols = p->cols;
    if ((err = stage_table(wh, a, &t, p, skip_lsn, st, eb)) != ZETL_OK)
        goto fail;
    if (st[1] > 0 && zetl_wh_sql_nkeys(&t) == 0 && wh->d->keyless_deletes_stop != NULL) {
        if ((err = drop_stage(wh, &t, eb)) != ZETL_OK)
            goto fail;
        reason = zetl_strdup(wh->d->keyless_deletes_stop);
        goto stopped;
    }
    if ((st[3] > 0 && (err = merge_table(wh, &t, p, st, eb)) != ZETL_OK) ||
        (err = drop_stage(wh, &t, eb)) != ZETL_OK)
        goto fail;
    a->rows += st[3];
    u64_text(a->upto, lsn);
    params[0] = p->table;
    params[1] = lsn;
    params[2] = a->m.stream;
    /* A filtered replay leaves rows out: the table must not look applied up to here. */
    if ((a->rp == NULL || a->rp->record) &&
        (err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_STATE_APPLIED, 3, params, NULL, eb)) != ZETL_OK)
        goto fail;
    zetl_debug("batch \"%s\": table \"%s\": %" PRIu64 " row(s) merged", a->m.name, p->table, st[3]);
    return ZETL_OK;

stopped:
    if ((err = stop_table(wh, a, p, reason, stop, eb)) == ZETL_OK)
        return ZETL_OK;
fail:
    free(reason);
    zetl_err_prefix(eb, "table \"%s\".\"%s\"", t.schema, p->table);
    return err;
}

/*
 * Locks the stream's offset row (two appliers of a stream serialize on it)
 * and reads it; *applied when the batch is at or below it.
 */
static enum zetl_err lock_offset(struct zetl_wh *wh, struct apply *a, bool *applied,
                                 struct zetl_errbuf *eb)
{
    const char *params[] = {a->m.stream};
    PGresult *res = NULL;
    enum zetl_err err;

    if ((err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_OFFSET_LOCK, 1, params, NULL, eb)) != ZETL_OK ||
        (err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_OFFSET_LOCKED_GET, 1, params, &res, eb)) != ZETL_OK)
        return err;
    if (PQntuples(res) == 1)
        a->offset = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    *applied = a->upto <= a->offset;
    return ZETL_OK;
}

/* The tables' states as this batch's stream sees them. */
static enum zetl_err load_states(struct zetl_wh *wh, struct apply *a, struct zetl_errbuf *eb)
{
    const char *params[] = {a->m.stream};
    enum zetl_err err;

    if ((err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_STATE_GET, 1, params, &a->sres, eb)) != ZETL_OK)
        return err;
    a->nstates = (size_t)PQntuples(a->sres);
    a->states = zetl_calloc(a->nstates ? a->nstates : 1, sizeof(*a->states));
    for (size_t i = 0; i < a->nstates; i++) {
        a->states[i].table = PQgetvalue(a->sres, (int)i, 0);
        a->states[i].stopped = strcmp(PQgetvalue(a->sres, (int)i, 1), "stopped") == 0;
        a->states[i].last_lsn = strtoull(PQgetvalue(a->sres, (int)i, 2), NULL, 10);
        a->states[i].reason = PQgetvalue(a->sres, (int)i, 3);
    }
    return ZETL_OK;
}

/* The table is one the apply was asked for. */
static bool table_wanted(const struct apply *a, const char *table)
{
    const struct zetl_strlist *l = a->rp ? a->rp->tables : NULL;

    if (a->only != NULL)
        return strcmp(a->only, table) == 0;
    if (l == NULL || l->n == 0)
        return true;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i], table) == 0)
            return true;
    return false;
}

/* Every table of the batch (or the one asked for) that is neither stopped nor applied already. */
static enum zetl_err apply_tables(struct zetl_wh *wh, struct apply *a, struct zetl_errbuf *eb)
{
    const char *schema = wh->cfg->warehouse.schema;
    const struct manifest *m = &a->m;
    bool found = false;
    enum zetl_err err;

    for (size_t j = 0; j < a->nplans; j++) {
        const char *table = a->plans[j].table;
        const struct tstate *ts = state_find(a, table);
        uint64_t skip = a->offset;

        if (!table_wanted(a, table))
            continue;
        found = true;
        if (ts && ts->stopped) {
            if (a->by_table)
                return zetl_err_set(eb, ZETL_ERR_FATAL,
                                    "table \"%s\".\"%s\" is stopped (%s): fix or drop it and "
                                    "delete its row from \"%s\"._zetl_table_state first",
                                    schema, table, ts->reason, schema);
            zetl_warn("batch \"%s\": skipping the rows of stopped warehouse table \"%s\".\"%s\" "
                      "(%s)",
                      m->name, schema, table, ts->reason);
            continue;
        }
        /* Both LSNs are of this batch's stream: never compare across streams. */
        if (ts && ts->last_lsn > skip)
            skip = ts->last_lsn;
        if (skip >= a->upto) {
            zetl_debug("batch \"%s\" of stream \"%s\": table \"%s\" already holds its rows "
                       "up to " ZETL_LSN_FMT "; skipped",
                       m->name, m->stream, table, ZETL_LSN_ARGS(skip));
            continue;
        }
        if (skip >= m->first_lsn)
            zetl_debug("batch \"%s\" of stream \"%s\": table \"%s\": rows at or below " ZETL_LSN_FMT
                       " are applied already and dropped",
                       m->name, m->stream, table, ZETL_LSN_ARGS(skip));
        if ((err = apply_table(wh, a, &a->plans[j], skip, &a->stops[j], eb)) != ZETL_OK)
            return err;
    }
    if (a->only != NULL && !found)
        zetl_debug("batch \"%s\" has no rows of table \"%s\"", m->name, a->only);
    return ZETL_OK;
}

/* Moves the stream's offset to a->upto, the batch's end or a replay's cut (in its transaction). */
static enum zetl_err set_offset(struct zetl_wh *wh, const struct apply *a, struct zetl_errbuf *eb)
{
    const struct manifest *m = &a->m;
    char last[24], end[24];
    const char *params[] = {m->stream, last, end, m->name};

    u64_text(a->upto, last);
    u64_text(a->upto < m->last_lsn ? a->upto : m->end_lsn, end);
    return zetl_wh_run_stmt(wh, ZETL_WH_SQL_OFFSET_SET, 4, params, NULL, eb);
}

/*
 * zetl load: locks each partition's offset row and checks the batch starts
 * where the stored offset says (unset is 0); a->fenced when it does not.
 */
static enum zetl_err lock_kafka(struct zetl_wh *wh, struct apply *a, struct zetl_errbuf *eb)
{
    for (size_t i = 0; i < a->nkpos && !a->fenced; i++) {
        const char *params[] = {a->kpos[i].key};
        PGresult *res = NULL;
        uint64_t stored = 0;
        enum zetl_err err;

        if ((err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_OFFSET_LOCK, 1, params, NULL, eb)) != ZETL_OK ||
            (err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_OFFSET_LOCKED_GET, 1, params, &res, eb)) !=
                ZETL_OK)
            return err;
        if (PQntuples(res) == 1)
            stored = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        if (stored != 0 && stored != a->kpos[i].start) {
            zetl_logmsg("kafka partition %s is at offset %llu in the warehouse, not %llu: another "
                        "loader applied it; the batch is dropped",
                        a->kpos[i].key, (unsigned long long)stored,
                        (unsigned long long)a->kpos[i].start);
            a->fenced = true;
        }
    }
    return ZETL_OK;
}

/* zetl load: moves each partition's offset past the batch (in its transaction). */
static enum zetl_err set_kafka(struct zetl_wh *wh, const struct apply *a, struct zetl_errbuf *eb)
{
    for (size_t i = 0; i < a->nkpos; i++) {
        char next[24];
        const char *params[] = {a->kpos[i].key, next, next, a->m.name};
        enum zetl_err err;

        u64_text(a->kpos[i].next, next);
        if ((err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_OFFSET_SET, 4, params, NULL, eb)) != ZETL_OK)
            return err;
    }
    return ZETL_OK;
}

/* A filtered replay's view of the offset: read, neither created nor locked (it writes none). */
static enum zetl_err read_offset(struct zetl_wh *wh, struct apply *a, bool *applied,
                                 struct zetl_errbuf *eb)
{
    const char *params[] = {a->m.stream};
    PGresult *res = NULL;
    enum zetl_err err;

    if ((err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_OFFSET_GET, 1, params, &res, eb)) != ZETL_OK)
        return err;
    if (PQntuples(res) == 1)
        a->offset = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    *applied = a->upto <= a->offset;
    return ZETL_OK;
}

/*
 * Applies the batch at `dir` in one transaction.  Normally every table and
 * the stream offset (the batch is skipped at or below it).  With by_table
 * (a resync), the tables named `only` (NULL: all of them) and no offset:
 * each table's rows at or below its own last_lsn of the stream are skipped.
 * With a->rp (a replay), what it selects, recorded only when rp->record.
 */
static enum zetl_err apply_once(struct zetl_wh *wh, struct apply *a0, bool *skipped,
                                struct zetl_errbuf *eb)
{
    const char *schema = wh->cfg->warehouse.schema;
    struct apply a = *a0;
    bool by_table = a.by_table, record = !by_table && (a.rp == NULL || a.rp->record);
    const char *dir = a.dir;
    bool in_txn = false, applied = false;
    enum zetl_err err;

    *skipped = false;
    if ((err = zetl_wh_manifest_load(dir, &a.m, eb)) != ZETL_OK)
        return err;
    a.upto = a.m.last_lsn;
    if (a.rp != NULL && a.rp->to_lsn != 0 && a.rp->to_lsn < a.upto)
        a.upto = a.rp->to_lsn;
    if ((err = ensure_conn(wh, eb)) != ZETL_OK ||
        (err = zetl_wh_exec_owned(wh, wh->d->begin_sql(schema), NULL, eb)) != ZETL_OK)
        goto fail;
    in_txn = true;
    if (record && (err = lock_offset(wh, &a, &applied, eb)) != ZETL_OK)
        goto fail;
    if (!by_table && !record && (err = read_offset(wh, &a, &applied, eb)) != ZETL_OK)
        goto fail;
    if (a.kpos != NULL && (err = lock_kafka(wh, &a, eb)) != ZETL_OK)
        goto fail;
    if (a.fenced) {
        *skipped = true;
        zetl_wh_exec(wh, "ROLLBACK", 0, NULL, NULL, eb);
        goto done;
    }
    if (applied) {
        *skipped = true;
        zetl_wh_exec(wh, "ROLLBACK", 0, NULL, NULL, eb);
        zetl_info("batch \"%s\" of stream \"%s\" is already applied (offset " ZETL_LSN_FMT
                  "); skipped",
                  a.m.name, a.m.stream, ZETL_LSN_ARGS(a.offset));
        goto done;
    }
    if ((err = load_states(wh, &a, eb)) != ZETL_OK)
        goto fail;
    zetl_wh_plan_tables(&a.m, &a.plans, &a.nplans);
    a.stops = zetl_calloc(a.nplans ? a.nplans : 1, sizeof(*a.stops));
    if ((err = apply_tables(wh, &a, eb)) != ZETL_OK ||
        (record && (err = set_offset(wh, &a, eb)) != ZETL_OK) ||
        (a.kpos != NULL && (err = set_kafka(wh, &a, eb)) != ZETL_OK))
        goto fail;
    in_txn = false;
    if ((err = zetl_wh_exec(wh, "COMMIT", 0, NULL, NULL, eb)) != ZETL_OK)
        goto fail;
    for (size_t j = 0; j < a.nplans; j++)
        if (a.stops[j].table)
            zetl_error("warehouse table \"%s\".\"%s\" stopped at batch \"%s\": %s; its rows are "
                       "skipped until it is resynced (see docs/warehouse.md)",
                       schema, a.stops[j].table, a.m.name, a.stops[j].reason);
    zetl_info("applied batch \"%s\" of stream \"%s\" up to " ZETL_LSN_FMT "%s", a.m.name,
              a.m.stream, ZETL_LSN_ARGS(a.upto), record ? "" : " (filtered, nothing recorded)");
    goto done;

fail:
    if (in_txn && wh->conn != NULL)
        PQclear(PQexec(wh->conn, "ROLLBACK"));
    if (wh->d->explain_failure != NULL)
        wh->d->explain_failure(wh, wh->dstate, eb);
    /* DDL of the failed transaction is gone: forget what the cache learned. */
    zetl_wh_cache_clear(wh);
    zetl_err_prefix(eb, "could not apply batch \"%s\"", dir);
done:
    a0->rows = a.rows;
    a0->fenced = a.fenced;
    apply_release(&a);
    return err;
}

/*
 * A column type change is never part of the apply's transaction (Redshift
 * refuses it in any transaction block): the apply that finds one rolls
 * back, the change runs on its own (zetl_wh_run_alters), and the apply
 * starts again.  Each round widens at least one column for good or stops
 * its table, so a few rounds are plenty.
 */
#define WH_ALTER_ROUNDS 4

static enum zetl_err apply(struct zetl_wh *wh, struct apply *a, bool *skipped,
                           struct zetl_errbuf *eb)
{
    enum zetl_err err;

    for (int round = 0;; round++) {
        err = apply_once(wh, a, skipped, eb);
        if (!zetl_wh_alters_pending(wh) || round == WH_ALTER_ROUNDS)
            break;
        if ((err = zetl_wh_run_alters(wh, eb)) != ZETL_OK) {
            zetl_err_prefix(eb, "could not apply batch \"%s\"", a->dir);
            break;
        }
    }
    /* Pending ones of a failed apply are decided again by the next one. */
    zetl_wh_alters_drop_pending(wh);
    return err;
}

enum zetl_err zetl_wh_apply_kafka(struct zetl_wh *wh, const char *dir,
                                  const struct zetl_wh_kafka_pos *pos, size_t n, uint64_t *rows,
                                  bool *fenced, struct zetl_errbuf *eb)
{
    struct zetl_wh_replay rp = {.record = false};
    struct apply a = {.dir = dir, .rp = &rp, .kpos = pos, .nkpos = n};
    bool skipped;
    enum zetl_err err = apply(wh, &a, &skipped, eb);

    *rows = a.rows;
    *fenced = a.fenced;
    return err;
}

enum zetl_err zetl_wh_kafka_offset(struct zetl_wh *wh, const char *key, uint64_t *next,
                                   struct zetl_errbuf *eb)
{
    uint64_t end = 0;

    return zetl_wh_offset(wh, key, next, &end, eb);
}

enum zetl_err zetl_wh_apply_dir(struct zetl_wh *wh, const char *dir, struct zetl_errbuf *eb)
{
    struct apply a = {.dir = dir};
    bool skipped;

    return apply(wh, &a, &skipped, eb);
}

enum zetl_err zetl_wh_apply_dir_table(struct zetl_wh *wh, const char *dir, const char *table,
                                      struct zetl_errbuf *eb)
{
    struct apply a = {.dir = dir, .by_table = true, .only = table};
    bool skipped;

    return apply(wh, &a, &skipped, eb);
}

enum zetl_err zetl_wh_replay_dir(struct zetl_wh *wh, const char *dir,
                                 const struct zetl_wh_replay *r, uint64_t *rows, bool *skipped,
                                 struct zetl_errbuf *eb)
{
    struct apply a = {.dir = dir, .rp = r};
    enum zetl_err err = apply(wh, &a, skipped, eb);

    *rows = a.rows;
    return err;
}

enum zetl_err zetl_wh_clear_table(struct zetl_wh *wh, const char *table, struct zetl_errbuf *eb)
{
    const char *schema = wh->cfg->warehouse.schema;
    const char *params[] = {schema, table ? table : ""};
    struct zetl_buf b;
    PGresult *res = NULL;
    enum zetl_err err;
    int n;

    if ((err = ensure_conn(wh, eb)) != ZETL_OK)
        return err;
    zetl_buf_init(&b, 0);
    /* DELETE, not TRUNCATE: Redshift commits a TRUNCATE on its own. */
    zetl_buf_puts(&b, "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                      "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r' AND "
                      "substring(c.relname, 1, 6) <> '_zetl_' AND (CAST($2 AS VARCHAR(128)) = '' "
                      "OR c.relname = CAST($2 AS VARCHAR(128))) "
                      "ORDER BY 1");
    if ((err = zetl_wh_exec(wh, "BEGIN", 0, NULL, NULL, eb)) != ZETL_OK)
        goto fail;
    if ((err = zetl_wh_exec(wh, b.data, 2, params, &res, eb)) != ZETL_OK)
        goto fail;
    n = PQntuples(res);
    for (int i = 0; i < n && err == ZETL_OK; i++) {
        zetl_buf_reset(&b);
        zetl_buf_puts(&b, "DELETE FROM ");
        zetl_sql_append_ident(&b, schema);
        zetl_buf_putc(&b, '.');
        zetl_sql_append_ident(&b, PQgetvalue(res, i, 0));
        err = zetl_wh_exec(wh, b.data, 0, NULL, NULL, eb);
    }
    if (err)
        goto fail;
    zetl_buf_reset(&b);
    zetl_buf_puts(&b, "DELETE FROM ");
    zetl_sql_append_ident(&b, schema);
    zetl_buf_puts(&b, "._zetl_table_state WHERE CAST($1 AS VARCHAR(128)) = '' OR table_name = "
                      "CAST($1 AS VARCHAR(128))");
    if ((err = zetl_wh_exec(wh, b.data, 1, params + 1, NULL, eb)) != ZETL_OK ||
        (err = zetl_wh_exec(wh, "COMMIT", 0, NULL, NULL, eb)) != ZETL_OK)
        goto fail;
    zetl_info("cleared %d warehouse table(s) of schema \"%s\" for a rebuild", n, schema);
    PQclear(res);
    zetl_buf_release(&b);
    zetl_wh_cache_clear(wh);
    return ZETL_OK;

fail:
    if (wh->conn != NULL)
        PQclear(PQexec(wh->conn, "ROLLBACK"));
    PQclear(res);
    zetl_buf_release(&b);
    zetl_err_prefix(eb, "could not clear the warehouse table%s%s%s of schema \"%s\"",
                    table ? " \"" : "s", table ? table : "", table ? "\"" : "", schema);
    return err;
}
