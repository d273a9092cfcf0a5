/* test_plan.c - ramp plans: the three spellings, validation, and the step
 * in force at a given time (plan.h).
 *
 * Covers that the document (YAML and JSON), step-list and one-line forms
 * give the same plan, that every error names its step and field, the step
 * boundaries (a step takes over exactly at start + the holds before it),
 * holds so long their sum does not fit in 64 bits, and pausing/resuming. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/model/plan.h"

#define MIN (60 * 1000ULL)
#define START 1700000000000ULL /* an epoch time in ms; any value works */

static const char *const SVC[] = {"shop-v1", "shop-v2"};

static const char *YAML_DOC = "steps:\n"
                              "  - {weights: {shop-v1: 95, shop-v2: 5}, hold: 10m}\n"
                              "  - {weights: {shop-v1: 75, shop-v2: 25}, hold: 30m}\n"
                              "  - {weights: {shop-v1: 0, shop-v2: 100}}\n";

static void parse_ok(const char *text, const char *const *svc, size_t n, struct plan *p) {
    char err[512] = "";
    int rc = plan_parse(text, strlen(text), svc, n, p, err, sizeof err);
    if (rc != 0)
        fail_msg("plan_parse(%s): %s", text, err);
}

/* plan_parse fails with a message containing want, and leaves *out zeroed. */
static void parse_bad(const char *text, const char *const *svc, size_t n, const char *want) {
    struct plan p;
    char err[512] = "";
    int rc = plan_parse(text, strlen(text), svc, n, &p, err, sizeof err);
    if (rc != -1 || !strstr(err, want))
        fail_msg("plan_parse(%s) = %d, err '%s', want an error with '%s'", text, rc, err, want);
    assert_null(p.steps);
    assert_int_equal(p.n_steps, 0);
}

static void assert_step(const struct plan *p, size_t i, long w1, long w2, uint64_t hold) {
    assert_true(i < p->n_steps);
    const struct plan_step *s = &p->steps[i];
    assert_int_equal(s->n_weights, 2);
    assert_string_equal(s->weights[0].service, "shop-v1");
    assert_int_equal(s->weights[0].weight, w1);
    assert_string_equal(s->weights[1].service, "shop-v2");
    assert_int_equal(s->weights[1].weight, w2);
    assert_true(s->hold_ms == hold);
}

/* 95/5 for 10m, 75/25 for 30m, then 0/100 for good. */
static void assert_issue_plan(const struct plan *p) {
    assert_int_equal(p->n_steps, 3);
    assert_step(p, 0, 95, 5, 10 * MIN);
    assert_step(p, 1, 75, 25, 30 * MIN);
    assert_step(p, 2, 0, 100, 0);
}

/* ---- the spellings agree ------------------------------------------------- */

static void test_forms_agree(void **state) {
    (void)state;
    static const char *const texts[] = {
        NULL, /* YAML_DOC */
        "{\"steps\": [{\"weights\": {\"shop-v1\": 95, \"shop-v2\": 5}, \"hold\": \"10m\"},\n"
        "  {\"weights\": {\"shop-v2\": 25, \"shop-v1\": 75}, \"hold\": \"30m\"},\n"
        "  {\"weights\": {\"shop-v1\": 0, \"shop-v2\": 100}, \"hold\": null}]}",
        "steps:\n"
        "- weights: shop-v1=95, shop-v2=5\n"
        "  hold: 10m\n"
        "- weights: {shop-v2: 25, shop-v1: 75}\n"
        "  hold: 0.5h\n"
        "- weights: shop-v2=100 shop-v1=0\n",
        "shop-v1=95 shop-v2=5 10m; shop-v1=75, shop-v2=25, 30m; shop-v1 = 0 shop-v2 = 100",
        "shop-v1=95 shop-v2=5 10m;\nshop-v2=25 shop-v1=75 1800s;\nshop-v2=100 shop-v1=0;\n",
        "shop-v2: 5% 10m, 25% 30m, 100%",
        "\xEF\xBB\xBF  shop-v2:5% 10m,25%   30m , 100% ,",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct plan p;
        parse_ok(texts[i] ? texts[i] : YAML_DOC, SVC, 2, &p);
        assert_issue_plan(&p);
        plan_free(&p);
        assert_null(p.steps);
    }
}

/* Services in the route's order, whatever order a step writes them in; a
 * third service gets its weight in every step. */
