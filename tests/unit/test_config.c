/* test_config.c - the YAML configuration: defaults, the shipped example, a
 * file setting every key, each class of error with its exact line and key
 * path, the duration parser, and that secrets never reach a message.
 *
 * Run from tests/ (meson's workdir): fixtures are under fixtures/config/ and
 * the example config is ../conf/bridge.yaml. */
/* cmocka.h needs these three first; the blank line keeps clang-format from
 * sorting it above them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/config.h"
#include "bridge/lib/duration.h"

#define ERRLEN 1024

/* ---- helpers ---------------------------------------------------------------- */

static int parse(const char *yaml, struct config *cfg, char *err) {
    return config_parse(yaml, strlen(yaml), "t.yaml", cfg, err, ERRLEN);
}

static void assert_zeroed(const struct config *cfg) {
    struct config zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(cfg, &zero, sizeof zero);
}

/* The error must be exactly `want`, and the config left zeroed. */
static void expect_error(const char *yaml, const char *want) {
    struct config cfg;
    char err[ERRLEN];
    memset(&cfg, 0xa5, sizeof cfg);
    if (parse(yaml, &cfg, err) == 0) {
        config_free(&cfg);
        fail_msg("parsed, but expected: %s\n--- input:\n%s", want, yaml);
    }
    assert_string_equal(err, want);
    assert_zeroed(&cfg);
}

/* For long messages (lists of known keys): only the start is fixed. */
static void expect_error_start(const char *yaml, const char *want) {
    struct config cfg;
    char err[ERRLEN];
    if (parse(yaml, &cfg, err) == 0) {
        config_free(&cfg);
        fail_msg("parsed, but expected: %s...\n--- input:\n%s", want, yaml);
    }
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error '%s' does not start with '%s'", err, want);
}

static void expect_ok(const char *yaml, struct config *cfg) {
    char err[ERRLEN] = "";
    if (parse(yaml, cfg, err) != 0)
        fail_msg("unexpected error: %s\n--- input:\n%s", err, yaml);
}

static void assert_defaults(const struct config *c) {
    assert_int_equal(c->source.type, SOURCE_ETCD);
    assert_int_equal(c->source.n_endpoints, 1);
    assert_string_equal(c->source.endpoints[0], "http://127.0.0.1:2379");
    assert_string_equal(c->source.address, "http://127.0.0.1:8500");
    assert_string_equal(c->source.prefix, "canary/");
    assert_null(c->source.username);
    assert_null(c->source.password);
    assert_null(c->source.password_file);
    assert_null(c->source.token);
    assert_null(c->source.token_file);
    assert_null(c->source.datacenter);
    assert_string_equal(c->source.consistency, "default");
    assert_int_equal(c->source.wait_ms, 300000);
    assert_int_equal(c->source.liveness_ms, 5000);
    assert_null(c->source.tls.ca_file);
    assert_null(c->source.tls.cert_file);
    assert_null(c->source.tls.key_file);
    assert_false(c->source.tls.insecure_skip_verify);
    assert_null(c->kubernetes.kubeconfig);
    assert_null(c->kubernetes.context);
    assert_false(c->kubernetes.in_cluster);
    assert_null(c->kubernetes.server);
    assert_null(c->kubernetes.token_file);
    assert_null(c->kubernetes.ca_file);
    assert_false(c->kubernetes.insecure_skip_verify);
    assert_string_equal(c->traefik.api_group, "auto");
    assert_int_equal(c->traefik.rule_syntax, RULE_SYNTAX_V3);
    assert_int_equal(c->reconcile.policy, POLICY_UPSERT_ONLY);
    assert_int_equal(c->reconcile.resync_ms, 300000);
    assert_int_equal(c->reconcile.n_namespaces, 0);
    assert_false(c->reconcile.status);
    assert_int_equal(c->reconcile.max_in_flight, 16);
    assert_int_equal(c->reconcile.burst_hold_ms, 10000);
    assert_int_equal(c->reconcile.burst_quiet_ms, 30);
    assert_false(c->reconcile.allow_cross_namespace);
    assert_int_equal(c->reconcile.max_delete_percent, 50);
    assert_string_equal(c->server.listen, "127.0.0.1:9464");
    assert_false(c->leader_election.enabled);
    assert_string_equal(c->leader_election.namespace, "default");
    assert_string_equal(c->leader_election.name, "canary-bridge");
    assert_int_equal(c->leader_election.lease_duration_ms, 15000);
    assert_int_equal(c->leader_election.renew_deadline_ms, 10000);
    assert_int_equal(c->leader_election.retry_period_ms, 2000);
    assert_null(c->leader_election.identity);
    assert_int_equal(c->log.level, LOG_LVL_INFO);
    assert_int_equal(c->log.format, LOG_FORMAT_TEXT);
}

/* ---- valid input --------------------------------------------------------------- */

static void test_defaults(void **state) {
    (void)state;
    struct config cfg;
    assert_int_equal(config_defaults(&cfg), 0);
    assert_defaults(&cfg);
    assert_null(cfg.path);
    config_free(&cfg);
    assert_zeroed(&cfg);
}

static void test_empty_inputs_mean_defaults(void **state) {
    (void)state;
    static const char *const inputs[] = {
        "", "# only a comment\n", "---\n", "---\n...\n", "source:\nreconcile:\n  # nothing\n",
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        struct config cfg;
        expect_ok(inputs[i], &cfg);
        assert_defaults(&cfg);
        assert_string_equal(cfg.path, "t.yaml");
        config_free(&cfg);
    }
    struct config cfg;
    char err[ERRLEN];
    assert_int_equal(config_parse(NULL, 0, "none.yaml", &cfg, err, sizeof err), 0);
    assert_defaults(&cfg);
    config_free(&cfg);
}

