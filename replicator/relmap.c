/* Relation map of a stream: capture decision, transform plans, primary keys of FULL relations. */
#include "replicator/relmap.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"
#include "common/mem.h"
#include "replicator/source.h"

/* Per-relation state, open addressing by relid. */
struct rel_entry {
    uint32_t relid; /* 0 = empty slot */
    bool planned;   /* selected and plan are those of `version` */
    uint32_t version;
    bool selected;
    bool warned_nokey;
    struct zetl_table_plan *plan; /* owned */
    bool has_pk;                  /* a primary key look-up answered */
    size_t npk;
    char **pk; /* owned: primary key column names */
};

struct zetl_relmap {
    const struct zetl_config *cfg; /* borrowed */
    const char *name;              /* borrowed */
    struct zetl_relcache *rc;      /* borrowed */
    const uint8_t *salt;           /* borrowed */
    size_t salt_len;
    struct rel_entry *rels; /* owned */
    size_t cap, n;
    PGconn *catalog;       /* owned: normal connection for catalog look-ups */
    uint32_t pending;      /* relid whose look-up is in flight, 0 when none */
    bool pending_live;     /* apply the answer to the relcache entry */
    int64_t pending_since; /* zetl_now_ms() when it was sent */
    PGresult *pending_res; /* owned: the answer, while the rest of the results drain */
};

static const char pk_sql[] = "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid "
                             "= i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::oid "
                             "AND i.indisprimary";

struct zetl_relmap *zetl_relmap_new(const struct zetl_config *cfg, const char *name,
                                    struct zetl_relcache *relcache, const uint8_t *salt,
                                    size_t salt_len)
{
    struct zetl_relmap *rm = zetl_calloc(1, sizeof(*rm));

    rm->cfg = cfg;
    rm->name = name;
    rm->rc = relcache;
    rm->salt = salt;
    rm->salt_len = salt_len;
    return rm;
}

static void entry_release(struct rel_entry *e)
{
    zetl_transform_plan_free(e->plan);
    for (size_t i = 0; i < e->npk; i++)
        free(e->pk[i]);
    free(e->pk);
}

void zetl_relmap_clear(struct zetl_relmap *rm)
{
    for (size_t i = 0; i < rm->cap; i++)
        entry_release(&rm->rels[i]);
    free(rm->rels);
    rm->rels = NULL;
    rm->cap = rm->n = 0;
    PQclear(rm->pending_res);
    rm->pending_res = NULL;
    /*
     * A fresh catalog connection with every replication connection: this one
     * may be mid-query, or dead since the source restarted (an idle
     * connection does not know it yet).
     */
    if (rm->catalog != NULL)
        PQfinish(rm->catalog);
    rm->catalog = NULL;
    rm->pending = 0;
}

void zetl_relmap_free(struct zetl_relmap *rm)
{
    if (rm == NULL)
        return;
    zetl_relmap_clear(rm);
    if (rm->catalog)
        PQfinish(rm->catalog);
    free(rm);
}

static struct rel_entry *rel_slot(struct zetl_relmap *rm, uint32_t relid)
{
    if (rm->n * 2 >= rm->cap) {
        size_t old_cap = rm->cap;
        struct rel_entry *old = rm->rels;
        rm->cap = old_cap ? old_cap * 2 : 64;
        rm->rels = zetl_calloc(rm->cap, sizeof(*rm->rels));
        rm->n = 0;
        for (size_t i = 0; i < old_cap; i++) {
            if (old[i].relid == 0)
                continue;
            *rel_slot(rm, old[i].relid) = old[i]; /* counts it */
        }
        free(old);
    }
    size_t mask = rm->cap - 1;
    size_t i = (relid * 2654435761u) & mask;
    while (rm->rels[i].relid != 0 && rm->rels[i].relid != relid)
        i = (i + 1) & mask;
    if (rm->rels[i].relid == 0) {
        rm->rels[i].relid = relid;
        rm->n++;
    }
    return &rm->rels[i];
}

