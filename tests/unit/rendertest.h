/* rendertest.h - what the Traefik rendering tests share: render options for
 * both API groups, a route document with every field, header rules, a sticky
 * block, and model_build wrappers that fail the test on an error.
 *
 * Include after <cmocka.h>. */
#ifndef CB_TEST_RENDERTEST_H
#define CB_TEST_RENDERTEST_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "bridge/model/model.h"
#include "sinks/traefik.h"

#define PFX "canary/"

static const struct render_opts V3
    __attribute__((unused)) = {"traefik.io", RULE_SYNTAX_V3, PFX, "etcd"};
static const struct render_opts V2
    __attribute__((unused)) = {"traefik.containo.us", RULE_SYNTAX_V2, PFX, "consul"};

static const char *ROUTE __attribute__((unused)) =
    "match: Host(`shop.example.com`) && PathPrefix(`/`)\n"
    "entryPoints: [websecure]\n"
    "services:\n"
    "  - name: shop-v1\n"
    "    port: 80\n"
    "    weight: 100\n"
    "  - name: shop-v2\n"
    "    port: http\n"
    "  - name: shop-v3\n"
    "    port: 8080\n"
    "middlewares: [auth]\n"
    "tls: {secretName: shop-tls}\n";

static const char *HEADERS __attribute__((unused)) = "- name: beta\n"
                                                     "  header: X-Canary\n"
                                                     "  value: always\n"
                                                     "  service: shop-v2\n"
                                                     "  setRequestHeaders: {X-Canary-Route: beta}\n"
                                                     "  setResponseHeaders: {X-Served-By: canary}\n"
                                                     "- cookie: canary\n"
                                                     "  value: \"true\"\n"
                                                     "  service: shop-v2\n"
                                                     "- header: X-Version\n"
                                                     "  regex: ^2\\.[0-9]+$\n"
                                                     "  service: shop-v3\n";

static const char *STICKY __attribute__((unused)) = "sticky:\n"
                                                    "  cookie: shop_canary\n"
                                                    "  secure: true\n"
                                                    "  httpOnly: true\n"
                                                    "  sameSite: lax\n"
                                                    "  maxAge: 3600\n";

/* model_build with every input spelled out; fails the test on an error. */
static inline void build_full(const char *name, bool allow_xns, const char *route,
                              const char *weights, const char *headers, struct model_route *r) {
    struct model_input in = {.prefix = PFX, .ns = "shop-ns", .name = name, .revision = 1234};
    in.allow_cross_namespace = allow_xns;
    in.route = route;
    in.route_len = route ? strlen(route) : 0;
    in.weights = weights;
    in.weights_len = weights ? strlen(weights) : 0;
    in.headers = headers;
    in.headers_len = headers ? strlen(headers) : 0;
    char err[512];
    if (model_build(&in, r, err, sizeof err) != 0)
        fail_msg("model_build: %s", err);
}

static inline void build(const char *route, const char *weights, const char *headers,
                         struct model_route *r) {
    build_full("shop", false, route, weights, headers, r);
}

/* ROUTE plus a full sticky block. */
static inline void build_sticky(const char *weights, const char *headers, struct model_route *r) {
    char doc[1024];
    snprintf(doc, sizeof doc, "%s%s", ROUTE, STICKY);
    build(doc, weights, headers, r);
}

static inline const cJSON *at(const cJSON *obj, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItem(obj, a);
    return b ? cJSON_GetObjectItem(x, b) : x;
}

/* spec.routes[i] of an IngressRoute. */
static inline const cJSON *ir_route(const cJSON *ir, int i) {
    return cJSON_GetArrayItem(at(ir, "spec", "routes"), i);
}

#endif
