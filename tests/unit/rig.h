/* rig.h - the reconciler with the key cache, on the Kubernetes API test
 * server: what the app builds, for C unit tests of the reconciler.
 *
 * A rig is a key cache, three informers listing and watching the Traefik
 * kinds through the real kube client, and a reconciler fed by the key
 * cache's change callbacks; on request also the backend checks (struct
 * backends) and the client's answers seen by the reconciler, as the app
 * wires them. Keys go in with rig_put_key / rig_delete_key (or a whole
 * listing, rig_list_routes) as a source would deliver them; what reached
 * the API server is read back from the server (its objects, its request log
 * in arrival order). Each
 * test has its own namespace and key prefix ("canary-<ns>/"), so objects
 * of earlier tests in the shared server are neither its own nor counted by
 * its deletion guard. Use rig_setup / rig_teardown as the per-test setup
 * and teardown of a group whose setup is kapi_setup.
 *
 * Include after <cmocka.h>. */
#ifndef CB_TEST_RIG_H
#define CB_TEST_RIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/core/keycache.h"
#include "bridge/core/reconcile.h"
#include "kapi.h"
#include "sinks/backends.h"
#include "sinks/informer.h"
#include "sinks/traefik.h"

#define RIG_GROUP "traefik.io"
/* A route document: shop-v1 on port 80, shop-v2 on port2 (a string
 * literal: "80", "http"). */
#define RIG_ROUTE_DOC_PORT(port2)                                                                  \
    "match: Host(`shop.example.com`)\n"                                                            \
    "services:\n"                                                                                  \
    "  - name: shop-v1\n"                                                                          \
    "    port: 80\n"                                                                               \
    "  - name: shop-v2\n"                                                                          \
    "    port: " port2 "\n"
#define RIG_ROUTE_DOC RIG_ROUTE_DOC_PORT("80")
/* One rule that sets a request header: it gets a Middleware. */
#define RIG_HEADERS_DOC                                                                            \
    "- name: beta\n"                                                                               \
    "  header: X-Canary\n"                                                                         \
    "  value: always\n"                                                                            \
    "  service: shop-v2\n"                                                                         \
    "  setRequestHeaders: {X-Canary-Route: beta}\n"
#define RIG_WAIT_MS 10000

struct rig {
    struct kapi *k;
    struct logger log;
    struct kube_client *kc;
    struct informer inf[OBJ_NKINDS];
    struct keycache keys;
    struct reconciler rec;
    struct reconcile_settings cfg;
    /* Set before rig_start: the kube client's answers go to
     * reconciler_api_answered; the backend checks run (b). */
    bool observe_answers;
    bool with_backends;
    struct backends b;
    char ns[64];
    char prefix[80];
    uint64_t rev; /* the source's revision counter */
    bool started;
    /* What the hooks saw. */
    char events[64][96]; /* "<Reason> <object name>" */
    char event_type[64][16];
    size_t n_events;
    char event_msg[1024]; /* the last one's message */
    unsigned statuses;    /* status hook calls */
    unsigned dropped;     /* ... of them with the route gone */
    char unready[8][128]; /* "<route id> <service>" reported unready now */
    size_t n_unready;
};

/* Per-test setup and teardown (state: the struct kapi of kapi_setup; the
 * rig is its data). Setup leaves default settings in r->cfg, not started:
 * a test changes them, then calls rig_start. */
int rig_setup(void **state);
int rig_teardown(void **state);
struct rig *rig_of(void **state);

/* Start everything for namespace ns (created unless create_ns is false):
 * informers synced, reconciler handing out passes. */
void rig_start(struct rig *r, const char *ns, bool create_ns);

/* Keys, as a source delivers them: "<prefix><ns>/<route>/<leaf>". */
void rig_key(const struct rig *r, const char *route, const char *leaf, char *out, size_t outlen);
void rig_put_key(struct rig *r, const char *route, const char *leaf, const char *value);
void rig_delete_key(struct rig *r, const char *route, const char *leaf);
/* A key right under the prefix ("_freeze"). */
void rig_put_prefix_key(struct rig *r, const char *name, const char *value);
void rig_delete_prefix_key(struct rig *r, const char *name);
/* A complete listing of the source (a snapshot, as after a re-list):
 * RIG_ROUTE_DOC and weights 90/10 for each of the n (at most 8) routes. */
void rig_list_routes(struct rig *r, const char *const *routes, size_t n);
/* A route with RIG_ROUTE_DOC and weights v1/v2. */
void rig_put_route(struct rig *r, const char *route, int v1, int v2);
/* Route shop at 90/10 (with RIG_HEADERS_DOC when headers) applied, and the
 * watch echoes of our own writes settled too. */
void rig_apply_shop(struct rig *r, bool headers);

/* Run until the reconciler has nothing queued, in flight or delayed. */
void rig_settle(struct rig *r);

/* Reading the server. */
cJSON *rig_get_obj(struct rig *r, const char *plural, const char *name, long *status);
cJSON *rig_must_get(struct rig *r, const char *plural, const char *name); /* must exist */
bool rig_exists(struct rig *r, const char *plural, const char *name);
/* How many objects of a kind the test's namespace has. */
int rig_count_objs(struct rig *r, const char *plural);
/* The weight of service svc in the last route of an IngressRoute (-1 none). */
int rig_weight_of(const cJSON *ir, const char *svc);
/* Wait until IngressRoute name gives shop-v1 weight v1. */
void rig_wait_weight(struct rig *r, const char *name, int v1);
/* The requests to Traefik kinds in the test's namespace since seq, as
 * "METHOD plural/name STATUS", in arrival order (printed too); returns how
 * many (at most max). GETs only with gets (the test's own reads are GETs
 * too). Bodies (or NULL) into bodies[] when given (caller frees each). */
int rig_requests_since(struct rig *r, int seq, bool gets, char out[][128], cJSON **bodies, int max);
/* The same without GETs: the writes. */
int rig_writes_since(struct rig *r, int seq, char out[][128], cJSON **bodies, int max);
/* Create an IngressRoute no canary-bridge manages (as Helm would), with
 * shop-v1 and shop-v2 at weight 1, and wait until the informer has it. */
void rig_create_foreign_ir(struct rig *r, const char *name);

/* The route's status record (NULL: none), or one that must exist. */
const struct route_status *rig_status(struct rig *r, const char *route);
const struct route_status *rig_must_status(struct rig *r, const char *route);
/* Events the hook saw with this reason. */
size_t rig_events_with(const struct rig *r, const char *reason);

#endif
