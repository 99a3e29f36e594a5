/*
 * raft.c: the Raft core's entry point, raft_step(), and the update it builds.
 *
 * One event in, one update out. This file dispatches events to the parts of
 * the algorithm (election.c, progress.c, replication.c, read.c,
 * membership.c, transfer.c, snapshot.c), runs the leader's follow-up work after every event
 * (commit, pending changes, transfer, reads), and then turns the step's
 * accumulated state into the driver-facing struct raft_update.
 *
 * Invariants kept here (always-on checks, not asserts): the term and the
 * commit index never go backwards; entries are handed out for apply once,
 * in order, never past min(commit, persisted) (a server applies only what is
 * committed, §5.3, and durable locally). After RAFT_EVENT_IO_FAILED the core
 * emits nothing more and refuses every event with KVD_ESHUTDOWN.
 *
 * No system call, no clock, no I/O: time comes in with events, randomness
 * from a splitmix64 generator seeded at create.
 */
#include "raft/core.h"
#include "raft/plant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void raft_options_default(struct raft_options *o)
{
	memset(o, 0, sizeof(*o));
	o->election_timeout_min = 500;
	o->election_timeout_max = 1000;
	o->heartbeat_interval = 100;
	o->max_inflight_msgs = 32;
	o->max_msg_bytes = 1024 * 1024;
	o->max_inflight_bytes = 8 * 1024 * 1024;
	o->snapshot_chunk_bytes = 1024 * 1024;
	o->snapshot_timeout = 5000;
	o->snapshot_trailing = 1024;
	o->pre_vote = true;
	o->check_quorum = true;
}

struct raft_core *raft_create(const char *id, const struct raft_options *o, uint64_t seed)
{
	struct raft_core *r;

	if (id == NULL || strlen(id) == 0 || strlen(id) >= RAFT_ID_SIZE)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	strcpy(r->id, id);
	if (o != NULL)
		r->o = *o;
	else
		raft_options_default(&r->o);
	if (r->o.election_timeout_max <= r->o.election_timeout_min)
		r->o.election_timeout_max = r->o.election_timeout_min + 1;
	if (r->o.max_inflight_msgs == 0)
		r->o.max_inflight_msgs = 1;
	if (r->o.max_msg_bytes == 0)
		r->o.max_msg_bytes = 1;
	if (r->o.snapshot_chunk_bytes == 0)
		r->o.snapshot_chunk_bytes = 1024 * 1024;
	/* Mix the id in so that servers given the same seed (a careless
	 * driver, a test) still draw different election timeouts. */
	r->prng = seed;
	for (const char *c = id; *c != '\0'; c++)
		r->prng = (r->prng ^ (unsigned char)*c) * 0x100000001b3ULL;
	r->role = RAFT_FOLLOWER;
	raft_log_init(&r->log);
	return r;
}

void raft_destroy(struct raft_core *r)
{
	if (r == NULL)
		return;
	raft_progress_free_all(r);
	raft_log_close(&r->log);
	free(r->reads);
	free(r->msgs);
	free(r->out_msgs);
	free(r->rd);
	free(r->rf);
	free(r->cd);
	free(r->rx_buf);
	free(r);
}

