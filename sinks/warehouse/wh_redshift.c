/*
 * The Redshift dialect of the warehouse sink: its table of functions
 * (zetl_wh_rs_dialect, at the end), what it does on a connection, and its
 * bookkeeping statements; the SQL of a table's apply is in
 * wh_redshift_sql.c (docs/warehouse.md, "Redshift").
 *
 *   - Redshift COPYs the batches from the S3 archive itself: the
 *     configuration must name an Amazon S3 archive and an IAM role, and each
 *     file is loaded through its own COPY manifest;
 *   - a failed COPY's detail is in SYS_LOAD_ERROR_DETAIL (STL_LOAD_ERRORS on
 *     older provisioned clusters), read once the transaction is rolled back,
 *     found by the failed file's S3 URL and this session (pg_last_copy_id()
 *     does not move for a COPY whose transaction was rolled back);
 *   - no row locks, no ON CONFLICT: every apply and every idle progress
 *     note holds a LOCK on _zetl_offsets, and an upsert is an UPDATE, then
 *     an INSERT when no row exists;
 *   - quoted names keep their case only when the session says so.
 *
 * Identifiers are always quoted; parameters are cast to their type in the
 * text (no parameter types are sent).
 */
#include "sinks/warehouse/wh_dialect.h"

#include "common/sqlquote.h"
#include "common/log.h"
#include "common/mem.h"
#include "sinks/s3.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

/* What the dialect keeps per warehouse connection. */
struct rs_state {
    const struct zetl_config *cfg; /* borrowed */
    char *bucket, *prefix;         /* owned: the archive's S3 location */
    char *failed_url;              /* owned: the data file of the COPY that failed; NULL: none */
};

/* ---- configuration ------------------------------------------------------------ */

/* Text that goes into a Redshift string literal: no backslash, no control character. */
static bool literal_safe(const char *s)
{
    for (; *s; s++)
        if (*s == '\\' || (unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static void release_state(void *state)
{
    struct rs_state *rs = state;

    if (rs == NULL)
        return;
    free(rs->failed_url);
    free(rs->prefix);
    free(rs->bucket);
    free(rs);
}

/* Redshift COPYs the batches from the archive: it must be on Amazon S3. */
static enum zetl_err open_state(const struct zetl_config *cfg, void **state, struct zetl_errbuf *eb)
{
    const char *url = cfg->archive.url;
    const char *role = cfg->warehouse.iam_role;
    struct rs_state *rs;
    enum zetl_err err;

    if (url == NULL || strncmp(url, "s3://", 5) != 0)
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.kind redshift needs archive.url: s3://BUCKET/PREFIX "
                            "(Redshift loads the batches from S3)");
    if (cfg->archive.s3.endpoint != NULL)
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.kind redshift cannot read an archive at "
                            "archive.s3.endpoint \"%s\": Redshift COPY reads Amazon S3 only",
                            cfg->archive.s3.endpoint);
    if (zetl_wh_system_column(&zetl_wh_rs_dialect, cfg->transforms.tenant_column))
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "transforms.tenant_column \"%s\" is a Redshift system column name, "
                            "which no table may use: choose another",
                            cfg->transforms.tenant_column);
    if (role == NULL || role[0] == '\0')
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.kind redshift needs warehouse.iam_role: the ARN of a role "
                            "the cluster or workgroup may assume to read the archive");
    if (!literal_safe(role) || !literal_safe(url) ||
        (cfg->archive.s3.region && !literal_safe(cfg->archive.s3.region)))
        return zetl_err_set(eb, ZETL_ERR_USAGE,
                            "warehouse.iam_role, archive.url and archive.s3.region must not "
                            "contain backslashes or control characters");
    rs = zetl_calloc(1, sizeof(*rs));
    rs->cfg = cfg;
    if ((err = zetl_s3_parse_url(url, &rs->bucket, &rs->prefix, eb)) != ZETL_OK) {
        release_state(rs);
        return err;
    }
    *state = rs;
    return ZETL_OK;
}

/* ---- staging and load errors ----------------------------------------------------- */

