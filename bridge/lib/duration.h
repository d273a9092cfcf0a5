/* duration.h - Go-style durations, as operators write them in the config file
 * and in keys: "250ms", "30s", "5m", "1h30m", "1.5h", "0". Units are ms, s, m
 * and h; a bare number other than 0 is refused (is "30" seconds or
 * milliseconds?). Values that would not fit in 64 bits of milliseconds are
 * refused, never wrapped. */
#ifndef CB_DURATION_H
#define CB_DURATION_H

#include <stdint.h>

/* Returns 0 with *out set, or -1 (NULL, empty or malformed text). */
int parse_duration_ms(const char *s, uint64_t *out);

#endif
