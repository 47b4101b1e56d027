/*
 * The warehouse sink's driver: the libpq connection, the bookkeeping tables
 * (_zetl_offsets, _zetl_table_state), table creation and schema evolution,
 * and the apply of one archived batch in one warehouse transaction: manifest,
 * per table a staging table filled by COPY straight from the zstd files
 * (sha256 checked while reading) or, for Redshift, by COPY from the batch's
 * S3 prefix, then the dialect's merge (wh_pg.c, wh_redshift.c).
 */
#include "sinks/warehouse/wh.h"

#include "common/buf.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "common/sha256.h"
#include "sinks/batch.h"
#include "sinks/s3.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define WH_READ_CHUNK ((size_t)128 << 10)
#define WH_MANIFEST_MAX ((off_t)64 << 20)
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
/* Largest zstd window accepted (the archive writes 1 MiB). */
#define WH_ZSTD_WINDOW_LOG_MAX 23

/* A column of a warehouse table as the catalog describes it. */
struct whcol {
    char *name; /* owned */
    char *type; /* owned: manifest form ("varchar(20)", "_int4", "oid:N" when unknown) */
    bool key;   /* part of the primary key */
};

/* Cached shape of one warehouse table; dropped on every rollback. */
struct whtab {
    char *name; /* owned */
    bool exists;
    size_t ncols;
    struct whcol *cols; /* owned */
};

struct zetl_wh {
    const struct zetl_config *cfg;   /* borrowed */
    const struct zetl_wh_dialect *d; /* static: &zetl_wh_pg_dialect or &zetl_wh_rs_dialect */
    bool rs;                         /* warehouse.kind redshift */
    char *bucket, *prefix;           /* owned, Redshift: the archive's S3 location */
    PGconn *conn;                    /* owned; NULL after a lost connection */
    struct whtab *tabs;              /* owned cache */
    size_t ntabs;
    uint64_t stage_no;
    char *failed_copy; /* owned: S3 URL of the COPY that just failed, or NULL */
};

/* ---- manifest ----------------------------------------------------------- */

struct mcol {
    const char *name; /* borrowed from the JSON document */
    const char *type; /* borrowed: canonical (zetl_wh_canon_type) */
    bool key;
};

struct mfile {
    const char *table;  /* borrowed */
    const char *file;   /* borrowed */
    const char *sha256; /* borrowed */
    uint64_t rows;
    uint64_t bytes;
    size_t ncols;
    struct mcol *cols; /* owned */
};

struct manifest {
    json_t *root;       /* owned: every borrowed string lives here */
    const char *stream; /* borrowed */
    const char *name;   /* borrowed from the directory path: "<first>-<last>" */
    uint64_t first_lsn, last_lsn, end_lsn;
    size_t nfiles;
    struct mfile *files; /* owned */
};

static void manifest_release(struct manifest *m)
{
    for (size_t i = 0; i < m->nfiles; i++)
        free(m->files[i].cols);
    free(m->files);
    if (m->root)
        json_decref(m->root);
    memset(m, 0, sizeof(*m));
}

static const char *jstr(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool juint(const json_t *o, const char *k, uint64_t *out)
{
    json_t *v = json_object_get(o, k);

    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* LSN from the text form (authoritative), else the integer form. */
static bool jlsn(const json_t *o, const char *k, const char *kint, uint64_t *out)
{
    const char *s = jstr(o, k);

    if (s != NULL)
        return zetl_lsn_parse(s, out);
    return juint(o, kint, out);
}

static bool safe_file_name(const char *f)
{
    return f[0] != '\0' && f[0] != '.' && strchr(f, '/') == NULL;
}

static enum zetl_err manifest_load(const char *dir, struct manifest *m, struct zetl_errbuf *eb)
{
    char path[4096];
    json_error_t jerr;
    json_t *files;
    struct stat sb;
    size_t dlen = strlen(dir);

    memset(m, 0, sizeof(*m));
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    m->name = dir;
    for (size_t i = 0; i < dlen; i++)
        if (dir[i] == '/' && i + 1 < dlen)
            m->name = dir + i + 1;
    snprintf(path, sizeof(path), "%.*s/manifest.json", (int)dlen, dir);
    if (stat(path, &sb) != 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not read \"%s\": %s", path, strerror(errno));
    if (sb.st_size > WH_MANIFEST_MAX)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "\"%s\" is too large to be a manifest", path);
    m->root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (m->root == NULL)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not parse \"%s\": line %d: %s", path,
                            jerr.line, jerr.text);
    files = json_object_get(m->root, "files");
    m->stream = jstr(m->root, "stream");
    if (!json_is_integer(json_object_get(m->root, "version")) ||
        json_integer_value(json_object_get(m->root, "version")) != 1 || m->stream == NULL ||
        !jlsn(m->root, "first_lsn", "first_lsn_int", &m->first_lsn) ||
        !jlsn(m->root, "last_lsn", "last_lsn_int", &m->last_lsn) ||
        !jlsn(m->root, "end_lsn", "end_lsn_int", &m->end_lsn) || !json_is_array(files)) {
        zetl_err_set(eb, ZETL_ERR_FATAL, "\"%s\": not a version 1 manifest", path);
        goto fail;
    }
    m->nfiles = json_array_size(files);
    m->files = zetl_calloc(m->nfiles ? m->nfiles : 1, sizeof(*m->files));
    for (size_t i = 0; i < m->nfiles; i++) {
        json_t *fo = json_array_get(files, i);
        json_t *cols = json_object_get(fo, "columns");
        struct mfile *f = &m->files[i];

        f->table = jstr(fo, "table");
        f->file = jstr(fo, "file");
        f->sha256 = jstr(fo, "sha256");
        if (f->table == NULL || f->file == NULL || f->sha256 == NULL || strlen(f->sha256) != 64 ||
            !juint(fo, "rows", &f->rows) || !juint(fo, "bytes", &f->bytes) ||
            !json_is_array(cols) || !safe_file_name(f->file)) {
            zetl_err_set(eb, ZETL_ERR_FATAL, "\"%s\": files[%zu] is malformed", path, i);
            goto fail;
        }
        f->ncols = json_array_size(cols);
        f->cols = zetl_calloc(f->ncols ? f->ncols : 1, sizeof(*f->cols));
        for (size_t k = 0; k < f->ncols; k++) {
            json_t *co = json_array_get(cols, k);
            const char *type = jstr(co, "type");

            f->cols[k].name = jstr(co, "name");
            f->cols[k].key = json_is_true(json_object_get(co, "key"));
            if (f->cols[k].name == NULL || type == NULL || f->cols[k].name[0] == '\0') {
                zetl_err_set(eb, ZETL_ERR_FATAL, "\"%s\": files[%zu].columns[%zu] is malformed",
                             path, i, k);
                goto fail;
            }
            f->cols[k].type = zetl_wh_canon_type(type);
        }
    }
    return ZETL_OK;

fail:
    manifest_release(m);
    return ZETL_ERR_FATAL;
}

