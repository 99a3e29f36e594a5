/*
 * sim_node.c: one simulated node: the driver that turns each raft_update
 * into disk requests, messages and applies; the virtual network; the
 * node's writer (group commit over the real log store, sim_nodedisk.c);
 * disk errors; crashes and restarts.
 *
 * Driver rules kept exactly as raft.h states them:
 *  - persistence requests go to one FIFO queue per node; term/vote and log
 *    requests are written in group-commit batches and reported after the
 *    batch's one sync (kvd_writer_batch_end and kvd_writer_track from
 *    api/write_rules.c, as the daemon does), snapshot requests one at a time,
 *    after a simulated latency (a "stall" delays them past the election
 *    timeout);
 *  - a message with needs_sync is held until every request issued before it
 *    is durable (its barrier is the last issued sequence number); others go
 *    at once; both through the daemon's transport rules
 *    (api/transport_rules.c) over simulated HTTP connections (sim_http.c);
 *  - everything an update points to is copied before the next raft_step.
 *
 * A crash is a power failure of the node's simulated disk (sim_disk.c
 * decides what unsynced data survives); restart reopens the store through
 * the real recovery, checks that nothing acknowledged was lost, and feeds
 * RAFT_EVENT_START with the recovered term, vote, snapshot and the log
 * after the snapshot; the state machine restarts from the snapshot and is
 * rebuilt by replaying committed entries. With --model-disk the old model
 * runs instead: a crash keeps what was durable plus an arbitrary prefix of
 * the queued requests, the last log append of it possibly torn.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/snapshot_files.h"
#include "api/transport_rules.h"
#include "tests/sim/sim.h"

/* ------------------------------------------------------------- messages */

void sim_msg_free(struct sim_msg *m)
{
	if (m == NULL)
		return;
	if (m->refs != NULL)
		for (unsigned i = 0; i < m->m.u.append.n_entries; i++)
			sim_entry_unref(m->refs[i]);
	free(m->refs);
	free(m->ents);
	free(m->snap_data);
	free(m);
}

/* Copies an outgoing message out of the core's update (the transport's
 * encoding, sim_http.c). Returns NULL if the message cannot be sent (a
 * snapshot chunk of a snapshot no longer held). */
struct sim_msg *sim_msg_copy(struct sim *s, struct sim_node *n, const struct raft_message *src)
{
	struct sim_msg *m = calloc(1, sizeof(*m));
	if (m == NULL)
		abort();
	m->m = *src;
	if (src->type == RAFT_MSG_APPEND) {
		unsigned k = src->u.append.n_entries;
		m->m.u.append.entries = NULL;
		if (k > 0) {
			m->ents = malloc(k * sizeof(*m->ents));
			m->refs = malloc(k * sizeof(*m->refs));
			if (m->ents == NULL || m->refs == NULL)
				abort();
			for (unsigned i = 0; i < k; i++) {
				const struct raft_entry *e = &src->u.append.entries[i];
				const struct sim_entry *have = sim_log_get(&n->mlog, e->index);
				struct sim_entry *x;
				if (have != NULL && have->term == e->term && have->len == e->len &&
				    have->type == e->type &&
				    (e->len == 0 || memcmp(have->data, e->data, e->len) == 0)) {
					x = (struct sim_entry *)have;
					x->refs++;
				} else {
					x = sim_entry_new(e->index, e->term, e->type, e->data,
							  e->len);
				}
				m->refs[i] = x;
				m->ents[i] = (struct raft_entry){x->index, x->term, x->type,
								 x->data, x->len};
			}
			m->m.u.append.entries = m->ents;
		}
	} else if (src->type == RAFT_MSG_SNAPSHOT) {
		const struct raft_snapshot *c = &src->u.snapshot;
		if (n->dsnap.meta.index != c->last_index || n->dsnap.meta.term != c->last_term ||
		    c->offset > n->dsnap.len) {
			if (s->p.verbose)
				printf(
				    "  %s: drop snapshot chunk for %llu/%llu (holding %llu/%llu)\n",
				    n->id, (unsigned long long)c->last_index,
				    (unsigned long long)c->last_term,
				    (unsigned long long)n->dsnap.meta.index,
				    (unsigned long long)n->dsnap.meta.term);
			free(m);
			return NULL;
		}
		size_t len = c->len;
		if (c->offset + len > n->dsnap.len)
			len = n->dsnap.len - c->offset;
		m->snap_data = malloc(len ? len : 1);
		if (m->snap_data == NULL)
			abort();
		memcpy(m->snap_data, n->dsnap.buf + c->offset, len);
		m->m.u.snapshot.data = m->snap_data;
		m->m.u.snapshot.len = len;
		m->m.u.snapshot.done = c->offset + len == n->dsnap.len;
	} else if (src->type == RAFT_MSG_APPEND_RESULT && src->u.append_result.success) {
		bool found;
		m->expect_term =
		    sim_log_term(&n->mlog, src->u.append_result.last_log_index, &found);
	}
	return m;
}

/* ----------------------------------------------------------------- disk */

static void disk_start(struct sim *s, struct sim_node *n)
{
	if (n->disk_busy || n->q_head == NULL)
		return;
	n->disk_busy = true;
	raft_time t = s->now > n->stall_until ? s->now : n->stall_until;
	sim_ev_push(s, t + sim_rand_range(s, 1, 4), SIM_EV_DISK, n->num, n->inc, NULL, 0);
}

static void disk_enqueue(struct sim *s, struct sim_node *n, struct sim_req *r)
{
	r->seq = ++n->issued_seq;
	r->next = NULL;
	if (n->q_tail != NULL)
		n->q_tail->next = r;
	else
		n->q_head = r;
	n->q_tail = r;
	disk_start(s, n);
}

void sim_req_free(struct sim_req *r)
{
	for (unsigned i = 0; i < r->n_ents; i++)
		sim_entry_unref(r->ents[i]);
	free(r->ents);
	free((void *)r->chunk.data);
	free(r->snap.buf);
	free(r);
}

