/* traefikapi.c - what Traefik's API must show for a route, the verdict on
 * one answer, and the GETs that fetch answers; see traefikapi.h. */
#include "sinks/traefikapi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/buf.h"
#include "sinks/kobj.h"
#include "sinks/traefik.h"

#define PROVIDER "kubernetescrd"

static char *dup_printf(const char *fmt, const char *a, const char *b, const char *c) {
    buf_t t = BUF_INIT;
    if (buf_printf(&t, fmt, a, b, c) < 0) {
        buf_free(&t);
        return NULL;
    }
    return buf_steal(&t);
}

void traefikapi_expect_free(struct traefikapi_expect *e) {
    for (size_t i = 0; i < e->n_wants; i++) {
        free(e->wants[i].child);
        free(e->wants[i].service);
    }
    free(e->wants);
    free(e->search);
    free(e->ts);
    free(e->sig);
    memset(e, 0, sizeof *e);
}

static int add_want(struct traefikapi_expect *e, char *child, const char *service, long weight,
                    bool exact) {
    struct traefikapi_want *w = &e->wants[e->n_wants];
    w->child = child;
    w->service = strdup(service);
    w->weight = weight;
    w->exact = exact;
    e->n_wants++;
    return child && w->service ? 0 : -1;
}

int traefikapi_expect_build(const struct model_route *m, struct traefikapi_expect *e) {
    memset(e, 0, sizeof *e);
    size_t n = m->owned ? m->n_services : m->n_weights;
    e->owned = m->owned;
    e->single = (n < 2 && m->owned) || n == 0;
    e->search = dup_printf("%s-%s%s", m->ns, m->name, "");
    e->wants = calloc(n ? n : 1, sizeof *e->wants);
    int rc = e->search && e->wants ? 0 : -1;
    if (rc == 0 && m->owned && traefik_weighted_service_wanted(m))
        rc = (e->ts = strdup(e->search)) ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (m->owned) {
            const struct model_service *s = &m->services[i];
            /* "<ns>-<service>-<port>": Traefik's name of an IngressRoute's Service. */
            rc = add_want(e, dup_printf("%s-%s-%s", s->ns ? s->ns : m->ns, s->name, s->port),
                          s->name, s->weight, true);
        } else {
            /* Patched: the weights key names no port; any port of the service. */
            const struct model_weight *w = &m->weights[i];
            rc = add_want(e, dup_printf("%s-%s-%s", m->ns, w->service, ""), w->service, w->weight,
                          false);
        }
    }
    buf_t sig = BUF_INIT;
    if (rc == 0)
        rc = buf_printf(&sig, "%s|%s|%d%d", e->search, e->ts ? e->ts : "", e->owned, e->single);
    for (size_t i = 0; rc == 0 && i < e->n_wants; i++)
        rc = buf_printf(&sig, "|%s=%ld", e->wants[i].child, e->wants[i].weight);
    if (rc == 0)
        rc = (e->sig = buf_steal(&sig)) ? 0 : -1;
    buf_free(&sig);
    if (rc < 0)
        traefikapi_expect_free(e);
    return rc;
}

