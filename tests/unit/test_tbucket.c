/* test_tbucket.c - the token bucket's arithmetic with injected time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdint.h>

#include "bridge/lib/tbucket.h"

static void test_reserve_queues_behind_debt(void **state) {
    (void)state;
    struct tbucket b;
    tbucket_init(&b, 2, 1000, 100);
    /* A burst of two goes at once; then one per refill, reservations queue. */
    assert_int_equal(tbucket_reserve(&b, 100), 0);
    assert_int_equal(tbucket_reserve(&b, 100), 0);
    assert_int_equal(tbucket_reserve(&b, 100), 1000);
    assert_int_equal(tbucket_reserve(&b, 100), 2000);
    /* 2.5 s later: the debt (2 tokens) is paid, half a token banked. */
    assert_int_equal(tbucket_reserve(&b, 2600), 500);
    /* Long idle: full again, but never more than the burst. */
    assert_int_equal(tbucket_reserve(&b, 100000), 0);
    assert_int_equal(tbucket_reserve(&b, 100000), 0);
    assert_int_equal(tbucket_reserve(&b, 100000), 1000);
    /* Time that seems to run backwards earns nothing. */
    assert_int_equal(tbucket_reserve(&b, 50), 2000);
    /* Partial refill: 400 ms of a 1 s token still leaves 600 ms to wait
     * after a fresh drain. */
    tbucket_init(&b, 1, 1000, 0);
    assert_int_equal(tbucket_reserve(&b, 0), 0);
    assert_int_equal(tbucket_reserve(&b, 400), 600);
    /* Huge gaps do not overflow. */
    tbucket_init(&b, 2, 15000, 0);
    assert_int_equal(tbucket_reserve(&b, UINT64_MAX / 2), 0);
    assert_int_equal(tbucket_reserve(&b, UINT64_MAX / 2), 0);
    assert_int_equal(tbucket_reserve(&b, UINT64_MAX / 2), 15000);
    /* Degenerate settings are clamped to something that still limits. */
    tbucket_init(&b, 0, 0, 0);
    assert_int_equal(b.burst, 1);
    assert_int_equal(b.refill_ms, 1);
    assert_int_equal(tbucket_reserve(&b, 0), 0);
    assert_int_equal(tbucket_reserve(&b, 0), 1);
}

/* Changing the refill period (the Consul churn bucket follows the cost of
 * an answer) keeps the number of tokens banked or owed. */
static void test_bucket_set_refill(void **state) {
    (void)state;
    struct tbucket b;
    tbucket_init(&b, 4, 5, 0);
    assert_int_equal(tbucket_reserve(&b, 0), 0);
    assert_int_equal(tbucket_reserve(&b, 0), 0);
    /* Two of four tokens left; at 100 ms per token they stay two. */
    tbucket_set_refill(&b, 100, 0);
    assert_int_equal(b.level, 200);
    assert_int_equal(tbucket_reserve(&b, 0), 0);
    assert_int_equal(tbucket_reserve(&b, 0), 0);
    assert_int_equal(tbucket_reserve(&b, 0), 100);
    /* A debt of one token at 100 ms is one token at 5 ms; time passing
     * before the change is banked at the old rate first. */
    tbucket_set_refill(&b, 5, 50);
    assert_int_equal(b.level, -2); /* -100 + 50 ms earned = half a token owed */
    assert_int_equal(tbucket_reserve(&b, 50), 7);
    tbucket_set_refill(&b, 0, 50);
    assert_int_equal(b.refill_ms, 1);
}

/* take() never goes into debt: it is the burst detector's question "is
 * this add within the rate?", not a reservation. */
static void test_take_and_fill(void **state) {
    (void)state;
    struct tbucket b;
    tbucket_init(&b, 3, 10, 0);
    assert_true(tbucket_take(&b, 0));
    assert_true(tbucket_take(&b, 0));
    assert_true(tbucket_take(&b, 0));
    assert_false(tbucket_take(&b, 0));
    assert_false(tbucket_take(&b, 9));
    assert_int_equal(b.level, 9); /* refused takes cost nothing */
    assert_true(tbucket_take(&b, 10));
    assert_false(tbucket_take(&b, 10));
    tbucket_fill(&b, 11);
    assert_int_equal(b.level, 30);
    assert_true(tbucket_take(&b, 11));
    /* A reservation's debt is paid before take() succeeds again. */
    tbucket_init(&b, 1, 10, 0);
    assert_int_equal(tbucket_reserve(&b, 0), 0);
    assert_int_equal(tbucket_reserve(&b, 0), 10);
    assert_false(tbucket_take(&b, 15));
    assert_true(tbucket_take(&b, 20));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_queues_behind_debt),
        cmocka_unit_test(test_bucket_set_refill),
        cmocka_unit_test(test_take_and_fill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
