/* httpd.h - a tiny HTTP/1.1 server on libuv TCP for /metrics, /healthz and
 * /readyz.
 *
 * Just enough HTTP for Prometheus, kubelet-style probes and curl, on the
 * daemon's own loop, without a dependency. What it does:
 *  - GET and HEAD only (405 with Allow otherwise); the query string is
 *    stripped before routing; request bodies are not read (a request that
 *    announces one is answered, then the connection is closed);
 *  - persistent connections (HTTP/1.1 default, HTTP/1.0 with keep-alive) and
 *    pipelining, one request at a time, answers in order;
 *  - bounds: request head at most max_head bytes (431 beyond), the whole head
 *    must arrive within read_timeout_ms of the connection opening or of the
 *    previous answer (so slow or idle clients cannot pile up), at most
 *    max_conns connections (extra ones are closed at once);
 *  - malformed requests get 400 and the connection is closed.
 *
 * The handler runs synchronously on the loop and fills the response; it must
 * not block. All callbacks run on the loop thread. */
#ifndef CB_HTTPD_H
#define CB_HTTPD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/log.h"

struct httpd;

struct httpd_response {
    /* public: the handler fills these */
    int status;               /* preset to 200 */
    const char *content_type; /* static string; preset to "text/plain; charset=utf-8" */
    buf_t body;               /* empty; the server frees it */
    const char *headers;      /* static extra header lines, each ending "\r\n"; or NULL */
};

/* method is "GET" or "HEAD" (for HEAD fill the body as for GET: its length is
 * announced, the bytes are not sent); path is the request target without the
 * query string, e.g. "/metrics". */
typedef void (*httpd_handler)(void *user, const char *method, const char *path,
                              struct httpd_response *res);

struct httpd_limits {
    /* public */
    unsigned max_conns;       /* default 64 */
    uint64_t read_timeout_ms; /* default 10000 */
    size_t max_head;          /* default 8192 */
};

/* Parse "host:port", "[v6]:port" or ":port" (all interfaces). host is an IP
 * literal or "localhost" (127.0.0.1): a listener address is never resolved
 * through DNS, which would block the loop and depend on the network. Port 0
 * asks the kernel for a free port. 0, or -1 with a message in err. */
int httpd_parse_listen(const char *listen, struct sockaddr_storage *out, char *err, size_t errlen);

/* Lifecycle: httpd_new, httpd_start, httpd_close (also after a failed
 * start, or none).
 *
 * A server that will call handler(user, ...) for each request; it does not
 * listen yet. lg must outlive it. NULL when out of memory. */
struct httpd *httpd_new(uv_loop_t *loop, struct logger *lg, httpd_handler handler, void *user);
/* Bind and listen on `listen` (once). 0, or -1 with a message in err (bad
 * address, address in use, ...). */
int httpd_start(struct httpd *h, const char *listen, char *err, size_t errlen);
/* Change the bounds (zero fields keep their value); applies to connections
 * accepted afterwards, and to every next request for the timeout. */
void httpd_set_limits(struct httpd *h, const struct httpd_limits *limits);
/* The bound port (the kernel's choice when listen asked for port 0). */
int httpd_port(const struct httpd *h);
/* Open connections. */
unsigned httpd_connections(const struct httpd *h);
/* Stop listening and close every connection (in-flight answers are dropped).
 * The handler is never called again; the memory is released by close
 * callbacks once the loop runs them. NULL is fine. */
void httpd_close(struct httpd *h);

#endif
