/* test_config.c - reading the YAML configuration and its schema
 * (bridge/config.c, bridge/config_schema.c): defaults, the shipped example, a
 * file setting every key, each class of error with its exact line and key
 * path, loading a file, and that secrets never reach a message. The rules
 * across keys are tested in test_config_rules.c.
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

#include "cfgtest.h"

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
    assert_int_equal(c->reconcile.max_step, 0);
    assert_int_equal(c->reconcile.object_writes_per_second, 10);
    assert_int_equal(c->reconcile.retry_min_ms, 50);
    assert_int_equal(c->reconcile.retry_max_ms, 30000);
    assert_int_equal(c->traefik.api.n_urls, 0);
    assert_null(c->traefik.api.pods.namespace);
    assert_string_equal(c->traefik.api.pods.selector, "app.kubernetes.io/name=traefik");
    assert_int_equal(c->traefik.api.pods.port, 8080);
    assert_int_equal(c->traefik.api.interval_ms, 200);
    assert_int_equal(c->traefik.api.timeout_ms, 30000);
    assert_int_equal(c->traefik.api.request_timeout_ms, 5000);
    assert_false(traefikapi_enabled(&c->traefik.api));
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
    cfgtest_zeroed(&cfg);
}

static void test_empty_inputs_mean_defaults(void **state) {
    (void)state;
    static const char *const inputs[] = {
        "", "# only a comment\n", "---\n", "---\n...\n", "source:\nreconcile:\n  # nothing\n",
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        struct config cfg;
        cfgtest_ok(inputs[i], &cfg);
        assert_defaults(&cfg);
        assert_string_equal(cfg.path, "t.yaml");
        config_free(&cfg);
    }
    struct config cfg;
    char err[CFGTEST_ERRLEN];
    assert_int_equal(config_parse(NULL, 0, "none.yaml", &cfg, err, sizeof err), 0);
    assert_defaults(&cfg);
    config_free(&cfg);
}

static void test_example_config_parses_to_defaults(void **state) {
    (void)state;
    struct config cfg;
    char err[CFGTEST_ERRLEN] = "";
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
    cfgtest_ok(example, &cfg);
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
    cfgtest_ok("kubernetes:\n  in_cluster: true\n  context: \"\"\n  server: ''\n", &cfg);
    assert_true(cfg.kubernetes.in_cluster);
    config_free(&cfg);
}

static void test_full_consul_config(void **state) {
    (void)state;
    struct config cfg;
    char err[CFGTEST_ERRLEN] = "";
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
    char err[CFGTEST_ERRLEN] = "";
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

/* reconcile.max_step: percentage points, 0 (default) is no limit. */
static void test_reconcile_max_step(void **state) {
    (void)state;
    struct config cfg;
    cfgtest_ok("reconcile:\n  max_step: 20\n", &cfg);
    assert_int_equal(cfg.reconcile.max_step, 20);
    config_free(&cfg);
}

static void test_endpoints_scalar_or_list(void **state) {
    (void)state;
    struct config cfg;
    cfgtest_ok("source:\n  endpoints: http://a:2379\n", &cfg);
    assert_int_equal(cfg.source.n_endpoints, 1);
    assert_string_equal(cfg.source.endpoints[0], "http://a:2379");
    config_free(&cfg);

    cfgtest_ok("source:\n  endpoints: [\"http://a:2379\", 'https://b:2379']\n", &cfg);
    assert_int_equal(cfg.source.n_endpoints, 2);
    assert_string_equal(cfg.source.endpoints[0], "http://a:2379");
    assert_string_equal(cfg.source.endpoints[1], "https://b:2379");
    config_free(&cfg);

    cfgtest_ok("source:\n  endpoints:\n  - http://a:2379\n  - http://b:2379\n  - http://c:2379\n",
               &cfg);
    assert_int_equal(cfg.source.n_endpoints, 3);
    assert_string_equal(cfg.source.endpoints[2], "http://c:2379");
    config_free(&cfg);

    /* namespaces takes only a list: a scalar is a type error. */
    cfgtest_error("reconcile:\n  namespaces: shop\n",
                  "t.yaml:2: reconcile.namespaces: must be a list of strings, got a string");
}

