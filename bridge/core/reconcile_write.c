/* reconcile_write.c - one step of a pass: write or delete one object, and
 * judge the API's answer; see reconcile.h.
 *
 * A write compares the desired object with the live one the informer holds
 * and sends only a difference: POST when missing, PUT with the cached
 * resourceVersion otherwise (no GET on the normal path). The answer decides
 * what follows: success stores the answer in the informer (the next write
 * uses its resourceVersion) and moves the pass on; 409 means someone wrote
 * first, so the object is read again and the step retried, a bounded number
 * of times with backoff; 404 about the namespace is an error retried slowly;
 * 400/415/422 fail the route until its keys change; anything else is
 * retried. Apart from the pass (reconcile_pass.c) because this is what one
 * request does, whichever step it is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/reconcile_internal.h"
#include "bridge/lib/backoff.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/timer.h"

static void on_write(void *user, const struct kube_response *res);
static void on_delete(void *user, const struct kube_response *res);

/* ---- writing one object ---- */

/* Send the step's request; on failure the pass is finished. */
static int send_request(struct job *j, const char *method, enum obj_kind kind, const char *name,
                        const cJSON *body, kube_cb cb) {
    struct reconciler *r = j->r;
    char path[512];
    if (strcmp(method, "GET") != 0 && !pace_write(j))
        return -1; /* it waits for its write slot: the pass is finished */
    if (kube_path(path, sizeof path, r->ropts.api_group, "v1alpha1", j->ns, obj_plural[kind],
                  name) < 0) {
        job_fail(j, "object path too long");
        return -1;
    }
    j->call = body ? kube_request_json(r->kube, method, path, body, cb, j)
                   : kube_request(r->kube, method, path, NULL, NULL, 0, cb, j);
    if (!j->call) {
        job_retry(j, "could not start a Kubernetes request", 0);
        return -1;
    }
    return 0;
}

/* The live IngressRoute equals what the route wants: remember its version. */
static void note_ir_version(struct job *j, const struct job_obj *o, const cJSON *live) {
    const char *rv = kobj_str(live, "metadata", "resourceVersion");
    if (o->kind == OBJ_INGRESSROUTE)
        snprintf(j->ir_rv, sizeof j->ir_rv, "%s", rv ? rv : "");
}

bool owned_refusal(const struct job *j, const struct job_obj *o, const cJSON *live, char *why,
                   size_t whylen) {
    const struct reconciler *r = j->r;
    if (!traefik_is_managed(live)) {
        snprintf(why, whylen,
                 "%s %s/%s exists and is not managed by canary-bridge (no label %s=%s); "
                 "refusing to take it over",
                 obj_kind_name[o->kind], j->ns, o->name, TRAEFIK_LABEL_MANAGED_BY, TRAEFIK_MANAGER);
        return true;
    }
    if (!owned_here(r, live)) {
        const char *other = kobj_str(cJSON_GetObjectItemCaseSensitive(live, "metadata"),
                                     "annotations", TRAEFIK_ANNOT_PREFIX);
        snprintf(why, whylen,
                 "%s %s/%s is managed by canary-bridge from another prefix (%s: %s, ours is "
                 "%s); refusing to take it over",
                 obj_kind_name[o->kind], j->ns, o->name, TRAEFIK_ANNOT_PREFIX,
                 other ? other : "(none)", r->keys->prefix);
        return true;
    }
    const char *owner = other_route(live, j->name);
    if (owner) {
        snprintf(why, whylen,
                 "%s %s/%s belongs to route %s/%s (annotation %s); refusing to overwrite it",
                 obj_kind_name[o->kind], j->ns, o->name, j->ns, owner, RECONCILE_ROUTE_ANNOT);
        return true;
    }
    return false;
}

