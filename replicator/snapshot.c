/*
 * Snapshots: the tables to copy and their progress on disk, and the workers
 * that copy them chunk by chunk between watermarks (see snapshot.h).  The
 * stream's side of a window is in snapwin.c.
 */
#include "replicator/snapshot_int.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/backoff.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/sqlquote.h"
#include "common/time.h"
#include "replicator/source.h"
#include "replicator/stop.h"

#define CHUNK_ROWS 50000 /* rows per chunk of a table with a primary key */
#define MAX_READY 4      /* chunks copied ahead of the stream, per stream */
#define RETRY_INITIAL_MS 1000
#define RETRY_MAX_MS 30000
#define PROGRESS_EVERY_MS 1000

/* ---- keys ---------------------------------------------------------------- */

void zetl_snap_key_free(struct snap_key *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->vals[i]);
    free(k->vals);
    k->vals = NULL;
    k->n = 0;
}

void zetl_snap_key_copy(struct snap_key *dst, const struct snap_key *src)
{
    zetl_snap_key_free(dst);
    dst->n = src->n;
    dst->vals = src->n ? zetl_calloc(src->n, sizeof(char *)) : NULL;
    for (size_t i = 0; i < src->n; i++)
        dst->vals[i] = zetl_strdup(src->vals[i]);
}

static void relation_free(struct zetl_relation *rel)
{
    if (rel == NULL)
        return;
    for (uint16_t i = 0; i < rel->ncols; i++)
        free(rel->cols[i].name);
    free(rel->cols);
    free(rel->nspname);
    free(rel->relname);
    free(rel);
}

void zetl_snap_chunk_free(struct snap_chunk *c)
{
    if (c == NULL)
        return;
    if (c->path) {
        unlink(c->path);
        free(c->path);
    }
    for (size_t i = 0; i < c->touched_cap; i++) {
        free(c->touched[i].key);
        free(c->touched[i].set);
    }
    free(c->touched);
    free(c->colmap);
    free(c->livekeys);
    zetl_transform_plan_free(c->plan);
    relation_free(c->rel);
    for (size_t i = 0; i < c->ntypes; i++)
        free(c->type_names[i]);
    free(c->type_names);
    free(c->type_oids);
    zetl_snap_key_free(&c->end);
    free(c);
}

/* ---- the state file -------------------------------------------------------- */

static char *state_path(const struct zetl_config *cfg, const char *stream)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "%s/snapshot/%s.json", cfg->buffer.dir, stream);
    return b.data;
}

static json_t *lsn_json(uint64_t lsn)
{
    char t[32];

    if (lsn == 0)
        return json_null();
    snprintf(t, sizeof(t), ZETL_LSN_FMT, ZETL_LSN_ARGS(lsn));
    return json_string(t);
}

static uint64_t lsn_of(json_t *j)
{
    uint64_t lsn = 0;

    if (json_is_string(j) && !zetl_lsn_parse(json_string_value(j), &lsn))
        lsn = 0;
    return lsn;
}

static enum zetl_err write_json(const char *path, json_t *root, struct zetl_errbuf *eb)
{
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    struct zetl_buf tmp;
    enum zetl_err err;

    zetl_buf_init(&tmp, 0);
    zetl_buf_printf(&tmp, "%s.tmp", path);
    err = zetl_fs_write_file(tmp.data, text, strlen(text), eb);
    if (err == ZETL_OK && rename(tmp.data, path) != 0)
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not rename %s: %s", tmp.data, strerror(errno));
    free(text);
    zetl_buf_release(&tmp);
    return err;
}

static json_t *onboard_json(const struct snap_onboard *list)
{
    json_t *a = json_array();

    for (const struct snap_onboard *o = list; o; o = o->next) {
        json_t *j = json_object(), *t = json_array();
        for (size_t i = 0; i < o->tables.n; i++)
            json_array_append_new(t, json_string(o->tables.items[i]));
        json_object_set_new(j, "schema", json_string(o->schema));
        json_object_set_new(j, "tables", t);
        json_array_append_new(a, j);
    }
    return a;
}

/* Adds (or widens) the record of `schema` joining; tables NULL or empty: all of it. */
static void onboard_add(struct snap_onboard **list, const char *schema,
                        const struct zetl_strlist *tables)
{
    struct snap_onboard *o;

    for (o = *list; o; o = o->next)
        if (strcmp(o->schema, schema) == 0)
            break;
    if (o == NULL) {
        o = zetl_calloc(1, sizeof(*o));
        o->schema = zetl_strdup(schema);
        for (size_t i = 0; tables && i < tables->n; i++)
            zetl_strlist_add(&o->tables, tables->items[i]);
        o->next = *list;
        *list = o;
        return;
    }
    if (o->tables.n == 0)
        return; /* all of it already */
    if (tables == NULL || tables->n == 0) {
        zetl_strlist_release(&o->tables);
        return;
    }
    for (size_t i = 0; i < tables->n; i++) {
        bool have = false;
        for (size_t k = 0; k < o->tables.n && !have; k++)
            have = strcmp(o->tables.items[k], tables->items[i]) == 0;
        if (!have)
            zetl_strlist_add(&o->tables, tables->items[i]);
    }
}

static void onboard_free(struct snap_onboard *o)
{
    free(o->schema);
    zetl_strlist_release(&o->tables);
    free(o);
}

enum zetl_err zetl_snap_save(struct zetl_snapwin *w, struct zetl_errbuf *eb)
{
    json_t *root = json_object(), *tables = json_array();
    enum zetl_err err;

    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "stream", json_string(w->name));
    json_object_set_new(root, "initial", json_string("done"));
    for (struct snap_task *t = w->tasks; t; t = t->next) {
        json_t *o = json_object(), *after = json_null();

        if (t->after.n) {
            after = json_array();
            for (size_t i = 0; i < t->after.n; i++)
                json_array_append_new(after, json_string(t->after.vals[i]));
        }
        json_object_set_new(o, "schema", json_string(t->schema));
        json_object_set_new(o, "table", json_string(t->table));
        json_object_set_new(o, "state",
                            json_string(t->state == TASK_DONE && !t->restart ? "done" : "pending"));
        json_object_set_new(o, "reason", json_string(t->reason));
        json_object_set_new(o, "after", after);
        json_object_set_new(o, "rows", json_integer((json_int_t)t->rows_durable));
        json_object_set_new(o, "started_lsn", lsn_json(t->started_lsn));
        json_object_set_new(o, "done_lsn", lsn_json(t->done_lsn));
        json_object_set_new(o, "last_started_lsn", lsn_json(t->last_done_started));
        json_array_append_new(tables, o);
    }
    json_object_set_new(root, "tables", tables);
    json_object_set_new(root, "onboarding", onboard_json(w->onboard));
    err = write_json(w->state_path, root, eb);
    json_decref(root);
    return err;
}

