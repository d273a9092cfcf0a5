/* events.h - Kubernetes Events on the objects the bridge changes.
 *
 * `kubectl describe ingressroute shop` should say what the bridge did and
 * why ("WeightsChanged: weights shop-v1=90 shop-v2=10 from etcd revision
 * 1234"), and what went wrong. Events are core v1 Events, posted with
 * POST /api/v1/namespaces/<ns>/events, named like client-go names them
 * ("<object>.<hex wall-clock nanoseconds>"), carrying involvedObject, reason,
 * message (at most 1024 bytes, valid UTF-8), type, source, first/last
 * timestamps, count, reportingComponent and reportingInstance.
 *
 * Events are best effort and must never hurt the bridge, and the newest one
 * must always be visible:
 *  - Aggregation: similar events (same object, uid, type and reason; the
 *    message may differ) within the window (default 5 min) are one series,
 *    one Event, as client-go's correlator folds repeats: the existing Event
 *    gets the new count, lastTimestamp and the newest occurrence's message
 *    through a JSON merge patch (RBAC: patch on events). So after six quick
 *    weight changes the Event says the sixth, with count 6.
 *  - Rate limits: a token bucket per involved object (default burst 5, one
 *    token per 10 s) and a global one (burst 25, one per second); at most
 *    max_in_flight requests at once (default 32). Each request takes a
 *    token. An occurrence over a limit is not dropped: it waits in its
 *    series (later ones fold into it), sent when the series' request in
 *    flight completes or a timer finds tokens again. At most max_series
 *    series are tracked; an event that cannot be is dropped and counted.
 *  - Failures (403 without RBAC, 404 namespace gone, 422, 429, 5xx,
 *    transport errors) are never retried; each kind is logged at most once
 *    every 10 minutes, and counted. A patch of an Event that is gone (404)
 *    posts a new Event instead.
 *  - The kube client's dry-run mode applies: with --dry-run, events are
 *    validated by the server and not stored (aggregation patches then find
 *    nothing and start a new series).
 *
 * One thread, the loop's. events_close before kube_client_close/free;
 * events_close closes the recorder's timer (if it made one), which frees
 * itself on the next loop iteration. */
#ifndef CB_EVENTS_H
#define CB_EVENTS_H

#include <stdarg.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/lib/log.h"
#include "sinks/kube.h"

#define EVENTS_MESSAGE_MAX 1024 /* bytes, as the API's validation allows */

struct event_recorder;

struct events_limits {
    unsigned object_burst;        /* default 5 */
    uint64_t object_refill_ms;    /* one token per; default 10000 */
    unsigned global_burst;        /* default 25 */
    uint64_t global_refill_ms;    /* default 1000 */
    unsigned max_in_flight;       /* default 32 */
    uint64_t aggregate_window_ms; /* default 300000 */
    unsigned max_objects;         /* per-object buckets tracked; default 1024 */
    unsigned max_series;          /* events remembered for aggregation; default 256 */
};

struct events_stats {
    uint64_t posted;        /* Events created (POST answered) */
    uint64_t aggregated;    /* occurrences counted into an existing Event */
    uint64_t deferred;      /* sends that waited for a token or for room in flight */
    uint64_t dropped_other; /* invalid arguments, out of memory, too many objects */
    uint64_t failed;        /* occurrences the API refused or never answered */
    uint64_t in_flight;     /* requests now */
};

void events_limits_default(struct events_limits *lim);

/* component: "canary-bridge" (source.component, reportingComponent); host:
 * this host's name (source.host, reportingInstance; cut to 128 bytes).
 * Returns NULL on allocation failure. */
struct event_recorder *events_new(uv_loop_t *loop, struct kube_client *kc, struct logger *lg,
                                  const char *component, const char *host);
/* Replace the limits (buckets restart full). Returns 0, or -1 when a value is 0. */
int events_set_limits(struct event_recorder *rec, const struct events_limits *lim);

/* Record an event on the object ns/name (ns NULL or "" -> "default"), e.g.
 * api_version "traefik.io/v1alpha1", kind "IngressRoute"; uid may be NULL.
 * type "Normal" or "Warning" (anything else is posted as Normal). reason is a
 * short CamelCase word (cut to 128 bytes). Never blocks, never fails: an
 * event that cannot be posted is counted. */
void events_post(struct event_recorder *rec, const char *ns, const char *api_version,
                 const char *kind, const char *name, const char *uid, const char *type,
                 const char *reason, const char *fmt, ...) __attribute__((format(printf, 9, 10)));
void events_vpost(struct event_recorder *rec, const char *ns, const char *api_version,
                  const char *kind, const char *name, const char *uid, const char *type,
                  const char *reason, const char *fmt, va_list ap)
    __attribute__((format(printf, 9, 0)));

void events_get_stats(const struct event_recorder *rec, struct events_stats *out);
/* Events that never reached the API because they could not be tracked
 * (invalid arguments, out of memory, too many series). */
uint64_t events_dropped(const struct event_recorder *rec);

/* Cancel the requests in flight (no callback afterwards) and close the
 * flush timer, which frees itself; later posts are ignored. events_free may
 * follow at once: it waits for nothing on the loop. NULL is fine. */
void events_close(struct event_recorder *rec);
void events_free(struct event_recorder *rec);

/* Exposed for tests: copy s into out (outlen > 0), at most max bytes,
 * replacing invalid UTF-8 with '?' and never cutting a character in two. */
void events_utf8_copy(char *out, size_t outlen, const char *s, size_t max);

#endif
