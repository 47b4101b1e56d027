/*
 * Unit tests for transforms/: table plans (drops, rule matching on "column"
 * and "table.column"), each cleaning step and their order, masking vectors,
 * unchanged-TOAST and NULL handling, zero-copy output, and selection globs.
 * Configs, relations and tuples are built by hand: no YAML, no decoder.
 */
#include <stdlib.h>
#include <string.h>

#include "tests/unit/tap.h"
#include "transforms/transform.h"

#define LIST(...)                                                                                  \
    ((struct zetl_strlist){(char *[]){__VA_ARGS__},                                                \
                           sizeof((char *[]){__VA_ARGS__}) / sizeof(char *)})
#define NRULES(a) (sizeof(a) / sizeof((a)[0]))

/* sha256 of the bytes in the comment, from `printf %s '...' | sha256sum`. */
#define SHA_SALTVALUE "d430a1da30afe1a9d07b3b36042151ebaf53c4882af1609733c04930de318e33"
#define SHA_PEPPER_ALICE "8b8d9adc4875c0dca816e3e17b7ac87b45e40945b731fa02e3b42bf101589e21"
#define SHA_SALT_ALICE "109f0b7ded1d94140eda40c1286befd64aec56290dba9e6642f3d096e9fc3b05"
#define SHA_ALICE "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
#define SHA_PEPPER "8cbbcf29d9cef89675c5f5c1dcfe827d0570416a5aaba30dd0de159661ad905b"

static void config_init(struct zetl_config *cfg, struct zetl_clean_rule *rules, size_t nrules)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->transforms.clean = rules;
    cfg->transforms.nclean = nrules;
}

/* tenant_a.users (id key, email, name, ssn, bio) unless names are given. */
static void relation_init(struct zetl_relation *rel, struct zetl_relcol *cols, char *nspname,
                          char *relname, char **names, uint16_t ncols)
{
    memset(rel, 0, sizeof(*rel));
    rel->relid = 16384;
    rel->nspname = nspname;
    rel->relname = relname;
    rel->replident = 'd';
    rel->ncols = ncols;
    rel->cols = cols;
    for (uint16_t i = 0; i < ncols; i++) {
        memset(&cols[i], 0, sizeof(cols[i]));
        cols[i].name = names[i];
        cols[i].typoid = 25;
        cols[i].typmod = -1;
    }
}

static char *users_names[] = {"id", "email", "name", "ssn", "bio"};

static void users_init(struct zetl_relation *rel, struct zetl_relcol cols[5])
{
    relation_init(rel, cols, "tenant_a", "users", users_names, 5);
    cols[0].key = true;
}

static struct zetl_tuple_col text_col(const char *s)
{
    struct zetl_tuple_col c = {ZETL_COL_TEXT, {s, (uint32_t)strlen(s)}};
    return c;
}

static bool value_is(const struct zetl_value *v, const char *s)
{
    return v->kind == ZETL_COL_TEXT && v->val.len == strlen(s) &&
           memcmp(v->val.ptr, s, v->val.len) == 0;
}

/*
 * Runs `rules` over one text value of column users.email (salt "salt").
 * Returns the output kind; *res gets a NUL-terminated copy of a text value
 * (static storage, overwritten by the next call).
 */
static char clean_one(struct zetl_clean_rule *rules, size_t nrules, const char *in,
                      const char **res)
{
    static char text[256];
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[1];
    char *names[] = {"email"};
    struct zetl_tuple_col tc[1];
    struct zetl_tuple tup = {1, tc};
    struct zetl_value out[1];
    struct zetl_arena ar;
    struct zetl_errbuf eb;
    char kind = '?';

    config_init(&cfg, rules, nrules);
    relation_init(&rel, cols, "tenant_a", "users", names, 1);
    struct zetl_table_plan *plan =
        zetl_transform_plan_new(&cfg, &rel, (const uint8_t *)"salt", strlen("salt"));
    zetl_arena_init(&ar, 0);
    tc[0] = text_col(in);
    text[0] = '\0';
    if (zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK) {
        kind = out[0].kind;
        if (kind == ZETL_COL_TEXT && out[0].val.len < sizeof(text)) {
            memcpy(text, out[0].val.ptr, out[0].val.len);
            text[out[0].val.len] = '\0';
        }
    }
    *res = text;
    zetl_arena_release(&ar);
    zetl_transform_plan_free(plan);
    return kind;
}

