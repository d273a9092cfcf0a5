/* httpd.c - tiny HTTP/1.1 server for the operations endpoints; see httpd.h.
 *
 * One struct conn per accepted socket, owning its TCP handle, a timer and a
 * fixed request-head buffer. A connection moves through
 *   READING  -> WRITING -> READING ...   (persistent connection)
 *                       -> DRAINING      (after the last answer: shutdown,
 *                                         then read and discard until EOF so
 *                                         the kernel does not reset the
 *                                         connection under the answer)
 *   any      -> CLOSING                  (both handles closing; freed by the
 *                                         last close callback).
 * The server struct lives until its listener and every connection are
 * closed, so no callback ever sees freed memory. */
#include "bridge/lib/httpd.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bridge/lib/list.h"
#include "bridge/lib/timer.h"

enum conn_state { C_READING, C_WRITING, C_DRAINING, C_CLOSING };

struct conn {
    struct list_node link; /* in the server's list, for httpd_close */
    struct httpd *srv;
    uv_tcp_t tcp;
    uv_timer_t timer; /* head deadline, slow-reader and linger bound */
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    enum conn_state state;
    int open_handles; /* freed when both tcp and timer are closed */
    bool reading;
    bool keep_alive; /* of the request being answered */
    char *head;      /* request bytes, cap + 1 (room for a NUL) */
    size_t head_len, head_cap;
    size_t req_len; /* bytes of the request being answered, to consume */
    buf_t out_head, out_body;
};

struct httpd {
    uv_loop_t *loop;
    struct logger *log;
    uv_tcp_t listener;
    httpd_handler handler;
    void *user;
    struct httpd_limits lim;
    struct list_node conns; /* struct conn */
    unsigned nconns;
    int port;
    bool closing;
    bool listener_closed;
};

static const struct httpd_limits default_limits = {64, 10000, 8192};

static void conn_close(struct conn *c);
static void conn_try_parse(struct conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- address parsing ---- */

static int parse_port(const char *s, int *port) {
    size_t n = strlen(s);
    if (n == 0 || n > 5 || strspn(s, "0123456789") != n)
        return -1;
    long v = strtol(s, NULL, 10);
    if (v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

int httpd_parse_listen(const char *listen, struct sockaddr_storage *out, char *err, size_t errlen) {
    char host[INET6_ADDRSTRLEN + 32];
    const char *port_s;
    bool bracketed = false;
    memset(out, 0, sizeof *out);
    if (!listen || !*listen) {
        snprintf(err, errlen, "empty listen address");
        return -1;
    }
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "listen address \"%s\": expected [ipv6]:port", listen);
            return -1;
        }
        size_t hl = (size_t)(close - listen - 1);
        if (hl == 0 || hl >= sizeof host) {
            snprintf(err, errlen, "listen address \"%s\": bad IPv6 address", listen);
            return -1;
        }
        memcpy(host, listen + 1, hl);
        host[hl] = '\0';
        port_s = close + 2;
        bracketed = true;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon) {
            snprintf(err, errlen, "listen address \"%s\": expected host:port", listen);
            return -1;
        }
        size_t hl = (size_t)(colon - listen);
        if (memchr(listen, ':', hl)) {
            snprintf(err, errlen, "listen address \"%s\": write IPv6 addresses as [addr]:port",
                     listen);
            return -1;
        }
        if (hl >= sizeof host) {
            snprintf(err, errlen, "listen address \"%s\": host too long", listen);
            return -1;
        }
        memcpy(host, listen, hl);
        host[hl] = '\0';
        port_s = colon + 1;
    }
    int port;
    if (parse_port(port_s, &port) < 0) {
        snprintf(err, errlen, "listen address \"%s\": port must be 0 to 65535", listen);
        return -1;
    }
    int rc;
    if (bracketed)
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)out);
    else if (!*host)
        rc = uv_ip6_addr("::", port, (struct sockaddr_in6 *)out); /* all interfaces */
    else if (strcasecmp(host, "localhost") == 0)
        rc = uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)out);
    else
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)out);
    if (rc != 0) {
        snprintf(err, errlen,
                 "listen address \"%s\": host must be an IP address or localhost (no DNS)", listen);
        return -1;
    }
    return 0;
}

