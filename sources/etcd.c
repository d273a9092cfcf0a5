/* etcd.c - the etcd v3 key source: list a prefix, then watch it, forever.
 *
 * Talks to etcd's JSON gRPC gateway over the shared http client (no gRPC
 * library, no threads). The life cycle, one step at a time on the loop:
 *
 *   [authenticate] -> list (paginated range, pinned to the first page's
 *   revision R) -> on_snapshot(R) -> watch from R+1 -> on_event ...
 *
 * Only one step is in flight at a time (s->base.req or s->watch), so the
 * state is small. When a step fails the source reports the outage once,
 * rotates to the next endpoint and retries with jittered exponential backoff.
 * A reconnect resumes the watch from the last revision delivered + 1, so
 * nothing is lost or repeated; only when etcd has compacted that revision
 * away does it re-list and send a fresh snapshot. Expired auth tokens are
 * renewed transparently.
 *
 * A watched member can go bad without closing the stream, so two checks end
 * such a watch (and the source moves to the next endpoint): the watch
 * requires a leader, so a member cut off from its peers ends it itself, and
 * a periodic status request with a deadline (the liveness check) catches a
 * member that is frozen and sends nothing at all.
 *
 * Re-entrancy, the timer, failures and the writes in flight follow the base
 * in source.h; the wire format (framing, JSON bodies and answers) is
 * etcd_proto.c. */
#include "sources/etcd.h"

#include "bridge/lib/buf.h"
#include "bridge/lib/secret.h"
#include "bridge/lib/url.h"
#include "sources/etcd_proto.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ETCD_LIST_LIMIT 1000
#define ETCD_UNARY_TIMEOUT_MS 10000L
#define ETCD_CONNECT_TIMEOUT_MS 3000L
/* A watch that connected but was never confirmed is as good as dead. */
#define ETCD_CREATE_TIMEOUT_MS 10000u
#define ETCD_BACKOFF_BASE_MS 100u
#define ETCD_BACKOFF_MAX_MS 10000u
/* A watch must stay up this long before the backoff starts from scratch, so
 * a server that accepts watches and then drops them at once is not hammered. */
#define ETCD_STABLE_MS 10000u
/* The liveness check of the watched member (source.liveness_check): its
 * status must come back within this long, or within the interval if that is
 * shorter. */
#define ETCD_PROBE_TIMEOUT_MS 3000u

enum etcd_phase {
    PH_IDLE,  /* created, not started */
    PH_WAIT,  /* timer armed to run the next step (backoff or "soon") */
    PH_AUTH,  /* reading password_file or authenticating */
    PH_LIST,  /* range request in flight */
    PH_WATCH, /* watch stream open */
};

enum watch_end { WEND_NONE, WEND_COMPACTED, WEND_AUTH, WEND_FAILED };
enum timer_kind { TIMER_NONE, TIMER_RUN, TIMER_CREATE, TIMER_PROBE };

struct etcd {
    struct source base; /* first: the ops receive &base */
    size_t ep;          /* current endpoint */
    char *key, *end;    /* the prefix and its range end, raw */
    size_t key_len, end_len;
    bool auth;
    char *token;      /* secret; never logged */
    bool token_fresh; /* not yet accepted by any request */

    enum etcd_phase phase;
    struct http_req *watch; /* watch stream; base.req: auth, range, or the liveness check */
    enum timer_kind timer_kind;

    uint64_t created_at; /* uv_now() when the current watch was confirmed */
    int64_t rev;         /* last revision delivered to the consumer */
    bool need_list;
    enum source_list_reason list_why;
    struct etcd_range page; /* pages of the list in progress */
    int64_t list_rev;       /* pinned revision of that list */

    struct etcd_stream stream;
    bool watch_created;
    enum watch_end wend;
    int64_t compact_rev;
    char wreason[256];
};

static void etcd_next_step(struct etcd *s);
static void probe_begin(struct etcd *s);

