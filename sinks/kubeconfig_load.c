/* kubeconfig_load.c - the kubeconfig files, read and merged as kubectl does.
 *
 * The kubeconfig is read with libyaml's document API, leniently: kubeconfigs
 * carry many keys the bridge has no use for (preferences, extensions,
 * proxy-url, ...), so unknown keys are ignored, but the keys the bridge does
 * use must have the right shape. Relative file paths are resolved against the
 * directory of the file that defines them, as kubectl does. A colon-separated
 * $KUBECONFIG is merged as kubectl merges it: the first file that defines a
 * named cluster/user/context wins, and files that do not exist are skipped.
 * An unknown name is an error that lists the names there are. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "bridge/lib/base64.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/fileread.h"
#include "bridge/lib/yamlnode.h"
#include "sinks/kubeconfig_internal.h"

/* ---- the files ---- */

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
int kubeconfig_paths(const char *path, char ***paths, size_t *n, char *err, size_t errlen) {
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
        char *p = kubeconfig_format("%s/.kube/config", home);
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
void kubeconfig_use_file(struct kubeconfig *kcfg, size_t i) {
    kcfg->cur = i;
    kcfg->path = kcfg->files[i].path;
    kcfg->dir = kcfg->files[i].dir;
    kcfg->doc = &kcfg->files[i].doc;
}

static int load_document(struct kubeconfig *kcfg, const char *text, size_t len) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, kcfg->doc)) {
        if (parser.error == YAML_MEMORY_ERROR)
            rc = kubeconfig_fail(kcfg, 0, "out of memory");
        else
            rc = kubeconfig_fail(kcfg, (int)parser.problem_mark.line + 1, "YAML syntax error: %s",
                                 parser.problem ? parser.problem : "unknown error");
    }
    yaml_parser_delete(&parser);
    return rc;
}

/* Read and parse the current file; on success it joins kcfg->files. */
static int load_file(struct kubeconfig *kcfg) {
    char *text;
    size_t len;
    if (file_read_all(kcfg->path, KUBECONFIG_MAX_BYTES, &text, &len, kcfg->err, kcfg->errlen) < 0)
        return -1;
    int rc = load_document(kcfg, text, len);
    free(text);
    if (rc < 0)
        return -1;
    struct kubeconfig_file *f = &kcfg->files[kcfg->nfiles];
    if (strchr(kcfg->path, '/') && !(f->dir = directory_of(kcfg->path))) {
        yaml_document_delete(kcfg->doc);
        return kubeconfig_fail(kcfg, 0, "out of memory");
    }
    kcfg->nfiles++;
    return 0;
}

/* The top-level mapping of the current file; NULL for an empty file, which
 * is an error only when it is the one file there is. */
const yaml_node_t *kubeconfig_root(struct kubeconfig *kcfg, bool *bad) {
    const yaml_node_t *root = yaml_document_get_root_node(kcfg->doc);
    *bad = false;
    if (!root || yamlnode_is_null(root)) {
        if (kcfg->nfiles == 1) {
            *bad = true;
            kubeconfig_fail(kcfg, 0, "empty kubeconfig");
        }
        return NULL;
    }
    if (root->type != YAML_MAPPING_NODE) {
        *bad = true;
        kubeconfig_fail(kcfg, yamlnode_line(root),
                        "not a kubeconfig: the top level is not a mapping");
        return NULL;
    }
    return root;
}

/* Every file of paths, in order, into kcfg->files. Files of a $KUBECONFIG
 * list that do not exist are skipped, as kubectl does, unless none does. */
int kubeconfig_load(struct kubeconfig *kcfg, char **paths, size_t n) {
    if (!(kcfg->files = calloc(n, sizeof *kcfg->files)))
        return kubeconfig_fail(kcfg, 0, "out of memory");
    size_t missing = 0;
    for (size_t i = 0; i < n; i++) {
        kcfg->files[kcfg->nfiles].path = paths[i];
        kubeconfig_use_file(kcfg, kcfg->nfiles);
        if (n > 1 && access(paths[i], F_OK) != 0 && errno == ENOENT) {
            missing++;
            continue;
        }
        if (load_file(kcfg) < 0)
            return -1;
    }
    if (kcfg->nfiles == 0) {
        kcfg->path = paths[0];
        return kubeconfig_fail(kcfg, 0, "cannot read: none of the %zu files in $KUBECONFIG exists",
                               missing);
    }
    for (size_t i = 0; i < kcfg->nfiles; i++) {
        bool bad;
        kubeconfig_use_file(kcfg, i);
        if (!kubeconfig_root(kcfg, &bad) && bad)
            return -1;
    }
    kubeconfig_use_file(kcfg, 0);
    return 0;
}

