/* test_reconcile.c - the reconciler (bridge/core/reconcile.h) with the key
 * cache, against the Kubernetes API test server.
 *
 * Each test builds what the app builds: a key cache, three informers
 * listing and watching the Traefik kinds through the real kube client, and
 * a reconciler fed by the key cache's change callbacks. Keys go in with
 * keycache_put / keycache_delete / keycache_snapshot, as a source would
 * deliver them; what reached the API server is read back from the server
 * (its objects, its request log in arrival order). Every test has its own
 * namespace and key prefix, so objects of earlier tests in the shared
 * server are neither its own nor counted by its deletion guard.
 *
 * The test names say what each checks; together they cover create and
 * update order, 409 retries, both deletion policies, the deletion guard,
 * the namespace rules, patched mode, ownership refusals, bad input and a
 * rival writer.
 *
 * Run from tests/ (meson's workdir) or the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core/keycache.h"
#include "bridge/core/reconcile.h"
#include "kapi.h"
#include "sinks/informer.h"
#include "sinks/traefik.h"

#define GROUP "traefik.io"
#define ROUTE_DOC                                                                                  \
    "match: Host(`shop.example.com`)\n"                                                            \
    "services:\n"                                                                                  \
    "  - name: shop-v1\n"                                                                          \
    "    port: 80\n"                                                                               \
    "  - name: shop-v2\n"                                                                          \
    "    port: 80\n"
/* One rule that sets a request header: it gets a Middleware. */
#define HEADERS_DOC                                                                                \
    "- name: beta\n"                                                                               \
    "  header: X-Canary\n"                                                                         \
    "  value: always\n"                                                                            \
    "  service: shop-v2\n"                                                                         \
    "  setRequestHeaders: {X-Canary-Route: beta}\n"
#define WAIT_MS 10000

/* ---- the rig: key cache, informers, reconciler on the server ---- */

struct rig {
    struct kapi *k;
    struct logger log;
    struct kube_client *kc;
    struct informer inf[OBJ_NKINDS];
    struct keycache keys;
    struct reconciler rec;
    struct reconcile_settings cfg;
    char *allowed[1];
    char ns[64];
    char prefix[80];
    uint64_t rev; /* the source's revision counter */
    bool started;
    /* What the hooks saw. */
    char events[64][96]; /* "<Reason> <object name>" */
    size_t n_events;
    char event_msg[1024]; /* the last one's message */
    unsigned statuses;    /* status hook calls */
    unsigned dropped;     /* ... of them with the route gone */
};

static void hook_event(void *user, const cJSON *obj, const char *type, const char *reason,
                       const char *message) {
    struct rig *r = user;
    (void)type;
    if (r->n_events < sizeof r->events / sizeof *r->events)
        snprintf(r->events[r->n_events++], sizeof r->events[0], "%s %s", reason,
                 kobj_str(obj, "metadata", "name"));
    snprintf(r->event_msg, sizeof r->event_msg, "%s", message);
}

static void hook_status(void *user, const char *route_id, const struct route_status *s) {
    struct rig *r = user;
    (void)route_id;
    r->statuses++;
    if (!s)
        r->dropped++;
}

static size_t events_with(const struct rig *r, const char *reason) {
    size_t n = 0, len = strlen(reason);
    for (size_t i = 0; i < r->n_events; i++)
        n += strncmp(r->events[i], reason, len) == 0 && r->events[i][len] == ' ';
    return n;
}

static bool all_synced(void *arg) {
    struct rig *r = arg;
    for (int i = 0; i < OBJ_NKINDS; i++)
        if (!r->inf[i].synced)
            return false;
    return true;
}

/* Per-test setup: the rig with default settings, not started yet (a test
 * changes r->cfg first, then calls rig_start). */
static int rig_setup(void **state) {
    struct kapi *k = *state;
    struct rig *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->k = k;
    logger_init(&r->log, LOG_LVL_WARN);
    r->log.out = stderr;
    r->cfg.policy = POLICY_UPSERT_ONLY;
    r->cfg.max_in_flight = 16;
    r->cfg.burst_quiet_ms = 30;
    r->cfg.max_delete_percent = 50;
    k->data = r;
    return 0;
}

static void on_key(void *user, const char *route_id) {
    reconciler_source_changed(&((struct rig *)user)->rec, route_id, true);
}

static void on_key_listed(void *user, const char *route_id) {
    reconciler_source_changed(&((struct rig *)user)->rec, route_id, false);
}

static void create_namespace(struct kapi *k, const char *ns) {
    char body[200];
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"%s\"}}", ns);
    kapi_ctl_ok(k, "POST", "/api/v1/namespaces", body);
}

/* Start everything for namespace ns (created unless create_ns is false):
 * informers synced, reconciler handing out passes. */
