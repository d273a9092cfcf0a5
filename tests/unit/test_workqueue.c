/* test_workqueue.c - coalescing, dirty requeue, concurrency bound, backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "bridge/lib/workqueue.h"
#include "support.h"

struct rec {
    uv_loop_t loop; /* each test runs its own loop */
    struct workqueue q;
    char seen[64][32];
    size_t n;
    bool auto_done; /* call workqueue_done from inside process */
    bool retry;     /* ... with retry */
};

static void process(void *user, const char *key) {
    struct rec *r = user;
    if (r->n < 64)
        snprintf(r->seen[r->n++], sizeof r->seen[0], "%s", key);
    if (r->auto_done)
        workqueue_done(&r->q, key, r->retry);
}

static bool drained(void *arg) {
    struct rec *r = arg;
    return workqueue_pending(&r->q) == 0 && workqueue_delayed(&r->q) == 0;
}
static bool seen3(void *arg) {
    return ((struct rec *)arg)->n >= 3;
}

static void setup_rec(struct rec *r, size_t max) {
    memset(r, 0, sizeof *r);
    assert_int_equal(uv_loop_init(&r->loop), 0);
    assert_int_equal(workqueue_init(&r->q, &r->loop, max, process, r), 0);
}

static void teardown_rec(struct rec *r) {
    workqueue_close(&r->q);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    workqueue_free(&r->q);
    assert_int_equal(uv_loop_close(&r->loop), 0);
}

static void test_adds_of_one_key_coalesce(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 4);
    r.auto_done = true;
    for (int i = 0; i < 5; i++)
        assert_int_equal(workqueue_add(&r.q, "ns/a"), 0);
    assert_int_equal(workqueue_add(&r.q, "ns/b"), 0);
    assert_int_equal(workqueue_pending(&r.q), 2);
    support_run_until_idle(&r.loop, drained, &r);
    assert_int_equal(r.n, 2); /* five adds of ns/a became one pass */
    assert_string_equal(r.seen[0], "ns/a");
    assert_string_equal(r.seen[1], "ns/b");
    teardown_rec(&r);
}

static void test_dirty_requeue(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 4);
    workqueue_add(&r.q, "k");
    support_run_until_idle(&r.loop, seen3, &r); /* runs until nothing is left to do */
    assert_int_equal(r.n, 1);
    /* Added while in flight: not handed out twice, but runs again after. */
    workqueue_add(&r.q, "k");
    workqueue_add(&r.q, "k");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 1);
    workqueue_done(&r.q, "k", false);
    r.auto_done = true;
    support_run_until_idle(&r.loop, drained, &r);
    assert_int_equal(r.n, 2);
    teardown_rec(&r);
}

static void test_max_in_flight(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 2);
    workqueue_add(&r.q, "a");
    workqueue_add(&r.q, "b");
    workqueue_add(&r.q, "c");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.q.in_flight, 2);
    workqueue_done(&r.q, "a", false);
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.seen[2], "c");
    workqueue_done(&r.q, "b", false);
    workqueue_done(&r.q, "c", false);
    teardown_rec(&r);
}

static void test_retry_backoff(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 1);
    r.q.base_backoff_ms = 1;
    r.q.max_backoff_ms = 4;
    r.auto_done = true;
    r.retry = true;
    workqueue_add(&r.q, "x");
    support_run_until_idle(&r.loop, seen3, &r);
    assert_true(r.n >= 3); /* came back twice by itself after failing */
    assert_true(workqueue_failures(&r.q, "x") >= 3);
    r.retry = false;
    support_run_until_idle(&r.loop, drained, &r);
    assert_int_equal(workqueue_failures(&r.q, "x"), 0); /* success forgets */
    teardown_rec(&r);
}

static void test_add_after_then_add_now(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 1);
    r.auto_done = true;
    workqueue_add_after(&r.q, "late", 3600 * 1000);
    assert_int_equal(workqueue_delayed(&r.q), 1);
    workqueue_add(&r.q, "late"); /* an edit arrives: it runs now, not in an hour */
    assert_int_equal(workqueue_delayed(&r.q), 0);
    support_run_until_idle(&r.loop, drained, &r);
    assert_int_equal(r.n, 1);
    teardown_rec(&r);
}

/* A server's Retry-After holds even when new input arrives meanwhile; our
 * own backoff does not (new input may fix what failed). */
static void test_retry_after_holds_against_new_input(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 1);
    workqueue_add(&r.q, "k");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 1);
    workqueue_done_after(&r.q, "k", 3600 * 1000); /* 429, Retry-After: 3600 */
    workqueue_add(&r.q, "k");                     /* an edit arrives */
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 1); /* still waiting */
    assert_int_equal(workqueue_delayed(&r.q), 1);
    assert_int_equal(workqueue_pending(&r.q), 0);
    /* Our own backoff gives way to new input. */
    workqueue_add(&r.q, "other");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 2);
    workqueue_done(&r.q, "other", true);
    workqueue_add(&r.q, "other");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 3);
    workqueue_done(&r.q, "other", false);
    teardown_rec(&r);
}

