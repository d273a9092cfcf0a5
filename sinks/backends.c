/* backends.c - Services and EndpointSlices in list+watch caches; see
 * backends.h.
 *
 * One scope per watched namespace (one for all namespaces with
 * all_namespaces): two informers, and what is kept of their objects to
 * answer checks and to notice the changes that matter:
 *  - per Service ("ns/name"): a hash of what a check reads of it (type,
 *    externalName, port numbers and names) and the EndpointSlices labelled
 *    with its name;
 *  - per EndpointSlice ("ns/name"): its Service, the names of its ports that
 *    carry a number, and how many of its endpoints are ready.
 * A check parses the cached Service once and adds up its slices' counts.
 * A removed scope is unhooked at once and freed when both informers'
 * timers have closed, so a callback in progress never sees it freed. */
#include "sinks/backends.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/buf.h"

#define SERVICE_NAME_LABEL "kubernetes.io/service-name"

/* What a check needs of one EndpointSlice. One allocation. */
struct slice_sum {
    const char *svc_key; /* "ns/<kubernetes.io/service-name>" */
    const char *ports;   /* "\n" then each numbered port's name and "\n": "\nhttp\n\n" */
    unsigned ready;      /* endpoints with an address and conditions.ready not false */
    unsigned total;      /* endpoints with an address */
    char text[];
};

/* One Service name: the Service (if any) and the slices that name it. */
struct svc_ent {
    uint64_t spec; /* hash of what a check reads; 0: no Service */
    struct slice_sum **slices;
    size_t n, cap;
};

struct backends_scope {
    struct backends *b;
    char *ns; /* NULL: all namespaces */
    struct informer svcs, slices;
    bool have_svcs, have_slices; /* informer_init succeeded */
    struct map services;         /* "ns/name" -> struct svc_ent */
    struct map sums;             /* "ns/name" of slices -> struct slice_sum */
    unsigned open;               /* informer timers not closed yet */
    bool synced, dead;
    struct backends_scope *next_dying;
};

static uint64_t fnv(uint64_t h, const char *s) {
    for (; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull; /* a separator: "ab","c" != "a","bc" */
}

static const cJSON *field(const cJSON *o, const char *name) {
    return cJSON_GetObjectItemCaseSensitive(o, name);
}

static const char *port_name(const cJSON *p) {
    const cJSON *n = field(p, "name");
    return cJSON_IsString(n) ? n->valuestring : "";
}

static long port_number(const cJSON *p) {
    const cJSON *n = field(p, "port");
    return cJSON_IsNumber(n) && n->valuedouble >= 1 && n->valuedouble <= 65535
               ? (long)n->valuedouble
               : 0;
}

static uint64_t spec_hash(const cJSON *svc) {
    const cJSON *spec = field(svc, "spec");
    uint64_t h = fnv(1469598103934665603ull, kobj_str(spec, "type", NULL));
    h = fnv(h, kobj_str(spec, "externalName", NULL));
    const cJSON *p;
    cJSON_ArrayForEach(p, field(spec, "ports")) {
        char num[16];
        snprintf(num, sizeof num, "%ld", port_number(p));
        h = fnv(fnv(h, num), port_name(p));
    }
    return h | 1; /* never 0, which means "no Service" */
}

/* The summary of an EndpointSlice, or NULL: *no_label when it names no
 * Service, otherwise out of memory. */
static struct slice_sum *sum_new(const char *ns, const cJSON *obj, bool *no_label) {
    const cJSON *labels = field(field(obj, "metadata"), "labels");
    const char *svc = kobj_str(labels, SERVICE_NAME_LABEL, NULL);
    *no_label = !svc;
    if (!svc)
        return NULL;
    buf_t t = BUF_INIT;
    int rc = buf_printf(&t, "%s/%s", ns, svc) | buf_putc(&t, '\0');
    size_t ports_at = t.len;
    rc |= buf_putc(&t, '\n');
    const cJSON *p;
    cJSON_ArrayForEach(p, field(obj, "ports")) {
        if (port_number(p))
            rc |= buf_printf(&t, "%s\n", port_name(p));
    }
    unsigned ready = 0, total = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, field(obj, "endpoints")) {
        if (cJSON_GetArraySize(field(e, "addresses")) < 1)
            continue;
        total++;
        /* "A nil value indicates an unknown state ... interpret this unknown
         * state as ready" (EndpointConditions). */
        if (!cJSON_IsFalse(field(field(e, "conditions"), "ready")))
            ready++;
    }
    struct slice_sum *s = rc == 0 ? malloc(sizeof *s + t.len + 1) : NULL;
    if (s) {
        memcpy(s->text, t.data, t.len + 1);
        s->svc_key = s->text;
        s->ports = s->text + ports_at;
        s->ready = ready;
        s->total = total;
    }
    buf_free(&t);
    return s;
}

