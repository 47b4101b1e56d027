/*
 * Tests for the proto building blocks: the bounds-checked reader, the
 * CopyData envelope (decode 'w'/'k', encode 'r'), and the relation cache.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"
#include "proto/copydata.h"
#include "proto/pgoutput.h"
#include "proto/reader.h"
#include "proto/relcache.h"
#include "tests/unit/tap.h"

static void test_reader_values(void)
{
    static const uint8_t in[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
                                 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 'h',  'i',  0x00};
    struct zetl_reader rd;
    size_t len;

    zetl_reader_init(&rd, in, sizeof(in));
    CHECK(zetl_reader_u8(&rd) == 0x01);
    CHECK(zetl_reader_u16be(&rd) == 0x0203);
    CHECK(zetl_reader_u32be(&rd) == 0x04050607u);
    CHECK(zetl_reader_u64be(&rd) == UINT64_C(0x08090a0b0c0d0e0f));
    CHECK(zetl_reader_offset(&rd) == 15);
    CHECK(zetl_reader_remaining(&rd) == 3);
    CHECK(!zetl_reader_end(&rd));
    const char *s = zetl_reader_cstr(&rd, &len);
    CHECK(s != NULL && len == 2 && memcmp(s, "hi", 2) == 0);
    CHECK(zetl_reader_end(&rd));
    CHECK(!rd.err);

    /* High bits survive (no sign extension). */
    static const uint8_t ff[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
    zetl_reader_init(&rd, ff, sizeof(ff));
    CHECK(zetl_reader_u64be(&rd) == UINT64_C(0xfffffffffffffffe));
    zetl_reader_init(&rd, ff, sizeof(ff));
    CHECK(zetl_reader_u32be(&rd) == 0xffffffffu);
    CHECK(zetl_reader_u16be(&rd) == 0xffff);
    CHECK(zetl_reader_u8(&rd) == 0xff);
}

