/* reconcile_internal.h - what the reconciler's files share; not for callers
 * (they include reconcile.h).
 *
 * The reconciler is one module in ten files, split by job:
 *   reconcile.c        the public API and lifecycle, route status records,
 *                      the ownership index fed by the informers
 *   reconcile_pass.c   one pass for one route: inputs, plan, the step machine
 *   reconcile_write.c  writing or deleting one object and judging the answer
 *   reconcile_fight.c  two writers undoing each other's writes
 *   reconcile_guard.c  the deletion guard
 *   reconcile_brakes.c freeze, abort and max step
 *   reconcile_pace.c   write pacing per object, retries when the API server is back
 *   reconcile_preview.c what a pass would write, without writing it
 *   reconcile_backends.c  can the services given weight serve
 *   reconcile_plan.c   ramp plans: the step in force, its timer, pauses
 * Each section below names the file that defines it. */
#ifndef CB_RECONCILE_INTERNAL_H
#define CB_RECONCILE_INTERNAL_H

#include "bridge/core/reconcile.h"

/* One object a pass writes or deletes. */
struct job_obj {
    enum obj_kind kind;
    char name[MODEL_NAME_MAX + 1];
    cJSON *desired; /* NULL: patched-mode IngressRoute, or a deletion */
};

/* The names of objects labelled as belonging to one route ("<kind>/<name>",
 * kind as one digit). */
struct objset {
    size_t n, cap;
    char **keys;
};

/* A pass in flight for one route (reconciler.jobs holds it by route id). */
struct job {
    struct reconciler *r;
    struct model_route model;
    bool has_model;
    bool patched;
    struct job_obj *objs; /* write phase, in order */
    size_t n_objs, step;
    struct job_obj *dels; /* prune phase, in order */
    size_t n_dels, del_step;
    bool pruning;
    uint64_t revision; /* of the route's keys, for status even when they do not parse */
    unsigned attempt;  /* conflict retries of the current step */
    struct kube_call *call;
    uv_timer_t timer; /* backoff between conflict retries */
    bool timer_open;
    bool wrote;
    bool failed;          /* requeued, but the pass counts as an error, not a retry */
    uint64_t retry_in_ms; /* retry: after this long, or at once on new input (0: backoff) */
    uint64_t defer_ms;    /* > 0: the pass waits this long for its write slot (write pacing) */
    bool paced;           /* the pass has its write slot: its writes go out */
    bool api_down;        /* it failed because the API server did not answer */
    /* The IngressRoute's resourceVersion this pass wrote or found equal to
     * desired ("" none): what the status records, not whatever the cache
     * holds when the pass ends (another writer's version may be there). */
    char ir_rv[64];
    size_t plan_step; /* the weights are this 1-based step of the route's plan; 0 none */
    struct keycache_brakes brakes; /* the route's brakes when the pass began */
    enum route_brake brake;        /* what they make of it: abort wins over freeze */
    char ns[MODEL_NS_MAX + 1];
    char name[MODEL_NAME_MAX + 1];
    char id[];
};

/* ---- reconcile.c: status records ---- */

/* The route's status record, created on first use (NULL without memory). */
struct route_status *status_get(struct reconciler *r, const char *id);
/* A problem: state ROUTE_ERROR for one that stays until the keys change,
 * ROUTE_PENDING for a transient one the route is retrying. */
void status_problem(struct reconciler *r, const char *id, enum route_state state, const char *msg,
                    uint64_t rev);
/* The same, posting an Event with this reason (status_problem: RouteFailed)
 * when the problem is an error. */
void status_problem_as(struct reconciler *r, const char *id, enum route_state state,
                       const char *msg, uint64_t rev, const char *reason);
/* The pass applied the route; rv is the IngressRoute's resourceVersion. */
void status_applied(struct reconciler *r, struct job *j, const char *rv);
/* The route is gone, and so is its record. */
void status_drop(struct reconciler *r, const char *id);

/* ---- reconcile.c: ownership ---- */

/* The object is managed by canary-bridge from this bridge's prefix: the
 * only objects a pass may update or delete. */
