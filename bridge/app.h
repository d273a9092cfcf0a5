/* app.h - the application context: the one struct that holds the daemon's
 * state (loop, config, logger, source, key cache, Kubernetes client,
 * informers, reconciler), and the commands of SPEC section 4 built on it. */
#ifndef CB_APP_H
#define CB_APP_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bridge/config.h"
#include "bridge/core/keycache.h"
#include "bridge/core/reconcile.h"
#include "bridge/lib/http.h"
#include "bridge/lib/httpd.h"
#include "bridge/lib/log.h"
#include "bridge/lib/metrics.h"
#include "bridge/lib/notify.h"
#include "sinks/events.h"
#include "sinks/informer.h"
#include "sinks/kube.h"
#include "sinks/lease.h"
#include "sources/source.h"

enum app_cmd { CMD_RUN, CMD_SYNC, CMD_RENDER, CMD_CHECK };

/* Exit statuses (SPEC section 4). */
enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

struct app {
    uv_loop_t loop;
    struct logger log;
    struct config cfg;
    enum app_cmd cmd;
    bool dry_run;
    bool verbose;             /* -v: debug logs whatever log.level says */
    const char *render_route; /* `render ROUTE` filter ("ns/name"), or NULL */
    uint64_t timeout_ms;      /* check, sync, render: --timeout; 0 = the default 30 s */

    /* Kept across reloads: counters must not reset when the config does. */
    struct metrics *metrics;
    struct bridge_metrics bm;
    uint64_t conflicts_seen; /* rec.stats.conflicts already added to the counter */
    uint64_t undone_seen;    /* rec.stats.undone already added to the counter */
    bool ready_notified;     /* READY=1 sent for this generation */
    char last_status[256];   /* last STATUS= sent */

    /* A generation: everything below is rebuilt when SIGHUP brings a valid
     * new configuration (stop gracefully, then start again). */
    bool reload; /* start a new generation with next_cfg */
    struct config next_cfg;
    struct notifier notify;
    struct httpd *httpd;
    bool source_connected;
    struct lease_elector lease; /* leader_election.enabled */
    bool have_lease, lease_releasing;
    bool leader;                   /* may write: elected, or no election configured */
    struct event_recorder *events; /* NULL in dry-run */
    struct map status_writes;      /* route id -> struct status_write in flight */
    /* route id -> the services it has route_weight series for, packed as
     * "a\0b\0\0": a pass updates its own series without scanning all. */
    struct map weight_series;
    struct map weights_in_force; /* route id -> {"svc":weight,...} last applied (JSON) */
    bool status_write_failing;   /* logged once per streak of failed status writes */

    struct http_client *http;
    struct source *source;
    struct keycache keys;
    struct kube_client *kube;
    struct informer inf[OBJ_NKINDS]; /* Middlewares, TraefikServices, IngressRoutes */
    struct reconciler rec;
    char api_group[64];
    char field_manager[160]; /* ?fieldManager= of our writes */

    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t resync_timer;
    uv_timer_t deadline; /* one-shot commands and shutdown */
    uv_timer_t drain_timer;
    uv_timer_t discovery_timer; /* retries of traefik.api_group: auto */

    bool have_keys, have_informers, have_rec, have_timers;
    bool source_synced;
    unsigned informers_synced;
    bool working; /* workqueue released */
    bool stopping;
    bool torn_down;
    bool check_source_ok, check_api_done, check_api_ok;
    bool check_source_refused;   /* the source refused the credentials: FAIL printed */
    struct kube_call *discovery; /* traefik.api_group: auto */
    unsigned discovery_failures;
    int exit_code;
};

/* Run a command with a loaded config; returns the process exit status. */
int app_main(struct app *a);

#endif
