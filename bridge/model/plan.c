/* plan.c - parse a ramp plan and find the step in force; see plan.h and
 * docs/usage.md "Ramp plans".
 *
 * Three spellings reach one struct plan:
 * - the document form (YAML or JSON): {steps: [{weights: {...}, hold: 10m}]},
 *   where a step's weights may also be a string in the weights key's
 *   name=weight form;
 * - the step list: "shop-v1=95 shop-v2=5 10m; shop-v1=0 shop-v2=100", steps
 *   split by ';', each the weights key's name=weight pairs and then its hold;
 * - the one-line canary form: "shop-v2: 5% 10m, 25% 30m, 100%", the named
 *   service gets the percentage and the route's first service the rest.
 *
 * Decisions worth knowing:
 * - Every step gives every service of the route a weight (in the route's
 *   order afterwards), so a step never depends on the route document's
 *   weights and means the same after the document changes. Without the
 *   route's services (patched mode) every step names the services step 1
 *   names.
 * - Weights follow the weights key: integers 0..MODEL_WEIGHT_MAX, relative,
 *   not all zero. The one-line form's percentages sum to 100 by construction
 *   and it needs a route of exactly two services, so it never zeroes a third
 *   one without anyone having written it.
 * - Every step but the last needs a hold > 0; the last must have none: it
 *   holds until someone writes something else.
 * - Only the document form takes options: `pause` and `force` (booleans) and
 *   `start` (RFC 3339); the daemon acts on them (bridge/core/reconcile_plan.c).
 * - A hold is a string with a unit ("10m", "1h30m"): a bare number is refused,
 *   as in the config file. Sums of holds saturate, never wrap: a change past
 *   UINT64_MAX ms is a change that never comes. */
#include "bridge/model/plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/duration.h" /* parse_duration_ms */
#include "bridge/lib/value.h"

#define SHOWN_MAX 64
#define TOKEN_MAX 64 /* longest hold or percentage token read by the compact forms */

typedef char reason_t[512];

static int why(char *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Write the reason; returns -1 so callers can `return why(...)`. */
static int why(char *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r, sizeof(reason_t), fmt, ap);
    va_end(ap);
    return -1;
}

