/* test_consul.c - the Consul source (sources/consul.c) end to end: the real
 * libuv + libcurl path against a scripted Consul agent (fakehttp.h).
 *
 * The runs go through Consul's documented behaviour: a 404 with an index on
 * an empty prefix, blocking answers with and without changes, an index going
 * backwards, 500 and 403 outages, ACL tokens from config, file and
 * environment, the anonymous token under default-deny, status writes and a
 * resync; and they check that a server answering at once with no change is
 * not hammered. The pure protocol code is tested in test_consul_proto.c. */
/* cmocka.h needs these three before it. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/lib/base64.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/http.h"
#include "bridge/lib/timer.h"
#include "sources/consul.h"

#include "fakehttp.h"

/* ---- the fake agent ---- */

struct fake {
    uv_loop_t *loop;
    struct fakehttp srv;
    int step;        /* index of the next read request */
    uint64_t at[16]; /* uv_now() of each read request */
    struct logger log;
    FILE *logf;
    struct source_settings cfg;
    char url[64];
    struct http_client *http;
    struct source *src;
    uv_timer_t deadline, end_timer;
    bool end_timer_used;
    buf_t seen; /* what the consumer saw, one line per callback */
    bool done;
    int puts_done;
    const char *want_token; /* X-Consul-Token every request must carry (NULL: none) */
    int probes;             /* single-key reads of the prefix (the read permission check) */
    int probe_status[8];    /* what the n-th one gets; 0 = 404 */
    void (*dispatch)(struct fake *f, struct fakehttp_conn *c, const struct fakehttp_req *rq);
};

/* An answer as Consul gives it; index < 0 leaves X-Consul-Index out. */
static void reply(struct fakehttp_conn *c, int status, long long index, const char *body) {
    buf_t b = BUF_INIT;
    assert_int_equal(buf_printf(&b, "HTTP/1.1 %d X\r\nContent-Type: %s\r\n", status,
                                status == 200 && body[0] == '[' ? "application/json"
                                                                : "text/plain; charset=utf-8"),
                     0);
    if (index >= 0)
        assert_int_equal(
            buf_printf(&b, "X-Consul-Index: %lld\r\nX-Consul-Knownleader: true\r\n", index), 0);
    assert_int_equal(buf_printf(&b, "Content-Length: %zu\r\n\r\n%s", strlen(body), body), 0);
    fakehttp_send(c, b.data, b.len);
    buf_free(&b);
}

/* A JSON entry of a recurse answer; value NULL = null. Heap. */
static char *entry(const char *key, const char *value, int modify_index) {
    char *v = value ? base64_encode(value, strlen(value)) : NULL;
    buf_t b = BUF_INIT;
    assert_int_equal(buf_printf(&b,
                                "{\"LockIndex\":0,\"Key\":\"%s\",\"Flags\":0,\"Value\":%s%s%s,"
                                "\"CreateIndex\":%d,\"ModifyIndex\":%d}",
                                key, v ? "\"" : "", v ? v : "null", v ? "\"" : "", modify_index,
                                modify_index),
                     0);
    free(v);
    return buf_steal(&b);
}

/* A recurse answer from up to four entries (heap strings, consumed). */
static char *answer(char *e1, char *e2, char *e3, char *e4) {
    char *es[] = {e1, e2, e3, e4};
    buf_t b = BUF_INIT;
    assert_int_equal(buf_putc(&b, '['), 0);
    bool first = true;
    for (size_t i = 0; i < 4; i++) {
        if (!es[i])
            continue;
        assert_int_equal(buf_printf(&b, "%s%s", first ? "" : ",", es[i]), 0);
        first = false;
        free(es[i]);
    }
    assert_int_equal(buf_putc(&b, ']'), 0);
    return buf_steal(&b);
}

static void reply_answer(struct fakehttp_conn *c, long long index, char *json) {
    reply(c, 200, index, json);
    free(json);
}

static void check_token(struct fake *f, const struct fakehttp_req *rq) {
    char tok[128];
    char *got = fakehttp_header(rq, "X-Consul-Token", tok, sizeof tok);
    if (!f->want_token) {
        assert_null(got);
        return;
    }
    if (!got)
        fail_msg("%s %s without X-Consul-Token", rq->method, rq->target);
    assert_string_equal(got, f->want_token);
}

