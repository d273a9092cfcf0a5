/* fakehttp.c - a scripted HTTP/1.1 server on a unit test's loop; see
 * fakehttp.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bridge/lib/buf.h"

#include "fakehttp.h"

struct fakehttp_conn {
    uv_tcp_t tcp;
    struct fakehttp *srv;
    buf_t in;
    bool closing;
    struct list_node link; /* on fakehttp.conns */
};

struct fakehttp_write {
    uv_write_t req;
    struct fakehttp_conn *conn;
    bool close_after;
    char data[];
};

static void conn_closed(uv_handle_t *h) {
    struct fakehttp_conn *c = h->data;
    buf_free(&c->in);
    free(c);
}

static void conn_close(struct fakehttp_conn *c) {
    if (c->closing)
        return;
    c->closing = true;
    list_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void write_done(uv_write_t *req, int status) {
    struct fakehttp_write *w = (struct fakehttp_write *)req;
    (void)status;
    if (w->close_after)
        conn_close(w->conn);
    free(w);
}

static void conn_write(struct fakehttp_conn *c, const char *data, size_t len, bool close_after) {
    struct fakehttp_write *w = malloc(sizeof *w + len);
    assert_non_null(w);
    if (len)
        memcpy(w->data, data, len);
    w->conn = c;
    w->close_after = close_after;
    uv_buf_t ub = uv_buf_init(w->data, (unsigned)len);
    assert_int_equal(uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, write_done), 0);
}

void fakehttp_send(struct fakehttp_conn *c, const char *data, size_t len) {
    conn_write(c, data, len, false);
}

void fakehttp_printf(struct fakehttp_conn *c, const char *fmt, ...) {
    buf_t b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    assert_int_equal(buf_vprintf(&b, fmt, ap), 0);
    va_end(ap);
    conn_write(c, b.data, b.len, false);
    buf_free(&b);
}

void fakehttp_end(struct fakehttp_conn *c) {
    conn_write(c, "", 0, true);
}

void fakehttp_send_json(struct fakehttp_conn *c, int status, const char *json) {
    fakehttp_printf(
        c, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
        status, strlen(json), json);
}

void fakehttp_stream_start(struct fakehttp_conn *c) {
    fakehttp_printf(
        c,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
}

void fakehttp_stream_chunk(struct fakehttp_conn *c, const char *data) {
    fakehttp_printf(c, "%zx\r\n%s\r\n", strlen(data), data);
}

char *fakehttp_header(const struct fakehttp_req *rq, const char *name, char *out, size_t outlen) {
    size_t nlen = strlen(name);
    for (const char *p = rq->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%.*s", (int)(len - (size_t)(v - p)), v);
            return out;
        }
        if (!eol)
            break;
        p = eol + 2;
    }
    return NULL;
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    (void)h;
    b->base = malloc(hint);
    b->len = b->base ? hint : 0;
}

/* Hand every complete request in the buffer to the dispatch callback. */
static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    struct fakehttp_conn *c = s->data;
    if (n < 0) {
        free(b->base);
        conn_close(c);
        return;
    }
    assert_int_equal(buf_append(&c->in, b->base, (size_t)n), 0);
    free(b->base);
    while (!c->closing) {
        char *hdr_end = c->in.data ? strstr(c->in.data, "\r\n\r\n") : NULL;
        if (!hdr_end)
            return;
        size_t hlen = (size_t)(hdr_end - c->in.data) + 4;
        const char *cl = strcasestr(c->in.data, "\r\nContent-Length:");
        size_t blen = cl && cl < hdr_end ? strtoul(cl + 17, NULL, 10) : 0;
        if (c->in.len < hlen + blen)
            return;
        char method[16], target[512];
        assert_int_equal(sscanf(c->in.data, "%15s %511s HTTP/1.1", method, target), 2);
        const char *line_end = strstr(c->in.data, "\r\n");
        char *head = strndup(c->in.data, hlen);
        char *headers = strndup(line_end + 2, (size_t)(hdr_end - line_end));
        char *body = strndup(c->in.data + hlen, blen);
        assert_non_null(head);
        assert_non_null(headers);
        assert_non_null(body);
        buf_consume(&c->in, hlen + blen);
        struct fakehttp_req rq = {method, target, head, headers, body, blen};
        c->srv->dispatch(c->srv, c, &rq);
        free(head);
        free(headers);
        free(body);
    }
}

static void on_accept(uv_stream_t *server, int status) {
    assert_int_equal(status, 0);
    struct fakehttp *srv = server->data;
    struct fakehttp_conn *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->srv = srv;
    assert_int_equal(uv_tcp_init(srv->loop, &c->tcp), 0);
    c->tcp.data = c;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
    list_push_front(&srv->conns, &c->link);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read), 0);
}

void fakehttp_start(struct fakehttp *srv, uv_loop_t *loop, fakehttp_dispatch_cb dispatch,
                    void *data) {
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->dispatch = dispatch;
    srv->data = data;
    list_init(&srv->conns);
    assert_int_equal(uv_tcp_init(loop, &srv->listener), 0);
    srv->listener.data = srv;
    struct sockaddr_in addr;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
    assert_int_equal(uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&srv->listener, 16, on_accept), 0);
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    assert_int_equal(uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen), 0);
    srv->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

static void listener_closed(uv_handle_t *h) {
    (void)h;
}

void fakehttp_close(struct fakehttp *srv) {
    if (srv->closed)
        return;
    srv->closed = true;
    uv_close((uv_handle_t *)&srv->listener, listener_closed);
    while (!list_empty(&srv->conns))
        conn_close(list_entry(list_first(&srv->conns), struct fakehttp_conn, link));
}