static void test_plan_drop(void)
{
    struct zetl_clean_rule rules[] = {
        {.columns = LIST("users.ssn"), .drop = true},
        {.columns = LIST("*.bio"), .drop = true},
        {.columns = LIST("orders.email"), .drop = true}, /* another table: keeps users.email */
    };
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[5];

    config_init(&cfg, rules, NRULES(rules));
    users_init(&rel, cols);
    struct zetl_table_plan *plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);

    CHECK_STR(plan->tenant, "tenant_a");
    CHECK_STR(plan->table, "users");
    CHECK(plan->ncols == 5);
    CHECK(plan->nout == 3);
    CHECK(plan->out_index[0] == 0 && plan->out_index[1] == 1 && plan->out_index[2] == 2);
    CHECK(!plan->cols[0].drop && !plan->cols[1].drop && !plan->cols[2].drop);
    CHECK(plan->cols[3].drop && plan->cols[4].drop);
    CHECK(plan->cols[3].nrules == 0 && plan->cols[4].nrules == 0);
    CHECK(plan->has_key);
    CHECK(!plan->any_clean); /* drop-only rules need no per-row work */
    CHECK_STR(plan->cols[1].name, "email");

    /* Dropped columns leave the output; the rest keep their order. */
    struct zetl_tuple_col tc[5] = {text_col("1"), text_col("a@x"), text_col("Al"),
                                   text_col("123-45-6789"), text_col("bio")};
    struct zetl_tuple tup = {5, tc};
    struct zetl_value out[3];
    struct zetl_arena ar;
    struct zetl_errbuf eb;
    zetl_arena_init(&ar, 0);
    CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK);
    CHECK(value_is(&out[0], "1") && value_is(&out[1], "a@x") && value_is(&out[2], "Al"));
    zetl_arena_release(&ar);
    zetl_transform_plan_free(plan);

    /* A drop anywhere wins over cleaning rules before or after it. */
    struct zetl_clean_rule rules2[] = {
        {.columns = LIST("*"), .trim = true},
        {.columns = LIST("email"), .drop = true},
        {.columns = LIST("email"), .lower = true},
    };
    config_init(&cfg, rules2, NRULES(rules2));
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(plan->nout == 4);
    CHECK(plan->cols[1].drop && plan->cols[1].nrules == 0);
    CHECK(plan->out_index[1] == 2);
    CHECK(plan->any_clean);
    zetl_transform_plan_free(plan);

    /* Dropping everything: an empty output row. */
    struct zetl_clean_rule rules3[] = {{.columns = LIST("*"), .drop = true}};
    config_init(&cfg, rules3, NRULES(rules3));
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(plan->nout == 0 && !plan->any_clean && plan->has_key);
    zetl_transform_plan_free(plan);

    zetl_transform_plan_free(NULL);
}

static void test_plan_overlap(void)
{
    struct zetl_clean_rule rules[] = {
        {.columns = LIST("*"), .trim = true},
        {.columns = LIST("email"), .lower = true},
        /* Both globs match users.email: the rule is listed once. */
        {.columns = LIST("users.email", "email"), .mask = ZETL_MASK_SHA256},
        {.columns = LIST("orders.email", "orders.*"), .lower = true},
        {.columns = LIST("name")}, /* no step: not listed */
        {.columns = LIST("users.name"), .null_strings = LIST("")},
    };
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[5];

    config_init(&cfg, rules, NRULES(rules));
    users_init(&rel, cols);
    struct zetl_table_plan *plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);

    CHECK(plan->nout == 5 && plan->any_clean);
    CHECK(plan->cols[0].nrules == 1 && plan->cols[0].rules[0] == &rules[0]);
    CHECK(plan->cols[1].nrules == 3);
    CHECK(plan->cols[1].rules[0] == &rules[0] && plan->cols[1].rules[1] == &rules[1] &&
          plan->cols[1].rules[2] == &rules[2]);
    CHECK(plan->cols[2].nrules == 2);
    CHECK(plan->cols[2].rules[0] == &rules[0] && plan->cols[2].rules[1] == &rules[5]);
    zetl_transform_plan_free(plan);

    /* The same rules on tenant_b.orders: "orders.*" now matches, "users.*" does not. */
    char *onames[] = {"id", "email", "name"};
    struct zetl_relcol ocols[3];
    relation_init(&rel, ocols, "tenant_b", "orders", onames, 3);
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK_STR(plan->tenant, "tenant_b");
    CHECK_STR(plan->table, "orders");
    CHECK(!plan->has_key);
    CHECK(plan->cols[0].nrules == 2 && plan->cols[0].rules[1] == &rules[3]);
    CHECK(plan->cols[1].nrules == 4 && plan->cols[1].rules[3] == &rules[3]);
    CHECK(plan->cols[2].nrules == 2 && plan->cols[2].rules[1] == &rules[3]);
    zetl_transform_plan_free(plan);

    /* No rules at all. */
    config_init(&cfg, NULL, 0);
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(plan->nout == 3 && !plan->any_clean);
    zetl_transform_plan_free(plan);
}

