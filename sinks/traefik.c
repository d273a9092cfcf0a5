/* traefik.c - render a model_route into Traefik IngressRoute, Middleware and
 * TraefikService objects, and merge them with live objects; see traefik.h.
 *
 * The model has already refused anything that could break out of a rule
 * literal; this file still quotes every value through traefik_rule_quote()
 * so the rule text is right by construction, not by luck.
 *
 * Priorities: Traefik gives a route without one the length of its rule. We
 * write that same number explicitly on the weighted route (or the route's
 * own priority), and give header rule i of n the priority base + (n - i), so
 * earlier rules beat later ones and every rule beats the weighted route.
 * Traefik reads priority 0 as "use the rule length", so when a negative base
 * would make a rule land on 0, the rules from there up move one step higher.
 * model.c keeps base + n + 1 within 2^53, so no overflow is possible and
 * every priority is exact in a JSON number.
 *
 * Sticky routes: an IngressRoute route with several services is an implicit
 * weighted round robin that has no sticky option, so the weighted route
 * points to a TraefikService of the same name whose spec.weighted carries
 * the services, their weights and the sticky cookie. Header/cookie rule
 * routes keep going straight to their one Service: a tester selected by
 * header must reach that version whatever cookie they hold.
 *
 * Mirrored routes: the weighted route points to a mirroring TraefikService
 * "<route>-mirror-<hash>" whose main service is the weighted TraefikService
 * (sticky or not) when the route has several services, else its one
 * Service, and whose one mirror is the mirror Service with its percent.
 * Rule routes are not mirrored, for the same reason as above. */
#include "sinks/traefik.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/buf.h"

/* ---- rule text ----------------------------------------------------------- */

