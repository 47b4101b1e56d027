/*
 * Per-relation state of a stream: whether its changes are captured and the
 * transform plan of the relation version they arrive in; and the primary
 * keys of REPLICA IDENTITY FULL relations.
 *
 * With REPLICA IDENTITY FULL every column arrives flagged as key, but the
 * warehouse key must be the primary key, which only the source catalog
 * knows.  The look-up runs on a separate catalog connection, asynchronously:
 * a Relation message of a FULL relation (live, or on its way into a spill
 * file) sends the query and the reader stops taking messages until the
 * answer is in (zetl_relmap_pending), polling the catalog socket along with
 * the replication socket, so status updates and keepalives go on.  The
 * answer is kept per relation, so the replay of a spilled transaction finds
 * it without a query.  A FULL relation without a primary key gets no key
 * (its rows are appended).
 */
#ifndef ZETL_RELMAP_H
#define ZETL_RELMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "proto/relcache.h"
#include "transforms/transform.h"

struct zetl_relmap;

/*
 * cfg, name and salt (may be NULL) are borrowed and must outlive the map;
 * relcache (borrowed) receives the primary keys.  Returns an owned map.
 */
struct zetl_relmap *zetl_relmap_new(const struct zetl_config *cfg, const char *name,
                                    struct zetl_relcache *relcache, const uint8_t *salt,
                                    size_t salt_len);
void zetl_relmap_free(struct zetl_relmap *rm);

/*
 * The plan for a relation, or NULL when its changes are not captured.
 * Valid until the relation's next version or zetl_relmap_clear.
 */
struct zetl_table_plan *zetl_relmap_plan(struct zetl_relmap *rm, const struct zetl_relation *rel);

/* Forgets plans, keys and any look-up in flight (after a disconnect). */
void zetl_relmap_clear(struct zetl_relmap *rm);

/* Opens the catalog connection if it is not open (before replication starts). */
enum zetl_err zetl_relmap_connect(struct zetl_relmap *rm, struct zetl_errbuf *eb);

/*
 * A Relation message arrived.  For a FULL relation sends the primary key
 * look-up; when the answer comes (zetl_relmap_poll) the keys of the
 * relcache entry `relid` are set.  With `spilled` the message went to a
 * spill file: only the answer is kept, for zetl_relmap_apply_keys at replay.
 */
enum zetl_err zetl_relmap_relation(struct zetl_relmap *rm, const struct zetl_pgo_msg *m,
                                   bool spilled, struct zetl_errbuf *eb);
/* True while a look-up is in flight: the reader must not take the next message. */
bool zetl_relmap_pending(const struct zetl_relmap *rm);
/* The catalog socket to poll while a look-up is in flight, else -1. */
int zetl_relmap_fd(const struct zetl_relmap *rm);
/* Takes in what the catalog connection received; finishes the look-up when complete. */
enum zetl_err zetl_relmap_poll(struct zetl_relmap *rm, struct zetl_errbuf *eb);
/*
 * Sets the keys of a FULL relation from a finished look-up (replay of a
 * spilled Relation message).  Without one, looks the keys up and waits: a
 * rare fallback, only when the spill outlived the answer.
 */
enum zetl_err zetl_relmap_apply_keys(struct zetl_relmap *rm, struct zetl_relation *rel,
                                     struct zetl_errbuf *eb);

#endif
