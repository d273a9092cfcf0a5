/* traefik.h - render a model_route into Traefik CRD objects (cJSON), and
 * compare/merge them with live objects from the API server.
 *
 * Knows Traefik's schemas and rule syntax (v2/v3, quoting, priorities); knows
 * nothing of etcd, Consul or HTTP. Objects are plain cJSON trees in the shape
 * the Kubernetes API takes (apiVersion, kind, metadata, spec). */
#ifndef CB_TRAEFIK_H
#define CB_TRAEFIK_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "bridge/model/model.h"
#include "sinks/traefikapi.h"

#define TRAEFIK_LABEL_MANAGED_BY "app.kubernetes.io/managed-by"
#define TRAEFIK_MANAGER "canary-bridge"
#define TRAEFIK_ANNOT_PREFIX "canary-bridge.io/source-prefix"
#define TRAEFIK_ANNOT_REVISION "canary-bridge.io/source-revision"
#define TRAEFIK_ANNOT_SOURCE "canary-bridge.io/source" /* "etcd" | "consul" */
/* On an owned IngressRoute: where its weights come from: "route" (the route
 * document), "weights" (the weights key), or "held:<revision of the route
 * key>" (the weights key was deleted, or an abort set them; the weights in
 * force stay until the route document changes or a new weights key comes). */
#define TRAEFIK_ANNOT_WEIGHTS "canary-bridge.io/weights-from"

/* The config file's `traefik` section (bridge/config.c fills it). */
enum rule_syntax { RULE_SYNTAX_V3, RULE_SYNTAX_V2 };

struct traefik_settings {
    char *api_group;              /* "traefik.io" (default) | "traefik.containo.us" | "auto" */
    enum rule_syntax rule_syntax; /* default v3 */
    /* traefik.api: confirm the weights in Traefik; off by default */
    struct traefikapi_settings api;
};

struct render_opts {
    const char *api_group;   /* "traefik.io" | "traefik.containo.us" */
    enum rule_syntax syntax; /* v3 | v2 */
    const char *prefix;      /* source prefix, for the annotation */
    const char *source_name; /* "etcd" | "consul" */
};

/* The full IngressRoute for an owned route: metadata (name, namespace, our
 * label, our annotations), spec.routes with `kind: Rule` and explicit weights
 * on every service; one route per header/cookie rule first (explicit
 * priorities above the weighted route, earlier rules higher), then the
 * weighted route. With r->mirror.enabled the weighted route has the single
 * service {name: traefik_mirror_name(r), kind: TraefikService} (see
 * traefik_render_mirroring); else, when traefik_weighted_service_wanted(r),
 * {name: <r->name>, kind: TraefikService} (see
 * traefik_render_traefikservice); rule routes always go straight to their
 * Service. A service with a namespace (cross-namespace, allowed by the model
 * only when configured) carries it. Returns NULL for a patched-mode route
 * and on OOM. */
cJSON *traefik_render_ingressroute(const struct model_route *r, const struct render_opts *o);

/* Does the owned route need the weighted TraefikService <r->name>? When
 * sticky, and when mirrored with more than one service (a mirroring has one
 * main service: this one carries the split). */
bool traefik_weighted_service_wanted(const struct model_route *r);

/* The weighted TraefikService <r->name> (same namespace, label and
 * annotations as the IngressRoute): spec.weighted.services = the route's
 * services with ports and explicit weights; when sticky,
 * spec.weighted.sticky.cookie = {name, secure?, httpOnly?, sameSite?,
 * maxAge?}, each optional field only when given. maxAge is left out under
 * RULE_SYNTAX_V2: Traefik v2's CRD has no such field. Returns NULL when
 * !traefik_weighted_service_wanted(r) (check that to tell it from OOM), and
 * on OOM. */
cJSON *traefik_render_traefikservice(const struct model_route *r, const struct render_opts *o);

/* The mirroring TraefikService traefik_mirror_name(r) for a route with
 * r->mirror.enabled (same namespace, label and annotations as the
 * IngressRoute): spec.mirroring = the main service (the weighted
 * TraefikService when traefik_weighted_service_wanted(r), else the route's
 * one Service with its port), mirrorBody? and maxBodySize? only when given,
 * and mirrors = [the mirror Service with its port and percent]. mirrorBody
 * is left out under RULE_SYNTAX_V2: Traefik v2's CRD has no such field.
 * Returns NULL when the route has no mirror, and on OOM. */
cJSON *traefik_render_mirroring(const struct model_route *r, const struct render_opts *o);
/* Name of the mirroring TraefikService, "<route>-mirror-<hash>": the hash
 * (40 bits of FNV-1a over "<route>//mirror") keeps it distinct after
 * Traefik's folding, as for Middlewares. Heap string, valid Kubernetes
 * name (shortened like traefik_middleware_name). */
char *traefik_mirror_name(const struct model_route *r);

/* The headers Middleware for rule i, or NULL when i is out
 * of range, the rule sets no headers, or on OOM. Its name is
 * traefik_middleware_name(r, i). */
cJSON *traefik_render_middleware(const struct model_route *r, size_t i,
                                 const struct render_opts *o);
/* Name of rule i's Middleware, "<route>-<rule>-<hash of the exact pair>":
 * distinct per (route, rule) even after Traefik folds '.' and '-' runs into
 * one '-'. Heap string, valid Kubernetes name (truncated with a hash suffix
 * of the full name when too long). */
char *traefik_middleware_name(const struct model_route *r, size_t i);

/* s itself when it fits in max bytes, else a prefix ending on an alphanumeric
 * plus "-" and 10 hex digits of a hash of all of s: a valid Kubernetes name
 * or label value (max 253 or 63) that stays distinct. Heap string. */
char *traefik_shorten(const char *s, size_t max);

/* Quote s as a Traefik rule string literal: `s` when it holds no backtick and
 * no CR, else a Go interpreted literal "..." with \\ \" \xNN escapes. */
char *traefik_rule_quote(const char *s);

/* True when obj carries our managed-by label. */
bool traefik_is_managed(const cJSON *obj);

/* Owned mode, for any kind we render (IngressRoute, Middleware,
 * TraefikService): build the object to PUT from the live object and the desired
 * one: start from live (keeping resourceVersion and other metadata), replace
 * spec, set our label and annotations, keep labels/annotations others added.
 * *changed is false when live already equals desired on everything we own
 * (spec, our label, our prefix/source annotations; the revision annotation
 * alone never triggers a write). Returns NULL on OOM. */
cJSON *traefik_merge_owned(const cJSON *live, const cJSON *desired, bool *changed);

/* Patched mode: on a copy of a live IngressRoute, set the weight of every
 * service named in r->weights, in every route of spec.routes; leave all else
 * untouched. Returns 0 (with *changed), or -1 with err naming a service that
 * appears in no route of the object. */
int traefik_apply_weights(cJSON *obj, const struct model_route *r, bool *changed, char *err,
                          size_t errlen);

#endif
