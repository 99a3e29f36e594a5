/*
 * test_raft_election.c: leader election in the pure Raft core (Raft paper
 * §5.1, §5.2, §5.4.1; thesis §3.4, §6.2, §9.6), including the single-member
 * cluster path the single-node server is built on.
 */
#include <check.h>

#include "raft_fixture.h"

static struct fx f;

/* Starts one core alone with a bootstrap config (itself as sole voter) plus
 * extra command entries; returns the START update's rv. */
static struct raft_core *start_alone(struct raft_update *u, unsigned extra, raft_index applied)
{
	struct raft_config c;
	struct raft_entry ents[8];
	void *buf;
	struct raft_event e = {.type = RAFT_EVENT_START, .now = 100};
	struct raft_core *r = raft_create("solo:1", NULL, 1);

	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(raft_config_add(&c, "solo:1", RAFT_VOTER), 0);
	ck_assert_int_eq(raft_bootstrap_entry(&c, &ents[0], &buf), 0);
	for (unsigned i = 1; i <= extra; i++) {
		ents[i].index = i + 1;
		ents[i].term = 1;
		ents[i].type = RAFT_ENTRY_COMMAND;
		ents[i].data = "x";
		ents[i].len = 1;
	}
	e.u.start.term = 1;
	e.u.start.entries = ents;
	e.u.start.n_entries = 1 + extra;
	e.u.start.applied_index = applied;
	ck_assert_int_eq(raft_step(r, &e, u), 0);
	free(buf);
	return r;
}

/* Thesis §3.4 with a single voter: it is a majority by itself, so it leads at
 * once (new term, self vote persisted, a no-op, §8) but commits only once
 * its own write is durable (§10.2.1: the leader counts itself when persisted). */
START_TEST(test_raft_step_single_node_leads_and_commits)
{
	struct raft_update u;
	struct raft_event e = {.type = RAFT_EVENT_PERSISTED, .now = 110};
	struct raft_core *r = start_alone(&u, 0, 0);

	ck_assert_int_eq(u.role, RAFT_LEADER);
	ck_assert(u.state_changed);
	ck_assert(u.meta_changed);
	ck_assert_uint_eq(u.term, 2);
	ck_assert_str_eq(u.voted_for, "solo:1");
	ck_assert_str_eq(u.leader, "solo:1");
	ck_assert_uint_eq(u.n_entries, 1);
	ck_assert_int_eq(u.entries[0].type, RAFT_ENTRY_NOOP);
	ck_assert_uint_eq(u.entries[0].index, 2);
	ck_assert_uint_eq(u.n_messages, 0);
	ck_assert_uint_eq(u.commit_index, 0);
	ck_assert_uint_eq(u.n_apply, 0);

	/* A stale completion (wrong term) is ignored. */
	e.u.persisted.index = 2;
	e.u.persisted.term = 1;
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	ck_assert_uint_eq(u.commit_index, 0);

	e.u.persisted.term = 2;
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	ck_assert_uint_eq(u.commit_index, 2);
	ck_assert_uint_eq(u.n_apply, 2);
	ck_assert_uint_eq(u.apply[0].index, 1);
	ck_assert_int_eq(u.apply[0].type, RAFT_ENTRY_CONFIG);
	ck_assert_uint_eq(u.apply[1].index, 2);

	/* A proposal commits after its own persist, and applies once. */
	{
		struct raft_entry p = {.type = RAFT_ENTRY_COMMAND, .data = "set", .len = 3};
		struct raft_event pe = {.type = RAFT_EVENT_PROPOSE, .now = 120};
		pe.u.propose.entries = &p;
		pe.u.propose.n = 1;
		ck_assert_int_eq(raft_step(r, &pe, &u), 0);
		ck_assert_uint_eq(u.proposed_index, 3);
		ck_assert_uint_eq(u.proposed_term, 2);
		ck_assert_uint_eq(u.n_entries, 1);
		ck_assert_uint_eq(u.n_apply, 0);
		e.u.persisted.index = 3;
		ck_assert_int_eq(raft_step(r, &e, &u), 0);
		ck_assert_uint_eq(u.commit_index, 3);
		ck_assert_uint_eq(u.n_apply, 1);
		ck_assert_uint_eq(u.apply[0].len, 3);
		ck_assert_int_eq(raft_step(r, &e, &u), 0);
		ck_assert_uint_eq(u.n_apply, 0);
	}
	raft_destroy(r);
}
END_TEST