static struct svc_ent *ent_get(struct backends_scope *s, const char *key, bool create) {
    struct svc_ent *e = map_get(&s->services, key);
    if (e || !create)
        return e;
    e = calloc(1, sizeof *e);
    if (e && map_put(&s->services, key, e, NULL) < 0) {
        free(e);
        e = NULL;
    }
    return e;
}

static void ent_drop_if_empty(struct backends_scope *s, const char *key, struct svc_ent *e) {
    if (e && !e->spec && !e->n) {
        map_del(&s->services, key);
        free(e->slices);
        free(e);
    }
}

static int ent_attach(struct svc_ent *e, struct slice_sum *sum) {
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 2;
        struct slice_sum **v = realloc(e->slices, cap * sizeof *v);
        if (!v)
            return -1;
        e->slices = v;
        e->cap = cap;
    }
    e->slices[e->n++] = sum;
    return 0;
}

static void ent_detach(struct svc_ent *e, const struct slice_sum *sum) {
    for (size_t i = 0; e && i < e->n; i++) {
        if (e->slices[i] == sum) {
            e->slices[i] = e->slices[--e->n];
            return;
        }
    }
}

static void notify(struct backends_scope *s, const char *ns, const char *svc) {
    struct backends *b = s->b;
    if (s->synced && !s->dead && !b->stopped && b->on_change)
        b->on_change(b->user, ns, svc);
}

/* "ns/name" -> name */
static const char *key_name(const char *key) {
    const char *slash = strchr(key, '/');
    return slash ? slash + 1 : key;
}

static void on_service(void *user, const char *ns, const char *name, const cJSON *obj) {
    struct backends_scope *s = user;
    char key[320];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    struct svc_ent *e = ent_get(s, key, obj != NULL);
    uint64_t spec = obj ? spec_hash(obj) : 0;
    if (obj && !e) {
        log_error(s->b->log, "backends: out of memory caching Service %s", key);
        return;
    }
    if (!e || e->spec == spec)
        return;
    e->spec = spec;
    ent_drop_if_empty(s, key, e);
    notify(s, ns, name);
}

static void on_slice(void *user, const char *ns, const char *name, const cJSON *obj) {
    struct backends_scope *s = user;
    char key[320];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    bool no_label = true;
    struct slice_sum *old = map_get(&s->sums, key);
    struct slice_sum *new = obj ? sum_new(ns, obj, &no_label) : NULL;
    if (obj && !new && !no_label)
        log_error(s->b->log, "backends: out of memory caching EndpointSlice %s", key);
    if (old) {
        struct svc_ent *e = map_get(&s->services, old->svc_key);
        ent_detach(e, old);
        map_del(&s->sums, key);
        ent_drop_if_empty(s, old->svc_key, e);
    }
    if (new) {
        struct svc_ent *e = ent_get(s, new->svc_key, true);
        if (!e || ent_attach(e, new) < 0 || map_put(&s->sums, key, new, NULL) < 0) {
            log_error(s->b->log, "backends: out of memory caching EndpointSlice %s", key);
            ent_detach(e, new);
            ent_drop_if_empty(s, new->svc_key, e);
            free(new);
            new = NULL;
        }
    }
    /* A slice counts in a check through its ready endpoints only: what it
     * adds is its numbered ports when some endpoint is ready, else nothing. */
    const char *was = old && old->ready ? old->ports : NULL;
    const char *now = new &&new->ready ? new->ports : NULL;
    if (old && new &&strcmp(old->svc_key, new->svc_key) == 0) {
        if (!was != !now || (was && strcmp(was, now) != 0)) {
            log_debug(s->b->log, "backends: %s: EndpointSlice %s now has %u ready endpoints",
                      new->svc_key, name, new->ready);
            notify(s, ns, key_name(new->svc_key));
        }
    } else {
        if (was)
            notify(s, ns, key_name(old->svc_key));
        if (now)
            notify(s, ns, key_name(new->svc_key));
    }
    free(old);
}

static void scope_kill(struct backends_scope *s);

/* The cluster-wide scope of backends_watch_all has listed: it answers from
 * now on, and the per-namespace scopes go. */