enum zetl_err zetl_snapshot_mark_initial(const struct zetl_config *cfg, const char *stream,
                                         struct zetl_errbuf *eb)
{
    char *path = state_path(cfg, stream);
    struct zetl_buf dir;
    struct stat sb;
    enum zetl_err err = ZETL_OK;

    zetl_buf_init(&dir, 0);
    zetl_buf_printf(&dir, "%s/snapshot", cfg->buffer.dir);
    if (stat(path, &sb) != 0 && (err = zetl_fs_mkdirs(dir.data, eb)) == ZETL_OK) {
        json_t *root = json_object();

        json_object_set_new(root, "version", json_integer(1));
        json_object_set_new(root, "stream", json_string(stream));
        json_object_set_new(root, "initial", json_string("pending"));
        json_object_set_new(root, "tables", json_array());
        err = write_json(path, root, eb);
        json_decref(root);
        if (err == ZETL_OK)
            err = zetl_fs_fsync_dir(dir.data, eb);
    }
    zetl_buf_release(&dir);
    free(path);
    return err;
}

static struct snap_task *task_add(struct zetl_snapwin *w, const char *schema, const char *table,
                                  const char *reason)
{
    struct snap_task *t = zetl_calloc(1, sizeof(*t)), **tail = &w->tasks;

    t->w = w;
    t->schema = zetl_strdup(schema);
    t->table = zetl_strdup(table);
    t->reason = zetl_strdup(reason);
    t->state = TASK_PENDING;
    t->replace = true;
    while (*tail)
        tail = &(*tail)->next;
    *tail = t;
    return t;
}

void zetl_snap_task_again(struct snap_task *t, const char *reason)
{
    t->state = TASK_PENDING;
    t->replace = true;
    t->restart = false;
    zetl_snap_key_free(&t->after);
    t->rows_durable = t->rows_copied = 0;
    t->started_lsn = 0;
    t->started_ms = 0;
    if (reason != NULL) {
        free(t->reason);
        t->reason = zetl_strdup(reason);
    }
}

static struct snap_task *task_find(struct zetl_snapwin *w, const char *schema, const char *table)
{
    for (struct snap_task *t = w->tasks; t; t = t->next)
        if (strcmp(t->schema, schema) == 0 && strcmp(t->table, table) == 0)
            return t;
    return NULL;
}

/* Loads a state file; *initial: the initial snapshot is still owed. */
static enum zetl_err load_state(struct zetl_snapwin *w, bool *initial, struct zetl_errbuf *eb)
{
    json_error_t jerr;
    json_t *root, *tables, *o;
    size_t i;
    struct stat sb;

    *initial = false;
    if (stat(w->state_path, &sb) != 0)
        return ZETL_OK;
    if ((root = json_load_file(w->state_path, 0, &jerr)) == NULL)
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "snapshot state %s is unreadable: %s (line %d); move it aside to "
                            "forget the snapshots in progress",
                            w->state_path, jerr.text, jerr.line);
    *initial = json_is_string(json_object_get(root, "initial")) &&
               strcmp(json_string_value(json_object_get(root, "initial")), "pending") == 0;
    json_array_foreach(json_object_get(root, "onboarding"), i, o)
    {
        const char *schema = json_string_value(json_object_get(o, "schema"));
        struct zetl_strlist names = {0};
        json_t *v;
        size_t k;

        if (schema == NULL)
            continue;
        json_array_foreach(json_object_get(o, "tables"), k, v) if (json_is_string(v))
            zetl_strlist_add(&names, json_string_value(v));
        onboard_add(&w->onboard, schema, &names);
        zetl_strlist_release(&names);
    }
    tables = json_object_get(root, "tables");
    json_array_foreach(tables, i, o)
    {
        const char *schema = json_string_value(json_object_get(o, "schema"));
        const char *table = json_string_value(json_object_get(o, "table"));
        const char *state = json_string_value(json_object_get(o, "state"));
        const char *reason = json_string_value(json_object_get(o, "reason"));
        json_t *after = json_object_get(o, "after"), *v;
        struct snap_task *t;
        size_t k;

        if (schema == NULL || table == NULL || state == NULL)
            continue;
        t = task_add(w, schema, table, reason ? reason : "resumed");
        t->state = strcmp(state, "done") == 0 ? TASK_DONE : TASK_PENDING;
        t->rows_durable = (uint64_t)json_integer_value(json_object_get(o, "rows"));
        t->started_lsn = lsn_of(json_object_get(o, "started_lsn"));
        t->done_lsn = lsn_of(json_object_get(o, "done_lsn"));
        t->last_done_started = lsn_of(json_object_get(o, "last_started_lsn"));
        if (json_is_array(after) && json_array_size(after) > 0) {
            t->after.n = json_array_size(after);
            t->after.vals = zetl_calloc(t->after.n, sizeof(char *));
            json_array_foreach(after, k, v) t->after.vals[k] =
                zetl_strdup(json_is_string(v) ? json_string_value(v) : "");
        }
        if (t->state == TASK_PENDING && t->after.n)
            zetl_logmsg("stream %s: snapshot of \"%s\".\"%s\" resumes after %" PRIu64
                        " copied row(s)",
                        w->name, schema, table, t->rows_durable);
        else if (t->state == TASK_PENDING)
            zetl_info("stream %s: snapshot of \"%s\".\"%s\" is still to do", w->name, schema,
                      table);
    }
    json_decref(root);
    return ZETL_OK;
}

uint64_t zetl_snapshot_floor(const void *cfg, const char *stream)
{
    char *path = state_path(cfg, stream);
    json_t *root = json_load_file(path, 0, NULL), *o;
    uint64_t floor = UINT64_MAX;
    size_t i, n = 0;

    free(path);
    if (root == NULL)
        return 0;
    json_array_foreach(json_object_get(root, "tables"), i, o)
    {
        uint64_t started = lsn_of(json_object_get(o, "last_started_lsn"));
        n++;
        if (started < floor)
            floor = started;
    }
    json_decref(root);
    return n ? floor : 0;
}

