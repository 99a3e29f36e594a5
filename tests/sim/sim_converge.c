/*
 * sim_converge.c: the convergence invariant (issue 7) and the faults aimed
 * at snapshot catch-up and learner promotion.
 *
 * Convergence: once the healed cluster is live (a leader applied the
 * liveness probe), let C be the highest index any node has reported
 * committed. Clients then only read, so the log stops growing. Within
 * SIM_CONVERGE_MS + 2 slow installs of virtual time every running member of
 * the leader's configuration must hold the committed entry at C (or a
 * snapshot covering it) and have applied up to C, through snapshots where
 * needed. Nothing is lost or stalled after the heal, so this takes a few
 * round trips, a stream and an install or two; anything waiting for
 * snapshot_timeout (1 or 5 s) misses it. Snapshot streams after the heal
 * are counted per follower: at most SIM_CONVERGE_MAX_STREAMS (restarts
 * while it installs, and streams started while it is down, not counted), and at most
 * SIM_CONVERGE_MAX_REDUNDANT of a snapshot it already holds (one may cross its answer).
 *
 * Checked all along:
 *  - promotion: a server a leader makes a voter holds the leader's log but
 *    for at most 2 x RAFT_CATCHUP_GAP (16) entries (membership.c waits for
 *    catch-up);
 *  - busy answers: while a follower installs a stream from leader L in term
 *    T, no other leader of term T or later starts a stream to it of a
 *    snapshot no newer than that one (a deposed leader of an earlier term
 *    may act on a refusal sent before the install). Such a leader starts with next = its last index
 * + 1 and hears only "busy" until the install ends, so only a leader walking next back on busy
 * answers gets there (a newer snapshot may be legitimately needed after it compacts its log).
 *
 * Faults (their own generator, so that the main stream of choices, and
 * thus each older seed's schedule up to the first of them, is unchanged):
 *  - slow installs: in half the seeds the driver reports SNAPSHOT_INSTALLED
 *    300-2000 ms after the stream is durable (loading a big state machine),
 *    while term and vote writes and AppendEntries go on; in 30% of them the
 *    stream's sender is isolated at once (event SIM_EV_STRIKE), so a new
 *    leader meets a follower busy installing;
 *  - the heal's last casualty: in half the seeds, InstallSnapshot chunks and
 *    results still in flight when the network heals are lost (sent across
 *    the partition just before it healed), so a stream must recover with no
 *    further loss;
 *  - snapshot_timeout is the daemon's 5 s in half the seeds (1 s otherwise);
 *  - learner promotion (4% of the nemesis' draws): the leader is asked to
 *    add a node that is cut off for 8-10 s (so it stays a learner when the
 *    catch-up times out) and, 5.5-7 s later, to add it again while it is
 *    still cut off.
 *
 * Thread: single-threaded, like the rest of the simulation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/sim/sim.h"

#define CONVERGE_PROMOTE_GAP 32 /* entries: 2 x the core's RAFT_CATCHUP_GAP */

