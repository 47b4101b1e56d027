/*
 * The warehouse tables of a batch: the catalog cache of each table's
 * columns, the union of the columns of a table's files, and creating the
 * warehouse table or evolving it to them (new columns, wider types), or the
 * reason it must stop.  The types and the DDL are the dialect's
 * (wh_dialect.h); what it decides is the same on every warehouse.
 */
#include "sinks/warehouse/wh_driver.h"

#include "common/buf.h"
#include "common/log.h"
#include "common/mem.h"

#include <stdlib.h>
#include <string.h>

/* A column of a warehouse table as the catalog describes it. */
/* ---- the catalog cache -------------------------------------------------------- */

static struct whtab *cache_find(struct zetl_wh *wh, const char *table)
{
    for (size_t i = 0; i < wh->ntabs; i++)
        if (strcmp(wh->tabs[i].name, table) == 0)
            return &wh->tabs[i];
    return NULL;
}

/* Reads (or re-reads) a table's columns from the catalog into the cache. */
static enum zetl_err cache_load(struct zetl_wh *wh, const char *table, struct whtab **out,
                                struct zetl_errbuf *eb)
{
    const char *params[] = {wh->cfg->warehouse.schema, table};
    struct whtab *t = cache_find(wh, table);
    PGresult *res = NULL;
    enum zetl_err err;
    int n, key;

    err = zetl_wh_run_stmt(wh, ZETL_WH_SQL_COLUMNS, 2, params, &res, eb);
    if (err)
        return err;
    if (t == NULL) {
        wh->tabs = zetl_realloc(wh->tabs, (wh->ntabs + 1) * sizeof(*wh->tabs));
        t = &wh->tabs[wh->ntabs++];
        memset(t, 0, sizeof(*t));
        t->name = zetl_strdup(table);
    } else {
        zetl_wh_tab_release_cols(t);
    }
    n = PQntuples(res);
    key = PQnfields(res) - 1;
    t->exists = n > 0;
    t->ncols = (size_t)n;
    t->cols = zetl_calloc(n ? (size_t)n : 1, sizeof(*t->cols));
    for (int i = 0; i < n; i++) {
        t->cols[i].name = zetl_strdup(PQgetvalue(res, i, 0));
        t->cols[i].type = wh->d->catalog_type(res, i);
        t->cols[i].key = strcmp(PQgetvalue(res, i, key), "t") == 0;
    }
    PQclear(res);
    *out = t;
    return ZETL_OK;
}

static const struct whcol *whtab_col(const struct whtab *t, const char *name)
{
    for (size_t k = 0; k < t->ncols; k++)
        if (strcmp(t->cols[k].name, name) == 0)
            return &t->cols[k];
    return NULL;
}

enum zetl_err zetl_wh_ddl_lock(struct zetl_wh *wh, const char *table, struct zetl_errbuf *eb)
{
    const char *params[] = {wh->cfg->warehouse.schema, table ? table : ""};

    if (wh->d->ddl_lock_sql == NULL)
        return ZETL_OK;
    return zetl_wh_exec(wh, wh->d->ddl_lock_sql, 2, params, NULL, eb);
}

/* ---- the tables of a batch ------------------------------------------------------ */

void zetl_wh_plan_tables(const struct manifest *m, struct tplan **plans, size_t *nplans)
{
    struct tplan *ps = zetl_calloc(m->nfiles ? m->nfiles : 1, sizeof(*ps));
    size_t n = 0;

    for (size_t i = 0; i < m->nfiles; i++) {
        struct tplan *p = NULL;

        for (size_t j = 0; j < n && p == NULL; j++)
            if (strcmp(ps[j].table, m->files[i].table) == 0)
                p = &ps[j];
        if (p == NULL) {
            p = &ps[n++];
            p->table = m->files[i].table;
            p->files = zetl_calloc(m->nfiles, sizeof(*p->files));
            p->stage_files = zetl_calloc(m->nfiles, sizeof(*p->stage_files));
        }
        p->stage_files[p->nfiles].name = m->files[i].file;
        p->stage_files[p->nfiles].sha256 = m->files[i].sha256;
        p->stage_files[p->nfiles].bytes = m->files[i].bytes;
        p->files[p->nfiles++] = &m->files[i];
    }
    *plans = ps;
    *nplans = n;
}

