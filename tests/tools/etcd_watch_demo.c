/* etcd_watch_demo.c - run the etcd source by hand against a real etcd.
 *
 * Not built by meson; compile ad hoc (see below). It fills struct config by
 * hand, starts the source, and prints every snapshot, event and state change,
 * so list/watch/reconnect/compaction behaviour can be watched while etcd is
 * poked with etcdctl, killed and restarted. SIGINT/SIGTERM stop it cleanly
 * (close, then run the loop dry), which also exercises teardown.
 *
 *   cc -std=c11 -D_GNU_SOURCE -I. tests/tools/etcd_watch_demo.c \
 *      build-io/libcanary-core.a $(pkg-config --cflags --libs libuv libcurl libcjson yaml-0.1) \
 *      -lm -o /tmp/etcd_watch_demo
 *   /tmp/etcd_watch_demo -e http://127.0.0.1:P[,http://...] -p canary/ [-u user -w pass|-W file]
 *                        [-r resync_ms] [-x exit_after_ms] [-P key=value] [-d] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bridge/lib/http.h"
#include "bridge/lib/log.h"
#include "sources/source.h"

struct demo {
    uv_loop_t *loop;
    struct logger log;
    struct config cfg;
    struct http_client *http;
    struct source *src;
    uv_signal_t sigint, sigterm;
    uv_timer_t resync, quit;
    unsigned long resync_ms, quit_ms;
    char *put_kv;
    bool stopping;
};

static void print_value(const char *v, size_t len) {
    putchar('"');
    for (size_t i = 0; i < len && i < 80; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"')
            putchar(ch);
        else
            printf("\\x%02x", ch);
    }
    printf(len > 80 ? "\"..." : "\"");
}

static void on_snapshot(void *user, const struct source_kv *kvs, size_t n, uint64_t rev) {
    (void)user;
    printf("SNAPSHOT rev=%llu n=%zu\n", (unsigned long long)rev, n);
    for (size_t i = 0; i < n && i < 20; i++) {
        printf("  %s = ", kvs[i].key);
        print_value(kvs[i].value, kvs[i].value_len);
        printf(" (rev %llu)\n", (unsigned long long)kvs[i].revision);
    }
    if (n > 20)
        printf("  ... %zu more\n", n - 20);
    fflush(stdout);
}

static void on_event(void *user, enum source_event_type t, const struct source_kv *kv,
                     uint64_t rev) {
    (void)user;
    printf("EVENT %s rev=%llu %s", t == SOURCE_PUT ? "PUT" : "DELETE", (unsigned long long)rev,
           kv->key);
    if (t == SOURCE_PUT) {
        printf(" = ");
        print_value(kv->value, kv->value_len);
    }
    printf("\n");
    fflush(stdout);
}

static void on_state(void *user, bool up, const char *reason) {
    (void)user;
    printf("STATE %s%s%s\n", up ? "up" : "down", reason ? ": " : "", reason ? reason : "");
    fflush(stdout);
}

static void put_done(void *user, bool ok, const char *msg) {
    (void)user;
    printf("PUT-DONE ok=%d %s\n", ok, msg);
    fflush(stdout);
}

static void handle_closed(uv_handle_t *h) {
    (void)h;
}

static void demo_stop(struct demo *d) {
    if (d->stopping)
        return;
    d->stopping = true;
    d->src->ops->close(d->src); /* freed as the loop runs on */
    http_client_close(d->http);
    uv_close((uv_handle_t *)&d->sigint, handle_closed);
    uv_close((uv_handle_t *)&d->sigterm, handle_closed);
    uv_close((uv_handle_t *)&d->resync, handle_closed);
    uv_close((uv_handle_t *)&d->quit, handle_closed);
}

static void on_signal(uv_signal_t *h, int signum) {
    (void)signum;
    demo_stop(h->data);
}

static void on_quit(uv_timer_t *t) {
    demo_stop(t->data);
}