static uint64_t conv_rand(struct sim *s)
{
	/* splitmix64, as sim_rand, on the convergence generator */
	uint64_t z = (s->conv.rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t conv_range(struct sim *s, uint64_t lo, uint64_t hi)
{
	return lo + conv_rand(s) % (hi - lo + 1);
}

static int node_num(const struct sim *s, const char *id)
{
	for (unsigned i = 0; i < s->n_nodes; i++)
		if (strcmp(s->nodes[i].id, id) == 0)
			return (int)i;
	return -1;
}

/* Index of the snapshot n's driver is installing (its last chunk queued on
 * the disk, or a slow install not yet reported), or 0. */
static raft_index installing(const struct sim *s, const struct sim_node *n)
{
	for (const struct sim_req *r = n->q_head; r != NULL; r = r->next)
		if (r->kind == SIM_REQ_SNAP_CHUNK && r->chunk.done)
			return r->chunk.last_index;
	if (n->up && s->conv.pending_inc[n->num] == n->inc + 1)
		return s->conv.install_meta[n->num].index;
	return 0;
}

void sim_converge_init(struct sim *s)
{
	s->conv.rng = s->p.seed * 0x9e3779b97f4a7c15ull + 0x5eedc0de;
	s->conv.isolated = -1;
	s->conv.install_ms = conv_range(s, 0, 1) ? conv_range(s, 300, 2000) : 0;
	s->conv.heal_loss_pct = conv_range(s, 0, 1) ? 100 : 0;
	s->opts.snapshot_timeout = conv_range(s, 0, 1) ? 5000 : 1000;
	sim_late_init(s);
	if (s->p.verbose)
		printf("seed %llu: slow installs %llu ms, chunks lost at heal %s, "
		       "snapshot_timeout %llu ms\n",
		       (unsigned long long)s->p.seed, (unsigned long long)s->conv.install_ms,
		       s->conv.heal_loss_pct ? "yes" : "no",
		       (unsigned long long)s->opts.snapshot_timeout);
}

bool sim_converge_deliver(struct sim *s, struct sim_node *n, const struct sim_msg *m)
{
	if (m->lost) {
		s->stats.drops++;
		return true;
	}
	/* A last chunk that may start an install (not while one runs). */
	if (m->m.type == RAFT_MSG_SNAPSHOT && m->m.u.snapshot.done && n->up &&
	    installing(s, n) == 0) {
		/* Who sent the stream being installed (if it is). */
		s->conv.install_from[n->num] = node_num(s, m->m.from);
		s->conv.install_term[n->num] = m->m.term;
	}
	return false;
}

bool sim_converge_install_later(struct sim *s, struct sim_node *n)
{
	if (s->conv.install_ms == 0)
		return false;
	s->conv.install_meta[n->num] = n->dsnap.meta;
	s->conv.pending_inc[n->num] = n->inc + 1;
	s->conv.slow_installs++;
	sim_ev_push(s, s->now + s->conv.install_ms, SIM_EV_INSTALLED, n->num, n->inc, NULL, 0);
	if (s->p.trace)
		printf("%8llu %s slow install of %llu: reported in %llu ms\n",
		       (unsigned long long)s->now, n->id, (unsigned long long)n->dsnap.meta.index,
		       (unsigned long long)s->conv.install_ms);
	/* Often depose the sender meanwhile: a new leader meets a follower
	 * busy installing (its busy answers must not walk next back,
	 * replication.c). */
	int from = s->conv.install_from[n->num];
	if (!s->healing && from >= 0 && from != n->num && conv_range(s, 0, 99) < 30)
		sim_ev_push(s, s->now + conv_range(s, 1, 20), SIM_EV_STRIKE, from,
			    s->nodes[from].inc, NULL, 0);
	return true;
}

void sim_converge_installed(struct sim *s, struct sim_node *n, uint32_t inc)
{
	if (!n->up || n->inc != inc)
		return;
	s->conv.pending_inc[n->num] = 0;
	struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_INSTALLED, .now = s->now};
	e.u.snapshot = s->conv.install_meta[n->num];
	sim_node_step(s, n, &e, NULL, NULL);
}

/* Cuts node i off from everyone, both ways. */
static void isolate(struct sim *s, int i)
{
	for (unsigned k = 0; k < s->n_nodes; k++)
		s->cut[i][k] = s->cut[k][i] = (int)k != i;
}

void sim_converge_links(struct sim *s)
{
	if (s->conv.isolated >= 0 && s->now < s->conv.isolated_until)
		isolate(s, s->conv.isolated);
	else
		s->conv.isolated = -1;
	sim_late_links(s);
}

static void ask_add(struct sim *s, int node)
{
	int l = sim_leader_guess(s);
	if (l < 0 || l == node)
		return;
	const char *add[1] = {s->nodes[node].id};
	struct raft_event e = {.type = RAFT_EVENT_CHANGE, .now = s->now};
	e.u.change.token = ++s->next_token;
	e.u.change.add = add;
	e.u.change.n_add = 1;
	if (s->p.verbose)
		printf("%8llu learner fault at %s: add %s (cut off)\n", (unsigned long long)s->now,
		       s->nodes[l].id, add[0]);
	int rc;
	sim_node_step(s, &s->nodes[l], &e, &rc, NULL);
	s->stats.changes += rc == 0;
}

void sim_converge_fault(struct sim *s)
{
	int l = sim_leader_guess(s);
	if (l < 0 || s->conv.isolated >= 0)
		return;
	const struct raft_config *c = raft_configuration(s->nodes[l].core);
	int pick = (int)conv_range(s, 0, s->n_nodes - 1);
	const struct raft_server *member = raft_config_get(c, s->nodes[pick].id);
	if (pick == l || (member != NULL && member->role == RAFT_VOTER))
		return;
	s->conv.isolated = pick;
	s->conv.isolated_until = s->now + conv_range(s, 8000, 10000);
	s->conv.learner_faults++;
	isolate(s, pick);
	ask_add(s, pick);
	sim_ev_push(s, s->now + conv_range(s, 5500, 7000), SIM_EV_PROMOTE, pick, 0, NULL, 0);
}

void sim_converge_promote(struct sim *s, int node)
{
	if (!s->healing && s->conv.isolated == node)
		ask_add(s, node);
}

void sim_converge_heal(struct sim *s)
{
	sim_late_heal(s); /* no held completions after the heal */
	s->conv.isolated = -1;
	/* A disk stall ends at the heal, but a disk event already scheduled
	 * past it still waits for its time: convergence counts from then. */
	for (unsigned i = 0; i < s->n_nodes; i++)
		if (s->nodes[i].stall_until > s->conv.stall_end)
			s->conv.stall_end = s->nodes[i].stall_until;
	if (conv_range(s, 0, 99) >= s->conv.heal_loss_pct)
		return;
	for (size_t i = 0; i < s->heap_n; i++) {
		struct sim_ev *ev = &s->heap[i];
		struct sim_msg *m = ev->p;
		if (ev->kind == SIM_EV_DELIVER &&
		    (m->m.type == RAFT_MSG_SNAPSHOT || m->m.type == RAFT_MSG_SNAPSHOT_RESULT)) {
			m->lost = true;
			s->conv.heal_losses++;
		}
	}
}

/* A server the leader makes a voter must have caught up (membership.c). */
static void check_promotion(struct sim *s, struct sim_node *n, const struct raft_update *u,
			    const struct raft_config *before)
{
	raft_index last = sim_log_last(&n->mlog);
	for (unsigned i = 0; i < u->n_entries && !s->failed; i++) {
		struct raft_config c;
		if (u->entries[i].type != RAFT_ENTRY_CONFIG ||
		    raft_config_decode(u->entries[i].data, u->entries[i].len, &c) != 0)
			continue;
		for (unsigned k = 0; k < c.n; k++) {
			int f = node_num(s, c.servers[k].id);
			if (c.servers[k].role != RAFT_VOTER ||
			    raft_config_is_voter(before, c.servers[k].id) || f < 0 || f == n->num)
				continue;
			struct sim_node *x = &s->nodes[f];
			/* Its log as requested, or as durable (down, it has no
			 * requested log; the leader's match came from acks). */
			raft_index has = sim_log_last(&x->mlog);
			if (sim_log_last(&x->dlog) > has)
				has = sim_log_last(&x->dlog);
			if (x->dsnap.meta.index > has)
				has = x->dsnap.meta.index;
			if (has + CONVERGE_PROMOTE_GAP < last)
				sim_fail(s,
					 "promotion: leader %s makes %s a voter at index %llu but "
					 "%s holds only up to %llu (more than %d entries behind)",
					 n->id, x->id, (unsigned long long)u->entries[i].index,
					 x->id, (unsigned long long)has, CONVERGE_PROMOTE_GAP);
		}
	}
}

void sim_converge_update(struct sim *s, struct sim_node *n, const struct raft_update *u,
			 const struct raft_config *cfg_before)
{
	if (u->role == RAFT_LEADER && cfg_before != NULL)
		check_promotion(s, n, u, cfg_before);
	if (u->role != RAFT_LEADER || s->failed)
		return;
	for (unsigned i = 0; i < u->n_notes; i++) {
		int f;
		if (u->notes[i].kind != RAFT_NOTE_PEER_SNAPSHOT_SENT ||
		    (f = node_num(s, u->notes[i].peer)) < 0)
			continue;
		if (s->p.trace)
			printf("%8llu %s starts snapshot stream %llu/%llu to %s (which installs "
			       "%llu, holds snapshot %llu, commit %llu)\n",
			       (unsigned long long)s->now, n->id,
			       (unsigned long long)u->notes[i].index,
			       (unsigned long long)u->notes[i].term, u->notes[i].peer,
			       (unsigned long long)installing(s, &s->nodes[f]),
			       (unsigned long long)s->nodes[f].dsnap.meta.index,
			       (unsigned long long)s->nodes[f].commit);
		const struct sim_node *x = &s->nodes[f];
		raft_index idx = u->notes[i].index;
		/* A leader of an earlier term than the stream's is deposed:
		 * it may act on a refusal F sent before the install (delayed
		 * on its connection), and F refuses its chunk by term. */
		if (installing(s, x) >= idx && u->current_term >= s->conv.install_term[f] &&
		    (s->conv.install_from[f] != n->num ||
		     s->conv.install_term[f] != u->current_term)) {
			sim_fail(
			    s,
			    "convergence: leader %s of term %llu starts a stream of snapshot "
			    "%llu to %s, which is installing snapshot %llu (from %s, term %llu): "
			    "its busy answers must not send the leader back",
			    n->id, (unsigned long long)u->current_term, (unsigned long long)idx,
			    x->id, (unsigned long long)installing(s, x),
			    s->conv.install_from[f] >= 0 ? s->nodes[s->conv.install_from[f]].id
							 : "?",
			    (unsigned long long)s->conv.install_term[f]);
			return;
		}
		/* Not counted: a stream to a follower that is down. Its host
		 * refuses the connection (sim_http.c), no byte of it goes, and
		 * the leader starts another at each heartbeat until the
		 * follower is back. */
		if (!s->healing || !x->up)
			continue;
		if (x->dsnap.meta.index >= idx || x->commit >= idx) {
			/* It has it: one such stream may cross the answer. */
			if (++s->conv.redundant[f] > SIM_CONVERGE_MAX_REDUNDANT)
				sim_fail(s,
					 "convergence: %s starts stream %u of snapshot %llu to %s, "
					 "which already holds it (snapshot %llu, commit %llu)",
					 n->id, s->conv.redundant[f], (unsigned long long)idx,
					 x->id, (unsigned long long)x->dsnap.meta.index,
					 (unsigned long long)x->commit);
			continue;
		}
		if (installing(s, x) != 0)
			continue; /* snapshot_timeout during a slow install: a restart */
		if (++s->conv.streams[f] > SIM_CONVERGE_MAX_STREAMS)
			sim_fail(s,
				 "convergence: %s started snapshot stream %u (index %llu) to %s "
				 "since the heal (at most %d)",
				 n->id, s->conv.streams[f], (unsigned long long)idx, x->id,
				 SIM_CONVERGE_MAX_STREAMS);
	}
}

/* True if member f holds committed entry `target` (or a snapshot covering
 * it) and has applied it. */
static bool caught_up(struct sim *s, const struct sim_node *f, raft_index target)
{
	bool found;
	raft_term t = sim_log_term(&f->mlog, target, &found);
	bool holds = found ? target < s->cap_committed && s->committed[target].set &&
				 t == s->committed[target].term
			   : target <= f->dsnap.meta.index;
	return f->up && holds && f->applied >= target;
}

bool sim_converge_done(struct sim *s)
{
	int l = sim_leader_guess(s);
	bool done = l >= 0;

	if (s->conv.live_time == 0) {
		s->conv.live_time = s->now;
		s->conv.target = s->max_committed;
	}
	const struct raft_config *c = l >= 0 ? raft_configuration(s->nodes[l].core) : NULL;
	int lag = -1;
	for (unsigned i = 0; c != NULL && i < s->n_nodes && done; i++) {
		struct sim_node *f = &s->nodes[i];
		if (raft_config_get(c, f->id) == NULL && !raft_config_is_voter(c, f->id))
			continue;
		if (!caught_up(s, f, s->conv.target)) {
			done = false;
			lag = (int)i;
		}
	}
	/* Room for an install under way at the heal and one more. */
	raft_time bound = SIM_CONVERGE_MS + 2 * s->conv.install_ms;
	raft_time from =
	    s->conv.live_time > s->conv.stall_end ? s->conv.live_time : s->conv.stall_end;
	if (!done && s->now > from + bound) {
		if (lag >= 0) {
			struct sim_node *f = &s->nodes[lag];
			sim_fail(
			    s,
			    "convergence: %s has not caught up to committed index %llu %llu ms "
			    "after the cluster was live (applied %llu, log %llu..%llu, "
			    "snapshot %llu, commit %llu, %u streams since heal)",
			    f->id, (unsigned long long)s->conv.target, (unsigned long long)bound,
			    (unsigned long long)f->applied, (unsigned long long)f->mlog.first,
			    (unsigned long long)sim_log_last(&f->mlog),
			    (unsigned long long)f->dsnap.meta.index, (unsigned long long)f->commit,
			    s->conv.streams[lag]);
		} else {
			sim_fail(s, "convergence: no leader %llu ms after the cluster was live",
				 (unsigned long long)bound);
		}
	}
	return done;
}