/* ---- lifetime ---- */

static void server_free_if_closed(struct httpd *h) {
    if (h->closing && h->listener_closed && h->nconns == 0)
        free(h);
}

static void on_listener_closed(uv_handle_t *handle) {
    struct httpd *h = handle->data;
    h->listener_closed = true;
    server_free_if_closed(h);
}

static void on_conn_handle_closed(uv_handle_t *handle) {
    struct conn *c = handle->data;
    if (--c->open_handles > 0)
        return;
    struct httpd *h = c->srv;
    list_remove(&c->link);
    h->nconns--;
    buf_free(&c->out_head);
    buf_free(&c->out_body);
    free(c->head);
    free(c);
    server_free_if_closed(h);
}

static void conn_close(struct conn *c) {
    if (c->state == C_CLOSING || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    c->state = C_CLOSING;
    /* Pending write and shutdown requests complete with UV_ECANCELED before
     * the close callbacks run; their callbacks see C_CLOSING and do nothing. */
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

void httpd_close(struct httpd *h) {
    if (!h || h->closing)
        return;
    h->closing = true;
    uv_close((uv_handle_t *)&h->listener, on_listener_closed);
    list_for_each(n, &h->conns) /* each leaves the list in its close callback */
        conn_close(list_entry(n, struct conn, link));
}

/* ---- timers and reading ---- */

static void conn_deadline_passed(uv_timer_t *t) {
    struct conn *c = t->data;
    if (c->state == C_READING && c->head_len)
        log_debug(c->srv->log, "http: request head not received in time; closing connection");
    conn_close(c);
}

/* The connection must make progress within read_timeout_ms from now. */
static void conn_deadline_restart(struct conn *c) {
    timer_arm(&c->timer, conn_deadline_passed, c->srv->lim.read_timeout_ms, 0);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    struct conn *c = handle->data;
    if (c->state == C_DRAINING)
        c->head_len = 0; /* everything read now is discarded */
    /* A zero-length buffer makes libuv report UV_ENOBUFS, which closes. */
    *buf = uv_buf_init(c->head + c->head_len, (unsigned)(c->head_cap - c->head_len));
}

static void read_start(struct conn *c) {
    if (c->reading || c->state == C_CLOSING)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    c->reading = true;
}

static void read_stop(struct conn *c) {
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

/* ---- writing ---- */

static const char *status_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    struct conn *c = req->data;
    if (c->state == C_CLOSING)
        return;
    if (status < 0)
        conn_close(c);
    /* Otherwise keep reading until the peer closes or the timer fires. */
}

/* Last answer sent: half-close, discard what the peer still sends. */
static void conn_drain(struct conn *c) {
    c->state = C_DRAINING;
    c->head_len = 0;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_deadline_restart(c);
    read_start(c);
}

static void on_write(uv_write_t *req, int status) {
    struct conn *c = req->data;
    if (c->state == C_CLOSING)
        return;
    buf_reset(&c->out_head);
    buf_free(&c->out_body);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (!c->keep_alive) {
        conn_drain(c);
        return;
    }
    /* Next request: keep pipelined bytes already read, restart the clock. */
    memmove(c->head, c->head + c->req_len, c->head_len - c->req_len);
    c->head_len -= c->req_len;
    c->req_len = 0;
    c->state = C_READING;
    conn_deadline_restart(c);
    read_start(c);
    if (c->state == C_READING)
        conn_try_parse(c);
}

/* Send an answer. body is taken over (the caller's buffer is left empty). */
static void conn_respond(struct conn *c, int status, const char *ctype, buf_t *body, bool head_only,
                         const char *extra_headers) {
    if (c->state == C_CLOSING)
        return; /* the handler closed the server */
    bool no_body = status == 204 || status == 304;
    c->state = C_WRITING;
    read_stop(c); /* pipelined requests wait until this answer is out */
    c->out_body = *body;
    *body = (buf_t)BUF_INIT;
    buf_reset(&c->out_head);
    int rc = buf_printf(&c->out_head, "HTTP/1.1 %d %s\r\n", status, status_reason(status));
    if (rc == 0 && !no_body)
        rc = buf_printf(&c->out_head, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype,
                        c->out_body.len);
    if (rc == 0)
        rc = buf_printf(&c->out_head, "Cache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                        c->keep_alive ? "keep-alive" : "close", extra_headers ? extra_headers : "");
    if (rc < 0) {
        conn_close(c);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(c->out_head.data, (unsigned)c->out_head.len),
                        uv_buf_init(c->out_body.data, (unsigned)c->out_body.len)};
    unsigned nbufs = (head_only || no_body || !c->out_body.len) ? 1 : 2;
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write) != 0) {
        conn_close(c);
        return;
    }
    conn_deadline_restart(c); /* a client that stops reading is dropped too */
}

/* An error answer with a short text body; the connection closes after it. */
static void conn_fail(struct conn *c, int status, const char *extra_headers) {
    buf_t body = BUF_INIT;
    c->keep_alive = false;
    if (buf_printf(&body, "%s\n", status_reason(status)) < 0) {
        conn_close(c);
        return;
    }
    conn_respond(c, status, "text/plain; charset=utf-8", &body, false, extra_headers);
    buf_free(&body);
}

/* ---- parsing ---- */

/* Length of the head including its empty line, or 0 while incomplete. Lines
 * end in CRLF; a bare LF is accepted too (RFC 9112 section 2.2). */
static size_t find_head_end(const char *p, size_t len) {
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\n')
            continue;
        size_t l = i - line;
        if (l == 0 || (l == 1 && p[line] == '\r'))
            return i + 1;
        line = i + 1;
    }
    return 0;
}

