/* test_reconcile_backends.c - the reconciler's backend checks
 * (bridge/core/reconcile_backends.c) with the key cache, the informers and
 * the backends module, against the Kubernetes API test server.
 *
 * The rig is test_reconcile.c's plus what the app adds for the checks: a
 * struct backends whose change callback is reconciler_backends_changed, the
 * TraefikService informer for references, and hooks that record what a
 * person would see (status, Events, the unready gauge). The server runs no
 * controllers: the tests write Services and EndpointSlices themselves. Each
 * test has its own namespace; shop-v1 always serves.
 *
 * Run from tests/ (meson's workdir) or the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/keycache.h"
#include "bridge/core/reconcile.h"
#include "kapi.h"
#include "sinks/backends.h"
#include "sinks/informer.h"
#include "sinks/traefik.h"

#define GROUP "traefik.io"
#define ROUTE_DOC(port2)                                                                           \
    "match: Host(`shop.example.com`)\n"                                                            \
    "services:\n"                                                                                  \
    "  - name: shop-v1\n"                                                                          \
    "    port: 80\n"                                                                               \
    "  - name: shop-v2\n"                                                                          \
    "    port: " port2 "\n"
#define WAIT_MS 10000

#define HTTP80 "[{\"name\":\"http\",\"port\":80}]"
#define PLAIN80 "[{\"port\":80}]"
#define EP_HTTP "[{\"name\":\"http\",\"port\":8080}]"
#define EP_PLAIN "[{\"port\":8080}]"
#define READY "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":true}}]"
#define NOT_READY "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":false}}]"

/* ---- the rig ---- */

struct rig {
    struct kapi *k;
    struct logger log;
    struct kube_client *kc;
    struct informer inf[OBJ_NKINDS];
    struct keycache keys;
    struct reconciler rec;
    struct backends b;
    bool b_closed;
    struct reconcile_settings cfg;
    char ns[64];
    char prefix[80];
    uint64_t rev;
    bool started;
    /* What the hooks saw. */
    char events[32][96]; /* "<Reason> <object name>" */
    size_t n_events;
    char event_msg[1024];
    char unready[8][128]; /* "<route id> <service>" reported unready now */
    size_t n_unready;
};

static void hook_event(void *user, const cJSON *obj, const char *type, const char *reason,
                       const char *message) {
    struct rig *r = user;
    (void)type;
    if (r->n_events < sizeof r->events / sizeof *r->events)
        snprintf(r->events[r->n_events++], sizeof r->events[0], "%s %s", reason,
                 kobj_str(obj, "metadata", "name"));
    snprintf(r->event_msg, sizeof r->event_msg, "%s", message);
}

static void hook_backend(void *user, const char *route_id, const char *service, bool unready) {
    struct rig *r = user;
    char what[128];
    snprintf(what, sizeof what, "%s %s", route_id, service);
    for (size_t i = 0; i < r->n_unready; i++) {
        if (strcmp(r->unready[i], what) == 0) {
            if (!unready)
                memcpy(r->unready[i], r->unready[--r->n_unready], sizeof r->unready[0]);
            return;
        }
    }
    if (unready && r->n_unready < sizeof r->unready / sizeof *r->unready)
        snprintf(r->unready[r->n_unready++], sizeof r->unready[0], "%s", what);
}

static size_t events_with(const struct rig *r, const char *reason) {
    size_t n = 0, len = strlen(reason);
    for (size_t i = 0; i < r->n_events; i++)
        n += strncmp(r->events[i], reason, len) == 0 && r->events[i][len] == ' ';
    return n;
}

static bool all_synced(void *arg) {
    struct rig *r = arg;
    for (int i = 0; i < OBJ_NKINDS; i++)
        if (!r->inf[i].synced)
            return false;
    return true;
}

static int rig_setup(void **state) {
    struct kapi *k = *state;
    struct rig *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->k = k;
    logger_init(&r->log, LOG_LVL_WARN);
    r->log.out = stderr;
    r->cfg.policy = POLICY_UPSERT_ONLY;
    r->cfg.max_in_flight = 16;
    r->cfg.burst_quiet_ms = 30;
    r->cfg.max_delete_percent = 50;
    r->cfg.require_ready_endpoints = true;
    k->data = r;
    return 0;
}

