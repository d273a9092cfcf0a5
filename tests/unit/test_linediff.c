/* test_linediff.c - the unified line diff: exact output for the shapes
 * `diff -u` prints (the expected texts are what GNU diff prints for the same
 * inputs), and for random texts that applying the diff to the old text gives
 * the new one, with as few changed lines as a longest common subsequence
 * allows (and, past the table's limit, still a correct diff). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/linediff.h"

static char *diff_of(const char *a, const char *b, unsigned context, int want_rc) {
    buf_t out = BUF_INIT;
    assert_int_equal(linediff_unified(a, b, "L", "R", context, &out), want_rc);
    char *s = strdup(out.data ? out.data : "");
    buf_free(&out);
    return s;
}

static void expect_diff(const char *a, const char *b, unsigned context, const char *want) {
    char *got = diff_of(a, b, context, want[0] ? 1 : 0);
    assert_string_equal(got, want);
    free(got);
}

static void test_equal_texts_print_nothing(void **state) {
    (void)state;
    expect_diff("", "", 3, "");
    expect_diff("a\nb\n", "a\nb\n", 3, "");
    expect_diff("a\nb", "a\nb", 0, "");
}

static void test_one_change_with_context(void **state) {
    (void)state;
    expect_diff("a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n", "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\n", 3,
                "--- L\n+++ R\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n");
}

static void test_empty_sides_start_at_the_line_before(void **state) {
    (void)state;
    expect_diff("", "x\ny\n", 3, "--- L\n+++ R\n@@ -0,0 +1,2 @@\n+x\n+y\n");
    expect_diff("x\ny\n", "", 3, "--- L\n+++ R\n@@ -1,2 +0,0 @@\n-x\n-y\n");
    /* A single line has no ",1"; an insertion after line 1 starts at 1. */
    expect_diff("a\nb\n", "a\nnew\nb\n", 0, "--- L\n+++ R\n@@ -1,0 +2 @@\n+new\n");
}

static const char *NUMBERS = "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\n16\n";

static void test_far_changes_get_two_hunks_near_ones_one(void **state) {
    (void)state;
    expect_diff(NUMBERS, "1\ntwo\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\nfifteen\n16\n", 3,
                "--- L\n+++ R\n@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n"
                "@@ -12,5 +12,5 @@\n 12\n 13\n 14\n-15\n+fifteen\n 16\n");
    /* Six equal lines between two changes: at most 2 * 3, so one hunk. */
    expect_diff(NUMBERS, "1\ntwo\n3\n4\n5\n6\n7\n8\nnine\n10\n11\n12\n13\n14\n15\n16\n", 3,
                "--- L\n+++ R\n@@ -1,12 +1,12 @@\n 1\n-2\n+two\n 3\n 4\n 5\n 6\n 7\n 8\n"
                "-9\n+nine\n 10\n 11\n 12\n");
}

static void test_last_line_without_newline(void **state) {
    (void)state;
    expect_diff("a\nb", "a\nc", 3,
                "--- L\n+++ R\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n"
                "\\ No newline at end of file\n");
    expect_diff("a\nb", "a\nb\n", 3,
                "--- L\n+++ R\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n");
}

static void test_deletions_come_before_additions(void **state) {
    (void)state;
    expect_diff("k\nx\ny\nk\n", "k\np\nq\nk\n", 1,
                "--- L\n+++ R\n@@ -1,4 +1,4 @@\n k\n-x\n-y\n+p\n+q\n k\n");
}

/* ---- random texts: apply the diff, count its lines ---- */

struct lines {
    char **l;
    size_t n;
};

static struct lines split(const char *t) {
    struct lines r = {calloc(strlen(t) + 1, sizeof(char *)), 0};
    assert_non_null(r.l);
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
        r.l[r.n] = strndup(p, len);
        assert_non_null(r.l[r.n++]);
        p += len;
    }
    return r;
}

static void lines_free(struct lines *r) {
    for (size_t i = 0; i < r->n; i++)
        free(r->l[i]);
    free(r->l);
}

/* Apply a unified diff of full texts to a: the text it makes. Every context
 * and deleted line must match a where the hunk says. */
