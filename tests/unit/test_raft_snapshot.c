/*
 * test_raft_snapshot.c: log compaction and InstallSnapshot in the pure Raft
 * core (Raft paper §7; thesis ch. 5, §5.3 for chunked, resumable transfer).
 */
#include <check.h>

#include "raft/core.h"
#include "raft_fixture.h"

static struct fx f;

static void setup(raft_index trailing, size_t chunk)
{
	struct raft_options o;

	raft_options_default(&o);
	o.snapshot_trailing = trailing;
	o.snapshot_chunk_bytes = chunk;
	o.snapshot_timeout = 1000;
	fx_init_opts(&f, 3, 3, &o);
	ck_assert_int_eq(fx_elect_first(&f), 0);
	fx_run(&f, 200);
}

static void propose_many(unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(fx_propose(&f, 0, "entry"), 0);
		fx_deliver_all(&f);
	}
}

/* Delivers messages until node i has received the whole stream. */
static void deliver_until_rx_done(unsigned i)
{
	for (unsigned k = 0; k < 100000 && !f.n[i].rx_done; k++) {
		if (!fx_deliver_one(&f)) {
			f.now += 10;
			for (unsigned j = 0; j < f.count; j++)
				fx_tick(&f, j);
		}
	}
	ck_assert(f.n[i].rx_done);
}

/* §7: a follower that needs entries the leader has compacted receives the
 * snapshot in chunks (the driver fills the bytes), installs it, and then
 * continues from the snapshot point with ordinary AppendEntries. */
START_TEST(test_raft_snapshot_send_and_install)
{
	raft_index last;

	setup(2, 100);
	f.n[2].down = true;
	propose_many(20);
	ck_assert_uint_eq(f.n[0].applied, 22);
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 22, 250), 0);
	propose_many(2);
	f.n[2].down = false;
	deliver_until_rx_done(2);
	ck_assert_uint_eq(f.n[2].n_snapshot_writes, 3);
	ck_assert_int_eq(memcmp(f.n[2].rx_bytes, f.n[0].snap_bytes, 250), 0);
	ck_assert_int_eq(raft_role(f.n[2].r), RAFT_FOLLOWER);
	/* The last chunk is acknowledged only after the install. */
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_SNAPSHOT_RESULT, NULL), 0);
	fx_deliver_all(&f);
	ck_assert_int_eq(fx_install(&f, 2, &f.n[0].snap), 0);
	ck_assert_uint_eq(raft_commit_index(f.n[2].r), 22);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_SNAPSHOT_RESULT, "n1"), 1);
	ck_assert(f.q[f.n_q - 1].m.needs_sync);
	fx_run(&f, 300);
	last = raft_last_index(f.n[0].r);
	ck_assert_uint_eq(raft_last_index(f.n[2].r), last);
	ck_assert_uint_eq(f.n[2].applied, last);
	ck_assert_uint_eq(f.n[2].apply_count[23], 1);
	fx_close(&f);
}
END_TEST

/* §7: compaction keeps snapshot_trailing entries, so a follower only a few
 * entries behind still gets AppendEntries, not a snapshot. */
START_TEST(test_raft_snapshot_trailing_entries_kept)
{
	setup(10, 100);
	propose_many(15);
	f.n[2].down = true;
	propose_many(3);
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 20, 50), 0);
	f.n[2].down = false;
	fx_run(&f, 300);
	ck_assert_uint_eq(f.n[2].n_snapshot_writes, 0);
	ck_assert_uint_eq(f.n[2].applied, 20);
	/* A stale SNAPSHOT_TAKEN (older index) is ignored. */
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 10, 50), 0);
	fx_close(&f);
}
END_TEST

/* Thesis §5.3 (chunked transfer): a stream interrupted mid-way times out
 * (snapshot_timeout), restarts, and resumes at the offset the receiver
 * reports, so chunks already written are not written again. */
