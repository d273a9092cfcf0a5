/* consul.c - the Consul KV key source: a recursive blocking query on the
 * prefix, forever.
 *
 * Consul has no watch stream. Each GET /v1/kv/<prefix>?recurse&index=N&wait=W
 * hangs until the prefix's X-Consul-Index moves past N (or W runs out) and
 * then answers with the WHOLE prefix. So the source keeps the last answer and
 * diffs each new one against it by ModifyIndex and content, reporting only
 * the keys that changed; the first answer, a resync and an index that went
 * backwards are reported as snapshots. One step is in flight at a time:
 *
 *   [read token_file] -> query -> deliver -> (token bucket) -> query ...
 *
 * Consul's rules for blocking clients (protocols.md 3.2) are followed to the
 * letter: the index comes from X-Consul-Index on every answer, 404 included
 * (an empty prefix is a successful read of nothing); an index lower than the
 * previous one means a snapshot restore and the answer replaces everything;
 * the index blocked on is never below 1. A returning query proves nothing
 * changed, so requests after unproductive answers and after errors draw from
 * a small token bucket (burst 2, as Consul's docs suggest), and requests
 * after answers that carried changes from a larger one whose refill follows
 * what an answer costs to handle: a UI edit or a script's run of edits goes
 * through at once, a key rewritten in a tight loop under a big prefix
 * degrades to polling instead of a busy loop. Errors also back off
 * exponentially with jitter.
 *
 * Re-entrancy: the consumer's callbacks may call stop(), resync(), put() or
 * destroy() on this source, so every call out is followed by a check of
 * s->gen / s->phase before the state is touched again, and memory is freed
 * only from the timer's close callback (as in etcd.c).
 *
 * The ACL token is a secret: it travels only in the X-Consul-Token header
 * and never reaches a log line or an error message. */
#include "sources/consul.h"

#include "bridge/lib/base64.h"
#include "bridge/lib/fileread.h"
#include "bridge/lib/tbucket.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bridge/lib/buf.h"

/* ======================================================================
 * Pure helpers
 * ====================================================================== */

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

/* ---- URLs ---- */

/* "<address without trailing slashes>/v1/kv/<escaped key>" */
static int buf_put_kv_path(buf_t *b, const char *address, const char *key) {
    size_t alen = strlen(address);
    while (alen > 0 && address[alen - 1] == '/')
        alen--;
    if (buf_append(b, address, alen) < 0 || buf_puts(b, "/v1/kv/") < 0)
        return -1;
    return buf_put_urlencoded(b, key, true);
}

