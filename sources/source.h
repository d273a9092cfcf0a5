/* source.h - the one interface every key source (etcd, Consul) implements.
 *
 * A source lists the prefix once, then watches it, and reports what it sees
 * through callbacks. It knows nothing of routes, Traefik or Kubernetes: it
 * deals in keys, values and revisions only.
 *
 * Callback contract (all on the loop thread):
 *  - on_snapshot: a complete, successful read of the prefix. It REPLACES what
 *    the consumer knows: keys absent from it are gone. Sent after the first
 *    list, after a re-list (compaction, index reset, resync) and after a
 *    reconnect that could not resume from the last revision.
 *  - on_event: one change after the last snapshot, in revision order.
 *  - on_state: connectivity changes (connected=false carries a reason).
 * Pointers passed to callbacks are valid only during the call. */
#ifndef CB_SOURCE_H
#define CB_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/lib/backoff.h"
#include "bridge/lib/http.h"
#include "bridge/lib/log.h"

/* The config file's `source` section (bridge/config.c fills it). */
enum source_type { SOURCE_ETCD, SOURCE_CONSUL };

struct tls_files {
    char *ca_file;   /* NULL: system trust store */
    char *cert_file; /* client certificate (PEM) */
    char *key_file;  /* client key (PEM) */
    bool insecure_skip_verify;
};

struct source_settings {
    enum source_type type; /* default etcd */
    char **endpoints;      /* etcd; default [http://127.0.0.1:2379] */
    size_t n_endpoints;
    char *address;        /* consul; default http://127.0.0.1:8500 */
    char *prefix;         /* default "canary/"; must end in '/' */
    char *username;       /* etcd auth */
    char *password;       /* etcd auth (secret; never log) */
    char *password_file;  /* etcd auth, alternative to password */
    char *token;          /* consul ACL token (secret; never log) */
    char *token_file;     /* consul ACL token file */
    char *datacenter;     /* consul ?dc= */
    char *consistency;    /* consul: default|stale|consistent */
    uint64_t wait_ms;     /* consul blocking wait; default 5m */
    uint64_t liveness_ms; /* etcd: check the watched member this often; 5s; 0 = off */
    struct tls_files tls; /* keys ca_file, cert_file, key_file, insecure_skip_verify */
};

struct source_kv {
    const char *key;   /* full key, NUL-terminated */
    const char *value; /* raw bytes, NUL-terminated for convenience (may hold NULs) */
    size_t value_len;
    uint64_t revision; /* etcd mod_revision / Consul ModifyIndex */
};

enum source_event_type { SOURCE_PUT, SOURCE_DELETE };

struct source_callbacks {
    void (*on_snapshot)(void *user, const struct source_kv *kvs, size_t n, uint64_t revision);
    void (*on_event)(void *user, enum source_event_type type, const struct source_kv *kv,
                     uint64_t revision);
    void (*on_state)(void *user, bool connected, const char *reason);
    void *user;
};

struct source;
struct source_ops {
    const char *name;                 /* "etcd" | "consul" */
    int (*start)(struct source *s);   /* list, then watch */
    void (*resync)(struct source *s); /* re-list now (a snapshot follows) */
    /* Write a key (status feedback). done(user, ok, message) is called once. */
    int (*put)(struct source *s, const char *key, const char *value, size_t len,
               void (*done)(void *user, bool ok, const char *message), void *user);
    void (*stop)(struct source *s);    /* cancel requests and timers; no callbacks after */
    void (*destroy)(struct source *s); /* after stop and once the loop closed its handles */
};

/* Why the source is down, set before on_state(false): the consumer counts
 * ACL refusals apart (a token that may not read is no network blip), and
 * `check` fails at once on ACL and AUTH (the server refused the credentials:
 * etcd's username/password) instead of waiting for an answer. */
enum source_fault {
    SOURCE_FAULT_NONE,
    SOURCE_FAULT_UNREACHABLE,
    SOURCE_FAULT_ACL,
    SOURCE_FAULT_AUTH
};

struct source {
    const struct source_ops *ops;
    struct source_callbacks cb;
    uv_loop_t *loop;
    struct http_client *http;
    struct logger *log;
    const struct source_settings *cfg; /* must outlive the source */
    enum source_fault fault;           /* of the last on_state(false); NONE while up */
};

/* Create the source that cfg->type names. Returns NULL with err set. */
struct source *source_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                          const struct source_settings *cfg, const struct source_callbacks *cb,
                          char *err, size_t errlen);
struct source *source_etcd_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                               const struct source_settings *cfg, const struct source_callbacks *cb,
                               char *err, size_t errlen);

struct source *source_consul_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                                 const struct source_settings *cfg,
                                 const struct source_callbacks *cb, char *err, size_t errlen);

/* Helpers shared by sources. */
/* Exponential backoff with full jitter: base * 2^attempt capped at max, then a
 * uniform random value in [cap/2, cap]. */
static inline uint64_t source_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms) {
    return backoff_ms(attempt, base_ms, max_ms);
}

#endif