/* s3://bucket/prefix/<stream>/<first>-<last>/<file><suffix>: where the archive put it. */
static void file_url(const struct rs_state *rs, const struct zetl_wh_stage_src *src,
                     const char *file, const char *suffix, struct zetl_buf *b)
{
    zetl_buf_printf(b, "s3://%s/", rs->bucket);
    if (rs->prefix[0] != '\0')
        zetl_buf_printf(b, "%s/", rs->prefix);
    /* The batch's name from its LSNs: `dir` may be a fetched copy with another name. */
    zetl_buf_printf(b, "%s/%016" PRIX64 "-%016" PRIX64 "/%s%s", src->stream, src->first_lsn,
                    src->last_lsn, file, suffix);
}

/*
 * Creates the staging table and COPYs each of the table's files into it
 * from S3, through the file's own COPY manifest "<file>.manifest" (the batch's
 * copy.manifest lists every table's files, and the files differ in columns).
 */
static enum zetl_err stage(struct zetl_wh *wh, void *state, const struct zetl_wh_table *t,
                           const struct zetl_wh_stage_src *src, struct zetl_errbuf *eb)
{
    struct rs_state *rs = state;
    const struct zetl_config *cfg = rs->cfg;
    struct zetl_buf url;
    enum zetl_err err;

    if ((err = zetl_wh_exec_owned(wh, zetl_wh_rs_stage_sql(t), NULL, eb)) != ZETL_OK)
        return err;
    zetl_buf_init(&url, 0);
    /* Last file first: a COPY's rows are file 0 until marked (zetl_wh_rs_file_mark_sql). */
    for (size_t i = src->nfiles; i-- > 0;) {
        const char *file = src->files[i].name;

        zetl_buf_reset(&url);
        file_url(rs, src, file, ".manifest", &url);
        if (!literal_safe(url.data)) {
            err = zetl_err_set(eb, ZETL_ERR_FATAL,
                               "file \"%s\": stream \"%s\" makes no usable S3 URL", file,
                               src->stream);
            break;
        }
        err =
            zetl_wh_exec_owned(wh,
                               zetl_wh_rs_copy_sql(t, &src->shapes[i], url.data,
                                                   cfg->warehouse.iam_role, cfg->archive.s3.region),
                               NULL, eb);
        if (err != ZETL_OK) {
            /* The detail is read once the transaction is rolled back (explain_failure). */
            free(rs->failed_url);
            rs->failed_url = NULL;
            if (err == ZETL_ERR_FATAL) {
                struct zetl_buf data;

                zetl_buf_init(&data, 0);
                file_url(rs, src, file, "", &data);
                rs->failed_url = data.data;
            }
            zetl_err_prefix(eb, "COPY of file \"%s\" (%s)", file, url.data);
            break;
        }
        if (i > 0 &&
            (err = zetl_wh_exec_owned(wh, zetl_wh_rs_file_mark_sql(t, i), NULL, eb)) != ZETL_OK)
            break;
    }
    zetl_buf_release(&url);
    return err;
}

/*
 * The load error Redshift recorded for a COPY of data file `url` (its
 * s3:// URL) in this session: file, line, column, reason (no row values).
 * SYS_LOAD_ERROR_DETAIL (provisioned and Serverless), then STL_LOAD_ERRORS
 * (provisioned clusters only).  NULL when neither has one.
 */
static PGresult *load_error(struct zetl_wh *wh, const char *url)
{
    const char *params[1] = {url};

    for (int view = 1; view >= 0; view--) {
        struct zetl_errbuf ignored;
        PGresult *res = NULL;

        if (zetl_wh_exec(wh, zetl_wh_rs_load_error_sql(view), 1, params, &res, &ignored) ==
                ZETL_OK &&
            PQntuples(res) == 1 && PQnfields(res) == 4)
            return res;
        PQclear(res);
    }
    return NULL;
}

/* Appends the load error of the COPY that failed (see load_error) to eb. */
static void explain_failure(struct zetl_wh *wh, void *state, struct zetl_errbuf *eb)
{
    struct rs_state *rs = state;
    char *url = rs->failed_url;
    PGresult *res;

    if (url == NULL)
        return;
    rs->failed_url = NULL;
    if ((res = load_error(wh, url)) != NULL) {
        size_t n = strlen(eb->msg);
        char reason[256];
        char *cut;

        zetl_wh_first_line(PQgetvalue(res, 0, 3), reason, sizeof(reason));
        /* SYS_LOAD_ERROR_DETAIL quotes the value: keep row data out of the log. */
        if ((cut = strstr(reason, "Value '")) != NULL)
            *cut = '\0';
        snprintf(eb->msg + n, sizeof(eb->msg) - n, "; load error in %s, line %s, column \"%s\": %s",
                 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), reason);
        PQclear(res);
    }
    free(url);
}

