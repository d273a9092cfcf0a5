/* fuzz_consul.c - Consul answers and the helpers around them
 * (sources/consul_proto.h): consul_list_parse on two recurse answers, consul_diff
 * between them, consul_list_find, X-Consul-Index parsing and its verdict,
 * key URLs, the write answer, and address redaction for logs.
 *
 * Input: old NUL cur NUL index NUL key NUL body, where old and cur are
 * answers to GET /v1/kv/<prefix>?recurse (a JSON array), index is an
 * X-Consul-Index value, key a Consul key and body the answer to a PUT. NUL
 * separates them because no JSON text or header can hold a raw one.
 *
 * Invariants beyond "no crash, no sanitizer report":
 *  - consul_list_parse: a failure leaves the list empty with a reason; a
 *    success is sorted by key, without repeats or folders, with values
 *    NUL-terminated at their length; consul_list_find finds each entry
 *    (that very entry) and nothing that is not there;
 *  - consul_diff(old, cur): exactly the brute-force difference (a PUT for
 *    every key new or changed in cur, a DELETE at the answer's index for
 *    every key gone), each pointing into the right list, sorted by revision
 *    then key; diff(cur, cur) is empty;
 *  - consul_index_parse accepts exactly the decimal numbers that fit in 64
 *    bits, with their value; consul_index_next never asks for index 0 and
 *    its verdict matches the two indexes;
 *  - consul_url_key: only unreserved bytes and '/' stay, every other byte
 *    is %XX, and decoding gives the key back; the list URL likewise;
 *  - consul_put_result: success only for 200 "true"; the message is one
 *    line;
 *  - consul_address_redact: no userinfo left in the authority. */
#include "fuzz_common.h"

#include "sources/consul_proto.h"

typedef unsigned __int128 u128;

static void check_list(const struct consul_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        const struct consul_kv *kv = &l->kvs[i];
        size_t klen = strlen(kv->key);
        FUZZ_CHECK(klen > 0 && kv->key[klen - 1] != '/', "folder or empty key '%s'", kv->key);
        FUZZ_CHECK(kv->value && kv->value[kv->value_len] == '\0', "value not terminated");
        FUZZ_CHECK(i == 0 || strcmp(l->kvs[i - 1].key, kv->key) < 0, "not sorted/unique at %zu", i);
        FUZZ_CHECK(consul_list_find(l, kv->key) == kv, "find('%s') is not the entry", kv->key);
        /* A key just after this one, absent unless it is the next entry. */
        char *next = malloc(klen + 2);
        if (!next)
            abort();
        memcpy(next, kv->key, klen);
        memcpy(next + klen, "\x01", 2);
        const struct consul_kv *f = consul_list_find(l, next);
        FUZZ_CHECK(f ? !strcmp(f->key, next) : !(i + 1 < l->n && !strcmp(l->kvs[i + 1].key, next)),
                   "find of an absent key");
        free(next);
    }
}

static int parse(const char *text, size_t len, struct consul_list *l) {
    char err[256] = "";
    if (consul_list_parse(text, len, l, err, sizeof err) == 0) {
        check_list(l);
        return 0;
    }
    FUZZ_CHECK(!l->kvs && l->n == 0, "failed parse left entries");
    FUZZ_CHECK(err[0], "failed parse gave no reason");
    return -1;
}

static bool same_kv(const struct consul_kv *a, const struct consul_kv *b) {
    return a->modify_index == b->modify_index && a->value_len == b->value_len &&
           !memcmp(a->value, b->value, a->value_len);
}

static bool in_list(const struct consul_list *l, const struct consul_kv *kv) {
    return l->n && kv >= l->kvs && kv < l->kvs + l->n;
}

static void check_diff(const struct consul_list *old, const struct consul_list *cur) {
    const uint64_t index = 77;
    struct consul_change *ch;
    size_t n;
    FUZZ_CHECK(consul_diff(old, cur, index, &ch, &n) == 0, "diff failed");
    size_t want = 0;
    for (size_t i = 0; i < cur->n; i++) {
        const struct consul_kv *o = consul_list_find(old, cur->kvs[i].key);
        want += !o || !same_kv(o, &cur->kvs[i]);
    }
    for (size_t i = 0; i < old->n; i++)
        want += !consul_list_find(cur, old->kvs[i].key);
    FUZZ_CHECK(n == want, "diff has %zu changes, brute force %zu", n, want);
    for (size_t k = 0; k < n; k++) {
        const struct consul_change *c = &ch[k];
        if (c->type == SOURCE_PUT) {
            const struct consul_kv *o = consul_list_find(old, c->kv->key);
            FUZZ_CHECK(in_list(cur, c->kv) && (!o || !same_kv(o, c->kv)) &&
                           c->revision == c->kv->modify_index,
                       "bad PUT of '%s'", c->kv->key);
        } else {
            FUZZ_CHECK(c->type == SOURCE_DELETE && in_list(old, c->kv) &&
                           !consul_list_find(cur, c->kv->key) && c->revision == index,
                       "bad DELETE of '%s'", c->kv->key);
        }
        if (k > 0)
            FUZZ_CHECK(ch[k - 1].revision < c->revision ||
                           (ch[k - 1].revision == c->revision &&
                            strcmp(ch[k - 1].kv->key, c->kv->key) <= 0),
                       "changes not sorted at %zu", k);
    }
    free(ch);
    FUZZ_CHECK(consul_diff(cur, cur, index, &ch, &n) == 0 && n == 0 && !ch,
               "diff of a list with itself is not empty");
}

