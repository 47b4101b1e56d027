/* PostgreSQL-style logging; one fprintf per line so threads do not interleave. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_level = -1;

static const char *level_names[] = {"DEBUG", "INFO", "LOG", "WARNING", "ERROR", "FATAL"};

int zetl_log_parse_level(const char *s)
{
    static const char *names[] = {"debug", "info", "log", "warning", "error", "fatal"};

    for (int i = 0; i < 6; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

void zetl_log_set_level(enum zetl_log_level lvl)
{
    log_level = (int)lvl;
}

int zetl_log_enabled(enum zetl_log_level lvl)
{
    if (log_level < 0) {
        const char *env = getenv("ZETL_LOG_LEVEL");
        int l = env ? zetl_log_parse_level(env) : -1;
        log_level = l >= 0 ? l : ZETL_LOG_LOG;
    }
    return (int)lvl >= log_level;
}

void zetl_log(enum zetl_log_level lvl, const char *fmt, ...)
{
    char msg[2048];
    char ts[64];
    struct timeval tv;
    struct tm tm;
    va_list ap;

    if (!zetl_log_enabled(lvl))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s.%03d UTC [%d] %s:  %s\n", ts, (int)(tv.tv_usec / 1000), (int)getpid(),
            level_names[lvl], msg);
}