/* §5.4.2 / thesis §3.6.2: entries of an earlier term in a sole voter's log
 * (beyond applied_index) commit once the new leader's no-op is durable. */
START_TEST(test_raft_step_single_node_commits_old_entries)
{
	struct raft_update u;
	struct raft_event e = {.type = RAFT_EVENT_PERSISTED, .now = 110};
	struct raft_core *r = start_alone(&u, 3, 2);

	ck_assert_int_eq(u.role, RAFT_LEADER);
	ck_assert_uint_eq(u.entries[0].index, 5);
	ck_assert_uint_eq(u.commit_index, 2);
	e.u.persisted.index = 5;
	e.u.persisted.term = 2;
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	ck_assert_uint_eq(u.commit_index, 5);
	ck_assert_uint_eq(u.n_apply, 3);
	ck_assert_uint_eq(u.apply[0].index, 3);
	raft_destroy(r);
}
END_TEST

/* Thesis §4.2.1: a server started with no configuration (to join later)
 * never campaigns. */
START_TEST(test_raft_step_empty_config_never_campaigns)
{
	struct raft_update u;
	struct raft_event e = {.type = RAFT_EVENT_START, .now = 0};
	struct raft_core *r = raft_create("new:1", NULL, 3);

	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	ck_assert_int_eq(u.role, RAFT_FOLLOWER);
	for (raft_time t = 100; t < 20000; t += 100) {
		struct raft_event tick = {.type = RAFT_EVENT_TICK, .now = t};
		ck_assert_int_eq(raft_step(r, &tick, &u), 0);
		ck_assert_int_eq(u.role, RAFT_FOLLOWER);
		ck_assert_uint_eq(u.n_messages, 0);
		ck_assert_uint_eq(u.current_term, 0);
	}
	raft_destroy(r);
}
END_TEST

/* §5.2: three voters elect exactly one leader; the others follow it. */
START_TEST(test_raft_step_three_nodes_elect_one_leader)
{
	int l;

	fx_init(&f, 3, 3);
	l = fx_elect_first(&f);
	ck_assert_int_eq(l, 0);
	ck_assert_uint_eq(raft_current_term(f.n[0].r), 2);
	fx_run(&f, 300);
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_str_eq(raft_leader(f.n[i].r), "n1");
		ck_assert_uint_eq(raft_commit_index(f.n[i].r), 2);
		ck_assert_uint_eq(f.n[i].applied, 2);
	}
	ck_assert_int_eq(raft_role(f.n[1].r), RAFT_FOLLOWER);
	fx_close(&f);
}
END_TEST

static struct raft_message vote_req(const char *from, const char *to, raft_term term, raft_index li,
				    raft_term lt)
{
	struct raft_message m;

	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_REQUEST_VOTE;
	strcpy(m.from, from);
	strcpy(m.to, to);
	m.term = term;
	m.u.request_vote.last_log_index = li;
	m.u.request_vote.last_log_term = lt;
	return m;
}

/* §5.2: each server votes for at most one candidate in a term, and the vote
 * is persisted before the grant leaves (needs_sync). */
START_TEST(test_raft_recv_vote_not_granted_twice)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	struct raft_update *u = &f.n[0].last;

	fx_init(&f, 3, 3);
	e.u.receive = vote_req("n2", "n1", 5, 1, 1);
	fx_step(&f, 0, &e);
	ck_assert(u->meta_changed);
	ck_assert_uint_eq(u->term, 5);
	ck_assert_str_eq(u->voted_for, "n2");
	ck_assert_uint_eq(u->n_messages, 1);
	ck_assert(u->messages[0].u.request_vote_result.granted);
	ck_assert(u->messages[0].needs_sync);

	e.u.receive = vote_req("n3", "n1", 5, 1, 1);
	fx_step(&f, 0, &e);
	ck_assert(!u->messages[0].u.request_vote_result.granted);
	ck_assert_str_eq(raft_voted_for(f.n[0].r), "n2");

	/* The same candidate asking again gets the same answer. */
	e.u.receive = vote_req("n2", "n1", 5, 1, 1);
	fx_step(&f, 0, &e);
	ck_assert(u->messages[0].u.request_vote_result.granted);
	fx_drop_all(&f);
	fx_close(&f);
}
END_TEST

