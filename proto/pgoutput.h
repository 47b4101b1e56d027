/*
 * pgoutput logical replication messages (protocol versions 1-4), decoded into
 * structs whose strings and values are slices into the input buffer
 * (zero-copy): valid until the input buffer is freed.  Arrays (columns,
 * relids) are allocated in the caller's arena.
 *
 * Reference: PostgreSQL "Logical Replication Message Formats" and
 * src/backend/replication/logical/proto.c.
 */
#ifndef ZETL_PGOUTPUT_H
#define ZETL_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/mem.h"

/* A byte range inside a receive buffer; not NUL-terminated. */
struct zetl_slice {
    const char *ptr; /* borrowed */
    uint32_t len;
};

enum zetl_pgo_kind {
    ZETL_PGO_BEGIN = 'B',
    ZETL_PGO_COMMIT = 'C',
    ZETL_PGO_ORIGIN = 'O',
    ZETL_PGO_RELATION = 'R',
    ZETL_PGO_TYPE = 'Y',
    ZETL_PGO_INSERT = 'I',
    ZETL_PGO_UPDATE = 'U',
    ZETL_PGO_DELETE = 'D',
    ZETL_PGO_TRUNCATE = 'T',
    ZETL_PGO_MESSAGE = 'M',
    ZETL_PGO_STREAM_START = 'S',
    ZETL_PGO_STREAM_STOP = 'E',
    ZETL_PGO_STREAM_COMMIT = 'c',
    ZETL_PGO_STREAM_ABORT = 'A',
    ZETL_PGO_BEGIN_PREPARE = 'b',
    ZETL_PGO_PREPARE = 'P',
    ZETL_PGO_COMMIT_PREPARED = 'K',
    ZETL_PGO_ROLLBACK_PREPARED = 'r',
    ZETL_PGO_STREAM_PREPARE = 'p',
};

/* Tuple column kinds, as on the wire. */
enum zetl_col_kind {
    ZETL_COL_NULL = 'n',
    ZETL_COL_UNCHANGED_TOAST = 'u',
    ZETL_COL_TEXT = 't',
    ZETL_COL_BINARY = 'b',
};

struct zetl_tuple_col {
    char kind;             /* enum zetl_col_kind */
    struct zetl_slice val; /* for 't' and 'b'; empty otherwise */
};

/*
 * A column value as the sinks take it, after transforms: kind is 'n' (NULL),
 * 'u' (unchanged TOAST) or 't' (text).
 */
struct zetl_value {
    char kind;
    struct zetl_slice val; /* borrowed: the receive buffer or the caller's arena */
};

struct zetl_tuple {
    uint16_t ncols;
    struct zetl_tuple_col *cols; /* arena */
};

struct zetl_rel_col {
    uint8_t flags; /* 1 = part of the replica identity key */
    struct zetl_slice name;
    uint32_t typoid;
    int32_t typmod;
};