static void test_reader_errors(void)
{
    static const uint8_t in[] = {0x01, 0x02, 0x03};
    struct zetl_reader rd;
    size_t len = 99;

    /* A read that does not fit sets err, returns 0 and does not move. */
    zetl_reader_init(&rd, in, sizeof(in));
    CHECK(zetl_reader_u8(&rd) == 1);
    CHECK(zetl_reader_u32be(&rd) == 0);
    CHECK(rd.err);
    CHECK(zetl_reader_offset(&rd) == 1);
    /* Sticky: later reads fail even though two bytes are there. */
    CHECK(zetl_reader_u8(&rd) == 0);
    CHECK(zetl_reader_u16be(&rd) == 0);
    CHECK(zetl_reader_bytes(&rd, 0) == NULL);
    CHECK(zetl_reader_cstr(&rd, &len) == NULL && len == 0);
    CHECK(zetl_reader_offset(&rd) == 1);
    CHECK(zetl_reader_remaining(&rd) == 0);
    CHECK(!zetl_reader_end(&rd));

    /* u16 / u64 one byte short. */
    zetl_reader_init(&rd, in, 1);
    CHECK(zetl_reader_u16be(&rd) == 0 && rd.err);
    zetl_reader_init(&rd, in, sizeof(in));
    CHECK(zetl_reader_u64be(&rd) == 0 && rd.err && zetl_reader_offset(&rd) == 0);

    /* Empty input, including a NULL pointer with length 0. */
    zetl_reader_init(&rd, NULL, 0);
    CHECK(zetl_reader_end(&rd));
    CHECK(zetl_reader_bytes(&rd, 0) != NULL);
    CHECK(zetl_reader_end(&rd));
    CHECK(zetl_reader_u8(&rd) == 0 && rd.err);

    /* bytes: exact fit, then a huge length must not overflow the bounds check. */
    zetl_reader_init(&rd, in, sizeof(in));
    CHECK(zetl_reader_bytes(&rd, 3) == in);
    CHECK(zetl_reader_end(&rd));
    zetl_reader_init(&rd, in, sizeof(in));
    zetl_reader_u8(&rd);
    CHECK(zetl_reader_bytes(&rd, SIZE_MAX) == NULL && rd.err);
    CHECK(zetl_reader_offset(&rd) == 1);

    /* cstr never trusts a NUL beyond the end it was given. */
    static const char withnul[] = {'a', 'b', 'c', '\0'};
    zetl_reader_init(&rd, withnul, 3);
    CHECK(zetl_reader_cstr(&rd, &len) == NULL && rd.err);
    CHECK(zetl_reader_offset(&rd) == 0);
    /* The exact-size allocation lets AddressSanitizer catch a scan past the end. */
    char *heap = zetl_malloc(3);
    memcpy(heap, "abc", 3);
    zetl_reader_init(&rd, heap, 3);
    CHECK(zetl_reader_cstr(&rd, &len) == NULL && rd.err);
    free(heap);
    /* Empty string, and a NUL in the middle ends the string there. */
    static const char two[] = {'\0', 'x', '\0', 'y'};
    zetl_reader_init(&rd, two, sizeof(two));
    const char *s = zetl_reader_cstr(&rd, &len);
    CHECK(s == two && len == 0);
    s = zetl_reader_cstr(&rd, &len);
    CHECK(s == two + 1 && len == 1);
    CHECK(zetl_reader_remaining(&rd) == 1);
    CHECK(zetl_reader_cstr(&rd, &len) == NULL && rd.err && zetl_reader_offset(&rd) == 3);
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void test_copydata(void)
{
    struct zetl_copydata cd;
    struct zetl_errbuf eb;
    uint8_t w[25 + 3];

    /* XLogData with a payload. */
    w[0] = 'w';
    put64(w + 1, UINT64_C(0x16B3748));
    put64(w + 9, UINT64_C(0x16B4000));
    put64(w + 17, UINT64_C(766411200000000));
    memcpy(w + 25, "B\x01\x02", 3);
    CHECK(zetl_copydata_decode(w, sizeof(w), &cd, &eb) == ZETL_OK);
    CHECK(cd.kind == 'w' && cd.wal_start == UINT64_C(0x16B3748) &&
          cd.wal_end == UINT64_C(0x16B4000) && cd.send_time == INT64_C(766411200000000));
    CHECK(cd.data == w + 25 && cd.len == 3);
    /* An empty payload is well-formed at this layer. */
    CHECK(zetl_copydata_decode(w, 25, &cd, &eb) == ZETL_OK && cd.len == 0);

    /* Every cut of the header fails cleanly, with an exact-size copy. */
    int bad = 0;
    for (size_t cut = 0; cut < 25; cut++) {
        uint8_t *copy = zetl_malloc(cut ? cut : 1);
        memcpy(copy, w, cut);
        if (zetl_copydata_decode(copy, cut, &cd, &eb) != ZETL_ERR_PROTOCOL)
            bad++;
        free(copy);
    }
    CHECK(bad == 0);
    CHECK(zetl_copydata_decode(w, 24, &cd, &eb) == ZETL_ERR_PROTOCOL);
    CHECK_STR(eb.msg, "malformed replication CopyData message 'w' (0x77): truncated at byte "
                      "offset 17");

    /* Keepalive: exactly 18 bytes. */
    uint8_t k[19];
    k[0] = 'k';
    put64(k + 1, UINT64_C(0xAB00000010));
    put64(k + 9, 12345);
    k[17] = 1;
    k[18] = 0;
    CHECK(zetl_copydata_decode(k, 18, &cd, &eb) == ZETL_OK);
    CHECK(cd.kind == 'k' && cd.wal_end == UINT64_C(0xAB00000010) && cd.send_time == 12345 &&
          cd.reply_requested && cd.data == NULL && cd.len == 0);
    k[17] = 0;
    CHECK(zetl_copydata_decode(k, 18, &cd, &eb) == ZETL_OK && !cd.reply_requested);
    CHECK(zetl_copydata_decode(k, 19, &cd, &eb) == ZETL_ERR_PROTOCOL);
    CHECK_STR(eb.msg, "malformed replication CopyData message 'k' (0x6B): trailing bytes at byte "
                      "offset 18");
    CHECK(zetl_copydata_decode(k, 17, &cd, &eb) == ZETL_ERR_PROTOCOL);
    CHECK_STR(eb.msg, "malformed replication CopyData message 'k' (0x6B): truncated at byte "
                      "offset 17");

    /* Unknown kinds and empty frames. */
    uint8_t x[] = {'x', 0};
    CHECK(zetl_copydata_decode(x, sizeof(x), &cd, &eb) == ZETL_ERR_PROTOCOL);
    CHECK_STR(eb.msg, "malformed replication CopyData message 'x' (0x78): unknown message type at "
                      "byte offset 0");
    uint8_t nul[] = {0};
    CHECK(zetl_copydata_decode(nul, 1, &cd, &eb) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(eb.msg, "0x00: unknown message type") != NULL);
    CHECK(zetl_copydata_decode(NULL, 0, &cd, &eb) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(eb.msg, "empty message") != NULL);
    /* 'r' is what we send, never what we receive. */
    uint8_t r[ZETL_STATUS_UPDATE_LEN];
    zetl_copydata_encode_status(r, 1, 2, 3, 4, false);
    CHECK(zetl_copydata_decode(r, sizeof(r), &cd, &eb) == ZETL_ERR_PROTOCOL);
}

static void test_status_update(void)
{
    uint8_t r[ZETL_STATUS_UPDATE_LEN];
    static const uint8_t expect[ZETL_STATUS_UPDATE_LEN] = {
        'r',  0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, /* write */
        0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x00,       /* flush */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,       /* apply */
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,       /* clientTime = -1 */
        0x01,                                                 /* replyRequested */
    };

    zetl_copydata_encode_status(r, UINT64_C(0x102030405), UINT64_C(0x102030400), 0, -1, true);
    CHECK(memcmp(r, expect, sizeof(r)) == 0);
    zetl_copydata_encode_status(r, 0, 0, 0, 0, false);
    CHECK(r[0] == 'r' && r[33] == 0);

    /* Round trip against the keepalive layout, which shares the field encoding. */
    uint8_t k[18];
    struct zetl_copydata cd;
    struct zetl_errbuf eb;
    int64_t now = zetl_pg_now();
    zetl_copydata_encode_status(r, UINT64_C(0xDEADBEEF01), 0, 0, now, false);
    k[0] = 'k';
    memcpy(k + 1, r + 1, 8);
    memcpy(k + 9, r + 25, 8);
    k[17] = 0;
    CHECK(zetl_copydata_decode(k, sizeof(k), &cd, &eb) == ZETL_OK);
    CHECK(cd.wal_end == UINT64_C(0xDEADBEEF01) && cd.send_time == now);

    /* 2024-01-01 is 757382400 s after the PostgreSQL epoch; 2100 is far away. */
    CHECK(now > INT64_C(757382400) * 1000000);
    CHECK(now < INT64_C(3155760000) * 1000000);
    int64_t later = zetl_pg_now();
    CHECK(later >= now);
}

/* Builds a Relation message by hand, with names in a buffer the test then scribbles over. */
static void make_relation(struct zetl_pgo_msg *msg, struct zetl_rel_col *cols, char *names,
                          uint32_t relid, uint16_t ncols)
{
    memset(msg, 0, sizeof(*msg));
    msg->kind = ZETL_PGO_RELATION;
    msg->u.relation.relid = relid;
    static const char lit[] = "tenant_a\0users\0id\0name\0email";
    memcpy(names, lit, sizeof(lit));
    msg->u.relation.nspname = (struct zetl_slice){names, 8};
    msg->u.relation.relname = (struct zetl_slice){names + 9, 5};
    msg->u.relation.replident = 'd';
    msg->u.relation.ncols = ncols;
    msg->u.relation.cols = cols;
    const char *cn[] = {names + 15, names + 18, names + 23};
    const uint32_t cl[] = {2, 4, 5};
    for (uint16_t i = 0; i < ncols; i++) {
        cols[i].flags = i == 0 ? 1 : 0;
        cols[i].name = (struct zetl_slice){cn[i % 3], cl[i % 3]};
        cols[i].typoid = i == 0 ? 23 : 25;
        cols[i].typmod = -1;
    }
}

static void test_relcache(void)
{
    struct zetl_relcache *rc = zetl_relcache_new();
    struct zetl_pgo_msg msg;
    struct zetl_rel_col cols[3];
    char names[64];

    CHECK(zetl_relcache_get(rc, 16385) == NULL);
    make_relation(&msg, cols, names, 16385, 2);
    struct zetl_relation *rel = zetl_relcache_update(rc, &msg);
    memset(names, 'X', sizeof(names)); /* the cache must own copies */
    CHECK(rel != NULL && rel == zetl_relcache_get(rc, 16385));
    CHECK(rel->relid == 16385 && rel->version == 1 && rel->replident == 'd' && rel->ncols == 2);
    CHECK_STR(rel->nspname, "tenant_a");
    CHECK_STR(rel->relname, "users");
    CHECK_STR(rel->cols[0].name, "id");
    CHECK(rel->cols[0].key && rel->cols[0].typoid == 23 && rel->cols[0].typmod == -1);
    CHECK_STR(rel->cols[1].name, "name");
    CHECK(!rel->cols[1].key && rel->cols[1].typoid == 25);

    /* Replace: same entry, new columns, version bumped, owner state kept. */
    int state = 42;
    rel->user = &state;
    make_relation(&msg, cols, names, 16385, 3);
    msg.u.relation.replident = 'f';
    struct zetl_relation *rel2 = zetl_relcache_update(rc, &msg);
    CHECK(rel2 == zetl_relcache_get(rc, 16385));
    CHECK(rel2->version == 2 && rel2->ncols == 3 && rel2->replident == 'f');
    CHECK(rel2->user == &state);
    CHECK_STR(rel2->cols[2].name, "email");

    /* Many relations force the table to grow; relid 0 is a key like any other. */
    for (uint32_t id = 0; id < 2000; id++) {
        make_relation(&msg, cols, names, id * 7919u, 1);
        CHECK(zetl_relcache_update(rc, &msg) != NULL);
    }
    int missing = 0;
    for (uint32_t id = 0; id < 2000; id++) {
        struct zetl_relation *r = zetl_relcache_get(rc, id * 7919u);
        if (r == NULL || r->relid != id * 7919u || r->version != 1)
            missing++;
    }
    CHECK(missing == 0);
    CHECK(zetl_relcache_get(rc, 16385) != NULL && zetl_relcache_get(rc, 16385)->version == 2);
    CHECK(zetl_relcache_get(rc, 1) == NULL);

    /* Relations with no columns. */
    make_relation(&msg, cols, names, 5, 0);
    rel = zetl_relcache_update(rc, &msg);
    CHECK(rel != NULL && rel->ncols == 0);

    /* Only Relation messages are stored. */
    struct zetl_pgo_msg other;
    memset(&other, 0, sizeof(other));
    other.kind = ZETL_PGO_INSERT;
    CHECK(zetl_relcache_update(rc, &other) == NULL);

    /* Types. */
    struct zetl_pgo_msg ty;
    memset(&ty, 0, sizeof(ty));
    ty.kind = ZETL_PGO_TYPE;
    ty.u.type.typoid = 16390;
    char tn[] = "public\0mood";
    ty.u.type.nspname = (struct zetl_slice){tn, 6};
    ty.u.type.typname = (struct zetl_slice){tn + 7, 4};
    CHECK(zetl_relcache_type_name(rc, 16390) == NULL);
    zetl_relcache_update_type(rc, &ty);
    memset(tn, 'X', sizeof(tn));
    CHECK_STR(zetl_relcache_type_name(rc, 16390), "public.mood");
    char tn2[] = "s1\0feeling";
    ty.u.type.nspname = (struct zetl_slice){tn2, 2};
    ty.u.type.typname = (struct zetl_slice){tn2 + 3, 7};
    zetl_relcache_update_type(rc, &ty);
    CHECK_STR(zetl_relcache_type_name(rc, 16390), "s1.feeling");

    /* Clear forgets everything; the cache stays usable. */
    zetl_relcache_clear(rc);
    CHECK(zetl_relcache_get(rc, 16385) == NULL);
    CHECK(zetl_relcache_get(rc, 0) == NULL);
    CHECK(zetl_relcache_type_name(rc, 16390) == NULL);
    make_relation(&msg, cols, names, 16385, 2);
    rel = zetl_relcache_update(rc, &msg);
    CHECK(rel != NULL && rel->version == 1);
    zetl_relcache_free(rc);
    zetl_relcache_free(NULL);
}

static void test_pgtype_names(void)
{
    static const struct {
        uint32_t oid;
        const char *name;
    } want[] = {
        {16, "bool"},        {17, "bytea"},          {18, "char"},
        {19, "name"},        {20, "int8"},           {21, "int2"},
        {23, "int4"},        {25, "text"},           {26, "oid"},
        {114, "json"},       {142, "xml"},           {700, "float4"},
        {701, "float8"},     {790, "money"},         {1042, "bpchar"},
        {1043, "varchar"},   {1082, "date"},         {1083, "time"},
        {1114, "timestamp"}, {1184, "timestamptz"},  {1186, "interval"},
        {1266, "timetz"},    {1560, "bit"},          {1562, "varbit"},
        {1700, "numeric"},   {2950, "uuid"},         {3802, "jsonb"},
        {869, "inet"},       {650, "cidr"},          {829, "macaddr"},
        {1000, "_bool"},     {1005, "_int2"},        {1007, "_int4"},
        {1009, "_text"},     {1015, "_varchar"},     {1016, "_int8"},
        {1021, "_float4"},   {1022, "_float8"},      {1115, "_timestamp"},
        {1182, "_date"},     {1185, "_timestamptz"}, {1231, "_numeric"},
        {2951, "_uuid"},     {3807, "_jsonb"},       {199, "_json"},
        {1001, "_bytea"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        CHECK_STR(zetl_pgtype_name(want[i].oid), want[i].name);
    CHECK(zetl_pgtype_name(0) == NULL);
    CHECK(zetl_pgtype_name(16390) == NULL);
}

int main(void)
{
    test_reader_values();
    test_reader_errors();
    test_copydata();
    test_status_update();
    test_relcache();
    test_pgtype_names();
    return zetl_tap_done();
}
