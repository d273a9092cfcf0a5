/* test_etcd.c - unit tests for the etcd source's pure parts (sources/etcd_proto.h)
 * and an end-to-end run of the source and the HTTP client against an
 * in-process fake etcd gateway.
 *
 * The pure tests pin down the wire details that are easy to get subtly wrong:
 * stream framing at every possible chunk boundary, base64, prefix range ends
 * with 0xff bytes, proto3-JSON quirks (omitted zero fields, int64 as strings,
 * PUT events without a type). The fake-server test drives the real libuv +
 * libcurl path through pagination, events, a dropped stream, resumption from
 * the last revision, compaction and re-list, and stopping from a callback. */
/* cmocka.h needs these three before it. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/base64.h"
#include "bridge/lib/http.h"
#include "bridge/lib/timer.h"
#include "sources/etcd_proto.h"

#include "fakehttp.h"

/* ---- base64 ---- */

static void test_b64_vectors(void **state) {
    (void)state;
    /* RFC 4648 section 10. */
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char *e = base64_encode(plain[i], strlen(plain[i]));
        assert_non_null(e);
        assert_string_equal(e, enc[i]);
        free(e);
        char *d;
        size_t dlen;
        assert_int_equal(base64_decode(enc[i], strlen(enc[i]), BASE64_PAD_OPTIONAL, &d, &dlen), 0);
        assert_int_equal(dlen, strlen(plain[i]));
        assert_memory_equal(d, plain[i], dlen);
        assert_int_equal(d[dlen], '\0');
        free(d);
    }
}

static void test_b64_binary_roundtrip(void **state) {
    (void)state;
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    for (size_t len = 0; len <= sizeof all; len += 37) {
        char *e = base64_encode(all, len);
        assert_non_null(e);
        assert_int_equal(strlen(e), (len + 2) / 3 * 4);
        char *d;
        size_t dlen;
        assert_int_equal(base64_decode(e, strlen(e), BASE64_PAD_OPTIONAL, &d, &dlen), 0);
        assert_int_equal(dlen, len);
        assert_memory_equal(d, all, len);
        free(d);
        free(e);
    }
}

static void test_b64_decode_rejects(void **state) {
    (void)state;
    char *d;
    size_t dlen;
    /* Unpadded input is accepted (some writers drop padding). */
    assert_int_equal(base64_decode("Zm8", 3, BASE64_PAD_OPTIONAL, &d, &dlen), 0);
    assert_int_equal(dlen, 2);
    assert_memory_equal(d, "fo", 2);
    free(d);
    assert_int_equal(base64_decode("Zm9v!A==", 8, BASE64_PAD_OPTIONAL, &d, &dlen), -1);
    assert_null(d);
    assert_int_equal(base64_decode("Z", 1, BASE64_PAD_OPTIONAL, &d, &dlen),
                     -1); /* impossible length */
    assert_int_equal(base64_decode("Zm8==", 5, BASE64_PAD_OPTIONAL, &d, &dlen),
                     -1); /* wrong padding */
    assert_int_equal(base64_decode("Zm=v", 4, BASE64_PAD_OPTIONAL, &d, &dlen), -1); /* '=' inside */
    assert_int_equal(base64_decode("Zm9v\n", 5, BASE64_PAD_OPTIONAL, &d, &dlen),
                     -1); /* whitespace */
    assert_int_equal(base64_decode("Zm-_", 4, BASE64_PAD_OPTIONAL, &d, &dlen),
                     -1); /* URL alphabet */
}

/* ---- prefix range end ---- */

static void check_end(const char *key, size_t klen, const char *want, size_t wlen) {
    char *end;
    size_t elen;
    assert_int_equal(etcd_prefix_end(key, klen, &end, &elen), 0);
    assert_int_equal(elen, wlen);
    assert_memory_equal(end, want, wlen);
    free(end);
}

static void test_prefix_end(void **state) {
    (void)state;
    check_end("canary/", 7, "canary0", 7);
    check_end("a", 1, "b", 1);
    check_end("a\xff", 2, "b", 1);
    check_end("ab\xff\xff", 4, "ac", 2);
    check_end("a\xfe", 2, "a\xff", 2);
    check_end("\xff\xff", 2, "\0", 1); /* nothing to increment: from-key */
    check_end("", 0, "\0", 1);
    check_end("x\0", 2, "x\x01", 2); /* NUL is an ordinary byte */
}

/* ---- stream framing ---- */

struct collected {
    char msgs[16][128];
    size_t n;
    int stop_after; /* return 7 after this many messages; 0 = never */
};

static int collect(void *user, const char *msg, size_t len) {
    struct collected *c = user;
    assert_true(c->n < 16);
    assert_true(len < sizeof c->msgs[0]);
    memcpy(c->msgs[c->n], msg, len);
    c->msgs[c->n][len] = '\0';
    c->n++;
    return c->stop_after && (int)c->n == c->stop_after ? 7 : 0;
}

static const char stream3[] = "{\"result\":{\"created\":true}}\n"
                              "{\"result\":{\"events\":[]}}\r\n"
                              "\n"
                              "{\"error\":{\"message\":\"x\"}}\n";

static void check_three(const struct collected *c) {
    assert_int_equal(c->n, 3);
    assert_string_equal(c->msgs[0], "{\"result\":{\"created\":true}}");
    assert_string_equal(c->msgs[1], "{\"result\":{\"events\":[]}}");
    assert_string_equal(c->msgs[2], "{\"error\":{\"message\":\"x\"}}");
}

