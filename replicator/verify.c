/*
 * zetl verify: source and warehouse compared per tenant and table, at a
 * consistent point.  It first waits until every stream's warehouse offset has
 * reached the source's WAL position at start, or its slot (when zetl is not
 * running) has nothing published left to send up to there; otherwise it
 * reports how far behind the warehouse is.  Then it compares row counts and an order-independent
 * hash of the source columns; for a table that differs it lists up to 10 differing keys.
 *
 * The hash of a table is the sum over its rows of the first 60 bits of the
 * md5 of the row's text, so both sides compute it in SQL and only numbers
 * cross the wire.  Columns changed by transforms.clean are left out: their
 * values differ from the source by design.
 *
 * The row's text: on a PostgreSQL warehouse ROW(columns)::text, the same
 * on both sides.  On Redshift (or with ZETL_VERIFY_HASH=portable) a text
 * both compute alike from the source column's type: each value as
 * "<bytes>:<text>" or N for NULL, joined by '|'; dates and timestamps by
 * TO_CHAR (timestamptz in UTC), booleans as t/f, bytea as lower-case hex,
 * the rest as the text PostgreSQL sends and the warehouse stores.  json,
 * jsonb and arrays (SUPER in Redshift, which prints JSON its own way) are
 * not compared, and the report says so (docs/warehouse.md, "Verify on
 * Redshift").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/sqlquote.h"
#include "common/buf.h"
#include "common/glob.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "replicator/commands.h"
#include "replicator/source.h"
#include "transforms/transform.h"

#define VERIFY_WAIT_SECONDS 120
/* Polls (200 ms apart) a slot must be seen inactive before verify stops waiting for it. */
#define VERIFY_IDLE_POLLS 15
#define VERIFY_MAX_KEYS 10

/* True when some clean rule drops or rewrites table.column. */
static bool column_cleaned(const struct zetl_config *cfg, const char *table, const char *column)
{
    char qualified[512];

    snprintf(qualified, sizeof(qualified), "%s.%s", table, column);
    for (size_t i = 0; i < cfg->transforms.nclean; i++) {
        const struct zetl_clean_rule *r = &cfg->transforms.clean[i];
        for (size_t j = 0; j < r->columns.n; j++)
            if (zetl_glob_match(r->columns.items[j], qualified) ||
                zetl_glob_match(r->columns.items[j], column))
                return true;
    }
    return false;
}

static PGresult *run(PGconn *conn, const char *sql, int n, const char *const *params,
                     const char *what)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "zetl verify: could not %s: %s", what, PQresultErrorMessage(res));
        PQclear(res);
        return NULL;
    }
    return res;
}

/*
 * True when no zetl streams from the slot (inactive or missing): its
 * warehouse offset will not move, so there is nothing to wait for.  Only the
 * catalog is read: verify never peeks a production slot (that would decode
 * its whole backlog and hold the slot while the daemon wants it).
 */
static bool slot_inactive(PGconn *src, const char *slot)
{
    const char *params[1] = {slot};
    PGresult *res =
        PQexecParams(src, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", 1, NULL,
                     params, NULL, NULL, 0);
    bool inactive = PQresultStatus(res) == PGRES_TUPLES_OK &&
                    (PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "f") == 0);

    PQclear(res);
    return inactive;
}

/*
 * Waits until the warehouse has applied every stream up to `target`, or the
 * stream's slot is not in use (seen twice in a row: a reconnecting zetl
 * leaves it for a moment).  Returns true when nothing is left to wait for.
 */
