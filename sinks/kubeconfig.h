/* kubeconfig.h - where the Kubernetes API is and how to authenticate to it:
 * a kubeconfig file (current context or a named one), the in-cluster service
 * account, or the explicit server/token_file/ca_file of the bridge config.
 * Only the subset a daemon needs: server, CA (file or -data), bearer token
 * (token or tokenFile), client certificate and key (file or -data),
 * insecure-skip-tls-verify, and exec credential plugins
 * (client.authentication.k8s.io/v1 and v1beta1; run by sinks/execcred.c,
 * never interactively). auth-provider plugins and basic auth are refused. */
#ifndef CB_KUBECONFIG_H
#define CB_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* The config file's `kubernetes` section (bridge/config.c fills it). */
struct kube_settings {
    char *kubeconfig; /* default $KUBECONFIG, else ~/.kube/config */
    char *context;    /* NULL or "": current-context */
    bool in_cluster;
    char *server; /* explicit: server + token_file + ca_file */
    char *token_file;
    char *ca_file;
    bool insecure_skip_verify;
    char *field_manager; /* NULL: "canary-bridge@<hostname>" */
};

/* A user's `exec` credential plugin, as the kubeconfig gives it. */
struct kube_exec {
    char *command; /* resolved against the kubeconfig's directory when it has a '/' */
    char **args;   /* NULL-terminated argv without argv[0] */
    size_t nargs;
    char **env; /* "NAME=value", added to the bridge's environment */
    size_t nenv;
    char *api_version;  /* client.authentication.k8s.io/v1 or /v1beta1 */
    char *install_hint; /* shown when the command is missing, or NULL */
    char *exec_info;    /* KUBERNETES_EXEC_INFO: the ExecCredential JSON passed in */
    char *user;         /* the kubeconfig user, for messages */
};

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
    bool insecure;          /* insecure-skip-tls-verify: caller logs a loud warning */
    char *context;          /* the context used (for logs), or NULL */
    char *user;             /* the kubeconfig user used (for `check`), or NULL */
    struct kube_exec *exec; /* credential plugin, or NULL */
};

void kube_exec_free(struct kube_exec *e);

/* kubeconfig at path (NULL: $KUBECONFIG, else $HOME/.kube/config), context
 * NULL/"" for current-context. Errors name the file and what is wrong. */
int kube_conn_from_kubeconfig(const char *path, const char *context, struct kube_conn *out,
                              char *err, size_t errlen);
/* KUBERNETES_SERVICE_HOST/PORT + /var/run/secrets/kubernetes.io/serviceaccount/
 * (root overridable for tests via CANARY_BRIDGE_SA_DIR). */
int kube_conn_in_cluster(struct kube_conn *out, char *err, size_t errlen);
/* Dispatch on the settings: server set -> explicit; in_cluster -> in-cluster;
 * else kubeconfig. */
int kube_conn_from_config(const struct kube_settings *cfg, struct kube_conn *out, char *err,
                          size_t errlen);
void kube_conn_free(struct kube_conn *c);

#endif
