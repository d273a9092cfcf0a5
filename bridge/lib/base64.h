/* base64.h - the standard base64 alphabet (RFC 4648 section 4), as Go
 * encodes []byte fields in JSON: etcd's gRPC gateway keys and values, Consul's
 * KV Value, kubeconfig *-data fields and ExecCredential cluster info.
 *
 * One implementation for all of them. A byte outside the alphabet, or padding
 * anywhere but at the end, is always an error. Two rules differ between the
 * producers, so the caller picks them: Go's StdEncoding decoder skips CR and
 * LF (a kubeconfig's data may be wrapped) but wants its padding; the
 * grpc-gateway's protojson accepts input without padding. */
#ifndef CB_BASE64_H
#define CB_BASE64_H

#include <stddef.h>

/* Padded encoding. Returns a heap NUL-terminated string, or NULL on ENOMEM
 * or a length that would overflow. */
char *base64_encode(const void *data, size_t len);

enum base64_flags {
    BASE64_PAD_OPTIONAL = 1 << 0, /* accept input without its trailing '=' */
    BASE64_SKIP_NEWLINES = 1 << 1 /* ignore CR and LF anywhere */
};

/* Decode in[0..inlen). *out is heap and NUL-terminated (data may hold NULs:
 * use *outlen). Returns 0, or -1 on bad input or ENOMEM (*out is then NULL). */
int base64_decode(const char *in, size_t inlen, unsigned flags, char **out, size_t *outlen);

#endif
