/*
 * test_raft_membership.c: membership changes in the pure Raft core (thesis
 * ch. 4: §4.1 single-server changes, §4.2.1 catching up new servers as
 * learners, §4.2.2 removing the leader, §4.3 joint consensus; paper §6).
 */
#include <check.h>

#include "raft_fixture.h"

static struct fx f;

static int change(unsigned i, uint64_t token, const char *const *add, unsigned n_add,
		  const char *const *rm, unsigned n_rm)
{
	struct raft_event e = {.type = RAFT_EVENT_CHANGE};

	e.u.change.token = token;
	e.u.change.add = add;
	e.u.change.n_add = n_add;
	e.u.change.remove = rm;
	e.u.change.n_remove = n_rm;
	return fx_step(&f, i, &e);
}

static enum raft_server_role role_of(unsigned i, const char *id)
{
	const struct raft_server *s = raft_config_get(raft_configuration(f.n[i].r), id);

	return s != NULL ? s->role : 0;
}

/* §4.2.1 then §4.1: a new server first joins as a learner (no vote, not
 * counted), is caught up, and only then becomes a voter through a single
 * configuration entry; completion is reported once that entry commits. */
START_TEST(test_raft_change_add_learner_then_voter)
{
	const char *add[] = {"n4"};

	fx_init(&f, 4, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_int_eq(change(0, 77, add, 1, NULL, 0), 0);
	ck_assert_int_eq(role_of(0, "n4"), RAFT_LEARNER); /* effective on append */
	ck_assert_uint_eq(raft_configuration(f.n[0].r)->n_old, 0);
	/* A learner does not count toward commitment: with n2 and n3 down the
	 * leader and n4 are no majority of {n1, n2, n3}. */
	f.n[1].down = true;
	f.n[2].down = true;
	fx_run(&f, 300);
	ck_assert_uint_eq(f.n[0].n_changes, 0);
	ck_assert_uint_lt(raft_commit_index(f.n[0].r), raft_last_index(f.n[0].r));
	f.n[1].down = false;
	f.n[2].down = false;
	fx_run(&f, 500);
	ck_assert_int_eq(role_of(0, "n4"), RAFT_VOTER);
	ck_assert_uint_eq(f.n[0].n_changes, 1);
	ck_assert_uint_eq(f.n[0].changes[0].token, 77);
	ck_assert_int_eq(f.n[0].changes[0].error, 0);
	ck_assert_int_eq(role_of(3, "n4"), RAFT_VOTER);
	ck_assert_uint_eq(raft_commit_index(f.n[3].r), raft_commit_index(f.n[0].r));
	fx_close(&f);
}
END_TEST

/* §6 / thesis §4.3: while the joint configuration C_old,new is in force a
 * decision needs a majority of C_old AND of C_new. Replacing n2, n3 by n4,
 * n5 changes four voters, so it goes through C_old,new. */
START_TEST(test_raft_change_joint_needs_both_majorities)
{
	const char *add[] = {"n4", "n5"};
	const char *rm[] = {"n2", "n3"};
	raft_index joint;
	unsigned k;

	fx_init(&f, 5, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_int_eq(change(0, 5, add, 2, rm, 2), 0);
	for (k = 0; k < 100000 && raft_configuration(f.n[0].r)->n_old == 0; k++) {
		if (!fx_deliver_one(&f)) {
			f.now += 10;
			fx_tick(&f, 0);
		}
	}
	ck_assert_uint_eq(raft_configuration(f.n[0].r)->n_old, 3);
	joint = raft_last_index(f.n[0].r);
	/* Only n1 of C_old is left; n1, n4, n5 are a majority of C_new. */
	f.n[1].down = true;
	f.n[2].down = true;
	fx_run(&f, 300);
	ck_assert_uint_lt(raft_commit_index(f.n[0].r), joint);
	ck_assert_uint_eq(f.n[0].n_changes, 0);
	/* n2 returns: C_old has its majority, C_old,new commits, then C_new. */
	f.n[1].down = false;
	fx_run(&f, 300);
	ck_assert_uint_eq(f.n[0].n_changes, 1);
	ck_assert_int_eq(f.n[0].changes[0].error, 0);
	ck_assert_uint_eq(raft_configuration(f.n[0].r)->n_old, 0);
	ck_assert_int_eq(role_of(0, "n2"), 0);
	ck_assert_int_eq(role_of(0, "n5"), RAFT_VOTER);
	ck_assert_int_eq(fx_leader(&f), 0);
	/* The new configuration works without the removed servers. */
	f.n[1].down = true;
	ck_assert_int_eq(fx_propose(&f, 0, "after"), 0);
	fx_run(&f, 100);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), raft_last_index(f.n[0].r));
	fx_close(&f);
}
END_TEST