#define ANON_DENIED                                                                                \
    "Permission denied: anonymous token lacks permission 'key:read' on \"canary/\". The "          \
    "anonymous token is used implicitly when a request does not specify a token."

/* The read permission check: 404 (readable, no such key) unless told. */
static void probe_reply(struct fake *f, struct fakehttp_conn *c) {
    int n = f->probes++;
    int status = n < 8 && f->probe_status[n] ? f->probe_status[n] : 404;
    reply(c, status, status == 404 ? 30 : -1, status == 403 ? ANON_DENIED : "");
}

/* Every request must carry the token; the read permission check is
 * answered here, everything else by the test's script. */
static void fake_serve(struct fakehttp *srv, struct fakehttp_conn *c,
                       const struct fakehttp_req *rq) {
    struct fake *f = srv->data;
    check_token(f, rq);
    if (strcmp(rq->method, "GET") == 0 && (strcmp(rq->target, "/v1/kv/canary/") == 0 ||
                                           strncmp(rq->target, "/v1/kv/canary/?dc=", 18) == 0))
        probe_reply(f, c);
    else
        f->dispatch(f, c, rq);
}

/* Stop everything, possibly from inside a source callback. Stopping twice
 * must be harmless. */
static void fake_finish(struct fake *f) {
    if (f->done)
        return;
    f->done = true;
    f->src->ops->stop(f->src);
    f->src->ops->stop(f->src);
    f->src->ops->close(f->src); /* freed as the loop runs on */
    http_client_close(f->http);
    fakehttp_close(&f->srv);
    uv_close((uv_handle_t *)&f->deadline, NULL);
    if (f->end_timer_used)
        uv_close((uv_handle_t *)&f->end_timer, NULL);
}

/* Print a value with its control bytes visible, so "\n" shows. */
static void seen_value(struct fake *f, const char *v, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch == '\n')
            buf_puts(&f->seen, "\\n");
        else if (ch < 0x20 || ch >= 0x7f)
            buf_printf(&f->seen, "\\x%02x", ch);
        else
            buf_putc(&f->seen, (char)ch);
    }
}

static void on_snapshot(void *user, const struct source_kv *kvs, size_t n, uint64_t rev) {
    struct fake *f = user;
    buf_printf(&f->seen, "snapshot %llu:", (unsigned long long)rev);
    for (size_t i = 0; i < n; i++) {
        buf_printf(&f->seen, " %s=", kvs[i].key);
        seen_value(f, kvs[i].value, kvs[i].value_len);
        buf_printf(&f->seen, "@%llu", (unsigned long long)kvs[i].revision);
    }
    buf_puts(&f->seen, "\n");
}

static void on_event(void *user, enum source_event_type t, const struct source_kv *kv,
                     uint64_t rev) {
    struct fake *f = user;
    buf_printf(&f->seen, "%s %s=", t == SOURCE_PUT ? "put" : "delete", kv->key);
    seen_value(f, kv->value, kv->value_len);
    assert_int_equal(kv->revision, rev);
    buf_printf(&f->seen, "@%llu\n", (unsigned long long)rev);
}

static void on_state(void *user, bool up, const char *reason) {
    struct fake *f = user;
    if (up) {
        assert_null(reason);
        buf_puts(&f->seen, "up\n");
    } else {
        assert_non_null(reason);
        buf_printf(&f->seen, "down: %s\n", reason);
    }
}

static void fake_deadline(uv_timer_t *t) {
    struct fake *f = t->data;
    fake_finish(f);
    fail_msg("fake Consul test timed out at step %d; seen:\n%s", f->step,
             f->seen.data ? f->seen.data : "");
}

