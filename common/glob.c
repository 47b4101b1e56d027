/* Glob matching on top of fnmatch(3), plus a syntax check fnmatch does not do. */
#include "common/glob.h"

#include <fnmatch.h>
#include <string.h>

bool zetl_glob_match(const char *pattern, const char *s)
{
    return fnmatch(pattern, s, 0) == 0;
}

bool zetl_glob_valid(const char *pattern)
{
    const char *p = pattern;

    if (*p == '\0')
        return false;
    while (*p) {
        if (*p == '\\') {
            if (p[1] == '\0')
                return false;
            p += 2;
            continue;
        }
        if (*p == '[') {
            const char *q = p + 1;
            if (*q == '!' || *q == '^')
                q++;
            if (*q == ']')
                q++;
            while (*q && *q != ']')
                q++;
            if (*q != ']')
                return false;
            p = q + 1;
            continue;
        }
        p++;
    }
    return true;
}