static void check_index(const char *s) {
    uint64_t got = 12345;
    int rc = consul_index_parse(s, &got);
    bool ok = *s != '\0';
    u128 v = 0;
    for (const char *p = s; *p && ok; p++) {
        ok = *p >= '0' && *p <= '9' && v <= UINT64_MAX;
        v = v * 10 + (u128)(*p - '0');
    }
    ok = ok && v <= UINT64_MAX;
    FUZZ_CHECK((rc == 0) == ok, "index '%s': rc %d", s, rc);
    if (ok)
        FUZZ_CHECK(got == (uint64_t)v, "index '%s' read as %llu", s, (unsigned long long)got);
    else
        got = 0;
    const uint64_t prevs[] = {0, 1, got, got + 1, got ? got - 1 : 0};
    for (size_t i = 0; i < sizeof prevs / sizeof prevs[0]; i++) {
        uint64_t next;
        enum consul_index_verdict vd = consul_index_next(i > 0, prevs[i], got, &next);
        FUZZ_CHECK(next >= 1 && (next == got || got == 0), "next index %llu",
                   (unsigned long long)next);
        enum consul_index_verdict want = i == 0            ? CONSUL_INDEX_FIRST
                                         : got < prevs[i]  ? CONSUL_INDEX_RESET
                                         : got == prevs[i] ? CONSUL_INDEX_SAME
                                                           : CONSUL_INDEX_FORWARD;
        FUZZ_CHECK(vd == want, "verdict %d, want %d", (int)vd, (int)want);
    }
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decode a %XX-escaped path, checking that only unreserved bytes (and '/'
 * when keep_slash) were left as they are. */
static void check_escaped(const char *s, size_t n, const char *want, bool keep_slash) {
    char *dec = malloc(n + 1);
    if (!dec)
        abort();
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            FUZZ_CHECK(i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0,
                       "bad escape in '%.*s'", (int)n, s);
            dec[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
            continue;
        }
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '.' || c == '_' || c == '-' || (keep_slash && c == '/');
        FUZZ_CHECK(plain, "byte 0x%02x left unescaped in '%.*s'", c, (int)n, s);
        dec[o++] = (char)c;
    }
    dec[o] = '\0';
    FUZZ_CHECK(!strcmp(dec, want), "escaped text decodes to '%s', want '%s'", dec, want);
    free(dec);
}

static void check_urls(const char *key) {
    static const char base[] = "http://127.0.0.1:8500/v1/kv/";
    char *url = consul_url_key("http://127.0.0.1:8500//", key);
    FUZZ_CHECK(url && !strncmp(url, base, sizeof base - 1), "key URL '%s'", url ? url : "");
    check_escaped(url + sizeof base - 1, strlen(url + sizeof base - 1), key, true);
    free(url);

    url = consul_url_list("http://127.0.0.1:8500", key, 5, 1500, key, "stale");
    FUZZ_CHECK(url && !strncmp(url, base, sizeof base - 1), "list URL '%s'", url ? url : "");
    const char *path = url + sizeof base - 1, *q = strchr(path, '?');
    FUZZ_CHECK(q, "list URL without a query: '%s'", url);
    check_escaped(path, (size_t)(q - path), key, true);
    const char *dc = strstr(q, "&dc=");
    if (*key) {
        FUZZ_CHECK(dc, "no dc in '%s'", url);
        dc += 4;
        check_escaped(dc, strcspn(dc, "&"), key, false);
    }
    free(url);
}

static void check_put(long status, const char *body, size_t len) {
    char msg[300];
    bool ok = consul_put_result(status, body, len, "canary/ns/name/status", msg, sizeof msg);
    FUZZ_CHECK(!ok || (status == 200 && memmem(body, len, "true", 4)),
               "write taken as applied: HTTP %ld", status);
    FUZZ_CHECK(msg[0] && !fuzz_has_control(msg), "message is not one line: %s", msg);
}

/* The address comes from source.address, which config.c only takes as an
 * http:// or https:// URL; the fuzzed text is made one by prefixing it. */
static void check_redact(const char *text) {
    char address[400], out[512];
    snprintf(address, sizeof address, "%s%s", !strncmp(text, "https://", 8) ? "" : "http://", text);
    consul_address_redact(address, out, sizeof out);
    const char *auth = strstr(out, "://") + 3;
    size_t alen = strcspn(auth, "/?#");
    FUZZ_CHECK(!memchr(auth, '@', alen), "userinfo left in '%s'", out);
}

static const char *part(const uint8_t **p, const uint8_t *end, size_t *len) {
    const uint8_t *s = *p, *nul = s < end ? memchr(s, '\0', (size_t)(end - s)) : NULL;
    *len = s < end ? (size_t)((nul ? nul : end) - s) : 0;
    *p = nul ? nul + 1 : end;
    return (const char *)s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *p = data, *end = data + size;
    size_t olen, clen, ilen, klen, blen;
    const char *old_text = part(&p, end, &olen);
    const char *cur_text = part(&p, end, &clen);
    const char *idx = part(&p, end, &ilen);
    const char *key = part(&p, end, &klen);
    const char *body = part(&p, end, &blen);

    struct consul_list old, cur;
    int ro = parse(old_text, olen, &old);
    int rc = parse(cur_text, clen, &cur);
    if (ro == 0 && rc == 0)
        check_diff(&old, &cur);
    consul_list_free(&old);
    consul_list_free(&cur);

    char *s = fuzz_strndup((const uint8_t *)idx, ilen);
    check_index(s);
    free(s);
    s = fuzz_strndup((const uint8_t *)key, klen);
    check_urls(s);
    check_redact(s);
    free(s);
    static const long statuses[] = {200, 200, 403, 500, 0, 404, 200, 429};
    check_put(statuses[size % 8], body, blen);
    return 0;
}