void write_owned(struct job *j, struct job_obj *o) {
    struct reconciler *r = j->r;
    const cJSON *live = informer_get(r->inf[o->kind], j->ns, o->name);
    if (!live) {
        if (send_request(j, "POST", o->kind, NULL, o->desired, on_write) == 0)
            r->stats.writes++;
        return;
    }
    char why[1024];
    if (owned_refusal(j, o, live, why, sizeof why)) {
        job_fail(j, "%s", why);
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
    if (changed && send_request(j, "PUT", o->kind, o->name, merged, on_write) == 0)
        r->stats.writes++;
    cJSON_Delete(merged);
    if (!changed) {
        note_ir_version(j, o, live);
        job_step_done(j);
    }
}

bool patched_refusal(const struct job *j, const cJSON *live, char *why, size_t whylen) {
    const struct reconciler *r = j->r;
    if (!live) {
        snprintf(why, whylen,
                 "IngressRoute %s/%s not found: without a route key (patched mode) the bridge "
                 "only sets weights on an existing IngressRoute",
                 j->ns, j->name);
        return true;
    }
    if (traefik_is_managed(live)) {
        /* A canary-bridge owns it (this one through a route key, or another
         * from its prefix): two writers of one object fight forever. */
        const char *owner = kobj_str(cJSON_GetObjectItemCaseSensitive(live, "metadata"),
                                     "annotations", TRAEFIK_ANNOT_PREFIX);
        snprintf(why, whylen,
                 "IngressRoute %s/%s is managed by canary-bridge from prefix %s (label %s=%s); "
                 "patched mode (weights without a route key under %s) never writes an object "
                 "a canary-bridge owns: change the weights under %s%s/ instead",
                 j->ns, j->name, owner ? owner : "(unknown)", TRAEFIK_LABEL_MANAGED_BY,
                 TRAEFIK_MANAGER, r->keys->prefix, owner ? owner : "(unknown)", j->id);
        return true;
    }
    return false;
}

cJSON *patched_object(const struct job *j, const cJSON *live, bool *changed, char *why,
                      size_t whylen) {
    cJSON *copy = cJSON_Duplicate(live, 1);
    char err[512];
    why[0] = '\0';
    if (copy && traefik_apply_weights(copy, &j->model, changed, err, sizeof err) < 0) {
        cJSON_Delete(copy);
        snprintf(why, whylen, "%s%s/weights: %s", j->r->keys->prefix, j->id, err);
        return NULL;
    }
    /* Send back what we read; resourceVersion stays as the precondition that
     * makes this write safe. managedFields are the server's bookkeeping. */
    if (copy)
        cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(copy, "metadata"),
                                                "managedFields");
    return copy;
}

void write_patched(struct job *j) {
    struct reconciler *r = j->r;
    const cJSON *live = informer_get(r->inf[OBJ_INGRESSROUTE], j->ns, j->name);
    char why[2048];
    if (patched_refusal(j, live, why, sizeof why)) {
        job_fail(j, "%s", why);
        return;
    }
    bool changed = false;
    char err[1024];
    cJSON *copy = patched_object(j, live, &changed, err, sizeof err);
    if (!copy && err[0]) {
        job_fail(j, "%s", err);
        return;
    }
    if (!copy) {
        job_retry(j, "out of memory", 0);
        return;
    }
    if (changed && fight_hold(j, &j->objs[j->step], live)) {
        cJSON_Delete(copy);
        return;
    }
    if (changed && send_request(j, "PUT", OBJ_INGRESSROUTE, j->name, copy, on_write) == 0)
        r->stats.writes++;
    if (!changed)
        note_ir_version(j, &j->objs[j->step], copy);
    cJSON_Delete(copy);
    if (!changed)
        job_step_done(j);
}

void write_delete(struct job *j, struct job_obj *o) {
    struct reconciler *r = j->r;
    const cJSON *live = informer_get(r->inf[o->kind], j->ns, o->name);
    if (!owned_here(r, live) || other_route(live, j->name)) {
        job_step_done(j); /* gone already, or no longer this route's to delete */
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
    if (send_request(j, "DELETE", o->kind, o->name, opts, on_delete) == 0)
        r->stats.deletes++;
    cJSON_Delete(opts);
}

/* ---- the answers ---- */

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
    timer_arm(&j->timer, on_retry_timer, backoff_ms(j->attempt - 1, 10, 1000), 0);
}

