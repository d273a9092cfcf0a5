/* kube.c - asynchronous Kubernetes API client; see kube.h. */
#include "sinks/kube.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/fileread.h"
#include "bridge/lib/list.h"
#include "bridge/lib/secret.h"
#include "bridge/lib/timer.h"
#include "sinks/execcred.h"

#define KUBE_TIMEOUT_MS 15000
#define KUBE_CONNECT_TIMEOUT_MS 5000
#define KUBE_WATCH_LINE_MAX (16 * 1024 * 1024)
#define KUBE_ERROR_BODY_MAX (64 * 1024)
/* Projected service-account tokens rotate hourly and kubelet refreshes the
 * file well before expiry; a minute is plenty to follow it. */
#define KUBE_TOKEN_REREAD_MS 60000

struct kube_client {
    uv_loop_t *loop;
    struct http_client *http;
    struct logger *log;
    struct kube_conn conn;
    struct http_tls tls;
    char *auth_header; /* "Authorization: Bearer ..." or NULL; secret */
    bool dry_run;
    char *field_manager; /* URL-encoded, or NULL: the server derives it from User-Agent */
    kube_observer_cb observer;
    void *observer_user;
    uv_timer_t token_timer; /* re-reads conn.token_file */
    bool token_timer_open;
    struct file_read *token_read;
    bool token_read_failed; /* warn once per failure streak */
    size_t writes_in_flight;
    struct list_node calls; /* every started call (newest first), for kube_client_stop */
    /* Why the API server cannot be used right now (unreachable, or it
     * refuses our credentials), "" when it can; see kube_client_problem. */
    char problem[640];
    bool problem_auth;    /* the problem is refused credentials (said once) */
    uint64_t problem_seq; /* calls started after this one may clear it */
    uint64_t next_seq;
    /* exec credential plugin (conn.exec): calls wait for a credential */
    struct execcred_run *exec_run; /* running plugin, or NULL */
    uint64_t exec_seq;             /* plugin runs started */
    uint64_t cred_gen;             /* credentials installed */
    bool have_cred;                /* false before the first, after a 401 */
    bool cred_expires;
    int64_t cred_expiry_ms;     /* Unix ms */
    char *exec_cert, *exec_key; /* secrets */
    size_t exec_cert_len, exec_key_len;
    char exec_error[1024]; /* the last failure, for the waiting calls */
};

struct kube_call {
    struct kube_client *kc;
    struct http_req *req;
    kube_cb done;
    kube_event_cb on_event;
    void *user;
    buf_t line; /* partial watch line */
    bool is_write;
    bool aside;         /* kube_get_aside: a 403 is the caller's, not the client's */
    const char *verb;   /* static string, for the observer */
    char what[96];      /* the resource path, shortened, for messages */
    uint64_t seq;       /* start order: only a call newer than a problem clears it */
    bool failed_stream; /* a watch line could not be parsed */
    bool in_event;      /* inside on_event: a cancel then only marks it */
    bool cancelled;     /* cancelled from its own on_event; freed on return */
    bool waiting;       /* not started: waits for the exec plugin's run wait_seq */
    uint64_t wait_seq;
    uint64_t cred_gen;     /* the credential it was sent with */
    struct list_node link; /* in kc->calls while started */
};

/* The token file at start-up (a few KiB), without trailing whitespace. */
static int read_token_file(const char *path, char **out, char *err, size_t errlen) {
    size_t len;
    if (file_read_all(path, 1024 * 1024, out, &len, err, errlen) < 0)
        return -1;
    while (len && ((*out)[len - 1] == '\n' || (*out)[len - 1] == '\r' || (*out)[len - 1] == ' '))
        (*out)[--len] = '\0';
    return 0;
}

static int set_token(struct kube_client *kc, const char *token) {
    buf_t h = BUF_INIT;
    if (buf_printf(&h, "Authorization: Bearer %s", token) < 0) {
        buf_free(&h);
        return -1;
    }
    if (kc->auth_header) {
        explicit_bzero(kc->auth_header, strlen(kc->auth_header));
        free(kc->auth_header);
    }
    kc->auth_header = buf_steal(&h);
    return kc->auth_header ? 0 : -1;
}

