/* reconcile_brakes.c - the brakes a person pulls: freeze, abort and max step
 * (see enum route_brake in reconcile.h, docs/usage.md section 15).
 *
 * A pass reads the route's brakes when it begins (brakes_read). Frozen,
 * it plans as usual but writes nothing: brakes_hold compares the plan with
 * the live objects only to say whether a change waits, and the status
 * says "frozen: <reason>". Aborted, the model itself already sends every
 * request to the first service (model_input.abort) and the pass writes it
 * like any other, frozen or not. Otherwise, before the first write,
 * brakes_refuse_step compares the shares of traffic the plan gives each
 * service with those of the live objects (the weights in force) and
 * refuses a change that moves one by more than the route's maxStep (or
 * reconcile.max_step) percentage points, unless the weights value marks it
 * as deliberate. Apart from the pass because none of this is needed to
 * write a route, only to decide not to. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/reconcile_internal.h"

/* ---- reading and noting the brakes ---- */

void brakes_read(struct job *j) {
    keycache_brakes(j->r->keys, j->id, &j->brakes);
    j->brake = j->brakes.aborted ? BRAKE_ABORTED : j->brakes.frozen ? BRAKE_FROZEN : BRAKE_NONE;
}

/* The log (and an Event) tell of an abort, and of a route's own freeze; a
 * freeze of every route (P_freeze) is told once, not once per route. */
static bool told_per_route(const struct job *j) {
    return j->brake == BRAKE_ABORTED || (j->brake == BRAKE_FROZEN && j->brakes.frozen_here);
}

void brakes_note(struct job *j, struct route_status *s) {
    if (!s)
        return;
    if (s->announced != BRAKE_NONE && (s->announced != j->brake || !told_per_route(j))) {
        if (j->brake == BRAKE_NONE)
            log_info(j->r->log, "route %s: %s ended: its keys apply again", j->id,
                     s->announced == BRAKE_FROZEN ? "freeze" : "abort");
        s->announced = BRAKE_NONE;
    }
    const char *reason = j->brake == BRAKE_ABORTED  ? j->brakes.abort_reason
                         : j->brake == BRAKE_FROZEN ? j->brakes.freeze_reason
                                                    : NULL;
    char *copy = reason ? strdup(reason) : NULL;
    if (reason && !copy)
        return; /* no memory: the record keeps the brake it had */
    /* What was applied was written under other brakes: until a pass applies
     * the keys under these, none may end as unchanged since then (a pass
     * deferred for its write slot has noted them but written nothing). */
    if (s->brake != j->brake)
        s->simple = false;
    free(s->brake_reason);
    s->brake_reason = copy;
    s->brake = j->brake;
}

static void post_event(struct job *j, const char *type, const char *reason, const char *msg) {
    struct reconciler *r = j->r;
    const cJSON *live = informer_get(r->inf[OBJ_INGRESSROUTE], j->ns, j->name);
    if (live && r->hooks.event)
        r->hooks.event(r->hooks.user, live, type, reason, msg);
}

/* ---- freeze ---- */

/* The object the plan wants differs from the live one (or there is none). */
static bool differs(struct job *j, const struct job_obj *o) {
    struct reconciler *r = j->r;
    const cJSON *live = informer_get(r->inf[o->kind], j->ns, o->name);
    if (!live)
        return true;
    bool changed = true;
    if (j->patched) {
        char err[256];
        cJSON *copy = cJSON_Duplicate(live, 1);
        if (copy && traefik_apply_weights(copy, &j->model, &changed, err, sizeof err) < 0)
            changed = true; /* the change waiting fails when it is tried */
        cJSON_Delete(copy);
        return changed;
    }
    cJSON *merged = traefik_merge_owned(live, o->desired, &changed);
    cJSON_Delete(merged);
    return changed || !merged;
}

