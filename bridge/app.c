/* app.c - one generation of the daemon: its lifecycle, and the wiring of
 * source events -> key cache -> reconciler -> Kubernetes on its loop.
 *
 * Start-up order matters: the workqueue stays paused until the source has
 * delivered a complete snapshot AND every informer has listed, so the first
 * pass for every route already knows what exists in the cluster (no blind
 * POSTs, no GET per route).
 *
 * A generation goes generation_init (memory, loop, handles; no I/O),
 * generation_start (HTTP server, source, Kubernetes client, informers,
 * reconciler, timers), then runs until app_stop (SIGTERM, SIGINT, a reload,
 * or the end of a one-shot command) drains the writes in flight and
 * generation_close closes every handle; the loop then returns and
 * generation_free releases the memory. A reload (SIGHUP with a valid file)
 * is exactly that, followed by a new generation with the new configuration.
 * What the one-shot commands print is in app_oneshot.c, status feedback in
 * app_status.c, the HTTP endpoints and metrics in app_http.c. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge/app_internal.h"
#include "bridge/lib/timer.h"
#include "sinks/traefik.h"

#define SHUTDOWN_GRACE_MS 10000
#define DRAIN_CHECK_MS 20 /* how often shutdown looks for writes still in flight */

static void generation_close(struct generation *g);
static void maybe_start_work(struct generation *g);

void app_set_status(struct generation *g, const char *fmt, ...) {
    struct app *a = g->app;
    char text[sizeof a->last_status];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (strcmp(text, a->last_status) == 0)
        return; /* systemd needs to hear about changes only */
    memcpy(a->last_status, text, sizeof text);
    notify_status(&g->notify, "%s%s", a->dry_run ? "dry-run: " : "", text);
}

void app_count_routes(struct generation *g, size_t *applied, size_t *failed, size_t *pending) {
    *applied = *failed = 0;
    struct map_iter it;
    map_iter_init(&it, &g->rec.status);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        const struct route_status *st = e->value;
        *applied += st->state == ROUTE_APPLIED;
        *failed += st->state == ROUTE_ERROR;
    }
    size_t known = g->keys.routes.count;
    *pending = known > *applied + *failed ? known - *applied - *failed : 0;
}

/* ---- source callbacks ---- */

static void on_route_changed(void *user, const char *route_id) {
    struct generation *g = user;
    if (g->have_rec)
        reconciler_source_changed(&g->rec, route_id, true);
}

static void on_route_resynced(void *user, const char *route_id) {
    struct generation *g = user;
    if (g->have_rec)
        reconciler_source_changed(&g->rec, route_id, false);
}

static void on_snapshot(void *user, const struct source_kv *kvs, size_t n, uint64_t revision) {
    struct generation *g = user;
    struct app *a = g->app;
    if (g->stopping)
        return;
    if (keycache_snapshot(&g->keys, kvs, n, revision, on_route_resynced, g) < 0) {
        log_error(&a->log, "source: out of memory applying a snapshot of %zu keys", n);
        return;
    }
    log_info(&a->log, "source: %zu keys under %s at revision %llu (%zu routes)", n,
             a->cfg.source.prefix, (unsigned long long)revision, g->keys.routes.count);
    bool first = !g->source_synced;
    g->source_synced = true;
    g->source_connected = true;
    metric_set(a->bm.source_connected, NULL, 1);
    switch (a->cmd) {
    case CMD_CHECK: app_oneshot_check_snapshot(g, n, revision); return;
    case CMD_SYNC:
    case CMD_RENDER:
    case CMD_STATUS:
    case CMD_DIFF:
        /* One complete read is all a one-shot command needs. */
        g->source->ops->stop(g->source);
        break;
    case CMD_RUN: break;
    }
    if (first)
        maybe_start_work(g);
}

static void on_event(void *user, enum source_event_type type, const struct source_kv *kv,
                     uint64_t revision) {
    struct generation *g = user;
    (void)revision;
    if (g->stopping)
        return;
    metric_add(g->app->bm.source_events_total, NULL, 1);
    int rc = type == SOURCE_PUT ? keycache_put(&g->keys, kv, on_route_changed, g)
                                : keycache_delete(&g->keys, kv->key, on_route_changed, g);
    if (rc < 0)
        log_error(&g->app->log, "source: out of memory applying a change to %s", kv->key);
}

