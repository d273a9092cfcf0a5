/* config.c - load and validate the daemon's YAML configuration (SPEC section 3).
 *
 * libyaml reads the text twice. The first pass looks at the event stream and
 * rejects what the document API would otherwise accept silently: anchors and
 * aliases (a value that quietly changes in two places is a trap in an
 * operator's file) and a second document (which would be ignored). It reports
 * the line where they occur. The second pass builds the node tree with
 * yaml_parser_load, so every value still knows its line when the tree is
 * walked.
 *
 * The walk is driven by tables: one per section, one row per key, giving the
 * key's type and where its value lands in struct config. Adding a key means
 * adding a row. Rules that involve several keys (exclusive keys, URL shapes,
 * leader election timings) run afterwards on the filled struct; they name the
 * line of the key they complain about, which the walk recorded.
 *
 * Secrets (source.password, source.token) never reach a message: string
 * values are never echoed, only enum, boolean, number and duration values. */
#include "bridge/config.h"
#include "bridge/lib/suggest.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/duration.h"
#include "bridge/lib/fileread.h"
#include "bridge/lib/secret.h"
#include "bridge/lib/url.h"
#include "bridge/lib/yamlnode.h"

#define CONFIG_MAX_BYTES (1024 * 1024)
#define KEY_PATH_MAX 64 /* longest key path is "leader_election.lease_duration" */
#define MAX_KEYS 64     /* every key of the schema at most once (duplicates are errors) */
#define SHOWN_MAX 48    /* longest value quoted back in a message */

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

static const struct field traefik_fields[] = {
    ENUM_STRING("api_group", traefik.api_group, api_groups),
    ENUM("rule_syntax", rule_syntaxes, set_rule_syntax),
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
    END,
};

static const struct field top_fields[] = {
    SECTION("source", source_fields),   SECTION("kubernetes", kubernetes_fields),
    SECTION("traefik", traefik_fields), SECTION("reconcile", reconcile_fields),
    SECTION("server", server_fields),   SECTION("leader_election", leader_election_fields),
    SECTION("log", log_fields),         END,
};

/* ---- parse state and messages -------------------------------------------- */

struct key_line {
    char path[KEY_PATH_MAX];
    int line;
};

struct parse {
    const char *name; /* file name for messages */
    yaml_document_t *doc;
    struct config *cfg;
    char *err;
    size_t errlen;
    struct key_line keys[MAX_KEYS]; /* where each key was set, for later checks */
    size_t n_keys;
};

