/* kubeconfig_exec.c - a kubeconfig user's exec credential plugin.
 *
 * Read here (command, args, env, apiVersion, installHint, and the
 * KUBERNETES_EXEC_INFO the plugin will get) and run on the loop by
 * sinks/execcred.c, never interactively: interactiveMode Always is refused.
 * The env values may carry secrets: kube_exec_free wipes them. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "bridge/lib/base64.h"
#include "bridge/lib/fileread.h"
#include "bridge/lib/yamlnode.h"
#include "sinks/kubeconfig_internal.h"

/* spec.cluster of the ExecCredential (provideClusterInfo): the server, its
 * CA as certificate-authority-data, insecure-skip-tls-verify. */
static int add_cluster_info(struct kubeconfig *kcfg, cJSON *spec, const struct kube_conn *c) {
    cJSON *cluster = cJSON_AddObjectToObject(spec, "cluster");
    if (!cluster || !cJSON_AddStringToObject(cluster, "server", c->server))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    char *pem = NULL, *b64 = NULL;
    size_t len = 0;
    if (c->ca_file &&
        file_read_all(c->ca_file, KUBECONFIG_MAX_BYTES, &pem, &len, kcfg->err, kcfg->errlen) < 0)
        return -1;
    const char *ca = c->ca_pem ? c->ca_pem : pem;
    size_t ca_len = c->ca_pem ? c->ca_pem_len : len;
    int rc = 0;
    if (ca && (!(b64 = base64_encode(ca, ca_len)) ||
               !cJSON_AddStringToObject(cluster, "certificate-authority-data", b64)))
        rc = kubeconfig_fail(kcfg, 0, "out of memory");
    free(pem);
    free(b64);
    if (rc == 0 && c->insecure && !cJSON_AddTrueToObject(cluster, "insecure-skip-tls-verify"))
        rc = kubeconfig_fail(kcfg, 0, "out of memory");
    return rc;
}

/* A list of strings (args) as a NULL-terminated vector. */
static int read_args(struct kubeconfig *kcfg, const yaml_node_t *exec, const char *what,
                     struct kube_exec *e) {
    const yaml_node_t *seq = kubeconfig_lookup(kcfg, exec, "args");
    if (!seq)
        return (e->args = calloc(1, sizeof *e->args)) ? 0
                                                      : kubeconfig_fail(kcfg, 0, "out of memory");
    if (seq->type != YAML_SEQUENCE_NODE)
        return kubeconfig_fail(kcfg, yamlnode_line(seq), "%s: exec: args must be a list of strings",
                               what);
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (!(e->args = calloc(n + 1, sizeof *e->args)))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *v = yaml_document_get_node(kcfg->doc, seq->data.sequence.items.start[i]);
        if (!v || v->type != YAML_SCALAR_NODE || strlen(yamlnode_text(v)) != v->data.scalar.length)
            return kubeconfig_fail(kcfg, yamlnode_line(v ? v : seq),
                                   "%s: exec: args must be a list of strings", what);
        if (!(e->args[i] = strdup(yamlnode_text(v))))
            return kubeconfig_fail(kcfg, 0, "out of memory");
        e->nargs++;
    }
    return 0;
}

/* env: a list of {name, value}, as "NAME=value". */
static int read_env(struct kubeconfig *kcfg, const yaml_node_t *exec, const char *what,
                    struct kube_exec *e) {
    const yaml_node_t *seq = kubeconfig_lookup(kcfg, exec, "env");
    if (!seq)
        return 0;
    if (seq->type != YAML_SEQUENCE_NODE)
        return kubeconfig_fail(kcfg, yamlnode_line(seq),
                               "%s: exec: env must be a list of name/value pairs", what);
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (!(e->env = calloc(n + 1, sizeof *e->env)))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *v = yaml_document_get_node(kcfg->doc, seq->data.sequence.items.start[i]);
        const char *name, *value;
        if (!v || v->type != YAML_MAPPING_NODE)
            return kubeconfig_fail(kcfg, yamlnode_line(v ? v : seq),
                                   "%s: exec: env must be a list of name/value pairs", what);
        if (kubeconfig_string(kcfg, v, "name", what, &name) < 0 ||
            kubeconfig_string(kcfg, v, "value", what, &value) < 0)
            return -1;
        if (!name || !*name || strchr(name, '='))
            return kubeconfig_fail(kcfg, yamlnode_line(v),
                                   "%s: exec: env entry %zu has no valid name", what, i + 1);
        if (!(e->env[i] = kubeconfig_format("%s=%s", name, value ? value : "")))
            return kubeconfig_fail(kcfg, 0, "out of memory");
        e->nenv++;
    }
    return 0;
}

