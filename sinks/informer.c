/* informer.c - list+watch cache of one resource type; see informer.h. */
#include "sinks/informer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/backoff.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/timer.h"

static void list_start(struct informer *inf);
static void watch_start(struct informer *inf);

/* What the cache keeps of an object: its compact JSON text and its
 * resourceVersion, in one allocation. A parsed cJSON tree takes four to
 * five times the bytes of its text, and at 10,000 routes the cached trees
 * were most of the bridge's memory (bench/RESULTS.md); the reconciler reads
 * an object once per pass, and parsing 1 KB costs microseconds.
 * metadata.managedFields are dropped: they are the server's bookkeeping for
 * server-side apply, often the largest part of an object; a PUT that omits
 * them leaves them as they are (the API server takes them from the stored
 * object). Of them only the name of the spec's last writer is kept (who
 * undid our write, when two writers disagree). */
struct cached {
    char *rv;     /* points into text[], NULL when the object had none */
    char *writer; /* points into text[], NULL when unknown */
    char text[];
};

/* The field manager that last changed the object's spec: of the
 * managedFields entries owning spec fields, the newest (times are RFC 3339
 * in UTC, so they compare as text); on a tie, the one owning spec.routes or
 * spec.weighted (what two writers of an object disagree about). */
static const char *spec_writer(const cJSON *obj) {
    const cJSON *mf = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "managedFields");
    const char *best = NULL, *best_time = "";
    bool best_lists = false;
    const cJSON *e;
    cJSON_ArrayForEach(e, mf) {
        const cJSON *spec = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(e, "fieldsV1"), "f:spec");
        const char *mgr = kobj_str(e, "manager", NULL);
        const char *t = kobj_str(e, "time", NULL);
        if (!spec || !mgr)
            continue;
        bool lists = cJSON_GetObjectItemCaseSensitive(spec, "f:routes") ||
                     cJSON_GetObjectItemCaseSensitive(spec, "f:weighted");
        int cmp = strcmp(t ? t : "", best_time);
        if (!best || cmp > 0 || (cmp == 0 && lists && !best_lists)) {
            best = mgr;
            best_time = t ? t : "";
            best_lists = lists;
        }
    }
    return best;
}

/* From an object the caller lets us change (managedFields are removed). */
static struct cached *cached_take(cJSON *obj) {
    const char *w = spec_writer(obj);
    size_t wlen = w ? strlen(w) : 0;
    char *writer = w ? malloc(wlen + 1) : NULL;
    if (writer)
        memcpy(writer, w, wlen + 1);
    cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "metadata"),
                                            "managedFields");
    char *json = cJSON_PrintUnformatted(obj);
    const char *rv = kobj_str(obj, "metadata", "resourceVersion");
    size_t jlen = json ? strlen(json) : 0, rvlen = rv ? strlen(rv) : 0;
    struct cached *c = json ? malloc(sizeof *c + jlen + 1 + rvlen + 1 + wlen + 1) : NULL;
    if (c) {
        memcpy(c->text, json, jlen + 1);
        c->rv = NULL;
        c->writer = NULL;
        if (rv) {
            c->rv = c->text + jlen + 1;
            memcpy(c->rv, rv, rvlen + 1);
        }
        if (writer) {
            c->writer = c->text + jlen + 1 + rvlen + 1;
            memcpy(c->writer, writer, wlen + 1);
        }
    }
    free(writer);
    cJSON_free(json);
    return c;
}

static struct cached *cached_new(const cJSON *obj) {
    cJSON *copy = cJSON_Duplicate(obj, 1);
    struct cached *c = copy ? cached_take(copy) : NULL;
    cJSON_Delete(copy);
    return c;
}

/* Put c (NULL: its making failed) in the cache under id, replacing what was
 * there; 0, or -1 with nothing changed. */
