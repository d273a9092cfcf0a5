/* kubeconfig.c - find the Kubernetes API server and the credentials for it.
 *
 * Three ways, as kubectl and client-go have them: a kubeconfig file (the
 * named context or current-context), the in-cluster service account, or the
 * explicit kubernetes.server/token_file/ca_file of the bridge config.
 *
 * The kubeconfig is read with libyaml's document API, leniently: kubeconfigs
 * carry many keys the bridge has no use for (preferences, extensions,
 * proxy-url, ...), so unknown keys are ignored, but the keys the bridge does
 * use must have the right shape. Relative file paths are resolved against the
 * directory of the file that defines them, as kubectl does. A colon-separated
 * $KUBECONFIG is merged as kubectl merges it: the first file that defines a
 * named cluster/user/context wins, current-context comes from the first file
 * that sets it, and files that do not exist are skipped. An unknown name is
 * an error that lists the names there are.
 *
 * exec credential plugins are read here (command, args, env, apiVersion,
 * installHint, and the KUBERNETES_EXEC_INFO they will get) and run on the
 * loop by sinks/execcred.c, never interactively: interactiveMode Always is
 * refused. auth-provider plugins are refused (removed from client-go), and
 * so is basic auth (removed from Kubernetes). Tokens and keys are secrets:
 * they never appear in messages and are wiped when freed. */
#include "sinks/kubeconfig.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "bridge/lib/base64.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/fileread.h"
#include "bridge/lib/secret.h"
#include "bridge/lib/url.h"
#include "bridge/lib/yamlnode.h"

#define KUBECONFIG_MAX_BYTES (4 * 1024 * 1024)
#define SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"
#define NAME_SHOWN_MAX 64 /* longest context/cluster/user name quoted in a message */

/* One file of the (possibly colon-separated) kubeconfig list. */
struct kubeconfig_file {
    char *path;
    char *dir; /* for relative paths; NULL when path has no '/' */
    yaml_document_t doc;
};

/* The loaded kubeconfig files, in precedence order, and where messages go.
 * path/dir/doc are those of the file being read at the moment (`cur`):
 * every named entry is read from the file that defines it, so its relative
 * paths and line numbers are that file's. */
struct kubeconfig {
    struct kubeconfig_file *files;
    size_t nfiles;
    size_t cur;
    const char *path;
    const char *dir;
    yaml_document_t *doc;
    char *err;
    size_t errlen;
};

/* ---- small helpers ------------------------------------------------------ */

