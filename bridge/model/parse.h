/* parse.h - what the model's parsers share; internal to bridge/model.
 *
 * Each parser writes the reason of a failure into a reason_t (why()), without
 * the key: model_build() puts "<prefix><ns>/<name>/<leaf>: " in front. User
 * text echoed into a reason goes through shown(). The checks on names and
 * text that more than one parser applies are here too, as is each parser's
 * entry point (route.c: the route document, headers.c: the header rules). */
#ifndef CB_MODEL_PARSE_H
#define CB_MODEL_PARSE_H

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/suggest.h"
#include "bridge/model/model.h"

#define PRIORITY_LIMIT 9007199254740992LL /* 2^53: exact in a double */
#define SHOWN_MAX 64                      /* user text echoed in an error */

typedef char reason_t[512];

static inline void why(char *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline void why(char *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r, sizeof(reason_t), fmt, ap);
    va_end(ap);
}

/* Echo user text safely into a message: bounded, no control characters (an
 * error line must not be able to forge further log lines). */
static inline const char *shown(const char *s, char out[SHOWN_MAX + 4]) {
    size_t i = 0;
    for (; s[i] && i < SHOWN_MAX; i++)
        out[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    strcpy(out + i, s[i] ? "..." : "");
    return out;
}

static inline bool is_lower_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* RFC 7230 token (header names) and RFC 6265 cookie-name (also a token),
 * minus the backtick: a tchar, but it would end a Traefik rule literal. */
static inline bool http_token(const char *s) {
    if (!*s || strlen(s) > 256)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !strchr("!#$%&'*+-.^_|~", c))
            return false;
    }
    return true;
}

static inline char *dup_or_null(const char *s, bool *oom) {
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

/* Every key of obj must be in allowed (NULL-terminated). An unknown one
 * within two edits of an allowed field gets "(did you mean 'x'?)", the rule
 * the config file and the key leaves follow too. */
static inline int known_fields(const cJSON *obj, const char *const *allowed, const char *where,
                               char *r) {
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t i = 0, bestd = 3;
        const char *best = NULL;
        while (allowed[i] && strcmp(allowed[i], c->string))
            i++;
        if (allowed[i])
            continue;
        for (i = 0; allowed[i]; i++) {
            size_t d = suggest_distance(c->string, allowed[i]);
            if (d < bestd) {
                bestd = d;
                best = allowed[i];
            }
        }
        char s[SHOWN_MAX + 4];
        why(r, "%sunknown field '%s'%s%s%s", where, shown(c->string, s),
            best ? " (did you mean '" : "", best ? best : "", best ? "'?)" : "");
        return -1;
    }
    return 0;
}

/* The route document (route.c): fills rt's owned-mode fields, or -1 with the
 * reason in r. */
int model_route_parse(const char *text, size_t len, bool allow_xns, struct model_route *rt,
                      char *r);
/* The `headers` key (headers.c): fills rt->rules; the route's services must
 * be parsed already. */
int model_headers_parse(const char *text, size_t len, struct model_route *rt, char *r);
/* The service of rt named name, or NULL. */
struct model_service *model_service_find(const struct model_route *rt, const char *name);

#endif