static const char *etcd_url(const struct etcd *s) {
    return s->base.cfg->endpoints[s->ep];
}

static void etcd_timer_arm(struct etcd *s, enum timer_kind kind, uint64_t ms) {
    s->timer_kind = kind;
    source_timer_arm(&s->base, ms);
}

static void etcd_timer_disarm(struct etcd *s) {
    s->timer_kind = TIMER_NONE;
    source_timer_disarm(&s->base);
}

static void etcd_timer_fired(struct source *src) {
    struct etcd *s = (struct etcd *)src;
    enum timer_kind kind = s->timer_kind;
    s->timer_kind = TIMER_NONE;
    if (kind == TIMER_RUN && s->phase == PH_WAIT) {
        etcd_next_step(s);
    } else if (kind == TIMER_CREATE && s->phase == PH_WATCH && !s->watch_created) {
        /* Connected but never confirmed (no leader, a proxy eating the
         * stream): give up on this endpoint. Cancel, then finish as a
         * failed watch. */
        source_fail(src, "watch was not confirmed within 10 s");
    } else if (kind == TIMER_PROBE && s->phase == PH_WATCH && s->watch_created && !s->base.req) {
        probe_begin(s);
    }
}

/* The watch is dropped with every other step in flight (source_abandon). */
static void etcd_abandon_watch(struct source *src) {
    struct etcd *s = (struct etcd *)src;
    http_req_cancel(s->watch);
    s->watch = NULL;
    s->timer_kind = TIMER_NONE;
}

/* Drop the step in flight; run the next one from the timer, outside
 * whatever callback we are in. */
static void etcd_restart_soon(struct etcd *s) {
    source_abandon(&s->base);
    s->phase = PH_WAIT;
    etcd_timer_arm(s, TIMER_RUN, 0);
}

/* A step failed: report the outage once, rotate endpoint, back off. */
static void etcd_failed(struct source *src, enum source_fault fault, const char *reason) {
    struct etcd *s = (struct etcd *)src;
    src->fault = fault;
    char url[256];
    snprintf(url, sizeof url, "%s", etcd_url(s));
    bool stable = s->phase == PH_WATCH && s->watch_created &&
                  uv_now(src->loop) - s->created_at >= ETCD_STABLE_MS;
    source_abandon(&s->base);
    if (stable)
        src->attempt = 0;
    bool report = source_went_down(src);
    if (src->cfg->n_endpoints > 1)
        s->ep = (s->ep + 1) % src->cfg->n_endpoints;
    uint64_t delay = source_retry_delay(src, ETCD_BACKOFF_BASE_MS, ETCD_BACKOFF_MAX_MS);
    s->phase = PH_WAIT;
    etcd_timer_arm(s, TIMER_RUN, delay);
    if (report) {
        log_warn(src->log, "etcd: %s: %s; retrying with backoff (next: %s)", url, reason,
                 etcd_url(s));
        source_report_down(src, reason);
    } else {
        log_debug(src->log, "etcd: %s: %s; next try %s in %" PRIu64 " ms", url, reason, etcd_url(s),
                  delay);
    }
}

/* The token was refused. A token that has worked before simply expired:
 * re-authenticate at once. A brand-new one being refused means something
 * else is wrong, so back off rather than spin. */
static void etcd_auth_expired(struct etcd *s, const char *why) {
    bool fresh = s->token_fresh;
    secret_free(s->token);
    s->token = NULL;
    if (fresh) {
        source_fail(&s->base, "%s (right after authenticating)", why);
        return;
    }
    log_info(s->base.log, "etcd: auth token rejected (%s); re-authenticating", why);
    etcd_restart_soon(s);
}

