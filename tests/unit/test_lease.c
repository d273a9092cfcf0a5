/* test_lease.c - leader election (sinks/lease.h) against the Kubernetes API
 * test server.
 *
 * The group setup (kapi.h) spawns tests/kubeapi/server.py on the test's
 * libuv loop: real HTTPS, resourceVersion conflicts, AlreadyExists, fault
 * injection and a request log. The electors talk to it through the real
 * kube client; several electors
 * share one loop, which makes "exactly one leader at any time" checkable
 * in their callbacks. Nothing sleeps: the loop runs until a condition holds,
 * bounded by a deadline.
 *
 * Timings are scaled down (lease 1 s, renew deadline 700 ms, retry 200 ms);
 * the assertions allow for scheduling noise but check the properties that
 * matter: takeover no sooner than a lease duration after the last renewal,
 * a leader that cannot renew steps down before its lease could expire, a
 * released lease is taken over at once.
 *
 * Run from tests/ (meson's workdir) or the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kapi.h"
#include "sinks/informer.h"
#include "sinks/lease.h"

#define LEASE_MS 1000
#define RENEW_MS 700
#define RETRY_MS 200

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- electors ---- */

#define LEASE_PATH "/apis/coordination.k8s.io/v1/namespaces/default/leases/"

/* Electors live in the group state, not on a test's stack: a failing test
 * longjmps out, and its per-test teardown still stops them cleanly. */
struct cand {
    struct lease_elector e;
    const char *id, *lease;
    struct kube_client *kc;
    struct world *w;
    bool active, leader, inited;
    int changes;
    uint64_t became_ms, lost_ms;
    double became_wall, lost_wall;
    int done_calls;
};

struct world {
    struct kapi *k;
    struct cand c[4];
    size_t n;
    int violations; /* two active leaders of one lease at once */
};

static void on_change(void *user, bool leader) {
    struct cand *c = user;
    c->changes++;
    c->leader = leader;
    if (leader) {
        c->became_ms = support_mono_ms();
        c->became_wall = wall_s();
    } else {
        c->lost_ms = support_mono_ms();
        c->lost_wall = wall_s();
    }
    if (lease_is_leader(&c->e) != leader)
        c->w->violations++;
    int leaders = 0;
    for (size_t i = 0; i < c->w->n; i++) {
        struct cand *o = &c->w->c[i];
        if (o->active && o->leader && strcmp(o->lease, c->lease) == 0)
            leaders++;
    }
    if (leaders > 1)
        c->w->violations++;
}

static void on_released(void *user) {
    ((struct cand *)user)->done_calls++;
}

static struct cand *cand_start(struct world *w, const char *lease, const char *id, bool dry_run) {
    assert_true(w->n < sizeof w->c / sizeof *w->c);
    struct cand *c = &w->c[w->n];
    memset(c, 0, sizeof *c);
    c->id = id;
    c->lease = lease;
    c->w = w;
    c->kc = kapi_client_new(w->k, dry_run);
    assert_non_null(c->kc);
    w->n++;
    assert_int_equal(lease_init(&c->e, &w->k->loop, c->kc, &w->k->log, "default", lease, id,
                                LEASE_MS, RENEW_MS, RETRY_MS, on_change, c),
                     0);
    c->inited = true;
    c->active = true;
    assert_int_equal(lease_start(&c->e), 0);
    return c;
}

static void cand_stop(struct cand *c) {
    if (!c->inited || !c->active)
        return;
    c->active = false;
    c->leader = false;
    lease_close(&c->e);
}

static int world_setup(void **state) {
    struct kapi *k = *state;
    struct world *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->k = k;
    k->data = w;
    return 0;
}

/* Stop every elector, let the loop close their timers, free their clients. */
static int world_teardown(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    if (!w)
        return 0;
    for (size_t i = 0; i < w->n; i++)
        cand_stop(&w->c[i]);
    support_drain(&k->loop);
    for (size_t i = 0; i < w->n; i++)
        kube_client_free(w->c[i].kc);
    support_drain(&k->loop);
    free(w);
    k->data = NULL;
    kapi_faults_clear(k);
    return 0;
}

static bool is_leader(void *arg) {
    return ((struct cand *)arg)->leader;
}
static bool is_follower(void *arg) {
    return !((struct cand *)arg)->leader;
}

struct two {
    struct cand *a, *b;
};
static bool either_leader(void *arg) {
    struct two *t = arg;
    return t->a->leader || t->b->leader;
}

static bool leader_and_released(void *arg) {
    struct two *t = arg; /* a: the releasing one, b: the taker */
    return t->b->leader && t->a->done_calls > 0;
}

