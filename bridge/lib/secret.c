/* secret.c - wiping secrets before freeing them; see secret.h. */
#include "bridge/lib/secret.h"

#include <stdlib.h>
#include <string.h>

void secret_wipe(void *p, size_t len) {
    if (p)
        explicit_bzero(p, len);
}

void secret_free(char *s) {
    if (s)
        secret_free_len(s, strlen(s));
}

void secret_free_len(void *p, size_t len) {
    secret_wipe(p, len);
    free(p);
}

void secret_buf_free(buf_t *b) {
    secret_wipe(b->data, b->cap);
    buf_free(b);
}
