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
 * Consul's rules for blocking clients are followed to the letter: the index
 * comes from X-Consul-Index on every answer, 404 included (an empty prefix is
 * a successful read of nothing); an index lower than the previous one means a
 * snapshot restore and the answer replaces everything; the index blocked on
 * is never below 1. A returning query proves nothing changed, so requests
 * after unproductive answers and after errors draw from a small token bucket
 * (burst 2, as Consul's docs suggest), and requests after answers that
 * carried changes from a larger one whose refill follows what an answer
 * costs to handle: a UI edit or a script's run of edits goes through at
 * once, a key rewritten in a tight loop under a big prefix degrades to
 * polling instead of a busy loop. Errors also back off exponentially with
 * jitter.
 *
 * Re-entrancy, the timer, failures and the writes in flight follow the base
 * in source.h; the wire format (URLs, the answer parser, the diff, the index
 * rules) is consul_proto.c.
 *
 * The ACL token is a secret: it travels only in the X-Consul-Token header
 * and never reaches a log line or an error message. */
#include "sources/consul.h"

#include "bridge/lib/buf.h"
#include "bridge/lib/secret.h"
#include "bridge/lib/tbucket.h"
#include "bridge/lib/url.h"
#include "sources/consul_proto.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
};

struct consul {
    struct source base; /* first: the ops receive &base; base.http is our own client */
    char addr_log[256]; /* address without credentials, for logs */
    uint64_t wait_ms;
    char *token;     /* secret; never logged */
    bool need_token; /* (re-)read token_file before the next query */

    enum consul_phase phase;
    bool denied_reported; /* the 403 warning logged for the current outage */

    struct consul_list state; /* the last answer delivered */
    bool have_state;
    uint64_t index;       /* X-Consul-Index of that answer, as received */
    uint64_t block_index; /* the index to block on next (>= 1) */
    bool need_snapshot;   /* deliver the next answer as a snapshot */
    enum source_list_reason list_why;
    bool nonblocking_next; /* after an error: read at once, do not block */
    bool query_blocking;   /* the query in flight blocks on block_index */
    uint64_t query_sent;   /* uv_hrtime() when it was sent */

    struct tbucket idle, churn;
    size_t puts_running;    /* writes on base.puts */
    struct list_node queue; /* writes waiting for a slot, FIFO (struct source_put) */

    /* An answer held while the read permission probe is in flight. */
    struct consul_list held;
    bool have_held;
    uint64_t held_index, held_t;
    bool policy_deny; /* X-Consul-Default-Acl-Policy: deny, on the last answer */
};

static void consul_next_step(struct consul *s);

static const char *consul_prefix(const struct consul *s) {
    return s->base.cfg->prefix;
}

static void consul_timer_fired(struct source *src) {
    struct consul *s = (struct consul *)src;
    if (s->phase == PH_WAIT)
        consul_next_step(s);
}

static void held_drop(struct consul *s) {
    if (s->have_held)
        consul_list_free(&s->held);
    s->have_held = false;
}

/* The answer held for the probe goes with the probe (source_abandon). */
static void consul_abandon_held(struct source *src) {
    held_drop((struct consul *)src);
}

/* Run the next step after ms, outside whatever callback we are in. */
static void consul_next_step_after(struct consul *s, uint64_t ms) {
    s->phase = PH_WAIT;
    source_timer_arm(&s->base, ms);
}

/* A step failed: report the outage once, back off, then read again without
 * blocking, so that a server that came back with an older index (a restore)
 * is noticed at once rather than after a whole wait. SOURCE_FAULT_ACL is a
 * refused read: warned about once per outage, even one that began otherwise. */
static void consul_failed(struct source *src, enum source_fault fault, const char *reason) {
    struct consul *s = (struct consul *)src;
    bool denied = fault == SOURCE_FAULT_ACL;
    source_abandon(&s->base);
    s->nonblocking_next = true;
    if (denied && src->cfg->token_file)
        s->need_token = true; /* it may have been rotated */
    uint64_t delay = source_retry_delay(src, CONSUL_BACKOFF_BASE_MS, CONSUL_BACKOFF_MAX_MS);
    uint64_t limit = tbucket_reserve(&s->idle, uv_now(src->loop));
    if (limit > delay)
        delay = limit;
    consul_next_step_after(s, delay);
    bool report = source_went_down(src);
    if (denied && !s->denied_reported) {
        /* Worth a warning, and a state change the consumer counts as ACL,
         * even when the outage began with something else. */
        s->denied_reported = true;
        report = true;
        src->fault = SOURCE_FAULT_ACL;
        log_warn(src->log, "consul: %s: %s; retrying with backoff", s->addr_log, reason);
    } else if (report) {
        src->fault = SOURCE_FAULT_UNREACHABLE;
        log_warn(src->log, "consul: %s: %s; retrying with backoff", s->addr_log, reason);
    } else {
        log_debug(src->log, "consul: %s: %s; next try in %" PRIu64 " ms", s->addr_log, reason,
                  delay);
    }
    if (report)
        source_report_down(src, reason);
}

