/* test_render_merge.c - rendered Traefik objects over live ones: merging
 * what the bridge owns into a live object (unchanged, key order, changed,
 * TraefikServices), writing weights into a patched route, and shortening
 * names to Kubernetes' limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/value.h"
#include "bridge/model/model.h"
#include "sinks/traefik.h"

#include "rendertest.h"

static cJSON *live_from(const cJSON *desired) {
    char *json = cJSON_PrintUnformatted(desired);
    cJSON *live = cJSON_Parse(json);
    free(json);
    cJSON *md = cJSON_GetObjectItem(live, "metadata");
    cJSON_AddStringToObject(md, "uid", "6f1c0d9e-0000-4000-8000-000000000001");
    cJSON_AddStringToObject(md, "resourceVersion", "98765");
    cJSON_AddNumberToObject(md, "generation", 3);
    cJSON_AddStringToObject(md, "creationTimestamp", "2024-01-01T00:00:00Z");
    cJSON_AddItemToObject(
        md, "managedFields",
        cJSON_Parse("[{\"manager\":\"canary-bridge\",\"operation\":\"Update\"}]"));
    cJSON_AddStringToObject(cJSON_GetObjectItem(md, "labels"), "team", "payments");
    cJSON_AddStringToObject(cJSON_GetObjectItem(md, "annotations"), "argocd.argoproj.io/x", "y");
    return live;
}

static const char *label(const cJSON *obj, const char *group, const char *key) {
    const cJSON *v =
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(obj, "metadata"), group), key);
    return v ? v->valuestring : NULL;
}

static void test_merge_owned_unchanged(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, "shop-v1=90, shop-v2=10, shop-v3=1", HEADERS, &r);
    cJSON *desired = traefik_render_ingressroute(&r, &V3);
    cJSON *live = live_from(desired);
    /* Only the revision annotation differs: no write. */
    cJSON_ReplaceItemInObject(
        cJSON_GetObjectItem(cJSON_GetObjectItem(live, "metadata"), "annotations"),
        TRAEFIK_ANNOT_REVISION, cJSON_CreateString("1000"));
    bool changed = true;
    cJSON *out = traefik_merge_owned(live, desired, &changed);
    assert_non_null(out);
    assert_false(changed);
    /* Server metadata and others' labels/annotations are kept. */
    assert_string_equal(label(out, "labels", "team"), "payments");
    assert_string_equal(label(out, "annotations", "argocd.argoproj.io/x"), "y");
    assert_string_equal(label(out, "labels", TRAEFIK_LABEL_MANAGED_BY), TRAEFIK_MANAGER);
    assert_string_equal(label(out, "annotations", TRAEFIK_ANNOT_REVISION), "1234");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(out, "metadata"), "resourceVersion")->valuestring,
        "98765");
    assert_true(
        cJSON_Compare(cJSON_GetObjectItem(out, "spec"), cJSON_GetObjectItem(desired, "spec"), 1));
    cJSON_Delete(out);
    cJSON_Delete(live);
    cJSON_Delete(desired);
    model_route_free(&r);
}

static void test_merge_owned_key_order(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, NULL, NULL, &r);
    cJSON *desired = traefik_render_ingressroute(&r, &V3);
    cJSON *live = live_from(desired);
    /* The server may return fields in another order. */
    cJSON *spec = cJSON_GetObjectItem(live, "spec");
    cJSON *routes = cJSON_DetachItemFromObject(spec, "routes");
    cJSON_AddItemToObject(spec, "routes", routes);
    cJSON *route0 = cJSON_GetArrayItem(routes, 0);
    cJSON_AddItemToObject(route0, "kind", cJSON_DetachItemFromObject(route0, "kind"));
    bool changed = true;
    cJSON *out = traefik_merge_owned(live, desired, &changed);
    assert_false(changed);
    cJSON_Delete(out);
    cJSON_Delete(live);
    cJSON_Delete(desired);
    model_route_free(&r);
}

