/* source.h - the one interface every key source (etcd, Consul) implements,
 * and the small base both implementations are built on.
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
 * Pointers passed to callbacks are valid only during the call.
 *
 * Lifecycle: source_new (memory and the timer, no I/O) -> start -> stop ->
 * close. A callback may call any of them on its own source, close included:
 * memory is freed only from the timer's close callback, once the loop has run
 * again, and every step that calls out checks afterwards whether it was
 * stopped or superseded (source_current) before it touches its state. */
#ifndef CB_SOURCE_H
#define CB_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/lib/http.h"
#include "bridge/lib/list.h"
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

typedef void (*source_put_cb)(void *user, bool ok, const char *message);

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
    int (*start)(struct source *s);   /* list, then watch; once. 0 or -1 */
    void (*resync)(struct source *s); /* re-list now (a snapshot follows) */
    /* Write a key (status feedback). done(user, ok, message) is called once,
     * unless the source is stopped first. 0, or -1 when it cannot start. */
    int (*put)(struct source *s, const char *key, const char *value, size_t len, source_put_cb done,
               void *user);
    /* Cancel requests, writes and timers: no callback after it. Idempotent. */
    void (*stop)(struct source *s);
    /* Stop, then close the source's handles; its memory is freed in their
     * last close callback, so the loop must run once more. */
    void (*close)(struct source *s);
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

struct source_hooks;

struct source {
    /* public */
    const struct source_ops *ops;
    /* read-only */
    enum source_fault fault; /* of the last on_state(false); NONE while up */
    uv_loop_t *loop;
    struct logger *log;
    const struct source_settings *cfg; /* must outlive the source */
    /* private: the base below, for the implementations */
    const struct source_hooks *hooks;
    struct source_callbacks cb;
    struct http_client *http; /* requests go here */
    bool own_http;            /* http is the source's own: closed with it */
    struct http_tls tls;      /* cfg->tls, as the http client takes it */
    bool use_tls;
    uv_timer_t timer; /* the one timer: backoff, rate limit, deadlines */
    bool started, stopped;
    unsigned gen;                         /* bumped when in-flight work is abandoned */
    struct http_req *req;                 /* the one request step in flight, or NULL */
    struct file_read *file_read;          /* a secret file being read, or NULL */
    const char *file_setting, *file_path; /* which, for messages */
    void (*file_done)(struct source *s, const char *data, size_t len);
    unsigned attempt;      /* consecutive failures, for the backoff */
    bool up;               /* on_state(true) sent, no outage since */
    bool ever_up;          /* on_state(true) sent once */
    bool down_reported;    /* on_state(false) sent for the current outage */
    struct list_node puts; /* status writes in flight (struct source_put) */
};

/* Create the source that cfg->type names. Returns NULL with err set. */
struct source *source_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                          const struct source_settings *cfg, const struct source_callbacks *cb,
                          char *err, size_t errlen);

/* ======================================================================
 * The base: what every implementation does the same way
 * ====================================================================== */

/* What the base calls back in the implementation. */
struct source_hooks {
    void (*start)(struct source *s);       /* the first step (ops->start checked the state) */
    void (*resync)(struct source *s);      /* ops->resync, while not stopped */
    void (*timer_fired)(struct source *s); /* not after stop */
    void (*abandon)(struct source *s);     /* drop its own work in flight, silently */
    /* A step failed: report the outage (once), back off, retry. */
    void (*failed)(struct source *s, enum source_fault fault, const char *reason);
    void (*free)(struct source *s); /* the last close callback */
};

/* Zeroed memory for an implementation's struct (its base first). NULL with
 * err set on ENOMEM. */
void *source_alloc(size_t size, char *err, size_t errlen);
/* Set up the base of a source the implementation allocated (zeroed), and
 * init its timer; call it last in the constructor, so a failure before it
 * needs no close. Returns 0, or -1 with err set. */
int source_init(struct source *s, const struct source_ops *ops, const struct source_hooks *hooks,
                uv_loop_t *loop, struct http_client *http, struct logger *lg,
                const struct source_settings *cfg, const struct source_callbacks *cb, char *err,
                size_t errlen);
/* Use cfg->tls on every request when use is set. Warns, naming the server,
 * when an https server's certificate will not be verified. */
void source_tls_setup(struct source *s, bool use, bool https, const char *server);
/* ops->start: once, and not after stop; hooks->start does the work. */
int source_start(struct source *s);
/* ops->resync: hooks->resync unless stopped. */
void source_resync(struct source *s);
/* ops->stop, or its first part: source_abandon, and no write in flight. */
void source_stop(struct source *s);
/* ops->close of every source: stop, then close the handles. */
void source_close(struct source *s);

