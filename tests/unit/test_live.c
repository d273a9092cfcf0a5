/* test_live.c - bridge/core/reconcile_live.c: confirmation rounds against
 * scripted Traefik APIs (fakehttp): pending until every instance shows the
 * weights, then live (timed from the source change); stale past the
 * timeout, naming the first lagging instance and what it reports, and live
 * again once it catches up; the same weights again ask nothing; an instance
 * that does not answer is named; a route forgotten or a checker stopped with
 * requests in flight calls nothing and leaks nothing. */
/* cmocka.h needs these three first; the blank line keeps clang-format from
 * sorting it above them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/reconcile_live.h"
#include "bridge/lib/http.h"
#include "fakehttp.h"
#include "support.h"

#define ID "default/shop"

static const char *ROUTE = "match: Host(`shop.example.com`)\n"
                           "services: [{name: shop-v1, port: 80}, {name: shop-v2, port: 80}]\n";

/* One scripted Traefik: answers with v2's weight, or not at all. */
struct traefik {
    struct fakehttp srv;
    int v2;      /* shop-v2's weight; shop-v1 has 100 - v2 */
    bool silent; /* leave requests hanging */
    unsigned asked, asked_all;
};

struct rig {
    uv_loop_t loop;
    struct logger log;
    struct http_client *http;
    struct traefik t[2];
    char urls_text[2][64];
    char *urls[2];
    struct traefikapi_settings cfg;
    struct live_checker lc;
    unsigned changed, live, not_live;
    double live_seconds;
    char not_live_instance[128], not_live_why[256];
};

#define BURST 12 /* routes r0..r11, more than a round asks one by one */

/* Every route's weighted service (the answer to the list of all). */
static void send_all(struct traefik *t, struct fakehttp_conn *c) {
    char body[8192];
    size_t n = (size_t)snprintf(body, sizeof body, "[");
    for (int k = 0; k < BURST; k++)
        n += (size_t)snprintf(
            body + n, sizeof body - n,
            "%s{\"name\":\"default-r%d-38bcef08ab977d6de43a@kubernetescrd\",\"provider\":"
            "\"kubernetescrd\",\"weighted\":{\"services\":[{\"name\":\"default-shop-v1-80\","
            "\"weight\":%d},{\"name\":\"default-shop-v2-80\",\"weight\":%d}]}}",
            k ? "," : "", k, 100 - t->v2, t->v2);
    snprintf(body + n, sizeof body - n, "]");
    fakehttp_send_json(c, 200, body);
}

static void dispatch(struct fakehttp *srv, struct fakehttp_conn *c, const struct fakehttp_req *rq) {
    struct traefik *t = srv->data;
    t->asked++;
    if (strcmp(rq->target, TRAEFIKAPI_ALL_SERVICES) == 0) {
        t->asked_all++;
        send_all(t, c);
        return;
    }
    assert_string_equal(rq->target, "/api/http/services?search=default-shop&per_page=1000");
    if (t->silent)
        return;
    char body[512];
    snprintf(body, sizeof body,
             "[{\"name\":\"default-shop-38bcef08ab977d6de43a@kubernetescrd\",\"provider\":"
             "\"kubernetescrd\",\"weighted\":{\"services\":[{\"name\":\"default-shop-v1-80\","
             "\"weight\":%d},{\"name\":\"default-shop-v2-80\",\"weight\":%d}]}}]",
             100 - t->v2, t->v2);
    fakehttp_send_json(c, 200, body);
}

static void on_changed(void *user, const char *id) {
    struct rig *r = user;
    (void)id;
    r->changed++;
}

static void on_live(void *user, const char *id, double seconds) {
    struct rig *r = user;
    (void)id;
    r->live++;
    r->live_seconds = seconds;
}

static void on_not_live(void *user, const char *id, const char *instance, const char *why) {
    struct rig *r = user;
    assert_string_equal(id, ID);
    r->not_live++;
    snprintf(r->not_live_instance, sizeof r->not_live_instance, "%s", instance);
    snprintf(r->not_live_why, sizeof r->not_live_why, "%s", why);
}