static void test_merge_owned_changed(void **state) {
    (void)state;
    struct model_route r;
    build(ROUTE, "shop-v1=90, shop-v2=10, shop-v3=1", NULL, &r);
    cJSON *desired = traefik_render_ingressroute(&r, &V3);
    bool changed = false;

    /* A weight differs. */
    cJSON *live = live_from(desired);
    cJSON *svc = cJSON_GetArrayItem(
        cJSON_GetObjectItem(
            cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(live, "spec"), "routes"), 0),
            "services"),
        0);
    cJSON_ReplaceItemInObject(svc, "weight", cJSON_CreateNumber(50));
    cJSON *out = traefik_merge_owned(live, desired, &changed);
    assert_true(changed);
    assert_true(
        cJSON_Compare(cJSON_GetObjectItem(out, "spec"), cJSON_GetObjectItem(desired, "spec"), 1));
    assert_string_equal(label(out, "labels", "team"), "payments");
    cJSON_Delete(out);
    cJSON_Delete(live);

    /* Our prefix annotation differs. */
    live = live_from(desired);
    cJSON_ReplaceItemInObject(
        cJSON_GetObjectItem(cJSON_GetObjectItem(live, "metadata"), "annotations"),
        TRAEFIK_ANNOT_PREFIX, cJSON_CreateString("other/"));
    changed = false;
    out = traefik_merge_owned(live, desired, &changed);
    assert_true(changed);
    assert_string_equal(label(out, "annotations", TRAEFIK_ANNOT_PREFIX), PFX);
    cJSON_Delete(out);
    cJSON_Delete(live);

    /* Our label is missing. */
    live = live_from(desired);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(cJSON_GetObjectItem(live, "metadata"), "labels"),
                               TRAEFIK_LABEL_MANAGED_BY);
    assert_false(traefik_is_managed(live));
    changed = false;
    out = traefik_merge_owned(live, desired, &changed);
    assert_true(changed);
    assert_true(traefik_is_managed(out));
    cJSON_Delete(out);
    cJSON_Delete(live);

    /* A field we do not render, added by someone else, is ours to remove. */
    live = live_from(desired);
    cJSON_AddStringToObject(cJSON_GetObjectItem(live, "spec"), "ingressClassName", "x");
    changed = false;
    out = traefik_merge_owned(live, desired, &changed);
    assert_true(changed);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(out, "spec"), "ingressClassName"));
    cJSON_Delete(out);
    cJSON_Delete(live);

    cJSON_Delete(desired);
    model_route_free(&r);
}

/* TraefikService objects merge exactly like IngressRoutes: spec plus our
 * label and annotations decide, others' metadata is kept. */
static void test_merge_owned_traefikservice(void **state) {
    (void)state;
    struct model_route r;
    build_sticky("shop-v1=90, shop-v2=10, shop-v3=1", NULL, &r);
    cJSON *desired = traefik_render_traefikservice(&r, &V3);
    assert_non_null(desired);
    bool changed = true;

    /* Only the revision annotation differs, keys in another order: no write. */
    cJSON *live = live_from(desired);
    cJSON_ReplaceItemInObject(
        cJSON_GetObjectItem(cJSON_GetObjectItem(live, "metadata"), "annotations"),
        TRAEFIK_ANNOT_REVISION, cJSON_CreateString("1000"));
    cJSON *weighted = cJSON_GetObjectItem(cJSON_GetObjectItem(live, "spec"), "weighted");
    cJSON_AddItemToObject(weighted, "services", cJSON_DetachItemFromObject(weighted, "services"));
    cJSON *out = traefik_merge_owned(live, desired, &changed);
    assert_non_null(out);
    assert_false(changed);
    assert_string_equal(label(out, "labels", "team"), "payments");
    assert_string_equal(label(out, "annotations", "argocd.argoproj.io/x"), "y");
    assert_string_equal(label(out, "annotations", TRAEFIK_ANNOT_REVISION), "1234");
    assert_string_equal(at(out, "kind", NULL)->valuestring, "TraefikService");
    assert_string_equal(at(out, "metadata", "resourceVersion")->valuestring, "98765");
    cJSON_Delete(out);
    cJSON_Delete(live);

    /* A weight differs. */
    live = live_from(desired);
    cJSON *svc = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(live, "spec"), "weighted"),
                            "services"),
        1);
    cJSON_ReplaceItemInObject(svc, "weight", cJSON_CreateNumber(50));
    changed = false;
    out = traefik_merge_owned(live, desired, &changed);
    assert_true(changed);
    assert_true(cJSON_Compare(at(out, "spec", NULL), at(desired, "spec", NULL), 1));
    assert_string_equal(label(out, "labels", "team"), "payments");
    cJSON_Delete(out);
    cJSON_Delete(live);

    /* The cookie differs (e.g. maxAge pruned by an older CRD). */
    live = live_from(desired);
    cJSON *cookie = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(live, "spec"), "weighted"),
                            "sticky"),
        "cookie");
    cJSON_DeleteItemFromObject(cookie, "maxAge");
    changed = false;
    out = traefik_merge_owned(live, desired, &changed);
    assert_true(changed);
    assert_true(cJSON_Compare(at(out, "spec", NULL), at(desired, "spec", NULL), 1));
    cJSON_Delete(out);
    cJSON_Delete(live);

    /* Our label is missing. */
    live = live_from(desired);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(cJSON_GetObjectItem(live, "metadata"), "labels"),
                               TRAEFIK_LABEL_MANAGED_BY);
    changed = false;
    out = traefik_merge_owned(live, desired, &changed);
    assert_true(changed);
    assert_true(traefik_is_managed(out));
    cJSON_Delete(out);
    cJSON_Delete(live);

    /* Our source annotation differs. */
    live = live_from(desired);
    cJSON_ReplaceItemInObject(
        cJSON_GetObjectItem(cJSON_GetObjectItem(live, "metadata"), "annotations"),
        TRAEFIK_ANNOT_SOURCE, cJSON_CreateString("consul"));
    changed = false;
    out = traefik_merge_owned(live, desired, &changed);
    assert_true(changed);
    assert_string_equal(label(out, "annotations", TRAEFIK_ANNOT_SOURCE), "etcd");
    cJSON_Delete(out);
    cJSON_Delete(live);

    cJSON_Delete(desired);
    model_route_free(&r);
}