static void test_null_and_empty_strings(void **state) {
    (void)state;
    struct config cfg;
    cfgtest_ok("kubernetes:\n  context:\n  kubeconfig: ~\n", &cfg);
    assert_null(cfg.kubernetes.context);
    assert_null(cfg.kubernetes.kubeconfig);
    config_free(&cfg);

    cfgtest_ok("kubernetes:\n  context: \"\"\nserver:\n  listen: ''\n", &cfg);
    assert_string_equal(cfg.kubernetes.context, "");
    assert_string_equal(cfg.server.listen, "");
    config_free(&cfg);

    cfgtest_ok("reconcile:\n  namespaces:\n", &cfg);
    assert_int_equal(cfg.reconcile.n_namespaces, 0);
    config_free(&cfg);

    /* Plain scalars that YAML 1.1 would call numbers or booleans are strings
     * where the schema wants a string. */
    cfgtest_ok("leader_election:\n  identity: 42\n", &cfg);
    assert_string_equal(cfg.leader_election.identity, "42");
    config_free(&cfg);

    cfgtest_error("server:\n  listen:\n",
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
        cfgtest_ok(levels[i].yaml, &cfg);
        assert_int_equal(cfg.log.level, levels[i].level);
        config_free(&cfg);
    }
    cfgtest_ok("log: {format: json}", &cfg);
    assert_int_equal(cfg.log.format, LOG_FORMAT_JSON);
    config_free(&cfg);
    cfgtest_ok("log: {format: text}", &cfg);
    assert_int_equal(cfg.log.format, LOG_FORMAT_TEXT);
    config_free(&cfg);
    cfgtest_error("log:\n  format: logfmt\n",
                  "t.yaml:2: log.format: must be one of text, json, got 'logfmt'");
    cfgtest_ok("traefik: {api_group: auto}\nsource: {consistency: consistent}\n", &cfg);
    assert_string_equal(cfg.traefik.api_group, "auto");
    assert_string_equal(cfg.source.consistency, "consistent");
    config_free(&cfg);
    cfgtest_ok("source:\n  type: \"etcd\"\n", &cfg); /* quoting an enum is fine */
    assert_int_equal(cfg.source.type, SOURCE_ETCD);
    config_free(&cfg);
}

static void test_later_sections_override_nothing_else(void **state) {
    (void)state;
    struct config cfg;
    cfgtest_ok("reconcile:\n  status: true\nlog:\n  level: warn\n", &cfg);
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
    cfgtest_ok("reconcile:\n  allow_cross_namespace: true\n", &cfg);
    assert_true(cfg.reconcile.allow_cross_namespace);
    assert_int_equal(cfg.reconcile.policy, POLICY_UPSERT_ONLY);
    config_free(&cfg);
    cfgtest_ok("reconcile: {allow_cross_namespace: false}\n", &cfg);
    assert_false(cfg.reconcile.allow_cross_namespace);
    config_free(&cfg);
    cfgtest_error("reconcile:\n  allow_cross_namespace: yes\n",
                  "t.yaml:2: reconcile.allow_cross_namespace: must be true or false, got 'yes'");
    cfgtest_error(
        "reconcile:\n  allow_cross_namespace: \"true\"\n",
        "t.yaml:2: reconcile.allow_cross_namespace: must be true or false (unquoted), got "
        "a quoted string");
    cfgtest_error("reconcile:\n  allow_cross_namespaces: true\n",
                  "t.yaml:2: unknown key 'reconcile.allow_cross_namespaces' (did you mean "
                  "'allow_cross_namespace'?)");
    cfgtest_error("reconcile:\n  status: false\n  allow_cross_namespace: true\n"
                  "  allow_cross_namespace: false\n",
                  "t.yaml:4: duplicate key 'reconcile.allow_cross_namespace' (first at line 3)");
}

/* ---- errors --------------------------------------------------------------------- */

static void test_error_unknown_keys(void **state) {
    (void)state;
    cfgtest_error("sorce:\n  type: etcd\n",
                  "t.yaml:1: unknown key 'sorce' (did you mean 'source'?)");
    cfgtest_error("log:\n  level: info\nmetrics: {}\n",
                  "t.yaml:3: unknown key 'metrics' (known keys: source, kubernetes, traefik, "
                  "reconcile, server, leader_election, log)");
    cfgtest_error("source:\n  type: etcd\n  endpoint: http://a:2379\n",
                  "t.yaml:3: unknown key 'source.endpoint' (did you mean 'endpoints'?)");
    cfgtest_error("source:\n  type: etcd\n  colour: red\n",
                  "t.yaml:3: unknown key 'source.colour' (known keys: type, endpoints, address, "
                  "prefix, username, password, password_file, token, token_file, datacenter, "
                  "consistency, wait, liveness_check, tls)");
    cfgtest_error("source:\n  tls:\n    insecure_skip_verify: false\n    ca: x\n",
                  "t.yaml:4: unknown key 'source.tls.ca' (known keys: ca_file, cert_file, "
                  "key_file, insecure_skip_verify)");
    cfgtest_error("leader_election:\n  lease_durration: 20s\n",
                  "t.yaml:2: unknown key 'leader_election.lease_durration' (did you mean "
                  "'lease_duration'?)");
}

