/* test_model_headers.c - the headers key of a route (bridge/model/headers.c,
 * regex_check.c): header and cookie rules, what each refuses with an error
 * naming the key and the rule, the cost of a header regex, and the room the
 * rules need in the route's priority. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "modeltest.h"

/* ---- headers ------------------------------------------------------------ */

static void test_headers_good(void **state) {
    (void)state;
    const char *hdr = "- name: beta\n"
                      "  header: X-Canary\n"
                      "  value: always\n"
                      "  service: shop-v2\n"
                      "  setRequestHeaders: {X-Canary-Route: beta}\n"
                      "  setResponseHeaders: {X-Served-By: canary, X-Remove: \"\"}\n"
                      "- cookie: canary\n"
                      "  value: \"true\"\n"
                      "  service: shop-v2\n"
                      "- header: X-Version\n"
                      "  regex: (?i)^beta-\\d+(?:\\.\\d+)*?$\n"
                      "  service: shop-v1\n";
    struct model_route r;
    expect_built(SHOP_ROUTE, NULL, hdr, &r);
    assert_int_equal(r.n_rules, 3);
    assert_string_equal(r.rules[0].name, "beta");
    assert_int_equal(r.rules[0].kind, RULE_HEADER);
    assert_string_equal(r.rules[0].header, "X-Canary");
    assert_string_equal(r.rules[0].value, "always");
    assert_null(r.rules[0].regex);
    assert_int_equal(r.rules[0].n_set_request, 1);
    assert_string_equal(r.rules[0].set_request[0].key, "X-Canary-Route");
    assert_string_equal(r.rules[0].set_request[0].value, "beta");
    assert_int_equal(r.rules[0].n_set_response, 2);
    assert_string_equal(r.rules[0].set_response[1].value, "");
    assert_string_equal(r.rules[1].name, "h1");
    assert_int_equal(r.rules[1].kind, RULE_COOKIE);
    assert_string_equal(r.rules[1].header, "canary");
    assert_string_equal(r.rules[1].value, "true");
    assert_string_equal(r.rules[2].name, "h2");
    assert_non_null(r.rules[2].regex);
    assert_null(r.rules[2].value);
    assert_string_equal(r.rules[2].service, "shop-v1");
    model_route_free(&r);
}

static void expect_rule_error(const char *rule, const char *msg) {
    char doc[512];
    snprintf(doc, sizeof doc, "- %s\n", rule);
    expect_build_error(SHOP_ROUTE, NULL, doc, "headers", msg);
}

static void test_headers_errors(void **state) {
    (void)state;
    expect_rule_error("{header: X-A, value: a, regex: b, service: shop-v2}",
                      "rule 0: a header rule needs exactly one of 'value' or 'regex'");
    expect_rule_error("{header: X-A, service: shop-v2}", "exactly one of 'value' or 'regex'");
    expect_rule_error("{cookie: c, regex: a, service: shop-v2}", "needs 'value' (and no 'regex')");
    expect_rule_error("{cookie: c, service: shop-v2}", "needs 'value'");
    expect_rule_error("{header: X-A, cookie: c, value: a, service: shop-v2}",
                      "exactly one of 'header' or 'cookie'");
    expect_rule_error("{value: a, service: shop-v2}", "exactly one of 'header' or 'cookie'");
    expect_rule_error("{header: X-A, value: \"a`) || Host(`evil\", service: shop-v2}",
                      "'value' must not contain backticks or control characters");
    expect_rule_error("{header: X-A, value: \"a\\u0001b\", service: shop-v2}",
                      "must not contain backticks or control characters");
    expect_rule_error("{header: X-A, value: \"a\\nb\", service: shop-v2}",
                      "must not contain backticks or control characters");
    expect_rule_error("{header: X-A, value: \"a\\x7fb\", service: shop-v2}",
                      "must not contain backticks or control characters");
    expect_rule_error("{header: X-A, regex: \"^a`\", service: shop-v2}",
                      "'regex' must not contain backticks");
    expect_rule_error("{header: X-A, value: a, service: shop-v2, setRequestHeaders: {X-B: \"`\"}}",
                      "'setRequestHeaders': the value of 'X-B' must be a string without "
                      "backticks");
    expect_rule_error("{header: X-A, value: a, service: shop-v2, setResponseHeaders: {X-B: 5}}",
                      "must be a string");
    expect_rule_error("{header: X-A, value: a, service: shop-v2, setRequestHeaders: {\"X B\": b}}",
                      "'X B' is not a valid header name");
    expect_rule_error("{header: X-A, value: a, service: shop-v2, setRequestHeaders: [a]}",
                      "must be a mapping");
    expect_rule_error("{header: \"X Canary\", value: a, service: shop-v2}",
                      "'X Canary' is not a valid header name (RFC 7230 token)");
    expect_rule_error("{header: \"X`A\", value: a, service: shop-v2}", "not a valid header name");
    expect_rule_error("{header: \"X:A\", value: a, service: shop-v2}", "not a valid header name");
    expect_rule_error("{cookie: \"a=b\", value: a, service: shop-v2}", "not a valid cookie name");
    expect_rule_error("{cookie: c, value: \"a;b\", service: shop-v2}",
                      "cookie value has characters");
    expect_rule_error("{cookie: c, value: \"a b\", service: shop-v2}",
                      "cookie value has characters");
    expect_rule_error("{header: X-A, regex: \"(\", service: shop-v2}", "regex does not compile");
    expect_rule_error("{header: X-A, regex: \"a[\", service: shop-v2}", "regex does not compile");
    expect_rule_error("{header: X-A, regex: \"(a)\\\\1\", service: shop-v2}", "backreference");
    expect_rule_error("{header: X-A, regex: \"\", service: shop-v2}", "'regex' is empty");
    expect_rule_error("{header: X-A, value: a, service: shop-v9}",
                      "must be one of the route's services, got 'shop-v9'");
    expect_rule_error("{header: X-A, value: a}", "'service' is required");
    expect_rule_error("{header: X-A, value: 5, service: shop-v2}", "'value' must be a string");
    expect_rule_error("{header: X-A, value: a, service: shop-v2, priority: 3}",
                      "unknown field 'priority'");
    expect_rule_error("{name: Beta, header: X-A, value: a, service: shop-v2}",
                      "rule 0 ('Beta'): 'name' must be a DNS-1123 label");
    expect_rule_error("x", "rule 0: must be a mapping");
    expect_build_error(SHOP_ROUTE, NULL, "{header: X-A}", "headers", "headers must be a list");
}