static void test_stream_every_split(void **state) {
    (void)state;
    size_t len = strlen(stream3);
    /* Every pair of cut points: three chunks, any of them possibly empty. */
    for (size_t i = 0; i <= len; i++) {
        for (size_t j = i; j <= len; j++) {
            struct etcd_stream st;
            etcd_stream_init(&st, 1024);
            struct collected c = {.n = 0};
            assert_int_equal(etcd_stream_feed(&st, stream3, i, collect, &c), 0);
            assert_int_equal(etcd_stream_feed(&st, stream3 + i, j - i, collect, &c), 0);
            assert_int_equal(etcd_stream_feed(&st, stream3 + j, len - j, collect, &c), 0);
            check_three(&c);
            size_t rest;
            etcd_stream_rest(&st, &rest);
            assert_int_equal(rest, 0);
            etcd_stream_free(&st);
        }
    }
}

static void test_stream_byte_at_a_time(void **state) {
    (void)state;
    struct etcd_stream st;
    etcd_stream_init(&st, 1024);
    struct collected c = {.n = 0};
    for (size_t i = 0; stream3[i]; i++)
        assert_int_equal(etcd_stream_feed(&st, stream3 + i, 1, collect, &c), 0);
    check_three(&c);
    etcd_stream_free(&st);
}

static void test_stream_partial_rest(void **state) {
    (void)state;
    struct etcd_stream st;
    etcd_stream_init(&st, 1024);
    struct collected c = {.n = 0};
    const char data[] = "{\"a\":1}\n{\"error\":\"compacted\"}";
    assert_int_equal(etcd_stream_feed(&st, data, strlen(data), collect, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.msgs[0], "{\"a\":1}");
    size_t rest;
    const char *r = etcd_stream_rest(&st, &rest);
    assert_int_equal(rest, strlen("{\"error\":\"compacted\"}"));
    assert_memory_equal(r, "{\"error\":\"compacted\"}", rest);
    etcd_stream_reset(&st);
    etcd_stream_rest(&st, &rest);
    assert_int_equal(rest, 0);
    etcd_stream_free(&st);
}

static void test_stream_oversize(void **state) {
    (void)state;
    struct etcd_stream st;
    etcd_stream_init(&st, 10);
    struct collected c = {.n = 0};
    /* Exactly the limit is fine, in one chunk or assembled from pieces. */
    assert_int_equal(etcd_stream_feed(&st, "0123456789\n", 11, collect, &c), 0);
    assert_int_equal(etcd_stream_feed(&st, "01234", 5, collect, &c), 0);
    assert_int_equal(etcd_stream_feed(&st, "56789\n", 6, collect, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.msgs[1], "0123456789");
    /* One byte more is refused, whether it arrives whole or in pieces, and
     * even before its newline shows up. */
    assert_int_equal(etcd_stream_feed(&st, "0123456789A\n", 12, collect, &c), ETCD_STREAM_TOO_BIG);
    etcd_stream_reset(&st);
    assert_int_equal(etcd_stream_feed(&st, "012345", 6, collect, &c), 0);
    assert_int_equal(etcd_stream_feed(&st, "6789A", 5, collect, &c), ETCD_STREAM_TOO_BIG);
    assert_int_equal(c.n, 2);
    etcd_stream_free(&st);
}

static void test_stream_callback_stops(void **state) {
    (void)state;
    struct etcd_stream st;
    etcd_stream_init(&st, 1024);
    struct collected c = {.n = 0, .stop_after = 2};
    assert_int_equal(etcd_stream_feed(&st, stream3, strlen(stream3), collect, &c), 7);
    assert_int_equal(c.n, 2);
    etcd_stream_free(&st);
}

/* ---- request bodies ---- */

static char *b64_field(const cJSON *obj, const char *name, size_t *len) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    assert_true(cJSON_IsString(it));
    char *out;
    assert_int_equal(
        base64_decode(it->valuestring, strlen(it->valuestring), BASE64_PAD_OPTIONAL, &out, len), 0);
    return out;
}

static void test_request_bodies(void **state) {
    (void)state;
    char *body = etcd_range_body("canary/a\0", 9, "canary0", 7, 1000, 42);
    assert_non_null(body);
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    size_t len;
    char *k = b64_field(j, "key", &len);
    assert_int_equal(len, 9);
    assert_memory_equal(k, "canary/a\0", 9);
    free(k);
    char *e = b64_field(j, "range_end", &len);
    assert_int_equal(len, 7);
    assert_memory_equal(e, "canary0", 7);
    free(e);
    /* int64 as strings, like the gateway's own output. */
    assert_string_equal(cJSON_GetObjectItem(j, "limit")->valuestring, "1000");
    assert_string_equal(cJSON_GetObjectItem(j, "revision")->valuestring, "42");
    cJSON_Delete(j);
    free(body);

    body = etcd_range_body("p", 1, "q", 1, 0, 0);
    j = cJSON_Parse(body);
    assert_null(cJSON_GetObjectItem(j, "limit"));
    assert_null(cJSON_GetObjectItem(j, "revision"));
    cJSON_Delete(j);
    free(body);

    body = etcd_watch_body("canary/", 7, "canary0", 7, 1234);
    j = cJSON_Parse(body);
    const cJSON *cr = cJSON_GetObjectItem(j, "create_request");
    assert_non_null(cr);
    assert_string_equal(cJSON_GetObjectItem(cr, "start_revision")->valuestring, "1234");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cr, "progress_notify")));
    assert_null(cJSON_GetObjectItem(cr, "prev_kv"));
    cJSON_Delete(j);
    free(body);

    body = etcd_put_body("k", 1, "v\0w", 3);
    j = cJSON_Parse(body);
    char *v = b64_field(j, "value", &len);
    assert_int_equal(len, 3);
    assert_memory_equal(v, "v\0w", 3);
    free(v);
    cJSON_Delete(j);
    free(body);

    body = etcd_auth_body("root", "p\"w");
    j = cJSON_Parse(body);
    assert_string_equal(cJSON_GetObjectItem(j, "name")->valuestring, "root");
    assert_string_equal(cJSON_GetObjectItem(j, "password")->valuestring, "p\"w");
    cJSON_Delete(j);
    free(body);
}

/* ---- range responses ---- */

#define HDR                                                                                        \
    "\"header\":{\"cluster_id\":\"14841639068965178418\",\"member_id\":\"10276657743932975437\","

