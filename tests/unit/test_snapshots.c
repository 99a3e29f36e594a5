/*
 * test_snapshots.c: the node's choice of a snapshot file at recovery
 * (api/snapshots.c, kvd_snapshot_choose) on real files written by the
 * engine: the newest file that reads back whole wins; a damaged newer one
 * (truncated, bit-flipped) is set aside, never trusted, and the older good
 * files are not deleted.
 */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/snapshots.h"
#include "engine/engine.h"
#include "engine/snapshot.h"

static char tmpdir[64];
static char dbdir[128];
static char snapdir[128];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kvd-test-snapshots-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(dbdir, sizeof(dbdir), "%s/db", tmpdir);
	snprintf(snapdir, sizeof(snapdir), "%s/snapshots", tmpdir);
	ck_assert_int_eq(mkdir(snapdir, 0755), 0);
}

static void teardown(void)
{
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void snap_name(uint64_t index, uint64_t term, char *path)
{
	snprintf(path, PATH_MAX, "%s/snapshot-%020llu-%020llu.lz4", snapdir,
		 (unsigned long long)index, (unsigned long long)term);
}

/* Applies n more keys to e (indexes after *index) and writes a snapshot
 * file under the node's naming scheme; its path goes to path. */
static void add_snapshot(struct engine *e, uint64_t *index, int n, char *path)
{
	struct engine_view *view;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char text[128];
	int rv;

	for (int i = 0; i < n; i++) {
		struct engine_entry en = {++*index, 2, ENGINE_ENTRY_COMMAND, text, 0};
		snprintf(text, sizeof(text), "PUT key%06llu value-%d", (unsigned long long)*index,
			 i);
		en.len = strlen(text);
		ck_assert_int_eq(engine_apply(e, &en, 1, NULL), 0);
	}
	snap_name(*index, 2, path);
	ck_assert_int_eq(engine_snapshot_begin(e, &view), 0);
	rv = engine_view_write(view, path, NULL, errmsg);
	ck_assert_msg(rv == 0, "engine_view_write: %d %s", rv, errmsg);
	engine_view_release(view);
}

static struct engine *open_db(void)
{
	struct engine *e = NULL;
	char errmsg[KVD_ERRMSG_SIZE] = "";

	ck_assert_int_eq(engine_open(dbdir, NULL, &e, errmsg), 0);
	return e;
}

static void damage(const char *path, bool truncate_it)
{
	struct stat st;
	int fd = open(path, O_RDWR);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	if (truncate_it) {
		ck_assert_int_eq(ftruncate(fd, st.st_size / 2), 0);
	} else {
		unsigned char b;
		ck_assert_int_eq(pread(fd, &b, 1, st.st_size / 2), 1);
		b ^= 0x10;
		ck_assert_int_eq(pwrite(fd, &b, 1, st.st_size / 2), 1);
	}
	close(fd);
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

START_TEST(test_kvd_snapshot_choose_newest_valid)
{
	struct engine *e = open_db();
	struct engine_snapshot_meta meta = {0};
	char a[PATH_MAX], b[PATH_MAX], path[PATH_MAX];
	uint64_t index = 0;

	add_snapshot(e, &index, 500, a);
	add_snapshot(e, &index, 500, b);
	engine_close(e);
	ck_assert_int_eq(kvd_snapshot_choose(snapdir, &meta, path), 0);
	ck_assert_str_eq(path, b);
	ck_assert_uint_eq(meta.index, 1000);
	engine_snapshot_meta_clear(&meta);
	ck_assert(exists(a));
}
END_TEST

/* The newest file is truncated (a chunk that was never written, or a
 * crash): the older valid one is chosen and kept, the damaged one is set
 * aside. */
START_TEST(test_kvd_snapshot_choose_skips_truncated_newest)
{
	struct engine *e = open_db();
	struct engine_snapshot_meta meta = {0};
	char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX], path[PATH_MAX], aside[PATH_MAX + 16];
	uint64_t index = 0;

	add_snapshot(e, &index, 300, a);
	add_snapshot(e, &index, 300, b);
	add_snapshot(e, &index, 3000, c);
	engine_close(e);
	damage(c, true);
	ck_assert_int_eq(kvd_snapshot_choose(snapdir, &meta, path), 0);
	ck_assert_str_eq(path, b);
	ck_assert_uint_eq(meta.index, 600);
	engine_snapshot_meta_clear(&meta);
	ck_assert(exists(a));
	ck_assert(exists(b));
	ck_assert(!exists(c));
	snprintf(aside, sizeof(aside), "%s.corrupt", c);
	ck_assert(exists(aside));
}
END_TEST

/* A bit flip in the body (the header still reads fine) is caught too. */
START_TEST(test_kvd_snapshot_choose_skips_bit_flip)
{
	struct engine *e = open_db();
	struct engine_snapshot_meta meta = {0};
	char a[PATH_MAX], b[PATH_MAX], path[PATH_MAX];
	uint64_t index = 0;

	add_snapshot(e, &index, 300, a);
	add_snapshot(e, &index, 3000, b);
	engine_close(e);
	damage(b, false);
	ck_assert_int_eq(kvd_snapshot_choose(snapdir, &meta, path), 0);
	ck_assert_str_eq(path, a);
	engine_snapshot_meta_clear(&meta);
	ck_assert(exists(a));
}
END_TEST

START_TEST(test_kvd_snapshot_choose_none_valid)
{
	struct engine *e = open_db();
	struct engine_snapshot_meta meta = {0};
	char a[PATH_MAX], path[PATH_MAX];
	uint64_t index = 0;

	ck_assert_int_eq(kvd_snapshot_choose(snapdir, &meta, path), KVD_ENOTFOUND);
	add_snapshot(e, &index, 100, a);
	engine_close(e);
	damage(a, true);
	ck_assert_int_eq(kvd_snapshot_choose(snapdir, &meta, path), KVD_ENOTFOUND);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("snapshots");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_kvd_snapshot_choose_newest_valid);
	tcase_add_test(tc, test_kvd_snapshot_choose_skips_truncated_newest);
	tcase_add_test(tc, test_kvd_snapshot_choose_skips_bit_flip);
	tcase_add_test(tc, test_kvd_snapshot_choose_none_valid);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
