/*
 * The XML of S3's answers (see s3_xml.h).  A ListBucketResult is read as
 *   <ListBucketResult> <IsTruncated>true|false</IsTruncated>
 *     <NextContinuationToken>t</NextContinuationToken>  (when truncated)
 *     <Contents><Key>k</Key><Size>n</Size>...</Contents>...
 *     <CommonPrefixes><Prefix>p</Prefix></CommonPrefixes>...
 *   </ListBucketResult>
 * and an error as <Error><Code/><Message/><Region/><Endpoint/></Error>;
 * other elements are skipped.
 */
#include "sinks/s3_xml.h"

#include "common/mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void put_utf8(struct zetl_buf *out, uint32_t cp)
{
    char u[4];

    if (cp < 0x80) {
        zetl_buf_putc(out, (char)cp);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        zetl_buf_append(out, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        zetl_buf_append(out, u, 3);
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        zetl_buf_append(out, u, 4);
    }
}

bool zetl_s3_xml_decode(const char *s, size_t n, struct zetl_buf *out)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};

    for (size_t i = 0; i < n; i++) {
        const char *semi;
        size_t elen;
        bool done = false;

        if (s[i] != '&') {
            zetl_buf_putc(out, s[i]);
            continue;
        }
        semi = memchr(s + i + 1, ';', n - i - 1);
        if (semi == NULL)
            return false;
        elen = (size_t)(semi - (s + i + 1));
        if (elen >= 2 && s[i + 1] == '#') {
            bool hexa = s[i + 2] == 'x';
            size_t start = hexa ? 3 : 2;
            uint32_t cp = 0;

            /* Digits are s[i+start .. i+elen]: at least one, at most 8. */
            if (elen + 1 <= start || elen + 1 - start > 8)
                return false;
            for (size_t k = i + start; k < i + 1 + elen; k++) {
                char c = s[k];
                int d;

                if (c >= '0' && c <= '9')
                    d = c - '0';
                else if (hexa && c >= 'a' && c <= 'f')
                    d = c - 'a' + 10;
                else if (hexa && c >= 'A' && c <= 'F')
                    d = c - 'A' + 10;
                else
                    return false;
                cp = cp * (hexa ? 16 : 10) + (uint32_t)d;
                if (cp > 0x10FFFF)
                    return false;
            }
            if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
                return false;
            put_utf8(out, cp);
            done = true;
        } else {
            for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++) {
                if (strlen(named[k].name) == elen && memcmp(named[k].name, s + i + 1, elen) == 0) {
                    zetl_buf_putc(out, named[k].c);
                    done = true;
                    break;
                }
            }
        }
        if (!done)
            return false;
        i += elen + 1;
    }
    return true;
}

/*
 * Finds the next element <tag ...>content</tag> (or <tag/>) in [*p, end):
 * its content span; *p moves past the element.  Elements are not nested in
 * themselves in S3's answers.  False when there is none or it is not closed.
 */
static bool xml_next(const char **p, const char *end, const char *tag, const char **content,
                     size_t *clen)
{
    size_t tl = strlen(tag);
    const char *s = *p;

    while (s < end) {
        const char *lt = memchr(s, '<', (size_t)(end - s));
        const char *gt, *close;

        if (lt == NULL || (size_t)(end - lt) < tl + 2)
            return false;
        s = lt + 1;
        if (memcmp(s, tag, tl) != 0 || (s[tl] != '>' && s[tl] != '/' && s[tl] != ' ' &&
                                        s[tl] != '\t' && s[tl] != '\r' && s[tl] != '\n'))
            continue;
        gt = memchr(s + tl, '>', (size_t)(end - (s + tl)));
        if (gt == NULL)
            return false;
        if (gt[-1] == '/') { /* <tag/> */
            *content = gt + 1;
            *clen = 0;
            *p = gt + 1;
            return true;
        }
        for (close = gt + 1; close < end;) {
            const char *c = memchr(close, '<', (size_t)(end - close));
            if (c == NULL || (size_t)(end - c) < tl + 3)
                return false;
            if (c[1] == '/' && memcmp(c + 2, tag, tl) == 0 && c[2 + tl] == '>') {
                *content = gt + 1;
                *clen = (size_t)(c - (gt + 1));
                *p = c + 3 + tl;
                return true;
            }
            close = c + 1;
        }
        return false;
    }
    return false;
}

bool zetl_s3_xml_text(const char *xml, size_t len, const char *tag, struct zetl_buf *out)
{
    const char *p = xml, *c;
    size_t cl;

    zetl_buf_reset(out);
    if (!xml_next(&p, xml + len, tag, &c, &cl))
        return false;
    /* Element content with markup inside is not text. */
    if (memchr(c, '<', cl) != NULL)
        return false;
    if (!zetl_s3_xml_decode(c, cl, out))
        return false;
    zetl_buf_putc(out, '\0');
    out->len--;
    return true;
}

bool zetl_s3_parse_u64(const char *s, uint64_t *v)
{
    char *end;

    if (s[0] < '0' || s[0] > '9')
        return false;
    errno = 0;
    *v = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0';
}