/* ---- the snapshotter ------------------------------------------------------- */

struct zetl_snapshotter *zetl_snapshotter_new(const struct zetl_config *cfg)
{
    struct zetl_snapshotter *s = zetl_calloc(1, sizeof(*s));

    s->cfg = cfg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    snprintf(s->run_id, sizeof(s->run_id), "%llx%x", (unsigned long long)zetl_now_ms(),
             (unsigned)getpid());
    s->tty = isatty(STDERR_FILENO) == 1;
    return s;
}

void zetl_snapshotter_free(struct zetl_snapshotter *s)
{
    if (s == NULL)
        return;
    zetl_snapshotter_stop(s);
    while (s->streams) {
        struct zetl_snapwin *w = s->streams;
        s->streams = w->next;
        while (w->tasks) {
            struct snap_task *t = w->tasks;
            w->tasks = t->next;
            zetl_snap_key_free(&t->after);
            free(t->schema);
            free(t->table);
            free(t->reason);
            free(t);
        }
        while (w->chunks) {
            struct snap_chunk *c = w->chunks;
            w->chunks = c->next;
            zetl_snap_chunk_free(c);
        }
        while (w->onboard) {
            struct snap_onboard *o = w->onboard;
            w->onboard = o->next;
            onboard_free(o);
        }
        zetl_buf_release(&w->key);
        zetl_buf_release(&w->oldkey);
        free(w->name);
        free(w->spool);
        free(w->state_path);
        free(w);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* Queues every table the stream's publication publishes (the initial snapshot). */
static enum zetl_err queue_published(struct zetl_snapwin *w, PGconn *conn, struct zetl_errbuf *eb)
{
    const char *params[1] = {w->name};
    PGresult *res;
    enum zetl_err err;
    int n;

    err = zetl_source_exec(conn,
                           "SELECT schemaname, tablename FROM pg_publication_tables WHERE "
                           "pubname = $1 ORDER BY 1, 2",
                           1, params, &res, eb);
    if (err) {
        zetl_err_prefix(eb, "could not list the tables of publication \"%s\"", w->name);
        return err;
    }
    n = PQntuples(res);
    for (int r = 0; r < n; r++) {
        const char *schema = PQgetvalue(res, r, 0), *table = PQgetvalue(res, r, 1);
        if (zetl_transform_table_selected(w->s->cfg, table) && !task_find(w, schema, table))
            task_add(w, schema, table, "initial")->replace = false; /* nothing copied yet */
    }
    PQclear(res);
    zetl_logmsg("stream %s: initial snapshot of %d table(s) queued", w->name, n);
    return ZETL_OK;
}

static struct zetl_snapwin *stream_find(struct zetl_snapshotter *s, const char *stream)
{
    for (struct zetl_snapwin *w = s->streams; w; w = w->next)
        if (strcmp(w->name, stream) == 0)
            return w;
    return NULL;
}

/*
 * The tables of `schema` the publication `stream` publishes now (of those
 * named in `only`, when not empty) into *out.
 */
static enum zetl_err published_of(PGconn *conn, const struct zetl_config *cfg, const char *stream,
                                  const char *schema, const struct zetl_strlist *only,
                                  struct zetl_strlist *out, struct zetl_errbuf *eb)
{
    const char *params[2] = {stream, schema};
    PGresult *res;
    enum zetl_err err;

    err = zetl_source_exec(conn,
                           "SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND "
                           "schemaname = $2 ORDER BY 1",
                           2, params, &res, eb);
    if (err) {
        zetl_err_prefix(eb, "could not list the tables publication \"%s\" publishes of \"%s\"",
                        stream, schema);
        return err;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        const char *t = PQgetvalue(res, r, 0);
        bool named = only->n == 0;

        for (size_t i = 0; i < only->n && !named; i++)
            named = strcmp(only->items[i], t) == 0;
        if (named && zetl_transform_table_selected(cfg, t))
            zetl_strlist_add(out, t);
    }
    PQclear(res);
    return ZETL_OK;
}

/* Queues the copies of what a joined schema brought; the caller holds the lock. */
static void queue_joined(struct zetl_snapwin *w, const char *schema,
                         const struct zetl_strlist *tables, bool all)
{
    const char *reason = all ? "new tenant" : "new table";

    for (size_t i = 0; i < tables->n; i++) {
        struct snap_task *t = task_find(w, schema, tables->items[i]);
        if (t == NULL)
            t = task_add(w, schema, tables->items[i], reason);
        else if (t->state == TASK_DONE)
            zetl_snap_task_again(t, reason);
        zetl_logmsg("stream %s: snapshot of \"%s\".\"%s\" queued (%s)", w->name, schema,
                    tables->items[i], reason);
    }
}

enum zetl_err zetl_snapshotter_onboard_begin(struct zetl_snapshotter *s, const char *stream,
                                             const char *schema, const struct zetl_strlist *tables,
                                             struct zetl_errbuf *eb)
{
    struct zetl_snapwin *w;
    enum zetl_err err;

    pthread_mutex_lock(&s->mu);
    if ((w = stream_find(s, stream)) == NULL) {
        pthread_mutex_unlock(&s->mu);
        return zetl_err_set(eb, ZETL_ERR_FATAL, "no stream %s for tenant \"%s\"", stream, schema);
    }
    onboard_add(&w->onboard, schema, tables);
    err = zetl_snap_save(w, eb);
    pthread_mutex_unlock(&s->mu);
    return err;
}

enum zetl_err zetl_snapshotter_onboard_end(struct zetl_snapshotter *s, void *conn,
                                           const char *stream, const char *schema,
                                           struct zetl_errbuf *eb)
{
    struct zetl_strlist only = {0}, tables = {0};
    struct snap_onboard **pp, *o = NULL;
    struct zetl_snapwin *w;
    enum zetl_err err;

    pthread_mutex_lock(&s->mu);
    if ((w = stream_find(s, stream)) != NULL)
        for (o = w->onboard; o && strcmp(o->schema, schema) != 0; o = o->next)
            ;
    for (size_t i = 0; o && i < o->tables.n; i++)
        zetl_strlist_add(&only, o->tables.items[i]);
    pthread_mutex_unlock(&s->mu);
    if (o == NULL)
        return ZETL_OK;
    /* The catalog query without the lock: the stream and the workers go on meanwhile. */
    err = published_of(conn, s->cfg, stream, schema, &only, &tables, eb);
    pthread_mutex_lock(&s->mu);
    if (err == ZETL_OK) {
        for (pp = &w->onboard; *pp; pp = &(*pp)->next)
            if (strcmp((*pp)->schema, schema) == 0) {
                o = *pp;
                *pp = o->next;
                onboard_free(o);
                break;
            }
        queue_joined(w, schema, &tables, only.n == 0);
        err = zetl_snap_save(w, eb);
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    zetl_strlist_release(&only);
    zetl_strlist_release(&tables);
    return err;
}

enum zetl_err zetl_snapshot_mark_onboarding(const struct zetl_config *cfg, const char *stream,
                                            const char *schema, const struct zetl_strlist *tables,
                                            struct zetl_errbuf *eb)
{
    char *path = state_path(cfg, stream);
    struct zetl_buf dir;
    json_t *root, *list, *entry, *t;
    enum zetl_err err;

    zetl_buf_init(&dir, 0);
    zetl_buf_printf(&dir, "%s/snapshot", cfg->buffer.dir);
    if ((err = zetl_fs_mkdirs(dir.data, eb)) != ZETL_OK)
        goto done;
    if ((root = json_load_file(path, 0, NULL)) == NULL) {
        root = json_object();
        json_object_set_new(root, "version", json_integer(1));
        json_object_set_new(root, "stream", json_string(stream));
        json_object_set_new(root, "initial", json_string("done"));
        json_object_set_new(root, "tables", json_array());
    }
    if (!json_is_array(list = json_object_get(root, "onboarding"))) {
        list = json_array();
        json_object_set_new(root, "onboarding", list);
    }
    entry = json_object();
    t = json_array();
    for (size_t i = 0; tables && i < tables->n; i++)
        json_array_append_new(t, json_string(tables->items[i]));
    json_object_set_new(entry, "schema", json_string(schema));
    json_object_set_new(entry, "tables", t);
    json_array_append_new(list, entry);
    err = write_json(path, root, eb);
    json_decref(root);
done:
    zetl_buf_release(&dir);
    free(path);
    return err;
}

bool zetl_snapshot_pending(const struct zetl_config *cfg)
{
    struct zetl_buf dir;
    DIR *d;
    struct dirent *de;
    bool pending = false;

    zetl_buf_init(&dir, 0);
    zetl_buf_printf(&dir, "%s/snapshot", cfg->buffer.dir);
    if ((d = opendir(dir.data)) != NULL) {
        while (!pending && (de = readdir(d)) != NULL) {
            size_t n = strlen(de->d_name), i;
            struct zetl_buf path;
            json_t *root, *o;

            if (n < 6 || de->d_name[0] == '.' || strcmp(de->d_name + n - 5, ".json") != 0)
                continue;
            zetl_buf_init(&path, 0);
            zetl_buf_printf(&path, "%s/%s", dir.data, de->d_name);
            if ((root = json_load_file(path.data, 0, NULL)) != NULL) {
                json_array_foreach(json_object_get(root, "tables"), i, o)
                {
                    const char *st = json_string_value(json_object_get(o, "state"));
                    pending |= st != NULL && strcmp(st, "done") != 0;
                }
                pending |= json_array_size(json_object_get(root, "onboarding")) > 0;
                json_decref(root);
            }
            zetl_buf_release(&path);
        }
        closedir(d);
    }
    zetl_buf_release(&dir);
    return pending;
}

enum zetl_err zetl_snapshotter_add_stream(struct zetl_snapshotter *s, void *conn,
                                          const char *stream, const char *spool_dir,
                                          struct zetl_snapwin **out, struct zetl_errbuf *eb)
{
    struct zetl_snapwin *w = zetl_calloc(1, sizeof(*w));
    struct zetl_buf dir;
    enum zetl_err err;
    bool initial;

    w->s = s;
    w->name = zetl_strdup(stream);
    zetl_buf_init(&w->key, 0);
    zetl_buf_init(&w->oldkey, 0);
    w->state_path = state_path(s->cfg, stream);
    zetl_buf_init(&dir, 0);
    zetl_buf_printf(&dir, "%s/snapshot", spool_dir);
    w->spool = zetl_strdup(dir.data);
    zetl_buf_reset(&dir);
    zetl_buf_printf(&dir, "%s/snapshot", s->cfg->buffer.dir);
    pthread_mutex_lock(&s->mu);
    w->next = s->streams;
    s->streams = w;
    *out = w;
    if ((err = zetl_fs_rmtree(w->spool, eb)) != ZETL_OK ||
        (err = zetl_fs_mkdirs(w->spool, eb)) != ZETL_OK ||
        (err = zetl_fs_mkdirs(dir.data, eb)) != ZETL_OK ||
        (err = load_state(w, &initial, eb)) != ZETL_OK)
        goto done;
    if (initial && (err = queue_published(w, conn, eb)) != ZETL_OK)
        goto done;
    /* Tenants and tables that joined the publication at this start, or before a crash. */
    while (w->onboard) {
        struct snap_onboard *o = w->onboard;
        struct zetl_strlist tables = {0};

        if ((err = published_of(conn, s->cfg, stream, o->schema, &o->tables, &tables, eb)) !=
            ZETL_OK)
            goto done;
        queue_joined(w, o->schema, &tables, o->tables.n == 0);
        zetl_strlist_release(&tables);
        w->onboard = o->next;
        onboard_free(o);
        initial = true; /* save */
    }
    if (initial || w->tasks)
        err = zetl_snap_save(w, eb);
done:
    pthread_mutex_unlock(&s->mu);
    zetl_buf_release(&dir);
    return err;
}

enum zetl_err zetl_snapshotter_request(struct zetl_snapshotter *s, const char *stream,
                                       const char *schema, const char *table, const char *reason,
                                       struct zetl_errbuf *eb)
{
    struct zetl_snapwin *w;
    struct snap_task *t;
    enum zetl_err err = ZETL_OK;

    pthread_mutex_lock(&s->mu);
    if ((w = stream_find(s, stream)) == NULL) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "no stream %s for the snapshot of \"%s\".\"%s\"",
                           stream, schema, table);
        goto done;
    }
    t = task_find(w, schema, table);
    if (t == NULL) {
        t = task_add(w, schema, table, reason);
    } else if (t->state == TASK_DONE) {
        zetl_snap_task_again(t, reason);
    } else if (t->state == TASK_PENDING) {
        goto done; /* queued already */
    } else {
        /* Being copied: the rows copied so far may predate what the request is for. */
        t->restart = true;
        zetl_logmsg("stream %s: snapshot of \"%s\".\"%s\" is being copied; it is copied "
                    "again when done (%s)",
                    stream, schema, table, reason);
        goto done;
    }
    zetl_logmsg("stream %s: snapshot of \"%s\".\"%s\" queued (%s)", stream, schema, table, reason);
    err = zetl_snap_save(w, eb);
    pthread_cond_broadcast(&s->cv);
done:
    pthread_mutex_unlock(&s->mu);
    return err;
}

enum zetl_err zetl_snapshotter_error(struct zetl_snapshotter *s, struct zetl_errbuf *eb)
{
    enum zetl_err err;

    pthread_mutex_lock(&s->mu);
    err = s->err;
    if (err)
        *eb = s->eb;
    pthread_mutex_unlock(&s->mu);
    return err;
}

/* ---- a worker: one table at a time, chunk by chunk ------------------------- */

/* What a worker knows of the table it copies. */
struct table_meta {
    struct zetl_relation *rel; /* owned */
    char **types;              /* owned: format_type of each column, for key literals */
    uint32_t *custom_oids;     /* owned */
    char **custom_names;       /* owned */
    size_t ncustom;
    double est_rows;
    bool has_key;
    char *select; /* owned: "SELECT cols FROM s.t" */
    char *order;  /* owned: " ORDER BY k1, k2" */
    char *keyrow; /* owned: "(k1, k2)" */
};

static void meta_release(struct table_meta *m)
{
    if (m->rel) {
        for (uint16_t i = 0; i < m->rel->ncols; i++)
            free(m->types[i]);
        relation_free(m->rel);
    }
    free(m->types);
    for (size_t i = 0; i < m->ncustom; i++)
        free(m->custom_names[i]);
    free(m->custom_names);
    free(m->custom_oids);
    free(m->select);
    free(m->order);
    free(m->keyrow);
    memset(m, 0, sizeof(*m));
}

static struct zetl_relation *relation_clone(const struct zetl_relation *r)
{
    struct zetl_relation *c = zetl_calloc(1, sizeof(*c));

    *c = *r;
    c->nspname = zetl_strdup(r->nspname);
    c->relname = zetl_strdup(r->relname);
    c->cols = zetl_calloc(r->ncols ? r->ncols : 1, sizeof(*c->cols));
    for (uint16_t i = 0; i < r->ncols; i++) {
        c->cols[i] = r->cols[i];
        c->cols[i].name = zetl_strdup(r->cols[i].name);
    }
    c->user = NULL;
    return c;
}

/*
 * Reads the table's columns (as pgoutput publishes them: no dropped or
 * generated ones) and primary key.  *gone: the table no longer exists.
 */
static enum zetl_err load_meta(PGconn *conn, const char *schema, const char *table,
                               struct table_meta *m, bool *gone, struct zetl_errbuf *eb)
{
    const char *params[2] = {schema, table};
    PGresult *res;
    enum zetl_err err;
    char *qs, *qt;
    struct zetl_buf sel, ord, key;
    int n;

    memset(m, 0, sizeof(*m));
    *gone = false;
    err = zetl_source_exec(
        conn,
        "SELECT c.oid, a.attname, a.atttypid, a.atttypmod, format_type(a.atttypid, a.atttypmod), "
        "coalesce(a.attnum = ANY(i.indkey), false), c.reltuples, "
        "CASE WHEN t.typnamespace <> 'pg_catalog'::regnamespace THEN tn.nspname || '.' || "
        "t.typname END "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.attgenerated = '' "
        "JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace "
        "LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "
        "WHERE n.nspname = $1 AND c.relname = $2 ORDER BY a.attnum",
        2, params, &res, eb);
    if (err)
        return err;
    n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        *gone = true;
        return ZETL_OK;
    }
    m->rel = zetl_calloc(1, sizeof(*m->rel));
    m->rel->relid = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
    m->rel->nspname = zetl_strdup(schema);
    m->rel->relname = zetl_strdup(table);
    m->rel->replident = 'd';
    m->rel->ncols = (uint16_t)n;
    m->rel->cols = zetl_calloc((size_t)n, sizeof(*m->rel->cols));
    m->types = zetl_calloc((size_t)n, sizeof(char *));
    m->est_rows = strtod(PQgetvalue(res, 0, 6), NULL);
    qs = zetl_sql_quote_ident(schema);
    qt = zetl_sql_quote_ident(table);
    zetl_buf_init(&sel, 0);
    zetl_buf_init(&ord, 0);
    zetl_buf_init(&key, 0);
    zetl_buf_puts(&sel, "SELECT ");
    for (int r = 0; r < n; r++) {
        struct zetl_relcol *c = &m->rel->cols[r];
        c->name = zetl_strdup(PQgetvalue(res, r, 1));
        c->typoid = (uint32_t)strtoul(PQgetvalue(res, r, 2), NULL, 10);
        c->typmod = (int32_t)strtol(PQgetvalue(res, r, 3), NULL, 10);
        c->key = strcmp(PQgetvalue(res, r, 5), "t") == 0;
        m->types[r] = zetl_strdup(PQgetvalue(res, r, 4));
        if (!PQgetisnull(res, r, 7)) {
            m->custom_oids = zetl_realloc(m->custom_oids, (m->ncustom + 1) * sizeof(uint32_t));
            m->custom_names = zetl_realloc(m->custom_names, (m->ncustom + 1) * sizeof(char *));
            m->custom_oids[m->ncustom] = c->typoid;
            m->custom_names[m->ncustom++] = zetl_strdup(PQgetvalue(res, r, 7));
        }
        zetl_buf_puts(&sel, r ? ", " : "");
        zetl_sql_append_ident(&sel, c->name);
        if (c->key) {
            zetl_buf_puts(&ord, m->has_key ? ", " : " ORDER BY ");
            zetl_buf_puts(&key, m->has_key ? ", " : "(");
            zetl_sql_append_ident(&ord, c->name);
            zetl_sql_append_ident(&key, c->name);
            m->has_key = true;
        }
    }
    if (m->has_key)
        zetl_buf_puts(&key, ")");
    zetl_buf_printf(&sel, " FROM %s.%s", qs, qt);
    m->select = sel.data;
    m->order = ord.data ? ord.data : zetl_strdup("");
    m->keyrow = key.data ? key.data : zetl_strdup("");
    free(qs);
    free(qt);
    PQclear(res);
    return ZETL_OK;
}

