/* test_backends.c - Services and EndpointSlices in caches (sinks/backends.h)
 * against the Kubernetes API test server.
 *
 * tests/kubeapi/server.py runs on the test's libuv loop (tests/unit/kapi.h);
 * the module talks to it through the real kube client. The
 * server has no controllers, so the tests write Services and EndpointSlices
 * themselves, as a Deployment's controllers would. Nothing sleeps: the loop
 * runs until a condition holds, bounded by a deadline. To show that
 * something did NOT happen (no callback for an irrelevant change, none for
 * a removed namespace), a later relevant change on the same watch is awaited
 * first: the server sends events in order.
 *
 * Run from tests/ (meson's workdir) or the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kapi.h"
#include "sinks/backends.h"
#include "sinks/informer.h"

/* ---- objects ---- */

static void mkns(struct kapi *k, const char *ns) {
    char body[200];
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"%s\"}}", ns);
    kapi_ctl_ok(k, "POST", "/api/v1/namespaces", body);
}

/* Create or replace (built-in kinds take a PUT without resourceVersion). */
static void put_obj(struct kapi *k, const char *coll, const char *name, const char *body) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s", coll, name);
    long status;
    cJSON *j = kapi_ctl(k, "PUT", path, body, &status);
    cJSON_Delete(j);
    if (status == 404)
        kapi_ctl_ok(k, "POST", coll, body);
    else
        assert_int_equal(status, 200);
}

/* ports: a JSON array, e.g. [{"name":"http","port":80}]; type NULL for
 * ClusterIP. */
static void service(struct kapi *k, const char *ns, const char *name, const char *ports,
                    const char *type) {
    char coll[200], body[1000];
    snprintf(coll, sizeof coll, "/api/v1/namespaces/%s/services", ns);
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"%s\"},\"spec\":{\"ports\":%s%s%s}}",
             name, ns, ports, type ? "," : "", type ? type : "");
    put_obj(k, coll, name, body);
}

/* An EndpointSlice of Service svc: ports and endpoints as JSON arrays. */
static void eps(struct kapi *k, const char *ns, const char *name, const char *svc,
                const char *ports, const char *endpoints) {
    char coll[200], body[2000];
    snprintf(coll, sizeof coll, "/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices", ns);
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\",\"metadata\":{"
             "\"name\":\"%s\",\"namespace\":\"%s\",\"labels\":{\"kubernetes.io/service-name\":"
             "\"%s\"}},\"addressType\":\"IPv4\",\"ports\":%s,\"endpoints\":%s}",
             name, ns, svc, ports, endpoints);
    put_obj(k, coll, name, body);
}

static void del(struct kapi *k, const char *ns, const char *group_path, const char *plural,
                const char *name) {
    char path[300];
    snprintf(path, sizeof path, "%s/namespaces/%s/%s/%s", group_path, ns, plural, name);
    kapi_ctl_ok(k, "DELETE", path, NULL);
}

#define HTTP80 "[{\"name\":\"http\",\"port\":80,\"targetPort\":8080}]"
#define EP_HTTP "[{\"name\":\"http\",\"port\":8080,\"protocol\":\"TCP\"}]"
#define READY "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":true}}]"
#define NOT_READY "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":false}}]"

/* ---- the module under test ---- */

#define MAX_CALLS 64

struct world {
    struct kapi *k;
    struct backends b;
    bool inited;
    char calls[MAX_CALLS][128]; /* "ns/service"; a star for "every" */
    int n;
    const char *remove_in_callback; /* remove this namespace from a callback for it */
};

static void on_change(void *user, const char *ns, const char *svc) {
    struct world *w = user;
    if (w->n < MAX_CALLS)
        snprintf(w->calls[w->n++], sizeof w->calls[0], "%s/%s", ns ? ns : "*", svc ? svc : "*");
    if (w->remove_in_callback && ns && strcmp(ns, w->remove_in_callback) == 0 && svc) {
        backends_remove_namespace(&w->b, ns);
        w->remove_in_callback = NULL;
    }
}

static bool called(struct world *w, const char *what) {
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->calls[i], what) == 0)
            return true;
    return false;
}

struct wait_call {
    struct world *w;
    const char *what;
};
static bool has_call(void *arg) {
    struct wait_call *c = arg;
    return called(c->w, c->what);
}