static void node_install(struct sim *s, struct sim_node *n, const struct raft_snapshot_meta *meta,
			 unsigned char *buf, size_t len, const uint64_t *kv)
{
	if (s->p.trace)
		printf("%8llu %s installs snapshot %llu/%llu; durable log was %llu..%llu\n",
		       (unsigned long long)s->now, n->id, (unsigned long long)meta->index,
		       (unsigned long long)meta->term, (unsigned long long)n->dlog.first,
		       (unsigned long long)sim_log_last(&n->dlog));
	free(n->dsnap.buf);
	n->dsnap.buf = buf;
	n->dsnap.len = len;
	n->dsnap.meta = *meta;
	sim_log_reset(&n->dlog, meta->index, meta->term);
	sim_log_reset(&n->mlog, meta->index, meta->term);
	sim_cfg_rebuild(n);
	if (meta->index < n->applied)
		sim_fail(s,
			 "node %s installed snapshot %llu below its applied index %llu (state "
			 "machine goes backwards)",
			 n->id, (unsigned long long)meta->index, (unsigned long long)n->applied);
	memcpy(n->kv, kv, sizeof(n->kv));
	n->applied = meta->index;
	n->applied_config = meta->config;
	sim_check_snapshot_state(s, n);
	s->stats.snaps_installed++;
}

/* Makes request r durable; n_keep limits a log append to its first n_keep
 * entries (a torn write). Returns true if a snapshot was installed. */
static bool req_apply(struct sim *s, struct sim_node *n, struct sim_req *r, unsigned n_keep)
{
	switch (r->kind) {
	case SIM_REQ_META:
		sim_check_durable_meta(s, n, r->term, r->vote);
		n->d_term = r->term;
		snprintf(n->d_vote, sizeof(n->d_vote), "%s", r->vote);
		return false;
	case SIM_REQ_LOG:
		if (n->store != NULL)
			sim_check_truncation(s, n, r->seq, r->truncate_from);
		if (r->truncate_from != 0)
			sim_log_truncate(&n->dlog, r->truncate_from);
		for (unsigned i = 0; i < r->n_ents && i < n_keep; i++) {
			if (r->ents[i]->index != sim_log_last(&n->dlog) + 1) {
				sim_fail(s, "node %s: durable append of index %llu after %llu",
					 n->id, (unsigned long long)r->ents[i]->index,
					 (unsigned long long)sim_log_last(&n->dlog));
				return false;
			}
			sim_log_push(&n->dlog, r->ents[i]);
		}
		return false;
	case SIM_REQ_SNAP_CHUNK: {
		size_t end = r->chunk.offset + r->chunk.len;
		if (r->chunk.offset == 0)
			n->incoming_len = 0;
		n->incoming = realloc(n->incoming, end ? end : 1);
		if (n->incoming == NULL)
			abort();
		if (end > n->incoming_len) {
			if (r->chunk.offset > n->incoming_len)
				memset(n->incoming + n->incoming_len, 0,
				       r->chunk.offset - n->incoming_len);
			n->incoming_len = end;
		}
		if (r->chunk.len > 0)
			memcpy(n->incoming + r->chunk.offset, r->chunk.data, r->chunk.len);
		if (!r->chunk.done)
			return false;
		struct raft_snapshot_meta meta;
		uint64_t kv[SIM_KEYS];
		if (!sim_snap_parse(n->incoming, n->incoming_len, &meta, kv) ||
		    meta.index != r->chunk.last_index || meta.term != r->chunk.last_term) {
			sim_fail(
			    s, "node %s: received snapshot stream %llu/%llu is corrupt (%zu bytes)",
			    n->id, (unsigned long long)r->chunk.last_index,
			    (unsigned long long)r->chunk.last_term, n->incoming_len);
			return false;
		}
		node_install(s, n, &meta, n->incoming, n->incoming_len, kv);
		n->incoming = NULL;
		n->incoming_len = 0;
		return true;
	}
	case SIM_REQ_SNAP_TAKE:
		n->snap_taking = false;
		/* A snapshot installed meanwhile may be newer: keep the newest
		 * (the driver's rule, like a real one renaming files). */
		if (r->snap.meta.index <= n->dsnap.meta.index)
			return false;
		free(n->dsnap.buf);
		n->dsnap = r->snap;
		r->snap.buf = NULL;
		s->stats.snaps_taken++;
		return false;
	}
	return false;
}

/* Held messages whose writer sequence is complete leave (the transport
 * rules, api/transport_rules.c, as the daemon's writer flushes them). */
static void held_release(struct sim *s, struct sim_node *n)
{
	(void)s;
	if (n->tr != NULL)
		kvd_trules_flush(n->tr, n->done_seq);
}

/* What a completed request reports to the core. */
static bool req_event(struct sim *s, struct sim_node *n, const struct sim_req *r, bool installed,
		      struct raft_event *e)
{
	if (r->kind == SIM_REQ_LOG && r->n_ents > 0) {
		e->type = RAFT_EVENT_PERSISTED;
		e->u.persisted.index = r->ents[r->n_ents - 1]->index;
		e->u.persisted.term = r->ents[r->n_ents - 1]->term;
		return true;
	}
	if (r->kind == SIM_REQ_SNAP_TAKE && r->snap.buf == NULL) {
		e->type = RAFT_EVENT_SNAPSHOT_TAKEN;
		e->u.snapshot = n->dsnap.meta;
		return true;
	}
	/* A slow install (sim_converge.c) reports later, by its own event. */
	if (installed && !sim_converge_install_later(s, n)) {
		e->type = RAFT_EVENT_SNAPSHOT_INSTALLED;
		e->u.snapshot = n->dsnap.meta;
		return true;
	}
	return false;
}

static void disk_complete_model(struct sim *s, struct sim_node *n)
{
	struct sim_req *r = n->q_head;
	struct raft_event e = {.now = s->now};
	bool post;

	n->q_head = r->next;
	if (n->q_head == NULL)
		n->q_tail = NULL;
	n->disk_busy = false;
	bool installed = req_apply(s, n, r, UINT32_MAX);
	n->done_seq = r->seq;
	post = req_event(s, n, r, installed, &e);
	sim_req_free(r);
	disk_start(s, n);
	held_release(s, n);
	if (post && !s->failed)
		sim_node_step(s, n, &e, NULL, NULL);
}

