/* weights.c - the `weights` key in its three forms (name=weight pairs, a
 * YAML or a JSON mapping): model_parse_weights (see model.h), with the mark
 * of a deliberate step; and model_weights_step, how far new weights move
 * traffic (max step). */
#include <limits.h>
#include <math.h>

#include "bridge/lib/value.h"
#include "bridge/model/parse.h"

void model_weights_free(struct model_weight *w, size_t n) {
    for (size_t i = 0; w && i < n; i++)
        free(w[i].service);
    free(w);
}

struct weights {
    struct model_weight *v;
    size_t n, cap;
    bool *forced; /* NULL: the mark of a deliberate step is refused */
};

#define FORCE_FIELD "_force" /* not a DNS-1123 label: never a service */

/* Append a validated, unique service name; the caller then sets its weight. */
static int weights_add(struct weights *ws, const char *name, size_t namelen, char *r) {
    char s[SHOWN_MAX + 4], tmp[MODEL_NAME_MAX + 1];
    snprintf(tmp, sizeof tmp, "%.*s", (int)(namelen < MODEL_NAME_MAX ? namelen : MODEL_NAME_MAX),
             name);
    if (namelen > MODEL_NS_MAX || !model_dns1123_label(tmp)) {
        why(r, "service name '%s' is not a valid DNS-1123 label", shown(tmp, s));
        return -1;
    }
    for (size_t i = 0; i < ws->n; i++) {
        if (!strcmp(ws->v[i].service, tmp)) {
            why(r, "duplicate service '%s'", tmp);
            return -1;
        }
    }
    if (ws->n == ws->cap) {
        size_t cap = ws->cap ? ws->cap * 2 : 4;
        struct model_weight *v = realloc(ws->v, cap * sizeof *v);
        if (!v)
            goto oom;
        ws->v = v;
        ws->cap = cap;
    }
    ws->v[ws->n].service = strdup(tmp);
    if (!ws->v[ws->n].service)
        goto oom;
    ws->v[ws->n++].weight = 0;
    return 0;
oom:
    why(r, "out of memory");
    return -1;
}

/* A weight in the compact form: decimal digits only. */
static int compact_weight(const char *svc, const char *v, size_t n, long *out, char *r) {
    char s[SHOWN_MAX + 4], text[32];
    snprintf(text, sizeof text, "%.*s", (int)(n < 31 ? n : 31), v);
    if (n == 0) {
        why(r, "weight for '%s' is missing", svc);
        return -1;
    }
    if (strspn(text, "0123456789") != n) {
        why(r, "weight for '%s' must be a non-negative integer, got %s", svc, shown(text, s));
        return -1;
    }
    *out = n > 9 ? MODEL_WEIGHT_MAX + 1L : strtol(text, NULL, 10);
    if (*out > MODEL_WEIGHT_MAX) {
        why(r, "weight for '%s' must be at most %d, got %s", svc, MODEL_WEIGHT_MAX, shown(text, s));
        return -1;
    }
    return 0;
}

