/*
 * test_drive_rules.c: the driver's dispatch of a raft_update
 * (api/drive_rules.c), shared by api/node.c and tests/sim: the order of the
 * work, each needs_sync message's barrier, a message whose write was never
 * submitted, leadership loss failing the waiting writes, and the deadline.
 * The ops record what the rule asks of the driver; one case carries out an
 * update of a real core (an election's first step).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/drive_rules.h"
#include "raft/raft.h"
#include "tests/unit/raft_fixture.h"

#define MAX_REC 64

/* One thing the rule did. */
struct rec {
	char kind;     /* M meta, A append, C chunk, W writes submitted, S send, D drop held,
			  P apply, R reads, X change done, N note, F fail writes, T state
			  changed, L deadline */
	uint64_t a;    /* S: barrier; X: token; L: deadline; M: term */
	const void *p; /* S: the message */
};

struct world {
	struct rec rec[MAX_REC];
	unsigned n;
	uint64_t submitted; /* the writer's last submitted sequence */
	uint64_t completed; /* the writer's last completed sequence */
	bool lost;	    /* a job was never submitted */
};

static void add(struct world *w, char kind, uint64_t a, const void *p)
{
	ck_assert_uint_lt(w->n, MAX_REC);
	w->rec[w->n++] = (struct rec){kind, a, p};
}

static void op_meta(void *ctx, raft_term term, const char *vote)
{
	struct world *w = ctx;
	(void)vote;
	w->submitted++;
	add(w, 'M', term, NULL);
}

static void op_append(void *ctx, const struct raft_update *u)
{
	struct world *w = ctx;
	w->submitted++;
	add(w, 'A', u->n_entries, NULL);
}

static void op_chunk(void *ctx, const struct raft_snapshot *c)
{
	struct world *w = ctx;
	w->submitted++;
	add(w, 'C', c->offset, NULL);
}

static void op_writes(void *ctx, const struct raft_update *u)
{
	(void)u;
	add(ctx, 'W', 0, NULL);
}

static bool op_sync_seq(void *ctx, uint64_t *seq)
{
	struct world *w = ctx;
	*seq = w->submitted;
	return !w->lost;
}

static uint64_t op_completed(void *ctx)
{
	struct world *w = ctx;
	return w->completed;
}

static void op_send(void *ctx, const struct raft_message *m, uint64_t barrier)
{
	add(ctx, 'S', barrier, m);
}

static void op_drop(void *ctx)
{
	add(ctx, 'D', 0, NULL);
}

static void op_apply(void *ctx, const struct raft_update *u)
{
	add(ctx, 'P', u->n_apply, NULL);
}

static void op_reads(void *ctx, const struct raft_update *u)
{
	add(ctx, 'R', u->n_reads + u->n_reads_failed, NULL);
}

static void op_change(void *ctx, uint64_t token, int error)
{
	(void)error;
	add(ctx, 'X', token, NULL);
}

static void op_note(void *ctx, const struct raft_note *note)
{
	add(ctx, 'N', note->kind, NULL);
}

static void op_fail(void *ctx)
{
	add(ctx, 'F', 0, NULL);
}

static void op_state(void *ctx, const struct raft_update *u)
{
	add(ctx, 'T', u->role, NULL);
}

static void op_deadline(void *ctx, raft_time deadline)
{
	add(ctx, 'L', deadline, NULL);
}

static struct kvd_drive_ops ops_of(struct world *w)
{
	memset(w, 0, sizeof(*w));
	return (struct kvd_drive_ops){
	    .ctx = w,
	    .submit_meta = op_meta,
	    .submit_append = op_append,
	    .submit_chunk = op_chunk,
	    .writes_submitted = op_writes,
	    .sync_seq = op_sync_seq,
	    .completed_seq = op_completed,
	    .send = op_send,
	    .drop_held = op_drop,
	    .submit_apply = op_apply,
	    .serve_reads = op_reads,
	    .change_done = op_change,
	    .note = op_note,
	    .fail_writes = op_fail,
	    .state_changed = op_state,
	    .set_deadline = op_deadline,
	};
}

/* The kinds recorded, as a string. */
static const char *kinds(const struct world *w)
{
	static char s[MAX_REC + 1];
	for (unsigned i = 0; i < w->n; i++)
		s[i] = w->rec[i].kind;
	s[w->n] = '\0';
	return s;
}