static void test_route_order(void **state) {
    (void)state;
    static const char *const three[] = {"a", "b", "c"};
    struct plan p;
    parse_ok("c=1 b=2 a=3 1h; b=0 a=0 c=9", three, 3, &p);
    assert_int_equal(p.n_steps, 2);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(p.steps[0].weights[i].service, three[i]);
    assert_int_equal(p.steps[0].weights[0].weight, 3);
    assert_int_equal(p.steps[0].weights[2].weight, 1);
    assert_int_equal(p.steps[1].weights[2].weight, 9);
    assert_true(p.steps[0].hold_ms == 60 * MIN);
    plan_free(&p);
}

/* Without the route's services (patched mode), step 1's names rule. */
static void test_patched_mode(void **state) {
    (void)state;
    struct plan p;
    parse_ok("shop-v1=95 shop-v2=5 10m; shop-v2=25 shop-v1=75 30m; shop-v1=0 shop-v2=100", NULL, 0,
             &p);
    assert_issue_plan(&p);
    plan_free(&p);
    parse_ok(YAML_DOC, NULL, 0, &p);
    assert_issue_plan(&p);
    plan_free(&p);
    parse_bad("a=1 b=1 1m; a=1 c=1", NULL, 0, "step 2: weights: unknown service 'c'");
    parse_bad("a=1 b=1 1m; a=1", NULL, 0, "step 2: weights: no weight for b");
    parse_bad("shop-v2: 5% 10m, 100%", NULL, 0, "the one-line form needs the route's services");
}

static void test_step_limit(void **state) {
    (void)state;
    char *text = malloc(101 * 16 + 1);
    assert_non_null(text);
    size_t len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)sprintf(text + len, "a=%d b=1 1s;", i);
    struct plan p;
    char err[512];
    text[len - 4] = '\0'; /* drop the last hold: 100 steps */
    assert_int_equal(plan_parse(text, strlen(text), NULL, 0, &p, err, sizeof err), 0);
    assert_int_equal(p.n_steps, PLAN_STEPS_MAX);
    plan_free(&p);
    strcpy(text + len - 4, " 1s; a=1 b=1");
    parse_bad(text, NULL, 0, "more than 100 steps");
    free(text);
    char doc[4096] = "steps:\n";
    for (int i = 0; i < 101; i++)
        strcat(doc, "- {weights: {a: 1}, hold: 1s}\n");
    parse_bad(doc, NULL, 0, "more than 100 steps");
}

/* ---- every error names its step ----------------------------------------- */

