/* reconcile.c - per-route passes from keys to live objects; see reconcile.h.
 *
 * A pass is a small state machine (struct job) driven by API answers:
 *
 *   plan -> write phase: Middlewares, TraefikService, IngressRoute (in order)
 *        -> prune phase (policy sync): IngressRoute, TraefikService,
 *           Middlewares that are no longer desired (in that order)
 *        -> finish
 *
 * Each write step compares the desired object with the cached live one and
 * writes only on a difference. Writing referenced objects first and deleting
 * them last means Traefik never sees an IngressRoute that names a missing
 * Middleware or TraefikService. */
#include "bridge/core/reconcile.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/backoff.h"
#include "bridge/lib/buf.h"

#define MAX_ONE_SHOT_TRIES 4
#define ROUTE_ID_MAX (MODEL_NS_MAX + 1 + MODEL_NAME_MAX + 1)

const char *const obj_plural[OBJ_NKINDS] = {"middlewares", "traefikservices", "ingressroutes"};
const char *const obj_kind_name[OBJ_NKINDS] = {"Middleware", "TraefikService", "IngressRoute"};

struct job_obj {
    enum obj_kind kind;
    char name[MODEL_NAME_MAX + 1];
    cJSON *desired; /* NULL: patched-mode IngressRoute, or a deletion */
};

/* The names of objects labelled as belonging to one route ("<kind>/<name>"). */
struct objset {
    size_t n, cap;
    char **keys;
};

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
    /* The IngressRoute's resourceVersion this pass wrote or found equal to
     * desired ("" none): what the status records, not whatever the cache
     * holds when the pass ends (another writer's version may be there). */
    char ir_rv[64];
    char ns[MODEL_NS_MAX + 1];
    char name[MODEL_NAME_MAX + 1];
    char id[];
};

static void job_next(struct job *j);
static void on_write(void *user, const struct kube_response *res);
static void on_delete(void *user, const struct kube_response *res);

/* ---- status bookkeeping ---- */

static struct route_status *status_get(struct reconciler *r, const char *id) {
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
    free(s);
}

/* state: ROUTE_ERROR for a problem that stays until the keys change,
 * ROUTE_PENDING for a transient one the route is retrying. */
