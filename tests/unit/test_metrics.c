/* test_metrics.c - the Prometheus registry: exact exposition text (HELP/TYPE,
 * label escaping, cumulative histogram buckets with +Inf, number format),
 * misuse rejected without side effects, series removal, the standard set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/metrics.h"

static char *render(const struct metrics *m) {
    buf_t b = BUF_INIT;
    assert_int_equal(metrics_render(m, &b), 0);
    char *s = buf_steal(&b);
    assert_non_null(s);
    return s;
}

static void test_counter_and_gauge_text(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    static const char *const vc[] = {"verb", "code"};
    struct metric_family *req = metrics_counter(m, "x_requests_total", "Requests.", 2, vc);
    struct metric_family *up = metrics_gauge(m, "x_up", "Up or not.", 0, NULL);
    assert_non_null(req);
    assert_non_null(up);

    /* A label-less family shows 0 before first use; a labelled one shows
     * nothing but its HELP and TYPE. */
    char *s = render(m);
    assert_string_equal(s, "# HELP x_requests_total Requests.\n"
                           "# TYPE x_requests_total counter\n"
                           "# HELP x_up Up or not.\n"
                           "# TYPE x_up gauge\n"
                           "x_up 0\n");
    free(s);

    assert_int_equal(metric_add(req, METRIC_LABELS("put", "409"), 1), 0);
    assert_int_equal(metric_add(req, METRIC_LABELS("get", "200"), 2), 0);
    assert_int_equal(metric_add(req, METRIC_LABELS("put", "409"), 1), 0);
    assert_int_equal(metric_add(req, METRIC_LABELS("get", "200"), 98), 0);
    assert_int_equal(metric_set(up, NULL, 1), 0);
    assert_int_equal(metric_add(up, NULL, -0.25), 0);
    s = render(m);
    /* Series sorted by label values; integers without an exponent. */
    assert_string_equal(s, "# HELP x_requests_total Requests.\n"
                           "# TYPE x_requests_total counter\n"
                           "x_requests_total{verb=\"get\",code=\"200\"} 100\n"
                           "x_requests_total{verb=\"put\",code=\"409\"} 2\n"
                           "# HELP x_up Up or not.\n"
                           "# TYPE x_up gauge\n"
                           "x_up 0.75\n");
    free(s);
    double v;
    assert_int_equal(metric_value(req, METRIC_LABELS("put", "409"), &v), 0);
    assert_true(v == 2);
    assert_int_equal(metric_value(req, METRIC_LABELS("put", "500"), &v), -1);
    assert_int_equal(metric_series_count(req), 2);
    metrics_free(m);
}

static void test_help_and_label_escaping(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    static const char *const l[] = {"path"};
    struct metric_family *g =
        metrics_gauge(m, "x_g", "Help with \\ backslash\nand newline, \"quotes\" kept.", 1, l);
    assert_non_null(g);
    assert_int_equal(metric_set(g, METRIC_LABELS("a\\b\"c\nd"), 1), 0);
    char *s = render(m);
    assert_string_equal(s, "# HELP x_g Help with \\\\ backslash\\nand newline, \"quotes\" kept.\n"
                           "# TYPE x_g gauge\n"
                           "x_g{path=\"a\\\\b\\\"c\\nd\"} 1\n");
    free(s);
    metrics_free(m);
}

