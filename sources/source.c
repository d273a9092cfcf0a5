/* source.c - source factory and helpers shared by the etcd and Consul sources. */
#include "sources/source.h"

#include <stdio.h>

struct source *source_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                          const struct source_settings *cfg, const struct source_callbacks *cb,
                          char *err, size_t errlen) {
    switch (cfg->type) {
    case SOURCE_ETCD: return source_etcd_new(loop, http, lg, cfg, cb, err, errlen);
    case SOURCE_CONSUL: return source_consul_new(loop, http, lg, cfg, cb, err, errlen);
    }
    snprintf(err, errlen, "unknown source type");
    return NULL;
}
