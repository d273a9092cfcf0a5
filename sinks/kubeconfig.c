/* kubeconfig.c - find the Kubernetes API server and the credentials for it.
 *
 * Three ways, as kubectl and client-go have them: a kubeconfig file (the
 * named context or current-context), the in-cluster service account, or the
 * explicit kubernetes.server/token_file/ca_file of the bridge config. This
 * file has the public functions and the last two ways; a kubeconfig is read
 * by kubeconfig_load.c (the files, merged), kubeconfig_resolve.c (context,
 * cluster, user) and kubeconfig_exec.c (exec credential plugins), which
 * share kubeconfig_internal.h. Tokens and keys are secrets: they never
 * appear in messages and are wiped when freed. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/secret.h"
#include "bridge/lib/url.h"
#include "bridge/lib/yamlnode.h"
#include "sinks/kubeconfig_internal.h"

#define SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"

/* ---- shared by the kubeconfig files ---- */

__attribute__((format(printf, 1, 2))) char *kubeconfig_format(const char *fmt, ...) {
    buf_t b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

/* "PATH:LINE: message", or "PATH: message" for line 0. */
__attribute__((format(printf, 3, 4))) int kubeconfig_fail(const struct kubeconfig *kcfg, int line,
                                                          const char *fmt, ...) {
    if (!kcfg->err || kcfg->errlen == 0)
        return -1;
    int n = line > 0 ? snprintf(kcfg->err, kcfg->errlen, "%s:%d: ", kcfg->path, line)
                     : snprintf(kcfg->err, kcfg->errlen, "%s: ", kcfg->path);
    if (n < 0 || (size_t)n >= kcfg->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kcfg->err + n, kcfg->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A server URL as the HTTP client wants it: no trailing '/'. */
char *kubeconfig_server_url(const char *s) {
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '/')
        len--;
    return strndup(s, len);
}

/* ---- the three ways ---- */

static int read_kubeconfig(struct kubeconfig *kcfg, char **paths, size_t npaths,
                           const char *context, struct kube_conn *c) {
    int rc = kubeconfig_load(kcfg, paths, npaths);
    if (rc == 0)
        rc = kubeconfig_resolve(kcfg, context, c);
    kubeconfig_free(kcfg);
    return rc;
}

int kube_conn_from_kubeconfig(const char *path, const char *context, struct kube_conn *out,
                              char *err, size_t errlen) {
    struct kube_conn c = {0};
    memset(out, 0, sizeof *out);
    char **paths = NULL;
    size_t npaths = 0;
    int rc = kubeconfig_paths(path, &paths, &npaths, err, errlen);
    struct kubeconfig kcfg = {.err = err, .errlen = errlen};
    if (rc == 0)
        rc = read_kubeconfig(&kcfg, paths, npaths, context, &c);
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    if (rc < 0) {
        kube_conn_free(&c);
        return -1;
    }
    *out = c;
    return 0;
}

/* A service account file must be there and readable now: finding out at the
 * first API call would be later and vaguer. */
static char *service_account_file(const char *dir, const char *name, char *err, size_t errlen) {
    char *path = kubeconfig_format("%s/%s", dir, name);
    if (!path) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (access(path, R_OK) != 0) {
        snprintf(err, errlen, "in-cluster: cannot read %s: %s", path, strerror(errno));
        free(path);
        return NULL;
    }
    return path;
}

int kube_conn_in_cluster(struct kube_conn *out, char *err, size_t errlen) {
    struct kube_conn c = {0};
    memset(out, 0, sizeof *out);
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host || !port || !*port) {
        snprintf(err, errlen,
                 "in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
                 "are not set (not running in a pod?)");
        return -1;
    }
    if (strspn(port, "0123456789") != strlen(port)) {
        snprintf(err, errlen, "in-cluster: KUBERNETES_SERVICE_PORT is not a port number");
        return -1;
    }
    const char *dir = getenv("CANARY_BRIDGE_SA_DIR");
    if (!dir || !*dir)
        dir = SA_DIR_DEFAULT;
    /* An IPv6 address needs brackets in a URL. */
    c.server = strchr(host, ':') ? kubeconfig_format("https://[%s]:%s", host, port)
                                 : kubeconfig_format("https://%s:%s", host, port);
    if (!c.server) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!(c.token_file = service_account_file(dir, "token", err, errlen)) ||
        !(c.ca_file = service_account_file(dir, "ca.crt", err, errlen))) {
        kube_conn_free(&c);
        return -1;
    }
    *out = c;
    return 0;
}

static int copy_optional(const char *src, char **dst) {
    if (!src || !*src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

static int explicit_server(const struct kube_settings *cfg, struct kube_conn *out, char *err,
                           size_t errlen) {
    struct kube_conn c = {0};
    if (!url_is_http(cfg->server)) {
        snprintf(err, errlen, "kubernetes.server: must be an https:// (or http://) URL");
        return -1;
    }
    c.insecure = cfg->insecure_skip_verify;
    if (!(c.server = kubeconfig_server_url(cfg->server)) ||
        copy_optional(cfg->token_file, &c.token_file) < 0 ||
        copy_optional(cfg->ca_file, &c.ca_file) < 0) {
        kube_conn_free(&c);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *out = c;
    return 0;
}

int kube_conn_from_config(const struct kube_settings *cfg, struct kube_conn *out, char *err,
                          size_t errlen) {
    memset(out, 0, sizeof *out);
    if (cfg->server && *cfg->server)
        return explicit_server(cfg, out, err, errlen);
    if (cfg->in_cluster)
        return kube_conn_in_cluster(out, err, errlen);
    return kube_conn_from_kubeconfig(cfg->kubeconfig, cfg->context, out, err, errlen);
}

void kube_exec_free(struct kube_exec *e) {
    if (!e)
        return;
    free(e->command);
    for (size_t i = 0; i < e->nargs; i++)
        free(e->args[i]);
    free(e->args);
    for (size_t i = 0; i < e->nenv; i++)
        secret_free(e->env[i]); /* may carry secrets */
    free(e->env);
    free(e->api_version);
    free(e->install_hint);
    if (e->exec_info)
        cJSON_free(e->exec_info);
    free(e->user);
    free(e);
}

void kube_conn_free(struct kube_conn *c) {
    kube_exec_free(c->exec);
    free(c->server);
    secret_free(c->token);
    free(c->token_file);
    free(c->ca_file);
    free(c->ca_pem);
    free(c->cert_file);
    free(c->cert_pem);
    free(c->key_file);
    secret_free_len(c->key_pem, c->key_pem_len);
    free(c->context);
    free(c->user);
    memset(c, 0, sizeof *c);
}