static char *apply(const char *a, const char *diff, size_t *deleted) {
    struct lines la = split(a);
    buf_t out = BUF_INIT;
    size_t ai = 0; /* lines of a consumed */
    const char *p = strstr(diff, "\n@@ ");
    *deleted = 0;
    while (p) {
        p++;
        unsigned long start, len = 1;
        const char *minus = p + 4;
        assert_int_equal(sscanf(minus, "%lu", &start), 1);
        const char *comma = strchr(minus, ',');
        if (comma && comma < strchr(minus, ' '))
            len = strtoul(comma + 1, NULL, 10);
        size_t first = len ? start - 1 : start; /* an empty range names the line before */
        for (; ai < first; ai++)
            assert_int_equal(buf_puts(&out, la.l[ai]), 0);
        p = strchr(p, '\n') + 1;
        while (*p == ' ' || *p == '-' || *p == '+') {
            const char *nl = strchr(p, '\n');
            size_t n = (size_t)(nl - p);
            bool no_nl = strncmp(nl + 1, "\\ No newline", 12) == 0;
            char *text = strndup(p + 1, n - 1 + !no_nl);
            if (*p != '+') {
                assert_true(ai < la.n);
                assert_string_equal(la.l[ai++], text);
                *deleted += *p == '-';
            }
            if (*p != '-')
                assert_int_equal(buf_puts(&out, text), 0);
            free(text);
            p = nl + 1;
            if (no_nl)
                p = strchr(p, '\n') + 1;
        }
        p = *p == '@' ? p - 1 : NULL;
    }
    for (; ai < la.n; ai++)
        assert_int_equal(buf_puts(&out, la.l[ai]), 0);
    lines_free(&la);
    char *s = strdup(out.data ? out.data : "");
    buf_free(&out);
    return s;
}

static size_t lcs_length(const struct lines *a, const struct lines *b) {
    size_t w = b->n + 1, *t = calloc((a->n + 1) * w, sizeof *t);
    assert_non_null(t);
    for (size_t i = 1; i <= a->n; i++)
        for (size_t j = 1; j <= b->n; j++)
            t[i * w + j] = strcmp(a->l[i - 1], b->l[j - 1]) == 0   ? t[(i - 1) * w + j - 1] + 1
                           : t[(i - 1) * w + j] > t[i * w + j - 1] ? t[(i - 1) * w + j]
                                                                   : t[i * w + j - 1];
    size_t r = t[a->n * w + b->n];
    free(t);
    return r;
}

static char *random_text(unsigned *seed, size_t max_lines) {
    static const char *words[] = {"a", "b", "c", "d", "weight: 90", "weight: 10", "name: shop"};
    buf_t b = BUF_INIT;
    size_t n = (size_t)rand_r(seed) % (max_lines + 1);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(buf_printf(&b, "%s\n", words[rand_r(seed) % 7]), 0);
    if (n && rand_r(seed) % 5 == 0)
        b.data[--b.len] = '\0'; /* no newline at the end */
    char *s = strdup(b.data ? b.data : "");
    buf_free(&b);
    return s;
}

static void test_random_texts_apply_and_are_minimal(void **state) {
    (void)state;
    unsigned seed = 14;
    for (int round = 0; round < 2000; round++) {
        char *a = random_text(&seed, 12), *b = random_text(&seed, 12);
        unsigned context = (unsigned)rand_r(&seed) % 4;
        char *d = diff_of(a, b, context, strcmp(a, b) != 0);
        size_t deleted;
        char *got = apply(a, d, &deleted);
        assert_string_equal(got, b);
        struct lines la = split(a), lb = split(b);
        assert_int_equal(deleted, la.n - lcs_length(&la, &lb));
        lines_free(&la);
        lines_free(&lb);
        free(a);
        free(b);
        free(d);
        free(got);
    }
}

static void test_past_the_table_limit_still_correct(void **state) {
    (void)state;
    /* 5,000 x 5,000 differing lines: over LINEDIFF_MAX_CELLS. */
    buf_t a = BUF_INIT, b = BUF_INIT;
    assert_int_equal(buf_puts(&a, "head\n"), 0);
    assert_int_equal(buf_puts(&b, "head\n"), 0);
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(buf_printf(&a, "old %d\n", i), 0);
        assert_int_equal(buf_printf(&b, "new %d\n", i), 0);
    }
    assert_int_equal(buf_puts(&a, "tail\n"), 0);
    assert_int_equal(buf_puts(&b, "tail\n"), 0);
    char *d = diff_of(a.data, b.data, 3, 1);
    assert_non_null(strstr(d, "@@ -1,5002 +1,5002 @@\n head\n-old 0\n"));
    size_t deleted;
    char *got = apply(a.data, d, &deleted);
    assert_string_equal(got, b.data);
    assert_int_equal(deleted, 5000);
    free(d);
    free(got);
    buf_free(&a);
    buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_texts_print_nothing),
        cmocka_unit_test(test_one_change_with_context),
        cmocka_unit_test(test_empty_sides_start_at_the_line_before),
        cmocka_unit_test(test_far_changes_get_two_hunks_near_ones_one),
        cmocka_unit_test(test_last_line_without_newline),
        cmocka_unit_test(test_deletions_come_before_additions),
        cmocka_unit_test(test_random_texts_apply_and_are_minimal),
        cmocka_unit_test(test_past_the_table_limit_still_correct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
