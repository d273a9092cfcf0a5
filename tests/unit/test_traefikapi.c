/* test_traefikapi.c - sinks/traefikapi.c: what Traefik's API must show for a
 * route, and the verdict on answers of /api/http/services?search=. The
 * answers are trimmed copies of what a real Traefik v3.6 answered for the
 * objects the bridge wrote (tests/real/test_live_real.py runs the real one). */
/* cmocka.h needs these three first; the blank line keeps clang-format from
 * sorting it above them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/model/model.h"
#include "sinks/traefikapi.h"

#define PFX "canary/"

static void build(const char *name, const char *route, const char *weights, struct model_route *r) {
    struct model_input in = {.prefix = PFX, .ns = "default", .name = name, .revision = 7};
    in.route = route;
    in.route_len = route ? strlen(route) : 0;
    in.weights = weights;
    in.weights_len = weights ? strlen(weights) : 0;
    char err[512];
    if (model_build(&in, r, err, sizeof err) != MODEL_BUILT)
        fail_msg("model_build: %s", err);
}

static const char *ROUTE = "match: Host(`shop.example.com`)\n"
                           "services: [{name: shop-v1, port: 80}, {name: shop-v2, port: http}]\n";

/* The inline weighted service of IngressRoute default/shop, a rule's
 * loadBalancer beside it, and the weighted TraefikService of another route
 * (shop-v2) whose name starts the same. */
static const char *ANSWER =
    "[{\"weighted\":{\"services\":[{\"name\":\"default-shop-v1-80\",\"weight\":90},"
    "{\"name\":\"default-shop-v2-http\",\"weight\":%d}]},"
    "\"name\":\"default-shop-38bcef08ab977d6de43a@kubernetescrd\",\"provider\":\"kubernetescrd\","
    "\"type\":\"weighted\"},"
    "{\"loadBalancer\":{},\"name\":\"default-shop-fb074731b647c1e14623@kubernetescrd\","
    "\"provider\":\"kubernetescrd\",\"type\":\"loadbalancer\"},"
    "{\"loadBalancer\":{},\"name\":\"default-shop-v1-80@kubernetescrd\","
    "\"provider\":\"kubernetescrd\"},"
    "{\"weighted\":{\"services\":[{\"name\":\"default-pay-v1-80\",\"weight\":1}]},"
    "\"name\":\"default-shop-v2@kubernetescrd\",\"provider\":\"kubernetescrd\"}]";

static enum traefikapi_verdict judge_text(const char *json, const struct traefikapi_expect *e,
                                          char *why, size_t whylen) {
    cJSON *doc = cJSON_Parse(json);
    assert_non_null(doc);
    enum traefikapi_verdict v = traefikapi_judge(doc, e, "default", "shop", why, whylen);
    cJSON_Delete(doc);
    return v;
}

