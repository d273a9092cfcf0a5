/* consul.c - Consul KV source; placeholder until implemented. */
#include <stdio.h>

#include "sources/source.h"

struct source *source_consul_new(uv_loop_t *loop, struct http_client *http, struct logger *lg,
                                 const struct config *cfg, const struct source_callbacks *cb,
                                 char *err, size_t errlen) {
    (void)loop, (void)http, (void)lg, (void)cfg, (void)cb;
    snprintf(err, errlen, "source.type consul is not supported by this build yet");
    return NULL;
}
