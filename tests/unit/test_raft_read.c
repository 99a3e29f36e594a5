/*
 * test_raft_read.c: linearizable reads by read index in the pure Raft core
 * (thesis §6.4; §6.4.1 batching of heartbeat rounds).
 */
#include <check.h>

#include "raft_fixture.h"

static struct fx f;

static int read_req(unsigned i, uint64_t token)
{
	struct raft_event e = {.type = RAFT_EVENT_READ};

	e.u.read.token = token;
	return fx_step(&f, i, &e);
}

static void setup_leader(void)
{
	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 2);
}

/* Thesis §6.4 step 2: the leader confirms it is still leader with one round
 * of heartbeats acknowledged by a majority before serving the read. */
START_TEST(test_raft_read_waits_for_heartbeat_round)
{
	setup_leader();
	ck_assert_int_eq(read_req(0, 7), 0);
	ck_assert_uint_eq(f.n[0].n_reads, 0);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_APPEND, "n2"), 1);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_APPEND, "n3"), 1);
	/* Time passing alone confirms nothing. */
	f.now += 50;
	fx_tick(&f, 0);
	ck_assert_uint_eq(f.n[0].n_reads, 0);
	/* n2 acknowledges: with the leader that is a majority of three. */
	fx_deliver_one(&f);
	ck_assert_uint_eq(f.n[0].n_reads, 0);
	ck_assert_str_eq(f.q[f.n_q - 1].m.from, "n2");
	while (strcmp(f.q[0].m.from, "n2") != 0)
		fx_deliver_one(&f);
	fx_deliver_one(&f);
	ck_assert_uint_eq(f.n[0].n_reads, 1);
	ck_assert_uint_eq(f.n[0].reads[0], 7);
	fx_close(&f);
}
END_TEST

/* Thesis §6.4.1: reads waiting share a heartbeat round; one round at a time. */
START_TEST(test_raft_read_rounds_are_shared)
{
	setup_leader();
	ck_assert_int_eq(read_req(0, 1), 0);
	ck_assert_int_eq(read_req(0, 2), 0);
	ck_assert_int_eq(read_req(0, 3), 0);
	/* One round in flight; reads 2 and 3 wait for the next one. */
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_APPEND, NULL), 2);
	fx_deliver_all(&f);
	ck_assert_uint_eq(f.n[0].n_reads, 3);
	fx_close(&f);
}
END_TEST

/* Thesis §6.4 step 1: a new leader serves reads only after committing an
 * entry of its term (its no-op); until then the read waits. */
START_TEST(test_raft_read_waits_for_commit_in_term)
{
	fx_init(&f, 3, 3);
	f.now += f.o.election_timeout_max;
	fx_tick(&f, 0);
	/* Deliver until n1 is leader but its no-op is not yet committed. */
	while (raft_role(f.n[0].r) != RAFT_LEADER)
		fx_deliver_one(&f);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 0);
	ck_assert_int_eq(read_req(0, 9), 0);
	ck_assert_uint_eq(f.n[0].n_reads, 0);
	fx_deliver_all(&f);
	fx_run(&f, 100);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 2);
	ck_assert_uint_eq(f.n[0].n_reads, 1);
	fx_close(&f);
}
END_TEST

/* Thesis §6.4 step 4: a read is served once the state machine has applied up
 * to the read index. */
START_TEST(test_raft_read_waits_for_applied)
{
	struct raft_event e = {.type = RAFT_EVENT_APPLIED};

	setup_leader();
	f.n[0].auto_apply = false;
	ck_assert_int_eq(fx_propose(&f, 0, "w"), 0);
	fx_deliver_all(&f);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 3);
	ck_assert_int_eq(read_req(0, 5), 0);
	fx_deliver_all(&f);
	ck_assert_uint_eq(f.n[0].n_reads, 0);
	e.u.applied.index = 3;
	fx_step(&f, 0, &e);
	ck_assert_uint_eq(f.n[0].n_reads, 1);
	ck_assert_uint_eq(f.n[0].last.reads[0].index, 3);
	fx_close(&f);
}
END_TEST

/* A leader that steps down fails its pending reads; followers refuse reads. */
START_TEST(test_raft_read_fails_on_step_down)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};

	setup_leader();
	ck_assert_int_eq(read_req(1, 4), KVD_ENOTLEADER);
	ck_assert_int_eq(read_req(0, 4), 0);
	fx_drop_all(&f);
	memset(&e.u.receive, 0, sizeof(e.u.receive));
	e.u.receive.type = RAFT_MSG_APPEND_RESULT;
	strcpy(e.u.receive.from, "n2");
	strcpy(e.u.receive.to, "n1");
	e.u.receive.term = raft_current_term(f.n[0].r) + 1;
	fx_step(&f, 0, &e);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_FOLLOWER);
	ck_assert_uint_eq(f.n[0].n_reads_failed, 1);
	ck_assert_uint_eq(f.n[0].reads_failed[0], 4);
	ck_assert_int_eq(f.n[0].last.reads_failed[0].error, KVD_ENOTLEADER);
	fx_close(&f);
}
END_TEST

/* A sole voter confirms reads without any message. */
START_TEST(test_raft_read_single_node_immediate)
{
	fx_init(&f, 1, 1);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_LEADER);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 2);
	ck_assert_int_eq(read_req(0, 11), 0);
	ck_assert_uint_eq(f.n[0].n_reads, 1);
	ck_assert_uint_eq(f.n_q, 0);
	fx_close(&f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("raft_read");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_raft_read_waits_for_heartbeat_round);
	tcase_add_test(tc, test_raft_read_rounds_are_shared);
	tcase_add_test(tc, test_raft_read_waits_for_commit_in_term);
	tcase_add_test(tc, test_raft_read_waits_for_applied);
	tcase_add_test(tc, test_raft_read_fails_on_step_down);
	tcase_add_test(tc, test_raft_read_single_node_immediate);
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
