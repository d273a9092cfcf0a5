/* config_schema.c - the configuration's schema, and the walk that fills
 * struct config from a YAML node tree.
 *
 * The walk is driven by tables: one per section, one row per key, giving the
 * key's type and where its value lands in struct config. Adding a key means
 * adding a row (and its default in config_defaults). Every value is checked
 * for its type only; rules that involve several keys run afterwards
 * (config_rules.c), on the filled struct, and name the line of the key they
 * complain about, which the walk records here.
 *
 * Secrets (source.password, source.token) never reach a message: string
 * values are never echoed, only enum, boolean, number and duration values. */
#include "bridge/config_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/duration.h"
#include "bridge/lib/suggest.h"
#include "bridge/lib/yamlnode.h"

#define SHOWN_MAX 48 /* longest value quoted back in a message */

/* ---- schema ---------------------------------------------------------------- */

enum field_type { F_SECTION, F_STRING, F_BOOL, F_UINT, F_DURATION, F_LIST, F_ENUM };

enum field_flags {
    F_NULLABLE = 1,   /* string: null (`key:`, `~`) means unset (NULL) */
    F_SCALAR_LIST = 2 /* list: a single string is a list of one */
};

struct choice {
    const char *name;
    int value;
};

struct field {
    const char *key;
    enum field_type type;
    unsigned flags;
    size_t offset;                                   /* of the value in struct config */
    size_t count_offset;                             /* F_LIST: of its size_t count */
    const struct field *section;                     /* F_SECTION: the keys inside */
    const struct choice *choices;                    /* F_ENUM: allowed names */
    void (*set_enum)(struct config *cfg, int value); /* F_ENUM: typed field; NULL = string */
};

#define AT(member) offsetof(struct config, member)
#define STRING(k, m)                                                                               \
    { .key = (k), .type = F_STRING, .offset = AT(m) }
#define OPTIONAL(k, m)                                                                             \
    { .key = (k), .type = F_STRING, .flags = F_NULLABLE, .offset = AT(m) }
#define BOOLEAN(k, m)                                                                              \
    { .key = (k), .type = F_BOOL, .offset = AT(m) }
#define UNSIGNED(k, m)                                                                             \
    { .key = (k), .type = F_UINT, .offset = AT(m) }
#define DURATION(k, m)                                                                             \
    { .key = (k), .type = F_DURATION, .offset = AT(m) }
#define LIST(k, m, n, fl)                                                                          \
    { .key = (k), .type = F_LIST, .flags = (fl), .offset = AT(m), .count_offset = AT(n) }
#define ENUM(k, ch, set)                                                                           \
    { .key = (k), .type = F_ENUM, .choices = (ch), .set_enum = (set) }
#define ENUM_STRING(k, m, ch)                                                                      \
    { .key = (k), .type = F_ENUM, .offset = AT(m), .choices = (ch) }
#define SECTION(k, s)                                                                              \
    { .key = (k), .type = F_SECTION, .section = (s) }
#define END                                                                                        \
    { .key = NULL }

/* Typed enum fields are set through these rather than through a cast pointer,
 * because the size of an enum type is the compiler's choice. */
static void set_source_type(struct config *cfg, int v) {
    cfg->source.type = (enum source_type)v;
}
static void set_policy(struct config *cfg, int v) {
    cfg->reconcile.policy = (enum reconcile_policy)v;
}
static void set_rule_syntax(struct config *cfg, int v) {
    cfg->traefik.rule_syntax = (enum rule_syntax)v;
}
static void set_log_level(struct config *cfg, int v) {
    cfg->log.level = (enum log_level)v;
}
static void set_log_format(struct config *cfg, int v) {
    cfg->log.format = (enum log_format)v;
}

static const struct choice source_types[] = {
    {"etcd", SOURCE_ETCD}, {"consul", SOURCE_CONSUL}, {NULL, 0}};
static const struct choice consistency_modes[] = {
    {"default", 0}, {"stale", 0}, {"consistent", 0}, {NULL, 0}};
static const struct choice api_groups[] = {
    {"traefik.io", 0}, {"traefik.containo.us", 0}, {"auto", 0}, {NULL, 0}};
static const struct choice rule_syntaxes[] = {
    {"v3", RULE_SYNTAX_V3}, {"v2", RULE_SYNTAX_V2}, {NULL, 0}};
static const struct choice policies[] = {
    {"upsert-only", POLICY_UPSERT_ONLY}, {"sync", POLICY_SYNC}, {NULL, 0}};
static const struct choice log_levels[] = {{"error", LOG_LVL_ERROR},
                                           {"warn", LOG_LVL_WARN},
                                           {"info", LOG_LVL_INFO},
                                           {"debug", LOG_LVL_DEBUG},
                                           {NULL, 0}};
