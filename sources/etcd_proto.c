/* etcd_proto.c - the etcd v3 gateway's wire format, free of I/O: the watch
 * stream's line framer, the prefix range end, request bodies, and the
 * parsers for range, watch, authenticate and error answers (etcd_proto.h).
 * The connection state machine that uses them is etcd.c. */
#include "sources/etcd_proto.h"

#include "bridge/lib/base64.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int etcd_prefix_end(const char *key, size_t len, char **out, size_t *outlen) {
    *out = NULL;
    *outlen = 0;
    size_t i = len;
    while (i > 0 && (unsigned char)key[i - 1] == 0xff)
        i--;
    char *end = malloc(i > 0 ? i + 1 : 2);
    if (!end)
        return -1;
    if (i == 0) {
        /* No byte can be incremented: "\0" means every key >= key. */
        end[0] = '\0';
        end[1] = '\0';
        *out = end;
        *outlen = 1;
        return 0;
    }
    memcpy(end, key, i);
    end[i - 1] = (char)((unsigned char)end[i - 1] + 1);
    end[i] = '\0';
    *out = end;
    *outlen = i;
    return 0;
}

void etcd_stream_init(struct etcd_stream *st, size_t max_msg) {
    buf_t empty = BUF_INIT;
    st->partial = empty;
    st->max_msg = max_msg;
}

void etcd_stream_reset(struct etcd_stream *st) {
    buf_reset(&st->partial);
}

void etcd_stream_free(struct etcd_stream *st) {
    buf_free(&st->partial);
}

int etcd_stream_feed(struct etcd_stream *st, const char *data, size_t len, etcd_msg_cb cb,
                     void *user) {
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        if (take > st->max_msg || st->partial.len > st->max_msg - take)
            return ETCD_STREAM_TOO_BIG;
        if (!nl)
            return buf_append(&st->partial, data, take) < 0 ? ETCD_STREAM_NOMEM : 0;
        /* A message wholly inside this chunk is handed over in place; only
         * one that straddles chunks is assembled in the partial buffer. */
        const char *msg = data;
        size_t mlen = take;
        if (st->partial.len > 0) {
            if (buf_append(&st->partial, data, take) < 0)
                return ETCD_STREAM_NOMEM;
            msg = st->partial.data;
            mlen = st->partial.len;
        }
        data = nl + 1;
        len -= take + 1;
        if (mlen > 0 && msg[mlen - 1] == '\r')
            mlen--;
        int rc = mlen > 0 ? cb(user, msg, mlen) : 0;
        /* Done with the message either way; the callback may have reset the
         * stream itself, which makes this a no-op. */
        buf_reset(&st->partial);
        if (rc != 0)
            return rc;
    }
    return 0;
}

const char *etcd_stream_rest(const struct etcd_stream *st, size_t *len) {
    *len = st->partial.len;
    return st->partial.data ? st->partial.data : "";
}

/* ---- JSON helpers ---- */

/* int64 fields are JSON strings in the gateway's output, but accept numbers
 * too. Absent or null means zero, as proto3 omits defaults. */
static int json_i64(const cJSON *obj, const char *name, int64_t *out) {
    *out = 0;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it || cJSON_IsNull(it))
        return 0;
    if (cJSON_IsString(it)) {
        const char *s = it->valuestring;
        if (!*s)
            return 0;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || *end != '\0' || end == s)
            return -1;
        *out = (int64_t)v;
        return 0;
    }
    if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;
        if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != (double)(int64_t)d)
            return -1;
        *out = (int64_t)d;
        return 0;
    }
    return -1;
}

static bool json_true(const cJSON *obj, const char *name) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, name));
}

