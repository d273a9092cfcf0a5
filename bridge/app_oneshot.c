/* app_oneshot.c - the commands an operator runs once: what they print and
 * when they are done. The generation they run in is the daemon's (app.c),
 * stopped early:
 *
 *   check   prints one "ok" or "FAIL" line per part (config, source,
 *           Kubernetes connection, Traefik CRDs) and stops when both the
 *           source and the API server have answered;
 *   render  reads the source once and prints the objects every route (or the
 *           one asked for) would get, without talking to the API server;
 *   sync    makes one full pass over every route and stops when the
 *           reconciler has drained.
 *
 * All three give up at the deadline (--timeout, default 30 s) and say what
 * did not finish. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/app_internal.h"
#include "bridge/lib/value.h"
#include "sinks/traefik.h"

#define ONE_SHOT_TIMEOUT_MS 30000

uint64_t app_oneshot_timeout_ms(const struct generation *g) {
    return g->app->timeout_ms ? g->app->timeout_ms : ONE_SHOT_TIMEOUT_MS;
}

/* ---- render ---- */

static int compare_ids(const void *x, const void *y) {
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* Patched mode: the object is not ours; show what would change. */
static int render_patched(const struct model_route *m, const char *id, const char *ns,
                          const char *name, const struct render_opts *ro, buf_t *out) {
    int ret = 0;
    buf_printf(out, "# %s: patched mode: weights set on the existing IngressRoute\n", id);
    buf_printf(out, "# (every route of it; all other fields untouched)\n");
    cJSON *w = cJSON_CreateObject();
    for (size_t i = 0; w && i < m->n_weights; i++)
        cJSON_AddNumberToObject(w, m->weights[i].service, (double)m->weights[i].weight);
    cJSON *doc = cJSON_CreateObject();
    if (doc && w) {
        char api[96];
        snprintf(api, sizeof api, "%s/v1alpha1", ro->api_group);
        cJSON_AddStringToObject(doc, "apiVersion", api);
        cJSON_AddStringToObject(doc, "kind", "IngressRoute");
        cJSON *meta = cJSON_AddObjectToObject(doc, "metadata");
        cJSON_AddStringToObject(meta, "name", name);
        cJSON_AddStringToObject(meta, "namespace", ns);
        cJSON_AddItemToObject(doc, "weights", w);
        w = NULL;
        if (value_emit_yaml(doc, out, 1) < 0)
            ret = -1;
    }
    cJSON_Delete(w);
    cJSON_Delete(doc);
    return ret;
}

/* Owned mode, in write order: what the IngressRoute references comes first. */
static int render_owned(const struct model_route *m, const struct render_opts *ro, buf_t *out) {
    int ret = 0;
    for (size_t i = 0; i < m->n_rules && ret == 0; i++) {
        cJSON *mw = traefik_render_middleware(m, i, ro);
        if (mw && value_emit_yaml(mw, out, 1) < 0)
            ret = -1;
        cJSON_Delete(mw);
    }
    if (traefik_weighted_service_wanted(m) && ret == 0) {
        cJSON *ts = traefik_render_traefikservice(m, ro);
        if (!ts || value_emit_yaml(ts, out, 1) < 0)
            ret = -1;
        cJSON_Delete(ts);
    }
    if (m->mirror.enabled && ret == 0) {
        cJSON *ms = traefik_render_mirroring(m, ro);
        if (!ms || value_emit_yaml(ms, out, 1) < 0)
            ret = -1;
        cJSON_Delete(ms);
    }
    cJSON *ir = traefik_render_ingressroute(m, ro);
    if (!ir || value_emit_yaml(ir, out, 1) < 0)
        ret = -1;
    cJSON_Delete(ir);
    return ret;
}

/* Append route id's objects to out as YAML documents. 0, or -1 when the
 * route is invalid (said on stderr) or cannot be rendered. */
static int render_route(struct generation *g, const char *id, buf_t *out) {
    struct model_input in;
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1], err[1024];
    struct model_route m;
    if (!keycache_input(&g->keys, id, &in, ns, name))
        return 0;
    int rc = model_build(&in, &m, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "error: route %s: %s\n", id, err);
        return -1;
    }
    if (rc == 1)
        return 0;
    struct keycache_brakes b;
    keycache_brakes(&g->keys, id, &b);
    if (b.aborted)
        fprintf(stderr,
                "note: route %s is aborted (%s): all its traffic goes to its first service\n", id,
                b.abort_reason);
    else if (b.frozen)
        fprintf(stderr, "note: route %s is frozen (%s): these objects wait until the freeze ends\n",
                id, b.freeze_reason);
    struct render_opts ro = {g->api_group, g->app->cfg.traefik.rule_syntax,
                             g->app->cfg.source.prefix, g->source->ops->name};
    int ret = m.owned ? render_owned(&m, &ro, out) : render_patched(&m, id, ns, name, &ro, out);
    model_route_free(&m);
    return ret;
}

