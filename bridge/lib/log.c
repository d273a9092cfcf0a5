/* log.c - line logger: text or JSON lines on stderr, journald priority
 * prefixes, native journal datagrams; see log.h. */
#include "bridge/lib/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The longest message; longer ones are cut. */
enum { LINE_MAX_BYTES = 4096 };

void logger_init(struct logger *lg, enum log_level level) {
    lg->level = level;
    lg->format = LOG_FORMAT_TEXT;
    lg->out = stderr;
    lg->tag = NULL;
    lg->journal_fd = -1;
    lg->journal_path[0] = '\0';
    lg->journal_ident = NULL;
    /* The variable is inherited by children whose stderr may go elsewhere:
     * only a match with our own stderr means the journal reads it. */
    lg->journal = log_journal_stream_is(getenv("JOURNAL_STREAM"), STDERR_FILENO);
    if (lg->journal)
        (void)logger_journal_open(lg, LOG_JOURNAL_SOCKET, program_invocation_short_name);
}

int logger_journal_open(struct logger *lg, const char *path, const char *ident) {
    if (strlen(path) >= sizeof lg->journal_path)
        return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    logger_close(lg);
    lg->journal_fd = fd;
    strcpy(lg->journal_path, path);
    lg->journal_ident = ident;
    return 0;
}

void logger_close(struct logger *lg) {
    if (lg->journal_fd >= 0)
        close(lg->journal_fd);
    lg->journal_fd = -1;
}

bool log_journal_stream_is(const char *journal_stream, int fd) {
    if (!journal_stream || !*journal_stream)
        return false;
    char *end;
    errno = 0;
    unsigned long long dev = strtoull(journal_stream, &end, 10);
    if (errno || end == journal_stream || *end != ':')
        return false;
    const char *p = end + 1;
    unsigned long long ino = strtoull(p, &end, 10);
    if (errno || end == p || *end)
        return false;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
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

/* ---- JSON strings ---- */

/* Length of the well-formed UTF-8 sequence at s (n bytes left), or 0: no
 * overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

size_t log_json_string(char *out, size_t outlen, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len;) {
        char esc[8];
        const char *piece = esc;
        size_t plen, used = 1;
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            plen = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            plen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            plen = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
        } else if ((used = utf8_len(u + i, len - i)) == 0) {
            piece = "\\ufffd"; /* not UTF-8: one replacement per byte */
            plen = 6;
            used = 1;
        } else {
            piece = s + i;
            plen = used;
        }
        if (o + plen + 2 > outlen)
            break; /* room for the closing quote and the NUL */
        memcpy(out + o, piece, plen);
        o += plen;
        i += used;
    }
    out[o++] = '"';
    out[o] = '\0';
    return o;
}

/* ---- fields ---- */

static bool route_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

/* "route <ns>/<name>: ..." -> "<ns>/<name>" into out; false when the line is
 * not about a route. Namespaces and names are DNS names, so the id ends at
 * the first character that cannot be in one. */
static bool route_of_line(const char *line, char *out, size_t outlen) {
    if (strncmp(line, "route ", 6) != 0)
        return false;
    const char *id = line + 6, *p = id;
    int slashes = 0;
    while (route_char(*p) || *p == '/')
        slashes += *p++ == '/';
    size_t n = (size_t)(p - id);
    if (slashes != 1 || id[0] == '/' || p[-1] == '/' || p[0] != ':' || n >= outlen)
        return false;
    memcpy(out, id, n);
    out[n] = '\0';
    return true;
}

/* ---- writers ---- */

struct out_buf {
    char *p;
    size_t len, cap;
    bool full;
};