void zetl_wh_plan_release(struct tplan *p)
{
    free(p->files);
    free(p->stage_files);
    free(p->cols);
    free(p->shapes);
    free(p->maps);
    memset(p, 0, sizeof(*p));
}

static bool reserved_name(const char *s)
{
    return strncmp(s, "_zetl_", 6) == 0;
}

/*
 * Union of the files' columns (source order of first appearance, the wider
 * type where shapes differ) and each file's column map.  *reason (owned) is
 * set when the files themselves cannot share one table.
 */
static void plan_union(const struct zetl_wh_dialect *d, struct tplan *p, const char *tenant_column,
                       char **reason)
{
    size_t total = 0, used = 0;
    const struct mfile *f0 = p->files[0];

    for (size_t i = 0; i < p->nfiles; i++)
        total += p->files[i]->ncols;
    p->cols = zetl_calloc(total ? total : 1, sizeof(*p->cols));
    p->maps = zetl_calloc(total ? total : 1, sizeof(*p->maps));
    p->shapes = zetl_calloc(p->nfiles, sizeof(*p->shapes));
    for (size_t i = 0; i < p->nfiles; i++) {
        const struct mfile *f = p->files[i];

        p->shapes[i].ncols = f->ncols;
        p->shapes[i].map = p->maps + used;
        for (size_t k = 0; k < f->ncols; k++) {
            const struct mcol *c = &f->cols[k];
            size_t u;

            if (strcmp(c->name, tenant_column) == 0 || reserved_name(c->name)) {
                if (*reason == NULL) {
                    struct zetl_buf b;

                    zetl_buf_init(&b, 0);
                    zetl_buf_printf(&b, "column \"%s\" clashes with a column zetl adds", c->name);
                    *reason = b.data;
                }
                continue;
            }
            if (zetl_wh_system_column(d, c->name)) {
                if (*reason == NULL) {
                    struct zetl_buf b;

                    zetl_buf_init(&b, 0);
                    zetl_buf_printf(&b,
                                    "column \"%s\" has the name of a %s system column, which "
                                    "no table may use: rename it in the source, or leave it out "
                                    "with transforms.clean (drop: true)",
                                    c->name, d->name);
                    *reason = b.data;
                }
                continue;
            }
            for (u = 0; u < p->ncols; u++)
                if (strcmp(p->cols[u].name, c->name) == 0)
                    break;
            if (u == p->ncols) {
                p->cols[u].name = c->name;
                p->cols[u].type = c->type;
                p->cols[u].key = c->key;
                p->ncols++;
            } else {
                /* Manifest types are PostgreSQL's, whatever the warehouse. */
                enum zetl_wh_type_change ch = zetl_wh_pg_type_change(p->cols[u].type, c->type);

                if (ch == ZETL_WH_TYPE_WIDER)
                    p->cols[u].type = c->type;
                if ((ch == ZETL_WH_TYPE_INCOMPATIBLE || p->cols[u].key != c->key) &&
                    *reason == NULL) {
                    struct zetl_buf b;

                    zetl_buf_init(&b, 0);
                    zetl_buf_printf(&b, "column \"%s\" is %s%s in one file and %s%s in another",
                                    c->name, p->cols[u].type, p->cols[u].key ? " (key)" : "",
                                    c->type, c->key ? " (key)" : "");
                    *reason = b.data;
                }
            }
            ((size_t *)p->shapes[i].map)[k] = u;
        }
        used += f->ncols;
    }
    /* Every file must name the same key columns. */
    for (size_t i = 1; i < p->nfiles && *reason == NULL; i++) {
        size_t k0 = 0, k1 = 0;

        for (size_t k = 0; k < f0->ncols; k++)
            k0 += f0->cols[k].key;
        for (size_t k = 0; k < p->files[i]->ncols; k++)
            k1 += p->files[i]->cols[k].key;
        if (k0 != k1)
            *reason = zetl_strdup("the batch's files disagree on the primary key");
    }
}

