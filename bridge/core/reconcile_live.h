/* reconcile_live.h - is an applied route served? Confirmation in Traefik.
 *
 * With traefik.api set, every route the reconciler applies with new
 * weights is confirmed in the data plane: each Traefik instance (the
 * configured API URLs, or the pods of a Traefik deployment reached through
 * the API server's pod proxy) is asked, every traefik.api.interval, for the
 * route's services (sinks/traefikapi.h), until all of them show the new
 * weights. The route's served state is then "live" (hooks.live, with the
 * seconds since the source change when one started it). Not all of them
 * within traefik.api.timeout: "stale", naming the first instance that lags
 * and what it reports (hooks.not_live, once per change); nothing is rolled
 * back, and the route is asked again every timeout until it is served.
 *
 * Rounds never overlap: a round asks every instance about every route that
 * is due (pods mode: lists the pods first), and the next round starts an
 * interval after the last answer. Nothing blocks; a route that changes or
 * goes meanwhile ignores the answers of the round in flight. */
#ifndef CB_RECONCILE_LIVE_H
#define CB_RECONCILE_LIVE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/lib/list.h"
#include "bridge/lib/log.h"
#include "bridge/lib/map.h"
#include "bridge/model/model.h"
#include "sinks/traefikapi.h"

enum live_served {
    LIVE_PENDING, /* applied, not yet seen in every instance */
    LIVE_LIVE,    /* every instance serves the weights */
    LIVE_STALE    /* not within traefik.api.timeout: reason says who lags */
};

struct live_hooks {
    /* The route's served state or reason changed. */
    void (*changed)(void *user, const char *route_id);
    /* Served everywhere: seconds since the source change (< 0: unknown,
     * e.g. a route confirmed at start-up). */
    void (*live)(void *user, const char *route_id, double seconds);
    /* Not served within the timeout: the first lagging instance and why
     * ("reports shop-v2=0 (the route gives it 10)"). */
    void (*not_live)(void *user, const char *route_id, const char *instance, const char *why);
    void *user;
};

struct live_route; /* private */

struct live_checker {
    /* public: set after live_init */
    struct live_hooks hooks;
    /* read-only */
    struct map routes; /* route id -> struct live_route */
    uint64_t rounds, requests;
    /* private */
    uv_loop_t *loop;
    struct logger *log;
    const struct traefikapi_settings *cfg;
    struct traefikapi_client client;
    uv_timer_t timer;
    struct list_node probes;           /* requests in flight */
    struct traefikapi_call *pods_call; /* pods mode: the list in flight */
    size_t waiting;                    /* answers the round still waits for */
    size_t instances;                  /* instances the round asks */
    char pods_problem[300];            /* why the last pods list failed, or "" */
    bool in_round, stopped, closing;
};

/* A route's served state for the status key and `status`. */
struct live_view {
    enum live_served served;
    const char *reason; /* stale: "<instance> reports ..."; else NULL */
    double live_at;     /* Unix time it was confirmed; 0 when not live */
};

/* http (urls mode) and kube (pods mode) are the caller's and outlive the
 * checker. 0, or -1 (memory). */
int live_init(struct live_checker *lc, uv_loop_t *loop, struct logger *lg,
              const struct traefikapi_settings *cfg, struct http_client *http,
              struct kube_client *kube);
/* Route route_id was applied with model m (the reconciler's applied hook).
 * A change of what Traefik must show starts a confirmation; the same
 * weights again change nothing. origin_ns: uv_hrtime() of the source
 * change this write carried, 0 when none (start-up, resync). */
void live_expect(struct live_checker *lc, const char *route_id, const struct model_route *m,
                 uint64_t origin_ns);
/* The route is gone, or failing: forget it. */
void live_forget(struct live_checker *lc, const char *route_id);
/* false when the checker does not know the route (v untouched). */
bool live_view(const struct live_checker *lc, const char *route_id, struct live_view *v);
const char *live_served_name(enum live_served s);
/* Cancel every request; no callback afterwards. */
void live_stop(struct live_checker *lc);
/* live_stop and close the timer; the memory goes with live_free after the
 * loop has run. */
void live_close(struct live_checker *lc);
void live_free(struct live_checker *lc);

#endif