static void test_example_config_parses_to_defaults(void **state) {
    (void)state;
    struct config cfg;
    char err[ERRLEN] = "";
    if (config_load("../conf/bridge.yaml", &cfg, err, sizeof err) != 0)
        fail_msg("conf/bridge.yaml: %s", err);
    assert_defaults(&cfg);
    assert_string_equal(cfg.path, "../conf/bridge.yaml");
    config_free(&cfg);
}

/* A complete file as operators copy it: every section, comments after values. */
static void test_commented_example_parses(void **state) {
    (void)state;
    static const char example[] =
        "source:\n"
        "  type: etcd                         # etcd | consul\n"
        "  endpoints: [http://127.0.0.1:2379] # etcd: one or more, failover\n"
        "  address: http://127.0.0.1:8500     # consul\n"
        "  prefix: canary/\n"
        "  # auth/TLS: etcd user+password or client certs; consul token / token_file; ca_file "
        "...\n"
        "kubernetes:\n"
        "  kubeconfig: /root/.kube/config     # or in_cluster: true, or server + token_file + "
        "ca_file\n"
        "  context: \"\"                        # optional\n"
        "traefik:\n"
        "  api_group: traefik.io              # traefik.io | traefik.containo.us\n"
        "  rule_syntax: v3                    # v3 | v2\n"
        "reconcile:\n"
        "  policy: upsert-only                # upsert-only | sync\n"
        "  resync: 5m                         # full re-list of source and objects\n"
        "  namespaces: []                     # allow-list; empty = any\n"
        "  status: false                      # write P<ns>/<name>/status back to the source\n"
        "server:\n"
        "  listen: 127.0.0.1:9464             # /metrics /healthz /readyz ; \"\" disables\n"
        "leader_election:\n"
        "  enabled: false                     # Kubernetes Lease, for several hosts\n"
        "log:\n"
        "  level: info\n";
    struct config cfg;
    expect_ok(example, &cfg);
    assert_string_equal(cfg.kubernetes.kubeconfig, "/root/.kube/config");
    assert_string_equal(cfg.kubernetes.context, "");
    /* everything else is a default */
    free(cfg.kubernetes.kubeconfig);
    free(cfg.kubernetes.context);
    cfg.kubernetes.kubeconfig = NULL;
    cfg.kubernetes.context = NULL;
    /* The example names traefik.io; the default is auto. */
    assert_string_equal(cfg.traefik.api_group, "traefik.io");
    free(cfg.traefik.api_group);
    cfg.traefik.api_group = strdup("auto");
    assert_non_null(cfg.traefik.api_group);
    assert_defaults(&cfg);
    config_free(&cfg);

    /* "" counts as unset for the exclusive kubernetes keys */
    expect_ok("kubernetes:\n  in_cluster: true\n  context: \"\"\n  server: ''\n", &cfg);
    assert_true(cfg.kubernetes.in_cluster);
    config_free(&cfg);
}

