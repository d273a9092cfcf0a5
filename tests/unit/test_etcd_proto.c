/* test_etcd_proto.c - the etcd source's pure protocol code
 * (sources/etcd_proto.h), with no I/O.
 *
 * These tests pin down the wire details that are easy to get subtly wrong:
 * stream framing at every possible chunk boundary, prefix range ends with
 * 0xff bytes, the request bodies, proto3-JSON quirks in the answers (omitted
 * zero fields, int64 as strings, PUT events without a type), how an error
 * answer is classified and the auth token answer. The source itself, against
 * a fake etcd gateway, is tested in test_etcd.c. */
/* cmocka.h needs these three before it. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/base64.h"
#include "sources/etcd_proto.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