bool owned_here(const struct reconciler *r, const cJSON *obj);
/* The route named in a live object's annotation (or label) when that is
 * not route: another route's object. NULL when it is route's or names none. */
const char *other_route(const cJSON *live, const char *route);
/* Keep the ownership index in step with a live object (NULL: deleted); the
 * route id it belongs to into id ("" when none). */
void object_index(struct reconciler *r, enum obj_kind kind, const char *ns, const char *name,
                  const cJSON *obj, char id[KEYCACHE_ROUTE_ID_MAX]);
/* reconcile.namespaces allows ns (an empty list allows every one). */
bool namespace_allowed(const struct reconcile_settings *cfg, const char *ns);

/* ---- reconcile_pass.c: the pass ---- */

/* The workqueue's callback: begin the pass for route id. */
void pass_begin(void *user, const char *id);
/* Cancel the job's request and free it, in its timer's close callback when
 * the timer is open. No callback of the pass follows. */
void job_close(struct job *j);
/* On to the next step, or end the pass when none is left. */
void job_next(struct job *j);
/* The current step is done: on to the next. */
void job_step_done(struct job *j);
/* The object of the current step. */
struct job_obj *job_current(struct job *j);
/* End the pass. ok: it succeeded; retry: requeue with backoff (delay_ms > 0
 * overrides it, j->retry_in_ms overrides both). */
