/* Lost slots, tenants moved between slot groups, unused zetl slots; zetl slots. */
#include "replicator/slots.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sqlquote.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "sinks/warehouse/wh.h"
#include "transforms/transform.h"

#define EXIT_JOB 1
#define EXIT_USAGE 2
#define MOVED_REPORT_MAX 10 /* moved schemas named one by one; the rest are counted */

/* One zetl name on the source: a group of the plan, an existing slot, publication, or all. */
struct slot_row {
    char *name; /* owned */
    int index;
    const struct zetl_source_group *grp; /* borrowed from the plan; NULL when not in it */
    bool has_slot;                       /* a slot of this name in this database */
    bool other_db;                       /* a slot of this name that is not one of ours */
    bool has_pub;
    bool invalidated;
    char reason[200]; /* why it is invalidated */
    int active_pid;
    char confirmed[32]; /* confirmed_flush_lsn */
    char retained[32];  /* WAL the slot holds, pg_size_pretty */
};

struct slot_rows {
    struct slot_row *items; /* owned */
    size_t n;
};

static void rows_release(struct slot_rows *rows)
{
    for (size_t i = 0; i < rows->n; i++)
        free(rows->items[i].name);
    free(rows->items);
    rows->items = NULL;
    rows->n = 0;
}

static struct slot_row *rows_add(struct slot_rows *rows, const char *name, size_t prefix_len)
{
    struct slot_row *r;

    rows->items = zetl_realloc(rows->items, (rows->n + 1) * sizeof(*rows->items));
    r = &rows->items[rows->n++];
    memset(r, 0, sizeof(*r));
    r->name = zetl_strdup(name);
    r->index = atoi(name + prefix_len + 1);
    return r;
}

static void copy_text(char *out, size_t outsz, const char *s)
{
    snprintf(out, outsz, "%s", s);
}

/* The zetl slots and publications of this database, and the plan's groups. */
static enum zetl_err read_rows(PGconn *conn, const struct zetl_config *cfg,
                               const struct zetl_source_plan *plan, struct slot_rows *rows,
                               struct zetl_errbuf *eb)
{
    char pattern[128];
    const char *params[1] = {pattern};
    size_t plen = strlen(cfg->source.slot);
    PGresult *res;
    enum zetl_err err;

    /* source.slot is [a-z0-9_]: nothing in it is special in a regular expression. */
    snprintf(pattern, sizeof(pattern), "^%s_[0-9]+$", cfg->source.slot);
    err = zetl_source_exec(
        conn,
        "SELECT n.name, s.slot_name IS NOT NULL AND s.database IS NOT DISTINCT FROM "
        "current_database() AND s.plugin IS NOT DISTINCT FROM 'pgoutput', "
        "s.slot_name IS NOT NULL AND (s.database IS DISTINCT FROM current_database() OR "
        "s.plugin IS DISTINCT FROM 'pgoutput'), p.pubname IS NOT NULL, "
        "coalesce(s.wal_status, ''), coalesce(to_jsonb(s)->>'conflicting', 'false'), "
        "coalesce(to_jsonb(s)->>'invalidation_reason', ''), coalesce(s.active_pid, 0), "
        "coalesce(s.confirmed_flush_lsn::text, ''), coalesce(pg_size_pretty(pg_wal_lsn_diff("
        "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() "
        "END, s.restart_lsn)), 'no') "
        "FROM (SELECT slot_name::text AS name FROM pg_replication_slots UNION "
        "SELECT pubname::text FROM pg_publication) n "
        "LEFT JOIN pg_replication_slots s ON s.slot_name = n.name "
        "LEFT JOIN pg_publication p ON p.pubname = n.name "
        "WHERE n.name ~ $1 ORDER BY length(n.name), n.name",
        1, params, &res, eb);
    if (err) {
        zetl_err_prefix(eb, "could not list the replication slots and publications");
        return err;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        struct slot_row *r = rows_add(rows, PQgetvalue(res, i, 0), plen);
        r->has_slot = PQgetvalue(res, i, 1)[0] == 't';
        r->other_db = PQgetvalue(res, i, 2)[0] == 't';
        r->has_pub = PQgetvalue(res, i, 3)[0] == 't';
        r->active_pid = atoi(PQgetvalue(res, i, 7));
        copy_text(r->confirmed, sizeof(r->confirmed), PQgetvalue(res, i, 8));
        copy_text(r->retained, sizeof(r->retained), PQgetvalue(res, i, 9));
        if (!r->has_slot)
            continue;
        if (strcmp(PQgetvalue(res, i, 4), "lost") == 0) {
            r->invalidated = true;
            copy_text(r->reason, sizeof(r->reason),
                      "wal_status is \"lost\": the server removed WAL the slot still needed "
                      "(max_slot_wal_keep_size)");
        } else if (strcmp(PQgetvalue(res, i, 5), "true") == 0) {
            r->invalidated = true;
            copy_text(r->reason, sizeof(r->reason), "it conflicted with recovery");
        } else if (PQgetvalue(res, i, 6)[0] != '\0') {
            r->invalidated = true;
            snprintf(r->reason, sizeof(r->reason), "invalidation_reason is \"%s\"",
                     PQgetvalue(res, i, 6));
        }
    }
    PQclear(res);
    for (size_t g = 0; g < plan->ngroups; g++) {
        struct slot_row *r = NULL;
        for (size_t i = 0; i < rows->n && r == NULL; i++)
            if (strcmp(rows->items[i].name, plan->groups[g].name) == 0)
                r = &rows->items[i];
        if (r == NULL)
            r = rows_add(rows, plan->groups[g].name, plen);
        r->grp = &plan->groups[g];
    }
    return ZETL_OK;
}

