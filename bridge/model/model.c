/* model.c - validate a route folder's keys and build struct model_route; see
 * model.h and SPEC section 1.
 *
 * Everything a user writes into etcd or Consul passes through here before it
 * can reach a Traefik rule, so validation is strict: unknown fields are
 * errors (a typo must not be silently ignored), names must be valid
 * Kubernetes names, and anything that could change the meaning of a Traefik
 * rule (backticks, control characters) is refused. Each error names the key
 * it came from, so one log line tells the user what to fix.
 *
 * Decisions worth knowing:
 * - A quoted number ("10") where an integer is expected is a type error: YAML
 *   and JSON both say it is a string, and guessing would hide mistakes.
 * - A service's `port` is required: Traefik needs it for kind Service.
 * - A service with no weight anywhere gets 1, Traefik's own default, and is
 *   rendered explicitly.
 * - Priorities are limited to +/-2^53 so they survive JSON's double numbers
 *   exactly, with room for one priority step per header rule above them.
 * - Header regexes are checked with POSIX regcomp (REG_EXTENDED) after
 *   rewriting the common RE2-only spellings; see regex_check().
 * - A service's `namespace` is refused unless the caller allows cross-
 *   namespace services: whoever can write a route key could otherwise send
 *   traffic to (and read responses from) Services in any namespace. Even a
 *   `namespace` equal to the route's own is refused then, so the rule is
 *   simply "no namespace field". Service names stay unique within a route
 *   even across namespaces, because `weights` and header rules name services
 *   by name alone.
 * - `sticky.sameSite` takes only the lowercase none|lax|strict: Traefik v2
 *   ignores any other spelling without a word, and the v3 CRD's capitalised
 *   variants mean the same thing. A negative `maxAge` (Traefik: expire at
 *   once) would silently turn stickiness off, so it is refused. */
#include "bridge/model/model.h"

#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/value.h"

#define PRIORITY_LIMIT 9007199254740992LL /* 2^53: exact in a double */
#define SHOWN_MAX 64                      /* user text echoed in an error */

typedef char reason_t[512];

static void why(char *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void why(char *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r, sizeof(reason_t), fmt, ap);
    va_end(ap);
}

/* Echo user text safely into a message: bounded, no control characters (an
 * error line must not be able to forge further log lines). */
static const char *shown(const char *s, char out[SHOWN_MAX + 4]) {
    size_t i = 0;
    for (; s[i] && i < SHOWN_MAX; i++)
        out[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    strcpy(out + i, s[i] ? "..." : "");
    return out;
}

/* ---- names -------------------------------------------------------------- */

static bool is_lower_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* [a-z0-9]([-a-z0-9]*[a-z0-9])? over s[0..n) */
static bool label_ok(const char *s, size_t n) {
    if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '-')
            return false;
    return true;
}

bool model_dns1123_label(const char *s) {
    size_t n = strlen(s);
    return n <= MODEL_NS_MAX && label_ok(s, n);
}

/* Same as Kubernetes' IsDNS1123Subdomain: total length and the per-label
 * pattern; Kubernetes does not limit each label to 63 there, nor do we. */
bool model_dns1123_subdomain(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > MODEL_NAME_MAX)
        return false;
    for (const char *p = s;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (!label_ok(p, len))
            return false;
        if (!dot)
            return true;
        p = dot + 1;
    }
}

/* Kubernetes IANA_SVC_NAME: a named container/service port. */
static bool iana_svc_name(const char *s) {
    size_t n = strlen(s);
    bool letter = false;
    if (n == 0 || n > 15 || s[0] == '-' || s[n - 1] == '-' || strstr(s, "--"))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_lower_alnum(s[i]) && s[i] != '-')
            return false;
        letter |= s[i] >= 'a' && s[i] <= 'z';
    }
    return letter;
}

/* RFC 7230 token (header names) and RFC 6265 cookie-name (also a token),
 * minus the backtick: a tchar, but it would end a Traefik rule literal. */
static bool http_token(const char *s) {
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

/* RFC 6265 cookie-octet, minus the backtick. */
static bool cookie_value_ok(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' || c == '`')
            return false;
    }
    return true;
}

/* Characters that would break out of a Traefik rule literal or a header. */
static bool rule_text_ok(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '`')
            return false;
    }
    return true;
}

