/*
 * Reading a sealed batch back (sinks/batch_read.h): each file streams from
 * disk through its own zstd decompressor into one buffer that holds the row
 * being parsed; rows are parsed in place (quoted fields are unescaped where
 * they lie, every value is a slice of that buffer) and the files' current
 * rows are merged by (_zetl_lsn, _zetl_seq) with a binary heap.
 *
 * The CSV layout read here is the one sinks/batch.c writes (see
 * sinks/batch.h): records end at an unquoted LF; a field is either raw bytes
 * up to the next comma or LF (empty: NULL), or a double-quoted string in
 * which "" stands for one quote and commas, CR and LF are data; after its
 * closing quote comes a comma or the LF.  Each record has exactly
 * ZETL_BATCH_META_COLS + ncols fields:
 *
 *   _zetl_op,_zetl_lsn,_zetl_seq,_zetl_commit_ts,_zetl_unchanged,<tenant>,<columns>...
 *
 * Nothing here trusts the file: the sha256 and size of the compressed bytes
 * and the row count are compared with the batch at the end of each file,
 * and any error on the way (zstd, CSV, meta column) also says whether the
 * file's bytes match the batch, so a corrupted file is reported as such.
 */
#include "sinks/batch_read.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "common/mem.h"
#include "common/sha256.h"

/*
 * Decompressed bytes per file are produced up to this many at a time, and
 * the buffer returns to this size after a big row: twice ZSTD_DStreamOutSize,
 * small enough for batches of many files (1 MiB measured no faster).
 */
#define READ_CHUNK ((size_t)256 << 10)
/* A refill is worth a decompression call only with at least this much room. */
#define READ_FILL_MIN ((size_t)64 << 10)
/* Compressed bytes read per read(2): about ZSTD_DStreamInSize. */
#define READ_IN_SIZE ((size_t)128 << 10)
/*
 * One row must fit in the buffer: a 1 GB value (PostgreSQL's largest) quoted
 * with every byte a doubled quote is 2 GB; this leaves room for the rest.
 */
#define READ_ROW_MAX ((size_t)4 << 30)
/* The writer uses a 1 MiB window; refuse frames that would make us allocate more than 8 MiB. */
#define READ_ZSTD_WINDOW_LOG_MAX 23

/* One field of the record being parsed: [s, e) of the buffer. */
struct span {
    char *s;
    char *e;
    bool quoted; /* "..." (so never NULL) */
    bool dq;     /* holds doubled quotes to collapse */
};

/* One file of the batch and its current row. */
struct rfile {
    const struct zetl_batch_file *bf; /* borrowed */
    char *path;                       /* owned, for messages */
    int fd;
    ZSTD_DCtx *dctx; /* owned */
    size_t zret;     /* last ZSTD_decompressStream result: 0 at the end of a frame */
    unsigned char *in;
    ZSTD_inBuffer zin;
    bool eof;     /* read(2) returned 0 */
    bool drained; /* eof, and the decompressor has nothing more */
    bool done;    /* every row read and the file checked */
    struct zetl_sha256 sha;
    bool sha_final;
    char sha_hex[65];
    uint64_t bytes; /* compressed bytes read */

    /* Decompressed bytes: [pos, len) not yet parsed. */
    char *data;
    size_t cap, pos, len;

    size_t nfields;
    struct span *sp;     /* nfields */
    const char **val;    /* bf->ncols */
    size_t *vlen;        /* bf->ncols */
    unsigned char *unch; /* bf->ncols */
    uint64_t rows;       /* rows parsed so far */
    struct zetl_batch_rec rec;

    /* The commit time of the previous row: a transaction's rows repeat it. */
    char ts_text[ZETL_BATCH_TIME_LEN];
    size_t ts_len;
    int64_t ts_us;
};

