/*
 * test_snapshot_files.c: the file steps of the snapshot procedure
 * (api/snapshot_files.c) on real files through raft_log_io_posix, and
 * through a wrapper of it that fails one kind of call (pwrite with EIO or
 * ENOSPC, fsync of a file or of the directory, rename) the way a disk does:
 * a failed chunk write is reported, a failed place leaves no snapshot name,
 * the choice at recovery takes the newest file its check accepts, sets
 * damaged ones aside and deletes nothing, and prune keeps what is in use.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/common/snapfile.h"
#include "api/snapshot_files.h"
#include "kvd/errors.h"
#include "raft/log_io.h"

static char tmpdir[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kvd-test-snapfiles-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- a failing wrapper of the posix calls -------------------------------- */

enum fail_what { FAIL_NONE, FAIL_PWRITE_EIO, FAIL_PWRITE_ENOSPC, FAIL_FSYNC_DIR, FAIL_RENAME };
static enum fail_what failing;

static int w_openat(void *ctx, int dir_fd, const char *name, int flags, mode_t mode)
{
	return raft_log_io_posix.openat(ctx, dir_fd, name, flags, mode);
}
static int w_close(void *ctx, int fd)
{
	return raft_log_io_posix.close(ctx, fd);
}
static ssize_t w_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t off)
{
	if (failing == FAIL_PWRITE_EIO || failing == FAIL_PWRITE_ENOSPC) {
		errno = failing == FAIL_PWRITE_EIO ? EIO : ENOSPC;
		return -1;
	}
	return raft_log_io_posix.pwrite(ctx, fd, buf, len, off);
}
static int dir_fsyncs; /* directory fsyncs that succeeded */

static int w_fsync(void *ctx, int fd)
{
	struct stat st;
	if (failing != FAIL_FSYNC_DIR && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
		dir_fsyncs++;
	if (failing == FAIL_FSYNC_DIR && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		errno = EIO;
		return -1;
	}
	return raft_log_io_posix.fsync(ctx, fd);
}
static int w_renameat(void *ctx, int dir_fd, const char *from, const char *to)
{
	if (failing == FAIL_RENAME) {
		errno = EIO;
		return -1;
	}
	return raft_log_io_posix.renameat(ctx, dir_fd, from, to);
}

static struct raft_log_io failing_io(void)
{
	struct raft_log_io io = raft_log_io_posix;
	io.openat = w_openat;
	io.close = w_close;
	io.pwrite = w_pwrite;
	io.fsync = w_fsync;
	io.renameat = w_renameat;
	return io;
}

static bool exists(const char *name)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	return access(path, F_OK) == 0;
}

static void put_file(const char *name, const char *text)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static void snap_file(uint64_t index, const char *text)
{
	char path[PATH_MAX];
	kvd_snapfile_path(tmpdir, index, 1, path);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

START_TEST(test_chunks_then_place)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char path[PATH_MAX], buf[16] = "";
	const struct raft_log_io *io = &raft_log_io_posix;

	ck_assert_int_eq(kvd_snapfiles_write_chunk(io, tmpdir, 0, "abc", 3, false, errmsg), 0);
	ck_assert_int_eq(kvd_snapfiles_write_chunk(io, tmpdir, 3, "def", 3, true, errmsg), 0);
	ck_assert(!exists("snapshot-00000000000000000007-00000000000000000002.lz4"));
	ck_assert_int_eq(kvd_snapfiles_place(io, tmpdir, 7, 2, errmsg), 0);
	ck_assert(!exists(KVD_SNAPFILES_INCOMING));
	kvd_snapfile_path(tmpdir, 7, 2, path);
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
	fclose(f);
	ck_assert_str_eq(buf, "abcdef");
	/* A new stream starts the incoming file afresh. */
	ck_assert_int_eq(kvd_snapfiles_write_chunk(io, tmpdir, 0, "xy", 2, true, errmsg), 0);
	snprintf(path, sizeof(path), "%s/" KVD_SNAPFILES_INCOMING, tmpdir);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_size, 2);
}
END_TEST

START_TEST(test_failed_chunk_reported)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_io io = failing_io();

	failing = FAIL_PWRITE_EIO;
	ck_assert_int_eq(kvd_snapfiles_write_chunk(&io, tmpdir, 0, "abc", 3, false, errmsg),
			 KVD_EIO);
	ck_assert_ptr_nonnull(strstr(errmsg, "cannot write"));
	failing = FAIL_PWRITE_ENOSPC;
	ck_assert_int_eq(kvd_snapfiles_write_chunk(&io, tmpdir, 3, "def", 3, true, errmsg),
			 KVD_ENOSPC);
	failing = FAIL_NONE;
}
END_TEST

START_TEST(test_failed_place_leaves_no_name)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_io io = failing_io();

	ck_assert_int_eq(kvd_snapfiles_write_chunk(&io, tmpdir, 0, "abc", 3, true, errmsg), 0);
	failing = FAIL_RENAME;
	ck_assert_int_eq(kvd_snapfiles_place(&io, tmpdir, 5, 1, errmsg), KVD_EIO);
	ck_assert(exists(KVD_SNAPFILES_INCOMING));
	ck_assert(!exists("snapshot-00000000000000000005-00000000000000000001.lz4"));
	/* A failed directory fsync is a failure: the name is not durable. */
	failing = FAIL_FSYNC_DIR;
	ck_assert_int_eq(kvd_snapfiles_place(&io, tmpdir, 5, 1, errmsg), KVD_EIO);
	ck_assert_ptr_nonnull(strstr(errmsg, "cannot fsync"));
	failing = FAIL_NONE;
}
END_TEST