__attribute__((format(printf, 1, 2))) static char *format(const char *fmt, ...) {
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
__attribute__((format(printf, 3, 4))) static int kfail(const struct kubeconfig *kc, int line,
                                                       const char *fmt, ...) {
    if (!kc->err || kc->errlen == 0)
        return -1;
    int n = line > 0 ? snprintf(kc->err, kc->errlen, "%s:%d: ", kc->path, line)
                     : snprintf(kc->err, kc->errlen, "%s: ", kc->path);
    if (n < 0 || (size_t)n >= kc->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kc->err + n, kc->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A server URL as the HTTP client wants it: no trailing '/'. */
static char *server_url(const char *s) {
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '/')
        len--;
    return strndup(s, len);
}

/* ---- reading the kubeconfig -------------------------------------------------- */

/* Append one file to the list kubectl would read, once. */
static int add_path(char ***paths, size_t *n, const char *p, size_t len) {
    for (size_t i = 0; i < *n; i++)
        if (strlen((*paths)[i]) == len && !strncmp((*paths)[i], p, len))
            return 0; /* kubectl reads a repeated file once */
    char **grown = realloc(*paths, (*n + 1) * sizeof *grown);
    if (!grown)
        return -1;
    *paths = grown;
    if (!(grown[*n] = strndup(p, len)))
        return -1;
    (*n)++;
    return 0;
}

/* The files kubectl would read: the argument, else every entry of
 * $KUBECONFIG (in order, empty entries skipped), else ~/.kube/config. */
static int kubeconfig_paths(const char *path, char ***paths, size_t *n, char *err, size_t errlen) {
    int rc = 0;
    const char *env = getenv("KUBECONFIG");
    if (path && *path) {
        rc = add_path(paths, n, path, strlen(path));
    } else if (env && *env) {
        for (const char *s = env; rc == 0 && *s;) {
            size_t len = strcspn(s, ":");
            if (len > 0)
                rc = add_path(paths, n, s, len);
            s += len + (s[len] == ':');
        }
    }
    if (rc == 0 && *n == 0) {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            snprintf(err, errlen,
                     "no kubeconfig: kubernetes.kubeconfig, $KUBECONFIG and $HOME are all unset");
            return -1;
        }
        char *p = format("%s/.kube/config", home);
        rc = p ? add_path(paths, n, p, strlen(p)) : -1;
        free(p);
    }
    if (rc < 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}

static char *directory_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        return NULL;
    return strndup(path, (size_t)(slash - path)); /* "/config": "", and "" + "/ca" is right */
}

/* Read the entries from file i on. */
static void use_file(struct kubeconfig *kc, size_t i) {
    kc->cur = i;
    kc->path = kc->files[i].path;
    kc->dir = kc->files[i].dir;
    kc->doc = &kc->files[i].doc;
}

static int load_document(struct kubeconfig *kc, const char *text, size_t len) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return kfail(kc, 0, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, kc->doc)) {
        if (parser.error == YAML_MEMORY_ERROR)
            rc = kfail(kc, 0, "out of memory");
        else
            rc = kfail(kc, (int)parser.problem_mark.line + 1, "YAML syntax error: %s",
                       parser.problem ? parser.problem : "unknown error");
    }
    yaml_parser_delete(&parser);
    return rc;
}

/* Read and parse the current file; on success it joins kc->files. */
static int kubeconfig_open(struct kubeconfig *kc) {
    char *text;
    size_t len;
    if (file_read_all(kc->path, KUBECONFIG_MAX_BYTES, &text, &len, kc->err, kc->errlen) < 0)
        return -1;
    int rc = load_document(kc, text, len);
    free(text);
    if (rc < 0)
        return -1;
    struct kubeconfig_file *f = &kc->files[kc->nfiles];
    if (strchr(kc->path, '/') && !(f->dir = directory_of(kc->path))) {
        yaml_document_delete(kc->doc);
        return kfail(kc, 0, "out of memory");
    }
    kc->nfiles++;
    return 0;
}

/* The top-level mapping of the current file; NULL for an empty file, which
 * is an error only when it is the one file there is. */
static const yaml_node_t *root_mapping(struct kubeconfig *kc, bool *bad) {
    const yaml_node_t *root = yaml_document_get_root_node(kc->doc);
    *bad = false;
    if (!root || yamlnode_is_null(root)) {
        if (kc->nfiles == 1) {
            *bad = true;
            kfail(kc, 0, "empty kubeconfig");
        }
        return NULL;
    }
    if (root->type != YAML_MAPPING_NODE) {
        *bad = true;
        kfail(kc, yamlnode_line(root), "not a kubeconfig: the top level is not a mapping");
        return NULL;
    }
    return root;
}

/* Every file of paths, in order, into kc->files. Files of a $KUBECONFIG
 * list that do not exist are skipped, as kubectl does, unless none does. */