static void test_range_parse(void **state) {
    (void)state;
    /* As etcd 3.4 sends it: strings for int64, value/lease omitted when
     * empty/zero, count present. */
    const char *page = "{" HDR "\"revision\":\"57\",\"raft_term\":\"2\"},"
                       "\"kvs\":[{\"key\":\"Y2FuYXJ5L2EvYi93ZWlnaHRz\",\"create_revision\":\"3\","
                       "\"mod_revision\":\"9\",\"version\":\"4\",\"value\":\"djE9OTA=\"},"
                       "{\"key\":\"Y2FuYXJ5L2EvYy9lbXB0eQ==\",\"create_revision\":\"5\","
                       "\"mod_revision\":\"5\",\"version\":\"1\"}],"
                       "\"more\":true,\"count\":\"3\"}";
    struct etcd_range r;
    memset(&r, 0, sizeof r);
    char err[128];
    assert_int_equal(etcd_range_parse(page, strlen(page), &r, err, sizeof err), 0);
    assert_int_equal(r.revision, 57);
    assert_true(r.more);
    assert_int_equal(r.count, 3);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.kvs[0].key, "canary/a/b/weights");
    assert_int_equal(r.kvs[0].value_len, 5);
    assert_string_equal(r.kvs[0].value, "v1=90");
    assert_int_equal(r.kvs[0].mod_revision, 9);
    assert_int_equal(r.kvs[0].create_revision, 3);
    assert_int_equal(r.kvs[0].version, 4);
    assert_int_equal(r.kvs[0].lease, 0);
    assert_string_equal(r.kvs[1].key, "canary/a/c/empty");
    assert_int_equal(r.kvs[1].value_len, 0); /* omitted value = empty */
    assert_string_equal(r.kvs[1].value, "");

    /* A second page appends; `more` and `count` omitted mean false / 0;
     * numbers are accepted where strings are usual. */
    const char *page2 = "{\"header\":{\"revision\":58},\"kvs\":[{\"key\":\"Y2FuYXJ5L3o=\","
                        "\"mod_revision\":\"11\",\"value\":\"AP8=\"}]}";
    assert_int_equal(etcd_range_parse(page2, strlen(page2), &r, err, sizeof err), 0);
    assert_int_equal(r.n, 3);
    assert_false(r.more);
    assert_int_equal(r.count, 0);
    assert_int_equal(r.revision, 58);
    assert_string_equal(r.kvs[2].key, "canary/z");
    assert_int_equal(r.kvs[2].value_len, 2);
    assert_memory_equal(r.kvs[2].value, "\x00\xff", 2);
    etcd_range_free(&r);
    assert_int_equal(r.n, 0);
    assert_null(r.kvs);

    /* An empty prefix: no kvs at all, just the header. */
    const char *empty = "{" HDR "\"revision\":\"7\",\"raft_term\":\"2\"}}";
    assert_int_equal(etcd_range_parse(empty, strlen(empty), &r, err, sizeof err), 0);
    assert_int_equal(r.n, 0);
    assert_int_equal(r.revision, 7);
    etcd_range_free(&r);
}

static void test_range_parse_errors(void **state) {
    (void)state;
    struct etcd_range r;
    memset(&r, 0, sizeof r);
    char err[128];
    const char *bad[] = {
        "not json",
        "[]",
        "{\"kvs\":[]}",                                                     /* no header.revision */
        "{\"header\":{\"revision\":\"x1\"}}",                               /* not an integer */
        "{\"header\":{\"revision\":\"5\"},\"kvs\":{}}",                     /* kvs not an array */
        "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"value\":\"AA==\"}]}", /* no key */
        "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"***\"}]}",    /* bad base64 */
        "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"YQ==\",\"mod_revision\":1.5}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(etcd_range_parse(bad[i], strlen(bad[i]), &r, err, sizeof err), -1);
        assert_true(err[0] != '\0');
        assert_int_equal(r.n, 0);
    }
    /* A page that fails half way leaves earlier pages intact. */
    const char *good = "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"YQ==\"}]}";
    assert_int_equal(etcd_range_parse(good, strlen(good), &r, err, sizeof err), 0);
    const char *half = "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"Yg==\"},{\"key\":1}]}";
    assert_int_equal(etcd_range_parse(half, strlen(half), &r, err, sizeof err), -1);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.kvs[0].key, "a");
    etcd_range_free(&r);
}

/* ---- watch responses ---- */

static void parse_ok(const char *json, struct etcd_watch_msg *m) {
    char err[128] = "";
    int rc = etcd_watch_parse(json, strlen(json), m, err, sizeof err);
    if (rc != 0)
        fail_msg("parse failed: %s", err);
}

static void test_watch_created(void **state) {
    (void)state;
    struct etcd_watch_msg m;
    parse_ok("{\"result\":{" HDR "\"revision\":\"12\",\"raft_term\":\"2\"},\"created\":true}}", &m);
    assert_false(m.is_error);
    assert_true(m.created);
    assert_false(m.canceled);
    assert_int_equal(m.watch_id, 0); /* omitted for the first watcher */
    assert_int_equal(m.revision, 12);
    assert_int_equal(m.n_events, 0);
    assert_false(etcd_watch_is_progress(&m));
    etcd_watch_msg_free(&m);
}

