/*
 * test_meta.c: the alternating term/vote files (raft/meta.c) on real files.
 */
#include <check.h>
#include <string.h>

#include "raft/meta.h"
#include "storage_test_util.h"

static void store_vote(const char *dir, struct raft_meta *m, raft_term term, const char *vote)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	m->term = term;
	snprintf(m->voted_for, sizeof(m->voted_for), "%s", vote);
	ck_assert_msg(raft_meta_store(dir, m, errmsg) == 0, "%s", errmsg);
}

START_TEST(test_raft_meta_load_fresh)
{
	char *dir = tu_mkdtemp();
	struct raft_meta m;
	memset(&m, 0xff, sizeof(m));
	ck_assert_int_eq(raft_meta_load(dir, &m, NULL), 0);
	ck_assert_uint_eq(m.term, 0);
	ck_assert_str_eq(m.voted_for, "");
	ck_assert_uint_eq(m.sequence, 0);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_meta_store_alternates)
{
	char *dir = tu_mkdtemp();
	struct raft_meta m = {0};
	struct raft_meta got;

	store_vote(dir, &m, 3, "10.0.0.1:7001");
	ck_assert_uint_eq(m.sequence, 1);
	ck_assert(tu_exists(dir, "meta1"));
	ck_assert(!tu_exists(dir, "meta2"));
	ck_assert(!tu_exists(dir, "meta1.tmp"));
	ck_assert_int_eq(tu_file_size(dir, "meta1"), RAFT_META_FILE_SIZE);

	store_vote(dir, &m, 4, "");
	ck_assert(tu_exists(dir, "meta2"));
	ck_assert_int_eq(raft_meta_load(dir, &got, NULL), 0);
	ck_assert_uint_eq(got.term, 4);
	ck_assert_str_eq(got.voted_for, "");
	ck_assert_uint_eq(got.sequence, 2);

	/* The third version overwrites meta1; the second stays in meta2. */
	store_vote(dir, &got, 5, "node-c");
	ck_assert_int_eq(raft_meta_load(dir, &m, NULL), 0);
	ck_assert_uint_eq(m.term, 5);
	ck_assert_str_eq(m.voted_for, "node-c");
	ck_assert_uint_eq(m.sequence, 3);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_meta_store_ignores_caller_sequence)
{
	/* A caller that builds a fresh struct for every store (sequence 0, or
	 * any stale value) still alternates files and never loses to an older
	 * version. */
	char *dir = tu_mkdtemp();
	struct raft_meta got;
	for (raft_term term = 1; term <= 5; term++) {
		struct raft_meta m = {.term = term, .sequence = term == 3 ? 1000 : 0};
		ck_assert_int_eq(raft_meta_store(dir, &m, NULL), 0);
		ck_assert_uint_eq(m.sequence, term);
		ck_assert_int_eq(raft_meta_load(dir, &got, NULL), 0);
		ck_assert_uint_eq(got.term, term);
	}
	/* Version 4 (meta2) survives a torn write of version 5's file. */
	tu_truncate(dir, "meta1", 50);
	ck_assert_int_eq(raft_meta_load(dir, &got, NULL), 0);
	ck_assert_uint_eq(got.term, 4);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_meta_load_newer_corrupt_uses_older)
{
	char *dir = tu_mkdtemp();
	struct raft_meta m = {0};
	store_vote(dir, &m, 7, "a");
	store_vote(dir, &m, 8, "b"); /* meta2, newest */
	tu_flip(dir, "meta2", 20, 3);
	ck_assert_int_eq(raft_meta_load(dir, &m, NULL), 0);
	ck_assert_uint_eq(m.term, 7);
	ck_assert_str_eq(m.voted_for, "a");
	ck_assert_uint_eq(m.sequence, 1);
	/* Storing again overwrites the damaged file with version 2. */
	store_vote(dir, &m, 9, "c");
	ck_assert_int_eq(raft_meta_load(dir, &m, NULL), 0);
	ck_assert_uint_eq(m.term, 9);
	ck_assert_uint_eq(m.sequence, 2);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_meta_load_older_torn_uses_newer)
{
	char *dir = tu_mkdtemp();
	struct raft_meta m = {0};
	store_vote(dir, &m, 7, "a");
	store_vote(dir, &m, 8, "b");
	tu_truncate(dir, "meta1", 100); /* a torn overwrite of the older copy */
	ck_assert_int_eq(raft_meta_load(dir, &m, NULL), 0);
	ck_assert_uint_eq(m.term, 8);
	ck_assert_str_eq(m.voted_for, "b");
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_meta_load_both_corrupt)
{
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_meta m = {0};
	store_vote(dir, &m, 7, "a");
	store_vote(dir, &m, 8, "b");
	tu_flip(dir, "meta1", 30, 0);
	tu_flip(dir, "meta2", 8, 1);
	ck_assert_int_eq(raft_meta_load(dir, &m, errmsg), KVD_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(errmsg, "meta1"));
	ck_assert_ptr_nonnull(strstr(errmsg, "meta2"));
	ck_assert_ptr_nonnull(strstr(errmsg, "checksum"));
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_meta_load_only_file_corrupt)
{
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_meta m = {0};
	store_vote(dir, &m, 7, "a");
	tu_flip(dir, "meta1", 16, 0);
	/* One file exists: never fall back to "fresh", that could vote twice. */
	ck_assert_int_eq(raft_meta_load(dir, &m, errmsg), KVD_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(errmsg, "meta1: checksum"));
	ck_assert_ptr_nonnull(strstr(errmsg, "meta2: absent"));
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_meta_load_misplaced_version)
{
	char *dir = tu_mkdtemp();
	struct raft_meta m = {0};
	store_vote(dir, &m, 7, "a");
	/* A valid version-1 file under the name of even versions is damage. */
	tu_copy(dir, "meta1", "meta2");
	{
		char path[4200];
		tu_path(path, sizeof(path), dir, "meta1");
		ck_assert_int_eq(unlink(path), 0);
	}
	ck_assert_int_eq(raft_meta_load(dir, &m, NULL), KVD_ECORRUPT);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_meta_store_rejects_unterminated_vote)
{
	char *dir = tu_mkdtemp();
	struct raft_meta m = {0};
	memset(m.voted_for, 'x', sizeof(m.voted_for));
	ck_assert_int_eq(raft_meta_store(dir, &m, NULL), KVD_EINVAL);
	ck_assert_uint_eq(m.sequence, 0);
	ck_assert(!tu_exists(dir, "meta1"));
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_raft_meta_store_longest_vote)
{
	char *dir = tu_mkdtemp();
	struct raft_meta m = {0};
	struct raft_meta got;
	memset(m.voted_for, 'v', RAFT_ID_SIZE - 1);
	m.voted_for[RAFT_ID_SIZE - 1] = '\0';
	m.term = 1;
	ck_assert_int_eq(raft_meta_store(dir, &m, NULL), 0);
	ck_assert_int_eq(raft_meta_load(dir, &got, NULL), 0);
	ck_assert_str_eq(got.voted_for, m.voted_for);
	tu_rmtree(dir);
}
END_TEST

static Suite *meta_suite(void)
{
	Suite *s = suite_create("raft_meta");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_raft_meta_load_fresh);
	tcase_add_test(tc, test_raft_meta_store_alternates);
	tcase_add_test(tc, test_raft_meta_store_ignores_caller_sequence);
	tcase_add_test(tc, test_raft_meta_load_newer_corrupt_uses_older);
	tcase_add_test(tc, test_raft_meta_load_older_torn_uses_newer);
	tcase_add_test(tc, test_raft_meta_load_both_corrupt);
	tcase_add_test(tc, test_raft_meta_load_only_file_corrupt);
	tcase_add_test(tc, test_raft_meta_load_misplaced_version);
	tcase_add_test(tc, test_raft_meta_store_rejects_unterminated_vote);
	tcase_add_test(tc, test_raft_meta_store_longest_vote);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(meta_suite());
	int failed;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
