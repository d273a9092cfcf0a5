/* test_model.c - keys and values -> struct model_route (bridge/model).
 *
 * Covers key parsing, the three equivalent weights forms, every class of bad
 * input the model refuses in the weights and the route document (see the
 * top comment of bridge/model/model.c), and that every error message starts
 * with the full key it is about. Header rules: test_model_headers.c; sticky
 * and cross-namespace services: test_model_services.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modeltest.h"

/* ---- model_parse_key ---------------------------------------------------- */

static void test_parse_key_good(void **state) {
    (void)state;
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1], err[256];
    enum model_leaf leaf;
    static const struct {
        const char *key;
        enum model_leaf leaf;
    } cases[] = {{PFX "default/shop/route", LEAF_ROUTE},
                 {PFX "default/shop/weights", LEAF_WEIGHTS},
                 {PFX "default/shop/headers", LEAF_HEADERS},
                 {PFX "default/shop/status", LEAF_STATUS}};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(model_parse_key(PFX, cases[i].key, ns, name, &leaf, err, sizeof err), 0);
        assert_string_equal(ns, "default");
        assert_string_equal(name, "shop");
        assert_int_equal(leaf, cases[i].leaf);
    }
    assert_int_equal(
        model_parse_key(PFX, PFX "team-1/shop.v2/weights", ns, name, &leaf, err, sizeof err), 0);
    assert_string_equal(ns, "team-1");
    assert_string_equal(name, "shop.v2");
    assert_int_equal(model_parse_key("", "a/b/route", ns, name, &leaf, err, sizeof err), 0);
    assert_string_equal(name, "b");
}

static void test_parse_key_bad(void **state) {
    (void)state;
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1], err[256];
    enum model_leaf leaf;
    char long_ns[128], long_name[300];
    snprintf(long_ns, sizeof long_ns, PFX "%064d/shop/route", 0);
    memset(long_name, 'a', sizeof long_name);
    memcpy(long_name, PFX "ns/", 10);
    strcpy(long_name + 10 + 254, "/route");
    const char *bad[] = {"other/default/shop/route",
                         PFX "default/shop",
                         PFX "default/shop/route/extra",
                         PFX "Default/shop/route",
                         PFX "-ns/shop/route",
                         PFX "ns-/shop/route",
                         PFX "default/shop_v1/route",
                         PFX "default/.shop/route",
                         PFX "default/shop../route",
                         PFX "default/shop/other",
                         PFX "default/shop/",
                         PFX "/shop/route",
                         PFX "default//route",
                         long_ns,
                         long_name};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (model_parse_key(PFX, bad[i], ns, name, &leaf, err, sizeof err) != -1)
            fail_msg("key %s was accepted", bad[i]);
        assert_true(err[0] != '\0');
    }
}

static void test_dns_names(void **state) {
    (void)state;
    char s[300];
    assert_true(model_dns1123_label("a"));
    assert_true(model_dns1123_label("a-1"));
    assert_true(model_dns1123_label("0a"));
    assert_false(model_dns1123_label(""));
    assert_false(model_dns1123_label("-a"));
    assert_false(model_dns1123_label("a-"));
    assert_false(model_dns1123_label("a.b"));
    assert_false(model_dns1123_label("A"));
    memset(s, 'a', 63);
    s[63] = '\0';
    assert_true(model_dns1123_label(s));
    s[63] = 'a';
    s[64] = '\0';
    assert_false(model_dns1123_label(s));
    assert_true(model_dns1123_subdomain("a.b-c.d"));
    assert_false(model_dns1123_subdomain("a..b"));
    assert_false(model_dns1123_subdomain(".a"));
    assert_false(model_dns1123_subdomain("a."));
    assert_false(model_dns1123_subdomain("a.-b"));
    memset(s, 'a', 253);
    s[253] = '\0';
    assert_true(model_dns1123_subdomain(s));
    s[253] = 'a';
    s[254] = '\0';
    assert_false(model_dns1123_subdomain(s));
}

