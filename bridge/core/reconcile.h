/* reconcile.h - make the cluster match the keys, one route at a time.
 *
 * A pass for route ns/name: build the desired state from the key cache
 * (model), render the Traefik objects, compare with the live objects the
 * informers hold, and write only what differs: POST when missing, PUT with
 * the cached resourceVersion otherwise (no GET on the normal path). A 409
 * means someone else wrote first: read the object again, recompute, retry
 * with backoff and jitter, a bounded number of times, then requeue. Bad input
 * fails only its own route, and the objects stay as they were.
 *
 * Object order is the safety property: Middlewares and the TraefikService are
 * written BEFORE the IngressRoute that references them, and (policy `sync`)
 * deleted only AFTER the IngressRoute stopped referencing them. With
 * reconciler.backends set, a change that gives a service more weight is
 * written only when that service can serve (reconcile_backends.c). */
#ifndef CB_RECONCILE_H
#define CB_RECONCILE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/core/keycache.h"
#include "bridge/lib/log.h"
#include "bridge/lib/map.h"
#include "bridge/lib/workqueue.h"
#include "sinks/backends.h"
#include "sinks/informer.h"
#include "sinks/kube.h"
#include "sinks/traefik.h"

#define RECONCILE_CONFLICT_RETRIES 5
/* A route whose namespace does not exist is retried after 30 s, doubling up
 * to 10 min (with jitter), one create per retry. */
#define RECONCILE_NS_RETRY_MIN_MS 30000
#define RECONCILE_NS_RETRY_MAX_MS 600000
/* Backend checks watch Services and EndpointSlices per namespace in use;
 * past this many namespaces (and with reconcile.namespaces empty), in all
 * namespaces at once. */
#define RECONCILE_BACKEND_NAMESPACES 32
/* Two writers: after this many of our writes undone in a row, each within
 * the window of the write, the route writes at most once per backoff period
 * (1 s doubling up to 5 min, with jitter). */
#define RECONCILE_FIGHT_UNDOS 3
#define RECONCILE_FIGHT_WINDOW_MS (10 * 60 * 1000)
#define RECONCILE_FIGHT_MIN_MS 1000
#define RECONCILE_FIGHT_MAX_MS (5 * 60 * 1000)
/* Objects a route owns carry its name: in a label (shortened with a hash
 * past 63 bytes, the limit of label values) for selection by people, and in
 * full in an annotation, which is what the bridge reads. */
#define RECONCILE_ROUTE_LABEL "canary-bridge.io/route"
#define RECONCILE_ROUTE_ANNOT "canary-bridge.io/route"
#define RECONCILE_LABEL_VALUE_MAX 63

/* The kinds the bridge writes, in the order a pass writes them. */
enum obj_kind { OBJ_MIDDLEWARE, OBJ_TRAEFIKSERVICE, OBJ_INGRESSROUTE, OBJ_NKINDS };
extern const char *const obj_plural[OBJ_NKINDS];
extern const char *const obj_kind_name[OBJ_NKINDS];

enum route_state { ROUTE_PENDING, ROUTE_APPLIED, ROUTE_ERROR };

/* The brakes a person pulls on a route (docs/usage.md section 15; the keys
 * are read by keycache_brakes). Freeze: a pass changes no object of the
 * route, deletions included, and only reports what waits. Abort: the route
 * is applied with all its traffic on its first service (model_input.abort),
 * frozen or not, and never limited by max step. */
enum route_brake { BRAKE_NONE, BRAKE_FROZEN, BRAKE_ABORTED };

/* The config file's `reconcile` section (bridge/config.c fills it). */
enum reconcile_policy { POLICY_UPSERT_ONLY, POLICY_SYNC };

struct reconcile_settings {
    enum reconcile_policy policy; /* default upsert-only */
    uint64_t resync_ms;           /* default 5m; 0 disables */
    char **namespaces;            /* allow-list; empty = any */
    size_t n_namespaces;
    bool status;                /* write P<ns>/<name>/status */
    unsigned max_in_flight;     /* routes written concurrently; default 16 */
    uint64_t burst_hold_ms;     /* longest write hold in a burst; 10s; 0 = off */
    uint64_t burst_quiet_ms;    /* a pause this long ends the hold; 30ms */
    bool allow_cross_namespace; /* services[].namespace allowed; default false */
    /* Deletion guard: percent of the routes owning objects that one source
     * read may delete without confirmation; 0..100, default 50. */
    unsigned max_delete_percent;
    /* Backend checks: a service given weight needs a ready endpoint too (not
     * only to exist and expose the port); default true. */
    bool require_ready_endpoints;
    /* Max step: percentage points one change may move a service's share
     * of a route's traffic (a route's maxStep overrides it); 0 = no limit. */
    unsigned max_step;
    /* Writes per second to one object, at most; 0 = unlimited; default 10. */
    unsigned object_writes_per_second;
    /* A failing route is retried after retry_min, doubling up to retry_max
     * (with jitter); 0 = the workqueue's defaults, 50ms and 30s. */
    uint64_t retry_min_ms, retry_max_ms;
};

