/* keycache.c - source keys grouped into route folders; see keycache.h. */
#include "bridge/core/keycache.h"
#include "bridge/lib/suggest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keycache_route_id(char *out, size_t outlen, const char *ns, const char *name) {
    snprintf(out, outlen, "%s/%s", ns, name);
}

int keycache_init(struct keycache *cache, const char *prefix, struct logger *lg) {
    memset(cache, 0, sizeof *cache);
    cache->prefix = strdup(prefix);
    cache->log = lg;
    return cache->prefix ? 0 : -1;
}

static void route_free(struct keycache_route *r) {
    if (!r)
        return;
    for (int i = 0; i < KEYCACHE_NLEAVES; i++)
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

static void strings_free(struct map *m) {
    struct map_iter it;
    map_iter_init(&it, m);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        free(e->value);
    map_free(m);
}

void keycache_free(struct keycache *cache) {
    routes_free(&cache->routes);
    free(cache->confirm.data);
    cache->confirm.data = NULL;
    free(cache->freeze.data);
    cache->freeze.data = NULL;
    strings_free(&cache->status);
    strings_free(&cache->leaves);
    map_free(&cache->warned);
    free(cache->prefix);
    cache->prefix = NULL;
}

/* A key whose folder is a valid route but whose leaf is unknown: fills ns,
 * name and a message with a did-you-mean. 0 when it is one. */
static int unknown_leaf(struct keycache *cache, const char *key, char *ns, char *name, char *msg,
                        size_t msglen) {
    const char *slash = strrchr(key, '/');
    char probe[512], err[256];
    enum model_leaf l;
    if (!slash ||
        (size_t)snprintf(probe, sizeof probe, "%.*sroute", (int)(slash + 1 - key), key) >=
            sizeof probe ||
        model_parse_key(cache->prefix, probe, ns, name, &l, err, sizeof err) < 0)
        return -1;
    const char *leaf = slash + 1, *best = NULL;
    size_t bestd = 3; /* a typo, not another word */
    for (size_t i = 0; i < MODEL_NLEAVES; i++) {
        size_t d = suggest_distance(leaf, model_leaf_names[i]);
        if (d < bestd) {
            bestd = d;
            best = model_leaf_names[i];
        }
    }
    char hint[64] = "";
    if (best)
        snprintf(hint, sizeof hint, "did you mean '%s'? ", best);
    snprintf(msg, msglen, "unknown leaf '%.64s' (%sexpected " MODEL_LEAVES_TEXT ")", leaf, hint);
    return 0;
}

/* The keys for the whole prefix (KEYCACHE_CONFIRM_KEY, KEYCACHE_FREEZE_KEY). */
static const char *const prefix_keys[] = {KEYCACHE_CONFIRM_KEY, KEYCACHE_FREEZE_KEY};
#define N_PREFIX_KEYS (sizeof prefix_keys / sizeof *prefix_keys)

static struct keycache_value *prefix_value(struct keycache *cache, size_t i) {
    return i == 0 ? &cache->confirm : &cache->freeze;
}

/* A key right under the prefix that starts with '_' and is close to one of
 * the prefix's own keys: " (did you mean 'P_freeze'?)" into hint. */
static void prefix_key_hint(const struct keycache *cache, const char *key, char *hint,
                            size_t hintlen) {
    size_t n = strlen(cache->prefix), bestd = 3;
    const char *best = NULL;
    hint[0] = '\0';
    if (strncmp(key, cache->prefix, n) != 0 || key[n] != '_')
        return;
    for (size_t i = 0; i < N_PREFIX_KEYS; i++) {
        size_t d = suggest_distance(key + n, prefix_keys[i]);
        if (d < bestd) {
            bestd = d;
            best = prefix_keys[i];
        }
    }
    if (best)
        snprintf(hint, hintlen, " (did you mean '%.200s%s'?)", cache->prefix, best);
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n) {
    unsigned char c = p[0];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xC2 && c <= 0xDF ? 2
                 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4
                                          : 0;
    if (!len || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0) || (c == 0xF0 && p[1] < 0x90) ||
        (c == 0xF4 && p[1] >= 0x90))
        return 0; /* overlong, surrogate, beyond U+10FFFF */
    return len;
}

/* The message goes into a JSON status key: control bytes and bytes that are
 * not UTF-8 become '?'. */
static void make_printable(char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = utf8_len((const unsigned char *)s + i, n - i);
        if (!len || c < 0x20 || c == 0x7f) {
            s[i++] = '?';
            continue;
        }
        i += len;
    }
}