static int kubeconfig_load(struct kubeconfig *kc, char **paths, size_t n) {
    if (!(kc->files = calloc(n, sizeof *kc->files)))
        return kfail(kc, 0, "out of memory");
    size_t missing = 0;
    for (size_t i = 0; i < n; i++) {
        kc->files[kc->nfiles].path = paths[i];
        use_file(kc, kc->nfiles);
        if (n > 1 && access(paths[i], F_OK) != 0 && errno == ENOENT) {
            missing++;
            continue;
        }
        if (kubeconfig_open(kc) < 0)
            return -1;
    }
    if (kc->nfiles == 0) {
        kc->path = paths[0];
        return kfail(kc, 0, "cannot read: none of the %zu files in $KUBECONFIG exists", missing);
    }
    for (size_t i = 0; i < kc->nfiles; i++) {
        bool bad;
        use_file(kc, i);
        if (!root_mapping(kc, &bad) && bad)
            return -1;
    }
    use_file(kc, 0);
    return 0;
}

static void kubeconfig_close(struct kubeconfig *kc) {
    for (size_t i = 0; i < kc->nfiles; i++) {
        yaml_document_delete(&kc->files[i].doc);
        free(kc->files[i].dir);
    }
    free(kc->files);
    kc->files = NULL;
    kc->nfiles = 0;
}

/* The value of key in a mapping, or NULL (also for a null value). */
static const yaml_node_t *lookup(struct kubeconfig *kc, const yaml_node_t *map, const char *key) {
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (const yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(kc->doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp(yamlnode_text(k), key)) {
            const yaml_node_t *v = yaml_document_get_node(kc->doc, p->value);
            return v && !yamlnode_is_null(v) ? v : NULL;
        }
    }
    return NULL;
}

/* A string value: *out is NULL when absent; error when it is not a string. */
static int get_string(struct kubeconfig *kc, const yaml_node_t *map, const char *key,
                      const char *what, const char **out) {
    const yaml_node_t *v = lookup(kc, map, key);
    *out = NULL;
    if (!v)
        return 0;
    if (v->type != YAML_SCALAR_NODE || strlen(yamlnode_text(v)) != v->data.scalar.length)
        return kfail(kc, yamlnode_line(v), "%s: %s must be a string", what, key);
    *out = yamlnode_text(v);
    return 0;
}

/* Go's YAML reads these spellings as booleans. */
static int get_bool(struct kubeconfig *kc, const yaml_node_t *map, const char *key,
                    const char *what, bool *out) {
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "on", NULL};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No", "off", NULL};
    const yaml_node_t *v = lookup(kc, map, key);
    *out = false;
    if (!v)
        return 0;
    for (size_t i = 0; v->type == YAML_SCALAR_NODE && yes[i]; i++) {
        if (!strcmp(yamlnode_text(v), yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcmp(yamlnode_text(v), no[i]))
            return 0;
    }
    return kfail(kc, yamlnode_line(v), "%s: %s must be true or false", what, key);
}

#define NAMES_SHOWN_MAX 512 /* longest list of names quoted in a message */

/* The list `list` (clusters/users/contexts) of the current file, or NULL. */
static const yaml_node_t *named_list(struct kubeconfig *kc, const char *list, bool *bad) {
    bool empty_bad;
    const yaml_node_t *root = root_mapping(kc, &empty_bad);
    const yaml_node_t *seq = root ? lookup(kc, root, list) : NULL;
    *bad = false;
    if (seq && seq->type != YAML_SEQUENCE_NODE) {
        *bad = true;
        kfail(kc, yamlnode_line(seq), "%s must be a list", list);
        return NULL;
    }
    return seq;
}

/* "; the contexts are: a, b" (every file, first definition of a name only)
 * or "; there are no contexts", for messages that name what exists. */