/* User text in a message: bounded, control characters as '?'. */
static const char *shown(const char *s, size_t n, char out[SHOWN_MAX + 4]) {
    size_t i = 0;
    for (; i < n && s[i] && i < SHOWN_MAX; i++)
        out[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    strcpy(out + i, i < n && s[i] ? "..." : "");
    return out;
}

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

/* ---- building ----------------------------------------------------------- */

struct build {
    struct plan p;
    size_t cap;
    bool has_hold[PLAN_STEPS_MAX];
};

static void step_free(struct plan_step *s) {
    model_weights_free(s->weights, s->n_weights);
    memset(s, 0, sizeof *s);
}

void plan_free(struct plan *p) {
    for (size_t i = 0; p && p->steps && i < p->n_steps; i++)
        step_free(&p->steps[i]);
    if (p) {
        free(p->steps);
        memset(p, 0, sizeof *p);
    }
}

static struct plan_step *step_new(struct build *b, char *r) {
    if (b->p.n_steps == PLAN_STEPS_MAX) {
        why(r, "more than %d steps", PLAN_STEPS_MAX);
        return NULL;
    }
    if (b->p.n_steps == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        struct plan_step *v = realloc(b->p.steps, cap * sizeof *v);
        if (!v) {
            why(r, "out of memory");
            return NULL;
        }
        b->p.steps = v;
        b->cap = cap;
    }
    struct plan_step *s = &b->p.steps[b->p.n_steps++];
    memset(s, 0, sizeof *s);
    return s;
}

/* A hold's text (NUL-terminated): a Go-style duration over zero. */
static int hold_set(struct build *b, size_t i, const char *text, char *r) {
    char s[SHOWN_MAX + 4];
    uint64_t ms;
    if (parse_duration_ms(text, &ms) < 0)
        return why(r,
                   "step %zu: hold: invalid duration '%s' (a number and a unit ms, s, m or h, "
                   "e.g. 10m or 1h30m)",
                   i + 1, shown(text, strlen(text), s));
    if (ms == 0)
        return why(r, "step %zu: hold: must be longer than 0", i + 1);
    b->p.steps[i].hold_ms = ms;
    b->has_hold[i] = true;
    return 0;
}

static int weight_add(struct plan_step *st, size_t i, const char *name, long w, char *r) {
    char s[SHOWN_MAX + 4];
    if (!model_dns1123_label(name))
        return why(r, "step %zu: weights: service name '%s' is not a valid DNS-1123 label", i + 1,
                   shown(name, strlen(name), s));
    for (size_t k = 0; k < st->n_weights; k++)
        if (!strcmp(st->weights[k].service, name))
            return why(r, "step %zu: weights: duplicate service '%s'", i + 1, name);
    struct model_weight *v = realloc(st->weights, (st->n_weights + 1) * sizeof *v);
    if (!v)
        return why(r, "out of memory");
    st->weights = v;
    if (!(v[st->n_weights].service = strdup(name)))
        return why(r, "out of memory");
    v[st->n_weights++].weight = w;
    return 0;
}

static const struct model_weight *weight_find(const struct plan_step *st, const char *name) {
    for (size_t k = 0; k < st->n_weights; k++)
        if (!strcmp(st->weights[k].service, name))
            return &st->weights[k];
    return NULL;
}

/* Check step i against the reference names (the route's services, or step
 * 1's) and put its weights in their order. */
static int step_normalize(struct plan_step *st, size_t i, const char *const *ref, size_t nref,
                          bool route, char *r) {
    if (!st->n_weights)
        return why(r, "step %zu: weights: none given", i + 1);
    for (size_t k = 0; k < st->n_weights; k++) {
        size_t j = 0;
        while (j < nref && strcmp(ref[j], st->weights[k].service))
            j++;
        if (j == nref)
            return why(r, "step %zu: weights: unknown service '%s' (%s)", i + 1,
                       st->weights[k].service,
                       route ? "not in the route's services" : "step 1 does not name it");
    }
    struct model_weight *v = calloc(nref ? nref : 1, sizeof *v);
    if (!v)
        return why(r, "out of memory");
    for (size_t j = 0; j < nref; j++) {
        const struct model_weight *w = weight_find(st, ref[j]);
        if (!w) {
            free(v);
            return why(r,
                       "step %zu: weights: no weight for %s (every step gives every %s a weight)",
                       i + 1, ref[j], route ? "service of the route" : "service step 1 names");
        }
        v[j] = *w;
    }
    free(st->weights); /* the names moved to v */
    st->weights = v;
    st->n_weights = nref;
    bool any = false;
    for (size_t j = 0; j < nref; j++)
        any |= v[j].weight > 0;
    if (!any)
        return why(r, "step %zu: weights: all weights are zero (Traefik would answer 503)", i + 1);
    return 0;
}

/* Every step against the services, then the holds. */
static int plan_check(struct build *b, const char *const *services, size_t n_services, char *r) {
    struct plan *p = &b->p;
    if (p->n_steps == 0)
        return why(r, "no steps given");
    const char **step1 = NULL; /* patched mode: step 1's names, borrowed */
    const char *const *ref = services;
    size_t nref = n_services;
    if (!n_services) {
        nref = p->steps[0].n_weights;
        if (!(step1 = calloc(nref ? nref : 1, sizeof *step1)))
            return why(r, "out of memory");
        for (size_t k = 0; k < nref; k++)
            step1[k] = p->steps[0].weights[k].service;
        ref = step1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < p->n_steps; i++) {
        if (step_normalize(&p->steps[i], i, ref, nref, n_services > 0, r) < 0)
            rc = -1;
        else if (i + 1 < p->n_steps && !b->has_hold[i])
            rc = why(r, "step %zu: hold: missing (every step but the last needs one, e.g. 10m)",
                     i + 1);
        else if (i + 1 == p->n_steps && b->has_hold[i])
            rc = why(r,
                     "step %zu: hold: the last step holds until the plan changes; remove its "
                     "hold",
                     i + 1);
    }
    free(step1);
    return rc;
}

/* ---- the document form (YAML or JSON) ----------------------------------- */

/* Every key of obj must be in allowed (NULL-terminated). */
static int known_fields(const cJSON *obj, const char *const *allowed, const char *where, char *r) {
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], c->string))
            i++;
        if (!allowed[i]) {
            char s[SHOWN_MAX + 4];
            return why(r, "%sunknown field '%s'", where, shown(c->string, strlen(c->string), s));
        }
    }
    return 0;
}