static void rig_start(struct rig *r, const char *ns, bool create_ns) {
    static const informer_change_cb changed[OBJ_NKINDS] = {reconciler_middleware_changed,
                                                           reconciler_traefikservice_changed,
                                                           reconciler_ingressroute_changed};
    snprintf(r->ns, sizeof r->ns, "%s", ns);
    snprintf(r->prefix, sizeof r->prefix, "canary-%s/", ns);
    if (create_ns)
        create_namespace(r->k, ns);
    r->kc = kapi_client_new(r->k, false);
    assert_non_null(r->kc);
    assert_int_equal(kube_client_set_field_manager(r->kc, "canary-bridge"), 0);
    assert_int_equal(keycache_init(&r->keys, r->prefix, &r->log), 0);
    struct informer *infs[OBJ_NKINDS];
    for (int i = 0; i < OBJ_NKINDS; i++) {
        assert_int_equal(informer_init(&r->inf[i], &r->k->loop, r->kc, &r->log, GROUP, "v1alpha1",
                                       obj_plural[i], changed[i], NULL, &r->rec),
                         0);
        infs[i] = &r->inf[i];
    }
    struct render_opts ro = {GROUP, RULE_SYNTAX_V3, r->prefix, "etcd"};
    assert_int_equal(
        reconciler_init(&r->rec, &r->k->loop, &r->log, &r->cfg, &r->keys, r->kc, infs, &ro), 0);
    r->rec.field_manager = "canary-bridge";
    r->rec.hooks = (struct reconcile_hooks){.event = hook_event, .status = hook_status, .user = r};
    r->started = true;
    for (int i = 0; i < OBJ_NKINDS; i++)
        assert_int_equal(informer_start(&r->inf[i]), 0);
    assert_true(support_run_until(&r->k->loop, all_synced, r, WAIT_MS));
    reconciler_start(&r->rec);
}

static int rig_teardown(void **state) {
    struct kapi *k = *state;
    struct rig *r = k->data;
    if (!r)
        return 0;
    if (r->started) {
        reconciler_close(&r->rec);
        for (int i = 0; i < OBJ_NKINDS; i++)
            informer_close(&r->inf[i], NULL);
        kube_client_close(r->kc);
        support_drain(&k->loop);
        reconciler_free(&r->rec);
        keycache_free(&r->keys);
    }
    if (r->kc)
        kube_client_free(r->kc);
    support_drain(&k->loop);
    free(r);
    k->data = NULL;
    kapi_faults_clear(k);
    return 0;
}

/* ---- keys, as a source delivers them ---- */

static void key_of(const struct rig *r, const char *route, const char *leaf, char *out,
                   size_t outlen) {
    snprintf(out, outlen, "%s%s/%s/%s", r->prefix, r->ns, route, leaf);
}

static void put_key(struct rig *r, const char *route, const char *leaf, const char *value) {
    char key[256];
    key_of(r, route, leaf, key, sizeof key);
    struct source_kv kv = {key, value, strlen(value), ++r->rev};
    assert_int_equal(keycache_put(&r->keys, &kv, on_key, r), 0);
}

static void delete_key(struct rig *r, const char *route, const char *leaf) {
    char key[256];
    key_of(r, route, leaf, key, sizeof key);
    ++r->rev;
    assert_int_equal(keycache_delete(&r->keys, key, on_key, r), 0);
}

/* A route with a route document and weights v1/v2. */
static void put_route(struct rig *r, const char *route, int v1, int v2) {
    char w[64];
    put_key(r, route, "route", ROUTE_DOC);
    snprintf(w, sizeof w, "shop-v1=%d, shop-v2=%d", v1, v2);
    put_key(r, route, "weights", w);
}

/* A complete listing of the source (a snapshot, as after a re-list):
 * route document and weights 90/10 for each route named. */
static void list_routes(struct rig *r, const char *const *routes, size_t n) {
    struct source_kv kvs[16];
    char keys[16][256];
    assert_true(2 * n <= 16);
    ++r->rev;
    for (size_t i = 0; i < n; i++) {
        key_of(r, routes[i], "route", keys[2 * i], sizeof keys[0]);
        key_of(r, routes[i], "weights", keys[2 * i + 1], sizeof keys[0]);
        kvs[2 * i] = (struct source_kv){keys[2 * i], ROUTE_DOC, strlen(ROUTE_DOC), r->rev};
        kvs[2 * i + 1] = (struct source_kv){keys[2 * i + 1], "shop-v1=90, shop-v2=10",
                                            strlen("shop-v1=90, shop-v2=10"), r->rev};
    }
    assert_int_equal(keycache_snapshot(&r->keys, kvs, 2 * n, r->rev, on_key_listed, r), 0);
}

static bool rec_idle(void *arg) {
    struct rig *r = arg;
    return reconciler_idle(&r->rec) && reconciler_jobs_in_flight(&r->rec) == 0;
}

