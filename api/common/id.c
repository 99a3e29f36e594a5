/*
 * id.c: node id parsing (id.h), shared by the daemon and the tools so both
 * read "host:port" one way.
 *
 * kvd_id_valid is the one id check: every id a node receives is later
 * stored, compared, and echoed in Location headers and query strings, so a
 * byte that could end a header line or change a query's meaning must never
 * get in.
 */
#include "api/common/id.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvd/errors.h"

int kvd_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (s == NULL || *s < '0' || *s > '9')
		return KVD_EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return KVD_EINVAL;
	*out = v;
	return 0;
}

bool kvd_id_valid(const char *id, size_t len)
{
	const char *colon = NULL;
	unsigned long port = 0;
	size_t digits;

	if (id == NULL || len == 0 || len >= KVD_ID_SIZE)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)id[i];
		/* Printable ASCII only: no space, controls (CR, LF, NUL) or bytes
		 * above 0x7e; and none of the bytes query strings give meaning. */
		if (c <= 0x20 || c >= 0x7f || c == '%' || c == '&' || c == '+')
			return false;
		if (c == ':')
			colon = id + i;
	}
	if (colon == NULL)
		return false;
	digits = len - (size_t)(colon - id) - 1;
	if (digits == 0 || digits > 5)
		return false;
	for (size_t i = 1; i <= digits; i++) {
		if (colon[i] < '0' || colon[i] > '9')
			return false;
		port = port * 10 + (unsigned long)(colon[i] - '0');
	}
	return port >= 1 && port <= 65535;
}

int kvd_id_split(const char *id, char *host, size_t host_size, uint16_t *port)
{
	const char *colon;
	const char *h = id;
	size_t hlen;
	uint64_t p;

	if (id == NULL || *id == '\0' || strlen(id) >= KVD_ID_SIZE || !kvd_id_valid(id, strlen(id)))
		return KVD_EINVAL;
	colon = strrchr(id, ':');
	if (colon == NULL)
		return KVD_EINVAL;
	hlen = (size_t)(colon - id);
	if (hlen > 0 && id[0] == '[') { /* [v6]:port */
		if (id[hlen - 1] != ']' || hlen < 3)
			return KVD_EINVAL;
		h = id + 1;
		hlen -= 2;
	}
	if (memchr(h, ' ', hlen) != NULL || memchr(h, ',', hlen) != NULL)
		return KVD_EINVAL;
	if (kvd_parse_u64(colon + 1, 1, 65535, &p) != 0)
		return KVD_EINVAL;
	if (host != NULL) {
		if (hlen == 0) {
			snprintf(host, host_size, "127.0.0.1");
		} else {
			if (hlen >= host_size)
				return KVD_EINVAL;
			memcpy(host, h, hlen);
			host[hlen] = '\0';
		}
	}
	*port = (uint16_t)p;
	return 0;
}

int kvd_parse_duration_ms(const char *s, uint64_t *ms)
{
	char *end;
	double v, mult;

	if (s[0] < '0' || s[0] > '9' || strspn(s, "0123456789.") != strcspn(s, "ms") ||
	    strchr(s, '.') != strrchr(s, '.'))
		return KVD_EINVAL;
	v = strtod(s, &end);
	if (*end == '\0' || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0)
		mult = 60000;
	else
		return KVD_EINVAL;
	v *= mult;
	if (!(v >= 1 && v <= 86400000.0))
		return KVD_EINVAL;
	*ms = (uint64_t)v;
	return 0;
}