static int cache_put(struct informer *inf, const char *id, struct cached *c) {
    struct cached *old = NULL;
    if (!c || map_put(&inf->objects, id, c, (void **)&old) < 0) {
        free(c);
        return -1;
    }
    free(old);
    return 0;
}

static int obj_id(const cJSON *obj, char *out, size_t outlen) {
    const char *ns = kobj_str(obj, "metadata", "namespace");
    const char *name = kobj_str(obj, "metadata", "name");
    if (!ns || !name)
        return -1;
    int n = snprintf(out, outlen, "%s/%s", ns, name);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static void report_change(struct informer *inf, const char *id, const cJSON *obj) {
    char ns[64];
    const char *slash = strchr(id, '/');
    size_t n = slash ? (size_t)(slash - id) : 0;
    if (n >= sizeof ns)
        n = sizeof ns - 1;
    memcpy(ns, id, n);
    ns[n] = '\0';
    if (inf->on_change)
        inf->on_change(inf->user, ns, slash ? slash + 1 : id, obj);
}

int informer_init(struct informer *inf, uv_loop_t *loop, struct kube_client *kc, struct logger *lg,
                  const char *group, const char *version, const char *plural,
                  informer_change_cb on_change, informer_synced_cb on_synced, void *user) {
    memset(inf, 0, sizeof *inf);
    inf->loop = loop;
    inf->kc = kc;
    inf->log = lg;
    inf->group = strdup(group);
    inf->version = strdup(version);
    inf->plural = strdup(plural);
    inf->on_change = on_change;
    inf->on_synced = on_synced;
    inf->user = user;
    if (!inf->group || !inf->version || !inf->plural || uv_timer_init(loop, &inf->timer) != 0) {
        free(inf->group);
        free(inf->version);
        free(inf->plural);
        return -1;
    }
    inf->timer.data = inf;
    return 0;
}

static void on_retry_timer(uv_timer_t *t) {
    struct informer *inf = t->data;
    if (inf->stopped)
        return;
    if (inf->rv && !inf->relist)
        watch_start(inf);
    else
        list_start(inf);
}

/* status: the HTTP status of the failed answer, 0 for none. Refused
 * credentials (401/403) back off from seconds, not milliseconds: retrying
 * fast cannot help until a person fixes the token or the RBAC rules, and the
 * kube client has already said so in one line (these go to debug). */
static void retry_later(struct informer *inf, const char *what, long status, const char *why) {
    bool auth = status == 401 || status == 403;
    uint64_t ms =
        auth ? backoff_ms(inf->failures, 5000, 60000) : backoff_ms(inf->failures, 200, 30000);
    if (inf->failures < 32)
        inf->failures++;
    char res[128]; /* "services", or "services in namespace shop" */
    snprintf(res, sizeof res, "%s%s%s", inf->plural, inf->ns ? " in namespace " : "",
             inf->ns ? inf->ns : "");
    snprintf(inf->problem, sizeof inf->problem, "%s %s: %s", what, res, why);
    if (auth)
        log_debug(inf->log, "kubernetes: %s %s failed (%s); retrying in %llu ms", what, res, why,
                  (unsigned long long)ms);
    else
        log_warn(inf->log, "kubernetes: %s %s failed (%s); retrying in %llu ms", what, res, why,
                 (unsigned long long)ms);
    timer_arm(&inf->timer, on_retry_timer, ms, 0);
}

const char *informer_problem(struct informer *inf) {
    if (inf->problem[0] && inf->call && kube_call_open(inf->call))
        inf->problem[0] = '\0'; /* its watch is open again */
    return inf->problem[0] ? inf->problem : NULL;
}

static void set_rv(struct informer *inf, const char *rv) {
    if (!rv)
        return;
    char *copy = strdup(rv);
    if (!copy)
        return; /* keep the old one: at worst we re-see events */
    free(inf->rv);
    inf->rv = copy;
}

/* Forget a list in progress (its pages so far stay stored: they are newer
 * than what they replaced). */
static void list_reset(struct informer *inf) {
    free(inf->cont);
    inf->cont = NULL;
    map_free(&inf->seen);
}

static void on_list(void *user, const struct kube_response *res) {
    struct informer *inf = user;
    inf->call = NULL;
    if (res->status == 410 && inf->cont) {
        /* The continue token outlived the snapshot it pointed into (etcd
         * compacted it): the list starts again from the first page. */
        log_info(inf->log, "kubernetes: list of %s expired between pages; listing again",
                 inf->plural);
        list_reset(inf);
        list_start(inf);
        return;
    }
    if (res->status != 200 || !res->json) {
        char why[400];
        kube_response_describe(res, why, sizeof why);
        list_reset(inf);
        retry_later(inf, "list", res->status, why);
        return;
    }
    /* The answer is ours until we return: items are stored from it without
     * a copy (for 10,000 objects, copying was a good part of a resync).
     * What changed (by resourceVersion) is reported with the parsed item. */
    cJSON *items = cJSON_GetObjectItemCaseSensitive(res->json, "items");
    cJSON *it;
    cJSON_ArrayForEach(it, items) {
        char id[320];
        if (obj_id(it, id, sizeof id) < 0)
            continue;
        const struct cached *was = map_get(&inf->objects, id);
        const char *rv_new = kobj_str(it, "metadata", "resourceVersion");
        bool changed = !was || !rv_new || !was->rv || strcmp(rv_new, was->rv) != 0;
        if (map_put(&inf->seen, id, inf, NULL) < 0)
            goto oom;
        if (!changed)
            continue;
        if (cache_put(inf, id, cached_take(it)) < 0)
            goto oom;
        report_change(inf, id, it);
        if (inf->stopped)
            return;
    }
    const char *cont = kobj_str(res->json, "metadata", "continue");
    if (cont && *cont) {
        char *copy = strdup(cont);
        if (!copy) {
            list_reset(inf);
            retry_later(inf, "list", 0, "out of memory");
            return;
        }
        free(inf->cont);
        inf->cont = copy;
        list_start(inf);
        return;
    }
    /* The last page: what was not listed is gone. */
    struct map_iter mi;
    map_iter_init(&mi, &inf->objects);
    for (struct map_entry *e; (e = map_iter_next(&mi));) {
        if (map_has(&inf->seen, e->key))
            continue;
        char id[320];
        snprintf(id, sizeof id, "%s", e->key);
        free(map_del(&inf->objects, e->key)); /* allowed: the entry just returned */
        report_change(inf, id, NULL);
        if (inf->stopped)
            return;
    }
    list_reset(inf);
    set_rv(inf, kobj_str(res->json, "metadata", "resourceVersion"));
    inf->relist = false;
    inf->failures = 0;
    inf->problem[0] = '\0';
    inf->lists++;
    bool first = !inf->synced;
    inf->synced = true;
    log_debug(inf->log, "kubernetes: listed %zu %s at resourceVersion %s", inf->objects.count,
              inf->plural, inf->rv ? inf->rv : "?");
    if (first && inf->on_synced)
        inf->on_synced(inf->user);
    if (!inf->stopped && !inf->call)
        watch_start(inf);
    return;
oom:
    list_reset(inf);
    retry_later(inf, "list", 0, "out of memory");
}

/* "&labelSelector=..." when the informer has one. */
static int put_selector(const struct informer *inf, buf_t *q) {
    if (!inf->selector)
        return 0;
    return buf_puts(q, "&labelSelector=") < 0 || buf_put_urlencoded(q, inf->selector, false) < 0
               ? -1
               : 0;
}

static void list_start(struct informer *inf) {
    char path[512];
    if (kube_path(path, sizeof path, inf->group, inf->version, inf->ns, inf->plural, NULL) < 0)
        return;
    /* The continue token is opaque base64: percent-encoded, any length. */
    buf_t q = BUF_INIT;
    if (buf_printf(&q, "%s?limit=%d", path, INFORMER_PAGE) < 0 || put_selector(inf, &q) < 0 ||
        (inf->cont &&
         (buf_puts(&q, "&continue=") < 0 || buf_put_urlencoded(&q, inf->cont, false) < 0))) {
        buf_free(&q);
        list_reset(inf);
        retry_later(inf, "list", 0, "out of memory");
        return;
    }
    inf->call = kube_request(inf->kc, "GET", q.data, NULL, NULL, 0, on_list, inf);
    buf_free(&q);
    if (!inf->call)
        retry_later(inf, "list", 0, "could not start request");
}

static void on_watch_event(void *user, const char *type, const cJSON *obj) {
    struct informer *inf = user;
    if (strcmp(type, "ERROR") == 0) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(obj, "code");
        const char *msg = kobj_str(obj, "message", NULL);
        if (cJSON_IsNumber(code) && code->valuedouble == 410) {
            log_info(inf->log, "kubernetes: watch of %s expired (%s); re-listing", inf->plural,
                     msg ? msg : "410");
        } else {
            log_warn(inf->log, "kubernetes: watch of %s: error event: %s", inf->plural,
                     msg ? msg : "?");
        }
        inf->relist = true;
        return;
    }
    const char *rv = kobj_str(obj, "metadata", "resourceVersion");
    if (strcmp(type, "BOOKMARK") == 0) {
        set_rv(inf, rv);
        return;
    }
    char id[320];
    if (obj_id(obj, id, sizeof id) < 0)
        return;
    set_rv(inf, rv);
    if (strcmp(type, "DELETED") == 0) {
        struct cached *was = map_del(&inf->objects, id);
        if (was) {
            free(was);
            report_change(inf, id, NULL);
        }
        return;
    }
    const struct cached *cur = map_get(&inf->objects, id);
    const char *cur_rv = cur ? cur->rv : NULL;
    if (cur_rv && rv && (strcmp(cur_rv, rv) == 0 || kobj_rv_older(rv, cur_rv)))
        return; /* our own write, already stored from its answer */
    if (cache_put(inf, id, cached_new(obj)) == 0)
        report_change(inf, id, obj);
}

