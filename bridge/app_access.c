/* app_access.c - `check`: may the bridge do what it will do? It asks the API
 * server with one SelfSubjectAccessReview per verb, resource and namespace,
 * as the bridge's own user (the API server answers from its authorizer,
 * RBAC on most clusters), and prints one "ok" or "FAIL" line for each:
 *
 *   ok   create ingressroutes.traefik.io in ns shop
 *   FAIL update ingressroutes.traefik.io in ns shop: denied
 *
 * What it asks is what this configuration will use:
 *   - the three Traefik kinds the bridge writes, in the configured or
 *     discovered API group: list and watch across all namespaces (the
 *     informers watch cluster-wide); get, create and update in each
 *     namespace of reconcile.namespaces (or in all, when it is empty), and
 *     delete there too under reconcile.policy sync (a pass writes with PUT,
 *     never PATCH);
 *   - core Events (sinks/events.c posts them to /api/v1): create and patch
 *     (repeats are counted by a patch) in the same namespaces;
 *   - Services and EndpointSlices (discovery.k8s.io), list and watch in the
 *     same namespaces: the backend checks keep them in list+watch caches of
 *     the namespaces routes use (sinks/backends.c) and never GET one;
 *   - with leader_election.enabled, get, create and update of Leases
 *     (coordination.k8s.io) in leader_election.namespace;
 *   - with traefik.api.pods, list of pods and get of pods/proxy in
 *     traefik.api.pods.namespace (the Traefik pods' API, through the API
 *     server's pod proxy).
 * At most ACCESS_IN_FLIGHT reviews are in flight at once. When every review
 * is answered, the lines print in that order and `check` goes on
 * (app_oneshot_check_api_done). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/app_internal.h"

#define ACCESS_IN_FLIGHT 8
#define ACCESS_PATH "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

struct access_review {
    struct generation *g;
    const char *verb, *group, *resource; /* static strings, or the generation's */
    const char *subresource;             /* "proxy", or NULL */
    const char *ns;                      /* "" all namespaces; the config's string */
    bool answered, allowed;
    char why[512]; /* a denial's reason, or why the review failed */
};

/* 0, or -1 out of memory (with *cap grown as needed). */
static int review_add(struct generation *g, size_t *cap, const char *verb, const char *group,
                      const char *resource, const char *ns) {
    if (g->check.n_reviews == *cap) {
        size_t c = *cap ? *cap * 2 : 32;
        struct access_review *r = realloc(g->check.reviews, c * sizeof *r);
        if (!r)
            return -1;
        g->check.reviews = r;
        *cap = c;
    }
    struct access_review *r = &g->check.reviews[g->check.n_reviews++];
    memset(r, 0, sizeof *r);
    r->g = g;
    r->verb = verb;
    r->group = group;
    r->resource = resource;
    r->ns = ns;
    return 0;
}

/* What this configuration will use, in the order the lines print. */
static int plan_reviews(struct generation *g) {
    const struct config *cfg = &g->app->cfg;
    static const char *const all[] = {""};
    const char *const *nss =
        cfg->reconcile.n_namespaces ? (const char *const *)cfg->reconcile.namespaces : all;
    size_t n_ns = cfg->reconcile.n_namespaces ? cfg->reconcile.n_namespaces : 1, cap = 0;
    static const char *const cluster_verbs[] = {"list", "watch"};
    static const char *const ns_verbs[] = {"get", "create", "update", "delete"};
    size_t n_ns_verbs = cfg->reconcile.policy == POLICY_SYNC ? 4 : 3;
    for (int k = 0; k < OBJ_NKINDS; k++) {
        for (size_t v = 0; v < 2; v++)
            if (review_add(g, &cap, cluster_verbs[v], g->api_group, obj_plural[k], "") < 0)
                return -1;
        for (size_t i = 0; i < n_ns; i++)
            for (size_t v = 0; v < n_ns_verbs; v++)
                if (review_add(g, &cap, ns_verbs[v], g->api_group, obj_plural[k], nss[i]) < 0)
                    return -1;
    }
    for (size_t i = 0; i < n_ns; i++)
        if (review_add(g, &cap, "create", "", "events", nss[i]) < 0 ||
            review_add(g, &cap, "patch", "", "events", nss[i]) < 0)
            return -1;
    for (size_t i = 0; i < n_ns; i++)
        for (size_t v = 0; v < 2; v++)
            if (review_add(g, &cap, cluster_verbs[v], "", "services", nss[i]) < 0 ||
                review_add(g, &cap, cluster_verbs[v], "discovery.k8s.io", "endpointslices",
                           nss[i]) < 0)
                return -1;
    const struct lease_settings *le = &cfg->leader_election;
    for (size_t v = 0; le->enabled && v < 3; v++)
        if (review_add(g, &cap, ns_verbs[v], "coordination.k8s.io", "leases", le->namespace) < 0)
            return -1;
    const char *pods_ns = cfg->traefik.api.pods.namespace;
    if (pods_ns && (review_add(g, &cap, "list", "", "pods", pods_ns) < 0 ||
                    review_add(g, &cap, "get", "", "pods", pods_ns) < 0))
        return -1;
    if (pods_ns)
        g->check.reviews[g->check.n_reviews - 1].subresource = "proxy";
    return 0;
}

