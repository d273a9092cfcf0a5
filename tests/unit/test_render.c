/* test_render.c - Traefik objects rendered from a model_route, and merging
 * them with live objects.
 *
 * Golden files: the rendered objects are emitted as YAML (value_emit_yaml)
 * and compared byte for byte with tests/golden/<name>.yaml. After an
 * intended change to the output, regenerate them and review the diff:
 *
 *     UPDATE_GOLDEN=1 build/tests/test_render
 *
 * The golden directory is found from GOLDEN_DIR if set, else relative to
 * this source file (__FILE__), else as golden/ or tests/golden/ under the
 * current directory (meson test runs in tests/). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bridge/lib/value.h"
#include "bridge/model/model.h"
#include "sinks/traefik.h"

#include "rendertest.h"

/* ---- golden files ------------------------------------------------------- */

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void golden_dir(char *out, size_t n) {
    const char *env = getenv("GOLDEN_DIR");
    if (env) {
        snprintf(out, n, "%s", env);
        return;
    }
    const char *slash = strrchr(__FILE__, '/');
    snprintf(out, n, "%.*s/../golden", slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
    if (is_dir(out))
        return;
    snprintf(out, n, "%s", is_dir("golden") ? "golden" : "tests/golden");
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    buf_t b = BUF_INIT;
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(buf_append(&b, chunk, got), 0);
    fclose(f);
    return b.data ? buf_steal(&b) : strdup("");
}

static void golden_check(const char *name, const cJSON *obj) {
    char dir[512], path[700], err[256];
    assert_non_null(obj);
    buf_t y = BUF_INIT;
    assert_int_equal(value_emit_yaml(obj, &y, 0), 0);
    golden_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/%s.yaml", dir, name);
    if (getenv("UPDATE_GOLDEN")) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(y.data, 1, y.len, f), y.len);
        assert_int_equal(fclose(f), 0);
    }
    char *want = read_all(path);
    if (!want)
        fail_msg("cannot read %s (run with UPDATE_GOLDEN=1 to create it)", path);
    if (strcmp(want, y.data) != 0)
        fail_msg("%s differs from the rendered object:\n--- golden\n%s--- rendered\n%s", path, want,
                 y.data);
    /* The YAML that `render` prints must read back as the same object. */
    cJSON *back = value_parse(y.data, y.len, err, sizeof err);
    if (!back)
        fail_msg("%s does not parse: %s", path, err);
    assert_true(cJSON_Compare(obj, back, 1));
    cJSON_Delete(back);
    free(want);
    buf_free(&y);
}

static void test_golden_owned_weights(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, "shop-v1=90, shop-v2=10, shop-v3=1", NULL, &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    golden_check("ingressroute-owned-weights", ir);
    cJSON_Delete(ir);
    model_route_free(&r);
}

static void test_golden_rules_v3(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, "shop-v1=90, shop-v2=10, shop-v3=1", HEADERS, &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    golden_check("ingressroute-rules-v3", ir);
    cJSON_Delete(ir);
    model_route_free(&r);
}

static void test_golden_rules_v2(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, "shop-v1=90, shop-v2=10, shop-v3=1", HEADERS, &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V2);
    golden_check("ingressroute-rules-v2-containo", ir);
    cJSON_Delete(ir);
    model_route_free(&r);
}

static void test_golden_middleware(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, NULL, HEADERS, &r);
    cJSON *mw = traefik_render_middleware(&r, 0, &V3);
    golden_check("middleware-beta", mw);
    cJSON_Delete(mw);
    /* Rules that set no headers get no Middleware; out of range neither. */
    assert_null(traefik_render_middleware(&r, 1, &V3));
    assert_null(traefik_render_middleware(&r, 3, &V3));
    model_route_free(&r);
}