static void test_watch_events(void **state) {
    (void)state;
    struct etcd_watch_msg m;
    /* PUT has no "type"; the DELETE's kv has only key and mod_revision. */
    parse_ok("{\"result\":{\"header\":{\"revision\":\"14\"},\"events\":["
             "{\"kv\":{\"key\":\"Y2FuYXJ5L2EvYi93ZWlnaHRz\",\"create_revision\":\"13\","
             "\"mod_revision\":\"13\",\"version\":\"1\",\"value\":\"eD0x\"}},"
             "{\"type\":\"DELETE\",\"kv\":{\"key\":\"Y2FuYXJ5L2EvYi9yb3V0ZQ==\","
             "\"mod_revision\":\"14\"}},"
             "{\"type\":\"PUT\",\"kv\":{\"key\":\"YQ==\",\"mod_revision\":\"14\"}}]}}",
             &m);
    assert_int_equal(m.n_events, 3);
    assert_int_equal(m.events[0].type, SOURCE_PUT);
    assert_string_equal(m.events[0].kv.key, "canary/a/b/weights");
    assert_string_equal(m.events[0].kv.value, "x=1");
    assert_int_equal(m.events[0].kv.mod_revision, 13);
    assert_int_equal(m.events[0].kv.version, 1);
    assert_int_equal(m.events[1].type, SOURCE_DELETE);
    assert_string_equal(m.events[1].kv.key, "canary/a/b/route");
    assert_int_equal(m.events[1].kv.mod_revision, 14);
    assert_int_equal(m.events[1].kv.value_len, 0);
    assert_int_equal(m.events[1].kv.create_revision, 0);
    assert_int_equal(m.events[2].type, SOURCE_PUT);
    assert_int_equal(m.events[2].kv.value_len, 0); /* a PUT of an empty value */
    assert_false(etcd_watch_is_progress(&m));
    etcd_watch_msg_free(&m);
}

static void test_watch_progress(void **state) {
    (void)state;
    struct etcd_watch_msg m;
    parse_ok("{\"result\":{" HDR "\"revision\":\"99\",\"raft_term\":\"3\"}}}", &m);
    assert_true(etcd_watch_is_progress(&m));
    assert_int_equal(m.revision, 99);
    etcd_watch_msg_free(&m);
}

static void test_watch_compacted(void **state) {
    (void)state;
    struct etcd_watch_msg m;
    parse_ok("{\"result\":{\"header\":{\"revision\":\"40\"},\"compact_revision\":\"31\","
             "\"canceled\":true}}",
             &m);
    assert_true(m.canceled);
    assert_int_equal(m.compact_revision, 31);
    assert_null(m.cancel_reason);
    assert_false(etcd_watch_is_progress(&m));
    etcd_watch_msg_free(&m);

    /* Expired token on create: created and canceled at once, watch_id -1. */
    parse_ok("{\"result\":{\"header\":{\"revision\":\"40\"},\"watch_id\":\"-1\",\"created\":true,"
             "\"canceled\":true,\"cancel_reason\":\"rpc error: code = Unauthenticated desc = "
             "etcdserver: invalid auth token\"}}",
             &m);
    assert_true(m.created);
    assert_true(m.canceled);
    assert_int_equal(m.watch_id, -1);
    assert_non_null(m.cancel_reason);
    assert_int_equal(etcd_error_classify(0, m.cancel_reason, strlen(m.cancel_reason), NULL, 0),
                     ETCD_ERR_AUTH);
    etcd_watch_msg_free(&m);
}

static void test_watch_error(void **state) {
    (void)state;
    struct etcd_watch_msg m;
    parse_ok("{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no "
             "leader\",\"http_status\":\"Service Unavailable\"}}",
             &m);
    assert_true(m.is_error);
    assert_int_equal(m.grpc_code, 14);
    assert_int_equal(m.http_code, 503);
    assert_string_equal(m.message, "etcdserver: no leader");
    assert_int_equal(m.n_events, 0);
    assert_false(etcd_watch_is_progress(&m));
    etcd_watch_msg_free(&m);

    char err[128];
    const char *bad[] = {
        "{}",
        "[1]",
        "{\"result\":[]}",
        ("{\"result\":{\"events\":[{\"type\":\"MOVE\",\"kv\":"
         "{\"key\":\"YQ==\"}}]}}"), /* one literal, split for width */
        "{\"result\":{\"events\":[{\"kv\":{}}]}}",
        "{\"result\":{\"events\":{}}}",
        "{\"resu",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(etcd_watch_parse(bad[i], strlen(bad[i]), &m, err, sizeof err), -1);
        assert_true(err[0] != '\0');
        assert_int_equal(m.n_events, 0);
        assert_null(m.events);
    }
}

static void test_error_classify(void **state) {
    (void)state;
    char msg[256];
    const char *compacted = "{\"error\":\"etcdserver: mvcc: required revision has been "
                            "compacted\",\"message\":\"etcdserver: mvcc: required revision has "
                            "been compacted\",\"code\":11}";
    assert_int_equal(etcd_error_classify(400, compacted, strlen(compacted), msg, sizeof msg),
                     ETCD_ERR_COMPACTED);
    assert_string_equal(msg, "HTTP 400: etcdserver: mvcc: required revision has been compacted");

    const char *tok = "{\"error\":\"etcdserver: invalid auth token\",\"message\":\"etcdserver: "
                      "invalid auth token\",\"code\":16}";
    assert_int_equal(etcd_error_classify(401, tok, strlen(tok), msg, sizeof msg), ETCD_ERR_AUTH);
    const char *old = "{\"message\":\"etcdserver: revision of auth store is old\",\"code\":3}";
    assert_int_equal(etcd_error_classify(400, old, strlen(old), msg, sizeof msg), ETCD_ERR_AUTH);
    /* A bare 401, with no body, still means "authenticate again". */
    assert_int_equal(etcd_error_classify(401, "", 0, msg, sizeof msg), ETCD_ERR_AUTH);
    assert_string_equal(msg, "HTTP 401: no details");

    const char *denied = "{\"error\":\"etcdserver: permission denied\",\"code\":7}";
    assert_int_equal(etcd_error_classify(403, denied, strlen(denied), msg, sizeof msg),
                     ETCD_ERR_OTHER);
    assert_string_equal(msg, "HTTP 403: etcdserver: permission denied");
    /* Non-JSON bodies are quoted with control characters folded. */
    const char *html = "<html>\r\nBad Gateway</html>";
    assert_int_equal(etcd_error_classify(502, html, strlen(html), msg, sizeof msg), ETCD_ERR_OTHER);
    assert_string_equal(msg, "HTTP 502: <html>  Bad Gateway</html>");
}

