/* test_consul_proto.c - the Consul source's pure protocol code
 * (sources/consul_proto.h), with no I/O.
 *
 * These tests pin down what is easy to get subtly wrong: key escaping in
 * URLs, the recurse answer's quirks (null Value, UI folders, unsorted keys),
 * the diff's order, Consul's index rules (backwards = reset, floor 1), the
 * churn refill period and the answers to a write. The source itself, against
 * a fake Consul agent, is tested in test_consul.c. */
/* cmocka.h needs these three before it. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sources/consul_proto.h"

/* ---- URLs ---- */

static void check_list_url(const char *want, const char *address, const char *prefix,
                           uint64_t index, uint64_t wait_ms, const char *dc, const char *mode) {
    char *u = consul_url_list(address, prefix, index, wait_ms, dc, mode);
    assert_non_null(u);
    assert_string_equal(u, want);
    free(u);
}

static void test_url_list(void **state) {
    (void)state;
    /* The first read: no index (index=0 would be wrong), no wait. */
    check_list_url("http://127.0.0.1:8500/v1/kv/canary/?recurse", "http://127.0.0.1:8500",
                   "canary/", 0, 300000, NULL, NULL);
    /* Trailing slashes of the address do not double. */
    check_list_url("http://h:8500/v1/kv/canary/?recurse&index=42&wait=300s", "http://h:8500//",
                   "canary/", 42, 300000, NULL, "default");
    check_list_url("http://h/v1/kv/canary/?recurse&index=1&wait=1500ms", "http://h", "canary/", 1,
                   1500, "", NULL);
    check_list_url("https://h/v1/kv/canary/?recurse&index=7&wait=10s&dc=dc%202%2Fx&stale",
                   "https://h", "canary/", 7, 10000, "dc 2/x", "stale");
    check_list_url("https://h/v1/kv/canary/?recurse&dc=east&consistent", "https://h", "canary/", 0,
                   10000, "east", "consistent");
    /* A prefix is a path: escaped like a key. */
    check_list_url("http://h/v1/kv/my%20canaries/?recurse", "http://h", "my canaries/", 0, 1000,
                   NULL, NULL);
}

static void test_url_key(void **state) {
    (void)state;
    char *u = consul_url_key("http://h:8500/", "canary/ns/shop-v1_x.y/status");
    assert_non_null(u);
    assert_string_equal(u, "http://h:8500/v1/kv/canary/ns/shop-v1_x.y/status");
    free(u);
    /* Everything outside [A-Za-z0-9._/-] is percent-encoded, byte by byte. */
    u = consul_url_key("http://h", "a b/\xc3\xbc?#%&+=~:@");
    assert_non_null(u);
    assert_string_equal(u, "http://h/v1/kv/a%20b/%C3%BC%3F%23%25%26%2B%3D%7E%3A%40");
    free(u);
}

static void test_address_redact(void **state) {
    (void)state;
    char out[128];
    consul_address_redact("https://user:pw@consul.example:8501/base", out, sizeof out);
    assert_string_equal(out, "https://consul.example:8501/base");
    consul_address_redact("http://127.0.0.1:8500", out, sizeof out);
    assert_string_equal(out, "http://127.0.0.1:8500");
    /* An '@' after the host is not credentials. */
    consul_address_redact("http://h/x@y", out, sizeof out);
    assert_string_equal(out, "http://h/x@y");
    char small[8];
    consul_address_redact("http://a:b@hostname", small, sizeof small);
    assert_string_equal(small, "http://");
}

/* ---- recurse answers ---- */

