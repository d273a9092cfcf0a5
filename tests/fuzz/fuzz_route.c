/* fuzz_route.c - a whole route folder: model_parse_key and model_build
 * (bridge/model/) on the `route`, `weights` and `headers` keys, then
 * everything Traefik-side that a built route feeds (sinks/traefik.c):
 * traefik_render_ingressroute and traefik_render_middleware in both rule
 * syntaxes, the YAML that `render` prints, traefik_merge_owned and
 * traefik_apply_weights.
 *
 * Input: route NUL weights NUL headers NUL key NUL options. A missing or
 * empty part is an absent key; options containing "xns" set
 * allow_cross_namespace (reconcile.allow_cross_namespace). NUL is the separator because no value
 * may contain one (value_parse refuses them), so no interesting input is lost. The key, when it
 * parses under "canary/", gives the namespace and name.
 *
 * Invariants beyond "no crash, no sanitizer report":
 *  - model_parse_key: on success ns/name are valid Kubernetes names and
 *    prefix + ns/name/leaf is exactly the key;
 *  - model_build: returns MODEL_ABSENT exactly when route, weights and
 *    headers are all absent; on error a reason naming the key and a zeroed
 *    route; on success every field obeys the model's rules (names, ports,
 *    weights 0..max and not all zero, rule services among the route's, unique names, no
 *    control characters or backticks where a rule literal would carry them);
 *  - rendering: one route per header rule plus the weighted one; every
 *    `match` free of raw control characters; each header route is exactly
 *    "(<match>) && Fn(LIT, LIT)" where both literals are well-formed Go
 *    string literals (backtick raw, or "..." with escapes) that decode to the
 *    header name and the value/regex (for cookies, the exact-cookie regex),
 *    so no value can end a literal early (the backtick quoting invariant);
 *  - the user's `match` is a self-contained expression: literals closed,
 *    parentheses balanced (else "(<match>) && header" no longer means "match
 *    AND header" and a header route can take traffic it should not);
 *  - priorities: earlier rules strictly above later ones, all above the
 *    weighted route, none 0 (Traefik's "use the rule length"), all exact
 *    in a double;
 *  - services (with their namespace only when cross-namespace is allowed),
 *    weights, middlewares and tls as the model says; a sticky route's
 *    weighted route goes through the TraefikService of its name, which
 *    carries the services, weights and exactly the cookie settings given
 *    (no maxAge under v2, whose CRD lacks it); a mirrored route's goes
 *    through the mirroring TraefikService, whose main service is that
 *    weighted one (or the route's one Service) and whose one mirror has the
 *    model's service and percent (no mirrorBody under v2);
 *  - traefik_shorten: within its limit, identity when the name fits;
 *  - Middleware per rule exactly when it sets headers, named as
 *    traefik_middleware_name says, a valid and unique object name;
 *  - the YAML `render` prints parses back to the same object;
 *  - merging a rendered object with itself, or with its JSON or YAML round
 *    trip (what the API server hands back), reports no change;
 *  - traefik_apply_weights succeeds on the rendered (non-sticky) object,
 *    sets every named service's weight, and is idempotent;
 *  - no accepted header regex is one that glibc's regcomp, which the model
 *    checks regexes with, needs excessive memory for (see regex_cost_ok in
 *    fuzz_rule_oracle.h: "a" followed by 22 '+' is 3 GB and 9 s).
 *
 * (Former known bugs match-syntax, regex-cost, emit-nonprintable and
 * emit-long-key are fixed; see regressions/route/ and regressions/value/.) */
#include "fuzz_common.h"

#include <ctype.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/value.h"
#include "bridge/model/model.h"
#include "sinks/traefik.h"

#include "fuzz_rule_oracle.h"

#define PREFIX "canary/"
#define PRIORITY_LIMIT 9007199254740992LL /* 2^53, as bridge/model/parse.h */

static const struct render_opts V3 = {"traefik.io", RULE_SYNTAX_V3, PREFIX, "etcd"};
static const struct render_opts V2 = {"traefik.containo.us", RULE_SYNTAX_V2, PREFIX, "consul"};

/* ---- header matchers (oracles: fuzz_rule_oracle.h) ----------------------- */