/* ---- connection and statements ------------------------------------------ */

static void first_line(const char *msg, char *out, size_t n)
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
    first_line(msg, line, sizeof(line));
    zetl_debug("warehouse: %s", line);
}

static void cache_clear(struct zetl_wh *wh)
{
    for (size_t i = 0; i < wh->ntabs; i++) {
        for (size_t k = 0; k < wh->tabs[i].ncols; k++) {
            free(wh->tabs[i].cols[k].name);
            free(wh->tabs[i].cols[k].type);
        }
        free(wh->tabs[i].cols);
        free(wh->tabs[i].name);
    }
    free(wh->tabs);
    wh->tabs = NULL;
    wh->ntabs = 0;
}

static void drop_conn(struct zetl_wh *wh)
{
    if (wh->conn)
        PQfinish(wh->conn);
    wh->conn = NULL;
    cache_clear(wh);
}

/*
 * Retriable: the connection is gone, or the server says try again
 * (connection exceptions 08, serialization/deadlock 40, resources 53,
 * shutdown 57P, lock not available 55P03).  Anything else is the job's fault.
 */
static enum zetl_err classify(struct zetl_wh *wh, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (wh->conn == NULL || PQstatus(wh->conn) != CONNECTION_OK || state == NULL)
        return ZETL_ERR_RETRY;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "40", 2) == 0 ||
        strncmp(state, "53", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strcmp(state, "55P03") == 0)
        return ZETL_ERR_RETRY;
    if (wh->rs) {
        /* Redshift reports these as internal errors (XX000). */
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

        if (msg && (strstr(msg, "Serializable isolation violation") || strstr(msg, "SlowDown") ||
                    strstr(msg, "Status 503") || strstr(msg, "Status 500")))
            return ZETL_ERR_RETRY;
    }
    return ZETL_ERR_FATAL;
}

/* Fills eb from a failed result (or the connection), drops a dead connection. */
static enum zetl_err fail_res(struct zetl_wh *wh, PGresult *res, struct zetl_errbuf *eb)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    enum zetl_err err = classify(wh, res);
    char line[768];

    if (msg == NULL)
        msg = wh->conn ? PQerrorMessage(wh->conn) : "no connection to the warehouse";
    first_line(msg, line, sizeof(line));
    if (line[0] == '\0')
        snprintf(line, sizeof(line), "lost the connection to the warehouse");
    zetl_err_set(eb, err, "%s", line);
    if (err == ZETL_ERR_RETRY && wh->conn && PQstatus(wh->conn) != CONNECTION_OK)
        drop_conn(wh);
    return err;
}

/* Runs one statement (or, without params, several); *out owned by the caller when wanted. */
static enum zetl_err wh_exec(struct zetl_wh *wh, const char *sql, int n, const char *const *params,
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
        err = fail_res(wh, res, eb);
        PQclear(res);
        return err;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return ZETL_OK;
}

/* Runs owned SQL text and frees it. */
static enum zetl_err exec_owned(struct zetl_wh *wh, char *sql, PGresult **out,
                                struct zetl_errbuf *eb)
{
    enum zetl_err err = wh_exec(wh, sql, 0, NULL, out, eb);

    free(sql);
    return err;
}

static enum zetl_err run_stmt(struct zetl_wh *wh, enum zetl_wh_offsets_stmt which, int n,
                              const char *const *params, PGresult **out, struct zetl_errbuf *eb);
static enum zetl_err ddl_lock(struct zetl_wh *wh, const char *table, struct whtab **wt,
                              struct zetl_errbuf *eb);

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

    if ((err = wh_exec(wh, "BEGIN", 0, NULL, NULL, eb)) != ZETL_OK ||
        (err = ddl_lock(wh, NULL, NULL, eb)) != ZETL_OK ||
        (err = exec_owned(wh, zetl_wh_sql_bootstrap(wh->d, schema), NULL, eb)) != ZETL_OK ||
        (err = run_stmt(wh, ZETL_WH_SQL_COLUMNS, 2, params, &res, eb)) != ZETL_OK)
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
        zetl_wh_sql_ident(&b, schema);
        zetl_buf_puts(&b, "._zetl_offsets");
        if ((err = exec_owned(wh, zetl_wh_sql_take(&b), &res, eb)) != ZETL_OK ||
            (err = exec_owned(wh, zetl_wh_sql_state_upgrade(wh->d, schema), NULL, eb)) != ZETL_OK)
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
    if ((err = wh_exec(wh, "COMMIT", 0, NULL, NULL, eb)) != ZETL_OK)
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

        /* libpq's message names host and user, never the password. */
        first_line(msg, line, sizeof(line));
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
    /*
     * PostgreSQL: staging tables are temporary, give them room before the
     * first one exists.  Redshift folds quoted names to lower case unless told.
     */
    if ((err = wh_exec(wh,
                       wh->rs ? "SET enable_case_sensitive_identifier TO true"
                              : "SET temp_buffers = '64MB'",
                       0, NULL, NULL, eb)) != ZETL_OK ||
        (err = bootstrap(wh, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "warehouse schema \"%s\"", wh->cfg->warehouse.schema);
        drop_conn(wh);
        return err;
    }
    return ZETL_OK;
}

static enum zetl_err ensure_conn(struct zetl_wh *wh, struct zetl_errbuf *eb)
{
    if (wh->conn != NULL && PQstatus(wh->conn) == CONNECTION_OK)
        return ZETL_OK;
    drop_conn(wh);
    return wh_connect(wh, eb);
}