/* A step's weights as a mapping: name -> integer, as the weights key. */
static int doc_weights_map(const cJSON *m, struct plan_step *st, size_t i, char *r) {
    for (const cJSON *c = m->child; c; c = c->next) {
        char s[SHOWN_MAX + 4];
        long long w;
        if (!value_get_int(c, 0, MODEL_WEIGHT_MAX, &w))
            return why(r, "step %zu: weights: weight for '%s' must be an integer 0..%d", i + 1,
                       shown(c->string, strlen(c->string), s), MODEL_WEIGHT_MAX);
        if (weight_add(st, i, c->string, (long)w, r) < 0)
            return -1;
    }
    return 0;
}

/* A step's weights as a string: the weights key's name=weight form. */
static int doc_weights_text(const char *t, struct plan_step *st, size_t i, char *r) {
    char werr[sizeof(reason_t) - 32];
    if (model_parse_weights(t, strlen(t), &st->weights, &st->n_weights, werr, sizeof werr) < 0)
        return why(r, "step %zu: weights: %s", i + 1, werr);
    return 0;
}

static int doc_step(struct build *b, const cJSON *v, size_t i, char *r) {
    static const char *const fields[] = {"weights", "hold", NULL};
    char where[32];
    snprintf(where, sizeof where, "step %zu: ", i + 1);
    struct plan_step *st = step_new(b, r);
    if (!st)
        return -1;
    if (!cJSON_IsObject(v))
        return why(r, "%smust be a mapping with weights and hold", where);
    if (known_fields(v, fields, where, r) < 0)
        return -1;
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(v, "weights");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(v, "hold");
    if (!w || cJSON_IsNull(w))
        return why(r, "%sweights: missing", where);
    int rc;
    if (cJSON_IsObject(w))
        rc = doc_weights_map(w, st, i, r);
    else if (cJSON_IsString(w))
        rc = doc_weights_text(w->valuestring, st, i, r);
    else
        rc = why(r, "%sweights: must be a mapping of service to weight, or name=weight pairs",
                 where);
    if (rc < 0)
        return -1;
    if (!h || cJSON_IsNull(h))
        return 0;
    if (!cJSON_IsString(h))
        return why(r, "%shold: must be a duration with a unit, such as 10m or 1h30m", where);
    return hold_set(b, i, h->valuestring, r);
}

static int digits(const char *s, int n, int *out) {
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        *out = *out * 10 + (s[i] - '0');
    }
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    y -= m <= 2;
    int64_t era = y / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int plan_parse_time(const char *s, uint64_t *ms) {
    int y, mo, d, h, mi, sec, frac = 0, fdig = 0, oh = 0, om = 0, sign = 0;
    if (strlen(s) < 20 || digits(s, 4, &y) < 0 || s[4] != '-' || digits(s + 5, 2, &mo) < 0 ||
        s[7] != '-' || digits(s + 8, 2, &d) < 0 || (s[10] != 'T' && s[10] != 't') ||
        digits(s + 11, 2, &h) < 0 || s[13] != ':' || digits(s + 14, 2, &mi) < 0 || s[16] != ':' ||
        digits(s + 17, 2, &sec) < 0)
        return -1;
    const char *p = s + 19;
    if (*p == '.') {
        for (p++; is_digit(*p); p++, fdig++)
            if (fdig < 3)
                frac = frac * 10 + (*p - '0');
        if (!fdig)
            return -1;
        for (int k = fdig; k < 3; k++)
            frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        if (digits(p + 1, 2, &oh) < 0 || p[3] != ':' || digits(p + 4, 2, &om) < 0)
            return -1;
        p += 6;
    } else {
        return -1;
    }
    if (*p || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
        oh > 23 || om > 59)
        return -1;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    t -= (int64_t)sign * (oh * 3600 + om * 60);
    if (t < 0)
        return -1;
    *ms = (uint64_t)t * 1000 + (uint64_t)frac;
    return 0;
}

/* The document's options: pause, force, start. */
static int doc_options(const cJSON *doc, struct build *b, char *r) {
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(doc, "pause")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v))
            return why(r, "pause: must be true or false");
        b->p.pause = cJSON_IsTrue(v);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(doc, "force")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v))
            return why(r, "force: must be true or false");
        b->p.force = cJSON_IsTrue(v);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(doc, "start")) && !cJSON_IsNull(v)) {
        char s[SHOWN_MAX + 4];
        if (!cJSON_IsString(v) || plan_parse_time(v->valuestring, &b->p.start_ms) < 0)
            return why(r, "start: '%s' is not an RFC 3339 time such as 2026-12-06T10:00:00Z",
                       cJSON_IsString(v) ? shown(v->valuestring, strlen(v->valuestring), s)
                                         : "(not a string)");
        b->p.has_start = true;
    }
    return 0;
}