/* A POST to the current endpoint with the JSON body (heap, consumed). */
static struct http_req *etcd_request(struct etcd *s, const char *path, char *body, bool streaming) {
    if (!body)
        return NULL;
    struct http_req *r = NULL;
    buf_t url = BUF_INIT;
    const char *ep = etcd_url(s);
    if (buf_append(&url, ep, url_base_len(ep)) == 0 && buf_puts(&url, path) == 0)
        r = source_request(&s->base, "POST", url.data, streaming ? 0 : ETCD_UNARY_TIMEOUT_MS,
                           ETCD_CONNECT_TIMEOUT_MS);
    /* The gateway wants the raw token, no "Bearer". */
    if (r && (http_req_header(r, "Content-Type: application/json") < 0 ||
              http_req_body(r, body, strlen(body)) < 0 ||
              (s->token && source_header_secret(r, "Authorization", s->token) < 0))) {
        http_req_free(r);
        r = NULL;
    }
    buf_free(&url);
    secret_free(body);
    return r;
}

/* ---- authenticate ---- */

static void puts_resend(struct etcd *s);

static void auth_done(struct http_req *r, const struct http_result *res) {
    struct etcd *s = http_req_user(r);
    if (!source_step_done(&s->base, res, "authenticate"))
        return;
    if (res->status != 200) {
        char msg[512];
        etcd_error_classify(res->status, res->body, res->body_len, msg, sizeof msg);
        char reason[600];
        snprintf(reason, sizeof reason, "authentication failed: %s", msg);
        etcd_failed(&s->base, SOURCE_FAULT_AUTH, reason);
        return;
    }
    char *tok = etcd_auth_token_parse(res->body, res->body_len);
    if (!tok) {
        source_fail(&s->base, "authentication response without a token");
        return;
    }
    secret_free(s->token);
    s->token = tok;
    s->token_fresh = true;
    log_debug(s->base.log, "etcd: authenticated as %s", s->base.cfg->username);
    puts_resend(s);
    etcd_next_step(s);
}

static void auth_send(struct etcd *s, const char *password) {
    struct http_req *r = etcd_request(s, "/v3/auth/authenticate",
                                      etcd_auth_body(s->base.cfg->username, password), false);
    if (source_step_start(&s->base, r, auth_done) < 0) {
        source_fail(&s->base, "authenticate: cannot start request");
        return;
    }
    s->phase = PH_AUTH;
}

static void password_file_read(struct source *src, const char *data, size_t len) {
    (void)len;
    auth_send((struct etcd *)src, data);
}

/* Read the password file on every authentication, so a rotated password is
 * picked up; through libuv's fs requests, so the loop never blocks. */
static void auth_begin(struct etcd *s) {
    s->phase = PH_AUTH;
    const char *file = s->base.cfg->password_file;
    if (!file || !*file) {
        const char *pw = s->base.cfg->password;
        auth_send(s, pw ? pw : "");
        return;
    }
    source_read_file(&s->base, "source.password_file", file, password_file_read);
}

/* Keys travel as C strings past this point; an etcd key may hold a NUL byte,
 * and cut there it would impersonate another key (canary/ns/r/weights\0x
 * posing as canary/ns/r/weights). Such keys are not ours: skip them. */
static bool key_has_nul(struct etcd *s, const char *key, size_t len) {
    if (!memchr(key, '\0', len))
        return false;
    log_warn(s->base.log, "ignoring key %.200s\\0...: it holds a NUL byte, which no route key has",
             key);
    return true;
}

/* ---- list ---- */

static void list_page(struct etcd *s, const char *from, size_t from_len);

/* A list answer that is not 200: start over, re-authenticate, or fail. */
static void list_refused(struct etcd *s, const struct http_result *res) {
    char msg[512];
    enum etcd_err_kind kind =
        etcd_error_classify(res->status, res->body, res->body_len, msg, sizeof msg);
    if (kind == ETCD_ERR_COMPACTED && s->list_rev > 0) {
        /* Compacted between our pages: start over at the newest. */
        log_info(s->base.log, "etcd: revision %" PRId64 " compacted during the list; restarting",
                 s->list_rev);
        etcd_range_free(&s->page);
        s->list_rev = 0;
        list_page(s, s->key, s->key_len);
    } else if (kind == ETCD_ERR_AUTH && s->auth) {
        etcd_auth_expired(s, msg);
    } else {
        source_fail(&s->base, "list: %s", msg);
    }
}

