/* config.h - the daemon's YAML configuration (conf/bridge.yaml documents
 * every key and its default).
 *
 * Loaded with libyaml's document API so every error names FILE:LINE. Unknown
 * keys, wrong types and missing required values are errors; everything has a
 * documented default. All strings are heap copies owned by struct config. */
#ifndef CB_CONFIG_H
#define CB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/core/reconcile.h"
#include "bridge/lib/log.h"
#include "sinks/kubeconfig.h"
#include "sinks/lease.h"
#include "sinks/traefik.h"
#include "sources/source.h"

/* <sysconfdir>/canary-bridge/bridge.yaml, from meson.build, so the binary
 * looks where `meson install` put the file and the unit points. */
#ifndef CONFIG_DEFAULT_PATH
#error "CONFIG_DEFAULT_PATH is set by meson.build (sysconfdir)"
#endif

struct config {
    char *path; /* file it was read from */

    /* Each layer's own settings, declared by the layer that reads them, so
     * no lower layer includes this file. */
    struct source_settings source;         /* sources/source.h */
    struct kube_settings kubernetes;       /* sinks/kubeconfig.h */
    struct traefik_settings traefik;       /* sinks/traefik.h */
    struct reconcile_settings reconcile;   /* bridge/core/reconcile.h */
    struct lease_settings leader_election; /* sinks/lease.h */

    struct {
        char *listen; /* default "127.0.0.1:9464"; "" disables */
    } server;

    struct {
        enum log_level level;   /* default info */
        enum log_format format; /* default text */
    } log;
};

/* Fill *cfg with defaults (heap strings). Returns 0, or -1 when out of memory. */
int config_defaults(struct config *cfg);
/* Parse YAML text. `name` is used in messages ("name:LINE: ..."). On error,
 * returns -1, writes one message into err and leaves *cfg freed/zeroed. */
int config_parse(const char *text, size_t len, const char *name, struct config *cfg, char *err,
                 size_t errlen);
/* Read and parse a file (errors name the file, e.g. "bridge.yaml:7: unknown key 'foo'"). */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);
void config_free(struct config *cfg);

#endif
