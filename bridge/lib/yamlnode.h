/* yamlnode.h - small helpers over libyaml's document nodes, shared by the
 * two loaders that walk YAML trees with line numbers (the config file and
 * kubeconfigs). */
#ifndef CB_YAMLNODE_H
#define CB_YAMLNODE_H

#include <stdbool.h>
#include <string.h>
#include <yaml.h>

/* 1-based line of a node, for "FILE:LINE: ..." messages. */
static inline int yamlnode_line(const yaml_node_t *n) {
    return (int)n->start_mark.line + 1;
}

static inline const char *yamlnode_text(const yaml_node_t *n) {
    return (const char *)n->data.scalar.value;
}

/* A plain (unquoted) null scalar: empty, ~, null, Null, NULL. */
static inline bool yamlnode_is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = yamlnode_text(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

#endif
