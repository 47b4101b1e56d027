/*
 * pgoutput decoder tests: golden renderings of messages captured from a real
 * PostgreSQL 15 (tests/fixtures/pgoutput, see capture.sh), every fixture
 * message cut at every byte offset and with a trailing byte, and hand-built
 * messages for what PostgreSQL 15 cannot emit (protocol 4, malformed input).
 *
 * ZETL_UPDATE_GOLDEN=1 rewrites the .golden files instead of comparing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/lsn.h"
#include "common/mem.h"
#include "proto/copydata.h"
#include "proto/pgoutput.h"
#include "proto/relcache.h"
#include "tests/unit/tap.h"

struct fx_msg {
    uint64_t lsn;
    uint8_t *data; /* owned */
    size_t len;
};

struct fixture {
    const char *name;
    int proto_version;
    size_t n;
    struct fx_msg *msgs; /* owned */
};

static const char *const fixture_names[] = {
    "basic", "types", "types_binary", "toast", "messages", "origin", "streaming", "twophase",
};

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct zetl_buf b;
    char chunk[65536];
    size_t n;

    if (f == NULL)
        return NULL;
    zetl_buf_init(&b, 0);
    zetl_buf_reserve(&b, 0);
    zetl_buf_reset(&b); /* NUL-terminated even when the file is empty */
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        zetl_buf_append(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return b.data;
}

static void fixture_path(char *out, size_t size, const char *name, const char *ext)
{
    const char *src = getenv("ZETL_SOURCE_DIR");

    snprintf(out, size, "%s/tests/fixtures/pgoutput/%s.%s", src ? src : ".", name, ext);
}

/* Parses "# proto_version N" and "LSN HEX" lines. Returns false when unreadable. */
static bool fixture_load(const char *name, struct fixture *fx)
{
    char path[4096];
    size_t len;
    char *text;

    memset(fx, 0, sizeof(*fx));
    fx->name = name;
    fixture_path(path, sizeof(path), name, "hex");
    text = read_file(path, &len);
    if (text == NULL) {
        fprintf(stderr, "could not read %s (is ZETL_SOURCE_DIR set?)\n", path);
        return false;
    }
    size_t cap = 0;
    for (char *line = text, *next; line != NULL && *line != '\0'; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        if (line[0] == '#') {
            sscanf(line, "# proto_version %d", &fx->proto_version);
            continue;
        }
        if (line[0] == '\0')
            continue;
        char *sp = strchr(line, ' ');
        if (sp == NULL)
            goto bad;
        *sp = '\0';
        struct fx_msg m;
        if (!zetl_lsn_parse(line, &m.lsn))
            goto bad;
        const char *hex = sp + 1;
        size_t hl = strlen(hex);
        if (hl % 2 != 0)
            goto bad;
        m.len = hl / 2;
        m.data = zetl_malloc(m.len);
        for (size_t i = 0; i < m.len; i++) {
            int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                free(m.data);
                goto bad;
            }
            m.data[i] = (uint8_t)(hi << 4 | lo);
        }
        if (fx->n == cap) {
            cap = cap ? cap * 2 : 64;
            fx->msgs = zetl_realloc(fx->msgs, cap * sizeof(*fx->msgs));
        }
        fx->msgs[fx->n++] = m;
    }
    free(text);
    return fx->proto_version > 0 && fx->n > 0;
bad:
    fprintf(stderr, "%s: malformed fixture line\n", path);
    free(text);
    return false;
}

static void fixture_free(struct fixture *fx)
{
    for (size_t i = 0; i < fx->n; i++)
        free(fx->msgs[i].data);
    free(fx->msgs);
}