/* "Fn(LIT, LIT)" after "(<match>) && ", for rule `rule`. */
static void check_matcher(const char *s, const struct model_rule *rule, enum rule_syntax syn) {
    bool regexp = rule->kind == RULE_COOKIE || rule->regex;
    const char *fn = syn == RULE_SYNTAX_V2 ? (regexp ? "HeadersRegexp(" : "Headers(")
                                           : (regexp ? "HeaderRegexp(" : "Header(");
    FUZZ_CHECK(!strncmp(s, fn, strlen(fn)), "matcher '%s' does not start with %s", s, fn);
    s += strlen(fn);
    buf_t key = BUF_INIT, arg = BUF_INIT, want = BUF_INIT;
    FUZZ_CHECK(go_literal(&s, &key), "header name is not a closed Go literal in '%s'", s);
    FUZZ_CHECK(!strncmp(s, ", ", 2), "no ', ' after the header name: '%s'", s);
    s += 2;
    FUZZ_CHECK(go_literal(&s, &arg), "value is not a closed Go literal in '%s'", s);
    FUZZ_CHECK(!strcmp(s, ")"), "trailing text after the matcher: '%s'", s);
    if (rule->kind == RULE_COOKIE)
        cookie_regex(&want, rule->header, rule->value);
    else if (buf_puts(&want, rule->regex ? rule->regex : rule->value) < 0)
        abort();
    const char *k = rule->kind == RULE_COOKIE ? "Cookie" : rule->header;
    FUZZ_CHECK(key.len == strlen(k) && !memcmp(key.data, k, key.len),
               "header name decodes to '%s', want '%s'", key.data ? key.data : "", k);
    FUZZ_CHECK(arg.len == want.len && (!arg.len || !memcmp(arg.data, want.data, arg.len)),
               "value decodes to '%s', want '%s'", arg.data ? arg.data : "",
               want.data ? want.data : "");
    buf_free(&key);
    buf_free(&arg);
    buf_free(&want);
}

/* ---- the model ------------------------------------------------------------ */

static bool text_ok(const char *s, bool backtick_ok) {
    return s && !fuzz_has_control(s) && (backtick_ok || !strchr(s, '`'));
}

static const struct model_service *find_service(const struct model_route *r, const char *name) {
    for (size_t i = 0; i < r->n_services; i++)
        if (!strcmp(r->services[i].name, name))
            return &r->services[i];
    return NULL;
}

static void check_kv(const struct model_kv *kv, size_t n) {
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(kv[i].key && kv[i].key[0] && !strpbrk(kv[i].key, "`\"\\ :()"),
                   "bad header name '%s'", kv[i].key ? kv[i].key : "(null)");
        FUZZ_CHECK(text_ok(kv[i].value, false), "bad header value for '%s'", kv[i].key);
    }
}