static void test_auth_token_parse(void **state) {
    (void)state;
    const char *ok = "{\"header\":{\"revision\":\"3\"},\"token\":\"abcDEF.12\"}";
    char *t = etcd_auth_token_parse(ok, strlen(ok));
    assert_non_null(t);
    assert_string_equal(t, "abcDEF.12");
    free(t);
    assert_null(etcd_auth_token_parse("{\"header\":{}}", 13));
    assert_null(etcd_auth_token_parse("{\"token\":\"\"}", 12));
    assert_null(etcd_auth_token_parse("nope", 4));
}

static void test_http_result_header(void **state) {
    (void)state;
    struct http_result res = {0};
    res.headers = "HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\n"
                  "X-Etcd-Index: 12\r\nx-empty:\r\n\r\n";
    char v[64];
    assert_int_equal(http_result_header(&res, "content-type", v, sizeof v), 0);
    assert_string_equal(v, "application/json");
    assert_int_equal(http_result_header(&res, "X-ETCD-INDEX", v, sizeof v), 0);
    assert_string_equal(v, "12");
    assert_int_equal(http_result_header(&res, "X-Empty", v, sizeof v), 0);
    assert_string_equal(v, "");
    assert_int_equal(http_result_header(&res, "Content", v, sizeof v), -1);
    char small[4];
    assert_int_equal(http_result_header(&res, "Content-Type", small, sizeof small), 0);
    assert_string_equal(small, "app");
}

/* ======================================================================
 * End to end against a fake etcd gateway (fakehttp.h)
 * ====================================================================== */

/* What the consumer saw, in order, as one line per callback. */
struct fake {
    uv_loop_t *loop;
    struct fakehttp srv;
    int step; /* index of the next request expected */
    struct logger log;
    struct source_settings cfg;
    char *endpoints[1];
    char url[64];
    struct http_client *http;
    struct source *src;
    uv_timer_t deadline;
    buf_t seen;
    bool done;
    /* Answers one request; the etcd script or the plain HTTP one. */
    void (*dispatch)(struct fake *f, struct fakehttp_conn *c, const char *method, const char *path,
                     const char *body);
    struct http_req *stream_req, *slow_req;
    const char *head; /* the header block of the request being dispatched */
};

/* Hand a request to the test's script, its header block at hand. */
static void fake_serve(struct fakehttp *srv, struct fakehttp_conn *c,
                       const struct fakehttp_req *rq) {
    struct fake *f = srv->data;
    f->head = rq->head;
    f->dispatch(f, c, rq->method, rq->target, rq->body);
    f->head = NULL;
}

static char *kv_json(const char *key, const char *value, int rev) {
    char *k = base64_encode(key, strlen(key));
    char *v = base64_encode(value, strlen(value));
    char *out = malloc(256);
    assert_non_null(out);
    snprintf(out, 256, "{\"key\":\"%s\",\"mod_revision\":\"%d\",\"value\":\"%s\"}", k, rev, v);
    free(k);
    free(v);
    return out;
}

static char *event_put(const char *key, const char *value, int rev) {
    char *kv = kv_json(key, value, rev);
    char *out = malloc(512);
    assert_non_null(out);
    snprintf(out, 512, "{\"result\":{\"header\":{\"revision\":\"%d\"},\"events\":[{\"kv\":%s}]}}\n",
             rev, kv);
    free(kv);
    return out;
}

/* Decode a base64 field of the request and compare. */
static void expect_b64(const cJSON *obj, const char *name, const char *want, size_t wlen) {
    size_t len;
    char *got = b64_field(obj, name, &len);
    assert_int_equal(len, wlen);
    assert_memory_equal(got, want, wlen);
    free(got);
}

static void expect_int(const cJSON *obj, const char *name, const char *want) {
    const cJSON *it = cJSON_GetObjectItem(obj, name);
    if (!want) {
        assert_null(it);
        return;
    }
    assert_non_null(it);
    assert_string_equal(it->valuestring, want);
}

