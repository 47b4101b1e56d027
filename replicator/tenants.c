/* Live tenant discovery and `zetl snapshot` requests (see tenants.h). */
#include "replicator/tenants.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/sqlquote.h"
#include "common/time.h"
#include "transforms/transform.h"

#define REQUEST_POLL_MS 500 /* how often a running daemon looks for `zetl snapshot` requests */

struct zetl_tenants {
    const struct zetl_config *cfg;
    const struct zetl_source_plan *plan;
    struct zetl_snapshotter *snap;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    struct zetl_strlist known; /* tenant schemas seen at the last refresh */
    bool have_known;
};

static const struct zetl_source_group *group_of(const struct zetl_source_plan *plan,
                                                const struct zetl_config *cfg, const char *schema)
{
    int idx = zetl_source_group_of(schema, cfg->source.slot_groups);

    for (size_t i = 0; i < plan->ngroups; i++)
        if (plan->groups[i].index == idx)
            return &plan->groups[i];
    return NULL;
}

static bool in_list(const struct zetl_strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i], s) == 0)
            return true;
    return false;
}

/* The selected tables of a schema, as a table-list publication names them. */
static enum zetl_err schema_tables(PGconn *conn, const struct zetl_config *cfg, const char *schema,
                                   struct zetl_strlist *out, struct zetl_errbuf *eb)
{
    const char *params[1] = {schema};
    PGresult *res;
    enum zetl_err err = zetl_source_exec(
        conn,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
        "n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
        1, params, &res, eb);

    if (err)
        return err;
    for (int r = 0; r < PQntuples(res); r++)
        if (zetl_transform_table_selected(cfg, PQgetvalue(res, r, 0)))
            zetl_strlist_add(out, PQgetvalue(res, r, 0));
    PQclear(res);
    return ZETL_OK;
}

/*
 * Publishes a schema (whole_schema: ADD TABLES IN SCHEMA) or some of its
 * tables, between the two halves of the onboarding record: the record is
 * on disk before the publication changes (a crash in between still copies),
 * the copies start after it changed (a copy taken before would miss what is
 * committed until then).
 */
static enum zetl_err onboard(struct zetl_tenants *t, PGconn *conn,
                             const struct zetl_source_group *g, const char *schema,
                             const struct zetl_strlist *tables, bool whole_schema, bool new_tenant,
                             struct zetl_errbuf *eb)
{
    bool copy = t->cfg->source.snapshot;
    char *qpub = zetl_sql_quote_ident(g->name), *qs = zetl_sql_quote_ident(schema);
    struct zetl_buf sql, names;
    enum zetl_err err = ZETL_OK;

    zetl_buf_init(&sql, 0);
    zetl_buf_init(&names, 0);
    for (size_t i = 0; tables && i < tables->n; i++)
        zetl_buf_printf(&names, "%s\"%s\"", i ? ", " : "", tables->items[i]);
    if (copy)
        err = zetl_snapshotter_onboard_begin(t->snap, g->name, schema, whole_schema ? NULL : tables,
                                             eb);
    if (err == ZETL_OK && whole_schema) {
        zetl_buf_printf(&sql, "ALTER PUBLICATION %s ADD TABLES IN SCHEMA %s", qpub, qs);
        err = zetl_source_exec(conn, sql.data, 0, NULL, NULL, eb);
    }
    for (size_t i = 0; err == ZETL_OK && !whole_schema && tables && i < tables->n; i++) {
        char *qt = zetl_sql_quote_ident(tables->items[i]);
        zetl_buf_reset(&sql);
        zetl_buf_printf(&sql, "ALTER PUBLICATION %s ADD TABLE %s.%s", qpub, qs, qt);
        free(qt);
        err = zetl_source_exec(conn, sql.data, 0, NULL, NULL, eb);
    }
    if (err) {
        zetl_err_prefix(eb, "could not add %s \"%s\"%s%s to publication \"%s\"",
                        new_tenant ? "new tenant" : "new tables of", schema, names.len ? " " : "",
                        names.len ? names.data : "", g->name);
    } else {
        zetl_logmsg("%s \"%s\"%s%s: added to publication \"%s\"",
                    new_tenant ? "new tenant" : "new tables of", schema, names.len ? " " : "",
                    names.len ? names.data : "", g->name);
        if (copy)
            err = zetl_snapshotter_onboard_end(t->snap, conn, g->name, schema, eb);
    }
    zetl_buf_release(&sql);
    zetl_buf_release(&names);
    free(qpub);
    free(qs);
    return err;
}

