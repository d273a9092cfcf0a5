/* reconcile_preview.c - what a pass for one route would write, without
 * writing it: what `canary-bridge diff`, `status` and `render` show; see
 * reconcile.h.
 *
 * A preview takes the steps of a pass (reconcile_pass.c) with a job that is
 * never queued: the same namespace allow-list, deletion guard, brakes
 * (reconcile_brakes.c: an abort's model, the max step judgement), model
 * (with the weights in force when the weights key is gone), plan of objects
 * and judgement of each live object (reconcile_write.c's refusals, merge
 * and patch), so it can not drift from what a pass does. Where a pass would
 * send a request, the preview records the object it would send; for a
 * frozen route, the object it will send once the freeze ends. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/reconcile_internal.h"

/* The pass would fail: why. 0, or -1 out of memory. */
static int preview_error(struct route_preview *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int preview_error(struct route_preview *p, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    free(p->error);
    p->error = strdup(msg);
    return p->error ? 0 : -1;
}

/* Record one object; want is taken (freed on failure), live copied. 0, or
 * -1 out of memory. */
static int preview_add(struct route_preview *p, enum obj_kind kind, const char *name,
                       enum preview_action action, const cJSON *live, cJSON *want) {
    struct preview_obj *o = realloc(p->objs, (p->n_objs + 1) * sizeof *o);
    cJSON *copy = live ? cJSON_Duplicate(live, 1) : NULL;
    if (!o || (live && !copy)) {
        if (o)
            p->objs = o;
        cJSON_Delete(copy);
        cJSON_Delete(want);
        return -1;
    }
    p->objs = o;
    o = &p->objs[p->n_objs++];
    o->kind = kind;
    snprintf(o->name, sizeof o->name, "%s", name);
    o->action = action;
    o->live = copy;
    o->want = want;
    return 0;
}

/* What write_patched would send. */
static int preview_patched(struct job *j, struct route_preview *p) {
    const cJSON *live = informer_get(j->r->inf[OBJ_INGRESSROUTE], j->ns, j->name);
    char why[2048];
    if (patched_refusal(j, live, why, sizeof why)) {
        p->missing = !live;
        return preview_error(p, "%s", why);
    }
    bool changed = false;
    cJSON *want = patched_object(j, live, &changed, why, sizeof why);
    if (!want)
        return why[0] ? preview_error(p, "%s", why) : -1;
    return preview_add(p, OBJ_INGRESSROUTE, j->name, changed ? PREVIEW_UPDATE : PREVIEW_SAME, live,
                       want);
}

/* What write_owned would send for o. */
static int preview_owned(struct job *j, const struct job_obj *o, struct route_preview *p) {
    const cJSON *live = informer_get(j->r->inf[o->kind], j->ns, o->name);
    if (!live) {
        p->missing |= o->kind == OBJ_INGRESSROUTE;
        cJSON *want = cJSON_Duplicate(o->desired, 1);
        return want ? preview_add(p, o->kind, o->name, PREVIEW_CREATE, NULL, want) : -1;
    }
    char why[2048];
    if (owned_refusal(j, o, live, why, sizeof why))
        return preview_error(p, "%s", why);
    bool changed = false;
    cJSON *want = traefik_merge_owned(live, o->desired, &changed);
    if (!want)
        return -1;
    return preview_add(p, o->kind, o->name, changed ? PREVIEW_UPDATE : PREVIEW_SAME, live, want);
}

/* What write_delete would delete. */
static int preview_prunes(struct job *j, struct route_preview *p) {
    struct reconciler *r = j->r;
    if (plan_prunes(j) < 0)
        return -1;
    for (size_t i = 0; i < j->n_dels; i++) {
        const struct job_obj *o = &j->dels[i];
        const cJSON *live = informer_get(r->inf[o->kind], j->ns, o->name);
        if (!owned_here(r, live) || other_route(live, j->name))
            continue;
        if (preview_add(p, o->kind, o->name, PREVIEW_DELETE, live, NULL) < 0)
            return -1;
    }
    return 0;
}

/* The steps of pass_begin and job_next, judged but not taken. */
static int preview_pass(struct job *j, struct model_input *in, struct route_preview *p) {
    struct reconciler *r = j->r;
    if (!namespace_allowed(r->cfg, j->ns))
        return p->has_keys ? preview_error(p, "namespace %s is not in reconcile.namespaces", j->ns)
                           : 0;
    if (!p->has_keys && guard_holds(r, j->id)) {
        p->held = true;
        return 0;
    }
    brakes_read(j);
    p->brake = j->brake;
    snprintf(p->brake_reason, sizeof p->brake_reason, "%s",
             j->brake == BRAKE_ABORTED  ? j->brakes.abort_reason
             : j->brake == BRAKE_FROZEN ? j->brakes.freeze_reason
                                        : "");
    in->allow_cross_namespace = r->cfg->allow_cross_namespace;
    struct model_weight *held = NULL;
    char err[1024];
    char *step = NULL;
    if (p->has_keys)
        weights_in_force(r, j, in, &held);
    int rc = p->has_keys && plan_weights(j, in, &step, false, err, sizeof err) < 0 ? -1
             : p->has_keys ? model_build(in, &j->model, err, sizeof err)
                           : 1;
    free(held);
    free(step);
    if (rc < 0)
        return preview_error(p, "%s", err);
    if (rc == 0) {
        j->has_model = true;
        if (plan_writes(j) < 0)
            return -1;
    }
    /* Frozen, a pass plans but writes nothing: what it plans is the change
     * that waits, judged the same way; max step is judged when it goes. */
    int refused = rc == 0 && j->brake != BRAKE_FROZEN ? brakes_step_refusal(j, err, sizeof err) : 0;
    if (refused != 0)
        return refused < 0 ? -1 : preview_error(p, "%s", err);
    if (rc > 0 && j->brake == BRAKE_ABORTED)
        return preview_error(p, "the route has neither a route nor a weights key: there is no "
                                "first service to send its traffic to; the objects stay as they "
                                "are");
    for (size_t i = 0; i < j->n_objs; i++) {
        int ret = j->patched ? preview_patched(j, p) : preview_owned(j, &j->objs[i], p);
        if (ret < 0 || p->error)
            return ret; /* the pass ends at its first failure */
    }
    return preview_prunes(j, p);
}

int reconciler_preview(struct reconciler *r, const char *route_id, struct route_preview *p) {
    memset(p, 0, sizeof *p);
    size_t idlen = strlen(route_id);
    struct job *j = calloc(1, sizeof *j + idlen + 1);
    if (!j)
        return -1;
    memcpy(j->id, route_id, idlen + 1);
    j->r = r;
    struct model_input in;
    p->has_keys = keycache_input(r->keys, route_id, &in, j->ns, j->name);
    p->revision = j->revision = in.revision;
    int ret = preview_pass(j, &in, p);
    p->patched = j->patched;
    if (j->has_model) { /* the model moves to the preview */
        p->model = j->model;
        p->has_model = true;
        j->has_model = false;
    }
    job_close(j); /* never queued, no request, no timer: freed at once */
    if (ret < 0)
        reconciler_preview_free(p);
    return ret;
}

void reconciler_preview_free(struct route_preview *p) {
    for (size_t i = 0; i < p->n_objs; i++) {
        cJSON_Delete(p->objs[i].live);
        cJSON_Delete(p->objs[i].want);
    }
    free(p->objs);
    free(p->error);
    if (p->has_model)
        model_route_free(&p->model);
    memset(p, 0, sizeof *p);
}
