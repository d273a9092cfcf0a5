/* reconcile_live.c - confirmation rounds: ask every Traefik instance about
 * every route waiting for confirmation; see reconcile_live.h.
 *
 * A route's answers of one round are collected in the route itself (its
 * epoch tells a stale probe from a current one): all live, or the first
 * lagging instance in instance order and why. The round ends with its last
 * answer; each route then moves on (live, still pending, stale). */
#include "bridge/core/reconcile_live.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/lib/timer.h"

#define LAG_MAX 600
#define MAX_PODS 256
/* More routes than this due in one round: one list per instance, not one
 * search per route and instance. */
#define LIVE_BATCH_ROUTES 8

struct live_route {
    struct traefikapi_expect want;
    enum live_served served;
    char *reason;       /* stale: who lags */
    double live_at;     /* Unix time */
    uint64_t origin_ns; /* the source change, or 0 */
    uint64_t started_ms;
    uint64_t next_ms; /* due in a round from then on */
    unsigned epoch;
    bool in_round, all_live;
    size_t lag_order; /* instance index of lag, SIZE_MAX none */
    size_t lagging;   /* instances lagging this round */
    char lag[LAG_MAX];
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1];
};

struct probe {
    struct list_node link;
    struct live_checker *lc;
    struct traefikapi_call *call;
    unsigned epoch;
    size_t order;
    char *instance;
    char id[];
};

static void start_round(struct live_checker *lc);
static void on_answer(void *user, long status, const cJSON *json, const char *error);

const char *live_served_name(enum live_served s) {
    return s == LIVE_LIVE ? "live" : s == LIVE_STALE ? "stale" : "pending";
}

static double unix_now(void) {
    struct timespec ts;
    return clock_gettime(CLOCK_REALTIME, &ts) == 0 ? (double)ts.tv_sec + ts.tv_nsec / 1e9 : 0;
}

static void route_free(struct live_route *lr) {
    if (!lr)
        return;
    traefikapi_expect_free(&lr->want);
    free(lr->reason);
    free(lr);
}

int live_init(struct live_checker *lc, uv_loop_t *loop, struct logger *lg,
              const struct traefikapi_settings *cfg, struct http_client *http,
              struct kube_client *kube) {
    memset(lc, 0, sizeof *lc);
    lc->loop = loop;
    lc->log = lg;
    lc->cfg = cfg;
    lc->client = (struct traefikapi_client){cfg, http, kube};
    list_init(&lc->probes);
    if (uv_timer_init(loop, &lc->timer) < 0)
        return -1;
    lc->timer.data = lc;
    return 0;
}

static void on_timer(uv_timer_t *t) {
    start_round(t->data);
}

/* Start the next round after an interval, unless one is in flight or due
 * sooner already. */
static void kick(struct live_checker *lc, uint64_t delay_ms) {
    if (lc->stopped || lc->closing || lc->in_round)
        return;
    if (uv_is_active((uv_handle_t *)&lc->timer) && uv_timer_get_due_in(&lc->timer) <= delay_ms)
        return;
    timer_arm(&lc->timer, on_timer, delay_ms, 0);
}

void live_expect(struct live_checker *lc, const char *route_id, const struct model_route *m,
                 uint64_t origin_ns) {
    if (lc->stopped || lc->closing)
        return;
    struct traefikapi_expect want;
    if (traefikapi_expect_build(m, &want) < 0) {
        log_error(lc->log, "route %s: out of memory confirming it in Traefik", route_id);
        return;
    }
    struct live_route *lr = map_get(&lc->routes, route_id);
    if (lr && strcmp(lr->want.sig, want.sig) == 0) {
        traefikapi_expect_free(&want);
        return; /* the same weights: confirmed or being confirmed */
    }
    if (!lr) {
        lr = calloc(1, sizeof *lr);
        if (!lr || map_put(&lc->routes, route_id, lr, NULL) < 0) {
            free(lr);
            traefikapi_expect_free(&want);
            log_error(lc->log, "route %s: out of memory confirming it in Traefik", route_id);
            return;
        }
        snprintf(lr->ns, sizeof lr->ns, "%s", m->ns);
        snprintf(lr->name, sizeof lr->name, "%s", m->name);
    }
    traefikapi_expect_free(&lr->want);
    lr->want = want;
    lr->served = LIVE_PENDING;
    free(lr->reason);
    lr->reason = NULL;
    lr->live_at = 0;
    lr->origin_ns = origin_ns;
    lr->started_ms = uv_now(lc->loop);
    lr->next_ms = lr->started_ms + lc->cfg->interval_ms;
    lr->epoch++;
    lr->in_round = false;
    if (lc->hooks.changed)
        lc->hooks.changed(lc->hooks.user, route_id);
    kick(lc, lc->cfg->interval_ms);
}

