/* workqueue.c - coalescing, rate-limited route queue; see workqueue.h. */
#include "bridge/lib/workqueue.h"

#include <stdlib.h>
#include <string.h>

#include "bridge/lib/backoff.h"
#include "bridge/lib/timer.h"

enum { ITEM_QUEUED = 1, ITEM_IN_FLIGHT = 2, ITEM_DIRTY = 4 };

/* A key changed again within this long counts once towards a burst. */
#define WORKQUEUE_RECENT_MS 1000

enum { FIFO_CHANGES, FIFO_RECHECKS };

struct workqueue_item {
    struct list_node link; /* in its FIFO while queued */
    unsigned flags;
    bool urgent;   /* a source change: goes to FIFO_CHANGES when queued */
    unsigned fifo; /* the FIFO it is in while ITEM_QUEUED */
    unsigned failures;
    size_t heap_idx;     /* SIZE_MAX when not delayed */
    uint64_t due;        /* loop time (ms) when delayed */
    uint64_t not_before; /* loop time before which it must not run (Retry-After, deferral) */
    uint64_t changed;    /* loop time of its last change (workqueue_add_change), 0 never */
    char key[];          /* own copy: handed to the consumer while in flight */
};

static void idle_hand_out(uv_idle_t *h);
static void delay_timer_fired(uv_timer_t *h);
static void settle_timer_fired(uv_timer_t *h);

int workqueue_init(struct workqueue *q, uv_loop_t *loop, size_t max_in_flight,
                   workqueue_process_cb process, void *user) {
    memset(q, 0, sizeof *q);
    q->loop = loop;
    q->max_in_flight = max_in_flight ? max_in_flight : 1;
    q->process = process;
    q->user = user;
    q->base_backoff_ms = 50;
    q->max_backoff_ms = 30000;
    list_init(&q->fifo[FIFO_CHANGES]);
    list_init(&q->fifo[FIFO_RECHECKS]);
    if (uv_idle_init(loop, &q->idle) != 0)
        return -1;
    if (uv_timer_init(loop, &q->timer) != 0) {
        uv_close((uv_handle_t *)&q->idle, NULL);
        return -1;
    }
    if (uv_timer_init(loop, &q->settle.timer) != 0) {
        uv_close((uv_handle_t *)&q->idle, NULL);
        uv_close((uv_handle_t *)&q->timer, NULL);
        return -1;
    }
    q->idle.data = q;
    q->timer.data = q;
    q->settle.timer.data = q;
    return 0;
}

void workqueue_close(struct workqueue *q) {
    q->closing = true;
    if (!uv_is_closing((uv_handle_t *)&q->idle))
        uv_close((uv_handle_t *)&q->idle, NULL);
    if (!uv_is_closing((uv_handle_t *)&q->timer))
        uv_close((uv_handle_t *)&q->timer, NULL);
    if (!uv_is_closing((uv_handle_t *)&q->settle.timer))
        uv_close((uv_handle_t *)&q->settle.timer, NULL);
}

void workqueue_free(struct workqueue *q) {
    struct map_iter it;
    map_iter_init(&it, &q->items);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        free(e->value);
    map_free(&q->items);
    free(q->heap);
    q->heap = NULL;
}

static struct workqueue_item *item_get(struct workqueue *q, const char *key, bool create) {
    struct workqueue_item *it = map_get(&q->items, key);
    if (it || !create)
        return it;
    size_t klen = strlen(key);
    it = calloc(1, sizeof *it + klen + 1);
    if (!it)
        return NULL;
    memcpy(it->key, key, klen + 1);
    list_init(&it->link);
    it->heap_idx = SIZE_MAX;
    if (map_put(&q->items, key, it, NULL) < 0) {
        free(it);
        return NULL;
    }
    return it;
}

/* ---- delayed keys: a binary min-heap on `due` ---- */

static void heap_swap(struct workqueue *q, size_t a, size_t b) {
    struct workqueue_item *t = q->heap[a];
    q->heap[a] = q->heap[b];
    q->heap[b] = t;
    q->heap[a]->heap_idx = a;
    q->heap[b]->heap_idx = b;
}

