/* test_kubeconfig.c - finding the API server and credentials: kubeconfig
 * contexts (current and named), -data fields, relative paths, tokenFile,
 * insecure clusters, every refusal (missing context/cluster/user, exec and
 * auth-provider plugins, basic auth, bad base64), the $KUBECONFIG and $HOME
 * fallbacks, the in-cluster service account, and the dispatch on the bridge
 * config.
 *
 * Run from tests/ (meson's workdir): fixtures are under fixtures/kubeconfig/.
 * Each test starts with the environment variables involved cleared. */
/* cmocka.h needs these three first; the blank line keeps clang-format from
 * sorting it above them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge/config.h" /* test_from_config builds a whole config */
#include "sinks/kubeconfig.h"

#define KC "fixtures/kubeconfig/config"
#define ERRLEN 1024

static const char *const env_vars[] = {"KUBECONFIG", "KUBERNETES_SERVICE_HOST",
                                       "KUBERNETES_SERVICE_PORT", "CANARY_BRIDGE_SA_DIR"};

static int clear_env(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
        if (unsetenv(env_vars[i]) != 0)
            return -1;
    return 0;
}

static void assert_zeroed(const struct kube_conn *c) {
    struct kube_conn zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(c, &zero, sizeof zero);
}

static void load_ok(const char *path, const char *context, struct kube_conn *c) {
    char err[ERRLEN] = "";
    if (kube_conn_from_kubeconfig(path, context, c, err, sizeof err) != 0)
        fail_msg("unexpected error: %s", err);
}

static void expect_error(const char *path, const char *context, const char *want) {
    struct kube_conn c;
    char err[ERRLEN];
    memset(&c, 0x5a, sizeof c);
    if (kube_conn_from_kubeconfig(path, context, &c, err, sizeof err) == 0) {
        kube_conn_free(&c);
        fail_msg("loaded, but expected: %s", want);
    }
    assert_string_equal(err, want);
    assert_zeroed(&c);
}

/* ---- contexts ------------------------------------------------------------------ */

static void test_current_context(void **state) {
    (void)state;
    struct kube_conn c;
    load_ok(KC, NULL, &c);
    assert_string_equal(c.context, "dev");
    assert_string_equal(c.server, "https://dev.example.com:6443"); /* trailing '/' gone */
    /* relative paths resolve against the kubeconfig's directory */
    assert_string_equal(c.ca_file, "fixtures/kubeconfig/certs/dev-ca.crt");
    assert_string_equal(c.token_file, "fixtures/kubeconfig/tokens/dev");
    assert_null(c.token);
    assert_null(c.ca_pem);
    assert_null(c.cert_file);
    assert_null(c.key_file);
    assert_false(c.insecure);
    kube_conn_free(&c);
    assert_zeroed(&c);

    load_ok(KC, "", &c); /* "" also means current-context */
    assert_string_equal(c.context, "dev");
    kube_conn_free(&c);
}

static void test_named_context_with_data_fields(void **state) {
    (void)state;
    struct kube_conn c;
    load_ok(KC, "prod", &c);
    assert_string_equal(c.context, "prod");
    assert_string_equal(c.server, "https://prod.example.com");
    static const char ca[] = "-----BEGIN CERTIFICATE-----\nprod-ca\n-----END CERTIFICATE-----\n";
    static const char cert[] =
        "-----BEGIN CERTIFICATE-----\nprod-client\n-----END CERTIFICATE-----\n";
    static const char key[] = "-----BEGIN PRIVATE KEY-----\nprod-key\n-----END PRIVATE KEY-----\n";
    assert_int_equal(c.ca_pem_len, strlen(ca));
    assert_string_equal(c.ca_pem, ca);
    assert_null(c.ca_file); /* -data wins over the file */
    assert_int_equal(c.cert_pem_len, strlen(cert));
    assert_string_equal(c.cert_pem, cert);
    assert_int_equal(c.key_pem_len, strlen(key));
    assert_string_equal(c.key_pem, key);
    assert_null(c.cert_file);
    assert_null(c.key_file);
    assert_null(c.token);
    assert_null(c.token_file);
    kube_conn_free(&c);
}

