/*
 * Snapshots of existing rows, taken while the slot streams (DBLog's
 * watermark algorithm, adapted to pgoutput): the initial copy of a new slot
 * group, the tenants and tables that appear while zetl runs, and the
 * re-snapshots `zetl snapshot` asks for all go the same way.
 *
 * A worker copies a table in key-range chunks.  For each chunk it writes a
 * low watermark into the WAL (a transactional logical decoding message,
 * prefix "zetl"), copies the chunk (COPY (SELECT ... WHERE key > last ORDER
 * BY key LIMIT n) TO STDOUT) into a file of the spool, and writes a high
 * watermark.  The stream follows the window between the two watermarks: every
 * change of the chunk's table in it records its key.  At the high watermark
 * the stream adds the chunk's rows to the transaction of that watermark, as
 * inserts, except the keys changed in the window (the change in the stream
 * is as new as the copy or newer).  A key whose changes in the window left
 * some columns unchanged (TOAST) gets an update carrying just those
 * columns' copied values: they did not change during the window, so the
 * copy holds their value.  Nothing written at any moment is lost, nothing
 * is applied twice, and the slot never waits for a snapshot: the rows enter
 * the batches, the archive and the warehouse like any transaction, at the
 * high watermark's commit LSN, and the exactly-once rules of the sinks hold
 * for them.
 *
 * Progress is kept per stream in <buffer.dir>/snapshot/<stream>.json: the
 * tables still to copy and, per table, the key after which the next chunk
 * starts, moved only when the chunk before it is durable in every sink.  A
 * killed process resumes from there; the watermarks of its unfinished chunks
 * are recognized as stale (their window ids name another run) and ignored.
 */
#ifndef ZETL_SNAPSHOT_H
#define ZETL_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/mem.h"
#include "common/strlist.h"
#include "config/config.h"
#include "proto/pgoutput.h"
#include "proto/relcache.h"
#include "sinks/batch.h"
#include "transforms/transform.h"

/* The prefix of zetl's logical decoding messages. */
#define ZETL_SNAPSHOT_PREFIX "zetl"

struct zetl_snapshotter;
struct zetl_snapwin;

/*
 * Before a slot group's slot is created: records that its first start owes
 * an initial snapshot (source.snapshot: initial), unless its state file
 * exists.  Written before the slot, so a crash in between still snapshots.
 */
enum zetl_err zetl_snapshot_mark_initial(const struct zetl_config *cfg, const char *stream,
                                         struct zetl_errbuf *eb);

/*
 * Where a replay from the last snapshots of `stream` starts: the lowest, over
 * the tables its state file lists, of the start LSN of each table's last
 * finished snapshot.  0 (keep everything) when there is no state file or a
 * table has never been copied whole: a replay then needs every batch.  cfg
 * is a struct zetl_config (archive retention's keep floor).
 */
uint64_t zetl_snapshot_floor(const void *cfg, const char *stream);

/* cfg is borrowed.  No threads run until zetl_snapshotter_start. */
struct zetl_snapshotter *zetl_snapshotter_new(const struct zetl_config *cfg);
/* Stops the workers (if running) and frees everything. */
void zetl_snapshotter_free(struct zetl_snapshotter *s);

/*
 * Adds a stream: loads its state file (tables left unfinished resume) and,
 * when an initial snapshot is owed, lists the tables its publication
 * `stream` publishes (on conn) and queues them.  Chunk files go under
 * spool_dir.  *out is owned by s.
 */
enum zetl_err zetl_snapshotter_add_stream(struct zetl_snapshotter *s, void *conn,
                                          const char *stream, const char *spool_dir,
                                          struct zetl_snapwin **out, struct zetl_errbuf *eb);

/*
 * Queues the copy of table schema.table for `stream` (persisted first).  A
 * table already queued or being copied is left as it is; a finished one is
 * copied again.  `reason` is for messages ("new tenant", "requested").
 */
enum zetl_err zetl_snapshotter_request(struct zetl_snapshotter *s, const char *stream,
                                       const char *schema, const char *table, const char *reason,
                                       struct zetl_errbuf *eb);