void live_forget(struct live_checker *lc, const char *route_id) {
    route_free(map_del(&lc->routes, route_id));
}

bool live_view(const struct live_checker *lc, const char *route_id, struct live_view *v) {
    const struct live_route *lr = map_get(&lc->routes, route_id);
    if (!lr)
        return false;
    v->served = lr->served;
    v->reason = lr->reason;
    v->live_at = lr->live_at;
    return true;
}

/* ---- one round ---- */

static void lag(struct live_route *lr, size_t order, const char *instance, const char *fmt,
                const char *what) {
    lr->all_live = false;
    lr->lagging++;
    if (order >= lr->lag_order)
        return;
    lr->lag_order = order;
    snprintf(lr->lag, sizeof lr->lag, "%.200s ", instance);
    size_t k = strlen(lr->lag);
    snprintf(lr->lag + k, sizeof lr->lag - k, fmt, what);
}

static void set_reason(struct live_checker *lc, const char *id, struct live_route *lr,
                       const char *text) {
    if (lr->reason && text && strcmp(lr->reason, text) == 0)
        return;
    char *copy = text ? strdup(text) : NULL;
    free(lr->reason);
    lr->reason = copy;
    if (lc->hooks.changed)
        lc->hooks.changed(lc->hooks.user, id);
}

static void end_route(struct live_checker *lc, const char *id, struct live_route *lr,
                      size_t instances) {
    uint64_t now = uv_now(lc->loop);
    lr->in_round = false;
    if (instances == 0)
        lag(lr, 0, "traefik.api.pods:", "%s",
            *lc->pods_problem ? lc->pods_problem : "no running Traefik pod matches the selector");
    if (lr->all_live) {
        lr->served = LIVE_LIVE;
        lr->live_at = unix_now();
        double secs = lr->origin_ns ? (double)(uv_hrtime() - lr->origin_ns) / 1e9 : -1;
        if (secs >= 0)
            log_info(lc->log,
                     "route %s: served by all %zu Traefik instances, %.3f s after the "
                     "source change",
                     id, instances, secs);
        else
            log_info(lc->log, "route %s: served by all %zu Traefik instances", id, instances);
        free(lr->reason);
        lr->reason = NULL;
        if (lc->hooks.live)
            lc->hooks.live(lc->hooks.user, id, secs);
        if (lc->hooks.changed)
            lc->hooks.changed(lc->hooks.user, id);
        return;
    }
    char text[LAG_MAX + 64];
    if (lr->lagging > 1)
        snprintf(text, sizeof text, "%s (and %zu more instances)", lr->lag, lr->lagging - 1);
    else
        snprintf(text, sizeof text, "%s", lr->lag);
    if (lr->served == LIVE_PENDING && now - lr->started_ms < lc->cfg->timeout_ms) {
        lr->next_ms = now; /* due next round */
        return;
    }
    lr->next_ms = now + lc->cfg->timeout_ms; /* stale: asked again after a timeout */
    if (lr->served == LIVE_PENDING) {
        lr->served = LIVE_STALE;
        log_warn(lc->log, "route %s: not served within %" PRIu64 " ms: %s (nothing is rolled back)",
                 id, lc->cfg->timeout_ms, text);
        if (lc->hooks.not_live) {
            char inst[LAG_MAX];
            snprintf(inst, sizeof inst, "%s", lr->lag);
            char *sp = strchr(inst, ' ');
            if (sp)
                *sp = '\0';
            lc->hooks.not_live(lc->hooks.user, id, inst, sp ? lr->lag + (sp - inst) + 1 : "");
        }
    }
    set_reason(lc, id, lr, text);
}

