/*
 * Logging to stderr, one line per message: PostgreSQL's style,
 * "<time> UTC [pid] LEVEL:  message", or (log.format: json) one JSON object
 * per line: {"ts":"<RFC 3339 UTC>","level":"<level>","pid":N,"msg":"..."}.
 */
#ifndef ZETL_LOG_H
#define ZETL_LOG_H

#include <stddef.h>

enum zetl_log_level {
    ZETL_LOG_DEBUG = 0,
    ZETL_LOG_INFO,
    ZETL_LOG_LOG,
    ZETL_LOG_WARNING,
    ZETL_LOG_ERROR,
    ZETL_LOG_FATAL,
};

/* Messages below `lvl` are dropped. Default: ZETL_LOG_LOG, or ZETL_LOG_LEVEL from the env. */
void zetl_log_set_level(enum zetl_log_level lvl);
/* Parses "debug", "info", "log", "warning", "error"; returns -1 when unknown. */
int zetl_log_parse_level(const char *s);
int zetl_log_enabled(enum zetl_log_level lvl);

enum zetl_log_format { ZETL_LOG_TEXT = 0, ZETL_LOG_JSON };
/* Default: ZETL_LOG_TEXT, or ZETL_LOG_FORMAT (text | json) from the env. */
void zetl_log_set_format(enum zetl_log_format f);
/* Parses "text", "json"; -1 when unknown. */
int zetl_log_parse_format(const char *s);
/*
 * Writes the line of one message (level, text, time, pid) into out (size
 * bytes, cut to fit, always NUL-terminated, ending in a newline when it
 * fits) in format f; returns its length.  zetl_log writes what this makes.
 */
size_t zetl_log_format_line(char *out, size_t size, enum zetl_log_format f, enum zetl_log_level lvl,
                            const char *msg, long sec, long usec, int pid);
void zetl_log(enum zetl_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define zetl_debug(...) zetl_log(ZETL_LOG_DEBUG, __VA_ARGS__)
#define zetl_info(...) zetl_log(ZETL_LOG_INFO, __VA_ARGS__)
#define zetl_logmsg(...) zetl_log(ZETL_LOG_LOG, __VA_ARGS__)
#define zetl_warn(...) zetl_log(ZETL_LOG_WARNING, __VA_ARGS__)
#define zetl_error(...) zetl_log(ZETL_LOG_ERROR, __VA_ARGS__)

#endif
