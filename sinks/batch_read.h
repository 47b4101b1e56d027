/*
 * Reading a sealed batch back, row by row: every file of the batch
 * decompressed as it streams and parsed from the CSV layout sinks/batch.h
 * describes, merged across files in commit order (_zetl_lsn, then
 * _zetl_seq), so a reader sees the batch's changes in the order the source
 * made them.  Memory stays bounded: one decompression window and one row per
 * file.  The Kafka sink publishes from it.
 */
#ifndef ZETL_BATCH_READ_H
#define ZETL_BATCH_READ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "sinks/batch.h"

/* One row of a batch file; every pointer is valid until the next zetl_batch_reader_next. */
struct zetl_batch_rec {
    enum zetl_op op;
    uint64_t lsn;      /* _zetl_lsn: commit LSN of the transaction */
    uint32_t seq;      /* _zetl_seq */
    int64_t commit_us; /* _zetl_commit_ts as PostgreSQL-epoch microseconds */
    const char *tenant;
    size_t tenant_len;
    const struct zetl_batch_file *file; /* borrowed from the batch: table, columns */
    const char *const *val;             /* file->ncols values; NULL: SQL NULL */
    const size_t *len;
    const unsigned char
        *unchanged; /* file->ncols flags from _zetl_unchanged (1: not in the change) */
    bool any_unchanged;
};

struct zetl_batch_reader;

/*
 * Opens every file of b (borrowed; must outlive the reader) in directory
 * `dir` (b->dir before an archive moved them, or where a fetch put them).
 * ZETL_ERR_IO when a file cannot be opened.
 */
enum zetl_err zetl_batch_reader_open(const struct zetl_batch *b, const char *dir,
                                     struct zetl_batch_reader **out, struct zetl_errbuf *eb);
/*
 * The next row in (lsn, seq) order over all files; *out NULL at the end.
 * Each file's sha256 and row count are checked against the batch when it
 * ends: a mismatch, a truncated or malformed file is ZETL_ERR_FATAL naming
 * the file (and the row number for a malformed row).
 */
enum zetl_err zetl_batch_reader_next(struct zetl_batch_reader *r, const struct zetl_batch_rec **out,
                                     struct zetl_errbuf *eb);
void zetl_batch_reader_free(struct zetl_batch_reader *r); /* NULL: no-op */

#endif