static void status_problem(struct reconciler *r, const char *id, enum route_state state,
                           const char *msg, uint64_t rev) {
    struct route_status *s = status_get(r, id);
    r->stats.errors++;
    /* One line per new problem, not one per resync or retry. */
    if (s && s->state == state && s->message && strcmp(s->message, msg) == 0 &&
        s->revision == rev) {
        log_debug(r->log, "route %s: still failing: %s", id, msg);
        return;
    }
    log_msg(r->log, state == ROUTE_ERROR ? LOG_LVL_ERROR : LOG_LVL_WARN, "route %s: %s%s", id, msg,
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
            r->hooks.event(r->hooks.user, live, "Warning", "RouteFailed", msg);
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

static void status_applied(struct reconciler *r, struct job *j, const char *rv) {
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
    bool changed = s->weights_held != j->model.weights_held || s->state != ROUTE_APPLIED ||
                   s->revision != j->model.revision ||
                   (rv && (!s->resource_version || strcmp(rv, s->resource_version) != 0));
    if (s->state == ROUTE_ERROR)
        log_info(r->log, "route %s: recovered", j->id);
    s->state = ROUTE_APPLIED;
    s->weights_held = j->model.weights_held;
    free(s->message);
    s->message = NULL;
    s->revision = j->model.revision;
    s->simple = j->n_objs == 1 && j->objs[0].kind == OBJ_INGRESSROUTE && j->n_dels == 0;
    if (rv) {
        char *copy = strdup(rv);
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

static void status_drop(struct reconciler *r, const char *id) {
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
static bool owned_here(const struct reconciler *r, const cJSON *obj) {
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
static void object_index(struct reconciler *r, enum obj_kind kind, const char *ns, const char *name,
                         const cJSON *obj, char id[ROUTE_ID_MAX]) {
    char objkey[ROUTE_ID_MAX + 8];
    snprintf(objkey, sizeof objkey, "%d/%s/%s", (int)kind, ns, name);
    id[0] = '\0';
    if (!obj) {
        const char *was = map_get(&r->obj_route, objkey);
        if (was)
            snprintf(id, ROUTE_ID_MAX, "%s", was);
        else if (kind == OBJ_INGRESSROUTE)
            keycache_route_id(id, ROUTE_ID_MAX, ns, name);
        index_remove(r, objkey);
        return;
    }
    const char *route = route_label(obj);
    if (!route && kind == OBJ_INGRESSROUTE)
        route = name; /* an IngressRoute is its route, labelled or not */
    if (!route)
        return;
    keycache_route_id(id, ROUTE_ID_MAX, ns, route);
    if (traefik_is_managed(obj))
        index_add(r, objkey, id, kind, name);
    else
        index_remove(r, objkey);
}

/* The route named in a live object's annotation (or, for objects from before
 * the annotation, its label) when that is not route: another route's object,
 * which this route must neither write nor delete. NULL when it is ours or
 * carries no route at all. */
static const char *other_route(const cJSON *live, const char *route) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(live, "metadata");
    const char *full = kobj_str(meta, "annotations", RECONCILE_ROUTE_ANNOT);
    if (full)
        return strcmp(full, route) == 0 ? NULL : full;
    const char *label = kobj_str(meta, "labels", RECONCILE_ROUTE_LABEL);
    if (!label)
        return NULL;
    char *mine = traefik_shorten(route, LABEL_VALUE_MAX);
    bool same = mine && strcmp(mine, label) == 0;
    free(mine);
    return same ? NULL : label;
}

static void object_changed(struct reconciler *r, enum obj_kind kind, const char *ns,
                           const char *name, const cJSON *obj) {
    char id[ROUTE_ID_MAX];
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
    object_changed(user, OBJ_TRAEFIKSERVICE, ns, name, obj);
}

void reconciler_ingressroute_changed(void *user, const char *ns, const char *name,
                                     const cJSON *obj) {
    object_changed(user, OBJ_INGRESSROUTE, ns, name, obj);
}

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

static void on_timer_closed(uv_handle_t *h) {
    job_free(h->data);
}

/* End the pass. retry: requeue with backoff (delay_ms > 0 overrides it). */
static void job_finish(struct job *j, bool ok, bool retry, uint64_t delay_ms) {
    struct reconciler *r = j->r;
    map_del(&r->jobs, j->id);
    if (r->one_shot && retry && workqueue_failures(&r->wq, j->id) + 1 >= MAX_ONE_SHOT_TRIES) {
        retry = false; /* `sync` must end: report this route as failed */
        ok = false;
    }
    if (r->one_shot && !ok && !retry)
        r->one_shot_failed++;
    if (r->hooks.pass)
        r->hooks.pass(r->hooks.user, j->id,
                      ok                    ? (j->wrote ? "applied" : "unchanged")
                      : retry && !j->failed ? "retry"
                                            : "error");
    if (retry && j->retry_in_ms)
        workqueue_done_in(&r->wq, j->id, j->retry_in_ms);
    else if (retry && delay_ms)
        workqueue_done_after(&r->wq, j->id, delay_ms);
    else
        workqueue_done(&r->wq, j->id, retry);
    if (j->timer_open)
        uv_close((uv_handle_t *)&j->timer, on_timer_closed);
    else
        job_free(j);
    if (r->on_drained && reconciler_idle(r))
        r->on_drained(r->user);
}

static void job_fail(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_fail(struct job *j, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    status_problem(j->r, j->id, ROUTE_ERROR, msg, j->revision);
    job_finish(j, false, false, 0);
}

/* A transient failure: record it and requeue with backoff. */
static void job_retry(struct job *j, const char *msg, uint64_t delay_ms) {
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
    char *value = traefik_shorten(route, LABEL_VALUE_MAX);
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
static int plan_writes(struct job *j) {
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
    if (m->sticky.enabled) {
        cJSON *ts = traefik_render_traefikservice(m, &r->ropts);
        if (!ts || plan_add(j, OBJ_TRAEFIKSERVICE, j->name, ts) < 0)
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

/* Policy sync: objects labelled for this route, owned from our prefix, that
 * the route no longer wants; IngressRoute first, so nothing still references
 * a TraefikService or Middleware when it goes. */
static int plan_prunes(struct job *j) {
    struct reconciler *r = j->r;
    if (r->cfg->policy != POLICY_SYNC || j->patched)
        return 0;
    const struct objset *set = map_get(&r->route_objs, j->id);
    for (int kind = OBJ_INGRESSROUTE; kind >= 0; kind--) {
        for (size_t i = 0; set && i < set->n; i++) {
            if (set->keys[i][0] - '0' != kind)
                continue;
            const char *name = set->keys[i] + 2;
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

/* ---- writing one object ---- */

static bool start_call(struct job *j, const char *method, enum obj_kind kind, const char *name,
                       const cJSON *body, kube_cb cb) {
    struct reconciler *r = j->r;
    char path[512];
    if (kube_path(path, sizeof path, r->ropts.api_group, "v1alpha1", j->ns, obj_plural[kind],
                  name) < 0) {
        job_fail(j, "object path too long");
        return false;
    }
    j->call = body ? kube_request_json(r->kube, method, path, body, cb, j)
                   : kube_request(r->kube, method, path, NULL, NULL, 0, cb, j);
    if (!j->call) {
        job_retry(j, "could not start a Kubernetes request", 0);
        return false;
    }
    return true;
}

static void step_done(struct job *j) {
    j->attempt = 0;
    if (j->pruning)
        j->del_step++;
    else
        j->step++;
    job_next(j);
}

/* ---- two writers ---- */

/* Remember our write of o (its answer is res_obj) for fight_hold to judge. */
static void fight_written(struct job *j, const struct job_obj *o, const cJSON *res_obj) {
    struct route_status *s = status_get(j->r, j->id);
    const char *rv = kobj_str(res_obj, "metadata", "resourceVersion");
    char key[16 + MODEL_NAME_MAX];
    snprintf(key, sizeof key, "%d/%s", (int)o->kind, o->name);
    if (!s || !rv)
        return;
    char *k = strdup(key), *v = strdup(rv);
    if (!k || !v) {
        free(k);
        free(v);
        return; /* this write goes unjudged: a fight is noticed one write later */
    }
    free(s->written_key);
    free(s->written_rv);
    s->written_key = k;
    s->written_rv = v;
    s->written_revision = j->model.revision;
    s->written_ms = uv_now(j->r->loop);
}

static void fight_off(struct reconciler *r, const char *id, struct route_status *s,
                      const char *why) {
    s->undone = 0;
    if (!s->fighting)
        return;
    s->fighting = false;
    log_info(r->log, "route %s: %s; writing at normal speed again", id, why);
    free(s->rival);
    s->rival = NULL;
    /* The state stays as it was until this pass ends (applied or an error). */
}

/* "another writer ... keeps undoing": constant while the fight lasts, so
 * the status is written and the Event posted as one series, not per write. */
static void fight_message(const struct job *j, const struct job_obj *o, const char *rival,
                          char *out, size_t outlen) {
    const char *me = j->r->field_manager ? j->r->field_manager : "canary-bridge";
    bool same = strcmp(rival, me) == 0;
    snprintf(out, outlen,
             "another writer, field manager \"%s\"%s, keeps undoing this bridge's writes to "
             "%s %s/%s (this bridge writes as \"%s\"): two bridges on prefix %s with different "
             "sources or settings? Writing at most once per backoff period (up to %d s) until "
             "they agree",
             rival,
             same ? " (the same name as this bridge's: give each bridge its own "
                    "kubernetes.field_manager)"
                  : "",
             obj_kind_name[o->kind], j->ns, o->name, me, j->r->keys->prefix,
             RECONCILE_FIGHT_MAX_MS / 1000);
}

/* Two writers that disagree about an object (two bridges on one prefix with
 * different sources or settings, or a controller that reverts us) would each
 * rewrite it as fast as the API server answers, forever. So each write of
 * ours is judged once, by the next pass that finds the object differing
 * again: if it changed since (its resourceVersion moved on) while our keys
 * did not, within RECONCILE_FIGHT_WINDOW_MS, someone undid it (the
 * managedFields name who). After RECONCILE_FIGHT_UNDOS in a row the route
 * writes at most once per backoff period, doubling, says so once (log,
 * status, an Event counted per undone write) and counts every undone write.
 * A change of the route's keys ends it, as does a write that is not undone.
 * Returns true when this write must wait: the pass is then finished. */
static bool fight_hold(struct job *j, const struct job_obj *o, const cJSON *live) {
    struct reconciler *r = j->r;
    struct route_status *s = status_get(r, j->id);
    if (!s)
        return false;
    uint64_t now = uv_now(r->loop);
    char key[16 + MODEL_NAME_MAX];
    snprintf(key, sizeof key, "%d/%s", (int)o->kind, o->name);
    if (s->written_rv && s->written_key && strcmp(s->written_key, key) == 0) {
        const char *rv = kobj_str(live, "metadata", "resourceVersion");
        bool undone = rv && strcmp(rv, s->written_rv) != 0 &&
                      s->written_revision == j->model.revision &&
                      now - s->written_ms < RECONCILE_FIGHT_WINDOW_MS;
        free(s->written_rv);
        s->written_rv = NULL;
        if (!undone) {
            fight_off(r, j->id, s, "its last write was not undone");
        } else {
            const char *who = informer_writer(r->inf[o->kind], j->ns, o->name);
            char *rival = strdup(who ? who : "(unknown)");
            s->undone++;
            r->stats.undone++;
            log_debug(r->log, "route %s: our write to %s %s/%s was undone by %s (%u in a row)",
                      j->id, obj_kind_name[o->kind], j->ns, o->name, who ? who : "(unknown)",
                      s->undone);
            bool renamed = rival && (!s->rival || strcmp(rival, s->rival) != 0);
            if (rival) {
                free(s->rival);
                s->rival = rival;
            }
            if (s->undone >= RECONCILE_FIGHT_UNDOS && s->rival) {
                char msg[1024];
                fight_message(j, o, s->rival, msg, sizeof msg);
                if (!s->fighting || renamed) {
                    log_warn(r->log, "route %s: %s", j->id, msg);
                    char *copy = strdup(msg);
                    if (copy) {
                        free(s->message);
                        s->message = copy;
                    }
                    s->state = ROUTE_ERROR;
                    s->fight_revision = j->model.revision;
                    s->fighting = true;
                    if (r->hooks.status)
                        r->hooks.status(r->hooks.user, j->id, s);
                }
                if (r->hooks.event)
                    r->hooks.event(r->hooks.user, live, "Warning", "WritesUndone", msg);
                s->fight_next_ms = now + backoff_ms(s->undone - RECONCILE_FIGHT_UNDOS,
                                                    RECONCILE_FIGHT_MIN_MS, RECONCILE_FIGHT_MAX_MS);
            }
        }
    }
    if (!s->fighting || now >= s->fight_next_ms)
        return false;
    log_debug(r->log, "route %s: holding the write to %s %s/%s for %llu ms (fought over)", j->id,
              obj_kind_name[o->kind], j->ns, o->name, (unsigned long long)(s->fight_next_ms - now));
    j->retry_in_ms = s->fight_next_ms - now;
    job_finish(j, false, true, 0);
    return true;
}

/* The live IngressRoute equals what the route wants: remember its version. */
static void ir_seen(struct job *j, const struct job_obj *o, const cJSON *live) {
    const char *rv = kobj_str(live, "metadata", "resourceVersion");
    if (o->kind == OBJ_INGRESSROUTE)
        snprintf(j->ir_rv, sizeof j->ir_rv, "%s", rv ? rv : "");
}

/* Owned object: create it, or update it if it is ours and differs. */
static void write_owned(struct job *j, struct job_obj *o) {
    struct reconciler *r = j->r;
    const cJSON *live = informer_get(r->inf[o->kind], j->ns, o->name);
    if (!live) {
        if (start_call(j, "POST", o->kind, NULL, o->desired, on_write))
            r->stats.writes++;
        return;
    }
    if (!traefik_is_managed(live)) {
        job_fail(j,
                 "%s %s/%s exists and is not managed by canary-bridge (no label %s=%s); "
                 "refusing to take it over",
                 obj_kind_name[o->kind], j->ns, o->name, TRAEFIK_LABEL_MANAGED_BY, TRAEFIK_MANAGER);
        return;
    }
    if (!owned_here(r, live)) {
        const char *other = kobj_str(cJSON_GetObjectItemCaseSensitive(live, "metadata"),
                                     "annotations", TRAEFIK_ANNOT_PREFIX);
        job_fail(j,
                 "%s %s/%s is managed by canary-bridge from another prefix (%s: %s, ours is "
                 "%s); refusing to take it over",
                 obj_kind_name[o->kind], j->ns, o->name, TRAEFIK_ANNOT_PREFIX,
                 other ? other : "(none)", r->keys->prefix);
        return;
    }
    const char *owner = other_route(live, j->name);
    if (owner) {
        job_fail(j, "%s %s/%s belongs to route %s/%s (annotation %s); refusing to overwrite it",
                 obj_kind_name[o->kind], j->ns, o->name, j->ns, owner, RECONCILE_ROUTE_ANNOT);
        return;
    }
    bool changed = false;
    cJSON *merged = traefik_merge_owned(live, o->desired, &changed);
    if (!merged) {
        job_retry(j, "out of memory", 0);
        return;
    }
    if (changed && fight_hold(j, o, live)) {
        cJSON_Delete(merged);
        return;
    }
    if (changed && start_call(j, "PUT", o->kind, o->name, merged, on_write))
        r->stats.writes++;
    cJSON_Delete(merged);
    if (!changed) {
        ir_seen(j, o, live);
        step_done(j);
    }
}

/* Patched mode: only the named weights of an existing IngressRoute. */
static void write_patched(struct job *j) {
    struct reconciler *r = j->r;
    const cJSON *live = informer_get(r->inf[OBJ_INGRESSROUTE], j->ns, j->name);
    if (!live) {
        job_fail(j,
                 "IngressRoute %s/%s not found: without a route key (patched mode) the bridge "
                 "only sets weights on an existing IngressRoute",
                 j->ns, j->name);
        return;
    }
    if (traefik_is_managed(live)) {
        /* A canary-bridge owns it (this one through a route key, or another
         * from its prefix): two writers of one object fight forever. */
        const char *owner = kobj_str(cJSON_GetObjectItemCaseSensitive(live, "metadata"),
                                     "annotations", TRAEFIK_ANNOT_PREFIX);
        job_fail(j,
                 "IngressRoute %s/%s is managed by canary-bridge from prefix %s (label %s=%s); "
                 "patched mode (weights without a route key under %s) never writes an object "
                 "a canary-bridge owns: change the weights under %s%s/ instead",
                 j->ns, j->name, owner ? owner : "(unknown)", TRAEFIK_LABEL_MANAGED_BY,
                 TRAEFIK_MANAGER, r->keys->prefix, owner ? owner : "(unknown)", j->id);
        return;
    }
    cJSON *copy = cJSON_Duplicate(live, 1);
    if (!copy) {
        job_retry(j, "out of memory", 0);
        return;
    }
    bool changed = false;
    char err[512];
    if (traefik_apply_weights(copy, &j->model, &changed, err, sizeof err) < 0) {
        cJSON_Delete(copy);
        job_fail(j, "%s%s/weights: %s", r->keys->prefix, j->id, err);
        return;
    }
    /* Send back what we read; resourceVersion stays as the precondition that
     * makes this write safe. managedFields are the server's bookkeeping. */
    cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(copy, "metadata"),
                                            "managedFields");
    if (changed && fight_hold(j, &j->objs[j->step], live)) {
        cJSON_Delete(copy);
        return;
    }
    if (changed && start_call(j, "PUT", OBJ_INGRESSROUTE, j->name, copy, on_write))
        r->stats.writes++;
    if (!changed)
        ir_seen(j, &j->objs[j->step], copy);
    cJSON_Delete(copy);
    if (!changed)
        step_done(j);
}

static void delete_owned(struct job *j, struct job_obj *o) {
    struct reconciler *r = j->r;
    const cJSON *live = informer_get(r->inf[o->kind], j->ns, o->name);
    if (!owned_here(r, live) || other_route(live, j->name)) {
        step_done(j); /* gone already, or no longer this route's to delete */
        return;
    }
    /* Preconditions: delete exactly the version we judged, nothing newer. */
    cJSON *opts = cJSON_CreateObject();
    cJSON *pre = opts ? cJSON_AddObjectToObject(opts, "preconditions") : NULL;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(live, "metadata");
    const char *uid = kobj_str(meta, "uid", NULL);
    const char *rv = kobj_str(meta, "resourceVersion", NULL);
    if (!pre || !cJSON_AddStringToObject(opts, "kind", "DeleteOptions") ||
        !cJSON_AddStringToObject(opts, "apiVersion", "v1") ||
        (uid && !cJSON_AddStringToObject(pre, "uid", uid)) ||
        (rv && !cJSON_AddStringToObject(pre, "resourceVersion", rv))) {
        cJSON_Delete(opts);
        job_retry(j, "out of memory", 0);
        return;
    }
    if (start_call(j, "DELETE", o->kind, o->name, opts, on_delete))
        r->stats.deletes++;
    cJSON_Delete(opts);
}

static void job_next(struct job *j) {
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
        delete_owned(j, &j->dels[j->del_step]);
        return;
    }
    if (j->n_objs == 0) { /* the route is gone, and so is what it owned */
        map_del(&r->guard.approved, j->id);
        status_drop(r, j->id);
        job_finish(j, true, false, 0);
        return;
    }
    status_applied(r, j, j->ir_rv[0] ? j->ir_rv : NULL);
    if (!j->wrote)
        r->stats.noops++;
    job_finish(j, true, false, 0);
}

/* ---- answers ---- */

static struct job_obj *current(struct job *j) {
    return j->pruning ? &j->dels[j->del_step] : &j->objs[j->step];
}

static void on_retry_timer(uv_timer_t *t) {
    job_next(t->data);
}

static void retry_step(struct job *j) {
    /* The first retry goes at once (the fresh read is what it needed); later
     * ones back off with jitter so two writers do not collide in lockstep. */
    if (j->attempt <= 1) {
        job_next(j);
        return;
    }
    if (!j->timer_open) {
        if (uv_timer_init(j->r->loop, &j->timer) != 0) {
            job_next(j);
            return;
        }
        j->timer.data = j;
        j->timer_open = true;
    }
    uv_timer_start(&j->timer, on_retry_timer, backoff_ms(j->attempt - 1, 10, 1000), 0);
}

static void on_reread(void *user, const struct kube_response *res) {
    struct job *j = user;
    j->call = NULL;
    struct job_obj *o = current(j);
    struct informer *inf = j->r->inf[o->kind];
    if (res->status == 200 && res->json) {
        /* A GET is the newest version by definition: replace, don't merge. */
        informer_forget(inf, j->ns, o->name);
        informer_store(inf, res->json);
    } else if (res->status == 404) {
        informer_forget(inf, j->ns, o->name);
    } else {
        job_retry(j, "re-read after a conflict failed", res->retry_after_ms);
        return;
    }
    retry_step(j);
}

static void conflict(struct job *j, const struct kube_response *res) {
    struct reconciler *r = j->r;
    struct job_obj *o = current(j);
    r->stats.conflicts++;
    j->attempt++;
    log_debug(r->log, "route %s: %s on %s %s/%s (attempt %u); re-reading", j->id,
              res->reason[0] ? res->reason : "Conflict", obj_kind_name[o->kind], j->ns, o->name,
              j->attempt);
    if (j->attempt > RECONCILE_CONFLICT_RETRIES) {
        job_retry(j, "gave up after repeated 409 Conflicts; requeued", 0);
        return;
    }
    start_call(j, "GET", o->kind, o->name, NULL, on_reread);
}

static void fail_answer(struct job *j, const struct kube_response *res) {
    struct job_obj *o = current(j);
    char what[1400];
    if (res->status == 0)
        snprintf(what, sizeof what, "Kubernetes API unreachable: %s", res->error);
    else
        snprintf(what, sizeof what, "%s %s %s/%s: HTTP %ld %s%s%.1000s",
                 j->pruning ? "deleting" : "writing", obj_kind_name[o->kind], j->ns, o->name,
                 res->status, res->reason, res->reason[0] ? ": " : "", res->message);
    /* Invalid objects stay invalid until the keys change (which requeues the
     * route); everything else (403 too: RBAC gets fixed) is worth retrying. */
    bool permanent = res->status == 400 || res->status == 422 || res->status == 415;
    if (permanent)
        job_fail(j, "%s", what);
    else
        job_retry(j, what, res->retry_after_ms);
}

/* The NamespaceLifecycle admission plugin's answer to a create in a namespace
 * that does not exist: 404 NotFound about "namespaces", not about the object
 * (message `namespaces "x" not found`). */
static bool namespace_missing(const struct kube_response *res) {
    if (res->status != 404 || !res->json)
        return false;
    const char *kind =
        kobj_str(cJSON_GetObjectItemCaseSensitive(res->json, "details"), "kind", NULL);
    return kind && strcmp(kind, "namespaces") == 0;
}

/* Nothing can be written there until someone creates the namespace, and no
 * watch tells us when: an error in the status, retried slowly (a key change
 * retries at once), one write per pass (retrying the create at once cannot
 * help). */
static void namespace_absent(struct job *j, const struct kube_response *res) {
    struct job_obj *o = current(j);
    char msg[2048];
    snprintf(msg, sizeof msg,
             "namespace %s does not exist (creating %s %s/%s: HTTP 404 %s: %.500s); create "
             "the namespace or move the route's keys; retrying after 30 s, then less often (at "
             "most every 10 min), and at once when its keys change",
             j->ns, obj_kind_name[o->kind], j->ns, o->name, res->reason, res->message);
    status_problem(j->r, j->id, ROUTE_ERROR, msg, j->revision);
    j->failed = true;
    j->retry_in_ms = backoff_ms(workqueue_failures(&j->r->wq, j->id), RECONCILE_NS_RETRY_MIN_MS,
                                RECONCILE_NS_RETRY_MAX_MS);
    job_finish(j, false, true, 0);
}

/* "weights shop-v1=90 shop-v2=10 from etcd revision 1234" */
static void post_applied_event(struct job *j, const cJSON *obj) {
    const struct model_route *m = &j->model;
    buf_t msg = BUF_INIT;
    int rc = buf_puts(&msg, "weights");
    if (m->owned)
        for (size_t i = 0; rc == 0 && i < m->n_services; i++)
            rc = buf_printf(&msg, " %s=%ld", m->services[i].name, m->services[i].weight);
    else
        for (size_t i = 0; rc == 0 && i < m->n_weights; i++)
            rc = buf_printf(&msg, " %s=%ld", m->weights[i].service, m->weights[i].weight);
    if (rc == 0)
        rc = buf_printf(&msg, " from %s revision %llu", j->r->ropts.source_name,
                        (unsigned long long)m->revision);
    if (rc == 0)
        j->r->hooks.event(j->r->hooks.user, obj, "Normal", "Applied", msg.data);
    buf_free(&msg);
}

static void on_write(void *user, const struct kube_response *res) {
    struct job *j = user;
    struct reconciler *r = j->r;
    j->call = NULL;
    struct job_obj *o = current(j);
    struct informer *inf = r->inf[o->kind];
    if ((res->status == 200 || res->status == 201) && res->json) {
        informer_store(inf, res->json);
        char id[ROUTE_ID_MAX];
        object_index(r, o->kind, j->ns, o->name, res->json, id); /* not a drift: no requeue */
        const char *rv = kobj_str(res->json, "metadata", "resourceVersion");
        log_info(r->log, "route %s: %s %s %s (source revision %llu, resourceVersion %s)", j->id,
                 obj_kind_name[o->kind], o->name, res->status == 201 ? "created" : "written",
                 (unsigned long long)j->model.revision, rv ? rv : "?");
        j->wrote = true;
        fight_written(j, o, res->json);
        if (o->kind == OBJ_INGRESSROUTE)
            snprintf(j->ir_rv, sizeof j->ir_rv, "%s", rv ? rv : "");
        if (o->kind == OBJ_INGRESSROUTE && r->hooks.event)
            post_applied_event(j, res->json);
        step_done(j);
        return;
    }
    if (res->status == 409) {
        conflict(j, res);
        return;
    }
    if (namespace_missing(res)) {
        namespace_absent(j, res);
        return;
    }
    if (res->status == 404 && strcmp(res->reason, "NotFound") == 0 &&
        ++j->attempt <= RECONCILE_CONFLICT_RETRIES) {
        /* Deleted under us: forget it and create it on the retry. */
        informer_forget(inf, j->ns, o->name);
        retry_step(j);
        return;
    }
    fail_answer(j, res);
}

static void on_delete(void *user, const struct kube_response *res) {
    struct job *j = user;
    struct reconciler *r = j->r;
    j->call = NULL;
    struct job_obj *o = current(j);
    if (res->status == 200 || res->status == 202 || res->status == 404) {
        informer_forget(r->inf[o->kind], j->ns, o->name);
        char id[ROUTE_ID_MAX];
        object_index(r, o->kind, j->ns, o->name, NULL, id);
        if (res->status != 404)
            log_info(r->log, "route %s: %s %s deleted (policy sync)", j->id, obj_kind_name[o->kind],
                     o->name);
        j->wrote = true;
        step_done(j);
        return;
    }
    if (res->status == 409) { /* precondition failed: judge the new version */
        conflict(j, res);
        return;
    }
    fail_answer(j, res);
}

/* ---- the pass ---- */

static bool namespace_allowed(const struct reconcile_settings *cfg, const char *ns) {
    if (!cfg->n_namespaces)
        return true;
    for (size_t i = 0; i < cfg->n_namespaces; i++)
        if (strcmp(cfg->namespaces[i], ns) == 0)
            return true;
    return false;
}

/* ---- the deletion guard (see reconcile.h) ---- */

static uint32_t guard_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

/* Does the route own at least one object from our prefix, in a namespace we
 * may write to? Only those routes can lose objects to a prune. */
static bool route_owns_here(struct reconciler *r, const char *id, const struct objset *set) {
    char ns[MODEL_NS_MAX + 1];
    const char *slash = strchr(id, '/');
    size_t n = slash ? (size_t)(slash - id) : 0;
    if (!slash || n > MODEL_NS_MAX)
        return false;
    memcpy(ns, id, n);
    ns[n] = '\0';
    if (!namespace_allowed(r->cfg, ns))
        return false;
    for (size_t i = 0; set && i < set->n; i++) {
        int kind = set->keys[i][0] - '0';
        if (kind >= 0 && kind < OBJ_NKINDS &&
            owned_here(r, informer_get(r->inf[kind], ns, set->keys[i] + 2)))
            return true;
    }
    return false;
}

/* P_confirm-delete holds the token (surrounding blanks and a newline are
 * fine: `echo` and editors add them). */
static bool guard_confirmed(const struct reconciler *r, uint32_t token) {
    const char *v = r->keys->confirm.data;
    if (!v)
        return false;
    char want[16];
    snprintf(want, sizeof want, "%08" PRIx32, token);
    while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')
        v++;
    size_t n = strlen(want);
    if (strncmp(v, want, n) != 0)
        return false;
    for (v += n; *v == ' ' || *v == '\t' || *v == '\n' || *v == '\r'; v++)
        ;
    return *v == '\0';
}

/* Routes that own objects here and have no key left, not yet confirmed:
 * counted into gone (and hashed into *token); every owner into owned. With
 * approve, mark each of them confirmed instead. */
static int guard_count(struct reconciler *r, size_t *gone, size_t *owned, uint32_t *token,
                       bool approve) {
    struct delete_guard *g = &r->guard;
    *gone = *owned = 0;
    *token = 0;
    struct map_iter it;
    map_iter_init(&it, &r->route_objs);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        if (!route_owns_here(r, e->key, e->value))
            continue;
        ++*owned;
        if (map_has(&r->keys->routes, e->key)) {
            map_del(&g->approved, e->key); /* back again: a later deletion asks anew */
            continue;
        }
        if (map_has(&g->approved, e->key))
            continue;
        ++*gone;
        *token += guard_hash(e->key); /* a sum: independent of the map's order */
        if (approve && map_put(&g->approved, e->key, NULL, NULL) < 0)
            return -1;
    }
    return 0;
}

static void guard_release(struct reconciler *r) {
    struct map_iter it;
    map_iter_init(&it, &r->guard.held);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        reconciler_enqueue(r, e->key);
    map_free(&r->guard.held);
}

/* A new verdict from the key cache as it is now. */
static void guard_eval(struct reconciler *r) {
    struct delete_guard *g = &r->guard;
    g->dirty = false;
    if (r->cfg->policy != POLICY_SYNC)
        return;
    size_t gone, owned;
    uint32_t token;
    if (guard_count(r, &gone, &owned, &token, false) < 0)
        return;
    unsigned pct = r->cfg->max_delete_percent;
    /* Once holding, keep holding while any route is still without keys: a
     * restore in progress must not delete the routes it has not reached. */
    bool hold = g->holding
                    ? gone > 0
                    : gone >= 2 && (gone == owned || (uint64_t)gone * 100 > (uint64_t)pct * owned);
    if (hold && guard_confirmed(r, token)) {
        if (guard_count(r, &gone, &owned, &token, true) < 0) {
            log_error(r->log, "deletion guard: out of memory recording a confirmation");
            return;
        }
        log_warn(r->log,
                 "deletion guard: %s%s confirmed; deleting the objects of the routes "
                 "whose keys are gone",
                 r->keys->prefix, KEYCACHE_CONFIRM_KEY);
        hold = false;
    }
    if (hold) {
        if (!g->holding || g->token != token || g->gone != gone)
            log_warn(r->log,
                     "deletion guard: the source's keys now lack %zu of the %zu routes that own "
                     "objects (more than reconcile.max_delete_percent %u%%%s); deleting nothing. "
                     "If that is meant, put %s%s = %08" PRIx32 "; if not, restore the keys (or "
                     "fix the source's access), and the hold ends by itself",
                     gone, owned, pct, gone == owned ? ", all of them" : "", r->keys->prefix,
                     KEYCACHE_CONFIRM_KEY, token);
        if (!g->holding)
            g->holds++;
        g->holding = true;
        g->gone = gone;
        g->owned = owned;
        g->token = token;
        return;
    }
    if (g->holding)
        log_info(r->log, "deletion guard: hold ended (%zu of %zu routes without keys now)", gone,
                 owned);
    g->holding = false;
    g->gone = 0;
    guard_release(r);
}

/* The pass for a route without keys is about to prune: may it? */
static bool guard_holds(struct reconciler *r, const char *id) {
    struct delete_guard *g = &r->guard;
    if (r->cfg->policy != POLICY_SYNC)
        return false;
    if (g->dirty)
        guard_eval(r);
    if (!g->holding || map_has(&g->approved, id) || map_has(&r->keys->routes, id) ||
        !route_owns_here(r, id, map_get(&r->route_objs, id)))
        return false;
    if (map_has(&g->held, id))
        return true;
    if (map_put(&g->held, id, NULL, NULL) < 0)
        return true; /* held all the same; only the release misses it */
    if (r->hooks.event) {
        char ns[MODEL_NS_MAX + 1], msg[512];
        const char *slash = strchr(id, '/');
        size_t n = (size_t)(slash - id) <= MODEL_NS_MAX ? (size_t)(slash - id) : 0;
        memcpy(ns, id, n);
        ns[n] = '\0';
        const cJSON *live = informer_get(r->inf[OBJ_INGRESSROUTE], ns, slash + 1);
        snprintf(msg, sizeof msg,
                 "keys gone, but so are those of %zu of %zu routes: deletion held until %s%s "
                 "= %08" PRIx32 " confirms it or the keys return",
                 g->gone, g->owned, r->keys->prefix, KEYCACHE_CONFIRM_KEY, g->token);
        if (live)
            r->hooks.event(r->hooks.user, live, "Warning", "DeletionHeld", msg);
    }
    return true;
}

bool reconciler_guard_describe(const struct reconciler *r, char *out, size_t outlen) {
    const struct delete_guard *g = &r->guard;
    if (!g->holding) {
        if (outlen)
            out[0] = '\0';
        return false;
    }
    snprintf(out, outlen,
             "deletion held: the keys of %zu of %zu routes are gone; to delete their objects put "
             "%s%s = %08" PRIx32,
             g->gone, g->owned, r->keys->prefix, KEYCACHE_CONFIRM_KEY, g->token);
    return true;
}

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
 * TraefikService's, for a sticky route); *held is the array to free. */
static void weights_in_force(struct reconciler *r, const struct job *j, struct model_input *in,
                             struct model_weight **held) {
    *held = NULL;
    const cJSON *ir = informer_get(r->inf[OBJ_INGRESSROUTE], j->ns, j->name);
    if (!in->route || in->weights || !owned_here(r, ir))
        return;
    const char *from = kobj_str(cJSON_GetObjectItemCaseSensitive(ir, "metadata"), "annotations",
                                TRAEFIK_ANNOT_WEIGHTS);
    if (!from)
        return;
    if (strcmp(from, "weights") == 0)
        in->held_doc_new = false;
    else if (strncmp(from, "held:", 5) == 0)
        in->held_doc_new = strtoull(from + 5, NULL, 10) != in->route_rev;
    else
        return;
    const cJSON *routes =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ir, "spec"), "routes");
    const cJSON *svcs = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(routes, cJSON_GetArraySize(routes) - 1), "services");
    const cJSON *first = cJSON_GetArrayItem(svcs, 0);
    const char *kind = kobj_str(first, "kind", NULL);
    if (kind && strcmp(kind, "TraefikService") == 0) {
        const cJSON *ts = informer_get(r->inf[OBJ_TRAEFIKSERVICE], j->ns, j->name);
        svcs = owned_here(r, ts)
                   ? cJSON_GetObjectItemCaseSensitive(
                         cJSON_GetObjectItemCaseSensitive(
                             cJSON_GetObjectItemCaseSensitive(ts, "spec"), "weighted"),
                         "services")
                   : NULL;
    }
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

static void process(void *user, const char *id) {
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
    int present = keycache_input(r->keys, id, &in, j->ns, j->name);
    j->revision = in.revision;
    if (!namespace_allowed(r->cfg, j->ns)) {
        if (present == 0)
            job_fail(j, "namespace %s is not in reconcile.namespaces", j->ns);
        else
            job_finish(j, true, false, 0);
        return;
    }
    if (r->guard.dirty && r->guard.holding)
        guard_eval(r); /* keys came back: the hold may end */
    if (present != 0 && guard_holds(r, id)) {
        /* The objects stay; the release requeues the route. `sync` fails. */
        if (r->one_shot)
            r->one_shot_failed++;
        job_finish(j, true, false, 0);
        return;
    }
    struct route_status *st = map_get(&r->status, id);
    if (st && st->fighting && (present != 0 || in.revision != st->fight_revision))
        fight_off(r, id, st, "its keys changed");
    if (present == 0 && unchanged_since_applied(r, j, st, in.revision)) {
        st->changed_ns = 0; /* nothing left to propagate */
        r->stats.noops++;
        job_finish(j, true, false, 0);
        return;
    }
    in.allow_cross_namespace = r->cfg->allow_cross_namespace;
    char err[1024];
    struct model_weight *held = NULL;
    if (present == 0)
        weights_in_force(r, j, &in, &held);
    int rc = present == 0 ? model_build(&in, &j->model, err, sizeof err) : 1;
    free(held);
    if (rc < 0) {
        job_fail(j, "%s", err);
        return;
    }
    if (rc == 0) {
        j->has_model = true;
        if (plan_writes(j) < 0) {
            job_retry(j, "out of memory rendering objects", 0);
            return;
        }
    }
    /* rc == 1: nothing desired. upsert-only leaves every object in place; sync
     * prunes what the route owned (a source error never gets here: only a
     * successful read changes the key cache). */
    job_next(j);
}

/* ---- public ---- */

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
    if (workqueue_init(&r->wq, loop, cfg->max_in_flight, process, r) < 0)
        return -1;
    workqueue_settle(&r->wq, RECONCILE_BURST_ROUTES, RECONCILE_BURST_REFILL_MS, cfg->burst_quiet_ms,
                     cfg->burst_hold_ms, on_burst);
    return 0;
}

void reconciler_close(struct reconciler *r) {
    struct map_iter it;
    map_iter_init(&it, &r->jobs);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        struct job *j = e->value;
        kube_call_cancel(j->call);
        j->call = NULL;
        if (j->timer_open)
            uv_close((uv_handle_t *)&j->timer, on_timer_closed);
        else
            job_free(j);
    }
    map_free(&r->jobs);
    workqueue_close(&r->wq);
}

void reconciler_free(struct reconciler *r) {
    workqueue_free(&r->wq);
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
}

void reconciler_enqueue(struct reconciler *r, const char *route_id) {
    if (workqueue_add(&r->wq, route_id) < 0)
        log_error(r->log, "route %s: out of memory queueing it", route_id);
}

void reconciler_source_changed(struct reconciler *r, const char *route_id, bool live) {
    if (strcmp(route_id, KEYCACHE_CONFIRM_KEY) == 0) {
        guard_eval(r); /* a confirmation given (or taken back) */
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

void reconciler_abort(struct reconciler *r) {
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
}

bool reconciler_idle(const struct reconciler *r) {
    return workqueue_pending(&r->wq) == 0 && workqueue_delayed(&r->wq) == 0;
}

size_t reconciler_jobs_in_flight(const struct reconciler *r) {
    return r->jobs.count;
}

const struct route_status *reconciler_status(const struct reconciler *r, const char *route_id) {
    return map_get(&r->status, route_id);
}