static const char *json_string(const cJSON *obj, const char *name) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static char *json_print(cJSON *root) {
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

static bool json_add_b64(cJSON *obj, const char *name, const char *data, size_t len) {
    char *b = base64_encode(data, len);
    if (!b)
        return false;
    bool ok = cJSON_AddStringToObject(obj, name, b) != NULL;
    free(b);
    return ok;
}

static bool json_add_i64(cJSON *obj, const char *name, int64_t v) {
    char num[24];
    snprintf(num, sizeof num, "%" PRId64, v);
    return cJSON_AddStringToObject(obj, name, num) != NULL;
}

char *etcd_range_body(const char *key, size_t klen, const char *end, size_t elen, int64_t limit,
                      int64_t revision) {
    cJSON *root = cJSON_CreateObject();
    if (!root || !json_add_b64(root, "key", key, klen) ||
        !json_add_b64(root, "range_end", end, elen) ||
        (limit > 0 && !json_add_i64(root, "limit", limit)) ||
        (revision > 0 && !json_add_i64(root, "revision", revision))) {
        cJSON_Delete(root);
        return NULL;
    }
    return json_print(root);
}

char *etcd_watch_body(const char *key, size_t klen, const char *end, size_t elen,
                      int64_t start_revision) {
    cJSON *root = cJSON_CreateObject();
    cJSON *cr = cJSON_AddObjectToObject(root, "create_request");
    if (!cr || !json_add_b64(cr, "key", key, klen) || !json_add_b64(cr, "range_end", end, elen) ||
        (start_revision > 0 && !json_add_i64(cr, "start_revision", start_revision)) ||
        !cJSON_AddBoolToObject(cr, "progress_notify", 1)) {
        cJSON_Delete(root);
        return NULL;
    }
    return json_print(root);
}

char *etcd_put_body(const char *key, size_t klen, const char *value, size_t vlen) {
    cJSON *root = cJSON_CreateObject();
    if (!root || !json_add_b64(root, "key", key, klen) ||
        !json_add_b64(root, "value", value, vlen)) {
        cJSON_Delete(root);
        return NULL;
    }
    return json_print(root);
}

char *etcd_auth_body(const char *name, const char *password) {
    cJSON *root = cJSON_CreateObject();
    if (!root || !cJSON_AddStringToObject(root, "name", name) ||
        !cJSON_AddStringToObject(root, "password", password)) {
        cJSON_Delete(root);
        return NULL;
    }
    char *s = cJSON_PrintUnformatted(root);
    /* cJSON_Delete does not wipe; the password is in the tree. */
    cJSON *pw = cJSON_GetObjectItemCaseSensitive(root, "password");
    if (pw && pw->valuestring)
        explicit_bzero(pw->valuestring, strlen(pw->valuestring));
    cJSON_Delete(root);
    return s;
}

static void kv_free(struct etcd_kv *kv) {
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

static int kv_parse(const cJSON *j, struct etcd_kv *kv, char *err, size_t errlen) {
    memset(kv, 0, sizeof *kv);
    if (!cJSON_IsObject(j)) {
        source_set_err(err, errlen, "kv is not an object");
        return -1;
    }
    const char *key = json_string(j, "key");
    const char *value = json_string(j, "value");
    if (!key) {
        source_set_err(err, errlen, "kv without key");
        return -1;
    }
    if (base64_decode(key, strlen(key), BASE64_PAD_OPTIONAL, &kv->key, &kv->key_len) < 0) {
        source_set_err(err, errlen, "kv key is not base64");
        return -1;
    }
    if (base64_decode(value ? value : "", value ? strlen(value) : 0, BASE64_PAD_OPTIONAL,
                      &kv->value, &kv->value_len) < 0) {
        source_set_err(err, errlen, "kv value is not base64");
        kv_free(kv);
        return -1;
    }
    if (json_i64(j, "create_revision", &kv->create_revision) < 0 ||
        json_i64(j, "mod_revision", &kv->mod_revision) < 0 ||
        json_i64(j, "version", &kv->version) < 0 || json_i64(j, "lease", &kv->lease) < 0) {
        source_set_err(err, errlen, "kv has a malformed integer");
        kv_free(kv);
        return -1;
    }
    return 0;
}

static int header_revision(const cJSON *root, int64_t *rev) {
    *rev = 0;
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "header");
    if (!h)
        return 0;
    if (!cJSON_IsObject(h))
        return -1;
    return json_i64(h, "revision", rev);
}

int etcd_range_parse(const char *json, size_t len, struct etcd_range *out, char *err,
                     size_t errlen) {
    cJSON *root = source_json_parse(json, len, SOURCE_JSON_OBJECT, "range response", err, errlen);
    if (!root)
        return -1;
    int64_t rev;
    if (header_revision(root, &rev) < 0 || rev <= 0) {
        source_set_err(err, errlen, "range response without header.revision");
        cJSON_Delete(root);
        return -1;
    }
    const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(root, "kvs");
    if (kvs && !cJSON_IsArray(kvs) && !cJSON_IsNull(kvs)) {
        source_set_err(err, errlen, "range response kvs is not an array");
        cJSON_Delete(root);
        return -1;
    }
    int64_t count;
    if (json_i64(root, "count", &count) < 0) {
        source_set_err(err, errlen, "range response has a malformed count");
        cJSON_Delete(root);
        return -1;
    }
    size_t n = cJSON_IsArray(kvs) ? (size_t)cJSON_GetArraySize(kvs) : 0;
    if (n > out->cap - out->n) {
        size_t cap = out->cap ? out->cap : 16;
        while (cap - out->n < n)
            cap *= 2;
        struct etcd_kv *p = realloc(out->kvs, cap * sizeof *p);
        if (!p) {
            source_set_err(err, errlen, "out of memory");
            cJSON_Delete(root);
            return -1;
        }
        out->kvs = p;
        out->cap = cap;
    }
    size_t added = 0;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, kvs) {
        if (kv_parse(kv, &out->kvs[out->n + added], err, errlen) < 0) {
            for (size_t i = 0; i < added; i++)
                kv_free(&out->kvs[out->n + i]);
            cJSON_Delete(root);
            return -1;
        }
        added++;
    }
    out->n += added;
    out->revision = rev;
    out->more = json_true(root, "more");
    out->count = count;
    cJSON_Delete(root);
    return 0;
}