/* Run until the reconciler has nothing queued, in flight or delayed. */
static void settle(struct rig *r) {
    assert_true(support_run_until(&r->k->loop, rec_idle, r, WAIT_MS));
}

/* ---- reading the server ---- */

static cJSON *get_obj(struct rig *r, const char *plural, const char *name, long *status) {
    char path[300];
    snprintf(path, sizeof path, "/apis/" GROUP "/v1alpha1/namespaces/%s/%s/%s", r->ns, plural,
             name);
    return kapi_ctl(r->k, "GET", path, NULL, status);
}

/* The live object, which must exist (caller frees). */
static cJSON *must_get(struct rig *r, const char *plural, const char *name) {
    long status;
    cJSON *o = get_obj(r, plural, name, &status);
    assert_int_equal(status, 200);
    return o;
}

static bool exists(struct rig *r, const char *plural, const char *name) {
    long status;
    cJSON_Delete(get_obj(r, plural, name, &status));
    return status == 200;
}

/* Objects of a kind in the test's namespace. */
static int count_objs(struct rig *r, const char *plural) {
    char path[300];
    snprintf(path, sizeof path, "/apis/" GROUP "/v1alpha1/namespaces/%s/%s", r->ns, plural);
    long status;
    cJSON *list = kapi_ctl(r->k, "GET", path, NULL, &status);
    assert_int_equal(status, 200);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(list, "items"));
    cJSON_Delete(list);
    return n;
}

/* The weight of service svc in the last route of an IngressRoute (-1 none). */
static int weight_of(const cJSON *ir, const char *svc) {
    const cJSON *routes = cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes");
    const cJSON *last = cJSON_GetArrayItem(routes, cJSON_GetArraySize(routes) - 1);
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(last, "services")) {
        const char *name = kobj_str(s, "name", NULL);
        const cJSON *w = cJSON_GetObjectItem(s, "weight");
        if (name && strcmp(name, svc) == 0 && cJSON_IsNumber(w))
            return (int)w->valuedouble;
    }
    return -1;
}

struct want_weight {
    struct rig *r;
    const char *name;
    int v1;
};

static bool ir_weight_is(void *arg) {
    struct want_weight *w = arg;
    long status;
    cJSON *ir = get_obj(w->r, "ingressroutes", w->name, &status);
    bool ok = status == 200 && weight_of(ir, "shop-v1") == w->v1;
    cJSON_Delete(ir);
    return ok;
}

static void wait_weight(struct rig *r, const char *name, int v1) {
    struct want_weight w = {r, name, v1};
    assert_true(support_run_until(&r->k->loop, ir_weight_is, &w, WAIT_MS));
}

/* Route shop at 90/10 (with HEADERS_DOC when headers) applied, and the
 * watch echoes of our own writes settled too. */
static void apply_shop(struct rig *r, bool headers) {
    put_route(r, "shop", 90, 10);
    if (headers)
        put_key(r, "shop", "headers", HEADERS_DOC);
    settle(r);
    wait_weight(r, "shop", 90);
    settle(r);
}

/* The requests to Traefik kinds in the test's namespace since seq, as
 * "METHOD plural/name STATUS", in arrival order (printed too); returns how
 * many. GETs only with gets (the test's own reads are GETs too). Bodies (or
 * NULL) into bodies[] when given (caller frees each). */
static int requests_since(struct rig *r, int seq, bool gets, char out[][128], cJSON **bodies,
                          int max) {
    char q[64], base[160];
    snprintf(q, sizeof q, "/_test/requests?since=%d", seq);
    snprintf(base, sizeof base, "/apis/" GROUP "/v1alpha1/namespaces/%s/", r->ns);
    cJSON *log = kapi_ctl(r->k, "GET", q, NULL, NULL);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log) {
        const char *method = kobj_str(e, "method", NULL), *path = kobj_str(e, "path", NULL);
        if (!method || !path || strncmp(path, base, strlen(base)) != 0 || n >= max ||
            (!gets && strcmp(method, "GET") == 0))
            continue;
        const cJSON *st = cJSON_GetObjectItem(e, "status");
        const cJSON *body = cJSON_GetObjectItem(e, "body");
        const char *rest = path + strlen(base);
        const char *name = strchr(rest, '/') ? "" : kobj_str(body, "metadata", "name");
        snprintf(out[n], 128, "%s %s%s%s %d", method, rest, name && *name ? "/" : "",
                 name ? name : "", cJSON_IsNumber(st) ? (int)st->valuedouble : 0);
        if (bodies)
            bodies[n] = body ? cJSON_Duplicate(body, 1) : NULL;
        print_message("  %s\n", out[n++]); /* for the reader of a failure */
    }
    cJSON_Delete(log);
    return n;
}