/* ---- weights ------------------------------------------------------------ */

static void expect_weights(const char *text) {
    struct model_weight *w;
    size_t n;
    char err[256];
    if (model_parse_weights(text, strlen(text), &w, &n, err, sizeof err) != 0)
        fail_msg("'%s' refused: %s", text, err);
    assert_int_equal(n, 2);
    assert_string_equal(w[0].service, "shop-v1");
    assert_int_equal(w[0].weight, 90);
    assert_string_equal(w[1].service, "shop-v2");
    assert_int_equal(w[1].weight, 10);
    model_weights_free(w, n);
}

static void test_weights_forms_equal(void **state) {
    (void)state;
    expect_weights("{\"shop-v1\": 90, \"shop-v2\": 10}");
    expect_weights("shop-v1: 90\nshop-v2: 10\n");
    expect_weights("shop-v1=90, shop-v2=10");
    expect_weights("shop-v1=90,shop-v2=10\n");
    expect_weights("shop-v1=90 shop-v2=10");
    expect_weights("shop-v1=90\nshop-v2=10\n");
    expect_weights("  shop-v1 = 90 ,\r\n shop-v2 =10\n\n");
    /* A leading UTF-8 byte order mark (Windows editors), in every form. */
    expect_weights("\xEF\xBB\xBF{\"shop-v1\": 90, \"shop-v2\": 10}");
    expect_weights("\xEF\xBB\xBFshop-v1: 90\nshop-v2: 10\n");
    expect_weights("\xEF\xBB\xBFshop-v1=90, shop-v2=10");
}

static void expect_weights_error(const char *text, const char *msg) {
    struct model_weight *w = (struct model_weight *)1;
    size_t n = 99;
    char err[256] = "";
    if (model_parse_weights(text, strlen(text), &w, &n, err, sizeof err) != -1)
        fail_msg("'%s' was accepted", text);
    if (!strstr(err, msg))
        fail_msg("'%s': expected '%s' in '%s'", text, msg, err);
    assert_null(w);
    assert_int_equal(n, 0);
}

static void test_weights_errors(void **state) {
    (void)state;
    expect_weights_error("{\"a\": 0, \"b\": 0}", "all weights are zero");
    expect_weights_error("a: 0\nb: 0\n", "all weights are zero");
    expect_weights_error("a=0, b=0", "all weights are zero");
    expect_weights_error("{\"a\": -5, \"b\": 1}", "weight for 'a' must be a non-negative integer, "
                                                  "got -5");
    expect_weights_error("a=-5, b=1", "weight for 'a' must be a non-negative integer, got -5");
    expect_weights_error("a: 1\nb: 1.5\n", "weight for 'b' must be a non-negative integer, "
                                           "got 1.5");
    expect_weights_error("a: 1\nb: 10.0\n", "got 10.0");
    expect_weights_error("a: 1e1\n", "got 1e1");
    expect_weights_error("a=1.5", "got 1.5");
    expect_weights_error("a: ten\n", "got the string \"ten\"");
    expect_weights_error("a=ten", "got ten");
    /* A quoted number is a string, and a string is not a weight. */
    expect_weights_error("{\"a\": \"10\"}", "got the string \"10\"");
    expect_weights_error("a: true\n", "got true");
    expect_weights_error("a:\n", "weight for 'a' is missing");
    expect_weights_error("a=", "weight for 'a' is missing");
    expect_weights_error("a=1, a=2", "duplicate service 'a'");
    expect_weights_error("a: 1\na: 2\n", "duplicate key 'a'");
    expect_weights_error("", "empty value");
    expect_weights_error("{}", "no weights given");
    expect_weights_error("Shop_V1: 1\n", "service name 'Shop_V1' is not a valid DNS-1123 label");
    expect_weights_error("Shop_V1=1", "not a valid DNS-1123 label");
    expect_weights_error("[1, 2]", "weights must be a mapping");
    expect_weights_error("just words", "weights must be a mapping");
    expect_weights_error("a: 1000001\n", "must be at most 1000000, got 1000001");
    expect_weights_error("a=99999999999", "must be at most 1000000");
    expect_weights_error("a=1 b", "expected name=weight, got 'b'");
}

