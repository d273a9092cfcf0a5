/* etcd.c - the etcd v3 key source: list a prefix, then watch it, forever.
 *
 * Talks to etcd's JSON gRPC gateway over the shared http client (no gRPC
 * library, no threads). The life cycle, one step at a time on the loop:
 *
 *   [authenticate] -> list (paginated range, pinned to the first page's
 *   revision R) -> on_snapshot(R) -> watch from R+1 -> on_event ...
 *
 * Only one step is in flight at a time (s->req or s->watch), so the state is
 * small. When a step fails the source reports the outage once, rotates to the
 * next endpoint and retries with jittered exponential backoff. A reconnect
 * resumes the watch from the last revision delivered + 1, so nothing is lost
 * or repeated; only when etcd has compacted that revision away does it
 * re-list and send a fresh snapshot. Expired auth tokens are renewed
 * transparently.
 *
 * A watched member can go bad without closing the stream, so two checks end
 * such a watch (and the source moves to the next endpoint): the watch
 * requires a leader, so a member cut off from its peers ends it itself, and
 * a periodic status request with a deadline (the liveness check) catches a
 * member that is frozen and sends nothing at all.
 *
 * Re-entrancy: the consumer's callbacks may call stop(), resync(), put() or
 * even destroy() on this source. Every step that calls out therefore checks
 * afterwards whether it was stopped or superseded (s->gen) before touching
 * its state again, and memory is freed only from the timer's close callback.
 *
 * The pure helpers (framing, base64, JSON) come first; see etcd.h. */
#include "sources/etcd.h"

#include "bridge/lib/base64.h"
#include "bridge/lib/fileread.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================
 * Pure helpers
 * ====================================================================== */

int etcd_prefix_end(const char *key, size_t len, char **out, size_t *outlen) {
    *out = NULL;
    *outlen = 0;
    size_t i = len;
    while (i > 0 && (unsigned char)key[i - 1] == 0xff)
        i--;
    char *end = malloc(i > 0 ? i + 1 : 2);
    if (!end)
        return -1;
    if (i == 0) {
        /* No byte can be incremented: "\0" means every key >= key. */
        end[0] = '\0';
        end[1] = '\0';
        *out = end;
        *outlen = 1;
        return 0;
    }
    memcpy(end, key, i);
    end[i - 1] = (char)((unsigned char)end[i - 1] + 1);
    end[i] = '\0';
    *out = end;
    *outlen = i;
    return 0;
}

void etcd_stream_init(struct etcd_stream *st, size_t max_msg) {
    buf_t empty = BUF_INIT;
    st->partial = empty;
    st->max_msg = max_msg;
}

void etcd_stream_reset(struct etcd_stream *st) {
    buf_reset(&st->partial);
}

void etcd_stream_free(struct etcd_stream *st) {
    buf_free(&st->partial);
}

int etcd_stream_feed(struct etcd_stream *st, const char *data, size_t len, etcd_msg_cb cb,
                     void *user) {
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        if (take > st->max_msg || st->partial.len > st->max_msg - take)
            return ETCD_STREAM_TOO_BIG;
        if (!nl)
            return buf_append(&st->partial, data, take) < 0 ? ETCD_STREAM_NOMEM : 0;
        /* A message wholly inside this chunk is handed over in place; only
         * one that straddles chunks is assembled in the partial buffer. */
        const char *msg = data;
        size_t mlen = take;
        if (st->partial.len > 0) {
            if (buf_append(&st->partial, data, take) < 0)
                return ETCD_STREAM_NOMEM;
            msg = st->partial.data;
            mlen = st->partial.len;
        }
        data = nl + 1;
        len -= take + 1;
        if (mlen > 0 && msg[mlen - 1] == '\r')
            mlen--;
        int rc = mlen > 0 ? cb(user, msg, mlen) : 0;
        /* Done with the message either way; the callback may have reset the
         * stream itself, which makes this a no-op. */
        buf_reset(&st->partial);
        if (rc != 0)
            return rc;
    }
    return 0;
}

const char *etcd_stream_rest(const struct etcd_stream *st, size_t *len) {
    *len = st->partial.len;
    return st->partial.data ? st->partial.data : "";
}

/* ---- JSON helpers ---- */

/* int64 fields are JSON strings in the gateway's output, but accept numbers
 * too. Absent or null means zero, as proto3 omits defaults. */
static int json_i64(const cJSON *obj, const char *name, int64_t *out) {
    *out = 0;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it || cJSON_IsNull(it))
        return 0;
    if (cJSON_IsString(it)) {
        const char *s = it->valuestring;
        if (!*s)
            return 0;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || *end != '\0' || end == s)
            return -1;
        *out = (int64_t)v;
        return 0;
    }
    if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;
        if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != (double)(int64_t)d)
            return -1;
        *out = (int64_t)d;
        return 0;
    }
    return -1;
}

static bool json_true(const cJSON *obj, const char *name) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, name));
}