static void on_source_state(void *user, bool connected, const char *reason) {
    struct generation *g = user;
    struct app *a = g->app;
    g->source_connected = connected;
    metric_set(a->bm.source_connected, NULL, connected ? 1 : 0);
    metric_set(a->bm.source_acl_denied, NULL,
               !connected && g->source && g->source->fault == SOURCE_FAULT_ACL ? 1 : 0);
    if (connected) {
        log_info(&a->log, "source: connected");
    } else if (!app_oneshot_check_refused(g, reason)) {
        log_warn(&a->log, "source: disconnected: %s", reason ? reason : "unknown");
        app_set_status(g, "source %s disconnected: %.160s", g->source->ops->name,
                       reason ? reason : "unknown");
    }
}

/* ---- the work: first sync, passes, resync ---- */

static void on_drained(void *user) {
    struct generation *g = user;
    struct app *a = g->app;
    if (a->cmd == CMD_RUN && g->working && !g->stopping) {
        /* Everything known has been through a pass: in sync as of now. */
        struct timespec ts;
        if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
            metric_set(a->bm.last_sync_timestamp_seconds, NULL,
                       (double)ts.tv_sec + ts.tv_nsec / 1e9);
        size_t applied, failed, pending;
        app_count_routes(g, &applied, &failed, &pending);
        if (!g->ready_notified) {
            g->ready_notified = true;
            notify_ready(&g->notify);
            log_info(&a->log, "first full sync done: %zu routes applied, %zu failing", applied,
                     failed);
        }
        if (g->source_connected)
            app_set_status(g, "in sync: %zu routes applied, %zu failing", applied, failed);
    }
    if (a->cmd == CMD_SYNC && g->working && !g->stopping)
        app_oneshot_sync_drained(g);
}

static const char *leader_name(struct generation *g, const char *unknown) {
    return g->have_lease && lease_holder(&g->lease) ? lease_holder(&g->lease) : unknown;
}

/* Release the workqueue once the source has delivered a snapshot and every
 * informer has listed. */
static void maybe_start_work(struct generation *g) {
    struct app *a = g->app;
    if (g->working || !g->source_synced || g->informers_synced < OBJ_NKINDS || g->stopping)
        return;
    g->working = true;
    if (app_cmd_inspects(a->cmd)) {
        app_oneshot_inspect(g); /* render, status, diff: read, print, stop */
        return;
    }
    if (!g->leader) {
        /* A follower keeps its caches warm and is ready to take over. */
        log_info(&a->log, "ready as a follower: %zu routes cached; the leader is %s",
                 g->keys.routes.count, leader_name(g, "unknown"));
        if (!g->ready_notified) {
            g->ready_notified = true;
            notify_ready(&g->notify);
        }
        app_set_status(g, "standby: following leader %s", leader_name(g, "?"));
        return;
    }
    log_info(&a->log,
             "ready: %zu routes; %zu IngressRoutes, %zu TraefikServices and %zu Middlewares in "
             "the cache (%s/v1alpha1)",
             g->keys.routes.count, g->inf[OBJ_INGRESSROUTE].objects.count,
             g->inf[OBJ_TRAEFIKSERVICE].objects.count, g->inf[OBJ_MIDDLEWARE].objects.count,
             g->api_group);
    /* Every route gets a first pass: the snapshot may have arrived before the
     * reconciler existed (api_group discovery runs concurrently). */
    reconciler_enqueue_all(&g->rec);
    reconciler_start(&g->rec);
    app_set_status(g, "syncing %zu routes", g->keys.routes.count);
    /* Folders with only mistyped keys get no pass: their status says why. */
    struct map_iter it;
    map_iter_init(&it, &g->keys.leaves);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        if (!map_has(&g->keys.routes, e->value))
            app_status_request(g, e->value);
    if (reconciler_idle(&g->rec))
        on_drained(g);
}

/* Informers call back with the reconciler as user; the generation is its. */
static void on_informer_synced(void *user) {
    struct reconciler *r = user;
    struct generation *g = r->user;
    g->informers_synced++;
    maybe_start_work(g);
}