static bool release_done(void *arg) {
    return ((struct cand *)arg)->done_calls > 0;
}

static cJSON *get_lease(struct kapi *k, const char *name) {
    char path[200];
    snprintf(path, sizeof path, LEASE_PATH "%s", name);
    long status;
    cJSON *j = kapi_ctl(k, "GET", path, NULL, &status);
    assert_int_equal(status, 200);
    return j;
}

static const char *spec_str(const cJSON *lease, const char *field) {
    const char *s = kobj_str(lease, "spec", field);
    assert_non_null(s);
    return s;
}

static int spec_int(const cJSON *lease, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(lease, "spec"), field);
    assert_true(cJSON_IsNumber(v));
    return (int)v->valuedouble;
}

/* "2006-01-02T15:04:05.000000Z" */
static void assert_microtime(const char *s) {
    assert_int_equal(strlen(s), 27);
    for (int i = 0; i < 27; i++) {
        char want = "0000-00-00T00:00:00.000000Z"[i];
        if (want == '0')
            assert_true(s[i] >= '0' && s[i] <= '9');
        else
            assert_int_equal(s[i], want);
    }
}

/* Requests on one lease since seq: "METHOD STATUS" strings in order. */
static int lease_requests(struct kapi *k, int since, const char *lease, char out[][16], int max,
                          double *t_out) {
    char q[64], suffix[128];
    snprintf(q, sizeof q, "/_test/requests?since=%d", since);
    snprintf(suffix, sizeof suffix, "/leases/%s", lease);
    cJSON *log = kapi_ctl(k, "GET", q, NULL, NULL);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log) {
        const char *path = kobj_str(e, "path", NULL);
        const char *method = kobj_str(e, "method", NULL);
        size_t pl = path ? strlen(path) : 0, sl = strlen(suffix);
        bool match = path && pl >= sl && strcmp(path + pl - sl, suffix) == 0;
        if (!match || n >= max)
            continue;
        const cJSON *st = cJSON_GetObjectItem(e, "status");
        snprintf(out[n], 16, "%s %d", method, cJSON_IsNumber(st) ? (int)st->valuedouble : 0);
        if (t_out)
            t_out[n] = cJSON_GetObjectItem(e, "t")->valuedouble;
        n++;
    }
    cJSON_Delete(log);
    return n;
}

/* ---- tests ---- */

static void test_microtime_format(void **state) {
    (void)state;
    char t[40];
    assert_int_equal(lease_microtime_now(t, sizeof t), 0);
    assert_microtime(t);
    char small[27];
    assert_int_equal(lease_microtime_now(small, sizeof small), -1);
}

static void test_invalid_timings_and_identity_refused(void **state) {
    struct kapi *k = *state;
    struct lease_elector e;
    struct logger quiet;
    logger_init(&quiet, LOG_LVL_ERROR);
    quiet.out = stderr;
    /* lease_duration > renew_deadline > 1.2 x retry_period > 0 */
    assert_int_equal(
        lease_init(&e, &k->loop, k->ctl, &quiet, "default", "x", "me", 1000, 1000, 200, NULL, NULL),
        -1);
    assert_int_equal(
        lease_init(&e, &k->loop, k->ctl, &quiet, "default", "x", "me", 1000, 600, 500, NULL, NULL),
        -1);
    assert_int_equal(
        lease_init(&e, &k->loop, k->ctl, &quiet, "default", "x", "me", 1000, 700, 0, NULL, NULL),
        -1);
    assert_int_equal(
        lease_init(&e, &k->loop, k->ctl, &quiet, "default", "x", "", 1000, 700, 200, NULL, NULL),
        -1);
    lease_close(&e); /* a no-op after a failed init */
    assert_false(lease_is_leader(&e));
    assert_string_equal(lease_holder(&e), "");
}

/* One candidate creates the Lease, leads, and renews every retry period,
 * keeping acquireTime. Its kube client is in dry-run mode: the Lease must
 * be written for real anyway. */
