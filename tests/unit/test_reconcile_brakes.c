/* test_reconcile_brakes.c - the brakes in the reconciler (freeze, abort,
 * max step; bridge/core/reconcile_brakes.c), with the key cache, against
 * the Kubernetes API test server (see rig.h).
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

#define NO_WRITES(r, seq)                                                                          \
    do {                                                                                           \
        char seen_[16][128];                                                                       \
        assert_int_equal(rig_writes_since((r), (seq), seen_, NULL, 16), 0);                        \
    } while (0)

static int ir_weight(struct rig *r, const char *name, const char *svc) {
    cJSON *ir = rig_must_get(r, "ingressroutes", name);
    int w = rig_weight_of(ir, svc);
    cJSON_Delete(ir);
    return w;
}

static int ir_routes(struct rig *r, const char *name) {
    cJSON *ir = rig_must_get(r, "ingressroutes", name);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes"));
    cJSON_Delete(ir);
    return n;
}

static void expect_message(struct rig *r, const char *route, const char *want) {
    const struct route_status *s = rig_must_status(r, route);
    if (!s->message || strcmp(s->message, want) != 0)
        fail_msg("status message '%s', want '%s'", s->message ? s->message : "(none)", want);
}

/* ---- freeze ---- */

/* A route's freeze key holds a weight change: nothing is written, the
 * status says frozen, for what reason, and that a change waits; deleting
 * the key applies it at once. */
static void test_freeze_holds_a_change_until_the_key_goes(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "bk-freeze", true);
    rig_apply_shop(r, false);
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "freeze", "release train 42\n");
    rig_settle(r);
    expect_message(r, "shop", "frozen: release train 42");
    assert_int_equal(rig_must_status(r, "shop")->brake, BRAKE_FROZEN);
    assert_false(rig_must_status(r, "shop")->change_waits);
    assert_int_equal(rig_events_with(r, "Frozen"), 1);

    rig_put_key(r, "shop", "weights", "shop-v1=50, shop-v2=50");
    rig_settle(r);
    NO_WRITES(r, seq);
    assert_int_equal(ir_weight(r, "shop", "shop-v1"), 90);
    expect_message(r, "shop", "frozen: release train 42; a change waits until the freeze ends");
    assert_true(rig_must_status(r, "shop")->change_waits);
    /* A re-check (resync) writes nothing either. */
    reconciler_enqueue_all(&r->rec);
    rig_settle(r);
    NO_WRITES(r, seq);
    assert_int_equal(rig_events_with(r, "Frozen"), 1);

    rig_delete_key(r, "shop", "freeze");
    rig_settle(r);
    rig_wait_weight(r, "shop", 50);
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_APPLIED);
    assert_int_equal(s->brake, BRAKE_NONE);
    assert_null(s->message);
    assert_false(s->change_waits);
}

/* A frozen route whose waiting keys are invalid says both; the objects
 * stay. */
static void test_freeze_names_an_invalid_change_waiting(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "bk-freeze-bad", true);
    rig_apply_shop(r, false);
    rig_put_key(r, "shop", "freeze", "");
    rig_put_key(r, "shop", "weights", "shop-v1=lots, shop-v2=10");
    rig_settle(r);
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->brake, BRAKE_FROZEN);
    assert_non_null(strstr(s->message, "frozen: no reason given; the change waiting is invalid: "));
    assert_non_null(strstr(s->message, "/weights: weight for 'shop-v1' must be a non-negative"));
    assert_int_equal(ir_weight(r, "shop", "shop-v1"), 90);
}

/* Under policy sync, deleting a frozen route's keys deletes nothing: the
 * freeze key alone keeps the route; its deletion then applies the
 * deletion. */
static void test_freeze_holds_a_deletion(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.policy = POLICY_SYNC;
    rig_start(r, "bk-freeze-del", true);
    rig_put_route(r, "cart", 90, 10); /* a second route: the deletion guard lets one go */
    rig_apply_shop(r, true);
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "freeze", "audit");
    rig_delete_key(r, "shop", "headers");
    rig_delete_key(r, "shop", "weights");
    rig_delete_key(r, "shop", "route");
    rig_settle(r);
    NO_WRITES(r, seq);
    assert_true(rig_exists(r, "ingressroutes", "shop"));
    assert_true(rig_must_status(r, "shop")->change_waits);
    rig_delete_key(r, "shop", "freeze");
    rig_settle(r);
    assert_false(rig_exists(r, "ingressroutes", "shop"));
    assert_null(rig_status(r, "shop"));
}