START_TEST(test_raft_snapshot_resumes_by_offset)
{
	unsigned k;

	setup(0, 100);
	f.n[2].down = true;
	propose_many(10);
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 12, 350), 0);
	f.n[2].down = false;
	/* Let two chunks through, then lose everything to n3 for a while. */
	for (k = 0; k < 100000 && f.n[2].n_snapshot_writes < 2; k++) {
		if (!fx_deliver_one(&f)) {
			f.now += 10;
			fx_tick(&f, 0);
		}
	}
	ck_assert_uint_eq(f.n[2].n_snapshot_writes, 2);
	f.cut[0][2] = true;
	fx_run(&f, 1500);
	f.cut[0][2] = false;
	deliver_until_rx_done(2);
	ck_assert_uint_eq(f.n[2].n_snapshot_writes, 4);
	ck_assert_int_eq(memcmp(f.n[2].rx_bytes, f.n[0].snap_bytes, 350), 0);
	ck_assert_int_eq(fx_install(&f, 2, &f.n[0].snap), 0);
	fx_run(&f, 300);
	ck_assert_uint_eq(f.n[2].applied, raft_last_index(f.n[0].r));
	fx_close(&f);
}
END_TEST

/* §7: a snapshot from a stale term is refused; its sender learns the term. */
START_TEST(test_raft_snapshot_recv_stale_term)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	char data[10] = "abcdefghi";

	setup(0, 100);
	fx_drop_all(&f);
	memset(&e.u.receive, 0, sizeof(e.u.receive));
	e.u.receive.type = RAFT_MSG_SNAPSHOT;
	strcpy(e.u.receive.from, "n3");
	strcpy(e.u.receive.to, "n2");
	e.u.receive.term = 1;
	e.u.receive.u.snapshot.last_index = 50;
	e.u.receive.u.snapshot.last_term = 1;
	e.u.receive.u.snapshot.data = data;
	e.u.receive.u.snapshot.len = 10;
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(f.n[1].n_snapshot_writes, 0);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_SNAPSHOT_RESULT, "n3"), 1);
	ck_assert(!f.q[0].m.u.snapshot_result.success);
	ck_assert_uint_eq(f.q[0].m.term, raft_current_term(f.n[1].r));
	ck_assert_str_eq(raft_leader(f.n[1].r), "n1");
	fx_close(&f);
}
END_TEST

static struct raft_message chunk_msg(raft_term term, raft_index last, raft_term last_term,
				     uint64_t offset, const char *data, size_t len, bool done)
{
	struct raft_message m;

	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_SNAPSHOT;
	strcpy(m.from, "n1");
	strcpy(m.to, "n2");
	m.term = term;
	m.u.snapshot.last_index = last;
	m.u.snapshot.last_term = last_term;
	m.u.snapshot.offset = offset;
	m.u.snapshot.data = data;
	m.u.snapshot.len = len;
	m.u.snapshot.done = done;
	return m;
}

/* §7, Figure 13 step 6 (bug S1): a follower whose log already holds the
 * snapshot's last entry keeps its log, including entries after it that it
 * may have acknowledged, and reports the stream done without installing. */
START_TEST(test_raft_snapshot_recv_log_holds_last_entry)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	raft_term t;
	raft_index last;

	setup(0, 100);
	f.n[2].down = true;
	propose_many(5);
	fx_drop_all(&f);
	t = raft_current_term(f.n[0].r);
	last = raft_last_index(f.n[1].r);
	/* n2 learns commit with the next message: its last entry is not
	 * known committed there, so only the log check keeps it. */
	ck_assert_uint_lt(raft_commit_index(f.n[1].r), last);
	e.u.receive = chunk_msg(t, last, t, 0, "abc", 3, false);
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(f.n[1].n_snapshot_writes, 0);
	ck_assert_uint_eq(raft_last_index(f.n[1].r), last);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_SNAPSHOT_RESULT, "n1"), 1);
	ck_assert(f.q[f.n_q - 1].m.u.snapshot_result.success);
	/* Past any size, and a JSON (signed 64-bit) integer on the wire. */
	ck_assert_uint_eq(f.q[f.n_q - 1].m.u.snapshot_result.offset, RAFT_SNAPSHOT_COVERED);
	ck_assert_uint_le(f.q[f.n_q - 1].m.u.snapshot_result.offset, (uint64_t)INT64_MAX);
	fx_close(&f);
}
END_TEST

