/* test_pace.c - write pacing and outage recovery (bridge/core/reconcile_pace.c)
 * with the key cache, against the Kubernetes API test server.
 *
 * On the rig (rig.h) the reconciler tests share, with the kube client's
 * answers going to reconciler_api_answered as the app wires them. What
 * reached the API server is read back from its request log.
 *
 * Pacing: a key rewritten in a loop is written at most
 * object_writes_per_second times a second, the last write carrying the last
 * state; an edit after a quiet spell is written at once. Recovery: a route
 * whose write failed because the API server did not answer is retried as
 * soon as it answers again, long before its (here very long) backoff; a
 * route that fails on its own while other requests succeed is not retried
 * once per success.
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

/* A backoff no test waits out: a route converging sooner was not waiting. */
#define LONG_BACKOFF_MS (10 * 60 * 1000)

/* The rig (rig.h) at 10 object writes a second, the client's answers seen
 * by the reconciler as the app wires them. */
static int pace_setup(void **state) {
    if (rig_setup(state) != 0)
        return -1;
    struct rig *r = rig_of(state);
    r->cfg.object_writes_per_second = 10;
    r->observe_answers = true;
    return 0;
}

static void put_weights(struct rig *r, const char *route, int v1) {
    char w[64];
    snprintf(w, sizeof w, "shop-v1=%d, shop-v2=%d", v1, 100 - v1);
    rig_put_key(r, route, "weights", w);
}

/* A string member of obj, "" when there is none. */
static const char *str_of(const cJSON *obj, const char *key) {
    const char *v = kobj_str(obj, key, NULL);
    return v ? v : "";
}

/* The weight of shop-v1 in the live IngressRoute, -1 when there is none.
 * Read from the store dump, so that every GET of an IngressRoute in the
 * request log is the bridge's. */
static int live_v1(struct rig *r, const char *route) {
    cJSON *dump = kapi_ctl(r->k, "GET", "/_test/objects", NULL, NULL);
    int v1 = -1;
    const cJSON *o;
    cJSON_ArrayForEach(o, cJSON_GetObjectItem(dump, "objects")) {
        const cJSON *meta = cJSON_GetObjectItem(o, "metadata");
        if (strcmp(str_of(o, "kind"), "IngressRoute") != 0 ||
            strcmp(str_of(meta, "namespace"), r->ns) != 0 ||
            strcmp(str_of(meta, "name"), route) != 0)
            continue;
        const cJSON *routes = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "spec"), "routes");
        const cJSON *s;
        cJSON_ArrayForEach(s, cJSON_GetObjectItem(cJSON_GetArrayItem(routes, 0), "services")) {
            if (strcmp(str_of(s, "name"), "shop-v1") == 0)
                v1 = (int)cJSON_GetObjectItem(s, "weight")->valuedouble;
        }
    }
    cJSON_Delete(dump);
    return v1;
}

struct want {
    struct rig *r;
    const char *route;
    int v1;
};

static bool weight_is(void *arg) {
    struct want *w = arg;
    return live_v1(w->r, w->route) == w->v1;
}

static bool wait_weight(struct rig *r, const char *route, int v1) {
    struct want w = {r, route, v1};
    return support_run_until(&r->k->loop, weight_is, &w, RIG_WAIT_MS);
}

/* The bridge's requests (method, or any when NULL) to one IngressRoute
 * since seq, as the server logged them: how many, the server's arrival
 * times of the first and last (seconds), and per request its status and the
 * shop-v1 weight its body carried (-1 none). */
struct seen {
    int n;
    double t_first, t_last;
    int v1s[1200];
    long status[1200];
};

static void requests_to(struct rig *r, int seq, const char *method, const char *route,
                        struct seen *out) {
    char q[64], path[300];
    snprintf(q, sizeof q, "/_test/requests?since=%d", seq);
    snprintf(path, sizeof path, "/apis/" RIG_GROUP "/v1alpha1/namespaces/%s/ingressroutes/%s",
             r->ns, route);
    memset(out, 0, sizeof *out);
    cJSON *log = kapi_ctl(r->k, "GET", q, NULL, NULL);
    const cJSON *e;
    cJSON_ArrayForEach(e, log) {
        const char *m = kobj_str(e, "method", NULL), *p = kobj_str(e, "path", NULL);
        if (!m || !p || strcmp(p, path) != 0 || (method && strcmp(m, method) != 0))
            continue;
        double t = cJSON_GetObjectItem(e, "t")->valuedouble;
        if (out->n == 0)
            out->t_first = t;
        out->t_last = t;
        const cJSON *st = cJSON_GetObjectItem(e, "status");
        const cJSON *spec = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "body"), "spec");
        const cJSON *routes = cJSON_GetObjectItem(spec, "routes");
        const cJSON *s;
        int v1 = -1;
        cJSON_ArrayForEach(s, cJSON_GetObjectItem(cJSON_GetArrayItem(routes, 0), "services")) {
            if (strcmp(str_of(s, "name"), "shop-v1") == 0)
                v1 = (int)cJSON_GetObjectItem(s, "weight")->valuedouble;
        }
        if (out->n < (int)(sizeof out->v1s / sizeof *out->v1s)) {
            out->v1s[out->n] = v1;
            out->status[out->n] = cJSON_IsNumber(st) ? (long)st->valuedouble : 0;
        }
        out->n++;
    }
    cJSON_Delete(log);
}