/* A batch that will not report: its truncations were carried out on the
 * disk (or may have been), as the core asked, so the entries they remove
 * no longer count as acknowledged. */
static void batch_forget(struct sim_node *n, struct sim_req *batch)
{
	for (struct sim_req *r = batch; r != NULL; r = r->next)
		if (r->written && r->kind == SIM_REQ_LOG && r->truncate_from != 0)
			sim_log_truncate(&n->dlog, r->truncate_from);
}

/* A write or sync failed: the node does what the daemon does (api/node.c).
 * Nothing that depended on the batch goes out; on EIO the core gets
 * IO_FAILED and stops; either way the process starts again from what is
 * durable (the daemon restarts its core after a full disk; an operator
 * restarts it after an I/O error). The disk keeps its page cache. */
static void disk_error(struct sim *s, struct sim_node *n, int rv)
{
	if (sim_disk_dead(n->disk)) {
		/* Not an error: the power failed inside the operation. */
		sim_node_crash(s, n);
		sim_ev_push(s, s->now + sim_rand_range(s, 50, 2000), SIM_EV_RESTART, n->num, 0,
			    NULL, 0);
		return;
	}
	s->disk_errors++;
	if (n->tr != NULL) /* as kvd_node_disk_error: held messages dropped */
		kvd_trules_drop_held(n->tr);
	/* The daemon restarts its core after a full disk (drop_core() in
	 * api/node.c): the parked last chunk is refused first (offset 0). */
	if (n->tr != NULL && rv == KVD_ENOSPC)
		kvd_trules_refuse_parked(n->tr);
	if (rv != KVD_ENOSPC) {
		struct raft_event e = {.now = s->now, .type = RAFT_EVENT_IO_FAILED};
		sim_node_step(s, n, &e, NULL, NULL);
	}
	sim_node_stop(s, n, false);
	sim_ev_push(s, s->now + (rv == KVD_ENOSPC ? 1000 : sim_rand_range(s, 50, 2000)),
		    SIM_EV_RESTART, n->num, 0, NULL, 0);
}

void sim_node_disk_error(struct sim *s, struct sim_node *n, int rv)
{
	if (n->up)
		disk_error(s, n, rv);
}

/* Phase 1 of a group commit: every META and LOG request at the head of the
 * queue is written (no sync), as the daemon's writer runs its queued jobs. */
static void batch_write(struct sim *s, struct sim_node *n)
{
	struct sim_req **tail = &n->batch;
	n->batch_failed = 0;
	n->batch_appended = false;
	/* Now and then the power fails inside the batch's writes or its
	 * sync (a meta overwrite before its fdatasync, a truncation between
	 * its unlinks). */
	if (!s->healing && sim_rand(s) % 1000 < 3)
		sim_disk_fail_after(n->disk, (unsigned)sim_rand_range(s, 1, 8));
	while (n->q_head != NULL &&
	       (n->q_head->kind == SIM_REQ_META || n->q_head->kind == SIM_REQ_LOG)) {
		struct sim_req *r = n->q_head;
		n->q_head = r->next;
		if (n->q_head == NULL)
			n->q_tail = NULL;
		r->next = NULL;
		*tail = r;
		tail = &r->next;
		if (n->batch_failed == 0) {
			r->written = true;
			n->batch_failed = sim_nd_write(s, n, r, &n->batch_appended);
			r->failed = n->batch_failed != 0;
		} else {
			r->failed = true; /* not run after a failure */
		}
	}
	sim_late_written(s, n, n->batch);
	raft_time t = s->now > n->stall_until ? s->now : n->stall_until;
	raft_time sync_at = t + sim_rand_range(s, 1, 4);
	sim_ev_push(s, sync_at, SIM_EV_DISK, n->num, n->inc, NULL, 0);
	/* Power failures aimed at the window between a batch's writes and
	 * its sync, where the disk holds unsynced pages of every shape. */
	if (!s->healing && sim_chance(s, 1))
		sim_ev_push(s, sim_rand_range(s, s->now, sync_at - 1), SIM_EV_STRIKE, n->num,
			    n->inc, NULL, 1);
}

/* What a completed append job reports: only what no later job truncates
 * (api/write_rules.c), or with the completion-match plant the last entry of the
 * job whenever the core's log holds that (index, term). */
bool sim_node_persisted_event(struct sim *s, struct sim_node *n, const struct sim_req *r,
			      struct raft_event *e)
{
	struct raft_entry *ents = NULL;
	bool report;
	if (r->kind != SIM_REQ_LOG)
		return false;
	if (r->n_ents > 0) {
		ents = malloc(r->n_ents * sizeof(*ents));
		if (ents == NULL)
			abort();
		for (unsigned i = 0; i < r->n_ents; i++)
			ents[i] = (struct raft_entry){r->ents[i]->index, r->ents[i]->term,
						      r->ents[i]->type, r->ents[i]->data,
						      r->ents[i]->len};
	}
	e->type = RAFT_EVENT_PERSISTED;
	report = kvd_writer_track_done(&n->track, r->seq, ents, r->n_ents, &e->u.persisted.index,
				       &e->u.persisted.term);
	if (s->p.plants.completion_match && r->n_ents > 0) {
		bool found;
		raft_term t = sim_log_term(&n->mlog, r->ents[r->n_ents - 1]->index, &found);
		report = found && t == r->ents[r->n_ents - 1]->term;
		e->u.persisted.index = r->ents[r->n_ents - 1]->index;
		e->u.persisted.term = r->ents[r->n_ents - 1]->term;
	}
	free(ents);
	return report;
}

/* Phase 2: the batch's one sync (kvd_writer_batch_end, as in the daemon),
 * then every job reports. */
