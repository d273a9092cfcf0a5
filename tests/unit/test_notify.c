/* test_notify.c - sd_notify against a real AF_UNIX datagram socket standing
 * in for systemd: exact datagram contents, abstract socket names, watchdog
 * pings driven by the loop, WATCHDOG_PID for another process, bad
 * environment values, a vanished socket logged once per streak, and a
 * service manager that stops reading (a full queue must drop messages, never
 * block the loop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bridge/lib/notify.h"

struct fx {
    uv_loop_t loop;
    struct logger log;
    char dir[64];
    char path[128];
    int rx; /* the "systemd" end */
    uv_poll_t poll;
    uv_timer_t guard;
    bool timed_out;
    char msgs[16][256];
    size_t nmsgs;
};

static void unset_env(void) {
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

static int bind_rx(struct sockaddr_un *sa, socklen_t len) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    if (bind(fd, (struct sockaddr *)sa, len) != 0)
        fail_msg("bind: %s", strerror(errno));
    return fd;
}

/* A datagram socket in a fresh directory, named in NOTIFY_SOCKET. */
static void listen_path(struct fx *f) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(f->path, sizeof f->path, "%s/notify.sock", f->dir);
    assert_true(strlen(f->path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
    f->rx = bind_rx(&sa, sizeof sa);
    assert_int_equal(setenv("NOTIFY_SOCKET", f->path, 1), 0);
}

static int setup(void **state) {
    unset_env();
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->rx = -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/cb-notify-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->guard), 0);
    f->guard.data = f;
    logger_init(&f->log, LOG_LVL_DEBUG);
    f->log.out = tmpfile(); /* captured, so tests can count warnings */
    assert_non_null(f->log.out);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    struct fx *f = *state;
    if (!uv_is_closing((uv_handle_t *)&f->guard))
        uv_close((uv_handle_t *)&f->guard, NULL);
    if (f->poll.loop && !uv_is_closing((uv_handle_t *)&f->poll))
        uv_close((uv_handle_t *)&f->poll, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if (f->rx >= 0)
        close(f->rx);
    if (f->path[0])
        unlink(f->path);
    rmdir(f->dir);
    fclose(f->log.out);
    free(f);
    unset_env();
    return 0;
}

/* Read every queued datagram into f->msgs. */
static void drain(struct fx *f) {
    for (;;) {
        char buf[256];
        ssize_t n = recv(f->rx, buf, sizeof buf - 1, 0);
        if (n < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            return;
        }
        assert_true(f->nmsgs < 16);
        buf[n] = '\0';
        memcpy(f->msgs[f->nmsgs++], buf, (size_t)n + 1);
    }
}

/* The one datagram sent since the last call. */
static const char *next_msg(struct fx *f) {
    f->nmsgs = 0;
    drain(f);
    assert_int_equal(f->nmsgs, 1);
    return f->msgs[0];
}

static int log_lines(struct fx *f, const char *needle) {
    fflush(f->log.out);
    rewind(f->log.out);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f->log.out))
        n += strstr(line, needle) != NULL;
    fseek(f->log.out, 0, SEEK_END);
    return n;
}

/* notify_close, then let the loop run the timer's close callback while n is
 * still in scope (it lives on the test's stack). */