struct zetl_table_plan *zetl_relmap_plan(struct zetl_relmap *rm, const struct zetl_relation *rel)
{
    struct rel_entry *e = rel_slot(rm, rel->relid);

    if (e->planned && e->version == rel->version)
        return e->plan;
    zetl_transform_plan_free(e->plan);
    e->plan = NULL;
    e->planned = true;
    e->version = rel->version;
    e->selected = zetl_transform_schema_selected(rm->cfg, rel->nspname) &&
                  zetl_transform_table_selected(rm->cfg, rel->relname);
    if (!e->selected)
        return NULL;
    e->plan = zetl_transform_plan_new(rm->cfg, rel, rm->salt, rm->salt_len);
    if (!e->plan->has_key && !e->warned_nokey) {
        e->warned_nokey = true;
        zetl_warn("stream %s: table \"%s\".\"%s\" has no replica identity key: its rows are "
                  "archived, but updates and deletes carry no old key unless REPLICA IDENTITY "
                  "FULL is set",
                  rm->name, rel->nspname, rel->relname);
    }
    return e->plan;
}

enum zetl_err zetl_relmap_connect(struct zetl_relmap *rm, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    if (rm->catalog != NULL && PQstatus(rm->catalog) == CONNECTION_OK)
        return ZETL_OK;
    if (rm->catalog)
        PQfinish(rm->catalog);
    rm->catalog = NULL;
    err = zetl_source_connect(rm->cfg->source.dsn, false, "zetl catalog", &rm->catalog, eb);
    if (err)
        return err;
    /* Sending must not block the reader either. */
    if (PQsetnonblocking(rm->catalog, 1) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_RETRY,
                           "could not set the catalog connection non-blocking: %s",
                           PQerrorMessage(rm->catalog));
        PQfinish(rm->catalog);
        rm->catalog = NULL;
        return err;
    }
    return ZETL_OK;
}

static enum zetl_err send_lookup(struct zetl_relmap *rm, uint32_t relid, bool live,
                                 struct zetl_errbuf *eb)
{
    char oid[16];
    const char *params[1] = {oid};
    enum zetl_err err;

    if ((err = zetl_relmap_connect(rm, eb)) != ZETL_OK)
        return err;
    snprintf(oid, sizeof(oid), "%u", relid);
    if (PQsendQueryParams(rm->catalog, pk_sql, 1, NULL, params, NULL, NULL, 0) != 1 ||
        PQflush(rm->catalog) < 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "could not look up the primary key of relation "
                            "%u: %s",
                            relid, PQerrorMessage(rm->catalog));
    rm->pending = relid;
    rm->pending_live = live;
    rm->pending_since = zetl_now_ms();
    return ZETL_OK;
}

/* Sets the relation's key flags to its primary key (none when it has none). */
static void set_keys(const struct rel_entry *e, struct zetl_relation *rel)
{
    for (uint16_t c = 0; c < rel->ncols; c++) {
        rel->cols[c].key = false;
        for (size_t k = 0; k < e->npk; k++)
            if (strcmp(e->pk[k], rel->cols[c].name) == 0)
                rel->cols[c].key = true;
    }
}

/* Stores the answer of the look-up in flight and applies it to a live relation. */
static enum zetl_err finish_lookup(struct zetl_relmap *rm, PGresult *res, struct zetl_errbuf *eb)
{
    uint32_t relid = rm->pending;
    struct rel_entry *e;
    struct zetl_relation *rel;

