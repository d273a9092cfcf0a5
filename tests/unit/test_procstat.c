/* test_procstat.c - the process_* metrics: parsing /proc/<pid>/stat (command
 * names with spaces and parentheses) and /proc/stat's btime, reading this
 * process, and the exported families (names, types, a counter that only
 * goes up). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bridge/lib/metrics.h"
#include "bridge/lib/procstat.h"

/* A real line's shape (proc(5)): pid (comm) state ppid pgrp session tty_nr
 * tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
 * priority nice num_threads itrealvalue starttime vsize rss ... */
#define STAT_TAIL                                                                                  \
    " S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 50 7 9 20 0 1 0 123456 104857600 2560 "            \
    "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"

static void test_parse_stat(void **state) {
    (void)state;
    struct procstat s;
    memset(&s, 0, sizeof s);
    assert_int_equal(
        procstat_parse_stat("4242 (canary-bridge)" STAT_TAIL, 100, 4096, 1700000000, &s), 0);
    assert_true(s.cpu_seconds == 3.0);                         /* (250 + 50) / 100 */
    assert_true(s.virtual_bytes == 104857600.0);               /* vsize, bytes */
    assert_true(s.resident_bytes == 2560.0 * 4096);            /* rss, pages */
    assert_true(s.start_time_seconds == 1700000000 + 1234.56); /* btime + 123456 / 100 */
}

static void test_parse_stat_hostile_name(void **state) {
    (void)state;
    /* A process may name itself anything, ") S 1 2 3" included: the fields
     * start after the LAST parenthesis. */
    struct procstat s;
    memset(&s, 0, sizeof s);
    assert_int_equal(procstat_parse_stat("7 (a) b) S 9 9 9 (x y)" STAT_TAIL, 250, 8192, 0, &s), 0);
    assert_true(s.cpu_seconds == 300.0 / 250);
    assert_true(s.resident_bytes == 2560.0 * 8192);
    assert_true(s.start_time_seconds == 0); /* no boot time: unknown */
}

static void test_parse_stat_rejects(void **state) {
    (void)state;
    struct procstat s;
    memset(&s, 0, sizeof s);
    assert_int_equal(procstat_parse_stat("", 100, 4096, 0, &s), -1);
    assert_int_equal(procstat_parse_stat(NULL, 100, 4096, 0, &s), -1);
    assert_int_equal(procstat_parse_stat("1 (x) S 1 2 3\n", 100, 4096, 0, &s), -1); /* short */
    assert_int_equal(procstat_parse_stat("1 (x) S 1 2 3 x 5 6 7 8 9 10 11 12 13 14 15 16 17 18 "
                                         "19 20 21 22 23\n",
                                         100, 4096, 0, &s),
                     -1); /* not a number */
    assert_int_equal(procstat_parse_stat("1 x S" STAT_TAIL, 100, 4096, 0, &s), -1);
    assert_int_equal(procstat_parse_stat("1 (x)" STAT_TAIL, 0, 4096, 0, &s), -1);
}

static void test_parse_btime(void **state) {
    (void)state;
    double b = 0;
    assert_int_equal(procstat_parse_btime("cpu  1 2 3\ncpu0 1 2 3\nintr 5 0 0\nctxt 99\n"
                                          "btime 1700000123\nprocesses 5\n",
                                          &b),
                     0);
    assert_true(b == 1700000123.0);
    assert_int_equal(procstat_parse_btime("btime 42", &b), 0);
    assert_true(b == 42.0);
    assert_int_equal(procstat_parse_btime("cpu 1\nxbtime 5\n", &b), -1);
    assert_int_equal(procstat_parse_btime("btime x\n", &b), -1);
    assert_int_equal(procstat_parse_btime("btime 42x\n", &b), -1);
    assert_int_equal(procstat_parse_btime("", &b), -1);
}

static void test_read_self(void **state) {
    (void)state;
    struct procstat a, b;
    assert_int_equal(procstat_read(&a), 0);
    /* As many as /proc/self/fd lists, less the one reading it. */
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    double listed = 0;
    for (struct dirent *e; (e = readdir(d));)
        listed += e->d_name[0] != '.';
    closedir(d);
    assert_true(a.open_fds == listed - 1);
    assert_true(a.resident_bytes > 0);
    assert_true(a.virtual_bytes >= a.resident_bytes);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(a.max_fds == (double)rl.rlim_cur);
    /* Started within the last hour (the test runs now), not in the future. */
    time_t now = time(NULL);
    assert_true(a.start_time_seconds <= (double)now + 1);
    assert_true(a.start_time_seconds > (double)now - 3600);
    /* Three more descriptors are counted as three more. */
    int fds[3];
    for (int i = 0; i < 3; i++)
        assert_true((fds[i] = open("/dev/null", O_RDONLY)) >= 0);
    assert_int_equal(procstat_read(&b), 0);
    assert_true(b.open_fds == a.open_fds + 3);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    assert_int_equal(procstat_read(&b), 0);
    assert_true(b.open_fds == a.open_fds);
    assert_true(b.start_time_seconds == a.start_time_seconds);
}

static char *render(const struct metrics *m) {
    buf_t b = BUF_INIT;
    assert_int_equal(metrics_render(m, &b), 0);
    char *s = buf_steal(&b);
    assert_non_null(s);
    return s;
}

static void test_export(void **state) {
    (void)state;
    struct metrics *m = metrics_new();
    struct bridge_metrics bm;
    assert_int_equal(bridge_metrics_register(m, "1.2.3", &bm), 0);
    struct procstat s = {.cpu_seconds = 1.5,
                         .resident_bytes = 1048576,
                         .virtual_bytes = 4194304,
                         .start_time_seconds = 1700000000.25,
                         .open_fds = 12,
                         .max_fds = 1024};
    procstat_export(&bm.process, &s);
    s.cpu_seconds = 1.0; /* never down */
    s.open_fds = -1;     /* unknown: stays */
    procstat_export(&bm.process, &s);
    char *text = render(m);
    static const char *const want[] = {
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n",
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1048576\n",
        "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes 4194304\n",
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1700000000.25\n",
        "# TYPE process_open_fds gauge\nprocess_open_fds 12\n",
        "# TYPE process_max_fds gauge\nprocess_max_fds 1024\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i]))
            fail_msg("missing from /metrics: %s\n--- got ---\n%s", want[i], text);
    free(text);
    s.cpu_seconds = 2.25;
    procstat_export(&bm.process, &s);
    double v = 0;
    assert_int_equal(metric_value(bm.process.cpu_seconds_total, NULL, &v), 0);
    assert_true(v == 2.25);
    metrics_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_stat),         cmocka_unit_test(test_parse_stat_hostile_name),
        cmocka_unit_test(test_parse_stat_rejects), cmocka_unit_test(test_parse_btime),
        cmocka_unit_test(test_read_self),          cmocka_unit_test(test_export),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
