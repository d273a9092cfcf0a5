/* app.c - wiring: source events -> key cache -> reconciler -> Kubernetes,
 * on one libuv loop, plus the one-shot commands (sync, render, check).
 *
 * Start-up order matters: the workqueue stays paused until the source has
 * delivered a complete snapshot AND both informers have listed, so the first
 * pass for every route already knows what exists in the cluster (no blind
 * POSTs, no GET per route). */
#include "bridge/app.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge/lib/backoff.h"
#include "bridge/lib/value.h"
#include "sinks/kubeconfig.h"
#include "sinks/traefik.h"

#define ONE_SHOT_TIMEOUT_MS 30000
#define SHUTDOWN_GRACE_MS 10000

static void app_stop(struct app *a, int code);

/* ---- source callbacks ---- */

static void on_route_changed(void *user, const char *route_id) {
    struct app *a = user;
    if (a->have_rec)
        reconciler_source_changed(&a->rec, route_id, true);
}

static void on_route_resynced(void *user, const char *route_id) {
    struct app *a = user;
    if (a->have_rec)
        reconciler_source_changed(&a->rec, route_id, false);
}

static void maybe_start_work(struct app *a);
static void status_request(struct app *a, const char *route_id);

static void render_all(struct app *a);

static void on_snapshot(void *user, const struct source_kv *kvs, size_t n, uint64_t revision) {
    struct app *a = user;
    if (a->stopping)
        return;
    if (keycache_snapshot(&a->keys, kvs, n, revision, on_route_resynced, a) < 0) {
        log_error(&a->log, "source: out of memory applying a snapshot of %zu keys", n);
        return;
    }
    log_info(&a->log, "source: %zu keys under %s at revision %llu (%zu routes)", n,
             a->cfg.source.prefix, (unsigned long long)revision, a->keys.routes.count);
    bool first = !a->source_synced;
    a->source_synced = true;
    a->source_connected = true;
    metric_set(a->bm.source_connected, NULL, 1);
    switch (a->cmd) {
    case CMD_RENDER: render_all(a); return;
    case CMD_CHECK:
        printf("ok   source %s: %zu keys under %s at revision %llu\n", a->source->ops->name, n,
               a->cfg.source.prefix, (unsigned long long)revision);
        a->check_source_ok = true;
        if (a->check_api_done)
            app_stop(a, a->check_api_ok ? EXIT_OK : EXIT_RUNTIME);
        return;
    case CMD_SYNC:
        /* One complete read is all `sync` needs. */
        a->source->ops->stop(a->source);
        break;
    case CMD_RUN: break;
    }
    if (first)
        maybe_start_work(a);
}

static void on_event(void *user, enum source_event_type type, const struct source_kv *kv,
                     uint64_t revision) {
    struct app *a = user;
    (void)revision;
    if (a->stopping)
        return;
    metric_add(a->bm.source_events_total, NULL, 1);
    int rc = type == SOURCE_PUT ? keycache_put(&a->keys, kv, on_route_changed, a)
                                : keycache_delete(&a->keys, kv->key, on_route_changed, a);
    if (rc < 0)
        log_error(&a->log, "source: out of memory applying a change to %s", kv->key);
}

static void set_status(struct app *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_status(struct app *a, const char *fmt, ...) {
    char text[sizeof a->last_status];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (strcmp(text, a->last_status) == 0)
        return; /* systemd needs to hear about changes only */
    memcpy(a->last_status, text, sizeof text);
    notify_status(&a->notify, "%s%s", a->dry_run ? "dry-run: " : "", text);
}

static void on_source_state(void *user, bool connected, const char *reason) {
    struct app *a = user;
    a->source_connected = connected;
    metric_set(a->bm.source_connected, NULL, connected ? 1 : 0);
    metric_set(a->bm.source_acl_denied, NULL,
               !connected && a->source && a->source->fault == SOURCE_FAULT_ACL ? 1 : 0);
    if (connected) {
        log_info(&a->log, "source: connected");
    } else if (a->cmd == CMD_CHECK && !a->check_source_ok && a->source &&
               (a->source->fault == SOURCE_FAULT_AUTH || a->source->fault == SOURCE_FAULT_ACL)) {
        /* Retrying cannot fix refused credentials: say what the server said. */
        printf("FAIL source %s: %s\n", a->source->ops->name, reason ? reason : "refused");
        a->check_source_refused = true;
        if (a->check_api_done)
            app_stop(a, EXIT_RUNTIME);
    } else {
        log_warn(&a->log, "source: disconnected: %s", reason ? reason : "unknown");
        set_status(a, "source %s disconnected: %.160s", a->source->ops->name,
                   reason ? reason : "unknown");
    }
}

/* ---- informers ---- */

static void on_informer_synced(void *user) {
    struct app *a = user;
    a->informers_synced++;
    maybe_start_work(a);
}

static void count_routes(struct app *a, size_t *applied, size_t *failed, size_t *pending) {
    *applied = *failed = 0;
    struct map_iter it;
    map_iter_init(&it, &a->rec.status);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        const struct route_status *st = e->value;
        *applied += st->state == ROUTE_APPLIED;
        *failed += st->state == ROUTE_ERROR;
    }
    size_t known = a->keys.routes.count;
    *pending = known > *applied + *failed ? known - *applied - *failed : 0;
}

static void on_drained(void *user) {
    struct app *a = user;
    if (a->cmd == CMD_RUN && a->working && !a->stopping) {
        /* Everything known has been through a pass: in sync as of now. */
        struct timespec ts;
        if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
            metric_set(a->bm.last_sync_timestamp_seconds, NULL,
                       (double)ts.tv_sec + ts.tv_nsec / 1e9);
        size_t applied, failed, pending;
        count_routes(a, &applied, &failed, &pending);
        if (!a->ready_notified) {
            a->ready_notified = true;
            notify_ready(&a->notify);
            log_info(&a->log, "first full sync done: %zu routes applied, %zu failing", applied,
                     failed);
        }
        if (a->source_connected)
            set_status(a, "in sync: %zu routes applied, %zu failing", applied, failed);
    }
    if (a->cmd == CMD_SYNC && a->working && !a->stopping) {
        unsigned failed = a->rec.one_shot_failed;
        log_info(&a->log, "sync: done, %llu writes%s, %u routes failed",
                 (unsigned long long)a->rec.stats.writes,
                 a->dry_run ? " (dry run: validated by the API server, none persisted)" : "",
                 failed);
        app_stop(a, failed ? EXIT_RUNTIME : EXIT_OK);
    }
}

