/*
 * raft_fixture.h: a tiny hand-driven cluster for the Raft core's unit tests.
 *
 * Not a simulator: the test decides which messages to deliver and when time
 * passes. The fixture plays each node's driver: it copies outgoing messages
 * into one FIFO network queue (deep copies: entries and data), keeps a
 * per-node "disk" (term, vote and the log as (index, term) pairs), reports
 * PERSISTED right after each append when auto_persist is set, reports
 * APPLIED after each apply when auto_apply is set, fills snapshot chunks
 * from a per-node snapshot byte buffer and records what the core reports
 * (reads, failures, changes, snapshot writes).
 *
 * Header-only (static inline) so each test executable stays one file.
 */
#ifndef KVD_TEST_RAFT_FIXTURE_H
#define KVD_TEST_RAFT_FIXTURE_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft.h"

#define FX_MAX_NODES 6
#define FX_MAX_LOG   4096
#define FX_MAX_MSGS  4096
#define FX_MAX_REC   256

struct fx_msg {
	struct raft_message m;
	struct raft_entry *entries; /* owned copies */
	void *data;		    /* owned snapshot chunk copy */
};

struct fx_node {
	char id[RAFT_ID_SIZE];
	struct raft_core *r;
	bool down;
	bool auto_persist;
	bool auto_apply;
	/* Disk. */
	raft_term term;
	char voted_for[RAFT_ID_SIZE];
	raft_index n_log; /* entries 1..n_log stored as (index, term) */
	raft_term log_term[FX_MAX_LOG];
	raft_index truncated_from; /* last truncate_from seen */
	raft_index disk_prev;	   /* stored log starts after this index */
	raft_term disk_prev_term;
	struct raft_entry disk[FX_MAX_LOG]; /* [i]: entry i, data owned */
	/* State machine. */
	raft_index applied;
	raft_term applied_term[FX_MAX_LOG];
	unsigned apply_count[FX_MAX_LOG];
	/* Reports. */
	uint64_t reads[FX_MAX_REC];
	unsigned n_reads;
	uint64_t reads_failed[FX_MAX_REC];
	unsigned n_reads_failed;
	struct raft_change_done changes[FX_MAX_REC];
	unsigned n_changes;
	/* Snapshot: the local one and the one being received. */
	struct raft_snapshot_meta snap;
	unsigned char snap_bytes[4096];
	unsigned char rx_bytes[4096];
	uint64_t rx_len;
	bool rx_done;
	unsigned n_snapshot_writes;
	/* Shallow copy of the last update the test caused (not the automatic
	 * PERSISTED/APPLIED steps); pointers valid only if none ran. */
	struct raft_update last;
	int last_rv;
};

struct fx {
	struct fx_node n[FX_MAX_NODES];
	unsigned count;
	raft_time now;
	struct fx_msg *q;
	unsigned n_q;
	bool cut[FX_MAX_NODES][FX_MAX_NODES]; /* cut[a][b]: a's messages to b dropped */
	struct raft_options o;
};

static inline int fx_index(const struct fx *f, const char *id)
{
	for (unsigned i = 0; i < f->count; i++) {
		if (strcmp(f->n[i].id, id) == 0)
			return (int)i;
	}
	return -1;
}

static inline void fx_msg_free(struct fx_msg *m)
{
	if (m->entries != NULL) {
		for (unsigned i = 0; i < m->m.u.append.n_entries; i++)
			free((void *)m->entries[i].data);
	}
	free(m->entries);
	free(m->data);
}

static inline int fx_step(struct fx *f, unsigned i, struct raft_event *e);

static inline void fx_queue(struct fx *f, unsigned from, const struct raft_message *m)
{
	struct fx_msg *c;
	int to = fx_index(f, m->to);

	ck_assert_int_ge(to, 0);
	if (f->cut[from][to])
		return;
	ck_assert_uint_lt(f->n_q, FX_MAX_MSGS);
	c = &f->q[f->n_q++];
	memset(c, 0, sizeof(*c));
	c->m = *m;
	if (m->type == RAFT_MSG_APPEND && m->u.append.n_entries > 0) {
		c->entries = calloc(m->u.append.n_entries, sizeof(*c->entries));
		for (unsigned k = 0; k < m->u.append.n_entries; k++) {
			c->entries[k] = m->u.append.entries[k];
			if (c->entries[k].len > 0) {
				void *d = malloc(c->entries[k].len);
				memcpy(d, m->u.append.entries[k].data, c->entries[k].len);
				c->entries[k].data = d;
			} else {
				c->entries[k].data = NULL;
			}
		}
		c->m.u.append.entries = c->entries;
	}
	if (m->type == RAFT_MSG_SNAPSHOT) {
		/* The driver fills the chunk from its snapshot file. */
		const struct fx_node *n = &f->n[from];
		ck_assert_uint_eq(m->u.snapshot.last_index, n->snap.index);
		ck_assert(m->u.snapshot.data == NULL);
		ck_assert_uint_le(m->u.snapshot.offset + m->u.snapshot.len, n->snap.size);
		c->data = malloc(m->u.snapshot.len + 1);
		memcpy(c->data, n->snap_bytes + m->u.snapshot.offset, m->u.snapshot.len);
		c->m.u.snapshot.data = c->data;
	}
}