static void test_pause_holds_keys(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 1);
    r.auto_done = true;
    workqueue_pause(&r.q, true);
    workqueue_add(&r.q, "p");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 0);
    workqueue_pause(&r.q, false);
    support_run_until_idle(&r.loop, drained, &r);
    assert_int_equal(r.n, 1);
    teardown_rec(&r);
}

/* Source changes go before re-checks: an edit made during a resync of every
 * route does not wait for the resync to get through the queue. */
static void test_changes_before_rechecks(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 1);
    r.auto_done = true;
    workqueue_add(&r.q, "r1");
    workqueue_add(&r.q, "r2");
    workqueue_add(&r.q, "moved");
    workqueue_add(&r.q, "r3");
    workqueue_add_change(&r.q, "edit");
    workqueue_add_change(&r.q, "moved"); /* queued as a re-check, now a change */
    assert_int_equal(workqueue_pending(&r.q), 5);
    support_run_until_idle(&r.loop, drained, &r);
    assert_int_equal(r.n, 5);
    assert_string_equal(r.seen[0], "edit");
    assert_string_equal(r.seen[1], "moved");
    assert_string_equal(r.seen[2], "r1");
    assert_string_equal(r.seen[3], "r2");
    assert_string_equal(r.seen[4], "r3");
    /* Once handed out, a key is a plain re-check again. */
    workqueue_add(&r.q, "r1");
    workqueue_add(&r.q, "edit");
    support_run_until_idle(&r.loop, drained, &r);
    assert_string_equal(r.seen[5], "r1");
    assert_string_equal(r.seen[6], "edit");
    teardown_rec(&r);
}

/* ---- burst settling ---- */

struct holds {
    int began, ended;
    size_t changes; /* reported at the end */
};

static struct holds g_holds; /* the settle callback's user is the queue's */

static void on_settle(void *user, bool holding, size_t changes, uint64_t held_ms) {
    (void)user;
    (void)held_ms;
    if (holding) {
        g_holds.began++;
    } else {
        g_holds.ended++;
        g_holds.changes = changes;
    }
}

static bool hold_ended(void *arg) {
    struct rec *r = arg;
    return !workqueue_holding(&r->q) && drained(r);
}

/* Changes within the burst go out at once; past it the queue holds until
 * the changes pause, then hands out each key once. */
static void test_settle_holds_until_quiet(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 4);
    r.auto_done = true;
    memset(&g_holds, 0, sizeof g_holds);
    /* Two changes, no refill to speak of, 20 ms of quiet ends a hold. */
    workqueue_settle(&r.q, 2, 3600 * 1000, 20, 60 * 1000, on_settle);
    workqueue_add_change(&r.q, "a");
    workqueue_add_change(&r.q, "a"); /* the same key again: not new work */
    workqueue_add_change(&r.q, "b");
    assert_false(workqueue_holding(&r.q));
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 2); /* a single edit (or two) never waits */
    workqueue_add_change(&r.q, "c");
    assert_true(workqueue_holding(&r.q));
    assert_int_equal(g_holds.began, 1);
    workqueue_add_change(&r.q, "d");
    workqueue_add_change(&r.q, "c");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 2); /* held */
    /* A plain add (resync, drift) is held too, but does not count. */
    workqueue_add(&r.q, "e");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 2);
    support_run_until_idle(&r.loop, hold_ended, &r);
    assert_int_equal(g_holds.ended, 1);
    assert_int_equal(g_holds.changes, 3); /* c (trip), d, c again */
    assert_int_equal(r.n, 5);
    assert_string_equal(r.seen[2], "c");
    assert_string_equal(r.seen[3], "d");
    assert_string_equal(r.seen[4], "e");
    /* The bucket is full again after a hold: the next edits go at once. */
    workqueue_add_change(&r.q, "f");
    workqueue_add_change(&r.q, "g");
    assert_false(workqueue_holding(&r.q));
    support_run_until_idle(&r.loop, drained, &r);
    assert_int_equal(r.n, 7);
    teardown_rec(&r);
}

/* Changes that never pause are still written: max_hold ends the hold, and
 * everything held is handed out before a new hold may begin. */
