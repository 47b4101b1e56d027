/*
 * CSV field encoder for the batch files: comma separated, double-quote
 * quoting, NULL as an unquoted empty field, the empty string as "".  The
 * layout the warehouse loaders (PostgreSQL COPY ... CSV, Redshift COPY ...
 * CSV) read back without loss.
 */
#ifndef ZETL_CSV_H
#define ZETL_CSV_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

/*
 * True when the text `p` (n bytes, n may be 0) must be quoted: it is empty,
 * contains , " \r \n or \, starts or ends with a space or tab, or is the
 * end-of-data marker \. (which COPY would otherwise read as end of input).
 */
bool zetl_csv_needs_quote(const char *p, size_t n);

/*
 * Appends one field (no separator) to `out`: nothing for NULL (p == NULL),
 * the text raw when no quoting is needed, else quoted with every " doubled.
 * Returns false (out unchanged) when the buffer's cap would be exceeded.
 */
bool zetl_csv_append_field(struct zetl_buf *out, const char *p, size_t n);

#endif
