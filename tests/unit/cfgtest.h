/* cfgtest.h - what the configuration tests expect of a parse, shared by
 * test_config.c (reading and the schema) and test_config_rules.c (the rules
 * across keys).
 *
 * Each helper parses a YAML text with config_parse as the file "t.yaml" and
 * fails the test (cmocka) when the outcome differs, so a test reads as a
 * list of inputs and the exact messages they must give. Include this after
 * <cmocka.h>. */
#ifndef CB_TEST_CFGTEST_H
#define CB_TEST_CFGTEST_H

#include "bridge/config.h"

/* Room for any message a parse gives in these tests. */
#define CFGTEST_ERRLEN 1024

/* config_parse of yaml as "t.yaml", the message (if any) into err, which
 * holds CFGTEST_ERRLEN bytes. Returns config_parse's result. */
int cfgtest_parse(const char *yaml, struct config *cfg, char *err);

/* cfg is all zero bytes, as config_free and a refused parse leave it. */
void cfgtest_zeroed(const struct config *cfg);

/* yaml parses; *cfg is then the caller's to config_free. */
void cfgtest_ok(const char *yaml, struct config *cfg);

/* yaml is refused with exactly the message want, the config left zeroed. */
void cfgtest_error(const char *yaml, const char *want);

/* For long messages (lists of known keys): only the start is fixed. */
void cfgtest_error_start(const char *yaml, const char *want);

#endif