static bool no_control(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

int model_parse_key(const char *prefix, const char *key, char ns[MODEL_NS_MAX + 1],
                    char name[MODEL_NAME_MAX + 1], enum model_leaf *leaf, char *err,
                    size_t errlen) {
    static const char *const leaves[] = {"route", "weights", "headers", "status"};
    size_t plen = strlen(prefix);
    if (strncmp(key, prefix, plen) != 0) {
        snprintf(err, errlen, "not under the prefix '%s'", prefix);
        return -1;
    }
    const char *rest = key + plen;
    const char *s1 = strchr(rest, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s2 || strchr(s2 + 1, '/')) {
        snprintf(err, errlen, "expected <namespace>/<name>/<route|weights|headers|status>");
        return -1;
    }
    size_t nslen = (size_t)(s1 - rest), namelen = (size_t)(s2 - s1 - 1);
    if (nslen > MODEL_NS_MAX || !label_ok(rest, nslen)) {
        snprintf(err, errlen, "namespace is not a valid DNS-1123 label");
        return -1;
    }
    memcpy(ns, rest, nslen);
    ns[nslen] = '\0';
    if (namelen > MODEL_NAME_MAX) {
        snprintf(err, errlen, "name is longer than %d characters", MODEL_NAME_MAX);
        return -1;
    }
    memcpy(name, s1 + 1, namelen);
    name[namelen] = '\0';
    if (!model_dns1123_subdomain(name)) {
        snprintf(err, errlen, "name is not a valid DNS-1123 subdomain");
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        if (!strcmp(s2 + 1, leaves[i])) {
            *leaf = (enum model_leaf)i;
            return 0;
        }
    }
    snprintf(err, errlen, "unknown leaf (expected route, weights, headers or status)");
    return -1;
}

/* ---- weights ------------------------------------------------------------ */

void model_weights_free(struct model_weight *w, size_t n) {
    for (size_t i = 0; w && i < n; i++)
        free(w[i].service);
    free(w);
}

struct weights {
    struct model_weight *v;
    size_t n, cap;
};

/* Append a validated, unique service name; the caller then sets its weight. */
static int weights_add(struct weights *ws, const char *name, size_t namelen, char *r) {
    char s[SHOWN_MAX + 4], tmp[MODEL_NAME_MAX + 1];
    snprintf(tmp, sizeof tmp, "%.*s", (int)(namelen < MODEL_NAME_MAX ? namelen : MODEL_NAME_MAX),
             name);
    if (namelen > MODEL_NS_MAX || !model_dns1123_label(tmp)) {
        why(r, "service name '%s' is not a valid DNS-1123 label", shown(tmp, s));
        return -1;
    }
    for (size_t i = 0; i < ws->n; i++) {
        if (!strcmp(ws->v[i].service, tmp)) {
            why(r, "duplicate service '%s'", tmp);
            return -1;
        }
    }
    if (ws->n == ws->cap) {
        size_t cap = ws->cap ? ws->cap * 2 : 4;
        struct model_weight *v = realloc(ws->v, cap * sizeof *v);
        if (!v)
            goto oom;
        ws->v = v;
        ws->cap = cap;
    }
    ws->v[ws->n].service = strdup(tmp);
    if (!ws->v[ws->n].service)
        goto oom;
    ws->v[ws->n++].weight = 0;
    return 0;
oom:
    why(r, "out of memory");
    return -1;
}

/* A weight in the compact form: decimal digits only. */
static int compact_weight(const char *svc, const char *v, size_t n, long *out, char *r) {
    char s[SHOWN_MAX + 4], text[32];
    snprintf(text, sizeof text, "%.*s", (int)(n < 31 ? n : 31), v);
    if (n == 0) {
        why(r, "weight for '%s' is missing", svc);
        return -1;
    }
    if (strspn(text, "0123456789") != n) {
        why(r, "weight for '%s' must be a non-negative integer, got %s", svc, shown(text, s));
        return -1;
    }
    *out = n > 9 ? MODEL_WEIGHT_MAX + 1L : strtol(text, NULL, 10);
    if (*out > MODEL_WEIGHT_MAX) {
        why(r, "weight for '%s' must be at most %d, got %s", svc, MODEL_WEIGHT_MAX, shown(text, s));
        return -1;
    }
    return 0;
}

static bool is_sep(char c) {
    return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* name=weight pairs separated by commas and/or whitespace; spaces or tabs
 * may surround the '='. */
static int weights_compact(const char *t, size_t len, struct weights *ws, char *r) {
    size_t i = 0;
    for (;;) {
        while (i < len && is_sep(t[i]))
            i++;
        if (i == len)
            return 0;
        size_t name = i;
        while (i < len && !is_sep(t[i]) && t[i] != '=')
            i++;
        size_t namelen = i - name;
        while (i < len && (t[i] == ' ' || t[i] == '\t'))
            i++;
        char svc[MODEL_NS_MAX + 4], s[SHOWN_MAX + 4];
        snprintf(svc, sizeof svc, "%.*s", (int)(namelen <= MODEL_NS_MAX ? namelen : MODEL_NS_MAX),
                 t + name);
        if (i == len || t[i] != '=') {
            why(r, "expected name=weight, got '%s'", shown(svc, s));
            return -1;
        }
        i++;
        while (i < len && (t[i] == ' ' || t[i] == '\t'))
            i++;
        size_t val = i;
        while (i < len && !is_sep(t[i]))
            i++;
        long w;
        if (weights_add(ws, t + name, namelen, r) < 0 ||
            compact_weight(svc, t + val, i - val, &w, r) < 0)
            return -1;
        ws->v[ws->n - 1].weight = w;
    }
}

/* Describe a JSON/YAML value that is not a valid weight. */
static void bad_weight(const char *svc, const cJSON *v, char *r) {
    char s[SHOWN_MAX + 4], num[40];
    long long n;
    if (cJSON_IsNull(v)) {
        why(r, "weight for '%s' is missing", svc);
    } else if (cJSON_IsString(v)) {
        why(r, "weight for '%s' must be a non-negative integer, got the string \"%s\"", svc,
            shown(v->valuestring, s));
    } else if (value_get_int(v, MODEL_WEIGHT_MAX + 1LL, LLONG_MAX, &n)) {
        why(r, "weight for '%s' must be at most %d, got %lld", svc, MODEL_WEIGHT_MAX, n);
    } else if (cJSON_IsNumber(v)) {
        if (v->valuestring)
            snprintf(num, sizeof num, "%s", v->valuestring);
        else
            snprintf(num, sizeof num, "%g", v->valuedouble);
        why(r, "weight for '%s' must be a non-negative integer, got %s", svc, shown(num, s));
    } else {
        why(r, "weight for '%s' must be a non-negative integer, got %s", svc,
            cJSON_IsBool(v)    ? (cJSON_IsTrue(v) ? "true" : "false")
            : cJSON_IsArray(v) ? "a list"
                               : "a mapping");
    }
}

static int weights_mapping(const char *t, size_t len, struct weights *ws, char *r) {
    char perr[256];
    cJSON *doc = value_parse(t, len, perr, sizeof perr);
    if (!doc) {
        why(r, "%s", perr);
        return -1;
    }
    int rc = 0;
    if (!cJSON_IsObject(doc)) {
        why(r, "weights must be a mapping of service name to weight, or name=weight pairs");
        rc = -1;
    }
    for (const cJSON *c = rc ? NULL : doc->child; c; c = c->next) {
        long long w;
        if (weights_add(ws, c->string, strlen(c->string), r) < 0) {
            rc = -1;
            break;
        }
        if (!value_get_int(c, 0, MODEL_WEIGHT_MAX, &w)) {
            bad_weight(ws->v[ws->n - 1].service, c, r);
            rc = -1;
            break;
        }
        ws->v[ws->n - 1].weight = (long)w;
    }
    cJSON_Delete(doc);
    return rc;
}

/* The compact form starts with name= ; a YAML or JSON mapping never does. */
static bool looks_compact(const char *t, size_t len) {
    size_t i = 0;
    while (i < len && is_sep(t[i]))
        i++;
    size_t start = i;
    while (i < len && (is_lower_alnum(t[i]) || t[i] == '-' || t[i] == '.' || t[i] == '_' ||
                       (t[i] >= 'A' && t[i] <= 'Z')))
        i++;
    if (i == start)
        return false;
    while (i < len && (t[i] == ' ' || t[i] == '\t'))
        i++;
    return i < len && t[i] == '=';
}

static int weights_check(const struct weights *ws, char *r) {
    if (ws->n == 0) {
        why(r, "no weights given");
        return -1;
    }
    for (size_t i = 0; i < ws->n; i++)
        if (ws->v[i].weight > 0)
            return 0;
    why(r, "all weights are zero (Traefik would answer 503 to every request)");
    return -1;
}

int model_parse_weights(const char *text, size_t len, struct model_weight **out, size_t *n,
                        char *err, size_t errlen) {
    struct weights ws = {0};
    reason_t r;
    *out = NULL;
    *n = 0;
    size_t bom = value_bom_len(text, len); /* in every form, the compact one too */
    if (bom) {
        text += bom;
        len -= bom;
    }
    int rc;
    if (len > VALUE_MAX_BYTES) {
        why(r, "value is %zu bytes, over the limit of %d", len, VALUE_MAX_BYTES);
        rc = -1;
    } else if (text && looks_compact(text, len)) {
        rc = memchr(text, '\0', len) ? (why(r, "NUL byte in value"), -1)
                                     : weights_compact(text, len, &ws, r);
    } else {
        rc = weights_mapping(text, len, &ws, r);
    }
    if (rc == 0)
        rc = weights_check(&ws, r);
    if (rc < 0) {
        snprintf(err, errlen, "%s", r);
        model_weights_free(ws.v, ws.n);
        return -1;
    }
    *out = ws.v;
    *n = ws.n;
    return 0;
}

/* ---- small helpers for documents ---------------------------------------- */

static char *dup_or_null(const char *s, bool *oom) {
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

/* Every key of obj must be in allowed (NULL-terminated). */
static int known_fields(const cJSON *obj, const char *const *allowed, const char *where, char *r) {
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], c->string))
            i++;
        if (!allowed[i]) {
            char s[SHOWN_MAX + 4];
            why(r, "%sunknown field '%s'", where, shown(c->string, s));
            return -1;
        }
    }
    return 0;
}