static void test_plan_globs(void)
{
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[5];
    struct zetl_table_plan *plan;

    users_init(&rel, cols);

    /* "users.*" names every column of users, through the qualified name only. */
    struct zetl_clean_rule r1[] = {{.columns = LIST("users.*"), .trim = true}};
    config_init(&cfg, r1, 1);
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    for (int i = 0; i < 5; i++)
        CHECK(plan->cols[i].nrules == 1);
    zetl_transform_plan_free(plan);

    /* A bare column name matches that column in any table, and nothing else. */
    struct zetl_clean_rule r2[] = {{.columns = LIST("email"), .trim = true}};
    config_init(&cfg, r2, 1);
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(plan->cols[1].nrules == 1);
    CHECK(plan->cols[0].nrules == 0 && plan->cols[2].nrules == 0);
    zetl_transform_plan_free(plan);

    /* The tenant schema is not part of the name: tables union across tenants. */
    struct zetl_clean_rule r3[] = {
        {.columns = LIST("tenant_a.users.email", "tenant_a.email"), .trim = true}};
    config_init(&cfg, r3, 1);
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(!plan->any_clean);
    zetl_transform_plan_free(plan);

    /* '*' spans the dot, '?' and classes work on either form. */
    struct zetl_clean_rule r4[] = {
        {.columns = LIST("*mail"), .trim = true},
        {.columns = LIST("user?.[ns]*"), .lower = true},
        {.columns = LIST("*.i?"), .mask = ZETL_MASK_SHA256},
    };
    config_init(&cfg, r4, NRULES(r4));
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(plan->cols[0].nrules == 1 && plan->cols[0].rules[0] == &r4[2]);
    CHECK(plan->cols[1].nrules == 1 && plan->cols[1].rules[0] == &r4[0]);
    CHECK(plan->cols[2].nrules == 1 && plan->cols[2].rules[0] == &r4[1]);
    CHECK(plan->cols[3].nrules == 1 && plan->cols[3].rules[0] == &r4[1]);
    CHECK(plan->cols[4].nrules == 0);
    zetl_transform_plan_free(plan);

    /* Hostile names are carried as they are. */
    char *hnames[] = {"we.ird\"col"};
    struct zetl_relcol hcols[1];
    relation_init(&rel, hcols, "a\"; drop table x; --", "t.x", hnames, 1);
    struct zetl_clean_rule r5[] = {{.columns = LIST("t.x.we.ird\"col"), .lower = true}};
    config_init(&cfg, r5, 1);
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK_STR(plan->tenant, "a\"; drop table x; --");
    CHECK_STR(plan->table, "t.x");
    CHECK(plan->cols[0].nrules == 1);
    zetl_transform_plan_free(plan);
}

