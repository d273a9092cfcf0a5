/* suggest.h - "did you mean": the edit distance of two short words, used by
 * the config parser for unknown keys and by the key cache for mistyped
 * leaves, so both hints follow one rule. */
#ifndef CB_SUGGEST_H
#define CB_SUGGEST_H

#include <stddef.h>

/* Longest word compared; a longer one is SIZE_MAX away from everything. */
#define SUGGEST_WORD_MAX 64

/* Levenshtein distance (insert, delete, substitute: 1 each) of a and b.
 * Pure; no allocation. */
size_t suggest_distance(const char *a, const char *b);

#endif
