/* reconcile.c - the reconciler's public API and lifecycle, route status
 * records, and the ownership index; see reconcile.h.
 *
 * The reconciler is one module in ten files, split by job (the list is in
 * reconcile_internal.h): a pass for one route in reconcile_pass.c, one
 * object's write in reconcile_write.c, two writers in reconcile_fight.c,
 * the deletion guard in reconcile_guard.c, the brakes in
 * reconcile_brakes.c, write pacing and retries after an outage in
 * reconcile_pace.c, what a pass would write in reconcile_preview.c. This
 * file holds what lives longer than a pass: each route's status (what the
 * status hook reports), and which live objects carry which route's label
 * (what a prune may delete, and what the deletion guard counts), kept in
 * step by the informers' callbacks. */
#include "bridge/core/reconcile.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/reconcile_internal.h"
#include "bridge/lib/buf.h"

const char *const obj_plural[OBJ_NKINDS] = {"middlewares", "traefikservices", "ingressroutes"};
const char *const obj_kind_name[OBJ_NKINDS] = {"Middleware", "TraefikService", "IngressRoute"};

/* ---- status bookkeeping ---- */

struct route_status *status_get(struct reconciler *r, const char *id) {
    struct route_status *s = map_get(&r->status, id);
    if (s)
        return s;
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (map_put(&r->status, id, s, NULL) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void status_free(struct route_status *s) {
    if (!s)
        return;
    free(s->message);
    free(s->resource_version);
    free(s->written_key);
    free(s->written_rv);
    free(s->rival);
    free(s->warning);
    free(s->brake_reason);
    free(s);
}

void status_problem(struct reconciler *r, const char *id, enum route_state state, const char *msg,
                    uint64_t rev) {
    status_problem_as(r, id, state, msg, rev, "RouteFailed");
}

void status_problem_as(struct reconciler *r, const char *id, enum route_state state,
                       const char *msg, uint64_t rev, const char *reason) {
    char planned[1700];
    if (state == ROUTE_ERROR && plan_refused(r, id, msg, planned, sizeof planned))
        msg = planned; /* the plan pauses at the refused step */
    struct route_status *s = status_get(r, id);
    char braked[1800];
    if (s && s->brake == BRAKE_ABORTED) { /* the brake is what the person looks for */
        snprintf(braked, sizeof braked, "aborted: %s; not applied: %s",
                 s->brake_reason ? s->brake_reason : "", msg);
        msg = braked;
    }
    r->stats.errors++;
    /* One line per new problem, not one per resync or retry. */
    if (s && s->state == state && s->message && strcmp(s->message, msg) == 0 &&
        s->revision == rev) {
        log_debug(r->log, "route %s: still failing: %s", id, msg);
        return;
    }
    log_fmsg(r->log, state == ROUTE_ERROR ? LOG_LVL_ERROR : LOG_LVL_WARN,
             LOG_FIELDS(.revision = rev), "route %s: %s%s", id, msg,
             state == ROUTE_ERROR ? "" : " (retrying)");
    if (state == ROUTE_ERROR && r->hooks.event) {
        /* On the IngressRoute, when there is one: where kubectl users look. */
        char ns[MODEL_NS_MAX + 1];
        const char *slash = strchr(id, '/');
        size_t n = slash && (size_t)(slash - id) <= MODEL_NS_MAX ? (size_t)(slash - id) : 0;
        memcpy(ns, id, n);
        ns[n] = '\0';
        const cJSON *live = slash ? informer_get(r->inf[OBJ_INGRESSROUTE], ns, slash + 1) : NULL;
        if (live)
            r->hooks.event(r->hooks.user, live, "Warning", reason, msg);
    }
    if (!s)
        return;
    char *copy = strdup(msg);
    free(s->message);
    s->message = copy;
    s->state = state;
    s->revision = rev;
    if (r->hooks.status)
        r->hooks.status(r->hooks.user, id, s);
}

void status_applied(struct reconciler *r, struct job *j, const char *rv) {
    struct route_status *s = status_get(r, j->id);
    if (!s)
        return;
    if (j->model.weights_held && !s->weights_held) {
        buf_t w = BUF_INIT;
        int rc = 0;
        for (size_t i = 0; rc == 0 && i < j->model.n_services; i++)
            rc = buf_printf(&w, " %s=%ld", j->model.services[i].name, j->model.services[i].weight);
        log_info(r->log,
                 "route %s: weights key gone: keeping the weights in force%s until a new "
                 "weights key or route document says otherwise",
                 j->id, rc == 0 && w.data ? w.data : "");
        buf_free(&w);
    }
    if (s->fighting) {
        /* Written, but fought over: the status keeps saying so. */
        s->revision = j->model.revision;
        s->weights_held = j->model.weights_held;
        s->changed_ns = 0;
        if (r->hooks.applied)
            r->hooks.applied(r->hooks.user, j->id, &j->model);
        return;
    }
    char aborted[KEYCACHE_REASON_MAX + 16];
    const char *msg = NULL; /* the message of an applied route: none, or the abort's */
    if (s->brake == BRAKE_ABORTED) {
        snprintf(aborted, sizeof aborted, "aborted: %s", s->brake_reason ? s->brake_reason : "");
        msg = aborted;
    }
    bool changed = s->weights_held != j->model.weights_held || s->state != ROUTE_APPLIED ||
                   s->revision != j->model.revision || s->change_waits ||
                   (rv && (!s->resource_version || strcmp(rv, s->resource_version) != 0)) ||
                   !s->message != !msg || (msg && strcmp(msg, s->message) != 0);
    if (s->state == ROUTE_ERROR)
        log_info(r->log, "route %s: recovered", j->id);
    s->state = ROUTE_APPLIED;
    s->weights_held = j->model.weights_held;
    s->change_waits = false;
    char *copy = msg ? strdup(msg) : NULL;
    free(s->message);
    s->message = copy;
    brakes_applied(j, s);
    s->revision = j->model.revision;
    s->simple = j->n_objs == 1 && j->objs[0].kind == OBJ_INGRESSROUTE && j->n_dels == 0;
    if (rv) {
        copy = strdup(rv);
        if (copy) {
            free(s->resource_version);
            s->resource_version = copy;
        }
    }
    if (s->changed_ns && j->wrote && r->hooks.propagated)
        r->hooks.propagated(r->hooks.user, j->id, (double)(uv_hrtime() - s->changed_ns) / 1e9);
    s->changed_ns = 0;
    if (r->hooks.applied)
        r->hooks.applied(r->hooks.user, j->id, &j->model);
    if (changed && r->hooks.status)
        r->hooks.status(r->hooks.user, j->id, s);
}

void status_drop(struct reconciler *r, const char *id) {
    struct route_status *s = map_del(&r->status, id);
    if (s && r->hooks.status)
        r->hooks.status(r->hooks.user, id, NULL);
    status_free(s);
}

/* ---- the ownership index: which objects carry a route's label ---- */

static void objset_free(struct objset *set) {
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        free(set->keys[i]);
    free(set->keys);
    free(set);
}

/* objkey is "<kind>/<ns>/<name>"; the route's set holds "<kind>/<name>". */
static void index_remove(struct reconciler *r, const char *objkey) {
    char *route = map_del(&r->obj_route, objkey);
    if (!route)
        return;
    struct objset *set = map_get(&r->route_objs, route);
    char want[16 + MODEL_NAME_MAX];
    snprintf(want, sizeof want, "%c/%s", objkey[0], strrchr(objkey, '/') + 1);
    for (size_t i = 0; set && i < set->n; i++) {
        if (strcmp(set->keys[i], want) == 0) {
            free(set->keys[i]);
            set->keys[i] = set->keys[--set->n];
            break;
        }
    }
    if (set && set->n == 0)
        objset_free(map_del(&r->route_objs, route));
    free(route);
}

static void index_add(struct reconciler *r, const char *objkey, const char *route_id,
                      enum obj_kind kind, const char *name) {
    char *cur = map_get(&r->obj_route, objkey);
    if (cur && strcmp(cur, route_id) == 0)
        return;
    index_remove(r, objkey);
    char *route = strdup(route_id);
    struct objset *set = map_get(&r->route_objs, route_id);
    if (!set) {
        set = calloc(1, sizeof *set);
        if (!set || map_put(&r->route_objs, route_id, set, NULL) < 0) {
            free(set);
            free(route);
            return; /* best effort: a missed entry only delays a prune */
        }
    }
    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 4;
        char **k = realloc(set->keys, cap * sizeof *k);
        if (!k) {
            free(route);
            return;
        }
        set->keys = k;
        set->cap = cap;
    }
    size_t len = strlen(name) + 3;
    char *key = malloc(len);
    if (!route || !key || map_put(&r->obj_route, objkey, route, NULL) < 0) {
        free(key);
        free(route);
        return;
    }
    snprintf(key, len, "%d/%s", (int)kind, name);
    set->keys[set->n++] = key;
}

/* Ours, from this bridge's prefix: the only objects a prune may touch. */
bool owned_here(const struct reconciler *r, const cJSON *obj) {
    if (!obj || !traefik_is_managed(obj))
        return false;
    const char *prefix = kobj_str(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "annotations",
                                  TRAEFIK_ANNOT_PREFIX);
    return prefix && strcmp(prefix, r->keys->prefix) == 0;
}

/* The route an object belongs to: the full name from the annotation, else
 * (objects written before the annotation existed) the label. */
static const char *route_label(const cJSON *obj) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    const char *full = kobj_str(meta, "annotations", RECONCILE_ROUTE_ANNOT);
    return full ? full : kobj_str(meta, "labels", RECONCILE_ROUTE_LABEL);
}

