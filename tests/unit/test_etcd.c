/* test_etcd.c - the etcd source (sources/etcd.c) end to end: the real
 * libuv + libcurl path against a scripted etcd gateway (fakehttp.h).
 *
 * One run goes through pagination, events, a dropped stream, resumption from
 * the last revision, compaction and re-list, and stopping from a callback;
 * another through the liveness check of a member that stops answering. The
 * pure protocol code is tested in test_etcd_proto.c. */
/* cmocka.h needs these three before it. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/base64.h"
#include "bridge/lib/http.h"
#include "bridge/lib/timer.h"
#include "sources/etcd_proto.h"

#include "fakehttp.h"

/* What the consumer saw, in order, as one line per callback. */
struct fake {
    uv_loop_t *loop;
    struct fakehttp srv;
    int step; /* index of the next request expected */
    struct logger log;
    struct source_settings cfg;
    char *endpoints[1];
    char url[64];
    struct http_client *http;
    struct source *src;
    uv_timer_t deadline;
    buf_t seen;
    bool done;
    /* Answers one request: the test's etcd script. */
    void (*dispatch)(struct fake *f, struct fakehttp_conn *c, const char *method, const char *path,
                     const char *body);
    const char *head; /* the header block of the request being dispatched */
};

/* Hand a request to the test's script, its header block at hand. */
static void fake_serve(struct fakehttp *srv, struct fakehttp_conn *c,
                       const struct fakehttp_req *rq) {
    struct fake *f = srv->data;
    f->head = rq->head;
    f->dispatch(f, c, rq->method, rq->target, rq->body);
    f->head = NULL;
}

static char *kv_json(const char *key, const char *value, int rev) {
    char *k = base64_encode(key, strlen(key));
    char *v = base64_encode(value, strlen(value));
    char *out = malloc(256);
    assert_non_null(out);
    snprintf(out, 256, "{\"key\":\"%s\",\"mod_revision\":\"%d\",\"value\":\"%s\"}", k, rev, v);
    free(k);
    free(v);
    return out;
}

static char *event_put(const char *key, const char *value, int rev) {
    char *kv = kv_json(key, value, rev);
    char *out = malloc(512);
    assert_non_null(out);
    snprintf(out, 512, "{\"result\":{\"header\":{\"revision\":\"%d\"},\"events\":[{\"kv\":%s}]}}\n",
             rev, kv);
    free(kv);
    return out;
}

/* Decode a base64 field of the request and compare. */
static void expect_b64(const cJSON *obj, const char *name, const char *want, size_t wlen) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    assert_true(cJSON_IsString(it));
    size_t len;
    char *got;
    assert_int_equal(
        base64_decode(it->valuestring, strlen(it->valuestring), BASE64_PAD_OPTIONAL, &got, &len),
        0);
    assert_int_equal(len, wlen);
    assert_memory_equal(got, want, wlen);
    free(got);
}

static void expect_int(const cJSON *obj, const char *name, const char *want) {
    const cJSON *it = cJSON_GetObjectItem(obj, name);
    if (!want) {
        assert_null(it);
        return;
    }
    assert_non_null(it);
    assert_string_equal(it->valuestring, want);
}

