/*
 * textutil.c: request text helpers. Pure functions, no allocation.
 * The one id check, kvd_id_valid, is in api/common/id.c (tools use it too).
 */
#include "api/textutil.h"

#include <stdint.h>
#include <string.h>

#include "raft/raft.h"

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

long kvd_percent_decode(const char *src, size_t len, char *dst)
{
	size_t i = 0;
	size_t n = 0;

	while (i < len) {
		if (src[i] == '%') {
			int hi, lo;
			if (i + 2 >= len)
				return -1;
			hi = hexval(src[i + 1]);
			lo = hexval(src[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			dst[n++] = (char)(hi * 16 + lo);
			i += 3;
		} else {
			dst[n++] = src[i++];
		}
	}
	return (long)n;
}

bool kvd_utf8_valid(const void *buf, size_t len)
{
	const uint8_t *s = buf;
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		uint32_t cp;
		size_t need;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			need = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			need = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			need = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= need)
			return false;
		for (size_t k = 1; k <= need; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += need + 1;
	}
	return true;
}

bool kvd_query_get(const char *query, size_t query_len, const char *name, const char **value,
		   size_t *value_len)
{
	size_t nlen = strlen(name);
	size_t i = 0;

	while (i < query_len) {
		size_t end = i;
		while (end < query_len && query[end] != '&')
			end++;
		if (end - i >= nlen && memcmp(query + i, name, nlen) == 0 &&
		    (end - i == nlen || query[i + nlen] == '=')) {
			size_t vstart = i + nlen + (end - i > nlen ? 1 : 0);
			*value = query + vstart;
			*value_len = end - vstart;
			return true;
		}
		i = end + 1;
	}
	return false;
}

void kvd_ids_sort(const char **ids, unsigned n)
{
	for (unsigned i = 1; i < n; i++) /* insertion sort: a handful of ids */
		for (unsigned j = i; j > 0 && strcmp(ids[j - 1], ids[j]) > 0; j--) {
			const char *t = ids[j];
			ids[j] = ids[j - 1];
			ids[j - 1] = t;
		}
}