/* The script: each request the source should make, and what etcd answers. */
static void fake_dispatch(struct fake *f, struct fakehttp_conn *c, const char *method,
                          const char *path, const char *body) {
    assert_string_equal(method, "POST");
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    const cJSON *cr = cJSON_GetObjectItem(j, "create_request");
    int step = f->step++;
    switch (step) {
    case 0: /* first page, latest revision */
        assert_string_equal(path, "/v3/kv/range");
        expect_b64(j, "key", "canary/", 7);
        expect_b64(j, "range_end", "canary0", 7);
        expect_int(j, "revision", NULL);
        expect_int(j, "limit", "1000");
        {
            char *a = kv_json("canary/a", "1", 5);
            char resp[512];
            snprintf(
                resp, sizeof resp,
                "{\"header\":{\"revision\":\"10\"},\"kvs\":[%s],\"more\":true,\"count\":\"2\"}", a);
            free(a);
            fakehttp_send_json(c, 200, resp);
        }
        break;
    case 1: /* second page: after the last key, pinned to revision 10 */
        assert_string_equal(path, "/v3/kv/range");
        expect_b64(j, "key", "canary/a\0", 9);
        expect_int(j, "revision", "10");
        {
            char *b = kv_json("canary/b", "2", 7);
            char resp[512];
            snprintf(resp, sizeof resp,
                     "{\"header\":{\"revision\":\"12\"},\"kvs\":[%s],\"count\":\"1\"}", b);
            free(b);
            fakehttp_send_json(c, 200, resp);
        }
        break;
    case 2: { /* watch from 11: created, two events (one split across chunks),
               * a progress notify, then the server ends the stream. */
        assert_string_equal(path, "/v3/watch");
        assert_non_null(cr);
        expect_int(cr, "start_revision", "11");
        /* The watch requires a leader (clientv3's WithRequireLeader). */
        assert_non_null(strcasestr(f->head, "\r\nGrpc-Metadata-hasleader: true\r\n"));
        expect_b64(cr, "key", "canary/", 7);
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c,
                              "{\"result\":{\"header\":{\"revision\":\"12\"},\"created\":true}}\n");
        char *e1 = event_put("canary/c", "3", 11);
        size_t half = strlen(e1) / 2;
        char first[512];
        memcpy(first, e1, half);
        first[half] = '\0';
        fakehttp_stream_chunk(c, first);
        fakehttp_stream_chunk(c, e1 + half);
        free(e1);
        fakehttp_stream_chunk(
            c, "{\"result\":{\"header\":{\"revision\":\"12\"},\"events\":[{\"type\":"
               "\"DELETE\",\"kv\":{\"key\":\"Y2FuYXJ5L2E=\",\"mod_revision\":\"12\"}}]}}\n");
        fakehttp_stream_chunk(c, "{\"result\":{\"header\":{\"revision\":\"15\"}}}\n");
        fakehttp_printf(c, "0\r\n\r\n");
        break;
    }
    case 3: /* reconnect: resume after the progress notify, no re-list */
        assert_string_equal(path, "/v3/watch");
        expect_int(cr, "start_revision", "16");
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c,
                              "{\"result\":{\"header\":{\"revision\":\"30\"},\"created\":true}}\n");
        fakehttp_stream_chunk(
            c, "{\"result\":{\"header\":{\"revision\":\"30\"},\"compact_revision\":\"20\","
               "\"canceled\":true}}\n");
        break;
    case 4: /* compacted: full re-list at the newest revision */
        assert_string_equal(path, "/v3/kv/range");
        expect_int(j, "revision", NULL);
        {
            char *b = kv_json("canary/b", "22", 22);
            char resp[512];
            snprintf(resp, sizeof resp, "{\"header\":{\"revision\":\"25\"},\"kvs\":[%s]}", b);
            free(b);
            fakehttp_send_json(c, 200, resp);
        }
        break;
    case 5: { /* watch again after the new snapshot; one event, then the
               * connection drops mid-stream (a second, separate outage) */
        assert_string_equal(path, "/v3/watch");
        expect_int(cr, "start_revision", "26");
        fakehttp_stream_start(c);
        char *e = event_put("canary/d", "4", 26);
        buf_t both = BUF_INIT;
        assert_int_equal(
            buf_printf(&both,
                       "{\"result\":{\"header\":{\"revision\":\"25\"},\"created\":true}}\n%s", e),
            0);
        fakehttp_stream_chunk(c, both.data);
        buf_free(&both);
        free(e);
        fakehttp_end(c);
        break;
    }
    case 6: /* resume after the event; the test stops on the next one */
        assert_string_equal(path, "/v3/watch");
        expect_int(cr, "start_revision", "27");
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c,
                              "{\"result\":{\"header\":{\"revision\":\"26\"},\"created\":true}}\n");
        {
            char *e = event_put("canary/e", "5", 27);
            fakehttp_stream_chunk(c, e);
            free(e);
        }
        break;
    default: fail_msg("unexpected request %d to %s", step, path);
    }
    cJSON_Delete(j);
}

static void noop_closed(uv_handle_t *h) {
    (void)h;
}

/* Stop everything from inside a source callback (i.e. from inside curl's
 * write callback): exercises the deferred cancel and close paths. */
static void fake_finish(struct fake *f) {
    if (f->done)
        return;
    f->done = true;
    if (f->src)
        f->src->ops->close(f->src); /* freed as the loop runs on */
    http_client_close(f->http);
    fakehttp_close(&f->srv);
    uv_close((uv_handle_t *)&f->deadline, noop_closed);
}

static void fake_on_snapshot(void *user, const struct source_kv *kvs, size_t n, uint64_t rev) {
    struct fake *f = user;
    buf_printf(&f->seen, "snapshot %llu:", (unsigned long long)rev);
    for (size_t i = 0; i < n; i++)
        buf_printf(&f->seen, " %s=%s@%llu", kvs[i].key, kvs[i].value,
                   (unsigned long long)kvs[i].revision);
    buf_puts(&f->seen, "\n");
}

static void fake_on_event(void *user, enum source_event_type t, const struct source_kv *kv,
                          uint64_t rev) {
    struct fake *f = user;
    buf_printf(&f->seen, "%s %s=%s@%llu\n", t == SOURCE_PUT ? "put" : "delete", kv->key, kv->value,
               (unsigned long long)rev);
    if (rev == 27)
        fake_finish(f);
}

static void fake_on_state(void *user, bool up, const char *reason) {
    struct fake *f = user;
    buf_printf(&f->seen, "%s\n", up ? "up" : "down");
    (void)reason;
}

static void fake_deadline(uv_timer_t *t) {
    struct fake *f = t->data;
    fake_finish(f);
    fail_msg("fake etcd test timed out at step %d; seen:\n%s", f->step,
             f->seen.data ? f->seen.data : "");
}

