/* test_base64.c - the base64 codec (bridge/lib/base64.h): the RFC 4648
 * vectors both ways, every byte value round-tripped, and the input the
 * decoder must refuse, under the rule etcd's gateway needs (padding
 * optional). */
/* cmocka.h needs these three before it. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include <stdlib.h>
#include <string.h>

#include "bridge/lib/base64.h"

static void test_b64_vectors(void **state) {
    (void)state;
    /* RFC 4648 section 10. */
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char *e = base64_encode(plain[i], strlen(plain[i]));
        assert_non_null(e);
        assert_string_equal(e, enc[i]);
        free(e);
        char *d;
        size_t dlen;
        assert_int_equal(base64_decode(enc[i], strlen(enc[i]), BASE64_PAD_OPTIONAL, &d, &dlen), 0);
        assert_int_equal(dlen, strlen(plain[i]));
        assert_memory_equal(d, plain[i], dlen);
        assert_int_equal(d[dlen], '\0');
        free(d);
    }
}

static void test_b64_binary_roundtrip(void **state) {
    (void)state;
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    for (size_t len = 0; len <= sizeof all; len += 37) {
        char *e = base64_encode(all, len);
        assert_non_null(e);
        assert_int_equal(strlen(e), (len + 2) / 3 * 4);
        char *d;
        size_t dlen;
        assert_int_equal(base64_decode(e, strlen(e), BASE64_PAD_OPTIONAL, &d, &dlen), 0);
        assert_int_equal(dlen, len);
        assert_memory_equal(d, all, len);
        free(d);
        free(e);
    }
}

static void test_b64_decode_rejects(void **state) {
    (void)state;
    char *d;
    size_t dlen;
    /* Unpadded input is accepted (some writers drop padding). */
    assert_int_equal(base64_decode("Zm8", 3, BASE64_PAD_OPTIONAL, &d, &dlen), 0);
    assert_int_equal(dlen, 2);
    assert_memory_equal(d, "fo", 2);
    free(d);
    assert_int_equal(base64_decode("Zm9v!A==", 8, BASE64_PAD_OPTIONAL, &d, &dlen), -1);
    assert_null(d);
    assert_int_equal(base64_decode("Z", 1, BASE64_PAD_OPTIONAL, &d, &dlen),
                     -1); /* impossible length */
    assert_int_equal(base64_decode("Zm8==", 5, BASE64_PAD_OPTIONAL, &d, &dlen),
                     -1); /* wrong padding */
    assert_int_equal(base64_decode("Zm=v", 4, BASE64_PAD_OPTIONAL, &d, &dlen), -1); /* '=' inside */
    assert_int_equal(base64_decode("Zm9v\n", 5, BASE64_PAD_OPTIONAL, &d, &dlen),
                     -1); /* whitespace */
    assert_int_equal(base64_decode("Zm-_", 4, BASE64_PAD_OPTIONAL, &d, &dlen),
                     -1); /* URL alphabet */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_vectors),
        cmocka_unit_test(test_b64_binary_roundtrip),
        cmocka_unit_test(test_b64_decode_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