/* Set up loop, fake server, logger (into a temp file), client and source. */
static void fake_setup(struct fake *f, uv_loop_t *loop,
                       void (*dispatch)(struct fake *, struct fakehttp_conn *,
                                        const struct fakehttp_req *)) {
    memset(f, 0, sizeof *f);
    assert_int_equal(uv_loop_init(loop), 0);
    f->loop = loop;
    f->dispatch = dispatch;
    fakehttp_start(&f->srv, loop, fake_serve, f);

    f->logf = tmpfile();
    assert_non_null(f->logf);
    logger_init(&f->log, LOG_LVL_DEBUG);
    f->log.journal = false;
    f->log.out = f->logf;
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d/", f->srv.port);
    f->cfg.type = SOURCE_CONSUL;
    f->cfg.address = f->url;
    f->cfg.prefix = "canary/";
    f->cfg.wait_ms = 2000; /* the idle bucket's floor: 1 token/s */
    f->http = http_client_new(loop, &f->log);
    assert_non_null(f->http);
    assert_int_equal(uv_timer_init(loop, &f->deadline), 0);
    f->deadline.data = f;
    timer_arm(&f->deadline, fake_deadline, 10000, 0);
}

static void fake_make_source(struct fake *f) {
    struct source_callbacks cb = {on_snapshot, on_event, on_state, f};
    char err[128];
    f->src = source_new(f->loop, f->http, &f->log, &f->cfg, &cb, err, sizeof err);
    if (!f->src)
        fail_msg("source_new: %s", err);
    assert_string_equal(f->src->ops->name, "consul");
}

/* Run until finished; the log must not hold the secret. */
static void fake_run(struct fake *f, const char *secret) {
    assert_int_equal(f->src->ops->start(f->src), 0);
    assert_int_equal(f->src->ops->start(f->src), -1); /* once only */
    assert_int_equal(uv_run(f->loop, UV_RUN_DEFAULT), 0);
    /* Every handle, including the client's and the source's, is closed. */
    assert_int_equal(uv_loop_close(f->loop), 0);
    if (secret) {
        rewind(f->logf);
        char line[2048];
        while (fgets(line, sizeof line, f->logf))
            if (strstr(line, secret))
                fail_msg("the token leaked into the log: %s", line);
        if (f->seen.data && strstr(f->seen.data, secret))
            fail_msg("the token leaked into a callback: %s", f->seen.data);
    }
}

static int log_count(struct fake *f, const char *level, const char *text) {
    rewind(f->logf);
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f->logf))
        if ((!level || strstr(line, level)) && strstr(line, text))
            n++;
    return n;
}

/* ---- the main script ---- */

#define SECRET "s3cr3t-0d1c-4f2a"
#define K_W "canary/default/shop/weights"
#define K_H "canary/default/shop/headers"
#define K_R "canary/default/shop/route"
#define BASE "/v1/kv/canary/?recurse"

static void put_done(void *user, bool ok, const char *message) {
    struct fake *f = user;
    buf_printf(&f->seen, "put %s: %s\n", ok ? "ok" : "failed", message);
    /* All three answered: resync, which must drop the blocking query. */
    if (++f->puts_done == 3)
        f->src->ops->resync(f->src);
}

