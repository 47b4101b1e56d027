/*
 * Unit tests of the relation map (replicator/relmap.c: which relations are
 * captured, one plan per relation version, forgetting on reconnect, no
 * catalog work for relations that are not REPLICA IDENTITY FULL) and of the
 * dispatch table (replicator/dispatch.c: each message kind reaches its
 * handler, changes inside a stream block go to stream_data).
 */
#include "replicator/dispatch.h"
#include "replicator/relmap.h"
#include "tests/unit/tap.h"

#include <string.h>

#define LIST(...)                                                                                  \
    ((struct zetl_strlist){(char *[]){__VA_ARGS__},                                                \
                           sizeof((char *[]){__VA_ARGS__}) / sizeof(char *)})

static struct zetl_relcol cols[] = {{"id", 23, -1, true, NULL}, {"name", 25, -1, false, NULL}};

static struct zetl_relation rel(uint32_t relid, char *nsp, char *name, uint32_t version)
{
    struct zetl_relation r = {relid, nsp, name, 'd', 2, cols, version, NULL};
    return r;
}

static void test_relmap_plans(void)
{
    struct zetl_config cfg;
    struct zetl_relcache *rc = zetl_relcache_new();
    struct zetl_relmap *rm;
    struct zetl_relation users = rel(16384, "tenant_a", "users", 1);
    struct zetl_relation other = rel(16385, "public", "users", 1);
    struct zetl_relation logs = rel(16386, "tenant_a", "logs", 1);
    struct zetl_table_plan *p1, *p2;

    memset(&cfg, 0, sizeof(cfg));
    cfg.source.schemas = LIST("tenant_*");
    cfg.source.tables = LIST("users");
    rm = zetl_relmap_new(&cfg, "s", rc, NULL, 0);

    p1 = zetl_relmap_plan(rm, &users);
    CHECK(p1 != NULL);
    CHECK_STR(p1->tenant, "tenant_a");
    CHECK_STR(p1->table, "users");
    CHECK(p1->has_key);
    /* The same version: the same plan, not rebuilt per row. */
    CHECK(zetl_relmap_plan(rm, &users) == p1);
    /* Not a tenant schema, not a selected table: not captured. */
    CHECK(zetl_relmap_plan(rm, &other) == NULL);
    CHECK(zetl_relmap_plan(rm, &logs) == NULL);
    CHECK(zetl_relmap_plan(rm, &logs) == NULL);
    /* A new Relation message (ALTER TABLE): a new plan. */
    users.version = 2;
    users.ncols = 1;
    p2 = zetl_relmap_plan(rm, &users);
    CHECK(p2 != NULL && p2->ncols == 1);
    /* Many relations: the map grows and keeps every entry. */
    for (uint32_t i = 0; i < 500; i++) {
        struct zetl_relation r = rel(20000 + i, "tenant_b", "users", 1);
        CHECK(zetl_relmap_plan(rm, &r) != NULL);
    }
    CHECK(zetl_relmap_plan(rm, &users) == p2);
    zetl_relmap_clear(rm);
    users.ncols = 2;
    CHECK(zetl_relmap_plan(rm, &users) != NULL);
    CHECK(!zetl_relmap_pending(rm));
    CHECK(zetl_relmap_fd(rm) == -1);
    zetl_relmap_free(rm);
    zetl_relcache_free(rc);
}

/* Relations that are not REPLICA IDENTITY FULL never touch the catalog. */
static void test_relmap_keys_without_catalog(void)
{
    struct zetl_config cfg;
    struct zetl_relcache *rc = zetl_relcache_new();
    struct zetl_relmap *rm;
    struct zetl_relation users = rel(16384, "tenant_a", "users", 1);
    struct zetl_pgo_msg m;
    struct zetl_errbuf eb;

    memset(&cfg, 0, sizeof(cfg));
    rm = zetl_relmap_new(&cfg, "s", rc, NULL, 0);
    memset(&m, 0, sizeof(m));
    m.kind = ZETL_PGO_RELATION;
    m.u.relation.relid = 16384;
    m.u.relation.replident = 'd';
    CHECK(zetl_relmap_relation(rm, &m, false, &eb) == ZETL_OK);
    CHECK(zetl_relmap_relation(rm, &m, true, &eb) == ZETL_OK);
    CHECK(!zetl_relmap_pending(rm));
    CHECK(zetl_relmap_apply_keys(rm, &users, &eb) == ZETL_OK);
    CHECK(cols[0].key && !cols[1].key);
    CHECK(zetl_relmap_poll(rm, &eb) == ZETL_OK);
    zetl_relmap_free(rm);
    zetl_relcache_free(rc);
}

/* ---- dispatch ---- */

static char calls[512];

static void rec(const char *what)
{
    strcat(calls, what);
    strcat(calls, " ");
}