/* splitmix64 (Steele, Lea, Flood 2014). */
uint64_t raft_core_random(struct raft_core *r)
{
	uint64_t z = (r->prng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Grows *arr (element size sz) to hold n + 1 elements. Returns 0 or
 * KVD_ENOMEM. */
static int grow(void **arr, unsigned *cap, unsigned n, size_t sz)
{
	unsigned ncap;
	void *p;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 16;
	p = realloc(*arr, ncap * sz);
	if (p == NULL)
		return KVD_ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

struct raft_message *raft_core_msg(struct raft_core *r, enum raft_msg_type type, const char *to,
				   raft_index first_entry)
{
	static struct raft_message sink; /* target of writes when out of memory */
	struct raft_msg_slot *s;

	if (grow((void **)&r->msgs, &r->cap_msgs, r->n_msgs, sizeof(*r->msgs)) != 0) {
		r->nomem = KVD_ENOMEM;
		memset(&sink, 0, sizeof(sink));
		return &sink;
	}
	s = &r->msgs[r->n_msgs++];
	memset(s, 0, sizeof(*s));
	s->first = first_entry;
	s->m.type = type;
	strcpy(s->m.from, r->id);
	snprintf(s->m.to, sizeof(s->m.to), "%s", to);
	s->m.term = r->term;
	s->m.needs_sync = type == RAFT_MSG_REQUEST_VOTE || type == RAFT_MSG_REQUEST_VOTE_RESULT ||
			  type == RAFT_MSG_APPEND_RESULT || type == RAFT_MSG_SNAPSHOT_RESULT;
	return &s->m;
}

void raft_core_meta_set(struct raft_core *r, raft_term term, const char *voted_for)
{
	if (term < r->term) /* safety: terms never go backwards (§5.1) */
		return;
	r->term = term;
	snprintf(r->voted_for, sizeof(r->voted_for), "%s", voted_for ? voted_for : "");
	r->u_meta = true;
}

void raft_core_note(struct raft_core *r, enum raft_note_kind kind, const char *peer, raft_term term,
		    raft_index index, const char *reason)
{
	struct raft_note *n;

	if (r->n_notes >= RAFT_MAX_NOTES)
		return;
	n = &r->notes[r->n_notes++];
	n->kind = kind;
	snprintf(n->peer, sizeof(n->peer), "%s", peer ? peer : "");
	n->term = term;
	n->index = index;
	n->reason = reason ? reason : "";
}

bool raft_core_is_voter(const struct raft_core *r, const char *id)
{
	return raft_config_is_voter(&r->config, id);
}

/* Recomputes the configuration: the latest CONFIG entry in the log, else the
 * one at the compaction point (§4.1: a server uses the latest configuration
 * in its log, committed or not). */
void raft_core_config_refresh(struct raft_core *r)
{
	raft_index i;

	for (i = raft_log_last_index(&r->log); i > r->log.offset; i--) {
		const struct raft_entry *e = raft_log_get(&r->log, i);
		struct raft_config c;
		if (e->type != RAFT_ENTRY_CONFIG)
			continue;
		if (raft_config_decode(e->data, e->len, &c) != 0)
			continue; /* validated on receipt; an old bad entry is skipped */
		r->config = c;
		r->config_index = i;
		break;
	}
	if (i == r->log.offset) {
		r->config = r->snap_config;
		r->config_index = 0;
	}
	if (r->role == RAFT_LEADER)
		raft_progress_sync(r);
}

int raft_core_append(struct raft_core *r, enum raft_entry_type type, const void *data, size_t len)
{
	struct raft_entry e;
	int rv;

	e.index = raft_log_last_index(&r->log) + 1;
	e.term = r->term;
	e.type = type;
	e.data = data;
	e.len = len;
	rv = raft_log_append(&r->log, &e);
	if (rv != 0) {
		r->nomem = rv;
		return rv;
	}
	if (r->u_append_from == 0)
		r->u_append_from = e.index;
	if (type == RAFT_ENTRY_CONFIG)
		raft_core_config_refresh(r);
	return 0;
}

void raft_core_read_ready(struct raft_core *r, uint64_t token, raft_index index)
{
	if (grow((void **)&r->rd, &r->cap_rd, r->n_rd, sizeof(*r->rd)) != 0) {
		r->nomem = KVD_ENOMEM;
		return;
	}
	r->rd[r->n_rd].token = token;
	r->rd[r->n_rd].index = index;
	r->n_rd++;
}

void raft_core_read_failed(struct raft_core *r, uint64_t token, int error)
{
	if (grow((void **)&r->rf, &r->cap_rf, r->n_rf, sizeof(*r->rf)) != 0) {
		r->nomem = KVD_ENOMEM;
		return;
	}
	r->rf[r->n_rf].token = token;
	r->rf[r->n_rf].error = error;
	r->n_rf++;
}

void raft_core_change_done(struct raft_core *r, uint64_t token, int error)
{
	if (grow((void **)&r->cd, &r->cap_cd, r->n_cd, sizeof(*r->cd)) != 0) {
		r->nomem = KVD_ENOMEM;
		return;
	}
	r->cd[r->n_cd].token = token;
	r->cd[r->n_cd].error = error;
	r->n_cd++;
}

static int on_start(struct raft_core *r, const struct raft_event *e)
{
	const struct raft_snapshot_meta *s = &e->u.start.snapshot;

	if (r->started)
		return KVD_EINVAL;
	if (e->u.start.applied_index < e->u.start.prev_index)
		return KVD_EINVAL; /* the state machine must be able to replay the log */
	raft_log_reset(&r->log, e->u.start.prev_index, e->u.start.prev_term);
	for (unsigned i = 0; i < e->u.start.n_entries; i++) {
		const struct raft_entry *en = &e->u.start.entries[i];
		if (en->index != raft_log_last_index(&r->log) + 1 ||
		    en->term < raft_log_last_term(&r->log)) {
			raft_log_reset(&r->log, 0, 0);
			return KVD_EINVAL;
		}
		if (raft_log_append(&r->log, en) != 0) {
			raft_log_reset(&r->log, 0, 0);
			return KVD_ENOMEM;
		}
	}
	r->term = e->u.start.term;
	snprintf(r->voted_for, sizeof(r->voted_for), "%s",
		 e->u.start.voted_for ? e->u.start.voted_for : "");
	/* A bootstrapped log (entry 1 at term 1) with no term stored yet:
	 * the term is at least the last entry's (§5.1). */
	if (r->term < raft_log_last_term(&r->log))
		raft_core_meta_set(r, raft_log_last_term(&r->log), "");
	r->snap = *s;
	if (s->index > 0)
		r->snap_config = s->config;
	r->applied = e->u.start.applied_index;
	r->commit = r->applied;
	r->apply_next = r->applied + 1;
	r->persisted = raft_log_last_index(&r->log);
	if (s->index > r->o.snapshot_trailing && s->index <= r->applied &&
	    s->index <= raft_log_last_index(&r->log) &&
	    raft_log_term_at(&r->log, s->index) == s->term) {
		raft_index cut = s->index - r->o.snapshot_trailing;
		if (cut > r->log.offset)
			raft_log_compact(&r->log, cut);
	}
	r->role = RAFT_FOLLOWER;
	r->started = true;
	raft_core_config_refresh(r);
	raft_election_reset_timer(r);
	/* A sole voter needs nobody's vote: lead at once. */
	if (raft_core_is_voter(r, r->id) && r->config.n_old == 0) {
		unsigned voters = 0;
		for (unsigned i = 0; i < r->config.n; i++)
			voters += r->config.servers[i].role == RAFT_VOTER;
		if (voters == 1)
			raft_election_campaign(r, false, false);
	}
	return 0;
}

static void on_persisted(struct raft_core *r, raft_index index, raft_term term)
{
	/* Stale if the entry at index has since been replaced (a completion
	 * carries the term it was written with). */
	if (index > raft_log_last_index(&r->log) || raft_log_term_at(&r->log, index) != term)
		return;
	if (index > r->persisted)
		r->persisted = index;
}

static int on_propose(struct raft_core *r, const struct raft_event *e)
{
	raft_index first = raft_log_last_index(&r->log) + 1;

	if (r->role != RAFT_LEADER)
		return KVD_ENOTLEADER;
	if (r->transfer_to[0] != '\0')
		return KVD_EBUSY;
	if (e->u.propose.n == 0 || e->u.propose.entries == NULL)
		return KVD_EINVAL;
	for (unsigned i = 0; i < e->u.propose.n; i++) {
		enum raft_entry_type t = e->u.propose.entries[i].type;
		if (t != RAFT_ENTRY_COMMAND && t != RAFT_ENTRY_NOOP)
			return KVD_EINVAL;
	}
	for (unsigned i = 0; i < e->u.propose.n; i++) {
		const struct raft_entry *p = &e->u.propose.entries[i];
		int rv = raft_core_append(r, p->type, p->data, p->len);
		if (rv != 0)
			return rv;
	}
	r->u->proposed_index = first;
	r->u->proposed_term = r->term;
	raft_replication_flush(r);
	return 0;
}

static void on_io_failed(struct raft_core *r)
{
	if (r->role != RAFT_FOLLOWER)
		raft_core_note(r, RAFT_NOTE_STEPPED_DOWN, "", r->term, 0, "i/o failed");
	raft_read_fail_all(r, KVD_ESHUTDOWN);
	raft_membership_abort(r, KVD_ESHUTDOWN);
	r->n_msgs = 0;
	r->role = RAFT_FOLLOWER;
	r->leader[0] = '\0';
	r->shutdown = true;
}

static int on_receive(struct raft_core *r, const struct raft_message *m)
{
	/* Ids come off the network: check termination before comparing. */
	if (memchr(m->from, '\0', RAFT_ID_SIZE) == NULL ||
	    memchr(m->to, '\0', RAFT_ID_SIZE) == NULL || m->from[0] == '\0' ||
	    strcmp(m->to, r->id) != 0 || strcmp(m->from, r->id) == 0)
		return KVD_EINVAL;
	switch (m->type) {
	case RAFT_MSG_REQUEST_VOTE: raft_election_recv_vote(r, m); break;
	case RAFT_MSG_REQUEST_VOTE_RESULT: raft_election_recv_vote_result(r, m); break;
	case RAFT_MSG_APPEND: raft_replication_recv_append(r, m); break;
	case RAFT_MSG_APPEND_RESULT: raft_replication_recv_result(r, m); break;
	case RAFT_MSG_SNAPSHOT: raft_snapshot_recv(r, m); break;
	case RAFT_MSG_SNAPSHOT_RESULT: raft_snapshot_recv_result(r, m); break;
	case RAFT_MSG_TIMEOUT_NOW: raft_transfer_recv_timeout_now(r, m); break;
	default: return KVD_EINVAL;
	}
	return 0;
}

static int dispatch(struct raft_core *r, const struct raft_event *e)
{
	switch (e->type) {
	case RAFT_EVENT_START: return on_start(r, e);
	case RAFT_EVENT_TICK:
		if (r->role == RAFT_LEADER) {
			raft_replication_tick(r);
			raft_snapshot_tick(r);
		} else {
			raft_election_tick(r);
		}
		return 0;
	case RAFT_EVENT_RECEIVE: return on_receive(r, &e->u.receive);
	case RAFT_EVENT_PERSISTED:
		on_persisted(r, e->u.persisted.index, e->u.persisted.term);
		return 0;
	case RAFT_EVENT_SNAPSHOT_TAKEN: raft_snapshot_taken(r, &e->u.snapshot); return 0;
	case RAFT_EVENT_SNAPSHOT_INSTALLED: raft_snapshot_installed(r, &e->u.snapshot); return 0;
	case RAFT_EVENT_SNAPSHOT_FAILED: raft_snapshot_failed(r); return 0;
	case RAFT_EVENT_APPLIED:
		if (e->u.applied.index > r->applied && e->u.applied.index < r->apply_next)
			r->applied = e->u.applied.index;
		return 0;
	case RAFT_EVENT_PROPOSE: return on_propose(r, e);
	case RAFT_EVENT_READ: return raft_read_request(r, e->u.read.token);
	case RAFT_EVENT_CHANGE: return raft_membership_change(r, e);
	case RAFT_EVENT_TRANSFER: return raft_transfer_start(r, e->u.transfer.to);
	case RAFT_EVENT_UNREACHABLE:
		if (r->role == RAFT_LEADER && e->u.unreachable.id != NULL) {
			struct raft_progress *p = raft_progress_find(r, e->u.unreachable.id);
			/* A stream ends only with the chunk sent last: an
			 * older copy's loss (a resend, or a stream restarted
			 * since) says nothing of the one outstanding. */
			bool chunk = e->u.unreachable.snapshot &&
				     (e->u.unreachable.token == 0 ||
				      (p != NULL && e->u.unreachable.token == p->snap_serial));
			if (p != NULL && p->state != RAFT_PROGRESS_PROBE &&
			    (p->state != RAFT_PROGRESS_SNAPSHOT || chunk ||
			     RAFT_PLANTED(unreachable_restart)))
				raft_progress_become_probe(p);
		}
		return 0;
	case RAFT_EVENT_IO_FAILED: on_io_failed(r); return 0;
	}
	return KVD_EINVAL;
}

/* Entries committed and durable locally, not yet handed out (§5.3). */
static void fill_apply(struct raft_core *r, struct raft_update *u)
{
	raft_index target = r->commit < r->persisted ? r->commit : r->persisted;

	if (target > raft_log_last_index(&r->log))
		target = raft_log_last_index(&r->log);
	if (r->apply_next <= r->log.offset || r->apply_next > target)
		return;
	u->apply = raft_log_get(&r->log, r->apply_next);
	u->n_apply = (unsigned)(target - r->apply_next + 1);
	r->apply_next = target + 1;
}

static void fill_messages(struct raft_core *r, struct raft_update *u)
{
	if (r->n_msgs > r->cap_out) {
		struct raft_message *p = realloc(r->out_msgs, r->n_msgs * sizeof(*p));
		if (p == NULL) {
			r->nomem = KVD_ENOMEM;
			return; /* messages are dropped; Raft retries */
		}
		r->out_msgs = p;
		r->cap_out = r->n_msgs;
	}
	for (unsigned i = 0; i < r->n_msgs; i++) {
		struct raft_message *m = &r->out_msgs[i];
		*m = r->msgs[i].m;
		if (m->type == RAFT_MSG_APPEND && m->u.append.n_entries > 0)
			m->u.append.entries = raft_log_get(&r->log, r->msgs[i].first);
		/* Anything sent in an update that changes term or vote waits
		 * for that change to be durable. */
		if (r->u_meta)
			m->needs_sync = true;
	}
	u->messages = r->out_msgs;
	u->n_messages = r->n_msgs;
}

static void finish(struct raft_core *r, struct raft_update *u, enum raft_role role0,
		   raft_term term0, const char *leader0)
{
	u->meta_changed = r->u_meta;
	u->term = r->term;
	strcpy(u->voted_for, r->voted_for);
	if (r->u_append_from != 0 && r->u_append_from <= raft_log_last_index(&r->log)) {
		u->entries = raft_log_get(&r->log, r->u_append_from);
		u->n_entries = (unsigned)(raft_log_last_index(&r->log) - r->u_append_from + 1);
	}
	fill_apply(r, u);
	fill_messages(r, u);
	u->reads = r->rd;
	u->n_reads = r->n_rd;
	u->reads_failed = r->rf;
	u->n_reads_failed = r->n_rf;
	u->changes_done = r->cd;
	u->n_changes_done = r->n_cd;
	u->notes = r->notes;
	u->n_notes = r->n_notes;
	u->role = r->role;
	u->current_term = r->term;
	strcpy(u->leader, r->leader);
	u->commit_index = r->commit;
	u->state_changed = role0 != r->role || term0 != r->term || strcmp(leader0, r->leader) != 0;
	if (r->shutdown)
		u->deadline = r->now + 3600 * 1000;
	else if (r->role == RAFT_LEADER)
		u->deadline = r->heartbeat_deadline;
	else
		u->deadline = r->election_deadline;
}

int raft_step(struct raft_core *r, const struct raft_event *e, struct raft_update *u)
{
	enum raft_role role0 = r->role;
	raft_term term0 = r->term;
	char leader0[RAFT_ID_SIZE];
	int rv;

	memset(u, 0, sizeof(*u));
	strcpy(leader0, r->leader);
	r->u = u;
	r->u_append_from = 0;
	r->u_meta = false;
	r->n_msgs = r->n_rd = r->n_rf = r->n_cd = r->n_notes = 0;
	r->nomem = 0;
	if (r->shutdown) {
		rv = KVD_ESHUTDOWN;
		goto out;
	}
	if (e == NULL) {
		rv = KVD_EINVAL;
		goto out;
	}
	if (!r->started && e->type != RAFT_EVENT_START) {
		rv = KVD_EINVAL;
		goto out;
	}
	if (e->now > r->now)
		r->now = e->now;
	rv = dispatch(r, e);
	if (!r->shutdown && r->role == RAFT_LEADER) {
		raft_replication_maybe_commit(r);
		raft_membership_advance(r);
		raft_transfer_advance(r);
	}
	if (!r->shutdown)
		raft_read_advance(r);
	if (rv == 0 && r->nomem != 0)
		rv = r->nomem;
out:
	finish(r, u, role0, term0, leader0);
	return rv;
}

enum raft_role raft_role(const struct raft_core *r)
{
	return r->role;
}

raft_term raft_current_term(const struct raft_core *r)
{
	return r->term;
}

const char *raft_voted_for(const struct raft_core *r)
{
	return r->voted_for;
}

const char *raft_leader(const struct raft_core *r)
{
	return r->leader;
}

raft_index raft_commit_index(const struct raft_core *r)
{
	return r->commit;
}

raft_index raft_last_index(const struct raft_core *r)
{
	return raft_log_last_index(&r->log);
}

const struct raft_config *raft_configuration(const struct raft_core *r)
{
	return &r->config;
}

void raft_stats_get(const struct raft_core *r, struct raft_stats *out)
{
	*out = r->stats;
}
