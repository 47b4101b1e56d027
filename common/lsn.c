/* LSN text forms. */
#include "common/lsn.h"

#include <stdio.h>
#include <string.h>

bool zetl_lsn_parse(const char *s, uint64_t *lsn)
{
    unsigned hi, lo;
    int n = 0;

    if (sscanf(s, "%X/%X%n", &hi, &lo, &n) != 2 || s[n] != '\0')
        return false;
    *lsn = ((uint64_t)hi << 32) | lo;
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
