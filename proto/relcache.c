/*
 * Relation and type cache fed by pgoutput Relation / Type messages, and the
 * names of PostgreSQL's built-in type OIDs.
 */
#include "proto/relcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

/*
 * Open-addressing hash from an OID to an owned pointer.  Entries are never
 * removed one by one (only all at once by clear), so linear probing needs no
 * tombstones.  A NULL value marks an empty slot, which lets OID 0 be a key.
 */
struct rc_slot {
    uint32_t key;
    void *val; /* owned by the cache */
};

struct rc_map {
    struct rc_slot *slots; /* owned */
    size_t cap;            /* power of two, or 0 */
    size_t n;
};

struct zetl_relcache {
    struct rc_map rels;  /* relid -> struct zetl_relation * */
    struct rc_map types; /* typoid -> char * "nsp.typname" */
};

static size_t rc_hash(uint32_t key, size_t cap)
{
    return (size_t)((key * UINT32_C(0x9E3779B1)) & (uint32_t)(cap - 1));
}

static struct rc_slot *rc_find(const struct rc_map *m, uint32_t key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = rc_hash(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        struct rc_slot *s = &m->slots[i];
        if (s->val == NULL)
            return NULL;
        if (s->key == key)
            return s;
    }
}

static void rc_insert_slot(struct rc_slot *slots, size_t cap, uint32_t key, void *val)
{
    size_t i = rc_hash(key, cap);

    while (slots[i].val != NULL)
        i = (i + 1) & (cap - 1);
    slots[i].key = key;
    slots[i].val = val;
}

/* Adds a key known to be absent; keeps the load factor at or below 1/2. */
static void rc_add(struct rc_map *m, uint32_t key, void *val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct rc_slot *slots = zetl_calloc(cap, sizeof(*slots));

        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].val != NULL)
                rc_insert_slot(slots, cap, m->slots[i].key, m->slots[i].val);
        free(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
    rc_insert_slot(m->slots, m->cap, key, val);
    m->n++;
}

static void rc_relation_release(struct zetl_relation *rel)
{
    for (uint16_t i = 0; i < rel->ncols; i++)
        free(rel->cols[i].name);
    free(rel->cols);
    free(rel->nspname);
    free(rel->relname);
    rel->cols = NULL;
    rel->nspname = rel->relname = NULL;
    rel->ncols = 0;
}

/* Frees every value with `release` and empties the map, keeping its slots. */
static void rc_map_clear(struct rc_map *m, void (*release)(void *))
{
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].val != NULL) {
            release(m->slots[i].val);
            m->slots[i].val = NULL;
        }
    }
    m->n = 0;
}

static void rc_free_relation(void *p)
{
    rc_relation_release(p);
    free(p);
}

static void rc_free_string(void *p)
{
    free(p);
}

struct zetl_relcache *zetl_relcache_new(void)
{
    return zetl_calloc(1, sizeof(struct zetl_relcache));
}

void zetl_relcache_free(struct zetl_relcache *rc)
{
    if (rc == NULL)
        return;
    zetl_relcache_clear(rc);
    free(rc->rels.slots);
    free(rc->types.slots);
    free(rc);
}

void zetl_relcache_clear(struct zetl_relcache *rc)
{
    rc_map_clear(&rc->rels, rc_free_relation);
    rc_map_clear(&rc->types, rc_free_string);
}

static char *rc_slice_dup(struct zetl_slice s)
{
    return zetl_strndup(s.ptr != NULL ? s.ptr : "", s.len);
}

struct zetl_relation *zetl_relcache_update(struct zetl_relcache *rc, const struct zetl_pgo_msg *msg)
{
    if (msg->kind != ZETL_PGO_RELATION)
        return NULL;

    struct rc_slot *slot = rc_find(&rc->rels, msg->u.relation.relid);
    struct zetl_relation *rel;

