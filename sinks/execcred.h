/* execcred.h - run a kubeconfig exec credential plugin on the loop.
 *
 * The command runs as a child process (uv_spawn) with its args, the
 * bridge's environment plus the kubeconfig's env and KUBERNETES_EXEC_INFO,
 * stdin on /dev/null (never interactive), stdout read whole (bounded) and
 * parsed as an ExecCredential of the configured apiVersion, stderr kept for
 * the error message. A plugin that runs longer than the timeout is killed.
 * The credential is a secret: it never appears in a message. */
#ifndef CB_EXECCRED_H
#define CB_EXECCRED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sinks/kubeconfig.h"

#define EXECCRED_TIMEOUT_MS 60000
#define EXECCRED_STDOUT_MAX (1024 * 1024)

/* What a run gives: the status of the plugin's ExecCredential. */
struct execcred {
    char *token; /* status.token, or NULL */
    char *cert_pem;
    size_t cert_pem_len;
    char *key_pem;
    size_t key_pem_len;
    bool has_expiry;
    int64_t expiry_ms; /* status.expirationTimestamp, Unix ms */
};

struct execcred_run;

/* Once per run that was not closed first: cred on success (the callee may
 * take its strings, setting them to NULL), else err says what went wrong. */
typedef void (*execcred_cb)(void *user, struct execcred *cred, const char *err);

/* Start one run of the plugin. Every outcome comes through cb, from the
 * loop: a command that is missing too (the message carries the
 * installHint). NULL with err set only when out of memory (cb is then not
 * called). cb gets "exec plugin CMD (user 'U'): what went wrong", with the
 * start of the plugin's stderr when it failed. After cb the run closes and
 * frees itself. */
struct execcred_run *execcred_start(uv_loop_t *loop, const struct kube_exec *ex,
                                    uint64_t timeout_ms, execcred_cb cb, void *user, char *err,
                                    size_t errlen);
/* Close a run before its cb: no callback afterwards; a running plugin is
 * killed, and the run frees itself once it has been reaped. */
void execcred_close(struct execcred_run *r);

/* Parse a plugin's stdout (exposed for tests). */
int execcred_parse(const char *api_version, const char *out, size_t len, struct execcred *c,
                   char *err, size_t errlen);
/* Wipe and free; c is zeroed. */
void execcred_clear(struct execcred *c);
/* RFC 3339 ("2026-01-02T03:04:05Z", fractions, offsets) to Unix ms. */
int execcred_parse_time(const char *s, int64_t *ms);

#endif