/* ---- the live probe ------------------------------------------------------------- */

/* The probe's files in the archive bucket: a CSV file and its COPY manifest each. */
struct probe_files {
    struct zetl_s3 *s3;
    char *keys[4];  /* owned: good data, good manifest, bad data, bad manifest */
    char *urls[4];  /* owned: their s3:// URLs */
    size_t nstored; /* keys[0 .. nstored) are in the bucket */
};

static void probe_files_release(struct probe_files *pf)
{
    struct zetl_errbuf ignored;

    for (size_t i = 0; i < pf->nstored; i++)
        if (zetl_s3_delete(pf->s3, pf->keys[i], &ignored) != ZETL_OK)
            zetl_warn("could not remove probe file s3://%s/%s: %s", zetl_s3_bucket(pf->s3),
                      pf->keys[i], ignored.msg);
    for (size_t i = 0; i < 4; i++) {
        free(pf->keys[i]);
        free(pf->urls[i]);
    }
    zetl_s3_free(pf->s3);
}

/* Stores one object of the probe (`compress`: as a zstd frame, as batch files are); *stored: its
 * size. */
static enum zetl_err probe_put(struct probe_files *pf, size_t i, const char *text, bool compress,
                               size_t *stored, struct zetl_errbuf *eb)
{
    size_t len = strlen(text), cap = ZSTD_compressBound(len);
    char *z = compress ? zetl_malloc(cap) : NULL;
    struct zetl_s3_xfer x = {.key = pf->keys[i], .data = text, .len = len, .size = -1};
    enum zetl_err err;

    if (compress) {
        size_t n = ZSTD_compress(z, cap, text, len, 3);

        if (ZSTD_isError(n)) {
            free(z);
            return zetl_err_set(eb, ZETL_ERR_FATAL, "could not compress the probe file: %s",
                                ZSTD_getErrorName(n));
        }
        x.data = z;
        x.len = n;
    }
    *stored = x.len;
    err = zetl_s3_put(pf->s3, &x, 1, eb);
    free(z);
    if (err == ZETL_OK)
        pf->nstored = i + 1;
    return err;
}

/* A COPY manifest of one data file (as the archive writes them). */
static char *probe_manifest(const char *url, size_t bytes)
{
    json_t *root = json_pack("{s:[{s:s, s:b, s:{s:I}}]}", "entries", "url", url, "mandatory", 1,
                             "meta", "content_length", (json_int_t)bytes);
    char *s = json_dumps(root, JSON_COMPACT);

    json_decref(root);
    return s;
}

/* Writes the probe's files under <prefix>/_zetl_probe/<host pid time>/. */
static enum zetl_err probe_files_put(const struct rs_state *rs, struct probe_files *pf,
                                     struct zetl_errbuf *eb)
{
    static const char *const names[] = {"good.csv.zst", "good.csv.zst.manifest", "bad.csv.zst",
                                        "bad.csv.zst.manifest"};
    /* An empty field, then "": NULL and the empty string under NULL AS ''. */
    static const char good[] = "1,,\"\"\n", bad[] = "not a number\n";
    const struct zetl_config *cfg = rs->cfg;
    struct zetl_s3_opts o = {0};
    char host[64] = "host";
    enum zetl_err err;

    o.region = cfg->archive.s3.region;
    o.endpoint = cfg->archive.s3.endpoint;
    o.path_style = cfg->archive.s3.path_style;
    if ((err = zetl_s3_new(rs->bucket, &o, &pf->s3, eb)) != ZETL_OK)
        return err;
    gethostname(host, sizeof(host) - 1);
    for (char *h = host; *h; h++)
        if (!((*h >= 'a' && *h <= 'z') || (*h >= '0' && *h <= '9') || *h == '-'))
            *h = '-';
    for (size_t i = 0; i < 4; i++) {
        struct zetl_buf b;

        zetl_buf_init(&b, 0);
        if (rs->prefix[0] != '\0')
            zetl_buf_printf(&b, "%s/", rs->prefix);
        zetl_buf_printf(&b, "_zetl_probe/%s-%ld-%lld/%s", host, (long)getpid(),
                        (long long)time(NULL), names[i]);
        pf->keys[i] = b.data;
        zetl_buf_init(&b, 0);
        zetl_buf_printf(&b, "s3://%s/%s", rs->bucket, pf->keys[i]);
        pf->urls[i] = b.data;
    }
    for (size_t i = 0; i < 4; i += 2) {
        size_t bytes, ignored;
        char *m;

        if ((err = probe_put(pf, i, i == 0 ? good : bad, true, &bytes, eb)) != ZETL_OK)
            return err;
        m = probe_manifest(pf->urls[i], bytes);
        err = probe_put(pf, i + 1, m, false, &ignored, eb);
        free(m);
        if (err != ZETL_OK)
            return err;
    }
    return ZETL_OK;
}

