/* fuzz_weights.c - model_parse_weights (bridge/model/weights.c): the `weights` key in
 * all three of its forms (JSON object, YAML mapping, compact name=weight).
 *
 * Invariants beyond "no crash, no sanitizer report":
 *  - on success: at least one weight, every weight in 0..MODEL_WEIGHT_MAX,
 *    at least one of them above zero (all zero is an error: Traefik would
 *    answer 503 to every request), every service name a DNS-1123 label and
 *    no name twice;
 *  - on failure: a reason in err, and *out / *n left empty;
 *  - parsing is deterministic: a second parse gives the same list. */
#include "fuzz_common.h"

#include "bridge/model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static struct model_weight sentinel; /* model_parse_weights must reset *out */
    struct model_weight *w = &sentinel;
    size_t n = 12345;
    char err[512] = "";
    int rc = model_parse_weights((const char *)data, size, &w, &n, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1, "rc %d", rc);
        FUZZ_CHECK(w == NULL && n == 0, "failure left output behind");
        FUZZ_CHECK(err[0] != '\0', "a failed parse gave no reason");
        return 0;
    }
    FUZZ_CHECK(n >= 1 && w, "success with no weights");
    bool positive = false;
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(w[i].service, "weight %zu has no name", i);
        FUZZ_CHECK(w[i].weight >= 0 && w[i].weight <= MODEL_WEIGHT_MAX, "'%s' has weight %ld",
                   w[i].service, w[i].weight);
        FUZZ_CHECK(model_dns1123_label(w[i].service), "'%s' is not a DNS-1123 label", w[i].service);
        positive |= w[i].weight > 0;
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(w[i].service, w[j].service) != 0, "'%s' appears twice", w[i].service);
    }
    FUZZ_CHECK(positive, "all weights are zero");

    struct model_weight *w2;
    size_t n2;
    FUZZ_CHECK(model_parse_weights((const char *)data, size, &w2, &n2, err, sizeof err) == 0,
               "second parse failed: %s", err);
    FUZZ_CHECK(n2 == n, "second parse gave %zu weights, first %zu", n2, n);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(!strcmp(w[i].service, w2[i].service) && w[i].weight == w2[i].weight,
                   "second parse differs at %zu", i);
    model_weights_free(w2, n2);
    model_weights_free(w, n);
    return 0;
}