/* Text that goes into a Redshift string literal: no backslash, no control character. */
static bool literal_safe(const char *s)
{
    for (; *s; s++)
        if (*s == '\\' || (unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* Redshift COPYs the batches from the archive: it must be on Amazon S3. */
static enum zetl_err rs_check_config(struct zetl_wh *wh, struct zetl_errbuf *eb)
{
    const struct zetl_config *cfg = wh->cfg;
    const char *url = cfg->archive.url;
    const char *role = cfg->warehouse.iam_role;

    if (url == NULL || strncmp(url, "s3://", 5) != 0)
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.kind redshift needs archive.url: s3://BUCKET/PREFIX "
                            "(Redshift loads the batches from S3)");
    if (cfg->archive.s3.endpoint != NULL)
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.kind redshift cannot read an archive at "
                            "archive.s3.endpoint \"%s\": Redshift COPY reads Amazon S3 only",
                            cfg->archive.s3.endpoint);
    if (role == NULL || role[0] == '\0')
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.kind redshift needs warehouse.iam_role: the ARN of a role "
                            "the cluster or workgroup may assume to read the archive");
    if (!literal_safe(role) || !literal_safe(url) ||
        (cfg->archive.s3.region && !literal_safe(cfg->archive.s3.region)))
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.iam_role, archive.url and archive.s3.region must not "
                            "contain backslashes or control characters");
    return zetl_s3_parse_url(url, &wh->bucket, &wh->prefix, eb);
}

/*
 * Runs a bookkeeping statement with its parameters (the first n of them at
 * most); Redshift's may be several statements, each taking a prefix of them.
 * *out (owned) gets the result of a single-statement query.
 */
static enum zetl_err run_stmt(struct zetl_wh *wh, enum zetl_wh_offsets_stmt which, int n,
                              const char *const *params, PGresult **out, struct zetl_errbuf *eb)
{
    const char *schema = wh->cfg->warehouse.schema;
    enum zetl_err err = ZETL_OK;
    char *sql;
    int np;

    if (!wh->rs) {
        sql = zetl_wh_pg_offsets_sql(schema, which);
        err = wh_exec(wh, sql, n, params, out, eb);
        free(sql);
        return err;
    }
    for (size_t part = 0; err == ZETL_OK; part++) {
        sql = zetl_wh_rs_offsets_sql(schema, which, part, &np);
        if (sql == NULL)
            break;
        err = wh_exec(wh, sql, np < n ? np : n, params, part == 0 ? out : NULL, eb);
        free(sql);
    }
    return err;
}

enum zetl_err zetl_wh_open(const struct zetl_config *cfg, struct zetl_wh **out,
                           struct zetl_errbuf *eb)
{
    struct zetl_wh *wh;
    enum zetl_err err;

    *out = NULL;
    if (cfg->warehouse.kind != ZETL_WH_POSTGRES && cfg->warehouse.kind != ZETL_WH_REDSHIFT)
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.kind: only postgres and redshift are supported");
    wh = zetl_calloc(1, sizeof(*wh));
    wh->cfg = cfg;
    wh->d = &zetl_wh_pg_dialect;
    if (cfg->warehouse.kind == ZETL_WH_REDSHIFT) {
        wh->d = &zetl_wh_rs_dialect;
        wh->rs = true;
        if ((err = rs_check_config(wh, eb)) != ZETL_OK) {
            zetl_wh_free(wh);
            return err;
        }
    }
    if ((err = wh_connect(wh, eb)) != ZETL_OK) {
        zetl_wh_free(wh);
        return err;
    }
    *out = wh;
    return ZETL_OK;
}

void zetl_wh_free(struct zetl_wh *wh)
{
    if (wh == NULL)
        return;
    drop_conn(wh);
    free(wh->failed_copy);
    free(wh->prefix);
    free(wh->bucket);
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
        (err = run_stmt(wh, ZETL_WH_SQL_OFFSET_GET, 1, params, &res, eb)) != ZETL_OK)
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
    enum zetl_err err;

    u64_text(end_lsn, lsn);
    if ((err = ensure_conn(wh, eb)) != ZETL_OK)
        goto fail;
    if (!wh->rs) {
        err = run_stmt(wh, ZETL_WH_SQL_OFFSET_PROGRESS, 2, params, NULL, eb);
    } else {
        /* Two statements under the applier's lock: never two rows of a stream. */
        char *begin = zetl_wh_rs_begin_sql(wh->cfg->warehouse.schema);

        err = wh_exec(wh, begin, 0, NULL, NULL, eb);
        free(begin);
        if (err == ZETL_OK &&
            (err = run_stmt(wh, ZETL_WH_SQL_OFFSET_PROGRESS, 2, params, NULL, eb)) == ZETL_OK)
            err = wh_exec(wh, "COMMIT", 0, NULL, NULL, eb);
        if (err != ZETL_OK && wh->conn != NULL)
            PQclear(PQexec(wh->conn, "ROLLBACK"));
    }
fail:
    if (err)
        zetl_err_prefix(eb, "could not record the progress of stream \"%s\"", stream);
    return err;
}