/* Published (schema, publication) pairs, or tables, of zetl's publications. */
static enum zetl_err published(PGconn *conn, const struct zetl_config *cfg, bool schema_mode,
                               PGresult **res, struct zetl_errbuf *eb)
{
    const char *params[1] = {cfg->source.slot};

    if (schema_mode)
        return zetl_source_exec(conn,
                                "SELECT n.nspname, p.pubname, NULL FROM pg_publication_namespace "
                                "pn JOIN pg_publication p ON p.oid = pn.pnpubid JOIN "
                                "pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname LIKE $1 || "
                                "'\\_%'",
                                1, params, res, eb);
    /* Direct members, as ADD TABLE names them (pg_publication_tables lists partitions). */
    return zetl_source_exec(conn,
                            "SELECT n.nspname, p.pubname, c.relname FROM pg_publication_rel pr "
                            "JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class c ON "
                            "c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE p.pubname LIKE $1 || '\\_%'",
                            1, params, res, eb);
}

static bool is_published(PGresult *pub, const char *pubname, const char *schema, const char *table)
{
    for (int r = 0; r < PQntuples(pub); r++)
        if (strcmp(PQgetvalue(pub, r, 0), schema) == 0 &&
            strcmp(PQgetvalue(pub, r, 1), pubname) == 0 &&
            (table == NULL || strcmp(PQgetvalue(pub, r, 2), table) == 0))
            return true;
    return false;
}

static enum zetl_err refresh(struct zetl_tenants *t, PGconn *conn, struct zetl_errbuf *eb)
{
    const struct zetl_config *cfg = t->cfg;
    bool schema_mode = zetl_source_schema_publication(cfg, t->plan);
    struct zetl_strlist now = {0};
    PGresult *res = NULL, *pub = NULL;
    enum zetl_err err;

    err = zetl_source_exec(conn,
                           "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname "
                           "<> 'information_schema' ORDER BY nspname",
                           0, NULL, &res, eb);
    if (err == ZETL_OK)
        err = published(conn, cfg, schema_mode, &pub, eb);
    for (int r = 0; err == ZETL_OK && r < PQntuples(res); r++) {
        const char *s = PQgetvalue(res, r, 0);
        const struct zetl_source_group *g;
        struct zetl_strlist tables = {0}, missing = {0};

        if (!zetl_transform_schema_selected(cfg, s))
            continue;
        zetl_strlist_add(&now, s);
        if ((g = group_of(t->plan, cfg, s)) == NULL)
            continue;
        if (schema_mode) {
            if (!is_published(pub, g->name, s, NULL))
                err = onboard(t, conn, g, s, NULL, true, true, eb);
        } else if ((err = schema_tables(conn, cfg, s, &tables, eb)) == ZETL_OK) {
            for (size_t i = 0; i < tables.n; i++)
                if (!is_published(pub, g->name, s, tables.items[i]))
                    zetl_strlist_add(&missing, tables.items[i]);
            if (missing.n)
                err = onboard(t, conn, g, s, &missing, false, !in_list(&t->known, s), eb);
        }
        zetl_strlist_release(&tables);
        zetl_strlist_release(&missing);
    }
    for (size_t i = 0; err == ZETL_OK && i < t->known.n; i++)
        if (!in_list(&now, t->known.items[i]))
            zetl_logmsg("tenant schema \"%s\" no longer exists; it is no longer followed (its "
                        "warehouse rows stay: zetl tenant purge removes them)",
                        t->known.items[i]);
    if (err == ZETL_OK) {
        zetl_strlist_release(&t->known);
        t->known = now;
        t->have_known = true;
    } else {
        zetl_strlist_release(&now);
    }
    PQclear(res);
    PQclear(pub);
    return err;
}

