/*
 * In-flight transforms: resolves transforms.clean once per relation version
 * into a table plan, then applies the plan to each tuple.  The per-row path
 * does no glob matching and no heap allocation: untouched values (and trimmed
 * ones, which are sub-slices) stay slices of the receive buffer; only lowered
 * and masked values are written, into the caller's arena.
 */
#include "transforms/transform.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "common/glob.h"
#include "common/sha256.h"

/* A rule with none of these steps changes no value, so it costs nothing per row. */
static bool rule_cleans(const struct zetl_clean_rule *r)
{
    return r->trim || r->null_strings.n > 0 || r->lower || r->mask != ZETL_MASK_NONE;
}

static bool rule_matches(const struct zetl_clean_rule *r, const char *qualified, const char *column)
{
    for (size_t i = 0; i < r->columns.n; i++) {
        const char *g = r->columns.items[i];
        if (zetl_glob_match(g, qualified) || zetl_glob_match(g, column))
            return true;
    }
    return false;
}

static bool list_matches(const struct zetl_strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (zetl_glob_match(l->items[i], s))
            return true;
    return false;
}

struct zetl_table_plan *zetl_transform_plan_new(const struct zetl_config *cfg,
                                                const struct zetl_relation *rel,
                                                const uint8_t *salt, size_t salt_len)
{
    struct zetl_table_plan *plan = zetl_calloc(1, sizeof(*plan));
    const struct zetl_clean_rule **matched = NULL;
    size_t tlen = strlen(rel->relname);
    char *qualified = NULL;
    size_t qalloc = 0;

    assert(salt != NULL || salt_len == 0);
    plan->tenant = zetl_strdup(rel->nspname);
    plan->table = zetl_strdup(rel->relname);
    plan->ncols = rel->ncols;
    plan->cols = zetl_calloc(rel->ncols, sizeof(*plan->cols));
    plan->out_index = zetl_calloc(rel->ncols, sizeof(*plan->out_index));
    plan->salt = salt;
    plan->salt_len = salt_len;
    if (cfg->transforms.nclean > 0)
        matched = zetl_calloc(cfg->transforms.nclean, sizeof(*matched));

    for (uint16_t i = 0; i < rel->ncols; i++) {
        const struct zetl_relcol *rc = &rel->cols[i];
        struct zetl_col_plan *cp = &plan->cols[i];
        size_t clen = strlen(rc->name);
        size_t n = 0;

        cp->name = zetl_strdup(rc->name);
        if (rc->key)
            plan->has_key = true;

        /* "table.column": rules name columns of the logical (unioned) table. */
        if (tlen + clen + 2 > qalloc) {
            qalloc = tlen + clen + 2;
            qualified = zetl_realloc(qualified, qalloc);
        }
        memcpy(qualified, rel->relname, tlen);
        qualified[tlen] = '.';
        memcpy(qualified + tlen + 1, rc->name, clen + 1);

        for (size_t r = 0; r < cfg->transforms.nclean; r++) {
            const struct zetl_clean_rule *rule = &cfg->transforms.clean[r];
            if (!rule_matches(rule, qualified, rc->name))
                continue;
            if (rule->drop)
                cp->drop = true;
            if (rule_cleans(rule))
                matched[n++] = rule;
        }
        if (cp->drop)
            continue;
        plan->out_index[plan->nout++] = i;
        if (n > 0) {
            cp->nrules = n;
            cp->rules = zetl_malloc(n * sizeof(*cp->rules));
            memcpy(cp->rules, matched, n * sizeof(*cp->rules));
            plan->any_clean = true;
        }
    }
    free(qualified);
    free(matched);
    return plan;
}