static void on_resync(uv_timer_t *t) {
    struct generation *g = t->data;
    if (g->stopping)
        return;
    log_debug(&g->app->log, "resync: re-listing source and objects");
    if (g->source->ops->resync)
        g->source->ops->resync(g->source);
    for (int k = 0; k < OBJ_NKINDS; k++)
        informer_resync(&g->inf[k]);
    reconciler_enqueue_all(&g->rec);
}

/* ---- reconciler hooks that fan out to status feedback and metrics ---- */

static void on_route_applied(void *user, const char *route_id, const struct model_route *m) {
    app_http_export_weights(user, route_id, m);
    app_status_remember_weights(user, route_id, m);
    app_live_on_applied(user, route_id, m);
}

static void on_route_status(void *user, const char *route_id, const struct route_status *st) {
    struct generation *g = user;
    app_http_route_changed(g, route_id, st);
    if (st || keycache_leaf_errors(&g->keys, route_id, NULL, 0))
        app_status_request(g, route_id);
    app_http_export_brakes(g, route_id, st);
    if (!st) { /* the route is gone: so are its weight series */
        app_http_export_weights(g, route_id, NULL);
        app_status_remember_weights(g, route_id, NULL);
        app_live_on_gone(g, route_id);
    }
}

static void on_route_plan(void *user, const char *route_id, const struct plan_status *p,
                          bool stepped) {
    struct generation *g = user;
    app_http_export_plan(g, route_id, p, stepped);
    app_status_request(g, route_id);
}

static void on_route_event(void *user, const cJSON *obj, const char *type, const char *reason,
                           const char *message) {
    struct generation *g = user;
    if (!g->events)
        return;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    events_post(g->events, kobj_str(meta, "namespace", NULL), kobj_str(obj, "apiVersion", NULL),
                kobj_str(obj, "kind", NULL), kobj_str(meta, "name", NULL),
                kobj_str(meta, "uid", NULL), type, reason, "%s", message);
}

/* ---- leader election ---- */

static void on_leader_change(void *user, bool leader) {
    struct generation *g = user;
    g->leader = leader;
    metric_set(g->app->bm.leader, NULL, leader ? 1 : 0);
    if (!g->have_rec || g->stopping)
        return;
    if (leader) {
        if (g->working) {
            /* Take over from a warm cache: one pass over every route. */
            reconciler_enqueue_all(&g->rec);
            reconciler_start(&g->rec);
            app_set_status(g, "leader: syncing %zu routes", g->keys.routes.count);
        } else {
            maybe_start_work(g);
        }
    } else {
        reconciler_stop(&g->rec);
        app_set_status(g, "standby: following leader %s",
                       lease_holder(&g->lease) ? lease_holder(&g->lease) : "?");
    }
}

static int start_election(struct generation *g) {
    struct app *a = g->app;
    const struct lease_settings *le = &a->cfg.leader_election;
    char host[256] = "";
    const char *identity = le->identity;
    if (!identity || !*identity) {
        if (gethostname(host, sizeof host - 1) != 0 || !host[0])
            snprintf(host, sizeof host, "canary-bridge-%ld", (long)getpid());
        identity = host;
    }
    if (lease_init(&g->lease, &g->loop, g->kube, &a->log, le->namespace, le->name, identity,
                   le->lease_duration_ms, le->renew_deadline_ms, le->retry_period_ms,
                   on_leader_change, g) < 0) {
        log_error(&a->log, "leader election: cannot start (check leader_election durations)");
        return -1;
    }
    g->have_lease = true;
    g->leader = false;
    metric_set(a->bm.leader, NULL, 0);
    log_info(&a->log, "leader election: lease %s/%s as %s", le->namespace, le->name, identity);
    return lease_start(&g->lease);
}

/* ---- stopping: drain, hand over, close ---- */

static void close_if_open(uv_handle_t *h) {
    if (h->loop && !uv_is_closing(h))
        uv_close(h, NULL);
}

/* Stop and close everything the generation made; the loop returns once the
 * close callbacks have run. */
