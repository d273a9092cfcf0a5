/* app_http.c - the HTTP endpoints and the metrics they serve.
 *
 * / is the status page (app_page.c);
 * /healthz answers as long as the loop turns; /readyz says whether the bridge
 * is doing its job (first sync done, source connected, the API server
 * reachable with accepted credentials, no deletion held for a person to
 * look at); /metrics renders the registry. The registry itself lives in
 * struct app, so counters survive reloads; the reconciler and the Kubernetes
 * client feed it through the hooks below, and gauges that are cheaper to
 * compute at scrape time than to keep current are set when scraped: the
 * process_* family (bridge/lib/procstat.h) and one canary_bridge_route_state
 * series per route, whose state this file also gives the status page. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/app_internal.h"

void app_http_on_pass(void *user, const char *route_id, const char *result) {
    struct generation *g = user;
    (void)route_id;
    metric_add(g->app->bm.reconcile_total, METRIC_LABELS(result), 1);
    if (strcmp(result, "delayed") == 0)
        metric_add(g->app->bm.writes_delayed_total, NULL, 1);
}

void app_http_on_burst(void *user, bool holding, size_t changes, uint64_t held_ms) {
    struct generation *g = user;
    (void)changes;
    (void)held_ms;
    if (holding)
        metric_add(g->app->bm.burst_holds_total, NULL, 1);
    metric_set(g->app->bm.burst_holding, NULL, holding ? 1 : 0);
}

void app_http_on_propagated(void *user, const char *route_id, double seconds) {
    struct generation *g = user;
    (void)route_id;
    metric_observe(g->app->bm.propagation_seconds, METRIC_LABELS("applied"), seconds);
}

void app_http_on_kube_answer(void *user, const char *verb, long status) {
    struct generation *g = user;
    char code[16];
    snprintf(code, sizeof code, "%ld", status);
    metric_add(g->app->bm.kube_requests_total, METRIC_LABELS(verb, status ? code : "error"), 1);
    if (g->have_rec) /* an answer ends the wait of routes waiting for the API server */
        reconciler_api_answered(&g->rec, verb, status);
}

static void split_id(const char *id, char *ns, size_t nslen, const char **name) {
    const char *slash = strchr(id, '/');
    size_t n = slash ? (size_t)(slash - id) : 0;
    if (n >= nslen)
        n = nslen - 1;
    memcpy(ns, id, n);
    ns[n] = '\0';
    *name = slash ? slash + 1 : id;
}

void app_http_on_backend(void *user, const char *route_id, const char *service, bool unready) {
    struct generation *g = user;
    char ns[MODEL_NS_MAX + 1];
    const char *name;
    split_id(route_id, ns, sizeof ns, &name);
    if (unready)
        metric_set(g->app->bm.backend_unready, METRIC_LABELS(ns, name, service), 1);
    else
        metric_remove(g->app->bm.backend_unready, METRIC_LABELS(ns, name, service));
}

/* The services a route had series for are kept per route, so a pass touches
 * only its own series: removing by label prefix scans every series, and at
 * 10,000 routes that scan was half of the CPU of a full sync (perf,
 * bench/RESULTS.md). */