/* The value of the one row of query `sql` into out ("(no row)", "(null)"); false on an error. */
static bool probe_value(struct zetl_wh *wh, const char *sql, struct zetl_buf *out,
                        struct zetl_errbuf *eb)
{
    PGresult *res = NULL;
    bool ok = zetl_wh_exec(wh, sql, 0, NULL, &res, eb) == ZETL_OK;

    if (ok)
        zetl_buf_puts(out, PQntuples(res) == 0      ? "(no row)"
                           : PQgetisnull(res, 0, 0) ? "(null)"
                                                    : PQgetvalue(res, 0, 0));
    PQclear(res);
    return ok;
}

/*
 * Runs one probe in a transaction that is rolled back; on a mismatch or an
 * error, why into `why`.  A probe whose setup must fail (a bad COPY) is
 * checked afterwards by explain_failure's lookup of the file's load error.
 */
static bool probe_one(struct zetl_wh *wh, const struct zetl_wh_rs_probe *p, struct zetl_buf *why)
{
    struct zetl_errbuf eb, ignored;
    struct zetl_buf got;
    bool ran;

    zetl_buf_reset(why);
    if (zetl_wh_exec(wh, "BEGIN", 0, NULL, NULL, &eb) != ZETL_OK) {
        zetl_buf_puts(why, eb.msg);
        return false;
    }
    zetl_buf_init(&got, 0);
    ran = zetl_wh_exec(wh, p->setup, 0, NULL, NULL, &eb) == ZETL_OK;
    if (ran && !p->setup_fails)
        ran = probe_value(wh, p->check, &got, &eb);
    zetl_wh_exec(wh, "ROLLBACK", 0, NULL, NULL, &ignored);
    if (p->setup_fails && ran) {
        zetl_buf_puts(why, "the COPY of a bad value did not fail");
    } else if (p->setup_fails) {
        PGresult *res = load_error(wh, p->param);

        zetl_buf_puts(&got, res ? PQgetvalue(res, 0, 1) : "(no row)");
        PQclear(res);
    } else if (!ran) {
        char line[256];

        zetl_wh_first_line(eb.msg, line, sizeof(line));
        zetl_buf_puts(why, line);
    }
    if (why->len == 0 && strcmp(got.data ? got.data : "", p->expect) != 0)
        zetl_buf_printf(why, "expected \"%s\", got \"%s\"", p->expect, got.data ? got.data : "");
    zetl_buf_release(&got);
    return why->len == 0;
}

static enum zetl_err probe(struct zetl_wh *wh, void *state, zetl_wh_probe_fn fn, void *arg,
                           int *failed, struct zetl_errbuf *eb)
{
    struct rs_state *rs = state;
    struct zetl_wh_rs_probe ps[ZETL_WH_RS_NPROBES];
    struct zetl_wh_rs_probe_files f = {0};
    struct probe_files pf = {0};
    struct zetl_errbuf s3eb;
    struct zetl_buf why;
    bool have_files = probe_files_put(rs, &pf, &s3eb) == ZETL_OK;
    size_t n;

    (void)eb;
    f.good_manifest = pf.urls[1];
    f.bad_manifest = pf.urls[3];
    f.bad_data = pf.urls[2];
    f.iam_role = rs->cfg->warehouse.iam_role;
    f.region = rs->cfg->archive.s3.region;
    n = zetl_wh_rs_probes(rs->cfg->warehouse.schema, have_files ? &f : NULL, ps);
    zetl_buf_init(&why, 0);
    for (size_t i = 0; i < n; i++) {
        bool ok = probe_one(wh, &ps[i], &why);

        *failed += !ok;
        fn(arg, ps[i].name, ok, why.data ? why.data : "");
    }
    if (!have_files) {
        zetl_buf_reset(&why);
        zetl_buf_printf(&why, "could not store the probe's files in the archive bucket: %s",
                        s3eb.msg);
        (*failed)++;
        fn(arg, "COPY ... CSV NULL AS '' and load errors (files in S3)", false, why.data);
    }
    zetl_buf_release(&why);
    zetl_wh_rs_probes_release(ps, n);
    probe_files_release(&pf);
    return ZETL_OK;
}

