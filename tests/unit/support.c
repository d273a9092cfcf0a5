/* support.c - driving a test's libuv loop; see support.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "support.h"

uint64_t support_mono_ms(void) {
    return uv_hrtime() / 1000000u;
}

static void on_wake(uv_timer_t *t) {
    (void)t;
}

bool support_run_until(uv_loop_t *loop, support_pred pred, void *arg, uint64_t timeout_ms) {
    uv_timer_t wake;
    assert_int_equal(uv_timer_init(loop, &wake), 0);
    assert_int_equal(uv_timer_start(&wake, on_wake, 10, 10), 0);
    uint64_t end = support_mono_ms() + timeout_ms;
    bool ok;
    while (!(ok = pred && pred(arg)) && support_mono_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(loop, UV_RUN_NOWAIT); /* completes the close */
    return ok;
}

void support_run_for(uv_loop_t *loop, uint64_t ms) {
    (void)support_run_until(loop, NULL, NULL, ms);
}

bool support_run_until_idle(uv_loop_t *loop, support_pred pred, void *arg) {
    for (int i = 0; i < 100000; i++)
        if (pred(arg) || uv_run(loop, UV_RUN_ONCE) == 0)
            break;
    return pred(arg);
}

void support_drain(uv_loop_t *loop) {
    for (int i = 0; i < 50; i++)
        uv_run(loop, UV_RUN_NOWAIT);
}