/* The whole prefix is in s->page: hand it over as a snapshot. */
static void list_deliver(struct etcd *s) {
    size_t n = s->page.n;
    struct source_kv *kvs = calloc(n ? n : 1, sizeof *kvs);
    if (!kvs) {
        source_fail(&s->base, "out of memory");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct etcd_kv *kv = &s->page.kvs[i];
        if (key_has_nul(s, kv->key, kv->key_len))
            continue;
        kvs[k++] =
            (struct source_kv){kv->key, kv->value, kv->value_len, (uint64_t)kv->mod_revision};
    }
    n = k;
    s->rev = s->list_rev;
    s->need_list = false;
    log_info(s->base.log, "etcd: %s: %zu keys under '%s' at revision %" PRId64 " from %s",
             source_list_reason_name(s->list_why), n, s->base.cfg->prefix, s->list_rev,
             etcd_url(s));
    bool current = source_emit_snapshot(&s->base, kvs, n, (uint64_t)s->list_rev);
    free(kvs);
    etcd_range_free(&s->page);
    if (current)
        etcd_next_step(s);
}

static void list_done(struct http_req *r, const struct http_result *res) {
    struct etcd *s = http_req_user(r);
    if (!source_step_done(&s->base, res, "list"))
        return;
    if (res->status != 200) {
        list_refused(s, res);
        return;
    }
    char err[256];
    if (etcd_range_parse(res->body, res->body_len, &s->page, err, sizeof err) < 0) {
        source_fail(&s->base, "list: bad response: %s", err);
        return;
    }
    s->token_fresh = false;
    if (s->list_rev == 0)
        s->list_rev = s->page.revision;
    if (!s->page.more || s->page.n == 0) {
        list_deliver(s);
        return;
    }
    log_debug(s->base.log, "etcd: list page: %zu keys so far at revision %" PRId64, s->page.n,
              s->list_rev);
    /* Next page: right after the last key, at the same revision. */
    const struct etcd_kv *last = &s->page.kvs[s->page.n - 1];
    char *next = malloc(last->key_len + 1);
    if (!next) {
        source_fail(&s->base, "out of memory");
        return;
    }
    memcpy(next, last->key, last->key_len);
    next[last->key_len] = '\0';
    list_page(s, next, last->key_len + 1);
    free(next);
}

static void list_page(struct etcd *s, const char *from, size_t from_len) {
    struct http_req *r = etcd_request(
        s, "/v3/kv/range",
        etcd_range_body(from, from_len, s->end, s->end_len, ETCD_LIST_LIMIT, s->list_rev), false);
    if (source_step_start(&s->base, r, list_done) < 0) {
        source_fail(&s->base, "list: cannot start request");
        return;
    }
    s->phase = PH_LIST;
}

static void list_begin(struct etcd *s) {
    etcd_range_free(&s->page);
    s->list_rev = 0;
    list_page(s, s->key, s->key_len);
}

/* ---- watch ---- */

static void watch_end(struct etcd *s, enum watch_end kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void watch_end(struct etcd *s, enum watch_end kind, const char *fmt, ...) {
    if (s->wend != WEND_NONE)
        return; /* the first cause is the one worth reporting */
    s->wend = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->wreason, sizeof s->wreason, fmt, ap);
    va_end(ap);
}

static enum watch_end watch_end_for(enum etcd_err_kind kind) {
    return kind == ETCD_ERR_AUTH        ? WEND_AUTH
           : kind == ETCD_ERR_COMPACTED ? WEND_COMPACTED
                                        : WEND_FAILED;
}