static void on_key(void *user, const char *route_id) {
    reconciler_source_changed(&((struct rig *)user)->rec, route_id, true);
}

static void kput(struct kapi *k, const char *coll, const char *name, const char *body) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s", coll, name);
    long status;
    cJSON_Delete(kapi_ctl(k, "PUT", path, body, &status));
    if (status == 404)
        kapi_ctl_ok(k, "POST", coll, body);
    else
        assert_int_equal(status, 200);
}

/* Service name in the test's namespace: ports a JSON array; more spec
 * fields (JSON members) in extra, or NULL. */
static void service(struct rig *r, const char *name, const char *ports, const char *extra) {
    char coll[200], body[1000];
    snprintf(coll, sizeof coll, "/api/v1/namespaces/%s/services", r->ns);
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"%s\"},\"spec\":{\"ports\":%s%s%s}}",
             name, r->ns, ports, extra ? "," : "", extra ? extra : "");
    kput(r->k, coll, name, body);
}

/* The EndpointSlice "<svc>-1" of Service svc. */
static void slice(struct rig *r, const char *svc, const char *ports, const char *endpoints) {
    char coll[200], body[2000], name[128];
    snprintf(coll, sizeof coll, "/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices", r->ns);
    snprintf(name, sizeof name, "%s-1", svc);
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\",\"metadata\":{"
             "\"name\":\"%s\",\"namespace\":\"%s\",\"labels\":{\"kubernetes.io/service-name\":"
             "\"%s\"}},\"addressType\":\"IPv4\",\"ports\":%s,\"endpoints\":%s}",
             name, r->ns, svc, ports, endpoints);
    kput(r->k, coll, name, body);
}

/* Start everything for namespace ns (created here) with shop-v1 serving. */
static void rig_start(struct rig *r, const char *ns) {
    static const informer_change_cb changed[OBJ_NKINDS] = {reconciler_middleware_changed,
                                                           reconciler_traefikservice_changed,
                                                           reconciler_ingressroute_changed};
    snprintf(r->ns, sizeof r->ns, "%s", ns);
    snprintf(r->prefix, sizeof r->prefix, "canary-%s/", ns);
    char body[200];
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"%s\"}}", ns);
    kapi_ctl_ok(r->k, "POST", "/api/v1/namespaces", body);
    service(r, "shop-v1", PLAIN80, NULL);
    slice(r, "shop-v1", EP_PLAIN, READY);
    r->kc = kapi_client_new(r->k, false);
    assert_non_null(r->kc);
    assert_int_equal(kube_client_set_field_manager(r->kc, "canary-bridge"), 0);
    assert_int_equal(keycache_init(&r->keys, r->prefix, &r->log), 0);
    struct informer *infs[OBJ_NKINDS];
    for (int i = 0; i < OBJ_NKINDS; i++) {
        assert_int_equal(informer_init(&r->inf[i], &r->k->loop, r->kc, &r->log, GROUP, "v1alpha1",
                                       obj_plural[i], changed[i], NULL, &r->rec),
                         0);
        infs[i] = &r->inf[i];
    }
    struct render_opts ro = {GROUP, RULE_SYNTAX_V3, r->prefix, "etcd"};
    assert_int_equal(
        reconciler_init(&r->rec, &r->k->loop, &r->log, &r->cfg, &r->keys, r->kc, infs, &ro), 0);
    r->rec.field_manager = "canary-bridge";
    r->rec.hooks =
        (struct reconcile_hooks){.event = hook_event, .backend = hook_backend, .user = r};
    assert_int_equal(backends_init(&r->b, &r->k->loop, r->kc, &r->log, false,
                                   reconciler_backends_changed, &r->rec),
                     0);
    backends_set_traefikservices(&r->b, &r->inf[OBJ_TRAEFIKSERVICE]);
    r->rec.backends = &r->b;
    r->started = true;
    for (int i = 0; i < OBJ_NKINDS; i++)
        assert_int_equal(informer_start(&r->inf[i]), 0);
    assert_int_equal(backends_start(&r->b), 0);
    assert_true(support_run_until(&r->k->loop, all_synced, r, WAIT_MS));
    reconciler_start(&r->rec);
}

