/*
 * Unit tests of zetl replay's arguments (replicator/replay.c): --from and
 * --to as an LSN or a time, --into schema names.
 */
#include "replicator/replay.h"
#include "tests/unit/tap.h"

static void test_parse_point(void)
{
    struct zetl_replay_point p;

    CHECK(zetl_replay_parse_point("16/B374D848", &p));
    CHECK(p.set && !p.is_time && p.lsn == UINT64_C(0x16B374D848));
    CHECK_STR(p.text, "16/B374D848");
    CHECK(zetl_replay_parse_point("0/0", &p) && p.set && p.lsn == 0);
    CHECK(zetl_replay_parse_point("2024-03-05T12:34:56Z", &p));
    CHECK(p.set && p.is_time && p.usec == INT64_C(1709642096) * 1000000);
    CHECK(zetl_replay_parse_point("2024-03-05 13:34:56+01", &p));
    CHECK(p.is_time && p.usec == INT64_C(1709642096) * 1000000);
    CHECK(zetl_replay_parse_point("2024-03-05", &p) && p.is_time);

    /* Neither: not set, the text kept for the message. */
    CHECK(!zetl_replay_parse_point("16/", &p) && !p.set);
    CHECK_STR(p.text, "16/");
    CHECK(!zetl_replay_parse_point("1/2/3", &p) && !p.set);
    CHECK(!zetl_replay_parse_point("G/0", &p));
    CHECK(!zetl_replay_parse_point("16B374D848", &p));
    CHECK(!zetl_replay_parse_point("now", &p));
    CHECK(!zetl_replay_parse_point("", &p));
    CHECK(!zetl_replay_parse_point("2024-13-01", &p));
    CHECK(!zetl_replay_parse_point("2024-03-05 12:34:56 CET", &p));
}

static void test_schema_ok(void)
{
    char long_name[80];

    CHECK(zetl_replay_schema_ok("rebuilt"));
    CHECK(zetl_replay_schema_ok("Mixed Case \"quoted\""));
    CHECK(!zetl_replay_schema_ok(""));
    memset(long_name, 'x', 63);
    long_name[63] = '\0';
    CHECK(zetl_replay_schema_ok(long_name));
    long_name[63] = 'x';
    long_name[64] = '\0';
    CHECK(!zetl_replay_schema_ok(long_name));
}

int main(void)
{
    test_parse_point();
    test_schema_ok();
    return zetl_tap_done();
}
