/*
 * sim_world.c: the simulated world: a virtual clock (a heap of timed
 * events), the fault injector (crashes, partitions of several shapes, disk
 * stalls, membership changes, leadership transfers, message loss) and the
 * run loop with its final healing and liveness phase.
 *
 * Determinism: every random choice draws from s->rng in event order, and
 * events at equal times run in insertion order (a sequence number breaks
 * ties), so a seed replays exactly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/sim/sim.h"

/* ---------------------------------------------------------------- random */

uint64_t sim_rand(struct sim *s)
{
	/* splitmix64 */
	uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t sim_rand_range(struct sim *s, uint64_t lo, uint64_t hi)
{
	return lo + sim_rand(s) % (hi - lo + 1);
}

bool sim_chance(struct sim *s, unsigned pct)
{
	return sim_rand(s) % 100 < pct;
}

uint64_t sim_bytes_hash(const void *p, size_t len)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 1099511628211ull;
	}
	return h;
}

uint64_t sim_kv_hash(const uint64_t *kv)
{
	return sim_bytes_hash(kv, SIM_KEYS * sizeof(uint64_t));
}

/* ----------------------------------------------------------------- heap */

static bool ev_less(const struct sim_ev *a, const struct sim_ev *b)
{
	return a->t != b->t ? a->t < b->t : a->seq < b->seq;
}

void sim_ev_push(struct sim *s, raft_time t, int kind, int node, uint32_t inc, void *p, uint64_t a)
{
	if (s->heap_n == s->heap_cap) {
		s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 256;
		s->heap = realloc(s->heap, s->heap_cap * sizeof(*s->heap));
		if (s->heap == NULL)
			abort();
	}
	struct sim_ev ev = {t, s->ev_seq++, kind, node, inc, p, a};
	size_t i = s->heap_n++;
	while (i > 0 && ev_less(&ev, &s->heap[(i - 1) / 2])) {
		s->heap[i] = s->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	s->heap[i] = ev;
}

static struct sim_ev ev_pop(struct sim *s)
{
	struct sim_ev top = s->heap[0], last = s->heap[--s->heap_n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= s->heap_n)
			break;
		if (c + 1 < s->heap_n && ev_less(&s->heap[c + 1], &s->heap[c]))
			c++;
		if (!ev_less(&s->heap[c], &last))
			break;
		s->heap[i] = s->heap[c];
		i = c;
	}
	if (s->heap_n > 0)
		s->heap[i] = last;
	return top;
}

/* ---------------------------------------------------------------- faults */

int sim_leader_guess(struct sim *s)
{
	int best = -1;
	for (unsigned i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		if (n->up && n->role == RAFT_LEADER && (best < 0 || n->term > s->nodes[best].term))
			best = (int)i;
	}
	return best;
}

static void fault_change(struct sim *s)
{
	int l = sim_leader_guess(s);
	if (l < 0)
		return;
	struct sim_node *n = &s->nodes[l];
	const struct raft_config *c = raft_configuration(n->core);
	const char *add[1], *rem[1];
	unsigned n_add = 0, n_rem = 0, voters = 0;
	for (unsigned i = 0; i < c->n; i++)
		voters += c->servers[i].role == RAFT_VOTER;
	unsigned pick = (unsigned)sim_rand_range(s, 0, s->n_nodes - 1);
	const char *id = s->nodes[pick].id;
	const struct raft_server *member = raft_config_get(c, id);
	if (member == NULL) {
		add[n_add++] = id;
		/* Sometimes swap at once: a joint change. */
		if (sim_chance(s, 50) && voters > 2) {
			unsigned v = (unsigned)sim_rand_range(s, 0, c->n - 1);
			if (c->servers[v].role == RAFT_VOTER)
				rem[n_rem++] = c->servers[v].id;
		}
	} else if (member->role == RAFT_LEARNER || voters > 2) {
		rem[n_rem++] = id;
	}
	if (n_add + n_rem == 0)
		return;
	struct raft_event e = {.type = RAFT_EVENT_CHANGE, .now = s->now};
	e.u.change.token = ++s->next_token;
	e.u.change.add = add;
	e.u.change.n_add = n_add;
	e.u.change.remove = rem;
	e.u.change.n_remove = n_rem;
	int rc;
	if (s->p.verbose)
		printf("%8llu change at %s: add %s remove %s\n", (unsigned long long)s->now, n->id,
		       n_add ? add[0] : "-", n_rem ? rem[0] : "-");
	sim_node_step(s, n, &e, &rc, NULL);
	s->stats.changes += rc == 0;
}

