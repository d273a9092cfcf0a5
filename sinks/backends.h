/* backends.h - can the services of a route serve? Services and
 * EndpointSlices in list+watch caches.
 *
 * Before a service gets a weight above 0, the reconciler asks
 * backends_check(): does the Kubernetes Service exist, does it expose the
 * route's port (a number or a port name, as Traefik matches it), and does it
 * have a ready endpoint behind that port? The answer comes from two
 * informers per watched namespace (core/v1 services, discovery.k8s.io/v1
 * endpointslices labelled kubernetes.io/service-name), never from a GET.
 *
 * Scope: the caller adds and removes the namespaces in use at run time
 * (one list+watch pair per namespace), or makes the module watch all
 * namespaces with one cluster-wide pair (backends_init's all_namespaces, or
 * later backends_watch_all).
 * Once a namespace is listed, answers come from the last state seen, also
 * while its watches reconnect after an error (retried with backoff).
 *
 * Readiness follows the EndpointSlice API: an endpoint is ready when
 * conditions.ready is true or unset (unset means ready); only endpoints of
 * the slices of the Service whose ports list the Service port's name (""
 * for an unnamed port) with a port number count, as Traefik loads them.
 * ExternalName Services have no endpoints: they need only exist (and, for
 * a port name, expose it; a port number needs no match, as in Traefik).
 * TraefikService references are checked for existence in the caller's own
 * TraefikService informer (backends_set_traefikservices), when given.
 *
 * on_change tells the caller that a check's answer may have changed: a
 * Service was added, deleted or had its type or ports changed, or one of its
 * EndpointSlices changed its ports or went from no ready endpoint to some or
 * back. It may be called when no answer changed. Before a namespace's first
 * list completed nothing is reported for it; then on_change(ns, NULL) says
 * "everything in ns may have changed" (ns is NULL with all_namespaces).
 *
 * Lifetime: the struct is embedded by the caller. backends_init, then
 * backends_add_namespace (any time), backends_start, ..., backends_stop
 * (cancels every request; no callback afterwards; the caches stay readable)
 * and backends_close (frees everything from the informers' close callbacks,
 * then calls its callback: the struct's memory may go then). Call
 * backends_stop or backends_close before kube_client_close. */
#ifndef CB_BACKENDS_H
#define CB_BACKENDS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "bridge/lib/log.h"
#include "bridge/lib/map.h"
#include "sinks/informer.h"
#include "sinks/kube.h"

enum backend_kind { BACKEND_SERVICE, BACKEND_TRAEFIKSERVICE };

enum backend_result {
    BACKEND_OK,              /* exists, exposes the port, ready (when asked) */
    BACKEND_OK_NO_ENDPOINTS, /* exists and has no endpoints to check: ExternalName, TraefikService
                              */
    BACKEND_NOT_SYNCED,      /* its namespace is not listed yet (or not watched at all) */
    BACKEND_MISSING,         /* no such Service / TraefikService */
    BACKEND_NO_PORT,         /* the Service does not expose the route's port */
    BACKEND_NOT_READY,       /* no ready endpoint behind the port */
};

/* ns NULL: every namespace; service NULL: every service of ns. */
typedef void (*backends_change_cb)(void *user, const char *ns, const char *service);

struct backends;
/* Everything is freed: b's memory may go. */
typedef void (*backends_close_cb)(struct backends *b);

struct backends_scope;

/* Embedded by its owner. */
struct backends {
    /* read-only */
    bool all_namespaces;
    struct map scopes; /* namespace ("" with all_namespaces) -> struct backends_scope */
    /* private */
    uv_loop_t *loop;
    struct kube_client *kc;
    struct logger *log;
    backends_change_cb on_change;
    void *user;
    struct backends_scope *dying;     /* removed, waiting for their informers to close */
    struct informer *traefikservices; /* the caller's, or NULL: not checked */
    unsigned open;                    /* informers not closed yet */
    bool started, stopped, closing, closed;
    backends_close_cb on_closed;
};

/* 0, or -1 (out of memory). With all_namespaces the add/remove calls are
 * accepted and ignored: one cluster-wide list+watch covers everything. */
int backends_init(struct backends *b, uv_loop_t *loop, struct kube_client *kc, struct logger *lg,
                  bool all_namespaces, backends_change_cb on_change, void *user);
/* Watch namespace ns from now on (started at once after backends_start).
 * 0 (also when already watched), or -1 (out of memory, or stopped). */
int backends_add_namespace(struct backends *b, const char *ns);
/* Stop watching ns and forget its objects (no callback for them). */
void backends_remove_namespace(struct backends *b, const char *ns);
bool backends_watching(const struct backends *b, const char *ns);
/* Watch every namespace with one cluster-wide list+watch pair from now on
 * (when many namespaces are in use): the per-namespace pairs answer until
 * it has listed, then go. 0 (also when already so), or -1. */
int backends_watch_all(struct backends *b);
/* Why ns cannot be listed now (its last list or watch failed), or NULL. */
const char *backends_problem(struct backends *b, const char *ns);
/* Existence of TraefikService references: the caller's informer of
 * traefikservices (it must outlive this module), NULL for none. */
void backends_set_traefikservices(struct backends *b, struct informer *inf);
int backends_start(struct backends *b);
/* Cancel every list and watch; no callback afterwards; the caches stay
 * readable. */
void backends_stop(struct backends *b);
/* backends_stop, then close every informer; once all have closed and
 * everything is freed, cb(b) (cb may be NULL). A second call does nothing. */
void backends_close(struct backends *b, backends_close_cb cb);
/* Everything freed (after backends_close and the loop ran). */
bool backends_closed(const struct backends *b);

/* Can ns/name serve on port ("80" or "http", as in the route document)?
 * require_ready: an ordinary Service also needs a ready endpoint. One line
 * for a person goes into msg ("shop-v2 has no ready endpoints", "shop-v2
 * does not expose port 8080 (it has 80/http)"). Answers from the caches
 * only; no request is made. */
enum backend_result backends_check(struct backends *b, const char *ns, const char *name,
                                   const char *port, enum backend_kind kind, bool require_ready,
                                   char *msg, size_t msglen);
/* OK or OK_NO_ENDPOINTS: the service may carry weight. */
bool backend_result_ok(enum backend_result r);
const char *backend_result_name(enum backend_result r);

#endif