static void test_error_wrong_types(void **state) {
    (void)state;
    cfgtest_error("source:\n  prefix:\n    a: b\n",
                  "t.yaml:2: source.prefix: must be a string, got a mapping");
    cfgtest_error("source:\n  prefix: [a, b]\n",
                  "t.yaml:2: source.prefix: must be a string, got a list");
    cfgtest_error("source: etcd\n", "t.yaml:1: source: must be a mapping, got a string");
    cfgtest_error("source:\n  tls: [a]\n", "t.yaml:2: source.tls: must be a mapping, got a list");
    cfgtest_error("reconcile:\n  status: maybe\n",
                  "t.yaml:2: reconcile.status: must be true or false, got 'maybe'");
    cfgtest_error("reconcile:\n  status: yes\n",
                  "t.yaml:2: reconcile.status: must be true or false, got 'yes'");
    cfgtest_error("reconcile:\n  status: \"true\"\n",
                  "t.yaml:2: reconcile.status: must be true or false (unquoted), got a quoted "
                  "string");
    cfgtest_error("leader_election:\n  enabled:\n",
                  "t.yaml:2: leader_election.enabled: must be true or false, got null");
    cfgtest_error("reconcile:\n  max_in_flight: -1\n",
                  "t.yaml:2: reconcile.max_in_flight: must be a whole number, got '-1'");
    cfgtest_error("reconcile:\n  max_in_flight: '8'\n",
                  "t.yaml:2: reconcile.max_in_flight: must be a whole number, got '8'");
    cfgtest_error("reconcile:\n  max_in_flight: 99999999999\n",
                  "t.yaml:2: reconcile.max_in_flight: '99999999999' is too large");
    cfgtest_error("source:\n  endpoints: {a: b}\n",
                  "t.yaml:2: source.endpoints: must be a list of strings, got a mapping");
    cfgtest_error("reconcile:\n  namespaces:\n    - shop\n    - {a: b}\n",
                  "t.yaml:4: reconcile.namespaces[1]: must be a string, got a mapping");
    cfgtest_error("reconcile:\n  namespaces: [shop, ~]\n",
                  "t.yaml:2: reconcile.namespaces[1]: must be a string, got null");
    cfgtest_error("source:\n  prefix: \"can\\0ary/\"\n",
                  "t.yaml:2: source.prefix: must not contain a NUL character");
    cfgtest_error("? [a, b]\n: c\n", "t.yaml:1: keys must be plain names, got a list");
}

static void test_error_bad_enums(void **state) {
    (void)state;
    cfgtest_error("source:\n  type: zookeeper\n",
                  "t.yaml:2: source.type: must be one of etcd, consul, got 'zookeeper'");
    cfgtest_error("# comment\n\nreconcile:\n  resync: 1m\n  policy: delete\n",
                  "t.yaml:5: reconcile.policy: must be one of upsert-only, sync, got 'delete'");
    cfgtest_error("traefik:\n  rule_syntax: 3\n",
                  "t.yaml:2: traefik.rule_syntax: must be one of v3, v2, got '3'");
    cfgtest_error("traefik:\n  api_group: traefik.io/v1alpha1\n",
                  "t.yaml:2: traefik.api_group: must be one of traefik.io, traefik.containo.us, "
                  "auto, got 'traefik.io/v1alpha1'");
    cfgtest_error("log:\n  level: INFO\n",
                  "t.yaml:2: log.level: must be one of error, warn, info, debug, got 'INFO'");
    cfgtest_error("source:\n  consistency: [stale]\n",
                  "t.yaml:2: source.consistency: must be one of default, stale, consistent, got "
                  "a list");
}

static void test_error_bad_durations(void **state) {
    (void)state;
    cfgtest_error("reconcile:\n  resync: 300\n",
                  "t.yaml:2: reconcile.resync: '300' has no unit; write e.g. 300s or 300ms");
    cfgtest_error("reconcile:\n  resync: 5 minutes\n",
                  "t.yaml:2: reconcile.resync: invalid duration '5 minutes' (a number and a unit "
                  "ms, s, m or h, e.g. 250ms, 30s, 1h30m)");
    cfgtest_error("source:\n  wait: {s: 1}\n",
                  "t.yaml:2: source.wait: must be a duration such as 30s or 5m, got a mapping");
    cfgtest_error("leader_election:\n  retry_period:\n",
                  "t.yaml:2: leader_election.retry_period: must be a duration such as 30s or 5m, "
                  "got null");
}