static void test_single_leader_renews_keeping_acquire_time(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    int seq0 = kapi_last_seq(k);
    struct cand *a = cand_start(w, "solo", "host-a", true);
    assert_true(support_run_until(&k->loop, is_leader, a, 5000));
    assert_true(lease_is_leader(&a->e));
    assert_string_equal(lease_holder(&a->e), "host-a");

    cJSON *l1 = get_lease(k, "solo");
    assert_string_equal(spec_str(l1, "holderIdentity"), "host-a");
    assert_int_equal(spec_int(l1, "leaseDurationSeconds"), 1);
    assert_int_equal(spec_int(l1, "leaseTransitions"), 0);
    assert_microtime(spec_str(l1, "acquireTime"));
    assert_microtime(spec_str(l1, "renewTime"));

    support_run_for(&k->loop, 3 * RETRY_MS);
    cJSON *l2 = get_lease(k, "solo");
    assert_string_not_equal(spec_str(l2, "renewTime"), spec_str(l1, "renewTime"));
    assert_string_equal(spec_str(l2, "acquireTime"), spec_str(l1, "acquireTime"));
    assert_int_equal(spec_int(l2, "leaseTransitions"), 0);
    support_run_for(&k->loop, 3 * RETRY_MS);
    cJSON *l3 = get_lease(k, "solo");
    assert_string_not_equal(spec_str(l3, "renewTime"), spec_str(l2, "renewTime"));
    assert_string_equal(spec_str(l3, "acquireTime"), spec_str(l1, "acquireTime"));
    assert_true(a->leader);
    assert_int_equal(a->changes, 1);
    assert_int_equal(w->violations, 0);

    /* Never dry-run; the renewals are plain PUTs of the cached record. */
    char q[64];
    snprintf(q, sizeof q, "/_test/requests?since=%d", seq0);
    cJSON *log = kapi_ctl(k, "GET", q, NULL, NULL);
    const cJSON *e;
    int puts = 0;
    cJSON_ArrayForEach(e, log) {
        const char *path = kobj_str(e, "path", NULL);
        if (!path || !strstr(path, "/leases"))
            continue;
        assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "query"), "dryRun"));
        if (strcmp(kobj_str(e, "method", NULL), "PUT") == 0)
            puts++;
    }
    assert_true(puts >= 4);
    cJSON_Delete(log);
    cJSON_Delete(l1);
    cJSON_Delete(l2);
    cJSON_Delete(l3);
}

/* Two candidates: one leads, the other follows and knows who leads. The
 * leader stops renewing (lease_close, no release): the follower takes over no
 * sooner than a lease duration after the last renewal and soon after it.
 * A third joins; the new leader releases: the third takes over at once. */
static void test_takeover_after_expiry_and_at_once_after_release(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    struct cand *a = cand_start(w, "pair", "host-a", false);
    struct cand *b = cand_start(w, "pair", "host-b", false);
    struct two t = {a, b};
    assert_true(support_run_until(&k->loop, either_leader, &t, 5000));
    struct cand *leader = a->leader ? a : b, *follower = a->leader ? b : a;

    /* Stable for longer than a lease duration. */
    support_run_for(&k->loop, LEASE_MS + 5 * RETRY_MS);
    assert_true(leader->leader);
    assert_false(follower->leader);
    assert_int_equal(leader->changes, 1);
    assert_int_equal(follower->changes, 0);
    assert_string_equal(lease_holder(&follower->e), leader->id);
    assert_int_equal(w->violations, 0);

    /* The leader dies without releasing. */
    cand_stop(leader);
    uint64_t t0 = support_mono_ms();
    assert_true(support_run_until(&k->loop, is_leader, follower, LEASE_MS + 4 * RETRY_MS + 1000));
    uint64_t took = follower->became_ms - t0;
    print_message("takeover %llu ms after the leader stopped\n", (unsigned long long)took);
    assert_true(took + RETRY_MS + 100 >= LEASE_MS); /* never before the lease could expire */
    assert_true(took <= LEASE_MS + 3 * RETRY_MS + 500);
    cJSON *l = get_lease(k, "pair");
    assert_string_equal(spec_str(l, "holderIdentity"), follower->id);
    assert_int_equal(spec_int(l, "leaseTransitions"), 1);
    cJSON_Delete(l);

    /* A third candidate joins and follows. */
    struct cand *c = cand_start(w, "pair", "host-c", false);
    support_run_for(&k->loop, 3 * RETRY_MS);
    assert_false(c->leader);
    assert_string_equal(lease_holder(&c->e), follower->id);

    /* Release: the leader steps down first, then the third takes over at
     * its next retry, far sooner than a lease duration. */
    uint64_t t1 = support_mono_ms();
    lease_release(&follower->e, on_released, follower);
    assert_false(follower->leader);
    assert_false(lease_is_leader(&follower->e));
    assert_int_equal(follower->changes, 2);
    assert_int_equal(follower->done_calls, 0); /* never from inside lease_release */
    struct two r = {follower, c};
    assert_true(support_run_until(&k->loop, leader_and_released, &r, 3000));
    uint64_t took2 = c->became_ms - t1;
    print_message("takeover %llu ms after the release\n", (unsigned long long)took2);
    assert_true(took2 < LEASE_MS);
    assert_true(follower->lost_ms <= c->became_ms);
    assert_int_equal(follower->done_calls, 1);
    l = get_lease(k, "pair");
    assert_string_equal(spec_str(l, "holderIdentity"), "host-c");
    assert_int_equal(spec_int(l, "leaseTransitions"), 2);
    cJSON_Delete(l);
    support_run_for(&k->loop, 2 * RETRY_MS);
    assert_int_equal(follower->done_calls, 1);
    assert_false(follower->leader);
    assert_int_equal(w->violations, 0);
}

