/* http.c - asynchronous HTTP client on the libuv loop; see http.h.
 *
 * libcurl's multi socket interface tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION) and when to wake it up (CURLMOPT_TIMERFUNCTION);
 * we answer with one uv_poll_t per socket and one uv_timer_t, and hand every
 * readiness event back through curl_multi_socket_action(). This is the design
 * of curl's docs/examples/multi-uv.c, with the lifetimes made explicit:
 *
 *  - struct http_sock (one per curl socket) is created on the first
 *    CURL_POLL_IN/OUT for a socket, attached with curl_multi_assign(), and
 *    released by uv_close() on CURL_POLL_REMOVE; its memory is freed in the
 *    close callback, never earlier, because libuv still owns the handle.
 *  - the client itself is freed only when the last of its uv handles (two
 *    timers plus any sockets still open) has been closed.
 *
 * Re-entrancy. libcurl forbids calling curl_multi_add_handle(),
 * curl_multi_remove_handle() or curl_multi_cleanup() from inside its own
 * callbacks, but our streaming on_data callbacks run inside the write
 * callback, i.e. inside curl_multi_socket_action(). So while the client is
 * "inside curl" (in_curl > 0), starting, cancelling and closing are recorded
 * and carried out as soon as curl_multi_socket_action() returns. Done
 * callbacks run outside curl: each finished easy handle is first removed from
 * the multi handle, then its callback runs, then it is freed, so the callback
 * may freely start, cancel or close. */
#include "bridge/lib/http.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/list.h"
#include "bridge/lib/timer.h"

/* A runaway or hostile server must not make us buffer without bound. */
#define HTTP_MAX_BODY ((size_t)256 * 1024 * 1024)
#define HTTP_MAX_HEADERS ((size_t)1024 * 1024)
/* Keepalive is what notices a peer that vanished without closing (host down,
 * cable cut) on a long-lived watch: probes after 5 s idle, every 5 s, give up
 * after 3 misses. TCP_USER_TIMEOUT bounds how long sent data may stay unacked. */
#define HTTP_KEEPIDLE_S 5L
#define HTTP_KEEPINTVL_S 5L
#define HTTP_KEEPCNT 3
#define HTTP_USER_TIMEOUT_MS 20000u

enum req_state {
    REQ_NEW,     /* created, not started: owned by the caller */
    REQ_QUEUED,  /* started while inside curl: added to the multi handle after */
    REQ_RUNNING, /* in the multi handle */
    REQ_DOOMED,  /* cancelled while inside curl: removed and freed after */
    REQ_DONE,    /* its done callback is running: freed when it returns */
};

struct http_req {
    struct http_client *c;
    CURL *easy;
    char *method;
    char *url;
    struct curl_slist *headers;
    buf_t body;
    bool has_body;
    struct http_tls tls;
    bool has_tls;
    bool http11; /* pinned to HTTP/1.1 */
    long total_ms;
    long connect_ms;
    http_data_cb on_data;
    http_done_cb done;
    void *user;
    buf_t resp_body;
    buf_t resp_headers;
    char errbuf[CURL_ERROR_SIZE];
    enum req_state state;
    bool too_large;        /* the buffered body or headers hit their limit */
    int poll_error;        /* uv error while watching one of its sockets; 0 = none */
    struct list_node link; /* in the client's list of started requests */
};

struct http_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct http_client *c;
    bool closing;
    struct list_node link; /* in the client's list of watched sockets */
};

struct http_client {
    uv_loop_t *loop;
    struct logger *log;
    CURLM *multi;
    uv_timer_t timer;       /* curl's own timeout (CURLMOPT_TIMERFUNCTION) */
    uv_timer_t defer;       /* runs work that must not happen inside a curl call */
    struct list_node reqs;  /* started and not yet finished (struct http_req) */
    struct list_node socks; /* sockets curl asked us to watch (struct http_sock) */
    size_t active;
    unsigned in_curl;      /* depth of curl_multi_socket_action() calls */
    unsigned open_handles; /* uv handles not yet closed; free at zero */
    bool closing;          /* http_client_close() was called */
    bool shut;             /* handles closed; waiting for the close callbacks */
    bool global_ok;        /* curl_global_init() succeeded: balance it */
};

static void client_run_pending(struct http_client *c);
static void client_close_now(struct http_client *c);