static void on_token_read(void *user, int err, const char *data, size_t len) {
    struct kube_client *kc = user;
    kc->token_read = NULL;
    if (err || len == 0) {
        if (!kc->token_read_failed)
            log_warn(kc->log,
                     "kubernetes: cannot re-read token file %s: %s; keeping the last token",
                     kc->conn.token_file, err ? uv_strerror(err) : "empty file");
        kc->token_read_failed = true;
        return;
    }
    kc->token_read_failed = false;
    const char *cur = kc->auth_header ? kc->auth_header + strlen("Authorization: Bearer ") : "";
    if (strcmp(cur, data) == 0)
        return;
    if (set_token(kc, data) == 0)
        log_info(kc->log, "kubernetes: token file %s changed; using the new token",
                 kc->conn.token_file);
}

static void token_reread(struct kube_client *kc) {
    if (!kc->conn.token_file || kc->token_read || !kc->token_timer_open)
        return;
    int err = 0;
    kc->token_read = file_read_start(kc->loop, kc->conn.token_file, on_token_read, kc, &err);
    if (!kc->token_read)
        on_token_read(kc, err, "", 0);
}

static void on_token_timer(uv_timer_t *t) {
    token_reread(t->data);
}

struct kube_client *kube_client_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                                    struct kube_conn *conn, char *err, size_t errlen) {
    struct kube_client *kc = calloc(1, sizeof *kc);
    if (!kc) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    kc->loop = loop;
    kc->http = http;
    kc->log = lg;
    list_init(&kc->calls);
    char *token = NULL;
    if (conn->token_file) {
        if (read_token_file(conn->token_file, &token, err, errlen) < 0) {
            free(kc);
            return NULL;
        }
    } else if (conn->token) {
        token = strdup(conn->token);
        if (!token) {
            free(kc);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
    }
    if (token) {
        int rc = set_token(kc, token);
        explicit_bzero(token, strlen(token));
        free(token);
        if (rc < 0) {
            free(kc);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
    }
    kc->conn = *conn;
    memset(conn, 0, sizeof *conn);
    kc->tls.ca_file = kc->conn.ca_file;
    kc->tls.ca_pem = kc->conn.ca_pem;
    kc->tls.ca_pem_len = kc->conn.ca_pem_len;
    kc->tls.cert_file = kc->conn.cert_file;
    kc->tls.cert_pem = kc->conn.cert_pem;
    kc->tls.cert_pem_len = kc->conn.cert_pem_len;
    kc->tls.key_file = kc->conn.key_file;
    kc->tls.key_pem = kc->conn.key_pem;
    kc->tls.key_pem_len = kc->conn.key_pem_len;
    kc->tls.insecure = kc->conn.insecure;
    if (kc->conn.token_file && uv_timer_init(loop, &kc->token_timer) == 0) {
        kc->token_timer.data = kc;
        kc->token_timer_open = true;
        timer_arm(&kc->token_timer, on_token_timer, KUBE_TOKEN_REREAD_MS, KUBE_TOKEN_REREAD_MS);
        uv_unref((uv_handle_t *)&kc->token_timer); /* never keeps the loop alive */
    }
    if (kc->conn.insecure)
        log_warn(lg,
                 "kubernetes: TLS verification is OFF (insecure-skip-tls-verify) for %s: "
                 "anyone on the path can impersonate the API server",
                 kc->conn.server);
    return kc;
}

static void call_unlink(struct kube_call *c) {
    struct kube_client *kc = c->kc;
    if (!list_linked(&c->link))
        return;
    list_remove(&c->link);
    if (c->is_write && kc->writes_in_flight)
        kc->writes_in_flight--;
}

static void call_free(struct kube_call *c) {
    buf_free(&c->line);
    free(c);
}

void kube_call_cancel(struct kube_call *c) {
    if (!c || c->cancelled)
        return;
    call_unlink(c);
    if (c->req)
        http_req_cancel(c->req); /* inside curl: no more data, no done */
    c->req = NULL;
    if (c->in_event)
        c->cancelled = true; /* on_data, still using it, frees it */
    else
        call_free(c);
}

void kube_client_set_observer(struct kube_client *kc, kube_observer_cb cb, void *user) {
    kc->observer = cb;
    kc->observer_user = user;
}

void kube_client_stop(struct kube_client *kc) {
    while (!list_empty(&kc->calls))
        kube_call_cancel(list_entry(list_first(&kc->calls), struct kube_call, link));
    execcred_close(kc->exec_run);
    kc->exec_run = NULL;
    file_read_detach(kc->token_read);
    kc->token_read = NULL;
    if (kc->token_timer_open)
        uv_timer_stop(&kc->token_timer);
}

void kube_client_close(struct kube_client *kc) {
    kube_client_stop(kc);
    if (kc->token_timer_open) {
        uv_close((uv_handle_t *)&kc->token_timer, NULL);
        kc->token_timer_open = false;
    }
}

void kube_client_free(struct kube_client *kc) {
    if (!kc)
        return;
    kube_client_close(kc);
    if (kc->auth_header) {
        explicit_bzero(kc->auth_header, strlen(kc->auth_header));
        free(kc->auth_header);
    }
    secret_free_len(kc->exec_cert, kc->exec_cert_len);
    secret_free_len(kc->exec_key, kc->exec_key_len);
    kube_conn_free(&kc->conn);
    free(kc->field_manager);
    free(kc);
}

void kube_client_set_dry_run(struct kube_client *kc, bool dry_run) {
    kc->dry_run = dry_run;
}

int kube_client_set_field_manager(struct kube_client *kc, const char *name) {
    buf_t b = BUF_INIT;
    if (name && (buf_put_urlencoded(&b, name, false) < 0 || !b.data)) {
        buf_free(&b);
        return -1;
    }
    free(kc->field_manager);
    kc->field_manager = name ? buf_steal(&b) : NULL;
    return 0;
}

size_t kube_client_writes_in_flight(const struct kube_client *kc) {
    return kc->writes_in_flight;
}

int kube_path(char *out, size_t outlen, const char *group, const char *version, const char *ns,
              const char *plural, const char *name) {
    /* The core group ("") lives under /api/<version>. */
    const char *root = group && *group ? "/apis/" : "/api";
    const char *g = group && *group ? group : "";
    int n;
    if (ns)
        n = snprintf(out, outlen, "%s%s/%s/namespaces/%s/%s%s%s", root, g, version, ns, plural,
                     name ? "/" : "", name ? name : "");
    else
        n = snprintf(out, outlen, "%s%s/%s/%s%s%s", root, g, version, plural, name ? "/" : "",
                     name ? name : "");
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static uint64_t parse_retry_after(const struct http_result *res) {
    char v[64];
    if (http_result_header(res, "Retry-After", v, sizeof v) != 0)
        return 0;
    char *end;
    long s = strtol(v, &end, 10);
    if (end == v || s < 0)
        return 0;
    if (s > 300)
        s = 300; /* never let a server park a route for longer than that */
    return (uint64_t)s * 1000;
}

void kube_response_describe(const struct kube_response *r, char *out, size_t outlen) {
    if (!r->status) {
        snprintf(out, outlen, "%s", r->error[0] ? r->error : "no answer");
        return;
    }
    /* "HTTP 401 Unauthorized", then the message when it says more. */
    const char *why = r->reason[0] ? r->reason : r->message;
    bool more = r->message[0] && strcmp(r->message, why) != 0;
    snprintf(out, outlen, "HTTP %ld%s%.200s%s%.300s", r->status, why[0] ? " " : "", why,
             more ? ": " : "", more ? r->message : "");
    /* A plain-text body may end in a newline: one line only. */
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* The client's health, from every answer: unreachable (no answer) and
 * refused credentials (401, or 403 to a read) make it unusable until an
 * answer succeeds. A 403 to a write concerns that object's namespace and is
 * the route's error, not the client's. Said once per streak. */
static void track_problem(struct kube_call *c, const struct kube_response *r) {
    struct kube_client *kc = c->kc;
    if (r->status >= 200 && r->status < 300) {
        if (c->seq <= kc->problem_seq)
            return; /* started before the problem: proves nothing about now */
        if (kc->problem[0])
            log_info(kc->log, "kubernetes: the API server answers again");
        kc->problem[0] = '\0';
        kc->problem_auth = false;
        return;
    }
    bool auth = r->status == 401 || (r->status == 403 && !c->is_write && !c->aside);
    if (r->status && !auth)
        return;
    char why[400];
    kube_response_describe(r, why, sizeof why);
    bool first = !kc->problem_auth;
    kc->problem_auth = auth;
    kc->problem_seq = kc->next_seq;
    if (auth)
        snprintf(kc->problem, sizeof kc->problem,
                 "the API server refuses the bridge's %s (%s %s): %.400s",
                 r->status == 401 ? "credentials" : "requests", c->verb, c->what, why);
    else
        snprintf(kc->problem, sizeof kc->problem, "cannot reach the API server (%s %s): %.400s",
                 c->verb, c->what, why);
    if (first && auth)
        log_warn(kc->log,
                 "kubernetes: %s; not ready, retrying with backoff (check the token or "
                 "client certificate and the RBAC rules of the bridge's account)",
                 kc->problem);
}

bool kube_call_open(const struct kube_call *c) {
    return c && c->on_event && c->req && http_req_status(c->req) == 200;
}

/* A watch opened since the problem was seen. */
static bool opened_since(const struct kube_call *c) {
    return c->seq > c->kc->problem_seq && kube_call_open(c);
}

const char *kube_client_problem(struct kube_client *kc) {
    if (!kc->problem[0])
        return NULL;
    /* A watch opened since (its 200 came, no answer yet) proves the server
     * is reachable and takes our credentials. */
    list_for_each(n, &kc->calls) {
        if (opened_since(list_entry(n, struct kube_call, link))) {
            log_info(kc->log, "kubernetes: the API server answers again");
            kc->problem[0] = '\0';
            kc->problem_auth = false;
            return NULL;
        }
    }
    return kc->problem;
}

static void exec_rejected(struct kube_client *kc, uint64_t gen);

static void on_http_done(struct http_req *req, const struct http_result *res) {
    struct kube_call *c = http_req_user(req);
    c->req = NULL; /* the http client frees it after we return */
    call_unlink(c);
    struct kube_response r = {0};
    r.status = res->curl == CURLE_OK ? res->status : 0;
    r.error = res->curl == CURLE_OK ? "" : res->error;
    r.body = res->body ? res->body : "";
    r.body_len = res->body_len;
    if (c->on_event && r.status != 200 && !r.body_len && c->line.len) {
        r.body = c->line.data; /* a watch answered with an error (on_watch_data kept it) */
        r.body_len = c->line.len;
    }
    r.reason = "";
    r.message = "";
    if (c->failed_stream && r.status == 200) {
        r.status = 0;
        r.error = "malformed watch stream";
    }
    if (r.body_len)
        r.json = cJSON_ParseWithLength(r.body, r.body_len);
    if (r.json && cJSON_IsObject(r.json)) {
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(r.json, "kind");
        if (cJSON_IsString(kind) && strcmp(kind->valuestring, "Status") == 0) {
            const cJSON *reason = cJSON_GetObjectItemCaseSensitive(r.json, "reason");
            const cJSON *msg = cJSON_GetObjectItemCaseSensitive(r.json, "message");
            if (cJSON_IsString(reason))
                r.reason = reason->valuestring;
            if (cJSON_IsString(msg))
                r.message = msg->valuestring;
        }
    }
    if (!r.message[0] && r.status >= 400 && r.body_len && !r.json)
        r.message = r.body; /* plain-text answers, e.g. "404 page not found" */
    r.retry_after_ms = parse_retry_after(res);
    if (r.status == 401)
        token_reread(c->kc); /* the token may have rotated under us */
    track_problem(c, &r);
    if (r.status == 401)
        exec_rejected(c->kc, c->cred_gen);
    if (c->kc->observer)
        c->kc->observer(c->kc->observer_user, c->verb, r.status);
    if (c->done)
        c->done(c->user, &r);
    cJSON_Delete(r.json);
    call_free(c);
}

static int on_watch_data(struct http_req *req, const char *data, size_t len) {
    struct kube_call *c = http_req_user(req);
    if (buf_append(&c->line, data, len) < 0)
        return -1;
    long status = http_req_status(req);
    if (status && status != 200) {
        /* Not a stream but an error answer (a Status object): keep it whole
         * for on_http_done, which reports its reason and message. */
        return c->line.len > KUBE_ERROR_BODY_MAX ? -1 : 0;
    }
    for (;;) {
        char *nl = memchr(c->line.data, '\n', c->line.len);
        if (!nl)
            break;
        size_t n = (size_t)(nl - c->line.data);
        cJSON *ev = cJSON_ParseWithLength(c->line.data, n);
        buf_consume(&c->line, n + 1);
        if (!ev) {
            if (n == 0)
                continue;
            c->failed_stream = true;
            return -1;
        }
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
        const cJSON *obj = cJSON_GetObjectItemCaseSensitive(ev, "object");
        if (cJSON_IsString(type) && cJSON_IsObject(obj) && c->on_event) {
            c->in_event = true;
            c->on_event(c->user, type->valuestring, obj);
            c->in_event = false;
        }
        cJSON_Delete(ev);
        if (c->cancelled) { /* by the event's handler: stop here */
            call_free(c);
            return -1;
        }
    }
    if (c->line.len > KUBE_WATCH_LINE_MAX) {
        c->failed_stream = true;
        return -1;
    }
    return 0;
}

/* "/apis/traefik.io/v1alpha1/namespaces/x/ingressroutes/y?watch=1" ->
 * "ingressroutes/y": the resource part of a path, for messages. */
static void describe_path(const char *path, char *out, size_t outlen) {
    size_t n = strcspn(path, "?");
    const char *p = path;
    /* past /apis/<group>/<version>/ or /api/<version>/ ... */
    int skip = strncmp(path, "/apis/", 6) == 0 ? 3 : strncmp(path, "/api/", 5) == 0 ? 2 : 0;
    for (int i = 0; i < skip && p < path + n; i++) {
        const char *slash = memchr(p + 1, '/', (size_t)(path + n - p - 1));
        p = slash ? slash : path + n;
    }
    /* ... and past namespaces/<ns>/ */
    if (p < path + n && strncmp(p, "/namespaces/", 12) == 0) {
        const char *slash = memchr(p + 12, '/', (size_t)(path + n - p - 12));
        if (slash)
            p = slash;
    }
    if (*p == '/' && p + 1 < path + n)
        p++;
    snprintf(out, outlen, "%.*s", (int)(path + n - p), p);
}

/* ---- exec credential plugin -----------------------------------------------
 *
 * With a kubeconfig exec plugin there is no credential at start: a call
 * made before the first one arrives (or after it expired, or after the API
 * server answered 401 to it) is built but not started; it waits for the
 * plugin's run, and starts with the new credential when the run succeeds or
 * is answered with the run's error (status 0) when it fails. One run at a
 * time; calls already sent are not held up by a refresh. */

static int64_t now_unix_ms(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool cred_usable(const struct kube_client *kc) {
    return kc->have_cred && (!kc->cred_expires || now_unix_ms() < kc->cred_expiry_ms);
}

static void on_http_done(struct http_req *req, const struct http_result *res);

static int call_send(struct kube_client *kc, struct kube_call *c) {
    c->waiting = false;
    c->cred_gen = kc->cred_gen;
    if (kc->auth_header && http_req_header(c->req, kc->auth_header) < 0)
        return -1;
    http_req_tls(c->req, &kc->tls);
    return http_req_start(c->req, on_http_done);
}

/* Answer a call that never went out: status 0 with msg. */
static void call_fail_unsent(struct kube_call *c, const char *msg) {
    struct kube_client *kc = c->kc;
    call_unlink(c);
    if (c->req)
        http_req_free(c->req);
    c->req = NULL;
    struct kube_response r = {.error = msg, .body = "", .reason = "", .message = ""};
    if (kc->observer)
        kc->observer(kc->observer_user, c->verb, 0);
    if (c->done)
        c->done(c->user, &r);
    call_free(c);
}

static struct kube_call *first_waiting(struct kube_client *kc, uint64_t seq) {
    list_for_each(n, &kc->calls) {
        struct kube_call *c = list_entry(n, struct kube_call, link);
        if (c->waiting && c->wait_seq <= seq)
            return c;
    }
    return NULL;
}

static int install_cred(struct kube_client *kc, struct execcred *cred) {
    if (cred->token) {
        if (set_token(kc, cred->token) < 0)
            return -1;
    } else if (kc->auth_header) {
        secret_free(kc->auth_header);
        kc->auth_header = NULL;
    }
    secret_free_len(kc->exec_cert, kc->exec_cert_len);
    secret_free_len(kc->exec_key, kc->exec_key_len);
    kc->exec_cert = cred->cert_pem; /* taken over */
    kc->exec_cert_len = cred->cert_pem_len;
    kc->exec_key = cred->key_pem;
    kc->exec_key_len = cred->key_pem_len;
    cred->cert_pem = cred->key_pem = NULL;
    /* Sent requests copied the old ones when they started (curl blobs). */
    kc->tls.cert_pem = kc->exec_cert;
    kc->tls.cert_pem_len = kc->exec_cert_len;
    kc->tls.key_pem = kc->exec_key;
    kc->tls.key_pem_len = kc->exec_key_len;
    kc->have_cred = true;
    kc->cred_expires = cred->has_expiry;
    kc->cred_expiry_ms = cred->expiry_ms;
    kc->cred_gen++;
    return 0;
}

static void on_exec_done(void *user, struct execcred *cred, const char *err) {
    struct kube_client *kc = user;
    uint64_t seq = kc->exec_seq;
    kc->exec_run = NULL;
    if (cred && install_cred(kc, cred) < 0)
        err = "out of memory";
    if (cred && !err) {
        const struct kube_exec *ex = kc->conn.exec;
        if (kc->cred_expires) {
            time_t t = (time_t)(kc->cred_expiry_ms / 1000);
            struct tm tm;
            char when[32] = "?";
            if (gmtime_r(&t, &tm))
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
            log_info(kc->log, "kubernetes: exec plugin %s (user '%s') gave a %s valid until %s",
                     ex->command, ex->user, kc->exec_cert ? "client certificate" : "token", when);
        } else {
            log_info(kc->log, "kubernetes: exec plugin %s (user '%s') gave a %s", ex->command,
                     ex->user, kc->exec_cert ? "client certificate" : "token");
        }
        struct kube_call *c;
        while ((c = first_waiting(kc, seq)))
            if (call_send(kc, c) < 0)
                call_fail_unsent(c, "cannot start the request");
        return;
    }
    snprintf(kc->exec_error, sizeof kc->exec_error, "%s", err);
    log_error(kc->log, "kubernetes: %s", kc->exec_error);
    struct kube_call *c;
    while ((c = first_waiting(kc, seq)))
        call_fail_unsent(c, kc->exec_error);
}

/* Make sure a run is under way; its number, or 0 when none could start. */
static uint64_t exec_refresh(struct kube_client *kc) {
    if (kc->exec_run)
        return kc->exec_seq;
    char err[256];
    kc->exec_run = execcred_start(kc->loop, kc->conn.exec, EXECCRED_TIMEOUT_MS, on_exec_done, kc,
                                  err, sizeof err);
    if (!kc->exec_run) {
        log_error(kc->log, "kubernetes: cannot run the exec credential plugin: %s", err);
        return 0;
    }
    return ++kc->exec_seq;
}

/* A 401 to a call sent with credential gen: the plugin runs again, unless
 * a newer credential is already there (or coming). */
static void exec_rejected(struct kube_client *kc, uint64_t gen) {
    if (!kc->conn.exec || gen != kc->cred_gen || !kc->have_cred)
        return;
    kc->have_cred = false;
    log_warn(kc->log,
             "kubernetes: the API server rejected the credential of exec plugin %s (401); "
             "running it again",
             kc->conn.exec->command);
    exec_refresh(kc);
}

static struct kube_call *call_start(struct kube_client *kc, const char *method, const char *path,
                                    const char *content_type, const char *body, size_t body_len,
                                    kube_cb cb, kube_event_cb on_event, void *user, bool nodry) {
    bool is_write = strcmp(method, "GET") != 0;
    buf_t url = BUF_INIT;
    int rc = buf_printf(&url, "%s%s", kc->conn.server, path);
    if (rc == 0 && is_write && kc->dry_run && !nodry)
        rc = buf_printf(&url, "%cdryRun=All", strchr(url.data, '?') ? '&' : '?');
    /* Who wrote which field shows in managedFields under this name; DELETE
     * takes no fieldManager. */
    if (rc == 0 && is_write && kc->field_manager && strcmp(method, "DELETE") != 0)
        rc = buf_printf(&url, "%cfieldManager=%s", strchr(url.data, '?') ? '&' : '?',
                        kc->field_manager);
    if (rc < 0) {
        buf_free(&url);
        return NULL;
    }
    struct kube_call *c = calloc(1, sizeof *c);
    struct http_req *req = c ? http_req_new(kc->http, method, url.data) : NULL;
    buf_free(&url);
    if (!req) {
        free(c);
        return NULL;
    }
    c->kc = kc;
    list_init(&c->link);
    c->req = req;
    c->seq = ++kc->next_seq;
    c->done = cb;
    c->on_event = on_event;
    c->user = user;
    c->is_write = is_write;
    describe_path(path, c->what, sizeof c->what);
    c->verb = on_event                        ? "watch"
              : strcmp(method, "GET") == 0    ? "get"
              : strcmp(method, "POST") == 0   ? "create"
              : strcmp(method, "PUT") == 0    ? "update"
              : strcmp(method, "PATCH") == 0  ? "patch"
              : strcmp(method, "DELETE") == 0 ? "delete"
                                              : "other";
    char ct[128];
    snprintf(ct, sizeof ct, "Content-Type: %s", content_type ? content_type : "application/json");
    if (http_req_header(req, "Accept: application/json") < 0 ||
        http_req_header(req, "User-Agent: canary-bridge/" CANARY_BRIDGE_VERSION) < 0 ||
        (body && (http_req_header(req, ct) < 0 || http_req_body(req, body, body_len) < 0)))
        goto fail;
    http_req_timeouts(req, on_event ? 0 : KUBE_TIMEOUT_MS, KUBE_CONNECT_TIMEOUT_MS);
    if (on_event)
        http_req_on_data(req, on_watch_data);
    http_req_set_user(req, c);
    if (kc->conn.exec && !cred_usable(kc)) {
        c->waiting = true;
        if (!(c->wait_seq = exec_refresh(kc)))
            goto fail;
    } else if (call_send(kc, c) < 0) {
        goto fail;
    }
    list_push_front(&kc->calls, &c->link);
    if (is_write)
        kc->writes_in_flight++;
    return c;
fail:
    http_req_free(req);
    free(c);
    return NULL;
}

struct kube_call *kube_request(struct kube_client *kc, const char *method, const char *path,
                               const char *content_type, const char *body, size_t body_len,
                               kube_cb cb, void *user) {
    return call_start(kc, method, path, content_type, body, body_len, cb, NULL, user, false);
}

static struct kube_call *request_json(struct kube_client *kc, const char *method, const char *path,
                                      const cJSON *obj, kube_cb cb, void *user, bool nodry) {
    char *body = cJSON_PrintUnformatted(obj);
    if (!body)
        return NULL;
    struct kube_call *c =
        call_start(kc, method, path, NULL, body, strlen(body), cb, NULL, user, nodry);
    cJSON_free(body);
    return c;
}

struct kube_call *kube_request_json(struct kube_client *kc, const char *method, const char *path,
                                    const cJSON *obj, kube_cb cb, void *user) {
    return request_json(kc, method, path, obj, cb, user, false);
}

struct kube_call *kube_request_nodry(struct kube_client *kc, const char *method, const char *path,
                                     const char *content_type, const char *body, size_t body_len,
                                     kube_cb cb, void *user) {
    return call_start(kc, method, path, content_type, body, body_len, cb, NULL, user, true);
}

struct kube_call *kube_request_json_nodry(struct kube_client *kc, const char *method,
                                          const char *path, const cJSON *obj, kube_cb cb,
                                          void *user) {
    return request_json(kc, method, path, obj, cb, user, true);
}

struct kube_call *kube_get_aside(struct kube_client *kc, const char *path, kube_cb cb, void *user) {
    struct kube_call *c = call_start(kc, "GET", path, NULL, NULL, 0, cb, NULL, user, false);
    if (c)
        c->aside = true;
    return c;
}

struct kube_call *kube_watch(struct kube_client *kc, const char *path, kube_event_cb on_event,
                             kube_cb done, void *user) {
    return call_start(kc, "GET", path, NULL, NULL, 0, done, on_event, user, false);
}