enum zetl_err zetl_tenants_mark_new(PGconn *conn, const struct zetl_config *cfg,
                                    const struct zetl_source_plan *plan, struct zetl_errbuf *eb)
{
    bool schema_mode = zetl_source_schema_publication(cfg, plan);
    PGresult *pub = NULL;
    enum zetl_err err;

    if (!cfg->source.snapshot)
        return ZETL_OK;
    if ((err = published(conn, cfg, schema_mode, &pub, eb)) != ZETL_OK)
        return err;
    for (size_t gi = 0; err == ZETL_OK && gi < plan->ngroups; gi++) {
        const struct zetl_source_group *g = &plan->groups[gi];
        const char *params[1] = {g->name};
        PGresult *res;
        bool streamed;

        /* A slot created now copies everything (the initial snapshot). */
        err = zetl_source_exec(conn,
                               "SELECT 1 FROM pg_replication_slots s JOIN pg_publication p ON "
                               "p.pubname = s.slot_name WHERE s.slot_name = $1",
                               1, params, &res, eb);
        if (err)
            break;
        streamed = PQntuples(res) > 0;
        PQclear(res);
        for (size_t i = 0; streamed && err == ZETL_OK && i < g->nschemas; i++) {
            const char *s = g->schemas[i];
            struct zetl_strlist tables = {0}, missing = {0};

            if (schema_mode) {
                if (!is_published(pub, g->name, s, NULL)) {
                    zetl_logmsg("tenant \"%s\" appeared while zetl was stopped: its rows are "
                                "copied",
                                s);
                    err = zetl_snapshot_mark_onboarding(cfg, g->name, s, NULL, eb);
                }
            } else if ((err = schema_tables(conn, cfg, s, &tables, eb)) == ZETL_OK) {
                for (size_t k = 0; k < tables.n; k++)
                    if (!is_published(pub, g->name, s, tables.items[k]))
                        zetl_strlist_add(&missing, tables.items[k]);
                if (missing.n) {
                    zetl_logmsg("%zu table(s) of tenant \"%s\" appeared while zetl was "
                                "stopped: their rows are copied",
                                missing.n, s);
                    err = zetl_snapshot_mark_onboarding(cfg, g->name, s, &missing, eb);
                }
            }
            zetl_strlist_release(&tables);
            zetl_strlist_release(&missing);
        }
    }
    PQclear(pub);
    return err;
}

/* ---- requests of `zetl snapshot` ------------------------------------------------ */

enum zetl_err zetl_tenants_request(PGconn *conn, const struct zetl_config *cfg,
                                   const struct zetl_source_plan *plan,
                                   struct zetl_snapshotter *snap,
                                   const struct zetl_strlist *tenants,
                                   const struct zetl_strlist *tables, size_t *queued,
                                   struct zetl_errbuf *eb)
{
    bool *tenant_hit = zetl_calloc(tenants->n + 1, 1), *table_hit = zetl_calloc(tables->n + 1, 1);
    enum zetl_err err = ZETL_OK;