/* §5.4.1: a vote goes only to a candidate whose log is at least as up to
 * date; the term is still adopted. */
START_TEST(test_raft_recv_vote_rejects_stale_log)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	struct raft_update *u = &f.n[0].last;

	fx_init(&f, 3, 3);
	e.u.receive = vote_req("n2", "n1", 3, 0, 0);
	fx_step(&f, 0, &e);
	ck_assert(!u->messages[0].u.request_vote_result.granted);
	ck_assert_uint_eq(raft_current_term(f.n[0].r), 3);
	ck_assert_str_eq(raft_voted_for(f.n[0].r), "");
	fx_drop_all(&f);
	fx_close(&f);
}
END_TEST

/* §5.1: a leader that sees a higher term steps down (check-quorum off so
 * the step-down comes from the term alone). */
START_TEST(test_raft_step_stale_leader_steps_down)
{
	struct raft_options o;
	int l;

	raft_options_default(&o);
	o.check_quorum = false;
	o.pre_vote = false;
	fx_init_opts(&f, 3, 3, &o);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	fx_partition(&f, 0, true);
	fx_run(&f, 3000);
	l = fx_leader(&f);
	ck_assert_int_gt(l, 0);
	/* The old leader, cut off and without check-quorum, still believes. */
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_LEADER);
	ck_assert_uint_lt(raft_current_term(f.n[0].r), raft_current_term(f.n[l].r));
	fx_partition(&f, 0, false);
	fx_run(&f, 300);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_FOLLOWER);
	ck_assert_str_eq(raft_leader(f.n[0].r), f.n[l].id);
	/* Its proposals are refused. */
	ck_assert_int_eq(fx_propose(&f, 0, "late"), KVD_ENOTLEADER);
	fx_close(&f);
}
END_TEST

/* Thesis §9.6: pre-vote keeps a partitioned server from raising its term, so
 * on rejoining it does not depose a healthy leader. */
START_TEST(test_raft_step_pre_vote_does_not_raise_term)
{
	raft_term t;

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	t = raft_current_term(f.n[2].r);
	fx_partition(&f, 2, true);
	fx_run(&f, 5000);
	ck_assert_uint_eq(raft_current_term(f.n[2].r), t);
	ck_assert_str_eq(raft_leader(f.n[2].r), "");
	ck_assert_int_eq(fx_leader(&f), 0);
	fx_partition(&f, 2, false);
	fx_run(&f, 500);
	ck_assert_int_eq(fx_leader(&f), 0);
	ck_assert_uint_eq(raft_current_term(f.n[0].r), t);
	ck_assert_str_eq(raft_leader(f.n[2].r), "n1");
	fx_close(&f);
}
END_TEST

/* Thesis §6.2: a leader that hears from no majority for an election timeout
 * steps down and forgets the leader; its followers forget it too once their
 * election timeout passes (§5.2). */
START_TEST(test_raft_tick_check_quorum_step_down)
{
	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.n[1].down = true;
	f.n[2].down = true;
	fx_run(&f, 400);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_LEADER);
	fx_run(&f, 200);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_FOLLOWER);
	ck_assert_str_eq(raft_leader(f.n[0].r), "");
	fx_close(&f);
}
END_TEST

/* Thesis §9.6 (leader stickiness): a follower that heard from a live leader
 * within the minimum election timeout refuses a higher-term RequestVote and
 * keeps its term, unless the request comes from a leadership transfer. */
START_TEST(test_raft_recv_vote_refused_in_lease)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	struct raft_update *u = &f.n[1].last;
	raft_term t;

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 100);
	t = raft_current_term(f.n[1].r);
	e.u.receive = vote_req("n3", "n2", t + 1, 100, t);
	fx_step(&f, 1, &e);
	ck_assert(!u->messages[0].u.request_vote_result.granted);
	ck_assert_uint_eq(raft_current_term(f.n[1].r), t);
	e.u.receive.u.request_vote.transfer = true;
	fx_step(&f, 1, &e);
	ck_assert(u->messages[0].u.request_vote_result.granted);
	ck_assert_uint_eq(raft_current_term(f.n[1].r), t + 1);
	fx_drop_all(&f);
	fx_close(&f);
}
END_TEST

/* §5.2: a follower whose election timeout passes without hearing from the
 * leader forgets it (leader ""). */
