/* backoff.c - exponential backoff with jitter; see backoff.h. */
#include "bridge/lib/backoff.h"

#include <stdlib.h>

uint64_t backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms) {
    uint64_t cap = base_ms;
    for (unsigned i = 0; i < attempt && cap < max_ms; i++)
        cap *= 2;
    if (cap > max_ms)
        cap = max_ms;
    uint64_t half = cap / 2;
    /* rand() is fine for jitter: it spreads retries, it guards nothing. */
    return half + (half ? (uint64_t)rand() % (half + 1) : 0);
}
