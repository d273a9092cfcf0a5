/* test_value.c - value_parse / value_emit_yaml / value_get_int.
 *
 * Values are untrusted text from etcd or Consul, so besides the happy paths
 * (JSON and YAML, scalar typing) these tests pin every refusal: aliases,
 * depth, size, bad UTF-8, duplicate keys, several documents, NUL bytes, tags.
 * The emitter is checked by exact text for small cases and by round trip
 * (emit, parse again, compare) for tricky strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/lib/value.h"

static cJSON *parse(const char *s, char *err, size_t errlen) {
    return value_parse(s, strlen(s), err, errlen);
}

/* Parse text that must fail; return the error for further checks. */
static void expect_refused(const char *s, const char *needle) {
    char err[256];
    cJSON *v = parse(s, err, sizeof err);
    if (v || !strstr(err, needle))
        fail_msg("input %s: expected error containing '%s', got '%s'", s, needle, err);
    cJSON_Delete(v);
}

static void test_json_object_weights(void **state) {
    (void)state;
    char err[256];
    cJSON *v = parse("{\"shop-v1\": 90, \"shop-v2\":10}", err, sizeof err);
    assert_non_null(v);
    assert_true(cJSON_IsObject(v));
    long long w;
    assert_true(value_get_int(cJSON_GetObjectItem(v, "shop-v1"), 0, 100, &w));
    assert_int_equal(w, 90);
    assert_true(value_get_int(cJSON_GetObjectItem(v, "shop-v2"), 0, 100, &w));
    assert_int_equal(w, 10);
    cJSON_Delete(v);
}

static void test_yaml_equals_json(void **state) {
    (void)state;
    char err[256];
    cJSON *j = parse("{\"a\": [1, \"x\", true, null], \"b\": {\"c\": 1.5}}", err, sizeof err);
    cJSON *y = parse("a:\n  - 1\n  - x\n  - true\n  - ~\nb:\n  c: 1.5\n", err, sizeof err);
    assert_non_null(j);
    assert_non_null(y);
    assert_true(cJSON_Compare(j, y, 1));
    cJSON_Delete(j);
    cJSON_Delete(y);
}

/* Windows editors start a file with a UTF-8 byte order mark: every form
 * reads as without it; anywhere else it stays what it was. */
static void test_leading_bom_skipped(void **state) {
    (void)state;
    const char *forms[] = {"{\"a\": 90, \"b\": 10}", "a: 90\nb: 10\n", "a: 90\r\nb: 10\r\n",
                           "{a: 90, b: 10}"};
    char text[64], err[256];
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        cJSON *plain = parse(forms[i], err, sizeof err);
        snprintf(text, sizeof text, "\xEF\xBB\xBF%s", forms[i]);
        cJSON *bom = parse(text, err, sizeof err);
        if (!bom)
            fail_msg("form %zu with a BOM refused: %s", i, err);
        assert_non_null(plain);
        assert_true(cJSON_Compare(plain, bom, 1));
        cJSON_Delete(plain);
        cJSON_Delete(bom);
    }
    expect_refused("\xEF\xBB\xBF", "empty value");
    expect_refused("\xEF\xBB\xBF  \n", "empty value");
    assert_int_equal(value_bom_len("\xEF\xBB\xBFx", 4), 3);
    assert_int_equal(value_bom_len("\xEF\xBB", 2), 0);
    assert_int_equal(value_bom_len(NULL, 0), 0);
    /* Not at the start: part of the text, as before. */
    cJSON *v = parse("a: \xEF\xBB\xBFx\n", err, sizeof err);
    assert_non_null(v);
    assert_string_equal(cJSON_GetObjectItem(v, "a")->valuestring, "\xEF\xBB\xBFx");
    cJSON_Delete(v);
}

static void test_json_with_tabs(void **state) {
    (void)state;
    char err[256];
    cJSON *v = parse("{\n\t\"a\": 1,\n\t\"b\": \"x\\/y\\u00e9\"\n}\n", err, sizeof err);
    assert_non_null(v);
    assert_string_equal(cJSON_GetObjectItem(v, "b")->valuestring, "x/y\xc3\xa9");
    cJSON_Delete(v);
}