struct route_status {
    enum route_state state;
    char *message;          /* last error, or NULL */
    uint64_t revision;      /* source revision it was built from */
    char *resource_version; /* of the IngressRoute after the last pass */
    uint64_t changed_ns;    /* uv_hrtime() of the first unapplied source change, 0 none */
    bool simple;            /* applied as one IngressRoute, nothing else */
    /* Two writers (see reconcile_fight.c): our last write, until a
     * later pass judges whether someone else undid it. */
    char *written_key;         /* "<kind>/<name>" of the object */
    char *written_rv;          /* resourceVersion it got; NULL once judged */
    uint64_t written_revision; /* source revision it carried */
    uint64_t written_ms;       /* loop time of the write */
    unsigned undone;           /* our writes undone in a row */
    bool fighting;             /* backing off: undone >= RECONCILE_FIGHT_UNDOS */
    uint64_t fight_next_ms;    /* loop time before which no write is made */
    uint64_t fight_revision;   /* source revision the fight began at */
    char *rival;               /* field manager that undid our last write */
    bool weights_held;         /* the weights key is gone; the weights in force stay */
    char *warning;             /* services carrying weight that cannot serve, or NULL */
    /* Brakes, as the last pass found them; message then begins "frozen: "
     * or "aborted: " and the reason. */
    enum route_brake brake;
    char *brake_reason;
    bool change_waits;          /* frozen, and the keys ask for a change the freeze holds */
    enum route_brake announced; /* the brake the log (and an Event) last told of */
    uint64_t write_next_ms;     /* loop time before which no pass writes (write pacing) */
};

/* A route's ramp plan as the last pass found it (reconcile_plan.c;
 * docs/usage.md section 14). Times are wall-clock ms since the epoch. */
struct plan_status {
    uint64_t revision;    /* of the plan key */
    uint64_t start_ms;    /* when step 1 took over, moved on by every resume */
    size_t step, n_steps; /* 0-based step in force, of n_steps */
    char *weights;        /* the step's weights, "shop-v1=75 shop-v2=25" */
    bool has_next;        /* a next step comes at next_ms */
    uint64_t next_ms;
    bool paused;        /* the step holds: why says why */
    uint64_t paused_ms; /* since when */
    char why[512];
    bool refused;     /* paused because a step was refused: the next applied pass resumes */
    bool overridden;  /* a weights key newer than the plan is in force */
    bool force;       /* `force: true`: max step does not judge the steps */
    bool queued;      /* its timer queued a pass that has not run yet */
    size_t announced; /* 1-based step last applied and told (Event), 0 none */
};

struct reconcile_stats {
    uint64_t passes, writes, deletes, conflicts, errors, noops;
    uint64_t undone;        /* our writes another writer undid */
    uint64_t step_refusals; /* changes refused by max step (each once) */
    uint64_t delayed;       /* passes whose writes waited for object_writes_per_second */
    uint64_t released;      /* routes retried at once because the API server answered again */
};

struct reconciler;

/* Write pacing and outage recovery (reconcile_pace.c); private. A route
 * whose last pass failed because the API server did not answer (no answer,
 * or 5xx) waits for it; the first successful answer to any request ends the
 * wait of all of them at once, instead of each waiting out its backoff. */
struct reconcile_pace {
    struct map waiting;     /* route id -> NULL: waiting for the API server */
    struct map released;    /* route id -> NULL: retried early, that pass not ended yet */
    uv_timer_t probe;       /* while routes wait: asks the API server again */
    struct kube_call *call; /* the probe in flight */
    bool closing;
};

/* How often the API server is asked whether it answers again while routes
 * wait for it (one GET, nothing else, per period). */
#define RECONCILE_PROBE_MS 1000

/* The deletion guard (policy sync). Routes that own objects here but whose
 * keys are all gone are deletions waiting to happen. When they are more than
 * reconcile.max_delete_percent of the routes that own objects (or all of
 * them), and at least two, the guard holds them: their objects stay, and one
 * warning, a metric, an Event per route and /readyz say so, until the keys
 * come back (the condition clears) or a person confirms by putting the token
 * into P_confirm-delete (KEYCACHE_CONFIRM_KEY). The token is a hash of the held
 * route ids, so a stale confirmation never approves a different deletion.
 * Counting is per evaluation of the key cache after a change, so it covers a
 * snapshot, a resync and a burst of watch events alike. */