/* ---- types --------------------------------------------------------------------- */

/* COLUMNS reports format_type() text. */
static char *catalog_type(const PGresult *res, int row)
{
    return zetl_wh_rs_catalog_type(PQgetvalue(res, row, 1));
}

/* The batch's manifest type `to` as the Redshift type it makes, against column type `from`. */
static enum zetl_wh_type_change type_change(const char *from, const char *to)
{
    char *rs_to = zetl_wh_rs_type(to);
    enum zetl_wh_type_change ch = zetl_wh_rs_type_change(from, rs_to);

    free(rs_to);
    return ch;
}

/* ---- offsets and table state --------------------------------------------------------- */

char *zetl_wh_rs_begin_sql(const char *schema)
{
    struct zetl_buf b;

    /*
     * Redshift transactions are serializable and have no row locks: one
     * applier at a time holds the offsets table, so two appliers of a stream
     * serialize instead of failing with an isolation violation.
     */
    zetl_buf_init(&b, 0);
    zetl_buf_puts(&b, "BEGIN; LOCK ");
    zetl_sql_append_ident(&b, schema);
    zetl_buf_puts(&b, "._zetl_offsets");
    return zetl_wh_sql_take(&b);
}

/*
 * A bookkeeping upsert: an UPDATE of the row (part 0), then an INSERT when
 * there is none (part 1).  Both take the same parameters, and the LOCK of
 * the apply transaction (or of zetl_wh_note_progress) keeps a second row
 * from appearing in between.  Parameters are cast to their type: no
 * parameter types are sent.
 */
struct upsert {
    const char *table;   /* "_zetl_offsets", "_zetl_table_state" */
    const char *key;     /* the row's key condition */
    const char *set;     /* UPDATE ... SET <set> WHERE <key><only_if>; NULL: insert only */
    const char *only_if; /* "" or " AND ..." */
    const char *cols;    /* INSERT ... <cols> SELECT <vals> ... WHERE no row has <key> */
    const char *vals;
    int nparams;
};

#define STREAM_KEY "stream = CAST($1 AS VARCHAR(65535))"

/* Makes sure the stream's row exists, so that it can be read. */
static const struct upsert offset_lock = {
    .table = "_zetl_offsets",
    .key = STREAM_KEY,
    .cols = "(stream, last_lsn)",
    .vals = "CAST($1 AS VARCHAR(65535)), 0",
    .nparams = 1,
};

static const struct upsert offset_set = {
    .table = "_zetl_offsets",
    .key = STREAM_KEY,
    .set = "last_lsn = CAST($2 AS BIGINT), end_lsn = CASE WHEN end_lsn IS NULL OR end_lsn < "
           "CAST($3 AS BIGINT) THEN CAST($3 AS BIGINT) ELSE end_lsn END, batch = CAST($4 AS "
           "VARCHAR(65535)), applied_at = GETDATE()",
    .only_if = "",
    .cols = "(stream, last_lsn, end_lsn, batch, applied_at)",
    .vals = "CAST($1 AS VARCHAR(65535)), CAST($2 AS BIGINT), CAST($3 AS BIGINT), CAST($4 AS "
            "VARCHAR(65535)), GETDATE()",
    .nparams = 4,
};

static const struct upsert offset_progress = {
    .table = "_zetl_offsets",
    .key = STREAM_KEY,
    .set = "end_lsn = CAST($2 AS BIGINT)",
    .only_if = " AND (end_lsn IS NULL OR end_lsn < CAST($2 AS BIGINT))",
    .cols = "(stream, last_lsn, end_lsn)",
    .vals = "CAST($1 AS VARCHAR(65535)), 0, CAST($2 AS BIGINT)",
    .nparams = 2,
};

