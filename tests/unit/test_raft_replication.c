/*
 * test_raft_replication.c: log replication and commitment in the pure Raft
 * core (Raft paper §5.3, §5.4.2 and Figure 8; thesis §3.5, §10.2).
 */
#include <check.h>

#include "raft_fixture.h"

static struct fx f;

static struct raft_entry ent(raft_index i, raft_term t, enum raft_entry_type type)
{
	struct raft_entry e = {.index = i, .term = t, .type = type, .data = NULL, .len = 0};

	if (type == RAFT_ENTRY_COMMAND) {
		e.data = "x";
		e.len = 1;
	}
	return e;
}

static struct raft_message append_msg(const char *from, const char *to, raft_term term,
				      raft_index prev, raft_term prev_term,
				      const struct raft_entry *entries, unsigned n,
				      raft_index commit)
{
	struct raft_message m;

	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_APPEND;
	strcpy(m.from, from);
	strcpy(m.to, to);
	m.term = term;
	m.u.append.prev_log_index = prev;
	m.u.append.prev_log_term = prev_term;
	m.u.append.entries = entries;
	m.u.append.n_entries = n;
	m.u.append.leader_commit = commit;
	return m;
}

/* Starts a lone core n<k> of a 5-voter cluster with the given log tail
 * (after the bootstrap entry) and term. */
static struct raft_core *start_with_log(const char *id, const struct raft_entry *tail, unsigned n,
					raft_term term, struct raft_update *u)
{
	struct raft_config c;
	struct raft_entry ents[16];
	void *buf;
	struct raft_event e = {.type = RAFT_EVENT_START, .now = 0};
	struct raft_core *r = raft_create(id, NULL, 9);

	memset(&c, 0, sizeof(c));
	for (unsigned i = 1; i <= 5; i++) {
		char nid[8];
		snprintf(nid, sizeof(nid), "n%u", i);
		ck_assert_int_eq(raft_config_add(&c, nid, RAFT_VOTER), 0);
	}
	ck_assert_int_eq(raft_bootstrap_entry(&c, &ents[0], &buf), 0);
	for (unsigned i = 0; i < n; i++)
		ents[i + 1] = tail[i];
	e.u.start.term = term;
	e.u.start.entries = ents;
	e.u.start.n_entries = n + 1;
	ck_assert_int_eq(raft_step(r, &e, u), 0);
	free(buf);
	return r;
}

/* §5.3: a follower deletes an existing entry that conflicts with a new one
 * (same index, different term) and all that follow it, then appends; the
 * answer waits for durability (needs_sync). */
START_TEST(test_raft_recv_append_truncates_conflicting_suffix)
{
	struct raft_update u;
	struct raft_entry tail[3] = {ent(2, 2, RAFT_ENTRY_NOOP), ent(3, 2, RAFT_ENTRY_COMMAND),
				     ent(4, 2, RAFT_ENTRY_COMMAND)};
	struct raft_entry fresh[2] = {ent(3, 3, RAFT_ENTRY_NOOP), ent(4, 3, RAFT_ENTRY_COMMAND)};
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE, .now = 10};
	struct raft_core *r = start_with_log("n2", tail, 3, 2, &u);

	e.u.receive = append_msg("n1", "n2", 3, 2, 2, fresh, 2, 0);
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	ck_assert_uint_eq(u.truncate_from, 3);
	ck_assert_uint_eq(u.n_entries, 2);
	ck_assert_uint_eq(u.entries[0].index, 3);
	ck_assert_uint_eq(u.entries[0].term, 3);
	ck_assert_uint_eq(u.entries[1].term, 3);
	ck_assert_uint_eq(u.n_messages, 1);
	ck_assert(u.messages[0].u.append_result.success);
	ck_assert_uint_eq(u.messages[0].u.append_result.last_log_index, 4);
	ck_assert(u.messages[0].needs_sync);
	ck_assert_str_eq(u.leader, "n1");

	/* The same request again changes nothing (idempotent, §5.3). */
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	ck_assert_uint_eq(u.truncate_from, 0);
	ck_assert_uint_eq(u.n_entries, 0);
	ck_assert(u.messages[0].u.append_result.success);

	/* A stale request carrying only a prefix must not truncate. */
	e.u.receive = append_msg("n1", "n2", 3, 2, 2, fresh, 1, 0);
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	ck_assert_uint_eq(u.truncate_from, 0);
	ck_assert_uint_eq(raft_last_index(r), 4);
	raft_destroy(r);
}
END_TEST

/* §5.3 (fast backtracking): a rejection names the conflicting term and the
 * first index the follower holds of it. */