/* The script: each request the source should make, and what etcd answers. */
static void fake_dispatch(struct fake *f, struct fakehttp_conn *c, const char *method,
                          const char *path, const char *body) {
    assert_string_equal(method, "POST");
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    const cJSON *cr = cJSON_GetObjectItem(j, "create_request");
    int step = f->step++;
    switch (step) {
    case 0: /* first page, latest revision */
        assert_string_equal(path, "/v3/kv/range");
        expect_b64(j, "key", "canary/", 7);
        expect_b64(j, "range_end", "canary0", 7);
        expect_int(j, "revision", NULL);
        expect_int(j, "limit", "1000");
        {
            char *a = kv_json("canary/a", "1", 5);
            char resp[512];
            snprintf(
                resp, sizeof resp,
                "{\"header\":{\"revision\":\"10\"},\"kvs\":[%s],\"more\":true,\"count\":\"2\"}", a);
            free(a);
            fakehttp_send_json(c, 200, resp);
        }
        break;
    case 1: /* second page: after the last key, pinned to revision 10 */
        assert_string_equal(path, "/v3/kv/range");
        expect_b64(j, "key", "canary/a\0", 9);
        expect_int(j, "revision", "10");
        {
            char *b = kv_json("canary/b", "2", 7);
            char resp[512];
            snprintf(resp, sizeof resp,
                     "{\"header\":{\"revision\":\"12\"},\"kvs\":[%s],\"count\":\"1\"}", b);
            free(b);
            fakehttp_send_json(c, 200, resp);
        }
        break;
    case 2: { /* watch from 11: created, two events (one split across chunks),
               * a progress notify, then the server ends the stream. */
        assert_string_equal(path, "/v3/watch");
        assert_non_null(cr);
        expect_int(cr, "start_revision", "11");
        /* The watch requires a leader (clientv3's WithRequireLeader). */
        assert_non_null(strcasestr(f->head, "\r\nGrpc-Metadata-hasleader: true\r\n"));
        expect_b64(cr, "key", "canary/", 7);
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c,
                              "{\"result\":{\"header\":{\"revision\":\"12\"},\"created\":true}}\n");
        char *e1 = event_put("canary/c", "3", 11);
        size_t half = strlen(e1) / 2;
        char first[512];
        memcpy(first, e1, half);
        first[half] = '\0';
        fakehttp_stream_chunk(c, first);
        fakehttp_stream_chunk(c, e1 + half);
        free(e1);
        fakehttp_stream_chunk(
            c, "{\"result\":{\"header\":{\"revision\":\"12\"},\"events\":[{\"type\":"
               "\"DELETE\",\"kv\":{\"key\":\"Y2FuYXJ5L2E=\",\"mod_revision\":\"12\"}}]}}\n");
        fakehttp_stream_chunk(c, "{\"result\":{\"header\":{\"revision\":\"15\"}}}\n");
        fakehttp_printf(c, "0\r\n\r\n");
        break;
    }
    case 3: /* reconnect: resume after the progress notify, no re-list */
        assert_string_equal(path, "/v3/watch");
        expect_int(cr, "start_revision", "16");
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c,
                              "{\"result\":{\"header\":{\"revision\":\"30\"},\"created\":true}}\n");
        fakehttp_stream_chunk(
            c, "{\"result\":{\"header\":{\"revision\":\"30\"},\"compact_revision\":\"20\","
               "\"canceled\":true}}\n");
        break;
    case 4: /* compacted: full re-list at the newest revision */
        assert_string_equal(path, "/v3/kv/range");
        expect_int(j, "revision", NULL);
        {
            char *b = kv_json("canary/b", "22", 22);
            char resp[512];
            snprintf(resp, sizeof resp, "{\"header\":{\"revision\":\"25\"},\"kvs\":[%s]}", b);
            free(b);
            fakehttp_send_json(c, 200, resp);
        }
        break;
    case 5: { /* watch again after the new snapshot; one event, then the
               * connection drops mid-stream (a second, separate outage) */
        assert_string_equal(path, "/v3/watch");
        expect_int(cr, "start_revision", "26");
        fakehttp_stream_start(c);
        char *e = event_put("canary/d", "4", 26);
        buf_t both = BUF_INIT;
        assert_int_equal(
            buf_printf(&both,
                       "{\"result\":{\"header\":{\"revision\":\"25\"},\"created\":true}}\n%s", e),
            0);
        fakehttp_stream_chunk(c, both.data);
        buf_free(&both);
        free(e);
        fakehttp_end(c);
        break;
    }
    case 6: /* resume after the event; the test stops on the next one */
        assert_string_equal(path, "/v3/watch");
        expect_int(cr, "start_revision", "27");
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c,
                              "{\"result\":{\"header\":{\"revision\":\"26\"},\"created\":true}}\n");
        {
            char *e = event_put("canary/e", "5", 27);
            fakehttp_stream_chunk(c, e);
            free(e);
        }
        break;
    default: fail_msg("unexpected request %d to %s", step, path);
    }
    cJSON_Delete(j);
}

/* Stop everything from inside a source callback (i.e. from inside curl's
 * write callback): exercises the deferred cancel and close paths. */