static void generation_close(struct generation *g) {
    if (g->closed)
        return;
    g->closed = true;
    if (g->source)
        g->source->ops->close(g->source); /* freed as the loop runs on */
    g->source = NULL;
    if (g->have_rec)
        reconciler_close(&g->rec);
    if (g->have_informers)
        for (int k = 0; k < OBJ_NKINDS; k++)
            informer_close(&g->inf[k], NULL);
    if (g->have_backends)
        backends_close(&g->backends, NULL);
    app_live_close(g);
    kube_call_cancel(g->discovery);
    g->discovery = NULL;
    if (g->have_lease)
        lease_close(&g->lease);
    if (g->events)
        events_close(g->events);
    if (g->kube)
        kube_client_close(g->kube); /* before the http client goes */
    if (g->http)
        http_client_close(g->http);
    if (g->httpd) {
        httpd_close(g->httpd);
        g->httpd = NULL;
    }
    notify_close(&g->notify);
    close_if_open((uv_handle_t *)&g->sig_term);
    close_if_open((uv_handle_t *)&g->sig_int);
    close_if_open((uv_handle_t *)&g->sig_hup);
    if (g->have_timers) {
        close_if_open((uv_handle_t *)&g->resync_timer);
        close_if_open((uv_handle_t *)&g->deadline);
        close_if_open((uv_handle_t *)&g->drain_timer);
        close_if_open((uv_handle_t *)&g->discovery_timer);
    }
}

static void on_lease_released(void *user) {
    generation_close(user);
}

static void on_drain_check(uv_timer_t *t) {
    struct generation *g = t->data;
    /* Shutdown only: wait for writes already sent, so a route is never left
     * half-written by a stop. Bounded by the deadline timer. */
    if (g->kube && kube_client_writes_in_flight(g->kube) > 0)
        return;
    if (g->have_lease && g->leader && !g->lease_releasing) {
        /* Hand over at once rather than let the others wait out the lease. */
        g->lease_releasing = true;
        uv_timer_stop(&g->drain_timer);
        lease_release(&g->lease, on_lease_released, g);
        return;
    }
    if (!g->lease_releasing)
        generation_close(g);
}

static void on_deadline(uv_timer_t *t) {
    struct generation *g = t->data;
    if (g->stopping) {
        log_warn(&g->app->log, "shutdown: writes still in flight after %d ms; exiting anyway",
                 SHUTDOWN_GRACE_MS);
        generation_close(g);
        return;
    }
    app_oneshot_report_timeout(g);
    app_stop(g, EXIT_RUNTIME);
}

void app_stop(struct generation *g, int code) {
    if (g->stopping)
        return;
    g->stopping = true;
    g->exit_code = code;
    if (!g->app->reload)
        notify_stopping(&g->notify);
    if (g->source)
        g->source->ops->stop(g->source);
    if (g->have_informers)
        for (int k = 0; k < OBJ_NKINDS; k++)
            informer_stop(&g->inf[k]);
    if (g->have_backends)
        backends_stop(&g->backends);
    app_live_stop(g);
    if (g->have_rec)
        reconciler_pause(&g->rec);
    if (!g->have_timers) {
        generation_close(g);
        return;
    }
    uv_timer_stop(&g->resync_timer);
    timer_arm(&g->deadline, on_deadline, SHUTDOWN_GRACE_MS, 0);
    timer_arm(&g->drain_timer, on_drain_check, 0, DRAIN_CHECK_MS);
}

/* SIGHUP: load the file again; a valid one replaces the running generation,
 * an invalid one is refused and the bridge goes on with what it has. */
static void reload_config(struct generation *g) {
    struct app *a = g->app;
    struct config next;
    char err[1024];
    notify_reloading(&g->notify);
    if (config_load(a->cfg.path, &next, err, sizeof err) < 0) {
        log_error(&a->log, "reload: %s; keeping the running configuration", err);
        app_set_status(g, "reload refused: %.200s", err);
        notify_ready(&g->notify); /* still serving, with the old config */
        return;
    }
    log_info(&a->log, "reload: %s is valid; restarting the pipeline with it", a->cfg.path);
    a->next_cfg = next;
    a->reload = true;
    app_stop(g, EXIT_OK);
}

static void on_signal(uv_signal_t *s, int signum) {
    struct generation *g = s->data;
    if (signum == SIGHUP) {
        if (g->app->cmd == CMD_RUN && !g->stopping)
            reload_config(g);
        return;
    }
    log_info(&g->app->log, "%s: finishing in-flight writes, then exiting",
             signum == SIGTERM ? "SIGTERM" : "SIGINT");
    app_stop(g, EXIT_OK);
}

