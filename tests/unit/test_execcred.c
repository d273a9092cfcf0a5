/* test_execcred.c - kubeconfig exec credential plugins, run for real: small
 * shell scripts written into a temp dir return a token, a client
 * certificate, an expiry, fail with a message on stderr, print the wrong
 * apiVersion, or hang until the timeout kills them; a missing command shows
 * its installHint. The scripts record their args, env and
 * KUBERNETES_EXEC_INFO so the tests see what the plugin was given. */
/* cmocka.h needs these three first; the blank line keeps clang-format from
 * sorting it above them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sinks/execcred.h"

struct outcome {
    int calls;
    bool ok;
    char token[256];
    char cert[256];
    char key[256];
    bool has_expiry;
    int64_t expiry_ms;
    char err[2048];
};

static char tmpdir[64];

static int make_dir(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_execcred_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* tmpdir/name, executable, with body after a #!/bin/sh line. */
static void write_script(const char *name, const char *body, char *path, size_t pathlen) {
    snprintf(path, pathlen, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0755), 0);
}

static char *slurp(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char data[8192];
    size_t n = fread(data, 1, sizeof data - 1, f);
    fclose(f);
    data[n] = '\0';
    return data;
}

static void on_result(void *user, struct execcred *cred, const char *err) {
    struct outcome *o = user;
    o->calls++;
    o->ok = cred != NULL;
    if (cred) {
        snprintf(o->token, sizeof o->token, "%s", cred->token ? cred->token : "");
        snprintf(o->cert, sizeof o->cert, "%s", cred->cert_pem ? cred->cert_pem : "");
        snprintf(o->key, sizeof o->key, "%s", cred->key_pem ? cred->key_pem : "");
        o->has_expiry = cred->has_expiry;
        o->expiry_ms = cred->expiry_ms;
    } else {
        snprintf(o->err, sizeof o->err, "%s", err);
    }
}