static void test_expect_owned_inline(void **state) {
    (void)state;
    struct model_route r;
    build("shop", ROUTE, "shop-v1=90, shop-v2=10", &r);
    struct traefikapi_expect e;
    assert_int_equal(traefikapi_expect_build(&r, &e), 0);
    assert_string_equal(e.search, "default-shop");
    assert_null(e.ts);
    assert_true(e.owned);
    assert_false(e.single);
    assert_int_equal(e.n_wants, 2);
    assert_string_equal(e.wants[0].child, "default-shop-v1-80");
    assert_int_equal(e.wants[0].weight, 90);
    assert_string_equal(e.wants[1].child, "default-shop-v2-http");
    assert_string_equal(e.wants[1].service, "shop-v2");
    assert_int_equal(e.wants[1].weight, 10);
    char path[256];
    assert_int_equal(traefikapi_services_path(&e, path, sizeof path), 0);
    assert_string_equal(path, "/api/http/services?search=default-shop&per_page=1000");

    char json[2048], why[256];
    snprintf(json, sizeof json, ANSWER, 10);
    assert_int_equal(judge_text(json, &e, why, sizeof why), TRAEFIKAPI_LIVE);
    snprintf(json, sizeof json, ANSWER, 0);
    assert_int_equal(judge_text(json, &e, why, sizeof why), TRAEFIKAPI_STALE);
    assert_string_equal(why, "reports shop-v2=0 (the route gives it 10)");
    /* Only other routes' services: the route is not loaded (yet). */
    assert_int_equal(judge_text("[{\"weighted\":{\"services\":[]},\"name\":\"default-shop-v2@"
                                "kubernetescrd\",\"provider\":\"kubernetescrd\"}]",
                                &e, why, sizeof why),
                     TRAEFIKAPI_MISSING);
    assert_string_equal(why, "has no weighted service for IngressRoute default/shop");
    assert_int_equal(judge_text("[]", &e, why, sizeof why), TRAEFIKAPI_MISSING);
    assert_int_equal(judge_text("{\"message\":\"x\"}", &e, why, sizeof why), TRAEFIKAPI_BAD);
    /* A service the route no longer has, still weighted in Traefik. */
    assert_int_equal(
        judge_text("[{\"weighted\":{\"services\":[{\"name\":\"default-shop-v1-80\",\"weight\":90},"
                   "{\"name\":\"default-shop-v2-http\",\"weight\":10},{\"name\":\"default-shop-"
                   "v3-80\",\"weight\":5}]},\"name\":\"default-shop-0123456789abcdef0123@"
                   "kubernetescrd\",\"provider\":\"kubernetescrd\"}]",
                   &e, why, sizeof why),
        TRAEFIKAPI_STALE);
    assert_string_equal(why, "still serves default-shop-v3-80");
    /* Another provider's service of the same name is not the route's. */
    assert_int_equal(
        judge_text("[{\"weighted\":{\"services\":[{\"name\":\"default-shop-v1-80\",\"weight\":90},"
                   "{\"name\":\"default-shop-v2-http\",\"weight\":10}]},\"name\":\"default-shop-"
                   "0123456789abcdef0123@file\",\"provider\":\"file\"}]",
                   &e, why, sizeof why),
        TRAEFIKAPI_MISSING);
    traefikapi_expect_free(&e);
    model_route_free(&r);
}

static void test_expect_sticky_traefikservice(void **state) {
    (void)state;
    struct model_route r;
    char doc[512];
    snprintf(doc, sizeof doc, "%ssticky: {cookie: c}\n", ROUTE);
    build("shop", doc, "shop-v1=90, shop-v2=10", &r);
    struct traefikapi_expect e;
    assert_int_equal(traefikapi_expect_build(&r, &e), 0);
    assert_string_equal(e.ts, "default-shop");
    char why[256];
    /* The weighted TraefikService default-shop, as Traefik shows it. */
    assert_int_equal(
        judge_text("[{\"weighted\":{\"services\":[{\"name\":\"default-shop-v1-80\",\"weight\":90},"
                   "{\"name\":\"default-shop-v2-http\",\"weight\":10}],\"sticky\":{\"cookie\":{"
                   "\"name\":\"c\"}}},\"name\":\"default-shop@kubernetescrd\",\"provider\":"
                   "\"kubernetescrd\",\"type\":\"weighted\"}]",
                   &e, why, sizeof why),
        TRAEFIKAPI_LIVE);
    /* An inline weighted service is not where a sticky route's weights are. */
    char json[2048];
    snprintf(json, sizeof json, ANSWER, 10);
    assert_int_equal(judge_text(json, &e, why, sizeof why), TRAEFIKAPI_MISSING);
    traefikapi_expect_free(&e);
    model_route_free(&r);
}

static void test_expect_patched(void **state) {
    (void)state;
    struct model_route r;
    build("shop", NULL, "shop-v2=25", &r);
    struct traefikapi_expect e;
    assert_int_equal(traefikapi_expect_build(&r, &e), 0);
    assert_false(e.owned);
    assert_int_equal(e.n_wants, 1);
    assert_string_equal(e.wants[0].child, "default-shop-v2-");
    assert_false(e.wants[0].exact);
    char json[2048], why[256];
    /* shop-v1 is not in the weights key: its weight is not the bridge's. */
    snprintf(json, sizeof json, ANSWER, 25);
    assert_int_equal(judge_text(json, &e, why, sizeof why), TRAEFIKAPI_LIVE);
    snprintf(json, sizeof json, ANSWER, 10);
    assert_int_equal(judge_text(json, &e, why, sizeof why), TRAEFIKAPI_STALE);
    assert_string_equal(why, "reports shop-v2=10 (the route gives it 25)");
    traefikapi_expect_free(&e);
    model_route_free(&r);
}

