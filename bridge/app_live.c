/* app_live.c - traefik.api: the generation's confirmation in Traefik
 * (bridge/core/reconcile_live.h), and what it feeds: the status key's
 * `served`, the propagation histogram's stage="live", the counter of
 * changes an instance did not serve in time, and a NotLive Event.
 *
 * Only `run` confirms (not --dry-run: nothing it writes would ever be
 * served). Without traefik.api nothing here runs and no status field is
 * added.
 *
 * `check` asks each instance once for /api/version (pods mode: lists the
 * pods first) with the same clients, and prints one "ok"/"FAIL" line per
 * instance, a URL never with its password. */
#include <stdio.h>
#include <stdlib.h>
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

static void check_stop(struct generation *g);
static void check_free(struct generation *g);

void app_live_stop(struct generation *g) {
    check_stop(g);
    if (g->have_live)
        live_stop(&g->live);
}

void app_live_close(struct generation *g) {
    if (g->have_live)
        live_close(&g->live);
}

void app_live_free(struct generation *g) {
    check_free(g);
    if (g->have_live)
        live_free(&g->live);
}

/* ---- check: does every instance answer? ---- */

#define CHECK_MAX_PODS 256

struct check_probe {
    struct check_traefik *ct;
    struct traefikapi_call *call; /* in flight, or NULL */
    char *instance;               /* a URL (as configured) or a pod name */
    char shown[300];              /* "http://host:8080", "pod traefik/traefik-a" */
    char line[700];               /* the verdict, once answered */
    bool answered, ok;
};

struct check_traefik {
    struct generation *g;
    struct traefikapi_settings cfg; /* the config's, request timeout within --timeout */
    struct traefikapi_client client;
    struct traefikapi_call *pods_call; /* pods mode: the list in flight */
    char pods_shown[300];              /* "pods traefik/app.kubernetes.io/name=traefik" */
    char pods_line[700];               /* why the pods could not be asked, or "" */
    struct check_probe *probes;
    size_t n_probes, answered;
    bool done, ok;
};

/* Every line, in order: the pods' problem, or one per instance. */
static void check_print(struct check_traefik *ct) {
    ct->ok = !ct->pods_line[0];
    if (ct->pods_line[0])
        printf("FAIL traefik api %s: %s\n", ct->pods_shown, ct->pods_line);
    for (size_t i = 0; !ct->pods_line[0] && i < ct->n_probes; i++) {
        printf("%s traefik api %s: %s\n", ct->probes[i].ok ? "ok  " : "FAIL", ct->probes[i].shown,
               ct->probes[i].line);
        ct->ok &= ct->probes[i].ok;
    }
    fflush(stdout);
    ct->done = true;
}

static void check_finish(struct check_traefik *ct) {
    check_print(ct);
    app_oneshot_check_traefik_done(ct->g, ct->ok);
}

/* What an error answer means for someone setting traefik.api up. */
static const char *check_hint(long status, const char *error) {
    if (status == 404)
        return " (Traefik's API is not served there: enable api.insecure for the traefik "
               "entrypoint, or route api@internal to the entrypoint of that port)";
    if (status == 401 || status == 403)
        return " (the API wants credentials: user:password in the URL?)";
    if (error && strcasestr(error, "connection refused"))
        return " (is Traefik's API enabled on that entrypoint?)";
    return "";
}

static void on_check_version(void *user, long status, const cJSON *json, const char *error) {
    struct check_probe *p = user;
    struct check_traefik *ct = p->ct;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, "Version");
    p->call = NULL;
    p->answered = true;
    if (status == 200 && cJSON_IsString(v)) {
        p->ok = true;
        snprintf(p->line, sizeof p->line, "Traefik %s", v->valuestring);
    } else if (status == 200) {
        snprintf(p->line, sizeof p->line,
                 "GET /api/version answered without a Traefik version (is this Traefik's API?)");
    } else if (status == 0 || (error && *error)) {
        snprintf(p->line, sizeof p->line, "%s%s", error && *error ? error : "no answer",
                 check_hint(status, error));
    } else {
        snprintf(p->line, sizeof p->line, "GET /api/version: HTTP %ld%s", status,
                 check_hint(status, error));
    }
    if (++ct->answered == ct->n_probes)
        check_finish(ct);
}

/* Ask every probe's instance for /api/version; finish when none could start. */
static void check_ask_all(struct check_traefik *ct) {
    size_t started = 0;
    for (size_t i = 0; i < ct->n_probes; i++) {
        struct check_probe *p = &ct->probes[i];
        p->call = traefikapi_get(&ct->client, p->instance, "/api/version", on_check_version, p);
        if (p->call) {
            started++;
            continue;
        }
        p->answered = true;
        snprintf(p->line, sizeof p->line, "could not start the request");
        ct->answered++;
    }
    if (!started)
        check_finish(ct);
}