static void await_call(struct world *w, const char *what) {
    struct wait_call c = {w, what};
    if (!support_run_until(&w->k->loop, has_call, &c, 10000))
        fail_msg("no callback for %s", what);
}

/* The module lives in the group state, not on a test's stack: a failing
 * test longjmps out, and its teardown still closes the module. */
static int world_setup(void **state) {
    struct kapi *k = *state;
    struct world *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->k = k;
    k->data = w;
    return 0;
}

static bool closed(void *arg) {
    return backends_closed(arg);
}

/* Close the module: everything is freed by the close callbacks (the ASan
 * build checks that nothing leaks). */
static int world_teardown(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    int rc = 0;
    if (w->inited) {
        backends_close(&w->b, NULL);
        if (!support_run_until(&k->loop, closed, &w->b, 5000)) {
            print_error("backends did not close\n");
            rc = -1; /* a test can not see this; its teardown fails instead */
        }
    }
    support_drain(&k->loop);
    k->data = NULL;
    if (rc == 0)
        free(w); /* else its handles may still point into it */
    kapi_faults_clear(k);
    return rc;
}

static void start(struct world *w, bool all, const char *ns) {
    assert_int_equal(backends_init(&w->b, &w->k->loop, w->k->ctl, &w->k->log, all, on_change, w),
                     0);
    w->inited = true;
    if (ns)
        assert_int_equal(backends_add_namespace(&w->b, ns), 0);
    assert_int_equal(backends_start(&w->b), 0);
}

static char msg[300];

static void expect(struct world *w, const char *ns, const char *name, const char *port,
                   bool require_ready, enum backend_result want, const char *want_msg) {
    enum backend_result r =
        backends_check(&w->b, ns, name, port, BACKEND_SERVICE, require_ready, msg, sizeof msg);
    if (r != want || !strstr(msg, want_msg))
        fail_msg("%s/%s port %s: got %s \"%s\", want %s \"%s\"", ns, name, port,
                 backend_result_name(r), msg, backend_result_name(want), want_msg);
}

struct wait_check {
    struct world *w;
    const char *ns, *name, *port;
    enum backend_result want;
    const char *want_msg;
};
static bool check_is(void *arg) {
    struct wait_check *c = arg;
    return backends_check(&c->w->b, c->ns, c->name, c->port, BACKEND_SERVICE, true, msg,
                          sizeof msg) == c->want &&
           strstr(msg, c->want_msg);
}

static int api_requests_since(struct kapi *k, int since) {
    char q[64];
    snprintf(q, sizeof q, "/_test/requests?since=%d", since);
    cJSON *log = kapi_ctl(k, "GET", q, NULL, NULL);
    int n = cJSON_GetArraySize(log);
    cJSON_Delete(log);
    return n;
}

static bool ts_closed;
static void on_ts_closed(struct informer *inf) {
    (void)inf;
    ts_closed = true;
}

static bool is_true(void *arg) {
    return *(bool *)arg;
}

static bool inf_synced(void *arg) {
    return ((struct informer *)arg)->synced;
}

/* ---- tests ---- */

/* Every result, from caches listed before the first check; no request on
 * the way. */
