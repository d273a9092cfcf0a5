/* value.c - parse a key's text (YAML or JSON) into cJSON, and emit cJSON as
 * block YAML; see value.h.
 *
 * Parsing walks libyaml's event stream and builds the cJSON tree directly,
 * so every guard (size, NUL bytes, anchors, tags, depth, duplicate keys,
 * document count) is checked before the node it concerns is built. Values
 * come from anyone who can write the key, so nothing here trusts the input.
 *
 * Integer vs. float: cJSON stores every number as a double, which loses the
 * difference between `10` and `10.0`, and between large integers. Number
 * nodes built from YAML therefore keep their source text in `valuestring`
 * (cJSON frees and duplicates it like any other string). value_get_int() and
 * the emitter trust that text only while it still denotes the node's
 * valuedouble, so a number later changed with cJSON_SetNumberValue, or one
 * built by cJSON_Parse or cJSON_CreateNumber, falls back to its double.
 *
 * A known limitation: YAML caps implicit keys at 1024 characters and libyaml
 * enforces it, so a key over 1024 characters in JSON ({"...": 1}) or as a
 * YAML "key: value" is refused ("mapping values are not allowed..."). JSON
 * has no other way to write a key, so such JSON cannot be read; in YAML the
 * explicit form "? key" / ": value" works, and is what the emitter writes
 * for long keys (emit_key). No key the bridge uses comes near the limit. */
#include "bridge/lib/value.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define TAG_STR "tag:yaml.org,2002:str"
#define TAG_MAP "tag:yaml.org,2002:map"
#define TAG_SEQ "tag:yaml.org,2002:seq"

/* ---- number literals (YAML 1.2 core schema) ---------------------------- */

struct number_lit {
    double d;
    bool is_int; /* written as an integer literal */
    bool ll_ok;  /* is_int and it fits in long long */
    long long ll;
};

static bool all_in(const char *s, const char *set) {
    if (!*s)
        return false;
    for (; *s; s++)
        if (!strchr(set, *s))
            return false;
    return true;
}

/* [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+ */
static bool int_lit_parse(const char *s, struct number_lit *n) {
    int base = 10;
    const char *digits = s;
    if (s[0] == '0' && (s[1] == 'o' || s[1] == 'x')) {
        base = s[1] == 'o' ? 8 : 16;
        digits = s + 2;
        if (!all_in(digits, base == 8 ? "01234567" : "0123456789abcdefABCDEF"))
            return false;
    } else {
        const char *p = (*s == '-' || *s == '+') ? s + 1 : s;
        if (!all_in(p, "0123456789"))
            return false;
    }
    n->is_int = true;
    errno = 0;
    if (base == 10) {
        n->ll = strtoll(s, NULL, 10);
        n->ll_ok = errno == 0;
        n->d = n->ll_ok ? (double)n->ll : strtod(s, NULL);
    } else {
        unsigned long long u = strtoull(digits, NULL, base);
        n->ll_ok = errno == 0 && u <= (unsigned long long)LLONG_MAX;
        n->ll = n->ll_ok ? (long long)u : 0;
        n->d = (double)u;
    }
    return true;
}

static size_t span_digits(const char *s) {
    size_t i = 0;
    while (s[i] >= '0' && s[i] <= '9')
        i++;
    return i;
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool float_lit_match(const char *s) {
    const char *p = (*s == '-' || *s == '+') ? s + 1 : s;
    size_t whole = span_digits(p);
    p += whole;
    size_t frac = 0;
    if (*p == '.') {
        p++;
        frac = span_digits(p);
        p += frac;
    }
    if (whole == 0 && frac == 0)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        size_t exp = span_digits(p);
        if (exp == 0)
            return false;
        p += exp;
    }
    return *p == '\0';
}

static bool special_float(const char *s, double *d) {
    const char *p = (*s == '-' || *s == '+') ? s + 1 : s;
    if (!strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF")) {
        *d = *s == '-' ? -INFINITY : INFINITY;
        return true;
    }
    if (p == s && (!strcmp(s, ".nan") || !strcmp(s, ".NaN") || !strcmp(s, ".NAN"))) {
        *d = NAN;
        return true;
    }
    return false;
}