static void test_steps(void)
{
    const char *res;

    /* trim: all six ASCII white-space characters, both ends, nothing inside. */
    struct zetl_clean_rule trim[] = {{.columns = LIST("*"), .trim = true}};
    CHECK(clean_one(trim, 1, " \t\n\r\f\va b\t\v\f\r\n ", &res) == 't');
    CHECK_STR(res, "a b");
    CHECK(clean_one(trim, 1, "   ", &res) == 't'); /* empty, not NULL */
    CHECK_STR(res, "");
    CHECK(clean_one(trim, 1, "\xc2\xa0x\xc2\xa0", &res) == 't'); /* NBSP is not ASCII space */
    CHECK_STR(res, "\xc2\xa0x\xc2\xa0");

    /* null_strings: exact, case-sensitive, whole-value matches. */
    struct zetl_clean_rule nulls[] = {{.columns = LIST("*"), .null_strings = LIST("NULL", "")}};
    CHECK(clean_one(nulls, 1, "NULL", &res) == 'n');
    CHECK(clean_one(nulls, 1, "", &res) == 'n');
    CHECK(clean_one(nulls, 1, "null", &res) == 't');
    CHECK_STR(res, "null");
    CHECK(clean_one(nulls, 1, "NULLx", &res) == 't');
    CHECK(clean_one(nulls, 1, "NUL", &res) == 't');
    CHECK(clean_one(nulls, 1, " NULL", &res) == 't'); /* no trim asked for */
    CHECK_STR(res, " NULL");

    /* trim, then null_strings on the trimmed value. */
    struct zetl_clean_rule tn[] = {
        {.columns = LIST("*"), .null_strings = LIST("NULL"), .trim = true}};
    CHECK(clean_one(tn, 1, "  NULL ", &res) == 'n');
    CHECK(clean_one(tn, 1, "\tNULL\n", &res) == 'n');
    CHECK(clean_one(tn, 1, " N ULL ", &res) == 't');
    CHECK_STR(res, "N ULL");

    /* The string 'NULL' survives when no rule says otherwise. */
    struct zetl_clean_rule other[] = {{.columns = LIST("*"), .trim = true, .lower = true},
                                      {.columns = LIST("name"), .null_strings = LIST("NULL")}};
    CHECK(clean_one(other, NRULES(other), "NULL", &res) == 't');
    CHECK_STR(res, "null");
    CHECK(clean_one(NULL, 0, "NULL", &res) == 't');
    CHECK_STR(res, "NULL");

    /* lower: A-Z only. */
    struct zetl_clean_rule lower[] = {{.columns = LIST("*"), .lower = true}};
    CHECK(clean_one(lower, 1, "MiXeD 123 @ABCXYZ[`{", &res) == 't');
    CHECK_STR(res, "mixed 123 @abcxyz[`{");
    /* UTF-8 multibyte sequences stay intact (É, Ä, ß, İ, Ω are not touched). */
    CHECK(clean_one(lower, 1,
                    "\xc3\x89"
                    "COLE \xc3\x84pfel STRA\xc3\x9f"
                    "E \xc4\xb0Z \xce\xa9",
                    &res) == 't');
    CHECK_STR(res, "\xc3\x89"
                   "cole \xc3\x84pfel stra\xc3\x9f"
                   "e \xc4\xb0z \xce\xa9");

    /* Within a rule null_strings runs before lower: "NULL" is lowered, not nulled... */
    struct zetl_clean_rule nl[] = {
        {.columns = LIST("*"), .null_strings = LIST("null"), .lower = true}};
    CHECK(clean_one(nl, 1, "NULL", &res) == 't');
    CHECK_STR(res, "null");
    CHECK(clean_one(nl, 1, "null", &res) == 'n');
    /* ...and a later rule sees the earlier rule's output. */
    struct zetl_clean_rule nl2[] = {{.columns = LIST("*"), .lower = true},
                                    {.columns = LIST("*"), .null_strings = LIST("null")}};
    CHECK(clean_one(nl2, 2, "NULL", &res) == 'n');
    /* A later trim does not undo an earlier null_strings miss, but matches after it. */
    struct zetl_clean_rule nt[] = {{.columns = LIST("*"), .null_strings = LIST("x")},
                                   {.columns = LIST("*"), .trim = true}};
    CHECK(clean_one(nt, 2, " x ", &res) == 't');
    CHECK_STR(res, "x");

    /* mask: lowercase hex sha256(salt || value), after trim and lower. */
    struct zetl_clean_rule mask[] = {{.columns = LIST("*"), .mask = ZETL_MASK_SHA256}};
    CHECK(clean_one(mask, 1, "value", &res) == 't');
    CHECK_STR(res, SHA_SALTVALUE);
    struct zetl_clean_rule tlm[] = {
        {.columns = LIST("*"), .trim = true, .lower = true, .mask = ZETL_MASK_SHA256}};
    CHECK(clean_one(tlm, 1, "  Alice@Example.COM\n", &res) == 't');
    CHECK_STR(res, SHA_SALT_ALICE);
    /* Steps after a mask work on the digest. */
    struct zetl_clean_rule ml[] = {{.columns = LIST("*"), .mask = ZETL_MASK_SHA256},
                                   {.columns = LIST("*"), .null_strings = LIST(SHA_SALTVALUE)}};
    CHECK(clean_one(ml, 2, "value", &res) == 'n');
    /* A value nulled by null_strings is not masked. */
    struct zetl_clean_rule nm[] = {
        {.columns = LIST("*"), .null_strings = LIST("NULL"), .mask = ZETL_MASK_SHA256}};
    CHECK(clean_one(nm, 1, "NULL", &res) == 'n');
}