/* "NAME:LINE: message", or "NAME: message" when no line applies. */
__attribute__((format(printf, 3, 4))) static int fail(struct parse *p, int line, const char *fmt,
                                                      ...) {
    if (!p->err || p->errlen == 0)
        return -1;
    int n = line > 0 ? snprintf(p->err, p->errlen, "%s:%d: ", p->name, line)
                     : snprintf(p->err, p->errlen, "%s: ", p->name);
    if (n < 0 || (size_t)n >= p->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int oom(struct parse *p) {
    return fail(p, 0, "out of memory");
}

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

static void remember_key(struct parse *p, const char *path, int line) {
    if (p->n_keys >= MAX_KEYS)
        return;
    snprintf(p->keys[p->n_keys].path, KEY_PATH_MAX, "%s", path);
    p->keys[p->n_keys].line = line;
    p->n_keys++;
}

/* Line where the key at path was set, 0 when it kept its default. */
static int key_line(const struct parse *p, const char *path) {
    for (size_t i = 0; i < p->n_keys; i++)
        if (!strcmp(p->keys[i].path, path))
            return p->keys[i].line;
    return 0;
}

static bool key_set(const struct parse *p, const char *path) {
    return key_line(p, path) > 0;
}

/* ---- values ---------------------------------------------------------------- */

static void *slot(struct parse *p, const struct field *f) {
    return (char *)p->cfg + f->offset;
}

static int replace_string(struct parse *p, char **dst, const char *src, size_t len) {
    char *copy = strndup(src, len);
    if (!copy)
        return oom(p);
    free(*dst);
    *dst = copy;
    return 0;
}

static int apply_string(struct parse *p, const struct field *f, const char *path, int line,
                        const yaml_node_t *v) {
    char **dst = slot(p, f);
    if (yamlnode_is_null(v)) {
        if (!(f->flags & F_NULLABLE))
            return fail(p, line, "%s: must be a string, got null (write \"\" for empty)", path);
        free(*dst);
        *dst = NULL;
        return 0;
    }
    if (v->type != YAML_SCALAR_NODE)
        return fail(p, line, "%s: must be a string, got %s", path, kind(v));
    if (has_nul(v))
        return fail(p, line, "%s: must not contain a NUL character", path);
    return replace_string(p, dst, yamlnode_text(v), v->data.scalar.length);
}

static int apply_bool(struct parse *p, const struct field *f, const char *path, int line,
                      const yaml_node_t *v) {
    bool *dst = slot(p, f);
    char tmp[SHOWN_MAX + 8];
    if (is_plain(v) && !strcmp(yamlnode_text(v), "true"))
        *dst = true;
    else if (is_plain(v) && !strcmp(yamlnode_text(v), "false"))
        *dst = false;
    else if (v->type == YAML_SCALAR_NODE && !is_plain(v))
        return fail(p, line, "%s: must be true or false (unquoted), got a quoted string", path);
    else
        return fail(p, line, "%s: must be true or false, got %s", path, shown(v, tmp, sizeof tmp));
    return 0;
}

static bool all_digits(const char *s) {
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static int apply_uint(struct parse *p, const struct field *f, const char *path, int line,
                      const yaml_node_t *v) {
    unsigned *dst = slot(p, f);
    char tmp[SHOWN_MAX + 8];
    if (!is_plain(v) || !all_digits(yamlnode_text(v)))
        return fail(p, line, "%s: must be a whole number, got %s", path, shown(v, tmp, sizeof tmp));
    errno = 0;
    unsigned long long n = strtoull(yamlnode_text(v), NULL, 10);
    if (errno == ERANGE || n > UINT_MAX)
        return fail(p, line, "%s: %s is too large", path, shown(v, tmp, sizeof tmp));
    *dst = (unsigned)n;
    return 0;
}

static int apply_duration(struct parse *p, const struct field *f, const char *path, int line,
                          const yaml_node_t *v) {
    uint64_t *dst = slot(p, f);
    char tmp[SHOWN_MAX + 8];
    if (v->type != YAML_SCALAR_NODE || yamlnode_is_null(v) || has_nul(v))
        return fail(p, line, "%s: must be a duration such as 30s or 5m, got %s", path,
                    shown(v, tmp, sizeof tmp));
    const char *s = yamlnode_text(v);
    if (parse_duration_ms(s, dst) == 0)
        return 0;
    /* A bare number is the likeliest mistake: say which unit was missing
     * rather than guess between seconds and milliseconds. */
    if (all_digits(s) && strlen(s) <= SHOWN_MAX)
        return fail(p, line, "%s: '%s' has no unit; write e.g. %ss or %sms", path, s, s, s);
    return fail(p, line,
                "%s: invalid duration %s (a number and a unit ms, s, m or h, e.g. 250ms, 30s, "
                "1h30m)",
                path, shown(v, tmp, sizeof tmp));
}

static void free_list(char **items, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

/* Entries of a list value: the sequence's items, or the node itself when a
 * single string stands for a list of one. */
static size_t list_length(const yaml_node_t *v) {
    if (v->type == YAML_SEQUENCE_NODE)
        return (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    return yamlnode_is_null(v) ? 0 : 1;
}

static const yaml_node_t *list_item(struct parse *p, const yaml_node_t *v, size_t i) {
    if (v->type != YAML_SEQUENCE_NODE)
        return v;
    return yaml_document_get_node(p->doc, v->data.sequence.items.start[i]);
}

static int check_list_item(struct parse *p, const char *path, size_t i, const yaml_node_t *item) {
    if (!item || item->type != YAML_SCALAR_NODE || yamlnode_is_null(item))
        return fail(p, item ? yamlnode_line(item) : 0, "%s[%zu]: must be a string, got %s", path, i,
                    item ? kind(item) : "nothing");
    if (has_nul(item))
        return fail(p, yamlnode_line(item), "%s[%zu]: must not contain a NUL character", path, i);
    return 0;
}

static int apply_list(struct parse *p, const struct field *f, const char *path, int line,
                      const yaml_node_t *v) {
    bool scalar_ok = (f->flags & F_SCALAR_LIST) && v->type == YAML_SCALAR_NODE;
    if (v->type != YAML_SEQUENCE_NODE && !yamlnode_is_null(v) && !scalar_ok)
        return fail(p, line, "%s: must be a list of strings, got %s", path, kind(v));
    size_t n = list_length(v);
    char **items = n ? calloc(n, sizeof *items) : NULL;
    if (n && !items)
        return oom(p);
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = list_item(p, v, i);
        if (check_list_item(p, path, i, item) < 0) {
            free_list(items, n);
            return -1;
        }
        items[i] = strndup(yamlnode_text(item), item->data.scalar.length);
        if (!items[i]) {
            free_list(items, n);
            return oom(p);
        }
    }
    char ***dst = slot(p, f);
    size_t *count = (size_t *)((char *)p->cfg + f->count_offset);
    free_list(*dst, *count);
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

static int apply_enum(struct parse *p, const struct field *f, const char *path, int line,
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
    return fail(p, line, "%s: must be one of %s, got %s", path,
                choice_names(f->choices, names, sizeof names), shown(v, tmp, sizeof tmp));
}

static int walk_mapping(struct parse *p, const yaml_node_t *map, const struct field *fields,
                        const char *path, int line);

static int apply_field(struct parse *p, const struct field *f, const char *path, int line,
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
    return fail(p, line, "%s: internal error: unknown field type", path);
}

/* ---- the walk ---------------------------------------------------------------- */

static int unknown_key(struct parse *p, const struct field *fields, const char *path,
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
        return fail(p, line, "unknown key '%s%s%.*s' (did you mean '%s'?)", path, dot, SHOWN_MAX,
                    key, close);
    return fail(p, line, "unknown key '%s%s%.*s' (known keys: %s)", path, dot, SHOWN_MAX, key,
                known);
}

static const struct field *find_field(const struct field *fields, const char *key) {
    for (const struct field *f = fields; f->key; f++)
        if (!strcmp(f->key, key))
            return f;
    return NULL;
}

/* Keys must be unique: a repeated key silently overriding the first one is
 * the kind of mistake a config check exists to catch. */
static int check_duplicate(struct parse *p, const yaml_node_pair_t *start,
                           const yaml_node_pair_t *pair, const char *path, const char *key) {
    for (const yaml_node_pair_t *q = start; q < pair; q++) {
        const yaml_node_t *k = yaml_document_get_node(p->doc, q->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp(yamlnode_text(k), key)) {
            const yaml_node_t *here = yaml_document_get_node(p->doc, pair->key);
            return fail(p, yamlnode_line(here), "duplicate key '%s%s%.*s' (first at line %d)", path,
                        *path ? "." : "", SHOWN_MAX, key, yamlnode_line(k));
        }
    }
    return 0;
}

static int walk_pair(struct parse *p, const yaml_node_t *map, const yaml_node_pair_t *pair,
                     const struct field *fields, const char *path) {
    const yaml_node_t *k = yaml_document_get_node(p->doc, pair->key);
    const yaml_node_t *v = yaml_document_get_node(p->doc, pair->value);
    if (!k || !v)
        return fail(p, yamlnode_line(map), "%s: malformed mapping", *path ? path : "top level");
    int line = yamlnode_line(k);
    if (k->type != YAML_SCALAR_NODE || yamlnode_is_null(k) || has_nul(k))
        return fail(p, line, "%s%skeys must be plain names, got %s", path, *path ? ": " : "",
                    kind(k));
    const char *key = yamlnode_text(k);
    if (check_duplicate(p, map->data.mapping.pairs.start, pair, path, key) < 0)
        return -1;
    const struct field *f = find_field(fields, key);
    if (!f)
        return unknown_key(p, fields, path, key, line);
    char child[KEY_PATH_MAX];
    snprintf(child, sizeof child, "%s%s%s", path, *path ? "." : "", key);
    remember_key(p, child, line);
    return apply_field(p, f, child, line, v);
}

static int walk_mapping(struct parse *p, const yaml_node_t *map, const struct field *fields,
                        const char *path, int line) {
    if (yamlnode_is_null(map))
        return 0; /* `section:` with everything commented out: all defaults */
    if (map->type != YAML_MAPPING_NODE) {
        if (!*path)
            return fail(p, yamlnode_line(map),
                        "the top level must be a mapping of sections (source:, kubernetes:, "
                        "...), got %s",
                        kind(map));
        return fail(p, line, "%s: must be a mapping, got %s", path, kind(map));
    }
    for (const yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++)
        if (walk_pair(p, map, pair, fields, path) < 0)
            return -1;
    return 0;
}

/* ---- libyaml passes ------------------------------------------------------- */

static int syntax_error(struct parse *p, const yaml_parser_t *parser) {
    const char *problem = parser->problem ? parser->problem : "unknown error";
    switch (parser->error) {
    case YAML_MEMORY_ERROR: return oom(p);
    case YAML_READER_ERROR:
        return fail(p, 0, "not valid UTF-8 text (byte %zu: %s)", parser->problem_offset, problem);
    default: break;
    }
    int line = (int)parser->problem_mark.line + 1;
    if (parser->context)
        return fail(p, line, "YAML syntax error: %s (%s at line %d)", problem, parser->context,
                    (int)parser->context_mark.line + 1);
    return fail(p, line, "YAML syntax error: %s", problem);
}

static const yaml_char_t *event_anchor(const yaml_event_t *ev) {
    switch (ev->type) {
    case YAML_SCALAR_EVENT: return ev->data.scalar.anchor;
    case YAML_SEQUENCE_START_EVENT: return ev->data.sequence_start.anchor;
    case YAML_MAPPING_START_EVENT: return ev->data.mapping_start.anchor;
    default: return NULL;
    }
}

/* Anchor and alias names are not quoted back: an unquoted password that
 * starts with '*' or '&' is read as one, and would leak into the message. */
static int check_event(struct parse *p, const yaml_event_t *ev, int *documents) {
    int line = (int)ev->start_mark.line + 1;
    if (ev->type == YAML_ALIAS_EVENT)
        return fail(p, line,
                    "aliases (*name) are not supported; write the value out (and quote a value "
                    "that starts with '*')");
    if (event_anchor(ev))
        return fail(p, line,
                    "anchors (&name) are not supported; write the value out (and quote a value "
                    "that starts with '&')");
    if (ev->type == YAML_DOCUMENT_START_EVENT && ++*documents > 1)
        return fail(p, line, "only one YAML document is allowed, found a second one");
    return 0;
}

/* First pass: syntax, anchors, aliases and extra documents, with lines. */
static int check_events(struct parse *p, const char *text, size_t len) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return oom(p);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int documents = 0, rc = 0;
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = syntax_error(p, &parser);
            break;
        }
        rc = check_event(p, &ev, &documents);
        done = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return rc;
}

/* Second pass: the node tree, walked against the schema. */
static int load_tree(struct parse *p, const char *text, size_t len) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return oom(p);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = syntax_error(p, &parser);
        yaml_parser_delete(&parser);
        return rc;
    }
    p->doc = &doc;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc = root ? walk_mapping(p, root, top_fields, "", 0) : 0; /* no root: empty file */
    p->doc = NULL;
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

/* ---- checks across keys -------------------------------------------------- */

/* "NAME:LINE: path: message" with the line where path was set. */
__attribute__((format(printf, 3, 4))) static int invalid(struct parse *p, const char *path,
                                                         const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fail(p, key_line(p, path), "%s: %s", path, msg);
}

static bool has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_dns_label(const char *s, size_t len) {
    if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

/* DNS-1123 subdomain: what Kubernetes accepts as an object name. */
static bool is_dns_subdomain(const char *s) {
    size_t len = strlen(s);
    if (len == 0 || len > 253)
        return false;
    for (const char *label = s;;) {
        const char *dot = strchr(label, '.');
        size_t n = dot ? (size_t)(dot - label) : strlen(label);
        if (!is_dns_label(label, n))
            return false;
        if (!dot)
            return true;
        label = dot + 1;
    }
}

/* "host:port", "[v6]:port" or ":port"; "" disables the server. */
static bool is_listen_address(const char *s) {
    if (!*s)
        return true;
    const char *colon = strrchr(s, ':');
    if (!colon || !all_digits(colon + 1) || strlen(colon + 1) > 5 || atoi(colon + 1) < 1 ||
        atoi(colon + 1) > 65535)
        return false;
    if (s[0] == '[')
        return colon > s + 1 && colon[-1] == ']';
    return memchr(s, ':', (size_t)(colon - s)) == NULL; /* bare IPv6 needs brackets */
}

static int check_prefix(struct parse *p) {
    const char *prefix = p->cfg->source.prefix;
    size_t len = strlen(prefix);
    if (len == 0)
        return invalid(p, "source.prefix", "must not be empty");
    if (prefix[0] == '/')
        return invalid(p, "source.prefix",
                       "must not start with '/' (write 'canary/', not "
                       "'/canary/')");
    if (prefix[len - 1] != '/')
        return invalid(p, "source.prefix",
                       "must end with '/' so it names a folder (e.g. 'canary/')");
    return 0;
}

static int check_urls(struct parse *p) {
    const struct config *c = p->cfg;
    if (c->source.n_endpoints == 0)
        return invalid(p, "source.endpoints", "needs at least one URL");
    for (size_t i = 0; i < c->source.n_endpoints; i++)
        if (!url_is_http(c->source.endpoints[i]))
            return invalid(p, "source.endpoints",
                           "entry %zu is not an http:// or https:// URL with a host", i);
    if (!url_is_http(c->source.address))
        return invalid(p, "source.address", "must be an http:// or https:// URL with a host");
    return 0;
}

/* Settings of the other source type would be ignored without a word: refuse
 * them so that a token meant for Consul is not believed to protect etcd. */
static int check_source_type_keys(struct parse *p) {
    static const char *const etcd_only[] = {"source.username", "source.password",
                                            "source.password_file", "source.liveness_check", NULL};
    static const char *const consul_only[] = {"source.token", "source.token_file",
                                              "source.datacenter", NULL};
    bool etcd = p->cfg->source.type == SOURCE_ETCD;
    const char *const *other = etcd ? consul_only : etcd_only;
    for (; *other; other++)
        if (key_set(p, *other))
            return invalid(p, *other, "only applies to source.type %s (source.type is %s)",
                           etcd ? "consul" : "etcd", etcd ? "etcd" : "consul");
    return 0;
}

static int check_source_auth(struct parse *p) {
    const struct config *c = p->cfg;
    if (c->source.password && c->source.password_file)
        return invalid(p, "source.password_file", "cannot be used together with source.password");
    if (c->source.token && c->source.token_file)
        return invalid(p, "source.token_file", "cannot be used together with source.token");
    bool has_password = c->source.password || c->source.password_file;
    if (c->source.username && !has_password)
        return invalid(p, "source.username", "needs source.password or source.password_file");
    if (!c->source.username && has_password)
        return invalid(p, c->source.password ? "source.password" : "source.password_file",
                       "needs source.username");
    return 0;
}

static bool source_uses_https(const struct config *c) {
    if (c->source.type == SOURCE_CONSUL)
        return url_scheme(c->source.address) == URL_HTTPS;
    for (size_t i = 0; i < c->source.n_endpoints; i++)
        if (url_scheme(c->source.endpoints[i]) == URL_HTTPS)
            return true;
    return false;
}

static int check_source_tls(struct parse *p) {
    const struct tls_files *t = &p->cfg->source.tls;
    if (t->cert_file && !t->key_file)
        return invalid(p, "source.tls.cert_file", "needs source.tls.key_file");
    if (t->key_file && !t->cert_file)
        return invalid(p, "source.tls.key_file", "needs source.tls.cert_file");
    if ((t->ca_file || t->cert_file || t->insecure_skip_verify) && !source_uses_https(p->cfg)) {
        const char *which = t->ca_file     ? "source.tls.ca_file"
                            : t->cert_file ? "source.tls.cert_file"
                                           : "source.tls.insecure_skip_verify";
        return invalid(p, which, "is set, but the source is not reached over https://");
    }
    return 0;
}

static int check_source(struct parse *p) {
    if (check_prefix(p) < 0 || check_urls(p) < 0 || check_source_type_keys(p) < 0 ||
        check_source_auth(p) < 0 || check_source_tls(p) < 0)
        return -1;
    /* Consul caps blocking queries at 10m; a 0 wait would spin. */
    uint64_t wait = p->cfg->source.wait_ms;
    if (wait < 1000 || wait > 10 * 60 * 1000)
        return invalid(p, "source.wait", "must be between 1s and 10m");
    uint64_t live = p->cfg->source.liveness_ms;
    if (live != 0 && (live < 1000 || live > 10 * 60 * 1000))
        return invalid(p, "source.liveness_check", "must be 0 (off) or between 1s and 10m");
    return 0;
}

/* In the kubernetes section "" means the same as unset (the SPEC's example
 * writes `context: ""`), so these checks look at non-empty values only. */
static bool is_set(const char *s) {
    return s && *s;
}

static int check_kubernetes(struct parse *p) {
    const struct config *c = p->cfg;
    bool server = is_set(c->kubernetes.server);
    if (c->kubernetes.field_manager) {
        /* The API server's rule: at most 128 printable characters. */
        const char *fm = c->kubernetes.field_manager;
        size_t n = strlen(fm);
        bool printable = n > 0 && n <= 128;
        for (const unsigned char *q = (const unsigned char *)fm; printable && *q; q++)
            printable = *q >= 0x20 && *q < 0x7f;
        if (!printable)
            return invalid(p, "kubernetes.field_manager",
                           "must be 1 to 128 printable ASCII characters");
    }
    if (c->kubernetes.in_cluster && server)
        return invalid(p, "kubernetes.server", "cannot be used together with in_cluster: true");
    if (c->kubernetes.in_cluster || server) {
        const char *mode = server ? "kubernetes.server" : "in_cluster: true";
        if (is_set(c->kubernetes.kubeconfig))
            return invalid(p, "kubernetes.kubeconfig", "cannot be used together with %s", mode);
        if (is_set(c->kubernetes.context))
            return invalid(p, "kubernetes.context", "cannot be used together with %s", mode);
    }
    if (server && !url_is_http(c->kubernetes.server))
        return invalid(p, "kubernetes.server", "must be an https:// (or http://) URL with a host");
    if (!server) {
        if (is_set(c->kubernetes.token_file))
            return invalid(p, "kubernetes.token_file", "only applies with kubernetes.server");
        if (is_set(c->kubernetes.ca_file))
            return invalid(p, "kubernetes.ca_file", "only applies with kubernetes.server");
        if (c->kubernetes.insecure_skip_verify)
            return invalid(p, "kubernetes.insecure_skip_verify",
                           "only applies with kubernetes.server");
    }
    return 0;
}

static int check_reconcile(struct parse *p) {
    const struct config *c = p->cfg;
    if (c->reconcile.resync_ms != 0 && c->reconcile.resync_ms < 1000)
        return invalid(p, "reconcile.resync", "must be 0 (off) or at least 1s");
    if (c->reconcile.max_in_flight == 0)
        return invalid(p, "reconcile.max_in_flight", "must be at least 1");
    /* A hold longer than this is an outage, not a burst being settled. */
    if (c->reconcile.burst_hold_ms > 5 * 60 * 1000)
        return invalid(p, "reconcile.burst_hold", "must be at most 5m (0 = off)");
    if (c->reconcile.burst_quiet_ms == 0 || c->reconcile.burst_quiet_ms > 60 * 1000)
        return invalid(p, "reconcile.burst_quiet", "must be between 1ms and 1m");
    if (c->reconcile.max_delete_percent > 100)
        return invalid(p, "reconcile.max_delete_percent", "must be between 0 and 100");
    for (size_t i = 0; i < c->reconcile.n_namespaces; i++) {
        const char *ns = c->reconcile.namespaces[i];
        if (!is_dns_label(ns, strlen(ns)))
            return invalid(p, "reconcile.namespaces",
                           "entry %zu is not a valid namespace name (lowercase letters, digits "
                           "and '-', at most 63)",
                           i);
    }
    if (!is_listen_address(c->server.listen))
        return invalid(p, "server.listen", "must be host:port, [ipv6]:port, :port or \"\"");
    return 0;
}

/* Longest accepted leader election duration. A lease held for hours means
 * hours without a writer after a crash, so anything longer is a mistake; the
 * bound also keeps everything computed from these values (deadlines as
 * now + duration in milliseconds, the Lease's leaseDurationSeconds, an int)
 * far from overflow. */
#define LEADER_DURATION_MAX_MS (60 * 60 * 1000ULL)

/* The client-go rules: the leader must renew before the lease runs out, and
 * retries (jittered by up to 1.2x) must fit in the renew deadline. */
static int check_leader_election(struct parse *p) {
    const struct config *c = p->cfg;
    uint64_t lease = c->leader_election.lease_duration_ms;
    uint64_t renew = c->leader_election.renew_deadline_ms;
    uint64_t retry = c->leader_election.retry_period_ms;
    if (!is_dns_label(c->leader_election.namespace, strlen(c->leader_election.namespace)))
        return invalid(p, "leader_election.namespace", "is not a valid namespace name");
    if (!is_dns_subdomain(c->leader_election.name))
        return invalid(p, "leader_election.name", "is not a valid Kubernetes object name");
    if (c->leader_election.identity && !*c->leader_election.identity)
        return invalid(p, "leader_election.identity",
                       "must not be empty (omit it for the "
                       "hostname)");
    static const char *const keys[] = {"leader_election.lease_duration",
                                       "leader_election.renew_deadline",
                                       "leader_election.retry_period"};
    const uint64_t values[] = {lease, renew, retry};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (values[i] > LEADER_DURATION_MAX_MS)
            return invalid(p, keys[i], "must be at most 1h");
    if (retry == 0)
        return invalid(p, "leader_election.retry_period", "must be more than 0");
    if (lease <= renew)
        return invalid(p,
                       key_set(p, "leader_election.lease_duration")
                           ? "leader_election.lease_duration"
                           : "leader_election.renew_deadline",
                       "lease_duration must be longer than renew_deadline");
    /* renew > 1.2 x retry, i.e. 5 renew > 6 retry, without multiplying (which
     * wrapped and let huge values through): for whole numbers that is renew >
     * retry + floor(retry / 5). Exact for any values; the bound above is not
     * relied on. */
    uint64_t fifth = retry / 5;
    if (fifth > UINT64_MAX - retry || renew <= retry + fifth)
        return invalid(p,
                       key_set(p, "leader_election.renew_deadline")
                           ? "leader_election.renew_deadline"
                           : "leader_election.retry_period",
                       "renew_deadline must be longer than 1.2 x retry_period");
    return 0;
}

/* systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY, a path
 * only known at run time: file keys may start with ${CREDENTIALS_DIRECTORY}/
 * (or $CREDENTIALS_DIRECTORY/) and it is filled in here. */
static int expand_credentials(struct parse *p, const char *path, char **value) {
    static const char *const forms[] = {"${CREDENTIALS_DIRECTORY}/", "$CREDENTIALS_DIRECTORY/"};
    for (size_t i = 0; *value && i < sizeof forms / sizeof forms[0]; i++) {
        if (!has_prefix(*value, forms[i]))
            continue;
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        if (!dir || !*dir)
            return invalid(p, path,
                           "names $CREDENTIALS_DIRECTORY, which is not set (it is, for a "
                           "service with LoadCredential=)");
        const char *rest = *value + strlen(forms[i]);
        size_t n = strlen(dir) + 1 + strlen(rest) + 1;
        char *full = malloc(n);
        if (!full)
            return fail(p, key_line(p, path), "out of memory");
        snprintf(full, n, "%s/%s", dir, rest);
        free(*value);
        *value = full;
        return 0;
    }
    return 0;
}

static int expand_all_credentials(struct parse *p) {
    struct config *c = p->cfg;
    struct {
        const char *path;
        char **value;
    } keys[] = {{"source.password_file", &c->source.password_file},
                {"source.token_file", &c->source.token_file},
                {"source.tls.ca_file", &c->source.tls.ca_file},
                {"source.tls.cert_file", &c->source.tls.cert_file},
                {"source.tls.key_file", &c->source.tls.key_file},
                {"kubernetes.kubeconfig", &c->kubernetes.kubeconfig},
                {"kubernetes.token_file", &c->kubernetes.token_file},
                {"kubernetes.ca_file", &c->kubernetes.ca_file}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (expand_credentials(p, keys[i].path, keys[i].value) < 0)
            return -1;
    return 0;
}

static int validate(struct parse *p) {
    if (check_source(p) < 0 || check_kubernetes(p) < 0 || check_reconcile(p) < 0 ||
        check_leader_election(p) < 0 || expand_all_credentials(p) < 0)
        return -1;
    return 0;
}

/* ---- public --------------------------------------------------------------- */

static int set_default(char **dst, const char *value) {
    *dst = strdup(value);
    return *dst ? 0 : -1;
}

int config_defaults(struct config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->source.type = SOURCE_ETCD;
    cfg->source.endpoints = calloc(1, sizeof *cfg->source.endpoints);
    if (!cfg->source.endpoints)
        return -1;
    cfg->source.n_endpoints = 1;
    cfg->source.wait_ms = 5 * 60 * 1000;
    cfg->source.liveness_ms = 5000;
    cfg->traefik.rule_syntax = RULE_SYNTAX_V3;
    cfg->reconcile.policy = POLICY_UPSERT_ONLY;
    cfg->reconcile.resync_ms = 5 * 60 * 1000;
    cfg->reconcile.max_in_flight = 16;
    cfg->reconcile.burst_hold_ms = 10 * 1000;
    cfg->reconcile.burst_quiet_ms = 30;
    cfg->reconcile.max_delete_percent = 50;
    cfg->leader_election.lease_duration_ms = 15000;
    cfg->leader_election.renew_deadline_ms = 10000;
    cfg->leader_election.retry_period_ms = 2000;
    cfg->log.level = LOG_LVL_INFO;
    if (set_default(&cfg->source.endpoints[0], "http://127.0.0.1:2379") < 0 ||
        set_default(&cfg->source.address, "http://127.0.0.1:8500") < 0 ||
        set_default(&cfg->source.prefix, "canary/") < 0 ||
        set_default(&cfg->source.consistency, "default") < 0 ||
        set_default(&cfg->traefik.api_group, "auto") < 0 ||
        set_default(&cfg->server.listen, "127.0.0.1:9464") < 0 ||
        set_default(&cfg->leader_election.namespace, "default") < 0 ||
        set_default(&cfg->leader_election.name, "canary-bridge") < 0) {
        config_free(cfg);
        return -1;
    }
    return 0;
}

int config_parse(const char *text, size_t len, const char *name, struct config *cfg, char *err,
                 size_t errlen) {
    struct config tmp;
    struct parse p = {.name = name ? name : "config", .cfg = &tmp, .err = err, .errlen = errlen};
    memset(cfg, 0, sizeof *cfg);
    if (err && errlen)
        err[0] = '\0';
    if (config_defaults(&tmp) < 0)
        return oom(&p);
    if (!text)
        text = "";
    if (check_events(&p, text, len) < 0 || load_tree(&p, text, len) < 0 || validate(&p) < 0) {
        config_free(&tmp);
        return -1;
    }
    if (set_default(&tmp.path, p.name) < 0) {
        config_free(&tmp);
        return oom(&p);
    }
    *cfg = tmp;
    return 0;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errlen) {
    char *text;
    size_t len;
    memset(cfg, 0, sizeof *cfg);
    if (file_read_all(path, CONFIG_MAX_BYTES, &text, &len, err, errlen) < 0)
        return -1;
    int rc = config_parse(text, len, path, cfg, err, errlen);
    free(text);
    return rc;
}

void config_free(struct config *cfg) {
    free(cfg->path);
    free_list(cfg->source.endpoints, cfg->source.n_endpoints);
    free(cfg->source.address);
    free(cfg->source.prefix);
    free(cfg->source.username);
    secret_free(cfg->source.password);
    free(cfg->source.password_file);
    secret_free(cfg->source.token);
    free(cfg->source.token_file);
    free(cfg->source.datacenter);
    free(cfg->source.consistency);
    free(cfg->source.tls.ca_file);
    free(cfg->source.tls.cert_file);
    free(cfg->source.tls.key_file);
    free(cfg->kubernetes.kubeconfig);
    free(cfg->kubernetes.context);
    free(cfg->kubernetes.server);
    free(cfg->kubernetes.token_file);
    free(cfg->kubernetes.ca_file);
    free(cfg->kubernetes.field_manager);
    free(cfg->traefik.api_group);
    free_list(cfg->reconcile.namespaces, cfg->reconcile.n_namespaces);
    free(cfg->server.listen);
    free(cfg->leader_election.namespace);
    free(cfg->leader_election.name);
    free(cfg->leader_election.identity);
    memset(cfg, 0, sizeof *cfg);
}
