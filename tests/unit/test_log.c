/* test_log.c - the logger's formats: JSON lines (escaping, fields), the
 * journal stream check, native journal datagrams and their fallback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "bridge/lib/log.h"

static void json_is(const char *in, size_t len, const char *want) {
    char out[256];
    size_t n = log_json_string(out, sizeof out, in, len);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

static void test_json_string_escapes(void **state) {
    (void)state;
    json_is("plain", 5, "\"plain\"");
    json_is("q\"b\\s/", 6, "\"q\\\"b\\\\s/\"");
    json_is("a\nb\rc\td", 7, "\"a\\nb\\rc\\td\"");
    /* Other control bytes, DEL, and a NUL inside the given length. */
    json_is("\x01\x1b[31m\x7f", 7, "\"\\u0001\\u001b[31m\\u007f\"");
    json_is("a\0b", 3, "\"a\\u0000b\"");
    /* Well-formed UTF-8 passes as is: 2, 3 and 4 byte sequences. */
    json_is("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
}

static void test_json_string_invalid_utf8(void **state) {
    (void)state;
    /* A stray continuation byte, a byte that never starts one, a truncated
     * sequence at the end: one U+FFFD per bad byte. */
    json_is("a\x80"
            "b\xff",
            4, "\"a\\ufffdb\\ufffd\"");
    json_is("x\xe2\x82", 3, "\"x\\ufffd\\ufffd\"");
    /* Overlong "/" (C0 AF, E0 80 AF), a surrogate (ED A0 80), above U+10FFFF. */
    json_is("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");
    json_is("\xe0\x80\xaf", 3, "\"\\ufffd\\ufffd\\ufffd\"");
    json_is("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"");
    json_is("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    /* A sequence cut by a following ASCII byte. */
    json_is("\xc3(", 2, "\"\\ufffd(\"");
}

static void test_json_string_cut_at_character(void **state) {
    (void)state;
    char out[10];
    /* Room for 7 bytes inside the quotes: "abc" then a 6-byte escape would
     * not fit whole, so it is left out; the literal stays valid. */
    size_t n = log_json_string(out, sizeof out, "abc\x01xyz", 7);
    assert_string_equal(out, "\"abc\"");
    assert_int_equal(n, 5);
    n = log_json_string(out, sizeof out, "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", 9);
    assert_string_equal(out, "\"\xe2\x82\xac\xe2\x82\xac\"");
    assert_int_equal(n, 8);
}

/* Log with fmt through lg into a fresh tmpfile; return the whole output. */
static char *capture(struct logger *lg, void (*emit)(struct logger *lg)) {
    lg->out = tmpfile();
    assert_non_null(lg->out);
    emit(lg);
    long len = ftell(lg->out);
    assert_true(len >= 0);
    char *text = calloc(1, (size_t)len + 1);
    assert_non_null(text);
    rewind(lg->out);
    assert_int_equal(fread(text, 1, (size_t)len, lg->out), (size_t)len);
    fclose(lg->out);
    lg->out = NULL;
    return text;
}

static void emit_route_line(struct logger *lg) {
    log_fmsg(lg, LOG_LVL_INFO, LOG_FIELDS(.revision = 1234),
             "route default/shop: IngressRoute shop written");
    log_debug(lg, "filtered out");
}

static bool is_rfc3339_ms_utc(const char *t) {
    /* 2024-05-01T12:00:00.123Z */
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (strlen(t) != strlen(shape))
        return false;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != shape[i])
            return false;
    return true;
}

static void test_json_line_fields(void **state) {
    (void)state;
    struct logger lg;
    logger_init(&lg, LOG_LVL_INFO);
    lg.journal = false;
    lg.format = LOG_FORMAT_JSON;
    char *text = capture(&lg, emit_route_line);
    char *nl = strchr(text, '\n');
    assert_non_null(nl);
    assert_string_equal(nl + 1, ""); /* one line: the debug line is filtered */
    cJSON *o = cJSON_Parse(text);
    assert_non_null(o);
    assert_true(is_rfc3339_ms_utc(cJSON_GetObjectItem(o, "time")->valuestring));
    assert_string_equal(cJSON_GetObjectItem(o, "level")->valuestring, "info");
    assert_string_equal(cJSON_GetObjectItem(o, "message")->valuestring,
                        "route default/shop: IngressRoute shop written");
    /* The route comes from the line's "route ns/name: " start. */
    assert_string_equal(cJSON_GetObjectItem(o, "route")->valuestring, "default/shop");
    assert_int_equal(cJSON_GetObjectItem(o, "revision")->valuedouble, 1234);
    assert_null(cJSON_GetObjectItem(o, "key"));
    /* Fixed order, so people can read them too. */
    assert_true(strncmp(text, "{\"time\":\"", 9) == 0);
    assert_non_null(strstr(text, "\",\"level\":\"info\",\"message\":\"route default/shop"));
    cJSON_Delete(o);
    free(text);
}

static void emit_hostile(struct logger *lg) {
    log_fmsg(lg, LOG_LVL_WARN, LOG_FIELDS(.key = "canary/a\"b\n{\"forged\":1}\xff"),
             "ignoring key %s: %s", "canary/a\"b\n{\"forged\":1}\xff", "\x1b[31mred\ttab");
    log_error(lg, "route not/a/route: x");
    log_error(lg, "route Default/shop: upper case is no route id");
}

static void test_json_line_hostile_values(void **state) {
    (void)state;
    struct logger lg;
    logger_init(&lg, LOG_LVL_INFO);
    lg.journal = false;
    lg.format = LOG_FORMAT_JSON;
    lg.tag = "dry-run: ";
    char *text = capture(&lg, emit_hostile);
    /* Three events, three lines, each a JSON object. */
    char *line = text;
    cJSON *o[3];
    for (int i = 0; i < 3; i++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        o[i] = cJSON_Parse(line);
        assert_non_null(o[i]);
        line = nl + 1;
    }
    assert_string_equal(line, "");
    assert_string_equal(cJSON_GetObjectItem(o[0], "level")->valuestring, "warn");
    assert_string_equal(cJSON_GetObjectItem(o[0], "message")->valuestring,
                        "dry-run: ignoring key canary/a\"b\n{\"forged\":1}\xef\xbf\xbd: "
                        "\x1b[31mred\ttab");
    assert_string_equal(cJSON_GetObjectItem(o[0], "key")->valuestring,
                        "canary/a\"b\n{\"forged\":1}\xef\xbf\xbd");
    assert_null(cJSON_GetObjectItem(o[0], "route"));
    assert_null(cJSON_GetObjectItem(o[0], "forged"));
    /* Not route ids: no route field. */
    assert_null(cJSON_GetObjectItem(o[1], "route"));
    assert_null(cJSON_GetObjectItem(o[2], "route"));
    for (int i = 0; i < 3; i++)
        cJSON_Delete(o[i]);
    free(text);
}

static void emit_text(struct logger *lg) {
    log_fmsg(lg, LOG_LVL_ERROR, LOG_FIELDS(.key = "k", .revision = 9), "route ns/a: bad\nline");
}

static void test_text_and_journal_prefix_unchanged(void **state) {
    (void)state;
    struct logger lg;
    logger_init(&lg, LOG_LVL_INFO);
    lg.journal = false;
    char *text = capture(&lg, emit_text);
    /* 2024-05-01T12:00:00.123Z error route ns/a: bad line */
    assert_int_equal(text[24], ' ');
    text[24] = '\0';
    assert_true(is_rfc3339_ms_utc(text));
    assert_string_equal(text + 25, "error route ns/a: bad line\n");
    free(text);
    lg.journal = true;
    text = capture(&lg, emit_text);
    assert_string_equal(text, "<3>route ns/a: bad line\n");
    free(text);
    lg.format = LOG_FORMAT_JSON;
    text = capture(&lg, emit_text);
    assert_true(strncmp(text, "<3>{\"time\":", 11) == 0);
    assert_non_null(strstr(text, "\"message\":\"route ns/a: bad\\nline\",\"route\":\"ns/a\","
                                 "\"key\":\"k\",\"revision\":9}\n"));
    free(text);
}

static void test_journal_stream_match(void **state) {
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    struct stat st;
    assert_int_equal(fstat(fileno(f), &st), 0);
    char v[64];
    snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    assert_true(log_journal_stream_is(v, fileno(f)));
    snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    assert_false(log_journal_stream_is(v, fileno(f))); /* inherited, redirected */
    assert_false(log_journal_stream_is("1", fileno(f)));
    assert_false(log_journal_stream_is("x:1", fileno(f)));
    assert_false(log_journal_stream_is("", fileno(f)));
    assert_false(log_journal_stream_is(NULL, fileno(f)));
    fclose(f);
}

struct journal_fixture {
    char dir[64];
    char path[128];
    int sock;
};

static void journal_listen(struct journal_fixture *j) {
    strcpy(j->dir, "/tmp/cb-test-log-XXXXXX");
    assert_non_null(mkdtemp(j->dir));
    snprintf(j->path, sizeof j->path, "%s/socket", j->dir);
    j->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    assert_true(j->sock >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, j->path);
    assert_int_equal(bind(j->sock, (struct sockaddr *)&sa, sizeof sa), 0);
}

static void journal_end(struct journal_fixture *j) {
    if (j->sock >= 0)
        close(j->sock);
    unlink(j->path);
    rmdir(j->dir);
}

static void emit_journal(struct logger *lg) {
    log_fmsg(lg, LOG_LVL_WARN, LOG_FIELDS(.key = "canary/x\ny", .revision = 42),
             "route default/shop: weights\x1b refused");
}

static void test_journal_native_datagram(void **state) {
    (void)state;
    struct journal_fixture j;
    journal_listen(&j);
    struct logger lg;
    logger_init(&lg, LOG_LVL_INFO);
    lg.journal = true;
    assert_int_equal(logger_journal_open(&lg, j.path, "cb-test"), 0);
    char *text = capture(&lg, emit_journal);
    assert_string_equal(text, ""); /* the datagram carried it */
    free(text);
    char d[1024];
    ssize_t n = recv(j.sock, d, sizeof d, 0);
    assert_true(n > 0);
    const char want[] = "PRIORITY=4\n"
                        "SYSLOG_IDENTIFIER=cb-test\n"
                        "MESSAGE=route default/shop: weights? refused\n"
                        "ROUTE=default/shop\n"
                        "KEY\n\x0a\0\0\0\0\0\0\0canary/x\ny\n"
                        "REVISION=42\n";
    assert_int_equal((size_t)n, sizeof want - 1);
    assert_memory_equal(d, want, sizeof want - 1);

    /* No journal listening (restarted, gone): the line goes to stderr. */
    close(j.sock);
    j.sock = -1;
    unlink(j.path);
    text = capture(&lg, emit_journal);
    assert_string_equal(text, "<4>route default/shop: weights? refused\n");
    free(text);
    logger_close(&lg);
    assert_int_equal(lg.journal_fd, -1);
    journal_end(&j);
}

static void emit_many(struct logger *lg) {
    for (int i = 0; i < 2000; i++)
        log_info(lg, "route default/shop: line %d", i);
}

static void test_journal_full_never_blocks(void **state) {
    (void)state;
    /* A journal that does not read: the socket's queue fills, and every line
     * after that goes to stderr at once instead of waiting. */
    struct journal_fixture j;
    journal_listen(&j);
    struct logger lg;
    logger_init(&lg, LOG_LVL_INFO);
    lg.journal = true;
    assert_int_equal(logger_journal_open(&lg, j.path, "cb-test"), 0);
    char *text = capture(&lg, emit_many);
    assert_non_null(strstr(text, "<6>route default/shop: line 1999\n"));
    free(text);
    logger_close(&lg);
    journal_end(&j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_string_escapes),
        cmocka_unit_test(test_json_string_invalid_utf8),
        cmocka_unit_test(test_json_string_cut_at_character),
        cmocka_unit_test(test_json_line_fields),
        cmocka_unit_test(test_json_line_hostile_values),
        cmocka_unit_test(test_text_and_journal_prefix_unchanged),
        cmocka_unit_test(test_journal_stream_match),
        cmocka_unit_test(test_journal_native_datagram),
        cmocka_unit_test(test_journal_full_never_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