/* A list of strings, each accepted by ok(); *out gets heap copies. */
static int string_list(const cJSON *v, const char *field, bool (*ok)(const char *), char ***out,
                       size_t *n, char *r) {
    if (!cJSON_IsArray(v)) {
        why(r, "'%s' must be a list of strings", field);
        return -1;
    }
    size_t cnt = (size_t)cJSON_GetArraySize(v);
    *out = calloc(cnt ? cnt : 1, sizeof **out);
    if (!*out) {
        why(r, "out of memory");
        return -1;
    }
    for (const cJSON *c = v->child; c; c = c->next) {
        char s[SHOWN_MAX + 4];
        if (!cJSON_IsString(c)) {
            why(r, "'%s' item %zu must be a string", field, *n);
            return -1;
        }
        if (!ok(c->valuestring)) {
            why(r, "'%s' item %zu ('%s') is not valid", field, *n, shown(c->valuestring, s));
            return -1;
        }
        if (!((*out)[(*n)++] = strdup(c->valuestring))) {
            why(r, "out of memory");
            return -1;
        }
    }
    return 0;
}

static bool entry_point_ok(const char *s) {
    return *s && no_control(s) && !strchr(s, ' ');
}

/* ---- route document ----------------------------------------------------- */

static int service_port(const cJSON *p, const char *where, struct model_service *svc, char *r) {
    char s[SHOWN_MAX + 4];
    long long n;
    bool oom = false;
    if (!p) {
        why(r, "%s'port' is required (a number or a named port)", where);
        return -1;
    }
    if (cJSON_IsNumber(p)) {
        if (!value_get_int(p, 1, 65535, &n)) {
            why(r, "%s'port' must be 1..65535", where);
            return -1;
        }
        char num[8];
        snprintf(num, sizeof num, "%lld", n);
        svc->port = dup_or_null(num, &oom);
        svc->port_is_num = true;
        svc->port_num = (long)n;
    } else if (cJSON_IsString(p) && iana_svc_name(p->valuestring)) {
        svc->port = dup_or_null(p->valuestring, &oom);
    } else {
        why(r,
            "%s'port' must be a number 1..65535 or a port name (up to 15 of a-z 0-9 -, "
            "with a letter), got %s",
            where, cJSON_IsString(p) ? shown(p->valuestring, s) : "another type");
        return -1;
    }
    if (oom) {
        why(r, "out of memory");
        return -1;
    }
    return 0;
}

/* The optional `namespace` of a service entry (see the file comment). */
static int service_namespace(const cJSON *v, const char *where, bool allow_xns,
                             struct model_service *svc, char *r) {
    char s[SHOWN_MAX + 4];
    if (!v)
        return 0;
    if (!allow_xns) {
        why(r,
            "%s'namespace' is not allowed: services must live in the route's namespace; set "
            "reconcile.allow_cross_namespace: true to allow namespace on services",
            where);
        return -1;
    }
    if (!cJSON_IsString(v) || !model_dns1123_label(v->valuestring)) {
        why(r, "%s'namespace' must be a DNS-1123 label (a namespace name), got '%s'", where,
            cJSON_IsString(v) ? shown(v->valuestring, s) : "not a string");
        return -1;
    }
    if (!(svc->ns = strdup(v->valuestring))) {
        why(r, "out of memory");
        return -1;
    }
    return 0;
}

static int service_parse(const cJSON *v, size_t idx, bool allow_xns, struct model_route *rt,
                         char *r) {
    static const char *const fields[] = {"name", "port", "weight", "namespace", NULL};
    char where[48], s[SHOWN_MAX + 4];
    snprintf(where, sizeof where, "services[%zu]: ", idx);
    struct model_service *svc = &rt->services[idx];
    if (!cJSON_IsObject(v)) {
        why(r, "%smust be a mapping with name and port", where);
        return -1;
    }
    if (known_fields(v, fields, where, r) < 0)
        return -1;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(v, "name");
    if (!name) {
        why(r, "%s'name' is required", where);
        return -1;
    }
    if (!cJSON_IsString(name) || !model_dns1123_label(name->valuestring)) {
        why(r, "%s'name' must be a DNS-1123 label (a Service name), got '%s'", where,
            cJSON_IsString(name) ? shown(name->valuestring, s) : "not a string");
        return -1;
    }
    for (size_t i = 0; i < idx; i++) {
        if (!strcmp(rt->services[i].name, name->valuestring)) {
            why(r, "%sduplicate service '%s'", where, name->valuestring);
            return -1;
        }
    }
    if (!(svc->name = strdup(name->valuestring))) {
        why(r, "out of memory");
        return -1;
    }
    rt->n_services = idx + 1;
    if (service_namespace(cJSON_GetObjectItemCaseSensitive(v, "namespace"), where, allow_xns, svc,
                          r) < 0 ||
        service_port(cJSON_GetObjectItemCaseSensitive(v, "port"), where, svc, r) < 0)
        return -1;
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(v, "weight");
    long long n;
    if (w && !value_get_int(w, 0, MODEL_WEIGHT_MAX, &n)) {
        why(r, "%s'weight' must be a non-negative integer up to %d", where, MODEL_WEIGHT_MAX);
        return -1;
    }
    svc->has_weight = w != NULL;
    svc->weight = w ? (long)n : 1;
    return 0;
}

