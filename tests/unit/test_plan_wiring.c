/* test_plan_wiring.c - ramp plans in the daemon (bridge/core/reconcile_plan.c):
 * the `plan` and `pause` keys through the key cache and the reconciler,
 * against the Kubernetes API test server (see rig.h). Holds are a few
 * hundred ms; every wait is for a condition.
 *
 * Run from tests/ (meson's workdir) or the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rig.h"
#include "support.h"

#define TWO_STEPS "shop-v1=100 shop-v2=0 300ms; shop-v1=0 shop-v2=100"

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const struct plan_status *must_plan(struct rig *r) {
    char id[128];
    snprintf(id, sizeof id, "%s/shop", r->ns);
    const struct plan_status *p = reconciler_plan(&r->rec, id);
    assert_non_null(p);
    return p;
}

static void expect_message_prefix(struct rig *r, const char *want) {
    const struct route_status *s = rig_must_status(r, "shop");
    if (!s->message || strncmp(s->message, want, strlen(want)) != 0)
        fail_msg("status message '%s', want it to begin '%s'", s->message ? s->message : "(none)",
                 want);
}

struct want_step {
    struct rig *r;
    size_t step; /* 0-based */
};

static bool at_step(void *arg) {
    struct want_step *w = arg;
    char id[128];
    snprintf(id, sizeof id, "%s/shop", w->r->ns);
    const struct plan_status *p = reconciler_plan(&w->r->rec, id);
    return p && p->step == w->step && p->announced == w->step + 1;
}

static bool plan_is_refused(void *arg) {
    struct rig *r = arg;
    char id[128];
    snprintf(id, sizeof id, "%s/shop", r->ns);
    const struct plan_status *p = reconciler_plan(&r->rec, id);
    return p && p->refused;
}

static void route_only(struct rig *r) {
    rig_put_key(r, "shop", "route", RIG_ROUTE_DOC);
}

/* The key cache: the same plan bytes under a new revision are a change
 * (a plan written again starts again); a pause key is a leaf. */
static void changed_cb(void *user, const char *id) {
    (void)id;
    (*(int *)user)++;
}