/* An `exec` credential plugin, checked as client-go checks it. The bridge
 * never runs a plugin interactively (it has no terminal), so
 * interactiveMode Always is refused here rather than at the first request. */
int kubeconfig_exec_parse(struct kubeconfig *kcfg, const yaml_node_t *exec, const char *name,
                          const char *what, struct kube_conn *c) {
    const char *command, *api_version, *mode, *hint;
    bool cluster_info;
    int line = yamlnode_line(exec);
    if (exec->type != YAML_MAPPING_NODE)
        return kubeconfig_fail(kcfg, line, "%s: exec must be a mapping", what);
    if (kubeconfig_string(kcfg, exec, "command", what, &command) < 0 ||
        kubeconfig_string(kcfg, exec, "apiVersion", what, &api_version) < 0 ||
        kubeconfig_string(kcfg, exec, "interactiveMode", what, &mode) < 0 ||
        kubeconfig_string(kcfg, exec, "installHint", what, &hint) < 0 ||
        kubeconfig_bool(kcfg, exec, "provideClusterInfo", what, &cluster_info) < 0)
        return -1;
    if (!command || !*command)
        return kubeconfig_fail(kcfg, line, "%s: exec: command is required", what);
    bool v1 = api_version && !strcmp(api_version, "client.authentication.k8s.io/v1");
    if (!v1 && (!api_version || strcmp(api_version, "client.authentication.k8s.io/v1beta1")))
        return kubeconfig_fail(kcfg, line,
                               "%s: exec: apiVersion must be client.authentication.k8s.io/v1 or "
                               "client.authentication.k8s.io/v1beta1, not '%.*s'",
                               what, KUBECONFIG_NAME_SHOWN_MAX, api_version ? api_version : "");
    if (v1 && (!mode || !*mode))
        return kubeconfig_fail(kcfg, line,
                               "%s: exec: interactiveMode must be set for apiVersion %s", what,
                               api_version);
    if (mode && *mode && strcmp(mode, "Never") && strcmp(mode, "IfAvailable")) {
        if (!strcmp(mode, "Always"))
            return kubeconfig_fail(
                kcfg, line,
                "%s: exec: interactiveMode Always needs a terminal, and canary-bridge "
                "runs credential plugins without one; use Never or IfAvailable",
                what);
        return kubeconfig_fail(
            kcfg, line,
            "%s: exec: interactiveMode must be Never, IfAvailable or Always, not '%.*s'", what,
            KUBECONFIG_NAME_SHOWN_MAX, mode);
    }
    struct kube_exec *e = calloc(1, sizeof *e);
    if (!e)
        return kubeconfig_fail(kcfg, 0, "out of memory");
    c->exec = e;
    if (!(e->api_version = strdup(api_version)) || !(e->user = strdup(name)) ||
        (hint && *hint && !(e->install_hint = strdup(hint))))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    /* client-go resolves a command with a '/' against the kubeconfig's
     * directory and looks a bare name up in $PATH. */
    if (strchr(command, '/') ? kubeconfig_path(kcfg, command, &e->command) < 0
                             : !(e->command = strdup(command)))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    if (read_args(kcfg, exec, what, e) < 0 || read_env(kcfg, exec, what, e) < 0)
        return -1;
    cJSON *info = cJSON_CreateObject(), *spec = NULL;
    int rc = 0;
    if (!info || !cJSON_AddStringToObject(info, "kind", "ExecCredential") ||
        !cJSON_AddStringToObject(info, "apiVersion", api_version) ||
        !(spec = cJSON_AddObjectToObject(info, "spec")) ||
        !cJSON_AddFalseToObject(spec, "interactive"))
        rc = kubeconfig_fail(kcfg, 0, "out of memory");
    if (rc == 0 && cluster_info)
        rc = add_cluster_info(kcfg, spec, c);
    if (rc == 0 && !(e->exec_info = cJSON_PrintUnformatted(info)))
        rc = kubeconfig_fail(kcfg, 0, "out of memory");
    cJSON_Delete(info);
    return rc;
}