static void test_results(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    mkns(k, "r1");
    mkns(k, "r1b");
    service(k, "r1", "web",
            "[{\"name\":\"http\",\"port\":80},{\"name\":\"metrics\",\"port\":9090}]", NULL);
    eps(k, "r1", "web-a", "web", EP_HTTP,
        "[{\"addresses\":[\"10.0.0.1\"],\"conditions\":{\"ready\":true}},"
        "{\"addresses\":[\"10.0.0.2\"],\"conditions\":{\"ready\":false}}]");
    /* Ready endpoints on another port name do not make http ready. */
    service(k, "r1", "down", HTTP80, NULL);
    eps(k, "r1", "down-a", "down", EP_HTTP,
        "[{\"addresses\":[\"10.0.0.3\"],\"conditions\":{\"ready\":false}},"
        "{\"addresses\":[\"10.0.0.4\"],\"conditions\":{\"ready\":false}}]");
    eps(k, "r1", "down-b", "down", "[{\"name\":\"admin\",\"port\":1}]", READY);
    /* Unnamed ports; conditions.ready unset counts as ready. */
    service(k, "r1", "plain", "[{\"port\":80}]", NULL);
    eps(k, "r1", "plain-a", "plain", "[{\"port\":8080}]",
        "[{\"addresses\":[\"10.0.0.5\"]},{\"addresses\":[\"10.0.0.6\"],\"conditions\":{}}]");
    service(k, "r1", "noeps", HTTP80, NULL);
    service(k, "r1", "ext", "[]", "\"type\":\"ExternalName\",\"externalName\":\"db.example.com\"");
    service(k, "r1b", "web", HTTP80, NULL);
    eps(k, "r1b", "web-a", "web", EP_HTTP, READY);
    kapi_ctl_ok(k, "POST", "/apis/traefik.io/v1alpha1/namespaces/r1/traefikservices",
                "{\"apiVersion\":\"traefik.io/v1alpha1\",\"kind\":\"TraefikService\",\"metadata\":"
                "{\"name\":\"ts1\"},\"spec\":{\"weighted\":{\"services\":[{\"name\":\"web\","
                "\"port\":80}]}}}");

    start(w, false, "r1");
    expect(w, "r1", "web", "80", true, BACKEND_NOT_SYNCED, "Services of namespace r1 not listed");
    await_call(w, "r1/*");
    int seq = kapi_last_seq(k);

    expect(w, "r1", "web", "80", true, BACKEND_OK, "web has 1 ready endpoint on port 80");
    expect(w, "r1", "web", "http", true, BACKEND_OK, "web has 1 ready endpoint on port http");
    expect(w, "r1", "web", "8080", true, BACKEND_NO_PORT,
           "web does not expose port 8080 (it has 80/http, 9090/metrics)");
    expect(w, "r1", "web", "grpc", true, BACKEND_NO_PORT, "web does not expose port grpc");
    expect(w, "r1", "web", "9090", true, BACKEND_NOT_READY, "web has no ready endpoints");
    expect(w, "r1", "web", "9090", false, BACKEND_OK, "web exposes port 9090");
    expect(w, "r1", "down", "80", true, BACKEND_NOT_READY,
           "down has no ready endpoints (2 not ready)");
    expect(w, "r1", "plain", "80", true, BACKEND_OK, "plain has 2 ready endpoints");
    expect(w, "r1", "noeps", "80", true, BACKEND_NOT_READY, "noeps has no ready endpoints");
    assert_string_equal(msg, "noeps has no ready endpoints");
    expect(w, "r1", "ext", "5432", true, BACKEND_OK_NO_ENDPOINTS,
           "ext is an ExternalName Service (db.example.com)");
    expect(w, "r1", "ext", "pg", true, BACKEND_NO_PORT,
           "ext does not expose port pg (it has no ports)");
    expect(w, "r1", "nope", "80", true, BACKEND_MISSING, "Service nope not found in namespace r1");
    expect(w, "r1b", "web", "80", true, BACKEND_NOT_SYNCED, "namespace r1b is not watched");
    assert_false(backends_watching(&w->b, "r1b"));
    assert_true(backend_result_ok(BACKEND_OK_NO_ENDPOINTS));
    assert_false(backend_result_ok(BACKEND_NOT_READY));
    /* Checks answer from the caches: the API server saw no request. */
    assert_int_equal(api_requests_since(k, seq), 0);

    /* TraefikService references: existence, in the caller's informer. */
    enum backend_result r =
        backends_check(&w->b, "r1", "ts1", "80", BACKEND_TRAEFIKSERVICE, true, msg, sizeof msg);
    assert_int_equal(r, BACKEND_OK_NO_ENDPOINTS);
    assert_non_null(strstr(msg, "not checked"));
    struct informer ts;
    assert_int_equal(informer_init(&ts, &k->loop, k->ctl, &k->log, "traefik.io", "v1alpha1",
                                   "traefikservices", NULL, NULL, NULL),
                     0);
    backends_set_traefikservices(&w->b, &ts);
    r = backends_check(&w->b, "r1", "ts1", "80", BACKEND_TRAEFIKSERVICE, true, msg, sizeof msg);
    assert_int_equal(r, BACKEND_NOT_SYNCED);
    informer_start(&ts);
    assert_true(support_run_until(&k->loop, inf_synced, &ts, 10000));
    r = backends_check(&w->b, "r1", "ts1", "80", BACKEND_TRAEFIKSERVICE, true, msg, sizeof msg);
    assert_int_equal(r, BACKEND_OK_NO_ENDPOINTS);
    r = backends_check(&w->b, "r1", "ts2", "80", BACKEND_TRAEFIKSERVICE, true, msg, sizeof msg);
    assert_int_equal(r, BACKEND_MISSING);
    assert_string_equal(msg, "TraefikService ts2 not found in namespace r1");
    backends_set_traefikservices(&w->b, NULL);
    ts_closed = false;
    informer_close(&ts, on_ts_closed);
    assert_true(support_run_until(&k->loop, is_true, &ts_closed, 5000));
}