static void test_insecure_cluster_token_and_cert_files(void **state) {
    (void)state;
    struct kube_conn c;
    load_ok(KC, "lab", &c);
    assert_string_equal(c.server, "https://10.1.2.3:6443");
    assert_true(c.insecure);
    assert_null(c.ca_file);
    assert_null(c.ca_pem);
    assert_string_equal(c.token, "s3cr3t-lab-token");
    assert_string_equal(c.cert_file, "/etc/lab/client.crt"); /* absolute: as written */
    assert_string_equal(c.key_file, "fixtures/kubeconfig/keys/client.key");
    kube_conn_free(&c);
}

static void test_plain_http_without_user(void **state) {
    (void)state;
    struct kube_conn c;
    load_ok(KC, "local", &c);
    assert_string_equal(c.server, "http://127.0.0.1:8080");
    assert_null(c.token);
    assert_null(c.token_file);
    assert_null(c.cert_file);
    assert_null(c.cert_pem);
    kube_conn_free(&c);
}

static void test_missing_context_cluster_user(void **state) {
    (void)state;
    /* Unknown names: the message lists the ones there are. */
    expect_error(KC, "staging",
                 KC ": context 'staging' is not defined in contexts; the contexts are: 'dev', "
                    "'prod', 'lab', 'local', 'gke', 'oidc', 'basic', 'half-cert', 'bad-b64', "
                    "'no-server', 'missing-cluster', 'missing-user', 'no-cluster'");
    expect_error(KC, "missing-cluster",
                 KC ": context 'missing-cluster' refers to cluster 'nowhere', which is not "
                    "defined in clusters; the clusters are: 'dev', 'prod', 'lab', 'local', "
                    "'bad-b64', 'no-server'");
    expect_error(
        KC, "missing-user",
        KC ": context 'missing-user' refers to user 'nobody', which is not defined in "
           "users; the users are: 'dev-user', 'prod-user', 'lab-user', 'gke-user', 'oidc-user', "
           "'basic-user', 'half-cert-user'");
    expect_error("fixtures/kubeconfig/no-current", "only-user",
                 "fixtures/kubeconfig/no-current: context 'only-user' is not defined in "
                 "contexts; the contexts are: 'only'");
    expect_error(KC, "no-cluster", KC ":94: context 'no-cluster' names no cluster");
    expect_error(KC, "no-server",
                 KC ":32: cluster 'no-server' (context 'no-server') has no server");
    expect_error("fixtures/kubeconfig/no-current", NULL,
                 "fixtures/kubeconfig/no-current: no context chosen: current-context is not set "
                 "and kubernetes.context is empty");
}

static void test_plugins_and_basic_auth_refused(void **state) {
    (void)state;
    expect_error(KC, "oidc",
                 KC ":54: user 'oidc-user' uses an auth-provider plugin, which canary-bridge does "
                    "not run; use a token, a client certificate or an exec plugin");
    struct kube_conn c;
    char err[ERRLEN];
    assert_int_equal(kube_conn_from_kubeconfig(KC, "basic", &c, err, sizeof err), -1);
    assert_string_equal(err, KC ":57: user 'basic-user' uses a username and password (basic "
                                "auth), which Kubernetes no longer supports; use a token or "
                                "client certificate");
    assert_null(strstr(err, "hunter2"));
}

#define EXEC_KC "fixtures/kubeconfig/exec"

