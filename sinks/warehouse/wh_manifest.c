/*
 * manifest.json of an archived batch as the warehouse sink reads it: read
 * and validated by proto/manifest.c, then each column's type canonicalized
 * for the warehouse's comparisons (zetl_wh_canon_type).
 */
#include "sinks/warehouse/wh_manifest.h"

#include "common/mem.h"
#include "sinks/warehouse/wh_dialect.h"

#include <stdio.h>
#include <string.h>

void zetl_wh_manifest_release(struct manifest *m)
{
    zetl_manifest_release(&m->pm);
    memset(m, 0, sizeof(*m));
    zetl_manifest_init(&m->pm);
}

/* The warehouse's view of file `pf`, allocated in the manifest's arena. */
static void view_file(struct zetl_arena *arena, const struct zetl_manifest_file *pf,
                      struct mfile *f)
{
    f->table = pf->table;
    f->file = pf->file;
    f->sha256 = pf->sha256;
    f->rows = pf->rows;
    f->bytes = pf->bytes;
    f->ncols = pf->ncols;
    f->cols = zetl_arena_alloc(arena, (pf->ncols ? pf->ncols : 1) * sizeof(*f->cols));
    for (size_t k = 0; k < pf->ncols; k++) {
        f->cols[k].name = pf->cols[k].name;
        f->cols[k].type = zetl_wh_canon_type(pf->cols[k].type);
        f->cols[k].key = pf->cols[k].key;
    }
}

enum zetl_err zetl_wh_manifest_load(const char *dir, struct manifest *m, struct zetl_errbuf *eb)
{
    char path[4096];
    size_t dlen = strlen(dir);
    enum zetl_err err;

    memset(m, 0, sizeof(*m));
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    m->name = dir;
    for (size_t i = 0; i < dlen; i++)
        if (dir[i] == '/' && i + 1 < dlen)
            m->name = dir + i + 1;
    snprintf(path, sizeof(path), "%.*s/%s", (int)dlen, dir, ZETL_MANIFEST_NAME);
    /* Any stream: the caller checks offsets against the stream the manifest names. */
    if ((err = zetl_manifest_read_file(path, NULL, &m->pm, eb)) != ZETL_OK)
        return err;
    m->stream = m->pm.stream;
    m->first_lsn = m->pm.first_lsn;
    m->last_lsn = m->pm.last_lsn;
    m->end_lsn = m->pm.end_lsn;
    m->nfiles = m->pm.nfiles;
    m->files = zetl_arena_alloc(&m->pm.arena, (m->nfiles ? m->nfiles : 1) * sizeof(*m->files));
    for (size_t i = 0; i < m->nfiles; i++)
        view_file(&m->pm.arena, &m->pm.files[i], &m->files[i]);
    return ZETL_OK;
}
