/* Shell-style glob matching used by config validation and transforms. */
#ifndef ZETL_GLOB_H
#define ZETL_GLOB_H

#include <stdbool.h>

/* fnmatch(3) without flags: '*', '?', '[...]'. Both strings NUL-terminated. */
bool zetl_glob_match(const char *pattern, const char *s);
/* True when the pattern is well-formed (balanced brackets, no trailing backslash). */
bool zetl_glob_valid(const char *pattern);

#endif
