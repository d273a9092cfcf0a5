/* app_live.c - traefik.api: the generation's confirmation in Traefik
 * (bridge/core/reconcile_live.h), and what it feeds: the status key's
 * `served`, the propagation histogram's stage="live", the counter of
 * changes an instance did not serve in time, and a NotLive Event.
 *
 * Only `run` confirms (not --dry-run: nothing it writes would ever be
 * served). Without traefik.api nothing here runs and no status field is
 * added. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bridge/app_internal.h"

static void on_changed(void *user, const char *route_id) {
    struct generation *g = user;
    if (g->leader && !g->stopping) /* a standby writes no status */
        app_status_request(g, route_id);
}

static void on_live(void *user, const char *route_id, double seconds) {
    struct generation *g = user;
    (void)route_id;
    if (seconds >= 0)
        metric_observe(g->app->bm.propagation_seconds, METRIC_LABELS("live"), seconds);
}

static void on_not_live(void *user, const char *route_id, const char *instance, const char *why) {
    struct generation *g = user;
    metric_add(g->app->bm.not_live_total, METRIC_LABELS(instance), 1);
    if (!g->events || !g->have_informers)
        return;
    char ns[MODEL_NS_MAX + 1];
    const char *slash = strchr(route_id, '/');
    if (!slash)
        return;
    snprintf(ns, sizeof ns, "%.*s", (int)(slash - route_id), route_id);
    const cJSON *ir = informer_get(&g->inf[OBJ_INGRESSROUTE], ns, slash + 1);
    if (!ir)
        return;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(ir, "metadata");
    events_post(g->events, ns, kobj_str(ir, "apiVersion", NULL), kobj_str(ir, "kind", NULL),
                kobj_str(meta, "name", NULL), kobj_str(meta, "uid", NULL), "Warning", "NotLive",
                "not served within %.3gs: %s %s (nothing rolled back)",
                (double)g->app->cfg.traefik.api.timeout_ms / 1000, instance, why);
}

int app_live_start(struct generation *g) {
    struct app *a = g->app;
    if (!traefikapi_enabled(&a->cfg.traefik.api) || a->cmd != CMD_RUN || a->dry_run)
        return 0;
    if (live_init(&g->live, &g->loop, &a->log, &a->cfg.traefik.api, g->http, g->kube) < 0)
        return -1;
    g->have_live = true;
    g->live.hooks = (struct live_hooks){on_changed, on_live, on_not_live, g};
    if (a->cfg.traefik.api.pods.namespace)
        log_info(&a->log, "traefik.api: confirming changes in the pods %s of namespace %s, port %u",
                 a->cfg.traefik.api.pods.selector, a->cfg.traefik.api.pods.namespace,
                 a->cfg.traefik.api.pods.port);
    else
        log_info(&a->log, "traefik.api: confirming changes in %zu Traefik instance(s)",
                 a->cfg.traefik.api.n_urls);
    return 0;
}

void app_live_on_propagated(void *user, const char *route_id, double seconds) {
    struct generation *g = user;
    app_http_on_propagated(user, route_id, seconds);
    /* The reconciler calls applied right after this, for the same route:
     * the confirmation it starts is timed from the same source change. */
    snprintf(g->live_origin_id, sizeof g->live_origin_id, "%s", route_id);
    g->live_origin_ns = uv_hrtime() - (uint64_t)(seconds * 1e9);
}

void app_live_on_applied(struct generation *g, const char *route_id, const struct model_route *m) {
    uint64_t origin = strcmp(g->live_origin_id, route_id) == 0 ? g->live_origin_ns : 0;
    g->live_origin_id[0] = '\0';
    if (g->have_live)
        live_expect(&g->live, route_id, m, origin);
}

void app_live_on_gone(struct generation *g, const char *route_id) {
    if (g->have_live)
        live_forget(&g->live, route_id);
}

int app_live_status_doc(struct generation *g, const char *route_id, cJSON *doc) {
    struct live_view v;
    if (!g->have_live || !live_view(&g->live, route_id, &v))
        return 0;
    char served[700], stamp[40] = "";
    if (v.served == LIVE_STALE)
        snprintf(served, sizeof served, "stale: %s", v.reason ? v.reason : "");
    else
        snprintf(served, sizeof served, "%s", live_served_name(v.served));
    time_t t = (time_t)v.live_at;
    struct tm tm;
    if (v.live_at > 0 && gmtime_r(&t, &tm))
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!cJSON_AddStringToObject(doc, "served", served) ||
        !cJSON_AddBoolToObject(doc, "live", v.served == LIVE_LIVE) ||
        (*stamp && !cJSON_AddStringToObject(doc, "live_at", stamp)))
        return -1;
    return 0;
}

void app_live_stop(struct generation *g) {
    if (g->have_live)
        live_stop(&g->live);
}

void app_live_close(struct generation *g) {
    if (g->have_live)
        live_close(&g->live);
}

void app_live_free(struct generation *g) {
    if (g->have_live)
        live_free(&g->live);
}