static void test_list_parse(void **state) {
    (void)state;
    /* Unsorted, with a UI folder (null Value), an empty value (null), a
     * missing Value, a value with a trailing newline as the UI stores it,
     * binary bytes, and entries without indexes or flags. */
    const char *json =
        "[{\"LockIndex\":0,\"Key\":\"canary/default/shop/weights\",\"Flags\":0,"
        "\"Value\":\"c2hvcC12MT05MCwgc2hvcC12Mj0xMAo=\",\"CreateIndex\":5,\"ModifyIndex\":9},"
        "{\"Key\":\"canary/default/\",\"Value\":null,\"CreateIndex\":3,\"ModifyIndex\":3},"
        "{\"Key\":\"canary/default/shop/headers\",\"Value\":null,\"ModifyIndex\":11,\"Flags\":7},"
        "{\"Key\":\"canary/a\"},"
        "{\"Key\":\"canary/bin\",\"Value\":\"AP8K\",\"ModifyIndex\":4,\"Session\":\"x\"}]";
    struct consul_list l;
    char err[128];
    assert_int_equal(consul_list_parse(json, strlen(json), &l, err, sizeof err), 0);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.kvs[0].key, "canary/a");
    assert_int_equal(l.kvs[0].value_len, 0);
    assert_string_equal(l.kvs[0].value, "");
    assert_int_equal(l.kvs[0].modify_index, 0);
    assert_string_equal(l.kvs[1].key, "canary/bin");
    assert_int_equal(l.kvs[1].value_len, 3);
    assert_memory_equal(l.kvs[1].value, "\0\xff\n", 3);
    assert_string_equal(l.kvs[2].key, "canary/default/shop/headers");
    assert_int_equal(l.kvs[2].value_len, 0);
    assert_int_equal(l.kvs[2].modify_index, 11);
    assert_int_equal(l.kvs[2].flags, 7);
    assert_string_equal(l.kvs[3].key, "canary/default/shop/weights");
    /* Bytes pass unchanged, trailing newline included. */
    assert_string_equal(l.kvs[3].value, "shop-v1=90, shop-v2=10\n");
    assert_int_equal(l.kvs[3].create_index, 5);
    assert_int_equal(l.kvs[3].modify_index, 9);
    assert_ptr_equal(consul_list_find(&l, "canary/default/shop/headers"), &l.kvs[2]);
    assert_ptr_equal(consul_list_find(&l, "canary/a"), &l.kvs[0]);
    assert_null(consul_list_find(&l, "canary/default/"));
    assert_null(consul_list_find(&l, "canary/zzz"));
    consul_list_free(&l);
    assert_null(l.kvs);

    assert_int_equal(consul_list_parse("[]", 2, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 0);
    consul_list_free(&l);
    /* Only folders: nothing. */
    const char *folders = "[{\"Key\":\"canary/\",\"Value\":null},{\"Key\":\"canary/x/\"}]";
    assert_int_equal(consul_list_parse(folders, strlen(folders), &l, err, sizeof err), 0);
    assert_int_equal(l.n, 0);
    consul_list_free(&l);
}

static void parse_fails(const char *json, const char *want_err) {
    struct consul_list l;
    char err[128] = "";
    assert_int_equal(consul_list_parse(json, strlen(json), &l, err, sizeof err), -1);
    assert_null(l.kvs);
    assert_int_equal(l.n, 0);
    if (!strstr(err, want_err))
        fail_msg("error '%s' does not mention '%s'", err, want_err);
}

static void test_list_parse_errors(void **state) {
    (void)state;
    parse_fails("{\"Key\":\"a\"}", "not a JSON array");
    parse_fails("[{\"Key\":\"a\"", "not a JSON array");
    parse_fails("", "not a JSON array");
    parse_fails("[{\"Key\":\"a\"},1]", "entry 1 is not an object");
    parse_fails("[{\"Value\":\"YQ==\"}]", "entry 0 has no Key");
    parse_fails("[{\"Key\":\"\"}]", "entry 0 has no Key");
    parse_fails("[{\"Key\":7}]", "entry 0 has no Key");
    parse_fails("[{\"Key\":\"a\",\"Value\":5}]", "Value is not a string");
    parse_fails("[{\"Key\":\"a\",\"Value\":\"!!!\"}]", "Value is not base64");
    parse_fails("[{\"Key\":\"a\",\"ModifyIndex\":\"9\"}]", "malformed index");
    parse_fails("[{\"Key\":\"a\",\"ModifyIndex\":-1}]", "malformed index");
    parse_fails("[{\"Key\":\"a\",\"ModifyIndex\":1.5}]", "malformed index");
    parse_fails("[{\"Key\":\"a\",\"Flags\":true}]", "malformed index or flags");
    parse_fails("[{\"Key\":\"a\",\"Flags\":-1}]", "malformed index or flags");
    parse_fails("[{\"Key\":\"a\",\"Flags\":1e20}]", "malformed index or flags");
    parse_fails("[{\"Key\":\"a\",\"ModifyIndex\":9007199254740994}]", "malformed index");
}