/* ---- warehouse tables: cache, creation, evolution ------------------------ */

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
    int n;

    err = run_stmt(wh, ZETL_WH_SQL_COLUMNS, 2, params, &res, eb);
    if (err)
        return err;
    if (t == NULL) {
        wh->tabs = zetl_realloc(wh->tabs, (wh->ntabs + 1) * sizeof(*wh->tabs));
        t = &wh->tabs[wh->ntabs++];
        memset(t, 0, sizeof(*t));
        t->name = zetl_strdup(table);
    } else {
        for (size_t k = 0; k < t->ncols; k++) {
            free(t->cols[k].name);
            free(t->cols[k].type);
        }
        free(t->cols);
    }
    n = PQntuples(res);
    t->exists = n > 0;
    t->ncols = (size_t)n;
    t->cols = zetl_calloc(n ? (size_t)n : 1, sizeof(*t->cols));
    for (int i = 0; i < n; i++) {
        t->cols[i].name = zetl_strdup(PQgetvalue(res, i, 0));
        if (wh->rs) {
            /* name, format_type() text, pk */
            t->cols[i].type = zetl_wh_rs_catalog_type(PQgetvalue(res, i, 1));
            t->cols[i].key = strcmp(PQgetvalue(res, i, 2), "t") == 0;
            continue;
        }
        t->cols[i].type =
            zetl_batch_type_text(NULL, (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10),
                                 (int32_t)strtol(PQgetvalue(res, i, 2), NULL, 10));
        t->cols[i].key = strcmp(PQgetvalue(res, i, 3), "t") == 0;
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

/* One table of the batch: its files, the union of their columns, and the shapes. */
struct tplan {
    const char *table; /* borrowed */
    size_t nfiles;
    const struct mfile **files; /* owned array of borrowed */
    size_t ncols;
    struct zetl_wh_col *cols;     /* owned array; names borrowed, types borrowed/static */
    struct zetl_wh_shape *shapes; /* owned, one per file */
    size_t *maps;                 /* owned storage of every shape's map */
};

static void tplan_release(struct tplan *p)
{
    free(p->files);
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
static void plan_union(struct tplan *p, const char *tenant_column, char **reason)
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
            for (u = 0; u < p->ncols; u++)
                if (strcmp(p->cols[u].name, c->name) == 0)
                    break;
            if (u == p->ncols) {
                p->cols[u].name = c->name;
                p->cols[u].type = c->type;
                p->cols[u].key = c->key;
                p->ncols++;
            } else {
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

/* How the warehouse column of type `from` takes the batch's manifest type `to`. */
static enum zetl_wh_type_change type_change(const struct zetl_wh *wh, const char *from,
                                            const char *to)
{
    enum zetl_wh_type_change ch;
    char *rs_to;

    if (!wh->rs)
        return zetl_wh_pg_type_change(from, to);
    rs_to = zetl_wh_rs_type(to);
    ch = zetl_wh_rs_type_change(from, rs_to);
    free(rs_to);
    return ch;
}

static const char *mode_name(enum zetl_wh_deletes d)
{
    return d == ZETL_DELETES_SOFT ? "soft" : d == ZETL_DELETES_HISTORY ? "history" : "hard";
}

/*
 * Takes the dialect's DDL lock on `table` (NULL: the schema) for the rest of
 * the transaction and re-reads the table's columns into *wt (when wt is not
 * NULL).
 */
static enum zetl_err ddl_lock(struct zetl_wh *wh, const char *table, struct whtab **wt,
                              struct zetl_errbuf *eb)
{
    const char *params[] = {wh->cfg->warehouse.schema, table ? table : ""};
    enum zetl_err err;

    if (wh->d->ddl_lock_sql != NULL &&
        (err = wh_exec(wh, wh->d->ddl_lock_sql, 2, params, NULL, eb)) != ZETL_OK)
        return err;
    return wt ? cache_load(wh, table, wt, eb) : ZETL_OK;
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
    const char *tenant = wh->cfg->transforms.tenant_column;
    struct zetl_wh_table t = *base;
    struct whtab *wt = cache_find(wh, p->table);
    struct zetl_buf ddl;
    enum zetl_err err;
    size_t wkeys = 0, ukeys = 0;
    bool keys_ok = true;

    t.ncols = p->ncols;
    t.cols = p->cols;
    if (wt == NULL && (err = cache_load(wh, p->table, &wt, eb)) != ZETL_OK)
        return err;
    if (!wt->exists) {
        if (!locked) {
            *relock = true;
            return ZETL_OK;
        }
        if ((err = exec_owned(wh, zetl_wh_sql_create_table(wh->d, &t), NULL, eb)) != ZETL_OK)
            return err;
        zetl_info("created warehouse table \"%s\".\"%s\"", t.schema, t.table);
        return cache_load(wh, p->table, &wt, eb);
    }

    /* The mode's columns must be there: the table may come from another configuration. */
    if ((t.deletes == ZETL_DELETES_SOFT && whtab_col(wt, "_zetl_deleted") == NULL) ||
        (t.deletes == ZETL_DELETES_HISTORY && whtab_col(wt, "_zetl_valid_from") == NULL) ||
        whtab_col(wt, tenant) == NULL)
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "table \"%s\".\"%s\" was not created by zetl for tenant column "
                            "\"%s\" and warehouse.deletes: %s",
                            t.schema, t.table, tenant, mode_name(t.deletes));

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
    if (!keys_ok || wkeys != ukeys) {
        struct zetl_buf b;

        if (!locked) {
            *relock = true;
            return ZETL_OK;
        }

        zetl_buf_init(&b, 0);
        zetl_buf_puts(&b, "primary key changed from ");
        key_names(&b, wt, p, tenant);
        zetl_buf_puts(&b, " to ");
        key_names(&b, NULL, p, tenant);
        *reason = b.data;
        return ZETL_OK;
    }

    /* Check everything first: an incompatible column changes nothing. */
    zetl_buf_init(&ddl, 0);
    for (size_t u = 0; u < p->ncols; u++) {
        const struct whcol *wc = whtab_col(wt, p->cols[u].name);
        enum zetl_wh_type_change ch;
        char *sql = NULL;

        if (wc == NULL) {
            sql = zetl_wh_sql_add_column(wh->d, &t, &p->cols[u]);
        } else if ((ch = type_change(wh, wc->type, p->cols[u].type)) == ZETL_WH_TYPE_WIDER) {
            sql = zetl_wh_sql_alter_type(wh->d, &t, &p->cols[u]);
        } else if (ch == ZETL_WH_TYPE_INCOMPATIBLE) {
            struct zetl_buf b;

            if (!locked) {
                zetl_buf_release(&ddl);
                *relock = true;
                return ZETL_OK;
            }
            zetl_buf_init(&b, 0);
            zetl_buf_printf(&b, "column \"%s\" changed type from %s to %s", wc->name, wc->type,
                            p->cols[u].type);
            *reason = b.data;
            zetl_buf_release(&ddl);
            return ZETL_OK;
        }
        if (sql) {
            zetl_buf_printf(&ddl, "%s%s", ddl.len ? ";\n" : "", sql);
            free(sql);
        }
    }
    if (ddl.len > 0) {
        if (!locked) {
            zetl_buf_release(&ddl);
            *relock = true;
            return ZETL_OK;
        }
        err = wh_exec(wh, ddl.data, 0, NULL, NULL, eb);
        zetl_buf_release(&ddl);
        if (err)
            return err;
        zetl_info("altered warehouse table \"%s\".\"%s\" to the batch's columns", t.schema,
                  t.table);
        if ((err = cache_load(wh, p->table, &wt, eb)) != ZETL_OK)
            return err;
    }
    zetl_buf_release(&ddl);
    /*
     * Stage in the warehouse's (possibly wider) types.  Redshift keeps the
     * batch's type when it maps to the same column type: whether a SUPER
     * column takes json or an array's text, a VARBYTE bytea's hex, is read
     * from it.
     */
    for (size_t u = 0; u < p->ncols; u++) {
        const struct whcol *wc = whtab_col(wt, p->cols[u].name);

        if (wc && (!wh->rs || type_change(wh, wc->type, p->cols[u].type) != ZETL_WH_TYPE_SAME))
            p->cols[u].type = wc->type;
    }
    return ZETL_OK;
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

    if (err == ZETL_OK && relock && (err = ddl_lock(wh, p->table, &wt, eb)) == ZETL_OK)
        err = evolve_pass(wh, base, p, true, &relock, reason, eb);
    return err;
}

/* ---- COPY of one file ----------------------------------------------------- */

/* Drains the results of a finished COPY; ZETL_OK when the server accepted it. */
static enum zetl_err copy_finish(struct zetl_wh *wh, const char *abort_msg, struct zetl_errbuf *eb)
{
    enum zetl_err err = ZETL_OK;
    PGresult *res;

    if (PQputCopyEnd(wh->conn, abort_msg) != 1)
        return fail_res(wh, NULL, eb);
    while ((res = PQgetResult(wh->conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && err == ZETL_OK)
            err = fail_res(wh, res, eb);
        PQclear(res);
        if (wh->conn == NULL)
            break;
    }
    return err;
}

/*
 * Streams dir/file through zstd into the COPY already started, hashing the
 * compressed bytes; buffers are bounded whatever the file's size.
 */
static enum zetl_err copy_file(struct zetl_wh *wh, const char *dir, const struct mfile *f,
                               struct zetl_errbuf *eb)
{
    char path[4096];
    struct zetl_sha256 sha;
    char hex[65];
    unsigned char *in = NULL, *outb = NULL;
    size_t out_size = ZSTD_DStreamOutSize();
    ZSTD_DCtx *dctx = NULL;
    const char *zerr = NULL;
    size_t zret = 1;
    uint64_t total = 0;
    enum zetl_err err;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, f->file);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not open \"%s\": %s", path, strerror(errno));
        copy_finish(wh, "zetl: file missing", &(struct zetl_errbuf){""});
        return err;
    }
    zetl_sha256_init(&sha);
    in = zetl_malloc(WH_READ_CHUNK);
    outb = zetl_malloc(out_size);
    dctx = ZSTD_createDCtx();
    if (dctx == NULL)
        abort();
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, WH_ZSTD_WINDOW_LOG_MAX);

    for (;;) {
        ssize_t n = read(fd, in, WH_READ_CHUNK);
        ZSTD_inBuffer zin;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not read \"%s\": %s", path, strerror(errno));
            goto abort_copy;
        }
        if (n == 0)
            break;
        zetl_sha256_update(&sha, in, (size_t)n);
        total += (uint64_t)n;
        if (zerr != NULL)
            continue; /* keep hashing: a checksum mismatch is the better message */
        zin.src = in;
        zin.size = (size_t)n;
        zin.pos = 0;
        while (zin.pos < zin.size) {
            ZSTD_outBuffer zout = {outb, out_size, 0};

            zret = ZSTD_decompressStream(dctx, &zout, &zin);
            if (ZSTD_isError(zret)) {
                zerr = ZSTD_getErrorName(zret);
                break;
            }
            if (zout.pos > 0 && PQputCopyData(wh->conn, (const char *)outb, (int)zout.pos) != 1) {
                err = fail_res(wh, NULL, eb);
                goto fail;
            }
        }
    }
    /* Flush what the decoder still holds. */
    while (zerr == NULL && zret != 0) {
        ZSTD_inBuffer zin = {NULL, 0, 0};
        ZSTD_outBuffer zout = {outb, out_size, 0};

        zret = ZSTD_decompressStream(dctx, &zout, &zin);
        if (ZSTD_isError(zret)) {
            zerr = ZSTD_getErrorName(zret);
            break;
        }
        if (zout.pos > 0 && PQputCopyData(wh->conn, (const char *)outb, (int)zout.pos) != 1) {
            err = fail_res(wh, NULL, eb);
            goto fail;
        }
        if (zout.pos == 0) {
            zerr = "truncated frame";
            break;
        }
    }
    zetl_sha256_final_hex(&sha, hex);
    if (strcmp(hex, f->sha256) != 0 || total != f->bytes) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "file \"%s\" does not match its manifest (sha256 %s, %" PRIu64
                           " bytes; manifest: sha256 %s, %" PRIu64 " bytes)",
                           f->file, hex, total, f->sha256, f->bytes);
        goto abort_copy;
    }
    if (zerr != NULL) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL, "file \"%s\": zstd: %s", f->file, zerr);
        goto abort_copy;
    }
    if ((err = copy_finish(wh, NULL, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "file \"%s\"", f->file);
        goto fail;
    }
    goto done;

abort_copy:
    if (wh->conn)
        copy_finish(wh, "zetl: batch file rejected", &(struct zetl_errbuf){""});
    goto fail;
done:
    err = ZETL_OK;
fail:
    zetl_sha256_release(&sha);
    ZSTD_freeDCtx(dctx);
    free(outb);
    free(in);
    close(fd);
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

static const struct tstate *state_find(const struct tstate *s, size_t n, const char *table)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].table, table) == 0)
            return &s[i];
    return NULL;
}