static void maybe_start_work(struct app *a) {
    if (a->working || !a->source_synced || a->informers_synced < OBJ_NKINDS || a->stopping)
        return;
    a->working = true;
    if (!a->leader) {
        /* A follower keeps its caches warm and is ready to take over. */
        log_info(&a->log, "ready as a follower: %zu routes cached; the leader is %s",
                 a->keys.routes.count,
                 a->have_lease && lease_holder(&a->lease) ? lease_holder(&a->lease) : "unknown");
        if (!a->ready_notified) {
            a->ready_notified = true;
            notify_ready(&a->notify);
        }
        set_status(a, "standby: following leader %s",
                   a->have_lease && lease_holder(&a->lease) ? lease_holder(&a->lease) : "?");
        return;
    }
    log_info(&a->log,
             "ready: %zu routes; %zu IngressRoutes, %zu TraefikServices and %zu Middlewares in "
             "the cache (%s/v1alpha1)",
             a->keys.routes.count, a->inf[OBJ_INGRESSROUTE].objects.count,
             a->inf[OBJ_TRAEFIKSERVICE].objects.count, a->inf[OBJ_MIDDLEWARE].objects.count,
             a->api_group);
    /* Every route gets a first pass: the snapshot may have arrived before the
     * reconciler existed (api_group discovery runs concurrently). */
    reconciler_enqueue_all(&a->rec);
    workqueue_pause(&a->rec.wq, false);
    set_status(a, "syncing %zu routes", a->keys.routes.count);
    /* Folders with only mistyped keys get no pass: their status says why. */
    struct map_iter it;
    map_iter_init(&it, &a->keys.leaves);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        if (!map_has(&a->keys.routes, e->value))
            status_request(a, e->value);
    if (reconciler_idle(&a->rec))
        on_drained(a);
}

static void on_resync(uv_timer_t *t) {
    struct app *a = t->data;
    if (a->stopping)
        return;
    log_debug(&a->log, "resync: re-listing source and objects");
    if (a->source->ops->resync)
        a->source->ops->resync(a->source);
    for (int k = 0; k < OBJ_NKINDS; k++)
        informer_resync(&a->inf[k]);
    reconciler_enqueue_all(&a->rec);
}

/* ---- metrics and HTTP endpoints ---- */

static void hook_pass(void *user, const char *route_id, const char *result) {
    struct app *a = user;
    (void)route_id;
    metric_add(a->bm.reconcile_total, METRIC_LABELS(result), 1);
}

static void hook_burst(void *user, bool holding, size_t changes, uint64_t held_ms) {
    struct app *a = user;
    (void)changes;
    (void)held_ms;
    if (holding)
        metric_add(a->bm.burst_holds_total, NULL, 1);
    metric_set(a->bm.burst_holding, NULL, holding ? 1 : 0);
}