/* Emits a watermark; *lsn gets its LSN. */
static enum zetl_err watermark(PGconn *conn, struct zetl_snapwin *w, const char *id, char kind,
                               uint64_t *lsn, struct zetl_errbuf *eb)
{
    char content[256];
    const char *params[1] = {content};
    PGresult *res;
    enum zetl_err err;

    snprintf(content, sizeof(content), "{\"w\":\"%c\",\"id\":\"%s\",\"stream\":\"%s\"}", kind, id,
             w->name);
    err = zetl_source_exec(
        conn, "SELECT pg_logical_emit_message(true, '" ZETL_SNAPSHOT_PREFIX "', $1)::text", 1,
        params, &res, eb);
    if (err)
        return err;
    if (lsn && !zetl_lsn_parse(PQgetvalue(res, 0, 0), lsn))
        *lsn = 0;
    PQclear(res);
    return ZETL_OK;
}

/*
 * Waits until every transaction in progress right after the low watermark
 * has ended.  A transaction can write its commit record before the low
 * watermark and still be invisible to a snapshot taken after it (it leaves
 * the proc array a moment later, e.g. after a synchronous standby
 * answered): the copy would hold its old rows while the stream saw its
 * change before the window.  Once those have ended, the copy sees every
 * transaction committed before the low watermark.
 */
