/*
 * test_snapshot.c: the LZ4 snapshot stream on real files: write a view,
 * read its header, restore into a fresh directory with identical contents,
 * index, term and configuration; consistency of a view while applies go on;
 * rejection of bit flips, truncation and trailing bytes with the partial
 * directory removed; revisions carried by stream version 2, and version-1
 * streams still restored.
 */
#include <check.h>
#include <fcntl.h>
#include <lz4frame.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/snapshot.h"

static char tmpdir[64];
static char dbdir[128];
static char snap_path[128];
static char restore_dir[128];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kvd-test-snapshot-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(dbdir, sizeof(dbdir), "%s/db", tmpdir);
	snprintf(snap_path, sizeof(snap_path), "%s/snap.lz4", tmpdir);
	snprintf(restore_dir, sizeof(restore_dir), "%s/restored", tmpdir);
}

static void teardown(void)
{
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct engine *open_at(const char *dir)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct engine *e = NULL;
	int rv = engine_open(dir, NULL, &e, errmsg);

	ck_assert_msg(rv == 0, "engine_open %s: %d %s", dir, rv, errmsg);
	return e;
}

static void apply_text(struct engine *e, uint64_t index, uint64_t term, const char *text)
{
	struct engine_entry entry = {index, term, ENGINE_ENTRY_COMMAND, text, strlen(text)};
	ck_assert_int_eq(engine_apply(e, &entry, 1, NULL), 0);
}

/* Fills e with n keys "key<i>" (value "v<i>" plus a varying tail), then a
 * configuration entry; returns the last index used. */
