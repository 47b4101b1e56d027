/*
 * manifest.json, written and read in one place (docs/archive-format.md).
 *
 * Layout (version 1; the writer emits the keys in this order, the reader
 * looks them up by name):
 *   { version, stream, first_lsn, last_lsn, end_lsn ("%X/%X"),
 *     first_lsn_int, last_lsn_int, end_lsn_int (the same as integers),
 *     transactions, rows, raw_bytes, first_commit_time, last_commit_time,
 *     created_at, tenant_column,
 *     format { type, compression, header, null, meta_columns[] },
 *     files [ { table, file, rows, bytes, sha256, tenants[],
 *               columns [ { name, type, typoid, key } ] } ] }
 * The reader's validation policy is spelled out in manifest.h.
 */
#include "proto/manifest.h"

#include "common/utf8.h"
#include "common/fs.h"
#include "common/lsn.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* NAME_MAX: a longer file name could not have been created. */
#define MANIFEST_FILE_NAME_MAX 255
/* Paths of fields in messages: "files[123].columns[45]". */
#define MANIFEST_PATH_LEN 64

static const char *const meta_columns[] = {"_zetl_op", "_zetl_lsn", "_zetl_seq", "_zetl_commit_ts",
                                           "_zetl_unchanged"};

void zetl_manifest_init(struct zetl_manifest *m)
{
    memset(m, 0, sizeof(*m));
    m->stream = "";
    m->first_commit_time = m->last_commit_time = m->created_at = "";
    m->tenant_column = "";
    zetl_arena_init(&m->arena, 16 * 1024);
}

void zetl_manifest_release(struct zetl_manifest *m)
{
    zetl_arena_release(&m->arena);
    zetl_manifest_init(m);
}

/* `n` decimal digits at s into *out; false unless all are digits. */
static bool time_digits(const char *s, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *out = *out * 10 + (s[i] - '0');
    }
    return true;
}

bool zetl_manifest_parse_time(const char *s, int64_t *unix_usec)
{
    struct tm tm;
    int year, mon, day, hour, min, sec, usec = 0, digits = 0;
    const char *p = s + 19;
    time_t t;

    memset(&tm, 0, sizeof(tm));
    if (strlen(s) < 20 || !time_digits(s, 4, &year) || s[4] != '-' ||
        !time_digits(s + 5, 2, &mon) || s[7] != '-' || !time_digits(s + 8, 2, &day) ||
        s[10] != 'T' || !time_digits(s + 11, 2, &hour) || s[13] != ':' ||
        !time_digits(s + 14, 2, &min) || s[16] != ':' || !time_digits(s + 17, 2, &sec))
        return false;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
            if (digits == 6)
                return false;
            usec = usec * 10 + (*p - '0');
        }
        if (digits == 0)
            return false;
        for (int i = digits; i < 6; i++)
            usec *= 10;
    }
    if (strcmp(p, "Z") != 0 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 ||
        min > 59 || sec > 60)
        return false;
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    t = timegm(&tm);
    *unix_usec = (int64_t)t * 1000000 + usec;
    return true;
}

bool zetl_manifest_stream_name_ok(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

bool zetl_manifest_file_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > MANIFEST_FILE_NAME_MAX || s[0] == '.' || strcmp(s, ZETL_MANIFEST_NAME) == 0)
        return false;
    /* What the batcher's percent-encoding leaves: no path, no shell, no control byte. */
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.%-") == n;
}

/* ---- writer ------------------------------------------------------------ */

/*
 * A JSON string for a name from the source.  Names in a non-UTF-8 database
 * (SQL_ASCII) may hold bytes JSON cannot carry; those become U+FFFD.
 */
static json_t *jstr(const char *s)
{
    size_t n = strlen(s);
    struct zetl_buf b;
    json_t *j;

    if (zetl_utf8_valid((const unsigned char *)s, n))
        return json_stringn(s, n);
    zetl_buf_init(&b, 0);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x80)
            zetl_buf_putc(&b, s[i]);
        else
            zetl_buf_puts(&b, "\xEF\xBF\xBD");
    }
    j = json_stringn(b.data, b.len);
    zetl_buf_release(&b);
    return j;
}

