/* execcred.c - run a kubeconfig exec credential plugin; see execcred.h.
 *
 * The protocol is client-go's (client.authentication.k8s.io v1/v1beta1):
 * the plugin gets KUBERNETES_EXEC_INFO, an ExecCredential whose spec says
 * interactive: false (and carries the cluster when provideClusterInfo is
 * set), and prints an ExecCredential whose status has a token and/or a
 * client certificate and key, and maybe an expirationTimestamp. The output
 * must have the configured apiVersion, as client-go requires.
 *
 * One run is one uv_process_t with two pipes and a timer. The run reports
 * once the process has exited and both pipes reached EOF, or at once on a
 * timeout or an oversized answer (the process is killed; its handle is
 * closed when it has been reaped, so no zombie stays behind). The struct
 * frees itself when its last handle is closed. */
#include "sinks/execcred.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/secret.h"
#include "bridge/lib/timer.h"

#define STDERR_KEEP 2048 /* bytes of the plugin's stderr kept for a message */
#define STDERR_SHOWN 512

extern char **environ;

struct execcred_run {
    uv_process_t proc;
    uv_pipe_t out, err;
    uv_timer_t timer;
    int open_handles;
    bool proc_init, exited, out_eof, err_eof, reported, proc_closing;
    int64_t exit_status;
    int term_signal;
    uint64_t timeout_ms;
    buf_t out_buf, err_buf;
    execcred_cb cb;
    void *user;
    char *command, *api_version, *who; /* who: "exec plugin CMD (user 'u')" */
    char *fail;                        /* could not start: reported from the timer */
};

/* ---- parsing --------------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int execcred_parse_time(const char *s, int64_t *ms) {
    int y, mo, d, h, mi, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
        n != 19 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    const char *p = s + n;
    int64_t frac_ms = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            frac_ms *= 10;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59)
            return -1;
        offset_s = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    int64_t t =
        days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;
    *ms = t * 1000 + frac_ms;
    return 0;
}

static const char *json_string(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

int execcred_parse(const char *api_version, const char *out, size_t len, struct execcred *c,
                   char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    cJSON *doc = cJSON_ParseWithLength(out, len);
    int rc = -1;
    if (!doc || !cJSON_IsObject(doc)) {
        snprintf(err, errlen, "its output is not a JSON ExecCredential");
        goto out;
    }
    const char *av = json_string(doc, "apiVersion"), *kind = json_string(doc, "kind");
    if (!av || strcmp(av, api_version) != 0) {
        snprintf(err, errlen, "it is configured to use API version %s, but returned version %.80s",
                 api_version, av ? av : "(none)");
        goto out;
    }
    if (!kind || strcmp(kind, "ExecCredential") != 0) {
        snprintf(err, errlen, "it returned kind %.80s, not ExecCredential", kind ? kind : "(none)");
        goto out;
    }
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(doc, "status");
    if (!cJSON_IsObject(status)) {
        snprintf(err, errlen, "it did not return a status field");
        goto out;
    }
    const char *token = json_string(status, "token");
    const char *cert = json_string(status, "clientCertificateData");
    const char *key = json_string(status, "clientKeyData");
    const char *exp = json_string(status, "expirationTimestamp");
    if (!token && !cert && !key) {
        snprintf(err, errlen, "it did not return a token or a client certificate and key");
        goto out;
    }
    if (!cert != !key) {
        snprintf(err, errlen, "it returned only a client %s, not both certificate and key",
                 cert ? "certificate" : "key");
        goto out;
    }
    if (exp && execcred_parse_time(exp, &c->expiry_ms) < 0) {
        snprintf(err, errlen, "its expirationTimestamp '%.40s' is not an RFC 3339 time", exp);
        goto out;
    }
    c->has_expiry = exp != NULL;
    if ((token && !(c->token = strdup(token))) || (cert && !(c->cert_pem = strdup(cert))) ||
        (key && !(c->key_pem = strdup(key)))) {
        snprintf(err, errlen, "out of memory");
        execcred_clear(c);
        goto out;
    }
    c->cert_pem_len = cert ? strlen(cert) : 0;
    c->key_pem_len = key ? strlen(key) : 0;
    rc = 0;
out:
    if (doc) {
        /* The parsed document holds the secrets too: wipe them. */
        cJSON *st = cJSON_GetObjectItemCaseSensitive(doc, "status");
        for (cJSON *f = st ? st->child : NULL; f; f = f->next)
            if (cJSON_IsString(f))
                explicit_bzero(f->valuestring, strlen(f->valuestring));
        cJSON_Delete(doc);
    }
    return rc;
}

void execcred_clear(struct execcred *c) {
    secret_free(c->token);
    secret_free_len(c->cert_pem, c->cert_pem_len);
    secret_free_len(c->key_pem, c->key_pem_len);
    memset(c, 0, sizeof *c);
}

/* ---- running ----------------------------------------------------------------- */

