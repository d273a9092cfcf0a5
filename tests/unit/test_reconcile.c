/* test_reconcile.c - the reconciler (bridge/core/reconcile.h) with the key
 * cache, against the Kubernetes API test server, on the rig (rig.h) the
 * reconciler tests share: keys go in as a source delivers them, what
 * reached the API server is read back from the server.
 *
 * The test names say what each checks; together they cover create and
 * update order, 409 retries, both deletion policies, the deletion guard,
 * the namespace rules, patched mode, ownership refusals, bad input and a
 * rival writer.
 *
 * Run from tests/ (meson's workdir) or the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rig.h"

static int count_method(char seen[][128], int n, const char *method) {
    int c = 0;
    for (int i = 0; i < n; i++)
        c += strncmp(seen[i], method, strlen(method)) == 0 && seen[i][strlen(method)] == ' ';
    return c;
}

struct route_is {
    struct rig *r;
    const char *route;
    enum route_state state;
};

static bool route_state_is(void *arg) {
    struct route_is *w = arg;
    const struct route_status *s = rig_status(w->r, w->route);
    return s && s->state == w->state;
}

static bool route_fighting(void *arg) {
    struct route_is *w = arg;
    const struct route_status *s = rig_status(w->r, w->route);
    return s && s->fighting;
}

/* ---- tests ---- */

/* An owned route with a header rule: the Middleware is created before the
 * IngressRoute that references it, both labelled as managed from our
 * prefix and annotated with the route; the status records the IngressRoute's
 * resourceVersion and an Applied event names the weights. */
static void test_owned_route_creates_middleware_before_ingressroute(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "rc-create", true);
    int seq = kapi_last_seq(r->k);
    rig_put_route(r, "shop", 90, 10);
    rig_put_key(r, "shop", "headers", RIG_HEADERS_DOC);
    rig_settle(r);
    rig_wait_weight(r, "shop", 90);

    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 2);
    assert_int_equal(strncmp(seen[0], "POST middlewares/shop-beta-", 27), 0);
    assert_string_equal(seen[1], "POST ingressroutes/shop 201");

    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    const cJSON *meta = cJSON_GetObjectItem(ir, "metadata");
    assert_string_equal(kobj_str(meta, "labels", TRAEFIK_LABEL_MANAGED_BY), TRAEFIK_MANAGER);
    assert_string_equal(kobj_str(meta, "labels", RECONCILE_ROUTE_LABEL), "shop");
    assert_string_equal(kobj_str(meta, "annotations", RECONCILE_ROUTE_ANNOT), "shop");
    assert_string_equal(kobj_str(meta, "annotations", TRAEFIK_ANNOT_PREFIX), r->prefix);
    assert_int_equal(rig_weight_of(ir, "shop-v1"), 90);
    assert_int_equal(rig_weight_of(ir, "shop-v2"), 10);
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_APPLIED);
    assert_null(s->message);
    assert_int_equal(s->revision, r->rev);
    assert_non_null(s->resource_version);
    assert_string_equal(s->resource_version, kobj_str(meta, "resourceVersion", NULL));
    cJSON_Delete(ir);
    assert_int_equal(rig_events_with(r, "Applied"), 1);
    assert_non_null(strstr(r->event_msg, "weights shop-v1=90 shop-v2=10 from etcd revision"));
    assert_int_equal(rig_count_objs(r, "middlewares"), 1);
    assert_int_equal(r->rec.stats.writes, 2);
}

/* A weight change is one PUT of the IngressRoute (the Middleware is
 * unchanged); the same bytes put again change nothing, and a re-check of
 * an unchanged route writes nothing. */
static void test_weight_change_is_one_put_and_unchanged_keys_write_nothing(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "rc-update", true);
    rig_apply_shop(r, true);

    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "weights", "shop-v1=50, shop-v2=50");
    rig_settle(r);
    rig_wait_weight(r, "shop", 50);
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 1);
    assert_string_equal(seen[0], "PUT ingressroutes/shop 200");
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    assert_int_equal(rig_weight_of(ir, "shop-v2"), 50);
    cJSON_Delete(ir);
    rig_settle(r);

    /* The same weights again, and a re-check: nothing written. */
    seq = kapi_last_seq(r->k);
    uint64_t passes = r->rec.stats.passes;
    rig_put_key(r, "shop", "weights", "shop-v1=50, shop-v2=50");
    reconciler_enqueue_all(&r->rec);
    rig_settle(r);
    assert_true(r->rec.stats.passes > passes);
    n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
}