struct zetl_batch_reader {
    const struct zetl_batch *b; /* borrowed */
    size_t nfiles;
    struct rfile *files; /* owned, nfiles */
    size_t *heap;        /* indexes into files, min-heap by (lsn, seq) */
    size_t nheap;
    bool started;
    /* The row handed out last: its file is advanced by the next call. */
    bool have_prev;
    uint64_t prev_lsn;
    uint32_t prev_seq;
    const struct rfile *prev_file;
    enum zetl_err err; /* sticky: every later call fails the same way */
    struct zetl_errbuf failed;
};

/* ---- errors -------------------------------------------------------------- */

/* Reads what is left of the file into its hash and finishes it (for error reports). */
static void sha_finish(struct rfile *f)
{
    unsigned char chunk[65536];
    ssize_t n;

    if (f->sha_final)
        return;
    while (!f->eof && f->fd >= 0) {
        n = read(f->fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        zetl_sha256_update(&f->sha, chunk, (size_t)n);
        f->bytes += (uint64_t)n;
    }
    zetl_sha256_final_hex(&f->sha, f->sha_hex);
    f->sha_final = true;
}

/*
 * A malformed or truncated file: ZETL_ERR_FATAL naming the file, with
 * whether its bytes match the batch (a mismatch means the file is corrupt).
 */
static enum zetl_err file_error(struct rfile *f, struct zetl_errbuf *eb, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum zetl_err file_error(struct rfile *f, struct zetl_errbuf *eb, const char *fmt, ...)
{
    char detail[ZETL_ERRBUF_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    sha_finish(f);
    if (strcmp(f->sha_hex, f->bf->sha256) == 0 && f->bytes == f->bf->bytes)
        return zetl_err_set(eb, ZETL_ERR_FATAL, "could not read batch file \"%s\": %s", f->path,
                            detail);
    return zetl_err_set(eb, ZETL_ERR_FATAL,
                        "could not read batch file \"%s\": %s; the file does not match its batch "
                        "(sha256 %s, %" PRIu64 " bytes; batch: sha256 %s, %" PRIu64 " bytes)",
                        f->path, detail, f->sha_hex, f->bytes, f->bf->sha256, f->bf->bytes);
}

/* ---- decompression --------------------------------------------------------- */

/* Makes room after the unparsed bytes: moves them to the front, grows or shrinks the buffer. */
static enum zetl_err make_room(struct rfile *f, struct zetl_errbuf *eb)
{
    size_t keep = f->len - f->pos;

    if (f->pos > 0) {
        memmove(f->data, f->data + f->pos, keep);
        f->pos = 0;
        f->len = keep;
    }
    /*
     * A row that does not fit is scanned again from its start after each
     * refill, so each refill must add at least half of what is there: the
     * work stays linear in the row's size, the memory under twice of it.
     */
    if (f->cap - f->len < READ_FILL_MIN || f->cap - f->len < f->len / 2) {
        size_t want = f->cap;

        while (want < READ_ROW_MAX && (want - f->len < READ_FILL_MIN || want - f->len < f->len / 2))
            want += want / 2;
        if (want > READ_ROW_MAX)
            want = READ_ROW_MAX;
        if (want > f->cap) {
            f->data = zetl_realloc(f->data, want);
            f->cap = want;
        }
        if (f->cap == f->len)
            return file_error(f, eb, "row %" PRIu64 " is larger than %zu bytes", f->rows + 1,
                              READ_ROW_MAX);
    } else if (f->cap > READ_CHUNK && f->len < READ_CHUNK / 2) {
        /* The huge row is gone: give its memory back. */
        f->data = zetl_realloc(f->data, READ_CHUNK);
        f->cap = READ_CHUNK;
    }
    return ZETL_OK;
}

/* Decompresses as much as fits after the unparsed bytes; sets f->drained at the end of input. */
static enum zetl_err fill(struct rfile *f, struct zetl_errbuf *eb)
{
    enum zetl_err err;
    ZSTD_outBuffer out;
    size_t before;

    if ((err = make_room(f, eb)) != ZETL_OK)
        return err;
    out.dst = f->data;
    out.size = f->cap;
    out.pos = before = f->len;
    while (out.pos < out.size) {
        size_t at = out.pos, consumed, r;

        if (f->zin.pos == f->zin.size && !f->eof) {
            ssize_t n = read(f->fd, f->in, READ_IN_SIZE);

            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return zetl_err_set(eb, ZETL_ERR_IO, "could not read file \"%s\": %s", f->path,
                                    strerror(errno));
            if (n == 0) {
                f->eof = true;
            } else {
                zetl_sha256_update(&f->sha, f->in, (size_t)n);
                f->bytes += (uint64_t)n;
                f->zin.src = f->in;
                f->zin.size = (size_t)n;
                f->zin.pos = 0;
            }
        }
        consumed = f->zin.pos;
        /* Called even without input: the decompressor may still hold output. */
        r = ZSTD_decompressStream(f->dctx, &out, &f->zin);
        if (ZSTD_isError(r)) {
            f->len = out.pos;
            return file_error(f, eb, "could not decompress: %s", ZSTD_getErrorName(r));
        }
        /*
         * After a frame's end a call without input asks for the next frame's
         * header: only a call that moved says where the stream stands.
         */
        if (out.pos != at || f->zin.pos != consumed)
            f->zret = r;
        else if (f->eof && f->zin.pos == f->zin.size)
            break;
    }
    f->len = out.pos;
    if (f->len == before)
        f->drained = true;
    return ZETL_OK;
}

/* ---- CSV -------------------------------------------------------------------- */

enum scan { SCAN_ROW, SCAN_MORE, SCAN_BAD };

/*
 * Finds the fields of the record at f->pos without changing a byte, so that
 * a record cut by the end of the buffer can be scanned again after a
 * refill.  SCAN_ROW sets *next to the offset after its LF.
 */
static enum scan scan_record(struct rfile *f, size_t *next, const char **why)
{
    char *p = f->data + f->pos, *end = f->data + f->len, *eol = NULL;
    struct span *s = f->sp, *last = f->sp + f->nfields - 1;

    for (;; s++) {
        if (p < end && *p == '"') {
            char *q = p + 1;

            s->dq = false;
            for (;;) {
                q = memchr(q, '"', (size_t)(end - q));
                if (q == NULL || q + 1 >= end)
                    return SCAN_MORE;
                if (q[1] != '"')
                    break;
                s->dq = true;
                q += 2;
            }
            s->s = p + 1;
            s->e = q;
            s->quoted = true;
            p = q + 1;
            if (eol != NULL && eol < p)
                eol = NULL;
            if (*p == '\n')
                break;
            if (*p != ',') {
                *why = "unexpected character after a closing quote";
                return SCAN_BAD;
            }
        } else {
            char *c;

            if (eol == NULL && (eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
                return SCAN_MORE;
            s->s = p;
            s->quoted = s->dq = false;
            c = memchr(p, ',', (size_t)(eol - p));
            if (c == NULL) {
                s->e = p = eol;
                break;
            }
            s->e = p = c;
        }
        /* p is at a comma: another field follows. */
        if (s == last) {
            *why = "more fields than the file has columns";
            return SCAN_BAD;
        }
        p++;
    }
    if (s != last) {
        *why = "fewer fields than the file has columns";
        return SCAN_BAD;
    }
    *next = (size_t)(p + 1 - f->data);
    return SCAN_ROW;
}

/* Collapses the doubled quotes of a quoted field in place; returns its new length. */
static size_t unescape(char *s, char *e)
{
    char *w = memchr(s, '"', (size_t)(e - s)), *r = w;

    /* Inside a well-formed quoted field every quote starts a pair. */
    while (r != NULL && r < e) {
        char *q;
        size_t n;

        *w++ = '"';
        r += 2;
        q = memchr(r, '"', (size_t)(e - r));
        n = (size_t)((q ? q : e) - r);
        memmove(w, r, n);
        w += n;
        r += n;
    }
    return (size_t)((w ? w : e) - s);
}

/* The value of a field: NULL for SQL NULL, else NUL-terminated text in place. */
static const char *field_value(struct span *s, size_t *len)
{
    size_t n;

    if (!s->quoted && s->s == s->e) {
        *len = 0;
        return NULL;
    }
    n = s->dq ? unescape(s->s, s->e) : (size_t)(s->e - s->s);
    /* The byte after a value is its delimiter or closing quote: free to overwrite. */
    s->s[n] = '\0';
    *len = n;
    return s->s;
}

/* ---- meta columns ----------------------------------------------------------- */

static bool parse_u64(const struct span *s, uint64_t *out)
{
    uint64_t v = 0;

    if (s->quoted || s->s == s->e || s->e - s->s > 20)
        return false;
    for (const char *p = s->s; p < s->e; p++) {
        unsigned d = (unsigned)(unsigned char)*p - '0';

        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* n decimal digits at *p (advanced); false when a byte is not a digit. */
static bool take_digits(const char **p, int n, int64_t *out)
{
    int64_t v = 0;

    for (int i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)(*p)[i] - '0';

        if (d > 9)
            return false;
        v = v * 10 + d;
    }
    *p += n;
    *out = v;
    return true;
}

/* Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/*
 * The inverse of zetl_batch_format_time(..., false, ...): "YYYY-MM-DD
 * HH:MM:SS.ffffff+00" (the year as %04d: 4 to 6 digits, or '-' and 3 to 6)
 * to PostgreSQL-epoch microseconds.
 */
static bool parse_commit_ts(const char *s, size_t n, int64_t *out)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s, *e = s + n;
    int64_t y = 0, mo, d, h, mi, sec, us, secs;
    bool neg = false;
    int yd = 0;

    if (p < e && *p == '-') {
        neg = true;
        p++;
    }
    while (p < e && *p >= '0' && *p <= '9' && yd <= 6) {
        y = y * 10 + (*p++ - '0');
        yd++;
    }
    if (yd < (neg ? 3 : 4) || yd > 6 || e - p != 25)
        return false;
    if (neg)
        y = -y;
    /* -MM-DD HH:MM:SS.ffffff+00 */
    if (p[0] != '-' || p[3] != '-' || p[6] != ' ' || p[9] != ':' || p[12] != ':' || p[15] != '.' ||
        memcmp(p + 22, "+00", 3) != 0)
        return false;
    p++;
    if (!take_digits(&p, 2, &mo) || (p++, !take_digits(&p, 2, &d)) ||
        (p++, !take_digits(&p, 2, &h)) || (p++, !take_digits(&p, 2, &mi)) ||
        (p++, !take_digits(&p, 2, &sec)) || (p++, !take_digits(&p, 6, &us)))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59)
        return false;
    if (d > mdays[mo - 1] + (mo == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)))
        return false;
    secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    /* Years of at most 6 digits keep secs far from overflow; the microseconds may not be. */
    if (secs > (INT64_MAX - us) / 1000000 || secs < INT64_MIN / 1000000 + 1)
        return false;
    secs = secs * 1000000 + us;
    if (secs < INT64_MIN + ZETL_PG_EPOCH_OFFSET_USEC)
        return false;
    *out = secs - ZETL_PG_EPOCH_OFFSET_USEC;
    return true;
}

/* _zetl_unchanged: NULL or {i,j,...} of 0-based column indexes. */
static bool parse_unchanged(struct rfile *f, const struct span *s)
{
    size_t ncols = f->bf->ncols;
    const char *p = s->s, *e = s->e;

    if (f->rec.any_unchanged) {
        memset(f->unch, 0, ncols ? ncols : 1);
        f->rec.any_unchanged = false;
    }
    if (!s->quoted && p == e)
        return true;
    if (s->dq || e - p < 2 || *p != '{' || e[-1] != '}')
        return false;
    p++;
    e--;
    if (p == e)
        return true; /* {} */
    for (;;) {
        uint64_t k = 0;
        const char *start = p;

        while (p < e && *p >= '0' && *p <= '9' && p - start < 10)
            k = k * 10 + (uint64_t)(*p++ - '0');
        if (p == start || k >= ncols)
            return false;
        f->unch[k] = 1;
        f->rec.any_unchanged = true;
        if (p == e)
            return true;
        if (*p++ != ',')
            return false;
    }
}

/* Fills f->rec from the fields scan_record found. */
static enum zetl_err decode_record(struct rfile *f, struct zetl_errbuf *eb)
{
    struct span *sp = f->sp;
    struct zetl_batch_rec *rec = &f->rec;
    uint64_t row = f->rows + 1, lsn, seq;
    size_t tslen = (size_t)(sp[3].e - sp[3].s);
    char op;

    op = sp[0].e - sp[0].s == 1 && !sp[0].quoted ? sp[0].s[0] : '?';
    if (op != ZETL_OP_INSERT && op != ZETL_OP_UPDATE && op != ZETL_OP_DELETE &&
        op != ZETL_OP_BEFORE && op != ZETL_OP_TRUNCATE)
        return file_error(f, eb, "row %" PRIu64 ": invalid _zetl_op", row);
    if (!parse_u64(&sp[1], &lsn))
        return file_error(f, eb, "row %" PRIu64 ": invalid _zetl_lsn", row);
    if (!parse_u64(&sp[2], &seq) || seq > UINT32_MAX)
        return file_error(f, eb, "row %" PRIu64 ": invalid _zetl_seq", row);
    if (f->rows > 0 && (lsn < rec->lsn || (lsn == rec->lsn && seq <= rec->seq)))
        return file_error(f, eb,
                          "row %" PRIu64 ": (_zetl_lsn, _zetl_seq) (%" PRIu64 ", %" PRIu64
                          ") does not follow (%" PRIu64 ", %" PRIu32 ")",
                          row, lsn, seq, rec->lsn, rec->seq);
    if (sp[3].quoted || tslen != f->ts_len || memcmp(sp[3].s, f->ts_text, tslen) != 0) {
        if (sp[3].quoted || tslen >= sizeof(f->ts_text) ||
            !parse_commit_ts(sp[3].s, tslen, &f->ts_us))
            return file_error(f, eb, "row %" PRIu64 ": invalid _zetl_commit_ts", row);
        memcpy(f->ts_text, sp[3].s, tslen);
        f->ts_len = tslen;
    }
    if (!parse_unchanged(f, &sp[4]))
        return file_error(f, eb, "row %" PRIu64 ": invalid _zetl_unchanged", row);
    rec->op = (enum zetl_op)op;
    rec->lsn = lsn;
    rec->seq = (uint32_t)seq;
    rec->commit_us = f->ts_us;
    if ((rec->tenant = field_value(&sp[5], &rec->tenant_len)) == NULL)
        return file_error(f, eb, "row %" PRIu64 ": tenant is NULL", row);
    for (size_t k = 0; k < f->bf->ncols; k++)
        f->val[k] = field_value(&sp[ZETL_BATCH_META_COLS + k], &f->vlen[k]);
    return ZETL_OK;
}

/* ---- files ------------------------------------------------------------------ */

/* Releases what a file needs only while it is read. */
static void rfile_close(struct rfile *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    ZSTD_freeDCtx(f->dctx);
    f->dctx = NULL;
    free(f->in);
    f->in = NULL;
    free(f->data);
    f->data = NULL;
    f->cap = f->pos = f->len = 0;
}

/* At the end of a file: the frame is whole, the bytes and the row count are the batch's. */
static enum zetl_err rfile_finish(struct rfile *f, struct zetl_errbuf *eb)
{
    if (f->zret != 0)
        return file_error(f, eb, "the zstd frame is truncated");
    if (f->pos < f->len)
        return file_error(f, eb, "row %" PRIu64 " is cut short (no end of line)", f->rows + 1);
    sha_finish(f);
    if (strcmp(f->sha_hex, f->bf->sha256) != 0 || f->bytes != f->bf->bytes)
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "batch file \"%s\" does not match its batch (sha256 %s, %" PRIu64
                            " bytes; batch: sha256 %s, %" PRIu64 " bytes)",
                            f->path, f->sha_hex, f->bytes, f->bf->sha256, f->bf->bytes);
    if (f->rows != f->bf->rows)
        return zetl_err_set(eb, ZETL_ERR_FATAL,
                            "batch file \"%s\" has %" PRIu64 " rows; its batch says %" PRIu64,
                            f->path, f->rows, f->bf->rows);
    f->done = true;
    rfile_close(f);
    return ZETL_OK;
}

/* Parses the file's next row into f->rec; *more false (file checked and closed) at its end. */
static enum zetl_err rfile_advance(struct rfile *f, bool *more, struct zetl_errbuf *eb)
{
    enum zetl_err err;
    const char *why = NULL;
    size_t next = 0;

    *more = false;
    for (;;) {
        switch (scan_record(f, &next, &why)) {
        case SCAN_ROW:
            if (f->rows == f->bf->rows)
                return file_error(f, eb, "more rows than the %" PRIu64 " its batch says",
                                  f->bf->rows);
            if ((err = decode_record(f, eb)) != ZETL_OK)
                return err;
            f->pos = next;
            f->rows++;
            *more = true;
            return ZETL_OK;
        case SCAN_BAD:
            return file_error(f, eb, "row %" PRIu64 ": %s", f->rows + 1, why);
        case SCAN_MORE:
            break;
        }
        if (f->drained)
            return rfile_finish(f, eb);
        if ((err = fill(f, eb)) != ZETL_OK)
            return err;
    }
}

static enum zetl_err rfile_open(struct rfile *f, const struct zetl_batch_file *bf, const char *dir,
                                struct zetl_errbuf *eb)
{
    size_t n = bf->ncols ? bf->ncols : 1;
    size_t plen = strlen(dir) + 1 + strlen(bf->file) + 1;

    f->bf = bf;
    f->fd = -1;
    f->path = zetl_malloc(plen);
    snprintf(f->path, plen, "%s/%s", dir, bf->file);
    zetl_sha256_init(&f->sha);
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return zetl_err_set(eb, ZETL_ERR_IO, "could not open file \"%s\": %s", f->path,
                            strerror(errno));
    (void)posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    f->dctx = ZSTD_createDCtx();
    if (f->dctx == NULL) {
        fprintf(stderr, "FATAL:  could not create zstd context\n");
        abort();
    }
    ZSTD_DCtx_setParameter(f->dctx, ZSTD_d_windowLogMax, READ_ZSTD_WINDOW_LOG_MAX);
    f->zret = 1;          /* an empty file holds no frame: truncated */
    f->ts_len = SIZE_MAX; /* no commit time seen yet */
    f->in = zetl_malloc(READ_IN_SIZE);
    f->zin.src = f->in;
    f->data = zetl_malloc(READ_CHUNK);
    f->cap = READ_CHUNK;
    f->nfields = ZETL_BATCH_META_COLS + bf->ncols;
    f->sp = zetl_calloc(f->nfields, sizeof(*f->sp));
    f->val = zetl_calloc(n, sizeof(*f->val));
    f->vlen = zetl_calloc(n, sizeof(*f->vlen));
    f->unch = zetl_calloc(n, 1);
    f->rec.file = bf;
    f->rec.val = f->val;
    f->rec.len = f->vlen;
    f->rec.unchanged = f->unch;
    return ZETL_OK;
}

/* ---- the merge ---------------------------------------------------------------- */

static bool rec_less(const struct rfile *a, const struct rfile *b)
{
    return a->rec.lsn < b->rec.lsn || (a->rec.lsn == b->rec.lsn && a->rec.seq < b->rec.seq);
}

static void heap_down(struct zetl_batch_reader *r, size_t i)
{
    size_t *h = r->heap, n = r->nheap, top = h[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= n)
            break;
        if (c + 1 < n && rec_less(&r->files[h[c + 1]], &r->files[h[c]]))
            c++;
        if (!rec_less(&r->files[h[c]], &r->files[top]))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = top;
}

/* Reads the first row of every file and orders them. */
static enum zetl_err reader_start(struct zetl_batch_reader *r, struct zetl_errbuf *eb)
{
    enum zetl_err err;
    bool more;

    for (size_t i = 0; i < r->nfiles; i++) {
        if ((err = rfile_advance(&r->files[i], &more, eb)) != ZETL_OK)
            return err;
        if (more)
            r->heap[r->nheap++] = i;
    }
    for (size_t i = r->nheap / 2; i-- > 0;)
        heap_down(r, i);
    r->started = true;
    return ZETL_OK;
}

enum zetl_err zetl_batch_reader_next(struct zetl_batch_reader *r, const struct zetl_batch_rec **out,
                                     struct zetl_errbuf *eb)
{
    enum zetl_err err;
    struct rfile *f;
    bool more;

    *out = NULL;
    if (r->err != ZETL_OK)
        return zetl_err_set(eb, r->err, "%s", r->failed.msg);
    if (!r->started) {
        err = reader_start(r, eb);
    } else if (r->nheap > 0) {
        /* The file of the row handed out last moves on; the others keep their rows. */
        err = rfile_advance(&r->files[r->heap[0]], &more, eb);
        if (err == ZETL_OK && !more)
            r->heap[0] = r->heap[--r->nheap];
        if (err == ZETL_OK && r->nheap > 0)
            heap_down(r, 0);
    } else {
        return ZETL_OK;
    }
    if (err != ZETL_OK)
        goto fail;
    if (r->nheap == 0)
        return ZETL_OK;
    f = &r->files[r->heap[0]];
    /* Each file is in order by itself; equal keys in two files would be one change twice. */
    if (r->have_prev && f->rec.lsn == r->prev_lsn && f->rec.seq == r->prev_seq) {
        err = zetl_err_set(eb, ZETL_ERR_FATAL,
                           "batch files \"%s\" and \"%s\" both hold the change (_zetl_lsn, "
                           "_zetl_seq) (%" PRIu64 ", %" PRIu32 ")",
                           r->prev_file->path, f->path, f->rec.lsn, f->rec.seq);
        goto fail;
    }
    r->have_prev = true;
    r->prev_lsn = f->rec.lsn;
    r->prev_seq = f->rec.seq;
    r->prev_file = f;
    *out = &f->rec;
    return ZETL_OK;

fail:
    r->err = err;
    memcpy(r->failed.msg, eb->msg, sizeof(r->failed.msg));
    return err;
}

enum zetl_err zetl_batch_reader_open(const struct zetl_batch *b, const char *dir,
                                     struct zetl_batch_reader **out, struct zetl_errbuf *eb)
{
    struct zetl_batch_reader *r = zetl_calloc(1, sizeof(*r));
    enum zetl_err err;

    *out = NULL;
    r->b = b;
    r->nfiles = b->nfiles;
    r->files = zetl_calloc(b->nfiles ? b->nfiles : 1, sizeof(*r->files));
    r->heap = zetl_calloc(b->nfiles ? b->nfiles : 1, sizeof(*r->heap));
    for (size_t i = 0; i < b->nfiles; i++)
        r->files[i].fd = -1;
    for (size_t i = 0; i < b->nfiles; i++)
        if ((err = rfile_open(&r->files[i], &b->files[i], dir, eb)) != ZETL_OK)
            goto fail;
    *out = r;
    return ZETL_OK;

fail:
    zetl_batch_reader_free(r);
    return err;
}

void zetl_batch_reader_free(struct zetl_batch_reader *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nfiles; i++) {
        struct rfile *f = &r->files[i];

        rfile_close(f);
        zetl_sha256_release(&f->sha);
        free(f->path);
        free(f->sp);
        free(f->val);
        free(f->vlen);
        free(f->unch);
    }
    free(r->files);
    free(r->heap);
    free(r);
}