static int writes_since(struct rig *r, int seq, char out[][128], cJSON **bodies, int max) {
    return requests_since(r, seq, false, out, bodies, max);
}

static int count_method(char seen[][128], int n, const char *method) {
    int c = 0;
    for (int i = 0; i < n; i++)
        c += strncmp(seen[i], method, strlen(method)) == 0 && seen[i][strlen(method)] == ' ';
    return c;
}

static const struct route_status *status_of(struct rig *r, const char *route) {
    char id[KEYCACHE_ROUTE_ID_MAX];
    keycache_route_id(id, sizeof id, r->ns, route);
    return reconciler_status(&r->rec, id);
}

/* The route's status record, which must exist. */
static const struct route_status *must_status(struct rig *r, const char *route) {
    const struct route_status *s = status_of(r, route);
    assert_non_null(s);
    return s;
}

struct route_is {
    struct rig *r;
    const char *route;
    enum route_state state;
};

static bool route_state_is(void *arg) {
    struct route_is *w = arg;
    const struct route_status *s = status_of(w->r, w->route);
    return s && s->state == w->state;
}

static bool route_fighting(void *arg) {
    struct route_is *w = arg;
    const struct route_status *s = status_of(w->r, w->route);
    return s && s->fighting;
}

/* ---- tests ---- */

/* An owned route with a header rule: the Middleware is created before the
 * IngressRoute that references it, both labelled as managed from our
 * prefix and annotated with the route; the status records the IngressRoute's
 * resourceVersion and an Applied event names the weights. */
static void test_owned_route_creates_middleware_before_ingressroute(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rc-create", true);
    int seq = kapi_last_seq(r->k);
    put_route(r, "shop", 90, 10);
    put_key(r, "shop", "headers", HEADERS_DOC);
    settle(r);
    wait_weight(r, "shop", 90);

    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 2);
    assert_int_equal(strncmp(seen[0], "POST middlewares/shop-beta-", 27), 0);
    assert_string_equal(seen[1], "POST ingressroutes/shop 201");

    cJSON *ir = must_get(r, "ingressroutes", "shop");
    const cJSON *meta = cJSON_GetObjectItem(ir, "metadata");
    assert_string_equal(kobj_str(meta, "labels", TRAEFIK_LABEL_MANAGED_BY), TRAEFIK_MANAGER);
    assert_string_equal(kobj_str(meta, "labels", RECONCILE_ROUTE_LABEL), "shop");
    assert_string_equal(kobj_str(meta, "annotations", RECONCILE_ROUTE_ANNOT), "shop");
    assert_string_equal(kobj_str(meta, "annotations", TRAEFIK_ANNOT_PREFIX), r->prefix);
    assert_int_equal(weight_of(ir, "shop-v1"), 90);
    assert_int_equal(weight_of(ir, "shop-v2"), 10);
    const struct route_status *s = must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_APPLIED);
    assert_null(s->message);
    assert_int_equal(s->revision, r->rev);
    assert_non_null(s->resource_version);
    assert_string_equal(s->resource_version, kobj_str(meta, "resourceVersion", NULL));
    cJSON_Delete(ir);
    assert_int_equal(events_with(r, "Applied"), 1);
    assert_non_null(strstr(r->event_msg, "weights shop-v1=90 shop-v2=10 from etcd revision"));
    assert_int_equal(count_objs(r, "middlewares"), 1);
    assert_int_equal(r->rec.stats.writes, 2);
}

/* A weight change is one PUT of the IngressRoute (the Middleware is
 * unchanged); the same bytes put again change nothing, and a re-check of
 * an unchanged route writes nothing. */
static void test_weight_change_is_one_put_and_unchanged_keys_write_nothing(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rc-update", true);
    apply_shop(r, true);

    int seq = kapi_last_seq(r->k);
    put_key(r, "shop", "weights", "shop-v1=50, shop-v2=50");
    settle(r);
    wait_weight(r, "shop", 50);
    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 1);
    assert_string_equal(seen[0], "PUT ingressroutes/shop 200");
    cJSON *ir = must_get(r, "ingressroutes", "shop");
    assert_int_equal(weight_of(ir, "shop-v2"), 50);
    cJSON_Delete(ir);
    settle(r);

    /* The same weights again, and a re-check: nothing written. */
    seq = kapi_last_seq(r->k);
    uint64_t passes = r->rec.stats.passes;
    put_key(r, "shop", "weights", "shop-v1=50, shop-v2=50");
    reconciler_enqueue_all(&r->rec);
    settle(r);
    assert_true(r->rec.stats.passes > passes);
    n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
}

/* Someone else wrote the IngressRoute and our cache has not seen it (its
 * watch is stopped): our PUT carries a stale resourceVersion and gets a
 * real 409. The pass reads the object again and retries once with the
 * fresh resourceVersion, which succeeds. */