/* Masks `in` of users.email with `salt` (may be NULL) into hex[65]. */
static void mask_with(const char *salt, const char *in, char hex[65])
{
    struct zetl_clean_rule rules[] = {{.columns = LIST("email"), .mask = ZETL_MASK_SHA256}};
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[5];
    struct zetl_tuple_col tc[5] = {
        text_col("1"), text_col(in), {ZETL_COL_NULL, {NULL, 0}}, text_col(""), text_col("")};
    struct zetl_tuple tup = {5, tc};
    struct zetl_value out[5];
    struct zetl_arena ar;
    struct zetl_errbuf eb;

    config_init(&cfg, rules, 1);
    users_init(&rel, cols);
    struct zetl_table_plan *plan =
        zetl_transform_plan_new(&cfg, &rel, (const uint8_t *)salt, salt ? strlen(salt) : 0);
    zetl_arena_init(&ar, 0);
    hex[0] = '\0';
    if (zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK && out[1].kind == 't' &&
        out[1].val.len == 64) {
        memcpy(hex, out[1].val.ptr, 64);
        hex[64] = '\0';
    }
    zetl_arena_release(&ar);
    zetl_transform_plan_free(plan);
}

static void test_mask(void)
{
    char a[65], b[65];

    mask_with("pepper", "alice@example.com", a);
    CHECK_STR(a, SHA_PEPPER_ALICE);
    mask_with("pepper", "alice@example.com", b);
    CHECK_STR(a, b); /* deterministic: joins on masked columns still work */
    mask_with("salt", "alice@example.com", b);
    CHECK_STR(b, SHA_SALT_ALICE);
    CHECK(strcmp(a, b) != 0);
    mask_with(NULL, "alice@example.com", b);
    CHECK_STR(b, SHA_ALICE);
    mask_with("pepper", "", b);
    CHECK_STR(b, SHA_PEPPER);

    /* The salt is binary: bytes after a NUL count. */
    struct zetl_clean_rule rules[] = {{.columns = LIST("*"), .mask = ZETL_MASK_SHA256}};
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[1];
    char *names[] = {"v"};
    struct zetl_tuple_col tc[1] = {text_col("value")};
    struct zetl_tuple tup = {1, tc};
    struct zetl_value out1[1], out2[1];
    struct zetl_arena ar;
    struct zetl_errbuf eb;
    static const uint8_t s1[] = {'s', 0, 'a'}, s2[] = {'s', 0, 'b'};

    config_init(&cfg, rules, 1);
    relation_init(&rel, cols, "t", "t", names, 1);
    zetl_arena_init(&ar, 0);
    struct zetl_table_plan *p1 = zetl_transform_plan_new(&cfg, &rel, s1, sizeof(s1));
    struct zetl_table_plan *p2 = zetl_transform_plan_new(&cfg, &rel, s2, sizeof(s2));
    CHECK(zetl_transform_tuple(p1, &tup, out1, &ar, &eb) == ZETL_OK);
    CHECK(zetl_transform_tuple(p2, &tup, out2, &ar, &eb) == ZETL_OK);
    CHECK(out1[0].val.len == 64 && out2[0].val.len == 64);
    CHECK(memcmp(out1[0].val.ptr, out2[0].val.ptr, 64) != 0);

    /* NULL stays NULL under a mask. */
    tc[0].kind = ZETL_COL_NULL;
    tc[0].val.ptr = NULL;
    tc[0].val.len = 0;
    CHECK(zetl_transform_tuple(p1, &tup, out1, &ar, &eb) == ZETL_OK);
    CHECK(out1[0].kind == ZETL_COL_NULL && out1[0].val.ptr == NULL && out1[0].val.len == 0);
    zetl_transform_plan_free(p1);
    zetl_transform_plan_free(p2);
    zetl_arena_release(&ar);
}