/* Someone else wrote the IngressRoute and our cache has not seen it (its
 * watch is stopped): our PUT carries a stale resourceVersion and gets a
 * real 409. The pass reads the object again and retries once with the
 * fresh resourceVersion, which succeeds. */
static void test_conflict_rereads_and_retries_with_fresh_resource_version(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "rc-conflict", true);
    rig_apply_shop(r, false);

    informer_stop(&r->inf[OBJ_INGRESSROUTE]); /* the cache keeps the old version */
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    const char *stale = kobj_str(ir, "metadata", "resourceVersion");
    char stale_rv[32];
    snprintf(stale_rv, sizeof stale_rv, "%s", stale);
    cJSON *labels = cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "metadata"), "labels");
    cJSON_AddStringToObject(labels, "team", "web"); /* a change of someone else's */
    char *body = cJSON_PrintUnformatted(ir);
    long status;
    cJSON *after = kapi_ctl(
        r->k, "PUT", "/apis/" RIG_GROUP "/v1alpha1/namespaces/rc-conflict/ingressroutes/shop", body,
        &status);
    assert_int_equal(status, 200);
    char fresh_rv[32];
    snprintf(fresh_rv, sizeof fresh_rv, "%s", kobj_str(after, "metadata", "resourceVersion"));
    assert_string_not_equal(fresh_rv, stale_rv);
    cJSON_Delete(after);
    free(body);
    cJSON_Delete(ir);

    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "weights", "shop-v1=70, shop-v2=30");
    rig_settle(r);
    char seen[16][128];
    cJSON *bodies[16] = {0};
    int n = rig_requests_since(r, seq, true, seen, bodies, 16);
    assert_int_equal(n, 3);
    assert_string_equal(seen[0], "PUT ingressroutes/shop 409");
    assert_string_equal(seen[1], "GET ingressroutes/shop 200");
    assert_string_equal(seen[2], "PUT ingressroutes/shop 200");
    assert_string_equal(kobj_str(bodies[0], "metadata", "resourceVersion"), stale_rv);
    assert_string_equal(kobj_str(bodies[2], "metadata", "resourceVersion"), fresh_rv);
    for (int i = 0; i < n; i++)
        cJSON_Delete(bodies[i]);
    assert_int_equal(r->rec.stats.conflicts, 1);
    ir = rig_must_get(r, "ingressroutes", "shop");
    assert_int_equal(rig_weight_of(ir, "shop-v1"), 70);
    assert_string_equal(kobj_str(cJSON_GetObjectItem(ir, "metadata"), "labels", "team"), "web");
    cJSON_Delete(ir);
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_APPLIED);
}

static bool ir_gone(void *arg) {
    struct rig *r = arg;
    return !rig_exists(r, "ingressroutes", "shop");
}

/* Policy sync: when a route's keys are all gone, its IngressRoute is
 * deleted first, then the Middleware it referenced (with preconditions on
 * the version judged), and the route's status is dropped. */
static void test_sync_deletes_ingressroute_before_its_middleware(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.policy = POLICY_SYNC;
    rig_start(r, "rc-sync", true);
    rig_put_route(r, "cart", 90, 10); /* one route of two: the guard lets it go */
    rig_apply_shop(r, true);
    assert_int_equal(rig_count_objs(r, "middlewares"), 1);

    int seq = kapi_last_seq(r->k);
    rig_delete_key(r, "shop", "headers");
    rig_delete_key(r, "shop", "weights");
    rig_delete_key(r, "shop", "route");
    rig_settle(r);
    assert_true(support_run_until(&r->k->loop, ir_gone, r, RIG_WAIT_MS));
    char seen[16][128];
    cJSON *bodies[16] = {0};
    int n = rig_writes_since(r, seq, seen, bodies, 16);
    assert_int_equal(n, 2);
    assert_string_equal(seen[0], "DELETE ingressroutes/shop 200");
    assert_int_equal(strncmp(seen[1], "DELETE middlewares/shop-beta-", 29), 0);
    assert_non_null(kobj_str(bodies[0], "preconditions", "resourceVersion"));
    for (int i = 0; i < n; i++)
        cJSON_Delete(bodies[i]);
    assert_int_equal(rig_count_objs(r, "middlewares"), 0);
    assert_true(rig_exists(r, "ingressroutes", "cart"));
    assert_null(rig_status(r, "shop"));
    assert_true(r->dropped >= 1);
    assert_false(r->rec.guard.holding);
}