static void put(struct out_buf *b, const void *data, size_t n) {
    if (b->full || b->len + n > b->cap) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_str(struct out_buf *b, const char *s) {
    put(b, s, strlen(s));
}

static void put_json_field(struct out_buf *b, const char *name, const char *v, size_t vlen) {
    char lit[LINE_MAX_BYTES * 6 + 8];
    put_str(b, ",\"");
    put_str(b, name);
    put_str(b, "\":");
    put(b, lit, log_json_string(lit, sizeof lit, v, vlen));
}

/* One JSON object and a newline into b. */
static void format_json(struct out_buf *b, enum log_level l, const char *stamp, const char *tag,
                        const char *msg, const char *route, const struct log_fields *f) {
    put_str(b, "{\"time\":\"");
    put_str(b, stamp);
    put_str(b, "\",\"level\":\"");
    put_str(b, log_level_name(l));
    put_str(b, "\"");
    char both[LINE_MAX_BYTES + 64];
    int n = snprintf(both, sizeof both, "%s%s", tag, msg);
    put_json_field(b, "message", both, n < 0 ? 0 : strlen(both));
    if (route)
        put_json_field(b, "route", route, strlen(route));
    if (f && f->key)
        put_json_field(b, "key", f->key, strlen(f->key));
    if (f && f->revision) {
        char num[48];
        snprintf(num, sizeof num, ",\"revision\":%llu", (unsigned long long)f->revision);
        put_str(b, num);
    }
    put_str(b, "}\n");
}

/* A journal field: NAME=value\n, or the binary form (NAME\n, the length as
 * 64-bit little endian, the bytes, \n) for a value with a newline. */
static void put_journal_field(struct out_buf *b, const char *name, const char *v) {
    size_t n = strlen(v);
    put_str(b, name);
    if (!memchr(v, '\n', n)) {
        put_str(b, "=");
        put(b, v, n);
    } else {
        unsigned char le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (unsigned char)((uint64_t)n >> (8 * i));
        put_str(b, "\n");
        put(b, le, sizeof le);
        put(b, v, n);
    }
    put_str(b, "\n");
}

/* The line as one native journal datagram, without blocking. false when it
 * was not sent (the caller writes it to stderr instead). */
static bool send_journal(const struct logger *lg, enum log_level l, const char *tag,
                         const char *msg, const char *route, const struct log_fields *f) {
    char data[LINE_MAX_BYTES * 2 + 1024];
    struct out_buf b = {data, 0, sizeof data, false};
    char num[32];
    snprintf(num, sizeof num, "%d", (int)l);
    put_journal_field(&b, "PRIORITY", num);
    if (lg->journal_ident)
        put_journal_field(&b, "SYSLOG_IDENTIFIER", lg->journal_ident);
    put_str(&b, "MESSAGE=");
    put_str(&b, tag);
    put_str(&b, msg); /* already one line */
    put_str(&b, "\n");
    if (route)
        put_journal_field(&b, "ROUTE", route);
    if (f && f->key)
        put_journal_field(&b, "KEY", f->key);
    if (f && f->revision) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)f->revision);
        put_journal_field(&b, "REVISION", num);
    }
    if (b.full)
        return false;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, lg->journal_path, sizeof lg->journal_path);
    ssize_t sent = sendto(lg->journal_fd, data, b.len, MSG_NOSIGNAL, (struct sockaddr *)&sa,
                          (socklen_t)sizeof sa);
    return sent == (ssize_t)b.len;
}

/* One event, one line: fold embedded newlines so a hostile value can not
 * forge extra log lines, and neutralise other control bytes (terminal
 * escapes; journald would store the line as a binary blob). */
static void make_one_line(char *line) {
    for (char *p = line; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n' || c == '\r' || c == '\t')
            *p = ' ';
        else if (c < 0x20 || c == 0x7f)
            *p = '?';
    }
}

static void log_vemit(const struct logger *lg, enum log_level l, const struct log_fields *f,
                      const char *fmt, va_list ap) {
    if (!lg || l > lg->level)
        return;
    FILE *out = lg->out ? lg->out : stderr;
    const char *tag = lg->tag ? lg->tag : "";
    char line[LINE_MAX_BYTES];
    if (vsnprintf(line, sizeof line, fmt, ap) < 0)
        return;
    char routebuf[512];
    const char *route = f && f->route                                    ? f->route
                        : route_of_line(line, routebuf, sizeof routebuf) ? routebuf
                                                                         : NULL;
    struct timespec ts = {0, 0};
    struct tm tm;
    char stamp[48] = "";
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &tm)) {
        size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000L);
    }
    if (lg->format == LOG_FORMAT_JSON) {
        /* The message as it was: escaping keeps it on one line. */
        static const size_t cap = LINE_MAX_BYTES * 6 * 2 + 2048;
        char *data = malloc(cap);
        if (data) {
            struct out_buf b = {data, 0, cap, false};
            if (lg->journal) {
                char prio[8];
                snprintf(prio, sizeof prio, "<%d>", (int)l);
                put_str(&b, prio);
            }
            format_json(&b, l, stamp, tag, line, route, f);
            if (!b.full) {
                fwrite(data, 1, b.len, out);
                fflush(out);
                free(data);
                return;
            }
            free(data);
        }
        /* No memory for the line (or a key too long to fit): text it is. */
    }
    make_one_line(line);
    if (lg->journal_fd >= 0 && lg->format == LOG_FORMAT_TEXT &&
        send_journal(lg, l, tag, line, route, f))
        return;
    if (lg->journal)
        fprintf(out, "<%d>%s%s\n", (int)l, tag, line);
    else
        fprintf(out, "%s %-5s %s%s\n", stamp, log_level_name(l), tag, line);
    fflush(out);
}

void log_msg(const struct logger *lg, enum log_level l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_vemit(lg, l, NULL, fmt, ap);
    va_end(ap);
}

void log_fmsg(const struct logger *lg, enum log_level l, const struct log_fields *f,
              const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_vemit(lg, l, f, fmt, ap);
    va_end(ap);
}