static void test_errors(void **state) {
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        /* holds */
        {"shop-v1=95 shop-v2=5; shop-v1=0 shop-v2=100", "step 1: hold: missing"},
        {"steps: [{weights: {shop-v1: 1, shop-v2: 1}, hold: 1m}, {weights: {shop-v1: 1, "
         "shop-v2: 1}}, {weights: {shop-v1: 0, shop-v2: 1}}]",
         "step 2: hold: missing"},
        {"steps: [{weights: {shop-v1: 1, shop-v2: 1}, hold: \"0\"}, {weights: {shop-v1: 0, "
         "shop-v2: 1}}]",
         "step 1: hold: must be longer than 0"},
        {"steps: [{weights: {shop-v1: 1, shop-v2: 1}, hold: 600}, {weights: {shop-v1: 0, "
         "shop-v2: 1}}]",
         "step 1: hold: must be a duration with a unit"},
        {"steps: [{weights: {shop-v1: 1, shop-v2: 1}, hold: 10x}, {weights: {shop-v1: 0, "
         "shop-v2: 1}}]",
         "step 1: hold: invalid duration '10x'"},
        {"shop-v1=1 shop-v2=1 1m; shop-v1=0 shop-v2=1 5m", "step 2: hold: the last step holds"},
        {"shop-v2: 5% 10m, 100% 1h", "step 2: hold: the last step holds"},
        {"shop-v2: 5% 10m, 25%, 100%", "step 2: hold: missing"},
        {"shop-v2: 5% 10m, 25% soon, 100%", "step 2: hold: invalid duration 'soon'"},
        {"shop-v2: 5% 10m, 25% 0s, 100%", "step 2: hold: must be longer than 0"},
        {"shop-v1=1 shop-v2=1 1m; shop-v1=1 shop-v2=1 1y; shop-v2=1 shop-v1=0",
         "step 2: hold: invalid duration '1y'"},
        /* weights */
        {"shop-v1=1 shop-v2=1 1m; shop-v1=1 shop-v3=1", "step 2: weights: unknown service "
                                                        "'shop-v3' (not in the route's services)"},
        {"steps: [{weights: {shop-v1: 1, shop-v2: 1}, hold: 1m}, {weights: {shop-v2: 1}}]",
         "step 2: weights: no weight for shop-v1"},
        {"shop-v1=0 shop-v2=0", "step 1: weights: all weights are zero"},
        {"steps: [{weights: {shop-v1: 0, shop-v2: 0}}]", "step 1: weights: all weights are zero"},
        {"steps: [{weights: {shop-v1: 1, shop-v2: -1}}]",
         "step 1: weights: weight for 'shop-v2' must be an integer 0..1000000"},
        {"steps: [{hold: 1m, weights: {shop-v1: 1, shop-v2: 1}}, {weights: {shop-v1: 1, "
         "shop-v2: \"5\"}}]",
         "step 2: weights: weight for 'shop-v2' must be an integer"},
        {"steps: [{weights: {shop-v1: 1.5, shop-v2: 1}}]",
         "step 1: weights: weight for 'shop-v1' must be an integer"},
        {"steps: [{weights: {shop-v1: 1000001, shop-v2: 1}}]",
         "step 1: weights: weight for 'shop-v1' must be an integer 0..1000000"},
        {"shop-v1=1 shop-v2=1 1m; shop-v1=1 shop-v2=1000001",
         "step 2: weights: weight for 'shop-v2' must be at most 1000000"},
        {"shop-v1=1 shop-v1=2", "step 1: weights: duplicate service 'shop-v1'"},
        {"steps: [{weights: {Shop: 1}}]", "step 1: weights: service name 'Shop' is not a valid"},
        {"steps: [{weights: {}}]", "step 1: weights: none given"},
        {"steps: [{hold: 1m}, {weights: {shop-v1: 1, shop-v2: 1}}]", "step 1: weights: missing"},
        {"steps: [{weights: [shop-v1, shop-v2]}]", "step 1: weights: must be a mapping"},
        {"steps: [{weights: \"shop-v1=1 shop-v2\"}]", "step 1: weights: expected name=weight"},
        {"shop-v1=1 shop-v2=1 1m; 10m", "step 2: weights: expected name=weight pairs"},
        /* structure */
        {"steps: [{weights: {shop-v1: 1, shop-v2: 1}, wait: 1m}]", "step 1: unknown field 'wait'"},
        {"steps: [{weights: {shop-v1: 1, shop-v2: 1}, hold: 1m}, 7]",
         "step 2: must be a mapping with weights and hold"},
        {"steps: []", "steps: must be a list of at least one step"},
        {"steps: {weights: {shop-v1: 1}}", "steps: must be a list"},
        {"step: []", "unknown field 'step'"},
        {"[1, 2]", "a plan must be a mapping with 'steps'"},
        {"steps: [", "line "},
        {"", "empty value"},
        {"shop-v1=1 shop-v2=1 1m;; shop-v1=0 shop-v2=1", "step 2: empty"},
        /* the one-line form */
        {"shop-v2: 5% 10m, 25 30m, 100%", "step 2: weight: expected a percentage such as 25%"},
        {"shop-v2: 5% 10m, 2.5% 30m, 100%", "step 2: weight: expected a percentage"},
        {"shop-v2: 5% 10m, 25% 30m, 101%", "step 3: weight: must be 0% to 100%, got 101%"},
        {"shop-v2: 5% 10m, 25% 30m, 99999999999999999999%", "step 3: weight: must be 0% to 100%"},
        {"shop-v2: 5% 10m, 25% 30m 1h, 100%", "step 2: unexpected '1h' after the hold"},
        {"shop-v2: 5% 10m,, 100%", "step 2: empty"},
        {"shop-v1: 5% 10m, 100%", "'shop-v1' is the route's first service"},
        {"shop-v3: 5% 10m, 100%", "'shop-v3' is not one of the route's services"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        parse_bad(cases[i].text, SVC, 2, cases[i].want);
    static const char *const three[] = {"a", "b", "c"};
    parse_bad("b: 5% 1m, 100%", three, 3, "the one-line form is for a route of two services");
    struct plan p;
    char err[512];
    assert_int_equal(plan_parse(NULL, 0, SVC, 2, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty value"));
    assert_int_equal(plan_parse("shop-v2: 5% 1m\0, 100%", 21, SVC, 2, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "NUL byte"));
}

/* ---- the step in force --------------------------------------------------- */

static void assert_at(const struct plan *p, uint64_t now, size_t step, long w2, bool has_next,
                      uint64_t next) {
    struct plan_pos pos;
    plan_at(p, START, now, &pos);
    if (pos.step != step || pos.has_next != has_next || (has_next && pos.next_ms != next))
        fail_msg("at start+%" PRId64 "ms: step %zu next %d/%" PRIu64
                 ", want step %zu next %d/%" PRIu64,
                 (int64_t)(now - START), pos.step, pos.has_next, pos.next_ms, step, has_next, next);
    assert_false(pos.paused);
    assert_ptr_equal(pos.weights, p->steps[step].weights);
    assert_int_equal(pos.n_weights, 2);
    assert_int_equal(pos.weights[1].weight, w2);
}

static void test_step_boundaries(void **state) {
    (void)state;
    struct plan p;
    parse_ok(YAML_DOC, SVC, 2, &p);
    assert_at(&p, START, 0, 5, true, START + 10 * MIN);
    assert_at(&p, START + 10 * MIN - 1, 0, 5, true, START + 10 * MIN);
    assert_at(&p, START + 10 * MIN, 1, 25, true, START + 40 * MIN); /* exactly at the change */
    assert_at(&p, START + 40 * MIN - 1, 1, 25, true, START + 40 * MIN);
    assert_at(&p, START + 40 * MIN, 2, 100, false, 0);
    assert_at(&p, UINT64_MAX, 2, 100, false, 0);
    /* a clock behind the start: the first step, changing at start + its hold */
    assert_at(&p, START - 5 * MIN, 0, 5, true, START + 10 * MIN);
    assert_at(&p, 0, 0, 5, true, START + 10 * MIN);
    struct plan_pos pos;
    plan_at(&p, START, START + 25 * MIN, &pos);
    assert_true(pos.since_ms == START + 10 * MIN);
    plan_at(&p, START, START + 99 * MIN, &pos);
    assert_true(pos.since_ms == START + 40 * MIN);
    plan_free(&p);

    parse_ok("shop-v2: 100%", SVC, 2, &p); /* one step: in force from the start, for good */
    assert_at(&p, START, 0, 100, false, 0);
    assert_at(&p, 0, 0, 100, false, 0);
    plan_free(&p);
}

/* Holds whose sum, or whose end, does not fit in 64 bits: that change
 * never comes, and no sum wraps round to an early one. */
static void test_huge_holds(void **state) {
    (void)state;
    struct plan p;
    /* 3e12 hours is 1.08e19 ms: two of them overflow uint64_t */
    parse_ok("shop-v2: 5% 3000000000000h, 25% 3000000000000h, 100%", SVC, 2, &p);
    uint64_t hold = 3000000000000ULL * 60 * MIN;
    assert_true(p.steps[0].hold_ms == hold);
    assert_at(&p, START, 0, 5, true, START + hold);
    assert_at(&p, START + hold - 1, 0, 5, true, START + hold);
    assert_at(&p, START + hold, 1, 25, false, 0);
    assert_at(&p, UINT64_MAX, 1, 25, false, 0);
    /* a start so late that even the first change lies past the range */
    struct plan_pos pos;
    plan_at(&p, UINT64_MAX - 10, UINT64_MAX, &pos);
    assert_int_equal(pos.step, 0);
    assert_false(pos.has_next);
    plan_paused_at(&p, UINT64_MAX - 10, UINT64_MAX, &pos);
    assert_int_equal(pos.step, 0);
    assert_false(pos.has_remaining);
    plan_free(&p);
    parse_ok("shop-v2: 5% 18446744073709551615ms, 100%", SVC, 2, &p);
    assert_true(p.steps[0].hold_ms == UINT64_MAX);
    plan_at(&p, 0, UINT64_MAX - 1, &pos); /* started at 0: changes at UINT64_MAX exactly */
    assert_int_equal(pos.step, 0);
    assert_true(pos.has_next && pos.next_ms == UINT64_MAX);
    plan_at(&p, 0, UINT64_MAX, &pos);
    assert_int_equal(pos.step, 1);
    assert_at(&p, UINT64_MAX, 0, 5, false, 0); /* START + UINT64_MAX: never */
    plan_free(&p);
    parse_bad("shop-v2: 5% 18446744073709551616ms, 100%", SVC, 2, "step 1: hold: invalid");
}

/* ---- pausing ------------------------------------------------------------- */

static void test_pause(void **state) {
    (void)state;
    struct plan p;
    struct plan_pos pos;
    parse_ok(YAML_DOC, SVC, 2, &p);
    plan_paused_at(&p, START, START + 4 * MIN, &pos);
    assert_int_equal(pos.step, 0);
    assert_int_equal(pos.weights[1].weight, 5);
    assert_true(pos.paused);
    assert_false(pos.has_next);
    assert_true(pos.has_remaining);
    assert_true(pos.remaining_ms == 6 * MIN);
    /* paused exactly at a change: the new step holds, all of its hold left */
    plan_paused_at(&p, START, START + 10 * MIN, &pos);
    assert_int_equal(pos.step, 1);
    assert_int_equal(pos.weights[1].weight, 25);
    assert_true(pos.remaining_ms == 30 * MIN);
    /* paused before the start: the first step, with its whole hold */
    plan_paused_at(&p, START, START - MIN, &pos);
    assert_int_equal(pos.step, 0);
    assert_true(pos.remaining_ms == 10 * MIN);
    /* paused on the last step: nothing remains */
    plan_paused_at(&p, START, START + 50 * MIN, &pos);
    assert_int_equal(pos.step, 2);
    assert_false(pos.has_remaining);
    assert_false(pos.has_next);

    /* paused at 4m for an hour: resumes with 6m of step 1 to go */
    uint64_t start2 = plan_resumed_start(START, START + 4 * MIN, START + 64 * MIN);
    assert_true(start2 == START + 60 * MIN);
    plan_at(&p, start2, START + 64 * MIN, &pos);
    assert_int_equal(pos.step, 0);
    assert_true(pos.next_ms == START + 70 * MIN);
    /* a resume at or before the pause, or a pause before the start */
    assert_true(plan_resumed_start(START, START + MIN, START + MIN) == START);
    assert_true(plan_resumed_start(START, START + MIN, START) == START);
    assert_true(plan_resumed_start(START, START - MIN, START + MIN) == START + MIN);
    assert_true(plan_resumed_start(START, START, UINT64_MAX) == UINT64_MAX);
    assert_true(plan_resumed_start(UINT64_MAX - 9, UINT64_MAX - 5, UINT64_MAX) == UINT64_MAX - 4);
    plan_free(&p);
}

/* ---- the document's options: pause, force, start ------------------------ */

static void test_document_options(void **state) {
    (void)state;
    struct plan p;
    parse_ok("pause: true\nforce: true\nstart: 2026-12-06T10:00:00Z\n"
             "steps: [{weights: {shop-v1: 1, shop-v2: 1}}]",
             SVC, 2, &p);
    assert_true(p.pause);
    assert_true(p.force);
    assert_true(p.has_start);
    assert_true(p.start_ms == 1796551200000ULL);
    plan_free(&p);
    parse_ok("{\"start\": \"2026-12-06T11:30:00.250+01:30\", \"steps\": [{\"weights\": "
             "{\"shop-v1\": 1, \"shop-v2\": 1}}]}",
             SVC, 2, &p);
    assert_false(p.pause);
    assert_false(p.force);
    assert_true(p.start_ms == 1796551200250ULL);
    plan_free(&p);
    parse_ok("shop-v2: 5% 10m, 100%", SVC, 2, &p); /* the compact forms have none */
    assert_false(p.pause || p.force || p.has_start);
    plan_free(&p);
    parse_bad("pause: yes please\nsteps: [{weights: {shop-v1: 1, shop-v2: 1}}]", SVC, 2,
              "pause: must be true or false");
    parse_bad("force: maybe\nsteps: [{weights: {shop-v1: 1, shop-v2: 1}}]", SVC, 2,
              "force: must be true or false");
    parse_bad("start: tomorrow\nsteps: [{weights: {shop-v1: 1, shop-v2: 1}}]", SVC, 2,
              "start: 'tomorrow' is not an RFC 3339 time");
    parse_bad("start: 2026-13-01T00:00:00Z\nsteps: [{weights: {shop-v1: 1, shop-v2: 1}}]", SVC, 2,
              "start: '2026-13-01T00:00:00Z' is not an RFC 3339 time");
    uint64_t ms;
    assert_int_equal(plan_parse_time("1970-01-01T00:00:00Z", &ms), 0);
    assert_true(ms == 0);
    assert_int_equal(plan_parse_time("2024-02-29T12:00:00Z", &ms), 0);
    assert_true(ms == 1709208000000ULL);
    assert_int_equal(plan_parse_time("2024-02-29 12:00:00Z", &ms), -1);
    assert_int_equal(plan_parse_time("2024-02-29T12:00:00", &ms), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms_agree),      cmocka_unit_test(test_route_order),
        cmocka_unit_test(test_patched_mode),     cmocka_unit_test(test_step_limit),
        cmocka_unit_test(test_errors),           cmocka_unit_test(test_step_boundaries),
        cmocka_unit_test(test_huge_holds),       cmocka_unit_test(test_pause),
        cmocka_unit_test(test_document_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