static void close_notifier(struct fx *f, struct notifier *n) {
    notify_close(n);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void test_disabled_without_socket(void **state) {
    struct fx *f = *state;
    struct notifier n;
    assert_int_equal(notify_init(&n, &f->loop, &f->log), 0);
    assert_false(n.enabled);
    assert_int_equal(notify_ready(&n), 0);
    assert_int_equal(notify_status(&n, "x %d", 1), 0);
    assert_int_equal(notify_reloading(&n), 0);
    assert_int_equal(notify_stopping(&n), 0);
    assert_int_equal(notify_start(&n), 0);
    assert_int_equal(notify_watchdog_usec(&n), 0);
    assert_false(n.timer_open);
    close_notifier(f, &n);
}

static void test_each_message_one_datagram(void **state) {
    struct fx *f = *state;
    listen_path(f);
    struct notifier n;
    assert_int_equal(notify_init(&n, &f->loop, &f->log), 0);
    assert_true(n.enabled);
    assert_int_equal(notify_watchdog_usec(&n), 0);

    assert_int_equal(notify_ready(&n), 0);
    assert_string_equal(next_msg(f), "READY=1");
    /* A newline can not inject a second assignment. */
    assert_int_equal(notify_status(&n, "syncing %d routes\nREADY=1", 12), 0);
    assert_string_equal(next_msg(f), "STATUS=syncing 12 routes READY=1");
    assert_int_equal(notify_stopping(&n), 0);
    assert_string_equal(next_msg(f), "STOPPING=1");

    struct timespec ts;
    assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
    unsigned long long before = (unsigned long long)ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
    assert_int_equal(notify_reloading(&n), 0);
    assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
    unsigned long long after = (unsigned long long)ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
    const char *m = next_msg(f);
    const char *prefix = "RELOADING=1\nMONOTONIC_USEC=";
    assert_true(strncmp(m, prefix, strlen(prefix)) == 0);
    const char *digits = m + strlen(prefix);
    assert_int_equal(strspn(digits, "0123456789"), strlen(digits));
    unsigned long long usec = strtoull(digits, NULL, 10);
    assert_true(usec >= before && usec <= after);
    close_notifier(f, &n);
    assert_int_equal(notify_ready(&n), 0); /* closed: a no-op */
    f->nmsgs = 0;
    drain(f);
    assert_int_equal(f->nmsgs, 0);
}

static void test_abstract_socket(void **state) {
    struct fx *f = *state;
    char name[64];
    snprintf(name, sizeof name, "cb-notify-test-%ld-%s", (long)getpid(), f->dir + 5);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path + 1, name, strlen(name)); /* sun_path[0] = NUL: abstract */
    f->rx = bind_rx(&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name)));
    char env[80];
    snprintf(env, sizeof env, "@%s", name);
    assert_int_equal(setenv("NOTIFY_SOCKET", env, 1), 0);
    struct notifier n;
    assert_int_equal(notify_init(&n, &f->loop, &f->log), 0);
    assert_true(n.enabled);
    assert_int_equal(notify_ready(&n), 0);
    assert_string_equal(next_msg(f), "READY=1");
    close_notifier(f, &n);
}

static void on_readable(uv_poll_t *p, int status, int events) {
    struct fx *f = p->data;
    assert_int_equal(status, 0);
    if (events & UV_READABLE)
        drain(f);
}

static void on_guard(uv_timer_t *t) {
    struct fx *f = t->data;
    f->timed_out = true;
}

static void test_watchdog_pings(void **state) {
    struct fx *f = *state;
    listen_path(f);
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    assert_int_equal(setenv("WATCHDOG_USEC", "20000", 1), 0); /* ping every 10 ms */
    assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
    struct notifier n;
    assert_int_equal(notify_init(&n, &f->loop, &f->log), 0);
    assert_int_equal(notify_watchdog_usec(&n), 20000);
    assert_int_equal(notify_start(&n), 0);
    assert_int_equal(notify_start(&n), 0); /* idempotent */
    assert_int_equal(n.pings, 1);          /* the first one right away */

    /* Only the loop sends the next ones: drive it until three arrived. */
    assert_int_equal(uv_poll_init(&f->loop, &f->poll, f->rx), 0);
    f->poll.data = f;
    assert_int_equal(uv_poll_start(&f->poll, UV_READABLE, on_readable), 0);
    assert_int_equal(uv_timer_start(&f->guard, on_guard, 5000, 0), 0);
    f->nmsgs = 0;
    while (f->nmsgs < 3 && !f->timed_out)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_false(f->timed_out);
    for (size_t i = 0; i < f->nmsgs; i++)
        assert_string_equal(f->msgs[i], "WATCHDOG=1");
    assert_true(n.pings >= 3);

    /* The watchdog timer alone does not keep the loop running. */
    uv_timer_stop(&f->guard);
    uv_close((uv_handle_t *)&f->poll, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_NOWAIT), 0);
    assert_true(n.timer_open);
    close_notifier(f, &n);
    assert_false(n.timer_open);
}

