/* source.c - the source factory, and the base the etcd and Consul sources
 * share: their timer and lifetime, the step in flight, failure and outage
 * reporting, requests with TLS and secret headers, secret files, and the
 * list of status writes in flight (source.h). */
#include "sources/source.h"

#include "bridge/lib/backoff.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/fileread.h"
#include "bridge/lib/secret.h"
#include "bridge/lib/timer.h"
#include "sources/consul.h"
#include "sources/etcd.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct source *source_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                          const struct source_settings *cfg, const struct source_callbacks *cb,
                          char *err, size_t errlen) {
    switch (cfg->type) {
    case SOURCE_ETCD: return etcd_source_new(loop, http, lg, cfg, cb, err, errlen);
    case SOURCE_CONSUL: return consul_source_new(loop, http, lg, cfg, cb, err, errlen);
    }
    snprintf(err, errlen, "unknown source type");
    return NULL;
}

/* ---- lifetime ---- */

static void source_timer_fired(uv_timer_t *t) {
    struct source *s = t->data;
    if (!s->stopped)
        s->hooks->timer_fired(s);
}

static void source_timer_closed(uv_handle_t *h) {
    struct source *s = h->data;
    s->hooks->free(s);
}

void *source_alloc(size_t size, char *err, size_t errlen) {
    void *p = calloc(1, size);
    if (!p)
        source_set_err(err, errlen, "out of memory");
    return p;
}

int source_init(struct source *s, const struct source_ops *ops, const struct source_hooks *hooks,
                uv_loop_t *loop, struct http_client *http, struct logger *lg,
                const struct source_settings *cfg, const struct source_callbacks *cb, char *err,
                size_t errlen) {
    s->ops = ops;
    s->hooks = hooks;
    if (cb)
        s->cb = *cb;
    s->loop = loop;
    s->http = http;
    s->log = lg;
    s->cfg = cfg;
    list_init(&s->puts);
    int rc = uv_timer_init(loop, &s->timer);
    if (rc < 0) {
        source_set_err(err, errlen, "uv_timer_init: %s", uv_strerror(rc));
        return -1;
    }
    s->timer.data = s;
    return 0;
}

void source_tls_setup(struct source *s, bool use, bool https, const char *server) {
    const struct tls_files *t = &s->cfg->tls;
    s->use_tls = use;
    s->tls.ca_file = t->ca_file;
    s->tls.cert_file = t->cert_file;
    s->tls.key_file = t->key_file;
    s->tls.insecure = t->insecure_skip_verify;
    if (https && t->insecure_skip_verify)
        log_warn(s->log,
                 "%s: source.tls.insecure_skip_verify is set: the %s server's certificate is "
                 "NOT verified",
                 s->ops->name, server);
}

int source_start(struct source *s) {
    if (s->started || s->stopped)
        return -1;
    s->started = true;
    s->hooks->start(s);
    return 0;
}

void source_resync(struct source *s) {
    if (!s->stopped)
        s->hooks->resync(s);
}

void source_stop(struct source *s) {
    if (s->stopped)
        return;
    source_abandon(s);
    s->stopped = true;
    source_puts_drop(&s->puts);
}

void source_close(struct source *s) {
    s->ops->stop(s);
    if (s->own_http) {
        /* Its handles close on the loop; it frees itself after. */
        http_client_close(s->http);
        s->http = NULL;
        s->own_http = false;
    }
    if (!uv_is_closing((uv_handle_t *)&s->timer))
        uv_close((uv_handle_t *)&s->timer, source_timer_closed);
}

/* ---- steps ---- */

bool source_current(const struct source *s, unsigned gen) {
    return !s->stopped && s->gen == gen;
}

void source_abandon(struct source *s) {
    s->gen++;
    http_req_cancel(s->req);
    s->req = NULL;
    if (s->file_read) {
        file_read_detach(s->file_read);
        s->file_read = NULL;
    }
    source_timer_disarm(s);
    s->hooks->abandon(s);
}

void source_timer_arm(struct source *s, uint64_t ms) {
    timer_arm(&s->timer, source_timer_fired, ms, 0);
}

void source_timer_disarm(struct source *s) {
    uv_timer_stop(&s->timer);
}

void source_fail(struct source *s, const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    s->hooks->failed(s, SOURCE_FAULT_UNREACHABLE, reason);
}

uint64_t source_retry_delay(struct source *s, uint64_t base_ms, uint64_t max_ms) {
    uint64_t delay = backoff_ms(s->attempt, base_ms, max_ms);
    if (s->attempt < 16)
        s->attempt++;
    return delay;
}

/* ---- requests ---- */

struct http_req *source_request(struct source *s, const char *method, const char *url,
                                long total_ms, long connect_ms) {
    struct http_req *r = http_req_new(s->http, method, url);
    if (!r)
        return NULL;
    if (s->use_tls)
        http_req_tls(r, &s->tls);
    http_req_timeouts(r, total_ms, connect_ms);
    http_req_set_user(r, s);
    return r;
}

int source_header_secret(struct http_req *r, const char *name, const char *value) {
    buf_t line = BUF_INIT;
    int rc = buf_printf(&line, "%s: %s", name, value) == 0 ? http_req_header(r, line.data) : -1;
    secret_buf_free(&line);
    return rc;
}