/* True when s is a core-schema number literal; fills *n. */
static bool number_lit_parse(const char *s, struct number_lit *n) {
    memset(n, 0, sizeof *n);
    if (int_lit_parse(s, n))
        return true;
    if (float_lit_match(s)) {
        n->d = strtod(s, NULL);
        return true;
    }
    return special_float(s, &n->d);
}

/* The source text still describes this node's value (see top comment). */
static bool number_text_valid(const cJSON *item, struct number_lit *n) {
    if (!item->valuestring || !number_lit_parse(item->valuestring, n))
        return false;
    if (isnan(n->d))
        return isnan(item->valuedouble);
    return n->d == item->valuedouble;
}

bool value_get_int(const cJSON *n, long long min, long long max, long long *out) {
    if (!cJSON_IsNumber(n))
        return false;
    struct number_lit lit;
    long long v;
    if (number_text_valid(n, &lit)) {
        if (!lit.is_int || !lit.ll_ok)
            return false;
        v = lit.ll;
    } else {
        double d = n->valuedouble;
        /* 9223372036854775808.0 is the first double past LLONG_MAX. */
        if (!isfinite(d) || d != trunc(d) || d < -9223372036854775808.0 ||
            d >= 9223372036854775808.0)
            return false;
        v = (long long)d;
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* ---- parsing ------------------------------------------------------------ */

struct frame {
    cJSON *node; /* object or array, owned by the tree */
    char *key;   /* mapping only: key waiting for its value */
};

struct loader {
    const char *text;
    size_t len;
    yaml_parser_t parser;
    struct frame stack[VALUE_MAX_DEPTH];
    int depth;
    cJSON *root;
    int docs;
    bool root_empty; /* a bare "---": an empty plain scalar, same as no text */
    char *err;
    size_t errlen;
};

static void fail(struct loader *ld, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct loader *ld, size_t line, const char *fmt, ...) {
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(ld->err, ld->errlen, "line %zu: %s", line, why);
}

/* Reader errors carry a byte offset, not a mark; count lines ourselves. */
static size_t line_at(const struct loader *ld, size_t offset) {
    size_t line = 1;
    for (size_t i = 0; i < offset && i < ld->len; i++)
        if (ld->text[i] == '\n')
            line++;
    return line;
}

static void fail_libyaml(struct loader *ld) {
    const yaml_parser_t *p = &ld->parser;
    size_t line =
        p->error == YAML_READER_ERROR ? line_at(ld, p->problem_offset) : p->problem_mark.line + 1;
    if (p->error == YAML_MEMORY_ERROR)
        snprintf(ld->err, ld->errlen, "out of memory");
    else
        fail(ld, line, "%s", p->problem ? p->problem : "malformed YAML");
}

static bool is_null_text(const char *s) {
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static cJSON *number_node(const char *text, double d) {
    cJSON *n = cJSON_CreateNumber(d);
    if (!n)
        return NULL;
    n->valuestring = strdup(text);
    if (!n->valuestring) {
        cJSON_Delete(n);
        return NULL;
    }
    return n;
}

/* Plain scalars resolve per the YAML 1.2 core schema. */
static cJSON *plain_resolve(const char *s) {
    if (is_null_text(s))
        return cJSON_CreateNull();
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return cJSON_CreateTrue();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return cJSON_CreateFalse();
    struct number_lit lit;
    if (number_lit_parse(s, &lit))
        return number_node(s, lit.d);
    return cJSON_CreateString(s);
}

static bool anchored(const yaml_event_t *e) {
    switch (e->type) {
    case YAML_SCALAR_EVENT: return e->data.scalar.anchor != NULL;
    case YAML_MAPPING_START_EVENT: return e->data.mapping_start.anchor != NULL;
    case YAML_SEQUENCE_START_EVENT: return e->data.sequence_start.anchor != NULL;
    default: return false;
    }
}

/* Only the standard tags that cannot change a value's meaning are taken;
 * anything else (custom tags, !!binary, !!set, ...) is refused. */
static bool tag_allowed(const yaml_char_t *tag, const char *plain_ok) {
    if (!tag)
        return true;
    const char *t = (const char *)tag;
    return !strcmp(t, plain_ok) || !strcmp(t, "!");
}

static struct frame *top(struct loader *ld) {
    return ld->depth ? &ld->stack[ld->depth - 1] : NULL;
}

static bool expecting_key(struct loader *ld) {
    struct frame *f = top(ld);
    return f && cJSON_IsObject(f->node) && !f->key;
}

/* Attach a finished node to its parent (or make it the root). Takes node. */
static int attach(struct loader *ld, cJSON *node) {
    struct frame *f = top(ld);
    if (!node) {
        snprintf(ld->err, ld->errlen, "out of memory");
        return -1;
    }
    if (!f) {
        ld->root = node;
        return 0;
    }
    bool ok = cJSON_IsArray(f->node) ? cJSON_AddItemToArray(f->node, node)
                                     : cJSON_AddItemToObject(f->node, f->key, node);
    free(f->key);
    f->key = NULL;
    if (!ok) {
        cJSON_Delete(node);
        snprintf(ld->err, ld->errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int take_key(struct loader *ld, const char *s, size_t line) {
    struct frame *f = top(ld);
    if (cJSON_GetObjectItemCaseSensitive(f->node, s)) {
        fail(ld, line, "duplicate key '%.80s'", s);
        return -1;
    }
    f->key = strdup(s);
    if (!f->key) {
        snprintf(ld->err, ld->errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int on_scalar(struct loader *ld, const yaml_event_t *e, size_t line) {
    const char *s = (const char *)e->data.scalar.value;
    if (memchr(s, '\0', e->data.scalar.length)) {
        fail(ld, line, "NUL character in a string");
        return -1;
    }
    if (!tag_allowed(e->data.scalar.tag, TAG_STR)) {
        fail(ld, line, "tag '%.60s' is not allowed", (const char *)e->data.scalar.tag);
        return -1;
    }
    bool plain = e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !e->data.scalar.tag;
    if (expecting_key(ld)) {
        if (plain && !*s) {
            fail(ld, line, "empty mapping key");
            return -1;
        }
        return take_key(ld, s, line);
    }
    if (!ld->depth && plain && !*s)
        ld->root_empty = true;
    return attach(ld, plain ? plain_resolve(s) : cJSON_CreateString(s));
}

static int on_collection_start(struct loader *ld, const yaml_event_t *e, size_t line) {
    bool map = e->type == YAML_MAPPING_START_EVENT;
    const yaml_char_t *tag = map ? e->data.mapping_start.tag : e->data.sequence_start.tag;
    if (!tag_allowed(tag, map ? TAG_MAP : TAG_SEQ)) {
        fail(ld, line, "tag '%.60s' is not allowed", (const char *)tag);
        return -1;
    }
    if (expecting_key(ld)) {
        fail(ld, line, "mapping keys must be strings");
        return -1;
    }
    if (ld->depth >= VALUE_MAX_DEPTH) {
        snprintf(ld->err, ld->errlen, "line %zu: nesting deeper than %d levels", line,
                 VALUE_MAX_DEPTH);
        return -1;
    }
    cJSON *node = map ? cJSON_CreateObject() : cJSON_CreateArray();
    if (attach(ld, node) < 0)
        return -1;
    ld->stack[ld->depth++] = (struct frame){node, NULL};
    return 0;
}

/* What one event means for the loading loop. */
enum event_step { EVENT_ERROR = -1, EVENT_MORE = 0, EVENT_END = 1 };

static enum event_step on_event(struct loader *ld, const yaml_event_t *e) {
    size_t line = e->start_mark.line + 1;
    if (e->type == YAML_ALIAS_EVENT || anchored(e)) {
        fail(ld, line, "aliases and anchors are not allowed");
        return EVENT_ERROR;
    }
    switch (e->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++ld->docs > 1) {
            fail(ld, line, "only one document is allowed");
            return EVENT_ERROR;
        }
        return EVENT_MORE;
    case YAML_SCALAR_EVENT: return on_scalar(ld, e, line) < 0 ? EVENT_ERROR : EVENT_MORE;
    case YAML_MAPPING_START_EVENT:
    case YAML_SEQUENCE_START_EVENT:
        return on_collection_start(ld, e, line) < 0 ? EVENT_ERROR : EVENT_MORE;
    case YAML_MAPPING_END_EVENT:
    case YAML_SEQUENCE_END_EVENT: ld->depth--; return EVENT_MORE;
    case YAML_STREAM_END_EVENT: return EVENT_END;
    default: return EVENT_MORE;
    }
}

static int load_events(struct loader *ld) {
    for (;;) {
        yaml_event_t e;
        if (!yaml_parser_parse(&ld->parser, &e)) {
            fail_libyaml(ld);
            return -1;
        }
        enum event_step step = on_event(ld, &e);
        yaml_event_delete(&e);
        if (step != EVENT_MORE)
            return step == EVENT_ERROR ? -1 : 0;
    }
}

/* Cheap guards that need no parser: size first, so a huge value costs
 * nothing; NUL bytes, which libyaml would silently take as end of input. */
static int precheck(const char *text, size_t len, char *err, size_t errlen) {
    if (len > VALUE_MAX_BYTES) {
        snprintf(err, errlen, "value is %zu bytes, over the limit of %d", len, VALUE_MAX_BYTES);
        return -1;
    }
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        size_t line = 1;
        for (const char *p = text; p < nul; p++)
            line += *p == '\n';
        snprintf(err, errlen, "line %zu: NUL byte in value", line);
        return -1;
    }
    return 0;
}

static bool all_space(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (!strchr(" \t\r\n", s[i]))
            return false;
    return true;
}

size_t value_bom_len(const char *text, size_t len) {
    return text && len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
}

cJSON *value_parse(const char *text, size_t len, char *err, size_t errlen) {
    if (errlen)
        err[0] = '\0';
    if (!text)
        len = 0;
    /* With the encoding set, libyaml keeps a leading BOM and counts it as a
     * column, so a block mapping's first key sits one column right of the
     * rest ("did not find expected <document start>"). It carries nothing. */
    size_t bom = value_bom_len(text, len);
    if (bom) {
        text += bom;
        len -= bom;
    }
    if (len && precheck(text, len, err, errlen) < 0)
        return NULL;
    if (all_space(text, len)) {
        /* libyaml refuses a tab-indented blank line; blank is simply empty. */
        snprintf(err, errlen, "empty value");
        return NULL;
    }
    struct loader ld = {.text = text, .len = len, .err = err, .errlen = errlen};
    if (!yaml_parser_initialize(&ld.parser)) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&ld.parser, (const unsigned char *)(text ? text : ""), len);
    yaml_parser_set_encoding(&ld.parser, YAML_UTF8_ENCODING);
    int rc = load_events(&ld);
    for (int i = 0; i < ld.depth; i++)
        free(ld.stack[i].key);
    yaml_parser_delete(&ld.parser);
    if (rc < 0) {
        cJSON_Delete(ld.root);
        return NULL;
    }
    if (!ld.root || ld.root_empty) {
        cJSON_Delete(ld.root);
        snprintf(err, errlen, "empty value");
        return NULL;
    }
    return ld.root;
}

/* ---- emitting ----------------------------------------------------------- */

static bool yaml11_special(const char *s) {
    static const char *const words[] = {"y",   "Y",   "yes", "Yes", "YES", "n",  "N",
                                        "no",  "No",  "NO",  "on",  "On",  "ON", "off",
                                        "Off", "OFF", "<<",  "=",   NULL};
    for (size_t i = 0; words[i]; i++)
        if (!strcmp(s, words[i]))
            return true;
    /* YAML 1.1 also reads 0b101, 1_000, 010 and 1:20 as numbers: quote
     * anything number-shaped so no reader takes it for one. */
    return ((*s >= '0' && *s <= '9') || *s == '+' || *s == '-' || *s == '.') &&
           all_in(s, "0123456789abcdefABCDEFxXoO+-._:");
}

/* Unicode characters YAML treats as line breaks or that readers strip. */
static size_t special_unicode(const unsigned char *p) {
    if (p[0] == 0xC2 && p[1] == 0x85)
        return 2; /* NEL */
    if (p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9))
        return 3; /* LS, PS */
    if (p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        return 3; /* BOM */
    return 0;
}

/* Characters outside YAML's printable set that may appear in valid UTF-8
 * (the parser refuses anything else): C1 controls U+0080-U+009F but NEL,
 * and the noncharacters U+FFFE and U+FFFF. Written raw they make the text
 * unreadable as YAML; double-quoted escapes carry them. Returns the UTF-8
 * length, or 0. */
static size_t nonprintable_unicode(const unsigned char *p) {
    if (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F && p[1] != 0x85)
        return 2;
    if (p[0] == 0xEF && p[1] == 0xBF && (p[2] == 0xBE || p[2] == 0xBF))
        return 3;
    return 0;
}

static bool has_unsafe_char(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || special_unicode(p) || nonprintable_unicode(p))
            return true;
    return false;
}

static bool str_needs_quotes(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || strchr("-?:,[]{}#&*!|>'\"%@` ", s[0]) || s[n - 1] == ' ' || s[n - 1] == ':')
        return true;
    if (!strncmp(s, "...", 3) || strstr(s, ": ") || strstr(s, " #") || has_unsafe_char(s))
        return true;
    struct number_lit lit;
    if (is_null_text(s) || !strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE") ||
        !strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE") ||
        number_lit_parse(s, &lit))
        return true;
    return yaml11_special(s);
}

static int emit_quoted(buf_t *out, const char *s) {
    if (buf_putc(out, '"') < 0)
        return -1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        size_t u = special_unicode(p), np = nonprintable_unicode(p);
        int rc;
        if (u) {
            rc = buf_puts(out, p[0] == 0xC2   ? "\\N"
                               : p[0] == 0xEF ? "\\uFEFF"
                               : p[2] == 0xA8 ? "\\L"
                                              : "\\P");
            p += u - 1;
        } else if (np) {
            /* YAML's \x and \u name code points: U+0080-U+009F is C2 80-9F. */
            rc = np == 2 ? buf_printf(out, "\\x%02x", p[1])
                         : buf_printf(out, "\\u%s", p[2] == 0xBE ? "FFFE" : "FFFF");
            p += np - 1;
        } else if (*p == '"' || *p == '\\') {
            rc = buf_printf(out, "\\%c", *p);
        } else if (*p == '\n') {
            rc = buf_puts(out, "\\n");
        } else if (*p == '\t') {
            rc = buf_puts(out, "\\t");
        } else if (*p == '\r') {
            rc = buf_puts(out, "\\r");
        } else if (*p < 0x20 || *p == 0x7f) {
            rc = buf_printf(out, "\\x%02x", *p);
        } else {
            rc = buf_putc(out, (char)*p);
        }
        if (rc < 0)
            return -1;
    }
    return buf_putc(out, '"');
}

static int emit_string(buf_t *out, const char *s) {
    return str_needs_quotes(s) ? emit_quoted(out, s) : buf_puts(out, s);
}

static int emit_number(buf_t *out, const cJSON *n) {
    struct number_lit lit;
    double d = n->valuedouble;
    if (number_text_valid(n, &lit))
        return buf_puts(out, n->valuestring);
    if (isnan(d))
        return buf_puts(out, ".nan");
    if (isinf(d))
        return buf_puts(out, d < 0 ? "-.inf" : ".inf");
    if (d == trunc(d) && fabs(d) < 9.2e18)
        return buf_printf(out, "%lld", (long long)d);
    char tmp[40];
    snprintf(tmp, sizeof tmp, "%.15g", d);
    if (strtod(tmp, NULL) != d)
        snprintf(tmp, sizeof tmp, "%.17g", d);
    return buf_puts(out, tmp);
}

static bool is_collection(const cJSON *n) {
    return cJSON_IsObject(n) || cJSON_IsArray(n);
}

/* Scalars and empty collections fit on the line of their key or dash. */
static bool is_inline(const cJSON *n) {
    return !is_collection(n) || n->child == NULL;
}

static int emit_inline(buf_t *out, const cJSON *n) {
    if (cJSON_IsObject(n))
        return buf_puts(out, "{}");
    if (cJSON_IsArray(n))
        return buf_puts(out, "[]");
    if (cJSON_IsString(n) || cJSON_IsRaw(n))
        return n->valuestring ? emit_string(out, n->valuestring) : -1;
    if (cJSON_IsNumber(n))
        return emit_number(out, n);
    if (cJSON_IsBool(n))
        return buf_puts(out, cJSON_IsTrue(n) ? "true" : "false");
    if (cJSON_IsNull(n))
        return buf_puts(out, "null");
    return -1;
}

static int emit_indent(buf_t *out, int indent) {
    for (int i = 0; i < indent; i++)
        if (buf_putc(out, ' ') < 0)
            return -1;
    return 0;
}

static int emit_block(buf_t *out, const cJSON *n, int indent, bool first_inline);

/* What follows "key:" or "- ": a scalar on the same line, or a nested block. */
static int emit_child(buf_t *out, const cJSON *c, int indent, bool after_dash) {
    if (is_inline(c)) {
        if (buf_putc(out, ' ') < 0 || emit_inline(out, c) < 0 || buf_putc(out, '\n') < 0)
            return -1;
        return 0;
    }
    if (after_dash)
        return buf_putc(out, ' ') < 0 ? -1 : emit_block(out, c, indent + 2, true);
    return buf_putc(out, '\n') < 0 ? -1 : emit_block(out, c, indent + 2, false);
}

/* YAML allows an implicit key ("key: value") of at most 1024 characters,
 * quotes and escapes included, and libyaml refuses a longer one (counting
 * characters, not bytes). */
#define IMPLICIT_KEY_MAX 1024

static size_t utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* "key:" for a mapping entry at indent, before its value. A key too long to
 * be implicit is written explicitly, "? key" and ":" on the next line, which
 * has no length limit. */
static int emit_key(buf_t *out, const char *key, int indent) {
    buf_t k = BUF_INIT;
    if (emit_string(&k, key) < 0) {
        buf_free(&k);
        return -1;
    }
    bool explicit_key = utf8_chars(k.data, k.len) > IMPLICIT_KEY_MAX;
    int rc = 0;
    if ((explicit_key && buf_puts(out, "? ") < 0) || buf_append(out, k.data, k.len) < 0 ||
        (explicit_key && (buf_putc(out, '\n') < 0 || emit_indent(out, indent) < 0)) ||
        buf_putc(out, ':') < 0)
        rc = -1;
    buf_free(&k);
    return rc;
}

static int emit_block(buf_t *out, const cJSON *n, int indent, bool first_inline) {
    bool first = true;
    for (const cJSON *c = n->child; c; c = c->next, first = false) {
        if (!(first && first_inline) && emit_indent(out, indent) < 0)
            return -1;
        if (cJSON_IsArray(n)) {
            if (buf_putc(out, '-') < 0 || emit_child(out, c, indent, true) < 0)
                return -1;
            continue;
        }
        if (!c->string || emit_key(out, c->string, indent) < 0 ||
            emit_child(out, c, indent, false) < 0)
            return -1;
    }
    return 0;
}

int value_emit_yaml(const cJSON *obj, buf_t *out, bool doc_start) {
    if (!obj)
        return -1;
    if (doc_start && buf_puts(out, "---\n") < 0)
        return -1;
    if (is_inline(obj))
        return emit_inline(out, obj) < 0 || buf_putc(out, '\n') < 0 ? -1 : 0;
    return emit_block(out, obj, 0, false);
}
