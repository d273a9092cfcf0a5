/* reconcile_backends.c - a service gets weight only when it can serve; see
 * reconcile.h (reconciler.backends) and sinks/backends.h (the checks).
 *
 * One step of a pass, between building the route's model and planning its
 * writes (backend_gate): every service the route gives a weight above 0 is
 * a "use" (its namespace, name, port and kind; in patched mode read from
 * the live IngressRoute, whose entries may be TraefikService references).
 * A use whose weight goes up (from what the live objects give it now,
 * 0 for a new route) must pass its check: the Service exists, exposes the
 * port and (reconcile.require_ready_endpoints) has a ready endpoint; a
 * TraefikService must exist. One that fails refuses the whole change: the
 * route fails with the checks' words and nothing is written, so the last
 * good objects stay. A namespace not listed yet makes the route wait (its
 * listing queues it again) rather than fail.
 *
 * Weights already in force are never changed here: a service that carries
 * weight and can no longer serve is reported (hooks.backend, a
 * BackendNotReady Event, the status warning) and left to the person.
 *
 * The routes' uses also decide what is watched: a namespace is added to the
 * backends module when its first use appears and removed with its last; with
 * more than RECONCILE_BACKEND_NAMESPACES namespaces in use and no
 * reconcile.namespaces list, one cluster-wide watch replaces them. An index
 * from "<ns>/<service>" to the routes using it turns a change callback into
 * the few routes concerned: a waiting one is queued at once (watch-driven;
 * only a route waiting for a listing that fails is also retried on a timer,
 * to say why), the others are re-checked and reported. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/reconcile_internal.h"
#include "bridge/lib/backoff.h"
#include "bridge/lib/buf.h"

/* One service a route gives a weight above 0. */
struct backend_use {
    enum backend_kind kind;
    long weight;                  /* the route's, after this pass */
    bool raised;                  /* above what the live objects give it now: must pass the check */
    bool unready;                 /* reported: it carries weight and cannot serve */
    const char *ns, *name, *port; /* in text */
    char *text;                   /* "<ns>\0<name>\0<port>\0", one allocation */
};

/* What the last pass of a route found. */
struct route_backends {
    struct backend_use *v;
    size_t n;
    bool waiting; /* refused or waiting for a listing: a change queues the route */
};

static void rb_free(struct route_backends *rb) {
    for (size_t i = 0; rb && i < rb->n; i++)
        free(rb->v[i].text);
    if (rb)
        free(rb->v);
    free(rb);
}

static bool same_use(const struct backend_use *a, const struct backend_use *b) {
    return a->kind == b->kind && strcmp(a->ns, b->ns) == 0 && strcmp(a->name, b->name) == 0 &&
           strcmp(a->port, b->port) == 0;
}

static int use_add(struct route_backends *rb, enum backend_kind kind, const char *ns,
                   const char *name, const char *port, long weight, long live) {
    struct backend_use u = {.kind = kind, .weight = weight, .raised = weight > live};
    port = port ? port : "";
    u.ns = ns;
    u.name = name;
    u.port = port;
    for (size_t i = 0; i < rb->n; i++) {
        if (same_use(&rb->v[i], &u)) {
            rb->v[i].raised |= u.raised;
            return 0;
        }
    }
    size_t nl = strlen(ns) + 1, ml = strlen(name) + 1, pl = strlen(port) + 1;
    struct backend_use *v = realloc(rb->v, (rb->n + 1) * sizeof *v);
    if (v)
        rb->v = v;
    if (!v || !(u.text = malloc(nl + ml + pl)))
        return -1;
    memcpy(u.text, ns, nl);
    memcpy(u.text + nl, name, ml);
    memcpy(u.text + nl + ml, port, pl);
    u.ns = u.text;
    u.name = u.text + nl;
    u.port = u.text + nl + ml;
    rb->v[rb->n++] = u;
    return 0;
}

/* ---- the live objects ---- */

static const cJSON *field(const cJSON *o, const char *name) {
    return cJSON_GetObjectItemCaseSensitive(o, name);
}

/* "80" or "http" from a services[] entry's port. */
static void entry_port(const cJSON *e, char *out, size_t len) {
    const cJSON *p = field(e, "port");
    if (cJSON_IsNumber(p))
        snprintf(out, len, "%ld", (long)p->valuedouble);
    else
        snprintf(out, len, "%s", cJSON_IsString(p) ? p->valuestring : "");
}

