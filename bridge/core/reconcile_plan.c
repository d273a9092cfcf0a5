/* reconcile_plan.c - ramp plans in the pass: the `plan` key's step in force
 * becomes the route's weights; see docs/usage.md section 14.
 *
 * The weights in force are a pure function of the plan, its start and the
 * wall clock (bridge/model/plan.c). The start is what needs care:
 * - `start: <RFC 3339>` in the plan document wins;
 * - else the first pass that sees a plan revision takes "now", and the
 *   status key records it (with the revision, the pause and its time), so a
 *   restart or a new leader reads it back: same revision, same start; a new
 *   revision (the same text written again included) is a new plan.
 * A plan holds its step (paused; plan_paused_at) while the route's `pause`
 * key exists, while `pause: true` is in the document, while the route is
 * frozen or aborted, and after a step was refused (max step, a backend that
 * cannot serve, any error writing it) until a pass applies it; on resume its
 * start moves by the pause (plan_resumed_start), so the step keeps what was
 * left of its hold. A weights key written after the plan wins and stops it.
 *
 * One timer for all plans fires at the earliest next step and queues those
 * routes; the pass computes the step again, so a late or early timer only
 * delays a pass, never picks a wrong step. Only a pass (the leader) changes
 * a plan's state; a preview (status, diff) computes the same from the
 * status key without changing anything. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/core/reconcile_internal.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/timer.h"
#include "bridge/model/plan.h"

static uint64_t wall_ms(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void state_free(struct plan_status *st) {
    if (st)
        free(st->weights);
    free(st);
}

/* ---- the timer ---- */

static void plans_arm(struct reconciler *r);

static void on_plan_timer(uv_timer_t *t) {
    struct reconciler *r = t->data;
    uint64_t now = wall_ms();
    struct map_iter it;
    map_iter_init(&it, &r->plans);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        struct plan_status *st = e->value;
        if (!st->paused && st->has_next && !st->queued && st->next_ms <= now) {
            st->queued = true; /* until its pass computes the next change */
            reconciler_enqueue(r, e->key);
        }
    }
    plans_arm(r);
}

/* The timer at the earliest next step of a plan not already queued. */
static void plans_arm(struct reconciler *r) {
    bool any = false;
    uint64_t first = 0, now = wall_ms();
    struct map_iter it;
    map_iter_init(&it, &r->plans);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        const struct plan_status *st = e->value;
        if (!st->paused && st->has_next && !st->queued && (!any || st->next_ms < first)) {
            first = st->next_ms;
            any = true;
        }
    }
    if (!any) {
        uv_timer_stop(&r->plan_timer);
        return;
    }
    timer_arm(&r->plan_timer, on_plan_timer, first > now ? first - now : 0, 0);
}

int plans_init(struct reconciler *r) {
    if (uv_timer_init(r->loop, &r->plan_timer) != 0)
        return -1;
    r->plan_timer.data = r;
    return 0;
}

void plans_close(struct reconciler *r) {
    if (!uv_is_closing((uv_handle_t *)&r->plan_timer))
        uv_close((uv_handle_t *)&r->plan_timer, NULL);
}

void plans_free(struct reconciler *r) {
    struct map_iter it;
    map_iter_init(&it, &r->plans);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        state_free(e->value);
    map_free(&r->plans);
}

/* ---- state ---- */

static void tell(struct reconciler *r, const char *id, const struct plan_status *st, bool stepped) {
    if (r->hooks.plan)
        r->hooks.plan(r->hooks.user, id, st, stepped);
}

static void plan_drop(struct reconciler *r, const char *id) {
    struct plan_status *st = map_del(&r->plans, id);
    if (!st)
        return;
    log_info(r->log, "route %s: plan key gone: the weights of step %zu of %zu stay", id,
             st->step + 1, st->n_steps);
    state_free(st);
    tell(r, id, NULL, false);
    plans_arm(r);
}

void plan_forget(struct reconciler *r, const char *id) {
    plan_drop(r, id);
}

const struct plan_status *reconciler_plan(const struct reconciler *r, const char *route_id) {
    return map_get(&r->plans, route_id);
}

static bool json_u64(const cJSON *o, const char *name, uint64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0)
        return false;
    *out = (uint64_t)v->valuedouble;
    return true;
}

/* A plan revision seen for the first time here: its start from the
 * document, else from the status key (a restart, a new leader), else now. */