static void on_b_closed(struct backends *b) {
    (void)b;
}

static bool b_closed(void *arg) {
    return backends_closed(arg);
}

static int rig_teardown(void **state) {
    struct kapi *k = *state;
    struct rig *r = k->data;
    if (!r)
        return 0;
    if (r->started) {
        reconciler_close(&r->rec);
        for (int i = 0; i < OBJ_NKINDS; i++)
            informer_close(&r->inf[i], NULL);
        backends_close(&r->b, on_b_closed);
        kube_client_close(r->kc);
        support_run_until(&k->loop, b_closed, &r->b, WAIT_MS);
        support_drain(&k->loop);
        reconciler_free(&r->rec);
        keycache_free(&r->keys);
    }
    if (r->kc)
        kube_client_free(r->kc);
    support_drain(&k->loop);
    free(r);
    k->data = NULL;
    kapi_faults_clear(k);
    return 0;
}

/* ---- keys ---- */

static void put_key(struct rig *r, const char *route, const char *leaf, const char *value) {
    char key[256];
    snprintf(key, sizeof key, "%s%s/%s/%s", r->prefix, r->ns, route, leaf);
    struct source_kv kv = {key, value, strlen(value), ++r->rev};
    assert_int_equal(keycache_put(&r->keys, &kv, on_key, r), 0);
}

static void delete_route(struct rig *r, const char *route) {
    static const char *const leaves[] = {"route", "weights"};
    for (int i = 0; i < 2; i++) {
        char key[256];
        snprintf(key, sizeof key, "%s%s/%s/%s", r->prefix, r->ns, route, leaves[i]);
        ++r->rev;
        assert_int_equal(keycache_delete(&r->keys, key, on_key, r), 0);
    }
}

static void put_weights(struct rig *r, int v2) {
    char w[64];
    snprintf(w, sizeof w, "shop-v1=%d, shop-v2=%d", 100 - v2, v2);
    put_key(r, "shop", "weights", w);
}

static bool rec_idle(void *arg) {
    struct rig *r = arg;
    return reconciler_idle(&r->rec) && reconciler_jobs_in_flight(&r->rec) == 0;
}

static void settle(struct rig *r) {
    assert_true(support_run_until(&r->k->loop, rec_idle, r, WAIT_MS));
}

/* ---- reading back ---- */

static cJSON *get_ir(struct rig *r, long *status) {
    char path[300];
    snprintf(path, sizeof path, "/apis/" GROUP "/v1alpha1/namespaces/%s/ingressroutes/shop", r->ns);
    return kapi_ctl(r->k, "GET", path, NULL, status);
}

/* shop-v2's weight in the live IngressRoute's last route; -1 without one. */
static int v2_weight(struct rig *r) {
    long status;
    cJSON *ir = get_ir(r, &status);
    const cJSON *routes = cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes");
    const cJSON *last = cJSON_GetArrayItem(routes, cJSON_GetArraySize(routes) - 1);
    int w = -1;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(last, "services")) {
        const cJSON *wt = cJSON_GetObjectItem(s, "weight");
        if (strcmp(kobj_str(s, "name", NULL), "shop-v2") == 0 && cJSON_IsNumber(wt))
            w = (int)wt->valuedouble;
    }
    cJSON_Delete(ir);
    return status == 200 ? w : -1;
}

struct want {
    struct rig *r;
    int v2;
    enum route_state state;
    const char *msg;
};

static bool v2_is(void *arg) {
    struct want *w = arg;
    return v2_weight(w->r) == w->v2;
}

static void wait_v2(struct rig *r, int v2) {
    struct want w = {r, v2, 0, NULL};
    if (!support_run_until(&r->k->loop, v2_is, &w, WAIT_MS))
        fail_msg("shop-v2 weight %d, want %d", v2_weight(r), v2);
}