static void wipe_buf(buf_t *b) {
    if (b->data)
        explicit_bzero(b->data, b->len);
    buf_free(b);
}

static void on_handle_closed(uv_handle_t *h) {
    struct execcred_run *r = h->data;
    if (--r->open_handles > 0)
        return;
    wipe_buf(&r->out_buf);
    buf_free(&r->err_buf);
    free(r->command);
    free(r->api_version);
    free(r->who);
    free(r->fail);
    free(r);
}

static void close_one(uv_handle_t *h) {
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed);
}

/* Close everything; the process handle only once the child has been reaped
 * (killing it first when it still runs). */
static void close_handles(struct execcred_run *r) {
    close_one((uv_handle_t *)&r->out);
    close_one((uv_handle_t *)&r->err);
    close_one((uv_handle_t *)&r->timer);
    if (!r->proc_init) {
        /* uv_spawn was never called: no process handle */
    } else if (r->exited) {
        close_one((uv_handle_t *)&r->proc);
    } else if (!r->proc_closing) {
        r->proc_closing = true;
        uv_process_kill(&r->proc, SIGKILL);
    }
}

/* The plugin's stderr, trimmed to one line of bounded length, or "". */
static void stderr_text(struct execcred_run *r, char *out, size_t outlen) {
    size_t o = 0;
    bool space = false;
    for (size_t i = 0; i < r->err_buf.len && o + 4 < outlen && o < STDERR_SHOWN; i++) {
        char ch = r->err_buf.data[i];
        if (ch == '\n' || ch == '\r' || ch == '\t' || ch == ' ') {
            space = o > 0;
            continue;
        }
        if ((unsigned char)ch < 0x20)
            continue;
        if (space)
            out[o++] = ' ';
        space = false;
        out[o++] = ch;
    }
    out[o] = '\0';
}

static void report_once(struct execcred_run *r, const char *fmt, const char *detail) {
    if (r->reported)
        return;
    r->reported = true;
    execcred_cb cb = r->cb;
    r->cb = NULL;
    if (!cb)
        return;
    if (!fmt) {
        struct execcred c;
        char err[512];
        if (execcred_parse(r->api_version, r->out_buf.data ? r->out_buf.data : "", r->out_buf.len,
                           &c, err, sizeof err) == 0) {
            cb(r->user, &c, NULL);
            execcred_clear(&c);
            return;
        }
        char msg[1024];
        snprintf(msg, sizeof msg, "%s: %s", r->who, err);
        cb(r->user, NULL, msg);
        return;
    }
    char what[1024], msg[2048];
    snprintf(what, sizeof what, fmt, detail);
    snprintf(msg, sizeof msg, "%s: %s", r->who, what);
    cb(r->user, NULL, msg);
}

static void finish_if_done(struct execcred_run *r) {
    if (!r->exited || !r->out_eof || !r->err_eof || r->reported)
        return;
    char err[STDERR_SHOWN + 8], detail[STDERR_SHOWN + 64];
    stderr_text(r, err, sizeof err);
    if (r->term_signal) {
        snprintf(detail, sizeof detail, "killed by signal %d%s%s", r->term_signal,
                 err[0] ? ": " : "", err);
        report_once(r, "%s", detail);
    } else if (r->exit_status != 0) {
        snprintf(detail, sizeof detail, "failed with exit code %lld%s%s", (long long)r->exit_status,
                 err[0] ? ": " : "", err);
        report_once(r, "%s", detail);
    } else {
        report_once(r, NULL, NULL);
    }
    close_handles(r);
}

static void on_process_exit(uv_process_t *p, int64_t status, int sig) {
    struct execcred_run *r = p->data;
    r->exited = true;
    r->exit_status = status;
    r->term_signal = sig;
    if (r->proc_closing) { /* already reported (timeout, cancel): just reap */
        close_one((uv_handle_t *)&r->proc);
        return;
    }
    finish_if_done(r);
}

static void on_pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    (void)h;
    b->base = malloc(suggested);
    b->len = b->base ? suggested : 0;
}

static void on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    struct execcred_run *r = s->data;
    bool is_out = s == (uv_stream_t *)&r->out;
    buf_t *dst = is_out ? &r->out_buf : &r->err_buf;
    if (n > 0) {
        size_t keep = (size_t)n;
        if (!is_out && dst->len + keep > STDERR_KEEP)
            keep = dst->len < STDERR_KEEP ? STDERR_KEEP - dst->len : 0;
        if (is_out && dst->len + keep > EXECCRED_STDOUT_MAX) {
            explicit_bzero(b->base, (size_t)n);
            free(b->base);
            report_once(r, "its output is larger than %s; killed", "1 MiB");
            close_handles(r);
            return;
        }
        if (keep && buf_append(dst, b->base, keep) < 0) {
            explicit_bzero(b->base, (size_t)n);
            free(b->base);
            report_once(r, "%s", "out of memory");
            close_handles(r);
            return;
        }
    }
    if (b->base) {
        explicit_bzero(b->base, b->len);
        free(b->base);
    }
    if (n < 0) {
        uv_read_stop(s);
        if (is_out)
            r->out_eof = true;
        else
            r->err_eof = true;
        finish_if_done(r);
    }
}

