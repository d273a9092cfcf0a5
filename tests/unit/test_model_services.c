/* test_model_services.c - the services of a route document (bridge/model):
 * sticky sessions (short and full form, every refusal) and services in
 * another namespace (reconcile.allow_cross_namespace). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modeltest.h"

/* ---- sticky ------------------------------------------------------------- */

static void test_sticky_short_form(void **state) {
    (void)state;
    char doc[512];
    snprintf(doc, sizeof doc, "%ssticky: {cookie: shop_canary}\n", SHOP_ROUTE);
    struct model_route r;
    expect_built(doc, NULL, NULL, &r);
    assert_true(r.sticky.enabled);
    assert_string_equal(r.sticky.cookie, "shop_canary");
    /* Nothing else given: all left to Traefik's defaults. */
    assert_false(r.sticky.has_secure);
    assert_false(r.sticky.has_http_only);
    assert_int_equal(r.sticky.same_site, SAME_SITE_UNSET);
    assert_false(r.sticky.has_max_age);
    model_route_free(&r);
    assert_false(r.sticky.enabled);
    assert_null(r.sticky.cookie);

    /* No sticky: not enabled. */
    expect_built(SHOP_ROUTE, NULL, NULL, &r);
    assert_false(r.sticky.enabled);
    assert_null(r.sticky.cookie);
    model_route_free(&r);
}

static void test_sticky_full_form(void **state) {
    (void)state;
    static const struct {
        const char *same_site;
        enum model_same_site want;
    } modes[] = {{"none", SAME_SITE_NONE}, {"lax", SAME_SITE_LAX}, {"strict", SAME_SITE_STRICT}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        char doc[512];
        snprintf(doc, sizeof doc,
                 "%ssticky:\n"
                 "  cookie: __Host-canary\n"
                 "  secure: true\n"
                 "  httpOnly: false\n"
                 "  sameSite: %s\n"
                 "  maxAge: 3600\n",
                 SHOP_ROUTE, modes[i].same_site);
        struct model_route r;
        expect_built(doc, NULL, NULL, &r);
        assert_true(r.sticky.enabled);
        assert_string_equal(r.sticky.cookie, "__Host-canary");
        assert_true(r.sticky.has_secure);
        assert_true(r.sticky.secure);
        assert_true(r.sticky.has_http_only);
        assert_false(r.sticky.http_only);
        assert_int_equal(r.sticky.same_site, modes[i].want);
        assert_true(r.sticky.has_max_age);
        assert_int_equal(r.sticky.max_age, 3600);
        model_route_free(&r);
    }

    /* JSON form, maxAge at both ends of its range. */
    const char *json =
        "{\"match\": \"Host(`a`)\", \"services\": [{\"name\": \"a\", \"port\": 80}], "
        "\"sticky\": {\"cookie\": \"c\", \"maxAge\": 0}}";
    struct model_input in = input(json, NULL, NULL);
    struct model_route r;
    char err[256];
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_true(r.sticky.has_max_age);
    assert_int_equal(r.sticky.max_age, 0);
    model_route_free(&r);
    char doc[512];
    snprintf(doc, sizeof doc, "%ssticky: {cookie: c, maxAge: 2147483647}\n", SHOP_ROUTE);
    in = input(doc, NULL, NULL);
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_int_equal(r.sticky.max_age, MODEL_MAX_AGE_MAX);
    model_route_free(&r);
}

