/* app_page.c - the status page at / on server.listen: one table row per
 * route with its state, the weights in force as a bar, whether Traefik
 * serves them (with traefik.api), when it last changed and its error,
 * problems first. Plain HTML with inline CSS, no script, no
 * external assets; a meta refresh reloads it every few seconds.
 *
 * Everything that comes from outside (route names, service names, error
 * messages quoting keys) is HTML-escaped, and the page is served with a
 * Content-Security-Policy that allows no script and no fetch at all, so even
 * a missed escape could not run anything. The page reads what /metrics
 * reads and changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/app_internal.h"

#define PAGE_REFRESH_S 5
#define PAGE_MAX_ROUTES 1000 /* rows shown; /metrics has every route */

/* Bar colours, by the service's place in the route. */
static const char *const palette[] = {"#2b6cb0", "#dd6b20", "#2f855a", "#805ad5",
                                      "#b7791f", "#d53f8c", "#319795", "#718096"};
#define PALETTE_N (sizeof palette / sizeof palette[0])

static const char page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<style>\n"
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1a202c;background:#fff}\n"
    "h1{font-size:1.3em;margin:0 0 .2em}\n"
    ".summary{color:#4a5568;margin:0 0 1em}\n"
    ".notice{background:#fefcbf;border:1px solid #d69e2e;padding:.5em .8em;margin:0 0 1em}\n"
    "table{border-collapse:collapse;width:100%}\n"
    "th,td{text-align:left;padding:.45em .6em;border-bottom:1px solid #e2e8f0;"
    "vertical-align:top}\n"
    "th{font-weight:600;color:#4a5568;background:#f7fafc}\n"
    "td.route{font-family:ui-monospace,monospace;white-space:nowrap}\n"
    "td.when{white-space:nowrap}\n"
    ".bar{display:flex;width:22em;height:1.2em;background:#edf2f7;overflow:hidden}\n"
    ".bar span{flex:none;height:100%}\n"
    ".legend{font-size:.85em;color:#4a5568;margin-top:.25em}\n"
    ".legend .w{margin-right:.9em;white-space:nowrap}\n"
    ".sw{display:inline-block;width:.7em;height:.7em;margin-right:.3em}\n"
    ".none{color:#a0aec0}\n"
    ".state{font-weight:600;padding:.1em .5em;border-radius:3px}\n"
    ".st-applied{color:#22543d;background:#e6fffa}\n"
    ".st-pending{color:#744210;background:#fffff0}\n"
    ".st-error{color:#fff;background:#c53030}\n"
    ".st-fighting{color:#fff;background:#c05621}\n"
    ".st-held{color:#fff;background:#6b46c1}\n"
    ".err{color:#9b2c2c;white-space:pre-wrap;overflow-wrap:anywhere;max-width:40em}\n"
    ".note{color:#4a5568}\n"
    ".sv-live{color:#22543d}\n"
    ".sv-pending{color:#744210}\n"
    ".sv-stale{color:#9b2c2c;overflow-wrap:anywhere}\n"
    "</style>\n";

/* Escape s for HTML text and attribute values; control bytes become '?'. */
static int put_html(buf_t *b, const char *s) {
    int rc = 0;
    for (const char *run = s;; s++) {
        const char *esc = NULL;
        unsigned char c = (unsigned char)*s;
        if (c == '&')
            esc = "&amp;";
        else if (c == '<')
            esc = "&lt;";
        else if (c == '>')
            esc = "&gt;";
        else if (c == '"')
            esc = "&quot;";
        else if (c == '\'')
            esc = "&#39;";
        else if (c && ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f))
            esc = "?";
        else if (c)
            continue;
        rc = rc ? rc : buf_append(b, run, (size_t)(s - run));
        if (!esc)
            return rc;
        rc = rc ? rc : buf_puts(b, esc);
        run = s + 1;
    }
}