static bool is_tchar(char ch) {
    unsigned char u = (unsigned char)ch;
    return (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') ||
           (u && strchr("!#$%&'*+-.^_`|~", u));
}

static bool is_token(const char *s) {
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_tchar(*s))
            return false;
    return true;
}

/* Does a comma-separated header value hold token (case-insensitive)? */
static bool has_token(const char *value, const char *token) {
    size_t tl = strlen(token);
    for (const char *p = value; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p += n;
    }
    return false;
}

struct request {
    char *method, *target;
    int minor; /* HTTP/1.minor */
    unsigned hosts;
    bool close, keep_alive_token, has_body;
};

/* Split the head (NUL-terminated in place) into the request line and the
 * header fields we care about. 0, or the status to fail with. */
static int parse_head(char *head, size_t len, struct request *r) {
    memset(r, 0, sizeof *r);
    if (memchr(head, '\0', len))
        return 400;
    char *lines = head;
    bool first = true;
    while (*lines) {
        char *nl = strchr(lines, '\n');
        if (!nl)
            return 400;
        *nl = '\0';
        if (nl > lines && nl[-1] == '\r')
            nl[-1] = '\0';
        char *line = lines;
        lines = nl + 1;
        if (!*line)
            break; /* the empty line */
        if (strchr(line, '\r'))
            return 400; /* bare CR */
        if (first) {
            first = false;
            char *sp1 = strchr(line, ' ');
            char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
            if (!sp1 || !sp2 || strchr(sp2 + 1, ' '))
                return 400;
            *sp1 = *sp2 = '\0';
            r->method = line;
            r->target = sp1 + 1;
            const char *ver = sp2 + 1;
            if (!is_token(r->method) || !*r->target || strncmp(ver, "HTTP/", 5) != 0)
                return 400;
            if (strcmp(ver + 5, "1.1") == 0)
                r->minor = 1;
            else if (strcmp(ver + 5, "1.0") == 0)
                r->minor = 0;
            else if (ver[5] >= '2' && ver[5] <= '9')
                return 505;
            else
                return 400;
            continue;
        }
        if (*line == ' ' || *line == '\t')
            return 400; /* obsolete line folding */
        char *colon = strchr(line, ':');
        if (!colon)
            return 400;
        *colon = '\0';
        if (!is_token(line))
            return 400; /* also rejects space before the colon */
        char *value = colon + 1 + strspn(colon + 1, " \t");
        size_t vl = strlen(value);
        while (vl && (value[vl - 1] == ' ' || value[vl - 1] == '\t'))
            value[--vl] = '\0';
        if (strcasecmp(line, "host") == 0) {
            r->hosts++;
        } else if (strcasecmp(line, "connection") == 0) {
            r->close |= has_token(value, "close");
            r->keep_alive_token |= has_token(value, "keep-alive");
        } else if (strcasecmp(line, "transfer-encoding") == 0) {
            r->has_body = true;
        } else if (strcasecmp(line, "content-length") == 0) {
            if (!*value || strspn(value, "0123456789") != vl)
                return 400;
            if (strspn(value, "0") != vl)
                r->has_body = true;
        }
    }
    if (first)
        return 400;
    if (r->minor == 1 && r->hosts != 1)
        return 400; /* RFC 9112 section 3.2: exactly one Host */
    return 0;
}

