/* fuzz_etcd_stream.c - the etcd watch stream as it arrives off the wire
 * (sources/etcd_proto.h): the line framer etcd_stream_feed, fed in random chunks,
 * then every message through the response parsers etcd_watch_parse,
 * etcd_range_parse, etcd_error_classify and etcd_auth_token_parse, and the
 * byte-level helpers keys go through (base64, prefix range end, request
 * bodies).
 *
 * Input: byte 0 picks max_msg (small limits exercise ETCD_STREAM_TOO_BIG),
 * byte 1 seeds the chunk sizes, byte 2 says after which message the
 * callback asks to stop (0: never), byte 3 is an HTTP status for
 * etcd_error_classify; the rest is the stream.
 *
 * Invariants beyond "no crash, no sanitizer report":
 *  - framing does not depend on chunking: the messages delivered are
 *    exactly the stream's '\n'-terminated lines, one trailing '\r' dropped,
 *    empty ones skipped, in order; a line over max_msg gives TOO_BIG at that
 *    point and nothing after it; a callback's non-zero return stops the feed
 *    and is returned; etcd_stream_rest is the unterminated tail;
 *  - etcd_watch_parse: a failed parse leaves *out zeroed; a parsed one has
 *    NUL-terminated keys and values at their lengths, an error message for
 *    errors and no events with them; etcd_watch_is_progress matches its
 *    definition;
 *  - etcd_range_parse appends: a failure adds nothing, a success adds the
 *    page's kvs and a positive revision;
 *  - etcd_error_classify: the message is one printable line;
 *  - base64: decode(encode(x)) == x; whatever decodes re-encodes to
 *    something that decodes to the same bytes;
 *  - etcd_prefix_end: the smallest key above every key with that prefix;
 *  - request bodies are JSON whose base64 key decodes back to the key. */
#include "fuzz_common.h"

#include "bridge/lib/base64.h"
#include "sources/etcd_proto.h"

/* ---- the parsers, on one message ----------------------------------------- */

static void check_kv(const struct etcd_kv *kv) {
    FUZZ_CHECK(kv->key && kv->key[kv->key_len] == '\0', "key not terminated at its length");
    FUZZ_CHECK(kv->value && kv->value[kv->value_len] == '\0', "value not terminated");
}

static void check_watch(const char *msg, size_t len) {
    struct etcd_watch_msg m, zero;
    memset(&zero, 0, sizeof zero);
    char err[256] = "";
    if (etcd_watch_parse(msg, len, &m, err, sizeof err) != 0) {
        FUZZ_CHECK(!memcmp(&m, &zero, sizeof m), "failed watch parse left data");
        FUZZ_CHECK(err[0], "failed watch parse gave no reason");
        return;
    }
    if (m.is_error) {
        FUZZ_CHECK(m.message && m.n_events == 0, "error message with events or no text");
    } else {
        FUZZ_CHECK(m.n_events == 0 || m.events, "events count without events");
        for (size_t i = 0; i < m.n_events; i++) {
            FUZZ_CHECK(m.events[i].type == SOURCE_PUT || m.events[i].type == SOURCE_DELETE,
                       "event type");
            check_kv(&m.events[i].kv);
        }
    }
    bool progress = !m.is_error && m.n_events == 0 && !m.created && !m.canceled &&
                    m.compact_revision == 0 && m.revision > 0;
    FUZZ_CHECK(etcd_watch_is_progress(&m) == progress, "etcd_watch_is_progress");
    etcd_watch_msg_free(&m);
    FUZZ_CHECK(!memcmp(&m, &zero, sizeof m), "etcd_watch_msg_free did not zero");
}

static void check_range(struct etcd_range *r, const char *msg, size_t len) {
    size_t before = r->n;
    char err[256] = "";
    if (etcd_range_parse(msg, len, r, err, sizeof err) != 0) {
        FUZZ_CHECK(r->n == before, "failed range parse changed the list");
        FUZZ_CHECK(err[0], "failed range parse gave no reason");
        return;
    }
    FUZZ_CHECK(r->n >= before && r->n <= r->cap, "range n %zu cap %zu", r->n, r->cap);
    FUZZ_CHECK(r->revision > 0, "range revision %lld", (long long)r->revision);
    for (size_t i = before; i < r->n; i++)
        check_kv(&r->kvs[i]);
}

