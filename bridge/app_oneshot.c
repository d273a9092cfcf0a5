/* app_oneshot.c - the commands an operator runs once: what they print and
 * when they are done. The generation they run in is the daemon's (app.c),
 * stopped early:
 *
 *   check   prints one "ok" or "FAIL" line per part (config, source,
 *           Kubernetes connection, Traefik CRDs, every right the bridge
 *           will use: app_access.c, and each traefik.api instance:
 *           app_live.c) and stops when the source, the API server and
 *           those instances have answered;
 *   render, status, diff
 *           read the source once and list the Traefik objects, then preview
 *           each route's pass (reconciler_preview) and print: render the
 *           objects as a pass would write them, status one line per route
 *           (app_status_cmd.c), diff the changes (app_diff.c); they write
 *           nothing, neither to the cluster nor to the source;
 *   sync    makes one full pass over every route and stops when the
 *           reconciler has drained.
 *
 * All of them give up at the deadline (--timeout, default 30 s) and say
 * what did not finish. */
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

/* ---- render, status, diff ---- */

static int compare_ids(const void *x, const void *y) {
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The routes render, status or diff look at, sorted: every route with keys
 * and, but for render, under policy sync every route that still owns
 * objects though its keys are gone; only a->route when one was asked for.
 * The ids belong to the key cache and the reconciler (the source has
 * stopped). NULL out of memory. */
static const char **inspect_ids(struct generation *g, size_t *n) {
    const struct app *a = g->app;
    struct map_iter it;
    size_t cap = g->keys.routes.count + g->rec.route_objs.count, k = 0;
    const char **ids = calloc(cap ? cap : 1, sizeof *ids);
    if (!ids)
        return NULL;
    map_iter_init(&it, &g->keys.routes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        if (!a->route || strcmp(a->route, e->key) == 0)
            ids[k++] = e->key;
    if (a->cmd != CMD_RENDER && a->cfg.reconcile.policy == POLICY_SYNC) {
        map_iter_init(&it, &g->rec.route_objs);
        for (struct map_entry *e; (e = map_iter_next(&it));)
            if (!map_has(&g->keys.routes, e->key) && (!a->route || strcmp(a->route, e->key) == 0))
                ids[k++] = e->key;
    }
    qsort(ids, k, sizeof *ids, compare_ids);
    *n = k;
    return ids;
}

/* Every object the routes would have, as YAML documents `kubectl apply -f -`
 * takes: an object that exists is the live one with what a pass would
 * change (labels and annotations kept), a missing one as a pass would
 * create it; a brake is noted on stderr (a frozen route's objects are those
 * it gets once the freeze ends). A route that would fail prints nothing and
 * fails render. */
static int render_routes(struct generation *g, const char *const *ids, size_t n) {
    buf_t out = BUF_INIT;
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        struct route_preview p;
        if (reconciler_preview(&g->rec, ids[i], &p) < 0) {
            fprintf(stderr, "error: route %s: out of memory\n", ids[i]);
            failed++;
            continue;
        }
        if (p.error) {
            fprintf(stderr, "error: route %s: %s\n", ids[i], p.error);
            failed++;
        } else if (p.brake == BRAKE_ABORTED) {
            fprintf(stderr,
                    "note: route %s is aborted (%s): all its traffic goes to its first service\n",
                    ids[i], p.brake_reason);
        } else if (p.brake == BRAKE_FROZEN) {
            fprintf(stderr,
                    "note: route %s is frozen (%s): these objects wait until the freeze ends\n",
                    ids[i], p.brake_reason);
        }
        for (size_t k = 0; !p.error && k < p.n_objs; k++) {
            if (p.objs[k].action == PREVIEW_DELETE)
                continue;
            cJSON *shown = app_object_shown(p.objs[k].want, true);
            if (!shown || value_emit_yaml(shown, &out, 1) < 0) {
                fprintf(stderr, "error: route %s: out of memory\n", ids[i]);
                failed++;
            }
            cJSON_Delete(shown);
        }
        reconciler_preview_free(&p);
    }
    if (out.len)
        fwrite(out.data, 1, out.len, stdout);
    buf_free(&out);
    return failed ? EXIT_RUNTIME : EXIT_OK;
}

void app_oneshot_inspect(struct generation *g) {
    struct app *a = g->app;
    size_t n = 0;
    const char **ids = inspect_ids(g, &n);
    int code = a->cmd == CMD_DIFF ? EXIT_DIFF_ERROR : EXIT_RUNTIME;
    if (!ids)
        fprintf(stderr, "error: out of memory\n");
    else if (a->route && !n)
        fprintf(stderr, "error: no keys for route %s under %s\n", a->route, a->cfg.source.prefix);
    else if (a->cmd == CMD_RENDER)
        code = render_routes(g, ids, n);
    else if (a->cmd == CMD_STATUS)
        code = app_status_cmd_print(g, ids, n);
    else
        code = app_diff_print(g, ids, n);
    free(ids);
    fflush(stdout);
    app_stop(g, code);
}

/* ---- check ---- */

/* Stop once every part is done (at once when the API server failed:
 * nothing after it can be asked); exit 1 on any FAIL. */
static void check_maybe_stop(struct generation *g) {
    bool source_done = g->check.source_ok || g->check.source_refused;
    if (g->check.api_done && !g->check.api_ok)
        app_stop(g, EXIT_RUNTIME);
    else if (g->check.api_done && source_done && g->check.traefik_done)
        app_stop(g, g->check.source_ok && g->check.traefik_ok ? EXIT_OK : EXIT_RUNTIME);
}

void app_oneshot_check_snapshot(struct generation *g, size_t n, uint64_t revision) {
    printf("ok   source %s: %zu keys under %s at revision %llu\n", g->source->ops->name, n,
           g->app->cfg.source.prefix, (unsigned long long)revision);
    g->check.source_ok = true;
    check_maybe_stop(g);
}

bool app_oneshot_check_refused(struct generation *g, const char *reason) {
    if (g->app->cmd != CMD_CHECK || g->check.source_ok || !g->source ||
        (g->source->fault != SOURCE_FAULT_AUTH && g->source->fault != SOURCE_FAULT_ACL))
        return false;
    /* Retrying cannot fix refused credentials: say what the server said. */
    printf("FAIL source %s: %s\n", g->source->ops->name, reason ? reason : "refused");
    g->check.source_refused = true;
    check_maybe_stop(g);
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

void app_oneshot_check_api_done(struct generation *g, bool ok) {
    g->check.api_done = true;
    g->check.api_ok = ok;
    check_maybe_stop(g);
}

void app_oneshot_check_traefik_done(struct generation *g, bool ok) {
    g->check.traefik_done = true;
    g->check.traefik_ok = ok;
    check_maybe_stop(g);
}

static void on_check_api(void *user, const struct kube_response *res) {
    struct generation *g = user;
    bool ok = false;
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
        ok = ir && mw;
        printf("%s kubernetes: %s/v1alpha1 %s\n", ok ? "ok  " : "FAIL", g->api_group,
               ok ? "serves ingressroutes and middlewares"
                  : "does not serve ingressroutes and middlewares (CRDs missing?)");
    }
    /* Served: then ask whether the bridge may use them (app_access.c). */
    if (!ok || app_access_start(g) < 0)
        app_oneshot_check_api_done(g, false);
}

int app_oneshot_check_api(struct generation *g) {
    char path[256];
    snprintf(path, sizeof path, "/apis/%s/v1alpha1", g->api_group);
    if (!kube_request(g->kube, "GET", path, NULL, NULL, 0, on_check_api, g))
        return -1;
    return app_live_check_start(g); /* traefik.api's instances, meanwhile */
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
        if (!g->check.api_done && g->check.n_reviews)
            app_access_report_timeout(g);
        else if (!g->check.api_done)
            printf("FAIL kubernetes: no answer within %g s\n", secs);
        app_live_check_report_timeout(g);
        break;
    default:
        log_error(&g->app->log, "%s: not finished within %g s (source %s, informers %s)",
                  g->app->cmd == CMD_SYNC     ? "sync"
                  : g->app->cmd == CMD_RENDER ? "render"
                  : g->app->cmd == CMD_STATUS ? "status"
                                              : "diff",
                  secs, g->source_synced ? "read" : "unreachable",
                  g->informers_synced >= OBJ_NKINDS ? "listed" : "not listed");
    }
}
