/*
 * id.c: node id parsing (id.h), shared by the daemon and the tools so both
 * read "host:port" one way.
 *
 * Note for the merge of issue 7: this is the body of config.c's
 * kvd_config_split_id(), which stays in config.c for now because another
 * branch is changing config.c; once both land, kvd_config_split_id() should
 * call kvd_id_split() (and this file take over that branch's id checks).
 */
#include "api/common/id.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvd/errors.h"

/* Parses a whole decimal number in [min, max]. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
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

int kvd_id_split(const char *id, char *host, size_t host_size, uint16_t *port)
{
	const char *colon;
	const char *h = id;
	size_t hlen;
	uint64_t p;

	if (id == NULL || *id == '\0' || strlen(id) >= KVD_ID_SIZE)
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
	if (parse_u64(colon + 1, 1, 65535, &p) != 0)
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
