/* zetl check: preflight of the source (and warehouse) before replication starts. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/mem.h"
#include "replicator/commands.h"
#include "replicator/slots.h"
#include "replicator/source.h"
#include "sinks/kafka.h"
#include "sinks/warehouse/wh.h"
#include "transforms/transform.h"

struct findings {
    int errors;
    int warnings;
};

static void finding(struct findings *f, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void finding(struct findings *f, const char *level, const char *fmt, ...)
{
    va_list ap;

    if (strcmp(level, "error") == 0)
        f->errors++;
    else if (strcmp(level, "warning") == 0)
        f->warnings++;
    printf("%-7s  ", level);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* Tables in tenant schemas that cannot replicate UPDATE/DELETE, and other per-table findings. */
static void check_tables(PGconn *conn, const struct zetl_config *cfg,
                         const struct zetl_source_plan *plan, struct findings *f)
{
    size_t ntables = 0;

    for (size_t g = 0; g < plan->ngroups; g++) {
        for (size_t s = 0; s < plan->groups[g].nschemas; s++) {
            const char *schema = plan->groups[g].schemas[s];
            const char *params[1] = {schema};
            PGresult *res = PQexecParams(
                conn,
                "SELECT c.relname, c.relreplident, "
                "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), "
                "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident), "
                "has_table_privilege(c.oid, 'SELECT') "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
                "ORDER BY c.relname",
                1, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                finding(f, "error", "could not list tables of schema \"%s\": %s", schema,
                        PQresultErrorMessage(res));
                PQclear(res);
                continue;
            }
            for (int r = 0; r < PQntuples(res); r++) {
                const char *t = PQgetvalue(res, r, 0);
                char ident = PQgetvalue(res, r, 1)[0];
                bool pk = PQgetvalue(res, r, 2)[0] == 't';
                bool ri = PQgetvalue(res, r, 3)[0] == 't';
                bool sel = PQgetvalue(res, r, 4)[0] == 't';

                if (!zetl_transform_table_selected(cfg, t))
                    continue;
                ntables++;
                if (!sel)
                    finding(f, "error",
                            "table \"%s\".\"%s\": the source role has no SELECT "
                            "privilege on it",
                            schema, t);
                if (ident == 'n' || (ident == 'd' && !pk) || (ident == 'i' && !ri))
                    finding(f, "error",
                            "table \"%s\".\"%s\" has no primary key and replica identity %s: "
                            "UPDATE and DELETE on it fail on the source once it is published; "
                            "add a primary key or run ALTER TABLE ... REPLICA IDENTITY FULL",
                            schema, t,
                            ident == 'n'   ? "nothing"
                            : ident == 'i' ? "index (missing)"
                                           : "default");
                else if (!pk)
                    finding(f, "warning",
                            "table \"%s\".\"%s\" has no primary key: its rows are appended in "
                            "the warehouse (replica identity %s)",
                            schema, t, ident == 'f' ? "full" : "index");
            }
            PQclear(res);
        }
    }
    finding(f, "ok", "%zu table(s) selected in %s", ntables, "the tenant schemas");
}

static void slot_finding(void *arg, enum zetl_slot_finding kind, const char *msg)
{
    finding(arg, kind == ZETL_SLOT_UNUSED ? "warning" : "error", "source: %s", msg);
}

/*
 * Lost slots, moved tenants and unused slots (with the WAL they hold), as `zetl run` sees them.
 * Without a warehouse that answers (wh_failed: reported once, as the warehouse's), they are
 * judged by the archive alone, not reported again as a failure of the source.
 */
static void check_slots(PGconn *conn, const struct zetl_config *cfg,
                        const struct zetl_source_plan *plan, bool wh_failed, struct findings *f)
{
    struct zetl_archive *ar = NULL;
    struct zetl_errbuf eb;
    struct zetl_config nowh;
    int before = f->errors + f->warnings;

    if (wh_failed) {
        nowh = *cfg; /* a shallow copy, read only: owns nothing */
        nowh.warehouse.kind = ZETL_WH_NONE;
        cfg = &nowh;
    }

    if (cfg->archive.url != NULL && zetl_archive_open(cfg, &ar, &eb) != ZETL_OK) {
        finding(f, "warning", "archive: %s (lost slots are judged without it)", eb.msg);
        ar = NULL;
    }
    if (zetl_slots_inspect(conn, cfg, plan, ar, slot_finding, f, NULL, &eb) != ZETL_OK)
        finding(f, "error", "source: %s", eb.msg);
    else if (f->errors + f->warnings == before)
        finding(f, "ok", "source: replication slots and publications match the configuration");
    zetl_archive_free(ar);
}

