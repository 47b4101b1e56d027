/*
 * The warehouse driver's session: the libpq connection, running statements
 * and classifying their failures, and the lifetime of the catalog cache
 * (which a lost connection clears).  Below wh.c and wh_schema.c.
 */
#include "sinks/warehouse/wh_driver.h"

#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void zetl_wh_first_line(const char *msg, char *out, size_t n)
{
    size_t len = strcspn(msg ? msg : "", "\n");

    if (len >= n)
        len = n - 1;
    memcpy(out, msg ? msg : "", len);
    out[len] = '\0';
}

static void notice_cb(void *arg, const char *msg)
{
    char line[512];

    (void)arg;
    zetl_wh_first_line(msg, line, sizeof(line));
    zetl_debug("warehouse: %s", line);
}

void zetl_wh_drop_conn(struct zetl_wh *wh)
{
    if (wh->conn)
        PQfinish(wh->conn);
    wh->conn = NULL;
    zetl_wh_cache_clear(wh);
}

/*
 * Retriable: the connection is gone, or the server says try again
 * (connection exceptions 08, serialization/deadlock 40, resources 53,
 * shutdown 57P, lock not available 55P03, or a message the dialect names).
 * Anything else is the job's fault.
 */
static enum zetl_err classify(struct zetl_wh *wh, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg;

    if (wh->conn == NULL || PQstatus(wh->conn) != CONNECTION_OK || state == NULL)
        return ZETL_ERR_RETRY;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "40", 2) == 0 ||
        strncmp(state, "53", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strcmp(state, "55P03") == 0)
        return ZETL_ERR_RETRY;
    msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    for (const char *const *m = wh->d->retry_messages; m && *m && msg; m++)
        if (strstr(msg, *m))
            return ZETL_ERR_RETRY;
    return ZETL_ERR_FATAL;
}

enum zetl_err zetl_wh_fail_res(struct zetl_wh *wh, const PGresult *res, struct zetl_errbuf *eb)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    enum zetl_err err = classify(wh, res);
    char line[768];

    if (msg == NULL)
        msg = wh->conn ? PQerrorMessage(wh->conn) : "no connection to the warehouse";
    zetl_wh_first_line(msg, line, sizeof(line));
    if (line[0] == '\0')
        snprintf(line, sizeof(line), "lost the connection to the warehouse");
    zetl_err_set(eb, err, "%s", line);
    if (err == ZETL_ERR_RETRY && wh->conn && PQstatus(wh->conn) != CONNECTION_OK)
        zetl_wh_drop_conn(wh);
    return err;
}

enum zetl_err zetl_wh_exec(struct zetl_wh *wh, const char *sql, int n, const char *const *params,
                           PGresult **out, struct zetl_errbuf *eb)
{
    PGresult *res;
    ExecStatusType st;
    enum zetl_err err;

    if (wh->conn == NULL)
        return zetl_err_set(eb, ZETL_ERR_RETRY, "lost the connection to the warehouse");
    res =
        n > 0 ? PQexecParams(wh->conn, sql, n, NULL, params, NULL, NULL, 0) : PQexec(wh->conn, sql);
    st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        err = zetl_wh_fail_res(wh, res, eb);
        PQclear(res);
        return err;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return ZETL_OK;
}

enum zetl_err zetl_wh_exec_owned(struct zetl_wh *wh, char *sql, PGresult **out,
                                 struct zetl_errbuf *eb)
{
    enum zetl_err err = zetl_wh_exec(wh, sql, 0, NULL, out, eb);

    free(sql);
    return err;
}

enum zetl_err zetl_wh_run_stmt(struct zetl_wh *wh, enum zetl_wh_offsets_stmt which, int n,
                               const char *const *params, PGresult **out, struct zetl_errbuf *eb)
{
    enum zetl_err err = ZETL_OK;
    char *sql;
    int np;

    for (size_t part = 0; err == ZETL_OK; part++) {
        sql = wh->d->offsets_sql(wh->cfg->warehouse.schema, which, part, &np);
        if (sql == NULL)
            break;
        err = zetl_wh_exec(wh, sql, np < n ? np : n, params, part == 0 ? out : NULL, eb);
        free(sql);
    }
    return err;
}

enum zetl_err zetl_wh_conn_open(struct zetl_wh *wh, struct zetl_errbuf *eb)
{
    /* expand_dbname = 1: the DSN is a conninfo string or URI. */
    const char *keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {wh->cfg->warehouse.dsn, "zetl", NULL};
    char line[512];
    enum zetl_err err;

    if (wh->cfg->warehouse.dsn == NULL)
        return zetl_err_set(eb, ZETL_ERR_USAGE, "warehouse.dsn is not set");
    wh->conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(wh->conn) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(wh->conn);
        /* libpq quotes a DSN it cannot parse, password and all. */
        char *safe = zetl_config_redact_conn_error(wh->cfg->warehouse.dsn, msg);

        zetl_wh_first_line(safe, line, sizeof(line));
        free(safe);
        err = ZETL_ERR_RETRY;
        if (strstr(msg, "authentication failed") || strstr(msg, "no pg_hba.conf entry") ||
            strstr(msg, "password") || strstr(msg, "does not exist") ||
            strstr(msg, "permission denied") || strstr(msg, "invalid"))
            err = ZETL_ERR_FATAL;
        PQfinish(wh->conn);
        wh->conn = NULL;
        return zetl_err_set(eb, err, "could not connect to the warehouse: %s", line);
    }
    PQsetNoticeProcessor(wh->conn, notice_cb, NULL);
    if (wh->d->session_sql != NULL &&
        (err = zetl_wh_exec(wh, wh->d->session_sql, 0, NULL, NULL, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "warehouse session settings");
        zetl_wh_drop_conn(wh);
        return err;
    }
    return ZETL_OK;
}

/* ---- the catalog cache's lifetime ---------------------------------------------- */

void zetl_wh_tab_release_cols(struct whtab *t)
{
    for (size_t k = 0; k < t->ncols; k++) {
        free(t->cols[k].name);
        free(t->cols[k].type);
    }
    free(t->cols);
    t->cols = NULL;
    t->ncols = 0;
}

void zetl_wh_cache_clear(struct zetl_wh *wh)
{
    for (size_t i = 0; i < wh->ntabs; i++) {
        zetl_wh_tab_release_cols(&wh->tabs[i]);
        free(wh->tabs[i].name);
    }
    free(wh->tabs);
    wh->tabs = NULL;
    wh->ntabs = 0;
}