static int check_add_probe(struct check_traefik *ct, const char *instance) {
    struct check_probe *p = &ct->probes[ct->n_probes];
    p->ct = ct;
    if (!(p->instance = strdup(instance)))
        return -1;
    ct->n_probes++;
    char name[280];
    traefikapi_instance_name(&ct->cfg, instance, name, sizeof name);
    snprintf(p->shown, sizeof p->shown, "%s%s", ct->cfg.pods.namespace ? "pod " : "", name);
    return 0;
}

static void on_check_pods(void *user, long status, const cJSON *json, const char *error) {
    struct check_traefik *ct = user;
    ct->pods_call = NULL;
    if (status != 200 || !json) {
        snprintf(ct->pods_line, sizeof ct->pods_line, "cannot list the pods: %s",
                 error && *error ? error : "not a PodList");
        check_finish(ct);
        return;
    }
    const char *names[CHECK_MAX_PODS];
    size_t n = traefikapi_serving_pods(json, names, CHECK_MAX_PODS);
    int listed = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(json, "items"));
    if (n == 0) {
        if (listed == 0)
            snprintf(ct->pods_line, sizeof ct->pods_line, "no pod matches");
        else
            snprintf(ct->pods_line, sizeof ct->pods_line,
                     "none of the %d pods that match is running and ready", listed);
        check_finish(ct);
        return;
    }
    if (!(ct->probes = calloc(n, sizeof *ct->probes))) {
        snprintf(ct->pods_line, sizeof ct->pods_line, "out of memory");
        check_finish(ct);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (check_add_probe(ct, names[i]) < 0) {
            snprintf(ct->pods_line, sizeof ct->pods_line, "out of memory");
            check_finish(ct);
            return;
        }
    check_ask_all(ct);
}

int app_live_check_start(struct generation *g) {
    struct app *a = g->app;
    if (!traefikapi_enabled(&a->cfg.traefik.api)) {
        app_oneshot_check_traefik_done(g, true);
        return 0;
    }
    struct check_traefik *ct = calloc(1, sizeof *ct);
    if (!ct)
        return -1;
    g->check.traefik = ct;
    ct->g = g;
    ct->cfg = a->cfg.traefik.api;
    uint64_t limit = app_oneshot_timeout_ms(g);
    if (ct->cfg.request_timeout_ms == 0 || ct->cfg.request_timeout_ms > limit)
        ct->cfg.request_timeout_ms = limit;
    ct->client = (struct traefikapi_client){&ct->cfg, g->http, g->kube};
    if (ct->cfg.pods.namespace) {
        snprintf(ct->pods_shown, sizeof ct->pods_shown, "pods %s/%s", ct->cfg.pods.namespace,
                 ct->cfg.pods.selector ? ct->cfg.pods.selector : "");
        ct->pods_call = traefikapi_list_pods(&ct->client, on_check_pods, ct);
        if (!ct->pods_call) {
            snprintf(ct->pods_line, sizeof ct->pods_line, "could not start the request");
            check_finish(ct);
        }
        return 0;
    }
    if (!(ct->probes = calloc(ct->cfg.n_urls, sizeof *ct->probes)))
        return -1;
    for (size_t i = 0; i < ct->cfg.n_urls; i++)
        if (check_add_probe(ct, ct->cfg.urls[i]) < 0)
            return -1;
    check_ask_all(ct);
    return 0;
}

void app_live_check_report_timeout(struct generation *g) {
    struct check_traefik *ct = g->check.traefik;
    if (!ct || ct->done)
        return;
    double secs = (double)app_oneshot_timeout_ms(g) / 1000;
    if (ct->pods_call)
        snprintf(ct->pods_line, sizeof ct->pods_line, "the pods were not listed within %g s", secs);
    for (size_t i = 0; i < ct->n_probes; i++)
        if (!ct->probes[i].answered)
            snprintf(ct->probes[i].line, sizeof ct->probes[i].line, "no answer within %g s", secs);
    check_print(ct);
}

static void check_stop(struct generation *g) {
    struct check_traefik *ct = g->check.traefik;
    if (!ct)
        return;
    traefikapi_cancel(ct->pods_call);
    ct->pods_call = NULL;
    for (size_t i = 0; i < ct->n_probes; i++) {
        traefikapi_cancel(ct->probes[i].call);
        ct->probes[i].call = NULL;
    }
}

static void check_free(struct generation *g) {
    struct check_traefik *ct = g->check.traefik;
    if (!ct)
        return;
    for (size_t i = 0; i < ct->n_probes; i++)
        free(ct->probes[i].instance);
    free(ct->probes);
    free(ct);
    g->check.traefik = NULL;
}