static void test_conflict_rereads_and_retries_with_fresh_resource_version(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rc-conflict", true);
    apply_shop(r, false);

    informer_stop(&r->inf[OBJ_INGRESSROUTE]); /* the cache keeps the old version */
    cJSON *ir = must_get(r, "ingressroutes", "shop");
    const char *stale = kobj_str(ir, "metadata", "resourceVersion");
    char stale_rv[32];
    snprintf(stale_rv, sizeof stale_rv, "%s", stale);
    cJSON *labels = cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "metadata"), "labels");
    cJSON_AddStringToObject(labels, "team", "web"); /* a change of someone else's */
    char *body = cJSON_PrintUnformatted(ir);
    long status;
    cJSON *after =
        kapi_ctl(r->k, "PUT", "/apis/" GROUP "/v1alpha1/namespaces/rc-conflict/ingressroutes/shop",
                 body, &status);
    assert_int_equal(status, 200);
    char fresh_rv[32];
    snprintf(fresh_rv, sizeof fresh_rv, "%s", kobj_str(after, "metadata", "resourceVersion"));
    assert_string_not_equal(fresh_rv, stale_rv);
    cJSON_Delete(after);
    free(body);
    cJSON_Delete(ir);

    int seq = kapi_last_seq(r->k);
    put_key(r, "shop", "weights", "shop-v1=70, shop-v2=30");
    settle(r);
    char seen[16][128];
    cJSON *bodies[16] = {0};
    int n = requests_since(r, seq, true, seen, bodies, 16);
    assert_int_equal(n, 3);
    assert_string_equal(seen[0], "PUT ingressroutes/shop 409");
    assert_string_equal(seen[1], "GET ingressroutes/shop 200");
    assert_string_equal(seen[2], "PUT ingressroutes/shop 200");
    assert_string_equal(kobj_str(bodies[0], "metadata", "resourceVersion"), stale_rv);
    assert_string_equal(kobj_str(bodies[2], "metadata", "resourceVersion"), fresh_rv);
    for (int i = 0; i < n; i++)
        cJSON_Delete(bodies[i]);
    assert_int_equal(r->rec.stats.conflicts, 1);
    ir = must_get(r, "ingressroutes", "shop");
    assert_int_equal(weight_of(ir, "shop-v1"), 70);
    assert_string_equal(kobj_str(cJSON_GetObjectItem(ir, "metadata"), "labels", "team"), "web");
    cJSON_Delete(ir);
    assert_int_equal(must_status(r, "shop")->state, ROUTE_APPLIED);
}

static bool ir_gone(void *arg) {
    struct rig *r = arg;
    return !exists(r, "ingressroutes", "shop");
}

/* Policy sync: when a route's keys are all gone, its IngressRoute is
 * deleted first, then the Middleware it referenced (with preconditions on
 * the version judged), and the route's status is dropped. */
static void test_sync_deletes_ingressroute_before_its_middleware(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    r->cfg.policy = POLICY_SYNC;
    rig_start(r, "rc-sync", true);
    put_route(r, "cart", 90, 10); /* one route of two: the guard lets it go */
    apply_shop(r, true);
    assert_int_equal(count_objs(r, "middlewares"), 1);

    int seq = kapi_last_seq(r->k);
    delete_key(r, "shop", "headers");
    delete_key(r, "shop", "weights");
    delete_key(r, "shop", "route");
    settle(r);
    assert_true(support_run_until(&r->k->loop, ir_gone, r, WAIT_MS));
    char seen[16][128];
    cJSON *bodies[16] = {0};
    int n = writes_since(r, seq, seen, bodies, 16);
    assert_int_equal(n, 2);
    assert_string_equal(seen[0], "DELETE ingressroutes/shop 200");
    assert_int_equal(strncmp(seen[1], "DELETE middlewares/shop-beta-", 29), 0);
    assert_non_null(kobj_str(bodies[0], "preconditions", "resourceVersion"));
    for (int i = 0; i < n; i++)
        cJSON_Delete(bodies[i]);
    assert_int_equal(count_objs(r, "middlewares"), 0);
    assert_true(exists(r, "ingressroutes", "cart"));
    assert_null(status_of(r, "shop"));
    assert_true(r->dropped >= 1);
    assert_false(r->rec.guard.holding);
}

/* Policy upsert-only (the default): keys gone, objects stay. */
static void test_upsert_only_keeps_objects_when_keys_go(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rc-upsert", true);
    apply_shop(r, false);
    int seq = kapi_last_seq(r->k);
    delete_key(r, "shop", "weights");
    delete_key(r, "shop", "route");
    settle(r);
    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
    assert_true(exists(r, "ingressroutes", "shop"));
    assert_null(status_of(r, "shop"));
}