static void test_weights_max_ok(void **state) {
    (void)state;
    struct model_weight *w;
    size_t n;
    char err[256];
    const char *text = "a: 1000000\nb: 0\n";
    assert_int_equal(model_parse_weights(text, strlen(text), &w, &n, err, sizeof err), 0);
    assert_int_equal(w[0].weight, MODEL_WEIGHT_MAX);
    assert_int_equal(w[1].weight, 0);
    model_weights_free(w, n);
}

/* ---- model_build -------------------------------------------------------- */

static void test_build_absent(void **state) {
    (void)state;
    struct model_input in = input(NULL, NULL, NULL);
    struct model_route r;
    char err[256];
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_ABSENT);
    assert_null(r.ns);
}

/* A route document without weights plus `shop-v2=10` once gave shop-v1
 * Traefik's default of 1: 91% to the canary, unsaid. */
static void test_build_partial_weights_fail(void **state) {
    (void)state;
    const char *doc = "match: Host(`a`)\n"
                      "services:\n"
                      "  - {name: shop-v1, port: 80}\n"
                      "  - {name: shop-v2, port: 80}\n"
                      "  - {name: shop-v3, port: 80}\n";
    struct model_input in = input(doc, "shop-v2=10", NULL);
    struct model_route r;
    char err[512] = "";
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_INVALID);
    if (!strstr(err, "canary/default/shop/weights: no explicit weight for shop-v1, shop-v3"))
        fail_msg("unexpected error: %s", err);
    assert_null(r.services);
    /* Every service named: fine; and without a weights key the default of 1
     * still applies (the document alone says "equal"). */
    in = input(doc, "shop-v1=90, shop-v2=10, shop-v3=0", NULL);
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    model_route_free(&r);
    in = input(doc, NULL, NULL);
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_int_equal(r.services[0].weight, 1);
    assert_false(r.weights_held);
    model_route_free(&r);
}

/* Deleting `weights` never moves traffic: the weights in force (given by the
 * caller from the live object) stay; a newer route document's own weights win. */
static void test_build_held_weights(void **state) {
    (void)state;
    const char *doc = "match: Host(`a`)\n"
                      "services:\n"
                      "  - {name: shop-v1, port: 80, weight: 90}\n"
                      "  - {name: shop-v2, port: 80}\n"
                      "  - {name: shop-v3, port: 80}\n";
    struct model_weight held[] = {{"shop-v1", 0}, {"shop-v2", 100}};
    struct model_input in = input(doc, NULL, NULL);
    in.held = held;
    in.n_held = 2;
    in.route_rev = 7;
    struct model_route r;
    char err[512] = "";
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_true(r.weights_held);
    assert_int_equal(r.route_rev, 7);
    assert_int_equal(r.services[0].weight, 0);
    assert_int_equal(r.services[1].weight, 100);
    assert_int_equal(r.services[2].weight, 1); /* new service: nothing in force */
    model_route_free(&r);
    in.held_doc_new = true; /* the document changed since: its weight 90 is a new value */
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_int_equal(r.services[0].weight, 90);
    assert_int_equal(r.services[1].weight, 100);
    assert_true(r.weights_held);
    model_route_free(&r);
    /* A weights key is a new value too: nothing held. */
    in = input(doc, "shop-v1=1, shop-v2=1, shop-v3=1", NULL);
    in.held = held;
    in.n_held = 2;
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_false(r.weights_held);
    assert_int_equal(r.services[1].weight, 1);
    model_route_free(&r);
}

