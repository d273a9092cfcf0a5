/* kube.h - a small asynchronous Kubernetes API client.
 *
 * JSON requests (GET/POST/PUT/PATCH/DELETE) and streaming watches over the
 * shared http client, with the bearer token or client certificate of a
 * kube_conn. Answers come back parsed: status code, JSON body, and for
 * failures the Status reason/message, plus Retry-After for 429/503. A token
 * file is re-read every minute and after a 401, without blocking the loop.
 * With a kubeconfig exec credential plugin, calls wait (unsent) for the
 * plugin's credential, which is kept until its expirationTimestamp; the
 * plugin runs again when it has expired or the API server answers 401, and
 * a failed run is answered to the waiting calls as status 0 with its error.
 * Knows the API's conventions, nothing of Traefik or of sources. */
#ifndef CB_KUBE_H
#define CB_KUBE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/lib/http.h"
#include "bridge/lib/log.h"
#include "sinks/kubeconfig.h"

struct kube_client;
struct kube_call;

struct kube_response {
    long status;       /* HTTP status; 0 on transport failure */
    const char *error; /* transport error text, "" when none */
    cJSON *json;       /* parsed body or NULL; owned by the call */
    const char *body;  /* raw body */
    size_t body_len;
    const char *reason;      /* Status.reason, or "" */
    const char *message;     /* Status.message, or "" */
    uint64_t retry_after_ms; /* from Retry-After, 0 when absent */
};

typedef void (*kube_cb)(void *user, const struct kube_response *res);
/* Watch events: type is ADDED/MODIFIED/DELETED/BOOKMARK/ERROR; obj is owned by
 * the call (copy what you keep). */
typedef void (*kube_event_cb)(void *user, const char *type, const cJSON *obj);

/* Lifecycle: kube_client_new, calls, kube_client_stop and/or
 * kube_client_close, run the loop (the token re-read timer closes), then
 * kube_client_free. new takes ownership of *conn's contents on success
 * (conn is zeroed); NULL with err set otherwise. */
struct kube_client *kube_client_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                                    struct kube_conn *conn, char *err, size_t errlen);
/* Cancel every call in flight, a running exec plugin and a token re-read;
 * no callback afterwards. Before closing the http client. */
void kube_client_stop(struct kube_client *kc);
/* kube_client_stop, then close the token re-read timer. */
void kube_client_close(struct kube_client *kc);
/* After the loop ran the timer's close (a client without a token file has
 * none to wait for); closes first when that was not done. NULL is fine. */
void kube_client_free(struct kube_client *kc);
/* Called once per answered request (metrics): verb is the Kubernetes verb
 * (get, watch, create, update, patch, delete), status 0 for a transport
 * failure. */
typedef void (*kube_observer_cb)(void *user, const char *verb, long status);
void kube_client_set_observer(struct kube_client *kc, kube_observer_cb cb, void *user);

void kube_client_set_dry_run(struct kube_client *kc, bool dry_run);
/* Send ?fieldManager=name with every POST, PUT and PATCH (NULL: none, and the
 * API server names the writer after the User-Agent, "canary-bridge"). The
 * name shows in the objects' managedFields. 0, or -1 out of memory. */
int kube_client_set_field_manager(struct kube_client *kc, const char *name);
/* Started, unfinished calls (writes in flight, for graceful shutdown). */
size_t kube_client_writes_in_flight(const struct kube_client *kc);

/* path begins with "/" and may carry a query. content_type NULL for
 * "application/json". For POST/PUT/PATCH/DELETE in dry-run mode,
 * "dryRun=All" is appended. Returns NULL on failure to start (cb not called). */
struct kube_call *kube_request(struct kube_client *kc, const char *method, const char *path,
                               const char *content_type, const char *body, size_t body_len,
                               kube_cb cb, void *user);
/* Convenience: serialise obj (unformatted) as the body. */
struct kube_call *kube_request_json(struct kube_client *kc, const char *method, const char *path,
                                    const cJSON *obj, kube_cb cb, void *user);
/* The same, but never dry-run, even when the client is in dry-run mode: for
 * the bridge's own bookkeeping objects (the leader-election Lease), which
 * must really be written for --dry-run instances to coordinate. */
struct kube_call *kube_request_nodry(struct kube_client *kc, const char *method, const char *path,
                                     const char *content_type, const char *body, size_t body_len,
                                     kube_cb cb, void *user);
struct kube_call *kube_request_json_nodry(struct kube_client *kc, const char *method,
                                          const char *path, const cJSON *obj, kube_cb cb,
                                          void *user);
/* A GET for an optional feature (traefik.api.pods): a 403 is the caller's
 * to report; it does not make kube_client_problem say the API server
 * refuses the bridge. */
struct kube_call *kube_get_aside(struct kube_client *kc, const char *path, kube_cb cb, void *user);
/* A streaming watch: on_event per line, then done once when it ends. */
struct kube_call *kube_watch(struct kube_client *kc, const char *path, kube_event_cb on_event,
                             kube_cb done, void *user);
/* A watch whose stream is open (its 200 came); false for other calls. */
bool kube_call_open(const struct kube_call *call);
/* Cancel: no callback is called afterwards. */
void kube_call_cancel(struct kube_call *call);

/* One line for a failed answer: the transport error, or "HTTP 401
 * Unauthorized: <Status message>" (reason, then the message when it says
 * more). */
void kube_response_describe(const struct kube_response *r, char *out, size_t outlen);
/* Why the API server cannot be used now, or NULL: no answer at all (down,
 * unreachable), or it refuses the bridge's credentials (401, or 403 to a
 * read). Cleared by the next successful answer, or a watch that opens. */
const char *kube_client_problem(struct kube_client *kc);

/* "/apis/<group>/<version>[/namespaces/<ns>]/<plural>[/<name>]" into out;
 * "/api/<version>/..." for the core group (group ""). */
int kube_path(char *out, size_t outlen, const char *group, const char *version, const char *ns,
              const char *plural, const char *name);

#endif