static int form_document(const char *t, size_t len, struct build *b, char *r) {
    static const char *const fields[] = {"steps", "pause", "force", "start", NULL};
    char perr[256];
    cJSON *doc = value_parse(t, len, perr, sizeof perr);
    if (!doc)
        return why(r, "%s", perr);
    int rc = 0;
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(doc, "steps");
    if (!cJSON_IsObject(doc))
        rc = why(r, "a plan must be a mapping with 'steps', or a one-line plan such as "
                    "'shop-v2: 5%% 10m, 25%% 30m, 100%%'");
    else if (known_fields(doc, fields, "", r) < 0) {
        size_t n = strlen(r);
        snprintf(r + n, sizeof(reason_t) - n,
                 " (a plan document has steps, pause, force and start; a one-line plan is the "
                 "whole value)");
        rc = -1;
    } else if (!cJSON_IsArray(steps) || !steps->child)
        rc = why(r, "steps: must be a list of at least one step");
    else if (doc_options(doc, b, r) < 0)
        rc = -1;
    size_t i = 0;
    for (const cJSON *c = rc ? NULL : steps->child; c; c = c->next, i++)
        if ((rc = doc_step(b, c, i, r)) < 0)
            break;
    cJSON_Delete(doc);
    return rc;
}

/* ---- the compact forms -------------------------------------------------- */

/* The next blank-separated token of t[*pos..len), or length 0 at the end. */
static size_t token(const char *t, size_t len, size_t *pos, const char **tok) {
    while (*pos < len && is_blank(t[*pos]))
        (*pos)++;
    *tok = t + *pos;
    size_t start = *pos;
    while (*pos < len && !is_blank(t[*pos]))
        (*pos)++;
    return *pos - start;
}

/* A hold token of the compact forms (not NUL-terminated). */
static int hold_token(struct build *b, size_t i, const char *tok, size_t n, char *r) {
    char text[TOKEN_MAX + 1], s[SHOWN_MAX + 4];
    if (n > TOKEN_MAX)
        return why(r, "step %zu: hold: invalid duration '%s'", i + 1, shown(tok, n, s));
    memcpy(text, tok, n);
    text[n] = '\0';
    return hold_set(b, i, text, r);
}

/* One step of the step list: name=weight pairs, then the hold unless it is
 * the last step. The hold is the last token when it starts with a digit, has
 * no '=' and does not follow one ("shop-v2 = 5" ends with a weight). */
static int pairs_step(struct build *b, const char *t, size_t n, char *r) {
    char s[SHOWN_MAX + 4];
    struct plan_step *st = step_new(b, r);
    if (!st)
        return -1;
    size_t i = b->p.n_steps - 1, end = n, k, w = 0;
    while (end > 0 && (is_blank(t[end - 1]) || t[end - 1] == ','))
        end--;
    for (k = end; k > 0 && !is_blank(t[k - 1]) && t[k - 1] != ',';)
        k--;
    bool hold = k < end && is_digit(t[k]) && !memchr(t + k, '=', end - k);
    size_t before = k;
    while (before > 0 && is_blank(t[before - 1]))
        before--;
    hold = hold && before > 0 && t[before - 1] != '=';
    size_t wlen = hold ? k : end;
    while (w < wlen && (is_blank(t[w]) || t[w] == ','))
        w++;
    size_t name = w;
    while (w < wlen && is_name_char(t[w]))
        w++;
    while (w < wlen && (t[w] == ' ' || t[w] == '\t'))
        w++;
    if (w == name || w == wlen || t[w] != '=')
        return why(r, "step %zu: weights: expected name=weight pairs, got '%s'", i + 1,
                   shown(t + name, wlen - name, s));
    char werr[sizeof(reason_t) - 32];
    if (model_parse_weights(t, wlen, &st->weights, &st->n_weights, werr, sizeof werr) < 0)
        return why(r, "step %zu: weights: %s", i + 1, werr);
    return hold ? hold_token(b, i, t + k, end - k, r) : 0;
}