static int route_services(const cJSON *v, bool allow_xns, struct model_route *rt, char *r) {
    if (!cJSON_IsArray(v) || !v->child) {
        why(r, "'services' is required: a list of at least one {name, port}");
        return -1;
    }
    size_t cnt = (size_t)cJSON_GetArraySize(v);
    if (!(rt->services = calloc(cnt, sizeof *rt->services))) {
        why(r, "out of memory");
        return -1;
    }
    size_t i = 0;
    for (const cJSON *c = v->child; c; c = c->next, i++)
        if (service_parse(c, i, allow_xns, rt, r) < 0)
            return -1;
    return 0;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* n digits in base 8 or 16 at p; -1 when one is missing or not a digit. */
static long digits_value(const char *p, int n, int base) {
    long v = 0;
    for (int i = 0; i < n; i++) {
        int d = base == 16 ? hex_digit(p[i]) : (p[i] >= '0' && p[i] <= '7' ? p[i] - '0' : -1);
        if (d < 0)
            return -1;
        v = v * base + d;
    }
    return v;
}

/* The escape after a backslash in a Go interpreted string literal, as Go's
 * scanner takes it (Traefik parses rules with go/parser): bytes used, or 0
 * when Go refuses it. \u and \U must name a Unicode code point, octal a
 * byte. */
static size_t go_escape(const char *p) {
    if (*p && strchr("abfnrtv\\\"", *p))
        return 1;
    if (*p == 'x')
        return digits_value(p + 1, 2, 16) >= 0 ? 3 : 0;
    if (*p == 'u' || *p == 'U') {
        int n = *p == 'u' ? 4 : 8;
        long v = digits_value(p + 1, n, 16);
        return v >= 0 && v <= 0x10FFFF && !(v >= 0xD800 && v <= 0xDFFF) ? (size_t)n + 1 : 0;
    }
    long v = digits_value(p, 3, 8);
    return v >= 0 && v <= 255 ? 3 : 0;
}

/* Past the Go string literal at s (`raw` or "interpreted"), or NULL when it
 * does not close. */
static const char *go_literal_end(const char *s) {
    if (*s == '`') {
        const char *end = strchr(s + 1, '`');
        return end ? end + 1 : NULL;
    }
    for (s++; *s != '"'; s++) {
        if (!*s || *s == '\n')
            return NULL;
        if (*s == '\\') {
            size_t n = go_escape(s + 1);
            if (!n)
                return NULL;
            s += n;
        }
    }
    return s + 1;
}

/* Each header rule's route is rendered "(<match>) && Header(...)". That only
 * means "match AND header" when the match is one closed expression: with
 * "Host(`a`)) || (Host(`b`)" the header route would take Host b's traffic
 * at a priority above every weighted route. So the match's literals must
 * close and its parentheses outside them balance; and nothing may hide the
 * rest of the rule (a Go comment), nor use single quotes, which make a rune,
 * not a string, so no Traefik matcher takes them. NULL when it is fine. */
static const char *match_syntax_error(const char *s) {
    long depth = 0;
    while (*s) {
        if (*s == '`' || *s == '"') {
            if (!(s = go_literal_end(s)))
                return "has a string literal that does not close";
            continue;
        }
        if (*s == '\'')
            return "uses single quotes; Traefik rules take `backticks` or \"double quotes\"";
        if (*s == '/' && (s[1] == '/' || s[1] == '*'))
            return "has a comment (// or /*)";
        if (*s == '(')
            depth++;
        else if (*s == ')' && --depth < 0)
            return "has a ')' without its '('";
        s++;
    }
    return depth ? "has a '(' without its ')'" : NULL;
}

static int route_match(const cJSON *m, struct model_route *rt, char *r) {
    if (!cJSON_IsString(m) || !m->valuestring[0]) {
        why(r, "'match' is required: a non-empty Traefik rule string");
        return -1;
    }
    if (!no_control(m->valuestring)) {
        why(r, "'match' must not contain control characters");
        return -1;
    }
    const char *bad = match_syntax_error(m->valuestring);
    if (bad) {
        why(r, "'match' %s (it must be one complete rule expression)", bad);
        return -1;
    }
    if (!(rt->match = strdup(m->valuestring))) {
        why(r, "out of memory");
        return -1;
    }
    return 0;
}

static int route_priority(const cJSON *p, struct model_route *rt, char *r) {
    if (!p)
        return 0;
    if (!value_get_int(p, -PRIORITY_LIMIT, PRIORITY_LIMIT, &rt->priority)) {
        why(r, "'priority' must be an integer between %lld and %lld", -PRIORITY_LIMIT,
            PRIORITY_LIMIT);
        return -1;
    }
    rt->has_priority = true;
    return 0;
}

/* ---- sticky ------------------------------------------------------------- */

static int sticky_bool(const cJSON *v, const char *field, bool *has, bool *out, char *r) {
    if (!v)
        return 0;
    if (!cJSON_IsBool(v)) {
        why(r, "sticky: '%s' must be true or false (unquoted)", field);
        return -1;
    }
    *has = true;
    *out = cJSON_IsTrue(v);
    return 0;
}

static int sticky_same_site(const cJSON *v, struct model_sticky *st, char *r) {
    static const struct {
        const char *name;
        enum model_same_site value;
    } modes[] = {{"none", SAME_SITE_NONE}, {"lax", SAME_SITE_LAX}, {"strict", SAME_SITE_STRICT}};
    char s[SHOWN_MAX + 4];
    if (!v)
        return 0;
    for (size_t i = 0; cJSON_IsString(v) && i < sizeof modes / sizeof modes[0]; i++) {
        if (!strcmp(v->valuestring, modes[i].name)) {
            st->same_site = modes[i].value;
            return 0;
        }
    }
    why(r, "sticky: 'sameSite' must be one of none, lax, strict, got %s%s%s",
        cJSON_IsString(v) ? "'" : "", cJSON_IsString(v) ? shown(v->valuestring, s) : "another type",
        cJSON_IsString(v) ? "'" : "");
    return -1;
}

static int sticky_max_age(const cJSON *v, struct model_sticky *st, char *r) {
    long long n;
    if (!v)
        return 0;
    if (!value_get_int(v, 0, MODEL_MAX_AGE_MAX, &n)) {
        why(r, "sticky: 'maxAge' must be a whole number of seconds from 0 to %ld",
            MODEL_MAX_AGE_MAX);
        return -1;
    }
    st->has_max_age = true;
    st->max_age = (long)n;
    return 0;
}

static int route_sticky(const cJSON *v, struct model_route *rt, char *r) {
    static const char *const fields[] = {"cookie",   "secure", "httpOnly",
                                         "sameSite", "maxAge", NULL};
    struct model_sticky *st = &rt->sticky;
    char s[SHOWN_MAX + 4];
    if (!v)
        return 0;
    if (!cJSON_IsObject(v)) {
        why(r, "'sticky' must be a mapping such as {cookie: NAME}");
        return -1;
    }
    if (known_fields(v, fields, "sticky: ", r) < 0)
        return -1;
    const cJSON *cookie = cJSON_GetObjectItemCaseSensitive(v, "cookie");
    if (!cookie) {
        why(r, "sticky: 'cookie' is required (the name of the cookie that keeps a client on "
               "one service)");
        return -1;
    }
    if (!cJSON_IsString(cookie) || !http_token(cookie->valuestring)) {
        why(r, "sticky: 'cookie' must be a valid cookie name (RFC 6265 token), got '%s'",
            cJSON_IsString(cookie) ? shown(cookie->valuestring, s) : "not a string");
        return -1;
    }
    if (sticky_bool(cJSON_GetObjectItemCaseSensitive(v, "secure"), "secure", &st->has_secure,
                    &st->secure, r) < 0 ||
        sticky_bool(cJSON_GetObjectItemCaseSensitive(v, "httpOnly"), "httpOnly", &st->has_http_only,
                    &st->http_only, r) < 0 ||
        sticky_same_site(cJSON_GetObjectItemCaseSensitive(v, "sameSite"), st, r) < 0 ||
        sticky_max_age(cJSON_GetObjectItemCaseSensitive(v, "maxAge"), st, r) < 0)
        return -1;
    if (!(st->cookie = strdup(cookie->valuestring))) {
        why(r, "out of memory");
        return -1;
    }
    st->enabled = true;
    return 0;
}

static int route_optional(const cJSON *doc, struct model_route *rt, char *r) {
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(doc, "entryPoints");
    const cJSON *mw = cJSON_GetObjectItemCaseSensitive(doc, "middlewares");
    const cJSON *tls = cJSON_GetObjectItemCaseSensitive(doc, "tls");
    if (ep && string_list(ep, "entryPoints", entry_point_ok, &rt->entry_points, &rt->n_entry_points,
                          r) < 0)
        return -1;
    if (mw && string_list(mw, "middlewares", model_dns1123_subdomain, &rt->middlewares,
                          &rt->n_middlewares, r) < 0)
        return -1;
    if (tls && !cJSON_IsObject(tls)) {
        why(r, "'tls' must be a mapping (secretName, certResolver, ...)");
        return -1;
    }
    if (tls && !(rt->tls = cJSON_Duplicate(tls, 1))) {
        why(r, "out of memory");
        return -1;
    }
    if (route_sticky(cJSON_GetObjectItemCaseSensitive(doc, "sticky"), rt, r) < 0)
        return -1;
    return route_priority(cJSON_GetObjectItemCaseSensitive(doc, "priority"), rt, r);
}

static int route_parse(const char *text, size_t len, bool allow_xns, struct model_route *rt,
                       char *r) {
    static const char *const fields[] = {"match",       "entryPoints", "priority", "services",
                                         "middlewares", "tls",         "sticky",   NULL};
    char perr[256];
    cJSON *doc = value_parse(text, len, perr, sizeof perr);
    if (!doc) {
        why(r, "%s", perr);
        return -1;
    }
    int rc = -1;
    if (!cJSON_IsObject(doc))
        why(r, "route must be a mapping with match and services");
    else if (known_fields(doc, fields, "", r) == 0 &&
             route_match(cJSON_GetObjectItemCaseSensitive(doc, "match"), rt, r) == 0 &&
             route_services(cJSON_GetObjectItemCaseSensitive(doc, "services"), allow_xns, rt, r) ==
                 0 &&
             route_optional(doc, rt, r) == 0)
        rc = 0;
    cJSON_Delete(doc);
    return rc;
}

static struct model_service *service_find(const struct model_route *rt, const char *name) {
    for (size_t i = 0; i < rt->n_services; i++)
        if (!strcmp(rt->services[i].name, name))
            return &rt->services[i];
    return NULL;
}

/* The `weights` key overrides the route document, service by service. */
static int weights_apply(struct model_route *rt, char *r) {
    for (size_t i = 0; i < rt->n_weights; i++) {
        struct model_service *svc = service_find(rt, rt->weights[i].service);
        if (!svc) {
            why(r, "unknown service '%s' (not in the route's services)", rt->weights[i].service);
            return -1;
        }
        svc->weight = rt->weights[i].weight;
        svc->has_weight = true;
    }
    return 0;
}

static bool weights_all_zero(const struct model_route *rt) {
    for (size_t i = 0; i < rt->n_services; i++)
        if (rt->services[i].weight > 0)
            return false;
    return true;
}

/* ---- header rules ------------------------------------------------------- */

/* A leading RE2 flag group such as (?i) or (?is): POSIX has no inline
 * flags, so it is stripped and 'i' becomes REG_ICASE. */
static const char *regex_flags(const char *p, int *flags) {
    size_t nf = strncmp(p, "(?", 2) ? 0 : strspn(p + 2, "imsU");
    if (nf == 0 || p[2 + nf] != ')')
        return p;
    if (memchr(p + 2, 'i', nf))
        *flags |= REG_ICASE;
    return p + 3 + nf;
}

/* Length of an RE2 counted repetition at p ("{n}", "{n,}", "{n,m}"), or 0
 * when p does not start one: RE2 then reads the '{' as a literal. */
static size_t re2_interval(const char *p) {
    size_t i = 1, d = strspn(p + 1, "0123456789");
    if (*p != '{' || d == 0)
        return 0;
    i += d;
    if (p[i] == ',')
        i += 1 + strspn(p + i + 1, "0123456789");
    return p[i] == '}' ? i + 1 : 0;
}

/* One RE2 construct at p rewritten for POSIX ERE: returns how many input
 * bytes it used; the output is *rep, or (*rep NULL) the first *keep of them. */
static size_t regex_piece(const char *p, const char **rep, size_t *keep) {
    *rep = NULL;
    if (!strncmp(p, "(?:", 3)) {
        *rep = "(";
        return 3;
    }
    if (!strncmp(p, "\\d", 2) || !strncmp(p, "\\D", 2)) {
        *rep = p[1] == 'd' ? "[0-9]" : "[^0-9]";
        return 2;
    }
    size_t n = re2_interval(p);
    *keep = n ? n : p[0] == '\\' && p[1] ? 2 : 1;
    /* Lazy quantifier: same set of matching strings; drop the '?'. Only
     * after a quantifier: in "a}?" the '?' makes the literal '}' optional. */
    if ((n || (p[0] && strchr("*+?", p[0]))) && p[*keep] == '?')
        return *keep + 1;
    return *keep;
}

/* The regex rewritten so POSIX regcomp can check it; heap string or NULL. */
static char *regex_posix(const char *re, int *flags) {
    const char *p = regex_flags(re, flags);
    char *out = malloc(strlen(p) * 3 + 1); /* \d (2 bytes) becomes [0-9] (5) */
    if (!out)
        return NULL;
    size_t o = 0;
    while (*p) {
        const char *rep;
        size_t keep;
        size_t used = regex_piece(p, &rep, &keep);
        size_t n = rep ? strlen(rep) : keep;
        memcpy(out + o, rep ? rep : p, n);
        o += n;
        p += used;
    }
    out[o] = '\0';
    return out;
}

/* ---- regex cost --------------------------------------------------------- */

/* glibc's regcomp expands every repetition into copies of its operand while
 * it parses, and then computes epsilon closures that grow with the square of
 * a run of optional parts. Its time and memory therefore follow the expanded
 * size, exponentially for repetitions of repetitions ("a" and 22 '+' took 9 s
 * and 2.9 GB; ((x{255}){255}){255} 14 s and 3.4 GB). Anyone who can write a
 * headers key chooses the regex, so the POSIX text is scanned before regcomp
 * sees it and refused, in the order glibc would pay for it, when:
 *  - a repetition applies to a repetition (a**, a+{2}, a{2}*): Go's regexp,
 *    which Traefik uses, refuses these too;
 *  - a count is over 1000 (RE2's and Go's limit), or nested counts multiply
 *    past 1000 ((a{100}){20}): Go's repeatIsValid refuses that as well;
 *  - the expanded size (every atom 1, a group its contents plus 2 for its
 *    open/close nodes, a repetition's operand copied as often as glibc can
 *    unroll it) passes REGEX_COST_MAX. Like RE2's bound on program size,
 *    this limits the work whatever the shape. Measured at the bound, the
 *    worst shapes (chains of empty or optional groups, (){1000}(){600})
 *    cost glibc about 40 MB and 50 ms; 10000 would allow some 400 MB.
 * The scan reads the text as glibc does (bracket expressions without
 * escapes, [:class:] inside them, "{,n}" as a repetition), since glibc's
 * reading is what costs. Syntax glibc refuses is left to regcomp: it stops
 * there, so only the part before it costs anything. */
#define REGEX_LEN_MAX 1024
#define REGEX_REPEAT_MAX 1000
#define REGEX_COST_MAX 5000

/* Past the bracket expression at s ('['), as glibc reads one; NULL when it
 * does not close (regcomp refuses it). */
static const char *rx_bracket_end(const char *s) {
    s++;
    s += *s == '^';
    s += *s == ']'; /* first, ']' is a member */
    for (; *s && *s != ']'; s++) {
        if (s[0] == '[' && s[1] && strchr(":.=", s[1])) {
            char close[3] = {s[1], ']', '\0'};
            const char *end = strstr(s + 2, close);
            if (!end)
                return NULL;
            s = end + 1;
        }
    }
    return *s ? s + 1 : NULL;
}

/* Digits at *p, capped so they cannot overflow; false when there are none. */
static bool rx_count(const char **p, unsigned long *v) {
    if (**p < '0' || **p > '9')
        return false;
    for (*v = 0; **p >= '0' && **p <= '9'; ++*p)
        *v = *v > 100000 ? *v : *v * 10 + (unsigned long)(**p - '0');
    return true;
}

/* An interval at s as glibc reads one in ERE: "{n}", "{n,}", "{n,m}",
 * "{,m}", "{,}". Returns the text after it, or NULL (glibc refuses a '{'
 * that starts none). *hi is ULONG_MAX when unbounded. */
static const char *rx_interval(const char *s, unsigned long *lo, unsigned long *hi) {
    const char *p = s + 1;
    bool first = rx_count(&p, lo);
    if (!first)
        *lo = 0;
    *hi = *lo;
    if (*p == ',') {
        p++;
        if (!rx_count(&p, hi))
            *hi = ULONG_MAX;
    } else if (!first) {
        return NULL;
    }
    return *p == '}' ? p + 1 : NULL;
}

struct rx_level {
    size_t cost;   /* expanded size of the group's contents so far */
    size_t nested; /* largest product of nested counts inside it */
};

struct rx_scan {
    struct rx_level *lv; /* lv[0]: the whole regex; lv[depth]: innermost open group */
    size_t depth;
    size_t last_cost, last_nested; /* the last atom: what a repetition copies */
    bool can_repeat;               /* there is an atom to repeat */
    bool repeated;                 /* the last thing was a repetition */
};

static void rx_atom(struct rx_scan *sc, size_t cost, size_t nested) {
    struct rx_level *l = &sc->lv[sc->depth];
    l->cost += cost;
    if (nested > l->nested)
        l->nested = nested;
    sc->last_cost = cost;
    sc->last_nested = nested;
    sc->can_repeat = true;
    sc->repeated = false;
}

/* A repetition making `copies` copies of the last atom; count is the Go
 * count (max, or min when unbounded) for {}, 1 for * + ?. NULL or why not. */
static const char *rx_repeat(struct rx_scan *sc, size_t copies, size_t count) {
    if (sc->repeated)
        return "has a nested repetition (a repetition of a repetition, like a** or a+{2}), "
               "which Go regexp refuses";
    if (!sc->can_repeat) { /* glibc refuses "*a", "(*", "a|*": no cost to add */
        rx_atom(sc, 1, 1);
        return NULL;
    }
    struct rx_level *l = &sc->lv[sc->depth];
    l->cost += sc->last_cost * (copies - 1);
    sc->last_cost *= copies;
    sc->last_nested *= count;
    if (sc->last_nested > REGEX_REPEAT_MAX)
        return "is too complex: nested repeat counts multiply to over 1000 (Go regexp's limit)";
    if (sc->last_nested > l->nested)
        l->nested = sc->last_nested;
    sc->repeated = true;
    return NULL;
}

/* One token of the POSIX text at *p; NULL or why the regex is refused. */
static const char *rx_token(struct rx_scan *sc, const char **p) {
    const char *s = *p;
    unsigned long lo, hi;
    const char *after;
    *p = s + 1;
    switch (*s) {
    case '\\':
        *p = s[1] ? s + 2 : s + 1;
        rx_atom(sc, 1, 1);
        return NULL;
    case '[':
        after = rx_bracket_end(s);
        *p = after ? after : s + strlen(s); /* unclosed: regcomp refuses it */
        rx_atom(sc, 1, 1);
        return NULL;
    case '(':
        sc->lv[++sc->depth] = (struct rx_level){0, 1};
        sc->can_repeat = sc->repeated = false;
        return NULL;
    case ')':
        if (sc->depth == 0) { /* glibc: an unmatched ')' is a literal */
            rx_atom(sc, 1, 1);
            return NULL;
        }
        sc->depth--;
        rx_atom(sc, (sc->lv[sc->depth + 1].cost ? sc->lv[sc->depth + 1].cost : 1) + 2,
                sc->lv[sc->depth + 1].nested);
        return NULL;
    case '|':
        sc->lv[sc->depth].cost++;
        sc->can_repeat = sc->repeated = false;
        return NULL;
    case '*':
    case '+':
    case '?': return rx_repeat(sc, 2, 1);
    case '{':
        if (!(after = rx_interval(s, &lo, &hi))) { /* regcomp refuses it */
            rx_atom(sc, 1, 1);
            return NULL;
        }
        *p = after;
        if (lo > REGEX_REPEAT_MAX || (hi != ULONG_MAX && hi > REGEX_REPEAT_MAX))
            return "has a repeat count over 1000 (Go regexp's limit)";
        /* glibc unrolls {n,m} into m copies, {n} and {n,} into n + 1. */
        return rx_repeat(sc, hi != ULONG_MAX && hi > lo ? hi : lo + 1, hi != ULONG_MAX ? hi : lo);
    default: rx_atom(sc, 1, 1); return NULL;
    }
}

/* 0 when regcomp may see the POSIX text re, else -1 and why not. */
static int regex_cost_check(const char *re, char *r) {
    /* One level per '(' at most, plus the whole regex. */
    struct rx_scan sc = {.lv = calloc(strlen(re) + 1, sizeof *sc.lv)};
    const char *bad = NULL;
    if (!sc.lv) {
        why(r, "out of memory");
        return -1;
    }
    sc.lv[0].nested = 1;
    bool big = false;
    for (const char *p = re; *p && !bad && !big;) {
        bad = rx_token(&sc, &p);
        big = sc.lv[sc.depth].cost > REGEX_COST_MAX;
    }
    free(sc.lv);
    if (bad)
        why(r, "regex %s", bad);
    else if (big)
        why(r,
            "regex is too complex: it expands to over %d parts once its repetitions are "
            "unrolled",
            REGEX_COST_MAX);
    return bad || big ? -1 : 0;
}

/* Traefik compiles regexes with Go's regexp (RE2). There is no RE2 in C, so
 * this is an approximation: POSIX ERE after rewriting (?flags), (?:, \d and
 * lazy quantifiers, and refusing backreferences, which RE2 lacks but POSIX
 * has. Other RE2-only syntax (\pL, inline flags mid-pattern) is refused, and
 * the rare pattern POSIX takes but RE2 does not fails later in Traefik.
 * What glibc would spend seconds or gigabytes on is refused before regcomp
 * (see regex_cost_check). */
static int regex_check(const char *re, char *r) {
    size_t len = strlen(re);
    if (len > REGEX_LEN_MAX) {
        why(r, "regex is too long (%zu bytes, the limit is %d)", len, REGEX_LEN_MAX);
        return -1;
    }
    for (const char *p = re; *p; p++) {
        if (p[0] == '\\' && p[1] >= '1' && p[1] <= '9') {
            why(r, "regex uses a backreference, which Go regexp does not support");
            return -1;
        }
        if (p[0] == '\\' && p[1])
            p++;
    }
    int flags = REG_EXTENDED | REG_NOSUB;
    char *posix = regex_posix(re, &flags);
    if (!posix) {
        why(r, "out of memory");
        return -1;
    }
    if (regex_cost_check(posix, r) < 0) {
        free(posix);
        return -1;
    }
    regex_t rx;
    int rc = regcomp(&rx, posix, flags);
    free(posix);
    if (rc != 0) {
        char msg[128];
        regerror(rc, &rx, msg, sizeof msg);
        regfree(&rx); /* glibc keeps partial state after a failure */
        if (rc == REG_ESPACE) {
            why(r, "out of memory");
            return -1;
        }
        why(r, "regex does not compile: %s", msg);
        return -1;
    }
    regfree(&rx);
    return 0;
}

static int kv_list(const cJSON *v, const char *field, struct model_kv **out, size_t *n, char *r) {
    char s[SHOWN_MAX + 4];
    if (!v)
        return 0;
    if (!cJSON_IsObject(v)) {
        why(r, "'%s' must be a mapping of header name to value", field);
        return -1;
    }
    size_t cnt = (size_t)cJSON_GetArraySize(v);
    if (!(*out = calloc(cnt ? cnt : 1, sizeof **out))) {
        why(r, "out of memory");
        return -1;
    }
    for (const cJSON *c = v->child; c; c = c->next) {
        if (!http_token(c->string)) {
            why(r, "'%s': '%s' is not a valid header name", field, shown(c->string, s));
            return -1;
        }
        if (!cJSON_IsString(c) || !rule_text_ok(c->valuestring)) {
            why(r,
                "'%s': the value of '%s' must be a string without backticks or control "
                "characters",
                field, c->string);
            return -1;
        }
        struct model_kv *kv = &(*out)[(*n)++];
        kv->key = strdup(c->string);
        kv->value = strdup(c->valuestring);
        if (!kv->key || !kv->value) {
            why(r, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Optional string field: NULL when absent; -1 when present but not a string. */
static int opt_string(const cJSON *rule, const char *field, const char **out, char *r) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rule, field);
    *out = NULL;
    if (!v)
        return 0;
    if (!cJSON_IsString(v)) {
        why(r, "'%s' must be a string (quote it)", field);
        return -1;
    }
    *out = v->valuestring;
    return 0;
}

struct rule_text {
    const char *name, *header, *cookie, *value, *regex, *service;
};

static int rule_strings(const cJSON *v, struct rule_text *t, char *r) {
    static const char *const fields[] = {"name",
                                         "header",
                                         "cookie",
                                         "value",
                                         "regex",
                                         "service",
                                         "setRequestHeaders",
                                         "setResponseHeaders",
                                         NULL};
    if (!cJSON_IsObject(v)) {
        why(r, "must be a mapping (header or cookie, value or regex, service)");
        return -1;
    }
    if (known_fields(v, fields, "", r) < 0 || opt_string(v, "name", &t->name, r) < 0 ||
        opt_string(v, "header", &t->header, r) < 0 || opt_string(v, "cookie", &t->cookie, r) < 0 ||
        opt_string(v, "value", &t->value, r) < 0 || opt_string(v, "regex", &t->regex, r) < 0 ||
        opt_string(v, "service", &t->service, r) < 0)
        return -1;
    return 0;
}

static int rule_matcher_check(const struct rule_text *t, char *r) {
    char s[SHOWN_MAX + 4];
    if (!t->header == !t->cookie) {
        why(r, "needs exactly one of 'header' or 'cookie'");
        return -1;
    }
    if (t->header && !http_token(t->header)) {
        why(r, "'%s' is not a valid header name (RFC 7230 token)", shown(t->header, s));
        return -1;
    }
    if (t->cookie && !http_token(t->cookie)) {
        why(r, "'%s' is not a valid cookie name (RFC 6265 token)", shown(t->cookie, s));
        return -1;
    }
    if (t->cookie && (t->regex || !t->value)) {
        why(r, "a cookie rule needs 'value' (and no 'regex')");
        return -1;
    }
    if (t->header && !t->value == !t->regex) {
        why(r, "a header rule needs exactly one of 'value' or 'regex'");
        return -1;
    }
    if ((t->value && !rule_text_ok(t->value)) || (t->regex && !rule_text_ok(t->regex))) {
        why(r, "'%s' must not contain backticks or control characters",
            t->value ? "value" : "regex");
        return -1;
    }
    if (t->cookie && !cookie_value_ok(t->value)) {
        why(r, "cookie value has characters a cookie cannot carry (space \" , ; \\)");
        return -1;
    }
    if (t->regex && !t->regex[0]) {
        why(r, "'regex' is empty (it would match every request)");
        return -1;
    }
    return t->regex ? regex_check(t->regex, r) : 0;
}

static char *rule_name(const struct rule_text *t, size_t idx, bool *oom) {
    char def[32];
    snprintf(def, sizeof def, "h%zu", idx);
    return dup_or_null(t->name ? t->name : def, oom);
}

static int rule_fill(struct model_rule *mr, const struct rule_text *t, size_t idx) {
    bool oom = false;
    mr->name = rule_name(t, idx, &oom);
    mr->kind = t->header ? RULE_HEADER : RULE_COOKIE;
    mr->header = dup_or_null(t->header ? t->header : t->cookie, &oom);
    mr->value = t->value ? dup_or_null(t->value, &oom) : NULL;
    mr->regex = t->regex ? dup_or_null(t->regex, &oom) : NULL;
    mr->service = dup_or_null(t->service, &oom);
    return oom ? -1 : 0;
}

static int rule_parse(const cJSON *v, size_t idx, struct model_route *rt, char *r) {
    struct rule_text t = {0};
    char s[SHOWN_MAX + 4];
    if (rule_strings(v, &t, r) < 0 || rule_matcher_check(&t, r) < 0)
        return -1;
    if (t.name && !model_dns1123_label(t.name)) {
        why(r, "'name' must be a DNS-1123 label, got '%s'", shown(t.name, s));
        return -1;
    }
    if (!t.service || !service_find(rt, t.service)) {
        why(r, "'service' is required and must be one of the route's services%s%s%s",
            t.service ? ", got '" : "", t.service ? shown(t.service, s) : "", t.service ? "'" : "");
        return -1;
    }
    struct model_rule *mr = &rt->rules[idx];
    rt->n_rules = idx + 1;
    if (rule_fill(mr, &t, idx) < 0) {
        why(r, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < idx; i++) {
        if (!strcmp(rt->rules[i].name, mr->name)) {
            why(r, "duplicate rule name '%s'", mr->name);
            return -1;
        }
    }
    if (kv_list(cJSON_GetObjectItemCaseSensitive(v, "setRequestHeaders"), "setRequestHeaders",
                &mr->set_request, &mr->n_set_request, r) < 0 ||
        kv_list(cJSON_GetObjectItemCaseSensitive(v, "setResponseHeaders"), "setResponseHeaders",
                &mr->set_response, &mr->n_set_response, r) < 0)
        return -1;
    return 0;
}

static int headers_parse(const char *text, size_t len, struct model_route *rt, char *r) {
    char perr[256];
    cJSON *doc = value_parse(text, len, perr, sizeof perr);
    if (!doc) {
        why(r, "%s", perr);
        return -1;
    }
    int rc = 0;
    size_t cnt = cJSON_IsArray(doc) ? (size_t)cJSON_GetArraySize(doc) : 0;
    if (!cJSON_IsArray(doc)) {
        why(r, "headers must be a list of rules");
        rc = -1;
    } else if (!(rt->rules = calloc(cnt ? cnt : 1, sizeof *rt->rules))) {
        why(r, "out of memory");
        rc = -1;
    }
    size_t i = 0;
    for (const cJSON *c = rc ? NULL : doc->child; c; c = c->next, i++) {
        reason_t inner;
        if (rule_parse(c, i, rt, inner) < 0) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(c, "name");
            char s[SHOWN_MAX + 4];
            if (cJSON_IsString(nm))
                why(r, "rule %zu ('%s'): %s", i, shown(nm->valuestring, s), inner);
            else
                why(r, "rule %zu: %s", i, inner);
            rc = -1;
            break;
        }
    }
    cJSON_Delete(doc);
    return rc;
}

/* ---- model_build -------------------------------------------------------- */

static void kv_free(struct model_kv *kv, size_t n) {
    for (size_t i = 0; kv && i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

static void strings_free(char **v, size_t n) {
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

void model_route_free(struct model_route *r) {
    if (!r)
        return;
    free(r->ns);
    free(r->name);
    free(r->match);
    strings_free(r->entry_points, r->n_entry_points);
    for (size_t i = 0; r->services && i < r->n_services; i++) {
        free(r->services[i].name);
        free(r->services[i].ns);
        free(r->services[i].port);
    }
    free(r->services);
    strings_free(r->middlewares, r->n_middlewares);
    cJSON_Delete(r->tls);
    for (size_t i = 0; r->rules && i < r->n_rules; i++) {
        struct model_rule *mr = &r->rules[i];
        free(mr->name);
        free(mr->header);
        free(mr->value);
        free(mr->regex);
        free(mr->service);
        kv_free(mr->set_request, mr->n_set_request);
        kv_free(mr->set_response, mr->n_set_response);
    }
    free(r->rules);
    free(r->sticky.cookie);
    model_weights_free(r->weights, r->n_weights);
    memset(r, 0, sizeof *r);
}

static const char *const leaf_names[] = {"route", "weights", "headers", "status"};

/* "<prefix><ns>/<name>/<leaf>: reason", then clear the half-built route. */
static int build_fail(const struct model_input *in, enum model_leaf leaf, const char *reason,
                      struct model_route *out, char *err, size_t errlen) {
    snprintf(err, errlen, "%s%s/%s/%s: %s", in->prefix ? in->prefix : "", in->ns, in->name,
             leaf_names[leaf], reason);
    model_route_free(out);
    return -1;
}

/* Each rule takes one priority step above the weighted route. */
static int priority_room(const struct model_route *rt, char *r) {
    if (rt->has_priority && rt->priority + (long long)rt->n_rules + 1 > PRIORITY_LIMIT) {
        why(r, "priority %lld leaves no room for %zu header rule(s) above it (limit %lld)",
            rt->priority, rt->n_rules, PRIORITY_LIMIT);
        return -1;
    }
    return 0;
}

/* With a `weights` key, every service needs an explicit weight (from the key
 * or the route document): a default of 1 next to `shop-v2=10` would send 91%
 * to the canary without anyone having said so. */
static int weights_complete(const struct model_route *rt, char *r) {
    size_t n = 0, len = 0;
    char list[sizeof(reason_t) - 160];
    list[0] = '\0';
    for (size_t i = 0; i < rt->n_services; i++) {
        if (rt->services[i].has_weight)
            continue;
        int k =
            snprintf(list + len, sizeof list - len, "%s%s", n ? ", " : "", rt->services[i].name);
        if (k > 0 && (size_t)k < sizeof list - len)
            len += (size_t)k;
        n++;
    }
    if (!n)
        return 0;
    why(r,
        "no explicit weight for %s: with a weights key, give every service of the route a "
        "weight (in this key or in the route document)",
        list);
    return -1;
}

/* No `weights` key: the weights in force stay (see model_input.held). */
static void weights_hold(struct model_route *rt, const struct model_input *in) {
    for (size_t i = 0; i < rt->n_services; i++) {
        struct model_service *svc = &rt->services[i];
        if (in->held_doc_new && svc->has_weight)
            continue;
        for (size_t k = 0; k < in->n_held; k++) {
            if (strcmp(in->held[k].service, svc->name) == 0) {
                svc->weight = in->held[k].weight;
                svc->has_weight = true;
                rt->weights_held = true;
                break;
            }
        }
    }
}

static int build_owned(const struct model_input *in, struct model_route *out, char *err,
                       size_t errlen) {
    reason_t r;
    if (route_parse(in->route, in->route_len, in->allow_cross_namespace, out, r) < 0)
        return build_fail(in, LEAF_ROUTE, r, out, err, errlen);
    out->route_rev = in->route_rev;
    if (in->weights && (weights_apply(out, r) < 0 || weights_complete(out, r) < 0))
        return build_fail(in, LEAF_WEIGHTS, r, out, err, errlen);
    if (!in->weights && in->n_held)
        weights_hold(out, in);
    if (weights_all_zero(out)) {
        why(r, "every service's weight is zero (Traefik would answer 503 to every request)");
        return build_fail(in, in->weights ? LEAF_WEIGHTS : LEAF_ROUTE, r, out, err, errlen);
    }
    if (in->headers && headers_parse(in->headers, in->headers_len, out, r) < 0)
        return build_fail(in, LEAF_HEADERS, r, out, err, errlen);
    if (priority_room(out, r) < 0)
        return build_fail(in, LEAF_ROUTE, r, out, err, errlen);
    return 0;
}

int model_build(const struct model_input *in, struct model_route *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!in->route && !in->weights) {
        if (!in->headers)
            return 1;
        return build_fail(in, LEAF_HEADERS, "headers need a route key (owned mode)", out, err,
                          errlen);
    }
    if (!model_dns1123_label(in->ns) || !model_dns1123_subdomain(in->name))
        return build_fail(in, in->route ? LEAF_ROUTE : LEAF_WEIGHTS,
                          "namespace or name is not a valid Kubernetes name", out, err, errlen);
    out->revision = in->revision;
    out->owned = in->route != NULL;
    if (!(out->ns = strdup(in->ns)) || !(out->name = strdup(in->name)))
        return build_fail(in, in->route ? LEAF_ROUTE : LEAF_WEIGHTS, "out of memory", out, err,
                          errlen);
    if (in->weights) {
        char werr[sizeof(reason_t)];
        if (model_parse_weights(in->weights, in->weights_len, &out->weights, &out->n_weights, werr,
                                sizeof werr) < 0)
            return build_fail(in, LEAF_WEIGHTS, werr, out, err, errlen);
    }
    if (!in->route) {
        if (in->headers)
            return build_fail(in, LEAF_HEADERS, "headers need a route key (owned mode)", out, err,
                              errlen);
        return 0;
    }
    return build_owned(in, out, err, errlen);
}