static void hook_propagated(void *user, const char *route_id, double seconds) {
    struct app *a = user;
    (void)route_id;
    metric_observe(a->bm.propagation_seconds, NULL, seconds);
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

/* Service i of a route's model, and its weight (owned: services; patched:
 * weights). */
static size_t model_weight_count(const struct model_route *m) {
    return m ? (m->owned ? m->n_services : m->n_weights) : 0;
}

static const char *model_weight_at(const struct model_route *m, size_t i, double *w) {
    *w = (double)(m->owned ? m->services[i].weight : m->weights[i].weight);
    return m->owned ? m->services[i].name : m->weights[i].service;
}

/* The route_weight series of one route, from m (NULL: the route is gone).
 * The services it had series for are kept per route, so a pass touches only
 * its own series: removing by label prefix scans every series, and at 10,000
 * routes that scan was half of the CPU of a full sync (perf,
 * bench/RESULTS.md). */
static void weights_export(struct app *a, const char *route_id, const struct model_route *m) {
    char ns[MODEL_NS_MAX + 1];
    const char *name;
    split_id(route_id, ns, sizeof ns, &name);
    size_t n = model_weight_count(m);
    double w;
    char *old = map_get(&a->weight_series, route_id);
    for (const char *o = old; o && *o; o += strlen(o) + 1) {
        size_t i = 0;
        while (i < n && strcmp(model_weight_at(m, i, &w), o) != 0)
            i++;
        if (i == n)
            metric_remove(a->bm.route_weight, METRIC_LABELS(ns, name, o));
    }
    size_t len = 1;
    for (size_t i = 0; i < n; i++) {
        const char *svc = model_weight_at(m, i, &w);
        metric_set(a->bm.route_weight, METRIC_LABELS(ns, name, svc), w);
        len += strlen(svc) + 1;
    }
    char *packed = n ? malloc(len) : NULL;
    if (packed) {
        char *p = packed;
        for (size_t i = 0; i < n; i++) {
            const char *svc = model_weight_at(m, i, &w);
            size_t l = strlen(svc) + 1;
            memcpy(p, svc, l);
            p += l;
        }
        *p = '\0';
        void *prev = NULL;
        if (map_put(&a->weight_series, route_id, packed, &prev) == 0) {
            free(prev);
            return;
        }
        free(packed);
    }
    /* Gone, or no memory to remember the list: forget it (a later pass of
     * this route then cannot drop series of services it no longer has;
     * better than a scan at every pass). */
    free(map_del(&a->weight_series, route_id));
}

/* The weights last applied to a route, kept for its status key. */
static void weights_remember(struct app *a, const char *route_id, const struct model_route *m) {
    cJSON *w = m && model_weight_count(m) ? cJSON_CreateObject() : NULL;
    double v;
    for (size_t i = 0; w && i < model_weight_count(m); i++) {
        const char *svc = model_weight_at(m, i, &v); /* sets v */
        if (!cJSON_AddNumberToObject(w, svc, v)) {
            cJSON_Delete(w);
            w = NULL;
        }
    }
    char *text = w ? cJSON_PrintUnformatted(w) : NULL;
    cJSON_Delete(w);
    void *prev = NULL;
    if (text && map_put(&a->weights_in_force, route_id, text, &prev) == 0) {
        cJSON_free(prev);
        return;
    }
    cJSON_free(text);
    cJSON_free(map_del(&a->weights_in_force, route_id)); /* gone, or no memory */
}

static void hook_applied(void *user, const char *route_id, const struct model_route *m) {
    weights_export(user, route_id, m);
    weights_remember(user, route_id, m);
}

/* ---- status feedback: P<ns>/<name>/status written back to the source ---- */

struct status_write {
    struct app *a;
    bool dirty; /* changed again while in flight: write the latest when done */
    char id[];
};

static const char *state_name(enum route_state st) {
    return st == ROUTE_APPLIED ? "applied" : st == ROUTE_ERROR ? "error" : "pending";
}

static void status_send(struct app *a, struct status_write *w);

static void on_status_written(void *user, bool ok, const char *message) {
    struct status_write *w = user;
    struct app *a = w->a;
    if (!ok && !a->status_write_failing)
        log_warn(&a->log,
                 "status feedback: cannot write %s%s/status: %s (syncing goes on; logged once "
                 "until a status write succeeds)",
                 a->cfg.source.prefix, w->id, message ? message : "unknown error");
    a->status_write_failing = !ok;
    if (w->dirty && !a->stopping) {
        w->dirty = false;
        status_send(a, w);
        return;
    }
    map_del(&a->status_writes, w->id);
    free(w);
}

/* The status document of a route, without its time; NULL when there is
 * nothing to say (no pass yet, no key with an unknown leaf). */
static cJSON *status_doc(struct app *a, const char *id) {
    const struct route_status *st = a->have_rec ? reconciler_status(&a->rec, id) : NULL;
    char leaves[1024];
    size_t typos = keycache_leaf_errors(&a->keys, id, leaves, sizeof leaves);
    if (!st && !typos)
        return NULL;
    cJSON *doc = cJSON_CreateObject();
    const char *wtext = map_get(&a->weights_in_force, id);
    cJSON *weights = wtext ? cJSON_Parse(wtext) : NULL;
    /* A mistyped leaf makes the route's status an error naming the key,
     * whatever its objects are; "objects" then says how those are. */
    bool ok = doc &&
              cJSON_AddStringToObject(doc, "state", typos ? "error" : state_name(st->state)) &&
              cJSON_AddStringToObject(doc, "message",
                                      typos         ? leaves
                                      : st->message ? st->message
                                                    : "") &&
              (!typos || !st || cJSON_AddStringToObject(doc, "objects", state_name(st->state))) &&
              (!st || !st->weights_held || cJSON_AddBoolToObject(doc, "weights_held", true)) &&
              (!st || (cJSON_AddNumberToObject(doc, "revision", (double)st->revision) &&
                       cJSON_AddStringToObject(doc, "resourceVersion",
                                               st->resource_version ? st->resource_version : "")));
    if (ok && weights) {
        cJSON_AddItemToObject(doc, "weights", weights);
        weights = NULL;
    }
    cJSON_Delete(weights);
    if (!ok) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

/* The status key already says this (its time aside): writing it again would
 * only move the time, on every restart and reload. */
static bool status_unchanged(struct app *a, const char *id, const cJSON *doc) {
    const char *cur = keycache_status(&a->keys, id);
    cJSON *was = cur ? cJSON_Parse(cur) : NULL;
    if (!was)
        return false;
    cJSON_DeleteItemFromObjectCaseSensitive(was, "time");
    bool same = cJSON_Compare(doc, was, true);
    cJSON_Delete(was);
    return same;
}

static void status_send(struct app *a, struct status_write *w) {
    cJSON *doc = status_doc(a, w->id);
    char stamp[40] = "", key[MODEL_NS_MAX + MODEL_NAME_MAX + 256];
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &tm))
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char *text = NULL;
    if (doc && !status_unchanged(a, w->id, doc) && cJSON_AddStringToObject(doc, "time", stamp))
        text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    snprintf(key, sizeof key, "%s%s/status", a->cfg.source.prefix, w->id);
    if (!text || !a->source->ops->put ||
        a->source->ops->put(a->source, key, text, strlen(text), on_status_written, w) < 0) {
        map_del(&a->status_writes, w->id);
        free(w);
    }
    cJSON_free(text);
}

/* Write route_id's status key (one write in flight per route; a change
 * meanwhile is written when it is done). */
static void status_request(struct app *a, const char *route_id) {
    if (!a->cfg.reconcile.status || a->dry_run || a->cmd == CMD_RENDER)
        return;
    struct status_write *w = map_get(&a->status_writes, route_id);
    if (w) {
        w->dirty = true; /* coalesce: one write in flight per route */
    } else if ((w = calloc(1, sizeof *w + strlen(route_id) + 1))) {
        w->a = a;
        strcpy(w->id, route_id);
        if (map_put(&a->status_writes, route_id, w, NULL) < 0)
            free(w);
        else
            status_send(a, w);
    }
}

/* A key with an unknown leaf came or went: the route's status says so. */
static void on_leaves(void *user, const char *route_id) {
    struct app *a = user;
    if (a->working && a->leader && !a->stopping)
        status_request(a, route_id);
}

static void hook_status(void *user, const char *route_id, const struct route_status *st) {
    struct app *a = user;
    if (st || keycache_leaf_errors(&a->keys, route_id, NULL, 0))
        status_request(a, route_id);
    if (!st) { /* the route is gone: so are its weight series */
        weights_export(a, route_id, NULL);
        weights_remember(a, route_id, NULL);
    }
}