static void fake_finish(struct fake *f) {
    if (f->done)
        return;
    f->done = true;
    if (f->src)
        f->src->ops->close(f->src); /* freed as the loop runs on */
    http_client_close(f->http);
    fakehttp_close(&f->srv);
    uv_close((uv_handle_t *)&f->deadline, NULL);
}

static void fake_on_snapshot(void *user, const struct source_kv *kvs, size_t n, uint64_t rev) {
    struct fake *f = user;
    buf_printf(&f->seen, "snapshot %llu:", (unsigned long long)rev);
    for (size_t i = 0; i < n; i++)
        buf_printf(&f->seen, " %s=%s@%llu", kvs[i].key, kvs[i].value,
                   (unsigned long long)kvs[i].revision);
    buf_puts(&f->seen, "\n");
}

static void fake_on_event(void *user, enum source_event_type t, const struct source_kv *kv,
                          uint64_t rev) {
    struct fake *f = user;
    buf_printf(&f->seen, "%s %s=%s@%llu\n", t == SOURCE_PUT ? "put" : "delete", kv->key, kv->value,
               (unsigned long long)rev);
    if (rev == 27)
        fake_finish(f);
}

static void fake_on_state(void *user, bool up, const char *reason) {
    struct fake *f = user;
    buf_printf(&f->seen, "%s\n", up ? "up" : "down");
    (void)reason;
}

static void fake_deadline(uv_timer_t *t) {
    struct fake *f = t->data;
    fake_finish(f);
    fail_msg("fake etcd test timed out at step %d; seen:\n%s", f->step,
             f->seen.data ? f->seen.data : "");
}

static void test_source_pages_resumes_and_relists_after_compaction(void **state) {
    (void)state;
    struct fake f;
    memset(&f, 0, sizeof f);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    f.loop = &loop;
    f.dispatch = fake_dispatch;
    fakehttp_start(&f.srv, &loop, fake_serve, &f);

    /* Keep the expected warnings out of the test output, but look at them. */
    FILE *logf = tmpfile();
    assert_non_null(logf);
    logger_init(&f.log, LOG_LVL_INFO);
    f.log.journal = false;
    f.log.out = logf;
    snprintf(f.url, sizeof f.url, "http://127.0.0.1:%d/", f.srv.port);
    f.endpoints[0] = f.url;
    f.cfg.type = SOURCE_ETCD;
    f.cfg.endpoints = f.endpoints;
    f.cfg.n_endpoints = 1;
    f.cfg.prefix = "canary/";

    f.http = http_client_new(&loop, &f.log);
    assert_non_null(f.http);
    struct source_callbacks cb = {fake_on_snapshot, fake_on_event, fake_on_state, &f};
    char err[128];
    f.src = source_new(&loop, f.http, &f.log, &f.cfg, &cb, err, sizeof err);
    assert_non_null(f.src);
    assert_string_equal(f.src->ops->name, "etcd");
    assert_int_equal(uv_timer_init(&loop, &f.deadline), 0);
    f.deadline.data = &f;
    timer_arm(&f.deadline, fake_deadline, 5000, 0);

    assert_int_equal(f.src->ops->start(f.src), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    /* Every handle, including the client's and the source's, is closed. */
    assert_int_equal(uv_loop_close(&loop), 0);

    assert_int_equal(f.step, 7);
    assert_string_equal(f.seen.data, "snapshot 10: canary/a=1@5 canary/b=2@7\n"
                                     "up\n"
                                     "put canary/c=3@11\n"
                                     "delete canary/a=@12\n"
                                     "down\n"
                                     "up\n"
                                     "snapshot 25: canary/b=22@22\n"
                                     "put canary/d=4@26\n"
                                     "down\n"
                                     "up\n"
                                     "put canary/e=5@27\n");

    /* Each outage was logged once as a warning, the compaction as info. */
    rewind(logf);
    char line[1024];
    int warns = 0, compaction = 0;
    while (fgets(line, sizeof line, logf)) {
        if (strstr(line, " warn "))
            warns++;
        if (strstr(line, "compact revision 20") && strstr(line, "re-listing"))
            compaction++;
    }
    fclose(logf);
    assert_int_equal(warns, 2);
    assert_int_equal(compaction, 1);
    buf_free(&f.seen);
}

/* ---- the liveness check of the watched member ----
 * The watch stays open but the member stops answering (frozen): the status
 * request that checks it gets no answer, so the source drops the watch,
 * reports the outage and watches again from the last revision + 1. */

static void probe_dispatch(struct fake *f, struct fakehttp_conn *c, const char *method,
                           const char *path, const char *body) {
    assert_string_equal(method, "POST");
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    const cJSON *cr = cJSON_GetObjectItem(j, "create_request");
    int step = f->step++;
    switch (step) {
    case 0:
        assert_string_equal(path, "/v3/kv/range");
        fakehttp_send_json(c, 200, "{\"header\":{\"revision\":\"25\"}}");
        break;
    case 1:   /* the watch; an event, then silence */
    case 4: { /* watched again after the failed check: resumes, no re-list */
        assert_string_equal(path, "/v3/watch");
        assert_non_null(strcasestr(f->head, "\r\nGrpc-Metadata-hasleader: true\r\n"));
        expect_int(cr, "start_revision", step == 1 ? "26" : "27");
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c,
                              "{\"result\":{\"header\":{\"revision\":\"25\"},\"created\":true}}\n");
        char *e = step == 1 ? event_put("canary/x", "1", 26) : event_put("canary/y", "2", 27);
        fakehttp_stream_chunk(c, e);
        free(e);
        break;
    }
    case 2: /* the first check is answered */
        assert_string_equal(path, "/v3/maintenance/status");
        fakehttp_send_json(c, 200, "{\"header\":{\"revision\":\"26\"},\"version\":\"3.4.23\"}");
        break;
    case 3: /* the second is not: the member froze */
        assert_string_equal(path, "/v3/maintenance/status");
        break;
    default: fail_msg("unexpected request %d to %s", step, path);
    }
    cJSON_Delete(j);
}

