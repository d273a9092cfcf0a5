/* lease.c - leader election on a coordination.k8s.io/v1 Lease; see lease.h.
 *
 * One request in flight at a time, three timers: `tick` runs the next
 * attempt, `deadline` makes a leader step down when it has not renewed for
 * renew_deadline, `release` bounds lease_release. Times are monotonic
 * milliseconds (uv_hrtime), never the wall clock; the wall clock only goes
 * into the Lease's acquireTime/renewTime for humans and other clients. */
#include "sinks/lease.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/lib/backoff.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/timer.h"
#include "sinks/kobj.h"

#define LEASE_RELEASE_ATTEMPTS 3
#define LEASE_RELEASE_MAX_MS 5000

static void on_lease_answer(void *user, const struct kube_response *r);

static uint64_t now_ms(void) {
    return uv_hrtime() / 1000000u;
}

int lease_microtime_now(char *out, size_t outlen) {
    struct timespec ts;
    struct tm tm;
    if (outlen < 28 || clock_gettime(CLOCK_REALTIME, &ts) != 0 || !gmtime_r(&ts.tv_sec, &tm))
        return -1;
    size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0)
        return -1;
    int m = snprintf(out + n, outlen - n, ".%06ldZ", ts.tv_nsec / 1000);
    return m < 0 || (size_t)m >= outlen - n ? -1 : 0;
}

static void describe_answer(const struct kube_response *r, char *out, size_t outlen) {
    if (r->status == 0)
        snprintf(out, outlen, "transport error: %s", r->error && *r->error ? r->error : "unknown");
    else
        snprintf(out, outlen, "HTTP %ld%s%s%s%s", r->status, *r->reason ? " " : "", r->reason,
                 *r->message ? ": " : "", r->message);
}