static void test_source_pages_resumes_and_relists_after_compaction(void **state) {
    (void)state;
    struct fake f;
    memset(&f, 0, sizeof f);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    f.loop = &loop;
    f.dispatch = fake_dispatch;
    fakehttp_start(&f.srv, &loop, fake_serve, &f);

    /* Keep the expected warnings out of the test output, but look at them. */
    FILE *logf = tmpfile();
    assert_non_null(logf);
    logger_init(&f.log, LOG_LVL_INFO);
    f.log.journal = false;
    f.log.out = logf;
    snprintf(f.url, sizeof f.url, "http://127.0.0.1:%d/", f.srv.port);
    f.endpoints[0] = f.url;
    f.cfg.type = SOURCE_ETCD;
    f.cfg.endpoints = f.endpoints;
    f.cfg.n_endpoints = 1;
    f.cfg.prefix = "canary/";

    f.http = http_client_new(&loop, &f.log);
    assert_non_null(f.http);
    struct source_callbacks cb = {fake_on_snapshot, fake_on_event, fake_on_state, &f};
    char err[128];
    f.src = source_new(&loop, f.http, &f.log, &f.cfg, &cb, err, sizeof err);
    assert_non_null(f.src);
    assert_string_equal(f.src->ops->name, "etcd");
    assert_int_equal(uv_timer_init(&loop, &f.deadline), 0);
    f.deadline.data = &f;
    timer_arm(&f.deadline, fake_deadline, 5000, 0);

    assert_int_equal(f.src->ops->start(f.src), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    /* Every handle, including the client's and the source's, is closed. */
    assert_int_equal(uv_loop_close(&loop), 0);

    assert_int_equal(f.step, 7);
    assert_string_equal(f.seen.data, "snapshot 10: canary/a=1@5 canary/b=2@7\n"
                                     "up\n"
                                     "put canary/c=3@11\n"
                                     "delete canary/a=@12\n"
                                     "down\n"
                                     "up\n"
                                     "snapshot 25: canary/b=22@22\n"
                                     "put canary/d=4@26\n"
                                     "down\n"
                                     "up\n"
                                     "put canary/e=5@27\n");

    /* Each outage was logged once as a warning, the compaction as info. */
    rewind(logf);
    char line[1024];
    int warns = 0, compaction = 0;
    while (fgets(line, sizeof line, logf)) {
        if (strstr(line, " warn "))
            warns++;
        if (strstr(line, "compact revision 20") && strstr(line, "re-listing"))
            compaction++;
    }
    fclose(logf);
    assert_int_equal(warns, 2);
    assert_int_equal(compaction, 1);
    buf_free(&f.seen);
}

/* ---- the liveness check of the watched member ----
 * The watch stays open but the member stops answering (frozen): the status
 * request that checks it gets no answer, so the source drops the watch,
 * reports the outage and watches again from the last revision + 1. */

static void probe_dispatch(struct fake *f, struct fakehttp_conn *c, const char *method,
                           const char *path, const char *body) {
    assert_string_equal(method, "POST");
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    const cJSON *cr = cJSON_GetObjectItem(j, "create_request");
    int step = f->step++;
    switch (step) {
    case 0:
        assert_string_equal(path, "/v3/kv/range");
        fakehttp_send_json(c, 200, "{\"header\":{\"revision\":\"25\"}}");
        break;
    case 1:   /* the watch; an event, then silence */
    case 4: { /* watched again after the failed check: resumes, no re-list */
        assert_string_equal(path, "/v3/watch");
        assert_non_null(strcasestr(f->head, "\r\nGrpc-Metadata-hasleader: true\r\n"));
        expect_int(cr, "start_revision", step == 1 ? "26" : "27");
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c,
                              "{\"result\":{\"header\":{\"revision\":\"25\"},\"created\":true}}\n");
        char *e = step == 1 ? event_put("canary/x", "1", 26) : event_put("canary/y", "2", 27);
        fakehttp_stream_chunk(c, e);
        free(e);
        break;
    }
    case 2: /* the first check is answered */
        assert_string_equal(path, "/v3/maintenance/status");
        fakehttp_send_json(c, 200, "{\"header\":{\"revision\":\"26\"},\"version\":\"3.4.23\"}");
        break;
    case 3: /* the second is not: the member froze */
        assert_string_equal(path, "/v3/maintenance/status");
        break;
    default: fail_msg("unexpected request %d to %s", step, path);
    }
    cJSON_Delete(j);
}

static void test_liveness_check_moves_off_a_frozen_member(void **state) {
    (void)state;
    struct fake f;
    memset(&f, 0, sizeof f);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    f.loop = &loop;
    f.dispatch = probe_dispatch;
    fakehttp_start(&f.srv, &loop, fake_serve, &f);
    FILE *logf = tmpfile();
    assert_non_null(logf);
    logger_init(&f.log, LOG_LVL_INFO);
    f.log.journal = false;
    f.log.out = logf;
    snprintf(f.url, sizeof f.url, "http://127.0.0.1:%d", f.srv.port);
    f.endpoints[0] = f.url;
    f.cfg.type = SOURCE_ETCD;
    f.cfg.endpoints = f.endpoints;
    f.cfg.n_endpoints = 1;
    f.cfg.prefix = "canary/";
    f.cfg.liveness_ms = 300;
    f.http = http_client_new(&loop, &f.log);
    assert_non_null(f.http);
    struct source_callbacks cb = {fake_on_snapshot, fake_on_event, fake_on_state, &f};
    char err[128];
    f.src = source_new(&loop, f.http, &f.log, &f.cfg, &cb, err, sizeof err);
    assert_non_null(f.src);
    assert_int_equal(uv_timer_init(&loop, &f.deadline), 0);
    f.deadline.data = &f;
    timer_arm(&f.deadline, fake_deadline, 10000, 0);

    assert_int_equal(f.src->ops->start(f.src), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);

    assert_int_equal(f.step, 5);
    assert_string_equal(f.seen.data, "snapshot 25:\n"
                                     "up\n"
                                     "put canary/x=1@26\n"
                                     "down\n"
                                     "up\n"
                                     "put canary/y=2@27\n");
    rewind(logf);
    char line[1024];
    int probe_warns = 0;
    while (fgets(line, sizeof line, logf))
        if (strstr(line, " warn ") && strstr(line, "did not answer the liveness check"))
            probe_warns++;
    fclose(logf);
    assert_int_equal(probe_warns, 1);
    buf_free(&f.seen);
}

/* ---- the HTTP client's re-entrancy rules, on the same fake server ---- */

