/* kubeconfig_resolve.c - from a context to the cluster and user it names.
 *
 * The named context, else current-context from the first file that sets it
 * (kubectl's merge rule); its cluster gives the server, the CA (file or
 * -data) and insecure-skip-tls-verify; its user a bearer token (token or
 * tokenFile), a client certificate and key (file or -data), or an exec
 * credential plugin (kubeconfig_exec.c). auth-provider plugins are refused
 * (removed from client-go), and so is basic auth (removed from Kubernetes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "bridge/lib/url.h"
#include "bridge/lib/yamlnode.h"
#include "sinks/kubeconfig_internal.h"

static int fill_cluster(struct kubeconfig *kcfg, const yaml_node_t *cluster, const char *what,
                        struct kube_conn *c) {
    const char *server;
    if (kubeconfig_string(kcfg, cluster, "server", what, &server) < 0)
        return -1;
    if (!server || !*server)
        return kubeconfig_fail(kcfg, yamlnode_line(cluster), "%s has no server", what);
    if (!url_is_http(server))
        return kubeconfig_fail(kcfg, yamlnode_line(kubeconfig_lookup(kcfg, cluster, "server")),
                               "%s: server must be an https:// (or http://) URL", what);
    if (!(c->server = kubeconfig_server_url(server)))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    if (kubeconfig_file_or_data(kcfg, cluster, "certificate-authority", what, &c->ca_file,
                                &c->ca_pem, &c->ca_pem_len) < 0 ||
        kubeconfig_bool(kcfg, cluster, "insecure-skip-tls-verify", what, &c->insecure) < 0)
        return -1;
    /* client-go refuses this combination; so do we, rather than pick one. */
    if (c->insecure && (c->ca_file || c->ca_pem))
        return kubeconfig_fail(kcfg, yamlnode_line(cluster),
                               "%s: insecure-skip-tls-verify cannot be combined with a certificate "
                               "authority",
                               what);
    return 0;
}

static int refuse_plugins(struct kubeconfig *kcfg, const yaml_node_t *user, const char *name) {
    const yaml_node_t *provider = kubeconfig_lookup(kcfg, user, "auth-provider");
    const char *username, *password;
    if (provider)
        return kubeconfig_fail(
            kcfg, yamlnode_line(provider),
            "user '%.*s' uses an auth-provider plugin, which canary-bridge does not run; "
            "use a token, a client certificate or an exec plugin",
            KUBECONFIG_NAME_SHOWN_MAX, name);
    if (kubeconfig_string(kcfg, user, "username", "user", &username) < 0 ||
        kubeconfig_string(kcfg, user, "password", "user", &password) < 0)
        return -1;
    if ((username && *username) || (password && *password))
        return kubeconfig_fail(
            kcfg, yamlnode_line(user),
            "user '%.*s' uses a username and password (basic auth), which Kubernetes "
            "no longer supports; use a token or client certificate",
            KUBECONFIG_NAME_SHOWN_MAX, name);
    return 0;
}

static int fill_user(struct kubeconfig *kcfg, const yaml_node_t *user, const char *name,
                     const char *what, struct kube_conn *c) {
    const char *token, *token_file;
    if (refuse_plugins(kcfg, user, name) < 0 ||
        kubeconfig_string(kcfg, user, "token", what, &token) < 0 ||
        kubeconfig_string(kcfg, user, "tokenFile", what, &token_file) < 0)
        return -1;
    if (token && *token && !(c->token = strdup(token)))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    /* Both may be set; the HTTP side prefers the file, re-read on use, as
     * client-go does. */
    if (token_file && *token_file && kubeconfig_path(kcfg, token_file, &c->token_file) < 0)
        return -1;
    if (kubeconfig_file_or_data(kcfg, user, "client-certificate", what, &c->cert_file, &c->cert_pem,
                                &c->cert_pem_len) < 0 ||
        kubeconfig_file_or_data(kcfg, user, "client-key", what, &c->key_file, &c->key_pem,
                                &c->key_pem_len) < 0)
        return -1;
    bool cert = c->cert_file || c->cert_pem, key = c->key_file || c->key_pem;
    if (cert != key)
        return kubeconfig_fail(kcfg, yamlnode_line(user), "%s: %s needs %s as well", what,
                               cert ? "client-certificate" : "client-key",
                               cert ? "client-key" : "client-certificate");
    /* As in client-go, a token or client certificate in the kubeconfig takes
     * precedence and the plugin is not run. */
    const yaml_node_t *exec = kubeconfig_lookup(kcfg, user, "exec");
    if (exec && !c->token && !c->token_file && !cert)
        return kubeconfig_exec_parse(kcfg, exec, name, what, c);
    return 0;
}

