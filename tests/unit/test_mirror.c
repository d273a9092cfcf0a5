/* test_mirror.c - `mirror` in the route document: what the model accepts
 * and refuses (bridge/model/route.c), and the mirroring TraefikService and
 * IngressRoute it renders to (sinks/traefik.c). The golden files of a
 * mirrored route are checked in test_render.c with the other goldens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/model/model.h"
#include "sinks/traefik.h"

#define PFX "canary/"

static const struct render_opts V3 = {"traefik.io", RULE_SYNTAX_V3, PFX, "etcd"};
static const struct render_opts V2 = {"traefik.containo.us", RULE_SYNTAX_V2, PFX, "consul"};

static const char *ROUTE = "match: Host(`shop.example.com`)\n"
                           "services:\n"
                           "  - name: shop-v1\n"
                           "    port: 80\n"
                           "  - name: shop-v2\n"
                           "    port: http\n";
static const char *ROUTE1 = "match: Host(`shop.example.com`)\n"
                            "services: [{name: shop-v1, port: 80}]\n";

static int build_xns(const char *route, const char *weights, bool xns, struct model_route *r,
                     char *err, size_t errlen) {
    struct model_input in = {.prefix = PFX, .ns = "default", .name = "shop", .revision = 7};
    in.route = route;
    in.route_len = strlen(route);
    in.weights = weights;
    in.weights_len = weights ? strlen(weights) : 0;
    in.allow_cross_namespace = xns;
    return model_build(&in, r, err, errlen);
}

/* ROUTE (or route) plus "mirror: <mirror>", built; fails the test on an error. */
static void build_mirror(const char *route, const char *mirror, bool xns, struct model_route *r) {
    char doc[1024], err[512];
    snprintf(doc, sizeof doc, "%smirror: %s\n", route ? route : ROUTE, mirror);
    if (build_xns(doc, NULL, xns, r, err, sizeof err) != MODEL_BUILT)
        fail_msg("model_build: %s", err);
}

static void expect_mirror_error(const char *route, const char *mirror, bool xns, const char *msg) {
    char doc[1024], err[512] = "";
    struct model_route r;
    snprintf(doc, sizeof doc, "%smirror: %s\n", route ? route : ROUTE, mirror);
    if (build_xns(doc, NULL, xns, &r, err, sizeof err) != MODEL_INVALID)
        fail_msg("mirror %s accepted; expected '%s'", mirror, msg);
    if (strncmp(err, PFX "default/shop/route: ", strlen(PFX "default/shop/route: ")) != 0 ||
        !strstr(err, msg))
        fail_msg("mirror %s: expected '...%s', got '%s'", mirror, msg, err);
    assert_null(r.services);
    assert_null(r.mirror.svc.name);
}

static const cJSON *at(const cJSON *obj, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItem(obj, a);
    return b ? cJSON_GetObjectItem(x, b) : x;
}

/* ---- the model ---------------------------------------------------------- */

static void test_mirror_full_form(void **state) {
    (void)state;
    struct model_route r;
    build_mirror(NULL,
                 "{service: shop-canary, port: 8080, percent: 10, mirrorBody: false, "
                 "maxBodySize: 1048576}",
                 false, &r);
    const struct model_mirror *m = &r.mirror;
    assert_true(m->enabled);
    assert_string_equal(m->svc.name, "shop-canary");
    assert_null(m->svc.ns);
    assert_string_equal(m->svc.port, "8080");
    assert_true(m->svc.port_is_num);
    assert_int_equal(m->svc.port_num, 8080);
    assert_int_equal(m->percent, 10);
    assert_true(m->has_mirror_body);
    assert_false(m->mirror_body);
    assert_true(m->has_max_body_size);
    assert_int_equal(m->max_body_size, 1048576);
    model_route_free(&r);

    /* JSON, a named port, the limits of each number. */
    const char *json =
        "{\"match\": \"Host(`a`)\", \"services\": [{\"name\": \"a\", \"port\": 80}], "
        "\"mirror\": {\"service\": \"b\", \"port\": \"http\", \"percent\": 100, "
        "\"mirrorBody\": true, \"maxBodySize\": 9007199254740992}}";
    char err[512];
    assert_int_equal(build_xns(json, NULL, false, &r, err, sizeof err), MODEL_BUILT);
    assert_string_equal(r.mirror.svc.port, "http");
    assert_false(r.mirror.svc.port_is_num);
    assert_int_equal(r.mirror.percent, 100);
    assert_true(r.mirror.mirror_body);
    assert_true(r.mirror.max_body_size == MODEL_BODY_SIZE_MAX);
    model_route_free(&r);
    build_mirror(NULL, "{service: b, port: 1, percent: 0, maxBodySize: -1}", false, &r);
    assert_int_equal(r.mirror.percent, 0);
    assert_true(r.mirror.max_body_size == -1);
    model_route_free(&r);
}

