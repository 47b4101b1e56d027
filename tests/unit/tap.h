/* Minimal test helpers: each unit test binary prints "N passed, N failed". */
#ifndef ZETL_TAP_H
#define ZETL_TAP_H

#include <stdio.h>
#include <string.h>

extern int zetl_tap_passed;
extern int zetl_tap_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            zetl_tap_passed++;                                                                     \
        } else {                                                                                   \
            zetl_tap_failed++;                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ != NULL && b_ != NULL && strcmp(a_, b_) == 0) {                                     \
            zetl_tap_passed++;                                                                     \
        } else {                                                                                   \
            zetl_tap_failed++;                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s == %s\n  got:      %s\n  expected: %s\n",     \
                    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");           \
        }                                                                                          \
    } while (0)

/* Prints the summary line and returns the exit code for main. */
int zetl_tap_done(void);

#endif