static void heap_up(struct workqueue *q, size_t i) {
    while (i > 0 && q->heap[(i - 1) / 2]->due > q->heap[i]->due) {
        heap_swap(q, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct workqueue *q, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->heap_len && q->heap[l]->due < q->heap[m]->due)
            m = l;
        if (r < q->heap_len && q->heap[r]->due < q->heap[m]->due)
            m = r;
        if (m == i)
            return;
        heap_swap(q, i, m);
        i = m;
    }
}

static void heap_remove(struct workqueue *q, struct workqueue_item *it) {
    size_t i = it->heap_idx;
    if (i == SIZE_MAX)
        return;
    q->heap_len--;
    if (i != q->heap_len) {
        q->heap[i] = q->heap[q->heap_len];
        q->heap[i]->heap_idx = i;
        heap_down(q, i);
        heap_up(q, i);
    }
    it->heap_idx = SIZE_MAX;
}

static struct workqueue_item *fifo_first(const struct workqueue *q) {
    struct list_node *n = list_first(&q->fifo[FIFO_CHANGES]);
    if (!n)
        n = list_first(&q->fifo[FIFO_RECHECKS]);
    return n ? list_entry(n, struct workqueue_item, link) : NULL;
}

/* Fire when the earliest delayed key is due. */
static void delay_timer_rearm(struct workqueue *q) {
    if (q->closing)
        return;
    if (!q->heap_len) {
        uv_timer_stop(&q->timer);
        return;
    }
    uint64_t now = uv_now(q->loop), due = q->heap[0]->due;
    timer_arm(&q->timer, delay_timer_fired, due > now ? due - now : 0, 0);
}

static void idle_rearm(struct workqueue *q) {
    if (q->closing)
        return;
    bool want =
        !q->paused && !q->settle.holding && fifo_first(q) && q->in_flight < q->max_in_flight;
    if (want && !uv_is_active((uv_handle_t *)&q->idle))
        uv_idle_start(&q->idle, idle_hand_out);
    else if (!want && uv_is_active((uv_handle_t *)&q->idle))
        uv_idle_stop(&q->idle);
}

static void fifo_push(struct workqueue *q, struct workqueue_item *it) {
    unsigned f = it->urgent ? FIFO_CHANGES : FIFO_RECHECKS;
    it->flags |= ITEM_QUEUED;
    it->fifo = f;
    list_push_back(&q->fifo[f], &it->link);
    q->queued++;
}

static void fifo_unlink(struct workqueue *q, struct workqueue_item *it) {
    list_remove(&it->link);
    it->flags &= ~ITEM_QUEUED;
    q->queued--;
}

static int delay_item(struct workqueue *q, struct workqueue_item *it, uint64_t delay_ms);

static void enqueue(struct workqueue *q, struct workqueue_item *it) {
    uint64_t now = uv_now(q->loop);
    if (it->not_before > now && !(it->flags & (ITEM_QUEUED | ITEM_IN_FLIGHT))) {
        /* The server asked us to wait: new input waits with it, then runs. */
        if (it->heap_idx == SIZE_MAX || it->due != it->not_before) {
            heap_remove(q, it);
            (void)delay_item(q, it, it->not_before - now);
        }
        return;
    }
    heap_remove(q, it);
    if (it->flags & ITEM_QUEUED)
        return;
    if (it->flags & ITEM_IN_FLIGHT) {
        it->flags |= ITEM_DIRTY;
        return;
    }
    fifo_push(q, it);
    idle_rearm(q);
}

int workqueue_add(struct workqueue *q, const char *key) {
    struct workqueue_item *it = item_get(q, key, true);
    if (!it)
        return -1;
    enqueue(q, it);
    delay_timer_rearm(q);
    return 0;
}

/* ---- burst settling ---- */

void workqueue_settle(struct workqueue *q, unsigned burst, uint64_t refill_ms, uint64_t quiet_ms,
                      uint64_t max_hold_ms, workqueue_settle_cb cb) {
    struct workqueue_settle *st = &q->settle;
    tbucket_init(&st->rate, burst, refill_ms, uv_now(q->loop));
    st->quiet_ms = quiet_ms ? quiet_ms : 1;
    st->max_hold_ms = max_hold_ms;
    st->cb = cb;
}

bool workqueue_holding(const struct workqueue *q) {
    return q->settle.holding;
}

