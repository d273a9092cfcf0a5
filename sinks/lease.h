/* lease.h - leader election on a coordination.k8s.io/v1 Lease.
 *
 * canary-bridge often runs on two hosts; only one may write Traefik objects.
 * This is client-go's algorithm (its tools/leaderelection package,
 * tryAcquireOrRenew) on the libuv loop, without blocking:
 *
 *  - Every retry period: GET the Lease (404: create it holding it; 409
 *    AlreadyExists: another candidate won). A Lease held by another identity
 *    is respected until observedTime + leaseDurationSeconds, where
 *    observedTime is the LOCAL monotonic time at which we last saw the record
 *    change (holderIdentity, renewTime or resourceVersion): clocks of other
 *    hosts are never compared with ours. Otherwise PUT it with the cached
 *    resourceVersion (acquireTime now when taking over, kept when renewing;
 *    leaseTransitions + 1 when the holder changes). 409 = lost the race.
 *  - The leader renews every retry period, first with a PUT of the cached
 *    record (client-go's optimistic fast path), falling back to GET + PUT.
 *  - A leader that has not renewed successfully for renew_deadline steps down
 *    (on_change(false)) even while a request hangs. The deadline runs from
 *    the moment the last successful renewal was SENT, so it ends before any
 *    other candidate can see the Lease expire (renew_deadline < lease
 *    duration): a leader that cannot renew stops writing before another one
 *    may start.
 *  - lease_release() hands the Lease over on shutdown: holderIdentity "" and
 *    leaseDurationSeconds 1, retried on 409 a few times, bounded in time.
 *
 * Lease writes bypass the kube client's dry-run mode (kube_request_*_nodry):
 * instances started with --dry-run still coordinate for real.
 *
 * leaseDurationSeconds is lease_ms rounded UP to whole seconds (at least 1).
 * A Lease without leaseDurationSeconds held by someone else is respected for
 * our own lease duration.
 *
 * Lifetime: the struct is embedded by the caller. lease_init, lease_start,
 * maybe lease_release, then lease_close (cancels the request, closes the
 * timers; no callback afterwards; what the elector allocated is freed when
 * the last timer has closed), then run the loop before freeing the memory.
 * Call lease_close before kube_client_close/free (the elector owns one kube
 * call at a time). */
#ifndef CB_LEASE_H
#define CB_LEASE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/lib/log.h"
#include "sinks/kube.h"

typedef void (*lease_change_cb)(void *user, bool leader);
typedef void (*lease_done_cb)(void *user);

enum lease_op {
    LEASE_OP_NONE,
    LEASE_OP_GET,
    LEASE_OP_CREATE,
    LEASE_OP_UPDATE,      /* slow path: after a GET */
    LEASE_OP_RENEW,       /* fast path: the leader PUTs its cached record */
    LEASE_OP_RELEASE_GET, /* release after a 409: re-read */
    LEASE_OP_RELEASE_PUT,
};

/* The config file's `leader_election` section (bridge/config.c fills it). */
struct lease_settings {
    bool enabled;
    char *namespace;                                                /* default "default" */
    char *name;                                                     /* default "canary-bridge" */
    uint64_t lease_duration_ms, renew_deadline_ms, retry_period_ms; /* 15s 10s 2s */
    char *identity;                                                 /* default hostname */
};

/* Embedded by its owner. */
struct lease_elector {
    /* read-only */
    uint64_t acquisitions, losses; /* counters for metrics and tests */
    /* private */
    uv_loop_t *loop;
    struct kube_client *kc;
    struct logger *log;
    char *ns, *name, *identity;
    char *path;       /* /apis/coordination.k8s.io/v1/namespaces/<ns>/leases/<name> */
    char *collection; /* the same without /<name>, for the create */
    uint64_t lease_ms, renew_deadline_ms, retry_ms;
    int lease_seconds; /* leaseDurationSeconds we write */
    lease_change_cb on_change;
    void *user;

    uv_timer_t tick;     /* the next tryAcquireOrRenew */
    uv_timer_t deadline; /* leader: renew deadline */
    uv_timer_t release;  /* bound on lease_release; also defers its done */
    int open_handles;    /* timers not yet closed */
    bool started, stopped, leader, releasing, release_finished;

    struct kube_call *call; /* at most one request in flight */
    enum lease_op op;
    uint64_t call_sent_ms; /* monotonic ms when `call` was sent */

    cJSON *record;        /* the last Lease object seen (GET/PUT/POST answer) */
    char *holder;         /* holderIdentity of record ("" when none) */
    char *observed_key;   /* holder, renewTime, resourceVersion of record */
    uint64_t observed_ms; /* monotonic ms when record was last seen to change */
    uint64_t renewed_ms;  /* leader: when the last successful write was sent */
    unsigned failures;    /* consecutive failed attempts (warn on the first) */
    unsigned release_attempts;
    lease_done_cb release_done;
    void *release_user;
};

/* ns/name of the Lease, identity of this candidate (unique per host).
 * Requires lease_ms > renew_deadline_ms > 1.2 * retry_ms > 0 (client-go's
 * constraint; config.c checks it too). Returns 0, or -1 (invalid arguments,
 * out of memory or uv failure; logged; lease_close is then a no-op, but run
 * the loop before freeing e). on_change is called on transitions only, from
 * the loop (and from lease_release). */
int lease_init(struct lease_elector *e, uv_loop_t *loop, struct kube_client *kc, struct logger *lg,
               const char *ns, const char *name, const char *identity, uint64_t lease_ms,
               uint64_t renew_deadline_ms, uint64_t retry_ms, lease_change_cb on_change,
               void *user);
/* Start campaigning: the first attempt runs on the next loop iteration. */
int lease_start(struct lease_elector *e);
/* On shutdown: stop campaigning and, if the Lease is ours, hand it over
 * (holderIdentity "", leaseDurationSeconds 1), so a follower takes over at
 * its next retry instead of after a lease duration. ("Release" is the
 * Lease's own word for this; nothing is freed, lease_close still follows.)
 * A leader first steps down (on_change(false)) so that nothing is written
 * once the Lease is handed over; on_change(false) is called from inside
 * lease_release, the PUT leaves on the next loop iteration. done(user) is
 * called exactly once, from the loop (never from inside lease_release), at
 * most min(renew_deadline, 5 s) later, unless lease_close comes first. Call
 * it once, before lease_close; the elector then stays idle until
 * lease_close. */
void lease_release(struct lease_elector *e, lease_done_cb done, void *user);
/* Cancel the request in flight, close the timers; no callback after this
 * (not even a pending release's done). Free e after the loop ran. A second
 * call does nothing. */
void lease_close(struct lease_elector *e);

bool lease_is_leader(const struct lease_elector *e);
/* The holderIdentity last observed ("" when none or unknown). Valid until the
 * next callback of the elector. */
const char *lease_holder(const struct lease_elector *e);

/* Exposed for tests: MicroTime "2006-01-02T15:04:05.000000Z" of the wall
 * clock into out (at least 28 bytes). Returns 0 or -1. */
int lease_microtime_now(char *out, size_t outlen);

#endif