static void test_plain_scalar_typing(void **state) {
    (void)state;
    char err[256];
    cJSON *v = parse("a: null\nb: ~\nc: true\nd: False\ne: 10\nf: 1.5\ng: 1e3\nh: hello\n"
                     "i: 0x1F\nj:\nk: -7\nl: .inf\nm: 10m\n",
                     err, sizeof err);
    assert_non_null(v);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(v, "a")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(v, "b")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(v, "c")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(v, "d")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(v, "e")));
    assert_true(cJSON_GetObjectItem(v, "f")->valuedouble == 1.5);
    assert_true(cJSON_GetObjectItem(v, "g")->valuedouble == 1000.0);
    assert_string_equal(cJSON_GetObjectItem(v, "h")->valuestring, "hello");
    assert_true(cJSON_GetObjectItem(v, "i")->valuedouble == 31.0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(v, "j")));
    assert_true(cJSON_GetObjectItem(v, "k")->valuedouble == -7.0);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(v, "l")));
    assert_true(cJSON_IsString(cJSON_GetObjectItem(v, "m")));
    cJSON_Delete(v);
}

static void test_quoted_stay_strings(void **state) {
    (void)state;
    char err[256];
    cJSON *v = parse("a: \"10\"\nb: 'true'\nc: \"null\"\nd: ''\ne: !!str 5\n", err, sizeof err);
    assert_non_null(v);
    assert_string_equal(cJSON_GetObjectItem(v, "a")->valuestring, "10");
    assert_string_equal(cJSON_GetObjectItem(v, "b")->valuestring, "true");
    assert_string_equal(cJSON_GetObjectItem(v, "c")->valuestring, "null");
    assert_string_equal(cJSON_GetObjectItem(v, "d")->valuestring, "");
    assert_string_equal(cJSON_GetObjectItem(v, "e")->valuestring, "5");
    cJSON_Delete(v);
}

static void test_get_int_whole_numbers_only(void **state) {
    (void)state;
    char err[256];
    cJSON *v = parse("[10, 10.0, 1e1, 1.5, -3, \"10\", 9007199254740993, 99999999999999999999, "
                     "0o17]",
                     err, sizeof err);
    assert_non_null(v);
    long long n = 0;
    assert_true(value_get_int(cJSON_GetArrayItem(v, 0), 0, 100, &n));
    assert_int_equal(n, 10);
    assert_false(value_get_int(cJSON_GetArrayItem(v, 1), 0, 100, &n)); /* 10.0 */
    assert_false(value_get_int(cJSON_GetArrayItem(v, 2), 0, 100, &n)); /* 1e1 */
    assert_false(value_get_int(cJSON_GetArrayItem(v, 3), 0, 100, &n)); /* 1.5 */
    assert_false(value_get_int(cJSON_GetArrayItem(v, 4), 0, 100, &n)); /* below min */
    assert_true(value_get_int(cJSON_GetArrayItem(v, 4), -10, 100, &n));
    assert_int_equal(n, -3);
    assert_false(value_get_int(cJSON_GetArrayItem(v, 5), 0, 100, &n)); /* a string */
    /* Exact beyond 2^53, where a double cannot tell it from its neighbour. */
    assert_true(value_get_int(cJSON_GetArrayItem(v, 6), 0, LLONG_MAX, &n));
    assert_true(n == 9007199254740993LL);
    assert_false(value_get_int(cJSON_GetArrayItem(v, 7), LLONG_MIN, LLONG_MAX, &n));
    assert_true(value_get_int(cJSON_GetArrayItem(v, 8), 0, 100, &n));
    assert_int_equal(n, 15);
    cJSON_Delete(v);

    /* Numbers made by cJSON itself (live objects) go by their double. */
    cJSON *a = cJSON_CreateNumber(7), *b = cJSON_CreateNumber(7.5);
    assert_true(value_get_int(a, 0, 10, &n));
    assert_int_equal(n, 7);
    assert_false(value_get_int(b, 0, 10, &n));
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static void test_get_int_after_set(void **state) {
    (void)state;
    char err[256];
    cJSON *v = parse("1.5", err, sizeof err);
    assert_non_null(v);
    /* The stored text no longer describes the value: fall back to it. */
    cJSON_SetNumberValue(v, 4);
    long long n = 0;
    assert_true(value_get_int(v, 0, 10, &n));
    assert_int_equal(n, 4);
    cJSON_Delete(v);
}

static void test_aliases_refused(void **state) {
    (void)state;
    expect_refused("a: &x 1\nb: *x\n", "line 1: aliases and anchors are not allowed");
    expect_refused("a: 1\nb: &y [1]\n", "line 2: aliases and anchors are not allowed");
}

static void test_alias_bomb_refused_quickly(void **state) {
    (void)state;
    const char *bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
                       "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                       "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                       "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                       "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
                       "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                       "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
                       "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
                       "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    clock_t t0 = clock();
    expect_refused(bomb, "aliases and anchors are not allowed");
    assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 0.5);
}

