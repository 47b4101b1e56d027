/* PostgreSQL-style logging to stderr: "<time> [pid] LEVEL:  message". */
#ifndef ZETL_LOG_H
#define ZETL_LOG_H

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
void zetl_log(enum zetl_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define zetl_debug(...) zetl_log(ZETL_LOG_DEBUG, __VA_ARGS__)
#define zetl_info(...) zetl_log(ZETL_LOG_INFO, __VA_ARGS__)
#define zetl_logmsg(...) zetl_log(ZETL_LOG_LOG, __VA_ARGS__)
#define zetl_warn(...) zetl_log(ZETL_LOG_WARNING, __VA_ARGS__)
#define zetl_error(...) zetl_log(ZETL_LOG_ERROR, __VA_ARGS__)

#endif