static void batch_end(struct sim *s, struct sim_node *n)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct sim_req *batch = n->batch;
	struct raft_event *evs;
	size_t n_evs = 0, count = 0;
	int rv;

	n->batch = NULL;
	rv = kvd_writer_batch_end(n->store, n->batch_appended, n->batch_failed, errmsg);
	if (rv != 0 && s->p.trace)
		printf("%8llu %s batch failed: %s (%s)\n", (unsigned long long)s->now, n->id,
		       kvd_strerror(rv), errmsg);
	for (struct sim_req *r = batch; r != NULL; r = r->next)
		count++;
	evs = calloc(count + 1, sizeof(*evs));
	if (evs == NULL)
		abort();
	for (struct sim_req *r = batch; r != NULL && !s->failed; r = r->next) {
		/* Planted batch-ack: the jobs before the failing one report
		 * success although the batch was discarded. */
		bool ok = rv == 0 || (s->p.plants.batch_ack && n->batch_failed != 0 && !r->failed);
		if (!ok) {
			batch_forget(n, r);
			break;
		}
		req_apply(s, n, r, UINT32_MAX);
		n->done_seq = r->seq;
		/* Messages held for this job go out now: all of the batch is
		 * durable at this instant, and releasing them job by job keeps
		 * the persist-before-send checks exact (a vote request of term
		 * T is checked against the meta write of T, not a later one of
		 * the same batch). */
		held_release(s, n);
		evs[n_evs].now = s->now;
		if (sim_late_on(s) && r->kind == SIM_REQ_LOG)
			sim_late_push(s, n, r); /* sim_complete.c */
		else if (sim_node_persisted_event(s, n, r, &evs[n_evs]))
			n_evs++;
	}
	while (batch != NULL) {
		struct sim_req *next = batch->next;
		sim_req_free(batch);
		batch = next;
	}
	n->disk_busy = false;
	if (rv == 0) {
		disk_start(s, n);
		held_release(s, n);
		for (size_t i = 0; i < n_evs && !s->failed && n->up; i++)
			sim_node_step(s, n, &evs[i], NULL, NULL);
	} else if (!s->failed) {
		held_release(s, n); /* batch-ack plant: what it claimed goes out */
		disk_error(s, n, rv);
	}
	free(evs);
}

/* A crash between two steps of a snapshot request (r already taken off
 * the queue): a power failure, the node restarts later. */
static void snap_crash(struct sim *s, struct sim_node *n, struct sim_req *r, const char *where)
{
	if (s->p.trace)
		printf("%8llu %s power fails %s\n", (unsigned long long)s->now, n->id, where);
	sim_req_free(r);
	sim_node_crash(s, n);
	sim_ev_push(s, s->now + sim_rand_range(s, 50, 2000), SIM_EV_RESTART, n->num, 0, NULL, 0);
}

/* A received chunk, or the install it completes, failed: like the daemon
 * (api/snapshots.c), its held result is dropped and the core forgets the
 * stream (the leader restarts it), so no chunk lands after a hole. */
static void snap_refuse(struct sim *s, struct sim_node *n, struct sim_req *r)
{
	struct raft_event e = {.now = s->now, .type = RAFT_EVENT_SNAPSHOT_FAILED};

	if (n->tr != NULL)
		kvd_trules_drop_held(n->tr);
	n->done_seq = r->seq;
	if (r->chunk.done) {
		raft_index unused_index;
		raft_term unused_term;
		(void)kvd_writer_track_done(&n->track, r->seq, NULL, 0, &unused_index,
					    &unused_term);
	}
	sim_req_free(r);
	disk_start(s, n);
	sim_node_step(s, n, &e, NULL, NULL);
}

/* The file steps of a received chunk on the real disk (sim_snapfiles.c,
 * api/snapshot_files.c): write (failure reported), and for the last chunk
 * check, rename + fsync of the directory, each step a possible crash point.
 * Returns true when r was consumed (failure or crash). */
static bool snap_chunk_files(struct sim *s, struct sim_node *n, struct sim_req *r,
			     enum sim_sf_step crash)
{
	int rv = sim_sf_chunk(s, n, &r->chunk);

	if (rv != 0 && sim_disk_dead(n->disk)) {
		snap_crash(s, n, r, "inside a snapshot chunk write");
		return true;
	}
	if (rv != 0) {
		snap_refuse(s, n, r);
		return true;
	}
	if (!r->chunk.done)
		return false;
	if (crash == SIM_SF_AFTER_CHUNK) {
		snap_crash(s, n, r, "after the last snapshot chunk is written");
		return true;
	}
	if (!s->p.plants.chunk_fail_ignored) {
		rv = sim_sf_check(s, n, r->chunk.last_index, r->chunk.last_term);
		if (rv == 0 && crash == SIM_SF_AFTER_CHECK) {
			snap_crash(s, n, r, "after the snapshot file is checked");
			return true;
		}
	}
	if (rv == 0) {
		if (crash == SIM_SF_IN_RENAME || crash == SIM_SF_BEFORE_DIRSYNC)
			sim_disk_fail_after(n->disk, crash == SIM_SF_IN_RENAME ? 1 : 2);
		rv = sim_sf_place(s, n, r->chunk.last_index, r->chunk.last_term);
	}
	if (rv != 0 && sim_disk_dead(n->disk)) {
		snap_crash(s, n, r, "inside the snapshot's rename and directory fsync");
		return true;
	}
	/* Planted chunk-fail-ignored: checked only once in place. */
	if (rv == 0 && s->p.plants.chunk_fail_ignored)
		rv = sim_sf_check_placed(s, n, r->chunk.last_index, r->chunk.last_term);
	if (rv != 0) {
		snap_refuse(s, n, r);
		return true;
	}
	return false;
}

/* A snapshot request, alone: like the model, plus the store's part (reset
 * after an install, head removal after a snapshot is taken). */
static bool install_may_start(struct sim *s, struct sim_node *n);