/* Gauges that are cheaper to compute at scrape time than to keep current. */
static void metrics_refresh(struct app *a) {
    if (!a->have_rec)
        return;
    size_t applied, failed, pending;
    count_routes(a, &applied, &failed, &pending);
    metric_set(a->bm.routes, METRIC_LABELS("applied"), (double)applied);
    metric_set(a->bm.routes, METRIC_LABELS("error"), (double)failed);
    metric_set(a->bm.routes, METRIC_LABELS("pending"), (double)pending);
    metric_set(a->bm.deletion_held, NULL, a->rec.guard.holding ? 1 : 0);
    metric_set(a->bm.deletion_held_routes, NULL,
               a->rec.guard.holding ? (double)a->rec.guard.gone : 0);
    if (a->rec.stats.conflicts > a->conflicts_seen) {
        metric_add(a->bm.conflicts_total, NULL,
                   (double)(a->rec.stats.conflicts - a->conflicts_seen));
        a->conflicts_seen = a->rec.stats.conflicts;
    }
    if (a->rec.stats.undone > a->undone_seen) {
        metric_add(a->bm.undone_writes_total, NULL, (double)(a->rec.stats.undone - a->undone_seen));
        a->undone_seen = a->rec.stats.undone;
    }
}

/* Why the Kubernetes side cannot work now, or NULL. */
static const char *kube_problem(struct app *a) {
    const char *p = a->kube ? kube_client_problem(a->kube) : NULL;
    for (int k = 0; !p && a->have_informers && k < OBJ_NKINDS; k++)
        p = informer_problem(&a->inf[k]);
    return p;
}