static void test_api_groups(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, NULL, HEADERS, &r);
    cJSON *a = traefik_render_ingressroute(&r, &V3), *b = traefik_render_ingressroute(&r, &V2);
    cJSON *m = traefik_render_middleware(&r, 0, &V2);
    assert_string_equal(cJSON_GetObjectItem(a, "apiVersion")->valuestring, "traefik.io/v1alpha1");
    assert_string_equal(cJSON_GetObjectItem(b, "apiVersion")->valuestring,
                        "traefik.containo.us/v1alpha1");
    assert_string_equal(cJSON_GetObjectItem(m, "apiVersion")->valuestring,
                        "traefik.containo.us/v1alpha1");
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(m);
    model_route_free(&r);
}

static void test_golden_sticky_v3(void **state) {
    (void)state;
    struct model_route r;
    build_sticky("shop-v1=90, shop-v2=10, shop-v3=1", HEADERS, &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    cJSON *ts = traefik_render_traefikservice(&r, &V3);
    golden_check("ingressroute-sticky-v3", ir);
    golden_check("traefikservice-sticky-v3", ts);
    cJSON_Delete(ir);
    cJSON_Delete(ts);
    model_route_free(&r);
}

static void test_golden_sticky_v2(void **state) {
    (void)state;
    struct model_route r;
    build_sticky("shop-v1=90, shop-v2=10, shop-v3=1", HEADERS, &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V2);
    cJSON *ts = traefik_render_traefikservice(&r, &V2);
    golden_check("ingressroute-sticky-v2-containo", ir);
    golden_check("traefikservice-sticky-v2-containo", ts);
    /* Traefik v2's sticky cookie has no maxAge; the rest is there. */
    const cJSON *cookie = at(at(at(ts, "spec", "weighted"), "sticky", NULL), "cookie", NULL);
    assert_null(cJSON_GetObjectItem(cookie, "maxAge"));
    assert_string_equal(cJSON_GetObjectItem(cookie, "sameSite")->valuestring, "lax");
    cJSON_Delete(ir);
    cJSON_Delete(ts);
    model_route_free(&r);
}

/* Mirroring together with weights, sticky and header rules: the weighted
 * route names the mirroring TraefikService, whose main service is the
 * sticky weighted TraefikService (the same object as without a mirror). */
static void test_golden_mirror(void **state) {
    (void)state;
    struct model_route r;
    char doc[1024];
    snprintf(doc, sizeof doc,
             "%s%smirror: {service: shop-v2, percent: 10, mirrorBody: false, "
             "maxBodySize: 65536}\n",
             ROUTE, STICKY);
    build(doc, "shop-v1=90, shop-v2=10, shop-v3=1", HEADERS, &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    cJSON *ts = traefik_render_traefikservice(&r, &V3);
    cJSON *ms = traefik_render_mirroring(&r, &V3), *ms2 = traefik_render_mirroring(&r, &V2);
    golden_check("ingressroute-mirror-v3", ir);
    golden_check("traefikservice-sticky-v3", ts);
    golden_check("traefikservice-mirror-v3", ms);
    golden_check("traefikservice-mirror-v2-containo", ms2);
    cJSON_Delete(ir);
    cJSON_Delete(ts);
    cJSON_Delete(ms);
    cJSON_Delete(ms2);
    model_route_free(&r);
}

/* The weighted route goes through the TraefikService; rule routes do not. */
static void test_sticky_weighted_route(void **state) {
    (void)state;
    struct model_route r, plain;
    build_sticky("shop-v1=90, shop-v2=10, shop-v3=1", HEADERS, &r);
    build(ROUTE, "shop-v1=90, shop-v2=10, shop-v3=1", HEADERS, &plain);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    cJSON *ir_plain = traefik_render_ingressroute(&plain, &V3);
    int n = cJSON_GetArraySize(at(ir, "spec", "routes"));
    assert_int_equal(n, 4);
    const cJSON *weighted = ir_route(ir, n - 1);
    const cJSON *services = cJSON_GetObjectItem(weighted, "services");
    assert_int_equal(cJSON_GetArraySize(services), 1);
    const cJSON *svc = cJSON_GetArrayItem(services, 0);
    assert_string_equal(cJSON_GetObjectItem(svc, "name")->valuestring, "shop");
    assert_string_equal(cJSON_GetObjectItem(svc, "kind")->valuestring, "TraefikService");
    assert_null(cJSON_GetObjectItem(svc, "port"));
    assert_null(cJSON_GetObjectItem(svc, "weight"));
    assert_null(cJSON_GetObjectItem(svc, "namespace"));
    /* Same match, priority and middlewares as without sticky. */
    const cJSON *weighted_plain = ir_route(ir_plain, n - 1);
    assert_true(cJSON_Compare(cJSON_GetObjectItem(weighted, "match"),
                              cJSON_GetObjectItem(weighted_plain, "match"), 1));
    assert_true(cJSON_Compare(cJSON_GetObjectItem(weighted, "priority"),
                              cJSON_GetObjectItem(weighted_plain, "priority"), 1));
    assert_true(cJSON_Compare(cJSON_GetObjectItem(weighted, "middlewares"),
                              cJSON_GetObjectItem(weighted_plain, "middlewares"), 1));
    /* Header/cookie rule routes are unchanged: straight to their Service. */
    for (int i = 0; i < n - 1; i++)
        assert_true(cJSON_Compare(ir_route(ir, i), ir_route(ir_plain, i), 1));
    /* The TraefikService carries what the weighted route had. */
    cJSON *ts = traefik_render_traefikservice(&r, &V3);
    assert_string_equal(at(ts, "kind", NULL)->valuestring, "TraefikService");
    assert_string_equal(at(ts, "metadata", "name")->valuestring, "shop");
    assert_string_equal(at(ts, "metadata", "namespace")->valuestring, "shop-ns");
    assert_true(cJSON_Compare(at(at(ts, "spec", "weighted"), "services", NULL),
                              cJSON_GetObjectItem(weighted_plain, "services"), 1));
    assert_true(cJSON_Compare(at(ts, "metadata", "labels"), at(ir, "metadata", "labels"), 1));
    /* The same annotations, but for where the weights come from: that one is
     * the IngressRoute's, which the bridge reads. */
    cJSON *ir_ann = cJSON_Duplicate(at(ir, "metadata", "annotations"), 1);
    assert_string_equal(cJSON_GetObjectItem(ir_ann, TRAEFIK_ANNOT_WEIGHTS)->valuestring, "weights");
    cJSON_DeleteItemFromObject(ir_ann, TRAEFIK_ANNOT_WEIGHTS);
    assert_true(cJSON_Compare(at(ts, "metadata", "annotations"), ir_ann, 1));
    cJSON_Delete(ir_ann);
    cJSON_Delete(ts);
    cJSON_Delete(ir);
    cJSON_Delete(ir_plain);
    model_route_free(&r);
    model_route_free(&plain);
}

static void test_sticky_cookie_fields(void **state) {
    (void)state;
    struct model_route r;
    char doc[1024];
    /* Short form: only the name; Traefik's defaults for the rest. */
    snprintf(doc, sizeof doc, "%ssticky: {cookie: c}\n", ROUTE);
    build(doc, NULL, NULL, &r);
    cJSON *ts = traefik_render_traefikservice(&r, &V3);
    cJSON *want = cJSON_Parse("{\"cookie\": {\"name\": \"c\"}}");
    assert_true(cJSON_Compare(at(at(ts, "spec", "weighted"), "sticky", NULL), want, 1));
    cJSON_Delete(want);
    cJSON_Delete(ts);
    model_route_free(&r);

    /* false is rendered when given: it is what the user asked for. */
    snprintf(doc, sizeof doc,
             "%ssticky: {cookie: c, secure: false, httpOnly: false, sameSite: none, maxAge: 0}\n",
             ROUTE);
    build(doc, NULL, NULL, &r);
    ts = traefik_render_traefikservice(&r, &V3);
    want = cJSON_Parse("{\"cookie\": {\"name\": \"c\", \"secure\": false, \"httpOnly\": false, "
                       "\"sameSite\": \"none\", \"maxAge\": 0}}");
    assert_true(cJSON_Compare(at(at(ts, "spec", "weighted"), "sticky", NULL), want, 1));
    cJSON_Delete(want);
    cJSON_Delete(ts);
    model_route_free(&r);
}

static void test_traefikservice_null_without_sticky(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, NULL, HEADERS, &r);
    assert_false(r.sticky.enabled);
    assert_null(traefik_render_traefikservice(&r, &V3));
    model_route_free(&r);
    build(NULL, "a=1", NULL, &r);
    assert_null(traefik_render_traefikservice(&r, &V3));
    model_route_free(&r);
}

static void test_cross_namespace_rendered(void **state) {
    (void)state;
    struct model_route r;
    char doc[1024];
    snprintf(doc, sizeof doc,
             "match: Host(`a`)\n"
             "services:\n"
             "  - {name: shop-v1, port: 80}\n"
             "  - {name: shop-v2, port: http, namespace: canary-ns}\n"
             "%s",
             STICKY);
    build_full("shop", true, doc, "shop-v1=90, shop-v2=10",
               "- {header: X-Canary, value: always, service: shop-v2}\n", &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    cJSON *ts = traefik_render_traefikservice(&r, &V3);
    /* The rule route goes straight to the Service in the other namespace. */
    cJSON *want = cJSON_Parse("[{\"name\": \"shop-v2\", \"namespace\": \"canary-ns\", \"port\": "
                              "\"http\", \"weight\": 1}]");
    assert_true(cJSON_Compare(cJSON_GetObjectItem(ir_route(ir, 0), "services"), want, 1));
    cJSON_Delete(want);
    /* The TraefikService's weighted services carry it too; the other not. */
    want = cJSON_Parse("[{\"name\": \"shop-v1\", \"port\": 80, \"weight\": 90},"
                       " {\"name\": \"shop-v2\", \"namespace\": \"canary-ns\", \"port\": \"http\","
                       " \"weight\": 10}]");
    assert_true(cJSON_Compare(at(at(ts, "spec", "weighted"), "services", NULL), want, 1));
    /* The objects themselves stay in the route's namespace. */
    assert_string_equal(at(ir, "metadata", "namespace")->valuestring, "shop-ns");
    assert_string_equal(at(ts, "metadata", "namespace")->valuestring, "shop-ns");
    cJSON_Delete(ts);
    cJSON_Delete(ir);
    model_route_free(&r);

    /* Without sticky the weighted route lists the services, namespace and all. */
    build_full("shop", true,
               "match: Host(`a`)\nservices:\n  - {name: shop-v1, port: 80}\n"
               "  - {name: shop-v2, port: http, namespace: canary-ns}\n",
               "shop-v1=90, shop-v2=10", NULL, &r);
    ir = traefik_render_ingressroute(&r, &V2);
    assert_true(cJSON_Compare(cJSON_GetObjectItem(ir_route(ir, 0), "services"), want, 1));
    cJSON_Delete(want);
    cJSON_Delete(ir);
    model_route_free(&r);
}

/* ---- rule text ---------------------------------------------------------- */

static void expect_quote(const char *in, const char *want) {
    char *q = traefik_rule_quote(in);
    assert_non_null(q);
    assert_string_equal(q, want);
    free(q);
}

static void test_rule_quote(void **state) {
    (void)state;
    expect_quote("abc", "`abc`");
    expect_quote("a\\d+\"x\"", "`a\\d+\"x\"`"); /* raw string: no escapes needed */
    expect_quote("", "``");
    expect_quote("a`b", "\"a\\x60b\"");
    expect_quote("a\rb", "\"a\\x0db\"");
    expect_quote("q\"`\\", "\"q\\\"\\x60\\\\\"");
}

/* The model refuses backticks, but render must still quote correctly. */
static void test_render_quotes_backtick(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, NULL, "- {header: X-A, value: plain, service: shop-v2}\n", &r);
    free(r.rules[0].value);
    r.rules[0].value = strdup("a`b\rc");
    assert_non_null(r.rules[0].value);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    const cJSON *route0 =
        cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes"), 0);
    assert_string_equal(cJSON_GetObjectItem(route0, "match")->valuestring,
                        "(Host(`shop.example.com`) && PathPrefix(`/`)) && "
                        "Header(`X-A`, \"a\\x60b\\x0dc\")");
    cJSON_Delete(ir);
    model_route_free(&r);
}

static void test_cookie_regex_escaped(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, NULL, "- {cookie: my.ck, value: \"a+b(1)|$\", service: shop-v2}\n", &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V2);
    const cJSON *route0 =
        cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes"), 0);
    assert_string_equal(cJSON_GetObjectItem(route0, "match")->valuestring,
                        "(Host(`shop.example.com`) && PathPrefix(`/`)) && "
                        "HeadersRegexp(`Cookie`, `(^|;\\s*)my\\.ck=a\\+b\\(1\\)\\|\\$(;|$)`)");
    cJSON_Delete(ir);
    model_route_free(&r);
}