static void on_reread(void *user, const struct kube_response *res) {
    struct job *j = user;
    j->call = NULL;
    struct job_obj *o = job_current(j);
    struct informer *inf = j->r->inf[o->kind];
    if (res->status == 200 && res->json) {
        /* A GET is the newest version by definition: replace, don't merge. */
        informer_forget(inf, j->ns, o->name);
        informer_store(inf, res->json);
    } else if (res->status == 404) {
        informer_forget(inf, j->ns, o->name);
    } else {
        j->api_down = res->status == 0 || res->status >= 500;
        job_retry(j, "re-read after a conflict failed", res->retry_after_ms);
        return;
    }
    retry_step(j);
}

static void reread_after_conflict(struct job *j, const struct kube_response *res) {
    struct reconciler *r = j->r;
    struct job_obj *o = job_current(j);
    r->stats.conflicts++;
    j->attempt++;
    log_debug(r->log, "route %s: %s on %s %s/%s (attempt %u); re-reading", j->id,
              res->reason[0] ? res->reason : "Conflict", obj_kind_name[o->kind], j->ns, o->name,
              j->attempt);
    if (j->attempt > RECONCILE_CONFLICT_RETRIES) {
        job_retry(j, "gave up after repeated 409 Conflicts; requeued", 0);
        return;
    }
    send_request(j, "GET", o->kind, o->name, NULL, on_reread);
}

static void judge_failure(struct job *j, const struct kube_response *res) {
    struct job_obj *o = job_current(j);
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
    /* No answer, or the server's own failure: it waits for the API server
     * to answer again, not out its backoff (reconcile_pace.c). */
    j->api_down = res->status == 0 || res->status >= 500;
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
    struct job_obj *o = job_current(j);
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
    struct job_obj *o = job_current(j);
    struct informer *inf = r->inf[o->kind];
    if ((res->status == 200 || res->status == 201) && res->json) {
        informer_store(inf, res->json);
        char id[KEYCACHE_ROUTE_ID_MAX];
        object_index(r, o->kind, j->ns, o->name, res->json, id); /* not a drift: no requeue */
        const char *rv = kobj_str(res->json, "metadata", "resourceVersion");
        log_fmsg(r->log, LOG_LVL_INFO, LOG_FIELDS(.revision = j->model.revision),
                 "route %s: %s %s %s (source revision %llu, resourceVersion %s)", j->id,
                 obj_kind_name[o->kind], o->name, res->status == 201 ? "created" : "written",
                 (unsigned long long)j->model.revision, rv ? rv : "?");
        j->wrote = true;
        fight_written(j, o, res->json);
        if (o->kind == OBJ_INGRESSROUTE)
            snprintf(j->ir_rv, sizeof j->ir_rv, "%s", rv ? rv : "");
        if (o->kind == OBJ_INGRESSROUTE && r->hooks.event)
            post_applied_event(j, res->json);
        job_step_done(j);
        return;
    }
    if (res->status == 409) {
        reread_after_conflict(j, res);
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
    judge_failure(j, res);
}

static void on_delete(void *user, const struct kube_response *res) {
    struct job *j = user;
    struct reconciler *r = j->r;
    j->call = NULL;
    struct job_obj *o = job_current(j);
    if (res->status == 200 || res->status == 202 || res->status == 404) {
        informer_forget(r->inf[o->kind], j->ns, o->name);
        char id[KEYCACHE_ROUTE_ID_MAX];
        object_index(r, o->kind, j->ns, o->name, NULL, id);
        if (res->status != 404)
            log_info(r->log, "route %s: %s %s deleted (policy sync)", j->id, obj_kind_name[o->kind],
                     o->name);
        j->wrote = true;
        job_step_done(j);
        return;
    }
    if (res->status == 409) { /* precondition failed: judge the new version */
        reread_after_conflict(j, res);
        return;
    }
    judge_failure(j, res);
}
