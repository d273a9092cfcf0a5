/* route.c - the `route` document of an owned route: match, entry points,
 * priority, services, middlewares, tls, sticky and mirror (see model.c for
 * the rules it enforces). */
#include "bridge/lib/value.h"
#include "bridge/model/parse.h"

/* ---- checks on text ----------------------------------------------------- */

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

static bool no_control(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
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

/* ---- services ----------------------------------------------------------- */

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

/* ---- match -------------------------------------------------------------- */

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

/* ---- priority ----------------------------------------------------------- */

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

/* ---- mirror ------------------------------------------------------------- */

static int mirror_percent(const cJSON *v, struct model_mirror *m, char *r) {
    long long n;
    if (!v) {
        why(r, "mirror: 'percent' is required (0 to 100: the share of requests copied)");
        return -1;
    }
    if (!value_get_int(v, 0, 100, &n)) {
        why(r, "mirror: 'percent' must be a whole number from 0 to 100");
        return -1;
    }
    m->percent = (long)n;
    return 0;
}

static int mirror_body(const cJSON *mb, const cJSON *max, struct model_mirror *m, char *r) {
    long long n;
    if (mb && !cJSON_IsBool(mb)) {
        why(r, "mirror: 'mirrorBody' must be true or false (unquoted)");
        return -1;
    }
    m->has_mirror_body = mb != NULL;
    m->mirror_body = cJSON_IsTrue(mb);
    if (max && !value_get_int(max, -1, MODEL_BODY_SIZE_MAX, &n)) {
        why(r,
            "mirror: 'maxBodySize' must be a whole number of bytes from 0 to %lld, or -1 for "
            "no limit",
            MODEL_BODY_SIZE_MAX);
        return -1;
    }
    m->has_max_body_size = max != NULL;
    m->max_body_size = max ? n : -1;
    return 0;
}

/* Without a port, the mirror is one of the route's own services, port and
 * namespace included. */
static int mirror_same_as(const struct model_route *rt, const cJSON *ns, struct model_mirror *m,
                          char *r) {
    const struct model_service *svc = model_service_find(rt, m->svc.name);
    bool oom = false;
    if (!svc) {
        why(r, "mirror: 'port' is required unless 'service' names one of the route's services "
               "(whose port is then used)");
        return -1;
    }
    if (ns) {
        why(r,
            "mirror: 'namespace' needs 'port' too (without 'port' the mirror is the "
            "route's own service '%s')",
            svc->name);
        return -1;
    }
    m->svc.port = dup_or_null(svc->port, &oom);
    m->svc.ns = svc->ns ? dup_or_null(svc->ns, &oom) : NULL;
    m->svc.port_is_num = svc->port_is_num;
    m->svc.port_num = svc->port_num;
    if (oom) {
        why(r, "out of memory");
        return -1;
    }
    return 0;
}

static int route_mirror(const cJSON *v, bool allow_xns, struct model_route *rt, char *r) {
    static const char *const fields[] = {"service",    "port",        "namespace", "percent",
                                         "mirrorBody", "maxBodySize", NULL};
    struct model_mirror *m = &rt->mirror;
    char s[SHOWN_MAX + 4];
    if (!v)
        return 0;
    if (!cJSON_IsObject(v)) {
        why(r, "'mirror' must be a mapping such as {service: NAME, percent: 10}");
        return -1;
    }
    if (known_fields(v, fields, "mirror: ", r) < 0)
        return -1;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(v, "service");
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(v, "port");
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(v, "namespace");
    if (!name) {
        why(r, "mirror: 'service' is required (the Service that gets the copies)");
        return -1;
    }
    if (!cJSON_IsString(name) || !model_dns1123_label(name->valuestring)) {
        why(r, "mirror: 'service' must be a DNS-1123 label (a Service name), got '%s'",
            cJSON_IsString(name) ? shown(name->valuestring, s) : "not a string");
        return -1;
    }
    if (!(m->svc.name = strdup(name->valuestring))) {
        why(r, "out of memory");
        return -1;
    }
    if (port ? service_namespace(ns, "mirror: ", allow_xns, &m->svc, r) < 0 ||
                   service_port(port, "mirror: ", &m->svc, r) < 0
             : mirror_same_as(rt, ns, m, r) < 0)
        return -1;
    if (mirror_percent(cJSON_GetObjectItemCaseSensitive(v, "percent"), m, r) < 0 ||
        mirror_body(cJSON_GetObjectItemCaseSensitive(v, "mirrorBody"),
                    cJSON_GetObjectItemCaseSensitive(v, "maxBodySize"), m, r) < 0)
        return -1;
    m->enabled = true;
    return 0;
}

/* ---- max step ---------------------------------------------------------- */

static int route_max_step(const cJSON *v, struct model_route *rt, char *r) {
    long long n;
    if (!v)
        return 0;
    if (!value_get_int(v, 0, 100, &n)) {
        why(r, "'maxStep' must be a whole number of percentage points from 0 (no limit) to 100");
        return -1;
    }
    rt->has_max_step = true;
    rt->max_step = (long)n;
    return 0;
}

/* ---- the document ------------------------------------------------------- */

static int route_optional(const cJSON *doc, bool allow_xns, struct model_route *rt, char *r) {
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
    if (route_sticky(cJSON_GetObjectItemCaseSensitive(doc, "sticky"), rt, r) < 0 ||
        route_mirror(cJSON_GetObjectItemCaseSensitive(doc, "mirror"), allow_xns, rt, r) < 0 ||
        route_max_step(cJSON_GetObjectItemCaseSensitive(doc, "maxStep"), rt, r) < 0)
        return -1;
    return route_priority(cJSON_GetObjectItemCaseSensitive(doc, "priority"), rt, r);
}

int model_route_parse(const char *text, size_t len, bool allow_xns, struct model_route *rt,
                      char *r) {
    static const char *const fields[] = {"match",       "entryPoints", "priority", "services",
                                         "middlewares", "tls",         "sticky",   "mirror",
                                         "maxStep",     NULL};
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
             route_optional(doc, allow_xns, rt, r) == 0)
        rc = 0;
    cJSON_Delete(doc);
    return rc;
}

struct model_service *model_service_find(const struct model_route *rt, const char *name) {
    for (size_t i = 0; i < rt->n_services; i++)
        if (!strcmp(rt->services[i].name, name))
            return &rt->services[i];
    return NULL;
}