/* Nothing is answered nor reported before a namespace is listed: a failed
 * list says why; objects already there are announced by one call for the namespace. */
static void test_not_synced(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    mkns(k, "s1");
    service(k, "s1", "web", HTTP80, NULL);
    eps(k, "s1", "web-a", "web", EP_HTTP, READY);
    kapi_fault(k, "{\"method\":\"GET\",\"path_regex\":\"^/api/v1/namespaces/s1/services$\","
                  "\"count\":1,\"status\":500}");
    start(w, false, "s1");
    expect(w, "s1", "web", "80", true, BACKEND_NOT_SYNCED,
           "Services of namespace s1 not listed yet");
    struct wait_check c = {w, "s1", "web", "80", BACKEND_NOT_SYNCED, "HTTP 500"};
    assert_true(support_run_until(&k->loop, check_is, &c, 10000));
    await_call(w, "s1/*");
    assert_int_equal(w->n, 1); /* no per-object call before it */
    expect(w, "s1", "web", "80", true, BACKEND_OK, "web has 1 ready endpoint");
}

/* Watch-driven: endpoints coming and going, ports and Services changing. */
static void test_watch_changes(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    mkns(k, "w1");
    service(k, "w1", "shop-v2", HTTP80, NULL);
    eps(k, "w1", "shop-v2-a", "shop-v2", EP_HTTP, NOT_READY);
    service(k, "w1", "other", HTTP80, NULL);
    start(w, false, "w1");
    await_call(w, "w1/*");
    expect(w, "w1", "shop-v2", "80", true, BACKEND_NOT_READY, "shop-v2 has no ready endpoints");

    /* Endpoints become ready: the caller hears of it at once. */
    w->n = 0;
    eps(k, "w1", "shop-v2-a", "shop-v2", EP_HTTP, READY);
    await_call(w, "w1/shop-v2");
    expect(w, "w1", "shop-v2", "80", true, BACKEND_OK, "shop-v2 has 1 ready endpoint");

    /* A change that cannot change an answer (another ready address) is not
     * reported; the next relevant one is. */
    w->n = 0;
    eps(k, "w1", "shop-v2-a", "shop-v2", EP_HTTP,
        "[{\"addresses\":[\"10.0.0.9\"],\"conditions\":{\"ready\":true}}]");
    eps(k, "w1", "other-a", "other", EP_HTTP, READY);
    await_call(w, "w1/other");
    assert_int_equal(w->n, 1);

    /* Losing every ready endpoint (a weighted service going dark). */
    w->n = 0;
    eps(k, "w1", "shop-v2-a", "shop-v2", EP_HTTP, NOT_READY);
    await_call(w, "w1/shop-v2");
    expect(w, "w1", "shop-v2", "80", true, BACKEND_NOT_READY, "shop-v2 has no ready endpoints");
    w->n = 0;
    eps(k, "w1", "shop-v2-a", "shop-v2", EP_HTTP, READY);
    await_call(w, "w1/shop-v2");
    w->n = 0;
    del(k, "w1", "/apis/discovery.k8s.io/v1", "endpointslices", "shop-v2-a");
    await_call(w, "w1/shop-v2");
    expect(w, "w1", "shop-v2", "80", true, BACKEND_NOT_READY, "shop-v2 has no ready endpoints");

    /* The Service's ports change, then it goes. */
    w->n = 0;
    service(k, "w1", "shop-v2", "[{\"name\":\"web\",\"port\":8081}]", NULL);
    await_call(w, "w1/shop-v2");
    expect(w, "w1", "shop-v2", "80", true, BACKEND_NO_PORT,
           "shop-v2 does not expose port 80 (it has 8081/web)");
    w->n = 0;
    del(k, "w1", "/api/v1", "services", "shop-v2");
    await_call(w, "w1/shop-v2");
    expect(w, "w1", "shop-v2", "80", true, BACKEND_MISSING, "Service shop-v2 not found");
}