/* ---- client memory ---------------------------------------------------- */

static void client_free_when_closed(struct http_client *c) {
    if (!c->closing || c->open_handles > 0)
        return;
    bool global_ok = c->global_ok;
    free(c);
    if (global_ok)
        curl_global_cleanup();
}

static void client_handle_closed(uv_handle_t *h) {
    struct http_client *c = h->data;
    c->open_handles--;
    client_free_when_closed(c);
}

/* ---- request list ----------------------------------------------------- */

static void req_link(struct http_req *r) {
    list_push_front(&r->c->reqs, &r->link);
    r->c->active++;
}

static void req_unlink(struct http_req *r) {
    list_remove(&r->link);
    r->c->active--;
}

static void req_free(struct http_req *r) {
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    /* Request bodies may carry credentials (etcd authenticate). */
    if (r->body.data)
        explicit_bzero(r->body.data, r->body.cap);
    buf_free(&r->body);
    buf_free(&r->resp_body);
    buf_free(&r->resp_headers);
    free(r->method);
    free(r->url);
    free(r);
}

/* Take a running request out of the multi handle. Only outside curl. */
static void req_detach(struct http_req *r) {
    CURLMcode mc = curl_multi_remove_handle(r->c->multi, r->easy);
    if (mc != CURLM_OK)
        log_error(r->c->log, "http: curl_multi_remove_handle: %s", curl_multi_strerror(mc));
}

/* Report the outcome of a request that is no longer in the multi handle, then
 * free it. The done callback may start, cancel or close anything. */
static void req_finish(struct http_req *r, CURLcode code, const char *why) {
    req_unlink(r);
    r->state = REQ_DONE;

    long status = 0;
    if (curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
        status = 0;
    if (r->too_large && code == CURLE_WRITE_ERROR)
        why = "response too large";
    const char *error = "";
    long os_errno = 0;
    if (code != CURLE_OK) {
        error = why ? why : (r->errbuf[0] ? r->errbuf : curl_easy_strerror(code));
        if (curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno) != CURLE_OK)
            os_errno = 0;
    }

    struct http_result res = {
        .curl = code,
        .error = error,
        .status = status,
        .body = r->resp_body.data ? r->resp_body.data : "",
        .body_len = r->resp_body.len,
        .headers = r->resp_headers.data ? r->resp_headers.data : "",
        .os_errno = os_errno,
    };
    if (r->done)
        r->done(r, &res);
    req_free(r);
}

/* ---- curl callbacks on an easy handle --------------------------------- */

static size_t req_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    struct http_req *r = userdata;
    size_t n = size * nmemb;
    /* A cancelled request (or any, once the client is closing) may still get
     * data within the same socket action; a short count makes curl abort it. */
    if (r->state != REQ_RUNNING || r->c->closing)
        return 0;
    if (r->on_data) {
        if (n == 0)
            return 0;
        if (r->on_data(r, ptr, n) != 0)
            return 0;
        /* on_data may have cancelled this very request, or closed the client. */
        return r->state == REQ_RUNNING && !r->c->closing ? n : 0;
    }
    if (r->resp_body.len + n > HTTP_MAX_BODY || buf_append(&r->resp_body, ptr, n) < 0) {
        r->too_large = true;
        return 0;
    }
    return n;
}

static size_t req_header(char *ptr, size_t size, size_t nmemb, void *userdata) {
    struct http_req *r = userdata;
    size_t n = size * nmemb;
    if (r->state != REQ_RUNNING || r->c->closing)
        return 0;
    /* Each status line starts a new header block (1xx, redirects, proxies):
     * only the last one describes the response we hand back. */
    if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0)
        buf_reset(&r->resp_headers);
    if (r->resp_headers.len + n > HTTP_MAX_HEADERS || buf_append(&r->resp_headers, ptr, n) < 0) {
        r->too_large = true;
        return 0;
    }
    return n;
}