static void test_toast_and_null(void)
{
    /* Every step on every column, including a null string that equals the empty value. */
    struct zetl_clean_rule rules[] = {
        {.columns = LIST("*"),
         .trim = true,
         .null_strings = LIST("", "NULL"),
         .lower = true,
         .mask = ZETL_MASK_SHA256},
        {.columns = LIST("*"), .lower = true},
    };
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[5];
    struct zetl_tuple_col tc[5] = {
        text_col("1"),
        {ZETL_COL_UNCHANGED_TOAST, {NULL, 0}},
        {ZETL_COL_NULL, {NULL, 0}},
        {ZETL_COL_UNCHANGED_TOAST, {"junk", 0}},
        text_col(" NULL "),
    };
    struct zetl_tuple tup = {5, tc};
    struct zetl_value out[5];
    struct zetl_arena ar;
    struct zetl_errbuf eb;

    config_init(&cfg, rules, NRULES(rules));
    users_init(&rel, cols);
    struct zetl_table_plan *plan = zetl_transform_plan_new(&cfg, &rel, (const uint8_t *)"salt", 4);
    zetl_arena_init(&ar, 0);
    CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK);
    CHECK(out[0].kind == 't' && out[0].val.len == 64);
    CHECK(out[1].kind == ZETL_COL_UNCHANGED_TOAST && out[1].val.len == 0);
    CHECK(out[2].kind == ZETL_COL_NULL && out[2].val.len == 0);
    CHECK(out[3].kind == ZETL_COL_UNCHANGED_TOAST && out[3].val.len == 0);
    CHECK(out[4].kind == ZETL_COL_NULL);

    /* An empty text value may come without a pointer. */
    struct zetl_tuple_col empty = {ZETL_COL_TEXT, {NULL, 0}};
    tc[0] = empty;
    tc[4] = empty;
    CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK);
    CHECK(out[0].kind == ZETL_COL_NULL && out[4].kind == ZETL_COL_NULL);
    tc[0] = text_col("1");
    tc[4] = text_col(" NULL ");

    /* Same without rules (the copy-only path). */
    config_init(&cfg, NULL, 0);
    zetl_transform_plan_free(plan);
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK);
    CHECK(out[1].kind == ZETL_COL_UNCHANGED_TOAST && out[2].kind == ZETL_COL_NULL);
    CHECK(value_is(&out[4], " NULL "));
    zetl_transform_plan_free(plan);
    zetl_arena_release(&ar);
}

static void test_errors(void)
{
    struct zetl_clean_rule rules[] = {{.columns = LIST("name"), .trim = true},
                                      {.columns = LIST("bio"), .drop = true}};
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[5];
    struct zetl_tuple_col tc[6] = {text_col("1"), text_col("a"), text_col("b"),
                                   text_col("c"), text_col("d"), text_col("e")};
    struct zetl_tuple tup = {4, tc};
    struct zetl_value out[6];
    struct zetl_arena ar;
    struct zetl_errbuf eb;

    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: with cleaning rules; pass 1: copy-only */
        config_init(&cfg, rules, pass == 0 ? NRULES(rules) : 0);
        users_init(&rel, cols);
        struct zetl_table_plan *plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
        zetl_arena_init(&ar, 0);

        tup.ncols = 4;
        eb.msg[0] = '\0';
        CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_ERR_PROTOCOL);
        CHECK_STR(eb.msg, "table tenant_a.users: tuple has 4 columns, relation has 5");
        tup.ncols = 6;
        CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_ERR_PROTOCOL);
        CHECK_STR(eb.msg, "table tenant_a.users: tuple has 6 columns, relation has 5");
        tup.ncols = 0;
        CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_ERR_PROTOCOL);
        CHECK_STR(eb.msg, "table tenant_a.users: tuple has 0 columns, relation has 5");

        /* Binary values were not requested: an error naming the column, even when dropped. */
        tup.ncols = 5;
        tc[2].kind = ZETL_COL_BINARY;
        CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_ERR_PROTOCOL);
        CHECK(strstr(eb.msg, "table tenant_a.users: column name:") == eb.msg);
        CHECK(strstr(eb.msg, "binary") != NULL);
        tc[2].kind = ZETL_COL_TEXT;
        tc[4].kind = ZETL_COL_BINARY;
        CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_ERR_PROTOCOL);
        CHECK(strstr(eb.msg, "table tenant_a.users: column bio:") == eb.msg);
        tc[4].kind = 'x';
        CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_ERR_PROTOCOL);
        CHECK_STR(eb.msg, "table tenant_a.users: column bio: unknown column kind 0x78");
        tc[4].kind = ZETL_COL_TEXT;
        CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK);

        zetl_arena_release(&ar);
        zetl_transform_plan_free(plan);
    }
}

