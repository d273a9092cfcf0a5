/* test_keycache.c - keys grouped into routes; change detection by content;
 * snapshots replace; stray keys warned once; status keys never input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/keycache.h"

struct seen {
    char ids[32][128];
    size_t n;
};

static void changed(void *user, const char *id) {
    struct seen *s = user;
    if (s->n < 32)
        snprintf(s->ids[s->n++], sizeof s->ids[0], "%s", id);
}

static struct source_kv kv(const char *key, const char *value, uint64_t rev) {
    struct source_kv k = {key, value, value ? strlen(value) : 0, rev};
    return k;
}

static FILE *quiet_log(struct logger *lg) {
    logger_init(lg, LOG_LVL_DEBUG);
    lg->journal = false;
    lg->out = tmpfile();
    assert_non_null(lg->out);
    return lg->out;
}

static size_t count_lines(FILE *f, const char *needle) {
    char line[1024];
    size_t n = 0;
    rewind(f);
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    return n;
}

static void test_put_groups_keys_by_route_and_reports_changed_bytes_only(void **state) {
    (void)state;
    struct logger lg;
    FILE *f = quiet_log(&lg);
    struct keycache kc;
    assert_int_equal(keycache_init(&kc, "canary/", &lg), 0);
    struct seen s = {0};
    struct source_kv a = kv("canary/default/shop/weights", "a=1", 5);
    keycache_put(&kc, &a, changed, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "default/shop");
    /* The same bytes again (etcdctl put of an unchanged value): no change,
     * and the revision the objects were built from stays. */
    a.revision = 6;
    keycache_put(&kc, &a, changed, &s);
    assert_int_equal(s.n, 1);
    struct model_input in0;
    char ns0[64], name0[254];
    assert_true(keycache_input(&kc, "default/shop", &in0, ns0, name0));
    assert_int_equal(in0.revision, 5);
    struct source_kv r = kv("canary/default/shop/route", "match: x", 7);
    keycache_put(&kc, &r, changed, &s);
    assert_int_equal(s.n, 2);
    struct model_input in;
    char ns[64], name[254];
    assert_true(keycache_input(&kc, "default/shop", &in, ns, name));
    assert_string_equal(in.ns, "default");
    assert_string_equal(in.name, "shop");
    assert_string_equal(in.weights, "a=1");
    assert_string_equal(in.route, "match: x");
    assert_null(in.headers);
    assert_int_equal(in.revision, 7);
    /* Status keys are the bridge's output, never input. */
    struct source_kv st = kv("canary/default/shop/status", "{}", 8);
    keycache_put(&kc, &st, changed, &s);
    assert_int_equal(s.n, 2);
    keycache_delete(&kc, "canary/default/shop/route", changed, &s);
    assert_int_equal(s.n, 3);
    assert_true(keycache_input(&kc, "default/shop", &in, ns, name));
    assert_null(in.route);
    keycache_delete(&kc, "canary/default/shop/weights", changed, &s);
    assert_false(keycache_input(&kc, "default/shop", &in, ns, name));
    assert_int_equal(count_lines(f, "warn"), 0);
    keycache_free(&kc);
    fclose(f);
}

