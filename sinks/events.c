/* events.c - rate-limited, aggregated Kubernetes Events; see events.h.
 *
 * State: two token-bucket kinds (one global, one per involved object, in a
 * bounded map), a bounded LRU of recent events ("series": one per object,
 * uid, type and reason) for aggregation, and the list of requests in flight.
 * Buckets refill lazily from the loop's clock. A series' pending occurrences
 * are flushed when its request completes, or, when the buckets are empty,
 * by one timer (created on first need, freed by its own close callback, so
 * events_free never waits for the loop). */
#include "sinks/events.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/list.h"
#include "bridge/lib/map.h"
#include "bridge/lib/timer.h"
#include "sinks/kobj.h"

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
    char *key;  /* the map key: object, uid, type, reason, apiVersion */
    char *okey; /* the object's bucket key */
    char *ns;   /* the Event's namespace */
    char *api_version, *kind, *name, *uid, *type, *reason; /* for the POST */
    char *msg;        /* the newest occurrence's message: what the Event says */
    char *event_name; /* NULL until the POST answered */
    int64_t count;    /* count on the server */
    unsigned pending; /* accepted occurrences not yet sent */
    char first_ts[32];
    char last_ts[32]; /* lastTimestamp of the newest occurrence */
    uint64_t last_ms; /* loop time of the newest occurrence */
    struct ev_call *call;
    struct list_node lru_link; /* in rec->lru */
};

struct ev_call {
    struct event_recorder *rec;
    struct kube_call *call;
    struct series *s; /* NULL when the event could not be remembered */
    unsigned occurrences;
    bool patch;
    struct list_node link; /* in rec->calls */
};

struct event_recorder {
    uv_loop_t *loop;
    struct kube_client *kc;
    struct logger *log;
    char *component, *host;
    struct events_limits lim;
    struct bucket global;
    struct map objects;     /* "ns\x1fkind\x1fname" -> struct bucket * */
    struct map series;      /* series key -> struct series * */
    struct list_node lru;   /* every series, oldest first */
    struct list_node calls; /* requests in flight (struct ev_call), newest first */
    size_t in_flight;
    struct events_stats st;
    uint64_t failure_logged_ms[F_COUNT];
    bool failure_logged[F_COUNT];
    uint64_t last_name_ns; /* event names stay unique within a nanosecond */
    uv_timer_t *timer;     /* flushes series held by the rate limits; NULL until needed */
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

static void bucket_refill(struct bucket *b, unsigned burst, uint64_t refill_ms, uint64_t now) {
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
        bucket_refill(b, rec->lim.object_burst, rec->lim.object_refill_ms, now);
        if (b->tokens >= rec->lim.object_burst) {
            free(map_del(&rec->objects, me->key));
        }
    }
}