/* ---- starting ---- */

static int start_kube(struct generation *g) {
    struct app *a = g->app;
    struct kube_conn conn;
    char err[1024];
    if (kube_conn_from_config(&a->cfg.kubernetes, &conn, err, sizeof err) < 0) {
        log_error(&a->log, "kubernetes: %s", err);
        if (a->cmd == CMD_CHECK)
            printf("FAIL kubernetes: %s\n", err);
        return -1;
    }
    if (a->cmd == CMD_CHECK)
        app_oneshot_check_conn(&conn);
    g->kube = kube_client_new(&g->loop, g->http, &a->log, &conn, err, sizeof err);
    if (!g->kube) {
        kube_conn_free(&conn);
        log_error(&a->log, "kubernetes: %s", err);
        return -1;
    }
    kube_client_set_dry_run(g->kube, a->dry_run);
    kube_client_set_observer(g->kube, app_http_on_kube_answer, g);
    /* A name per bridge, so managedFields tell two bridges apart (fights). */
    if (a->cfg.kubernetes.field_manager) {
        snprintf(g->field_manager, sizeof g->field_manager, "%s", a->cfg.kubernetes.field_manager);
    } else {
        char host[64] = "";
        if (gethostname(host, sizeof host - 1) != 0 || !host[0])
            snprintf(host, sizeof host, "localhost");
        snprintf(g->field_manager, sizeof g->field_manager, "canary-bridge@%s", host);
    }
    if (kube_client_set_field_manager(g->kube, g->field_manager) < 0) {
        log_error(&a->log, "kubernetes: out of memory");
        return -1;
    }
    if (!a->dry_run && a->cmd == CMD_RUN) {
        char host[256] = "";
        if (gethostname(host, sizeof host - 1) != 0)
            host[0] = '\0';
        g->events = events_new(&g->loop, g->kube, &a->log, "canary-bridge", host);
        if (!g->events)
            log_warn(&a->log, "kubernetes: events disabled (out of memory)");
    }
    return 0;
}

static int start_reconciler(struct generation *g) {
    struct app *a = g->app;
    /* Informers report changes to the reconciler (drift, ownership), and
     * "synced" to the generation through it (one user pointer per informer). */
    static const informer_change_cb changed[OBJ_NKINDS] = {reconciler_middleware_changed,
                                                           reconciler_traefikservice_changed,
                                                           reconciler_ingressroute_changed};
    struct informer *infs[OBJ_NKINDS];
    for (int k = 0; k < OBJ_NKINDS; k++) {
        if (informer_init(&g->inf[k], &g->loop, g->kube, &a->log, g->api_group, "v1alpha1",
                          obj_plural[k], changed[k], on_informer_synced, &g->rec) < 0) {
            for (int i = 0; i < k; i++)
                informer_close(&g->inf[i], NULL);
            return -1;
        }
        infs[k] = &g->inf[k];
    }
    g->have_informers = true;
    struct render_opts ro = {g->api_group, a->cfg.traefik.rule_syntax, a->cfg.source.prefix,
                             g->source->ops->name};
    if (reconciler_init(&g->rec, &g->loop, &a->log, &a->cfg.reconcile, &g->keys, g->kube, infs,
                        &ro) < 0)
        return -1;
    g->have_rec = true;
    g->rec.one_shot = a->cmd == CMD_SYNC;
    g->rec.field_manager = g->field_manager;
    g->rec.on_drained = on_drained;
    g->rec.user = g;
    g->rec.hooks = (struct reconcile_hooks){.status = on_route_status,
                                            .propagated = app_live_on_propagated,
                                            .applied = on_route_applied,
                                            .pass = app_http_on_pass,
                                            .event = on_route_event,
                                            .burst = app_http_on_burst,
                                            .backend = app_http_on_backend,
                                            .plan = on_route_plan,
                                            .user = g};
    /* Backend checks: a service gets weight only when it can serve. */
    if (backends_init(&g->backends, &g->loop, g->kube, &a->log, false, reconciler_backends_changed,
                      &g->rec) < 0)
        return -1;
    g->have_backends = true;
    backends_set_traefikservices(&g->backends, &g->inf[OBJ_TRAEFIKSERVICE]);
    g->rec.backends = &g->backends;
    return app_live_start(g);
}