/* P_freeze freezes every route, frozen routes without keys of their own
 * included (their deletion waits); deleting it applies what waits. One
 * warning for all, no Frozen Event per route. */
static void test_prefix_freeze_holds_every_route(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.policy = POLICY_SYNC;
    rig_start(r, "bk-freeze-all", true);
    rig_put_route(r, "cart", 90, 10);
    rig_put_route(r, "gone", 90, 10);
    rig_apply_shop(r, false);
    int seq = kapi_last_seq(r->k);
    rig_put_prefix_key(r, KEYCACHE_FREEZE_KEY, "quarter end");
    rig_settle(r);
    expect_message(r, "shop", "frozen: quarter end");
    expect_message(r, "cart", "frozen: quarter end");
    rig_put_key(r, "shop", "weights", "shop-v1=70, shop-v2=30");
    rig_put_key(r, "cart", "weights", "shop-v1=60, shop-v2=40");
    rig_delete_key(r, "gone", "weights");
    rig_delete_key(r, "gone", "route");
    rig_settle(r);
    NO_WRITES(r, seq);
    assert_true(rig_must_status(r, "cart")->change_waits);
    assert_true(rig_must_status(r, "gone")->change_waits);
    assert_int_equal(rig_events_with(r, "Frozen"), 0);

    rig_delete_prefix_key(r, KEYCACHE_FREEZE_KEY);
    rig_settle(r);
    rig_wait_weight(r, "shop", 70);
    rig_wait_weight(r, "cart", 60);
    assert_false(rig_exists(r, "ingressroutes", "gone"));
    assert_null(rig_must_status(r, "shop")->message);
    assert_int_equal(rig_must_status(r, "cart")->brake, BRAKE_NONE);
}

/* ---- abort ---- */

/* Abort: all traffic on the first service, header rules out, whatever the
 * weights key says (even a broken one), with an Aborted Event; the status
 * says so. Deleting it applies the keys again, rules included. */
static void test_abort_sends_everything_to_the_first_service(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "bk-abort", true);
    rig_apply_shop(r, true);
    assert_int_equal(ir_routes(r, "shop"), 2);
    rig_put_key(r, "shop", "abort", "5xx on v2");
    rig_settle(r);
    rig_wait_weight(r, "shop", 100);
    assert_int_equal(ir_weight(r, "shop", "shop-v2"), 0);
    assert_int_equal(ir_routes(r, "shop"), 1); /* no header route to the canary */
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_APPLIED);
    assert_int_equal(s->brake, BRAKE_ABORTED);
    expect_message(r, "shop", "aborted: 5xx on v2");
    assert_int_equal(rig_events_with(r, "Aborted"), 1);
    assert_int_equal(strncmp(r->events[r->n_events - 1], "Aborted ", 8), 0);
    assert_string_equal(r->event_type[r->n_events - 1], "Warning");
    assert_string_equal(r->event_msg, "aborted: 5xx on v2; all traffic on shop-v1");

    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "weights", "shop-v1=oops");
    rig_put_key(r, "shop", "weights", "shop-v1=10, shop-v2=90");
    rig_settle(r);
    NO_WRITES(r, seq);
    expect_message(r, "shop", "aborted: 5xx on v2");

    rig_delete_key(r, "shop", "abort");
    rig_settle(r);
    rig_wait_weight(r, "shop", 10);
    assert_int_equal(ir_routes(r, "shop"), 2);
    assert_null(rig_must_status(r, "shop")->message);
    assert_int_equal(rig_must_status(r, "shop")->brake, BRAKE_NONE);
    assert_int_equal(rig_events_with(r, "Aborted"), 1);
}

/* Abort wins over a freeze, and is never limited by max step; once the
 * abort key goes, the freeze holds again (with the keys' own change
 * waiting). Without a weights key, the end of an abort keeps 100/0: the
 * IngressRoute records them as held. */
