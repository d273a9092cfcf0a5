/* http.h - asynchronous HTTP on the libuv loop, through libcurl's multi
 * socket interface (uv_poll per socket + one uv_timer, as in curl's
 * docs/examples/multi-uv.c). One thread, nothing blocks.
 *
 * Lifecycle of the client: http_client_new (memory, curl, the two timers; no
 * I/O until a request starts), then http_client_close, which cancels every
 * request without callbacks and closes the handles; the memory goes in the
 * last close callback.
 *
 * Ownership: a request belongs to the client from http_req_start() until its
 * done callback returns; the client frees it right after. http_req_cancel()
 * frees a started request WITHOUT calling its done callback. A request that
 * was created but never started is freed with http_req_free(). */
#ifndef CB_HTTP_H
#define CB_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "bridge/lib/log.h"

struct http_client;
struct http_req;

struct http_tls {
    const char *ca_file; /* or NULL */
    const char *ca_pem;  /* in-memory CA bundle (kubeconfig *-data), or NULL */
    size_t ca_pem_len;
    const char *cert_file; /* client cert, or NULL */
    const char *cert_pem;
    size_t cert_pem_len;
    const char *key_file; /* client key, or NULL */
    const char *key_pem;
    size_t key_pem_len;
    bool insecure; /* skip verification (caller logs the warning) */
};

struct http_result {
    CURLcode curl;     /* CURLE_OK or the transport error */
    const char *error; /* human-readable transport error, "" when none */
    long status;       /* HTTP status, 0 when no response */
    const char *body;  /* buffered body (NUL-terminated; "" for streams) */
    size_t body_len;
    const char *headers; /* raw response header block, NUL-terminated */
    long os_errno;       /* the socket's errno on a transport error (ECONNREFUSED), or 0 */
};

/* Done: called exactly once per started request unless it was cancelled. */
typedef void (*http_done_cb)(struct http_req *req, const struct http_result *res);
/* Streaming: when set, body bytes go here instead of being buffered. Return 0
 * to continue, -1 to abort the transfer (done then reports CURLE_WRITE_ERROR). */
typedef int (*http_data_cb)(struct http_req *req, const char *data, size_t len);

struct http_client *http_client_new(uv_loop_t *loop, struct logger *lg);
/* Bound the connections this client opens: at most max_conns at once (idle
 * keep-alive ones included, as servers count them), to any one host and in
 * all. Beyond that, curl queues a request until a connection is free. For a
 * client that talks to one server (Consul); 0 = no bound. Returns 0 or -1. */
int http_client_limit_connections(struct http_client *c, long max_conns);
/* Speak HTTP/1.1 only on this request (no HTTP/2 over TLS), and never wait
 * for a connection that might multiplex. */
void http_req_http11(struct http_req *r);
/* Cancels every request (no callbacks), closes the uv handles; the memory is
 * released once libuv has closed them (run the loop afterwards). */
void http_client_close(struct http_client *c);
/* Number of started, unfinished requests (for graceful shutdown). */
size_t http_client_active(const struct http_client *c);

/* method: "GET", "POST", "PUT", "PATCH", "DELETE". url is copied. */
struct http_req *http_req_new(struct http_client *c, const char *method, const char *url);
/* Add a request header line, e.g. "Content-Type: application/json". */
int http_req_header(struct http_req *r, const char *line);
/* Request body; copied. */
int http_req_body(struct http_req *r, const char *data, size_t len);
/* TLS settings; the strings must outlive the request (they are not copied). */
void http_req_tls(struct http_req *r, const struct http_tls *tls);
/* Whole-transfer timeout (0 = none, for watches) and connect timeout. */
void http_req_timeouts(struct http_req *r, long total_ms, long connect_ms);
void http_req_on_data(struct http_req *r, http_data_cb cb);
/* The status code of the response being received, 0 before its headers:
 * tells a stream that is open (200) from one that is answering an error. */
long http_req_status(const struct http_req *r);
void http_req_set_user(struct http_req *r, void *user);
void *http_req_user(const struct http_req *r);
int http_req_start(struct http_req *r, http_done_cb done);
void http_req_cancel(struct http_req *r);
void http_req_free(struct http_req *r);

/* Look up a response header (case-insensitive name) in res->headers; copies
 * the trimmed value into out. Returns 0 if found. For redirects/100-continue
 * the last header block wins. */
int http_result_header(const struct http_result *res, const char *name, char *out, size_t outlen);

#endif