/* Run the plugin on a fresh loop until every handle is closed. */
static void run_plugin(struct kube_exec *ex, uint64_t timeout_ms, struct outcome *o) {
    uv_loop_t loop;
    char err[256] = "";
    memset(o, 0, sizeof *o);
    assert_int_equal(uv_loop_init(&loop), 0);
    struct execcred_run *r = execcred_start(&loop, ex, timeout_ms, on_result, o, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(o->calls, 1);
}

static struct kube_exec plugin(char *command, const char *api_version) {
    struct kube_exec ex = {0};
    ex.command = command;
    ex.api_version = (char *)api_version;
    ex.user = (char *)"eks-user";
    static char *no_args[] = {NULL};
    ex.args = no_args;
    return ex;
}

#define V1 "client.authentication.k8s.io/v1"
#define V1BETA1 "client.authentication.k8s.io/v1beta1"

static void test_token_args_env_and_exec_info(void **state) {
    (void)state;
    char path[128];
    write_script("token",
                 "printf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\n"
                 "printf '%s' \"$KUBERNETES_EXEC_INFO\" > \"$(dirname \"$0\")/info\"\n"
                 "printf '%s' \"$AWS_PROFILE\" > \"$(dirname \"$0\")/env\"\n"
                 "cat <&0 > \"$(dirname \"$0\")/stdin\"\n"
                 "echo '{\"apiVersion\":\"" V1 "\",\"kind\":\"ExecCredential\","
                 "\"status\":{\"token\":\"k8s-aws-v1.secret\","
                 "\"expirationTimestamp\":\"2030-01-02T03:04:05Z\"}}'",
                 path, sizeof path);
    struct kube_exec ex = plugin(path, V1);
    char *args[] = {(char *)"eks", (char *)"get-token", (char *)"--cluster-name", (char *)"a b",
                    NULL};
    char *env[] = {(char *)"AWS_PROFILE=prod", NULL};
    ex.args = args;
    ex.nargs = 4;
    ex.env = env;
    ex.nenv = 1;
    ex.exec_info = (char *)"{\"kind\":\"ExecCredential\",\"apiVersion\":\"" V1
                           "\",\"spec\":{\"interactive\":false}}";
    struct outcome o;
    run_plugin(&ex, 10000, &o);
    assert_true(o.ok);
    assert_string_equal(o.token, "k8s-aws-v1.secret");
    assert_string_equal(o.cert, "");
    assert_true(o.has_expiry);
    assert_int_equal(o.expiry_ms, (int64_t)1893553445 * 1000);
    assert_string_equal(slurp("args"), "eks\nget-token\n--cluster-name\na b\n");
    assert_string_equal(slurp("env"), "prod");
    assert_string_equal(slurp("info"), ex.exec_info);
    assert_string_equal(slurp("stdin"), ""); /* never interactive: stdin is /dev/null */
}

static void test_client_certificate(void **state) {
    (void)state;
    char path[128];
    write_script("cert",
                 "echo '{\"apiVersion\":\"" V1BETA1 "\",\"kind\":\"ExecCredential\","
                 "\"status\":{\"clientCertificateData\":\"-----BEGIN CERTIFICATE-----\\nc\\n\","
                 "\"clientKeyData\":\"-----BEGIN PRIVATE KEY-----\\nk\\n\","
                 "\"expirationTimestamp\":\"2026-12-06T04:00:00.5+01:00\"}}'",
                 path, sizeof path);
    struct kube_exec ex = plugin(path, V1BETA1);
    struct outcome o;
    run_plugin(&ex, 10000, &o);
    assert_true(o.ok);
    assert_string_equal(o.token, "");
    assert_string_equal(o.cert, "-----BEGIN CERTIFICATE-----\nc\n");
    assert_string_equal(o.key, "-----BEGIN PRIVATE KEY-----\nk\n");
    assert_true(o.has_expiry);
    assert_int_equal(o.expiry_ms, (int64_t)1796526000 * 1000 + 500); /* 03:00:00.5Z */
}

static void test_failure_shows_stderr(void **state) {
    (void)state;
    char path[128];
    write_script("fail",
                 "echo 'error: SSO session expired;' >&2\n"
                 "echo '  run aws sso login' >&2\nexit 3",
                 path, sizeof path);
    struct kube_exec ex = plugin(path, V1);
    struct outcome o;
    run_plugin(&ex, 10000, &o);
    assert_false(o.ok);
    char want[512];
    snprintf(want, sizeof want,
             "exec plugin %s (user 'eks-user'): failed with exit code 3: error: SSO session "
             "expired; run aws sso login",
             path);
    assert_string_equal(o.err, want);
}

static void test_missing_command_shows_install_hint(void **state) {
    (void)state;
    struct kube_exec ex = plugin((char *)"canary-bridge-no-such-plugin", V1);
    ex.install_hint = (char *)"Install aws-iam-authenticator: see the EKS user guide";
    struct outcome o;
    run_plugin(&ex, 10000, &o);
    assert_false(o.ok);
    assert_string_equal(o.err, "exec plugin canary-bridge-no-such-plugin (user 'eks-user'): "
                               "executable canary-bridge-no-such-plugin not found; Install "
                               "aws-iam-authenticator: see the EKS user guide");
}

static void test_hanging_plugin_is_killed(void **state) {
    (void)state;
    char path[128];
    /* Records its pid, then waits forever (no output, pipes held open). */
    write_script("hang", "echo $$ > \"$(dirname \"$0\")/pid\"\nexec sleep 1000", path, sizeof path);
    struct kube_exec ex = plugin(path, V1);
    struct outcome o;
    run_plugin(&ex, 300, &o);
    assert_false(o.ok);
    char want[512];
    snprintf(want, sizeof want,
             "exec plugin %s (user 'eks-user'): did not finish within 300 ms; killed it", path);
    assert_string_equal(o.err, want);
    /* The loop only ended once the child was reaped: it is gone. */
    pid_t pid = (pid_t)atoi(slurp("pid"));
    assert_true(pid > 0);
    assert_int_equal(kill(pid, 0), -1);
}

static void test_bad_answers(void **state) {
    (void)state;
    struct {
        const char *out, *want;
    } cases[] = {
        {"not json", "its output is not a JSON ExecCredential"},
        {"{\"apiVersion\":\"" V1BETA1
         "\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"t\"}}",
         "it is configured to use API version " V1 ", but returned version " V1BETA1},
        {"{\"apiVersion\":\"" V1 "\",\"kind\":\"ExecCredential\"}",
         "it did not return a status field"},
        {"{\"apiVersion\":\"" V1 "\",\"kind\":\"ExecCredential\",\"status\":{}}",
         "it did not return a token or a client certificate and key"},
        {"{\"apiVersion\":\"" V1 "\",\"kind\":\"ExecCredential\",\"status\":"
         "{\"clientCertificateData\":\"c\"}}",
         "it returned only a client certificate, not both certificate and key"},
        {"{\"apiVersion\":\"" V1 "\",\"kind\":\"ExecCredential\",\"status\":"
         "{\"token\":\"t\",\"expirationTimestamp\":\"tomorrow\"}}",
         "its expirationTimestamp 'tomorrow' is not an RFC 3339 time"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct execcred c;
        char err[256];
        assert_int_equal(
            execcred_parse(V1, cases[i].out, strlen(cases[i].out), &c, err, sizeof err), -1);
        assert_string_equal(err, cases[i].want);
        assert_null(c.token);
    }
    /* Through a real run: the message names the plugin and never the token. */
    char path[128];
    write_script("wrongver",
                 "echo '{\"apiVersion\":\"" V1BETA1 "\",\"kind\":\"ExecCredential\","
                 "\"status\":{\"token\":\"do-not-show\"}}'",
                 path, sizeof path);
    struct kube_exec ex = plugin(path, V1);
    struct outcome o;
    run_plugin(&ex, 10000, &o);
    assert_false(o.ok);
    assert_non_null(strstr(o.err, "returned version " V1BETA1));
    assert_null(strstr(o.err, "do-not-show"));
}

static void test_parse_time(void **state) {
    (void)state;
    int64_t ms;
    assert_int_equal(execcred_parse_time("1970-01-01T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(execcred_parse_time("2000-03-01T00:00:00Z", &ms), 0);
    assert_int_equal(ms, (int64_t)951868800 * 1000);
    assert_int_equal(execcred_parse_time("2030-01-02T03:04:05.123456789Z", &ms), 0);
    assert_int_equal(ms, (int64_t)1893553445 * 1000 + 123);
    assert_int_equal(execcred_parse_time("2030-01-02T03:04:05-02:30", &ms), 0);
    assert_int_equal(ms, (int64_t)(1893553445 + 9000) * 1000);
    assert_int_equal(execcred_parse_time("2030-01-02 03:04:05", &ms), -1);
    assert_int_equal(execcred_parse_time("2030-01-02T03:04:05Zjunk", &ms), -1);
    assert_int_equal(execcred_parse_time("2030-13-02T03:04:05Z", &ms), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_args_env_and_exec_info),
        cmocka_unit_test(test_client_certificate),
        cmocka_unit_test(test_failure_shows_stderr),
        cmocka_unit_test(test_missing_command_shows_install_hint),
        cmocka_unit_test(test_hanging_plugin_is_killed),
        cmocka_unit_test(test_bad_answers),
        cmocka_unit_test(test_parse_time),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