static const struct route_status *status_of(struct rig *r) {
    char id[KEYCACHE_ROUTE_ID_MAX];
    keycache_route_id(id, sizeof id, r->ns, "shop");
    return reconciler_status(&r->rec, id);
}

static bool state_is(void *arg) {
    struct want *w = arg;
    const struct route_status *s = status_of(w->r);
    return s && s->state == w->state && (!w->msg || (s->message && strstr(s->message, w->msg)));
}

/* Wait for the route's state with a message holding want_msg (NULL: any). */
static void wait_state(struct rig *r, enum route_state state, const char *want_msg) {
    struct want w = {r, 0, state, want_msg};
    if (support_run_until(&r->k->loop, state_is, &w, WAIT_MS))
        return;
    const struct route_status *s = status_of(r);
    fail_msg("route state %d \"%s\", want %d \"%s\"", s ? (int)s->state : -1,
             s && s->message ? s->message : "", state, want_msg ? want_msg : "");
}

static bool has_warning(void *arg) {
    const struct route_status *s = status_of(arg);
    return s && s->warning;
}

static bool no_warning(void *arg) {
    const struct route_status *s = status_of(arg);
    return s && !s->warning;
}

/* Writes to Traefik kinds in the test's namespace since seq. */
static int writes_since(struct rig *r, int seq) {
    char q[64], base[160];
    snprintf(q, sizeof q, "/_test/requests?since=%d", seq);
    snprintf(base, sizeof base, "/apis/" GROUP "/v1alpha1/namespaces/%s/", r->ns);
    cJSON *log = kapi_ctl(r->k, "GET", q, NULL, NULL);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log) {
        const char *method = kobj_str(e, "method", NULL), *path = kobj_str(e, "path", NULL);
        if (method && path && strncmp(path, base, strlen(base)) == 0 && strcmp(method, "GET") != 0)
            n++;
    }
    cJSON_Delete(log);
    return n;
}

/* ---- tests ---- */

/* A missing Service refuses the route with a status naming it; nothing is
 * written. When the Service appears the route is applied at once, with no
 * key change (the watch queued it). */
static void test_missing_service_refused_then_applied_when_it_appears(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rb-missing");
    int seq = kapi_last_seq(r->k);
    put_key(r, "shop", "route", ROUTE_DOC("80"));
    put_weights(r, 10);
    wait_state(r, ROUTE_ERROR, "Service shop-v2 not found in namespace rb-missing");
    assert_non_null(strstr(status_of(r)->message, "not applied"));
    assert_int_equal(writes_since(r, seq), 0);
    assert_true(backends_watching(&r->b, "rb-missing"));

    uint64_t rev = r->rev;
    service(r, "shop-v2", PLAIN80, NULL);
    slice(r, "shop-v2", EP_PLAIN, READY);
    wait_v2(r, 10);
    wait_state(r, ROUTE_APPLIED, NULL);
    assert_int_equal(r->rev, rev); /* no key was written */
}

/* No ready endpoint: the change to weight 10 is refused and the object
 * keeps weight 0; ready endpoints apply it without a key change. */
static void test_no_ready_endpoints_refused_and_last_good_object_stays(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rb-ready");
    service(r, "shop-v2", PLAIN80, NULL);
    slice(r, "shop-v2", EP_PLAIN, NOT_READY);
    put_key(r, "shop", "route", ROUTE_DOC("80"));
    put_weights(r, 0); /* weight 0 needs no endpoint */
    wait_v2(r, 0);
    settle(r);
    int seq = kapi_last_seq(r->k);
    put_weights(r, 10);
    wait_state(r, ROUTE_ERROR, "shop-v2 has no ready endpoints (1 not ready)");
    assert_int_equal(events_with(r, "RouteFailed"), 1);
    settle(r);
    assert_int_equal(writes_since(r, seq), 0);
    assert_int_equal(v2_weight(r), 0);

    uint64_t rev = r->rev;
    slice(r, "shop-v2", EP_PLAIN, READY);
    wait_v2(r, 10);
    wait_state(r, ROUTE_APPLIED, NULL);
    assert_int_equal(r->rev, rev);
}