/* Socket options curl has no knob for (TCP_KEEPCNT only appeared in 8.9). */
static int req_sockopt(void *clientp, curl_socket_t fd, curlsocktype purpose) {
    struct http_client *c = clientp;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKOPT_OK;
    int cnt = HTTP_KEEPCNT;
    unsigned int uto = HTTP_USER_TIMEOUT_MS;
    /* Unix-domain sockets reject these; that is harmless, so only log it. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) < 0 && errno != EOPNOTSUPP)
        log_debug(c->log, "http: setsockopt(TCP_KEEPCNT): %s", strerror(errno));
    if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof uto) < 0 && errno != EOPNOTSUPP)
        log_debug(c->log, "http: setsockopt(TCP_USER_TIMEOUT): %s", strerror(errno));
    return CURL_SOCKOPT_OK;
}

#define SETOPT(r, opt, val)                                                                        \
    do {                                                                                           \
        CURLcode rc_ = curl_easy_setopt((r)->easy, (opt), (val));                                  \
        if (rc_ != CURLE_OK) {                                                                     \
            log_error((r)->c->log, "http: curl_easy_setopt(%s): %s", #opt,                         \
                      curl_easy_strerror(rc_));                                                    \
            return rc_;                                                                            \
        }                                                                                          \
    } while (0)

static CURLcode req_configure_tls(struct http_req *r) {
    const struct http_tls *t = &r->tls;
    if (t->ca_pem) {
        struct curl_blob blob = {(void *)t->ca_pem, t->ca_pem_len, CURL_BLOB_COPY};
        SETOPT(r, CURLOPT_CAINFO_BLOB, &blob);
    } else if (t->ca_file) {
        SETOPT(r, CURLOPT_CAINFO, t->ca_file);
    }
    if (t->cert_pem) {
        struct curl_blob blob = {(void *)t->cert_pem, t->cert_pem_len, CURL_BLOB_COPY};
        SETOPT(r, CURLOPT_SSLCERT_BLOB, &blob);
        SETOPT(r, CURLOPT_SSLCERTTYPE, "PEM");
    } else if (t->cert_file) {
        SETOPT(r, CURLOPT_SSLCERT, t->cert_file);
        SETOPT(r, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (t->key_pem) {
        struct curl_blob blob = {(void *)t->key_pem, t->key_pem_len, CURL_BLOB_COPY};
        SETOPT(r, CURLOPT_SSLKEY_BLOB, &blob);
        SETOPT(r, CURLOPT_SSLKEYTYPE, "PEM");
    } else if (t->key_file) {
        SETOPT(r, CURLOPT_SSLKEY, t->key_file);
        SETOPT(r, CURLOPT_SSLKEYTYPE, "PEM");
    }
    if (t->insecure) {
        SETOPT(r, CURLOPT_SSL_VERIFYPEER, 0L);
        SETOPT(r, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    return CURLE_OK;
}

static CURLcode req_configure(struct http_req *r) {
    SETOPT(r, CURLOPT_URL, r->url);
    SETOPT(r, CURLOPT_PRIVATE, (void *)r);
    SETOPT(r, CURLOPT_ERRORBUFFER, r->errbuf);
    SETOPT(r, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(r, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(r, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    /* Redirects are never followed: an API server or etcd that redirects is
     * misconfigured, and following could leak credentials elsewhere. */
    SETOPT(r, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(r, CURLOPT_TCP_NODELAY, 1L);
    SETOPT(r, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(r, CURLOPT_TCP_KEEPIDLE, HTTP_KEEPIDLE_S);
    SETOPT(r, CURLOPT_TCP_KEEPINTVL, HTTP_KEEPINTVL_S);
    SETOPT(r, CURLOPT_SOCKOPTFUNCTION, req_sockopt);
    SETOPT(r, CURLOPT_SOCKOPTDATA, (void *)r->c);
    SETOPT(r, CURLOPT_HTTP_VERSION,
           (long)(r->http11 ? CURL_HTTP_VERSION_1_1 : CURL_HTTP_VERSION_2TLS));
    /* Over TLS, prefer waiting for a connection that may turn out to be
     * HTTP/2 (ALPN tells during the handshake) over opening a second one, so
     * requests to one host share one socket. Never over plain http: HTTP/2
     * is only negotiated over TLS here, yet curl would still park new
     * requests behind the first one until its response headers arrive,
     * which for a slow request is a stall of everything to that host. */
    if (!r->http11 && strncasecmp(r->url, "https://", 8) == 0)
        SETOPT(r, CURLOPT_PIPEWAIT, 1L);
    SETOPT(r, CURLOPT_WRITEFUNCTION, req_write);
    SETOPT(r, CURLOPT_WRITEDATA, (void *)r);
    SETOPT(r, CURLOPT_HEADERFUNCTION, req_header);
    SETOPT(r, CURLOPT_HEADERDATA, (void *)r);
    SETOPT(r, CURLOPT_TIMEOUT_MS, r->total_ms);
    SETOPT(r, CURLOPT_CONNECTTIMEOUT_MS, r->connect_ms);

    if (strcmp(r->method, "GET") == 0) {
        SETOPT(r, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(r->method, "HEAD") == 0) {
        SETOPT(r, CURLOPT_NOBODY, 1L);
    } else {
        /* POSTFIELDS makes curl send the body with a Content-Length (an
         * empty one when there is none); CUSTOMREQUEST renames the verb. */
        SETOPT(r, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
        SETOPT(r, CURLOPT_POSTFIELDS, r->body.data ? r->body.data : "");
        if (strcmp(r->method, "POST") != 0)
            SETOPT(r, CURLOPT_CUSTOMREQUEST, r->method);
    }
    /* No "Expect: 100-continue": curl would sit up to a second waiting for
     * a 100 before sending a large body, for nothing. */
    struct curl_slist *l = curl_slist_append(r->headers, "Expect:");
    if (!l)
        return CURLE_OUT_OF_MEMORY;
    r->headers = l;
    SETOPT(r, CURLOPT_HTTPHEADER, r->headers);
    if (r->has_tls) {
        CURLcode rc = req_configure_tls(r);
        if (rc != CURLE_OK)
            return rc;
    }
    return CURLE_OK;
}

/* ---- sockets ---------------------------------------------------------- */

static void sock_closed(uv_handle_t *h) {
    struct http_sock *s = h->data;
    struct http_client *c = s->c;
    free(s);
    c->open_handles--;
    client_free_when_closed(c);
}

static void sock_close(struct http_sock *s) {
    if (s->closing)
        return; /* uv_close() twice on one handle is fatal */
    s->closing = true;
    list_remove(&s->link);
    /* uv_close() stops polling at once, so curl may reuse the descriptor
     * number for a new socket before this close callback runs. */
    uv_close((uv_handle_t *)&s->poll, sock_closed);
}

/* Drive curl for one event; then do what had to wait until curl returned. */
static void client_action(struct http_client *c, curl_socket_t fd, int flags) {
    int running = 0;
    c->in_curl++;
    CURLMcode mc = curl_multi_socket_action(c->multi, fd, flags, &running);
    c->in_curl--;
    if (mc != CURLM_OK)
        log_error(c->log, "http: curl_multi_socket_action: %s", curl_multi_strerror(mc));
    if (c->closing) {
        if (!c->shut && c->in_curl == 0)
            client_close_now(c);
        return;
    }
    client_run_pending(c);
}

static void sock_ready(uv_poll_t *h, int status, int events) {
    struct http_sock *s = h->data;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    /* s may be closed (not freed) during the action: do not touch it after. */
    client_action(s->c, s->fd, flags);
}

static struct http_req *easy_req(CURL *easy) {
    char *p = NULL;
    if (!easy || curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p) != CURLE_OK)
        return NULL;
    return (struct http_req *)p;
}

static void client_defer_fired(uv_timer_t *t) {
    client_run_pending(t->data);
}

/* A socket we cannot watch would hang its transfer forever: fail it from
 * the defer timer, since we are inside curl here. */
static void sock_fail(struct http_client *c, CURL *easy, int uverr) {
    log_error(c->log, "http: cannot watch socket: %s", uv_strerror(uverr));
    struct http_req *r = easy_req(easy);
    if (!r)
        return;
    r->poll_error = uverr;
    timer_arm(&c->defer, client_defer_fired, 0, 0);
}

/* CURLMOPT_SOCKETFUNCTION. Always returns 0: with curl >= 7.81 an error here
 * would kill the whole multi handle, not just this transfer. */
static int client_watch_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    struct http_client *c = userp;
    struct http_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            sock_close(s);
            /* curl drops its entry right after; clearing it is belt and
             * braces, and pointless while curl_multi_cleanup() runs. */
            if (!c->shut) {
                CURLMcode mc = curl_multi_assign(c->multi, fd, NULL);
                if (mc != CURLM_OK)
                    log_debug(c->log, "http: curl_multi_assign: %s", curl_multi_strerror(mc));
            }
        }
        return 0;
    }
    if (c->shut)
        return 0;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            sock_fail(c, easy, UV_ENOMEM);
            return 0;
        }
        int rc = uv_poll_init_socket(c->loop, &s->poll, fd);
        if (rc < 0) {
            free(s);
            sock_fail(c, easy, rc);
            return 0;
        }
        s->fd = fd;
        s->c = c;
        s->poll.data = s;
        list_push_front(&c->socks, &s->link);
        c->open_handles++;
        CURLMcode mc = curl_multi_assign(c->multi, fd, s);
        if (mc != CURLM_OK) {
            log_error(c->log, "http: curl_multi_assign: %s", curl_multi_strerror(mc));
            sock_close(s);
            sock_fail(c, easy, UV_EINVAL);
            return 0;
        }
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    int rc = uv_poll_start(&s->poll, events, sock_ready);
    if (rc < 0)
        sock_fail(c, easy, rc);
    return 0;
}

