/*
 * Private to the batcher: the writer object and the files of its open batch,
 * shared by batch.c (spool directories, transactions, rows, sealing) and
 * batch_file.c (one zstd-compressed CSV file per (table, column shape):
 * routing a row to its file, compressing, finishing).  Not for use outside
 * sinks/batch*.c.
 */
#ifndef ZETL_BATCH_FILE_H
#define ZETL_BATCH_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zstd.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/sha256.h"
#include "sinks/batch.h"

/* Level 1: capture must keep up with the walsender; level 3 costs twice the CPU for ~8% smaller
 * files. */
#define ZETL_BATCH_ZSTD_LEVEL 1
/* 1 MiB window: each open file's compressor stays around 1-2 MB. */
#define ZETL_BATCH_ZSTD_WINDOW_LOG 20
/* Compressors kept across batches for reuse. */
#define ZETL_BATCH_POOL_MAX 16

/* A compressor and its fixed-size output buffer. */
struct zcomp {
    ZSTD_CCtx *cctx;
    unsigned char *obuf;
    size_t ocap;
};

/* One open file of the batch: one logical table in one column shape. */
struct bfile {
    struct bfile *hnext; /* hash chain */
    uint64_t hash;       /* of table + shape */
    char *table;         /* owned */
    char *file;          /* owned: name within the batch directory */
    char *path;          /* owned: full path, for messages */
    size_t ncols;
    struct zetl_batch_col *cols; /* owned */
    int fd;
    struct zcomp zc;
    size_t opos; /* bytes waiting in zc.obuf */
    struct zetl_sha256 sha;
    uint64_t rows;
    uint64_t bytes; /* compressed bytes written */
    /* Tenants with rows here: a list in first-seen order plus an open-addressing set. */
    char **tenants; /* owned strings */
    size_t ntenants, tenants_alloc;
    size_t *tset; /* indexes + 1 into tenants; 0 = empty slot */
    size_t tset_cap;
    size_t last_tenant; /* index of the tenant of the previous row */
};

struct zetl_batch_writer {
    char *stream;                   /* owned */
    char *tenant_column;            /* owned */
    char *stream_dir;               /* owned: <spool_dir>/<stream> */
    struct zetl_relcache *relcache; /* borrowed, may be NULL */

    uint64_t seq;
    char *dir;   /* owned: open-<seq> path once created, else NULL */
    bool broken; /* an I/O failure left the batch unusable until discard */

    struct bfile **files; /* owned, in creation order */
    size_t nfiles, files_alloc;
    struct bfile **buckets;
    size_t nbuckets;
    struct bfile *last; /* file of the previous row */

    uint64_t first_lsn, last_lsn, end_lsn;
    int64_t first_commit_time, last_commit_time;
    uint64_t ntxns, nrows, raw_bytes;
    uint64_t snapshot_rows;  /* rows copied by a snapshot (sinks/batch.h) */
    uint64_t *snapshot_lsns; /* owned: their transactions' commit LSNs */
    size_t nsnapshot_lsns, snapshot_lsns_alloc;
    int64_t opened_ms;

    bool in_txn;
    uint64_t txn_lsn;
    int64_t txn_time;
    uint64_t txn_rows; /* rows of the open transaction */
    uint64_t seq_base; /* _zetl_seq of the next row is seq_base + txn_rows */
    char lsn_text[24];
    size_t lsn_len;
    char ts_text[ZETL_BATCH_TIME_LEN];
    size_t ts_len;

    struct zetl_buf row;     /* reused for every row */
    struct zetl_buf scratch; /* reused for the _zetl_unchanged array */

    struct zcomp pool[ZETL_BATCH_POOL_MAX];
    size_t npool;
};

/*
 * Finds the file of the row's (table, shape) in the open batch (w->dir must
 * exist), creating it on first use.  *out is owned by w (w->files).
 */
enum zetl_err zetl_batch_file_route(struct zetl_batch_writer *w,
                                    const struct zetl_batch_target *plan,
                                    const struct zetl_relation *rel, struct bfile **out,
                                    struct zetl_errbuf *eb);
/* Pushes n bytes (borrowed) through f's compressor to its file. */
enum zetl_err zetl_batch_file_feed(struct bfile *f, const void *p, size_t n, ZSTD_EndDirective mode,
                                   struct zetl_errbuf *eb);
/* `tenant` is copied. */
void zetl_batch_file_note_tenant(struct bfile *f, const char *tenant);
enum zetl_err zetl_batch_file_finish(struct bfile *f, struct zetl_errbuf *eb);
/* Closes and frees f (NULL: no-op); its compressor goes back to w's pool. */
void zetl_batch_file_free(struct zetl_batch_writer *w, struct bfile *f);

#endif