void job_finish(struct job *j, bool ok, bool retry, uint64_t delay_ms);
/* End the pass with a problem that stays until the keys change. */
void job_fail(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* End the pass with a transient problem: requeued with backoff (or after
 * delay_ms when > 0). */
void job_retry(struct job *j, const char *msg, uint64_t delay_ms);
/* The objects the route's model wants, into j->objs in write order. 0, or
 * -1 out of memory. */
int plan_writes(struct job *j);
/* Policy sync: the objects labelled for the route that it no longer wants,
 * into j->dels in delete order. 0, or -1 out of memory. */
int plan_prunes(struct job *j);
/* Without a weights key: the weights in force on the live objects, into
 * in->held (*held is the array to free after model_build). */
void weights_in_force(struct reconciler *r, const struct job *j, struct model_input *in,
                      struct model_weight **held);

/* ---- reconcile_write.c: one object ---- */

/* Owned mode: create o, or update it if it is ours and differs. */
void write_owned(struct job *j, struct job_obj *o);
/* Patched mode: only the named weights of an existing IngressRoute. */
void write_patched(struct job *j);
/* Policy sync: delete o if it is still ours, exactly the version judged. */
void write_delete(struct job *j, struct job_obj *o);
/* Owned mode: why the live object o may not be written (not managed by
 * canary-bridge, another prefix's, another route's), into why; false when
 * it may. */
bool owned_refusal(const struct job *j, const struct job_obj *o, const cJSON *live, char *why,
                   size_t whylen);
/* Patched mode: why the live IngressRoute (NULL: missing) may not be
 * written, into why; false when it may. */
bool patched_refusal(const struct job *j, const cJSON *live, char *why, size_t whylen);
/* Patched mode: a copy of live with the route's weights set, without
 * managedFields: what write_patched sends. NULL with why set when the
 * weights name a service the object lacks, with why "" out of memory. */
cJSON *patched_object(const struct job *j, const cJSON *live, bool *changed, char *why,
                      size_t whylen);

/* ---- reconcile_fight.c: two writers ---- */

/* Remember our write of o (the API's answer is res_obj) for fight_hold. */
void fight_written(struct job *j, const struct job_obj *o, const cJSON *res_obj);
/* The route's writes are no longer fought over (why: for the log). */
void fight_off(struct reconciler *r, const char *id, struct route_status *s, const char *why);
/* Before rewriting o (live differs from desired): judge our last write of
 * it, and say whether this write must wait. true: the pass is finished. */
bool fight_hold(struct job *j, const struct job_obj *o, const cJSON *live);

/* ---- reconcile_brakes.c: freeze, abort, max step ---- */

/* Read the route's brakes into the job (j->brakes, j->brake). */
void brakes_read(struct job *j);
/* The pass goes on with the brakes read: the status record says which, and
 * the end of one is logged. */
void brakes_note(struct job *j, struct route_status *s);
/* Frozen: end the pass without a write. The plan is made (owned objects,
 * and with has_keys false the prunes); err is why the keys do not build
 * (NULL: they do). A route without keys and nothing to delete goes on
 * (its record is dropped as usual). */
void brakes_hold(struct job *j, bool has_keys, const char *err);
/* Max step: true when the planned change moves a share of traffic too far
 * (the pass is then finished, the objects untouched). */
bool brakes_refuse_step(struct job *j);
/* The judgement of brakes_refuse_step alone: 1 with why into msg when the
 * change moves a share too far, 0 when it may go, -1 out of memory. */
int brakes_step_refusal(struct job *j, char *msg, size_t msglen);
/* The route was applied with s->brake: log and post the abort once. */
void brakes_applied(struct job *j, struct route_status *s);
/* P_freeze came or went: say so, and pass every route. */
void brakes_freeze_all_changed(struct reconciler *r);
/* The services of the weighted route of our live IngressRoute ir of route
 * ns/name: its last route's, or those of its TraefikService (sticky), when
 * that is ours. NULL when there are none. */
const cJSON *live_weighted(struct reconciler *r, const char *ns, const char *name, const cJSON *ir);

/* ---- reconcile_guard.c: the deletion guard ---- */

/* A new verdict from the key cache as it is now. */
void guard_eval(struct reconciler *r);
/* The pass for route id, which has no keys, is about to prune: true when
 * the guard holds its deletion (the route is then remembered, and released
 * with a requeue when the hold ends). */
bool guard_holds(struct reconciler *r, const char *id);

/* ---- reconcile_backends.c: can the services serve ---- */

/* After the writes are planned and the max step passed, before any is sent: check the
 * services the route gives more weight than they have now (see the file).
 * true: the pass is finished (refused, or waiting for a listing). */
bool backend_gate(struct job *j);
/* Route id has no keys any more: forget its services and reports. */
void backend_forget(struct reconciler *r, const char *id);
/* reconciler_free: the records and the index. */
void backend_free_all(struct reconciler *r);

/* ---- reconcile_pace.c: write pacing, outage recovery ---- */

/* Lifecycle, from reconciler_init/stop/close/free. init: 0, or -1. */
int pace_init(struct reconciler *r);
void pace_stop(struct reconciler *r);
void pace_close(struct reconciler *r);
void pace_free(struct reconciler *r);
/* Before the pass's first write request: true when it may go out now;
 * false when it must wait (reconcile.object_writes_per_second): the pass
 * is then finished, to run again with the latest keys when the wait ends. */
bool pace_write(struct job *j);
/* The pass ends (from job_finish, after retry is decided). */
void pace_pass_ended(struct job *j, bool retry);

/* ---- reconcile_plan.c: ramp plans ---- */

/* Lifecycle, from reconciler_init/close/free. init: 0, or -1. */
int plans_init(struct reconciler *r);
void plans_close(struct reconciler *r);
void plans_free(struct reconciler *r);
/* Before model_build: with a plan key, the weights of the step in force
 * into in->weights (*text is the string to free after model_build; NULL
 * when the plan is not in force). commit: a pass (the plan's state moves
 * on, its timer is armed); else a preview, which changes nothing. 0, or -1
 * with "KEY: step N: ..." in err when the plan is invalid. */
int plan_weights(struct job *j, struct model_input *in, char **text, bool commit, char *err,
                 size_t errlen);
/* The plan's step was applied (before status_applied). */
void plan_applied(struct job *j);
/* A pass applying a plan's step failed with msg (ROUTE_ERROR): the plan
 * pauses; the message to record, naming the step, into out. false when the
 * pass applies no plan step (out untouched). */
bool plan_refused(struct reconciler *r, const char *id, const char *msg, char *out, size_t outlen);
/* The route has no keys any more. */
void plan_forget(struct reconciler *r, const char *id);

#endif