static enum zetl_err wait_in_progress(PGconn *conn, struct zetl_snapwin *w, struct zetl_errbuf *eb)
{
    int64_t started = zetl_now_ms();
    bool told = false;
    PGresult *res;
    enum zetl_err err;
    char xmax[32];

    err = zetl_source_exec(conn, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text", 0, NULL,
                           &res, eb);
    if (err)
        return err;
    snprintf(xmax, sizeof(xmax), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    for (;;) {
        const char *params[1] = {xmax};
        bool ended;

        /* The oldest transaction running now is younger than all of those. */
        err = zetl_source_exec(conn, "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::xid8",
                               1, params, &res, eb);
        if (err)
            return err;
        ended = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        if (ended || zetl_stop_requested())
            return ZETL_OK;
        if (!told && zetl_now_ms() - started > 5000) {
            told = true;
            zetl_logmsg("stream %s: snapshot waits for the transactions in progress at its low "
                        "watermark (transaction ids below %s) to end",
                        w->name, xmax);
        }
        zetl_stop_sleep(5);
    }
}

/* The chunk's query: the rows after `after`, in key order, at most `limit` (0: all). */
static char *chunk_sql(PGconn *conn, const struct table_meta *m, const struct snap_key *after,
                       int limit)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    zetl_buf_printf(&b, "COPY (%s", m->select);
    if (after->n) {
        size_t k = 0;
        zetl_buf_printf(&b, " WHERE %s > (", m->keyrow);
        for (uint16_t i = 0; i < m->rel->ncols && k < after->n; i++) {
            if (!m->rel->cols[i].key)
                continue;
            /* The server's quoting rules (standard_conforming_strings): key values are data. */
            char *lit = PQescapeLiteral(conn, after->vals[k], strlen(after->vals[k]));
            zetl_buf_printf(&b, "%s%s::%s", k ? ", " : "", lit ? lit : "NULL", m->types[i]);
            PQfreemem(lit);
            k++;
        }
        zetl_buf_puts(&b, ")");
    }
    zetl_buf_puts(&b, m->order);
    if (limit > 0)
        zetl_buf_printf(&b, " LIMIT %d", limit);
    zetl_buf_puts(&b, ") TO STDOUT");
    return b.data;
}

