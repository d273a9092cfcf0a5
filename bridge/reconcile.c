/* reconcile.c - per-route passes from keys to live objects; see reconcile.h.
 *
 * A pass is a small state machine (struct job) driven by API answers:
 *   start -> [middleware 0 .. n-1] -> ingressroute -> finish
 * Each step compares the desired object with the cached live one and writes
 * only on a difference. Middlewares go first so an IngressRoute never names a
 * Middleware that does not exist yet. */
#include "bridge/reconcile.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/backoff.h"
#include "bridge/buf.h"

#define ROUTE_LABEL "canary-bridge.io/route"
#define MAX_ONE_SHOT_TRIES 4

struct job {
    struct reconciler *r;
    struct model_route model;
    bool has_model;
    size_t step;     /* 0..n_rules-1: middleware of rule step; n_rules: the IngressRoute */
    unsigned attempt; /* conflict retries in this pass */
    struct kube_call *call;
    uv_timer_t timer; /* backoff between conflict retries */
    bool timer_open;
    const char *plural; /* of the object being written */
    char obj_name[MODEL_NAME_MAX + 1];
    bool wrote;
    char ns[MODEL_NS_MAX + 1];
    char name[MODEL_NAME_MAX + 1];
    char id[];
};

static void job_step(struct job *j);
static void on_write(void *user, const struct kube_response *res);

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

static void status_error(struct reconciler *r, const char *id, const char *msg, uint64_t rev) {
    struct route_status *s = status_get(r, id);
    r->stats.errors++;
    /* One line per new problem, not one per resync or retry. */
    if (s && s->state == ROUTE_ERROR && s->message && strcmp(s->message, msg) == 0) {
        log_debug(r->log, "route %s: still failing: %s", id, msg);
        return;
    }
    log_error(r->log, "route %s: %s", id, msg);
    if (!s)
        return;
    char *copy = strdup(msg);
    free(s->message);
    s->message = copy;
    s->state = ROUTE_ERROR;
    s->revision = rev;
}

static void status_applied(struct reconciler *r, struct job *j, const char *rv) {
    struct route_status *s = status_get(r, j->id);
    if (!s)
        return;
    if (s->state == ROUTE_ERROR)
        log_info(r->log, "route %s: recovered", j->id);
    s->state = ROUTE_APPLIED;
    free(s->message);
    s->message = NULL;
    s->revision = j->model.revision;
    if (rv) {
        char *copy = strdup(rv);
        if (copy) {
            free(s->resource_version);
            s->resource_version = copy;
        }
    }
}

/* ---- job lifetime ---- */

static void job_free(struct job *j) {
    if (j->has_model)
        model_route_free(&j->model);
    free(j);
}

static void on_timer_closed(uv_handle_t *h) { job_free(h->data); }

/* End the pass. retry: requeue with backoff (delay_ms > 0 overrides it). */
static void job_finish(struct job *j, bool ok, bool retry, uint64_t delay_ms) {
    struct reconciler *r = j->r;
    map_del(&r->jobs, j->id);
    if (r->one_shot && retry && wq_failures(&r->wq, j->id) + 1 >= MAX_ONE_SHOT_TRIES) {
        retry = false; /* `sync` must end: report this route as failed */
        ok = false;
    }
    if (r->one_shot && !ok && !retry)
        r->one_shot_failed++;
    if (retry && delay_ms)
        wq_done_after(&r->wq, j->id, delay_ms);
    else
        wq_done(&r->wq, j->id, retry);
    if (j->timer_open) {
        uv_close((uv_handle_t *)&j->timer, on_timer_closed);
    } else {
        job_free(j);
    }
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
    status_error(j->r, j->id, msg, j->has_model ? j->model.revision : 0);
    job_finish(j, false, false, 0);
}

/* ---- writing one object ---- */

static struct informer *informer_for(struct reconciler *r, const char *plural) {
    return strcmp(plural, "middlewares") == 0 ? r->middlewares : r->routes;
}

static bool start_write(struct job *j, const char *method, const cJSON *obj) {
    struct reconciler *r = j->r;
    char path[512];
    bool create = strcmp(method, "POST") == 0;
    if (kube_path(path, sizeof path, r->ropts.api_group, "v1alpha1", j->ns, j->plural,
                  create ? NULL : j->obj_name) < 0) {
        job_fail(j, "object path too long");
        return false;
    }
    j->call = kube_request_json(r->kube, method, path, obj, on_write, j);
    if (!j->call) {
        status_error(r, j->id, "could not start a Kubernetes request", j->model.revision);
        job_finish(j, false, true, 0);
        return false;
    }
    r->stats.writes++;
    j->wrote = true;
    return true;
}