static void fault_partition(struct sim *s, unsigned kind)
{
	unsigned k = s->n_nodes;
	unsigned side[SIM_MAX_NODES];
	for (unsigned i = 0; i < k; i++)
		side[i] = (unsigned)sim_rand_range(s, 0, 1);
	int l = sim_leader_guess(s);
	if (kind == 3 && l >= 0) { /* isolate the leader, maybe with one follower */
		unsigned mate = (unsigned)sim_rand_range(s, 0, k - 1);
		for (unsigned i = 0; i < k; i++)
			side[i] = i == (unsigned)l || (i == mate && sim_chance(s, 30));
	}
	if (kind == 1) { /* one-way: a stops hearing b */
		unsigned a = (unsigned)sim_rand_range(s, 0, k - 1);
		unsigned b = (unsigned)sim_rand_range(s, 0, k - 1);
		if (a != b)
			s->cut[b][a] = true;
	} else {
		unsigned bridge = kind == 2 ? (unsigned)sim_rand_range(s, 0, k - 1) : k;
		for (unsigned a = 0; a < k; a++)
			for (unsigned b = 0; b < k; b++)
				if (side[a] != side[b] && a != bridge && b != bridge)
					s->cut[a][b] = true;
	}
	s->stats.partitions++;
	raft_time heal =
	    sim_chance(s, 50) ? sim_rand_range(s, 30, 600) : sim_rand_range(s, 200, 4000);
	sim_ev_push(s, s->now + heal, SIM_EV_HEAL_LINKS, -1, 0, NULL, 0);
}

static void fault_inject(struct sim *s)
{
	unsigned r = (unsigned)sim_rand_range(s, 0, 99);
	unsigned victim = (unsigned)sim_rand_range(s, 0, s->n_nodes - 1);
	int leader = sim_leader_guess(s);
	if (leader >= 0 && r < 18 && sim_chance(s, 40))
		victim = (unsigned)leader; /* kill-the-leader nemesis */
	struct sim_node *n = &s->nodes[victim];

	if (r < 18) {
		if (n->up) {
			if (s->p.verbose)
				printf("%8llu crash %s\n", (unsigned long long)s->now, n->id);
			sim_node_crash(s, n);
			sim_ev_push(s, s->now + sim_rand_range(s, 50, 4000), SIM_EV_RESTART, n->num,
				    0, NULL, 0);
		}
	} else if (r < 24) {
		fault_partition(s, 0);
	} else if (r < 30) {
		fault_partition(s, 3);
	} else if (r < 37) {
		fault_partition(s, 1);
	} else if (r < 44) {
		fault_partition(s, 2);
	} else if (r < 54) {
		n->stall_until = s->now + sim_rand_range(s, 500, 1500);
		s->stats.stalls++;
	} else if (r < 70) {
		fault_change(s);
	} else if (r < 80) {
		int l = sim_leader_guess(s);
		if (l >= 0) {
			struct raft_event e = {.type = RAFT_EVENT_TRANSFER, .now = s->now};
			e.u.transfer.to = sim_chance(s, 50) ? NULL : n->id;
			if (e.u.transfer.to != NULL && (unsigned)l == victim)
				e.u.transfer.to = NULL;
			sim_node_step(s, &s->nodes[l], &e, NULL, NULL);
			s->stats.transfers++;
		}
	} else if (r < 86) {
		static const unsigned drops[] = {0, 1, 5, 20};
		s->drop_pct = drops[sim_rand_range(s, 0, 3)];
	} else if (r < 90) {
		memset(s->cut, 0, sizeof(s->cut));
		sim_converge_links(s);
	} else if (r < 95 && leader >= 0) {
		/* Leader hop: a follower's disk stalls while leadership
		 * moves twice, every new leader reaching only it before
		 * being cut off, so its queue holds a write, its overwrite
		 * and the overwrite's undoing (A-B-A at one index: the case
		 * of the writer's completion tracking, issue 7 item 8). */
		unsigned f = victim != (unsigned)leader ? victim : (victim + 1) % s->n_nodes;
		raft_time until = s->now + sim_rand_range(s, 1500, 3000);
		/* Late seeds: the follower's loop lags instead (sim_complete.c). */
		if (!sim_late_hop(s, &s->nodes[f], until, leader))
			s->nodes[f].stall_until = until;
		s->hop_node = (int)f;
		s->hop_until = until;
		sim_isolate_except(s, &s->nodes[leader], (int)f);
		s->stats.stalls++;
	} else if (r >= 95 && r < 99) {
		sim_converge_fault(s);
	}
}

