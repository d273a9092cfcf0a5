/* app_discovery.c - traefik.api_group: auto: ask the API server which
 * Traefik API group it serves before starting anything that needs one.
 *
 * traefik.io is Traefik v3's group and served by v2.10+ too, so it wins when
 * both are there; traefik.containo.us alone means an older Traefik v2. Until
 * the answer comes, the source runs and the workqueue waits (app.c starts the
 * work only when the informers have listed). A failure is retried with
 * backoff, since the CRDs may be installed after the bridge starts; `check`
 * reports it at once instead. */
#include <stdio.h>
#include <string.h>

#include "bridge/app_internal.h"
#include "bridge/lib/backoff.h"
#include "bridge/lib/timer.h"

#define DISCOVERY_RETRY_MIN_MS 500
#define DISCOVERY_RETRY_MAX_MS 30000

static void on_discovery_retry(uv_timer_t *t) {
    app_discovery_start(t->data);
}

static void on_discovery(void *user, const struct kube_response *res) {
    struct generation *g = user;
    struct app *a = g->app;
    g->discovery = NULL;
    bool io = false, containo = false;
    const cJSON *group;
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(res->json, "groups");
    cJSON_ArrayForEach(group, groups) {
        const char *name = kobj_str(group, "name", NULL);
        const cJSON *v;
        bool has_v = false;
        cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(group, "versions")) {
            const char *ver = kobj_str(v, "version", NULL);
            has_v |= ver && strcmp(ver, "v1alpha1") == 0;
        }
        io |= has_v && name && strcmp(name, "traefik.io") == 0;
        containo |= has_v && name && strcmp(name, "traefik.containo.us") == 0;
    }
    if (res->status == 200 && (io || containo)) {
        snprintf(g->api_group, sizeof g->api_group, "%s",
                 io ? "traefik.io" : "traefik.containo.us");
        log_info(&a->log, "kubernetes: traefik.api_group auto: using %s/v1alpha1", g->api_group);
        if (app_start_objects(g) < 0)
            app_stop(g, EXIT_RUNTIME);
        return;
    }
    char why[512];
    if (res->status == 200)
        snprintf(why, sizeof why,
                 "the API server serves neither traefik.io nor "
                 "traefik.containo.us v1alpha1 (are the Traefik CRDs installed?)");
    else
        snprintf(why, sizeof why, "GET /apis: %s%s%ld %s", res->error,
                 res->error[0] ? " " : "HTTP ", res->status, res->message);
    if (a->cmd == CMD_CHECK) {
        printf("FAIL kubernetes: %s\n", why);
        g->check.api_done = true;
        app_stop(g, EXIT_RUNTIME);
        return;
    }
    uint64_t ms =
        backoff_ms(g->discovery_failures++, DISCOVERY_RETRY_MIN_MS, DISCOVERY_RETRY_MAX_MS);
    log_warn(&a->log, "kubernetes: traefik.api_group auto: %s; retrying in %llu ms", why,
             (unsigned long long)ms);
    timer_arm(&g->discovery_timer, on_discovery_retry, ms, 0);
}

void app_discovery_start(struct generation *g) {
    if (g->stopping)
        return;
    g->discovery = kube_request(g->kube, "GET", "/apis", NULL, NULL, 0, on_discovery, g);
    if (!g->discovery)
        app_stop(g, EXIT_RUNTIME);
}
