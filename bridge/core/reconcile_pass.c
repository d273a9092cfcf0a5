/* reconcile_pass.c - one pass for one route: from its keys to the steps
 * that make the cluster match them; see reconcile.h.
 *
 * A pass is a small state machine (struct job) driven by API answers:
 *
 *   plan -> write phase: Middlewares, TraefikServices (weighted, then
 *           mirroring), IngressRoute (in order)
 *        -> prune phase (policy sync): IngressRoute, TraefikServices
 *           (mirroring, then weighted), Middlewares that are no longer
 *           desired (in that order)
 *        -> finish
 *
 * The workqueue hands out a route (pass_begin). The pass reads the route's
 * keys from the key cache, ends at once when it can (outside the namespace
 * allow-list, deletion held by the guard, nothing changed since the last
 * applied pass), builds the model and plans the objects in write order.
 * job_next walks the steps; each step (reconcile_write.c) compares one
 * object with the live one, writes only a difference, and calls
 * job_step_done when the answer is judged. job_finish hands the route back
 * to the workqueue, done or requeued. Writing referenced objects first and
 * deleting them last means Traefik never sees an IngressRoute that names a
 * missing Middleware or TraefikService. Apart from the writes because this
 * is the order of events; what one request does is in reconcile_write.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/reconcile_internal.h"

#define MAX_ONE_SHOT_TRIES 4

/* ---- job lifetime ---- */

static void objs_free(struct job_obj *o, size_t n) {
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(o[i].desired);
    free(o);
}

static void job_free(struct job *j) {
    if (j->has_model)
        model_route_free(&j->model);
    objs_free(j->objs, j->n_objs);
    objs_free(j->dels, j->n_dels);
    free(j);
}

static void on_job_timer_closed(uv_handle_t *h) {
    job_free(h->data);
}

void job_close(struct job *j) {
    kube_call_cancel(j->call);
    j->call = NULL;
    if (j->timer_open)
        uv_close((uv_handle_t *)&j->timer, on_job_timer_closed);
    else
        job_free(j);
}

void job_finish(struct job *j, bool ok, bool retry, uint64_t delay_ms) {
    struct reconciler *r = j->r;
    map_del(&r->jobs, j->id);
    if (r->one_shot && retry && workqueue_failures(&r->wq, j->id) + 1 >= MAX_ONE_SHOT_TRIES) {
        retry = false; /* `sync` must end: report this route as failed */
        ok = false;
    }
    if (r->one_shot && !ok && !retry)
        r->one_shot_failed++;
    pace_pass_ended(j, retry);
    if (r->hooks.pass)
        r->hooks.pass(r->hooks.user, j->id,
                      j->defer_ms           ? "delayed"
                      : ok                  ? (j->wrote ? "applied" : "unchanged")
                      : retry && !j->failed ? "retry"
                                            : "error");
    if (j->defer_ms)
        workqueue_done_defer(&r->wq, j->id, j->defer_ms);
    else if (retry && j->retry_in_ms)
        workqueue_done_in(&r->wq, j->id, j->retry_in_ms);
    else if (retry && delay_ms)
        workqueue_done_after(&r->wq, j->id, delay_ms);
    else
        workqueue_done(&r->wq, j->id, retry);
    if (j->timer_open)
        uv_close((uv_handle_t *)&j->timer, on_job_timer_closed);
    else
        job_free(j);
    if (r->on_drained && reconciler_idle(r))
        r->on_drained(r->user);
}

void job_fail(struct job *j, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    status_problem(j->r, j->id, ROUTE_ERROR, msg, j->revision);
    job_finish(j, false, false, 0);
}

void job_retry(struct job *j, const char *msg, uint64_t delay_ms) {
    status_problem(j->r, j->id, ROUTE_PENDING, msg, j->revision);
    job_finish(j, false, true, delay_ms);
}

/* ---- planning ---- */

static int label_route(cJSON *obj, const char *route) {
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    cJSON *labels = cJSON_GetObjectItemCaseSensitive(meta, "labels");
    cJSON *annots = cJSON_GetObjectItemCaseSensitive(meta, "annotations");
    if (!labels)
        labels = cJSON_AddObjectToObject(meta, "labels");
    if (!annots)
        annots = cJSON_AddObjectToObject(meta, "annotations");
    char *value = traefik_shorten(route, RECONCILE_LABEL_VALUE_MAX);
    bool ok = labels && annots && value &&
              cJSON_AddStringToObject(labels, RECONCILE_ROUTE_LABEL, value) &&
              cJSON_AddStringToObject(annots, RECONCILE_ROUTE_ANNOT, route);
    free(value);
    return ok ? 0 : -1;
}