static inline void fx_handle(struct fx *f, unsigned i, struct raft_update *u)
{
	struct fx_node *n = &f->n[i];

	n->last = *u;
	if (u->meta_changed) {
		ck_assert_uint_ge(u->term, n->term); /* terms never go back */
		n->term = u->term;
		strcpy(n->voted_for, u->voted_for);
	}
	if (u->truncate_from != 0) {
		ck_assert_uint_le(u->truncate_from, n->n_log);
		ck_assert_uint_gt(u->truncate_from, n->disk_prev);
		n->n_log = u->truncate_from - 1;
		n->truncated_from = u->truncate_from;
	}
	for (unsigned k = 0; k < u->n_entries; k++) {
		struct raft_entry *d;
		ck_assert_uint_eq(u->entries[k].index, n->n_log + 1);
		ck_assert_uint_lt(n->n_log + 1, FX_MAX_LOG);
		n->log_term[++n->n_log] = u->entries[k].term;
		d = &n->disk[n->n_log];
		free((void *)d->data);
		*d = u->entries[k];
		d->data = NULL;
		if (d->len > 0) {
			void *c = malloc(d->len);
			memcpy(c, u->entries[k].data, d->len);
			d->data = c;
		}
	}
	if (u->snapshot_write != NULL) {
		const struct raft_snapshot *s = u->snapshot_write;
		if (s->offset == 0)
			n->rx_len = 0;
		ck_assert_uint_eq(s->offset, n->rx_len);
		memcpy(n->rx_bytes + s->offset, s->data, s->len);
		n->rx_len += s->len;
		n->rx_done = s->done;
		n->n_snapshot_writes++;
	}
	for (unsigned k = 0; k < u->n_messages; k++)
		fx_queue(f, i, &u->messages[k]);
	for (unsigned k = 0; k < u->n_apply; k++) {
		const struct raft_entry *e = &u->apply[k];
		ck_assert_uint_eq(e->index, n->applied + 1); /* in order, once */
		n->applied = e->index;
		n->applied_term[e->index] = e->term;
		n->apply_count[e->index]++;
	}
	for (unsigned k = 0; k < u->n_reads; k++)
		n->reads[n->n_reads++] = u->reads[k].token;
	for (unsigned k = 0; k < u->n_reads_failed; k++)
		n->reads_failed[n->n_reads_failed++] = u->reads_failed[k].token;
	for (unsigned k = 0; k < u->n_changes_done; k++)
		n->changes[n->n_changes++] = u->changes_done[k];
	if (n->auto_persist && u->n_entries > 0) {
		struct raft_event e = {.type = RAFT_EVENT_PERSISTED, .now = f->now};
		e.u.persisted.index = u->entries[u->n_entries - 1].index;
		e.u.persisted.term = u->entries[u->n_entries - 1].term;
		fx_step(f, i, &e);
	}
	if (n->auto_apply && u->n_apply > 0) {
		struct raft_event e = {.type = RAFT_EVENT_APPLIED, .now = f->now};
		e.u.applied.index = n->applied;
		fx_step(f, i, &e);
	}
	/* The outer update's scalars stay visible to the test; its pointers
	 * are valid only if no automatic step ran above. */
	n->last = *u;
}

static inline int fx_step(struct fx *f, unsigned i, struct raft_event *e)
{
	struct raft_update u;
	int rv;

	e->now = f->now;
	rv = raft_step(f->n[i].r, e, &u);
	f->n[i].last_rv = rv;
	fx_handle(f, i, &u);
	return rv;
}

/* Creates count nodes n1..n<count>; the first voters are voters of the
 * bootstrap configuration, the others start with an empty log (joining). */