/* Decodes every message in order, rendering "LSN DESCRIPTION" lines; checks invariants. */
static void golden_one(const char *name)
{
    struct fixture fx;
    struct zetl_pgo_decoder dec;
    struct zetl_arena ar;
    struct zetl_errbuf eb;
    struct zetl_buf out;
    struct zetl_relcache *rc = zetl_relcache_new();
    uint32_t stream_xid = 0;
    int kinds[256] = {0};

    if (!fixture_load(name, &fx)) {
        CHECK(!"fixture loads");
        zetl_relcache_free(rc);
        return;
    }
    zetl_pgo_decoder_init(&dec, fx.proto_version);
    zetl_arena_init(&ar, 0);
    zetl_buf_init(&out, 0);
    for (size_t i = 0; i < fx.n; i++) {
        struct zetl_pgo_msg msg;
        const struct fx_msg *m = &fx.msgs[i];

        zetl_arena_reset(&ar);
        enum zetl_err err = zetl_pgoutput_decode(&dec, m->data, m->len, m->lsn, &msg, &ar, &eb);
        if (err != ZETL_OK) {
            fprintf(stderr, "%s:%zu: %s\n", name, i, eb.msg);
            CHECK(err == ZETL_OK);
            continue;
        }
        kinds[(uint8_t)msg.kind]++;
        zetl_buf_printf(&out, ZETL_LSN_FMT " ", ZETL_LSN_ARGS(m->lsn));
        zetl_pgoutput_describe(&msg, &out);
        zetl_buf_putc(&out, '\n');

        /* Cross-message invariants a consumer relies on. */
        switch (msg.kind) {
        case ZETL_PGO_STREAM_START:
            stream_xid = msg.u.stream_start.xid;
            CHECK(dec.in_stream);
            break;
        case ZETL_PGO_STREAM_STOP:
            CHECK(!dec.in_stream);
            break;
        case ZETL_PGO_RELATION:
            CHECK(zetl_relcache_update(rc, &msg) != NULL);
            break;
        case ZETL_PGO_TYPE:
            zetl_relcache_update_type(rc, &msg);
            CHECK(zetl_relcache_type_name(rc, msg.u.type.typoid) != NULL);
            break;
        case ZETL_PGO_INSERT: {
            struct zetl_relation *rel = zetl_relcache_get(rc, msg.u.insert.relid);
            CHECK(rel != NULL && rel->ncols == msg.u.insert.newtup.ncols);
            break;
        }
        case ZETL_PGO_UPDATE: {
            struct zetl_relation *rel = zetl_relcache_get(rc, msg.u.update.relid);
            CHECK(rel != NULL && rel->ncols == msg.u.update.newtup.ncols);
            break;
        }
        default:
            break;
        }
        /*
         * Inside a streamed block every change names its (sub)transaction:
         * the streamed xid or, for changes made in a subtransaction, a later one.
         */
        if (dec.in_stream && msg.kind != ZETL_PGO_STREAM_START && msg.kind != ZETL_PGO_ORIGIN)
            CHECK(msg.xid != 0 && msg.xid >= stream_xid);
        else if (msg.kind != ZETL_PGO_STREAM_STOP)
            CHECK(msg.xid == 0);

        /* The CopyData envelope carries the message unchanged. */
        uint8_t *frame = zetl_malloc(25 + m->len);
        frame[0] = 'w';
        for (int b = 0; b < 8; b++) {
            frame[1 + b] = (uint8_t)(m->lsn >> (56 - 8 * b));
            frame[9 + b] = (uint8_t)(m->lsn >> (56 - 8 * b));
            frame[17 + b] = 0;
        }
        memcpy(frame + 25, m->data, m->len);
        struct zetl_copydata cd;
        CHECK(zetl_copydata_decode(frame, 25 + m->len, &cd, &eb) == ZETL_OK);
        CHECK(cd.kind == 'w' && cd.wal_start == m->lsn && cd.len == m->len &&
              memcmp(cd.data, m->data, m->len) == 0);
        free(frame);
    }
    CHECK(!dec.in_stream);

    /* Each fixture exists to show certain messages: make sure it still does. */
    if (strcmp(name, "basic") == 0)
        CHECK(kinds['B'] && kinds['C'] && kinds['R'] && kinds['I'] && kinds['U'] && kinds['D'] &&
              kinds['T']);
    if (strcmp(name, "types") == 0 || strcmp(name, "types_binary") == 0)
        CHECK(kinds['Y'] == 1);
    if (strcmp(name, "messages") == 0)
        CHECK(kinds['M'] == 3);
    if (strcmp(name, "origin") == 0)
        CHECK(kinds['O'] == 1);
    if (strcmp(name, "streaming") == 0)
        CHECK(kinds['S'] >= 2 && kinds['E'] == kinds['S'] && kinds['c'] == 1 && kinds['A'] == 2);
    if (strcmp(name, "twophase") == 0)
        CHECK(kinds['b'] == 2 && kinds['P'] == 2 && kinds['K'] == 2 && kinds['r'] == 1 &&
              kinds['p'] == 1 && kinds['S'] >= 1);

    char path[4096];
    fixture_path(path, sizeof(path), name, "golden");
    const char *update = getenv("ZETL_UPDATE_GOLDEN");
    if (update != NULL && strcmp(update, "1") == 0) {
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL);
        if (f != NULL) {
            CHECK(fwrite(out.data, 1, out.len, f) == out.len);
            CHECK(fclose(f) == 0);
        }
        fprintf(stderr, "wrote %s\n", path);
    } else {
        size_t glen;
        char *golden = read_file(path, &glen);
        CHECK(golden != NULL);
        if (golden != NULL) {
            bool same = glen == out.len && memcmp(golden, out.data, glen) == 0;
            CHECK(same);
            if (!same) {
                /* Show the first line that differs. */
                size_t k = 0, line = 1, bol = 0;
                while (k < glen && k < out.len && golden[k] == out.data[k]) {
                    if (golden[k] == '\n') {
                        line++;
                        bol = k + 1;
                    }
                    k++;
                }
                const char *g = golden + bol, *o = out.data + bol;
                int gl = (int)strcspn(g, "\n"), ol = (int)strcspn(o, "\n");
                fprintf(stderr, "%s differs at line %zu:\n  got:      %.*s\n  expected: %.*s\n",
                        path, line, ol, o, gl, g);
            }
            free(golden);
        }
    }
    zetl_buf_release(&out);
    zetl_arena_release(&ar);
    zetl_relcache_free(rc);
    fixture_free(&fx);
}