int traefikapi_services_path(const struct traefikapi_expect *e, char *out, size_t outlen) {
    /* Names are DNS labels and '-': nothing to escape. The search matches
     * names containing it; 1000 covers any prefix sharing in practice. */
    int n = snprintf(out, outlen, "/api/http/services?search=%s&per_page=1000", e->search);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/* ---- judging one answer ---- */

static bool all_hex(const char *s) {
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* name is "<search>-<infix><hex>" */
static bool named_after(const char *name, const char *search, const char *infix) {
    size_t n = strlen(search), k = strlen(infix);
    return strncmp(name, search, n) == 0 && name[n] == '-' &&
           strncmp(name + n + 1, infix, k) == 0 && all_hex(name + n + 1 + k);
}

static bool want_matches(const struct traefikapi_want *w, const char *child) {
    if (w->exact)
        return strcmp(w->child, child) == 0;
    size_t n = strlen(w->child);
    return strncmp(w->child, child, n) == 0 && child[n] != '\0';
}

/* The name without "@provider", into out. */
static const char *bare_name(const cJSON *svc, char *out, size_t outlen) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(svc, "name");
    if (!cJSON_IsString(n))
        return NULL;
    snprintf(out, outlen, "%s", n->valuestring);
    char *at = strchr(out, '@');
    if (at)
        *at = '\0';
    return out;
}

static long child_weight(const cJSON *c) {
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(c, "weight");
    return cJSON_IsNumber(w) ? (long)w->valuedouble : 1; /* absent: Traefik's default, 1 */
}

/* One weighted service of the route: how many wants it carries, or -1 with
 * why set when it serves other weights. */
static int judge_weighted(const cJSON *children, const struct traefikapi_expect *e, char *why,
                          size_t whylen) {
    int matched = 0;
    for (size_t i = 0; i < e->n_wants; i++) {
        const struct traefikapi_want *w = &e->wants[i];
        const cJSON *c, *found = NULL;
        cJSON_ArrayForEach(c, children) {
            const cJSON *cn = cJSON_GetObjectItemCaseSensitive(c, "name");
            if (cJSON_IsString(cn) && want_matches(w, cn->valuestring)) {
                found = c;
                if (child_weight(c) != w->weight)
                    break; /* patched: any port of it showing another weight is stale */
            }
        }
        if (!found) {
            if (!e->owned)
                continue;
            snprintf(why, whylen, "serves no %s (the route gives it %ld)", w->service, w->weight);
            return -1;
        }
        if (child_weight(found) != w->weight) {
            snprintf(why, whylen, "reports %s=%ld (the route gives it %ld)", w->service,
                     child_weight(found), w->weight);
            return -1;
        }
        matched++;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, children) {
        const cJSON *cn = cJSON_GetObjectItemCaseSensitive(c, "name");
        bool ours = !e->owned;
        for (size_t i = 0; !ours && i < e->n_wants; i++)
            ours = cJSON_IsString(cn) && want_matches(&e->wants[i], cn->valuestring);
        if (!ours) {
            snprintf(why, whylen, "still serves %s", cJSON_IsString(cn) ? cn->valuestring : "?");
            return -1;
        }
    }
    return matched;
}

enum traefikapi_verdict traefikapi_judge(const cJSON *services, const struct traefikapi_expect *e,
                                         const char *ns, const char *ir, char *why, size_t whylen) {
    *why = '\0';
    if (!cJSON_IsArray(services)) {
        snprintf(why, whylen, "answered something other than a list of services");
        return TRAEFIKAPI_BAD;
    }
    bool seen = false;
    const cJSON *svc;
    cJSON_ArrayForEach(svc, services) {
        char name[512];
        const cJSON *prov = cJSON_GetObjectItemCaseSensitive(svc, "provider");
        if (!cJSON_IsString(prov) || strcmp(prov->valuestring, PROVIDER) != 0 ||
            !bare_name(svc, name, sizeof name))
            continue;
        if (e->single) {
            if (named_after(name, e->search, "") || named_after(name, e->search, "mirror-") ||
                (e->ts && strcmp(name, e->ts) == 0))
                return TRAEFIKAPI_LIVE;
            continue;
        }
        if (e->ts ? strcmp(name, e->ts) != 0 : !named_after(name, e->search, ""))
            continue;
        const cJSON *weighted = cJSON_GetObjectItemCaseSensitive(svc, "weighted");
        if (!cJSON_IsObject(weighted))
            continue; /* a rule's route straight to one Service */
        int m =
            judge_weighted(cJSON_GetObjectItemCaseSensitive(weighted, "services"), e, why, whylen);
        if (m < 0)
            return TRAEFIKAPI_STALE;
        seen = seen || m > 0;
    }
    if (seen)
        return TRAEFIKAPI_LIVE;
    snprintf(why, whylen, "has no %sservice for IngressRoute %s/%s", e->single ? "" : "weighted ",
             ns, ir);
    return TRAEFIKAPI_MISSING;
}

/* ---- the client ---- */

struct traefikapi_call {
    traefikapi_cb cb;
    void *user;
    struct http_req *req;   /* urls mode */
    struct kube_call *kube; /* pods mode */
};

static void http_done(struct http_req *req, const struct http_result *res) {
    struct traefikapi_call *call = http_req_user(req);
    cJSON *json = res->status ? cJSON_ParseWithLength(res->body, res->body_len) : NULL;
    char err[256] = "";
    if (!res->status && res->os_errno == ECONNREFUSED)
        snprintf(err, sizeof err, "connection refused"); /* curl says "Couldn't connect" */
    else if (!res->status)
        snprintf(err, sizeof err, "%s", res->error && *res->error ? res->error : "no answer");
    call->cb(call->user, res->status, json, err);
    cJSON_Delete(json);
    free(call);
}

static void kube_done(void *user, const struct kube_response *res) {
    struct traefikapi_call *call = user;
    char err[256] = "";
    if (res->status < 200 || res->status > 299)
        kube_response_describe(res, err, sizeof err);
    call->cb(call->user, res->status, res->json, err);
    free(call);
}

static struct traefikapi_call *kube_get(struct traefikapi_client *c, const char *path,
                                        traefikapi_cb cb, void *user) {
    struct traefikapi_call *call = calloc(1, sizeof *call);
    if (!call)
        return NULL;
    call->cb = cb;
    call->user = user;
    call->kube = kube_get_aside(c->kube, path, kube_done, call);
    if (!call->kube) {
        free(call);
        return NULL;
    }
    return call;
}

struct traefikapi_call *traefikapi_get(struct traefikapi_client *c, const char *instance,
                                       const char *path, traefikapi_cb cb, void *user) {
    buf_t url = BUF_INIT;
    if (c->cfg->pods.namespace) {
        if (!c->kube || buf_printf(&url, "/api/v1/namespaces/%s/pods/%s:%u/proxy%s",
                                   c->cfg->pods.namespace, instance, c->cfg->pods.port, path) < 0) {
            buf_free(&url);
            return NULL;
        }
        struct traefikapi_call *call = kube_get(c, url.data, cb, user);
        buf_free(&url);
        return call;
    }
    size_t n = strlen(instance);
    while (n && instance[n - 1] == '/')
        n--;
    struct traefikapi_call *call = calloc(1, sizeof *call);
    if (!call || !c->http || buf_printf(&url, "%.*s%s", (int)n, instance, path) < 0 ||
        !(call->req = http_req_new(c->http, "GET", url.data))) {
        buf_free(&url);
        free(call);
        return NULL;
    }
    buf_free(&url);
    call->cb = cb;
    call->user = user;
    long total = (long)c->cfg->request_timeout_ms;
    http_req_timeouts(call->req, total, total);
    http_req_set_user(call->req, call);
    if (http_req_header(call->req, "Accept: application/json") < 0 ||
        http_req_start(call->req, http_done) < 0) {
        http_req_free(call->req);
        free(call);
        return NULL;
    }
    return call;
}

struct traefikapi_call *traefikapi_list_pods(struct traefikapi_client *c, traefikapi_cb cb,
                                             void *user) {
    buf_t path = BUF_INIT;
    struct traefikapi_call *call = NULL;
    if (c->kube && c->cfg->pods.namespace &&
        buf_printf(&path, "/api/v1/namespaces/%s/pods?labelSelector=", c->cfg->pods.namespace) ==
            0 &&
        buf_put_urlencoded(&path, c->cfg->pods.selector ? c->cfg->pods.selector : "", false) == 0)
        call = kube_get(c, path.data, cb, user);
    buf_free(&path);
    return call;
}

static bool is(const char *s, const char *want) {
    return s && strcmp(s, want) == 0;
}

size_t traefikapi_serving_pods(const cJSON *list, const char **names, size_t max) {
    size_t n = 0;
    const cJSON *pod;
    cJSON_ArrayForEach(pod, cJSON_GetObjectItemCaseSensitive(list, "items")) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(pod, "metadata");
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(pod, "status");
        const char *name = kobj_str(meta, "name", NULL);
        if (!name || kobj_str(meta, "deletionTimestamp", NULL) ||
            !is(kobj_str(status, "phase", NULL), "Running"))
            continue;
        bool unready = false;
        const cJSON *cond;
        cJSON_ArrayForEach(cond, cJSON_GetObjectItemCaseSensitive(status, "conditions")) {
            if (is(kobj_str(cond, "type", NULL), "Ready") &&
                is(kobj_str(cond, "status", NULL), "False"))
                unready = true;
        }
        if (!unready && n < max)
            names[n++] = name;
    }
    return n;
}

void traefikapi_instance_name(const struct traefikapi_settings *cfg, const char *instance,
                              char *out, size_t outlen) {
    if (cfg->pods.namespace) {
        snprintf(out, outlen, "%s/%s", cfg->pods.namespace, instance);
        return;
    }
    const char *host = strstr(instance, "://");
    host = host ? host + 3 : instance;
    const char *at = strchr(host, '@'), *slash = strchr(host, '/');
    if (at && (!slash || at < slash))
        snprintf(out, outlen, "%.*s%s", (int)(host - instance), instance, at + 1);
    else
        snprintf(out, outlen, "%s", instance);
}

void traefikapi_cancel(struct traefikapi_call *call) {
    if (!call)
        return;
    if (call->req)
        http_req_cancel(call->req);
    if (call->kube)
        kube_call_cancel(call->kube);
    free(call);
}
