/* test_duration.c - the duration parser (bridge/lib/duration.h): every
 * form a configuration may write (units, sums, fractions, the largest
 * values), and every malformed or overflowing one refused, leaving the
 * result untouched. */
/* cmocka.h needs these three first; the blank line keeps clang-format from
 * sorting it above them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdint.h>

#include "bridge/lib/duration.h"

static void test_parse_duration(void **state) {
    (void)state;
    static const struct {
        const char *text;
        uint64_t ms;
    } good[] = {
        {"0", 0},
        {"0s", 0},
        {"250ms", 250},
        {"30s", 30000},
        {"5m", 300000},
        {"1h", 3600000},
        {"1h30m", 5400000},
        {"2h45m30s500ms", 9930500},
        {"1.5s", 1500},
        {".5s", 500},
        {"1.s", 1000},
        {"0.25h", 900000},
        {"1h1h", 7200000},
        {"90s", 90000},
        {"10.001s", 10001},
        {"18446744073709551615ms", UINT64_MAX},
        /* The largest value reached through a fraction. */
        {"18446744073709551.615s", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t ms = 42;
        if (parse_duration_ms(good[i].text, &ms) != 0)
            fail_msg("'%s' should parse", good[i].text);
        assert_int_equal(ms, good[i].ms);
    }
    static const char *const bad[] = {
        "",
        "5",
        "300",
        "-5s",
        "+5s",
        "5 s",
        " 5s",
        "5s ",
        "s",
        "1d",
        "1us",
        "1ns",
        "1.5ms",
        "1.0001s",
        "1h30",
        "m5",
        ".s",
        "1..5s",
        "1e3ms",
        "00",
        "1S",
        "1.2.3s",
        "5m3",
        "0x10s",
        "5min",
        "1hour",
        "99999999999999999999h",
        "5124095576030432h",
        "18446744073709551616ms",
        "18446744073709551615ms1ms",
        /* The whole part fits, whole + fraction does not (it used to wrap:
         * the first was read as about 28 minutes). */
        "5124095576030.9h",
        "18446744073709551.616s",
        "307445734561825.9m",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 42;
        if (parse_duration_ms(bad[i], &ms) == 0)
            fail_msg("'%s' should be refused, got %llu", bad[i], (unsigned long long)ms);
        assert_int_equal(ms, 42);
    }
    assert_int_equal(parse_duration_ms(NULL, &(uint64_t){0}), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