static const char *json_string(const cJSON *obj, const char *name) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static char *json_print(cJSON *root) {
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

static bool json_add_b64(cJSON *obj, const char *name, const char *data, size_t len) {
    char *b = base64_encode(data, len);
    if (!b)
        return false;
    bool ok = cJSON_AddStringToObject(obj, name, b) != NULL;
    free(b);
    return ok;
}

static bool json_add_i64(cJSON *obj, const char *name, int64_t v) {
    char num[24];
    snprintf(num, sizeof num, "%" PRId64, v);
    return cJSON_AddStringToObject(obj, name, num) != NULL;
}

char *etcd_range_body(const char *key, size_t klen, const char *end, size_t elen, int64_t limit,
                      int64_t revision) {
    cJSON *root = cJSON_CreateObject();
    if (!root || !json_add_b64(root, "key", key, klen) ||
        !json_add_b64(root, "range_end", end, elen) ||
        (limit > 0 && !json_add_i64(root, "limit", limit)) ||
        (revision > 0 && !json_add_i64(root, "revision", revision))) {
        cJSON_Delete(root);
        return NULL;
    }
    return json_print(root);
}

char *etcd_watch_body(const char *key, size_t klen, const char *end, size_t elen,
                      int64_t start_revision) {
    cJSON *root = cJSON_CreateObject();
    cJSON *cr = cJSON_AddObjectToObject(root, "create_request");
    if (!cr || !json_add_b64(cr, "key", key, klen) || !json_add_b64(cr, "range_end", end, elen) ||
        (start_revision > 0 && !json_add_i64(cr, "start_revision", start_revision)) ||
        !cJSON_AddBoolToObject(cr, "progress_notify", 1)) {
        cJSON_Delete(root);
        return NULL;
    }
    return json_print(root);
}

char *etcd_put_body(const char *key, size_t klen, const char *value, size_t vlen) {
    cJSON *root = cJSON_CreateObject();
    if (!root || !json_add_b64(root, "key", key, klen) ||
        !json_add_b64(root, "value", value, vlen)) {
        cJSON_Delete(root);
        return NULL;
    }
    return json_print(root);
}

char *etcd_auth_body(const char *name, const char *password) {
    cJSON *root = cJSON_CreateObject();
    if (!root || !cJSON_AddStringToObject(root, "name", name) ||
        !cJSON_AddStringToObject(root, "password", password)) {
        cJSON_Delete(root);
        return NULL;
    }
    char *s = cJSON_PrintUnformatted(root);
    /* cJSON_Delete does not wipe; the password is in the tree. */
    cJSON *pw = cJSON_GetObjectItemCaseSensitive(root, "password");
    if (pw && pw->valuestring)
        explicit_bzero(pw->valuestring, strlen(pw->valuestring));
    cJSON_Delete(root);
    return s;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void kv_free(struct etcd_kv *kv) {
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

static int kv_parse(const cJSON *j, struct etcd_kv *kv, char *err, size_t errlen) {
    memset(kv, 0, sizeof *kv);
    if (!cJSON_IsObject(j)) {
        set_err(err, errlen, "kv is not an object");
        return -1;
    }
    const char *key = json_string(j, "key");
    const char *value = json_string(j, "value");
    if (!key) {
        set_err(err, errlen, "kv without key");
        return -1;
    }
    if (base64_decode(key, strlen(key), BASE64_PAD_OPTIONAL, &kv->key, &kv->key_len) < 0) {
        set_err(err, errlen, "kv key is not base64");
        return -1;
    }
    if (base64_decode(value ? value : "", value ? strlen(value) : 0, BASE64_PAD_OPTIONAL,
                      &kv->value, &kv->value_len) < 0) {
        set_err(err, errlen, "kv value is not base64");
        kv_free(kv);
        return -1;
    }
    if (json_i64(j, "create_revision", &kv->create_revision) < 0 ||
        json_i64(j, "mod_revision", &kv->mod_revision) < 0 ||
        json_i64(j, "version", &kv->version) < 0 || json_i64(j, "lease", &kv->lease) < 0) {
        set_err(err, errlen, "kv has a malformed integer");
        kv_free(kv);
        return -1;
    }
    return 0;
}

static int header_revision(const cJSON *root, int64_t *rev) {
    *rev = 0;
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "header");
    if (!h)
        return 0;
    if (!cJSON_IsObject(h))
        return -1;
    return json_i64(h, "revision", rev);
}

int etcd_range_parse(const char *json, size_t len, struct etcd_range *out, char *err,
                     size_t errlen) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        set_err(err, errlen, "range response is not a JSON object");
        cJSON_Delete(root);
        return -1;
    }
    int64_t rev;
    if (header_revision(root, &rev) < 0 || rev <= 0) {
        set_err(err, errlen, "range response without header.revision");
        cJSON_Delete(root);
        return -1;
    }
    const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(root, "kvs");
    if (kvs && !cJSON_IsArray(kvs) && !cJSON_IsNull(kvs)) {
        set_err(err, errlen, "range response kvs is not an array");
        cJSON_Delete(root);
        return -1;
    }
    int64_t count;
    if (json_i64(root, "count", &count) < 0) {
        set_err(err, errlen, "range response has a malformed count");
        cJSON_Delete(root);
        return -1;
    }
    size_t n = cJSON_IsArray(kvs) ? (size_t)cJSON_GetArraySize(kvs) : 0;
    if (n > out->cap - out->n) {
        size_t cap = out->cap ? out->cap : 16;
        while (cap - out->n < n)
            cap *= 2;
        struct etcd_kv *p = realloc(out->kvs, cap * sizeof *p);
        if (!p) {
            set_err(err, errlen, "out of memory");
            cJSON_Delete(root);
            return -1;
        }
        out->kvs = p;
        out->cap = cap;
    }
    size_t added = 0;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, kvs) {
        if (kv_parse(kv, &out->kvs[out->n + added], err, errlen) < 0) {
            for (size_t i = 0; i < added; i++)
                kv_free(&out->kvs[out->n + i]);
            cJSON_Delete(root);
            return -1;
        }
        added++;
    }
    out->n += added;
    out->revision = rev;
    out->more = json_true(root, "more");
    out->count = count;
    cJSON_Delete(root);
    return 0;
}

void etcd_range_free(struct etcd_range *r) {
    for (size_t i = 0; i < r->n; i++)
        kv_free(&r->kvs[i]);
    free(r->kvs);
    memset(r, 0, sizeof *r);
}