static void test_zero_copy(void)
{
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[5];
    /* One receive buffer, sliced like the decoder does (no NUL terminators). */
    static const char buf[] = "42alice@x.org  Bob \tNULLhello";
    struct zetl_tuple_col tc[5] = {
        {ZETL_COL_TEXT, {buf, 2}},      {ZETL_COL_TEXT, {buf + 2, 11}},
        {ZETL_COL_TEXT, {buf + 13, 7}}, {ZETL_COL_TEXT, {buf + 20, 4}},
        {ZETL_COL_TEXT, {buf + 24, 5}},
    };
    struct zetl_tuple tup = {5, tc};
    struct zetl_value out[5];
    struct zetl_arena ar;
    struct zetl_errbuf eb;

    users_init(&rel, cols);
    zetl_arena_init(&ar, 0);

    /* No rules: every output is the input slice, and the arena is never touched. */
    config_init(&cfg, NULL, 0);
    struct zetl_table_plan *plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK);
    for (int i = 0; i < 5; i++)
        CHECK(out[i].kind == 't' && out[i].val.ptr == tc[i].val.ptr &&
              out[i].val.len == tc[i].val.len);
    CHECK(ar.head == NULL);
    zetl_transform_plan_free(plan);

    /* Rules that do not change a value, and trimming, still copy nothing. */
    struct zetl_clean_rule rules[] = {
        {.columns = LIST("email", "bio"), .lower = true},
        {.columns = LIST("name"), .trim = true, .null_strings = LIST("NULL")},
        {.columns = LIST("ssn"), .null_strings = LIST("null")},
    };
    config_init(&cfg, rules, NRULES(rules));
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK);
    CHECK(out[0].val.ptr == buf && out[0].val.len == 2);
    CHECK(out[1].val.ptr == buf + 2 && out[1].val.len == 11);
    CHECK(out[2].val.ptr == buf + 15 && out[2].val.len == 3); /* "Bob" inside the buffer */
    CHECK(value_is(&out[2], "Bob"));
    CHECK(out[3].val.ptr == buf + 20 && value_is(&out[3], "NULL"));
    CHECK(out[4].val.ptr == buf + 24 && value_is(&out[4], "hello"));
    CHECK(ar.head == NULL);

    /* A changed value goes to the arena; the input is left as it was. */
    tc[1].val.ptr = "ALICE@X.ORG";
    CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK);
    CHECK(out[1].val.ptr != tc[1].val.ptr && value_is(&out[1], "alice@x.org"));
    CHECK(ar.head != NULL);
    CHECK(memcmp(tc[1].val.ptr, "ALICE@X.ORG", 11) == 0);
    zetl_transform_plan_free(plan);

    /* Trim then lower copies once, only the trimmed bytes. */
    struct zetl_clean_rule tl[] = {{.columns = LIST("name"), .trim = true},
                                   {.columns = LIST("name"), .lower = true},
                                   {.columns = LIST("name"), .trim = true, .lower = true}};
    config_init(&cfg, tl, NRULES(tl));
    plan = zetl_transform_plan_new(&cfg, &rel, NULL, 0);
    CHECK(zetl_transform_tuple(plan, &tup, out, &ar, &eb) == ZETL_OK);
    CHECK(value_is(&out[2], "bob"));
    CHECK(out[2].val.ptr != buf + 15); /* lowered: a copy */
    zetl_transform_plan_free(plan);
    zetl_arena_release(&ar);
}

