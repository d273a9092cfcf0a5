/* regex_check.c - may a header rule's regex go to Traefik? See
 * regex_check.h. Three steps: rewrite the RE2 spellings POSIX lacks, scan
 * the result for what would make regcomp expensive, then let regcomp judge
 * the syntax. */
#include "bridge/model/regex_check.h"

#include <limits.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- RE2 to POSIX ERE --------------------------------------------------- */

/* A leading RE2 flag group such as (?i) or (?is): POSIX has no inline
 * flags, so it is stripped and 'i' becomes REG_ICASE. */
static const char *regex_flags(const char *p, int *flags) {
    size_t nf = strncmp(p, "(?", 2) ? 0 : strspn(p + 2, "imsU");
    if (nf == 0 || p[2 + nf] != ')')
        return p;
    if (memchr(p + 2, 'i', nf))
        *flags |= REG_ICASE;
    return p + 3 + nf;
}

/* Length of an RE2 counted repetition at p ("{n}", "{n,}", "{n,m}"), or 0
 * when p does not start one: RE2 then reads the '{' as a literal. */
static size_t re2_interval(const char *p) {
    size_t i = 1, d = strspn(p + 1, "0123456789");
    if (*p != '{' || d == 0)
        return 0;
    i += d;
    if (p[i] == ',')
        i += 1 + strspn(p + i + 1, "0123456789");
    return p[i] == '}' ? i + 1 : 0;
}

/* One RE2 construct at p rewritten for POSIX ERE: returns how many input
 * bytes it used; the output is *rep, or (*rep NULL) the first *keep of them. */
static size_t regex_piece(const char *p, const char **rep, size_t *keep) {
    *rep = NULL;
    if (!strncmp(p, "(?:", 3)) {
        *rep = "(";
        return 3;
    }
    if (!strncmp(p, "\\d", 2) || !strncmp(p, "\\D", 2)) {
        *rep = p[1] == 'd' ? "[0-9]" : "[^0-9]";
        return 2;
    }
    size_t n = re2_interval(p);
    *keep = n ? n : p[0] == '\\' && p[1] ? 2 : 1;
    /* Lazy quantifier: same set of matching strings; drop the '?'. Only
     * after a quantifier: in "a}?" the '?' makes the literal '}' optional. */
    if ((n || (p[0] && strchr("*+?", p[0]))) && p[*keep] == '?')
        return *keep + 1;
    return *keep;
}

/* The regex rewritten so POSIX regcomp can check it; heap string or NULL. */
static char *regex_posix(const char *re, int *flags) {
    const char *p = regex_flags(re, flags);
    char *out = malloc(strlen(p) * 3 + 1); /* \d (2 bytes) becomes [0-9] (5) */
    if (!out)
        return NULL;
    size_t o = 0;
    while (*p) {
        const char *rep;
        size_t keep;
        size_t used = regex_piece(p, &rep, &keep);
        size_t n = rep ? strlen(rep) : keep;
        memcpy(out + o, rep ? rep : p, n);
        o += n;
        p += used;
    }
    out[o] = '\0';
    return out;
}

/* ---- cost --------------------------------------------------------------- */

/* glibc's regcomp expands every repetition into copies of its operand while
 * it parses, and then computes epsilon closures that grow with the square of
 * a run of optional parts. Its time and memory therefore follow the expanded
 * size, exponentially for repetitions of repetitions ("a" and 22 '+' took 9 s
 * and 2.9 GB; ((x{255}){255}){255} 14 s and 3.4 GB). Anyone who can write a
 * headers key chooses the regex, so the POSIX text is scanned before regcomp
 * sees it and refused, in the order glibc would pay for it, when:
 *  - a repetition applies to a repetition (a**, a+{2}, a{2}*): Go's regexp,
 *    which Traefik uses, refuses these too;
 *  - a count is over 1000 (RE2's and Go's limit), or nested counts multiply
 *    past 1000 ((a{100}){20}): Go's repeatIsValid refuses that as well;
 *  - the expanded size (every atom 1, a group its contents plus 2 for its
 *    open/close nodes, a repetition's operand copied as often as glibc can
 *    unroll it) passes REGEX_COST_MAX. Like RE2's bound on program size,
 *    this limits the work whatever the shape. Measured at the bound, the
 *    worst shapes (chains of empty or optional groups, (){1000}(){600})
 *    cost glibc about 40 MB and 50 ms; 10000 would allow some 400 MB.
 * The scan reads the text as glibc does (bracket expressions without
 * escapes, [:class:] inside them, "{,n}" as a repetition), since glibc's
 * reading is what costs. Syntax glibc refuses is left to regcomp: it stops
 * there, so only the part before it costs anything. */
