/* tbucket.h - a token bucket in integer milliseconds, the one rate limiter
 * the daemon uses: the Consul source's query limits, and the workqueue's
 * burst detector.
 *
 * `level` counts milliseconds of refill banked: one token = refill_ms, full =
 * burst tokens. It may go negative: a reservation taken while empty is paid
 * back by the wait it returns (the scheme of Go's rate.Limiter.Reserve, which
 * Consul's docs point at). Time is passed in, so the arithmetic is tested
 * without a clock. */
#ifndef CB_TBUCKET_H
#define CB_TBUCKET_H

#include <stdbool.h>
#include <stdint.h>

struct tbucket {
    /* read-only: the functions below keep these consistent */
    uint64_t burst;     /* tokens when full, >= 1 */
    uint64_t refill_ms; /* one token comes back every refill_ms, >= 1 */
    int64_t level;      /* ms of refill banked; burst * refill_ms = full */
    uint64_t last_ms;   /* time of the last update */
};

/* A full bucket at now_ms. Zero burst or refill are taken as 1. */
void tbucket_init(struct tbucket *b, unsigned burst, uint64_t refill_ms, uint64_t now_ms);
/* Take one token for a request made at now_ms; returns how long to wait
 * before sending it (0 = at once). */
uint64_t tbucket_reserve(struct tbucket *b, uint64_t now_ms);
/* Take one token if one is there (true); otherwise change nothing (false). */
bool tbucket_take(struct tbucket *b, uint64_t now_ms);
/* Refill completely, as if it had been idle for long. */
void tbucket_fill(struct tbucket *b, uint64_t now_ms);
/* Change the refill period at now_ms, keeping how full the bucket is as a
 * fraction (a debt stays a debt of the same number of tokens). refill_ms
 * must stay below an hour, which keeps the arithmetic far from overflow. */
void tbucket_set_refill(struct tbucket *b, uint64_t refill_ms, uint64_t now_ms);

#endif
