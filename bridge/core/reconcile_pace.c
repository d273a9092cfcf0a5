/* reconcile_pace.c - how often the reconciler writes and retries; see
 * reconcile.h (struct reconcile_pace).
 *
 * Write pacing. A key rewritten in a tight loop would otherwise become one
 * write per pass, as fast as the API server answers: each edit that arrives
 * while a pass is in flight makes one more pass. So a route's passes write
 * at most reconcile.object_writes_per_second times a second: a token bucket
 * of one token per route, refilled every 1/N s. A pass takes the token at
 * its first write request, and its other writes (every object of the route
 * is written at most once per pass, 409 retries aside) go with it, so each
 * object gets at most N writes a second. The first write after a quiet
 * spell finds the token there and goes at once: a person's edit never
 * waits. A pass that finds it gone writes nothing and is deferred until the
 * token is back (workqueue_done_defer); edits meanwhile wait with it, and
 * the pass that then runs reads the keys as they are by then, so what is
 * written last is always the latest state, never an intermediate one.
 *
 * Outage recovery. A route whose write fails because the API server did
 * not answer (no answer at all, a timeout, or 5xx) is retried with a
 * backoff that grows to reconcile.retry_max; after a long outage, every
 * such route would wait out its own backoff. Instead these routes wait for
 * the API server (pace.waiting), and the first successful answer to any
 * request (the observer of the Kubernetes client calls
 * reconciler_api_answered) queues all of them at once. So that the
 * recovery is noticed even when nothing else talks to the API server,
 * while routes wait a probe asks every RECONCILE_PROBE_MS: a GET of one
 * waiting route's IngressRoute, which reaches the API server's storage as
 * the writes do; any answer from there (200, or 404) ends the wait.
 * A route's own failure (4xx: invalid, forbidden, conflicts) is not a
 * wait for the API server and keeps its backoff. A route that fails again
 * on the retry a success gave it (its writes fail while other requests
 * succeed: an admission webhook that rejects it with 500, say) is not
 * released again until a retry on its own backoff has failed, so it costs
 * at most two tries per backoff period, not one per successful answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/reconcile_internal.h"
#include "bridge/lib/timer.h"

/* ---- write pacing ---- */

bool pace_write(struct job *j) {
    struct reconciler *r = j->r;
    unsigned per_second = r->cfg->object_writes_per_second;
    if (per_second == 0 || j->paced)
        return true;
    struct route_status *s = status_get(r, j->id);
    if (!s) {
        j->paced = true; /* without memory for the record, unpaced */
        return true;
    }
    uint64_t now = uv_now(r->loop);
    if (now >= s->write_next_ms) {
        s->write_next_ms = now + (1000 + per_second - 1) / per_second;
        j->paced = true;
        return true;
    }
    r->stats.delayed++;
    log_debug(r->log, "route %s: written less than %u ms ago; the next write waits %llu ms", j->id,
              (1000 + per_second - 1) / per_second, (unsigned long long)(s->write_next_ms - now));
    j->defer_ms = s->write_next_ms - now;
    job_finish(j, true, false, 0);
    return false;
}

/* ---- outage recovery ---- */

static void probe_fire(uv_timer_t *t);

int pace_init(struct reconciler *r) {
    if (uv_timer_init(r->loop, &r->pace.probe) != 0)
        return -1;
    r->pace.probe.data = r;
    return 0;
}

static void probe_arm(struct reconciler *r) {
    struct reconcile_pace *p = &r->pace;
    if (p->closing || p->call || !p->waiting.count || uv_is_active((uv_handle_t *)&p->probe))
        return;
    timer_arm(&p->probe, probe_fire, RECONCILE_PROBE_MS, 0);
}

/* Queue every waiting route now (those in flight decide for themselves
 * when their pass ends); why: what answered, for the log. */
