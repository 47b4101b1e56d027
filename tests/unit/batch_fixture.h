/*
 * The hand-built relations, plans and values the batcher's and the batch
 * reader's unit tests share (test_sinks_batch.c, test_sinks_batch_read.c):
 * tenants a, b and c with a "users" table (tenant_c's with an extra enum
 * column: a second shape) and an "orders" table (tenant_b's with a column
 * the plan drops).  Included by one test file each.
 */
#ifndef ZETL_TEST_BATCH_FIXTURE_H
#define ZETL_TEST_BATCH_FIXTURE_H

#include "proto/relcache.h"
#include "sinks/batch.h"

#include <stdint.h>
#include <string.h>

#define OID_INT4 23
#define OID_TEXT 25
#define OID_INT4ARR 1007
#define OID_NUMERIC 1700
#define OID_VARCHAR 1043
#define OID_ENUM 16390

static struct zetl_relcol users_cols[] = {
    {"id", OID_INT4, -1, true, NULL},
    {"name", OID_TEXT, -1, false, NULL},
    {"bio", OID_TEXT, -1, false, NULL},
    {"tags", OID_INT4ARR, -1, false, NULL},
};
static struct zetl_relcol users_c_cols[] = {
    /* tenant_c's users has an extra enum column: a second shape of "users" */
    {"id", OID_INT4, -1, true, NULL},    {"name", OID_TEXT, -1, false, NULL},
    {"bio", OID_TEXT, -1, false, NULL},  {"tags", OID_INT4ARR, -1, false, NULL},
    {"mood", OID_ENUM, -1, false, NULL},
};
static struct zetl_relcol orders_cols[] = {
    {"id", OID_INT4, -1, true, NULL},
    {"amount", OID_NUMERIC, ((10 << 16) | 2) + 4, false, NULL},
    {"note", OID_VARCHAR, 20 + 4, false, NULL},
};
static struct zetl_relcol orders_b_cols[] = {
    /* tenant_b's orders has a column the plan drops: the same shape after it */
    {"id", OID_INT4, -1, true, NULL},
    {"secret", OID_TEXT, -1, false, NULL},
    {"amount", OID_NUMERIC, ((10 << 16) | 2) + 4, false, NULL},
    {"note", OID_VARCHAR, 20 + 4, false, NULL},
};

static struct zetl_relation rel_users_a = {16401, "tenant_a", "users", 'd', 4, users_cols, 1, NULL};
static struct zetl_relation rel_users_b = {16501, "tenant_b", "users", 'd', 4, users_cols, 1, NULL};
static struct zetl_relation rel_users_c = {16601, "tenant_c",   "users", 'd',
                                           5,     users_c_cols, 1,       NULL};
static struct zetl_relation rel_orders_a = {16402, "tenant_a",  "orders", 'd',
                                            3,     orders_cols, 1,        NULL};
static struct zetl_relation rel_orders_b = {16502, "tenant_b",    "orders", 'd',
                                            4,     orders_b_cols, 1,        NULL};

static uint16_t idx_all[] = {0, 1, 2, 3, 4};
static uint16_t idx_orders_b[] = {0, 2, 3};

static struct zetl_batch_target mkplan(const char *tenant, const char *table, uint16_t nout,
                                       uint16_t *out_index)
{
    struct zetl_batch_target p;

    memset(&p, 0, sizeof(p));
    p.tenant = tenant;
    p.table = table;
    p.nout = nout;
    p.out_index = out_index;
    return p;
}

static struct zetl_value T(const char *s) {
    struct zetl_value v = {ZETL_COL_TEXT, {s, (uint32_t)strlen(s)}};
    return v;
}

static const struct zetl_value N = {ZETL_COL_NULL, {NULL, 0}};
static const struct zetl_value U = {ZETL_COL_UNCHANGED_TOAST, {NULL, 0}};

#endif