/* The source's findings; conn is open.  The plan is filled for the caller to release. */
static void check_source(PGconn *conn, const struct zetl_config *cfg, struct zetl_source_plan *plan,
                         bool wh_failed, struct findings *f)
{
    struct zetl_errbuf eb;
    PGresult *res;

    finding(f, "ok", "source: connected (server version %d)", PQserverVersion(conn));
    /* The role before anything else: without it every later step fails for that reason. */
    if (zetl_source_preflight_role(conn, &eb) != ZETL_OK)
        finding(f, "error", "%s", eb.msg); /* "source role ... lacks ..." */
    else
        finding(f, "ok", "source: the role may replicate");
    if (zetl_source_preflight_server(conn, &eb) != ZETL_OK)
        finding(f, "error", "source: %s", eb.msg);
    else
        finding(f, "ok", "source: wal_level is logical");

    res = PQexec(conn, "SELECT current_setting('max_replication_slots')::int - "
                       "(SELECT count(*) FROM pg_replication_slots), "
                       "current_setting('max_wal_senders')::int");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        int free_slots = atoi(PQgetvalue(res, 0, 0));
        if (free_slots < cfg->source.slot_groups)
            finding(f, "warning",
                    "source: %d free replication slot(s), source.slot_groups is %d (existing "
                    "zetl slots are reused)",
                    free_slots, cfg->source.slot_groups);
    }
    PQclear(res);

    if (zetl_source_discover(conn, cfg, plan, &eb) != ZETL_OK) {
        finding(f, "error", "source: %s", eb.msg);
    } else {
        size_t n = 0;
        for (size_t g = 0; g < plan->ngroups; g++)
            n += plan->groups[g].nschemas;
        finding(f, "ok", "source: %zu tenant schema(s) in %zu slot group(s)", n, plan->ngroups);
        if (!plan->superuser && plan->server_version >= 150000)
            finding(f, "warning",
                    "source: the role is not a superuser: publications list tables one by one "
                    "(tables created later are picked up at the next start)");
        check_tables(conn, cfg, plan, f);
        check_slots(conn, cfg, plan, wh_failed, f);
    }
}

static void probe_finding(void *arg, const char *construct, bool ok, const char *detail)
{
    if (ok)
        finding(arg, "ok", "warehouse: %s", construct);
    else
        finding(arg, "error", "warehouse: %s: %s", construct, detail);
}

/* The warehouse's live probe (Redshift): one line per construct zetl's SQL relies on. */
static void check_probe(const struct zetl_config *cfg, struct findings *f)
{
    struct zetl_errbuf eb;
    int failed = 0;

    if (zetl_wh_probe(cfg, probe_finding, f, &failed, &eb) != ZETL_OK)
        finding(f, "error", "warehouse: could not run the probe: %s", eb.msg);
}

int zetl_cmd_check(const struct zetl_config *cfg)
{
    struct findings f = {0, 0};
    struct zetl_errbuf eb, wh_eb;
    struct zetl_source_plan plan = {0};
    PGconn *conn = NULL, *wh = NULL;
    enum zetl_err wh_err = ZETL_OK;
    int wh_version = 0;

    /*
     * The warehouse is tried first and reported after the source: the slot
     * inspection reads its offsets, and a warehouse that does not answer is
     * one finding of the warehouse's.
     */
    if (cfg->warehouse.kind != ZETL_WH_NONE &&
        (wh_err = zetl_source_connect(cfg->warehouse.dsn, false, "zetl check", &wh, &wh_eb)) ==
            ZETL_OK) {
        wh_version = PQserverVersion(wh);
        PQfinish(wh);
    }
    /* A source that does not answer still leaves the warehouse and Kafka to check. */
    if (zetl_source_connect(cfg->source.dsn, false, "zetl check", &conn, &eb) != ZETL_OK)
        finding(&f, "error", "source: could not connect: %s", eb.msg);
    else
        check_source(conn, cfg, &plan, wh_err != ZETL_OK, &f);

    if (cfg->warehouse.kind != ZETL_WH_NONE) {
        if (wh_err != ZETL_OK)
            finding(&f, "error", "warehouse: could not connect: %s", wh_eb.msg);
        else
            finding(&f, "ok", "warehouse: connected (server version %d)", wh_version);
        if (wh_err == ZETL_OK)
            check_probe(cfg, &f);
    }
    if (cfg->kafka.enabled) {
        if (zetl_kafka_check(cfg, &eb) != ZETL_OK)
            finding(&f, "error", "%s", eb.msg);
        else
            finding(&f, "ok", "kafka: brokers \"%s\" answer", cfg->kafka.brokers);
    }

    zetl_source_plan_release(&plan);
    if (conn)
        PQfinish(conn);
    printf("%d error(s), %d warning(s)\n", f.errors, f.warnings);
    return f.errors ? 1 : 0;
}