void kubeconfig_free(struct kubeconfig *kcfg) {
    for (size_t i = 0; i < kcfg->nfiles; i++) {
        yaml_document_delete(&kcfg->files[i].doc);
        free(kcfg->files[i].dir);
    }
    free(kcfg->files);
    kcfg->files = NULL;
    kcfg->nfiles = 0;
}

/* ---- values ---- */

/* The value of key in a mapping, or NULL (also for a null value). */
const yaml_node_t *kubeconfig_lookup(struct kubeconfig *kcfg, const yaml_node_t *map,
                                     const char *key) {
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (const yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(kcfg->doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp(yamlnode_text(k), key)) {
            const yaml_node_t *v = yaml_document_get_node(kcfg->doc, p->value);
            return v && !yamlnode_is_null(v) ? v : NULL;
        }
    }
    return NULL;
}

/* A string value: *out is NULL when absent; error when it is not a string. */
int kubeconfig_string(struct kubeconfig *kcfg, const yaml_node_t *map, const char *key,
                      const char *what, const char **out) {
    const yaml_node_t *v = kubeconfig_lookup(kcfg, map, key);
    *out = NULL;
    if (!v)
        return 0;
    if (v->type != YAML_SCALAR_NODE || strlen(yamlnode_text(v)) != v->data.scalar.length)
        return kubeconfig_fail(kcfg, yamlnode_line(v), "%s: %s must be a string", what, key);
    *out = yamlnode_text(v);
    return 0;
}

/* Go's YAML reads these spellings as booleans. */
int kubeconfig_bool(struct kubeconfig *kcfg, const yaml_node_t *map, const char *key,
                    const char *what, bool *out) {
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "on", NULL};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No", "off", NULL};
    const yaml_node_t *v = kubeconfig_lookup(kcfg, map, key);
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
    return kubeconfig_fail(kcfg, yamlnode_line(v), "%s: %s must be true or false", what, key);
}

/* ---- named entries, merged over the files ---- */

#define NAMES_SHOWN_MAX 512 /* longest list of names quoted in a message */

/* The list `list` (clusters/users/contexts) of the current file, or NULL. */
static const yaml_node_t *named_list(struct kubeconfig *kcfg, const char *list, bool *bad) {
    bool empty_bad;
    const yaml_node_t *root = kubeconfig_root(kcfg, &empty_bad);
    const yaml_node_t *seq = root ? kubeconfig_lookup(kcfg, root, list) : NULL;
    *bad = false;
    if (seq && seq->type != YAML_SEQUENCE_NODE) {
        *bad = true;
        kubeconfig_fail(kcfg, yamlnode_line(seq), "%s must be a list", list);
        return NULL;
    }
    return seq;
}

/* "; the contexts are: a, b" (every file, first definition of a name only)
 * or "; there are no contexts", for messages that name what exists. */
