/*
 * The archive's manifest.json (docs/archive-format.md): one write/read pair
 * and one validation policy for every reader (the file and S3 archives, the
 * warehouse).  zetl_manifest_write renders the bytes the archive has always
 * written; zetl_manifest_read accepts exactly what this header's policy says
 * and names the offending field when it refuses.
 *
 * Validation policy of a version 1 manifest (one JSON object, at most
 * ZETL_MANIFEST_MAX bytes, no duplicate keys, no trailing bytes):
 *   required  version (the integer 1); stream (a valid stream name, equal to
 *             the expected one when the caller names one); first_lsn,
 *             last_lsn, end_lsn ("%X/%X" text, or when the text is absent the
 *             *_lsn_int integer; when both are present they agree), ordered
 *             first_lsn <= last_lsn <= end_lsn; files (an array) whose
 *             entries have table (a non-empty string), file (a safe name:
 *             only [A-Za-z0-9_.%-], no leading '.', at most 255 bytes, not
 *             manifest.json, unique in the batch ignoring case), rows and bytes
 *             (non-negative integers), sha256 (64 lower-case hex digits) and
 *             columns (an array of objects with a non-empty name and type).
 *   optional  transactions, rows, raw_bytes, snapshot_rows (non-negative integers; 0 when
 *   (checked  absent); first_commit_time, last_commit_time, created_at,
 *   if there) tenant_column (strings; "" when absent); format (an object of
 *             type "csv" and compression "zstd"); files[].tenants (an array
 *             of strings); columns[].typoid (an integer 0..4294967295);
 *             columns[].key (a boolean; false when absent).
 * Other keys are ignored: the version number, not the key set, says what a
 * reader must understand.  No string may hold a NUL ("\u0000").
 */
#ifndef ZETL_MANIFEST_H
#define ZETL_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/mem.h"

#define ZETL_MANIFEST_NAME "manifest.json"
#define ZETL_MANIFEST_VERSION 1
/* A manifest larger than this is not one zetl wrote. */
#define ZETL_MANIFEST_MAX ((size_t)64 << 20)

/*
 * Every pointer below (strings and arrays) is owned by the manifest's arena
 * when zetl_manifest_read filled it.  A caller building a manifest to write
 * may point them at anything that outlives the zetl_manifest_write call, and
 * allocate in the arena what it must make (zetl_manifest_release frees only
 * the arena).
 */
struct zetl_manifest_col {
    const char *name; /* see above */
    const char *type; /* see above: type text of docs/archive-format.md ("numeric(12,2)") */
    uint32_t typoid;
    bool key; /* part of the source table's replica identity */
};

/* One data file of the batch: one table in one column shape. */
struct zetl_manifest_file {
    const char *table; /* see above: logical (unioned) table name */
    const char *file;  /* see above: file name within the batch directory */
    uint64_t rows;
    uint64_t bytes;  /* compressed size */
    char sha256[65]; /* of the compressed file, lower-case hex */
    size_t ntenants;
    const char *const *tenants; /* see above */
    size_t ncols;
    const struct zetl_manifest_col *cols; /* see above: CSV columns 7... */
};

struct zetl_manifest {
    const char *stream; /* see above */
    uint64_t first_lsn; /* commit LSN of the first transaction */
    uint64_t last_lsn;  /* commit LSN of the last transaction */
    uint64_t end_lsn;   /* end LSN of the last commit: what the slot may confirm */
    uint64_t transactions;
    uint64_t rows;
    uint64_t raw_bytes;            /* uncompressed CSV bytes */
    uint64_t snapshot_rows;        /* of rows, copied by a snapshot (0: none) */
    const char *first_commit_time; /* see above: RFC 3339 UTC with microseconds */
    const char *last_commit_time;  /* see above */
    const char *created_at;        /* see above */
    const char *tenant_column;     /* see above: name of CSV column 6 */
    size_t nfiles;
    const struct zetl_manifest_file *files; /* see above */
    struct zetl_arena arena;                /* owned */
};

/* An empty manifest (every string "", no files) with its arena ready. */
void zetl_manifest_init(struct zetl_manifest *m);
/* Frees the arena and everything read into it; m is empty afterwards. */
void zetl_manifest_release(struct zetl_manifest *m);

/* A stream name usable as a directory: non-empty, no '/', not "." or "..". */
bool zetl_manifest_stream_name_ok(const char *s);
/* A files[].file name under the policy above (safe to create in a batch directory). */
bool zetl_manifest_file_name_ok(const char *s);

/*
 * Reads a manifest time ("2024-03-05T12:34:56.789012Z": RFC 3339 UTC, the
 * fraction optional, at most 6 digits) as microseconds since the Unix epoch.
 * False for anything else, "" included.
 */
bool zetl_manifest_parse_time(const char *s, int64_t *unix_usec);

/*
 * Appends the manifest's JSON to out (uncapped: max 0): two-space indented,
 * keys in the order of docs/archive-format.md, ending in a newline.  Names
 * that are not valid UTF-8 (a SQL_ASCII source) get U+FFFD for each byte
 * outside ASCII.
 */
void zetl_manifest_write(const struct zetl_manifest *m, struct zetl_buf *out);

/*
 * Parses and validates `len` bytes of `text` (no NUL needed) into *out
 * (initialized here; release it even after an error).  expect_stream
 * (borrowed; NULL: any) must equal the manifest's stream.  Returns
 * ZETL_ERR_PROTOCOL naming the field ("files[2].sha256 is missing") for
 * anything outside the policy above.
 */
enum zetl_err zetl_manifest_read(const char *text, size_t len, const char *expect_stream,
                                 struct zetl_manifest *out, struct zetl_errbuf *eb);

/*
 * zetl_manifest_read of the file at `path` (borrowed), with the path in
 * every message: ZETL_ERR_IO when it cannot be read or is larger than
 * ZETL_MANIFEST_MAX, ZETL_ERR_PROTOCOL when it is not a valid manifest.
 */
enum zetl_err zetl_manifest_read_file(const char *path, const char *expect_stream,
                                      struct zetl_manifest *out, struct zetl_errbuf *eb);

#endif