static void list_names(struct kubeconfig *kc, const char *list, buf_t *out) {
    size_t cur = kc->cur;
    size_t count = 0;
    for (size_t f = 0; f < kc->nfiles; f++) {
        bool bad;
        use_file(kc, f);
        const yaml_node_t *seq = named_list(kc, list, &bad);
        for (yaml_node_item_t *i = seq ? seq->data.sequence.items.start : NULL;
             seq && i < seq->data.sequence.items.top; i++) {
            const yaml_node_t *n = lookup(kc, yaml_document_get_node(kc->doc, *i), "name");
            if (!n || n->type != YAML_SCALAR_NODE)
                continue;
            const char *name = yamlnode_text(n);
            char quoted[NAME_SHOWN_MAX + 8];
            snprintf(quoted, sizeof quoted, "'%.*s'", NAME_SHOWN_MAX, name);
            if (out->data && strstr(out->data, quoted))
                continue; /* defined in an earlier file: that one is used */
            if (out->len > NAMES_SHOWN_MAX) {
                if (buf_printf(out, ", ...") < 0)
                    return;
                goto done;
            }
            if (buf_printf(out, "%s%s", count++ ? ", " : "", quoted) < 0)
                return;
        }
    }
done:
    use_file(kc, cur);
}

/* The entry of clusters/users/contexts whose name matches, as the mapping
 * under its `inner` key (cluster/user/context), from the first file that
 * defines it (which becomes the current file). Error when not found, naming
 * the ones there are; `referrer` ("context 'x'") says who asked for it, or
 * is NULL. */
static const yaml_node_t *find_named(struct kubeconfig *kc, const char *list, const char *inner,
                                     const char *name, const char *referrer) {
    for (size_t f = 0; f < kc->nfiles; f++) {
        bool bad;
        use_file(kc, f);
        const yaml_node_t *seq = named_list(kc, list, &bad);
        if (bad)
            return NULL;
        for (yaml_node_item_t *i = seq ? seq->data.sequence.items.start : NULL;
             seq && i < seq->data.sequence.items.top; i++) {
            const yaml_node_t *entry = yaml_document_get_node(kc->doc, *i);
            const yaml_node_t *n = lookup(kc, entry, "name");
            if (!n || n->type != YAML_SCALAR_NODE || strcmp(yamlnode_text(n), name) != 0)
                continue;
            const yaml_node_t *body = lookup(kc, entry, inner);
            if (!body) {
                kfail(kc, yamlnode_line(entry), "%s '%.*s' has no '%s' section", inner,
                      NAME_SHOWN_MAX, name, inner);
                return NULL;
            }
            if (body->type != YAML_MAPPING_NODE) {
                kfail(kc, yamlnode_line(body), "%s '%.*s': '%s' must be a mapping", inner,
                      NAME_SHOWN_MAX, name, inner);
                return NULL;
            }
            return body;
        }
    }
    use_file(kc, 0);
    buf_t names = BUF_INIT;
    list_names(kc, list, &names);
    const char *shown = names.len ? names.data : "";
    if (referrer)
        kfail(kc, 0, "%s refers to %s '%.*s', which is not defined in %s; %s%s%s%s", referrer,
              inner, NAME_SHOWN_MAX, name, list, names.len ? "the " : "there are no ", list,
              names.len ? " are: " : "", shown);
    else
        kfail(kc, 0, "%s '%.*s' is not defined in %s; %s%s%s%s", inner, NAME_SHOWN_MAX, name, list,
              names.len ? "the " : "there are no ", list, names.len ? " are: " : "", shown);
    buf_free(&names);
    return NULL;
}

/* A path from the kubeconfig, relative ones taken from its directory. */
static int resolve_path(struct kubeconfig *kc, const char *p, char **out) {
    *out = p[0] == '/' || !kc->dir ? strdup(p) : format("%s/%s", kc->dir, p);
    return *out ? 0 : kfail(kc, 0, "out of memory");
}

/* An inline -data field (base64) or, failing that, a file path: -data wins
 * when both are present, as in client-go. */
static int file_or_data(struct kubeconfig *kc, const yaml_node_t *map, const char *key,
                        const char *what, char **file, char **pem, size_t *pem_len) {
    char data_key[64];
    const char *path, *data;
    snprintf(data_key, sizeof data_key, "%s-data", key);
    if (get_string(kc, map, key, what, &path) < 0 || get_string(kc, map, data_key, what, &data) < 0)
        return -1;
    if (data && *data) {
        if (base64_decode(data, strlen(data), BASE64_SKIP_NEWLINES, pem, pem_len) == 0)
            return 0;
        return kfail(kc, yamlnode_line(lookup(kc, map, data_key)), "%s: %s is not valid base64",
                     what, data_key);
    }
    if (path && *path)
        return resolve_path(kc, path, file);
    return 0;
}