static void test_keycache_plan_revision_is_a_change(void **state) {
    (void)state;
    struct keycache kc;
    assert_int_equal(keycache_init(&kc, "p/", NULL), 0);
    int n = 0;
    struct source_kv kv = {"p/ns/shop/plan", TWO_STEPS, strlen(TWO_STEPS), 5};
    assert_int_equal(keycache_put(&kc, &kv, changed_cb, &n), 0);
    assert_int_equal(n, 1);
    kv.revision = 7;
    assert_int_equal(keycache_put(&kc, &kv, changed_cb, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(keycache_leaf(&kc, "ns/shop", KEYCACHE_PLAN)->rev, 7);
    /* Same revision again (a re-list): no change. A snapshot keeps it too. */
    assert_int_equal(keycache_put(&kc, &kv, changed_cb, &n), 0);
    assert_int_equal(n, 2);
    kv.revision = 9;
    assert_int_equal(keycache_snapshot(&kc, &kv, 1, 9, changed_cb, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(keycache_leaf(&kc, "ns/shop", KEYCACHE_PLAN)->rev, 9);
    struct source_kv pause = {"p/ns/shop/pause", "lunch", 5, 10};
    assert_int_equal(keycache_put(&kc, &pause, changed_cb, &n), 0);
    struct keycache_brakes b;
    keycache_brakes(&kc, "ns/shop", &b);
    assert_true(b.paused);
    assert_string_equal(b.pause_reason, "lunch");
    keycache_free(&kc);
}

/* The plan's timer moves the route to step 2 with no key written; one
 * PlanStep Event per step. */
static void test_timer_moves_to_the_next_step(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "pl-timer", true);
    route_only(r);
    rig_put_key(r, "shop", "plan", TWO_STEPS);
    rig_settle(r);
    rig_wait_weight(r, "shop", 100);
    assert_int_equal(must_plan(r)->step, 0);
    assert_true(must_plan(r)->has_next);
    struct want_step w = {r, 1};
    assert_true(support_run_until(&r->k->loop, at_step, &w, RIG_WAIT_MS));
    rig_wait_weight(r, "shop", 0);
    assert_false(must_plan(r)->has_next);
    assert_string_equal(must_plan(r)->weights, "shop-v1=0 shop-v2=100");
    assert_int_equal(rig_events_with(r, "PlanStep"), 2);
    assert_non_null(strstr(r->event_msg, "step 2 of 2: shop-v1=0 shop-v2=100, the last step"));
    /* The IngressRoute says where its weights came from. */
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    const char *from =
        kobj_str(cJSON_GetObjectItem(ir, "metadata"), "annotations", TRAEFIK_ANNOT_WEIGHTS);
    assert_non_null(from);
    assert_int_equal(strncmp(from, "plan:", 5), 0);
    cJSON_Delete(ir);
}

/* A weights key written after the plan wins, and the plan says it paused. */
static void test_weights_edit_overrides_and_pauses(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "pl-edit", true);
    route_only(r);
    rig_put_key(r, "shop", "plan", "shop-v1=90 shop-v2=10 1h; shop-v1=0 shop-v2=100");
    rig_settle(r);
    rig_wait_weight(r, "shop", 90);
    rig_put_key(r, "shop", "weights", "shop-v1=70, shop-v2=30");
    uint64_t rev = r->rev;
    rig_settle(r);
    rig_wait_weight(r, "shop", 70);
    const struct plan_status *p = must_plan(r);
    assert_true(p->paused);
    assert_true(p->overridden);
    assert_false(p->has_next);
    char want[64];
    snprintf(want, sizeof want, "weights edited at revision %" PRIu64, rev);
    assert_string_equal(p->why, want);
    assert_false(uv_is_active((uv_handle_t *)&r->rec.plan_timer));
}

/* The pause key holds the step (no timer armed); its deletion resumes with
 * the start moved on by the pause. */
static void test_pause_key_holds_then_resumes(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "pl-pause", true);
    route_only(r);
    rig_put_key(r, "shop", "plan", TWO_STEPS);
    rig_settle(r);
    rig_wait_weight(r, "shop", 100);
    uint64_t start = must_plan(r)->start_ms;
    rig_put_key(r, "shop", "pause", "watching the error rate");
    rig_settle(r);
    const struct plan_status *p = must_plan(r);
    assert_true(p->paused);
    assert_false(p->has_next);
    assert_int_equal(p->step, 0);
    assert_string_equal(p->why, "pause key: watching the error rate");
    assert_false(uv_is_active((uv_handle_t *)&r->rec.plan_timer));
    uint64_t paused = p->paused_ms;
    support_run_for(&r->k->loop, 50); /* some time paused: the start must move by it */
    rig_delete_key(r, "shop", "pause");
    rig_settle(r);
    p = must_plan(r);
    assert_false(p->paused);
    assert_true(p->start_ms > start); /* moved on by the pause */
    assert_true(p->start_ms - start <= wall_ms() - paused);
    struct want_step w = {r, 1};
    assert_true(support_run_until(&r->k->loop, at_step, &w, RIG_WAIT_MS));
    rig_wait_weight(r, "shop", 0);
}

/* A step max step refuses pauses the plan at that step, with a status
 * naming it; `force: true` makes the steps deliberate. */
static void test_refused_step_pauses_the_plan(void **state) {
    struct rig *r = rig_of(state);
    r->cfg.max_step = 30;
    rig_start(r, "pl-refuse", true);
    route_only(r);
    rig_put_key(r, "shop", "plan", "shop-v1=90 shop-v2=10 200ms; shop-v1=0 shop-v2=100");
    rig_settle(r);
    rig_wait_weight(r, "shop", 90);
    assert_true(support_run_until(&r->k->loop, plan_is_refused, r, RIG_WAIT_MS));
    const struct plan_status *p = must_plan(r);
    assert_true(p->refused);
    assert_true(p->paused);
    assert_int_equal(p->step, 1);
    expect_message_prefix(r, "plan paused at step 2: ");
    assert_non_null(strstr(rig_must_status(r, "shop")->message, "max_step is 30"));
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_ERROR);
    assert_int_equal(must_plan(r)->n_steps, 2);
    rig_settle(r);
    rig_wait_weight(r, "shop", 90);
    /* The same plan, forced: its steps go. */
    rig_put_key(r, "shop", "plan",
                "force: true\nsteps:\n  - {weights: {shop-v1: 90, shop-v2: 10}, hold: 200ms}\n"
                "  - {weights: {shop-v1: 0, shop-v2: 100}}\n");
    rig_settle(r);
    rig_wait_weight(r, "shop", 0);
}

