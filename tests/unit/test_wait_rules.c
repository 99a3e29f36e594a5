/*
 * test_wait_rules.c: the waiting-writes table (api/wait_rules.c), shared by
 * api/applier.c and the simulation's clients: hand-over by (index, term), a
 * different term at a write's index, answers only after the apply job and in
 * index order, leadership loss keeping handed-over writes, the deadline
 * sweep, clearing. The answer callback records what the table answered.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/wait_rules.h"

#define MAX_REC 32

struct answer {
	void *req;
	uint64_t tag;
	raft_index index;
	enum kvd_wait_end end;
	void *arg;
};

struct world {
	struct kvd_wait_table t;
	struct answer rec[MAX_REC];
	unsigned n;
	int reqs[8]; /* the requests' identities: &reqs[i] */
};

static void on_answer(void *ctx, const struct kvd_wait_write *w, enum kvd_wait_end end, void *arg)
{
	struct world *x = ctx;
	ck_assert_uint_lt(x->n, MAX_REC);
	x->rec[x->n++] = (struct answer){w->req, w->tag, w->index, end, arg};
}

static void setup(struct world *x)
{
	memset(x, 0, sizeof(*x));
	kvd_wait_init(&x->t, on_answer, x);
}

/* Adds request i waiting at (index, term), deadline at. */
static void wait_at(struct world *x, int i, raft_index index, raft_term term, uint64_t at)
{
	ck_assert_int_eq(kvd_wait_add(&x->t, &x->reqs[i], 100 + (uint64_t)i, index, term, at), 0);
}

START_TEST(test_answered_only_after_the_apply_job_in_index_order)
{
	struct world x;
	int job;

	setup(&x);
	wait_at(&x, 0, 5, 2, 1000);
	wait_at(&x, 1, 6, 2, 1000);
	wait_at(&x, 2, 8, 2, 1000);
	ck_assert_uint_eq(kvd_wait_count(&x.t), 3);
	kvd_wait_handover(&x.t, 5, 2);
	kvd_wait_handover(&x.t, 6, 2);
	kvd_wait_handover(&x.t, 7, 2);
	ck_assert_uint_eq(x.n, 0); /* handed over, not applied yet */
	kvd_wait_applied(&x.t, 4, &job);
	ck_assert_uint_eq(x.n, 0);
	kvd_wait_applied(&x.t, 7, &job);
	ck_assert_uint_eq(x.n, 2);
	ck_assert_ptr_eq(x.rec[0].req, &x.reqs[0]);
	ck_assert_uint_eq(x.rec[0].tag, 100);
	ck_assert_uint_eq(x.rec[0].index, 5);
	ck_assert_int_eq(x.rec[0].end, KVD_WAIT_APPLIED);
	ck_assert_ptr_eq(x.rec[0].arg, &job);
	ck_assert_ptr_eq(x.rec[1].req, &x.reqs[1]);
	ck_assert_uint_eq(kvd_wait_count(&x.t), 1);
	/* Applied past it but never handed over (a snapshot install): kept. */
	kvd_wait_applied(&x.t, 9, &job);
	ck_assert_uint_eq(x.n, 2);
	kvd_wait_handover(&x.t, 8, 2);
	kvd_wait_handover(&x.t, 8, 2); /* twice: no change */
	kvd_wait_applied(&x.t, 9, NULL);
	ck_assert_uint_eq(x.n, 3);
	ck_assert_uint_eq(x.rec[2].index, 8);
	ck_assert_uint_eq(kvd_wait_count(&x.t), 0);
}
END_TEST

START_TEST(test_different_term_at_index_loses_the_slot)
{
	struct world x;

	setup(&x);
	wait_at(&x, 0, 5, 2, 1000);
	wait_at(&x, 1, 6, 2, 1000);
	wait_at(&x, 2, 7, 2, 1000);
	kvd_wait_handover(&x.t, 6, 3); /* another leader's entry at 6 */
	ck_assert_uint_eq(x.n, 1);
	ck_assert_ptr_eq(x.rec[0].req, &x.reqs[1]);
	ck_assert_int_eq(x.rec[0].end, KVD_WAIT_LOST);
	ck_assert_uint_eq(kvd_wait_count(&x.t), 2);
	/* The table stays linked: the last write is still found and the tail
	 * still takes new writes. */
	kvd_wait_handover(&x.t, 7, 3);
	ck_assert_uint_eq(x.n, 2);
	ck_assert_ptr_eq(x.rec[1].req, &x.reqs[2]);
	ck_assert_int_eq(x.rec[1].end, KVD_WAIT_LOST);
	wait_at(&x, 3, 8, 3, 1000);
	kvd_wait_handover(&x.t, 5, 2);
	kvd_wait_handover(&x.t, 8, 3);
	kvd_wait_applied(&x.t, 8, NULL);
	ck_assert_uint_eq(x.n, 4);
	ck_assert_ptr_eq(x.rec[2].req, &x.reqs[0]);
	ck_assert_ptr_eq(x.rec[3].req, &x.reqs[3]);
	ck_assert_int_eq(x.rec[3].end, KVD_WAIT_APPLIED);
}
END_TEST

