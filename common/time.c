/* Clocks, and timestamps as users and the archive write them. */
#include "common/time.h"

#include <stdio.h>
#include <time.h>

#define USEC_PER_SEC INT64_C(1000000)
#define SEC_PER_DAY INT64_C(86400)

int64_t zetl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Exactly n digits at *p (advanced past them). */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!is_digit((*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static int month_days(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : days[m - 1];
}

/* The zone suffix at p: offset east of UTC in seconds; false when it is not one. */
static bool parse_zone(const char *p, int64_t *offset)
{
    int hh, mm = 0, sign;

    *offset = 0;
    if (*p == ' ')
        p++;
    if (*p == 'Z' || *p == 'z')
        return p[1] == '\0';
    if (*p != '+' && *p != '-')
        return false;
    sign = *p++ == '-' ? -1 : 1;
    if (!digits(&p, 2, &hh) || hh > 15)
        return false;
    if (*p == ':')
        p++;
    if (*p != '\0' && (!digits(&p, 2, &mm) || mm > 59))
        return false;
    *offset = sign * (hh * 3600 + mm * 60);
    return *p == '\0';
}

bool zetl_time_parse(const char *s, int64_t *usec)
{
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0;
    int64_t frac = 0, offset = 0;

    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d) || mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo))
        return false;
    if ((*p == 'T' || *p == 't' || *p == ' ') && is_digit(p[1])) {
        p++;
        if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || h > 23 || mi > 59)
            return false;
        if (*p == ':') {
            p++;
            if (!digits(&p, 2, &sec) || sec > 59)
                return false;
            if (*p == '.') {
                int64_t scale = 100000;

                if (!is_digit(*++p))
                    return false;
                for (; is_digit(*p); p++, scale /= 10) {
                    if (scale == 0)
                        return false; /* below a microsecond */
                    frac += (*p - '0') * scale;
                }
            }
        }
    }
    if (*p != '\0' && !parse_zone(p, &offset))
        return false;
    *usec = (days_from_civil(y, mo, d) * SEC_PER_DAY + h * 3600 + mi * 60 + sec - offset) *
                USEC_PER_SEC +
            frac;
    return true;
}

void zetl_time_format(int64_t usec, char *out, size_t n)
{
    int64_t secs = usec >= 0 ? usec / USEC_PER_SEC : -((-usec + USEC_PER_SEC - 1) / USEC_PER_SEC);
    int64_t frac = usec - secs * USEC_PER_SEC;
    int64_t days = secs >= 0 ? secs / SEC_PER_DAY : -((-secs + SEC_PER_DAY - 1) / SEC_PER_DAY);
    int64_t rest = secs - days * SEC_PER_DAY, y;
    int m, d;

    civil_from_days(days, &y, &m, &d);
    snprintf(out, n, "%04lld-%02d-%02d %02d:%02d:%02d.%06lld+00", (long long)y, m, d,
             (int)(rest / 3600), (int)(rest / 60 % 60), (int)(rest % 60), (long long)frac);
}