/* ---- clusters, users, contexts ------------------------------------------- */

static int fill_cluster(struct kubeconfig *kc, const yaml_node_t *cluster, const char *what,
                        struct kube_conn *c) {
    const char *server;
    if (get_string(kc, cluster, "server", what, &server) < 0)
        return -1;
    if (!server || !*server)
        return kfail(kc, yamlnode_line(cluster), "%s has no server", what);
    if (!url_is_http(server))
        return kfail(kc, yamlnode_line(lookup(kc, cluster, "server")),
                     "%s: server must be an https:// (or http://) URL", what);
    if (!(c->server = server_url(server)))
        return kfail(kc, 0, "out of memory");
    if (file_or_data(kc, cluster, "certificate-authority", what, &c->ca_file, &c->ca_pem,
                     &c->ca_pem_len) < 0 ||
        get_bool(kc, cluster, "insecure-skip-tls-verify", what, &c->insecure) < 0)
        return -1;
    /* client-go refuses this combination; so do we, rather than pick one. */
    if (c->insecure && (c->ca_file || c->ca_pem))
        return kfail(kc, yamlnode_line(cluster),
                     "%s: insecure-skip-tls-verify cannot be combined with a certificate "
                     "authority",
                     what);
    return 0;
}

/* spec.cluster of the ExecCredential (provideClusterInfo): the server, its
 * CA as certificate-authority-data, insecure-skip-tls-verify. */
static int add_cluster_info(struct kubeconfig *kc, cJSON *spec, const struct kube_conn *c) {
    cJSON *cluster = cJSON_AddObjectToObject(spec, "cluster");
    if (!cluster || !cJSON_AddStringToObject(cluster, "server", c->server))
        return kfail(kc, 0, "out of memory");
    char *pem = NULL, *b64 = NULL;
    size_t len = 0;
    if (c->ca_file &&
        file_read_all(c->ca_file, KUBECONFIG_MAX_BYTES, &pem, &len, kc->err, kc->errlen) < 0)
        return -1;
    const char *ca = c->ca_pem ? c->ca_pem : pem;
    size_t ca_len = c->ca_pem ? c->ca_pem_len : len;
    int rc = 0;
    if (ca && (!(b64 = base64_encode(ca, ca_len)) ||
               !cJSON_AddStringToObject(cluster, "certificate-authority-data", b64)))
        rc = kfail(kc, 0, "out of memory");
    free(pem);
    free(b64);
    if (rc == 0 && c->insecure && !cJSON_AddTrueToObject(cluster, "insecure-skip-tls-verify"))
        rc = kfail(kc, 0, "out of memory");
    return rc;
}

/* A list of strings (args) as a NULL-terminated vector. */
static int get_args(struct kubeconfig *kc, const yaml_node_t *exec, const char *what,
                    struct kube_exec *e) {
    const yaml_node_t *seq = lookup(kc, exec, "args");
    if (!seq)
        return (e->args = calloc(1, sizeof *e->args)) ? 0 : kfail(kc, 0, "out of memory");
    if (seq->type != YAML_SEQUENCE_NODE)
        return kfail(kc, yamlnode_line(seq), "%s: exec: args must be a list of strings", what);
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (!(e->args = calloc(n + 1, sizeof *e->args)))
        return kfail(kc, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *v = yaml_document_get_node(kc->doc, seq->data.sequence.items.start[i]);
        if (!v || v->type != YAML_SCALAR_NODE || strlen(yamlnode_text(v)) != v->data.scalar.length)
            return kfail(kc, yamlnode_line(v ? v : seq), "%s: exec: args must be a list of strings",
                         what);
        if (!(e->args[i] = strdup(yamlnode_text(v))))
            return kfail(kc, 0, "out of memory");
        e->nargs++;
    }
    return 0;
}