void app_oneshot_render(struct generation *g) {
    const struct app *a = g->app;
    size_t n = g->keys.routes.count, k = 0;
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    if (!ids) {
        app_stop(g, EXIT_RUNTIME);
        return;
    }
    struct map_iter it;
    map_iter_init(&it, &g->keys.routes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        ids[k++] = e->key;
    qsort(ids, k, sizeof *ids, compare_ids);
    buf_t out = BUF_INIT;
    int failed = 0, found = 0;
    for (size_t i = 0; i < k; i++) {
        if (a->render_route && strcmp(a->render_route, ids[i]) != 0)
            continue;
        found++;
        if (render_route(g, ids[i], &out) < 0)
            failed++;
    }
    free(ids);
    if (out.len)
        fwrite(out.data, 1, out.len, stdout);
    buf_free(&out);
    if (a->render_route && !found) {
        fprintf(stderr, "error: no keys for route %s under %s\n", a->render_route,
                a->cfg.source.prefix);
        failed++;
    }
    app_stop(g, failed ? EXIT_RUNTIME : EXIT_OK);
}

/* ---- check ---- */

void app_oneshot_check_snapshot(struct generation *g, size_t n, uint64_t revision) {
    printf("ok   source %s: %zu keys under %s at revision %llu\n", g->source->ops->name, n,
           g->app->cfg.source.prefix, (unsigned long long)revision);
    g->check.source_ok = true;
    if (g->check.api_done)
        app_stop(g, g->check.api_ok ? EXIT_OK : EXIT_RUNTIME);
}

bool app_oneshot_check_refused(struct generation *g, const char *reason) {
    if (g->app->cmd != CMD_CHECK || g->check.source_ok || !g->source ||
        (g->source->fault != SOURCE_FAULT_AUTH && g->source->fault != SOURCE_FAULT_ACL))
        return false;
    /* Retrying cannot fix refused credentials: say what the server said. */
    printf("FAIL source %s: %s\n", g->source->ops->name, reason ? reason : "refused");
    g->check.source_refused = true;
    if (g->check.api_done)
        app_stop(g, EXIT_RUNTIME);
    return true;
}

void app_oneshot_check_conn(const struct kube_conn *conn) {
    printf("ok   kubernetes: context %s, server %s, user %s, credential %s\n",
           conn->context ? conn->context : "(none: kubernetes.server or in-cluster)", conn->server,
           conn->user ? conn->user : "(none)",
           conn->exec                          ? "from exec plugin"
           : conn->cert_pem || conn->cert_file ? "client certificate"
           : conn->token_file                  ? "token file"
           : conn->token                       ? "token"
                                               : "none (anonymous)");
}

static void on_check_api(void *user, const struct kube_response *res) {
    struct generation *g = user;
    g->check.api_done = true;
    if (res->status != 200 || !res->json) {
        printf("FAIL kubernetes: GET /apis/%s/v1alpha1: %s%s%ld %s\n", g->api_group, res->error,
               res->error[0] ? " " : "HTTP ", res->status, res->message);
    } else {
        const cJSON *rl = cJSON_GetObjectItemCaseSensitive(res->json, "resources"), *it;
        bool ir = false, mw = false;
        cJSON_ArrayForEach(it, rl) {
            const char *name = kobj_str(it, "name", NULL);
            ir |= name && strcmp(name, "ingressroutes") == 0;
            mw |= name && strcmp(name, "middlewares") == 0;
        }
        g->check.api_ok = ir && mw;
        printf("%s kubernetes: %s/v1alpha1 %s\n", g->check.api_ok ? "ok  " : "FAIL", g->api_group,
               g->check.api_ok ? "serves ingressroutes and middlewares"
                               : "does not serve ingressroutes and middlewares (CRDs missing?)");
    }
    if (!g->check.api_ok || g->check.source_ok || g->check.source_refused)
        app_stop(g, g->check.api_ok && !g->check.source_refused ? EXIT_OK : EXIT_RUNTIME);
}

int app_oneshot_check_api(struct generation *g) {
    char path[256];
    snprintf(path, sizeof path, "/apis/%s/v1alpha1", g->api_group);
    return kube_request(g->kube, "GET", path, NULL, NULL, 0, on_check_api, g) ? 0 : -1;
}

/* ---- sync, and the deadline of all three ---- */

void app_oneshot_sync_drained(struct generation *g) {
    unsigned failed = g->rec.one_shot_failed;
    log_info(&g->app->log, "sync: done, %llu writes%s, %u routes failed",
             (unsigned long long)g->rec.stats.writes,
             g->app->dry_run ? " (dry run: validated by the API server, none persisted)" : "",
             failed);
    app_stop(g, failed ? EXIT_RUNTIME : EXIT_OK);
}

void app_oneshot_report_timeout(struct generation *g) {
    double secs = (double)app_oneshot_timeout_ms(g) / 1000;
    switch (g->app->cmd) {
    case CMD_CHECK:
        if (!g->check.source_ok && !g->check.source_refused)
            printf("FAIL source %s: no answer within %g s\n", g->source->ops->name, secs);
        if (!g->check.api_done)
            printf("FAIL kubernetes: no answer within %g s\n", secs);
        break;
    default:
        log_error(&g->app->log, "%s: not finished within %g s (source %s, informers %s)",
                  g->app->cmd == CMD_SYNC ? "sync" : "render", secs,
                  g->source_synced ? "read" : "unreachable",
                  g->informers_synced >= 2 ? "listed" : "not listed");
    }
}
