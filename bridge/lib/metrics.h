/* metrics.h - a small Prometheus registry for canary-bridge's own metrics.
 *
 * Not a general client library: counters, gauges and histograms with a fixed
 * list of label names, series created on first use, and one renderer for the
 * text exposition format 0.0.4 served on /metrics. It exists because the
 * daemon needs a dozen metrics and no dependency is worth that.
 *
 * Label values are passed as a NULL-terminated array, written with
 * METRIC_LABELS so the compiler checks every value is a string and the
 * registry can check the count against the family's label names:
 *
 *     metric_add(bm.reconcile_total, METRIC_LABELS("ok"), 1);
 *     metric_set(bm.source_connected, NULL, 1);          (no labels: NULL)
 *
 * A wrong count, a NULL value, or an operation the type does not have
 * (metric_set on a counter, metric_observe on a gauge) returns -1 and changes
 * nothing, so a programming error costs one missed sample, not a crash.
 *
 * Cost on the hot path: one hash-map lookup on a key joined from the label
 * values (built on the stack for short values), no allocation once the series
 * exists. Label-less families keep their single series outside the map.
 *
 * Not thread-safe: everything runs on the loop thread, like the rest of the
 * daemon. */
#ifndef CB_METRICS_H
#define CB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/procstat.h"

/* The Content-Type of metrics_render's output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Label values of one series, e.g. METRIC_LABELS("get", "200"). */
#define METRIC_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metrics;
struct metric_family;

struct metrics *metrics_new(void);
/* Frees the registry, its families and their series. NULL is fine. */
void metrics_free(struct metrics *m);

/* Register a family. name must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* without a leading "__" (and not "le" for
 * histograms); help is any text. Strings are copied. Returns NULL when a name
 * is invalid or already registered, or out of memory. A family without labels
 * has its one series from the start, so it renders as 0 before first use, as
 * Prometheus expects. */
struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                      size_t nlabels, const char *const labels[]);
struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                    size_t nlabels, const char *const labels[]);
/* bounds: strictly increasing, finite upper bounds; +Inf is implicit. */
struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                        size_t nlabels, const char *const labels[], size_t nbounds,
                                        const double bounds[]);

/* values: METRIC_LABELS(...) with exactly the family's label count, or NULL
 * for a family without labels. All return 0, or -1 (see the top comment, or
 * out of memory creating the series).
 * metric_add: counters (v >= 0) and gauges. metric_set: gauges.
 * metric_observe: histograms. */
int metric_add(struct metric_family *f, const char *const *values, double v);
int metric_set(struct metric_family *f, const char *const *values, double v);
int metric_observe(struct metric_family *f, const char *const *values, double v);
/* Drop one series (a per-route gauge once the route is gone). Removing a
 * series that does not exist is not an error. For a family without labels the
 * series is reset to zero instead, since it always exists. */
int metric_remove(struct metric_family *f, const char *const *values);
/* Drop every series whose first k label values equal values[0..k-1] (k is the
 * length of values, at most the family's label count; NULL drops them all):
 * e.g. all route_weight{namespace,route,*} of a deleted route. Returns how
 * many were dropped, or -1. */
int metric_remove_prefix(struct metric_family *f, const char *const *values);

/* Read one series back (for tests and for the app's own decisions): counter
 * and gauge value; for a histogram, its observation count. -1 when the series
 * does not exist or the labels are wrong. */
int metric_value(const struct metric_family *f, const char *const *values, double *out);
/* Number of series in the family. */
size_t metric_series_count(const struct metric_family *f);

/* Append the whole registry in text exposition format 0.0.4: families in
 * registration order, series sorted by label values. 0, or -1 when out of
 * memory (out then holds a partial page; reset it). */
int metrics_render(const struct metrics *m, buf_t *out);

/* ---- canary-bridge's standard set (docs/usage.md section 8 shows them in use) ---- */

struct bridge_metrics {
    struct metric_family *reconcile_total;             /* counter {result} */
    struct metric_family *conflicts_total;             /* counter: 409s retried */
    struct metric_family *kube_requests_total;         /* counter {verb,code} */
    struct metric_family *source_events_total;         /* counter: watch events applied */
    struct metric_family *propagation_seconds;         /* histogram {stage}: applied, live */
    struct metric_family *routes;                      /* gauge {state} */
    struct metric_family *route_weight;                /* gauge {namespace,route,service} */
    struct metric_family *source_connected;            /* gauge 0/1 */
    struct metric_family *source_acl_denied;           /* gauge 0/1: the token may not read */
    struct metric_family *last_sync_timestamp_seconds; /* gauge, Unix time */
    struct metric_family *leader;                      /* gauge 0/1 */
    struct metric_family *build_info;                  /* gauge {version} = 1 */
    struct metric_family *burst_holds_total;           /* counter: bursts settled */
    struct metric_family *burst_holding;               /* gauge 0/1 */
    struct metric_family *deletion_held;               /* gauge 0/1: the deletion guard holds */
    struct metric_family *deletion_held_routes;        /* gauge: routes whose deletion waits */
    struct metric_family *undone_writes_total;         /* counter: writes another writer undid */
    struct metric_family
        *backend_unready;               /* gauge {namespace,route,service}: weighted, can't serve */
    struct metric_family *route_frozen; /* gauge {namespace,route}: 1 while frozen */
    struct metric_family *route_aborted;        /* gauge {namespace,route}: 1 while aborted */
    struct metric_family *refusals_total;       /* counter {reason}: changes refused */
    struct metric_family *writes_delayed_total; /* counter: writes paced per object */
    struct metric_family *route_state; /* gauge {namespace,route,state} = 1, one per route */
    struct procstat_metrics process;   /* process_*, set at scrape time */

    struct metric_family *plan_step;        /* gauge {namespace,route}: 1-based step of its plan */
    struct metric_family *plan_steps_total; /* counter: plan steps applied */
    /* counter {instance}: changes a Traefik instance did not serve in time */
    struct metric_family *not_live_total;
};

/* Register the standard families in m and set build_info{version}=1. 0, or -1
 * (out of memory, or names already taken in m). */
int bridge_metrics_register(struct metrics *m, const char *version, struct bridge_metrics *out);

#endif
