/* config_rules.c - the configuration rules that involve more than one key,
 * checked on the filled struct config after the schema walk (which checks
 * each value's type only): exclusive keys, URL shapes, source auth and TLS
 * combinations, bounds, the leader election timings; then file keys naming
 * ${CREDENTIALS_DIRECTORY} are expanded. Each message names the line where
 * the key it complains about was set (or the file, for a default). */
#include "bridge/config_internal.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/url.h"
#include "bridge/lib/yamlnode.h"

/* Line where the key at path was set, 0 when it kept its default. */
static int key_line(const struct config_parse *p, const char *path) {
    for (size_t i = 0; i < p->n_keys; i++)
        if (!strcmp(p->keys[i].path, path))
            return p->keys[i].line;
    return 0;
}

static bool key_set(const struct config_parse *p, const char *path) {
    return key_line(p, path) > 0;
}

/* "NAME:LINE: path: message" with the line where path was set. */
__attribute__((format(printf, 3, 4))) static int invalid(struct config_parse *p, const char *path,
                                                         const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return config_fail(p, key_line(p, path), "%s: %s", path, msg);
}

static bool has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_dns_label(const char *s, size_t len) {
    if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

/* DNS-1123 subdomain: what Kubernetes accepts as an object name. */
static bool is_dns_subdomain(const char *s) {
    size_t len = strlen(s);
    if (len == 0 || len > 253)
        return false;
    for (const char *label = s;;) {
        const char *dot = strchr(label, '.');
        size_t n = dot ? (size_t)(dot - label) : strlen(label);
        if (!is_dns_label(label, n))
            return false;
        if (!dot)
            return true;
        label = dot + 1;
    }
}

/* "host:port", "[v6]:port" or ":port"; "" disables the server. */
static bool is_listen_address(const char *s) {
    if (!*s)
        return true;
    const char *colon = strrchr(s, ':');
    if (!colon || !config_all_digits(colon + 1) || strlen(colon + 1) > 5 || atoi(colon + 1) < 1 ||
        atoi(colon + 1) > 65535)
        return false;
    if (s[0] == '[')
        return colon > s + 1 && colon[-1] == ']';
    return memchr(s, ':', (size_t)(colon - s)) == NULL; /* bare IPv6 needs brackets */
}

static int check_prefix(struct config_parse *p) {
    const char *prefix = p->cfg->source.prefix;
    size_t len = strlen(prefix);
    if (len == 0)
        return invalid(p, "source.prefix", "must not be empty");
    if (prefix[0] == '/')
        return invalid(p, "source.prefix",
                       "must not start with '/' (write 'canary/', not "
                       "'/canary/')");
    if (prefix[len - 1] != '/')
        return invalid(p, "source.prefix",
                       "must end with '/' so it names a folder (e.g. 'canary/')");
    return 0;
}

static int check_urls(struct config_parse *p) {
    const struct config *c = p->cfg;
    if (c->source.n_endpoints == 0)
        return invalid(p, "source.endpoints", "needs at least one URL");
    for (size_t i = 0; i < c->source.n_endpoints; i++)
        if (!url_is_http(c->source.endpoints[i]))
            return invalid(p, "source.endpoints",
                           "entry %zu is not an http:// or https:// URL with a host", i);
    if (!url_is_http(c->source.address))
        return invalid(p, "source.address", "must be an http:// or https:// URL with a host");
    return 0;
}

/* Settings of the other source type would be ignored without a word: refuse
 * them so that a token meant for Consul is not believed to protect etcd. */
static int check_source_type_keys(struct config_parse *p) {
    static const char *const etcd_only[] = {"source.username", "source.password",
                                            "source.password_file", "source.liveness_check", NULL};
    static const char *const consul_only[] = {"source.token", "source.token_file",
                                              "source.datacenter", NULL};
    bool etcd = p->cfg->source.type == SOURCE_ETCD;
    const char *const *other = etcd ? consul_only : etcd_only;
    for (; *other; other++)
        if (key_set(p, *other))
            return invalid(p, *other, "only applies to source.type %s (source.type is %s)",
                           etcd ? "consul" : "etcd", etcd ? "etcd" : "consul");
    return 0;
}

static int check_source_auth(struct config_parse *p) {
    const struct config *c = p->cfg;
    if (c->source.password && c->source.password_file)
        return invalid(p, "source.password_file", "cannot be used together with source.password");
    if (c->source.token && c->source.token_file)
        return invalid(p, "source.token_file", "cannot be used together with source.token");
    bool has_password = c->source.password || c->source.password_file;
    if (c->source.username && !has_password)
        return invalid(p, "source.username", "needs source.password or source.password_file");
    if (!c->source.username && has_password)
        return invalid(p, c->source.password ? "source.password" : "source.password_file",
                       "needs source.username");
    return 0;
}

static bool source_uses_https(const struct config *c) {
    if (c->source.type == SOURCE_CONSUL)
        return url_scheme(c->source.address) == URL_HTTPS;
    for (size_t i = 0; i < c->source.n_endpoints; i++)
        if (url_scheme(c->source.endpoints[i]) == URL_HTTPS)
            return true;
    return false;
}

static int check_source_tls(struct config_parse *p) {
    const struct tls_files *t = &p->cfg->source.tls;
    if (t->cert_file && !t->key_file)
        return invalid(p, "source.tls.cert_file", "needs source.tls.key_file");
    if (t->key_file && !t->cert_file)
        return invalid(p, "source.tls.key_file", "needs source.tls.cert_file");
    if ((t->ca_file || t->cert_file || t->insecure_skip_verify) && !source_uses_https(p->cfg)) {
        const char *which = t->ca_file     ? "source.tls.ca_file"
                            : t->cert_file ? "source.tls.cert_file"
                                           : "source.tls.insecure_skip_verify";
        return invalid(p, which, "is set, but the source is not reached over https://");
    }
    return 0;
}

static int check_source(struct config_parse *p) {
    if (check_prefix(p) < 0 || check_urls(p) < 0 || check_source_type_keys(p) < 0 ||
        check_source_auth(p) < 0 || check_source_tls(p) < 0)
        return -1;
    /* Consul caps blocking queries at 10m; a 0 wait would spin. */
    uint64_t wait = p->cfg->source.wait_ms;
    if (wait < 1000 || wait > 10 * 60 * 1000)
        return invalid(p, "source.wait", "must be between 1s and 10m");
    uint64_t live = p->cfg->source.liveness_ms;
    if (live != 0 && (live < 1000 || live > 10 * 60 * 1000))
        return invalid(p, "source.liveness_check", "must be 0 (off) or between 1s and 10m");
    return 0;
}

/* In the kubernetes section "" means the same as unset (the commented
 * example in conf/bridge.yaml writes `context: ""`), so these checks look at
 * non-empty values only. */
static bool is_set(const char *s) {
    return s && *s;
}

static int check_kubernetes(struct config_parse *p) {
    const struct config *c = p->cfg;
    bool server = is_set(c->kubernetes.server);
    if (c->kubernetes.field_manager) {
        /* The API server's rule: at most 128 printable characters. */
        const char *fm = c->kubernetes.field_manager;
        size_t n = strlen(fm);
        bool printable = n > 0 && n <= 128;
        for (const unsigned char *q = (const unsigned char *)fm; printable && *q; q++)
            printable = *q >= 0x20 && *q < 0x7f;
        if (!printable)
            return invalid(p, "kubernetes.field_manager",
                           "must be 1 to 128 printable ASCII characters");
    }
    if (c->kubernetes.in_cluster && server)
        return invalid(p, "kubernetes.server", "cannot be used together with in_cluster: true");
    if (c->kubernetes.in_cluster || server) {
        const char *mode = server ? "kubernetes.server" : "in_cluster: true";
        if (is_set(c->kubernetes.kubeconfig))
            return invalid(p, "kubernetes.kubeconfig", "cannot be used together with %s", mode);
        if (is_set(c->kubernetes.context))
            return invalid(p, "kubernetes.context", "cannot be used together with %s", mode);
    }
    if (server && !url_is_http(c->kubernetes.server))
        return invalid(p, "kubernetes.server", "must be an https:// (or http://) URL with a host");
    if (!server) {
        if (is_set(c->kubernetes.token_file))
            return invalid(p, "kubernetes.token_file", "only applies with kubernetes.server");
        if (is_set(c->kubernetes.ca_file))
            return invalid(p, "kubernetes.ca_file", "only applies with kubernetes.server");
        if (c->kubernetes.insecure_skip_verify)
            return invalid(p, "kubernetes.insecure_skip_verify",
                           "only applies with kubernetes.server");
    }
    return 0;
}

static int check_reconcile(struct config_parse *p) {
    const struct config *c = p->cfg;
    if (c->reconcile.resync_ms != 0 && c->reconcile.resync_ms < 1000)
        return invalid(p, "reconcile.resync", "must be 0 (off) or at least 1s");
    if (c->reconcile.max_in_flight == 0)
        return invalid(p, "reconcile.max_in_flight", "must be at least 1");
    /* A hold longer than this is an outage, not a burst being settled. */
    if (c->reconcile.burst_hold_ms > 5 * 60 * 1000)
        return invalid(p, "reconcile.burst_hold", "must be at most 5m (0 = off)");
    if (c->reconcile.burst_quiet_ms == 0 || c->reconcile.burst_quiet_ms > 60 * 1000)
        return invalid(p, "reconcile.burst_quiet", "must be between 1ms and 1m");
    if (c->reconcile.max_delete_percent > 100)
        return invalid(p, "reconcile.max_delete_percent", "must be between 0 and 100");
    if (c->reconcile.max_step > 100)
        return invalid(p, "reconcile.max_step", "must be between 0 (no limit) and 100");
    if (c->reconcile.object_writes_per_second > 1000)
        return invalid(p, "reconcile.object_writes_per_second",
                       "must be at most 1000 (0 = unlimited)");
    if (c->reconcile.retry_min_ms == 0)
        return invalid(p, "reconcile.retry_min", "must be at least 1ms");
    if (c->reconcile.retry_max_ms > 60 * 60 * 1000)
        return invalid(p, "reconcile.retry_max", "must be at most 1h");
    if (c->reconcile.retry_min_ms > c->reconcile.retry_max_ms)
        return invalid(
            p, key_set(p, "reconcile.retry_min") ? "reconcile.retry_min" : "reconcile.retry_max",
            "retry_min must be at most retry_max");
    for (size_t i = 0; i < c->reconcile.n_namespaces; i++) {
        const char *ns = c->reconcile.namespaces[i];
        if (!is_dns_label(ns, strlen(ns)))
            return invalid(p, "reconcile.namespaces",
                           "entry %zu is not a valid namespace name (lowercase letters, digits "
                           "and '-', at most 63)",
                           i);
    }
    if (!is_listen_address(c->server.listen))
        return invalid(p, "server.listen", "must be host:port, [ipv6]:port, :port or \"\"");
    return 0;
}

/* Longest accepted leader election duration. A lease held for hours means
 * hours without a writer after a crash, so anything longer is a mistake; the
 * bound also keeps everything computed from these values (deadlines as
 * now + duration in milliseconds, the Lease's leaseDurationSeconds, an int)
 * far from overflow. */
#define LEADER_DURATION_MAX_MS (60 * 60 * 1000ULL)

/* The client-go rules: the leader must renew before the lease runs out, and
 * retries (jittered by up to 1.2x) must fit in the renew deadline. */
static int check_leader_election(struct config_parse *p) {
    const struct config *c = p->cfg;
    uint64_t lease = c->leader_election.lease_duration_ms;
    uint64_t renew = c->leader_election.renew_deadline_ms;
    uint64_t retry = c->leader_election.retry_period_ms;
    if (!is_dns_label(c->leader_election.namespace, strlen(c->leader_election.namespace)))
        return invalid(p, "leader_election.namespace", "is not a valid namespace name");
    if (!is_dns_subdomain(c->leader_election.name))
        return invalid(p, "leader_election.name", "is not a valid Kubernetes object name");
    if (c->leader_election.identity && !*c->leader_election.identity)
        return invalid(p, "leader_election.identity",
                       "must not be empty (omit it for the "
                       "hostname)");
    static const char *const keys[] = {"leader_election.lease_duration",
                                       "leader_election.renew_deadline",
                                       "leader_election.retry_period"};
    const uint64_t values[] = {lease, renew, retry};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (values[i] > LEADER_DURATION_MAX_MS)
            return invalid(p, keys[i], "must be at most 1h");
    if (retry == 0)
        return invalid(p, "leader_election.retry_period", "must be more than 0");
    if (lease <= renew)
        return invalid(p,
                       key_set(p, "leader_election.lease_duration")
                           ? "leader_election.lease_duration"
                           : "leader_election.renew_deadline",
                       "lease_duration must be longer than renew_deadline");
    /* renew > 1.2 x retry, i.e. 5 renew > 6 retry, without multiplying (which
     * wrapped and let huge values through): for whole numbers that is renew >
     * retry + floor(retry / 5). Exact for any values; the bound above is not
     * relied on. */
    uint64_t fifth = retry / 5;
    if (fifth > UINT64_MAX - retry || renew <= retry + fifth)
        return invalid(p,
                       key_set(p, "leader_election.renew_deadline")
                           ? "leader_election.renew_deadline"
                           : "leader_election.retry_period",
                       "renew_deadline must be longer than 1.2 x retry_period");
    return 0;
}

/* systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY, a path
 * only known at run time: file keys may start with ${CREDENTIALS_DIRECTORY}/
 * (or $CREDENTIALS_DIRECTORY/) and it is filled in here. */
static int expand_credentials(struct config_parse *p, const char *path, char **value) {
    static const char *const forms[] = {"${CREDENTIALS_DIRECTORY}/", "$CREDENTIALS_DIRECTORY/"};
    for (size_t i = 0; *value && i < sizeof forms / sizeof forms[0]; i++) {
        if (!has_prefix(*value, forms[i]))
            continue;
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        if (!dir || !*dir)
            return invalid(p, path,
                           "names $CREDENTIALS_DIRECTORY, which is not set (it is, for a "
                           "service with LoadCredential=)");
        const char *rest = *value + strlen(forms[i]);
        size_t n = strlen(dir) + 1 + strlen(rest) + 1;
        char *full = malloc(n);
        if (!full)
            return config_fail(p, key_line(p, path), "out of memory");
        snprintf(full, n, "%s/%s", dir, rest);
        free(*value);
        *value = full;
        return 0;
    }
    return 0;
}

static int expand_all_credentials(struct config_parse *p) {
    struct config *c = p->cfg;
    struct {
        const char *path;
        char **value;
    } keys[] = {{"source.password_file", &c->source.password_file},
                {"source.token_file", &c->source.token_file},
                {"source.tls.ca_file", &c->source.tls.ca_file},
                {"source.tls.cert_file", &c->source.tls.cert_file},
                {"source.tls.key_file", &c->source.tls.key_file},
                {"kubernetes.kubeconfig", &c->kubernetes.kubeconfig},
                {"kubernetes.token_file", &c->kubernetes.token_file},
                {"kubernetes.ca_file", &c->kubernetes.ca_file}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (expand_credentials(p, keys[i].path, keys[i].value) < 0)
            return -1;
    return 0;
}

/* traefik.api: where to ask Traefik whether it serves what was written. */
static int check_traefik_api(struct config_parse *p) {
    const struct traefikapi_settings *a = &p->cfg->traefik.api;
    bool pods = key_set(p, "traefik.api.pods.namespace") ||
                key_set(p, "traefik.api.pods.selector") || key_set(p, "traefik.api.pods.port");
    if (a->n_urls && pods)
        return invalid(p, "traefik.api.pods",
                       "give traefik.api.urls or traefik.api.pods, not both");
    for (size_t i = 0; i < a->n_urls; i++)
        if (!url_is_http(a->urls[i]))
            return invalid(p, "traefik.api.urls",
                           "entry %zu is not an http:// or https:// URL with a host", i);
    if (pods && (!a->pods.namespace || !is_dns_label(a->pods.namespace, strlen(a->pods.namespace))))
        return invalid(p, "traefik.api.pods.namespace",
                       "must name the Traefik pods' namespace (lowercase letters, digits and '-')");
    if (pods && !*a->pods.selector)
        return invalid(p, "traefik.api.pods.selector",
                       "must not be empty (e.g. app.kubernetes.io/name=traefik)");
    if (a->pods.port < 1 || a->pods.port > 65535)
        return invalid(p, "traefik.api.pods.port", "must be between 1 and 65535");
    if (a->interval_ms < 10 || a->interval_ms > 60 * 1000)
        return invalid(p, "traefik.api.interval", "must be between 10ms and 1m");
    if (a->request_timeout_ms < 10 || a->request_timeout_ms > 5 * 60 * 1000)
        return invalid(p, "traefik.api.request_timeout", "must be between 10ms and 5m");
    if (a->timeout_ms < a->interval_ms || a->timeout_ms > 60 * 60 * 1000)
        return invalid(p, "traefik.api.timeout",
                       "must be at least traefik.api.interval and at most 1h");
    return 0;
}

int config_rules_check(struct config_parse *p) {
    if (check_source(p) < 0 || check_kubernetes(p) < 0 || check_reconcile(p) < 0 ||
        check_traefik_api(p) < 0 || check_leader_election(p) < 0 || expand_all_credentials(p) < 0)
        return -1;
    return 0;
}