static void disk_complete_snapshot(struct sim *s, struct sim_node *n)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct sim_req *r = n->q_head;
	struct raft_event e = {.now = s->now};
	int rv = 0;
	bool post;

	if (r->kind == SIM_REQ_SNAP_CHUNK && r->chunk.done && !install_may_start(s, n))
		return;
	/* Completions come in job order: the late ones first (sim_complete.c). */
	sim_late_flush(s, n);
	if (s->failed || !n->up)
		return;
	n->q_head = r->next;
	if (n->q_head == NULL)
		n->q_tail = NULL;
	n->disk_busy = false;
	/* Where a crash falls in this install, if anywhere (sim_snapfiles.c). */
	enum sim_sf_step crash =
	    r->kind == SIM_REQ_SNAP_CHUNK && r->chunk.done ? sim_sf_crash_step(s) : SIM_SF_NONE;
	if (r->kind == SIM_REQ_SNAP_CHUNK && snap_chunk_files(s, n, r, crash))
		return;
	if (r->kind == SIM_REQ_SNAP_TAKE && r->snap.meta.index > n->dsnap.meta.index &&
	    sim_sf_take(s, n, &r->snap) != 0) {
		snap_crash(s, n, r, "inside a local snapshot's file steps");
		return;
	}
	/* The snapshot is durable before the log is reset (a failed reset
	 * then leaves a log the restart fits to the snapshot). */
	bool installed = req_apply(s, n, r, UINT32_MAX);
	if (installed && crash == SIM_SF_AFTER_PLACE) {
		snap_crash(s, n, r, "after the snapshot is placed, before the log reset");
		return;
	}
	if (installed) /* the reset is a truncation after the snapshot */
		sim_check_truncation(s, n, r->seq, n->dsnap.meta.index + 1);
	if (installed)
		rv =
		    raft_log_store_reset(n->store, n->dsnap.meta.index, n->dsnap.meta.term, errmsg);
	if (installed && rv == 0 && crash == SIM_SF_AFTER_RESET) {
		snap_crash(s, n, r, "after the log reset, before the report");
		return;
	}
	if ((installed || (r->kind == SIM_REQ_SNAP_TAKE && r->snap.buf == NULL)) && rv == 0)
		sim_sf_prune(s, n, n->dsnap.meta.index);
	n->done_seq = r->seq;
	post = req_event(s, n, r, installed, &e);
	if (installed && rv == 0)
		n->bound_have = false; /* a new log: no removal behind it */
	if (r->kind == SIM_REQ_SNAP_TAKE && post && !s->failed && rv == 0) {
		unsigned long faults = sim_disk_stats(n->disk)->faults;
		rv = raft_log_store_remove_head(n->store, n->dsnap.meta.index, errmsg);
		/* A seal refused by an injected fault leaves the segment open
		 * (raft_log_store_remove_head returns 0): no bound until the
		 * next removal seals it. */
		if (rv == 0 && sim_disk_stats(n->disk)->faults != faults)
			n->bound_have = false;
		else if (rv == 0)
			sim_nd_check_bound(s, n, n->dsnap.meta.index);
	}
	if (installed) {
		raft_index unused_index;
		raft_term unused_term;
		(void)kvd_writer_track_done(&n->track, r->seq, NULL, 0, &unused_index,
					    &unused_term);
	}
	sim_req_free(r);
	if (rv != 0) {
		disk_error(s, n, rv);
		return;
	}
	disk_start(s, n);
	held_release(s, n);
	if (post && !s->failed)
		sim_node_step(s, n, &e, NULL, NULL);
}

void sim_disk_complete(struct sim *s, struct sim_node *n)
{
	if (n->store == NULL)
		disk_complete_model(s, n);
	else if (n->batch != NULL)
		batch_end(s, n);
	else if (n->q_head->kind == SIM_REQ_META || n->q_head->kind == SIM_REQ_LOG)
		batch_write(s, n);
	else
		disk_complete_snapshot(s, n);
}

/* --------------------------------------------------------------- driver */