/* Keep the ownership index in step with a live object (NULL: deleted), and
 * return the route id it belongs to in id ("" when none). */
void object_index(struct reconciler *r, enum obj_kind kind, const char *ns, const char *name,
                  const cJSON *obj, char id[KEYCACHE_ROUTE_ID_MAX]) {
    char objkey[KEYCACHE_ROUTE_ID_MAX + 8];
    snprintf(objkey, sizeof objkey, "%d/%s/%s", (int)kind, ns, name);
    id[0] = '\0';
    if (!obj) {
        const char *was = map_get(&r->obj_route, objkey);
        if (was)
            snprintf(id, KEYCACHE_ROUTE_ID_MAX, "%s", was);
        else if (kind == OBJ_INGRESSROUTE)
            keycache_route_id(id, KEYCACHE_ROUTE_ID_MAX, ns, name);
        index_remove(r, objkey);
        return;
    }
    const char *route = route_label(obj);
    if (!route && kind == OBJ_INGRESSROUTE)
        route = name; /* an IngressRoute is its route, labelled or not */
    if (!route)
        return;
    keycache_route_id(id, KEYCACHE_ROUTE_ID_MAX, ns, route);
    if (traefik_is_managed(obj))
        index_add(r, objkey, id, kind, name);
    else
        index_remove(r, objkey);
}