/* ---- apply_weights ------------------------------------------------------ */

static const char *LIVE_TEMPLATE =
    "{\"apiVersion\":\"traefik.io/v1alpha1\",\"kind\":\"IngressRoute\","
    "\"metadata\":{\"name\":\"shop\",\"namespace\":\"shop-ns\",\"resourceVersion\":\"7\","
    "\"labels\":{\"app.kubernetes.io/managed-by\":\"Helm\"},\"annotations\":{\"a\":\"b\"}},"
    "\"spec\":{\"entryPoints\":[\"web\"],\"routes\":["
    "{\"kind\":\"Rule\",\"match\":\"Host(`a`)\",\"middlewares\":[{\"name\":\"m\"}],"
    "\"services\":[{\"name\":\"shop-v1\",\"port\":80,\"weight\":%s},"
    "{\"name\":\"shop-v2\",\"port\":80,\"weight\":%s,\"passHostHeader\":false},"
    "{\"name\":\"other\",\"port\":80,\"weight\":5}]},"
    "{\"kind\":\"Rule\",\"match\":\"Host(`b`)\",\"priority\":3,"
    "\"services\":[{\"name\":\"shop-v2\",\"port\":\"http\"%s}]}]}}";

static cJSON *live_weights(const char *v1, const char *v2, const char *v2b) {
    char json[2048];
    snprintf(json, sizeof json, LIVE_TEMPLATE, v1, v2, v2b);
    cJSON *obj = cJSON_Parse(json);
    assert_non_null(obj);
    return obj;
}

static void test_apply_weights(void **state) {
    (void)state;
    struct model_route r;
    build(NULL, "shop-v1=70, shop-v2=30", NULL, &r);
    char err[256];
    bool changed = false;

    cJSON *obj = live_weights("100", "0", "");
    assert_int_equal(traefik_apply_weights(obj, &r, &changed, err, sizeof err), 0);
    assert_true(changed);
    /* Only the weights changed, in every route; a missing one is added. */
    cJSON *want = live_weights("70", "30", ",\"weight\":30");
    assert_true(cJSON_Compare(obj, want, 1));

    /* Applying again changes nothing. */
    changed = true;
    assert_int_equal(traefik_apply_weights(obj, &r, &changed, err, sizeof err), 0);
    assert_false(changed);
    assert_true(cJSON_Compare(obj, want, 1));
    cJSON_Delete(obj);
    cJSON_Delete(want);
    model_route_free(&r);
}

static void test_apply_weights_unknown_service(void **state) {
    (void)state;
    struct model_route r;
    build(NULL, "shop-v1=70, shop-v9=30", NULL, &r);
    char err[256];
    bool changed = false;
    cJSON *obj = live_weights("100", "0", "");
    cJSON *orig = cJSON_Duplicate(obj, 1);
    assert_int_equal(traefik_apply_weights(obj, &r, &changed, err, sizeof err), -1);
    assert_non_null(strstr(err, "'shop-v9'"));
    assert_true(cJSON_Compare(obj, orig, 1)); /* untouched, not half-applied */
    cJSON_Delete(obj);
    cJSON_Delete(orig);

    obj = cJSON_Parse("{\"kind\":\"IngressRoute\",\"spec\":{}}");
    assert_int_equal(traefik_apply_weights(obj, &r, &changed, err, sizeof err), -1);
    assert_non_null(strstr(err, "no spec.routes"));
    cJSON_Delete(obj);
    model_route_free(&r);
}

/* Label values stop at 63 bytes, names at 253: long inputs keep a readable
 * prefix, end on an alphanumeric, and stay distinct through the hash. */
static void test_shorten(void **state) {
    (void)state;
    char *same = traefik_shorten("short-name", 63);
    assert_string_equal(same, "short-name");
    free(same);
    char a_in[120], b_in[120];
    memset(a_in, 'a', sizeof a_in);
    a_in[61] = '-'; /* a cut here would end on '-' */
    a_in[sizeof a_in - 1] = '\0';
    memcpy(b_in, a_in, sizeof b_in);
    b_in[100] = 'b';
    char *a = traefik_shorten(a_in, 63), *b = traefik_shorten(b_in, 63);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(strlen(a) <= 63 && strlen(b) <= 63);
    assert_string_not_equal(a, b);
    char *dash = strrchr(a, '-');
    assert_non_null(dash);
    assert_int_equal(strlen(dash + 1), 10);
    assert_true(dash > a && dash[-1] != '-' && dash[-1] != '.');
    char *again = traefik_shorten(a_in, 63);
    assert_string_equal(a, again); /* stable: the same object keeps its label */
    free(a);
    free(b);
    free(again);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_owned_unchanged),
        cmocka_unit_test(test_merge_owned_key_order),
        cmocka_unit_test(test_merge_owned_changed),
        cmocka_unit_test(test_merge_owned_traefikservice),
        cmocka_unit_test(test_apply_weights),
        cmocka_unit_test(test_apply_weights_unknown_service),
        cmocka_unit_test(test_shorten),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