static void test_exec_plugin(void **state) {
    (void)state;
    struct kube_conn c;
    load_ok(EXEC_KC, NULL, &c);
    assert_non_null(c.exec);
    assert_null(c.token);
    assert_string_equal(c.exec->command, "aws"); /* no '/': looked up in $PATH */
    assert_int_equal(c.exec->nargs, 4);
    assert_string_equal(c.exec->args[0], "eks");
    assert_string_equal(c.exec->args[3], "prod");
    assert_null(c.exec->args[4]);
    assert_int_equal(c.exec->nenv, 1);
    assert_string_equal(c.exec->env[0], "AWS_PROFILE=prod");
    assert_string_equal(c.exec->api_version, "client.authentication.k8s.io/v1");
    assert_string_equal(c.exec->install_hint, "Install the AWS CLI");
    assert_string_equal(c.exec->user, "eks-user");
    /* provideClusterInfo: the cluster goes into KUBERNETES_EXEC_INFO. */
    assert_string_equal(
        c.exec->exec_info,
        "{\"kind\":\"ExecCredential\",\"apiVersion\":\"client.authentication.k8s.io/"
        "v1\",\"spec\":{\"interactive\":false,\"cluster\":{\"server\":\"https://"
        "eks.example.com\",\"certificate-authority-data\":\"Q0EgUEVNCg==\"}}}");
    kube_conn_free(&c);

    load_ok(EXEC_KC, "relative", &c);
    assert_string_equal(c.exec->command, "fixtures/kubeconfig/./bin/plugin");
    assert_int_equal(c.exec->nargs, 0);
    assert_null(c.exec->args[0]);
    assert_string_equal(
        c.exec->exec_info,
        "{\"kind\":\"ExecCredential\",\"apiVersion\":\"client.authentication.k8s.io/"
        "v1beta1\",\"spec\":{\"interactive\":false}}");
    kube_conn_free(&c);

    /* A token in the kubeconfig wins; the plugin is not run (client-go). */
    load_ok(EXEC_KC, "token-wins", &c);
    assert_null(c.exec);
    assert_string_equal(c.token, "static-token");
    kube_conn_free(&c);

    load_ok(KC, "gke", &c); /* v1beta1 without interactiveMode: IfAvailable */
    assert_string_equal(c.exec->command, "gke-gcloud-auth-plugin");
    kube_conn_free(&c);

    expect_error(EXEC_KC, "always",
                 EXEC_KC ":35: user 'always-user' (context 'always'): exec: interactiveMode Always "
                         "needs a terminal, and canary-bridge runs credential plugins without one; "
                         "use Never or IfAvailable");
    expect_error(EXEC_KC, "v1-no-mode",
                 EXEC_KC ":38: user 'v1-no-mode-user' (context 'v1-no-mode'): exec: "
                         "interactiveMode must be set for apiVersion "
                         "client.authentication.k8s.io/v1");
    expect_error(EXEC_KC, "bad-version",
                 EXEC_KC ":41: user 'bad-version-user' (context 'bad-version'): exec: apiVersion "
                         "must be client.authentication.k8s.io/v1 or "
                         "client.authentication.k8s.io/v1beta1, not "
                         "'client.authentication.k8s.io/v1alpha1'");
    expect_error(EXEC_KC, "bad-env",
                 EXEC_KC ":52: user 'bad-env-user' (context 'bad-env'): exec: env entry 1 has no "
                         "valid name");
}

static void test_invalid_data_refused(void **state) {
    (void)state;
    expect_error(KC, "bad-b64",
                 KC ":29: cluster 'bad-b64' (context 'bad-b64'): certificate-authority-data is "
                    "not valid base64");
    expect_error(KC, "half-cert",
                 KC ":61: user 'half-cert-user' (context 'half-cert'): client-certificate needs "
                    "client-key as well");
}

static void test_unreadable_or_malformed_files(void **state) {
    (void)state;
    expect_error("fixtures/kubeconfig/none", NULL,
                 "fixtures/kubeconfig/none: cannot open: No such file or directory");
    expect_error("fixtures/kubeconfig/not-a-mapping", NULL,
                 "fixtures/kubeconfig/not-a-mapping:1: not a kubeconfig: the top level is not "
                 "a mapping");
}