/* What zetl consumed from a stream: the archive's newest batch, the warehouse offset. */
struct consumed {
    struct zetl_archive *ar; /* borrowed, or NULL */
    struct zetl_wh *wh;      /* owned, opened on first need; NULL without a warehouse */
    bool wh_tried;
};

static enum zetl_err read_consumed(struct consumed *c, const struct zetl_config *cfg,
                                   const char *stream, uint64_t *archived, uint64_t *applied,
                                   struct zetl_errbuf *eb)
{
    uint64_t last = 0, end = 0;
    enum zetl_err err;

    *archived = *applied = 0;
    if (c->ar != NULL) {
        struct zetl_strlist names = {NULL, 0};
        /* A listing, not zetl_archive_last_lsn: that one tidies up leftovers, and a
         * zetl run may be writing next to `zetl check` or `zetl slots`. */
        if ((err = zetl_archive_list(c->ar, stream, 0, &names, eb)) != ZETL_OK) {
            zetl_err_prefix(eb, "stream %s: could not read the archive", stream);
            return err;
        }
        /* "<first_lsn>-<last_lsn>", 16 hex digits each, oldest first. */
        if (names.n > 0 && strlen(names.items[names.n - 1]) == 33 &&
            !zetl_lsn_from_hex16(names.items[names.n - 1] + 17, archived))
            *archived = 0;
        if (names.n > 0 && *archived == 0)
            *archived = 1; /* a batch whose name does not parse still means consumed */
        zetl_strlist_release(&names);
    }
    if (cfg->warehouse.kind == ZETL_WH_NONE)
        return ZETL_OK;
    if (!c->wh_tried) {
        c->wh_tried = true;
        if ((err = zetl_wh_open(cfg, &c->wh, eb)) != ZETL_OK) {
            zetl_err_prefix(eb, "could not open the warehouse");
            return err;
        }
    }
    if (c->wh == NULL)
        return ZETL_OK;
    if ((err = zetl_wh_offset(c->wh, stream, &last, &end, eb)) != ZETL_OK) {
        zetl_err_prefix(eb, "stream %s: could not read the warehouse offset", stream);
        return err;
    }
    *applied = end > last ? end : last;
    return ZETL_OK;
}

/* "a", "b", "c" and 12 more */
static void schemas_text(const struct zetl_source_group *g, struct zetl_buf *b)
{
    size_t shown = g->nschemas < 5 ? g->nschemas : 5;

    for (size_t i = 0; i < shown; i++)
        zetl_buf_printf(b, "%s\"%s\"", i ? ", " : "", g->schemas[i]);
    if (g->nschemas > shown)
        zetl_buf_printf(b, " and %zu more", g->nschemas - shown);
}

static enum zetl_err inspect_lost(const struct zetl_config *cfg, const struct slot_row *r,
                                  struct consumed *c, struct zetl_buf *msg, bool *lost,
                                  struct zetl_errbuf *eb)
{
    uint64_t archived = 0, applied = 0;
    enum zetl_err err;

