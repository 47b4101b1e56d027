/*
 * What the S3 client (s3.h) signs and sends, as pure functions: SigV4's
 * UriEncode, the canonical query string, object URLs (virtual-hosted or
 * path-style), curl's CURLOPT_AWS_SIGV4 parameter and the extra signed
 * headers.  curl computes the signature itself over the request we hand it,
 * so these must produce exactly the canonical forms SigV4 specifies.
 */
#ifndef ZETL_S3_SIGN_H
#define ZETL_S3_SIGN_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/strlist.h"
#include "sinks/s3.h"

/*
 * Percent-encodes bytes outside A-Z a-z 0-9 - . _ ~ as %XX (upper-case),
 * keeping '/' when keep_slash: SigV4's UriEncode.  Appends to out.
 */
void zetl_s3_uri_encode(const char *s, size_t n, bool keep_slash, struct zetl_buf *out);

/*
 * Canonical query string of `npairs` key/value pairs (kv[2i], kv[2i+1]; a
 * NULL value is an empty one): each encoded, sorted by encoded key, joined
 * as k=v&k=v.  curl 7.88 signs the query as sent, so we send it canonical.
 * Appends to out.
 */
void zetl_s3_query(const char *const *kv, size_t npairs, struct zetl_buf *out);

/*
 * URL of `key` (may be "" for the bucket) with an optional canonical
 * `query`: virtual-hosted https://bucket.s3.<region>.amazonaws.com/key, or
 * path-style <endpoint>/bucket/key.  Appends to out.
 */
void zetl_s3_url(const struct zetl_s3_opts *o, const char *bucket, const char *key,
                 const char *query, struct zetl_buf *out);

/* "aws:amz:<region>:s3", curl's CURLOPT_AWS_SIGV4 parameter.  Appends to out. */
void zetl_s3_sigv4_param(const char *region, struct zetl_buf *out);

/*
 * Headers we add to a request besides curl's own (all of them signed):
 * x-amz-content-sha256, x-amz-security-token when `token`, Content-Type
 * when `content_type`.  Appends owned strings to out.
 */
void zetl_s3_headers(const char *payload_sha256, const char *token, const char *content_type,
                     struct zetl_strlist *out);

#endif