/* ---- base64 and shapes, through small generated kubeconfigs ------------------ */

static void write_kubeconfig(char *path, const char *cluster_extra, const char *user_extra) {
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    assert_true(fprintf(f,
                        "current-context: t\n"
                        "clusters:\n- name: c\n  cluster:\n    server: https://k/\n%s"
                        "users:\n- name: u\n  user:\n%s"
                        "contexts:\n- name: t\n  context: {cluster: c, user: u}\n",
                        cluster_extra, user_extra) > 0);
    assert_int_equal(fclose(f), 0);
}

/* The CA decoded from `data`, or NULL when refused (err says why). */
static char *decode_ca(const char *data, size_t *len, char *err) {
    char path[] = "/tmp/test_kubeconfig_XXXXXX", line[256];
    snprintf(line, sizeof line, "    certificate-authority-data: \"%s\"\n", data);
    write_kubeconfig(path, line, "    token: t\n");
    struct kube_conn c;
    int rc = kube_conn_from_kubeconfig(path, NULL, &c, err, ERRLEN);
    assert_int_equal(unlink(path), 0);
    if (rc != 0)
        return NULL;
    char *pem = c.ca_pem;
    *len = c.ca_pem_len;
    c.ca_pem = NULL;
    kube_conn_free(&c);
    return pem;
}

static void test_base64_decoding(void **state) {
    (void)state;
    static const struct {
        const char *in, *out;
    } good[] = {
        {"QQ==", "A"},        {"QUI=", "AB"},           {"QUJD", "ABC"},
        {"QUJDRA==", "ABCD"}, {"QU\\nJD\\r\\n", "ABC"}, {"Pz8+", "?\?>"},
        {"Lz8/", "/?\?"},
    };
    char err[ERRLEN];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t len = 0;
        char *pem = decode_ca(good[i].in, &len, err);
        if (!pem)
            fail_msg("'%s': %s", good[i].in, err);
        assert_int_equal(len, strlen(good[i].out));
        assert_string_equal(pem, good[i].out);
        free(pem);
    }
    static const char *const bad[] = {"QQ=",  "Q===", "QQ==QQ==", "QUJD!", "QU JD",
                                      "=QUJ", "QUJ",  "QQ=A",     "-_-_"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = 0;
        char *pem = decode_ca(bad[i], &len, err);
        if (pem) {
            free(pem);
            fail_msg("'%s' should be refused", bad[i]);
        }
        assert_non_null(strstr(err, "certificate-authority-data is not valid base64"));
    }
}