/* Deleting the plan keeps its step's weights, even with an older weights
 * key; a weights key written after that rules again. */
static void test_deleted_plan_keeps_its_weights(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "pl-delete", true);
    rig_put_route(r, "shop", 95, 5);
    rig_settle(r);
    rig_wait_weight(r, "shop", 95);
    rig_put_key(r, "shop", "plan", "shop-v1=40 shop-v2=60");
    rig_settle(r);
    rig_wait_weight(r, "shop", 40);
    int seq = kapi_last_seq(r->k);
    rig_delete_key(r, "shop", "plan");
    rig_settle(r);
    char id[128];
    snprintf(id, sizeof id, "%s/shop", r->ns);
    assert_null(reconciler_plan(&r->rec, id));
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    assert_int_equal(rig_weight_of(ir, "shop-v1"), 40);
    cJSON_Delete(ir);
    assert_true(rig_must_status(r, "shop")->weights_held);
    /* A hand edit of the IngressRoute (a label) makes the next pass compare it in full:
     * the weights still come from the deleted plan, not from the older weights key. */
    ir = rig_must_get(r, "ingressroutes", "shop");
    cJSON *labels = cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "metadata"), "labels");
    cJSON_AddStringToObject(labels, "team", "shop");
    char path[256], *body = cJSON_PrintUnformatted(ir);
    snprintf(path, sizeof path, "/apis/" RIG_GROUP "/v1alpha1/namespaces/%s/ingressroutes/shop",
             r->ns);
    kapi_ctl_ok(r->k, "PUT", path, body);
    cJSON_free(body);
    cJSON_Delete(ir);
    rig_settle(r);
    rig_settle(r);
    char seen[16][128];
    cJSON *bodies[16] = {NULL};
    int n = rig_writes_since(r, seq, seen, bodies, 16);
    for (int i = 0; i < n; i++) { /* the annotation may move (held:), the weights not */
        assert_int_equal(rig_weight_of(bodies[i], "shop-v1"), 40);
        cJSON_Delete(bodies[i]);
    }
    rig_put_key(r, "shop", "weights", "shop-v1=20, shop-v2=80");
    rig_settle(r);
    rig_wait_weight(r, "shop", 20);
}

/* A freeze holds the plan's step (paused, no timer), its end resumes it;
 * an abort wins over the plan and pauses it too. */
static void test_freeze_holds_and_abort_wins(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "pl-brakes", true);
    route_only(r);
    rig_put_key(r, "shop", "plan", "shop-v1=80 shop-v2=20 300ms; shop-v1=0 shop-v2=100");
    rig_settle(r);
    rig_wait_weight(r, "shop", 80);
    rig_put_key(r, "shop", "freeze", "release train");
    rig_settle(r);
    assert_true(must_plan(r)->paused);
    assert_string_equal(must_plan(r)->why, "frozen: release train");
    assert_false(uv_is_active((uv_handle_t *)&r->rec.plan_timer));
    rig_put_key(r, "shop", "abort", "errors");
    rig_settle(r);
    rig_wait_weight(r, "shop", 100); /* all on the first service */
    assert_string_equal(must_plan(r)->why, "aborted: errors");
    rig_delete_key(r, "shop", "abort");
    rig_delete_key(r, "shop", "freeze");
    rig_settle(r);
    assert_false(must_plan(r)->paused);
    struct want_step w = {r, 1};
    assert_true(support_run_until(&r->k->loop, at_step, &w, RIG_WAIT_MS));
    rig_wait_weight(r, "shop", 0);
}