/* The watch is confirmed: arm its checks, and report the source up. */
static bool watch_created(struct etcd *s) {
    s->watch_created = true;
    if (s->timer_kind == TIMER_CREATE)
        etcd_timer_disarm(s);
    if (s->base.cfg->liveness_ms > 0 && !s->base.req)
        etcd_timer_arm(s, TIMER_PROBE, s->base.cfg->liveness_ms);
    s->created_at = uv_now(s->base.loop);
    s->token_fresh = false;
    if (s->base.up) {
        log_debug(s->base.log, "etcd: watch re-created from revision %" PRId64, s->rev + 1);
        return true;
    }
    log_info(s->base.log, "etcd: %s %s, watching '%s' from revision %" PRId64,
             s->base.ever_up ? "reconnected to" : "connected to", etcd_url(s), s->base.cfg->prefix,
             s->rev + 1);
    return source_report_up(&s->base);
}

/* Returns true to go on with the stream, false to end it. */
static bool watch_handle(struct etcd *s, const struct etcd_watch_msg *m) {
    if (m->is_error) {
        char msg[512];
        enum etcd_err_kind kind =
            etcd_error_classify(m->http_code, m->message, strlen(m->message), msg, sizeof msg);
        watch_end(s, watch_end_for(kind), "watch error: %s", msg);
        return false;
    }
    if (m->canceled) {
        if (m->compact_revision > 0) {
            s->compact_rev = m->compact_revision;
            watch_end(s, WEND_COMPACTED, "watch canceled: revision compacted");
            return false;
        }
        const char *why = m->cancel_reason ? m->cancel_reason : "watch canceled by the server";
        enum etcd_err_kind kind = etcd_error_classify(0, why, strlen(why), NULL, 0);
        watch_end(s, kind == ETCD_ERR_AUTH ? WEND_AUTH : WEND_FAILED, "watch canceled: %s", why);
        return false;
    }
    if (m->created && !watch_created(s))
        return false;
    for (size_t i = 0; i < m->n_events; i++) {
        const struct etcd_event *ev = &m->events[i];
        int64_t rev = ev->kv.mod_revision;
        /* Events of one revision (a transaction) share it, so only strictly
         * older ones can be repeats. */
        if (rev < s->rev) {
            log_debug(s->base.log, "etcd: skipping old event at revision %" PRId64, rev);
            continue;
        }
        s->rev = rev;
        if (key_has_nul(s, ev->kv.key, ev->kv.key_len))
            continue;
        struct source_kv kv = {ev->kv.key, ev->kv.value, ev->kv.value_len, (uint64_t)rev};
        log_debug(s->base.log, "etcd: %s %s at revision %" PRId64,
                  ev->type == SOURCE_PUT ? "put" : "delete", ev->kv.key, rev);
        if (!source_emit_event(&s->base, ev->type, &kv, (uint64_t)rev))
            return false;
    }
    /* Only a bare progress notification promises that everything up to its
     * header revision was sent; a header next to events does not. */
    if (etcd_watch_is_progress(m) && m->revision > s->rev) {
        log_debug(s->base.log, "etcd: progress: caught up to revision %" PRId64, m->revision);
        s->rev = m->revision;
    }
    return true;
}

static int watch_message(void *user, const char *msg, size_t len) {
    struct etcd *s = user;
    struct etcd_watch_msg m;
    char err[256];
    if (etcd_watch_parse(msg, len, &m, err, sizeof err) < 0) {
        watch_end(s, WEND_FAILED, "bad watch message: %s", err);
        return 1;
    }
    bool go_on = watch_handle(s, &m);
    etcd_watch_msg_free(&m);
    return go_on ? 0 : 1;
}