void app_http_export_weights(struct generation *g, const char *route_id,
                             const struct model_route *m) {
    struct bridge_metrics *bm = &g->app->bm;
    char ns[MODEL_NS_MAX + 1];
    const char *name;
    split_id(route_id, ns, sizeof ns, &name);
    size_t n = app_weight_count(m);
    double w;
    char *old = map_get(&g->weight_series, route_id);
    for (const char *o = old; o && *o; o += strlen(o) + 1) {
        size_t i = 0;
        while (i < n && strcmp(app_weight_at(m, i, &w), o) != 0)
            i++;
        if (i == n)
            metric_remove(bm->route_weight, METRIC_LABELS(ns, name, o));
    }
    size_t len = 1;
    for (size_t i = 0; i < n; i++) {
        const char *svc = app_weight_at(m, i, &w);
        metric_set(bm->route_weight, METRIC_LABELS(ns, name, svc), w);
        len += strlen(svc) + 1;
    }
    char *packed = n ? malloc(len) : NULL;
    if (packed) {
        char *p = packed;
        for (size_t i = 0; i < n; i++) {
            const char *svc = app_weight_at(m, i, &w);
            size_t l = strlen(svc) + 1;
            memcpy(p, svc, l);
            p += l;
        }
        *p = '\0';
        void *prev = NULL;
        if (map_put(&g->weight_series, route_id, packed, &prev) == 0) {
            free(prev);
            return;
        }
        free(packed);
    }
    /* Gone, or no memory to remember the list: forget it (a later pass of
     * this route then cannot drop series of services it no longer has;
     * better than a scan at every pass). */
    free(map_del(&g->weight_series, route_id));
}

void app_http_export_plan(struct generation *g, const char *route_id, const struct plan_status *p,
                          bool stepped) {
    struct bridge_metrics *bm = &g->app->bm;
    char ns[MODEL_NS_MAX + 1];
    const char *name;
    split_id(route_id, ns, sizeof ns, &name);
    if (p)
        metric_set(bm->plan_step, METRIC_LABELS(ns, name), (double)(p->step + 1));
    else
        metric_remove(bm->plan_step, METRIC_LABELS(ns, name));
    if (stepped)
        metric_add(bm->plan_steps_total, NULL, 1);
}

void app_http_export_brakes(struct generation *g, const char *route_id,
                            const struct route_status *st) {
    struct bridge_metrics *bm = &g->app->bm;
    char ns[MODEL_NS_MAX + 1];
    const char *name;
    split_id(route_id, ns, sizeof ns, &name);
    /* A series only while braked: one per route would be 10,000 zeros. */
    if (st && st->brake == BRAKE_FROZEN)
        metric_set(bm->route_frozen, METRIC_LABELS(ns, name), 1);
    else
        metric_remove(bm->route_frozen, METRIC_LABELS(ns, name));
    if (st && st->brake == BRAKE_ABORTED)
        metric_set(bm->route_aborted, METRIC_LABELS(ns, name), 1);
    else
        metric_remove(bm->route_aborted, METRIC_LABELS(ns, name));
}

void app_http_free(struct generation *g) {
    struct map_iter it;
    map_iter_init(&it, &g->weight_series);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        free(e->value);
    map_free(&g->weight_series);
    map_iter_init(&it, &g->route_seen);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        free(e->value);
    map_free(&g->route_seen);
    /* The next generation (a reload) sets them again at its first scrape,
     * without the routes that went meanwhile. */
    metric_remove_prefix(g->app->bm.route_state, NULL);
}

/* ---- routes as /metrics and the status page show them ---- */

static struct app_route_seen *route_seen(struct generation *g, const char *route_id) {
    struct app_route_seen *r = map_get(&g->route_seen, route_id);
    if (r || !(r = calloc(1, sizeof *r)))
        return r;
    if (map_put(&g->route_seen, route_id, r, NULL) < 0) {
        free(r);
        return NULL;
    }
    return r;
}

static void drop_state_series(struct generation *g, const char *route_id, const char *state) {
    char ns[MODEL_NS_MAX + 1];
    const char *name;
    split_id(route_id, ns, sizeof ns, &name);
    metric_remove(g->app->bm.route_state, METRIC_LABELS(ns, name, state));
}