static void stamp_of(double when, char stamp[32]) {
    time_t t = (time_t)when;
    struct tm tm;
    stamp[0] = '\0';
    if (gmtime_r(&t, &tm))
        strftime(stamp, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "<time>2024-05-01T12:00:00Z</time> (12 s ago)", or a dash for never. */
static int put_time(buf_t *b, double when, double now) {
    if (when <= 0)
        return buf_puts(b, "<span class=\"none\">&mdash;</span>");
    char stamp[32];
    stamp_of(when, stamp);
    double ago = now > when ? now - when : 0;
    char rel[32];
    if (ago < 120)
        snprintf(rel, sizeof rel, "%.0f s ago", ago);
    else if (ago < 7200)
        snprintf(rel, sizeof rel, "%.0f min ago", ago / 60);
    else if (ago < 172800)
        snprintf(rel, sizeof rel, "%.0f h ago", ago / 3600);
    else
        snprintf(rel, sizeof rel, "%.0f days ago", ago / 86400);
    return buf_printf(b, "<time datetime=\"%s\">%s</time> (%s)", stamp, stamp, rel);
}

/* The weights in force as a bar (one span per service, widths in
 * proportion) and a legend naming each service and its weight. */
static int put_weights(buf_t *b, const char *json) {
    cJSON *w = json ? cJSON_Parse(json) : NULL;
    double total = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, w) {
        if (cJSON_IsNumber(s) && s->valuedouble > 0)
            total += s->valuedouble;
    }
    if (!w || !w->child) {
        cJSON_Delete(w);
        return buf_puts(b, "<span class=\"none\">none applied yet</span>");
    }
    int rc = buf_puts(b, "<div class=\"bar\">");
    size_t i = 0;
    cJSON_ArrayForEach(s, w) {
        double v = cJSON_IsNumber(s) && s->valuedouble > 0 ? s->valuedouble : 0;
        if (v > 0 && total > 0) {
            rc = rc ? rc
                    : buf_printf(b, "<span style=\"width:%.4f%%;background:%s\" title=\"",
                                 100.0 * v / total, palette[i % PALETTE_N]);
            rc = rc ? rc : put_html(b, s->string);
            rc = rc ? rc : buf_printf(b, " %g\"></span>", v);
        }
        i++;
    }
    rc = rc ? rc : buf_puts(b, "</div><div class=\"legend\">");
    i = 0;
    cJSON_ArrayForEach(s, w) {
        double v = cJSON_IsNumber(s) ? s->valuedouble : 0;
        rc = rc ? rc : buf_puts(b, "<span class=\"w\" data-service=\"");
        rc = rc ? rc : put_html(b, s->string);
        rc = rc ? rc
                : buf_printf(b,
                             "\" data-weight=\"%g\"><span class=\"sw\" style=\"background:%s\">"
                             "</span>",
                             v, palette[i % PALETTE_N]);
        rc = rc ? rc : put_html(b, s->string);
        rc = rc ? rc : buf_printf(b, " %g</span>", v);
        i++;
    }
    cJSON_Delete(w);
    return rc ? rc : buf_puts(b, "</div>");
}

struct row {
    const char *id; /* the map's key: valid while the page is made */
    const char *state;
    int rank; /* problems first */
};

struct rows {
    struct row *v;
    size_t n, cap;
    bool oom;
    size_t count[5]; /* by rank */
};

static int state_rank(const char *state) {
    static const char *const order[] = {"error", "fighting", "held", "pending", "applied"};
    for (int i = 0; i < 5; i++)
        if (strcmp(state, order[i]) == 0)
            return i;
    return 3;
}

static void collect(struct generation *g, const char *id, void *user) {
    struct rows *rs = user;
    const struct route_status *st;
    const char *state = app_route_state(g, id, &st);
    int rank = state_rank(state);
    rs->count[rank]++;
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 64;
        struct row *v = realloc(rs->v, cap * sizeof *v);
        if (!v) {
            rs->oom = true;
            return;
        }
        rs->v = v;
        rs->cap = cap;
    }
    rs->v[rs->n++] = (struct row){id, state, rank};
}

static int row_cmp(const void *a, const void *b) {
    const struct row *x = a, *y = b;
    return x->rank != y->rank ? x->rank - y->rank : strcmp(x->id, y->id);
}

/* traefik.api: whether every Traefik instance serves the route's weights:
 * live, pending, or "stale: <who lags and what it reports>"; a dash for a
 * route not applied since the start. */
static int put_served(buf_t *b, struct generation *g, const char *id) {
    struct live_view v;
    if (!live_view(&g->live, id, &v))
        return buf_puts(b, "<td class=\"served\"><span class=\"none\">&mdash;</span></td>");
    const char *name = live_served_name(v.served);
    int rc = buf_printf(b, "<td class=\"served sv-%s\" data-served=\"%s\">%s", name, name, name);
    if (v.served == LIVE_STALE && v.reason) {
        rc = rc ? rc : buf_puts(b, ": ");
        rc = rc ? rc : put_html(b, v.reason);
    }
    return rc ? rc : buf_puts(b, "</td>");
}

