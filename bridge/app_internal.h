/* app_internal.h - one generation of the daemon, and what the app's files
 * share about it.
 *
 * A generation is everything one configuration builds: its own libuv loop
 * and every handle, client and cache on it. It is allocated zeroed when the
 * daemon starts and on each reload, and freed once its loop has closed, so a
 * new field starts from zero in every generation without anyone resetting
 * it. Only struct app (bridge/app.h) outlives it.
 *
 * The files, by job:
 *   app.c           the generation's lifecycle and the wiring between source,
 *                   key cache, informers, reconciler and leader election;
 *   app_status.c    status feedback: <prefix><ns>/<name>/status written back
 *                   to the source;
 *   app_http.c      the HTTP endpoints (/healthz, /readyz, /metrics) and the
 *                   metrics the pipeline feeds, the per-route state;
 *   app_page.c      the status page (/);
 *   app_oneshot.c   what the one-shot commands (check, render, sync) print
 *                   and when they are done, and which routes render,
 *                   status and diff look at;
 *   app_access.c    check: may the bridge do what it will do (access reviews);
 *   app_status_cmd.c status: each route's desired and live state;
 *   app_diff.c      diff: the live objects against what a pass would write;
 *   app_discovery.c traefik.api_group: auto, asked of the API server;
 *   app_live.c      traefik.api: is what was written served by Traefik?
 * Not for use outside bridge/app*.c. */
#ifndef CB_APP_INTERNAL_H
#define CB_APP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/app.h"
#include "bridge/core/keycache.h"
#include "bridge/core/reconcile.h"
#include "bridge/core/reconcile_live.h"
#include "bridge/lib/http.h"
#include "bridge/lib/httpd.h"
#include "bridge/lib/map.h"
#include "bridge/lib/notify.h"
#include "sinks/backends.h"
#include "sinks/events.h"
#include "sinks/informer.h"
#include "sinks/kube.h"
#include "sinks/kubeconfig.h"
#include "sinks/lease.h"
#include "sources/source.h"

struct generation {
    struct app *app;
    uv_loop_t loop;

    /* What runs on the loop, in start order. A pointer is NULL and a have_
     * flag false until the part is made; teardown closes what was made. */
    struct notifier notify;
    struct http_client *http;
    struct keycache keys;
    bool have_keys;
    struct httpd *httpd; /* run, when server.listen is set */
    struct source *source;
    struct kube_client *kube;      /* all but render */
    struct event_recorder *events; /* run, not in dry-run */
    struct kube_call *discovery;   /* traefik.api_group: auto, in flight */
    struct informer inf[OBJ_NKINDS];
    bool have_informers;
    struct reconciler rec; /* run, sync */
    bool have_rec;
    struct backends backends; /* Services and EndpointSlices: with the reconciler */
    bool have_backends;
    struct live_checker live; /* traefik.api, run only */
    bool have_live;
    char live_origin_id[MODEL_NS_MAX + MODEL_NAME_MAX + 2]; /* see app_live_on_propagated */
    uint64_t live_origin_ns;
    struct lease_elector lease; /* leader_election.enabled */
    bool have_lease;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t resync_timer;
    uv_timer_t deadline; /* one-shot commands and shutdown */
    uv_timer_t drain_timer;
    uv_timer_t discovery_timer; /* retries of traefik.api_group: auto */
    bool have_timers;
    char api_group[64];      /* traefik.api_group, or what auto found */
    char field_manager[160]; /* ?fieldManager= of our writes */

    /* Progress. */
    bool source_connected;
    bool source_synced; /* a first complete snapshot arrived */
    unsigned informers_synced;
    unsigned discovery_failures;
    bool working;         /* workqueue released: source and informers are in */
    bool leader;          /* may write: elected, or no election configured */
    bool lease_releasing; /* shutdown: handing the Lease over */
    bool ready_notified;  /* READY=1 sent */
    bool stopping;        /* app_stop ran: draining */
    bool closed;          /* generation_close ran: handles closing */
    int exit_code;

    /* Metrics (app_http.c). */
    uint64_t conflicts_seen; /* rec.stats.conflicts already added to the counter */
    uint64_t undone_seen;    /* rec.stats.undone already added to the counter */
    uint64_t refusals_seen;  /* rec.stats.step_refusals already added to the counter */
    /* route id -> the services it has route_weight series for, packed as
     * "a\0b\0\0": a pass updates its own series without scanning all. */
    struct map weight_series;
    /* route id -> struct app_route_seen: when the route last changed, and
     * the state its canary_bridge_route_state series has. */
    struct map route_seen;