static void state_restore(struct reconciler *r, const char *id, const struct plan *p, uint64_t rev,
                          uint64_t now, struct plan_status *cur) {
    memset(cur, 0, sizeof *cur);
    cur->revision = rev;
    cur->start_ms = now;
    if (p->has_start) {
        cur->start_ms = p->start_ms;
        return;
    }
    const char *text = keycache_status(r->keys, id);
    cJSON *doc = text ? cJSON_Parse(text) : NULL;
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(doc, "plan");
    uint64_t was = 0, start = 0, paused = 0;
    if (json_u64(pl, "revision", &was) && was == rev && json_u64(pl, "start_ms", &start)) {
        cur->start_ms = start;
        log_info(r->log,
                 "route %s: plan revision %" PRIu64 " goes on from the status key (started "
                 "%" PRIu64 " ms ago)",
                 id, rev, now > start ? now - start : 0);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pl, "paused")) &&
            json_u64(pl, "paused_ms", &paused)) {
            cur->paused = true;
            cur->paused_ms = paused;
            cur->refused = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pl, "refused"));
            const cJSON *why = cJSON_GetObjectItemCaseSensitive(pl, "why");
            if (cJSON_IsString(why))
                snprintf(cur->why, sizeof cur->why, "%s", why->valuestring);
        }
    }
    cJSON_Delete(doc);
}

static bool state_differs(const struct plan_status *a, const struct plan_status *b) {
    return a->revision != b->revision || a->start_ms != b->start_ms || a->step != b->step ||
           a->n_steps != b->n_steps || a->has_next != b->has_next || a->next_ms != b->next_ms ||
           a->paused != b->paused || a->refused != b->refused || a->overridden != b->overridden ||
           strcmp(a->why, b->why) != 0 || !a->weights != !b->weights ||
           (a->weights && strcmp(a->weights, b->weights) != 0);
}

/* The reason the plan holds its step now, into why; false: it runs. */
static bool hold_reason(const struct job *j, const struct plan *p, const struct plan_status *cur,
                        char *why, size_t whylen) {
    if (j->brake == BRAKE_ABORTED)
        snprintf(why, whylen, "aborted: %s", j->brakes.abort_reason);
    else if (j->brake == BRAKE_FROZEN)
        snprintf(why, whylen, "frozen: %s", j->brakes.freeze_reason);
    else if (j->brakes.paused)
        snprintf(why, whylen, "pause key: %s", j->brakes.pause_reason);
    else if (p->pause)
        snprintf(why, whylen, "pause: true in the plan");
    else if (cur->refused)
        snprintf(why, whylen, "%s", cur->why);
    else
        return false;
    return true;
}

/* The route's services in order, from its route document (none in patched
 * mode, or when the document does not build: the pass reports that). */
static const char **route_services(const struct model_input *in, size_t *n) {
    struct model_input tmp = *in;
    tmp.weights = tmp.headers = NULL;
    tmp.weights_len = tmp.headers_len = 0;
    tmp.held = NULL;
    tmp.n_held = 0;
    tmp.abort = false;
    struct model_route m;
    char err[256];
    *n = 0;
    if (!in->route || model_build(&tmp, &m, err, sizeof err) != MODEL_BUILT)
        return NULL;
    const char **names = m.owned && m.n_services ? calloc(m.n_services, sizeof *names) : NULL;
    for (size_t i = 0; names && i < m.n_services; i++) {
        names[i] = strdup(m.services[i].name);
        if (!names[i]) {
            for (size_t k = 0; k < i; k++)
                free((char *)names[k]);
            free(names);
            names = NULL;
        }
    }
    *n = names ? m.n_services : 0;
    model_route_free(&m);
    return names;
}

static void names_free(const char **names, size_t n) {
    for (size_t i = 0; names && i < n; i++)
        free((char *)names[i]);
    free(names);
}

static char *weights_text(const struct plan_pos *pos) {
    buf_t b = BUF_INIT;
    for (size_t i = 0; i < pos->n_weights; i++)
        if (buf_printf(&b, "%s%s=%ld", i ? " " : "", pos->weights[i].service,
                       pos->weights[i].weight) < 0) {
            buf_free(&b);
            return NULL;
        }
    return b.data; /* owned by the caller */
}

