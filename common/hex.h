/* Hexadecimal digits. */
#ifndef ZETL_HEX_H
#define ZETL_HEX_H

/* The value of hex digit c (either case), or -1 when c is none. */
static inline int zetl_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