/* ---- priorities --------------------------------------------------------- */

static long long route_priority(const cJSON *ir, int i) {
    const cJSON *routes = cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes");
    return (long long)cJSON_GetObjectItem(cJSON_GetArrayItem(routes, i), "priority")->valuedouble;
}

static void expect_priorities(const char *priority_line, const long long *want, int n) {
    char doc[512];
    snprintf(doc, sizeof doc, "match: Host(`a`)\nservices: [{name: a, port: 80}]\n%s\n",
             priority_line);
    struct model_route r;
    build(doc, NULL,
          "- {header: X-A, value: a, service: a}\n"
          "- {header: X-B, value: b, service: a}\n"
          "- {header: X-C, value: c, service: a}\n",
          &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    assert_int_equal(
        cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes")), n);
    for (int i = 0; i < n; i++)
        assert_int_equal(route_priority(ir, i), want[i]);
    cJSON_Delete(ir);
    model_route_free(&r);
}

static void test_priorities(void **state) {
    (void)state;
    /* No priority: Traefik's own default, len("Host(`a`)") = 9, made
     * explicit on the weighted route; rules above it, earlier higher. */
    expect_priorities("", (const long long[]){12, 11, 10, 9}, 4);
    expect_priorities("priority: 0", (const long long[]){12, 11, 10, 9}, 4);
    expect_priorities("priority: 100", (const long long[]){103, 102, 101, 100}, 4);
    /* Negative: 0 would mean "rule length" to Traefik, so it is skipped. */
    expect_priorities("priority: -2", (const long long[]){2, 1, -1, -2}, 4);
    expect_priorities("priority: -10", (const long long[]){-7, -8, -9, -10}, 4);
}

static void test_no_syntax_and_kind_rule(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, NULL, HEADERS, &r);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    const cJSON *route;
    int n = 0;
    cJSON_ArrayForEach(route, cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes")) {
        assert_string_equal(cJSON_GetObjectItem(route, "kind")->valuestring, "Rule");
        assert_null(cJSON_GetObjectItem(route, "syntax"));
        n++;
    }
    assert_int_equal(n, 4);
    cJSON_Delete(ir);
    model_route_free(&r);
}

static void test_render_patched_is_null(void **state) {
    (void)state;
    struct model_route r;
    build(NULL, "a=1", NULL, &r);
    assert_null(traefik_render_ingressroute(&r, &V3));
    model_route_free(&r);
}

/* ---- Middleware names --------------------------------------------------- */

static void test_middleware_name(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, NULL, HEADERS, &r);
    char *n = traefik_middleware_name(&r, 0);
    assert_string_equal(n, "shop-beta-c84b8d0482");
    free(n);
    n = traefik_middleware_name(&r, 1);
    assert_string_equal(n, "shop-h1-c10486890b");
    free(n);

    /* A 250-character name: "<name>.beta" would be 255, too long. */
    char longname[251];
    memset(longname, 'a', 250);
    longname[250] = '\0';
    longname[240] = '.';
    free(r.name);
    r.name = strdup(longname);
    assert_non_null(r.name);
    char *a = traefik_middleware_name(&r, 0), *a2 = traefik_middleware_name(&r, 0);
    char *b = traefik_middleware_name(&r, 1);
    assert_true(strlen(a) <= MODEL_NAME_MAX);
    assert_true(model_dns1123_subdomain(a));
    assert_true(model_dns1123_subdomain(b));
    assert_string_equal(a, a2);    /* stable */
    assert_string_not_equal(a, b); /* distinct rules stay distinct */
    assert_memory_equal(a, longname, 200);
    free(a);
    free(a2);
    free(b);

    /* Truncation landing on a '.' must not leave an invalid name. */
    memset(longname, 'b', 250);
    longname[241] = '.'; /* the last byte kept before the hash */
    free(r.name);
    r.name = strdup(longname);
    assert_non_null(r.name);
    a = traefik_middleware_name(&r, 0);
    assert_non_null(a);
    assert_int_equal(strlen(a), 241 + 11);
    assert_true(model_dns1123_subdomain(a));
    free(a);
    model_route_free(&r);
}