/* 409s: on create (another candidate created it first), on the leader's
 * renewal (the record changed under it) and on a takeover (lost the race). */
static void test_conflicts_reread_and_retry(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    char seen[32][16];

    int seq0 = kapi_last_seq(k);
    kapi_fault(k, "{\"method\":\"POST\",\"path_regex\":\"/namespaces/default/leases$\","
                  "\"count\":1,\"status\":409}");
    struct cand *a = cand_start(w, "race", "host-a", false);
    assert_true(support_run_until(&k->loop, is_leader, a, 5000));
    assert_int_equal(a->changes, 1);
    char q[64];
    snprintf(q, sizeof q, "/_test/requests?since=%d", seq0);
    cJSON *log = kapi_ctl(k, "GET", q, NULL, NULL);
    int posts409 = 0, posts201 = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log) {
        if (strcmp(kobj_str(e, "method", NULL), "POST") != 0 ||
            !strstr(kobj_str(e, "path", NULL), "/leases"))
            continue;
        int st = (int)cJSON_GetObjectItem(e, "status")->valuedouble;
        if (st == 409)
            posts409++;
        else if (st == 201)
            posts201++;
    }
    cJSON_Delete(log);
    assert_int_equal(posts409, 1);
    assert_int_equal(posts201, 1);

    /* A 409 on renewal: read again, renew, stay leader (no transition). */
    int seq1 = kapi_last_seq(k);
    kapi_fault(k,
               "{\"method\":\"PUT\",\"path_regex\":\"/leases/race$\",\"count\":1,\"status\":409}");
    support_run_for(&k->loop, 4 * RETRY_MS);
    int n = lease_requests(k, seq1, "race", seen, 32, NULL);
    int i409 = -1;
    for (int i = 0; i < n; i++)
        if (strcmp(seen[i], "PUT 409") == 0)
            i409 = i;
    assert_true(i409 >= 0);
    assert_true(n >= i409 + 3);
    assert_string_equal(seen[i409 + 1], "GET 200");
    assert_string_equal(seen[i409 + 2], "PUT 200");
    assert_true(a->leader);
    assert_int_equal(a->changes, 1);

    /* A takeover of a released Lease that loses a race, then wins. */
    kapi_ctl_ok(k, "POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases",
                "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\","
                "\"metadata\":{\"name\":\"race2\"},\"spec\":{\"holderIdentity\":\"\","
                "\"leaseDurationSeconds\":1,\"leaseTransitions\":4}}");
    int seq2 = kapi_last_seq(k);
    kapi_fault(k,
               "{\"method\":\"PUT\",\"path_regex\":\"/leases/race2$\",\"count\":1,\"status\":409}");
    struct cand *b = cand_start(w, "race2", "host-b", false);
    assert_true(support_run_until(&k->loop, is_leader, b, 5000));
    n = lease_requests(k, seq2, "race2", seen, 32, NULL);
    assert_true(n >= 4);
    assert_string_equal(seen[0], "GET 200");
    assert_string_equal(seen[1], "PUT 409");
    assert_string_equal(seen[2], "GET 200");
    assert_string_equal(seen[3], "PUT 200");
    cJSON *l = get_lease(k, "race2");
    assert_string_equal(spec_str(l, "holderIdentity"), "host-b");
    assert_int_equal(spec_int(l, "leaseTransitions"), 5);
    cJSON_Delete(l);
    assert_int_equal(b->changes, 1);
    assert_int_equal(w->violations, 0);
}

/* A leader whose renewals fail (500s, then hanging requests) steps down
 * renew_deadline after its last successful renewal: before the Lease can
 * expire for anyone else. When the API recovers it leads again. */