static enum zetl_err h_begin(void *a, uint64_t lsn, int64_t t, struct zetl_errbuf *eb)
{
    (void)a, (void)t, (void)eb;
    rec(lsn == 0x10 ? "begin" : "begin?");
    return ZETL_OK;
}
static enum zetl_err h_commit(void *a, uint64_t c, uint64_t e, struct zetl_errbuf *eb)
{
    (void)a, (void)eb;
    rec(c == 0x10 && e == 0x18 ? "commit" : "commit?");
    return ZETL_OK;
}
static enum zetl_err h_rel(void *a, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb)
{
    (void)a, (void)m, (void)eb;
    rec("relation");
    return ZETL_OK;
}
static enum zetl_err h_type(void *a, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb)
{
    (void)a, (void)m, (void)eb;
    rec("type");
    return ZETL_OK;
}
static enum zetl_err h_change(void *a, const struct zetl_pgo_msg *m, struct zetl_arena *ar,
                              struct zetl_errbuf *eb)
{
    char k[8] = {'c', 'h', 'a', 'n', 'g', 'e', (char)m->kind, 0};
    (void)a, (void)ar, (void)eb;
    rec(k);
    return ZETL_OK;
}
static enum zetl_err h_trunc(void *a, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb)
{
    (void)a, (void)m, (void)eb;
    rec("truncate");
    return ZETL_OK;
}
static enum zetl_err h_sstart(void *a, uint32_t xid, struct zetl_errbuf *eb)
{
    (void)a, (void)eb;
    rec(xid == 7 ? "sstart" : "sstart?");
    return ZETL_OK;
}
static enum zetl_err h_sstop(void *a, struct zetl_errbuf *eb)
{
    (void)a, (void)eb;
    rec("sstop");
    return ZETL_OK;
}
static enum zetl_err h_sdata(void *a, const struct zetl_pgo_msg *m, const uint8_t *raw, size_t len,
                             struct zetl_errbuf *eb)
{
    char k[8] = {'s', 'd', 'a', 't', 'a', (char)m->kind, 0};
    (void)a, (void)eb;
    rec(raw != NULL && len == 3 ? k : "sdata?");
    return ZETL_OK;
}
static enum zetl_err h_scommit(void *a, const struct zetl_pgo_msg *m, struct zetl_errbuf *eb)
{
    (void)a, (void)m, (void)eb;
    rec("scommit");
    return ZETL_OK;
}
static enum zetl_err h_sabort(void *a, uint32_t xid, uint32_t subxid, struct zetl_errbuf *eb)
{
    (void)a, (void)eb;
    rec(xid == 7 && subxid == 8 ? "sabort" : "sabort?");
    return ZETL_OK;
}

static const struct zetl_change_handlers handlers = {
    h_begin,  h_commit, h_rel,   h_type,    h_change, h_trunc,
    h_sstart, h_sstop,  h_sdata, h_scommit, h_sabort, NULL,
};

static enum zetl_err send(enum zetl_pgo_kind kind, bool in_stream, struct zetl_errbuf *eb)
{
    struct zetl_pgo_msg m;
    static const uint8_t raw[3] = {1, 2, 3};

    memset(&m, 0, sizeof(m));
    m.kind = kind;
    m.u.begin.final_lsn = 0x10;
    if (kind == ZETL_PGO_COMMIT) {
        m.u.commit.commit_lsn = 0x10;
        m.u.commit.end_lsn = 0x18;
    }
    if (kind == ZETL_PGO_STREAM_START)
        m.u.stream_start.xid = 7;
    if (kind == ZETL_PGO_STREAM_ABORT) {
        m.u.stream_abort.xid = 7;
        m.u.stream_abort.subxid = 8;
    }
    return zetl_dispatch(&handlers, NULL, &m, in_stream, raw, sizeof(raw), 0x10, NULL, eb);
}

static void test_dispatch(void)
{
    struct zetl_errbuf eb;
    static const enum zetl_pgo_kind live[] = {
        ZETL_PGO_BEGIN,  ZETL_PGO_RELATION, ZETL_PGO_TYPE,   ZETL_PGO_INSERT,  ZETL_PGO_UPDATE,
        ZETL_PGO_DELETE, ZETL_PGO_TRUNCATE, ZETL_PGO_ORIGIN, ZETL_PGO_MESSAGE, ZETL_PGO_COMMIT,
    };
    static const enum zetl_pgo_kind streamed[] = {
        ZETL_PGO_STREAM_START, ZETL_PGO_RELATION,     ZETL_PGO_INSERT,        ZETL_PGO_MESSAGE,
        ZETL_PGO_STREAM_STOP,  ZETL_PGO_STREAM_ABORT, ZETL_PGO_STREAM_COMMIT,
    };

    calls[0] = '\0';
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
        CHECK(send(live[i], false, &eb) == ZETL_OK);
    CHECK_STR(calls, "begin relation type changeI changeU changeD truncate commit ");

    calls[0] = '\0';
    for (size_t i = 0; i < sizeof(streamed) / sizeof(streamed[0]); i++)
        CHECK(send(streamed[i], i > 0 && i < 4, &eb) == ZETL_OK);
    CHECK_STR(calls, "sstart sdataR sdataI sdataM sstop sabort scommit ");

    CHECK(send(ZETL_PGO_PREPARE, false, &eb) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(eb.msg, "two-phase message 'P'") != NULL);
}

int main(void)
{
    test_relmap_plans();
    test_relmap_keys_without_catalog();
    test_dispatch();
    return zetl_tap_done();
}
