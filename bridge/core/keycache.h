/* keycache.h - the source's keys, grouped into route folders.
 *
 * Sources report raw keys; the reconciler thinks in routes. The key cache sits
 * between them: it keeps the current bytes of every route's `route`, `weights`,
 * `headers`, `freeze`, `abort`, `plan` and `pause` key, tells which routes
 * changed (by content, so re-putting the same value changes nothing; but for
 * `plan`, whose revision is its start: writing the same plan again starts it
 * again), and warns once per stray key under the prefix.
 * `status` keys are the bridge's own output and are never input: their bytes
 * are kept so that a status already written is not written again, and so
 * that a ramp plan's start can be read back after a restart. A
 * mistyped leaf (`ns/name/weight`) is remembered for its route, so the
 * route's status can name it. */
#ifndef CB_KEYCACHE_H
#define CB_KEYCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/lib/log.h"
#include "bridge/lib/map.h"
#include "bridge/model/model.h"
#include "sources/source.h"

enum {
    KEYCACHE_ROUTE,
    KEYCACHE_WEIGHTS,
    KEYCACHE_HEADERS,
    KEYCACHE_FREEZE, /* brakes: the value is the reason */
    KEYCACHE_ABORT,
    KEYCACHE_PLAN,  /* a ramp plan: its revision counts, not only its bytes */
    KEYCACHE_PAUSE, /* holds the plan's step: the value is the reason */
    KEYCACHE_NLEAVES
};

/* Keys for the whole prefix. Not routes: no namespace starts with '_'. When
 * the value of one changes, the changed callback gets its name as the route
 * id. P_confirm-delete: a person's confirmation of deletions the deletion
 * guard holds (see reconcile.h). P_freeze: every route is frozen, for the
 * reason in its value (see keycache_brakes). */
#define KEYCACHE_CONFIRM_KEY "_confirm-delete"
#define KEYCACHE_FREEZE_KEY "_freeze"

struct keycache_value {
    char *data; /* NULL: key absent */
    size_t len;
    uint64_t rev;
};

/* One allocation per route, sized to its names: at 10,000 routes, fixed
 * name buffers were 3 MB of the bridge's memory. */
struct keycache_route {
    struct keycache_value leaf[KEYCACHE_NLEAVES];
    char *name; /* points into ns[], after the namespace's NUL */
    char ns[];
};

struct keycache {
    /* public: set after keycache_init */
    /* Called when the unknown leaves of a route change (optional). */
    void (*on_leaves)(void *user, const char *route_id);
    void *leaves_user;
    /* read-only */
    struct map routes;             /* "ns/name" -> struct keycache_route */
    struct map leaves;             /* key with an unknown leaf -> "ns/name\0message" */
    char *prefix;                  /* the source prefix, ending in '/' */
    uint64_t revision;             /* last source revision seen */
    struct keycache_value confirm; /* P_confirm-delete */
    struct keycache_value freeze;  /* P_freeze */
    /* private */
    struct map warned; /* stray keys already warned about */
    struct map status; /* "ns/name" -> the bytes of its status key (NUL-terminated) */
    struct logger *log;
};

/* Called once per route whose inputs changed. */
typedef void (*keycache_changed_cb)(void *user, const char *route_id);

/* The cache owns no handles: init (0, or -1 without memory) and free. */
int keycache_init(struct keycache *cache, const char *prefix, struct logger *lg);
void keycache_free(struct keycache *cache);

/* A key put or deleted; cb is called for the route whose inputs changed
 * (if any). 0, or -1 without memory (the cache is as it was). */
int keycache_put(struct keycache *cache, const struct source_kv *kv, keycache_changed_cb cb,
                 void *user);
int keycache_delete(struct keycache *cache, const char *key, keycache_changed_cb cb, void *user);
/* Replace everything with a complete listing; routes that changed, appeared
 * or vanished are reported. */
int keycache_snapshot(struct keycache *cache, const struct source_kv *kvs, size_t n,
                      uint64_t revision, keycache_changed_cb cb, void *user);

/* Fill a model_input for route_id ("ns/name"); pointers stay valid until the
 * next change to the cache. Returns whether a key of the route exists (when
 * not, ns and name are still filled from route_id). */
bool keycache_input(const struct keycache *cache, const char *route_id, struct model_input *in,
                    char ns[MODEL_NS_MAX + 1], char name[MODEL_NAME_MAX + 1]);

/* One leaf (KEYCACHE_ROUTE...) of route_id, or NULL when that key is absent. */
const struct keycache_value *keycache_leaf(const struct keycache *cache, const char *route_id,
                                           int leaf);
/* The current value of the route's status key, or NULL. */
const char *keycache_status(const struct keycache *cache, const char *route_id);
/* The route's keys with an unknown leaf, as one message ("key P/ns/name/weight:
 * unknown leaf 'weight' (did you mean 'weights'?)", joined by "; ") into out.
 * Returns how many there are (0: out is ""). */
size_t keycache_leaf_errors(const struct keycache *cache, const char *route_id, char *out,
                            size_t outlen);

/* The brakes a person pulled on a route (docs/usage.md section 15). A
 * reason is the key's value without surrounding blanks, at most
 * KEYCACHE_REASON_MAX bytes, control bytes and bytes that are not UTF-8 shown
 * as '?', and "no reason given" when the value is empty: an empty key still
 * brakes. */
#define KEYCACHE_REASON_MAX 200
struct keycache_brakes {
    bool frozen;                                 /* the route's `freeze` key, or P_freeze */
    bool frozen_here;                            /* ... the route's own key */
    bool frozen_all;                             /* P_freeze exists */
    bool aborted;                                /* the route's `abort` key */
    char freeze_reason[KEYCACHE_REASON_MAX + 1]; /* the route's own key's, else P_freeze's */
    char abort_reason[KEYCACHE_REASON_MAX + 1];
    bool paused; /* the route's `pause` key: its plan holds the step in force */
    char pause_reason[KEYCACHE_REASON_MAX + 1];
};
void keycache_brakes(const struct keycache *cache, const char *route_id,
                     struct keycache_brakes *out);

/* Build "ns/name" (KEYCACHE_ROUTE_ID_MAX bytes hold any). */
#define KEYCACHE_ROUTE_ID_MAX (MODEL_NS_MAX + 1 + MODEL_NAME_MAX + 1)
void keycache_route_id(char *out, size_t outlen, const char *ns, const char *name);

#endif
