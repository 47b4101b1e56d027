/* SHA-256 on OpenSSL's EVP interface. */
#include "common/sha256.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

static void to_hex(const unsigned char *d, unsigned n, char *hex)
{
    static const char digits[] = "0123456789abcdef";

    for (unsigned i = 0; i < n; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[2 * n] = '\0';
}

void zetl_sha256_init(struct zetl_sha256 *h)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        fprintf(stderr, "FATAL:  could not initialize sha256\n");
        abort();
    }
    h->ctx = ctx;
}

void zetl_sha256_update(struct zetl_sha256 *h, const void *p, size_t n)
{
    if (n)
        EVP_DigestUpdate((EVP_MD_CTX *)h->ctx, p, n);
}

void zetl_sha256_final_hex(struct zetl_sha256 *h, char hex[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;

    EVP_DigestFinal_ex((EVP_MD_CTX *)h->ctx, d, &n);
    to_hex(d, n, hex);
    zetl_sha256_release(h);
}

void zetl_sha256_release(struct zetl_sha256 *h)
{
    EVP_MD_CTX_free((EVP_MD_CTX *)h->ctx);
    h->ctx = NULL;
}

void zetl_sha256_raw(const void *p, size_t n, unsigned char out[32])
{
    unsigned len = 32;

    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

void zetl_sha256_hex(const void *p, size_t n, char hex[65])
{
    unsigned char d[32];

    zetl_sha256_raw(p, n, d);
    to_hex(d, 32, hex);
}