/* ---- creating and evolving the warehouse table ------------------------------------ */

/* "(a, b)" of the key columns, for messages. */
static void key_names(struct zetl_buf *b, const struct whtab *wt, const struct tplan *p,
                      const char *tenant_column)
{
    bool first = true;

    zetl_buf_putc(b, '(');
    if (wt) {
        for (size_t k = 0; k < wt->ncols; k++)
            if (wt->cols[k].key && strcmp(wt->cols[k].name, tenant_column) != 0 &&
                strcmp(wt->cols[k].name, "_zetl_valid_from") != 0) {
                zetl_buf_printf(b, "%s\"%s\"", first ? "" : ", ", wt->cols[k].name);
                first = false;
            }
    } else {
        for (size_t u = 0; u < p->ncols; u++)
            if (p->cols[u].key) {
                zetl_buf_printf(b, "%s\"%s\"", first ? "" : ", ", p->cols[u].name);
                first = false;
            }
    }
    zetl_buf_putc(b, ')');
}

static const char *mode_name(enum zetl_wh_deletes d)
{
    return d == ZETL_DELETES_SOFT ? "soft" : d == ZETL_DELETES_HISTORY ? "history" : "hard";
}

/* The mode's and the tenant's columns must be there: the table may come from another setup. */
static enum zetl_err check_origin(const struct zetl_wh_table *t, const struct whtab *wt,
                                  struct zetl_errbuf *eb)
{
    if ((t->deletes == ZETL_DELETES_SOFT && whtab_col(wt, "_zetl_deleted") == NULL) ||
        (t->deletes == ZETL_DELETES_HISTORY && whtab_col(wt, "_zetl_valid_from") == NULL) ||
        whtab_col(wt, t->tenant_column) == NULL)
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "table \"%s\".\"%s\" was not created by zetl for tenant column "
                            "\"%s\" and warehouse.deletes: %s",
                            t->schema, t->table, t->tenant_column, mode_name(t->deletes));
    return ZETL_OK;
}

/* True when the batch's key columns are not the warehouse table's primary key. */
static bool key_changed(const struct whtab *wt, const struct tplan *p, const char *tenant)
{
    size_t wkeys = 0, ukeys = 0;
    bool keys_ok = true;

    for (size_t k = 0; k < wt->ncols; k++)
        if (wt->cols[k].key && strcmp(wt->cols[k].name, tenant) != 0 &&
            strcmp(wt->cols[k].name, "_zetl_valid_from") != 0) {
            const struct zetl_wh_col *uc = NULL;

            wkeys++;
            for (size_t u = 0; u < p->ncols; u++)
                if (strcmp(p->cols[u].name, wt->cols[k].name) == 0)
                    uc = &p->cols[u];
            keys_ok = keys_ok && uc != NULL && uc->key;
        }
    for (size_t u = 0; u < p->ncols; u++)
        ukeys += p->cols[u].key;
    return !keys_ok || wkeys != ukeys;
}

/* ---- column type changes, outside the apply's transaction ------------------------ */

static struct whalter *alter_find(const struct zetl_wh *wh, const char *table, const char *column)
{
    for (size_t i = 0; i < wh->nalters; i++)
        if (strcmp(wh->alters[i].table, table) == 0 && strcmp(wh->alters[i].column, column) == 0)
            return &wh->alters[i];
    return NULL;
}

/* Leaves the change of table.column to `type` for zetl_wh_run_alters. */
static void alter_add(struct zetl_wh *wh, const char *table, const struct zetl_wh_col *c)
{
    struct whalter *a = alter_find(wh, table, c->name);

    if (a == NULL) {
        wh->alters = zetl_realloc(wh->alters, (wh->nalters + 1) * sizeof(*wh->alters));
        a = &wh->alters[wh->nalters++];
        memset(a, 0, sizeof(*a));
        a->table = zetl_strdup(table);
        a->column = zetl_strdup(c->name);
    }
    free(a->type);
    a->type = zetl_strdup(c->type);
}

