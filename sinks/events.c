/* events.c - rate-limited, aggregated Kubernetes Events; see events.h.
 *
 * State: two token-bucket kinds (one global, one per involved object, in a
 * bounded map), a bounded LRU of recent events ("series") for aggregation,
 * and the list of requests in flight. No uv handles: buckets refill lazily
 * from the loop's clock when an event arrives, and a series' pending count
 * is flushed when its request completes, so there is nothing to wait for on
 * close. */
#include "sinks/events.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/buf.h"
#include "bridge/map.h"
#include "sinks/informer.h"

#define EVENTS_REASON_MAX 128
#define EVENTS_HOST_MAX 128
#define EVENTS_NAME_MAX 253
#define EVENTS_FAILURE_LOG_MS (10 * 60 * 1000)

enum failure_kind {
    F_AUTH,
    F_NOT_FOUND,
    F_INVALID,
    F_THROTTLED,
    F_SERVER,
    F_TRANSPORT,
    F_OTHER,
    F_COUNT
};

struct bucket {
    double tokens;
    uint64_t last_ms;
};

struct ev_call;

/* One Event on the server and the occurrences folded into it. */
struct series {
    char *key;        /* the map key: object, uid, type, reason, message */
    char *ns;         /* the Event's namespace */
    char *event_name; /* NULL until the POST answered */
    int64_t count;    /* count on the server */
    unsigned pending; /* accepted occurrences not yet sent */
    char last_ts[32]; /* lastTimestamp of the newest occurrence */
    uint64_t last_ms; /* loop time of the newest occurrence */
    struct ev_call *call;
    struct series *newer, *older; /* LRU */
};

struct ev_call {
    struct event_recorder *rec;
    struct kube_call *call;
    struct series *s; /* NULL when the event could not be remembered */
    unsigned occurrences;
    bool patch;
    struct ev_call *prev, *next;
};

struct event_recorder {
    uv_loop_t *loop;
    struct kube_client *kc;
    struct logger *log;
    char *component, *host;
    struct events_limits lim;
    struct bucket global;
    struct map objects; /* "ns\x1fkind\x1fname" -> struct bucket * */
    struct map series;  /* series key -> struct series * */
    struct series *newest, *oldest;
    struct ev_call *calls;
    size_t in_flight;
    struct events_stats st;
    uint64_t failure_logged_ms[F_COUNT];
    bool failure_logged[F_COUNT];
    uint64_t last_name_ns; /* event names stay unique within a nanosecond */
    bool closed;
};

