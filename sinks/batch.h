/*
 * The batcher: whole committed transactions written into per-table CSV files,
 * zstd-compressed, in a spool directory, until the batch is sealed by
 * buffer.max_rows / max_bytes / max_age_ms.  Memory stays bounded: rows go to
 * the compressor as they arrive, never held.
 *
 * One file per (table, column shape): tenants whose tables have the same
 * columns share a file; a tenant (or a mid-batch ALTER) with another column
 * list gets "<table>.<n>.csv.zst".  Every file starts with these columns:
 *
 *   _zetl_op         I insert, U update (new image), D delete, B before-image of an
 *                    update that changed the key (or REPLICA IDENTITY FULL old row),
 *                    T truncate of that tenant's rows (source columns all NULL)
 *   _zetl_lsn        commit LSN of the transaction, as a decimal bigint
 *   _zetl_seq        order of the change within its transaction (0-based)
 *   _zetl_commit_ts  commit time, "YYYY-MM-DD HH:MM:SS.ffffff+00"
 *   _zetl_unchanged  unchanged TOAST (or absent) columns as an int array of
 *                    0-based indices into this file's source columns (the
 *                    manifest's "columns"), e.g. {2,5}; NULL when none.  Their
 *                    fields are NULL and must not overwrite the stored value.
 *   <tenant column>  the tenant id (source schema name)
 * then the source columns (after drops) in source order.
 *
 * CSV: comma, double-quote quoting; NULL is an unquoted empty field; an empty
 * string is ""; the text NULL is just NULL. No header line.
 */
#ifndef ZETL_BATCH_H
#define ZETL_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "proto/pgoutput.h"
#include "proto/relcache.h"

#define ZETL_BATCH_META_COLS 6

enum zetl_op {
    ZETL_OP_INSERT = 'I',
    ZETL_OP_UPDATE = 'U',
    ZETL_OP_DELETE = 'D',
    ZETL_OP_BEFORE = 'B',
    ZETL_OP_TRUNCATE = 'T',
};

struct zetl_batch_col {
    char *name; /* owned */
    char *type; /* owned: "int4", "numeric(30,2)", "varchar(20)", "_text", or "schema.enum" */
    uint32_t typoid;
    int32_t typmod;
    bool key;
};

/* One sealed file of a batch: one table in one column shape. */
struct zetl_batch_file {
    char *table; /* owned: logical (unioned) table name */
    char *file;  /* owned: file name within the batch directory, safe for any table name */
    size_t ncols;
    struct zetl_batch_col *cols; /* owned: source columns of this shape */
    uint64_t rows;
    uint64_t bytes;  /* compressed size */
    char sha256[65]; /* of the compressed file */
    size_t ntenants;
    char **tenants; /* owned: tenants with rows in this file */
};

/* A sealed batch: files on disk in `dir`, plus what its manifest says. */
struct zetl_batch {
    char *stream;       /* owned */
    char *dir;          /* owned: spool directory holding the files */
    uint64_t seq;       /* per-stream sequence number of the batch */
    uint64_t first_lsn; /* commit LSN of the first transaction */
    uint64_t last_lsn;  /* commit LSN of the last transaction */
    uint64_t end_lsn;   /* end LSN of the last transaction's commit: what the slot may confirm */
    int64_t first_commit_time; /* PostgreSQL epoch microseconds */
    int64_t last_commit_time;
    uint64_t ntxns;
    uint64_t nrows;
    uint64_t raw_bytes;     /* uncompressed CSV bytes */
    uint64_t snapshot_rows; /* of nrows, copied by a snapshot (inserts of existing rows) */
    /*
     * Commit LSNs of the transactions whose rows a snapshot copied, in
     * order (not in the manifest: the Kafka sink marks their rows "r").
     */
    uint64_t *snapshot_lsns; /* owned */
    size_t nsnapshot_lsns;
    char *tenant_column; /* owned */
    size_t nfiles;
    struct zetl_batch_file *files; /* owned */
};

void zetl_batch_free(struct zetl_batch *b);

/*
 * Where a change goes: its tenant, the (unioned) table and the source
 * columns kept, as the transforms decided them for its relation.
 */
struct zetl_batch_target {
    const char *tenant;        /* borrowed */
    const char *table;         /* borrowed */
    uint16_t nout;             /* columns kept */
    const uint16_t *out_index; /* borrowed, nout entries: source column index of each */
};

/* One change after transforms, ready to be written. */
struct zetl_row {
    enum zetl_op op;
    struct zetl_batch_target target;
    const struct zetl_relation *rel; /* borrowed: column names and types */
    const struct zetl_value *values; /* borrowed: target.nout values; NULL for truncate */
};