static void test_abort_overrides_freeze_and_max_step(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.max_step = 10;
    rig_start(r, "bk-abort-frozen", true);
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC);
    rig_put_key(r, "shop", "weights", "shop-v1=50, shop-v2=50");
    rig_settle(r);
    rig_wait_weight(r, "shop", 50);
    rig_settle(r);
    rig_put_prefix_key(r, KEYCACHE_FREEZE_KEY, "freeze");
    rig_settle(r);
    rig_put_key(r, "shop", "abort", "incident 7");
    rig_settle(r);
    rig_wait_weight(r, "shop", 100);
    expect_message(r, "shop", "aborted: incident 7");
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    const char *from =
        kobj_str(cJSON_GetObjectItem(ir, "metadata"), "annotations", TRAEFIK_ANNOT_WEIGHTS);
    assert_non_null(from);
    assert_int_equal(strncmp(from, "held:", 5), 0);
    cJSON_Delete(ir);

    rig_delete_key(r, "shop", "abort");
    rig_settle(r);
    assert_int_equal(ir_weight(r, "shop", "shop-v1"), 100);
    expect_message(r, "shop", "frozen: freeze; a change waits until the freeze ends");
    rig_delete_key(r, "shop", "weights");
    rig_delete_prefix_key(r, KEYCACHE_FREEZE_KEY);
    rig_settle(r);
    assert_int_equal(ir_weight(r, "shop", "shop-v1"), 100);
    assert_int_equal(ir_weight(r, "shop", "shop-v2"), 0);
    assert_true(rig_must_status(r, "shop")->weights_held);
}

/* The end of an abort whose write waits for its write slot
 * (reconcile.object_writes_per_second) is still written when the slot
 * comes back. The abort took the slot moments ago, and the keys (a new
 * weights key, written under the abort without a write) were applied at
 * their latest revision: only the brake's end makes the deferred pass
 * differ from what was applied, so it must not be skipped as unchanged. */
static void test_abort_end_waiting_for_its_write_slot_is_written(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.object_writes_per_second = 1; /* a slot every second */
    rig_start(r, "bk-abort-paced", true);
    rig_apply_shop(r, false);
    rig_put_key(r, "shop", "abort", "5xx on v2");
    rig_settle(r);
    rig_wait_weight(r, "shop", 100);
    rig_put_key(r, "shop", "weights", "shop-v1=10, shop-v2=90");
    rig_settle(r);
    assert_int_equal(ir_weight(r, "shop", "shop-v1"), 100);
    uint64_t delayed = r->rec.stats.delayed;
    rig_delete_key(r, "shop", "abort");
    rig_settle(r);
    /* Less than a second after the abort's write: this pass waited. */
    assert_true(r->rec.stats.delayed > delayed);
    assert_int_equal(ir_weight(r, "shop", "shop-v1"), 10);
    assert_int_equal(ir_weight(r, "shop", "shop-v2"), 90);
    assert_int_equal(rig_must_status(r, "shop")->brake, BRAKE_NONE);
    assert_null(rig_must_status(r, "shop")->message);
}

/* Patched mode: the abort sets 100 on the first service the weights key
 * names and 0 on the others it names, on an IngressRoute nobody lets the
 * bridge own. */
static void test_abort_in_patched_mode(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "bk-abort-patched", true);
    rig_create_foreign_ir(r, "shop");
    rig_put_key(r, "shop", "weights", "shop-v1=70, shop-v2=30");
    rig_settle(r);
    rig_wait_weight(r, "shop", 70);
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "abort", "rollback");
    rig_settle(r);
    rig_wait_weight(r, "shop", 100);
    char seen[16][128];
    assert_int_equal(rig_writes_since(r, seq, seen, NULL, 16), 1);
    assert_string_equal(seen[0], "PUT ingressroutes/shop 200");
    assert_int_equal(ir_weight(r, "shop", "shop-v2"), 0);
    expect_message(r, "shop", "aborted: rollback");
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    assert_null(kobj_str(cJSON_GetObjectItem(ir, "metadata"), "labels", TRAEFIK_LABEL_MANAGED_BY));
    cJSON_Delete(ir);
    rig_delete_key(r, "shop", "abort");
    rig_settle(r);
    rig_wait_weight(r, "shop", 70);
}

/* An abort key without route or weights keys cannot name a first service:
 * an error, and (policy sync) nothing is deleted. */