/* Two instances; the second's port is closed when !second_up, and its URL
 * carries a user and password with userinfo. */
static struct rig *rig_new(bool second_up, bool userinfo) {
    struct rig *r = calloc(1, sizeof *r);
    assert_non_null(r);
    assert_int_equal(uv_loop_init(&r->loop), 0);
    logger_init(&r->log, LOG_LVL_ERROR);
    r->http = http_client_new(&r->loop, &r->log);
    assert_non_null(r->http);
    for (int i = 0; i < 2; i++) {
        fakehttp_start(&r->t[i].srv, &r->loop, dispatch, &r->t[i]);
        r->t[i].v2 = 10;
        snprintf(r->urls_text[i], sizeof r->urls_text[i], "http://%s127.0.0.1:%d/",
                 i == 1 && userinfo ? "bridge:s3cret@" : "", r->t[i].srv.port);
        r->urls[i] = r->urls_text[i];
    }
    if (!second_up)
        fakehttp_close(&r->t[1].srv);
    r->cfg = (struct traefikapi_settings){.urls = r->urls,
                                          .n_urls = 2,
                                          .interval_ms = 10,
                                          .timeout_ms = 150,
                                          .request_timeout_ms = 2000};
    assert_int_equal(live_init(&r->lc, &r->loop, &r->log, &r->cfg, r->http, NULL), 0);
    r->lc.hooks = (struct live_hooks){on_changed, on_live, on_not_live, r};
    return r;
}

static void rig_free(struct rig *r) {
    live_close(&r->lc);
    fakehttp_close(&r->t[0].srv);
    fakehttp_close(&r->t[1].srv);
    http_client_close(r->http);
    support_drain(&r->loop);
    live_free(&r->lc);
    assert_int_equal(uv_loop_close(&r->loop), 0);
    free(r);
}

static void expect_route(struct rig *r, const char *name, const char *weights, uint64_t origin_ns) {
    struct model_input in = {.prefix = "canary/", .ns = "default", .name = name, .revision = 3};
    in.route = ROUTE;
    in.route_len = strlen(ROUTE);
    in.weights = weights;
    in.weights_len = strlen(weights);
    struct model_route m;
    char err[256];
    assert_int_equal(model_build(&in, &m, err, sizeof err), MODEL_BUILT);
    char id[64];
    snprintf(id, sizeof id, "default/%s", name);
    live_expect(&r->lc, id, &m, origin_ns);
    model_route_free(&m);
}

static void expect(struct rig *r, const char *weights, uint64_t origin_ns) {
    expect_route(r, "shop", weights, origin_ns);
}

static enum live_served served(struct rig *r) {
    struct live_view v;
    assert_true(live_view(&r->lc, ID, &v));
    return v.served;
}

static bool is_live(void *arg) {
    return served(arg) == LIVE_LIVE;
}

static bool is_stale(void *arg) {
    return served(arg) == LIVE_STALE;
}

static void test_live_then_same_weights_ask_nothing(void **state) {
    (void)state;
    struct rig *r = rig_new(true, false);
    uint64_t origin = uv_hrtime();
    expect(r, "shop-v1=90, shop-v2=10", origin);
    assert_int_equal(served(r), LIVE_PENDING);
    assert_true(support_run_until(&r->loop, is_live, r, 5000));
    assert_int_equal(r->live, 1);
    assert_true(r->live_seconds >= 0 && r->live_seconds < 5);
    assert_true(r->t[0].asked >= 1 && r->t[1].asked >= 1);
    struct live_view v;
    assert_true(live_view(&r->lc, ID, &v));
    assert_null(v.reason);
    assert_true(v.live_at > 1.7e9);
    /* The same weights (a resync's pass): nothing more is asked. */
    uint64_t requests = r->lc.requests;
    expect(r, "shop-v1=90,shop-v2=10", 0);
    support_run_for(&r->loop, 100);
    assert_int_equal(r->lc.requests, requests);
    assert_int_equal(served(r), LIVE_LIVE);
    rig_free(r);
}