static void test_expect_single_service(void **state) {
    (void)state;
    struct model_route r;
    build("one", "match: Host(`one.example.com`)\nservices: [{name: pay-v1, port: 80}]\n", NULL,
          &r);
    struct traefikapi_expect e;
    assert_int_equal(traefikapi_expect_build(&r, &e), 0);
    assert_true(e.single);
    char why[256];
    cJSON *doc = cJSON_Parse("[{\"loadBalancer\":{},\"name\":\"default-one-eba5bfb4e6d2ced703fe@"
                             "kubernetescrd\",\"provider\":\"kubernetescrd\"}]");
    assert_int_equal(traefikapi_judge(doc, &e, "default", "one", why, sizeof why), TRAEFIKAPI_LIVE);
    cJSON_Delete(doc);
    doc = cJSON_Parse("[{\"loadBalancer\":{},\"name\":\"default-one-more-eba5bfb4e6d2ced703fe@"
                      "kubernetescrd\",\"provider\":\"kubernetescrd\"}]");
    assert_int_equal(traefikapi_judge(doc, &e, "default", "one", why, sizeof why),
                     TRAEFIKAPI_MISSING);
    assert_string_equal(why, "has no service for IngressRoute default/one");
    cJSON_Delete(doc);
    traefikapi_expect_free(&e);
    model_route_free(&r);
}

/* Same weights, same signature; another weight, another one. */
static void test_signature(void **state) {
    (void)state;
    struct model_route a, b, c;
    build("shop", ROUTE, "shop-v1=90, shop-v2=10", &a);
    build("shop", ROUTE, "shop-v1=90,shop-v2=10", &b);
    build("shop", ROUTE, "shop-v1=80, shop-v2=20", &c);
    struct traefikapi_expect ea, eb, ec;
    assert_int_equal(traefikapi_expect_build(&a, &ea), 0);
    assert_int_equal(traefikapi_expect_build(&b, &eb), 0);
    assert_int_equal(traefikapi_expect_build(&c, &ec), 0);
    assert_string_equal(ea.sig, eb.sig);
    assert_string_not_equal(ea.sig, ec.sig);
    traefikapi_expect_free(&ea);
    traefikapi_expect_free(&eb);
    traefikapi_expect_free(&ec);
    model_route_free(&a);
    model_route_free(&b);
    model_route_free(&c);
}

static void test_serving_pods(void **state) {
    (void)state;
    cJSON *list = cJSON_Parse(
        "{\"kind\":\"PodList\",\"items\":["
        "{\"metadata\":{\"name\":\"t-1\"},\"status\":{\"phase\":\"Running\",\"conditions\":"
        "[{\"type\":\"Ready\",\"status\":\"True\"}]}},"
        "{\"metadata\":{\"name\":\"t-2\"},\"status\":{\"phase\":\"Pending\"}},"
        "{\"metadata\":{\"name\":\"t-3\",\"deletionTimestamp\":\"2026-01-01T00:00:00Z\"},"
        "\"status\":{\"phase\":\"Running\"}},"
        "{\"metadata\":{\"name\":\"t-4\"},\"status\":{\"phase\":\"Running\",\"conditions\":"
        "[{\"type\":\"Ready\",\"status\":\"False\"}]}},"
        "{\"metadata\":{\"name\":\"t-5\"},\"status\":{\"phase\":\"Running\"}}]}");
    assert_non_null(list);
    const char *names[4];
    assert_int_equal(traefikapi_serving_pods(list, names, 4), 2);
    assert_string_equal(names[0], "t-1");
    assert_string_equal(names[1], "t-5");
    assert_int_equal(traefikapi_serving_pods(list, names, 1), 1);
    cJSON_Delete(list);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expect_owned_inline),
        cmocka_unit_test(test_expect_sticky_traefikservice),
        cmocka_unit_test(test_expect_patched),
        cmocka_unit_test(test_expect_single_service),
        cmocka_unit_test(test_signature),
        cmocka_unit_test(test_serving_pods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
