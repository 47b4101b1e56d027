/* UTF-8 text checks shared by the encoders (manifest, change events). */
#ifndef ZETL_UTF8_H
#define ZETL_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/*
 * True when s[0..n) is well-formed UTF-8: no overlong forms, no surrogates,
 * nothing above U+10FFFF.
 */
bool zetl_utf8_valid(const unsigned char *s, size_t n);

#endif