int app_start_objects(struct generation *g) {
    struct app *a = g->app;
    bool writes = a->cmd == CMD_RUN || a->cmd == CMD_SYNC;
    if (writes || app_cmd_inspects(a->cmd)) {
        /* render, status and diff start no pass: they preview (app_oneshot.c). */
        if (start_reconciler(g) < 0) {
            log_error(&a->log, "out of memory starting the reconciler");
            return -1;
        }
    }
    if (writes) {
        /* `sync` is an operator's deliberate one-off: it does not campaign. */
        g->leader = true;
        metric_set(a->bm.leader, NULL, 1);
        if (a->cmd == CMD_RUN && a->cfg.leader_election.enabled && start_election(g) < 0)
            return -1;
    }
    if (g->have_informers)
        for (int k = 0; k < OBJ_NKINDS; k++)
            informer_start(&g->inf[k]);
    if (g->have_backends)
        backends_start(&g->backends); /* namespaces come with the routes' passes */
    if (a->cmd == CMD_CHECK && app_oneshot_check_api(g) < 0)
        return -1;
    return 0;
}

/* ---- a generation's lifecycle ---- */

/* The loop's signals and timers, the notifier, the HTTP client and the
 * key cache: no I/O yet. Returns 0 or -1 with the reason in err. */