static enum zetl_err stage_stats(struct zetl_wh *wh, const struct zetl_wh_table *t,
                                 const struct tplan *p, uint64_t v[4], struct zetl_errbuf *eb)
{
    PGresult *res = NULL;
    enum zetl_err err;

    err = exec_owned(wh,
                     wh->rs ? zetl_wh_rs_stage_stats_sql(t, p->shapes, p->nfiles)
                            : zetl_wh_pg_stage_stats_sql(t, p->shapes, p->nfiles),
                     &res, eb);
    if (err)
        return err;
    for (int i = 0; i < 4; i++)
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
    char *sql = zetl_wh_pg_table_rows_sql();
    enum zetl_err err = wh_exec(wh, sql, 2, params, &res, eb);

    free(sql);
    if (err)
        return err;
    t->by_key = PQntuples(res) == 1 &&
                strtod(PQgetvalue(res, 0, 0), NULL) >= (double)rows * WH_BY_KEY_RATIO;
    PQclear(res);
    return ZETL_OK;
}

/* s3://bucket/prefix/<stream>/<first>-<last>/<file><suffix>: where the archive put it. */
static void rs_url(const struct zetl_wh *wh, const struct manifest *m, const char *file,
                   const char *suffix, struct zetl_buf *b)
{
    zetl_buf_printf(b, "s3://%s/", wh->bucket);
    if (wh->prefix[0] != '\0')
        zetl_buf_printf(b, "%s/", wh->prefix);
    /* The batch's name from its LSNs: `dir` may be a fetched copy with another name. */
    zetl_buf_printf(b, "%s/%016" PRIX64 "-%016" PRIX64 "/%s%s", m->stream, m->first_lsn,
                    m->last_lsn, file, suffix);
}

