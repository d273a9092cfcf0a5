/* linediff.c - a line diff of two texts as a unified diff; see linediff.h.
 *
 * 1. Split both texts into lines (a hash per line makes comparing cheap).
 * 2. Set aside the first and last lines they share.
 * 3. Fill the LCS table of the rest from the end: L[i][j] is the length of
 *    a longest common subsequence of a[i..] and b[j..]. Walk it from the
 *    start: equal lines stay, otherwise take the step that keeps the longer
 *    subsequence, a deletion when both do (so deletions come before
 *    additions, as diff prints them).
 * 4. Group the edits into hunks: changes closer than 2 * context equal lines
 *    share a hunk. */
#include "bridge/lib/linediff.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct line {
    const char *s;
    size_t len; /* without the newline */
    uint32_t hash;
    bool nl; /* ends with a newline (false only for a last line) */
};

enum { OP_SAME, OP_DEL, OP_ADD };

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* The lines of t into *out (NULL when none); 0, or -1 out of memory. */
static int split_lines(const char *t, struct line **out, size_t *n) {
    size_t count = 0;
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        count++;
        p = nl ? nl + 1 : p + strlen(p);
    }
    *out = NULL;
    *n = 0;
    if (!count)
        return 0;
    struct line *l = calloc(count, sizeof *l);
    if (!l)
        return -1;
    size_t i = 0;
    for (const char *p = t; *p; i++) {
        const char *nl = strchr(p, '\n');
        l[i].s = p;
        l[i].len = nl ? (size_t)(nl - p) : strlen(p);
        l[i].nl = nl != NULL;
        l[i].hash = hash_bytes(p, l[i].len);
        p = nl ? nl + 1 : p + l[i].len;
    }
    *out = l;
    *n = count;
    return 0;
}

static bool same_line(const struct line *x, const struct line *y) {
    return x->hash == y->hash && x->len == y->len && x->nl == y->nl &&
           memcmp(x->s, y->s, x->len) == 0;
}

/* The middle a[0..na) against b[0..nb): edits appended at ops[*k]. */
static int diff_middle(const struct line *a, size_t na, const struct line *b, size_t nb,
                       unsigned char *ops, size_t *k) {
    size_t w = nb + 1;
    if (na + 1 > LINEDIFF_MAX_CELLS / w) {
        /* Too big to be minimal: all of one, then all of the other. */
        memset(ops + *k, OP_DEL, na);
        memset(ops + *k + na, OP_ADD, nb);
        *k += na + nb;
        return 0;
    }
    uint32_t *L = calloc((na + 1) * w, sizeof *L);
    if (!L)
        return -1;
    for (size_t i = na; i-- > 0;)
        for (size_t j = nb; j-- > 0;) {
            uint32_t down = L[(i + 1) * w + j], right = L[i * w + j + 1];
            L[i * w + j] = same_line(&a[i], &b[j]) ? L[(i + 1) * w + j + 1] + 1
                           : down >= right         ? down
                                                   : right;
        }
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        if (i < na && j < nb && same_line(&a[i], &b[j])) {
            ops[(*k)++] = OP_SAME;
            i++;
            j++;
        } else if (i < na && (j == nb || L[(i + 1) * w + j] >= L[i * w + j + 1])) {
            ops[(*k)++] = OP_DEL;
            i++;
        } else {
            ops[(*k)++] = OP_ADD;
            j++;
        }
    }
    free(L);
    return 0;
}

/* "-start,len" as diff -u writes it: the line before an empty range, no
 * ",1" for a single line. */
static int put_range(buf_t *out, char sign, size_t start, size_t len) {
    if (len == 0)
        return buf_printf(out, "%c%zu,0", sign, start);
    if (len == 1)
        return buf_printf(out, "%c%zu", sign, start + 1);
    return buf_printf(out, "%c%zu,%zu", sign, start + 1, len);
}

