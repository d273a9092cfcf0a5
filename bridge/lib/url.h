/* url.h - the checks every configured server URL goes through (the config
 * file's source endpoints and address, kubeconfig servers), and the one
 * rule for appending a path to such a URL. */
#ifndef CB_URL_H
#define CB_URL_H

#include <stdbool.h>
#include <stddef.h>

enum url_scheme {
    URL_OTHER, /* anything else, NULL included */
    URL_HTTP,  /* starts with "http://" */
    URL_HTTPS, /* starts with "https://" */
};

/* The scheme of s, by its prefix alone (case-sensitive, as curl reads it). */
enum url_scheme url_scheme(const char *s);

/* http:// or https://, a host, and nothing that could split a request line
 * (no control byte, no space). */
bool url_is_http(const char *s);

/* The length of s without its trailing '/'s: where a path starting with '/'
 * is appended, so "http://h:2379/" + "/v3/watch" does not double it. */
size_t url_base_len(const char *s);

#endif
