/* Quoting of SQL identifiers and string literals. */
#include "common/sqlquote.h"

#include "common/buf.h"

static void quoted(struct zetl_buf *b, const char *s, char q)
{
    zetl_buf_putc(b, q);
    for (; *s; s++) {
        if (*s == q)
            zetl_buf_putc(b, q);
        zetl_buf_putc(b, *s);
    }
    zetl_buf_putc(b, q);
}

void zetl_sql_append_ident(struct zetl_buf *b, const char *s)
{
    quoted(b, s, '"');
}

void zetl_sql_append_literal(struct zetl_buf *b, const char *s)
{
    quoted(b, s, '\'');
}

char *zetl_sql_quote_ident(const char *s)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    quoted(&b, s, '"');
    return b.data;
}

char *zetl_sql_quote_literal(const char *s)
{
    struct zetl_buf b;

    zetl_buf_init(&b, 0);
    quoted(&b, s, '\'');
    return b.data;
}