/* Bug S1: AppendEntries with entries during a stream abort it, so the log
 * never grows under a snapshot about to replace it; the rest of the old
 * stream is refused and must restart at offset 0. Empty keepalives from the
 * streaming leader are ignored. */
START_TEST(test_raft_snapshot_stream_aborted_by_append)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	struct raft_entry en = {.type = RAFT_ENTRY_COMMAND, .data = "x", .len = 1};
	raft_term t;
	raft_index last;

	setup(0, 100);
	fx_drop_all(&f);
	t = raft_current_term(f.n[0].r);
	last = raft_last_index(f.n[1].r);
	e.u.receive = chunk_msg(t, 50, t, 0, "abc", 3, false);
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(f.n[1].n_snapshot_writes, 1);
	/* A keepalive from the streaming leader: answered busy (claims prev,
	 * no conflict hint), the log is unchanged. */
	memset(&e.u.receive, 0, sizeof(e.u.receive));
	e.u.receive.type = RAFT_MSG_APPEND;
	strcpy(e.u.receive.from, "n1");
	strcpy(e.u.receive.to, "n2");
	e.u.receive.term = t;
	e.u.receive.u.append.prev_log_index = last;
	e.u.receive.u.append.prev_log_term = t;
	fx_drop_all(&f);
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(f.n_q, 1);
	ck_assert(!f.q[0].m.u.append_result.success);
	ck_assert_uint_eq(f.q[0].m.u.append_result.last_log_index, last);
	ck_assert_uint_eq(f.q[0].m.u.append_result.conflict_term, 0);
	ck_assert_uint_eq(f.q[0].m.u.append_result.conflict_index, 0);
	ck_assert_uint_eq(raft_last_index(f.n[1].r), last);
	fx_drop_all(&f);
	/* Entries: processed, and the stream is dropped. */
	en.index = last + 1;
	en.term = t;
	e.u.receive.u.append.entries = &en;
	e.u.receive.u.append.n_entries = 1;
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(raft_last_index(f.n[1].r), last + 1);
	fx_drop_all(&f);
	e.u.receive = chunk_msg(t, 50, t, 3, "def", 3, true);
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(f.n[1].n_snapshot_writes, 1);
	ck_assert(!f.q[0].m.u.snapshot_result.success);
	ck_assert_uint_eq(f.q[0].m.u.snapshot_result.offset, 0);
	fx_close(&f);
}
END_TEST

/* A snapshot known without a file (size 0, e.g. state recovered at start)
 * is never streamed; once the driver reports the file for the same index,
 * lagging followers get it. */
START_TEST(test_raft_snapshot_size_zero_not_sent)
{
	setup(0, 100);
	f.n[2].down = true;
	propose_many(5);
	f.n[0].snap.index = 0;
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 7, 0), 0);
	f.n[2].down = false;
	fx_run(&f, 500);
	ck_assert_uint_eq(f.n[2].n_snapshot_writes, 0);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_SNAPSHOT, NULL), 0);
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 7, 120), 0);
	deliver_until_rx_done(2);
	ck_assert_int_eq(fx_install(&f, 2, &f.n[0].snap), 0);
	fx_run(&f, 300);
	ck_assert_uint_eq(f.n[2].applied, raft_last_index(f.n[0].r));
	fx_close(&f);
}
END_TEST

/* Issue 7 (found by the simulation, seed 393 with the convergence check): a
 * chunk lost in the middle of a stream is resent too. The follower, holding
 * the stream's first chunk, answers heartbeats "busy", and a busy answer is
 * hearing from it; before the fix the leader waited for snapshot_timeout. */