static void on_run_timer(uv_timer_t *t) {
    struct execcred_run *r = t->data;
    if (r->fail) {
        report_once(r, "%s", r->fail);
        close_handles(r);
        return;
    }
    char detail[64];
    snprintf(detail, sizeof detail, "%llu ms", (unsigned long long)r->timeout_ms);
    report_once(r, "did not finish within %s; killed it", detail);
    close_handles(r);
}

void execcred_close(struct execcred_run *r) {
    if (!r)
        return;
    r->cb = NULL;
    r->reported = true;
    close_handles(r);
}

/* environ + the kubeconfig's env + KUBERNETES_EXEC_INFO; the strings are
 * borrowed except the last, which the caller frees. */
static char **build_env(const struct kube_exec *ex) {
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = calloc(n + ex->nenv + 2, sizeof *env);
    if (!env)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "KUBERNETES_EXEC_INFO=", 21) != 0)
            env[o++] = environ[i];
    for (size_t i = 0; i < ex->nenv; i++)
        env[o++] = ex->env[i];
    buf_t info = BUF_INIT;
    if (buf_printf(&info, "KUBERNETES_EXEC_INFO=%s", ex->exec_info ? ex->exec_info : "") < 0) {
        buf_free(&info);
        free(env);
        return NULL;
    }
    env[o] = buf_steal(&info);
    if (!env[o]) {
        free(env);
        return NULL;
    }
    return env;
}

struct execcred_run *execcred_start(uv_loop_t *loop, const struct kube_exec *ex,
                                    uint64_t timeout_ms, execcred_cb cb, void *user, char *err,
                                    size_t errlen) {
    struct execcred_run *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    buf_t who = BUF_INIT;
    if (buf_printf(&who, "exec plugin %s (user '%.64s')", ex->command, ex->user ? ex->user : "") <
            0 ||
        !(r->who = buf_steal(&who)) || !(r->command = strdup(ex->command)) ||
        !(r->api_version = strdup(ex->api_version))) {
        buf_free(&who);
        free(r->who);
        free(r->command);
        free(r);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->cb = cb;
    r->user = user;
    r->timeout_ms = timeout_ms;
    r->proc.data = r->out.data = r->err.data = r->timer.data = r;
    /* These cannot fail on Unix (they only initialise structs). */
    uv_pipe_init(loop, &r->out, 0);
    uv_pipe_init(loop, &r->err, 0);
    uv_timer_init(loop, &r->timer);
    r->open_handles = 3;

    char **args = calloc(ex->nargs + 2, sizeof *args);
    char **env = build_env(ex);
    int rc = UV_ENOMEM;
    if (args && env) {
        args[0] = r->command;
        for (size_t i = 0; i < ex->nargs; i++)
            args[i + 1] = ex->args[i];
        uv_stdio_container_t stdio[3] = {
            {.flags = UV_IGNORE},
            {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->out},
            {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->err},
        };
        uv_process_options_t opts = {
            .exit_cb = on_process_exit,
            .file = r->command,
            .args = args,
            .env = env,
            .stdio_count = 3,
            .stdio = stdio,
        };
        rc = uv_spawn(loop, &r->proc, &opts);
        r->proc_init = true; /* uv_spawn initialises the handle even when it fails */
        r->open_handles++;
    }
    if (env) {
        size_t last = 0;
        while (env[last])
            last++;
        secret_free(env[last - 1]);
        free(env);
    }
    free(args);
    if (rc != 0) {
        /* Reported from the loop like any other outcome, so the caller has
         * one path for failures. */
        buf_t f = BUF_INIT;
        int frc = rc == UV_ENOENT ? buf_printf(&f, "executable %s not found%s%s", r->command,
                                               ex->install_hint ? "; " : "",
                                               ex->install_hint ? ex->install_hint : "")
                                  : buf_printf(&f, "cannot run it: %s", uv_strerror(rc));
        r->fail = frc == 0 ? buf_steal(&f) : NULL;
        buf_free(&f);
        r->exited = true; /* nothing to reap */
        r->out_eof = r->err_eof = true;
        if (!r->fail) {
            snprintf(err, errlen, "out of memory");
            r->cb = NULL;
            r->reported = true;
            close_handles(r);
            return NULL;
        }
        timer_arm(&r->timer, on_run_timer, 0, 0);
        return r;
    }
    if (uv_read_start((uv_stream_t *)&r->out, on_pipe_alloc, on_pipe_read) != 0)
        r->out_eof = true;
    if (uv_read_start((uv_stream_t *)&r->err, on_pipe_alloc, on_pipe_read) != 0)
        r->err_eof = true;
    timer_arm(&r->timer, on_run_timer, timeout_ms, 0);
    return r;
}