static void test_histogram_buckets_inclusive(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    static const char *const l[] = {"op"};
    static const double bounds[] = {0.005, 0.1, 1};
    struct metric_family *h = metrics_histogram(m, "x_seconds", "Latency.", 1, l, 3, bounds);
    assert_non_null(h);
    /* Bounds are inclusive ("le"); beyond the last goes to +Inf only. */
    assert_int_equal(metric_observe(h, METRIC_LABELS("w"), 0.005), 0);
    assert_int_equal(metric_observe(h, METRIC_LABELS("w"), 0.05), 0);
    assert_int_equal(metric_observe(h, METRIC_LABELS("w"), 0.05), 0);
    assert_int_equal(metric_observe(h, METRIC_LABELS("w"), 3), 0);
    assert_int_equal(metric_observe(h, METRIC_LABELS("w"), NAN), -1);
    char *s = render(m);
    assert_string_equal(s, "# HELP x_seconds Latency.\n"
                           "# TYPE x_seconds histogram\n"
                           "x_seconds_bucket{op=\"w\",le=\"0.005\"} 1\n"
                           "x_seconds_bucket{op=\"w\",le=\"0.1\"} 3\n"
                           "x_seconds_bucket{op=\"w\",le=\"1\"} 3\n"
                           "x_seconds_bucket{op=\"w\",le=\"+Inf\"} 4\n"
                           "x_seconds_sum{op=\"w\"} 3.105\n"
                           "x_seconds_count{op=\"w\"} 4\n");
    free(s);
    double v;
    assert_int_equal(metric_value(h, METRIC_LABELS("w"), &v), 0);
    assert_true(v == 4);
    metrics_free(m);
}

static void test_histogram_no_labels(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    static const double bounds[] = {1};
    struct metric_family *h = metrics_histogram(m, "x_h", "H.", 0, NULL, 1, bounds);
    assert_non_null(h);
    char *s = render(m);
    assert_string_equal(s, "# HELP x_h H.\n# TYPE x_h histogram\n"
                           "x_h_bucket{le=\"1\"} 0\nx_h_bucket{le=\"+Inf\"} 0\n"
                           "x_h_sum 0\nx_h_count 0\n");
    free(s);
    assert_int_equal(metric_observe(h, NULL, 0.5), 0);
    assert_int_equal(metric_observe(h, NULL, 1e-7), 0);
    s = render(m);
    assert_string_equal(s, "# HELP x_h H.\n# TYPE x_h histogram\n"
                           "x_h_bucket{le=\"1\"} 2\nx_h_bucket{le=\"+Inf\"} 2\n"
                           "x_h_sum 0.5000001\nx_h_count 2\n");
    free(s);
    metrics_free(m);
}

static void test_misuse_rejected(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    static const char *const one[] = {"result"};
    static const char *const dup[] = {"a", "a"};
    static const char *const le[] = {"le"};
    static const char *const reserved[] = {"__name"};
    static const double bad_bounds[] = {1, 1};
    struct metric_family *c = metrics_counter(m, "x_total", "C.", 1, one);
    struct metric_family *g = metrics_gauge(m, "x_gauge", "G.", 0, NULL);
    assert_non_null(c);
    assert_non_null(g);

    /* Invalid registrations. */
    assert_null(metrics_counter(m, "x_total", "again", 0, NULL));
    assert_null(metrics_counter(m, "9bad", "C.", 0, NULL));
    assert_null(metrics_counter(m, "bad-name", "C.", 0, NULL));
    assert_null(metrics_gauge(m, "x_dup", "G.", 2, dup));
    assert_null(metrics_gauge(m, "x_res", "G.", 1, reserved));
    assert_null(metrics_histogram(m, "x_le", "H.", 1, le, 0, NULL));
    assert_null(metrics_histogram(m, "x_bb", "H.", 0, NULL, 2, bad_bounds));

    /* Wrong label counts, wrong operations, decreasing counters. */
    assert_int_equal(metric_add(c, NULL, 1), -1);
    assert_int_equal(metric_add(c, METRIC_LABELS("ok", "extra"), 1), -1);
    assert_int_equal(metric_add(c, METRIC_LABELS("ok"), -1), -1);
    assert_int_equal(metric_set(c, METRIC_LABELS("ok"), 5), -1);
    assert_int_equal(metric_observe(c, METRIC_LABELS("ok"), 5), -1);
    assert_int_equal(metric_add(g, METRIC_LABELS("x"), 1), -1);
    assert_int_equal(metric_add(NULL, NULL, 1), -1);
    assert_int_equal(metric_series_count(c), 0); /* nothing was created */

    char *s = render(m);
    assert_string_equal(s, "# HELP x_total C.\n# TYPE x_total counter\n"
                           "# HELP x_gauge G.\n# TYPE x_gauge gauge\nx_gauge 0\n");
    free(s);
    metrics_free(m);
}