static void test_settle_max_hold(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 1);
    memset(&g_holds, 0, sizeof g_holds);
    workqueue_settle(&r.q, 1, 3600 * 1000, 3600 * 1000, 20, on_settle);
    workqueue_add_change(&r.q, "a");
    workqueue_add_change(&r.q, "b"); /* trips: quiet would take an hour */
    assert_true(workqueue_holding(&r.q));
    support_run_until_idle(&r.loop, seen3, &r); /* runs until the loop has nothing left */
    assert_false(workqueue_holding(&r.q));
    assert_int_equal(g_holds.ended, 1);
    /* max_in_flight 1 and nobody calls workqueue_done: a is in flight, b waits.
     * New changes while b waits join the flush instead of holding it. */
    assert_int_equal(r.n, 1);
    workqueue_add_change(&r.q, "c");
    workqueue_add_change(&r.q, "d");
    assert_false(workqueue_holding(&r.q));
    workqueue_done(&r.q, "a", false);
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 2);
    workqueue_done(&r.q, "b", false);
    uv_run(&r.loop, UV_RUN_NOWAIT);
    workqueue_done(&r.q, "c", false);
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 4);
    assert_string_equal(r.seen[3], "d");
    /* Drained: the next burst may hold again, past a full bucket. */
    workqueue_done(&r.q, "d", false);
    uv_run(&r.loop, UV_RUN_NOWAIT);
    workqueue_add_change(&r.q, "e");
    assert_false(workqueue_holding(&r.q));
    workqueue_add_change(&r.q, "f");
    assert_true(workqueue_holding(&r.q));
    teardown_rec(&r);
}

/* One key rewritten in a loop is not a burst: each pass sees the latest
 * state and one pass per key is in flight, so it never holds. */
static void test_settle_one_hot_key_never_holds(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 4);
    r.auto_done = true;
    memset(&g_holds, 0, sizeof g_holds);
    workqueue_settle(&r.q, 2, 3600 * 1000, 20, 60 * 1000, on_settle);
    for (int i = 0; i < 20; i++) {
        workqueue_add_change(&r.q, "hot");
        assert_false(workqueue_holding(&r.q));
        uv_run(&r.loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(r.n, 20); /* every change was its own pass, at once */
    assert_int_equal(g_holds.began, 0);
    /* Other keys still draw: one more fits the bucket, the next trips. */
    workqueue_add_change(&r.q, "x");
    assert_false(workqueue_holding(&r.q));
    workqueue_add_change(&r.q, "y");
    assert_true(workqueue_holding(&r.q));
    teardown_rec(&r);
}

/* max_hold 0 (reconcile.burst_hold: 0) turns settling off. */
static void test_settle_off(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 8);
    r.auto_done = true;
    workqueue_settle(&r.q, 1, 3600 * 1000, 20, 0, NULL);
    char key[8];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "k%d", i);
        workqueue_add_change(&r.q, key);
    }
    assert_false(workqueue_holding(&r.q));
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 5);
    teardown_rec(&r);
}

static bool seen2(void *arg) {
    return ((struct rec *)arg)->n >= 2;
}

/* A pass deferred by a rate limit: edits meanwhile (and one that came while
 * it was in flight) wait with it and make one more pass, not one each; and
 * a deferral is no failure. */
static void test_defer_coalesces_input(void **state) {
    (void)state;
    struct rec r;
    setup_rec(&r, 4);
    workqueue_add_change(&r.q, "hot");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 1);
    workqueue_add_change(&r.q, "hot"); /* in flight: dirty */
    workqueue_done_defer(&r.q, "hot", 3600 * 1000);
    for (int i = 0; i < 50; i++)
        workqueue_add_change(&r.q, "hot");
    workqueue_add(&r.q, "hot");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 1); /* nothing ran past the deferral */
    assert_int_equal(workqueue_pending(&r.q), 0);
    assert_int_equal(workqueue_delayed(&r.q), 1);
    assert_int_equal(workqueue_failures(&r.q, "hot"), 0);
    /* Another key is not held up. */
    workqueue_add_change(&r.q, "cold");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.seen[1], "cold");
    workqueue_done(&r.q, "cold", false);
    teardown_rec(&r);

    /* A short deferral: the waiting input runs once when it ends. */
    setup_rec(&r, 4);
    workqueue_add_change(&r.q, "hot");
    uv_run(&r.loop, UV_RUN_NOWAIT);
    workqueue_done_defer(&r.q, "hot", 20);
    for (int i = 0; i < 50; i++)
        workqueue_add_change(&r.q, "hot");
    r.auto_done = true;
    assert_true(support_run_until(&r.loop, seen2, &r, 5000));
    support_run_until_idle(&r.loop, drained, &r);
    assert_int_equal(r.n, 2);
    teardown_rec(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adds_of_one_key_coalesce),
        cmocka_unit_test(test_dirty_requeue),
        cmocka_unit_test(test_max_in_flight),
        cmocka_unit_test(test_retry_backoff),
        cmocka_unit_test(test_add_after_then_add_now),
        cmocka_unit_test(test_pause_holds_keys),
        cmocka_unit_test(test_retry_after_holds_against_new_input),
        cmocka_unit_test(test_changes_before_rechecks),
        cmocka_unit_test(test_settle_holds_until_quiet),
        cmocka_unit_test(test_settle_max_hold),
        cmocka_unit_test(test_settle_one_hot_key_never_holds),
        cmocka_unit_test(test_settle_off),
        cmocka_unit_test(test_defer_coalesces_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
