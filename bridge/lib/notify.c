/* notify.c - sd_notify messages and the loop-driven watchdog; see notify.h.
 *
 * The environment is read once at init: it is fixed for the life of the
 * service, and parsing it up front means a bad value is reported once at
 * startup rather than on every message. */
#include "bridge/lib/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/timer.h"

/* Strict decimal, no sign, no trailing junk. */
static int parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
        return -1;
    *out = strtoull(s, NULL, 10);
    return 0;
}

/* Fill n->addr from NOTIFY_SOCKET: "/path" or "@abstract". */
static int socket_address(struct notifier *n, const char *env) {
    size_t len = strlen(env);
    memset(&n->addr, 0, sizeof n->addr);
    n->addr.sun_family = AF_UNIX;
    if (env[0] != '/' && env[0] != '@') {
        log_warn(n->log,
                 "NOTIFY_SOCKET=%s is neither an absolute path nor an @abstract name; "
                 "not notifying systemd",
                 env);
        return -1;
    }
    if (len < 2 || len >= sizeof n->addr.sun_path) {
        log_warn(n->log,
                 "NOTIFY_SOCKET is too short or too long (%zu bytes); not notifying systemd", len);
        return -1;
    }
    memcpy(n->addr.sun_path, env, len);
    if (env[0] == '@') {
        /* Abstract namespace: a leading NUL, and the length says where the
         * name ends (no terminating NUL). */
        n->addr.sun_path[0] = '\0';
        n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    } else {
        n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    return 0;
}

static void watchdog_from_env(struct notifier *n) {
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    uint64_t v = 0, p = 0;
    if (!usec)
        return;
    if (parse_u64(usec, &v) < 0 || v == 0) {
        log_warn(n->log, "WATCHDOG_USEC=%s is not a positive integer; watchdog pings off", usec);
        return;
    }
    if (pid) {
        if (parse_u64(pid, &p) < 0) {
            log_warn(n->log, "WATCHDOG_PID=%s is not a process id; watchdog pings off", pid);
            return;
        }
        if (p != (uint64_t)getpid()) {
            log_debug(n->log, "watchdog is meant for process %s, not this one", pid);
            return;
        }
    }
    n->watchdog_usec = v;
}

int notify_init(struct notifier *n, uv_loop_t *loop, struct logger *lg) {
    memset(n, 0, sizeof *n);
    n->loop = loop;
    n->log = lg;
    n->fd = -1;
    const char *env = getenv("NOTIFY_SOCKET");
    if (!env || !*env)
        return 0; /* not started by systemd as Type=notify: nothing to say */
    if (socket_address(n, env) < 0)
        return -1;
    /* Non-blocking: if the service manager is not reading (its queue is
     * full), a message is dropped rather than the loop stalled. This is why
     * the bridge does not use sd_notify(3): its socket blocks in sendmsg,
     * and a watchdog ping would then wedge the loop (and a stop with it). */
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (n->fd < 0) {
        log_warn(n->log, "sd_notify socket: %s; not notifying systemd", strerror(errno));
        return -1;
    }
    n->enabled = true;
    watchdog_from_env(n);
    if (!n->watchdog_usec)
        return 0;
    int rc = uv_timer_init(n->loop, &n->watchdog);
    if (rc != 0) {
        log_warn(n->log, "watchdog timer: %s", uv_strerror(rc));
        return -1;
    }
    n->watchdog.data = n;
    n->timer_open = true;
    /* The pings alone must not keep the daemon from exiting. */
    uv_unref((uv_handle_t *)&n->watchdog);
    return 0;
}

/* One datagram. 0 when sent or disabled, -1 when it could not be sent. */
static int notify_send(struct notifier *n, const char *msg) {
    if (!n->enabled)
        return 0;
    int err = 0;
    ssize_t r;
    do
        r = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL, (const struct sockaddr *)&n->addr,
                   n->addrlen);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        err = errno;
    if (err) {
        /* Once per streak of failures: a dead socket must not turn every
         * watchdog ping into a log line. */
        if (!n->failing)
            log_warn(n->log, "sd_notify %.*s: %s", (int)strcspn(msg, "=\n"), msg, strerror(err));
        n->failing = true;
        return -1;
    }
    if (n->failing)
        log_info(n->log, "sd_notify works again");
    n->failing = false;
    return 0;
}

int notify_ready(struct notifier *n) {
    return notify_send(n, "READY=1");
}

int notify_stopping(struct notifier *n) {
    return notify_send(n, "STOPPING=1");
}

int notify_status(struct notifier *n, const char *fmt, ...) {
    if (!n->enabled)
        return 0;
    buf_t b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_puts(&b, "STATUS=");
    if (rc == 0)
        rc = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        buf_free(&b);
        log_warn(n->log, "sd_notify STATUS: out of memory");
        return -1;
    }
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] == '\n' || b.data[i] == '\r')
            b.data[i] = ' ';
    rc = notify_send(n, b.data);
    buf_free(&b);
    return rc;
}

int notify_reloading(struct notifier *n) {
    if (!n->enabled)
        return 0;
    /* MONOTONIC_USEC lets systemd (Type=notify-reload, v253+) tell this
     * reload apart from an earlier one; older versions ignore it. */
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return notify_send(n, "RELOADING=1");
    char msg[64];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    return notify_send(n, msg);
}

static void watchdog_ping(uv_timer_t *t) {
    struct notifier *n = t->data;
    if (notify_send(n, "WATCHDOG=1") == 0)
        n->pings++;
}

int notify_start(struct notifier *n) {
    if (!n->enabled || !n->watchdog_usec)
        return 0;
    if (!n->timer_open)
        return -1; /* notify_init logged why */
    if (uv_is_active((uv_handle_t *)&n->watchdog))
        return 0;
    /* Half the timeout, as sd_watchdog_enabled(3) advises: one late ping
     * is not yet a missed deadline. */
    uint64_t ms = n->watchdog_usec / 2 / 1000;
    if (ms == 0)
        ms = 1;
    timer_arm(&n->watchdog, watchdog_ping, ms, ms);
    log_debug(n->log, "watchdog: pinging systemd every %llu ms", (unsigned long long)ms);
    watchdog_ping(&n->watchdog);
    return 0;
}

uint64_t notify_watchdog_usec(const struct notifier *n) {
    return n->enabled ? n->watchdog_usec : 0;
}

void notify_close(struct notifier *n) {
    if (n->timer_open) {
        uv_timer_stop(&n->watchdog);
        uv_close((uv_handle_t *)&n->watchdog, NULL);
        n->timer_open = false;
    }
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
    n->enabled = false;
}
