/* backoff.h - exponential backoff with jitter, the one formula every retry in
 * the daemon uses (source reconnects, 409 retries, route requeues). Jitter
 * spreads retries from many routes or many bridges so they do not arrive at
 * the server in lockstep. */
#ifndef CB_BACKOFF_H
#define CB_BACKOFF_H

#include <stdint.h>

/* cap = min(base * 2^attempt, max); returns a uniform value in [cap/2, cap]. */
uint64_t backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms);

#endif