void zetl_transform_plan_free(struct zetl_table_plan *plan)
{
    if (plan == NULL)
        return;
    for (uint16_t i = 0; i < plan->ncols; i++) {
        free(plan->cols[i].rules);
        free(plan->cols[i].name);
    }
    free(plan->cols);
    free(plan->out_index);
    free(plan->table);
    free(plan->tenant);
    free(plan);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * Runs one column's rules over a text value, which starts as a slice of the
 * input.  A value that becomes NULL stays NULL for later rules.
 */
static void clean_value(const struct zetl_table_plan *plan, const struct zetl_col_plan *cp,
                        struct zetl_value *v, struct zetl_arena *ar)
{
    const char *p = v->val.ptr;
    size_t len = v->val.len;
    bool owned = false; /* p points into the arena: lowering may write in place */

    for (size_t r = 0; r < cp->nrules; r++) {
        const struct zetl_clean_rule *rule = cp->rules[r];

        if (rule->trim) {
            /* A sub-slice: trimming never copies. */
            while (len > 0 && is_space(p[0])) {
                p++;
                len--;
            }
            while (len > 0 && is_space(p[len - 1]))
                len--;
        }
        for (size_t i = 0; i < rule->null_strings.n; i++) {
            const char *ns = rule->null_strings.items[i];
            if (strlen(ns) == len && (len == 0 || memcmp(ns, p, len) == 0)) {
                v->kind = ZETL_COL_NULL;
                v->val.ptr = NULL;
                v->val.len = 0;
                return;
            }
        }
        if (rule->lower) {
            size_t first = 0;
            while (first < len && !(p[first] >= 'A' && p[first] <= 'Z'))
                first++;
            if (first < len) {
                char *mut = owned ? (char *)p : zetl_arena_strndup(ar, p, len);
                p = mut;
                owned = true;
                for (size_t i = first; i < len; i++)
                    if (mut[i] >= 'A' && mut[i] <= 'Z')
                        mut[i] = (char)(mut[i] - 'A' + 'a');
            }
        }
        if (rule->mask == ZETL_MASK_SHA256) {
            struct zetl_sha256 h;
            char *hex = zetl_arena_alloc(ar, 65);

            zetl_sha256_init(&h);
            zetl_sha256_update(&h, plan->salt, plan->salt_len);
            zetl_sha256_update(&h, p, len);
            zetl_sha256_final_hex(&h, hex);
            owned = true;
            p = hex;
            len = 64;
        }
    }
    v->val.ptr = p;
    v->val.len = (uint32_t)len;
}

static enum zetl_err bad_kind(const struct zetl_table_plan *plan, uint16_t i, char kind,
                              struct zetl_errbuf *eb)
{
    if (kind == ZETL_COL_BINARY)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "table %s.%s: column %s: unexpected binary value (binary transfer "
                            "was not requested)",
                            plan->tenant, plan->table, plan->cols[i].name);
    return zetl_err_set(eb, ZETL_ERR_PROTOCOL, "table %s.%s: column %s: unknown column kind 0x%02x",
                        plan->tenant, plan->table, plan->cols[i].name, (unsigned char)kind);
}

enum zetl_err zetl_transform_tuple(const struct zetl_table_plan *plan, const struct zetl_tuple *tup,
                                   struct zetl_value *out, struct zetl_arena *ar,
                                   struct zetl_errbuf *eb)
{
    uint16_t k = 0;

    if (tup->ncols != plan->ncols)
        return zetl_err_set(eb, ZETL_ERR_PROTOCOL,
                            "table %s.%s: tuple has %u columns, relation has %u", plan->tenant,
                            plan->table, (unsigned)tup->ncols, (unsigned)plan->ncols);

    /*
     * One pass over the source columns: every kind is checked (a binary value
     * anywhere means the stream is not what was requested), kept ones are
     * copied out, and only columns with rules do more than a copy.
     */
    for (uint16_t i = 0; i < plan->ncols; i++) {
        const struct zetl_tuple_col *c = &tup->cols[i];
        const struct zetl_col_plan *cp = &plan->cols[i];

        if (c->kind != ZETL_COL_TEXT && c->kind != ZETL_COL_NULL &&
            c->kind != ZETL_COL_UNCHANGED_TOAST)
            return bad_kind(plan, i, c->kind, eb);
        if (cp->drop)
            continue;
        out[k].kind = c->kind;
        if (c->kind == ZETL_COL_TEXT) {
            out[k].val = c->val;
            if (cp->nrules > 0)
                clean_value(plan, cp, &out[k], ar);
        } else {
            /* NULL stays NULL; unchanged TOAST is never replaced by anything. */
            out[k].val.ptr = NULL;
            out[k].val.len = 0;
        }
        k++;
    }
    assert(k == plan->nout);
    return ZETL_OK;
}

bool zetl_transform_table_selected(const struct zetl_config *cfg, const char *table)
{
    if (cfg->source.tables.n == 0)
        return true;
    return list_matches(&cfg->source.tables, table);
}

bool zetl_transform_schema_selected(const struct zetl_config *cfg, const char *schema)
{
    /*
     * PostgreSQL reserves "pg_" schema names for the system, and neither those
     * nor information_schema can be published: a "*" glob must not make them
     * tenants.
     */
    if (strncmp(schema, "pg_", 3) == 0 || strcmp(schema, "information_schema") == 0)
        return false;
    return list_matches(&cfg->source.schemas, schema);
}
