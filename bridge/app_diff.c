/* app_diff.c - `canary-bridge diff [NS/NAME]`: for each route a pass would
 * change, a unified diff of each live object it would touch against what
 * the pass would write, as `kubectl diff` shows them:
 *
 *   --- live/IngressRoute/default/shop
 *   +++ desired/IngressRoute/default/shop
 *   @@ -21,10 +21,10 @@
 *   ...
 *   -        weight: 90
 *   +        weight: 80
 *
 * An object a pass would create is diffed against nothing, one it would
 * delete (policy sync) against nothing on the other side. Both sides are
 * YAML without managedFields (the API server's bookkeeping). A frozen
 * route's change is shown with a note, but is no change a sync would make
 * now (it does not count for the exit status). The diff is
 * bridge/lib/linediff.c's; no diff program runs. Exit status as kubectl
 * diff: 0 nothing would change, 1 something would, 2 a route would fail (its
 * error on stderr; the other routes' diffs still print) or no answer came. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/app_internal.h"
#include "bridge/lib/linediff.h"
#include "bridge/lib/value.h"

#define DIFF_CONTEXT 3

/* Fields the API server sets: kubectl apply input leaves them out. */
static const char *const SERVER_FIELDS[] = {"resourceVersion", "uid", "creationTimestamp",
                                            "generation", "selfLink"};

cJSON *app_object_shown(const cJSON *obj, bool for_apply) {
    cJSON *copy = cJSON_Duplicate(obj, 1);
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(copy, "metadata");
    cJSON_DeleteItemFromObjectCaseSensitive(meta, "managedFields");
    for (size_t i = 0; for_apply && i < sizeof SERVER_FIELDS / sizeof SERVER_FIELDS[0]; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(meta, SERVER_FIELDS[i]);
    if (for_apply)
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "status");
    return copy;
}

/* obj as YAML into out (nothing for NULL). 0, or -1 out of memory. */
static int object_text(const cJSON *obj, buf_t *out) {
    if (!obj)
        return 0;
    cJSON *shown = app_object_shown(obj, false);
    int rc = shown ? value_emit_yaml(shown, out, false) : -1;
    cJSON_Delete(shown);
    return rc;
}

/* The diff of one object into out: 1 it differs, 0 not, -1 out of memory. */
static int object_diff(const char *ns, const struct preview_obj *o, buf_t *out) {
    buf_t live = BUF_INIT, want = BUF_INIT;
    char la[400], lb[400];
    snprintf(la, sizeof la, "live/%s/%s/%s", obj_kind_name[o->kind], ns, o->name);
    snprintf(lb, sizeof lb, "desired/%s/%s/%s", obj_kind_name[o->kind], ns, o->name);
    int rc = -1;
    if (object_text(o->live, &live) == 0 && object_text(o->want, &want) == 0)
        rc = linediff_unified(live.data ? live.data : "", want.data ? want.data : "", la, lb,
                              DIFF_CONTEXT, out);
    buf_free(&live);
    buf_free(&want);
    return rc;
}

int app_diff_print(struct generation *g, const char *const *ids, size_t n) {
    buf_t out = BUF_INIT;
    size_t changes = 0, errors = 0;
    for (size_t i = 0; i < n; i++) {
        struct route_preview p;
        if (reconciler_preview(&g->rec, ids[i], &p) < 0) {
            fprintf(stderr, "error: route %s: out of memory\n", ids[i]);
            errors++;
            continue;
        }
        const char *slash = strchr(ids[i], '/');
        char ns[MODEL_NS_MAX + 1];
        snprintf(ns, sizeof ns, "%.*s", (int)(slash ? slash - ids[i] : 0), ids[i]);
        size_t waiting = 0;
        for (size_t k = 0; k < p.n_objs; k++) {
            if (p.objs[k].action == PREVIEW_SAME)
                continue;
            int rc = object_diff(ns, &p.objs[k], &out);
            if (rc < 0) {
                fprintf(stderr, "error: route %s: out of memory\n", ids[i]);
                errors++;
            }
            /* Frozen: shown, but no change a sync would make now. */
            *(p.brake == BRAKE_FROZEN ? &waiting : &changes) += rc > 0;
        }
        if (waiting)
            fprintf(stderr,
                    "note: route %s is frozen (%s): its change waits until the freeze ends; a "
                    "sync now writes none of it\n",
                    ids[i], p.brake_reason);
        if (p.brake == BRAKE_ABORTED)
            fprintf(stderr,
                    "note: route %s is aborted (%s): all its traffic goes to its first service\n",
                    ids[i], p.brake_reason);
        if (p.error) {
            fprintf(stderr, "error: route %s: %s\n", ids[i], p.error);
            errors++;
        } else if (p.held) {
            fprintf(stderr,
                    "note: route %s: its keys are gone, but the deletion guard holds the "
                    "deletion of its objects (see reconcile.max_delete_percent)\n",
                    ids[i]);
        }
        reconciler_preview_free(&p);
    }
    if (out.len)
        fwrite(out.data, 1, out.len, stdout);
    buf_free(&out);
    g->app->diff_changes = changes > 0;
    return errors ? EXIT_DIFF_ERROR : changes ? EXIT_DIFF_CHANGES : EXIT_DIFF_NONE;
}