static struct bucket *object_bucket(struct event_recorder *rec, const char *key, uint64_t now) {
    struct bucket *b = map_get(&rec->objects, key);
    if (b) {
        bucket_refill(b, rec->lim.object_burst, rec->lim.object_refill_ms, now);
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

static void lru_unlink(struct series *s) {
    list_remove(&s->lru_link);
}

/* s becomes the newest. */
static void lru_push(struct event_recorder *rec, struct series *s) {
    list_push_back(&rec->lru, &s->lru_link);
}

static void series_free(struct series *s) {
    free(s->key);
    free(s->okey);
    free(s->ns);
    free(s->api_version);
    free(s->kind);
    free(s->name);
    free(s->uid);
    free(s->type);
    free(s->reason);
    free(s->msg);
    free(s->event_name);
    free(s);
}

static void series_remove(struct event_recorder *rec, struct series *s) {
    if (s->call)
        s->call->s = NULL;
    map_del(&rec->series, s->key);
    lru_unlink(s);
    series_free(s);
}

static char *dup_or_null(const char *v, bool *ok) {
    if (!v)
        return NULL;
    char *c = strdup(v);
    if (!c)
        *ok = false;
    return c;
}

static struct series *series_new(struct event_recorder *rec, const char *key, const char *okey,
                                 const char *ns, const char *api_version, const char *kind,
                                 const char *name, const char *uid, const char *type,
                                 const char *reason, uint64_t now) {
    if (rec->series.count >= rec->lim.max_series) {
        struct series *victim = NULL;
        list_for_each(n, &rec->lru) {
            struct series *old = list_entry(n, struct series, lru_link);
            if (!old->call && !old->pending) {
                victim = old;
                break;
            }
        }
        if (!victim)
            return NULL;
        series_remove(rec, victim);
    }
    struct series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    list_init(&s->lru_link);
    bool ok = true;
    s->key = dup_or_null(key, &ok);
    s->okey = dup_or_null(okey, &ok);
    s->ns = dup_or_null(ns, &ok);
    s->api_version = dup_or_null(api_version, &ok);
    s->kind = dup_or_null(kind, &ok);
    s->name = dup_or_null(name, &ok);
    s->uid = dup_or_null(uid, &ok);
    s->type = dup_or_null(type, &ok);
    s->reason = dup_or_null(reason, &ok);
    if (!ok || map_put(&rec->series, key, s, NULL) < 0) {
        series_free(s);
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
    list_remove(&c->link);
    rec->in_flight--;
}

static void on_event_answer(void *user, const struct kube_response *r);

static struct ev_call *call_new(struct event_recorder *rec, struct series *s, unsigned occ,
                                bool patch) {
    struct ev_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->rec = rec;
    list_init(&c->link);
    c->s = s;
    c->occurrences = occ;
    c->patch = patch;
    return c;
}

static void call_link(struct event_recorder *rec, struct ev_call *c) {
    list_push_front(&rec->calls, &c->link);
    rec->in_flight++;
    if (c->s)
        c->s->call = c;
}

static void series_flush(struct event_recorder *rec, struct series *s, uint64_t now);
static cJSON *build_event(const struct event_recorder *rec, const char *evname,
                          const struct series *s, unsigned count);

/* Send s's pending occurrences: a PATCH of its Event (count, lastTimestamp
 * and the newest message), or its first POST. */
static void send_series(struct event_recorder *rec, struct series *s) {
    unsigned occ = s->pending;
    bool patch = s->event_name != NULL;
    char evname[EVENTS_NAME_MAX + 1], path[700];
    int n =
        patch ? snprintf(path, sizeof path, "/api/v1/namespaces/%s/events/%s", s->ns, s->event_name)
              : snprintf(path, sizeof path, "/api/v1/namespaces/%s/events", s->ns);
    cJSON *body = NULL;
    struct ev_call *c = NULL;
    bool ok = n > 0 && (size_t)n < sizeof path;
    if (ok && patch) {
        body = cJSON_CreateObject();
        ok = body && cJSON_AddNumberToObject(body, "count", (double)(s->count + occ)) &&
             cJSON_AddStringToObject(body, "lastTimestamp", s->last_ts) &&
             cJSON_AddStringToObject(body, "message", s->msg ? s->msg : "");
    } else if (ok) {
        ok = event_name(rec, s->name, evname, sizeof evname) == 0 &&
             (body = build_event(rec, evname, s, occ)) != NULL;
    }
    char *text = ok ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    if (!text || !(c = call_new(rec, s, occ, patch)) ||
        !(c->call = kube_request(rec->kc, patch ? "PATCH" : "POST", path,
                                 patch ? "application/merge-patch+json" : NULL, text, strlen(text),
                                 on_event_answer, c))) {
        cJSON_free(text);
        free(c);
        rec->st.dropped_other += occ;
        log_debug(rec->log, "events: cannot start a %s (out of memory?)", patch ? "patch" : "post");
        series_remove(rec, s);
        return;
    }
    cJSON_free(text);
    s->pending = 0;
    call_link(rec, c);
}

static void on_timer_closed(uv_handle_t *h) {
    free(h);
}

static void on_flush_timer(uv_timer_t *t) {
    struct event_recorder *rec = t->data;
    uint64_t now = uv_now(rec->loop);
    /* Oldest first; flush may remove a series, so step before calling it. */
    list_for_each_safe(n, next, &rec->lru) {
        struct series *s = list_entry(n, struct series, lru_link);
        if (s->pending && !s->call)
            series_flush(rec, s, now);
        if (rec->closed)
            return;
    }
}

/* A series waits for tokens: wake up when the next one is due. */
static void flush_timer_arm(struct event_recorder *rec) {
    if (rec->closed)
        return;
    if (!rec->timer) {
        rec->timer = malloc(sizeof *rec->timer);
        if (!rec->timer || uv_timer_init(rec->loop, rec->timer) != 0) {
            free(rec->timer);
            rec->timer = NULL;
            return; /* flushed by the next occurrence or answer instead */
        }
        rec->timer->data = rec;
    }
    if (uv_is_active((uv_handle_t *)rec->timer))
        return;
    uint64_t ms = rec->lim.object_refill_ms < rec->lim.global_refill_ms ? rec->lim.object_refill_ms
                                                                        : rec->lim.global_refill_ms;
    timer_arm(rec->timer, on_flush_timer, ms ? ms : 1, 0);
}

/* Send s's pending occurrences when the buckets and the in-flight cap allow;
 * otherwise they wait (newer ones fold in) for the timer: the newest state is
 * late, never lost. */
static void series_flush(struct event_recorder *rec, struct series *s, uint64_t now) {
    if (!s->pending || s->call || rec->closed)
        return;
    bucket_refill(&rec->global, rec->lim.global_burst, rec->lim.global_refill_ms, now);
    struct bucket *ob = object_bucket(rec, s->okey, now);
    if (!ob || ob->tokens < 1 || rec->global.tokens < 1 ||
        rec->in_flight >= rec->lim.max_in_flight) {
        log_debug(rec->log, "events: %s event %s on %s %s/%s waits (%s)", s->type, s->reason,
                  s->kind, s->ns, s->name,
                  !ob || ob->tokens < 1    ? "per-object rate limit"
                  : rec->global.tokens < 1 ? "global rate limit"
                                           : "requests in flight");
        rec->st.deferred++;
        flush_timer_arm(rec);
        return;
    }
    ob->tokens -= 1;
    rec->global.tokens -= 1;
    send_series(rec, s);
}

static void on_event_answer(void *user, const struct kube_response *r) {
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
    } else if (c->patch && r->status == 404 && s) {
        /* The Event is gone (expired, deleted): its occurrences start a new one. */
        log_debug(rec->log, "events: event %s/%s is gone; posting a new one", s->ns,
                  s->event_name ? s->event_name : "?");
        free(s->event_name);
        s->event_name = NULL;
        s->count = 0;
        s->pending += c->occurrences;
    } else {
        rec->st.failed += c->occurrences + (s ? s->pending : 0);
        log_failure(rec, r, s ? s->ns : "?", c->patch);
        if (s)
            series_remove(rec, s);
        s = NULL;
    }
    if (s && s->pending && !rec->closed)
        series_flush(rec, s, uv_now(rec->loop));
    free(c);
}

static cJSON *build_event(const struct event_recorder *rec, const char *evname,
                          const struct series *s, unsigned count) {
    cJSON *ev = cJSON_CreateObject();
    cJSON *meta = ev ? cJSON_AddObjectToObject(ev, "metadata") : NULL;
    cJSON *io = ev ? cJSON_AddObjectToObject(ev, "involvedObject") : NULL;
    cJSON *src = ev ? cJSON_AddObjectToObject(ev, "source") : NULL;
    bool ok = meta && io && src && cJSON_AddStringToObject(ev, "apiVersion", "v1") &&
              cJSON_AddStringToObject(ev, "kind", "Event") &&
              cJSON_AddStringToObject(meta, "name", evname) &&
              cJSON_AddStringToObject(meta, "namespace", s->ns) &&
              (!s->api_version || cJSON_AddStringToObject(io, "apiVersion", s->api_version)) &&
              cJSON_AddStringToObject(io, "kind", s->kind) &&
              cJSON_AddStringToObject(io, "name", s->name) &&
              cJSON_AddStringToObject(io, "namespace", s->ns) &&
              (!s->uid || !*s->uid || cJSON_AddStringToObject(io, "uid", s->uid)) &&
              cJSON_AddStringToObject(ev, "reason", s->reason) &&
              cJSON_AddStringToObject(ev, "message", s->msg ? s->msg : "") &&
              cJSON_AddStringToObject(ev, "type", s->type) &&
              cJSON_AddStringToObject(src, "component", rec->component) &&
              cJSON_AddStringToObject(src, "host", rec->host) &&
              cJSON_AddStringToObject(ev, "firstTimestamp", s->first_ts) &&
              cJSON_AddStringToObject(ev, "lastTimestamp", s->last_ts) &&
              cJSON_AddNumberToObject(ev, "count", count) &&
              cJSON_AddStringToObject(ev, "reportingComponent", rec->component) &&
              cJSON_AddStringToObject(ev, "reportingInstance", rec->host);
    if (!ok) {
        cJSON_Delete(ev);
        return NULL;
    }
    return ev;
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
    list_init(&rec->lru);
    list_init(&rec->calls);
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
    /* Similar events (same object, uid, type and reason) are one series, one
     * Event: its message is the newest occurrence's, so the Event always says
     * the latest state however fast they come. */
    if (buf_printf(&okey, "%s\x1f%s\x1f%s", ns, kind, name) < 0 ||
        buf_printf(&skey, "%s\x1f%s\x1f%s\x1f%s\x1f%s", okey.data, uid ? uid : "", type, rsn,
                   api_version ? api_version : "") < 0) {
        rec->st.dropped_other++;
        goto out;
    }
    char ts[32];
    if (rfc3339_now(ts, sizeof ts) < 0) {
        rec->st.dropped_other++;
        goto out;
    }
    struct series *s = map_get(&rec->series, skey.data);
    if (s && !s->call && !s->pending && now - s->last_ms > rec->lim.aggregate_window_ms) {
        series_remove(rec, s); /* too old to count into: a new Event */
        s = NULL;
    }
    if (!s) {
        s = series_new(rec, skey.data, okey.data, ns, api_version, kind, name, uid, type, rsn, now);
        if (!s) {
            rec->st.dropped_other++;
            log_debug(rec->log, "events: cannot track event %s on %s %s/%s; dropped", rsn, kind, ns,
                      name);
            goto out;
        }
        memcpy(s->first_ts, ts, sizeof s->first_ts);
    } else {
        rec->st.aggregated++; /* counted into an existing (or coming) Event */
    }
    char *m = strdup(msg);
    if (!m) {
        rec->st.dropped_other++;
        goto out;
    }
    free(s->msg);
    s->msg = m;
    s->pending++;
    s->last_ms = now;
    memcpy(s->last_ts, ts, sizeof s->last_ts);
    lru_unlink(s);
    lru_push(rec, s);
    series_flush(rec, s, now); /* or later: the request in flight or the timer sends it */
out:
    buf_free(&okey);
    buf_free(&skey);
}

void events_get_stats(const struct event_recorder *rec, struct events_stats *out) {
    *out = rec->st;
    out->in_flight = rec->in_flight;
}

uint64_t events_dropped(const struct event_recorder *rec) {
    return rec->st.dropped_other;
}

void events_close(struct event_recorder *rec) {
    if (!rec || rec->closed)
        return;
    rec->closed = true;
    if (rec->timer) {
        uv_close((uv_handle_t *)rec->timer, on_timer_closed); /* frees it */
        rec->timer = NULL;
    }
    list_for_each(n, &rec->lru) {
        struct series *s = list_entry(n, struct series, lru_link);
        rec->st.failed += s->pending; /* never sent */
        s->pending = 0;
    }
    while (!list_empty(&rec->calls)) {
        struct ev_call *c = list_entry(list_first(&rec->calls), struct ev_call, link);
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
    while (!list_empty(&rec->lru))
        series_remove(rec, list_entry(list_first(&rec->lru), struct series, lru_link));
    map_free(&rec->series);
    objects_clear(rec);
    map_free(&rec->objects);
    free(rec->component);
    free(rec->host);
    free(rec);
}
