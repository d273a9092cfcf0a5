/* app_status_cmd.c - `canary-bridge status [NS/NAME] [-o json]`: one line per
 * route, from the source (what it should be) and the cluster (what it is):
 *
 *   ROUTE         STATE    DESIRED                LIVE                   APPLIED REVISION  ERROR
 *   default/shop  in sync  shop-v1=90,shop-v2=10  shop-v1=90,shop-v2=10  2026-11-25T16:10:00Z  1234
 * -
 *
 *   DESIRED   the weights the route's keys ask for (every service in owned
 *             mode, the ones named in `weights` in patched mode);
 *   LIVE      the weights on the live objects: the IngressRoute's weighted
 *             route (or its TraefikService, for a sticky route); in patched
 *             mode each service's first weight in any route of the object;
 *   STATE     in sync (a pass would write nothing), differs (it would write
 *             or delete something), missing (the IngressRoute is not
 *             there), error (a pass would fail: ERROR says why), frozen (a
 *             freeze holds it; an abort shows in ERROR);
 *   APPLIED   when the bridge last applied the route: the time of its
 *             status key (reconcile.status) when that says "applied";
 *   SERVED    with traefik.api, whether Traefik serves the applied weights:
 *             live, pending, or stale and who lags (the status key's
 *             `served`); the column shows only when a route has it;
 *   REVISION  the source revision the live objects were written from (their
 *             canary-bridge.io/source-revision annotation), else the status
 *             key's;
 *   ERROR     why a pass would fail, else a held deletion, else the brake
 *             ("frozen: <reason>; a change waits"), else a mistyped key under
 *             the route, else the status key's message when it is not
 *             "applied".
 *
 * -o json prints {"routes": [...]} with the same fields per route (weights
 * as objects, absent values as null) and the status key as it is. Like
 * diff, it judges each route with reconciler_preview and writes nothing.
 * Exit status 0 once everything was read, whatever state the routes are in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/app_internal.h"

enum {
    COL_ROUTE,
    COL_STATE,
    COL_DESIRED,
    COL_LIVE,
    COL_APPLIED,
    COL_SERVED,
    COL_REVISION,
    COL_ERROR,
    NCOLS
};
static const char *const COL_TITLE[NCOLS] = {"ROUTE",   "STATE",  "DESIRED",  "LIVE",
                                             "APPLIED", "SERVED", "REVISION", "ERROR"};

/* ---- weights ---- */

static const cJSON *child(const cJSON *obj, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, a);
    return b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
}

/* Add services[]' weights to w (null when a service has none: Traefik's
 * default); with only, only the services named there, and a service only
 * once. false out of memory. */
static bool add_weights(cJSON *w, const cJSON *services, const cJSON *only) {
    const cJSON *s;
    cJSON_ArrayForEach(s, services) {
        const char *name = kobj_str(s, "name", NULL);
        const cJSON *weight = cJSON_GetObjectItemCaseSensitive(s, "weight");
        if (!name || cJSON_HasObjectItem(w, name) || (only && !cJSON_HasObjectItem(only, name)))
            continue;
        cJSON *v =
            cJSON_IsNumber(weight) ? cJSON_CreateNumber(weight->valuedouble) : cJSON_CreateNull();
        if (!v || !cJSON_AddItemToObject(w, name, v)) {
            cJSON_Delete(v);
            return false;
        }
    }
    return true;
}

static cJSON *desired_weights(const struct route_preview *p) {
    if (!p->has_model)
        return cJSON_CreateNull();
    cJSON *w = cJSON_CreateObject();
    double v;
    for (size_t i = 0; w && i < app_weight_count(&p->model); i++) {
        const char *svc = app_weight_at(&p->model, i, &v);
        if (!cJSON_AddNumberToObject(w, svc, v)) {
            cJSON_Delete(w);
            return NULL;
        }
    }
    return w;
}

/* The weights on the live objects (null when the IngressRoute is missing). */
static cJSON *live_weights(struct generation *g, const char *ns, const char *name,
                           const cJSON *desired) {
    const cJSON *ir = informer_get(&g->inf[OBJ_INGRESSROUTE], ns, name);
    if (!ir)
        return cJSON_CreateNull();
    cJSON *w = cJSON_CreateObject();
    const cJSON *routes = child(ir, "spec", "routes");
    bool ok = w != NULL;
    if (ok && !traefik_is_managed(ir)) { /* patched mode: every route of it */
        const cJSON *route;
        cJSON_ArrayForEach(route, routes) {
            ok = ok && add_weights(w, cJSON_GetObjectItemCaseSensitive(route, "services"),
                                   cJSON_IsObject(desired) ? desired : NULL);
        }
    } else if (ok) { /* owned: the weighted route is the last */
        const cJSON *services = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(routes, cJSON_GetArraySize(routes) - 1), "services");
        const cJSON *first = cJSON_GetArrayItem(services, 0);
        const char *kind = kobj_str(first, "kind", NULL);
        const char *ts_name = kobj_str(first, "name", NULL);
        if (kind && ts_name && strcmp(kind, "TraefikService") == 0)
            services = child(
                child(informer_get(&g->inf[OBJ_TRAEFIKSERVICE], ns, ts_name), "spec", "weighted"),
                "services", NULL);
        ok = add_weights(w, services, NULL);
    }
    if (!ok) {
        cJSON_Delete(w);
        return NULL;
    }
    return w;
}