static void test_build_owned(void **state) {
    (void)state;
    struct model_input in = input("match: Host(`a`)\n"
                                  "entryPoints: [websecure]\n"
                                  "priority: 10\n"
                                  "services:\n"
                                  "  - {name: shop-v1, port: 80, weight: 100}\n"
                                  "  - {name: shop-v2, port: http}\n"
                                  "  - {name: shop-v3, port: 8080, weight: 5}\n"
                                  "middlewares: [auth, strip.prefix]\n"
                                  "tls: {secretName: shop-tls}\n",
                                  "shop-v1=90, shop-v2=10", NULL);
    struct model_route r;
    char err[256];
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_true(r.owned);
    assert_string_equal(r.ns, "default");
    assert_string_equal(r.name, "shop");
    assert_int_equal(r.revision, 42);
    assert_string_equal(r.match, "Host(`a`)");
    assert_int_equal(r.n_entry_points, 1);
    assert_string_equal(r.entry_points[0], "websecure");
    assert_true(r.has_priority);
    assert_int_equal(r.priority, 10);
    assert_int_equal(r.n_services, 3);
    /* The weights key overrides the route document's weight. */
    assert_int_equal(r.services[0].weight, 90);
    assert_true(r.services[0].port_is_num);
    assert_int_equal(r.services[0].port_num, 80);
    assert_string_equal(r.services[0].port, "80");
    assert_int_equal(r.services[1].weight, 10);
    assert_false(r.services[1].port_is_num);
    assert_string_equal(r.services[1].port, "http");
    /* Not in the weights key: the route document's weight. */
    assert_true(r.services[2].has_weight);
    assert_int_equal(r.services[2].weight, 5);
    assert_int_equal(r.n_middlewares, 2);
    assert_string_equal(r.middlewares[1], "strip.prefix");
    assert_string_equal(cJSON_GetObjectItem(r.tls, "secretName")->valuestring, "shop-tls");
    assert_int_equal(r.n_weights, 2);
    model_route_free(&r);
}

static void test_build_patched(void **state) {
    (void)state;
    struct model_input in = input(NULL, "{\"shop-v2\": 25}", NULL);
    struct model_route r;
    char err[256];
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_false(r.owned);
    assert_int_equal(r.n_weights, 1);
    assert_string_equal(r.weights[0].service, "shop-v2");
    assert_int_equal(r.weights[0].weight, 25);
    assert_int_equal(r.n_services, 0);
    model_route_free(&r);
}

static void test_build_weights_errors_name_key(void **state) {
    (void)state;
    char err[512];
    struct model_input in = input(SHOP_ROUTE, "shop-v1: 90\nshop-v2: 1.5\n", NULL);
    struct model_route r;
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_INVALID);
    assert_string_equal(err, "canary/default/shop/weights: weight for 'shop-v2' must be a "
                             "non-negative integer, got 1.5");
    expect_build_error(SHOP_ROUTE, "shop-v1=90, shop-v3=10", NULL, "weights",
                       "unknown service 'shop-v3'");
    expect_build_error(NULL, "a=0", NULL, "weights", "all weights are zero");
    expect_build_error(SHOP_ROUTE, "shop-v1=0, shop-v2=0", NULL, "weights", "all weights are zero");
    expect_build_error(SHOP_ROUTE, "shop-v1: -1", NULL, "weights", "non-negative integer, got -1");
    expect_build_error(SHOP_ROUTE, "shop-v1: x", NULL, "weights", "got the string \"x\"");
    expect_build_error(SHOP_ROUTE, "shop-v1=1, shop-v1=2", NULL, "weights", "duplicate service");
}

static void test_build_effective_zero(void **state) {
    (void)state;
    expect_build_error("match: Host(`a`)\nservices:\n  - {name: a, port: 80, weight: 0}\n", NULL,
                       NULL, "route", "every service's weight is zero");
    /* The route document's weight 0 plus a weights key still all zero. */
    expect_build_error("match: Host(`a`)\nservices:\n  - {name: a, port: 80, weight: 0}\n"
                       "  - {name: b, port: 80}\n",
                       "b=0, a=0", NULL, "weights", "all weights are zero");
    /* One zero, the other defaulting to 1, is fine. A weights value that
     * lists only zeros is refused on its own, so the zero comes from the
     * route document here. */
    struct model_input in = input("match: Host(`a`)\nservices:\n"
                                  "  - {name: shop-v1, port: 80, weight: 0}\n"
                                  "  - {name: shop-v2, port: 80}\n",
                                  NULL, NULL);
    struct model_route r;
    char err[256];
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_int_equal(r.services[0].weight, 0);
    assert_int_equal(r.services[1].weight, 1);
    model_route_free(&r);
}