    /* Status feedback (app_status.c). */
    struct map status_writes;    /* route id -> struct status_write in flight */
    struct map weights_in_force; /* route id -> {"svc":weight,...} last applied (JSON) */
    bool status_write_failing;   /* logged once per streak of failed status writes */

    /* `check` (app_oneshot.c, app_access.c). */
    struct {
        bool source_ok;
        bool source_refused; /* the source refused the credentials: FAIL printed */
        bool api_done;
        bool api_ok;
        struct access_review *reviews; /* app_access.c */
        size_t n_reviews, sent, answered;
        bool traefik_done, traefik_ok; /* traefik.api's instances (app_live.c) */
        struct check_traefik *traefik; /* app_live.c */
    } check;
};

/* render, status and diff: read the source and the cluster, write nothing. */
static inline bool app_cmd_inspects(enum app_cmd cmd) {
    return cmd == CMD_RENDER || cmd == CMD_STATUS || cmd == CMD_DIFF;
}

/* A route model's weights, however it was written: services (owned) or
 * weights (patched). */
static inline size_t app_weight_count(const struct model_route *m) {
    return m ? (m->owned ? m->n_services : m->n_weights) : 0;
}

/* Service i and, in *w, its weight. */
static inline const char *app_weight_at(const struct model_route *m, size_t i, double *w) {
    *w = (double)(m->owned ? m->services[i].weight : m->weights[i].weight);
    return m->owned ? m->services[i].name : m->weights[i].service;
}

/* app.c */

/* Stop the generation: no new work, finish the writes in flight (bounded),
 * hand over the Lease, then close everything; the loop then returns. code is
 * the exit status. Safe to call again (the first code stays). */
