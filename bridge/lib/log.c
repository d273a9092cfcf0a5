/* log.c - line logger with journald priority prefixes; see log.h. */
#include "bridge/lib/log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void logger_init(struct logger *lg, enum log_level level) {
    lg->level = level;
    lg->journal = getenv("JOURNAL_STREAM") != NULL;
    lg->out = stderr;
    lg->tag = NULL;
}

int log_level_parse(const char *s, enum log_level *out) {
    static const struct {
        const char *name;
        enum log_level level;
    } names[] = {{"error", LOG_LVL_ERROR},
                 {"warn", LOG_LVL_WARN},
                 {"warning", LOG_LVL_WARN},
                 {"info", LOG_LVL_INFO},
                 {"debug", LOG_LVL_DEBUG}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level l) {
    switch (l) {
    case LOG_LVL_ERROR: return "error";
    case LOG_LVL_WARN: return "warn";
    case LOG_LVL_INFO: return "info";
    case LOG_LVL_DEBUG: return "debug";
    }
    return "info";
}

void log_msg(const struct logger *lg, enum log_level l, const char *fmt, ...) {
    if (!lg || l > lg->level)
        return;
    FILE *out = lg->out ? lg->out : stderr;
    const char *tag = lg->tag ? lg->tag : "";
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* One event, one line: fold embedded newlines so a hostile value can not
     * forge extra log lines, and neutralise other control bytes (terminal
     * escapes; journald would store the line as a binary blob). */
    for (char *p = line; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n' || c == '\r' || c == '\t')
            *p = ' ';
        else if (c < 0x20 || c == 0x7f)
            *p = '?';
    }
    if (lg->journal) {
        fprintf(out, "<%d>%s%s\n", (int)l, tag, line);
    } else {
        struct timespec ts;
        struct tm tm;
        char stamp[32] = "";
        if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &tm))
            strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(out, "%s.%03ldZ %-5s %s%s\n", stamp, ts.tv_nsec / 1000000L, log_level_name(l), tag,
                line);
    }
    fflush(out);
}
