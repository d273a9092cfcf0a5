/* rig.c - the reconciler with the key cache on the Kubernetes API test
 * server; see rig.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rig.h"

/* ---- hooks ---- */

static void hook_event(void *user, const cJSON *obj, const char *type, const char *reason,
                       const char *message) {
    struct rig *r = user;
    if (r->n_events < sizeof r->events / sizeof *r->events) {
        snprintf(r->event_type[r->n_events], sizeof r->event_type[0], "%s", type);
        snprintf(r->events[r->n_events++], sizeof r->events[0], "%s %s", reason,
                 kobj_str(obj, "metadata", "name"));
    }
    snprintf(r->event_msg, sizeof r->event_msg, "%s", message);
}

static void hook_status(void *user, const char *route_id, const struct route_status *s) {
    struct rig *r = user;
    (void)route_id;
    r->statuses++;
    if (!s)
        r->dropped++;
}

static void hook_backend(void *user, const char *route_id, const char *service, bool unready) {
    struct rig *r = user;
    char what[128];
    snprintf(what, sizeof what, "%s %s", route_id, service);
    for (size_t i = 0; i < r->n_unready; i++) {
        if (strcmp(r->unready[i], what) == 0) {
            if (!unready)
                memcpy(r->unready[i], r->unready[--r->n_unready], sizeof r->unready[0]);
            return;
        }
    }
    if (unready && r->n_unready < sizeof r->unready / sizeof *r->unready)
        snprintf(r->unready[r->n_unready++], sizeof r->unready[0], "%s", what);
}

size_t rig_events_with(const struct rig *r, const char *reason) {
    size_t n = 0, len = strlen(reason);
    for (size_t i = 0; i < r->n_events; i++)
        n += strncmp(r->events[i], reason, len) == 0 && r->events[i][len] == ' ';
    return n;
}

/* ---- setup ---- */

static bool all_synced(void *arg) {
    struct rig *r = arg;
    for (int i = 0; i < OBJ_NKINDS; i++)
        if (!r->inf[i].synced)
            return false;
    return true;
}

