/* informer.h - a cached, watched view of one resource type, cluster-wide
 * (or, with informer_set_scope, of one namespace and/or a label selector).
 *
 * List once, then watch from the list's resourceVersion; every change lands
 * in a local cache and is reported. This is what lets the reconciler write
 * without a GET first (it knows the live object and its resourceVersion),
 * and what reveals drift: a hand edit of a managed object shows up as a
 * MODIFIED event. A watch that ends cleanly is resumed from the last version
 * seen; "410 Gone/Expired" (an HTTP 410, or an ERROR event with code 410, as
 * real API servers send) means re-list. Errors back off with jitter. */
#ifndef CB_INFORMER_H
#define CB_INFORMER_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/lib/log.h"
#include "bridge/lib/map.h"
#include "sinks/kobj.h" /* the helpers its users apply to its objects */
#include "sinks/kube.h"

/* obj is the new live object, or NULL when it was deleted. */
typedef void (*informer_change_cb)(void *user, const char *ns, const char *name, const cJSON *obj);
typedef void (*informer_synced_cb)(void *user);

/* Objects per list page, as client-go's informers ask for. */
#define INFORMER_PAGE 500

/* How many objects from informer_get stay valid at once. */
#define INFORMER_PARSED 4

struct informer;
/* The informer's timer has closed and its cache is freed: inf may go. */
typedef void (*informer_close_cb)(struct informer *inf);

/* Embedded by its owner. */
struct informer {
    /* read-only */
    struct map objects;      /* "ns/name" -> compact JSON text and resourceVersion (owned) */
    bool synced;             /* a list has completed */
    uint64_t lists, watches; /* counters, for tests and metrics */
    /* private */
    uv_loop_t *loop;
    struct kube_client *kc;
    struct logger *log;
    char *group, *version, *plural;
    char *ns;                       /* list/watch this namespace only; NULL: all namespaces */
    char *selector;                 /* labelSelector of the list/watch, or NULL */
    cJSON *parsed[INFORMER_PARSED]; /* what informer_get handed out lately */
    size_t parsed_next;
    char *rv; /* resourceVersion to watch from */
    /* A list in pages (limit=INFORMER_PAGE, then continue=...): the loop
     * serves events between pages instead of parsing 10,000 objects in one
     * go. Objects are stored page by page; those not seen by the end of the
     * list are gone. */
    char *cont;      /* continue token of the next page, NULL on the first */
    struct map seen; /* ids listed so far in this list (values unused) */
    bool stopped;
    bool relist; /* the current watch asked for a re-list (410) */
    unsigned failures;
    char problem[512];      /* why the last list/watch failed, "" once one works */
    struct kube_call *call; /* the list or watch in flight */
    uv_timer_t timer;       /* backoff before the next list/watch */
    informer_change_cb on_change;
    informer_synced_cb on_synced;
    void *user;
    informer_close_cb on_closed;
};

/* Set up inf (no I/O): on_change and on_synced are called with user. 0, or
 * -1 out of memory (nothing to close then). */
int informer_init(struct informer *inf, uv_loop_t *loop, struct kube_client *kc, struct logger *lg,
                  const char *group, const char *version, const char *plural,
                  informer_change_cb on_change, informer_synced_cb on_synced, void *user);
/* Before informer_start: list and watch namespace ns only (NULL: all) and
 * only objects matching label_selector (NULL: all), e.g. "app" or "a=b".
 * 0, or -1 out of memory (the scope is then unchanged). */
int informer_set_scope(struct informer *inf, const char *ns, const char *label_selector);
/* List, then watch. */
int informer_start(struct informer *inf);
/* Re-list now (periodic resync). */
void informer_resync(struct informer *inf);
/* Why this informer cannot list or watch now (its last attempt failed and
 * none has worked since), or NULL. */
const char *informer_problem(struct informer *inf);
/* Cancel the list/watch in flight and the retry timer; no callback
 * afterwards. The cache stays readable. */
void informer_stop(struct informer *inf);
/* informer_stop, then close the timer; once it has closed, the cache is
 * freed and cb(inf) is called (cb may be NULL): then inf's memory may go.
 * A second call does nothing. */
void informer_close(struct informer *inf, informer_close_cb cb);

/* The cached object, parsed for the caller (NULL when not cached). The
 * informer owns it: it stays valid until INFORMER_PARSED more informer_get
 * calls on this informer, or informer_close; use it, do not keep it. */
const cJSON *informer_get(struct informer *inf, const char *ns, const char *name);
/* The cached object's resourceVersion, without parsing it (NULL: not cached). */
const char *informer_rv(const struct informer *inf, const char *ns, const char *name);
/* The field manager that last changed the cached object's spec, from its
 * managedFields (NULL: not cached, or unknown). */
const char *informer_writer(const struct informer *inf, const char *ns, const char *name);
/* Store an object we just wrote (the API's answer) so the next write uses its
 * resourceVersion; ignored when the cache already holds a newer one. The
 * answer's metadata.managedFields are removed on the way (no copy is made:
 * at one write per change, the copy was a third of the instructions). */
void informer_store(struct informer *inf, cJSON *obj);
void informer_forget(struct informer *inf, const char *ns, const char *name);

#endif
