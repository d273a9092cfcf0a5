/* kobj.h - small helpers on Kubernetes objects as cJSON trees (what the
 * API server answers): a string field, and resourceVersion order. */
#ifndef CB_KOBJ_H
#define CB_KOBJ_H

#include <cjson/cJSON.h>
#include <stdbool.h>

/* obj.field1 (field2 NULL) or obj.field1.field2 when it is a string, else
 * NULL. */
const char *kobj_str(const cJSON *obj, const char *field1, const char *field2);
/* Compare resourceVersions: they are opaque strings, but every API server
 * in practice uses etcd revisions; treat them as numbers when both are, and
 * otherwise report "not older" (a wrong guess costs one 409 retry). */
bool kobj_rv_older(const char *a, const char *b);

#endif