static int watch_data(struct http_req *r, const char *data, size_t len) {
    struct etcd *s = http_req_user(r);
    int rc = etcd_stream_feed(&s->stream, data, len, watch_message, s);
    if (rc == ETCD_STREAM_TOO_BIG)
        watch_end(s, WEND_FAILED, "watch message larger than %zu bytes", s->stream.max_msg);
    else if (rc == ETCD_STREAM_NOMEM)
        watch_end(s, WEND_FAILED, "out of memory");
    /* Any stop ends the transfer; watch_done sees why in s->wend. If a
     * consumer callback stopped or resynced us, the request is already
     * cancelled and nothing more happens. */
    return rc == 0 ? 0 : -1;
}

/* The stream ended without a message saying why: find out from the answer.
 * Returns false when a callback stopped or redirected the source. */
static bool watch_end_from_answer(struct etcd *s, const struct http_result *res) {
    size_t rest_len;
    const char *rest = etcd_stream_rest(&s->stream, &rest_len);
    if (res->status != 0 && res->status != 200) {
        char msg[512];
        enum etcd_err_kind kind = etcd_error_classify(res->status, rest, rest_len, msg, sizeof msg);
        watch_end(s, watch_end_for(kind), "watch: %s", msg);
    } else if (rest_len > 0 && res->curl == CURLE_OK) {
        /* A last message without its newline. */
        unsigned gen = s->base.gen;
        watch_message(s, rest, rest_len);
        if (!source_current(&s->base, gen))
            return false;
    }
    if (s->wend == WEND_NONE) {
        if (res->curl != CURLE_OK)
            watch_end(s, WEND_FAILED, "watch: %s", res->error);
        else
            watch_end(s, WEND_FAILED, "watch stream closed by the server");
    }
    return true;
}

static void watch_done(struct http_req *r, const struct http_result *res) {
    struct etcd *s = http_req_user(r);
    s->watch = NULL;
    /* The watch's timers and its liveness check end with it. */
    http_req_cancel(s->base.req);
    s->base.req = NULL;
    if (s->timer_kind == TIMER_CREATE || s->timer_kind == TIMER_PROBE)
        etcd_timer_disarm(s);
    if (s->wend == WEND_NONE && !watch_end_from_answer(s, res))
        return;
    etcd_stream_reset(&s->stream);
    switch (s->wend) {
    case WEND_COMPACTED:
        log_info(s->base.log,
                 "etcd: watch from revision %" PRId64 " is compacted (compact revision %" PRId64
                 "); re-listing",
                 s->rev + 1, s->compact_rev);
        s->need_list = true;
        s->list_why = SOURCE_LIST_COMPACTED;
        etcd_next_step(s);
        return;
    case WEND_AUTH:
        if (s->auth) {
            etcd_auth_expired(s, s->wreason);
            return;
        }
        break;
    case WEND_NONE:
    case WEND_FAILED: break;
    }
    source_fail(&s->base, "%s", s->wreason);
}

/* ---- liveness check ----
 *
 * A member that is frozen (SIGSTOP, a hung disk, a stuck process) keeps the
 * watch's TCP connection alive: the kernel still answers keepalives, so the
 * stream just goes quiet, exactly like an idle prefix. Every liveness_ms the
 * source asks the same member for its status with a short deadline; any HTTP
 * answer proves the member alive, no answer in time ends the watch and the
 * source moves on to the next endpoint, resuming from the last revision. */

static void probe_done(struct http_req *r, const struct http_result *res) {
    struct etcd *s = http_req_user(r);
    if (!source_step_done(&s->base, res, "the watched member did not answer the liveness check"))
        return;
    log_debug(s->base.log, "etcd: liveness check: %s answered HTTP %ld", etcd_url(s), res->status);
    etcd_timer_arm(s, TIMER_PROBE, s->base.cfg->liveness_ms);
}

static void probe_begin(struct etcd *s) {
    uint64_t every = s->base.cfg->liveness_ms;
    char *body = strdup("{}");
    struct http_req *r = body ? etcd_request(s, "/v3/maintenance/status", body, false) : NULL;
    if (r) {
        uint64_t limit = every < ETCD_PROBE_TIMEOUT_MS ? every : ETCD_PROBE_TIMEOUT_MS;
        http_req_timeouts(r, (long)limit, (long)limit);
        if (source_step_start(&s->base, r, probe_done) == 0)
            return;
    }
    /* Out of memory: the watch itself is fine, so try again later. */
    log_warn(s->base.log, "etcd: liveness check: cannot start request");
    etcd_timer_arm(s, TIMER_PROBE, every);
}