static inline void fx_init_opts(struct fx *f, unsigned count, unsigned voters,
				const struct raft_options *o)
{
	struct raft_config c;
	struct raft_entry boot;
	void *buf;

	memset(f, 0, sizeof(*f));
	f->q = calloc(FX_MAX_MSGS, sizeof(*f->q));
	f->count = count;
	f->now = 1000;
	if (o != NULL)
		f->o = *o;
	else
		raft_options_default(&f->o);
	memset(&c, 0, sizeof(c));
	for (unsigned i = 0; i < count; i++)
		snprintf(f->n[i].id, RAFT_ID_SIZE, "n%u", i + 1);
	for (unsigned i = 0; i < voters; i++)
		ck_assert_int_eq(raft_config_add(&c, f->n[i].id, RAFT_VOTER), 0);
	ck_assert_int_eq(raft_bootstrap_entry(&c, &boot, &buf), 0);
	for (unsigned i = 0; i < count; i++) {
		struct fx_node *n = &f->n[i];
		struct raft_event e = {.type = RAFT_EVENT_START};
		n->r = raft_create(n->id, &f->o, 42 + i * 7919);
		ck_assert_ptr_nonnull(n->r);
		n->auto_persist = true;
		n->auto_apply = true;
		if (i < voters) {
			e.u.start.entries = &boot;
			e.u.start.n_entries = 1;
			n->n_log = 1;
			n->log_term[1] = 1;
			n->disk[1] = boot;
			n->disk[1].data = malloc(boot.len);
			memcpy((void *)n->disk[1].data, boot.data, boot.len);
		}
		ck_assert_int_eq(fx_step(f, i, &e), 0);
	}
	free(buf);
}

static inline void fx_init(struct fx *f, unsigned count, unsigned voters)
{
	fx_init_opts(f, count, voters, NULL);
}

static inline void fx_close(struct fx *f)
{
	for (unsigned i = 0; i < f->n_q; i++)
		fx_msg_free(&f->q[i]);
	free(f->q);
	for (unsigned i = 0; i < f->count; i++) {
		raft_destroy(f->n[i].r);
		for (unsigned k = 0; k < FX_MAX_LOG; k++)
			free((void *)f->n[i].disk[k].data);
	}
}

/* Delivers (or, if drop, discards) queued message k. */
static inline void fx_deliver_at(struct fx *f, unsigned k, bool drop)
{
	struct fx_msg m;
	int to;

	m = f->q[k];
	memmove(f->q + k, f->q + k + 1, (f->n_q - k - 1) * sizeof(*f->q));
	f->n_q--;
	to = fx_index(f, m.m.to);
	if (!drop && !f->n[to].down) {
		struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
		e.u.receive = m.m;
		fx_step(f, (unsigned)to, &e);
	}
	fx_msg_free(&m);
}

/* Delivers the first queued message; returns false if the queue is empty. */
static inline bool fx_deliver_one(struct fx *f)
{
	struct fx_msg m;
	int to;

	if (f->n_q == 0)
		return false;
	m = f->q[0];
	memmove(f->q, f->q + 1, (f->n_q - 1) * sizeof(*f->q));
	f->n_q--;
	to = fx_index(f, m.m.to);
	if (!f->n[to].down) {
		struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
		e.u.receive = m.m;
		fx_step(f, (unsigned)to, &e);
	}
	fx_msg_free(&m);
	return true;
}

/* Delivers until the network is quiet (bounded). */
static inline void fx_deliver_all(struct fx *f)
{
	for (unsigned k = 0; k < 100000 && fx_deliver_one(f); k++)
		;
}

static inline void fx_drop_all(struct fx *f)
{
	for (unsigned i = 0; i < f->n_q; i++)
		fx_msg_free(&f->q[i]);
	f->n_q = 0;
}

/* Number of queued messages of a type (any type if 0) to node id (any if
 * NULL). */
static inline unsigned fx_count(const struct fx *f, enum raft_msg_type type, const char *to)
{
	unsigned c = 0;

	for (unsigned i = 0; i < f->n_q; i++) {
		if ((type == 0 || f->q[i].m.type == type) &&
		    (to == NULL || strcmp(f->q[i].m.to, to) == 0))
			c++;
	}
	return c;
}

static inline void fx_tick(struct fx *f, unsigned i)
{
	struct raft_event e = {.type = RAFT_EVENT_TICK};

	if (!f->n[i].down)
		fx_step(f, i, &e);
}

/* Advances time by ms in 10 ms steps, ticking every node and delivering all
 * messages after each step. */
static inline void fx_run(struct fx *f, raft_time ms)
{
	for (raft_time t = 0; t < ms; t += 10) {
		f->now += 10;
		for (unsigned i = 0; i < f->count; i++)
			fx_tick(f, i);
		fx_deliver_all(f);
	}
}