static int put_row(buf_t *b, struct generation *g, const struct row *r, double now) {
    const struct route_status *st;
    (void)app_route_state(g, r->id, &st);
    const struct app_route_seen *seen = map_get(&g->route_seen, r->id);
    int rc = buf_puts(b, "<tr data-route=\"");
    rc = rc ? rc : put_html(b, r->id);
    rc = rc ? rc : buf_printf(b, "\" data-state=\"%s\"><td class=\"route\">", r->state);
    rc = rc ? rc : put_html(b, r->id);
    rc = rc ? rc
            : buf_printf(b, "</td><td><span class=\"state st-%s\">%s</span></td><td>", r->state,
                         r->state);
    rc = rc ? rc : put_weights(b, map_get(&g->weights_in_force, r->id));
    rc = rc ? rc : buf_puts(b, "</td>");
    if (g->have_live)
        rc = rc ? rc : put_served(b, g, r->id);
    rc = rc ? rc : buf_puts(b, "<td class=\"when\">");
    rc = rc ? rc : put_time(b, seen ? seen->changed : 0, now);
    rc = rc ? rc : buf_puts(b, "</td><td class=\"err\">");
    char leaves[1024];
    if (keycache_leaf_errors(&g->keys, r->id, leaves, sizeof leaves))
        rc = rc ? rc : put_html(b, leaves);
    else if (st && st->message)
        rc = rc ? rc : put_html(b, st->message);
    if (st && st->weights_held)
        rc = rc ? rc
                : buf_puts(b, "<span class=\"note\">weights key gone: the weights in force "
                              "stay</span>");
    const struct plan_status *plan = g->have_rec ? reconciler_plan(&g->rec, r->id) : NULL;
    if (plan) {
        char note[700], next[32] = "";
        if (!plan->paused && plan->has_next)
            stamp_of((double)plan->next_ms / 1000.0, next);
        snprintf(note, sizeof note, "plan step %zu of %zu%s%s%s%s", plan->step + 1, plan->n_steps,
                 plan->paused ? ", paused: " : "", plan->paused ? plan->why : "",
                 next[0] ? ", next change at " : "", next);
        rc = rc ? rc : buf_puts(b, "<span class=\"note plan\">");
        rc = rc ? rc : put_html(b, note);
        rc = rc ? rc : buf_puts(b, "</span>");
    }
    return rc ? rc : buf_puts(b, "</td></tr>\n");
}

static int put_page(buf_t *b, struct generation *g, struct rows *rs) {
    struct app *a = g->app;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    size_t problems = rs->count[0] + rs->count[1] + rs->count[2];
    size_t total = problems + rs->count[3] + rs->count[4];
    int rc = buf_puts(b, page_head);
    rc = rc ? rc : buf_printf(b, "<meta http-equiv=\"refresh\" content=\"%d\">\n", PAGE_REFRESH_S);
    rc = rc ? rc
            : buf_printf(b,
                         "<title>%s%zu route%s, %zu with problems - canary-bridge</title>"
                         "</head><body>\n<h1>canary-bridge</h1>\n",
                         a->dry_run ? "dry-run: " : "", total, total == 1 ? "" : "s", problems);
    rc = rc ? rc
            : buf_printf(b,
                         "<p class=\"summary\">%s%zu routes: %zu applied, %zu pending, %zu error, "
                         "%zu fighting, %zu held &middot; source %s &middot; %s &middot; "
                         "version %s &middot; ",
                         a->dry_run ? "<b>dry-run</b> &middot; " : "", total, rs->count[4],
                         rs->count[3], rs->count[0], rs->count[1], rs->count[2],
                         g->source_connected ? "connected" : "<b>disconnected</b>",
                         g->leader ? "leader (writes)" : "follower (does not write)",
                         CANARY_BRIDGE_VERSION);
    char stamp[32];
    stamp_of(now, stamp);
    rc = rc ? rc : buf_printf(b, "%s &middot; refreshes every %d s</p>\n", stamp, PAGE_REFRESH_S);
    char held[512];
    if (g->have_rec && reconciler_guard_describe(&g->rec, held, sizeof held)) {
        rc = rc ? rc : buf_puts(b, "<p class=\"notice\">");
        rc = rc ? rc : put_html(b, held);
        rc = rc ? rc : buf_puts(b, "</p>\n");
    }
    rc = rc ? rc
            : buf_printf(b,
                         "<table><thead><tr><th>Route</th><th>State</th><th>Weights in "
                         "force</th>%s<th>Last change</th><th>Error</th></tr></thead>\n<tbody>\n",
                         g->have_live ? "<th>Served</th>" : "");
    size_t shown = rs->n < PAGE_MAX_ROUTES ? rs->n : PAGE_MAX_ROUTES;
    for (size_t i = 0; i < shown && rc == 0; i++)
        rc = put_row(b, g, &rs->v[i], now);
    rc = rc ? rc : buf_puts(b, "</tbody></table>\n");
    if (total > shown)
        rc = rc ? rc
                : buf_printf(b,
                             "<p class=\"note\">%zu more routes not shown (problems come first); "
                             "/metrics has every route.</p>\n",
                             total - shown);
    if (total == 0)
        rc = rc ? rc
                : buf_printf(b, "<p class=\"none\">No routes under %s yet.</p>\n",
                             a->cfg.source.prefix);
    return rc ? rc : buf_puts(b, "</body></html>\n");
}

void app_page_serve(struct generation *g, struct httpd_response *res) {
    struct rows rs = {0};
    if (g->have_keys)
        app_for_each_route(g, collect, &rs);
    if (rs.n)
        qsort(rs.v, rs.n, sizeof *rs.v, row_cmp);
    res->content_type = "text/html; charset=utf-8";
    /* No script, no request to anywhere: the page is text and inline CSS. */
    res->headers = "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
                   "frame-ancestors 'none'\r\n"
                   "X-Content-Type-Options: nosniff\r\n";
    if (rs.oom || put_page(&res->body, g, &rs) < 0) {
        res->status = 500;
        res->content_type = NULL;
        res->headers = NULL;
        buf_reset(&res->body);
        buf_puts(&res->body, "out of memory\n");
    }
    free(rs.v);
}