static void check_port(const struct model_service *s) {
    FUZZ_CHECK(s->port && s->port[0], "service '%s' has no port", s->name);
    if (s->port_is_num) {
        char num[16];
        snprintf(num, sizeof num, "%ld", s->port_num);
        FUZZ_CHECK(s->port_num >= 1 && s->port_num <= 65535 && !strcmp(num, s->port),
                   "port %ld / '%s'", s->port_num, s->port);
    } else {
        FUZZ_CHECK(strlen(s->port) <= 15 &&
                       strspn(s->port, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(s->port),
                   "named port '%s'", s->port);
    }
}

/* A mirror: a valid Service name and port, a namespace only when allowed,
 * percent 0..100, maxBodySize -1..2^53; nothing at all without one. */
static void check_model_mirror(const struct model_input *in, const struct model_route *r) {
    const struct model_mirror *m = &r->mirror;
    if (!m->enabled) {
        FUZZ_CHECK(!m->svc.name && !m->svc.port && !m->svc.ns, "mirror parts without a mirror");
        return;
    }
    FUZZ_CHECK(model_dns1123_label(m->svc.name), "mirror service '%s'", m->svc.name);
    check_port(&m->svc);
    FUZZ_CHECK(!m->svc.ns || (in->allow_cross_namespace && model_dns1123_label(m->svc.ns)),
               "mirror namespace '%s'", m->svc.ns);
    FUZZ_CHECK(m->percent >= 0 && m->percent <= 100, "mirror percent %ld", m->percent);
    FUZZ_CHECK(!m->has_max_body_size ||
                   (m->max_body_size >= -1 && m->max_body_size <= MODEL_BODY_SIZE_MAX),
               "mirror maxBodySize %lld", m->max_body_size);
}

static void check_model(const struct model_route *r, const struct model_input *in) {
    FUZZ_CHECK(!strcmp(r->ns, in->ns) && !strcmp(r->name, in->name), "ns/name changed");
    FUZZ_CHECK(r->owned == (in->route != NULL), "owned %d", r->owned);
    FUZZ_CHECK(r->revision == in->revision, "revision changed");
    if (in->weights) {
        FUZZ_CHECK(r->n_weights >= 1, "weights key but no weights");
        for (size_t i = 0; i < r->n_weights; i++) {
            FUZZ_CHECK(r->weights[i].weight >= 0 && r->weights[i].weight <= MODEL_WEIGHT_MAX,
                       "weight %ld", r->weights[i].weight);
            FUZZ_CHECK(model_dns1123_label(r->weights[i].service), "weights service '%s'",
                       r->weights[i].service);
        }
    } else {
        FUZZ_CHECK(r->n_weights == 0 && !r->weights, "weights without a weights key");
    }
    if (!r->owned) {
        FUZZ_CHECK(!r->match && !r->n_services && !r->n_rules, "patched route with owned parts");
        return;
    }
    FUZZ_CHECK(r->match && r->match[0] && !fuzz_has_control(r->match), "bad match");
    FUZZ_CHECK(r->n_services >= 1, "no services");
    bool positive = false;
    for (size_t i = 0; i < r->n_services; i++) {
        const struct model_service *s = &r->services[i];
        FUZZ_CHECK(model_dns1123_label(s->name), "service name '%s'", s->name);
        FUZZ_CHECK(find_service(r, s->name) == s, "service '%s' twice", s->name);
        check_port(s);
        FUZZ_CHECK(s->weight >= 0 && s->weight <= MODEL_WEIGHT_MAX, "weight %ld", s->weight);
        FUZZ_CHECK(!s->ns || (in->allow_cross_namespace && model_dns1123_label(s->ns)),
                   "service '%s' has namespace '%s' (cross-namespace allowed: %d)", s->name, s->ns,
                   in->allow_cross_namespace);
        positive |= s->weight > 0;
    }
    FUZZ_CHECK(positive, "every service weight is zero");
    check_model_mirror(in, r);
    for (size_t i = 0; i < r->n_weights; i++) {
        const struct model_service *s = find_service(r, r->weights[i].service);
        FUZZ_CHECK(s && s->weight == r->weights[i].weight && s->has_weight,
                   "weights key not applied to '%s'", r->weights[i].service);
    }
    for (size_t i = 0; i < r->n_entry_points; i++)
        FUZZ_CHECK(r->entry_points[i][0] && text_ok(r->entry_points[i], true) &&
                       !strchr(r->entry_points[i], ' '),
                   "entry point %zu", i);
    for (size_t i = 0; i < r->n_middlewares; i++)
        FUZZ_CHECK(model_dns1123_subdomain(r->middlewares[i]), "middleware '%s'",
                   r->middlewares[i]);
    FUZZ_CHECK(!r->tls || cJSON_IsObject(r->tls), "tls is not a mapping");
    const struct model_sticky *st = &r->sticky;
    if (st->enabled)
        FUZZ_CHECK(st->cookie && st->cookie[0] && !strpbrk(st->cookie, "`\"\\ ;=,()") &&
                       !fuzz_has_control(st->cookie) && st->same_site >= SAME_SITE_UNSET &&
                       st->same_site <= SAME_SITE_STRICT &&
                       (!st->has_max_age || (st->max_age >= 0 && st->max_age <= MODEL_MAX_AGE_MAX)),
                   "sticky settings");
    else
        FUZZ_CHECK(!st->cookie, "sticky cookie without sticky");
    if (r->has_priority)
        FUZZ_CHECK(r->priority >= -PRIORITY_LIMIT &&
                       r->priority + (long long)r->n_rules + 1 <= PRIORITY_LIMIT,
                   "priority %lld with %zu rules", r->priority, r->n_rules);
    for (size_t i = 0; i < r->n_rules; i++) {
        const struct model_rule *u = &r->rules[i];
        FUZZ_CHECK(model_dns1123_label(u->name), "rule name '%s'", u->name);
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(u->name, r->rules[j].name) != 0, "rule name '%s' twice", u->name);
        FUZZ_CHECK(u->header && u->header[0] && !strpbrk(u->header, "`\"\\ ;=,()"),
                   "rule header '%s'", u->header ? u->header : "(null)");
        if (u->kind == RULE_COOKIE)
            FUZZ_CHECK(u->value && !u->regex, "cookie rule needs value only");
        else
            FUZZ_CHECK(!u->value != !u->regex, "header rule needs value xor regex");
        FUZZ_CHECK(!u->value || text_ok(u->value, false), "rule value");
        FUZZ_CHECK(!u->regex || (u->regex[0] && text_ok(u->regex, false)), "rule regex");
        FUZZ_CHECK(!u->regex || regex_cost_ok(u->regex),
                   "the model accepted the regex '%s': nested repetitions, a count over 1000 or "
                   "a huge expansion, which costs glibc regcomp (the model's checker) time and "
                   "memory far beyond the value's size",
                   u->regex);
        FUZZ_CHECK(u->service && find_service(r, u->service), "rule service '%s'",
                   u->service ? u->service : "(null)");
        check_kv(u->set_request, u->n_set_request);
        check_kv(u->set_response, u->n_set_response);
    }
}

