/* kubeconfig.h - where the Kubernetes API is and how to authenticate to it:
 * a kubeconfig file (current context or a named one), the in-cluster service
 * account, or the explicit server/token_file/ca_file of the bridge config.
 * Only the subset a daemon needs: server, CA (file or -data), bearer token
 * (token or tokenFile), client certificate and key (file or -data),
 * insecure-skip-tls-verify. exec/auth-provider plugins are refused with a
 * clear error (they would need a blocking subprocess). */
#ifndef CB_KUBECONFIG_H
#define CB_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "bridge/config.h"

struct kube_conn {
    char *server;     /* "https://host:port", no trailing slash */
    char *token;      /* bearer token, or NULL (secret: never log) */
    char *token_file; /* re-read on every use when set, or NULL */
    char *ca_file;
    char *ca_pem; /* decoded certificate-authority-data */
    size_t ca_pem_len;
    char *cert_file;
    char *cert_pem;
    size_t cert_pem_len;
    char *key_file;
    char *key_pem;
    size_t key_pem_len;
    bool insecure; /* insecure-skip-tls-verify: caller logs a loud warning */
    char *context; /* the context used (for logs), or NULL */
};

/* kubeconfig at path (NULL: $KUBECONFIG, else $HOME/.kube/config), context
 * NULL/"" for current-context. Errors name the file and what is wrong. */
int kube_conn_from_kubeconfig(const char *path, const char *context, struct kube_conn *out,
                              char *err, size_t errlen);
/* KUBERNETES_SERVICE_HOST/PORT + /var/run/secrets/kubernetes.io/serviceaccount/
 * (root overridable for tests via CANARY_BRIDGE_SA_DIR). */
int kube_conn_in_cluster(struct kube_conn *out, char *err, size_t errlen);
/* Dispatch on cfg->kubernetes: server set -> explicit; in_cluster -> in-cluster;
 * else kubeconfig. */
int kube_conn_from_config(const struct config *cfg, struct kube_conn *out, char *err,
                          size_t errlen);
void kube_conn_free(struct kube_conn *c);

#endif