#define REGEX_LEN_MAX 1024
#define REGEX_REPEAT_MAX 1000
#define REGEX_COST_MAX 5000

/* Past the bracket expression at s ('['), as glibc reads one; NULL when it
 * does not close (regcomp refuses it). */
static const char *rx_bracket_end(const char *s) {
    s++;
    s += *s == '^';
    s += *s == ']'; /* first, ']' is a member */
    for (; *s && *s != ']'; s++) {
        if (s[0] == '[' && s[1] && strchr(":.=", s[1])) {
            char close[3] = {s[1], ']', '\0'};
            const char *end = strstr(s + 2, close);
            if (!end)
                return NULL;
            s = end + 1;
        }
    }
    return *s ? s + 1 : NULL;
}

/* Digits at *p, capped so they cannot overflow; false when there are none. */
static bool rx_count(const char **p, unsigned long *v) {
    if (**p < '0' || **p > '9')
        return false;
    for (*v = 0; **p >= '0' && **p <= '9'; ++*p)
        *v = *v > 100000 ? *v : *v * 10 + (unsigned long)(**p - '0');
    return true;
}

/* An interval at s as glibc reads one in ERE: "{n}", "{n,}", "{n,m}",
 * "{,m}", "{,}". Returns the text after it, or NULL (glibc refuses a '{'
 * that starts none). *hi is ULONG_MAX when unbounded. */
static const char *rx_interval(const char *s, unsigned long *lo, unsigned long *hi) {
    const char *p = s + 1;
    bool first = rx_count(&p, lo);
    if (!first)
        *lo = 0;
    *hi = *lo;
    if (*p == ',') {
        p++;
        if (!rx_count(&p, hi))
            *hi = ULONG_MAX;
    } else if (!first) {
        return NULL;
    }
    return *p == '}' ? p + 1 : NULL;
}

struct rx_level {
    size_t cost;   /* expanded size of the group's contents so far */
    size_t nested; /* largest product of nested counts inside it */
};

struct rx_scan {
    struct rx_level *lv; /* lv[0]: the whole regex; lv[depth]: innermost open group */
    size_t depth;
    size_t last_cost, last_nested; /* the last atom: what a repetition copies */
    bool can_repeat;               /* there is an atom to repeat */
    bool repeated;                 /* the last thing was a repetition */
};

static void rx_atom(struct rx_scan *sc, size_t cost, size_t nested) {
    struct rx_level *l = &sc->lv[sc->depth];
    l->cost += cost;
    if (nested > l->nested)
        l->nested = nested;
    sc->last_cost = cost;
    sc->last_nested = nested;
    sc->can_repeat = true;
    sc->repeated = false;
}

/* A repetition making `copies` copies of the last atom; count is the Go
 * count (max, or min when unbounded) for {}, 1 for * + ?. NULL or why not. */
static const char *rx_repeat(struct rx_scan *sc, size_t copies, size_t count) {
    if (sc->repeated)
        return "has a nested repetition (a repetition of a repetition, like a** or a+{2}), "
               "which Go regexp refuses";
    if (!sc->can_repeat) { /* glibc refuses "*a", "(*", "a|*": no cost to add */
        rx_atom(sc, 1, 1);
        return NULL;
    }
    struct rx_level *l = &sc->lv[sc->depth];
    l->cost += sc->last_cost * (copies - 1);
    sc->last_cost *= copies;
    sc->last_nested *= count;
    if (sc->last_nested > REGEX_REPEAT_MAX)
        return "is too complex: nested repeat counts multiply to over 1000 (Go regexp's limit)";
    if (sc->last_nested > l->nested)
        l->nested = sc->last_nested;
    sc->repeated = true;
    return NULL;
}

