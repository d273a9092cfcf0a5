/* headers.c - the `headers` key: header and cookie rules that send matching
 * requests to one service, with headers to set on the way (see model.h,
 * struct model_rule). */
#include "bridge/lib/value.h"
#include "bridge/model/parse.h"
#include "bridge/model/regex_check.h"

/* ---- checks on text ----------------------------------------------------- */

/* RFC 6265 cookie-octet, minus the backtick. */
static bool cookie_value_ok(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' || c == '`')
            return false;
    }
    return true;
}

/* Characters that would break out of a Traefik rule literal or a header. */
static bool rule_text_ok(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '`')
            return false;
    }
    return true;
}

/* ---- one rule ----------------------------------------------------------- */

static int kv_list(const cJSON *v, const char *field, struct model_kv **out, size_t *n, char *r) {
    char s[SHOWN_MAX + 4];
    if (!v)
        return 0;
    if (!cJSON_IsObject(v)) {
        why(r, "'%s' must be a mapping of header name to value", field);
        return -1;
    }
    size_t cnt = (size_t)cJSON_GetArraySize(v);
    if (!(*out = calloc(cnt ? cnt : 1, sizeof **out))) {
        why(r, "out of memory");
        return -1;
    }
    for (const cJSON *c = v->child; c; c = c->next) {
        if (!http_token(c->string)) {
            why(r, "'%s': '%s' is not a valid header name", field, shown(c->string, s));
            return -1;
        }
        if (!cJSON_IsString(c) || !rule_text_ok(c->valuestring)) {
            why(r,
                "'%s': the value of '%s' must be a string without backticks or control "
                "characters",
                field, c->string);
            return -1;
        }
        struct model_kv *kv = &(*out)[(*n)++];
        kv->key = strdup(c->string);
        kv->value = strdup(c->valuestring);
        if (!kv->key || !kv->value) {
            why(r, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Optional string field: NULL when absent; -1 when present but not a string. */
static int opt_string(const cJSON *rule, const char *field, const char **out, char *r) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rule, field);
    *out = NULL;
    if (!v)
        return 0;
    if (!cJSON_IsString(v)) {
        why(r, "'%s' must be a string (quote it)", field);
        return -1;
    }
    *out = v->valuestring;
    return 0;
}

struct rule_text {
    const char *name, *header, *cookie, *value, *regex, *service;
};

static int rule_strings(const cJSON *v, struct rule_text *t, char *r) {
    static const char *const fields[] = {"name",
                                         "header",
                                         "cookie",
                                         "value",
                                         "regex",
                                         "service",
                                         "setRequestHeaders",
                                         "setResponseHeaders",
                                         NULL};
    if (!cJSON_IsObject(v)) {
        why(r, "must be a mapping (header or cookie, value or regex, service)");
        return -1;
    }
    if (known_fields(v, fields, "", r) < 0 || opt_string(v, "name", &t->name, r) < 0 ||
        opt_string(v, "header", &t->header, r) < 0 || opt_string(v, "cookie", &t->cookie, r) < 0 ||
        opt_string(v, "value", &t->value, r) < 0 || opt_string(v, "regex", &t->regex, r) < 0 ||
        opt_string(v, "service", &t->service, r) < 0)
        return -1;
    return 0;
}

static int rule_matcher_check(const struct rule_text *t, char *r) {
    char s[SHOWN_MAX + 4];
    if (!t->header == !t->cookie) {
        why(r, "needs exactly one of 'header' or 'cookie'");
        return -1;
    }
    if (t->header && !http_token(t->header)) {
        why(r, "'%s' is not a valid header name (RFC 7230 token)", shown(t->header, s));
        return -1;
    }
    if (t->cookie && !http_token(t->cookie)) {
        why(r, "'%s' is not a valid cookie name (RFC 6265 token)", shown(t->cookie, s));
        return -1;
    }
    if (t->cookie && (t->regex || !t->value)) {
        why(r, "a cookie rule needs 'value' (and no 'regex')");
        return -1;
    }
    if (t->header && !t->value == !t->regex) {
        why(r, "a header rule needs exactly one of 'value' or 'regex'");
        return -1;
    }
    if ((t->value && !rule_text_ok(t->value)) || (t->regex && !rule_text_ok(t->regex))) {
        why(r, "'%s' must not contain backticks or control characters",
            t->value ? "value" : "regex");
        return -1;
    }
    if (t->cookie && !cookie_value_ok(t->value)) {
        why(r, "cookie value has characters a cookie cannot carry (space \" , ; \\)");
        return -1;
    }
    if (t->regex && !t->regex[0]) {
        why(r, "'regex' is empty (it would match every request)");
        return -1;
    }
    return t->regex ? regex_check(t->regex, r, sizeof(reason_t)) : 0;
}

static char *rule_name(const struct rule_text *t, size_t idx, bool *oom) {
    char def[32];
    snprintf(def, sizeof def, "h%zu", idx);
    return dup_or_null(t->name ? t->name : def, oom);
}

static int rule_fill(struct model_rule *mr, const struct rule_text *t, size_t idx) {
    bool oom = false;
    mr->name = rule_name(t, idx, &oom);
    mr->kind = t->header ? RULE_HEADER : RULE_COOKIE;
    mr->header = dup_or_null(t->header ? t->header : t->cookie, &oom);
    mr->value = t->value ? dup_or_null(t->value, &oom) : NULL;
    mr->regex = t->regex ? dup_or_null(t->regex, &oom) : NULL;
    mr->service = dup_or_null(t->service, &oom);
    return oom ? -1 : 0;
}

static int rule_parse(const cJSON *v, size_t idx, struct model_route *rt, char *r) {
    struct rule_text t = {0};
    char s[SHOWN_MAX + 4];
    if (rule_strings(v, &t, r) < 0 || rule_matcher_check(&t, r) < 0)
        return -1;
    if (t.name && !model_dns1123_label(t.name)) {
        why(r, "'name' must be a DNS-1123 label, got '%s'", shown(t.name, s));
        return -1;
    }
    if (!t.service || !model_service_find(rt, t.service)) {
        why(r, "'service' is required and must be one of the route's services%s%s%s",
            t.service ? ", got '" : "", t.service ? shown(t.service, s) : "", t.service ? "'" : "");
        return -1;
    }
    struct model_rule *mr = &rt->rules[idx];
    rt->n_rules = idx + 1;
    if (rule_fill(mr, &t, idx) < 0) {
        why(r, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < idx; i++) {
        if (!strcmp(rt->rules[i].name, mr->name)) {
            why(r, "duplicate rule name '%s'", mr->name);
            return -1;
        }
    }
    if (kv_list(cJSON_GetObjectItemCaseSensitive(v, "setRequestHeaders"), "setRequestHeaders",
                &mr->set_request, &mr->n_set_request, r) < 0 ||
        kv_list(cJSON_GetObjectItemCaseSensitive(v, "setResponseHeaders"), "setResponseHeaders",
                &mr->set_response, &mr->n_set_response, r) < 0)
        return -1;
    return 0;
}

/* ---- the list ----------------------------------------------------------- */

int model_headers_parse(const char *text, size_t len, struct model_route *rt, char *r) {
    char perr[256];
    cJSON *doc = value_parse(text, len, perr, sizeof perr);
    if (!doc) {
        why(r, "%s", perr);
        return -1;
    }
    int rc = 0;
    size_t cnt = cJSON_IsArray(doc) ? (size_t)cJSON_GetArraySize(doc) : 0;
    if (!cJSON_IsArray(doc)) {
        why(r, "headers must be a list of rules");
        rc = -1;
    } else if (!(rt->rules = calloc(cnt ? cnt : 1, sizeof *rt->rules))) {
        why(r, "out of memory");
        rc = -1;
    }
    size_t i = 0;
    for (const cJSON *c = rc ? NULL : doc->child; c; c = c->next, i++) {
        reason_t inner;
        if (rule_parse(c, i, rt, inner) < 0) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(c, "name");
            char s[SHOWN_MAX + 4];
            if (cJSON_IsString(nm))
                why(r, "rule %zu ('%s'): %s", i, shown(nm->valuestring, s), inner);
            else
                why(r, "rule %zu: %s", i, inner);
            rc = -1;
            break;
        }
    }
    cJSON_Delete(doc);
    return rc;
}