/* Owned object: create it, or update it if it is ours and differs. */
static void write_owned(struct job *j, cJSON *desired) {
    struct informer *inf = informer_for(j->r, j->plural);
    const cJSON *live = informer_get(inf, j->ns, j->obj_name);
    if (!live) {
        start_write(j, "POST", desired);
        cJSON_Delete(desired);
        return;
    }
    if (!traefik_is_managed(live)) {
        cJSON_Delete(desired);
        job_fail(j,
                 "%s %s/%s exists and is not managed by canary-bridge (no label %s=%s); "
                 "refusing to take it over",
                 strcmp(j->plural, "middlewares") == 0 ? "Middleware" : "IngressRoute", j->ns,
                 j->obj_name, TRAEFIK_LABEL_MANAGED_BY, TRAEFIK_MANAGER);
        return;
    }
    bool changed = false;
    cJSON *merged = traefik_merge_owned(live, desired, &changed);
    cJSON_Delete(desired);
    if (!merged) {
        status_error(j->r, j->id, "out of memory", j->model.revision);
        job_finish(j, false, true, 0);
        return;
    }
    if (changed)
        start_write(j, "PUT", merged);
    cJSON_Delete(merged);
    if (!changed) {
        j->step++;
        job_step(j);
    }
}

/* Patched mode: only the named weights of an existing IngressRoute. */
static void write_patched(struct job *j) {
    const cJSON *live = informer_get(j->r->routes, j->ns, j->name);
    if (!live) {
        job_fail(j,
                 "IngressRoute %s/%s not found: without a route key (patched mode) the bridge "
                 "only sets weights on an existing IngressRoute",
                 j->ns, j->name);
        return;
    }
    cJSON *copy = cJSON_Duplicate(live, 1);
    if (!copy) {
        status_error(j->r, j->id, "out of memory", j->model.revision);
        job_finish(j, false, true, 0);
        return;
    }
    bool changed = false;
    char err[512];
    if (traefik_apply_weights(copy, &j->model, &changed, err, sizeof err) < 0) {
        cJSON_Delete(copy);
        job_fail(j, "%s%s/weights: %s", j->r->keys->prefix, j->id, err);
        return;
    }
    /* Send what we read minus server-managed bookkeeping; resourceVersion
     * stays: it is the precondition that makes this write safe. */
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(copy, "metadata");
    cJSON_DeleteItemFromObjectCaseSensitive(meta, "managedFields");
    if (changed)
        start_write(j, "PUT", copy);
    cJSON_Delete(copy);
    if (!changed) {
        j->step++;
        job_step(j);
    }
}

static void add_route_label(cJSON *obj, const char *name) {
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    cJSON *labels = cJSON_GetObjectItemCaseSensitive(meta, "labels");
    if (!labels)
        labels = cJSON_AddObjectToObject(meta, "labels");
    if (labels && !cJSON_GetObjectItemCaseSensitive(labels, ROUTE_LABEL))
        cJSON_AddStringToObject(labels, ROUTE_LABEL, name);
}

static void job_step(struct job *j) {
    struct reconciler *r = j->r;
    struct model_route *m = &j->model;
    /* Middlewares of rules that set headers, before anything references them. */
    while (m->owned && j->step < m->n_rules) {
        cJSON *mw = traefik_render_middleware(m, j->step, &r->ropts);
        if (!mw) {
            j->step++;
            continue;
        }
        char *mwname = traefik_middleware_name(m, j->step);
        if (!mwname) {
            cJSON_Delete(mw);
            status_error(r, j->id, "out of memory", m->revision);
            job_finish(j, false, true, 0);
            return;
        }
        snprintf(j->obj_name, sizeof j->obj_name, "%s", mwname);
        free(mwname);
        j->plural = "middlewares";
        add_route_label(mw, j->name);
        write_owned(j, mw);
        return;
    }
    if (j->step > m->n_rules || (!m->owned && j->step > 0)) {
        const cJSON *live = informer_get(r->routes, j->ns, j->name);
        status_applied(r, j, live ? kobj_str(live, "metadata", "resourceVersion") : NULL);
        if (!j->wrote)
            r->stats.noops++;
        job_finish(j, true, false, 0);
        return;
    }
    j->plural = "ingressroutes";
    snprintf(j->obj_name, sizeof j->obj_name, "%s", j->name);
    if (!m->owned) {
        j->step = m->n_rules; /* patched mode has no rules */
        write_patched(j);
        return;
    }
    cJSON *ir = traefik_render_ingressroute(m, &r->ropts);
    if (!ir) {
        status_error(r, j->id, "out of memory", m->revision);
        job_finish(j, false, true, 0);
        return;
    }
    write_owned(j, ir);
}