static uint64_t fill(struct engine *e, int n, uint64_t index)
{
	char text[256];

	for (int i = 0; i < n; i++) {
		snprintf(text, sizeof(text), "PUT key%05d v%d with spaces\tand tabs %.*s", i, i,
			 i % 50, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		apply_text(e, ++index, 2, text);
	}
	{
		struct engine_entry cfg = {++index, 3, ENGINE_ENTRY_CONFIG, "{\"voters\":[1,2]}",
					   16};
		ck_assert_int_eq(engine_apply(e, &cfg, 1, NULL), 0);
	}
	return index;
}

/* Asserts both engines hold exactly the same current-generation records. */
static void assert_same_contents(struct engine *a, struct engine *b)
{
	struct engine_iter *ia, *ib;
	struct engine_record ra, rb;
	bool ea = false, eb = false;

	ck_assert_int_eq(engine_iter_open(a, &ia), 0);
	ck_assert_int_eq(engine_iter_open(b, &ib), 0);
	for (;;) {
		ck_assert_int_eq(engine_iter_next(ia, &ra, &ea), 0);
		ck_assert_int_eq(engine_iter_next(ib, &rb, &eb), 0);
		ck_assert_int_eq(ea, eb);
		if (ea) {
			break;
		}
		ck_assert_uint_eq(ra.key_len, rb.key_len);
		ck_assert_mem_eq(ra.key, rb.key, ra.key_len);
		ck_assert_uint_eq(ra.value_len, rb.value_len);
		ck_assert_mem_eq(ra.value, rb.value, ra.value_len);
		ck_assert_uint_eq(ra.revision, rb.revision);
	}
	engine_iter_close(ia);
	engine_iter_close(ib);
}

static void write_snapshot(struct engine *e, uint64_t *size)
{
	struct engine_view *view;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv;

	ck_assert_int_eq(engine_snapshot_begin(e, &view), 0);
	rv = engine_view_write(view, snap_path, size, errmsg);
	ck_assert_msg(rv == 0, "engine_view_write: %d %s", rv, errmsg);
	engine_view_release(view);
}

START_TEST(test_engine_snapshot_restore_roundtrip)
{
	struct engine *e = open_at(dbdir), *r;
	struct engine_snapshot_meta meta = {0}, rmeta = {0};
	char errmsg[KVD_ERRMSG_SIZE] = "";
	uint64_t size = 0, last, index, term;
	struct stat st;
	void *cfg;
	size_t cfg_len;

	apply_text(e, 1, 1, "PUT gone-after-clear 1");
	apply_text(e, 2, 1, "CLEAR");
	last = fill(e, 2000, 2);
	apply_text(e, ++last, 4, "PUT emoji \xF0\x9F\x98\x80 line\nbreak");
	write_snapshot(e, &size);
	ck_assert_int_eq(stat(snap_path, &st), 0);
	ck_assert_uint_eq(size, (uint64_t)st.st_size);

	ck_assert_int_eq(engine_snapshot_read_meta(snap_path, &meta, errmsg), 0);
	ck_assert_uint_eq(meta.index, last);
	ck_assert_uint_eq(meta.term, 4);
	ck_assert_uint_eq(meta.size, size);
	ck_assert_uint_eq(meta.config_len, 16);
	ck_assert_mem_eq(meta.config, "{\"voters\":[1,2]}", 16);
	engine_snapshot_meta_clear(&meta);

	ck_assert_int_eq(engine_snapshot_restore(snap_path, restore_dir, &rmeta, errmsg), 0);
	ck_assert_uint_eq(rmeta.index, last);
	engine_snapshot_meta_clear(&rmeta);
	r = open_at(restore_dir);
	engine_applied(r, &index, &term);
	ck_assert_uint_eq(index, last);
	ck_assert_uint_eq(term, 4);
	ck_assert_int_eq(engine_config_get(r, &cfg, &cfg_len), 0);
	ck_assert_uint_eq(cfg_len, 16);
	ck_assert_mem_eq(cfg, "{\"voters\":[1,2]}", 16);
	free(cfg);
	assert_same_contents(e, r);
	{
		void *v;
		size_t n;
		ck_assert_int_eq(engine_get(r, "gone-after-clear", 16, &v, &n), KVD_ENOTFOUND);
	}
	/* Restoring into an existing directory is refused. */
	ck_assert_int_eq(engine_snapshot_restore(snap_path, restore_dir, NULL, NULL), KVD_EEXIST);
	engine_close(r);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_snapshot_reader_yields_sorted_records)
{
	struct engine *e = open_at(dbdir);
	struct engine_snapshot_reader *rd;
	struct engine_record rec;
	char prev[64] = "";
	bool end = false;
	int n = 0;

	fill(e, 300, 0);
	write_snapshot(e, NULL);
	ck_assert_int_eq(engine_snapshot_reader_open(snap_path, &rd, NULL), 0);
	ck_assert_uint_eq(engine_snapshot_reader_meta(rd)->index, 301);
	for (;;) {
		char key[64];
		ck_assert_int_eq(engine_snapshot_reader_next(rd, &rec, &end, NULL), 0);
		if (end) {
			break;
		}
		snprintf(key, sizeof(key), "%.*s", (int)rec.key_len, rec.key);
		ck_assert_int_lt(strcmp(prev, key), 0);
		snprintf(prev, sizeof(prev), "%s", key);
		n++;
	}
	ck_assert_int_eq(n, 300);
	ck_assert_int_eq(engine_snapshot_reader_next(rd, &rec, &end, NULL), 0);
	ck_assert(end);
	engine_snapshot_reader_close(rd);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_snapshot_view_consistent_while_applying)
{
	struct engine *e = open_at(dbdir), *r;
	struct engine_view *view;
	struct engine_snapshot_meta meta = {0};
	uint64_t last = fill(e, 500, 0);
	void *v;
	size_t n;

	ck_assert_int_eq(engine_snapshot_begin(e, &view), 0);
	/* Applies continue after begin: overwrite, delete, clear, add. */
	apply_text(e, last + 1, 5, "PUT key00001 changed");
	apply_text(e, last + 2, 5, "DELETE key00002");
	apply_text(e, last + 3, 5, "CLEAR");
	apply_text(e, last + 4, 5, "PUT newkey 1");
	{
		struct engine_entry cfg = {last + 5, 5, ENGINE_ENTRY_CONFIG, "other", 5};
		ck_assert_int_eq(engine_apply(e, &cfg, 1, NULL), 0);
	}
	ck_assert_int_eq(engine_view_write(view, snap_path, NULL, NULL), 0);
	engine_view_release(view);

	ck_assert_int_eq(engine_snapshot_restore(snap_path, restore_dir, &meta, NULL), 0);
	ck_assert_uint_eq(meta.index, last);
	ck_assert_uint_eq(meta.config_len, 16);
	engine_snapshot_meta_clear(&meta);
	r = open_at(restore_dir);
	ck_assert_int_eq(engine_get(r, "key00001", 8, &v, &n), 0);
	ck_assert_uint_eq(n, strlen("v1 with spaces\tand tabs x"));
	ck_assert_mem_eq(v, "v1 with spaces\tand tabs x", n);
	free(v);
	ck_assert_int_eq(engine_get(r, "key00002", 8, &v, &n), 0);
	free(v);
	ck_assert_int_eq(engine_get(r, "key00499", 8, &v, &n), 0);
	free(v);
	ck_assert_int_eq(engine_get(r, "newkey", 6, &v, &n), KVD_ENOTFOUND);
	engine_close(r);
	engine_close(e);
}
END_TEST

static void *read_file(const char *path, size_t *len)
{
	struct stat st;
	void *buf;
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size);
	ck_assert_int_eq(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

/* Restoring the damaged file must fail with KVD_ECORRUPT and leave no
 * directory behind. */
static void assert_restore_rejected(const char *what)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct stat st;
	int rv = engine_snapshot_restore(snap_path, restore_dir, NULL, errmsg);

	ck_assert_msg(rv == KVD_ECORRUPT, "%s: want ECORRUPT, got %d (%s)", what, rv, errmsg);
	ck_assert_msg(strstr(errmsg, snap_path) != NULL, "%s: message lacks file: %s", what,
		      errmsg);
	ck_assert_msg(stat(restore_dir, &st) != 0, "%s: partial directory left", what);
}

START_TEST(test_engine_snapshot_restore_rejects_bit_flips)
{
	struct engine *e = open_at(dbdir);
	unsigned char *orig, *buf;
	size_t len;

	fill(e, 3000, 0);
	write_snapshot(e, NULL);
	engine_close(e);
	orig = read_file(snap_path, &len);
	buf = malloc(len);
	ck_assert_uint_gt(len, 1000);
	/* Flip one bit at spread positions: frame header, first block, the
	 * middle, near the end (content checksum). */
	size_t positions[] = {0, 5, 9, 40, len / 3, len / 2, len - 20, len - 2};
	for (size_t i = 0; i < sizeof(positions) / sizeof(positions[0]); i++) {
		char what[64];
		memcpy(buf, orig, len);
		buf[positions[i]] ^= (unsigned char)(1u << (i % 8));
		write_file(snap_path, buf, len);
		snprintf(what, sizeof(what), "bit flip at %zu of %zu", positions[i], len);
		assert_restore_rejected(what);
	}
	/* The undamaged file still restores. */
	write_file(snap_path, orig, len);
	ck_assert_int_eq(engine_snapshot_restore(snap_path, restore_dir, NULL, NULL), 0);
	free(buf);
	free(orig);
}
END_TEST

START_TEST(test_engine_snapshot_restore_rejects_truncation)
{
	struct engine *e = open_at(dbdir);
	unsigned char *orig;
	size_t len;

	fill(e, 3000, 0);
	write_snapshot(e, NULL);
	engine_close(e);
	orig = read_file(snap_path, &len);
	size_t cuts[] = {0, 3, 10, len / 2, len - 5, len - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		char what[64];
		write_file(snap_path, orig, cuts[i]);
		snprintf(what, sizeof(what), "truncated to %zu of %zu", cuts[i], len);
		assert_restore_rejected(what);
	}
	/* Trailing bytes after the frame are rejected too. */
	{
		unsigned char *longer = malloc(len + 4);
		memcpy(longer, orig, len);
		memcpy(longer + len, "junk", 4);
		write_file(snap_path, longer, len + 4);
		assert_restore_rejected("trailing bytes");
		free(longer);
	}
	free(orig);
}
END_TEST

START_TEST(test_engine_snapshot_read_meta_errors)
{
	struct engine_snapshot_meta meta = {0};

	ck_assert_int_eq(engine_snapshot_read_meta(snap_path, &meta, NULL), KVD_ENOTFOUND);
	write_file(snap_path, "not an lz4 frame at all", 23);
	ck_assert_int_eq(engine_snapshot_read_meta(snap_path, &meta, NULL), KVD_ECORRUPT);
}
END_TEST

START_TEST(test_engine_snapshot_empty_and_large_values)
{
	struct engine *e = open_at(dbdir), *r;
	struct engine_snapshot_meta meta = {0};
	size_t big_len = 3 * 1024 * 1024 + 17;
	char *big = malloc(big_len + 16);
	uint64_t size = 0;
	void *v;
	size_t n;

	/* Empty database, no configuration. */
	write_snapshot(e, &size);
	ck_assert_int_eq(engine_snapshot_read_meta(snap_path, &meta, NULL), 0);
	ck_assert_uint_eq(meta.index, 0);
	ck_assert_ptr_null(meta.config);
	engine_snapshot_meta_clear(&meta);

	/* A value larger than every internal buffer. */
	memcpy(big, "PUT big ", 8);
	for (size_t i = 0; i < big_len; i++) {
		big[8 + i] = (char)('!' + (i * 7919) % 90);
	}
	{
		struct engine_entry entry = {1, 1, ENGINE_ENTRY_COMMAND, big, 8 + big_len};
		ck_assert_int_eq(engine_apply(e, &entry, 1, NULL), 0);
	}
	write_snapshot(e, &size);
	ck_assert_int_eq(engine_snapshot_restore(snap_path, restore_dir, NULL, NULL), 0);
	r = open_at(restore_dir);
	ck_assert_int_eq(engine_get(r, "big", 3, &v, &n), 0);
	ck_assert_uint_eq(n, big_len);
	ck_assert_mem_eq(v, big + 8, big_len);
	free(v);
	engine_close(r);
	engine_close(e);
	free(big);
}
END_TEST

START_TEST(test_engine_snapshot_restore_then_swap)
{
	struct engine *src = open_at(dbdir), *dst;
	char dst_dir[160];
	uint64_t index, term;

	fill(src, 100, 0);
	write_snapshot(src, NULL);
	snprintf(dst_dir, sizeof(dst_dir), "%s/follower", tmpdir);
	dst = open_at(dst_dir);
	apply_text(dst, 1, 1, "PUT stale 1");
	ck_assert_int_eq(engine_snapshot_restore(snap_path, restore_dir, NULL, NULL), 0);
	ck_assert_int_eq(engine_swap(dst, restore_dir, NULL), 0);
	engine_applied(dst, &index, &term);
	ck_assert_uint_eq(index, 101);
	assert_same_contents(src, dst);
	engine_close(dst);
	engine_close(src);
}
END_TEST

START_TEST(test_engine_view_write_fd_reader_open_fd)
{
	struct engine *e = open_at(dbdir);
	struct engine_snapshot_reader *rd;
	struct engine_view *view;
	struct engine_record rec;
	uint64_t size = 0;
	bool end = false;
	int n = 0;
	int fd;

	fill(e, 50, 0);
	ck_assert_int_eq(engine_snapshot_begin(e, &view), 0);
	fd = open(snap_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(engine_view_write_fd(view, fd, &size, NULL), 0);
	engine_view_release(view);
	ck_assert_uint_gt(size, 0);
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	ck_assert_int_eq(engine_snapshot_reader_open_fd(fd, "dump", &rd, NULL), 0);
	ck_assert_uint_eq(engine_snapshot_reader_meta(rd)->index, 51);
	for (;;) {
		ck_assert_int_eq(engine_snapshot_reader_next(rd, &rec, &end, NULL), 0);
		if (end) {
			break;
		}
		n++;
	}
	ck_assert_int_eq(n, 50);
	engine_snapshot_reader_close(rd);
	/* The reader borrowed fd: still open. */
	ck_assert_int_eq(close(fd), 0);
	engine_close(e);
}
END_TEST

static void be32(unsigned char *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8) {
		p[i] = (unsigned char)v;
	}
}

static void be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8) {
		p[i] = (unsigned char)v;
	}
}