/* Policy upsert-only (the default): keys gone, objects stay. */
static void test_upsert_only_keeps_objects_when_keys_go(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "rc-upsert", true);
    rig_apply_shop(r, false);
    int seq = kapi_last_seq(r->k);
    rig_delete_key(r, "shop", "weights");
    rig_delete_key(r, "shop", "route");
    rig_settle(r);
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
    assert_true(rig_exists(r, "ingressroutes", "shop"));
    assert_null(rig_status(r, "shop"));
}

/* The guard's token, read from its /readyz line ("... put P = 0123abcd"). */
static void guard_token(struct rig *r, char token[16]) {
    char line[512];
    assert_true(reconciler_guard_describe(&r->rec, line, sizeof line));
    print_message("  %s\n", line);
    const char *eq = strrchr(line, '=');
    assert_non_null(eq);
    snprintf(token, 16, "%s", eq + 2);
    assert_int_equal(strlen(token), 8);
}

static bool all_three_gone(void *arg) {
    struct rig *r = arg;
    return rig_count_objs(r, "ingressroutes") == 0;
}

/* Policy sync, three routes, and a listing without any of their keys: more
 * than max_delete_percent (all of them) would go. The guard holds: nothing
 * deleted, one DeletionHeld event per route, /readyz names the token.
 * Putting the token into P_confirm-delete lets the deletions go ahead. */
static void test_deletion_guard_holds_a_mass_deletion_until_confirmed(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.policy = POLICY_SYNC;
    rig_start(r, "rc-guard", true);
    static const char *const routes[] = {"a", "b", "c"};
    rig_list_routes(r, routes, 3);
    rig_settle(r);
    assert_int_equal(rig_count_objs(r, "ingressroutes"), 3);
    rig_settle(r);
    char line[512];
    assert_false(reconciler_guard_describe(&r->rec, line, sizeof line));
    assert_string_equal(line, "");

    int seq = kapi_last_seq(r->k);
    rig_list_routes(r, NULL, 0);
    rig_settle(r);
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(count_method(seen, n, "DELETE"), 0);
    assert_int_equal(rig_count_objs(r, "ingressroutes"), 3);
    assert_true(r->rec.guard.holding);
    assert_int_equal(r->rec.guard.gone, 3);
    assert_int_equal(r->rec.guard.owned, 3);
    assert_int_equal(rig_events_with(r, "DeletionHeld"), 3);
    char token[16];
    guard_token(r, token);

    /* A wrong token confirms nothing. */
    rig_put_prefix_key(r, KEYCACHE_CONFIRM_KEY, "00000000");
    rig_settle(r);
    assert_true(r->rec.guard.holding);
    assert_int_equal(rig_count_objs(r, "ingressroutes"), 3);

    char value[24];
    snprintf(value, sizeof value, "%s\n", token); /* as `echo` writes it */
    rig_put_prefix_key(r, KEYCACHE_CONFIRM_KEY, value);
    assert_true(support_run_until(&r->k->loop, all_three_gone, r, RIG_WAIT_MS));
    rig_settle(r);
    assert_false(r->rec.guard.holding);
    n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(count_method(seen, n, "DELETE"), 3);
}

/* The same mass deletion, then the keys come back (a restore): the hold
 * ends by itself and nothing was ever deleted. */
static void test_deletion_guard_ends_when_the_keys_return(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.policy = POLICY_SYNC;
    rig_start(r, "rc-restore", true);
    static const char *const routes[] = {"a", "b", "c"};
    rig_list_routes(r, routes, 3);
    rig_settle(r);
    rig_settle(r);
    int seq = kapi_last_seq(r->k);
    rig_list_routes(r, NULL, 0);
    rig_settle(r);
    assert_true(r->rec.guard.holding);
    rig_list_routes(r, routes, 3);
    rig_settle(r);
    assert_false(r->rec.guard.holding);
    char line[512];
    assert_false(reconciler_guard_describe(&r->rec, line, sizeof line));
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(count_method(seen, n, "DELETE"), 0);
    assert_int_equal(rig_count_objs(r, "ingressroutes"), 3);
    assert_int_equal(r->rec.guard.holds, 1);
}

