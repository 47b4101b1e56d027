/*
 * Relation and type cache fed by Relation / Type messages.  Entries own
 * copies of their names, so they outlive the message that carried them.
 */
#ifndef ZETL_RELCACHE_H
#define ZETL_RELCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/pgoutput.h"

struct zetl_relcol {
    char *name; /* owned */
    uint32_t typoid;
    int32_t typmod;
    bool key; /* part of the replica identity */
    /*
     * Borrowed type text, for relations made from a description rather than
     * a Relation message (zetl load's, from an event schema): the batch
     * takes it as is instead of naming typoid/typmod.  NULL otherwise.
     */
    const char *type;
};

struct zetl_relation {
    uint32_t relid;
    char *nspname; /* owned */
    char *relname; /* owned */
    char replident;
    uint16_t ncols;
    struct zetl_relcol *cols; /* owned */
    uint32_t version;         /* bumped each time a Relation message replaces this entry */
    void *user;               /* borrowed: owner-defined per-relation state (may be NULL) */
};

struct zetl_relcache;

/* Returns an owned, empty cache. */
struct zetl_relcache *zetl_relcache_new(void);
void zetl_relcache_free(struct zetl_relcache *rc);
/*
 * Stores (replacing) the relation of a decoded Relation message.  Returns the
 * entry, valid until the next update of the same relid or zetl_relcache_free.
 */
struct zetl_relation *zetl_relcache_update(struct zetl_relcache *rc,
                                           const struct zetl_pgo_msg *msg);
/* Returns the entry for relid or NULL. */
struct zetl_relation *zetl_relcache_get(struct zetl_relcache *rc, uint32_t relid);
/* Records a Type message (custom types such as enums). */
void zetl_relcache_update_type(struct zetl_relcache *rc, const struct zetl_pgo_msg *msg);
/* "schema.name" of a type seen in a Type message, or NULL: valid until free. */
const char *zetl_relcache_type_name(struct zetl_relcache *rc, uint32_t typoid);
/* Forgets everything (after a reconnect). */
void zetl_relcache_clear(struct zetl_relcache *rc);

/* Name of a built-in type OID ("int4", "text", "_int4" ...), or NULL if not built in. */
const char *zetl_pgtype_name(uint32_t typoid);

#endif
