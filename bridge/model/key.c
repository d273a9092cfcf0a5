/* key.c - route keys and the Kubernetes names in them: model_parse_key and
 * the DNS-1123 checks (see model.h). */
#include <stdio.h>
#include <string.h>

#include "bridge/model/parse.h"

const char *const model_leaf_names[MODEL_NLEAVES] = {"route",  "weights", "headers", "status",
                                                     "freeze", "abort",   "plan",    "pause"};

/* [a-z0-9]([-a-z0-9]*[a-z0-9])? over s[0..n) */
static bool label_ok(const char *s, size_t n) {
    if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '-')
            return false;
    return true;
}

bool model_dns1123_label(const char *s) {
    size_t n = strlen(s);
    return n <= MODEL_NS_MAX && label_ok(s, n);
}

/* Same as Kubernetes' IsDNS1123Subdomain: total length and the per-label
 * pattern; Kubernetes does not limit each label to 63 there, nor do we. */
bool model_dns1123_subdomain(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > MODEL_NAME_MAX)
        return false;
    for (const char *p = s;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (!label_ok(p, len))
            return false;
        if (!dot)
            return true;
        p = dot + 1;
    }
}

int model_parse_key(const char *prefix, const char *key, char ns[MODEL_NS_MAX + 1],
                    char name[MODEL_NAME_MAX + 1], enum model_leaf *leaf, char *err,
                    size_t errlen) {
    size_t plen = strlen(prefix);
    if (strncmp(key, prefix, plen) != 0) {
        snprintf(err, errlen, "not under the prefix '%s'", prefix);
        return -1;
    }
    const char *rest = key + plen;
    const char *s1 = strchr(rest, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s2 || strchr(s2 + 1, '/')) {
        snprintf(
            err, errlen,
            "expected <namespace>/<name>/<route|weights|headers|status|freeze|abort|plan|pause>");
        return -1;
    }
    size_t nslen = (size_t)(s1 - rest), namelen = (size_t)(s2 - s1 - 1);
    if (nslen > MODEL_NS_MAX || !label_ok(rest, nslen)) {
        snprintf(err, errlen, "namespace is not a valid DNS-1123 label");
        return -1;
    }
    memcpy(ns, rest, nslen);
    ns[nslen] = '\0';
    if (namelen > MODEL_NAME_MAX) {
        snprintf(err, errlen, "name is longer than %d characters", MODEL_NAME_MAX);
        return -1;
    }
    memcpy(name, s1 + 1, namelen);
    name[namelen] = '\0';
    if (!model_dns1123_subdomain(name)) {
        snprintf(err, errlen, "name is not a valid DNS-1123 subdomain");
        return -1;
    }
    for (int i = 0; i < MODEL_NLEAVES; i++) {
        if (!strcmp(s2 + 1, model_leaf_names[i])) {
            *leaf = (enum model_leaf)i;
            return 0;
        }
    }
    snprintf(err, errlen, "unknown leaf (expected " MODEL_LEAVES_TEXT ")");
    return -1;
}
