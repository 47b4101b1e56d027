/* Per-transaction spill files for streamed transactions. */
#include "replicator/spill.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/mem.h"

/* A single pgoutput message is at most 1 GiB of tuple data plus headers. */
#define SPILL_MAX_RECORD ((size_t)1 << 30) + (1 << 20)
#define SPILL_IOBUF (64 * 1024)

struct spill_txn {
    uint32_t xid;
    FILE *f;
    char *path;
    uint32_t *aborted; /* subtransactions rolled back */
    size_t naborted;
};

struct zetl_spill {
    char *dir;
    struct spill_txn *txns;
    size_t ntxns;
};

static void txn_remove(struct zetl_spill *sp, size_t i)
{
    struct spill_txn *t = &sp->txns[i];

    if (t->f)
        fclose(t->f);
    unlink(t->path);
    free(t->path);
    free(t->aborted);
    sp->txns[i] = sp->txns[--sp->ntxns];
}

static struct spill_txn *txn_find(struct zetl_spill *sp, uint32_t xid, size_t *idx)
{
    for (size_t i = 0; i < sp->ntxns; i++)
        if (sp->txns[i].xid == xid) {
            if (idx)
                *idx = i;
            return &sp->txns[i];
        }
    return NULL;
}

enum zetl_err zetl_spill_new(const char *dir, struct zetl_spill **out, struct zetl_errbuf *eb)
{
    struct zetl_spill *sp;
    DIR *d;
    struct dirent *de;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not create directory \"%s\": %s", dir,
                            strerror(errno));
    d = opendir(dir);
    if (d == NULL)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open directory \"%s\": %s", dir,
                            strerror(errno));
    /* Leftovers of a previous run belong to transactions the server will stream again. */
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "xid-", 4) == 0) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            unlink(path);
        }
    }
    closedir(d);
    sp = zetl_calloc(1, sizeof(*sp));
    sp->dir = zetl_strdup(dir);
    *out = sp;
    return ZETL_OK;
}

void zetl_spill_free(struct zetl_spill *sp)
{
    if (sp == NULL)
        return;
    zetl_spill_clear(sp);
    free(sp->txns);
    free(sp->dir);
    free(sp);
}

void zetl_spill_clear(struct zetl_spill *sp)
{
    while (sp->ntxns > 0)
        txn_remove(sp, sp->ntxns - 1);
}

enum zetl_err zetl_spill_append(struct zetl_spill *sp, uint32_t xid, const uint8_t *msg, size_t len,
                                struct zetl_errbuf *eb)
{
    struct spill_txn *t = txn_find(sp, xid, NULL);
    uint32_t len32 = (uint32_t)len;

    if (t == NULL) {
        char path[4096];
        FILE *f;

        snprintf(path, sizeof(path), "%s/xid-%u.spill", sp->dir, xid);
        f = fopen(path, "w+");
        if (f == NULL)
            return zetl_err_set(eb, ZETL_ERR_IO, "could not create spill file \"%s\": %s", path,
                                strerror(errno));
        setvbuf(f, NULL, _IOFBF, SPILL_IOBUF);
        sp->txns = zetl_realloc(sp->txns, (sp->ntxns + 1) * sizeof(*sp->txns));
        t = &sp->txns[sp->ntxns++];
        memset(t, 0, sizeof(*t));
        t->xid = xid;
        t->f = f;
        t->path = zetl_strdup(path);
    }
    if (fwrite(&len32, sizeof(len32), 1, t->f) != 1 || fwrite(msg, 1, len, t->f) != len)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not write spill file \"%s\": %s", t->path,
                            strerror(errno));
    return ZETL_OK;
}

void zetl_spill_abort(struct zetl_spill *sp, uint32_t xid, uint32_t subxid)
{
    size_t i;
    struct spill_txn *t = txn_find(sp, xid, &i);

    if (t == NULL)
        return;
    if (subxid == xid || subxid == 0) {
        txn_remove(sp, i);
        return;
    }
    t->aborted = zetl_realloc(t->aborted, (t->naborted + 1) * sizeof(uint32_t));
    t->aborted[t->naborted++] = subxid;
}

static bool is_aborted(const struct spill_txn *t, uint32_t xid)
{
    for (size_t i = 0; i < t->naborted; i++)
        if (t->aborted[i] == xid)
            return true;
    return false;
}

enum zetl_err zetl_spill_replay(struct zetl_spill *sp, uint32_t xid, zetl_spill_cb cb, void *arg,
                                struct zetl_errbuf *eb)
{
    size_t idx;
    struct spill_txn *t = txn_find(sp, xid, &idx);
    struct zetl_buf rec;
    enum zetl_err err = ZETL_OK;

    if (t == NULL)
        return ZETL_OK;
    zetl_buf_init(&rec, SPILL_MAX_RECORD);
    if (fflush(t->f) != 0 || fseek(t->f, 0, SEEK_SET) != 0) {
        err = zetl_err_set(eb, ZETL_ERR_IO, "could not rewind spill file \"%s\": %s", t->path,
                           strerror(errno));
        goto done;
    }
    for (;;) {
        uint32_t len;
        size_t n = fread(&len, 1, sizeof(len), t->f);

        if (n == 0 && feof(t->f))
            break;
        if (n != sizeof(len) || len == 0) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "spill file \"%s\" is damaged", t->path);
            goto done;
        }
        zetl_buf_reset(&rec);
        if (!zetl_buf_reserve(&rec, len)) {
            err =
                zetl_err_set(eb, ZETL_ERR_IO, "spill file \"%s\" has an oversized record", t->path);
            goto done;
        }
        if (fread(rec.data, 1, len, t->f) != len) {
            err = zetl_err_set(eb, ZETL_ERR_IO, "could not read spill file \"%s\": %s", t->path,
                               ferror(t->f) ? strerror(errno) : "unexpected end of file");
            goto done;
        }
        rec.len = len;
        /* Changes inside a stream carry their (sub)transaction xid after the type byte. */
        if (t->naborted > 0 && len >= 5 && memchr("IUDTM", rec.data[0], 5) != NULL) {
            const uint8_t *p = (const uint8_t *)rec.data + 1;
            uint32_t mxid =
                (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            if (is_aborted(t, mxid))
                continue;
        }
        err = cb(arg, (const uint8_t *)rec.data, rec.len, eb);
        if (err)
            goto done;
    }
done:
    zetl_buf_release(&rec);
    /* Whatever happened, this transaction's file is not used again: on error the job stops. */
    t = txn_find(sp, xid, &idx);
    if (t)
        txn_remove(sp, idx);
    return err;
}