static void on_watch_end(void *user, const struct kube_response *res) {
    struct informer *inf = user;
    inf->call = NULL;
    if (inf->stopped)
        return;
    if (res->status == 410 || inf->relist) {
        inf->relist = true;
        list_start(inf);
        return;
    }
    if (res->status == 200) {
        inf->failures = 0;
        watch_start(inf); /* a clean end (timeoutSeconds): resume */
        return;
    }
    char why[400];
    kube_response_describe(res, why, sizeof why);
    retry_later(inf, "watch", res->status, why);
}

static void watch_start(struct informer *inf) {
    char base[512];
    if (kube_path(base, sizeof base, inf->group, inf->version, inf->ns, inf->plural, NULL) < 0)
        return;
    /* A server-side timeout with jitter keeps watches fresh without all
     * bridges reconnecting at once. */
    unsigned timeout = 240 + (unsigned)(rand() % 120);
    buf_t q = BUF_INIT;
    if (buf_printf(&q, "%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=%u&resourceVersion=%s",
                   base, timeout, inf->rv ? inf->rv : "") < 0 ||
        put_selector(inf, &q) < 0) {
        buf_free(&q);
        retry_later(inf, "watch", 0, "out of memory");
        return;
    }
    inf->watches++;
    inf->call = kube_watch(inf->kc, q.data, on_watch_event, on_watch_end, inf);
    buf_free(&q);
    if (!inf->call)
        retry_later(inf, "watch", 0, "could not start request");
}

