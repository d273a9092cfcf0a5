/* metrics.c - Prometheus registry and text exposition format 0.0.4; see
 * metrics.h. Series live in a hash map keyed by their label values joined as
 * "<len>:<value>" pairs: length prefixes make the key unambiguous whatever
 * bytes a value holds, without escaping on the hot path. */
#include "bridge/lib/metrics.h"

#include <math.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/list.h"
#include "bridge/lib/map.h"

struct metric_series {
    double value;        /* counter or gauge value; histogram sum */
    uint64_t count;      /* histogram observations */
    uint64_t *buckets;   /* histogram: per-bucket counts (not cumulative), nbounds + 1 */
    const char **values; /* nlabels label values, NULL-terminated (sorting needs no count) */
};

struct metric_family {
    struct list_node link; /* in registration order, which is render order */
    enum metric_type type;
    char *name, *help;
    size_t nlabels;
    char **labels;
    size_t nbounds;
    double *bounds;
    struct map series;          /* joined label values -> struct metric_series */
    struct metric_series *solo; /* the one series of a family without labels */
};

struct metrics {
    struct list_node families; /* struct metric_family */
    struct map names;          /* name -> family, to refuse duplicates */
};

/* Keys up to this size are built on the stack: the common case costs no
 * allocation per sample. */
enum { KEY_STACK = 256 };

struct metrics *metrics_new(void) {
    struct metrics *m = calloc(1, sizeof *m);
    if (m)
        list_init(&m->families);
    return m;
}

static void series_free_all(struct metric_family *f) {
    struct map_iter it;
    map_iter_init(&it, &f->series);
    for (struct map_entry *e; (e = map_iter_next(&it));)
        free(e->value);
    map_free(&f->series);
}

static void family_free(struct metric_family *f) {
    if (!f)
        return;
    series_free_all(f);
    free(f->solo);
    for (size_t i = 0; i < f->nlabels && f->labels; i++)
        free(f->labels[i]);
    free(f->labels);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void metrics_free(struct metrics *m) {
    if (!m)
        return;
    list_for_each_safe(n, next, &m->families)
        family_free(list_entry(n, struct metric_family, link));
    map_free(&m->names);
    free(m);
}

/* ---- names ---- */

static bool is_alpha_(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

static bool valid_metric_name(const char *s) {
    if (!s || !(is_alpha_(*s) || *s == ':'))
        return false;
    for (s++; *s; s++)
        if (!(is_alpha_(*s) || is_digit(*s) || *s == ':'))
            return false;
    return true;
}

static bool valid_label_name(const char *s) {
    if (!s || !is_alpha_(*s) || strncmp(s, "__", 2) == 0)
        return false;
    for (s++; *s; s++)
        if (!(is_alpha_(*s) || is_digit(*s)))
            return false;
    return true;
}

/* ---- series ---- */

static size_t align_up(size_t n, size_t a) {
    return (n + a - 1) / a * a;
}

/* One allocation per series: the struct, the bucket counts, the value
 * pointers and the value strings, so removal is a single free. */
static struct metric_series *series_new(const struct metric_family *f, const char *const *values) {
    size_t nb = f->type == METRIC_HISTOGRAM ? f->nbounds + 1 : 0;
    size_t off_buckets = align_up(sizeof(struct metric_series), alignof(uint64_t));
    size_t off_values = align_up(off_buckets + nb * sizeof(uint64_t), alignof(const char *));
    size_t off_strings = off_values + (f->nlabels + 1) * sizeof(const char *);
    size_t total = off_strings;
    for (size_t i = 0; i < f->nlabels; i++)
        total += strlen(values[i]) + 1;
    char *mem = calloc(1, total);
    if (!mem)
        return NULL;
    struct metric_series *s = (struct metric_series *)mem;
    s->buckets = nb ? (uint64_t *)(mem + off_buckets) : NULL;
    s->values = (const char **)(mem + off_values);
    char *p = mem + off_strings;
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t len = strlen(values[i]);
        memcpy(p, values[i], len + 1);
        s->values[i] = p;
        p += len + 1;
    }
    s->values[f->nlabels] = NULL;
    return s;
}

/* Count the values of a METRIC_LABELS array (NULL means none). */
static size_t values_count(const char *const *values) {
    size_t n = 0;
    while (values && values[n])
        n++;
    return n;
}

/* The map key for the first n values. Returns key (stack or *heap, which the
 * caller frees), or NULL when out of memory. */
static char *key_build(const char *const *values, size_t n, char stack[KEY_STACK], char **heap) {
    *heap = NULL;
    size_t need = 1;
    for (size_t i = 0; i < n; i++)
        need += strlen(values[i]) + 21; /* digits of a size_t and ':' */
    char *key = stack;
    if (need > KEY_STACK) {
        key = *heap = malloc(need);
        if (!key)
            return NULL;
    }
    char *p = key;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(values[i]);
        p += snprintf(p, 22, "%zu:", len);
        memcpy(p, values[i], len);
        p += len;
    }
    *p = '\0';
    return key;
}