/* "update ingressroutes.traefik.io in ns shop" */
static void review_print(const struct access_review *r) {
    printf("%s %s %s%s%s%s%s in %s%s%s%s\n", r->allowed ? "ok  " : "FAIL", r->verb, r->resource,
           r->subresource ? "/" : "", r->subresource ? r->subresource : "", r->group[0] ? "." : "",
           r->group, r->ns[0] ? "ns " : "all namespaces", r->ns, r->allowed ? "" : ": ",
           r->allowed ? "" : r->why);
}

static void send_next(struct generation *g);

static void on_review(void *user, const struct kube_response *res) {
    struct access_review *r = user;
    struct generation *g = r->g;
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(res->json, "status");
    const cJSON *allowed = cJSON_GetObjectItemCaseSensitive(status, "allowed");
    r->answered = true;
    g->check.answered++;
    if ((res->status == 200 || res->status == 201) && cJSON_IsBool(allowed)) {
        const char *reason = kobj_str(status, "reason", NULL);
        const char *error = kobj_str(status, "evaluationError", NULL);
        r->allowed = cJSON_IsTrue(allowed);
        snprintf(r->why, sizeof r->why, "denied%s%s%s%s%s", reason && *reason ? " (" : "",
                 reason && *reason ? reason : "", reason && *reason ? ")" : "",
                 error && *error ? "; evaluation error: " : "", error && *error ? error : "");
    } else {
        char what[400];
        kube_response_describe(res, what, sizeof what);
        snprintf(r->why, sizeof r->why, "cannot ask the API server (SelfSubjectAccessReview): %s",
                 what);
    }
    if (g->check.answered < g->check.n_reviews) {
        send_next(g);
        return;
    }
    bool ok = true;
    for (size_t i = 0; i < g->check.n_reviews; i++) {
        review_print(&g->check.reviews[i]);
        ok &= g->check.reviews[i].allowed;
    }
    fflush(stdout);
    app_oneshot_check_api_done(g, ok);
}

/* Send the next review; on failure to start, it is answered as failed. */
static void send_next(struct generation *g) {
    if (g->check.sent >= g->check.n_reviews)
        return;
    struct access_review *r = &g->check.reviews[g->check.sent++];
    cJSON *body = cJSON_CreateObject(), *spec = NULL, *attrs = NULL;
    bool ok = body && cJSON_AddStringToObject(body, "apiVersion", "authorization.k8s.io/v1") &&
              cJSON_AddStringToObject(body, "kind", "SelfSubjectAccessReview") &&
              (spec = cJSON_AddObjectToObject(body, "spec")) &&
              (attrs = cJSON_AddObjectToObject(spec, "resourceAttributes")) &&
              cJSON_AddStringToObject(attrs, "namespace", r->ns) &&
              cJSON_AddStringToObject(attrs, "verb", r->verb) &&
              cJSON_AddStringToObject(attrs, "group", r->group) &&
              cJSON_AddStringToObject(attrs, "resource", r->resource) &&
              (!r->subresource || cJSON_AddStringToObject(attrs, "subresource", r->subresource));
    struct kube_call *call =
        ok ? kube_request_json(g->kube, "POST", ACCESS_PATH, body, on_review, r) : NULL;
    cJSON_Delete(body);
    if (!call) {
        struct kube_response res = {
            .error = "could not start the request", .reason = "", .message = "", .body = ""};
        on_review(r, &res);
    }
}

int app_access_start(struct generation *g) {
    if (plan_reviews(g) < 0) {
        printf("FAIL kubernetes: out of memory planning the access reviews\n");
        return -1;
    }
    for (int i = 0; i < ACCESS_IN_FLIGHT; i++)
        send_next(g);
    return 0;
}

void app_access_report_timeout(struct generation *g) {
    size_t missing = g->check.n_reviews - g->check.answered;
    printf("FAIL kubernetes: %zu of %zu access reviews (SelfSubjectAccessReview) not answered "
           "within %g s\n",
           missing, g->check.n_reviews, (double)app_oneshot_timeout_ms(g) / 1000);
}

void app_access_free(struct generation *g) {
    free(g->check.reviews);
    g->check.reviews = NULL;
    g->check.n_reviews = 0;
}