int informer_set_scope(struct informer *inf, const char *ns, const char *label_selector) {
    char *n = ns ? strdup(ns) : NULL, *sel = label_selector ? strdup(label_selector) : NULL;
    if ((ns && !n) || (label_selector && !sel)) {
        free(n);
        free(sel);
        return -1;
    }
    free(inf->ns);
    free(inf->selector);
    inf->ns = n;
    inf->selector = sel;
    return 0;
}

int informer_start(struct informer *inf) {
    inf->stopped = false;
    list_start(inf);
    return 0;
}

void informer_resync(struct informer *inf) {
    if (inf->stopped)
        return;
    kube_call_cancel(inf->call);
    inf->call = NULL;
    uv_timer_stop(&inf->timer);
    list_reset(inf);
    list_start(inf);
}

void informer_stop(struct informer *inf) {
    inf->stopped = true;
    kube_call_cancel(inf->call);
    inf->call = NULL;
    uv_timer_stop(&inf->timer);
}

static void free_members(struct informer *inf) {
    struct map_iter mi;
    map_iter_init(&mi, &inf->objects);
    for (struct map_entry *e; (e = map_iter_next(&mi));)
        free(e->value);
    map_free(&inf->objects);
    list_reset(inf);
    for (size_t i = 0; i < INFORMER_PARSED; i++) {
        cJSON_Delete(inf->parsed[i]);
        inf->parsed[i] = NULL;
    }
    free(inf->rv);
    free(inf->ns);
    free(inf->selector);
    free(inf->group);
    free(inf->version);
    free(inf->plural);
    inf->rv = inf->ns = inf->selector = inf->group = inf->version = inf->plural = NULL;
}