/* With require_ready_endpoints off, existence and port are still checked. */
static void test_require_ready_off_checks_existence_and_port(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    r->cfg.require_ready_endpoints = false;
    rig_start(r, "rb-noready");
    service(r, "shop-v2", PLAIN80, NULL);
    put_key(r, "shop", "route", ROUTE_DOC("80"));
    put_weights(r, 10);
    wait_v2(r, 10);
    put_key(r, "shop", "route", ROUTE_DOC("8080"));
    wait_state(r, ROUTE_ERROR, "shop-v2 does not expose port 8080 (it has 80)");
}

/* The port by name: matched against the Service's port names; an unknown
 * name is refused, saying what the Service has. */
static void test_port_by_name(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rb-portname");
    service(r, "shop-v2", HTTP80, NULL);
    slice(r, "shop-v2", EP_HTTP, READY);
    put_key(r, "shop", "route", ROUTE_DOC("http"));
    put_weights(r, 10);
    wait_v2(r, 10);
    wait_state(r, ROUTE_APPLIED, NULL);
    put_key(r, "shop", "route", ROUTE_DOC("grpc"));
    wait_state(r, ROUTE_ERROR, "shop-v2 does not expose port grpc (it has 80/http)");
}

/* An ExternalName Service has no endpoints: it needs only to exist. */
static void test_external_name_needs_only_to_exist(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rb-extname");
    service(r, "shop-v2", PLAIN80, "\"type\":\"ExternalName\",\"externalName\":\"db.example.net\"");
    put_key(r, "shop", "route", ROUTE_DOC("80"));
    put_weights(r, 10);
    wait_v2(r, 10);
    wait_state(r, ROUTE_APPLIED, NULL);
}

/* Patched mode: a TraefikService reference in someone else's IngressRoute
 * must exist; once it does, the weights are set (the TraefikService's watch
 * queued the route). */
static void test_traefikservice_reference_must_exist(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rb-tsref");
    char coll[200];
    snprintf(coll, sizeof coll, "/apis/" GROUP "/v1alpha1/namespaces/%s/ingressroutes", r->ns);
    kapi_ctl_ok(r->k, "POST", coll,
                "{\"apiVersion\":\"" GROUP "/v1alpha1\",\"kind\":\"IngressRoute\",\"metadata\":"
                "{\"name\":\"shop\"},\"spec\":{\"routes\":[{\"match\":\"Host(`a`)\",\"kind\":"
                "\"Rule\",\"services\":[{\"name\":\"shop-v1\",\"port\":80,\"weight\":100},"
                "{\"name\":\"shop-v2\",\"kind\":\"TraefikService\",\"weight\":0}]}]}}");
    put_weights(r, 20);
    wait_state(r, ROUTE_ERROR, "TraefikService shop-v2 not found in namespace rb-tsref");
    assert_int_equal(v2_weight(r), 0);
    snprintf(coll, sizeof coll, "/apis/" GROUP "/v1alpha1/namespaces/%s/traefikservices", r->ns);
    kapi_ctl_ok(r->k, "POST", coll,
                "{\"apiVersion\":\"" GROUP "/v1alpha1\",\"kind\":\"TraefikService\",\"metadata\":"
                "{\"name\":\"shop-v2\"},\"spec\":{\"weighted\":{\"services\":[{\"name\":"
                "\"shop-v1\",\"port\":80}]}}}");
    wait_v2(r, 20);
    wait_state(r, ROUTE_APPLIED, NULL);
}

/* A weighted service that loses its ready endpoints is reported (hook,
 * Event, status warning) and keeps its weight; nothing is written. Its
 * recovery ends the report. */