void zetl_s3_list_page_release(struct zetl_s3_list_page *page)
{
    for (size_t i = 0; i < page->nkeys; i++)
        free(page->keys[i]);
    free(page->keys);
    free(page->sizes);
    zetl_strlist_release(&page->prefixes);
    free(page->next_token);
    memset(page, 0, sizeof(*page));
}

enum zetl_err zetl_s3_parse_list(const char *xml, size_t len, struct zetl_s3_list_page *page,
                                 struct zetl_errbuf *eb)
{
    const char *end = xml + len, *p, *c, *root;
    size_t cl, rl;
    struct zetl_buf t;
    enum zetl_err err = ZETL_OK;

    memset(page, 0, sizeof(*page));
    zetl_buf_init(&t, 0);
    p = xml;
    if (!xml_next(&p, end, "ListBucketResult", &root, &rl)) {
        err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "answer is not a ListBucketResult");
        goto fail;
    }
    p = root;
    while (xml_next(&p, root + rl, "Contents", &c, &cl)) {
        uint64_t size = 0;

        if (!zetl_s3_xml_text(c, cl, "Key", &t)) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "ListBucketResult has a malformed <Key>");
            goto fail;
        }
        page->keys = zetl_realloc(page->keys, (page->nkeys + 1) * sizeof(char *));
        page->sizes = zetl_realloc(page->sizes, (page->nkeys + 1) * sizeof(uint64_t));
        page->keys[page->nkeys] = zetl_strndup(t.data, t.len);
        if (zetl_s3_xml_text(c, cl, "Size", &t) && !zetl_s3_parse_u64(t.data, &size)) {
            page->nkeys++;
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL, "ListBucketResult has a malformed <Size>");
            goto fail;
        }
        page->sizes[page->nkeys++] = size;
    }
    p = root;
    while (xml_next(&p, root + rl, "CommonPrefixes", &c, &cl)) {
        if (!zetl_s3_xml_text(c, cl, "Prefix", &t)) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "ListBucketResult has a malformed <CommonPrefixes>");
            goto fail;
        }
        zetl_strlist_addn(&page->prefixes, t.data, t.len);
    }
    if (zetl_s3_xml_text(root, rl, "IsTruncated", &t)) {
        if (strcmp(t.data, "true") == 0) {
            page->truncated = true;
        } else if (strcmp(t.data, "false") != 0) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "ListBucketResult has a malformed <IsTruncated>");
            goto fail;
        }
    }
    if (page->truncated) {
        if (!zetl_s3_xml_text(root, rl, "NextContinuationToken", &t) || t.len == 0) {
            err = zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                               "ListBucketResult is truncated without a continuation token");
            goto fail;
        }
        page->next_token = zetl_strndup(t.data, t.len);
    }
    zetl_buf_release(&t);
    return ZETL_OK;

fail:
    zetl_buf_release(&t);
    zetl_s3_list_page_release(page);
    return err;
}

static void copy_text(const char *xml, size_t len, const char *tag, struct zetl_buf *t, char *dst,
                      size_t dstlen)
{
    dst[0] = '\0';
    if (zetl_s3_xml_text(xml, len, tag, t)) {
        /* Printable ASCII only: these end up in one log line. */
        size_t j = 0;
        for (size_t i = 0; i < t->len && j + 1 < dstlen; i++) {
            unsigned char ch = (unsigned char)t->data[i];
            dst[j++] = ch >= 0x20 && ch < 0x7F ? (char)ch : ch == '\n' || ch == '\t' ? ' ' : '?';
        }
        dst[j] = '\0';
    }
}

bool zetl_s3_parse_error(const char *xml, size_t len, struct zetl_s3_error *out)
{
    const char *p = xml, *c;
    size_t cl;
    struct zetl_buf t;

    memset(out, 0, sizeof(*out));
    if (!xml_next(&p, xml + len, "Error", &c, &cl))
        return false;
    zetl_buf_init(&t, 0);
    copy_text(c, cl, "Code", &t, out->code, sizeof(out->code));
    copy_text(c, cl, "Message", &t, out->message, sizeof(out->message));
    copy_text(c, cl, "Region", &t, out->region, sizeof(out->region));
    copy_text(c, cl, "Endpoint", &t, out->endpoint, sizeof(out->endpoint));
    zetl_buf_release(&t);
    return out->code[0] != '\0';
}

void zetl_s3_complete_xml(char *const *etags, size_t n, struct zetl_buf *out)
{
    zetl_buf_puts(out,
                  "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (size_t i = 0; i < n; i++) {
        zetl_buf_printf(out, "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
        for (const char *e = etags[i]; *e; e++) {
            switch (*e) {
            case '&':
                zetl_buf_puts(out, "&amp;");
                break;
            case '<':
                zetl_buf_puts(out, "&lt;");
                break;
            case '>':
                zetl_buf_puts(out, "&gt;");
                break;
            case '"':
                zetl_buf_puts(out, "&quot;");
                break;
            default:
                zetl_buf_putc(out, *e);
            }
        }
        zetl_buf_puts(out, "</ETag></Part>");
    }
    zetl_buf_puts(out, "</CompleteMultipartUpload>");
}
