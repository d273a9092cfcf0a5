/* kubeconfig_internal.h - what the files of the kubeconfig reader share.
 *
 * kubeconfig.c owns the public functions (kubeconfig.h): the three ways to
 * find the API server, and the shared helpers below. kubeconfig_load.c reads
 * the kubeconfig files, merges them as kubectl does and reads typed values
 * out of them; kubeconfig_resolve.c follows a context to its cluster and
 * user; kubeconfig_exec.c reads a user's exec credential plugin. They share
 * one read state (struct kubeconfig) and one way to fail. Not for use
 * outside sinks/kubeconfig*.c. */
#ifndef CB_KUBECONFIG_INTERNAL_H
#define CB_KUBECONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <yaml.h>

#include "sinks/kubeconfig.h"

#define KUBECONFIG_MAX_BYTES (4 * 1024 * 1024)
#define KUBECONFIG_NAME_SHOWN_MAX 64 /* longest context/cluster/user name quoted in a message */

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

/* ---- kubeconfig.c ---- */

/* A heap string, or NULL when out of memory. */
__attribute__((format(printf, 1, 2))) char *kubeconfig_format(const char *fmt, ...);
/* "PATH:LINE: message" (or "PATH: message" for line 0) of the current file
 * into the error buffer; always returns -1. */
__attribute__((format(printf, 3, 4))) int kubeconfig_fail(const struct kubeconfig *kcfg, int line,
                                                          const char *fmt, ...);
/* A server URL as the HTTP client wants it: no trailing '/'. NULL when out
 * of memory. */
char *kubeconfig_server_url(const char *s);

/* ---- kubeconfig_load.c: the files, merged ---- */

/* The files kubectl would read: path, else every entry of $KUBECONFIG (in
 * order, empty entries and repeats skipped), else ~/.kube/config. The
 * caller frees the strings and the list. 0, or -1 with err written. */
int kubeconfig_paths(const char *path, char ***paths, size_t *n, char *err, size_t errlen);
/* Read and parse every file of paths into kcfg (kcfg->err set by the
 * caller). Files of a $KUBECONFIG list that do not exist are skipped, as
 * kubectl does, unless none does. 0, or -1 with the error written; either
 * way kubeconfig_free afterwards. */
int kubeconfig_load(struct kubeconfig *kcfg, char **paths, size_t n);
void kubeconfig_free(struct kubeconfig *kcfg);
/* Read the entries from file i on (paths, line numbers, lookups). */
void kubeconfig_use_file(struct kubeconfig *kcfg, size_t i);
/* The top-level mapping of the current file; NULL for an empty file, which
 * is an error (*bad) only when it is the one file there is. */
const yaml_node_t *kubeconfig_root(struct kubeconfig *kcfg, bool *bad);
/* The value of key in a mapping of the current file, or NULL (also for a
 * null value). */
const yaml_node_t *kubeconfig_lookup(struct kubeconfig *kcfg, const yaml_node_t *map,
                                     const char *key);
/* A string value: *out is NULL when absent; an error naming `what` when it
 * is not a string. */
int kubeconfig_string(struct kubeconfig *kcfg, const yaml_node_t *map, const char *key,
                      const char *what, const char **out);
/* A boolean in any spelling Go's YAML reads as one; false when absent. */
int kubeconfig_bool(struct kubeconfig *kcfg, const yaml_node_t *map, const char *key,
                    const char *what, bool *out);
/* The entry of clusters/users/contexts (`list`) whose name matches, as the
 * mapping under its `inner` key (cluster/user/context), from the first file
 * that defines it, which becomes the current file. NULL with an error naming
 * the ones there are when there is none; `referrer` ("context 'x'") says who
 * asked for it, or is NULL. */
const yaml_node_t *kubeconfig_find_named(struct kubeconfig *kcfg, const char *list,
                                         const char *inner, const char *name, const char *referrer);
/* A path from the current file, relative ones taken from its directory. */
int kubeconfig_path(struct kubeconfig *kcfg, const char *p, char **out);
/* An inline `key`-data field (base64) or, failing that, the file path
 * `key`: -data wins when both are present, as in client-go. */
int kubeconfig_file_or_data(struct kubeconfig *kcfg, const yaml_node_t *map, const char *key,
                            const char *what, char **file, char **pem, size_t *pem_len);

/* ---- kubeconfig_resolve.c: context, cluster, user ---- */

/* Fill c from the named context (NULL or "": current-context, from the
 * first file that sets it): its cluster, its user and c->context. */
int kubeconfig_resolve(struct kubeconfig *kcfg, const char *context, struct kube_conn *c);

/* ---- kubeconfig_exec.c: exec credential plugins ---- */

/* c->exec from a user's `exec` mapping, checked as client-go checks it;
 * user is the kubeconfig user's name, what the prefix of messages. */
int kubeconfig_exec_parse(struct kubeconfig *kcfg, const yaml_node_t *exec, const char *user,
                          const char *what, struct kube_conn *c);

#endif