struct zetl_batch_writer;

/*
 * Creates a writer for `stream` spooling under `spool_dir` (created if
 * missing): batches fill <spool_dir>/<stream>/open-<seq>/ and are renamed to
 * sealed-<seq>/ when sealed; open-* directories left by a crash are removed
 * here, and numbering continues after any sealed-* left behind.  `relcache`
 * (borrowed) resolves custom type names.  Returns ZETL_ERR_IO when the
 * directory cannot be created or written.
 */
enum zetl_err zetl_batch_writer_new(const char *spool_dir, const char *stream,
                                    const char *tenant_column, struct zetl_relcache *relcache,
                                    struct zetl_batch_writer **out, struct zetl_errbuf *eb);
void zetl_batch_writer_free(struct zetl_batch_writer *w);

/* Starts a transaction committed at commit_lsn / commit_time. */
enum zetl_err zetl_batch_begin_txn(struct zetl_batch_writer *w, uint64_t commit_lsn,
                                   int64_t commit_time, struct zetl_errbuf *eb);
/*
 * Appends one change of the open transaction. ZETL_ERR_IO on write failure
 * (disk full).  After any error the batch refuses more work (ZETL_ERR_FATAL)
 * until zetl_batch_discard.
 */
enum zetl_err zetl_batch_add(struct zetl_batch_writer *w, const struct zetl_row *row,
                             struct zetl_errbuf *eb);
/*
 * `n` rows of the open transaction were copied by a snapshot (the manifest
 * says how many; the batch's snapshot_lsns which transactions).
 */
void zetl_batch_note_snapshot_rows(struct zetl_batch_writer *w, uint64_t n);

/*
 * Sets the _zetl_seq of the open transaction's next row (zetl load writes
 * each change as a transaction of its own, with its source order).
 */
void zetl_batch_set_next_seq(struct zetl_batch_writer *w, uint64_t seq);

/* Closes the open transaction; end_lsn is the commit's end LSN. */
enum zetl_err zetl_batch_end_txn(struct zetl_batch_writer *w, uint64_t end_lsn,
                                 struct zetl_errbuf *eb);

/*
 * True when the open batch holds whole transactions and reached a limit
 * (rows, uncompressed bytes, age since its first transaction began); a limit
 * of 0 is not checked.
 */
bool zetl_batch_should_seal(const struct zetl_batch_writer *w, uint64_t max_rows,
                            uint64_t max_bytes, uint64_t max_age_ms, int64_t now_ms);
/*
 * When (zetl_now_ms clock) the open batch reaches max_age_ms, so a loop can
 * wait exactly that long; -1 when it holds no whole transaction to seal or
 * max_age_ms is 0.
 */
int64_t zetl_batch_seal_deadline(const struct zetl_batch_writer *w, uint64_t max_age_ms);
/* Rows in whole transactions not yet sealed. */
uint64_t zetl_batch_pending_rows(const struct zetl_batch_writer *w);
bool zetl_batch_in_txn(const struct zetl_batch_writer *w);

/*
 * Finishes every file (zstd frame end, fsync, close) and hands the batch to
 * the caller (*out owned; free with zetl_batch_free).  *out is NULL when the
 * batch holds no transaction.  Must not be called inside a transaction.
 */
enum zetl_err zetl_batch_seal(struct zetl_batch_writer *w, struct zetl_batch **out,
                              struct zetl_errbuf *eb);
/* Throws away the open batch and any open transaction (after a disconnect). */
void zetl_batch_discard(struct zetl_batch_writer *w);

/* Room for a formatted time and its NUL. */
#define ZETL_BATCH_TIME_LEN 48

/*
 * Formats PostgreSQL-epoch microseconds as UTC text: "YYYY-MM-DD
 * HH:MM:SS.ffffff+00" (the _zetl_commit_ts column) or, when `iso`, RFC 3339
 * "YYYY-MM-DDTHH:MM:SS.ffffffZ" (the manifest).  Returns the length.
 */
size_t zetl_batch_format_time(int64_t pg_usec, bool iso, char out[ZETL_BATCH_TIME_LEN]);

/*
 * Type text of a column as the manifest and the warehouse see it: the
 * built-in name with its typmod ("numeric(30,2)", "varchar(20)",
 * "timestamptz(3)"), array types by their internal name ("_int4"), custom
 * types as "schema.name" from `relcache` (borrowed, may be NULL), else
 * "oid:N".  Returns an owned string.
 */
char *zetl_batch_type_text(struct zetl_relcache *relcache, uint32_t typoid, int32_t typmod);

#endif