static void test_failing_renewals_step_down_before_expiry(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    struct cand *a = cand_start(w, "flaky", "host-a", false);
    assert_true(support_run_until(&k->loop, is_leader, a, 5000));
    support_run_for(&k->loop, 2 * RETRY_MS);
    cJSON *l0 = get_lease(k, "flaky");

    int seq0 = kapi_last_seq(k);
    kapi_fault(k, "{\"path_regex\":\"/leases/flaky$\",\"count\":-1,\"status\":500}");
    assert_true(support_run_until(&k->loop, is_follower, a, RENEW_MS + 2 * RETRY_MS + 1000));
    assert_int_equal(a->changes, 2);
    /* The last successful renewal, as the server saw it. */
    char seen[64][16];
    double t[64];
    int n = lease_requests(k, seq0 - 20 > 0 ? seq0 - 20 : 0, "flaky", seen, 64, t);
    double t_ok = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(seen[i], "PUT 200") == 0)
            t_ok = t[i];
    assert_true(t_ok > 0);
    double after = a->lost_wall - t_ok;
    print_message("stepped down %.3f s after the last successful renewal\n", after);
    assert_true(after >= RENEW_MS / 1000.0 - 0.2);
    assert_true(after < LEASE_MS / 1000.0);

    /* The API recovers: the record still names us, so we renew it (same
     * acquireTime, no transition). */
    kapi_faults_clear(k);
    assert_true(support_run_until(&k->loop, is_leader, a, 3000));
    assert_int_equal(a->changes, 3);
    cJSON *l1 = get_lease(k, "flaky");
    assert_int_equal(spec_int(l1, "leaseTransitions"), 0);
    assert_string_equal(spec_str(l1, "acquireTime"), spec_str(l0, "acquireTime"));

    /* Renewals that hang: the deadline steps the leader down all the same. */
    support_run_for(&k->loop, 2 * RETRY_MS);
    kapi_fault(k, "{\"method\":\"PUT\",\"path_regex\":\"/leases/flaky$\",\"count\":-1,"
                  "\"action\":\"hang\"}");
    uint64_t t0 = support_mono_ms();
    assert_true(support_run_until(&k->loop, is_follower, a, RENEW_MS + 2 * RETRY_MS + 1000));
    print_message("stepped down %llu ms after renewals started hanging\n",
                  (unsigned long long)(a->lost_ms - t0));
    assert_true(a->lost_ms - t0 <= RENEW_MS + RETRY_MS + 300);
    kapi_faults_clear(k);
    assert_true(support_run_until(&k->loop, is_leader, a, RENEW_MS + 4 * RETRY_MS + 2000));
    assert_int_equal(a->changes, 5);
    assert_int_equal(w->violations, 0);
    cJSON_Delete(l0);
    cJSON_Delete(l1);
}

/* Release by a follower: nothing to hand over, done comes on the next loop
 * iteration. A release cut short by lease_close never calls done. */
static void test_release_by_follower_and_release_cut_short_by_close(void **state) {
    struct kapi *k = *state;
    struct world *w = k->data;
    struct cand *a = cand_start(w, "misc", "host-a", false);
    assert_true(support_run_until(&k->loop, is_leader, a, 5000));
    struct cand *b = cand_start(w, "misc", "host-b", false);
    support_run_for(&k->loop, 3 * RETRY_MS);
    assert_false(b->leader);

    lease_release(&b->e, on_released, b);
    assert_int_equal(b->done_calls, 0);
    uint64_t t0 = support_mono_ms();
    assert_true(support_run_until(&k->loop, release_done, b, 1000));
    assert_true(support_mono_ms() - t0 < 200);
    assert_int_equal(b->changes, 0);
    lease_release(&b->e, on_released, b); /* a second release is ignored */
    support_run_for(&k->loop, RETRY_MS);
    assert_int_equal(b->done_calls, 1);
    cJSON *l = get_lease(k, "misc");
    assert_string_equal(spec_str(l, "holderIdentity"), "host-a");
    cJSON_Delete(l);
    assert_true(a->leader);

    /* Release then stop at once: no done, no callback after stop. */
    lease_release(&a->e, on_released, a);
    assert_int_equal(a->changes, 2);
    cand_stop(a);
    support_run_for(&k->loop, RENEW_MS + RETRY_MS);
    assert_int_equal(a->done_calls, 0);
    assert_int_equal(a->changes, 2);
    assert_int_equal(w->violations, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_microtime_format),
        cmocka_unit_test_setup_teardown(test_invalid_timings_and_identity_refused, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_single_leader_renews_keeping_acquire_time, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_takeover_after_expiry_and_at_once_after_release,
                                        world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_conflicts_reread_and_retry, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_failing_renewals_step_down_before_expiry, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_release_by_follower_and_release_cut_short_by_close,
                                        world_setup, world_teardown),
    };
    return cmocka_run_group_tests(tests, kapi_setup, kapi_teardown);
}