    *lost = false;
    if (r->other_db || (r->has_slot && !r->invalidated))
        return ZETL_OK;
    if ((err = read_consumed(c, cfg, r->name, &archived, &applied, eb)) != ZETL_OK)
        return err;
    if (!r->has_slot && archived == 0 && applied == 0)
        return ZETL_OK; /* a first start: the slot is created */
    *lost = true;
    zetl_buf_reset(msg);
    if (r->has_slot)
        zetl_buf_printf(msg, "replication slot \"%s\" is invalidated (%s)", r->name, r->reason);
    else
        zetl_buf_printf(
            msg, "replication slot \"%s\" does not exist, but zetl has consumed from it", r->name);
    if (archived || applied) {
        zetl_buf_puts(msg, r->has_slot ? "; zetl has consumed from it up to" : " up to");
        if (archived)
            zetl_buf_printf(msg, " commit lsn " ZETL_LSN_FMT " (archive)", ZETL_LSN_ARGS(archived));
        if (applied)
            zetl_buf_printf(msg, "%s lsn " ZETL_LSN_FMT " (warehouse offset)",
                            archived ? " and" : "", ZETL_LSN_ARGS(applied));
        zetl_buf_puts(msg, ": the changes committed since then to its tenant schemas (");
        schemas_text(r->grp, msg);
        zetl_buf_printf(msg,
                        ") are lost to zetl, and it does not recreate the slot over the gap; to "
                        "recover, follow \"A replication slot was lost\" in docs/operations.md "
                        "(set the archive and warehouse offset of stream %s aside, start zetl, "
                        "re-snapshot those tenants)",
                        r->name);
    } else {
        zetl_buf_printf(msg,
                        "; zetl has consumed nothing from it yet: drop it (SELECT "
                        "pg_drop_replication_slot('%s')) and start again",
                        r->name);
    }
    return ZETL_OK;
}

/* Existing zetl publications that publish a schema the plan puts in another group. */
static enum zetl_err inspect_moved(PGconn *conn, const struct zetl_config *cfg,
                                   const struct zetl_source_plan *plan,
                                   void (*report)(void *, enum zetl_slot_finding, const char *),
                                   void *arg, size_t *nmoved, struct zetl_errbuf *eb)
{
    char pattern[128];
    const char *params[1] = {pattern};
    size_t plen = strlen(cfg->source.slot);
    struct zetl_buf msg;
    PGresult *res;
    enum zetl_err err;

    *nmoved = 0;
    snprintf(pattern, sizeof(pattern), "^%s_[0-9]+$", cfg->source.slot);
    err = zetl_source_exec(
        conn,
        plan->server_version >= 150000
            ? "SELECT pubname::text, schemaname::text FROM pg_publication_tables "
              "WHERE pubname ~ $1 UNION SELECT p.pubname::text, n.nspname::text "
              "FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid "
              "JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname ~ $1 ORDER BY 2, 1"
            : "SELECT DISTINCT pubname::text, schemaname::text FROM pg_publication_tables "
              "WHERE pubname ~ $1 ORDER BY 2, 1",
        1, params, &res, eb);
    if (err) {
        zetl_err_prefix(eb, "could not list the schemas of the zetl publications");
        return err;
    }
    zetl_buf_init(&msg, 0);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *pub = PQgetvalue(res, i, 0);
        const char *schema = PQgetvalue(res, i, 1);
        int old_index = atoi(pub + plen + 1);
        int new_index;

        if (!zetl_transform_schema_selected(cfg, schema))
            continue; /* no longer a tenant: the publication stops publishing it */
        new_index = zetl_source_group_of(schema, cfg->source.slot_groups);
        if (new_index == old_index)
            continue;
        if (++*nmoved > MOVED_REPORT_MAX)
            continue;
        zetl_buf_reset(&msg);
        zetl_buf_printf(&msg,
                        "tenant schema \"%s\" is streamed through slot group %d (publication "
                        "\"%s\"), but with source.slot_groups = %d the configuration assigns it "
                        "to slot group %d (\"%s_%d\"): moving a tenant between slots loses its "
                        "changes in flight and leaves the old slot holding WAL; restore the "
                        "previous source.slot_groups and source.tenants.schemas, or move the "
                        "tenants as described in \"Changing source.slot_groups\" in "
                        "docs/operations.md (zetl slots regroup)",
                        schema, old_index, pub, cfg->source.slot_groups, new_index,
                        cfg->source.slot, new_index);
        report(arg, ZETL_SLOT_MOVED, msg.data);
    }
    PQclear(res);
    if (*nmoved > MOVED_REPORT_MAX) {
        zetl_buf_reset(&msg);
        zetl_buf_printf(&msg, "%zu more tenant schema(s) would move to another slot group",
                        *nmoved - MOVED_REPORT_MAX);
        report(arg, ZETL_SLOT_MOVED, msg.data);
    }
    zetl_buf_release(&msg);
    return ZETL_OK;
}

