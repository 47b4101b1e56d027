/*
 * Internals shared by proto/event*.c (the schema, the Avro and the JSON
 * halves of proto/event.h); no other module includes this.
 */
#ifndef ZETL_EVENT_INT_H
#define ZETL_EVENT_INT_H

#include "proto/event.h"

#include "common/mem.h"

/* What a column is written as; decided once per schema from typoid / type text. */
enum ev_kind {
    EV_STRING, /* Avro string: PostgreSQL's text form */
    EV_BOOL,   /* boolean */
    EV_SHORT,  /* int, int2's range */
    EV_INT,    /* int */
    EV_LONG,   /* long */
    EV_FLOAT,  /* float */
    EV_DOUBLE, /* double */
    EV_BYTES,  /* bytes from bytea's "\x<hex>" */
};

/* How one field (the tenant or a column) is named in each format. */
struct ev_field {
    enum ev_kind kind;
    char *aname; /* owned: Avro field name, [A-Za-z_][A-Za-z0-9_]* */
    size_t aname_len;
    char *jname; /* owned: JSON member name, the source name as valid UTF-8 */
    size_t jname_len;
    char *jkey; /* owned: jname JSON-quoted with its colon: "\"id\":" */
    size_t jkey_len;
};

struct zetl_ev_schema {
    char *ns; /* owned: the adjusted namespace */
    char *table;
    char *tenant_column;
    struct zetl_ev_col *cols; /* owned, ncols; name and type owned */
    size_t ncols;
    struct ev_field tenant;
    struct ev_field *fields; /* owned, ncols: one per column */
    size_t *keys;            /* owned: indexes of the key columns, source order */
    size_t nkeys;
    char *json[2]; /* owned, by enum zetl_ev_part */
    char *canon[2];
    uint64_t fp[2];
};

/* Scratch for text that must be NUL-terminated (strtod) when it is long. */
struct zetl_ev_encoder {
    struct zetl_buf tmp;
};

/* Per-decode storage: reset at every decode, so values stay valid until the next. */
struct zetl_ev_decoder {
    struct zetl_arena ar;
    size_t cap; /* entries in each array below */
    const char **before, **after;
    size_t *before_len, *after_len;
    unsigned char *unchanged;
};

/* ---- text forms (event_text.c) ---- */

const char *ev_kind_name(enum ev_kind k);
/* Strict PostgreSQL output forms; false when the whole text is not one. */
bool ev_parse_bool(const char *s, size_t n, bool *out);
bool ev_parse_int(const char *s, size_t n, int64_t min, int64_t max, int64_t *out);
bool ev_parse_double(struct zetl_buf *tmp, const char *s, size_t n, double *out);
bool ev_parse_float(struct zetl_buf *tmp, const char *s, size_t n, float *out);
/* bytea's hex output "\x0a1b": *nbytes the decoded length; ev_hex_decode writes them. */
bool ev_hex_check(const char *s, size_t n, size_t *nbytes);
void ev_hex_decode(const char *s, size_t n, unsigned char *out);

/* Writers into a caller's array (EV_NUM_MAX bytes); each returns the length written. */
#define EV_NUM_MAX 32
size_t ev_fmt_i64(char *out, int64_t v);
size_t ev_fmt_double(char *out, double d);
size_t ev_fmt_float(char *out, float f);

/* Appends s to b as valid UTF-8 (a byte that is not becomes U+FFFD); false past b's cap. */
bool ev_utf8_sanitize(struct zetl_buf *b, const char *s, size_t n);

/* Appends n bytes of text as a quoted JSON string (U+FFFD for bytes that are not UTF-8). */
bool ev_json_quote(struct zetl_buf *b, const char *s, size_t n);

/* Text of one decoded value, NUL-terminated, in d's arena. */
char *ev_text_copy(struct zetl_ev_decoder *d, const void *s, size_t n);
/* "\x" + lowercase hex of n bytes, in d's arena. */
char *ev_text_bytea(struct zetl_ev_decoder *d, const unsigned char *p, size_t n, size_t *len);

/* Makes room for ncols values per image and clears the flags. */
void ev_decoder_prepare(struct zetl_ev_decoder *d, size_t ncols);

/* Message of a value that does not parse: names table, column and type, never the value. */
enum zetl_err ev_err_value(const struct zetl_ev_schema *s, size_t col, struct zetl_errbuf *eb);
enum zetl_err ev_err_key_null(const struct zetl_ev_schema *s, size_t col, struct zetl_errbuf *eb);

/* ---- the two formats (event_avro.c, event_json.c) ---- */

enum zetl_err ev_avro_key(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                          const char *tenant, size_t tenant_len, const char *const *vals,
                          const size_t *lens, struct zetl_buf *out, struct zetl_errbuf *eb);
enum zetl_err ev_avro_value(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                            const struct zetl_ev_change *c, struct zetl_buf *out,
                            struct zetl_errbuf *eb);
enum zetl_err ev_avro_decode(struct zetl_ev_decoder *d, const struct zetl_ev_schema *s,
                             const void *body, size_t len, struct zetl_ev_decoded *out,
                             struct zetl_errbuf *eb);

enum zetl_err ev_json_key(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                          const char *tenant, size_t tenant_len, const char *const *vals,
                          const size_t *lens, struct zetl_buf *out, struct zetl_errbuf *eb);
enum zetl_err ev_json_value(struct zetl_ev_encoder *e, const struct zetl_ev_schema *s,
                            const struct zetl_ev_change *c, struct zetl_buf *out,
                            struct zetl_errbuf *eb);
enum zetl_err ev_json_decode(struct zetl_ev_decoder *d, const struct zetl_ev_schema *s,
                             const void *body, size_t len, struct zetl_ev_decoded *out,
                             struct zetl_errbuf *eb);

/* Debezium's source.sequence, "[null,\"<commit lsn>\"]": writes into out (48 bytes), returns its
 * length. */
#define EV_SEQUENCE_MAX 48
size_t ev_sequence(char *out, uint64_t lsn);

#endif