/* "a=95 b=5 10m; a=0 b=100": steps split by ';' (one after the last is fine). */
static int form_pairs(const char *t, size_t len, struct build *b, char *r) {
    for (size_t start = 0, pos = 0; pos <= len; pos++) {
        if (pos < len && t[pos] != ';')
            continue;
        size_t k = start;
        while (k < pos && (is_blank(t[k]) || t[k] == ','))
            k++;
        if (k == pos) {
            if (pos == len && b->p.n_steps > 0)
                return 0;
            return why(r, "step %zu: empty (steps are separated by ';')", b->p.n_steps + 1);
        }
        if (pairs_step(b, t + start, pos - start, r) < 0)
            return -1;
        start = pos + 1;
    }
    return 0;
}

/* One step of the one-line form: "25%" and a hold, or the last "100%". */
static int canary_step(struct build *b, const char *t, size_t n, const char *const *services,
                       size_t canary, char *r) {
    char s[SHOWN_MAX + 4];
    struct plan_step *st = step_new(b, r);
    if (!st)
        return -1;
    size_t i = b->p.n_steps - 1, pos = 0;
    const char *tok;
    size_t tn = token(t, n, &pos, &tok);
    if (tn < 2 || tok[tn - 1] != '%' || strspn(tok, "0123456789") != tn - 1)
        return why(r, "step %zu: weight: expected a percentage such as 25%%, got '%s'", i + 1,
                   shown(tok, tn, s));
    long pct = tn - 1 > 3 ? 101 : strtol(tok, NULL, 10);
    if (pct > 100)
        return why(r, "step %zu: weight: must be 0%% to 100%%, got %s", i + 1, shown(tok, tn, s));
    for (size_t k = 0; k < 2; k++)
        if (weight_add(st, i, services[k], k == canary ? pct : 100 - pct, r) < 0)
            return -1;
    const char *h;
    size_t hn = token(t, n, &pos, &h);
    if (hn && hold_token(b, i, h, hn, r) < 0)
        return -1;
    if (token(t, n, &pos, &tok))
        return why(r, "step %zu: unexpected '%s' after the hold (steps are separated by ',')",
                   i + 1, shown(tok, n - (size_t)(tok - t), s));
    return 0;
}

/* The canary named before the ':' of the one-line form, as an index into
 * the route's two services (never the first, which takes the rest). */
static int canary_service(const char *name, const char *const *services, size_t n_services,
                          size_t *canary, char *r) {
    char s[SHOWN_MAX + 4];
    static const char pairs[] = "write the steps as name=weight pairs instead, e.g. "
                                "'a=95 b=5 10m; a=0 b=100'";
    if (n_services == 0)
        return why(r, "the one-line form needs the route's services (a route document); %s", pairs);
    if (n_services != 2)
        return why(r, "the one-line form is for a route of two services, this one has %zu; %s",
                   n_services, pairs);
    if (!strcmp(name, services[0]))
        return why(r,
                   "'%s' is the route's first service, which gets the rest; name the canary, "
                   "e.g. '%s: 5%% 10m, 100%%'",
                   name, services[1]);
    if (strcmp(name, services[1]))
        return why(r, "'%s' is not one of the route's services (%s, %s)",
                   shown(name, strlen(name), s), services[0], services[1]);
    *canary = 1;
    return 0;
}

/* "shop-v2: 5% 10m, 25% 30m, 100%" (a ',' after the last step is fine). */
static int form_canary(const char *t, size_t len, const char *const *services, size_t n_services,
                       struct build *b, char *r) {
    char name[SHOWN_MAX + 1];
    size_t pos = 0, canary;
    while (is_blank(t[pos]))
        pos++;
    size_t start = pos;
    while (is_name_char(t[pos]))
        pos++;
    snprintf(name, sizeof name, "%.*s", (int)(pos - start), t + start);
    if (canary_service(name, services, n_services, &canary, r) < 0)
        return -1;
    pos++; /* the ':' right after the name (looks_canary) */
    for (size_t from = pos; pos <= len; pos++) {
        if (pos < len && t[pos] != ',')
            continue;
        size_t k = from;
        while (k < pos && is_blank(t[k]))
            k++;
        if (k == pos) {
            if (pos == len && b->p.n_steps > 0)
                return 0;
            return why(r, "step %zu: empty (steps are separated by ',')", b->p.n_steps + 1);
        }
        if (canary_step(b, t + from, pos - from, services, canary, r) < 0)
            return -1;
        from = pos + 1;
    }
    return 0;
}