static bool row_unused(const struct slot_row *r)
{
    return r->grp == NULL && (r->has_slot || r->has_pub);
}

static void unused_text(const struct zetl_config *cfg, const struct slot_row *r,
                        struct zetl_buf *msg)
{
    zetl_buf_reset(msg);
    if (r->has_slot)
        zetl_buf_printf(msg, "replication slot \"%s\"%s is not used by the configuration", r->name,
                        r->has_pub ? " (and its publication)" : "");
    else
        zetl_buf_printf(msg, "publication \"%s\" is not used by the configuration", r->name);
    if (r->index >= cfg->source.slot_groups)
        zetl_buf_printf(msg, " (source.slot_groups is %d)", cfg->source.slot_groups);
    else
        zetl_buf_printf(msg, " (no tenant schema falls in slot group %d)", r->index);
    if (r->has_slot)
        zetl_buf_printf(msg, " and retains %s of WAL", r->retained);
    zetl_buf_printf(msg, "; drop it with zetl slots drop-unused --config %s", cfg->path);
}

enum zetl_err zetl_slots_inspect(PGconn *conn, const struct zetl_config *cfg,
                                 const struct zetl_source_plan *plan, struct zetl_archive *ar,
                                 void (*report)(void *arg, enum zetl_slot_finding kind,
                                                const char *msg),
                                 void *arg, size_t *blocking, struct zetl_errbuf *eb)
{
    struct slot_rows rows = {NULL, 0};
    struct consumed c = {ar, NULL, false};
    struct zetl_buf msg;
    size_t nblocking = 0, nmoved = 0;
    enum zetl_err err;

    zetl_buf_init(&msg, 0);
    if ((err = read_rows(conn, cfg, plan, &rows, eb)) != ZETL_OK)
        goto fail;
    for (size_t i = 0; i < rows.n; i++) {
        const struct slot_row *r = &rows.items[i];
        bool lost;

        if (r->grp == NULL)
            continue;
        if ((err = inspect_lost(cfg, r, &c, &msg, &lost, eb)) != ZETL_OK)
            goto fail;
        if (lost) {
            nblocking++;
            report(arg, ZETL_SLOT_LOST, msg.data);
        }
    }
    if ((err = inspect_moved(conn, cfg, plan, report, arg, &nmoved, eb)) != ZETL_OK)
        goto fail;
    nblocking += nmoved;
    for (size_t i = 0; i < rows.n; i++) {
        if (!row_unused(&rows.items[i]))
            continue;
        unused_text(cfg, &rows.items[i], &msg);
        report(arg, ZETL_SLOT_UNUSED, msg.data);
    }
    if (blocking)
        *blocking = nblocking;
fail:
    zetl_wh_free(c.wh);
    zetl_buf_release(&msg);
    rows_release(&rows);
    return err;
}

static void log_finding(void *arg, enum zetl_slot_finding kind, const char *msg)
{
    (void)arg;
    zetl_log(kind == ZETL_SLOT_UNUSED ? ZETL_LOG_WARNING : ZETL_LOG_FATAL, "%s", msg);
}

enum zetl_err zetl_slots_preflight(PGconn *conn, const struct zetl_config *cfg,
                                   const struct zetl_source_plan *plan, struct zetl_archive *ar,
                                   struct zetl_errbuf *eb)
{
    size_t blocking = 0;
    enum zetl_err err = zetl_slots_inspect(conn, cfg, plan, ar, log_finding, NULL, &blocking, eb);

    if (err)
        return err;
    if (blocking)
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "nothing was created or changed on the source: %zu problem(s) with "
                            "the replication slots above (see docs/operations.md)",
                            blocking);
    return ZETL_OK;
}

/* ---- zetl slots ---- */

struct cmd_findings {
    size_t lost, moved;
};

static void print_finding(void *arg, enum zetl_slot_finding kind, const char *msg)
{
    struct cmd_findings *f = arg;

    if (kind == ZETL_SLOT_UNUSED)
        return; /* the commands say what they drop */
    if (kind == ZETL_SLOT_LOST)
        f->lost++;
    else
        f->moved++;
    fprintf(stderr, "error: %s\n", msg);
}

/* Drops every zetl slot and publication of this database the plan does not use. */
static enum zetl_err drop_unused(PGconn *conn, const struct zetl_config *cfg,
                                 const struct zetl_source_plan *plan, size_t *ndropped,
                                 struct zetl_errbuf *eb)
{
    struct slot_rows rows = {NULL, 0};
    enum zetl_err err;