/* env: a list of {name, value}, as "NAME=value". */
static int get_env(struct kubeconfig *kc, const yaml_node_t *exec, const char *what,
                   struct kube_exec *e) {
    const yaml_node_t *seq = lookup(kc, exec, "env");
    if (!seq)
        return 0;
    if (seq->type != YAML_SEQUENCE_NODE)
        return kfail(kc, yamlnode_line(seq), "%s: exec: env must be a list of name/value pairs",
                     what);
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (!(e->env = calloc(n + 1, sizeof *e->env)))
        return kfail(kc, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *v = yaml_document_get_node(kc->doc, seq->data.sequence.items.start[i]);
        const char *name, *value;
        if (!v || v->type != YAML_MAPPING_NODE)
            return kfail(kc, yamlnode_line(v ? v : seq),
                         "%s: exec: env must be a list of name/value pairs", what);
        if (get_string(kc, v, "name", what, &name) < 0 ||
            get_string(kc, v, "value", what, &value) < 0)
            return -1;
        if (!name || !*name || strchr(name, '='))
            return kfail(kc, yamlnode_line(v), "%s: exec: env entry %zu has no valid name", what,
                         i + 1);
        if (!(e->env[i] = format("%s=%s", name, value ? value : "")))
            return kfail(kc, 0, "out of memory");
        e->nenv++;
    }
    return 0;
}

/* An `exec` credential plugin, checked as client-go checks it. The bridge
 * never runs a plugin interactively (it has no terminal), so
 * interactiveMode Always is refused here rather than at the first request. */
static int parse_exec(struct kubeconfig *kc, const yaml_node_t *exec, const char *name,
                      const char *what, struct kube_conn *c) {
    const char *command, *api_version, *mode, *hint;
    bool cluster_info;
    int line = yamlnode_line(exec);
    if (exec->type != YAML_MAPPING_NODE)
        return kfail(kc, line, "%s: exec must be a mapping", what);
    if (get_string(kc, exec, "command", what, &command) < 0 ||
        get_string(kc, exec, "apiVersion", what, &api_version) < 0 ||
        get_string(kc, exec, "interactiveMode", what, &mode) < 0 ||
        get_string(kc, exec, "installHint", what, &hint) < 0 ||
        get_bool(kc, exec, "provideClusterInfo", what, &cluster_info) < 0)
        return -1;
    if (!command || !*command)
        return kfail(kc, line, "%s: exec: command is required", what);
    bool v1 = api_version && !strcmp(api_version, "client.authentication.k8s.io/v1");
    if (!v1 && (!api_version || strcmp(api_version, "client.authentication.k8s.io/v1beta1")))
        return kfail(kc, line,
                     "%s: exec: apiVersion must be client.authentication.k8s.io/v1 or "
                     "client.authentication.k8s.io/v1beta1, not '%.*s'",
                     what, NAME_SHOWN_MAX, api_version ? api_version : "");
    if (v1 && (!mode || !*mode))
        return kfail(kc, line, "%s: exec: interactiveMode must be set for apiVersion %s", what,
                     api_version);
    if (mode && *mode && strcmp(mode, "Never") && strcmp(mode, "IfAvailable")) {
        if (!strcmp(mode, "Always"))
            return kfail(kc, line,
                         "%s: exec: interactiveMode Always needs a terminal, and canary-bridge "
                         "runs credential plugins without one; use Never or IfAvailable",
                         what);
        return kfail(kc, line,
                     "%s: exec: interactiveMode must be Never, IfAvailable or Always, not '%.*s'",
                     what, NAME_SHOWN_MAX, mode);
    }
    struct kube_exec *e = calloc(1, sizeof *e);
    if (!e)
        return kfail(kc, 0, "out of memory");
    c->exec = e;
    if (!(e->api_version = strdup(api_version)) || !(e->user = strdup(name)) ||
        (hint && *hint && !(e->install_hint = strdup(hint))))
        return kfail(kc, 0, "out of memory");
    /* client-go resolves a command with a '/' against the kubeconfig's
     * directory and looks a bare name up in $PATH. */
    if (strchr(command, '/') ? resolve_path(kc, command, &e->command) < 0
                             : !(e->command = strdup(command)))
        return kfail(kc, 0, "out of memory");
    if (get_args(kc, exec, what, e) < 0 || get_env(kc, exec, what, e) < 0)
        return -1;
    cJSON *info = cJSON_CreateObject(), *spec = NULL;
    int rc = 0;
    if (!info || !cJSON_AddStringToObject(info, "kind", "ExecCredential") ||
        !cJSON_AddStringToObject(info, "apiVersion", api_version) ||
        !(spec = cJSON_AddObjectToObject(info, "spec")) ||
        !cJSON_AddFalseToObject(spec, "interactive"))
        rc = kfail(kc, 0, "out of memory");
    if (rc == 0 && cluster_info)
        rc = add_cluster_info(kc, spec, c);
    if (rc == 0 && !(e->exec_info = cJSON_PrintUnformatted(info)))
        rc = kfail(kc, 0, "out of memory");
    cJSON_Delete(info);
    return rc;
}

