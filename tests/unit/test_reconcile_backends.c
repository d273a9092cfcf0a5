/* test_reconcile_backends.c - the reconciler's backend checks
 * (bridge/core/reconcile_backends.c) with the key cache, the informers and
 * the backends module, against the Kubernetes API test server.
 *
 * On the rig (rig.h) the reconciler tests share, with what the app adds for
 * the checks: a struct backends whose change callback is
 * reconciler_backends_changed, the TraefikService informer for references,
 * and the hooks that record what a person would see (status, Events, the
 * unready gauge). The server runs no controllers: the tests write Services
 * and EndpointSlices themselves. Each test has its own namespace; shop-v1
 * always serves.
 *
 * Run from tests/ (meson's workdir) or the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rig.h"

#define HTTP80 "[{\"name\":\"http\",\"port\":80}]"
#define PLAIN80 "[{\"port\":80}]"
#define EP_HTTP "[{\"name\":\"http\",\"port\":8080}]"
#define EP_PLAIN "[{\"port\":8080}]"
#define READY "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":true}}]"
#define NOT_READY "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":false}}]"

/* ---- the rig, with the backend checks ---- */

static int rb_setup(void **state) {
    if (rig_setup(state) != 0)
        return -1;
    struct rig *r = rig_of(state);
    r->cfg.require_ready_endpoints = true;
    r->with_backends = true;
    return 0;
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
static void start(struct rig *r, const char *ns) {
    rig_start(r, ns, true);
    service(r, "shop-v1", PLAIN80, NULL);
    slice(r, "shop-v1", EP_PLAIN, READY);
}

/* ---- keys ---- */

static void put_weights(struct rig *r, int v2) {
    char w[64];
    snprintf(w, sizeof w, "shop-v1=%d, shop-v2=%d", 100 - v2, v2);
    rig_put_key(r, "shop", "weights", w);
}

/* ---- reading back ---- */

/* shop-v2's weight in the live IngressRoute's last route; -1 without one. */
static int v2_weight(struct rig *r) {
    long status;
    cJSON *ir = rig_get_obj(r, "ingressroutes", "shop", &status);
    int w = status == 200 ? rig_weight_of(ir, "shop-v2") : -1;
    cJSON_Delete(ir);
    return w;
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
    if (!support_run_until(&r->k->loop, v2_is, &w, RIG_WAIT_MS))
        fail_msg("shop-v2 weight %d, want %d", v2_weight(r), v2);
}

static const struct route_status *status_of(struct rig *r) {
    return rig_status(r, "shop");
}

static bool state_is(void *arg) {
    struct want *w = arg;
    const struct route_status *s = status_of(w->r);
    return s && s->state == w->state && (!w->msg || (s->message && strstr(s->message, w->msg)));
}

/* Wait for the route's state with a message holding want_msg (NULL: any). */
static void wait_state(struct rig *r, enum route_state state, const char *want_msg) {
    struct want w = {r, 0, state, want_msg};
    if (support_run_until(&r->k->loop, state_is, &w, RIG_WAIT_MS))
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
    char seen[32][128];
    return rig_writes_since(r, seq, seen, NULL, 32);
}

/* ---- tests ---- */

/* A missing Service refuses the route with a status naming it; nothing is
 * written. When the Service appears the route is applied at once, with no
 * key change (the watch queued it). */
static void test_missing_service_refused_then_applied_when_it_appears(void **state) {
    struct rig *r = rig_of(state);
    start(r, "rb-missing");
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC_PORT("80"));
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
    struct rig *r = rig_of(state);
    start(r, "rb-ready");
    service(r, "shop-v2", PLAIN80, NULL);
    slice(r, "shop-v2", EP_PLAIN, NOT_READY);
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC_PORT("80"));
    put_weights(r, 0); /* weight 0 needs no endpoint */
    wait_v2(r, 0);
    rig_settle(r);
    int seq = kapi_last_seq(r->k);
    put_weights(r, 10);
    wait_state(r, ROUTE_ERROR, "shop-v2 has no ready endpoints (1 not ready)");
    assert_int_equal(rig_events_with(r, "RouteFailed"), 1);
    rig_settle(r);
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
    struct rig *r = rig_of(state);
    r->cfg.require_ready_endpoints = false;
    start(r, "rb-noready");
    service(r, "shop-v2", PLAIN80, NULL);
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC_PORT("80"));
    put_weights(r, 10);
    wait_v2(r, 10);
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC_PORT("8080"));
    wait_state(r, ROUTE_ERROR, "shop-v2 does not expose port 8080 (it has 80)");
}

/* The port by name: matched against the Service's port names; an unknown
 * name is refused, saying what the Service has. */
static void test_port_by_name(void **state) {
    struct rig *r = rig_of(state);
    start(r, "rb-portname");
    service(r, "shop-v2", HTTP80, NULL);
    slice(r, "shop-v2", EP_HTTP, READY);
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC_PORT("http"));
    put_weights(r, 10);
    wait_v2(r, 10);
    wait_state(r, ROUTE_APPLIED, NULL);
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC_PORT("grpc"));
    wait_state(r, ROUTE_ERROR, "shop-v2 does not expose port grpc (it has 80/http)");
}

/* An ExternalName Service has no endpoints: it needs only to exist. */
static void test_external_name_needs_only_to_exist(void **state) {
    struct rig *r = rig_of(state);
    start(r, "rb-extname");
    service(r, "shop-v2", PLAIN80, "\"type\":\"ExternalName\",\"externalName\":\"db.example.net\"");
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC_PORT("80"));
    put_weights(r, 10);
    wait_v2(r, 10);
    wait_state(r, ROUTE_APPLIED, NULL);
}