static void test_liveness_check_moves_off_a_frozen_member(void **state) {
    (void)state;
    struct fake f;
    memset(&f, 0, sizeof f);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    f.loop = &loop;
    f.dispatch = probe_dispatch;
    fakehttp_start(&f.srv, &loop, fake_serve, &f);
    FILE *logf = tmpfile();
    assert_non_null(logf);
    logger_init(&f.log, LOG_LVL_INFO);
    f.log.journal = false;
    f.log.out = logf;
    snprintf(f.url, sizeof f.url, "http://127.0.0.1:%d", f.srv.port);
    f.endpoints[0] = f.url;
    f.cfg.type = SOURCE_ETCD;
    f.cfg.endpoints = f.endpoints;
    f.cfg.n_endpoints = 1;
    f.cfg.prefix = "canary/";
    f.cfg.liveness_ms = 300;
    f.http = http_client_new(&loop, &f.log);
    assert_non_null(f.http);
    struct source_callbacks cb = {fake_on_snapshot, fake_on_event, fake_on_state, &f};
    char err[128];
    f.src = source_new(&loop, f.http, &f.log, &f.cfg, &cb, err, sizeof err);
    assert_non_null(f.src);
    assert_int_equal(uv_timer_init(&loop, &f.deadline), 0);
    f.deadline.data = &f;
    timer_arm(&f.deadline, fake_deadline, 10000, 0);

    assert_int_equal(f.src->ops->start(f.src), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);

    assert_int_equal(f.step, 5);
    assert_string_equal(f.seen.data, "snapshot 25:\n"
                                     "up\n"
                                     "put canary/x=1@26\n"
                                     "down\n"
                                     "up\n"
                                     "put canary/y=2@27\n");
    rewind(logf);
    char line[1024];
    int probe_warns = 0;
    while (fgets(line, sizeof line, logf))
        if (strstr(line, " warn ") && strstr(line, "did not answer the liveness check"))
            probe_warns++;
    fclose(logf);
    assert_int_equal(probe_warns, 1);
    buf_free(&f.seen);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_pages_resumes_and_relists_after_compaction),
        cmocka_unit_test(test_liveness_check_moves_off_a_frozen_member),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