START_TEST(test_raft_recv_append_rejects_with_conflict_hint)
{
	struct raft_update u;
	struct raft_entry tail[3] = {ent(2, 2, RAFT_ENTRY_NOOP), ent(3, 2, RAFT_ENTRY_COMMAND),
				     ent(4, 2, RAFT_ENTRY_COMMAND)};
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE, .now = 10};
	struct raft_core *r = start_with_log("n2", tail, 3, 2, &u);
	const struct raft_append_result *res;

	e.u.receive = append_msg("n1", "n2", 4, 4, 3, NULL, 0, 0);
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	res = &u.messages[0].u.append_result;
	ck_assert(!res->success);
	ck_assert_uint_eq(res->reject_index, 4);
	ck_assert_uint_eq(res->conflict_term, 2);
	ck_assert_uint_eq(res->conflict_index, 2);
	ck_assert_uint_eq(res->last_log_index, 4);

	/* prev beyond the log: the hint is the follower's last index. */
	e.u.receive = append_msg("n1", "n2", 4, 9, 4, NULL, 0, 0);
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	res = &u.messages[0].u.append_result;
	ck_assert(!res->success);
	ck_assert_uint_eq(res->conflict_term, 0);
	ck_assert_uint_eq(res->last_log_index, 4);

	/* A lower-term request is refused with the current term (§5.1). */
	e.u.receive = append_msg("n9", "n2", 1, 1, 1, NULL, 0, 0);
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	ck_assert(!u.messages[0].u.append_result.success);
	ck_assert_uint_eq(u.messages[0].term, 4);
	raft_destroy(r);
}
END_TEST

static void feed(struct raft_core *r, struct raft_message m, struct raft_update *u)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE, .now = 5000};

	e.u.receive = m;
	ck_assert_int_eq(raft_step(r, &e, u), 0);
}

static struct raft_message result_msg(const char *from, raft_term term, bool success,
				      raft_index last, enum raft_msg_type type, bool pre)
{
	struct raft_message m;

	memset(&m, 0, sizeof(m));
	m.type = type;
	strcpy(m.from, from);
	strcpy(m.to, "n1");
	m.term = term;
	if (type == RAFT_MSG_APPEND_RESULT) {
		m.u.append_result.success = success;
		m.u.append_result.last_log_index = last;
	} else {
		m.u.request_vote_result.granted = success;
		m.u.request_vote_result.pre_vote = pre;
	}
	return m;
}

/* Figure 8 / §5.4.2: a leader of term 4 holding an entry of term 2 that is
 * now on a majority must not commit it by counting replicas; it commits
 * only when an entry of its own term (its no-op) reaches a majority, which
 * then commits the older one indirectly. */
START_TEST(test_raft_step_commit_only_current_term)
{
	struct raft_update u;
	struct raft_entry tail[2] = {ent(2, 2, RAFT_ENTRY_NOOP), ent(3, 2, RAFT_ENTRY_COMMAND)};
	struct raft_event e = {.type = RAFT_EVENT_TICK, .now = 5000};
	struct raft_core *r = start_with_log("n1", tail, 2, 3, &u);

	/* Win an election at term 4 (pre-vote, then vote) with n2 and n3. */
	ck_assert_int_eq(raft_step(r, &e, &u), 0);
	feed(r, result_msg("n2", 4, true, 0, RAFT_MSG_REQUEST_VOTE_RESULT, true), &u);
	feed(r, result_msg("n3", 4, true, 0, RAFT_MSG_REQUEST_VOTE_RESULT, true), &u);
	ck_assert_int_eq(u.role, RAFT_CANDIDATE);
	ck_assert_uint_eq(u.current_term, 4);
	feed(r, result_msg("n2", 4, true, 0, RAFT_MSG_REQUEST_VOTE_RESULT, false), &u);
	feed(r, result_msg("n3", 4, true, 0, RAFT_MSG_REQUEST_VOTE_RESULT, false), &u);
	ck_assert_int_eq(u.role, RAFT_LEADER);
	ck_assert_uint_eq(u.n_entries, 1);
	ck_assert_uint_eq(u.entries[0].index, 4);
	e.type = RAFT_EVENT_PERSISTED;
	e.u.persisted.index = 4;
	e.u.persisted.term = 4;
	ck_assert_int_eq(raft_step(r, &e, &u), 0);

	/* Index 3 (term 2) reaches n1, n2, n3: a majority, yet no commit. */
	feed(r, result_msg("n2", 4, true, 3, RAFT_MSG_APPEND_RESULT, false), &u);
	feed(r, result_msg("n3", 4, true, 3, RAFT_MSG_APPEND_RESULT, false), &u);
	ck_assert_uint_eq(raft_commit_index(r), 0);
	ck_assert_uint_eq(u.n_apply, 0);

	/* The no-op reaches one follower: not a majority yet. */
	feed(r, result_msg("n2", 4, true, 4, RAFT_MSG_APPEND_RESULT, false), &u);
	ck_assert_uint_eq(raft_commit_index(r), 0);
	/* ... and a second: index 4 commits, and with it 1..3. */
	feed(r, result_msg("n3", 4, true, 4, RAFT_MSG_APPEND_RESULT, false), &u);
	ck_assert_uint_eq(raft_commit_index(r), 4);
	ck_assert_uint_eq(u.n_apply, 4);
	raft_destroy(r);
}
END_TEST