static char *nested(int depth) {
    char *s = malloc((size_t)depth * 2 + 1);
    assert_non_null(s);
    for (int i = 0; i < depth; i++) {
        s[i] = '[';
        s[depth + i] = ']';
    }
    s[depth * 2] = '\0';
    return s;
}

static void test_depth_limit(void **state) {
    (void)state;
    char err[256];
    char *ok = nested(VALUE_MAX_DEPTH), *deep = nested(VALUE_MAX_DEPTH + 1);
    cJSON *v = parse(ok, err, sizeof err);
    assert_non_null(v);
    cJSON_Delete(v);
    assert_null(parse(deep, err, sizeof err));
    assert_non_null(strstr(err, "nesting deeper than 32"));
    free(ok);
    free(deep);
}

static void test_size_limit(void **state) {
    (void)state;
    char err[256];
    size_t n = VALUE_MAX_BYTES + 1;
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, 'a', n);
    s[n] = '\0';
    assert_null(value_parse(s, n, err, sizeof err));
    assert_string_equal(err, "value is 65537 bytes, over the limit of 65536");
    /* Exactly at the limit is fine. */
    s[0] = '#';
    s[VALUE_MAX_BYTES - 2] = '\n';
    s[VALUE_MAX_BYTES - 1] = '1';
    cJSON *v = value_parse(s, VALUE_MAX_BYTES, err, sizeof err);
    assert_non_null(v);
    assert_true(cJSON_IsNumber(v));
    cJSON_Delete(v);
    free(s);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    expect_refused("a: \xff\n", "line 1: invalid leading UTF-8 octet");
    expect_refused("a: 1\nb: \xc3\x28\n", "line 2:");
}

static void test_nul_byte(void **state) {
    (void)state;
    char err[256];
    assert_null(value_parse("a: 1\nb\0c", 8, err, sizeof err));
    assert_string_equal(err, "line 2: NUL byte in value");
    expect_refused("a: \"x\\0y\"\n", "NUL character");
}

static void test_duplicate_keys(void **state) {
    (void)state;
    expect_refused("a: 1\nb: 2\na: 3\n", "line 3: duplicate key 'a'");
    expect_refused("{\"a\": 1, \"a\": 2}", "duplicate key 'a'");
}

static void test_multi_document(void **state) {
    (void)state;
    expect_refused("a: 1\n---\nb: 2\n", "line 2: only one document is allowed");
    char err[256];
    cJSON *v = parse("---\na: 1\n...\n", err, sizeof err);
    assert_non_null(v);
    cJSON_Delete(v);
}

static void test_empty_value_refused(void **state) {
    (void)state;
    char err[256];
    assert_null(value_parse("", 0, err, sizeof err));
    assert_string_equal(err, "empty value");
    assert_null(value_parse(NULL, 0, err, sizeof err));
    assert_string_equal(err, "empty value");
    expect_refused("  \n\t\n", "empty value");
    expect_refused("# nothing here\n", "empty value");
    expect_refused("---\n", "empty value");
}

static void test_tags_and_keys(void **state) {
    (void)state;
    expect_refused("a: !foo x\n", "line 1: tag '!foo' is not allowed");
    expect_refused("a: !!binary aGk=\n", "is not allowed");
    expect_refused("? [a]\n: 1\n", "mapping keys must be strings");
    expect_refused("a: 1\nb: [\n", "line 3:");
}

