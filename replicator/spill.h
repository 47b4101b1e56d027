/*
 * Spill files for streamed (in-progress) transactions.  pgoutput sends large
 * transactions in chunks between Stream Start and Stream Stop, interleaved
 * with other transactions, before they commit.  Each chunk's raw messages are
 * appended to one file per top-level xid under the spool directory; at Stream
 * Commit they are replayed in order, at Stream Abort discarded.  A
 * subtransaction abort marks its xid, and replay skips that xid's changes
 * (Relation and Type messages are always kept: later changes rely on them).
 */
#ifndef ZETL_SPILL_H
#define ZETL_SPILL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct zetl_spill;

/* Creates the spill store in `dir` (created if missing; stale files removed). */
enum zetl_err zetl_spill_new(const char *dir, struct zetl_spill **out, struct zetl_errbuf *eb);
void zetl_spill_free(struct zetl_spill *sp);

/* Appends one raw pgoutput message of top-level transaction `xid`. ZETL_ERR_IO on failure. */
enum zetl_err zetl_spill_append(struct zetl_spill *sp, uint32_t xid, const uint8_t *msg, size_t len,
                                struct zetl_errbuf *eb);
/* Stream Abort: subxid == xid discards the whole transaction, else marks the subtransaction. */
void zetl_spill_abort(struct zetl_spill *sp, uint32_t xid, uint32_t subxid);

/* Called for each message kept at replay; a non-OK return stops the replay. */
typedef enum zetl_err (*zetl_spill_cb)(void *arg, const uint8_t *msg, size_t len,
                                       struct zetl_errbuf *eb);

/*
 * Replays the messages of `xid` in order (skipping changes of aborted
 * subtransactions) and then removes its file.  A transaction that streamed
 * nothing replays nothing.
 */
enum zetl_err zetl_spill_replay(struct zetl_spill *sp, uint32_t xid, zetl_spill_cb cb, void *arg,
                                struct zetl_errbuf *eb);
/* Discards every open transaction (after a disconnect). */
void zetl_spill_clear(struct zetl_spill *sp);

#endif