/* The test's check: a file is good when it holds "good". */
static int check_text(void *ctx, const char *path)
{
	char buf[16] = "";
	FILE *f = fopen(path, "r");
	int *calls = ctx;

	(*calls)++;
	if (f == NULL)
		return KVD_EIO;
	if (fgets(buf, sizeof(buf), f) == NULL)
		buf[0] = '\0';
	fclose(f);
	return strcmp(buf, "good") == 0 ? 0 : KVD_ECORRUPT;
}

START_TEST(test_choose_newest_good_keeps_older)
{
	char path[PATH_MAX];
	uint64_t index = 0, term = 0;
	int calls = 0;

	snap_file(10, "good");
	snap_file(20, "good");
	snap_file(30, "torn");
	ck_assert_int_eq(kvd_snapfiles_choose(&raft_log_io_posix, tmpdir, check_text, &calls,
					      &index, &term, path),
			 0);
	ck_assert_uint_eq(index, 20);
	ck_assert_uint_eq(term, 1);
	ck_assert_int_eq(calls, 2);
	ck_assert(exists("snapshot-00000000000000000030-00000000000000000001.lz4.corrupt"));
	ck_assert(exists("snapshot-00000000000000000010-00000000000000000001.lz4"));
	ck_assert(exists("snapshot-00000000000000000020-00000000000000000001.lz4"));
}
END_TEST

/* A snapshot name found at recovery may be a rename that the crash happened
 * to keep without its directory fsync: the choice makes it durable before the
 * node relies on it (trims its log to it, prunes older files), or fails. */
START_TEST(test_choose_makes_name_durable)
{
	char path[PATH_MAX];
	uint64_t index = 0, term = 0;
	int calls = 0;
	struct raft_log_io io = failing_io();

	snap_file(10, "good");
	dir_fsyncs = 0;
	ck_assert_int_eq(kvd_snapfiles_choose(&io, tmpdir, check_text, &calls, &index, &term, path),
			 0);
	ck_assert_uint_eq(index, 10);
	ck_assert_int_ge(dir_fsyncs, 1);
	failing = FAIL_FSYNC_DIR;
	ck_assert_int_eq(kvd_snapfiles_choose(&io, tmpdir, check_text, &calls, &index, &term, path),
			 KVD_EIO);
	failing = FAIL_NONE;
}
END_TEST

START_TEST(test_choose_none)
{
	char path[PATH_MAX], missing[PATH_MAX];
	uint64_t index = 0, term = 0;
	int calls = 0;

	ck_assert_int_eq(kvd_snapfiles_choose(&raft_log_io_posix, tmpdir, check_text, &calls,
					      &index, &term, path),
			 KVD_ENOTFOUND);
	snap_file(4, "bad");
	ck_assert_int_eq(kvd_snapfiles_choose(&raft_log_io_posix, tmpdir, check_text, &calls,
					      &index, &term, path),
			 KVD_ENOTFOUND);
	snprintf(missing, sizeof(missing), "%s/none", tmpdir);
	ck_assert_int_eq(kvd_snapfiles_choose(&raft_log_io_posix, missing, check_text, &calls,
					      &index, &term, path),
			 KVD_ENOTFOUND);
}
END_TEST

START_TEST(test_prune)
{
	snap_file(10, "good");
	snap_file(20, "good");
	put_file(KVD_SNAPFILES_INCOMING, "part");
	put_file("snapshot-x.tmp", "local");
	kvd_snapfiles_prune(&raft_log_io_posix, tmpdir, 20, true);
	ck_assert(!exists("snapshot-00000000000000000010-00000000000000000001.lz4"));
	ck_assert(exists("snapshot-00000000000000000020-00000000000000000001.lz4"));
	ck_assert(exists("snapshot-x.tmp"));
	ck_assert(exists(KVD_SNAPFILES_INCOMING));
	kvd_snapfiles_prune(&raft_log_io_posix, tmpdir, 0, false);
	ck_assert(!exists("snapshot-00000000000000000020-00000000000000000001.lz4"));
	ck_assert(!exists("snapshot-x.tmp"));
	ck_assert(exists(KVD_SNAPFILES_INCOMING));
}
END_TEST

/* Item 5 of issue 7: a leader's snapshot that meets a running local snapshot
 * waits for it (the daemon once tried the install, engine_swap() answered
 * busy and it exited); with none running it starts at once. */
START_TEST(test_install_rule_waits_for_local_snapshot)
{
	ck_assert_int_eq(kvd_snapfiles_install_rule(true), KVD_SNAPFILES_INSTALL_WAIT);
	ck_assert_int_eq(kvd_snapfiles_install_rule(false), KVD_SNAPFILES_INSTALL_START);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("snapshot_files");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_chunks_then_place);
	tcase_add_test(tc, test_failed_chunk_reported);
	tcase_add_test(tc, test_failed_place_leaves_no_name);
	tcase_add_test(tc, test_choose_newest_good_keeps_older);
	tcase_add_test(tc, test_choose_makes_name_durable);
	tcase_add_test(tc, test_choose_none);
	tcase_add_test(tc, test_prune);
	tcase_add_test(tc, test_install_rule_waits_for_local_snapshot);
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
