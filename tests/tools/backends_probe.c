/* backends_probe.c - sinks/backends.h against any API server, one check
 * printed each time its answer may have changed.
 *
 *   backends_probe KUBECONFIG NAMESPACE SERVICE PORT
 *
 * Watches NAMESPACE with the kubeconfig's identity and prints
 * "<result> <message>" on stdout (flushed) once the namespace is listed and
 * after every change callback for SERVICE whose answer differs from the
 * last line printed. Runs until SIGTERM/SIGINT, then closes the module and
 * exits 0. Built by meson; tests/real/test_backends_real.py drives it
 * against a real kube-apiserver (the bridge is not wired to it yet). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bridge/lib/http.h"
#include "bridge/lib/log.h"
#include "sinks/backends.h"
#include "sinks/kube.h"
#include "sinks/kubeconfig.h"

struct probe {
    uv_loop_t loop;
    struct logger log;
    struct backends b;
    const char *ns, *svc, *port;
    char last[400];
    uv_signal_t sigterm, sigint;
};

static void print_check(struct probe *p) {
    char msg[300], line[400];
    enum backend_result r =
        backends_check(&p->b, p->ns, p->svc, p->port, BACKEND_SERVICE, true, msg, sizeof msg);
    snprintf(line, sizeof line, "%s %s", backend_result_name(r), msg);
    if (strcmp(line, p->last) == 0)
        return;
    snprintf(p->last, sizeof p->last, "%s", line);
    printf("%s\n", line);
    fflush(stdout);
}

static void on_change(void *user, const char *ns, const char *svc) {
    struct probe *p = user;
    if ((!ns || strcmp(ns, p->ns) == 0) && (!svc || strcmp(svc, p->svc) == 0))
        print_check(p);
}

static void on_signal(uv_signal_t *s, int signum) {
    struct probe *p = s->data;
    (void)signum;
    backends_close(&p->b, NULL);
    uv_close((uv_handle_t *)&p->sigterm, NULL);
    uv_close((uv_handle_t *)&p->sigint, NULL);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s KUBECONFIG NAMESPACE SERVICE PORT\n", argv[0]);
        return 2;
    }
    static struct probe p;
    p.ns = argv[2];
    p.svc = argv[3];
    p.port = argv[4];
    logger_init(&p.log, LOG_LVL_INFO);
    if (uv_loop_init(&p.loop) != 0)
        return 1;
    struct kube_conn conn;
    char err[512];
    if (kube_conn_from_kubeconfig(argv[1], NULL, &conn, err, sizeof err) != 0) {
        fprintf(stderr, "kubeconfig: %s\n", err);
        return 1;
    }
    struct http_client *http = http_client_new(&p.loop, &p.log);
    struct kube_client *kc =
        http ? kube_client_new(&p.loop, http, &p.log, &conn, err, sizeof err) : NULL;
    if (!kc) {
        fprintf(stderr, "kube client: %s\n", http ? err : "out of memory");
        return 1;
    }
    if (backends_init(&p.b, &p.loop, kc, &p.log, false, on_change, &p) < 0 ||
        backends_add_namespace(&p.b, p.ns) < 0 || backends_start(&p.b) < 0)
        return 1;
    uv_signal_init(&p.loop, &p.sigterm);
    uv_signal_init(&p.loop, &p.sigint);
    p.sigterm.data = p.sigint.data = &p;
    uv_signal_start(&p.sigterm, on_signal, SIGTERM);
    uv_signal_start(&p.sigint, on_signal, SIGINT);
    while (!backends_closed(&p.b))
        uv_run(&p.loop, UV_RUN_ONCE);
    kube_client_close(kc);
    http_client_close(http);
    uv_run(&p.loop, UV_RUN_DEFAULT);
    kube_client_free(kc);
    return uv_loop_close(&p.loop) == 0 ? 0 : 1;
}
