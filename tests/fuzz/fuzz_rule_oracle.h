/* fuzz_rule_oracle.h - oracles for the text of Traefik rules, for fuzz_route.c.
 *
 * What Traefik's rule parser makes of a Go string literal (go_literal) and
 * whether a rule expression is self-contained (expression_closed); the
 * regex a cookie rule is rendered as (cookie_regex); and whether a header
 * regex stays clear of what costs glibc's regcomp, the model's checker,
 * excessive time and memory (regex_cost_ok). Rebuilt here from the rules
 * they follow, not from the code they check. */
#ifndef CB_FUZZ_RULE_ORACLE_H
#define CB_FUZZ_RULE_ORACLE_H

#include "fuzz_common.h"

#include "bridge/lib/buf.h"

/* ---- Go string literals, as Traefik's rule parser reads them ------------- */

static inline int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* n digits in base 8 or 16 at s, or -1 (one missing or not a digit). */
static inline long digits(const char *s, int n, int base) {
    long v = 0;
    for (int i = 0; i < n; i++) {
        int d = base == 16 ? hexval(s[i]) : s[i] >= '0' && s[i] <= '7' ? s[i] - '0' : -1;
        if (d < 0)
            return -1;
        v = v * base + d;
    }
    return v;
}

static inline void put_utf8(buf_t *out, long cp) {
    char u[4];
    size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const unsigned char lead[] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (size_t i = n - 1; i > 0; i--, cp >>= 6)
        u[i] = (char)(0x80 | (cp & 0x3F));
    u[0] = (char)(n == 1 ? cp : lead[n] | cp);
    if (buf_append(out, u, n) < 0)
        abort();
}

/* One literal at *p: `raw` (Go drops CR from raw strings) or "interpreted".
 * Appends the decoded bytes to out (may be NULL) and advances *p past it.
 * Returns false when it is not a complete, valid literal. Every escape Go
 * takes is taken (\ooo, \xhh, \uhhhh, \Uhhhhhhhh; code points are not
 * range-checked: the oracle may accept more than Go, never less). */
static inline bool go_literal(const char **p, buf_t *out) {
    const char *s = *p;
    if (*s == '`') {
        const char *end = strchr(s + 1, '`');
        if (!end)
            return false;
        for (const char *c = s + 1; c < end; c++)
            if (*c != '\r' && out && buf_putc(out, *c) < 0)
                abort();
        *p = end + 1;
        return true;
    }
    if (*s != '"')
        return false;
    for (s++; *s && *s != '"'; s++) {
        char c = *s;
        if (c == '\n')
            return false;
        if (c == '\\') {
            s++;
            switch (*s) {
            case '\\': c = '\\'; break;
            case '"': c = '"'; break;
            case 'a': c = '\a'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'v': c = '\v'; break;
            case 'x':
                if (hexval(s[1]) < 0 || hexval(s[2]) < 0)
                    return false;
                c = (char)(hexval(s[1]) * 16 + hexval(s[2]));
                s += 2;
                break;
            case 'u':
            case 'U': {
                int n = *s == 'u' ? 4 : 8;
                long cp = digits(s + 1, n, 16);
                if (cp < 0 || cp > 0x10FFFF)
                    return false;
                s += n;
                if (out)
                    put_utf8(out, cp);
                continue;
            }
            default:
                if (digits(s, 3, 8) < 0 || digits(s, 3, 8) > 255)
                    return false;
                c = (char)digits(s, 3, 8);
                s += 2;
                break;
            }
        }
        if (out && buf_putc(out, c) < 0)
            abort();
    }
    if (*s != '"')
        return false;
    *p = s + 1;
    return true;
}

/* A rule expression is self-contained: every literal closes and the
 * parentheses outside literals balance without going negative. */
static inline bool expression_closed(const char *s) {
    long depth = 0;
    while (*s) {
        if (*s == '`' || *s == '"') {
            if (!go_literal(&s, NULL))
                return false;
            continue;
        }
        if (*s == '(')
            depth++;
        else if (*s == ')' && --depth < 0)
            return false;
        s++;
    }
    return depth == 0;
}

static inline void put_regex_escaped(buf_t *b, const char *s) {
    for (; *s; s++)
        if ((strchr("\\.+*?()|[]{}^$", *s) && buf_putc(b, '\\') < 0) || buf_putc(b, *s) < 0)
            abort();
}

/* The regex cookie rules match the Cookie header with (traefik.c's
 * documented output, rebuilt here as the oracle). */
static inline void cookie_regex(buf_t *b, const char *name, const char *value) {
    if (buf_puts(b, "(^|;\\s*)") < 0)
        abort();
    put_regex_escaped(b, name);
    if (buf_putc(b, '=') < 0)
        abort();
    put_regex_escaped(b, value);
    if (buf_puts(b, "(;|$)") < 0)
        abort();
}