/* Writes a version-1 stream (records without revisions), as the previous
 * release wrote it, at index 30 with records a=1 and b=22. */
static void write_v1_stream(const char *path)
{
	unsigned char raw[256];
	unsigned char out[1024];
	LZ4F_preferences_t prefs;
	size_t n = 0, z;
	FILE *f;

	memcpy(raw, "KVDSNAP", 8);
	be32(raw + 8, 1);
	be64(raw + 12, 30);
	be64(raw + 20, 4);
	be32(raw + 28, 0);
	n = 32;
	raw[n++] = 'R';
	be32(raw + n, 1);
	be32(raw + n + 4, 1);
	memcpy(raw + n + 8, "a1", 2);
	n += 10;
	raw[n++] = 'R';
	be32(raw + n, 1);
	be32(raw + n + 4, 2);
	memcpy(raw + n + 8, "b22", 3);
	n += 11;
	raw[n++] = 'E';
	be64(raw + n, 2);
	n += 8;
	memset(&prefs, 0, sizeof(prefs));
	prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
	prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	z = LZ4F_compressFrame(out, sizeof(out), raw, n, &prefs);
	ck_assert(!LZ4F_isError(z));
	f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(out, 1, z, f), z);
	fclose(f);
}

START_TEST(test_engine_snapshot_v1_stream_still_restores)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct engine_snapshot_meta meta = {0};
	struct engine *r;
	void *v = NULL;
	size_t n = 0;
	uint64_t rev = 0;
	int rv;

	write_v1_stream(snap_path);
	rv = engine_snapshot_restore(snap_path, restore_dir, &meta, errmsg);
	ck_assert_msg(rv == 0, "restore: %d %s", rv, errmsg);
	ck_assert_uint_eq(meta.index, 30);
	engine_snapshot_meta_clear(&meta);
	r = open_at(restore_dir);
	ck_assert_int_eq(engine_get_rev(r, "b", 1, &v, &n, &rev), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_mem_eq(v, "22", 2);
	ck_assert_uint_eq(rev, 30); /* v1 records: revision = the stream's index */
	free(v);
	engine_close(r);
}
END_TEST