char *consul_url_key(const char *address, const char *key) {
    buf_t b = BUF_INIT;
    if (buf_put_kv_path(&b, address, key) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

char *consul_url_list(const char *address, const char *prefix, uint64_t index, uint64_t wait_ms,
                      const char *datacenter, const char *consistency) {
    buf_t b = BUF_INIT;
    bool ok = buf_put_kv_path(&b, address, prefix) == 0 && buf_puts(&b, "?recurse") == 0;
    if (ok && index > 0) {
        /* Go durations: whole seconds read best in request logs. */
        ok = buf_printf(&b, "&index=%" PRIu64, index) == 0 &&
             (wait_ms % 1000 == 0 ? buf_printf(&b, "&wait=%" PRIu64 "s", wait_ms / 1000)
                                  : buf_printf(&b, "&wait=%" PRIu64 "ms", wait_ms)) == 0;
    }
    if (ok && datacenter && *datacenter)
        ok = buf_puts(&b, "&dc=") == 0 && buf_put_urlencoded(&b, datacenter, false) == 0;
    if (ok && consistency && strcmp(consistency, "stale") == 0)
        ok = buf_puts(&b, "&stale") == 0;
    else if (ok && consistency && strcmp(consistency, "consistent") == 0)
        ok = buf_puts(&b, "&consistent") == 0;
    if (!ok) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

void consul_address_redact(const char *address, char *out, size_t outlen) {
    if (!out || outlen == 0)
        return;
    const char *scheme_end = strstr(address, "://");
    const char *auth = scheme_end ? scheme_end + 3 : address;
    size_t auth_len = strcspn(auth, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < auth_len; i++)
        if (auth[i] == '@')
            at = auth + i;
    if (!at) {
        snprintf(out, outlen, "%s", address);
        return;
    }
    snprintf(out, outlen, "%.*s%s", (int)(auth - address), address, at + 1);
}

/* ---- recurse answers ---- */

/* A non-negative integer field; absent or null is 0. Consul's indexes are
 * uint64 but stay far below 2^53, where JSON numbers are still exact
 * (max 2^53). Flags are any uint64 a client chose (`consul lock` sets
 * 0x2ddccbc058a50c18): max 2^64, the double that 2^64-1 parses to. */
static int json_u64(const cJSON *obj, const char *name, double max, uint64_t *out) {
    *out = 0;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it || cJSON_IsNull(it))
        return 0;
    if (!cJSON_IsNumber(it))
        return -1;
    double d = it->valuedouble;
    if (!(d >= 0 && d <= max) || d != floor(d))
        return -1;
    *out = d >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)d;
    return 0;
}
#define JSON_EXACT_MAX 9007199254740992.0   /* 2^53 */
#define JSON_U64_MAX 18446744073709551616.0 /* 2^64 */

/* A key for a message: control bytes as \xNN, the rest as it is. */
static int buf_put_key(buf_t *b, const char *key) {
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        int rc = *p < 0x20 || *p == 0x7f ? buf_printf(b, "\\x%02x", *p) : buf_putc(b, (char)*p);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static void kv_free(struct consul_kv *kv) {
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

static int kv_cmp(const void *a, const void *b) {
    return strcmp(((const struct consul_kv *)a)->key, ((const struct consul_kv *)b)->key);
}

/* Parse one entry into kv. Returns 1 when parsed, 0 for a folder (skipped),
 * -1 on error. */
static int kv_parse(const cJSON *j, size_t i, struct consul_kv *kv, char *err, size_t errlen) {
    memset(kv, 0, sizeof *kv);
    if (!cJSON_IsObject(j)) {
        set_err(err, errlen, "entry %zu is not an object", i);
        return -1;
    }
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(j, "Key");
    if (!cJSON_IsString(key) || !key->valuestring[0]) {
        set_err(err, errlen, "entry %zu has no Key", i);
        return -1;
    }
    size_t klen = strlen(key->valuestring);
    if (key->valuestring[klen - 1] == '/')
        return 0; /* a UI folder: structure, not data */
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(j, "Value");
    if (val && !cJSON_IsNull(val) && !cJSON_IsString(val)) {
        set_err(err, errlen, "entry %zu (%s): Value is not a string", i, key->valuestring);
        return -1;
    }
    /* Value is []byte without omitempty: an empty value is null. */
    const char *b64 = cJSON_IsString(val) ? val->valuestring : "";
    if (base64_decode(b64, strlen(b64), BASE64_PAD_OPTIONAL, &kv->value, &kv->value_len) < 0) {
        set_err(err, errlen, "entry %zu (%s): Value is not base64", i, key->valuestring);
        return -1;
    }
    if (json_u64(j, "CreateIndex", JSON_EXACT_MAX, &kv->create_index) < 0 ||
        json_u64(j, "ModifyIndex", JSON_EXACT_MAX, &kv->modify_index) < 0 ||
        json_u64(j, "Flags", JSON_U64_MAX, &kv->flags) < 0) {
        set_err(err, errlen, "entry %zu (%s): malformed index or flags", i, key->valuestring);
        kv_free(kv);
        return -1;
    }
    kv->key = strdup(key->valuestring);
    if (!kv->key) {
        set_err(err, errlen, "out of memory");
        kv_free(kv);
        return -1;
    }
    return 1;
}

int consul_list_parse(const char *json, size_t len, struct consul_list *out, char *err,
                      size_t errlen) {
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsArray(root)) {
        set_err(err, errlen, "answer is not a JSON array");
        cJSON_Delete(root);
        return -1;
    }
    int count = cJSON_GetArraySize(root);
    struct consul_kv *kvs = calloc(count > 0 ? (size_t)count : 1, sizeof *kvs);
    if (!kvs) {
        set_err(err, errlen, "out of memory");
        cJSON_Delete(root);
        return -1;
    }
    size_t n = 0, i = 0;
    int rc = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        rc = kv_parse(it, i++, &kvs[n], err, errlen);
        if (rc < 0)
            break;
        n += (size_t)rc;
    }
    cJSON_Delete(root);
    buf_t warn = BUF_INIT;
    if (rc >= 0) {
        qsort(kvs, n, sizeof *kvs, kv_cmp);
        /* Runs of one name: keys that differ only in bytes that are not
         * UTF-8. None of them can be told apart, so none is kept. */
        size_t kept = 0;
        bool oom = false;
        for (size_t k = 0; k < n;) {
            size_t end = k + 1;
            while (end < n && strcmp(kvs[k].key, kvs[end].key) == 0)
                end++;
            if (end - k == 1) {
                kvs[kept++] = kvs[k];
            } else {
                if (buf_puts(&warn, "ignoring key ") < 0 || buf_put_key(&warn, kvs[k].key) < 0 ||
                    buf_printf(&warn,
                               ": %zu keys have this name in Consul's answer (keys that differ "
                               "only in bytes that are not UTF-8, which Consul's JSON shows as "
                               "U+FFFD); none of them is read\n",
                               end - k) < 0)
                    oom = true;
                for (size_t m = k; m < end; m++)
                    kv_free(&kvs[m]);
            }
            k = end;
        }
        n = kept;
        if (oom) {
            set_err(err, errlen, "out of memory");
            rc = -1;
        }
    }
    if (rc < 0) {
        for (size_t k = 0; k < n; k++)
            kv_free(&kvs[k]);
        free(kvs);
        buf_free(&warn);
        return -1;
    }
    out->kvs = kvs;
    out->n = n;
    out->warnings = warn.len ? buf_steal(&warn) : NULL;
    buf_free(&warn);
    return 0;
}

void consul_list_free(struct consul_list *l) {
    for (size_t i = 0; i < l->n; i++)
        kv_free(&l->kvs[i]);
    free(l->kvs);
    free(l->warnings);
    memset(l, 0, sizeof *l);
}

const struct consul_kv *consul_list_find(const struct consul_list *l, const char *key) {
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, l->kvs[mid].key);
        if (c == 0)
            return &l->kvs[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

bool consul_list_drops(const struct consul_list *old, const struct consul_list *cur) {
    /* Both sorted by strcmp: one merge pass. */
    size_t j = 0;
    for (size_t i = 0; i < old->n; i++) {
        int c = 1;
        while (j < cur->n && (c = strcmp(cur->kvs[j].key, old->kvs[i].key)) < 0)
            j++;
        if (j >= cur->n || c != 0)
            return true;
    }
    return false;
}

enum consul_probe_verdict consul_probe_result(long status) {
    if (status == 200 || status == 404)
        return CONSUL_PROBE_READABLE;
    return status == 403 ? CONSUL_PROBE_DENIED : CONSUL_PROBE_ERROR;
}

/* ---- diff ---- */

static int change_cmp(const void *a, const void *b) {
    const struct consul_change *x = a, *y = b;
    if (x->revision != y->revision)
        return x->revision < y->revision ? -1 : 1;
    return strcmp(x->kv->key, y->kv->key);
}

static bool kv_same(const struct consul_kv *a, const struct consul_kv *b) {
    /* ModifyIndex alone would do against a real Consul; the content check
     * also catches servers or proxies that leave it out (0 on both sides). */
    return a->modify_index == b->modify_index && a->value_len == b->value_len &&
           memcmp(a->value, b->value, a->value_len) == 0;
}

int consul_diff(const struct consul_list *old, const struct consul_list *cur, uint64_t index,
                struct consul_change **out, size_t *n) {
    *out = NULL;
    *n = 0;
    size_t cap = old->n + cur->n;
    if (cap == 0)
        return 0;
    struct consul_change *ch = calloc(cap, sizeof *ch);
    if (!ch)
        return -1;
    size_t i = 0, j = 0, k = 0;
    /* Both lists are sorted by key: one merge walk finds every difference. */
    while (i < old->n || j < cur->n) {
        int c = i == old->n ? 1 : j == cur->n ? -1 : strcmp(old->kvs[i].key, cur->kvs[j].key);
        if (c < 0) {
            ch[k++] = (struct consul_change){SOURCE_DELETE, &old->kvs[i++], index};
        } else if (c > 0) {
            ch[k] = (struct consul_change){SOURCE_PUT, &cur->kvs[j], cur->kvs[j].modify_index};
            k++, j++;
        } else {
            if (!kv_same(&old->kvs[i], &cur->kvs[j]))
                ch[k++] =
                    (struct consul_change){SOURCE_PUT, &cur->kvs[j], cur->kvs[j].modify_index};
            i++, j++;
        }
    }
    if (k == 0) {
        free(ch);
        return 0;
    }
    qsort(ch, k, sizeof *ch, change_cmp);
    *out = ch;
    *n = k;
    return 0;
}

/* ---- indexes ---- */

int consul_index_parse(const char *s, uint64_t *out) {
    *out = 0;
    if (!s || !*s)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

enum consul_index_verdict consul_index_next(bool have_prev, uint64_t prev, uint64_t got,
                                            uint64_t *next) {
    *next = got < 1 ? 1 : got;
    if (!have_prev)
        return CONSUL_INDEX_FIRST;
    if (got < prev)
        return CONSUL_INDEX_RESET;
    return got == prev ? CONSUL_INDEX_SAME : CONSUL_INDEX_FORWARD;
}

/* ---- rate limiting ---- */

uint64_t consul_churn_refill_ms(uint64_t cost_us) {
    uint64_t ms = cost_us / 100; /* 10 x cost, in ms */
    if (ms < CONSUL_CHURN_REFILL_MIN_MS)
        return CONSUL_CHURN_REFILL_MIN_MS;
    return ms > CONSUL_CHURN_REFILL_MAX_MS ? CONSUL_CHURN_REFILL_MAX_MS : ms;
}

/* ---- writes ---- */

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

bool consul_put_result(long status, const char *body, size_t len, const char *key, char *msg,
                       size_t msglen) {
    char text[200];
    copy_text(text, sizeof text, body ? body : "", body ? len : 0);
    const char *t = text;
    while (*t == ' ')
        t++;
    if (status == 200 && strcmp(t, "true") == 0) {
        set_err(msg, msglen, "ok");
        return true;
    }
    if (status == 200 && strcmp(t, "false") == 0)
        set_err(msg, msglen, "Consul did not apply the write of %s (it answered false)", key);
    else if (status == 403)
        set_err(msg, msglen, "permission denied writing %s", key);
    else if (status == 200)
        set_err(msg, msglen, "unexpected answer to the write of %s: %s", key, *t ? t : "(empty)");
    else
        set_err(msg, msglen, "HTTP %ld writing %s%s%s", status, key, *t ? ": " : "", t);
    return false;
}

/* ======================================================================
 * The source
 * ====================================================================== */

#define CONSUL_CONNECT_TIMEOUT_MS 3000L
/* Non-blocking reads and writes answer at once or not at all. */
#define CONSUL_UNARY_TIMEOUT_MS 30000L
#define CONSUL_BACKOFF_BASE_MS 100u
#define CONSUL_BACKOFF_MAX_MS 10000u
#define CONSUL_DEFAULT_WAIT_MS ((uint64_t)5 * 60 * 1000)
#define CONSUL_MAX_WAIT_MS ((uint64_t)10 * 60 * 1000) /* Consul's own cap */
/* Unproductive answers and errors: Consul's suggested burst of 2, then one
 * request per wait/30 (10 s for the default 5m), within [1 s, 15 s]. */
#define CONSUL_IDLE_BURST 2u
#define CONSUL_IDLE_REFILL_MIN_MS 1000u
#define CONSUL_IDLE_REFILL_MAX_MS 15000u
/* Answers with changes: a burst covers a run of edits together with the
 * status keys the bridge writes back for them. Each answer is the whole
 * prefix, so what sustained churn may cost scales with it: the refill is ten
 * times what handling the last answer took (consul_churn_refill_ms), at
 * least 1 ms. A small prefix follows a script's edits one by one; a
 * 10,000-route prefix rewritten in a tight loop settles at a few queries a
 * second, each carrying everything that changed meanwhile. */
#define CONSUL_CHURN_BURST 20u
/* ACL tokens are UUIDs; anything near this size is not a token. */

/* Consul counts every open connection of a client IP, idle keep-alive ones
 * included, against limits.http_max_conns_per_client (200 by default) and
 * answers 429 beyond it. So the source has its own HTTP client bounded to
 * this many connections, shared by the blocking read, the permission check
 * and the status writes, and queues the writes beyond CONSUL_MAX_WRITES. */
#define CONSUL_MAX_CONNS 8L
#define CONSUL_MAX_WRITES 6u

enum consul_phase {
    PH_IDLE,  /* created, not started */
    PH_WAIT,  /* timer armed for the next step (backoff, rate limit, "soon") */
    PH_TOKEN, /* reading token_file */
    PH_QUERY, /* a read in flight, or its answer being delivered */
    PH_STOPPED,
};

enum list_why { LIST_INITIAL, LIST_RESYNC };

struct consul;

/* An in-flight status write; owned by the source's list until it finishes. */
/* A status write: queued (value held, req NULL) until a slot is free, then
 * in flight (req set) on the source's list until it finishes. */
struct consul_put {
    struct consul *s;
    struct http_req *req;
    char *key; /* for messages */
    char *value;
    size_t len;
    void (*done)(void *user, bool ok, const char *message);
    void *user;
    struct consul_put *prev, *next;
};

struct consul {
    struct source base; /* first: the ops receive &base */
    char addr_log[256]; /* address without credentials, for logs */
    struct http_tls tls;
    bool use_tls;
    uint64_t wait_ms;
    char *token;               /* secret; never logged */
    bool need_token;           /* (re-)read token_file before the next query */
    struct file_read *tokread; /* token_file being read */

    enum consul_phase phase;
    struct http_req *req; /* the read in flight */
    uv_timer_t timer;
    bool timer_closed, destroy_pending;
    unsigned attempt; /* consecutive failures, for the backoff */
    unsigned gen;     /* bumped when in-flight work is abandoned */

    bool up; /* on_state(true) sent, no outage since */
    bool ever_up;
    bool down_reported;   /* on_state(false) sent for the current outage */
    bool denied_reported; /* the 403 warning logged for the current outage */

    struct consul_list state; /* the last answer delivered */
    bool have_state;
    uint64_t index;       /* X-Consul-Index of that answer, as received */
    uint64_t block_index; /* the index to block on next (>= 1) */
    bool need_snapshot;   /* deliver the next answer as a snapshot */
    enum list_why list_why;
    bool nonblocking_next; /* after an error: read at once, do not block */
    bool query_blocking;   /* the query in flight blocks on block_index */
    uint64_t query_sent;   /* uv_hrtime() when it was sent */

    struct tbucket idle, churn;
    struct http_client *http; /* the source's own, bounded (CONSUL_MAX_CONNS) */
    struct consul_put *puts;  /* writes in flight */
    size_t puts_running;
    struct consul_put *queue, *queue_tail; /* writes waiting for a slot, FIFO */

    /* An answer held while the read permission probe is in flight. */
    struct consul_list held;
    bool have_held;
    uint64_t held_index, held_t;
    bool policy_deny; /* X-Consul-Default-Acl-Policy: deny, on the last answer */
};

static void consul_run(struct consul *s);
static void probe_begin(struct consul *s);

static void secret_free(char *p) {
    if (p) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

static const char *consul_prefix(const struct consul *s) {
    return s->base.cfg->prefix;
}

static void timer_fired(uv_timer_t *t) {
    struct consul *s = t->data;
    if (s->phase == PH_WAIT)
        consul_run(s);
}

static void timer_arm(struct consul *s, uint64_t ms) {
    int rc = uv_timer_start(&s->timer, timer_fired, ms, 0);
    if (rc < 0)
        log_error(s->base.log, "consul: uv_timer_start: %s", uv_strerror(rc));
}

static void timer_disarm(struct consul *s) {
    int rc = uv_timer_stop(&s->timer);
    if (rc < 0)
        log_error(s->base.log, "consul: uv_timer_stop: %s", uv_strerror(rc));
}

static void held_drop(struct consul *s) {
    if (s->have_held)
        consul_list_free(&s->held);
    s->have_held = false;
}

/* Drop whatever step is in flight, silently. */
static void consul_abandon(struct consul *s) {
    s->gen++;
    http_req_cancel(s->req);
    s->req = NULL;
    held_drop(s);
    if (s->tokread) {
        file_read_detach(s->tokread);
        s->tokread = NULL;
    }
    timer_disarm(s);
}

/* Run the next step after ms, outside whatever callback we are in. */
static void consul_run_after(struct consul *s, uint64_t ms) {
    s->phase = PH_WAIT;
    timer_arm(s, ms);
}

enum fail_kind { FAIL_OTHER, FAIL_DENIED };

/* A step failed: report the outage once, back off, then read again without
 * blocking, so that a server that came back with an older index (a restore)
 * is noticed at once rather than after a whole wait. */
static void consul_fail_kind(struct consul *s, enum fail_kind kind, const char *reason) {
    consul_abandon(s);
    s->up = false;
    s->nonblocking_next = true;
    if (kind == FAIL_DENIED && s->base.cfg->token_file)
        s->need_token = true; /* it may have been rotated */
    uint64_t delay = source_backoff_ms(s->attempt, CONSUL_BACKOFF_BASE_MS, CONSUL_BACKOFF_MAX_MS);
    uint64_t limit = tbucket_reserve(&s->idle, uv_now(s->base.loop));
    if (limit > delay)
        delay = limit;
    if (s->attempt < 16)
        s->attempt++;
    consul_run_after(s, delay);
    bool report = !s->down_reported;
    s->down_reported = true;
    if (kind == FAIL_DENIED && !s->denied_reported) {
        /* Worth a warning, and a state change the consumer counts as ACL,
         * even when the outage began with something else. */
        s->denied_reported = true;
        report = true;
        s->base.fault = SOURCE_FAULT_ACL;
        log_warn(s->base.log, "consul: %s: %s; retrying with backoff", s->addr_log, reason);
    } else if (report) {
        s->base.fault = SOURCE_FAULT_UNREACHABLE;
        log_warn(s->base.log, "consul: %s: %s; retrying with backoff", s->addr_log, reason);
    } else {
        log_debug(s->base.log, "consul: %s: %s; next try in %" PRIu64 " ms", s->addr_log, reason,
                  delay);
    }
    if (report && s->base.cb.on_state)
        s->base.cb.on_state(s->base.cb.user, false, reason);
}

static void consul_fail(struct consul *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void consul_fail(struct consul *s, const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    consul_fail_kind(s, FAIL_OTHER, reason);
}

/* A request to url (heap, consumed) carrying the token; NULL on ENOMEM. */
static struct http_req *consul_request(struct consul *s, const char *method, char *url,
                                       long total_ms) {
    if (!url)
        return NULL;
    struct http_req *r = http_req_new(s->http, method, url);
    free(url);
    if (!r)
        return NULL;
    /* Consul offers HTTP/2 first over TLS; curl would then multiplex the
     * blocking read and every write on one connection, where one stalled
     * stream or a server's stream limit holds up all of them. HTTP/1.1 on a
     * bounded pool is the path the tests run and Consul's own clients take. */
    http_req_http11(r);
    if (s->token && *s->token) {
        buf_t h = BUF_INIT;
        bool ok =
            buf_printf(&h, "X-Consul-Token: %s", s->token) == 0 && http_req_header(r, h.data) == 0;
        if (h.data)
            explicit_bzero(h.data, h.cap);
        buf_free(&h);
        if (!ok) {
            http_req_free(r);
            return NULL;
        }
    }
    if (s->use_tls)
        http_req_tls(r, &s->tls);
    http_req_timeouts(r, total_ms, CONSUL_CONNECT_TIMEOUT_MS);
    http_req_set_user(r, s);
    return r;
}

/* ---- token file ---- */

/* A token goes into a header line: printable ASCII without spaces only, or
 * it could split the request. */
static bool token_valid(const char *t, size_t len) {
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return false;
    return true;
}

static void tok_read(void *user, int err, const char *data, size_t len) {
    struct consul *s = user;
    s->tokread = NULL;
    const char *file = s->base.cfg->token_file;
    if (err) {
        consul_fail(s, "cannot read source.token_file %s: %s", file, uv_strerror(err));
        return;
    }
    size_t start = 0, end = len;
    while (start < end && (data[start] == ' ' || data[start] == '\t' || data[start] == '\r' ||
                           data[start] == '\n'))
        start++;
    while (end > start && (data[end - 1] == ' ' || data[end - 1] == '\t' || data[end - 1] == '\r' ||
                           data[end - 1] == '\n'))
        end--;
    char *tok = NULL;
    if (!token_valid(data + start, end - start)) {
        consul_fail(s,
                    "source.token_file %s holds characters that cannot be sent in an HTTP "
                    "header",
                    file);
    } else if (end > start && !(tok = strndup(data + start, end - start))) {
        consul_fail(s, "out of memory");
    } else {
        secret_free(s->token);
        s->token = tok; /* NULL: an empty file means the anonymous token */
        s->need_token = false;
        log_debug(s->base.log, "consul: read the ACL token from %s%s", file,
                  tok ? "" : " (empty: anonymous)");
        consul_run(s);
    }
}

/* Through libuv's fs requests: the loop never blocks on a slow disk. */
static void token_begin(struct consul *s) {
    const char *file = s->base.cfg->token_file;
    int err = 0;
    s->tokread = file_read_start(s->base.loop, file, tok_read, s, &err);
    if (!s->tokread) {
        consul_fail(s, "cannot open source.token_file %s: %s", file, uv_strerror(err));
        return;
    }
    s->phase = PH_TOKEN;
}

/* ---- delivering answers ---- */

static const char *list_why_name(enum list_why w) {
    return w == LIST_RESYNC ? "resync" : "initial list";
}

/* Replace the state with cur and report it whole. Returns false when the
 * consumer stopped or re-directed the source from its callback. */
static bool deliver_snapshot(struct consul *s, struct consul_list *cur, uint64_t index,
                             enum consul_index_verdict v) {
    struct source_kv *kvs = calloc(cur->n ? cur->n : 1, sizeof *kvs);
    if (!kvs) {
        consul_list_free(cur);
        consul_fail(s, "out of memory");
        return false;
    }
    for (size_t i = 0; i < cur->n; i++)
        kvs[i] = (struct source_kv){cur->kvs[i].key, cur->kvs[i].value, cur->kvs[i].value_len,
                                    cur->kvs[i].modify_index};
    if (v == CONSUL_INDEX_RESET)
        log_info(s->base.log,
                 "consul: index of '%s' went backwards from %" PRIu64 " to %" PRIu64
                 " (snapshot restore or reaped tombstones); taking the answer as a full "
                 "snapshot of %zu keys",
                 consul_prefix(s), s->index, index, cur->n);
    else if (s->list_why == LIST_INITIAL && !s->have_state)
        log_info(s->base.log,
                 "consul: initial list: %zu keys under '%s' at index %" PRIu64 " from %s", cur->n,
                 consul_prefix(s), index, s->addr_log);
    else
        log_debug(s->base.log, "consul: %s: %zu keys under '%s' at index %" PRIu64,
                  list_why_name(s->list_why), cur->n, consul_prefix(s), index);
    struct consul_list old = s->state;
    s->state = *cur;
    s->have_state = true;
    s->need_snapshot = false;
    unsigned gen = s->gen;
    if (s->base.cb.on_snapshot)
        s->base.cb.on_snapshot(s->base.cb.user, kvs, cur->n, index);
    free(kvs);
    consul_list_free(&old);
    return s->phase != PH_STOPPED && s->gen == gen;
}

/* Report what changed from the state to cur, then make cur the state.
 * *changed tells whether anything did. Returns false as above. */
static bool deliver_changes(struct consul *s, struct consul_list *cur, uint64_t index,
                            bool *changed) {
    struct consul_change *ch;
    size_t n;
    if (consul_diff(&s->state, cur, index, &ch, &n) < 0) {
        consul_list_free(cur);
        consul_fail(s, "out of memory");
        return false;
    }
    *changed = n > 0;
    /* The changes point into both lists: keep the old one until done. */
    struct consul_list old = s->state;
    s->state = *cur;
    unsigned gen = s->gen;
    bool alive = true;
    for (size_t i = 0; i < n && alive; i++) {
        const struct consul_kv *kv = ch[i].kv;
        bool put = ch[i].type == SOURCE_PUT;
        struct source_kv skv = {kv->key, put ? kv->value : "", put ? kv->value_len : 0,
                                ch[i].revision};
        log_debug(s->base.log, "consul: %s %s at index %" PRIu64, put ? "put" : "delete", kv->key,
                  ch[i].revision);
        if (s->base.cb.on_event)
            s->base.cb.on_event(s->base.cb.user, ch[i].type, &skv, ch[i].revision);
        alive = s->phase != PH_STOPPED && s->gen == gen;
    }
    if (n == 0)
        log_debug(s->base.log, "consul: no change under '%s' at index %" PRIu64, consul_prefix(s),
                  index);
    free(ch);
    consul_list_free(&old);
    return alive;
}

/* A good answer: cur (consumed) is the whole prefix at index. */
static void consul_answer(struct consul *s, struct consul_list *cur, uint64_t index,
                          uint64_t t_received) {
    enum consul_index_verdict v =
        consul_index_next(s->have_state, s->index, index, &s->block_index);
    bool snapshot = s->need_snapshot || !s->have_state || v == CONSUL_INDEX_RESET;
    /* A snapshot restore abandons a blocked query: Consul answers it at once
     * with the index it blocked on, not the restored (lower) one, and a query
     * on that index then blocks for the whole wait. So an early answer that
     * did not move the index is followed by one read that does not block: it
     * shows an index gone backwards at once. */
    bool early_same = s->query_blocking && v == CONSUL_INDEX_SAME &&
                      t_received - s->query_sent < (uint64_t)s->wait_ms * 1000000u / 2;
    s->query_blocking = false;
    s->nonblocking_next = early_same;
    s->attempt = 0;
    if (!s->up) {
        s->up = true;
        if (s->ever_up)
            log_info(s->base.log, "consul: reconnected to %s at index %" PRIu64, s->addr_log,
                     index);
        s->ever_up = true;
        s->down_reported = false;
        s->denied_reported = false;
        s->base.fault = SOURCE_FAULT_NONE;
        unsigned gen = s->gen;
        if (s->base.cb.on_state)
            s->base.cb.on_state(s->base.cb.user, true, NULL);
        if (s->phase == PH_STOPPED || s->gen != gen) {
            consul_list_free(cur);
            return;
        }
    }
    bool changed = true;
    bool alive =
        snapshot ? deliver_snapshot(s, cur, index, v) : deliver_changes(s, cur, index, &changed);
    /* Recorded even when the consumer redirected us mid-way: the state
     * already is this answer. */
    s->index = index;
    if (!alive)
        return;
    uint64_t now = uv_now(s->base.loop);
    if (changed)
        tbucket_set_refill(&s->churn, consul_churn_refill_ms((uv_hrtime() - t_received) / 1000),
                           now);
    uint64_t delay = tbucket_reserve(changed ? &s->churn : &s->idle, now);
    if (delay == 0) {
        consul_run(s);
    } else {
        log_debug(s->base.log, "consul: rate limit: next query in %" PRIu64 " ms", delay);
        consul_run_after(s, delay);
    }
}

/* Log the keys cur leaves out, each once: only those the last delivered
 * answer did not leave out too (every answer is the whole prefix). */
static bool has_line(const char *lines, const char *line, size_t len) {
    for (const char *p = lines; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t plen = nl ? (size_t)(nl - p) : strlen(p);
        if (plen == len && memcmp(p, line, len) == 0)
            return true;
        p += plen + (nl ? 1 : 0);
    }
    return false;
}

static void warn_new(struct consul *s, const struct consul_list *cur) {
    for (const char *line = cur->warnings; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (!has_line(s->state.warnings, line, len))
            log_warn(s->base.log, "consul: %.*s", (int)len, line);
        line += len + (nl ? 1 : 0);
    }
}

/* ---- the read permission probe (consul.h) ---- */

static void probe_done(struct http_req *r, const struct http_result *res) {
    struct consul *s = http_req_user(r);
    s->req = NULL;
    if (res->curl != CURLE_OK) {
        consul_fail(s, "checking read permission on '%s': %s", consul_prefix(s), res->error);
        return;
    }
    enum consul_probe_verdict v = consul_probe_result(res->status);
    if (v == CONSUL_PROBE_DENIED) {
        char text[200], reason[600];
        copy_text(text, sizeof text, res->body ? res->body : "", res->body ? res->body_len : 0);
        bool anonymous = !s->token || !*s->token;
        snprintf(reason, sizeof reason,
                 "ACL: permission denied reading %s%s%s: the prefix cannot be read, so its "
                 "keys are not taken as deleted (give the token key_prefix \"%s\" read)%s%s",
                 consul_prefix(s),
                 anonymous ? " with the anonymous token (no token set, or an empty token_file)"
                           : "",
                 anonymous && s->policy_deny ? " under Consul's default ACL policy deny" : "",
                 consul_prefix(s), text[0] ? "; Consul: " : "", text);
        consul_fail_kind(s, FAIL_DENIED, reason);
        return;
    }
    if (v == CONSUL_PROBE_ERROR) {
        char text[200];
        copy_text(text, sizeof text, res->body ? res->body : "", res->body ? res->body_len : 0);
        consul_fail(s, "checking read permission on '%s': HTTP %ld%s%s", consul_prefix(s),
                    res->status, text[0] ? ": " : "", text);
        return;
    }
    struct consul_list cur = s->held;
    s->have_held = false;
    memset(&s->held, 0, sizeof s->held);
    consul_answer(s, &cur, s->held_index, s->held_t);
}

static void probe_begin(struct consul *s) {
    const struct source_settings *cfg = s->base.cfg;
    char *url = consul_url_key(cfg->address, consul_prefix(s));
    const char *dc = cfg->datacenter;
    if (url && dc && *dc) {
        buf_t b = BUF_INIT;
        bool ok = buf_puts(&b, url) == 0 && buf_puts(&b, "?dc=") == 0 &&
                  buf_put_urlencoded(&b, dc, false) == 0;
        free(url);
        url = ok ? buf_steal(&b) : NULL;
        if (!ok)
            buf_free(&b);
    }
    struct http_req *r = consul_request(s, "GET", url, CONSUL_UNARY_TIMEOUT_MS);
    if (!r || http_req_start(r, probe_done) < 0) {
        http_req_free(r);
        consul_fail(s, "checking read permission on '%s': cannot start a request",
                    consul_prefix(s));
        return;
    }
    s->req = r;
    s->phase = PH_QUERY;
}

/* ---- the query ---- */

static void query_done(struct http_req *r, const struct http_result *res) {
    uint64_t t_received = uv_hrtime(); /* what handling the answer costs sets the churn limit */
    struct consul *s = http_req_user(r);
    s->req = NULL;
    if (res->curl != CURLE_OK) {
        consul_fail(s, "reading '%s': %s", consul_prefix(s), res->error);
        return;
    }
    /* A token that may not read some keys does not get a 403 on a recurse:
     * Consul leaves those keys out and says so in a header. Such an answer
     * is not the whole prefix, and taking it as one would make the routes
     * of the hidden keys look deleted. */
    char filtered[16];
    bool hidden = http_result_header(res, "X-Consul-Results-Filtered-By-Acls", filtered,
                                     sizeof filtered) == 0 &&
                  strcasecmp(filtered, "true") == 0;
    if (res->status == 403 || hidden) {
        char text[200], reason[400];
        copy_text(text, sizeof text, res->body ? res->body : "", res->body ? res->body_len : 0);
        snprintf(reason, sizeof reason,
                 "ACL: permission denied reading %s (check the ACL token)%s%s", consul_prefix(s),
                 hidden ? ": Consul left keys out of the answer" : ": ", hidden ? "" : text);
        consul_fail_kind(s, FAIL_DENIED, reason);
        return;
    }
    if (res->status != 200 && res->status != 404) {
        char text[200];
        copy_text(text, sizeof text, res->body ? res->body : "", res->body ? res->body_len : 0);
        consul_fail(s, "reading '%s': HTTP %ld%s%s", consul_prefix(s), res->status,
                    text[0] ? ": " : "", text);
        return;
    }
    /* Consul sets the index before it writes a 404; a 404 without one comes
     * from something else (a proxy, a wrong path) and proves nothing. */
    char hdr[32];
    uint64_t index;
    if (http_result_header(res, "X-Consul-Index", hdr, sizeof hdr) != 0 ||
        consul_index_parse(hdr, &index) < 0) {
        consul_fail(s, "reading '%s': HTTP %ld without a valid X-Consul-Index header",
                    consul_prefix(s), res->status);
        return;
    }
    char policy[16];
    s->policy_deny =
        http_result_header(res, "X-Consul-Default-Acl-Policy", policy, sizeof policy) == 0 &&
        strcasecmp(policy, "deny") == 0;
    struct consul_list cur = {NULL, 0, NULL};
    char err[256];
    if (res->status == 200 &&
        consul_list_parse(res->body, res->body_len, &cur, err, sizeof err) < 0) {
        consul_fail(s, "reading '%s': bad answer: %s", consul_prefix(s), err);
        return;
    }
    warn_new(s, &cur);
    /* An answer that replaces everything or loses a key may be what a
     * token that may not read looks like: ask first (consul.h). */
    bool replaces = s->need_snapshot || !s->have_state || index < s->index;
    if (replaces || consul_list_drops(&s->state, &cur)) {
        s->held = cur;
        s->have_held = true;
        s->held_index = index;
        s->held_t = t_received;
        probe_begin(s);
        return;
    }
    consul_answer(s, &cur, index, t_received);
}

static void query_begin(struct consul *s) {
    const struct source_settings *cfg = s->base.cfg;
    bool blocking = !s->need_snapshot && !s->nonblocking_next && s->have_state;
    uint64_t index = blocking ? s->block_index : 0;
    /* Past wait plus Consul's jitter of up to wait/16, with room to spare. */
    long total = blocking ? (long)(s->wait_ms + s->wait_ms / 16 + 5000) : CONSUL_UNARY_TIMEOUT_MS;
    struct http_req *r =
        consul_request(s, "GET",
                       consul_url_list(cfg->address, consul_prefix(s), index, s->wait_ms,
                                       cfg->datacenter, cfg->consistency),
                       total);
    if (!r || http_req_start(r, query_done) < 0) {
        http_req_free(r);
        consul_fail(s, "reading '%s': cannot start a request", consul_prefix(s));
        return;
    }
    s->query_blocking = blocking;
    s->query_sent = uv_hrtime();
    s->req = r;
    s->phase = PH_QUERY;
}

/* Pick the next step; exactly one of them ends up in flight. */
static void consul_run(struct consul *s) {
    if (s->phase == PH_STOPPED)
        return;
    if (s->need_token)
        token_begin(s);
    else
        query_begin(s);
}

/* ---- status writes ---- */

static void put_unlink(struct consul_put *p) {
    struct consul *s = p->s;
    if (p->prev)
        p->prev->next = p->next;
    else
        s->puts = p->next;
    if (p->next)
        p->next->prev = p->prev;
    s->puts_running--;
}

static void put_free(struct consul_put *p) {
    free(p->key);
    free(p->value);
    free(p);
}

static void puts_pump(struct consul *s);

static void put_done(struct http_req *r, const struct http_result *res) {
    struct consul_put *p = http_req_user(r);
    struct consul *s = p->s;
    put_unlink(p);
    char msg[512];
    bool ok;
    if (res->curl != CURLE_OK) {
        snprintf(msg, sizeof msg, "writing %s: %s", p->key, res->error);
        ok = false;
    } else {
        ok = consul_put_result(res->status, res->body, res->body_len, p->key, msg, sizeof msg);
    }
    if (!ok)
        log_debug(s->base.log, "consul: %s", msg);
    if (p->done)
        p->done(p->user, ok, msg);
    put_free(p);
    puts_pump(s); /* a no-op once stopped: the queue is gone */
}

/* Start a queued write. Returns 0, or -1 with p untouched. */
static int put_start(struct consul *s, struct consul_put *p) {
    struct http_req *r = consul_request(s, "PUT", consul_url_key(s->base.cfg->address, p->key),
                                        CONSUL_UNARY_TIMEOUT_MS);
    /* As the Consul UI writes: the raw text, no check-and-set. */
    if (!r || http_req_header(r, "Content-Type: text/plain; charset=utf-8") < 0 ||
        http_req_body(r, p->value ? p->value : "", p->len) < 0) {
        http_req_free(r);
        return -1;
    }
    http_req_set_user(r, p);
    if (http_req_start(r, put_done) < 0) {
        http_req_free(r);
        return -1;
    }
    free(p->value); /* copied into the request */
    p->value = NULL;
    p->req = r;
    p->prev = NULL;
    p->next = s->puts;
    if (s->puts)
        s->puts->prev = p;
    s->puts = p;
    s->puts_running++;
    return 0;
}

/* Move queued writes into free slots. From a completion, so a write that
 * cannot start is reported through its callback. */
static void puts_pump(struct consul *s) {
    while (s->phase != PH_STOPPED && s->queue && s->puts_running < CONSUL_MAX_WRITES) {
        struct consul_put *p = s->queue;
        s->queue = p->next;
        if (!s->queue)
            s->queue_tail = NULL;
        p->next = NULL;
        if (put_start(s, p) < 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "writing %s: cannot start a request", p->key);
            if (p->done)
                p->done(p->user, false, msg);
            put_free(p);
        }
    }
}

static int consul_put(struct source *src, const char *key, const char *value, size_t len,
                      void (*done)(void *user, bool ok, const char *message), void *user) {
    struct consul *s = (struct consul *)src;
    if (s->phase == PH_STOPPED || !key || !*key)
        return -1;
    struct consul_put *p = calloc(1, sizeof *p);
    if (!p || !(p->key = strdup(key)) || !(p->value = malloc(len + 1))) {
        if (p)
            free(p->key);
        free(p);
        return -1;
    }
    if (len)
        memcpy(p->value, value, len);
    p->value[len] = '\0';
    p->len = len;
    p->s = s;
    p->done = done;
    p->user = user;
    if (!s->queue && s->puts_running < CONSUL_MAX_WRITES) {
        if (put_start(s, p) < 0) {
            put_free(p);
            return -1;
        }
        return 0;
    }
    if (s->queue_tail)
        s->queue_tail->next = p;
    else
        s->queue = p;
    s->queue_tail = p;
    log_debug(s->base.log, "consul: %zu writes in flight: %s queued", s->puts_running, key);
    return 0;
}

/* ---- source ops ---- */

static int consul_start(struct source *src) {
    struct consul *s = (struct consul *)src;
    if (s->phase != PH_IDLE)
        return -1;
    const struct source_settings *cfg = s->base.cfg;
    const char *dc = cfg->datacenter;
    log_info(s->base.log, "consul: starting on %s%s%s, prefix '%s', wait %" PRIu64 " ms",
             s->addr_log, dc && *dc ? ", datacenter " : "", dc && *dc ? dc : "", consul_prefix(s),
             s->wait_ms);
    s->need_snapshot = true;
    s->list_why = LIST_INITIAL;
    /* The file is read on every start, so a reload picks up a new token. */
    s->need_token = cfg->token_file && *cfg->token_file;
    consul_run(s);
    return 0;
}

static void consul_resync(struct source *src) {
    struct consul *s = (struct consul *)src;
    if (s->phase == PH_STOPPED)
        return;
    s->need_snapshot = true;
    if (s->have_state)
        s->list_why = LIST_RESYNC;
    /* Waiting or reading the token already ends in a snapshot. A query in
     * flight (maybe a blocking one for minutes) is dropped and re-made as a
     * plain read. */
    if (s->phase == PH_QUERY) {
        consul_abandon(s);
        consul_run_after(s, 0);
    }
}

static void consul_free(struct consul *s) {
    held_drop(s);
    secret_free(s->token);
    consul_list_free(&s->state);
    free(s);
}

static void consul_timer_closed(uv_handle_t *h) {
    struct consul *s = h->data;
    s->timer_closed = true;
    if (s->destroy_pending)
        consul_free(s);
}

static void consul_stop(struct source *src) {
    struct consul *s = (struct consul *)src;
    if (s->phase == PH_STOPPED)
        return;
    consul_abandon(s);
    s->phase = PH_STOPPED;
    while (s->puts) {
        struct consul_put *p = s->puts;
        put_unlink(p);
        http_req_cancel(p->req);
        put_free(p);
    }
    while (s->queue) {
        struct consul_put *p = s->queue;
        s->queue = p->next;
        put_free(p);
    }
    s->queue_tail = NULL;
    /* Its handles close on the loop; it frees itself after. */
    http_client_close(s->http);
    s->http = NULL;
    if (!uv_is_closing((uv_handle_t *)&s->timer))
        uv_close((uv_handle_t *)&s->timer, consul_timer_closed);
}

static void consul_destroy(struct source *src) {
    struct consul *s = (struct consul *)src;
    if (!s)
        return;
    consul_stop(src);
    if (s->timer_closed)
        consul_free(s);
    else
        s->destroy_pending = true; /* freed by the timer's close callback */
}

static const struct source_ops consul_ops = {
    .name = "consul",
    .start = consul_start,
    .resync = consul_resync,
    .put = consul_put,
    .stop = consul_stop,
    .destroy = consul_destroy,
};

struct source *source_consul_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                                 const struct source_settings *cfg,
                                 const struct source_callbacks *cb, char *err, size_t errlen) {
    const char *addr = cfg->address;
    bool https = addr && strncmp(addr, "https://", 8) == 0;
    if (!addr || (!https && strncmp(addr, "http://", 7) != 0)) {
        set_err(err, errlen, "source.address: '%s' is not an http:// or https:// URL",
                addr ? addr : "");
        return NULL;
    }
    if (!cfg->prefix) {
        set_err(err, errlen, "source.prefix is not set");
        return NULL;
    }
    /* Precedence as in Consul's own tools: explicit token, token file,
     * then the environment. */
    const char *token = cfg->token;
    if (!token && !(cfg->token_file && *cfg->token_file))
        token = getenv("CONSUL_HTTP_TOKEN");
    if (token && !token_valid(token, strlen(token))) {
        set_err(err, errlen, "%s holds characters that cannot be sent in an HTTP header",
                cfg->token ? "source.token" : "CONSUL_HTTP_TOKEN");
        return NULL;
    }

    struct consul *s = calloc(1, sizeof *s);
    if (!s) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    s->base.ops = &consul_ops;
    if (cb)
        s->base.cb = *cb;
    s->base.loop = loop;
    s->base.http = http;
    s->base.log = lg;
    s->base.cfg = cfg;
    s->phase = PH_IDLE;
    consul_address_redact(addr, s->addr_log, sizeof s->addr_log);
    if (token && *token && !(s->token = strdup(token))) {
        set_err(err, errlen, "out of memory");
        consul_free(s);
        return NULL;
    }
    s->wait_ms = cfg->wait_ms ? cfg->wait_ms : CONSUL_DEFAULT_WAIT_MS;
    if (s->wait_ms > CONSUL_MAX_WAIT_MS)
        s->wait_ms = CONSUL_MAX_WAIT_MS;
    uint64_t refill = s->wait_ms / 30;
    if (refill < CONSUL_IDLE_REFILL_MIN_MS)
        refill = CONSUL_IDLE_REFILL_MIN_MS;
    if (refill > CONSUL_IDLE_REFILL_MAX_MS)
        refill = CONSUL_IDLE_REFILL_MAX_MS;
    uint64_t now = uv_now(loop);
    tbucket_init(&s->idle, CONSUL_IDLE_BURST, refill, now);
    tbucket_init(&s->churn, CONSUL_CHURN_BURST, CONSUL_CHURN_REFILL_MIN_MS, now);

    const struct tls_files *t = &cfg->tls;
    s->use_tls = https;
    s->tls.ca_file = t->ca_file;
    s->tls.cert_file = t->cert_file;
    s->tls.key_file = t->key_file;
    s->tls.insecure = t->insecure_skip_verify;
    if (https && t->insecure_skip_verify)
        log_warn(lg, "consul: source.tls.insecure_skip_verify is set: the Consul server's "
                     "certificate is NOT verified");
    s->http = http_client_new(loop, lg);
    if (!s->http || http_client_limit_connections(s->http, CONSUL_MAX_CONNS) < 0) {
        set_err(err, errlen, "cannot create the HTTP client");
        http_client_close(s->http);
        consul_free(s);
        return NULL;
    }
    int rc = uv_timer_init(loop, &s->timer);
    if (rc < 0) {
        set_err(err, errlen, "uv_timer_init: %s", uv_strerror(rc));
        http_client_close(s->http);
        consul_free(s);
        return NULL;
    }
    s->timer.data = s;
    return &s->base;
}