static void switch_to_all(struct backends *b) {
    b->all_namespaces = true;
    struct map_iter mi;
    map_iter_init(&mi, &b->scopes);
    for (struct map_entry *e; (e = map_iter_next(&mi));) {
        if (!e->key[0])
            continue;
        struct backends_scope *s = map_del(&b->scopes, e->key); /* the entry just returned */
        scope_kill(s);
    }
}

static void on_part_synced(void *user) {
    struct backends_scope *s = user;
    if (s->synced || !s->svcs.synced || !s->slices.synced)
        return;
    s->synced = true;
    log_info(s->b->log, "backends: %s%s listed: %zu Services, %zu EndpointSlices",
             s->ns ? "namespace " : "all namespaces", s->ns ? s->ns : "", s->svcs.objects.count,
             s->slices.objects.count);
    if (!s->ns && !s->b->all_namespaces)
        switch_to_all(s->b);
    notify(s, s->ns, NULL);
}

static void scope_free(struct backends_scope *s) {
    struct map_iter mi;
    map_iter_init(&mi, &s->services);
    for (struct map_entry *e; (e = map_iter_next(&mi));) {
        struct svc_ent *ent = e->value;
        free(ent->slices);
        free(ent);
    }
    map_free(&s->services);
    map_iter_init(&mi, &s->sums);
    for (struct map_entry *e; (e = map_iter_next(&mi));)
        free(e->value);
    map_free(&s->sums);
    free(s->ns);
    free(s);
}

static void finish_close(struct backends *b) {
    struct map_iter mi;
    map_iter_init(&mi, &b->scopes);
    for (struct map_entry *e; (e = map_iter_next(&mi));)
        scope_free(e->value);
    map_free(&b->scopes);
    b->closed = true;
    if (b->on_closed)
        b->on_closed(b); /* last: it may free b */
}

/* An informer has closed and freed its cache. */
static void on_informer_closed(struct informer *inf) {
    struct backends_scope *s = inf->user;
    struct backends *b = s->b;
    s->open--;
    b->open--;
    if (s->dead && s->open == 0) {
        for (struct backends_scope **p = &b->dying; *p; p = &(*p)->next_dying) {
            if (*p == s) {
                *p = s->next_dying;
                break;
            }
        }
        scope_free(s);
    }
    if (b->closing && b->open == 0)
        finish_close(b);
}

static void scope_stop(struct backends_scope *s) {
    if (s->have_svcs)
        informer_stop(&s->svcs);
    if (s->have_slices)
        informer_stop(&s->slices);
}

static void scope_close(struct backends_scope *s) {
    if (s->have_svcs)
        informer_close(&s->svcs, on_informer_closed);
    if (s->have_slices)
        informer_close(&s->slices, on_informer_closed);
}

/* Unhook s (already out of b->scopes) and free it once its informers have
 * closed. */
static void scope_kill(struct backends_scope *s) {
    struct backends *b = s->b;
    s->dead = true;
    s->next_dying = b->dying;
    b->dying = s;
    scope_close(s);
    if (s->open == 0) { /* no informer was ever made */
        b->dying = s->next_dying;
        scope_free(s);
    }
}

static int informer_open(struct backends_scope *s, struct informer *inf, const char *group,
                         const char *plural, informer_change_cb cb, const char *selector) {
    struct backends *b = s->b;
    if (informer_init(inf, b->loop, b->kc, b->log, group, "v1", plural, cb, on_part_synced, s) < 0)
        return -1;
    s->open++;
    b->open++;
    return informer_set_scope(inf, s->ns, selector);
}

static struct backends_scope *scope_new(struct backends *b, const char *ns) {
    struct backends_scope *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->b = b;
    if (ns && !(s->ns = strdup(ns))) {
        free(s);
        return NULL;
    }
    int rc = informer_open(s, &s->svcs, "", "services", on_service, NULL);
    s->have_svcs = s->open > 0;
    if (rc == 0) {
        rc = informer_open(s, &s->slices, "discovery.k8s.io", "endpointslices", on_slice,
                           SERVICE_NAME_LABEL);
        s->have_slices = s->open > 1;
    }
    if (rc < 0) {
        scope_kill(s);
        return NULL;
    }
    return s;
}

static int scope_start(struct backends_scope *s) {
    return informer_start(&s->svcs) | informer_start(&s->slices);
}

int backends_watch_all(struct backends *b) {
    if (b->stopped)
        return -1;
    if (map_has(&b->scopes, ""))
        return 0; /* cluster-wide already, or on the way */
    struct backends_scope *s = scope_new(b, NULL);
    if (!s || map_put(&b->scopes, "", s, NULL) < 0) {
        if (s)
            scope_kill(s);
        return -1;
    }
    log_info(b->log,
             "backends: %zu namespaces watched: listing Services and EndpointSlices in all "
             "namespaces instead",
             b->scopes.count - 1);
    if (b->started && scope_start(s) < 0)
        return -1;
    return 0;
}