static const struct choice log_formats[] = {
    {"text", LOG_FORMAT_TEXT}, {"json", LOG_FORMAT_JSON}, {NULL, 0}};

static const struct field tls_fields[] = {
    OPTIONAL("ca_file", source.tls.ca_file),
    OPTIONAL("cert_file", source.tls.cert_file),
    OPTIONAL("key_file", source.tls.key_file),
    BOOLEAN("insecure_skip_verify", source.tls.insecure_skip_verify),
    END,
};

static const struct field source_fields[] = {
    ENUM("type", source_types, set_source_type),
    LIST("endpoints", source.endpoints, source.n_endpoints, F_SCALAR_LIST),
    STRING("address", source.address),
    STRING("prefix", source.prefix),
    OPTIONAL("username", source.username),
    OPTIONAL("password", source.password),
    OPTIONAL("password_file", source.password_file),
    OPTIONAL("token", source.token),
    OPTIONAL("token_file", source.token_file),
    OPTIONAL("datacenter", source.datacenter),
    ENUM_STRING("consistency", source.consistency, consistency_modes),
    DURATION("wait", source.wait_ms),
    DURATION("liveness_check", source.liveness_ms),
    SECTION("tls", tls_fields),
    END,
};

static const struct field kubernetes_fields[] = {
    OPTIONAL("kubeconfig", kubernetes.kubeconfig),
    OPTIONAL("context", kubernetes.context),
    BOOLEAN("in_cluster", kubernetes.in_cluster),
    OPTIONAL("server", kubernetes.server),
    OPTIONAL("token_file", kubernetes.token_file),
    OPTIONAL("ca_file", kubernetes.ca_file),
    BOOLEAN("insecure_skip_verify", kubernetes.insecure_skip_verify),
    OPTIONAL("field_manager", kubernetes.field_manager),
    END,
};

static const struct field traefik_api_pods_fields[] = {
    OPTIONAL("namespace", traefik.api.pods.namespace),
    STRING("selector", traefik.api.pods.selector),
    UNSIGNED("port", traefik.api.pods.port),
    END,
};

static const struct field traefik_api_fields[] = {
    LIST("urls", traefik.api.urls, traefik.api.n_urls, F_SCALAR_LIST),
    SECTION("pods", traefik_api_pods_fields),
    DURATION("interval", traefik.api.interval_ms),
    DURATION("timeout", traefik.api.timeout_ms),
    DURATION("request_timeout", traefik.api.request_timeout_ms),
    END,
};

static const struct field traefik_fields[] = {
    ENUM_STRING("api_group", traefik.api_group, api_groups),
    ENUM("rule_syntax", rule_syntaxes, set_rule_syntax),
    SECTION("api", traefik_api_fields),
    END,
};

static const struct field reconcile_fields[] = {
    ENUM("policy", policies, set_policy),
    DURATION("resync", reconcile.resync_ms),
    LIST("namespaces", reconcile.namespaces, reconcile.n_namespaces, 0),
    BOOLEAN("status", reconcile.status),
    UNSIGNED("max_in_flight", reconcile.max_in_flight),
    DURATION("burst_hold", reconcile.burst_hold_ms),
    DURATION("burst_quiet", reconcile.burst_quiet_ms),
    BOOLEAN("allow_cross_namespace", reconcile.allow_cross_namespace),
    UNSIGNED("max_delete_percent", reconcile.max_delete_percent),
    BOOLEAN("require_ready_endpoints", reconcile.require_ready_endpoints),
    UNSIGNED("max_step", reconcile.max_step),
    UNSIGNED("object_writes_per_second", reconcile.object_writes_per_second),
    DURATION("retry_min", reconcile.retry_min_ms),
    DURATION("retry_max", reconcile.retry_max_ms),
    END,
};

static const struct field server_fields[] = {
    STRING("listen", server.listen),
    END,
};

static const struct field leader_election_fields[] = {
    BOOLEAN("enabled", leader_election.enabled),
    STRING("namespace", leader_election.namespace),
    STRING("name", leader_election.name),
    DURATION("lease_duration", leader_election.lease_duration_ms),
    DURATION("renew_deadline", leader_election.renew_deadline_ms),
    DURATION("retry_period", leader_election.retry_period_ms),
    OPTIONAL("identity", leader_election.identity),
    END,
};

static const struct field log_fields[] = {
    ENUM("level", log_levels, set_log_level),
    ENUM("format", log_formats, set_log_format),
    END,
};

