/* Logging (log.h); one write per line so threads do not interleave. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/utf8.h"

static int log_level = -1;
static int log_format = -1;

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

int zetl_log_parse_format(const char *s)
{
    if (strcasecmp(s, "text") == 0)
        return ZETL_LOG_TEXT;
    if (strcasecmp(s, "json") == 0)
        return ZETL_LOG_JSON;
    return -1;
}

void zetl_log_set_format(enum zetl_log_format f)
{
    log_format = (int)f;
}

static enum zetl_log_format current_format(void)
{
    if (log_format < 0) {
        const char *env = getenv("ZETL_LOG_FORMAT");
        int f = env ? zetl_log_parse_format(env) : -1;
        log_format = f >= 0 ? f : ZETL_LOG_TEXT;
    }
    return (enum zetl_log_format)log_format;
}

/* Appends s to out[*n..size) as JSON string content; bytes of broken UTF-8 become U+FFFD. */
static void json_text(char *out, size_t size, size_t *n, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        char e[8];
        size_t k = 0, len = 1;

        if (*p == '"' || *p == '\\') {
            e[k++] = '\\';
            e[k++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            memcpy(e, "\\u00", 4);
            k = 4;
            e[k++] = hex[*p >> 4];
            e[k++] = hex[*p & 15];
        } else if (*p < 0x80) {
            e[k++] = (char)*p;
        } else {
            len = *p >= 0xF0 ? 4 : *p >= 0xE0 ? 3 : 2;
            if (strnlen((const char *)p, len) == len && zetl_utf8_valid(p, len)) {
                memcpy(e, p, len);
                k = len;
            } else {
                memcpy(e, "\xef\xbf\xbd", 3);
                k = 3;
                len = 1;
            }
        }
        /* Room kept for the closing "}, the newline and the NUL: the line stays JSON. */
        if (*n + k + 4 >= size)
            break;
        memcpy(out + *n, e, k);
        *n += k;
        p += len;
    }
    out[*n] = '\0';
}

size_t zetl_log_format_line(char *out, size_t size, enum zetl_log_format f, enum zetl_log_level lvl,
                            const char *msg, long sec, long usec, int pid)
{
    static const char *json_levels[] = {"debug", "info", "log", "warning", "error", "fatal"};
    char ts[64];
    struct tm tm;
    time_t t = (time_t)sec;
    size_t n;
    int r;

    if (size == 0)
        return 0;
    gmtime_r(&t, &tm);
    if (f == ZETL_LOG_JSON) {
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        r = snprintf(out, size, "{\"ts\":\"%s.%03dZ\",\"level\":\"%s\",\"pid\":%d,\"msg\":\"", ts,
                     (int)(usec / 1000), json_levels[lvl], pid);
        n = r < 0 ? 0 : (size_t)r >= size ? size - 1 : (size_t)r;
        json_text(out, size, &n, msg);
        r = snprintf(out + n, size - n, "\"}\n");
    } else {
        strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
        n = 0;
        r = snprintf(out, size, "%s.%03d UTC [%d] %s:  %s\n", ts, (int)(usec / 1000), pid,
                     level_names[lvl], msg);
    }
    n += r < 0 ? 0 : (size_t)r;
    return n >= size ? size - 1 : n;
}

void zetl_log(enum zetl_log_level lvl, const char *fmt, ...)
{
    char msg[2048];
    char line[8192];
    struct timeval tv;
    va_list ap;
    size_t n;

    if (!zetl_log_enabled(lvl))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gettimeofday(&tv, NULL);
    n = zetl_log_format_line(line, sizeof(line), current_format(), lvl, msg, (long)tv.tv_sec,
                             (long)tv.tv_usec, (int)getpid());
    /* One write per line, so threads do not interleave. */
    fwrite(line, 1, n, stderr);
}
