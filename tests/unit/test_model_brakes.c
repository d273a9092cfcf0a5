/* test_model_brakes.c - the brakes in the route model (bridge/model): the
 * `freeze` and `abort` leaves, the abort weights model_build makes, the
 * route document's `maxStep`, the mark of a deliberate step in `weights`,
 * and model_weights_step, how far new weights move traffic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modeltest.h"

static const char *ROUTE = "match: Host(`shop.example.com`)\n"
                           "services:\n"
                           "  - name: shop-v1\n"
                           "    port: 80\n"
                           "  - name: shop-v2\n"
                           "    port: 80\n"
                           "  - name: shop-v3\n"
                           "    port: 80\n";
static const char *HEADERS = "- {header: X-Canary, value: always, service: shop-v2}\n";

/* ---- the leaves ---------------------------------------------------------- */

static void test_freeze_and_abort_are_leaves(void **state) {
    (void)state;
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1], err[256];
    enum model_leaf leaf;
    assert_int_equal(
        model_parse_key(PFX, PFX "default/shop/freeze", ns, name, &leaf, err, sizeof err), 0);
    assert_int_equal(leaf, LEAF_FREEZE);
    assert_int_equal(
        model_parse_key(PFX, PFX "default/shop/abort", ns, name, &leaf, err, sizeof err), 0);
    assert_int_equal(leaf, LEAF_ABORT);
    assert_string_equal(model_leaf_names[LEAF_FREEZE], "freeze");
    assert_string_equal(model_leaf_names[LEAF_ABORT], "abort");
    assert_int_equal(
        model_parse_key(PFX, PFX "default/shop/frozen", ns, name, &leaf, err, sizeof err), -1);
    assert_string_equal(
        err,
        "unknown leaf (expected route, weights, headers, status, freeze, abort, plan or pause)");
}

/* ---- the mark of a deliberate step --------------------------------------- */

static void expect_forced(const char *text, bool want) {
    struct model_weight *w;
    size_t n;
    bool forced = !want;
    char err[256] = "";
    if (model_parse_weights_forced(text, strlen(text), &w, &n, &forced, err, sizeof err) != 0)
        fail_msg("'%s' refused: %s", text, err);
    if (forced != want)
        fail_msg("'%s': forced %d, want %d", text, forced, want);
    assert_int_equal(n, 2);
    assert_string_equal(w[0].service, "shop-v1");
    assert_int_equal(w[0].weight, 10);
    assert_int_equal(w[1].weight, 90);
    model_weights_free(w, n);
}

static void expect_mark_error(const char *text, bool take_mark, const char *msg) {
    struct model_weight *w;
    size_t n;
    bool forced = true;
    char err[256] = "";
    int rc = take_mark
                 ? model_parse_weights_forced(text, strlen(text), &w, &n, &forced, err, sizeof err)
                 : model_parse_weights(text, strlen(text), &w, &n, err, sizeof err);
    if (rc != -1)
        fail_msg("'%s' accepted; expected '%s'", text, msg);
    if (!strstr(err, msg))
        fail_msg("'%s': expected '%s', got '%s'", text, msg, err);
    assert_null(w);
    assert_false(take_mark && forced);
}

static void test_weights_mark_a_deliberate_step(void **state) {
    (void)state;
    expect_forced("shop-v1=10, shop-v2=90", false);
    expect_forced("shop-v1=10, shop-v2=90 !", true);
    expect_forced("shop-v1=10, shop-v2=90!", true);
    expect_forced("shop-v1=10 shop-v2=90 ,!\n", true);
    expect_forced("shop-v1: 10\nshop-v2: 90\n_force: true\n", true);
    expect_forced("{\"_force\": true, \"shop-v1\": 10, \"shop-v2\": 90}", true);
    expect_forced("{shop-v1: 10, shop-v2: 90, _force: false}", false);
    expect_mark_error("shop-v1=10 ! shop-v2=90", true, "it goes last");
    expect_mark_error("shop-v1=10!, shop-v2=90", true, "it goes last");
    expect_mark_error("{shop-v1: 10, shop-v2: 90, _force: \"yes\"}", true,
                      "'_force' must be true or false");
    expect_mark_error("{_force: true}", true, "no weights given");
    /* Where no mark is taken (ramp plans), it is an error, not ignored. */
    expect_mark_error("shop-v1=10, shop-v2=90 !", false, "only taken in the weights key");
    expect_mark_error("{shop-v1: 10, shop-v2: 90, _force: true}", false,
                      "service name '_force' is not a valid DNS-1123 label");
}

/* ---- maxStep ------------------------------------------------------------- */

static void test_route_max_step(void **state) {
    (void)state;
    char doc[512], err[512] = "";
    struct model_route r;
    snprintf(doc, sizeof doc, "%smaxStep: 20\n", ROUTE);
    struct model_input in = input(doc, NULL, NULL);
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_true(r.has_max_step);
    assert_int_equal(r.max_step, 20);
    model_route_free(&r);
    in = input(ROUTE, NULL, NULL);
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_false(r.has_max_step);
    model_route_free(&r);
    static const struct {
        const char *field, *msg;
    } bad[] = {
        {"maxStep: 101", "'maxStep' must be a whole number of percentage points from 0"},
        {"maxStep: -1", "'maxStep' must be a whole number"},
        {"maxStep: \"20\"", "'maxStep' must be a whole number"},
        {"max_step: 20", "unknown field 'max_step' (did you mean 'maxStep'?)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(doc, sizeof doc, "%s%s\n", ROUTE, bad[i].field);
        in = input(doc, NULL, NULL);
        assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_INVALID);
        if (!strstr(err, "canary/default/shop/route: ") || !strstr(err, bad[i].msg))
            fail_msg("%s: expected '%s', got '%s'", bad[i].field, bad[i].msg, err);
    }
}