static void test_route_document_errors(void **state) {
    (void)state;
    const char *svcs = "services:\n  - {name: a, port: 80}\n";
    char doc[512];
    expect_build_error(svcs, NULL, NULL, "route", "'match' is required");
    snprintf(doc, sizeof doc, "match: \"\"\n%s", svcs);
    expect_build_error(doc, NULL, NULL, "route", "'match' is required");
    snprintf(doc, sizeof doc, "match: \"Host(`a`)\\n|| Host(`b`)\"\n%s", svcs);
    expect_build_error(doc, NULL, NULL, "route", "control characters");
    snprintf(doc, sizeof doc, "match: 5\n%s", svcs);
    expect_build_error(doc, NULL, NULL, "route", "'match' is required");
    expect_build_error("match: Host(`a`)\n", NULL, NULL, "route", "'services' is required");
    expect_build_error("match: Host(`a`)\nservices: []\n", NULL, NULL, "route",
                       "'services' is required");
    expect_build_error("match: Host(`a`)\nmatches: x\nservices: [{name: a, port: 80}]\n", NULL,
                       NULL, "route", "unknown field 'matches'");
    expect_build_error("- a\n", NULL, NULL, "route", "route must be a mapping");
    expect_build_error("match: [\n", NULL, NULL, "route", "line 2:");

    static const struct {
        const char *svc, *msg;
    } bad[] = {
        {"{port: 80}", "services[0]: 'name' is required"},
        {"{name: Shop, port: 80}", "must be a DNS-1123 label"},
        {"{name: a.b, port: 80}", "must be a DNS-1123 label"},
        {"{name: a}", "services[0]: 'port' is required"},
        {"{name: a, port: 0}", "'port' must be 1..65535"},
        {"{name: a, port: 65536}", "'port' must be 1..65535"},
        {"{name: a, port: 80.5}", "'port' must be 1..65535"},
        {"{name: a, port: \"80\"}", "or a port name"},
        {"{name: a, port: Http}", "or a port name"},
        {"{name: a, port: very-long-port-name}", "or a port name"},
        {"{name: a, port: 123}, {name: a, port: 80}", "services[1]: duplicate service 'a'"},
        {"{name: a, port: 80, wieght: 1}", "services[0]: unknown field 'wieght'"},
        {"{name: a, port: 80, weight: -1}", "'weight' must be a non-negative integer"},
        {"{name: a, port: 80, weight: 2.5}", "'weight' must be a non-negative integer"},
        {"a", "services[0]: must be a mapping"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(doc, sizeof doc, "match: Host(`a`)\nservices: [%s]\n", bad[i].svc);
        expect_build_error(doc, NULL, NULL, "route", bad[i].msg);
    }

    static const struct {
        const char *extra, *msg;
    } opt[] = {
        {"tls: shop-tls", "'tls' must be a mapping"},
        {"priority: 1.5", "'priority' must be an integer"},
        {"priority: \"10\"", "'priority' must be an integer"},
        {"priority: 9007199254740993", "'priority' must be an integer"},
        {"entryPoints: websecure", "'entryPoints' must be a list"},
        {"entryPoints: [\"\"]", "'entryPoints' item 0"},
        {"middlewares: [Auth]", "'middlewares' item 0 ('Auth') is not valid"},
        {"middlewares: [{name: a}]", "'middlewares' item 0 must be a string"},
    };
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
        snprintf(doc, sizeof doc, "match: Host(`a`)\nservices: [{name: a, port: 80}]\n%s\n",
                 opt[i].extra);
        expect_build_error(doc, NULL, NULL, "route", opt[i].msg);
    }
}

