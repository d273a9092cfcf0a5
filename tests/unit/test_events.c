/* test_events.c - Kubernetes Events (sinks/events.h) against the Kubernetes
 * API test server.
 *
 * The group setup (kapi.h) spawns tests/kubeapi/server.py on the test's
 * libuv loop (real HTTPS, fault injection, request log) and the
 * recorder posts through the real kube client. Checked: every field of a
 * posted Event, message truncation on a UTF-8 boundary, aggregation of
 * similar events into count + 1 with the newest message (one Event, merge
 * patches), the per-object and global token buckets and their refill (an
 * occurrence over a limit waits and is sent later, never dropped), the
 * in-flight cap, failures (403, 500) logged once per kind and never retried,
 * and close cancelling what is in flight. Nothing sleeps: the loop runs until a condition holds,
 * bounded by a deadline.
 *
 * Run from tests/ (meson's workdir) or the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kapi.h"
#include "sinks/events.h"
#include "sinks/informer.h"

/* ---- helpers ---- */

#define EVENTS_PATH "/api/v1/namespaces/default/events"

struct quiet {
    const struct event_recorder *rec;
};

static bool settled(void *arg) {
    struct events_stats st;
    events_get_stats(((struct quiet *)arg)->rec, &st);
    return st.in_flight == 0;
}

static void settle(struct kapi *k, const struct event_recorder *rec) {
    struct quiet q = {rec};
    assert_true(support_run_until(&k->loop, settled, &q, 5000));
}

/* The stored Events whose involvedObject.name is name (caller frees). */
static cJSON *events_of(struct kapi *k, const char *ns, const char *name, int *n) {
    char path[200];
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/events", ns);
    long status;
    cJSON *list = kapi_ctl(k, "GET", path, NULL, &status);
    assert_int_equal(status, 200);
    cJSON *out = cJSON_CreateArray();
    assert_non_null(out);
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(list, "items")) {
        const char *in = kobj_str(e, "involvedObject", "name");
        if (in && strcmp(in, name) == 0)
            cJSON_AddItemToArray(out, cJSON_Duplicate(e, 1));
    }
    cJSON_Delete(list);
    *n = cJSON_GetArraySize(out);
    return out;
}

static int requests_since(struct kapi *k, int since, const char *method, const char *suffix) {
    char q[64];
    snprintf(q, sizeof q, "/_test/requests?since=%d", since);
    cJSON *log = kapi_ctl(k, "GET", q, NULL, NULL);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log) {
        const char *path = kobj_str(e, "path", NULL), *m = kobj_str(e, "method", NULL);
        size_t pl = path ? strlen(path) : 0, sl = strlen(suffix);
        if (path && m && strcmp(m, method) == 0 && pl >= sl && strstr(path, suffix))
            n++;
    }
    cJSON_Delete(log);
    return n;
}

static void assert_rfc3339(const char *s) {
    assert_non_null(s);
    assert_int_equal(strlen(s), 20);
    for (int i = 0; i < 20; i++) {
        char want = "0000-00-00T00:00:00Z"[i];
        if (want == '0')
            assert_true(s[i] >= '0' && s[i] <= '9');
        else
            assert_int_equal(s[i], want);
    }
}

static int jint(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    assert_true(cJSON_IsNumber(v));
    return (int)v->valuedouble;
}

