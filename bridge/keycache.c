/* keycache.c - source keys grouped into route folders; see keycache.h. */
#include "bridge/keycache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_ID_MAX (MODEL_NS_MAX + 1 + MODEL_NAME_MAX + 1)

void keycache_route_id(char *out, size_t outlen, const char *ns, const char *name) {
    snprintf(out, outlen, "%s/%s", ns, name);
}

int keycache_init(struct keycache *kc, const char *prefix, struct logger *lg) {
    memset(kc, 0, sizeof *kc);
    kc->prefix = strdup(prefix);
    kc->log = lg;
    return kc->prefix ? 0 : -1;
}

static void route_free(struct kc_route *r) {
    if (!r)
        return;
    for (int i = 0; i < KC_NLEAVES; i++)
        free(r->leaf[i].data);
    free(r);
}

static void routes_free(struct map *m) {
    struct map_iter it;
    map_iter_init(&it, m);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        route_free(e->value);
    map_free(m);
}

void keycache_free(struct keycache *kc) {
    routes_free(&kc->routes);
    free(kc->confirm.data);
    kc->confirm.data = NULL;
    map_free(&kc->warned);
    free(kc->prefix);
    kc->prefix = NULL;
}

/* Which route and leaf a key is; 1 = ignore silently (status), -1 = stray. */
static int classify(struct keycache *kc, const char *key, char *ns, char *name, int *leaf) {
    enum model_leaf l;
    char err[256];
    if (model_parse_key(kc->prefix, key, ns, name, &l, err, sizeof err) < 0) {
        if (!map_has(&kc->warned, key)) {
            log_warn(kc->log, "ignoring key %s: %s", key, err);
            (void)map_put(&kc->warned, key, NULL, NULL); /* best effort */
        }
        return -1;
    }
    switch (l) {
    case LEAF_ROUTE: *leaf = KC_ROUTE; return 0;
    case LEAF_WEIGHTS: *leaf = KC_WEIGHTS; return 0;
    case LEAF_HEADERS: *leaf = KC_HEADERS; return 0;
    case LEAF_STATUS: return 1;
    }
    return 1;
}

static bool is_confirm(const struct keycache *kc, const char *key) {
    size_t n = strlen(kc->prefix);
    return strncmp(key, kc->prefix, n) == 0 && strcmp(key + n, KC_CONFIRM_KEY) == 0;
}

static struct kc_route *route_get(struct map *m, const char *ns, const char *name, bool create) {
    char id[ROUTE_ID_MAX];
    keycache_route_id(id, sizeof id, ns, name);
    struct kc_route *r = map_get(m, id);
    if (r || !create)
        return r;
    size_t nslen = strlen(ns), namelen = strlen(name);
    r = calloc(1, sizeof *r + nslen + 1 + namelen + 1);
    if (!r)
        return NULL;
    memcpy(r->ns, ns, nslen + 1);
    r->name = r->ns + nslen + 1;
    memcpy(r->name, name, namelen + 1);
    if (map_put(m, id, r, NULL) < 0) {
        free(r);
        return NULL;
    }
    return r;
}

/* Set a leaf; returns 1 when its bytes changed, 0 when not, -1 on ENOMEM.
 * Re-putting identical bytes (etcd gives them a new revision) changes nothing,
 * not even the revision: status and annotations keep naming the revision the
 * objects were actually built from. */
static int leaf_set(struct kc_value *v, const char *data, size_t len, uint64_t rev) {
    if (data && v->data && v->len == len && memcmp(v->data, data, len) == 0)
        return 0; /* same bytes: keep the revision the objects were built from */
    if (!data && !v->data)
        return 0;
    char *copy = NULL;
    if (data) {
        copy = malloc(len + 1);
        if (!copy)
            return -1;
        memcpy(copy, data, len);
        copy[len] = '\0';
    }
    free(v->data);
    v->data = copy;
    v->len = data ? len : 0;
    v->rev = rev;
    return 1;
}

static bool route_empty(const struct kc_route *r) {
    for (int i = 0; i < KC_NLEAVES; i++)
        if (r->leaf[i].data)
            return false;
    return true;
}

static void notify(kc_changed_cb cb, void *user, const struct kc_route *r) {
    char id[ROUTE_ID_MAX];
    keycache_route_id(id, sizeof id, r->ns, r->name);
    if (cb)
        cb(user, id);
}

int keycache_put(struct keycache *kc, const struct source_kv *kv, kc_changed_cb cb, void *user) {
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1];
    int leaf;
    if (kv->revision > kc->revision)
        kc->revision = kv->revision;
    if (is_confirm(kc, kv->key)) {
        int rc = leaf_set(&kc->confirm, kv->value, kv->value_len, kv->revision);
        if (rc > 0 && cb)
            cb(user, KC_CONFIRM_KEY);
        return rc < 0 ? -1 : 0;
    }
    if (classify(kc, kv->key, ns, name, &leaf) != 0)
        return 0;
    struct kc_route *r = route_get(&kc->routes, ns, name, true);
    if (!r)
        return -1;
    int rc = leaf_set(&r->leaf[leaf], kv->value, kv->value_len, kv->revision);
    if (rc > 0)
        notify(cb, user, r);
    return rc < 0 ? -1 : 0;
}

