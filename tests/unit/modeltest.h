/* modeltest.h - what the route model tests share: the key prefix, the route
 * document most of them build on, a struct model_input for route "shop" in
 * namespace "default", and checks that model_build builds it, or refuses it
 * with an error that starts with the key it is about.
 *
 * Include after <cmocka.h>. */
#ifndef CB_TEST_MODELTEST_H
#define CB_TEST_MODELTEST_H

#include <stdio.h>
#include <string.h>

#include "bridge/model/model.h"

#define PFX "canary/"

/* shop-v1 on port 80, shop-v2 on the named port http. */
static const char *SHOP_ROUTE __attribute__((unused)) = "match: Host(`shop.example.com`)\n"
                                                        "services:\n"
                                                        "  - name: shop-v1\n"
                                                        "    port: 80\n"
                                                        "  - name: shop-v2\n"
                                                        "    port: http\n";

/* The input of route default/shop at revision 42; NULL: the key is absent. */
static inline struct model_input input(const char *route, const char *weights,
                                       const char *headers) {
    struct model_input in = {.prefix = PFX, .ns = "default", .name = "shop", .revision = 42};
    in.route = route;
    in.route_len = route ? strlen(route) : 0;
    in.weights = weights;
    in.weights_len = weights ? strlen(weights) : 0;
    in.headers = headers;
    in.headers_len = headers ? strlen(headers) : 0;
    return in;
}

/* model_build builds the input into r (the test fails with its error
 * otherwise); the caller frees r. */
static inline void expect_built(const char *route, const char *weights, const char *headers,
                                struct model_route *r) {
    struct model_input in = input(route, weights, headers);
    char err[512];
    if (model_build(&in, r, err, sizeof err) != MODEL_BUILT)
        fail_msg("%s", err);
}

/* model_build refuses the input: the error starts with the key of leaf
 * ("canary/default/shop/<leaf>: ") and holds msg; the route is left empty. */
static inline void expect_build_error(const char *route, const char *weights, const char *headers,
                                      const char *leaf, const char *msg) {
    struct model_input in = input(route, weights, headers);
    struct model_route r;
    char err[512] = "", want[64];
    if (model_build(&in, &r, err, sizeof err) != MODEL_INVALID)
        fail_msg("accepted; expected '%s'", msg);
    snprintf(want, sizeof want, PFX "default/shop/%s: ", leaf);
    if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, msg))
        fail_msg("expected '%s...%s', got '%s'", want, msg, err);
    assert_null(r.services);
    assert_null(r.ns);
}

#endif