static void test_error_duplicate_keys(void **state) {
    (void)state;
    cfgtest_error("log:\n  level: info\nlog:\n  level: debug\n",
                  "t.yaml:3: duplicate key 'log' (first at line 1)");
    cfgtest_error("source:\n  prefix: a/\n  type: etcd\n  prefix: b/\n",
                  "t.yaml:4: duplicate key 'source.prefix' (first at line 2)");
}

static void test_error_anchors_and_aliases(void **state) {
    (void)state;
    cfgtest_error("source:\n  prefix: &p canary/\n",
                  "t.yaml:2: anchors (&name) are not supported; write the value out (and quote a "
                  "value that starts with '&')");
    cfgtest_error("source:\n  tls: &t\n    insecure_skip_verify: false\n",
                  "t.yaml:2: anchors (&name) are not supported; write the value out (and quote a "
                  "value that starts with '&')");
    cfgtest_error("source:\n  type: etcd\n  prefix: *p\n",
                  "t.yaml:3: aliases (*name) are not supported; write the value out (and quote a "
                  "value that starts with '*')");
    cfgtest_error("a: &x {b: 1}\nc: *x\n",
                  "t.yaml:1: anchors (&name) are not supported; write the value out (and quote a "
                  "value that starts with '&')");
}

static void test_error_documents_and_root(void **state) {
    (void)state;
    cfgtest_error("log: {level: info}\n---\nlog: {level: debug}\n",
                  "t.yaml:2: only one YAML document is allowed, found a second one");
    cfgtest_error("- source\n- log\n", "t.yaml:1: the top level must be a mapping of sections "
                                       "(source:, kubernetes:, ...), got a list");
    cfgtest_error("\n\nhello\n", "t.yaml:3: the top level must be a mapping of sections (source:, "
                                 "kubernetes:, ...), got a string");
    cfgtest_error_start("source:\n  type: [etcd\nlog: {}\n", "t.yaml:3: YAML syntax error: ");
    cfgtest_error_start("source:\n\ttype: etcd\n", "t.yaml:2: YAML syntax error: ");
    cfgtest_error("log: {level: \"\xff\"}\n",
                  "t.yaml: not valid UTF-8 text (byte 14: invalid leading UTF-8 octet)");
}

/* ---- secrets -------------------------------------------------------------------- */

static void expect_secret_hidden(const char *yaml, const char *secret) {
    struct config cfg;
    char err[CFGTEST_ERRLEN];
    if (cfgtest_parse(yaml, &cfg, err) == 0) {
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
    char err[CFGTEST_ERRLEN];
    assert_int_equal(config_load("fixtures/config/unknown-key.yaml", &cfg, err, sizeof err), -1);
    assert_string_equal(err, "fixtures/config/unknown-key.yaml:6: unknown key "
                             "'reconcile.resynk' (did you mean 'resync'?)");
    cfgtest_zeroed(&cfg);

    assert_int_equal(config_load("fixtures/config/no-such.yaml", &cfg, err, sizeof err), -1);
    assert_string_equal(err,
                        "fixtures/config/no-such.yaml: cannot open: No such file or directory");
    cfgtest_zeroed(&cfg);

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
    char err[CFGTEST_ERRLEN], want[256];
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_inputs_mean_defaults),
        cmocka_unit_test(test_example_config_parses_to_defaults),
        cmocka_unit_test(test_commented_example_parses),
        cmocka_unit_test(test_full_consul_config),
        cmocka_unit_test(test_reconcile_max_step),
        cmocka_unit_test(test_etcd_auth_config),
        cmocka_unit_test(test_endpoints_scalar_or_list),
        cmocka_unit_test(test_null_and_empty_strings),
        cmocka_unit_test(test_every_enum_value),
        cmocka_unit_test(test_later_sections_override_nothing_else),
        cmocka_unit_test(test_allow_cross_namespace),
        cmocka_unit_test(test_error_unknown_keys),
        cmocka_unit_test(test_error_wrong_types),
        cmocka_unit_test(test_error_bad_enums),
        cmocka_unit_test(test_error_bad_durations),
        cmocka_unit_test(test_error_duplicate_keys),
        cmocka_unit_test(test_error_anchors_and_aliases),
        cmocka_unit_test(test_error_documents_and_root),
        cmocka_unit_test(test_secrets_not_in_errors),
        cmocka_unit_test(test_load_errors_name_the_file),
        cmocka_unit_test(test_load_refuses_large_files),
        cmocka_unit_test(test_error_message_truncation_is_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