/* reconcile.namespaces: a route outside the allow-list is an error in its
 * status, and no request is made for it. */
static void test_namespace_outside_allow_list_is_refused_without_a_request(void **state) {
    static char *allowed[] = {"rc-elsewhere"}; /* outlives the test: the rig's teardown */
    struct rig *r = rig_of(state);
    r->cfg.namespaces = allowed;
    r->cfg.n_namespaces = 1;
    rig_start(r, "rc-allow", true);
    int seq = kapi_last_seq(r->k);
    rig_put_route(r, "shop", 90, 10);
    rig_settle(r);
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    assert_string_equal(s->message, "namespace rc-allow is not in reconcile.namespaces");
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
    assert_false(rig_exists(r, "ingressroutes", "shop"));
}

/* A route in a namespace that does not exist: one create, answered 404
 * about the namespace; an error naming it in the status, and the route is
 * retried later (delayed in the queue), not at once. */
static void test_missing_namespace_is_an_error_retried_later(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "rc-nowhere", false);
    int seq = kapi_last_seq(r->k);
    rig_put_route(r, "shop", 90, 10);
    struct route_is err = {r, "shop", ROUTE_ERROR};
    assert_true(support_run_until(&r->k->loop, route_state_is, &err, RIG_WAIT_MS));
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(reconciler_jobs_in_flight(&r->rec), 0);
    assert_non_null(s->message);
    assert_non_null(strstr(s->message, "namespace rc-nowhere does not exist"));
    assert_int_equal(workqueue_delayed(&r->rec.wq), 1);
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 1);
    assert_string_equal(seen[0], "POST ingressroutes/shop 404");
}

/* Patched mode (weights without a route key): only the weights of an
 * existing IngressRoute change; its other labels stay and it does not
 * become managed. */
static void test_patched_mode_sets_only_weights_on_a_foreign_ingressroute(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "rc-patched", true);
    rig_create_foreign_ir(r, "shop");
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "weights", "shop-v1=70, shop-v2=30");
    rig_settle(r);
    rig_wait_weight(r, "shop", 70);
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 1);
    assert_string_equal(seen[0], "PUT ingressroutes/shop 200");
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    const cJSON *meta = cJSON_GetObjectItem(ir, "metadata");
    assert_int_equal(rig_weight_of(ir, "shop-v2"), 30);
    assert_string_equal(kobj_str(meta, "labels", "team"), "web");
    assert_null(kobj_str(meta, "labels", TRAEFIK_LABEL_MANAGED_BY));
    assert_null(kobj_str(meta, "annotations", TRAEFIK_ANNOT_PREFIX));
    cJSON_Delete(ir);
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_APPLIED);
    assert_int_equal(rig_events_with(r, "Applied"), 1);
}

/* Owned mode (a route key) never takes over an IngressRoute it does not
 * manage: an error, no write. */
static void test_owned_mode_refuses_to_take_over_a_foreign_ingressroute(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "rc-takeover", true);
    rig_create_foreign_ir(r, "shop");
    int seq = kapi_last_seq(r->k);
    rig_put_route(r, "shop", 90, 10);
    rig_settle(r);
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    assert_non_null(strstr(s->message, "is not managed by canary-bridge"));
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    assert_int_equal(rig_weight_of(ir, "shop-v1"), 1);
    cJSON_Delete(ir);
    assert_int_equal(rig_events_with(r, "RouteFailed"), 1);
}

/* Bad weights fail only their route: the status names the key, the
 * objects keep their last good weights, nothing is written; good weights
 * recover it. */
static void test_bad_weights_fail_the_route_and_keep_its_objects(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "rc-bad", true);
    rig_apply_shop(r, false);
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "weights", "shop-v1=lots, shop-v2=10");
    rig_settle(r);
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    char key[200];
    rig_key(r, "shop", "weights", key, sizeof key);
    assert_non_null(strstr(s->message, key));
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    assert_int_equal(rig_weight_of(ir, "shop-v1"), 90);
    cJSON_Delete(ir);
    rig_put_key(r, "shop", "weights", "shop-v1=80, shop-v2=20");
    rig_settle(r);
    rig_wait_weight(r, "shop", 80);
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_APPLIED);
}