/* Patched mode: a TraefikService reference in someone else's IngressRoute
 * must exist; once it does, the weights are set (the TraefikService's watch
 * queued the route). */
static void test_traefikservice_reference_must_exist(void **state) {
    struct rig *r = rig_of(state);
    start(r, "rb-tsref");
    char coll[200];
    snprintf(coll, sizeof coll, "/apis/" RIG_GROUP "/v1alpha1/namespaces/%s/ingressroutes", r->ns);
    kapi_ctl_ok(r->k, "POST", coll,
                "{\"apiVersion\":\"" RIG_GROUP "/v1alpha1\",\"kind\":\"IngressRoute\",\"metadata\":"
                "{\"name\":\"shop\"},\"spec\":{\"routes\":[{\"match\":\"Host(`a`)\",\"kind\":"
                "\"Rule\",\"services\":[{\"name\":\"shop-v1\",\"port\":80,\"weight\":100},"
                "{\"name\":\"shop-v2\",\"kind\":\"TraefikService\",\"weight\":0}]}]}}");
    put_weights(r, 20);
    wait_state(r, ROUTE_ERROR, "TraefikService shop-v2 not found in namespace rb-tsref");
    assert_int_equal(v2_weight(r), 0);
    snprintf(coll, sizeof coll, "/apis/" RIG_GROUP "/v1alpha1/namespaces/%s/traefikservices",
             r->ns);
    kapi_ctl_ok(r->k, "POST", coll,
                "{\"apiVersion\":\"" RIG_GROUP
                "/v1alpha1\",\"kind\":\"TraefikService\",\"metadata\":"
                "{\"name\":\"shop-v2\"},\"spec\":{\"weighted\":{\"services\":[{\"name\":"
                "\"shop-v1\",\"port\":80}]}}}");
    wait_v2(r, 20);
    wait_state(r, ROUTE_APPLIED, NULL);
}

/* A weighted service that loses its ready endpoints is reported (hook,
 * Event, status warning) and keeps its weight; nothing is written. Its
 * recovery ends the report. */
static void test_weighted_service_losing_endpoints_is_reported_not_rewritten(void **state) {
    struct rig *r = rig_of(state);
    start(r, "rb-lose");
    service(r, "shop-v2", PLAIN80, NULL);
    slice(r, "shop-v2", EP_PLAIN, READY);
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC_PORT("80"));
    put_weights(r, 10);
    wait_v2(r, 10);
    rig_settle(r);
    int seq = kapi_last_seq(r->k);
    slice(r, "shop-v2", EP_PLAIN, NOT_READY);
    assert_true(support_run_until(&r->k->loop, has_warning, r, RIG_WAIT_MS));
    const struct route_status *s = status_of(r);
    assert_int_equal(s->state, ROUTE_APPLIED);
    assert_non_null(strstr(s->warning, "shop-v2 has no ready endpoints (1 not ready) while it "
                                       "carries weight 10"));
    assert_int_equal(r->n_unready, 1);
    assert_string_equal(r->unready[0], "rb-lose/shop shop-v2");
    assert_int_equal(rig_events_with(r, "BackendNotReady"), 1);
    assert_non_null(strstr(r->event_msg, "the weights are left as they are"));
    rig_settle(r);
    assert_int_equal(writes_since(r, seq), 0);
    assert_int_equal(v2_weight(r), 10);

    slice(r, "shop-v2", EP_PLAIN, READY);
    assert_true(support_run_until(&r->k->loop, no_warning, r, RIG_WAIT_MS));
    assert_int_equal(r->n_unready, 0);
    assert_int_equal(rig_events_with(r, "BackendReady"), 1);
    assert_int_equal(writes_since(r, seq), 0);

    /* Weight 0 for it (what a person does about it): allowed, and the
     * report of a service without weight ends. */
    slice(r, "shop-v2", EP_PLAIN, NOT_READY);
    assert_true(support_run_until(&r->k->loop, has_warning, r, RIG_WAIT_MS));
    put_weights(r, 0);
    wait_v2(r, 0);
    assert_true(support_run_until(&r->k->loop, no_warning, r, RIG_WAIT_MS));
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
    struct rig *r = rig_of(state);
    start(r, "rb-scope");
    service(r, "shop-v2", PLAIN80, NULL);
    slice(r, "shop-v2", EP_PLAIN, READY);
    assert_false(backends_watching(&r->b, "rb-scope"));
    kapi_fault(r->k, "{\"method\":\"GET\",\"path_regex\":\"^/api/v1/namespaces/rb-scope/"
                     "services$\",\"count\":-1,\"status\":500}");
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC_PORT("80"));
    put_weights(r, 10);
    wait_state(r, ROUTE_PENDING,
               "waiting for the backend checks: Services of namespace rb-scope "
               "not listed yet (list services in namespace rb-scope: HTTP 500");
    assert_true(backends_watching(&r->b, "rb-scope"));
    assert_int_equal(v2_weight(r), -1);
    kapi_faults_clear(r->k);
    wait_v2(r, 10);
    wait_state(r, ROUTE_APPLIED, NULL);

    rig_delete_key(r, "shop", "route");
    rig_delete_key(r, "shop", "weights");
    assert_true(support_run_until(&r->k->loop, not_watching, r, RIG_WAIT_MS));
}

#define RB_TEST(f) cmocka_unit_test_setup_teardown(f, rb_setup, rig_teardown)

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
