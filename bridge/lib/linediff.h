/* linediff.h - a line diff of two texts, printed as a unified diff (the
 * format of `diff -u`): what `canary-bridge diff` shows.
 *
 * The lines that stay are a longest common subsequence of the two texts'
 * lines (after their common first and last lines are set aside), so the
 * diff is minimal. Past LINEDIFF_MAX_CELLS cells of the LCS table (two
 * texts of about 4,000 differing lines each) the middle is shown as all
 * deleted, then all added: still a correct diff, only not a minimal one. */
#ifndef CB_LINEDIFF_H
#define CB_LINEDIFF_H

#include "bridge/lib/buf.h"

#define LINEDIFF_MAX_CELLS (16u * 1024 * 1024)

/* Append to out the unified diff of text a against text b (NUL-terminated),
 * with headers "--- label_a" and "+++ label_b" and `context` lines of
 * context around each change, as `diff -U<context>` prints it (a hunk of no
 * lines on one side starts at the line before it; a last line without a
 * newline is followed by "\ No newline at end of file"). Appends nothing
 * when the texts are equal. Returns 1 when they differ, 0 when equal, -1
 * out of memory (out may then hold part of the diff). */
int linediff_unified(const char *a, const char *b, const char *label_a, const char *label_b,
                     unsigned context, buf_t *out);

#endif
