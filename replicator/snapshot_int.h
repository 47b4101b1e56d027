/* Private to snapshot.c (tables, workers, state) and snapwin.c (a stream's windows). */
#ifndef ZETL_SNAPSHOT_INT_H
#define ZETL_SNAPSHOT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "replicator/snapshot.h"

enum snap_task_state {
    TASK_PENDING,    /* waits for a worker */
    TASK_RUNNING,    /* a worker copies its chunks */
    TASK_DISPATCHED, /* every chunk copied; waiting for the last to be durable */
    TASK_DONE,
};

/* Where a chunk starts: after these key values (none: the table's start). */
struct snap_key {
    size_t n;
    char **vals; /* owned */
};

struct snap_task {
    struct snap_task *next;
    struct zetl_snapwin *w;
    char *schema, *table, *reason; /* owned */
    enum snap_task_state state;
    struct snap_key after;      /* durable: the next chunk after a restart starts here */
    uint64_t rows_durable;      /* rows of durable chunks */
    uint64_t started_lsn;       /* low watermark of the first chunk of this copy */
    uint64_t done_lsn;          /* commit LSN of the last chunk of the last finished copy */
    uint64_t last_done_started; /* started_lsn of the last finished copy */
    /* runtime, under the snapshotter's lock */
    uint64_t rows_copied;
    double est_rows; /* pg_class.reltuples at start */
    int64_t started_ms;
    int inflight; /* chunks registered and not yet durable */
    bool restart; /* asked again while running: copy again when done */
    /*
     * The warehouse may hold rows of an earlier copy (a re-copy, a resumed
     * or onboarded one): a table without a key is replaced, not added to.
     * False only for the first attempt of an initial snapshot.
     */
    bool replace;
};

enum snap_chunk_state {
    CHUNK_REGISTERED, /* low watermark being written */
    CHUNK_READY,      /* copied; the high watermark is (being) written */
    CHUNK_EMITTING,   /* the stream is adding its rows: no longer the worker's to cancel */
    CHUNK_EMITTED,    /* rows added at the high watermark's transaction */
    CHUNK_QUEUED,     /* that transaction is queued to the sinks */
    CHUNK_CANCELLED,  /* the worker failed between the watermarks */
};

/* Keys changed in a window: per key, whether deleted and which columns were sent. */
struct snap_touch {
    uint8_t *key; /* owned: encoded key */
    size_t keylen;
    bool deleted;
    uint8_t *set; /* owned: bitmap over the chunk's columns sent by a change */
};

struct snap_chunk {
    struct snap_chunk *next;
    char id[64];
    struct snap_task *task;
    enum snap_chunk_state state;
    uint32_t relid;
    struct zetl_relation *rel;    /* owned: the table as the copy saw it */
    struct zetl_table_plan *plan; /* owned */
    uint32_t *type_oids;          /* owned: custom types of the columns ... */
    char **type_names;            /* owned: ... as "schema.name" */
    size_t ntypes;
    char *path; /* owned: the copied rows (COPY text format) */
    uint64_t rows;
    struct snap_key end; /* key of its last row: where the next chunk starts */
    bool last;           /* the task's final chunk */
    bool replace;        /* its task's replace, at registration */
    bool keyed;          /* rel has a primary key: rows are matched by it, else by all values */
    uint64_t lsn;        /* commit LSN it was emitted at */

    /* the window: stream thread only */
    bool window; /* open: changes of relid are recorded */
    bool truncated;
    struct snap_touch *touched; /* open addressing */
    size_t ntouched, touched_cap;
    const struct zetl_relation *map_rel; /* live relation the maps below are for */
    uint32_t map_version;
    int *colmap;   /* live column -> chunk column, -1 */
    int *livekeys; /* chunk key k -> live column, -1 */
};

/* A schema (or some of its tables) joining the publication, whose copies follow. */
struct snap_onboard {
    struct snap_onboard *next;
    char *schema;               /* owned */
    struct zetl_strlist tables; /* empty: all of it */
};

struct zetl_snapwin {
    struct zetl_snapshotter *s;
    struct zetl_snapwin *next;
    char *name;       /* owned: stream */
    char *spool;      /* owned: chunk files */
    char *state_path; /* owned */
    struct snap_task *tasks;
    struct snap_onboard *onboard;
    struct snap_chunk *chunks;   /* under the lock; windows: stream thread */
    int ready;                   /* chunks copied but not emitted (worker backpressure) */
    int open;                    /* windows open (stream thread only) */
    struct zetl_buf key, oldkey; /* keys of the change being recorded (stream thread only) */
};

struct zetl_snapshotter {
    const struct zetl_config *cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct zetl_snapwin *streams;
    pthread_t *threads;
    int nthreads;
    bool stopping;
    enum zetl_err err;
    struct zetl_errbuf eb;
    char run_id[24]; /* names this process's windows */
    uint64_t next_chunk;
    int64_t last_progress_ms;
    bool tty;
};

/* snapshot.c */
void zetl_snap_key_free(struct snap_key *k);
void zetl_snap_key_copy(struct snap_key *dst, const struct snap_key *src);
void zetl_snap_chunk_free(struct snap_chunk *c);
/* A finished table to copy again from its start (reason NULL: keep the old one). */
void zetl_snap_task_again(struct snap_task *t, const char *reason);
/* Saves w's state file; the caller holds s->mu. */
enum zetl_err zetl_snap_save(struct zetl_snapwin *w, struct zetl_errbuf *eb);

/* snapwin.c: one COPY text line into fields (unescaped into ar); false when malformed. */
bool zetl_snap_parse_line(const char *line, size_t len, struct zetl_tuple *tup, uint16_t ncols,
                          struct zetl_arena *ar);

#endif