START_TEST(test_fail_all_keeps_handed_over_writes)
{
	struct world x;
	int why;

	setup(&x);
	wait_at(&x, 0, 5, 2, 1000);
	wait_at(&x, 1, 6, 2, 1000);
	wait_at(&x, 2, 7, 2, 1000);
	kvd_wait_handover(&x.t, 5, 2);
	kvd_wait_fail(&x.t, &why); /* leadership lost */
	ck_assert_uint_eq(x.n, 2);
	ck_assert_ptr_eq(x.rec[0].req, &x.reqs[1]);
	ck_assert_int_eq(x.rec[0].end, KVD_WAIT_FAILED);
	ck_assert_ptr_eq(x.rec[0].arg, &why);
	ck_assert_ptr_eq(x.rec[1].req, &x.reqs[2]);
	ck_assert_uint_eq(kvd_wait_count(&x.t), 1);
	/* The tail is the kept write: a new write goes after it. */
	wait_at(&x, 3, 9, 4, 1000);
	kvd_wait_handover(&x.t, 9, 4);
	kvd_wait_applied(&x.t, 9, NULL);
	ck_assert_uint_eq(x.n, 4);
	ck_assert_ptr_eq(x.rec[2].req, &x.reqs[0]);
	ck_assert_int_eq(x.rec[2].end, KVD_WAIT_APPLIED);
	ck_assert_ptr_eq(x.rec[3].req, &x.reqs[3]);
	/* Failing an empty table, or one of handed-over writes only, answers
	 * nothing. */
	kvd_wait_fail(&x.t, NULL);
	ck_assert_uint_eq(x.n, 4);
}
END_TEST

START_TEST(test_sweep_answers_only_overdue_writes_not_handed_over)
{
	struct world x;

	setup(&x);
	wait_at(&x, 0, 5, 2, 100); /* overdue, handed over: kept */
	wait_at(&x, 1, 6, 2, 100); /* overdue */
	wait_at(&x, 2, 7, 2, 300); /* not yet */
	wait_at(&x, 3, 8, 2, 200); /* due exactly now */
	kvd_wait_handover(&x.t, 5, 2);
	kvd_wait_sweep(&x.t, 200);
	ck_assert_uint_eq(x.n, 2);
	ck_assert_ptr_eq(x.rec[0].req, &x.reqs[1]);
	ck_assert_int_eq(x.rec[0].end, KVD_WAIT_TIMEOUT);
	ck_assert_ptr_eq(x.rec[1].req, &x.reqs[3]);
	ck_assert_int_eq(x.rec[1].end, KVD_WAIT_TIMEOUT);
	ck_assert_uint_eq(kvd_wait_count(&x.t), 2);
	/* The last write was removed: the tail moved back. */
	wait_at(&x, 4, 9, 2, 1000);
	kvd_wait_sweep(&x.t, 999);
	ck_assert_uint_eq(x.n, 3);
	ck_assert_ptr_eq(x.rec[2].req, &x.reqs[2]);
	ck_assert_uint_eq(kvd_wait_count(&x.t), 2);
	kvd_wait_handover(&x.t, 9, 2);
	kvd_wait_applied(&x.t, 9, NULL);
	ck_assert_uint_eq(x.n, 5);
	ck_assert_ptr_eq(x.rec[4].req, &x.reqs[4]);
}
END_TEST

START_TEST(test_clear_answers_nothing)
{
	struct world x;

	setup(&x);
	wait_at(&x, 0, 5, 2, 100);
	wait_at(&x, 1, 6, 2, 100);
	kvd_wait_handover(&x.t, 5, 2);
	kvd_wait_clear(&x.t);
	ck_assert_uint_eq(x.n, 0);
	ck_assert_uint_eq(kvd_wait_count(&x.t), 0);
	wait_at(&x, 2, 7, 3, 100);
	kvd_wait_handover(&x.t, 7, 3);
	kvd_wait_applied(&x.t, 7, NULL);
	ck_assert_uint_eq(x.n, 1);
	ck_assert_ptr_eq(x.rec[0].req, &x.reqs[2]);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("wait_rules");
	TCase *tc = tcase_create("rules");
	tcase_add_test(tc, test_answered_only_after_the_apply_job_in_index_order);
	tcase_add_test(tc, test_different_term_at_index_loses_the_slot);
	tcase_add_test(tc, test_fail_all_keeps_handed_over_writes);
	tcase_add_test(tc, test_sweep_answers_only_overdue_writes_not_handed_over);
	tcase_add_test(tc, test_clear_answers_nothing);
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