static json_t *jlsn(uint64_t lsn)
{
    char s[24];

    snprintf(s, sizeof(s), ZETL_LSN_FMT, ZETL_LSN_ARGS(lsn));
    return json_string(s);
}

static json_t *format_json(void)
{
    json_t *format = json_object(), *meta = json_array();

    json_object_set_new(format, "type", json_string("csv"));
    json_object_set_new(format, "compression", json_string("zstd"));
    json_object_set_new(format, "header", json_false());
    json_object_set_new(format, "null", json_string("unquoted empty field"));
    for (size_t i = 0; i < sizeof(meta_columns) / sizeof(meta_columns[0]); i++)
        json_array_append_new(meta, json_string(meta_columns[i]));
    json_object_set_new(format, "meta_columns", meta);
    return format;
}

static json_t *file_json(const struct zetl_manifest_file *mf)
{
    json_t *f = json_object(), *tenants = json_array(), *cols = json_array();

    json_object_set_new(f, "table", jstr(mf->table));
    json_object_set_new(f, "file", jstr(mf->file));
    json_object_set_new(f, "rows", json_integer((json_int_t)mf->rows));
    json_object_set_new(f, "bytes", json_integer((json_int_t)mf->bytes));
    json_object_set_new(f, "sha256", jstr(mf->sha256));
    for (size_t k = 0; k < mf->ntenants; k++)
        json_array_append_new(tenants, jstr(mf->tenants[k]));
    json_object_set_new(f, "tenants", tenants);
    for (size_t k = 0; k < mf->ncols; k++) {
        const struct zetl_manifest_col *c = &mf->cols[k];
        json_t *col = json_object();

        json_object_set_new(col, "name", jstr(c->name));
        json_object_set_new(col, "type", jstr(c->type));
        json_object_set_new(col, "typoid", json_integer(c->typoid));
        json_object_set_new(col, "key", json_boolean(c->key));
        json_array_append_new(cols, col);
    }
    json_object_set_new(f, "columns", cols);
    return f;
}

static json_t *manifest_json(const struct zetl_manifest *m)
{
    json_t *root = json_object(), *files = json_array();

    json_object_set_new(root, "version", json_integer(ZETL_MANIFEST_VERSION));
    json_object_set_new(root, "stream", jstr(m->stream));
    json_object_set_new(root, "first_lsn", jlsn(m->first_lsn));
    json_object_set_new(root, "last_lsn", jlsn(m->last_lsn));
    json_object_set_new(root, "end_lsn", jlsn(m->end_lsn));
    json_object_set_new(root, "first_lsn_int", json_integer((json_int_t)m->first_lsn));
    json_object_set_new(root, "last_lsn_int", json_integer((json_int_t)m->last_lsn));
    json_object_set_new(root, "end_lsn_int", json_integer((json_int_t)m->end_lsn));
    json_object_set_new(root, "transactions", json_integer((json_int_t)m->transactions));
    json_object_set_new(root, "rows", json_integer((json_int_t)m->rows));
    json_object_set_new(root, "raw_bytes", json_integer((json_int_t)m->raw_bytes));
    if (m->snapshot_rows)
        json_object_set_new(root, "snapshot_rows", json_integer((json_int_t)m->snapshot_rows));
    json_object_set_new(root, "first_commit_time", jstr(m->first_commit_time));
    json_object_set_new(root, "last_commit_time", jstr(m->last_commit_time));
    json_object_set_new(root, "created_at", jstr(m->created_at));
    json_object_set_new(root, "tenant_column", jstr(m->tenant_column));
    json_object_set_new(root, "format", format_json());
    for (size_t i = 0; i < m->nfiles; i++)
        json_array_append_new(files, file_json(&m->files[i]));
    json_object_set_new(root, "files", files);
    return root;
}