static void alter_release(struct whalter *a)
{
    free(a->table);
    free(a->column);
    free(a->type);
    free(a->failed);
}

bool zetl_wh_alters_pending(const struct zetl_wh *wh)
{
    for (size_t i = 0; i < wh->nalters; i++)
        if (wh->alters[i].failed == NULL)
            return true;
    return false;
}

void zetl_wh_alters_clear(struct zetl_wh *wh)
{
    for (size_t i = 0; i < wh->nalters; i++)
        alter_release(&wh->alters[i]);
    free(wh->alters);
    wh->alters = NULL;
    wh->nalters = 0;
}

/*
 * One pending change: where the catalog (read under the DDL lock, if the
 * dialect has one) still has a narrower type, the ALTER.  A refusal is
 * kept in a->failed; other errors are returned.
 */
static enum zetl_err run_alter(struct zetl_wh *wh, struct whalter *a, struct zetl_errbuf *eb)
{
    const bool txn = wh->d->ddl_lock_sql != NULL;
    struct zetl_wh_table t = {0};
    struct zetl_wh_col col = {a->column, a->type, false};
    const struct whcol *wc;
    struct whtab *wt;
    enum zetl_err err;

    t.schema = wh->cfg->warehouse.schema;
    t.table = a->table;
    t.tenant_column = wh->cfg->transforms.tenant_column;
    if (txn && ((err = zetl_wh_exec(wh, "BEGIN", 0, NULL, NULL, eb)) != ZETL_OK ||
                (err = zetl_wh_ddl_lock(wh, a->table, eb)) != ZETL_OK))
        goto out;
    if ((err = cache_load(wh, a->table, &wt, eb)) != ZETL_OK)
        goto out;
    wc = whtab_col(wt, a->column);
    if (wc != NULL && wh->d->type_change(wc->type, a->type) == ZETL_WH_TYPE_WIDER) {
        char *from = zetl_strdup(wc->type);

        err = zetl_wh_exec_owned(wh, zetl_wh_sql_alter_type(wh->d, &t, &col), NULL, eb);
        if (err == ZETL_ERR_FATAL) {
            char reason[256];

            zetl_wh_first_line(eb->msg, reason, sizeof(reason));
            a->failed = zetl_strdup(reason);
            zetl_warn("warehouse table \"%s\".\"%s\": could not widen column \"%s\" from %s: %s",
                      t.schema, t.table, a->column, from, reason);
            err = ZETL_OK;
        } else if (err == ZETL_OK) {
            zetl_info("widened column \"%s\" of warehouse table \"%s\".\"%s\" from %s, before the "
                      "apply",
                      a->column, t.schema, t.table, from);
        }
        free(from);
    }
out:
    if (txn && wh->conn != NULL) {
        if (err == ZETL_OK && a->failed == NULL)
            err = zetl_wh_exec(wh, "COMMIT", 0, NULL, NULL, eb);
        else
            PQclear(PQexec(wh->conn, "ROLLBACK"));
    }
    zetl_wh_cache_clear(wh);
    return err;
}

void zetl_wh_alters_drop_pending(struct zetl_wh *wh)
{
    size_t kept = 0;

    for (size_t i = 0; i < wh->nalters; i++)
        if (wh->alters[i].failed != NULL)
            wh->alters[kept++] = wh->alters[i];
        else
            alter_release(&wh->alters[i]);
    wh->nalters = kept;
}

enum zetl_err zetl_wh_run_alters(struct zetl_wh *wh, struct zetl_errbuf *eb)
{
    enum zetl_err err = ZETL_OK;