/* Header routes are "(<match>) && Header(...)": the match must be one closed
 * expression, or a header rule could take another host's traffic. */
static void test_match_syntax(void **state) {
    (void)state;
    static const struct {
        const char *match, *msg; /* YAML text of the value; NULL msg: accepted */
    } cases[] = {
        {"\"Host(`a`)) || (Host(`b`)\"", "'match' has a ')' without its '('"},
        {"\"(Host(`a`)\"", "'match' has a '(' without its ')'"},
        {"\"Host(`a`))(\"", "'match' has a ')' without its '('"},
        {"\"Host(`a)\"", "'match' has a string literal that does not close"},
        {"'Host(\"a)'", "has a string literal that does not close"},
        {"'Host(\"a\\\")'", "has a string literal that does not close"},
        {"'Host(\"a\\q\")'", "has a string literal that does not close"},
        {"'Host(\"\\uD800\")'", "has a string literal that does not close"},
        {"'Host(\"\\400\")'", "has a string literal that does not close"},
        {"'Host(\"\\x4\")'", "has a string literal that does not close"},
        {"\"Host('a')\"", "'match' uses single quotes"},
        {"\"Host(`a`) // x\"", "'match' has a comment"},
        {"\"Host(`a`) /* x\"", "'match' has a comment"},
        {"\"(Host(`a`) || Host(`b`)) && PathPrefix(`/`)\"", NULL},
        {"\"Host(`a(`) || Path(`)//'*`)\"", NULL},
        {"'Host(\"a\\\")(\\\\\") && Path(\"/\\u00e9\\U0001F600\\x41\\101\\t\")'", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char doc[256];
        snprintf(doc, sizeof doc, "match: %s\nservices: [{name: a, port: 80}]\n", cases[i].match);
        if (cases[i].msg) {
            expect_build_error(doc, NULL, NULL, "route", cases[i].msg);
            continue;
        }
        struct model_input in = input(doc, NULL, NULL);
        struct model_route r;
        char err[512];
        if (model_build(&in, &r, err, sizeof err) != MODEL_BUILT)
            fail_msg("%s: %s", cases[i].match, err);
        model_route_free(&r);
    }
}

static void test_route_json_form(void **state) {
    (void)state;
    const char *doc = "{\"match\": \"Host(`a`)\", \"priority\": -3, \"services\": "
                      "[{\"name\": \"a\", \"port\": 443, \"weight\": 5}]}";
    struct model_input in = input(doc, NULL, NULL);
    struct model_route r;
    char err[256];
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_int_equal(r.priority, -3);
    assert_int_equal(r.services[0].port_num, 443);
    assert_true(r.services[0].has_weight);
    assert_int_equal(r.services[0].weight, 5);
    model_route_free(&r);
}

static void test_error_shows_no_control_chars(void **state) {
    (void)state;
    /* An unknown field name with a newline must not split the log line. */
    struct model_input in =
        input("match: a\n\"x\\ny\": 1\nservices: [{name: a, port: 80}]\n", NULL, NULL);
    struct model_route r;
    char err[256];
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_INVALID);
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "unknown field 'x?y'"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_key_good),
        cmocka_unit_test(test_parse_key_bad),
        cmocka_unit_test(test_dns_names),
        cmocka_unit_test(test_weights_forms_equal),
        cmocka_unit_test(test_weights_errors),
        cmocka_unit_test(test_weights_max_ok),
        cmocka_unit_test(test_build_absent),
        cmocka_unit_test(test_build_owned),
        cmocka_unit_test(test_build_partial_weights_fail),
        cmocka_unit_test(test_build_held_weights),
        cmocka_unit_test(test_build_patched),
        cmocka_unit_test(test_build_weights_errors_name_key),
        cmocka_unit_test(test_build_effective_zero),
        cmocka_unit_test(test_route_document_errors),
        cmocka_unit_test(test_match_syntax),
        cmocka_unit_test(test_route_json_form),
        cmocka_unit_test(test_error_shows_no_control_chars),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