static void test_build_says_whether_the_weights_are_forced(void **state) {
    (void)state;
    struct model_route r;
    char err[512] = "";
    struct model_input in = input(ROUTE, "shop-v1=10, shop-v2=90, shop-v3=0 !", NULL);
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_true(r.weights_forced);
    assert_int_equal(r.services[1].weight, 90);
    model_route_free(&r);
    in = input(NULL, "shop-v1=10, shop-v2=90", NULL); /* patched */
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_false(r.weights_forced);
    model_route_free(&r);
}

/* ---- abort --------------------------------------------------------------- */

static void test_abort_sends_everything_to_the_first_service(void **state) {
    (void)state;
    struct model_route r;
    char err[512] = "";
    struct model_input in = input(ROUTE, "shop-v1=10, shop-v2=60, shop-v3=30", HEADERS);
    in.abort = true;
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_true(r.aborted);
    assert_int_equal(r.n_services, 3);
    assert_int_equal(r.services[0].weight, 100);
    assert_int_equal(r.services[1].weight, 0);
    assert_int_equal(r.services[2].weight, 0);
    assert_int_equal(r.n_rules, 0); /* header rules would still reach the canary */
    assert_int_equal(r.n_weights, 0);
    model_route_free(&r);
    /* Neither a broken weights key nor a broken headers key stops it. */
    in = input(ROUTE, "shop-v1=lots", "- {header: 'X Bad', value: a, service: nowhere}\n");
    in.abort = true;
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_int_equal(r.services[0].weight, 100);
    model_route_free(&r);
    /* Without the brake the same keys fail. */
    in.abort = false;
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_INVALID);
    /* A broken route document does: there is no first service to name. */
    in = input("match: Host(`a`)\n", "shop-v1=10, shop-v2=90", NULL);
    in.abort = true;
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_INVALID);
    assert_non_null(strstr(err, "canary/default/shop/route: 'services' is required"));
}

static void test_abort_in_patched_mode_uses_the_weights_key_order(void **state) {
    (void)state;
    struct model_route r;
    char err[512] = "";
    struct model_input in = input(NULL, "shop-v1: 5\nshop-v2: 95\n", NULL);
    in.abort = true;
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_true(r.aborted);
    assert_false(r.owned);
    assert_int_equal(r.n_weights, 2);
    assert_string_equal(r.weights[0].service, "shop-v1");
    assert_int_equal(r.weights[0].weight, 100);
    assert_int_equal(r.weights[1].weight, 0);
    model_route_free(&r);
    /* Only keys it cannot use: nothing desired, as without the brake. */
    in = input(NULL, NULL, NULL);
    in.abort = true;
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_ABSENT);
}

/* ---- model_weights_step -------------------------------------------------- */

static double step(const struct model_weight *a, size_t na, const struct model_weight *b, size_t nb,
                   const char **svc, double *from, double *to) {
    return model_weights_step(a, na, b, nb, svc, from, to);
}

static void test_weights_step(void **state) {
    (void)state;
    const char *svc;
    double from, to;
    struct model_weight now[] = {{"shop-v1", 90}, {"shop-v2", 10}};
    struct model_weight next[] = {{"shop-v1", 45}, {"shop-v2", 55}};
    /* Both move 45 points: the one that grows is named. */
    assert_true(step(now, 2, next, 2, &svc, &from, &to) == 45);
    assert_string_equal(svc, "shop-v2");
    assert_true(from == 10 && to == 55);
    /* Relative weights: 9/1 is 90/10. */
    struct model_weight same[] = {{"shop-v2", 1}, {"shop-v1", 9}};
    assert_true(step(now, 2, same, 2, &svc, &from, &to) == 0);
    /* A service that appears or goes counts from or to 0. */
    struct model_weight one[] = {{"shop-v1", 1}};
    struct model_weight three[] = {{"shop-v1", 2}, {"shop-v2", 1}, {"shop-v3", 1}};
    assert_true(step(one, 1, three, 3, &svc, &from, &to) == 50);
    assert_string_equal(svc, "shop-v1"); /* falls 50; the others grow 25 each */
    assert_true(from == 100 && to == 50);
    assert_true(step(three, 3, one, 1, &svc, &from, &to) == 50);
    assert_string_equal(svc, "shop-v1");
    struct model_weight third[] = {{"shop-v1", 1}, {"shop-v2", 1}, {"shop-v3", 1}};
    double d = step(one, 1, third, 3, &svc, &from, &to);
    assert_true(d > 66.66 && d < 66.67);
    /* Nothing flows now: nothing to move. */
    struct model_weight zero[] = {{"shop-v1", 0}, {"shop-v2", 0}};
    assert_true(step(zero, 2, next, 2, &svc, &from, &to) == 0);
    assert_null(svc);
    assert_true(step(NULL, 0, next, 2, &svc, &from, &to) == 0);
    assert_null(svc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_freeze_and_abort_are_leaves),
        cmocka_unit_test(test_weights_mark_a_deliberate_step),
        cmocka_unit_test(test_route_max_step),
        cmocka_unit_test(test_build_says_whether_the_weights_are_forced),
        cmocka_unit_test(test_abort_sends_everything_to_the_first_service),
        cmocka_unit_test(test_abort_in_patched_mode_uses_the_weights_key_order),
        cmocka_unit_test(test_weights_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