/* §5.3: a proposal is replicated, committed and applied exactly once on every
 * server; the leader's AppendEntries may leave before its own write is
 * durable (thesis §10.2.1), followers' answers may not. */
START_TEST(test_raft_step_replicates_and_commits)
{
	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_int_eq(fx_propose(&f, 0, "hello"), 0);
	ck_assert_uint_eq(f.n[0].last.proposed_index, 3);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_APPEND, NULL), 2);
	ck_assert(!f.q[0].m.needs_sync);
	fx_deliver_one(&f);
	ck_assert(f.q[f.n_q - 1].m.type == RAFT_MSG_APPEND_RESULT);
	ck_assert(f.q[f.n_q - 1].m.needs_sync);
	fx_deliver_all(&f);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 3);
	ck_assert_uint_eq(f.n[0].applied, 3);
	fx_run(&f, 200); /* followers learn the commit index */
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_uint_eq(f.n[i].applied, 3);
		ck_assert_uint_eq(f.n[i].apply_count[3], 1);
		ck_assert_uint_eq(f.n[i].applied_term[3], 2);
	}
	fx_close(&f);
}
END_TEST

/* Batching: one PROPOSE of many entries yields one log append and one
 * AppendEntries per follower carrying all of them. */
START_TEST(test_raft_step_batches_proposals)
{
	struct raft_entry b[10];
	struct raft_event e = {.type = RAFT_EVENT_PROPOSE};

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	for (unsigned i = 0; i < 10; i++) {
		b[i].type = RAFT_ENTRY_COMMAND;
		b[i].data = "abc";
		b[i].len = 3;
	}
	e.u.propose.entries = b;
	e.u.propose.n = 10;
	ck_assert_int_eq(fx_step(&f, 0, &e), 0);
	ck_assert_uint_eq(f.n[0].last.n_entries, 10);
	ck_assert_uint_eq(f.n[0].last.proposed_index, 3);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_APPEND, "n2"), 1);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_APPEND, "n3"), 1);
	ck_assert_uint_eq(f.q[0].m.u.append.n_entries, 10);
	fx_deliver_all(&f);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 12);
	fx_close(&f);
}
END_TEST

/* Thesis §10.2.1: the leader counts itself toward commitment only once its
 * own entries are persisted. */
START_TEST(test_raft_step_leader_counts_itself_when_persisted)
{
	struct raft_event e = {.type = RAFT_EVENT_PERSISTED};

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.n[2].down = true;
	f.n[0].auto_persist = false;
	ck_assert_int_eq(fx_propose(&f, 0, "v"), 0);
	fx_deliver_all(&f);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 2);
	e.u.persisted.index = 3;
	e.u.persisted.term = 2;
	fx_step(&f, 0, &e);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 3);
	ck_assert_uint_eq(f.n[0].applied, 3);
	fx_close(&f);
}
END_TEST

/* Followers apply up to min(commit, persisted): a committed entry not yet
 * durable locally is not applied. */
START_TEST(test_raft_step_follower_applies_only_persisted)
{
	struct raft_event e = {.type = RAFT_EVENT_PERSISTED};

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	ck_assert_uint_eq(f.n[1].applied, 2);
	f.n[1].auto_persist = false;
	ck_assert_int_eq(fx_propose(&f, 0, "v"), 0);
	fx_deliver_all(&f);
	fx_run(&f, 200);
	ck_assert_uint_eq(raft_commit_index(f.n[1].r), 3);
	ck_assert_uint_eq(f.n[1].applied, 2);
	e.u.persisted.index = 3;
	e.u.persisted.term = 2;
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(f.n[1].applied, 3);
	fx_close(&f);
}
END_TEST

/* §5.3 with conflict hints: a follower that missed many entries over
 * several terms catches up, and a diverged follower's log is repaired. */
START_TEST(test_raft_step_lagging_follower_catches_up)
{
	char buf[16];

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.n[2].down = true;
	for (unsigned i = 0; i < 50; i++) {
		snprintf(buf, sizeof(buf), "v%u", i);
		ck_assert_int_eq(fx_propose(&f, 0, buf), 0);
		fx_deliver_all(&f);
	}
	f.n[2].down = false;
	fx_run(&f, 500);
	ck_assert_uint_eq(raft_last_index(f.n[2].r), raft_last_index(f.n[0].r));
	ck_assert_uint_eq(f.n[2].applied, 52);
	fx_close(&f);
}
END_TEST