static void watch_begin(struct etcd *s) {
    etcd_stream_reset(&s->stream);
    s->watch_created = false;
    s->wend = WEND_NONE;
    s->wreason[0] = '\0';
    s->compact_rev = 0;
    struct http_req *r = etcd_request(
        s, "/v3/watch", etcd_watch_body(s->key, s->key_len, s->end, s->end_len, s->rev + 1), true);
    /* Require a leader (clientv3's WithRequireLeader, through the gateway's
     * metadata header): a member that loses its leader, e.g. cut off from
     * its peers, then ends the watch with "etcdserver: no leader" instead of
     * keeping it open while the majority takes writes it never sees. */
    if (r && http_req_header(r, "Grpc-Metadata-hasleader: true") < 0) {
        http_req_free(r);
        r = NULL;
    }
    if (!r) {
        source_fail(&s->base, "watch: cannot create request");
        return;
    }
    http_req_on_data(r, watch_data);
    if (http_req_start(r, watch_done) < 0) {
        http_req_free(r);
        source_fail(&s->base, "watch: cannot start request");
        return;
    }
    s->watch = r;
    s->phase = PH_WATCH;
    etcd_timer_arm(s, TIMER_CREATE, ETCD_CREATE_TIMEOUT_MS);
}

/* Pick the next step; exactly one of them ends up in flight. */
static void etcd_next_step(struct etcd *s) {
    if (s->base.stopped)
        return;
    if (s->auth && !s->token)
        auth_begin(s);
    else if (s->need_list)
        list_begin(s);
    else
        watch_begin(s);
}

/* ---- status writes ---- */

static void put_done(struct http_req *r, const struct http_result *res);

static int put_send(struct etcd *s, struct source_put *p) {
    struct http_req *r = etcd_request(
        s, "/v3/kv/put", etcd_put_body(p->key, strlen(p->key), p->value, p->len), false);
    if (!r)
        return -1;
    http_req_set_user(r, p);
    if (http_req_start(r, put_done) < 0) {
        http_req_free(r);
        return -1;
    }
    p->req = r;
    return 0;
}

/* Puts parked on an expired token go out again once a new one is in hand. */
static void puts_resend(struct etcd *s) {
    list_for_each_safe(n, next, &s->base.puts) {
        struct source_put *p = list_entry(n, struct source_put, link);
        if (p->req || put_send(s, p) == 0)
            continue;
        source_put_finish(p, false, "cannot start request");
        if (s->base.stopped)
            return; /* its callback stopped us: the list is gone */
    }
}

static void put_done(struct http_req *r, const struct http_result *res) {
    struct source_put *p = http_req_user(r);
    struct etcd *s = (struct etcd *)p->s;
    p->req = NULL;
    char msg[512];
    bool ok = false;
    if (res->curl != CURLE_OK) {
        snprintf(msg, sizeof msg, "%s", res->error);
    } else if (res->status != 200) {
        enum etcd_err_kind kind =
            etcd_error_classify(res->status, res->body, res->body_len, msg, sizeof msg);
        if (kind == ETCD_ERR_AUTH && s->auth && !p->retried) {
            /* A watch does not refresh the token's TTL, so after a quiet spell
             * the first put meets an expired token: park it, re-authenticate
             * (unless that is under way already), send it again once. */
            p->retried = true;
            if (s->phase != PH_AUTH)
                etcd_auth_expired(s, msg);
            return;
        }
    } else {
        ok = true;
        snprintf(msg, sizeof msg, "ok");
    }
    source_put_finish(p, ok, msg);
}

