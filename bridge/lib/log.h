/* log.h - one line per event, to stderr.
 *
 * Under systemd (JOURNAL_STREAM set) lines carry sd-daemon priority prefixes
 * ("<3>") so journald files them at the right level; otherwise they carry an
 * ISO-8601 timestamp. The logger is a plain struct owned by the application
 * context and passed to every component that logs: no global state. */
#ifndef CB_LOG_H
#define CB_LOG_H

#include <stdbool.h>
#include <stdio.h>

enum log_level { LOG_LVL_ERROR = 3, LOG_LVL_WARN = 4, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

struct logger {
    /* public: set after logger_init */
    enum log_level level;
    bool journal;    /* emit <N> prefixes instead of timestamps */
    FILE *out;       /* stderr unless a test redirects it */
    const char *tag; /* put before every message (e.g. "dry-run: "), or NULL */
};

void logger_init(struct logger *lg, enum log_level level);
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);
void log_msg(const struct logger *lg, enum log_level l, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(lg, ...) log_msg((lg), LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(lg, ...) log_msg((lg), LOG_LVL_WARN, __VA_ARGS__)
#define log_info(lg, ...) log_msg((lg), LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(lg, ...) log_msg((lg), LOG_LVL_DEBUG, __VA_ARGS__)

#endif
