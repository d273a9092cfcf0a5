/* consul_proto.c - Consul's KV API, free of I/O: URLs and key escaping, the
 * recurse answer parser, the diff of two answers, the index rules, the churn
 * refill period and the meaning of a write's answer (consul_proto.h). The
 * connection state machine that uses them is consul.c. */
#include "sources/consul_proto.h"

#include "bridge/lib/base64.h"
#include "bridge/lib/buf.h"
#include "bridge/lib/url.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- URLs ---- */

/* "<address without trailing slashes>/v1/kv/<escaped key>" */
static int buf_put_kv_path(buf_t *b, const char *address, const char *key) {
    if (buf_append(b, address, url_base_len(address)) < 0 || buf_puts(b, "/v1/kv/") < 0)
        return -1;
    return buf_put_urlencoded(b, key, true);
}

char *consul_url_key(const char *address, const char *key) {
    buf_t b = BUF_INIT;
    if (buf_put_kv_path(&b, address, key) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

char *consul_url_list(const char *address, const char *prefix, uint64_t index, uint64_t wait_ms,
                      const char *datacenter, const char *consistency) {
    buf_t b = BUF_INIT;
    bool ok = buf_put_kv_path(&b, address, prefix) == 0 && buf_puts(&b, "?recurse") == 0;
    if (ok && index > 0) {
        /* Go durations: whole seconds read best in request logs. */
        ok = buf_printf(&b, "&index=%" PRIu64, index) == 0 &&
             (wait_ms % 1000 == 0 ? buf_printf(&b, "&wait=%" PRIu64 "s", wait_ms / 1000)
                                  : buf_printf(&b, "&wait=%" PRIu64 "ms", wait_ms)) == 0;
    }
    if (ok && datacenter && *datacenter)
        ok = buf_puts(&b, "&dc=") == 0 && buf_put_urlencoded(&b, datacenter, false) == 0;
    if (ok && consistency && strcmp(consistency, "stale") == 0)
        ok = buf_puts(&b, "&stale") == 0;
    else if (ok && consistency && strcmp(consistency, "consistent") == 0)
        ok = buf_puts(&b, "&consistent") == 0;
    if (!ok) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

void consul_address_redact(const char *address, char *out, size_t outlen) {
    if (!out || outlen == 0)
        return;
    const char *scheme_end = strstr(address, "://");
    const char *auth = scheme_end ? scheme_end + 3 : address;
    size_t auth_len = strcspn(auth, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < auth_len; i++)
        if (auth[i] == '@')
            at = auth + i;
    if (!at) {
        snprintf(out, outlen, "%s", address);
        return;
    }
    snprintf(out, outlen, "%.*s%s", (int)(auth - address), address, at + 1);
}

/* ---- recurse answers ---- */

/* A non-negative integer field; absent or null is 0. Consul's indexes are
 * uint64 but stay far below 2^53, where JSON numbers are still exact
 * (max 2^53). Flags are any uint64 a client chose (`consul lock` sets
 * 0x2ddccbc058a50c18): max 2^64, the double that 2^64-1 parses to. */
static int json_u64(const cJSON *obj, const char *name, double max, uint64_t *out) {
    *out = 0;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it || cJSON_IsNull(it))
        return 0;
    if (!cJSON_IsNumber(it))
        return -1;
    double d = it->valuedouble;
    if (!(d >= 0 && d <= max) || d != floor(d))
        return -1;
    *out = d >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)d;
    return 0;
}
#define JSON_EXACT_MAX 9007199254740992.0   /* 2^53 */
#define JSON_U64_MAX 18446744073709551616.0 /* 2^64 */

/* A key for a message: control bytes as \xNN, the rest as it is. */
static int buf_put_key(buf_t *b, const char *key) {
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        int rc = *p < 0x20 || *p == 0x7f ? buf_printf(b, "\\x%02x", *p) : buf_putc(b, (char)*p);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static void kv_free(struct consul_kv *kv) {
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

static int kv_cmp(const void *a, const void *b) {
    return strcmp(((const struct consul_kv *)a)->key, ((const struct consul_kv *)b)->key);
}

enum entry_kind { ENTRY_BAD, ENTRY_FOLDER, ENTRY_KEY };

/* Parse one entry into kv: a key, a folder (skipped, kv left empty), or an
 * error (err set). */
static enum entry_kind kv_parse(const cJSON *j, size_t i, struct consul_kv *kv, char *err,
                                size_t errlen) {
    memset(kv, 0, sizeof *kv);
    if (!cJSON_IsObject(j)) {
        source_set_err(err, errlen, "entry %zu is not an object", i);
        return ENTRY_BAD;
    }
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(j, "Key");
    if (!cJSON_IsString(key) || !key->valuestring[0]) {
        source_set_err(err, errlen, "entry %zu has no Key", i);
        return ENTRY_BAD;
    }
    size_t klen = strlen(key->valuestring);
    if (key->valuestring[klen - 1] == '/')
        return ENTRY_FOLDER; /* a UI folder: structure, not data */
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(j, "Value");
    if (val && !cJSON_IsNull(val) && !cJSON_IsString(val)) {
        source_set_err(err, errlen, "entry %zu (%s): Value is not a string", i, key->valuestring);
        return ENTRY_BAD;
    }
    /* Value is []byte without omitempty: an empty value is null. */
    const char *b64 = cJSON_IsString(val) ? val->valuestring : "";
    if (base64_decode(b64, strlen(b64), BASE64_PAD_OPTIONAL, &kv->value, &kv->value_len) < 0) {
        source_set_err(err, errlen, "entry %zu (%s): Value is not base64", i, key->valuestring);
        return ENTRY_BAD;
    }
    if (json_u64(j, "CreateIndex", JSON_EXACT_MAX, &kv->create_index) < 0 ||
        json_u64(j, "ModifyIndex", JSON_EXACT_MAX, &kv->modify_index) < 0 ||
        json_u64(j, "Flags", JSON_U64_MAX, &kv->flags) < 0) {
        source_set_err(err, errlen, "entry %zu (%s): malformed index or flags", i,
                       key->valuestring);
        kv_free(kv);
        return ENTRY_BAD;
    }
    kv->key = strdup(key->valuestring);
    if (!kv->key) {
        source_set_err(err, errlen, "out of memory");
        kv_free(kv);
        return ENTRY_BAD;
    }
    return ENTRY_KEY;
}

int consul_list_parse(const char *json, size_t len, struct consul_list *out, char *err,
                      size_t errlen) {
    cJSON *root = source_json_parse(json, len, SOURCE_JSON_ARRAY, "answer", err, errlen);
    memset(out, 0, sizeof *out); /* empty on failure too */
    if (!root)
        return -1;
    int count = cJSON_GetArraySize(root);
    struct consul_kv *kvs = calloc(count > 0 ? (size_t)count : 1, sizeof *kvs);
    if (!kvs) {
        source_set_err(err, errlen, "out of memory");
        cJSON_Delete(root);
        return -1;
    }
    size_t n = 0, i = 0;
    bool ok = true;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        enum entry_kind kind = kv_parse(it, i++, &kvs[n], err, errlen);
        if (kind == ENTRY_BAD) {
            ok = false;
            break;
        }
        if (kind == ENTRY_KEY)
            n++;
    }
    cJSON_Delete(root);
    buf_t warn = BUF_INIT;
    if (ok) {
        qsort(kvs, n, sizeof *kvs, kv_cmp);
        /* Runs of one name: keys that differ only in bytes that are not
         * UTF-8. None of them can be told apart, so none is kept. */
        size_t kept = 0;
        bool oom = false;
        for (size_t k = 0; k < n;) {
            size_t end = k + 1;
            while (end < n && strcmp(kvs[k].key, kvs[end].key) == 0)
                end++;
            if (end - k == 1) {
                kvs[kept++] = kvs[k];
            } else {
                if (buf_puts(&warn, "ignoring key ") < 0 || buf_put_key(&warn, kvs[k].key) < 0 ||
                    buf_printf(&warn,
                               ": %zu keys have this name in Consul's answer (keys that differ "
                               "only in bytes that are not UTF-8, which Consul's JSON shows as "
                               "U+FFFD); none of them is read\n",
                               end - k) < 0)
                    oom = true;
                for (size_t m = k; m < end; m++)
                    kv_free(&kvs[m]);
            }
            k = end;
        }
        n = kept;
        if (oom) {
            source_set_err(err, errlen, "out of memory");
            ok = false;
        }
    }
    if (!ok) {
        for (size_t k = 0; k < n; k++)
            kv_free(&kvs[k]);
        free(kvs);
        buf_free(&warn);
        return -1;
    }
    out->kvs = kvs;
    out->n = n;
    out->warnings = warn.len ? buf_steal(&warn) : NULL;
    buf_free(&warn);
    return 0;
}

void consul_list_free(struct consul_list *l) {
    for (size_t i = 0; i < l->n; i++)
        kv_free(&l->kvs[i]);
    free(l->kvs);
    free(l->warnings);
    memset(l, 0, sizeof *l);
}

const struct consul_kv *consul_list_find(const struct consul_list *l, const char *key) {
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, l->kvs[mid].key);
        if (c == 0)
            return &l->kvs[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

bool consul_list_drops(const struct consul_list *old, const struct consul_list *cur) {
    /* Both sorted by strcmp: one merge pass. */
    size_t j = 0;
    for (size_t i = 0; i < old->n; i++) {
        int c = 1;
        while (j < cur->n && (c = strcmp(cur->kvs[j].key, old->kvs[i].key)) < 0)
            j++;
        if (j >= cur->n || c != 0)
            return true;
    }
    return false;
}

enum consul_probe_verdict consul_probe_result(long status) {
    if (status == 200 || status == 404)
        return CONSUL_PROBE_READABLE;
    return status == 403 ? CONSUL_PROBE_DENIED : CONSUL_PROBE_ERROR;
}

/* ---- diff ---- */

static int change_cmp(const void *a, const void *b) {
    const struct consul_change *x = a, *y = b;
    if (x->revision != y->revision)
        return x->revision < y->revision ? -1 : 1;
    return strcmp(x->kv->key, y->kv->key);
}

static bool kv_same(const struct consul_kv *a, const struct consul_kv *b) {
    /* ModifyIndex alone would do against a real Consul; the content check
     * also catches servers or proxies that leave it out (0 on both sides). */
    return a->modify_index == b->modify_index && a->value_len == b->value_len &&
           memcmp(a->value, b->value, a->value_len) == 0;
}

int consul_diff(const struct consul_list *old, const struct consul_list *cur, uint64_t index,
                struct consul_change **out, size_t *n) {
    *out = NULL;
    *n = 0;
    size_t cap = old->n + cur->n;
    if (cap == 0)
        return 0;
    struct consul_change *ch = calloc(cap, sizeof *ch);
    if (!ch)
        return -1;
    size_t i = 0, j = 0, k = 0;
    /* Both lists are sorted by key: one merge walk finds every difference. */
    while (i < old->n || j < cur->n) {
        int c = i == old->n ? 1 : j == cur->n ? -1 : strcmp(old->kvs[i].key, cur->kvs[j].key);
        if (c < 0) {
            ch[k++] = (struct consul_change){SOURCE_DELETE, &old->kvs[i++], index};
        } else if (c > 0) {
            ch[k] = (struct consul_change){SOURCE_PUT, &cur->kvs[j], cur->kvs[j].modify_index};
            k++, j++;
        } else {
            if (!kv_same(&old->kvs[i], &cur->kvs[j]))
                ch[k++] =
                    (struct consul_change){SOURCE_PUT, &cur->kvs[j], cur->kvs[j].modify_index};
            i++, j++;
        }
    }
    if (k == 0) {
        free(ch);
        return 0;
    }
    qsort(ch, k, sizeof *ch, change_cmp);
    *out = ch;
    *n = k;
    return 0;
}

/* ---- indexes ---- */

int consul_index_parse(const char *s, uint64_t *out) {
    *out = 0;
    if (!s || !*s)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

enum consul_index_verdict consul_index_next(bool have_prev, uint64_t prev, uint64_t got,
                                            uint64_t *next) {
    *next = got < 1 ? 1 : got;
    if (!have_prev)
        return CONSUL_INDEX_FIRST;
    if (got < prev)
        return CONSUL_INDEX_RESET;
    return got == prev ? CONSUL_INDEX_SAME : CONSUL_INDEX_FORWARD;
}

/* ---- rate limiting ---- */

uint64_t consul_churn_refill_ms(uint64_t cost_us) {
    uint64_t ms = cost_us / 100; /* 10 x cost, in ms */
    if (ms < CONSUL_CHURN_REFILL_MIN_MS)
        return CONSUL_CHURN_REFILL_MIN_MS;
    return ms > CONSUL_CHURN_REFILL_MAX_MS ? CONSUL_CHURN_REFILL_MAX_MS : ms;
}

/* ---- writes ---- */

bool consul_put_result(long status, const char *body, size_t len, const char *key, char *msg,
                       size_t msglen) {
    char text[200];
    source_copy_text(text, sizeof text, body ? body : "", body ? len : 0);
    const char *t = text;
    while (*t == ' ')
        t++;
    if (status == 200 && strcmp(t, "true") == 0) {
        source_set_err(msg, msglen, "ok");
        return true;
    }
    if (status == 200 && strcmp(t, "false") == 0)
        source_set_err(msg, msglen, "Consul did not apply the write of %s (it answered false)",
                       key);
    else if (status == 403)
        source_set_err(msg, msglen, "permission denied writing %s", key);
    else if (status == 200)
        source_set_err(msg, msglen, "unexpected answer to the write of %s: %s", key,
                       *t ? t : "(empty)");
    else
        source_set_err(msg, msglen, "HTTP %ld writing %s%s%s", status, key, *t ? ": " : "", t);
    return false;
}