static const struct upsert state_applied = {
    .table = "_zetl_table_state",
    .key = "table_name = CAST($1 AS VARCHAR(65535)) AND stream = CAST($3 AS VARCHAR(65535))",
    .set = "last_lsn = CASE WHEN last_lsn IS NULL OR last_lsn < CAST($2 AS BIGINT) THEN "
           "CAST($2 AS BIGINT) ELSE last_lsn END, updated_at = GETDATE()",
    .only_if = "",
    .cols = "(stream, table_name, state, last_lsn, updated_at)",
    .vals = "CAST($3 AS VARCHAR(65535)), CAST($1 AS VARCHAR(65535)), 'active', CAST($2 AS "
            "BIGINT), GETDATE()",
    .nparams = 3,
};

static const struct upsert state_stop = {
    .table = "_zetl_table_state",
    .key = "table_name = CAST($1 AS VARCHAR(65535)) AND stream = CAST($4 AS VARCHAR(65535))",
    .set = "state = 'stopped', reason = CAST($2 AS VARCHAR(65535)), stopped_at_lsn = CAST($3 "
           "AS BIGINT), updated_at = GETDATE()",
    .only_if = "",
    .cols = "(stream, table_name, state, reason, stopped_at_lsn, updated_at)",
    .vals = "CAST($4 AS VARCHAR(65535)), CAST($1 AS VARCHAR(65535)), 'stopped', CAST($2 AS "
            "VARCHAR(65535)), CAST($3 AS BIGINT), GETDATE()",
    .nparams = 4,
};

/* The upsert that statement `which` is, or NULL for a query. */
static const struct upsert *upsert_of(enum zetl_wh_offsets_stmt which)
{
    switch (which) {
    case ZETL_WH_SQL_OFFSET_LOCK:
        return &offset_lock;
    case ZETL_WH_SQL_OFFSET_SET:
        return &offset_set;
    case ZETL_WH_SQL_OFFSET_PROGRESS:
        return &offset_progress;
    case ZETL_WH_SQL_STATE_APPLIED:
        return &state_applied;
    case ZETL_WH_SQL_STATE_STOP:
        return &state_stop;
    default:
        return NULL;
    }
}

/* Part `part` of upsert u into b; false past its last part. */
static bool upsert_part(struct zetl_buf *b, const char *schema, const struct upsert *u, size_t part)
{
    if (part == 0 && u->set != NULL) {
        zetl_buf_puts(b, "UPDATE ");
        zetl_sql_append_ident(b, schema);
        zetl_buf_printf(b, ".%s SET %s WHERE %s%s", u->table, u->set, u->key, u->only_if);
        return true;
    }
    if (part != (u->set != NULL ? 1 : 0))
        return false;
    zetl_buf_puts(b, "INSERT INTO ");
    zetl_sql_append_ident(b, schema);
    zetl_buf_printf(b, ".%s %s SELECT %s FROM (SELECT count(*) AS n FROM ", u->table, u->cols,
                    u->vals);
    zetl_sql_append_ident(b, schema);
    zetl_buf_printf(b, ".%s WHERE %s) AS _zetl_c WHERE _zetl_c.n = 0", u->table, u->key);
    return true;
}

/* The queries among the bookkeeping statements (one part each); returns their parameter count. */
static int query(struct zetl_buf *b, const char *schema, enum zetl_wh_offsets_stmt which)
{
    switch (which) {
    case ZETL_WH_SQL_STATE_GET:
        zetl_wh_sql_state_get(b, schema, "CAST($1 AS VARCHAR(65535))");
        return 1;
    case ZETL_WH_SQL_COLUMNS:
        /* format_type() text, and the primary key from pg_constraint (no pg_index keys). */
        zetl_buf_puts(b, "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
                         "coalesce(a.attnum = ANY(k.conkey), false) "
                         "FROM pg_catalog.pg_attribute a "
                         "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                         "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                         "LEFT JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid AND "
                         "k.contype = 'p' "
                         "WHERE n.nspname = CAST($1 AS VARCHAR(65535)) AND c.relname = "
                         "CAST($2 AS VARCHAR(65535)) AND a.attnum > 0 AND NOT a.attisdropped "
                         "ORDER BY a.attnum");
        return 2;
    default:
        zetl_buf_puts(b, which == ZETL_WH_SQL_OFFSET_GET ? "SELECT last_lsn, end_lsn FROM "
                                                         : "SELECT last_lsn FROM ");
        zetl_sql_append_ident(b, schema);
        zetl_buf_puts(b, "._zetl_offsets WHERE " STREAM_KEY);
        return 1;
    }
}

