/*
 * zetl verify: source and warehouse compared per tenant and table, at a
 * consistent point.  It first waits until every stream's warehouse offset has
 * reached the source's WAL position at start, or its slot (when zetl is not
 * running) has nothing published left to send up to there; otherwise it
 * reports how far behind the warehouse is.  Then it compares row counts and an order-independent
 * hash of the source columns; for a table that differs it lists up to 10 differing keys.
 *
 * The hash of a table is the sum over its rows of the first 60 bits of
 * md5(ROW(columns)::text), so both sides compute it in SQL and only numbers
 * cross the wire.  Columns changed by transforms.clean are left out: their
 * values differ from the source by design.
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

struct table_cols {
    struct zetl_buf row;  /* ROW(...) expression over the compared columns */
    struct zetl_buf key;  /* ROW(...) over the primary key columns, empty when none */
    struct zetl_buf keyn; /* "(a, b)" names of the key columns, for the report */
    size_t skipped;
};

static void table_cols_release(struct table_cols *tc)
{
    zetl_buf_release(&tc->row);
    zetl_buf_release(&tc->key);
    zetl_buf_release(&tc->keyn);
}

/* Reads the source columns of schema.table and builds the compared expressions. */
static bool source_columns(PGconn *src, const struct zetl_config *cfg, const char *schema,
                           const char *table, struct table_cols *tc)
{
    const char *params[2] = {schema, table};
    PGresult *res = run(src,
                        "SELECT a.attname, coalesce((SELECT true FROM pg_index i WHERE "
                        "i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY(i.indkey)), "
                        "false) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN "
                        "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND "
                        "c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                        2, params, "read source columns");
    size_t nrow = 0, nkey = 0;

    zetl_buf_init(&tc->row, 0);
    zetl_buf_init(&tc->key, 0);
    zetl_buf_init(&tc->keyn, 0);
    tc->skipped = 0;
    if (res == NULL)
        return false;
    zetl_buf_puts(&tc->row, "ROW(");
    for (int i = 0; i < PQntuples(res); i++) {
        const char *col = PQgetvalue(res, i, 0);
        char *q = zetl_sql_quote_ident(col);
        if (PQgetvalue(res, i, 1)[0] == 't') {
            zetl_buf_printf(&tc->key, "%s%s", nkey ? ", " : "ROW(", q);
            zetl_buf_printf(&tc->keyn, "%s%s", nkey ? ", " : "(", col);
            nkey++;
        }
        if (column_cleaned(cfg, table, col)) {
            tc->skipped++;
        } else {
            zetl_buf_printf(&tc->row, "%s%s", nrow ? ", " : "", q);
            nrow++;
        }
        free(q);
    }
    PQclear(res);
    zetl_buf_puts(&tc->row, nrow ? ")" : "NULL)");
    if (nkey) {
        zetl_buf_puts(&tc->key, ")");
        zetl_buf_puts(&tc->keyn, ")");
    }
    return true;
}

/* Count and hash of a relation (FROM clause text) with an optional filter. */
static bool count_and_hash(PGconn *conn, const char *from, const char *rowexpr, const char *tenant,
                           const char *where, long long *count, char hash[64])
{
    struct zetl_buf sql;
    const char *params[1] = {tenant};
    PGresult *res;

    zetl_buf_init(&sql, 0);
    zetl_buf_printf(&sql,
                    "SELECT count(*), coalesce(sum(('x' || substr(md5(%s::text), 1, 15))::bit(60)"
                    "::bigint::numeric), 0)::text FROM %s%s",
                    rowexpr, from, where);
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
    zetl_buf_printf(&q1, "SELECT md5(%s::text) k, %s::text, md5(%s::text) FROM %s ORDER BY 1",
                    tc->key.data, tc->key.data, tc->row.data, src_from);
    zetl_buf_printf(&q2, "SELECT md5(%s::text) k, %s::text, md5(%s::text) FROM %s%s ORDER BY 1",
                    tc->key.data, tc->key.data, tc->row.data, wh_from, where);
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
static int compare_table(PGconn *src, PGconn *wh, const struct zetl_config *cfg, const char *schema,
                         const char *table, bool wh_table_exists)
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
    if (!source_columns(src, cfg, schema, table, &tc))
        goto done;
    zetl_buf_printf(&src_from, "%s.%s", qs, qt);
    zetl_buf_printf(&wh_from, "%s.%s", qws, qt);
    zetl_buf_printf(&where, " WHERE %s = $1", qtc);
    if (cfg->warehouse.deletes == ZETL_DELETES_SOFT)
        zetl_buf_puts(&where, " AND NOT _zetl_deleted");
    else if (cfg->warehouse.deletes == ZETL_DELETES_HISTORY)
        zetl_buf_puts(&where, " AND _zetl_valid_to IS NULL");

    if (!count_and_hash(src, src_from.data, tc.row.data, schema, "", &sc, sh))
        goto done;
    if (wh_table_exists &&
        !count_and_hash(wh, wh_from.data, tc.row.data, schema, where.data, &wc, whh))
        goto done;
    rc = sc != wc || strcmp(sh, whh) != 0;
    printf("%-24s %-24s source %9lld  warehouse %9lld  %s\n", schema, table, sc, wc,
           rc ? "DIFFERENT" : "ok");
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
                int d = compare_table(src, wh, cfg, schema, table,
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