static void test_stray_keys_are_ignored_with_one_warning_each(void **state) {
    (void)state;
    struct logger lg;
    FILE *f = quiet_log(&lg);
    struct keycache kc;
    assert_int_equal(keycache_init(&kc, "canary/", &lg), 0);
    struct seen s = {0};
    struct source_kv bad = kv("canary/Bad_NS/shop/weights", "a=1", 2);
    for (int i = 0; i < 5; i++)
        keycache_put(&kc, &bad, changed, &s);
    struct source_kv other = kv("canary/default/shop/notes", "hi", 3);
    keycache_put(&kc, &other, changed, &s);
    keycache_put(&kc, &other, changed, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(count_lines(f, "canary/Bad_NS/shop/weights"), 1);
    assert_int_equal(count_lines(f, "canary/default/shop/notes"), 1);
    keycache_free(&kc);
    fclose(f);
}

static void test_snapshot_replaces_all_and_reports_changed_gone_and_new_routes(void **state) {
    (void)state;
    struct logger lg;
    FILE *f = quiet_log(&lg);
    struct keycache kc;
    assert_int_equal(keycache_init(&kc, "canary/", &lg), 0);
    struct seen s = {0};
    struct source_kv first[] = {kv("canary/a/one/weights", "x=1", 1),
                                kv("canary/a/two/weights", "x=1", 2),
                                kv("canary/a/three/weights", "x=1", 3)};
    keycache_snapshot(&kc, first, 3, 3, changed, &s);
    assert_int_equal(s.n, 3);
    s.n = 0;
    /* one unchanged, two changed, three gone, four new */
    struct source_kv second[] = {kv("canary/a/one/weights", "x=1", 1),
                                 kv("canary/a/two/weights", "x=2", 9),
                                 kv("canary/a/four/weights", "x=1", 10)};
    keycache_snapshot(&kc, second, 3, 10, changed, &s);
    assert_int_equal(s.n, 3);
    bool two = false, three = false, four = false;
    for (size_t i = 0; i < s.n; i++) {
        two |= strcmp(s.ids[i], "a/two") == 0;
        three |= strcmp(s.ids[i], "a/three") == 0;
        four |= strcmp(s.ids[i], "a/four") == 0;
    }
    assert_true(two && three && four);
    struct model_input in;
    char ns[64], name[254];
    assert_false(keycache_input(&kc, "a/three", &in, ns, name));
    assert_int_equal(kc.revision, 10);
    /* A re-list gives unchanged keys their current mod_revision; the route
     * still names the revision its objects were built from. */
    assert_true(keycache_input(&kc, "a/one", &in, ns, name));
    assert_int_equal(in.revision, 1);
    s.n = 0;
    struct source_kv third[] = {kv("canary/a/one/weights", "x=1", 42)};
    keycache_snapshot(&kc, third, 1, 42, changed, &s);
    assert_true(keycache_input(&kc, "a/one", &in, ns, name));
    assert_int_equal(in.revision, 1);
    keycache_free(&kc);
    fclose(f);
}

/* P_confirm-delete (the deletion guard's confirmation) is not a stray key:
 * its value is kept, and a change reports KEYCACHE_CONFIRM_KEY, from events and
 * snapshots alike; the route ids and the route key's revision are unaffected. */
static void test_confirm_key_is_kept_and_reported_but_is_no_route(void **state) {
    (void)state;
    struct logger lg;
    FILE *f = quiet_log(&lg);
    struct keycache kc;
    assert_int_equal(keycache_init(&kc, "canary/", &lg), 0);
    struct seen s = {0};
    struct source_kv c = kv("canary/_confirm-delete", "3f09a1c2", 9);
    assert_int_equal(keycache_put(&kc, &c, changed, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], KEYCACHE_CONFIRM_KEY);
    assert_string_equal(kc.confirm.data, "3f09a1c2");
    assert_int_equal(kc.routes.count, 0);
    keycache_put(&kc, &c, changed, &s); /* same bytes: no change */
    assert_int_equal(s.n, 1);
    assert_int_equal(count_lines(f, "ignoring key"), 0);
    assert_int_equal(keycache_delete(&kc, "canary/_confirm-delete", changed, &s), 0);
    assert_int_equal(s.n, 2);
    assert_null(kc.confirm.data);
    /* A snapshot that brings it, with a route: both reported, the confirmation
     * last (the guard judges it against the new keys). */
    struct source_kv all[] = {kv("canary/default/shop/route", "match: x", 11),
                              kv("canary/_confirm-delete", "abc", 12)};
    assert_int_equal(keycache_snapshot(&kc, all, 2, 12, changed, &s), 0);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.ids[2], "default/shop");
    assert_string_equal(s.ids[3], KEYCACHE_CONFIRM_KEY);
    assert_string_equal(kc.confirm.data, "abc");
    struct model_input in;
    char ns[64], name[254];
    assert_true(keycache_input(&kc, "default/shop", &in, ns, name));
    assert_int_equal(in.route_rev, 11);
    /* A snapshot without it takes it back. */
    assert_int_equal(keycache_snapshot(&kc, all, 1, 13, changed, &s), 0);
    assert_int_equal(s.n, 5);
    assert_string_equal(s.ids[4], KEYCACHE_CONFIRM_KEY);
    assert_null(kc.confirm.data);
    assert_int_equal(count_lines(f, "ignoring key"), 0);
    keycache_free(&kc);
    fclose(f);
}

