/* base64.c - standard base64 encode/decode; see base64.h for the rules. */
#include "bridge/lib/base64.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *base64_encode(const void *data, size_t len) {
    const unsigned char *in = data;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? alphabet[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

static int digit(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int base64_decode(const char *in, size_t inlen, unsigned flags, char **out, size_t *outlen) {
    bool pad_optional = flags & BASE64_PAD_OPTIONAL;
    *out = NULL;
    *outlen = 0;
    char *res = malloc(inlen / 4 * 3 + 4);
    if (!res)
        return -1;
    uint32_t acc = 0;
    size_t o = 0, n = 0, pad = 0;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if ((c == '\n' || c == '\r') && (flags & BASE64_SKIP_NEWLINES))
            continue;
        int d = digit(c);
        if (c == '=' && n % 4 >= 2) {
            pad++;
            d = 0;
        } else if (d < 0 || pad) {
            goto bad; /* a foreign byte, or data after padding */
        }
        acc = acc << 6 | (uint32_t)d;
        if (++n % 4 == 0) {
            res[o++] = (char)(acc >> 16);
            res[o++] = (char)(acc >> 8);
            res[o++] = (char)acc;
            acc = 0;
        }
    }
    switch (n % 4) {
    case 0: break;
    case 2: /* unpadded: one byte in the last 12 bits */
        if (!pad_optional || pad)
            goto bad;
        res[o++] = (char)(acc >> 4);
        break;
    case 3: /* unpadded: two bytes in the last 18 bits */
        if (!pad_optional || pad)
            goto bad;
        res[o++] = (char)(acc >> 10);
        res[o++] = (char)(acc >> 2);
        break;
    default: goto bad;
    }
    o -= pad;
    res[o] = '\0';
    *out = res;
    *outlen = o;
    return 0;
bad:
    free(res);
    return -1;
}
