/* config.h - the daemon's YAML configuration (SPEC section 3).
 *
 * Loaded with libyaml's document API so every error names FILE:LINE. Unknown
 * keys, wrong types and missing required values are errors; everything has a
 * documented default. All strings are heap copies owned by struct config. */
#ifndef CB_CONFIG_H
#define CB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/log.h"

/* <sysconfdir>/canary-bridge/bridge.yaml, from meson.build, so the binary
 * looks where `meson install` put the file and the unit points. */
#ifndef CONFIG_DEFAULT_PATH
#error "CONFIG_DEFAULT_PATH is set by meson.build (sysconfdir)"
#endif

enum source_type { SOURCE_ETCD, SOURCE_CONSUL };
enum reconcile_policy { POLICY_UPSERT_ONLY, POLICY_SYNC };
enum rule_syntax { RULE_SYNTAX_V3, RULE_SYNTAX_V2 };

struct tls_files {
    char *ca_file;   /* NULL: system trust store */
    char *cert_file; /* client certificate (PEM) */
    char *key_file;  /* client key (PEM) */
    bool insecure_skip_verify;
};

struct config {
    char *path; /* file it was read from */

    struct {
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
    } source;

    struct {
        char *kubeconfig; /* default $KUBECONFIG, else ~/.kube/config */
        char *context;    /* NULL or "": current-context */
        bool in_cluster;
        char *server; /* explicit: server + token_file + ca_file */
        char *token_file;
        char *ca_file;
        bool insecure_skip_verify;
        char *field_manager; /* NULL: "canary-bridge@<hostname>" */
    } kubernetes;

    struct {
        char *api_group;              /* "traefik.io" (default) | "traefik.containo.us" | "auto" */
        enum rule_syntax rule_syntax; /* default v3 */
    } traefik;

    struct {
        enum reconcile_policy policy; /* default upsert-only */
        uint64_t resync_ms;           /* default 5m; 0 disables */
        char **namespaces;            /* allow-list; empty = any */
        size_t n_namespaces;
        bool status;                /* write P<ns>/<name>/status */
        unsigned max_in_flight;     /* routes written concurrently; default 16 */
        uint64_t burst_hold_ms;     /* longest write hold in a burst; 10s; 0 = off */
        uint64_t burst_quiet_ms;    /* a pause this long ends the hold; 30ms */
        bool allow_cross_namespace; /* services[].namespace allowed; default false */
        /* Deletion guard: percent of the routes owning objects that one source
         * read may delete without confirmation; 0..100, default 50. */
        unsigned max_delete_percent;
    } reconcile;

    struct {
        char *listen; /* default "127.0.0.1:9464"; "" disables */
    } server;

    struct {
        bool enabled;
        char *namespace; /* default "default" */
        char *name;      /* default "canary-bridge" */
        uint64_t lease_duration_ms, renew_deadline_ms, retry_period_ms; /* 15s 10s 2s */
        char *identity;                                                 /* default hostname */
    } leader_election;

    struct {
        enum log_level level; /* default info */
    } log;
};

/* Fill *cfg with defaults (heap strings) . Returns 0 or -1 on ENOMEM. */
int config_defaults(struct config *cfg);
/* Parse YAML text. `name` is used in messages ("name:LINE: ..."). On error,
 * returns -1, writes one message into err and leaves *cfg freed/zeroed. */
int config_parse(const char *text, size_t len, const char *name, struct config *cfg, char *err,
                 size_t errlen);
/* Read and parse a file (errors name the file, e.g. "bridge.yaml:7: unknown key 'foo'"). */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);
void config_free(struct config *cfg);

/* Read a whole file of at most max bytes into a heap string (NUL-terminated;
 * *len excludes the NUL). Errors name the file: "PATH: cannot open: ...".
 * Shared with the kubeconfig loader. */
int config_read_file(const char *path, size_t max, char **text, size_t *len, char *err,
                     size_t errlen);

/* Go-style durations: "250ms", "30s", "5m", "1h30m", "0". Returns 0/-1. */
int parse_duration_ms(const char *s, uint64_t *out);

#endif
