/* test_httpd.c - the operations HTTP server against a real TCP client on the
 * same loop: routing (query ignored), HEAD, 405, 400/431/505, keep-alive with
 * pipelining, Connection: close, the head timeout, the connection limit,
 * closing with clients attached, and listen-address parsing. The loop is
 * driven until a condition holds, bounded by a deadline (support.h): a
 * failure, never a hang, and no sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/httpd.h"
#include "support.h"

struct client {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    buf_t in;
    char *pending; /* sent once connected */
    bool connected, eof, closed;
    char rbuf[16384];
};

struct fx {
    uv_loop_t loop;
    struct logger log;
    struct httpd *h;
    int calls;
    char method[16], path[256];
    struct client c[4];
};

/* ---- the handler under test ---- */

static void handler(void *user, const char *method, const char *path, struct httpd_response *res) {
    struct fx *f = user;
    f->calls++;
    snprintf(f->method, sizeof f->method, "%s", method);
    snprintf(f->path, sizeof f->path, "%s", path);
    if (strcmp(path, "/metrics") == 0) {
        res->content_type = "text/plain; version=0.0.4; charset=utf-8";
        assert_int_equal(buf_puts(&res->body, "up 1\n"), 0);
    } else if (strcmp(path, "/quit") == 0) {
        /* Closing the server from inside the handler must be safe. */
        httpd_close(f->h);
        f->h = NULL;
        assert_int_equal(buf_puts(&res->body, "bye\n"), 0);
    } else if (strcmp(path, "/healthz") == 0) {
        assert_int_equal(buf_puts(&res->body, "ok\n"), 0);
    } else if (strcmp(path, "/page") == 0) {
        res->content_type = "text/html; charset=utf-8";
        res->headers = "X-Content-Type-Options: nosniff\r\n";
        assert_int_equal(buf_puts(&res->body, "<p>"), 0);
    } else {
        res->status = 404;
        assert_int_equal(buf_puts(&res->body, "not found\n"), 0);
    }
}

/* ---- the client ---- */

static void on_client_closed(uv_handle_t *h) {
    struct client *c = h->data;
    c->closed = true;
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    struct client *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    struct client *c = s->data;
    if (n > 0) {
        assert_int_equal(buf_append(&c->in, buf->base, (size_t)n), 0);
    } else if (n < 0) {
        c->eof = true;
        uv_close((uv_handle_t *)&c->tcp, on_client_closed);
    }
}

static void client_written(uv_write_t *req, int status) {
    struct client *c = req->data;
    free(c->pending);
    c->pending = NULL;
    (void)status; /* the server may close first (431); the read side reports it */
}

static void client_send(struct client *c, const char *data) {
    c->pending = strdup(data);
    assert_non_null(c->pending);
    uv_buf_t b = uv_buf_init(c->pending, (unsigned)strlen(c->pending));
    c->write_req.data = c;
    assert_int_equal(uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, client_written), 0);
}

static void client_connected(uv_connect_t *req, int status) {
    struct client *c = req->data;
    assert_int_equal(status, 0);
    c->connected = true;
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read), 0);
    if (c->pending) {
        char *data = c->pending;
        c->pending = NULL;
        client_send(c, data);
        free(data);
    }
}

static void client_open(struct fx *f, struct client *c, const char *data) {
    memset(c, 0, sizeof *c);
    assert_int_equal(uv_tcp_init(&f->loop, &c->tcp), 0);
    c->tcp.data = c;
    c->connect_req.data = c;
    struct sockaddr_in sa;
    assert_int_equal(uv_ip4_addr("127.0.0.1", httpd_port(f->h), &sa), 0);
    if (data) {
        c->pending = strdup(data);
        assert_non_null(c->pending);
    }
    assert_int_equal(
        uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&sa, client_connected),
        0);
}

static bool client_eof(void *arg) {
    return ((struct client *)arg)->eof;
}

/* Number of complete responses in c->in (HEAD answers carry no body). */
static int responses(const struct client *c, bool head) {
    int n = 0;
    const char *p = c->in.data;
    if (!p)
        return 0;
    for (;;) {
        const char *end = strstr(p, "\r\n\r\n");
        if (!end)
            return n;
        const char *cl = strstr(p, "Content-Length: ");
        size_t body = cl && cl < end && !head ? strtoul(cl + 16, NULL, 10) : 0;
        if ((size_t)(c->in.data + c->in.len - (end + 4)) < body)
            return n;
        p = end + 4 + body;
        n++;
    }
}

