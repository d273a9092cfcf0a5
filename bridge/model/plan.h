/* plan.h - ramp plans: steps of weights with a hold time each.
 *
 * A `plan` value lists the weights a route should carry, step by step, and
 * how long each step holds before the next takes over. This module parses and
 * validates one (three spellings, see docs/usage.md "Ramp plans") and answers
 * the one question a timer needs: which step is in force at a given time, and
 * when does the next change happen. It is pure: no I/O, no clock reads (times
 * are parameters, milliseconds since the epoch), no libuv, so the weight in
 * force is a function of the plan, its start time and the clock alone.
 *
 * Steps are 0-based here and 1-based in every message ("step 2: hold: ...")
 * and in anything shown to a person. */
#ifndef CB_PLAN_H
#define CB_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/model/model.h"

#define PLAN_STEPS_MAX 100

struct plan_step {
    /* With the route's services given to plan_parse: one weight per service,
     * in the route's order. Without (patched mode): as written, the same
     * services in every step. */
    struct model_weight *weights;
    size_t n_weights;
    uint64_t hold_ms; /* > 0, except on the last step, which holds for good: 0 */
};

struct plan {
    struct plan_step *steps;
    size_t n_steps; /* 1..PLAN_STEPS_MAX */
    /* The document form's options (false/0 in the compact forms): */
    bool pause;        /* `pause: true`: hold the step in force */
    bool force;        /* `force: true`: the steps are deliberate (no max step) */
    bool has_start;    /* `start: <RFC 3339>`: the plan's start, whenever written */
    uint64_t start_ms; /* ms since the epoch (has_start) */
};

/* An RFC 3339 time ("2026-12-06T10:00:00Z", fractions and offsets
 * allowed) in ms since the epoch. 0, or -1 when it is not one. */
int plan_parse_time(const char *s, uint64_t *ms);

/* Parse and validate a plan value. services/n_services are the route's
 * services in order (the first is the stable one the one-line form gives the
 * rest to); n_services 0 when the route has no route document (patched
 * mode). Returns 0 and fills *out, or -1 with a reason naming the step and
 * field in err ("step 2: hold: missing ...") and *out zeroed; the caller
 * prefixes the key. */
int plan_parse(const char *text, size_t len, const char *const *services, size_t n_services,
               struct plan *out, char *err, size_t errlen);
void plan_free(struct plan *p);

/* Where a plan stands at one instant. */
struct plan_pos {
    size_t step; /* 0-based index of the step in force */
    const struct model_weight *weights;
    size_t n_weights;
    uint64_t since_ms; /* when that step took over (the start for the first) */
    bool has_next;     /* false on the last step, when paused, or when the
                          next change lies past the end of the clock's range */
    uint64_t next_ms;  /* when the next step takes over (has_next) */
    bool paused;
    bool has_remaining;    /* paused before the last step: */
    uint64_t remaining_ms; /* the part of the step's hold still to run */
};

/* The step in force at now_ms for a plan started at start_ms. A step takes
 * over exactly at the sum of the holds before it (at start + hold of step 1,
 * step 2 is in force). A clock behind the start (now < start) gives the first
 * step, its change at start + its hold. Sums saturate instead of wrapping. */
void plan_at(const struct plan *p, uint64_t start_ms, uint64_t now_ms, struct plan_pos *out);

/* The step in force while paused at pause_ms: the one plan_at gives for
 * pause_ms, held with no next change; remaining_ms says how much of its hold
 * was left. */
void plan_paused_at(const struct plan *p, uint64_t start_ms, uint64_t pause_ms,
                    struct plan_pos *out);

/* The start that resumes a plan paused at pause_ms, at resume_ms, where it
 * stopped: start + (resume - pause), never past resume_ms; a resume before
 * the pause (a clock step back) keeps the start. */
uint64_t plan_resumed_start(uint64_t start_ms, uint64_t pause_ms, uint64_t resume_ms);

#endif