int source_step_start(struct source *s, struct http_req *r, http_done_cb done) {
    if (!r || http_req_start(r, done) < 0) {
        http_req_free(r);
        return -1;
    }
    s->req = r;
    return 0;
}

bool source_step_done(struct source *s, const struct http_result *res, const char *what_fmt, ...) {
    s->req = NULL;
    if (res->curl == CURLE_OK)
        return true;
    char what[400];
    va_list ap;
    va_start(ap, what_fmt);
    vsnprintf(what, sizeof what, what_fmt, ap);
    va_end(ap);
    source_fail(s, "%s: %s", what, res->error);
    return false;
}

/* ---- secret files ---- */

static void source_file_read_done(void *user, int err, const char *data, size_t len) {
    struct source *s = user;
    s->file_read = NULL;
    if (err) {
        source_fail(s, "cannot read %s %s: %s", s->file_setting, s->file_path, uv_strerror(err));
        return;
    }
    s->file_done(s, data, len);
}

int source_read_file(struct source *s, const char *setting, const char *file,
                     void (*done)(struct source *s, const char *data, size_t len)) {
    int err = 0;
    s->file_setting = setting;
    s->file_path = file;
    s->file_done = done;
    s->file_read = file_read_start(s->loop, file, source_file_read_done, s, &err);
    if (s->file_read)
        return 0;
    source_fail(s, "cannot open %s %s: %s", setting, file, uv_strerror(err));
    return -1;
}

/* ---- telling the consumer ---- */

bool source_went_down(struct source *s) {
    s->up = false;
    bool first = !s->down_reported;
    s->down_reported = true;
    return first;
}

void source_report_down(struct source *s, const char *reason) {
    if (s->cb.on_state)
        s->cb.on_state(s->cb.user, false, reason);
}

bool source_report_up(struct source *s) {
    s->up = true;
    s->ever_up = true;
    s->down_reported = false;
    s->fault = SOURCE_FAULT_NONE;
    unsigned gen = s->gen;
    if (s->cb.on_state)
        s->cb.on_state(s->cb.user, true, NULL);
    return source_current(s, gen);
}

bool source_emit_snapshot(struct source *s, const struct source_kv *kvs, size_t n, uint64_t rev) {
    unsigned gen = s->gen;
    if (s->cb.on_snapshot)
        s->cb.on_snapshot(s->cb.user, kvs, n, rev);
    return source_current(s, gen);
}

bool source_emit_event(struct source *s, enum source_event_type type, const struct source_kv *kv,
                       uint64_t rev) {
    unsigned gen = s->gen;
    if (s->cb.on_event)
        s->cb.on_event(s->cb.user, type, kv, rev);
    return source_current(s, gen);
}

const char *source_list_reason_name(enum source_list_reason why) {
    switch (why) {
    case SOURCE_LIST_INITIAL: return "initial list";
    case SOURCE_LIST_COMPACTED: return "re-list after compaction";
    case SOURCE_LIST_RESYNC: return "resync";
    }
    return "list";
}

/* ---- status writes in flight ---- */

struct source_put *source_put_new(struct source *s, const char *key, const char *value, size_t len,
                                  source_put_cb done, void *user) {
    if (s->stopped || !key)
        return NULL;
    struct source_put *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    list_init(&p->link);
    p->s = s;
    p->len = value ? len : 0;
    p->key = strdup(key);
    p->value = malloc(p->len + 1);
    if (!p->key || !p->value) {
        source_put_free(p);
        return NULL;
    }
    if (p->len)
        memcpy(p->value, value, p->len);
    p->value[p->len] = '\0';
    p->done = done;
    p->user = user;
    return p;
}

void source_put_free(struct source_put *p) {
    list_remove(&p->link);
    http_req_cancel(p->req);
    free(p->key);
    secret_free_len(p->value, p->len);
    free(p);
}

void source_put_finish(struct source_put *p, bool ok, const char *message) {
    list_remove(&p->link);
    p->req = NULL; /* finished: nothing to cancel */
    if (p->done)
        p->done(p->user, ok, message);
    source_put_free(p);
}

void source_puts_drop(struct list_node *list) {
    list_for_each_safe(n, next, list) source_put_free(list_entry(n, struct source_put, link));
}

/* ---- messages ---- */

cJSON *source_json_parse(const char *json, size_t len, enum source_json_kind kind, const char *what,
                         char *err, size_t errlen) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    bool array = kind == SOURCE_JSON_ARRAY;
    if (array ? cJSON_IsArray(root) : cJSON_IsObject(root))
        return root;
    source_set_err(err, errlen, "%s is not a JSON %s", what, array ? "array" : "object");
    cJSON_Delete(root);
    return NULL;
}

void source_set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void source_copy_text(char *msg, size_t msglen, const char *text, size_t len) {
    if (!msg || msglen == 0)
        return;
    size_t n = len < msglen - 1 ? len : msglen - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)text[i];
        msg[i] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    while (n > 0 && msg[n - 1] == ' ')
        n--;
    msg[n] = '\0';
}
