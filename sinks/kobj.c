/* kobj.c - helpers on Kubernetes objects; see kobj.h. */
#include "sinks/kobj.h"

#include <stdlib.h>

const char *kobj_str(const cJSON *obj, const char *field1, const char *field2) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, field1);
    const cJSON *b = field2 ? cJSON_GetObjectItemCaseSensitive(a, field2) : a;
    return cJSON_IsString(b) ? b->valuestring : NULL;
}

bool kobj_rv_older(const char *a, const char *b) {
    if (!a || !b)
        return false;
    char *ea, *eb;
    unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
    if (*ea || *eb || ea == a || eb == b)
        return false;
    return x < y;
}