/* ---- steps ---- */

/* True while s is not stopped and nothing was abandoned since gen was read:
 * the test after every call out to the consumer. */
bool source_current(const struct source *s, unsigned gen);
/* Drop whatever step is in flight, silently: the request, the file read,
 * the timer, and what hooks->abandon drops. */
void source_abandon(struct source *s);
void source_timer_arm(struct source *s, uint64_t ms);
void source_timer_disarm(struct source *s);
/* A step failed for reason fmt: hooks->failed with SOURCE_FAULT_UNREACHABLE. */
void source_fail(struct source *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The wait before the next try: jittered exponential backoff on the
 * failures so far, which then count one more. */
uint64_t source_retry_delay(struct source *s, uint64_t base_ms, uint64_t max_ms);

/* ---- requests ---- */

/* A request on the source's client with its TLS setup and timeouts; its user
 * data is s. NULL on ENOMEM. */
struct http_req *source_request(struct source *s, const char *method, const char *url,
                                long total_ms, long connect_ms);
/* Add the header line "name: value" whose value is a secret (the line is
 * wiped once the request has copied it). Returns 0 or -1. */
int source_header_secret(struct http_req *r, const char *name, const char *value);
/* Start r as the step in flight (s->req). Returns 0, or -1 with r freed. */
int source_step_start(struct source *s, struct http_req *r, http_done_cb done);
/* First thing in a step's done callback: the step is over. False when the
 * transfer itself failed, after failing the source with "<what>: <error>". */
bool source_step_done(struct source *s, const struct http_result *res, const char *what_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Read a secret file (setting names it: "source.token_file") without
 * blocking. done gets the content, wiped after it returns; a file that
 * cannot be read fails the source, naming setting and file. Returns 0, or
 * -1 when the read could not start (the source has failed already). */
int source_read_file(struct source *s, const char *setting, const char *file,
                     void (*done)(struct source *s, const char *data, size_t len));

/* ---- telling the consumer ---- */

/* Mark the source down: true when this begins an outage (tell the
 * consumer), false when one goes on. */
bool source_went_down(struct source *s);
void source_report_down(struct source *s, const char *reason);
/* Up again: clear the outage, tell the consumer. False when the consumer
 * stopped or redirected the source from its callback. */
bool source_report_up(struct source *s);
bool source_emit_snapshot(struct source *s, const struct source_kv *kvs, size_t n, uint64_t rev);
bool source_emit_event(struct source *s, enum source_event_type type, const struct source_kv *kv,
                       uint64_t rev);

/* Why a full read is under way, for the log. */
enum source_list_reason { SOURCE_LIST_INITIAL, SOURCE_LIST_COMPACTED, SOURCE_LIST_RESYNC };
const char *source_list_reason_name(enum source_list_reason why);

/* ---- status writes in flight ---- */

struct source_put {
    struct list_node link; /* on s->puts, or an implementation's queue */
    struct source *s;
    struct http_req *req; /* NULL until sent (or while waiting to be sent again) */
    char *key;
    char *value; /* NUL-terminated copy, wiped when freed (may be freed once sent) */
    size_t len;
    bool retried;
    source_put_cb done;
    void *user;
};

/* A write of key = value[0..len), on no list yet. NULL when stopped or on
 * ENOMEM. */
struct source_put *source_put_new(struct source *s, const char *key, const char *value, size_t len,
                                  source_put_cb done, void *user);
/* A write that finished (or could not start): off its list, done(ok,
 * message), freed. */
void source_put_finish(struct source_put *p, bool ok, const char *message);
/* Off its list and freed, its request cancelled, without a callback. */
void source_put_free(struct source_put *p);
/* source_put_free every write on the list. */
void source_puts_drop(struct list_node *list);

/* ---- messages ---- */

struct cJSON;
enum source_json_kind { SOURCE_JSON_OBJECT, SOURCE_JSON_ARRAY };
/* Parse a whole answer that must be a JSON object or array. NULL with err
 * set ("<what> is not a JSON object") otherwise; cJSON_Delete the result. */
struct cJSON *source_json_parse(const char *json, size_t len, enum source_json_kind kind,
                                const char *what, char *err, size_t errlen);

/* Format into err, bounded; nothing when err is NULL or errlen is 0. */
void source_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copy text[0..len) into msg for a message: control bytes become spaces,
 * trailing spaces go, cut to fit. */
void source_copy_text(char *msg, size_t msglen, const char *text, size_t len);

#endif