/* Which route and leaf a key is; 1 = the route's status key, 2 = a key with
 * an unknown leaf under a valid route folder (msg says which), -1 = stray. */
static int classify(struct keycache *cache, const char *key, char *ns, char *name, int *leaf,
                    char *msg, size_t msglen) {
    enum model_leaf l;
    char err[256];
    if (model_parse_key(cache->prefix, key, ns, name, &l, err, sizeof err) < 0) {
        char detail[256];
        bool typo = unknown_leaf(cache, key, ns, name, detail, sizeof detail) == 0;
        if (!map_has(&cache->warned, key)) {
            char hint[300];
            prefix_key_hint(cache, key, hint, sizeof hint);
            log_fmsg(cache->log, LOG_LVL_WARN, LOG_FIELDS(.key = key), "ignoring key %s: %s%s", key,
                     typo ? detail : err, hint);
            (void)map_put(&cache->warned, key, NULL, NULL); /* best effort */
        }
        if (!typo)
            return -1;
        snprintf(msg, msglen, "key %.300s: %.200s", key, detail);
        make_printable(msg);
        return 2;
    }
    switch (l) {
    case LEAF_ROUTE: *leaf = KEYCACHE_ROUTE; return 0;
    case LEAF_WEIGHTS: *leaf = KEYCACHE_WEIGHTS; return 0;
    case LEAF_HEADERS: *leaf = KEYCACHE_HEADERS; return 0;
    case LEAF_FREEZE: *leaf = KEYCACHE_FREEZE; return 0;
    case LEAF_ABORT: *leaf = KEYCACHE_ABORT; return 0;
    case LEAF_PLAN: *leaf = KEYCACHE_PLAN; return 0;
    case LEAF_PAUSE: *leaf = KEYCACHE_PAUSE; return 0;
    case LEAF_STATUS:
    case MODEL_NLEAVES: return 1;
    }
    return 1;
}

/* Which of prefix_keys key is, or -1. */
static int prefix_key(const struct keycache *cache, const char *key) {
    size_t n = strlen(cache->prefix);
    if (strncmp(key, cache->prefix, n) != 0)
        return -1;
    for (size_t i = 0; i < N_PREFIX_KEYS; i++)
        if (strcmp(key + n, prefix_keys[i]) == 0)
            return (int)i;
    return -1;
}

/* Remember (value non-NULL) or forget a string under key in m; returns 1
 * when that changed what m holds, 0 when not, -1 without memory. */
static int string_set(struct map *m, const char *key, const char *value, size_t len) {
    char *cur = map_get(m, key);
    if (!value) {
        if (!cur)
            return 0;
        free(map_del(m, key));
        return 1;
    }
    if (cur && strlen(cur) == len && memcmp(cur, value, len) == 0)
        return 0;
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, value, len);
    copy[len] = '\0';
    void *prev = NULL;
    if (map_put(m, key, copy, &prev) < 0) {
        free(copy);
        return -1;
    }
    free(prev);
    return 1;
}

/* A status key or a key with an unknown leaf: not input, but remembered.
 * value NULL: deleted. */
static int side_key(struct keycache *cache, int kind, const char *key, const char *ns,
                    const char *name, const char *msg, const char *value, size_t len) {
    char id[KEYCACHE_ROUTE_ID_MAX];
    keycache_route_id(id, sizeof id, ns, name);
    if (kind == 1)
        return string_set(&cache->status, id, value, len) < 0 ? -1 : 0;
    char entry[KEYCACHE_ROUTE_ID_MAX + 512];
    size_t idlen = strlen(id) + 1, n = idlen + strlen(msg);
    memcpy(entry, id, idlen);
    memcpy(entry + idlen, msg, n - idlen);
    const char *cur = map_get(&cache->leaves, key);
    if (value && cur && strcmp(cur, id) == 0 && strcmp(cur + strlen(cur) + 1, msg) == 0)
        return 0; /* the same key again (string_set compares up to the first NUL) */
    int rc = string_set(&cache->leaves, key, value ? entry : NULL, n);
    if (rc > 0 && cache->on_leaves)
        cache->on_leaves(cache->leaves_user, id);
    return rc < 0 ? -1 : 0;
}

const char *keycache_status(const struct keycache *cache, const char *route_id) {
    return map_get(&cache->status, route_id);
}