static int watch_parse_error(const cJSON *e, struct etcd_watch_msg *out, char *err, size_t errlen) {
    out->is_error = true;
    const char *msg = NULL;
    if (cJSON_IsString(e)) {
        msg = e->valuestring;
    } else if (cJSON_IsObject(e)) {
        int64_t grpc, http;
        if (json_i64(e, "grpc_code", &grpc) < 0 || json_i64(e, "http_code", &http) < 0) {
            set_err(err, errlen, "watch error has malformed codes");
            return -1;
        }
        out->grpc_code = (int)grpc;
        out->http_code = (int)http;
        msg = json_string(e, "message");
    } else {
        set_err(err, errlen, "watch error is neither object nor string");
        return -1;
    }
    out->message = strdup(msg ? msg : "unknown error");
    if (!out->message) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int watch_parse_result(const cJSON *res, struct etcd_watch_msg *out, char *err,
                              size_t errlen) {
    if (!cJSON_IsObject(res)) {
        set_err(err, errlen, "watch result is not an object");
        return -1;
    }
    if (header_revision(res, &out->revision) < 0 || json_i64(res, "watch_id", &out->watch_id) < 0 ||
        json_i64(res, "compact_revision", &out->compact_revision) < 0) {
        set_err(err, errlen, "watch result has a malformed integer");
        return -1;
    }
    out->created = json_true(res, "created");
    out->canceled = json_true(res, "canceled");
    out->fragment = json_true(res, "fragment");
    const char *reason = json_string(res, "cancel_reason");
    if (reason && *reason && !(out->cancel_reason = strdup(reason))) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(res, "events");
    if (!evs || cJSON_IsNull(evs))
        return 0;
    if (!cJSON_IsArray(evs)) {
        set_err(err, errlen, "watch events is not an array");
        return -1;
    }
    size_t n = (size_t)cJSON_GetArraySize(evs);
    if (n == 0)
        return 0;
    out->events = calloc(n, sizeof *out->events);
    if (!out->events) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    const cJSON *ev;
    cJSON_ArrayForEach(ev, evs) {
        struct etcd_event *e = &out->events[out->n_events];
        if (!cJSON_IsObject(ev)) {
            set_err(err, errlen, "watch event is not an object");
            return -1;
        }
        /* PUT is enum value 0, so proto3 JSON omits it. */
        const char *type = json_string(ev, "type");
        if (!type || strcmp(type, "PUT") == 0) {
            e->type = SOURCE_PUT;
        } else if (strcmp(type, "DELETE") == 0) {
            e->type = SOURCE_DELETE;
        } else {
            set_err(err, errlen, "unknown watch event type");
            return -1;
        }
        if (kv_parse(cJSON_GetObjectItemCaseSensitive(ev, "kv"), &e->kv, err, errlen) < 0)
            return -1;
        out->n_events++;
    }
    return 0;
}

int etcd_watch_parse(const char *json, size_t len, struct etcd_watch_msg *out, char *err,
                     size_t errlen) {
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        set_err(err, errlen, "watch message is not a JSON object");
        cJSON_Delete(root);
        return -1;
    }
    int rc;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "result");
    if (e && !cJSON_IsNull(e)) {
        rc = watch_parse_error(e, out, err, errlen);
    } else if (res) {
        rc = watch_parse_result(res, out, err, errlen);
    } else {
        set_err(err, errlen, "watch message has neither result nor error");
        rc = -1;
    }
    cJSON_Delete(root);
    if (rc < 0)
        etcd_watch_msg_free(out);
    return rc;
}

void etcd_watch_msg_free(struct etcd_watch_msg *m) {
    for (size_t i = 0; i < m->n_events; i++)
        kv_free(&m->events[i].kv);
    free(m->events);
    free(m->message);
    free(m->cancel_reason);
    memset(m, 0, sizeof *m);
}

bool etcd_watch_is_progress(const struct etcd_watch_msg *m) {
    return !m->is_error && m->n_events == 0 && !m->created && !m->canceled &&
           m->compact_revision == 0 && m->revision > 0;
}

char *etcd_auth_token_parse(const char *json, size_t len) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    const char *tok = cJSON_IsObject(root) ? json_string(root, "token") : NULL;
    char *out = tok && *tok ? strdup(tok) : NULL;
    if (tok)
        explicit_bzero((char *)tok, strlen(tok));
    cJSON_Delete(root);
    return out;
}

/* Copy text into msg, folding control characters and bounding the length. */
static void copy_text(char *msg, size_t msglen, const char *text, size_t len) {
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

enum etcd_err_kind etcd_error_classify(long status, const char *body, size_t len, char *msg,
                                       size_t msglen) {
    char text[512];
    text[0] = '\0';
    cJSON *root = len ? cJSON_ParseWithLength(body, len) : NULL;
    if (cJSON_IsObject(root)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
        const char *m = json_string(root, "message");
        if (!m && cJSON_IsObject(e))
            m = json_string(e, "message");
        if (!m && cJSON_IsString(e))
            m = e->valuestring;
        if (m)
            copy_text(text, sizeof text, m, strlen(m));
    }
    cJSON_Delete(root);
    if (!text[0] && len)
        copy_text(text, sizeof text, body, len);
    if (!text[0])
        snprintf(text, sizeof text, "no details");

    enum etcd_err_kind kind = ETCD_ERR_OTHER;
    if (strstr(text, "required revision has been compacted"))
        kind = ETCD_ERR_COMPACTED;
    else if (status == 401 || strstr(text, "invalid auth token") ||
             strstr(text, "revision of auth store is old"))
        kind = ETCD_ERR_AUTH;
    if (msg && msglen) {
        if (status > 0)
            snprintf(msg, msglen, "HTTP %ld: %s", status, text);
        else
            snprintf(msg, msglen, "%s", text);
    }
    return kind;
}

/* ======================================================================
 * The source
 * ====================================================================== */

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
    PH_STOPPED,
};

