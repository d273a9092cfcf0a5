/* config.c - load and validate the daemon's YAML configuration.
 *
 * libyaml reads the text twice. The first pass looks at the event stream and
 * rejects what the document API would otherwise accept silently: anchors and
 * aliases (a value that quietly changes in two places is a trap in an
 * operator's file) and a second document (which would be ignored). It reports
 * the line where they occur. The second pass builds the node tree with
 * yaml_parser_load, so every value still knows its line when the tree is
 * walked against the schema (config_schema.c); the rules across keys then
 * run on the filled struct (config_rules.c).
 *
 * This file holds what those share (messages, the parse state), the two
 * libyaml passes, the defaults and the public functions. */
#include "bridge/config_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "bridge/lib/fileread.h"
#include "bridge/lib/secret.h"

#define CONFIG_MAX_BYTES (1024 * 1024)

/* ---- shared by the loader's files ------------------------------------------ */

int config_fail(struct config_parse *p, int line, const char *fmt, ...) {
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

int config_oom(struct config_parse *p) {
    return config_fail(p, 0, "out of memory");
}

bool config_all_digits(const char *s) {
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

void config_free_list(char **items, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

/* ---- libyaml passes ------------------------------------------------------- */

static int syntax_error(struct config_parse *p, const yaml_parser_t *parser) {
    const char *problem = parser->problem ? parser->problem : "unknown error";
    switch (parser->error) {
    case YAML_MEMORY_ERROR: return config_oom(p);
    case YAML_READER_ERROR:
        return config_fail(p, 0, "not valid UTF-8 text (byte %zu: %s)", parser->problem_offset,
                           problem);
    default: break;
    }
    int line = (int)parser->problem_mark.line + 1;
    if (parser->context)
        return config_fail(p, line, "YAML syntax error: %s (%s at line %d)", problem,
                           parser->context, (int)parser->context_mark.line + 1);
    return config_fail(p, line, "YAML syntax error: %s", problem);
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
static int check_event(struct config_parse *p, const yaml_event_t *ev, int *documents) {
    int line = (int)ev->start_mark.line + 1;
    if (ev->type == YAML_ALIAS_EVENT)
        return config_fail(
            p, line,
            "aliases (*name) are not supported; write the value out (and quote a value "
            "that starts with '*')");
    if (event_anchor(ev))
        return config_fail(
            p, line,
            "anchors (&name) are not supported; write the value out (and quote a value "
            "that starts with '&')");
    if (ev->type == YAML_DOCUMENT_START_EVENT && ++*documents > 1)
        return config_fail(p, line, "only one YAML document is allowed, found a second one");
    return 0;
}

/* First pass: syntax, anchors, aliases and extra documents, with lines. */
static int check_events(struct config_parse *p, const char *text, size_t len) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return config_oom(p);
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
static int load_tree(struct config_parse *p, const char *text, size_t len) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return config_oom(p);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = syntax_error(p, &parser);
        yaml_parser_delete(&parser);
        return rc;
    }
    p->doc = &doc;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc = root ? config_schema_walk(p, root) : 0; /* no root: empty file */
    p->doc = NULL;
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

/* ---- public ---------------------------------------------------------------- */

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
    cfg->traefik.api.pods.port = 8080;
    cfg->traefik.api.interval_ms = 200;
    cfg->traefik.api.timeout_ms = 30 * 1000;
    cfg->traefik.api.request_timeout_ms = 5000;
    cfg->reconcile.policy = POLICY_UPSERT_ONLY;
    cfg->reconcile.resync_ms = 5 * 60 * 1000;
    cfg->reconcile.max_in_flight = 16;
    cfg->reconcile.burst_hold_ms = 10 * 1000;
    cfg->reconcile.burst_quiet_ms = 30;
    cfg->reconcile.max_delete_percent = 50;
    cfg->reconcile.require_ready_endpoints = true;
    cfg->reconcile.object_writes_per_second = 10;
    cfg->reconcile.retry_min_ms = 50;
    cfg->reconcile.retry_max_ms = 30 * 1000;
    cfg->leader_election.lease_duration_ms = 15000;
    cfg->leader_election.renew_deadline_ms = 10000;
    cfg->leader_election.retry_period_ms = 2000;
    cfg->log.level = LOG_LVL_INFO;
    cfg->log.format = LOG_FORMAT_TEXT;
    if (set_default(&cfg->source.endpoints[0], "http://127.0.0.1:2379") < 0 ||
        set_default(&cfg->source.address, "http://127.0.0.1:8500") < 0 ||
        set_default(&cfg->source.prefix, "canary/") < 0 ||
        set_default(&cfg->source.consistency, "default") < 0 ||
        set_default(&cfg->traefik.api_group, "auto") < 0 ||
        set_default(&cfg->traefik.api.pods.selector, "app.kubernetes.io/name=traefik") < 0 ||
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
    struct config_parse p = {
        .name = name ? name : "config", .cfg = &tmp, .err = err, .errlen = errlen};
    memset(cfg, 0, sizeof *cfg);
    if (err && errlen)
        err[0] = '\0';
    if (config_defaults(&tmp) < 0)
        return config_oom(&p);
    if (!text)
        text = "";
    if (check_events(&p, text, len) < 0 || load_tree(&p, text, len) < 0 ||
        config_rules_check(&p) < 0) {
        config_free(&tmp);
        return -1;
    }
    if (set_default(&tmp.path, p.name) < 0) {
        config_free(&tmp);
        return config_oom(&p);
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
    config_free_list(cfg->source.endpoints, cfg->source.n_endpoints);
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
    config_free_list(cfg->traefik.api.urls, cfg->traefik.api.n_urls);
    free(cfg->traefik.api.pods.namespace);
    free(cfg->traefik.api.pods.selector);
    config_free_list(cfg->reconcile.namespaces, cfg->reconcile.n_namespaces);
    free(cfg->server.listen);
    free(cfg->leader_election.namespace);
    free(cfg->leader_election.name);
    free(cfg->leader_election.identity);
    memset(cfg, 0, sizeof *cfg);
}
