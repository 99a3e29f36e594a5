/*
 * fuzz_url.c: key and URL/query decoding (api/textutil.c, the key check of
 * engine/command.c, id parsing of api/config.c): the checks behind "invalid
 * key" (API.md §2) and every id taken from a request (§7).
 *
 * The input is used whole as a path, a query string and an id. Checked
 * properties: percent decoding never grows, and decoding the percent-encoding
 * of its output gives it back; an id kvd_id_valid accepts has no byte that
 * could end a header line or change a query, and kvd_config_split_id agrees
 * with kvd_id_valid on what an id is.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/config.h"
#include "api/textutil.h"
#include "engine/command.h"

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_url: property violated: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	char *dec = malloc(size + 1);
	char *enc = malloc(3 * size + 1);
	char *again = malloc(3 * size + 1);
	long n;

	if (dec == NULL || enc == NULL || again == NULL)
		goto out;
	n = kvd_percent_decode(s, size, dec);
	if (n >= 0) {
		size_t k = 0;
		check((size_t)n <= size, "percent decoding grew");
		(void)engine_key_valid(dec, (size_t)n);
		(void)kvd_utf8_valid(dec, (size_t)n);
		for (long i = 0; i < n; i++)
			k += (size_t)snprintf(enc + k, 4, "%%%02X", (unsigned char)dec[i]);
		check(kvd_percent_decode(enc, k, again) == n && memcmp(again, dec, (size_t)n) == 0,
		      "decode(encode(x)) != x");
	}
	{
		static const char *const names[] = {"term",  "leader-id", "from",
						    "limit", "done",	  ""};
		for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			const char *v;
			size_t vlen;
			if (kvd_query_get(s, size, names[i], &v, &vlen))
				check(v >= s && v + vlen <= s + size &&
					  memchr(v, '&', vlen) == NULL,
				      "query value outside the query or across '&'");
		}
	}
	if (kvd_id_valid(s, size)) {
		char id[256];
		char host[256];
		uint16_t port;
		check(size < sizeof(id), "overlong id accepted");
		for (size_t i = 0; i < size; i++)
			check(s[i] > ' ' && s[i] < 0x7f && s[i] != '%' && s[i] != '&' &&
				  s[i] != '+',
			      "an accepted id holds a forbidden byte");
		memcpy(id, s, size);
		id[size] = '\0';
		if (memchr(id, ',', size) == NULL && (id[0] != '[' || strchr(id, ']') != NULL))
			(void)kvd_config_split_id(id, host, sizeof(host), &port);
	}
	if (size < 256 && memchr(s, '\0', size) == NULL) {
		char id[256];
		char host[256];
		uint16_t port;
		memcpy(id, s, size);
		id[size] = '\0';
		if (kvd_config_split_id(id, host, sizeof(host), &port) == 0)
			check(kvd_id_valid(id, size) && port > 0,
			      "split_id accepted an invalid id");
	}
out:
	free(dec);
	free(enc);
	free(again);
	return 0;
}