enum list_why { LIST_INITIAL, LIST_COMPACTED, LIST_RESYNC };
enum watch_end { WEND_NONE, WEND_COMPACTED, WEND_AUTH, WEND_FAILED };
enum timer_kind { TIMER_NONE, TIMER_RUN, TIMER_CREATE, TIMER_PROBE };

struct etcd;

/* An in-flight status write; owned by the source's list until it finishes. */
struct etcd_put {
    struct etcd *s;
    struct http_req *req; /* NULL while waiting for a fresh token */
    char *key, *value;    /* kept for one retry after re-authenticating */
    size_t len;
    bool retried;
    void (*done)(void *user, bool ok, const char *message);
    void *user;
    struct etcd_put *prev, *next;
};

struct etcd {
    struct source base; /* first: the ops receive &base */
    size_t ep;          /* current endpoint */
    char *key, *end;    /* the prefix and its range end, raw */
    size_t key_len, end_len;
    struct http_tls tls;
    bool use_tls;
    bool auth;
    char *token;              /* secret; never logged */
    bool token_fresh;         /* not yet accepted by any request */
    struct file_read *pwread; /* password_file being read */

    enum etcd_phase phase;
    struct http_req *req;   /* auth or range in flight; the liveness check while watching */
    struct http_req *watch; /* watch stream */
    uv_timer_t timer;
    enum timer_kind timer_kind;
    bool timer_closed, destroy_pending;
    unsigned attempt;

    bool up;             /* on_state(true) sent, no outage since */
    uint64_t created_at; /* uv_now() when the current watch was confirmed */
    bool down_reported;  /* on_state(false) sent for the current outage */
    bool ever_up;
    int64_t rev; /* last revision delivered to the consumer */
    bool need_list;
    enum list_why list_why;
    struct etcd_range page; /* pages of the list in progress */
    int64_t list_rev;       /* pinned revision of that list */

    struct etcd_stream stream;
    bool watch_created;
    enum watch_end wend;
    int64_t compact_rev;
    char wreason[256];
    unsigned gen; /* bumped when in-flight work is abandoned */
    struct etcd_put *puts;
};

static void etcd_run(struct etcd *s);
static void etcd_fail_now(struct etcd *s, const char *reason);
static void probe_begin(struct etcd *s);

static const char *etcd_url(const struct etcd *s) {
    return s->base.cfg->endpoints[s->ep];
}

static const char *list_why_name(enum list_why w) {
    switch (w) {
    case LIST_INITIAL: return "initial list";
    case LIST_COMPACTED: return "re-list after compaction";
    case LIST_RESYNC: return "resync";
    }
    return "list";
}