/* The route named in a live object's annotation (or, for objects from before
 * the annotation, its label) when that is not route: another route's object,
 * which this route must neither write nor delete. NULL when it is ours or
 * carries no route at all. */
const char *other_route(const cJSON *live, const char *route) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(live, "metadata");
    const char *full = kobj_str(meta, "annotations", RECONCILE_ROUTE_ANNOT);
    if (full)
        return strcmp(full, route) == 0 ? NULL : full;
    const char *label = kobj_str(meta, "labels", RECONCILE_ROUTE_LABEL);
    if (!label)
        return NULL;
    char *mine = traefik_shorten(route, RECONCILE_LABEL_VALUE_MAX);
    bool same = mine && strcmp(mine, label) == 0;
    free(mine);
    return same ? NULL : label;
}

static void object_changed(struct reconciler *r, enum obj_kind kind, const char *ns,
                           const char *name, const cJSON *obj) {
    char id[KEYCACHE_ROUTE_ID_MAX];
    object_index(r, kind, ns, name, obj, id);
    if (!id[0])
        return;
    /* Drift on a route we have keys for, or (policy sync) leftovers of a route
     * whose keys are gone. While a pass is in flight this only marks the route
     * dirty: one more pass follows, which writes nothing if it was our echo. */
    bool ours = map_has(&r->keys->routes, id);
    bool leftovers = r->cfg->policy == POLICY_SYNC && obj && owned_here(r, obj);
    if (ours || leftovers)
        reconciler_enqueue(r, id);
}

