/*
 * test_log_store.c: the segmented Raft log (raft/log_store.c) on real files
 * in temporary directories: round trips, rollover, truncation, head removal,
 * reset, and recovery from torn writes and corruption made by hand.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>

#include "raft/crc32c.h"
#include "raft/log_store.h"
#include "raft/segment.h"
#include "storage_test_util.h"

#define SMALL_SEGMENT 2048 /* bytes: rollover every few dozen entries */

/* Deterministic payload of the entry at index: 0..60 bytes. */
static size_t payload_len(raft_index index)
{
	return (size_t)((index * 13) % 61);
}

static uint8_t payload_byte(raft_index index, size_t k, uint8_t salt)
{
	return (uint8_t)(index * 31 + k * 7 + salt);
}

static uint64_t record_size(raft_index index)
{
	return RAFT_SEGMENT_RECORD_HEADER_SIZE + payload_len(index);
}

/* Appends [from, to] with the given term in batches of up to 16 entries. */
static void append_range_salted(struct raft_log_store *s, raft_index from, raft_index to,
				raft_term term, uint8_t salt)
{
	struct raft_entry e[16];
	uint8_t data[16][64];
	char errmsg[KVD_ERRMSG_SIZE] = "";
	while (from <= to) {
		size_t n = 0;
		for (; n < 16 && from + n <= to; n++) {
			raft_index idx = from + n;
			for (size_t k = 0; k < payload_len(idx); k++) {
				data[n][k] = payload_byte(idx, k, salt);
			}
			e[n] = (struct raft_entry){.index = idx,
						   .term = term,
						   .type = idx % 5 == 0 ? RAFT_ENTRY_NOOP
									: RAFT_ENTRY_COMMAND,
						   .data = data[n],
						   .len = payload_len(idx)};
		}
		ck_assert_msg(raft_log_store_append(s, e, n, errmsg) == 0, "%s", errmsg);
		from += n;
	}
}

static void append_range(struct raft_log_store *s, raft_index from, raft_index to, raft_term term)
{
	append_range_salted(s, from, to, term, 0);
}

/* Reads [from, to] and checks every entry's term, type and payload. */
static void check_range_salted(struct raft_log_store *s, raft_index from, raft_index to,
			       raft_term term, uint8_t salt)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_entry *e = NULL;
	size_t n = 0;
	ck_assert_msg(raft_log_store_read(s, from, to, 0, &e, &n, errmsg) == 0, "%s", errmsg);
	ck_assert_uint_eq(n, to - from + 1);
	for (size_t i = 0; i < n; i++) {
		raft_index idx = from + i;
		ck_assert_uint_eq(e[i].index, idx);
		ck_assert_uint_eq(e[i].term, term);
		ck_assert_int_eq(e[i].type, idx % 5 == 0 ? RAFT_ENTRY_NOOP : RAFT_ENTRY_COMMAND);
		ck_assert_uint_eq(e[i].len, payload_len(idx));
		for (size_t k = 0; k < e[i].len; k++) {
			ck_assert_uint_eq(((const uint8_t *)e[i].data)[k],
					  payload_byte(idx, k, salt));
		}
	}
	free(e);
}

static void check_range(struct raft_log_store *s, raft_index from, raft_index to, raft_term term)
{
	check_range_salted(s, from, to, term, 0);
}

static struct raft_log_store *open_ok(const char *dir, uint64_t segment_size, char *note)
{
	struct raft_log_store_options opts = {.segment_size = segment_size, .no_prealloc = true};
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s = NULL;
	ck_assert_msg(raft_log_store_open(dir, &opts, &s, errmsg) == 0, "%s", errmsg);
	if (note != NULL) {
		snprintf(note, KVD_ERRMSG_SIZE, "%s", errmsg);
	} else {
		ck_assert_str_eq(errmsg, "");
	}
	return s;
}

/* Opens with the store's default preallocation (open_ok turns it off, so
 * that file sizes there are the records' end). */
static struct raft_log_store *open_prealloc(const char *dir, uint64_t segment_size, char *note)
{
	struct raft_log_store_options opts = {.segment_size = segment_size};
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s = NULL;
	ck_assert_msg(raft_log_store_open(dir, &opts, &s, errmsg) == 0, "%s", errmsg);
	if (note != NULL) {
		snprintf(note, KVD_ERRMSG_SIZE, "%s", errmsg);
	} else {
		ck_assert_str_eq(errmsg, "");
	}
	return s;
}

static int open_err(const char *dir, uint64_t segment_size, char *errmsg)
{
	struct raft_log_store_options opts = {.segment_size = segment_size, .no_prealloc = true};
	struct raft_log_store *s = NULL;
	int rv = raft_log_store_open(dir, &opts, &s, errmsg);
	if (rv == 0) {
		raft_log_store_close(s);
	}
	return rv;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted segment file names (caller frees each and the array). */
static size_t seg_list(const char *dir, char ***names)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;
	*names = NULL;
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "seg-", 4) == 0) {
			*names = realloc(*names, (n + 1) * sizeof(char *));
			(*names)[n++] = strdup(de->d_name);
		}
	}
	closedir(d);
	qsort(*names, n, sizeof(char *), name_cmp);
	return n;
}

static void seg_list_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(names[i]);
	}
	free(names);
}

/* Byte offset of index's record in a segment whose first index is first. */
static uint64_t record_offset(raft_index first, raft_index index)
{
	uint64_t off = RAFT_SEGMENT_HEADER_SIZE;
	for (raft_index i = first; i < index; i++) {
		off += record_size(i);
	}
	return off;
}