static int count_substr(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ---- tests ---- */

static void test_utf8_copy_never_splits_a_character(void **state) {
    (void)state;
    char out[16];
    events_utf8_copy(out, sizeof out, "plain", 100);
    assert_string_equal(out, "plain");
    events_utf8_copy(out, sizeof out, "abcdefghijklmnopqrstuvwxyz", 100);
    assert_string_equal(out, "abcdefghijklmno"); /* the buffer bounds it too */
    /* "é" is two bytes: never cut in two. */
    events_utf8_copy(out, sizeof out, "a\xc3\xa9\xc3\xa9", 4);
    assert_string_equal(out, "a\xc3\xa9");
    /* A 4-byte character passes whole or not at all. */
    events_utf8_copy(out, sizeof out, "\xf0\x9f\x90\xa4!", 5);
    assert_string_equal(out, "\xf0\x9f\x90\xa4!");
    events_utf8_copy(out, sizeof out, "\xf0\x9f\x90\xa4!", 3);
    assert_string_equal(out, "");
    /* Invalid bytes, overlong forms, surrogates and truncated sequences
     * become '?', byte by byte. */
    events_utf8_copy(out, sizeof out, "x\xffy\xc0\xafz", 100);
    assert_string_equal(out, "x?y??z");
    events_utf8_copy(out, sizeof out, "\xed\xa0\x80.", 100);
    assert_string_equal(out, "???.");
    events_utf8_copy(out, sizeof out, "ab\xe2\x82", 100);
    assert_string_equal(out, "ab??");
}

static void test_event_fields_and_repeats_folded_into_one_event(void **state) {
    struct kapi *k = *state;
    struct event_recorder *rec = events_new(&k->loop, k->ctl, &k->log, "canary-bridge", "host-a");
    assert_non_null(rec);
    events_post(rec, "default", "traefik.io/v1alpha1", "IngressRoute", "shop", "uid-1", "Normal",
                "WeightsChanged", "weights shop-v1=%d shop-v2=%d from etcd revision %d", 90, 10,
                1234);
    settle(k, rec);
    struct events_stats st;
    events_get_stats(rec, &st);
    assert_int_equal(st.posted, 1);
    assert_int_equal(st.failed, 0);

    int n;
    cJSON *evs = events_of(k, "default", "shop", &n);
    assert_int_equal(n, 1);
    const cJSON *ev = cJSON_GetArrayItem(evs, 0);
    assert_string_equal(kobj_str(ev, "apiVersion", NULL), "v1");
    assert_string_equal(kobj_str(ev, "kind", NULL), "Event");
    const char *evname = kobj_str(ev, "metadata", "name");
    assert_non_null(evname);
    assert_memory_equal(evname, "shop.", 5);
    assert_true(strlen(evname) > 5);
    assert_string_equal(kobj_str(ev, "metadata", "namespace"), "default");
    assert_string_equal(kobj_str(ev, "involvedObject", "apiVersion"), "traefik.io/v1alpha1");
    assert_string_equal(kobj_str(ev, "involvedObject", "kind"), "IngressRoute");
    assert_string_equal(kobj_str(ev, "involvedObject", "name"), "shop");
    assert_string_equal(kobj_str(ev, "involvedObject", "namespace"), "default");
    assert_string_equal(kobj_str(ev, "involvedObject", "uid"), "uid-1");
    assert_string_equal(kobj_str(ev, "reason", NULL), "WeightsChanged");
    assert_string_equal(kobj_str(ev, "message", NULL),
                        "weights shop-v1=90 shop-v2=10 from etcd revision 1234");
    assert_string_equal(kobj_str(ev, "type", NULL), "Normal");
    assert_string_equal(kobj_str(ev, "source", "component"), "canary-bridge");
    assert_string_equal(kobj_str(ev, "source", "host"), "host-a");
    assert_string_equal(kobj_str(ev, "reportingComponent", NULL), "canary-bridge");
    assert_string_equal(kobj_str(ev, "reportingInstance", NULL), "host-a");
    assert_rfc3339(kobj_str(ev, "firstTimestamp", NULL));
    assert_rfc3339(kobj_str(ev, "lastTimestamp", NULL));
    assert_int_equal(jint(ev, "count"), 1);
    char first[32], evname_seen[300];
    snprintf(first, sizeof first, "%s", kobj_str(ev, "firstTimestamp", NULL));
    snprintf(evname_seen, sizeof evname_seen, "%s", evname);
    cJSON_Delete(evs);

    /* The same event twice more: one Event, count 3. The third occurrence
     * arrives while the patch for the second is in flight: it is folded
     * into the next patch, not a request of its own. */
    int seq0 = kapi_last_seq(k);
    for (int i = 0; i < 2; i++)
        events_post(rec, "default", "traefik.io/v1alpha1", "IngressRoute", "shop", "uid-1",
                    "Normal", "WeightsChanged",
                    "weights shop-v1=%d shop-v2=%d from etcd revision %d", 90, 10, 1234);
    events_get_stats(rec, &st);
    assert_int_equal(st.in_flight, 1);
    settle(k, rec);
    events_get_stats(rec, &st);
    assert_int_equal(st.posted, 1);
    assert_int_equal(st.aggregated, 2);
    assert_int_equal(requests_since(k, seq0, "PATCH", "/events/"), 2);
    assert_int_equal(requests_since(k, seq0, "POST", "/events"), 0);
    evs = events_of(k, "default", "shop", &n);
    assert_int_equal(n, 1);
    ev = cJSON_GetArrayItem(evs, 0);
    assert_int_equal(jint(ev, "count"), 3);
    assert_string_equal(kobj_str(ev, "metadata", "name"), evname_seen);
    assert_string_equal(kobj_str(ev, "firstTimestamp", NULL), first);
    assert_rfc3339(kobj_str(ev, "lastTimestamp", NULL));
    assert_true(strcmp(kobj_str(ev, "lastTimestamp", NULL), first) >= 0);
    cJSON_Delete(evs);

    /* A different message is a different Event. No namespace -> default,
     * no uid -> none, an unknown type -> Normal; Warning stays Warning. */
    events_post(rec, NULL, "traefik.io/v1alpha1", "Middleware", "hdr", NULL, "Bogus",
                "HeadersChanged", "headers %s", "X-Canary: 1");
    events_post(rec, "default", "traefik.io/v1alpha1", "Middleware", "hdr", NULL, "Warning",
                "WriteFailed", "HTTP 422 Invalid: %s", "spec.headers: bad");
    settle(k, rec);
    evs = events_of(k, "default", "hdr", &n);
    assert_int_equal(n, 2);
    int warnings = 0;
    cJSON_ArrayForEach(ev, evs) {
        assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "involvedObject"), "uid"));
        if (strcmp(kobj_str(ev, "reason", NULL), "WriteFailed") == 0) {
            assert_string_equal(kobj_str(ev, "type", NULL), "Warning");
            warnings++;
        } else {
            assert_string_equal(kobj_str(ev, "type", NULL), "Normal");
        }
    }
    assert_int_equal(warnings, 1);
    cJSON_Delete(evs);

    /* A long message is cut to at most 1024 bytes, on a character boundary. */
    char *big = malloc(1 + 2 * 1500 + 1);
    assert_non_null(big);
    big[0] = 'x';
    for (int i = 0; i < 1500; i++)
        memcpy(big + 1 + 2 * i, "\xc3\xa9", 2);
    big[1 + 2 * 1500] = '\0';
    events_post(rec, "default", "traefik.io/v1alpha1", "IngressRoute", "long", NULL, "Normal",
                "Long", "%s", big);
    free(big);
    settle(k, rec);
    evs = events_of(k, "default", "long", &n);
    assert_int_equal(n, 1);
    const char *msg = kobj_str(cJSON_GetArrayItem(evs, 0), "message", NULL);
    assert_int_equal(strlen(msg), 1023);
    assert_int_equal(msg[0], 'x');
    assert_memory_equal(msg + 1021, "\xc3\xa9", 2);
    cJSON_Delete(evs);

    events_get_stats(rec, &st);
    assert_int_equal(events_dropped(rec), 0);
    assert_int_equal(st.failed, 0);
    events_close(rec);
    events_free(rec);
}