/* Thesis §10.2 (pipelining): a follower in replicate state has at most
 * max_inflight_msgs AppendEntries outstanding; each carries at most
 * max_msg_bytes of entries. */
START_TEST(test_raft_step_inflight_limit)
{
	struct raft_options o;

	raft_options_default(&o);
	o.max_inflight_msgs = 2;
	o.max_msg_bytes = 1;
	fx_init_opts(&f, 2, 2, &o);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	for (unsigned i = 0; i < 5; i++)
		ck_assert_int_eq(fx_propose(&f, 0, "z"), 0);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_APPEND, "n2"), 2);
	ck_assert_uint_eq(f.q[0].m.u.append.n_entries, 1);
	fx_deliver_all(&f);
	fx_run(&f, 100);
	ck_assert_uint_eq(raft_commit_index(f.n[0].r), 7);
	fx_close(&f);
}
END_TEST

/* Lost messages are recovered: with every AppendEntries to a follower
 * dropped for a while, heartbeats (probe retries) bring it back. */
START_TEST(test_raft_step_recovers_lost_appends)
{
	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	f.cut[0][2] = true;
	for (unsigned i = 0; i < 5; i++) {
		ck_assert_int_eq(fx_propose(&f, 0, "q"), 0);
		fx_deliver_all(&f);
	}
	f.cut[0][2] = false;
	fx_run(&f, 400);
	ck_assert_uint_eq(f.n[2].applied, 7);
	fx_close(&f);
}
END_TEST

/* Completion and request checks: stale APPLIED and PERSISTED are ignored,
 * CONFIG entries cannot be proposed directly, UNREACHABLE sends a pipelined
 * follower back to probe (it is retried, not lost). */
START_TEST(test_raft_step_rejects_bad_events)
{
	struct raft_entry cfg = {.type = RAFT_ENTRY_CONFIG, .data = "x", .len = 1};
	struct raft_event e = {.type = RAFT_EVENT_PROPOSE};

	fx_init(&f, 3, 3);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
	e.u.propose.entries = &cfg;
	e.u.propose.n = 1;
	ck_assert_int_eq(fx_step(&f, 0, &e), KVD_EINVAL);
	e.u.propose.n = 0;
	ck_assert_int_eq(fx_step(&f, 0, &e), KVD_EINVAL);
	ck_assert_uint_eq(raft_last_index(f.n[0].r), 2);
	/* APPLIED beyond what was handed out is ignored. */
	e.type = RAFT_EVENT_APPLIED;
	e.u.applied.index = 99;
	ck_assert_int_eq(fx_step(&f, 0, &e), 0);
	/* PERSISTED beyond the log is ignored. */
	e.type = RAFT_EVENT_PERSISTED;
	e.u.persisted.index = 99;
	e.u.persisted.term = 2;
	ck_assert_int_eq(fx_step(&f, 0, &e), 0);
	e = (struct raft_event){.type = RAFT_EVENT_UNREACHABLE}; /* no stale union bytes */
	e.u.unreachable.id = "n2";
	ck_assert_int_eq(fx_step(&f, 0, &e), 0);
	ck_assert_int_eq(fx_propose(&f, 0, "after"), 0);
	fx_deliver_all(&f);
	fx_run(&f, 200);
	ck_assert_uint_eq(f.n[1].applied, 3);
	/* Events before START are refused. */
	{
		struct raft_core *r = raft_create("x", NULL, 1);
		struct raft_update u;
		struct raft_event t = {.type = RAFT_EVENT_TICK};
		ck_assert_int_eq(raft_step(r, &t, &u), KVD_EINVAL);
		raft_destroy(r);
	}
	fx_close(&f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("raft_replication");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_raft_recv_append_truncates_conflicting_suffix);
	tcase_add_test(tc, test_raft_recv_append_rejects_with_conflict_hint);
	tcase_add_test(tc, test_raft_step_commit_only_current_term);
	tcase_add_test(tc, test_raft_step_replicates_and_commits);
	tcase_add_test(tc, test_raft_step_batches_proposals);
	tcase_add_test(tc, test_raft_step_leader_counts_itself_when_persisted);
	tcase_add_test(tc, test_raft_step_follower_applies_only_persisted);
	tcase_add_test(tc, test_raft_step_lagging_follower_catches_up);
	tcase_add_test(tc, test_raft_step_inflight_limit);
	tcase_add_test(tc, test_raft_step_recovers_lost_appends);
	tcase_add_test(tc, test_raft_step_rejects_bad_events);
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