/*
 * Creates the staging table and COPYs each of the table's files into it
 * from S3, through the file's own COPY manifest "<file>.manifest" (the batch's
 * copy.manifest lists every table's files, and the files differ in columns).
 */
static enum zetl_err rs_stage(struct zetl_wh *wh, const struct manifest *m,
                              const struct zetl_wh_table *t, const struct tplan *p,
                              struct zetl_errbuf *eb)
{
    struct zetl_buf url;
    enum zetl_err err;

    if ((err = exec_owned(wh, zetl_wh_rs_stage_sql(t), NULL, eb)) != ZETL_OK)
        return err;
    zetl_buf_init(&url, 0);
    /* Last file first: a COPY's rows are file 0 until marked (zetl_wh_rs_file_mark_sql). */
    for (size_t i = p->nfiles; i-- > 0;) {
        zetl_buf_reset(&url);
        rs_url(wh, m, p->files[i]->file, ".manifest", &url);
        if (!literal_safe(url.data)) {
            err = zetl_err_set(eb, ZETL_ERR_FATAL,
                               "file \"%s\": stream \"%s\" makes no usable S3 URL",
                               p->files[i]->file, m->stream);
            break;
        }
        err =
            exec_owned(wh,
                       zetl_wh_rs_copy_sql(t, &p->shapes[i], url.data, wh->cfg->warehouse.iam_role,
                                           wh->cfg->archive.s3.region),
                       NULL, eb);
        if (err != ZETL_OK) {
            /* The detail is read once the transaction is rolled back (rs_load_error). */
            if (err == ZETL_ERR_FATAL && wh->conn != NULL) {
                free(wh->failed_copy);
                wh->failed_copy = zetl_strndup(url.data, url.len);
            }
            zetl_err_prefix(eb, "COPY of file \"%s\" (%s)", p->files[i]->file, url.data);
            break;
        }
        if (i > 0 && (err = exec_owned(wh, zetl_wh_rs_file_mark_sql(t, i), NULL, eb)) != ZETL_OK)
            break;
    }
    zetl_buf_release(&url);
    return err;
}

/*
 * Appends the load error Redshift recorded for the COPY that failed (file,
 * line, column, reason) to eb; row values are left out.  STL_LOAD_ERRORS on
 * provisioned clusters, SYS_LOAD_ERROR_DETAIL on Serverless.
 */
static void rs_load_error(struct zetl_wh *wh, struct zetl_errbuf *eb)
{
    for (int serverless = 0; serverless < 2 && wh->conn != NULL; serverless++) {
        PGresult *res = PQexec(wh->conn, zetl_wh_rs_load_error_sql(serverless));
        size_t n = strlen(eb->msg);

        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            PQclear(res);
            continue;
        }
        if (PQntuples(res) == 1 && PQnfields(res) == 4) {
            char reason[256];
            char *cut;

            first_line(PQgetvalue(res, 0, 3), reason, sizeof(reason));
            /* SYS_LOAD_ERROR_DETAIL quotes the value: keep row data out of the log. */
            if ((cut = strstr(reason, "Value '")) != NULL)
                *cut = '\0';
            snprintf(eb->msg + n, sizeof(eb->msg) - n,
                     "; load error in %s, line %s, column \"%s\": %s", PQgetvalue(res, 0, 0),
                     PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), reason);
        }
        PQclear(res);
        return;
    }
}

/* Stages and merges one table's rows of the batch (rows at or below `skip_lsn` are dropped). */
static enum zetl_err apply_table(struct zetl_wh *wh, const struct manifest *m, const char *dir,
                                 struct tplan *p, uint64_t skip_lsn, struct stop *stop,
                                 struct zetl_errbuf *eb)
{
    const struct zetl_config *cfg = wh->cfg;
    char stage[48];
    char lsn[24];
    const char *params[4];
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

    if (reserved_name(p->table))
        reason = zetl_strdup("table names starting with \"_zetl_\" are reserved");
    if (reason == NULL)
        plan_union(p, t.tenant_column, &reason);
    if (reason == NULL && (err = evolve(wh, &t, p, &reason, eb)) != ZETL_OK)
        goto fail;
    if (reason != NULL)
        goto stopped;
    t.ncols = p->ncols;
    t.cols = p->cols;

