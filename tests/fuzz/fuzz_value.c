/* fuzz_value.c - value_parse (bridge/lib/value.c): the YAML/JSON loader every key
 * value goes through, and value_emit_yaml, which `canary-bridge render`
 * prints objects with.
 *
 * Invariants beyond "no crash, no sanitizer report":
 *  - a failed parse leaves a non-empty reason in err;
 *  - whatever parses, emitted as YAML (with and without "---"), parses
 *    again, and the two trees are equal: same types, keys in the same order,
 *    strings byte for byte, numbers as the same double (cJSON_Compare too,
 *    when every number is finite: it cannot compare inf and NaN);
 *  - integer-ness survives: value_get_int gives the same answer on both
 *    sides (10 and 10.0 are different weights to the model);
 *  - emitting is a fixed point: emit(parse(emit(v))) == emit(v).
 *
 * (Former known bugs emit-nonprintable, C1 controls and U+FFFE/U+FFFF
 * emitted raw, and emit-long-key, keys over 1024 characters emitted as
 * implicit keys, are fixed; see regressions/value/.) */
#include "fuzz_common.h"

#include <limits.h>

#include "bridge/lib/buf.h"
#include "bridge/lib/value.h"

static void same_ints(const cJSON *a, const cJSON *b) {
    if (cJSON_IsNumber(a)) {
        long long x = 0, y = 0;
        bool ra = value_get_int(a, LLONG_MIN, LLONG_MAX, &x);
        bool rb = value_get_int(b, LLONG_MIN, LLONG_MAX, &y);
        FUZZ_CHECK(ra == rb && x == y, "integer-ness changed: %s (%d, %lld) vs %s (%d, %lld)",
                   a->valuestring ? a->valuestring : "?", ra, x,
                   b->valuestring ? b->valuestring : "?", rb, y);
    }
    for (const cJSON *x = a->child, *y = b->child; x && y; x = x->next, y = y->next)
        same_ints(x, y);
}

static void round_trip(const cJSON *v, bool doc_start) {
    buf_t out = BUF_INIT;
    FUZZ_CHECK(value_emit_yaml(v, &out, doc_start) == 0, "emit failed");
    char err[256];
    cJSON *again = value_parse(out.data, out.len, err, sizeof err);
    FUZZ_CHECK(again, "emitted YAML does not parse back (%s):\n%s", err, out.data);
    FUZZ_CHECK(fuzz_json_equal(v, again), "round trip changed the value:\n%s", out.data);
    FUZZ_CHECK(!fuzz_json_finite(v) || cJSON_Compare(v, again, true),
               "cJSON_Compare disagrees:\n%s", out.data);
    same_ints(v, again);

    buf_t out2 = BUF_INIT;
    FUZZ_CHECK(value_emit_yaml(again, &out2, doc_start) == 0, "second emit failed");
    FUZZ_CHECK(out.len == out2.len && !memcmp(out.data, out2.data, out.len),
               "emit is not a fixed point:\n%s\n----\n%s", out.data, out2.data);
    buf_free(&out2);
    cJSON_Delete(again);
    buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    cJSON *v = value_parse((const char *)data, size, err, sizeof err);
    if (!v) {
        FUZZ_CHECK(err[0] != '\0', "a failed parse gave no reason");
        return 0;
    }
    round_trip(v, false);
    round_trip(v, true);
    cJSON_Delete(v);
    return 0;
}