/* ---- one route ---- */

/* The state as if no brake were pulled. */
static const char *route_state_unbraked(const struct route_preview *p) {
    if (p->missing)
        return "missing";
    if (p->error)
        return "error";
    for (size_t i = 0; i < p->n_objs; i++)
        if (p->objs[i].action != PREVIEW_SAME)
            return "differs";
    return p->held ? "differs" : "in sync";
}

static const char *route_state(const struct route_preview *p) {
    return p->brake == BRAKE_FROZEN && !p->missing ? "frozen" : route_state_unbraked(p);
}

static bool add_string_or_null(cJSON *obj, const char *key, const char *v) {
    return v ? cJSON_AddStringToObject(obj, key, v) != NULL
             : cJSON_AddNullToObject(obj, key) != NULL;
}

/* The route's row as a JSON object, or NULL out of memory. */
static cJSON *route_row(struct generation *g, const char *id, const struct route_preview *p) {
    char ns[MODEL_NS_MAX + 1], errors[2048] = "";
    const char *slash = strchr(id, '/');
    snprintf(ns, sizeof ns, "%.*s", (int)(slash ? slash - id : 0), id);
    const char *name = slash ? slash + 1 : id;
    const char *status_text = keycache_status(&g->keys, id);
    cJSON *skey = status_text ? cJSON_Parse(status_text) : NULL;
    const char *skey_state = kobj_str(skey, "state", NULL);
    bool applied = skey_state && strcmp(skey_state, "applied") == 0;

    const cJSON *ir = informer_get(&g->inf[OBJ_INGRESSROUTE], ns, name);
    const char *ann_rev =
        ir && traefik_is_managed(ir)
            ? kobj_str(child(ir, "metadata", NULL), "annotations", TRAEFIK_ANNOT_REVISION)
            : NULL;
    const cJSON *skey_rev = cJSON_GetObjectItemCaseSensitive(skey, "revision");

    const char *error = p->error;
    char brake[KEYCACHE_REASON_MAX + 128] = "";
    if (p->brake != BRAKE_NONE)
        snprintf(brake, sizeof brake, "%s: %s%s", p->brake == BRAKE_FROZEN ? "frozen" : "aborted",
                 p->brake_reason,
                 p->brake == BRAKE_ABORTED ? "; all traffic on the first service"
                 : strcmp(route_state_unbraked(p), "in sync") != 0 ? "; a change waits"
                                                                   : "");
    if (!error && p->held)
        error = "its keys are gone; the deletion guard holds the deletion of its objects";
    if (!error && brake[0])
        error = brake;
    if (!error && keycache_leaf_errors(&g->keys, id, errors, sizeof errors))
        error = errors;
    if (!error && skey_state && !applied)
        error = kobj_str(skey, "message", NULL);
    if (error && !*error)
        error = NULL;

    cJSON *row = cJSON_CreateObject();
    cJSON *desired = desired_weights(p);
    cJSON *live = desired ? live_weights(g, ns, name, desired) : NULL;
    bool ok = row && desired && live && cJSON_AddStringToObject(row, "route", id) &&
              add_string_or_null(row, "mode",
                                 !p->has_model ? NULL
                                 : p->patched  ? "patched"
                                               : "owned") &&
              cJSON_AddStringToObject(row, "state", route_state(p)) &&
              add_string_or_null(row, "brake",
                                 p->brake == BRAKE_FROZEN    ? "frozen"
                                 : p->brake == BRAKE_ABORTED ? "aborted"
                                                             : NULL) &&
              cJSON_AddItemToObject(row, "desired", desired) &&
              cJSON_AddItemToObject(row, "live", live);
    if (!ok) { /* desired and live are the row's once added */
        if (!cJSON_HasObjectItem(row, "desired"))
            cJSON_Delete(desired);
        if (!cJSON_HasObjectItem(row, "live"))
            cJSON_Delete(live);
    }
    ok = ok && add_string_or_null(row, "applied", applied ? kobj_str(skey, "time", NULL) : NULL) &&
         (ann_rev ? cJSON_AddNumberToObject(row, "revision", strtod(ann_rev, NULL)) != NULL
          : cJSON_IsNumber(skey_rev)
              ? cJSON_AddNumberToObject(row, "revision", skey_rev->valuedouble) != NULL
              : cJSON_AddNullToObject(row, "revision") != NULL) &&
         add_string_or_null(row, "error", error) &&
         add_string_or_null(row, "served", kobj_str(skey, "served", NULL));
    if (ok && skey && cJSON_AddItemToObject(row, "status_key", skey))
        skey = NULL;
    else if (ok)
        ok = cJSON_AddNullToObject(row, "status_key") != NULL;
    cJSON_Delete(skey);
    if (!ok) {
        cJSON_Delete(row);
        return NULL;
    }
    return row;
}