/* ---- rendered objects ----------------------------------------------------- */

static const char *str_at(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static const cJSON *at_path(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    return b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
}

static bool same(const char *a, const char *b) {
    return a && b && !strcmp(a, b);
}

static void check_metadata(const cJSON *obj, const char *kind, const char *name,
                           const struct model_route *r, const struct render_opts *o) {
    char api[128];
    snprintf(api, sizeof api, "%s/v1alpha1", o->api_group);
    FUZZ_CHECK(same(str_at(obj, "apiVersion", NULL), api), "apiVersion");
    FUZZ_CHECK(same(str_at(obj, "kind", NULL), kind), "kind");
    FUZZ_CHECK(same(str_at(obj, "metadata", "name"), name), "metadata.name");
    FUZZ_CHECK(same(str_at(obj, "metadata", "namespace"), r->ns), "metadata.namespace");
    FUZZ_CHECK(traefik_is_managed(obj), "rendered object lacks the managed-by label");
}

/* A rendered list of services against the model: all of the route's with
 * their weights, or (only != NULL) that one service with weight 1. */
static void check_service_list(const cJSON *svcs, const struct model_route *r, const char *only) {
    FUZZ_CHECK(cJSON_IsArray(svcs), "no list of services");
    size_t n = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, svcs) {
        const char *name = str_at(s, "name", NULL);
        const struct model_service *m = only ? find_service(r, only) : &r->services[n];
        FUZZ_CHECK(n < (only ? 1 : r->n_services) && m && same(name, m->name),
                   "service %zu is '%s'", n, name ? name : "(null)");
        const char *ns = str_at(s, "namespace", NULL);
        FUZZ_CHECK(m->ns ? same(ns, m->ns) : !cJSON_GetObjectItemCaseSensitive(s, "namespace"),
                   "namespace of '%s'", m->name);
        const cJSON *port = cJSON_GetObjectItemCaseSensitive(s, "port");
        if (m->port_is_num)
            FUZZ_CHECK(cJSON_IsNumber(port) && port->valuedouble == (double)m->port_num, "port");
        else
            FUZZ_CHECK(cJSON_IsString(port) && same(port->valuestring, m->port), "named port");
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(s, "weight");
        FUZZ_CHECK(cJSON_IsNumber(w) && w->valuedouble == (only ? 1.0 : (double)m->weight),
                   "weight of '%s'", m->name);
        n++;
    }
    FUZZ_CHECK(n == (only ? 1 : r->n_services), "%zu services rendered", n);
}

/* The services of one rendered route: a mirrored route's weighted route
 * goes through the mirroring TraefikService instead, and a sticky one (or a
 * mirrored one with several services) otherwise through the TraefikService
 * of the route's name. */
static void check_services(const cJSON *route, const struct model_route *r, const char *only) {
    const cJSON *svcs = cJSON_GetObjectItemCaseSensitive(route, "services");
    if (only || (!r->mirror.enabled && !traefik_weighted_service_wanted(r))) {
        FUZZ_CHECK(!traefik_weighted_service_wanted(r) || only, "sticky route rendered inline");
        check_service_list(svcs, r, only);
        return;
    }
    char *mirror = r->mirror.enabled ? traefik_mirror_name(r) : NULL;
    const char *want = r->mirror.enabled ? mirror : r->name;
    const cJSON *ts = cJSON_GetArrayItem(svcs, 0);
    FUZZ_CHECK(want && cJSON_GetArraySize(svcs) == 1 && same(str_at(ts, "name", NULL), want) &&
                   same(str_at(ts, "kind", NULL), "TraefikService"),
               "weighted route does not go through TraefikService '%s'", want ? want : "(oom)");
    free(mirror);
}

static void check_route_middlewares(const cJSON *route, const struct model_route *r,
                                    const char *own) {
    const cJSON *mws = cJSON_GetObjectItemCaseSensitive(route, "middlewares");
    size_t want = r->n_middlewares + (own ? 1 : 0), n = 0;
    FUZZ_CHECK(want ? cJSON_IsArray(mws) : !mws, "middlewares present: %d", mws != NULL);
    const cJSON *m;
    cJSON_ArrayForEach(m, mws) {
        const char *name = str_at(m, "name", NULL);
        const char *expect = n < r->n_middlewares ? r->middlewares[n] : own;
        FUZZ_CHECK(n < want && same(name, expect), "middleware %zu is '%s'", n,
                   name ? name : "(null)");
        n++;
    }
    FUZZ_CHECK(n == want, "%zu middlewares rendered, want %zu", n, want);
}