int plan_weights(struct job *j, struct model_input *in, char **text, bool commit, char *err,
                 size_t errlen) {
    struct reconciler *r = j->r;
    *text = NULL;
    j->plan_step = 0;
    const struct keycache_value *pv = keycache_leaf(r->keys, j->id, KEYCACHE_PLAN);
    if (!pv) {
        if (commit)
            plan_drop(r, j->id);
        return 0;
    }
    size_t n = 0;
    const char **names = route_services(in, &n);
    struct plan p;
    char perr[700];
    int rc = plan_parse(pv->data, pv->len, names, n, &p, perr, sizeof perr);
    names_free(names, n);
    if (rc < 0) {
        snprintf(err, errlen, "%s%s/plan: %s", r->keys->prefix, j->id, perr);
        return -1; /* the objects stay; the state too, for when it is fixed */
    }
    uint64_t now = wall_ms();
    struct plan_status *st = map_get(&r->plans, j->id), cur;
    if (st && st->revision == pv->rev) {
        cur = *st;
        cur.weights = NULL;
    } else {
        state_restore(r, j->id, &p, pv->rev, now, &cur);
    }
    cur.queued = false;
    cur.force = p.force;
    const struct keycache_value *wv = keycache_leaf(r->keys, j->id, KEYCACHE_WEIGHTS);
    char why[sizeof cur.why];
    bool hold;
    if (wv && wv->rev > pv->rev) { /* edited after the plan: the edit rules */
        cur.overridden = true;
        hold = true;
        snprintf(why, sizeof why, "weights edited at revision %" PRIu64, wv->rev);
    } else {
        cur.overridden = false;
        hold = hold_reason(j, &p, &cur, why, sizeof why);
    }
    if (hold && !cur.paused) {
        cur.paused = true;
        cur.paused_ms = now;
    } else if (!hold && cur.paused) {
        cur.start_ms = plan_resumed_start(cur.start_ms, cur.paused_ms, now);
        cur.paused = false;
        cur.paused_ms = 0;
    }
    snprintf(cur.why, sizeof cur.why, "%s", hold ? why : "");
    struct plan_pos pos;
    if (cur.paused)
        plan_paused_at(&p, cur.start_ms, cur.paused_ms, &pos);
    else
        plan_at(&p, cur.start_ms, now, &pos);
    cur.step = pos.step;
    cur.n_steps = p.n_steps;
    cur.has_next = pos.has_next;
    cur.next_ms = pos.has_next ? pos.next_ms : 0;
    cur.weights = weights_text(&pos);
    plan_free(&p);
    if (!cur.weights) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!cur.overridden) {
        /* The step's weights stand for the weights key (a force: '!'). */
        size_t len = strlen(cur.weights);
        *text = malloc(len + 3);
        if (!*text) {
            free(cur.weights);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(*text, cur.weights, len);
        strcpy(*text + len, cur.force ? " !" : "");
        in->weights = *text;
        in->weights_len = strlen(*text);
        in->plan_rev = pv->rev;
        j->plan_step = j->brake == BRAKE_ABORTED ? 0 : cur.step + 1;
    }
    if (!commit) {
        free(cur.weights);
        return 0;
    }
    bool changed = !st || state_differs(st, &cur);
    if (!st) {
        st = malloc(sizeof *st);
        if (!st || map_put(&r->plans, j->id, st, NULL) < 0) {
            free(st);
            free(cur.weights);
            free(*text);
            *text = NULL;
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        st->weights = NULL;
    }
    free(st->weights);
    *st = cur;
    if (changed)
        tell(r, j->id, st, false);
    plans_arm(r);
    return 0;
}

/* "2026-12-06T10:00:00Z" */
static void rfc3339(uint64_t ms, char out[32]) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, 32, "?");
}

void plan_applied(struct job *j) {
    struct reconciler *r = j->r;
    struct plan_status *st = map_get(&r->plans, j->id);
    if (!st || !j->plan_step || st->revision != j->model.plan_rev)
        return;
    if (st->refused) {
        /* The refused step is in force now: the plan goes on from here,
         * with what was left of its hold (the next pass resumes it). */
        st->refused = false;
        reconciler_enqueue(r, j->id);
    }
    if (st->announced == j->plan_step)
        return;
    st->announced = j->plan_step;
    char next[96] = "the last step";
    if (st->has_next) {
        char at[32];
        rfc3339(st->next_ms, at);
        snprintf(next, sizeof next, "next at %s", at);
    } else if (st->paused) {
        snprintf(next, sizeof next, "paused");
    }
    char msg[700];
    snprintf(msg, sizeof msg, "step %zu of %zu: %s, %s", j->plan_step, st->n_steps,
             st->weights ? st->weights : "", next);
    log_info(r->log, "route %s: plan %s", j->id, msg);
    const cJSON *live = informer_get(r->inf[OBJ_INGRESSROUTE], j->ns, j->name);
    if (live && r->hooks.event)
        r->hooks.event(r->hooks.user, live, "Normal", "PlanStep", msg);
    tell(r, j->id, st, true);
}

bool plan_refused(struct reconciler *r, const char *id, const char *msg, char *out, size_t outlen) {
    const struct job *j = map_get(&r->jobs, id);
    struct plan_status *st = map_get(&r->plans, id);
    if (!j || !j->plan_step || !st)
        return false;
    snprintf(out, outlen, "plan paused at step %zu: %s%s", j->plan_step, msg,
             strstr(msg, "max_step") ? " (a plan's steps: force: true in the plan document)" : "");
    if (!st->refused || !st->paused) {
        st->refused = true;
        if (!st->paused) {
            st->paused = true;
            st->paused_ms = wall_ms();
        }
        st->has_next = false;
        snprintf(st->why, sizeof st->why, "step %zu refused: %s", j->plan_step, msg);
        tell(r, id, st, false);
        plans_arm(r);
    }
    return true;
}