int rig_setup(void **state) {
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

struct rig *rig_of(void **state) {
    return ((struct kapi *)*state)->data;
}

static void on_key(void *user, const char *route_id) {
    reconciler_source_changed(&((struct rig *)user)->rec, route_id, true);
}

static void on_key_listed(void *user, const char *route_id) {
    reconciler_source_changed(&((struct rig *)user)->rec, route_id, false);
}

/* As the app does: every answer the bridge's client gets is seen. */
static void on_answer(void *user, const char *verb, long status) {
    reconciler_api_answered(&((struct rig *)user)->rec, verb, status);
}

void rig_start(struct rig *r, const char *ns, bool create_ns) {
    static const informer_change_cb changed[OBJ_NKINDS] = {reconciler_middleware_changed,
                                                           reconciler_traefikservice_changed,
                                                           reconciler_ingressroute_changed};
    snprintf(r->ns, sizeof r->ns, "%s", ns);
    snprintf(r->prefix, sizeof r->prefix, "canary-%s/", ns);
    if (create_ns) {
        char body[200];
        snprintf(body, sizeof body,
                 "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"%s\"}}",
                 ns);
        kapi_ctl_ok(r->k, "POST", "/api/v1/namespaces", body);
    }
    r->kc = kapi_client_new(r->k, false);
    assert_non_null(r->kc);
    if (r->observe_answers)
        kube_client_set_observer(r->kc, on_answer, r);
    assert_int_equal(kube_client_set_field_manager(r->kc, "canary-bridge"), 0);
    assert_int_equal(keycache_init(&r->keys, r->prefix, &r->log), 0);
    struct informer *infs[OBJ_NKINDS];
    for (int i = 0; i < OBJ_NKINDS; i++) {
        assert_int_equal(informer_init(&r->inf[i], &r->k->loop, r->kc, &r->log, RIG_GROUP,
                                       "v1alpha1", obj_plural[i], changed[i], NULL, &r->rec),
                         0);
        infs[i] = &r->inf[i];
    }
    struct render_opts ro = {RIG_GROUP, RULE_SYNTAX_V3, r->prefix, "etcd"};
    assert_int_equal(
        reconciler_init(&r->rec, &r->k->loop, &r->log, &r->cfg, &r->keys, r->kc, infs, &ro), 0);
    r->rec.field_manager = "canary-bridge";
    r->rec.hooks = (struct reconcile_hooks){
        .event = hook_event, .status = hook_status, .backend = hook_backend, .user = r};
    if (r->with_backends) {
        assert_int_equal(backends_init(&r->b, &r->k->loop, r->kc, &r->log, false,
                                       reconciler_backends_changed, &r->rec),
                         0);
        backends_set_traefikservices(&r->b, &r->inf[OBJ_TRAEFIKSERVICE]);
        r->rec.backends = &r->b;
    }
    r->started = true;
    for (int i = 0; i < OBJ_NKINDS; i++)
        assert_int_equal(informer_start(&r->inf[i]), 0);
    if (r->with_backends)
        assert_int_equal(backends_start(&r->b), 0);
    assert_true(support_run_until(&r->k->loop, all_synced, r, RIG_WAIT_MS));
    reconciler_start(&r->rec);
}

static bool backends_closed_cb(void *arg) {
    return backends_closed(arg);
}

int rig_teardown(void **state) {
    struct kapi *k = *state;
    struct rig *r = k->data;
    if (!r)
        return 0;
    if (r->started) {
        reconciler_close(&r->rec);
        for (int i = 0; i < OBJ_NKINDS; i++)
            informer_close(&r->inf[i], NULL);
        if (r->with_backends)
            backends_close(&r->b, NULL);
        kube_client_close(r->kc);
        if (r->with_backends)
            support_run_until(&k->loop, backends_closed_cb, &r->b, RIG_WAIT_MS);
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

/* ---- keys ---- */

void rig_key(const struct rig *r, const char *route, const char *leaf, char *out, size_t outlen) {
    snprintf(out, outlen, "%s%s/%s/%s", r->prefix, r->ns, route, leaf);
}

static void put(struct rig *r, const char *key, const char *value) {
    struct source_kv kv = {key, value, strlen(value), ++r->rev};
    assert_int_equal(keycache_put(&r->keys, &kv, on_key, r), 0);
}

void rig_put_key(struct rig *r, const char *route, const char *leaf, const char *value) {
    char key[256];
    rig_key(r, route, leaf, key, sizeof key);
    put(r, key, value);
}

void rig_delete_key(struct rig *r, const char *route, const char *leaf) {
    char key[256];
    rig_key(r, route, leaf, key, sizeof key);
    ++r->rev;
    assert_int_equal(keycache_delete(&r->keys, key, on_key, r), 0);
}

void rig_put_prefix_key(struct rig *r, const char *name, const char *value) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", r->prefix, name);
    put(r, key, value);
}

void rig_delete_prefix_key(struct rig *r, const char *name) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", r->prefix, name);
    ++r->rev;
    assert_int_equal(keycache_delete(&r->keys, key, on_key, r), 0);
}

void rig_list_routes(struct rig *r, const char *const *routes, size_t n) {
    struct source_kv kvs[16];
    char keys[16][256];
    static const char weights[] = "shop-v1=90, shop-v2=10";
    assert_true(2 * n <= 16);
    ++r->rev;
    for (size_t i = 0; i < n; i++) {
        rig_key(r, routes[i], "route", keys[2 * i], sizeof keys[0]);
        rig_key(r, routes[i], "weights", keys[2 * i + 1], sizeof keys[0]);
        kvs[2 * i] = (struct source_kv){keys[2 * i], RIG_ROUTE_DOC, strlen(RIG_ROUTE_DOC), r->rev};
        kvs[2 * i + 1] = (struct source_kv){keys[2 * i + 1], weights, sizeof weights - 1, r->rev};
    }
    assert_int_equal(keycache_snapshot(&r->keys, kvs, 2 * n, r->rev, on_key_listed, r), 0);
}

void rig_put_route(struct rig *r, const char *route, int v1, int v2) {
    char w[64];
    rig_put_key(r, route, "route", RIG_ROUTE_DOC);
    snprintf(w, sizeof w, "shop-v1=%d, shop-v2=%d", v1, v2);
    rig_put_key(r, route, "weights", w);
}

static bool rec_idle(void *arg) {
    struct rig *r = arg;
    return reconciler_idle(&r->rec) && reconciler_jobs_in_flight(&r->rec) == 0;
}

void rig_settle(struct rig *r) {
    assert_true(support_run_until(&r->k->loop, rec_idle, r, RIG_WAIT_MS));
}

void rig_apply_shop(struct rig *r, bool headers) {
    rig_put_route(r, "shop", 90, 10);
    if (headers)
        rig_put_key(r, "shop", "headers", RIG_HEADERS_DOC);
    rig_settle(r);
    rig_wait_weight(r, "shop", 90);
    rig_settle(r);
}

/* ---- reading the server ---- */

cJSON *rig_get_obj(struct rig *r, const char *plural, const char *name, long *status) {
    char path[300];
    snprintf(path, sizeof path, "/apis/" RIG_GROUP "/v1alpha1/namespaces/%s/%s/%s", r->ns, plural,
             name);
    return kapi_ctl(r->k, "GET", path, NULL, status);
}

cJSON *rig_must_get(struct rig *r, const char *plural, const char *name) {
    long status;
    cJSON *o = rig_get_obj(r, plural, name, &status);
    assert_int_equal(status, 200);
    return o;
}

bool rig_exists(struct rig *r, const char *plural, const char *name) {
    long status;
    cJSON_Delete(rig_get_obj(r, plural, name, &status));
    return status == 200;
}

int rig_count_objs(struct rig *r, const char *plural) {
    char path[300];
    snprintf(path, sizeof path, "/apis/" RIG_GROUP "/v1alpha1/namespaces/%s/%s", r->ns, plural);
    long status;
    cJSON *list = kapi_ctl(r->k, "GET", path, NULL, &status);
    assert_int_equal(status, 200);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(list, "items"));
    cJSON_Delete(list);
    return n;
}