START_TEST(test_raft_log_store_open_empty)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	raft_term t = 99;
	ck_assert_uint_eq(raft_log_store_first_index(s), 1);
	ck_assert_uint_eq(raft_log_store_last_index(s), 0);
	ck_assert_uint_eq(raft_log_store_last_term(s), 0);
	ck_assert_int_eq(raft_log_store_term_at(s, 0, &t, NULL), 0);
	ck_assert_uint_eq(t, 0);
	ck_assert_int_eq(raft_log_store_term_at(s, 1, &t, NULL), KVD_ENOTFOUND);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	ck_assert(tu_exists(dir, "LOCK"));
	raft_log_store_close(s);
	raft_log_store_close(NULL);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_append_read_round_trip)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	append_range(s, 1, 40, 2);
	ck_assert_uint_eq(raft_log_store_last_index(s), 40);
	ck_assert_uint_eq(raft_log_store_last_term(s), 2);
	check_range(s, 1, 40, 2); /* readable before sync */
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	check_range(s, 7, 9, 2);
	check_range(s, 40, 40, 2);
	raft_log_store_close(s);

	s = open_ok(dir, 0, NULL);
	ck_assert_uint_eq(raft_log_store_first_index(s), 1);
	ck_assert_uint_eq(raft_log_store_last_index(s), 40);
	ck_assert_uint_eq(raft_log_store_last_term(s), 2);
	check_range(s, 1, 40, 2);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_read_bounds_and_max_bytes)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	struct raft_entry *e = NULL;
	size_t n = 0;
	size_t want = 0;
	size_t bytes = 0;
	append_range(s, 1, 30, 1);
	ck_assert_int_eq(raft_log_store_read(s, 0, 3, 0, &e, &n, NULL), KVD_ECOMPACTED);
	ck_assert_int_eq(raft_log_store_read(s, 5, 31, 0, &e, &n, NULL), KVD_ENOTFOUND);
	ck_assert_int_eq(raft_log_store_read(s, 6, 5, 0, &e, &n, NULL), KVD_EINVAL);
	/* Entries 2..: 26, 39, 52 bytes; a 70-byte budget takes two. */
	ck_assert_int_eq(raft_log_store_read(s, 2, 30, 70, &e, &n, NULL), 0);
	for (raft_index i = 2; bytes + payload_len(i) <= 70; i++) {
		bytes += payload_len(i);
		want++;
	}
	ck_assert_uint_eq(want, 2);
	ck_assert_uint_eq(n, want);
	free(e);
	/* At least one entry even if it alone exceeds the budget. */
	ck_assert_int_eq(raft_log_store_read(s, 4, 30, 1, &e, &n, NULL), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(e[0].index, 4);
	free(e);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_append_non_contiguous)
{
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	struct raft_entry e[2] = {{.index = 1, .term = 3, .type = RAFT_ENTRY_NOOP},
				  {.index = 3, .term = 3, .type = RAFT_ENTRY_NOOP}};
	ck_assert_int_eq(raft_log_store_append(s, e, 2, errmsg), KVD_EINVAL);
	ck_assert_ptr_nonnull(strstr(errmsg, "index 3"));
	ck_assert_uint_eq(raft_log_store_last_index(s), 0);
	e[0].index = 2;
	ck_assert_int_eq(raft_log_store_append(s, e, 1, NULL), KVD_EINVAL); /* gap */
	e[0].index = 1;
	ck_assert_int_eq(raft_log_store_append(s, e, 1, NULL), 0);
	ck_assert_int_eq(raft_log_store_append(s, e, 1, NULL), KVD_EINVAL); /* repeat */
	e[1].index = 2;
	e[1].term = 2;
	ck_assert_int_eq(raft_log_store_append(s, &e[1], 1, NULL), KVD_EINVAL); /* lower term */
	e[1].term = 3;
	e[1].type = (enum raft_entry_type)9;
	ck_assert_int_eq(raft_log_store_append(s, &e[1], 1, NULL), KVD_EINVAL); /* bad type */
	e[1].type = RAFT_ENTRY_COMMAND;
	ck_assert_int_eq(raft_log_store_append(s, &e[1], 1, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 2);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_append_rollover)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, SMALL_SEGMENT, NULL);
	char **names;
	size_t n;
	raft_term t;
	append_range(s, 1, 300, 1);
	append_range(s, 301, 600, 2);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	n = seg_list(dir, &names);
	ck_assert_uint_gt(n, 10);
	for (size_t i = 0; i + 1 < n; i++) {
		/* Every closed file is just past the rollover size. */
		ck_assert_int_ge(tu_file_size(dir, names[i]), SMALL_SEGMENT);
		ck_assert_int_lt(tu_file_size(dir, names[i]), SMALL_SEGMENT + 16 * 100);
	}
	seg_list_free(names, n);
	check_range(s, 1, 300, 1);
	check_range(s, 301, 600, 2);
	raft_log_store_close(s);

	s = open_ok(dir, SMALL_SEGMENT, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 600);
	ck_assert_uint_eq(raft_log_store_last_term(s), 2);
	for (raft_index i = 1; i <= 600; i += 17) {
		ck_assert_int_eq(raft_log_store_term_at(s, i, &t, NULL), 0);
		ck_assert_uint_eq(t, i <= 300 ? 1 : 2);
	}
	check_range(s, 1, 300, 1);
	check_range(s, 301, 600, 2);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_truncate_mid_segment)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	raft_term t;
	append_range(s, 1, 50, 1);
	ck_assert_int_eq(raft_log_store_truncate(s, 52, NULL), KVD_EINVAL);
	ck_assert_int_eq(raft_log_store_truncate(s, 51, NULL), 0); /* nothing to do */
	ck_assert_int_eq(raft_log_store_truncate(s, 31, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 30);
	ck_assert_uint_eq(raft_log_store_last_term(s), 1);
	ck_assert_int_eq(raft_log_store_term_at(s, 31, &t, NULL), KVD_ENOTFOUND);
	append_range_salted(s, 31, 45, 2, 9);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	check_range(s, 1, 30, 1);
	check_range_salted(s, 31, 45, 2, 9);
	raft_log_store_close(s);

	s = open_ok(dir, 0, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 45);
	check_range(s, 1, 30, 1);
	check_range_salted(s, 31, 45, 2, 9);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_truncate_across_segments)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, SMALL_SEGMENT, NULL);
	char **names;
	size_t before;
	size_t after;
	append_range(s, 1, 400, 3);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	before = seg_list(dir, &names);
	seg_list_free(names, before);
	ck_assert_int_eq(raft_log_store_truncate(s, 77, NULL), 0);
	after = seg_list(dir, &names);
	seg_list_free(names, after);
	ck_assert_uint_lt(after, before);
	ck_assert_uint_eq(raft_log_store_last_index(s), 76);
	check_range(s, 1, 76, 3);
	/* The cut closed segment is appended to again, then rolls over. */
	append_range_salted(s, 77, 200, 4, 5);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);

	s = open_ok(dir, SMALL_SEGMENT, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 200);
	ck_assert_uint_eq(raft_log_store_last_term(s), 4);
	check_range(s, 1, 76, 3);
	check_range_salted(s, 77, 200, 4, 5);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_truncate_everything)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, SMALL_SEGMENT, NULL);
	raft_term t = 9;
	append_range(s, 1, 100, 2);
	ck_assert_int_eq(raft_log_store_truncate(s, 1, NULL), 0);
	ck_assert_uint_eq(raft_log_store_first_index(s), 1);
	ck_assert_uint_eq(raft_log_store_last_index(s), 0);
	ck_assert_uint_eq(raft_log_store_last_term(s), 0);
	ck_assert_int_eq(raft_log_store_term_at(s, 0, &t, NULL), 0);
	ck_assert_uint_eq(t, 0);
	append_range(s, 1, 10, 5);
	raft_log_store_close(s);
	s = open_ok(dir, SMALL_SEGMENT, NULL);
	check_range(s, 1, 10, 5);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_remove_head)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, SMALL_SEGMENT, NULL);
	struct raft_entry *e;
	size_t n;
	raft_index first;
	raft_term t;
	append_range(s, 1, 500, 2);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	ck_assert_int_eq(raft_log_store_remove_head(s, 250, NULL), 0);
	first = raft_log_store_first_index(s);
	/* Whole segments only: some entries <= 250 remain. */
	ck_assert_uint_gt(first, 150);
	ck_assert_uint_le(first, 251);
	ck_assert_int_eq(raft_log_store_read(s, first - 1, first, 0, &e, &n, NULL), KVD_ECOMPACTED);
	ck_assert_int_eq(raft_log_store_term_at(s, first - 1, &t, NULL), 0);
	ck_assert_uint_eq(t, 2);
	ck_assert_int_eq(raft_log_store_term_at(s, first - 2, &t, NULL), KVD_ECOMPACTED);
	check_range(s, first, 500, 2);
	/* Never the last segment. */
	ck_assert_int_eq(raft_log_store_remove_head(s, 10000, NULL), 0);
	ck_assert_uint_le(raft_log_store_first_index(s), 500);
	ck_assert_uint_eq(raft_log_store_last_index(s), 500);
	first = raft_log_store_first_index(s);
	raft_log_store_close(s);

	s = open_ok(dir, SMALL_SEGMENT, NULL);
	ck_assert_uint_eq(raft_log_store_first_index(s), first);
	ck_assert_uint_eq(raft_log_store_last_index(s), 500);
	check_range(s, first, 500, 2);
	append_range(s, 501, 510, 2);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_remove_head_rolls_partly_covered_segment)
{
	/* With the default 64 MiB segments everything sits in one file: a
	 * removal up to an index inside the last segment must seal it, so the
	 * next removal past its end can drop it. Disk use then follows the
	 * snapshots, not the rollover size. */
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	char **names = NULL;
	size_t n;
	append_range(s, 1, 100, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	ck_assert_int_eq(raft_log_store_remove_head(s, 50, NULL), 0);
	ck_assert_uint_eq(raft_log_store_first_index(s), 1);
	append_range(s, 101, 200, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	n = seg_list(dir, &names);
	ck_assert_uint_eq(n, 2);
	seg_list_free(names, n);
	/* Past the end of the first file: it goes. The second holds 150. */
	ck_assert_int_eq(raft_log_store_remove_head(s, 150, NULL), 0);
	ck_assert_uint_eq(raft_log_store_first_index(s), 101);
	check_range(s, 101, 200, 1);
	/* Removing up to the very last index keeps the entries (never the last
	 * segment) but seals it: nothing is written behind it any more. */
	ck_assert_int_eq(raft_log_store_remove_head(s, 200, NULL), 0);
	append_range(s, 201, 210, 1);
	ck_assert_int_eq(raft_log_store_remove_head(s, 200, NULL), 0);
	ck_assert_uint_eq(raft_log_store_first_index(s), 201);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	s = open_ok(dir, 0, NULL);
	ck_assert_uint_eq(raft_log_store_first_index(s), 201);
	ck_assert_uint_eq(raft_log_store_last_index(s), 210);
	check_range(s, 201, 210, 1);
	append_range(s, 211, 220, 1);
	check_range(s, 201, 220, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

/* First index of segment file name, from its header. */
static raft_index seg_first_index(const char *dir, const char *name)
{
	uint8_t b[8];
	raft_index v = 0;
	tu_read_at(dir, name, 16, b, sizeof(b));
	for (int i = 7; i >= 0; i--) {
		v = (v << 8) | b[i];
	}
	return v;
}

START_TEST(test_raft_log_store_disk_use_follows_snapshots)
{
	/* The node's cycle: every T entries a snapshot, then removal of the log
	 * up to the snapshot index minus a trailing window W. With the default
	 * 64 MiB segments, what stays is the W + T entries still needed plus at
	 * most one segment partly behind the removal point, itself at most
	 * about W + T entries: docs/operations.md "Disk use". */
	const raft_index w = 50;
	const raft_index t = 10;
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	for (raft_index last = t; last <= 3000; last += t) {
		char **names = NULL;
		long long bytes = 0;
		size_t n;
		append_range(s, last - t + 1, last, 1);
		ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
		if (last <= w) {
			continue;
		}
		ck_assert_int_eq(raft_log_store_remove_head(s, last - w, NULL), 0);
		n = seg_list(dir, &names);
		for (size_t i = 0; i < n; i++) {
			bytes += tu_file_size(dir, names[i]);
			/* Only the oldest file may hold entries <= last - w. */
			if (i > 0) {
				ck_assert_uint_gt(seg_first_index(dir, names[i]), last - w);
			}
		}
		/* 2 (W + T) records of at most 92 bytes, plus headers and seals. */
		ck_assert_int_le(
		    bytes, (long long)(2 * (w + t) + 2) * 92 +
			       (long long)n * (RAFT_SEGMENT_HEADER_SIZE + RAFT_SEGMENT_SEAL_SIZE));
		ck_assert_uint_le(raft_log_store_last_index(s) - raft_log_store_first_index(s) + 1,
				  2 * (w + t) + 1);
		seg_list_free(names, n);
	}
	raft_log_store_close(s);
	s = open_ok(dir, 0, NULL);
	check_range(s, raft_log_store_first_index(s), 3000, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_reset)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, SMALL_SEGMENT, NULL);
	struct raft_entry e = {.index = 50, .term = 7, .type = RAFT_ENTRY_NOOP};
	char **names;
	size_t n;
	raft_term t;
	append_range(s, 1, 300, 2);
	ck_assert_int_eq(raft_log_store_reset(s, 1000, 6, NULL), 0);
	n = seg_list(dir, &names);
	ck_assert_uint_eq(n, 1);
	seg_list_free(names, n);
	ck_assert_uint_eq(raft_log_store_first_index(s), 1001);
	ck_assert_uint_eq(raft_log_store_last_index(s), 1000);
	ck_assert_uint_eq(raft_log_store_last_term(s), 6);
	ck_assert_int_eq(raft_log_store_term_at(s, 1000, &t, NULL), 0);
	ck_assert_uint_eq(t, 6);
	ck_assert_int_eq(raft_log_store_append(s, &e, 1, NULL), KVD_EINVAL);
	e.index = 1001;
	e.term = 5;
	ck_assert_int_eq(raft_log_store_append(s, &e, 1, NULL), KVD_EINVAL); /* below term 6 */
	append_range(s, 1001, 1100, 7);
	raft_log_store_close(s);

	s = open_ok(dir, SMALL_SEGMENT, NULL);
	ck_assert_uint_eq(raft_log_store_first_index(s), 1001);
	ck_assert_uint_eq(raft_log_store_last_index(s), 1100);
	check_range(s, 1001, 1100, 7);
	ck_assert_int_eq(raft_log_store_term_at(s, 1000, &t, NULL), 0);
	ck_assert_uint_eq(t, 6);
	/* Reset backwards too (a snapshot older than a conflicting tail). */
	ck_assert_int_eq(raft_log_store_reset(s, 10, 1, NULL), 0);
	raft_log_store_close(s);
	s = open_ok(dir, SMALL_SEGMENT, NULL);
	ck_assert_uint_eq(raft_log_store_first_index(s), 11);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	ck_assert_uint_eq(raft_log_store_last_term(s), 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_reset_create_failure_keeps_log)
{
	/* A file in the way of the base segment: the reset fails before
	 * touching anything, and the old log stays usable. */
	char *dir = tu_mkdtemp();
	char path[4200];
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	append_range(s, 1, 10, 1);
	tu_write_at(dir, "seg-0000000000000002", 0, "x", 1);
	ck_assert_int_eq(raft_log_store_reset(s, 100, 3, NULL), KVD_EEXIST);
	ck_assert_uint_eq(raft_log_store_first_index(s), 1);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	ck_assert_uint_eq(raft_log_store_last_term(s), 1);
	append_range(s, 11, 12, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	tu_path(path, sizeof(path), dir, "seg-0000000000000002");
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(raft_log_store_reset(s, 100, 3, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 100);
	raft_log_store_close(s);
	s = open_ok(dir, 0, NULL);
	ck_assert_uint_eq(raft_log_store_first_index(s), 101);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_interrupted_reset)
{
	char *dir = tu_mkdtemp();
	char note[KVD_ERRMSG_SIZE];
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	append_range(s, 1, 20, 1);
	raft_log_store_close(s);
	tu_copy(dir, "seg-0000000000000001", "saved");
	s = open_ok(dir, 0, NULL);
	ck_assert_int_eq(raft_log_store_reset(s, 500, 4, NULL), 0);
	raft_log_store_close(s);
	/* As if the crash came before the old file's unlink hit the disk. */
	tu_copy(dir, "saved", "seg-0000000000000001");
	s = open_ok(dir, 0, note);
	ck_assert_ptr_nonnull(strstr(note, "interrupted reset"));
	ck_assert(!tu_exists(dir, "seg-0000000000000001"));
	ck_assert_uint_eq(raft_log_store_first_index(s), 501);
	ck_assert_uint_eq(raft_log_store_last_index(s), 500);
	ck_assert_uint_eq(raft_log_store_last_term(s), 4);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

/* Builds a log of 1..n (term 1) in one segment, closed after sync. */
static void make_log(const char *dir, raft_index n)
{
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	append_range(s, 1, n, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
}

/* Opens expecting a torn-tail note and entries 1..last intact; then checks
 * that appending resumes at last + 1. */
static void expect_recovered(const char *dir, raft_index last, const char *note_part)
{
	char note[KVD_ERRMSG_SIZE];
	struct raft_log_store *s = open_ok(dir, 0, note);
	ck_assert_msg(strstr(note, note_part) != NULL, "note: %s", note);
	ck_assert_uint_eq(raft_log_store_last_index(s), last);
	check_range(s, 1, last, 1);
	append_range(s, last + 1, last + 5, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	s = open_ok(dir, 0, NULL); /* clean now: no note */
	check_range(s, 1, last + 5, 1);
	raft_log_store_close(s);
}

START_TEST(test_raft_log_store_open_torn_partial_record)
{
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	char expect[128];
	make_log(dir, 20);
	tu_truncate(dir, seg, tu_file_size(dir, seg) - 5); /* entry 20 lost its tail */
	snprintf(expect, sizeof(expect), "discarded %llu torn bytes at offset %llu",
		 (unsigned long long)record_size(20) - 5, (unsigned long long)record_offset(1, 20));
	expect_recovered(dir, 19, expect);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_zero_tail_is_end_of_log)
{
	/* Zeros after the last record are preallocated space (docs/formats.md,
	 * "Preallocation"): the end of the log, not a torn write. Nothing is
	 * cut and no note is written. */
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	uint8_t zeros[4096] = {0};
	struct raft_log_store *s;
	long long size;
	make_log(dir, 20);
	tu_append(dir, seg, zeros, sizeof(zeros));
	size = tu_file_size(dir, seg);
	s = open_prealloc(dir, 0, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 20);
	ck_assert_int_eq(tu_file_size(dir, seg), size);
	check_range(s, 1, 20, 1);
	append_range(s, 21, 25, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	s = open_prealloc(dir, 0, NULL);
	check_range(s, 1, 25, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_torn_record_before_zeros)
{
	/* A record cut short by the crash, in preallocated space: the torn
	 * bytes and the zeros after them are cut. */
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	uint8_t tail[4096] = {0};
	char expect[160];
	make_log(dir, 20);
	memset(tail, 0x5a, 20);
	tail[0] = 40; /* a length that fits, a checksum that does not */
	tail[1] = tail[2] = tail[3] = 0;
	tu_write_at(dir, seg, (long long)record_offset(1, 21), tail, sizeof(tail));
	snprintf(expect, sizeof(expect), "discarded 4096 torn bytes at offset %llu of file %s/%s",
		 (unsigned long long)record_offset(1, 21), dir, seg);
	expect_recovered(dir, 20, expect);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_bad_record_valid_record_zeros)
{
	/* Damage in a synced batch stays fatal when preallocated zeros follow
	 * the valid records after it. */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	const char *seg = "seg-0000000000000001";
	uint8_t zeros[4096] = {0};
	struct raft_log_store *s;
	make_log(dir, 20);
	s = open_ok(dir, 0, NULL);
	append_range(s, 21, 25, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	tu_write_at(dir, seg, (long long)record_offset(1, 26), zeros, sizeof(zeros));
	tu_flip(dir, seg, (long long)record_offset(1, 10) + RAFT_SEGMENT_RECORD_HEADER_SIZE + 2, 5);
	ck_assert_int_eq(open_err(dir, 0, errmsg), KVD_ECORRUPT);
	ck_assert_msg(strstr(errmsg, "followed by a valid record") != NULL, "errmsg: %s", errmsg);
	ck_assert_int_eq(tu_file_size(dir, seg), (long long)record_offset(1, 26) + 4096);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_seal_then_zeros)
{
	/* A rollover writes the seal and cuts the preallocated space after it
	 * before its fdatasync; a crash may keep the seal but not the cut. The
	 * zeros after the seal of the last segment are cut at open. */
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	uint64_t size = RAFT_SEGMENT_HEADER_SIZE + record_size(1);
	uint8_t zeros[4096] = {0};
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s = open_prealloc(dir, size, NULL);
	append_range(s, 1, 1, 1);
	raft_log_store_close(s);
	ck_assert_int_eq(tu_file_size(dir, seg), (long long)(size + RAFT_SEGMENT_SEAL_SIZE));
	tu_append(dir, seg, zeros, sizeof(zeros));
	s = open_prealloc(dir, size, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 1);
	ck_assert_int_eq(tu_file_size(dir, seg), (long long)(size + RAFT_SEGMENT_SEAL_SIZE));
	append_range(s, 2, 2, 2);
	raft_log_store_close(s);
	s = open_prealloc(dir, size, NULL); /* seg 1 is now checked by its seal */
	check_range(s, 1, 1, 1);
	check_range(s, 2, 2, 2);
	raft_log_store_close(s);
	tu_rmtree(dir);
	/* Anything but zeros after the seal is still damage. */
	dir = tu_mkdtemp();
	s = open_prealloc(dir, size, NULL);
	append_range(s, 1, 1, 1);
	raft_log_store_close(s);
	zeros[100] = 1;
	tu_append(dir, seg, zeros, sizeof(zeros));
	ck_assert_int_eq(open_err(dir, size, errmsg), KVD_ECORRUPT);
	ck_assert_msg(strstr(errmsg, "after the seal") != NULL, "errmsg: %s", errmsg);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_append_does_not_grow_file)
{
	/* Appends land in space written ahead of them, so the file keeps its
	 * size from one sync to the next and fdatasync has no size change
	 * (inode) to write. */
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	struct raft_log_store *s = open_prealloc(dir, 1 << 20, NULL);
	long long size;
	append_range(s, 1, 10, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	size = tu_file_size(dir, seg);
	ck_assert_int_gt(size, (long long)record_offset(1, 11));
	/* A young segment gets a small chunk: 64 KiB, not the full 1 MiB. */
	ck_assert_int_le(size, (long long)record_offset(1, 11) + (64 << 10));
	for (raft_index i = 11; i <= 300; i += 10) {
		append_range(s, i, i + 9, 1);
		ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
		ck_assert_int_eq(tu_file_size(dir, seg), size);
	}
	raft_log_store_close(s);
	s = open_prealloc(dir, 1 << 20, NULL); /* no note: the zeros are the end */
	ck_assert_uint_eq(raft_log_store_last_index(s), 300);
	check_range(s, 1, 300, 1);
	append_range(s, 301, 310, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	ck_assert_int_eq(tu_file_size(dir, seg), size);
	raft_log_store_close(s);
	s = open_prealloc(dir, 1 << 20, NULL);
	check_range(s, 1, 310, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_prealloc_rollover_truncation)
{
	/* Small segments with preallocation: every sealed file ends at its
	 * seal (open checks it there), truncation and reopen keep the log. */
	char *dir = tu_mkdtemp();
	char **names;
	size_t n;
	struct raft_log_store *s = open_prealloc(dir, SMALL_SEGMENT, NULL);
	for (raft_index i = 1; i <= 300; i += 7) {
		append_range(s, i, i + 6, 1);
		ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	}
	raft_log_store_close(s);
	n = seg_list(dir, &names);
	ck_assert_uint_gt(n, 3);
	seg_list_free(names, n);
	s = open_prealloc(dir, SMALL_SEGMENT, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 301);
	check_range(s, 1, 301, 1);
	ck_assert_int_eq(raft_log_store_truncate(s, 250, NULL), 0);
	append_range(s, 250, 320, 2);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	s = open_prealloc(dir, SMALL_SEGMENT, NULL);
	check_range(s, 1, 249, 1);
	check_range(s, 250, 320, 2);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_torn_garbage_tail)
{
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	uint8_t junk[3000];
	unsigned seed = 7;
	make_log(dir, 20);
	/* Half a record's header that looks right, then noise. */
	for (size_t i = 0; i < sizeof(junk); i++) {
		seed = seed * 1103515245u + 12345u;
		junk[i] = (uint8_t)(seed >> 16);
	}
	junk[0] = 10;
	junk[1] = junk[2] = junk[3] = 0;
	tu_append(dir, seg, junk, sizeof(junk));
	expect_recovered(dir, 20, "discarded 3000 torn bytes");
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_torn_header)
{
	char *dir = tu_mkdtemp();
	uint8_t header[RAFT_SEGMENT_HEADER_SIZE];
	uint8_t zeros[RAFT_SEGMENT_HEADER_SIZE + 100] = {0};
	make_log(dir, 20);
	/* A rollover's new file whose header was cut short by the crash. */
	tu_read_at(dir, "seg-0000000000000001", 0, header, sizeof(header));
	tu_write_at(dir, "seg-0000000000000002", 0, header, 17);
	expect_recovered(dir, 20, "seg-0000000000000002 whose header was never");
	ck_assert(!tu_exists(dir, "seg-0000000000000002") ||
		  tu_file_size(dir, "seg-0000000000000002") > 17);
	/* And one that holds only zeros (size extended, data never written). */
	tu_write_at(dir, "seg-00000000000000ff", 0, zeros, sizeof(zeros));
	expect_recovered(dir, 25, "seg-00000000000000ff whose header was never");
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_bit_flip_last_segment)
{
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char expect[256];
	const char *seg = "seg-0000000000000001";
	uint64_t off = record_offset(1, 10);
	struct raft_log_store *s;
	make_log(dir, 20);
	/* A later batch shows that the batch holding 10 was synced. */
	s = open_ok(dir, 0, NULL);
	append_range(s, 21, 25, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	tu_flip(dir, seg, (long long)off + RAFT_SEGMENT_RECORD_HEADER_SIZE + 2, 5); /* payload */
	ck_assert_int_eq(open_err(dir, 0, errmsg), KVD_ECORRUPT);
	snprintf(expect, sizeof(expect), "%s/%s: bad record at offset %llu", dir, seg,
		 (unsigned long long)off);
	ck_assert_msg(strstr(errmsg, expect) != NULL, "errmsg: %s", errmsg);
	ck_assert_ptr_nonnull(strstr(errmsg, "followed by a valid record"));
	/* Nothing was cut. */
	ck_assert_int_eq(tu_file_size(dir, seg), (long long)record_offset(1, 26));
	/* The same in the length field of the first record. */
	tu_flip(dir, seg, (long long)off + RAFT_SEGMENT_RECORD_HEADER_SIZE + 2, 5);
	tu_flip(dir, seg, RAFT_SEGMENT_HEADER_SIZE, 1);
	ck_assert_int_eq(open_err(dir, 0, errmsg), KVD_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(errmsg, "at offset 40"));
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_bad_record_in_unsynced_batch)
{
	/* 11..20 were appended as one group-commit batch whose fdatasync never
	 * ran: after a power loss, write-back in any order can leave a bad
	 * record followed by good ones of the same batch. Nothing of that batch
	 * was acknowledged, so open cuts the batch at the bad record. */
	char *dir = tu_mkdtemp();
	char note[KVD_ERRMSG_SIZE] = "";
	char expect[512];
	const char *seg = "seg-0000000000000001";
	uint64_t off = record_offset(1, 15);
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	append_range(s, 1, 10, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	append_range(s, 11, 20, 1);
	raft_log_store_close(s);
	tu_flip(dir, seg, (long long)off + RAFT_SEGMENT_RECORD_HEADER_SIZE + 1, 3);
	s = open_ok(dir, 0, note);
	ck_assert_uint_eq(raft_log_store_last_index(s), 14);
	snprintf(expect, sizeof(expect), "at offset %llu of file %s/%s", (unsigned long long)off,
		 dir, seg);
	ck_assert_msg(strstr(note, expect) != NULL, "note: %s", note);
	ck_assert_msg(strstr(note, "unsynced batch") != NULL, "note: %s", note);
	check_range(s, 1, 14, 1);
	append_range(s, 15, 16, 2);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	s = open_ok(dir, 0, NULL);
	check_range(s, 15, 16, 2);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_bad_first_record_of_unsynced_batch)
{
	/* The unsynced batch 11..20 lost its first record (its page never
	 * reached the disk) while a later page did: the record before the bad
	 * one belongs to the synced batch 1..10, the ones after to the next
	 * batch. A crash alone produces this, so open cuts at 11 (found by
	 * sim --store-seed 4; refused before). */
	char *dir = tu_mkdtemp();
	char note[KVD_ERRMSG_SIZE] = "";
	const char *seg = "seg-0000000000000001";
	uint64_t off = record_offset(1, 11);
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	append_range(s, 1, 10, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	append_range(s, 11, 20, 1);
	raft_log_store_close(s);
	tu_flip(dir, seg, (long long)off + RAFT_SEGMENT_RECORD_HEADER_SIZE + 1, 3);
	s = open_ok(dir, 0, note);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	ck_assert_msg(strstr(note, "unsynced batch") != NULL, "note: %s", note);
	check_range(s, 1, 10, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_bad_first_record_after_truncation)
{
	/* Same, after a truncation cut the batch tags short: the batch appended
	 * after the cut must carry the tag after the one of the record left
	 * last, or the crash state above is refused (sim --store-seed 4). */
	char *dir = tu_mkdtemp();
	char note[KVD_ERRMSG_SIZE] = "";
	const char *seg = "seg-0000000000000001";
	uint64_t off = record_offset(1, 6);
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	append_range(s, 1, 5, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	for (raft_index i = 6; i <= 12; i += 2) { /* four more synced batches */
		append_range(s, i, i + 1, 1);
		ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	}
	ck_assert_int_eq(raft_log_store_truncate(s, 6, NULL), 0);
	append_range_salted(s, 6, 12, 2, 9);
	raft_log_store_close(s);
	tu_flip(dir, seg, (long long)off + RAFT_SEGMENT_RECORD_HEADER_SIZE + 1, 3);
	s = open_ok(dir, 0, note);
	ck_assert_uint_eq(raft_log_store_last_index(s), 5);
	ck_assert_msg(strstr(note, "unsynced batch") != NULL, "note: %s", note);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

/* File operations that count directory fsyncs and record whether a new
 * segment's header was fdatasynced before its first record was written. */
static struct {
	int dir_fsyncs;
	int created_fd;	      /* last segment created, -1 when none pending */
	bool header_synced;   /* fdatasync on created_fd before any record */
	bool record_unsynced; /* a record written after an unsynced header */
} io_log;

static int count_openat(void *ctx, int dir_fd, const char *name, int flags, mode_t mode)
{
	int fd = raft_log_io_posix.openat(ctx, dir_fd, name, flags, mode);
	if (fd >= 0 && (flags & O_CREAT) && strncmp(name, "seg-", 4) == 0) {
		io_log.created_fd = fd;
		io_log.header_synced = false;
	}
	return fd;
}

static int count_fsync(void *ctx, int fd)
{
	io_log.dir_fsyncs++; /* the store fsyncs only its directory */
	return raft_log_io_posix.fsync(ctx, fd);
}

static int count_fdatasync(void *ctx, int fd)
{
	if (fd == io_log.created_fd) {
		io_log.header_synced = true;
	}
	return raft_log_io_posix.fdatasync(ctx, fd);
}

static ssize_t count_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t offset)
{
	if (fd == io_log.created_fd && offset >= RAFT_SEGMENT_HEADER_SIZE &&
	    !io_log.header_synced) {
		io_log.record_unsynced = true;
	}
	return raft_log_io_posix.pwrite(ctx, fd, buf, len, offset);
}

static struct raft_log_store *open_counting(const char *dir, struct raft_log_io *io)
{
	struct raft_log_store_options opts = {
	    .segment_size = SMALL_SEGMENT, .io = io, .no_prealloc = true};
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s = NULL;
	*io = raft_log_io_posix;
	io->openat = count_openat;
	io->fsync = count_fsync;
	io->fdatasync = count_fdatasync;
	io->pwrite = count_pwrite;
	memset(&io_log, 0, sizeof(io_log));
	io_log.created_fd = -1;
	ck_assert_msg(raft_log_store_open(dir, &opts, &s, errmsg) == 0, "%s", errmsg);
	return s;
}

START_TEST(test_raft_log_store_truncate_syncs_new_segment_name)
{
	/* "Everything left is durable" after a truncation includes the name of
	 * a segment created since the last sync (sim --store-seed 3 lost it). */
	char *dir = tu_mkdtemp();
	struct raft_log_io io;
	struct raft_log_store *s = open_counting(dir, &io);
	raft_index last;
	append_range(s, 1, 60, 1); /* several rollovers, last segment unsynced */
	last = raft_log_store_last_index(s);
	io_log.dir_fsyncs = 0;
	ck_assert_int_eq(raft_log_store_truncate(s, last, NULL), 0);
	ck_assert_int_ge(io_log.dir_fsyncs, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_new_segment_header_synced_first)
{
	/* A new segment's header is durable before records share its page
	 * (sim --store-seed 10: a lost header page before a kept one). */
	char *dir = tu_mkdtemp();
	struct raft_log_io io;
	struct raft_log_store *s = open_counting(dir, &io);
	append_range(s, 1, 60, 1);
	ck_assert_int_ge(raft_log_store_first_index(s), 1);
	ck_assert(!io_log.record_unsynced);
	ck_assert(io_log.header_synced);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_bad_record_in_synced_batch_of_last_segment)
{
	/* The same damage in 5, inside a batch that a later batch (11..20)
	 * proves synced, is corruption: open refuses, naming file and offset. */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char expect[512];
	const char *seg = "seg-0000000000000001";
	uint64_t off = record_offset(1, 5);
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	append_range(s, 1, 10, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	append_range(s, 11, 20, 1);
	raft_log_store_close(s);
	tu_flip(dir, seg, (long long)off + RAFT_SEGMENT_RECORD_HEADER_SIZE + 1, 3);
	ck_assert_int_eq(open_err(dir, 0, errmsg), KVD_ECORRUPT);
	snprintf(expect, sizeof(expect), "%s/%s: bad record at offset %llu", dir, seg,
		 (unsigned long long)off);
	ck_assert_msg(strstr(errmsg, expect) != NULL, "errmsg: %s", errmsg);
	ck_assert_int_eq(tu_file_size(dir, seg), (long long)record_offset(1, 21));
	tu_rmtree(dir);
}
END_TEST

/* Writes by hand a version 1 segment (before batch tags: the field is 0)
 * holding entries 1..n of term 1, each with payload "v1-<index>". */
static void craft_v1_segment(const char *dir, raft_index n)
{
	struct raft_segment seg = {.sequence = 1, .first_index = 1};
	uint8_t header[RAFT_SEGMENT_HEADER_SIZE];
	uint8_t rec[RAFT_SEGMENT_RECORD_HEADER_SIZE + 32];
	long long off = RAFT_SEGMENT_HEADER_SIZE;
	raft_segment_header_encode(&seg, header);
	header[4] = 1; /* version 1, little-endian */
	header[5] = header[6] = header[7] = 0;
	{
		uint32_t crc = raft_crc32c(0, header, RAFT_SEGMENT_HEADER_SIZE - 4);
		for (int i = 0; i < 4; i++) {
			header[RAFT_SEGMENT_HEADER_SIZE - 4 + i] = (uint8_t)(crc >> (8 * i));
		}
	}
	tu_write_at(dir, "seg-0000000000000001", 0, header, sizeof(header));
	for (raft_index i = 1; i <= n; i++) {
		char data[32];
		int len = snprintf(data, sizeof(data), "v1-%llu", (unsigned long long)i);
		size_t size = raft_segment_record_encode(rec, i, 1, RAFT_ENTRY_COMMAND, 0, data,
							 (uint32_t)len);
		tu_write_at(dir, "seg-0000000000000001", off, rec, size);
		off += (long long)size;
	}
}

START_TEST(test_raft_log_store_open_version_1_segment)
{
	/* Files written before batch tags are still read and appended to; a
	 * bad record followed by a valid one there stays corruption, since
	 * nothing tells which batch it belonged to. */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s;
	struct raft_entry *e = NULL;
	size_t n = 0;
	craft_v1_segment(dir, 8);
	s = open_ok(dir, 0, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 8);
	ck_assert_int_eq(raft_log_store_read(s, 1, 8, 0, &e, &n, NULL), 0);
	ck_assert_uint_eq(n, 8);
	ck_assert_uint_eq(e[6].len, 4);
	ck_assert_int_eq(memcmp(e[6].data, "v1-7", 4), 0);
	free(e);
	raft_log_store_close(s);

	tu_flip(dir, "seg-0000000000000001",
		RAFT_SEGMENT_HEADER_SIZE + 3 * (RAFT_SEGMENT_RECORD_HEADER_SIZE + 4) +
		    RAFT_SEGMENT_RECORD_HEADER_SIZE + 1,
		2); /* payload of entry 4 */
	ck_assert_int_eq(open_err(dir, 0, errmsg), KVD_ECORRUPT);
	ck_assert_msg(strstr(errmsg, "bad record at offset 148") != NULL, "errmsg: %s", errmsg);
	tu_rmtree(dir);
}
END_TEST

/* Appends entry index with a payload of len bytes of 'x'. */
static void append_big(struct raft_log_store *s, raft_index index, size_t len)
{
	static uint8_t data[8192];
	struct raft_entry e = {.index = index, .term = 1, .type = RAFT_ENTRY_COMMAND};
	ck_assert_uint_le(len, sizeof(data));
	memset(data, 'x', len);
	e.data = data;
	e.len = len;
	ck_assert_int_eq(raft_log_store_append(s, &e, 1, NULL), 0);
}

START_TEST(test_raft_log_store_open_bad_first_record_of_new_segment)
{
	/* The batch after a rollover opens a new segment: its first record (5
	 * KB, spanning pages) is damaged, the records after it are intact. That
	 * record is of the batch after the seal's (tags grow by one per synced
	 * batch), which is the last one written: cut, the log ends at the seal. */
	char *dir = tu_mkdtemp();
	char note[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s = open_ok(dir, 16384, NULL);
	char **names = NULL;
	raft_index sealed_last;
	size_t n;
	append_range(s, 1, 40, 1); /* one segment */
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	ck_assert_int_eq(raft_log_store_remove_head(s, 1, NULL), 0); /* seals the open one */
	sealed_last = raft_log_store_last_index(s);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0); /* nothing pending */
	append_big(s, sealed_last + 1, 5000);
	append_range(s, sealed_last + 2, sealed_last + 4, 1);
	raft_log_store_close(s);
	n = seg_list(dir, &names);
	tu_flip(dir, names[n - 1],
		RAFT_SEGMENT_HEADER_SIZE + RAFT_SEGMENT_RECORD_HEADER_SIZE + 4500, 0);
	s = open_ok(dir, 16384, note);
	ck_assert_uint_eq(raft_log_store_last_index(s), sealed_last);
	ck_assert_msg(strstr(note, "unsynced batch") != NULL, "note: %s", note);
	ck_assert_msg(strstr(note, names[n - 1]) != NULL, "note: %s", note);
	raft_log_store_close(s);
	seg_list_free(names, n);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_bad_first_record_of_synced_segment)
{
	/* The same damage when the first batch of the new segment was synced and
	 * a later batch follows: corruption, refused with file and offset. */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char expect[512];
	struct raft_log_store *s = open_ok(dir, 16384, NULL);
	char **names = NULL;
	raft_index last;
	size_t n;
	append_range(s, 1, 40, 1);
	ck_assert_int_eq(raft_log_store_remove_head(s, 1, NULL), 0);
	last = raft_log_store_last_index(s);
	append_big(s, last + 1, 5000);
	append_range(s, last + 2, last + 3, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	append_range(s, last + 4, last + 5, 1);
	raft_log_store_close(s);
	n = seg_list(dir, &names);
	tu_flip(dir, names[n - 1],
		RAFT_SEGMENT_HEADER_SIZE + RAFT_SEGMENT_RECORD_HEADER_SIZE + 4500, 0);
	ck_assert_int_eq(open_err(dir, 16384, errmsg), KVD_ECORRUPT);
	snprintf(expect, sizeof(expect), "%s/%s: bad record at offset %d", dir, names[n - 1],
		 RAFT_SEGMENT_HEADER_SIZE);
	ck_assert_msg(strstr(errmsg, expect) != NULL, "errmsg: %s", errmsg);
	seg_list_free(names, n);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_misplaced_record_at_tail)
{
	/* An intact record with the wrong index is corruption, not a torn write. */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char expect[256];
	const char *seg = "seg-0000000000000001";
	uint8_t rec[RAFT_SEGMENT_RECORD_HEADER_SIZE + 3];
	make_log(dir, 20);
	raft_segment_record_encode(rec, 30, 1, RAFT_ENTRY_COMMAND, 1, "abc", 3);
	tu_append(dir, seg, rec, sizeof(rec));
	ck_assert_int_eq(open_err(dir, 0, errmsg), KVD_ECORRUPT);
	snprintf(expect, sizeof(expect), "%s/%s: record at offset %llu passes its checksum", dir,
		 seg, (unsigned long long)record_offset(1, 21));
	ck_assert_msg(strstr(errmsg, expect) != NULL, "errmsg: %s", errmsg);
	ck_assert_int_eq(tu_file_size(dir, seg),
			 (long long)record_offset(1, 21) + (long long)sizeof(rec));
	tu_rmtree(dir);
}
END_TEST

/* A log of 1..200 in several small segments; returns the file names. */
static size_t make_multi(const char *dir, char ***names)
{
	struct raft_log_store *s = open_ok(dir, SMALL_SEGMENT, NULL);
	size_t n;
	append_range(s, 1, 200, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	n = seg_list(dir, names);
	ck_assert_uint_ge(n, 3);
	return n;
}

START_TEST(test_raft_log_store_read_bit_flip_closed_segment)
{
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char expect[256];
	struct raft_log_store *s;
	struct raft_entry *e = NULL;
	size_t n_read = 0;
	char **names;
	size_t n = make_multi(dir, &names);
	uint64_t off = record_offset(1, 3);

	tu_flip(dir, names[0], (long long)off + 20, 0); /* term field of entry 3 */
	/* Open checks closed segments by header, seal and last record only. */
	s = open_ok(dir, SMALL_SEGMENT, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 200);
	check_range(s, 100, 200, 1); /* other segments still read */
	ck_assert_int_eq(raft_log_store_read(s, 5, 6, 0, &e, &n_read, errmsg), KVD_ECORRUPT);
	snprintf(expect, sizeof(expect), "%s/%s: bad record at offset %llu", dir, names[0],
		 (unsigned long long)off);
	ck_assert_msg(strstr(errmsg, expect) != NULL, "errmsg: %s", errmsg);
	/* Still refused on the next attempt: nothing was dropped. */
	ck_assert_int_eq(raft_log_store_read(s, 1, 2, 0, &e, &n_read, NULL), KVD_ECORRUPT);
	raft_log_store_close(s);
	/* A full check at open finds it before any read. */
	{
		struct raft_log_store_options opts = {.segment_size = SMALL_SEGMENT,
						      .verify_all = true};
		ck_assert_int_eq(raft_log_store_open(dir, &opts, &s, errmsg), KVD_ECORRUPT);
		ck_assert_msg(strstr(errmsg, expect) != NULL, "errmsg: %s", errmsg);
		tu_flip(dir, names[0], (long long)off + 20, 0);
		ck_assert_int_eq(raft_log_store_open(dir, &opts, &s, errmsg), 0);
		ck_assert_str_eq(errmsg, "");
		check_range(s, 1, 200, 1);
		raft_log_store_close(s);
	}
	seg_list_free(names, n);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_bad_seal_or_last_record)
{
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char **names;
	size_t n = make_multi(dir, &names);
	long long size = tu_file_size(dir, names[1]);

	/* The last entry record of a closed segment, just before the seal. */
	tu_flip(dir, names[1], size - RAFT_SEGMENT_SEAL_SIZE - 1, 4);
	ck_assert_int_eq(open_err(dir, SMALL_SEGMENT, errmsg), KVD_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(errmsg, names[1]));
	ck_assert_ptr_nonnull(strstr(errmsg, "last record at offset"));
	tu_flip(dir, names[1], size - RAFT_SEGMENT_SEAL_SIZE - 1, 4);
	/* The seal itself. */
	tu_flip(dir, names[1], size - 3, 4);
	ck_assert_int_eq(open_err(dir, SMALL_SEGMENT, errmsg), KVD_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(errmsg, "no valid seal at offset"));
	tu_flip(dir, names[1], size - 3, 4);
	/* A header of a closed segment. */
	tu_flip(dir, names[0], 24, 0);
	ck_assert_int_eq(open_err(dir, SMALL_SEGMENT, errmsg), KVD_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(errmsg, "bad header at offset 0"));
	ck_assert_ptr_nonnull(strstr(errmsg, names[0]));
	tu_flip(dir, names[0], 24, 0);
	ck_assert_int_eq(open_err(dir, SMALL_SEGMENT, errmsg), 0);
	seg_list_free(names, n);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_missing_segment)
{
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char path[4200];
	char **names;
	size_t n = make_multi(dir, &names);
	tu_path(path, sizeof(path), dir, names[1]);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(open_err(dir, SMALL_SEGMENT, errmsg), KVD_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(errmsg, "not contiguous"));
	ck_assert_ptr_nonnull(strstr(errmsg, names[0]));
	ck_assert_ptr_nonnull(strstr(errmsg, names[2]));
	seg_list_free(names, n);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_unsynced_crash)
{
	/* The crash may keep any prefix of the bytes written after the last
	 * sync; every cut point must recover to a valid prefix of the log. */
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	long long synced;
	long long full;
	uint8_t *image;
	append_range(s, 1, 10, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	synced = tu_file_size(dir, seg);
	append_range(s, 11, 15, 1); /* no sync */
	full = tu_file_size(dir, seg);
	raft_log_store_close(s);
	image = malloc((size_t)full);
	tu_read_at(dir, seg, 0, image, (size_t)full);
	for (long long cut = synced; cut <= full; cut += 3) {
		raft_index last;
		tu_truncate(dir, seg, 0);
		tu_write_at(dir, seg, 0, image, (size_t)cut);
		s = open_ok(dir, 0, (char[KVD_ERRMSG_SIZE]){0});
		last = raft_log_store_last_index(s);
		ck_assert_uint_ge(last, 10);
		ck_assert_uint_le(last, 15);
		ck_assert_int_le((long long)record_offset(1, last + 1), cut);
		ck_assert_int_gt((long long)record_offset(1, last + 2), cut);
		check_range(s, 1, last, 1);
		raft_log_store_close(s);
	}
	free(image);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_locked)
{
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	ck_assert_int_eq(open_err(dir, 0, errmsg), KVD_ELOCKED);
	ck_assert_ptr_nonnull(strstr(errmsg, dir));
	ck_assert_ptr_nonnull(strstr(errmsg, "LOCK"));
	raft_log_store_close(s);
	s = open_ok(dir, 0, NULL);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_append_write_failure_rolls_back)
{
	/* A file size limit makes write() stop part way through a batch, the
	 * way a full disk does; the store must cut the partial batch. */
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_entry e[8];
	static uint8_t big[8][1000];
	struct rlimit old;
	struct rlimit lim;
	long long before;
	int rv;

	append_range(s, 1, 10, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	before = tu_file_size(dir, seg);
	for (int i = 0; i < 8; i++) {
		memset(big[i], 'a' + i, sizeof(big[i]));
		e[i] = (struct raft_entry){.index = 11 + (raft_index)i,
					   .term = 1,
					   .type = RAFT_ENTRY_COMMAND,
					   .data = big[i],
					   .len = sizeof(big[i])};
	}
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)before + 2500; /* room for two and a half records */
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	rv = raft_log_store_append(s, e, 8, errmsg);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_int_eq(rv, KVD_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(errmsg, seg));
	ck_assert_int_eq(tu_file_size(dir, seg), before);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	/* Space is back: the same batch goes through. */
	ck_assert_int_eq(raft_log_store_append(s, e, 8, NULL), 0);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	s = open_ok(dir, 0, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 18);
	check_range(s, 1, 10, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_append_failure_drops_unsynced_entries)
{
	/* Group commit: 11..12 were appended but not synced when the append of
	 * 13.. failed. Nothing of that batch is durable, so the store must fall
	 * back to what the last sync covered (10), not keep 12 as if it were
	 * on disk: the caller restarts from last_index. */
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	char errmsg[KVD_ERRMSG_SIZE] = "";
	static uint8_t big[4][1000];
	struct raft_entry e[4];
	struct rlimit old;
	struct rlimit lim;
	long long synced;
	int rv;

	append_range(s, 1, 10, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	synced = tu_file_size(dir, seg);
	append_range(s, 11, 12, 1);
	for (int i = 0; i < 4; i++) {
		memset(big[i], 'a' + i, sizeof(big[i]));
		e[i] = (struct raft_entry){.index = 13 + (raft_index)i,
					   .term = 1,
					   .type = RAFT_ENTRY_COMMAND,
					   .data = big[i],
					   .len = sizeof(big[i])};
	}
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)tu_file_size(dir, seg) + 1500;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	rv = raft_log_store_append(s, e, 4, errmsg);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_int_eq(rv, KVD_ETOOBIG);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	ck_assert_int_eq(tu_file_size(dir, seg), synced);
	/* The store goes on from 11. */
	append_range(s, 11, 12, 2);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	s = open_ok(dir, 0, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 12);
	check_range(s, 1, 10, 1);
	check_range(s, 11, 12, 2);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_discard_unsynced)
{
	/* Another job of the writer's batch failed (a meta write): the entries
	 * appended since the last sync are dropped, also from a segment created
	 * since then (rollover), and what was synced stays. */
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, SMALL_SEGMENT, NULL);
	char **names = NULL;
	size_t n;
	append_range(s, 1, 40, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	ck_assert_int_eq(raft_log_store_discard_unsynced(s, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 40);
	append_range(s, 41, 44, 1);
	ck_assert_int_eq(raft_log_store_discard_unsynced(s, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 40);
	/* Rollovers sync what they seal. */
	append_range(s, 41, 200, 3);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	n = seg_list(dir, &names);
	ck_assert_uint_gt(n, 1);
	seg_list_free(names, n);
	append_range(s, 201, 201, 3);
	ck_assert_int_eq(raft_log_store_discard_unsynced(s, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 200);
	/* A segment created since the last sync (after the seal of a head
	 * removal): its header is rewritten and synced, the entry dropped. */
	append_range(s, 201, 230, 3);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	ck_assert_int_eq(raft_log_store_remove_head(s, 230, NULL), 0); /* seals */
	append_range(s, 231, 232, 3);
	ck_assert_int_eq(raft_log_store_discard_unsynced(s, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 230);
	n = (size_t)raft_log_store_last_index(s);
	raft_log_store_close(s);
	s = open_ok(dir, SMALL_SEGMENT, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), n);
	ck_assert_uint_le(raft_log_store_first_index(s), 230);
	check_range(s, raft_log_store_first_index(s), n, 3);
	append_range(s, n + 1, n + 5, 3);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_term_at_across_segments)
{
	char *dir = tu_mkdtemp();
	struct raft_log_store *s = open_ok(dir, SMALL_SEGMENT, NULL);
	raft_term t;
	for (raft_term term = 1; term <= 10; term++) {
		append_range(s, (term - 1) * 40 + 1, term * 40, term);
	}
	raft_log_store_close(s);
	s = open_ok(dir, SMALL_SEGMENT, NULL);
	/* Touch many closed segments (more than are cached), in both orders. */
	for (raft_index i = 1; i <= 400; i += 3) {
		ck_assert_int_eq(raft_log_store_term_at(s, i, &t, NULL), 0);
		ck_assert_uint_eq(t, (i - 1) / 40 + 1);
	}
	for (raft_index i = 400; i >= 7; i -= 7) {
		ck_assert_int_eq(raft_log_store_term_at(s, i, &t, NULL), 0);
		ck_assert_uint_eq(t, (i - 1) / 40 + 1);
	}
	ck_assert_int_eq(raft_log_store_term_at(s, 401, &t, NULL), KVD_ENOTFOUND);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_open_sealed_last_segment)
{
	/* Rollover right after entry 1: the last file on disk is sealed. */
	char *dir = tu_mkdtemp();
	uint64_t size = RAFT_SEGMENT_HEADER_SIZE + record_size(1);
	struct raft_log_store *s = open_ok(dir, size, NULL);
	char **names;
	size_t n;
	append_range(s, 1, 1, 1);
	raft_log_store_close(s);
	ck_assert_int_eq(tu_file_size(dir, "seg-0000000000000001"),
			 (long long)(size + RAFT_SEGMENT_SEAL_SIZE));
	s = open_ok(dir, size, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 1);
	append_range(s, 2, 2, 2);
	append_range(s, 3, 3, 2);
	raft_log_store_close(s);
	n = seg_list(dir, &names);
	ck_assert_uint_eq(n, 3); /* each entry filled a segment of its own */
	ck_assert_str_eq(names[1], "seg-0000000000000002");
	seg_list_free(names, n);
	s = open_ok(dir, size, NULL);
	check_range(s, 1, 1, 1);
	check_range(s, 2, 3, 2);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_log_store_append_seal_write_failure_retried)
{
	/* The batch fits under the file size limit but its rollover seal does
	 * not: the append still succeeds, and the seal is written by a later
	 * append once there is room. */
	char *dir = tu_mkdtemp();
	const char *seg = "seg-0000000000000001";
	uint64_t size = record_offset(1, 11); /* header + entries 1..10 */
	struct raft_log_store *s = open_ok(dir, size, NULL);
	struct rlimit old;
	struct rlimit lim;
	char **names;
	size_t n;
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)size + 10;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	append_range(s, 1, 10, 1);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_int_eq(tu_file_size(dir, seg), (long long)size); /* no partial seal */
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	append_range(s, 11, 11, 1); /* seals now */
	ck_assert_int_eq(tu_file_size(dir, seg),
			 (long long)(size + record_size(11) + RAFT_SEGMENT_SEAL_SIZE));
	append_range(s, 12, 12, 1); /* into a new segment */
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	n = seg_list(dir, &names);
	ck_assert_uint_eq(n, 2);
	seg_list_free(names, n);
	s = open_ok(dir, size, NULL);
	check_range(s, 1, 12, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

/* The descriptor this process holds on dir/name, found by inode. */
static int fd_of(const char *dir, const char *name)
{
	char path[4200];
	struct stat want;
	tu_path(path, sizeof(path), dir, name);
	ck_assert_int_eq(stat(path, &want), 0);
	for (int fd = 3; fd < 1024; fd++) {
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_ino == want.st_ino && st.st_dev == want.st_dev) {
			return fd;
		}
	}
	return -1;
}

START_TEST(test_raft_log_store_sync_failure_fails_store)
{
	/* Swap the segment's descriptor for /dev/null, where fdatasync and
	 * ftruncate fail: the store cannot cut back to a known state, so it
	 * refuses everything, and a reopen recovers the synced prefix. */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s = open_ok(dir, 0, NULL);
	struct raft_entry e = {.index = 21, .term = 1, .type = RAFT_ENTRY_NOOP};
	int fd;
	int null_fd;
	append_range(s, 1, 20, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	fd = fd_of(dir, "seg-0000000000000001");
	ck_assert_int_ge(fd, 0);
	null_fd = open("/dev/null", O_RDWR);
	ck_assert_int_ge(null_fd, 0);
	ck_assert_int_eq(dup2(null_fd, fd), fd);
	close(null_fd);
	ck_assert_int_eq(raft_log_store_append(s, &e, 1, NULL), 0);
	ck_assert_int_eq(raft_log_store_sync(s, errmsg), KVD_EIO);
	ck_assert_ptr_nonnull(strstr(errmsg, "seg-0000000000000001"));
	ck_assert_ptr_nonnull(strstr(errmsg, "reopened"));
	e.index = 22;
	ck_assert_int_eq(raft_log_store_append(s, &e, 1, NULL), KVD_EIO);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), KVD_EIO);
	ck_assert_int_eq(raft_log_store_truncate(s, 5, NULL), KVD_EIO);
	ck_assert_int_eq(raft_log_store_reset(s, 100, 1, NULL), KVD_EIO);
	raft_log_store_close(s);
	s = open_ok(dir, 0, NULL);
	ck_assert_uint_eq(raft_log_store_last_index(s), 20);
	check_range(s, 1, 20, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

static uint64_t fake_free; /* bytes fake_fspace reports */

static int fake_fspace(void *ctx, int fd, uint64_t *bytes)
{
	(void)ctx;
	(void)fd;
	*bytes = fake_free;
	return 0;
}

START_TEST(test_raft_log_store_append_no_space_in_preallocated_space)
{
	/* A full file system fails an append with KVD_ENOSPC even when the
	 * records would fit in space preallocated earlier (the node answers
	 * 507 at a failed append; the state machine needs room too). */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_io io = raft_log_io_posix;
	struct raft_log_store_options opts = {.segment_size = 1 << 20, .io = &io};
	struct raft_entry e = {.index = 11, .term = 1, .type = RAFT_ENTRY_COMMAND};
	struct raft_log_store *s = NULL;
	io.fspace = fake_fspace;
	fake_free = (uint64_t)1 << 30;
	ck_assert_int_eq(raft_log_store_open(dir, &opts, &s, errmsg), 0);
	append_range(s, 1, 10, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	fake_free = 0;
	ck_assert_int_eq(raft_log_store_append(s, &e, 1, errmsg), KVD_ENOSPC);
	ck_assert_msg(strstr(errmsg, "No space left") != NULL, "errmsg: %s", errmsg);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	fake_free = (uint64_t)1 << 30;
	append_range(s, 11, 20, 1);
	ck_assert_int_eq(raft_log_store_sync(s, NULL), 0);
	raft_log_store_close(s);
	s = open_prealloc(dir, 1 << 20, NULL);
	check_range(s, 1, 20, 1);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

static Suite *log_store_suite(void)
{
	Suite *s = suite_create("raft_log_store");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_raft_log_store_open_empty);
	tcase_add_test(tc, test_raft_log_store_append_read_round_trip);
	tcase_add_test(tc, test_raft_log_store_read_bounds_and_max_bytes);
	tcase_add_test(tc, test_raft_log_store_append_non_contiguous);
	tcase_add_test(tc, test_raft_log_store_append_rollover);
	tcase_add_test(tc, test_raft_log_store_truncate_mid_segment);
	tcase_add_test(tc, test_raft_log_store_truncate_across_segments);
	tcase_add_test(tc, test_raft_log_store_truncate_everything);
	tcase_add_test(tc, test_raft_log_store_remove_head);
	tcase_add_test(tc, test_raft_log_store_remove_head_rolls_partly_covered_segment);
	tcase_add_test(tc, test_raft_log_store_disk_use_follows_snapshots);
	tcase_add_test(tc, test_raft_log_store_reset);
	tcase_add_test(tc, test_raft_log_store_reset_create_failure_keeps_log);
	tcase_add_test(tc, test_raft_log_store_open_interrupted_reset);
	tcase_add_test(tc, test_raft_log_store_open_torn_partial_record);
	tcase_add_test(tc, test_raft_log_store_open_zero_tail_is_end_of_log);
	tcase_add_test(tc, test_raft_log_store_open_torn_record_before_zeros);
	tcase_add_test(tc, test_raft_log_store_open_bad_record_valid_record_zeros);
	tcase_add_test(tc, test_raft_log_store_open_seal_then_zeros);
	tcase_add_test(tc, test_raft_log_store_append_does_not_grow_file);
	tcase_add_test(tc, test_raft_log_store_prealloc_rollover_truncation);
	tcase_add_test(tc, test_raft_log_store_append_no_space_in_preallocated_space);
	tcase_add_test(tc, test_raft_log_store_open_torn_garbage_tail);
	tcase_add_test(tc, test_raft_log_store_open_torn_header);
	tcase_add_test(tc, test_raft_log_store_open_bit_flip_last_segment);
	tcase_add_test(tc, test_raft_log_store_open_misplaced_record_at_tail);
	tcase_add_test(tc, test_raft_log_store_open_bad_record_in_unsynced_batch);
	tcase_add_test(tc, test_raft_log_store_open_version_1_segment);
	tcase_add_test(tc, test_raft_log_store_open_bad_first_record_of_new_segment);
	tcase_add_test(tc, test_raft_log_store_open_bad_first_record_of_synced_segment);
	tcase_add_test(tc, test_raft_log_store_open_bad_record_in_synced_batch_of_last_segment);
	tcase_add_test(tc, test_raft_log_store_read_bit_flip_closed_segment);
	tcase_add_test(tc, test_raft_log_store_open_bad_seal_or_last_record);
	tcase_add_test(tc, test_raft_log_store_open_missing_segment);
	tcase_add_test(tc, test_raft_log_store_open_unsynced_crash);
	tcase_add_test(tc, test_raft_log_store_open_locked);
	tcase_add_test(tc, test_raft_log_store_append_write_failure_rolls_back);
	tcase_add_test(tc, test_raft_log_store_append_failure_drops_unsynced_entries);
	tcase_add_test(tc, test_raft_log_store_discard_unsynced);
	tcase_add_test(tc, test_raft_log_store_append_seal_write_failure_retried);
	tcase_add_test(tc, test_raft_log_store_sync_failure_fails_store);
	tcase_add_test(tc, test_raft_log_store_term_at_across_segments);
	tcase_add_test(tc, test_raft_log_store_open_sealed_last_segment);
	tcase_add_test(tc, test_raft_log_store_open_bad_first_record_of_unsynced_batch);
	tcase_add_test(tc, test_raft_log_store_open_bad_first_record_after_truncation);
	tcase_add_test(tc, test_raft_log_store_truncate_syncs_new_segment_name);
	tcase_add_test(tc, test_raft_log_store_new_segment_header_synced_first);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(log_store_suite());
	int failed;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