static void test_stale_names_the_lagging_instance_then_live(void **state) {
    (void)state;
    struct rig *r = rig_new(true, false);
    r->t[0].v2 = 50; /* the first loads the change, the second does not */
    expect(r, "shop-v1=50, shop-v2=50", 0);
    assert_true(support_run_until(&r->loop, is_stale, r, 5000));
    assert_int_equal(r->not_live, 1);
    assert_string_equal(r->not_live_instance, r->urls[1]);
    assert_string_equal(r->not_live_why, "reports shop-v1=90 (the route gives it 50)");
    struct live_view v;
    assert_true(live_view(&r->lc, ID, &v));
    char want[256];
    snprintf(want, sizeof want, "%s reports shop-v1=90 (the route gives it 50)", r->urls[1]);
    assert_string_equal(v.reason, want);
    assert_int_equal(r->live, 0);
    /* It catches up: asked again after a timeout, the route is live. */
    r->t[1].v2 = 50;
    assert_true(support_run_until(&r->loop, is_live, r, 5000));
    assert_int_equal(r->live, 1);
    assert_true(r->live_seconds < 0); /* no source change to time from */
    assert_int_equal(r->not_live, 1); /* told once per change */
    rig_free(r);
}

static void test_an_instance_that_does_not_answer_is_named(void **state) {
    (void)state;
    struct rig *r = rig_new(false, true);
    expect(r, "shop-v1=90, shop-v2=10", 0);
    assert_true(support_run_until(&r->loop, is_stale, r, 5000));
    struct live_view v;
    assert_true(live_view(&r->lc, ID, &v));
    /* Named without the password its URL carries. */
    char want[128];
    snprintf(want, sizeof want, "http://127.0.0.1:%d/ does not answer: ", r->t[1].srv.port);
    assert_memory_equal(v.reason, want, strlen(want));
    assert_null(strstr(v.reason, "s3cret"));
    snprintf(want, sizeof want, "http://127.0.0.1:%d/", r->t[1].srv.port);
    assert_string_equal(r->not_live_instance, want);
    assert_null(strstr(r->not_live_instance, "s3cret"));
    rig_free(r);
}

static bool asked_both(void *arg) {
    struct rig *r = arg;
    return r->t[0].asked && r->t[1].asked;
}

static void test_forget_and_stop_with_requests_in_flight(void **state) {
    (void)state;
    struct rig *r = rig_new(true, false);
    r->t[0].silent = r->t[1].silent = true;
    expect(r, "shop-v1=90, shop-v2=10", 0);
    assert_true(support_run_until(&r->loop, asked_both, r, 5000));
    live_forget(&r->lc, ID);
    struct live_view v;
    assert_false(live_view(&r->lc, ID, &v));
    live_stop(&r->lc); /* cancels the two requests: no hook, no leak */
    support_run_for(&r->loop, 50);
    assert_int_equal(r->live + r->not_live, 0);
    rig_free(r);
}

static bool all_live(void *arg) {
    struct rig *r = arg;
    return r->live == BURST;
}

/* A burst of routes: one list of all services per instance and round, not
 * one search per route. */
static void test_a_burst_is_asked_in_one_list_per_instance(void **state) {
    (void)state;
    struct rig *r = rig_new(true, false);
    r->t[0].v2 = r->t[1].v2 = 30;
    for (int k = 0; k < BURST; k++) {
        char name[16];
        snprintf(name, sizeof name, "r%d", k);
        expect_route(r, name, "shop-v1=70, shop-v2=30", 0);
    }
    assert_true(support_run_until(&r->loop, all_live, r, 5000));
    assert_int_equal(r->lc.requests, 2 * r->lc.rounds);
    assert_int_equal(r->t[0].asked, r->t[0].asked_all);
    assert_true(r->t[0].asked_all >= 1);
    rig_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live_then_same_weights_ask_nothing),
        cmocka_unit_test(test_stale_names_the_lagging_instance_then_live),
        cmocka_unit_test(test_an_instance_that_does_not_answer_is_named),
        cmocka_unit_test(test_forget_and_stop_with_requests_in_flight),
        cmocka_unit_test(test_a_burst_is_asked_in_one_list_per_instance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