static void test_remove_series_and_prefixes(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    static const char *const l[] = {"namespace", "route", "service"};
    struct metric_family *w = metrics_gauge(m, "x_weight", "W.", 3, l);
    assert_non_null(w);
    assert_int_equal(metric_set(w, METRIC_LABELS("shop", "web", "v1"), 90), 0);
    assert_int_equal(metric_set(w, METRIC_LABELS("shop", "web", "v2"), 10), 0);
    assert_int_equal(metric_set(w, METRIC_LABELS("shop", "api", "v1"), 100), 0);
    assert_int_equal(metric_set(w, METRIC_LABELS("other", "web", "v1"), 5), 0);
    assert_int_equal(metric_series_count(w), 4);

    assert_int_equal(metric_remove(w, METRIC_LABELS("shop", "web", "v2")), 0);
    assert_int_equal(metric_remove(w, METRIC_LABELS("shop", "web", "v2")), 0); /* absent: fine */
    assert_int_equal(metric_remove(w, METRIC_LABELS("shop", "web")), -1);      /* wrong count */
    assert_int_equal(metric_series_count(w), 3);

    /* A deleted route takes all its services along, and only them. */
    assert_int_equal(metric_remove_prefix(w, METRIC_LABELS("shop", "web")), 1);
    assert_int_equal(metric_remove_prefix(w, METRIC_LABELS("shop")), 1);
    assert_int_equal(metric_remove_prefix(w, METRIC_LABELS("a", "b", "c", "d")), -1);
    char *s = render(m);
    assert_string_equal(s, "# HELP x_weight W.\n# TYPE x_weight gauge\n"
                           "x_weight{namespace=\"other\",route=\"web\",service=\"v1\"} 5\n");
    free(s);

    /* Values that would collide if the key were joined naively. */
    assert_int_equal(metric_set(w, METRIC_LABELS("a:b", "c", ""), 1), 0);
    assert_int_equal(metric_set(w, METRIC_LABELS("a", "b:c", ""), 2), 0);
    double v;
    assert_int_equal(metric_value(w, METRIC_LABELS("a:b", "c", ""), &v), 0);
    assert_true(v == 1);
    assert_int_equal(metric_value(w, METRIC_LABELS("a", "b:c", ""), &v), 0);
    assert_true(v == 2);
    metrics_free(m);
}

static void test_long_label_values(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    static const char *const l[] = {"k"};
    struct metric_family *g = metrics_gauge(m, "x_long", "L.", 1, l);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(metric_set(g, METRIC_LABELS(big), 3), 0); /* heap key path */
    assert_int_equal(metric_add(g, METRIC_LABELS(big), 4), 0);
    double v;
    assert_int_equal(metric_value(g, METRIC_LABELS(big), &v), 0);
    assert_true(v == 7);
    assert_int_equal(metric_remove(g, METRIC_LABELS(big)), 0);
    assert_int_equal(metric_series_count(g), 0);
    metrics_free(m);
}

static void test_number_format(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    static const char *const l[] = {"k"};
    struct metric_family *g = metrics_gauge(m, "x_n", "N.", 1, l);
    assert_int_equal(metric_set(g, METRIC_LABELS("a"), 0.1), 0);
    assert_int_equal(metric_set(g, METRIC_LABELS("b"), 1732800000.25), 0);
    assert_int_equal(metric_set(g, METRIC_LABELS("c"), -INFINITY), 0);
    assert_int_equal(metric_set(g, METRIC_LABELS("d"), NAN), 0);
    assert_int_equal(metric_set(g, METRIC_LABELS("e"), -0.0), 0);
    assert_int_equal(metric_set(g, METRIC_LABELS("f"), 1e-9), 0);
    char *s = render(m);
    assert_string_equal(s, "# HELP x_n N.\n# TYPE x_n gauge\n"
                           "x_n{k=\"a\"} 0.1\n"
                           "x_n{k=\"b\"} 1732800000.25\n"
                           "x_n{k=\"c\"} -Inf\n"
                           "x_n{k=\"d\"} NaN\n"
                           "x_n{k=\"e\"} 0\n"
                           "x_n{k=\"f\"} 1e-09\n");
    free(s);
    metrics_free(m);
}

