/* url.c - server URL checks; see url.h. */
#include "bridge/lib/url.h"

#include <string.h>

enum url_scheme url_scheme(const char *s) {
    if (s && strncmp(s, "https://", 8) == 0)
        return URL_HTTPS;
    if (s && strncmp(s, "http://", 7) == 0)
        return URL_HTTP;
    return URL_OTHER;
}

bool url_is_http(const char *s) {
    enum url_scheme scheme = url_scheme(s);
    if (scheme == URL_OTHER)
        return false;
    const char *rest = s + (scheme == URL_HTTPS ? 8 : 7);
    if (!*rest || *rest == '/' || *rest == ':')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return false;
    return true;
}

size_t url_base_len(const char *s) {
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '/')
        len--;
    return len;
}