struct zetl_pgo_msg {
    enum zetl_pgo_kind kind;
    /* Transaction id carried by change messages inside a streamed block
     * (Relation, Type, Insert, Update, Delete, Truncate, Message); 0 otherwise. */
    uint32_t xid;
    union {
        struct {
            uint64_t final_lsn;  /* LSN of the commit record */
            int64_t commit_time; /* microseconds since 2000-01-01 UTC */
            uint32_t xid;
        } begin;
        struct {
            uint8_t flags;
            uint64_t commit_lsn;
            uint64_t end_lsn;
            int64_t commit_time;
        } commit;
        struct {
            uint64_t origin_lsn;
            struct zetl_slice name;
        } origin;
        struct {
            uint32_t relid;
            struct zetl_slice nspname;
            struct zetl_slice relname;
            char replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
            uint16_t ncols;
            struct zetl_rel_col *cols; /* arena */
        } relation;
        struct {
            uint32_t typoid;
            struct zetl_slice nspname;
            struct zetl_slice typname;
        } type;
        struct {
            uint32_t relid;
            struct zetl_tuple newtup;
        } insert;
        struct {
            uint32_t relid;
            char oldkind; /* 'K' old key, 'O' old tuple, 0 when absent */
            struct zetl_tuple oldtup;
            struct zetl_tuple newtup;
        } update;
        struct {
            uint32_t relid;
            char oldkind; /* 'K' or 'O' */
            struct zetl_tuple oldtup;
        } delete_;
        struct {
            uint32_t nrelids;
            uint8_t options;  /* 1 = CASCADE, 2 = RESTART IDENTITY */
            uint32_t *relids; /* arena */
        } truncate;
        struct {
            uint8_t flags; /* 1 = transactional */
            uint64_t lsn;
            struct zetl_slice prefix;
            struct zetl_slice content;
        } message;
        struct {
            uint32_t xid;
            uint8_t first_segment;
        } stream_start;
        struct {
            uint32_t xid;
            uint8_t flags;
            uint64_t commit_lsn;
            uint64_t end_lsn;
            int64_t commit_time;
        } stream_commit;
        struct {
            uint32_t xid;
            uint32_t subxid;
            bool has_abort_info; /* protocol 4 with parallel streaming */
            uint64_t abort_lsn;
            int64_t abort_time;
        } stream_abort;
        struct {
            /* Begin Prepare */
            uint64_t prepare_lsn;
            uint64_t end_lsn;
            int64_t prepare_time;
            uint32_t xid;
            struct zetl_slice gid;
        } begin_prepare;
        struct {
            /* Prepare and Stream Prepare */
            uint8_t flags;
            uint64_t prepare_lsn;
            uint64_t end_lsn;
            int64_t prepare_time;
            uint32_t xid;
            struct zetl_slice gid;
        } prepare;
        struct {
            uint8_t flags;
            uint64_t commit_lsn;
            uint64_t end_lsn;
            int64_t commit_time;
            uint32_t xid;
            struct zetl_slice gid;
        } commit_prepared;
        struct {
            uint8_t flags;
            uint64_t prepare_end_lsn;
            uint64_t rollback_end_lsn;
            int64_t prepare_time;
            int64_t rollback_time;
            uint32_t xid;
            struct zetl_slice gid;
        } rollback_prepared;
    } u;
};

/* Decoder state that changes how bytes are read. */
struct zetl_pgo_decoder {
    int proto_version;   /* 1..4, as requested in START_REPLICATION */
    bool in_stream;      /* between Stream Start and Stream Stop: changes carry an xid */
    bool parallel_abort; /* streaming = parallel (v4): Stream Abort carries lsn + time */
};

void zetl_pgo_decoder_init(struct zetl_pgo_decoder *dec, int proto_version);

/*
 * Decodes one pgoutput message (the payload of an XLogData 'w' frame).  Slices
 * in *msg point into `data`; arrays are allocated from `ar`.  Updates
 * dec->in_stream on Stream Start / Stream Stop.  `wal_lsn` is only used in
 * error messages.  Returns ZETL_ERR_PROTOCOL for truncation, trailing bytes,
 * unknown message types or column kinds, or a message not valid for the
 * protocol version / stream state; the message names the type byte, the LSN
 * and the byte offset.
 */
enum zetl_err zetl_pgoutput_decode(struct zetl_pgo_decoder *dec, const uint8_t *data, size_t len,
                                   uint64_t wal_lsn, struct zetl_pgo_msg *msg,
                                   struct zetl_arena *ar, struct zetl_errbuf *eb);

/* Human-readable one-line-per-message rendering used by golden tests and debug logs. */
struct zetl_buf;
void zetl_pgoutput_describe(const struct zetl_pgo_msg *msg, struct zetl_buf *out);

/* PostgreSQL epoch (2000-01-01) microseconds -> Unix epoch microseconds. */
#define ZETL_PG_EPOCH_OFFSET_USEC INT64_C(946684800000000)

#endif
