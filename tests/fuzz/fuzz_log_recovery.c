/*
 * fuzz_log_recovery.c: recovery of the segmented Raft log and of the
 * term/vote metadata from arbitrary file bytes (raft/log_recovery.c,
 * raft/segment.c, raft/meta.c; API.md §6: a torn tail is cut, any other
 * damage stops startup with a clear error, nothing is silently dropped).
 *
 * Input: a sequence of files, each [kind: 1 byte][length: 2 bytes, little
 * endian][bytes]. kind % 8: 0 meta1, 1 meta2, 2..7 segment files seg-1 ..
 * seg-6. A short last length takes what is left. The files are written into
 * an empty directory, then raft_meta_load() and raft_log_store_open() run on
 * it. When the store opens, every entry it claims is read back and its
 * indexes must be contiguous from first_index, its terms non-decreasing,
 * and the recovered store must reopen to the same bounds (recovery is
 * idempotent).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "kvd/errors.h"
#include "raft/log_store.h"
#include "raft/meta.h"

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_log_recovery: property violated: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *dir = fz_scratch();
	char errmsg[KVD_ERRMSG_SIZE];
	struct raft_meta meta;
	struct raft_log_store *s = NULL;
	struct raft_log_store_options opts = {.segment_size = 4096};
	size_t pos = 0;
	unsigned files = 0;
	raft_index bounds[2] = {0, 0};

	fz_empty(dir);
	while (pos + 3 <= size && files < 16) {
		unsigned kind = data[pos] % 8;
		size_t len = (size_t)data[pos + 1] | ((size_t)data[pos + 2] << 8);
		char name[32];

		pos += 3;
		if (len > size - pos)
			len = size - pos;
		if (kind == 0)
			snprintf(name, sizeof(name), "meta1");
		else if (kind == 1)
			snprintf(name, sizeof(name), "meta2");
		else
			snprintf(name, sizeof(name), "seg-%016" PRIx64, (uint64_t)(kind - 1));
		fz_write(dir, name, data + pos, len);
		pos += len;
		files++;
	}

	if (raft_meta_load(dir, &meta, errmsg) == 0)
		check(strnlen(meta.voted_for, RAFT_ID_SIZE) < RAFT_ID_SIZE, "vote not terminated");

	for (int pass = 0; pass < 2; pass++) {
		raft_index first, last;
		raft_term prev_term = 0;

		opts.verify_all = pass == 0;
		if (raft_log_store_open(dir, &opts, &s, errmsg) != 0) {
			check(pass == 0, "a recovered log does not reopen");
			break;
		}
		first = raft_log_store_first_index(s);
		last = raft_log_store_last_index(s);
		check(last + 1 >= first, "last index below first - 1");
		if (pass == 0) {
			bounds[0] = first;
			bounds[1] = last;
		} else {
			check(first == bounds[0] && last == bounds[1],
			      "a recovered log reopens with other bounds");
		}
		if (last >= first && last - first < 4096) {
			struct raft_entry *es = NULL;
			size_t n = 0;
			if (raft_log_store_read(s, first, last, SIZE_MAX, &es, &n, errmsg) == 0) {
				for (size_t i = 0; i < n; i++) {
					check(es[i].index == first + i, "entries not contiguous");
					check(es[i].term >= prev_term, "terms decrease");
					prev_term = es[i].term;
				}
				free(es);
			}
		}
		raft_log_store_close(s);
		s = NULL;
	}
	return 0;
}