struct want {
    struct client *c;
    int n;
};

static bool has_responses(void *arg) {
    struct want *w = arg;
    return responses(w->c, false) >= w->n;
}

struct conns {
    struct fx *f;
    unsigned n;
};

static bool conns_are(void *arg) {
    struct conns *c = arg;
    return httpd_connections(c->f->h) == c->n;
}

static bool starts_with(const char *s, const char *prefix) {
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- fixture ---- */

static int setup(void **state) {
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    logger_init(&f->log, LOG_LVL_ERROR);
    char err[256];
    f->h = httpd_new(&f->loop, &f->log, handler, f);
    assert_non_null(f->h);
    if (httpd_start(f->h, "127.0.0.1:0", err, sizeof err) < 0)
        fail_msg("httpd_start: %s", err);
    assert_true(httpd_port(f->h) > 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    struct fx *f = *state;
    httpd_close(f->h);
    for (size_t i = 0; i < 4; i++) {
        struct client *c = &f->c[i];
        if (c->tcp.loop && !c->closed && !uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, on_client_closed);
    }
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* every handle closed */
    for (size_t i = 0; i < 4; i++) {
        buf_free(&f->c[i].in);
        free(f->c[i].pending);
    }
    free(f);
    return 0;
}

/* ---- tests ---- */

static void test_get_routes_without_query(void **state) {
    struct fx *f = *state;
    struct client *c = &f->c[0];
    client_open(f, c, "GET /healthz?verbose=1#x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_true(support_run_until(&f->loop, client_eof, c, 5000));
    assert_string_equal(c->in.data, "HTTP/1.1 200 OK\r\n"
                                    "Content-Type: text/plain; charset=utf-8\r\n"
                                    "Content-Length: 3\r\n"
                                    "Cache-Control: no-store\r\n"
                                    "Connection: close\r\n"
                                    "\r\n"
                                    "ok\n");
    assert_int_equal(f->calls, 1);
    assert_string_equal(f->method, "GET");
    assert_string_equal(f->path, "/healthz");
}

static void test_extra_headers(void **state) {
    struct fx *f = *state;
    struct client *c = &f->c[0];
    client_open(f, c, "GET /page HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_true(support_run_until(&f->loop, client_eof, c, 5000));
    assert_string_equal(c->in.data, "HTTP/1.1 200 OK\r\n"
                                    "Content-Type: text/html; charset=utf-8\r\n"
                                    "Content-Length: 3\r\n"
                                    "Cache-Control: no-store\r\n"
                                    "Connection: close\r\n"
                                    "X-Content-Type-Options: nosniff\r\n"
                                    "\r\n"
                                    "<p>");
}

static void test_head_has_length_but_no_body(void **state) {
    struct fx *f = *state;
    struct client *c = &f->c[0];
    client_open(f, c, "HEAD /metrics HTTP/1.0\r\n\r\n"); /* 1.0: closes by default */
    assert_true(support_run_until(&f->loop, client_eof, c, 5000));
    assert_string_equal(c->in.data, "HTTP/1.1 200 OK\r\n"
                                    "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                                    "Content-Length: 5\r\n"
                                    "Cache-Control: no-store\r\n"
                                    "Connection: close\r\n"
                                    "\r\n");
    assert_string_equal(f->method, "HEAD");
}

static void test_keepalive_and_pipelining(void **state) {
    struct fx *f = *state;
    struct client *c = &f->c[0];
    /* Two requests in one segment, answered in order on one connection. */
    client_open(f, c,
                "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /missing HTTP/1.1\r\nHost: t\r\n\r\n");
    struct want w = {c, 2};
    assert_true(support_run_until(&f->loop, has_responses, &w, 5000));
    assert_int_equal(f->calls, 2);
    assert_string_equal(f->path, "/missing");
    const char *first = strstr(c->in.data, "HTTP/1.1 200 OK\r\n");
    const char *second = strstr(c->in.data, "HTTP/1.1 404 Not Found\r\n");
    assert_non_null(first);
    assert_non_null(second);
    assert_true(first < second);
    assert_non_null(strstr(c->in.data, "Connection: keep-alive\r\n"));
    assert_non_null(strstr(c->in.data, "\r\n\r\nnot found\n"));
    assert_false(c->eof);
    assert_int_equal(httpd_connections(f->h), 1);

    /* A third request on the same connection, then it closes as asked. */
    client_send(c, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_true(support_run_until(&f->loop, client_eof, c, 5000));
    assert_int_equal(responses(c, false), 3);
    assert_int_equal(f->calls, 3);
    assert_non_null(strstr(c->in.data, "Connection: close\r\n\r\nup 1\n"));
    struct conns zero = {f, 0};
    assert_true(support_run_until(&f->loop, conns_are, &zero, 5000));
}

static void test_method_not_allowed(void **state) {
    struct fx *f = *state;
    struct client *c = &f->c[0];
    /* A body is announced and never read: the server answers and closes. */
    client_open(f, c, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_true(support_run_until(&f->loop, client_eof, c, 5000));
    assert_true(starts_with(c->in.data, "HTTP/1.1 405 Method Not Allowed\r\n"));
    assert_non_null(strstr(c->in.data, "\r\nAllow: GET, HEAD\r\n"));
    assert_non_null(strstr(c->in.data, "\r\nConnection: close\r\n"));
    assert_int_equal(f->calls, 0);
}

static void test_head_too_large(void **state) {
    struct fx *f = *state;
    struct client *c = &f->c[0];
    buf_t req = BUF_INIT;
    assert_int_equal(buf_puts(&req, "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: "), 0);
    for (int i = 0; i < 9000; i++)
        assert_int_equal(buf_putc(&req, 'a'), 0);
    client_open(f, c, req.data); /* no end of head within 8 KiB */
    buf_free(&req);
    assert_true(support_run_until(&f->loop, client_eof, c, 5000));
    assert_non_null(c->in.data);
    assert_true(starts_with(c->in.data, "HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    assert_int_equal(f->calls, 0);
}

static void test_malformed_requests(void **state) {
    struct fx *f = *state;
    static const struct {
        const char *req;
        const char *status;
    } cases[] = {
        {"GARBAGE\r\n\r\n", "HTTP/1.1 400 "},
        {"GET /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "}, /* 1.1 without Host */
        {"GET metrics HTTP/1.1\r\nHost: t\r\n\r\n", "HTTP/1.1 400 "},
        {"GET /metrics HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n", "HTTP/1.1 400 "},
        {"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", "HTTP/1.1 400 "},
        {"GET /metrics HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", "HTTP/1.1 400 "},
        {"GET  /metrics HTTP/1.1\r\nHost: t\r\n\r\n", "HTTP/1.1 400 "},
        {"GET /metrics HTTP/2.0\r\nHost: t\r\n\r\n", "HTTP/1.1 505 "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct client *c = &f->c[0];
        buf_free(&c->in);
        client_open(f, c, cases[i].req);
        assert_true(support_run_until(&f->loop, client_eof, c, 5000));
        if (!starts_with(c->in.data, cases[i].status))
            fail_msg("case %zu: got \"%s\"", i, c->in.data ? c->in.data : "");
        assert_non_null(strstr(c->in.data, "\r\nConnection: close\r\n"));
        while (!c->closed)
            uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_int_equal(f->calls, 0);
}

static void test_absolute_form_and_leading_crlf(void **state) {
    struct fx *f = *state;
    struct client *c = &f->c[0];
    client_open(f, c,
                "\r\nGET http://t:9464/metrics?x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_true(support_run_until(&f->loop, client_eof, c, 5000));
    assert_true(starts_with(c->in.data, "HTTP/1.1 200 OK\r\n"));
    assert_string_equal(f->path, "/metrics");
}

static void test_head_timeout(void **state) {
    struct fx *f = *state;
    struct httpd_limits lim = {.read_timeout_ms = 30};
    httpd_set_limits(f->h, &lim);
    /* A partial request line is never completed: dropped without answer. */
    struct client *c = &f->c[0];
    client_open(f, c, "GET /metr");
    assert_true(support_run_until(&f->loop, client_eof, c, 5000));
    assert_int_equal(c->in.len, 0);
    /* An idle persistent connection is dropped after its answer too. */
    struct client *d = &f->c[1];
    client_open(f, d, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(support_run_until(&f->loop, client_eof, d, 5000));
    assert_int_equal(responses(d, false), 1);
    assert_int_equal(f->calls, 1);
}

static void test_connection_limit(void **state) {
    struct fx *f = *state;
    struct httpd_limits lim = {.max_conns = 2};
    httpd_set_limits(f->h, &lim);
    client_open(f, &f->c[0], NULL);
    client_open(f, &f->c[1], NULL);
    struct conns two = {f, 2};
    assert_true(support_run_until(&f->loop, conns_are, &two, 5000));
    /* The third is accepted and closed at once, without an answer. */
    client_open(f, &f->c[2], "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(support_run_until(&f->loop, client_eof, &f->c[2], 5000));
    assert_int_equal(f->c[2].in.len, 0);
    assert_int_equal(f->calls, 0);
    /* The two admitted ones still work. */
    client_send(&f->c[0], "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    client_send(&f->c[1], "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    struct want w0 = {&f->c[0], 1}, w1 = {&f->c[1], 1};
    assert_true(support_run_until(&f->loop, has_responses, &w0, 5000));
    assert_true(support_run_until(&f->loop, has_responses, &w1, 5000));
    assert_int_equal(f->calls, 2);
}

static bool both_eof(void *arg) {
    struct fx *f = arg;
    return f->c[0].eof && f->c[1].eof;
}

static void test_close_drops_connections(void **state) {
    struct fx *f = *state;
    client_open(f, &f->c[0], NULL);
    client_open(f, &f->c[1], "GET /health"); /* mid-request */
    struct conns two = {f, 2};
    assert_true(support_run_until(&f->loop, conns_are, &two, 5000));
    httpd_close(f->h);
    assert_true(support_run_until(&f->loop, both_eof, f, 5000));
    assert_int_equal(f->calls, 0);
    f->h = NULL; /* freed by its own close callbacks; teardown runs the loop dry */
}

static void test_close_from_handler(void **state) {
    struct fx *f = *state;
    client_open(f, &f->c[0], "GET /quit HTTP/1.1\r\nHost: t\r\n\r\n");
    client_open(f, &f->c[1], NULL);
    assert_true(support_run_until(&f->loop, client_eof, &f->c[0], 5000));
    assert_true(support_run_until(&f->loop, client_eof, &f->c[1], 5000));
    assert_null(f->h);
    assert_int_equal(f->calls, 1);
    assert_int_equal(f->c[0].in.len, 0); /* the answer is dropped with the server */
}

static void test_parse_listen(void **state) {
    (void)state;
    struct sockaddr_storage ss;
    char err[128];
    assert_int_equal(httpd_parse_listen("127.0.0.1:9464", &ss, err, sizeof err), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 9464);
    assert_int_equal(httpd_parse_listen("[::1]:80", &ss, err, sizeof err), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(httpd_parse_listen(":0", &ss, err, sizeof err), 0);
    assert_int_equal(ss.ss_family, AF_INET6); /* all interfaces, dual stack */
    assert_int_equal(httpd_parse_listen("localhost:1", &ss, err, sizeof err), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    static const char *const bad[] = {
        "",         "9464",      "127.0.0.1:65536", "::1:80", "[::1]80", "[]:80", "host.example:80",
        "1.2.3.4:", "1.2.3.4:x", "[1.2.3.4]:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (httpd_parse_listen(bad[i], &ss, err, sizeof err) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_true(err[0] != '\0');
    }
}

static void test_address_in_use(void **state) {
    struct fx *f = *state;
    char listen[64], err[256] = "";
    snprintf(listen, sizeof listen, "127.0.0.1:%d", httpd_port(f->h));
    struct httpd *h2 = httpd_new(&f->loop, &f->log, handler, f);
    assert_non_null(h2);
    assert_int_equal(httpd_start(h2, listen, err, sizeof err), -1);
    assert_non_null(strstr(err, listen));
    httpd_close(h2); /* released by the loop in teardown */
}

static void test_any_address(void **state) {
    struct fx *f = *state;
    char err[256];
    struct httpd *h2 = httpd_new(&f->loop, &f->log, handler, f);
    assert_non_null(h2);
    if (httpd_start(h2, ":0", err, sizeof err) < 0)
        fail_msg("httpd_start(:0): %s", err);
    assert_true(httpd_port(h2) > 0);
    assert_int_not_equal(httpd_port(h2), httpd_port(f->h));
    httpd_close(h2);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN); /* as the daemon does: a reset peer is an error, not death */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_routes_without_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_has_length_but_no_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_and_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_method_not_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absolute_form_and_leading_crlf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_drops_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_address_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_any_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extra_headers, setup, teardown),
        cmocka_unit_test(test_parse_listen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