/* The entry sends to service ns/name on port. */
static bool entry_is(const cJSON *e, const char *route_ns, const char *ns, const char *name,
                     const char *port) {
    const char *en = kobj_str(e, "name", NULL), *ens = kobj_str(e, "namespace", NULL);
    char ep[64];
    entry_port(e, ep, sizeof ep);
    return en && strcmp(en, name) == 0 && strcmp(ens && *ens ? ens : route_ns, ns) == 0 &&
           strcmp(ep, port) == 0;
}

/* An entry's weight: Traefik's default is 1. */
static long entry_weight(const cJSON *e) {
    const cJSON *w = field(e, "weight");
    return cJSON_IsNumber(w) ? (long)w->valuedouble : 1;
}

/* The weight service ns/name:port carries in route ns/rname now, by the live
 * objects: owned, in the weighted (last) route of its IngressRoute or in its
 * sticky TraefikService; patched, in any route of the IngressRoute (the
 * weights key sets them all). 0 when none. */
static long live_weight(struct reconciler *r, const char *route_ns, const char *rname, bool patched,
                        const char *ns, const char *name, const char *port) {
    const cJSON *ir = informer_get(r->inf[OBJ_INGRESSROUTE], route_ns, rname);
    if (!ir || (!patched && !owned_here(r, ir)))
        return 0;
    const cJSON *routes = field(field(ir, "spec"), "routes");
    long best = 0;
    const cJSON *rt, *e;
    if (patched) {
        cJSON_ArrayForEach(rt, routes) cJSON_ArrayForEach(e, field(rt, "services")) {
            if (entry_is(e, route_ns, ns, name, port) && entry_weight(e) > best)
                best = entry_weight(e);
        }
        return best;
    }
    const cJSON *svcs =
        field(cJSON_GetArrayItem(routes, cJSON_GetArraySize(routes) - 1), "services");
    const char *kind = kobj_str(cJSON_GetArrayItem(svcs, 0), "kind", NULL);
    if (kind && strcmp(kind, "TraefikService") == 0) {
        const cJSON *ts = informer_get(r->inf[OBJ_TRAEFIKSERVICE], route_ns, rname);
        svcs = owned_here(r, ts) ? field(field(field(ts, "spec"), "weighted"), "services") : NULL;
    }
    cJSON_ArrayForEach(e, svcs) {
        if (entry_is(e, route_ns, ns, name, port) && entry_weight(e) > best)
            best = entry_weight(e);
    }
    return best;
}

/* The services the route gives weight to, and how they are checked. */
static int collect_uses(struct job *j, struct route_backends *rb) {
    struct reconciler *r = j->r;
    const struct model_route *m = &j->model;
    if (m->owned) {
        for (size_t i = 0; i < m->n_services; i++) {
            const struct model_service *s = &m->services[i];
            const char *ns = s->ns ? s->ns : j->ns;
            if (s->weight <= 0)
                continue;
            long live = live_weight(r, j->ns, j->name, false, ns, s->name, s->port);
            if (use_add(rb, BACKEND_SERVICE, ns, s->name, s->port, s->weight, live) < 0)
                return -1;
        }
        return 0;
    }
    /* Patched: the IngressRoute's own entries say where the services are
     * and what they are (a missing IngressRoute or name fails the write
     * step, with its own message). */
    const cJSON *live =
        field(field(informer_get(r->inf[OBJ_INGRESSROUTE], j->ns, j->name), "spec"), "routes");
    cJSON *routes = live ? cJSON_Duplicate(live, 1) : NULL; /* live_weight reads the cache too */
    if (live && !routes)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < m->n_weights; i++) {
        const struct model_weight *w = &m->weights[i];
        const cJSON *rt, *e;
        cJSON_ArrayForEach(rt, routes) cJSON_ArrayForEach(e, field(rt, "services")) {
            const char *name = kobj_str(e, "name", NULL), *ns = kobj_str(e, "namespace", NULL);
            if (rc < 0 || w->weight <= 0 || !name || strcmp(name, w->service) != 0)
                continue;
            const char *kind = kobj_str(e, "kind", NULL);
            char port[64];
            entry_port(e, port, sizeof port);
            ns = ns && *ns ? ns : j->ns;
            long live = live_weight(r, j->ns, j->name, true, ns, name, port);
            rc = use_add(rb,
                         kind && strcmp(kind, "TraefikService") == 0 ? BACKEND_TRAEFIKSERVICE
                                                                     : BACKEND_SERVICE,
                         ns, name, port, w->weight, live);
        }
    }
    cJSON_Delete(routes);
    return rc;
}