START_TEST(test_everything_in_order)
{
	struct world w;
	struct kvd_drive_ops ops = ops_of(&w);
	struct raft_entry ents[2] = {{.index = 5, .term = 2}, {.index = 6, .term = 2}};
	struct raft_snapshot chunk = {.last_index = 9, .offset = 100};
	struct raft_message msgs[2] = {{.type = RAFT_MSG_APPEND}, {.type = RAFT_MSG_APPEND_RESULT}};
	struct raft_read_ready reads[1] = {{.token = 1}};
	struct raft_read_failed failed[1] = {{.token = 2}};
	struct raft_change_done changes[1] = {{.token = 77}};
	struct raft_note notes[1] = {{.kind = RAFT_NOTE_STEPPED_DOWN}};
	struct raft_update u = {
	    .meta_changed = true,
	    .term = 3,
	    .truncate_from = 5,
	    .entries = ents,
	    .n_entries = 2,
	    .snapshot_write = &chunk,
	    .messages = msgs,
	    .n_messages = 2,
	    .apply = ents,
	    .n_apply = 1,
	    .reads = reads,
	    .n_reads = 1,
	    .reads_failed = failed,
	    .n_reads_failed = 1,
	    .changes_done = changes,
	    .n_changes_done = 1,
	    .notes = notes,
	    .n_notes = 1,
	    .state_changed = true,
	    .role = RAFT_FOLLOWER,
	    .deadline = 1234,
	};

	kvd_drive_update(&ops, &u);
	ck_assert_str_eq(kinds(&w), "MACWSSPRXNFTL");
	ck_assert_uint_eq(w.rec[0].a, 3);
	ck_assert_uint_eq(w.rec[1].a, 2);
	ck_assert_uint_eq(w.rec[2].a, 100);
	ck_assert_ptr_eq(w.rec[4].p, &msgs[0]);
	ck_assert_ptr_eq(w.rec[5].p, &msgs[1]);
	ck_assert_uint_eq(w.rec[7].a, 2); /* one read ready, one failed */
	ck_assert_uint_eq(w.rec[8].a, 77);
	ck_assert_uint_eq(w.rec[12].a, 1234);
}
END_TEST

START_TEST(test_nothing_to_do_does_nothing)
{
	struct world w;
	struct kvd_drive_ops ops = ops_of(&w);
	struct raft_update u = {.role = RAFT_LEADER};

	kvd_drive_update(&ops, &u);
	ck_assert_str_eq(kinds(&w), "W"); /* no deadline 0, no state change */
	/* A truncation alone is a log job. */
	w.n = 0;
	u.truncate_from = 4;
	kvd_drive_update(&ops, &u);
	ck_assert_str_eq(kinds(&w), "AW");
}
END_TEST

START_TEST(test_barrier_is_the_last_submitted_job_or_zero_when_durable)
{
	struct world w;
	struct kvd_drive_ops ops = ops_of(&w);
	struct raft_message msgs[3] = {
	    {.type = RAFT_MSG_REQUEST_VOTE, .needs_sync = true},
	    {.type = RAFT_MSG_APPEND, .needs_sync = false},
	    {.type = RAFT_MSG_APPEND_RESULT, .needs_sync = true},
	};
	struct raft_update u = {.meta_changed = true, .messages = msgs, .n_messages = 3};

	w.submitted = 6;
	w.completed = 4;
	kvd_drive_update(&ops, &u); /* the meta write is job 7 */
	ck_assert_str_eq(kinds(&w), "MWSSS");
	ck_assert_uint_eq(w.rec[2].a, 7);
	ck_assert_uint_eq(w.rec[3].a, 0); /* needs no sync */
	ck_assert_uint_eq(w.rec[4].a, 7);

	/* Everything submitted is durable already: sent at once. */
	w.n = 0;
	u.meta_changed = false;
	w.completed = 7;
	kvd_drive_update(&ops, &u);
	ck_assert_str_eq(kinds(&w), "WSSS");
	ck_assert_uint_eq(w.rec[1].a, 0);
	ck_assert_uint_eq(w.rec[3].a, 0);
}
END_TEST