    if (wh->rs) {
        if ((err = rs_stage(wh, m, &t, p, eb)) != ZETL_OK)
            goto fail;
        goto staged;
    }
    if ((err = exec_owned(wh, zetl_wh_pg_stage_sql(&t), NULL, eb)) != ZETL_OK)
        goto fail;
    for (size_t i = 0; i < p->nfiles; i++) {
        PGresult *res;

        if (p->nfiles > 1 &&
            (err = exec_owned(wh, zetl_wh_pg_file_default_sql(&t, i), NULL, eb)) != ZETL_OK)
            goto fail;
        {
            char *sql = zetl_wh_pg_copy_sql(&t, &p->shapes[i]);

            res = PQexec(wh->conn, sql);
            free(sql);
        }
        if (PQresultStatus(res) != PGRES_COPY_IN) {
            err = fail_res(wh, res, eb);
            PQclear(res);
            goto fail;
        }
        PQclear(res);
        if ((err = copy_file(wh, dir, p->files[i], eb)) != ZETL_OK)
            goto fail;
    }
staged:
    if (skip_lsn >= m->first_lsn) {
        /* An overlapping replay: what the warehouse has already is not applied twice. */
        char *sql = wh->rs ? zetl_wh_rs_skip_applied_sql(&t) : zetl_wh_pg_skip_applied_sql(&t);

        u64_text(skip_lsn, lsn);
        params[0] = lsn;
        err = wh_exec(wh, sql, 1, params, NULL, eb);
        free(sql);
        if (err)
            goto fail;
    }
    if ((err = stage_stats(wh, &t, p, st, eb)) != ZETL_OK)
        goto fail;
    if (wh->rs && st[1] > 0 && zetl_wh_sql_nkeys(&t) == 0) {
        reason = zetl_strdup("a table without a primary key cannot take deletes or updates "
                             "in Redshift (no row id to remove one of equal rows)");
        if ((err = exec_owned(wh, zetl_wh_rs_drop_stage_sql(&t), NULL, eb)) != ZETL_OK)
            goto fail;
        goto stopped;
    }
    if (st[3] > 0) {
        if (st[3] > WH_STAGE_BIG && !wh->rs) {
            char *sql = st[2] > 0 ? zetl_wh_pg_stage_index_sql(&t) : NULL;

            if (sql == NULL) {
                struct zetl_buf b;
                char *q = zetl_wh_quote_ident(stage);

                zetl_buf_init(&b, 0);
                /* A small sample is plenty for the merge's join choices. */
                zetl_buf_printf(&b, "SET LOCAL default_statistics_target = 10; ANALYZE pg_temp.%s",
                                q);
                free(q);
                sql = b.data;
            }
            if ((err = exec_owned(wh, sql, NULL, eb)) != ZETL_OK)
                goto fail;
        }
        if (st[0] > 0 &&
            (err =
                 exec_owned(wh, wh->rs ? zetl_wh_rs_truncate_sql(&t) : zetl_wh_pg_truncate_sql(&t),
                            NULL, eb)) != ZETL_OK)
            goto fail;
        if (st[2] > 0) {
            char *round = wh->rs ? zetl_wh_rs_fill_round_sql(&t) : zetl_wh_pg_fill_round_sql(&t);
            int rounds = 0;

            err = exec_owned(wh,
                             wh->rs ? zetl_wh_rs_fill_prepare_sql(&t, p->shapes, p->nfiles)
                                    : zetl_wh_pg_fill_prepare_sql(&t, p->shapes, p->nfiles),
                             NULL, eb);
            while (err == ZETL_OK && rounds++ < WH_FILL_MAX_ROUNDS) {
                PGresult *res = NULL;
                bool more;

                if ((err = wh_exec(wh, round, 0, NULL, &res, eb)) != ZETL_OK)
                    break;
                more = strcmp(PQcmdTuples(res), "0") != 0;
                PQclear(res);
                if (!more)
                    break;
            }
            free(round);
            if (err)
                goto fail;
        }
        if (!wh->rs && zetl_wh_sql_nkeys(&t) > 0 &&
            (err = table_rows(wh, &t, st[3], eb)) != ZETL_OK)
            goto fail;
        err = exec_owned(wh,
                         wh->rs ? zetl_wh_rs_merge_sql(&t, p->shapes, p->nfiles)
                                : zetl_wh_pg_merge_sql(&t, p->shapes, p->nfiles),
                         NULL, eb);
        if (err)
            goto fail;
    }
    /* Redshift's temporary tables live until the session ends. */
    if (wh->rs && (err = exec_owned(wh, zetl_wh_rs_drop_stage_sql(&t), NULL, eb)) != ZETL_OK)
        goto fail;
    u64_text(m->last_lsn, lsn);
    params[0] = p->table;
    params[1] = lsn;
    params[2] = m->stream;
    if ((err = run_stmt(wh, ZETL_WH_SQL_STATE_APPLIED, 3, params, NULL, eb)) != ZETL_OK)
        goto fail;
    zetl_debug("batch \"%s\": table \"%s\": %" PRIu64 " row(s) merged", m->name, p->table, st[3]);
    return ZETL_OK;

stopped:
    u64_text(m->first_lsn, lsn);
    params[0] = p->table;
    params[1] = reason;
    params[2] = lsn;
    params[3] = m->stream;
    if ((err = run_stmt(wh, ZETL_WH_SQL_STATE_STOP, 4, params, NULL, eb)) != ZETL_OK)
        goto fail;
    stop->table = zetl_strdup(p->table);
    stop->reason = reason;
    return ZETL_OK;

fail:
    free(reason);
    zetl_err_prefix(eb, "table \"%s\".\"%s\"", t.schema, p->table);
    return err;
}

/*
 * Applies the batch at `dir` in one transaction.  Normally every table and
 * the stream offset (the batch is skipped at or below it).  With by_table
 * (a resync), the tables named `only` (NULL: all of them) and no offset:
 * each table's rows at or below its own last_lsn of the stream are skipped.
 */
static enum zetl_err apply(struct zetl_wh *wh, const char *dir, bool by_table, const char *only,
                           struct zetl_errbuf *eb)
{
    const char *schema = wh->cfg->warehouse.schema;
    struct manifest m;
    struct tplan *plans = NULL;
    size_t nplans = 0;
    struct tstate *states = NULL;
    size_t nstates = 0;
    struct stop *stops = NULL;
    PGresult *sres = NULL;
    uint64_t offset = 0;
    bool in_txn = false, found = false;
    enum zetl_err err;

    if ((err = manifest_load(dir, &m, eb)) != ZETL_OK)
        return err;
    if ((err = ensure_conn(wh, eb)) != ZETL_OK)
        goto fail;
    {
        char *begin = wh->rs ? zetl_wh_rs_begin_sql(schema)
                             : zetl_strdup("BEGIN; SET LOCAL work_mem = '64MB'");

        err = exec_owned(wh, begin, NULL, eb);
        if (err)
            goto fail;
    }
    in_txn = true;

    if (!by_table) {
        const char *params[] = {m.stream};
        PGresult *res = NULL;

        if ((err = run_stmt(wh, ZETL_WH_SQL_OFFSET_LOCK, 1, params, NULL, eb)) != ZETL_OK ||
            (err = run_stmt(wh, ZETL_WH_SQL_OFFSET_LOCKED_GET, 1, params, &res, eb)) != ZETL_OK)
            goto fail;
        if (PQntuples(res) == 1)
            offset = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        if (m.last_lsn <= offset) {
            wh_exec(wh, "ROLLBACK", 0, NULL, NULL, eb);
            zetl_info("batch \"%s\" of stream \"%s\" is already applied (offset " ZETL_LSN_FMT
                      "); skipped",
                      m.name, m.stream, ZETL_LSN_ARGS(offset));
            manifest_release(&m);
            return ZETL_OK;
        }
    }

    {
        const char *params[] = {m.stream};

        if ((err = run_stmt(wh, ZETL_WH_SQL_STATE_GET, 1, params, &sres, eb)) != ZETL_OK)
            goto fail;
        nstates = (size_t)PQntuples(sres);
        states = zetl_calloc(nstates ? nstates : 1, sizeof(*states));
        for (size_t i = 0; i < nstates; i++) {
            states[i].table = PQgetvalue(sres, (int)i, 0);
            states[i].stopped = strcmp(PQgetvalue(sres, (int)i, 1), "stopped") == 0;
            states[i].last_lsn = strtoull(PQgetvalue(sres, (int)i, 2), NULL, 10);
            states[i].reason = PQgetvalue(sres, (int)i, 3);
        }
    }