struct newest {
    struct kapi *k;
    const char *name, *want;
};

/* The object's newest Event (by lastTimestamp, then count) says want. */
static bool newest_says(void *arg) {
    struct newest *w = arg;
    int n;
    cJSON *evs = events_of(w->k, "default", w->name, &n);
    bool found = false;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) found =
        found ||
        strcmp(kobj_str(e, "message", NULL) ? kobj_str(e, "message", NULL) : "", w->want) == 0;
    cJSON_Delete(evs);
    return found;
}

/* Six quick weight changes on one IngressRoute. With a per-object burst of
 * 5, the sixth was once dropped and the newest Event said the fifth.
 * Similar events fold into one Event whose message is the newest and whose
 * count is 6. */
static void test_newest_of_quick_repeats_is_always_visible(void **state) {
    struct kapi *k = *state;
    struct event_recorder *rec = events_new(&k->loop, k->ctl, &k->log, "canary-bridge", "host-q");
    assert_non_null(rec);
    for (int i = 1; i <= 6; i++)
        events_post(rec, "default", "traefik.io/v1alpha1", "IngressRoute", "quick", "uid-q",
                    "Normal", "Applied", "weights shop-v1=%d shop-v2=%d from etcd revision %d",
                    100 - 10 * i, 10 * i, 100 + i);
    struct newest w = {k, "quick", "weights shop-v1=40 shop-v2=60 from etcd revision 106"};
    assert_true(support_run_until(&k->loop, newest_says, &w, 5000));
    settle(k, rec);
    int n;
    cJSON *evs = events_of(k, "default", "quick", &n);
    assert_int_equal(n, 1);
    assert_int_equal(jint(cJSON_GetArrayItem(evs, 0), "count"), 6);
    cJSON_Delete(evs);
    events_close(rec);
    events_free(rec);
}