/* Traefik's name for a Middleware: every run of characters other than
 * letters and digits folded into one '-' (its provider's normalization). */
static void traefik_fold(const char *in, char *out, size_t outlen) {
    size_t n = 0;
    bool run = false;
    for (; *in && n + 1 < outlen; in++) {
        bool alnum = (*in >= 'a' && *in <= 'z') || (*in >= '0' && *in <= '9');
        if (alnum)
            out[n++] = *in;
        else if (!run)
            out[n++] = '-';
        run = !alnum;
    }
    out[n] = '\0';
}

/* Route `api` rule `v2-beta` and route `api-v2` rule `beta` once shared the
 * Middleware `api-v2-beta`: each route's testers got the other's headers.
 * Then `api.v2-beta` and `api-v2.beta` were two Kubernetes names but still
 * one middleware inside Traefik, which folds '.' and '-' alike: the names
 * must differ after that folding too. */
static void test_middleware_names_distinct_across_routes(void **state) {
    (void)state;
    static const char *const pairs[][2] = {
        {"api", "v2-beta"}, {"api-v2", "beta"}, {"a.b", "c"}, {"a", "b-c"}, {"a-b", "c"}};
    size_t n = sizeof pairs / sizeof pairs[0];
    char *names[sizeof pairs / sizeof pairs[0]];
    for (size_t i = 0; i < n; i++) {
        char headers[256];
        snprintf(headers, sizeof headers,
                 "- {name: %s, header: X-A, value: a, service: shop-v2,\n"
                 "   setRequestHeaders: {X-Canary: beta}}\n",
                 pairs[i][1]);
        struct model_route r;
        build_full(pairs[i][0], false, ROUTE, NULL, headers, &r);
        names[i] = traefik_middleware_name(&r, 0);
        assert_non_null(names[i]);
        assert_true(model_dns1123_subdomain(names[i]));
        for (size_t j = 0; j < i; j++) {
            char fi[300], fj[300];
            traefik_fold(names[i], fi, sizeof fi);
            traefik_fold(names[j], fj, sizeof fj);
            if (strcmp(fi, fj) == 0)
                fail_msg("route %s rule %s and route %s rule %s share Traefik middleware %s",
                         pairs[i][0], pairs[i][1], pairs[j][0], pairs[j][1], fi);
        }
        model_route_free(&r);
    }
    assert_string_equal(names[0], "api-v2-beta-018a5b42ff");
    assert_string_equal(names[1], "api-v2-beta-649333ee7b");
    for (size_t i = 0; i < n; i++)
        free(names[i]);
}