static int plan_add(struct job *j, enum obj_kind kind, const char *name, cJSON *desired) {
    struct job_obj *o = realloc(j->objs, (j->n_objs + 1) * sizeof *o);
    if (!o) {
        cJSON_Delete(desired);
        return -1;
    }
    j->objs = o;
    o = &j->objs[j->n_objs++];
    o->kind = kind;
    snprintf(o->name, sizeof o->name, "%s", name);
    o->desired = desired;
    if (desired && label_route(desired, j->name) < 0)
        return -1; /* o->desired is freed with the job */
    return 0;
}

/* The objects this route wants, in write order. */
int plan_writes(struct job *j) {
    struct reconciler *r = j->r;
    struct model_route *m = &j->model;
    if (!m->owned) {
        j->patched = true;
        return plan_add(j, OBJ_INGRESSROUTE, j->name, NULL);
    }
    for (size_t i = 0; i < m->n_rules; i++) {
        cJSON *mw = traefik_render_middleware(m, i, &r->ropts);
        if (!mw)
            continue; /* the rule sets no headers */
        char *name = traefik_middleware_name(m, i);
        int rc = name ? plan_add(j, OBJ_MIDDLEWARE, name, mw) : -1;
        if (!name)
            cJSON_Delete(mw);
        free(name);
        if (rc < 0)
            return -1;
    }
    if (traefik_weighted_service_wanted(m)) {
        cJSON *ts = traefik_render_traefikservice(m, &r->ropts);
        if (!ts || plan_add(j, OBJ_TRAEFIKSERVICE, j->name, ts) < 0)
            return -1;
    }
    if (m->mirror.enabled) { /* after the weighted TraefikService it names */
        char *name = traefik_mirror_name(m);
        cJSON *ms = name ? traefik_render_mirroring(m, &r->ropts) : NULL;
        int rc = ms ? plan_add(j, OBJ_TRAEFIKSERVICE, name, ms) : -1;
        free(name);
        if (rc < 0)
            return -1;
    }
    cJSON *ir = traefik_render_ingressroute(m, &r->ropts);
    if (!ir)
        return -1;
    return plan_add(j, OBJ_INGRESSROUTE, j->name, ir);
}

static bool planned(const struct job *j, enum obj_kind kind, const char *name) {
    for (size_t i = 0; i < j->n_objs; i++)
        if (j->objs[i].kind == kind && strcmp(j->objs[i].name, name) == 0)
            return true;
    return false;
}

/* Deletion rank: IngressRoute, then TraefikServices other than the
 * route's own name (a mirroring names the weighted one), then that one,
 * then Middlewares. */
static int prune_rank(enum obj_kind kind, const char *name, const char *route) {
    if (kind == OBJ_INGRESSROUTE)
        return 0;
    if (kind == OBJ_TRAEFIKSERVICE)
        return strcmp(name, route) != 0 ? 1 : 2;
    return 3;
}

/* Policy sync: objects labelled for this route, owned from our prefix, that
 * the route no longer wants; in prune_rank order, so nothing still
 * references a TraefikService or Middleware when it goes. */
int plan_prunes(struct job *j) {
    struct reconciler *r = j->r;
    if (r->cfg->policy != POLICY_SYNC || j->patched)
        return 0;
    const struct objset *set = map_get(&r->route_objs, j->id);
    for (int rank = 0; rank <= 3; rank++) {
        for (size_t i = 0; set && i < set->n; i++) {
            int kind = set->keys[i][0] - '0';
            const char *name = set->keys[i] + 2;
            if (prune_rank((enum obj_kind)kind, name, j->name) != rank)
                continue;
            if (planned(j, (enum obj_kind)kind, name))
                continue;
            if (!owned_here(r, informer_get(r->inf[kind], j->ns, name)))
                continue;
            struct job_obj *d = realloc(j->dels, (j->n_dels + 1) * sizeof *d);
            if (!d)
                return -1;
            j->dels = d;
            d = &j->dels[j->n_dels++];
            d->kind = (enum obj_kind)kind;
            snprintf(d->name, sizeof d->name, "%s", name);
            d->desired = NULL;
        }
    }
    return 0;
}

/* ---- the steps ---- */