struct posted_n {
    const struct event_recorder *rec;
    uint64_t n;
};

static bool posted_at_least(void *arg) {
    struct posted_n *p = arg;
    struct events_stats st;
    events_get_stats(p->rec, &st);
    return st.posted >= p->n && st.in_flight == 0;
}

static void test_rate_limits_defer_events_never_drop_them(void **state) {
    struct kapi *k = *state;
    struct event_recorder *rec = events_new(&k->loop, k->ctl, &k->log, "canary-bridge", "host-rl");
    assert_non_null(rec);
    struct events_limits lim;
    events_limits_default(&lim);
    lim.global_refill_ms = 20; /* the deferred ones go out in a fraction of a second */
    assert_int_equal(events_set_limits(rec, &lim), 0);
    /* Ten quick occurrences on one object: one series, one POST in flight,
     * the rest folded into one patch. Nothing dropped. */
    for (int i = 0; i < 10; i++)
        events_post(rec, "default", "traefik.io/v1alpha1", "IngressRoute", "burst", NULL, "Normal",
                    "WeightsChanged", "change %d", i);
    struct events_stats st;
    events_get_stats(rec, &st);
    assert_int_equal(st.in_flight, 1);
    assert_int_equal(st.aggregated, 9);
    /* Global: burst 25, 1 used. 30 objects: 24 go at once, 6 wait for tokens
     * and go when the timer finds them. */
    char name[32];
    for (int i = 0; i < 30; i++) {
        snprintf(name, sizeof name, "obj-%d", i);
        events_post(rec, "default", "traefik.io/v1alpha1", "IngressRoute", name, NULL, "Normal",
                    "WeightsChanged", "object %d", i);
    }
    events_get_stats(rec, &st);
    assert_int_equal(st.in_flight, 25);
    assert_true(st.deferred >= 6);
    struct posted_n want = {rec, 31};
    assert_true(support_run_until(&k->loop, posted_at_least, &want, 5000));
    events_get_stats(rec, &st);
    assert_int_equal(st.posted, 31);
    assert_int_equal(st.failed, 0);
    assert_int_equal(events_dropped(rec), 0);
    int n;
    cJSON *evs = events_of(k, "default", "burst", &n);
    assert_int_equal(n, 1);
    assert_int_equal(jint(cJSON_GetArrayItem(evs, 0), "count"), 10);
    assert_string_equal(kobj_str(cJSON_GetArrayItem(evs, 0), "message", NULL), "change 9");
    cJSON_Delete(evs);
    evs = events_of(k, "default", "obj-29", &n);
    assert_int_equal(n, 1);
    cJSON_Delete(evs);
    events_close(rec);
    events_free(rec);

    /* Per object: burst 1, one token per 100 ms. The second occurrence
     * waits for the token (no request in flight to fold into), then is sent
     * as a patch carrying the newest message. */
    rec = events_new(&k->loop, k->ctl, &k->log, "canary-bridge", "host-rl");
    assert_non_null(rec);
    events_limits_default(&lim);
    lim.object_burst = 1;
    lim.object_refill_ms = 100;
    assert_int_equal(events_set_limits(rec, &lim), 0);
    int seq0 = kapi_last_seq(k);
    events_post(rec, "default", "v1", "Service", "refill", NULL, "Normal", "R", "one");
    settle(k, rec);
    events_post(rec, "default", "v1", "Service", "refill", NULL, "Normal", "R", "two");
    events_post(rec, "default", "v1", "Service", "refill", NULL, "Normal", "R", "three");
    events_get_stats(rec, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.deferred, 2);
    struct newest w = {k, "refill", "three"};
    assert_true(support_run_until(&k->loop, newest_says, &w, 5000));
    settle(k, rec);
    assert_int_equal(requests_since(k, seq0, "PATCH", "/events/"), 1);
    evs = events_of(k, "default", "refill", &n);
    assert_int_equal(n, 1);
    assert_int_equal(jint(cJSON_GetArrayItem(evs, 0), "count"), 3);
    cJSON_Delete(evs);
    lim.object_burst = 0;
    assert_int_equal(events_set_limits(rec, &lim), -1);
    events_close(rec);
    events_free(rec);

    /* At most max_in_flight requests; the others wait, then go. */
    rec = events_new(&k->loop, k->ctl, &k->log, "canary-bridge", "host-rl");
    assert_non_null(rec);
    events_limits_default(&lim);
    lim.max_in_flight = 2;
    lim.global_refill_ms = 50;
    assert_int_equal(events_set_limits(rec, &lim), 0);
    kapi_fault(k,
               "{\"method\":\"POST\",\"path_regex\":\"/events$\",\"count\":-1,\"delay_ms\":300}");
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "slow-%d", i);
        events_post(rec, "default", "v1", "Service", name, NULL, "Normal", "Slow", "slow %d", i);
    }
    /* A repeat of an event in flight needs no request of its own. */
    events_post(rec, "default", "v1", "Service", "slow-0", NULL, "Normal", "Slow", "slow %d", 0);
    events_get_stats(rec, &st);
    assert_int_equal(st.in_flight, 2);
    assert_int_equal(st.deferred, 3);
    assert_int_equal(st.aggregated, 1);
    assert_int_equal(events_dropped(rec), 0);
    struct posted_n five = {rec, 5};
    assert_true(support_run_until(&k->loop, posted_at_least, &five, 10000));
    kapi_faults_clear(k);
    settle(k, rec);
    events_get_stats(rec, &st);
    assert_int_equal(st.posted, 5);
    evs = events_of(k, "default", "slow-0", &n);
    assert_int_equal(n, 1);
    assert_int_equal(jint(cJSON_GetArrayItem(evs, 0), "count"), 2);
    cJSON_Delete(evs);
    events_close(rec);
    events_free(rec);
    support_run_for(&k->loop, 10); /* the closed timers free themselves */
}