static void list_names(struct kubeconfig *kcfg, const char *list, buf_t *out) {
    size_t cur = kcfg->cur;
    size_t count = 0;
    for (size_t f = 0; f < kcfg->nfiles; f++) {
        bool bad;
        kubeconfig_use_file(kcfg, f);
        const yaml_node_t *seq = named_list(kcfg, list, &bad);
        for (yaml_node_item_t *i = seq ? seq->data.sequence.items.start : NULL;
             seq && i < seq->data.sequence.items.top; i++) {
            const yaml_node_t *n =
                kubeconfig_lookup(kcfg, yaml_document_get_node(kcfg->doc, *i), "name");
            if (!n || n->type != YAML_SCALAR_NODE)
                continue;
            const char *name = yamlnode_text(n);
            char quoted[KUBECONFIG_NAME_SHOWN_MAX + 8];
            snprintf(quoted, sizeof quoted, "'%.*s'", KUBECONFIG_NAME_SHOWN_MAX, name);
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
    kubeconfig_use_file(kcfg, cur);
}

/* The entry of clusters/users/contexts whose name matches, as the mapping
 * under its `inner` key (cluster/user/context), from the first file that
 * defines it (which becomes the current file). Error when not found, naming
 * the ones there are; `referrer` ("context 'x'") says who asked for it, or
 * is NULL. */
const yaml_node_t *kubeconfig_find_named(struct kubeconfig *kcfg, const char *list,
                                         const char *inner, const char *name,
                                         const char *referrer) {
    for (size_t f = 0; f < kcfg->nfiles; f++) {
        bool bad;
        kubeconfig_use_file(kcfg, f);
        const yaml_node_t *seq = named_list(kcfg, list, &bad);
        if (bad)
            return NULL;
        for (yaml_node_item_t *i = seq ? seq->data.sequence.items.start : NULL;
             seq && i < seq->data.sequence.items.top; i++) {
            const yaml_node_t *entry = yaml_document_get_node(kcfg->doc, *i);
            const yaml_node_t *n = kubeconfig_lookup(kcfg, entry, "name");
            if (!n || n->type != YAML_SCALAR_NODE || strcmp(yamlnode_text(n), name) != 0)
                continue;
            const yaml_node_t *body = kubeconfig_lookup(kcfg, entry, inner);
            if (!body) {
                kubeconfig_fail(kcfg, yamlnode_line(entry), "%s '%.*s' has no '%s' section", inner,
                                KUBECONFIG_NAME_SHOWN_MAX, name, inner);
                return NULL;
            }
            if (body->type != YAML_MAPPING_NODE) {
                kubeconfig_fail(kcfg, yamlnode_line(body), "%s '%.*s': '%s' must be a mapping",
                                inner, KUBECONFIG_NAME_SHOWN_MAX, name, inner);
                return NULL;
            }
            return body;
        }
    }
    kubeconfig_use_file(kcfg, 0);
    buf_t names = BUF_INIT;
    list_names(kcfg, list, &names);
    const char *shown = names.len ? names.data : "";
    if (referrer)
        kubeconfig_fail(kcfg, 0, "%s refers to %s '%.*s', which is not defined in %s; %s%s%s%s",
                        referrer, inner, KUBECONFIG_NAME_SHOWN_MAX, name, list,
                        names.len ? "the " : "there are no ", list, names.len ? " are: " : "",
                        shown);
    else
        kubeconfig_fail(kcfg, 0, "%s '%.*s' is not defined in %s; %s%s%s%s", inner,
                        KUBECONFIG_NAME_SHOWN_MAX, name, list, names.len ? "the " : "there are no ",
                        list, names.len ? " are: " : "", shown);
    buf_free(&names);
    return NULL;
}

/* A path from the kubeconfig, relative ones taken from its directory. */
int kubeconfig_path(struct kubeconfig *kcfg, const char *p, char **out) {
    *out = p[0] == '/' || !kcfg->dir ? strdup(p) : kubeconfig_format("%s/%s", kcfg->dir, p);
    return *out ? 0 : kubeconfig_fail(kcfg, 0, "out of memory");
}

/* An inline -data field (base64) or, failing that, a file path: -data wins
 * when both are present, as in client-go. */
int kubeconfig_file_or_data(struct kubeconfig *kcfg, const yaml_node_t *map, const char *key,
                            const char *what, char **file, char **pem, size_t *pem_len) {
    char data_key[64];
    const char *path, *data;
    snprintf(data_key, sizeof data_key, "%s-data", key);
    if (kubeconfig_string(kcfg, map, key, what, &path) < 0 ||
        kubeconfig_string(kcfg, map, data_key, what, &data) < 0)
        return -1;
    if (data && *data) {
        if (base64_decode(data, strlen(data), BASE64_SKIP_NEWLINES, pem, pem_len) == 0)
            return 0;
        return kubeconfig_fail(kcfg, yamlnode_line(kubeconfig_lookup(kcfg, map, data_key)),
                               "%s: %s is not valid base64", what, data_key);
    }
    if (path && *path)
        return kubeconfig_path(kcfg, path, file);
    return 0;
}