static bool wait_for_warehouse(PGconn *src, PGconn *wh, const char *schema,
                               const struct zetl_source_plan *plan, uint64_t target)
{
    char *qs = zetl_sql_quote_ident(schema);
    struct zetl_buf sql;
    time_t deadline = time(NULL) + VERIFY_WAIT_SECONDS;
    int *idle = zetl_calloc(plan->ngroups ? plan->ngroups : 1, sizeof(*idle));
    bool ok = false;

    zetl_buf_init(&sql, 0);
    /* zetl load feeds the warehouse from Kafka: no stream offsets to wait for, only partitions'. */
    zetl_buf_printf(&sql, "SELECT 1 FROM %s._zetl_offsets WHERE stream LIKE 'kafka:%%' LIMIT 1",
                    qs);
    PGresult *kres = PQexec(wh, sql.data);
    bool via_kafka = PQresultStatus(kres) == PGRES_TUPLES_OK && PQntuples(kres) > 0;
    PQclear(kres);
    zetl_buf_reset(&sql);
    zetl_buf_printf(&sql, "SELECT end_lsn FROM %s._zetl_offsets WHERE stream = $1", qs);
    for (;;) {
        uint64_t worst = UINT64_MAX;
        const char *worst_stream = NULL;
        ok = true;
        for (size_t i = 0; i < plan->ngroups; i++) {
            const char *params[1] = {plan->groups[i].name};
            PGresult *res = PQexecParams(wh, sql.data, 1, NULL, params, NULL, NULL, 0);
            uint64_t end = 0;
            bool found = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
            if (found)
                end = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
            PQclear(res);
            if (end >= target)
                continue;
            if (!found && via_kafka) {
                if (idle[i] == 0)
                    printf("stream %s reaches the warehouse through zetl load (Kafka): comparing "
                           "what the warehouse holds\n",
                           plan->groups[i].name);
                idle[i] = VERIFY_IDLE_POLLS;
                continue;
            }
            /* Inactive for a few seconds: a zetl run that is starting is not mistaken. */
            idle[i] = slot_inactive(src, plan->groups[i].name) ? idle[i] + 1 : 0;
            if (idle[i] == VERIFY_IDLE_POLLS)
                printf("stream %s: no zetl streams from its slot; comparing what the warehouse "
                       "holds (applied up to " ZETL_LSN_FMT ")\n",
                       plan->groups[i].name, ZETL_LSN_ARGS(end));
            if (idle[i] >= VERIFY_IDLE_POLLS)
                continue;
            ok = false;
            if (end < worst) {
                worst = end;
                worst_stream = plan->groups[i].name;
            }
        }
        if (ok)
            break;
        if (time(NULL) >= deadline) {
            printf("warehouse is behind: stream %s has applied up to " ZETL_LSN_FMT
                   ", the source was at " ZETL_LSN_FMT " (%llu bytes of WAL behind); "
                   "is zetl running?\n",
                   worst_stream, ZETL_LSN_ARGS(worst), ZETL_LSN_ARGS(target),
                   (unsigned long long)(target - worst));
            break;
        }
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    zetl_buf_release(&sql);
    free(idle);
    free(qs);
    return ok;
}

/* How the two sides turn a row into the text that is hashed. */
struct hashing {
    bool portable; /* the warehouse-neutral text (Redshift), else ROW(...)::text */
    bool redshift; /* the warehouse speaks Redshift's functions */
};

struct table_cols {
    /* The row's and the key's text, as the source and as the warehouse compute them. */
    struct zetl_buf row, wrow;
    struct zetl_buf key, wkey;   /* empty when there is no primary key */
    struct zetl_buf keyd, wkeyd; /* the key's values as the report shows them */
    struct zetl_buf keyn;        /* "(a, b)" names of the key columns, for the report */
    size_t skipped;              /* columns transforms.clean changes */
    size_t untyped;              /* json and array columns the portable text leaves out */
};

static void table_cols_release(struct table_cols *tc)
{
    zetl_buf_release(&tc->row);
    zetl_buf_release(&tc->wrow);
    zetl_buf_release(&tc->key);
    zetl_buf_release(&tc->wkey);
    zetl_buf_release(&tc->keyd);
    zetl_buf_release(&tc->wkeyd);
    zetl_buf_release(&tc->keyn);
}

/*
 * One column's text in the portable form, for the source (PostgreSQL) and
 * for the warehouse; `type` is the source's type name (pg_type.typname) and
 * `category` its typcategory.  False when the column is not compared.
 */
static bool portable_value(const struct hashing *h, const char *q, const char *type, char category,
                           struct zetl_buf *src, struct zetl_buf *wh)
{
    struct zetl_buf *both[2] = {src, wh};

    if (category == 'A' || strcmp(type, "json") == 0 || strcmp(type, "jsonb") == 0)
        return false;
    for (int side = 0; side < 2; side++) {
        struct zetl_buf *b = both[side];
        bool source = side == 0;

        if (strcmp(type, "bool") == 0)
            zetl_buf_printf(b, "CASE WHEN %s THEN 't' WHEN NOT %s THEN 'f' END", q, q);
        else if (strcmp(type, "date") == 0)
            zetl_buf_printf(b, "TO_CHAR(%s, 'YYYY-MM-DD')", q);
        else if (strcmp(type, "timestamp") == 0)
            zetl_buf_printf(b, "TO_CHAR(%s, 'YYYY-MM-DD HH24:MI:SS.US')", q);
        else if (strcmp(type, "timestamptz") == 0)
            zetl_buf_printf(b, "TO_CHAR(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')", q);
        else if (strcmp(type, "bytea") == 0 && (source || !h->redshift))
            zetl_buf_printf(b, "encode(%s, 'hex')", q);
        else if (strcmp(type, "bytea") == 0)
            zetl_buf_printf(b, "LOWER(TO_HEX(%s))", q);
        else if (strcmp(type, "bpchar") == 0 && (source || !h->redshift))
            /* The padded text pgoutput sends (a cast to text would drop the blanks). */
            zetl_buf_printf(b, "CASE WHEN %s IS NOT NULL THEN concat(%s) END", q, q);
        else
            zetl_buf_printf(b, "CAST(%s AS VARCHAR(65535))", q);
    }
    return true;
}

/* Appends value text v (SQL) to a portable row text in b: "<bytes>:<v>" or N, '|' between. */
static void portable_append(struct zetl_buf *b, const char *v, size_t n)
{
    zetl_buf_printf(b, "%sCOALESCE(CAST(OCTET_LENGTH(%s) AS VARCHAR(20)) || ':' || %s, 'N')",
                    n ? " || '|' || " : "", v, v);
}

/* The SQL of the first 60 bits of md5(text) as a number both sides sum alike. */
static void hash60(struct zetl_buf *b, const char *text, bool redshift)
{
    if (redshift)
        zetl_buf_printf(b, "CAST(STRTOL(SUBSTRING(MD5(%s), 1, 15), 16) AS DECIMAL(38, 0))", text);
    else
        zetl_buf_printf(b, "('x' || substr(md5(%s), 1, 15))::bit(60)::bigint::numeric", text);
}

/* Reads the source columns of schema.table and builds the compared expressions. */
static bool source_columns(PGconn *src, const struct zetl_config *cfg, const struct hashing *h,
                           const char *schema, const char *table, struct table_cols *tc)
{
    const char *params[2] = {schema, table};
    PGresult *res = run(src,
                        "SELECT a.attname, coalesce((SELECT true FROM pg_index i WHERE "
                        "i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY(i.indkey)), "
                        "false), t.typname, t.typcategory FROM pg_attribute a JOIN pg_class c ON "
                        "c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace JOIN "
                        "pg_type t ON t.oid = a.atttypid WHERE n.nspname = $1 AND "
                        "c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                        2, params, "read source columns");
    struct zetl_buf sv, wv;
    size_t nrow = 0, nkey = 0;

    memset(tc, 0, sizeof(*tc));
    zetl_buf_init(&tc->row, 0);
    zetl_buf_init(&tc->wrow, 0);
    zetl_buf_init(&tc->key, 0);
    zetl_buf_init(&tc->wkey, 0);
    zetl_buf_init(&tc->keyd, 0);
    zetl_buf_init(&tc->wkeyd, 0);
    zetl_buf_init(&tc->keyn, 0);
    if (res == NULL)
        return false;
    zetl_buf_init(&sv, 0);
    zetl_buf_init(&wv, 0);
    if (!h->portable)
        zetl_buf_puts(&tc->row, "ROW(");
    for (int i = 0; i < PQntuples(res); i++) {
        const char *col = PQgetvalue(res, i, 0);
        char *q = zetl_sql_quote_ident(col);
        bool key = PQgetvalue(res, i, 1)[0] == 't';
        bool typed = true;

        zetl_buf_reset(&sv);
        zetl_buf_reset(&wv);
        if (h->portable)
            typed = portable_value(h, q, PQgetvalue(res, i, 2), PQgetvalue(res, i, 3)[0], &sv, &wv);
        if (key) {
            if (!h->portable) {
                zetl_buf_printf(&tc->key, "%s%s", nkey ? ", " : "ROW(", q);
            } else if (typed) {
                portable_append(&tc->key, sv.data, nkey);
                portable_append(&tc->wkey, wv.data, nkey);
                zetl_buf_printf(&tc->keyd, "%s%s", nkey ? " || ', ' || " : "", sv.data);
                zetl_buf_printf(&tc->wkeyd, "%s%s", nkey ? " || ', ' || " : "", wv.data);
            }
            zetl_buf_printf(&tc->keyn, "%s%s", nkey ? ", " : "(", col);
            nkey++;
        }
        if (column_cleaned(cfg, table, col)) {
            tc->skipped++;
        } else if (!typed) {
            tc->untyped++;
        } else if (h->portable) {
            portable_append(&tc->row, sv.data, nrow);
            portable_append(&tc->wrow, wv.data, nrow);
            nrow++;
        } else {
            zetl_buf_printf(&tc->row, "%s%s", nrow ? ", " : "", q);
            nrow++;
        }
        free(q);
    }
    PQclear(res);
    zetl_buf_release(&sv);
    zetl_buf_release(&wv);
    if (!h->portable) {
        zetl_buf_puts(&tc->row, nrow ? ")::text" : "NULL)::text");
        if (nkey)
            zetl_buf_puts(&tc->key, ")::text");
        zetl_buf_puts(&tc->wrow, tc->row.data);
        if (nkey) {
            zetl_buf_puts(&tc->wkey, tc->key.data);
            zetl_buf_puts(&tc->keyd, tc->key.data);
            zetl_buf_puts(&tc->wkeyd, tc->key.data);
        }
    } else if (nrow == 0) {
        zetl_buf_puts(&tc->row, "'N'");
        zetl_buf_puts(&tc->wrow, "'N'");
    }
    if (nkey)
        zetl_buf_puts(&tc->keyn, ")");
    return true;
}

/* Count and hash of a relation (FROM clause text) with an optional filter. */
static bool count_and_hash(PGconn *conn, const char *from, const char *rowtext, bool redshift,
                           const char *tenant, const char *where, long long *count, char hash[64])
{
    struct zetl_buf sql;
    const char *params[1] = {tenant};
    PGresult *res;

    zetl_buf_init(&sql, 0);
    zetl_buf_puts(&sql, "SELECT count(*), CAST(coalesce(sum(");
    hash60(&sql, rowtext, redshift);
    zetl_buf_printf(&sql, "), 0) AS VARCHAR(64)) FROM %s%s", from, where);
    res = run(conn, sql.data, where[0] ? 1 : 0, params, "compute a table hash");
    zetl_buf_release(&sql);
    if (res == NULL)
        return false;
    *count = atoll(PQgetvalue(res, 0, 0));
    snprintf(hash, 64, "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
    return true;
}

/*
 * Lists up to VERIFY_MAX_KEYS keys whose rows differ: both sides stream
 * (md5(key), key, md5(row)) ordered by md5(key), merged here in one pass.
 */
static void list_differences(PGconn *src, PGconn *wh, const char *src_from, const char *wh_from,
                             const char *tenant, const char *where, const struct table_cols *tc)
{
    struct zetl_buf q1, q2;
    const char *params[1] = {tenant};
    PGresult *a = NULL, *b = NULL;
    int i = 0, j = 0, shown = 0;

    if (tc->key.len == 0) {
        printf("    (no primary key: differing rows cannot be listed)\n");
        return;
    }
    zetl_buf_init(&q1, 0);
    zetl_buf_init(&q2, 0);
    zetl_buf_printf(&q1, "SELECT md5(%s) AS k, %s, md5(%s) FROM %s ORDER BY 1", tc->key.data,
                    tc->keyd.data, tc->row.data, src_from);
    zetl_buf_printf(&q2, "SELECT MD5(%s) AS k, %s, MD5(%s) FROM %s%s ORDER BY 1", tc->wkey.data,
                    tc->wkeyd.data, tc->wrow.data, wh_from, where);
    a = run(src, q1.data, 0, NULL, "list source keys");
    b = run(wh, q2.data, 1, params, "list warehouse keys");
    if (a == NULL || b == NULL)
        goto done;
    while ((i < PQntuples(a) || j < PQntuples(b)) && shown < VERIFY_MAX_KEYS) {
        int c = i >= PQntuples(a)   ? 1
                : j >= PQntuples(b) ? -1
                                    : strcmp(PQgetvalue(a, i, 0), PQgetvalue(b, j, 0));
        if (c < 0) {
            printf("    missing in warehouse: %s=%s\n", tc->keyn.data, PQgetvalue(a, i, 1));
            i++;
            shown++;
        } else if (c > 0) {
            printf("    not in source:        %s=%s\n", tc->keyn.data, PQgetvalue(b, j, 1));
            j++;
            shown++;
        } else {
            if (strcmp(PQgetvalue(a, i, 2), PQgetvalue(b, j, 2)) != 0) {
                printf("    values differ:        %s=%s\n", tc->keyn.data, PQgetvalue(a, i, 1));
                shown++;
            }
            i++;
            j++;
        }
    }
done:
    PQclear(a);
    PQclear(b);
    zetl_buf_release(&q1);
    zetl_buf_release(&q2);
}

/* Compares one tenant's table; returns 1 when different, 0 equal, -1 on error. */
static int compare_table(PGconn *src, PGconn *wh, const struct zetl_config *cfg,
                         const struct hashing *h, const char *schema, const char *table,
                         bool wh_table_exists)
{
    struct table_cols tc;
    struct zetl_buf src_from, wh_from, where;
    long long sc = 0, wc = 0;
    char sh[64] = "0", whh[64] = "0";
    char *qs = zetl_sql_quote_ident(schema), *qt = zetl_sql_quote_ident(table);
    char *qws = zetl_sql_quote_ident(cfg->warehouse.schema);
    char *qtc = zetl_sql_quote_ident(cfg->transforms.tenant_column);
    int rc = -1;

    zetl_buf_init(&src_from, 0);
    zetl_buf_init(&wh_from, 0);
    zetl_buf_init(&where, 0);
    if (!source_columns(src, cfg, h, schema, table, &tc))
        goto done;
    zetl_buf_printf(&src_from, "%s.%s", qs, qt);
    zetl_buf_printf(&wh_from, "%s.%s", qws, qt);
    zetl_buf_printf(&where, " WHERE %s = $1", qtc);
    if (cfg->warehouse.deletes == ZETL_DELETES_SOFT)
        zetl_buf_puts(&where, " AND NOT _zetl_deleted");
    else if (cfg->warehouse.deletes == ZETL_DELETES_HISTORY)
        zetl_buf_puts(&where, " AND _zetl_valid_to IS NULL");

    if (!count_and_hash(src, src_from.data, tc.row.data, false, schema, "", &sc, sh))
        goto done;
    if (wh_table_exists &&
        !count_and_hash(wh, wh_from.data, tc.wrow.data, h->redshift, schema, where.data, &wc, whh))
        goto done;
    rc = sc != wc || strcmp(sh, whh) != 0;
    printf("%-24s %-24s source %9lld  warehouse %9lld  %s\n", schema, table, sc, wc,
           rc ? "DIFFERENT" : "ok");
    if (tc.untyped > 0)
        printf("    %zu json or array column(s) not compared (their text differs by warehouse)\n",
               tc.untyped);
    if (rc && wh_table_exists)
        list_differences(src, wh, src_from.data, wh_from.data, schema, where.data, &tc);
    else if (rc)
        printf("    the warehouse has no table %s.%s\n", cfg->warehouse.schema, table);
done:
    table_cols_release(&tc);
    zetl_buf_release(&src_from);
    zetl_buf_release(&wh_from);
    zetl_buf_release(&where);
    free(qs);
    free(qt);
    free(qws);
    free(qtc);
    return rc;
}

static bool warehouse_has_table(PGconn *wh, const char *schema, const char *table)
{
    const char *params[2] = {schema, table};
    PGresult *res = run(wh,
                        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = $1 AND c.relname = $2",
                        2, params, "look up a warehouse table");
    bool found = res != NULL && PQntuples(res) > 0;

    PQclear(res);
    return found;
}

int zetl_cmd_verify(const struct zetl_config *cfg)
{
    struct zetl_errbuf eb;
    struct zetl_source_plan plan = {0};
    struct hashing h = {false, false};
    PGconn *src = NULL, *wh = NULL;
    uint64_t target = 0;
    int ntables = 0, ndiff = 0, rc = 1;

    if (cfg->warehouse.kind == ZETL_WH_NONE) {
        fprintf(stderr,
                "zetl verify: %s has no warehouse section: there is nothing to compare "
                "the source with\n",
                cfg->path);
        return 2;
    }
    if (zetl_source_connect(cfg->source.dsn, false, "zetl verify", &src, &eb) != ZETL_OK) {
        fprintf(stderr, "zetl verify: could not connect to the source database: %s\n", eb.msg);
        goto out;
    }
    if (zetl_source_connect(cfg->warehouse.dsn, false, "zetl verify", &wh, &eb) != ZETL_OK) {
        fprintf(stderr, "zetl verify: could not connect to the warehouse: %s\n", eb.msg);
        goto out;
    }
    h.redshift = cfg->warehouse.kind == ZETL_WH_REDSHIFT;
    h.portable = h.redshift || (getenv("ZETL_VERIFY_HASH") != NULL &&
                                strcmp(getenv("ZETL_VERIFY_HASH"), "portable") == 0);
    if (h.redshift) {
        /* Names keep their case only when the session says so, as zetl's apply does. */
        PGresult *res = run(wh, "SET enable_case_sensitive_identifier TO true", 0, NULL,
                            "make identifiers case-sensitive");

        if (res == NULL)
            goto out;
        PQclear(res);
    }
    if (zetl_source_discover(src, cfg, &plan, &eb) != ZETL_OK ||
        zetl_source_current_lsn(src, &target, &eb) != ZETL_OK) {
        fprintf(stderr, "zetl verify: %s\n", eb.msg);
        goto out;
    }
    printf("source at " ZETL_LSN_FMT "; waiting for the warehouse to apply it\n",
           ZETL_LSN_ARGS(target));
    if (!wait_for_warehouse(src, wh, cfg->warehouse.schema, &plan, target))
        goto out;

    for (size_t g = 0; g < plan.ngroups; g++) {
        for (size_t s = 0; s < plan.groups[g].nschemas; s++) {
            const char *schema = plan.groups[g].schemas[s];
            const char *params[1] = {schema};
            PGresult *res = run(src,
                                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON "
                                "n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN "
                                "('r', 'p') AND NOT c.relispartition ORDER BY 1",
                                1, params, "list source tables");
            if (res == NULL)
                goto out;
            for (int r = 0; r < PQntuples(res); r++) {
                const char *table = PQgetvalue(res, r, 0);
                if (!zetl_transform_table_selected(cfg, table))
                    continue;
                if (strncmp(table, "_zetl_", 6) == 0) {
                    /* The warehouse stops such a table at its first batch. */
                    printf("%-24s %-24s not replicated: table names starting with \"_zetl_\" "
                           "are reserved\n",
                           schema, table);
                    continue;
                }
                int d = compare_table(src, wh, cfg, &h, schema, table,
                                      warehouse_has_table(wh, cfg->warehouse.schema, table));
                if (d < 0) {
                    PQclear(res);
                    goto out;
                }
                ntables++;
                ndiff += d;
            }
            PQclear(res);
        }
    }
    if (ndiff == 0) {
        printf("verify: %d table(s) equal in source and warehouse\n", ntables);
        rc = 0;
    } else {
        printf("verify: %d of %d table(s) differ\n", ndiff, ntables);
    }
out:
    zetl_source_plan_release(&plan);
    if (src)
        PQfinish(src);
    if (wh)
        PQfinish(wh);
    return rc;
}
