/* fuzz_kubeconfig.c - kube_conn_from_kubeconfig (sinks/kubeconfig.c): the
 * kubeconfig reader, with its base64 decoder and path resolution.
 *
 * The API takes a path, so the input is written to one temporary file,
 * created once per process (in $TMPDIR) and rewritten in place for every
 * input: no file-system churn per run, and nothing left behind at exit.
 * Each input is read twice: with current-context, and with the context
 * "prod" (as kubernetes.context would name one).
 *
 * Invariants beyond "no crash, no sanitizer report":
 *  - on failure: a message starting with the file's path, and *out zeroed;
 *  - on success: the server is an http(s) URL with a host, no trailing '/'
 *    and no space or control character; a client certificate comes with its
 *    key and the reverse; insecure-skip-tls-verify never comes with a CA;
 *    every file path is absolute (relative ones are resolved against the
 *    kubeconfig's directory, and ours is absolute); decoded -data fields
 *    are NUL-terminated at their length; the context used is reported;
 *  - token, password and client-key-data values never appear in a message. */
#include "fuzz_common.h"
#include "fuzz_secrets.h"

#include <fcntl.h>
#include <unistd.h>

#include "sinks/kubeconfig.h"

static char dir[64], path[96];
static int fd = -1;

static void cleanup(void) {
    if (fd >= 0) {
        close(fd);
        unlink(path);
        rmdir(dir);
    }
}

static void setup(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/cb-fuzz-kubeconfig.XXXXXX",
             tmp && *tmp && strlen(tmp) < 32 ? tmp : "/tmp");
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof path, "%s/kubeconfig", dir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    atexit(cleanup);
}

static void write_input(const uint8_t *data, size_t size) {
    if (fd < 0)
        setup();
    if (ftruncate(fd, 0) != 0)
        abort();
    for (size_t off = 0; off < size;) {
        ssize_t n = pwrite(fd, data + off, size - off, (off_t)off);
        if (n <= 0)
            abort();
        off += (size_t)n;
    }
}

static bool url_ok(const char *s) {
    const char *rest = !strncmp(s, "https://", 8)  ? s + 8
                       : !strncmp(s, "http://", 7) ? s + 7
                                                   : NULL;
    size_t n = strlen(s);
    if (!rest || !*rest || *rest == '/' || *rest == ':' || s[n - 1] == '/')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return false;
    return true;
}

static void check_pem(const char *pem, size_t len, const char *what) {
    if (pem)
        FUZZ_CHECK(pem[len] == '\0', "%s not NUL-terminated at its length", what);
    else
        FUZZ_CHECK(len == 0, "%s length without data", what);
}

static void check_conn(const struct kube_conn *c, const char *context) {
    FUZZ_CHECK(c->server && url_ok(c->server), "server '%s'", c->server ? c->server : "(null)");
    bool cert = c->cert_file || c->cert_pem, key = c->key_file || c->key_pem;
    FUZZ_CHECK(cert == key, "client certificate without key or the reverse");
    FUZZ_CHECK(!(c->insecure && (c->ca_file || c->ca_pem)), "insecure together with a CA");
    const char *files[] = {c->ca_file, c->cert_file, c->key_file, c->token_file};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        FUZZ_CHECK(!files[i] || files[i][0] == '/', "path '%s' not resolved", files[i]);
    FUZZ_CHECK(!c->token || c->token[0], "empty token kept");
    check_pem(c->ca_pem, c->ca_pem_len, "certificate-authority-data");
    check_pem(c->cert_pem, c->cert_pem_len, "client-certificate-data");
    check_pem(c->key_pem, c->key_pem_len, "client-key-data");
    FUZZ_CHECK(c->context && c->context[0], "no context reported");
    FUZZ_CHECK(!context || !strcmp(c->context, context), "context '%s' used, '%s' asked",
               c->context, context);
}

static void one(const char *context, struct secrets *sec) {
    struct kube_conn c, zero;
    memset(&zero, 0, sizeof zero);
    char err[512] = "";
    if (kube_conn_from_kubeconfig(path, context, &c, err, sizeof err) == 0) {
        check_conn(&c, context);
        kube_conn_free(&c);
        FUZZ_CHECK(!memcmp(&c, &zero, sizeof c), "kube_conn_free did not zero");
        return;
    }
    FUZZ_CHECK(!strncmp(err, path, strlen(path)), "message does not name the file: '%s'", err);
    FUZZ_CHECK(!memcmp(&c, &zero, sizeof c), "*out not zeroed on failure");
    secrets_check(sec, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const secret_keys[] = {"token", "password", "client-key-data", NULL};
    write_input(data, size);
    struct secrets sec;
    secrets_collect(data, size, secret_keys, path, &sec);
    one(NULL, &sec);
    one("prod", &sec);
    secrets_free(&sec);
    return 0;
}