static void settle_rearm(struct workqueue *q) {
    struct workqueue_settle *st = &q->settle;
    if (q->closing || !st->holding)
        return;
    uint64_t end = st->last_change + st->quiet_ms, cap = st->since + st->max_hold_ms;
    if (cap < end)
        end = cap;
    uint64_t now = uv_now(q->loop);
    timer_arm(&st->timer, settle_timer_fired, end > now ? end - now : 0, 0);
}

/* A change arrived now; `fresh` when it is new work for the queue (not a key
 * already waiting). Any change keeps a hold going; fresh ones draw from the
 * bucket and may start one. */
static void settle_change(struct workqueue *q, bool fresh) {
    struct workqueue_settle *st = &q->settle;
    if (st->max_hold_ms == 0 || q->closing)
        return;
    uint64_t now = uv_now(q->loop);
    st->last_change = now;
    if (st->holding) {
        st->changes++;
        return; /* the timer looks at last_change when it fires */
    }
    /* While a released hold drains, changes queue behind it and are not
     * counted: the next hold starts from a fresh bucket. */
    if (!fresh || st->flushing || tbucket_take(&st->rate, now))
        return;
    st->holding = true;
    st->since = now;
    st->changes = 1;
    idle_rearm(q);
    settle_rearm(q);
    if (st->cb)
        st->cb(q->user, true, 1, 0);
}

static void settle_release(struct workqueue *q) {
    struct workqueue_settle *st = &q->settle;
    uint64_t now = uv_now(q->loop);
    st->holding = false;
    st->flushing = fifo_first(q) != NULL;
    tbucket_fill(&st->rate, now);
    uv_timer_stop(&st->timer);
    idle_rearm(q);
    if (st->cb)
        st->cb(q->user, false, st->changes, now - st->since);
}

static void settle_timer_fired(uv_timer_t *h) {
    struct workqueue *q = h->data;
    struct workqueue_settle *st = &q->settle;
    if (!st->holding || q->closing)
        return;
    uint64_t now = uv_now(q->loop);
    if (now >= st->last_change + st->quiet_ms || now >= st->since + st->max_hold_ms)
        settle_release(q);
    else
        settle_rearm(q); /* changes kept coming: wait for quiet again */
}

int workqueue_add_change(struct workqueue *q, const char *key) {
    /* Only another key counts: the keys of one route written together, or
     * a route changed again before its pass began, are one change; and one
     * route rewritten in a loop is bounded already (one pass in flight per
     * key), so a key that changed within the last second counts once. It is
     * many routes changing together that makes a burst. */
    struct workqueue_item *it = item_get(q, key, true);
    if (!it)
        return -1;
    uint64_t now = uv_now(q->loop);
    bool fresh = !(it->flags & (ITEM_QUEUED | ITEM_DIRTY)) &&
                 (it->changed == 0 || now - it->changed >= WORKQUEUE_RECENT_MS);
    it->changed = now ? now : 1;
    it->urgent = true;
    if ((it->flags & ITEM_QUEUED) && it->fifo != FIFO_CHANGES) {
        fifo_unlink(q, it); /* queued by a re-check: move it ahead */
        fifo_push(q, it);
    }
    enqueue(q, it);
    delay_timer_rearm(q);
    settle_change(q, fresh);
    return 0;
}

static int delay_item(struct workqueue *q, struct workqueue_item *it, uint64_t delay_ms) {
    if (it->flags & (ITEM_QUEUED | ITEM_DIRTY))
        return 0; /* already going to run sooner */
    uint64_t due = uv_now(q->loop) + delay_ms;
    if (it->heap_idx != SIZE_MAX) {
        if (it->due <= due)
            return 0; /* keep the earlier time */
        it->due = due;
        heap_up(q, it->heap_idx);
        delay_timer_rearm(q);
        return 0;
    }
    if (q->heap_len == q->heap_cap) {
        size_t cap = q->heap_cap ? q->heap_cap * 2 : 16;
        struct workqueue_item **h = realloc(q->heap, cap * sizeof *h);
        if (!h)
            return -1;
        q->heap = h;
        q->heap_cap = cap;
    }
    it->due = due;
    it->heap_idx = q->heap_len;
    q->heap[q->heap_len++] = it;
    heap_up(q, it->heap_idx);
    delay_timer_rearm(q);
    return 0;
}