static struct metric_series *series_get(struct metric_family *f, const char *const *values,
                                        bool create) {
    if (!f || values_count(values) != f->nlabels)
        return NULL;
    if (f->nlabels == 0)
        return f->solo;
    char stack[KEY_STACK], *heap;
    char *key = key_build(values, f->nlabels, stack, &heap);
    if (!key)
        return NULL;
    struct metric_series *s = map_get(&f->series, key);
    if (!s && create) {
        s = series_new(f, values);
        if (s && map_put(&f->series, key, s, NULL) < 0) {
            free(s);
            s = NULL;
        }
    }
    free(heap);
    return s;
}

/* ---- registration ---- */

static struct metric_family *family_add(struct metrics *m, enum metric_type type, const char *name,
                                        const char *help, size_t nlabels,
                                        const char *const labels[], size_t nbounds,
                                        const double bounds[]) {
    if (!m || !valid_metric_name(name) || !help || (nlabels && !labels) || map_has(&m->names, name))
        return NULL;
    for (size_t i = 0; i < nlabels; i++) {
        if (!valid_label_name(labels[i]))
            return NULL;
        if (type == METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0)
            return NULL; /* le is the bucket label */
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0)
                return NULL;
    }
    for (size_t i = 0; i < nbounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return NULL;

    struct metric_family *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->type = type;
    f->nlabels = nlabels;
    f->nbounds = nbounds;
    f->name = strdup(name);
    f->help = strdup(help);
    f->labels = calloc(nlabels + 1, sizeof *f->labels);
    f->bounds = nbounds ? malloc(nbounds * sizeof *f->bounds) : NULL;
    if (!f->name || !f->help || !f->labels || (nbounds && !f->bounds))
        goto fail;
    for (size_t i = 0; i < nlabels; i++)
        if (!(f->labels[i] = strdup(labels[i])))
            goto fail;
    if (nbounds)
        memcpy(f->bounds, bounds, nbounds * sizeof *f->bounds);
    if (nlabels == 0 && !(f->solo = series_new(f, NULL)))
        goto fail;
    if (map_put(&m->names, name, f, NULL) < 0)
        goto fail;
    list_push_back(&m->families, &f->link);
    return f;
fail:
    family_free(f);
    return NULL;
}

struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                      size_t nlabels, const char *const labels[]) {
    return family_add(m, METRIC_COUNTER, name, help, nlabels, labels, 0, NULL);
}

struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                    size_t nlabels, const char *const labels[]) {
    return family_add(m, METRIC_GAUGE, name, help, nlabels, labels, 0, NULL);
}

struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                        size_t nlabels, const char *const labels[], size_t nbounds,
                                        const double bounds[]) {
    if (nbounds && !bounds)
        return NULL;
    return family_add(m, METRIC_HISTOGRAM, name, help, nlabels, labels, nbounds, bounds);
}

/* ---- updates ---- */

int metric_add(struct metric_family *f, const char *const *values, double v) {
    if (!f || f->type == METRIC_HISTOGRAM || isnan(v) || (f->type == METRIC_COUNTER && v < 0))
        return -1; /* counters only go up */
    struct metric_series *s = series_get(f, values, true);
    if (!s)
        return -1;
    s->value += v;
    return 0;
}

int metric_set(struct metric_family *f, const char *const *values, double v) {
    if (!f || f->type != METRIC_GAUGE)
        return -1;
    struct metric_series *s = series_get(f, values, true);
    if (!s)
        return -1;
    s->value = v;
    return 0;
}

int metric_observe(struct metric_family *f, const char *const *values, double v) {
    if (!f || f->type != METRIC_HISTOGRAM || isnan(v))
        return -1;
    struct metric_series *s = series_get(f, values, true);
    if (!s)
        return -1;
    /* First bound >= v (buckets are "less than or equal"); nbounds = +Inf. */
    size_t lo = 0, hi = f->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    s->buckets[lo]++;
    s->count++;
    s->value += v;
    return 0;
}