/* §4.1: removing a dead voter is one configuration entry, which the
 * remaining servers commit by themselves. */
START_TEST(test_raft_change_remove_dead_node)
{
	const char *rm[] = {"n3"};

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.n[2].down = true;
	ck_assert_int_eq(change(0, 1, NULL, 0, rm, 1), 0);
	ck_assert_int_eq(role_of(0, "n3"), 0);
	fx_run(&f, 200);
	ck_assert_uint_eq(f.n[0].n_changes, 1);
	ck_assert_int_eq(f.n[0].changes[0].error, 0);
	ck_assert_uint_eq(raft_configuration(f.n[1].r)->n, 2);
	/* Two of two are now needed: n2 down stops commits. */
	f.n[1].down = true;
	ck_assert_int_eq(fx_propose(&f, 0, "x"), 0);
	fx_run(&f, 100);
	ck_assert_uint_lt(raft_commit_index(f.n[0].r), raft_last_index(f.n[0].r));
	fx_close(&f);
}
END_TEST

/* §4.1: at most one change at a time; only the leader changes membership. */
START_TEST(test_raft_change_busy_and_not_leader)
{
	const char *add[] = {"n4"};
	const char *rm[] = {"n3"};
	const char *bad[] = {"n9"};

	fx_init(&f, 4, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_int_eq(change(1, 1, add, 1, NULL, 0), KVD_ENOTLEADER);
	ck_assert_int_eq(change(0, 1, NULL, 0, bad, 1), KVD_EINVAL);
	ck_assert_int_eq(change(0, 1, add, 1, NULL, 0), 0);
	ck_assert_int_eq(change(0, 2, NULL, 0, rm, 1), KVD_EBUSY);
	fx_run(&f, 500);
	ck_assert_uint_eq(f.n[0].n_changes, 1);
	ck_assert_int_eq(change(0, 2, NULL, 0, rm, 1), 0);
	fx_run(&f, 200);
	ck_assert_uint_eq(f.n[0].n_changes, 2);
	fx_close(&f);
}
END_TEST

/* Thesis §4.2.2: a leader removed from the configuration keeps leading until
 * the configuration commits (without counting itself), then steps down; the
 * remaining servers elect a leader among themselves. */
START_TEST(test_raft_change_leader_removed_steps_down)
{
	const char *rm[] = {"n1"};
	int l;

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_int_eq(change(0, 3, NULL, 0, rm, 1), 0);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_LEADER);
	fx_deliver_all(&f);
	ck_assert_uint_eq(f.n[0].n_changes, 1);
	ck_assert_int_eq(f.n[0].changes[0].error, 0);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_FOLLOWER);
	fx_run(&f, 2000);
	l = fx_leader(&f);
	ck_assert(l == 1 || l == 2);
	fx_close(&f);
}
END_TEST

/* A learner that never answers makes the change fail (thesis §4.2.1:
 * unavailable servers must not stall the cluster forever). */