/* Decodes `len` bytes of `data` with a copy of `dec`; expects a protocol error. */
static bool cut_fails(const struct zetl_pgo_decoder *dec, const uint8_t *data, size_t len,
                      uint64_t lsn, struct zetl_arena *ar)
{
    struct zetl_pgo_decoder d = *dec;
    struct zetl_pgo_msg msg;
    struct zetl_errbuf eb;

    zetl_arena_reset(ar);
    enum zetl_err err = zetl_pgoutput_decode(&d, data, len, lsn, &msg, ar, &eb);
    if (err != ZETL_ERR_PROTOCOL)
        return false;
    /* A failed message leaves the stream state alone. */
    if (d.in_stream != dec->in_stream)
        return false;
    return strstr(eb.msg, "malformed pgoutput message") == eb.msg;
}

/*
 * Every prefix of every fixture message must fail cleanly, and so must the
 * message with one byte appended.  Each prefix is copied into an allocation of
 * exactly its size so AddressSanitizer sees any read past it; for the few huge
 * messages (the TOAST value) only a sample of offsets is copied, the rest is
 * decoded in place.
 */
static void cuts_one(const char *name)
{
    struct fixture fx;
    struct zetl_pgo_decoder dec;
    struct zetl_arena ar;
    struct zetl_errbuf eb;
    size_t ncuts = 0, nbad = 0;

    if (!fixture_load(name, &fx)) {
        CHECK(!"fixture loads");
        return;
    }
    zetl_pgo_decoder_init(&dec, fx.proto_version);
    zetl_arena_init(&ar, 0);
    for (size_t i = 0; i < fx.n; i++) {
        const struct fx_msg *m = &fx.msgs[i];

        for (size_t cut = 0; cut < m->len; cut++) {
            bool exact = m->len <= 4096 || cut < 512 || m->len - cut < 512 || cut % 1009 == 0;
            bool ok;
            if (exact) {
                uint8_t *copy = zetl_malloc(cut ? cut : 1);
                memcpy(copy, m->data, cut);
                ok = cut_fails(&dec, cut ? copy : NULL, cut, m->lsn, &ar);
                free(copy);
            } else {
                ok = cut_fails(&dec, m->data, cut, m->lsn, &ar);
            }
            ncuts++;
            if (!ok) {
                if (nbad++ < 5)
                    fprintf(stderr, "%s:%zu: cut at %zu of %zu did not fail cleanly\n", name, i,
                            cut, m->len);
            }
        }
        uint8_t *longer = zetl_malloc(m->len + 1);
        memcpy(longer, m->data, m->len);
        longer[m->len] = 0;
        if (!cut_fails(&dec, longer, m->len + 1, m->lsn, &ar)) {
            if (nbad++ < 5)
                fprintf(stderr, "%s:%zu: trailing byte accepted\n", name, i);
        }
        free(longer);

        /* Advance the real decoder state. */
        struct zetl_pgo_msg msg;
        zetl_arena_reset(&ar);
        CHECK(zetl_pgoutput_decode(&dec, m->data, m->len, m->lsn, &msg, &ar, &eb) == ZETL_OK);
    }
    CHECK(ncuts > 0);
    CHECK(nbad == 0);
    zetl_arena_release(&ar);
    fixture_free(&fx);
}

