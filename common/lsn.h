/* LSNs: printed as %X/%X like PostgreSQL, and as fixed-width hex in file names. */
#ifndef ZETL_LSN_H
#define ZETL_LSN_H

#include <stdbool.h>
#include <stdint.h>

#define ZETL_LSN_FMT "%X/%X"
#define ZETL_LSN_ARGS(lsn)                                                                         \
    (unsigned)((uint64_t)(lsn) >> 32), (unsigned)((uint64_t)(lsn)&0xffffffffu)

/* Parses "16/B374D848"; returns false on anything else. */
bool zetl_lsn_parse(const char *s, uint64_t *lsn);
/* Writes 16 upper-case hex digits and a NUL: sortable as text. out must hold 17 bytes. */
void zetl_lsn_to_hex16(uint64_t lsn, char out[17]);
bool zetl_lsn_from_hex16(const char *s, uint64_t *lsn);

#endif