/* name, then ':' and a digit: the one-line form. No document starts so
 * (but with its start: or another of its fields). */
static bool looks_canary(const char *t, size_t len) {
    size_t i = 0;
    while (i < len && is_blank(t[i]))
        i++;
    size_t start = i;
    while (i < len && is_name_char(t[i]))
        i++;
    if (i == start || i == len || t[i] != ':')
        return false;
    /* A document's own fields are no service: "start: 2026-..." is YAML. */
    static const char *const fields[] = {"steps", "pause", "force", "start"};
    for (size_t f = 0; f < sizeof fields / sizeof *fields; f++)
        if (i - start == strlen(fields[f]) && !memcmp(t + start, fields[f], i - start))
            return false;
    for (i++; i < len && (t[i] == ' ' || t[i] == '\t');)
        i++;
    return i < len && is_digit(t[i]);
}

/* name, then '=': the step list (the weights key's compact form is so). */
static bool looks_pairs(const char *t, size_t len) {
    size_t i = 0;
    while (i < len && (is_blank(t[i]) || t[i] == ','))
        i++;
    size_t start = i;
    while (i < len && is_name_char(t[i]))
        i++;
    while (i < len && (t[i] == ' ' || t[i] == '\t'))
        i++;
    return i > start && i < len && t[i] == '=';
}

int plan_parse(const char *text, size_t len, const char *const *services, size_t n_services,
               struct plan *out, char *err, size_t errlen) {
    struct build b;
    reason_t r;
    memset(&b, 0, sizeof b);
    memset(out, 0, sizeof *out);
    if (!text) {
        text = "";
        len = 0;
    }
    size_t bom = value_bom_len(text, len);
    text += bom;
    len -= bom;
    int rc;
    if (len > VALUE_MAX_BYTES)
        rc = why(r, "value is %zu bytes, over the limit of %d", len, VALUE_MAX_BYTES);
    else if ((looks_canary(text, len) || looks_pairs(text, len)) && memchr(text, '\0', len))
        rc = why(r, "NUL byte in value");
    else if (looks_canary(text, len))
        rc = form_canary(text, len, services, n_services, &b, r);
    else if (looks_pairs(text, len))
        rc = form_pairs(text, len, &b, r);
    else
        rc = form_document(text, len, &b, r);
    if (rc == 0)
        rc = plan_check(&b, services, n_services, r);
    if (rc < 0) {
        snprintf(err, errlen, "%s", r);
        plan_free(&b.p);
        return -1;
    }
    *out = b.p;
    return 0;
}

/* ---- the step in force -------------------------------------------------- */

void plan_at(const struct plan *p, uint64_t start_ms, uint64_t now_ms, struct plan_pos *out) {
    memset(out, 0, sizeof *out);
    out->since_ms = start_ms;
    if (!p->n_steps)
        return;
    uint64_t t = start_ms;
    size_t i = 0;
    for (; i + 1 < p->n_steps; i++) {
        uint64_t hold = p->steps[i].hold_ms;
        if (hold > UINT64_MAX - t)
            break; /* the next change lies past the clock's range: never */
        if (now_ms < t + hold) {
            out->has_next = true;
            out->next_ms = t + hold;
            break;
        }
        t += hold;
    }
    out->step = i;
    out->since_ms = t;
    out->weights = p->steps[i].weights;
    out->n_weights = p->steps[i].n_weights;
}

void plan_paused_at(const struct plan *p, uint64_t start_ms, uint64_t pause_ms,
                    struct plan_pos *out) {
    plan_at(p, start_ms, pause_ms, out);
    out->paused = true;
    if (out->has_next) {
        out->has_remaining = true;
        out->remaining_ms = out->next_ms - (pause_ms > start_ms ? pause_ms : start_ms);
    }
    out->has_next = false;
    out->next_ms = 0;
}

uint64_t plan_resumed_start(uint64_t start_ms, uint64_t pause_ms, uint64_t resume_ms) {
    if (pause_ms < start_ms)
        pause_ms = start_ms; /* paused before it began: nothing ran yet */
    if (resume_ms <= pause_ms)
        return start_ms;
    /* start <= pause < resume, so start + (resume - pause) <= resume: no overflow */
    return start_ms + (resume_ms - pause_ms);
}
