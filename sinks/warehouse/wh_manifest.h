/*
 * The warehouse sink's view of a batch's manifest.json: proto/manifest.h
 * reads and validates it (one policy for every reader); this adds what only
 * the warehouse needs, the batch's directory name and each column's
 * canonical type (zetl_wh_canon_type).
 */
#ifndef ZETL_WH_MANIFEST_H
#define ZETL_WH_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "proto/manifest.h"

struct mcol {
    const char *name; /* borrowed from pm's arena */
    const char *type; /* borrowed: canonical (zetl_wh_canon_type), static or in pm's arena */
    bool key;
};

struct mfile {
    const char *table;  /* borrowed from pm's arena */
    const char *file;   /* borrowed from pm's arena */
    const char *sha256; /* borrowed from pm's arena */
    uint64_t rows;
    uint64_t bytes;
    size_t ncols;
    struct mcol *cols; /* in pm's arena */
};

struct manifest {
    struct zetl_manifest pm; /* owned: what proto/manifest.c read; its arena holds the rest */
    const char *stream;      /* borrowed from pm */
    const char *name;        /* borrowed from the directory path: "<first>-<last>" */
    uint64_t first_lsn, last_lsn, end_lsn;
    size_t nfiles;
    struct mfile *files; /* in pm's arena */
};

/*
 * Reads dir/manifest.json into *m (released with zetl_wh_manifest_release,
 * also after a failure): ZETL_ERR_PROTOCOL naming the field when it is not a
 * valid version 1 manifest (proto/manifest.h), ZETL_ERR_IO when it cannot be
 * read.  m->name points into dir.
 */
enum zetl_err zetl_wh_manifest_load(const char *dir, struct manifest *m, struct zetl_errbuf *eb);
void zetl_wh_manifest_release(struct manifest *m);

#endif