int rig_weight_of(const cJSON *ir, const char *svc) {
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
    cJSON *ir = rig_get_obj(w->r, "ingressroutes", w->name, &status);
    bool ok = status == 200 && rig_weight_of(ir, "shop-v1") == w->v1;
    cJSON_Delete(ir);
    return ok;
}

void rig_wait_weight(struct rig *r, const char *name, int v1) {
    struct want_weight w = {r, name, v1};
    assert_true(support_run_until(&r->k->loop, ir_weight_is, &w, RIG_WAIT_MS));
}

int rig_requests_since(struct rig *r, int seq, bool gets, char out[][128], cJSON **bodies,
                       int max) {
    char q[64], base[160];
    snprintf(q, sizeof q, "/_test/requests?since=%d", seq);
    snprintf(base, sizeof base, "/apis/" RIG_GROUP "/v1alpha1/namespaces/%s/", r->ns);
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

int rig_writes_since(struct rig *r, int seq, char out[][128], cJSON **bodies, int max) {
    return rig_requests_since(r, seq, false, out, bodies, max);
}

struct cached {
    struct rig *r;
    const char *name;
};

static bool ir_cached(void *arg) {
    struct cached *c = arg;
    return informer_rv(&c->r->inf[OBJ_INGRESSROUTE], c->r->ns, c->name) != NULL;
}

void rig_create_foreign_ir(struct rig *r, const char *name) {
    char path[200], body[1024];
    snprintf(path, sizeof path, "/apis/" RIG_GROUP "/v1alpha1/namespaces/%s/ingressroutes", r->ns);
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"" RIG_GROUP "/v1alpha1\",\"kind\":\"IngressRoute\","
             "\"metadata\":{\"name\":\"%s\",\"labels\":{\"team\":\"web\"}},"
             "\"spec\":{\"entryPoints\":[\"web\"],\"routes\":[{\"kind\":\"Rule\","
             "\"match\":\"Host(`shop.example.com`)\",\"services\":["
             "{\"name\":\"shop-v1\",\"port\":80,\"weight\":1},"
             "{\"name\":\"shop-v2\",\"port\":80,\"weight\":1}]}]}}",
             name);
    kapi_ctl_ok(r->k, "POST", path, body);
    struct cached c = {r, name};
    assert_true(support_run_until(&r->k->loop, ir_cached, &c, RIG_WAIT_MS));
}

/* ---- status ---- */

const struct route_status *rig_status(struct rig *r, const char *route) {
    char id[KEYCACHE_ROUTE_ID_MAX];
    keycache_route_id(id, sizeof id, r->ns, route);
    return reconciler_status(&r->rec, id);
}

const struct route_status *rig_must_status(struct rig *r, const char *route) {
    const struct route_status *s = rig_status(r, route);
    assert_non_null(s);
    return s;
}