static void leaves_changed(void *user, const char *id) {
    changed(user, id);
}

/* Status keys are kept (not input); a mistyped leaf is remembered for its
 * route with a did-you-mean, reported when it comes or goes, and a snapshot
 * reports only the routes whose mistyped leaves changed. */
static void test_status_keys_are_no_input_and_mistyped_leaves_are_reported(void **state) {
    (void)state;
    struct logger lg;
    FILE *f = quiet_log(&lg);
    struct keycache kc;
    assert_int_equal(keycache_init(&kc, "canary/", &lg), 0);
    struct seen s = {0}, typos = {0};
    kc.on_leaves = leaves_changed;
    kc.leaves_user = &typos;
    struct source_kv st = kv("canary/default/shop/status", "{\"state\":\"applied\"}", 3);
    keycache_put(&kc, &st, changed, &s);
    assert_int_equal(s.n, 0); /* never input */
    assert_string_equal(keycache_status(&kc, "default/shop"), "{\"state\":\"applied\"}");
    assert_null(keycache_status(&kc, "default/cart"));

    struct source_kv typo = kv("canary/default/shop/weight", "a=1", 4);
    keycache_put(&kc, &typo, changed, &s);
    keycache_put(&kc, &typo, changed, &s); /* again: no news */
    assert_int_equal(s.n, 0);
    assert_int_equal(typos.n, 1);
    assert_string_equal(typos.ids[0], "default/shop");
    char msg[512];
    assert_int_equal(keycache_leaf_errors(&kc, "default/shop", msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "key canary/default/shop/weight: unknown leaf 'weight' "
                                "(did you mean 'weights'?"));
    assert_int_equal(count_lines(f, "did you mean 'weights'"), 1);
    struct source_kv far = kv("canary/default/shop/notes", "x", 5);
    keycache_put(&kc, &far, changed, &s);
    assert_int_equal(keycache_leaf_errors(&kc, "default/shop", msg, sizeof msg), 2);
    assert_non_null(strstr(msg, "unknown leaf 'notes' (expected route"));
    assert_int_equal(keycache_leaf_errors(&kc, "default/cart", msg, sizeof msg), 0);
    assert_string_equal(msg, "");
    /* Bytes that are not UTF-8 (or control bytes) never reach the JSON status. */
    struct source_kv bad = kv("canary/default/odd/we\xffi\x01ghts", "x", 6);
    keycache_put(&kc, &bad, changed, &s);
    assert_int_equal(keycache_leaf_errors(&kc, "default/odd", msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "key canary/default/odd/we?i?ghts: unknown leaf 'we?i?ghts'"));
    typos.n = 0;
    assert_int_equal(keycache_delete(&kc, "canary/default/odd/we\xffi\x01ghts", changed, &s), 0);
    assert_int_equal(typos.n, 1);

    /* A snapshot with the same typos and a new one: only cart is news. */
    typos.n = 0;
    struct source_kv snap[] = {typo, far, kv("canary/default/cart/headres", "x", 6),
                               kv("canary/default/shop/status", "{}", 7)};
    assert_int_equal(keycache_snapshot(&kc, snap, 4, 7, changed, &s), 0);
    assert_int_equal(typos.n, 1);
    assert_string_equal(typos.ids[0], "default/cart");
    assert_string_equal(keycache_status(&kc, "default/shop"), "{}");
    /* Deleted: gone, and said. */
    typos.n = 0;
    assert_int_equal(keycache_delete(&kc, "canary/default/shop/weight", changed, &s), 0);
    assert_int_equal(typos.n, 1);
    assert_int_equal(keycache_leaf_errors(&kc, "default/shop", msg, sizeof msg), 1);
    assert_int_equal(keycache_delete(&kc, "canary/default/shop/status", changed, &s), 0);
    assert_null(keycache_status(&kc, "default/shop"));
    assert_int_equal(s.n, 0);
    keycache_free(&kc);
    fclose(f);
}

