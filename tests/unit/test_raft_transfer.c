/*
 * test_raft_transfer.c: leadership transfer in the pure Raft core (thesis
 * §3.10).
 */
#include <check.h>

#include "raft_fixture.h"

static struct fx f;

static int transfer(unsigned i, const char *to)
{
	struct raft_event e = {.type = RAFT_EVENT_TRANSFER};

	e.u.transfer.to = to;
	return fx_step(&f, i, &e);
}

/* §3.10: with the target up to date the leader sends TimeoutNow at once; the
 * target campaigns without pre-vote and with transfer set, so the third
 * server, which still heard from the old leader, votes anyway. Proposals are
 * refused while the transfer runs. */
START_TEST(test_raft_transfer_to_caught_up_target)
{
	raft_term t;

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	t = raft_current_term(f.n[0].r);
	ck_assert_int_eq(transfer(0, "n2"), 0);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_TIMEOUT_NOW, "n2"), 1);
	ck_assert_int_eq(fx_propose(&f, 0, "p"), KVD_EBUSY);
	ck_assert_int_eq(transfer(0, "n3"), KVD_EBUSY);
	fx_deliver_all(&f);
	ck_assert_int_eq(fx_leader(&f), 1);
	ck_assert_uint_eq(raft_current_term(f.n[1].r), t + 1);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_FOLLOWER);
	fx_run(&f, 200);
	ck_assert_str_eq(raft_leader(f.n[2].r), "n2");
	ck_assert_int_eq(fx_propose(&f, 1, "p"), 0);
	fx_close(&f);
}
END_TEST

/* §3.10 step 1: a lagging target is first brought up to date; TimeoutNow
 * follows only once its log matches the leader's. to == NULL picks the most
 * up-to-date voter. */
START_TEST(test_raft_transfer_catches_up_first)
{
	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.cut[0][2] = true;
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_int_eq(fx_propose(&f, 0, "a"), 0);
		fx_deliver_all(&f);
	}
	f.cut[0][2] = false;
	ck_assert_int_eq(transfer(0, "n3"), 0);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_TIMEOUT_NOW, NULL), 0);
	fx_run(&f, 300);
	ck_assert_int_eq(fx_leader(&f), 2);
	ck_assert_uint_eq(raft_last_index(f.n[2].r), 6);
	fx_close(&f);
}
END_TEST

/* §3.10: a transfer that does not complete within an election timeout is
 * aborted and the leader accepts proposals again. */
START_TEST(test_raft_transfer_aborts_after_timeout)
{
	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.n[1].down = true;
	ck_assert_int_eq(transfer(0, "n2"), 0);
	fx_run(&f, 500);
	ck_assert_int_eq(fx_propose(&f, 0, "p"), KVD_EBUSY);
	fx_run(&f, 600);
	ck_assert_int_eq(fx_leader(&f), 0);
	ck_assert_int_eq(fx_propose(&f, 0, "p"), 0);
	ck_assert_int_eq(transfer(0, "n9"), KVD_EINVAL);
	ck_assert_int_eq(transfer(1, "n1"), KVD_ENOTLEADER);
	fx_close(&f);
}
END_TEST

/* A lost TimeoutNow is sent again on a later heartbeat. */
START_TEST(test_raft_transfer_resends_lost_timeout_now)
{
	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_int_eq(transfer(0, "n2"), 0);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_TIMEOUT_NOW, "n2"), 1);
	fx_drop_all(&f);
	fx_run(&f, 200);
	ck_assert_int_eq(fx_leader(&f), 1);
	fx_close(&f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("raft_transfer");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_raft_transfer_to_caught_up_target);
	tcase_add_test(tc, test_raft_transfer_catches_up_first);
	tcase_add_test(tc, test_raft_transfer_aborts_after_timeout);
	tcase_add_test(tc, test_raft_transfer_resends_lost_timeout_now);
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
	return failed == 0 ? 0 : 1;
}
