/* config_internal.h - what the three files of the configuration loader share.
 *
 * config.c reads the text with libyaml and owns the public functions;
 * config_schema.c walks the YAML tree against one table per section and fills
 * struct config; config_rules.c then checks the rules that involve several
 * keys. They share one parse state, which remembers the line of every key
 * that was set so the rules can name it, and one way to fail. Not for use
 * outside bridge/config*.c. */
#ifndef CB_CONFIG_INTERNAL_H
#define CB_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <yaml.h>

#include "bridge/config.h"

#define CONFIG_KEY_PATH_MAX 64 /* longest key path is "leader_election.lease_duration" */
#define CONFIG_MAX_KEYS 64     /* every key of the schema at most once (duplicates are errors) */

struct config_key_line {
    char path[CONFIG_KEY_PATH_MAX];
    int line;
};

struct config_parse {
    const char *name; /* file name for messages */
    yaml_document_t *doc;
    struct config *cfg;
    char *err;
    size_t errlen;
    struct config_key_line keys[CONFIG_MAX_KEYS]; /* where each key was set, for the rules */
    size_t n_keys;
};

/* config.c */

/* Write "NAME:LINE: message" (or "NAME: message" when line is 0) into the
 * error buffer; always returns -1. */
__attribute__((format(printf, 3, 4))) int config_fail(struct config_parse *p, int line,
                                                      const char *fmt, ...);
/* config_fail(p, 0, "out of memory"). */
int config_oom(struct config_parse *p);
/* s is one or more ASCII digits and nothing else. */
bool config_all_digits(const char *s);
/* Free a list of n heap strings and the list itself (NULL is fine). */
void config_free_list(char **items, size_t n);

/* config_schema.c */

/* Walk the document's root node against the schema into p->cfg, recording
 * the line of every key. Returns 0, or -1 with the error written. */
int config_schema_walk(struct config_parse *p, const yaml_node_t *root);

/* config_rules.c */

/* The rules across keys, on the filled p->cfg, then ${CREDENTIALS_DIRECTORY}
 * expansion of the file keys. Returns 0, or -1 with the error written. */
int config_rules_check(struct config_parse *p);

#endif
