/* fuzz_secrets.h - "secrets never appear in messages", as an invariant.
 *
 * config.c and kubeconfig.c promise that passwords, tokens and keys are
 * never quoted back in an error (errors end up in logs and in the status
 * key). To check it without knowing the parsers' internals, the target
 * reads the same YAML with libyaml, takes the values of the secret keys
 * anywhere in the document, and then asserts none of them occurs in the
 * message.
 *
 * A candidate is skipped when it could legitimately be in a message for
 * another reason: when it is short or has no digit (it could be part of the
 * fixed English text or a line number), when it is a substring of another
 * scalar of the document (a context or cluster name is quoted on purpose),
 * or of the file name. */
#ifndef CB_FUZZ_SECRETS_H
#define CB_FUZZ_SECRETS_H

#include <yaml.h>

#include "fuzz_common.h"

#define SECRETS_MAX 16

struct secrets {
    char *v[SECRETS_MAX];
    size_t n;
};

static inline bool secret_shape(const char *s) {
    size_t n = strlen(s);
    return n >= 8 && strpbrk(s, "0123456789") && !strchr(s, ' ');
}

/* Is s a substring of any scalar of doc other than the node `self`? */
static inline bool secret_elsewhere(yaml_document_t *doc, const yaml_node_t *self, const char *s) {
    for (yaml_node_t *n = doc->nodes.start; n < doc->nodes.top; n++)
        if (n != self && n->type == YAML_SCALAR_NODE &&
            strstr((const char *)n->data.scalar.value, s))
            return true;
    return false;
}

static inline void secrets_collect(const uint8_t *data, size_t size, const char *const *keys,
                                   const char *path, struct secrets *out) {
    yaml_parser_t parser;
    yaml_document_t doc;
    out->n = 0;
    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, data, size);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_parser_delete(&parser);
        return;
    }
    for (yaml_node_t *m = doc.nodes.start; m < doc.nodes.top; m++) {
        if (m->type != YAML_MAPPING_NODE)
            continue;
        for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(&doc, p->key);
            yaml_node_t *v = yaml_document_get_node(&doc, p->value);
            if (!k || !v || k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE)
                continue;
            const char *key = (const char *)k->data.scalar.value;
            const char *val = (const char *)v->data.scalar.value;
            bool secret_key = false;
            for (const char *const *s = keys; *s; s++)
                secret_key |= !strcmp(key, *s);
            if (!secret_key || !secret_shape(val) || secret_elsewhere(&doc, v, val) ||
                strstr(path, val) || out->n == SECRETS_MAX)
                continue;
            out->v[out->n++] = fuzz_strndup((const uint8_t *)val, strlen(val));
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
}

static inline void secrets_check(struct secrets *s, const char *msg) {
    for (size_t i = 0; i < s->n; i++)
        FUZZ_CHECK(!strstr(msg, s->v[i]), "a secret value is quoted in the message: %s", msg);
}

static inline void secrets_free(struct secrets *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    s->n = 0;
}

#endif