struct delete_guard {
    bool dirty;          /* the keys changed since the last verdict */
    bool holding;        /* the verdict: deletions wait */
    size_t gone;         /* routes whose deletion waits */
    size_t owned;        /* routes that own objects here */
    uint32_t token;      /* what P_confirm-delete must hold to confirm */
    uint64_t holds;      /* times a hold began */
    struct map held;     /* route id -> NULL: passes that found their deletion held */
    struct map approved; /* route id -> NULL: deletions a person confirmed */
};

/* Hooks for the layers above (status keys, metrics); all optional. */
struct reconcile_hooks {
    /* A route's state or message changed; s is NULL when the route is gone. */
    void (*status)(void *user, const char *route_id, const struct route_status *s);
    /* A source change reached the API server (write acknowledged). */
    void (*propagated)(void *user, const char *route_id, double seconds);
    /* A route was applied: its effective weights are in m (owned: services,
     * patched: weights). */
    void (*applied)(void *user, const char *route_id, const struct model_route *m);
    /* Something worth a Kubernetes Event happened to obj (a live object):
     * type Normal|Warning, a CamelCase reason, a one-line message. */
    void (*event)(void *user, const cJSON *obj, const char *type, const char *reason,
                  const char *message);
    /* One pass ended: result is "applied", "unchanged", "error", "retry" or
     * "delayed" (its writes wait for reconcile.object_writes_per_second). */
    void (*pass)(void *user, const char *route_id, const char *result);
    /* A burst hold began (holding) or ended; see workqueue_settle_cb. */
    void (*burst)(void *user, bool holding, size_t changes, uint64_t held_ms);
    /* A service carrying weight in route_id can serve no longer (unready),
     * or can again, or no longer carries weight (!unready). service is its
     * name, "<namespace>/<name>" outside the route's namespace. */
    void (*backend)(void *user, const char *route_id, const char *service, bool unready);
    /* A route's ramp plan changed (p NULL: it has none any more); stepped:
     * a new step was applied. */
    void (*plan)(void *user, const char *route_id, const struct plan_status *p, bool stepped);
    void *user;
};

struct reconciler {
    /* public: set after reconciler_init, before reconciler_start */
    struct reconcile_hooks hooks;
    const char *field_manager;      /* ours, to tell our writes from others'; may be NULL */
    bool one_shot;                  /* `sync`: give up on a route after a few tries */
    void (*on_drained)(void *user); /* queue empty, nothing in flight or delayed */
    void *user;
    /* Backend checks (reconcile_backends.c): the Services and EndpointSlices
     * in the cluster, or NULL for none. Its change callback must be
     * reconciler_backends_changed with the reconciler as user. */
    struct backends *backends;
    /* read-only */
    struct reconcile_stats stats;
    struct delete_guard guard;
    unsigned one_shot_failed;
    struct map status;   /* route id -> struct route_status */
    struct workqueue wq; /* the routes waiting for a pass */
    /* private */
    uv_loop_t *loop;
    struct logger *log;
    const struct reconcile_settings *cfg;
    struct keycache *keys;
    struct kube_client *kube;
    struct informer *inf[OBJ_NKINDS];
    struct render_opts ropts;
    struct map jobs;           /* route id -> struct job in flight */
    struct map route_objs;     /* route id -> struct objset: objects labelled for it */
    struct map obj_route;      /* "<kind>/<ns>/<name>" -> route id (heap string) */
    struct map backend_routes; /* route id -> struct route_backends */
    struct map backend_index;  /* "<ns>/<service>" -> struct map of route ids (no values) */
    struct map backend_ns;     /* namespace -> (uintptr_t) uses by routes */
    struct reconcile_pace pace;
    struct map plans;      /* route id -> struct plan_status */
    uv_timer_t plan_timer; /* fires when the next step of a plan is due */
};

/* Lifecycle. init: memory and the queue's handles, no pass yet (routes
 * queued meanwhile wait); 0, or -1 without memory. start: passes begin, or
 * resume after pause/stop. pause: no new pass begins; passes in flight run
 * to their end (a shutdown waits for them: reconciler_jobs_in_flight).
 * stop: no new pass begins and every pass in flight ends now, its requests
 * cancelled, nothing requeued and no hook called (a leader that lost its
 * lease must not write another byte). close: every pass in flight is
 * cancelled the same way and the handles closed; reconciler_free once the
 * loop has run their close callbacks. */
int reconciler_init(struct reconciler *r, uv_loop_t *loop, struct logger *lg,
                    const struct reconcile_settings *cfg, struct keycache *keys,
                    struct kube_client *kube, struct informer *inf[OBJ_NKINDS],
                    const struct render_opts *ropts);
