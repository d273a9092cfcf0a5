/* test_config_rules.c - the configuration rules across keys
 * (bridge/config_rules.c), checked after the schema walk: keys that exclude
 * or need each other, the source prefix, URLs and listen addresses, bounds,
 * the leader election timings, the field manager name, and file keys naming
 * $CREDENTIALS_DIRECTORY. Each error must be exact, with the line where the
 * key it complains about was set. Reading YAML and the schema are tested in
 * test_config.c. */
/* cmocka.h needs these three first; the blank line keeps clang-format from
 * sorting it above them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "bridge/config.h"

#include "cfgtest.h"

static void test_field_manager(void **state) {
    (void)state;
    struct config cfg;
    cfgtest_ok("kubernetes:\n  field_manager: bridge-a@web-1\n", &cfg);
    assert_string_equal(cfg.kubernetes.field_manager, "bridge-a@web-1");
    config_free(&cfg);
    cfgtest_ok("log:\n  level: info\n", &cfg);
    assert_null(cfg.kubernetes.field_manager);
    config_free(&cfg);
    char *long_name = malloc(200);
    assert_non_null(long_name);
    strcpy(long_name, "kubernetes:\n  field_manager: ");
    size_t at = strlen(long_name);
    memset(long_name + at, 'x', 129);
    strcpy(long_name + at + 129, "\n");
    cfgtest_error(
        long_name,
        "t.yaml:2: kubernetes.field_manager: must be 1 to 128 printable ASCII characters");
    free(long_name);
    cfgtest_error(
        "kubernetes:\n  field_manager: \"tab\\there\"\n",
        "t.yaml:2: kubernetes.field_manager: must be 1 to 128 printable ASCII characters");
}

static void test_error_exclusive_keys(void **state) {
    (void)state;
    cfgtest_error("source:\n  username: u\n  password: p\n  password_file: /f\n",
                  "t.yaml:4: source.password_file: cannot be used together with source.password");
    cfgtest_error("source:\n  type: consul\n  token_file: /f\n  token: t\n",
                  "t.yaml:3: source.token_file: cannot be used together with source.token");
    cfgtest_error("source:\n  username: u\n",
                  "t.yaml:2: source.username: needs source.password or source.password_file");
    cfgtest_error("source:\n  password_file: /f\n",
                  "t.yaml:2: source.password_file: needs source.username");
    cfgtest_error("source:\n  type: consul\n  username: u\n  password: p\n",
                  "t.yaml:3: source.username: only applies to source.type etcd (source.type is "
                  "consul)");
    cfgtest_error("source:\n  datacenter: dc1\n",
                  "t.yaml:2: source.datacenter: only applies to source.type consul (source.type "
                  "is etcd)");
    cfgtest_error("kubernetes:\n  in_cluster: true\n  server: https://k:6443\n",
                  "t.yaml:3: kubernetes.server: cannot be used together with in_cluster: true");
    cfgtest_error("kubernetes:\n  kubeconfig: /k\n  in_cluster: true\n",
                  "t.yaml:2: kubernetes.kubeconfig: cannot be used together with in_cluster: "
                  "true");
    cfgtest_error("kubernetes:\n  server: https://k:6443\n  context: prod\n",
                  "t.yaml:3: kubernetes.context: cannot be used together with kubernetes.server");
    cfgtest_error("kubernetes:\n  token_file: /t\n",
                  "t.yaml:2: kubernetes.token_file: only applies with kubernetes.server");
    cfgtest_error("kubernetes:\n  insecure_skip_verify: true\n",
                  "t.yaml:2: kubernetes.insecure_skip_verify: only applies with kubernetes.server");
    cfgtest_error("source:\n  tls:\n    cert_file: c.pem\n",
                  "t.yaml:3: source.tls.cert_file: needs source.tls.key_file");
    cfgtest_error("source:\n  tls:\n    ca_file: ca.pem\n",
                  "t.yaml:3: source.tls.ca_file: is set, but the source is not reached over "
                  "https://");
}

static void test_error_prefix_rules(void **state) {
    (void)state;
    cfgtest_error("source:\n  prefix: \"\"\n", "t.yaml:2: source.prefix: must not be empty");
    cfgtest_error("source:\n  prefix: /canary/\n",
                  "t.yaml:2: source.prefix: must not start with '/' (write 'canary/', not "
                  "'/canary/')");
    cfgtest_error("source:\n  prefix: canary\n",
                  "t.yaml:2: source.prefix: must end with '/' so it names a folder (e.g. "
                  "'canary/')");
    struct config cfg;
    cfgtest_ok("source:\n  prefix: team-a/canary/\n", &cfg);
    assert_string_equal(cfg.source.prefix, "team-a/canary/");
    config_free(&cfg);
}

static void test_error_urls_and_addresses(void **state) {
    (void)state;
    cfgtest_error("source:\n  endpoints: []\n",
                  "t.yaml:2: source.endpoints: needs at least one URL");
    cfgtest_error("source:\n  endpoints: [http://a:2379, 'etcd:2379']\n",
                  "t.yaml:2: source.endpoints: entry 1 is not an http:// or https:// URL with a "
                  "host");
    cfgtest_error("source:\n  address: consul:8500\n",
                  "t.yaml:2: source.address: must be an http:// or https:// URL with a host");
    cfgtest_error("source:\n  address: \"http://\"\n",
                  "t.yaml:2: source.address: must be an http:// or https:// URL with a host");
    cfgtest_error("kubernetes:\n  server: ftp://k\n",
                  "t.yaml:2: kubernetes.server: must be an https:// (or http://) URL with a host");
    cfgtest_error("server:\n  listen: localhost\n",
                  "t.yaml:2: server.listen: must be host:port, [ipv6]:port, :port or \"\"");
    cfgtest_error("server:\n  listen: ::1:9464\n",
                  "t.yaml:2: server.listen: must be host:port, [ipv6]:port, :port or \"\"");
    cfgtest_error("server:\n  listen: 0.0.0.0:70000\n",
                  "t.yaml:2: server.listen: must be host:port, [ipv6]:port, :port or \"\"");
    struct config cfg;
    cfgtest_ok("server:\n  listen: \"[::1]:9464\"\n", &cfg);
    config_free(&cfg);
    cfgtest_ok("server:\n  listen: :9464\n", &cfg);
    config_free(&cfg);
    cfgtest_ok("kubernetes:\n  server: http://127.0.0.1:8080\n", &cfg);
    config_free(&cfg);
}

static void test_error_ranges(void **state) {
    (void)state;
    cfgtest_error("source:\n  type: consul\n  wait: 15m\n",
                  "t.yaml:3: source.wait: must be between 1s and 10m");
    cfgtest_error("source:\n  liveness_check: 500ms\n",
                  "t.yaml:2: source.liveness_check: must be 0 (off) or between 1s and 10m");
    cfgtest_error("source:\n  liveness_check: 11m\n",
                  "t.yaml:2: source.liveness_check: must be 0 (off) or between 1s and 10m");
    cfgtest_error("source:\n  type: consul\n  liveness_check: 5s\n",
                  "t.yaml:3: source.liveness_check: only applies to source.type etcd (source.type "
                  "is consul)");
    struct config cfg;
    cfgtest_ok("source:\n  liveness_check: 0\n", &cfg);
    assert_int_equal(cfg.source.liveness_ms, 0);
    config_free(&cfg);
    cfgtest_ok("source:\n  liveness_check: 2s\n", &cfg);
    assert_int_equal(cfg.source.liveness_ms, 2000);
    config_free(&cfg);
    cfgtest_error("reconcile:\n  resync: 10ms\n",
                  "t.yaml:2: reconcile.resync: must be 0 (off) or at least 1s");
    cfgtest_error("reconcile:\n  max_in_flight: 0\n",
                  "t.yaml:2: reconcile.max_in_flight: must be at least 1");
    cfgtest_error("reconcile:\n  burst_hold: 6m\n",
                  "t.yaml:2: reconcile.burst_hold: must be at most 5m (0 = off)");
    cfgtest_error("reconcile:\n  burst_quiet: 0\n",
                  "t.yaml:2: reconcile.burst_quiet: must be between 1ms and 1m");
    cfgtest_error("reconcile:\n  max_delete_percent: 101\n",
                  "t.yaml:2: reconcile.max_delete_percent: must be between 0 and 100");
    cfgtest_error("reconcile:\n  max_step: 101\n",
                  "t.yaml:2: reconcile.max_step: must be between 0 (no limit) and 100");
    cfgtest_error("reconcile:\n  object_writes_per_second: 1001\n",
                  "t.yaml:2: reconcile.object_writes_per_second: must be at most 1000 (0 = "
                  "unlimited)");
    cfgtest_error("reconcile:\n  object_writes_per_second: -1\n",
                  "t.yaml:2: reconcile.object_writes_per_second: must be a whole number, got '-1'");
    cfgtest_error("reconcile:\n  retry_min: 0\n",
                  "t.yaml:2: reconcile.retry_min: must be at least 1ms");
    cfgtest_error("reconcile:\n  retry_max: 2h\n",
                  "t.yaml:2: reconcile.retry_max: must be at most 1h");
    cfgtest_error("reconcile:\n  retry_max: 10ms\n",
                  "t.yaml:2: reconcile.retry_max: retry_min must be at most retry_max");
    cfgtest_error("reconcile:\n  retry_min: 1m\n",
                  "t.yaml:2: reconcile.retry_min: retry_min must be at most retry_max");
    struct config rc;
    cfgtest_ok("reconcile:\n  object_writes_per_second: 0\n  retry_min: 1s\n  retry_max: 10m\n",
               &rc);
    assert_int_equal(rc.reconcile.object_writes_per_second, 0);
    assert_int_equal(rc.reconcile.retry_min_ms, 1000);
    assert_int_equal(rc.reconcile.retry_max_ms, 600000);
    config_free(&rc);
    cfgtest_error("reconcile:\n  namespaces: [shop, Shop]\n",
                  "t.yaml:2: reconcile.namespaces: entry 1 is not a valid namespace name "
                  "(lowercase letters, digits and '-', at most 63)");
    cfgtest_error("leader_election:\n  name: Canary_Bridge\n",
                  "t.yaml:2: leader_election.name: is not a valid Kubernetes object name");
    cfgtest_error("leader_election:\n  namespace: \"\"\n",
                  "t.yaml:2: leader_election.namespace: is not a valid namespace name");
}

static void test_error_leader_election_timing(void **state) {
    (void)state;
    cfgtest_error("leader_election:\n  lease_duration: 10s\n",
                  "t.yaml:2: leader_election.lease_duration: lease_duration must be longer than "
                  "renew_deadline");
    cfgtest_error("leader_election:\n  renew_deadline: 20s\n",
                  "t.yaml:2: leader_election.renew_deadline: lease_duration must be longer than "
                  "renew_deadline");
    /* 1.2 x 9s = 10.8s > 10s */
    cfgtest_error("leader_election:\n  enabled: true\n  retry_period: 9s\n",
                  "t.yaml:3: leader_election.retry_period: renew_deadline must be longer than 1.2 "
                  "x retry_period");
    cfgtest_error("leader_election:\n  retry_period: 0\n",
                  "t.yaml:2: leader_election.retry_period: must be more than 0");
    struct config cfg;
    /* exactly at the 1.2 boundary is not enough; just above is. */
    cfgtest_error("leader_election:\n  renew_deadline: 12s\n  retry_period: 10s\n"
                  "  lease_duration: 20s\n",
                  "t.yaml:2: leader_election.renew_deadline: renew_deadline must be longer than "
                  "1.2 x retry_period");
    cfgtest_ok("leader_election:\n  renew_deadline: 12001ms\n  retry_period: 10s\n"
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
    cfgtest_error("leader_election:\n  enabled: true\n"
                  "  lease_duration: 15372286728091293303ms\n"
                  "  renew_deadline: 15372286728091293302ms\n"
                  "  retry_period: 15372286728091293302ms\n",
                  "t.yaml:3: leader_election.lease_duration: must be at most 1h");
    cfgtest_error("leader_election:\n  renew_deadline: 3600001ms\n  lease_duration: 1h\n",
                  "t.yaml:2: leader_election.renew_deadline: must be at most 1h");
    cfgtest_error("leader_election:\n  retry_period: 61m\n",
                  "t.yaml:2: leader_election.retry_period: must be at most 1h");
    /* At the bound, and the 1.2 rule on either side of it with odd values:
     * 1.2 x 2999 = 3598.8, 1.2 x 3000 = 3600. */
    struct config cfg;
    cfgtest_ok("leader_election:\n  lease_duration: 1h\n  renew_deadline: 3599s\n"
               "  retry_period: 2999s\n",
               &cfg);
    assert_int_equal(cfg.leader_election.lease_duration_ms, 3600000);
    config_free(&cfg);
    cfgtest_error("leader_election:\n  lease_duration: 1h\n  renew_deadline: 3600s\n"
                  "  retry_period: 3000s\n",
                  "t.yaml:2: leader_election.lease_duration: lease_duration must be longer than "
                  "renew_deadline");
    cfgtest_error("leader_election:\n  lease_duration: 1h\n  renew_deadline: 3599999ms\n"
                  "  retry_period: 3000s\n",
                  "t.yaml:3: leader_election.renew_deadline: renew_deadline must be longer than "
                  "1.2 x retry_period");
    cfgtest_ok("leader_election:\n  renew_deadline: 4ms\n  retry_period: 3ms\n", &cfg);
    config_free(&cfg);
    cfgtest_error("leader_election:\n  renew_deadline: 6ms\n  retry_period: 5ms\n",
                  "t.yaml:2: leader_election.renew_deadline: renew_deadline must be longer than "
                  "1.2 x retry_period");
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

/* traefik.api: urls or pods, each checked, and the timings' bounds. */
static void test_traefik_api(void **state) {
    (void)state;
    struct config cfg;
    cfgtest_ok("traefik:\n  api:\n    urls: http://127.0.0.1:8080\n    interval: 50ms\n"
               "    timeout: 2s\n",
               &cfg);
    assert_int_equal(cfg.traefik.api.n_urls, 1);
    assert_string_equal(cfg.traefik.api.urls[0], "http://127.0.0.1:8080");
    assert_int_equal(cfg.traefik.api.interval_ms, 50);
    assert_int_equal(cfg.traefik.api.timeout_ms, 2000);
    assert_true(traefikapi_enabled(&cfg.traefik.api));
    config_free(&cfg);
    cfgtest_ok("traefik:\n  api:\n    pods: {namespace: traefik, port: 9000}\n", &cfg);
    assert_string_equal(cfg.traefik.api.pods.namespace, "traefik");
    assert_string_equal(cfg.traefik.api.pods.selector, "app.kubernetes.io/name=traefik");
    assert_int_equal(cfg.traefik.api.pods.port, 9000);
    assert_true(traefikapi_enabled(&cfg.traefik.api));
    config_free(&cfg);
    cfgtest_error("traefik:\n  api:\n    urls: [http://a:8080]\n    pods:\n      namespace: t\n",
                  "t.yaml:4: traefik.api.pods: give traefik.api.urls or traefik.api.pods, not "
                  "both");
    cfgtest_error("traefik:\n  api:\n    urls: [http://a:8080, 'a:8080']\n",
                  "t.yaml:3: traefik.api.urls: entry 1 is not an http:// or https:// URL with a "
                  "host");
    cfgtest_error("traefik:\n  api:\n    pods:\n      port: 8080\n",
                  "t.yaml: traefik.api.pods.namespace: must name the Traefik pods' namespace "
                  "(lowercase letters, digits and '-')");
    cfgtest_error("traefik:\n  api:\n    pods:\n      namespace: Traefik\n",
                  "t.yaml:4: traefik.api.pods.namespace: must name the Traefik pods' namespace "
                  "(lowercase letters, digits and '-')");
    cfgtest_error("traefik:\n  api:\n    pods:\n      namespace: t\n      selector: ''\n",
                  "t.yaml:5: traefik.api.pods.selector: must not be empty (e.g. "
                  "app.kubernetes.io/name=traefik)");
    cfgtest_error("traefik:\n  api:\n    pods:\n      namespace: t\n      port: 70000\n",
                  "t.yaml:5: traefik.api.pods.port: must be between 1 and 65535");
    cfgtest_error("traefik:\n  api:\n    interval: 0s\n",
                  "t.yaml:3: traefik.api.interval: must be between 10ms and 1m");
    cfgtest_error("traefik:\n  api:\n    interval: 1s\n    timeout: 500ms\n",
                  "t.yaml:4: traefik.api.timeout: must be at least traefik.api.interval and at "
                  "most 1h");
    cfgtest_error("traefik:\n  api:\n    request_timeout: 1ms\n",
                  "t.yaml:3: traefik.api.request_timeout: must be between 10ms and 5m");
    cfgtest_error("traefik:\n  api:\n    url: [http://a:8080]\n",
                  "t.yaml:3: unknown key 'traefik.api.url' (did you mean 'urls'?)");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traefik_api),
        cmocka_unit_test(test_credentials_directory),
        cmocka_unit_test(test_field_manager),
        cmocka_unit_test(test_error_exclusive_keys),
        cmocka_unit_test(test_error_prefix_rules),
        cmocka_unit_test(test_error_urls_and_addresses),
        cmocka_unit_test(test_error_ranges),
        cmocka_unit_test(test_error_leader_election_timing),
        cmocka_unit_test(test_error_leader_election_huge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
