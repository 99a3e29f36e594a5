/*
 * test_writer.c: the log writer's rules (api/write_rules.c): what a batch reports
 * when one of its jobs fails (on a real log store in a temporary directory),
 * and which persisted index an append completion may report when later jobs
 * truncate.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>

#include "api/write_rules.h"
#include "kvd/errors.h"
#include "raft/log_store.h"
#include "raft/meta.h"
#include "storage_test_util.h"

static void append_noops(struct raft_log_store *s, raft_index from, raft_index to, raft_term term)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	for (raft_index i = from; i <= to; i++) {
		struct raft_entry e = {.index = i, .term = term, .type = RAFT_ENTRY_NOOP};
		ck_assert_msg(raft_log_store_append(s, &e, 1, errmsg) == 0, "%s", errmsg);
	}
}

START_TEST(test_writer_batch_failure_reports_nothing_durable)
{
	/* Job 1 appends 11..15, job 2 (a meta write) fails: the batch's one
	 * fdatasync never runs, so job 1 must not report success either, and
	 * the store must forget 11..15 before the core restarts from it. */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_log_store *s = NULL;
	ck_assert_int_eq(raft_log_store_open(dir, NULL, &s, NULL), 0);
	append_noops(s, 1, 10, 1);
	ck_assert_int_eq(kvd_writer_batch_end(s, true, 0, errmsg), 0);
	append_noops(s, 11, 15, 1);
	ck_assert_int_eq(kvd_writer_batch_end(s, true, KVD_ENOSPC, errmsg), KVD_ENOSPC);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	raft_log_store_close(s);
	ck_assert_int_eq(raft_log_store_open(dir, NULL, &s, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	/* A batch without failure is synced. */
	append_noops(s, 11, 12, 2);
	ck_assert_int_eq(kvd_writer_batch_end(s, true, 0, errmsg), 0);
	ck_assert_int_eq(kvd_writer_batch_end(s, false, 0, errmsg), 0);
	raft_log_store_close(s);
	ck_assert_int_eq(raft_log_store_open(dir, NULL, &s, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 12);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_writer_batch_with_failed_meta_write)
{
	/* A real meta write fails in the middle of a batch (a file size limit
	 * stops it, like a full disk): the append before it in the batch is not
	 * reported persisted, and the store forgets it. */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_meta meta = {.term = 3};
	struct raft_log_store *s = NULL;
	struct rlimit old;
	struct rlimit lim;
	int rv;
	ck_assert_int_eq(raft_log_store_open(dir, NULL, &s, NULL), 0);
	append_noops(s, 1, 10, 1);
	ck_assert_int_eq(kvd_writer_batch_end(s, true, 0, errmsg), 0);
	append_noops(s, 11, 15, 1);
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 100; /* bytes: less than one meta file */
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	rv = raft_meta_store(dir, &meta, errmsg);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_int_ne(rv, 0);
	ck_assert_int_eq(kvd_writer_batch_end(s, true, rv, errmsg), rv);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	raft_log_store_close(s);
	ck_assert_int_eq(raft_log_store_open(dir, NULL, &s, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

/* A disk that fails the next call of one operation with a given errno. */
struct fault {
	int fail_pwrite;    /* errno for the next pwrite, 0: none */
	int fail_fdatasync; /* errno for the next fdatasync, 0: none */
};

static ssize_t fault_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t offset)
{
	struct fault *f = ctx;
	if (f->fail_pwrite != 0) {
		errno = f->fail_pwrite;
		f->fail_pwrite = 0;
		return -1;
	}
	return raft_log_io_posix.pwrite(NULL, fd, buf, len, offset);
}

static int fault_fdatasync(void *ctx, int fd)
{
	struct fault *f = ctx;
	if (f->fail_fdatasync != 0) {
		errno = f->fail_fdatasync;
		f->fail_fdatasync = 0;
		return -1;
	}
	return raft_log_io_posix.fdatasync(NULL, fd);
}

START_TEST(test_writer_batch_write_or_sync_failure_through_io_seam)
{
	/* ENOSPC on the write of the batch's second append, then EIO on the
	 * batch's fdatasync: each time every job of the batch fails and the
	 * store is back at the last synced entry. */
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct fault f = {0};
	struct raft_log_io io = raft_log_io_posix;
	struct raft_log_store_options opts = {.io = &io};
	struct raft_log_store *s = NULL;
	struct raft_entry e = {.index = 16, .term = 1, .type = RAFT_ENTRY_NOOP};
	int rv;
	io.pwrite = fault_pwrite;
	io.fdatasync = fault_fdatasync;
	io.ctx = &f;
	ck_assert_int_eq(raft_log_store_open(dir, &opts, &s, NULL), 0);
	append_noops(s, 1, 10, 1);
	ck_assert_int_eq(kvd_writer_batch_end(s, true, 0, errmsg), 0);

	append_noops(s, 11, 15, 1);
	f.fail_pwrite = ENOSPC;
	rv = raft_log_store_append(s, &e, 1, errmsg);
	ck_assert_int_eq(rv, KVD_ENOSPC);
	ck_assert_int_eq(kvd_writer_batch_end(s, true, rv, errmsg), KVD_ENOSPC);
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);

	append_noops(s, 11, 15, 1);
	f.fail_fdatasync = EIO;
	ck_assert_int_eq(kvd_writer_batch_end(s, true, 0, errmsg), KVD_EIO);
	ck_assert_ptr_nonnull(strstr(errmsg, "fdatasync"));
	ck_assert_uint_eq(raft_log_store_last_index(s), 10);

	append_noops(s, 11, 13, 2);
	ck_assert_int_eq(kvd_writer_batch_end(s, true, 0, errmsg), 0);
	raft_log_store_close(s);
	ck_assert_int_eq(raft_log_store_open(dir, NULL, &s, NULL), 0);
	ck_assert_uint_eq(raft_log_store_last_index(s), 13);
	raft_log_store_close(s);
	tu_rmtree(dir);
}
END_TEST

static struct raft_entry ent(raft_index index, raft_term term)
{
	return (struct raft_entry){.index = index, .term = term, .type = RAFT_ENTRY_COMMAND};
}

START_TEST(test_writer_completion_superseded_by_later_truncation)
{
	/* A writes 5..7 in term 1; B truncates from 6 and writes 6 in term 2; C
	 * truncates from 6 again and writes 6..7 in term 1 (a later leader of
	 * term 3 would use term 3; any re-append of (6, 1) is the hazard). When A
	 * completes only 5 may be reported: 6 and 7 are about to be replaced. */
	struct kvd_writer_track t = {0};
	struct raft_entry a[] = {ent(5, 1), ent(6, 1), ent(7, 1)};
	struct raft_entry b[] = {ent(6, 2)};
	struct raft_entry c[] = {ent(6, 1), ent(7, 1)};
	raft_index index = 0;
	raft_term term = 0;
	ck_assert_int_eq(kvd_writer_track_append(&t, 1, 0), 0);
	ck_assert_int_eq(kvd_writer_track_append(&t, 2, 6), 0);
	ck_assert_int_eq(kvd_writer_track_append(&t, 3, 6), 0);
	ck_assert(kvd_writer_track_done(&t, 1, a, 3, &index, &term));
	ck_assert_uint_eq(index, 5);
	ck_assert_uint_eq(term, 1);
	/* B's 6 is superseded by C's truncation: nothing to report. */
	ck_assert(!kvd_writer_track_done(&t, 2, b, 1, &index, &term));
	ck_assert(kvd_writer_track_done(&t, 3, c, 2, &index, &term));
	ck_assert_uint_eq(index, 7);
	ck_assert_uint_eq(term, 1);
	ck_assert_uint_eq(t.n, 0);
	kvd_writer_track_free(&t);
}
END_TEST

START_TEST(test_writer_completion_without_truncation)
{
	/* Many jobs in flight, none truncating, the ring growing and wrapping:
	 * each reports its own last entry. */
	struct kvd_writer_track t = {0};
	raft_index index = 0;
	raft_term term = 0;
	uint64_t next = 1;
	for (uint64_t round = 0; round < 50; round++) {
		for (int k = 0; k < 7; k++) {
			ck_assert_int_eq(kvd_writer_track_append(&t, next + (uint64_t)k, 0), 0);
		}
		for (int k = 0; k < 7; k++) {
			struct raft_entry e = ent(next, 4);
			ck_assert(kvd_writer_track_done(&t, next, &e, 1, &index, &term));
			ck_assert_uint_eq(index, next);
			ck_assert_uint_eq(term, 4);
			next++;
		}
	}
	/* The ring grows while wrapped around: order is kept. */
	for (int k = 0; k < 40; k++) {
		ck_assert_int_eq(kvd_writer_track_append(&t, next + (uint64_t)k, 0), 0);
	}
	for (int k = 0; k < 40; k++) {
		struct raft_entry e = ent(next, 4);
		ck_assert(kvd_writer_track_done(&t, next, &e, 1, &index, &term));
		ck_assert_uint_eq(index, next);
		ck_assert_uint_eq(t.n, (size_t)(39 - k));
		next++;
	}
	/* A truncation-only job (no entries) reports nothing. */
	ck_assert_int_eq(kvd_writer_track_append(&t, next, 3), 0);
	ck_assert(!kvd_writer_track_done(&t, next, NULL, 0, &index, &term));
	/* A truncation submitted after a job cuts below all of its entries. */
	{
		struct raft_entry e[] = {ent(10, 5), ent(11, 5)};
		ck_assert_int_eq(kvd_writer_track_append(&t, next + 1, 0), 0);
		ck_assert_int_eq(kvd_writer_track_append(&t, next + 2, 10), 0);
		ck_assert(!kvd_writer_track_done(&t, next + 1, e, 2, &index, &term));
		ck_assert(kvd_writer_track_done(&t, next + 2, e, 2, &index, &term));
		ck_assert_uint_eq(index, 11);
	}
	kvd_writer_track_free(&t);
}
END_TEST

START_TEST(test_writer_lost_job_drops_sync_messages)
{
	/* A follower's append could not even be submitted (out of memory): the
	 * success reply the core made for it must not go out. */
	struct kvd_writer_track t = {0};
	uint64_t seq = 0;
	ck_assert(kvd_writer_track_sync_seq(&t, 7, &seq));
	ck_assert_uint_eq(seq, 7);
	kvd_writer_track_lost(&t);
	ck_assert(!kvd_writer_track_sync_seq(&t, 7, &seq));
	kvd_writer_track_clear(&t);
	ck_assert(kvd_writer_track_sync_seq(&t, 8, &seq));
	ck_assert_uint_eq(seq, 8);
	kvd_writer_track_free(&t);
}
END_TEST

static Suite *writer_suite(void)
{
	Suite *s = suite_create("writer");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_writer_batch_failure_reports_nothing_durable);
	tcase_add_test(tc, test_writer_batch_write_or_sync_failure_through_io_seam);
	tcase_add_test(tc, test_writer_batch_with_failed_meta_write);
	tcase_add_test(tc, test_writer_completion_superseded_by_later_truncation);
	tcase_add_test(tc, test_writer_completion_without_truncation);
	tcase_add_test(tc, test_writer_lost_job_drops_sync_messages);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(writer_suite());
	int failed;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