struct ns_watch {
    struct kapi *k;
    const char *ns; /* NULL: a cluster-wide watch */
    int want;       /* how many such watches */
};

static int count_watches(struct kapi *k, const char *ns, int *cluster_wide) {
    cJSON *ws = kapi_ctl(k, "GET", "/_test/watches", NULL, NULL);
    int n = 0;
    *cluster_wide = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, ws) {
        const char *wns = kobj_str(e, "namespace", NULL);
        const char *res = kobj_str(e, "resource", NULL);
        if (!res ||
            (strcmp(res, "services") != 0 && strcmp(res, "endpointslices.discovery.k8s.io") != 0))
            continue;
        /* Only the slices of Services are of interest. */
        const char *path = kobj_str(e, "path", NULL);
        if (strcmp(res, "services") != 0)
            assert_non_null(strstr(path, "labelSelector=kubernetes.io%2Fservice-name"));
        if (!wns || !*wns)
            (*cluster_wide)++;
        else if (ns && strcmp(wns, ns) == 0)
            n++;
    }
    cJSON_Delete(ws);
    return n;
}

static bool watches_are(void *arg) {
    struct ns_watch *q = arg;
    int all, n = count_watches(q->k, q->ns, &all);
    return (q->ns ? n : all) == q->want;
}

/* Namespaces come and go at run time, each with its own watches; a removed
 * one is forgotten and reports nothing more. */
static void test_namespaces_add_remove(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    mkns(k, "n1");
    mkns(k, "n2");
    service(k, "n1", "a", HTTP80, NULL);
    eps(k, "n1", "a-1", "a", EP_HTTP, READY);
    service(k, "n2", "b", HTTP80, NULL);
    eps(k, "n2", "b-1", "b", EP_HTTP, READY);
    start(w, false, "n1");
    await_call(w, "n1/*");
    assert_int_equal(backends_add_namespace(&w->b, "n2"), 0);
    assert_int_equal(backends_add_namespace(&w->b, "n2"), 0); /* twice: no second scope */
    await_call(w, "n2/*");
    expect(w, "n2", "b", "80", true, BACKEND_OK, "b has 1 ready endpoint");
    struct ns_watch q1 = {k, "n1", 2}, q2 = {k, "n2", 2}, qall = {k, NULL, 0};
    assert_true(support_run_until(&k->loop, watches_are, &q1, 10000));
    assert_true(support_run_until(&k->loop, watches_are, &q2, 10000));
    assert_true(watches_are(&qall)); /* no cluster-wide watch */

    backends_remove_namespace(&w->b, "n1");
    assert_false(backends_watching(&w->b, "n1"));
    expect(w, "n1", "a", "80", true, BACKEND_NOT_SYNCED, "namespace n1 is not watched");
    q1.want = 0;
    assert_true(support_run_until(&k->loop, watches_are, &q1, 10000));
    w->n = 0;
    eps(k, "n1", "a-1", "a", EP_HTTP, NOT_READY);
    eps(k, "n2", "b-1", "b", EP_HTTP, NOT_READY);
    await_call(w, "n2/b");
    assert_int_equal(w->n, 1);

    /* Back again: listed afresh. */
    assert_int_equal(backends_add_namespace(&w->b, "n1"), 0);
    await_call(w, "n1/*");
    expect(w, "n1", "a", "80", true, BACKEND_NOT_READY, "a has no ready endpoints");

    /* Removed from inside its own callback: the scope outlives the call. */
    w->remove_in_callback = "n1";
    w->n = 0;
    eps(k, "n1", "a-1", "a", EP_HTTP, READY);
    await_call(w, "n1/a");
    assert_false(backends_watching(&w->b, "n1"));
    eps(k, "n2", "b-1", "b", EP_HTTP, READY);
    await_call(w, "n2/b");
}

