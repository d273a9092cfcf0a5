/* buf.h - a growable byte buffer, always NUL-terminated.
 *
 * Used for HTTP bodies, rendered YAML and error messages. Every append checks
 * its allocation and reports failure, so callers can propagate ENOMEM instead
 * of crashing on it. */
#ifndef CB_BUF_H
#define CB_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct buf {
    /* public: read data[0..len); change it through the functions below (or
     * shorten it: lower len and put a NUL at data[len]) */
    char *data; /* NUL-terminated when non-NULL */
    size_t len;
    /* private */
    size_t cap;
} buf_t;

#define BUF_INIT                                                                                   \
    { NULL, 0, 0 }

int buf_reserve(buf_t *b, size_t extra);
int buf_append(buf_t *b, const void *data, size_t len);
int buf_puts(buf_t *b, const char *s);
int buf_putc(buf_t *b, char c);
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf_t *b, const char *fmt, va_list ap);
/* Append s percent-encoded for a URL: ASCII letters, digits, '.', '_' and
 * '-' stay as they are, and '/' too when keep_slash (a path of segments);
 * every other byte becomes %XX. */
int buf_put_urlencoded(buf_t *b, const char *s, bool keep_slash);
/* Drop the first n bytes (used by stream parsers that consume lines). */
void buf_consume(buf_t *b, size_t n);
void buf_reset(buf_t *b);
void buf_free(buf_t *b);
/* Hand the heap string to the caller; the buffer becomes empty. Never NULL
 * unless allocation fails. */
char *buf_steal(buf_t *b);

#endif