/* One odd key costs only itself: Flags are any uint64; two keys that differ
 * only in bytes that are not UTF-8 arrive with one name (U+FFFD) and are
 * left out, with a line naming them. */
static void test_list_parse_odd_keys(void **state) {
    (void)state;
    const char *json = "[{\"Key\":\"c/a\",\"Flags\":18446744073709551615,\"ModifyIndex\":3},"
                       "{\"Key\":\"c/x\\ufffd/w\",\"ModifyIndex\":4},"
                       "{\"Key\":\"c/b\",\"Flags\":3304740253564472344,\"ModifyIndex\":5},"
                       "{\"Key\":\"c/x\\ufffd/w\",\"ModifyIndex\":6},"
                       "{\"Key\":\"c/\\u0001\",\"ModifyIndex\":7},"
                       "{\"Key\":\"c/\\u0001\",\"ModifyIndex\":8},"
                       "{\"Key\":\"c/z\",\"ModifyIndex\":9}]";
    struct consul_list l;
    char err[128];
    assert_int_equal(consul_list_parse(json, strlen(json), &l, err, sizeof err), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.kvs[0].key, "c/a");
    assert_true(l.kvs[0].flags == UINT64_MAX);
    assert_string_equal(l.kvs[1].key, "c/b");
    assert_true(l.kvs[1].flags > (1ull << 53)); /* consul lock's flag, approximately */
    assert_string_equal(l.kvs[2].key, "c/z");
    assert_string_equal(l.warnings,
                        "ignoring key c/\\x01: 2 keys have this name in Consul's answer (keys "
                        "that differ only in bytes that are not UTF-8, which Consul's JSON shows "
                        "as U+FFFD); none of them is read\n"
                        "ignoring key c/x\xef\xbf\xbd/w: 2 keys have this name in Consul's answer "
                        "(keys that differ only in bytes that are not UTF-8, which Consul's JSON "
                        "shows as U+FFFD); none of them is read\n");
    consul_list_free(&l);
    assert_null(l.warnings);
    const char *plain = "[{\"Key\":\"a\"}]";
    assert_int_equal(consul_list_parse(plain, strlen(plain), &l, err, sizeof err), 0);
    assert_null(l.warnings);
    consul_list_free(&l);
}

/* ---- diff ---- */

static void make_list(struct consul_list *l, const char *json) {
    char err[128];
    if (consul_list_parse(json, strlen(json), l, err, sizeof err) < 0)
        fail_msg("bad test JSON: %s", err);
}