static void test_failures_logged_once_per_kind_never_retried(void **state) {
    struct kapi *k = *state;
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    assert_non_null(mem);
    struct logger lg;
    logger_init(&lg, LOG_LVL_INFO);
    lg.out = mem;
    struct event_recorder *rec = events_new(&k->loop, k->ctl, &lg, "canary-bridge", "host-f");
    assert_non_null(rec);

    int seq0 = kapi_last_seq(k);
    kapi_fault(k,
               "{\"method\":\"POST\",\"path_regex\":\"/events$\",\"count\":-1,\"status\":403,"
               "\"message\":\"events is forbidden: User \\\"system:serviceaccount:x:y\\\" cannot "
               "create resource \\\"events\\\"\"}");
    char name[32];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "denied-%d", i);
        events_post(rec, "default", "v1", "Service", name, NULL, "Normal", "X", "x %d", i);
        settle(k, rec); /* one after another: each failure is seen */
    }
    kapi_faults_clear(k);
    kapi_fault(k, "{\"method\":\"POST\",\"path_regex\":\"/events$\",\"count\":-1,\"status\":500}");
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "broken-%d", i);
        events_post(rec, "default", "v1", "Service", name, NULL, "Normal", "X", "x %d", i);
        settle(k, rec);
    }
    kapi_faults_clear(k);
    struct events_stats st;
    events_get_stats(rec, &st);
    assert_int_equal(st.failed, 5);
    assert_int_equal(st.posted, 0);
    assert_int_equal(events_dropped(rec), 0);
    /* Never retried: exactly one request per event, also a while later. */
    support_run_for(&k->loop, 300);
    assert_int_equal(requests_since(k, seq0, "POST", "/events"), 5);

    fflush(mem);
    assert_int_equal(count_substr(text, "cannot post an event"), 2);
    assert_int_equal(count_substr(text, "HTTP 403"), 1);
    assert_int_equal(count_substr(text, "deploy/rbac.yaml"), 1);
    assert_int_equal(count_substr(text, "HTTP 500"), 1);

    /* It still works once the API does. */
    events_post(rec, "default", "v1", "Service", "fine", NULL, "Normal", "X", "fine");
    settle(k, rec);
    events_get_stats(rec, &st);
    assert_int_equal(st.posted, 1);
    events_close(rec);
    events_free(rec);
    fclose(mem);
    free(text);
}