int backends_init(struct backends *b, uv_loop_t *loop, struct kube_client *kc, struct logger *lg,
                  bool all_namespaces, backends_change_cb on_change, void *user) {
    memset(b, 0, sizeof *b);
    b->loop = loop;
    b->kc = kc;
    b->log = lg;
    b->all_namespaces = all_namespaces;
    b->on_change = on_change;
    b->user = user;
    if (!all_namespaces)
        return 0;
    struct backends_scope *s = scope_new(b, NULL);
    if (s && map_put(&b->scopes, "", s, NULL) == 0)
        return 0;
    if (s)
        scope_kill(s);
    log_error(lg, "backends: out of memory");
    b->stopped = true;
    return -1;
}

int backends_add_namespace(struct backends *b, const char *ns) {
    if (b->stopped || !ns || !*ns)
        return -1;
    if (b->all_namespaces || map_has(&b->scopes, ns))
        return 0;
    struct backends_scope *s = scope_new(b, ns);
    if (!s || map_put(&b->scopes, ns, s, NULL) < 0) {
        if (s)
            scope_kill(s);
        log_error(b->log, "backends: out of memory watching namespace %s", ns);
        return -1;
    }
    log_debug(b->log, "backends: watching Services and EndpointSlices in namespace %s", ns);
    if (b->started && scope_start(s) < 0)
        return -1;
    return 0;
}

void backends_remove_namespace(struct backends *b, const char *ns) {
    if (b->all_namespaces || b->closing || !ns)
        return;
    struct backends_scope *s = map_del(&b->scopes, ns);
    if (!s)
        return;
    log_debug(b->log, "backends: no longer watching namespace %s", ns);
    scope_kill(s);
}

bool backends_watching(const struct backends *b, const char *ns) {
    return !b->closing && (b->all_namespaces || (ns && map_has(&b->scopes, ns)));
}

const char *backends_problem(struct backends *b, const char *ns) {
    struct backends_scope *s = b->closing ? NULL : map_get(&b->scopes, b->all_namespaces ? "" : ns);
    if (!s || s->synced)
        return NULL;
    const char *why = informer_problem(&s->svcs);
    return why ? why : informer_problem(&s->slices);
}

void backends_set_traefikservices(struct backends *b, struct informer *inf) {
    b->traefikservices = inf;
}

int backends_start(struct backends *b) {
    if (b->stopped || b->started)
        return -1;
    b->started = true;
    int rc = 0;
    struct map_iter mi;
    map_iter_init(&mi, &b->scopes);
    for (struct map_entry *e; (e = map_iter_next(&mi));)
        rc |= scope_start(e->value);
    return rc < 0 ? -1 : 0;
}

void backends_stop(struct backends *b) {
    if (b->stopped)
        return;
    b->stopped = true;
    struct map_iter mi;
    map_iter_init(&mi, &b->scopes);
    for (struct map_entry *e; (e = map_iter_next(&mi));)
        scope_stop(e->value);
}

void backends_close(struct backends *b, backends_close_cb cb) {
    if (b->closing)
        return;
    backends_stop(b);
    b->closing = true;
    b->on_closed = cb;
    struct map_iter mi;
    map_iter_init(&mi, &b->scopes);
    for (struct map_entry *e; (e = map_iter_next(&mi));)
        scope_close(e->value);
    if (b->open == 0)
        finish_close(b);
}

bool backends_closed(const struct backends *b) {
    return b->closed;
}

bool backend_result_ok(enum backend_result r) {
    return r == BACKEND_OK || r == BACKEND_OK_NO_ENDPOINTS;
}

const char *backend_result_name(enum backend_result r) {
    switch (r) {
    case BACKEND_OK: return "ok";
    case BACKEND_OK_NO_ENDPOINTS: return "ok-no-endpoints";
    case BACKEND_NOT_SYNCED: return "not-synced";
    case BACKEND_MISSING: return "missing";
    case BACKEND_NO_PORT: return "no-port";
    case BACKEND_NOT_READY: return "not-ready";
    }
    return "?";
}

static enum backend_result say(enum backend_result r, char *msg, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum backend_result say(enum backend_result r, char *msg, size_t len, const char *fmt, ...) {
    if (msg && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, len, fmt, ap);
        va_end(ap);
    }
    return r;
}

