/* value.h - turn a key's text (JSON or YAML, as etcdctl or the Consul UI
 * stores it) into a cJSON tree, and emit cJSON trees as YAML for `render`.
 *
 * Parsing is defensive: values over VALUE_MAX_BYTES are refused before any
 * parsing, YAML anchors/aliases are refused outright (no alias bombs), nesting
 * deeper than VALUE_MAX_DEPTH is refused, invalid UTF-8 is refused, and only
 * one document is accepted. YAML plain scalars are resolved as YAML 1.2 core
 * schema would: null/~, true/false, integers and floats become cJSON null,
 * bool and number; quoted scalars stay strings. JSON input is parsed by the
 * same YAML loader (JSON is YAML 1.2) so both forms behave the same. */
#ifndef CB_VALUE_H
#define CB_VALUE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "bridge/lib/buf.h"

#define VALUE_MAX_BYTES (64 * 1024)
#define VALUE_MAX_DEPTH 32

/* Returns a new tree, or NULL with a one-line reason in err (e.g.
 * "line 3: mapping values are not allowed here"). An empty or
 * whitespace-only text gives NULL with "empty value". A leading UTF-8 byte
 * order mark (Windows editors add one) is skipped. */
cJSON *value_parse(const char *text, size_t len, char *err, size_t errlen);

/* 3 when text starts with a UTF-8 byte order mark (EF BB BF), else 0: the
 * bytes to skip before reading a value in any form. */
size_t value_bom_len(const char *text, size_t len);

/* Append obj as a YAML block document ("---\n" first when doc_start). Strings
 * that would read back as another type, or need it, are quoted. Returns 0/-1. */
int value_emit_yaml(const cJSON *obj, buf_t *out, bool doc_start);

/* Whole number check for cJSON numbers: true and *out set when the number is
 * an integer in [min, max] and was not written with a fraction/exponent. */
bool value_get_int(const cJSON *n, long long min, long long max, long long *out);

#endif
