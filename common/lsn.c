/* LSN text forms. */
#include "common/lsn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Like PostgreSQL's pg_lsn_in: 1-8 hex digits, '/', 1-8 hex digits, nothing else. */
bool zetl_lsn_parse(const char *s, uint64_t *lsn)
{
    static const char hexdigits[] = "0123456789abcdefABCDEF";
    size_t len1 = strspn(s, hexdigits);
    size_t len2;

    if (len1 < 1 || len1 > 8 || s[len1] != '/')
        return false;
    len2 = strspn(s + len1 + 1, hexdigits);
    if (len2 < 1 || len2 > 8 || s[len1 + 1 + len2] != '\0')
        return false;
    *lsn = ((uint64_t)strtoul(s, NULL, 16) << 32) | strtoul(s + len1 + 1, NULL, 16);
    return true;
}

void zetl_lsn_to_hex16(uint64_t lsn, char out[17])
{
    snprintf(out, 17, "%016llX", (unsigned long long)lsn);
}

bool zetl_lsn_from_hex16(const char *s, uint64_t *lsn)
{
    uint64_t v = 0;

    if (strlen(s) < 16)
        return false;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return false;
        v = (v << 4) | d;
    }
    *lsn = v;
    return true;
}