void sim_isolate_except(struct sim *s, struct sim_node *n, int keep)
{
	for (unsigned i = 0; i < s->n_nodes; i++)
		if ((int)i != keep && i != (unsigned)n->num)
			s->cut[n->num][i] = s->cut[i][n->num] = true;
	sim_ev_push(s, s->now + sim_rand_range(s, 150, 400), SIM_EV_HEAL_LINKS, -1, 0, NULL, 0);
}

static void heal_all(struct sim *s)
{
	s->healing = true;
	s->heal_time = s->now;
	memset(s->cut, 0, sizeof(s->cut));
	s->drop_pct = 0;
	s->dup_pct = 0;
	sim_converge_heal(s);
	for (unsigned i = 0; i < s->n_nodes; i++) {
		s->nodes[i].stall_until = 0;
		if (s->nodes[i].disk != NULL) {
			sim_disk_faults_enable(s->nodes[i].disk, false);
			sim_disk_fail_after(s->nodes[i].disk, 0); /* no armed power failure */
		}
		if (!s->nodes[i].up && !s->nodes[i].exited && !s->failed)
			sim_node_restart(s, &s->nodes[i]);
	}
	sim_ev_push(s, s->now + 1, SIM_EV_PROBE, -1, 0, NULL, 0);
	if (s->p.verbose)
		printf("%8llu heal all\n", (unsigned long long)s->now);
}

/* ------------------------------------------------------------------ run */

static void dispatch(struct sim *s, const struct sim_ev *ev)
{
	struct sim_node *n = ev->node >= 0 ? &s->nodes[ev->node] : NULL;
	struct raft_event e = {.now = s->now};

	switch (ev->kind) {
	case SIM_EV_DELIVER: {
		struct sim_msg *m = ev->p;
		if (m->http != 0) { /* a segment of a connection (sim_http.c) */
			sim_http_deliver(s, m);
			break;
		}
		if (n->up && !sim_converge_deliver(s, n, m)) {
			e.type = RAFT_EVENT_RECEIVE;
			e.u.receive = m->m;
			sim_node_step(s, n, &e, NULL, NULL);
		}
		sim_msg_free(m);
		break;
	}
	case SIM_EV_TICK:
		if (n->up && n->inc == ev->inc && n->tick_at == ev->t) {
			e.type = RAFT_EVENT_TICK;
			sim_node_step(s, n, &e, NULL, NULL);
		}
		break;
	case SIM_EV_DISK:
		if (n->up && n->inc == ev->inc)
			sim_disk_complete(s, n);
		break;
	case SIM_EV_APPLIED:
		if (n->up && n->inc == ev->inc) {
			e.type = RAFT_EVENT_APPLIED;
			e.u.applied.index = ev->a;
			sim_node_step(s, n, &e, NULL, NULL);
		}
		break;
	case SIM_EV_RESTART:
		if (!n->up && !n->exited)
			sim_node_restart(s, n);
		break;
	case SIM_EV_CLIENT: sim_client_act(s, (int)ev->a); break;
	case SIM_EV_CLIENT_TIMEOUT: sim_client_timeout(s, ev->node, ev->a); break;
	case SIM_EV_FAULT:
		if (!s->healing) {
			fault_inject(s);
			sim_ev_push(s, s->now + sim_rand_range(s, 50, 700), SIM_EV_FAULT, -1, 0,
				    NULL, 0);
		}
		break;
	case SIM_EV_HEAL_LINKS:
		memset(s->cut, 0, sizeof(s->cut));
		sim_converge_links(s);
		break;
	case SIM_EV_PROMOTE: sim_converge_promote(s, ev->node); break;
	case SIM_EV_INSTALLED: sim_converge_installed(s, n, ev->inc); break;
	case SIM_EV_COMPLETE:
		if (n->up && n->inc == ev->inc)
			sim_late_deliver(s, n);
		break;
	case SIM_EV_STRIKE:
		if (s->healing || !n->up || n->inc != ev->inc)
			break;
		if (ev->a == 2) {
			sim_isolate_except(s, n, s->hop_node);
		} else if (ev->a == 1) {
			sim_node_crash(s, n);
			sim_ev_push(s, s->now + sim_rand_range(s, 50, 2000), SIM_EV_RESTART, n->num,
				    0, NULL, 0);
		} else {
			for (unsigned i = 0; i < s->n_nodes; i++)
				s->cut[n->num][i] = s->cut[i][n->num] = true;
			sim_ev_push(s, s->now + sim_rand_range(s, 100, 1500), SIM_EV_HEAL_LINKS, -1,
				    0, NULL, 0);
		}
		break;
	case SIM_EV_HTTP_TIMEOUT: sim_http_timeout(s, ev->node, (int)ev->inc, ev->a); break;
	case SIM_EV_HTTP_RESET: sim_http_reset(s, ev->node, (int)ev->inc, ev->a); break;
	case SIM_EV_SNAP_WORKER:
		if (n->up && n->inc == ev->inc)
			sim_node_snap_worker_done(s, n);
		break;
	case SIM_EV_IO_FAILED:
		if (n->up && n->inc == ev->inc)
			sim_node_disk_error(s, n, KVD_ENOMEM);
		break;
	case SIM_EV_PROBE:
		sim_probe_tick(s);
		if (!s->live)
			sim_ev_push(s, s->now + 50, SIM_EV_PROBE, -1, 0, NULL, 0);
		break;
	}
}