/* The brakes: `freeze` and `abort` are leaves of the route (a change is a
 * change of the route; abort reaches the model input), P_freeze is kept
 * like P_confirm-delete and freezes every route; reasons come trimmed,
 * printable and bounded, and an empty value still brakes. */
static void test_brakes_are_leaves_and_p_freeze_freezes_every_route(void **state) {
    (void)state;
    struct logger lg;
    FILE *f = quiet_log(&lg);
    struct keycache kc;
    assert_int_equal(keycache_init(&kc, "canary/", &lg), 0);
    struct seen s = {0};
    struct source_kv w = kv("canary/default/shop/weights", "a=1", 2);
    keycache_put(&kc, &w, changed, &s);
    struct keycache_brakes b;
    keycache_brakes(&kc, "default/shop", &b);
    assert_false(b.frozen || b.frozen_all || b.aborted);

    struct source_kv fr = kv("canary/default/shop/freeze", "  release train 42\n", 3);
    keycache_put(&kc, &fr, changed, &s);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[1], "default/shop");
    keycache_brakes(&kc, "default/shop", &b);
    assert_true(b.frozen && b.frozen_here);
    assert_false(b.frozen_all);
    assert_string_equal(b.freeze_reason, "release train 42");
    struct model_input in;
    char ns[64], name[254];
    assert_true(keycache_input(&kc, "default/shop", &in, ns, name));
    assert_false(in.abort);
    assert_int_equal(in.revision, 3); /* a key of the route like any other */

    struct source_kv ab = kv("canary/default/shop/abort", "", 4);
    keycache_put(&kc, &ab, changed, &s);
    assert_int_equal(s.n, 3);
    keycache_brakes(&kc, "default/shop", &b);
    assert_true(b.aborted);
    assert_string_equal(b.abort_reason, "no reason given");
    assert_true(keycache_input(&kc, "default/shop", &in, ns, name));
    assert_true(in.abort);

    /* P_freeze: no route, reported by its name; every route is frozen by it,
     * a route's own freeze key gives the reason. */
    struct source_kv all = kv("canary/_freeze", "ev\x01il\xff", 5);
    keycache_put(&kc, &all, changed, &s);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.ids[3], KEYCACHE_FREEZE_KEY);
    assert_int_equal(kc.routes.count, 1);
    keycache_brakes(&kc, "default/cart", &b);
    assert_true(b.frozen && b.frozen_all);
    assert_false(b.frozen_here);
    assert_string_equal(b.freeze_reason, "ev?il?");
    keycache_brakes(&kc, "default/shop", &b);
    assert_true(b.frozen_all && b.frozen_here);
    assert_string_equal(b.freeze_reason, "release train 42");
    assert_int_equal(count_lines(f, "ignoring key"), 0);

    /* Reasons are bounded, never inside a UTF-8 sequence. */
    char longer[KEYCACHE_REASON_MAX + 40];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    memcpy(longer + KEYCACHE_REASON_MAX - 1, "\xc3\xa9", 2); /* e-acute across the end */
    struct source_kv lg_fr = kv("canary/default/shop/freeze", longer, 6);
    keycache_put(&kc, &lg_fr, changed, &s);
    keycache_brakes(&kc, "default/shop", &b);
    assert_int_equal(strlen(b.freeze_reason), KEYCACHE_REASON_MAX - 1);

    /* A snapshot without P_freeze and the route's brakes takes them back. */
    s.n = 0;
    assert_int_equal(keycache_snapshot(&kc, &w, 1, 7, changed, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], "default/shop");
    assert_string_equal(s.ids[1], KEYCACHE_FREEZE_KEY);
    keycache_brakes(&kc, "default/shop", &b);
    assert_false(b.frozen || b.frozen_all || b.aborted);
    assert_null(kc.freeze.data);
    /* ... and one with it brings it back; deleting it reports it. */
    struct source_kv both[] = {w, kv("canary/_freeze", "", 8)};
    assert_int_equal(keycache_snapshot(&kc, both, 2, 8, changed, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[2], KEYCACHE_FREEZE_KEY);
    keycache_brakes(&kc, "default/shop", &b);
    assert_true(b.frozen);
    assert_string_equal(b.freeze_reason, "no reason given");
    assert_int_equal(keycache_snapshot(&kc, both, 2, 9, changed, &s), 0);
    assert_int_equal(s.n, 3); /* the same listing: no news */
    assert_int_equal(keycache_delete(&kc, "canary/_freeze", changed, &s), 0);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.ids[3], KEYCACHE_FREEZE_KEY);
    keycache_free(&kc);
    fclose(f);
}

