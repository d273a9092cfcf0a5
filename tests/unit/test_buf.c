/* test_buf.c - core utilities: buffer growth, printf, consume; hash map
 * put/get/del/iterate; backoff bounds; log lines that stay one clean line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/backoff.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/log.h"
#include "bridge/lib/map.h"

static void test_buf_grow_and_printf(void **state) {
    (void)state;
    buf_t b = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_printf(&b, "%d,", i), 0);
    assert_int_equal(strncmp(b.data, "0,1,2,", 6), 0);
    assert_int_equal(b.data[b.len], '\0');
    buf_consume(&b, 2);
    assert_int_equal(strncmp(b.data, "1,2,", 4), 0);
    buf_consume(&b, b.len + 5);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(buf_append(&b, "a\0b", 3), 0);
    assert_int_equal(b.len, 3);
    char *s = buf_steal(&b);
    assert_non_null(s);
    assert_int_equal(memcmp(s, "a\0b", 4), 0);
    assert_null(b.data);
    free(s);
}

static void test_map_put_replace_delete_iterate(void **state) {
    (void)state;
    struct map m = MAP_INIT;
    char key[32];
    for (long i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "ns/route-%ld", i);
        assert_int_equal(map_put(&m, key, (void *)(i + 1), NULL), 0);
    }
    assert_int_equal(m.count, 5000);
    assert_ptr_equal(map_get(&m, "ns/route-4242"), (void *)4243);
    void *old = NULL;
    assert_int_equal(map_put(&m, "ns/route-7", (void *)99, &old), 0);
    assert_ptr_equal(old, (void *)8);
    assert_int_equal(m.count, 5000);
    assert_ptr_equal(map_del(&m, "ns/route-7"), (void *)99);
    assert_false(map_has(&m, "ns/route-7"));
    assert_null(map_del(&m, "nope"));
    /* Iterating while deleting the current entry visits everything once. */
    size_t seen = 0;
    struct map_iter it;
    map_iter_init(&it, &m);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        seen++;
        map_del(&m, e->key);
    }
    assert_int_equal(seen, 4999);
    assert_int_equal(m.count, 0);
    map_free(&m);
}

static void test_backoff_bounds(void **state) {
    (void)state;
    for (unsigned a = 0; a < 40; a++) {
        uint64_t v = backoff_ms(a, 100, 10000);
        uint64_t cap = 100;
        for (unsigned i = 0; i < a && cap < 10000; i++)
            cap *= 2;
        if (cap > 10000)
            cap = 10000;
        assert_true(v >= cap / 2 && v <= cap);
    }
}

static void test_log_line_is_clean(void **state) {
    (void)state;
    struct logger lg;
    logger_init(&lg, LOG_LVL_INFO);
    lg.journal = true;
    lg.out = tmpfile();
    assert_non_null(lg.out);
    log_error(&lg, "key canary/x\x1b[31m/y\nforged line\r\x7f%s", "\ttab");
    log_debug(&lg, "filtered out");
    rewind(lg.out);
    char line[256];
    assert_non_null(fgets(line, sizeof line, lg.out));
    assert_string_equal(line, "<3>key canary/x?[31m/y forged line ? tab\n");
    assert_null(fgets(line, sizeof line, lg.out)); /* one event, one line */
    fclose(lg.out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_grow_and_printf),
        cmocka_unit_test(test_map_put_replace_delete_iterate),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_log_line_is_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