static void test_abort_without_route_deletes_nothing(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.policy = POLICY_SYNC;
    rig_start(r, "bk-abort-alone", true);
    rig_put_route(r, "cart", 90, 10);
    rig_apply_shop(r, false);
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "abort", "x");
    rig_delete_key(r, "shop", "weights");
    rig_delete_key(r, "shop", "route");
    rig_settle(r);
    NO_WRITES(r, seq);
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    assert_non_null(strstr(s->message, "aborted: x; not applied: the route has neither a route "
                                       "nor a weights key"));
}

/* ---- max step ---- */

/* reconcile.max_step 20: 90/10 -> 45/55 moves 45 points and is refused
 * (status, StepRefused Event, counted once however often it is passed);
 * a step within the limit applies, and so does a big one marked '!'. The
 * route's maxStep overrides the global one. */
static void test_max_step_refuses_a_big_move_unless_deliberate(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.max_step = 20;
    rig_start(r, "bk-step", true);
    rig_apply_shop(r, false);
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "weights", "shop-v1=45, shop-v2=55");
    rig_settle(r);
    NO_WRITES(r, seq);
    const struct route_status *s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    assert_non_null(strstr(s->message, "max step: shop-v2 would move 45 points, max_step is 20 "
                                       "(reconcile.max_step): from 10% to 55% of the traffic"));
    assert_int_equal(rig_events_with(r, "StepRefused"), 1);
    assert_int_equal(rig_events_with(r, "RouteFailed"), 0);
    assert_int_equal(r->rec.stats.step_refusals, 1);
    reconciler_enqueue_all(&r->rec);
    rig_settle(r);
    assert_int_equal(r->rec.stats.step_refusals, 1);
    assert_int_equal(rig_events_with(r, "StepRefused"), 1);

    rig_put_key(r, "shop", "weights", "shop-v1=75, shop-v2=25"); /* 15 points */
    rig_settle(r);
    rig_wait_weight(r, "shop", 75);
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_APPLIED);
    rig_put_key(r, "shop", "weights", "shop-v1=0, shop-v2=100 !");
    rig_settle(r);
    rig_wait_weight(r, "shop", 0);

    /* The route's own maxStep: 5 refuses 10 points. */
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC "maxStep: 5\n");
    rig_put_key(r, "shop", "weights", "shop-v1=10, shop-v2=90");
    rig_settle(r);
    s = rig_must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    assert_non_null(strstr(s->message, "shop-v1 would move 10 points, max_step is 5 (the "
                                       "route's maxStep)"));
    assert_int_equal(r->rec.stats.step_refusals, 2);
    assert_int_equal(ir_weight(r, "shop", "shop-v1"), 0);
}

/* Patched mode compares with the live object's weights (1/1 here). */
static void test_max_step_in_patched_mode(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.max_step = 30;
    rig_start(r, "bk-step-patched", true);
    rig_create_foreign_ir(r, "shop");
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "weights", "shop-v1=90, shop-v2=10");
    rig_settle(r);
    NO_WRITES(r, seq);
    assert_non_null(strstr(rig_must_status(r, "shop")->message,
                           "shop-v1 would move 40 points, max_step is 30"));
    rig_put_key(r, "shop", "weights", "shop-v1=75, shop-v2=25");
    rig_settle(r);
    rig_wait_weight(r, "shop", 75);
}

#define RIG_TEST(t) cmocka_unit_test_setup_teardown(t, rig_setup, rig_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        RIG_TEST(test_freeze_holds_a_change_until_the_key_goes),
        RIG_TEST(test_freeze_names_an_invalid_change_waiting),
        RIG_TEST(test_freeze_holds_a_deletion),
        RIG_TEST(test_prefix_freeze_holds_every_route),
        RIG_TEST(test_abort_sends_everything_to_the_first_service),
        RIG_TEST(test_abort_overrides_freeze_and_max_step),
        RIG_TEST(test_abort_end_waiting_for_its_write_slot_is_written),
        RIG_TEST(test_abort_in_patched_mode),
        RIG_TEST(test_abort_without_route_deletes_nothing),
        RIG_TEST(test_max_step_refuses_a_big_move_unless_deliberate),
        RIG_TEST(test_max_step_in_patched_mode),
    };
    return cmocka_run_group_tests(tests, kapi_setup, kapi_teardown);
}