static void main_writes(struct fake *f, struct fakehttp_conn *c, const struct fakehttp_req *rq) {
    char ct[64];
    assert_non_null(fakehttp_header(rq, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "text/plain; charset=utf-8");
    assert_string_equal(rq->body, "{\"state\":\"applied\"}\n");
    assert_int_equal(rq->body_len, 20);
    (void)f;
    if (strcmp(rq->target, "/v1/kv/canary/default/shop/status") == 0)
        reply(c, 200, -1, "true");
    else if (strcmp(rq->target, "/v1/kv/canary/default/locked%20x/status") == 0)
        reply(c, 200, -1, "false");
    else if (strcmp(rq->target, "/v1/kv/canary/denied/x/status") == 0)
        reply(c, 403, -1, "Permission denied: token with AccessorID 'a1' lacks permission");
    else
        fail_msg("unexpected write to %s", rq->target);
}

static void main_dispatch(struct fake *f, struct fakehttp_conn *c, const struct fakehttp_req *rq) {
    if (strcmp(rq->method, "PUT") == 0) {
        main_writes(f, c, rq);
        return;
    }
    assert_string_equal(rq->method, "GET");
    int step = f->step++;
    assert_true(step < 16);
    f->at[step] = uv_now(f->loop);
    switch (step) {
    case 0: /* the initial list: no index; the prefix is empty (404 + index) */
        assert_string_equal(rq->target, BASE "&dc=dc2&stale");
        reply(c, 404, 7, "");
        break;
    case 1: /* blocking on 7: a key appears, beside a UI folder */
        assert_string_equal(rq->target, BASE "&index=7&wait=2s&dc=dc2&stale");
        reply_answer(c, 9,
                     answer(entry("canary/", NULL, 3), entry(K_W, "shop-v1=90\n", 9), NULL, NULL));
        break;
    case 2: /* blocking on 9: back at once with nothing new (a wake, or a restore) */
        assert_string_equal(rq->target, BASE "&index=9&wait=2s&dc=dc2&stale");
        reply_answer(c, 9,
                     answer(entry("canary/", NULL, 3), entry(K_W, "shop-v1=90\n", 9), NULL, NULL));
        break;
    case 3: /* so one read that does not block: no restore, still 9 */
        assert_string_equal(rq->target, BASE "&dc=dc2&stale");
        reply_answer(c, 9,
                     answer(entry("canary/", NULL, 3), entry(K_W, "shop-v1=90\n", 9), NULL, NULL));
        break;
    case 4: /* the same index again; now a second key */
        assert_string_equal(rq->target, BASE "&index=9&wait=2s&dc=dc2&stale");
        reply_answer(c, 12,
                     answer(entry(K_W, "shop-v1=90\n", 9), entry("canary/default/x/", NULL, 10),
                            entry(K_H, "- cookie: canary", 12), NULL));
        break;
    case 5: /* a key deleted */
        assert_string_equal(rq->target, BASE "&index=12&wait=2s&dc=dc2&stale");
        reply_answer(c, 13, answer(entry(K_H, "- cookie: canary", 12), NULL, NULL, NULL));
        break;
    case 6: /* the index went backwards (a snapshot restore) */
        assert_string_equal(rq->target, BASE "&index=13&wait=2s&dc=dc2&stale");
        reply_answer(c, 4, answer(entry(K_R, "match: Host(`a`)", 3), NULL, NULL, NULL));
        break;
    case 7: /* blocking on the new, lower index; the server fails */
        assert_string_equal(rq->target, BASE "&index=4&wait=2s&dc=dc2&stale");
        reply(c, 500, -1, "rpc error making call: No cluster leader");
        break;
    case 8: /* after an error: a plain read, not a blocking one; refused */
        assert_string_equal(rq->target, BASE "&dc=dc2&stale");
        reply(c, 403, -1, "Permission denied");
        break;
    case 9: /* recovered: the same state as before the outage */
        assert_string_equal(rq->target, BASE "&dc=dc2&stale");
        reply_answer(c, 4, answer(entry(K_R, "match: Host(`a`)", 3), NULL, NULL, NULL));
        break;
    case 10: { /* blocking again; left hanging while the status writes run */
        assert_string_equal(rq->target, BASE "&index=4&wait=2s&dc=dc2&stale");
        const char *v = "{\"state\":\"applied\"}\n";
        assert_int_equal(
            f->src->ops->put(f->src, "canary/default/shop/status", v, strlen(v), put_done, f), 0);
        assert_int_equal(
            f->src->ops->put(f->src, "canary/default/locked x/status", v, strlen(v), put_done, f),
            0);
        assert_int_equal(
            f->src->ops->put(f->src, "canary/denied/x/status", v, strlen(v), put_done, f), 0);
        break;
    }
    case 11: /* the resync: a plain read, whole, as a snapshot */
        assert_string_equal(rq->target, BASE "&dc=dc2&stale");
        reply_answer(c, 20, answer(entry(K_R, "match: Host(`a`)", 3), NULL, NULL, NULL));
        break;
    case 12: /* blocking after the resync; done */
        assert_string_equal(rq->target, BASE "&index=20&wait=2s&dc=dc2&stale");
        fake_finish(f);
        break;
    default: fail_msg("unexpected request %d to %s", step, rq->target);
    }
}

static void test_source_blocking_reads_restores_outages_and_writes(void **state) {
    (void)state;
    struct fake f;
    uv_loop_t loop;
    fake_setup(&f, &loop, main_dispatch);
    f.cfg.token = SECRET;
    f.cfg.datacenter = "dc2";
    f.cfg.consistency = "stale";
    f.want_token = SECRET;
    fake_make_source(&f);
    fake_run(&f, SECRET);

    assert_int_equal(f.step, 13);
    assert_string_equal(f.seen.data,
                        "up\n"
                        "snapshot 7:\n"
                        "put " K_W "=shop-v1=90\\n@9\n"
                        "put " K_H "=- cookie: canary@12\n"
                        "delete " K_W "=@13\n"
                        "snapshot 4: " K_R "=match: Host(`a`)@3\n"
                        "down: reading 'canary/': HTTP 500: rpc error making call: No cluster "
                        "leader\n"
                        "down: ACL: permission denied reading canary/ (check the ACL token): "
                        "Permission denied\n"
                        "up\n"
                        "put ok: ok\n"
                        "put failed: Consul did not apply the write of canary/default/locked "
                        "x/status (it answered false)\n"
                        "put failed: permission denied writing canary/denied/x/status\n"
                        "snapshot 20: " K_R "=match: Host(`a`)@3\n");

    /* The rate limit: three unproductive answers (no change at steps 2 and 3,
     * the 500 at step 7) used the idle bucket's burst, so the retries after
     * the 500 and after the 403 each waited for a token (1 s per token
     * here), not just the backoff. */
    assert_true(f.at[8] - f.at[7] >= 500);
    assert_true(f.at[9] - f.at[8] >= 500);

    assert_int_equal(log_count(&f, " info ", "initial list: 0 keys under 'canary/' at index 7"), 1);
    assert_int_equal(log_count(&f, " info ", "went backwards from 13 to 4"), 1);
    assert_int_equal(log_count(&f, " info ", "reconnected to"), 1);
    /* One warning for the outage, one for the permission problem in it. */
    assert_int_equal(log_count(&f, " warn ", ""), 2);
    assert_int_equal(log_count(&f, " warn ", "HTTP 500"), 1);
    assert_int_equal(
        log_count(&f, " warn ", "permission denied reading canary/ (check the ACL token)"), 1);
    assert_int_equal(log_count(&f, " debug ", "consul: put " K_H " at index 12"), 1);
    /* The read permission was checked before every answer that replaced
     * everything or lost a key: the initial list, the deletion at 13, the
     * index reset, the resync; not before the others. */
    assert_int_equal(f.probes, 4);
    fclose(f.logf);
    buf_free(&f.seen);
}

/* ---- a server that answers at once with nothing new ---- */

static void end_fired(uv_timer_t *t) {
    fake_finish(t->data);
}

static void hot_dispatch(struct fake *f, struct fakehttp_conn *c, const struct fakehttp_req *rq) {
    int step = f->step++;
    if (step < 16)
        f->at[step] = uv_now(f->loop);
    /* Each early answer with the same index is checked by one read that does
     * not block (a snapshot restore answers so); never two in a row. */
    if (step == 0 || step % 2 == 0)
        assert_string_equal(rq->target, BASE);
    else
        assert_string_equal(rq->target, BASE "&index=5&wait=2s");
    reply_answer(c, 5, answer(entry(K_W, "a=1", 5), NULL, NULL, NULL));
}

static void test_unchanged_answers_do_not_busy_loop(void **state) {
    (void)state;
    struct fake f;
    uv_loop_t loop;
    fake_setup(&f, &loop, hot_dispatch);
    fake_make_source(&f);
    assert_int_equal(uv_timer_init(&loop, &f.end_timer), 0);
    f.end_timer.data = &f;
    f.end_timer_used = true;
    timer_arm(&f.end_timer, end_fired, 2500, 0);
    fake_run(&f, NULL);
    /* The list, two quick ones on the burst, then one a second: a busy loop
     * would have made thousands. */
    assert_true(f.step >= 5);
    assert_true(f.step <= 6);
    assert_true(f.at[1] - f.at[0] < 500);
    assert_true(f.at[2] - f.at[1] < 500);
    assert_true(f.at[3] - f.at[2] < 500);
    assert_true(f.at[4] - f.at[3] >= 700);
    assert_string_equal(f.seen.data, "up\nsnapshot 5: " K_W "=a=1@5\n");
    fclose(f.logf);
    buf_free(&f.seen);
}

/* ---- tokens from a file and from the environment; index floor ---- */

#define FILTERED_404                                                                               \
    "HTTP/1.1 404 Not Found\r\nX-Consul-Index: 15\r\nX-Consul-Results-Filtered-By-Acls: "          \
    "true\r\nContent-Length: 0\r\n\r\n"

static void auth_dispatch(struct fake *f, struct fakehttp_conn *c, const struct fakehttp_req *rq) {
    int step = f->step++;
    switch (step) {
    case 0: /* keys hidden by ACLs: not an empty prefix, but an outage */
        assert_string_equal(rq->target, BASE);
        fakehttp_send(c, FILTERED_404, strlen(FILTERED_404));
        break;
    case 1: /* a 404 without X-Consul-Index is not Consul's: no empty snapshot */
        assert_string_equal(rq->target, BASE);
        reply(c, 404, -1, "404 page not found");
        break;
    case 2: /* Consul's own 404, index 0 (an empty store on an old server) */
        assert_string_equal(rq->target, BASE);
        reply(c, 404, 0, "");
        break;
    case 3: /* never block on index 0: 1 instead */
        assert_string_equal(rq->target, BASE "&index=1&wait=2s");
        fake_finish(f);
        break;
    default: fail_msg("unexpected request %d to %s", step, rq->target);
    }
}

static void run_auth(const char *token, const char *token_file, const char *env, const char *want) {
    struct fake f;
    uv_loop_t loop;
    fake_setup(&f, &loop, auth_dispatch);
    f.cfg.token = (char *)token;
    f.cfg.token_file = (char *)token_file;
    if (env)
        assert_int_equal(setenv("CONSUL_HTTP_TOKEN", env, 1), 0);
    else
        assert_int_equal(unsetenv("CONSUL_HTTP_TOKEN"), 0);
    f.want_token = want;
    fake_make_source(&f);
    fake_run(&f, want);
    assert_int_equal(f.step, 4);
    /* The 404 without an index came within the same outage: logged, but
     * not reported again. */
    assert_int_equal(log_count(&f, " warn ", ""), 1);
    assert_int_equal(log_count(&f, " debug ", "HTTP 404 without a valid X-Consul-Index"), 1);
    assert_string_equal(f.seen.data, "down: ACL: permission denied reading canary/ (check the "
                                     "ACL token): Consul left keys out of the answer\n"
                                     "up\n"
                                     "snapshot 0:\n");
    fclose(f.logf);
    buf_free(&f.seen);
    assert_int_equal(unsetenv("CONSUL_HTTP_TOKEN"), 0);
}

static void test_tokens_from_config_file_env_and_index_floor(void **state) {
    (void)state;
    char path[] = "/tmp/test_consul_tokenXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *content = "  file-token-9f3e\r\n";
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    assert_int_equal(close(fd), 0);

    run_auth(NULL, NULL, NULL, NULL);                                     /* anonymous */
    run_auth(NULL, NULL, "env-token-77aa", "env-token-77aa");             /* CONSUL_HTTP_TOKEN */
    run_auth("cfg-token-1b2c", NULL, "env-token-77aa", "cfg-token-1b2c"); /* config wins */
    run_auth(NULL, path, "env-token-77aa", "file-token-9f3e");            /* the file, trimmed */
    assert_int_equal(unlink(path), 0);

    /* A token that would split the header line is refused up front, and
     * the message does not show it. */
    struct source_settings cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.type = SOURCE_CONSUL;
    cfg.address = "http://127.0.0.1:8500";
    cfg.prefix = "canary/";
    cfg.token = "abc\r\nX-Evil: 1";
    char err[256];
    struct logger lg;
    logger_init(&lg, LOG_LVL_ERROR);
    assert_null(consul_source_new(NULL, NULL, &lg, &cfg, NULL, err, sizeof err));
    assert_string_equal(err, "source.token holds characters that cannot be sent in an HTTP header");
    cfg.token = NULL;
    cfg.address = "ftp://x";
    assert_null(consul_source_new(NULL, NULL, &lg, &cfg, NULL, err, sizeof err));
    assert_non_null(strstr(err, "source.address"));
}

/* ---- the anonymous token under default-deny: a plain 404 ---- */

#define ANON_404                                                                                   \
    "HTTP/1.1 404 Not Found\r\nX-Consul-Index: 10\r\nX-Consul-Default-Acl-Policy: deny\r\n"        \
    "Content-Length: 0\r\n\r\n"

static void acl_dispatch(struct fake *f, struct fakehttp_conn *c, const struct fakehttp_req *rq) {
    int step = f->step++;
    switch (step) {
    case 0: /* readable: the initial list (checked: probe 0 answers 404) */
        assert_string_equal(rq->target, BASE);
        reply_answer(c, 9, answer(entry(K_W, "a=1", 9), NULL, NULL, NULL));
        break;
    case 1: /* the rights are gone: Consul's anonymous answer looks like an empty prefix */
        assert_string_equal(rq->target, BASE "&index=9&wait=2s");
        fakehttp_send(c, ANON_404, strlen(ANON_404));
        break;
    case 2: /* the retry: the same answer, but now the check (probe 2) says readable */
        assert_string_equal(rq->target, BASE);
        assert_int_equal(f->src->fault, SOURCE_FAULT_ACL);
        fakehttp_send(c, ANON_404, strlen(ANON_404));
        break;
    case 3:
        assert_string_equal(rq->target, BASE "&index=10&wait=2s");
        assert_int_equal(f->src->fault, SOURCE_FAULT_NONE);
        fake_finish(f);
        break;
    default: fail_msg("unexpected request %d to %s", step, rq->target);
    }
}

static void test_acl_denied_is_no_deletion(void **state) {
    (void)state;
    struct fake f;
    uv_loop_t loop;
    fake_setup(&f, &loop, acl_dispatch);
    f.probe_status[1] = 403;
    fake_make_source(&f);
    fake_run(&f, NULL);
    assert_int_equal(f.step, 4);
    assert_int_equal(f.probes, 3);
    assert_string_equal(
        f.seen.data,
        "up\n"
        "snapshot 9: " K_W "=a=1@9\n"
        "down: ACL: permission denied reading canary/ with the anonymous token (no token set, or "
        "an empty token_file) under Consul's default ACL policy deny: the prefix cannot be read, "
        "so its keys are not taken as deleted (give the token key_prefix \"canary/\" read); "
        "Consul: " ANON_DENIED "\n"
        "up\n"
        "delete " K_W "=@10\n");
    assert_int_equal(log_count(&f, " warn ", "consul: "), 1);
    fclose(f.logf);
    buf_free(&f.seen);
}

/* A token_file that cannot be read is an outage like any other; the file is
 * tried again on the retry. */
static void tokfile_dispatch(struct fake *f, struct fakehttp_conn *c,
                             const struct fakehttp_req *rq) {
    (void)c;
    (void)rq;
    fail_msg("no request may be made without the token (step %d)", f->step);
}

static void tokfile_state(void *user, bool up, const char *reason) {
    struct fake *f = user;
    assert_false(up);
    buf_printf(&f->seen, "down: %s\n", reason);
    fake_finish(f);
}

static void test_unreadable_token_file_is_an_outage(void **state) {
    (void)state;
    struct fake f;
    uv_loop_t loop;
    fake_setup(&f, &loop, tokfile_dispatch);
    f.cfg.token_file = "/nonexistent/consul-token";
    struct source_callbacks cb = {on_snapshot, on_event, tokfile_state, &f};
    char err[128];
    f.src = source_new(&loop, f.http, &f.log, &f.cfg, &cb, err, sizeof err);
    assert_non_null(f.src);
    fake_run(&f, NULL);
    assert_string_equal(f.seen.data, "down: cannot read source.token_file "
                                     "/nonexistent/consul-token: no such file or directory\n");
    fclose(f.logf);
    buf_free(&f.seen);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_blocking_reads_restores_outages_and_writes),
        cmocka_unit_test(test_unchanged_answers_do_not_busy_loop),
        cmocka_unit_test(test_tokens_from_config_file_env_and_index_floor),
        cmocka_unit_test(test_unreadable_token_file_is_an_outage),
        cmocka_unit_test(test_acl_denied_is_no_deletion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
