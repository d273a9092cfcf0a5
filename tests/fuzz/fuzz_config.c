/* fuzz_config.c - config_parse (bridge/config.c): the daemon's YAML
 * configuration, and parse_duration_ms, which reads every duration in it.
 *
 * Invariants beyond "no crash, no sanitizer report":
 *  - on failure: -1, a message starting with the file name, *cfg zeroed;
 *  - on success, every rule of conf/bridge.yaml and config.h holds on the
 *    result (the checks config_rules.c runs must not be bypassable): URLs,
 *    prefix shape, enum values, wait 1s..10m, resync 0 or >= 1s,
 *    max_in_flight >= 1, namespaces are DNS labels, auth and TLS
 *    combinations, the client-go leader election rules computed without
 *    overflow;
 *  - source.password and source.token values never appear in a message;
 *  - parse_duration_ms agrees with an exact (128-bit) reference reading of
 *    the same grammar: it accepts exactly what fits in 64 bits, with the
 *    right value (the whole input is tried as a duration when short).
 *
 * (Former known bugs leader-overflow and duration-overflow are fixed; see
 * regressions/config/.) */
#include "fuzz_common.h"
#include "fuzz_secrets.h"

#include "bridge/config.h"
#include "bridge/lib/duration.h"

typedef unsigned __int128 u128;

static bool http_url(const char *s) {
    const char *rest = !strncmp(s, "http://", 7)    ? s + 7
                       : !strncmp(s, "https://", 8) ? s + 8
                                                    : NULL;
    if (!rest || !*rest || *rest == '/' || *rest == ':')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return false;
    return true;
}