static int generation_init(struct generation *g, char *err, size_t errlen) {
    struct app *a = g->app;
    int rc = uv_timer_init(&g->loop, &g->resync_timer);
    rc = rc ? rc : uv_timer_init(&g->loop, &g->deadline);
    rc = rc ? rc : uv_timer_init(&g->loop, &g->drain_timer);
    rc = rc ? rc : uv_timer_init(&g->loop, &g->discovery_timer);
    if (rc == 0) {
        g->have_timers = true;
        g->resync_timer.data = g->deadline.data = g->drain_timer.data = g;
        g->discovery_timer.data = g;
    }
    rc = rc ? rc : uv_signal_init(&g->loop, &g->sig_term);
    rc = rc ? rc : uv_signal_init(&g->loop, &g->sig_int);
    rc = rc ? rc : uv_signal_init(&g->loop, &g->sig_hup);
    if (rc != 0) {
        snprintf(err, errlen, "%s", uv_strerror(rc));
        return -1;
    }
    g->sig_term.data = g->sig_int.data = g->sig_hup.data = g;
    /* A notifier that cannot be set up is disabled (and says so): run on. */
    (void)notify_init(&g->notify, &g->loop, &a->log);
    g->http = http_client_new(&g->loop, &a->log);
    g->have_keys = g->http && keycache_init(&g->keys, a->cfg.source.prefix, &a->log) == 0;
    g->keys.on_leaves = app_status_on_leaves;
    g->keys.leaves_user = g;
    if (!g->have_keys) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* Start the work: signals, the watchdog, the HTTP server, the source, the
 * Kubernetes side (at once, or once the API group is discovered), the
 * timers. Returns 0 or -1 (logged). */
static int generation_start(struct generation *g) {
    struct app *a = g->app;
    char err[1024];
    int rc = uv_signal_start(&g->sig_term, on_signal, SIGTERM);
    rc = rc ? rc : uv_signal_start(&g->sig_int, on_signal, SIGINT);
    rc = rc ? rc : uv_signal_start(&g->sig_hup, on_signal, SIGHUP);
    if (rc != 0) {
        log_error(&a->log, "cannot start: %s", uv_strerror(rc));
        return -1;
    }
    notify_start(&g->notify); /* pings come from the loop: a wedged loop stops them */
    if (a->cmd == CMD_RUN && a->cfg.server.listen[0]) {
        /* A server whose start failed is closed by generation_close. */
        g->httpd = httpd_new(&g->loop, &a->log, app_http_serve, g);
        if (!g->httpd) {
            log_error(&a->log, "cannot start: out of memory");
            return -1;
        }
        if (httpd_start(g->httpd, a->cfg.server.listen, err, sizeof err) < 0) {
            log_error(&a->log, "cannot start: %s", err);
            return -1;
        }
        log_info(&a->log, "serving the status page /, /metrics, /healthz and /readyz on %s",
                 a->cfg.server.listen);
    }
    struct source_callbacks cb = {on_snapshot, on_event, on_source_state, g};
    g->source = source_new(&g->loop, g->http, &a->log, &a->cfg.source, &cb, err, sizeof err);
    if (!g->source) {
        log_error(&a->log, "source: %s", err);
        return -1;
    }
    if (start_kube(g) < 0)
        return -1;
    bool auto_group = strcmp(a->cfg.traefik.api_group, "auto") == 0;
    snprintf(g->api_group, sizeof g->api_group, "%s",
             auto_group ? "traefik.io" : a->cfg.traefik.api_group);
    if (auto_group)
        app_discovery_start(g);
    else if (app_start_objects(g) < 0)
        return -1;
    if (g->source->ops->start(g->source) < 0) {
        log_error(&a->log, "source: could not start");
        return -1;
    }
    if (a->cmd == CMD_RUN && a->cfg.reconcile.resync_ms)
        timer_arm(&g->resync_timer, on_resync, a->cfg.reconcile.resync_ms,
                  a->cfg.reconcile.resync_ms);
    if (a->cmd != CMD_RUN)
        timer_arm(&g->deadline, on_deadline, app_oneshot_timeout_ms(g), 0);
    return 0;
}

/* Every handle is closed: release the memory, in reverse order. */
static void generation_free(struct generation *g) {
    if (g->have_rec)
        reconciler_free(&g->rec);
    events_free(g->events);
    kube_client_free(g->kube);
    if (g->have_keys)
        keycache_free(&g->keys);
    app_status_free(g);
    app_http_free(g);
    app_access_free(g);
    app_live_free(g);
}

static void warn_open_handle(uv_handle_t *h, void *arg) {
    struct app *a = arg;
    log_warn(&a->log, "  a %s handle%s", uv_handle_type_name(uv_handle_get_type(h)),
             uv_is_closing(h) ? " (closing)" : "");
}

/* One generation: build everything from a->cfg, run the loop until it is all
 * closed again, release it. Returns the exit status. */
static int run_generation(struct app *a) {
    struct generation *g = calloc(1, sizeof *g);
    if (!g) {
        log_error(&a->log, "cannot start: out of memory");
        return EXIT_RUNTIME;
    }
    g->app = a;
    if (uv_loop_init(&g->loop) != 0) {
        log_error(&a->log, "cannot initialise the event loop");
        free(g);
        return EXIT_RUNTIME;
    }
    char err[512];
    int rc = generation_init(g, err, sizeof err);
    if (rc < 0)
        log_error(&a->log, "cannot start: %s", err);
    if (rc < 0 || generation_start(g) < 0) {
        g->stopping = true;
        g->exit_code = EXIT_RUNTIME;
        generation_close(g);
    }
    uv_run(&g->loop, UV_RUN_DEFAULT);
    generation_free(g);
    int code = g->exit_code;
    if (uv_loop_close(&g->loop) != 0) {
        /* generation_close missed one (only an unreferenced handle lets
         * uv_run return with it open). Its memory is in g, which the loop
         * and libuv's signal bookkeeping may still point at: leave it. */
        log_warn(&a->log, "event loop closed with handles still open:");
        uv_walk(&g->loop, warn_open_handle, a);
        return code;
    }
    free(g);
    return code;
}

int app_main(struct app *a) {
    a->metrics = metrics_new();
    if (!a->metrics || bridge_metrics_register(a->metrics, CANARY_BRIDGE_VERSION, &a->bm) < 0) {
        log_error(&a->log, "out of memory");
        metrics_free(a->metrics);
        return EXIT_RUNTIME;
    }
    metric_set(a->bm.leader, NULL, 1); /* without leader election, every bridge writes */
    int code;
    for (;;) {
        code = run_generation(a);
        if (!a->reload)
            break;
        /* SIGHUP brought a valid configuration: swap it in and start over. */
        config_free(&a->cfg);
        a->cfg = a->next_cfg;
        memset(&a->next_cfg, 0, sizeof a->next_cfg);
        a->log.level = a->verbose ? LOG_LVL_DEBUG : a->cfg.log.level;
        a->log.format = a->cfg.log.format;
        a->reload = false;
    }
    metrics_free(a->metrics);
    a->metrics = NULL;
    return code;
}