static void test_close_cancels_events_in_flight_and_waiting(void **state) {
    struct kapi *k = *state;
    struct event_recorder *rec = events_new(&k->loop, k->ctl, &k->log, "canary-bridge", "host-c");
    assert_non_null(rec);
    kapi_fault(k,
               "{\"method\":\"POST\",\"path_regex\":\"/events$\",\"count\":-1,\"delay_ms\":300}");
    events_post(rec, "default", "v1", "Service", "closing", NULL, "Normal", "X", "one");
    events_post(rec, "default", "v1", "Service", "closing", NULL, "Normal", "X", "two");
    events_post(rec, "default", "v1", "Service", "other", NULL, "Normal", "X", "three");
    struct events_stats st;
    events_get_stats(rec, &st);
    assert_int_equal(st.in_flight, 2); /* "two" waits in its series for "one" */
    events_close(rec);
    events_get_stats(rec, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.failed, 3); /* two in flight, one waiting */
    events_post(rec, "default", "v1", "Service", "closing", NULL, "Normal", "X", "ignored");
    events_get_stats(rec, &st);
    assert_int_equal(st.in_flight, 0);
    events_free(rec);
    support_run_for(&k->loop, 400); /* the cancelled transfers never call back */
    kapi_faults_clear(k);
    events_free(NULL);
    events_close(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_copy_never_splits_a_character),
        cmocka_unit_test(test_event_fields_and_repeats_folded_into_one_event),
        cmocka_unit_test(test_newest_of_quick_repeats_is_always_visible),
        cmocka_unit_test(test_rate_limits_defer_events_never_drop_them),
        cmocka_unit_test(test_failures_logged_once_per_kind_never_retried),
        cmocka_unit_test(test_close_cancels_events_in_flight_and_waiting),
    };
    return cmocka_run_group_tests(tests, kapi_setup, kapi_teardown);
}
