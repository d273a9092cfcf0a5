/* model.h - keys -> per-route desired state.
 *
 * A route folder P<ns>/<name>/ holds up to three input keys: `route` (owned
 * mode), `weights` and `headers` (docs/usage.md sections 1 to 5 show them as
 * users write them), and the `status` key the bridge writes back.
 * model_build() parses and validates the input keys and produces one struct
 * model_route, or one error naming the key and the reason. It is pure: no
 * I/O, no logging, no Kubernetes. */
#ifndef CB_MODEL_H
#define CB_MODEL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_NS_MAX 63          /* DNS-1123 label */
#define MODEL_NAME_MAX 253       /* DNS-1123 subdomain */
#define MODEL_WEIGHT_MAX 1000000 /* Traefik weights are relative; keep them sane */

/* The leaves of a route folder. `freeze` and `abort` are brakes a person
 * pulls (docs/usage.md section 15): their value is the reason. `plan` and
 * `pause` drive a ramp plan (section 14). */
enum model_leaf {
    LEAF_ROUTE,
    LEAF_WEIGHTS,
    LEAF_HEADERS,
    LEAF_STATUS,
    LEAF_FREEZE,
    LEAF_ABORT,
    LEAF_PLAN,  /* a ramp plan (bridge/model/plan.h) */
    LEAF_PAUSE, /* holds the plan's current step; the value is the reason */
    MODEL_NLEAVES
};
/* The leaves' names, indexed by enum model_leaf. */
extern const char *const model_leaf_names[MODEL_NLEAVES];
/* "route, weights, ..., plan or pause", for messages. */
#define MODEL_LEAVES_TEXT "route, weights, headers, status, freeze, abort, plan or pause"

/* Split a full key under prefix into namespace, name and leaf. Returns 0 on a
 * route key (ns/name written NUL-terminated into the buffers), -1 when the key
 * is not one of ours (the caller warns once per key), with a reason in err. */
int model_parse_key(const char *prefix, const char *key, char ns[MODEL_NS_MAX + 1],
                    char name[MODEL_NAME_MAX + 1], enum model_leaf *leaf, char *err, size_t errlen);
bool model_dns1123_label(const char *s);     /* namespace */
bool model_dns1123_subdomain(const char *s); /* object name */

struct model_service {
    char *name;
    char *ns;         /* `namespace` as written, or NULL (the route's own); only ever set
                         when model_input.allow_cross_namespace was true */
    char *port;       /* as written: "80" or "http"; always set (port is required) */
    bool port_is_num; /* render as a number */
    long port_num;
    bool has_weight; /* from the route document or the weights key */
    long weight;     /* always set: the given weight, else Traefik's default of 1 */
};

struct model_weight {
    char *service;
    long weight;
};

enum model_rule_kind { RULE_HEADER, RULE_COOKIE };

struct model_kv {
    char *key;
    char *value;
};

struct model_rule {
    char *name; /* given, or "h<index>" */
    enum model_rule_kind kind;
    char *header;  /* header name (RULE_HEADER) or cookie name (RULE_COOKIE) */
    char *value;   /* exact value, or NULL */
    char *regex;   /* regex (headers only), or NULL */
    char *service; /* one of the route's services */
    struct model_kv *set_request;
    size_t n_set_request;
    struct model_kv *set_response;
    size_t n_set_response;
};

/* SameSite attribute of the sticky cookie; UNSET leaves it to Traefik. */
enum model_same_site { SAME_SITE_UNSET, SAME_SITE_NONE, SAME_SITE_LAX, SAME_SITE_STRICT };

#define MODEL_MAX_AGE_MAX 2147483647L /* sticky maxAge ceiling: fits every int */

/* `sticky` in the route document: the weighted route then goes through a
 * TraefikService whose weighted load balancer sets this cookie, so a client
 * keeps the version it was first given. */
struct model_sticky {
    bool enabled; /* a `sticky` mapping was given (it always names a cookie) */
    char *cookie; /* cookie name, an RFC 6265 token; set when enabled */
    bool has_secure, secure;
    bool has_http_only, http_only;
    enum model_same_site same_site;
    bool has_max_age;
    long max_age; /* seconds, 0..MODEL_MAX_AGE_MAX */
};

#define MODEL_BODY_SIZE_MAX 9007199254740992LL /* mirror maxBodySize: 2^53, exact in JSON */

/* `mirror` in the route document: Traefik copies `percent` per cent of the
 * weighted route's requests to this service and throws its answers away;
 * clients only ever get the answers of the route's own services. */
struct model_mirror {
    bool enabled;             /* a `mirror` mapping was given */
    struct model_service svc; /* name, ns, port as for a route service; no weight */
    long percent;             /* 0..100 */
    bool has_mirror_body, mirror_body;
    bool has_max_body_size;
    long long max_body_size; /* bytes, -1 (no limit) .. MODEL_BODY_SIZE_MAX */
};