char *traefik_rule_quote(const char *s) {
    buf_t b = BUF_INIT;
    int rc;
    if (!strchr(s, '`') && !strchr(s, '\r')) {
        rc = buf_printf(&b, "`%s`", s);
    } else {
        /* A Go interpreted string literal: Traefik unquotes it with
         * strconv.Unquote. \xNN keeps the exact bytes. */
        rc = buf_putc(&b, '"');
        for (const unsigned char *p = (const unsigned char *)s; *p && rc == 0; p++) {
            if (*p == '\\' || *p == '"')
                rc = buf_printf(&b, "\\%c", *p);
            else if (*p < 0x20 || *p == 0x7f || *p == '`')
                rc = buf_printf(&b, "\\x%02x", *p);
            else
                rc = buf_putc(&b, (char)*p);
        }
        if (rc == 0)
            rc = buf_putc(&b, '"');
    }
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

/* Escape every RE2 metacharacter so s matches only itself. */
static int regex_escape(buf_t *b, const char *s) {
    for (; *s; s++) {
        if (strchr("\\.+*?()|[]{}^$", *s) && buf_putc(b, '\\') < 0)
            return -1;
        if (buf_putc(b, *s) < 0)
            return -1;
    }
    return 0;
}

/* A regex for the Cookie header that matches exactly NAME=VALUE as one of
 * its cookies, not as a suffix of another cookie's name or value. */
static char *cookie_regex(const char *name, const char *value) {
    buf_t b = BUF_INIT;
    if (buf_puts(&b, "(^|;\\s*)") < 0 || regex_escape(&b, name) < 0 || buf_putc(&b, '=') < 0 ||
        regex_escape(&b, value) < 0 || buf_puts(&b, "(;|$)") < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

/* Header(`k`, `v`) / HeaderRegexp(...) in v3; Headers / HeadersRegexp in v2. */
static int matcher_append(buf_t *b, const struct model_rule *rule, enum rule_syntax syntax) {
    bool regexp = rule->kind == RULE_COOKIE || rule->regex;
    const char *fn = syntax == RULE_SYNTAX_V2 ? (regexp ? "HeadersRegexp" : "Headers")
                                              : (regexp ? "HeaderRegexp" : "Header");
    char *arg = rule->kind == RULE_COOKIE ? cookie_regex(rule->header, rule->value)
                                          : strdup(rule->regex ? rule->regex : rule->value);
    const char *key = rule->kind == RULE_COOKIE ? "Cookie" : rule->header;
    char *qk = traefik_rule_quote(key), *qv = arg ? traefik_rule_quote(arg) : NULL;
    int rc = qk && qv ? buf_printf(b, "%s(%s, %s)", fn, qk, qv) : -1;
    free(arg);
    free(qk);
    free(qv);
    return rc;
}

static char *rule_match(const char *match, const struct model_rule *rule, enum rule_syntax syntax) {
    buf_t b = BUF_INIT;
    if (buf_printf(&b, "(%s) && ", match) < 0 || matcher_append(&b, rule, syntax) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

static long long priority_base(const struct model_route *r) {
    if (r->has_priority && r->priority != 0)
        return r->priority;
    return (long long)strlen(r->match);
}

static long long rule_priority(const struct model_route *r, size_t i) {
    long long base = priority_base(r);
    long long p = base + (long long)(r->n_rules - i);
    return (base < 0 && p >= 0) ? p + 1 : p;
}

/* ---- object parts ------------------------------------------------------- */

static cJSON *labels_new(void) {
    cJSON *labels = cJSON_CreateObject();
    if (!labels || !cJSON_AddStringToObject(labels, TRAEFIK_LABEL_MANAGED_BY, TRAEFIK_MANAGER)) {
        cJSON_Delete(labels);
        return NULL;
    }
    return labels;
}

static cJSON *annotations_new(const struct model_route *r, const struct render_opts *o) {
    char rev[24];
    snprintf(rev, sizeof rev, "%" PRIu64, r->revision);
    cJSON *ann = cJSON_CreateObject();
    if (!ann || !cJSON_AddStringToObject(ann, TRAEFIK_ANNOT_PREFIX, o->prefix ? o->prefix : "") ||
        !cJSON_AddStringToObject(ann, TRAEFIK_ANNOT_SOURCE, o->source_name ? o->source_name : "") ||
        !cJSON_AddStringToObject(ann, TRAEFIK_ANNOT_REVISION, rev)) {
        cJSON_Delete(ann);
        return NULL;
    }
    return ann;
}

/* Adds item to obj under key, or deletes it: the caller never leaks it.
 * This and the other adders below: 0, or -1 out of memory (item NULL counts
 * as that: it is what a failed constructor gives). */
static int add_to(cJSON *obj, const char *key, cJSON *item) {
    if (!obj || !item || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static cJSON *metadata_new(const char *name, const struct model_route *r,
                           const struct render_opts *o) {
    cJSON *md = cJSON_CreateObject();
    bool ok = md && cJSON_AddStringToObject(md, "name", name) &&
              cJSON_AddStringToObject(md, "namespace", r->ns) &&
              add_to(md, "labels", labels_new()) == 0 &&
              add_to(md, "annotations", annotations_new(r, o)) == 0;
    if (!ok) {
        cJSON_Delete(md);
        return NULL;
    }
    return md;
}

static cJSON *object_new(const char *kind, const char *name, const struct model_route *r,
                         const struct render_opts *o) {
    char api[128];
    snprintf(api, sizeof api, "%s/v1alpha1", o->api_group ? o->api_group : "traefik.io");
    cJSON *obj = cJSON_CreateObject();
    bool ok = obj && cJSON_AddStringToObject(obj, "apiVersion", api) &&
              cJSON_AddStringToObject(obj, "kind", kind) &&
              add_to(obj, "metadata", metadata_new(name, r, o)) == 0;
    if (!ok) {
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

/* {name, namespace?, port} of a Kubernetes Service. */
static cJSON *service_base(const struct model_service *s) {
    cJSON *svc = cJSON_CreateObject();
    bool ok = svc && cJSON_AddStringToObject(svc, "name", s->name) &&
              (!s->ns || cJSON_AddStringToObject(svc, "namespace", s->ns)) &&
              (s->port_is_num ? cJSON_AddNumberToObject(svc, "port", (double)s->port_num) != NULL
                              : cJSON_AddStringToObject(svc, "port", s->port) != NULL);
    if (!ok) {
        cJSON_Delete(svc);
        return NULL;
    }
    return svc;
}

/* service_base plus field = n: a weight, or a mirror's percent. */
static cJSON *service_with(const struct model_service *s, const char *field, long n) {
    cJSON *svc = service_base(s);
    if (svc && !cJSON_AddNumberToObject(svc, field, (double)n)) {
        cJSON_Delete(svc);
        return NULL;
    }
    return svc;
}

static cJSON *service_ref(const struct model_service *s, long weight) {
    return service_with(s, "weight", weight);
}

static int add_ref(cJSON *list, const char *name) {
    cJSON *ref = cJSON_CreateObject();
    if (!ref || !cJSON_AddStringToObject(ref, "name", name) || !cJSON_AddItemToArray(list, ref)) {
        cJSON_Delete(ref);
        return -1;
    }
    return 0;
}

/* The route's middlewares, then (for a rule that sets headers) its own. */
static int add_middlewares(cJSON *route, const struct model_route *r, const char *own) {
    if (!r->n_middlewares && !own)
        return 0;
    cJSON *list = cJSON_AddArrayToObject(route, "middlewares");
    if (!list)
        return -1;
    for (size_t i = 0; i < r->n_middlewares; i++)
        if (add_ref(list, r->middlewares[i]) < 0)
            return -1;
    return own ? add_ref(list, own) : 0;
}

static cJSON *route_new(const char *match, long long priority) {
    cJSON *route = cJSON_CreateObject();
    if (!route || !cJSON_AddStringToObject(route, "kind", "Rule") ||
        !cJSON_AddStringToObject(route, "match", match) ||
        !cJSON_AddNumberToObject(route, "priority", (double)priority)) {
        cJSON_Delete(route);
        return NULL;
    }
    return route;
}

static bool rule_sets_headers(const struct model_rule *rule) {
    return rule->n_set_request || rule->n_set_response;
}

static const struct model_service *service_by_name(const struct model_route *r, const char *name) {
    for (size_t i = 0; i < r->n_services; i++)
        if (!strcmp(r->services[i].name, name))
            return &r->services[i];
    return NULL;
}

static int add_item(cJSON *arr, cJSON *item) {
    if (!item || !cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static cJSON *rule_route(const struct model_route *r, size_t i, enum rule_syntax syntax) {
    const struct model_rule *rule = &r->rules[i];
    const struct model_service *svc = service_by_name(r, rule->service);
    char *match = rule_match(r->match, rule, syntax);
    char *mw = rule_sets_headers(rule) ? traefik_middleware_name(r, i) : NULL;
    cJSON *route = match && svc ? route_new(match, rule_priority(r, i)) : NULL;
    cJSON *services = route ? cJSON_AddArrayToObject(route, "services") : NULL;
    /* The only service of this route: weight 1 is explicit, not meaningful. */
    bool ok = services && add_item(services, service_ref(svc, 1)) == 0 &&
              (!rule_sets_headers(rule) || mw) && add_middlewares(route, r, mw) == 0;
    free(match);
    free(mw);
    if (!ok) {
        cJSON_Delete(route);
        return NULL;
    }
    return route;
}

/* The route's services with their weights: the weighted route's services,
 * or a TraefikService's spec.weighted.services. */
static int add_weighted_services(cJSON *services, const struct model_route *r) {
    if (!services)
        return -1;
    for (size_t i = 0; i < r->n_services; i++)
        if (add_item(services, service_ref(&r->services[i], r->services[i].weight)) < 0)
            return -1;
    return 0;
}

/* A reference to the TraefikService `name` (the weighted route's one
 * service when sticky or mirrored, or a mirroring's main service). No port
 * (it is not a Kubernetes Service) and no weight (the only service; the
 * weights live in the TraefikService). */
static cJSON *traefikservice_ref(const char *name) {
    cJSON *svc = cJSON_CreateObject();
    if (!name || !svc || !cJSON_AddStringToObject(svc, "name", name) ||
        !cJSON_AddStringToObject(svc, "kind", "TraefikService")) {
        cJSON_Delete(svc);
        return NULL;
    }
    return svc;
}

bool traefik_weighted_service_wanted(const struct model_route *r) {
    return r->owned && (r->sticky.enabled || (r->mirror.enabled && r->n_services > 1));
}

/* The weighted route's one service: the mirroring TraefikService, else the
 * weighted one, or NULL when the route's services go inline. Heap string. */
static char *weighted_route_target(const struct model_route *r, bool *oom) {
    char *name = r->mirror.enabled                    ? traefik_mirror_name(r)
                 : traefik_weighted_service_wanted(r) ? strdup(r->name)
                                                      : NULL;
    *oom = !name && (r->mirror.enabled || traefik_weighted_service_wanted(r));
    return name;
}

static cJSON *weighted_route(const struct model_route *r) {
    bool oom;
    char *target = weighted_route_target(r, &oom);
    cJSON *route = oom ? NULL : route_new(r->match, priority_base(r));
    cJSON *services = route ? cJSON_AddArrayToObject(route, "services") : NULL;
    bool ok = target ? services && add_item(services, traefikservice_ref(target)) == 0
                     : add_weighted_services(services, r) == 0;
    free(target);
    if (!ok || add_middlewares(route, r, NULL) < 0) {
        cJSON_Delete(route);
        return NULL;
    }
    return route;
}

static int add_entry_points(cJSON *spec, const struct model_route *r) {
    if (!r->n_entry_points)
        return 0;
    cJSON *eps = cJSON_AddArrayToObject(spec, "entryPoints");
    if (!eps)
        return -1;
    for (size_t i = 0; i < r->n_entry_points; i++)
        if (add_item(eps, cJSON_CreateString(r->entry_points[i])) < 0)
            return -1;
    return 0;
}

static cJSON *ingressroute_spec(const struct model_route *r, enum rule_syntax syntax) {
    cJSON *spec = cJSON_CreateObject();
    cJSON *routes = NULL;
    bool ok = spec && add_entry_points(spec, r) == 0 &&
              (routes = cJSON_AddArrayToObject(spec, "routes")) != NULL;
    for (size_t i = 0; ok && i < r->n_rules; i++)
        ok = add_item(routes, rule_route(r, i, syntax)) == 0;
    ok = ok && add_item(routes, weighted_route(r)) == 0;
    if (ok && r->tls)
        ok = add_to(spec, "tls", cJSON_Duplicate(r->tls, 1)) == 0;
    if (!ok) {
        cJSON_Delete(spec);
        return NULL;
    }
    return spec;
}

cJSON *traefik_render_ingressroute(const struct model_route *r, const struct render_opts *o) {
    if (!r->owned || !r->match)
        return NULL;
    cJSON *obj = object_new("IngressRoute", r->name, r, o);
    char from[32] = "route";
    if (r->plan_rev && (r->n_weights || r->weights_held))
        snprintf(from, sizeof from, "plan:%" PRIu64, r->plan_rev);
    else if (r->n_weights)
        snprintf(from, sizeof from, "weights");
    else if (r->weights_held || r->aborted) /* abort: what stays once it ends, keyless */
        snprintf(from, sizeof from, "held:%" PRIu64, r->route_rev);
    cJSON *ann = obj ? cJSON_GetObjectItemCaseSensitive(
                           cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "annotations")
                     : NULL;
    cJSON *spec = ann && cJSON_AddStringToObject(ann, TRAEFIK_ANNOT_WEIGHTS, from)
                      ? ingressroute_spec(r, o->syntax)
                      : NULL;
    if (!spec || !cJSON_AddItemToObject(obj, "spec", spec)) {
        cJSON_Delete(spec);
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

/* ---- TraefikService ----------------------------------------------------- */

static const char *same_site_name(enum model_same_site s) {
    switch (s) {
    case SAME_SITE_NONE: return "none";
    case SAME_SITE_LAX: return "lax";
    case SAME_SITE_STRICT: return "strict";
    case SAME_SITE_UNSET: break;
    }
    return NULL;
}

/* spec.weighted.sticky.cookie: only the fields the user gave, so Traefik's
 * own defaults (which differ between versions) apply to the rest. */
static cJSON *sticky_cookie(const struct model_sticky *st, enum rule_syntax syntax) {
    const char *same_site = same_site_name(st->same_site);
    cJSON *c = cJSON_CreateObject();
    bool ok = c && cJSON_AddStringToObject(c, "name", st->cookie) &&
              (!st->has_secure || cJSON_AddBoolToObject(c, "secure", st->secure)) &&
              (!st->has_http_only || cJSON_AddBoolToObject(c, "httpOnly", st->http_only)) &&
              (!same_site || cJSON_AddStringToObject(c, "sameSite", same_site));
    /* Traefik v2's CRD (both groups) has no maxAge: the API server would
     * prune it, live would never equal desired, and every resync would write
     * again. So under v2 syntax it is dropped; the cookie is then a session
     * cookie, Traefik's default. */
    if (ok && st->has_max_age && syntax != RULE_SYNTAX_V2)
        ok = cJSON_AddNumberToObject(c, "maxAge", (double)st->max_age) != NULL;
    if (!ok) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

static cJSON *traefikservice_spec(const struct model_route *r, enum rule_syntax syntax) {
    cJSON *spec = cJSON_CreateObject();
    cJSON *weighted = spec ? cJSON_AddObjectToObject(spec, "weighted") : NULL;
    cJSON *sticky = NULL;
    bool ok =
        weighted && add_weighted_services(cJSON_AddArrayToObject(weighted, "services"), r) == 0 &&
        (!r->sticky.enabled || ((sticky = cJSON_AddObjectToObject(weighted, "sticky")) != NULL &&
                                add_to(sticky, "cookie", sticky_cookie(&r->sticky, syntax)) == 0));
    if (!ok) {
        cJSON_Delete(spec);
        return NULL;
    }
    return spec;
}

cJSON *traefik_render_traefikservice(const struct model_route *r, const struct render_opts *o) {
    if (!traefik_weighted_service_wanted(r) || (r->sticky.enabled && !r->sticky.cookie))
        return NULL;
    cJSON *obj = object_new("TraefikService", r->name, r, o);
    if (!obj || add_to(obj, "spec", traefikservice_spec(r, o->syntax)) < 0) {
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

/* ---- mirroring TraefikService ------------------------------------------- */

/* The main service: the weighted TraefikService when there is one, else the
 * route's one Service (its weight means nothing alone). */
static cJSON *mirroring_spec(const struct model_route *r, enum rule_syntax syntax) {
    const struct model_mirror *m = &r->mirror;
    cJSON *spec = cJSON_CreateObject();
    cJSON *mirroring = traefik_weighted_service_wanted(r) ? traefikservice_ref(r->name)
                                                          : service_base(&r->services[0]);
    cJSON *mirrors = NULL;
    bool ok = spec && add_to(spec, "mirroring", mirroring) == 0;
    /* Traefik v2's CRD has no mirrorBody (v2 always copies the body, up to
     * maxBodySize): the API server would prune it and every resync would
     * write again, as with sticky maxAge. */
    ok = ok && (!m->has_mirror_body || syntax == RULE_SYNTAX_V2 ||
                cJSON_AddBoolToObject(mirroring, "mirrorBody", m->mirror_body));
    ok = ok && (!m->has_max_body_size ||
                cJSON_AddNumberToObject(mirroring, "maxBodySize", (double)m->max_body_size));
    ok = ok && (mirrors = cJSON_AddArrayToObject(mirroring, "mirrors")) != NULL &&
         add_item(mirrors, service_with(&m->svc, "percent", m->percent)) == 0;
    if (!ok) {
        cJSON_Delete(spec);
        return NULL;
    }
    return spec;
}

cJSON *traefik_render_mirroring(const struct model_route *r, const struct render_opts *o) {
    if (!r->owned || !r->mirror.enabled || !r->n_services)
        return NULL;
    char *name = traefik_mirror_name(r);
    cJSON *obj = name ? object_new("TraefikService", name, r, o) : NULL;
    free(name);
    if (!obj || add_to(obj, "spec", mirroring_spec(r, o->syntax)) < 0) {
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

/* ---- Middleware --------------------------------------------------------- */

/* FNV-1a: stable across runs and hosts, which a name must be. */
static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

char *traefik_shorten(const char *s, size_t max) {
    buf_t b = BUF_INIT;
    if (buf_puts(&b, s) < 0) {
        buf_free(&b);
        return NULL;
    }
    if (b.len <= max)
        return buf_steal(&b);
    /* Too long: keep a prefix, end it on an alphanumeric (a '-' or '.'
     * there would make an invalid name), and add a hash of the full name so
     * two long names that share a prefix stay distinct. */
    char hash[16];
    snprintf(hash, sizeof hash, "-%010" PRIx64, fnv1a(b.data) & (uint64_t)0xffffffffff);
    size_t keep = max > strlen(hash) ? max - strlen(hash) : 1;
    while (keep > 1 && (b.data[keep - 1] == '-' || b.data[keep - 1] == '.'))
        keep--;
    b.len = keep;
    b.data[keep] = '\0';
    if (buf_puts(&b, hash) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

/* "<route>-<rule>-<hash>", the hash (40 bits of FNV-1a) taken over the exact
 * pair "<route>/<rule>" ('/' is in neither). Unique in Kubernetes is not
 * enough: Traefik names a Middleware "<namespace>-<name>" with every run of
 * characters other than letters and digits turned into one '-', so route
 * `col` rule `x-y` and route `col-x` rule `y` (and routes `a.b` and `a-b`)
 * would be one middleware inside Traefik whatever separator we chose; the
 * hash of the exact pair keeps them apart. */
char *traefik_middleware_name(const struct model_route *r, size_t i) {
    buf_t pair = BUF_INIT, b = BUF_INIT;
    char *name = NULL;
    if (buf_printf(&pair, "%s/%s", r->name, r->rules[i].name) == 0 &&
        buf_printf(&b, "%s-%s-%010" PRIx64, r->name, r->rules[i].name,
                   fnv1a(pair.data) & (uint64_t)0xffffffffff) == 0)
        name = traefik_shorten(b.data, MODEL_NAME_MAX);
    buf_free(&pair);
    buf_free(&b);
    return name;
}

/* "<route>-mirror-<hash>", the hash over "<route>//mirror": a Middleware's
 * is over "<route>/<rule>", and a rule name is never empty, so the two
 * never share an input; distinct after Traefik's folding for the same
 * reason as the Middleware names. */
char *traefik_mirror_name(const struct model_route *r) {
    buf_t in = BUF_INIT, b = BUF_INIT;
    char *name = NULL;
    if (buf_printf(&in, "%s//mirror", r->name) == 0 &&
        buf_printf(&b, "%s-mirror-%010" PRIx64, r->name, fnv1a(in.data) & (uint64_t)0xffffffffff) ==
            0)
        name = traefik_shorten(b.data, MODEL_NAME_MAX);
    buf_free(&in);
    buf_free(&b);
    return name;
}

static cJSON *headers_map(const struct model_kv *kv, size_t n) {
    cJSON *m = cJSON_CreateObject();
    for (size_t i = 0; m && i < n; i++) {
        if (!cJSON_AddStringToObject(m, kv[i].key, kv[i].value)) {
            cJSON_Delete(m);
            return NULL;
        }
    }
    return m;
}

static int add_headers_map(cJSON *headers, const char *field, const struct model_kv *kv, size_t n) {
    return n ? add_to(headers, field, headers_map(kv, n)) : 0;
}

cJSON *traefik_render_middleware(const struct model_route *r, size_t i,
                                 const struct render_opts *o) {
    if (i >= r->n_rules || !rule_sets_headers(&r->rules[i]))
        return NULL;
    const struct model_rule *rule = &r->rules[i];
    char *name = traefik_middleware_name(r, i);
    cJSON *obj = name ? object_new("Middleware", name, r, o) : NULL;
    cJSON *spec = obj ? cJSON_AddObjectToObject(obj, "spec") : NULL;
    cJSON *headers = spec ? cJSON_AddObjectToObject(spec, "headers") : NULL;
    free(name);
    const struct model_kv *req = rule->set_request, *resp = rule->set_response;
    bool ok = headers &&
              add_headers_map(headers, "customRequestHeaders", req, rule->n_set_request) == 0 &&
              add_headers_map(headers, "customResponseHeaders", resp, rule->n_set_response) == 0;
    if (!ok) {
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

/* ---- live objects ------------------------------------------------------- */

static const cJSON *field(const cJSON *obj, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, a);
    return b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
}

static const char *string_at(const cJSON *map, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(map, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

bool traefik_is_managed(const cJSON *obj) {
    const char *v = string_at(field(obj, "metadata", "labels"), TRAEFIK_LABEL_MANAGED_BY);
    return v && !strcmp(v, TRAEFIK_MANAGER);
}

static bool same_string(const char *a, const char *b) {
    return a && b ? !strcmp(a, b) : a == b;
}

/* The child `key` of obj as an object, created when missing or not one. */
static cJSON *object_child(cJSON *obj, const char *key) {
    cJSON *c = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsObject(c))
        return c;
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    return cJSON_AddObjectToObject(obj, key);
}

/* Replace or add obj[key] = item, taking item; on failure it is freed.
 * This and the two below: 0, or -1 out of memory. */
static int put_item(cJSON *obj, const char *key, cJSON *item) {
    if (!item)
        return -1;
    bool ok = cJSON_GetObjectItemCaseSensitive(obj, key)
                  ? cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item)
                  : cJSON_AddItemToObject(obj, key, item);
    if (!ok)
        cJSON_Delete(item);
    return ok ? 0 : -1;
}

static int set_if_given(cJSON *map, const char *key, const char *value) {
    return value ? put_item(map, key, cJSON_CreateString(value)) : 0;
}

static int replace_or_add(cJSON *obj, const char *key, const cJSON *value) {
    return put_item(obj, key, cJSON_Duplicate(value, 1));
}

/* Do live and desired agree on what we own? Numbers compare by value, so a
 * live 80.0 from JSON equals our 80; objects compare regardless of order. */
static bool owned_equal(const cJSON *live, const cJSON *desired) {
    const cJSON *ld = field(live, "metadata", "annotations");
    const cJSON *dd = field(desired, "metadata", "annotations");
    return cJSON_Compare(field(live, "spec", NULL), field(desired, "spec", NULL), true) &&
           traefik_is_managed(live) &&
           same_string(string_at(ld, TRAEFIK_ANNOT_PREFIX), string_at(dd, TRAEFIK_ANNOT_PREFIX)) &&
           same_string(string_at(ld, TRAEFIK_ANNOT_SOURCE), string_at(dd, TRAEFIK_ANNOT_SOURCE)) &&
           same_string(string_at(ld, TRAEFIK_ANNOT_WEIGHTS), string_at(dd, TRAEFIK_ANNOT_WEIGHTS));
}

static int merge_metadata(cJSON *out, const cJSON *desired) {
    cJSON *md = object_child(out, "metadata");
    cJSON *labels = md ? object_child(md, "labels") : NULL;
    cJSON *ann = md ? object_child(md, "annotations") : NULL;
    const cJSON *dl = field(desired, "metadata", "labels");
    const cJSON *da = field(desired, "metadata", "annotations");
    if (!labels || !ann)
        return -1;
    for (const cJSON *c = dl ? dl->child : NULL; c; c = c->next)
        if (replace_or_add(labels, c->string, c) < 0)
            return -1;
    for (const cJSON *c = da ? da->child : NULL; c; c = c->next)
        if (replace_or_add(ann, c->string, c) < 0)
            return -1;
    const char *name = string_at(field(desired, "metadata", NULL), "name");
    const char *ns = string_at(field(desired, "metadata", NULL), "namespace");
    return set_if_given(md, "name", name) < 0 || set_if_given(md, "namespace", ns) < 0 ? -1 : 0;
}

cJSON *traefik_merge_owned(const cJSON *live, const cJSON *desired, bool *changed) {
    cJSON *out = cJSON_Duplicate(live, 1);
    const cJSON *spec = field(desired, "spec", NULL);
    bool ok = out && merge_metadata(out, desired) == 0 &&
              (!spec || replace_or_add(out, "spec", spec) == 0) &&
              set_if_given(out, "apiVersion", string_at(desired, "apiVersion")) == 0 &&
              set_if_given(out, "kind", string_at(desired, "kind")) == 0;
    if (!ok) {
        cJSON_Delete(out);
        return NULL;
    }
    *changed = !owned_equal(live, desired);
    return out;
}

/* ---- patched mode ------------------------------------------------------- */

/* Calls fn on every services[] entry named `name` in spec.routes. */
static size_t for_each_service(cJSON *routes, const char *name,
                               int (*fn)(cJSON *svc, long w, bool *changed), long w, bool *changed,
                               bool *ok) {
    size_t hits = 0;
    cJSON *route;
    cJSON_ArrayForEach(route, routes) {
        cJSON *svc;
        cJSON_ArrayForEach(svc, cJSON_GetObjectItemCaseSensitive(route, "services")) {
            if (!same_string(string_at(svc, "name"), name))
                continue;
            hits++;
            if (fn && fn(svc, w, changed) < 0)
                *ok = false;
        }
    }
    return hits;
}

/* 0, or -1 out of memory. */
static int set_weight(cJSON *svc, long w, bool *changed) {
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(svc, "weight");
    if (cJSON_IsNumber(cur) && cur->valuedouble == (double)w)
        return 0;
    *changed = true;
    return put_item(svc, "weight", cJSON_CreateNumber((double)w));
}

int traefik_apply_weights(cJSON *obj, const struct model_route *r, bool *changed, char *err,
                          size_t errlen) {
    cJSON *routes =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "spec"), "routes");
    bool ok = true;
    *changed = false;
    if (!cJSON_IsArray(routes)) {
        snprintf(err, errlen, "IngressRoute %s/%s has no spec.routes", r->ns, r->name);
        return -1;
    }
    /* Check every name first, so a bad one leaves obj untouched. */
    for (size_t i = 0; i < r->n_weights; i++) {
        if (!for_each_service(routes, r->weights[i].service, NULL, 0, changed, &ok)) {
            snprintf(err, errlen, "service '%s' is in no route of IngressRoute %s/%s",
                     r->weights[i].service, r->ns, r->name);
            return -1;
        }
    }
    for (size_t i = 0; i < r->n_weights; i++)
        for_each_service(routes, r->weights[i].service, set_weight, r->weights[i].weight, changed,
                         &ok);
    if (!ok) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}
