/*
 * Quoting of SQL identifiers and string literals, the one place for both
 * the source's and the warehouse's SQL (standard_conforming_strings is on in
 * every server zetl talks to: only the quote character doubles).
 */
#ifndef ZETL_SQLQUOTE_H
#define ZETL_SQLQUOTE_H

struct zetl_buf;

/* Appends "a""b" for a"b. */
void zetl_sql_append_ident(struct zetl_buf *b, const char *s);
/* Appends 'it''s' for it's. */
void zetl_sql_append_literal(struct zetl_buf *b, const char *s);
/* The same as owned strings. */
char *zetl_sql_quote_ident(const char *s);
char *zetl_sql_quote_literal(const char *s);

#endif
