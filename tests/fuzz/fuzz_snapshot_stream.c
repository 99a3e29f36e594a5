/*
 * fuzz_snapshot_stream.c: the engine's snapshot stream reader
 * (engine/snapshot.c): a follower reads streams a leader sent, and kvload
 * reads files an operator hands it (API.md §6, §8).
 *
 * Byte 0 picks the mode. Even: the rest is the stream file as it is (LZ4
 * frame, checksums and all). Odd: the rest is the stream's *content*; the
 * target wraps it in a valid LZ4 frame (block and content checksums on, as
 * the writer does) so that mutations reach the header, record and trailer
 * parser instead of stopping at a checksum. Either way the file is read
 * with engine_snapshot_read_meta() and with the streaming reader to its end
 * or first error; a stream it accepts must hold keys in strictly increasing
 * order (the reader promises it).
 */
#include <lz4frame.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/snapshot.h"
#include "fuzz_util.h"
#include "kvd/errors.h"

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_snapshot_stream: property violated: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *dir = fz_scratch();
	char path[4200];
	char errmsg[KVD_ERRMSG_SIZE];
	struct engine_snapshot_meta meta;
	struct engine_snapshot_reader *r = NULL;
	uint8_t *frame = NULL;
	char *prev = NULL;
	size_t prev_len = 0;

	if (size < 1)
		return 0;
	if (data[0] & 1) {
		LZ4F_preferences_t prefs;
		size_t cap, n;

		memset(&prefs, 0, sizeof(prefs));
		prefs.frameInfo.blockSizeID = LZ4F_max256KB;
		prefs.frameInfo.blockMode = LZ4F_blockLinked;
		prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
		prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
		cap = LZ4F_compressFrameBound(size - 1, &prefs);
		frame = malloc(cap);
		if (frame == NULL)
			return 0;
		n = LZ4F_compressFrame(frame, cap, data + 1, size - 1, &prefs);
		if (LZ4F_isError(n)) {
			free(frame);
			return 0;
		}
		fz_write(dir, "snap", frame, n);
		free(frame);
	} else {
		fz_write(dir, "snap", data + 1, size - 1);
	}
	snprintf(path, sizeof(path), "%s/snap", dir);

	memset(&meta, 0, sizeof(meta));
	if (engine_snapshot_read_meta(path, &meta, errmsg) == 0) {
		check(meta.config_len == 0 || meta.config != NULL, "config length without bytes");
		engine_snapshot_meta_clear(&meta);
	}
	if (engine_snapshot_reader_open(path, &r, errmsg) == 0) {
		for (;;) {
			struct engine_record rec;
			bool end = false;

			if (engine_snapshot_reader_next(r, &rec, &end, errmsg) != 0 || end)
				break;
			if (prev != NULL) {
				size_t m = prev_len < rec.key_len ? prev_len : rec.key_len;
				int c = memcmp(prev, rec.key, m);
				check(c < 0 || (c == 0 && prev_len < rec.key_len),
				      "keys out of order accepted");
			}
			free(prev);
			prev = malloc(rec.key_len + 1);
			if (prev == NULL)
				break;
			memcpy(prev, rec.key, rec.key_len);
			prev_len = rec.key_len;
		}
		engine_snapshot_reader_close(r);
	}
	free(prev);
	return 0;
}