/* A bad plan: an error naming the key and the step; the objects stay. */
static void test_bad_plan_names_key_and_step(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "pl-bad", true);
    rig_apply_shop(r, false);
    int seq = kapi_last_seq(r->k);
    rig_put_key(r, "shop", "plan", "shop-v1=50 shop-v2=50 10x; shop-v1=0 shop-v2=100");
    rig_settle(r);
    char want[256];
    snprintf(want, sizeof want, "%s%s/shop/plan: step 1: hold: ", r->prefix, r->ns);
    expect_message_prefix(r, want);
    assert_int_equal(rig_must_status(r, "shop")->state, ROUTE_ERROR);
    char seen[16][128];
    assert_int_equal(rig_writes_since(r, seq, seen, NULL, 16), 0);
}

/* A restart: the status key records the plan's revision and start, and a
 * new reconciler goes on at the step in force, without a write of step 1.
 * Another revision (the plan written again) starts it afresh. */
static void test_start_read_back_from_the_status_key(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "pl-restart", true);
    rig_put_route(r, "shop", 0, 100);
    rig_settle(r);
    rig_wait_weight(r, "shop", 0);
    int seq = kapi_last_seq(r->k);
    uint64_t plan_rev = r->rev + 2; /* the status key, then the plan */
    char status[256];
    snprintf(status, sizeof status,
             "{\"state\":\"applied\",\"plan\":{\"revision\":%" PRIu64 ",\"step\":2,"
             "\"start_ms\":%" PRIu64 ",\"paused\":false}}",
             plan_rev, wall_ms() - 10000);
    rig_put_key(r, "shop", "status", status);
    rig_put_key(r, "shop", "plan", "shop-v1=100 shop-v2=0 1s; shop-v1=0 shop-v2=100");
    assert_int_equal(r->rev, plan_rev);
    rig_settle(r);
    const struct plan_status *p = must_plan(r);
    assert_int_equal(p->revision, plan_rev);
    assert_int_equal(p->step, 1);
    cJSON *ir = rig_must_get(r, "ingressroutes", "shop");
    assert_int_equal(rig_weight_of(ir, "shop-v1"), 0);
    cJSON_Delete(ir);
    cJSON *bodies[16] = {NULL};
    char seen[16][128];
    int n = rig_writes_since(r, seq, seen, bodies, 16);
    for (int i = 0; i < n; i++) { /* at most the annotation moves: never step 1's weights */
        assert_int_not_equal(rig_weight_of(bodies[i], "shop-v1"), 100);
        cJSON_Delete(bodies[i]);
    }
}

/* The preview (status, diff; a follower) computes the step a pass would. */
static void test_preview_agrees(void **state) {
    struct rig *r = rig_of(state);
    rig_start(r, "pl-preview", true);
    route_only(r);
    rig_put_key(r, "shop", "plan", "shop-v1=80 shop-v2=20 1h; shop-v1=0 shop-v2=100");
    rig_settle(r);
    rig_wait_weight(r, "shop", 80);
    char id[128];
    snprintf(id, sizeof id, "%s/shop", r->ns);
    struct route_preview pv;
    assert_int_equal(reconciler_preview(&r->rec, id, &pv), 0);
    assert_true(pv.has_model);
    assert_null(pv.error);
    assert_int_equal(pv.model.services[0].weight, 80);
    assert_int_equal(pv.model.services[1].weight, 20);
    reconciler_preview_free(&pv);
}

#define RIG_TEST(t) cmocka_unit_test_setup_teardown(t, rig_setup, rig_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keycache_plan_revision_is_a_change),
        RIG_TEST(test_timer_moves_to_the_next_step),
        RIG_TEST(test_weights_edit_overrides_and_pauses),
        RIG_TEST(test_pause_key_holds_then_resumes),
        RIG_TEST(test_refused_step_pauses_the_plan),
        RIG_TEST(test_deleted_plan_keeps_its_weights),
        RIG_TEST(test_freeze_holds_and_abort_wins),
        RIG_TEST(test_bad_plan_names_key_and_step),
        RIG_TEST(test_start_read_back_from_the_status_key),
        RIG_TEST(test_preview_agrees),
    };
    return cmocka_run_group_tests(tests, kapi_setup, kapi_teardown);
}