static void series_zero(const struct metric_family *f, struct metric_series *s) {
    s->value = 0;
    s->count = 0;
    if (s->buckets)
        memset(s->buckets, 0, (f->nbounds + 1) * sizeof *s->buckets);
}

int metric_remove(struct metric_family *f, const char *const *values) {
    if (!f || values_count(values) != f->nlabels)
        return -1;
    if (f->nlabels == 0) {
        series_zero(f, f->solo);
        return 0;
    }
    char stack[KEY_STACK], *heap;
    char *key = key_build(values, f->nlabels, stack, &heap);
    if (!key)
        return -1;
    free(map_del(&f->series, key));
    free(heap);
    return 0;
}

int metric_remove_prefix(struct metric_family *f, const char *const *values) {
    size_t k = values_count(values);
    if (!f || k > f->nlabels)
        return -1;
    if (f->nlabels == 0) {
        series_zero(f, f->solo);
        return 1;
    }
    int removed = 0;
    struct map_iter it;
    map_iter_init(&it, &f->series);
    for (struct map_entry *e; (e = map_iter_next(&it));) {
        struct metric_series *s = e->value;
        size_t i = 0;
        while (i < k && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == k) {
            map_del(&f->series, e->key); /* allowed: the entry just returned */
            free(s);
            removed++;
        }
    }
    return removed;
}

int metric_value(const struct metric_family *f, const char *const *values, double *out) {
    /* series_get never creates with create=false, so the cast is safe. */
    struct metric_series *s = series_get((struct metric_family *)f, values, false);
    if (!s)
        return -1;
    *out = f->type == METRIC_HISTOGRAM ? (double)s->count : s->value;
    return 0;
}

size_t metric_series_count(const struct metric_family *f) {
    if (!f)
        return 0;
    return f->nlabels == 0 ? 1 : f->series.count;
}

/* ---- rendering ---- */

/* Shortest text that reads back as the same double; integers without an
 * exponent (a counter at 100 reads "100", not "1e+02"). */
static void fmt_double(char out[32], double v) {
    if (isnan(v)) {
        strcpy(out, "NaN");
    } else if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
    } else if (v == trunc(v) && fabs(v) < 1e15) {
        snprintf(out, 32, "%.0f", v == 0 ? 0.0 : v); /* no "-0" */
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, 32, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

static int put_escaped(buf_t *out, const char *s, bool quotes) {
    for (const char *run = s;; s++) {
        const char *esc = NULL;
        if (*s == '\\')
            esc = "\\\\";
        else if (*s == '\n')
            esc = "\\n";
        else if (*s == '"' && quotes)
            esc = "\\\"";
        else if (*s)
            continue;
        if (buf_append(out, run, (size_t)(s - run)) < 0)
            return -1;
        if (!esc)
            return 0; /* end of string */
        if (buf_puts(out, esc) < 0)
            return -1;
        run = s + 1;
    }
}

/* "{a="x",b="y"" plus an optional le pair, then "}"; nothing without labels. */
static int put_labels(buf_t *out, const struct metric_family *f, const struct metric_series *s,
                      const char *le) {
    if (f->nlabels == 0 && !le)
        return 0;
    if (buf_putc(out, '{') < 0)
        return -1;
    for (size_t i = 0; i < f->nlabels; i++) {
        if (buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]) < 0 ||
            put_escaped(out, s->values[i], true) < 0 || buf_putc(out, '"') < 0)
            return -1;
    }
    if (le && buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le) < 0)
        return -1;
    return buf_putc(out, '}');
}

static int put_sample(buf_t *out, const struct metric_family *f, const char *suffix,
                      const struct metric_series *s, const char *le, double v) {
    char num[32];
    fmt_double(num, v);
    if (buf_printf(out, "%s%s", f->name, suffix) < 0 || put_labels(out, f, s, le) < 0 ||
        buf_printf(out, " %s\n", num) < 0)
        return -1;
    return 0;
}

static int render_series(buf_t *out, const struct metric_family *f, const struct metric_series *s) {
    if (f->type != METRIC_HISTOGRAM)
        return put_sample(out, f, "", s, NULL, s->value);
    uint64_t cum = 0;
    char le[32];
    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += s->buckets[i];
        if (i < f->nbounds)
            fmt_double(le, f->bounds[i]);
        else
            strcpy(le, "+Inf");
        if (put_sample(out, f, "_bucket", s, le, (double)cum) < 0)
            return -1;
    }
    if (put_sample(out, f, "_sum", s, NULL, s->value) < 0 ||
        put_sample(out, f, "_count", s, NULL, (double)s->count) < 0)
        return -1;
    return 0;
}