static void http_dispatch(struct fake *f, struct fakehttp_conn *c, const char *method,
                          const char *path, const char *body) {
    (void)f;
    assert_string_equal(method, strcmp(path, "/put") == 0 ? "PUT" : "GET");
    if (strcmp(path, "/stream") == 0) {
        fakehttp_stream_start(c);
        fakehttp_stream_chunk(c, "tick\n");
    } else if (strcmp(path, "/slow") == 0) {
        /* never answered */
    } else if (strcmp(path, "/ok") == 0) {
        fakehttp_printf(c, "HTTP/1.1 200 OK\r\nX-Test:  yes \r\nContent-Length: 5\r\n\r\nhello");
    } else if (strcmp(path, "/put") == 0) {
        assert_string_equal(body, "{\"a\":1}");
        fakehttp_printf(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 7\r\n\r\nmissing");
    } else {
        fail_msg("unexpected path %s", path);
    }
}

static void http_never_done(struct http_req *r, const struct http_result *res) {
    (void)r;
    (void)res;
    fail_msg("a cancelled request reported completion");
}

static void http_put_done(struct http_req *r, const struct http_result *res) {
    struct fake *f = http_req_user(r);
    assert_int_equal(res->curl, CURLE_OK);
    assert_int_equal(res->status, 404);
    assert_string_equal(res->body, "missing");
    buf_puts(&f->seen, "put-done\n");
    /* Closing the client from a done callback: nothing else may run. */
    f->done = true;
    http_client_close(f->http);
    fakehttp_close(&f->srv);
    uv_close((uv_handle_t *)&f->deadline, noop_closed);
}

static void http_ok_done(struct http_req *r, const struct http_result *res) {
    struct fake *f = http_req_user(r);
    assert_int_equal(res->curl, CURLE_OK);
    assert_string_equal(res->error, "");
    assert_int_equal(res->status, 200);
    assert_int_equal(res->body_len, 5);
    assert_string_equal(res->body, "hello");
    char v[16];
    assert_int_equal(http_result_header(res, "x-test", v, sizeof v), 0);
    assert_string_equal(v, "yes");
    buf_puts(&f->seen, "ok-done\n");
    /* Starting a request from a done callback. */
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/put", f->srv.port);
    struct http_req *d = http_req_new(f->http, "PUT", url);
    assert_non_null(d);
    assert_int_equal(http_req_header(d, "Content-Type: application/json"), 0);
    assert_int_equal(http_req_body(d, "{\"a\":1}", 7), 0);
    http_req_set_user(d, f);
    assert_int_equal(http_req_start(d, http_put_done), 0);
}

static int http_stream_data(struct http_req *r, const char *data, size_t len) {
    struct fake *f = http_req_user(r);
    assert_true(len > 0);
    (void)data;
    buf_puts(&f->seen, "data\n");
    /* Inside curl: start another request, cancel a different one, then
     * cancel this very one. All must be deferred safely. */
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", f->srv.port);
    struct http_req *c = http_req_new(f->http, "GET", url);
    assert_non_null(c);
    http_req_set_user(c, f);
    http_req_timeouts(c, 2000, 1000);
    assert_int_equal(http_req_start(c, http_ok_done), 0);
    assert_int_equal(http_client_active(f->http), 3);
    http_req_cancel(f->slow_req);
    http_req_cancel(r);
    assert_int_equal(http_client_active(f->http), 3); /* still inside curl */
    return 0;
}

static void test_http_reentrancy(void **state) {
    (void)state;
    struct fake f;
    memset(&f, 0, sizeof f);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    f.loop = &loop;
    f.dispatch = http_dispatch;
    fakehttp_start(&f.srv, &loop, fake_serve, &f);
    logger_init(&f.log, LOG_LVL_WARN);
    f.http = http_client_new(&loop, &f.log);
    assert_non_null(f.http);
    assert_int_equal(uv_timer_init(&loop, &f.deadline), 0);
    f.deadline.data = &f;
    timer_arm(&f.deadline, fake_deadline, 5000, 0);

    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/slow", f.srv.port);
    f.slow_req = http_req_new(f.http, "GET", url);
    assert_non_null(f.slow_req);
    http_req_set_user(f.slow_req, &f);
    assert_int_equal(http_req_start(f.slow_req, http_never_done), 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stream", f.srv.port);
    f.stream_req = http_req_new(f.http, "GET", url);
    assert_non_null(f.stream_req);
    http_req_set_user(f.stream_req, &f);
    http_req_on_data(f.stream_req, http_stream_data);
    assert_int_equal(http_req_start(f.stream_req, http_never_done), 0);
    assert_int_equal(http_client_active(f.http), 2);
    /* A request that is never started is the caller's to free. */
    struct http_req *unused = http_req_new(f.http, "GET", url);
    assert_non_null(unused);
    http_req_free(unused);

    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_string_equal(f.seen.data, "data\nok-done\nput-done\n");
    buf_free(&f.seen);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_vectors),
        cmocka_unit_test(test_b64_binary_roundtrip),
        cmocka_unit_test(test_b64_decode_rejects),
        cmocka_unit_test(test_prefix_end),
        cmocka_unit_test(test_stream_every_split),
        cmocka_unit_test(test_stream_byte_at_a_time),
        cmocka_unit_test(test_stream_partial_rest),
        cmocka_unit_test(test_stream_oversize),
        cmocka_unit_test(test_stream_callback_stops),
        cmocka_unit_test(test_request_bodies),
        cmocka_unit_test(test_range_parse),
        cmocka_unit_test(test_range_parse_errors),
        cmocka_unit_test(test_watch_created),
        cmocka_unit_test(test_watch_events),
        cmocka_unit_test(test_watch_progress),
        cmocka_unit_test(test_watch_compacted),
        cmocka_unit_test(test_watch_error),
        cmocka_unit_test(test_error_classify),
        cmocka_unit_test(test_auth_token_parse),
        cmocka_unit_test(test_http_result_header),
        cmocka_unit_test(test_source_pages_resumes_and_relists_after_compaction),
        cmocka_unit_test(test_liveness_check_moves_off_a_frozen_member),
        cmocka_unit_test(test_http_reentrancy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
