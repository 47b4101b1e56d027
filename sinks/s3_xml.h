/*
 * The XML the S3 client (s3.h) reads and writes, without an XML library:
 * S3's answers are flat and small (ListBucketResult, Error,
 * InitiateMultipartUploadResult), so a tag finder plus character-data
 * decoding is enough.  Pure functions.
 */
#ifndef ZETL_S3_XML_H
#define ZETL_S3_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/strlist.h"

/*
 * Decodes XML character data: the five predefined entities and numeric
 * character references (as UTF-8).  False on a malformed or unknown entity
 * or a reference to an invalid code point.  Appends to out.
 */
bool zetl_s3_xml_decode(const char *s, size_t n, struct zetl_buf *out);

/*
 * Text of the first element <tag>...</tag> in xml[0..len) (decoded, into
 * out after a reset).  False when absent or malformed.
 */
bool zetl_s3_xml_text(const char *xml, size_t len, const char *tag, struct zetl_buf *out);

/* One page of a ListObjectsV2 answer. */
struct zetl_s3_list_page {
    char **keys;     /* owned, each owned */
    uint64_t *sizes; /* owned: size of keys[i] */
    size_t nkeys;
    struct zetl_strlist prefixes; /* common prefixes */
    bool truncated;
    char *next_token; /* owned or NULL: NextContinuationToken */
};

/*
 * Parses a ListBucketResult.  ZETL_ERR_PROTOCOL when it is not one, an
 * element is malformed, or it is truncated without a continuation token.
 */
enum zetl_err zetl_s3_parse_list(const char *xml, size_t len, struct zetl_s3_list_page *page,
                                 struct zetl_errbuf *eb);
void zetl_s3_list_page_release(struct zetl_s3_list_page *page);

/* What an S3 <Error> body says; empty strings when absent. */
struct zetl_s3_error {
    char code[64];
    char message[256];
    char region[64];    /* AuthorizationHeaderMalformed: the bucket's region */
    char endpoint[256]; /* PermanentRedirect: where the bucket is */
};

/* Parses an <Error> body; false when the body is not one. */
bool zetl_s3_parse_error(const char *xml, size_t len, struct zetl_s3_error *out);

/*
 * CompleteMultipartUpload body for parts 1..n with their ETags (as the
 * server sent them, quotes included).  Appends to out.
 */
void zetl_s3_complete_xml(char *const *etags, size_t n, struct zetl_buf *out);

/* Parses a decimal uint64 that is the whole of `s`; false when it is not one. */
bool zetl_s3_parse_u64(const char *s, uint64_t *v);

#endif