/*
 * Why a chunk's COPY failed.  A table or column that went away (DDL while
 * it is copied) is retried with its columns read again; a lost connection is
 * retried; anything else (permissions, snapshot too old) is the server's
 * reason, fatal.
 */
static enum zetl_err copy_failed(PGconn *conn, const PGresult *res, struct zetl_errbuf *eb)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (msg == NULL)
        msg = PQerrorMessage(conn);
    if (PQstatus(conn) != CONNECTION_OK)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "%s", msg);
    if (state && (strcmp(state, "42P01") == 0 || strcmp(state, "42703") == 0 ||
                  strcmp(state, "3F000") == 0 || strcmp(state, "42804") == 0))
        return zetl_err_set(eb, ZETL_ERR_RETRY,
                            "the table changed while it was copied (%s); its columns are read "
                            "again",
                            msg);
    return zetl_err_set(eb, ZETL_ERR_FATAL, "%s", msg);
}

/* Copies one chunk into path; *rows, *last_line (owned) of what was copied. */
static enum zetl_err copy_chunk(PGconn *conn, const char *sql, const char *path, uint64_t *rows,
                                struct zetl_buf *last, struct zetl_errbuf *eb)
{
    PGresult *res = PQexec(conn, sql);
    FILE *f;
    char *line = NULL;
    int n;
    enum zetl_err err = ZETL_OK;

    *rows = 0;
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        err = copy_failed(conn, res, eb);
        PQclear(res);
        return err;
    }
    PQclear(res);
    if ((f = fopen(path, "w")) == NULL)
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not create %s: %s", path, strerror(errno));
    while ((n = PQgetCopyData(conn, &line, 0)) > 0) {
        if (f && fwrite(line, 1, (size_t)n, f) != (size_t)n && err == ZETL_OK)
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not write %s: %s", path, strerror(errno));
        zetl_buf_reset(last);
        zetl_buf_append(last, line, (size_t)n);
        (*rows)++;
        PQfreemem(line);
        line = NULL;
    }
    if (f && fclose(f) != 0 && err == ZETL_OK)
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not write %s: %s", path, strerror(errno));
    res = PQgetResult(conn);
    if (err == ZETL_OK && (n != -1 || PQresultStatus(res) != PGRES_COMMAND_OK))
        err = copy_failed(conn, res, eb);
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    return err;
}