/* Another writer (field manager "rival") keeps setting other weights on
 * our IngressRoute. Each undo is answered with one rewrite, until the third
 * in a row: then the route is marked as fought over (an error naming the
 * rival, a WritesUndone event), and the next rewrite waits a backoff
 * period instead of following at once. */
static void test_rival_writer_is_named_and_slowed_down(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "rc-rival", true);
    rig_apply_shop(r, false);
    for (int i = 1; i <= RECONCILE_FIGHT_UNDOS; i++) {
        cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
        cJSON *routes = cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes");
        cJSON *svcs = cJSON_GetObjectItem(cJSON_GetArrayItem(routes, 0), "services");
        cJSON_ReplaceItemInObject(cJSON_GetArrayItem(svcs, 0), "weight", cJSON_CreateNumber(50));
        cJSON_ReplaceItemInObject(cJSON_GetArrayItem(svcs, 1), "weight", cJSON_CreateNumber(50));
        char *body = cJSON_PrintUnformatted(ir);
        kapi_ctl_ok(r->k, "PUT",
                    "/apis/" RIG_GROUP
                    "/v1alpha1/namespaces/rc-rival/ingressroutes/shop?fieldManager=rival",
                    body);
        free(body);
        cJSON_Delete(ir);
        if (i < RECONCILE_FIGHT_UNDOS) {
            rig_wait_weight(r, "shop", 90); /* undone at once */
            rig_settle(r);
            assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_APPLIED);
        }
    }
    /* The third undo: judged, named, and the pass that judged it held its
     * rewrite back (the route waits in the queue). */
    struct route_is fight = {r, "shop", ROUTE_ERROR};
    assert_true(support_run_until(&r->k->loop, route_fighting, &fight, RIG_WAIT_MS));
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    assert_int_equal(rig_weight_of(ir, "shop-v1"), 50);
    cJSON_Delete(ir);
    assert_int_equal(reconciler_jobs_in_flight(&r->rec), 0);
    assert_int_equal(workqueue_delayed(&r->rec.wq), 1);
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    assert_non_null(strstr(s->message, "another writer, field manager \"rival\""));
    assert_string_equal(s->rival, "rival");
    assert_int_equal(r->rec.stats.undone, RECONCILE_FIGHT_UNDOS);
    assert_int_equal(rig_events_with(r, "WritesUndone"), 1);
    /* After the backoff, one rewrite; and a change of the keys ends it. */
    rig_wait_weight(r, "shop", 90);
    rig_put_key(r, "shop", "weights", "shop-v1=80, shop-v2=20");
    rig_settle(r);
    rig_wait_weight(r, "shop", 80);
    assert_false(rig_must_status(r, "shop")->fighting);
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_APPLIED);
}

#define RIG_TEST(t) cmocka_unit_test_setup_teardown(t, rig_setup, rig_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        RIG_TEST(test_owned_route_creates_middleware_before_ingressroute),
        RIG_TEST(test_weight_change_is_one_put_and_unchanged_keys_write_nothing),
        RIG_TEST(test_conflict_rereads_and_retries_with_fresh_resource_version),
        RIG_TEST(test_sync_deletes_ingressroute_before_its_middleware),
        RIG_TEST(test_upsert_only_keeps_objects_when_keys_go),
        RIG_TEST(test_deletion_guard_holds_a_mass_deletion_until_confirmed),
        RIG_TEST(test_deletion_guard_ends_when_the_keys_return),
        RIG_TEST(test_namespace_outside_allow_list_is_refused_without_a_request),
        RIG_TEST(test_missing_namespace_is_an_error_retried_later),
        RIG_TEST(test_patched_mode_sets_only_weights_on_a_foreign_ingressroute),
        RIG_TEST(test_owned_mode_refuses_to_take_over_a_foreign_ingressroute),
        RIG_TEST(test_bad_weights_fail_the_route_and_keep_its_objects),
        RIG_TEST(test_rival_writer_is_named_and_slowed_down),
    };
    return cmocka_run_group_tests(tests, kapi_setup, kapi_teardown);
}