void events_limits_default(struct events_limits *lim) {
    lim->object_burst = 5;
    lim->object_refill_ms = 10000;
    lim->global_burst = 25;
    lim->global_refill_ms = 1000;
    lim->max_in_flight = 32;
    lim->aggregate_window_ms = 5 * 60 * 1000;
    lim->max_objects = 1024;
    lim->max_series = 256;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

void events_utf8_copy(char *out, size_t outlen, const char *s, size_t max) {
    if (outlen == 0)
        return;
    if (max > outlen - 1)
        max = outlen - 1;
    size_t n = strlen(s), i = 0, o = 0;
    while (i < n) {
        size_t len = utf8_seq((const unsigned char *)s + i, n - i);
        if (len == 0) { /* an invalid byte: one '?' for it */
            if (o + 1 > max)
                break;
            out[o++] = '?';
            i++;
            continue;
        }
        if (o + len > max)
            break;
        memcpy(out + o, s + i, len);
        o += len;
        i += len;
    }
    out[o] = '\0';
}

/* ---- time ---- */

static int rfc3339_now(char *out, size_t outlen) {
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || !gmtime_r(&ts.tv_sec, &tm) ||
        strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return -1;
    return 0;
}

/* client-go's name: "<object>.<hex wall-clock nanoseconds>", unique here. */
static int event_name(struct event_recorder *rec, const char *obj, char *out, size_t outlen) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (ns <= rec->last_name_ns)
        ns = rec->last_name_ns + 1;
    rec->last_name_ns = ns;
    char suffix[24];
    int sl = snprintf(suffix, sizeof suffix, ".%llx", (unsigned long long)ns);
    size_t keep = strlen(obj), room = EVENTS_NAME_MAX - (size_t)sl;
    if (keep > room)
        keep = room;
    while (keep && (obj[keep - 1] == '.' || obj[keep - 1] == '-'))
        keep--; /* a DNS subdomain has no ".." or "-." */
    int n = snprintf(out, outlen, "%.*s%s", (int)keep, obj, suffix);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/* ---- buckets ---- */

static void refill(struct bucket *b, unsigned burst, uint64_t refill_ms, uint64_t now) {
    if (now > b->last_ms) {
        b->tokens += (double)(now - b->last_ms) / (double)refill_ms;
        if (b->tokens > burst)
            b->tokens = burst;
    }
    b->last_ms = now;
}

/* Forget buckets that are full again: they are the same as new ones. */
static void objects_sweep(struct event_recorder *rec, uint64_t now) {
    struct map_iter it;
    map_iter_init(&it, &rec->objects);
    struct map_entry *me;
    while ((me = map_iter_next(&it))) {
        struct bucket *b = me->value;
        refill(b, rec->lim.object_burst, rec->lim.object_refill_ms, now);
        if (b->tokens >= rec->lim.object_burst) {
            free(map_del(&rec->objects, me->key));
        }
    }
}

static struct bucket *object_bucket(struct event_recorder *rec, const char *key, uint64_t now) {
    struct bucket *b = map_get(&rec->objects, key);
    if (b) {
        refill(b, rec->lim.object_burst, rec->lim.object_refill_ms, now);
        return b;
    }
    if (rec->objects.count >= rec->lim.max_objects) {
        objects_sweep(rec, now);
        if (rec->objects.count >= rec->lim.max_objects)
            return NULL;
    }
    b = malloc(sizeof *b);
    if (!b)
        return NULL;
    b->tokens = rec->lim.object_burst;
    b->last_ms = now;
    if (map_put(&rec->objects, key, b, NULL) < 0) {
        free(b);
        return NULL;
    }
    return b;
}

static void objects_clear(struct event_recorder *rec) {
    struct map_iter it;
    map_iter_init(&it, &rec->objects);
    struct map_entry *me;
    while ((me = map_iter_next(&it)))
        free(map_del(&rec->objects, me->key));
}

/* ---- series ---- */

static void lru_unlink(struct event_recorder *rec, struct series *s) {
    if (s->newer)
        s->newer->older = s->older;
    else if (rec->newest == s)
        rec->newest = s->older;
    if (s->older)
        s->older->newer = s->newer;
    else if (rec->oldest == s)
        rec->oldest = s->newer;
    s->newer = s->older = NULL;
}

static void lru_push(struct event_recorder *rec, struct series *s) {
    s->older = rec->newest;
    s->newer = NULL;
    if (rec->newest)
        rec->newest->newer = s;
    rec->newest = s;
    if (!rec->oldest)
        rec->oldest = s;
}

static void series_remove(struct event_recorder *rec, struct series *s) {
    if (s->call)
        s->call->s = NULL;
    map_del(&rec->series, s->key);
    lru_unlink(rec, s);
    free(s->key);
    free(s->ns);
    free(s->event_name);
    free(s);
}

static struct series *series_new(struct event_recorder *rec, const char *key, const char *ns,
                                 uint64_t now) {
    if (rec->series.count >= rec->lim.max_series) {
        struct series *victim = rec->oldest;
        while (victim && victim->call)
            victim = victim->newer;
        if (!victim)
            return NULL;
        series_remove(rec, victim);
    }
    struct series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->key = strdup(key);
    s->ns = strdup(ns);
    if (!s->key || !s->ns || map_put(&rec->series, key, s, NULL) < 0) {
        free(s->key);
        free(s->ns);
        free(s);
        return NULL;
    }
    s->last_ms = now;
    lru_push(rec, s);
    return s;
}

/* ---- failures ---- */

static enum failure_kind classify(long status) {
    if (status == 0)
        return F_TRANSPORT;
    if (status == 401 || status == 403)
        return F_AUTH;
    if (status == 404)
        return F_NOT_FOUND;
    if (status == 400 || status == 409 || status == 422)
        return F_INVALID;
    if (status == 429)
        return F_THROTTLED;
    if (status >= 500)
        return F_SERVER;
    return F_OTHER;
}

static void log_failure(struct event_recorder *rec, const struct kube_response *r, const char *ns,
                        bool patch) {
    enum failure_kind k = classify(r->status);
    uint64_t now = uv_now(rec->loop);
    if (rec->failure_logged[k] && now - rec->failure_logged_ms[k] < EVENTS_FAILURE_LOG_MS) {
        log_debug(rec->log, "events: %s in %s failed: HTTP %ld %s", patch ? "patch" : "post", ns,
                  r->status, r->reason);
        return;
    }
    rec->failure_logged[k] = true;
    rec->failure_logged_ms[k] = now;
    char d[400];
    if (r->status == 0)
        snprintf(d, sizeof d, "transport error: %s", r->error && *r->error ? r->error : "unknown");
    else
        snprintf(d, sizeof d, "HTTP %ld%s%s%s%.300s", r->status, *r->reason ? " " : "", r->reason,
                 *r->message ? ": " : "", r->message);
    const char *hint = k == F_AUTH        ? "; grant create and patch on events (deploy/rbac.yaml)"
                       : k == F_NOT_FOUND ? "; does the namespace exist?"
                                          : "";
    log_warn(rec->log,
             "events: cannot %s an event in namespace %s: %s%s (events are not retried; this kind "
             "of failure is logged once per 10 minutes and counted)",
             patch ? "update" : "post", ns, d, hint);
}

/* ---- requests ---- */

static void call_unlink(struct event_recorder *rec, struct ev_call *c) {
    if (c->prev)
        c->prev->next = c->next;
    else if (rec->calls == c)
        rec->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    rec->in_flight--;
}

static void on_done(void *user, const struct kube_response *r);

static struct ev_call *call_new(struct event_recorder *rec, struct series *s, unsigned occ,
                                bool patch) {
    struct ev_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->rec = rec;
    c->s = s;
    c->occurrences = occ;
    c->patch = patch;
    return c;
}

static void call_link(struct event_recorder *rec, struct ev_call *c) {
    c->next = rec->calls;
    if (rec->calls)
        rec->calls->prev = c;
    rec->calls = c;
    rec->in_flight++;
    if (c->s)
        c->s->call = c;
}

/* PATCH count and lastTimestamp of s's Event with its pending occurrences. */
static void send_patch(struct event_recorder *rec, struct series *s) {
    unsigned occ = s->pending;
    s->pending = 0;
    char path[600];
    buf_t body = BUF_INIT;
    struct ev_call *c = call_new(rec, s, occ, true);
    int n = snprintf(path, sizeof path, "/api/v1/namespaces/%s/events/%s", s->ns, s->event_name);
    if (!c || n < 0 || (size_t)n >= sizeof path ||
        buf_printf(&body, "{\"count\":%lld,\"lastTimestamp\":\"%s\"}", (long long)(s->count + occ),
                   s->last_ts) < 0 ||
        !(c->call = kube_request(rec->kc, "PATCH", path, "application/merge-patch+json", body.data,
                                 body.len, on_done, c))) {
        free(c);
        buf_free(&body);
        rec->st.failed += occ;
        log_debug(rec->log, "events: cannot start a patch (out of memory?)");
        series_remove(rec, s);
        return;
    }
    buf_free(&body);
    call_link(rec, c);
}

static void on_done(void *user, const struct kube_response *r) {
    struct ev_call *c = user;
    struct event_recorder *rec = c->rec;
    struct series *s = c->s;
    call_unlink(rec, c);
    if (s)
        s->call = NULL;
    bool ok = c->patch ? r->status == 200 : (r->status == 201 || r->status == 200);
    if (ok) {
        if (!c->patch) {
            rec->st.posted++;
            const char *name = kobj_str(r->json, "metadata", "name");
            if (s && (!name || !(s->event_name = strdup(name)))) {
                series_remove(rec, s); /* cannot aggregate into it: start anew next time */
                s = NULL;
            }
            if (s)
                s->count = c->occurrences;
        } else if (s) {
            s->count += c->occurrences;
        }
        if (s && s->pending && !rec->closed)
            send_patch(rec, s);
    } else {
        rec->st.failed += c->occurrences + (s ? s->pending : 0);
        if (c->patch && r->status == 404)
            log_debug(rec->log, "events: event %s/%s is gone; the next one starts a new series",
                      s ? s->ns : "?", s && s->event_name ? s->event_name : "?");
        else
            log_failure(rec, r, s ? s->ns : "?", c->patch);
        if (s)
            series_remove(rec, s);
    }
    free(c);
}

static cJSON *build_event(const struct event_recorder *rec, const char *evname, const char *ns,
                          const char *api_version, const char *kind, const char *name,
                          const char *uid, const char *type, const char *reason,
                          const char *message, const char *ts) {
    cJSON *ev = cJSON_CreateObject();
    cJSON *meta = ev ? cJSON_AddObjectToObject(ev, "metadata") : NULL;
    cJSON *io = ev ? cJSON_AddObjectToObject(ev, "involvedObject") : NULL;
    cJSON *src = ev ? cJSON_AddObjectToObject(ev, "source") : NULL;
    bool ok = meta && io && src && cJSON_AddStringToObject(ev, "apiVersion", "v1") &&
              cJSON_AddStringToObject(ev, "kind", "Event") &&
              cJSON_AddStringToObject(meta, "name", evname) &&
              cJSON_AddStringToObject(meta, "namespace", ns) &&
              (!api_version || cJSON_AddStringToObject(io, "apiVersion", api_version)) &&
              cJSON_AddStringToObject(io, "kind", kind) &&
              cJSON_AddStringToObject(io, "name", name) &&
              cJSON_AddStringToObject(io, "namespace", ns) &&
              (!uid || !*uid || cJSON_AddStringToObject(io, "uid", uid)) &&
              cJSON_AddStringToObject(ev, "reason", reason) &&
              cJSON_AddStringToObject(ev, "message", message) &&
              cJSON_AddStringToObject(ev, "type", type) &&
              cJSON_AddStringToObject(src, "component", rec->component) &&
              cJSON_AddStringToObject(src, "host", rec->host) &&
              cJSON_AddStringToObject(ev, "firstTimestamp", ts) &&
              cJSON_AddStringToObject(ev, "lastTimestamp", ts) &&
              cJSON_AddNumberToObject(ev, "count", 1) &&
              cJSON_AddStringToObject(ev, "reportingComponent", rec->component) &&
              cJSON_AddStringToObject(ev, "reportingInstance", rec->host);
    if (!ok) {
        cJSON_Delete(ev);
        return NULL;
    }
    return ev;
}

static void send_post(struct event_recorder *rec, struct series *s, const char *ns,
                      const char *api_version, const char *kind, const char *name, const char *uid,
                      const char *type, const char *reason, const char *message, const char *ts) {
    char evname[EVENTS_NAME_MAX + 1], path[400];
    int n = snprintf(path, sizeof path, "/api/v1/namespaces/%s/events", ns);
    cJSON *ev = NULL;
    struct ev_call *c = NULL;
    if (n < 0 || (size_t)n >= sizeof path || event_name(rec, name, evname, sizeof evname) < 0 ||
        !(ev = build_event(rec, evname, ns, api_version, kind, name, uid, type, reason, message,
                           ts)) ||
        !(c = call_new(rec, s, 1, false)) ||
        !(c->call = kube_request_json(rec->kc, "POST", path, ev, on_done, c))) {
        cJSON_Delete(ev);
        free(c);
        rec->st.dropped_other++;
        log_debug(rec->log, "events: cannot start a post (out of memory?)");
        if (s)
            series_remove(rec, s);
        return;
    }
    cJSON_Delete(ev);
    call_link(rec, c);
}

/* ---- API ---- */

struct event_recorder *events_new(uv_loop_t *loop, struct kube_client *kc, struct logger *lg,
                                  const char *component, const char *host) {
    struct event_recorder *rec = calloc(1, sizeof *rec);
    if (!rec)
        return NULL;
    rec->loop = loop;
    rec->kc = kc;
    rec->log = lg;
    char h[EVENTS_HOST_MAX + 1];
    events_utf8_copy(h, sizeof h, host ? host : "", EVENTS_HOST_MAX);
    rec->component = strdup(component && *component ? component : "canary-bridge");
    rec->host = strdup(h);
    if (!rec->component || !rec->host) {
        free(rec->component);
        free(rec->host);
        free(rec);
        return NULL;
    }
    events_limits_default(&rec->lim);
    rec->global.tokens = rec->lim.global_burst;
    rec->global.last_ms = uv_now(loop);
    return rec;
}

int events_set_limits(struct event_recorder *rec, const struct events_limits *lim) {
    if (!lim->object_burst || !lim->object_refill_ms || !lim->global_burst ||
        !lim->global_refill_ms || !lim->max_in_flight || !lim->max_objects || !lim->max_series)
        return -1;
    rec->lim = *lim;
    rec->global.tokens = lim->global_burst;
    rec->global.last_ms = uv_now(rec->loop);
    objects_clear(rec);
    return 0;
}

void events_post(struct event_recorder *rec, const char *ns, const char *api_version,
                 const char *kind, const char *name, const char *uid, const char *type,
                 const char *reason, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    events_vpost(rec, ns, api_version, kind, name, uid, type, reason, fmt, ap);
    va_end(ap);
}

void events_vpost(struct event_recorder *rec, const char *ns, const char *api_version,
                  const char *kind, const char *name, const char *uid, const char *type,
                  const char *reason, const char *fmt, va_list ap) {
    if (!rec || rec->closed)
        return;
    if (!kind || !*kind || !name || !*name || !reason || !*reason || !fmt) {
        rec->st.dropped_other++;
        log_debug(rec->log, "events: event without kind, name or reason dropped");
        return;
    }
    if (!ns || !*ns)
        ns = "default";
    type = type && strcmp(type, "Warning") == 0 ? "Warning" : "Normal";
    /* A few bytes over the limit so that a character crossing it is seen
     * whole and dropped whole. */
    char raw[EVENTS_MESSAGE_MAX + 4], msg[EVENTS_MESSAGE_MAX + 1], rsn[EVENTS_REASON_MAX + 1];
    int n = vsnprintf(raw, sizeof raw, fmt, ap);
    if (n < 0)
        raw[0] = '\0';
    events_utf8_copy(msg, sizeof msg, raw, EVENTS_MESSAGE_MAX);
    events_utf8_copy(rsn, sizeof rsn, reason, EVENTS_REASON_MAX);
    uint64_t now = uv_now(rec->loop);

    buf_t okey = BUF_INIT, skey = BUF_INIT;
    if (buf_printf(&okey, "%s\x1f%s\x1f%s", ns, kind, name) < 0 ||
        buf_printf(&skey, "%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s", okey.data, uid ? uid : "", type, rsn,
                   msg, api_version ? api_version : "") < 0) {
        rec->st.dropped_other++;
        goto out;
    }
    struct series *s = map_get(&rec->series, skey.data);
    if (s && !s->call && now - s->last_ms > rec->lim.aggregate_window_ms) {
        series_remove(rec, s); /* too old to count into: a new Event */
        s = NULL;
    }
    bool needs_request = !s || !s->call;
    refill(&rec->global, rec->lim.global_burst, rec->lim.global_refill_ms, now);
    struct bucket *ob = object_bucket(rec, okey.data, now);
    if (!ob) {
        rec->st.dropped_other++;
        log_debug(rec->log, "events: too many objects tracked; event on %s/%s dropped", ns, name);
        goto out;
    }
    if (ob->tokens < 1 || rec->global.tokens < 1) {
        rec->st.dropped_rate_limited++;
        log_debug(rec->log, "events: rate limit (%s); %s event %s on %s %s/%s dropped",
                  ob->tokens < 1 ? "per object" : "global", type, rsn, kind, ns, name);
        goto out;
    }
    if (needs_request && rec->in_flight >= rec->lim.max_in_flight) {
        rec->st.dropped_in_flight++;
        log_debug(rec->log, "events: %zu requests in flight; event %s on %s %s/%s dropped",
                  rec->in_flight, rsn, kind, ns, name);
        goto out;
    }
    char ts[32];
    if (rfc3339_now(ts, sizeof ts) < 0) {
        rec->st.dropped_other++;
        goto out;
    }
    ob->tokens -= 1;
    rec->global.tokens -= 1;
    if (s) {
        /* The same event again: count it into the existing one. */
        s->pending++;
        s->last_ms = now;
        memcpy(s->last_ts, ts, sizeof s->last_ts);
        lru_unlink(rec, s);
        lru_push(rec, s);
        rec->st.aggregated++;
        if (!s->call)
            send_patch(rec, s);
        goto out;
    }
    s = series_new(rec, skey.data, ns, now); /* NULL: posted, not remembered */
    if (s)
        memcpy(s->last_ts, ts, sizeof s->last_ts);
    send_post(rec, s, ns, api_version, kind, name, uid, type, rsn, msg, ts);
out:
    buf_free(&okey);
    buf_free(&skey);
}

void events_get_stats(const struct event_recorder *rec, struct events_stats *out) {
    *out = rec->st;
    out->in_flight = rec->in_flight;
}

uint64_t events_dropped(const struct event_recorder *rec) {
    return rec->st.dropped_rate_limited + rec->st.dropped_in_flight + rec->st.dropped_other;
}

void events_close(struct event_recorder *rec) {
    if (!rec || rec->closed)
        return;
    rec->closed = true;
    while (rec->calls) {
        struct ev_call *c = rec->calls;
        call_unlink(rec, c);
        if (c->s)
            c->s->call = NULL;
        rec->st.failed += c->occurrences;
        kube_call_cancel(c->call);
        free(c);
    }
}

void events_free(struct event_recorder *rec) {
    if (!rec)
        return;
    events_close(rec);
    while (rec->newest)
        series_remove(rec, rec->newest);
    map_free(&rec->series);
    objects_clear(rec);
    map_free(&rec->objects);
    free(rec->component);
    free(rec->host);
    free(rec);
}