/* ---- answers ---- */

static void on_retry_timer(uv_timer_t *t) {
    struct job *j = t->data;
    job_step(j);
}

static void retry_step(struct job *j) {
    /* The first retry goes at once (the fresh read is what it needed); later
     * ones back off with jitter so two writers do not collide in lockstep. */
    if (j->attempt <= 1) {
        job_step(j);
        return;
    }
    if (!j->timer_open) {
        if (uv_timer_init(j->r->loop, &j->timer) != 0) {
            job_step(j);
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
    struct informer *inf = informer_for(j->r, j->plural);
    if (res->status == 200 && res->json) {
        /* A GET is the newest version by definition: replace, don't merge. */
        informer_forget(inf, j->ns, j->obj_name);
        informer_store(inf, res->json);
    } else if (res->status == 404) {
        informer_forget(inf, j->ns, j->obj_name);
    } else {
        status_error(j->r, j->id, "re-read after a conflict failed", j->model.revision);
        job_finish(j, false, true, res->retry_after_ms);
        return;
    }
    retry_step(j);
}

static void conflict(struct job *j, const struct kube_response *res) {
    struct reconciler *r = j->r;
    r->stats.conflicts++;
    j->attempt++;
    log_debug(r->log, "route %s: %s on %s %s/%s (attempt %u); re-reading", j->id,
              res->reason[0] ? res->reason : "Conflict", j->plural, j->ns, j->obj_name,
              j->attempt);
    if (j->attempt > RECONCILE_CONFLICT_RETRIES) {
        status_error(r, j->id, "gave up after repeated 409 Conflicts; requeued", j->model.revision);
        job_finish(j, false, true, 0);
        return;
    }
    char path[512];
    if (kube_path(path, sizeof path, r->ropts.api_group, "v1alpha1", j->ns, j->plural,
                  j->obj_name) < 0 ||
        !(j->call = kube_request(r->kube, "GET", path, NULL, NULL, 0, on_reread, j))) {
        job_finish(j, false, true, 0);
    }
}

static void on_write(void *user, const struct kube_response *res) {
    struct job *j = user;
    struct reconciler *r = j->r;
    j->call = NULL;
    struct informer *inf = informer_for(r, j->plural);
    if ((res->status == 200 || res->status == 201) && res->json) {
        informer_store(inf, res->json);
        if (strcmp(j->plural, "ingressroutes") == 0)
            log_info(r->log, "route %s: IngressRoute written (source revision %llu, "
                             "resourceVersion %s)",
                     j->id, (unsigned long long)j->model.revision,
                     kobj_str(res->json, "metadata", "resourceVersion")
                         ? kobj_str(res->json, "metadata", "resourceVersion")
                         : "?");
        else
            log_info(r->log, "route %s: Middleware %s written", j->id, j->obj_name);
        j->step++;
        j->attempt = 0;
        job_step(j);
        return;
    }
    if (res->status == 409) {
        conflict(j, res);
        return;
    }
    if (res->status == 404 && strcmp(res->reason, "NotFound") == 0) {
        /* Deleted under us: forget it and create it on the retry. */
        informer_forget(inf, j->ns, j->obj_name);
        j->attempt++;
        if (j->attempt <= RECONCILE_CONFLICT_RETRIES) {
            retry_step(j);
            return;
        }
    }
    char what[1400];
    if (res->status == 0)
        snprintf(what, sizeof what, "Kubernetes API unreachable: %s", res->error);
    else
        snprintf(what, sizeof what, "%s %s/%s: HTTP %ld %s%s%.1000s", j->plural, j->ns,
                 j->obj_name, res->status, res->reason, res->reason[0] ? ": " : "",
                 res->message);
    bool permanent = res->status == 400 || res->status == 422 || res->status == 415;
    status_error(r, j->id, what, j->model.revision);
    /* Invalid objects will stay invalid until the keys change (which
     * requeues the route); everything else is worth retrying. */
    job_finish(j, false, !permanent, res->retry_after_ms);
}

/* ---- the pass ---- */

static bool namespace_allowed(const struct config *cfg, const char *ns) {
    if (!cfg->reconcile.n_namespaces)
        return true;
    for (size_t i = 0; i < cfg->reconcile.n_namespaces; i++)
        if (strcmp(cfg->reconcile.namespaces[i], ns) == 0)
            return true;
    return false;
}

static void process(void *user, const char *id) {
    struct reconciler *r = user;
    size_t idlen = strlen(id);
    struct job *j = calloc(1, sizeof *j + idlen + 1);
    if (!j) {
        wq_done(&r->wq, id, true);
        return;
    }
    memcpy(j->id, id, idlen + 1);
    j->r = r;
    r->stats.passes++;
    if (map_put(&r->jobs, id, j, NULL) < 0) {
        free(j);
        wq_done(&r->wq, id, true);
        return;
    }
    struct model_input in;
    int present = keycache_input(r->keys, id, &in, j->ns, j->name);
    if (!namespace_allowed(r->cfg, j->ns)) {
        if (present == 0)
            job_fail(j, "namespace %s is not in reconcile.namespaces", j->ns);
        else
            job_finish(j, true, false, 0);
        return;
    }
    char err[1024];
    int rc = present == 0 ? model_build(&in, &j->model, err, sizeof err) : 1;
    if (rc < 0) {
        job_fail(j, "%s", err);
        return;
    }
    if (rc == 1) {
        /* Nothing desired. upsert-only never deletes; objects stay. */
        struct route_status *s = map_del(&r->status, id);
        if (s) {
            free(s->message);
            free(s->resource_version);
            free(s);
        }
        job_finish(j, true, false, 0);
        return;
    }
    j->has_model = true;
    job_step(j);
}

/* ---- public ---- */

int reconciler_init(struct reconciler *r, uv_loop_t *loop, struct logger *lg,
                    const struct config *cfg, struct keycache *keys, struct kube_client *kube,
                    struct informer *routes, struct informer *middlewares,
                    const struct render_opts *ropts) {
    memset(r, 0, sizeof *r);
    r->loop = loop;
    r->log = lg;
    r->cfg = cfg;
    r->keys = keys;
    r->kube = kube;
    r->routes = routes;
    r->middlewares = middlewares;
    r->ropts = *ropts;
    return wq_init(&r->wq, loop, cfg->reconcile.max_in_flight, process, r);
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
    wq_close(&r->wq);
}

void reconciler_free(struct reconciler *r) {
    wq_free(&r->wq);
    struct map_iter it;
    map_iter_init(&it, &r->status);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        struct route_status *s = e->value;
        free(s->message);
        free(s->resource_version);
        free(s);
    }
    map_free(&r->status);
}

void reconciler_enqueue(struct reconciler *r, const char *route_id) {
    if (wq_add(&r->wq, route_id) < 0)
        log_error(r->log, "route %s: out of memory queueing it", route_id);
}

void reconciler_enqueue_all(struct reconciler *r) {
    struct map_iter it;
    map_iter_init(&it, &r->keys->routes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        reconciler_enqueue(r, e->key);
}

void reconciler_object_changed(void *user, const char *ns, const char *name, const cJSON *obj) {
    struct reconciler *r = user;
    char id[MODEL_NS_MAX + MODEL_NAME_MAX + 2];
    /* Middlewares name their route in a label; IngressRoutes are the route. */
    const char *route = name;
    const cJSON *labels = obj ? cJSON_GetObjectItemCaseSensitive(
                                    cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "labels")
                              : NULL;
    const cJSON *rl = cJSON_GetObjectItemCaseSensitive(labels, ROUTE_LABEL);
    if (cJSON_IsString(rl))
        route = rl->valuestring;
    keycache_route_id(id, sizeof id, ns, route);
    if (!map_has(&r->keys->routes, id))
        return; /* not one of ours */
    /* While a pass is in flight this only marks the route dirty: one more
     * pass follows, which writes nothing if the change was our own echo. */
    reconciler_enqueue(r, id);
}

bool reconciler_idle(const struct reconciler *r) {
    return wq_pending(&r->wq) == 0 && wq_delayed(&r->wq) == 0;
}

size_t reconciler_jobs_in_flight(const struct reconciler *r) { return r->jobs.count; }