void app_http_route_changed(struct generation *g, const char *route_id,
                            const struct route_status *st) {
    if (!st) {
        struct app_route_seen *r = map_del(&g->route_seen, route_id);
        if (r && r->state)
            drop_state_series(g, route_id, r->state);
        free(r);
        return;
    }
    struct app_route_seen *r = route_seen(g, route_id);
    struct timespec ts;
    if (r && clock_gettime(CLOCK_REALTIME, &ts) == 0)
        r->changed = (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *app_route_state(struct generation *g, const char *route_id,
                            const struct route_status **st) {
    *st = g->have_rec ? reconciler_status(&g->rec, route_id) : NULL;
    if (g->have_rec && map_has(&g->rec.guard.held, route_id))
        return "held";
    if (keycache_leaf_errors(&g->keys, route_id, NULL, 0))
        return "error"; /* a mistyped key: what the status key says too */
    if (!*st)
        return "pending";
    if ((*st)->fighting)
        return "fighting";
    if ((*st)->brake == BRAKE_ABORTED)
        return "aborted";
    if ((*st)->brake == BRAKE_FROZEN)
        return "frozen";
    return (*st)->state == ROUTE_APPLIED ? "applied"
           : (*st)->state == ROUTE_ERROR ? "error"
                                         : "pending";
}

static void each_route_with_keys_or_record(struct generation *g,
                                           void (*cb)(struct generation *g, const char *route_id,
                                                      void *user),
                                           void *user) {
    struct map_iter it;
    map_iter_init(&it, &g->keys.routes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        cb(g, e->key, user);
    if (!g->have_rec)
        return;
    /* Routes whose keys are gone but that still have a record. */
    map_iter_init(&it, &g->rec.status);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        if (!map_has(&g->keys.routes, e->key))
            cb(g, e->key, user);
    map_iter_init(&it, &g->rec.guard.held);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        if (!map_has(&g->keys.routes, e->key) && !map_has(&g->rec.status, e->key))
            cb(g, e->key, user);
}

static bool route_known(struct generation *g, const char *route_id) {
    return map_has(&g->keys.routes, route_id) ||
           (g->have_rec &&
            (map_has(&g->rec.status, route_id) || map_has(&g->rec.guard.held, route_id)));
}

void app_for_each_route(struct generation *g,
                        void (*cb)(struct generation *g, const char *route_id, void *user),
                        void *user) {
    each_route_with_keys_or_record(g, cb, user);
    /* Folders with only mistyped keys (ns/name/weight): routes that fail. A
     * folder may have several, so each is reported once. */
    struct map once = MAP_INIT;
    struct map_iter it;
    map_iter_init(&it, &g->keys.leaves);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        const char *id = e->value; /* "ns/name\0message" */
        if (route_known(g, id) || map_has(&once, id))
            continue;
        if (map_put(&once, id, NULL, NULL) == 0)
            cb(g, id, user);
    }
    map_free(&once);
}

static bool route_known_or_mistyped(struct generation *g, const char *route_id) {
    return route_known(g, route_id) || keycache_leaf_errors(&g->keys, route_id, NULL, 0) > 0;
}

/* One canary_bridge_route_state series per route, set to 1 with its state:
 * a series moves only when the state changes. */
static void export_state(struct generation *g, const char *route_id, void *user) {
    (void)user;
    const struct route_status *st;
    const char *state = app_route_state(g, route_id, &st);
    struct app_route_seen *r = route_seen(g, route_id);
    if (!r || (r->state && strcmp(r->state, state) == 0))
        return;
    if (r->state)
        drop_state_series(g, route_id, r->state);
    char ns[MODEL_NS_MAX + 1];
    const char *name;
    split_id(route_id, ns, sizeof ns, &name);
    if (metric_set(g->app->bm.route_state, METRIC_LABELS(ns, name, state), 1) == 0)
        r->state = state;
    else
        r->state = NULL;
}

static void export_route_states(struct generation *g) {
    app_for_each_route(g, export_state, NULL);
    /* Routes that went without a hook saying so (a route never passed). */
    struct map_iter it;
    map_iter_init(&it, &g->route_seen);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        if (route_known_or_mistyped(g, e->key))
            continue;
        struct app_route_seen *r = e->value;
        if (r->state)
            drop_state_series(g, e->key, r->state);
        map_del(&g->route_seen, e->key); /* allowed: the entry just returned */
        free(r);
    }
}

/* Gauges that are cheaper to compute at scrape time than to keep current. */
static void metrics_refresh(struct generation *g) {
    struct bridge_metrics *bm = &g->app->bm;
    struct procstat ps;
    (void)procstat_read(&ps); /* what it could read is exported */
    procstat_export(&bm->process, &ps);
    if (g->have_keys)
        export_route_states(g);
    if (!g->have_rec)
        return;
    size_t applied, failed, pending;
    app_count_routes(g, &applied, &failed, &pending);
    metric_set(bm->routes, METRIC_LABELS("applied"), (double)applied);
    metric_set(bm->routes, METRIC_LABELS("error"), (double)failed);
    metric_set(bm->routes, METRIC_LABELS("pending"), (double)pending);
    metric_set(bm->deletion_held, NULL, g->rec.guard.holding ? 1 : 0);
    metric_set(bm->deletion_held_routes, NULL,
               g->rec.guard.holding ? (double)g->rec.guard.gone : 0);
    if (g->rec.stats.conflicts > g->conflicts_seen) {
        metric_add(bm->conflicts_total, NULL, (double)(g->rec.stats.conflicts - g->conflicts_seen));
        g->conflicts_seen = g->rec.stats.conflicts;
    }
    if (g->rec.stats.undone > g->undone_seen) {
        metric_add(bm->undone_writes_total, NULL, (double)(g->rec.stats.undone - g->undone_seen));
        g->undone_seen = g->rec.stats.undone;
    }
    if (g->rec.stats.step_refusals > g->refusals_seen) {
        metric_add(bm->refusals_total, METRIC_LABELS("max_step"),
                   (double)(g->rec.stats.step_refusals - g->refusals_seen));
        g->refusals_seen = g->rec.stats.step_refusals;
    }
}

/* Why the Kubernetes side cannot work now, or NULL. */
static const char *kube_problem(struct generation *g) {
    const char *p = g->kube ? kube_client_problem(g->kube) : NULL;
    for (int k = 0; !p && g->have_informers && k < OBJ_NKINDS; k++)
        p = informer_problem(&g->inf[k]);
    return p;
}

static void serve_readyz(struct generation *g, struct httpd_response *res) {
    char held[512];
    if (g->have_rec && reconciler_guard_describe(&g->rec, held, sizeof held)) {
        res->status = 503; /* a person has to look: see reconcile.h */
        buf_printf(&res->body, "%s\n", held);
        return;
    }
    /* The sink counts as much as the source: a bridge that cannot reach
     * the API server, or whose credentials it refuses, is not ready. */
    const char *sink = kube_problem(g);
    bool ready = g->working && g->source_connected && !g->stopping && !sink;
    res->status = ready ? 200 : 503;
    if (ready || g->stopping || !g->working || !g->source_connected)
        buf_puts(&res->body, ready         ? "ready\n"
                             : g->stopping ? "stopping\n"
                             : !g->working ? "first sync not done\n"
                                           : "source disconnected\n");
    else
        buf_printf(&res->body, "kubernetes: %s\n", sink);
}

void app_http_serve(void *user, const char *method, const char *path, struct httpd_response *res) {
    struct generation *g = user;
    (void)method;
    if (strcmp(path, "/healthz") == 0) {
        /* Answering at all means the loop turns. */
        buf_puts(&res->body, "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        serve_readyz(g, res);
    } else if (strcmp(path, "/") == 0) {
        app_page_serve(g, res);
    } else if (strcmp(path, "/metrics") == 0) {
        metrics_refresh(g);
        res->content_type = METRICS_CONTENT_TYPE;
        if (metrics_render(g->app->metrics, &res->body) < 0) {
            res->status = 500;
            buf_reset(&res->body);
        }
    } else {
        res->status = 404;
        buf_puts(&res->body, "not found: try /, /metrics, /healthz or /readyz\n");
    }
}