void job_next(struct job *j) {
    struct reconciler *r = j->r;
    if (!j->pruning && j->step < j->n_objs) {
        struct job_obj *o = &j->objs[j->step];
        if (j->patched)
            write_patched(j);
        else
            write_owned(j, o);
        return;
    }
    if (!j->pruning) {
        j->pruning = true;
        if (plan_prunes(j) < 0) {
            job_retry(j, "out of memory", 0);
            return;
        }
    }
    if (j->del_step < j->n_dels) {
        write_delete(j, &j->dels[j->del_step]);
        return;
    }
    if (j->n_objs == 0) { /* the route is gone, and so is what it owned */
        map_del(&r->guard.approved, j->id);
        status_drop(r, j->id);
        job_finish(j, true, false, 0);
        return;
    }
    status_applied(r, j, j->ir_rv[0] ? j->ir_rv : NULL);
    plan_applied(j); /* after the weights in force are recorded: its status shows them */
    if (!j->wrote)
        r->stats.noops++;
    job_finish(j, true, false, 0);
}

void job_step_done(struct job *j) {
    j->attempt = 0;
    if (j->pruning)
        j->del_step++;
    else
        j->step++;
    job_next(j);
}

struct job_obj *job_current(struct job *j) {
    return j->pruning ? &j->dels[j->del_step] : &j->objs[j->step];
}

/* ---- the pass begins ---- */

/* A pass would change nothing when the route was applied as a single
 * IngressRoute, from the same source revision, and that object (by its
 * resourceVersion) is still the one written, with no other object labelled
 * for the route. A periodic resync of 10,000 routes then costs a lookup per
 * route instead of parsing, rendering and comparing each one
 * (bench/RESULTS.md). Anything else (a hand edit, a deleted object, a
 * leftover Middleware, an error, a new revision) takes the full pass. */
static bool unchanged_since_applied(struct reconciler *r, const struct job *j,
                                    const struct route_status *s, uint64_t revision) {
    if (!s || s->state != ROUTE_APPLIED || !s->simple || s->revision != revision ||
        !s->resource_version)
        return false;
    const char *rv = informer_rv(r->inf[OBJ_INGRESSROUTE], j->ns, j->name);
    if (!rv || strcmp(rv, s->resource_version) != 0)
        return false;
    const struct objset *set = map_get(&r->route_objs, j->id);
    for (size_t i = 0; set && i < set->n; i++)
        if (set->keys[i][0] - '0' != OBJ_INGRESSROUTE)
            return false;
    return true;
}

/* Without a `weights` key, the weights in force stay when the live
 * IngressRoute says they came from a weights key (or were already held):
 * deleting a key never moves traffic, and the live object makes that hold
 * across restarts. Fills in->held from the weighted route's services (or the
 * weighted TraefikService's, when the route goes through one: sticky, or
 * mirrored with several services); *held is the array to free. */
void weights_in_force(struct reconciler *r, const struct job *j, struct model_input *in,
                      struct model_weight **held) {
    *held = NULL;
    const cJSON *ir = informer_get(r->inf[OBJ_INGRESSROUTE], j->ns, j->name);
    if (!in->route || !owned_here(r, ir))
        return;
    const char *from = kobj_str(cJSON_GetObjectItemCaseSensitive(ir, "metadata"), "annotations",
                                TRAEFIK_ANNOT_WEIGHTS);
    if (!from)
        return;
    if (strncmp(from, "plan:", 5) == 0) {
        /* A plan's step is in force and its key is gone: the step's
         * weights stay, unless a weights key written since says otherwise. */
        uint64_t plan_rev = strtoull(from + 5, NULL, 10);
        const struct keycache_value *wv = keycache_leaf(r->keys, j->id, KEYCACHE_WEIGHTS);
        if (keycache_leaf(r->keys, j->id, KEYCACHE_PLAN) || (wv && wv->rev > plan_rev))
            return;
        in->weights = NULL;
        in->weights_len = 0;
        in->held_doc_new = in->route_rev > plan_rev;
        in->plan_rev = plan_rev; /* held, still the plan's: an older weights key stays out */
    } else if (in->weights) {
        return;
    } else if (strcmp(from, "weights") == 0)
        in->held_doc_new = false;
    else if (strncmp(from, "held:", 5) == 0)
        in->held_doc_new = strtoull(from + 5, NULL, 10) != in->route_rev;
    else
        return;
    const cJSON *svcs = live_weighted(r, j->ns, j->name, ir);
    int n = cJSON_GetArraySize(svcs);
    if (n <= 0 || !(*held = calloc((size_t)n, sizeof **held)))
        return;
    size_t k = 0;
    for (const cJSON *s = svcs->child; s; s = s->next) {
        const char *name = kobj_str(s, "name", NULL);
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(s, "weight");
        if (!name || !cJSON_IsNumber(w) || w->valuedouble < 0 || w->valuedouble > MODEL_WEIGHT_MAX)
            continue;
        (*held)[k].service = (char *)name; /* borrowed: valid for this pass's model_build */
        (*held)[k++].weight = (long)w->valuedouble;
    }
    in->held = *held;
    in->n_held = k;
}