static int use_context(struct kubeconfig *kcfg, const char *name, struct kube_conn *c) {
    const yaml_node_t *ctx = kubeconfig_find_named(kcfg, "contexts", "context", name, NULL);
    const char *cluster_name, *user_name;
    char what[2 * KUBECONFIG_NAME_SHOWN_MAX + 32];
    if (!ctx)
        return -1;
    snprintf(what, sizeof what, "context '%.*s'", KUBECONFIG_NAME_SHOWN_MAX, name);
    if (kubeconfig_string(kcfg, ctx, "cluster", what, &cluster_name) < 0 ||
        kubeconfig_string(kcfg, ctx, "user", what, &user_name) < 0)
        return -1;
    if (!cluster_name || !*cluster_name)
        return kubeconfig_fail(kcfg, yamlnode_line(ctx), "%s names no cluster", what);
    const yaml_node_t *cluster =
        kubeconfig_find_named(kcfg, "clusters", "cluster", cluster_name, what);
    if (!cluster)
        return -1;
    snprintf(what, sizeof what, "cluster '%.*s' (context '%.*s')", KUBECONFIG_NAME_SHOWN_MAX,
             cluster_name, KUBECONFIG_NAME_SHOWN_MAX, name);
    if (fill_cluster(kcfg, cluster, what, c) < 0)
        return -1;
    if (!user_name || !*user_name)
        return 0; /* anonymous: allowed, the API server decides */
    snprintf(what, sizeof what, "context '%.*s'", KUBECONFIG_NAME_SHOWN_MAX, name);
    const yaml_node_t *user = kubeconfig_find_named(kcfg, "users", "user", user_name, what);
    if (!user)
        return -1;
    snprintf(what, sizeof what, "user '%.*s' (context '%.*s')", KUBECONFIG_NAME_SHOWN_MAX,
             user_name, KUBECONFIG_NAME_SHOWN_MAX, name);
    if (!(c->user = strdup(user_name)))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    return fill_user(kcfg, user, user_name, what, c);
}

/* The named context, else current-context from the first file that sets
 * it (kubectl's merge rule). */
static int select_context(struct kubeconfig *kcfg, const char *context, const char **name) {
    if (context && *context) {
        *name = context;
        return 0;
    }
    for (size_t f = 0; f < kcfg->nfiles; f++) {
        bool bad;
        kubeconfig_use_file(kcfg, f);
        const yaml_node_t *root = kubeconfig_root(kcfg, &bad);
        if (root && kubeconfig_string(kcfg, root, "current-context", "kubeconfig", name) < 0)
            return -1;
        if (root && *name && **name)
            return 0;
    }
    kubeconfig_use_file(kcfg, 0);
    return kubeconfig_fail(kcfg, 0,
                           "no context chosen: current-context is not set and "
                           "kubernetes.context is empty");
}

int kubeconfig_resolve(struct kubeconfig *kcfg, const char *context, struct kube_conn *c) {
    const char *name = NULL;
    if (select_context(kcfg, context, &name) < 0 || use_context(kcfg, name, c) < 0)
        return -1;
    if (!(c->context = strdup(name)))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    return 0;
}