static char *emit(const cJSON *v) {
    buf_t b = BUF_INIT;
    assert_int_equal(value_emit_yaml(v, &b, 0), 0);
    return buf_steal(&b);
}

static void test_emit_exact(void **state) {
    (void)state;
    char err[256];
    cJSON *v =
        parse("{\"kind\": \"X\", \"meta\": {\"num\": 1, \"e\": {}}, \"l\": [{\"a\": 1, \"b\": "
              "[true, null]}, [\"x\", \"z\"], []], \"f\": 1.5}",
              err, sizeof err);
    assert_non_null(v);
    char *y = emit(v);
    assert_string_equal(y, "kind: X\n"
                           "meta:\n"
                           "  num: 1\n"
                           "  e: {}\n"
                           "l:\n"
                           "  - a: 1\n"
                           "    b:\n"
                           "      - true\n"
                           "      - null\n"
                           "  - - x\n"
                           "    - z\n"
                           "  - []\n"
                           "f: 1.5\n");
    cJSON *back = parse(y, err, sizeof err);
    assert_non_null(back);
    assert_true(cJSON_Compare(v, back, 1));
    buf_t b = BUF_INIT;
    assert_int_equal(value_emit_yaml(v, &b, 1), 0);
    assert_memory_equal(b.data, "---\nkind: X\n", 12);
    buf_free(&b);
    free(y);
    cJSON_Delete(back);
    cJSON_Delete(v);
}

static void test_emit_numbers(void **state) {
    (void)state;
    char err[256];
    cJSON *v = parse("[10.0, 1e1, 7]", err, sizeof err);
    assert_non_null(v);
    cJSON_AddItemToArray(v, cJSON_CreateNumber(3));
    cJSON_AddItemToArray(v, cJSON_CreateNumber(0.25));
    char *y = emit(v);
    /* 10.0 and 1e1 keep their spelling, so they stay non-integers. */
    assert_string_equal(y, "- 10.0\n- 1e1\n- 7\n- 3\n- 0.25\n");
    free(y);
    cJSON_Delete(v);
}

static void test_emit_quoting(void **state) {
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"yes", "\"yes\""},
        {"n", "\"n\""},
        {"10", "\"10\""},
        {"1.5", "\"1.5\""},
        {"true", "\"true\""},
        {"null", "\"null\""},
        {"~", "\"~\""},
        {"", "\"\""},
        {": x", "\": x\""},
        {"a: b", "\"a: b\""},
        {"#", "\"#\""},
        {"a #b", "\"a #b\""},
        {" lead", "\" lead\""},
        {"trail ", "\"trail \""},
        {"a\nb", "\"a\\nb\""},
        {"cr\r", "\"cr\\r\""},
        {"q\"b\\", "q\"b\\"},
        {"-x", "\"-x\""},
        {"*star", "\"*star\""},
        {"{x}", "\"{x}\""},
        {"0x1F", "\"0x1F\""},
        {"1:20", "\"1:20\""},
        {"\x01", "\"\\x01\""},
        /* C1 controls (but NEL, which has \N), U+FFFE and U+FFFF are not
         * printable YAML: escaped by code point, so the text re-reads. */
        {"a\xc2\x82", "\"a\\x82\""},
        {"\xc2\x80\xc2\x9f", "\"\\x80\\x9f\""},
        {"x\xc2\x85", "\"x\\N\""},
        {"\xef\xbf\xbe", "\"\\uFFFE\""},
        {"k\xef\xbf\xbfk", "\"k\\uFFFFk\""},
        {"caf\xc3\xa9 \xc2\xa0\xef\xbf\xbd", "caf\xc3\xa9 \xc2\xa0\xef\xbf\xbd"},
        {"plain", "plain"},
        {"Host(`a.example`) && PathPrefix(`/`)", "Host(`a.example`) && PathPrefix(`/`)"},
        {"shop-v1", "shop-v1"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *s = cJSON_CreateString(cases[i].in);
        assert_non_null(s);
        char *y = emit(s);
        char want[128];
        snprintf(want, sizeof want, "%s\n", cases[i].out);
        assert_string_equal(y, want);
        /* And as a value inside a mapping, it reads back the same. */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, cases[i].in, s);
        char *y2 = emit(o);
        cJSON *back = parse(y2, err, sizeof err);
        if (!back)
            fail_msg("'%s' did not reparse: %s", y2, err);
        assert_true(cJSON_Compare(o, back, 1));
        cJSON_Delete(back);
        cJSON_Delete(o);
        free(y);
        free(y2);
    }
}