START_TEST(test_engine_snapshot_carries_revisions)
{
	struct engine *e = open_at(dbdir);
	struct engine *r;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	void *v = NULL;
	size_t n = 0;
	uint64_t rev = 0;
	int rv;

	apply_text(e, 5, 1, "PUT old x");
	apply_text(e, 9, 1, "PUT new y");
	apply_text(e, 12, 1, "PUT-IF 5 old z");
	write_snapshot(e, NULL);
	rv = engine_snapshot_restore(snap_path, restore_dir, NULL, errmsg);
	ck_assert_msg(rv == 0, "restore: %d %s", rv, errmsg);
	r = open_at(restore_dir);
	assert_same_contents(e, r);
	ck_assert_int_eq(engine_get_rev(r, "old", 3, &v, &n, &rev), 0);
	ck_assert_uint_eq(rev, 12);
	free(v);
	ck_assert_int_eq(engine_get_rev(r, "new", 3, &v, &n, &rev), 0);
	ck_assert_uint_eq(rev, 9);
	free(v);
	engine_close(r);
	engine_close(e);
}
END_TEST

static Suite *snapshot_suite(void)
{
	Suite *s = suite_create("snapshot");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_engine_snapshot_restore_roundtrip);
	tcase_add_test(tc, test_engine_snapshot_reader_yields_sorted_records);
	tcase_add_test(tc, test_engine_snapshot_view_consistent_while_applying);
	tcase_add_test(tc, test_engine_snapshot_restore_rejects_bit_flips);
	tcase_add_test(tc, test_engine_snapshot_restore_rejects_truncation);
	tcase_add_test(tc, test_engine_snapshot_read_meta_errors);
	tcase_add_test(tc, test_engine_snapshot_empty_and_large_values);
	tcase_add_test(tc, test_engine_snapshot_restore_then_swap);
	tcase_add_test(tc, test_engine_view_write_fd_reader_open_fd);
	tcase_add_test(tc, test_engine_snapshot_v1_stream_still_restores);
	tcase_add_test(tc, test_engine_snapshot_carries_revisions);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(snapshot_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