/* ---- hand-built messages ------------------------------------------------- */

struct wbuf {
    uint8_t b[512];
    size_t n;
};

static void w8(struct wbuf *w, uint8_t v)
{
    w->b[w->n++] = v;
}

static void w16(struct wbuf *w, uint16_t v)
{
    w8(w, (uint8_t)(v >> 8));
    w8(w, (uint8_t)v);
}

static void w32(struct wbuf *w, uint32_t v)
{
    w16(w, (uint16_t)(v >> 16));
    w16(w, (uint16_t)v);
}

static void w64(struct wbuf *w, uint64_t v)
{
    w32(w, (uint32_t)(v >> 32));
    w32(w, (uint32_t)v);
}

static void wstr(struct wbuf *w, const char *s)
{
    size_t n = strlen(s) + 1;
    memcpy(w->b + w->n, s, n);
    w->n += n;
}

static void wtext(struct wbuf *w, const char *s)
{
    w8(w, 't');
    w32(w, (uint32_t)strlen(s));
    memcpy(w->b + w->n, s, strlen(s));
    w->n += strlen(s);
}

/* The input of the last decode_str call: slices in its message point here. */
static uint8_t *last_input;

/*
 * Decodes and renders; returns the error class.  `out` gets the description
 * or the error text.  The input is copied into an allocation of exactly its
 * size, so AddressSanitizer catches overreads; the copy lives until the next
 * call so the test can look at the message's slices.
 */
static enum zetl_err decode_str(struct zetl_pgo_decoder *dec, const struct wbuf *w, uint64_t lsn,
                                struct zetl_pgo_msg *msg, struct zetl_arena *ar, char *out,
                                size_t size)
{
    struct zetl_errbuf eb;

    free(last_input);
    last_input = zetl_malloc(w->n ? w->n : 1);
    memcpy(last_input, w->b, w->n);
    zetl_arena_reset(ar);
    enum zetl_err err = zetl_pgoutput_decode(dec, last_input, w->n, lsn, msg, ar, &eb);
    if (err == ZETL_OK) {
        struct zetl_buf b;
        zetl_buf_init(&b, 0);
        zetl_pgoutput_describe(msg, &b);
        snprintf(out, size, "%s", b.data);
        zetl_buf_release(&b);
    } else {
        snprintf(out, size, "%s", eb.msg);
    }
    return err;
}