START_TEST(test_message_whose_write_was_never_submitted_is_dropped)
{
	struct world w;
	struct kvd_drive_ops ops = ops_of(&w);
	struct raft_message msgs[3] = {
	    {.type = RAFT_MSG_APPEND_RESULT, .needs_sync = true},
	    {.type = RAFT_MSG_APPEND, .needs_sync = false},
	    {.type = RAFT_MSG_REQUEST_VOTE_RESULT, .needs_sync = true},
	};
	struct raft_entry e = {.index = 3, .term = 1};
	struct raft_update u = {.entries = &e,
				.n_entries = 1,
				.messages = msgs,
				.n_messages = 3,
				.apply = &e,
				.n_apply = 1};

	w.lost = true; /* the append could not be submitted */
	kvd_drive_update(&ops, &u);
	/* Only the message that needs no sync leaves; the held ones are
	 * dropped and the orphans answered once, after the messages. */
	ck_assert_str_eq(kinds(&w), "AWSDP");
	ck_assert_ptr_eq(w.rec[2].p, &msgs[1]);
	ck_assert_uint_eq(w.rec[2].a, 0);
}
END_TEST

START_TEST(test_waiting_writes_fail_only_when_leadership_is_lost)
{
	struct world w;
	struct kvd_drive_ops ops = ops_of(&w);
	struct raft_update u = {.state_changed = true, .role = RAFT_LEADER};

	kvd_drive_update(&ops, &u); /* became (or stays) leader */
	ck_assert_str_eq(kinds(&w), "WT");
	w.n = 0;
	u.role = RAFT_CANDIDATE;
	kvd_drive_update(&ops, &u);
	ck_assert_str_eq(kinds(&w), "WFT");
	w.n = 0;
	u.role = RAFT_FOLLOWER;
	kvd_drive_update(&ops, &u);
	ck_assert_str_eq(kinds(&w), "WFT");
	w.n = 0;
	u.state_changed = false; /* a follower's quiet step */
	kvd_drive_update(&ops, &u);
	ck_assert_str_eq(kinds(&w), "W");
}
END_TEST

START_TEST(test_optional_ops_may_be_null)
{
	struct world w;
	struct kvd_drive_ops ops = ops_of(&w);
	struct raft_change_done changes[1] = {{.token = 5}};
	struct raft_note notes[1] = {{.kind = RAFT_NOTE_ELECTION_WON}};
	struct raft_update u = {.changes_done = changes,
				.n_changes_done = 1,
				.notes = notes,
				.n_notes = 1,
				.state_changed = true,
				.role = RAFT_FOLLOWER,
				.deadline = 9};

	ops.writes_submitted = NULL;
	ops.change_done = NULL;
	ops.note = NULL;
	ops.state_changed = NULL;
	kvd_drive_update(&ops, &u);
	ck_assert_str_eq(kinds(&w), "FL");
}
END_TEST

/* A real core's election: the candidate's vote for itself is a meta write,
 * and its RequestVotes wait for it. */
START_TEST(test_real_core_request_votes_wait_for_the_vote)
{
	struct fx f;
	struct world w;
	struct kvd_drive_ops ops = ops_of(&w);
	struct raft_event e = {.type = RAFT_EVENT_TICK};
	struct raft_update u;
	struct raft_options o;
	unsigned votes = 0;

	raft_options_default(&o);
	o.pre_vote = false; /* straight to the election: term and vote change */
	fx_init_opts(&f, 3, 3, &o);
	e.now = f.now + 10 * f.o.election_timeout_max;
	ck_assert_int_eq(raft_step(f.n[0].r, &e, &u), 0);
	w.submitted = 10;
	w.completed = 10;
	kvd_drive_update(&ops, &u);
	ck_assert_uint_ge(w.n, 3);
	ck_assert_int_eq(w.rec[0].kind, 'M');
	for (unsigned i = 0; i < w.n; i++) {
		if (w.rec[i].kind != 'S')
			continue;
		const struct raft_message *m = w.rec[i].p;
		if (m->type == RAFT_MSG_REQUEST_VOTE && m->needs_sync) {
			ck_assert_uint_eq(w.rec[i].a, 11); /* the meta write's job */
			votes++;
		}
	}
	ck_assert_uint_eq(votes, 2);
	ck_assert_uint_eq(w.rec[w.n - 1].kind, 'L');
	fx_close(&f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("drive_rules");
	TCase *tc = tcase_create("rules");
	tcase_add_test(tc, test_everything_in_order);
	tcase_add_test(tc, test_nothing_to_do_does_nothing);
	tcase_add_test(tc, test_barrier_is_the_last_submitted_job_or_zero_when_durable);
	tcase_add_test(tc, test_message_whose_write_was_never_submitted_is_dropped);
	tcase_add_test(tc, test_waiting_writes_fail_only_when_leadership_is_lost);
	tcase_add_test(tc, test_optional_ops_may_be_null);
	tcase_add_test(tc, test_real_core_request_votes_wait_for_the_vote);
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