static void on_resync(uv_timer_t *t) {
    struct demo *d = t->data;
    printf("RESYNC requested\n");
    fflush(stdout);
    d->src->ops->resync(d->src);
    if (d->put_kv) {
        char *eq = strchr(d->put_kv, '=');
        if (eq) {
            *eq = '\0';
            if (d->src->ops->put(d->src, d->put_kv, eq + 1, strlen(eq + 1), put_done, d) < 0)
                printf("PUT start failed\n");
            *eq = '=';
        }
    }
}

static int check(int rc, const char *what) {
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", what, uv_strerror(rc));
        exit(1);
    }
    return rc;
}

int main(int argc, char **argv) {
    struct demo d;
    memset(&d, 0, sizeof d);
    d.loop = uv_default_loop();
    logger_init(&d.log, LOG_LVL_INFO);
    char *endpoints = "http://127.0.0.1:2379";
    d.cfg.source.type = SOURCE_ETCD;
    d.cfg.source.prefix = "canary/";
    int opt;
    while ((opt = getopt(argc, argv, "e:p:u:w:W:r:x:P:dc:C:K:k")) != -1) {
        switch (opt) {
        case 'e': endpoints = optarg; break;
        case 'p': d.cfg.source.prefix = optarg; break;
        case 'u': d.cfg.source.username = optarg; break;
        case 'w': d.cfg.source.password = optarg; break;
        case 'W': d.cfg.source.password_file = optarg; break;
        case 'r': d.resync_ms = strtoul(optarg, NULL, 10); break;
        case 'x': d.quit_ms = strtoul(optarg, NULL, 10); break;
        case 'P': d.put_kv = optarg; break;
        case 'd': d.log.level = LOG_LVL_DEBUG; break;
        case 'c': d.cfg.source.tls.ca_file = optarg; break;
        case 'C': d.cfg.source.tls.cert_file = optarg; break;
        case 'K': d.cfg.source.tls.key_file = optarg; break;
        case 'k': d.cfg.source.tls.insecure_skip_verify = true; break;
        default: fprintf(stderr, "bad option\n"); return 2;
        }
    }
    char *eps[16];
    size_t n = 0;
    for (char *tok = strtok(endpoints, ","); tok && n < 16; tok = strtok(NULL, ","))
        eps[n++] = tok;
    d.cfg.source.endpoints = eps;
    d.cfg.source.n_endpoints = n;

    d.http = http_client_new(d.loop, &d.log);
    if (!d.http)
        return 1;
    struct source_callbacks cb = {on_snapshot, on_event, on_state, &d};
    char err[256];
    d.src = source_new(d.loop, d.http, &d.log, &d.cfg, &cb, err, sizeof err);
    if (!d.src) {
        fprintf(stderr, "source: %s\n", err);
        return 2;
    }
    check(uv_signal_init(d.loop, &d.sigint), "signal");
    check(uv_signal_init(d.loop, &d.sigterm), "signal");
    d.sigint.data = d.sigterm.data = &d;
    check(uv_signal_start(&d.sigint, on_signal, SIGINT), "signal");
    check(uv_signal_start(&d.sigterm, on_signal, SIGTERM), "signal");
    check(uv_timer_init(d.loop, &d.resync), "timer");
    check(uv_timer_init(d.loop, &d.quit), "timer");
    d.resync.data = d.quit.data = &d;
    if (d.resync_ms)
        check(uv_timer_start(&d.resync, on_resync, d.resync_ms, d.resync_ms), "timer");
    if (d.quit_ms)
        check(uv_timer_start(&d.quit, on_quit, d.quit_ms, 0), "timer");
    if (d.src->ops->start(d.src) < 0)
        return 1;
    check(uv_run(d.loop, UV_RUN_DEFAULT), "run");
    /* Anything left means a handle we forgot to close. */
    int rc = uv_loop_close(d.loop);
    printf("EXIT loop_close=%s\n", rc == 0 ? "ok" : uv_strerror(rc));
    return rc == 0 ? 0 : 1;
}
