/* duration.c - Go-style durations ("250ms", "1h30m"); see duration.h. */
#include "bridge/lib/duration.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---- durations ---------------------------------------------------------------- */

/* Milliseconds per unit; "ms" is tried before "m". Units below a millisecond
 * are refused rather than rounded: nothing in the bridge is that precise. */
static uint64_t unit_ms(const char **s) {
    static const struct {
        const char *name;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        size_t n = strlen(units[i].name);
        if (!strncmp(*s, units[i].name, n)) {
            *s += n;
            return units[i].ms;
        }
    }
    return 0;
}

/* One "<number>[.<fraction>]<unit>" term, added to *total. */
static int duration_term(const char **s, uint64_t *total) {
    uint64_t whole = 0, frac = 0, scale = 1;
    bool digits = false;
    for (; **s >= '0' && **s <= '9'; (*s)++, digits = true) {
        uint64_t d = (uint64_t)(**s - '0');
        if (whole > (UINT64_MAX - d) / 10)
            return -1;
        whole = whole * 10 + d;
    }
    if (**s == '.') {
        for ((*s)++; **s >= '0' && **s <= '9'; (*s)++, digits = true) {
            if (scale >= 1000000000)
                return -1; /* more decimals than any unit here can use */
            frac = frac * 10 + (uint64_t)(**s - '0');
            scale *= 10;
        }
    }
    uint64_t unit = digits ? unit_ms(s) : 0;
    if (unit == 0 || whole > UINT64_MAX / unit || (frac * unit) % scale != 0)
        return -1; /* no unit, overflow, or not a whole number of milliseconds */
    /* frac < 10^9 and unit <= 3.6e6, so frac * unit fits; the whole part
     * plus the fraction may not ("5124095576030.9h" would wrap to minutes). */
    uint64_t whole_ms = whole * unit, frac_ms = frac * unit / scale;
    if (frac_ms > UINT64_MAX - whole_ms)
        return -1;
    uint64_t term = whole_ms + frac_ms;
    if (term > UINT64_MAX - *total)
        return -1;
    *total += term;
    return 0;
}

int parse_duration_ms(const char *s, uint64_t *out) {
    if (!s || !*s)
        return -1;
    if (!strcmp(s, "0")) {
        *out = 0;
        return 0;
    }
    uint64_t total = 0;
    while (*s)
        if (duration_term(&s, &total) < 0)
            return -1;
    *out = total;
    return 0;
}