static void client_timeout_fired(uv_timer_t *t) {
    client_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: -1 stops the timer, 0 means "as soon as possible"
 * (a 0 ms uv timer, because we must not call curl back from in here). */
static int client_set_timeout(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    struct http_client *c = userp;
    if (c->shut)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        timer_arm(&c->timer, client_timeout_fired, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- deferred work ---------------------------------------------------- */

/* Hand a request to curl: 0, or -1 (logged) when curl refuses it. */
static int req_add(struct http_req *r) {
    CURLMcode mc = curl_multi_add_handle(r->c->multi, r->easy);
    if (mc != CURLM_OK) {
        log_error(r->c->log, "http: curl_multi_add_handle: %s", curl_multi_strerror(mc));
        return -1;
    }
    r->state = REQ_RUNNING;
    return 0;
}

/* Everything that waits for "outside curl": cancellations and starts made
 * from on_data, sockets that could not be polled, and finished transfers.
 * Any done callback may close the client, so re-check after each one. Lists
 * are rescanned from the head after each callback, since callbacks may
 * reshape them. */
static void client_run_pending(struct http_client *c) {
    if (c->closing || c->in_curl)
        return;
    bool again = true;
    while (again && !c->closing) {
        again = false;
        list_for_each(n, &c->reqs) {
            struct http_req *r = list_entry(n, struct http_req, link);
            if (r->state == REQ_DOOMED) {
                req_detach(r);
                req_unlink(r);
                req_free(r);
                again = true;
                break;
            }
            if (r->state == REQ_QUEUED) {
                if (req_add(r) < 0)
                    req_finish(r, CURLE_FAILED_INIT, "cannot start transfer");
                again = true;
                break;
            }
            if (r->state == REQ_RUNNING && r->poll_error) {
                req_detach(r);
                req_finish(r, CURLE_COULDNT_CONNECT, uv_strerror(r->poll_error));
                again = true;
                break;
            }
        }
    }
    CURLMsg *msg;
    int pending;
    while (!c->closing && (msg = curl_multi_info_read(c->multi, &pending))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode code = msg->data.result; /* msg is invalid once removed */
        struct http_req *r = easy_req(easy);
        if (!r) {
            log_error(c->log, "http: finished transfer without a request");
            CURLMcode mc = curl_multi_remove_handle(c->multi, easy);
            if (mc != CURLM_OK)
                log_error(c->log, "http: curl_multi_remove_handle: %s", curl_multi_strerror(mc));
            continue;
        }
        req_detach(r);
        if (r->state == REQ_DOOMED) {
            req_unlink(r);
            req_free(r);
            continue;
        }
        req_finish(r, code, NULL);
    }
}

/* ---- client ----------------------------------------------------------- */

struct http_client *http_client_new(uv_loop_t *loop, struct logger *lg) {
    struct http_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->log = lg;
    list_init(&c->reqs);
    list_init(&c->socks);
    /* Reference-counted and thread-safe since curl 7.84; balanced when the
     * client is freed. */
    CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (cc != CURLE_OK) {
        log_error(lg, "http: curl_global_init: %s", curl_easy_strerror(cc));
        free(c);
        return NULL;
    }
    c->global_ok = true;
    int rc = uv_timer_init(loop, &c->timer);
    if (rc < 0) {
        log_error(lg, "http: uv_timer_init: %s", uv_strerror(rc));
        curl_global_cleanup();
        free(c);
        return NULL;
    }
    c->timer.data = c;
    c->open_handles++;
    rc = uv_timer_init(loop, &c->defer);
    if (rc < 0) {
        log_error(lg, "http: uv_timer_init: %s", uv_strerror(rc));
        c->closing = c->shut = true;
        uv_close((uv_handle_t *)&c->timer, client_handle_closed);
        return NULL;
    }
    c->defer.data = c;
    c->open_handles++;

    c->multi = curl_multi_init();
    if (!c->multi) {
        log_error(lg, "http: curl_multi_init failed");
        http_client_close(c);
        return NULL;
    }
    struct {
        CURLMoption opt;
        const char *name;
        int kind; /* 0 long, 1 pointer, 2 socket fn, 3 timer fn */
        long v;
    } opts[] = {
        {CURLMOPT_SOCKETFUNCTION, "SOCKETFUNCTION", 2, 0},
        {CURLMOPT_SOCKETDATA, "SOCKETDATA", 1, 0},
        {CURLMOPT_TIMERFUNCTION, "TIMERFUNCTION", 3, 0},
        {CURLMOPT_TIMERDATA, "TIMERDATA", 1, 0},
        /* Multiplex on HTTP/2 connections when the server offers them. */
        {CURLMOPT_PIPELINING, "PIPELINING", 0, CURLPIPE_MULTIPLEX},
        /* No per-host cap: a long-lived HTTP/1.1 watch holds a connection for
         * good, and a cap would queue every other request behind it. */
        {CURLMOPT_MAX_HOST_CONNECTIONS, "MAX_HOST_CONNECTIONS", 0, 0},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        CURLMcode mc;
        switch (opts[i].kind) {
        case 1: mc = curl_multi_setopt(c->multi, opts[i].opt, (void *)c); break;
        case 2: mc = curl_multi_setopt(c->multi, opts[i].opt, client_watch_socket); break;
        case 3: mc = curl_multi_setopt(c->multi, opts[i].opt, client_set_timeout); break;
        default: mc = curl_multi_setopt(c->multi, opts[i].opt, opts[i].v); break;
        }
        if (mc != CURLM_OK) {
            log_error(lg, "http: curl_multi_setopt(%s): %s", opts[i].name, curl_multi_strerror(mc));
            http_client_close(c);
            return NULL;
        }
    }
    return c;
}

/* Cancel every request without callbacks, drop curl, close uv handles. Only
 * outside curl. The memory goes when the last close callback has run. */
static void client_close_now(struct http_client *c) {
    c->shut = true;
    while (!list_empty(&c->reqs)) {
        struct http_req *r = list_entry(c->reqs.next, struct http_req, link);
        if (r->state == REQ_RUNNING || r->state == REQ_DOOMED)
            req_detach(r);
        req_unlink(r);
        req_free(r);
    }
    if (c->multi) {
        /* May report CURL_POLL_REMOVE for cached connections; handled. */
        CURLMcode mc = curl_multi_cleanup(c->multi);
        if (mc != CURLM_OK)
            log_error(c->log, "http: curl_multi_cleanup: %s", curl_multi_strerror(mc));
        c->multi = NULL;
    }
    while (!list_empty(&c->socks))
        sock_close(list_entry(c->socks.next, struct http_sock, link));
    uv_close((uv_handle_t *)&c->timer, client_handle_closed);
    uv_close((uv_handle_t *)&c->defer, client_handle_closed);
}

void http_client_close(struct http_client *c) {
    if (!c || c->closing)
        return;
    c->closing = true;
    /* Inside curl (from on_data) the shutdown waits for the action to end. */
    if (c->in_curl == 0)
        client_close_now(c);
}

int http_client_limit_connections(struct http_client *c, long max_conns) {
    const struct {
        CURLMoption opt;
        const char *name;
    } opts[] = {
        {CURLMOPT_MAX_HOST_CONNECTIONS, "MAX_HOST_CONNECTIONS"},
        {CURLMOPT_MAX_TOTAL_CONNECTIONS, "MAX_TOTAL_CONNECTIONS"},
        /* The idle cache too: a kept-alive connection is still open. */
        {CURLMOPT_MAXCONNECTS, "MAXCONNECTS"},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        CURLMcode mc = curl_multi_setopt(c->multi, opts[i].opt, max_conns);
        if (mc != CURLM_OK) {
            log_error(c->log, "http: curl_multi_setopt(%s): %s", opts[i].name,
                      curl_multi_strerror(mc));
            return -1;
        }
    }
    return 0;
}

size_t http_client_active(const struct http_client *c) {
    return c ? c->active : 0;
}

/* ---- requests --------------------------------------------------------- */

struct http_req *http_req_new(struct http_client *c, const char *method, const char *url) {
    if (!c || c->closing || !method || !url)
        return NULL;
    struct http_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->c = c;
    list_init(&r->link);
    r->state = REQ_NEW;
    r->connect_ms = 10000;
    r->method = strdup(method);
    r->url = strdup(url);
    r->easy = curl_easy_init();
    if (!r->method || !r->url || !r->easy) {
        req_free(r);
        return NULL;
    }
    return r;
}

int http_req_header(struct http_req *r, const char *line) {
    if (!r || r->state != REQ_NEW)
        return -1;
    struct curl_slist *l = curl_slist_append(r->headers, line);
    if (!l)
        return -1;
    r->headers = l;
    return 0;
}

int http_req_body(struct http_req *r, const char *data, size_t len) {
    if (!r || r->state != REQ_NEW)
        return -1;
    buf_reset(&r->body);
    if (buf_append(&r->body, data, len) < 0)
        return -1;
    r->has_body = true;
    return 0;
}

void http_req_tls(struct http_req *r, const struct http_tls *tls) {
    if (!r || !tls)
        return;
    r->tls = *tls;
    r->has_tls = true;
}

void http_req_http11(struct http_req *r) {
    if (r)
        r->http11 = true;
}

void http_req_timeouts(struct http_req *r, long total_ms, long connect_ms) {
    if (!r)
        return;
    r->total_ms = total_ms < 0 ? 0 : total_ms;
    r->connect_ms = connect_ms < 0 ? 0 : connect_ms;
}

void http_req_on_data(struct http_req *r, http_data_cb cb) {
    if (r)
        r->on_data = cb;
}

long http_req_status(const struct http_req *r) {
    long status = 0;
    if (!r || r->state != REQ_RUNNING ||
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
        return 0;
    return status;
}

void http_req_set_user(struct http_req *r, void *user) {
    if (r)
        r->user = user;
}

void *http_req_user(const struct http_req *r) {
    return r ? r->user : NULL;
}

int http_req_start(struct http_req *r, http_done_cb done) {
    if (!r || r->state != REQ_NEW || r->c->closing)
        return -1;
    r->done = done;
    r->errbuf[0] = '\0';
    if (req_configure(r) != CURLE_OK)
        return -1;
    if (r->c->in_curl) {
        /* curl refuses to add handles from its callbacks (on_data). */
        r->state = REQ_QUEUED;
        req_link(r);
        return 0;
    }
    if (req_add(r) < 0)
        return -1;
    req_link(r);
    return 0;
}

void http_req_cancel(struct http_req *r) {
    if (!r)
        return;
    switch (r->state) {
    case REQ_NEW: req_free(r); return;
    case REQ_QUEUED:
        req_unlink(r);
        req_free(r);
        return;
    case REQ_RUNNING:
        if (r->c->in_curl) {
            /* Inside curl (an on_data callback, maybe this request's own):
             * stop feeding it now, remove it once curl returns. */
            r->state = REQ_DOOMED;
            r->done = NULL;
            r->on_data = NULL;
            return;
        }
        req_detach(r);
        req_unlink(r);
        req_free(r);
        return;
    case REQ_DOOMED: return;
    case REQ_DONE: return; /* in its own done callback: freed right after */
    }
}

void http_req_free(struct http_req *r) {
    /* Only unstarted requests are the caller's to free; anything else is a
     * cancellation (which is what such a caller would want). */
    http_req_cancel(r);
}

/* ---- results ---------------------------------------------------------- */

int http_result_header(const struct http_result *res, const char *name, char *out, size_t outlen) {
    if (!res || !res->headers || !name || !out || outlen == 0)
        return -1;
    size_t nlen = strlen(name);
    const char *p = res->headers;
    while (*p) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol : p + strlen(p);
        if ((size_t)(end - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = end;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t vlen = (size_t)(ve - v);
            if (vlen >= outlen)
                vlen = outlen - 1;
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            return 0;
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    return -1;
}