/* all_namespaces: one cluster-wide watch per kind; namespaces need no adding.
 * After backends_stop nothing is reported. */
static void test_all_namespaces_and_stop(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    mkns(k, "a1");
    mkns(k, "a2");
    service(k, "a1", "x", HTTP80, NULL);
    eps(k, "a1", "x-1", "x", EP_HTTP, READY);
    service(k, "a2", "y", HTTP80, NULL);
    start(w, true, NULL);
    assert_int_equal(backends_add_namespace(&w->b, "a1"), 0); /* accepted, not needed */
    await_call(w, "*/*");
    assert_true(backends_watching(&w->b, "anything"));
    expect(w, "a1", "x", "80", true, BACKEND_OK, "x has 1 ready endpoint");
    expect(w, "a2", "y", "80", true, BACKEND_NOT_READY, "y has no ready endpoints");
    struct ns_watch qall = {k, NULL, 2};
    assert_true(support_run_until(&k->loop, watches_are, &qall, 10000));
    eps(k, "a2", "y-1", "y", EP_HTTP, READY);
    await_call(w, "a2/y");
    expect(w, "a2", "y", "80", true, BACKEND_OK, "y has 1 ready endpoint");

    backends_stop(&w->b);
    qall.want = 0;
    assert_true(support_run_until(&k->loop, watches_are, &qall, 10000));
    w->n = 0;
    eps(k, "a2", "y-1", "y", EP_HTTP, NOT_READY);
    support_drain(&k->loop);
    assert_int_equal(w->n, 0);
    /* The caches stay readable until backends_close. */
    expect(w, "a2", "y", "80", true, BACKEND_OK, "y has 1 ready endpoint");
}

/* Many namespaces in use: one cluster-wide pair replaces the per-namespace
 * ones once it has listed; answers go on meanwhile. A namespace whose list
 * fails says why (backends_problem). */
static void test_watch_all_replaces_namespace_watches(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    mkns(k, "x1");
    mkns(k, "x2");
    service(k, "x1", "a", HTTP80, NULL);
    eps(k, "x1", "a-1", "a", EP_HTTP, READY);
    service(k, "x2", "b", HTTP80, NULL);
    kapi_fault(k, "{\"method\":\"GET\",\"path_regex\":\"^/api/v1/namespaces/x2/services$\","
                  "\"count\":-1,\"status\":403}");
    start(w, false, "x1");
    assert_int_equal(backends_add_namespace(&w->b, "x2"), 0);
    await_call(w, "x1/*");
    assert_null(backends_problem(&w->b, "x1"));
    struct wait_check c = {w, "x2", "b", "80", BACKEND_NOT_SYNCED, "HTTP 403"};
    assert_true(support_run_until(&k->loop, check_is, &c, 10000));
    assert_non_null(strstr(backends_problem(&w->b, "x2"), "list services in namespace x2"));
    kapi_faults_clear(k);

    assert_int_equal(backends_watch_all(&w->b), 0);
    assert_int_equal(backends_watch_all(&w->b), 0); /* once */
    await_call(w, "*/*");
    assert_true(backends_watching(&w->b, "x3"));
    struct ns_watch q1 = {k, "x1", 0}, qall = {k, NULL, 2};
    assert_true(support_run_until(&k->loop, watches_are, &q1, 10000));
    assert_true(support_run_until(&k->loop, watches_are, &qall, 10000));
    expect(w, "x1", "a", "80", true, BACKEND_OK, "a has 1 ready endpoint");
    expect(w, "x2", "b", "80", true, BACKEND_NOT_READY, "b has no ready endpoints");
    assert_null(backends_problem(&w->b, "x2"));
    backends_remove_namespace(&w->b, "x1"); /* ignored now */
    w->n = 0;
    eps(k, "x1", "a-1", "a", EP_HTTP, NOT_READY);
    await_call(w, "x1/a");
    expect(w, "x1", "a", "80", true, BACKEND_NOT_READY, "a has no ready endpoints");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_results, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_not_synced, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_watch_changes, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_namespaces_add_remove, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_all_namespaces_and_stop, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_watch_all_replaces_namespace_watches, world_setup,
                                        world_teardown),
    };
    return cmocka_run_group_tests(tests, kapi_setup, kapi_teardown);
}