/* ---- what is watched, and who uses what ---- */

static void ns_use(struct reconciler *r, const char *ns, int delta) {
    uintptr_t n = (uintptr_t)map_get(&r->backend_ns, ns);
    if (delta > 0) {
        if (map_put(&r->backend_ns, ns, (void *)(n + 1), NULL) < 0)
            return; /* no memory: its checks answer "not watched", the route waits */
        if (n == 0 && backends_add_namespace(r->backends, ns) < 0) /* stopping, or no memory */
            log_debug(r->log, "backend checks: not watching namespace %s", ns);
        /* Past a number of namespaces one cluster-wide watch is cheaper,
         * when the configuration allows it. */
        if (n == 0 && r->cfg->n_namespaces == 0 &&
            r->backend_ns.count > RECONCILE_BACKEND_NAMESPACES &&
            backends_watch_all(r->backends) < 0)
            log_error(r->log, "backend checks: out of memory watching all namespaces");
        return;
    }
    if (n > 1) {
        map_put(&r->backend_ns, ns, (void *)(n - 1), NULL); /* replaces: no allocation */
        return;
    }
    map_del(&r->backend_ns, ns);
    backends_remove_namespace(r->backends, ns);
}

static void index_key(const struct backend_use *u, char *key, size_t len) {
    snprintf(key, len, "%s/%s", u->ns, u->name);
}

static void index_del(struct reconciler *r, const char *id, const struct backend_use *u) {
    char key[MODEL_NS_MAX + MODEL_NAME_MAX + 2];
    index_key(u, key, sizeof key);
    struct map *set = map_get(&r->backend_index, key);
    if (!set)
        return;
    map_del(set, id);
    if (set->count == 0) {
        map_del(&r->backend_index, key);
        map_free(set);
        free(set);
    }
}

static void index_add(struct reconciler *r, const char *id, const struct backend_use *u) {
    char key[MODEL_NS_MAX + MODEL_NAME_MAX + 2];
    index_key(u, key, sizeof key);
    struct map *set = map_get(&r->backend_index, key);
    if (!set) {
        set = calloc(1, sizeof *set);
        if (!set || map_put(&r->backend_index, key, set, NULL) < 0) {
            free(set);
            return; /* best effort: a change then finds the route at its next pass */
        }
    }
    if (map_put(set, id, NULL, NULL) < 0 && set->count == 0) {
        map_del(&r->backend_index, key);
        free(set);
    }
}

/* Replace the route's record (old may be NULL; nb NULL: the route is gone).
 * New namespaces are added before old ones are dropped, so a namespace in
 * both is never re-listed. */
static void track(struct reconciler *r, const char *id, struct route_backends *old,
                  struct route_backends *nb) {
    for (size_t i = 0; nb && i < nb->n; i++)
        ns_use(r, nb->v[i].ns, +1);
    for (size_t i = 0; old && i < old->n; i++) {
        index_del(r, id, &old->v[i]);
        ns_use(r, old->v[i].ns, -1);
    }
    for (size_t i = 0; nb && i < nb->n; i++)
        index_add(r, id, &nb->v[i]);
}

/* ---- reports ---- */

/* "shop-v2" in the route's namespace, else "other/shop-v2". */
static void use_label(const char *id, const struct backend_use *u, char *out, size_t len) {
    size_t nslen = strcspn(id, "/");
    if (strlen(u->ns) == nslen && strncmp(u->ns, id, nslen) == 0)
        snprintf(out, len, "%s", u->name);
    else
        snprintf(out, len, "%s/%s", u->ns, u->name);
}

