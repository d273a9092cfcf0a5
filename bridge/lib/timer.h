/* timer.h - the one policy for starting libuv timers.
 *
 * uv_timer_start fails only with UV_EINVAL, and only in two cases: a NULL
 * callback, or a handle that is closing. The first is a programming error
 * (every caller passes a function name), the second happens in teardown,
 * where "the timer will not fire" is exactly what is wanted. So there is
 * nothing for a caller to handle, and nothing should be ignored silently
 * either: start every timer through timer_arm, which states this once and
 * checks the callback. Stopping a timer cannot fail (uv_timer_stop). */
#ifndef CB_TIMER_H
#define CB_TIMER_H

#include <assert.h>
#include <stdint.h>
#include <uv.h>

/* Start (or restart) t: fire cb after timeout_ms, then every repeat_ms
 * (0: once). A closing handle stays stopped. */
static inline void timer_arm(uv_timer_t *t, uv_timer_cb cb, uint64_t timeout_ms,
                             uint64_t repeat_ms) {
    assert(cb != NULL);
    int rc = uv_timer_start(t, cb, timeout_ms, repeat_ms);
    assert(rc == 0 || uv_is_closing((uv_handle_t *)t));
    (void)rc;
}

#endif