/* Route shop's write slot is free: a quiet spell has passed. */
static bool slot_free(void *arg) {
    struct rig *r = arg;
    const struct route_status *s = rig_status(r, "shop");
    return s && uv_now(&r->k->loop) >= s->write_next_ms;
}

static bool one_delayed(void *arg) {
    struct rig *r = arg;
    return r->rec.stats.delayed > 0;
}

static bool nothing_in_flight(void *arg) {
    struct rig *r = arg;
    return reconciler_jobs_in_flight(&r->rec) == 0 && workqueue_pending(&r->rec.wq) == 0;
}

struct seen_count {
    struct rig *r;
    int seq;
    const char *method;
    long status;
    int n; /* at least this many */
};

static bool requests_seen(void *arg) {
    struct seen_count *c = arg;
    static struct seen s;
    requests_to(c->r, c->seq, c->method, "shop", &s);
    int n = 0;
    for (int i = 0; i < s.n && i < (int)(sizeof s.v1s / sizeof *s.v1s); i++)
        n += s.status[i] == c->status;
    return n >= c->n;
}

static void apply_route(struct rig *r, const char *route, int v1) {
    rig_put_route(r, route, v1, 100 - v1);
    assert_true(wait_weight(r, route, v1));
}

/* ---- write pacing ---- */

/* A key rewritten every few ms for a while: at most 10 writes a second
 * (plus the first), each a later state than the one before, the last
 * carrying the last value; every other pass waited and was counted. */
static void test_hot_key_is_written_at_most_n_times_a_second(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "pace-hot", true);
    apply_route(r, "shop", 90);
    rig_settle(r);
    int seq = kapi_last_seq(r->k);
    enum { PUTS = 300 };
    for (int i = 1; i <= PUTS; i++) {
        put_weights(r, "shop", i / 3);
        support_run_for(&r->k->loop, 3); /* a writer putting every few ms */
    }
    rig_settle(r);
    assert_true(wait_weight(r, "shop", PUTS / 3));
    static struct seen s;
    requests_to(r, seq, "PUT", "shop", &s);
    double span = s.t_last - s.t_first;
    print_message("  %d puts -> %d writes over %.3f s; %llu passes delayed\n", PUTS, s.n, span,
                  (unsigned long long)r->rec.stats.delayed);
    assert_true(s.n >= 2);
    /* The bound of a 10/s bucket of one token, and one for the server's
     * clock not being the bridge's. */
    assert_true(s.n <= (int)(span * 10) + 2);
    assert_true(r->rec.stats.delayed > 0);
    /* Coalesced, in order: each write a later put than the one before, the
     * last the last put. */
    for (int i = 1; i < s.n; i++)
        assert_true(s.v1s[i] >= s.v1s[i - 1]);
    assert_int_equal(s.v1s[s.n - 1], PUTS / 3);
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_APPLIED);
}

/* After a quiet spell, an edit goes out at once, without waiting; a second
 * and third edit right after it wait for the slot and become one write of
 * the third. */
static void test_edit_after_quiet_is_written_at_once(void **state) {
    struct rig *r = rig_of(state);
    /* A slot of one second: the edits after the first must land inside it,
     * however slow the loop (a sanitized build on a busy machine can take
     * longer than the default's 100 ms between two puts). */
    r->cfg.object_writes_per_second = 1;
    rig_start(r, "pace-once", true);
    apply_route(r, "shop", 90);
    /* Quiet: the route's write slot is free again. */
    assert_true(support_run_until(&r->k->loop, slot_free, r, RIG_WAIT_MS));
    int seq = kapi_last_seq(r->k);
    uint64_t delayed = r->rec.stats.delayed;
    put_weights(r, "shop", 80);
    assert_true(wait_weight(r, "shop", 80));
    assert_int_equal(r->rec.stats.delayed, delayed); /* not held back */
    put_weights(r, "shop", 70);
    put_weights(r, "shop", 60);
    assert_true(support_run_until(&r->k->loop, one_delayed, r, RIG_WAIT_MS));
    put_weights(r, "shop", 50);
    rig_settle(r);
    assert_true(wait_weight(r, "shop", 50));
    static struct seen s;
    requests_to(r, seq, "PUT", "shop", &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.v1s[0], 80);
    assert_int_equal(s.v1s[1], 50);
    assert_true(r->rec.stats.delayed > delayed);
}

