/* regex_check.h - may a header rule's regex go to Traefik?
 *
 * Traefik compiles these regexes with Go's regexp (RE2). There is no RE2 in
 * C, so the check approximates it: POSIX ERE (glibc's regcomp) after
 * rewriting the common RE2-only spellings ((?flags), (?:, \d, lazy
 * quantifiers), refusing backreferences, which RE2 lacks but POSIX has, and
 * refusing what Go's regexp refuses for size (counts over 1000, nested
 * repetitions). Other RE2-only syntax (\pL, inline flags mid-pattern) is
 * refused; the rare pattern POSIX takes but RE2 does not fails later in
 * Traefik. Whoever writes a headers key chooses the regex, so what glibc
 * would spend seconds or gigabytes compiling is refused before regcomp sees
 * it (see the cost section of regex_check.c).
 *
 * Pure: no I/O, no logging; regcomp runs on a bounded text. */
#ifndef CB_MODEL_REGEX_CHECK_H
#define CB_MODEL_REGEX_CHECK_H

#include <stddef.h>

/* 0 when re (NUL-terminated) is fine, else -1 with one line in err, e.g.
 * "regex has a repeat count over 1000 (Go regexp's limit)". */
int regex_check(const char *re, char *err, size_t errlen);

#endif