static void test_generated_shapes(void **state) {
    (void)state;
    char path[] = "/tmp/test_kubeconfig_XXXXXX", err[ERRLEN];
    struct kube_conn c;

    /* An empty -data field is the same as no field. */
    write_kubeconfig(path, "    certificate-authority-data: \"\"\n", "    token: t\n");
    assert_int_equal(kube_conn_from_kubeconfig(path, NULL, &c, err, sizeof err), 0);
    assert_null(c.ca_pem);
    assert_null(c.ca_file);
    assert_string_equal(c.server, "https://k");
    assert_string_equal(c.token, "t");
    kube_conn_free(&c);
    assert_int_equal(unlink(path), 0);

    strcpy(path, "/tmp/test_kubeconfig_XXXXXX");
    write_kubeconfig(path, "    insecure-skip-tls-verify: true\n    certificate-authority: ca\n",
                     "    tokenFile: tok\n");
    assert_int_equal(kube_conn_from_kubeconfig(path, NULL, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "insecure-skip-tls-verify cannot be combined with a certificate "
                                "authority"));
    assert_int_equal(unlink(path), 0);

    strcpy(path, "/tmp/test_kubeconfig_XXXXXX");
    write_kubeconfig(path, "    insecure-skip-tls-verify: maybe\n", "    token: t\n");
    assert_int_equal(kube_conn_from_kubeconfig(path, NULL, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, ":6: cluster 'c' (context 't'): insecure-skip-tls-verify must be "
                                "true or false"));
    assert_int_equal(unlink(path), 0);

    strcpy(path, "/tmp/test_kubeconfig_XXXXXX");
    write_kubeconfig(path, "", "    tokenFile: /run/tok\n    token: [x]\n");
    assert_int_equal(kube_conn_from_kubeconfig(path, NULL, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, ":10: user 'u' (context 't'): token must be a string"));
    assert_int_equal(unlink(path), 0);

    /* absolute paths in a kubeconfig under /tmp stay absolute; relative
     * ones land next to it */
    strcpy(path, "/tmp/test_kubeconfig_XXXXXX");
    write_kubeconfig(path, "    certificate-authority: /etc/ca.pem\n",
                     "    tokenFile: tok\n    token: inline\n");
    assert_int_equal(kube_conn_from_kubeconfig(path, NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.ca_file, "/etc/ca.pem");
    assert_string_equal(c.token_file, "/tmp/tok");
    assert_string_equal(c.token, "inline");
    kube_conn_free(&c);
    assert_int_equal(unlink(path), 0);

    strcpy(path, "/tmp/test_kubeconfig_XXXXXX");
    write_kubeconfig(path, "", "");
    assert_int_equal(kube_conn_from_kubeconfig(path, NULL, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, ": user 'u' has no 'user' section"));
    assert_int_equal(unlink(path), 0);
}

/* ---- where the file comes from ------------------------------------------------ */

static void test_kubeconfig_env_colon_list(void **state) {
    (void)state;
    struct kube_conn c;
    /* The files are merged as kubectl merges them: current-context comes
     * from the first file that sets it (the second one here). */
    assert_int_equal(
        setenv("KUBECONFIG", ":fixtures/kubeconfig/no-current:fixtures/kubeconfig/second", 1), 0);
    load_ok(NULL, NULL, &c);
    assert_string_equal(c.server, "https://second.example.com");
    assert_string_equal(c.context, "second");
    kube_conn_free(&c);
    load_ok(NULL, "only", &c);
    assert_string_equal(c.server, "https://only.example.com:443");
    assert_string_equal(c.context, "only");
    kube_conn_free(&c);

    /* First file wins per named entry; a context may use a cluster of one
     * file and a user of another; a missing file in the list is skipped. */
    assert_int_equal(setenv("KUBECONFIG",
                            "fixtures/kubeconfig/merge-first:fixtures/kubeconfig/does-not-exist:"
                            "fixtures/kubeconfig/no-current:fixtures/kubeconfig/second",
                            1),
                     0);
    load_ok(NULL, NULL, &c);
    assert_string_equal(c.context, "second");
    assert_string_equal(c.server, "https://first-wins.example.com");
    kube_conn_free(&c);
    load_ok(NULL, "mixed", &c);
    assert_string_equal(c.server, "https://only.example.com:443");
    assert_string_equal(c.token, "first-token");
    kube_conn_free(&c);
    /* An unknown context names every context of every file, once. */
    expect_error(NULL, "staging",
                 "fixtures/kubeconfig/merge-first: context 'staging' is not defined in "
                 "contexts; the contexts are: 'mixed', 'only', 'second'");

    /* A list none of whose files exists is an error. */
    assert_int_equal(setenv("KUBECONFIG", "fixtures/kubeconfig/nope1:fixtures/kubeconfig/nope2", 1),
                     0);
    expect_error(NULL, NULL,
                 "fixtures/kubeconfig/nope1: cannot read: none of the 2 files in $KUBECONFIG "
                 "exists");

    assert_int_equal(setenv("KUBECONFIG", "fixtures/kubeconfig/second:" KC, 1), 0);
    load_ok(NULL, NULL, &c);
    assert_string_equal(c.server, "https://second.example.com");
    kube_conn_free(&c);

    /* An explicit path wins over $KUBECONFIG. */
    load_ok(KC, NULL, &c);
    assert_string_equal(c.context, "dev");
    kube_conn_free(&c);
}

static void test_home_fallback(void **state) {
    (void)state;
    const char *saved = getenv("HOME");
    char *home = saved ? strdup(saved) : NULL;
    char dir[] = "/tmp/test_kubeconfig_home_XXXXXX", kube[64], file[96];
    assert_non_null(mkdtemp(dir));
    snprintf(kube, sizeof kube, "%s/.kube", dir);
    snprintf(file, sizeof file, "%s/config", kube);
    assert_int_equal(setenv("HOME", dir, 1), 0);

    char want[256];
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", file);
    expect_error(NULL, NULL, want);

    assert_int_equal(mkdir(kube, 0700), 0);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_true(fputs("current-context: h\nclusters: [{name: h, cluster: {server: "
                      "'https://home:6443'}}]\ncontexts: [{name: h, context: {cluster: h}}]\n",
                      f) >= 0);
    assert_int_equal(fclose(f), 0);
    struct kube_conn c;
    load_ok(NULL, NULL, &c);
    assert_string_equal(c.server, "https://home:6443");
    kube_conn_free(&c);

    assert_int_equal(unlink(file), 0);
    assert_int_equal(rmdir(kube), 0);
    assert_int_equal(rmdir(dir), 0);
    assert_int_equal(unsetenv("HOME"), 0);
    struct kube_conn none;
    char err[ERRLEN];
    assert_int_equal(kube_conn_from_kubeconfig(NULL, NULL, &none, err, sizeof err), -1);
    assert_string_equal(
        err, "no kubeconfig: kubernetes.kubeconfig, $KUBECONFIG and $HOME are all unset");
    if (home) {
        assert_int_equal(setenv("HOME", home, 1), 0);
        free(home);
    }
}

/* ---- in-cluster ------------------------------------------------------------------ */

static void test_in_cluster(void **state) {
    (void)state;
    struct kube_conn c;
    char err[ERRLEN];
    assert_int_equal(kube_conn_in_cluster(&c, err, sizeof err), -1);
    assert_string_equal(err, "in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
                             "are not set (not running in a pod?)");
    assert_zeroed(&c);

    assert_int_equal(setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1), 0);
    assert_int_equal(setenv("KUBERNETES_SERVICE_PORT", "443", 1), 0);
    assert_int_equal(setenv("CANARY_BRIDGE_SA_DIR", "fixtures/kubeconfig/sa", 1), 0);
    assert_int_equal(kube_conn_in_cluster(&c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://10.96.0.1:443");
    assert_string_equal(c.token_file, "fixtures/kubeconfig/sa/token");
    assert_string_equal(c.ca_file, "fixtures/kubeconfig/sa/ca.crt");
    assert_null(c.token); /* re-read from the file on use: tokens rotate */
    assert_false(c.insecure);
    kube_conn_free(&c);

    assert_int_equal(setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1", 1), 0);
    assert_int_equal(kube_conn_in_cluster(&c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://[fd00:10:96::1]:443");
    kube_conn_free(&c);

    assert_int_equal(setenv("KUBERNETES_SERVICE_PORT", "https", 1), 0);
    assert_int_equal(kube_conn_in_cluster(&c, err, sizeof err), -1);
    assert_string_equal(err, "in-cluster: KUBERNETES_SERVICE_PORT is not a port number");

    assert_int_equal(setenv("KUBERNETES_SERVICE_PORT", "6443", 1), 0);
    assert_int_equal(setenv("CANARY_BRIDGE_SA_DIR", "fixtures/kubeconfig/no-sa", 1), 0);
    assert_int_equal(kube_conn_in_cluster(&c, err, sizeof err), -1);
    assert_string_equal(err, "in-cluster: cannot read fixtures/kubeconfig/no-sa/token: No such "
                             "file or directory");
    assert_zeroed(&c);
}

/* ---- dispatch on the bridge config ---------------------------------------------- */

static void test_from_config(void **state) {
    (void)state;
    struct config cfg;
    struct kube_conn c;
    char err[ERRLEN];
    assert_int_equal(config_defaults(&cfg), 0);

    /* explicit server */
    cfg.kubernetes.server = strdup("https://api.internal:6443//");
    cfg.kubernetes.token_file = strdup("/etc/canary-bridge/token");
    cfg.kubernetes.ca_file = strdup("/etc/canary-bridge/ca.pem");
    assert_non_null(cfg.kubernetes.server);
    assert_non_null(cfg.kubernetes.token_file);
    assert_non_null(cfg.kubernetes.ca_file);
    cfg.kubernetes.insecure_skip_verify = true;
    assert_int_equal(kube_conn_from_config(&cfg.kubernetes, &c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://api.internal:6443");
    assert_string_equal(c.token_file, "/etc/canary-bridge/token");
    assert_string_equal(c.ca_file, "/etc/canary-bridge/ca.pem");
    assert_true(c.insecure);
    assert_null(c.context);
    kube_conn_free(&c);

    free(cfg.kubernetes.server);
    cfg.kubernetes.server = strdup("tcp://api");
    assert_non_null(cfg.kubernetes.server);
    assert_int_equal(kube_conn_from_config(&cfg.kubernetes, &c, err, sizeof err), -1);
    assert_string_equal(err, "kubernetes.server: must be an https:// (or http://) URL");

    /* in-cluster */
    free(cfg.kubernetes.server);
    cfg.kubernetes.server = NULL;
    cfg.kubernetes.in_cluster = true;
    assert_int_equal(setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1), 0);
    assert_int_equal(setenv("KUBERNETES_SERVICE_PORT", "443", 1), 0);
    assert_int_equal(setenv("CANARY_BRIDGE_SA_DIR", "fixtures/kubeconfig/sa", 1), 0);
    assert_int_equal(kube_conn_from_config(&cfg.kubernetes, &c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://10.0.0.1:443");
    assert_string_equal(c.token_file, "fixtures/kubeconfig/sa/token");
    kube_conn_free(&c);

    /* kubeconfig with a named context */
    cfg.kubernetes.in_cluster = false;
    cfg.kubernetes.kubeconfig = strdup(KC);
    cfg.kubernetes.context = strdup("prod");
    assert_non_null(cfg.kubernetes.kubeconfig);
    assert_non_null(cfg.kubernetes.context);
    assert_int_equal(kube_conn_from_config(&cfg.kubernetes, &c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://prod.example.com");
    assert_string_equal(c.context, "prod");
    kube_conn_free(&c);
    config_free(&cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_current_context, clear_env),
        cmocka_unit_test_setup(test_named_context_with_data_fields, clear_env),
        cmocka_unit_test_setup(test_insecure_cluster_token_and_cert_files, clear_env),
        cmocka_unit_test_setup(test_plain_http_without_user, clear_env),
        cmocka_unit_test_setup(test_missing_context_cluster_user, clear_env),
        cmocka_unit_test_setup(test_plugins_and_basic_auth_refused, clear_env),
        cmocka_unit_test_setup(test_exec_plugin, clear_env),
        cmocka_unit_test_setup(test_invalid_data_refused, clear_env),
        cmocka_unit_test_setup(test_unreadable_or_malformed_files, clear_env),
        cmocka_unit_test_setup(test_base64_decoding, clear_env),
        cmocka_unit_test_setup(test_generated_shapes, clear_env),
        cmocka_unit_test_setup(test_kubeconfig_env_colon_list, clear_env),
        cmocka_unit_test_setup(test_home_fallback, clear_env),
        cmocka_unit_test_setup(test_in_cluster, clear_env),
        cmocka_unit_test_setup(test_from_config, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