/* ---- the table ---- */

/* "a=90,b=10", "-" for none; weights without a number print as "a=-". */
static int weights_text(const cJSON *w, buf_t *out) {
    if (!cJSON_IsObject(w) || !w->child)
        return buf_puts(out, "-");
    int rc = 0;
    for (const cJSON *c = w->child; c && rc == 0; c = c->next) {
        rc = buf_printf(out, "%s%s=", c == w->child ? "" : ",", c->string);
        if (rc == 0)
            rc = cJSON_IsNumber(c) ? buf_printf(out, "%.0f", c->valuedouble) : buf_puts(out, "-");
    }
    return rc;
}

/* The row's cells as text (cells[i] heap strings). 0, or -1 out of memory. */
static int row_cells(const cJSON *row, char *cells[NCOLS]) {
    buf_t b[NCOLS] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT,
                      BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
    const char *applied = kobj_str(row, "applied", NULL), *error = kobj_str(row, "error", NULL);
    const cJSON *rev = cJSON_GetObjectItemCaseSensitive(row, "revision");
    int rc = buf_puts(&b[COL_ROUTE], kobj_str(row, "route", NULL));
    rc = rc ? rc : buf_puts(&b[COL_STATE], kobj_str(row, "state", NULL));
    rc = rc ? rc : weights_text(cJSON_GetObjectItemCaseSensitive(row, "desired"), &b[COL_DESIRED]);
    rc = rc ? rc : weights_text(cJSON_GetObjectItemCaseSensitive(row, "live"), &b[COL_LIVE]);
    rc = rc ? rc : buf_puts(&b[COL_APPLIED], applied ? applied : "-");
    const char *served = kobj_str(row, "served", NULL);
    rc = rc ? rc : buf_puts(&b[COL_SERVED], served ? served : "-");
    rc = rc                    ? rc
         : cJSON_IsNumber(rev) ? buf_printf(&b[COL_REVISION], "%.0f", rev->valuedouble)
                               : buf_puts(&b[COL_REVISION], "-");
    rc = rc ? rc : buf_puts(&b[COL_ERROR], error ? error : "-");
    for (int i = 0; i < NCOLS; i++) {
        cells[i] = rc == 0 ? buf_steal(&b[i]) : NULL;
        rc = rc == 0 && !cells[i] ? -1 : rc;
        buf_free(&b[i]);
    }
    return rc;
}

static int print_table(const cJSON *rows) {
    int n = cJSON_GetArraySize(rows), rc = 0;
    char *(*cells)[NCOLS] = calloc((size_t)n + 1, sizeof *cells);
    size_t width[NCOLS];
    if (!cells)
        return -1;
    for (int c = 0; c < NCOLS; c++) {
        cells[0][c] = strdup(COL_TITLE[c]);
        rc = cells[0][c] ? rc : -1;
    }
    bool served = false; /* the SERVED column shows when a route has it */
    for (int i = 0; i < n && rc == 0; i++) {
        rc = row_cells(cJSON_GetArrayItem(rows, i), cells[i + 1]);
        served = served || kobj_str(cJSON_GetArrayItem(rows, i), "served", NULL);
    }
    for (int c = 0; c < NCOLS && rc == 0; c++) {
        width[c] = 0;
        for (int i = 0; i <= n; i++)
            if (strlen(cells[i][c]) > width[c])
                width[c] = strlen(cells[i][c]);
    }
    for (int i = 0; i <= n && rc == 0; i++) {
        for (int c = 0; c < NCOLS - 1; c++)
            if (c != COL_SERVED || served)
                printf("%-*s  ", (int)width[c], cells[i][c]);
        printf("%s\n", cells[i][NCOLS - 1]);
    }
    for (int i = 0; i <= n; i++)
        for (int c = 0; c < NCOLS; c++)
            free(cells[i][c]);
    free(cells);
    return rc;
}

int app_status_cmd_print(struct generation *g, const char *const *ids, size_t n) {
    cJSON *doc = cJSON_CreateObject();
    cJSON *rows = doc ? cJSON_AddArrayToObject(doc, "routes") : NULL;
    int rc = rows ? 0 : -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct route_preview p;
        if (reconciler_preview(&g->rec, ids[i], &p) < 0) {
            rc = -1;
            break;
        }
        /* A route without keys that owns nothing here has nothing to say. */
        bool shown = p.has_keys || p.n_objs || p.held;
        cJSON *row = shown ? route_row(g, ids[i], &p) : NULL;
        if (shown && (!row || !cJSON_AddItemToArray(rows, row))) {
            cJSON_Delete(row);
            rc = -1;
        }
        reconciler_preview_free(&p);
    }
    char *text = rc == 0 && g->app->json ? cJSON_Print(doc) : NULL;
    if (text)
        printf("%s\n", text);
    else if (rc == 0)
        rc = g->app->json ? -1 : print_table(rows);
    cJSON_free(text);
    cJSON_Delete(doc);
    if (rc < 0)
        fprintf(stderr, "error: status: out of memory\n");
    return rc < 0 ? EXIT_RUNTIME : EXIT_OK;
}