static const struct field top_fields[] = {
    SECTION("source", source_fields),   SECTION("kubernetes", kubernetes_fields),
    SECTION("traefik", traefik_fields), SECTION("reconcile", reconcile_fields),
    SECTION("server", server_fields),   SECTION("leader_election", leader_election_fields),
    SECTION("log", log_fields),         END,
};

/* ---- nodes, as messages show them ------------------------------------------ */

static bool is_plain(const yaml_node_t *n) {
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* A scalar holding "\0" would be cut short by every C string function. */
static bool has_nul(const yaml_node_t *n) {
    return strlen(yamlnode_text(n)) != n->data.scalar.length;
}

/* What a node is, for "got ..." in messages. Scalars are quoted back
 * (shortened, control characters replaced): callers only use this for values
 * that cannot be secrets. */
static const char *shown(const yaml_node_t *n, char *out, size_t outlen) {
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a list";
    if (yamlnode_is_null(n))
        return "null";
    const char *s = yamlnode_text(n);
    size_t len = strlen(s), keep = len > SHOWN_MAX ? SHOWN_MAX : len, j = 0;
    if (outlen < SHOWN_MAX + 8)
        return "a string";
    out[j++] = '\'';
    for (size_t i = 0; i < keep; i++)
        out[j++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (keep < len)
        j += (size_t)snprintf(out + j, outlen - j, "...");
    out[j++] = '\'';
    out[j] = '\0';
    return out;
}

/* Kind only, never the value: for string keys, which may hold secrets. */
static const char *kind(const yaml_node_t *n) {
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a list";
    return yamlnode_is_null(n) ? "null" : "a string";
}

static void remember_key(struct config_parse *p, const char *path, int line) {
    if (p->n_keys >= CONFIG_MAX_KEYS)
        return;
    snprintf(p->keys[p->n_keys].path, CONFIG_KEY_PATH_MAX, "%s", path);
    p->keys[p->n_keys].line = line;
    p->n_keys++;
}

/* ---- values ---------------------------------------------------------------- */

static void *slot(struct config_parse *p, const struct field *f) {
    return (char *)p->cfg + f->offset;
}

static int replace_string(struct config_parse *p, char **dst, const char *src, size_t len) {
    char *copy = strndup(src, len);
    if (!copy)
        return config_oom(p);
    free(*dst);
    *dst = copy;
    return 0;
}

static int apply_string(struct config_parse *p, const struct field *f, const char *path, int line,
                        const yaml_node_t *v) {
    char **dst = slot(p, f);
    if (yamlnode_is_null(v)) {
        if (!(f->flags & F_NULLABLE))
            return config_fail(p, line, "%s: must be a string, got null (write \"\" for empty)",
                               path);
        free(*dst);
        *dst = NULL;
        return 0;
    }
    if (v->type != YAML_SCALAR_NODE)
        return config_fail(p, line, "%s: must be a string, got %s", path, kind(v));
    if (has_nul(v))
        return config_fail(p, line, "%s: must not contain a NUL character", path);
    return replace_string(p, dst, yamlnode_text(v), v->data.scalar.length);
}

static int apply_bool(struct config_parse *p, const struct field *f, const char *path, int line,
                      const yaml_node_t *v) {
    bool *dst = slot(p, f);
    char tmp[SHOWN_MAX + 8];
    if (is_plain(v) && !strcmp(yamlnode_text(v), "true"))
        *dst = true;
    else if (is_plain(v) && !strcmp(yamlnode_text(v), "false"))
        *dst = false;
    else if (v->type == YAML_SCALAR_NODE && !is_plain(v))
        return config_fail(p, line, "%s: must be true or false (unquoted), got a quoted string",
                           path);
    else
        return config_fail(p, line, "%s: must be true or false, got %s", path,
                           shown(v, tmp, sizeof tmp));
    return 0;
}

static int apply_uint(struct config_parse *p, const struct field *f, const char *path, int line,
                      const yaml_node_t *v) {
    unsigned *dst = slot(p, f);
    char tmp[SHOWN_MAX + 8];
    if (!is_plain(v) || !config_all_digits(yamlnode_text(v)))
        return config_fail(p, line, "%s: must be a whole number, got %s", path,
                           shown(v, tmp, sizeof tmp));
    errno = 0;
    unsigned long long n = strtoull(yamlnode_text(v), NULL, 10);
    if (errno == ERANGE || n > UINT_MAX)
        return config_fail(p, line, "%s: %s is too large", path, shown(v, tmp, sizeof tmp));
    *dst = (unsigned)n;
    return 0;
}

static int apply_duration(struct config_parse *p, const struct field *f, const char *path, int line,
                          const yaml_node_t *v) {
    uint64_t *dst = slot(p, f);
    char tmp[SHOWN_MAX + 8];
    if (v->type != YAML_SCALAR_NODE || yamlnode_is_null(v) || has_nul(v))
        return config_fail(p, line, "%s: must be a duration such as 30s or 5m, got %s", path,
                           shown(v, tmp, sizeof tmp));
    const char *s = yamlnode_text(v);
    if (parse_duration_ms(s, dst) == 0)
        return 0;
    /* A bare number is the likeliest mistake: say which unit was missing
     * rather than guess between seconds and milliseconds. */
    if (config_all_digits(s) && strlen(s) <= SHOWN_MAX)
        return config_fail(p, line, "%s: '%s' has no unit; write e.g. %ss or %sms", path, s, s, s);
    return config_fail(
        p, line,
        "%s: invalid duration %s (a number and a unit ms, s, m or h, e.g. 250ms, 30s, "
        "1h30m)",
        path, shown(v, tmp, sizeof tmp));
}

/* Entries of a list value: the sequence's items, or the node itself when a
 * single string stands for a list of one. */
static size_t list_length(const yaml_node_t *v) {
    if (v->type == YAML_SEQUENCE_NODE)
        return (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    return yamlnode_is_null(v) ? 0 : 1;
}

static const yaml_node_t *list_item(struct config_parse *p, const yaml_node_t *v, size_t i) {
    if (v->type != YAML_SEQUENCE_NODE)
        return v;
    return yaml_document_get_node(p->doc, v->data.sequence.items.start[i]);
}

static int check_list_item(struct config_parse *p, const char *path, size_t i,
                           const yaml_node_t *item) {
    if (!item || item->type != YAML_SCALAR_NODE || yamlnode_is_null(item))
        return config_fail(p, item ? yamlnode_line(item) : 0, "%s[%zu]: must be a string, got %s",
                           path, i, item ? kind(item) : "nothing");
    if (has_nul(item))
        return config_fail(p, yamlnode_line(item), "%s[%zu]: must not contain a NUL character",
                           path, i);
    return 0;
}

static int apply_list(struct config_parse *p, const struct field *f, const char *path, int line,
                      const yaml_node_t *v) {
    bool scalar_ok = (f->flags & F_SCALAR_LIST) && v->type == YAML_SCALAR_NODE;
    if (v->type != YAML_SEQUENCE_NODE && !yamlnode_is_null(v) && !scalar_ok)
        return config_fail(p, line, "%s: must be a list of strings, got %s", path, kind(v));
    size_t n = list_length(v);
    char **items = n ? calloc(n, sizeof *items) : NULL;
    if (n && !items)
        return config_oom(p);
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = list_item(p, v, i);
        if (check_list_item(p, path, i, item) < 0) {
            config_free_list(items, n);
            return -1;
        }
        items[i] = strndup(yamlnode_text(item), item->data.scalar.length);
        if (!items[i]) {
            config_free_list(items, n);
            return config_oom(p);
        }
    }
    char ***dst = slot(p, f);
    size_t *count = (size_t *)((char *)p->cfg + f->count_offset);
    config_free_list(*dst, *count);
    *dst = items;
    *count = n;
    return 0;
}

/* "a, b, c" from a choice table, for "must be one of" messages. */
static const char *choice_names(const struct choice *c, char *out, size_t outlen) {
    size_t used = 0;
    out[0] = '\0';
    for (; c->name; c++) {
        int n = snprintf(out + used, outlen - used, "%s%s", used ? ", " : "", c->name);
        if (n < 0 || (size_t)n >= outlen - used)
            break;
        used += (size_t)n;
    }
    return out;
}

static int apply_enum(struct config_parse *p, const struct field *f, const char *path, int line,
                      const yaml_node_t *v) {
    if (v->type == YAML_SCALAR_NODE && !has_nul(v)) {
        for (const struct choice *c = f->choices; c->name; c++) {
            if (strcmp(yamlnode_text(v), c->name) != 0)
                continue;
            if (f->set_enum) {
                f->set_enum(p->cfg, c->value);
                return 0;
            }
            return replace_string(p, slot(p, f), c->name, strlen(c->name));
        }
    }
    char names[160], tmp[SHOWN_MAX + 8];
    return config_fail(p, line, "%s: must be one of %s, got %s", path,
                       choice_names(f->choices, names, sizeof names), shown(v, tmp, sizeof tmp));
}

static int walk_mapping(struct config_parse *p, const yaml_node_t *map, const struct field *fields,
                        const char *path, int line);

static int apply_field(struct config_parse *p, const struct field *f, const char *path, int line,
                       const yaml_node_t *v) {
    switch (f->type) {
    case F_SECTION: return walk_mapping(p, v, f->section, path, line);
    case F_STRING: return apply_string(p, f, path, line, v);
    case F_BOOL: return apply_bool(p, f, path, line, v);
    case F_UINT: return apply_uint(p, f, path, line, v);
    case F_DURATION: return apply_duration(p, f, path, line, v);
    case F_LIST: return apply_list(p, f, path, line, v);
    case F_ENUM: return apply_enum(p, f, path, line, v);
    }
    return config_fail(p, line, "%s: internal error: unknown field type", path);
}

/* ---- the walk ---------------------------------------------------------------- */

static int unknown_key(struct config_parse *p, const struct field *fields, const char *path,
                       const char *key, int line) {
    const char *close = NULL;
    size_t best = 3; /* at most two edits away */
    char known[400];
    size_t used = 0;
    known[0] = '\0';
    for (const struct field *f = fields; f->key; f++) {
        size_t d = suggest_distance(key, f->key);
        if (d < best && d < strlen(key)) {
            best = d;
            close = f->key;
        }
        int n = snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", f->key);
        if (n > 0 && (size_t)n < sizeof known - used)
            used += (size_t)n;
    }
    const char *dot = *path ? "." : "";
    if (close)
        return config_fail(p, line, "unknown key '%s%s%.*s' (did you mean '%s'?)", path, dot,
                           SHOWN_MAX, key, close);
    return config_fail(p, line, "unknown key '%s%s%.*s' (known keys: %s)", path, dot, SHOWN_MAX,
                       key, known);
}

static const struct field *find_field(const struct field *fields, const char *key) {
    for (const struct field *f = fields; f->key; f++)
        if (!strcmp(f->key, key))
            return f;
    return NULL;
}

/* Keys must be unique: a repeated key silently overriding the first one is
 * the kind of mistake a config check exists to catch. */
static int check_duplicate(struct config_parse *p, const yaml_node_pair_t *start,
                           const yaml_node_pair_t *pair, const char *path, const char *key) {
    for (const yaml_node_pair_t *q = start; q < pair; q++) {
        const yaml_node_t *k = yaml_document_get_node(p->doc, q->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp(yamlnode_text(k), key)) {
            const yaml_node_t *here = yaml_document_get_node(p->doc, pair->key);
            return config_fail(p, yamlnode_line(here),
                               "duplicate key '%s%s%.*s' (first at line %d)", path,
                               *path ? "." : "", SHOWN_MAX, key, yamlnode_line(k));
        }
    }
    return 0;
}

static int walk_pair(struct config_parse *p, const yaml_node_t *map, const yaml_node_pair_t *pair,
                     const struct field *fields, const char *path) {
    const yaml_node_t *k = yaml_document_get_node(p->doc, pair->key);
    const yaml_node_t *v = yaml_document_get_node(p->doc, pair->value);
    if (!k || !v)
        return config_fail(p, yamlnode_line(map), "%s: malformed mapping",
                           *path ? path : "top level");
    int line = yamlnode_line(k);
    if (k->type != YAML_SCALAR_NODE || yamlnode_is_null(k) || has_nul(k))
        return config_fail(p, line, "%s%skeys must be plain names, got %s", path, *path ? ": " : "",
                           kind(k));
    const char *key = yamlnode_text(k);
    if (check_duplicate(p, map->data.mapping.pairs.start, pair, path, key) < 0)
        return -1;
    const struct field *f = find_field(fields, key);
    if (!f)
        return unknown_key(p, fields, path, key, line);
    char child[CONFIG_KEY_PATH_MAX];
    snprintf(child, sizeof child, "%s%s%s", path, *path ? "." : "", key);
    remember_key(p, child, line);
    return apply_field(p, f, child, line, v);
}

static int walk_mapping(struct config_parse *p, const yaml_node_t *map, const struct field *fields,
                        const char *path, int line) {
    if (yamlnode_is_null(map))
        return 0; /* `section:` with everything commented out: all defaults */
    if (map->type != YAML_MAPPING_NODE) {
        if (!*path)
            return config_fail(p, yamlnode_line(map),
                               "the top level must be a mapping of sections (source:, kubernetes:, "
                               "...), got %s",
                               kind(map));
        return config_fail(p, line, "%s: must be a mapping, got %s", path, kind(map));
    }
    for (const yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++)
        if (walk_pair(p, map, pair, fields, path) < 0)
            return -1;
    return 0;
}

int config_schema_walk(struct config_parse *p, const yaml_node_t *root) {
    return walk_mapping(p, root, top_fields, "", 0);
}