/* The path to route on: origin-form as is, absolute-form without scheme and
 * authority; query and fragment cut off (in place). NULL when unusable. */
static const char *route_path(char *target) {
    if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
        target = strchr(strstr(target, "//") + 2, '/');
        if (!target)
            return "/"; /* "http://host" */
    }
    if (*target != '/')
        return NULL;
    target[strcspn(target, "?#")] = '\0';
    return target;
}

static void conn_try_parse(struct conn *c) {
    /* Empty lines before a request are ignored (RFC 9112 section 2.2). */
    size_t skip = 0;
    while (skip < c->head_len &&
           (c->head[skip] == '\n' ||
            (c->head[skip] == '\r' && skip + 1 < c->head_len && c->head[skip + 1] == '\n')))
        skip += c->head[skip] == '\n' ? 1 : 2;
    if (skip) {
        memmove(c->head, c->head + skip, c->head_len - skip);
        c->head_len -= skip;
    }
    size_t end = find_head_end(c->head, c->head_len);
    if (!end) {
        if (c->head_len >= c->head_cap)
            conn_fail(c, 431, NULL);
        return; /* wait for more */
    }
    struct httpd *h = c->srv;
    c->req_len = end;
    char saved = c->head[end];
    c->head[end] = '\0'; /* parse_head works on a string; restored below */
    struct request r;
    int status = parse_head(c->head, end, &r);
    const char *path = status ? NULL : route_path(r.target);
    if (!status && !path)
        status = 400;
    if (status) {
        c->head[end] = saved;
        log_debug(h->log, "http: malformed request, answering %d", status);
        conn_fail(c, status, NULL);
        return;
    }
    /* The body of a GET is not read, so the stream position after it is
     * unknown: answer and close. */
    c->keep_alive =
        !r.has_body && !h->closing && (r.minor == 1 ? !r.close : (r.keep_alive_token && !r.close));
    bool get = strcmp(r.method, "GET") == 0, head_only = strcmp(r.method, "HEAD") == 0;
    if (!get && !head_only) {
        log_debug(h->log, "http: %s %s -> 405", r.method, path);
        buf_t body = BUF_INIT;
        if (buf_puts(&body, "Method Not Allowed\n") < 0) {
            conn_close(c);
            return;
        }
        c->head[end] = saved;
        conn_respond(c, 405, "text/plain; charset=utf-8", &body, false, "Allow: GET, HEAD\r\n");
        buf_free(&body);
        return;
    }
    struct httpd_response res = {200, "text/plain; charset=utf-8", BUF_INIT, NULL};
    h->handler(h->user, r.method, path, &res);
    if (res.status < 200 || res.status > 599)
        res.status = 500;
    log_debug(h->log, "http: %s %s -> %d", r.method, path, res.status);
    c->head[end] = saved;
    conn_respond(c, res.status, res.content_type ? res.content_type : "text/plain", &res.body,
                 head_only, res.headers);
    buf_free(&res.body);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    (void)buf;
    struct conn *c = s->data;
    if (c->state == C_CLOSING)
        return;
    if (nread < 0) {
        /* EOF, reset or UV_ENOBUFS: nothing more to read. An answer still
         * being written is abandoned; the peer has gone or misbehaved. */
        conn_close(c);
        return;
    }
    if (nread == 0)
        return; /* EAGAIN */
    if (c->state == C_DRAINING) {
        c->head_len = 0;
        return;
    }
    c->head_len += (size_t)nread;
    if (c->state == C_READING)
        conn_try_parse(c);
}

