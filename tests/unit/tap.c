/* Counters and summary line for the unit tests. */
#include "tests/unit/tap.h"

int zetl_tap_passed;
int zetl_tap_failed;

int zetl_tap_done(void)
{
    printf("%d passed, %d failed\n", zetl_tap_passed, zetl_tap_failed);
    return zetl_tap_failed ? 1 : 0;
}