static void maybe_snapshot(struct sim *s, struct sim_node *n)
{
	if (n->snap_taking || n->applied < n->dsnap.meta.index + s->snap_threshold)
		return;
	bool found;
	raft_term term = sim_log_term(&n->mlog, n->applied, &found);
	if (!found)
		return;
	struct sim_req *r = calloc(1, sizeof(*r));
	if (r == NULL)
		abort();
	r->kind = SIM_REQ_SNAP_TAKE;
	sim_snap_build(n, term, &r->snap);
	n->snap_taking = true;
	if (n->store == NULL) { /* --model-disk: as before, in the queue at once */
		disk_enqueue(s, n, r);
		return;
	}
	/* The worker reads its view and writes the file beside the disk queue
	 * for 5-200 ms (api/snapshots.c TAKING); from its own generator, so
	 * the other draws of a seed stay as they were. */
	uint64_t z = (s->snap_rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	n->snap_worker = r;
	n->snap_worker_end = s->now + 5 + (raft_time)(z % 196);
	sim_ev_push(s, n->snap_worker_end, SIM_EV_SNAP_WORKER, n->num, n->inc, NULL, 0);
}

void sim_node_snap_worker_done(struct sim *s, struct sim_node *n)
{
	struct sim_req *r = n->snap_worker;
	n->snap_worker = NULL;
	if (r != NULL)
		disk_enqueue(s, n, r);
}

/* The last chunk of a leader's snapshot is at the head of the disk queue:
 * the daemon's own rule (api/snapshots.c start_install) says whether the
 * install starts. WAIT: it starts when the local snapshot's worker ends
 * (the queue waits with it, at most 200 ms; the daemon's writer goes on).
 * FAIL (plant install-busy-fails): the process exits, as the daemon did. */
static bool install_may_start(struct sim *s, struct sim_node *n)
{
	bool start = false;
	switch (kvd_snapfiles_install_rule(n->snap_worker != NULL)) {
	case KVD_SNAPFILES_INSTALL_START: start = true; break;
	case KVD_SNAPFILES_INSTALL_WAIT:
		s->stats.install_waits++;
		if (s->p.trace)
			printf("%8llu %s install waits for the local snapshot (until %llu)\n",
			       (unsigned long long)s->now, n->id,
			       (unsigned long long)n->snap_worker_end);
		sim_ev_push(s, n->snap_worker_end, SIM_EV_DISK, n->num, n->inc, NULL, 0);
		break;
	default:
		if (s->p.trace)
			printf(
			    "%8llu %s exits: snapshot from leader met a running local snapshot\n",
			    (unsigned long long)s->now, n->id);
		sim_node_stop(s, n, false);
		n->exited = true;
		break;
	}
	return start;
}

static void apply_entry(struct sim *s, struct sim_node *n, const struct raft_entry *re)
{
	const struct sim_entry *e = sim_log_get(&n->mlog, re->index);
	if (re->index != n->applied + 1) {
		sim_fail(s, "node %s applies index %llu after %llu", n->id,
			 (unsigned long long)re->index, (unsigned long long)n->applied);
		return;
	}
	if (e == NULL || e->term != re->term) {
		sim_fail(s, "node %s applies index %llu term %llu not in its log", n->id,
			 (unsigned long long)re->index, (unsigned long long)re->term);
		return;
	}
	struct sim_sm_result res = {0};
	if (e->type == RAFT_ENTRY_COMMAND) {
		sim_sm_apply(s, n, e, &res);
	} else if (e->type == RAFT_ENTRY_CONFIG) {
		if (raft_config_decode(e->data, e->len, &n->applied_config) != 0)
			sim_fail(s, "node %s: config entry %llu does not decode", n->id,
				 (unsigned long long)e->index);
	}
	n->applied = re->index;
	sim_check_applied(s, n, e);
	sim_client_applied(s, n, e, &res);
}

/* Applies an update's log mutation to the node's requested log and queues
 * it for the disk. */
static void update_log(struct sim *s, struct sim_node *n, const struct raft_update *u)
{
	struct sim_req *r = calloc(1, sizeof(*r));
	if (r == NULL)
		abort();
	r->kind = SIM_REQ_LOG;
	r->truncate_from = u->truncate_from;
	if (u->truncate_from != 0) {
		if (u->truncate_from < n->mlog.first) {
			sim_fail(s, "node %s truncates from %llu, below its log start %llu", n->id,
				 (unsigned long long)u->truncate_from,
				 (unsigned long long)n->mlog.first);
		}
		for (raft_index i = u->truncate_from; i <= sim_log_last(&n->mlog); i++) {
			const struct sim_entry *x = sim_log_get(&n->mlog, i);
			/* Only a node at or past the term that committed the
			 * entry must keep it: a stale leader's follower may
			 * still lose it (Raft repairs it later). */
			if (x != NULL && i < s->cap_committed && s->committed[i].set &&
			    s->committed[i].term == x->term &&
			    n->term >= s->committed[i].commit_term) {
				sim_fail(s, "node %s truncates committed entry %llu (term %llu)",
					 n->id, (unsigned long long)i, (unsigned long long)x->term);
				break;
			}
		}
		sim_log_truncate(&n->mlog, u->truncate_from);
		while (n->n_cfg > 0 && n->cfg_idx[n->n_cfg - 1] >= u->truncate_from)
			n->n_cfg--;
	}
	if (u->n_entries > 0) {
		r->ents = malloc(u->n_entries * sizeof(*r->ents));
		if (r->ents == NULL)
			abort();
	}
	for (unsigned i = 0; i < u->n_entries && !s->failed; i++) {
		const struct raft_entry *re = &u->entries[i];
		if (re->index != sim_log_last(&n->mlog) + 1) {
			sim_fail(s, "node %s appends index %llu after %llu (not contiguous)", n->id,
				 (unsigned long long)re->index,
				 (unsigned long long)sim_log_last(&n->mlog));
			break;
		}
		bool found;
		raft_term prev_term = sim_log_term(&n->mlog, re->index - 1, &found);
		struct sim_entry *e =
		    sim_entry_new(re->index, re->term, re->type, re->data, re->len);
		if (e->type == RAFT_ENTRY_CONFIG && u->role == RAFT_LEADER &&
		    re->term == u->current_term && n->n_cfg > 0 &&
		    n->cfg_idx[n->n_cfg - 1] > u->commit_index)
			sim_fail(s,
				 "leader %s appends config entry %llu while config entry %llu is "
				 "uncommitted (commit %llu)",
				 n->id, (unsigned long long)re->index,
				 (unsigned long long)n->cfg_idx[n->n_cfg - 1],
				 (unsigned long long)u->commit_index);
		sim_check_appended(s, n, e, found ? prev_term : 0);
		sim_log_push(&n->mlog, e);
		if (e->type == RAFT_ENTRY_CONFIG) {
			if (n->n_cfg == n->cap_cfg) {
				n->cap_cfg = n->cap_cfg ? n->cap_cfg * 2 : 16;
				n->cfg_idx = realloc(n->cfg_idx, n->cap_cfg * sizeof(*n->cfg_idx));
				if (n->cfg_idx == NULL)
					abort();
			}
			n->cfg_idx[n->n_cfg++] = e->index;
		}
		r->ents[r->n_ents++] = e; /* the request takes the creation ref */
	}
	/* A follower's append job that cannot be submitted (out of memory, as
	 * kvd_writer_submit_append fails): the core counts on it, so nothing
	 * that needs a sync may go out, and the node fails its I/O. */
	if (n->store != NULL && u->role != RAFT_LEADER && u->n_entries > 0 && !s->failed &&
	    sim_http_append_fails(s)) {
		sim_req_free(r);
		kvd_writer_track_lost(&n->track);
		s->stats.append_ooms++;
		sim_ev_push(s, s->now, SIM_EV_IO_FAILED, n->num, n->inc, NULL, 0);
		return;
	}
	disk_enqueue(s, n, r);
	if (n->store != NULL && kvd_writer_track_append(&n->track, r->seq, r->truncate_from) != 0)
		abort();
}

/* Earliest virtual time at which the node's clock reads at least local. */
static raft_time to_virtual(const struct sim_node *n, raft_time local)
{
	if (local <= n->clock_offset)
		return 0;
	uint64_t d = local - n->clock_offset;
	raft_time t = d * 1000000u / n->rate_ppm;
	while (n->clock_offset + t * n->rate_ppm / 1000000u < local)
		t++;
	return t;
}

/* The update's messages go to the transport rules as api/node.c hands them
 * over: a needs_sync message waits for the last submitted job, or is dropped
 * when a job it depends on was never submitted (kvd_writer_track_sync_seq);
 * then held messages are dropped too and the requests left without an
 * answer refused. The append-oom-success plant sends it anyway. */
static void send_messages(struct sim *s, struct sim_node *n, const struct raft_update *u)
{
	bool dropped = false;
	for (unsigned i = 0; i < u->n_messages && !s->failed && n->tr != NULL; i++) {
		const struct raft_message *m = &u->messages[i];
		uint64_t seq = 0;
		if (m->needs_sync) {
			seq = n->issued_seq;
			if (n->store != NULL &&
			    !kvd_writer_track_sync_seq(&n->track, n->issued_seq, &seq) &&
			    !s->p.plants.append_oom_success) {
				dropped = true;
				continue;
			}
			if (seq <= n->done_seq)
				seq = 0;
		}
		kvd_trules_send(n->tr, m, seq);
	}
	if (dropped && n->tr != NULL) {
		kvd_trules_drop_held(n->tr);
		kvd_trules_answer_orphans(n->tr);
	}
}

static void process_update(struct sim *s, struct sim_node *n, const struct raft_update *u,
			   enum raft_role prev_role, raft_term prev_term, raft_index prev_commit,
			   const struct raft_config *cfg_before)
{
	if (u->meta_changed) {
		struct sim_req *r = calloc(1, sizeof(*r));
		if (r == NULL)
			abort();
		r->kind = SIM_REQ_META;
		r->term = u->term;
		snprintf(r->vote, sizeof(r->vote), "%s", u->voted_for);
		disk_enqueue(s, n, r);
	}
	if (u->truncate_from != 0 || u->n_entries > 0)
		update_log(s, n, u);
	if (u->snapshot_write != NULL) {
		struct sim_req *r = calloc(1, sizeof(*r));
		if (r == NULL)
			abort();
		r->kind = SIM_REQ_SNAP_CHUNK;
		r->chunk = *u->snapshot_write;
		void *data = malloc(r->chunk.len ? r->chunk.len : 1);
		if (data == NULL)
			abort();
		if (r->chunk.len > 0)
			memcpy(data, u->snapshot_write->data, r->chunk.len);
		r->chunk.data = data;
		disk_enqueue(s, n, r);
		/* An install resets the log: a truncation for the completions
		 * (as api/node.c's start_install counts it). */
		if (n->store != NULL && r->chunk.done &&
		    kvd_writer_track_append(&n->track, r->seq, r->chunk.last_index + 1) != 0)
			abort();
	}
	sim_check_update(s, n, u, prev_role, prev_term, prev_commit, cfg_before);
	/* Event-driven nemesis: strike a leader right after it is elected or
	 * commits, when its followers are most likely to be mid-way; most
	 * often when a commit covers entries of earlier terms (the first commit
	 * of a new leader: the window of figure 8). */
	bool old_term_commit = false;
	for (raft_index i = prev_commit + 1; i <= u->commit_index && !old_term_commit; i++) {
		const struct sim_entry *x = sim_log_get(&n->mlog, i);
		old_term_commit = x != NULL && x->term < u->current_term;
	}
	if (!s->healing && u->role == RAFT_LEADER &&
	    ((prev_role != RAFT_LEADER && sim_chance(s, 15)) ||
	     (old_term_commit && sim_chance(s, 30)) ||
	     (u->commit_index > prev_commit && sim_chance(s, 3))))
		sim_ev_push(s, s->now + sim_rand_range(s, 0, 15), SIM_EV_STRIKE, n->num, n->inc,
			    NULL, sim_chance(s, 50));
	/* Leader hop in progress (sim_world.c): cut each new leader off from
	 * all but the stalled follower, once this update's messages are out. */
	if (!s->healing && s->hop_until > s->now && n->num != s->hop_node &&
	    u->role == RAFT_LEADER && prev_role != RAFT_LEADER)
		sim_ev_push(s, s->now, SIM_EV_STRIKE, n->num, n->inc, NULL, 2);
	n->role = u->role;
	n->term = u->current_term;
	if (u->commit_index > n->commit)
		n->commit = u->commit_index;
	send_messages(s, n, u);
	for (unsigned i = 0; i < u->n_apply && !s->failed; i++)
		apply_entry(s, n, &u->apply[i]);
	if (u->n_apply > 0 && !s->failed)
		sim_ev_push(s, s->now + sim_rand_range(s, 0, 3), SIM_EV_APPLIED, n->num, n->inc,
			    NULL, n->applied);
	for (unsigned i = 0; i < u->n_reads && !s->failed; i++) {
		if (u->reads[i].index > n->applied) {
			sim_fail(s, "node %s: read %llu ready at index %llu but applied is %llu",
				 n->id, (unsigned long long)u->reads[i].token,
				 (unsigned long long)u->reads[i].index,
				 (unsigned long long)n->applied);
			break;
		}
		sim_client_read_done(s, n, u->reads[i].token, true, u->reads[i].index);
	}
	for (unsigned i = 0; i < u->n_reads_failed; i++)
		sim_client_read_done(s, n, u->reads_failed[i].token, false, 0);
	if (u->deadline != n->tick_local || n->tick_at <= s->now) {
		raft_time t = to_virtual(n, u->deadline);
		n->tick_local = u->deadline;
		n->tick_at = t > s->now ? t : s->now + 1;
		sim_ev_push(s, n->tick_at, SIM_EV_TICK, n->num, n->inc, NULL, 0);
	}
	if (!s->failed)
		maybe_snapshot(s, n);
}

void sim_node_step(struct sim *s, struct sim_node *n, const struct raft_event *e0, int *rc_out,
		   struct raft_update *u_out)
{
	struct raft_event local = *e0, *e = &local;
	local.now = n->clock_offset + s->now * n->rate_ppm / 1000000u;
	struct raft_update u;
	static struct raft_config cfg_before;
	const struct raft_config *before = NULL;
	enum raft_role prev_role = n->role;
	raft_term prev_term = n->term;
	raft_index prev_commit = n->commit;

	if (n->role == RAFT_LEADER) {
		cfg_before = *raft_configuration(n->core);
		before = &cfg_before;
	}
	int rc = raft_step(n->core, e, &u);
	if (rc_out != NULL)
		*rc_out = rc;
	process_update(s, n, &u, prev_role, prev_term, prev_commit, before);
	if (u_out != NULL)
		*u_out = u;
}

/* ----------------------------------------------------- crash and restart */

void sim_node_crash(struct sim *s, struct sim_node *n)
{
	sim_node_stop(s, n, true);
}

void sim_node_stop(struct sim *s, struct sim_node *n, bool power_loss)
{
	if (s->p.trace)
		printf("%8llu %s crashes: durable log %llu..%llu, term %llu vote \"%s\"\n",
		       (unsigned long long)s->now, n->id, (unsigned long long)n->dlog.first,
		       (unsigned long long)sim_log_last(&n->dlog), (unsigned long long)n->d_term,
		       n->d_vote);
	sim_client_node_crashed(s, n);
	/* Some prefix of the queue reached the disk; its last append may be
	 * torn. */
	size_t q = 0;
	for (struct sim_req *r = n->q_head; r != NULL; r = r->next)
		q++;
	size_t k = q ? sim_rand_range(s, 0, q) : 0;
	struct sim_req *r = n->q_head;
	for (size_t i = 0; r != NULL; i++) {
		struct sim_req *next = r->next;
		if (n->store != NULL)
			; /* the real store: queued requests were never written */
		else if (i < k && !s->failed)
			req_apply(s, n, r, UINT32_MAX);
		else if (i == k && r->kind == SIM_REQ_LOG && !s->failed)
			req_apply(s, n, r, (unsigned)sim_rand_range(s, 0, r->n_ents));
		sim_req_free(r);
		r = next;
	}
	n->q_head = n->q_tail = NULL;
	if (n->snap_worker != NULL) {
		sim_req_free(n->snap_worker);
		n->snap_worker = NULL;
	}
	batch_forget(n, n->batch);
	while (n->batch != NULL) { /* written, not synced: the disk decides */
		struct sim_req *next = n->batch->next;
		sim_req_free(n->batch);
		n->batch = next;
	}
	if (n->store != NULL)
		sim_nd_close(s, n, power_loss);
	kvd_writer_track_clear(&n->track);
	sim_late_clear(n);
	sim_http_node_down(s, n); /* its connections reset, its held messages go */
	raft_destroy(n->core);
	n->core = NULL;
	sim_log_free(&n->mlog);
	free(n->incoming);
	n->incoming = NULL;
	n->incoming_len = 0;
	n->up = false;
	n->inc++;
	s->stats.crashes++;
}

void sim_node_restart(struct sim *s, struct sim_node *n)
{
	struct raft_event e = {.type = RAFT_EVENT_START, .now = s->now};
	struct raft_entry *ents = NULL;
	raft_index snap = n->dsnap.meta.index;

	if (s->real_disk) {
		if (n->disk == NULL)
			sim_nd_boot(s, n);
		if (s->failed || !sim_nd_open(s, n))
			return;
	}
	snap = n->dsnap.meta.index; /* recovery may adopt a newer one */
	n->core = raft_create(n->id, &s->opts, sim_rand(s));
	if (n->core == NULL)
		abort();
	n->up = true;
	sim_http_node_up(s, n);
	n->issued_seq = n->done_seq = 0;
	n->ack_index = n->ack_seq = 0;
	n->ack_term = 0;
	n->disk_busy = false;
	n->stall_until = 0;
	n->snap_taking = false;
	n->role = RAFT_FOLLOWER;
	n->term = n->d_term;
	n->commit = 0;
	n->tick_at = 0;
	n->tick_local = 0;
	memset(n->kv, 0, sizeof(n->kv));
	memset(&n->applied_config, 0, sizeof(n->applied_config));
	n->applied = 0;
	if (snap > 0) {
		struct raft_snapshot_meta meta;
		if (!sim_snap_parse(n->dsnap.buf, n->dsnap.len, &meta, n->kv))
			abort(); /* the sim wrote it: a harness bug */
		n->applied = snap;
		n->applied_config = meta.config;
		bool found;
		raft_term t = sim_log_term(&n->dlog, snap, &found);
		if (found && t == n->dsnap.meta.term)
			sim_log_compact(&n->dlog, snap);
		else
			sim_log_reset(&n->dlog, snap, n->dsnap.meta.term);
		if (n->dlog.first - 1 != snap)
			sim_log_reset(&n->dlog, snap, n->dsnap.meta.term);
	}
	n->mlog.first = n->dlog.first;
	n->mlog.prev_term = n->dlog.prev_term;
	for (size_t i = 0; i < n->dlog.n; i++)
		sim_log_push(&n->mlog, n->dlog.e[i]);
	sim_cfg_rebuild(n);
	if (n->dlog.n > 0) {
		ents = malloc(n->dlog.n * sizeof(*ents));
		if (ents == NULL)
			abort();
		for (size_t i = 0; i < n->dlog.n; i++) {
			const struct sim_entry *x = n->dlog.e[i];
			ents[i] = (struct raft_entry){x->index, x->term, x->type, x->data, x->len};
		}
	}
	e.u.start.term = n->d_term;
	e.u.start.voted_for = n->d_vote;
	e.u.start.snapshot = n->dsnap.meta;
	e.u.start.applied_index = n->applied;
	e.u.start.prev_index = n->dlog.first - 1;
	e.u.start.prev_term = n->dlog.prev_term;
	e.u.start.entries = ents;
	e.u.start.n_entries = (unsigned)n->dlog.n;
	if (s->p.trace)
		printf(
		    "%8llu %s starts: term %llu vote \"%s\" snapshot %llu/%llu applied %llu, log "
		    "after %llu/%llu: %zu entries (last term %llu)\n",
		    (unsigned long long)s->now, n->id, (unsigned long long)n->d_term, n->d_vote,
		    (unsigned long long)n->dsnap.meta.index, (unsigned long long)n->dsnap.meta.term,
		    (unsigned long long)n->applied, (unsigned long long)(n->dlog.first - 1),
		    (unsigned long long)n->dlog.prev_term, n->dlog.n,
		    (unsigned long long)(n->dlog.n ? n->dlog.e[n->dlog.n - 1]->term : 0));
	sim_node_step(s, n, &e, NULL, NULL);
	free(ents);
}
