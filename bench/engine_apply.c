/*
 * engine_apply.c: the cost of the engine's apply path (and of gets) on a
 * real LevelDB directory, to compare engine formats (e.g. format 1, bare
 * values, against format 2, with a revision header per value).
 *
 * It uses only engine_open(), engine_apply(), engine_get() and
 * engine_close(), which every format has, so the same file builds against
 * any revision's libkvd_engine.a:
 *
 *     cc -O2 -I. -Iinclude bench/engine_apply.c build/engine/libkvd_engine.a \
 *        -lleveldb $(pkg-config --libs liblz4 jansson) -lpthread -o /tmp/engine_apply
 *     /tmp/engine_apply /tmp/bench-db 200000 1000 [GETS]
 *
 * Arguments: a directory (must not exist; removed afterwards by the caller),
 * the number of PUT entries (keys key<7 digits>, 100 pseudo-random printable
 * bytes each), the entries per engine_apply() call, and optionally the
 * number of random gets (default: as many as entries). Prints one line:
 * entries, seconds to apply them, seconds for the gets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct engine_entry *entries;
	struct engine *e = NULL;
	char(*texts)[128];
	unsigned long long n, batch, gets;
	unsigned long long seed = 88172645463325252ull;
	double t0, t_apply, t_get;
	int rv;

	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: engine_apply DIR ENTRIES BATCH [GETS]\n");
		return 2;
	}
	n = strtoull(argv[2], NULL, 10);
	batch = strtoull(argv[3], NULL, 10);
	gets = argc == 5 ? strtoull(argv[4], NULL, 10) : n;
	if (n == 0 || batch == 0 || batch > n) {
		fprintf(stderr, "engine_apply: bad ENTRIES or BATCH\n");
		return 2;
	}
	entries = calloc(batch, sizeof(*entries));
	texts = calloc(batch, sizeof(*texts));
	rv = engine_open(argv[1], NULL, &e, errmsg);
	if (rv != 0 || entries == NULL || texts == NULL) {
		fprintf(stderr, "engine_apply: open %s: %s\n", argv[1], errmsg);
		return 1;
	}
	t0 = now();
	for (unsigned long long i = 0; i < n && rv == 0; i += batch) {
		unsigned long long m = n - i < batch ? n - i : batch;
		for (unsigned long long j = 0; j < m; j++) {
			int len = snprintf(texts[j], sizeof(texts[j]), "PUT key%07llu ", i + j);
			for (int k = 0; k < 100; k++) {
				seed ^= seed << 13;
				seed ^= seed >> 7;
				seed ^= seed << 17;
				texts[j][len + k] = (char)('!' + seed % 90);
			}
			entries[j] = (struct engine_entry){i + j + 1, 1, ENGINE_ENTRY_COMMAND,
							   texts[j], (size_t)len + 100};
		}
		rv = engine_apply(e, entries, m, errmsg);
	}
	t_apply = now() - t0;
	t0 = now();
	for (unsigned long long i = 0; i < gets && rv == 0; i++) {
		char key[32];
		void *v = NULL;
		size_t vlen = 0;
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		snprintf(key, sizeof(key), "key%07llu", seed % n);
		rv = engine_get(e, key, strlen(key), &v, &vlen);
		free(v);
	}
	t_get = now() - t0;
	engine_close(e);
	free(entries);
	free(texts);
	if (rv != 0) {
		fprintf(stderr, "engine_apply: %s %s\n", kvd_strerror(rv), errmsg);
		return 1;
	}
	printf("entries=%llu batch=%llu apply_s=%.3f get_s=%.3f\n", n, batch, t_apply, t_get);
	return 0;
}