/* Route names at the 253-character limit: every derived object name must
 * still be a valid Kubernetes name, stable, and distinct per rule. */
static void test_long_route_name_object_names(void **state) {
    (void)state;
    /* Cut points of "<name>.<rule>" (242 bytes kept before the hash) land
     * on a '-', on a '.', and inside a label. */
    static const struct {
        size_t pos;
        char c;
    } marks[] = {{241, '-'}, {241, '.'}, {0, 'a'}};
    const char *headers = "- {name: beta, header: X-A, value: a, service: shop-v2,\n"
                          "   setRequestHeaders: {X-Canary: beta}}\n"
                          "- {header: X-B, value: b, service: shop-v2,\n"
                          "   setResponseHeaders: {X-Served-By: canary}}\n"
                          "- {name: "
                          "r23456789012345678901234567890123456789012345678901234567890123,\n"
                          "   cookie: c, value: v, service: shop-v1,\n"
                          "   setRequestHeaders: {X-C: c}}\n";
    char doc[1024];
    snprintf(doc, sizeof doc, "%s%s", ROUTE, STICKY);
    for (size_t m = 0; m < sizeof marks / sizeof marks[0]; m++) {
        char name[MODEL_NAME_MAX + 1];
        memset(name, 'a', MODEL_NAME_MAX);
        name[MODEL_NAME_MAX] = '\0';
        name[100] = '.';
        if (marks[m].pos)
            name[marks[m].pos] = marks[m].c;
        assert_int_equal(strlen(name), 253);
        struct model_route r;
        build_full(name, false, doc, NULL, headers, &r);
        cJSON *ir = traefik_render_ingressroute(&r, &V3);
        assert_non_null(ir);
        char *names[3];
        for (size_t i = 0; i < 3; i++) {
            names[i] = traefik_middleware_name(&r, i);
            assert_non_null(names[i]);
            if (!model_dns1123_subdomain(names[i]))
                fail_msg("invalid Middleware name '%s'", names[i]);
            for (size_t j = 0; j < i; j++)
                assert_string_not_equal(names[i], names[j]);
            /* The object carries that name, and the rule route refers to it. */
            cJSON *mw = traefik_render_middleware(&r, i, &V3);
            assert_string_equal(at(mw, "metadata", "name")->valuestring, names[i]);
            const cJSON *refs = cJSON_GetObjectItem(ir_route(ir, (int)i), "middlewares");
            const cJSON *last = cJSON_GetArrayItem(refs, cJSON_GetArraySize(refs) - 1);
            assert_string_equal(cJSON_GetObjectItem(last, "name")->valuestring, names[i]);
            cJSON_Delete(mw);
            char *again = traefik_middleware_name(&r, i);
            assert_string_equal(again, names[i]); /* stable */
            free(again);
        }
        /* The TraefikService takes the route's name, already a valid one. */
        cJSON *ts = traefik_render_traefikservice(&r, &V3);
        const char *ts_name = at(ts, "metadata", "name")->valuestring;
        assert_string_equal(ts_name, name);
        assert_true(model_dns1123_subdomain(ts_name));
        const cJSON *weighted = ir_route(ir, 3);
        assert_string_equal(
            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(weighted, "services"), 0),
                                "name")
                ->valuestring,
            name);
        for (size_t i = 0; i < 3; i++)
            free(names[i]);
        cJSON_Delete(ts);
        cJSON_Delete(ir);
        model_route_free(&r);
    }
}

