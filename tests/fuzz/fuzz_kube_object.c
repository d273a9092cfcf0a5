/* fuzz_kube_object.c - objects from the Kubernetes API (list items, watch
 * events, answers to writes) through everything that consumes them via the
 * public headers: traefik_merge_owned and traefik_apply_weights
 * (sinks/traefik.c), traefik_is_managed, and the informer's cache helpers
 * kobj_str, kobj_rv_older (sinks/kobj.c), informer_store/get/forget
 * (sinks/informer.c).
 *
 * Input: JSON, parsed with cJSON as kube.c parses API bodies. A watch event
 * line ({"type": ..., "object": {...}}) is unwrapped to its object, as
 * kube.c does before calling the informer. kube.c's own line framing is
 * internal and not reachable from its header.
 *
 * The desired objects are fixed: rendered once from the route, weights and
 * header rule below, as the reconciler would.
 *
 * Invariants beyond "no crash, no sanitizer report" (checked on objects
 * without duplicate keys, which is all the API server sends):
 *  - traefik_merge_owned(live, desired): the result carries the desired
 *    spec, apiVersion, kind, name, namespace, our label and annotations;
 *    keeps the live resourceVersion and every label/annotation others set;
 *    reports "no change" only when live already had the desired spec and
 *    our label; and merging its own result again reports no change (one
 *    write converges, no write loop against the API server);
 *  - traefik_apply_weights: on success every service named in the weights
 *    has its weight in every route, nothing else changed, and a second run
 *    changes nothing; on failure the object is untouched;
 *  - kobj_rv_older is a strict order (irreflexive, asymmetric);
 *  - informer_store then informer_get returns an equal object; an older
 *    resourceVersion never replaces a newer one; informer_forget drops it. */
#include "fuzz_common.h"

#include "bridge/model/model.h"
#include "sinks/informer.h"
#include "sinks/traefik.h"

static const char ROUTE[] = "match: Host(`shop.example.com`) && PathPrefix(`/`)\n"
                            "entryPoints: [websecure]\n"
                            "services:\n"
                            "  - {name: shop-v1, port: 80, weight: 100}\n"
                            "  - {name: shop-v2, port: http}\n"
                            "middlewares: [auth]\n"
                            "tls: {secretName: shop-tls}\n";
static const char WEIGHTS[] = "shop-v1=90, shop-v2=10";
static const char HEADERS[] = "- name: beta\n"
                              "  header: X-Canary\n"
                              "  value: always\n"
                              "  service: shop-v2\n"
                              "  setRequestHeaders: {X-Canary-Route: beta}\n";

static struct model_route route;
static cJSON *desired[2]; /* the IngressRoute and the rule's Middleware */

static void setup(void) {
    static const struct render_opts o = {"traefik.io", RULE_SYNTAX_V3, "canary/", "etcd"};
    struct model_input in = {.prefix = "canary/",
                             .ns = "shop-ns",
                             .name = "shop",
                             .route = ROUTE,
                             .route_len = sizeof ROUTE - 1,
                             .weights = WEIGHTS,
                             .weights_len = sizeof WEIGHTS - 1,
                             .headers = HEADERS,
                             .headers_len = sizeof HEADERS - 1,
                             .revision = 1234};
    char err[512];
    if (model_build(&in, &route, err, sizeof err) != 0) {
        fprintf(stderr, "fixed route does not build: %s\n", err);
        abort();
    }
    desired[0] = traefik_render_ingressroute(&route, &o);
    desired[1] = traefik_render_middleware(&route, 0, &o);
    if (!desired[0] || !desired[1])
        abort();
}

static const cJSON *at(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    return b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
}

static bool same_str(const cJSON *a, const cJSON *b) {
    return cJSON_IsString(a) && cJSON_IsString(b) && !strcmp(a->valuestring, b->valuestring);
}

/* Every string entry of live's map (labels or annotations) that is not one
 * of ours must be in the merged map unchanged. */
static void check_kept(const cJSON *live, const cJSON *merged, const cJSON *ours,
                       const char *field) {
    const cJSON *lm = at(live, "metadata", NULL), *mm = at(merged, "metadata", NULL);
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(lm, field);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(mm, field);
    if (!cJSON_IsObject(l))
        return;
    const cJSON *c;
    cJSON_ArrayForEach(c, l) {
        if (!c->string || cJSON_GetObjectItemCaseSensitive(ours, c->string) ||
            cJSON_GetObjectItemCaseSensitive(l, c->string) != c)
            continue; /* ours, or a later duplicate key */
        const cJSON *got = cJSON_GetObjectItemCaseSensitive(m, c->string);
        FUZZ_CHECK(got && fuzz_json_equal(got, c), "%s '%s' set by someone else was dropped", field,
                   c->string);
    }
}