static int put_line(buf_t *out, char sign, const struct line *l) {
    if (buf_putc(out, sign) < 0 || buf_append(out, l->s, l->len) < 0)
        return -1;
    return buf_puts(out, l->nl ? "\n" : "\n\\ No newline at end of file\n");
}

/* Print the hunk of ops[from..to); ai/bi are the line numbers before from. */
static int put_hunk(buf_t *out, const unsigned char *ops, size_t from, size_t to,
                    const struct line *a, size_t ai, const struct line *b, size_t bi) {
    size_t alen = 0, blen = 0;
    for (size_t k = from; k < to; k++) {
        alen += ops[k] != OP_ADD;
        blen += ops[k] != OP_DEL;
    }
    if (buf_puts(out, "@@ ") < 0 || put_range(out, '-', ai, alen) < 0 || buf_putc(out, ' ') < 0 ||
        put_range(out, '+', bi, blen) < 0 || buf_puts(out, " @@\n") < 0)
        return -1;
    for (size_t k = from; k < to; k++) {
        int rc = ops[k] == OP_SAME  ? put_line(out, ' ', &a[ai])
                 : ops[k] == OP_DEL ? put_line(out, '-', &a[ai])
                                    : put_line(out, '+', &b[bi]);
        if (rc < 0)
            return -1;
        ai += ops[k] != OP_ADD;
        bi += ops[k] != OP_DEL;
    }
    return 0;
}

static int put_hunks(buf_t *out, const unsigned char *ops, size_t nops, const struct line *a,
                     const struct line *b, unsigned context) {
    size_t ai = 0, bi = 0, k = 0; /* line numbers before ops[k] */
    while (k < nops) {
        size_t first = k;
        while (first < nops && ops[first] == OP_SAME)
            first++;
        if (first == nops)
            return 0;
        size_t from = first > k + context ? first - context : k;
        /* Extend over changes separated by at most 2 * context equal lines. */
        size_t last = first, scan = first;
        for (;;) {
            while (scan < nops && ops[scan] != OP_SAME)
                last = scan++;
            size_t same = scan;
            while (same < nops && ops[same] == OP_SAME)
                same++;
            if (same == nops || same - scan > 2 * (size_t)context)
                break;
            scan = same;
        }
        size_t to = last + 1 + context < nops ? last + 1 + context : nops;
        for (; k < from; k++) {
            ai++;
            bi++;
        }
        if (put_hunk(out, ops, from, to, a, ai, b, bi) < 0)
            return -1;
        for (; k < to; k++) {
            ai += ops[k] != OP_ADD;
            bi += ops[k] != OP_DEL;
        }
    }
    return 0;
}

int linediff_unified(const char *a, const char *b, const char *label_a, const char *label_b,
                     unsigned context, buf_t *out) {
    struct line *la = NULL, *lb = NULL;
    size_t na = 0, nb = 0;
    unsigned char *ops = NULL;
    int ret = -1;
    if (split_lines(a, &la, &na) < 0 || split_lines(b, &lb, &nb) < 0)
        goto done;
    size_t pre = 0, post = 0;
    while (pre < na && pre < nb && same_line(&la[pre], &lb[pre]))
        pre++;
    while (post < na - pre && post < nb - pre && same_line(&la[na - 1 - post], &lb[nb - 1 - post]))
        post++;
    if (pre == na && pre == nb) {
        ret = 0;
        goto done;
    }
    ops = malloc(na + nb);
    if (!ops)
        goto done;
    size_t k = pre;
    memset(ops, OP_SAME, pre);
    if (diff_middle(la + pre, na - pre - post, lb + pre, nb - pre - post, ops, &k) < 0)
        goto done;
    memset(ops + k, OP_SAME, post);
    k += post;
    if (buf_printf(out, "--- %s\n+++ %s\n", label_a, label_b) < 0 ||
        put_hunks(out, ops, k, la, lb, context) < 0)
        goto done;
    ret = 1;
done:
    free(la);
    free(lb);
    free(ops);
    return ret;
}