    *queued = 0;
    for (size_t gi = 0; gi < plan->ngroups && err == ZETL_OK; gi++) {
        const char *params[1] = {plan->groups[gi].name};
        PGresult *res;

        err = zetl_source_exec(conn,
                               "SELECT schemaname, tablename FROM pg_publication_tables WHERE "
                               "pubname = $1 ORDER BY 1, 2",
                               1, params, &res, eb);
        if (err)
            break;
        for (int r = 0; err == ZETL_OK && r < PQntuples(res); r++) {
            const char *s = PQgetvalue(res, r, 0), *tb = PQgetvalue(res, r, 1);
            bool ok_s = tenants->n == 0, ok_t = tables->n == 0;

            for (size_t i = 0; i < tenants->n; i++)
                if (strcmp(tenants->items[i], s) == 0)
                    ok_s = tenant_hit[i] = true;
            for (size_t i = 0; i < tables->n; i++)
                if (strcmp(tables->items[i], tb) == 0 && ok_s)
                    ok_t = table_hit[i] = true;
            if (!ok_s || !ok_t || !zetl_transform_table_selected(cfg, tb))
                continue;
            err = zetl_snapshotter_request(snap, plan->groups[gi].name, s, tb, "requested", eb);
            (*queued)++;
        }
        PQclear(res);
    }
    for (size_t i = 0; err == ZETL_OK && i < tenants->n; i++)
        if (!tenant_hit[i])
            err = zetl_err_set(eb, ZETL_ERR_USAGE,
                               "tenant \"%s\" is not a followed tenant schema (source.tenants."
                               "schemas) with published tables",
                               tenants->items[i]);
    for (size_t i = 0; err == ZETL_OK && i < tables->n; i++)
        if (!table_hit[i])
            err = zetl_err_set(eb, ZETL_ERR_USAGE, "table \"%s\" is not published for %s",
                               tables->items[i], tenants->n ? "the tenants named" : "any tenant");
    free(tenant_hit);
    free(table_hit);
    return err;
}

static char *requests_dir(const struct zetl_config *cfg)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "%s/snapshot/requests", cfg->buffer.dir);
    return b.data;
}

static json_t *strlist_json(const struct zetl_strlist *l)
{
    json_t *a = json_array();

    for (size_t i = 0; i < l->n; i++)
        json_array_append_new(a, json_string(l->items[i]));
    return a;
}

enum zetl_err zetl_tenants_leave_request(const struct zetl_config *cfg,
                                         const struct zetl_strlist *tenants,
                                         const struct zetl_strlist *tables, char **path,
                                         struct zetl_errbuf *eb)
{
    char *dir = requests_dir(cfg), *text;
    struct zetl_buf p, tmp;
    json_t *root = json_object();
    enum zetl_err err;

    json_object_set_new(root, "tenants", strlist_json(tenants));
    json_object_set_new(root, "tables", strlist_json(tables));
    text = json_dumps(root, 0);
    json_decref(root);
    zetl_buf_init(&p, 0);
    zetl_buf_init(&tmp, 0);
    zetl_buf_printf(&p, "%s/%lld-%d.json", dir, (long long)zetl_now_ms(), (int)getpid());
    zetl_buf_printf(&tmp, "%s/.%lld-%d.tmp", dir, (long long)zetl_now_ms(), (int)getpid());
    if ((err = zetl_fs_mkdirs(dir, eb)) == ZETL_OK &&
        (err = zetl_fs_write_file(tmp.data, text, strlen(text), eb)) == ZETL_OK &&
        rename(tmp.data, p.data) != 0)
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not write %s: %s", p.data, strerror(errno));
    free(text);
    free(dir);
    zetl_buf_release(&tmp);
    if (err)
        zetl_buf_release(&p);
    else
        *path = p.data;
    return err;
}

static void strlist_from_json(json_t *a, struct zetl_strlist *out)
{
    size_t i;
    json_t *v;

    json_array_foreach(a, i, v) if (json_is_string(v)) zetl_strlist_add(out, json_string_value(v));
}