int keycache_delete(struct keycache *kc, const char *key, kc_changed_cb cb, void *user) {
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1];
    int leaf;
    if (is_confirm(kc, key)) {
        if (leaf_set(&kc->confirm, NULL, 0, 0) > 0 && cb)
            cb(user, KC_CONFIRM_KEY);
        return 0;
    }
    if (classify(kc, key, ns, name, &leaf) != 0) {
        map_del(&kc->warned, key); /* warn again if it comes back */
        return 0;
    }
    struct kc_route *r = route_get(&kc->routes, ns, name, false);
    if (!r || !r->leaf[leaf].data)
        return 0;
    leaf_set(&r->leaf[leaf], NULL, 0, 0);
    notify(cb, user, r);
    if (route_empty(r)) {
        char id[ROUTE_ID_MAX];
        keycache_route_id(id, sizeof id, ns, name);
        route_free(map_del(&kc->routes, id));
    }
    return 0;
}

static bool route_equal(const struct kc_route *a, const struct kc_route *b) {
    for (int i = 0; i < KC_NLEAVES; i++) {
        const struct kc_value *x = &a->leaf[i], *y = &b->leaf[i];
        if (!x->data != !y->data)
            return false;
        if (x->data && (x->len != y->len || memcmp(x->data, y->data, x->len) != 0))
            return false;
    }
    return true;
}

int keycache_snapshot(struct keycache *kc, const struct source_kv *kvs, size_t n, uint64_t revision,
                      kc_changed_cb cb, void *user) {
    struct map fresh = MAP_INIT;
    const struct source_kv *confirm = NULL;
    for (size_t i = 0; i < n; i++) {
        char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1];
        int leaf;
        if (is_confirm(kc, kvs[i].key)) {
            confirm = &kvs[i];
            continue;
        }
        if (classify(kc, kvs[i].key, ns, name, &leaf) != 0)
            continue;
        struct kc_route *r = route_get(&fresh, ns, name, true);
        if (!r || leaf_set(&r->leaf[leaf], kvs[i].value, kvs[i].value_len, kvs[i].revision) < 0) {
            routes_free(&fresh);
            return -1; /* the old state stays: nothing is lost */
        }
    }
    /* Swap first, then notify: the callback may read the cache. */
    int confirm_changed =
        leaf_set(&kc->confirm, confirm ? confirm->value : NULL, confirm ? confirm->value_len : 0,
                 confirm ? confirm->revision : 0);
    if (confirm_changed < 0) {
        routes_free(&fresh);
        return -1;
    }
    struct map old = kc->routes;
    kc->routes = fresh;
    kc->revision = revision;
    struct map_iter it;
    map_iter_init(&it, &kc->routes);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        struct kc_route *was = map_get(&old, e->key), *now = e->value;
        for (int i = 0; was && i < KC_NLEAVES; i++) {
            struct kc_value *x = &was->leaf[i], *y = &now->leaf[i];
            /* Unchanged bytes keep their revision (see leaf_set), unless the
             * old one is higher: the source's history was reset (a Consul
             * snapshot restore) and numbers from before it mean nothing now. */
            if (x->data && y->data && x->len == y->len && memcmp(x->data, y->data, x->len) == 0 &&
                x->rev <= y->rev)
                y->rev = x->rev;
        }
        if (!was || !route_equal(was, now))
            notify(cb, user, now);
    }
    map_iter_init(&it, &old);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        if (!map_has(&kc->routes, e->key))
            notify(cb, user, e->value);
    routes_free(&old);
    if (confirm_changed > 0 && cb)
        cb(user, KC_CONFIRM_KEY);
    return 0;
}

int keycache_input(const struct keycache *kc, const char *route_id, struct model_input *in,
                   char ns[MODEL_NS_MAX + 1], char name[MODEL_NAME_MAX + 1]) {
    memset(in, 0, sizeof *in);
    const char *slash = strchr(route_id, '/');
    size_t nslen = slash ? (size_t)(slash - route_id) : 0;
    if (nslen > MODEL_NS_MAX)
        nslen = MODEL_NS_MAX;
    memcpy(ns, route_id, nslen);
    ns[nslen] = '\0';
    snprintf(name, MODEL_NAME_MAX + 1, "%s", slash ? slash + 1 : "");
    in->prefix = kc->prefix;
    in->ns = ns;
    in->name = name;
    const struct kc_route *r = map_get(&kc->routes, route_id);
    if (!r)
        return -1;
    const struct kc_value *v = r->leaf;
    in->route = v[KC_ROUTE].data;
    in->route_len = v[KC_ROUTE].len;
    in->weights = v[KC_WEIGHTS].data;
    in->weights_len = v[KC_WEIGHTS].len;
    in->headers = v[KC_HEADERS].data;
    in->headers_len = v[KC_HEADERS].len;
    in->route_rev = v[KC_ROUTE].rev;
    for (int i = 0; i < KC_NLEAVES; i++)
        if (v[i].data && v[i].rev > in->revision)
            in->revision = v[i].rev;
    return 0;
}