    if (slot != NULL) {
        /* Replace in place: the pointer stays valid, `user` survives, version tells. */
        rel = slot->val;
        rc_relation_release(rel);
        rel->version++;
    } else {
        rel = zetl_calloc(1, sizeof(*rel));
        rel->relid = msg->u.relation.relid;
        rel->version = 1;
        rc_add(&rc->rels, rel->relid, rel);
    }
    rel->nspname = rc_slice_dup(msg->u.relation.nspname);
    rel->relname = rc_slice_dup(msg->u.relation.relname);
    rel->replident = msg->u.relation.replident;
    rel->ncols = msg->u.relation.ncols;
    rel->cols = zetl_calloc(rel->ncols ? rel->ncols : 1, sizeof(*rel->cols));
    for (uint16_t i = 0; i < rel->ncols; i++) {
        const struct zetl_rel_col *c = &msg->u.relation.cols[i];
        rel->cols[i].name = rc_slice_dup(c->name);
        rel->cols[i].typoid = c->typoid;
        rel->cols[i].typmod = c->typmod;
        rel->cols[i].key = (c->flags & 1) != 0;
    }
    return rel;
}

struct zetl_relation *zetl_relcache_get(struct zetl_relcache *rc, uint32_t relid)
{
    struct rc_slot *slot = rc_find(&rc->rels, relid);

    return slot != NULL ? slot->val : NULL;
}

void zetl_relcache_update_type(struct zetl_relcache *rc, const struct zetl_pgo_msg *msg)
{
    if (msg->kind != ZETL_PGO_TYPE)
        return;

    size_t nl = msg->u.type.nspname.len, tl = msg->u.type.typname.len;
    char *name = zetl_malloc(nl + 1 + tl + 1);

    if (nl)
        memcpy(name, msg->u.type.nspname.ptr, nl);
    name[nl] = '.';
    if (tl)
        memcpy(name + nl + 1, msg->u.type.typname.ptr, tl);
    name[nl + 1 + tl] = '\0';

    struct rc_slot *slot = rc_find(&rc->types, msg->u.type.typoid);
    if (slot != NULL) {
        free(slot->val);
        slot->val = name;
    } else {
        rc_add(&rc->types, msg->u.type.typoid, name);
    }
}

const char *zetl_relcache_type_name(struct zetl_relcache *rc, uint32_t typoid)
{
    struct rc_slot *slot = rc_find(&rc->types, typoid);

    return slot != NULL ? slot->val : NULL;
}

/*
 * Built-in types, OIDs as in PostgreSQL's pg_type.dat (stable across releases
 * since they are pinned).  Sorted by OID for the binary search below.
 */
static const struct {
    uint32_t oid;
    const char *name;
} pgtypes[] = {
    {16, "bool"},       {17, "bytea"},       {18, "char"},          {19, "name"},
    {20, "int8"},       {21, "int2"},        {23, "int4"},          {25, "text"},
    {26, "oid"},        {114, "json"},       {142, "xml"},          {143, "_xml"},
    {199, "_json"},     {650, "cidr"},       {651, "_cidr"},        {700, "float4"},
    {701, "float8"},    {774, "macaddr8"},   {775, "_macaddr8"},    {790, "money"},
    {791, "_money"},    {829, "macaddr"},    {869, "inet"},         {1000, "_bool"},
    {1001, "_bytea"},   {1002, "_char"},     {1003, "_name"},       {1005, "_int2"},
    {1007, "_int4"},    {1009, "_text"},     {1014, "_bpchar"},     {1015, "_varchar"},
    {1016, "_int8"},    {1021, "_float4"},   {1022, "_float8"},     {1028, "_oid"},
    {1040, "_macaddr"}, {1041, "_inet"},     {1042, "bpchar"},      {1043, "varchar"},
    {1082, "date"},     {1083, "time"},      {1114, "timestamp"},   {1115, "_timestamp"},
    {1182, "_date"},    {1183, "_time"},     {1184, "timestamptz"}, {1185, "_timestamptz"},
    {1186, "interval"}, {1187, "_interval"}, {1231, "_numeric"},    {1266, "timetz"},
    {1270, "_timetz"},  {1560, "bit"},       {1561, "_bit"},        {1562, "varbit"},
    {1563, "_varbit"},  {1700, "numeric"},   {2950, "uuid"},        {2951, "_uuid"},
    {3220, "pg_lsn"},   {3221, "_pg_lsn"},   {3614, "tsvector"},    {3643, "_tsvector"},
    {3802, "jsonb"},    {3807, "_jsonb"},
};

const char *zetl_pgtype_name(uint32_t typoid)
{
    size_t lo = 0, hi = sizeof(pgtypes) / sizeof(pgtypes[0]);

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pgtypes[mid].oid == typoid)
            return pgtypes[mid].name;
        if (pgtypes[mid].oid < typoid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