static void check_error(long status, const char *msg, size_t len) {
    char out[300];
    enum etcd_err_kind k = etcd_error_classify(status, msg, len, out, sizeof out);
    FUZZ_CHECK(k == ETCD_ERR_OTHER || k == ETCD_ERR_COMPACTED || k == ETCD_ERR_AUTH, "kind %d",
               (int)k);
    FUZZ_CHECK(out[0] && !fuzz_has_control(out), "classified message is not one line: %s", out);
    char *tok = etcd_auth_token_parse(msg, len);
    FUZZ_CHECK(!tok || tok[0], "empty token returned");
    free(tok);
}

static void check_b64(const char *msg, size_t len) {
    char *enc = base64_encode(msg, len), *dec = NULL;
    size_t dlen = 0;
    FUZZ_CHECK(enc && strlen(enc) == (len + 2) / 3 * 4, "encode length");
    FUZZ_CHECK(base64_decode(enc, strlen(enc), BASE64_PAD_OPTIONAL, &dec, &dlen) == 0 &&
                   dlen == len && !memcmp(dec, msg, len) && dec[dlen] == '\0',
               "decode(encode(x)) != x");
    free(enc);
    free(dec);
    if (base64_decode(msg, len, BASE64_PAD_OPTIONAL, &dec, &dlen) != 0) {
        FUZZ_CHECK(!dec, "failed decode returned data");
        return;
    }
    FUZZ_CHECK(dec[dlen] == '\0' && dlen <= len, "decoded length");
    enc = base64_encode(dec, dlen);
    char *again = NULL;
    size_t alen = 0;
    FUZZ_CHECK(enc && base64_decode(enc, strlen(enc), BASE64_PAD_OPTIONAL, &again, &alen) == 0 &&
                   alen == dlen && !memcmp(again, dec, dlen),
               "re-encoded value decodes differently");
    free(again);
    free(enc);
    free(dec);
}

static void check_prefix_end(const char *key, size_t len) {
    char *end;
    size_t elen;
    FUZZ_CHECK(etcd_prefix_end(key, len, &end, &elen) == 0, "prefix_end failed");
    size_t i = len;
    while (i > 0 && (unsigned char)key[i - 1] == 0xff)
        i--;
    if (i == 0) {
        FUZZ_CHECK(elen == 1 && end[0] == '\0', "no incrementable byte: want \"\\0\"");
    } else {
        FUZZ_CHECK(elen == i && !memcmp(end, key, i - 1) &&
                       (unsigned char)end[i - 1] == (unsigned char)key[i - 1] + 1,
                   "prefix end is not the key with its last non-0xff byte incremented");
    }
    free(end);
}

/* The key, base64 in a request body, must decode back to the same bytes. */
static void check_body(char *body, const char *key, size_t len) {
    cJSON *root = body ? cJSON_Parse(body) : NULL;
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(root, "key");
    if (!k) /* the watch body nests it */
        k = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(root, "create_request"), "key");
    char *dec = NULL;
    size_t dlen = 0;
    FUZZ_CHECK(cJSON_IsString(k) &&
                   base64_decode(k->valuestring, strlen(k->valuestring), BASE64_PAD_OPTIONAL, &dec,
                                 &dlen) == 0 &&
                   dlen == len && !memcmp(dec, key, len),
               "request body does not carry the key: %s", body ? body : "(null)");
    free(dec);
    cJSON_Delete(root);
    free(body);
}

static void check_bodies(const char *key, size_t len) {
    check_body(etcd_range_body(key, len, "\0", 1, 1000, 7), key, len);
    check_body(etcd_watch_body(key, len, "\0", 1, 42), key, len);
    check_body(etcd_put_body(key, len, key, len), key, len);
}

/* ---- framing -------------------------------------------------------------- */

