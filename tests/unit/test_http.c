/* test_http.c - the HTTP client (bridge/lib/http.h): reading a header of
 * an answer, and its re-entrancy rules on the real libuv + libcurl path
 * against a scripted server (fakehttp.h): requests started, cancelled and
 * the client closed from inside its own callbacks. */
/* cmocka.h needs these three before it. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <string.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/http.h"
#include "bridge/lib/log.h"
#include "bridge/lib/timer.h"

#include "fakehttp.h"

static void test_http_result_header(void **state) {
    (void)state;
    struct http_result res = {0};
    res.headers = "HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\n"
                  "X-Etcd-Index: 12\r\nx-empty:\r\n\r\n";
    char v[64];
    assert_int_equal(http_result_header(&res, "content-type", v, sizeof v), 0);
    assert_string_equal(v, "application/json");
    assert_int_equal(http_result_header(&res, "X-ETCD-INDEX", v, sizeof v), 0);
    assert_string_equal(v, "12");
    assert_int_equal(http_result_header(&res, "X-Empty", v, sizeof v), 0);
    assert_string_equal(v, "");
    assert_int_equal(http_result_header(&res, "Content", v, sizeof v), -1);
    char small[4];
    assert_int_equal(http_result_header(&res, "Content-Type", small, sizeof small), 0);
    assert_string_equal(small, "app");
}

/* ---- re-entrancy, against a scripted server ---- */

/* What the callbacks saw, in order, as one line each. */
struct fake {
    struct fakehttp srv;
    struct logger log;
    struct http_client *http;
    uv_timer_t deadline;
    buf_t seen;
    struct http_req *stream_req, *slow_req;
};

/* Close the client, the server and the deadline: everything on the loop. */
static void fake_finish(struct fake *f) {
    http_client_close(f->http);
    fakehttp_close(&f->srv);
    uv_close((uv_handle_t *)&f->deadline, NULL);
}

static void fake_deadline(uv_timer_t *t) {
    struct fake *f = t->data;
    fake_finish(f);
    fail_msg("HTTP client test timed out; seen:\n%s", f->seen.data ? f->seen.data : "");
}

static void http_dispatch(struct fakehttp *srv, struct fakehttp_conn *c,
                          const struct fakehttp_req *rq) {
    const char *method = rq->method, *path = rq->target, *body = rq->body;
    (void)srv;
    assert_string_equal(method, strcmp(path, "/put") == 0 ? "PUT" : "GET");
    if (strcmp(path, "/stream") == 0) {
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c, "tick\n");
    } else if (strcmp(path, "/slow") == 0) {
        /* never answered */
    } else if (strcmp(path, "/ok") == 0) {
        fakehttp_printf(c, "HTTP/1.1 200 OK\r\nX-Test:  yes \r\nContent-Length: 5\r\n\r\nhello");
    } else if (strcmp(path, "/put") == 0) {
        assert_string_equal(body, "{\"a\":1}");
        fakehttp_printf(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 7\r\n\r\nmissing");
    } else {
        fail_msg("unexpected path %s", path);
    }
}

static void http_never_done(struct http_req *r, const struct http_result *res) {
    (void)r;
    (void)res;
    fail_msg("a cancelled request reported completion");
}

static void http_put_done(struct http_req *r, const struct http_result *res) {
    struct fake *f = http_req_user(r);
    assert_int_equal(res->curl, CURLE_OK);
    assert_int_equal(res->status, 404);
    assert_string_equal(res->body, "missing");
    buf_puts(&f->seen, "put-done\n");
    /* Closing the client from a done callback: nothing else may run. */
    fake_finish(f);
}

static void http_ok_done(struct http_req *r, const struct http_result *res) {
    struct fake *f = http_req_user(r);
    assert_int_equal(res->curl, CURLE_OK);
    assert_string_equal(res->error, "");
    assert_int_equal(res->status, 200);
    assert_int_equal(res->body_len, 5);
    assert_string_equal(res->body, "hello");
    char v[16];
    assert_int_equal(http_result_header(res, "x-test", v, sizeof v), 0);
    assert_string_equal(v, "yes");
    buf_puts(&f->seen, "ok-done\n");
    /* Starting a request from a done callback. */
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/put", f->srv.port);
    struct http_req *d = http_req_new(f->http, "PUT", url);
    assert_non_null(d);
    assert_int_equal(http_req_header(d, "Content-Type: application/json"), 0);
    assert_int_equal(http_req_body(d, "{\"a\":1}", 7), 0);
    http_req_set_user(d, f);
    assert_int_equal(http_req_start(d, http_put_done), 0);
}

static int http_stream_data(struct http_req *r, const char *data, size_t len) {
    struct fake *f = http_req_user(r);
    assert_true(len > 0);
    (void)data;
    buf_puts(&f->seen, "data\n");
    /* Inside curl: start another request, cancel a different one, then
     * cancel this very one. All must be deferred safely. */
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", f->srv.port);
    struct http_req *c = http_req_new(f->http, "GET", url);
    assert_non_null(c);
    http_req_set_user(c, f);
    http_req_timeouts(c, 2000, 1000);
    assert_int_equal(http_req_start(c, http_ok_done), 0);
    assert_int_equal(http_client_active(f->http), 3);
    http_req_cancel(f->slow_req);
    http_req_cancel(r);
    assert_int_equal(http_client_active(f->http), 3); /* still inside curl */
    return 0;
}

static void test_http_reentrancy(void **state) {
    (void)state;
    struct fake f;
    memset(&f, 0, sizeof f);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    fakehttp_start(&f.srv, &loop, http_dispatch, &f);
    logger_init(&f.log, LOG_LVL_WARN);
    f.http = http_client_new(&loop, &f.log);
    assert_non_null(f.http);
    assert_int_equal(uv_timer_init(&loop, &f.deadline), 0);
    f.deadline.data = &f;
    timer_arm(&f.deadline, fake_deadline, 5000, 0);

    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/slow", f.srv.port);
    f.slow_req = http_req_new(f.http, "GET", url);
    assert_non_null(f.slow_req);
    http_req_set_user(f.slow_req, &f);
    assert_int_equal(http_req_start(f.slow_req, http_never_done), 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stream", f.srv.port);
    f.stream_req = http_req_new(f.http, "GET", url);
    assert_non_null(f.stream_req);
    http_req_set_user(f.stream_req, &f);
    http_req_on_data(f.stream_req, http_stream_data);
    assert_int_equal(http_req_start(f.stream_req, http_never_done), 0);
    assert_int_equal(http_client_active(f.http), 2);
    /* A request that is never started is the caller's to free. */
    struct http_req *unused = http_req_new(f.http, "GET", url);
    assert_non_null(unused);
    http_req_free(unused);

    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_string_equal(f.seen.data, "data\nok-done\nput-done\n");
    buf_free(&f.seen);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_result_header),
        cmocka_unit_test(test_http_reentrancy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
