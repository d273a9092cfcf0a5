/* consul_proto.h - the pure, unit-testable parts of the Consul KV source.
 *
 * The Consul source (consul.c) reads the prefix with recursive blocking
 * queries: GET /v1/kv/<prefix>?recurse&index=N&wait=W answers with the whole
 * prefix as soon as its X-Consul-Index moves past N (or when W runs out).
 * Every answer is therefore a complete state, not a change: the source diffs
 * it against the previous one to report only what changed. Everything here is
 * free of I/O so it can be tested exactly: URL building and key escaping, the
 * recurse answer parser, the diff, Consul's index rules and the refill
 * period that keeps a misbehaving server (or a key that churns) from turning
 * the long poll into a busy loop. */
#ifndef CB_CONSUL_PROTO_H
#define CB_CONSUL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sources/source.h"

/* ---- URLs ---- */

/* Append key to a URL as path segments: bytes outside [A-Za-z0-9._/-] are
 * percent-encoded ('/' stays, it separates Consul's folders). Returns heap
 * "<address>/v1/kv/<escaped key>" (trailing '/' of address dropped), or NULL
 * on ENOMEM. Used for writes. */
char *consul_url_key(const char *address, const char *key);

/* The recursive read of prefix. index 0 = a plain, non-blocking read (no
 * index, no wait); otherwise a blocking query on index for wait_ms
 * (formatted as whole seconds when possible, else milliseconds). datacenter
 * NULL/"" = the agent's own; consistency NULL/"default"/"stale"/"consistent".
 * Heap string, NULL on ENOMEM. */
char *consul_url_list(const char *address, const char *prefix, uint64_t index, uint64_t wait_ms,
                      const char *datacenter, const char *consistency);

/* Copy address into out (bounded) without any "user:password@" part, for
 * log lines. */
void consul_address_redact(const char *address, char *out, size_t outlen);

/* ---- recurse answers ---- */

struct consul_kv {
    char *key;   /* NUL-terminated */
    char *value; /* decoded, NUL-terminated for convenience; "" for null */
    size_t value_len;
    uint64_t create_index, modify_index, flags;
};

/* The entries of one answer, sorted by key (strcmp), folders left out. */
struct consul_list {
    struct consul_kv *kvs;
    size_t n;
    char *warnings; /* keys left out, one line each ('\n'-ended); heap, NULL if none */
};

/* Parse the JSON array of a 200 answer. Folder keys (ending in '/') are
 * skipped; a null or missing Value is an empty value; missing indexes and
 * flags are 0; Flags may be anything up to 2^64-1 (the bridge does not use
 * them, so above 2^53 they are kept approximately). Consul keys are bytes,
 * but its JSON shows each byte that is not UTF-8 as U+FFFD, so two keys that
 * differ only there arrive with one name: every copy is left out, with a line
 * naming it in warnings; such a name is no route key anyway. Errors (not an
 * array, an entry that is not an object, no Key, bad base64, a malformed
 * index) fail the whole answer: half an answer must never pass for a complete
 * read. Returns 0 or -1 with err set; *out is empty on failure. */
int consul_list_parse(const char *json, size_t len, struct consul_list *out, char *err,
                      size_t errlen);
void consul_list_free(struct consul_list *l);
/* Binary search; NULL when absent. */
const struct consul_kv *consul_list_find(const struct consul_list *l, const char *key);

/* True when a key of old is missing from cur: the answer would delete. */
bool consul_list_drops(const struct consul_list *old, const struct consul_list *cur);

/* ---- read permission ----
 *
 * A recursive read cannot tell "denied" from "empty" for the anonymous token:
 * Consul filters out the keys the token may not read and, for an empty token
 * only, clears X-Consul-Results-Filtered-By-ACLs (maskResultsFilteredByACLs),
 * so an anonymous read under default-deny is 404 + X-Consul-Index, exactly as
 * for an empty prefix. A single-key read checks key:read before it looks the
 * key up, so GET /v1/kv/<prefix> (the prefix itself, not recursive) answers
 * 403 when the token may not read the prefix and 200/404 when it may. The
 * source asks that before it trusts an answer that would delete a key or
 * replace everything (a snapshot). */
enum consul_probe_verdict {
    CONSUL_PROBE_READABLE, /* 200 or 404: key_prefix read on the prefix */
    CONSUL_PROBE_DENIED,   /* 403 */
    CONSUL_PROBE_ERROR,    /* anything else: proves nothing, retry */
};
enum consul_probe_verdict consul_probe_result(long status);

/* ---- diff ---- */

struct consul_change {
    enum source_event_type type;
    const struct consul_kv *kv; /* the new entry (PUT) or the old one (DELETE) */
    uint64_t revision;          /* ModifyIndex (PUT) or the answer's index (DELETE) */
};

/* What changed from old to cur: keys that appeared, or whose ModifyIndex or
 * value differ, are PUTs; keys that are gone are DELETEs at `index`. Sorted by
 * revision, then key, so the consumer sees them in the order they happened
 * as far as Consul tells. *out (heap, NULL when none) points into old and
 * cur, which must outlive it. Returns 0, or -1 on ENOMEM. */
int consul_diff(const struct consul_list *old, const struct consul_list *cur, uint64_t index,
                struct consul_change **out, size_t *n);

/* ---- indexes ---- */

/* Parse an X-Consul-Index value: decimal digits only. Returns 0 or -1. */
int consul_index_parse(const char *s, uint64_t *out);

enum consul_index_verdict {
    CONSUL_INDEX_FIRST,   /* no previous index */
    CONSUL_INDEX_SAME,    /* nothing moved (timeout or an idempotent write) */
    CONSUL_INDEX_FORWARD, /* the usual case */
    CONSUL_INDEX_RESET,   /* went backwards: snapshot restore, reaped tombstones */
};

/* Compare an answer's X-Consul-Index (got) with the previous answer's (prev,
 * when have_prev) and give the index to block on next: the answer's, but
 * never below 1, because index 0 makes Consul answer at once and the loop
 * would spin ("always safe to use an index of 1"). */
enum consul_index_verdict consul_index_next(bool have_prev, uint64_t prev, uint64_t got,
                                            uint64_t *next);

/* ---- rate limiting ---- */

/* The refill period for answers that carried changes, from what handling
 * the last one cost (parse, diff, delivery) in microseconds: ten times the
 * cost, so sustained churn spends at most about a tenth of a core on
 * answers, within [CONSUL_CHURN_REFILL_MIN_MS, CONSUL_CHURN_REFILL_MAX_MS]. */
uint64_t consul_churn_refill_ms(uint64_t cost_us);
#define CONSUL_CHURN_REFILL_MIN_MS 1u
#define CONSUL_CHURN_REFILL_MAX_MS 1000u

/* ---- writes ---- */

/* Interpret the answer to PUT /v1/kv/<key>: 200 with body "true" is success;
 * "false" (a refused check-and-set or lock), 403 and anything else are
 * failures, described in msg ("permission denied writing <key>" for 403). */
bool consul_put_result(long status, const char *body, size_t len, const char *key, char *msg,
                       size_t msglen);

#endif