size_t keycache_leaf_errors(const struct keycache *cache, const char *route_id, char *out,
                            size_t outlen) {
    size_t n = 0, used = 0;
    if (outlen)
        out[0] = '\0';
    struct map_iter it;
    map_iter_init(&it, &cache->leaves);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        const char *id = e->value;
        if (strcmp(id, route_id) != 0)
            continue;
        if (used < outlen) {
            int w = snprintf(out + used, outlen - used, "%s%s", n ? "; " : "", id + strlen(id) + 1);
            used += w > 0 ? (size_t)w : 0;
        }
        n++;
    }
    return n;
}

static struct keycache_route *route_get(struct map *m, const char *ns, const char *name,
                                        bool create) {
    char id[KEYCACHE_ROUTE_ID_MAX];
    keycache_route_id(id, sizeof id, ns, name);
    struct keycache_route *r = map_get(m, id);
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

static int leaf_copy(struct keycache_value *v, const char *data, size_t len, uint64_t rev);

/* Set a leaf; returns 1 when its bytes changed, 0 when not, -1 on ENOMEM.
 * Re-putting identical bytes (etcd gives them a new revision) changes nothing,
 * not even the revision: status and annotations keep naming the revision the
 * objects were actually built from. */
static int leaf_set(struct keycache_value *v, const char *data, size_t len, uint64_t rev) {
    if (data && v->data && v->len == len && memcmp(v->data, data, len) == 0)
        return 0; /* same bytes: keep the revision the objects were built from */
    return leaf_copy(v, data, len, rev);
}

/* A route's leaf: as leaf_set, but a plan written again with the same bytes
 * is a new plan (its revision is its start). */
static int route_leaf_set(struct keycache_value *v, int leaf, const char *data, size_t len,
                          uint64_t rev) {
    if (leaf == KEYCACHE_PLAN && data && v->data && v->len == len &&
        memcmp(v->data, data, len) == 0) {
        if (v->rev == rev)
            return 0;
        v->rev = rev;
        return 1;
    }
    return leaf_set(v, data, len, rev);
}

static int leaf_copy(struct keycache_value *v, const char *data, size_t len, uint64_t rev) {
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

static bool route_empty(const struct keycache_route *r) {
    for (int i = 0; i < KEYCACHE_NLEAVES; i++)
        if (r->leaf[i].data)
            return false;
    return true;
}

static void report_changed(keycache_changed_cb cb, void *user, const struct keycache_route *r) {
    char id[KEYCACHE_ROUTE_ID_MAX];
    keycache_route_id(id, sizeof id, r->ns, r->name);
    if (cb)
        cb(user, id);
}

int keycache_put(struct keycache *cache, const struct source_kv *kv, keycache_changed_cb cb,
                 void *user) {
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1], msg[512];
    int leaf;
    if (kv->revision > cache->revision)
        cache->revision = kv->revision;
    int pk = prefix_key(cache, kv->key);
    if (pk >= 0) {
        int rc = leaf_set(prefix_value(cache, (size_t)pk), kv->value, kv->value_len, kv->revision);
        if (rc > 0 && cb)
            cb(user, prefix_keys[pk]);
        return rc < 0 ? -1 : 0;
    }
    int kind = classify(cache, kv->key, ns, name, &leaf, msg, sizeof msg);
    if (kind > 0)
        return side_key(cache, kind, kv->key, ns, name, msg, kv->value, kv->value_len);
    if (kind < 0)
        return 0;
    struct keycache_route *r = route_get(&cache->routes, ns, name, true);
    if (!r)
        return -1;
    int rc = route_leaf_set(&r->leaf[leaf], leaf, kv->value, kv->value_len, kv->revision);
    if (rc > 0)
        report_changed(cb, user, r);
    return rc < 0 ? -1 : 0;
}

int keycache_delete(struct keycache *cache, const char *key, keycache_changed_cb cb, void *user) {
    char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1], msg[512];
    int leaf;
    int pk = prefix_key(cache, key);
    if (pk >= 0) {
        if (leaf_set(prefix_value(cache, (size_t)pk), NULL, 0, 0) > 0 && cb)
            cb(user, prefix_keys[pk]);
        return 0;
    }
    int kind = classify(cache, key, ns, name, &leaf, msg, sizeof msg);
    if (kind != 0) {
        map_del(&cache->warned, key); /* warn again if it comes back */
        return kind > 0 ? side_key(cache, kind, key, ns, name, msg, NULL, 0) : 0;
    }
    struct keycache_route *r = route_get(&cache->routes, ns, name, false);
    if (!r || !r->leaf[leaf].data)
        return 0;
    leaf_set(&r->leaf[leaf], NULL, 0, 0);
    report_changed(cb, user, r);
    if (route_empty(r)) {
        char id[KEYCACHE_ROUTE_ID_MAX];
        keycache_route_id(id, sizeof id, ns, name);
        route_free(map_del(&cache->routes, id));
    }
    return 0;
}