/* ---- merge_owned -------------------------------------------------------- */

/* What the API server would send back: desired plus server-set fields and
 * labels/annotations added by others, numbers reparsed from JSON. */
int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_middleware_names_distinct_across_routes),
        cmocka_unit_test(test_golden_owned_weights),
        cmocka_unit_test(test_golden_rules_v3),
        cmocka_unit_test(test_golden_rules_v2),
        cmocka_unit_test(test_golden_middleware),
        cmocka_unit_test(test_golden_sticky_v3),
        cmocka_unit_test(test_golden_sticky_v2),
        cmocka_unit_test(test_golden_mirror),
        cmocka_unit_test(test_sticky_weighted_route),
        cmocka_unit_test(test_sticky_cookie_fields),
        cmocka_unit_test(test_traefikservice_null_without_sticky),
        cmocka_unit_test(test_cross_namespace_rendered),
        cmocka_unit_test(test_api_groups),
        cmocka_unit_test(test_rule_quote),
        cmocka_unit_test(test_render_quotes_backtick),
        cmocka_unit_test(test_cookie_regex_escaped),
        cmocka_unit_test(test_priorities),
        cmocka_unit_test(test_no_syntax_and_kind_rule),
        cmocka_unit_test(test_render_patched_is_null),
        cmocka_unit_test(test_middleware_name),
        cmocka_unit_test(test_long_route_name_object_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