    /* Tables in the order the batch first names them, with their files. */
    plans = zetl_calloc(m.nfiles ? m.nfiles : 1, sizeof(*plans));
    for (size_t i = 0; i < m.nfiles; i++) {
        struct tplan *p = NULL;

        for (size_t j = 0; j < nplans && p == NULL; j++)
            if (strcmp(plans[j].table, m.files[i].table) == 0)
                p = &plans[j];
        if (p == NULL) {
            p = &plans[nplans++];
            p->table = m.files[i].table;
            p->files = zetl_calloc(m.nfiles, sizeof(*p->files));
        }
        p->files[p->nfiles++] = &m.files[i];
    }
    stops = zetl_calloc(nplans ? nplans : 1, sizeof(*stops));

    for (size_t j = 0; j < nplans; j++) {
        const struct tstate *ts = state_find(states, nstates, plans[j].table);
        uint64_t skip = offset;

        if (only != NULL && strcmp(only, plans[j].table) != 0)
            continue;
        found = true;
        if (ts && ts->stopped) {
            if (by_table) {
                err = zetl_err_set(eb, ZETL_ERR_FATAL,
                                   "table \"%s\".\"%s\" is stopped (%s): fix or drop it and "
                                   "delete its row from \"%s\"._zetl_table_state first",
                                   schema, plans[j].table, ts->reason, schema);
                goto fail;
            }
            zetl_warn("batch \"%s\": skipping the rows of stopped warehouse table \"%s\".\"%s\" "
                      "(%s)",
                      m.name, schema, plans[j].table, ts->reason);
            continue;
        }
        /* Both LSNs are of this batch's stream: never compare across streams. */
        if (ts && ts->last_lsn > skip)
            skip = ts->last_lsn;
        if (skip >= m.last_lsn) {
            zetl_debug("batch \"%s\" of stream \"%s\": table \"%s\" already holds its rows "
                       "up to " ZETL_LSN_FMT "; skipped",
                       m.name, m.stream, plans[j].table, ZETL_LSN_ARGS(skip));
            continue;
        }
        if (skip >= m.first_lsn)
            zetl_debug("batch \"%s\" of stream \"%s\": table \"%s\": rows at or below " ZETL_LSN_FMT
                       " are applied already and dropped",
                       m.name, m.stream, plans[j].table, ZETL_LSN_ARGS(skip));
        if ((err = apply_table(wh, &m, dir, &plans[j], skip, &stops[j], eb)) != ZETL_OK)
            goto fail;
    }
    if (only != NULL && !found)
        zetl_debug("batch \"%s\" has no rows of table \"%s\"", m.name, only);

    if (!by_table) {
        char last[24], end[24];
        const char *params[] = {m.stream, last, end, m.name};

        u64_text(m.last_lsn, last);
        u64_text(m.end_lsn, end);
        if ((err = run_stmt(wh, ZETL_WH_SQL_OFFSET_SET, 4, params, NULL, eb)) != ZETL_OK)
            goto fail;
    }
    in_txn = false;
    if ((err = wh_exec(wh, "COMMIT", 0, NULL, NULL, eb)) != ZETL_OK)
        goto fail;
    for (size_t j = 0; j < nplans; j++)
        if (stops[j].table)
            zetl_error("warehouse table \"%s\".\"%s\" stopped at batch \"%s\": %s; its rows are "
                       "skipped until it is resynced (see docs/warehouse.md)",
                       schema, stops[j].table, m.name, stops[j].reason);
    zetl_info("applied batch \"%s\" of stream \"%s\" up to " ZETL_LSN_FMT, m.name, m.stream,
              ZETL_LSN_ARGS(m.last_lsn));
    goto done;

fail:
    if (in_txn && wh->conn != NULL) {
        PGresult *res = PQexec(wh->conn, "ROLLBACK");

        PQclear(res);
    }
    if (wh->failed_copy != NULL) {
        rs_load_error(wh, eb);
        free(wh->failed_copy);
        wh->failed_copy = NULL;
    }
    /* DDL of the failed transaction is gone: forget what the cache learned. */
    cache_clear(wh);
    zetl_err_prefix(eb, "could not apply batch \"%s\"", dir);
done:
    for (size_t j = 0; j < nplans; j++) {
        tplan_release(&plans[j]);
        if (stops) {
            free(stops[j].table);
            free(stops[j].reason);
        }
    }
    free(stops);
    free(plans);
    free(states);
    PQclear(sres);
    manifest_release(&m);
    return err;
}

enum zetl_err zetl_wh_apply_dir(struct zetl_wh *wh, const char *dir, struct zetl_errbuf *eb)
{
    return apply(wh, dir, false, NULL, eb);
}

enum zetl_err zetl_wh_apply_dir_table(struct zetl_wh *wh, const char *dir, const char *table,
                                      struct zetl_errbuf *eb)
{
    return apply(wh, dir, true, table, eb);
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
    if ((err = wh_exec(wh, "BEGIN", 0, NULL, NULL, eb)) != ZETL_OK)
        goto fail;
    if ((err = wh_exec(wh, b.data, 2, params, &res, eb)) != ZETL_OK)
        goto fail;
    n = PQntuples(res);
    for (int i = 0; i < n && err == ZETL_OK; i++) {
        zetl_buf_reset(&b);
        zetl_buf_puts(&b, "DELETE FROM ");
        zetl_wh_sql_ident(&b, schema);
        zetl_buf_putc(&b, '.');
        zetl_wh_sql_ident(&b, PQgetvalue(res, i, 0));
        err = wh_exec(wh, b.data, 0, NULL, NULL, eb);
    }
    if (err)
        goto fail;
    zetl_buf_reset(&b);
    zetl_buf_puts(&b, "DELETE FROM ");
    zetl_wh_sql_ident(&b, schema);
    zetl_buf_puts(&b, "._zetl_table_state WHERE CAST($1 AS VARCHAR(128)) = '' OR table_name = "
                      "CAST($1 AS VARCHAR(128))");
    if ((err = wh_exec(wh, b.data, 1, params + 1, NULL, eb)) != ZETL_OK ||
        (err = wh_exec(wh, "COMMIT", 0, NULL, NULL, eb)) != ZETL_OK)
        goto fail;
    zetl_info("cleared %d warehouse table(s) of schema \"%s\" for a rebuild", n, schema);
    PQclear(res);
    zetl_buf_release(&b);
    cache_clear(wh);
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