static void end_round(struct live_checker *lc, size_t instances) {
    lc->in_round = false;
    uint64_t now = uv_now(lc->loop), next = UINT64_MAX;
    struct map_iter it;
    map_iter_init(&it, &lc->routes);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        struct live_route *lr = e->value;
        if (lr->in_round)
            end_route(lc, e->key, lr, instances);
        if (lr->served != LIVE_LIVE && lr->next_ms < next)
            next = lr->next_ms;
    }
    if (next == UINT64_MAX)
        return; /* nothing waits: the next change starts the timer */
    uint64_t delay = next > now ? next - now : 0;
    kick(lc, delay > lc->cfg->interval_ms ? delay : lc->cfg->interval_ms);
}

static void probe_free(struct probe *p) {
    list_remove(&p->link);
    free(p->instance);
    free(p);
}

/* What instance p answered about route lr. */
static void judge_answer(struct live_route *lr, const struct probe *p, long status,
                         const cJSON *json, const char *error) {
    char why[LAG_MAX], code[32];
    if (status == 200) {
        if (traefikapi_judge(json, &lr->want, lr->ns, lr->name, why, sizeof why) != TRAEFIKAPI_LIVE)
            lag(lr, p->order, p->instance, "%s", why);
    } else if (status == 0) {
        lag(lr, p->order, p->instance, "does not answer: %s", error);
    } else {
        snprintf(code, sizeof code, "%ld", status);
        lag(lr, p->order, p->instance, "answers HTTP %s", code);
        if (*error && lr->lag_order == p->order)
            snprintf(lr->lag + strlen(lr->lag), sizeof lr->lag - strlen(lr->lag), ": %s", error);
    }
}

static void on_answer(void *user, long status, const cJSON *json, const char *error) {
    struct probe *p = user;
    struct live_checker *lc = p->lc;
    if (p->id[0]) {
        struct live_route *lr = map_get(&lc->routes, p->id);
        if (lr && lr->epoch == p->epoch && lr->in_round)
            judge_answer(lr, p, status, json, error);
    } else { /* every route of the round (a route changed since is out of it) */
        struct map_iter it;
        map_iter_init(&it, &lc->routes);
        for (struct map_entry *e; (e = map_iter_next(&it));)
            if (((struct live_route *)e->value)->in_round)
                judge_answer(e->value, p, status, json, error);
    }
    probe_free(p);
    if (--lc->waiting == 0)
        end_round(lc, lc->instances);
}

/* How an instance is named in the status, the log, an Event and the
 * metric (traefikapi_instance_name: never a URL's password). */
static void shown_name(const struct live_checker *lc, const char *instance, char *out,
                       size_t outlen) {
    traefikapi_instance_name(lc->cfg, instance, out, outlen);
}

/* One request to instance i: about route id (epoch), or (id "") about
 * every route of the round. false when it did not start. */
static bool probe_start(struct live_checker *lc, const char *id, unsigned epoch, size_t i,
                        const char *instance, const char *shown, const char *path) {
    struct probe *p = calloc(1, sizeof *p + strlen(id) + 1);
    if (p)
        p->instance = strdup(shown);
    if (!p || !p->instance) {
        free(p);
        return false;
    }
    strcpy(p->id, id);
    p->lc = lc;
    p->epoch = epoch;
    p->order = i;
    list_push_back(&lc->probes, &p->link);
    p->call = traefikapi_get(&lc->client, instance, path, on_answer, p);
    if (!p->call) {
        probe_free(p);
        return false;
    }
    lc->waiting++;
    lc->requests++;
    return true;
}

/* Ask every instance about every route due; instances[] are base URLs or
 * pod names. Up to LIVE_BATCH_ROUTES routes, one search per route and
 * instance; more (a burst), one list of all services per instance. */