static void check_merge(const cJSON *live, const cJSON *want) {
    bool changed = false;
    cJSON *merged = traefik_merge_owned(live, want, &changed);
    FUZZ_CHECK(merged, "traefik_merge_owned returned NULL");
    FUZZ_CHECK(fuzz_json_equal(at(merged, "spec", NULL), at(want, "spec", NULL)),
               "merge lost the desired spec");
    FUZZ_CHECK(same_str(at(merged, "apiVersion", NULL), at(want, "apiVersion", NULL)) &&
                   same_str(at(merged, "kind", NULL), at(want, "kind", NULL)),
               "apiVersion/kind not desired");
    FUZZ_CHECK(same_str(at(at(merged, "metadata", NULL), "name", NULL),
                        at(at(want, "metadata", NULL), "name", NULL)) &&
                   same_str(at(at(merged, "metadata", NULL), "namespace", NULL),
                            at(at(want, "metadata", NULL), "namespace", NULL)),
               "name/namespace not desired");
    FUZZ_CHECK(traefik_is_managed(merged), "merged object lacks our label");
    const cJSON *ours = at(at(want, "metadata", NULL), "annotations", NULL), *a;
    const cJSON *got = at(at(merged, "metadata", NULL), "annotations", NULL);
    cJSON_ArrayForEach(a, ours) {
        FUZZ_CHECK(fuzz_json_equal(at(got, a->string, NULL), a), "annotation %s not set",
                   a->string);
    }
    check_kept(live, merged, at(at(want, "metadata", NULL), "labels", NULL), "labels");
    check_kept(live, merged, ours, "annotations");
    const cJSON *rv = at(at(live, "metadata", NULL), "resourceVersion", NULL);
    if (cJSON_IsObject(at(live, "metadata", NULL)) && cJSON_IsString(rv))
        FUZZ_CHECK(same_str(rv, at(at(merged, "metadata", NULL), "resourceVersion", NULL)),
                   "resourceVersion not kept: the write would not be optimistic");
    if (!changed)
        FUZZ_CHECK(cJSON_Compare(at(live, "spec", NULL), at(want, "spec", NULL), true) &&
                       traefik_is_managed(live),
                   "no change reported but live differs from desired");

    bool again = true;
    cJSON *second = traefik_merge_owned(merged, want, &again);
    FUZZ_CHECK(second && !again, "merging the merged object reports a change (write loop)");
    cJSON_Delete(second);
    cJSON_Delete(merged);
}

/* Remove the weight of every service apply_weights would touch, so the
 * rest of two objects can be compared. */
static void strip_weights(cJSON *obj) {
    cJSON *r;
    cJSON_ArrayForEach(r, at(at(obj, "spec", NULL), "routes", NULL)) {
        cJSON *s;
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(r, "services")) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
            for (size_t i = 0; i < route.n_weights; i++)
                if (cJSON_IsString(name) && !strcmp(name->valuestring, route.weights[i].service))
                    cJSON_DeleteItemFromObjectCaseSensitive(s, "weight");
        }
    }
}

static void check_weights(const cJSON *live) {
    cJSON *obj = cJSON_Duplicate(live, 1);
    if (!obj)
        abort();
    char err[256];
    bool changed = false;
    if (traefik_apply_weights(obj, &route, &changed, err, sizeof err) != 0) {
        FUZZ_CHECK(fuzz_json_equal(obj, live), "failed apply_weights changed the object (%s)", err);
        cJSON_Delete(obj);
        return;
    }
    const cJSON *r;
    cJSON_ArrayForEach(r, at(at(obj, "spec", NULL), "routes", NULL)) {
        const cJSON *s;
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(r, "services")) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
            for (size_t i = 0; i < route.n_weights; i++) {
                if (!cJSON_IsString(name) || strcmp(name->valuestring, route.weights[i].service))
                    continue;
                const cJSON *w = cJSON_GetObjectItemCaseSensitive(s, "weight");
                FUZZ_CHECK(cJSON_IsNumber(w) && w->valuedouble == (double)route.weights[i].weight,
                           "weight of '%s' not set", name->valuestring);
            }
        }
    }
    bool again = true;
    FUZZ_CHECK(traefik_apply_weights(obj, &route, &again, err, sizeof err) == 0 && !again,
               "apply_weights is not idempotent");
    cJSON *a = cJSON_Duplicate(obj, 1), *b = cJSON_Duplicate(live, 1);
    if (!a || !b)
        abort();
    strip_weights(a);
    strip_weights(b);
    FUZZ_CHECK(fuzz_json_equal(a, b), "apply_weights changed more than weights");
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(obj);
}

