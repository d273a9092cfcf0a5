/* model.c - validate a route folder's keys and build struct model_route; see
 * model.h, and docs/usage.md sections 1 to 5 for the keys as users write them.
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
 *   rewriting the common RE2-only spellings; see regex_check.h.
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
 *   once) would silently turn stickiness off, so it is refused.
 * - `mirror` names its service like a route service (port, namespace under
 *   the same rule), except that without `port` it must be one of the route's
 *   own services and is taken with its port and namespace. `percent` is
 *   required: Traefik's default of 0 would configure a mirror that copies
 *   nothing. Mirroring lives in the route document, so patched mode, which
 *   has none, cannot ask for it.
 * - `abort` (model_input.abort) is an emergency brake, so as little as
 *   possible can stop it: in owned mode only the route document is read.
 *
 * The work is split by job: key.c (keys and names), weights.c (the
 * `weights` key), route.c (the `route` document), headers.c (the `headers`
 * rules), regex_check.c (the regexes in them); parse.h holds what they
 * share. This file puts the pieces together (model_build). */
#include "bridge/model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/model/parse.h"

/* ---- weights in force --------------------------------------------------- */

/* The `weights` key overrides the route document, service by service. */
static int weights_apply(struct model_route *rt, char *r) {
    for (size_t i = 0; i < rt->n_weights; i++) {
        struct model_service *svc = model_service_find(rt, rt->weights[i].service);
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
    free(r->mirror.svc.name);
    free(r->mirror.svc.ns);
    free(r->mirror.svc.port);
    model_weights_free(r->weights, r->n_weights);
    memset(r, 0, sizeof *r);
}

/* "<prefix><ns>/<name>/<leaf>: reason", then clear the half-built route. */
static enum model_build_result build_fail(const struct model_input *in, enum model_leaf leaf,
                                          const char *reason, struct model_route *out, char *err,
                                          size_t errlen) {
    snprintf(err, errlen, "%s%s/%s/%s: %s", in->prefix ? in->prefix : "", in->ns, in->name,
             model_leaf_names[leaf], reason);
    model_route_free(out);
    return MODEL_INVALID;
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

/* The abort brake: weight 100 on the first service, 0 on every other. */
static void abort_weights(struct model_route *rt) {
    for (size_t i = 0; i < rt->n_services; i++) {
        rt->services[i].weight = i == 0 ? 100 : 0;
        rt->services[i].has_weight = true;
    }
    for (size_t i = 0; i < rt->n_weights; i++)
        rt->weights[i].weight = i == 0 ? 100 : 0;
    rt->aborted = true;
}

static enum model_build_result build_owned(const struct model_input *in, struct model_route *out,
                                           char *err, size_t errlen) {
    reason_t r;
    if (model_route_parse(in->route, in->route_len, in->allow_cross_namespace, out, r) < 0)
        return build_fail(in, LEAF_ROUTE, r, out, err, errlen);
    out->route_rev = in->route_rev;
    if (in->abort) { /* neither weights nor headers are read: see model_input.abort */
        abort_weights(out);
        return MODEL_BUILT;
    }
    if (in->weights && (weights_apply(out, r) < 0 || weights_complete(out, r) < 0))
        return build_fail(in, LEAF_WEIGHTS, r, out, err, errlen);
    if (!in->weights && in->n_held)
        weights_hold(out, in);
    if (weights_all_zero(out)) {
        why(r, "every service's weight is zero (Traefik would answer 503 to every request)");
        return build_fail(in, in->weights ? LEAF_WEIGHTS : LEAF_ROUTE, r, out, err, errlen);
    }
    if (in->headers && model_headers_parse(in->headers, in->headers_len, out, r) < 0)
        return build_fail(in, LEAF_HEADERS, r, out, err, errlen);
    if (priority_room(out, r) < 0)
        return build_fail(in, LEAF_ROUTE, r, out, err, errlen);
    return MODEL_BUILT;
}

enum model_build_result model_build(const struct model_input *in, struct model_route *out,
                                    char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!in->route && !in->weights) {
        if (!in->headers)
            return MODEL_ABSENT;
        return build_fail(in, LEAF_HEADERS, "headers need a route key (owned mode)", out, err,
                          errlen);
    }
    if (!model_dns1123_label(in->ns) || !model_dns1123_subdomain(in->name))
        return build_fail(in, in->route ? LEAF_ROUTE : LEAF_WEIGHTS,
                          "namespace or name is not a valid Kubernetes name", out, err, errlen);
    out->revision = in->revision;
    out->plan_rev = in->plan_rev;
    out->owned = in->route != NULL;
    if (!(out->ns = strdup(in->ns)) || !(out->name = strdup(in->name)))
        return build_fail(in, in->route ? LEAF_ROUTE : LEAF_WEIGHTS, "out of memory", out, err,
                          errlen);
    if (in->weights && !(in->abort && in->route)) {
        char werr[sizeof(reason_t)];
        if (model_parse_weights_forced(in->weights, in->weights_len, &out->weights, &out->n_weights,
                                       &out->weights_forced, werr, sizeof werr) < 0)
            return build_fail(in, LEAF_WEIGHTS, werr, out, err, errlen);
    }
    if (!in->route) {
        if (in->headers && !in->abort)
            return build_fail(in, LEAF_HEADERS, "headers need a route key (owned mode)", out, err,
                              errlen);
        if (in->abort)
            abort_weights(out);
        return MODEL_BUILT;
    }
    return build_owned(in, out, err, errlen);
}