static enum backend_result check_traefikservice(struct backends *b, const char *ns,
                                                const char *name, char *msg, size_t len) {
    struct informer *inf = b->traefikservices;
    char key[320];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    if (!inf)
        return say(BACKEND_OK_NO_ENDPOINTS, msg, len, "TraefikService %s: not checked", name);
    if (!inf->synced)
        return say(BACKEND_NOT_SYNCED, msg, len, "TraefikServices not listed yet");
    if (!map_has(&inf->objects, key))
        return say(BACKEND_MISSING, msg, len, "TraefikService %s not found in namespace %s", name,
                   ns);
    return say(BACKEND_OK_NO_ENDPOINTS, msg, len, "TraefikService %s exists", name);
}

/* "80/http, 443/https" (or "no ports") into out. */
static void list_ports(const cJSON *ports, char *out, size_t len) {
    size_t n = 0;
    out[0] = '\0';
    const cJSON *p;
    cJSON_ArrayForEach(p, ports) {
        const char *pn = port_name(p);
        int w = snprintf(out + n, len - n, "%s%ld%s%s", n ? ", " : "", port_number(p),
                         *pn ? "/" : "", pn);
        if (w < 0 || (size_t)w >= len - n)
            break;
        n += (size_t)w;
    }
    if (!n)
        snprintf(out, len, "no ports");
}

enum backend_result backends_check(struct backends *b, const char *ns, const char *name,
                                   const char *port, enum backend_kind kind, bool require_ready,
                                   char *msg, size_t len) {
    if (kind == BACKEND_TRAEFIKSERVICE)
        return check_traefikservice(b, ns, name, msg, len);
    struct backends_scope *s = b->closing ? NULL : map_get(&b->scopes, b->all_namespaces ? "" : ns);
    if (!s)
        return say(BACKEND_NOT_SYNCED, msg, len, "namespace %s is not watched", ns);
    if (!s->synced) {
        const char *why = backends_problem(b, ns);
        return say(BACKEND_NOT_SYNCED, msg, len, "Services of namespace %s not listed yet%s%s%s",
                   ns, why ? " (" : "", why ? why : "", why ? ")" : "");
    }
    const cJSON *svc = informer_get(&s->svcs, ns, name);
    if (!svc) {
        char key[320];
        snprintf(key, sizeof key, "%s/%s", ns, name);
        if (map_has(&s->svcs.objects, key))
            return say(BACKEND_NOT_SYNCED, msg, len, "%s: out of memory", name);
        return say(BACKEND_MISSING, msg, len, "Service %s not found in namespace %s", name, ns);
    }
    const cJSON *spec = field(svc, "spec");
    const cJSON *ports = field(spec, "ports");
    char *end = NULL;
    long num = port && *port ? strtol(port, &end, 10) : 0;
    bool is_num = end && !*end && num > 0;
    const cJSON *p, *match = NULL;
    cJSON_ArrayForEach(p, ports) {
        if (is_num ? port_number(p) == num : port && strcmp(port_name(p), port) == 0) {
            match = p;
            break;
        }
    }
    const char *type = kobj_str(spec, "type", NULL);
    if (type && strcmp(type, "ExternalName") == 0 && (match || is_num)) {
        const char *ext = kobj_str(spec, "externalName", NULL);
        return say(BACKEND_OK_NO_ENDPOINTS, msg, len, "%s is an ExternalName Service (%s)", name,
                   ext ? ext : "no externalName");
    }
    if (!match) {
        char have[200];
        list_ports(ports, have, sizeof have);
        return say(BACKEND_NO_PORT, msg, len, "%s does not expose port %s (it has %s)", name,
                   port ? port : "?", have);
    }
    if (!require_ready)
        return say(BACKEND_OK, msg, len, "%s exposes port %s", name, port);
    /* The slices' ports carry the Service port's name ("" when unnamed). */
    char want[80];
    snprintf(want, sizeof want, "\n%s\n", port_name(match));
    char key[320];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    const struct svc_ent *e = map_get(&s->services, key);
    unsigned ready = 0, total = 0;
    for (size_t i = 0; e && i < e->n; i++) {
        if (strstr(e->slices[i]->ports, want)) {
            ready += e->slices[i]->ready;
            total += e->slices[i]->total;
        }
    }
    if (ready)
        return say(BACKEND_OK, msg, len, "%s has %u ready endpoint%s on port %s", name, ready,
                   ready == 1 ? "" : "s", port);
    if (total)
        return say(BACKEND_NOT_READY, msg, len, "%s has no ready endpoints (%u not ready)", name,
                   total);
    return say(BACKEND_NOT_READY, msg, len, "%s has no ready endpoints", name);
}
