/* etcd.h - the etcd v3 key source (etcd.c): list the prefix, then watch it,
 * over etcd's JSON gRPC gateway. Its wire format is etcd_proto.h. */
#ifndef CB_ETCD_H
#define CB_ETCD_H

#include "sources/source.h"

/* The source for cfg->endpoints (http:// or https://, tried in turn).
 * Returns NULL with err set. */
struct source *etcd_source_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                               const struct source_settings *cfg, const struct source_callbacks *cb,
                               char *err, size_t errlen);

#endif