/* Without a port the mirror is one of the route's services, as it is there;
 * the optional fields stay unset. */
static void test_mirror_short_form(void **state) {
    (void)state;
    struct model_route r;
    build_mirror(NULL, "{service: shop-v2, percent: 10}", false, &r);
    assert_true(r.mirror.enabled);
    assert_string_equal(r.mirror.svc.name, "shop-v2");
    assert_string_equal(r.mirror.svc.port, "http");
    assert_false(r.mirror.svc.port_is_num);
    assert_false(r.mirror.has_mirror_body);
    assert_false(r.mirror.has_max_body_size);
    model_route_free(&r);

    /* ... namespace included, when the route's service has one. */
    build_mirror("match: Host(`a`)\nservices:\n  - {name: a, port: 80}\n"
                 "  - {name: b, port: 81, namespace: canary-ns}\n",
                 "{service: b, percent: 5}", true, &r);
    assert_string_equal(r.mirror.svc.ns, "canary-ns");
    assert_int_equal(r.mirror.svc.port_num, 81);
    model_route_free(&r);

    /* No mirror: nothing set. */
    char err[256];
    assert_int_equal(build_xns(ROUTE, NULL, false, &r, err, sizeof err), MODEL_BUILT);
    assert_false(r.mirror.enabled);
    assert_null(r.mirror.svc.name);
    model_route_free(&r);
}

static void test_mirror_cross_namespace(void **state) {
    (void)state;
    struct model_route r;
    expect_mirror_error(NULL, "{service: b, port: 80, namespace: other, percent: 5}", false,
                        "mirror: 'namespace' is not allowed: services must live in the route's "
                        "namespace; set reconcile.allow_cross_namespace: true");
    build_mirror(NULL, "{service: b, port: 80, namespace: other, percent: 5}", true, &r);
    assert_string_equal(r.mirror.svc.ns, "other");
    model_route_free(&r);
    expect_mirror_error(NULL, "{service: b, port: 80, namespace: Other, percent: 5}", true,
                        "mirror: 'namespace' must be a DNS-1123 label (a namespace name), got "
                        "'Other'");
    expect_mirror_error(NULL, "{service: shop-v2, namespace: other, percent: 5}", true,
                        "mirror: 'namespace' needs 'port' too (without 'port' the mirror is the "
                        "route's own service 'shop-v2')");
}