static void release_all(struct reconciler *r, const char *why) {
    struct reconcile_pace *p = &r->pace;
    size_t n = 0;
    struct map_iter it;
    map_iter_init(&it, &p->waiting);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        if (map_has(&r->jobs, e->key))
            continue;
        if (map_put(&p->released, e->key, NULL, NULL) < 0)
            continue; /* without memory it waits out its backoff */
        reconciler_enqueue(r, e->key);
        n++;
    }
    map_free(&p->waiting);
    uv_timer_stop(&p->probe);
    r->stats.released += n;
    if (n)
        log_info(r->log,
                 "kubernetes: the API server answers again (%s); retrying %zu route%s now "
                 "instead of after %s backoff",
                 why, n, n == 1 ? "" : "s", n == 1 ? "its" : "their");
}

void reconciler_api_answered(struct reconciler *r, const char *verb, long status) {
    /* A watch ending proves nothing about now (it may end as the server
     * goes down); every other success does. */
    if (!r->pace.waiting.count || status < 200 || status >= 300 || strcmp(verb, "watch") == 0)
        return;
    char why[64];
    snprintf(why, sizeof why, "a %s succeeded", verb);
    release_all(r, why);
}

static void probe_answered(void *user, const struct kube_response *res) {
    struct reconciler *r = user;
    r->pace.call = NULL;
    if ((res->status >= 200 && res->status < 300) || res->status == 404)
        release_all(r, "probe answered");
    else
        probe_arm(r);
}

static void probe_fire(uv_timer_t *t) {
    struct reconciler *r = t->data;
    struct map_iter it;
    map_iter_init(&it, &r->pace.waiting);
    struct map_entry *e = map_iter_next(&it);
    if (!e || r->pace.closing)
        return;
    /* "ns/name": the route's IngressRoute has its name. */
    const char *slash = strchr(e->key, '/');
    char ns[MODEL_NS_MAX + 1], path[512];
    size_t n = slash ? (size_t)(slash - e->key) : 0;
    if (!n || n > MODEL_NS_MAX) {
        map_del(&r->pace.waiting, e->key); /* cannot be: route ids are checked */
        probe_arm(r);
        return;
    }
    memcpy(ns, e->key, n);
    ns[n] = '\0';
    if (kube_path(path, sizeof path, r->ropts.api_group, "v1alpha1", ns,
                  obj_plural[OBJ_INGRESSROUTE], slash + 1) < 0) {
        map_del(&r->pace.waiting, e->key);
        probe_arm(r);
        return;
    }
    r->pace.call = kube_request(r->kube, "GET", path, NULL, NULL, 0, probe_answered, r);
    if (!r->pace.call)
        probe_arm(r); /* try again next period */
}

void pace_pass_ended(struct job *j, bool retry) {
    struct reconciler *r = j->r;
    struct reconcile_pace *p = &r->pace;
    bool early = map_has(&p->released, j->id);
    if (early)
        map_del(&p->released, j->id);
    if (!retry || !j->api_down || early) {
        /* Applied, or its own problem, or the early retry failed too: its
         * backoff decides (and a later failure of it waits again). */
        map_del(&p->waiting, j->id);
        return;
    }
    if (map_put(&p->waiting, j->id, NULL, NULL) < 0)
        return; /* without memory it waits out its backoff */
    probe_arm(r);
}

void pace_stop(struct reconciler *r) {
    kube_call_cancel(r->pace.call);
    r->pace.call = NULL;
    uv_timer_stop(&r->pace.probe);
    map_free(&r->pace.waiting);
    map_free(&r->pace.released);
}

void pace_close(struct reconciler *r) {
    pace_stop(r);
    r->pace.closing = true;
    if (!uv_is_closing((uv_handle_t *)&r->pace.probe))
        uv_close((uv_handle_t *)&r->pace.probe, NULL);
}

void pace_free(struct reconciler *r) {
    map_free(&r->pace.waiting);
    map_free(&r->pace.released);
}