    rm->pending = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rel = zetl_relcache_get(rm->rc, relid);
        return zetl_err_set(eb, ZETL_ERR_RETRY, "could not read the primary key of %s%s%s: %s",
                            rel ? rel->nspname : "relation", rel ? "." : "",
                            rel ? rel->relname : "", PQresultErrorMessage(res));
    }
    e = rel_slot(rm, relid);
    for (size_t i = 0; i < e->npk; i++)
        free(e->pk[i]);
    e->npk = (size_t)PQntuples(res);
    e->pk = zetl_realloc(e->pk, (e->npk ? e->npk : 1) * sizeof(*e->pk));
    for (size_t i = 0; i < e->npk; i++)
        e->pk[i] = zetl_strdup(PQgetvalue(res, (int)i, 0));
    e->has_pk = true;
    if (rm->pending_live && (rel = zetl_relcache_get(rm->rc, relid)) != NULL &&
        rel->replident == 'f')
        set_keys(e, rel);
    return ZETL_OK;
}

enum zetl_err zetl_relmap_relation(struct zetl_relmap *rm, const struct zetl_pgo_msg *m,
                                   bool spilled, struct zetl_errbuf *eb)
{
    if (m->u.relation.replident != 'f')
        return ZETL_OK;
    /* The reader takes no message while a look-up is in flight: one at a time. */
    return send_lookup(rm, m->u.relation.relid, !spilled, eb);
}

bool zetl_relmap_pending(const struct zetl_relmap *rm)
{
    return rm->pending != 0;
}

int zetl_relmap_fd(const struct zetl_relmap *rm)
{
    return rm->pending != 0 ? PQsocket(rm->catalog) : -1;
}

enum zetl_err zetl_relmap_poll(struct zetl_relmap *rm, struct zetl_errbuf *eb)
{
    PGresult *res;
    enum zetl_err err;

    if (rm->pending == 0)
        return ZETL_OK;
    /*
     * The reader waits for the answer: a catalog that does not answer (a
     * lock, a dead peer) must not hold the stream for ever.  The rest of a
     * query libpq could not send at once goes now.
     */
    if (zetl_now_ms() - rm->pending_since > (int64_t)rm->cfg->source.receive_timeout_ms)
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "the primary-key look-up of relation %u got no answer within %llu ms "
                            "(source.receive_timeout_ms)",
                            rm->pending, (unsigned long long)rm->cfg->source.receive_timeout_ms);
    if (PQflush(rm->catalog) < 0 || PQconsumeInput(rm->catalog) == 0)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "catalog connection lost: %s",
                            PQerrorMessage(rm->catalog));
    /* Keep the first result; the query is done when libpq hands out NULL. */
    while (!PQisBusy(rm->catalog)) {
        if ((res = PQgetResult(rm->catalog)) == NULL) {
            res = rm->pending_res;
            rm->pending_res = NULL;
            err = finish_lookup(rm, res, eb);
            PQclear(res);
            return err;
        }
        if (rm->pending_res == NULL)
            rm->pending_res = res;
        else
            PQclear(res);
    }
    return ZETL_OK;
}

enum zetl_err zetl_relmap_apply_keys(struct zetl_relmap *rm, struct zetl_relation *rel,
                                     struct zetl_errbuf *eb)
{
    struct rel_entry *e;
    enum zetl_err err;

    if (rel->replident != 'f')
        return ZETL_OK;
    e = rel_slot(rm, rel->relid);
    if (!e->has_pk) {
        zetl_debug("stream %s: primary key of \"%s\".\"%s\" not looked up yet, waiting for it",
                   rm->name, rel->nspname, rel->relname);
        if ((err = send_lookup(rm, rel->relid, true, eb)) != ZETL_OK)
            return err;
        /* Waiting: the catalog answers in a round trip, and this path is the exception. */
        while (rm->pending != 0) {
            struct pollfd pfd = {PQsocket(rm->catalog), POLLIN, 0};
            if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
                return zetl_err_set(eb, ZETL_ERR_RETRY, "poll failed: %s", strerror(errno));
            if ((err = zetl_relmap_poll(rm, eb)) != ZETL_OK)
                return err;
        }
        return err;
    }
    set_keys(e, rel);
    return ZETL_OK;
}