void zetl_manifest_write(const struct zetl_manifest *m, struct zetl_buf *out)
{
    json_t *root = manifest_json(m);
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

    json_decref(root);
    /* Only allocation failure (or a capped buffer, a caller's bug) gets here. */
    if (s == NULL || !zetl_buf_append(out, s, strlen(s)) || !zetl_buf_putc(out, '\n')) {
        fprintf(stderr, "FATAL:  could not render manifest\n");
        abort();
    }
    free(s);
}

/* ---- reader ------------------------------------------------------------ */

struct mrd {
    struct zetl_arena *arena; /* borrowed: the manifest's */
    struct zetl_errbuf *eb;   /* borrowed */
};

/* "<path>.<key> <what>" (no "<path>." at the top level) as a protocol error. */
static enum zetl_err bad(struct mrd *rd, const char *path, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum zetl_err bad(struct mrd *rd, const char *path, const char *key, const char *fmt, ...)
{
    char what[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return zetl_err_set(rd->eb, ZETL_ERR_PROTOCOL, "%s%s%s %s", path, path[0] ? "." : "", key,
                        what);
}

/* A string copied into the arena; required ones must be non-empty, absent optional ones are "". */
static enum zetl_err get_str(struct mrd *rd, const json_t *o, const char *path, const char *key,
                             bool required, const char **out)
{
    const json_t *v = json_object_get(o, key);
    const char *s;

    *out = "";
    if (v == NULL)
        return required ? bad(rd, path, key, "is missing") : ZETL_OK;
    if ((s = json_string_value(v)) == NULL)
        return bad(rd, path, key, "is not a string");
    if (required && s[0] == '\0')
        return bad(rd, path, key, "is empty");
    *out = zetl_arena_strndup(rd->arena, s, strlen(s));
    return ZETL_OK;
}

/* An integer in [0, max]; absent optional ones are 0. */
static enum zetl_err get_uint(struct mrd *rd, const json_t *o, const char *path, const char *key,
                              bool required, uint64_t max, uint64_t *out)
{
    const json_t *v = json_object_get(o, key);

    *out = 0;
    if (v == NULL)
        return required ? bad(rd, path, key, "is missing") : ZETL_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return bad(rd, path, key, "is not an integer between 0 and %llu", (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return ZETL_OK;
}

/* An array, or NULL when an optional one is absent. */
static enum zetl_err get_array(struct mrd *rd, const json_t *o, const char *path, const char *key,
                               bool required, const json_t **out)
{
    const json_t *v = json_object_get(o, key);

    *out = NULL;
    if (v == NULL)
        return required ? bad(rd, path, key, "is missing") : ZETL_OK;
    if (!json_is_array(v))
        return bad(rd, path, key, "is not an array");
    *out = v;
    return ZETL_OK;
}

/*
 * An LSN from its text (authoritative) or, without one, from the integer
 * form; when both are there they must agree (the writer's cast included).
 */
static enum zetl_err get_lsn(struct mrd *rd, const json_t *root, const char *key,
                             const char *intkey, uint64_t *out)
{
    const json_t *t = json_object_get(root, key), *n = json_object_get(root, intkey);
    const char *s;

    *out = 0;
    if (n != NULL && !json_is_integer(n))
        return bad(rd, "", intkey, "is not an integer");
    if (t == NULL) {
        if (n == NULL)
            return bad(rd, "", key, "is missing");
        if (json_integer_value(n) < 0)
            return bad(rd, "", intkey, "is negative");
        *out = (uint64_t)json_integer_value(n);
        return ZETL_OK;
    }
    if ((s = json_string_value(t)) == NULL || !zetl_lsn_parse(s, out))
        return bad(rd, "", key, "is not an LSN like \"16/B374D848\"");
    if (n != NULL && json_integer_value(n) != (json_int_t)*out)
        return bad(rd, "", intkey, "does not match %s " ZETL_LSN_FMT, key, ZETL_LSN_ARGS(*out));
    return ZETL_OK;
}

static bool sha256_hex(const char *s)
{
    return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

static enum zetl_err read_col(struct mrd *rd, const json_t *co, const char *path,
                              struct zetl_manifest_col *c)
{
    const json_t *key;
    uint64_t typoid;
    enum zetl_err err;

    if (!json_is_object(co))
        return zetl_err_set(rd->eb, ZETL_ERR_PROTOCOL, "%s is not an object", path);
    if ((err = get_str(rd, co, path, "name", true, &c->name)) != ZETL_OK ||
        (err = get_str(rd, co, path, "type", true, &c->type)) != ZETL_OK ||
        (err = get_uint(rd, co, path, "typoid", false, UINT32_MAX, &typoid)) != ZETL_OK)
        return err;
    c->typoid = (uint32_t)typoid;
    key = json_object_get(co, "key");
    if (key != NULL && !json_is_boolean(key))
        return bad(rd, path, "key", "is not a boolean");
    c->key = json_is_true(key);
    return ZETL_OK;
}

static enum zetl_err read_file(struct mrd *rd, const json_t *fo, size_t i,
                               struct zetl_manifest_file *f)
{
    char path[MANIFEST_PATH_LEN], cpath[MANIFEST_PATH_LEN];
    const json_t *tenants, *cols;
    const char *sha256;
    const char **tv;
    struct zetl_manifest_col *cv;
    enum zetl_err err;

    snprintf(path, sizeof(path), "files[%zu]", i);
    if (!json_is_object(fo))
        return zetl_err_set(rd->eb, ZETL_ERR_PROTOCOL, "%s is not an object", path);
    if ((err = get_str(rd, fo, path, "table", true, &f->table)) != ZETL_OK ||
        (err = get_str(rd, fo, path, "file", true, &f->file)) != ZETL_OK)
        return err;
    if (!zetl_manifest_file_name_ok(f->file))
        return bad(rd, path, "file", "\"%s\" is not a safe file name", f->file);
    if ((err = get_uint(rd, fo, path, "rows", true, INT64_MAX, &f->rows)) != ZETL_OK ||
        (err = get_uint(rd, fo, path, "bytes", true, INT64_MAX, &f->bytes)) != ZETL_OK ||
        (err = get_str(rd, fo, path, "sha256", true, &sha256)) != ZETL_OK)
        return err;
    if (!sha256_hex(sha256))
        return bad(rd, path, "sha256", "is not 64 lower-case hex digits");
    memcpy(f->sha256, sha256, 65);

    if ((err = get_array(rd, fo, path, "tenants", false, &tenants)) != ZETL_OK)
        return err;
    f->ntenants = json_array_size(tenants);
    tv = zetl_arena_alloc(rd->arena, (f->ntenants ? f->ntenants : 1) * sizeof(*tv));
    for (size_t k = 0; k < f->ntenants; k++) {
        const char *s = json_string_value(json_array_get(tenants, k));

        if (s == NULL)
            return zetl_err_set(rd->eb, ZETL_ERR_PROTOCOL, "%s.tenants[%zu] is not a string", path,
                                k);
        tv[k] = zetl_arena_strndup(rd->arena, s, strlen(s));
    }
    f->tenants = tv;

    if ((err = get_array(rd, fo, path, "columns", true, &cols)) != ZETL_OK)
        return err;
    f->ncols = json_array_size(cols);
    cv = zetl_arena_alloc(rd->arena, (f->ncols ? f->ncols : 1) * sizeof(*cv));
    memset(cv, 0, (f->ncols ? f->ncols : 1) * sizeof(*cv));
    for (size_t k = 0; k < f->ncols; k++) {
        snprintf(cpath, sizeof(cpath), "files[%zu].columns[%zu]", i, k);
        if ((err = read_col(rd, json_array_get(cols, k), cpath, &cv[k])) != ZETL_OK)
            return err;
    }
    f->cols = cv;
    return ZETL_OK;
}

static int cmp_file_names(const void *x, const void *y)
{
    const struct zetl_manifest_file *a = *(const struct zetl_manifest_file *const *)x;
    const struct zetl_manifest_file *b = *(const struct zetl_manifest_file *const *)y;

    return strcasecmp(a->file, b->file);
}

/* Two entries naming one file (also when only case differs) would overwrite each other. */
static enum zetl_err check_unique_files(struct mrd *rd, const struct zetl_manifest *m)
{
    const struct zetl_manifest_file **byname;
    enum zetl_err err = ZETL_OK;

    if (m->nfiles < 2)
        return ZETL_OK;
    byname = zetl_malloc(m->nfiles * sizeof(*byname));
    for (size_t i = 0; i < m->nfiles; i++)
        byname[i] = &m->files[i];
    qsort(byname, m->nfiles, sizeof(*byname), cmp_file_names);
    for (size_t i = 1; i < m->nfiles && err == ZETL_OK; i++) {
        size_t a = (size_t)(byname[i - 1] - m->files), b = (size_t)(byname[i] - m->files);

        if (strcasecmp(byname[i - 1]->file, byname[i]->file) == 0)
            err = zetl_err_set(rd->eb, ZETL_ERR_PROTOCOL, "files[%zu].file repeats files[%zu].file",
                               a > b ? a : b, a > b ? b : a);
    }
    free(byname);
    return err;
}

static enum zetl_err read_format(struct mrd *rd, const json_t *root)
{
    const json_t *format = json_object_get(root, "format");
    const char *type, *compression;
    enum zetl_err err;

    if (format == NULL)
        return ZETL_OK;
    if (!json_is_object(format))
        return bad(rd, "", "format", "is not an object");
    if ((err = get_str(rd, format, "format", "type", true, &type)) != ZETL_OK ||
        (err = get_str(rd, format, "format", "compression", true, &compression)) != ZETL_OK)
        return err;
    if (strcmp(type, "csv") != 0)
        return bad(rd, "format", "type", "\"%s\" is not \"csv\"", type);
    if (strcmp(compression, "zstd") != 0)
        return bad(rd, "format", "compression", "\"%s\" is not \"zstd\"", compression);
    return ZETL_OK;
}

/* Everything above files[]: version, stream, LSNs, counts, times. */
static enum zetl_err read_head(struct mrd *rd, const json_t *root, const char *expect_stream,
                               struct zetl_manifest *m)
{
    const json_t *version = json_object_get(root, "version");
    enum zetl_err err;

    if (version == NULL)
        return bad(rd, "", "version", "is missing");
    if (!json_is_integer(version))
        return bad(rd, "", "version", "is not an integer");
    if (json_integer_value(version) != ZETL_MANIFEST_VERSION)
        return bad(rd, "", "version", "%lld is not supported (only %d)",
                   (long long)json_integer_value(version), ZETL_MANIFEST_VERSION);
    if ((err = get_str(rd, root, "", "stream", true, &m->stream)) != ZETL_OK)
        return err;
    if (!zetl_manifest_stream_name_ok(m->stream))
        return bad(rd, "", "stream", "\"%s\" is not a valid stream name", m->stream);
    if (expect_stream != NULL && strcmp(m->stream, expect_stream) != 0)
        return bad(rd, "", "stream", "\"%s\" is not the expected \"%s\"", m->stream, expect_stream);
    if ((err = get_lsn(rd, root, "first_lsn", "first_lsn_int", &m->first_lsn)) != ZETL_OK ||
        (err = get_lsn(rd, root, "last_lsn", "last_lsn_int", &m->last_lsn)) != ZETL_OK ||
        (err = get_lsn(rd, root, "end_lsn", "end_lsn_int", &m->end_lsn)) != ZETL_OK)
        return err;
    if (m->last_lsn < m->first_lsn)
        return bad(rd, "", "last_lsn", ZETL_LSN_FMT " is below first_lsn " ZETL_LSN_FMT,
                   ZETL_LSN_ARGS(m->last_lsn), ZETL_LSN_ARGS(m->first_lsn));
    if (m->end_lsn < m->last_lsn)
        return bad(rd, "", "end_lsn", ZETL_LSN_FMT " is below last_lsn " ZETL_LSN_FMT,
                   ZETL_LSN_ARGS(m->end_lsn), ZETL_LSN_ARGS(m->last_lsn));
    if ((err = get_uint(rd, root, "", "transactions", false, INT64_MAX, &m->transactions)) ||
        (err = get_uint(rd, root, "", "rows", false, INT64_MAX, &m->rows)) ||
        (err = get_uint(rd, root, "", "raw_bytes", false, INT64_MAX, &m->raw_bytes)) ||
        (err = get_uint(rd, root, "", "snapshot_rows", false, INT64_MAX, &m->snapshot_rows)) ||
        (err = get_str(rd, root, "", "first_commit_time", false, &m->first_commit_time)) ||
        (err = get_str(rd, root, "", "last_commit_time", false, &m->last_commit_time)) ||
        (err = get_str(rd, root, "", "created_at", false, &m->created_at)) ||
        (err = get_str(rd, root, "", "tenant_column", false, &m->tenant_column)))
        return err;
    return read_format(rd, root);
}

enum zetl_err zetl_manifest_read(const char *text, size_t len, const char *expect_stream,
                                 struct zetl_manifest *out, struct zetl_errbuf *eb)
{
    struct mrd rd = {&out->arena, eb};
    json_error_t jerr;
    json_t *root = NULL;
    const json_t *files;
    struct zetl_manifest_file *fv;
    enum zetl_err err;

    zetl_manifest_init(out);
    if (len > ZETL_MANIFEST_MAX)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "manifest is larger than %zu bytes",
                            ZETL_MANIFEST_MAX);
    /* Without JSON_ALLOW_NUL jansson refuses "\u0000": every string is a C string. */
    root = json_loadb(text != NULL ? text : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "could not parse manifest: line %d, column %d: %s", jerr.line,
                            jerr.column, jerr.text);
    if (!json_is_object(root)) {
        err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "manifest is not a JSON object");
        goto fail;
    }
    if ((err = read_head(&rd, root, expect_stream, out)) != ZETL_OK ||
        (err = get_array(&rd, root, "", "files", true, &files)) != ZETL_OK)
        goto fail;
    out->nfiles = json_array_size(files);
    fv = zetl_arena_alloc(&out->arena, (out->nfiles ? out->nfiles : 1) * sizeof(*fv));
    memset(fv, 0, (out->nfiles ? out->nfiles : 1) * sizeof(*fv));
    out->files = fv;
    for (size_t i = 0; i < out->nfiles; i++)
        if ((err = read_file(&rd, json_array_get(files, i), i, &fv[i])) != ZETL_OK)
            goto fail;
    if ((err = check_unique_files(&rd, out)) != ZETL_OK)
        goto fail;
    json_decref(root);
    return ZETL_OK;

fail:
    json_decref(root);
    zetl_manifest_release(out);
    return err;
}

enum zetl_err zetl_manifest_read_file(const char *path, const char *expect_stream,
                                      struct zetl_manifest *out, struct zetl_errbuf *eb)
{
    struct zetl_buf text;
    enum zetl_err err;

    zetl_manifest_init(out);
    zetl_buf_init(&text, 0);
    err = zetl_fs_read_file(path, ZETL_MANIFEST_MAX, &text, eb);
    if (err == ZETL_OK &&
        (err = zetl_manifest_read(text.data, text.len, expect_stream, out, eb)) != ZETL_OK)
        zetl_err_prefix(eb, "file \"%s\"", path);
    zetl_buf_release(&text);
    return err;
}