START_TEST(test_raft_snapshot_lost_mid_stream_chunk_resent_on_busy_answer)
{
	bool dropped = false;

	setup(0, 100);
	f.n[2].down = true;
	propose_many(10);
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 12, 250), 0);
	f.n[2].down = false;
	/* Deliver until the stream's second chunk is queued, then lose it. */
	for (unsigned k = 0; k < 100000 && !dropped; k++) {
		for (unsigned i = 0; i < f.n_q && !dropped; i++) {
			if (f.q[i].m.type == RAFT_MSG_SNAPSHOT && strcmp(f.q[i].m.to, "n3") == 0 &&
			    f.q[i].m.u.snapshot.offset == 100) {
				fx_deliver_at(&f, i, true);
				dropped = true;
			}
		}
		if (!dropped && !fx_deliver_one(&f)) {
			f.now += 10;
			fx_tick(&f, 0);
		}
	}
	ck_assert(dropped);
	ck_assert_uint_eq(f.n[2].n_snapshot_writes, 1);
	fx_run(&f, 250); /* two heartbeats: well within snapshot_timeout */
	ck_assert_uint_ge(f.n[2].n_snapshot_writes, 2);
	deliver_until_rx_done(2);
	ck_assert_int_eq(memcmp(f.n[2].rx_bytes, f.n[0].snap_bytes, 250), 0);
	fx_close(&f);
}
END_TEST

/* Issue 7: a chunk lost without an error (a partition drops it) is sent again
 * as soon as the leader hears a normal answer from the follower, not after
 * snapshot_timeout (1000 ms here). */
START_TEST(test_raft_snapshot_lost_chunk_resent_when_follower_heard)
{
	bool dropped = false;

	setup(0, 100);
	f.n[2].down = true;
	propose_many(10);
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 12, 250), 0);
	f.n[2].down = false;
	/* Deliver until the stream's first chunk is queued, then lose it. */
	for (unsigned k = 0; k < 100000 && !dropped; k++) {
		for (unsigned i = 0; i < f.n_q && !dropped; i++) {
			if (f.q[i].m.type == RAFT_MSG_SNAPSHOT && strcmp(f.q[i].m.to, "n3") == 0) {
				fx_deliver_at(&f, i, true);
				dropped = true;
			}
		}
		if (!dropped && !fx_deliver_one(&f)) {
			f.now += 10;
			fx_tick(&f, 0);
		}
	}
	ck_assert(dropped);
	fx_run(&f, 250); /* two heartbeats: well within snapshot_timeout */
	ck_assert_uint_ge(f.n[2].n_snapshot_writes, 1);
	deliver_until_rx_done(2);
	ck_assert_int_eq(memcmp(f.n[2].rx_bytes, f.n[0].snap_bytes, 250), 0);
	ck_assert_int_eq(fx_install(&f, 2, &f.n[0].snap), 0);
	fx_run(&f, 300);
	ck_assert_uint_eq(f.n[2].applied, raft_last_index(f.n[0].r));
	fx_close(&f);
}
END_TEST

/* Issue 7: while the follower installs, a chunk the leader sends again (after
 * a timeout) is refused with the offset it expects, and the leader waits for
 * the real answer instead of restarting at offset 0; the answer to the last
 * chunk after the install completes the stream, and entries follow. */
START_TEST(test_raft_snapshot_leader_waits_for_install)
{
	setup(0, 100);
	f.n[2].down = true;
	propose_many(10);
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 12, 250), 0);
	f.n[2].down = false;
	deliver_until_rx_done(2);
	/* The install takes longer than snapshot_timeout. */
	fx_run(&f, 1500);
	ck_assert_uint_eq(f.n[2].n_snapshot_writes, 3);
	ck_assert_int_eq(fx_install(&f, 2, &f.n[0].snap), 0);
	fx_run(&f, 300);
	ck_assert_uint_eq(f.n[2].applied, raft_last_index(f.n[0].r));
	ck_assert_uint_eq(f.n[2].n_snapshot_writes, 3);
	fx_close(&f);
}
END_TEST

/* Issue 7: a chunk the driver could not write (SNAPSHOT_FAILED) drops the
 * stream: the next chunk is refused (no hole), the stream restarts at 0. */