static long long priority_of(const cJSON *route) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(route, "priority");
    FUZZ_CHECK(cJSON_IsNumber(p), "route without a priority");
    double d = p->valuedouble;
    FUZZ_CHECK(d >= -(double)PRIORITY_LIMIT && d <= (double)PRIORITY_LIMIT && d == (long long)d,
               "priority %g is not an exact integer", d);
    return (long long)d;
}

static void check_ingressroute(const cJSON *ir, const struct model_route *r,
                               const struct render_opts *o) {
    FUZZ_CHECK(ir, "traefik_render_ingressroute returned NULL");
    check_metadata(ir, "IngressRoute", r->name, r, o);
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(ir, "spec");
    const cJSON *routes = cJSON_GetObjectItemCaseSensitive(spec, "routes");
    FUZZ_CHECK(cJSON_IsArray(routes) && (size_t)cJSON_GetArraySize(routes) == r->n_rules + 1,
               "want %zu routes", r->n_rules + 1);
    const cJSON *tls = cJSON_GetObjectItemCaseSensitive(spec, "tls");
    FUZZ_CHECK(r->tls ? fuzz_json_equal(tls, r->tls) : !tls, "tls");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(spec, "entryPoints");
    FUZZ_CHECK(r->n_entry_points ? (size_t)cJSON_GetArraySize(eps) == r->n_entry_points : !eps,
               "entryPoints");

    size_t mlen = strlen(r->match), i = 0;
    long long prev = 0;
    const cJSON *route;
    cJSON_ArrayForEach(route, routes) {
        const char *match = str_at(route, "match", NULL);
        FUZZ_CHECK(same(str_at(route, "kind", NULL), "Rule"), "route kind");
        FUZZ_CHECK(match && !fuzz_has_control(match), "match has a raw control character");
        long long prio = priority_of(route);
        FUZZ_CHECK(i == 0 || prio < prev, "priority %lld of route %zu not below %lld", prio, i,
                   prev);
        prev = prio;
        if (i == r->n_rules) { /* the weighted route */
            FUZZ_CHECK(!strcmp(match, r->match), "weighted route match changed");
            FUZZ_CHECK(prio != 0, "weighted route has priority 0");
            if (r->has_priority && r->priority != 0)
                FUZZ_CHECK(prio == r->priority, "route priority not kept");
            check_services(route, r, NULL);
            check_route_middlewares(route, r, NULL);
            break;
        }
        const struct model_rule *u = &r->rules[i];
        FUZZ_CHECK(prio != 0, "header route %zu has priority 0", i);
        FUZZ_CHECK(match[0] == '(' && !strncmp(match + 1, r->match, mlen) &&
                       !strncmp(match + 1 + mlen, ") && ", 5),
                   "header route %zu is not (<match>) && ...: %s", i, match);
        check_matcher(match + 1 + mlen + 5, u, o->syntax);
        char *own = u->n_set_request || u->n_set_response ? traefik_middleware_name(r, i) : NULL;
        check_services(route, r, u->service);
        check_route_middlewares(route, r, own);
        free(own);
        i++;
    }
    FUZZ_CHECK(expression_closed(r->match),
               "the model accepted a match that is not a closed expression "
               "(unbalanced parentheses or an unclosed literal): %s",
               r->match);
}

static void check_middlewares(const struct model_route *r, const struct render_opts *o) {
    char **names = calloc(r->n_rules + 1, sizeof *names);
    if (!names)
        abort();
    for (size_t i = 0; i < r->n_rules; i++) {
        const struct model_rule *u = &r->rules[i];
        cJSON *mw = traefik_render_middleware(r, i, o);
        bool sets = u->n_set_request || u->n_set_response;
        FUZZ_CHECK(sets == (mw != NULL), "Middleware for rule %zu: %d", i, mw != NULL);
        if (!mw)
            continue;
        names[i] = traefik_middleware_name(r, i);
        FUZZ_CHECK(names[i] && model_dns1123_subdomain(names[i]),
                   "Middleware name '%s' is not a valid object name", names[i]);
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(!names[j] || strcmp(names[i], names[j]) != 0,
                       "rules %zu and %zu share Middleware '%s'", j, i, names[i]);
        check_metadata(mw, "Middleware", names[i], r, o);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(mw, "spec"), "headers");
        const struct model_kv *kvs[2] = {u->set_request, u->set_response};
        size_t ns[2] = {u->n_set_request, u->n_set_response};
        const char *fields[2] = {"customRequestHeaders", "customResponseHeaders"};
        for (int k = 0; k < 2; k++) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(h, fields[k]);
            FUZZ_CHECK(ns[k] ? cJSON_GetArraySize(m) == (int)ns[k] : !m, "%s", fields[k]);
            for (size_t j = 0; j < ns[k]; j++)
                FUZZ_CHECK(same(str_at(m, kvs[k][j].key, NULL), kvs[k][j].value), "%s.%s",
                           fields[k], kvs[k][j].key);
        }
        cJSON_Delete(mw);
    }
    for (size_t i = 0; i < r->n_rules; i++)
        free(names[i]);
    free(names);
}