static bool route_equal(const struct keycache_route *a, const struct keycache_route *b) {
    for (int i = 0; i < KEYCACHE_NLEAVES; i++) {
        const struct keycache_value *x = &a->leaf[i], *y = &b->leaf[i];
        if (!x->data != !y->data)
            return false;
        if (x->data && (x->len != y->len || memcmp(x->data, y->data, x->len) != 0))
            return false;
        if (i == KEYCACHE_PLAN && x->data && x->rev != y->rev)
            return false; /* the same plan written again: started again */
    }
    return true;
}

int keycache_snapshot(struct keycache *cache, const struct source_kv *kvs, size_t n,
                      uint64_t revision, keycache_changed_cb cb, void *user) {
    struct map fresh = MAP_INIT;
    /* Status keys and unknown leaves: the listing replaces what was seen. */
    struct map keep_leaves = cache->leaves;
    strings_free(&cache->status);
    cache->leaves = (struct map)MAP_INIT;
    const struct source_kv *given[N_PREFIX_KEYS] = {NULL};
    for (size_t i = 0; i < n; i++) {
        char ns[MODEL_NS_MAX + 1], name[MODEL_NAME_MAX + 1], msg[512];
        int leaf;
        int pk = prefix_key(cache, kvs[i].key);
        if (pk >= 0) {
            given[pk] = &kvs[i];
            continue;
        }
        int kind = classify(cache, kvs[i].key, ns, name, &leaf, msg, sizeof msg);
        if (kind > 0) {
            void (*cb_leaves)(void *, const char *) = cache->on_leaves;
            cache->on_leaves = NULL; /* reported below, against the old set */
            (void)side_key(cache, kind, kvs[i].key, ns, name, msg, kvs[i].value, kvs[i].value_len);
            cache->on_leaves = cb_leaves;
        }
        if (kind != 0)
            continue;
        struct keycache_route *r = route_get(&fresh, ns, name, true);
        if (!r || leaf_set(&r->leaf[leaf], kvs[i].value, kvs[i].value_len, kvs[i].revision) < 0) {
            routes_free(&fresh);
            strings_free(&keep_leaves);
            return -1; /* the old state stays: nothing is lost */
        }
    }
    /* The prefix's keys: set on copies first, so that no memory leaves
     * everything as it was. */
    struct keycache_value next[N_PREFIX_KEYS];
    int prefix_changed[N_PREFIX_KEYS];
    for (size_t k = 0; k < N_PREFIX_KEYS; k++) {
        const struct source_kv *g = given[k];
        struct keycache_value *cur = prefix_value(cache, k);
        next[k] = (struct keycache_value){NULL, 0, 0};
        prefix_changed[k] = 0;
        if (g && cur->data && cur->len == g->value_len &&
            memcmp(cur->data, g->value, g->value_len) == 0)
            continue; /* same bytes: nothing to copy */
        prefix_changed[k] = g || cur->data;
        if (g && leaf_set(&next[k], g->value, g->value_len, g->revision) < 0) {
            for (size_t i = 0; i < k; i++)
                free(next[i].data);
            routes_free(&fresh);
            strings_free(&keep_leaves);
            return -1;
        }
    }
    for (size_t k = 0; k < N_PREFIX_KEYS; k++) {
        if (!prefix_changed[k])
            continue;
        struct keycache_value *cur = prefix_value(cache, k);
        free(cur->data);
        *cur = next[k];
    }
    /* Swap first, then notify: the callback may read the cache. */
    struct map old = cache->routes;
    cache->routes = fresh;
    cache->revision = revision;
    struct map_iter it;
    map_iter_init(&it, &cache->routes);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        struct keycache_route *was = map_get(&old, e->key), *now = e->value;
        for (int i = 0; was && i < KEYCACHE_NLEAVES; i++) {
            struct keycache_value *x = &was->leaf[i], *y = &now->leaf[i];
            /* Unchanged bytes keep their revision (see leaf_set), unless the
             * old one is higher: the source's history was reset (a Consul
             * snapshot restore) and numbers from before it mean nothing now. */
            if (i != KEYCACHE_PLAN && x->data && y->data && x->len == y->len &&
                memcmp(x->data, y->data, x->len) == 0 && x->rev <= y->rev)
                y->rev = x->rev;
        }
        if (!was || !route_equal(was, now))
            report_changed(cb, user, now);
    }
    map_iter_init(&it, &old);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        if (!map_has(&cache->routes, e->key))
            report_changed(cb, user, e->value);
    routes_free(&old);
    /* Routes whose unknown leaves came or went. */
    for (int pass = 0; pass < 2 && cache->on_leaves; pass++) {
        struct map *a = pass ? &keep_leaves : &cache->leaves,
                   *b = pass ? &cache->leaves : &keep_leaves;
        map_iter_init(&it, a);
        for (struct map_entry *e; (e = map_iter_next(&it));) {
            const char *other = map_get(b, e->key);
            if (!other || strcmp(other + strlen(other) + 1,
                                 (const char *)e->value + strlen(e->value) + 1) != 0)
                cache->on_leaves(cache->leaves_user, e->value);
        }
    }
    strings_free(&keep_leaves);
    for (size_t k = 0; k < N_PREFIX_KEYS; k++)
        if (prefix_changed[k] && cb)
            cb(user, prefix_keys[k]);
    return 0;
}

