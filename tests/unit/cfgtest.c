/* cfgtest.c - what the configuration tests expect of a parse; see
 * cfgtest.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <string.h>

#include "cfgtest.h"

int cfgtest_parse(const char *yaml, struct config *cfg, char *err) {
    return config_parse(yaml, strlen(yaml), "t.yaml", cfg, err, CFGTEST_ERRLEN);
}

void cfgtest_zeroed(const struct config *cfg) {
    struct config zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(cfg, &zero, sizeof zero);
}

/* The error must be exactly `want`, and the config left zeroed. */
void cfgtest_error(const char *yaml, const char *want) {
    struct config cfg;
    char err[CFGTEST_ERRLEN];
    memset(&cfg, 0xa5, sizeof cfg);
    if (cfgtest_parse(yaml, &cfg, err) == 0) {
        config_free(&cfg);
        fail_msg("parsed, but expected: %s\n--- input:\n%s", want, yaml);
    }
    assert_string_equal(err, want);
    cfgtest_zeroed(&cfg);
}

/* For long messages (lists of known keys): only the start is fixed. */
void cfgtest_error_start(const char *yaml, const char *want) {
    struct config cfg;
    char err[CFGTEST_ERRLEN];
    if (cfgtest_parse(yaml, &cfg, err) == 0) {
        config_free(&cfg);
        fail_msg("parsed, but expected: %s...\n--- input:\n%s", want, yaml);
    }
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error '%s' does not start with '%s'", err, want);
}

void cfgtest_ok(const char *yaml, struct config *cfg) {
    char err[CFGTEST_ERRLEN] = "";
    if (cfgtest_parse(yaml, cfg, err) != 0)
        fail_msg("unexpected error: %s\n--- input:\n%s", err, yaml);
}