char *zetl_wh_rs_offsets_sql(const char *schema, enum zetl_wh_offsets_stmt which, size_t part,
                             int *nparams)
{
    const struct upsert *u = upsert_of(which);
    struct zetl_buf b;

    *nparams = 0;
    zetl_buf_init(&b, 0);
    if (u != NULL && upsert_part(&b, schema, u, part)) {
        *nparams = u->nparams;
    } else if (u == NULL && part == 0) {
        *nparams = query(&b, schema, which);
    } else {
        zetl_buf_release(&b);
        return NULL;
    }
    return zetl_wh_sql_take(&b);
}

const char *zetl_wh_rs_load_error_sql(bool sys_view)
{
    /*
     * No raw field values: row data stays out of the log.  session_id is
     * "the process identifier of the process running the copy"
     * (SYS_LOAD_ERROR_DETAIL), i.e. pg_backend_pid(); STL_LOAD_ERRORS's
     * session is not documented as the same, so it only orders: this
     * session's error first, then the latest for the file.
     */
    if (sys_view)
        return "SELECT trim(file_name), line_number, trim(column_name), trim(error_message) "
               "FROM sys_load_error_detail WHERE session_id = pg_backend_pid() AND "
               "trim(file_name) = CAST($1 AS VARCHAR(65535)) ORDER BY start_time DESC LIMIT 1";
    return "SELECT trim(filename), line_number, trim(colname), trim(err_reason) "
           "FROM stl_load_errors WHERE trim(filename) = CAST($1 AS VARCHAR(65535)) "
           "ORDER BY CASE WHEN session = pg_backend_pid() THEN 0 ELSE 1 END, starttime DESC "
           "LIMIT 1";
}

/*
 * "The following PostgreSQL system column names cannot be used as names of
 * user-defined columns" (Unsupported PostgreSQL features); of them only
 * oid is a legal column name in PostgreSQL 12 and later.
 */
static const char *const system_columns[] = {
    "oid", "tableoid", "xmin", "cmin", "xmax", "cmax", "ctid", NULL,
};

/* Redshift reports these as internal errors (XX000): a conflict, or S3 throttling. */
static const char *const retry_messages[] = {
    "Serializable isolation violation", "SlowDown", "Status 503", "Status 500", NULL,
};

const struct zetl_wh_dialect zetl_wh_rs_dialect = {
    .name = "redshift",
    .kind = ZETL_WH_REDSHIFT,
    .open = open_state,
    .release = release_state,
    /* Redshift folds quoted names to lower case unless told. */
    .session_sql = "SET enable_case_sensitive_identifier TO true",
    .retry_messages = retry_messages,
    .begin_sql = zetl_wh_rs_begin_sql,
    .offsets_sql = zetl_wh_rs_offsets_sql,
    /* Two statements under the applier's lock: never two rows of a stream. */
    .progress_in_txn = true,
    .catalog_type = catalog_type,
    .text_type = "VARCHAR(65535)",
    /* PostgreSQL schema names have at most 63 bytes. */
    .tenant_type = "VARCHAR(128)",
    .col_type = zetl_wh_rs_type,
    .col_def = zetl_wh_rs_col_def,
    .table_options = zetl_wh_rs_table_options,
    /* Every apply already holds the LOCK of zetl_wh_rs_begin_sql: appliers never overlap. */
    .ddl_lock_sql = NULL,
    .type_change = type_change,
    /* "You can't alter columns with UNIQUE, PRIMARY KEY, or FOREIGN KEY" (ALTER TABLE). */
    .key_type_fixed = true,
    .system_columns = system_columns,
    .stage = stage,
    .skip_applied_sql = zetl_wh_rs_skip_applied_sql,
    .stage_stats_sql = zetl_wh_rs_stage_stats_sql,
    .keyless_deletes_stop = "a table without a primary key cannot take deletes or updates "
                            "in Redshift (no row id to remove one of equal rows)",
    .replay_filter_sql = zetl_wh_rs_replay_filter_sql,
    .truncate_sql = zetl_wh_rs_truncate_sql,
    .purge_sql = zetl_wh_rs_purge_sql,
    .fill_prepare_sql = zetl_wh_rs_fill_prepare_sql,
    .fill_round_sql = zetl_wh_rs_fill_round_sql,
    .merge_sql = zetl_wh_rs_merge_sql,
    .drop_stage_sql = zetl_wh_rs_drop_stage_sql,
    .explain_failure = explain_failure,
    .probe = probe,
};