static void ask_all(struct live_checker *lc, const char *const *instances, size_t n) {
    uint64_t now = uv_now(lc->loop);
    lc->instances = n;
    size_t due = 0;
    struct map_iter it;
    map_iter_init(&it, &lc->routes);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        struct live_route *lr = e->value;
        if (lr->served == LIVE_LIVE || lr->next_ms > now + 1)
            continue;
        lr->in_round = true;
        lr->all_live = true;
        lr->lag_order = SIZE_MAX;
        lr->lagging = 0;
        lr->lag[0] = '\0';
        due++;
    }
    bool batch = due > LIVE_BATCH_ROUTES;
    if (batch)
        log_debug(lc->log,
                  "traefik.api: %zu routes to confirm: one list of all services from "
                  "each of %zu instances",
                  due, n);
    for (size_t i = 0; batch && i < n; i++) {
        char shown[512];
        shown_name(lc, instances[i], shown, sizeof shown);
        if (probe_start(lc, "", 0, i, instances[i], shown, TRAEFIKAPI_ALL_SERVICES))
            continue;
        map_iter_init(&it, &lc->routes);
        for (struct map_entry *e; (e = map_iter_next(&it));)
            if (((struct live_route *)e->value)->in_round)
                lag(e->value, i, shown, "%s", "cannot be asked: the request did not start");
    }
    map_iter_init(&it, &lc->routes);
    for (struct map_entry *e; !batch && (e = map_iter_next(&it));) {
        struct live_route *lr = e->value;
        char path[600];
        if (!lr->in_round)
            continue;
        if (traefikapi_services_path(&lr->want, path, sizeof path) < 0) {
            lag(lr, 0, "traefik.api:", "%s", "route name too long to ask about");
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            char shown[512];
            shown_name(lc, instances[i], shown, sizeof shown);
            if (!probe_start(lc, e->key, lr->epoch, i, instances[i], shown, path))
                lag(lr, i, shown, "%s", "cannot be asked: the request did not start");
        }
    }
    if (lc->waiting == 0)
        end_round(lc, n);
}

static void on_pods(void *user, long status, const cJSON *json, const char *error) {
    struct live_checker *lc = user;
    lc->pods_call = NULL;
    const char *names[MAX_PODS];
    size_t n = 0;
    char problem[sizeof lc->pods_problem] = "";
    if (status == 200)
        n = traefikapi_serving_pods(json, names, MAX_PODS);
    else
        snprintf(problem, sizeof problem, "cannot list the pods: %s", *error ? error : "no answer");
    if (*problem && strcmp(problem, lc->pods_problem) != 0) /* once per streak */
        log_warn(lc->log, "traefik.api.pods: in namespace %s: %s", lc->cfg->pods.namespace,
                 problem);
    else if (!*problem && *lc->pods_problem)
        log_info(lc->log, "traefik.api.pods: the pods of namespace %s are listed again",
                 lc->cfg->pods.namespace);
    snprintf(lc->pods_problem, sizeof lc->pods_problem, "%s", problem);
    ask_all(lc, names, n);
}

static void start_round(struct live_checker *lc) {
    if (lc->in_round || lc->stopped || lc->closing)
        return;
    lc->in_round = true;
    lc->rounds++;
    lc->waiting = 0;
    if (!lc->cfg->pods.namespace) {
        ask_all(lc, (const char *const *)lc->cfg->urls, lc->cfg->n_urls);
        return;
    }
    lc->pods_call = traefikapi_list_pods(&lc->client, on_pods, lc);
    if (!lc->pods_call)
        on_pods(lc, 0, NULL, "the request did not start");
}

/* ---- lifecycle ---- */

void live_stop(struct live_checker *lc) {
    if (lc->stopped)
        return;
    lc->stopped = true;
    uv_timer_stop(&lc->timer);
    traefikapi_cancel(lc->pods_call); /* the pods list in flight, if any */
    list_for_each_safe(n, nx, &lc->probes) {
        struct probe *p = list_entry(n, struct probe, link);
        traefikapi_cancel(p->call);
        probe_free(p);
    }
    lc->pods_call = NULL;
    lc->waiting = 0;
    lc->in_round = false;
}

void live_close(struct live_checker *lc) {
    if (lc->closing)
        return;
    live_stop(lc);
    lc->closing = true;
    uv_close((uv_handle_t *)&lc->timer, NULL);
}

void live_free(struct live_checker *lc) {
    struct map_iter it;
    map_iter_init(&it, &lc->routes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        route_free(e->value);
    map_free(&lc->routes);
}