static void post_event(struct reconciler *r, const char *id, const char *type, const char *reason,
                       const char *msg) {
    char ns[MODEL_NS_MAX + 1];
    size_t nslen = strcspn(id, "/");
    if (!r->hooks.event || nslen > MODEL_NS_MAX || !id[nslen])
        return;
    memcpy(ns, id, nslen);
    ns[nslen] = '\0';
    const cJSON *ir = informer_get(r->inf[OBJ_INGRESSROUTE], ns, id + nslen + 1);
    if (ir)
        r->hooks.event(r->hooks.user, ir, type, reason, msg);
}

static void set_unready(struct reconciler *r, const char *id, struct backend_use *u, bool unready,
                        const char *msg) {
    if (u->unready == unready)
        return;
    u->unready = unready;
    char label[MODEL_NS_MAX + MODEL_NAME_MAX + 2], text[600];
    use_label(id, u, label, sizeof label);
    if (r->hooks.backend)
        r->hooks.backend(r->hooks.user, id, label, unready);
    if (!msg) /* no longer carries weight: nothing to tell */
        return;
    if (unready) {
        snprintf(text, sizeof text,
                 "%s while it carries weight %ld; the weights are left as they are", msg,
                 u->weight);
        log_warn(r->log, "route %s: %s", id, text);
        post_event(r, id, "Warning", "BackendNotReady", text);
    } else {
        snprintf(text, sizeof text, "%s can serve again (%s)", label, msg);
        log_info(r->log, "route %s: %s", id, text);
        post_event(r, id, "Normal", "BackendReady", text);
    }
}

static void set_warning(struct reconciler *r, const char *id, const char *text) {
    struct route_status *s = text ? status_get(r, id) : map_get(&r->status, id);
    if (!s || (!s->warning && !text) || (s->warning && text && strcmp(s->warning, text) == 0))
        return;
    char *copy = text ? strdup(text) : NULL;
    if (text && !copy)
        return;
    free(s->warning);
    s->warning = copy;
    if (r->hooks.status)
        r->hooks.status(r->hooks.user, id, s);
}

/* Check every service of the route that carries weight (rb's weights are
 * in force, or about to be) and report those that cannot serve. */
static void report(struct reconciler *r, const char *id, struct route_backends *rb) {
    char ns[MODEL_NS_MAX + 1];
    size_t nslen = strcspn(id, "/");
    snprintf(ns, sizeof ns, "%.*s", (int)(nslen <= MODEL_NS_MAX ? nslen : 0), id);
    buf_t warn = BUF_INIT;
    for (size_t i = 0; i < rb->n; i++) {
        struct backend_use *u = &rb->v[i];
        char msg[400];
        enum backend_result res = backends_check(r->backends, u->ns, u->name, u->port, u->kind,
                                                 r->cfg->require_ready_endpoints, msg, sizeof msg);
        if (res == BACKEND_NOT_SYNCED) { /* unknown for now: as last seen */
            if (u->unready)
                (void)buf_printf(&warn, "%s%s could not serve when last seen (%s)",
                                 warn.len ? "; " : "", u->name, msg);
            continue;
        }
        set_unready(r, id, u, !backend_result_ok(res), msg);
        if (u->unready)
            (void)buf_printf(&warn, "%s%s while it carries weight %ld", warn.len ? "; " : "", msg,
                             u->weight);
    }
    set_warning(r, id, warn.len ? warn.data : NULL);
    buf_free(&warn);
}

/* The route's record goes: its reports end. */
static void drop_record(struct reconciler *r, const char *id, struct route_backends *rb) {
    for (size_t i = 0; rb && i < rb->n; i++)
        set_unready(r, id, &rb->v[i], false, NULL);
}

/* ---- the step of a pass ---- */

#define WAIT_MIN_MS 1000
#define WAIT_MAX_MS 30000

