/* notify.h - tell systemd how the service is doing (sd_notify protocol).
 *
 * Type=notify units learn from these datagrams when the daemon is ready
 * (READY=1 after the first full sync), what it is doing (STATUS=), that it is
 * reloading or stopping, and that it is alive (WATCHDOG=1). This module
 * speaks the documented protocol itself: one datagram per message on an
 * AF_UNIX SOCK_DGRAM socket named by $NOTIFY_SOCKET (a path, or "@name" for
 * an abstract socket), sent without blocking. (sd_notify(3) blocks while the
 * receiver's queue is full, which would stall the one loop.)
 *
 * Everything is a no-op when NOTIFY_SOCKET is unset (not under systemd, or
 * Type=simple), so callers never need to check.
 *
 * The watchdog is pinged by a timer on the daemon's own loop: if the loop
 * wedges, the pings stop and systemd restarts the service, which is the whole
 * point of WatchdogSec=. */
#ifndef CB_NOTIFY_H
#define CB_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

#include "bridge/lib/log.h"

/* Lifecycle: notify_init, notify_start (the watchdog pings), notify_close
 * (then let the loop run once before n goes away). The messages work from
 * notify_init on. */
struct notifier {
    /* read-only */
    bool enabled;           /* NOTIFY_SOCKET set and usable */
    uint64_t watchdog_usec; /* 0: no watchdog for this process */
    uint64_t pings;         /* WATCHDOG=1 sent, for tests and debugging */
    /* private */
    uv_loop_t *loop;
    struct logger *log;
    uv_timer_t watchdog;
    bool timer_open; /* watchdog timer initialised, to be closed */
    bool failing;    /* last send failed: log once per streak, not per ping */
    int fd;          /* -1 when disabled */
    struct sockaddr_un addr;
    socklen_t addrlen;
};

/* Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (a watchdog meant for
 * another process is ignored) and, with a watchdog, set up its timer. A
 * malformed value is logged and disables that part. Returns 0, or -1 on a
 * failure to set up a valid socket (the notifier is then disabled; the
 * daemon can run on) or the watchdog timer (logged; the messages still
 * work). lg must outlive n. */
int notify_init(struct notifier *n, uv_loop_t *loop, struct logger *lg);

/* READY=1: startup finished (first full sync), or a reload finished. */
int notify_ready(struct notifier *n);
/* STATUS=<text>, shown by systemctl status. Newlines become spaces: the text
 * can never smuggle in another assignment. */
int notify_status(struct notifier *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* RELOADING=1 with MONOTONIC_USEC=<now>; send notify_ready when the reload
 * is over (whether the new config was taken or refused). */
int notify_reloading(struct notifier *n);
/* STOPPING=1: shutdown began. */
int notify_stopping(struct notifier *n);
/* Start pinging WATCHDOG=1 every WATCHDOG_USEC/2, first ping now. No-op
 * without a watchdog, or when started already. The timer does not keep the
 * loop alive. 0, or -1 when notify_init could not set up the timer. */
int notify_start(struct notifier *n);
/* The watchdog interval in microseconds, 0 when none. */
uint64_t notify_watchdog_usec(const struct notifier *n);
/* Stop the watchdog and release the socket; the timer handle is closed, so
 * keep n alive until the loop has run its close callback. */
void notify_close(struct notifier *n);

#endif