static bool is_sep(char c) {
    return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A last '!' (alone or right after the last weight) marks the value as a
 * deliberate step; t[i] is that '!'. */
static int compact_mark(const char *t, size_t len, size_t i, struct weights *ws, char *r) {
    if (!ws->forced) {
        why(r, "'!' (a deliberate step) is only taken in the weights key");
        return -1;
    }
    for (i++; i < len && is_sep(t[i]); i++)
        ;
    if (i < len || ws->n == 0) {
        why(r, "'!' marks the whole value as a deliberate step: it goes last, after the "
               "weights (\"a=10, b=90 !\")");
        return -1;
    }
    *ws->forced = true;
    return 0;
}

/* name=weight pairs separated by commas and/or whitespace; spaces or tabs
 * may surround the '='; an optional '!' at the end. */
static int weights_compact(const char *t, size_t len, struct weights *ws, char *r) {
    size_t i = 0;
    for (;;) {
        while (i < len && is_sep(t[i]))
            i++;
        if (i == len)
            return 0;
        if (t[i] == '!')
            return compact_mark(t, len, i, ws, r);
        size_t name = i;
        while (i < len && !is_sep(t[i]) && t[i] != '=')
            i++;
        size_t namelen = i - name;
        while (i < len && (t[i] == ' ' || t[i] == '\t'))
            i++;
        char svc[MODEL_NS_MAX + 4], s[SHOWN_MAX + 4];
        snprintf(svc, sizeof svc, "%.*s", (int)(namelen <= MODEL_NS_MAX ? namelen : MODEL_NS_MAX),
                 t + name);
        if (i == len || t[i] != '=') {
            why(r, "expected name=weight, got '%s'", shown(svc, s));
            return -1;
        }
        i++;
        while (i < len && (t[i] == ' ' || t[i] == '\t'))
            i++;
        size_t val = i;
        while (i < len && !is_sep(t[i]) && t[i] != '!')
            i++;
        long w;
        if (weights_add(ws, t + name, namelen, r) < 0 ||
            compact_weight(svc, t + val, i - val, &w, r) < 0)
            return -1;
        ws->v[ws->n - 1].weight = w;
    }
}

/* Describe a JSON/YAML value that is not a valid weight. */
static void bad_weight(const char *svc, const cJSON *v, char *r) {
    char s[SHOWN_MAX + 4], num[40];
    long long n;
    if (cJSON_IsNull(v)) {
        why(r, "weight for '%s' is missing", svc);
    } else if (cJSON_IsString(v)) {
        why(r, "weight for '%s' must be a non-negative integer, got the string \"%s\"", svc,
            shown(v->valuestring, s));
    } else if (value_get_int(v, MODEL_WEIGHT_MAX + 1LL, LLONG_MAX, &n)) {
        why(r, "weight for '%s' must be at most %d, got %lld", svc, MODEL_WEIGHT_MAX, n);
    } else if (cJSON_IsNumber(v)) {
        if (v->valuestring)
            snprintf(num, sizeof num, "%s", v->valuestring);
        else
            snprintf(num, sizeof num, "%g", v->valuedouble);
        why(r, "weight for '%s' must be a non-negative integer, got %s", svc, shown(num, s));
    } else {
        why(r, "weight for '%s' must be a non-negative integer, got %s", svc,
            cJSON_IsBool(v)    ? (cJSON_IsTrue(v) ? "true" : "false")
            : cJSON_IsArray(v) ? "a list"
                               : "a mapping");
    }
}

static int weights_mapping(const char *t, size_t len, struct weights *ws, char *r) {
    char perr[256];
    cJSON *doc = value_parse(t, len, perr, sizeof perr);
    if (!doc) {
        why(r, "%s", perr);
        return -1;
    }
    int rc = 0;
    if (!cJSON_IsObject(doc)) {
        why(r, "weights must be a mapping of service name to weight, or name=weight pairs");
        rc = -1;
    }
    for (const cJSON *c = rc ? NULL : doc->child; c; c = c->next) {
        long long w;
        if (ws->forced && strcmp(c->string, FORCE_FIELD) == 0) {
            if (!cJSON_IsBool(c)) {
                why(r, "'" FORCE_FIELD "' must be true or false (unquoted)");
                rc = -1;
                break;
            }
            *ws->forced = cJSON_IsTrue(c);
            continue;
        }
        if (weights_add(ws, c->string, strlen(c->string), r) < 0) {
            rc = -1;
            break;
        }
        if (!value_get_int(c, 0, MODEL_WEIGHT_MAX, &w)) {
            bad_weight(ws->v[ws->n - 1].service, c, r);
            rc = -1;
            break;
        }
        ws->v[ws->n - 1].weight = (long)w;
    }
    cJSON_Delete(doc);
    return rc;
}

/* The compact form starts with name= ; a YAML or JSON mapping never does. */
static bool looks_compact(const char *t, size_t len) {
    size_t i = 0;
    while (i < len && is_sep(t[i]))
        i++;
    size_t start = i;
    while (i < len && (is_lower_alnum(t[i]) || t[i] == '-' || t[i] == '.' || t[i] == '_' ||
                       (t[i] >= 'A' && t[i] <= 'Z')))
        i++;
    if (i == start)
        return false;
    while (i < len && (t[i] == ' ' || t[i] == '\t'))
        i++;
    return i < len && t[i] == '=';
}

static int weights_check(const struct weights *ws, char *r) {
    if (ws->n == 0) {
        why(r, "no weights given");
        return -1;
    }
    for (size_t i = 0; i < ws->n; i++)
        if (ws->v[i].weight > 0)
            return 0;
    why(r, "all weights are zero (Traefik would answer 503 to every request)");
    return -1;
}

int model_parse_weights(const char *text, size_t len, struct model_weight **out, size_t *n,
                        char *err, size_t errlen) {
    return model_parse_weights_forced(text, len, out, n, NULL, err, errlen);
}

int model_parse_weights_forced(const char *text, size_t len, struct model_weight **out, size_t *n,
                               bool *forced, char *err, size_t errlen) {
    struct weights ws = {.forced = forced};
    reason_t r;
    *out = NULL;
    *n = 0;
    if (forced)
        *forced = false;
    size_t bom = value_bom_len(text, len); /* in every form, the compact one too */
    if (bom) {
        text += bom;
        len -= bom;
    }
    int rc;
    if (len > VALUE_MAX_BYTES) {
        why(r, "value is %zu bytes, over the limit of %d", len, VALUE_MAX_BYTES);
        rc = -1;
    } else if (text && looks_compact(text, len)) {
        rc = memchr(text, '\0', len) ? (why(r, "NUL byte in value"), -1)
                                     : weights_compact(text, len, &ws, r);
    } else {
        rc = weights_mapping(text, len, &ws, r);
    }
    if (rc == 0)
        rc = weights_check(&ws, r);
    if (rc < 0) {
        snprintf(err, errlen, "%s", r);
        model_weights_free(ws.v, ws.n);
        if (forced)
            *forced = false;
        return -1;
    }
    *out = ws.v;
    *n = ws.n;
    return 0;
}

/* ---- max step ----------------------------------------------------------- */

static double total(const struct model_weight *w, size_t n) {
    double t = 0;
    for (size_t i = 0; i < n; i++)
        t += (double)w[i].weight;
    return t;
}

static const struct model_weight *weight_find(const struct model_weight *w, size_t n,
                                              const char *service) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(w[i].service, service) == 0)
            return &w[i];
    return NULL;
}