static int etcd_put(struct source *src, const char *key, const char *value, size_t len,
                    source_put_cb done, void *user) {
    struct source_put *p = source_put_new(src, key, value, len, done, user);
    if (!p)
        return -1;
    if (put_send((struct etcd *)src, p) < 0) {
        source_put_free(p);
        return -1;
    }
    list_push_front(&src->puts, &p->link);
    return 0;
}

/* ---- source ops ---- */

static void etcd_start(struct source *src) {
    struct etcd *s = (struct etcd *)src;
    log_info(src->log, "etcd: starting on %s (%zu endpoint%s), prefix '%s'", etcd_url(s),
             src->cfg->n_endpoints, src->cfg->n_endpoints == 1 ? "" : "s", src->cfg->prefix);
    s->need_list = true;
    s->list_why = SOURCE_LIST_INITIAL;
    etcd_next_step(s);
}

static void etcd_resync(struct source *src) {
    struct etcd *s = (struct etcd *)src;
    s->need_list = true;
    s->list_why = SOURCE_LIST_RESYNC;
    /* Waiting, authenticating or listing already ends in a snapshot. A live
     * watch is dropped, and re-made after the list from its revision + 1. */
    if (s->phase == PH_WATCH)
        etcd_restart_soon(s);
}

static void etcd_free(struct source *src) {
    struct etcd *s = (struct etcd *)src;
    secret_free(s->token);
    free(s->key);
    free(s->end);
    etcd_range_free(&s->page);
    etcd_stream_free(&s->stream);
    free(s);
}

/* name, start, resync, put, stop, close; then the base's hooks: start,
 * resync, timer_fired, abandon, failed, free (source.h). */
static const struct source_ops etcd_ops = {
    "etcd", source_start, source_resync, etcd_put, source_stop, source_close,
};
static const struct source_hooks etcd_hooks = {etcd_start,         etcd_resync, etcd_timer_fired,
                                               etcd_abandon_watch, etcd_failed, etcd_free};

struct source *etcd_source_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                               const struct source_settings *cfg, const struct source_callbacks *cb,
                               char *err, size_t errlen) {
    if (!cfg->n_endpoints || !cfg->endpoints) {
        source_set_err(err, errlen, "source.endpoints: at least one etcd endpoint is required");
        return NULL;
    }
    bool https = false;
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        const char *ep = cfg->endpoints[i];
        enum url_scheme scheme = url_scheme(ep);
        if (scheme == URL_OTHER) {
            source_set_err(err, errlen, "source.endpoints: '%s' is not an http:// or https:// URL",
                           ep ? ep : "");
            return NULL;
        }
        https = https || scheme == URL_HTTPS;
    }
    if (!cfg->prefix) {
        source_set_err(err, errlen, "source.prefix is not set");
        return NULL;
    }
    bool auth = cfg->username && *cfg->username;
    if (auth && !cfg->password && !cfg->password_file) {
        source_set_err(err, errlen,
                       "source.username needs source.password or source.password_file");
        return NULL;
    }

    struct etcd *s = source_alloc(sizeof *s, err, errlen);
    if (!s)
        return NULL;
    s->auth = auth;
    etcd_stream_init(&s->stream, ETCD_MAX_MESSAGE);
    s->key_len = strlen(cfg->prefix);
    s->key = strdup(cfg->prefix);
    if (!s->key || etcd_prefix_end(s->key, s->key_len, &s->end, &s->end_len) < 0) {
        source_set_err(err, errlen, "out of memory");
        etcd_free(&s->base);
        return NULL;
    }
    if (source_init(&s->base, &etcd_ops, &etcd_hooks, loop, http, lg, cfg, cb, err, errlen) < 0) {
        etcd_free(&s->base);
        return NULL;
    }
    const struct tls_files *t = &cfg->tls;
    source_tls_setup(&s->base, https || t->ca_file || t->cert_file || t->key_file, https, "etcd");
    return &s->base;
}