/* Set obj[key] = item (replacing); frees item on failure. */
static int json_set(cJSON *obj, const char *key, cJSON *item) {
    if (!item)
        return -1;
    bool ok = cJSON_GetObjectItemCaseSensitive(obj, key)
                  ? cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item)
                  : cJSON_AddItemToObject(obj, key, item);
    if (!ok) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static double json_number(const cJSON *obj, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static bool holder_is_me(const struct lease_elector *e) {
    return e->holder && strcmp(e->holder, e->identity) == 0;
}

/* How long the observed record is valid, by its own leaseDurationSeconds. */
static uint64_t record_duration_ms(const struct lease_elector *e) {
    double s =
        json_number(cJSON_GetObjectItemCaseSensitive(e->record, "spec"), "leaseDurationSeconds", 0);
    if (!(s > 0) || s > 86400.0 * 365)
        return e->lease_ms; /* missing or absurd: respect it for our own duration */
    return (uint64_t)(s * 1000.0);
}

/* Take obj as the last record seen; note the local time when it changed. */
static int observe_record(struct lease_elector *e, const cJSON *obj) {
    cJSON *dup = cJSON_Duplicate(obj, 1);
    const char *holder = dup ? kobj_str(dup, "spec", "holderIdentity") : NULL;
    const char *renew = dup ? kobj_str(dup, "spec", "renewTime") : NULL;
    const char *rv = dup ? kobj_str(dup, "metadata", "resourceVersion") : NULL;
    buf_t key = BUF_INIT;
    char *h = NULL;
    if (!dup ||
        buf_printf(&key, "%s\n%s\n%s", holder ? holder : "", renew ? renew : "", rv ? rv : "") <
            0 ||
        !(h = strdup(holder ? holder : ""))) {
        cJSON_Delete(dup);
        buf_free(&key);
        free(h);
        log_error(e->log, "leader election: out of memory");
        return -1;
    }
    bool changed = !e->observed_key || strcmp(e->observed_key, key.data) != 0;
    bool holder_changed = !e->holder || strcmp(e->holder, h) != 0;
    if (changed)
        e->observed_ms = now_ms();
    cJSON_Delete(e->record);
    e->record = dup;
    free(e->observed_key);
    e->observed_key = buf_steal(&key);
    buf_free(&key);
    free(e->holder);
    e->holder = h;
    if (holder_changed && *h && strcmp(h, e->identity) != 0)
        log_info(e->log, "leader election: leader is %s (%s/%s)", h, e->ns, e->name);
    else if (holder_changed && !*h)
        log_info(e->log, "leader election: %s/%s has no holder", e->ns, e->name);
    return 0;
}

static bool held_by_other(const struct lease_elector *e) {
    if (!e->holder || !*e->holder || holder_is_me(e))
        return false;
    return now_ms() < e->observed_ms + record_duration_ms(e);
}

static void on_deadline(uv_timer_t *t);

static void deadline_arm(struct lease_elector *e) {
    uint64_t end = e->renewed_ms + e->renew_deadline_ms, now = now_ms();
    timer_arm(&e->deadline, on_deadline, end > now ? end - now : 0, 0);
}

static void become_leader(struct lease_elector *e) {
    e->leader = true;
    e->acquisitions++;
    log_info(e->log, "leader election: became leader of %s/%s (identity %s)", e->ns, e->name,
             e->identity);
    if (e->on_change)
        e->on_change(e->user, true); /* last: it may stop or release us */
}

static void step_down(struct lease_elector *e, const char *why) {
    if (!e->leader)
        return;
    e->leader = false;
    e->losses++;
    uv_timer_stop(&e->deadline);
    log_info(e->log, "leader election: lost leadership of %s/%s (identity %s): %s", e->ns, e->name,
             e->identity, why);
    if (e->on_change)
        e->on_change(e->user, false); /* last: it may stop or release us */
}

static void on_deadline(uv_timer_t *t) {
    struct lease_elector *e = t->data;
    if (e->stopped || !e->leader)
        return;
    char why[128];
    snprintf(why, sizeof why, "could not renew the lease for %llu ms",
             (unsigned long long)e->renew_deadline_ms);
    step_down(e, why);
}

/* 0, or -1 when the request could not start. */
static int call_start(struct lease_elector *e, enum lease_op op, const char *method,
                      const char *path, const cJSON *body) {
    e->op = op;
    e->call_sent_ms = now_ms();
    e->call = body ? kube_request_json_nodry(e->kc, method, path, body, on_lease_answer, e)
                   : kube_request_nodry(e->kc, method, path, NULL, NULL, 0, on_lease_answer, e);
    if (!e->call) {
        e->op = LEASE_OP_NONE;
        return -1;
    }
    return 0;
}

static void attempt_failed(struct lease_elector *e, const char *what, const char *detail) {
    e->failures++;
    if (e->failures == 1)
        log_warn(e->log, "leader election: cannot %s lease %s/%s: %s%s", what, e->ns, e->name,
                 detail, e->leader ? " (still leader until the renew deadline)" : "");
    else
        log_debug(e->log, "leader election: cannot %s lease %s/%s: %s (%u failures in a row)", what,
                  e->ns, e->name, detail, e->failures);
}

static void attempt_ok(struct lease_elector *e) {
    if (e->failures)
        log_info(e->log, "leader election: lease %s/%s reachable again after %u failed attempts",
                 e->ns, e->name, e->failures);
    e->failures = 0;
}

/* The record to PUT: the observed object with our spec. Taking over (the
 * holder is someone else or nobody): acquireTime now, leaseTransitions + 1.
 * Renewing: both kept. Releasing: holder "", duration 1, times now. */
static cJSON *build_update(struct lease_elector *e, bool release) {
    char now[40];
    if (!e->record || lease_microtime_now(now, sizeof now) < 0)
        return NULL;
    cJSON *obj = cJSON_Duplicate(e->record, 1);
    if (!obj)
        return NULL;
    cJSON *spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
    if (!cJSON_IsObject(spec)) {
        if (json_set(obj, "spec", cJSON_CreateObject()) < 0)
            goto fail;
        spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
    }
    bool renewing = holder_is_me(e);
    double transitions = json_number(spec, "leaseTransitions", 0);
    const char *acquire = kobj_str(spec, "acquireTime", NULL);
    if (release) {
        if (json_set(spec, "holderIdentity", cJSON_CreateString("")) < 0 ||
            json_set(spec, "leaseDurationSeconds", cJSON_CreateNumber(1)) < 0 ||
            json_set(spec, "acquireTime", cJSON_CreateString(now)) < 0 ||
            json_set(spec, "renewTime", cJSON_CreateString(now)) < 0 ||
            json_set(spec, "leaseTransitions", cJSON_CreateNumber(transitions)) < 0)
            goto fail;
        return obj;
    }
    if (!renewing || !acquire) {
        if (json_set(spec, "acquireTime", cJSON_CreateString(now)) < 0)
            goto fail;
    }
    if (json_set(spec, "holderIdentity", cJSON_CreateString(e->identity)) < 0 ||
        json_set(spec, "leaseDurationSeconds", cJSON_CreateNumber(e->lease_seconds)) < 0 ||
        json_set(spec, "renewTime", cJSON_CreateString(now)) < 0 ||
        json_set(spec, "leaseTransitions",
                 cJSON_CreateNumber(renewing ? transitions : transitions + 1)) < 0)
        goto fail;
    return obj;
fail:
    cJSON_Delete(obj);
    return NULL;
}

static void send_update(struct lease_elector *e, enum lease_op op) {
    cJSON *body = build_update(e, op == LEASE_OP_RELEASE_PUT);
    bool ok = body && call_start(e, op, "PUT", e->path, body) == 0;
    cJSON_Delete(body);
    if (!ok)
        attempt_failed(e, "update", "cannot start the request (out of memory?)");
}

static void send_create(struct lease_elector *e) {
    char now[40];
    cJSON *obj = cJSON_CreateObject(), *meta = NULL, *spec = NULL;
    bool ok = obj && lease_microtime_now(now, sizeof now) == 0 &&
              json_set(obj, "apiVersion", cJSON_CreateString("coordination.k8s.io/v1")) == 0 &&
              json_set(obj, "kind", cJSON_CreateString("Lease")) == 0 &&
              json_set(obj, "metadata", meta = cJSON_CreateObject()) == 0 &&
              json_set(meta, "name", cJSON_CreateString(e->name)) == 0 &&
              json_set(meta, "namespace", cJSON_CreateString(e->ns)) == 0 &&
              json_set(obj, "spec", spec = cJSON_CreateObject()) == 0 &&
              json_set(spec, "holderIdentity", cJSON_CreateString(e->identity)) == 0 &&
              json_set(spec, "leaseDurationSeconds", cJSON_CreateNumber(e->lease_seconds)) == 0 &&
              json_set(spec, "acquireTime", cJSON_CreateString(now)) == 0 &&
              json_set(spec, "renewTime", cJSON_CreateString(now)) == 0 &&
              json_set(spec, "leaseTransitions", cJSON_CreateNumber(0)) == 0 &&
              call_start(e, LEASE_OP_CREATE, "POST", e->collection, obj) == 0;
    cJSON_Delete(obj);
    if (!ok)
        attempt_failed(e, "create", "cannot start the request (out of memory?)");
}

static void send_get(struct lease_elector *e, enum lease_op op) {
    if (call_start(e, op, "GET", e->path, NULL) < 0)
        attempt_failed(e, "get", "cannot start the request (out of memory?)");
}

/* tryAcquireOrRenew: the leader first PUTs its cached record (fast path);
 * everyone else reads first. */
static void try_acquire_or_renew(struct lease_elector *e) {
    if (e->leader && e->record && holder_is_me(e))
        send_update(e, LEASE_OP_RENEW);
    else
        send_get(e, LEASE_OP_GET);
}

static void on_tick(uv_timer_t *t);

static void tick_later(struct lease_elector *e) {
    uint64_t delay = e->retry_ms;
    if (!e->leader && e->retry_ms >= 5) /* followers: [1.1, 1.2] x retry, out of lockstep */
        delay += backoff_ms(0, e->retry_ms / 5, e->retry_ms / 5);
    timer_arm(&e->tick, on_tick, delay, 0);
}

static void on_tick(uv_timer_t *t) {
    struct lease_elector *e = t->data;
    if (e->stopped || e->releasing)
        return;
    tick_later(e);
    if (e->call) {
        /* A request that hangs must not stall the election: give it up after
         * renew_deadline (the deadline timer steps a leader down on time
         * regardless). */
        if (now_ms() - e->call_sent_ms < e->renew_deadline_ms)
            return;
        kube_call_cancel(e->call);
        e->call = NULL;
        e->op = LEASE_OP_NONE;
        attempt_failed(e, "reach", "request timed out");
    }
    try_acquire_or_renew(e);
}

/* ---- release ---- */

static void release_finish(struct lease_elector *e) {
    if (e->release_finished)
        return;
    e->release_finished = true;
    uv_timer_stop(&e->release);
    if (e->call) {
        kube_call_cancel(e->call);
        e->call = NULL;
        e->op = LEASE_OP_NONE;
    }
    lease_done_cb done = e->release_done;
    e->release_done = NULL;
    if (done)
        done(e->release_user);
}

static void on_release_timer(uv_timer_t *t) {
    struct lease_elector *e = t->data;
    if (e->stopped)
        return;
    if (e->call)
        log_warn(e->log,
                 "leader election: releasing %s/%s timed out; it expires on its own within %llu ms",
                 e->ns, e->name, (unsigned long long)record_duration_ms(e));
    release_finish(e);
}

static void release_response(struct lease_elector *e, enum lease_op op,
                             const struct kube_response *r) {
    char d[512];
    describe_answer(r, d, sizeof d);
    if (op == LEASE_OP_RELEASE_GET) {
        if (r->status != 200 || !cJSON_IsObject(r->json) || observe_record(e, r->json) < 0) {
            log_warn(e->log, "leader election: cannot read %s/%s to release it: %s", e->ns, e->name,
                     d);
            release_finish(e);
        } else if (!holder_is_me(e)) {
            release_finish(e); /* someone else holds it now: nothing to release */
        } else {
            send_update(e, LEASE_OP_RELEASE_PUT);
            if (!e->call)
                release_finish(e);
        }
        return;
    }
    if (r->status == 200) {
        if (cJSON_IsObject(r->json))
            (void)observe_record(e, r->json);
        log_info(e->log, "leader election: released %s/%s (identity %s)", e->ns, e->name,
                 e->identity);
        release_finish(e);
    } else if (r->status == 409 && ++e->release_attempts < LEASE_RELEASE_ATTEMPTS) {
        send_get(e, LEASE_OP_RELEASE_GET);
        if (!e->call)
            release_finish(e);
    } else {
        log_warn(e->log,
                 "leader election: cannot release %s/%s: %s; it expires on its own within %llu ms",
                 e->ns, e->name, d, (unsigned long long)record_duration_ms(e));
        release_finish(e);
    }
}

void lease_release(struct lease_elector *e, lease_done_cb done, void *user) {
    if (e->stopped || e->releasing) {
        log_debug(e->log, "leader election: release of %s/%s ignored (%s)", e->ns, e->name,
                  e->stopped ? "stopped" : "already releasing");
        return;
    }
    e->releasing = true;
    e->release_done = done;
    e->release_user = user;
    uv_timer_stop(&e->tick);
    if (e->call) {
        kube_call_cancel(e->call);
        e->call = NULL;
        e->op = LEASE_OP_NONE;
    }
    /* client-go releases when the observed record names us, leader or not
     * (a leader that stepped down on its deadline may still hold it). */
    bool ours = e->record && holder_is_me(e);
    uint64_t bound =
        e->renew_deadline_ms < LEASE_RELEASE_MAX_MS ? e->renew_deadline_ms : LEASE_RELEASE_MAX_MS;
    timer_arm(&e->release, on_release_timer, ours ? bound : 0, 0);
    bool was_leader = e->leader;
    if (was_leader) {
        e->leader = false;
        e->losses++;
        uv_timer_stop(&e->deadline);
        log_info(e->log, "leader election: releasing leadership of %s/%s (identity %s)", e->ns,
                 e->name, e->identity);
    }
    if (ours) {
        send_update(e, LEASE_OP_RELEASE_PUT);
        if (!e->call)
            timer_arm(&e->release, on_release_timer, 0, 0);
    }
    if (was_leader && e->on_change)
        e->on_change(e->user, false);
}

/* ---- answers ---- */

static void on_lease_answer(void *user, const struct kube_response *r) {
    struct lease_elector *e = user;
    enum lease_op op = e->op;
    uint64_t sent = e->call_sent_ms;
    e->call = NULL;
    e->op = LEASE_OP_NONE;
    if (e->stopped)
        return;
    if (op == LEASE_OP_RELEASE_GET || op == LEASE_OP_RELEASE_PUT) {
        release_response(e, op, r);
        return;
    }
    if (e->releasing)
        return;
    char d[512];
    describe_answer(r, d, sizeof d);
    switch (op) {
    case LEASE_OP_GET:
        if (r->status == 404) {
            attempt_ok(e);
            send_create(e);
            return;
        }
        if (r->status != 200 || !cJSON_IsObject(r->json)) {
            attempt_failed(e, "get", d);
            return;
        }
        if (observe_record(e, r->json) < 0) {
            attempt_failed(e, "get", "out of memory");
            return;
        }
        attempt_ok(e);
        if (held_by_other(e)) {
            if (e->leader) {
                char why[300];
                snprintf(why, sizeof why, "the lease is held by %s", e->holder);
                step_down(e, why);
            }
            return;
        }
        send_update(e, LEASE_OP_UPDATE);
        return;
    case LEASE_OP_CREATE:
    case LEASE_OP_UPDATE:
    case LEASE_OP_RENEW: {
        bool ok = op == LEASE_OP_CREATE ? (r->status == 201 || r->status == 200) : r->status == 200;
        if (!ok || !cJSON_IsObject(r->json)) {
            if (op == LEASE_OP_RENEW) {
                /* The optimistic renewal failed (409: the record changed
                 * under us): take the slow path now, as client-go does. */
                log_debug(e->log, "leader election: renewing %s/%s: %s; reading it again", e->ns,
                          e->name, d);
                send_get(e, LEASE_OP_GET);
            } else if (r->status == 409) {
                attempt_ok(e);
                log_debug(e->log, "leader election: %s/%s: another candidate won the race (%s)",
                          e->ns, e->name, d);
            } else {
                attempt_failed(e, op == LEASE_OP_CREATE ? "create" : "update", d);
            }
            return;
        }
        if (observe_record(e, r->json) < 0) {
            attempt_failed(e, "update", "out of memory");
            return;
        }
        attempt_ok(e);
        if (now_ms() - sent >= e->renew_deadline_ms) {
            /* Written, but so late that another candidate's clock may already
             * run: do not count it; the next attempt renews (the record names
             * us, so it keeps acquireTime). */
            log_debug(e->log, "leader election: write to %s/%s answered after the deadline", e->ns,
                      e->name);
            return;
        }
        e->renewed_ms = sent;
        deadline_arm(e);
        if (!e->leader) {
            timer_arm(&e->tick, on_tick, e->retry_ms, 0); /* renew on the leader's pace */
            become_leader(e);
        }
        return;
    }
    default: return;
    }
}

/* ---- lifetime ---- */

static void free_members(struct lease_elector *e) {
    free(e->ns);
    free(e->name);
    free(e->identity);
    free(e->path);
    free(e->collection);
    cJSON_Delete(e->record);
    free(e->holder);
    free(e->observed_key);
    e->ns = e->name = e->identity = e->path = e->collection = e->holder = e->observed_key = NULL;
    e->record = NULL;
}

static void on_timer_closed(uv_handle_t *h) {
    struct lease_elector *e = h->data;
    if (--e->open_handles == 0)
        free_members(e);
}

int lease_init(struct lease_elector *e, uv_loop_t *loop, struct kube_client *kc, struct logger *lg,
               const char *ns, const char *name, const char *identity, uint64_t lease_ms,
               uint64_t renew_deadline_ms, uint64_t retry_ms, lease_change_cb on_change,
               void *user) {
    memset(e, 0, sizeof *e);
    e->stopped = true; /* until fully initialised: lease_close is then a no-op */
    if (!ns || !*ns || !name || !*name || !identity || !*identity || retry_ms == 0 ||
        renew_deadline_ms * 5 <= retry_ms * 6 || lease_ms <= renew_deadline_ms) {
        log_error(lg, "leader election: invalid settings (need a namespace, a name, an identity "
                      "and lease_duration > renew_deadline > 1.2 x retry_period > 0)");
        return -1;
    }
    e->loop = loop;
    e->kc = kc;
    e->log = lg;
    e->lease_ms = lease_ms;
    e->renew_deadline_ms = renew_deadline_ms;
    e->retry_ms = retry_ms;
    uint64_t secs = (lease_ms + 999) / 1000;
    e->lease_seconds = secs > 0x7fffffff ? 0x7fffffff : (int)secs;
    e->on_change = on_change;
    e->user = user;
    char coll[512];
    buf_t path = BUF_INIT;
    if (kube_path(coll, sizeof coll, "coordination.k8s.io", "v1", ns, "leases", NULL) < 0 ||
        buf_printf(&path, "%s/%s", coll, name) < 0 || !(e->path = buf_steal(&path)) ||
        !(e->collection = strdup(coll)) || !(e->ns = strdup(ns)) || !(e->name = strdup(name)) ||
        !(e->identity = strdup(identity))) {
        buf_free(&path);
        free_members(e);
        log_error(lg, "leader election: out of memory (or names too long)");
        return -1;
    }
    uv_timer_t *timers[] = {&e->tick, &e->deadline, &e->release};
    for (size_t i = 0; i < sizeof timers / sizeof *timers; i++) {
        int rc = uv_timer_init(loop, timers[i]);
        if (rc != 0) {
            /* Never happens with libuv's timers, but be exact: close what
             * was opened; the members go with the last close. */
            log_error(lg, "leader election: uv_timer_init: %s", uv_strerror(rc));
            if (i == 0) {
                free_members(e);
            } else {
                for (size_t j = 0; j < i; j++)
                    uv_close((uv_handle_t *)timers[j], on_timer_closed);
            }
            return -1;
        }
        timers[i]->data = e;
        e->open_handles++;
    }
    e->stopped = false;
    return 0;
}

int lease_start(struct lease_elector *e) {
    if (e->stopped || e->started)
        return -1;
    e->started = true;
    log_info(e->log, "leader election: campaigning for %s/%s as %s (lease %llu ms)", e->ns, e->name,
             e->identity, (unsigned long long)e->lease_ms);
    timer_arm(&e->tick, on_tick, 0, 0);
    return 0;
}

void lease_close(struct lease_elector *e) {
    if (e->stopped)
        return;
    e->stopped = true;
    e->leader = false;
    if (e->call) {
        kube_call_cancel(e->call);
        e->call = NULL;
        e->op = LEASE_OP_NONE;
    }
    uv_close((uv_handle_t *)&e->tick, on_timer_closed);
    uv_close((uv_handle_t *)&e->deadline, on_timer_closed);
    uv_close((uv_handle_t *)&e->release, on_timer_closed);
}

bool lease_is_leader(const struct lease_elector *e) {
    return !e->stopped && e->leader;
}

const char *lease_holder(const struct lease_elector *e) {
    return !e->stopped && e->holder ? e->holder : "";
}