/* A request to url (heap, consumed) carrying the token; NULL on ENOMEM. */
static struct http_req *consul_request(struct consul *s, const char *method, char *url,
                                       long total_ms) {
    if (!url)
        return NULL;
    struct http_req *r = source_request(&s->base, method, url, total_ms, CONSUL_CONNECT_TIMEOUT_MS);
    free(url);
    if (!r)
        return NULL;
    /* Consul offers HTTP/2 first over TLS; curl would then multiplex the
     * blocking read and every write on one connection, where one stalled
     * stream or a server's stream limit holds up all of them. HTTP/1.1 on a
     * bounded pool is the path the tests run and Consul's own clients take. */
    http_req_http11(r);
    if (s->token && *s->token && source_header_secret(r, "X-Consul-Token", s->token) < 0) {
        http_req_free(r);
        return NULL;
    }
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

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void token_file_read(struct source *src, const char *data, size_t len) {
    struct consul *s = (struct consul *)src;
    const char *file = src->cfg->token_file;
    size_t start = 0, end = len;
    while (start < end && is_blank(data[start]))
        start++;
    while (end > start && is_blank(data[end - 1]))
        end--;
    char *tok = NULL;
    if (!token_valid(data + start, end - start)) {
        source_fail(src,
                    "source.token_file %s holds characters that cannot be sent in an HTTP "
                    "header",
                    file);
    } else if (end > start && !(tok = strndup(data + start, end - start))) {
        source_fail(src, "out of memory");
    } else {
        secret_free(s->token);
        s->token = tok; /* NULL: an empty file means the anonymous token */
        s->need_token = false;
        log_debug(src->log, "consul: read the ACL token from %s%s", file,
                  tok ? "" : " (empty: anonymous)");
        consul_next_step(s);
    }
}

/* Through libuv's fs requests: the loop never blocks on a slow disk. */
static void token_begin(struct consul *s) {
    if (source_read_file(&s->base, "source.token_file", s->base.cfg->token_file, token_file_read) ==
        0)
        s->phase = PH_TOKEN;
}

/* ---- delivering answers ---- */

/* Replace the state with cur and report it whole. Returns false when the
 * consumer stopped or re-directed the source from its callback. */
static bool deliver_snapshot(struct consul *s, struct consul_list *cur, uint64_t index,
                             enum consul_index_verdict v) {
    struct source_kv *kvs = calloc(cur->n ? cur->n : 1, sizeof *kvs);
    if (!kvs) {
        consul_list_free(cur);
        source_fail(&s->base, "out of memory");
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
    else if (s->list_why == SOURCE_LIST_INITIAL && !s->have_state)
        log_info(s->base.log,
                 "consul: initial list: %zu keys under '%s' at index %" PRIu64 " from %s", cur->n,
                 consul_prefix(s), index, s->addr_log);
    else
        log_debug(s->base.log, "consul: %s: %zu keys under '%s' at index %" PRIu64,
                  source_list_reason_name(s->list_why), cur->n, consul_prefix(s), index);
    struct consul_list old = s->state;
    s->state = *cur;
    s->have_state = true;
    s->need_snapshot = false;
    bool current = source_emit_snapshot(&s->base, kvs, cur->n, index);
    free(kvs);
    consul_list_free(&old);
    return current;
}

/* Report what changed from the state to cur, then make cur the state.
 * *changed tells whether anything did. Returns false as above. */
static bool deliver_changes(struct consul *s, struct consul_list *cur, uint64_t index,
                            bool *changed) {
    struct consul_change *ch;
    size_t n;
    if (consul_diff(&s->state, cur, index, &ch, &n) < 0) {
        consul_list_free(cur);
        source_fail(&s->base, "out of memory");
        return false;
    }
    *changed = n > 0;
    /* The changes point into both lists: keep the old one until done. */
    struct consul_list old = s->state;
    s->state = *cur;
    bool current = true;
    for (size_t i = 0; i < n && current; i++) {
        const struct consul_kv *kv = ch[i].kv;
        bool put = ch[i].type == SOURCE_PUT;
        struct source_kv skv = {kv->key, put ? kv->value : "", put ? kv->value_len : 0,
                                ch[i].revision};
        log_debug(s->base.log, "consul: %s %s at index %" PRIu64, put ? "put" : "delete", kv->key,
                  ch[i].revision);
        current = source_emit_event(&s->base, ch[i].type, &skv, ch[i].revision);
    }
    if (n == 0)
        log_debug(s->base.log, "consul: no change under '%s' at index %" PRIu64, consul_prefix(s),
                  index);
    free(ch);
    consul_list_free(&old);
    return current;
}

/* Up again after an answer: clear the outage. False as above. */
static bool consul_up(struct consul *s, uint64_t index) {
    if (s->base.ever_up)
        log_info(s->base.log, "consul: reconnected to %s at index %" PRIu64, s->addr_log, index);
    s->denied_reported = false;
    return source_report_up(&s->base);
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
    s->base.attempt = 0;
    if (!s->base.up && !consul_up(s, index)) {
        consul_list_free(cur);
        return;
    }
    bool changed = true;
    bool current =
        snapshot ? deliver_snapshot(s, cur, index, v) : deliver_changes(s, cur, index, &changed);
    /* Recorded even when the consumer redirected us mid-way: the state
     * already is this answer. */
    s->index = index;
    if (!current)
        return;
    uint64_t now = uv_now(s->base.loop);
    if (changed)
        tbucket_set_refill(&s->churn, consul_churn_refill_ms((uv_hrtime() - t_received) / 1000),
                           now);
    uint64_t delay = tbucket_reserve(changed ? &s->churn : &s->idle, now);
    if (delay == 0) {
        consul_next_step(s);
    } else {
        log_debug(s->base.log, "consul: rate limit: next query in %" PRIu64 " ms", delay);
        consul_next_step_after(s, delay);
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

/* ---- the read permission probe (consul_proto.h) ---- */

/* The body of an answer, made fit for a message. */
static void answer_text(const struct http_result *res, char *text, size_t textlen) {
    source_copy_text(text, textlen, res->body ? res->body : "", res->body ? res->body_len : 0);
}

static void probe_done(struct http_req *r, const struct http_result *res) {
    struct consul *s = http_req_user(r);
    if (!source_step_done(&s->base, res, "checking read permission on '%s'", consul_prefix(s)))
        return;
    enum consul_probe_verdict v = consul_probe_result(res->status);
    char text[200];
    answer_text(res, text, sizeof text);
    if (v == CONSUL_PROBE_DENIED) {
        char reason[600];
        bool anonymous = !s->token || !*s->token;
        snprintf(reason, sizeof reason,
                 "ACL: permission denied reading %s%s%s: the prefix cannot be read, so its "
                 "keys are not taken as deleted (give the token key_prefix \"%s\" read)%s%s",
                 consul_prefix(s),
                 anonymous ? " with the anonymous token (no token set, or an empty token_file)"
                           : "",
                 anonymous && s->policy_deny ? " under Consul's default ACL policy deny" : "",
                 consul_prefix(s), text[0] ? "; Consul: " : "", text);
        consul_failed(&s->base, SOURCE_FAULT_ACL, reason);
        return;
    }
    if (v == CONSUL_PROBE_ERROR) {
        source_fail(&s->base, "checking read permission on '%s': HTTP %ld%s%s", consul_prefix(s),
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
    if (source_step_start(&s->base, r, probe_done) < 0) {
        source_fail(&s->base, "checking read permission on '%s': cannot start a request",
                    consul_prefix(s));
        return;
    }
    s->phase = PH_QUERY;
}

/* ---- the query ---- */

/* A token that may not read some keys does not get a 403 on a recurse:
 * Consul leaves those keys out and says so in a header. Such an answer is
 * not the whole prefix, and taking it as one would make the routes of the
 * hidden keys look deleted. So both are refusals. */
static bool query_refused(struct consul *s, const struct http_result *res) {
    char filtered[16];
    bool hidden = http_result_header(res, "X-Consul-Results-Filtered-By-Acls", filtered,
                                     sizeof filtered) == 0 &&
                  strcasecmp(filtered, "true") == 0;
    if (res->status != 403 && !hidden)
        return false;
    char text[200], reason[400];
    answer_text(res, text, sizeof text);
    snprintf(reason, sizeof reason, "ACL: permission denied reading %s (check the ACL token)%s%s",
             consul_prefix(s), hidden ? ": Consul left keys out of the answer" : ": ",
             hidden ? "" : text);
    consul_failed(&s->base, SOURCE_FAULT_ACL, reason);
    return true;
}

static void query_done(struct http_req *r, const struct http_result *res) {
    uint64_t t_received = uv_hrtime(); /* what handling the answer costs sets the churn limit */
    struct consul *s = http_req_user(r);
    if (!source_step_done(&s->base, res, "reading '%s'", consul_prefix(s)) || query_refused(s, res))
        return;
    if (res->status != 200 && res->status != 404) {
        char text[200];
        answer_text(res, text, sizeof text);
        source_fail(&s->base, "reading '%s': HTTP %ld%s%s", consul_prefix(s), res->status,
                    text[0] ? ": " : "", text);
        return;
    }
    /* Consul sets the index before it writes a 404; a 404 without one comes
     * from something else (a proxy, a wrong path) and proves nothing. */
    char hdr[32];
    uint64_t index;
    if (http_result_header(res, "X-Consul-Index", hdr, sizeof hdr) != 0 ||
        consul_index_parse(hdr, &index) < 0) {
        source_fail(&s->base, "reading '%s': HTTP %ld without a valid X-Consul-Index header",
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
        source_fail(&s->base, "reading '%s': bad answer: %s", consul_prefix(s), err);
        return;
    }
    warn_new(s, &cur);
    /* An answer that replaces everything or loses a key may be what a
     * token that may not read looks like: ask first (consul_proto.h). */
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
    if (source_step_start(&s->base, r, query_done) < 0) {
        source_fail(&s->base, "reading '%s': cannot start a request", consul_prefix(s));
        return;
    }
    s->query_blocking = blocking;
    s->query_sent = uv_hrtime();
    s->phase = PH_QUERY;
}

/* Pick the next step; exactly one of them ends up in flight. */
static void consul_next_step(struct consul *s) {
    if (s->base.stopped)
        return;
    if (s->need_token)
        token_begin(s);
    else
        query_begin(s);
}

/* ---- status writes ----
 *
 * A write waits on s->queue (value held, no request) until one of
 * CONSUL_MAX_WRITES slots is free, then is in flight on base.puts. */

static void puts_pump(struct consul *s);

static void put_done(struct http_req *r, const struct http_result *res) {
    struct source_put *p = http_req_user(r);
    struct consul *s = (struct consul *)p->s;
    p->req = NULL;
    s->puts_running--;
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
    source_put_finish(p, ok, msg);
    puts_pump(s); /* a no-op once stopped: the queue is gone */
}

/* Start a queued write. Returns 0, or -1 with p untouched. */
static int put_start(struct consul *s, struct source_put *p) {
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
    list_push_front(&s->base.puts, &p->link);
    s->puts_running++;
    return 0;
}

/* Move queued writes into free slots. From a completion, so a write that
 * cannot start is reported through its callback. */
static void puts_pump(struct consul *s) {
    while (!s->base.stopped && !list_empty(&s->queue) && s->puts_running < CONSUL_MAX_WRITES) {
        struct source_put *p = list_entry(list_first(&s->queue), struct source_put, link);
        list_remove(&p->link);
        if (put_start(s, p) < 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "writing %s: cannot start a request", p->key);
            source_put_finish(p, false, msg);
        }
    }
}

static int consul_put(struct source *src, const char *key, const char *value, size_t len,
                      source_put_cb done, void *user) {
    struct consul *s = (struct consul *)src;
    struct source_put *p = key && *key ? source_put_new(src, key, value, len, done, user) : NULL;
    if (!p)
        return -1;
    if (list_empty(&s->queue) && s->puts_running < CONSUL_MAX_WRITES) {
        if (put_start(s, p) < 0) {
            source_put_free(p);
            return -1;
        }
        return 0;
    }
    list_push_back(&s->queue, &p->link);
    log_debug(src->log, "consul: %zu writes in flight: %s queued", s->puts_running, key);
    return 0;
}

/* ---- source ops ---- */

static void consul_start(struct source *src) {
    struct consul *s = (struct consul *)src;
    const struct source_settings *cfg = src->cfg;
    const char *dc = cfg->datacenter;
    log_info(src->log, "consul: starting on %s%s%s, prefix '%s', wait %" PRIu64 " ms", s->addr_log,
             dc && *dc ? ", datacenter " : "", dc && *dc ? dc : "", consul_prefix(s), s->wait_ms);
    s->need_snapshot = true;
    s->list_why = SOURCE_LIST_INITIAL;
    /* The file is read on every start, so a reload picks up a new token. */
    s->need_token = cfg->token_file && *cfg->token_file;
    consul_next_step(s);
}

static void consul_resync(struct source *src) {
    struct consul *s = (struct consul *)src;
    s->need_snapshot = true;
    if (s->have_state)
        s->list_why = SOURCE_LIST_RESYNC;
    /* Waiting or reading the token already ends in a snapshot. A query in
     * flight (maybe a blocking one for minutes) is dropped and re-made as a
     * plain read. */
    if (s->phase == PH_QUERY) {
        source_abandon(&s->base);
        consul_next_step_after(s, 0);
    }
}

static void consul_stop(struct source *src) {
    struct consul *s = (struct consul *)src;
    source_stop(src);
    source_puts_drop(&s->queue);
    s->puts_running = 0;
}

static void consul_free(struct source *src) {
    struct consul *s = (struct consul *)src;
    held_drop(s);
    secret_free(s->token);
    consul_list_free(&s->state);
    free(s);
}

/* name, start, resync, put, stop, close; then the base's hooks: start,
 * resync, timer_fired, abandon, failed, free (source.h). */
static const struct source_ops consul_ops = {
    "consul", source_start, source_resync, consul_put, consul_stop, source_close,
};
static const struct source_hooks consul_hooks = {consul_start,       consul_resync,
                                                 consul_timer_fired, consul_abandon_held,
                                                 consul_failed,      consul_free};

/* The idle bucket refills one token per wait/30, within its bounds. */
static uint64_t idle_refill_ms(uint64_t wait_ms) {
    uint64_t refill = wait_ms / 30;
    if (refill < CONSUL_IDLE_REFILL_MIN_MS)
        return CONSUL_IDLE_REFILL_MIN_MS;
    return refill > CONSUL_IDLE_REFILL_MAX_MS ? CONSUL_IDLE_REFILL_MAX_MS : refill;
}

struct source *consul_source_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                                 const struct source_settings *cfg,
                                 const struct source_callbacks *cb, char *err, size_t errlen) {
    (void)http; /* Consul gets a client of its own (CONSUL_MAX_CONNS) */
    const char *addr = cfg->address;
    enum url_scheme scheme = url_scheme(addr);
    if (scheme == URL_OTHER) {
        source_set_err(err, errlen, "source.address: '%s' is not an http:// or https:// URL",
                       addr ? addr : "");
        return NULL;
    }
    if (!cfg->prefix) {
        source_set_err(err, errlen, "source.prefix is not set");
        return NULL;
    }
    /* Precedence as in Consul's own tools: explicit token, token file,
     * then the environment. */
    const char *token = cfg->token;
    if (!token && !(cfg->token_file && *cfg->token_file))
        token = getenv("CONSUL_HTTP_TOKEN");
    if (token && !token_valid(token, strlen(token))) {
        source_set_err(err, errlen, "%s holds characters that cannot be sent in an HTTP header",
                       cfg->token ? "source.token" : "CONSUL_HTTP_TOKEN");
        return NULL;
    }

    struct consul *s = source_alloc(sizeof *s, err, errlen);
    if (!s)
        return NULL;
    list_init(&s->queue);
    consul_address_redact(addr, s->addr_log, sizeof s->addr_log);
    if (token && *token && !(s->token = strdup(token))) {
        source_set_err(err, errlen, "out of memory");
        consul_free(&s->base);
        return NULL;
    }
    s->wait_ms = cfg->wait_ms ? cfg->wait_ms : CONSUL_DEFAULT_WAIT_MS;
    if (s->wait_ms > CONSUL_MAX_WAIT_MS)
        s->wait_ms = CONSUL_MAX_WAIT_MS;
    uint64_t now = uv_now(loop);
    tbucket_init(&s->idle, CONSUL_IDLE_BURST, idle_refill_ms(s->wait_ms), now);
    tbucket_init(&s->churn, CONSUL_CHURN_BURST, CONSUL_CHURN_REFILL_MIN_MS, now);

    struct http_client *own = http_client_new(loop, lg);
    if (!own || http_client_limit_connections(own, CONSUL_MAX_CONNS) < 0) {
        source_set_err(err, errlen, "cannot create the HTTP client");
        http_client_close(own);
        consul_free(&s->base);
        return NULL;
    }
    if (source_init(&s->base, &consul_ops, &consul_hooks, loop, own, lg, cfg, cb, err, errlen) <
        0) {
        http_client_close(own);
        consul_free(&s->base);
        return NULL;
    }
    s->base.own_http = true;
    source_tls_setup(&s->base, scheme == URL_HTTPS, scheme == URL_HTTPS, "Consul");
    return &s->base;
}