void pass_begin(void *user, const char *id) {
    struct reconciler *r = user;
    size_t idlen = strlen(id);
    struct job *j = calloc(1, sizeof *j + idlen + 1);
    if (!j || map_put(&r->jobs, id, j, NULL) < 0) {
        free(j);
        workqueue_done(&r->wq, id, true);
        return;
    }
    memcpy(j->id, id, idlen + 1);
    j->r = r;
    r->stats.passes++;
    struct model_input in;
    bool has_keys = keycache_input(r->keys, id, &in, j->ns, j->name);
    j->revision = in.revision;
    if (!has_keys) {
        backend_forget(r, id);
        plan_forget(r, id);
    }
    if (!namespace_allowed(r->cfg, j->ns)) {
        if (has_keys)
            job_fail(j, "namespace %s is not in reconcile.namespaces", j->ns);
        else
            job_finish(j, true, false, 0);
        return;
    }
    if (r->guard.dirty && r->guard.holding)
        guard_eval(r); /* keys came back: the hold may end */
    if (!has_keys && guard_holds(r, id)) {
        /* The objects stay; the release requeues the route. `sync` fails. */
        if (r->one_shot)
            r->one_shot_failed++;
        job_finish(j, true, false, 0);
        return;
    }
    struct route_status *st = map_get(&r->status, id);
    if (st && st->fighting && (!has_keys || in.revision != st->fight_revision))
        fight_off(r, id, st, "its keys changed");
    brakes_read(j);
    bool has_plan = keycache_leaf(r->keys, id, KEYCACHE_PLAN) != NULL; /* steps move in time */
    if (has_keys && !has_plan && j->brake == BRAKE_NONE && (!st || st->brake == BRAKE_NONE) &&
        unchanged_since_applied(r, j, st, in.revision)) {
        st->changed_ns = 0; /* nothing left to propagate */
        r->stats.noops++;
        job_finish(j, true, false, 0);
        return;
    }
    /* A record for a brake; an unbraked route gets one only when the pass ends. */
    brakes_note(j, j->brake != BRAKE_NONE ? status_get(r, id) : map_get(&r->status, id));
    in.allow_cross_namespace = r->cfg->allow_cross_namespace;
    char err[1024];
    struct model_weight *held = NULL;
    char *step = NULL; /* a ramp plan's step: the weights in force */
    if (has_keys)
        weights_in_force(r, j, &in, &held);
    int rc = has_keys && plan_weights(j, &in, &step, true, err, sizeof err) < 0 ? -1
             : has_keys ? model_build(&in, &j->model, err, sizeof err)
                        : 1;
    free(held);
    free(step);
    j->has_model = rc == 0;
    if (j->brake == BRAKE_FROZEN) {
        j->pruning = true; /* planned here, once: the freeze only compares */
        if ((rc == 0 && plan_writes(j) < 0) || (rc >= 0 && plan_prunes(j) < 0)) {
            job_retry(j, "out of memory rendering objects", 0);
            return;
        }
        brakes_hold(j, has_keys, rc < 0 ? err : NULL);
        return;
    }
    if (rc < 0) {
        job_fail(j, "%s", err);
        return;
    }
    if (rc == 0 && plan_writes(j) < 0) {
        job_retry(j, "out of memory rendering objects", 0);
        return;
    }
    if (rc == 0 && brakes_refuse_step(j))
        return;
    if (rc == 0 && backend_gate(j))
        return; /* a service given weight cannot serve, or is not known yet */
    if (rc > 0 && j->brake == BRAKE_ABORTED) {
        /* Deleting what the route has is no way to send it to its stable
         * service: the objects stay. */
        job_fail(j, "the route has neither a route nor a weights key: there is no first "
                    "service to send its traffic to; the objects stay as they are");
        return;
    }
    /* rc == 1: nothing desired. upsert-only leaves every object in place; sync
     * prunes what the route owned (a source error never gets here: only a
     * successful read changes the key cache). */
    job_next(j);
}
