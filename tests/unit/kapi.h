/* kapi.h - the Kubernetes API test server on a unit test's loop.
 *
 * The most faithful stand-in for a kube-apiserver we have is
 * tests/kubeapi/server.py (the one the integration tests use): real HTTPS,
 * resourceVersion conflicts, AlreadyExists, NamespaceLifecycle, fault
 * injection and a request log (tests/kubeapi/README.md). kapi_setup, a
 * cmocka group setup, spawns it on a fresh loop in a temp dir and makes a
 * kube client for the test's own requests (kapi_ctl); the code under test
 * talks to it through the real kube client (kapi_client_new).
 *
 * Run the tests from tests/ (meson's workdir) or the repository root. */
#ifndef CB_TEST_KAPI_H
#define CB_TEST_KAPI_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <uv.h>

#include "bridge/lib/http.h"
#include "bridge/lib/log.h"
#include "sinks/kube.h"

#include "support.h"

struct kapi {
    /* public */
    uv_loop_t loop;
    struct logger log;    /* to stderr, level info */
    char kubeconfig[300]; /* the server's, for kapi_client_new */
    struct http_client *http;
    struct kube_client *ctl; /* for /_test/ and reading objects */
    void *data;              /* the test's own; kapi never touches it */
    /* private */
    uv_process_t proc;
    bool proc_open, exited;
    char dir[256];
};

/* cmocka group setup and teardown: *state is the struct kapi. Teardown
 * stops the server (SIGTERM, then SIGKILL), closes the loop and removes the
 * temp dir. */
int kapi_setup(void **state);
int kapi_teardown(void **state);

/* A kube client for code under test (dry_run: ?dryRun=All on writes);
 * free with kube_client_free. NULL (and a message) on failure. */
struct kube_client *kapi_client_new(struct kapi *k, bool dry_run);

/* A synchronous request through k->ctl (the loop runs meanwhile; no answer
 * in 10 s fails the test). Returns the JSON answer (caller frees) and, when
 * status is not NULL, the HTTP status. */
cJSON *kapi_ctl(struct kapi *k, const char *method, const char *path, const char *body,
                long *status);
/* The same, asserting a 200 or 201 and dropping the answer. */
void kapi_ctl_ok(struct kapi *k, const char *method, const char *path, const char *body);

/* Add a fault rule (JSON, see the README), or clear them all. */
void kapi_fault(struct kapi *k, const char *rule);
void kapi_faults_clear(struct kapi *k);

/* The seq of the last request the server logged (0: none yet). */
int kapi_last_seq(struct kapi *k);

#endif
