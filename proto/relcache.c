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

/* OIDs as in PostgreSQL's pg_type.dat (stable across releases since they are pinned). */
const char *zetl_pgtype_name(uint32_t typoid)
{
    switch (typoid) {
    case 16:
        return "bool";
    case 17:
        return "bytea";
    case 18:
        return "char";
    case 19:
        return "name";
    case 20:
        return "int8";
    case 21:
        return "int2";
    case 23:
        return "int4";
    case 25:
        return "text";
    case 26:
        return "oid";
    case 114:
        return "json";
    case 142:
        return "xml";
    case 143:
        return "_xml";
    case 199:
        return "_json";
    case 650:
        return "cidr";
    case 651:
        return "_cidr";
    case 700:
        return "float4";
    case 701:
        return "float8";
    case 774:
        return "macaddr8";
    case 775:
        return "_macaddr8";
    case 790:
        return "money";
    case 791:
        return "_money";
    case 829:
        return "macaddr";
    case 869:
        return "inet";
    case 1000:
        return "_bool";
    case 1001:
        return "_bytea";
    case 1002:
        return "_char";
    case 1003:
        return "_name";
    case 1005:
        return "_int2";
    case 1007:
        return "_int4";
    case 1009:
        return "_text";
    case 1014:
        return "_bpchar";
    case 1015:
        return "_varchar";
    case 1016:
        return "_int8";
    case 1021:
        return "_float4";
    case 1022:
        return "_float8";
    case 1028:
        return "_oid";
    case 1040:
        return "_macaddr";
    case 1041:
        return "_inet";
    case 1042:
        return "bpchar";
    case 1043:
        return "varchar";
    case 1082:
        return "date";
    case 1083:
        return "time";
    case 1114:
        return "timestamp";
    case 1115:
        return "_timestamp";
    case 1182:
        return "_date";
    case 1183:
        return "_time";
    case 1184:
        return "timestamptz";
    case 1185:
        return "_timestamptz";
    case 1186:
        return "interval";
    case 1187:
        return "_interval";
    case 1231:
        return "_numeric";
    case 1266:
        return "timetz";
    case 1270:
        return "_timetz";
    case 1560:
        return "bit";
    case 1561:
        return "_bit";
    case 1562:
        return "varbit";
    case 1563:
        return "_varbit";
    case 1700:
        return "numeric";
    case 2950:
        return "uuid";
    case 2951:
        return "_uuid";
    case 3220:
        return "pg_lsn";
    case 3221:
        return "_pg_lsn";
    case 3614:
        return "tsvector";
    case 3643:
        return "_tsvector";
    case 3802:
        return "jsonb";
    case 3807:
        return "_jsonb";
    }
    return NULL;
}