/* What the API server would hand back must merge as "no change". */
static void check_no_change(const cJSON *live, const cJSON *desired, const char *what) {
    bool changed = true;
    cJSON *merged = traefik_merge_owned(live, desired, &changed);
    FUZZ_CHECK(merged, "traefik_merge_owned returned NULL (%s)", what);
    FUZZ_CHECK(!changed, "merge of the %s reports a change", what);
    FUZZ_CHECK(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(merged, "spec"),
                             cJSON_GetObjectItemCaseSensitive(desired, "spec"), true),
               "merge lost the desired spec (%s)", what);
    cJSON_Delete(merged);
}

static void check_round_trips(const cJSON *ir) {
    check_no_change(ir, ir, "object itself");

    char *json = cJSON_PrintUnformatted(ir);
    cJSON *live = json ? cJSON_Parse(json) : NULL;
    FUZZ_CHECK(live, "rendered object does not survive cJSON print/parse");
    check_no_change(live, ir, "JSON round trip");
    cJSON_Delete(live);
    free(json);

    buf_t y = BUF_INIT;
    char err[256];
    FUZZ_CHECK(value_emit_yaml(ir, &y, 1) == 0, "emit failed");
    cJSON *back = value_parse(y.data, y.len, err, sizeof err);
    FUZZ_CHECK(back, "rendered YAML does not parse back (%s):\n%s", err, y.data);
    FUZZ_CHECK(fuzz_json_equal(ir, back), "rendered YAML reads back differently:\n%s", y.data);
    check_no_change(back, ir, "YAML round trip");
    cJSON_Delete(back);
    buf_free(&y);
}

static void check_apply_weights(const cJSON *ir, const struct model_route *r) {
    /* A sticky or mirrored route keeps its services in a TraefikService, not
     * in the IngressRoute; apply_weights (patched mode) never sees such an
     * object. */
    if (!r->n_weights || r->sticky.enabled || r->mirror.enabled)
        return;
    cJSON *obj = cJSON_Duplicate(ir, 1);
    char err[256];
    bool changed;
    FUZZ_CHECK(obj && traefik_apply_weights(obj, r, &changed, err, sizeof err) == 0,
               "apply_weights on the rendered object: %s", err);
    const cJSON *route;
    cJSON_ArrayForEach(route, cJSON_GetObjectItemCaseSensitive(
                                  cJSON_GetObjectItemCaseSensitive(obj, "spec"), "routes")) {
        const cJSON *s;
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(route, "services")) {
            for (size_t i = 0; i < r->n_weights; i++) {
                if (!same(str_at(s, "name", NULL), r->weights[i].service))
                    continue;
                const cJSON *w = cJSON_GetObjectItemCaseSensitive(s, "weight");
                FUZZ_CHECK(cJSON_IsNumber(w) && w->valuedouble == (double)r->weights[i].weight,
                           "weight of '%s' not applied", r->weights[i].service);
            }
        }
    }
    FUZZ_CHECK(traefik_apply_weights(obj, r, &changed, err, sizeof err) == 0 && !changed,
               "apply_weights is not idempotent");
    cJSON_Delete(obj);
}

static void check_bool(const cJSON *c, const char *field, bool has, bool value) {
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(c, field);
    FUZZ_CHECK(has ? cJSON_IsBool(b) && cJSON_IsTrue(b) == value : !b, "sticky cookie %s", field);
}