int workqueue_add_after(struct workqueue *q, const char *key, uint64_t delay_ms) {
    if (delay_ms == 0)
        return workqueue_add(q, key);
    struct workqueue_item *it = item_get(q, key, true);
    if (!it)
        return -1;
    if (it->flags & ITEM_IN_FLIGHT)
        return 0; /* the pass in flight decides what happens next */
    return delay_item(q, it, delay_ms);
}

static void pass_end(struct workqueue *q, const char *key, bool retry, uint64_t delay_ms,
                     bool explicit_delay, bool hold) {
    struct workqueue_item *it = item_get(q, key, false);
    if (!it || !(it->flags & ITEM_IN_FLIGHT))
        return;
    it->flags &= ~ITEM_IN_FLIGHT;
    q->in_flight--;
    if (retry) {
        if (!explicit_delay)
            delay_ms = backoff_ms(it->failures, q->base_backoff_ms, q->max_backoff_ms);
        if (it->failures < 64)
            it->failures++;
        /* A delay the server asked for (Retry-After) holds even against new
         * input; our own backoff gives way to it (new input may fix things). */
        it->not_before = explicit_delay && hold ? uv_now(q->loop) + delay_ms : 0;
    } else {
        it->failures = 0;
        it->not_before = 0;
    }
    if (it->flags & ITEM_DIRTY) {
        /* New input arrived during the pass: run again now, it may fix it. */
        it->flags &= ~ITEM_DIRTY;
        enqueue(q, it);
    } else if (retry && !q->closing) {
        (void)delay_item(q, it, delay_ms);
    }
    idle_rearm(q);
}

void workqueue_done(struct workqueue *q, const char *key, bool retry) {
    pass_end(q, key, retry, 0, false, false);
}

void workqueue_done_after(struct workqueue *q, const char *key, uint64_t delay_ms) {
    pass_end(q, key, true, delay_ms, true, true);
}

void workqueue_done_in(struct workqueue *q, const char *key, uint64_t delay_ms) {
    pass_end(q, key, true, delay_ms, true, false);
}

void workqueue_done_defer(struct workqueue *q, const char *key, uint64_t delay_ms) {
    struct workqueue_item *it = item_get(q, key, false);
    if (!it || !(it->flags & ITEM_IN_FLIGHT))
        return;
    it->flags &= ~(ITEM_IN_FLIGHT | ITEM_DIRTY); /* input meanwhile runs with the deferred pass */
    q->in_flight--;
    it->not_before = uv_now(q->loop) + delay_ms;
    if (!q->closing)
        (void)delay_item(q, it, delay_ms);
    idle_rearm(q);
}

void workqueue_pause(struct workqueue *q, bool paused) {
    q->paused = paused;
    idle_rearm(q);
}

size_t workqueue_pending(const struct workqueue *q) {
    return q->queued + q->in_flight;
}

size_t workqueue_delayed(const struct workqueue *q) {
    return q->heap_len;
}

unsigned workqueue_failures(const struct workqueue *q, const char *key) {
    struct workqueue_item *it = map_get(&q->items, key);
    return it ? it->failures : 0;
}

static void idle_hand_out(uv_idle_t *h) {
    struct workqueue *q = h->data;
    struct workqueue_item *it;
    while (!q->paused && !q->settle.holding && !q->closing && (it = fifo_first(q)) &&
           q->in_flight < q->max_in_flight) {
        fifo_unlink(q, it);
        it->urgent = false;
        it->flags |= ITEM_IN_FLIGHT;
        q->in_flight++;
        /* process may call workqueue_done synchronously; the item stays valid
         * because items are only freed by workqueue_free. */
        q->process(q->user, it->key);
    }
    if (!fifo_first(q))
        q->settle.flushing = false; /* all that was held has been handed out */
    idle_rearm(q);
}

static void delay_timer_fired(uv_timer_t *h) {
    struct workqueue *q = h->data;
    uint64_t now = uv_now(q->loop);
    while (q->heap_len && q->heap[0]->due <= now) {
        struct workqueue_item *it = q->heap[0];
        heap_remove(q, it);
        enqueue(q, it);
    }
    delay_timer_rearm(q);
}
