/* fuzz_common.h - shared by every fuzz target and by replay.c.
 *
 * Targets check invariants beyond "does not crash". A broken invariant must
 * look like a crash to libFuzzer (so the input is saved as an artifact) and
 * must fail the plain replay runner too, so FUZZ_CHECK prints where and why,
 * then aborts. Nothing here depends on libFuzzer: the same target source is
 * compiled with gcc into the replay runners. */
#ifndef CB_FUZZ_COMMON_H
#define CB_FUZZ_COMMON_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The libFuzzer entry point every target defines. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Checks for known, reported, still open bugs can be switched off with
 * CB_FUZZ_SKIP=name[,name...], so a campaign is not stopped at the same
 * crash over and over while the owner fixes it. Nothing sets it by default:
 * run.sh and the replay tests fail until the bug is fixed. */
static inline bool fuzz_skip(const char *check) {
    const char *s = getenv("CB_FUZZ_SKIP");
    size_t n = strlen(check);
    for (; s && *s; s += strcspn(s, ","), s += *s == ',')
        if (strcspn(s, ",") == n && !strncmp(s, check, n))
            return true;
    return false;
}

/* A NUL-terminated heap copy of the input, for APIs that want C strings.
 * Aborts on ENOMEM: libFuzzer's -rss_limit_mb reports real exhaustion. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* True when s holds a byte a single-line, printable message must not:
 * C0 controls and DEL. */
static inline bool fuzz_has_control(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* True when some object in the tree has a key twice. cJSON keeps both; the
 * API server never sends such JSON (and Go would keep the last one). */
static inline bool fuzz_json_dup_keys(const cJSON *n) {
    for (const cJSON *c = n ? n->child : NULL; c; c = c->next) {
        if (cJSON_IsObject(n) && c->string)
            for (const cJSON *d = c->next; d; d = d->next)
                if (d->string && !strcmp(c->string, d->string))
                    return true;
        if (fuzz_json_dup_keys(c))
            return true;
    }
    return false;
}

/* Strict structural equality of two cJSON trees: same types, same keys in
 * the same order, same strings, numbers equal as doubles (NaN equal to NaN).
 * cJSON_Compare is not enough for round trips: it compares numbers within
 * an epsilon and calls inf != inf and NaN != NaN. */
static inline bool fuzz_json_equal(const cJSON *a, const cJSON *b) {
    if (!a || !b)
        return a == b;
    if ((a->type & 0xff) != (b->type & 0xff))
        return false;
    if (cJSON_IsNumber(a)) {
        if (isnan(a->valuedouble))
            return isnan(b->valuedouble);
        return a->valuedouble == b->valuedouble;
    }
    if (cJSON_IsString(a) || cJSON_IsRaw(a))
        return a->valuestring && b->valuestring && !strcmp(a->valuestring, b->valuestring);
    if (cJSON_IsArray(a) || cJSON_IsObject(a)) {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next) {
            if (cJSON_IsObject(a) &&
                (!x->string || !y->string || strcmp(x->string, y->string) != 0))
                return false;
            if (!fuzz_json_equal(x, y))
                return false;
        }
        return !x && !y;
    }
    return true; /* null, true, false: the type says it all */
}

/* True when every number in the tree is finite (cJSON_Compare is only
 * meaningful then, see above). */
static inline bool fuzz_json_finite(const cJSON *n) {
    if (cJSON_IsNumber(n))
        return isfinite(n->valuedouble);
    for (const cJSON *c = n ? n->child : NULL; c; c = c->next)
        if (!fuzz_json_finite(c))
            return false;
    return true;
}

#endif