/* One token of the POSIX text at *p; NULL or why the regex is refused. */
static const char *rx_token(struct rx_scan *sc, const char **p) {
    const char *s = *p;
    unsigned long lo, hi;
    const char *after;
    *p = s + 1;
    switch (*s) {
    case '\\':
        *p = s[1] ? s + 2 : s + 1;
        rx_atom(sc, 1, 1);
        return NULL;
    case '[':
        after = rx_bracket_end(s);
        *p = after ? after : s + strlen(s); /* unclosed: regcomp refuses it */
        rx_atom(sc, 1, 1);
        return NULL;
    case '(':
        sc->lv[++sc->depth] = (struct rx_level){0, 1};
        sc->can_repeat = sc->repeated = false;
        return NULL;
    case ')':
        if (sc->depth == 0) { /* glibc: an unmatched ')' is a literal */
            rx_atom(sc, 1, 1);
            return NULL;
        }
        sc->depth--;
        rx_atom(sc, (sc->lv[sc->depth + 1].cost ? sc->lv[sc->depth + 1].cost : 1) + 2,
                sc->lv[sc->depth + 1].nested);
        return NULL;
    case '|':
        sc->lv[sc->depth].cost++;
        sc->can_repeat = sc->repeated = false;
        return NULL;
    case '*':
    case '+':
    case '?': return rx_repeat(sc, 2, 1);
    case '{':
        if (!(after = rx_interval(s, &lo, &hi))) { /* regcomp refuses it */
            rx_atom(sc, 1, 1);
            return NULL;
        }
        *p = after;
        if (lo > REGEX_REPEAT_MAX || (hi != ULONG_MAX && hi > REGEX_REPEAT_MAX))
            return "has a repeat count over 1000 (Go regexp's limit)";
        /* glibc unrolls {n,m} into m copies, {n} and {n,} into n + 1. */
        return rx_repeat(sc, hi != ULONG_MAX && hi > lo ? hi : lo + 1, hi != ULONG_MAX ? hi : lo);
    default: rx_atom(sc, 1, 1); return NULL;
    }
}

/* 0 when regcomp may see the POSIX text re, else -1 and why not. */
static int regex_cost_check(const char *re, char *err, size_t errlen) {
    /* One level per '(' at most, plus the whole regex. */
    struct rx_scan sc = {.lv = calloc(strlen(re) + 1, sizeof *sc.lv)};
    const char *bad = NULL;
    if (!sc.lv) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sc.lv[0].nested = 1;
    bool big = false;
    for (const char *p = re; *p && !bad && !big;) {
        bad = rx_token(&sc, &p);
        big = sc.lv[sc.depth].cost > REGEX_COST_MAX;
    }
    free(sc.lv);
    if (bad)
        snprintf(err, errlen, "regex %s", bad);
    else if (big)
        snprintf(err, errlen,
                 "regex is too complex: it expands to over %d parts once its repetitions are "
                 "unrolled",
                 REGEX_COST_MAX);
    return bad || big ? -1 : 0;
}

/* ---- the check ---------------------------------------------------------- */

int regex_check(const char *re, char *err, size_t errlen) {
    size_t len = strlen(re);
    if (len > REGEX_LEN_MAX) {
        snprintf(err, errlen, "regex is too long (%zu bytes, the limit is %d)", len, REGEX_LEN_MAX);
        return -1;
    }
    for (const char *p = re; *p; p++) {
        if (p[0] == '\\' && p[1] >= '1' && p[1] <= '9') {
            snprintf(err, errlen, "regex uses a backreference, which Go regexp does not support");
            return -1;
        }
        if (p[0] == '\\' && p[1])
            p++;
    }
    int flags = REG_EXTENDED | REG_NOSUB;
    char *posix = regex_posix(re, &flags);
    if (!posix) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (regex_cost_check(posix, err, errlen) < 0) {
        free(posix);
        return -1;
    }
    regex_t rx;
    int rc = regcomp(&rx, posix, flags);
    free(posix);
    if (rc != 0) {
        char msg[128];
        regerror(rc, &rx, msg, sizeof msg);
        regfree(&rx); /* glibc keeps partial state after a failure */
        if (rc == REG_ESPACE) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        snprintf(err, errlen, "regex does not compile: %s", msg);
        return -1;
    }
    regfree(&rx);
    return 0;
}