/* The key values of a COPY line: where the next chunk starts. */
static bool key_of_line(const struct table_meta *m, const struct zetl_buf *line,
                        struct snap_key *out)
{
    struct zetl_arena ar;
    struct zetl_tuple tup;
    size_t len = line->len;
    bool ok;

    zetl_snap_key_free(out);
    zetl_arena_init(&ar, 4096);
    if (len && line->data[len - 1] == '\n')
        len--;
    ok = zetl_snap_parse_line(line->data, len, &tup, m->rel->ncols, &ar);
    for (uint16_t i = 0; ok && i < m->rel->ncols; i++) {
        if (!m->rel->cols[i].key)
            continue;
        if (tup.cols[i].kind != ZETL_COL_TEXT) {
            ok = false;
            break;
        }
        out->vals = zetl_realloc(out->vals, (out->n + 1) * sizeof(char *));
        out->vals[out->n++] = zetl_strndup(tup.cols[i].val.ptr, tup.cols[i].val.len);
    }
    zetl_arena_release(&ar);
    return ok;
}

static void progress(struct zetl_snapshotter *s)
{
    int64_t now = zetl_now_ms();
    char line[512];
    size_t len = 0, queued = 0;

    if (!s->tty || now - s->last_progress_ms < PROGRESS_EVERY_MS)
        return;
    s->last_progress_ms = now;
    for (struct zetl_snapwin *w = s->streams; w; w = w->next)
        for (struct snap_task *t = w->tasks; t; t = t->next) {
            if (t->state == TASK_PENDING)
                queued++;
            if (t->state != TASK_RUNNING || len > 300)
                continue;
            double secs = (double)(now - t->started_ms) / 1000.0;
            double rate = secs > 0 ? (double)t->rows_copied / secs : 0;
            double left = t->est_rows > (double)t->rows_copied
                              ? (t->est_rows - (double)t->rows_copied) / (rate > 0 ? rate : 1)
                              : 0;
            len += (size_t)snprintf(line + len, sizeof(line) - len,
                                    "%s%s.%s %" PRIu64 "/%.0f rows %.0f rows/s eta %.0fs",
                                    len ? " | " : "", t->schema, t->table, t->rows_copied,
                                    t->est_rows > (double)t->rows_copied ? t->est_rows
                                                                         : (double)t->rows_copied,
                                    rate, left);
        }
    if (len == 0 && queued == 0)
        return;
    fprintf(stderr, "\r\033[Ksnapshot: %s%s%zu table(s) queued", line, len ? " | " : "", queued);
    fflush(stderr);
}