static void test_standard_set(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    struct bridge_metrics bm;
    assert_int_equal(bridge_metrics_register(m, "1.2.3", &bm), 0);
    assert_int_equal(metric_add(bm.reconcile_total, METRIC_LABELS("ok"), 1), 0);
    assert_int_equal(metric_add(bm.conflicts_total, NULL, 1), 0);
    assert_int_equal(metric_add(bm.kube_requests_total, METRIC_LABELS("PUT", "200"), 1), 0);
    assert_int_equal(metric_add(bm.source_events_total, NULL, 3), 0);
    assert_int_equal(metric_observe(bm.propagation_seconds, METRIC_LABELS("applied"), 0.004), 0);
    assert_int_equal(metric_add(bm.not_live_total, METRIC_LABELS("http://t1:8080"), 1), 0);
    assert_int_equal(metric_set(bm.routes, METRIC_LABELS("ok"), 2), 0);
    assert_int_equal(metric_set(bm.route_weight, METRIC_LABELS("shop", "web", "shop-v1"), 90), 0);
    assert_int_equal(metric_set(bm.source_connected, NULL, 1), 0);
    assert_int_equal(metric_set(bm.last_sync_timestamp_seconds, NULL, 1700000000), 0);
    assert_int_equal(metric_set(bm.leader, NULL, 1), 0);
    char *s = render(m);
    static const char *const want[] = {
        "# TYPE canary_bridge_reconcile_total counter\n",
        "canary_bridge_reconcile_total{result=\"ok\"} 1\n",
        "# TYPE canary_bridge_conflicts_total counter\ncanary_bridge_conflicts_total 1\n",
        "canary_bridge_kube_requests_total{verb=\"PUT\",code=\"200\"} 1\n",
        "canary_bridge_source_events_total 3\n",
        "# TYPE canary_bridge_propagation_seconds histogram\n",
        "canary_bridge_propagation_seconds_bucket{stage=\"applied\",le=\"0.0005\"} 0\n",
        "canary_bridge_propagation_seconds_bucket{stage=\"applied\",le=\"0.0025\"} 0\n",
        "canary_bridge_propagation_seconds_bucket{stage=\"applied\",le=\"0.005\"} 1\n",
        "canary_bridge_propagation_seconds_bucket{stage=\"applied\",le=\"10\"} 1\n",
        "canary_bridge_propagation_seconds_bucket{stage=\"applied\",le=\"+Inf\"} 1\n",
        "canary_bridge_propagation_seconds_count{stage=\"applied\"} 1\n",
        "canary_bridge_not_live_total{instance=\"http://t1:8080\"} 1\n",
        "# TYPE canary_bridge_routes gauge\ncanary_bridge_routes{state=\"ok\"} 2\n",
        "canary_bridge_route_weight{namespace=\"shop\",route=\"web\",service=\"shop-v1\"} 90\n",
        "canary_bridge_source_connected 1\n",
        "canary_bridge_last_sync_timestamp_seconds 1700000000\n",
        "canary_bridge_leader 1\n",
        "canary_bridge_build_info{version=\"1.2.3\"} 1\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(s, want[i]))
            fail_msg("missing from /metrics: %s", want[i]);
    free(s);
    /* A second registration in the same registry collides and says so. */
    struct bridge_metrics again;
    assert_int_equal(bridge_metrics_register(m, "1.2.3", &again), -1);
    metrics_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge_text),
        cmocka_unit_test(test_help_and_label_escaping),
        cmocka_unit_test(test_histogram_buckets_inclusive),
        cmocka_unit_test(test_histogram_no_labels),
        cmocka_unit_test(test_misuse_rejected),
        cmocka_unit_test(test_remove_series_and_prefixes),
        cmocka_unit_test(test_long_label_values),
        cmocka_unit_test(test_number_format),
        cmocka_unit_test(test_standard_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