static void status_frozen(struct job *j, bool waits, const char *err) {
    struct reconciler *r = j->r;
    struct route_status *s = status_get(r, j->id);
    if (!s)
        return;
    char msg[1600];
    snprintf(msg, sizeof msg, "frozen: %s%s%s%s", j->brakes.freeze_reason,
             waits && !err ? "; a change waits until the freeze ends" : "",
             err ? "; the change waiting is invalid: " : "", err ? err : "");
    bool changed = !s->message || strcmp(s->message, msg) != 0 || s->change_waits != waits;
    if (told_per_route(j) && s->announced != BRAKE_FROZEN) {
        log_info(r->log,
                 "route %s: frozen (%s): no object of the route changes until %s%s/freeze is "
                 "deleted",
                 j->id, j->brakes.freeze_reason, r->keys->prefix, j->id);
        char ev[KEYCACHE_REASON_MAX + 16];
        snprintf(ev, sizeof ev, "frozen: %s", j->brakes.freeze_reason);
        post_event(j, "Normal", "Frozen", ev);
        s->announced = BRAKE_FROZEN;
    } else if (waits && !s->change_waits) {
        log_info(r->log, "route %s: frozen: a change waits (source revision %llu)", j->id,
                 (unsigned long long)j->revision);
    }
    char *copy = strdup(msg);
    if (!copy)
        return;
    free(s->message);
    s->message = copy;
    s->change_waits = waits;
    s->changed_ns = 0; /* the time it waits is no propagation delay */
    if (changed && r->hooks.status)
        r->hooks.status(r->hooks.user, j->id, s);
}

void brakes_hold(struct job *j, bool has_keys, const char *err) {
    if (!has_keys && j->n_dels == 0) {
        job_next(j); /* nothing to hold: the route's record goes as usual */
        return;
    }
    bool waits = j->n_dels > 0 || err;
    for (size_t i = 0; !waits && i < j->n_objs; i++)
        waits = differs(j, &j->objs[i]);
    status_frozen(j, waits, err);
    job_finish(j, true, false, 0);
}

void brakes_freeze_all_changed(struct reconciler *r) {
    struct keycache_brakes b;
    keycache_brakes(r->keys, "", &b);
    if (b.frozen_all)
        log_warn(r->log,
                 "%s%s: every route is frozen (%s): no object changes until the key is deleted",
                 r->keys->prefix, KEYCACHE_FREEZE_KEY, b.freeze_reason);
    else
        log_info(r->log, "%s%s deleted: the freeze of every route ended; applying what waits",
                 r->keys->prefix, KEYCACHE_FREEZE_KEY);
    reconciler_enqueue_all(r);
}

/* ---- abort ---- */

void brakes_applied(struct job *j, struct route_status *s) {
    if (s->brake != BRAKE_ABORTED || s->announced == BRAKE_ABORTED)
        return;
    const struct model_route *m = &j->model;
    const char *to = m->owned ? (m->n_services ? m->services[0].name : "")
                              : (m->n_weights ? m->weights[0].service : "");
    log_warn(j->r->log, "route %s: aborted (%s): all traffic on %s until %s%s/abort is deleted",
             j->id, j->brakes.abort_reason, to, j->r->keys->prefix, j->id);
    char ev[KEYCACHE_REASON_MAX + MODEL_NS_MAX + 64];
    snprintf(ev, sizeof ev, "aborted: %s; all traffic on %s", j->brakes.abort_reason, to);
    post_event(j, "Warning", "Aborted", ev);
    s->announced = BRAKE_ABORTED;
}

/* ---- max step ---- */

const cJSON *live_weighted(struct reconciler *r, const char *ns, const char *name,
                           const cJSON *ir) {
    const cJSON *routes =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ir, "spec"), "routes");
    const cJSON *svcs = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(routes, cJSON_GetArraySize(routes) - 1), "services");
    const char *kind = kobj_str(cJSON_GetArrayItem(svcs, 0), "kind", NULL);
    if (!kind || strcmp(kind, "TraefikService") != 0)
        return svcs;
    const cJSON *ts = informer_get(r->inf[OBJ_TRAEFIKSERVICE], ns, name);
    if (!owned_here(r, ts))
        return NULL;
    return cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ts, "spec"), "weighted"),
        "services");
}

/* A live services list as weights: Traefik's default of 1 where none is
 * given. NULL (n 0) when empty or without memory. Names are borrowed. */
static struct model_weight *live_weights(const cJSON *svcs, size_t *n) {
    *n = 0;
    int cnt = cJSON_GetArraySize(svcs);
    struct model_weight *w = cnt > 0 ? calloc((size_t)cnt, sizeof *w) : NULL;
    for (const cJSON *s = w ? svcs->child : NULL; s; s = s->next) {
        const char *name = kobj_str(s, "name", NULL);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, "weight");
        if (!name)
            continue;
        w[*n].service = (char *)name;
        w[(*n)++].weight = cJSON_IsNumber(v) && v->valuedouble >= 0 ? (long)v->valuedouble : 1;
    }
    return w;
}

struct step {
    double points, from, to;
    const char *service;
};