static void test_mirror_errors(void **state) {
    (void)state;
    static const struct {
        const char *mirror, *msg;
    } bad[] = {
        {"shop-v2", "'mirror' must be a mapping such as {service: NAME, percent: 10}"},
        {"[shop-v2]", "'mirror' must be a mapping"},
        {"~", "'mirror' must be a mapping"},
        {"{percent: 10}", "mirror: 'service' is required"},
        {"{service: Shop, percent: 10}",
         "mirror: 'service' must be a DNS-1123 label (a Service name), got 'Shop'"},
        {"{service: shop.v2, percent: 10}", "'service' must be a DNS-1123 label"},
        {"{service: -a, percent: 10}", "'service' must be a DNS-1123 label"},
        {"{service: \"a`b\", percent: 10}", "'service' must be a DNS-1123 label"},
        {"{service: 5, percent: 10}", "'service' must be a DNS-1123 label (a Service name), got "
                                      "'not a string'"},
        {"{service: other, percent: 10}",
         "mirror: 'port' is required unless 'service' names one of the route's services"},
        {"{service: other, port: 0, percent: 10}", "mirror: 'port' must be 1..65535"},
        {"{service: other, port: Http, percent: 10}",
         "mirror: 'port' must be a number 1..65535 or a port name"},
        {"{service: shop-v2}", "mirror: 'percent' is required (0 to 100"},
        {"{service: shop-v2, percent: 101}",
         "mirror: 'percent' must be a whole number from 0 to 100"},
        {"{service: shop-v2, percent: -1}", "'percent' must be a whole number from 0 to 100"},
        {"{service: shop-v2, percent: 2.5}", "'percent' must be a whole number"},
        {"{service: shop-v2, percent: \"10\"}", "'percent' must be a whole number"},
        {"{service: shop-v2, percent: 10%}", "'percent' must be a whole number"},
        {"{service: shop-v2, percent: 10, mirrorBody: \"false\"}",
         "mirror: 'mirrorBody' must be true or false (unquoted)"},
        {"{service: shop-v2, percent: 10, mirrorBody: 0}", "'mirrorBody' must be true or false"},
        {"{service: shop-v2, percent: 10, maxBodySize: -2}",
         "mirror: 'maxBodySize' must be a whole number of bytes from 0 to 9007199254740992, or "
         "-1 for no limit"},
        {"{service: shop-v2, percent: 10, maxBodySize: 1MB}", "'maxBodySize' must be a whole"},
        {"{service: shop-v2, percent: 10, maxBodySize: 9007199254740993}",
         "'maxBodySize' must be a whole"},
        /* Unknown fields, with a hint when it is a near miss. */
        {"{service: shop-v2, percnt: 10}",
         "mirror: unknown field 'percnt' (did you mean 'percent'?)"},
        {"{service: shop-v2, percent: 10, mirrorbody: false}",
         "mirror: unknown field 'mirrorbody' (did you mean 'mirrorBody'?)"},
        {"{name: shop-v2, percent: 10}", "mirror: unknown field 'name'"},
        {"{service: shop-v2, percent: 10, weight: 1}", "mirror: unknown field 'weight'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_mirror_error(NULL, bad[i].mirror, false, bad[i].msg);
    /* A hint only for a near miss. */
    char doc[512], err[512];
    struct model_route r;
    snprintf(doc, sizeof doc, "%smirror: {service: shop-v2, percent: 10, kind: Service}\n", ROUTE);
    assert_int_equal(build_xns(doc, NULL, false, &r, err, sizeof err), MODEL_INVALID);
    assert_string_equal(err, PFX "default/shop/route: mirror: unknown field 'kind'");
    /* The document's own fields get the hint too. */
    snprintf(doc, sizeof doc, "%smirrors: {service: shop-v2, percent: 10}\n", ROUTE);
    assert_int_equal(build_xns(doc, NULL, false, &r, err, sizeof err), MODEL_INVALID);
    assert_string_equal(err,
                        PFX "default/shop/route: unknown field 'mirrors' (did you mean 'mirror'?)");
}

/* ---- rendering ---------------------------------------------------------- */

static void assert_json(const cJSON *got, const char *want_json) {
    cJSON *want = cJSON_Parse(want_json);
    assert_non_null(want);
    if (!cJSON_Compare(got, want, 1)) {
        char shown[1024], *g = cJSON_PrintUnformatted(got);
        snprintf(shown, sizeof shown, "%s", g ? g : "(null)");
        free(g);
        cJSON_Delete(want);
        fail_msg("got %s\nwant %s", shown, want_json);
    }
    cJSON_Delete(want);
}

/* The weighted route (the last) has one service: TraefikService `name`. */
static void assert_weighted_target(const cJSON *ir, const char *name) {
    const cJSON *routes = at(ir, "spec", "routes");
    const cJSON *last = cJSON_GetArrayItem(routes, cJSON_GetArraySize(routes) - 1);
    char want[512];
    snprintf(want, sizeof want, "[{\"name\": \"%s\", \"kind\": \"TraefikService\"}]", name);
    assert_json(cJSON_GetObjectItem(last, "services"), want);
}

static void test_mirror_name(void **state) {
    (void)state;
    struct model_route r;
    build_mirror(NULL, "{service: shop-v2, percent: 10}", false, &r);
    char *name = traefik_mirror_name(&r);
    /* 40 bits of FNV-1a over "shop//mirror" (tests/lib/cbtest.py mirror_name). */
    assert_string_equal(name, "shop-mirror-896e075e0a");
    assert_true(model_dns1123_subdomain(name));
    free(name);
    /* Names that Traefik folds to one ("a.b" and "a-b") stay apart. */
    struct model_route a = {.name = "a.b"}, b = {.name = "a-b"};
    char *na = traefik_mirror_name(&a), *nb = traefik_mirror_name(&b);
    assert_string_not_equal(na + 3, nb + 3);
    free(na);
    free(nb);
    /* A route name near the limit gets a valid, shortened name. */
    char longname[MODEL_NAME_MAX + 1];
    memset(longname, 'a', MODEL_NAME_MAX);
    longname[MODEL_NAME_MAX] = '\0';
    struct model_route l = {.name = longname};
    char *nl = traefik_mirror_name(&l);
    assert_true(strlen(nl) <= MODEL_NAME_MAX);
    assert_true(model_dns1123_subdomain(nl));
    free(nl);
    model_route_free(&r);
}

/* One service, no sticky: the mirroring's main service is that Service; no
 * weighted TraefikService. */
static void test_render_single_service(void **state) {
    (void)state;
    struct model_route r;
    build_mirror(ROUTE1, "{service: shop-v2, port: 8080, percent: 25}", false, &r);
    assert_false(traefik_weighted_service_wanted(&r));
    assert_null(traefik_render_traefikservice(&r, &V3));
    cJSON *ms = traefik_render_mirroring(&r, &V3);
    assert_string_equal(at(ms, "kind", NULL)->valuestring, "TraefikService");
    assert_string_equal(at(ms, "metadata", "name")->valuestring, "shop-mirror-896e075e0a");
    assert_string_equal(at(ms, "metadata", "namespace")->valuestring, "default");
    assert_string_equal(
        cJSON_GetObjectItem(at(ms, "metadata", "labels"), TRAEFIK_LABEL_MANAGED_BY)->valuestring,
        TRAEFIK_MANAGER);
    assert_json(at(ms, "spec", NULL),
                "{\"mirroring\": {\"name\": \"shop-v1\", \"port\": 80, \"mirrors\": "
                "[{\"name\": \"shop-v2\", \"port\": 8080, \"percent\": 25}]}}");
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    assert_weighted_target(ir, "shop-mirror-896e075e0a");
    cJSON_Delete(ir);
    cJSON_Delete(ms);
    model_route_free(&r);
}

/* Several services: the split moves into the weighted TraefikService, which
 * the mirroring names as its main service. */
static void test_render_split(void **state) {
    (void)state;
    struct model_route r;
    char doc[512], err[512];
    snprintf(doc, sizeof doc, "%smirror: {service: shop-v2, percent: 50}\n", ROUTE);
    assert_int_equal(build_xns(doc, "shop-v1=90, shop-v2=10", false, &r, err, sizeof err),
                     MODEL_BUILT);
    assert_true(traefik_weighted_service_wanted(&r));
    cJSON *ts = traefik_render_traefikservice(&r, &V3);
    assert_string_equal(at(ts, "metadata", "name")->valuestring, "shop");
    assert_json(at(ts, "spec", NULL),
                "{\"weighted\": {\"services\": [{\"name\": \"shop-v1\", \"port\": 80, "
                "\"weight\": 90}, {\"name\": \"shop-v2\", \"port\": \"http\", \"weight\": 10}]}}");
    cJSON *ms = traefik_render_mirroring(&r, &V3);
    assert_json(at(ms, "spec", NULL),
                "{\"mirroring\": {\"name\": \"shop\", \"kind\": \"TraefikService\", \"mirrors\": "
                "[{\"name\": \"shop-v2\", \"port\": \"http\", \"percent\": 50}]}}");
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    assert_weighted_target(ir, "shop-mirror-896e075e0a");
    /* The IngressRoute still says where the weights come from. */
    assert_string_equal(
        cJSON_GetObjectItem(at(ir, "metadata", "annotations"), TRAEFIK_ANNOT_WEIGHTS)->valuestring,
        "weights");
    cJSON_Delete(ir);
    cJSON_Delete(ms);
    cJSON_Delete(ts);
    model_route_free(&r);
}

/* Body options only when given; mirrorBody not under v2 (its CRD has none). */
static void test_render_body_options(void **state) {
    (void)state;
    struct model_route r;
    build_mirror(ROUTE1, "{service: m, port: 80, percent: 10, mirrorBody: false, maxBodySize: 0}",
                 false, &r);
    cJSON *v3 = traefik_render_mirroring(&r, &V3), *v2 = traefik_render_mirroring(&r, &V2);
    const cJSON *m3 = at(at(v3, "spec", NULL), "mirroring", NULL);
    const cJSON *m2 = at(at(v2, "spec", NULL), "mirroring", NULL);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(m3, "mirrorBody")));
    assert_int_equal(cJSON_GetObjectItem(m3, "maxBodySize")->valuedouble, 0);
    assert_null(cJSON_GetObjectItem(m2, "mirrorBody"));
    assert_int_equal(cJSON_GetObjectItem(m2, "maxBodySize")->valuedouble, 0);
    assert_string_equal(at(v2, "apiVersion", NULL)->valuestring, "traefik.containo.us/v1alpha1");
    cJSON_Delete(v3);
    cJSON_Delete(v2);
    model_route_free(&r);
    build_mirror(ROUTE1, "{service: m, port: 80, percent: 10, mirrorBody: true}", false, &r);
    v3 = traefik_render_mirroring(&r, &V3);
    m3 = at(at(v3, "spec", NULL), "mirroring", NULL);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(m3, "mirrorBody")));
    assert_null(cJSON_GetObjectItem(m3, "maxBodySize"));
    cJSON_Delete(v3);
    model_route_free(&r);
}

