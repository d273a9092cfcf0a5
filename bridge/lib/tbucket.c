/* tbucket.c - token bucket arithmetic; see tbucket.h. */
#include "bridge/lib/tbucket.h"

void tbucket_init(struct tbucket *b, unsigned burst, uint64_t refill_ms, uint64_t now_ms) {
    b->burst = burst ? burst : 1;
    b->refill_ms = refill_ms ? refill_ms : 1;
    b->level = (int64_t)(b->burst * b->refill_ms);
    b->last_ms = now_ms;
}

/* Bank the refill earned since the last update. */
static void tbucket_refill(struct tbucket *b, uint64_t now_ms) {
    int64_t full = (int64_t)(b->burst * b->refill_ms);
    if (now_ms > b->last_ms) {
        uint64_t elapsed = now_ms - b->last_ms;
        /* Compare before adding so a long idle period cannot overflow. */
        if (b->level >= full || elapsed >= (uint64_t)(full - b->level))
            b->level = full;
        else
            b->level += (int64_t)elapsed;
        b->last_ms = now_ms;
    }
}

uint64_t tbucket_reserve(struct tbucket *b, uint64_t now_ms) {
    tbucket_refill(b, now_ms);
    b->level -= (int64_t)b->refill_ms;
    return b->level >= 0 ? 0 : (uint64_t)-b->level;
}

bool tbucket_take(struct tbucket *b, uint64_t now_ms) {
    tbucket_refill(b, now_ms);
    if (b->level < (int64_t)b->refill_ms)
        return false;
    b->level -= (int64_t)b->refill_ms;
    return true;
}

void tbucket_fill(struct tbucket *b, uint64_t now_ms) {
    b->level = (int64_t)(b->burst * b->refill_ms);
    if (now_ms > b->last_ms)
        b->last_ms = now_ms;
}

void tbucket_set_refill(struct tbucket *b, uint64_t refill_ms, uint64_t now_ms) {
    if (refill_ms == 0)
        refill_ms = 1;
    if (refill_ms == b->refill_ms)
        return;
    tbucket_refill(b, now_ms);
    b->level = b->level * (int64_t)refill_ms / (int64_t)b->refill_ms;
    b->refill_ms = refill_ms;
}
