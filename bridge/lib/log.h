/* log.h - one line per event, to stderr.
 *
 * Two formats (log.format):
 *  - text: "2024-05-01T12:00:00.123Z info  message"; when standard error is
 *    the journal (JOURNAL_STREAM names its device and inode) the line starts
 *    with an sd-daemon priority prefix ("<3>") instead of the time, so
 *    journald files it at the right level;
 *  - json: one object per line, {"time","level","message"} plus "route",
 *    "key" and "revision" when the line is about one of them; also with the
 *    priority prefix under the journal.
 *
 * Under the journal, text lines go as native journal datagrams instead
 * (logger_journal_open), which carry the same fields as ROUTE=, KEY= and
 * REVISION=, so `journalctl ROUTE=default/shop` finds a route's lines. A
 * datagram is sent without blocking; when it cannot be sent at once (the
 * socket is missing or full) the line goes to stderr as before.
 *
 * Lines about one route begin "route <ns>/<name>: " (a convention every
 * component follows); that id becomes the route field without the caller
 * saying so. Other fields are passed with log_fmsg and LOG_FIELDS.
 *
 * The logger is a plain struct owned by the application context and passed to
 * every component that logs: no global state. */
#ifndef CB_LOG_H
#define CB_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum log_level { LOG_LVL_ERROR = 3, LOG_LVL_WARN = 4, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* The journal's socket, where logger_init looks for it. */
#define LOG_JOURNAL_SOCKET "/run/systemd/journal/socket"

/* What a line is about, besides its message (json fields, journal fields).
 * Each is optional: NULL, or revision 0. */
struct log_fields {
    const char *route; /* "ns/name" (derived from a "route ns/name: " message when NULL) */
    const char *key;   /* a source key */
    uint64_t revision; /* a source revision */
};

/* A struct log_fields on the spot: LOG_FIELDS(.key = k, .revision = rev). */
#define LOG_FIELDS(...) (&(const struct log_fields){__VA_ARGS__})

struct logger {
    /* public: set after logger_init */
    enum log_level level;
    enum log_format format; /* LOG_FORMAT_TEXT unless set */
    bool journal;           /* stderr is the journal: <N> prefixes instead of timestamps */
    FILE *out;              /* stderr unless a test redirects it */
    const char *tag;        /* put before every message (e.g. "dry-run: "), or NULL */
    /* private */
    int journal_fd;            /* native journal socket, or -1 */
    char journal_path[108];    /* its address (sun_path) */
    const char *journal_ident; /* SYSLOG_IDENTIFIER= */
};

/* Level info..., text, stderr; journal and the native socket when stderr is
 * the journal. */
void logger_init(struct logger *lg, enum log_level level);
/* Send text lines as native journal datagrams to the socket at path, as
 * ident (SYSLOG_IDENTIFIER=). 0, or -1 (the socket could not be made; lines
 * go to stderr). logger_init does this itself when stderr is the journal. */
int logger_journal_open(struct logger *lg, const char *path, const char *ident);
/* Close the journal socket, if any. The logger still writes to stderr. */
void logger_close(struct logger *lg);
/* Whether JOURNAL_STREAM ("<device>:<inode>") names the file open on fd. */
bool log_journal_stream_is(const char *journal_stream, int fd);

int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);

/* A line at level l. log_fmsg: with fields (NULL: none). */
void log_msg(const struct logger *lg, enum log_level l, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_fmsg(const struct logger *lg, enum log_level l, const struct log_fields *f,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The JSON string literal of s[0..len) (quotes included) into out, NUL
 * terminated: control characters escaped, bytes that are not UTF-8 replaced
 * by U+FFFD. Returns the length written; when out is too small, the escaped
 * text is cut at a character boundary (still a valid literal). outlen >= 3. */
size_t log_json_string(char *out, size_t outlen, const char *s, size_t len);

#define log_error(lg, ...) log_msg((lg), LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(lg, ...) log_msg((lg), LOG_LVL_WARN, __VA_ARGS__)
#define log_info(lg, ...) log_msg((lg), LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(lg, ...) log_msg((lg), LOG_LVL_DEBUG, __VA_ARGS__)

#endif