static void check_traefikservice(const struct model_route *r, const struct render_opts *o) {
    static const char *const same_site[] = {NULL, "none", "lax", "strict"};
    cJSON *ts = traefik_render_traefikservice(r, o);
    FUZZ_CHECK(traefik_weighted_service_wanted(r) == (ts != NULL), "TraefikService rendered: %d",
               ts != NULL);
    FUZZ_CHECK(traefik_weighted_service_wanted(r) ==
                   (r->sticky.enabled || (r->mirror.enabled && r->n_services > 1)),
               "weighted TraefikService wanted");
    if (!ts)
        return;
    const struct model_sticky *st = &r->sticky;
    check_metadata(ts, "TraefikService", r->name, r, o);
    const cJSON *w = at_path(ts, "spec", "weighted");
    check_service_list(cJSON_GetObjectItemCaseSensitive(w, "services"), r, NULL);
    FUZZ_CHECK(r->sticky.enabled == (cJSON_GetObjectItemCaseSensitive(w, "sticky") != NULL),
               "sticky block present: %d", !r->sticky.enabled);
    if (!r->sticky.enabled) {
        check_round_trips(ts);
        cJSON_Delete(ts);
        return;
    }
    const cJSON *c = at_path(cJSON_GetObjectItemCaseSensitive(w, "sticky"), "cookie", NULL);
    FUZZ_CHECK(same(str_at(c, "name", NULL), st->cookie), "sticky cookie name");
    check_bool(c, "secure", st->has_secure, st->secure);
    check_bool(c, "httpOnly", st->has_http_only, st->http_only);
    const char *ss = same_site[st->same_site];
    FUZZ_CHECK(ss ? same(str_at(c, "sameSite", NULL), ss)
                  : !cJSON_GetObjectItemCaseSensitive(c, "sameSite"),
               "sticky cookie sameSite");
    /* Traefik v2's CRD has no maxAge: leaving it out keeps live == desired. */
    const cJSON *ma = cJSON_GetObjectItemCaseSensitive(c, "maxAge");
    FUZZ_CHECK(st->has_max_age && o->syntax != RULE_SYNTAX_V2
                   ? cJSON_IsNumber(ma) && ma->valuedouble == (double)st->max_age
                   : !ma,
               "sticky cookie maxAge");
    check_round_trips(ts);
    cJSON_Delete(ts);
}

/* traefik_shorten on the route's name, as label values (63) and object
 * names (253) get it: short enough, unchanged when it fits, else a prefix
 * ending on an alphanumeric, '-' and 10 hex digits. */
static void check_shorten(const char *s, size_t max) {
    char *t = traefik_shorten(s, max);
    size_t n = strlen(s), tn = t ? strlen(t) : 0;
    FUZZ_CHECK(t && tn <= max, "shorten('%s', %zu) is %zu bytes", s, max, tn);
    if (n <= max) {
        FUZZ_CHECK(!strcmp(t, s), "shorten changed '%s', which fits", s);
    } else {
        FUZZ_CHECK(tn > 11 && t[tn - 11] == '-' && strspn(t + tn - 10, "0123456789abcdef") == 10 &&
                       !strncmp(t, s, tn - 11) && isalnum((unsigned char)t[tn - 12]),
                   "shorten('%s', %zu) = '%s'", s, max, t);
    }
    free(t);
}

/* The mirroring TraefikService: exactly when mirrored, named as
 * traefik_mirror_name says; its main service the weighted TraefikService or
 * the route's one Service; one mirror with the model's service and percent;
 * body options only when given (no mirrorBody under v2, whose CRD lacks it). */
static void check_mirroring(const struct model_route *r, const struct render_opts *o) {
    cJSON *ms = traefik_render_mirroring(r, o);
    FUZZ_CHECK(r->mirror.enabled == (ms != NULL), "mirroring rendered: %d", ms != NULL);
    if (!ms)
        return;
    const struct model_mirror *m = &r->mirror;
    char *name = traefik_mirror_name(r);
    FUZZ_CHECK(name && model_dns1123_subdomain(name) && strcmp(name, r->name) != 0,
               "mirror name '%s'", name ? name : "(oom)");
    check_metadata(ms, "TraefikService", name, r, o);
    free(name);
    const cJSON *mr = at_path(ms, "spec", "mirroring");
    if (traefik_weighted_service_wanted(r))
        FUZZ_CHECK(same(str_at(mr, "name", NULL), r->name) &&
                       same(str_at(mr, "kind", NULL), "TraefikService") &&
                       !cJSON_GetObjectItemCaseSensitive(mr, "port"),
                   "mirroring main is not the weighted TraefikService");
    else
        FUZZ_CHECK(r->n_services == 1 && same(str_at(mr, "name", NULL), r->services[0].name) &&
                       !cJSON_GetObjectItemCaseSensitive(mr, "kind") &&
                       cJSON_GetObjectItemCaseSensitive(mr, "port"),
                   "mirroring main is not the route's one Service");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(mr, "mirrorBody");
    FUZZ_CHECK(m->has_mirror_body && o->syntax != RULE_SYNTAX_V2
                   ? cJSON_IsBool(b) && cJSON_IsTrue(b) == m->mirror_body
                   : !b,
               "mirrorBody");
    const cJSON *mb = cJSON_GetObjectItemCaseSensitive(mr, "maxBodySize");
    FUZZ_CHECK(m->has_max_body_size
                   ? cJSON_IsNumber(mb) && mb->valuedouble == (double)m->max_body_size
                   : !mb,
               "maxBodySize");
    const cJSON *mirrors = cJSON_GetObjectItemCaseSensitive(mr, "mirrors");
    const cJSON *one = cJSON_GetArrayItem(mirrors, 0);
    const cJSON *pct = cJSON_GetObjectItemCaseSensitive(one, "percent");
    FUZZ_CHECK(cJSON_GetArraySize(mirrors) == 1 && same(str_at(one, "name", NULL), m->svc.name) &&
                   (m->svc.ns ? same(str_at(one, "namespace", NULL), m->svc.ns)
                              : !cJSON_GetObjectItemCaseSensitive(one, "namespace")) &&
                   cJSON_IsNumber(pct) && pct->valuedouble == (double)m->percent,
               "mirrors");
    check_round_trips(ms);
    cJSON_Delete(ms);
}

