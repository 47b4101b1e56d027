/* SHA-256 (OpenSSL's libcrypto is the only user of that library in zetl). */
#ifndef ZETL_SHA256_H
#define ZETL_SHA256_H

#include <stddef.h>

struct zetl_sha256 {
    void *ctx; /* owned EVP_MD_CTX */
};

void zetl_sha256_init(struct zetl_sha256 *h);
void zetl_sha256_update(struct zetl_sha256 *h, const void *p, size_t n);
/* Writes 64 lowercase hex digits and a NUL into hex, and releases the context. */
void zetl_sha256_final_hex(struct zetl_sha256 *h, char hex[65]);
/* Releases without producing a digest (safe after final). */
void zetl_sha256_release(struct zetl_sha256 *h);
/* One-shot digest of a buffer. */
void zetl_sha256_hex(const void *p, size_t n, char hex[65]);
/* One-shot raw 32-byte digest. */
void zetl_sha256_raw(const void *p, size_t n, unsigned char out[32]);

#endif
