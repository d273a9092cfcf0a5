/* traefikapi.h - ask Traefik itself which weights it serves.
 *
 * Traefik's API (`api.insecure`, or a dedicated entry point) shows its
 * dynamic configuration: /api/http/services lists every service, and the
 * weighted ones carry weighted.services[] = {name, weight}. This module
 * knows how Traefik names what its kubernetesCRD provider builds from the
 * objects the bridge writes, turns a route model into what the API must
 * show once Traefik has loaded it (traefikapi_expect_build), judges one
 * answer of /api/http/services?search=... against it (traefikapi_judge),
 * and fetches such answers, from an instance URL with the http client or
 * from a pod through the API server's pod proxy with the kube client.
 *
 * The names, as Traefik v3.6 gives them (seen in its API against a real
 * kube-apiserver; "@kubernetescrd" follows each name):
 *  - a Service of an IngressRoute: "<ns>-<service>-<port>", the port as the
 *    route writes it ("default-shop-v2-80", "default-shop-v2-http");
 *  - the weighted service of a route with inline services:
 *    "<ns>-<ingressroute>-<hash>", the hash 20 hex digits of the route's
 *    match (the router has the same name);
 *  - a TraefikService: "<ns>-<name>" (the weighted TraefikService of a
 *    sticky or mirrored route, "default-shop");
 *  - a mirroring TraefikService "<route>-mirror-<hash>":
 *    "<ns>-<route>-mirror-<hash>".
 * A route with one service has no weighted service in Traefik (a
 * loadBalancer named like the weighted one, or the mirroring): it is live
 * once Traefik shows a service of its IngressRoute. */
#ifndef CB_TRAEFIKAPI_H
#define CB_TRAEFIKAPI_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/lib/http.h"
#include "bridge/model/model.h"
#include "sinks/kube.h"

/* The config file's `traefik.api` section (bridge/config_schema.c). Off
 * unless urls or pods.namespace is set. */
struct traefikapi_settings {
    char **urls; /* Traefik API base URLs, "http://10.0.0.5:8080" */
    size_t n_urls;
    struct {
        char *namespace; /* pods mode: the Traefik pods' namespace; NULL = off */
        char *selector;  /* their label selector; "app.kubernetes.io/name=traefik" */
        unsigned port;   /* the port of their API entry point; 8080 */
    } pods;
    uint64_t interval_ms;        /* between confirmation rounds; 200ms */
    uint64_t timeout_ms;         /* a change not served by then is reported NotLive; 30s */
    uint64_t request_timeout_ms; /* one request to one instance; 5s */
};

static inline bool traefikapi_enabled(const struct traefikapi_settings *s) {
    return s->n_urls > 0 || s->pods.namespace != NULL;
}

/* One weight the API must show. */
struct traefikapi_want {
    char *child;   /* Traefik's service name, or (!exact) its prefix "<ns>-<svc>-" */
    char *service; /* as the route names it, for messages */
    long weight;
    bool exact;
};

struct traefikapi_expect {
    char *search; /* "<ns>-<ingressroute>": what ?search= asks for */
    char *ts;     /* the weighted TraefikService "<ns>-<name>", or NULL: inline */
    bool owned;   /* the route's services are all of the weighted service's */
    bool single;  /* one service: no weights to compare */
    struct traefikapi_want *wants;
    size_t n_wants;
    char *sig; /* the whole expectation as one string, to compare two */
};

/* What Traefik must show for route m once it has loaded what the bridge
 * wrote (owned: its services and weights; patched: the weights key's
 * services, in every weighted service of the IngressRoute that has them).
 * 0, or -1 out of memory (e is then empty). */
int traefikapi_expect_build(const struct model_route *m, struct traefikapi_expect *e);
void traefikapi_expect_free(struct traefikapi_expect *e);

enum traefikapi_verdict {
    TRAEFIKAPI_LIVE,    /* the weights are served */
    TRAEFIKAPI_STALE,   /* a weighted service shows other weights or services */
    TRAEFIKAPI_MISSING, /* no service of the route (not loaded yet, or dropped) */
    TRAEFIKAPI_BAD      /* the answer is not a list of services */
};

/* Judge an answer of /api/http/services?search=<e->search>. Unless live,
 * one line for a person goes into why: "reports shop-v2=0", "has no
 * weighted service for IngressRoute default/shop". */
enum traefikapi_verdict traefikapi_judge(const cJSON *services, const struct traefikapi_expect *e,
                                         const char *ns, const char *ir, char *why, size_t whylen);

/* Every service an instance has, in one answer (judge it as a search's:
 * traefikapi_judge picks the route's own). */
#define TRAEFIKAPI_ALL_SERVICES "/api/http/services?per_page=1000000"

/* The path (and query) to ask an instance for e's services. */
int traefikapi_services_path(const struct traefikapi_expect *e, char *out, size_t outlen);

/* ---- the client ---- */

/* An answer: status 0 means no answer (error says why: "connection refused"
 * when nothing listens there); json NULL when the body is not JSON. Owned by
 * the call. */
typedef void (*traefikapi_cb)(void *user, long status, const cJSON *json, const char *error);

struct traefikapi_call;

/* urls mode needs http, pods mode kube; both are the caller's. */
struct traefikapi_client {
    const struct traefikapi_settings *cfg;
    struct http_client *http;
    struct kube_client *kube;
};

/* GET path from instance: a base URL (urls mode) or a pod name (pods mode,
 * through /api/v1/namespaces/NS/pods/NAME:PORT/proxy). NULL when it could
 * not start (cb not called). */
struct traefikapi_call *traefikapi_get(struct traefikapi_client *c, const char *instance,
                                       const char *path, traefikapi_cb cb, void *user);
/* Pods mode: list the pods of pods.selector in pods.namespace; the answer
 * is the PodList. NULL when it could not start. */
struct traefikapi_call *traefikapi_list_pods(struct traefikapi_client *c, traefikapi_cb cb,
                                             void *user);
/* The pods of a PodList that serve: Running, not being deleted, not
 * unready. names[] point into list; at most max. */
size_t traefikapi_serving_pods(const cJSON *list, const char **names, size_t max);
/* How an instance is named to a person (status, log, Event, metric, check):
 * a pod as "<namespace>/<pod>", a URL without its user and password
 * (http://user:secret@host:8080 -> http://host:8080). */
void traefikapi_instance_name(const struct traefikapi_settings *cfg, const char *instance,
                              char *out, size_t outlen);
/* No callback afterwards. */
void traefikapi_cancel(struct traefikapi_call *call);

#endif