/* ---- regexes --------------------------------------------------------------- */

/* Digits at *p (at least one), capped so they cannot overflow. */
static inline bool read_count(const char **p, unsigned long *v) {
    if (**p < '0' || **p > '9')
        return false;
    for (*v = 0; **p >= '0' && **p <= '9'; ++*p)
        *v = *v > 100000 ? *v : *v * 10 + (unsigned long)(**p - '0');
    return true;
}

/* {n}, {n,} or {n,m} at s: returns the text after it (lo/hi set), or NULL
 * when s does not start one (then '{' is a literal, in RE2 as in POSIX). */
static const char *counted_repetition(const char *s, unsigned long *lo, unsigned long *hi) {
    const char *p = s + 1;
    if (*s != '{' || !read_count(&p, lo))
        return NULL;
    *hi = *lo;
    if (*p == ',') {
        p++;
        if (!read_count(&p, hi))
            *hi = 0; /* {n,}: no upper bound */
    }
    return *p == '}' ? p + 1 : NULL;
}

/* The model checks header regexes with glibc's regcomp, which expands
 * repetitions into copies of their operand: its time and memory grow with
 * the product of nested counts, and exponentially with repetition operators
 * applied to repetitions. A regex the model accepts must stay clear of both:
 * no repetition of a repetition ("a++", "a{2}*", "a*??"; Go's regexp, which
 * Traefik uses, refuses them too), no count over 1000 (Go's limit), and at
 * most REGEX_EXPANSION_MAX atoms once repetitions are expanded (glibc needs
 * some 200 MB for a million; ((x{255}){255}){255} is 3.4 GB and 14 s). */
#define REGEX_EXPANSION_MAX 1e6

struct rx_state {
    double *sum; /* per open group: size of its contents so far */
    size_t depth;
    double last; /* size of the last atom, what a repetition copies */
    bool quant, lazy;
};

static inline void rx_atom(struct rx_state *st, double size) {
    st->sum[st->depth] += size;
    st->last = size;
    st->quant = false;
}

/* A repetition of the last atom that makes `copies` copies of it. */
static inline bool rx_repeat(struct rx_state *st, double copies) {
    if (st->quant)
        return false;
    st->sum[st->depth] += st->last * (copies - 1);
    st->last *= copies;
    st->quant = true;
    st->lazy = false;
    return true;
}

static inline bool regex_cost_ok(const char *s) {
    struct rx_state st = {calloc(strlen(s) + 2, sizeof(double)), 0, 0, false, false};
    if (!st.sum)
        abort();
    bool ok = true;
    while (*s && ok) {
        unsigned long lo, hi;
        const char *after = counted_repetition(s, &lo, &hi);
        if (*s == '\\' && s[1]) {
            rx_atom(&st, 1);
            s += 2;
        } else if (*s == '[') {
            /* A class, read as glibc reads it (its reading is what costs):
             * ']' first (or after '^') is a member, a backslash is an
             * ordinary member, [:name:] [.x.] [=x=] may hold a ']'. */
            s += s[1] == '^' ? 2 : 1;
            s += *s == ']';
            while (*s && *s != ']') {
                const char *end = NULL;
                if (s[0] == '[' && s[1] && strchr(":.=", s[1])) {
                    char close[3] = {s[1], ']', '\0'};
                    end = strstr(s + 2, close);
                }
                s = end ? end + 2 : s + 1;
            }
            s += *s == ']';
            rx_atom(&st, 1);
        } else if (*s == '(') {
            const char *end = s[1] == '?' ? strpbrk(s + 2, ":)") : NULL;
            if (end && *end == ')') { /* (?flags): no group */
                s = end + 1;
                continue;
            }
            st.sum[++st.depth] = 0;
            st.quant = false;
            s = end ? end + 1 : s + 1;
        } else if (*s == ')' && st.depth > 0) {
            double inner = st.sum[st.depth--];
            rx_atom(&st, inner > 1 ? inner : 1);
            s++;
        } else if (*s == '?' && st.quant && !st.lazy) {
            st.lazy = true; /* x*? x+? x?? x{n}?: lazy, not another repetition */
            s++;
        } else if (*s == '*' || *s == '+' || *s == '?') {
            ok = rx_repeat(&st, 2);
            s++;
        } else if (after) {
            ok = lo <= 1000 && hi <= 1000 && rx_repeat(&st, (double)(hi > lo ? hi : lo + 1));
            s = after;
        } else {
            rx_atom(&st, 1);
            s++;
        }
        for (size_t d = 0; d <= st.depth && ok; d++)
            ok = st.sum[d] <= REGEX_EXPANSION_MAX;
    }
    free(st.sum);
    return ok;
}

#endif
