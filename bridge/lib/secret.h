/* secret.h - wiping secrets (tokens, passwords, private keys, the header
 * lines that carry them) before their memory goes back to the allocator.
 *
 * free() leaves the bytes where they were, and a later core dump or heap
 * read would show them; explicit_bzero is not dropped by the compiler as a
 * dead store. Every function takes NULL and does nothing with it. */
#ifndef CB_SECRET_H
#define CB_SECRET_H

#include <stddef.h>

#include "bridge/lib/buf.h"

/* Overwrite len bytes at p with zeros. */
void secret_wipe(void *p, size_t len);
/* Wipe a NUL-terminated secret, then free it. */
void secret_free(char *s);
/* Wipe len bytes (a secret that may hold NULs, e.g. a PEM key), then free. */
void secret_free_len(void *p, size_t len);
/* Wipe all a buffer ever held (its whole allocation), then free it. */
void secret_buf_free(buf_t *b);

#endif