/* ---- accepting ---- */

static void on_reject_closed(uv_handle_t *handle) {
    free(handle);
}

/* Over the connection limit: accept (libuv stops accepting until we do) and
 * close at once. */
static void reject_connection(struct httpd *h) {
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t) {
        log_error(h->log, "http: out of memory rejecting a connection");
        return;
    }
    if (uv_tcp_init(h->loop, t) != 0) {
        free(t);
        return;
    }
    (void)uv_accept((uv_stream_t *)&h->listener, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, on_reject_closed);
}

static void on_connection(uv_stream_t *server, int status) {
    struct httpd *h = server->data;
    if (h->closing)
        return;
    if (status < 0) {
        log_warn(h->log, "http: accept failed: %s", uv_strerror(status));
        return;
    }
    if (h->nconns >= h->lim.max_conns) {
        log_debug(h->log, "http: %u connections open, refusing another", h->nconns);
        reject_connection(h);
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c || !(c->head = malloc(h->lim.max_head + 1))) {
        free(c);
        log_error(h->log, "http: out of memory accepting a connection");
        reject_connection(h);
        return;
    }
    c->srv = h;
    c->head_cap = h->lim.max_head;
    c->state = C_READING;
    if (uv_timer_init(h->loop, &c->timer) != 0) {
        free(c->head);
        free(c);
        reject_connection(h);
        return;
    }
    c->timer.data = c;
    c->open_handles = 1;
    list_push_front(&h->conns, &c->link);
    h->nconns++;
    if (uv_tcp_init(h->loop, &c->tcp) != 0) {
        /* Only the timer exists: close it alone; its callback frees c. */
        c->state = C_CLOSING;
        uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
        reject_connection(h);
        return;
    }
    c->tcp.data = c;
    c->open_handles = 2;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    conn_deadline_restart(c);
    read_start(c);
}

/* ---- starting ---- */

struct httpd *httpd_new(uv_loop_t *loop, struct logger *lg, httpd_handler handler, void *user) {
    struct httpd *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->loop = loop;
    h->log = lg;
    h->handler = handler;
    h->user = user;
    h->lim = default_limits;
    list_init(&h->conns);
    if (uv_tcp_init(loop, &h->listener) != 0) {
        free(h);
        return NULL;
    }
    h->listener.data = h;
    return h;
}

int httpd_start(struct httpd *h, const char *listen, char *err, size_t errlen) {
    struct sockaddr_storage ss;
    if (httpd_parse_listen(listen, &ss, err, errlen) < 0)
        return -1;
    int rc = uv_tcp_bind(&h->listener, (const struct sockaddr *)&ss, 0);
    if (rc == UV_EAFNOSUPPORT && listen[0] == ':') {
        /* ":port" on a host without IPv6: all IPv4 interfaces instead. No
         * socket was created by the failed bind, so the handle is reusable. */
        int port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        rc = uv_ip4_addr("0.0.0.0", port, (struct sockaddr_in *)&ss);
        if (rc == 0)
            rc = uv_tcp_bind(&h->listener, (const struct sockaddr *)&ss, 0);
    }
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, 128, on_connection);
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    if (rc == 0)
        rc = uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &blen);
    if (rc != 0) {
        snprintf(err, errlen, "listen %s: %s", listen, uv_strerror(rc));
        return -1;
    }
    h->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

void httpd_set_limits(struct httpd *h, const struct httpd_limits *limits) {
    if (limits->max_conns)
        h->lim.max_conns = limits->max_conns;
    if (limits->read_timeout_ms)
        h->lim.read_timeout_ms = limits->read_timeout_ms;
    if (limits->max_head)
        h->lim.max_head = limits->max_head;
}

int httpd_port(const struct httpd *h) {
    return h->port;
}

unsigned httpd_connections(const struct httpd *h) {
    return h->nconns;
}