/* The guard's token, read from its /readyz line ("... put P = 0123abcd"). */
static void guard_token(struct rig *r, char token[16]) {
    char line[512];
    assert_true(reconciler_guard_describe(&r->rec, line, sizeof line));
    print_message("  %s\n", line);
    const char *eq = strrchr(line, '=');
    assert_non_null(eq);
    snprintf(token, 16, "%s", eq + 2);
    assert_int_equal(strlen(token), 8);
}

static bool all_three_gone(void *arg) {
    struct rig *r = arg;
    return count_objs(r, "ingressroutes") == 0;
}

/* Policy sync, three routes, and a listing without any of their keys: more
 * than max_delete_percent (all of them) would go. The guard holds: nothing
 * deleted, one DeletionHeld event per route, /readyz names the token.
 * Putting the token into P_confirm-delete lets the deletions go ahead. */
static void test_deletion_guard_holds_a_mass_deletion_until_confirmed(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    r->cfg.policy = POLICY_SYNC;
    rig_start(r, "rc-guard", true);
    static const char *const routes[] = {"a", "b", "c"};
    list_routes(r, routes, 3);
    settle(r);
    assert_int_equal(count_objs(r, "ingressroutes"), 3);
    settle(r);
    char line[512];
    assert_false(reconciler_guard_describe(&r->rec, line, sizeof line));
    assert_string_equal(line, "");

    int seq = kapi_last_seq(r->k);
    list_routes(r, NULL, 0);
    settle(r);
    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(count_method(seen, n, "DELETE"), 0);
    assert_int_equal(count_objs(r, "ingressroutes"), 3);
    assert_true(r->rec.guard.holding);
    assert_int_equal(r->rec.guard.gone, 3);
    assert_int_equal(r->rec.guard.owned, 3);
    assert_int_equal(events_with(r, "DeletionHeld"), 3);
    char token[16];
    guard_token(r, token);

    /* A wrong token confirms nothing. */
    char confirm[128];
    snprintf(confirm, sizeof confirm, "%s%s", r->prefix, KEYCACHE_CONFIRM_KEY);
    struct source_kv kv = {confirm, "00000000", 8, ++r->rev};
    assert_int_equal(keycache_put(&r->keys, &kv, on_key, r), 0);
    settle(r);
    assert_true(r->rec.guard.holding);
    assert_int_equal(count_objs(r, "ingressroutes"), 3);

    char value[24];
    snprintf(value, sizeof value, "%s\n", token); /* as `echo` writes it */
    kv = (struct source_kv){confirm, value, strlen(value), ++r->rev};
    assert_int_equal(keycache_put(&r->keys, &kv, on_key, r), 0);
    assert_true(support_run_until(&r->k->loop, all_three_gone, r, WAIT_MS));
    settle(r);
    assert_false(r->rec.guard.holding);
    n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(count_method(seen, n, "DELETE"), 3);
}

/* The same mass deletion, then the keys come back (a restore): the hold
 * ends by itself and nothing was ever deleted. */
static void test_deletion_guard_ends_when_the_keys_return(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    r->cfg.policy = POLICY_SYNC;
    rig_start(r, "rc-restore", true);
    static const char *const routes[] = {"a", "b", "c"};
    list_routes(r, routes, 3);
    settle(r);
    settle(r);
    int seq = kapi_last_seq(r->k);
    list_routes(r, NULL, 0);
    settle(r);
    assert_true(r->rec.guard.holding);
    list_routes(r, routes, 3);
    settle(r);
    assert_false(r->rec.guard.holding);
    char line[512];
    assert_false(reconciler_guard_describe(&r->rec, line, sizeof line));
    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(count_method(seen, n, "DELETE"), 0);
    assert_int_equal(count_objs(r, "ingressroutes"), 3);
    assert_int_equal(r->rec.guard.holds, 1);
}

/* reconcile.namespaces: a route outside the allow-list is an error in its
 * status, and no request is made for it. */
static void test_namespace_outside_allow_list_is_refused_without_a_request(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    r->allowed[0] = "rc-elsewhere";
    r->cfg.namespaces = r->allowed;
    r->cfg.n_namespaces = 1;
    rig_start(r, "rc-allow", true);
    int seq = kapi_last_seq(r->k);
    put_route(r, "shop", 90, 10);
    settle(r);
    const struct route_status *s = must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    assert_string_equal(s->message, "namespace rc-allow is not in reconcile.namespaces");
    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
    assert_false(exists(r, "ingressroutes", "shop"));
}

/* A route in a namespace that does not exist: one create, answered 404
 * about the namespace; an error naming it in the status, and the route is
 * retried later (delayed in the queue), not at once. */