START_TEST(test_raft_snapshot_failed_write_restarts_stream)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	struct raft_event fail = {.type = RAFT_EVENT_SNAPSHOT_FAILED};
	raft_term t;

	setup(0, 100);
	fx_drop_all(&f);
	t = raft_current_term(f.n[0].r);
	e.u.receive = chunk_msg(t, 50, t, 0, "abc", 3, false);
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(f.n[1].n_snapshot_writes, 1);
	fx_step(&f, 1, &fail);
	fx_drop_all(&f);
	e.u.receive = chunk_msg(t, 50, t, 3, "def", 3, false);
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(f.n[1].n_snapshot_writes, 1);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_SNAPSHOT_RESULT, "n1"), 1);
	ck_assert(!f.q[0].m.u.snapshot_result.success);
	ck_assert_uint_eq(f.q[0].m.u.snapshot_result.offset, 0);
	/* A failed install refuses the waiting last chunk with offset 0. */
	e.u.receive = chunk_msg(t, 50, t, 0, "abc", 3, true);
	e.u.receive.token = 7;
	fx_step(&f, 1, &e);
	ck_assert_uint_eq(raft_snapshot_install_token(f.n[1].r), 7);
	fx_drop_all(&f);
	fx_step(&f, 1, &fail);
	ck_assert_uint_eq(raft_snapshot_install_token(f.n[1].r), 0);
	ck_assert_uint_eq(fx_count(&f, RAFT_MSG_SNAPSHOT_RESULT, "n1"), 1);
	ck_assert(!f.q[0].m.u.snapshot_result.success);
	ck_assert_uint_eq(f.q[0].m.u.snapshot_result.offset, 0);
	fx_close(&f);
}
END_TEST

/* Issue 7: a follower busy with a snapshot answers AppendEntries with a
 * refusal that claims prev (no conflict hint); the leader keeps next where
 * it is instead of walking it back one index per round trip. */
/* A lost AppendEntries (a heartbeat answered 503, a reset connection) does
 * not restart the snapshot stream running to that peer: only a lost chunk
 * does (sim seed 9898: a heartbeat's 503 during a follower's install made
 * the leader stream the same snapshot again; plant unreachable_restart). */
START_TEST(test_raft_snapshot_stream_survives_lost_append)
{
	struct raft_event e = {.type = RAFT_EVENT_UNREACHABLE};
	struct raft_progress *p;
	bool queued = false;

	setup(0, 100);
	f.n[2].down = true;
	propose_many(10);
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 12, 250), 0);
	f.n[2].down = false;
	for (unsigned k = 0; k < 100000 && !queued; k++) {
		for (unsigned i = 0; i < f.n_q && !queued; i++)
			queued = f.q[i].m.type == RAFT_MSG_SNAPSHOT &&
				 strcmp(f.q[i].m.to, "n3") == 0 &&
				 f.q[i].m.u.snapshot.offset == 100;
		if (!queued && !fx_deliver_one(&f)) {
			f.now += 10;
			fx_tick(&f, 0);
		}
	}
	ck_assert(queued);
	p = raft_progress_find(f.n[0].r, "n3");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(p->state, RAFT_PROGRESS_SNAPSHOT);
	e.now = f.now;
	e.u.unreachable.id = "n3";
	e.u.unreachable.snapshot = false;
	ck_assert_int_eq(fx_step(&f, 0, &e), 0);
	ck_assert_int_eq(p->state, RAFT_PROGRESS_SNAPSHOT);
	ck_assert_uint_eq(p->snap_offset, 100);
	e.u.unreachable.snapshot = true;
	ck_assert_int_eq(fx_step(&f, 0, &e), 0);
	ck_assert_int_eq(p->state, RAFT_PROGRESS_PROBE);
	fx_close(&f);
}
END_TEST

/* Issue 7 (sim seeds 19,518, 2,759, 8,510, 6,358 with other generator
 * constants): the loss of an older copy of a chunk (resent after a
 * heartbeat, or of a stream restarted since) ended the stream running now,
 * and the leader streamed again a snapshot its follower was installing.
 * Only the loss of the chunk sent last ends the stream (its token). */