void reconciler_middleware_changed(void *user, const char *ns, const char *name, const cJSON *obj) {
    object_changed(user, OBJ_MIDDLEWARE, ns, name, obj);
}

void reconciler_traefikservice_changed(void *user, const char *ns, const char *name,
                                       const cJSON *obj) {
    struct reconciler *r = user;
    object_changed(r, OBJ_TRAEFIKSERVICE, ns, name, obj);
    if (r->backends) /* a TraefikService reference a route waits for */
        reconciler_backends_changed(r, ns, name);
}

void reconciler_ingressroute_changed(void *user, const char *ns, const char *name,
                                     const cJSON *obj) {
    object_changed(user, OBJ_INGRESSROUTE, ns, name, obj);
}

bool namespace_allowed(const struct reconcile_settings *cfg, const char *ns) {
    if (!cfg->n_namespaces)
        return true;
    for (size_t i = 0; i < cfg->n_namespaces; i++)
        if (strcmp(cfg->namespaces[i], ns) == 0)
            return true;
    return false;
}

/* ---- lifecycle ---- */

static void on_burst(void *user, bool holding, size_t changes, uint64_t held_ms) {
    struct reconciler *r = user;
    if (holding)
        log_info(r->log,
                 "burst: more than %d routes changed at once or faster than one per %d ms; "
                 "writes wait until changes pause for %" PRIu64 " ms (at most %" PRIu64 " ms)",
                 RECONCILE_BURST_ROUTES, RECONCILE_BURST_REFILL_MS, r->cfg->burst_quiet_ms,
                 r->cfg->burst_hold_ms);
    else
        log_info(r->log,
                 "burst: over after %" PRIu64 " ms and %zu route changes; writing each "
                 "changed route once",
                 held_ms, changes);
    if (r->hooks.burst)
        r->hooks.burst(r->hooks.user, holding, changes, held_ms);
}

int reconciler_init(struct reconciler *r, uv_loop_t *loop, struct logger *lg,
                    const struct reconcile_settings *cfg, struct keycache *keys,
                    struct kube_client *kube, struct informer *inf[OBJ_NKINDS],
                    const struct render_opts *ropts) {
    memset(r, 0, sizeof *r);
    r->loop = loop;
    r->log = lg;
    r->cfg = cfg;
    r->keys = keys;
    r->kube = kube;
    for (int k = 0; k < OBJ_NKINDS; k++)
        r->inf[k] = inf[k];
    r->ropts = *ropts;
    r->guard.dirty = true; /* the first passes judge the first snapshot */
    if (pace_init(r) < 0)
        return -1;
    if (plans_init(r) < 0) {
        pace_close(r);
        return -1;
    }
    if (workqueue_init(&r->wq, loop, cfg->max_in_flight, pass_begin, r) < 0) {
        pace_close(r);
        plans_close(r);
        return -1;
    }
    if (cfg->retry_min_ms)
        r->wq.base_backoff_ms = cfg->retry_min_ms;
    if (cfg->retry_max_ms)
        r->wq.max_backoff_ms = cfg->retry_max_ms;
    workqueue_pause(&r->wq, true); /* until reconciler_start */
    workqueue_settle(&r->wq, RECONCILE_BURST_ROUTES, RECONCILE_BURST_REFILL_MS, cfg->burst_quiet_ms,
                     cfg->burst_hold_ms, on_burst);
    return 0;
}