static void test_hand_built(void)
{
    struct zetl_pgo_decoder dec;
    struct zetl_pgo_msg msg;
    struct zetl_arena ar;
    struct wbuf w;
    char out[1024];
    const uint64_t lsn = UINT64_C(0x16B3748);

    zetl_arena_init(&ar, 0);

    /* Insert with every column kind, rendered. */
    zetl_pgo_decoder_init(&dec, 1);
    w.n = 0;
    w8(&w, 'I');
    w32(&w, 16385);
    w8(&w, 'N');
    w16(&w, 5);
    wtext(&w, "1");
    w8(&w, 'n');
    w8(&w, 'u');
    wtext(&w, "a'b\\\n\x01\xc3\xa9");
    w8(&w, 'b');
    w32(&w, 2);
    w8(&w, 0x00);
    w8(&w, 0xff);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK_STR(out, "INSERT relid=16385 N(t:'1',n,u,t:'a''b\\\\\\n\\x01\\xC3\\xA9',b:\\x00ff)");
    CHECK(msg.u.insert.newtup.ncols == 5 && msg.u.insert.newtup.cols[0].val.len == 1 &&
          msg.u.insert.newtup.cols[0].val.ptr == (const char *)last_input + 13);

    /* The error names the type byte, the LSN and the offset: length cut mid-way. */
    w.n = 0;
    w8(&w, 'I');
    w32(&w, 16385);
    w8(&w, 'N');
    w16(&w, 1);
    w8(&w, 't');
    w8(&w, 0);
    w8(&w, 0);
    w8(&w, 0);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK_STR(out,
              "malformed pgoutput message 'I' (0x49) at 0/16B3748: truncated at byte offset 9");

    /* A value length larger than what is left: rejected before use. */
    w.n = 0;
    w8(&w, 'I');
    w32(&w, 16385);
    w8(&w, 'N');
    w16(&w, 1);
    w8(&w, 't');
    w32(&w, 0xFFFFFFFFu);
    w8(&w, 'x');
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK_STR(out,
              "malformed pgoutput message 'I' (0x49) at 0/16B3748: truncated at byte offset 13");

    /* Unknown column kind. */
    w.n = 0;
    w8(&w, 'I');
    w32(&w, 16385);
    w8(&w, 'N');
    w16(&w, 2);
    w8(&w, 'n');
    w8(&w, 'x');
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK_STR(out, "malformed pgoutput message 'I' (0x49) at 0/16B3748: unknown column kind 'x' "
                   "(0x78) at byte offset 9");

    /* Unknown message type, printable and not. */
    w.n = 0;
    w8(&w, 'Z');
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK_STR(out, "malformed pgoutput message 'Z' (0x5A) at 0/16B3748: unknown message type at "
                   "byte offset 0");
    w.n = 0;
    w8(&w, 0x00);
    CHECK(decode_str(&dec, &w, UINT64_C(0x100000000), &msg, &ar, out, sizeof(out)) ==
          ZETL_ERR_PROTOCOL);
    CHECK_STR(out, "malformed pgoutput message 0x00 at 1/0: unknown message type at byte offset 0");
    w.n = 0;
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "empty message") != NULL);

    /* Unknown old-tuple markers. */
    w.n = 0;
    w8(&w, 'U');
    w32(&w, 7);
    w8(&w, 'X');
    w16(&w, 0);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "unknown tuple marker 'X' (0x58) at byte offset 5") != NULL);
    w.n = 0;
    w8(&w, 'U');
    w32(&w, 7);
    w8(&w, 'K');
    w16(&w, 0);
    w8(&w, 'K');
    w16(&w, 0);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "unknown tuple marker 'K' (0x4B) at byte offset 8") != NULL);
    w.n = 0;
    w8(&w, 'D');
    w32(&w, 7);
    w8(&w, 'N');
    w16(&w, 0);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "unknown old tuple marker 'N' (0x4E) at byte offset 5") != NULL);

    /* Update with an old row, then new. */
    w.n = 0;
    w8(&w, 'U');
    w32(&w, 7);
    w8(&w, 'O');
    w16(&w, 1);
    wtext(&w, "old");
    w8(&w, 'N');
    w16(&w, 1);
    w8(&w, 'n');
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK_STR(out, "UPDATE relid=7 O(t:'old') N(n)");

    /* Counts that promise more than the message holds allocate nothing. */
    w.n = 0;
    w8(&w, 'T');
    w32(&w, 0xFFFFFFFFu);
    w8(&w, 0);
    w32(&w, 1);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "truncated at byte offset 6") != NULL);
    w.n = 0;
    w8(&w, 'R');
    w32(&w, 1);
    wstr(&w, "s");
    wstr(&w, "t");
    w8(&w, 'd');
    w16(&w, 0xFFFF);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    w.n = 0;
    w8(&w, 'R');
    w32(&w, 1);
    wstr(&w, "s");
    wstr(&w, "t");
    w8(&w, 'q');
    w16(&w, 0);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "unknown replica identity 'q' (0x71) at byte offset 9") != NULL);

    /* A String without its NUL is truncation, wherever a NUL may lie in memory. */
    w.n = 0;
    w8(&w, 'Y');
    w32(&w, 16390);
    wstr(&w, "public");
    w8(&w, 'm');
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "truncated at byte offset 12") != NULL);

    /* Truncate renders options and relids. */
    w.n = 0;
    w8(&w, 'T');
    w32(&w, 2);
    w8(&w, 3);
    w32(&w, 16385);
    w32(&w, 16390);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK_STR(out, "TRUNCATE options=3(cascade)(restart_identity) relids=[16385,16390]");

    /* Stream messages need protocol 2; two-phase ones need 3. */
    w.n = 0;
    w8(&w, 'S');
    w32(&w, 900);
    w8(&w, 1);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK_STR(out, "malformed pgoutput message 'S' (0x53) at 0/16B3748: STREAM START needs "
                   "protocol version 2, stream uses 1 at byte offset 0");
    CHECK(!dec.in_stream);
    zetl_pgo_decoder_init(&dec, 2);
    struct wbuf bp = {.n = 0};
    w8(&bp, 'b');
    w64(&bp, 1);
    w64(&bp, 2);
    w64(&bp, 3);
    w32(&bp, 4);
    wstr(&bp, "g");
    CHECK(decode_str(&dec, &bp, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "needs protocol version 3") != NULL);

    /* Stream state: Start sets it, changes carry the xid, Stop clears it. */
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK(dec.in_stream && msg.u.stream_start.xid == 900 && msg.u.stream_start.first_segment == 1);
    CHECK(decode_str(&dec, &w, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "STREAM START inside a streamed block") != NULL);
    CHECK(dec.in_stream);
    struct wbuf begin = {.n = 0};
    w8(&begin, 'B');
    w64(&begin, 1);
    w64(&begin, 2);
    w32(&begin, 3);
    CHECK(decode_str(&dec, &begin, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "BEGIN inside a streamed block") != NULL);
    struct wbuf ins = {.n = 0};
    w8(&ins, 'I');
    w32(&ins, 900);
    w32(&ins, 16385);
    w8(&ins, 'N');
    w16(&ins, 1);
    wtext(&ins, "x");
    CHECK(decode_str(&dec, &ins, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK(msg.xid == 900 && msg.u.insert.relid == 16385);
    CHECK_STR(out, "INSERT xid=900 relid=16385 N(t:'x')");
    struct wbuf stop = {.n = 0};
    w8(&stop, 'E');
    CHECK(decode_str(&dec, &stop, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK(!dec.in_stream);
    CHECK(decode_str(&dec, &stop, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "STREAM STOP outside a streamed block") != NULL);
    /* Outside the block the same insert bytes have 4 bytes too many. */
    CHECK(decode_str(&dec, &ins, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);

    /* Stream Abort: 8 bytes of ids, plus lsn + time with protocol 4 parallel streaming. */
    struct wbuf ab = {.n = 0};
    w8(&ab, 'A');
    w32(&ab, 900);
    w32(&ab, 901);
    CHECK(decode_str(&dec, &ab, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK_STR(out, "STREAM ABORT xid=900 subxid=901");
    CHECK(!msg.u.stream_abort.has_abort_info);
    struct wbuf ab4 = ab;
    w64(&ab4, UINT64_C(0x3000000A0));
    w64(&ab4, UINT64_C(766411200000000)); /* 2024-04-14 12:00:00 UTC */
    CHECK(decode_str(&dec, &ab4, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "16 trailing bytes at byte offset 9") != NULL);
    zetl_pgo_decoder_init(&dec, 4);
    dec.parallel_abort = true;
    CHECK(decode_str(&dec, &ab4, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK(msg.u.stream_abort.has_abort_info && msg.u.stream_abort.xid == 900 &&
          msg.u.stream_abort.subxid == 901 &&
          msg.u.stream_abort.abort_lsn == UINT64_C(0x3000000A0) &&
          msg.u.stream_abort.abort_time == INT64_C(766411200000000));
    CHECK_STR(out, "STREAM ABORT xid=900 subxid=901 abort_lsn=3/A0 "
                   "abort_time=2024-04-14 12:00:00.000000+00");
    CHECK(decode_str(&dec, &ab, lsn, &msg, &ar, out, sizeof(out)) == ZETL_ERR_PROTOCOL);
    CHECK(strstr(out, "truncated at byte offset 9") != NULL);
    dec.parallel_abort = false;
    CHECK(decode_str(&dec, &ab, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);

    /* Two-phase messages on protocol 4. */
    CHECK(decode_str(&dec, &bp, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK(msg.u.begin_prepare.prepare_lsn == 1 && msg.u.begin_prepare.end_lsn == 2 &&
          msg.u.begin_prepare.prepare_time == 3 && msg.u.begin_prepare.xid == 4 &&
          msg.u.begin_prepare.gid.len == 1 && msg.u.begin_prepare.gid.ptr[0] == 'g');
    struct wbuf rp = {.n = 0};
    w8(&rp, 'r');
    w8(&rp, 0);
    w64(&rp, 10);
    w64(&rp, 11);
    w64(&rp, 0);
    w64(&rp, (uint64_t)INT64_MAX);
    w32(&rp, 12);
    wstr(&rp, "it's");
    CHECK(decode_str(&dec, &rp, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK_STR(out, "ROLLBACK PREPARED flags=0 prepare_end_lsn=0/A rollback_end_lsn=0/B "
                   "prepare_time=2000-01-01 00:00:00.000000+00 rollback_time=infinity xid=12 "
                   "gid='it''s'");

    /* Message: in a stream it carries the xid first. */
    zetl_pgo_decoder_init(&dec, 2);
    dec.in_stream = true;
    struct wbuf mm = {.n = 0};
    w8(&mm, 'M');
    w32(&mm, 77);
    w8(&mm, 1);
    w64(&mm, UINT64_C(0xAB00000001));
    wstr(&mm, "pfx");
    w32(&mm, 3);
    w8(&mm, 'a');
    w8(&mm, 0);
    w8(&mm, 'b');
    CHECK(decode_str(&dec, &mm, lsn, &msg, &ar, out, sizeof(out)) == ZETL_OK);
    CHECK_STR(out, "MESSAGE xid=77 flags=1 lsn=AB/1 prefix='pfx' content='a\\x00b'");
    zetl_arena_release(&ar);
    free(last_input);
    last_input = NULL;
}

/* Long values render as a prefix, their length and a hash: goldens stay small. */
static void test_describe_long(void)
{
    struct zetl_pgo_msg msg;
    struct zetl_tuple_col col;
    struct zetl_buf b;
    char big[300];

    memset(big, 'x', sizeof(big));
    memset(&msg, 0, sizeof(msg));
    msg.kind = ZETL_PGO_INSERT;
    msg.u.insert.relid = 1;
    msg.u.insert.newtup.ncols = 1;
    msg.u.insert.newtup.cols = &col;
    col.kind = 't';
    col.val.ptr = big;
    col.val.len = sizeof(big);
    zetl_buf_init(&b, 0);
    zetl_pgoutput_describe(&msg, &b);
    CHECK(b.data != NULL && strstr(b.data, "...[300 bytes fnv1a=") != NULL);
    CHECK(b.len < 200);
    zetl_buf_release(&b);
}

int main(void)
{
    for (size_t i = 0; i < sizeof(fixture_names) / sizeof(fixture_names[0]); i++) {
        golden_one(fixture_names[i]);
        cuts_one(fixture_names[i]);
    }
    test_hand_built();
    test_describe_long();
    return zetl_tap_done();
}