void reconciler_start(struct reconciler *r);
void reconciler_pause(struct reconciler *r);
void reconciler_stop(struct reconciler *r);
void reconciler_close(struct reconciler *r);
void reconciler_free(struct reconciler *r);

/* Bursts: at most this many routes changed at once, and one more every
 * REFILL_MS, go out without a hold; a hold ends after reconcile.burst_quiet
 * without a change, or after reconcile.burst_hold. See workqueue.h. */
#define RECONCILE_BURST_ROUTES 8
#define RECONCILE_BURST_REFILL_MS 5

/* Queue a route ("ns/name") because its keys changed (timed for metrics).
 * live: a change event, which counts towards burst detection; a snapshot's
 * differences (start, resync, re-list) do not. */
void reconciler_source_changed(struct reconciler *r, const char *route_id, bool live);
/* Queue a route for a re-check (resync, drift). */
void reconciler_enqueue(struct reconciler *r, const char *route_id);
/* Queue every route the key cache knows, and (policy sync) every route that
 * still owns objects although its keys are gone. */
void reconciler_enqueue_all(struct reconciler *r);
/* Informer callbacks, one per kind (user = the reconciler). */
void reconciler_middleware_changed(void *user, const char *ns, const char *name, const cJSON *obj);
void reconciler_traefikservice_changed(void *user, const char *ns, const char *name,
                                       const cJSON *obj);
void reconciler_ingressroute_changed(void *user, const char *ns, const char *name,
                                     const cJSON *obj);
/* Backend checks: a check's answer may have changed (backends_change_cb,
 * user = the reconciler). Routes refused or waiting because of ns/service
 * are queued at once; routes whose weighted services it is are re-checked
 * and reported (hooks.backend, an Event, the status warning), their weights
 * left alone. ns NULL: every namespace; service NULL: every service. */
void reconciler_backends_changed(void *user, const char *ns, const char *service);
/* The Kubernetes client's answer observer (see kube_client_set_observer):
 * a successful answer ends the wait of routes waiting for the API server. */
void reconciler_api_answered(struct reconciler *r, const char *verb, long status);
bool reconciler_idle(const struct reconciler *r);
size_t reconciler_jobs_in_flight(const struct reconciler *r);
/* While the deletion guard holds: one line saying what waits and how to
 * confirm (for /readyz), into out; false (out empty) when nothing is held. */
bool reconciler_guard_describe(const struct reconciler *r, char *out, size_t outlen);
const struct route_status *reconciler_status(const struct reconciler *r, const char *route_id);
/* The route's ramp plan, or NULL when it has none (or no pass saw it yet). */
const struct plan_status *reconciler_plan(const struct reconciler *r, const char *route_id);

/* ---- preview: what a pass would write, without writing it ---- */

enum preview_action {
    PREVIEW_SAME,   /* the live object already is what the pass wants */
    PREVIEW_CREATE, /* missing: the pass would create it */
    PREVIEW_UPDATE, /* differs: the pass would replace it */
    PREVIEW_DELETE  /* policy sync: no longer wanted; the pass would delete it */
};

struct preview_obj {
    enum obj_kind kind;
    char name[MODEL_NAME_MAX + 1];
    enum preview_action action;
    cJSON *live; /* a copy of the live object; NULL when missing */
    cJSON *want; /* what the pass would send (live merged with the route's
                  * objects; the live object itself when the same); NULL for
                  * a deletion */
};

struct route_preview {
    bool has_keys;
    bool has_model; /* the keys built a model: the desired state is in model */
    bool patched;   /* weights on an IngressRoute the bridge does not own */
    bool missing;   /* the route's IngressRoute does not exist */
    bool held;      /* no keys, and the deletion guard holds the deletion */
    /* The route's brake: frozen, a pass writes none of objs (they are the
     * change that waits); aborted, objs send all traffic to the first
     * service. brake_reason is the key's text. */
    enum route_brake brake;
    char brake_reason[KEYCACHE_REASON_MAX + 1];
    struct model_route model;
    uint64_t revision;        /* of the route's keys */
    char *error;              /* why the pass would fail, or NULL */
    struct preview_obj *objs; /* in write order, then the deletions */
    size_t n_objs;
};

/* What a pass for route_id ("ns/name") would write now, judged from the key
 * cache and the informers' caches as a pass judges it (namespaces, deletion
 * guard, brakes, max step, ownership); nothing is sent and nothing in the
 * reconciler changes (but the deletion guard's verdict, which a pass would
 * take too). Objects the pass would reach before an error are in p->objs.
 * 0 (free p with reconciler_preview_free), or -1 out of memory. */
int reconciler_preview(struct reconciler *r, const char *route_id, struct route_preview *p);
void reconciler_preview_free(struct route_preview *p);

#endif