void reconciler_start(struct reconciler *r) {
    workqueue_pause(&r->wq, false);
}

void reconciler_pause(struct reconciler *r) {
    workqueue_pause(&r->wq, true);
}

void reconciler_stop(struct reconciler *r) {
    workqueue_pause(&r->wq, true);
    struct map_iter it;
    map_iter_init(&it, &r->jobs);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        struct job *j = e->value;
        kube_call_cancel(j->call);
        j->call = NULL;
        if (j->timer_open)
            uv_timer_stop(&j->timer);
        /* Not a failure of the route: finish quietly, without a requeue. The
         * next leader term starts with a pass over every route anyway. */
        void (*pass)(void *, const char *, const char *) = r->hooks.pass;
        void (*drained)(void *) = r->on_drained;
        r->hooks.pass = NULL;
        r->on_drained = NULL;
        job_finish(j, true, false, 0);
        r->hooks.pass = pass;
        r->on_drained = drained;
    }
    pace_stop(r);
}

void reconciler_close(struct reconciler *r) {
    struct map_iter it;
    map_iter_init(&it, &r->jobs);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        job_close(e->value);
    map_free(&r->jobs);
    pace_close(r);
    plans_close(r);
    workqueue_close(&r->wq);
}

void reconciler_free(struct reconciler *r) {
    workqueue_free(&r->wq);
    pace_free(r);
    plans_free(r);
    struct map_iter it;
    map_iter_init(&it, &r->status);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        status_free(e->value);
    map_free(&r->status);
    map_iter_init(&it, &r->route_objs);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        objset_free(e->value);
    map_free(&r->route_objs);
    map_iter_init(&it, &r->obj_route);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        free(e->value);
    map_free(&r->obj_route);
    map_free(&r->guard.held);
    map_free(&r->guard.approved);
    backend_free_all(r);
}

/* ---- queueing routes ---- */

void reconciler_enqueue(struct reconciler *r, const char *route_id) {
    if (workqueue_add(&r->wq, route_id) < 0)
        log_error(r->log, "route %s: out of memory queueing it", route_id);
}

void reconciler_source_changed(struct reconciler *r, const char *route_id, bool live) {
    if (strcmp(route_id, KEYCACHE_CONFIRM_KEY) == 0) {
        guard_eval(r); /* a confirmation given (or taken back) */
        return;
    }
    if (strcmp(route_id, KEYCACHE_FREEZE_KEY) == 0) {
        brakes_freeze_all_changed(r);
        return;
    }
    r->guard.dirty = true;
    struct route_status *s = status_get(r, route_id);
    if (s && !s->changed_ns)
        s->changed_ns = uv_hrtime();
    if (!live) {
        reconciler_enqueue(r, route_id);
        return;
    }
    if (workqueue_add_change(&r->wq, route_id) < 0)
        log_error(r->log, "route %s: out of memory queueing it", route_id);
}

void reconciler_enqueue_all(struct reconciler *r) {
    struct map_iter it;
    map_iter_init(&it, &r->keys->routes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        reconciler_enqueue(r, e->key);
    if (r->cfg->policy != POLICY_SYNC)
        return;
    map_iter_init(&it, &r->route_objs);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        if (!map_has(&r->keys->routes, e->key))
            reconciler_enqueue(r, e->key);
}

/* ---- state ---- */

bool reconciler_idle(const struct reconciler *r) {
    return workqueue_pending(&r->wq) == 0 && workqueue_delayed(&r->wq) == 0;
}

size_t reconciler_jobs_in_flight(const struct reconciler *r) {
    return r->jobs.count;
}

const struct route_status *reconciler_status(const struct reconciler *r, const char *route_id) {
    return map_get(&r->status, route_id);
}
