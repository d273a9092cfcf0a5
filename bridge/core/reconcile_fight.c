/* reconcile_fight.c - two writers undoing each other's writes; see
 * reconcile.h (RECONCILE_FIGHT_*).
 *
 * Two writers that disagree about an object (two bridges on one prefix with
 * different sources or settings, or a controller that reverts us) would each
 * rewrite it as fast as the API server answers, forever. So each write of
 * ours is judged once, by the next pass that finds the object differing
 * again: if it changed since (its resourceVersion moved on) while our keys
 * did not, within RECONCILE_FIGHT_WINDOW_MS, someone undid it (the
 * managedFields name who). After RECONCILE_FIGHT_UNDOS in a row the route
 * writes at most once per backoff period, doubling, says so once (log,
 * status, an Event counted per undone write) and counts every undone write.
 * A change of the route's keys ends it, as does a write that is not undone.
 *
 * Apart from the pass because it is a judgment across passes: its state
 * lives in the route's status record, and a write consults it (fight_hold)
 * before rewriting an object that differs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/reconcile_internal.h"
#include "bridge/lib/backoff.h"

void fight_written(struct job *j, const struct job_obj *o, const cJSON *res_obj) {
    struct route_status *s = status_get(j->r, j->id);
    const char *rv = kobj_str(res_obj, "metadata", "resourceVersion");
    char key[16 + MODEL_NAME_MAX];
    snprintf(key, sizeof key, "%d/%s", (int)o->kind, o->name);
    if (!s || !rv)
        return;
    char *k = strdup(key), *v = strdup(rv);
    if (!k || !v) {
        free(k);
        free(v);
        return; /* this write goes unjudged: a fight is noticed one write later */
    }
    free(s->written_key);
    free(s->written_rv);
    s->written_key = k;
    s->written_rv = v;
    s->written_revision = j->model.revision;
    s->written_ms = uv_now(j->r->loop);
}

void fight_off(struct reconciler *r, const char *id, struct route_status *s, const char *why) {
    s->undone = 0;
    if (!s->fighting)
        return;
    s->fighting = false;
    log_info(r->log, "route %s: %s; writing at normal speed again", id, why);
    free(s->rival);
    s->rival = NULL;
    /* The state stays as it was until this pass ends (applied or an error). */
}

/* "another writer ... keeps undoing": constant while the fight lasts, so
 * the status is written and the Event posted as one series, not per write. */
static void fight_message(const struct job *j, const struct job_obj *o, const char *rival,
                          char *out, size_t outlen) {
    const char *me = j->r->field_manager ? j->r->field_manager : "canary-bridge";
    bool same = strcmp(rival, me) == 0;
    snprintf(out, outlen,
             "another writer, field manager \"%s\"%s, keeps undoing this bridge's writes to "
             "%s %s/%s (this bridge writes as \"%s\"): two bridges on prefix %s with different "
             "sources or settings? Writing at most once per backoff period (up to %d s) until "
             "they agree",
             rival,
             same ? " (the same name as this bridge's: give each bridge its own "
                    "kubernetes.field_manager)"
                  : "",
             obj_kind_name[o->kind], j->ns, o->name, me, j->r->keys->prefix,
             RECONCILE_FIGHT_MAX_MS / 1000);
}

bool fight_hold(struct job *j, const struct job_obj *o, const cJSON *live) {
    struct reconciler *r = j->r;
    struct route_status *s = status_get(r, j->id);
    if (!s)
        return false;
    uint64_t now = uv_now(r->loop);
    char key[16 + MODEL_NAME_MAX];
    snprintf(key, sizeof key, "%d/%s", (int)o->kind, o->name);
    if (s->written_rv && s->written_key && strcmp(s->written_key, key) == 0) {
        const char *rv = kobj_str(live, "metadata", "resourceVersion");
        bool undone = rv && strcmp(rv, s->written_rv) != 0 &&
                      s->written_revision == j->model.revision &&
                      now - s->written_ms < RECONCILE_FIGHT_WINDOW_MS;
        free(s->written_rv);
        s->written_rv = NULL;
        if (!undone) {
            fight_off(r, j->id, s, "its last write was not undone");
        } else {
            const char *who = informer_writer(r->inf[o->kind], j->ns, o->name);
            char *rival = strdup(who ? who : "(unknown)");
            s->undone++;
            r->stats.undone++;
            log_debug(r->log, "route %s: our write to %s %s/%s was undone by %s (%u in a row)",
                      j->id, obj_kind_name[o->kind], j->ns, o->name, who ? who : "(unknown)",
                      s->undone);
            bool renamed = rival && (!s->rival || strcmp(rival, s->rival) != 0);
            if (rival) {
                free(s->rival);
                s->rival = rival;
            }
            if (s->undone >= RECONCILE_FIGHT_UNDOS && s->rival) {
                char msg[1024];
                fight_message(j, o, s->rival, msg, sizeof msg);
                if (!s->fighting || renamed) {
                    log_warn(r->log, "route %s: %s", j->id, msg);
                    char *copy = strdup(msg);
                    if (copy) {
                        free(s->message);
                        s->message = copy;
                    }
                    s->state = ROUTE_ERROR;
                    s->fight_revision = j->model.revision;
                    s->fighting = true;
                    if (r->hooks.status)
                        r->hooks.status(r->hooks.user, j->id, s);
                }
                if (r->hooks.event)
                    r->hooks.event(r->hooks.user, live, "Warning", "WritesUndone", msg);
                s->fight_next_ms = now + backoff_ms(s->undone - RECONCILE_FIGHT_UNDOS,
                                                    RECONCILE_FIGHT_MIN_MS, RECONCILE_FIGHT_MAX_MS);
            }
        }
    }
    if (!s->fighting || now >= s->fight_next_ms)
        return false;
    log_debug(r->log, "route %s: holding the write to %s %s/%s for %llu ms (fought over)", j->id,
              obj_kind_name[o->kind], j->ns, o->name, (unsigned long long)(s->fight_next_ms - now));
    j->retry_in_ms = s->fight_next_ms - now;
    job_finish(j, false, true, 0);
    return true;
}