static void secret_free(char *p) {
    if (p) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

static void timer_arm(struct etcd *s, enum timer_kind kind, uint64_t ms);

static void timer_fired(uv_timer_t *t) {
    struct etcd *s = t->data;
    enum timer_kind kind = s->timer_kind;
    s->timer_kind = TIMER_NONE;
    if (s->phase == PH_STOPPED)
        return;
    if (kind == TIMER_RUN && s->phase == PH_WAIT) {
        etcd_run(s);
    } else if (kind == TIMER_CREATE && s->phase == PH_WATCH && !s->watch_created) {
        /* Connected but never confirmed (no leader, a proxy eating the
         * stream): give up on this endpoint. Cancel, then finish as a
         * failed watch. */
        etcd_fail_now(s, "watch was not confirmed within 10 s");
    } else if (kind == TIMER_PROBE && s->phase == PH_WATCH && s->watch_created && !s->req) {
        probe_begin(s);
    }
}

static void timer_arm(struct etcd *s, enum timer_kind kind, uint64_t ms) {
    s->timer_kind = kind;
    int rc = uv_timer_start(&s->timer, timer_fired, ms, 0);
    if (rc < 0)
        log_error(s->base.log, "etcd: uv_timer_start: %s", uv_strerror(rc));
}

static void timer_disarm(struct etcd *s) {
    s->timer_kind = TIMER_NONE;
    int rc = uv_timer_stop(&s->timer);
    if (rc < 0)
        log_error(s->base.log, "etcd: uv_timer_stop: %s", uv_strerror(rc));
}

/* Drop whatever step is in flight, silently. */
static void etcd_abandon(struct etcd *s) {
    s->gen++;
    http_req_cancel(s->req);
    s->req = NULL;
    http_req_cancel(s->watch);
    s->watch = NULL;
    if (s->pwread) {
        file_read_detach(s->pwread);
        s->pwread = NULL;
    }
    timer_disarm(s);
}

/* Run the next step from the timer, outside whatever callback we are in. */
static void etcd_run_soon(struct etcd *s) {
    s->phase = PH_WAIT;
    timer_arm(s, TIMER_RUN, 0);
}

/* A step failed: report the outage once, rotate endpoint, back off. */
static void etcd_fail_as(struct etcd *s, enum source_fault fault, const char *reason) {
    s->base.fault = fault;
    char url[256];
    snprintf(url, sizeof url, "%s", etcd_url(s));
    bool stable = s->phase == PH_WATCH && s->watch_created &&
                  uv_now(s->base.loop) - s->created_at >= ETCD_STABLE_MS;
    etcd_abandon(s);
    s->up = false;
    if (stable)
        s->attempt = 0;
    bool report = !s->down_reported;
    s->down_reported = true;
    if (s->base.cfg->n_endpoints > 1)
        s->ep = (s->ep + 1) % s->base.cfg->n_endpoints;
    uint64_t delay = source_backoff_ms(s->attempt, ETCD_BACKOFF_BASE_MS, ETCD_BACKOFF_MAX_MS);
    if (s->attempt < 16)
        s->attempt++;
    s->phase = PH_WAIT;
    timer_arm(s, TIMER_RUN, delay);
    if (report) {
        log_warn(s->base.log, "etcd: %s: %s; retrying with backoff (next: %s)", url, reason,
                 etcd_url(s));
        if (s->base.cb.on_state)
            s->base.cb.on_state(s->base.cb.user, false, reason);
    } else {
        log_debug(s->base.log, "etcd: %s: %s; next try %s in %" PRIu64 " ms", url, reason,
                  etcd_url(s), delay);
    }
}

static void etcd_fail_now(struct etcd *s, const char *reason) {
    etcd_fail_as(s, SOURCE_FAULT_UNREACHABLE, reason);
}

static void etcd_fail(struct etcd *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void etcd_fail(struct etcd *s, const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    etcd_fail_now(s, reason);
}

/* The token was refused. A token that has worked before simply expired:
 * re-authenticate at once. A brand-new one being refused means something
 * else is wrong, so back off rather than spin. */
static void etcd_auth_expired(struct etcd *s, const char *why) {
    bool fresh = s->token_fresh;
    secret_free(s->token);
    s->token = NULL;
    if (fresh) {
        etcd_fail(s, "%s (right after authenticating)", why);
        return;
    }
    log_info(s->base.log, "etcd: auth token rejected (%s); re-authenticating", why);
    etcd_abandon(s);
    etcd_run_soon(s);
}

/* A POST to the current endpoint with the JSON body (heap, consumed). */
static struct http_req *etcd_request(struct etcd *s, const char *path, char *body, bool streaming) {
    if (!body)
        return NULL;
    struct http_req *r = NULL;
    buf_t url = BUF_INIT, auth = BUF_INIT;
    const char *ep = etcd_url(s);
    size_t eplen = strlen(ep);
    while (eplen > 0 && ep[eplen - 1] == '/')
        eplen--;
    if (buf_append(&url, ep, eplen) < 0 || buf_puts(&url, path) < 0)
        goto out;
    r = http_req_new(s->base.http, "POST", url.data);
    if (!r)
        goto out;
    bool ok = http_req_header(r, "Content-Type: application/json") == 0 &&
              http_req_body(r, body, strlen(body)) == 0;
    if (ok && s->token) {
        /* The gateway wants the raw token, no "Bearer". */
        ok = buf_printf(&auth, "Authorization: %s", s->token) == 0 &&
             http_req_header(r, auth.data) == 0;
    }
    if (!ok) {
        http_req_free(r);
        r = NULL;
        goto out;
    }
    if (s->use_tls)
        http_req_tls(r, &s->tls);
    http_req_timeouts(r, streaming ? 0 : ETCD_UNARY_TIMEOUT_MS, ETCD_CONNECT_TIMEOUT_MS);
    http_req_set_user(r, s);
out:
    if (auth.data)
        explicit_bzero(auth.data, auth.cap);
    buf_free(&auth);
    buf_free(&url);
    explicit_bzero(body, strlen(body));
    free(body);
    return r;
}

/* ---- authenticate ---- */

static void puts_resend(struct etcd *s);

static void auth_done(struct http_req *r, const struct http_result *res) {
    struct etcd *s = http_req_user(r);
    s->req = NULL;
    if (res->curl != CURLE_OK) {
        etcd_fail(s, "authenticate: %s", res->error);
        return;
    }
    if (res->status != 200) {
        char msg[512];
        etcd_error_classify(res->status, res->body, res->body_len, msg, sizeof msg);
        char reason[600];
        snprintf(reason, sizeof reason, "authentication failed: %s", msg);
        etcd_fail_as(s, SOURCE_FAULT_AUTH, reason);
        return;
    }
    char *tok = etcd_auth_token_parse(res->body, res->body_len);
    if (!tok) {
        etcd_fail(s, "authentication response without a token");
        return;
    }
    secret_free(s->token);
    s->token = tok;
    s->token_fresh = true;
    log_debug(s->base.log, "etcd: authenticated as %s", s->base.cfg->username);
    puts_resend(s);
    etcd_run(s);
}

static void auth_send(struct etcd *s, const char *password) {
    struct http_req *r = etcd_request(s, "/v3/auth/authenticate",
                                      etcd_auth_body(s->base.cfg->username, password), false);
    if (!r || http_req_start(r, auth_done) < 0) {
        http_req_free(r);
        etcd_fail(s, "authenticate: cannot start request");
        return;
    }
    s->req = r;
    s->phase = PH_AUTH;
}

static void pw_read(void *user, int err, const char *data, size_t len) {
    struct etcd *s = user;
    (void)len;
    s->pwread = NULL;
    if (err)
        etcd_fail(s, "cannot read source.password_file %s: %s", s->base.cfg->password_file,
                  uv_strerror(err));
    else
        auth_send(s, data);
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
    int err = 0;
    s->pwread = file_read_start(s->base.loop, file, pw_read, s, &err);
    if (!s->pwread)
        etcd_fail(s, "cannot open source.password_file %s: %s", file, uv_strerror(err));
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

static void list_done(struct http_req *r, const struct http_result *res) {
    struct etcd *s = http_req_user(r);
    s->req = NULL;
    if (res->curl != CURLE_OK) {
        etcd_fail(s, "list: %s", res->error);
        return;
    }
    if (res->status != 200) {
        char msg[512];
        enum etcd_err_kind kind =
            etcd_error_classify(res->status, res->body, res->body_len, msg, sizeof msg);
        if (kind == ETCD_ERR_COMPACTED && s->list_rev > 0) {
            /* Compacted between our pages: start over at the newest. */
            log_info(s->base.log,
                     "etcd: revision %" PRId64 " compacted during the list; restarting",
                     s->list_rev);
            etcd_range_free(&s->page);
            s->list_rev = 0;
            list_page(s, s->key, s->key_len);
        } else if (kind == ETCD_ERR_AUTH && s->auth) {
            etcd_auth_expired(s, msg);
        } else {
            etcd_fail(s, "list: %s", msg);
        }
        return;
    }
    char err[256];
    if (etcd_range_parse(res->body, res->body_len, &s->page, err, sizeof err) < 0) {
        etcd_fail(s, "list: bad response: %s", err);
        return;
    }
    s->token_fresh = false;
    if (s->list_rev == 0)
        s->list_rev = s->page.revision;
    if (s->page.more && s->page.n > 0) {
        log_debug(s->base.log, "etcd: list page: %zu keys so far at revision %" PRId64, s->page.n,
                  s->list_rev);
        /* Next page: right after the last key, at the same revision. */
        const struct etcd_kv *last = &s->page.kvs[s->page.n - 1];
        char *next = malloc(last->key_len + 1);
        if (!next) {
            etcd_fail(s, "out of memory");
            return;
        }
        memcpy(next, last->key, last->key_len);
        next[last->key_len] = '\0';
        list_page(s, next, last->key_len + 1);
        free(next);
        return;
    }

    size_t n = s->page.n;
    struct source_kv *kvs = calloc(n ? n : 1, sizeof *kvs);
    if (!kvs) {
        etcd_fail(s, "out of memory");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (key_has_nul(s, s->page.kvs[i].key, s->page.kvs[i].key_len))
            continue;
        kvs[k].key = s->page.kvs[i].key;
        kvs[k].value = s->page.kvs[i].value;
        kvs[k].value_len = s->page.kvs[i].value_len;
        kvs[k].revision = (uint64_t)s->page.kvs[i].mod_revision;
        k++;
    }
    n = k;
    s->rev = s->list_rev;
    s->need_list = false;
    log_info(s->base.log, "etcd: %s: %zu keys under '%s' at revision %" PRId64 " from %s",
             list_why_name(s->list_why), n, s->base.cfg->prefix, s->list_rev, etcd_url(s));
    unsigned gen = s->gen;
    if (s->base.cb.on_snapshot)
        s->base.cb.on_snapshot(s->base.cb.user, kvs, n, (uint64_t)s->list_rev);
    free(kvs);
    etcd_range_free(&s->page);
    if (s->phase == PH_STOPPED || s->gen != gen)
        return;
    etcd_run(s);
}

static void list_page(struct etcd *s, const char *from, size_t from_len) {
    struct http_req *r = etcd_request(
        s, "/v3/kv/range",
        etcd_range_body(from, from_len, s->end, s->end_len, ETCD_LIST_LIMIT, s->list_rev), false);
    if (!r || http_req_start(r, list_done) < 0) {
        http_req_free(r);
        etcd_fail(s, "list: cannot start request");
        return;
    }
    s->req = r;
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

/* Returns 0 to continue with the stream, 1 to end it. */
static int watch_handle(struct etcd *s, const struct etcd_watch_msg *m) {
    if (m->is_error) {
        char msg[512];
        enum etcd_err_kind kind =
            etcd_error_classify(m->http_code, m->message, strlen(m->message), msg, sizeof msg);
        watch_end(s,
                  kind == ETCD_ERR_AUTH        ? WEND_AUTH
                  : kind == ETCD_ERR_COMPACTED ? WEND_COMPACTED
                                               : WEND_FAILED,
                  "watch error: %s", msg);
        return 1;
    }
    if (m->canceled) {
        if (m->compact_revision > 0) {
            s->compact_rev = m->compact_revision;
            watch_end(s, WEND_COMPACTED, "watch canceled: revision compacted");
            return 1;
        }
        const char *why = m->cancel_reason ? m->cancel_reason : "watch canceled by the server";
        enum etcd_err_kind kind = etcd_error_classify(0, why, strlen(why), NULL, 0);
        watch_end(s, kind == ETCD_ERR_AUTH ? WEND_AUTH : WEND_FAILED, "watch canceled: %s", why);
        return 1;
    }
    if (m->created) {
        s->watch_created = true;
        if (s->timer_kind == TIMER_CREATE)
            timer_disarm(s);
        if (s->base.cfg->liveness_ms > 0 && !s->req)
            timer_arm(s, TIMER_PROBE, s->base.cfg->liveness_ms);
        s->created_at = uv_now(s->base.loop);
        s->token_fresh = false;
        if (!s->up) {
            s->up = true;
            s->down_reported = false;
            s->base.fault = SOURCE_FAULT_NONE;
            log_info(s->base.log, "etcd: %s %s, watching '%s' from revision %" PRId64,
                     s->ever_up ? "reconnected to" : "connected to", etcd_url(s),
                     s->base.cfg->prefix, s->rev + 1);
            s->ever_up = true;
            unsigned gen = s->gen;
            if (s->base.cb.on_state)
                s->base.cb.on_state(s->base.cb.user, true, NULL);
            if (s->phase == PH_STOPPED || s->gen != gen)
                return 1;
        } else {
            log_debug(s->base.log, "etcd: watch re-created from revision %" PRId64, s->rev + 1);
        }
    }
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
        unsigned gen = s->gen;
        if (s->base.cb.on_event)
            s->base.cb.on_event(s->base.cb.user, ev->type, &kv, (uint64_t)rev);
        if (s->phase == PH_STOPPED || s->gen != gen)
            return 1;
    }
    /* Only a bare progress notification promises that everything up to its
     * header revision was sent; a header next to events does not. */
    if (etcd_watch_is_progress(m) && m->revision > s->rev) {
        log_debug(s->base.log, "etcd: progress: caught up to revision %" PRId64, m->revision);
        s->rev = m->revision;
    }
    return 0;
}

static int watch_msg(void *user, const char *msg, size_t len) {
    struct etcd *s = user;
    struct etcd_watch_msg m;
    char err[256];
    if (etcd_watch_parse(msg, len, &m, err, sizeof err) < 0) {
        watch_end(s, WEND_FAILED, "bad watch message: %s", err);
        return 1;
    }
    int rc = watch_handle(s, &m);
    etcd_watch_msg_free(&m);
    return rc;
}

static int watch_data(struct http_req *r, const char *data, size_t len) {
    struct etcd *s = http_req_user(r);
    int rc = etcd_stream_feed(&s->stream, data, len, watch_msg, s);
    if (rc == ETCD_STREAM_TOO_BIG)
        watch_end(s, WEND_FAILED, "watch message larger than %zu bytes", s->stream.max_msg);
    else if (rc == ETCD_STREAM_NOMEM)
        watch_end(s, WEND_FAILED, "out of memory");
    /* Any stop ends the transfer; watch_done sees why in s->wend. If a
     * consumer callback stopped or resynced us, the request is already
     * cancelled and nothing more happens. */
    return rc == 0 ? 0 : -1;
}

static void watch_done(struct http_req *r, const struct http_result *res) {
    struct etcd *s = http_req_user(r);
    s->watch = NULL;
    /* The watch's timers and its liveness check end with it. */
    http_req_cancel(s->req);
    s->req = NULL;
    if (s->timer_kind == TIMER_CREATE || s->timer_kind == TIMER_PROBE)
        timer_disarm(s);
    if (s->wend == WEND_NONE) {
        size_t rest_len;
        const char *rest = etcd_stream_rest(&s->stream, &rest_len);
        if (res->status != 0 && res->status != 200) {
            char msg[512];
            enum etcd_err_kind kind =
                etcd_error_classify(res->status, rest, rest_len, msg, sizeof msg);
            watch_end(s,
                      kind == ETCD_ERR_AUTH        ? WEND_AUTH
                      : kind == ETCD_ERR_COMPACTED ? WEND_COMPACTED
                                                   : WEND_FAILED,
                      "watch: %s", msg);
        } else if (rest_len > 0 && res->curl == CURLE_OK) {
            /* A last message without its newline. */
            unsigned gen = s->gen;
            watch_msg(s, rest, rest_len);
            if (s->phase == PH_STOPPED || s->gen != gen)
                return;
        }
        if (s->wend == WEND_NONE) {
            if (res->curl != CURLE_OK)
                watch_end(s, WEND_FAILED, "watch: %s", res->error);
            else
                watch_end(s, WEND_FAILED, "watch stream closed by the server");
        }
    }
    etcd_stream_reset(&s->stream);
    switch (s->wend) {
    case WEND_COMPACTED:
        log_info(s->base.log,
                 "etcd: watch from revision %" PRId64 " is compacted (compact revision %" PRId64
                 "); re-listing",
                 s->rev + 1, s->compact_rev);
        s->need_list = true;
        s->list_why = LIST_COMPACTED;
        etcd_run(s);
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
    etcd_fail_now(s, s->wreason);
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
    s->req = NULL;
    if (res->curl != CURLE_OK) {
        etcd_fail(s, "the watched member did not answer the liveness check: %s", res->error);
        return;
    }
    log_debug(s->base.log, "etcd: liveness check: %s answered HTTP %ld", etcd_url(s), res->status);
    timer_arm(s, TIMER_PROBE, s->base.cfg->liveness_ms);
}

static void probe_begin(struct etcd *s) {
    uint64_t every = s->base.cfg->liveness_ms;
    char *body = strdup("{}");
    struct http_req *r = body ? etcd_request(s, "/v3/maintenance/status", body, false) : NULL;
    if (r) {
        uint64_t limit = every < ETCD_PROBE_TIMEOUT_MS ? every : ETCD_PROBE_TIMEOUT_MS;
        http_req_timeouts(r, (long)limit, (long)limit);
        if (http_req_start(r, probe_done) == 0) {
            s->req = r;
            return;
        }
        http_req_free(r);
    }
    /* Out of memory: the watch itself is fine, so try again later. */
    log_warn(s->base.log, "etcd: liveness check: cannot start request");
    timer_arm(s, TIMER_PROBE, every);
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
        etcd_fail(s, "watch: cannot create request");
        return;
    }
    http_req_on_data(r, watch_data);
    if (http_req_start(r, watch_done) < 0) {
        http_req_free(r);
        etcd_fail(s, "watch: cannot start request");
        return;
    }
    s->watch = r;
    s->phase = PH_WATCH;
    timer_arm(s, TIMER_CREATE, ETCD_CREATE_TIMEOUT_MS);
}

/* Pick the next step; exactly one of them ends up in flight. */
static void etcd_run(struct etcd *s) {
    if (s->phase == PH_STOPPED)
        return;
    if (s->auth && !s->token)
        auth_begin(s);
    else if (s->need_list)
        list_begin(s);
    else
        watch_begin(s);
}

/* ---- status writes ---- */

static void put_unlink(struct etcd_put *p) {
    struct etcd *s = p->s;
    if (p->prev)
        p->prev->next = p->next;
    else
        s->puts = p->next;
    if (p->next)
        p->next->prev = p->prev;
}

static void put_free(struct etcd_put *p) {
    free(p->key);
    if (p->value)
        explicit_bzero(p->value, p->len);
    free(p->value);
    free(p);
}

static void put_done(struct http_req *r, const struct http_result *res);

static int put_send(struct etcd *s, struct etcd_put *p) {
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
    for (struct etcd_put *p = s->puts, *next; p; p = next) {
        next = p->next;
        if (p->req || put_send(s, p) == 0)
            continue;
        put_unlink(p);
        if (p->done)
            p->done(p->user, false, "cannot start request");
        put_free(p);
    }
}

static void put_done(struct http_req *r, const struct http_result *res) {
    struct etcd_put *p = http_req_user(r);
    struct etcd *s = p->s;
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
    put_unlink(p);
    if (p->done)
        p->done(p->user, ok, msg);
    put_free(p);
}

static int etcd_put(struct source *src, const char *key, const char *value, size_t len,
                    void (*done)(void *user, bool ok, const char *message), void *user) {
    struct etcd *s = (struct etcd *)src;
    if (s->phase == PH_STOPPED || !key)
        return -1;
    struct etcd_put *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->s = s;
    p->key = strdup(key);
    p->len = value ? len : 0;
    p->value = malloc(p->len + 1);
    if (!p->key || !p->value) {
        put_free(p);
        return -1;
    }
    if (p->len)
        memcpy(p->value, value, p->len);
    p->value[p->len] = '\0';
    p->done = done;
    p->user = user;
    if (put_send(s, p) < 0) {
        put_free(p);
        return -1;
    }
    p->next = s->puts;
    if (s->puts)
        s->puts->prev = p;
    s->puts = p;
    return 0;
}

/* ---- source ops ---- */

static int etcd_start(struct source *src) {
    struct etcd *s = (struct etcd *)src;
    if (s->phase != PH_IDLE)
        return -1;
    log_info(s->base.log, "etcd: starting on %s (%zu endpoint%s), prefix '%s'", etcd_url(s),
             s->base.cfg->n_endpoints, s->base.cfg->n_endpoints == 1 ? "" : "s",
             s->base.cfg->prefix);
    s->need_list = true;
    s->list_why = LIST_INITIAL;
    etcd_run(s);
    return 0;
}

static void etcd_resync(struct source *src) {
    struct etcd *s = (struct etcd *)src;
    if (s->phase == PH_STOPPED)
        return;
    s->need_list = true;
    s->list_why = LIST_RESYNC;
    /* Waiting, authenticating or listing already ends in a snapshot. A live
     * watch is dropped, and re-made after the list from its revision + 1. */
    if (s->phase == PH_WATCH) {
        etcd_abandon(s);
        etcd_run_soon(s);
    }
}

static void etcd_free(struct etcd *s) {
    secret_free(s->token);
    free(s->key);
    free(s->end);
    etcd_range_free(&s->page);
    etcd_stream_free(&s->stream);
    free(s);
}

static void etcd_timer_closed(uv_handle_t *h) {
    struct etcd *s = h->data;
    s->timer_closed = true;
    if (s->destroy_pending)
        etcd_free(s);
}

static void etcd_stop(struct source *src) {
    struct etcd *s = (struct etcd *)src;
    if (s->phase == PH_STOPPED)
        return;
    etcd_abandon(s);
    s->phase = PH_STOPPED;
    while (s->puts) {
        struct etcd_put *p = s->puts;
        put_unlink(p);
        if (p->req)
            http_req_cancel(p->req);
        put_free(p);
    }
    if (!uv_is_closing((uv_handle_t *)&s->timer))
        uv_close((uv_handle_t *)&s->timer, etcd_timer_closed);
}

static void etcd_destroy(struct source *src) {
    struct etcd *s = (struct etcd *)src;
    if (!s)
        return;
    etcd_stop(src);
    if (s->timer_closed)
        etcd_free(s);
    else
        s->destroy_pending = true; /* freed by the timer's close callback */
}

static const struct source_ops etcd_ops = {
    .name = "etcd",
    .start = etcd_start,
    .resync = etcd_resync,
    .put = etcd_put,
    .stop = etcd_stop,
    .destroy = etcd_destroy,
};

struct source *source_etcd_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                               const struct source_settings *cfg, const struct source_callbacks *cb,
                               char *err, size_t errlen) {
    if (!cfg->n_endpoints || !cfg->endpoints) {
        set_err(err, errlen, "source.endpoints: at least one etcd endpoint is required");
        return NULL;
    }
    bool https = false;
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        const char *ep = cfg->endpoints[i];
        if (ep && strncmp(ep, "https://", 8) == 0) {
            https = true;
        } else if (!ep || strncmp(ep, "http://", 7) != 0) {
            set_err(err, errlen, "source.endpoints: '%s' is not an http:// or https:// URL",
                    ep ? ep : "");
            return NULL;
        }
    }
    if (!cfg->prefix) {
        set_err(err, errlen, "source.prefix is not set");
        return NULL;
    }
    bool auth = cfg->username && *cfg->username;
    if (auth && !cfg->password && !cfg->password_file) {
        set_err(err, errlen, "source.username needs source.password or source.password_file");
        return NULL;
    }

    struct etcd *s = calloc(1, sizeof *s);
    if (!s) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    s->base.ops = &etcd_ops;
    if (cb)
        s->base.cb = *cb;
    s->base.loop = loop;
    s->base.http = http;
    s->base.log = lg;
    s->base.cfg = cfg;
    s->auth = auth;
    s->phase = PH_IDLE;
    etcd_stream_init(&s->stream, ETCD_MAX_MESSAGE);
    s->key_len = strlen(cfg->prefix);
    s->key = strdup(cfg->prefix);
    if (!s->key || etcd_prefix_end(s->key, s->key_len, &s->end, &s->end_len) < 0) {
        set_err(err, errlen, "out of memory");
        etcd_free(s);
        return NULL;
    }
    const struct tls_files *t = &cfg->tls;
    s->use_tls = https || t->ca_file || t->cert_file || t->key_file;
    s->tls.ca_file = t->ca_file;
    s->tls.cert_file = t->cert_file;
    s->tls.key_file = t->key_file;
    s->tls.insecure = t->insecure_skip_verify;
    if (https && t->insecure_skip_verify)
        log_warn(lg, "etcd: source.tls.insecure_skip_verify is set: the etcd server's "
                     "certificate is NOT verified");
    int rc = uv_timer_init(loop, &s->timer);
    if (rc < 0) {
        set_err(err, errlen, "uv_timer_init: %s", uv_strerror(rc));
        etcd_free(s);
        return NULL;
    }
    s->timer.data = s;
    return &s->base;
}
