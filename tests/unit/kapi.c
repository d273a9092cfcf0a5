/* kapi.c - the Kubernetes API test server on a unit test's loop; see kapi.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kapi.h"
#include "sinks/kubeconfig.h"

static bool file_exists(void *path) {
    return access(path, F_OK) == 0;
}

static void on_proc_exit(uv_process_t *p, int64_t status, int sig) {
    struct kapi *k = p->data;
    (void)status;
    (void)sig;
    k->exited = true;
}

static bool proc_exited(void *arg) {
    return ((struct kapi *)arg)->exited;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

struct kube_client *kapi_client_new(struct kapi *k, bool dry_run) {
    struct kube_conn conn;
    char err[256];
    if (kube_conn_from_kubeconfig(k->kubeconfig, NULL, &conn, err, sizeof err) != 0) {
        print_error("kubeconfig: %s\n", err);
        return NULL;
    }
    struct kube_client *kc = kube_client_new(&k->loop, k->http, &k->log, &conn, err, sizeof err);
    if (!kc) {
        kube_conn_free(&conn);
        print_error("kube client: %s\n", err);
        return NULL;
    }
    kube_client_set_dry_run(kc, dry_run);
    return kc;
}

int kapi_setup(void **state) {
    struct kapi *k = calloc(1, sizeof *k);
    if (!k)
        return -1;
    logger_init(&k->log, LOG_LVL_INFO);
    k->log.out = stderr;
    const char *tmp = getenv("TMPDIR");
    snprintf(k->dir, sizeof k->dir, "%s/cb-kapi-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(k->dir) || uv_loop_init(&k->loop) != 0) {
        free(k);
        return -1;
    }
    const char *script =
        access("kubeapi/server.py", R_OK) == 0 ? "kubeapi/server.py" : "tests/kubeapi/server.py";
    char logpath[320], portpath[320];
    snprintf(logpath, sizeof logpath, "%s/server.log", k->dir);
    snprintf(portpath, sizeof portpath, "%s/port", k->dir);
    snprintf(k->kubeconfig, sizeof k->kubeconfig, "%s/kubeconfig", k->dir);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0)
        return -1;
    char *args[] = {"/usr/bin/python3", (char *)script, "--dir", k->dir, NULL};
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = UV_INHERIT_FD, .data.fd = logfd},
                                     {.flags = UV_INHERIT_FD, .data.fd = logfd}};
    uv_process_options_t opt = {0};
    opt.file = args[0];
    opt.args = args;
    opt.exit_cb = on_proc_exit;
    opt.stdio = stdio;
    opt.stdio_count = 3;
    k->proc.data = k;
    int rc = uv_spawn(&k->loop, &k->proc, &opt);
    close(logfd);
    if (rc != 0) {
        print_error("cannot start %s: %s\n", script, uv_strerror(rc));
        uv_close((uv_handle_t *)&k->proc, NULL);
        support_drain(&k->loop);
        return -1;
    }
    k->proc_open = true;
    uv_unref((uv_handle_t *)&k->proc); /* never what keeps the loop alive */
    if (!support_run_until(&k->loop, file_exists, portpath, 30000)) {
        print_error("the API test server did not start; see %s\n", logpath);
        return -1;
    }
    k->http = http_client_new(&k->loop, &k->log);
    k->ctl = k->http ? kapi_client_new(k, false) : NULL;
    if (!k->ctl)
        return -1;
    *state = k;
    return 0;
}

int kapi_teardown(void **state) {
    struct kapi *k = *state;
    if (!k)
        return 0;
    if (k->ctl)
        kube_client_free(k->ctl);
    if (k->http)
        http_client_close(k->http);
    if (k->proc_open && !k->exited) {
        uv_process_kill(&k->proc, SIGTERM);
        if (!support_run_until(&k->loop, proc_exited, k, 10000))
            uv_process_kill(&k->proc, SIGKILL);
        support_run_until(&k->loop, proc_exited, k, 5000);
    }
    if (k->proc_open)
        uv_close((uv_handle_t *)&k->proc, NULL);
    support_drain(&k->loop);
    if (uv_loop_close(&k->loop) != 0)
        print_error("loop still has handles at teardown\n");
    nftw(k->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(k);
    return 0;
}

struct ctl_result {
    bool done;
    long status;
    cJSON *json;
};

static void on_ctl(void *user, const struct kube_response *r) {
    struct ctl_result *c = user;
    c->done = true;
    c->status = r->status;
    c->json = r->json ? cJSON_Duplicate(r->json, 1) : NULL;
}

static bool ctl_done(void *arg) {
    return ((struct ctl_result *)arg)->done;
}

cJSON *kapi_ctl(struct kapi *k, const char *method, const char *path, const char *body,
                long *status) {
    struct ctl_result res = {0};
    struct kube_call *c =
        kube_request(k->ctl, method, path, NULL, body, body ? strlen(body) : 0, on_ctl, &res);
    assert_non_null(c);
    if (!support_run_until(&k->loop, ctl_done, &res, 10000)) {
        kube_call_cancel(c);
        fail_msg("%s %s: no answer", method, path);
    }
    if (status)
        *status = res.status;
    return res.json;
}

void kapi_ctl_ok(struct kapi *k, const char *method, const char *path, const char *body) {
    long status;
    cJSON *j = kapi_ctl(k, method, path, body, &status);
    cJSON_Delete(j);
    assert_in_range(status, 200, 201);
}

void kapi_fault(struct kapi *k, const char *rule) {
    kapi_ctl_ok(k, "POST", "/_test/faults", rule);
}

void kapi_faults_clear(struct kapi *k) {
    kapi_ctl_ok(k, "DELETE", "/_test/faults", NULL);
}

int kapi_last_seq(struct kapi *k) {
    cJSON *log = kapi_ctl(k, "GET", "/_test/requests", NULL, NULL);
    int n = cJSON_GetArraySize(log);
    const cJSON *last = n ? cJSON_GetArrayItem(log, n - 1) : NULL;
    int seq = last ? (int)cJSON_GetObjectItem(last, "seq")->valuedouble : 0;
    cJSON_Delete(log);
    return seq;
}