/*
 * Tenants and tables joining a publication: their rows must be copied, and
 * only after they joined (a copy taken before would miss what is committed
 * until then).  Begin records the schema (with `tables`, only those; NULL or
 * empty: all of it) in the stream's state file before the publication
 * changes; end, once it changed, queues the copies of what the publication
 * now publishes of it.  A record left by a crash is ended when the stream is
 * added (the publications are set at every start).
 */
enum zetl_err zetl_snapshotter_onboard_begin(struct zetl_snapshotter *s, const char *stream,
                                             const char *schema, const struct zetl_strlist *tables,
                                             struct zetl_errbuf *eb);
enum zetl_err zetl_snapshotter_onboard_end(struct zetl_snapshotter *s, void *conn,
                                           const char *stream, const char *schema,
                                           struct zetl_errbuf *eb);
/* Begin, straight into the state file: at start, before the snapshotter exists. */
enum zetl_err zetl_snapshot_mark_onboarding(const struct zetl_config *cfg, const char *stream,
                                            const char *schema, const struct zetl_strlist *tables,
                                            struct zetl_errbuf *eb);

/* True while a state file under buffer.dir lists a table not copied yet. */
bool zetl_snapshot_pending(const struct zetl_config *cfg);

/* Starts source.snapshot_workers copying threads. */
enum zetl_err zetl_snapshotter_start(struct zetl_snapshotter *s, struct zetl_errbuf *eb);
/* Stops and joins the workers; unfinished chunks are abandoned (they resume next time). */
void zetl_snapshotter_stop(struct zetl_snapshotter *s);
/* A worker's fatal error (a table the source cannot serve), ZETL_OK when none. */
enum zetl_err zetl_snapshotter_error(struct zetl_snapshotter *s, struct zetl_errbuf *eb);

/* ---- a stream's side: called by the stream's own thread only ---------------- */

/* Where the copied rows go: the capture's transaction of the high watermark. */
struct zetl_snap_sink {
    /* Adds one row of rel (transformed by plan) to the open transaction. */
    enum zetl_err (*row)(void *arg, enum zetl_op op, const struct zetl_relation *rel,
                         const struct zetl_table_plan *plan, const struct zetl_tuple *tup,
                         struct zetl_arena *ar, struct zetl_errbuf *eb);
    /*
     * Empties the tenant's rows of rel's table (a table without a primary key
     * is replaced, not added to, by its copy).
     */
    enum zetl_err (*truncate)(void *arg, const struct zetl_relation *rel,
                              const struct zetl_table_plan *plan, struct zetl_errbuf *eb);
    /* `n` rows were added by a chunk (the batch's manifest counts them). */
    void (*note)(void *arg, uint64_t n);
    void *arg;
    struct zetl_relcache *rc; /* learns the names of custom types of the copied columns */
};

/* True while a window is open: changes must be shown to zetl_snapwin_touch. */
bool zetl_snapwin_watching(const struct zetl_snapwin *w);

/*
 * A logical decoding message with prefix "zetl" in the transaction
 * committed at commit_lsn.  `skipped`: the sinks hold that transaction
 * already (a resend).  A high watermark adds its chunk's rows through sink.
 */
enum zetl_err zetl_snapwin_message(struct zetl_snapwin *w, const struct zetl_slice *content,
                                   uint64_t commit_lsn, bool skipped,
                                   const struct zetl_snap_sink *sink, struct zetl_errbuf *eb);

/* An Insert, Update or Delete of rel, of a transaction not skipped. */
void zetl_snapwin_touch(struct zetl_snapwin *w, const struct zetl_relation *rel,
                        const struct zetl_pgo_msg *m);
/* A Truncate of relid, of a transaction not skipped. */
void zetl_snapwin_truncate(struct zetl_snapwin *w, uint32_t relid);

/* Batches up to commit LSN `lsn` are queued to the sinks. */
void zetl_snapwin_sealed(struct zetl_snapwin *w, uint64_t lsn);
/* Every sink made `lsn` durable: progress is saved, finished tables logged. */
enum zetl_err zetl_snapwin_durable(struct zetl_snapwin *w, uint64_t lsn, struct zetl_errbuf *eb);
/* After a reconnect: chunks emitted after last_sealed are emitted again at their watermark. */
void zetl_snapwin_reconnect(struct zetl_snapwin *w, uint64_t last_sealed);
/* Nothing queued, copying or open for this stream (rows may still await durability). */
bool zetl_snapwin_idle(struct zetl_snapwin *w);

#endif