/* Takes each request file: queues its tables, leaves NAME.error when it cannot. */
static void take_requests(struct zetl_tenants *t, PGconn *conn)
{
    char *dir = requests_dir(t->cfg);
    DIR *d = opendir(dir);
    struct dirent *de;

    while (d && (de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        struct zetl_strlist tenants = {0}, tables = {0};
        struct zetl_errbuf eb;
        struct zetl_buf path;
        json_t *root;
        size_t queued = 0;
        enum zetl_err err;

        if (n < 6 || de->d_name[0] == '.' || strcmp(de->d_name + n - 5, ".json") != 0)
            continue;
        zetl_buf_init(&path, 0);
        zetl_buf_printf(&path, "%s/%s", dir, de->d_name);
        if ((root = json_load_file(path.data, 0, NULL)) != NULL) {
            strlist_from_json(json_object_get(root, "tenants"), &tenants);
            strlist_from_json(json_object_get(root, "tables"), &tables);
            json_decref(root);
            err = zetl_tenants_request(conn, t->cfg, t->plan, t->snap, &tenants, &tables, &queued,
                                       &eb);
        } else {
            err = zetl_err_set(&eb, ZETL_ERR_USAGE, "unreadable request %s", path.data);
        }
        if (err == ZETL_ERR_RETRY) {
            zetl_buf_release(&path);
            break; /* the connection broke: the request stays for the next turn */
        }
        if (err) {
            struct zetl_errbuf ignore;
            struct zetl_buf e;
            zetl_buf_init(&e, 0);
            zetl_buf_printf(&e, "%.*s.error", (int)(path.len - 5), path.data);
            zetl_fs_write_file(e.data, eb.msg, strlen(eb.msg), &ignore);
            zetl_buf_release(&e);
            zetl_warn("snapshot request %s: %s", de->d_name, eb.msg);
        } else {
            zetl_logmsg("snapshot request %s: %zu table(s) queued", de->d_name, queued);
        }
        unlink(path.data);
        zetl_buf_release(&path);
        zetl_strlist_release(&tenants);
        zetl_strlist_release(&tables);
    }
    if (d)
        closedir(d);
    free(dir);
}

/* ---- the thread ----------------------------------------------------------------- */

static void *tenants_main(void *arg)
{
    struct zetl_tenants *t = arg;
    PGconn *conn = NULL;
    int64_t next_refresh = 0;

    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        struct zetl_errbuf eb;
        struct timespec ts;
        int64_t now = zetl_now_ms();

        pthread_mutex_unlock(&t->mu);
        if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
            if (conn)
                PQfinish(conn);
            conn = NULL;
            if (zetl_source_connect(t->cfg->source.dsn, false, "zetl tenants", &conn, &eb) !=
                ZETL_OK) {
                zetl_warn("tenant discovery: %s", eb.msg);
                if (conn)
                    PQfinish(conn);
                conn = NULL;
            }
        }
        if (conn && t->cfg->source.refresh_ms > 0 && now >= next_refresh) {
            next_refresh = now + (int64_t)t->cfg->source.refresh_ms;
            if (refresh(t, conn, &eb) != ZETL_OK)
                zetl_warn("tenant discovery: %s", eb.msg);
        }
        if (conn)
            take_requests(t, conn);
        pthread_mutex_lock(&t->mu);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)REQUEST_POLL_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        if (!t->stop)
            pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    if (conn)
        PQfinish(conn);
    return NULL;
}

enum zetl_err zetl_tenants_start(const struct zetl_config *cfg, const struct zetl_source_plan *plan,
                                 struct zetl_snapshotter *snap, struct zetl_tenants **out,
                                 struct zetl_errbuf *eb)
{
    struct zetl_tenants *t = zetl_calloc(1, sizeof(*t));

    t->cfg = cfg;
    t->plan = plan;
    t->snap = snap;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    /* The tenants of the plan are known: only later ones are new. */
    for (size_t i = 0; i < plan->ngroups; i++)
        for (size_t j = 0; j < plan->groups[i].nschemas; j++)
            zetl_strlist_add(&t->known, plan->groups[i].schemas[j]);
    t->have_known = true;
    if (pthread_create(&t->tid, NULL, tenants_main, t) != 0) {
        zetl_strlist_release(&t->known);
        free(t);
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not start the tenant discovery thread");
    }
    *out = t;
    return ZETL_OK;
}

void zetl_tenants_stop(struct zetl_tenants *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->tid, NULL);
    zetl_strlist_release(&t->known);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}