static bool dns_label(const char *s) {
    size_t n = strlen(s);
    return n >= 1 && n <= 63 && s[0] != '-' && s[n - 1] != '-' &&
           strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

static bool one_of(const char *s, const char *const *set) {
    for (; *set; set++)
        if (s && !strcmp(s, *set))
            return true;
    return false;
}

static bool is_https(const char *s) {
    return !strncmp(s, "https://", 8);
}

static void check_config(const struct config *c) {
    static const char *const consistency[] = {"default", "stale", "consistent", NULL};
    static const char *const groups[] = {"traefik.io", "traefik.containo.us", "auto", NULL};
    FUZZ_CHECK(c->path && !strcmp(c->path, "fuzz.yaml"), "path");
    FUZZ_CHECK(c->source.type == SOURCE_ETCD || c->source.type == SOURCE_CONSUL, "source.type");
    FUZZ_CHECK(c->source.n_endpoints >= 1 && c->source.endpoints, "no endpoints");
    bool https = c->source.type == SOURCE_CONSUL && is_https(c->source.address);
    for (size_t i = 0; i < c->source.n_endpoints; i++) {
        FUZZ_CHECK(http_url(c->source.endpoints[i]), "endpoint %zu", i);
        https |= c->source.type == SOURCE_ETCD && is_https(c->source.endpoints[i]);
    }
    FUZZ_CHECK(c->source.address && http_url(c->source.address), "address");
    size_t plen = strlen(c->source.prefix);
    FUZZ_CHECK(plen && c->source.prefix[0] != '/' && c->source.prefix[plen - 1] == '/',
               "prefix '%s'", c->source.prefix);
    FUZZ_CHECK(c->source.wait_ms >= 1000 && c->source.wait_ms <= 600000, "wait %llu",
               (unsigned long long)c->source.wait_ms);
    FUZZ_CHECK(one_of(c->source.consistency, consistency), "consistency");
    /* Settings of the other source type are refused. */
    if (c->source.type == SOURCE_ETCD)
        FUZZ_CHECK(!c->source.token && !c->source.token_file && !c->source.datacenter,
                   "consul settings with etcd");
    else
        FUZZ_CHECK(!c->source.username && !c->source.password && !c->source.password_file,
                   "etcd settings with consul");
    FUZZ_CHECK(!(c->source.password && c->source.password_file), "password and password_file");
    FUZZ_CHECK(!(c->source.token && c->source.token_file), "token and token_file");
    FUZZ_CHECK(!c->source.username == !(c->source.password || c->source.password_file),
               "username without password or the reverse");
    const struct tls_files *t = &c->source.tls;
    FUZZ_CHECK(!t->cert_file == !t->key_file, "cert_file without key_file or the reverse");
    FUZZ_CHECK(https || !(t->ca_file || t->cert_file || t->insecure_skip_verify),
               "TLS settings for a plain http source");

    bool server = c->kubernetes.server && c->kubernetes.server[0];
    FUZZ_CHECK(!(server && c->kubernetes.in_cluster), "server with in_cluster");
    if (server)
        FUZZ_CHECK(http_url(c->kubernetes.server), "kubernetes.server");
    if (server || c->kubernetes.in_cluster)
        FUZZ_CHECK(!(c->kubernetes.kubeconfig && c->kubernetes.kubeconfig[0]) &&
                       !(c->kubernetes.context && c->kubernetes.context[0]),
                   "kubeconfig/context with server or in_cluster");
    else
        FUZZ_CHECK(!(c->kubernetes.token_file && c->kubernetes.token_file[0]) &&
                       !(c->kubernetes.ca_file && c->kubernetes.ca_file[0]) &&
                       !c->kubernetes.insecure_skip_verify,
                   "server-only settings without server");

    FUZZ_CHECK(one_of(c->traefik.api_group, groups), "api_group");
    FUZZ_CHECK(c->traefik.rule_syntax == RULE_SYNTAX_V3 || c->traefik.rule_syntax == RULE_SYNTAX_V2,
               "rule_syntax");
    FUZZ_CHECK(c->reconcile.policy == POLICY_UPSERT_ONLY || c->reconcile.policy == POLICY_SYNC,
               "policy");
    FUZZ_CHECK(c->reconcile.resync_ms == 0 || c->reconcile.resync_ms >= 1000, "resync");
    FUZZ_CHECK(c->reconcile.max_in_flight >= 1, "max_in_flight");
    for (size_t i = 0; i < c->reconcile.n_namespaces; i++)
        FUZZ_CHECK(dns_label(c->reconcile.namespaces[i]), "namespace %zu", i);
    FUZZ_CHECK(c->server.listen, "listen");
    FUZZ_CHECK(c->log.level >= LOG_LVL_ERROR && c->log.level <= LOG_LVL_DEBUG, "log level");

    const char *ns = c->leader_election.namespace, *name = c->leader_election.name;
    FUZZ_CHECK(ns && dns_label(ns), "leader_election.namespace");
    FUZZ_CHECK(name && name[0] && strlen(name) <= 253, "leader_election.name");
    FUZZ_CHECK(!c->leader_election.identity || c->leader_election.identity[0], "identity");
    u128 lease = c->leader_election.lease_duration_ms;
    u128 renew = c->leader_election.renew_deadline_ms;
    u128 retry = c->leader_election.retry_period_ms;
    FUZZ_CHECK(retry > 0, "retry_period 0");
    FUZZ_CHECK(lease > renew, "lease_duration %llu <= renew_deadline %llu",
               (unsigned long long)lease, (unsigned long long)renew);
    FUZZ_CHECK(renew * 10 > retry * 12,
               "renew_deadline %llu is not longer than 1.2 x retry_period %llu (a 64-bit "
               "overflow let it through)",
               (unsigned long long)renew, (unsigned long long)retry);
}

/* ---- durations: the exact reference ------------------------------------ */

/* One term "<digits>[.<digits>]<unit>"; false when malformed. Values are
 * exact: anything over 2^64 is clamped to 2^64 + 1, which is enough to
 * know it does not fit. */
static bool ref_term(const char **s, u128 *total) {
    const u128 big = (u128)UINT64_MAX + 2;
    u128 whole = 0, frac = 0, scale = 1;
    bool digits = false;
    for (; **s >= '0' && **s <= '9'; (*s)++, digits = true) {
        whole = whole * 10 + (u128)(**s - '0');
        if (whole > big)
            whole = big;
    }
    if (**s == '.') {
        for ((*s)++; **s >= '0' && **s <= '9'; (*s)++, digits = true) {
            if (scale >= 1000000000)
                return false; /* parse_duration_ms reads at most nine decimals */
            frac = frac * 10 + (u128)(**s - '0');
            scale *= 10;
        }
    }
    if (!digits)
        return false;
    u128 unit = !strncmp(*s, "ms", 2) ? 1
                : **s == 's'          ? 1000
                : **s == 'm'          ? 60000
                : **s == 'h'          ? 3600000
                                      : 0;
    if (!unit)
        return false;
    *s += unit == 1 ? 2 : 1;
    if ((frac * unit) % scale != 0)
        return false; /* not a whole number of milliseconds */
    *total += whole * unit + frac * unit / scale;
    if (*total > big)
        *total = big;
    return true;
}

static void check_duration(const uint8_t *data, size_t size) {
    if (size == 0 || size > 64 || memchr(data, '\0', size))
        return;
    char *s = fuzz_strndup(data, size);
    uint64_t got = 0;
    int rc = parse_duration_ms(s, &got);
    bool ok = true;
    u128 want = 0;
    if (strcmp(s, "0") != 0) {
        for (const char *p = s; *p && ok;)
            ok = ref_term(&p, &want);
    }
    bool fits = ok && want <= UINT64_MAX;
    FUZZ_CHECK((rc == 0) == fits, "'%s': parse_duration_ms rc %d, reference %s", s, rc,
               !ok    ? "malformed"
               : fits ? "fits"
                      : "overflows 64 bits");
    if (fits)
        FUZZ_CHECK(got == (uint64_t)want, "'%s': %llu ms, reference %llu ms", s,
                   (unsigned long long)got, (unsigned long long)want);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct config cfg, zero;
    memset(&zero, 0, sizeof zero);
    char err[512] = "";
    int rc = config_parse((const char *)data, size, "fuzz.yaml", &cfg, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1, "rc %d", rc);
        FUZZ_CHECK(!strncmp(err, "fuzz.yaml:", 10), "message does not name the file: '%s'", err);
        FUZZ_CHECK(!memcmp(&cfg, &zero, sizeof cfg), "cfg not zeroed on failure");
        static const char *const secret_keys[] = {"password", "token", NULL};
        struct secrets sec;
        secrets_collect(data, size, secret_keys, "fuzz.yaml", &sec);
        secrets_check(&sec, err);
        secrets_free(&sec);
    } else {
        check_config(&cfg);
        config_free(&cfg);
    }
    check_duration(data, size);
    return 0;
}