/* ---- outage recovery ---- */

/* The API server answers 503 to everything about the route's IngressRoute
 * (its write, and the probe's read) for a while. The route's backoff is 10
 * minutes; once the server answers again the route converges at once. */
static void test_route_waiting_for_the_api_server_retries_when_it_answers(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.retry_min_ms = LONG_BACKOFF_MS;
    r->cfg.retry_max_ms = 2 * LONG_BACKOFF_MS;
    rig_start(r, "pace-outage", true);
    apply_route(r, "shop", 90);
    assert_true(support_run_until(&r->k->loop, slot_free, r, RIG_WAIT_MS));
    int seq = kapi_last_seq(r->k);
    kapi_fault(r->k, "{\"path_regex\":\"/ingressroutes/shop$\",\"status\":503,\"count\":-1}");
    put_weights(r, "shop", 40);
    /* It failed, and the probe has asked (and been refused) at least once. */
    struct seen_count refused = {r, seq, "GET", 503, 1};
    assert_true(support_run_until(&r->k->loop, requests_seen, &refused, RIG_WAIT_MS));
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_PENDING);
    assert_int_equal(workqueue_delayed(&r->rec.wq), 1);
    kapi_faults_clear(r->k);
    assert_true(wait_weight(r, "shop", 40)); /* long before 10 minutes */
    rig_settle(r);
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_APPLIED);
    assert_int_equal(r->rec.stats.released, 1);
    static struct seen s;
    requests_to(r, seq, "PUT", "shop", &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.status[0], 503);
    assert_int_equal(s.status[1], 200);
}

/* The route's writes fail with 500 while everything else succeeds (an
 * admission webhook refusing it): one early retry after a success, then it
 * waits out its backoff however many other requests succeed. */
static void test_route_failing_alone_gets_one_early_retry(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.retry_min_ms = LONG_BACKOFF_MS;
    r->cfg.retry_max_ms = 2 * LONG_BACKOFF_MS;
    rig_start(r, "pace-alone", true);
    apply_route(r, "shop", 90);
    assert_true(support_run_until(&r->k->loop, slot_free, r, RIG_WAIT_MS));
    int seq = kapi_last_seq(r->k);
    kapi_fault(r->k, "{\"method\":\"PUT\",\"path_regex\":\"/ingressroutes/shop$\",\"status\":500,"
                     "\"count\":-1}");
    put_weights(r, "shop", 40);
    /* The regular try, and the early one the probe's success gave it. */
    struct seen_count two = {r, seq, "PUT", 500, 2};
    assert_true(support_run_until(&r->k->loop, requests_seen, &two, RIG_WAIT_MS));
    assert_true(support_run_until(&r->k->loop, nothing_in_flight, r, RIG_WAIT_MS));
    assert_int_equal(r->rec.stats.released, 1);
    assert_int_equal(r->rec.pace.waiting.count, 0);
    assert_false(uv_is_active((uv_handle_t *)&r->rec.pace.probe));
    /* More successes: other routes written. */
    for (int i = 0; i < 3; i++) {
        char other[16];
        snprintf(other, sizeof other, "other%d", i);
        apply_route(r, other, 30 + i);
    }
    assert_true(support_run_until(&r->k->loop, nothing_in_flight, r, RIG_WAIT_MS));
    static struct seen s;
    requests_to(r, seq, "PUT", "shop", &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(r->rec.stats.released, 1);
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_PENDING);
}

#define PACE_TEST(t) cmocka_unit_test_setup_teardown(t, pace_setup, rig_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        PACE_TEST(test_hot_key_is_written_at_most_n_times_a_second),
        PACE_TEST(test_edit_after_quiet_is_written_at_once),
        PACE_TEST(test_route_waiting_for_the_api_server_retries_when_it_answers),
        PACE_TEST(test_route_failing_alone_gets_one_early_retry),
    };
    return cmocka_run_group_tests(tests, kapi_setup, kapi_teardown);
}