static void sim_init(struct sim *s, const struct sim_params *p)
{
	memset(s, 0, sizeof(*s));
	s->p = *p;
	s->rng = p->seed * 0x2545f4914f6cdd1dull + 1;
	s->n_nodes = p->nodes ? p->nodes : (unsigned)sim_rand_range(s, 3, SIM_MAX_NODES);
	static const unsigned drops[] = {0, 1, 5, 20};
	s->drop_pct = drops[sim_rand_range(s, 0, 3)];
	s->dup_pct = (unsigned)sim_rand_range(s, 0, 3);
	s->long_delay_pct = (unsigned)sim_rand_range(s, 0, 10);
	s->snap_threshold = sim_rand_range(s, 8, 40);
	raft_options_default(&s->opts);
	s->opts.election_timeout_min = 200;
	s->opts.election_timeout_max = 400;
	s->opts.heartbeat_interval = 50;
	/* Often one entry per message and one message in flight: acks then
	 * advance entry by entry (the window where figure 8 bites). */
	s->opts.max_inflight_msgs = sim_chance(s, 50) ? 1 : (unsigned)sim_rand_range(s, 2, 8);
	s->opts.max_msg_bytes = sim_chance(s, 50) ? 1 : sim_rand_range(s, 64, 1024);
	s->opts.max_inflight_bytes = sim_rand_range(s, 256, 8192);
	s->opts.snapshot_chunk_bytes = sim_rand_range(s, 200, 2000);
	s->opts.snapshot_timeout = 1000;
	s->opts.snapshot_trailing = sim_rand_range(s, 0, 16);
	sim_converge_init(s);
	sim_http_init(s);
	s->history = linearize_history_create();
	if (s->history == NULL)
		abort();

	/* Half the seeds give each node its own clock rate (+-25%), and then
	 * often one node a very slow clock (a starved or paused process). */
	bool drift = sim_chance(s, 50);
	int slow = drift && sim_chance(s, 60) ? (int)sim_rand_range(s, 0, s->n_nodes - 1) : -1;

	/* Founding voters: all nodes, or all but one spare when more than 3. */
	unsigned voters = s->n_nodes > 3 ? s->n_nodes - 1 : s->n_nodes;
	struct raft_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	for (unsigned i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		n->num = (int)i;
		snprintf(n->id, sizeof(n->id), "n%u", i + 1);
		n->dlog.first = n->mlog.first = 1;
		n->clock_offset = sim_rand_range(s, 0, 1000000);
		n->rate_ppm = drift ? sim_rand_range(s, 750000, 1250000) : 1000000;
		if ((int)i == slow)
			n->rate_ppm = sim_rand_range(s, 300000, 600000);
		if (i < voters && raft_config_add(&cfg, n->id, RAFT_VOTER) != 0)
			abort();
	}
	struct raft_entry boot;
	void *buf = NULL;
	if (raft_bootstrap_entry(&cfg, &boot, &buf) != 0)
		abort();
	struct sim_entry *e = sim_entry_new(boot.index, boot.term, boot.type, boot.data, boot.len);
	free(buf);
	for (unsigned i = 0; i < voters; i++) {
		sim_log_push(&s->nodes[i].dlog, e);
		s->nodes[i].d_term = boot.term;
	}
	sim_entry_unref(e);
}