/* A key over 1024 characters, quotes and escapes included, cannot be an
 * implicit key ("key: value"): it is written as "? key" / ": value". */
static void test_emit_long_keys(void **state) {
    (void)state;
    /* The key is lead and n units; emitted, it is 1 + n characters, plus 2
     * when lead "-" forces quotes. \xc3\xa9 (e acute) is 2 bytes but one
     * character, \x01 one byte written as 4 characters. */
    static const struct {
        const char *lead, *unit;
        size_t n;
        bool explicit_key;
    } cases[] = {
        {"a", "a", 1023, false},  {"a", "a", 1024, true},         {"-", "a", 1021, false},
        {"-", "a", 1022, true},   {"a", "\xc3\xa9", 1023, false}, {"a", "\xc3\xa9", 1024, true},
        {"a", "\x01", 300, true},
    };
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t ul = strlen(cases[i].unit);
        char *key = malloc(1 + cases[i].n * ul + 1);
        assert_non_null(key);
        strcpy(key, cases[i].lead);
        for (size_t j = 0; j < cases[i].n; j++)
            memcpy(key + 1 + j * ul, cases[i].unit, ul);
        key[1 + cases[i].n * ul] = '\0';
        /* At the top level, in a list item, and with a collection value. */
        cJSON *v = cJSON_CreateObject(), *list = cJSON_CreateArray(), *item = cJSON_CreateObject();
        assert_non_null(v && list && item);
        cJSON_AddNumberToObject(v, key, 1);
        cJSON_AddItemToObject(v, "list", list);
        cJSON_AddItemToArray(list, item);
        cJSON_AddItemToObject(item, key, cJSON_CreateStringArray((const char *[]){"x"}, 1));
        cJSON_AddStringToObject(item, "b", "c");
        char *y = emit(v);
        bool has_explicit = strncmp(y, "? ", 2) == 0 && strstr(y, "\n:") != NULL;
        if (has_explicit != cases[i].explicit_key)
            fail_msg("case %zu: explicit key %d, want %d:\n%.200s", i, has_explicit,
                     cases[i].explicit_key, y);
        if (cases[i].explicit_key)
            assert_non_null(strstr(y, "\n: 1\nlist:\n  - ? "));
        cJSON *back = parse(y, err, sizeof err);
        if (!back)
            fail_msg("case %zu did not reparse: %s", i, err);
        assert_true(cJSON_Compare(v, back, 1));
        char *y2 = emit(back);
        assert_string_equal(y, y2);
        cJSON_Delete(back);
        cJSON_Delete(v);
        free(y);
        free(y2);
        free(key);
    }
}

static void test_emit_null_input(void **state) {
    (void)state;
    buf_t b = BUF_INIT;
    assert_int_equal(value_emit_yaml(NULL, &b, 0), -1);
    buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_object_weights),
        cmocka_unit_test(test_yaml_equals_json),
        cmocka_unit_test(test_json_with_tabs),
        cmocka_unit_test(test_leading_bom_skipped),
        cmocka_unit_test(test_plain_scalar_typing),
        cmocka_unit_test(test_quoted_stay_strings),
        cmocka_unit_test(test_get_int_whole_numbers_only),
        cmocka_unit_test(test_get_int_after_set),
        cmocka_unit_test(test_aliases_refused),
        cmocka_unit_test(test_alias_bomb_refused_quickly),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_multi_document),
        cmocka_unit_test(test_empty_value_refused),
        cmocka_unit_test(test_tags_and_keys),
        cmocka_unit_test(test_emit_exact),
        cmocka_unit_test(test_emit_numbers),
        cmocka_unit_test(test_emit_quoting),
        cmocka_unit_test(test_emit_long_keys),
        cmocka_unit_test(test_emit_null_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