static void test_missing_namespace_is_an_error_retried_later(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rc-nowhere", false);
    int seq = kapi_last_seq(r->k);
    put_route(r, "shop", 90, 10);
    struct route_is err = {r, "shop", ROUTE_ERROR};
    assert_true(support_run_until(&r->k->loop, route_state_is, &err, WAIT_MS));
    const struct route_status *s = must_status(r, "shop");
    assert_int_equal(reconciler_jobs_in_flight(&r->rec), 0);
    assert_non_null(s->message);
    assert_non_null(strstr(s->message, "namespace rc-nowhere does not exist"));
    assert_int_equal(workqueue_delayed(&r->rec.wq), 1);
    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 1);
    assert_string_equal(seen[0], "POST ingressroutes/shop 404");
}

/* Create an IngressRoute no canary-bridge manages (as Helm would). */
static void create_foreign_ir(struct rig *r, const char *name) {
    char path[200], body[1024];
    snprintf(path, sizeof path, "/apis/" GROUP "/v1alpha1/namespaces/%s/ingressroutes", r->ns);
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"" GROUP "/v1alpha1\",\"kind\":\"IngressRoute\","
             "\"metadata\":{\"name\":\"%s\",\"labels\":{\"team\":\"web\"}},"
             "\"spec\":{\"entryPoints\":[\"web\"],\"routes\":[{\"kind\":\"Rule\","
             "\"match\":\"Host(`shop.example.com`)\",\"services\":["
             "{\"name\":\"shop-v1\",\"port\":80,\"weight\":1},"
             "{\"name\":\"shop-v2\",\"port\":80,\"weight\":1}]}]}}",
             name);
    kapi_ctl_ok(r->k, "POST", path, body);
}

struct cached {
    struct rig *r;
    const char *name;
};

static bool ir_cached(void *arg) {
    struct cached *c = arg;
    return informer_rv(&c->r->inf[OBJ_INGRESSROUTE], c->r->ns, c->name) != NULL;
}

/* Patched mode (weights without a route key): only the weights of an
 * existing IngressRoute change; its other labels stay and it does not
 * become managed. */
static void test_patched_mode_sets_only_weights_on_a_foreign_ingressroute(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rc-patched", true);
    create_foreign_ir(r, "shop");
    struct cached c = {r, "shop"};
    assert_true(support_run_until(&r->k->loop, ir_cached, &c, WAIT_MS));
    int seq = kapi_last_seq(r->k);
    put_key(r, "shop", "weights", "shop-v1=70, shop-v2=30");
    settle(r);
    wait_weight(r, "shop", 70);
    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 1);
    assert_string_equal(seen[0], "PUT ingressroutes/shop 200");
    cJSON *ir = must_get(r, "ingressroutes", "shop");
    const cJSON *meta = cJSON_GetObjectItem(ir, "metadata");
    assert_int_equal(weight_of(ir, "shop-v2"), 30);
    assert_string_equal(kobj_str(meta, "labels", "team"), "web");
    assert_null(kobj_str(meta, "labels", TRAEFIK_LABEL_MANAGED_BY));
    assert_null(kobj_str(meta, "annotations", TRAEFIK_ANNOT_PREFIX));
    cJSON_Delete(ir);
    assert_int_equal(must_status(r, "shop")->state, ROUTE_APPLIED);
    assert_int_equal(events_with(r, "Applied"), 1);
}

/* Owned mode (a route key) never takes over an IngressRoute it does not
 * manage: an error, no write. */
static void test_owned_mode_refuses_to_take_over_a_foreign_ingressroute(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rc-takeover", true);
    create_foreign_ir(r, "shop");
    struct cached c = {r, "shop"};
    assert_true(support_run_until(&r->k->loop, ir_cached, &c, WAIT_MS));
    int seq = kapi_last_seq(r->k);
    put_route(r, "shop", 90, 10);
    settle(r);
    const struct route_status *s = must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    assert_non_null(strstr(s->message, "is not managed by canary-bridge"));
    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
    cJSON *ir = must_get(r, "ingressroutes", "shop");
    assert_int_equal(weight_of(ir, "shop-v1"), 1);
    cJSON_Delete(ir);
    assert_int_equal(events_with(r, "RouteFailed"), 1);
}

/* Bad weights fail only their route: the status names the key, the
 * objects keep their last good weights, nothing is written; good weights
 * recover it. */
static void test_bad_weights_fail_the_route_and_keep_its_objects(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rc-bad", true);
    apply_shop(r, false);
    int seq = kapi_last_seq(r->k);
    put_key(r, "shop", "weights", "shop-v1=lots, shop-v2=10");
    settle(r);
    const struct route_status *s = must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    char key[200];
    key_of(r, "shop", "weights", key, sizeof key);
    assert_non_null(strstr(s->message, key));
    char seen[16][128];
    int n = writes_since(r, seq, seen, NULL, 16);
    assert_int_equal(n, 0);
    cJSON *ir = must_get(r, "ingressroutes", "shop");
    assert_int_equal(weight_of(ir, "shop-v1"), 90);
    cJSON_Delete(ir);
    put_key(r, "shop", "weights", "shop-v1=80, shop-v2=20");
    settle(r);
    wait_weight(r, "shop", 80);
    assert_int_equal(must_status(r, "shop")->state, ROUTE_APPLIED);
}