static void on_http(void *user, const char *method, const char *path, struct httpd_response *res) {
    struct app *a = user;
    (void)method;
    if (strcmp(path, "/healthz") == 0) {
        /* Answering at all means the loop turns. */
        buf_puts(&res->body, "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        char held[512];
        if (a->have_rec && reconciler_guard_describe(&a->rec, held, sizeof held)) {
            res->status = 503; /* a person has to look: see reconcile.h */
            buf_printf(&res->body, "%s\n", held);
            return;
        }
        /* The sink counts as much as the source: a bridge that cannot reach
         * the API server, or whose credentials it refuses, is not ready. */
        const char *sink = kube_problem(a);
        bool ready = a->working && a->source_connected && !a->stopping && !sink;
        res->status = ready ? 200 : 503;
        if (ready || a->stopping || !a->working || !a->source_connected)
            buf_puts(&res->body, ready         ? "ready\n"
                                 : a->stopping ? "stopping\n"
                                 : !a->working ? "first sync not done\n"
                                               : "source disconnected\n");
        else
            buf_printf(&res->body, "kubernetes: %s\n", sink);
    } else if (strcmp(path, "/metrics") == 0) {
        metrics_refresh(a);
        res->content_type = METRICS_CONTENT_TYPE;
        if (metrics_render(a->metrics, &res->body) < 0) {
            res->status = 500;
            buf_reset(&res->body);
        }
    } else {
        res->status = 404;
        buf_puts(&res->body, "not found: try /metrics, /healthz or /readyz\n");
    }
}

static void hook_event(void *user, const cJSON *obj, const char *type, const char *reason,
                       const char *message) {
    struct app *a = user;
    if (!a->events)
        return;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    events_post(a->events, kobj_str(meta, "namespace", NULL), kobj_str(obj, "apiVersion", NULL),
                kobj_str(obj, "kind", NULL), kobj_str(meta, "name", NULL),
                kobj_str(meta, "uid", NULL), type, reason, "%s", message);
}

static void on_kube_answer(void *user, const char *verb, long status) {
    struct app *a = user;
    char code[16];
    snprintf(code, sizeof code, "%ld", status);
    metric_add(a->bm.kube_requests_total, METRIC_LABELS(verb, status ? code : "error"), 1);
}

/* ---- leader election ---- */

static void on_leader_change(void *user, bool leader) {
    struct app *a = user;
    a->leader = leader;
    metric_set(a->bm.leader, NULL, leader ? 1 : 0);
    if (!a->have_rec || a->stopping)
        return;
    if (leader) {
        if (a->working) {
            /* Take over from a warm cache: one pass over every route. */
            reconciler_enqueue_all(&a->rec);
            workqueue_pause(&a->rec.wq, false);
            set_status(a, "leader: syncing %zu routes", a->keys.routes.count);
        } else {
            maybe_start_work(a);
        }
    } else {
        workqueue_pause(&a->rec.wq, true);
        reconciler_abort(&a->rec);
        set_status(a, "standby: following leader %s",
                   lease_holder(&a->lease) ? lease_holder(&a->lease) : "?");
    }
}

static int start_election(struct app *a) {
    const struct config *c = &a->cfg;
    char host[256] = "";
    const char *identity = c->leader_election.identity;
    if (!identity || !*identity) {
        if (gethostname(host, sizeof host - 1) != 0 || !host[0])
            snprintf(host, sizeof host, "canary-bridge-%ld", (long)getpid());
        identity = host;
    }
    if (lease_init(&a->lease, &a->loop, a->kube, &a->log, c->leader_election.namespace,
                   c->leader_election.name, identity, c->leader_election.lease_duration_ms,
                   c->leader_election.renew_deadline_ms, c->leader_election.retry_period_ms,
                   on_leader_change, a) < 0) {
        log_error(&a->log, "leader election: cannot start (check leader_election durations)");
        return -1;
    }
    a->have_lease = true;
    a->leader = false;
    metric_set(a->bm.leader, NULL, 0);
    log_info(&a->log, "leader election: lease %s/%s as %s", c->leader_election.namespace,
             c->leader_election.name, identity);
    return lease_start(&a->lease);
}

/* ---- render ---- */

static int cmp_str(const void *x, const void *y) {
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static int render_route(struct app *a, const char *id, buf_t *out) {
    struct model_input in;
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1], err[1024];
    struct model_route m;
    if (keycache_input(&a->keys, id, &in, ns, name) < 0)
        return 0;
    int rc = model_build(&in, &m, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "error: route %s: %s\n", id, err);
        return -1;
    }
    if (rc == 1)
        return 0;
    struct render_opts ro = {a->api_group, a->cfg.traefik.rule_syntax, a->cfg.source.prefix,
                             a->source->ops->name};
    int ret = 0;
    if (m.owned) {
        /* In write order: what the IngressRoute references comes first. */
        for (size_t i = 0; i < m.n_rules && ret == 0; i++) {
            cJSON *mw = traefik_render_middleware(&m, i, &ro);
            if (mw && value_emit_yaml(mw, out, 1) < 0)
                ret = -1;
            cJSON_Delete(mw);
        }
        if (m.sticky.enabled && ret == 0) {
            cJSON *ts = traefik_render_traefikservice(&m, &ro);
            if (!ts || value_emit_yaml(ts, out, 1) < 0)
                ret = -1;
            cJSON_Delete(ts);
        }
        cJSON *ir = traefik_render_ingressroute(&m, &ro);
        if (!ir || value_emit_yaml(ir, out, 1) < 0)
            ret = -1;
        cJSON_Delete(ir);
    } else {
        /* Patched mode: the object is not ours; show what would change. */
        buf_printf(out, "# %s: patched mode: weights set on the existing IngressRoute\n", id);
        buf_printf(out, "# (every route of it; all other fields untouched)\n");
        cJSON *w = cJSON_CreateObject();
        for (size_t i = 0; w && i < m.n_weights; i++)
            cJSON_AddNumberToObject(w, m.weights[i].service, (double)m.weights[i].weight);
        cJSON *doc = cJSON_CreateObject();
        if (doc && w) {
            char api[96];
            snprintf(api, sizeof api, "%s/v1alpha1", ro.api_group);
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
    }
    model_route_free(&m);
    return ret;
}

static void render_all(struct app *a) {
    size_t n = a->keys.routes.count, k = 0;
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    if (!ids) {
        app_stop(a, EXIT_RUNTIME);
        return;
    }
    struct map_iter it;
    map_iter_init(&it, &a->keys.routes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        ids[k++] = e->key;
    qsort(ids, k, sizeof *ids, cmp_str);
    buf_t out = BUF_INIT;
    int failed = 0, found = 0;
    for (size_t i = 0; i < k; i++) {
        if (a->render_route && strcmp(a->render_route, ids[i]) != 0)
            continue;
        found++;
        if (render_route(a, ids[i], &out) < 0)
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
    app_stop(a, failed ? EXIT_RUNTIME : EXIT_OK);
}

/* ---- check ---- */

static void on_check_api(void *user, const struct kube_response *res) {
    struct app *a = user;
    a->check_api_done = true;
    if (res->status != 200 || !res->json) {
        printf("FAIL kubernetes: GET /apis/%s/v1alpha1: %s%s%ld %s\n", a->api_group, res->error,
               res->error[0] ? " " : "HTTP ", res->status, res->message);
    } else {
        const cJSON *rl = cJSON_GetObjectItemCaseSensitive(res->json, "resources"), *it;
        bool ir = false, mw = false;
        cJSON_ArrayForEach(it, rl) {
            const char *name = kobj_str(it, "name", NULL);
            ir |= name && strcmp(name, "ingressroutes") == 0;
            mw |= name && strcmp(name, "middlewares") == 0;
        }
        a->check_api_ok = ir && mw;
        printf("%s kubernetes: %s/v1alpha1 %s\n", a->check_api_ok ? "ok  " : "FAIL", a->api_group,
               a->check_api_ok ? "serves ingressroutes and middlewares"
                               : "does not serve ingressroutes and middlewares (CRDs missing?)");
    }
    if (!a->check_api_ok || a->check_source_ok || a->check_source_refused)
        app_stop(a, a->check_api_ok && !a->check_source_refused ? EXIT_OK : EXIT_RUNTIME);
}

/* ---- signals, timers, shutdown ---- */

static void close_if_open(uv_handle_t *h) {
    if (h->loop && !uv_is_closing(h))
        uv_close(h, NULL);
}

static void teardown(struct app *a) {
    if (a->torn_down)
        return;
    a->torn_down = true;
    if (a->source)
        a->source->ops->close(a->source); /* freed as the loop runs on */
    a->source = NULL;
    if (a->have_rec)
        reconciler_close(&a->rec);
    if (a->have_informers)
        for (int k = 0; k < OBJ_NKINDS; k++)
            informer_stop(&a->inf[k]);
    kube_call_cancel(a->discovery);
    a->discovery = NULL;
    if (a->have_lease)
        lease_stop(&a->lease);
    if (a->events)
        events_close(a->events);
    if (a->kube)
        kube_client_cancel_all(a->kube); /* before the http client goes */
    if (a->http)
        http_client_close(a->http);
    if (a->httpd) {
        httpd_close(a->httpd);
        a->httpd = NULL;
    }
    notify_close(&a->notify);
    close_if_open((uv_handle_t *)&a->sig_term);
    close_if_open((uv_handle_t *)&a->sig_int);
    close_if_open((uv_handle_t *)&a->sig_hup);
    if (a->have_timers) {
        close_if_open((uv_handle_t *)&a->resync_timer);
        close_if_open((uv_handle_t *)&a->deadline);
        close_if_open((uv_handle_t *)&a->drain_timer);
        close_if_open((uv_handle_t *)&a->discovery_timer);
    }
}

static void on_lease_released(void *user) {
    teardown(user);
}

static void on_drain_check(uv_timer_t *t) {
    struct app *a = t->data;
    /* Shutdown only: wait for writes already sent, so a route is never left
     * half-written by a stop. Bounded by the deadline timer. */
    if (a->kube && kube_client_writes_in_flight(a->kube) > 0)
        return;
    if (a->have_lease && a->leader && !a->lease_releasing) {
        /* Hand over at once rather than let the others wait out the lease. */
        a->lease_releasing = true;
        uv_timer_stop(&a->drain_timer);
        lease_release(&a->lease, on_lease_released, a);
        return;
    }
    if (!a->lease_releasing)
        teardown(a);
}

static uint64_t one_shot_timeout_ms(const struct app *a) {
    return a->timeout_ms ? a->timeout_ms : ONE_SHOT_TIMEOUT_MS;
}

static void on_deadline(uv_timer_t *t) {
    struct app *a = t->data;
    if (a->stopping) {
        log_warn(&a->log, "shutdown: writes still in flight after %d ms; exiting anyway",
                 SHUTDOWN_GRACE_MS);
        teardown(a);
        return;
    }
    double secs = (double)one_shot_timeout_ms(a) / 1000;
    switch (a->cmd) {
    case CMD_CHECK:
        if (!a->check_source_ok && !a->check_source_refused)
            printf("FAIL source %s: no answer within %g s\n", a->source->ops->name, secs);
        if (!a->check_api_done)
            printf("FAIL kubernetes: no answer within %g s\n", secs);
        break;
    default:
        log_error(&a->log, "%s: not finished within %g s (source %s, informers %s)",
                  a->cmd == CMD_SYNC ? "sync" : "render", secs,
                  a->source_synced ? "read" : "unreachable",
                  a->informers_synced >= 2 ? "listed" : "not listed");
    }
    app_stop(a, EXIT_RUNTIME);
}

static void app_stop(struct app *a, int code) {
    if (a->stopping)
        return;
    a->stopping = true;
    a->exit_code = code;
    if (!a->reload)
        notify_stopping(&a->notify);
    if (a->source)
        a->source->ops->stop(a->source);
    if (a->have_informers)
        for (int k = 0; k < OBJ_NKINDS; k++)
            informer_stop(&a->inf[k]);
    if (a->have_rec)
        workqueue_pause(&a->rec.wq, true);
    if (!a->have_timers) {
        teardown(a);
        return;
    }
    uv_timer_stop(&a->resync_timer);
    uv_timer_start(&a->deadline, on_deadline, SHUTDOWN_GRACE_MS, 0);
    uv_timer_start(&a->drain_timer, on_drain_check, 0, 20);
}

static void on_signal(uv_signal_t *s, int signum) {
    struct app *a = s->data;
    if (signum == SIGHUP) {
        if (a->cmd != CMD_RUN || a->stopping)
            return;
        struct config next;
        char err[1024];
        notify_reloading(&a->notify);
        if (config_load(a->cfg.path, &next, err, sizeof err) < 0) {
            log_error(&a->log, "reload: %s; keeping the running configuration", err);
            set_status(a, "reload refused: %.200s", err);
            notify_ready(&a->notify); /* still serving, with the old config */
            return;
        }
        log_info(&a->log, "reload: %s is valid; restarting the pipeline with it", a->cfg.path);
        a->next_cfg = next;
        a->reload = true;
        app_stop(a, EXIT_OK);
        return;
    }
    log_info(&a->log, "%s: finishing in-flight writes, then exiting",
             signum == SIGTERM ? "SIGTERM" : "SIGINT");
    app_stop(a, EXIT_OK);
}

/* ---- start-up ---- */

static int start_kube(struct app *a) {
    struct kube_conn conn;
    char err[1024];
    if (kube_conn_from_config(&a->cfg.kubernetes, &conn, err, sizeof err) < 0) {
        log_error(&a->log, "kubernetes: %s", err);
        if (a->cmd == CMD_CHECK)
            printf("FAIL kubernetes: %s\n", err);
        return -1;
    }
    if (a->cmd == CMD_CHECK) /* what it will use; never the credential itself */
        printf("ok   kubernetes: context %s, server %s, user %s, credential %s\n",
               conn.context ? conn.context : "(none: kubernetes.server or in-cluster)", conn.server,
               conn.user ? conn.user : "(none)",
               conn.exec                         ? "from exec plugin"
               : conn.cert_pem || conn.cert_file ? "client certificate"
               : conn.token_file                 ? "token file"
               : conn.token                      ? "token"
                                                 : "none (anonymous)");
    a->kube = kube_client_new(&a->loop, a->http, &a->log, &conn, err, sizeof err);
    if (!a->kube) {
        kube_conn_free(&conn);
        log_error(&a->log, "kubernetes: %s", err);
        return -1;
    }
    kube_client_set_dry_run(a->kube, a->dry_run);
    kube_client_set_observer(a->kube, on_kube_answer, a);
    /* A name per bridge, so managedFields tell two bridges apart (fights). */
    if (a->cfg.kubernetes.field_manager) {
        snprintf(a->field_manager, sizeof a->field_manager, "%s", a->cfg.kubernetes.field_manager);
    } else {
        char host[64] = "";
        if (gethostname(host, sizeof host - 1) != 0 || !host[0])
            snprintf(host, sizeof host, "localhost");
        snprintf(a->field_manager, sizeof a->field_manager, "canary-bridge@%s", host);
    }
    if (kube_client_set_field_manager(a->kube, a->field_manager) < 0) {
        log_error(&a->log, "kubernetes: out of memory");
        return -1;
    }
    if (!a->dry_run && a->cmd == CMD_RUN) {
        char host[256] = "";
        if (gethostname(host, sizeof host - 1) != 0)
            host[0] = '\0';
        a->events = events_new(&a->loop, a->kube, &a->log, "canary-bridge", host);
        if (!a->events)
            log_warn(&a->log, "kubernetes: events disabled (out of memory)");
    }
    return 0;
}

static void on_informer_synced_rec(void *user);

static int start_reconciler(struct app *a) {
    /* Informers report changes to the reconciler (drift, ownership), and
     * "synced" to the app through it (one user pointer per informer). */
    static const informer_change_cb changed[OBJ_NKINDS] = {reconciler_middleware_changed,
                                                           reconciler_traefikservice_changed,
                                                           reconciler_ingressroute_changed};
    struct informer *infs[OBJ_NKINDS];
    for (int k = 0; k < OBJ_NKINDS; k++) {
        if (informer_init(&a->inf[k], &a->loop, a->kube, &a->log, a->api_group, "v1alpha1",
                          obj_plural[k], changed[k], on_informer_synced_rec, &a->rec) < 0) {
            for (int i = 0; i < k; i++)
                informer_stop(&a->inf[i]);
            return -1;
        }
        infs[k] = &a->inf[k];
    }
    a->have_informers = true;
    struct render_opts ro = {a->api_group, a->cfg.traefik.rule_syntax, a->cfg.source.prefix,
                             a->source->ops->name};
    if (reconciler_init(&a->rec, &a->loop, &a->log, &a->cfg.reconcile, &a->keys, a->kube, infs,
                        &ro) < 0)
        return -1;
    a->have_rec = true;
    a->rec.one_shot = a->cmd == CMD_SYNC;
    a->rec.field_manager = a->field_manager;
    a->rec.on_drained = on_drained;
    a->rec.user = a;
    a->rec.hooks = (struct reconcile_hooks){.status = hook_status,
                                            .propagated = hook_propagated,
                                            .applied = hook_applied,
                                            .pass = hook_pass,
                                            .event = hook_event,
                                            .burst = hook_burst,
                                            .user = a};
    workqueue_pause(&a->rec.wq, true);
    return 0;
}

/* Everything that needs the API group: informers and the reconciler (run,
 * sync) or the CRD check (check). */
static int start_objects(struct app *a) {
    if (a->cmd == CMD_RUN || a->cmd == CMD_SYNC) {
        if (start_reconciler(a) < 0) {
            log_error(&a->log, "out of memory starting the reconciler");
            return -1;
        }
        /* `sync` is an operator's deliberate one-off: it does not campaign. */
        a->leader = true;
        metric_set(a->bm.leader, NULL, 1);
        if (a->cmd == CMD_RUN && a->cfg.leader_election.enabled && start_election(a) < 0)
            return -1;
        for (int k = 0; k < OBJ_NKINDS; k++)
            informer_start(&a->inf[k]);
    }
    if (a->cmd == CMD_CHECK) {
        char path[256];
        snprintf(path, sizeof path, "/apis/%s/v1alpha1", a->api_group);
        if (!kube_request(a->kube, "GET", path, NULL, NULL, 0, on_check_api, a))
            return -1;
    }
    return 0;
}

static void discover_group(struct app *a);

static void on_discovery_timer(uv_timer_t *t) {
    discover_group(t->data);
}

/* traefik.api_group: auto. traefik.io is Traefik v3's group and served by
 * v2.10+ too; traefik.containo.us alone means an older Traefik v2. */
static void on_discovery(void *user, const struct kube_response *res) {
    struct app *a = user;
    a->discovery = NULL;
    bool io = false, containo = false;
    const cJSON *g;
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(res->json, "groups");
    cJSON_ArrayForEach(g, groups) {
        const char *name = kobj_str(g, "name", NULL);
        const cJSON *v;
        bool has_v = false;
        cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(g, "versions")) {
            const char *ver = kobj_str(v, "version", NULL);
            has_v |= ver && strcmp(ver, "v1alpha1") == 0;
        }
        io |= has_v && name && strcmp(name, "traefik.io") == 0;
        containo |= has_v && name && strcmp(name, "traefik.containo.us") == 0;
    }
    if (res->status == 200 && (io || containo)) {
        snprintf(a->api_group, sizeof a->api_group, "%s",
                 io ? "traefik.io" : "traefik.containo.us");
        log_info(&a->log, "kubernetes: traefik.api_group auto: using %s/v1alpha1", a->api_group);
        if (start_objects(a) < 0)
            app_stop(a, EXIT_RUNTIME);
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
        a->check_api_done = true;
        app_stop(a, EXIT_RUNTIME);
        return;
    }
    uint64_t ms = backoff_ms(a->discovery_failures++, 500, 30000);
    log_warn(&a->log, "kubernetes: traefik.api_group auto: %s; retrying in %llu ms", why,
             (unsigned long long)ms);
    uv_timer_start(&a->discovery_timer, on_discovery_timer, ms, 0);
}

static void discover_group(struct app *a) {
    if (a->stopping)
        return;
    a->discovery = kube_request(a->kube, "GET", "/apis", NULL, NULL, 0, on_discovery, a);
    if (!a->discovery)
        app_stop(a, EXIT_RUNTIME);
}

static int start_all(struct app *a) {
    char err[1024];
    struct source_callbacks cb = {on_snapshot, on_event, on_source_state, a};
    a->source = source_new(&a->loop, a->http, &a->log, &a->cfg.source, &cb, err, sizeof err);
    if (!a->source) {
        log_error(&a->log, "source: %s", err);
        return -1;
    }
    if (a->cmd != CMD_RENDER && start_kube(a) < 0)
        return -1;
    bool auto_group = strcmp(a->cfg.traefik.api_group, "auto") == 0;
    /* render never talks to the API server: auto renders for traefik.io. */
    snprintf(a->api_group, sizeof a->api_group, "%s",
             auto_group ? "traefik.io" : a->cfg.traefik.api_group);
    if (a->cmd != CMD_RENDER) {
        if (auto_group)
            discover_group(a);
        else if (start_objects(a) < 0)
            return -1;
    }
    if (a->source->ops->start(a->source) < 0) {
        log_error(&a->log, "source: could not start");
        return -1;
    }
    if (a->cmd == CMD_RUN && a->cfg.reconcile.resync_ms)
        uv_timer_start(&a->resync_timer, on_resync, a->cfg.reconcile.resync_ms,
                       a->cfg.reconcile.resync_ms);
    if (a->cmd != CMD_RUN)
        uv_timer_start(&a->deadline, on_deadline, one_shot_timeout_ms(a), 0);
    return 0;
}

/* Informers call back with the reconciler as user; find the app from it. */
static void on_informer_synced_rec(void *user) {
    struct reconciler *r = user;
    on_informer_synced(r->user);
}

static void warn_open_handle(uv_handle_t *h, void *arg) {
    struct app *a = arg;
    log_warn(&a->log, "  a %s handle%s", uv_handle_type_name(uv_handle_get_type(h)),
             uv_is_closing(h) ? " (closing)" : "");
}

/* One generation: build everything from a->cfg, run the loop until it is
 * all closed again, release it. */
static int app_generation(struct app *a) {
    if (uv_loop_init(&a->loop) != 0) {
        log_error(&a->log, "cannot initialise the event loop");
        return EXIT_RUNTIME;
    }
    a->exit_code = EXIT_OK;
    int rc = uv_timer_init(&a->loop, &a->resync_timer);
    rc = rc ? rc : uv_timer_init(&a->loop, &a->deadline);
    rc = rc ? rc : uv_timer_init(&a->loop, &a->drain_timer);
    rc = rc ? rc : uv_timer_init(&a->loop, &a->discovery_timer);
    if (rc == 0) {
        a->have_timers = true;
        a->resync_timer.data = a->deadline.data = a->drain_timer.data = a;
        a->discovery_timer.data = a;
    }
    rc = rc ? rc : uv_signal_init(&a->loop, &a->sig_term);
    rc = rc ? rc : uv_signal_init(&a->loop, &a->sig_int);
    rc = rc ? rc : uv_signal_init(&a->loop, &a->sig_hup);
    if (rc == 0) {
        a->sig_term.data = a->sig_int.data = a->sig_hup.data = a;
        rc = uv_signal_start(&a->sig_term, on_signal, SIGTERM);
        rc = rc ? rc : uv_signal_start(&a->sig_int, on_signal, SIGINT);
        rc = rc ? rc : uv_signal_start(&a->sig_hup, on_signal, SIGHUP);
    }
    if (rc == 0 && notify_init(&a->notify, &a->loop, &a->log) == 0)
        notify_watchdog_start(&a->notify); /* pings come from the loop: a wedged loop stops them */
    a->http = rc == 0 ? http_client_new(&a->loop, &a->log) : NULL;
    char err[512] = "out of memory";
    bool ok = a->http && keycache_init(&a->keys, a->cfg.source.prefix, &a->log) == 0;
    a->have_keys = ok;
    a->keys.on_leaves = on_leaves;
    a->keys.leaves_user = a;
    if (ok && a->cmd == CMD_RUN && a->cfg.server.listen[0]) {
        a->httpd =
            httpd_start(&a->loop, &a->log, a->cfg.server.listen, on_http, a, err, sizeof err);
        if (!a->httpd)
            ok = false;
        else
            log_info(&a->log, "serving /metrics, /healthz and /readyz on %s", a->cfg.server.listen);
    }
    if (!ok) {
        log_error(&a->log, "cannot start: %s", rc ? uv_strerror(rc) : err);
        a->exit_code = EXIT_RUNTIME;
        a->stopping = true;
        teardown(a);
    } else if (start_all(a) < 0) {
        a->stopping = true;
        a->exit_code = EXIT_RUNTIME;
        teardown(a);
    }
    uv_run(&a->loop, UV_RUN_DEFAULT);
    /* Every handle is closed: release memory in reverse order. */
    if (a->have_rec)
        reconciler_free(&a->rec);
    if (a->have_informers)
        for (int k = 0; k < OBJ_NKINDS; k++)
            informer_free(&a->inf[k]);
    events_free(a->events);
    kube_client_free(a->kube);
    if (a->have_keys)
        keycache_free(&a->keys);
    struct map_iter it;
    map_iter_init(&it, &a->status_writes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        free(e->value); /* their source requests were cancelled without callbacks */
    map_free(&a->status_writes);
    map_iter_init(&it, &a->weight_series);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        free(e->value);
    map_free(&a->weight_series);
    map_iter_init(&it, &a->weights_in_force);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        cJSON_free(e->value);
    map_free(&a->weights_in_force);
    if (uv_loop_close(&a->loop) != 0) {
        /* teardown() missed one (only an unreferenced handle lets uv_run
         * return with it open): the next generation would inherit it. */
        log_warn(&a->log, "event loop closed with handles still open:");
        uv_walk(&a->loop, warn_open_handle, a);
    }
    return a->exit_code;
}

/* Forget one generation's state so the next starts from scratch. */
static void generation_reset(struct app *a) {
    a->http = NULL;
    a->source = NULL;
    a->kube = NULL;
    a->httpd = NULL;
    a->discovery = NULL;
    a->events = NULL;
    a->have_lease = a->lease_releasing = a->leader = false;
    memset(&a->lease, 0, sizeof a->lease);
    a->have_keys = a->have_informers = a->have_rec = a->have_timers = false;
    a->source_synced = a->source_connected = a->working = false;
    a->stopping = a->torn_down = a->ready_notified = false;
    a->informers_synced = a->discovery_failures = 0;
    a->conflicts_seen = 0; /* a new reconciler counts from zero */
    a->undone_seen = 0;
    a->status_write_failing = false;
    memset(&a->keys, 0, sizeof a->keys);
    memset(&a->rec, 0, sizeof a->rec);
    memset(a->inf, 0, sizeof a->inf);
    memset(&a->notify, 0, sizeof a->notify);
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
        code = app_generation(a);
        if (!a->reload)
            break;
        /* SIGHUP brought a valid configuration: swap it in and start over. */
        config_free(&a->cfg);
        a->cfg = a->next_cfg;
        memset(&a->next_cfg, 0, sizeof a->next_cfg);
        a->log.level = a->verbose ? LOG_LVL_DEBUG : a->cfg.log.level;
        a->reload = false;
        generation_reset(a);
    }
    metrics_free(a->metrics);
    a->metrics = NULL;
    return code;
}