/* After the probe: every voter of the leader's configuration has applied
 * it (its state machine caught up, by replay or by a snapshot install). */
static bool converged(struct sim *s)
{
	const struct sim_node *l = &s->nodes[s->probe_node];
	const struct raft_config *cfg;
	if (l->core == NULL)
		return false;
	cfg = raft_configuration(l->core);
	for (unsigned i = 0; i < s->n_nodes; i++) {
		const struct sim_node *n = &s->nodes[i];
		if (raft_config_is_voter(cfg, n->id) && n->applied < s->converge_index)
			return false;
	}
	return true;
}

int sim_run(const struct sim_params *p, struct sim *s)
{
	sim_init(s, p);
	sim_nd_params(s);
	for (unsigned i = 0; i < s->n_nodes && !s->failed; i++)
		sim_node_restart(s, &s->nodes[i]);
	sim_client_start(s);
	sim_ev_push(s, sim_rand_range(s, 100, 600), SIM_EV_FAULT, -1, 0, NULL, 0);
	while (!s->failed && s->heap_n > 0) {
		if (!s->healing && s->step >= p->steps)
			heal_all(s);
		if (s->healing && s->live && s->converge_index == 0)
			s->converge_index = s->probe_index;
		/* Two checks of the healed cluster: every voter applies the
		 * probe (converged), and every member, learners too, holds and
		 * applies the highest committed index within the bound of
		 * sim_converge.c, which fails the run itself when it passes. */
		if (s->healing && s->live && sim_converge_done(s) && converged(s))
			break;
		if (s->failed)
			break;
		if (s->healing && !s->live && s->now > s->heal_time + SIM_LIVENESS_MS) {
			sim_fail(s,
				 "liveness: no leader committed a proposal within %d ms of healing",
				 SIM_LIVENESS_MS);
			break;
		}
		if (s->healing && s->live && s->now > s->heal_time + 2 * SIM_LIVENESS_MS) {
			sim_fail(
			    s,
			    "convergence: voters of the healed cluster did not all apply index "
			    "%llu within %d ms of healing",
			    (unsigned long long)s->converge_index, 2 * SIM_LIVENESS_MS);
			break;
		}
		struct sim_ev ev = ev_pop(s);
		if (ev.t < s->now)
			abort(); /* harness bug: time must not go backwards */
		s->now = ev.t;
		if (!s->healing)
			s->step++;
		sim_http_sync(s); /* links cut by the last event, in operator seeds */
		dispatch(s, &ev);
		s->digest = (s->digest ^ (ev.t * 1000003u + (uint64_t)ev.kind * 131u +
					  (uint64_t)(ev.node + 1))) *
			    0x100000001b3ull;
	}
	if (!s->failed)
		sim_client_finish(s);
	return s->failed ? 1 : 0;
}

void sim_free(struct sim *s)
{
	while (s->heap_n > 0) {
		struct sim_ev ev = ev_pop(s);
		if (ev.kind == SIM_EV_DELIVER)
			sim_msg_free(ev.p);
	}
	free(s->heap);
	sim_http_free(s);
	for (unsigned i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		struct sim_req *r = n->q_head;
		while (r != NULL) {
			struct sim_req *next = r->next;
			sim_req_free(r);
			r = next;
		}
		while (n->batch != NULL) {
			struct sim_req *next = n->batch->next;
			sim_req_free(n->batch);
			n->batch = next;
		}
		if (n->snap_worker != NULL)
			sim_req_free(n->snap_worker);
		sim_nd_free(n);
		kvd_wait_clear(&n->waits);
		raft_destroy(n->core);
		sim_log_free(&n->mlog);
		sim_log_free(&n->dlog);
		free(n->dsnap.buf);
		free(n->incoming);
		free(n->cfg_idx);
		free(n->granted);
	}
	sim_check_free(s);
	linearize_history_destroy(s->history);
}