static void test_sticky_errors(void **state) {
    (void)state;
    static const struct {
        const char *sticky, *msg;
    } bad[] = {
        {"shop_canary", "'sticky' must be a mapping such as {cookie: NAME}"},
        {"[cookie]", "'sticky' must be a mapping"},
        {"~", "'sticky' must be a mapping"},
        {"{}", "sticky: 'cookie' is required"},
        {"{secure: true}", "sticky: 'cookie' is required"},
        {"{cookie: \"a b\"}", "sticky: 'cookie' must be a valid cookie name (RFC 6265 token), "
                              "got 'a b'"},
        {"{cookie: \"a=b\"}", "must be a valid cookie name"},
        {"{cookie: \"a;b\"}", "must be a valid cookie name"},
        {"{cookie: \"a`b\"}", "must be a valid cookie name"},
        {"{cookie: \"\"}", "must be a valid cookie name"},
        {"{cookie: 5}", "sticky: 'cookie' must be a valid cookie name (RFC 6265 token), got "
                        "'not a string'"},
        {"{cookie: c, sameSite: relaxed}",
         "sticky: 'sameSite' must be one of none, lax, strict, got 'relaxed'"},
        {"{cookie: c, sameSite: Lax}", "must be one of none, lax, strict, got 'Lax'"},
        {"{cookie: c, sameSite: 1}", "must be one of none, lax, strict, got another type"},
        {"{cookie: c, samesite: lax}", "sticky: unknown field 'samesite'"},
        {"{cookie: c, path: /}", "sticky: unknown field 'path'"},
        {"{cookie: c, maxAge: -1}",
         "sticky: 'maxAge' must be a whole number of seconds from 0 to 2147483647"},
        {"{cookie: c, maxAge: 1.5}", "'maxAge' must be a whole number of seconds"},
        {"{cookie: c, maxAge: 1e3}", "'maxAge' must be a whole number of seconds"},
        {"{cookie: c, maxAge: \"60\"}", "'maxAge' must be a whole number of seconds"},
        {"{cookie: c, maxAge: 2147483648}", "'maxAge' must be a whole number of seconds"},
        {"{cookie: c, secure: \"true\"}", "sticky: 'secure' must be true or false (unquoted)"},
        {"{cookie: c, httpOnly: 1}", "sticky: 'httpOnly' must be true or false"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char doc[512];
        snprintf(doc, sizeof doc, "%ssticky: %s\n", SHOP_ROUTE, bad[i].sticky);
        expect_build_error(doc, NULL, NULL, "route", bad[i].msg);
    }
}

/* ---- cross-namespace services ------------------------------------------- */

static const char *XNS_ROUTE = "match: Host(`a`)\n"
                               "services:\n"
                               "  - {name: shop-v1, port: 80}\n"
                               "  - {name: shop-v2, port: 80, namespace: canary-ns}\n";

static int build_xns(const char *route, bool allow, struct model_route *r, char *err,
                     size_t errlen) {
    struct model_input in = input(route, NULL, NULL);
    in.allow_cross_namespace = allow;
    return model_build(&in, r, err, errlen);
}

static void test_cross_namespace_refused(void **state) {
    (void)state;
    struct model_route r;
    char err[512];
    assert_int_equal(build_xns(XNS_ROUTE, false, &r, err, sizeof err), -1);
    assert_string_equal(err, "canary/default/shop/route: services[1]: 'namespace' is not allowed: "
                             "services must live in the route's namespace; set "
                             "reconcile.allow_cross_namespace: true to allow namespace on "
                             "services");
    assert_null(r.services);
    /* Even the route's own namespace: the rule is "no namespace field". */
    expect_build_error("match: Host(`a`)\nservices: [{name: a, port: 80, namespace: default}]\n",
                       NULL, NULL, "route", "services[0]: 'namespace' is not allowed");
    /* Refused before its value is even looked at. */
    expect_build_error("match: Host(`a`)\nservices: [{name: a, port: 80, namespace: Bad_NS}]\n",
                       NULL, NULL, "route", "set reconcile.allow_cross_namespace: true");
}

static void test_cross_namespace_allowed(void **state) {
    (void)state;
    struct model_route r;
    char err[512];
    if (build_xns(XNS_ROUTE, true, &r, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(r.n_services, 2);
    assert_null(r.services[0].ns);
    assert_string_equal(r.services[1].ns, "canary-ns");
    assert_string_equal(r.services[1].name, "shop-v2");
    model_route_free(&r);

    /* A header rule may send its traffic to the cross-namespace service. */
    struct model_input in =
        input(XNS_ROUTE, "shop-v1=90, shop-v2=10", "- {header: X-A, value: a, service: shop-v2}\n");
    in.allow_cross_namespace = true;
    if (model_build(&in, &r, err, sizeof err) != MODEL_BUILT)
        fail_msg("%s", err);
    assert_int_equal(r.services[1].weight, 10);
    assert_string_equal(r.rules[0].service, "shop-v2");
    model_route_free(&r);

    /* Names stay unique within a route even across namespaces: weights and
     * rules name services by name alone. */
    assert_int_equal(build_xns("match: Host(`a`)\nservices:\n"
                               "  - {name: a, port: 80, namespace: x}\n"
                               "  - {name: a, port: 80, namespace: y}\n",
                               true, &r, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "services[1]: duplicate service 'a'"));
}

static void test_cross_namespace_bad_name(void **state) {
    (void)state;
    static const char *const bad[] = {
        "Canary", "canary_ns", "a.b",
        "-a",     "a-",        "\"\"",
        "5",      "[a]",       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char doc[512], err[512];
        struct model_route r;
        snprintf(doc, sizeof doc,
                 "match: Host(`a`)\nservices: [{name: a, port: 80, namespace: %s}]\n", bad[i]);
        if (build_xns(doc, true, &r, err, sizeof err) != -1)
            fail_msg("namespace %s was accepted", bad[i]);
        if (strncmp(err,
                    PFX "default/shop/route: services[0]: 'namespace' must be a DNS-1123 label",
                    strlen(PFX "default/shop/route: services[0]: 'namespace' must be a DNS-1123 "
                               "label")) != 0)
            fail_msg("namespace %s: unexpected error '%s'", bad[i], err);
        assert_null(r.services);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sticky_short_form),
        cmocka_unit_test(test_sticky_full_form),
        cmocka_unit_test(test_sticky_errors),
        cmocka_unit_test(test_cross_namespace_refused),
        cmocka_unit_test(test_cross_namespace_allowed),
        cmocka_unit_test(test_cross_namespace_bad_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