static int cmp_series(const void *a, const void *b) {
    const struct metric_series *x = *(const struct metric_series *const *)a;
    const struct metric_series *y = *(const struct metric_series *const *)b;
    for (size_t i = 0; x->values[i] && y->values[i]; i++) {
        int c = strcmp(x->values[i], y->values[i]);
        if (c)
            return c;
    }
    return 0;
}

static const char *type_name(enum metric_type t) {
    switch (t) {
    case METRIC_COUNTER: return "counter";
    case METRIC_GAUGE: return "gauge";
    case METRIC_HISTOGRAM: return "histogram";
    }
    return "untyped";
}

static int render_family(buf_t *out, const struct metric_family *f) {
    if (buf_printf(out, "# HELP %s ", f->name) < 0 || put_escaped(out, f->help, false) < 0 ||
        buf_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type)) < 0)
        return -1;
    if (f->nlabels == 0)
        return render_series(out, f, f->solo);
    size_t n = f->series.count;
    if (n == 0)
        return 0;
    /* Sorted so the page is stable from scrape to scrape and restart to
     * restart, which makes diffs and eyeballing easy. */
    const struct metric_series **v = malloc(n * sizeof *v);
    if (!v)
        return -1;
    struct map_iter it;
    map_iter_init(&it, &f->series);
    size_t i = 0;
    for (struct map_entry *e; (e = map_iter_next(&it)) && i < n;)
        v[i++] = e->value;
    qsort(v, i, sizeof *v, cmp_series);
    int rc = 0;
    for (size_t j = 0; j < i && rc == 0; j++)
        rc = render_series(out, f, v[j]);
    free(v);
    return rc;
}

int metrics_render(const struct metrics *m, buf_t *out) {
    if (!m)
        return -1;
    list_for_each(n, &m->families) if (render_family(out, list_entry(n, const struct metric_family,
                                                                     link)) < 0) return -1;
    return 0;
}

/* ---- the standard set ---- */