    for (size_t i = 0; i < wh->nalters && err == ZETL_OK; i++) {
        struct whalter *a = &wh->alters[i];

        if (a->failed == NULL && (err = run_alter(wh, a, eb)) != ZETL_OK)
            zetl_err_prefix(eb, "column \"%s\" of warehouse table \"%s\".\"%s\"", a->column,
                            wh->cfg->warehouse.schema, a->table);
    }
    /*
     * Done ones go (after an error, the rest too: the next apply finds them
     * again); refused ones stay, to stop their table.
     */
    zetl_wh_alters_drop_pending(wh);
    return err;
}

/* ---- the DDL of a batch ---------------------------------------------------------- */

/*
 * Appends to ddl what brings the table to the batch's columns (new
 * columns).  A wider type is never changed in the apply's transaction
 * (Redshift cannot): *alter is set and, when `locked`, the change is left
 * pending for zetl_wh_run_alters.  Returns the reason (owned) when a column
 * cannot take the batch's type, NULL otherwise: then nothing may change.
 */
static char *columns_ddl(struct zetl_wh *wh, const struct zetl_wh_table *t, const struct whtab *wt,
                         const struct tplan *p, bool locked, bool *alter, struct zetl_buf *ddl)
{
    for (size_t u = 0; u < p->ncols; u++) {
        const struct whcol *wc = whtab_col(wt, p->cols[u].name);
        enum zetl_wh_type_change ch;
        char *sql = NULL;

        if (wc == NULL) {
            sql = zetl_wh_sql_add_column(wh->d, t, &p->cols[u]);
        } else if ((ch = wh->d->type_change(wc->type, p->cols[u].type)) == ZETL_WH_TYPE_WIDER) {
            const struct whalter *failed = alter_find(wh, p->table, wc->name);
            struct zetl_buf b;

            if ((wc->key && wh->d->key_type_fixed) || (failed != NULL && failed->failed != NULL)) {
                zetl_buf_init(&b, 0);
                if (failed == NULL || failed->failed == NULL)
                    zetl_buf_printf(&b,
                                    "key column \"%s\" would have to widen from %s to %s, and "
                                    "%s never changes the type of a primary key column",
                                    wc->name, wc->type, p->cols[u].type, wh->d->name);
                else
                    zetl_buf_printf(&b, "column \"%s\" could not be widened from %s to %s: %s",
                                    wc->name, wc->type, p->cols[u].type, failed->failed);
                return b.data;
            }
            *alter = true;
            if (locked)
                alter_add(wh, p->table, &p->cols[u]);
        } else if (ch == ZETL_WH_TYPE_INCOMPATIBLE) {
            struct zetl_buf b;

            zetl_buf_init(&b, 0);
            zetl_buf_printf(&b, "column \"%s\" changed type from %s to %s", wc->name, wc->type,
                            p->cols[u].type);
            return b.data;
        }
        if (sql) {
            zetl_buf_printf(ddl, "%s%s", ddl->len ? ";\n" : "", sql);
            free(sql);
        }
    }
    return NULL;
}

/*
 * Stage in the warehouse's (possibly wider) types.  Where the batch's type
 * makes the same column type it stays: whether a Redshift SUPER column takes
 * json or an array's text, a VARBYTE bytea's hex, is read from it.
 */
static void stage_types(const struct zetl_wh *wh, const struct whtab *wt, struct tplan *p)
{
    for (size_t u = 0; u < p->ncols; u++) {
        const struct whcol *wc = whtab_col(wt, p->cols[u].name);

        if (wc && wh->d->type_change(wc->type, p->cols[u].type) != ZETL_WH_TYPE_SAME)
            p->cols[u].type = wc->type;
    }
}

/*
 * One pass of evolve: creates the warehouse table or brings it to the
 * batch's columns (new columns added, widened types altered).  Sets *reason
 * (owned) instead when the change is incompatible; nothing is changed then.
 * Without `locked`, sets *relock and changes nothing where the cache would
 * lead to DDL or a stop.  On success the plan's column types are the
 * warehouse's.
 */
static enum zetl_err evolve_pass(struct zetl_wh *wh, const struct zetl_wh_table *base,
                                 struct tplan *p, bool locked, bool *relock, char **reason,
                                 struct zetl_errbuf *eb)
{
    struct zetl_wh_table t = *base;
    struct whtab *wt = cache_find(wh, p->table);
    struct zetl_buf ddl;
    char *why = NULL;
    bool alter = false;
    enum zetl_err err = ZETL_OK;