    *ndropped = 0;
    if ((err = read_rows(conn, cfg, plan, &rows, eb)) != ZETL_OK)
        return err;
    for (size_t i = 0; i < rows.n && err == ZETL_OK; i++) {
        const struct slot_row *r = &rows.items[i];
        const char *params[1] = {r->name};

        if (!row_unused(r))
            continue;
        if (r->has_slot && r->active_pid != 0) {
            err = zetl_err_set(eb, ZETL_ERR_FATAL,
                               "replication slot \"%s\" is in use by PID %d: stop the process "
                               "streaming from it (a zetl with an older configuration?) first",
                               r->name, r->active_pid);
            break;
        }
        if (r->has_slot) {
            err =
                zetl_source_exec(conn, "SELECT pg_drop_replication_slot($1)", 1, params, NULL, eb);
            if (err) {
                zetl_err_prefix(eb, "could not drop replication slot \"%s\"", r->name);
                break;
            }
            printf("dropped replication slot \"%s\" (it retained %s of WAL)\n", r->name,
                   r->retained);
        }
        if (r->has_pub) {
            char *q = zetl_sql_quote_ident(r->name);
            char sql[256];
            snprintf(sql, sizeof(sql), "DROP PUBLICATION IF EXISTS %s", q);
            free(q);
            if ((err = zetl_source_exec(conn, sql, 0, NULL, NULL, eb)) != ZETL_OK) {
                zetl_err_prefix(eb, "could not drop publication \"%s\"", r->name);
                break;
            }
            printf("dropped publication \"%s\"\n", r->name);
        }
        ++*ndropped;
    }
    rows_release(&rows);
    return err;
}

int zetl_cmd_slots(const struct zetl_config *cfg, const char *sub)
{
    struct zetl_source_plan plan = {0};
    struct zetl_archive *ar = NULL;
    struct cmd_findings f = {0, 0};
    struct zetl_errbuf eb;
    PGconn *conn = NULL;
    enum zetl_err err;
    size_t ndropped = 0;
    bool regroup;
    int rc = EXIT_JOB;

    if (sub == NULL || (strcmp(sub, "drop-unused") != 0 && strcmp(sub, "regroup") != 0)) {
        fprintf(stderr, "zetl slots: expected drop-unused or regroup%s%s%s\n",
                sub ? ", got \"" : "", sub ? sub : "", sub ? "\"" : "");
        return EXIT_USAGE;
    }
    regroup = strcmp(sub, "regroup") == 0;
    if ((err = zetl_source_connect(cfg->source.dsn, false, "zetl slots", &conn, &eb)) != ZETL_OK) {
        zetl_log(ZETL_LOG_FATAL, "could not connect to the source database: %s", eb.msg);
        return EXIT_JOB;
    }
    if ((err = zetl_source_discover(conn, cfg, &plan, &eb)) != ZETL_OK)
        goto fail;
    if (cfg->archive.url != NULL && (err = zetl_archive_open(cfg, &ar, &eb)) != ZETL_OK)
        goto fail;
    if ((err = zetl_slots_inspect(conn, cfg, &plan, ar, print_finding, &f, NULL, &eb)) != ZETL_OK)
        goto fail;
    /* drop-unused never resolves a move (that would lose the moved tenants' changes in
     * flight); regroup does, but never recreates a lost slot over its gap. */
    if (f.lost > 0 || (!regroup && f.moved > 0)) {
        zetl_log(ZETL_LOG_FATAL,
                 "zetl slots %s: nothing was changed on the source (see "
                 "docs/operations.md)",
                 sub);
        goto done;
    }
    if (regroup) {
        if ((err = zetl_source_setup(conn, cfg, &plan, &eb)) != ZETL_OK)
            goto fail;
        printf("publications and slots match the configuration (%zu slot group(s)); %zu tenant "
               "schema(s) moved\n",
               plan.ngroups, f.moved);
    }
    if ((err = drop_unused(conn, cfg, &plan, &ndropped, &eb)) != ZETL_OK)
        goto fail;
    if (ndropped == 0)
        printf("no unused zetl replication slot or publication\n");
    rc = 0;
    goto done;

fail:
    zetl_log(ZETL_LOG_FATAL, "zetl slots %s: %s", sub, eb.msg);
done:
    zetl_archive_free(ar);
    zetl_source_plan_release(&plan);
    PQfinish(conn);
    return rc;
}