static void on_timer_closed(uv_handle_t *h) {
    struct informer *inf = h->data;
    free_members(inf);
    if (inf->on_closed)
        inf->on_closed(inf); /* last: it may free inf */
}

void informer_close(struct informer *inf, informer_close_cb cb) {
    if (uv_is_closing((uv_handle_t *)&inf->timer))
        return;
    informer_stop(inf);
    inf->on_closed = cb;
    uv_close((uv_handle_t *)&inf->timer, on_timer_closed);
}

const cJSON *informer_get(struct informer *inf, const char *ns, const char *name) {
    char id[320];
    snprintf(id, sizeof id, "%s/%s", ns, name);
    const struct cached *c = map_get(&inf->objects, id);
    if (!c)
        return NULL;
    cJSON *obj = cJSON_Parse(c->text);
    if (!obj)
        return NULL; /* out of memory: as if not cached; a write would 409 */
    /* The informer owns what it hands out: the oldest of a few is freed. */
    size_t slot = inf->parsed_next++ % INFORMER_PARSED;
    cJSON_Delete(inf->parsed[slot]);
    inf->parsed[slot] = obj;
    return obj;
}

const char *informer_rv(const struct informer *inf, const char *ns, const char *name) {
    char id[320];
    snprintf(id, sizeof id, "%s/%s", ns, name);
    const struct cached *c = map_get(&inf->objects, id);
    return c ? c->rv : NULL;
}

const char *informer_writer(const struct informer *inf, const char *ns, const char *name) {
    char id[320];
    snprintf(id, sizeof id, "%s/%s", ns, name);
    const struct cached *c = map_get(&inf->objects, id);
    return c ? c->writer : NULL;
}

void informer_store(struct informer *inf, cJSON *obj) {
    char id[320];
    if (obj_id(obj, id, sizeof id) < 0)
        return;
    const struct cached *cur = map_get(&inf->objects, id);
    if (cur && kobj_rv_older(kobj_str(obj, "metadata", "resourceVersion"), cur->rv))
        return;
    (void)cache_put(inf, id, cached_take(obj)); /* no memory: the next write 409s and re-reads */
}

void informer_forget(struct informer *inf, const char *ns, const char *name) {
    char id[320];
    snprintf(id, sizeof id, "%s/%s", ns, name);
    free(map_del(&inf->objects, id));
}