static void render_all(const struct model_route *r, const struct render_opts *o) {
    cJSON *ir = traefik_render_ingressroute(r, o);
    check_ingressroute(ir, r, o);
    check_middlewares(r, o);
    check_traefikservice(r, o);
    check_mirroring(r, o);
    check_round_trips(ir);
    check_apply_weights(ir, r);
    cJSON_Delete(ir);
}

/* ---- entry ------------------------------------------------------------------ */

static const char *part(const uint8_t **p, const uint8_t *end, size_t *len) {
    const uint8_t *s = *p;
    if (s >= end) {
        *len = 0;
        return NULL;
    }
    const uint8_t *nul = memchr(s, '\0', (size_t)(end - s));
    const uint8_t *stop = nul ? nul : end;
    *len = (size_t)(stop - s);
    *p = nul ? nul + 1 : end;
    return *len ? (const char *)s : NULL;
}

static void check_key(const char *key, char *ns, char *name) {
    static const char *const leaves[] = {"route", "weights", "headers", "status"};
    enum model_leaf leaf;
    char err[256];
    if (model_parse_key(PREFIX, key, ns, name, &leaf, err, sizeof err) != 0) {
        FUZZ_CHECK(err[0], "model_parse_key failed without a reason");
        strcpy(ns, "shop");
        strcpy(name, "web");
        return;
    }
    FUZZ_CHECK(model_dns1123_label(ns) && model_dns1123_subdomain(name), "key gave '%s'/'%s'", ns,
               name);
    FUZZ_CHECK((unsigned)leaf < 4, "leaf %d", (int)leaf);
    char whole[MODEL_NS_MAX + MODEL_NAME_MAX + 32];
    snprintf(whole, sizeof whole, "%s%s/%s/%s", PREFIX, ns, name, leaves[leaf]);
    FUZZ_CHECK(!strcmp(whole, key), "key '%s' parsed as '%s'", key, whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *p = data, *end = data + size;
    struct model_input in = {.prefix = PREFIX, .revision = 42};
    in.route = part(&p, end, &in.route_len);
    in.weights = part(&p, end, &in.weights_len);
    in.headers = part(&p, end, &in.headers_len);
    size_t klen;
    const char *k = part(&p, end, &klen);
    size_t olen;
    const char *opts = part(&p, end, &olen);
    in.allow_cross_namespace = opts && memmem(opts, olen, "xns", 3);
    char *key = fuzz_strndup((const uint8_t *)(k ? k : ""), klen);
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1];
    check_key(key, ns, name);
    free(key);
    in.ns = ns;
    in.name = name;

    struct model_route r, zero;
    memset(&zero, 0, sizeof zero);
    char err[1024] = "";
    int rc = model_build(&in, &r, err, sizeof err);
    FUZZ_CHECK(rc >= -1 && rc <= 1, "rc %d", rc);
    FUZZ_CHECK((rc == MODEL_ABSENT) == (!in.route && !in.weights && !in.headers), "rc %d", rc);
    if (rc != 0) {
        FUZZ_CHECK(!memcmp(&r, &zero, sizeof r), "route not zeroed after rc %d", rc);
        if (rc < 0)
            FUZZ_CHECK(!strncmp(err, PREFIX, strlen(PREFIX)), "error does not name the key: %s",
                       err);
        return 0;
    }
    check_model(&r, &in);
    check_shorten(r.name, 63);
    check_shorten(r.name, MODEL_NAME_MAX);
    if (r.owned) {
        render_all(&r, &V3);
        render_all(&r, &V2);
    } else {
        FUZZ_CHECK(!traefik_render_ingressroute(&r, &V3), "patched route rendered");
    }
    model_route_free(&r);
    FUZZ_CHECK(!memcmp(&r, &zero, sizeof r), "model_route_free did not zero");
    return 0;
}