START_TEST(test_raft_snapshot_stale_chunk_loss_keeps_stream)
{
	struct raft_event e = {.type = RAFT_EVENT_UNREACHABLE};
	struct raft_progress *p;
	uint64_t first = 0;
	bool queued = false;

	setup(0, 100);
	f.n[2].down = true;
	propose_many(10);
	ck_assert_int_eq(fx_take_snapshot(&f, 0, 12, 250), 0);
	f.n[2].down = false;
	for (unsigned k = 0; k < 100000 && !queued; k++) {
		for (unsigned i = 0; i < f.n_q && !queued; i++) {
			const struct raft_message *m = &f.q[i].m;
			if (m->type != RAFT_MSG_SNAPSHOT || strcmp(m->to, "n3") != 0)
				continue;
			if (m->u.snapshot.offset == 0 && first == 0)
				first = m->token;
			queued = m->u.snapshot.offset == 100;
		}
		if (!queued && !fx_deliver_one(&f)) {
			f.now += 10;
			fx_tick(&f, 0);
		}
	}
	ck_assert(queued);
	ck_assert_uint_ne(first, 0);
	p = raft_progress_find(f.n[0].r, "n3");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(p->state, RAFT_PROGRESS_SNAPSHOT);
	ck_assert_uint_gt(p->snap_serial, first);
	e.now = f.now;
	e.u.unreachable.id = "n3";
	e.u.unreachable.snapshot = true;
	e.u.unreachable.token = first; /* the offset-0 chunk, answered long ago */
	ck_assert_int_eq(fx_step(&f, 0, &e), 0);
	ck_assert_int_eq(p->state, RAFT_PROGRESS_SNAPSHOT);
	ck_assert_uint_eq(p->snap_offset, 100);
	e.u.unreachable.token = p->snap_serial; /* the chunk outstanding */
	ck_assert_int_eq(fx_step(&f, 0, &e), 0);
	ck_assert_int_eq(p->state, RAFT_PROGRESS_PROBE);
	fx_close(&f);
}
END_TEST

START_TEST(test_raft_snapshot_busy_refusal_keeps_next)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	struct raft_progress *p;
	raft_index last, next;

	setup(0, 100);
	propose_many(10);
	fx_drop_all(&f);
	last = raft_last_index(f.n[0].r);
	p = raft_progress_find(f.n[0].r, "n2");
	ck_assert_ptr_nonnull(p);
	/* A probe whose match is not known yet (as after an election). */
	p->match = 0;
	raft_progress_become_probe(p);
	p->next = last + 1;
	next = p->next;
	memset(&e.u.receive, 0, sizeof(e.u.receive));
	e.u.receive.type = RAFT_MSG_APPEND_RESULT;
	strcpy(e.u.receive.from, "n2");
	strcpy(e.u.receive.to, "n1");
	e.u.receive.term = raft_current_term(f.n[0].r);
	e.u.receive.u.append_result.success = false;
	e.u.receive.u.append_result.last_log_index = last;
	e.u.receive.u.append_result.reject_index = last;
	fx_step(&f, 0, &e);
	ck_assert_uint_eq(p->next, next);
	/* A real mismatch still moves it back. */
	e.u.receive.u.append_result.last_log_index = 3;
	e.u.receive.u.append_result.conflict_index = 4;
	fx_step(&f, 0, &e);
	ck_assert_uint_eq(p->next, 4);
	fx_close(&f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("raft_snapshot");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_raft_snapshot_send_and_install);
	tcase_add_test(tc, test_raft_snapshot_trailing_entries_kept);
	tcase_add_test(tc, test_raft_snapshot_resumes_by_offset);
	tcase_add_test(tc, test_raft_snapshot_recv_stale_term);
	tcase_add_test(tc, test_raft_snapshot_recv_log_holds_last_entry);
	tcase_add_test(tc, test_raft_snapshot_stream_aborted_by_append);
	tcase_add_test(tc, test_raft_snapshot_size_zero_not_sent);
	tcase_add_test(tc, test_raft_snapshot_lost_chunk_resent_when_follower_heard);
	tcase_add_test(tc, test_raft_snapshot_lost_mid_stream_chunk_resent_on_busy_answer);
	tcase_add_test(tc, test_raft_snapshot_leader_waits_for_install);
	tcase_add_test(tc, test_raft_snapshot_failed_write_restarts_stream);
	tcase_add_test(tc, test_raft_snapshot_busy_refusal_keeps_next);
	tcase_add_test(tc, test_raft_snapshot_stream_survives_lost_append);
	tcase_add_test(tc, test_raft_snapshot_stale_chunk_loss_keeps_stream);
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