static void test_full_consul_config(void **state) {
    (void)state;
    struct config cfg;
    char err[ERRLEN] = "";
    if (config_load("fixtures/config/consul-full.yaml", &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg.source.type, SOURCE_CONSUL);
    assert_int_equal(cfg.source.n_endpoints, 1);
    assert_string_equal(cfg.source.endpoints[0], "https://etcd.internal:2379");
    assert_string_equal(cfg.source.address, "https://consul.internal:8501");
    assert_string_equal(cfg.source.prefix, "traffic/canary/");
    assert_string_equal(cfg.source.token_file, "/etc/canary-bridge/consul-token");
    assert_null(cfg.source.token);
    assert_string_equal(cfg.source.datacenter, "eu-west");
    assert_string_equal(cfg.source.consistency, "stale");
    assert_int_equal(cfg.source.wait_ms, 90000);
    assert_string_equal(cfg.source.tls.ca_file, "/etc/canary-bridge/ca.pem");
    assert_string_equal(cfg.source.tls.cert_file, "/etc/canary-bridge/client.pem");
    assert_string_equal(cfg.source.tls.key_file, "/etc/canary-bridge/client-key.pem");
    assert_true(cfg.source.tls.insecure_skip_verify);
    assert_string_equal(cfg.kubernetes.server, "https://10.0.0.1:6443/");
    assert_string_equal(cfg.kubernetes.token_file, "/etc/canary-bridge/kube-token");
    assert_string_equal(cfg.kubernetes.ca_file, "/etc/canary-bridge/kube-ca.pem");
    assert_true(cfg.kubernetes.insecure_skip_verify);
    assert_false(cfg.kubernetes.in_cluster);
    assert_string_equal(cfg.traefik.api_group, "traefik.containo.us");
    assert_int_equal(cfg.traefik.rule_syntax, RULE_SYNTAX_V2);
    assert_int_equal(cfg.reconcile.policy, POLICY_SYNC);
    assert_int_equal(cfg.reconcile.resync_ms, 0);
    assert_int_equal(cfg.reconcile.n_namespaces, 2);
    assert_string_equal(cfg.reconcile.namespaces[0], "shop");
    assert_string_equal(cfg.reconcile.namespaces[1], "payments");
    assert_true(cfg.reconcile.status);
    assert_int_equal(cfg.reconcile.max_in_flight, 4);
    assert_string_equal(cfg.server.listen, "");
    assert_true(cfg.leader_election.enabled);
    assert_string_equal(cfg.leader_election.namespace, "canary-system");
    assert_string_equal(cfg.leader_election.name, "canary-bridge.leader");
    assert_int_equal(cfg.leader_election.lease_duration_ms, 30000);
    assert_int_equal(cfg.leader_election.renew_deadline_ms, 20000);
    assert_int_equal(cfg.leader_election.retry_period_ms, 4000);
    assert_string_equal(cfg.leader_election.identity, "bridge-a");
    assert_int_equal(cfg.log.level, LOG_LVL_DEBUG);
    config_free(&cfg);
}

static void test_etcd_auth_config(void **state) {
    (void)state;
    struct config cfg;
    char err[ERRLEN] = "";
    if (config_load("fixtures/config/etcd-auth.yaml", &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg.source.type, SOURCE_ETCD);
    assert_int_equal(cfg.source.n_endpoints, 3);
    assert_string_equal(cfg.source.endpoints[0], "https://etcd-0.internal:2379");
    assert_string_equal(cfg.source.endpoints[2], "http://etcd-2.internal:2379");
    assert_string_equal(cfg.source.username, "canary");
    assert_string_equal(cfg.source.password_file, "/etc/canary-bridge/etcd-password");
    assert_string_equal(cfg.source.tls.cert_file, "client.pem");
    assert_string_equal(cfg.source.tls.key_file, "client-key.pem");
    assert_null(cfg.source.tls.ca_file);
    assert_string_equal(cfg.kubernetes.kubeconfig, "/root/.kube/config");
    assert_string_equal(cfg.kubernetes.context, "staging");
    config_free(&cfg);
}

static void test_endpoints_scalar_or_list(void **state) {
    (void)state;
    struct config cfg;
    expect_ok("source:\n  endpoints: http://a:2379\n", &cfg);
    assert_int_equal(cfg.source.n_endpoints, 1);
    assert_string_equal(cfg.source.endpoints[0], "http://a:2379");
    config_free(&cfg);

    expect_ok("source:\n  endpoints: [\"http://a:2379\", 'https://b:2379']\n", &cfg);
    assert_int_equal(cfg.source.n_endpoints, 2);
    assert_string_equal(cfg.source.endpoints[0], "http://a:2379");
    assert_string_equal(cfg.source.endpoints[1], "https://b:2379");
    config_free(&cfg);

    expect_ok("source:\n  endpoints:\n  - http://a:2379\n  - http://b:2379\n  - http://c:2379\n",
              &cfg);
    assert_int_equal(cfg.source.n_endpoints, 3);
    assert_string_equal(cfg.source.endpoints[2], "http://c:2379");
    config_free(&cfg);

    /* namespaces takes only a list: a scalar is a type error. */
    expect_error("reconcile:\n  namespaces: shop\n",
                 "t.yaml:2: reconcile.namespaces: must be a list of strings, got a string");
}

static void test_null_and_empty_strings(void **state) {
    (void)state;
    struct config cfg;
    expect_ok("kubernetes:\n  context:\n  kubeconfig: ~\n", &cfg);
    assert_null(cfg.kubernetes.context);
    assert_null(cfg.kubernetes.kubeconfig);
    config_free(&cfg);

    expect_ok("kubernetes:\n  context: \"\"\nserver:\n  listen: ''\n", &cfg);
    assert_string_equal(cfg.kubernetes.context, "");
    assert_string_equal(cfg.server.listen, "");
    config_free(&cfg);

    expect_ok("reconcile:\n  namespaces:\n", &cfg);
    assert_int_equal(cfg.reconcile.n_namespaces, 0);
    config_free(&cfg);

    /* Plain scalars that YAML 1.1 would call numbers or booleans are strings
     * where the schema wants a string. */
    expect_ok("leader_election:\n  identity: 42\n", &cfg);
    assert_string_equal(cfg.leader_election.identity, "42");
    config_free(&cfg);

    expect_error("server:\n  listen:\n",
                 "t.yaml:2: server.listen: must be a string, got null (write \"\" for empty)");
}

static void test_every_enum_value(void **state) {
    (void)state;
    static const struct {
        const char *yaml;
        int level;
    } levels[] = {{"log: {level: error}", LOG_LVL_ERROR},
                  {"log: {level: warn}", LOG_LVL_WARN},
                  {"log: {level: info}", LOG_LVL_INFO},
                  {"log: {level: debug}", LOG_LVL_DEBUG}};
    struct config cfg;
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        expect_ok(levels[i].yaml, &cfg);
        assert_int_equal(cfg.log.level, levels[i].level);
        config_free(&cfg);
    }
    expect_ok("log: {format: json}", &cfg);
    assert_int_equal(cfg.log.format, LOG_FORMAT_JSON);
    config_free(&cfg);
    expect_ok("log: {format: text}", &cfg);
    assert_int_equal(cfg.log.format, LOG_FORMAT_TEXT);
    config_free(&cfg);
    expect_error("log:\n  format: logfmt\n",
                 "t.yaml:2: log.format: must be one of text, json, got 'logfmt'");
    expect_ok("traefik: {api_group: auto}\nsource: {consistency: consistent}\n", &cfg);
    assert_string_equal(cfg.traefik.api_group, "auto");
    assert_string_equal(cfg.source.consistency, "consistent");
    config_free(&cfg);
    expect_ok("source:\n  type: \"etcd\"\n", &cfg); /* quoting an enum is fine */
    assert_int_equal(cfg.source.type, SOURCE_ETCD);
    config_free(&cfg);
}

static void test_later_sections_override_nothing_else(void **state) {
    (void)state;
    struct config cfg;
    expect_ok("reconcile:\n  status: true\nlog:\n  level: warn\n", &cfg);
    assert_true(cfg.reconcile.status);
    assert_int_equal(cfg.reconcile.policy, POLICY_UPSERT_ONLY);
    assert_int_equal(cfg.reconcile.max_in_flight, 16);
    assert_int_equal(cfg.log.level, LOG_LVL_WARN);
    config_free(&cfg);
}

/* Off by default (the example file says so too, checked above); a boolean
 * like the others, so typos and yes/no are errors, not a silent "off". */
static void test_allow_cross_namespace(void **state) {
    (void)state;
    struct config cfg;
    expect_ok("reconcile:\n  allow_cross_namespace: true\n", &cfg);
    assert_true(cfg.reconcile.allow_cross_namespace);
    assert_int_equal(cfg.reconcile.policy, POLICY_UPSERT_ONLY);
    config_free(&cfg);
    expect_ok("reconcile: {allow_cross_namespace: false}\n", &cfg);
    assert_false(cfg.reconcile.allow_cross_namespace);
    config_free(&cfg);
    expect_error("reconcile:\n  allow_cross_namespace: yes\n",
                 "t.yaml:2: reconcile.allow_cross_namespace: must be true or false, got 'yes'");
    expect_error("reconcile:\n  allow_cross_namespace: \"true\"\n",
                 "t.yaml:2: reconcile.allow_cross_namespace: must be true or false (unquoted), got "
                 "a quoted string");
    expect_error("reconcile:\n  allow_cross_namespaces: true\n",
                 "t.yaml:2: unknown key 'reconcile.allow_cross_namespaces' (did you mean "
                 "'allow_cross_namespace'?)");
    expect_error("reconcile:\n  status: false\n  allow_cross_namespace: true\n"
                 "  allow_cross_namespace: false\n",
                 "t.yaml:4: duplicate key 'reconcile.allow_cross_namespace' (first at line 3)");
}

static void test_field_manager(void **state) {
    (void)state;
    struct config cfg;
    expect_ok("kubernetes:\n  field_manager: bridge-a@web-1\n", &cfg);
    assert_string_equal(cfg.kubernetes.field_manager, "bridge-a@web-1");
    config_free(&cfg);
    expect_ok("log:\n  level: info\n", &cfg);
    assert_null(cfg.kubernetes.field_manager);
    config_free(&cfg);
    char *long_name = malloc(200);
    assert_non_null(long_name);
    strcpy(long_name, "kubernetes:\n  field_manager: ");
    size_t at = strlen(long_name);
    memset(long_name + at, 'x', 129);
    strcpy(long_name + at + 129, "\n");
    expect_error(long_name,
                 "t.yaml:2: kubernetes.field_manager: must be 1 to 128 printable ASCII characters");
    free(long_name);
    expect_error("kubernetes:\n  field_manager: \"tab\\there\"\n",
                 "t.yaml:2: kubernetes.field_manager: must be 1 to 128 printable ASCII characters");
}

/* ---- errors --------------------------------------------------------------------- */

static void test_error_unknown_keys(void **state) {
    (void)state;
    expect_error("sorce:\n  type: etcd\n",
                 "t.yaml:1: unknown key 'sorce' (did you mean 'source'?)");
    expect_error("log:\n  level: info\nmetrics: {}\n",
                 "t.yaml:3: unknown key 'metrics' (known keys: source, kubernetes, traefik, "
                 "reconcile, server, leader_election, log)");
    expect_error("source:\n  type: etcd\n  endpoint: http://a:2379\n",
                 "t.yaml:3: unknown key 'source.endpoint' (did you mean 'endpoints'?)");
    expect_error("source:\n  type: etcd\n  colour: red\n",
                 "t.yaml:3: unknown key 'source.colour' (known keys: type, endpoints, address, "
                 "prefix, username, password, password_file, token, token_file, datacenter, "
                 "consistency, wait, liveness_check, tls)");
    expect_error("source:\n  tls:\n    insecure_skip_verify: false\n    ca: x\n",
                 "t.yaml:4: unknown key 'source.tls.ca' (known keys: ca_file, cert_file, "
                 "key_file, insecure_skip_verify)");
    expect_error("leader_election:\n  lease_durration: 20s\n",
                 "t.yaml:2: unknown key 'leader_election.lease_durration' (did you mean "
                 "'lease_duration'?)");
}

static void test_error_wrong_types(void **state) {
    (void)state;
    expect_error("source:\n  prefix:\n    a: b\n",
                 "t.yaml:2: source.prefix: must be a string, got a mapping");
    expect_error("source:\n  prefix: [a, b]\n",
                 "t.yaml:2: source.prefix: must be a string, got a list");
    expect_error("source: etcd\n", "t.yaml:1: source: must be a mapping, got a string");
    expect_error("source:\n  tls: [a]\n", "t.yaml:2: source.tls: must be a mapping, got a list");
    expect_error("reconcile:\n  status: maybe\n",
                 "t.yaml:2: reconcile.status: must be true or false, got 'maybe'");
    expect_error("reconcile:\n  status: yes\n",
                 "t.yaml:2: reconcile.status: must be true or false, got 'yes'");
    expect_error("reconcile:\n  status: \"true\"\n",
                 "t.yaml:2: reconcile.status: must be true or false (unquoted), got a quoted "
                 "string");
    expect_error("leader_election:\n  enabled:\n",
                 "t.yaml:2: leader_election.enabled: must be true or false, got null");
    expect_error("reconcile:\n  max_in_flight: -1\n",
                 "t.yaml:2: reconcile.max_in_flight: must be a whole number, got '-1'");
    expect_error("reconcile:\n  max_in_flight: '8'\n",
                 "t.yaml:2: reconcile.max_in_flight: must be a whole number, got '8'");
    expect_error("reconcile:\n  max_in_flight: 99999999999\n",
                 "t.yaml:2: reconcile.max_in_flight: '99999999999' is too large");
    expect_error("source:\n  endpoints: {a: b}\n",
                 "t.yaml:2: source.endpoints: must be a list of strings, got a mapping");
    expect_error("reconcile:\n  namespaces:\n    - shop\n    - {a: b}\n",
                 "t.yaml:4: reconcile.namespaces[1]: must be a string, got a mapping");
    expect_error("reconcile:\n  namespaces: [shop, ~]\n",
                 "t.yaml:2: reconcile.namespaces[1]: must be a string, got null");
    expect_error("source:\n  prefix: \"can\\0ary/\"\n",
                 "t.yaml:2: source.prefix: must not contain a NUL character");
    expect_error("? [a, b]\n: c\n", "t.yaml:1: keys must be plain names, got a list");
}

static void test_error_bad_enums(void **state) {
    (void)state;
    expect_error("source:\n  type: zookeeper\n",
                 "t.yaml:2: source.type: must be one of etcd, consul, got 'zookeeper'");
    expect_error("# comment\n\nreconcile:\n  resync: 1m\n  policy: delete\n",
                 "t.yaml:5: reconcile.policy: must be one of upsert-only, sync, got 'delete'");
    expect_error("traefik:\n  rule_syntax: 3\n",
                 "t.yaml:2: traefik.rule_syntax: must be one of v3, v2, got '3'");
    expect_error("traefik:\n  api_group: traefik.io/v1alpha1\n",
                 "t.yaml:2: traefik.api_group: must be one of traefik.io, traefik.containo.us, "
                 "auto, got 'traefik.io/v1alpha1'");
    expect_error("log:\n  level: INFO\n",
                 "t.yaml:2: log.level: must be one of error, warn, info, debug, got 'INFO'");
    expect_error("source:\n  consistency: [stale]\n",
                 "t.yaml:2: source.consistency: must be one of default, stale, consistent, got "
                 "a list");
}

static void test_error_bad_durations(void **state) {
    (void)state;
    expect_error("reconcile:\n  resync: 300\n",
                 "t.yaml:2: reconcile.resync: '300' has no unit; write e.g. 300s or 300ms");
    expect_error("reconcile:\n  resync: 5 minutes\n",
                 "t.yaml:2: reconcile.resync: invalid duration '5 minutes' (a number and a unit "
                 "ms, s, m or h, e.g. 250ms, 30s, 1h30m)");
    expect_error("source:\n  wait: {s: 1}\n",
                 "t.yaml:2: source.wait: must be a duration such as 30s or 5m, got a mapping");
    expect_error("leader_election:\n  retry_period:\n",
                 "t.yaml:2: leader_election.retry_period: must be a duration such as 30s or 5m, "
                 "got null");
}

static void test_error_duplicate_keys(void **state) {
    (void)state;
    expect_error("log:\n  level: info\nlog:\n  level: debug\n",
                 "t.yaml:3: duplicate key 'log' (first at line 1)");
    expect_error("source:\n  prefix: a/\n  type: etcd\n  prefix: b/\n",
                 "t.yaml:4: duplicate key 'source.prefix' (first at line 2)");
}

static void test_error_anchors_and_aliases(void **state) {
    (void)state;
    expect_error("source:\n  prefix: &p canary/\n",
                 "t.yaml:2: anchors (&name) are not supported; write the value out (and quote a "
                 "value that starts with '&')");
    expect_error("source:\n  tls: &t\n    insecure_skip_verify: false\n",
                 "t.yaml:2: anchors (&name) are not supported; write the value out (and quote a "
                 "value that starts with '&')");
    expect_error("source:\n  type: etcd\n  prefix: *p\n",
                 "t.yaml:3: aliases (*name) are not supported; write the value out (and quote a "
                 "value that starts with '*')");
    expect_error("a: &x {b: 1}\nc: *x\n",
                 "t.yaml:1: anchors (&name) are not supported; write the value out (and quote a "
                 "value that starts with '&')");
}

static void test_error_documents_and_root(void **state) {
    (void)state;
    expect_error("log: {level: info}\n---\nlog: {level: debug}\n",
                 "t.yaml:2: only one YAML document is allowed, found a second one");
    expect_error("- source\n- log\n", "t.yaml:1: the top level must be a mapping of sections "
                                      "(source:, kubernetes:, ...), got a list");
    expect_error("\n\nhello\n", "t.yaml:3: the top level must be a mapping of sections (source:, "
                                "kubernetes:, ...), got a string");
    expect_error_start("source:\n  type: [etcd\nlog: {}\n", "t.yaml:3: YAML syntax error: ");
    expect_error_start("source:\n\ttype: etcd\n", "t.yaml:2: YAML syntax error: ");
    expect_error("log: {level: \"\xff\"}\n",
                 "t.yaml: not valid UTF-8 text (byte 14: invalid leading UTF-8 octet)");
}

static void test_error_exclusive_keys(void **state) {
    (void)state;
    expect_error("source:\n  username: u\n  password: p\n  password_file: /f\n",
                 "t.yaml:4: source.password_file: cannot be used together with source.password");
    expect_error("source:\n  type: consul\n  token_file: /f\n  token: t\n",
                 "t.yaml:3: source.token_file: cannot be used together with source.token");
    expect_error("source:\n  username: u\n",
                 "t.yaml:2: source.username: needs source.password or source.password_file");
    expect_error("source:\n  password_file: /f\n",
                 "t.yaml:2: source.password_file: needs source.username");
    expect_error("source:\n  type: consul\n  username: u\n  password: p\n",
                 "t.yaml:3: source.username: only applies to source.type etcd (source.type is "
                 "consul)");
    expect_error("source:\n  datacenter: dc1\n",
                 "t.yaml:2: source.datacenter: only applies to source.type consul (source.type "
                 "is etcd)");
    expect_error("kubernetes:\n  in_cluster: true\n  server: https://k:6443\n",
                 "t.yaml:3: kubernetes.server: cannot be used together with in_cluster: true");
    expect_error("kubernetes:\n  kubeconfig: /k\n  in_cluster: true\n",
                 "t.yaml:2: kubernetes.kubeconfig: cannot be used together with in_cluster: "
                 "true");
    expect_error("kubernetes:\n  server: https://k:6443\n  context: prod\n",
                 "t.yaml:3: kubernetes.context: cannot be used together with kubernetes.server");
    expect_error("kubernetes:\n  token_file: /t\n",
                 "t.yaml:2: kubernetes.token_file: only applies with kubernetes.server");
    expect_error("kubernetes:\n  insecure_skip_verify: true\n",
                 "t.yaml:2: kubernetes.insecure_skip_verify: only applies with kubernetes.server");
    expect_error("source:\n  tls:\n    cert_file: c.pem\n",
                 "t.yaml:3: source.tls.cert_file: needs source.tls.key_file");
    expect_error("source:\n  tls:\n    ca_file: ca.pem\n",
                 "t.yaml:3: source.tls.ca_file: is set, but the source is not reached over "
                 "https://");
}

static void test_error_prefix_rules(void **state) {
    (void)state;
    expect_error("source:\n  prefix: \"\"\n", "t.yaml:2: source.prefix: must not be empty");
    expect_error("source:\n  prefix: /canary/\n",
                 "t.yaml:2: source.prefix: must not start with '/' (write 'canary/', not "
                 "'/canary/')");
    expect_error("source:\n  prefix: canary\n",
                 "t.yaml:2: source.prefix: must end with '/' so it names a folder (e.g. "
                 "'canary/')");
    struct config cfg;
    expect_ok("source:\n  prefix: team-a/canary/\n", &cfg);
    assert_string_equal(cfg.source.prefix, "team-a/canary/");
    config_free(&cfg);
}

static void test_error_urls_and_addresses(void **state) {
    (void)state;
    expect_error("source:\n  endpoints: []\n",
                 "t.yaml:2: source.endpoints: needs at least one URL");
    expect_error("source:\n  endpoints: [http://a:2379, 'etcd:2379']\n",
                 "t.yaml:2: source.endpoints: entry 1 is not an http:// or https:// URL with a "
                 "host");
    expect_error("source:\n  address: consul:8500\n",
                 "t.yaml:2: source.address: must be an http:// or https:// URL with a host");
    expect_error("source:\n  address: \"http://\"\n",
                 "t.yaml:2: source.address: must be an http:// or https:// URL with a host");
    expect_error("kubernetes:\n  server: ftp://k\n",
                 "t.yaml:2: kubernetes.server: must be an https:// (or http://) URL with a host");
    expect_error("server:\n  listen: localhost\n",
                 "t.yaml:2: server.listen: must be host:port, [ipv6]:port, :port or \"\"");
    expect_error("server:\n  listen: ::1:9464\n",
                 "t.yaml:2: server.listen: must be host:port, [ipv6]:port, :port or \"\"");
    expect_error("server:\n  listen: 0.0.0.0:70000\n",
                 "t.yaml:2: server.listen: must be host:port, [ipv6]:port, :port or \"\"");
    struct config cfg;
    expect_ok("server:\n  listen: \"[::1]:9464\"\n", &cfg);
    config_free(&cfg);
    expect_ok("server:\n  listen: :9464\n", &cfg);
    config_free(&cfg);
    expect_ok("kubernetes:\n  server: http://127.0.0.1:8080\n", &cfg);
    config_free(&cfg);
}

static void test_error_ranges(void **state) {
    (void)state;
    expect_error("source:\n  type: consul\n  wait: 15m\n",
                 "t.yaml:3: source.wait: must be between 1s and 10m");
    expect_error("source:\n  liveness_check: 500ms\n",
                 "t.yaml:2: source.liveness_check: must be 0 (off) or between 1s and 10m");
    expect_error("source:\n  liveness_check: 11m\n",
                 "t.yaml:2: source.liveness_check: must be 0 (off) or between 1s and 10m");
    expect_error("source:\n  type: consul\n  liveness_check: 5s\n",
                 "t.yaml:3: source.liveness_check: only applies to source.type etcd (source.type "
                 "is consul)");
    struct config cfg;
    expect_ok("source:\n  liveness_check: 0\n", &cfg);
    assert_int_equal(cfg.source.liveness_ms, 0);
    config_free(&cfg);
    expect_ok("source:\n  liveness_check: 2s\n", &cfg);
    assert_int_equal(cfg.source.liveness_ms, 2000);
    config_free(&cfg);
    expect_error("reconcile:\n  resync: 10ms\n",
                 "t.yaml:2: reconcile.resync: must be 0 (off) or at least 1s");
    expect_error("reconcile:\n  max_in_flight: 0\n",
                 "t.yaml:2: reconcile.max_in_flight: must be at least 1");
    expect_error("reconcile:\n  burst_hold: 6m\n",
                 "t.yaml:2: reconcile.burst_hold: must be at most 5m (0 = off)");
    expect_error("reconcile:\n  burst_quiet: 0\n",
                 "t.yaml:2: reconcile.burst_quiet: must be between 1ms and 1m");
    expect_error("reconcile:\n  max_delete_percent: 101\n",
                 "t.yaml:2: reconcile.max_delete_percent: must be between 0 and 100");
    expect_error("reconcile:\n  namespaces: [shop, Shop]\n",
                 "t.yaml:2: reconcile.namespaces: entry 1 is not a valid namespace name "
                 "(lowercase letters, digits and '-', at most 63)");
    expect_error("leader_election:\n  name: Canary_Bridge\n",
                 "t.yaml:2: leader_election.name: is not a valid Kubernetes object name");
    expect_error("leader_election:\n  namespace: \"\"\n",
                 "t.yaml:2: leader_election.namespace: is not a valid namespace name");
}

static void test_error_leader_election_timing(void **state) {
    (void)state;
    expect_error("leader_election:\n  lease_duration: 10s\n",
                 "t.yaml:2: leader_election.lease_duration: lease_duration must be longer than "
                 "renew_deadline");
    expect_error("leader_election:\n  renew_deadline: 20s\n",
                 "t.yaml:2: leader_election.renew_deadline: lease_duration must be longer than "
                 "renew_deadline");
    /* 1.2 x 9s = 10.8s > 10s */
    expect_error("leader_election:\n  enabled: true\n  retry_period: 9s\n",
                 "t.yaml:3: leader_election.retry_period: renew_deadline must be longer than 1.2 "
                 "x retry_period");
    expect_error("leader_election:\n  retry_period: 0\n",
                 "t.yaml:2: leader_election.retry_period: must be more than 0");
    struct config cfg;
    /* exactly at the 1.2 boundary is not enough; just above is. */
    expect_error("leader_election:\n  renew_deadline: 12s\n  retry_period: 10s\n"
                 "  lease_duration: 20s\n",
                 "t.yaml:2: leader_election.renew_deadline: renew_deadline must be longer than "
                 "1.2 x retry_period");
    expect_ok("leader_election:\n  renew_deadline: 12001ms\n  retry_period: 10s\n"
              "  lease_duration: 20s\n",
              &cfg);
    assert_int_equal(cfg.leader_election.renew_deadline_ms, 12001);
    config_free(&cfg);
}

/* Huge durations: renew_deadline x 10 and retry_period x 12 used to wrap in
 * 64 bits, so this (from the fuzzer) passed; each duration is now at most 1h,
 * and the 1.2 rule is exact. */
static void test_error_leader_election_huge(void **state) {
    (void)state;
    expect_error("leader_election:\n  enabled: true\n"
                 "  lease_duration: 15372286728091293303ms\n"
                 "  renew_deadline: 15372286728091293302ms\n"
                 "  retry_period: 15372286728091293302ms\n",
                 "t.yaml:3: leader_election.lease_duration: must be at most 1h");
    expect_error("leader_election:\n  renew_deadline: 3600001ms\n  lease_duration: 1h\n",
                 "t.yaml:2: leader_election.renew_deadline: must be at most 1h");
    expect_error("leader_election:\n  retry_period: 61m\n",
                 "t.yaml:2: leader_election.retry_period: must be at most 1h");
    /* At the bound, and the 1.2 rule on either side of it with odd values:
     * 1.2 x 2999 = 3598.8, 1.2 x 3000 = 3600. */
    struct config cfg;
    expect_ok("leader_election:\n  lease_duration: 1h\n  renew_deadline: 3599s\n"
              "  retry_period: 2999s\n",
              &cfg);
    assert_int_equal(cfg.leader_election.lease_duration_ms, 3600000);
    config_free(&cfg);
    expect_error("leader_election:\n  lease_duration: 1h\n  renew_deadline: 3600s\n"
                 "  retry_period: 3000s\n",
                 "t.yaml:2: leader_election.lease_duration: lease_duration must be longer than "
                 "renew_deadline");
    expect_error("leader_election:\n  lease_duration: 1h\n  renew_deadline: 3599999ms\n"
                 "  retry_period: 3000s\n",
                 "t.yaml:3: leader_election.renew_deadline: renew_deadline must be longer than "
                 "1.2 x retry_period");
    expect_ok("leader_election:\n  renew_deadline: 4ms\n  retry_period: 3ms\n", &cfg);
    config_free(&cfg);
    expect_error("leader_election:\n  renew_deadline: 6ms\n  retry_period: 5ms\n",
                 "t.yaml:2: leader_election.renew_deadline: renew_deadline must be longer than "
                 "1.2 x retry_period");
}

/* ---- secrets -------------------------------------------------------------------- */

static void expect_secret_hidden(const char *yaml, const char *secret) {
    struct config cfg;
    char err[ERRLEN];
    if (parse(yaml, &cfg, err) == 0) {
        config_free(&cfg);
        fail_msg("parsed, but expected an error:\n%s", yaml);
    }
    assert_true(strlen(err) > 0);
    if (strstr(err, secret))
        fail_msg("secret leaked into: %s", err);
}

static void test_secrets_not_in_errors(void **state) {
    (void)state;
    const char *s = "Hunter2-S3cret";
    expect_secret_hidden("source:\n  username: u\n  password: Hunter2-S3cret\n"
                         "  password_file: /f\n",
                         s);
    expect_secret_hidden("source:\n  password: Hunter2-S3cret\n", s);
    expect_secret_hidden("source:\n  type: consul\n  password: Hunter2-S3cret\n", s);
    expect_secret_hidden("source:\n  token: Hunter2-S3cret\n", s);
    expect_secret_hidden("source:\n  type: consul\n  token: Hunter2-S3cret\n  token_file: /t\n", s);
    expect_secret_hidden("source:\n  type: consul\n  token: \"Hunter2-S3cret\n", s);
    expect_secret_hidden("source:\n  type: consul\n  token: Hunter2-S3cret: x\n", s);
    expect_secret_hidden("source:\n  type: consul\n  token: [Hunter2-S3cret]\n", s);
    expect_secret_hidden("source:\n  type: consul\n  token: &Hunter2-S3cret x\n", s);
    expect_secret_hidden("source:\n  type: consul\n  token: *Hunter2-S3cret\n", s);
}

/* ---- config_load --------------------------------------------------------------- */

static void test_load_errors_name_the_file(void **state) {
    (void)state;
    struct config cfg;
    char err[ERRLEN];
    assert_int_equal(config_load("fixtures/config/unknown-key.yaml", &cfg, err, sizeof err), -1);
    assert_string_equal(err, "fixtures/config/unknown-key.yaml:6: unknown key "
                             "'reconcile.resynk' (did you mean 'resync'?)");
    assert_zeroed(&cfg);

    assert_int_equal(config_load("fixtures/config/no-such.yaml", &cfg, err, sizeof err), -1);
    assert_string_equal(err,
                        "fixtures/config/no-such.yaml: cannot open: No such file or directory");
    assert_zeroed(&cfg);

    assert_int_equal(config_load("fixtures/config", &cfg, err, sizeof err), -1);
    assert_string_equal(err, "fixtures/config: cannot read: Is a directory");
}

static void test_load_refuses_large_files(void **state) {
    (void)state;
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    /* A valid config padded with comments to just over 1 MiB. */
    assert_true(fputs("log:\n  level: info\n", f) >= 0);
    for (int i = 0; i < 1024 * 1024 / 64 + 1; i++)
        assert_true(fprintf(f, "# %061d\n", i) > 0);
    assert_int_equal(fclose(f), 0);

    struct config cfg;
    char err[ERRLEN], want[256];
    assert_int_equal(config_load(path, &cfg, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: larger than 1048576 bytes; refusing to read it", path);
    assert_string_equal(err, want);
    assert_int_equal(unlink(path), 0);
}

static void test_error_message_truncation_is_safe(void **state) {
    (void)state;
    struct config cfg;
    char err[16];
    const char *yaml = "source:\n  type: zookeeper\n";
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof err), -1);
    assert_int_equal(strlen(err), sizeof err - 1);
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &cfg, NULL, 0), -1);
}

