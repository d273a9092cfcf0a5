/* app_status.c - status feedback: with reconcile.status on, the bridge writes
 * <prefix><ns>/<name>/status back to the source, a small JSON document saying
 * whether the route was applied, why not, and with which weights, so whoever
 * set the weights can read the outcome where they wrote them.
 *
 * One write is in flight per route; a change meanwhile marks it dirty and the
 * latest status is written when the first is done. A status that says what
 * the key already says (its time aside) is not written again, so restarts and
 * reloads do not rewrite every status key. Only the leader writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/app_internal.h"

struct status_write {
    struct generation *g;
    bool dirty; /* changed again while in flight: write the latest when done */
    char id[];
};

static const char *state_name(enum route_state st) {
    return st == ROUTE_APPLIED ? "applied" : st == ROUTE_ERROR ? "error" : "pending";
}

/* A brake is what the person who pulled it looks for: "frozen" whatever
 * the objects are, "aborted" once the abort is applied. */
static const char *route_state_name(const struct route_status *st) {
    if (st->brake == BRAKE_FROZEN)
        return "frozen";
    if (st->brake == BRAKE_ABORTED && st->state == ROUTE_APPLIED)
        return "aborted";
    return state_name(st->state);
}

static void status_send(struct generation *g, struct status_write *w);

static void on_status_written(void *user, bool ok, const char *message) {
    struct status_write *w = user;
    struct generation *g = w->g;
    if (!ok && !g->status_write_failing)
        log_warn(&g->app->log,
                 "status feedback: cannot write %s%s/status: %s (syncing goes on; logged once "
                 "until a status write succeeds)",
                 g->app->cfg.source.prefix, w->id, message ? message : "unknown error");
    g->status_write_failing = !ok;
    if (w->dirty && !g->stopping) {
        w->dirty = false;
        status_send(g, w);
        return;
    }
    map_del(&g->status_writes, w->id);
    free(w);
}

static void rfc3339(uint64_t ms, char out[32]) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, 32, "?");
}

/* The route's ramp plan: where it stands, and (start_ms, paused_ms) what a
 * restart or a new leader reads back to go on where it was. */
static bool status_add_plan(cJSON *doc, const struct plan_status *p) {
    char start[32], next[32];
    struct timespec ts;
    uint64_t now = clock_gettime(CLOCK_REALTIME, &ts) == 0
                       ? (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000
                       : 0;
    rfc3339(p->start_ms, start);
    rfc3339(p->next_ms, next);
    cJSON *o = cJSON_AddObjectToObject(doc, "plan");
    return o && cJSON_AddNumberToObject(o, "revision", (double)p->revision) &&
           cJSON_AddNumberToObject(o, "step", (double)(p->step + 1)) &&
           cJSON_AddNumberToObject(o, "steps", (double)p->n_steps) &&
           cJSON_AddStringToObject(o, "weights", p->weights ? p->weights : "") &&
           cJSON_AddStringToObject(o, "start", start) &&
           cJSON_AddNumberToObject(o, "start_ms", (double)p->start_ms) &&
           (!p->has_next ||
            (cJSON_AddStringToObject(o, "next", next) &&
             cJSON_AddNumberToObject(
                 o, "next_in_seconds",
                 (double)(p->next_ms > now ? (p->next_ms - now + 999) / 1000 : 0)))) &&
           cJSON_AddBoolToObject(o, "paused", p->paused) &&
           (!p->paused || (cJSON_AddNumberToObject(o, "paused_ms", (double)p->paused_ms) &&
                           cJSON_AddStringToObject(o, "why", p->why))) &&
           (!p->refused || cJSON_AddBoolToObject(o, "refused", true));
}

/* The status document of a route, without its time; NULL when there is
 * nothing to say (no pass yet, no key with an unknown leaf). */
static cJSON *status_doc(struct generation *g, const char *id) {
    const struct route_status *st = g->have_rec ? reconciler_status(&g->rec, id) : NULL;
    char leaves[1024];
    size_t typos = keycache_leaf_errors(&g->keys, id, leaves, sizeof leaves);
    if (!st && !typos)
        return NULL;
    cJSON *doc = cJSON_CreateObject();
    const char *wtext = map_get(&g->weights_in_force, id);
    cJSON *weights = wtext ? cJSON_Parse(wtext) : NULL;
    /* A mistyped leaf makes the route's status an error naming the key,
     * whatever its objects are; "objects" then says how those are. */
    bool ok = doc &&
              cJSON_AddStringToObject(doc, "state", typos ? "error" : route_state_name(st)) &&
              cJSON_AddStringToObject(doc, "message",
                                      typos         ? leaves
                                      : st->message ? st->message
                                                    : "") &&
              (!typos || !st || cJSON_AddStringToObject(doc, "objects", state_name(st->state))) &&
              (!st || !st->weights_held || cJSON_AddBoolToObject(doc, "weights_held", true)) &&
              (!st || !st->warning || cJSON_AddStringToObject(doc, "warning", st->warning)) &&
              (!st || !st->change_waits || cJSON_AddBoolToObject(doc, "change_waits", true)) &&
              (!st || (cJSON_AddNumberToObject(doc, "revision", (double)st->revision) &&
                       cJSON_AddStringToObject(doc, "resourceVersion",
                                               st->resource_version ? st->resource_version : "")));
    const struct plan_status *plan = st && g->have_rec ? reconciler_plan(&g->rec, id) : NULL;
    if (ok && plan) {
        ok = status_add_plan(doc, plan);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "message");
        char msg[600];
        if (ok && plan->paused && cJSON_IsString(m) && !m->valuestring[0]) {
            snprintf(msg, sizeof msg, "plan paused: %s", plan->why);
            ok = cJSON_ReplaceItemInObjectCaseSensitive(doc, "message", cJSON_CreateString(msg));
        }
    }
    ok = ok && (!st || app_live_status_doc(g, id, doc) == 0);
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
static bool status_unchanged(struct generation *g, const char *id, const cJSON *doc) {
    const char *cur = keycache_status(&g->keys, id);
    cJSON *was = cur ? cJSON_Parse(cur) : NULL;
    if (!was)
        return false;
    cJSON_DeleteItemFromObjectCaseSensitive(was, "time");
    bool same = cJSON_Compare(doc, was, true);
    cJSON_Delete(was);
    return same;
}

static void status_send(struct generation *g, struct status_write *w) {
    cJSON *doc = status_doc(g, w->id);
    char stamp[40] = "", key[MODEL_NS_MAX + MODEL_NAME_MAX + 256];
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &tm))
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char *text = NULL;
    if (doc && !status_unchanged(g, w->id, doc) && cJSON_AddStringToObject(doc, "time", stamp))
        text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    snprintf(key, sizeof key, "%s%s/status", g->app->cfg.source.prefix, w->id);
    if (!text || !g->source->ops->put ||
        g->source->ops->put(g->source, key, text, strlen(text), on_status_written, w) < 0) {
        map_del(&g->status_writes, w->id);
        free(w);
    }
    cJSON_free(text);
}