bool keycache_input(const struct keycache *cache, const char *route_id, struct model_input *in,
                    char ns[MODEL_NS_MAX + 1], char name[MODEL_NAME_MAX + 1]) {
    memset(in, 0, sizeof *in);
    const char *slash = strchr(route_id, '/');
    size_t nslen = slash ? (size_t)(slash - route_id) : 0;
    if (nslen > MODEL_NS_MAX)
        nslen = MODEL_NS_MAX;
    memcpy(ns, route_id, nslen);
    ns[nslen] = '\0';
    snprintf(name, MODEL_NAME_MAX + 1, "%s", slash ? slash + 1 : "");
    in->prefix = cache->prefix;
    in->ns = ns;
    in->name = name;
    const struct keycache_route *r = map_get(&cache->routes, route_id);
    if (!r)
        return false;
    const struct keycache_value *v = r->leaf;
    in->route = v[KEYCACHE_ROUTE].data;
    in->route_len = v[KEYCACHE_ROUTE].len;
    in->weights = v[KEYCACHE_WEIGHTS].data;
    in->weights_len = v[KEYCACHE_WEIGHTS].len;
    in->headers = v[KEYCACHE_HEADERS].data;
    in->headers_len = v[KEYCACHE_HEADERS].len;
    in->route_rev = v[KEYCACHE_ROUTE].rev;
    in->abort = v[KEYCACHE_ABORT].data != NULL;
    for (int i = 0; i < KEYCACHE_NLEAVES; i++)
        if (v[i].data && v[i].rev > in->revision)
            in->revision = v[i].rev;
    return true;
}

const struct keycache_value *keycache_leaf(const struct keycache *cache, const char *route_id,
                                           int leaf) {
    const struct keycache_route *r = map_get(&cache->routes, route_id);
    return r && leaf >= 0 && leaf < KEYCACHE_NLEAVES && r->leaf[leaf].data ? &r->leaf[leaf] : NULL;
}

/* A brake's reason, from the bytes of its key (see keycache.h). */
static void brake_reason(const struct keycache_value *v, char out[KEYCACHE_REASON_MAX + 1]) {
    const char *s = v->data;
    size_t n = v->len;
    while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    if (n > KEYCACHE_REASON_MAX) {
        n = KEYCACHE_REASON_MAX;
        while (n && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* not inside a UTF-8 sequence */
    }
    if (!n) {
        snprintf(out, KEYCACHE_REASON_MAX + 1, "no reason given");
        return;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (!out[i])
            out[i] = '?'; /* a NUL byte would cut the reason short */
    make_printable(out);
}

void keycache_brakes(const struct keycache *cache, const char *route_id,
                     struct keycache_brakes *out) {
    memset(out, 0, sizeof *out);
    const struct keycache_route *r = map_get(&cache->routes, route_id);
    const struct keycache_value *own =
        r && r->leaf[KEYCACHE_FREEZE].data ? &r->leaf[KEYCACHE_FREEZE] : NULL;
    out->frozen_here = own != NULL;
    out->frozen_all = cache->freeze.data != NULL;
    out->frozen = own || out->frozen_all;
    if (out->frozen)
        brake_reason(own ? own : &cache->freeze, out->freeze_reason);
    if (r && r->leaf[KEYCACHE_ABORT].data) {
        out->aborted = true;
        brake_reason(&r->leaf[KEYCACHE_ABORT], out->abort_reason);
    }
    if (r && r->leaf[KEYCACHE_PAUSE].data) {
        out->paused = true;
        brake_reason(&r->leaf[KEYCACHE_PAUSE], out->pause_reason);
    }
}