struct feed {
    const char *stream; /* the whole stream, for the reference */
    size_t len;
    size_t max_msg;
    size_t stop_after; /* 0: never */
    long status;
    size_t pos; /* where the reference's next line starts */
    size_t delivered;
    struct etcd_range range;
};

/* The reference's next message, or false at the end of the complete lines.
 * *too_big is set when that line is over the limit. */
static bool next_line(struct feed *f, const char **msg, size_t *len, bool *too_big) {
    for (;;) {
        const char *s = f->stream + f->pos;
        const char *nl = memchr(s, '\n', f->len - f->pos);
        if (!nl)
            return false;
        size_t n = (size_t)(nl - s);
        f->pos += n + 1;
        *too_big = n > f->max_msg;
        if (*too_big)
            return true;
        if (n > 0 && s[n - 1] == '\r')
            n--;
        if (n == 0)
            continue;
        *msg = s;
        *len = n;
        return true;
    }
}

static int on_msg(void *user, const char *msg, size_t len) {
    struct feed *f = user;
    const char *want;
    size_t wlen;
    bool too_big;
    FUZZ_CHECK(next_line(f, &want, &wlen, &too_big) && !too_big,
               "message delivered that the reference does not have");
    FUZZ_CHECK(len == wlen && !memcmp(msg, want, len), "message %zu differs", f->delivered);
    f->delivered++;
    check_watch(msg, len);
    check_range(&f->range, msg, len);
    check_error(f->status, msg, len);
    if (len <= 512) {
        check_b64(msg, len);
        check_prefix_end(msg, len);
        check_bodies(msg, len);
    }
    return f->stop_after && f->delivered == f->stop_after ? 7 : 0;
}

/* xorshift: chunk sizes from a seed, reproducible for one input. */
static uint32_t next_rand(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const size_t limits[] = {16, 64, 256, 4096, ETCD_MAX_MESSAGE};
    if (size < 4)
        return 0;
    struct feed f = {0};
    f.max_msg = limits[data[0] % (sizeof limits / sizeof limits[0])];
    uint32_t seed = (uint32_t)data[1] * 2654435761u + 1;
    f.stop_after = data[2] % 8;
    f.status = data[3] < 128 ? 0 : 200 + data[3]; /* 0 (no HTTP status) or 328..455 */
    f.stream = (const char *)data + 4;
    f.len = size - 4;

    struct etcd_stream st;
    etcd_stream_init(&st, f.max_msg);
    int rc = 0;
    size_t off = 0;
    while (off < f.len && rc == 0) {
        size_t chunk = 1 + next_rand(&seed) % (data[1] & 1 ? 7 : 300);
        if (chunk > f.len - off)
            chunk = f.len - off;
        rc = etcd_stream_feed(&st, f.stream + off, chunk, on_msg, &f);
        off += chunk;
    }

    const char *want;
    size_t wlen;
    bool too_big = false;
    if (rc == 7) {
        FUZZ_CHECK(f.stop_after && f.delivered == f.stop_after, "stop value without a stop");
    } else if (rc == ETCD_STREAM_TOO_BIG) {
        /* The reference must hit an oversized line, complete or not, next. */
        bool line = next_line(&f, &want, &wlen, &too_big);
        size_t tail = f.len - f.pos;
        FUZZ_CHECK((line && too_big) || (!line && tail > f.max_msg),
                   "TOO_BIG with no line over %zu bytes", f.max_msg);
    } else {
        FUZZ_CHECK(rc == 0, "feed returned %d", rc);
        FUZZ_CHECK(!next_line(&f, &want, &wlen, &too_big), "a message was not delivered");
        size_t rlen;
        const char *rest = etcd_stream_rest(&st, &rlen);
        FUZZ_CHECK(rlen == f.len - f.pos && !memcmp(rest, f.stream + f.pos, rlen),
                   "etcd_stream_rest is not the unterminated tail");
        FUZZ_CHECK(rlen <= f.max_msg, "tail over the limit kept");
    }
    etcd_stream_free(&st);
    etcd_range_free(&f.range);
    return 0;
}
