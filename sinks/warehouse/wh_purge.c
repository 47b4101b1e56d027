/*
 * zetl tenant purge: every row of one tenant out of every zetl table of the
 * warehouse schema, in one transaction (the dialect's apply transaction, so
 * on Redshift it waits for appliers like they wait for each other).  The
 * tables are found in the catalog: those of warehouse.schema with the tenant
 * column, zetl's bookkeeping (_zetl_*) excepted.
 */
#include "sinks/warehouse/wh_driver.h"

#include "common/buf.h"
#include "common/mem.h"

#include <stdlib.h>
#include <string.h>

void zetl_wh_purged_free(struct zetl_wh_purged *p, size_t n)
{
    for (size_t i = 0; p != NULL && i < n; i++)
        free(p[i].table);
    free(p);
}

/* $1 schema, $2 tenant column -> the tables to purge; both dialects read this catalog. */
static const char purge_tables_sql[] =
    "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = "
    "c.relnamespace JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid WHERE n.nspname = $1 "
    "AND c.relkind = 'r' AND substring(c.relname, 1, 6) <> '_zetl_' AND a.attnum > 0 AND NOT "
    "a.attisdropped AND a.attname = CAST($2 AS VARCHAR(128)) ORDER BY 1";

enum zetl_err zetl_wh_purge_tenant(struct zetl_wh *wh, const char *tenant,
                                   struct zetl_wh_purged **out, size_t *n, struct zetl_errbuf *eb)
{
    const struct zetl_config *cfg = wh->cfg;
    const char *params[] = {cfg->warehouse.schema, cfg->transforms.tenant_column};
    struct zetl_wh_purged *p = NULL;
    PGresult *res = NULL;
    int ntables = 0;
    enum zetl_err err;

    *out = NULL;
    *n = 0;
    if ((err = zetl_wh_ensure_conn(wh, eb)) != ZETL_OK)
        goto fail;
    if ((err = zetl_wh_exec_owned(wh, wh->d->begin_sql(cfg->warehouse.schema), NULL, eb)) !=
            ZETL_OK ||
        (err = zetl_wh_exec(wh, purge_tables_sql, 2, params, &res, eb)) != ZETL_OK)
        goto rollback;
    ntables = PQntuples(res);
    p = zetl_calloc(ntables ? (size_t)ntables : 1, sizeof(*p));
    for (int i = 0; i < ntables; i++) {
        struct zetl_wh_table t;
        PGresult *del = NULL;
        char *sql;

        memset(&t, 0, sizeof(t));
        t.schema = cfg->warehouse.schema;
        t.table = PQgetvalue(res, i, 0);
        t.tenant_column = cfg->transforms.tenant_column;
        p[i].table = zetl_strdup(t.table);
        sql = wh->d->purge_sql(&t);
        err = zetl_wh_exec(wh, sql, 1, &tenant, &del, eb);
        free(sql);
        if (err != ZETL_OK) {
            zetl_err_prefix(eb, "table \"%s\".\"%s\"", t.schema, t.table);
            goto rollback;
        }
        p[i].rows = strtoull(PQcmdTuples(del), NULL, 10);
        PQclear(del);
    }
    if ((err = zetl_wh_exec(wh, "COMMIT", 0, NULL, NULL, eb)) != ZETL_OK)
        goto fail;
    PQclear(res);
    *out = p;
    *n = (size_t)ntables;
    return ZETL_OK;

rollback:
    if (wh->conn != NULL)
        PQclear(PQexec(wh->conn, "ROLLBACK"));
fail:
    PQclear(res);
    zetl_wh_purged_free(p, (size_t)ntables);
    zetl_err_prefix(eb, "could not purge tenant \"%s\" from warehouse schema \"%s\"", tenant,
                    cfg->warehouse.schema);
    return err;
}