/* Header rule routes are not mirrored: they go straight to their Service. */
static void test_rule_routes_not_mirrored(void **state) {
    (void)state;
    struct model_route r;
    char doc[512], err[512];
    snprintf(doc, sizeof doc, "%smirror: {service: shop-v2, percent: 50}\n", ROUTE);
    struct model_input in = {.prefix = PFX, .ns = "default", .name = "shop", .revision = 7};
    in.route = doc;
    in.route_len = strlen(doc);
    in.headers = "- {header: X-Canary, value: always, service: shop-v2}\n";
    in.headers_len = strlen(in.headers);
    if (model_build(&in, &r, err, sizeof err) != MODEL_BUILT)
        fail_msg("%s", err);
    cJSON *ir = traefik_render_ingressroute(&r, &V3);
    assert_json(cJSON_GetObjectItem(cJSON_GetArrayItem(at(ir, "spec", "routes"), 0), "services"),
                "[{\"name\": \"shop-v2\", \"port\": \"http\", \"weight\": 1}]");
    assert_weighted_target(ir, "shop-mirror-896e075e0a");
    cJSON_Delete(ir);
    model_route_free(&r);
}

/* Nothing to render without a mirror, or in patched mode. */
static void test_no_mirror_no_object(void **state) {
    (void)state;
    struct model_route r;
    char err[256];
    assert_int_equal(build_xns(ROUTE, NULL, false, &r, err, sizeof err), MODEL_BUILT);
    assert_null(traefik_render_mirroring(&r, &V3));
    assert_false(traefik_weighted_service_wanted(&r));
    model_route_free(&r);
    struct model_input in = {.prefix = PFX, .ns = "default", .name = "shop", .weights = "a=1"};
    in.weights_len = 3;
    assert_int_equal(model_build(&in, &r, err, sizeof err), MODEL_BUILT);
    assert_null(traefik_render_mirroring(&r, &V3));
    model_route_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mirror_full_form),
        cmocka_unit_test(test_mirror_short_form),
        cmocka_unit_test(test_mirror_cross_namespace),
        cmocka_unit_test(test_mirror_errors),
        cmocka_unit_test(test_mirror_name),
        cmocka_unit_test(test_render_single_service),
        cmocka_unit_test(test_render_split),
        cmocka_unit_test(test_render_body_options),
        cmocka_unit_test(test_rule_routes_not_mirrored),
        cmocka_unit_test(test_no_mirror_no_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