void app_stop(struct generation *g, int code);
/* Tell systemd what the bridge is doing (STATUS=), when it changed. */
void app_set_status(struct generation *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Everything that needs the API group: informers and reconciler (run, sync)
 * or the CRD check (check). Returns 0 or -1 (logged). */
int app_start_objects(struct generation *g);
/* Routes by the state of their last pass; pending: known but not yet passed. */
void app_count_routes(struct generation *g, size_t *applied, size_t *failed, size_t *pending);

/* app_status.c */

/* Write route_id's status key (one write in flight per route; a change
 * meanwhile is written when it is done). Does nothing unless reconcile.status
 * is on and the command writes. */
void app_status_request(struct generation *g, const char *route_id);
/* Keycache: a key with an unknown leaf came or went under route_id. */
void app_status_on_leaves(void *user, const char *route_id);
/* Remember the weights applied to a route for its status (m NULL: gone). */
void app_status_remember_weights(struct generation *g, const char *route_id,
                                 const struct model_route *m);
/* After the loop: free the writes that were cancelled, and the weights. */
void app_status_free(struct generation *g);

/* app_http.c */

/* httpd handler: / (app_page.c), /healthz, /readyz, /metrics. */
void app_http_serve(void *user, const char *method, const char *path, struct httpd_response *res);
/* Reconciler and Kubernetes client hooks that feed the metrics. */
void app_http_on_pass(void *user, const char *route_id, const char *result);
void app_http_on_burst(void *user, bool holding, size_t changes, uint64_t held_ms);
void app_http_on_propagated(void *user, const char *route_id, double seconds);
void app_http_on_kube_answer(void *user, const char *verb, long status);
void app_http_on_backend(void *user, const char *route_id, const char *service, bool unready);
/* The route_weight series of one route, from m (NULL: the route is gone). */
void app_http_export_weights(struct generation *g, const char *route_id,
                             const struct model_route *m);
/* After the loop: free the per-route series lists. */
void app_http_free(struct generation *g);
/* The route's brakes as gauges (st NULL: the route is gone). */
/* The route's ramp plan as a gauge (p NULL: none); stepped counts a step. */
void app_http_export_plan(struct generation *g, const char *route_id, const struct plan_status *p,
                          bool stepped);
void app_http_export_brakes(struct generation *g, const char *route_id,
                            const struct route_status *st);
/* A route's state or message changed (st NULL: the route is gone). */
void app_http_route_changed(struct generation *g, const char *route_id,
                            const struct route_status *st);
/* What the bridge knows of one route, for /metrics and the status page. */
struct app_route_seen {
    double changed;    /* Unix time of the last change of state, message or revision; 0 none */
    const char *state; /* of its canary_bridge_route_state series (static), or NULL */
};
/* The route's state: "applied", "pending", "error", "fighting" (another
 * writer undoes its writes), "held" (its deletion waits for a person),
 * "frozen" or "aborted" (a brake holds it);
 * *st its status record, or NULL. */
const char *app_route_state(struct generation *g, const char *route_id,
                            const struct route_status **st);
/* Call cb once for every route the bridge knows: with keys, with a status
 * record, whose deletion is held, or a folder with only mistyped keys. */
void app_for_each_route(struct generation *g,
                        void (*cb)(struct generation *g, const char *route_id, void *user),
                        void *user);

/* app_page.c */

/* The status page, /: every route, its weights, state, last change, error. */
void app_page_serve(struct generation *g, struct httpd_response *res);

/* app_oneshot.c */

/* --timeout, or the default. */
uint64_t app_oneshot_timeout_ms(const struct generation *g);
/* check: the source answered with a complete snapshot. */
void app_oneshot_check_snapshot(struct generation *g, size_t n, uint64_t revision);
/* check: when the source refused the credentials, print FAIL and return
 * true (retrying cannot fix them); false otherwise. */
bool app_oneshot_check_refused(struct generation *g, const char *reason);
/* check: what the Kubernetes client will use (never the credential itself). */
void app_oneshot_check_conn(const struct kube_conn *conn);
/* check: ask the API server whether it serves the Traefik CRDs. 0 or -1. */
int app_oneshot_check_api(struct generation *g);
/* check: the Kubernetes side is done (ok: CRDs served, every access
 * allowed); stop when the source and traefik.api's instances are done too. */
void app_oneshot_check_api_done(struct generation *g, bool ok);
/* check: every traefik.api instance answered (ok) or not. */
void app_oneshot_check_traefik_done(struct generation *g, bool ok);
/* render, status, diff: the source was read and the informers have listed:
 * print, then stop. */
void app_oneshot_inspect(struct generation *g);
/* sync: everything has been through a pass; stop with the result. */
void app_oneshot_sync_drained(struct generation *g);
/* check, sync, render: the deadline passed; say what did not finish. */
void app_oneshot_report_timeout(struct generation *g);

/* app_access.c */

struct access_review;
/* check: ask the API server (SelfSubjectAccessReview) for every right the
 * bridge will use with this configuration; app_oneshot_check_api_done once
 * all are answered. 0, or -1 (said on stdout). */
int app_access_start(struct generation *g);
/* check, at the deadline: the reviews not answered, as a FAIL line. */
void app_access_report_timeout(struct generation *g);
/* After the loop. */
void app_access_free(struct generation *g);

/* app_status_cmd.c */

/* status: one line (or JSON object) per route in ids; the exit status. */
int app_status_cmd_print(struct generation *g, const char *const *ids, size_t n);

/* app_diff.c */

/* diff: a unified diff per object a pass would change, for the routes in
 * ids; the exit status (EXIT_DIFF_*). */
int app_diff_print(struct generation *g, const char *const *ids, size_t n);
/* The object as render and diff show it: a copy without managedFields and,
 * for kubectl apply (for_apply), without the fields the API server sets
 * (resourceVersion, uid, creationTimestamp, generation, status). NULL out
 * of memory. */
cJSON *app_object_shown(const cJSON *obj, bool for_apply);

/* app_live.c */

/* traefik.api set, `run`: the confirmation in Traefik. 0, or -1 (memory). */
int app_live_start(struct generation *g);
/* Reconciler hooks: propagated (also feeds the metrics), applied, gone. */
void app_live_on_propagated(void *user, const char *route_id, double seconds);
void app_live_on_applied(struct generation *g, const char *route_id, const struct model_route *m);
void app_live_on_gone(struct generation *g, const char *route_id);
/* The route's served, live and live_at into its status document. 0 or -1. */
int app_live_status_doc(struct generation *g, const char *route_id, cJSON *doc);
/* check: ask every traefik.api instance for its version (done at once
 * without traefik.api); app_oneshot_check_traefik_done when all answered.
 * 0, or -1 (memory). */
int app_live_check_start(struct generation *g);
/* check, at the deadline: the instances' lines, those not answered FAIL. */
void app_live_check_report_timeout(struct generation *g);
void app_live_stop(struct generation *g);
void app_live_close(struct generation *g);
void app_live_free(struct generation *g);

/* app_discovery.c */

/* traefik.api_group: auto: ask the API server which group it serves, then
 * app_start_objects; retried with backoff (check: fails at once). */
void app_discovery_start(struct generation *g);

#endif