/* Keep the larger of two steps (the service names must outlive it). */
static void step_worst(struct step *worst, const struct model_weight *from, size_t n_from,
                       const struct model_weight *to, size_t n_to) {
    struct step s;
    s.points = model_weights_step(from, n_from, to, n_to, &s.service, &s.from, &s.to);
    if (s.service && (!worst->service || s.points > worst->points))
        *worst = s;
}

/* Owned: the weighted route of the live objects against the model's. */
static int step_owned(struct job *j, const cJSON *ir, struct step *worst) {
    const struct model_route *m = &j->model;
    size_t n_from;
    struct model_weight *from = live_weights(live_weighted(j->r, j->ns, j->name, ir), &n_from);
    struct model_weight *to = calloc(m->n_services ? m->n_services : 1, sizeof *to);
    if (!to) {
        free(from);
        return -1;
    }
    for (size_t i = 0; i < m->n_services; i++)
        to[i] = (struct model_weight){m->services[i].name, m->services[i].weight};
    step_worst(worst, from, n_from, to, m->n_services);
    free(from);
    free(to);
    return 0;
}

/* Patched: every route of the live object with a service the weights
 * name, before and after they are set. */
static int step_patched(struct job *j, const cJSON *ir, struct step *worst) {
    const struct model_route *m = &j->model;
    const cJSON *routes =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ir, "spec"), "routes");
    for (const cJSON *rt = routes ? routes->child : NULL; rt; rt = rt->next) {
        size_t n;
        struct model_weight *from =
            live_weights(cJSON_GetObjectItemCaseSensitive(rt, "services"), &n);
        struct model_weight *to = n ? calloc(n, sizeof *to) : NULL;
        if (n && !to) {
            free(from);
            return -1;
        }
        bool named = false;
        for (size_t i = 0; i < n; i++) {
            to[i] = from[i];
            for (size_t k = 0; k < m->n_weights; k++) {
                if (strcmp(m->weights[k].service, from[i].service) == 0) {
                    to[i].weight = m->weights[k].weight;
                    named = true;
                }
            }
        }
        if (named)
            step_worst(worst, from, n, to, n);
        free(from);
        free(to);
    }
    return 0;
}

/* "45", or "33.3" when it is not whole. */
static const char *points(double v, char buf[32]) {
    if (fabs(v - round(v)) < 0.05)
        snprintf(buf, 32, "%.0f", v);
    else
        snprintf(buf, 32, "%.1f", v);
    return buf;
}

int brakes_step_refusal(struct job *j, char *msg, size_t msglen) {
    struct reconciler *r = j->r;
    const struct model_route *m = &j->model;
    long max = m->has_max_step ? m->max_step : (long)r->cfg->max_step;
    if (m->aborted || m->weights_forced || max <= 0)
        return 0;
    /* Where the write would be refused anyway (not ours to write, or no
     * object to patch), there is no traffic of ours to protect. */
    const cJSON *ir = informer_get(r->inf[OBJ_INGRESSROUTE], j->ns, j->name);
    if (!ir || (m->owned ? !owned_here(r, ir) : traefik_is_managed(ir)))
        return 0;
    struct step worst = {0};
    if ((m->owned ? step_owned(j, ir, &worst) : step_patched(j, ir, &worst)) < 0)
        return -1;
    if (!worst.service || worst.points <= (double)max + 1e-9)
        return 0;
    char p[32], f[32], t[32];
    snprintf(msg, msglen,
             "max step: %s would move %s points, max_step is %ld (%s): from %s%% to %s%% of the "
             "traffic; the weights in force stay. Take smaller steps, or end the weights value "
             "with '!' (in a mapping: _force: true) to take this one on purpose",
             worst.service, points(worst.points, p), max,
             m->has_max_step ? "the route's maxStep" : "reconcile.max_step", points(worst.from, f),
             points(worst.to, t));
    return 1;
}

bool brakes_refuse_step(struct job *j) {
    struct reconciler *r = j->r;
    char msg[1024];
    int rc = brakes_step_refusal(j, msg, sizeof msg);
    if (rc < 0) {
        job_retry(j, "out of memory", 0);
        return true;
    }
    if (rc == 0)
        return false;
    const struct route_status *s = map_get(&r->status, j->id);
    if (!s || s->state != ROUTE_ERROR || !s->message || strcmp(s->message, msg) != 0 ||
        s->revision != j->revision)
        r->stats.step_refusals++; /* each refused change once, not each pass over it */
    status_problem_as(r, j->id, ROUTE_ERROR, msg, j->revision, "StepRefused");
    job_finish(j, false, false, 0);
    return true;
}