/* The leader with the highest term, or -1. */
static inline int fx_leader(const struct fx *f)
{
	int best = -1;

	for (unsigned i = 0; i < f->count; i++) {
		if (f->n[i].down || raft_role(f->n[i].r) != RAFT_LEADER)
			continue;
		if (best < 0 || raft_current_term(f->n[i].r) > raft_current_term(f->n[best].r))
			best = (int)i;
	}
	return best;
}

static inline void fx_partition(struct fx *f, unsigned a, bool cut)
{
	for (unsigned b = 0; b < f->count; b++) {
		if (b == a)
			continue;
		f->cut[a][b] = cut;
		f->cut[b][a] = cut;
	}
}

static inline int fx_propose(struct fx *f, unsigned i, const char *data)
{
	struct raft_entry en = {.type = RAFT_ENTRY_COMMAND, .data = data, .len = strlen(data)};
	struct raft_event e = {.type = RAFT_EVENT_PROPOSE};

	e.u.propose.entries = &en;
	e.u.propose.n = 1;
	return fx_step(f, i, &e);
}

/* Runs the usual election: n1 times out first. Returns the leader. */
static inline int fx_elect_first(struct fx *f)
{
	f->now += f->o.election_timeout_max;
	fx_tick(f, 0);
	fx_deliver_all(f);
	return fx_leader(f);
}

/* Plays the driver taking a local snapshot of node i at index (which must be
 * applied): fills the snapshot "file" with a recognizable pattern. */
static inline int fx_take_snapshot(struct fx *f, unsigned i, raft_index index, uint64_t size)
{
	struct fx_node *n = &f->n[i];
	struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_TAKEN};

	ck_assert_uint_le(size, sizeof(n->snap_bytes));
	ck_assert_uint_le(index, n->applied);
	for (uint64_t k = 0; k < size; k++)
		n->snap_bytes[k] = (unsigned char)((index + k) % 251);
	n->snap.index = index;
	n->snap.term = n->log_term[index];
	/* The configuration as of index: the last CONFIG entry at or before
	 * it on disk, else the one of the previous snapshot. */
	n->snap.config = f->n[i].snap.config;
	for (raft_index k = index; k > n->disk_prev; k--) {
		if (n->disk[k].type == RAFT_ENTRY_CONFIG) {
			ck_assert_int_eq(
			    raft_config_decode(n->disk[k].data, n->disk[k].len, &n->snap.config),
			    0);
			break;
		}
	}
	n->snap.size = size;
	e.u.snapshot = n->snap;
	return fx_step(f, i, &e);
}

/* Plays the receiving driver after the last chunk: builds the state machine
 * from the received bytes (here: adopts the sender's meta) and reports it. */
static inline int fx_install(struct fx *f, unsigned i, const struct raft_snapshot_meta *meta)
{
	struct fx_node *n = &f->n[i];
	struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_INSTALLED};

	ck_assert(n->rx_done);
	ck_assert_uint_eq(n->rx_len, meta->size);
	n->applied = meta->index;
	n->n_log = meta->index; /* the stored log restarts after the snapshot */
	n->disk_prev = meta->index;
	n->disk_prev_term = meta->term;
	n->snap = *meta;
	n->log_term[meta->index] = meta->term;
	n->rx_done = false;
	e.u.snapshot = *meta;
	return fx_step(f, i, &e);
}

/* Plays a crash and restart of node i: a new core started from the disk
 * (term, vote, snapshot, applied index, stored log). Queued messages to it
 * stay queued (they may arrive after the restart, as on a real network). */
static inline void fx_restart(struct fx *f, unsigned i, uint64_t seed)
{
	struct fx_node *n = &f->n[i];
	struct raft_event e = {.type = RAFT_EVENT_START};

	raft_destroy(n->r);
	n->r = raft_create(n->id, &f->o, seed);
	ck_assert_ptr_nonnull(n->r);
	e.u.start.term = n->term;
	e.u.start.voted_for = n->voted_for;
	e.u.start.snapshot = n->snap;
	e.u.start.applied_index = n->applied;
	e.u.start.prev_index = n->disk_prev;
	e.u.start.prev_term = n->disk_prev_term;
	e.u.start.entries = &n->disk[n->disk_prev + 1];
	e.u.start.n_entries = (unsigned)(n->n_log - n->disk_prev);
	n->rx_done = false;
	ck_assert_int_eq(fx_step(f, i, &e), 0);
}

#endif
