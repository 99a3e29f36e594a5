/*
 * textutil.h: byte-level checks and decoders for request text: percent
 * decoding of URL paths, UTF-8 validation, query-string lookup.
 */
#ifndef KVD_API_TEXTUTIL_H
#define KVD_API_TEXTUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "api/common/id.h"

/*
 * Percent-decodes src[0..len) into dst (at least len bytes; not
 * NUL-terminated). Returns the decoded length, or -1 for a malformed escape
 * ("%" not followed by two hex digits).
 */
long kvd_percent_decode(const char *src, size_t len, char *dst);

/* True when buf[0..len) is well-formed UTF-8 (no overlongs, no surrogates,
 * nothing above U+10FFFF). */
bool kvd_utf8_valid(const void *buf, size_t len);

/*
 * Finds name in a query string "a=1&b=2" (without '?'). On success points
 * *value at the raw (undecoded) value inside query and sets *value_len.
 * Returns true when found.
 */
bool kvd_query_get(const char *query, size_t query_len, const char *name, const char **value,
		   size_t *value_len);

/* Sorts ids (at most a configuration's worth) as strings, in place. */
void kvd_ids_sort(const char **ids, unsigned n);

#endif