/* Typos of the brakes get the did-you-mean of every leaf; the prefix's own
 * keys (not routes) get one in the warning. */
static void test_mistyped_brakes_are_named(void **state) {
    (void)state;
    struct logger lg;
    FILE *f = quiet_log(&lg);
    struct keycache kc;
    assert_int_equal(keycache_init(&kc, "canary/", &lg), 0);
    struct seen s = {0};
    struct source_kv typo = kv("canary/default/shop/freez", "x", 2);
    keycache_put(&kc, &typo, changed, &s);
    struct source_kv typo2 = kv("canary/default/shop/abrot", "x", 3);
    keycache_put(&kc, &typo2, changed, &s);
    assert_int_equal(s.n, 0);
    char msg[512];
    assert_int_equal(keycache_leaf_errors(&kc, "default/shop", msg, sizeof msg), 2);
    assert_non_null(strstr(msg, "unknown leaf 'freez' (did you mean 'freeze'? expected route, "
                                "weights, headers, status, freeze, abort, plan or pause)"));
    assert_non_null(strstr(msg, "unknown leaf 'abrot' (did you mean 'abort'?"));
    struct source_kv all = kv("canary/_frezee", "x", 4);
    keycache_put(&kc, &all, changed, &s);
    assert_int_equal(s.n, 0);
    assert_null(kc.freeze.data);
    assert_int_equal(count_lines(f, "ignoring key canary/_frezee: "), 1);
    assert_int_equal(count_lines(f, "(did you mean 'canary/_freeze'?)"), 1);
    struct source_kv conf = kv("canary/_confirm_delete", "x", 5);
    keycache_put(&kc, &conf, changed, &s);
    assert_int_equal(count_lines(f, "(did you mean 'canary/_confirm-delete'?)"), 1);
    keycache_free(&kc);
    fclose(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_confirm_key_is_kept_and_reported_but_is_no_route),
        cmocka_unit_test(test_put_groups_keys_by_route_and_reports_changed_bytes_only),
        cmocka_unit_test(test_stray_keys_are_ignored_with_one_warning_each),
        cmocka_unit_test(test_snapshot_replaces_all_and_reports_changed_gone_and_new_routes),
        cmocka_unit_test(test_status_keys_are_no_input_and_mistyped_leaves_are_reported),
        cmocka_unit_test(test_brakes_are_leaves_and_p_freeze_freezes_every_route),
        cmocka_unit_test(test_mistyped_brakes_are_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