/* The informer's cache needs no client; its timer needs a loop, which runs
 * only to close it (freeing the cache). One for the whole run. */
static uv_loop_t *cache_loop(void) {
    static uv_loop_t loop;
    static bool ready;
    if (!ready && uv_loop_init(&loop) != 0)
        abort();
    ready = true;
    return &loop;
}

static void check_informer(const cJSON *input) {
    struct informer inf;
    /* informer_store drops managedFields from what it is given: compare
     * with the object as stored. */
    cJSON *obj = cJSON_Duplicate(input, 1);
    if (!obj)
        return;
    cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "metadata"),
                                            "managedFields");
    cJSON *given = cJSON_Duplicate(obj, 1);
    if (!given) {
        cJSON_Delete(obj);
        return;
    }
    if (informer_init(&inf, cache_loop(), NULL, NULL, "traefik.io", "v1alpha1", "ingressroutes",
                      NULL, NULL, NULL) < 0) {
        cJSON_Delete(given);
        cJSON_Delete(obj);
        return;
    }
    const char *ns = kobj_str(obj, "metadata", "namespace");
    const char *name = kobj_str(obj, "metadata", "name");
    const char *rv = kobj_str(obj, "metadata", "resourceVersion");
    informer_store(&inf, given);
    cJSON_Delete(given);
    if (ns && name && strlen(ns) <= MODEL_NS_MAX && strlen(name) <= MODEL_NAME_MAX) {
        const cJSON *got = informer_get(&inf, ns, name);
        /* The cache keeps the object as cJSON prints it, and cJSON prints a
         * number with 15 significant digits whenever reading that back comes
         * within DBL_EPSILON of it (a 17-digit port of 77777777777777777 loses
         * its last bits): compare with the object after the same round trip. */
        char *text = cJSON_PrintUnformatted(obj);
        cJSON *expect = text ? cJSON_Parse(text) : NULL;
        cJSON_free(text);
        if (!expect)
            abort();
        FUZZ_CHECK(got && fuzz_json_equal(got, expect), "stored object not found or changed");
        cJSON_Delete(expect);
        /* An older copy (our own write's answer arriving late) must not
         * replace it. */
        cJSON *older = cJSON_Duplicate(obj, 1);
        cJSON *md = cJSON_GetObjectItemCaseSensitive(older, "metadata");
        if (rv && kobj_rv_older("1", rv) && md && cJSON_IsObject(md)) {
            cJSON_DeleteItemFromObjectCaseSensitive(md, "resourceVersion");
            cJSON_AddStringToObject(md, "resourceVersion", "1");
            cJSON_AddStringToObject(older, "marker", "older");
            informer_store(&inf, older);
            FUZZ_CHECK(fuzz_json_equal(informer_get(&inf, ns, name), obj),
                       "an older resourceVersion replaced a newer one");
        }
        cJSON_Delete(older);
        informer_forget(&inf, ns, name);
        FUZZ_CHECK(!informer_get(&inf, ns, name), "informer_forget kept the object");
    }
    informer_close(&inf, NULL);
    uv_run(cache_loop(), UV_RUN_DEFAULT);
    cJSON_Delete(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!desired[0])
        setup();
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    if (!root)
        return 0;
    const cJSON *obj = root;
    const char *type = kobj_str(root, "type", NULL);
    const cJSON *inner = cJSON_GetObjectItemCaseSensitive(root, "object");
    if (type && cJSON_IsObject(inner))
        obj = inner;
    /* Objects with a key twice never come from the API server: exercise the
     * code on them, but the invariants assume real API JSON. */
    if (cJSON_IsObject(obj) && fuzz_json_dup_keys(obj)) {
        bool changed;
        char err[128];
        cJSON_Delete(traefik_merge_owned(obj, desired[0], &changed));
        cJSON *copy = cJSON_Duplicate(obj, 1);
        traefik_apply_weights(copy, &route, &changed, err, sizeof err);
        cJSON_Delete(copy);
    } else if (cJSON_IsObject(obj)) {
        const char *rv = kobj_str(obj, "metadata", "resourceVersion");
        const char *other = kobj_str(obj, "metadata", "uid");
        FUZZ_CHECK(!kobj_rv_older(rv, rv), "rv older than itself");
        FUZZ_CHECK(!(kobj_rv_older(rv, other) && kobj_rv_older(other, rv)), "rv order");
        FUZZ_CHECK(!(kobj_rv_older(rv, "123456") && kobj_rv_older("123456", rv)), "rv order");
        traefik_is_managed(obj);
        check_merge(obj, desired[0]);
        check_merge(obj, desired[1]);
        check_weights(obj);
        check_informer(obj);
    }
    cJSON_Delete(root);
    return 0;
}