static void cancel_chunk(struct zetl_snapshotter *s, struct snap_chunk *c)
{
    pthread_mutex_lock(&s->mu);
    /* A high watermark the server did take (the answer was lost) was already handled. */
    if (c->state == CHUNK_REGISTERED || c->state == CHUNK_READY) {
        if (c->state == CHUNK_READY)
            c->task->w->ready--;
        c->state = CHUNK_CANCELLED;
        c->task->inflight--;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

/*
 * Copies the task's chunks from its dispatch position on.  Returns ZETL_OK
 * when all are copied or a stop was asked (the task is left running for
 * the caller to requeue), ZETL_ERR_RETRY on a lost connection.
 */
static enum zetl_err copy_task(struct zetl_snapshotter *s, PGconn *conn, struct snap_task *t,
                               struct snap_key *next, bool *finished, struct zetl_errbuf *eb)
{
    struct zetl_snapwin *w = t->w;
    const char *salt = getenv("ZETL_MASK_SALT");
    struct table_meta m;
    struct zetl_buf last, path;
    enum zetl_err err;
    bool gone;

    *finished = false;
    if ((err = load_meta(conn, t->schema, t->table, &m, &gone, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "snapshot of \"%s\".\"%s\"", t->schema, t->table);
        return err;
    }
    if (gone) {
        zetl_logmsg("stream %s: table \"%s\".\"%s\" no longer exists; its snapshot is dropped",
                    w->name, t->schema, t->table);
        *finished = true;
        return ZETL_OK;
    }
    if (!m.has_key)
        zetl_warn("stream %s: table \"%s\".\"%s\" has no primary key: it is copied whole, in one "
                  "chunk (not resumable, and rows changed during the copy are not told apart "
                  "from copied ones)",
                  w->name, t->schema, t->table);
    pthread_mutex_lock(&s->mu);
    t->est_rows = m.est_rows;
    pthread_mutex_unlock(&s->mu);
    zetl_buf_init(&last, 0);
    zetl_buf_init(&path, 0);
    for (;;) {
        struct snap_chunk *c = zetl_calloc(1, sizeof(*c)), **tail;
        int limit = m.has_key ? CHUNK_ROWS : 0;
        uint64_t lw_lsn = 0;
        char *sql;

        pthread_mutex_lock(&s->mu);
        while (w->ready >= MAX_READY && !s->stopping)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            free(c);
            break;
        }
        snprintf(c->id, sizeof(c->id), "%s-%" PRIu64, s->run_id, ++s->next_chunk);
        c->task = t;
        c->replace = t->replace;
        c->keyed = m.has_key;
        c->state = CHUNK_REGISTERED;
        c->relid = m.rel->relid;
        c->rel = relation_clone(m.rel);
        c->plan =
            zetl_transform_plan_new(s->cfg, c->rel, (const uint8_t *)salt, salt ? strlen(salt) : 0);
        c->ntypes = m.ncustom;
        if (m.ncustom) {
            c->type_oids = zetl_calloc(m.ncustom, sizeof(uint32_t));
            c->type_names = zetl_calloc(m.ncustom, sizeof(char *));
            for (size_t i = 0; i < m.ncustom; i++) {
                c->type_oids[i] = m.custom_oids[i];
                c->type_names[i] = zetl_strdup(m.custom_names[i]);
            }
        }
        zetl_buf_reset(&path);
        zetl_buf_printf(&path, "%s/%s.copy", w->spool, c->id);
        c->path = zetl_strdup(path.data);
        for (tail = &w->chunks; *tail; tail = &(*tail)->next)
            ;
        *tail = c;
        t->inflight++;
        pthread_mutex_unlock(&s->mu);

        if ((err = watermark(conn, w, c->id, 'l', &lw_lsn, eb)) != ZETL_OK) {
            cancel_chunk(s, c);
            break;
        }
        pthread_mutex_lock(&s->mu);
        if (t->started_lsn == 0)
            t->started_lsn = lw_lsn;
        pthread_mutex_unlock(&s->mu);
        if ((err = wait_in_progress(conn, w, eb)) != ZETL_OK) {
            cancel_chunk(s, c);
            break;
        }
        sql = chunk_sql(conn, &m, next, limit);
        err = copy_chunk(conn, sql, c->path, &c->rows, &last, eb);
        free(sql);
        if (err == ZETL_OK && c->rows > 0 && m.has_key && !key_of_line(&m, &last, &c->end))
            err = zetl_err_set(eb, ZETL_ERR_FATAL, "could not read the key of the last row copied");
        if (err) {
            cancel_chunk(s, c);
            zetl_err_prefix(eb, "snapshot of \"%s\".\"%s\"", t->schema, t->table);
            break;
        }
        pthread_mutex_lock(&s->mu);
        c->last = limit == 0 || c->rows < (uint64_t)limit;
        if (c->rows == 0)
            zetl_snap_key_copy(&c->end, next);
        c->state = CHUNK_READY;
        w->ready++;
        t->rows_copied += c->rows;
        progress(s);
        /* Once the high watermark is in, the stream may finish and free c at any time. */
        zetl_snap_key_copy(next, &c->end);
        *finished = c->last;
        pthread_mutex_unlock(&s->mu);
        if ((err = watermark(conn, w, c->id, 'h', NULL, eb)) != ZETL_OK) {
            *finished = false;
            cancel_chunk(s, c);
            break;
        }
        if (*finished)
            break;
    }
    zetl_buf_release(&last);
    zetl_buf_release(&path);
    meta_release(&m);
    return err;
}

static struct snap_task *pick_task(struct zetl_snapshotter *s)
{
    for (struct zetl_snapwin *w = s->streams; w; w = w->next)
        for (struct snap_task *t = w->tasks; t; t = t->next)
            if (t->state == TASK_PENDING && t->inflight == 0)
                return t;
    return NULL;
}

static void *worker_main(void *arg)
{
    struct zetl_snapshotter *s = arg;
    struct zetl_backoff bo;
    PGconn *conn = NULL;

    zetl_backoff_init(&bo, RETRY_INITIAL_MS, RETRY_MAX_MS);
    pthread_mutex_lock(&s->mu);
    while (!s->stopping && s->err == ZETL_OK) {
        struct snap_task *t = pick_task(s);
        struct snap_key next = {0, NULL};
        struct zetl_errbuf eb;
        enum zetl_err err = ZETL_OK;
        bool finished = false;

        if (t == NULL) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            continue;
        }
        t->state = TASK_RUNNING;
        t->rows_copied = t->rows_durable; /* chunks not durable are copied again */
        if (t->started_ms == 0) {
            t->started_ms = zetl_now_ms();
            zetl_info("stream %s: snapshot of \"%s\".\"%s\" starts (%s)", t->w->name, t->schema,
                      t->table, t->reason);
        }
        zetl_snap_key_copy(&next, &t->after);
        pthread_mutex_unlock(&s->mu);

        if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
            if (conn)
                PQfinish(conn);
            conn = NULL;
            err = zetl_source_connect(s->cfg->source.dsn, false, "zetl snapshot", &conn, &eb);
            /*
             * A watermark is only seen once its WAL is flushed: with
             * synchronous_commit off the stream would wait for the WAL
             * writer at every chunk.  Standbys are not waited for.
             */
            if (err == ZETL_OK)
                err = zetl_source_exec(conn, "SET synchronous_commit TO local", 0, NULL, NULL, &eb);
        }
        if (err == ZETL_OK)
            err = copy_task(s, conn, t, &next, &finished, &eb);
        zetl_snap_key_free(&next);

        pthread_mutex_lock(&s->mu);
        if (err == ZETL_OK && finished) {
            zetl_backoff_reset(&bo);
            /* Its last chunk may be durable already (then the stream finished the task). */
            if (t->state == TASK_RUNNING)
                t->state = TASK_DISPATCHED;
            if (t->state == TASK_DISPATCHED && t->inflight == 0) {
                /* Nothing to wait for: a dropped table. */
                t->state = TASK_DONE;
                if (zetl_snap_save(t->w, &eb) != ZETL_OK)
                    zetl_warn("%s", eb.msg);
            }
        } else if (t->state == TASK_RUNNING) {
            /* Stopped, or failed: it goes again from its durable position. */
            t->state = TASK_PENDING;
        }
        if (err == ZETL_ERR_RETRY || err == ZETL_ERR_IO) {
            int64_t delay = zetl_backoff_next(&bo);
            zetl_warn("stream %s: %s; retrying in %lld ms", t->w->name, eb.msg, (long long)delay);
            pthread_mutex_unlock(&s->mu);
            zetl_stop_sleep(delay);
            pthread_mutex_lock(&s->mu);
        } else if (err != ZETL_OK) {
            s->err = err;
            s->eb = eb;
            zetl_err_prefix(&s->eb, "stream %s", t->w->name);
            zetl_stop_request();
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (conn)
        PQfinish(conn);
    return NULL;
}

enum zetl_err zetl_snapshotter_start(struct zetl_snapshotter *s, struct zetl_errbuf *eb)
{
    int n = s->cfg->source.snapshot_workers > 0 ? s->cfg->source.snapshot_workers : 1;

    s->threads = zetl_calloc((size_t)n, sizeof(pthread_t));
    for (s->nthreads = 0; s->nthreads < n; s->nthreads++)
        if (pthread_create(&s->threads[s->nthreads], NULL, worker_main, s) != 0)
            return zetl_err_set(eb, ZETL_ERR_FATAL, "could not start snapshot worker threads");
    return ZETL_OK;
}

void zetl_snapshotter_stop(struct zetl_snapshotter *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nthreads; i++)
        pthread_join(s->threads[i], NULL);
    free(s->threads);
    s->threads = NULL;
    s->nthreads = 0;
    if (s->tty && s->last_progress_ms) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}