static void test_diff_orders_changes_by_index_then_key(void **state) {
    (void)state;
    struct consul_list old, cur;
    /* a unchanged, b modified, c deleted, d and e added; e before b by index. */
    make_list(&old, "[{\"Key\":\"a\",\"Value\":\"MQ==\",\"ModifyIndex\":5},"
                    "{\"Key\":\"b\",\"Value\":\"Mg==\",\"ModifyIndex\":6},"
                    "{\"Key\":\"c\",\"Value\":\"Mw==\",\"ModifyIndex\":7}]");
    make_list(&cur, "[{\"Key\":\"e\",\"Value\":\"NQ==\",\"ModifyIndex\":8},"
                    "{\"Key\":\"b\",\"Value\":\"MjI=\",\"ModifyIndex\":9},"
                    "{\"Key\":\"a\",\"Value\":\"MQ==\",\"ModifyIndex\":5},"
                    "{\"Key\":\"d\",\"Value\":\"NA==\",\"ModifyIndex\":8}]");
    struct consul_change *ch;
    size_t n;
    assert_int_equal(consul_diff(&old, &cur, 10, &ch, &n), 0);
    assert_int_equal(n, 4);
    /* By revision, then key: d@8, e@8, b@9, then the delete at the index. */
    assert_int_equal(ch[0].type, SOURCE_PUT);
    assert_string_equal(ch[0].kv->key, "d");
    assert_int_equal(ch[0].revision, 8);
    assert_string_equal(ch[1].kv->key, "e");
    assert_int_equal(ch[1].revision, 8);
    assert_int_equal(ch[2].type, SOURCE_PUT);
    assert_string_equal(ch[2].kv->key, "b");
    assert_string_equal(ch[2].kv->value, "22");
    assert_int_equal(ch[2].revision, 9);
    assert_int_equal(ch[3].type, SOURCE_DELETE);
    assert_string_equal(ch[3].kv->key, "c");
    assert_int_equal(ch[3].revision, 10);
    free(ch);

    /* The same answer again: nothing. */
    assert_int_equal(consul_diff(&cur, &cur, 10, &ch, &n), 0);
    assert_int_equal(n, 0);
    assert_null(ch);
    consul_list_free(&old);

    /* Same ModifyIndex, other bytes (a server that leaves indexes out): a
     * change. Same bytes, new ModifyIndex (an idempotent UI save): a change
     * too, as the revision the objects are annotated with moved. */
    make_list(&old, "[{\"Key\":\"a\",\"Value\":\"MQ==\",\"ModifyIndex\":5},"
                    "{\"Key\":\"b\",\"Value\":\"MjI=\"},"
                    "{\"Key\":\"d\",\"Value\":\"NA==\",\"ModifyIndex\":8},"
                    "{\"Key\":\"e\",\"Value\":\"NQ==\",\"ModifyIndex\":8}]");
    assert_int_equal(consul_diff(&old, &cur, 10, &ch, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(ch[0].kv->key, "b");
    free(ch);
    consul_list_free(&old);

    /* Everything gone (a 404): deletes in key order, all at the index. */
    struct consul_list empty = {NULL, 0, NULL};
    assert_int_equal(consul_diff(&cur, &empty, 12, &ch, &n), 0);
    assert_int_equal(n, 4);
    const char *keys[] = {"a", "b", "d", "e"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(ch[i].type, SOURCE_DELETE);
        assert_string_equal(ch[i].kv->key, keys[i]);
        assert_int_equal(ch[i].revision, 12);
    }
    free(ch);
    assert_int_equal(consul_diff(&empty, &empty, 12, &ch, &n), 0);
    assert_int_equal(n, 0);
    consul_list_free(&cur);
}

/* ---- indexes ---- */

static void test_list_drops_and_probe(void **state) {
    (void)state;
    struct consul_list a, b, empty = {NULL, 0, NULL};
    make_list(&a, "[{\"Key\":\"p/a\"},{\"Key\":\"p/b\"}]");
    make_list(&b, "[{\"Key\":\"p/a\"},{\"Key\":\"p/b\"},{\"Key\":\"p/c\"}]");
    assert_false(consul_list_drops(&a, &b));
    assert_true(consul_list_drops(&b, &a));
    assert_true(consul_list_drops(&a, &empty));
    assert_false(consul_list_drops(&empty, &a));
    assert_false(consul_list_drops(&a, &a));
    consul_list_free(&a);
    consul_list_free(&b);
    assert_int_equal(consul_probe_result(200), CONSUL_PROBE_READABLE);
    assert_int_equal(consul_probe_result(404), CONSUL_PROBE_READABLE);
    assert_int_equal(consul_probe_result(403), CONSUL_PROBE_DENIED);
    assert_int_equal(consul_probe_result(500), CONSUL_PROBE_ERROR);
    assert_int_equal(consul_probe_result(401), CONSUL_PROBE_ERROR);
}

static void test_index_rules(void **state) {
    (void)state;
    uint64_t v, next;
    assert_int_equal(consul_index_parse("12345", &v), 0);
    assert_int_equal(v, 12345);
    assert_int_equal(consul_index_parse("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(consul_index_parse("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(consul_index_parse("18446744073709551616", &v), -1);
    assert_int_equal(consul_index_parse("", &v), -1);
    assert_int_equal(consul_index_parse(NULL, &v), -1);
    assert_int_equal(consul_index_parse("-1", &v), -1);
    assert_int_equal(consul_index_parse("12a", &v), -1);
    assert_int_equal(consul_index_parse(" 12", &v), -1);

    assert_int_equal(consul_index_next(false, 0, 40, &next), CONSUL_INDEX_FIRST);
    assert_int_equal(next, 40);
    assert_int_equal(consul_index_next(true, 40, 40, &next), CONSUL_INDEX_SAME);
    assert_int_equal(next, 40);
    assert_int_equal(consul_index_next(true, 40, 41, &next), CONSUL_INDEX_FORWARD);
    assert_int_equal(next, 41);
    /* Backwards (snapshot restore): reset, and block on the new index. */
    assert_int_equal(consul_index_next(true, 40, 7, &next), CONSUL_INDEX_RESET);
    assert_int_equal(next, 7);
    /* Never block on 0, which answers at once. */
    assert_int_equal(consul_index_next(false, 0, 0, &next), CONSUL_INDEX_FIRST);
    assert_int_equal(next, 1);
    assert_int_equal(consul_index_next(true, 0, 0, &next), CONSUL_INDEX_SAME);
    assert_int_equal(next, 1);
    assert_int_equal(consul_index_next(true, 5, 0, &next), CONSUL_INDEX_RESET);
    assert_int_equal(next, 1);
}

/* ---- rate limiting ---- */

static void test_churn_refill(void **state) {
    (void)state;
    /* Ten times the cost, clamped. */
    assert_int_equal(consul_churn_refill_ms(0), CONSUL_CHURN_REFILL_MIN_MS);
    assert_int_equal(consul_churn_refill_ms(50), CONSUL_CHURN_REFILL_MIN_MS);
    assert_int_equal(consul_churn_refill_ms(200), 2);
    assert_int_equal(consul_churn_refill_ms(3000), 30);
    assert_int_equal(consul_churn_refill_ms(50000), 500);
    assert_int_equal(consul_churn_refill_ms(UINT64_MAX), CONSUL_CHURN_REFILL_MAX_MS);
}

/* ---- writes ---- */

static void test_put_result(void **state) {
    (void)state;
    char msg[256];
    assert_true(consul_put_result(200, "true", 4, "k", msg, sizeof msg));
    assert_string_equal(msg, "ok");
    assert_true(consul_put_result(200, "true\n", 5, "k", msg, sizeof msg));
    assert_false(consul_put_result(200, "false", 5, "canary/a/b/status", msg, sizeof msg));
    assert_string_equal(msg, "Consul did not apply the write of canary/a/b/status (it answered "
                             "false)");
    assert_false(consul_put_result(403, "Permission denied: token lacks 'key:write'", 41,
                                   "canary/a/b/status", msg, sizeof msg));
    assert_string_equal(msg, "permission denied writing canary/a/b/status");
    assert_false(consul_put_result(500, "rpc error:\nNo cluster leader", 28, "k", msg, sizeof msg));
    assert_string_equal(msg, "HTTP 500 writing k: rpc error: No cluster leader");
    assert_false(consul_put_result(413, "", 0, "k", msg, sizeof msg));
    assert_string_equal(msg, "HTTP 413 writing k");
    assert_false(consul_put_result(200, "", 0, "k", msg, sizeof msg));
    assert_string_equal(msg, "unexpected answer to the write of k: (empty)");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_list),
        cmocka_unit_test(test_url_key),
        cmocka_unit_test(test_address_redact),
        cmocka_unit_test(test_list_parse),
        cmocka_unit_test(test_list_parse_errors),
        cmocka_unit_test(test_list_parse_odd_keys),
        cmocka_unit_test(test_diff_orders_changes_by_index_then_key),
        cmocka_unit_test(test_list_drops_and_probe),
        cmocka_unit_test(test_index_rules),
        cmocka_unit_test(test_churn_refill),
        cmocka_unit_test(test_put_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
