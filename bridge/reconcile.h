/* reconcile.h - make the cluster match the keys, one route at a time.
 *
 * A pass for route ns/name: build the desired state from the key cache
 * (model), render the Traefik objects, compare with the live objects the
 * informers hold, and write only what differs: POST when missing, PUT with
 * the cached resourceVersion otherwise (no GET on the normal path). A 409
 * means someone else wrote first: read the object again, recompute, retry
 * with backoff and jitter, a bounded number of times, then requeue. Bad input
 * fails only its own route, and the objects stay as they were. */
#ifndef CB_RECONCILE_H
#define CB_RECONCILE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/config.h"
#include "bridge/keycache.h"
#include "bridge/log.h"
#include "bridge/map.h"
#include "bridge/workqueue.h"
#include "sinks/informer.h"
#include "sinks/kube.h"
#include "sinks/traefik.h"

#define RECONCILE_CONFLICT_RETRIES 5

enum route_state { ROUTE_PENDING, ROUTE_APPLIED, ROUTE_ERROR };

struct route_status {
    enum route_state state;
    char *message;         /* last error, or NULL */
    uint64_t revision;     /* source revision it was built from */
    char *resource_version; /* of the IngressRoute after the last write */
};

struct reconcile_stats {
    uint64_t passes, writes, conflicts, errors, noops;
};

struct reconciler {
    uv_loop_t *loop;
    struct logger *log;
    const struct config *cfg;
    struct keycache *keys;
    struct kube_client *kube;
    struct informer *routes;      /* IngressRoutes */
    struct informer *middlewares; /* Middlewares */
    struct render_opts ropts;
    struct workqueue wq;
    struct map status; /* route id -> struct route_status */
    struct map jobs;   /* route id -> struct job in flight */
    struct reconcile_stats stats;
    bool one_shot;      /* `sync`: give up on a route after a few tries */
    unsigned one_shot_failed;
    void (*on_drained)(void *user); /* queue empty, nothing in flight or delayed */
    void *user;
};

int reconciler_init(struct reconciler *r, uv_loop_t *loop, struct logger *lg,
                    const struct config *cfg, struct keycache *keys, struct kube_client *kube,
                    struct informer *routes, struct informer *middlewares,
                    const struct render_opts *ropts);
/* Close handles, cancel jobs; free after the loop ran. */
void reconciler_close(struct reconciler *r);
void reconciler_free(struct reconciler *r);

/* Queue a route ("ns/name"). */
void reconciler_enqueue(struct reconciler *r, const char *route_id);
/* Queue every route the key cache knows. */
void reconciler_enqueue_all(struct reconciler *r);
/* Informer callback: a live object changed; queue its route (drift). */
void reconciler_object_changed(void *user, const char *ns, const char *name, const cJSON *obj);
bool reconciler_idle(const struct reconciler *r);
size_t reconciler_jobs_in_flight(const struct reconciler *r);

#endif