void etcd_range_free(struct etcd_range *r) {
    for (size_t i = 0; i < r->n; i++)
        kv_free(&r->kvs[i]);
    free(r->kvs);
    memset(r, 0, sizeof *r);
}

static int watch_parse_error(const cJSON *e, struct etcd_watch_msg *out, char *err, size_t errlen) {
    out->is_error = true;
    const char *msg = NULL;
    if (cJSON_IsString(e)) {
        msg = e->valuestring;
    } else if (cJSON_IsObject(e)) {
        int64_t grpc, http;
        if (json_i64(e, "grpc_code", &grpc) < 0 || json_i64(e, "http_code", &http) < 0) {
            source_set_err(err, errlen, "watch error has malformed codes");
            return -1;
        }
        out->grpc_code = (int)grpc;
        out->http_code = (int)http;
        msg = json_string(e, "message");
    } else {
        source_set_err(err, errlen, "watch error is neither object nor string");
        return -1;
    }
    out->message = strdup(msg ? msg : "unknown error");
    if (!out->message) {
        source_set_err(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int watch_parse_result(const cJSON *res, struct etcd_watch_msg *out, char *err,
                              size_t errlen) {
    if (!cJSON_IsObject(res)) {
        source_set_err(err, errlen, "watch result is not an object");
        return -1;
    }
    if (header_revision(res, &out->revision) < 0 || json_i64(res, "watch_id", &out->watch_id) < 0 ||
        json_i64(res, "compact_revision", &out->compact_revision) < 0) {
        source_set_err(err, errlen, "watch result has a malformed integer");
        return -1;
    }
    out->created = json_true(res, "created");
    out->canceled = json_true(res, "canceled");
    out->fragment = json_true(res, "fragment");
    const char *reason = json_string(res, "cancel_reason");
    if (reason && *reason && !(out->cancel_reason = strdup(reason))) {
        source_set_err(err, errlen, "out of memory");
        return -1;
    }
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(res, "events");
    if (!evs || cJSON_IsNull(evs))
        return 0;
    if (!cJSON_IsArray(evs)) {
        source_set_err(err, errlen, "watch events is not an array");
        return -1;
    }
    size_t n = (size_t)cJSON_GetArraySize(evs);
    if (n == 0)
        return 0;
    out->events = calloc(n, sizeof *out->events);
    if (!out->events) {
        source_set_err(err, errlen, "out of memory");
        return -1;
    }
    const cJSON *ev;
    cJSON_ArrayForEach(ev, evs) {
        struct etcd_event *e = &out->events[out->n_events];
        if (!cJSON_IsObject(ev)) {
            source_set_err(err, errlen, "watch event is not an object");
            return -1;
        }
        /* PUT is enum value 0, so proto3 JSON omits it. */
        const char *type = json_string(ev, "type");
        if (!type || strcmp(type, "PUT") == 0) {
            e->type = SOURCE_PUT;
        } else if (strcmp(type, "DELETE") == 0) {
            e->type = SOURCE_DELETE;
        } else {
            source_set_err(err, errlen, "unknown watch event type");
            return -1;
        }
        if (kv_parse(cJSON_GetObjectItemCaseSensitive(ev, "kv"), &e->kv, err, errlen) < 0)
            return -1;
        out->n_events++;
    }
    return 0;
}

int etcd_watch_parse(const char *json, size_t len, struct etcd_watch_msg *out, char *err,
                     size_t errlen) {
    memset(out, 0, sizeof *out);
    cJSON *root = source_json_parse(json, len, SOURCE_JSON_OBJECT, "watch message", err, errlen);
    if (!root)
        return -1;
    int rc;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "result");
    if (e && !cJSON_IsNull(e)) {
        rc = watch_parse_error(e, out, err, errlen);
    } else if (res) {
        rc = watch_parse_result(res, out, err, errlen);
    } else {
        source_set_err(err, errlen, "watch message has neither result nor error");
        rc = -1;
    }
    cJSON_Delete(root);
    if (rc < 0)
        etcd_watch_msg_free(out);
    return rc;
}

void etcd_watch_msg_free(struct etcd_watch_msg *m) {
    for (size_t i = 0; i < m->n_events; i++)
        kv_free(&m->events[i].kv);
    free(m->events);
    free(m->message);
    free(m->cancel_reason);
    memset(m, 0, sizeof *m);
}

bool etcd_watch_is_progress(const struct etcd_watch_msg *m) {
    return !m->is_error && m->n_events == 0 && !m->created && !m->canceled &&
           m->compact_revision == 0 && m->revision > 0;
}

char *etcd_auth_token_parse(const char *json, size_t len) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    const char *tok = cJSON_IsObject(root) ? json_string(root, "token") : NULL;
    char *out = tok && *tok ? strdup(tok) : NULL;
    if (tok)
        explicit_bzero((char *)tok, strlen(tok));
    cJSON_Delete(root);
    return out;
}

enum etcd_err_kind etcd_error_classify(long status, const char *body, size_t len, char *msg,
                                       size_t msglen) {
    char text[512];
    text[0] = '\0';
    cJSON *root = len ? cJSON_ParseWithLength(body, len) : NULL;
    if (cJSON_IsObject(root)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
        const char *m = json_string(root, "message");
        if (!m && cJSON_IsObject(e))
            m = json_string(e, "message");
        if (!m && cJSON_IsString(e))
            m = e->valuestring;
        if (m)
            source_copy_text(text, sizeof text, m, strlen(m));
    }
    cJSON_Delete(root);
    if (!text[0] && len)
        source_copy_text(text, sizeof text, body, len);
    if (!text[0])
        snprintf(text, sizeof text, "no details");

    enum etcd_err_kind kind = ETCD_ERR_OTHER;
    if (strstr(text, "required revision has been compacted"))
        kind = ETCD_ERR_COMPACTED;
    else if (status == 401 || strstr(text, "invalid auth token") ||
             strstr(text, "revision of auth store is old"))
        kind = ETCD_ERR_AUTH;
    if (msg && msglen) {
        if (status > 0)
            snprintf(msg, msglen, "HTTP %ld: %s", status, text);
        else
            snprintf(msg, msglen, "%s", text);
    }
    return kind;
}
