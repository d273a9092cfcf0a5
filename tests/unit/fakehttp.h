/* fakehttp.h - a scripted HTTP/1.1 server on a unit test's loop.
 *
 * It stands in for a remote the code under test talks to over plain HTTP:
 * the etcd gateway, the Consul agent, any URL given to the HTTP client. It
 * listens on a free loopback port, reads each request whole (the header block
 * and a Content-Length body) and hands it to the test's dispatch callback,
 * which answers with any bytes it likes: a whole response, the start or a
 * chunk of a stream, or nothing at all, to leave the request hanging. The
 * test decides what is a wrong request (cmocka assertions in the callback).
 *
 *     fakehttp_start(&srv, &loop, my_dispatch, my_state);
 *     ... point the client at http://127.0.0.1:<srv.port>/ and run the loop ...
 *     fakehttp_close(&srv);         (also from inside a callback)
 *
 * Assertions are cmocka's: include this after <cmocka.h>. */
#ifndef CB_TEST_FAKEHTTP_H
#define CB_TEST_FAKEHTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "bridge/lib/list.h"

struct fakehttp;
struct fakehttp_conn; /* one accepted connection; valid during dispatch */

/* One request, valid during the dispatch callback only. */
struct fakehttp_req {
    const char *method;
    const char *target;  /* path and query */
    const char *head;    /* the whole header block, request line to blank line */
    const char *headers; /* the header lines alone, each ending in "\r\n" */
    const char *body;    /* NUL-terminated */
    size_t body_len;
};

typedef void (*fakehttp_dispatch_cb)(struct fakehttp *srv, struct fakehttp_conn *c,
                                     const struct fakehttp_req *rq);

struct fakehttp {
    /* public */
    void *data; /* the test's own; fakehttp never touches it */
    /* read-only */
    int port; /* the loopback port it listens on */
    /* private */
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct list_node conns; /* open connections (struct fakehttp_conn) */
    fakehttp_dispatch_cb dispatch;
    bool closed;
};

/* Listen on 127.0.0.1, a free port, and answer each request with dispatch. */
void fakehttp_start(struct fakehttp *srv, uv_loop_t *loop, fakehttp_dispatch_cb dispatch,
                    void *data);

/* Close the listener and every open connection (handles close as the loop
 * runs on). Safe from inside any callback; closing twice is harmless. */
void fakehttp_close(struct fakehttp *srv);

/* Write bytes to the connection, as they are. */
void fakehttp_send(struct fakehttp_conn *c, const char *data, size_t len);
void fakehttp_printf(struct fakehttp_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Close the connection once what was sent before is written: a response
 * or a stream cut off where it stands. */
void fakehttp_end(struct fakehttp_conn *c);

/* A whole JSON answer with this status. */
void fakehttp_send_json(struct fakehttp_conn *c, int status, const char *json);

/* A chunked JSON stream (a watch): the status line and headers, then one
 * chunk per call; the stream stays open until the test ends it. */
void fakehttp_stream_start(struct fakehttp_conn *c);
void fakehttp_stream_chunk(struct fakehttp_conn *c, const char *data);

/* The value of request header name (any case), leading blanks dropped,
 * copied into out; NULL when the request has none. */
char *fakehttp_header(const struct fakehttp_req *rq, const char *name, char *out, size_t outlen);

#endif
