/* reconcile_guard.c - the deletion guard (policy sync); see reconcile.h
 * (struct delete_guard) for what it does and how a person confirms.
 *
 * A verdict (guard_eval) is taken from the key cache as a whole after it
 * changed: how many of the routes that own objects here have lost all
 * their keys. A pass about to prune a route without keys asks guard_holds
 * first; a held route is remembered and requeued when the hold ends (keys
 * back, or confirmed). Apart from the pass because it counts every route,
 * not one. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bridge/core/reconcile_internal.h"

static uint32_t guard_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

/* Does the route own at least one object from our prefix, in a namespace we
 * may write to? Only those routes can lose objects to a prune. */
static bool route_owns_here(struct reconciler *r, const char *id, const struct objset *set) {
    char ns[MODEL_NS_MAX + 1];
    const char *slash = strchr(id, '/');
    size_t n = slash ? (size_t)(slash - id) : 0;
    if (!slash || n > MODEL_NS_MAX)
        return false;
    memcpy(ns, id, n);
    ns[n] = '\0';
    if (!namespace_allowed(r->cfg, ns))
        return false;
    for (size_t i = 0; set && i < set->n; i++) {
        int kind = set->keys[i][0] - '0';
        if (kind >= 0 && kind < OBJ_NKINDS &&
            owned_here(r, informer_get(r->inf[kind], ns, set->keys[i] + 2)))
            return true;
    }
    return false;
}

/* P_confirm-delete holds the token (surrounding blanks and a newline are
 * fine: `echo` and editors add them). */
static bool guard_confirmed(const struct reconciler *r, uint32_t token) {
    const char *v = r->keys->confirm.data;
    if (!v)
        return false;
    char want[16];
    snprintf(want, sizeof want, "%08" PRIx32, token);
    while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')
        v++;
    size_t n = strlen(want);
    if (strncmp(v, want, n) != 0)
        return false;
    for (v += n; *v == ' ' || *v == '\t' || *v == '\n' || *v == '\r'; v++)
        ;
    return *v == '\0';
}

/* Routes that own objects here and have no key left, not yet confirmed:
 * counted into gone (and hashed into *token); every owner into owned. With
 * approve, mark each of them confirmed instead. */
static int guard_count(struct reconciler *r, size_t *gone, size_t *owned, uint32_t *token,
                       bool approve) {
    struct delete_guard *g = &r->guard;
    *gone = *owned = 0;
    *token = 0;
    struct map_iter it;
    map_iter_init(&it, &r->route_objs);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        if (!route_owns_here(r, e->key, e->value))
            continue;
        ++*owned;
        if (map_has(&r->keys->routes, e->key)) {
            map_del(&g->approved, e->key); /* back again: a later deletion asks anew */
            continue;
        }
        if (map_has(&g->approved, e->key))
            continue;
        ++*gone;
        *token += guard_hash(e->key); /* a sum: independent of the map's order */
        if (approve && map_put(&g->approved, e->key, NULL, NULL) < 0)
            return -1;
    }
    return 0;
}

static void guard_release(struct reconciler *r) {
    struct map_iter it;
    map_iter_init(&it, &r->guard.held);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        reconciler_enqueue(r, e->key);
    map_free(&r->guard.held);
}

void guard_eval(struct reconciler *r) {
    struct delete_guard *g = &r->guard;
    g->dirty = false;
    if (r->cfg->policy != POLICY_SYNC)
        return;
    size_t gone, owned;
    uint32_t token;
    if (guard_count(r, &gone, &owned, &token, false) < 0)
        return;
    unsigned pct = r->cfg->max_delete_percent;
    /* Once holding, keep holding while any route is still without keys: a
     * restore in progress must not delete the routes it has not reached. */
    bool hold = g->holding
                    ? gone > 0
                    : gone >= 2 && (gone == owned || (uint64_t)gone * 100 > (uint64_t)pct * owned);
    if (hold && guard_confirmed(r, token)) {
        if (guard_count(r, &gone, &owned, &token, true) < 0) {
            log_error(r->log, "deletion guard: out of memory recording a confirmation");
            return;
        }
        log_warn(r->log,
                 "deletion guard: %s%s confirmed; deleting the objects of the routes "
                 "whose keys are gone",
                 r->keys->prefix, KEYCACHE_CONFIRM_KEY);
        hold = false;
    }
    if (hold) {
        if (!g->holding || g->token != token || g->gone != gone)
            log_warn(r->log,
                     "deletion guard: the source's keys now lack %zu of the %zu routes that own "
                     "objects (more than reconcile.max_delete_percent %u%%%s); deleting nothing. "
                     "If that is meant, put %s%s = %08" PRIx32 "; if not, restore the keys (or "
                     "fix the source's access), and the hold ends by itself",
                     gone, owned, pct, gone == owned ? ", all of them" : "", r->keys->prefix,
                     KEYCACHE_CONFIRM_KEY, token);
        if (!g->holding)
            g->holds++;
        g->holding = true;
        g->gone = gone;
        g->owned = owned;
        g->token = token;
        return;
    }
    if (g->holding)
        log_info(r->log, "deletion guard: hold ended (%zu of %zu routes without keys now)", gone,
                 owned);
    g->holding = false;
    g->gone = 0;
    guard_release(r);
}

bool guard_holds(struct reconciler *r, const char *id) {
    struct delete_guard *g = &r->guard;
    if (r->cfg->policy != POLICY_SYNC)
        return false;
    if (g->dirty)
        guard_eval(r);
    if (!g->holding || map_has(&g->approved, id) || map_has(&r->keys->routes, id) ||
        !route_owns_here(r, id, map_get(&r->route_objs, id)))
        return false;
    if (map_has(&g->held, id))
        return true;
    if (map_put(&g->held, id, NULL, NULL) < 0)
        return true; /* held all the same; only the release misses it */
    if (r->hooks.event) {
        char ns[MODEL_NS_MAX + 1], msg[512];
        const char *slash = strchr(id, '/');
        size_t n = (size_t)(slash - id) <= MODEL_NS_MAX ? (size_t)(slash - id) : 0;
        memcpy(ns, id, n);
        ns[n] = '\0';
        const cJSON *live = informer_get(r->inf[OBJ_INGRESSROUTE], ns, slash + 1);
        snprintf(msg, sizeof msg,
                 "keys gone, but so are those of %zu of %zu routes: deletion held until %s%s "
                 "= %08" PRIx32 " confirms it or the keys return",
                 g->gone, g->owned, r->keys->prefix, KEYCACHE_CONFIRM_KEY, g->token);
        if (live)
            r->hooks.event(r->hooks.user, live, "Warning", "DeletionHeld", msg);
    }
    return true;
}

bool reconciler_guard_describe(const struct reconciler *r, char *out, size_t outlen) {
    const struct delete_guard *g = &r->guard;
    if (!g->holding) {
        if (outlen)
            out[0] = '\0';
        return false;
    }
    snprintf(out, outlen,
             "deletion held: the keys of %zu of %zu routes are gone; to delete their objects put "
             "%s%s = %08" PRIx32,
             g->gone, g->owned, r->keys->prefix, KEYCACHE_CONFIRM_KEY, g->token);
    return true;
}