static int refuse_plugins(struct kubeconfig *kc, const yaml_node_t *user, const char *name) {
    const yaml_node_t *provider = lookup(kc, user, "auth-provider");
    const char *username, *password;
    if (provider)
        return kfail(kc, yamlnode_line(provider),
                     "user '%.*s' uses an auth-provider plugin, which canary-bridge does not run; "
                     "use a token, a client certificate or an exec plugin",
                     NAME_SHOWN_MAX, name);
    if (get_string(kc, user, "username", "user", &username) < 0 ||
        get_string(kc, user, "password", "user", &password) < 0)
        return -1;
    if ((username && *username) || (password && *password))
        return kfail(kc, yamlnode_line(user),
                     "user '%.*s' uses a username and password (basic auth), which Kubernetes "
                     "no longer supports; use a token or client certificate",
                     NAME_SHOWN_MAX, name);
    return 0;
}

static int fill_user(struct kubeconfig *kc, const yaml_node_t *user, const char *name,
                     const char *what, struct kube_conn *c) {
    const char *token, *token_file;
    if (refuse_plugins(kc, user, name) < 0 || get_string(kc, user, "token", what, &token) < 0 ||
        get_string(kc, user, "tokenFile", what, &token_file) < 0)
        return -1;
    if (token && *token && !(c->token = strdup(token)))
        return kfail(kc, 0, "out of memory");
    /* Both may be set; the HTTP side prefers the file, re-read on use, as
     * client-go does. */
    if (token_file && *token_file && resolve_path(kc, token_file, &c->token_file) < 0)
        return -1;
    if (file_or_data(kc, user, "client-certificate", what, &c->cert_file, &c->cert_pem,
                     &c->cert_pem_len) < 0 ||
        file_or_data(kc, user, "client-key", what, &c->key_file, &c->key_pem, &c->key_pem_len) < 0)
        return -1;
    bool cert = c->cert_file || c->cert_pem, key = c->key_file || c->key_pem;
    if (cert != key)
        return kfail(kc, yamlnode_line(user), "%s: %s needs %s as well", what,
                     cert ? "client-certificate" : "client-key",
                     cert ? "client-key" : "client-certificate");
    /* As in client-go, a token or client certificate in the kubeconfig takes
     * precedence and the plugin is not run. */
    const yaml_node_t *exec = lookup(kc, user, "exec");
    if (exec && !c->token && !c->token_file && !cert)
        return parse_exec(kc, exec, name, what, c);
    return 0;
}