/* Another writer (field manager "rival") keeps setting other weights on
 * our IngressRoute. Each undo is answered with one rewrite, until the third
 * in a row: then the route is marked as fought over (an error naming the
 * rival, a WritesUndone event), and the next rewrite waits a backoff
 * period instead of following at once. */
static void test_rival_writer_is_named_and_slowed_down(void **state) {
    struct rig *r = ((struct kapi *)*state)->data;
    rig_start(r, "rc-rival", true);
    apply_shop(r, false);
    for (int i = 1; i <= RECONCILE_FIGHT_UNDOS; i++) {
        cJSON *ir = must_get(r, "ingressroutes", "shop");
        cJSON *routes = cJSON_GetObjectItem(cJSON_GetObjectItem(ir, "spec"), "routes");
        cJSON *svcs = cJSON_GetObjectItem(cJSON_GetArrayItem(routes, 0), "services");
        cJSON_ReplaceItemInObject(cJSON_GetArrayItem(svcs, 0), "weight", cJSON_CreateNumber(50));
        cJSON_ReplaceItemInObject(cJSON_GetArrayItem(svcs, 1), "weight", cJSON_CreateNumber(50));
        char *body = cJSON_PrintUnformatted(ir);
        kapi_ctl_ok(r->k, "PUT",
                    "/apis/" GROUP
                    "/v1alpha1/namespaces/rc-rival/ingressroutes/shop?fieldManager=rival",
                    body);
        free(body);
        cJSON_Delete(ir);
        if (i < RECONCILE_FIGHT_UNDOS) {
            wait_weight(r, "shop", 90); /* undone at once */
            settle(r);
            assert_int_equal(must_status(r, "shop")->state, ROUTE_APPLIED);
        }
    }
    /* The third undo: judged, named, and the pass that judged it held its
     * rewrite back (the route waits in the queue). */
    struct route_is fight = {r, "shop", ROUTE_ERROR};
    assert_true(support_run_until(&r->k->loop, route_fighting, &fight, WAIT_MS));
    cJSON *ir = must_get(r, "ingressroutes", "shop");
    assert_int_equal(weight_of(ir, "shop-v1"), 50);
    cJSON_Delete(ir);
    assert_int_equal(reconciler_jobs_in_flight(&r->rec), 0);
    assert_int_equal(workqueue_delayed(&r->rec.wq), 1);
    const struct route_status *s = must_status(r, "shop");
    assert_int_equal(s->state, ROUTE_ERROR);
    assert_non_null(strstr(s->message, "another writer, field manager \"rival\""));
    assert_string_equal(s->rival, "rival");
    assert_int_equal(r->rec.stats.undone, RECONCILE_FIGHT_UNDOS);
    assert_int_equal(events_with(r, "WritesUndone"), 1);
    /* After the backoff, one rewrite; and a change of the keys ends it. */
    wait_weight(r, "shop", 90);
    put_key(r, "shop", "weights", "shop-v1=80, shop-v2=20");
    settle(r);
    wait_weight(r, "shop", 80);
    assert_false(must_status(r, "shop")->fighting);
    assert_int_equal(must_status(r, "shop")->state, ROUTE_APPLIED);
}

#define RIG_TEST(t) cmocka_unit_test_setup_teardown(t, rig_setup, rig_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        RIG_TEST(test_owned_route_creates_middleware_before_ingressroute),
        RIG_TEST(test_weight_change_is_one_put_and_unchanged_keys_write_nothing),
        RIG_TEST(test_conflict_rereads_and_retries_with_fresh_resource_version),
        RIG_TEST(test_sync_deletes_ingressroute_before_its_middleware),
        RIG_TEST(test_upsert_only_keeps_objects_when_keys_go),
        RIG_TEST(test_deletion_guard_holds_a_mass_deletion_until_confirmed),
        RIG_TEST(test_deletion_guard_ends_when_the_keys_return),
        RIG_TEST(test_namespace_outside_allow_list_is_refused_without_a_request),
        RIG_TEST(test_missing_namespace_is_an_error_retried_later),
        RIG_TEST(test_patched_mode_sets_only_weights_on_a_foreign_ingressroute),
        RIG_TEST(test_owned_mode_refuses_to_take_over_a_foreign_ingressroute),
        RIG_TEST(test_bad_weights_fail_the_route_and_keep_its_objects),
        RIG_TEST(test_rival_writer_is_named_and_slowed_down),
    };
    return cmocka_run_group_tests(tests, kapi_setup, kapi_teardown);
}
