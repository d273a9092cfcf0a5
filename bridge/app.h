/* app.h - the application: what main hands over (the command line, the
 * loaded configuration, the logger) and the little that lives across reloads
 * (the metrics registry, the last status told to systemd).
 *
 * Everything one configuration builds (the loop, the source, the key cache,
 * the Kubernetes client, the informers, the reconciler, the HTTP server) is
 * a generation: allocated when the daemon starts and again on every reload,
 * freed when it ends (bridge/app_internal.h). app_main runs generations until
 * one ends without a reload. */
#ifndef CB_APP_H
#define CB_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "bridge/config.h"
#include "bridge/lib/log.h"
#include "bridge/lib/metrics.h"

/* The daemon, and the commands an operator runs once by hand. */
enum app_cmd { CMD_RUN, CMD_SYNC, CMD_RENDER, CMD_CHECK, CMD_STATUS, CMD_DIFF };

/* Exit statuses: success, a runtime failure, a usage or configuration error.
 * `diff` exits as `kubectl diff` does: 0 nothing would change, 1 something
 * would, 2 an error (of any kind). */
enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
enum { EXIT_DIFF_NONE = 0, EXIT_DIFF_CHANGES = 1, EXIT_DIFF_ERROR = 2 };

struct app {
    /* public: set by main before app_main */
    struct logger log;
    struct config cfg; /* loaded by main; a reload replaces it */
    enum app_cmd cmd;
    bool dry_run;
    bool verbose;        /* -v: debug logs whatever log.level says */
    const char *route;   /* render, status, diff: the one route ("ns/name"), or NULL */
    bool json;           /* status -o json */
    uint64_t timeout_ms; /* one-shot commands: --timeout; 0 = the default 30 s */

    /* private: kept across reloads (counters must not reset when the config does) */
    struct metrics *metrics;
    struct bridge_metrics bm;
    char last_status[256];  /* last STATUS= sent */
    bool reload;            /* the generation stopped for a reload: next is next_cfg */
    bool diff_changes;      /* diff found changes: its exit status 1 is no failure */
    struct config next_cfg; /* loaded and valid, swapped in between generations */
};

/* Run a command with a loaded config; returns the process exit status. */
int app_main(struct app *a);

#endif