int bridge_metrics_register(struct metrics *m, const char *version, struct bridge_metrics *out) {
    static const char *const result[] = {"result"};
    static const char *const verb_code[] = {"verb", "code"};
    static const char *const state[] = {"state"};
    static const char *const route[] = {"namespace", "route", "service"};
    static const char *const route_only[] = {"namespace", "route"};
    static const char *const reason[] = {"reason"};
    static const char *const ver[] = {"version"};
    /* 0.5 ms to 10 s: a watch event usually lands in a few ms; seconds mean
     * retries, conflicts or a slow API server. */
    static const double prop_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};

    memset(out, 0, sizeof *out);
    out->reconcile_total = metrics_counter(m, "canary_bridge_reconcile_total",
                                           "Route reconcile passes, by result.", 1, result);
    out->conflicts_total = metrics_counter(
        m, "canary_bridge_conflicts_total",
        "Kubernetes writes answered with 409 Conflict (then re-read and retried).", 0, NULL);
    out->kube_requests_total = metrics_counter(
        m, "canary_bridge_kube_requests_total",
        "Requests to the Kubernetes API server, by verb and HTTP status code.", 2, verb_code);
    out->source_events_total =
        metrics_counter(m, "canary_bridge_source_events_total",
                        "Key events received from the source (etcd or Consul).", 0, NULL);
    static const char *const stage[] = {"stage"};
    out->propagation_seconds = metrics_histogram(
        m, "canary_bridge_propagation_seconds",
        "Seconds from a source event to the Kubernetes write carrying it being acknowledged "
        "(stage applied), and to every Traefik instance of traefik.api serving it (stage live).",
        1, stage, sizeof prop_bounds / sizeof prop_bounds[0], prop_bounds);
    static const char *const instance[] = {"instance"};
    out->not_live_total = metrics_counter(
        m, "canary_bridge_not_live_total",
        "Changes a Traefik instance (traefik.api) did not serve within traefik.api.timeout, by "
        "the first instance that lagged; nothing is rolled back.",
        1, instance);
    out->routes =
        metrics_gauge(m, "canary_bridge_routes", "Routes known to the bridge, by state.", 1, state);
    out->route_weight = metrics_gauge(m, "canary_bridge_route_weight",
                                      "Weight last written for each service of a route.", 3, route);
    out->source_connected = metrics_gauge(
        m, "canary_bridge_source_connected",
        "1 while the watch on the source (etcd or Consul) is established, else 0.", 0, NULL);
    out->source_acl_denied = metrics_gauge(
        m, "canary_bridge_source_acl_denied",
        "1 while the source refuses to read the prefix for the ACL token (Consul ACL), else 0.", 0,
        NULL);
    out->last_sync_timestamp_seconds = metrics_gauge(
        m, "canary_bridge_last_sync_timestamp_seconds",
        "Unix time of the last complete sync of the source with the cluster.", 0, NULL);
    out->leader = metrics_gauge(
        m, "canary_bridge_leader",
        "1 while this instance may write (it holds the Lease, or election is off), else 0.", 0,
        NULL);
    out->build_info = metrics_gauge(m, "canary_bridge_build_info",
                                    "Build information of the running binary; always 1.", 1, ver);

    out->burst_holds_total = metrics_counter(
        m, "canary_bridge_burst_holds_total",
        "Bursts of source changes whose writes were held until the changes paused.", 0, NULL);
    out->burst_holding = metrics_gauge(
        m, "canary_bridge_burst_holding",
        "1 while writes wait for a burst of source changes to pause, else 0.", 0, NULL);
    out->deletion_held = metrics_gauge(
        m, "canary_bridge_deletion_held",
        "1 while the deletion guard holds deletions that need a person's confirmation, else 0.", 0,
        NULL);
    out->deletion_held_routes = metrics_gauge(
        m, "canary_bridge_deletion_held_routes",
        "Routes whose keys are gone but whose objects the deletion guard keeps.", 0, NULL);

    out->undone_writes_total = metrics_counter(
        m, "canary_bridge_undone_writes_total",
        "Writes of this bridge that another writer undid (two writers disagreeing about an "
        "object; after 3 in a row the route backs off).",
        0, NULL);

    out->backend_unready = metrics_gauge(
        m, "canary_bridge_backend_unready",
        "1 while a service carrying weight in a route cannot serve (no ready endpoints, or the "
        "Service or its port gone); the weights are left as they are.",
        3, route);

    out->route_frozen = metrics_gauge(
        m, "canary_bridge_route_frozen",
        "1 while a freeze (the route's freeze key, or the prefix's _freeze) holds the route's "
        "objects as they are; no series otherwise.",
        2, route_only);
    out->route_aborted = metrics_gauge(
        m, "canary_bridge_route_aborted",
        "1 while the route's abort key sends all its traffic to its first service; no series "
        "otherwise.",
        2, route_only);
    out->plan_step = metrics_gauge(
        m, "canary_bridge_plan_step",
        "The step (1-based) of the route's ramp plan in force; no series without a plan.", 2,
        route_only);
    out->plan_steps_total =
        metrics_counter(m, "canary_bridge_plan_steps_total",
                        "Steps of ramp plans applied (each step once).", 0, NULL);
    if (!out->plan_step || !out->plan_steps_total)
        return -1;
    out->refusals_total =
        metrics_counter(m, "canary_bridge_refusals_total",
                        "Changes the bridge refused to apply, by reason (max_step: a share of "
                        "traffic would move more than the max step allows); each change once.",
                        1, reason);

    out->writes_delayed_total = metrics_counter(
        m, "canary_bridge_writes_delayed_total",
        "Passes whose writes waited because their objects were written less than "
        "1/reconcile.object_writes_per_second ago (a key rewritten in a loop); each wait ends "
        "in one write of the latest state.",
        0, NULL);

    static const char *const route_state[] = {"namespace", "route", "state"};
    out->route_state = metrics_gauge(
        m, "canary_bridge_route_state",
        "1 for each route, labelled with its state: applied, pending, error, fighting (another "
        "writer undoes its writes), held (its deletion waits for confirmation), frozen or aborted "
        "(a brake holds it).",
        3, route_state);

    if (procstat_register(m, &out->process) < 0 || !out->backend_unready || !out->route_state ||
        !out->route_frozen || !out->route_aborted || !out->refusals_total ||
        !out->writes_delayed_total || !out->undone_writes_total || !out->reconcile_total ||
        !out->conflicts_total || !out->kube_requests_total || !out->source_events_total ||
        !out->propagation_seconds || !out->not_live_total || !out->routes || !out->route_weight ||
        !out->source_connected || !out->source_acl_denied || !out->last_sync_timestamp_seconds ||
        !out->leader || !out->build_info || !out->burst_holds_total || !out->burst_holding ||
        !out->deletion_held || !out->deletion_held_routes)
        return -1;
    if (metric_add(out->refusals_total, METRIC_LABELS("max_step"), 0) < 0)
        return -1;
    return metric_set(out->build_info, METRIC_LABELS(version ? version : "unknown"), 1);
}