static void test_watchdog_for_another_pid(void **state) {
    struct fx *f = *state;
    listen_path(f);
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid() + 1);
    assert_int_equal(setenv("WATCHDOG_USEC", "20000", 1), 0);
    assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
    struct notifier n;
    assert_int_equal(notify_init(&n, &f->loop, &f->log), 0);
    assert_int_equal(notify_watchdog_usec(&n), 0);
    assert_int_equal(notify_start(&n), 0);
    assert_false(n.timer_open);
    f->nmsgs = 0;
    drain(f);
    assert_int_equal(f->nmsgs, 0); /* no ping */
    assert_int_equal(notify_ready(&n), 0);
    assert_string_equal(next_msg(f), "READY=1");
    close_notifier(f, &n);
}

static void test_bad_environment(void **state) {
    struct fx *f = *state;
    struct notifier n;
    assert_int_equal(setenv("NOTIFY_SOCKET", "relative/notify.sock", 1), 0);
    assert_int_equal(notify_init(&n, &f->loop, &f->log), -1);
    assert_false(n.enabled);
    assert_int_equal(notify_ready(&n), 0);
    assert_int_equal(log_lines(f, "NOTIFY_SOCKET=relative/notify.sock"), 1);
    close_notifier(f, &n);

    listen_path(f);
    assert_int_equal(setenv("WATCHDOG_USEC", "30s", 1), 0);
    assert_int_equal(notify_init(&n, &f->loop, &f->log), 0);
    assert_int_equal(notify_watchdog_usec(&n), 0);
    assert_int_equal(log_lines(f, "WATCHDOG_USEC=30s"), 1);
    assert_int_equal(notify_ready(&n), 0); /* messages still go out */
    assert_string_equal(next_msg(f), "READY=1");
    close_notifier(f, &n);
}

static void test_socket_gone_logged_once(void **state) {
    struct fx *f = *state;
    listen_path(f);
    struct notifier n;
    assert_int_equal(notify_init(&n, &f->loop, &f->log), 0);
    close(f->rx);
    f->rx = -1;
    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(notify_status(&n, "a"), -1);
    assert_int_equal(notify_status(&n, "b"), -1);
    assert_int_equal(log_lines(f, "sd_notify STATUS"), 1);
    /* systemd back (re-exec): works again and says so. */
    listen_path(f);
    assert_int_equal(notify_ready(&n), 0);
    assert_string_equal(next_msg(f), "READY=1");
    assert_int_equal(log_lines(f, "sd_notify works again"), 1);
    close_notifier(f, &n);
}

/* systemd not reading: its socket's queue fills up. Every send must return at
 * once (dropped, logged once), never block: a blocked watchdog ping stalls the
 * whole loop, and with it reloads and stops. alarm() turns a hang into a
 * failure. */
static void test_full_queue_never_blocks(void **state) {
    struct fx *f = *state;
    listen_path(f);
    struct notifier n;
    assert_int_equal(notify_init(&n, &f->loop, &f->log), 0);
    alarm(10);
    int failed = 0;
    for (int i = 0; i < 5000 && !failed; i++)
        failed = notify_status(&n, "filling the queue %d", i) < 0;
    assert_true(failed); /* the queue is bounded: some send was refused */
    assert_int_equal(notify_stopping(&n), -1);
    alarm(0);
    assert_int_equal(log_lines(f, "sd_notify STATUS"), 1);
    f->nmsgs = 0;
    for (char buf[256]; recv(f->rx, buf, sizeof buf, 0) >= 0;)
        ; /* systemd catches up */
    assert_int_equal(notify_stopping(&n), 0);
    assert_string_equal(next_msg(f), "STOPPING=1");
    close_notifier(f, &n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_disabled_without_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_message_one_datagram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abstract_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_pings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_for_another_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_gone_logged_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_queue_never_blocks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