    t.ncols = p->ncols;
    t.cols = p->cols;
    if (wt == NULL && (err = cache_load(wh, p->table, &wt, eb)) != ZETL_OK)
        return err;
    if (!wt->exists) {
        if (!locked) {
            *relock = true;
            return ZETL_OK;
        }
        if ((err = zetl_wh_exec_owned(wh, zetl_wh_sql_create_table(wh->d, &t), NULL, eb)) !=
            ZETL_OK)
            return err;
        zetl_info("created warehouse table \"%s\".\"%s\"", t.schema, t.table);
        return cache_load(wh, p->table, &wt, eb);
    }
    if ((err = check_origin(&t, wt, eb)) != ZETL_OK)
        return err;
    if (key_changed(wt, p, t.tenant_column)) {
        struct zetl_buf b;

        if (!locked) {
            *relock = true;
            return ZETL_OK;
        }
        zetl_buf_init(&b, 0);
        zetl_buf_puts(&b, "primary key changed from ");
        key_names(&b, wt, p, t.tenant_column);
        zetl_buf_puts(&b, " to ");
        key_names(&b, NULL, p, t.tenant_column);
        *reason = b.data;
        return ZETL_OK;
    }

    /* Check everything first: an incompatible column changes nothing. */
    zetl_buf_init(&ddl, 0);
    why = columns_ddl(wh, &t, wt, p, locked, &alter, &ddl);
    if ((why != NULL || ddl.len > 0 || alter) && !locked) {
        *relock = true;
        goto done;
    }
    if (why != NULL) {
        *reason = why;
        why = NULL;
        goto done;
    }
    if (alter) {
        /* The apply rolls back, runs the changes (zetl_wh_run_alters) and starts again. */
        err = zetl_err_set(eb, ZETL_ERR_RETRY,
                           "a column type change must run before the apply's transaction");
        goto done;
    }
    if (ddl.len > 0) {
        if ((err = zetl_wh_exec(wh, ddl.data, 0, NULL, NULL, eb)) != ZETL_OK)
            goto done;
        zetl_info("altered warehouse table \"%s\".\"%s\" to the batch's columns", t.schema,
                  t.table);
        if ((err = cache_load(wh, p->table, &wt, eb)) != ZETL_OK)
            goto done;
    }
    stage_types(wh, wt, p);
done:
    free(why);
    zetl_buf_release(&ddl);
    return err;
}

/*
 * Creates the warehouse table or brings it to the batch's columns.  The
 * cache may be older than another stream's DDL: whatever would change the
 * table, or stop it, is decided again on the catalog as it is once this
 * session holds the table's DDL lock, so a lost race is never an error.
 */
static enum zetl_err evolve(struct zetl_wh *wh, const struct zetl_wh_table *base, struct tplan *p,
                            char **reason, struct zetl_errbuf *eb)
{
    bool relock = false;
    struct whtab *wt;
    enum zetl_err err = evolve_pass(wh, base, p, false, &relock, reason, eb);

    if (err == ZETL_OK && relock && (err = zetl_wh_ddl_lock(wh, p->table, eb)) == ZETL_OK &&
        (err = cache_load(wh, p->table, &wt, eb)) == ZETL_OK)
        err = evolve_pass(wh, base, p, true, &relock, reason, eb);
    return err;
}

enum zetl_err zetl_wh_plan_prepare(struct zetl_wh *wh, const struct zetl_wh_table *t,
                                   struct tplan *p, char **reason, struct zetl_errbuf *eb)
{
    if (reserved_name(p->table)) {
        *reason = zetl_strdup("table names starting with \"_zetl_\" are reserved");
        return ZETL_OK;
    }
    plan_union(wh->d, p, t->tenant_column, reason);
    return *reason == NULL ? evolve(wh, t, p, reason, eb) : ZETL_OK;
}