/* Many rows through one arena: values stay valid until the caller resets it. */
static void test_many_rows(void)
{
    struct zetl_clean_rule rules[] = {{.columns = LIST("*"), .trim = true, .lower = true},
                                      {.columns = LIST("ssn"), .mask = ZETL_MASK_SHA256}};
    struct zetl_config cfg;
    struct zetl_relation rel;
    struct zetl_relcol cols[5];
    struct zetl_arena ar;
    struct zetl_errbuf eb;
    struct zetl_value out[5];
    char first_ssn[65] = "";
    bool ok = true;

    config_init(&cfg, rules, NRULES(rules));
    users_init(&rel, cols);
    struct zetl_table_plan *plan = zetl_transform_plan_new(&cfg, &rel, (const uint8_t *)"salt", 4);
    zetl_arena_init(&ar, 1024);
    for (int batch = 0; batch < 3; batch++) {
        for (int row = 0; row < 1000; row++) {
            struct zetl_tuple_col tc[5] = {text_col(" 7 "), text_col("A@B.C"), text_col("x"),
                                           text_col("value"), text_col("")};
            struct zetl_tuple tup = {5, tc};
            if (zetl_transform_tuple(plan, &tup, out, &ar, &eb) != ZETL_OK)
                ok = false;
            if (!value_is(&out[0], "7") || !value_is(&out[1], "a@b.c") ||
                !value_is(&out[3], SHA_SALTVALUE))
                ok = false;
            if (row == 0 && batch == 0) {
                memcpy(first_ssn, out[3].val.ptr, 64);
                first_ssn[64] = '\0';
            }
        }
        zetl_arena_reset(&ar);
    }
    CHECK(ok);
    CHECK_STR(first_ssn, SHA_SALTVALUE);
    zetl_arena_release(&ar);
    zetl_transform_plan_free(plan);
}

static void test_selection(void)
{
    struct zetl_config cfg;

    config_init(&cfg, NULL, 0);
    /* No source.tables list: every table. */
    CHECK(zetl_transform_table_selected(&cfg, "users"));
    CHECK(zetl_transform_table_selected(&cfg, "anything at all"));
    /* No tenant globs: no tenants. */
    CHECK(!zetl_transform_schema_selected(&cfg, "tenant_a"));

    cfg.source.tables = LIST("users", "order*", "log_20??");
    CHECK(zetl_transform_table_selected(&cfg, "users"));
    CHECK(zetl_transform_table_selected(&cfg, "orders"));
    CHECK(zetl_transform_table_selected(&cfg, "order_items"));
    CHECK(zetl_transform_table_selected(&cfg, "log_2024"));
    CHECK(!zetl_transform_table_selected(&cfg, "log_202"));
    CHECK(!zetl_transform_table_selected(&cfg, "Users")); /* names are case-sensitive */
    CHECK(!zetl_transform_table_selected(&cfg, "users_archive"));
    CHECK(!zetl_transform_table_selected(&cfg, "tenant_a.users")); /* unqualified names only */

    cfg.source.tables = LIST("*");
    CHECK(zetl_transform_table_selected(&cfg, "x"));

    cfg.source.schemas = LIST("tenant_*", "acme", "[bc]corp");
    CHECK(zetl_transform_schema_selected(&cfg, "tenant_a"));
    CHECK(zetl_transform_schema_selected(&cfg, "tenant_"));
    CHECK(zetl_transform_schema_selected(&cfg, "acme"));
    CHECK(zetl_transform_schema_selected(&cfg, "bcorp"));
    CHECK(!zetl_transform_schema_selected(&cfg, "dcorp"));
    CHECK(!zetl_transform_schema_selected(&cfg, "acme2"));
    CHECK(!zetl_transform_schema_selected(&cfg, "public"));
    CHECK(!zetl_transform_schema_selected(&cfg, "tenant"));

    /* System schemas are never tenants, even under "*". */
    cfg.source.schemas = LIST("*");
    CHECK(zetl_transform_schema_selected(&cfg, "public"));
    CHECK(zetl_transform_schema_selected(&cfg, "a\"; drop table x; --"));
    CHECK(!zetl_transform_schema_selected(&cfg, "pg_catalog"));
    CHECK(!zetl_transform_schema_selected(&cfg, "pg_toast"));
    CHECK(!zetl_transform_schema_selected(&cfg, "pg_temp_3"));
    CHECK(!zetl_transform_schema_selected(&cfg, "information_schema"));
}

int main(void)
{
    test_plan_drop();
    test_plan_overlap();
    test_plan_globs();
    test_steps();
    test_mask();
    test_toast_and_null();
    test_errors();
    test_zero_copy();
    test_many_rows();
    test_selection();
    return zetl_tap_done();
}