bool backend_gate(struct job *j) {
    struct reconciler *r = j->r;
    if (!r->backends || !j->has_model)
        return false;
    struct route_backends *nb = calloc(1, sizeof *nb);
    if (!nb || collect_uses(j, nb) < 0) {
        rb_free(nb);
        job_retry(j, "out of memory checking the backends", 0);
        return true;
    }
    struct route_backends *old = map_get(&r->backend_routes, j->id);
    for (size_t i = 0; old && i < old->n; i++) { /* reports carry over */
        for (size_t k = 0; k < nb->n; k++) {
            if (same_use(&old->v[i], &nb->v[k])) {
                nb->v[k].unready = old->v[i].unready;
                old->v[i].unready = false;
            }
        }
    }
    if (map_put(&r->backend_routes, j->id, nb, NULL) < 0) {
        rb_free(nb);
        job_retry(j, "out of memory checking the backends", 0);
        return true;
    }
    track(r, j->id, old, nb);
    drop_record(r, j->id, old); /* what no longer carries weight */
    rb_free(old);

    buf_t refused = BUF_INIT;
    char waiting[600] = "";
    bool problem = false; /* a listing failed: say so in the status */
    for (size_t i = 0; i < nb->n; i++) {
        struct backend_use *u = &nb->v[i];
        char msg[400];
        enum backend_result res = backends_check(r->backends, u->ns, u->name, u->port, u->kind,
                                                 r->cfg->require_ready_endpoints, msg, sizeof msg);
        if (res == BACKEND_NOT_SYNCED && !waiting[0]) {
            snprintf(waiting, sizeof waiting, "waiting for the backend checks: %s", msg);
            problem = u->kind == BACKEND_TRAEFIKSERVICE || backends_problem(r->backends, u->ns);
        } else if (res != BACKEND_NOT_SYNCED && !backend_result_ok(res) && u->raised) {
            (void)buf_printf(&refused, "%s%s", refused.len ? "; " : "", msg);
        }
    }
    nb->waiting = refused.len || waiting[0];
    if (refused.len) {
        /* Until a Service or its endpoints change (or the keys do). */
        job_fail(j, "%s: not applied, the objects in the cluster stay as they are", refused.data);
        buf_free(&refused);
        return true;
    }
    buf_free(&refused);
    if (waiting[0]) {
        /* The listing queues the route at once; the delay is for a listing
         * that fails (its reason then shows in the status). */
        if (problem)
            status_problem(r, j->id, ROUTE_PENDING, waiting, j->revision);
        else
            log_debug(r->log, "route %s: %s", j->id, waiting);
        j->retry_in_ms = backoff_ms(workqueue_failures(&r->wq, j->id), WAIT_MIN_MS, WAIT_MAX_MS);
        job_finish(j, false, true, 0);
        return true;
    }
    report(r, j->id, nb);
    return false;
}

void backend_forget(struct reconciler *r, const char *id) {
    struct route_backends *rb = map_del(&r->backend_routes, id);
    if (!rb)
        return;
    track(r, id, rb, NULL);
    drop_record(r, id, rb);
    set_warning(r, id, NULL);
    rb_free(rb);
}

void backend_free_all(struct reconciler *r) {
    struct map_iter it;
    map_iter_init(&it, &r->backend_routes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        rb_free(e->value);
    map_free(&r->backend_routes);
    map_iter_init(&it, &r->backend_index);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        map_free(e->value);
        free(e->value);
    }
    map_free(&r->backend_index);
    map_free(&r->backend_ns);
}

/* ---- changes in the cluster ---- */

static void route_changed(struct reconciler *r, const char *id) {
    struct route_backends *rb = map_get(&r->backend_routes, id);
    if (!rb)
        return;
    if (rb->waiting)
        reconciler_enqueue(r, id);
    else if (!r->wq.paused) /* a follower reports nothing: the leader does */
        report(r, id, rb);
}

static bool key_in_ns(const char *key, const char *ns) {
    size_t n = strlen(ns);
    return strncmp(key, ns, n) == 0 && key[n] == '/';
}

void reconciler_backends_changed(void *user, const char *ns, const char *service) {
    struct reconciler *r = user;
    struct map_iter it, rit;
    if (ns && service) {
        char key[MODEL_NS_MAX + MODEL_NAME_MAX + 2];
        snprintf(key, sizeof key, "%s/%s", ns, service);
        const struct map *set = map_get(&r->backend_index, key);
        if (!set)
            return;
        map_iter_init(&rit, set);
        for (struct map_entry *e; (e = map_iter_next(&rit));)
            route_changed(r, e->key);
        return;
    }
    /* A namespace (or all) listed: every route using it. */
    map_iter_init(&it, &r->backend_index);
    for (struct map_entry *k; (k = map_iter_next(&it));) {
        if (ns && !key_in_ns(k->key, ns))
            continue;
        map_iter_init(&rit, k->value);
        for (struct map_entry *e; (e = map_iter_next(&rit));)
            route_changed(r, e->key);
    }
}