static int use_context(struct kubeconfig *kc, const char *name, struct kube_conn *c) {
    const yaml_node_t *ctx = find_named(kc, "contexts", "context", name, NULL);
    const char *cluster_name, *user_name;
    char what[2 * NAME_SHOWN_MAX + 32];
    if (!ctx)
        return -1;
    snprintf(what, sizeof what, "context '%.*s'", NAME_SHOWN_MAX, name);
    if (get_string(kc, ctx, "cluster", what, &cluster_name) < 0 ||
        get_string(kc, ctx, "user", what, &user_name) < 0)
        return -1;
    if (!cluster_name || !*cluster_name)
        return kfail(kc, yamlnode_line(ctx), "%s names no cluster", what);
    const yaml_node_t *cluster = find_named(kc, "clusters", "cluster", cluster_name, what);
    if (!cluster)
        return -1;
    snprintf(what, sizeof what, "cluster '%.*s' (context '%.*s')", NAME_SHOWN_MAX, cluster_name,
             NAME_SHOWN_MAX, name);
    if (fill_cluster(kc, cluster, what, c) < 0)
        return -1;
    if (!user_name || !*user_name)
        return 0; /* anonymous: allowed, the API server decides */
    snprintf(what, sizeof what, "context '%.*s'", NAME_SHOWN_MAX, name);
    const yaml_node_t *user = find_named(kc, "users", "user", user_name, what);
    if (!user)
        return -1;
    snprintf(what, sizeof what, "user '%.*s' (context '%.*s')", NAME_SHOWN_MAX, user_name,
             NAME_SHOWN_MAX, name);
    if (!(c->user = strdup(user_name)))
        return kfail(kc, 0, "out of memory");
    return fill_user(kc, user, user_name, what, c);
}

/* The named context, else current-context from the first file that sets
 * it (kubectl's merge rule). */
static int select_context(struct kubeconfig *kc, const char *context, const char **name) {
    if (context && *context) {
        *name = context;
        return 0;
    }
    for (size_t f = 0; f < kc->nfiles; f++) {
        bool bad;
        use_file(kc, f);
        const yaml_node_t *root = root_mapping(kc, &bad);
        if (root && get_string(kc, root, "current-context", "kubeconfig", name) < 0)
            return -1;
        if (root && *name && **name)
            return 0;
    }
    use_file(kc, 0);
    return kfail(kc, 0,
                 "no context chosen: current-context is not set and "
                 "kubernetes.context is empty");
}

static int read_kubeconfig(struct kubeconfig *kc, char **paths, size_t npaths, const char *context,
                           struct kube_conn *c) {
    const char *name = NULL;
    int rc = kubeconfig_load(kc, paths, npaths);
    if (rc == 0)
        rc = select_context(kc, context, &name);
    if (rc == 0)
        rc = use_context(kc, name, c);
    if (rc == 0 && !(c->context = strdup(name)))
        rc = kfail(kc, 0, "out of memory");
    kubeconfig_close(kc);
    return rc;
}

/* ---- public ------------------------------------------------------------------- */

int kube_conn_from_kubeconfig(const char *path, const char *context, struct kube_conn *out,
                              char *err, size_t errlen) {
    struct kube_conn c = {0};
    memset(out, 0, sizeof *out);
    char **paths = NULL;
    size_t npaths = 0;
    int rc = kubeconfig_paths(path, &paths, &npaths, err, errlen);
    struct kubeconfig kc = {.err = err, .errlen = errlen};
    if (rc == 0)
        rc = read_kubeconfig(&kc, paths, npaths, context, &c);
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
    char *path = format("%s/%s", dir, name);
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
    c.server = strchr(host, ':') ? format("https://[%s]:%s", host, port)
                                 : format("https://%s:%s", host, port);
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
    if (!(c.server = server_url(cfg->server)) ||
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