void app_status_request(struct generation *g, const char *route_id) {
    const struct app *a = g->app;
    if (!a->cfg.reconcile.status || a->dry_run || (a->cmd != CMD_RUN && a->cmd != CMD_SYNC))
        return;
    struct status_write *w = map_get(&g->status_writes, route_id);
    if (w) {
        w->dirty = true; /* coalesce: one write in flight per route */
    } else if ((w = calloc(1, sizeof *w + strlen(route_id) + 1))) {
        w->g = g;
        strcpy(w->id, route_id);
        if (map_put(&g->status_writes, route_id, w, NULL) < 0)
            free(w);
        else
            status_send(g, w);
    }
}

/* A key with an unknown leaf came or went: the route's status says so. */
void app_status_on_leaves(void *user, const char *route_id) {
    struct generation *g = user;
    if (g->working && g->leader && !g->stopping)
        app_status_request(g, route_id);
}

void app_status_remember_weights(struct generation *g, const char *route_id,
                                 const struct model_route *m) {
    cJSON *w = m && app_weight_count(m) ? cJSON_CreateObject() : NULL;
    double v;
    for (size_t i = 0; w && i < app_weight_count(m); i++) {
        const char *svc = app_weight_at(m, i, &v); /* sets v */
        if (!cJSON_AddNumberToObject(w, svc, v)) {
            cJSON_Delete(w);
            w = NULL;
        }
    }
    char *text = w ? cJSON_PrintUnformatted(w) : NULL;
    cJSON_Delete(w);
    void *prev = NULL;
    if (text && map_put(&g->weights_in_force, route_id, text, &prev) == 0) {
        cJSON_free(prev);
        return;
    }
    cJSON_free(text);
    cJSON_free(map_del(&g->weights_in_force, route_id)); /* gone, or no memory */
}

void app_status_free(struct generation *g) {
    struct map_iter it;
    map_iter_init(&it, &g->status_writes);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        free(e->value); /* their source requests were cancelled without callbacks */
    map_free(&g->status_writes);
    map_iter_init(&it, &g->weights_in_force);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        cJSON_free(e->value);
    map_free(&g->weights_in_force);
}
