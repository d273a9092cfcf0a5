/* workqueue.h - the queue of routes waiting to be reconciled.
 *
 * Semantics follow client-go's workqueue, which reconcilers are built around:
 *  - a key is queued at most once: bursts of edits coalesce into one pass that
 *    sees the latest state;
 *  - a key being processed is never handed out twice; if it is added while in
 *    flight it is marked dirty and queued again when the pass ends;
 *  - a failing key comes back after an exponential backoff with jitter, while
 *    other keys proceed;
 *  - at most `max_in_flight` keys are processed at once;
 *  - a pass may be deferred (workqueue_done_defer, a rate limit): the key runs
 *    again after the delay, and input meanwhile waits with it and runs once.
 * Keys queued by workqueue_add_change (source changes) go before keys queued by
 * workqueue_add (re-checks), so a weight change never waits behind a periodic
 * resync of 10,000 routes.
 * Processing starts from a uv_idle handle, i.e. on the next loop iteration
 * after an add: every event already read in this iteration lands in the queue
 * first, and nothing waits on a timer.
 *
 * Burst settling (workqueue_settle): a single edit is handed out at once, but a
 * stream of source changes faster than any person types (a script or a
 * transaction rewriting many routes) would otherwise become one write per
 * change. Changes added with workqueue_add_change to keys that did not change in
 * the last second draw from a token bucket; when it runs dry the queue
 * holds: nothing new is handed out (passes in flight finish) until the
 * changes stop for `quiet_ms`, or `max_hold_ms` has passed.
 * Then everything queued is handed out, each key once with its latest state,
 * before the queue may hold again. */
#ifndef CB_WORKQUEUE_H
#define CB_WORKQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/lib/list.h"
#include "bridge/lib/map.h"
#include "bridge/lib/tbucket.h"

struct workqueue_item;

/* Called for each key handed out; the consumer must call workqueue_done(key) exactly
 * once when its pass ends (possibly much later, from an I/O callback). */
typedef void (*workqueue_process_cb)(void *user, const char *key);
/* Told when a hold begins (holding=true) and when it ends (changes = the
 * adds from the one that began it on, held_ms = how long it lasted). */
typedef void (*workqueue_settle_cb)(void *user, bool holding, size_t changes, uint64_t held_ms);

/* Burst settling state; private to workqueue.c. */
struct workqueue_settle {
    struct tbucket rate;            /* changes within the rate draw from it */
    uint64_t quiet_ms, max_hold_ms; /* max_hold_ms 0 = settling off */
    uv_timer_t timer;               /* ends the hold */
    bool holding;
    bool flushing;               /* released: no new hold until the FIFO has drained */
    uint64_t since, last_change; /* loop times (ms) */
    size_t changes;              /* adds during this hold */
    workqueue_settle_cb cb;
};

/* Embedded by its owner. Lifecycle: workqueue_init, workqueue_close (the
 * handles), then workqueue_free (the memory) once the loop has run the close
 * callbacks; processing starts with the first add. */
struct workqueue {
    /* public: may be changed after workqueue_init */
    uint64_t base_backoff_ms, max_backoff_ms; /* retry backoff bounds */
    /* read-only */
    uv_loop_t *loop;
    size_t queued, in_flight, max_in_flight;
    bool paused; /* hold processing (e.g. until caches are synced) */
    /* private */
    uv_idle_t idle;   /* drains the queue on the next iteration */
    uv_timer_t timer; /* fires when the earliest delayed key is due */
    struct map items; /* key -> struct workqueue_item */
    /* Queued keys, two FIFOs: source changes first, then re-checks
     * (resync, drift, retries), so an edit never waits behind a resync of
     * every route. */
    struct list_node fifo[2];
    struct workqueue_item **heap; /* delayed keys, min-heap on due time */
    size_t heap_len, heap_cap;
    struct workqueue_settle settle;
    bool closing;
    workqueue_process_cb process;
    void *user;
};

/* 0, or -1 when a handle cannot be set up (those set up already are closing:
 * keep q until the loop has run; no workqueue_close). */
int workqueue_init(struct workqueue *q, uv_loop_t *loop, size_t max_in_flight,
                   workqueue_process_cb process, void *user);
/* Close the uv handles: nothing is handed out after it. */
void workqueue_close(struct workqueue *q);
/* Free the queue's memory, after the close callbacks have run. */
void workqueue_free(struct workqueue *q);

/* Queue key now (no-op if already queued; dirty if in flight). 0 / -1 ENOMEM. */
int workqueue_add(struct workqueue *q, const char *key);
/* The same, for a change that came from the source: it counts towards
 * burst detection and may start or extend a hold. */
int workqueue_add_change(struct workqueue *q, const char *key);
/* Configure burst settling: at most `burst` changes at once and one more
 * every `refill_ms` pass without a hold; a hold ends after `quiet_ms`
 * without changes or after `max_hold_ms` (0 turns settling off). cb may be
 * NULL. */
void workqueue_settle(struct workqueue *q, unsigned burst, uint64_t refill_ms, uint64_t quiet_ms,
                      uint64_t max_hold_ms, workqueue_settle_cb cb);
/* Queue key after delay_ms unless it gets queued sooner. */
int workqueue_add_after(struct workqueue *q, const char *key, uint64_t delay_ms);
/* End a pass. retry=true requeues with the key's backoff (its failure count
 * grows); retry=false forgets the failures. A dirty key is requeued now. */
void workqueue_done(struct workqueue *q, const char *key, bool retry);
/* Same, with an explicit delay (e.g. Retry-After); counts as a failure. */
void workqueue_done_after(struct workqueue *q, const char *key, uint64_t delay_ms);
/* Same, but new input overrides the delay (a workqueue_add runs it at once): for a
 * failure only time or a change can fix. */
void workqueue_done_in(struct workqueue *q, const char *key, uint64_t delay_ms);
/* End a pass that did not run yet, for a rate limit: the key runs again
 * after delay_ms, not sooner even on new input (which waits with it and is
 * handed out once, with the latest state). Not a failure: the key's failure
 * count stays as it was. */
void workqueue_done_defer(struct workqueue *q, const char *key, uint64_t delay_ms);
void workqueue_pause(struct workqueue *q, bool paused);

/* Keys queued or in flight (delayed ones excluded). */
size_t workqueue_pending(const struct workqueue *q);
size_t workqueue_delayed(const struct workqueue *q);
bool workqueue_holding(const struct workqueue *q);
unsigned workqueue_failures(const struct workqueue *q, const char *key);

#endif