double model_weights_step(const struct model_weight *from, size_t n_from,
                          const struct model_weight *to, size_t n_to, const char **service,
                          double *from_pct, double *to_pct) {
    double tf = total(from, n_from), tt = total(to, n_to), best = 0;
    *service = NULL;
    *from_pct = *to_pct = 0;
    if (tf <= 0)
        return 0;
    /* Every service of both sides: those of `to`, then those only in `from`. */
    for (size_t k = 0; k < n_to + n_from; k++) {
        const char *svc = k < n_to ? to[k].service : from[k - n_to].service;
        if (k >= n_to && weight_find(to, n_to, svc))
            continue;
        const struct model_weight *a = weight_find(from, n_from, svc);
        const struct model_weight *b = weight_find(to, n_to, svc);
        double pa = a ? 100.0 * (double)a->weight / tf : 0;
        double pb = b && tt > 0 ? 100.0 * (double)b->weight / tt : 0;
        double move = fabs(pb - pa);
        bool more = move > best + 1e-9;
        bool tie_grows = !more && fabs(move - best) <= 1e-9 && pb > pa && *to_pct <= *from_pct;
        if (!*service || more || tie_grows) {
            best = move;
            *service = svc;
            *from_pct = pa;
            *to_pct = pb;
        }
    }
    return best;
}