struct model_route {
    char *ns, *name;
    bool owned; /* a `route` key exists */

    /* owned mode (from `route`, weights already overridden by `weights`) */
    char *match;
    char **entry_points;
    size_t n_entry_points;
    bool has_priority;
    long long priority;
    struct model_service *services;
    size_t n_services;
    char **middlewares;
    size_t n_middlewares;
    cJSON *tls;               /* passthrough object or NULL */
    struct model_rule *rules; /* from `headers` */
    size_t n_rules;
    struct model_sticky sticky; /* from `route`; .enabled false when absent */
    struct model_mirror mirror; /* from `route`; .enabled false when absent */

    /* `weights` as given (both modes; patched mode uses only this) */
    struct model_weight *weights;
    size_t n_weights;

    uint64_t revision;  /* highest source revision among the route's keys */
    uint64_t route_rev; /* revision of the `route` key */
    bool weights_held;  /* a service kept its weight in force (see model_input.held) */

    /* Brakes (docs/usage.md section 15). */
    bool has_max_step;   /* `maxStep` in the route document */
    long max_step;       /* percentage points a change may move a share; 0 = no limit */
    bool weights_forced; /* the weights value marks this step as deliberate ('!', _force) */
    bool aborted;        /* model_input.abort: all traffic on the first service */
    uint64_t plan_rev;   /* model_input.plan_rev */
};

struct model_input {
    const char *prefix; /* for error messages: "<prefix><ns>/<name>/<leaf>: reason" */
    const char *ns, *name;
    const char *route; /* NULL when the key is absent */
    size_t route_len;
    const char *weights;
    size_t weights_len;
    const char *headers;
    size_t headers_len;
    uint64_t revision;
    /* reconcile.allow_cross_namespace: a service entry may name another
     * namespace. Off (zero) by default, so a key writer cannot point a route
     * at Services of namespaces they do not control. */
    bool allow_cross_namespace;
    uint64_t route_rev; /* revision of the `route` key alone */
    /* The weights in force (from the live objects) after a `weights` key was
     * deleted: deleting a key must never move traffic, so without a `weights`
     * key every service listed here keeps this weight, unless held_doc_new
     * (the route document changed since) and the document gives it one. */
    const struct model_weight *held;
    size_t n_held;
    bool held_doc_new;
    /* The route's `abort` key exists: every request goes to the first
     * service (owned: of the route document; patched: named in `weights`),
     * weight 100 and every other one 0, and the header rules are left out.
     * In owned mode the `weights` and `headers` keys are then not read at
     * all, so a broken one cannot stop the brake. */
    bool abort;
    /* The weights given (or held) are a ramp plan's step: the plan key's
     * revision (0: they are the weights key's). */
    uint64_t plan_rev;
};

/* What model_build made of a route folder. The values are fixed: callers may
 * test `< 0` for an error. */
enum model_build_result {
    MODEL_INVALID = -1, /* err holds "KEY: reason"; out is left zeroed */
    MODEL_BUILT = 0,    /* *out is filled; free it with model_route_free */
    MODEL_ABSENT = 1,   /* neither route nor weights: nothing desired; out stays zeroed */
};

enum model_build_result model_build(const struct model_input *in, struct model_route *out,
                                    char *err, size_t errlen);
void model_route_free(struct model_route *r);

/* Exposed for unit tests and the patched-mode sink: parse a `weights` value in
 * any of its three forms. Caller frees with model_weights_free. The mark of a
 * deliberate step (a last '!' in the name=weight form, `_force: true` in a
 * mapping) is an error here; model_parse_weights_forced takes it and says
 * whether it was there. */
int model_parse_weights(const char *text, size_t len, struct model_weight **out, size_t *n,
                        char *err, size_t errlen);
int model_parse_weights_forced(const char *text, size_t len, struct model_weight **out, size_t *n,
                               bool *forced, char *err, size_t errlen);
void model_weights_free(struct model_weight *w, size_t n);

/* Max step: how far new weights move traffic from the weights in force.
 * Each service's share is its weight over the total; a service missing on
 * one side has a share of 0 there. Returns the largest change of one share,
 * in percentage points (0..100), and that service (borrowed from `to` or
 * `from`) with its shares before and after (percent); on a tie, a service
 * whose share grows. 0 (and *service NULL) when nothing flows now (every
 * weight in force is 0, or there is none): there is nothing to move. */
double model_weights_step(const struct model_weight *from, size_t n_from,
                          const struct model_weight *to, size_t n_to, const char **service,
                          double *from_pct, double *to_pct);

#endif