START_TEST(test_raft_tick_follower_forgets_leader)
{
	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_str_eq(raft_leader(f.n[1].r), "n1");
	f.n[0].down = true;
	fx_partition(&f, 1, true); /* n2 alone too: nobody elects */
	fx_run(&f, 1100);
	ck_assert_str_eq(raft_leader(f.n[1].r), "");
	fx_close(&f);
}
END_TEST

/* IO_FAILED: the core stops safely; later steps are refused. */
START_TEST(test_raft_step_io_failed_shuts_down)
{
	struct raft_event e = {.type = RAFT_EVENT_IO_FAILED};

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_drop_all(&f);
	ck_assert_int_eq(fx_step(&f, 0, &e), 0);
	ck_assert_uint_eq(f.n[0].last.n_messages, 0);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_FOLLOWER);
	ck_assert_int_eq(fx_propose(&f, 0, "x"), KVD_ESHUTDOWN);
	e.type = RAFT_EVENT_TICK;
	f.now += 10000;
	ck_assert_int_eq(fx_step(&f, 0, &e), KVD_ESHUTDOWN);
	ck_assert_uint_eq(f.n[0].last.n_messages, 0);
	fx_close(&f);
}
END_TEST

static bool has_note(const struct raft_update *u, enum raft_note_kind kind, const char *reason)
{
	for (unsigned i = 0; i < u->n_notes; i++) {
		if (u->notes[i].kind == kind && strcmp(u->notes[i].reason, reason) == 0)
			return true;
	}
	return false;
}

/* Operator notes and counters: refusals say why (thesis §9.6 lease, §5.4.1
 * log check, §5.2 one vote per term); elections are counted. */
START_TEST(test_raft_step_notes_and_stats)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	struct raft_update *u = &f.n[1].last;
	struct raft_stats st;
	raft_term t;

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	raft_stats_get(f.n[0].r, &st);
	ck_assert_uint_eq(st.pre_votes_started, 1);
	ck_assert_uint_eq(st.elections_started, 1);
	ck_assert_uint_eq(st.elections_won, 1);
	raft_stats_get(f.n[1].r, &st);
	ck_assert_uint_eq(st.votes_granted, 1);
	fx_run(&f, 100);
	t = raft_current_term(f.n[1].r);
	e.u.receive = vote_req("n3", "n2", t + 1, 100, t);
	fx_step(&f, 1, &e);
	ck_assert(has_note(u, RAFT_NOTE_VOTE_REFUSED, "leader lease active"));
	e.u.receive = vote_req("n3", "n2", t - 1, 100, t);
	fx_step(&f, 1, &e);
	ck_assert(has_note(u, RAFT_NOTE_VOTE_REFUSED, "stale term"));
	e.u.receive = vote_req("n3", "n2", t + 1, 0, 0);
	e.u.receive.u.request_vote.transfer = true;
	fx_step(&f, 1, &e);
	ck_assert(has_note(u, RAFT_NOTE_VOTE_REFUSED, "log not up to date"));
	raft_stats_get(f.n[1].r, &st);
	ck_assert_uint_eq(st.votes_refused, 3);
	/* The leader sees the higher term in n2's answers and steps down. */
	fx_deliver_all(&f);
	fx_run(&f, 100);
	raft_stats_get(f.n[0].r, &st);
	ck_assert_uint_ge(st.step_downs, 1);
	fx_close(&f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("raft_election");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_raft_step_single_node_leads_and_commits);
	tcase_add_test(tc, test_raft_step_single_node_commits_old_entries);
	tcase_add_test(tc, test_raft_step_empty_config_never_campaigns);
	tcase_add_test(tc, test_raft_step_three_nodes_elect_one_leader);
	tcase_add_test(tc, test_raft_recv_vote_not_granted_twice);
	tcase_add_test(tc, test_raft_recv_vote_rejects_stale_log);
	tcase_add_test(tc, test_raft_step_stale_leader_steps_down);
	tcase_add_test(tc, test_raft_step_pre_vote_does_not_raise_term);
	tcase_add_test(tc, test_raft_tick_check_quorum_step_down);
	tcase_add_test(tc, test_raft_recv_vote_refused_in_lease);
	tcase_add_test(tc, test_raft_tick_follower_forgets_leader);
	tcase_add_test(tc, test_raft_step_io_failed_shuts_down);
	tcase_add_test(tc, test_raft_step_notes_and_stats);
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