static void test_weighted_service_losing_endpoints_is_reported_not_rewritten(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rb-lose");
    service(r, "shop-v2", PLAIN80, NULL);
    slice(r, "shop-v2", EP_PLAIN, READY);
    put_key(r, "shop", "route", ROUTE_DOC("80"));
    put_weights(r, 10);
    wait_v2(r, 10);
    settle(r);
    int seq = kapi_last_seq(r->k);
    slice(r, "shop-v2", EP_PLAIN, NOT_READY);
    assert_true(support_run_until(&r->k->loop, has_warning, r, WAIT_MS));
    const struct route_status *s = status_of(r);
    assert_int_equal(s->state, ROUTE_APPLIED);
    assert_non_null(strstr(s->warning, "shop-v2 has no ready endpoints (1 not ready) while it "
                                       "carries weight 10"));
    assert_int_equal(r->n_unready, 1);
    assert_string_equal(r->unready[0], "rb-lose/shop shop-v2");
    assert_int_equal(events_with(r, "BackendNotReady"), 1);
    assert_non_null(strstr(r->event_msg, "the weights are left as they are"));
    settle(r);
    assert_int_equal(writes_since(r, seq), 0);
    assert_int_equal(v2_weight(r), 10);

    slice(r, "shop-v2", EP_PLAIN, READY);
    assert_true(support_run_until(&r->k->loop, no_warning, r, WAIT_MS));
    assert_int_equal(r->n_unready, 0);
    assert_int_equal(events_with(r, "BackendReady"), 1);
    assert_int_equal(writes_since(r, seq), 0);

    /* Weight 0 for it (what a person does about it): allowed, and the
     * report of a service without weight ends. */
    slice(r, "shop-v2", EP_PLAIN, NOT_READY);
    assert_true(support_run_until(&r->k->loop, has_warning, r, WAIT_MS));
    put_weights(r, 0);
    wait_v2(r, 0);
    assert_true(support_run_until(&r->k->loop, no_warning, r, WAIT_MS));
    assert_int_equal(r->n_unready, 0);
}

/* A namespace is watched while a route uses it; the last route going stops
 * its watches. A namespace whose list fails makes its routes wait with the
 * reason in the status; its listing applies them. */
static bool not_watching(void *arg) {
    struct rig *r = arg;
    return !backends_watching(&r->b, r->ns);
}

static void test_namespace_watched_while_used_and_listing_awaited(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rb-scope");
    service(r, "shop-v2", PLAIN80, NULL);
    slice(r, "shop-v2", EP_PLAIN, READY);
    assert_false(backends_watching(&r->b, "rb-scope"));
    kapi_fault(r->k, "{\"method\":\"GET\",\"path_regex\":\"^/api/v1/namespaces/rb-scope/"
                     "services$\",\"count\":-1,\"status\":500}");
    put_key(r, "shop", "route", ROUTE_DOC("80"));
    put_weights(r, 10);
    wait_state(r, ROUTE_PENDING,
               "waiting for the backend checks: Services of namespace rb-scope "
               "not listed yet (list services in namespace rb-scope: HTTP 500");
    assert_true(backends_watching(&r->b, "rb-scope"));
    assert_int_equal(v2_weight(r), -1);
    kapi_faults_clear(r->k);
    wait_v2(r, 10);
    wait_state(r, ROUTE_APPLIED, NULL);

    delete_route(r, "shop");
    assert_true(support_run_until(&r->k->loop, not_watching, r, WAIT_MS));
}

#define RB_TEST(f) cmocka_unit_test_setup_teardown(f, rig_setup, rig_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        RB_TEST(test_missing_service_refused_then_applied_when_it_appears),
        RB_TEST(test_no_ready_endpoints_refused_and_last_good_object_stays),
        RB_TEST(test_require_ready_off_checks_existence_and_port),
        RB_TEST(test_port_by_name),
        RB_TEST(test_external_name_needs_only_to_exist),
        RB_TEST(test_traefikservice_reference_must_exist),
        RB_TEST(test_weighted_service_losing_endpoints_is_reported_not_rewritten),
        RB_TEST(test_namespace_watched_while_used_and_listing_awaited),
    };
    return cmocka_run_group_tests(tests, kapi_setup, kapi_teardown);
}