/* glibc's regcomp takes seconds and gigabytes for nested repetitions and
 * huge expansions; such regexes are refused, quickly, before it sees them. */
static void test_headers_regex_cost(void **state) {
    (void)state;
    static const struct {
        const char *regex, *msg; /* NULL msg: accepted */
    } cases[] = {
        {"^a++$", "regex has a nested repetition"},
        {"a++++++++++++++++++++++", "regex has a nested repetition"}, /* was 9 s, 2.9 GB */
        {"a*??", "regex has a nested repetition"},
        {"(a|b){2}*", "regex has a nested repetition"},
        {"a{2}{3}", "regex has a nested repetition"},
        {"a{,5}+", "regex has a nested repetition"}, /* "{,5}" is a repetition to glibc */
        {"a{1001}", "regex has a repeat count over 1000"},
        {"a{1,5000}", "regex has a repeat count over 1000"},
        {"((x{255}){255}){255}", "regex is too complex"}, /* was 14 s, 3.4 GB */
        {"(a{100}){20}", "regex is too complex"},
        {"(){1000}(){1000}", "regex is too complex"},
        {"((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)", "regex is too complex"},
        {"[\\](a{100}){20}]", "regex is too complex"}, /* no escapes in a POSIX class */
        {"a{1000}", NULL},
        {"(a{10}){100}", NULL},
        {"(?i)^v[0-9]+(?:\\.\\d{1,3}){0,3}?$", NULL},
        {"a}?", NULL}, /* the '?' makes '}' optional: no lazy quantifier to drop */
        {"a*?b+?c??d{2}?", NULL},
        {"^[[:alpha:]](x{100}){10}$", NULL},
        {"[[:alpha:](a{100}){20}]", NULL}, /* one class: the ']' of [:alpha:] does not end it */
    };
    clock_t t0 = clock();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rule[256];
        snprintf(rule, sizeof rule, "{header: X-A, regex: '%s', service: shop-v2}", cases[i].regex);
        if (cases[i].msg) {
            expect_rule_error(rule, cases[i].msg);
            continue;
        }
        char doc[300];
        snprintf(doc, sizeof doc, "- %s\n", rule);
        struct model_input in = input(SHOP_ROUTE, NULL, doc);
        struct model_route r;
        char err[512];
        if (model_build(&in, &r, err, sizeof err) != MODEL_BUILT)
            fail_msg("%s: %s", cases[i].regex, err);
        model_route_free(&r);
    }
    /* Over 1 KiB is refused whatever it holds. */
    char hdr[1200];
    snprintf(hdr, sizeof hdr, "- {header: X-A, service: shop-v2, regex: \"%01025d\"}\n", 0);
    expect_build_error(SHOP_ROUTE, NULL, hdr, "headers", "regex is too long (1025 bytes");
    assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 1.0);
}

static void test_headers_duplicate_names(void **state) {
    (void)state;
    expect_build_error(SHOP_ROUTE, NULL,
                       "- {name: a, header: X-A, value: a, service: shop-v2}\n"
                       "- {name: a, header: X-B, value: b, service: shop-v2}\n",
                       "headers", "rule 1 ('a'): duplicate rule name 'a'");
    /* A given name may collide with a default one. */
    expect_build_error(SHOP_ROUTE, NULL,
                       "- {header: X-A, value: a, service: shop-v2}\n"
                       "- {name: h0, header: X-B, value: b, service: shop-v2}\n",
                       "headers", "duplicate rule name 'h0'");
}

static void test_headers_need_route(void **state) {
    (void)state;
    const char *hdr = "- {header: X-A, value: a, service: shop-v2}\n";
    expect_build_error(NULL, "shop-v2=1", hdr, "headers", "headers need a route key (owned mode)");
    expect_build_error(NULL, NULL, hdr, "headers", "headers need a route key (owned mode)");
}

static void test_priority_room(void **state) {
    (void)state;
    const char *hdr = "- {header: X-A, value: a, service: shop-v2}\n"
                      "- {header: X-B, value: b, service: shop-v2}\n";
    char doc[256];
    snprintf(doc, sizeof doc, "%spriority: 9007199254740990\n", SHOP_ROUTE);
    expect_build_error(doc, NULL, hdr, "route", "leaves no room for 2 header rule(s)");
    struct model_input in = input(doc, NULL, NULL);
    struct model_route r;
    char err[256];
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    model_route_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_good),       cmocka_unit_test(test_headers_errors),
        cmocka_unit_test(test_headers_regex_cost), cmocka_unit_test(test_headers_duplicate_names),
        cmocka_unit_test(test_headers_need_route), cmocka_unit_test(test_priority_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
