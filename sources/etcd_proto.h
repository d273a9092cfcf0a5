/* etcd_proto.h - the pure, unit-testable parts of the etcd v3 source.
 *
 * The etcd source (etcd.c) talks to etcd's JSON gRPC gateway: POST
 * /v3/kv/range to list a prefix, then a streaming POST /v3/watch whose body is
 * a sequence of JSON messages, one per line. Everything here is free of I/O
 * so it can be tested byte by byte: the line framer for that stream, base64
 * (keys and values are `bytes` fields), the prefix range end, request bodies,
 * and the parsers for range and watch responses and error bodies.
 *
 * JSON mapping reminders (grpc-gateway v1, OrigName): snake_case names,
 * int64 values are JSON strings, zero/empty fields are omitted. */
#ifndef CB_ETCD_PROTO_H
#define CB_ETCD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/lib/buf.h"
#include "sources/source.h"

/* Largest single watch message we accept (etcd's own default request limit
 * is 1.5 MiB; a response carrying many events can be larger). */
#define ETCD_MAX_MESSAGE ((size_t)64 * 1024 * 1024)

/* ---- prefix range ---- */

/* The range_end that selects every key starting with key[0..len): the key
 * with its last byte below 0xff incremented and the rest dropped; "\0" (one
 * NUL byte, "all keys >= key") when there is no such byte. Heap result. */
int etcd_prefix_end(const char *key, size_t len, char **out, size_t *outlen);

/* ---- watch stream framing ---- */

enum { ETCD_STREAM_TOO_BIG = -1, ETCD_STREAM_NOMEM = -2 };

/* Splits a byte stream into '\n'-terminated messages. Chunks may break
 * anywhere; a trailing "\r" is dropped and empty lines are skipped. */
struct etcd_stream {
    /* read-only */
    size_t max_msg;
    /* private */
    buf_t partial; /* bytes of the message not yet terminated */
};

/* Called once per complete message. msg is valid only during the call and is
 * not NUL-terminated. Return 0 to go on; any other value stops the feed and
 * is returned by etcd_stream_feed (the rest of that chunk is dropped). */
typedef int (*etcd_msg_cb)(void *user, const char *msg, size_t len);

void etcd_stream_init(struct etcd_stream *st, size_t max_msg);
void etcd_stream_reset(struct etcd_stream *st);
void etcd_stream_free(struct etcd_stream *st);
/* Returns 0, the callback's non-zero value, ETCD_STREAM_TOO_BIG when a
 * message exceeds max_msg bytes, or ETCD_STREAM_NOMEM. */
int etcd_stream_feed(struct etcd_stream *st, const char *data, size_t len, etcd_msg_cb cb,
                     void *user);
/* Bytes received after the last newline (e.g. an HTTP error body). */
const char *etcd_stream_rest(const struct etcd_stream *st, size_t *len);

/* ---- request bodies (heap JSON strings, NULL on ENOMEM) ---- */

/* Range over [key, end); limit 0 = no limit; revision 0 = latest. */
char *etcd_range_body(const char *key, size_t klen, const char *end, size_t elen, int64_t limit,
                      int64_t revision);
/* Watch create_request from start_revision (0 = "now"), progress_notify on. */
char *etcd_watch_body(const char *key, size_t klen, const char *end, size_t elen,
                      int64_t start_revision);
char *etcd_put_body(const char *key, size_t klen, const char *value, size_t vlen);
char *etcd_auth_body(const char *name, const char *password);

/* ---- responses ---- */

struct etcd_kv {
    char *key; /* decoded, NUL-terminated */
    size_t key_len;
    char *value; /* decoded, NUL-terminated; "" when omitted */
    size_t value_len;
    int64_t create_revision, mod_revision, version, lease;
};

/* A range result; etcd_range_parse APPENDS to kvs so pages accumulate. */
struct etcd_range {
    int64_t revision; /* header.revision of the last page parsed */
    struct etcd_kv *kvs;
    size_t n, cap;
    bool more;
    int64_t count;
};

int etcd_range_parse(const char *json, size_t len, struct etcd_range *out, char *err,
                     size_t errlen);
void etcd_range_free(struct etcd_range *r);

struct etcd_event {
    enum source_event_type type;
    struct etcd_kv kv;
};

/* One watch stream message: either {"result":{WatchResponse}} or
 * {"error":{grpc_code,http_code,message,http_status}}. */
struct etcd_watch_msg {
    bool is_error;
    int grpc_code;
    int http_code;
    char *message; /* error message, or NULL */

    int64_t revision; /* header.revision */
    int64_t watch_id;
    bool created, canceled, fragment;
    int64_t compact_revision;
    char *cancel_reason; /* or NULL */
    struct etcd_event *events;
    size_t n_events;
};

int etcd_watch_parse(const char *json, size_t len, struct etcd_watch_msg *out, char *err,
                     size_t errlen);
void etcd_watch_msg_free(struct etcd_watch_msg *m);
/* A progress notification: only a header, meaning "caught up to revision". */
bool etcd_watch_is_progress(const struct etcd_watch_msg *m);

/* Parse an authenticate response; returns a heap token or NULL. */
char *etcd_auth_token_parse(const char *json, size_t len);

enum etcd_err_kind {
    ETCD_ERR_OTHER,
    ETCD_ERR_COMPACTED, /* the requested revision is gone: re-list */
    ETCD_ERR_AUTH,      /* token missing/expired or auth store moved: re-authenticate */
};

/* Classify a failure from its HTTP status and error text (a JSON error body
 * like {"error":"...","message":"...","code":11}, or a plain message). The
 * message found, or a summary, goes into msg. */
enum etcd_err_kind etcd_error_classify(long status, const char *body, size_t len, char *msg,
                                       size_t msglen);

#endif
