/* consul.h - the Consul KV key source (consul.c): recursive blocking queries
 * on the prefix. Its wire format is consul_proto.h. */
#ifndef CB_CONSUL_H
#define CB_CONSUL_H

#include "sources/source.h"

/* The source for cfg->address (http:// or https://), with its own HTTP
 * client bounded in connections. Returns NULL with err set. */
struct source *consul_source_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                                 const struct source_settings *cfg,
                                 const struct source_callbacks *cb, char *err, size_t errlen);

#endif