/* ---- durations ----------------------------------------------------------------- */

static void test_parse_duration(void **state) {
    (void)state;
    static const struct {
        const char *text;
        uint64_t ms;
    } good[] = {
        {"0", 0},
        {"0s", 0},
        {"250ms", 250},
        {"30s", 30000},
        {"5m", 300000},
        {"1h", 3600000},
        {"1h30m", 5400000},
        {"2h45m30s500ms", 9930500},
        {"1.5s", 1500},
        {".5s", 500},
        {"1.s", 1000},
        {"0.25h", 900000},
        {"1h1h", 7200000},
        {"90s", 90000},
        {"10.001s", 10001},
        {"18446744073709551615ms", UINT64_MAX},
        /* The largest value reached through a fraction. */
        {"18446744073709551.615s", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t ms = 42;
        if (parse_duration_ms(good[i].text, &ms) != 0)
            fail_msg("'%s' should parse", good[i].text);
        assert_int_equal(ms, good[i].ms);
    }
    static const char *const bad[] = {
        "",
        "5",
        "300",
        "-5s",
        "+5s",
        "5 s",
        " 5s",
        "5s ",
        "s",
        "1d",
        "1us",
        "1ns",
        "1.5ms",
        "1.0001s",
        "1h30",
        "m5",
        ".s",
        "1..5s",
        "1e3ms",
        "00",
        "1S",
        "1.2.3s",
        "5m3",
        "0x10s",
        "5min",
        "1hour",
        "99999999999999999999h",
        "5124095576030432h",
        "18446744073709551616ms",
        "18446744073709551615ms1ms",
        /* The whole part fits, whole + fraction does not (it used to wrap:
         * the first was read as about 28 minutes). */
        "5124095576030.9h",
        "18446744073709551.616s",
        "307445734561825.9m",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 42;
        if (parse_duration_ms(bad[i], &ms) == 0)
            fail_msg("'%s' should be refused, got %llu", bad[i], (unsigned long long)ms);
        assert_int_equal(ms, 42);
    }
    assert_int_equal(parse_duration_ms(NULL, &(uint64_t){0}), -1);
}

/* LoadCredential=: file keys may name $CREDENTIALS_DIRECTORY. */
static void test_credentials_directory(void **state) {
    (void)state;
    struct config cfg;
    char err[512];
    const char *text =
        "source:\n  type: consul\n  token_file: ${CREDENTIALS_DIRECTORY}/consul-token\n"
        "kubernetes:\n  kubeconfig: $CREDENTIALS_DIRECTORY/kubeconfig\n";
    assert_int_equal(setenv("CREDENTIALS_DIRECTORY", "/run/credentials/cb.service", 1), 0);
    assert_int_equal(config_parse(text, strlen(text), "t.yaml", &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.source.token_file, "/run/credentials/cb.service/consul-token");
    assert_string_equal(cfg.kubernetes.kubeconfig, "/run/credentials/cb.service/kubeconfig");
    config_free(&cfg);
    assert_int_equal(unsetenv("CREDENTIALS_DIRECTORY"), 0);
    assert_int_equal(config_parse(text, strlen(text), "t.yaml", &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "t.yaml:3: source.token_file: names $CREDENTIALS_DIRECTORY"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credentials_directory),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_inputs_mean_defaults),
        cmocka_unit_test(test_example_config_parses_to_defaults),
        cmocka_unit_test(test_commented_example_parses),
        cmocka_unit_test(test_full_consul_config),
        cmocka_unit_test(test_etcd_auth_config),
        cmocka_unit_test(test_endpoints_scalar_or_list),
        cmocka_unit_test(test_null_and_empty_strings),
        cmocka_unit_test(test_every_enum_value),
        cmocka_unit_test(test_later_sections_override_nothing_else),
        cmocka_unit_test(test_allow_cross_namespace),
        cmocka_unit_test(test_field_manager),
        cmocka_unit_test(test_error_unknown_keys),
        cmocka_unit_test(test_error_wrong_types),
        cmocka_unit_test(test_error_bad_enums),
        cmocka_unit_test(test_error_bad_durations),
        cmocka_unit_test(test_error_duplicate_keys),
        cmocka_unit_test(test_error_anchors_and_aliases),
        cmocka_unit_test(test_error_documents_and_root),
        cmocka_unit_test(test_error_exclusive_keys),
        cmocka_unit_test(test_error_prefix_rules),
        cmocka_unit_test(test_error_urls_and_addresses),
        cmocka_unit_test(test_error_ranges),
        cmocka_unit_test(test_error_leader_election_timing),
        cmocka_unit_test(test_error_leader_election_huge),
        cmocka_unit_test(test_secrets_not_in_errors),
        cmocka_unit_test(test_load_errors_name_the_file),
        cmocka_unit_test(test_load_refuses_large_files),
        cmocka_unit_test(test_error_message_truncation_is_safe),
        cmocka_unit_test(test_parse_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