START_TEST(test_raft_change_dead_learner_times_out)
{
	const char *add[] = {"n4"};

	fx_init(&f, 4, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.n[3].down = true;
	ck_assert_int_eq(change(0, 8, add, 1, NULL, 0), 0);
	fx_run(&f, 12000);
	ck_assert_uint_eq(f.n[0].n_changes, 1);
	ck_assert_int_eq(f.n[0].changes[0].error, KVD_ETIMEDOUT);
	ck_assert_int_eq(role_of(0, "n4"), RAFT_LEARNER);
	ck_assert_int_eq(fx_leader(&f), 0);
	fx_close(&f);
}
END_TEST

/* Issue 7: a change that promotes a server already a learner (a --join
 * retried after a timeout) waits for it to catch up like a new one; before
 * it is current it must not become a voter. */
START_TEST(test_raft_change_existing_learner_waits_for_catchup)
{
	const char *add[] = {"n4"};

	fx_init(&f, 4, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.n[3].down = true;
	ck_assert_int_eq(change(0, 8, add, 1, NULL, 0), 0);
	fx_run(&f, 12000);
	ck_assert_uint_eq(f.n[0].n_changes, 1);
	ck_assert_int_eq(f.n[0].changes[0].error, KVD_ETIMEDOUT);
	ck_assert_int_eq(role_of(0, "n4"), RAFT_LEARNER);
	for (int i = 0; i < 40; i++) {
		ck_assert_int_eq(fx_propose(&f, 0, "entry"), 0);
		fx_deliver_all(&f);
	}
	/* The retry: n4 is still down and far behind. */
	ck_assert_int_eq(change(0, 9, add, 1, NULL, 0), 0);
	fx_run(&f, 1000);
	ck_assert_int_eq(role_of(0, "n4"), RAFT_LEARNER);
	ck_assert_uint_eq(f.n[0].n_changes, 1);
	/* Once it is up and current it is promoted. */
	f.n[3].down = false;
	fx_run(&f, 2000);
	ck_assert_int_eq(role_of(0, "n4"), RAFT_VOTER);
	ck_assert_uint_eq(f.n[0].n_changes, 2);
	ck_assert_uint_eq(f.n[0].changes[1].token, 9);
	ck_assert_int_eq(f.n[0].changes[1].error, 0);
	fx_close(&f);
}
END_TEST

/* Thesis §4.2.1: a learner receives entries but never campaigns, even when
 * it stops hearing from the leader. */
START_TEST(test_raft_change_learner_never_campaigns)
{
	const char *add[] = {"n4"};
	struct raft_stats st;

	fx_init(&f, 4, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.n[1].down = true; /* n2 down: the change cannot complete... */
	f.n[2].down = true; /* ...nor can the learner config commit */
	ck_assert_int_eq(change(0, 4, add, 1, NULL, 0), 0);
	fx_run(&f, 100);
	ck_assert_int_eq(role_of(3, "n4"), RAFT_LEARNER);
	f.n[0].down = true;
	fx_run(&f, 5000);
	raft_stats_get(f.n[3].r, &st);
	ck_assert_uint_eq(st.pre_votes_started + st.elections_started, 0);
	ck_assert_int_eq(raft_role(f.n[3].r), RAFT_FOLLOWER);
	ck_assert_str_eq(raft_leader(f.n[3].r), "");
	fx_close(&f);
}
END_TEST

/* Thesis §4.2.2 with joint consensus: a leader absent from C_new keeps
 * leading through C_old,new (counted in C_old only), commits C_new without
 * counting itself, then steps down. */
START_TEST(test_raft_change_joint_leader_not_in_new_config)
{
	const char *add[] = {"n4", "n5"};
	const char *rm[] = {"n1", "n2"};
	int l;

	fx_init(&f, 5, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_int_eq(change(0, 6, add, 2, rm, 2), 0);
	fx_run(&f, 1000);
	ck_assert_uint_eq(f.n[0].n_changes, 1);
	ck_assert_int_eq(f.n[0].changes[0].error, 0);
	ck_assert_int_eq(raft_role(f.n[0].r), RAFT_FOLLOWER);
	ck_assert_uint_eq(raft_configuration(f.n[2].r)->n, 3);
	ck_assert(!raft_config_is_voter(raft_configuration(f.n[2].r), "n1"));
	fx_run(&f, 3000);
	l = fx_leader(&f);
	ck_assert(l >= 2);
	fx_close(&f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("raft_membership");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_raft_change_add_learner_then_voter);
	tcase_add_test(tc, test_raft_change_joint_needs_both_majorities);
	tcase_add_test(tc, test_raft_change_remove_dead_node);
	tcase_add_test(tc, test_raft_change_busy_and_not_leader);
	tcase_add_test(tc, test_raft_change_leader_removed_steps_down);
	tcase_add_test(tc, test_raft_change_dead_learner_times_out);
	tcase_add_test(tc, test_raft_change_existing_learner_waits_for_catchup);
	tcase_add_test(tc, test_raft_change_learner_never_campaigns);
	tcase_add_test(tc, test_raft_change_joint_leader_not_in_new_config);
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
