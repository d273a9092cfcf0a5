/* support.h - driving a test's libuv loop, shared by the C unit tests.
 *
 * Nothing in a unit test sleeps: the loop runs until a condition holds,
 * bounded by a deadline (a failure, never a hang) or by the loop running out
 * of work. Assertions inside are cmocka's, so include this after <cmocka.h>.
 * The Kubernetes API test server on the loop is in kapi.h. */
#ifndef CB_TEST_SUPPORT_H
#define CB_TEST_SUPPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* A condition on the test's state. */
typedef bool (*support_pred)(void *arg);

/* Monotonic milliseconds (uv_hrtime), for deadlines and measured delays. */
uint64_t support_mono_ms(void);

/* Run loop until pred(arg) holds or timeout_ms passed; returns whether it
 * holds. A 10 ms timer wakes the loop meanwhile, so conditions on outside
 * state (a file appearing, a process exiting) are seen too, and the loop
 * never runs dry. pred NULL: run for timeout_ms whatever happens. */
bool support_run_until(uv_loop_t *loop, support_pred pred, void *arg, uint64_t timeout_ms);

/* Run loop for ms, whatever happens. */
void support_run_for(uv_loop_t *loop, uint64_t ms);

/* Run loop until pred(arg) holds or nothing is left to run (no active
 * handle or request); returns whether it holds. Bounded in iterations, for a
 * loop whose timers keep rearming: a test failure, never a hang. */
bool support_run_until_idle(uv_loop_t *loop, support_pred pred, void *arg);

/* A few non-blocking loop iterations: closing handles and cancelled
 * transfers finish. */
void support_drain(uv_loop_t *loop);

#endif
