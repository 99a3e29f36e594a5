/*
 * sim_complete.c: late writer completions (issue 7, "completions of the
 * writer delivered in any interleaving"; item 8, the A-B-A case).
 *
 * Why: raft.h lets a driver release a needs_sync message as soon as what it
 * waits for is durable, and deliver the PERSISTED event to the core later.
 * The daemon does both in one callback (api/writer.c writer_done), and with
 * that order an A-B-A at one index cannot meet an outstanding completion:
 * the re-append C needs the leader to hear the follower's rejection, which
 * waits for every earlier job, A included (docs/simulation.md). A driver
 * whose loop lags behind its writer (a busy loop, another queue in between)
 * can: so in half the seeds (its own generator, the main stream of choices
 * stays as it was) the PERSISTED events of a node go through a FIFO
 * delivered after a per-batch delay, and the leader hop holds the stalled
 * follower's completions (its disk runs on) until the writer starts a job
 * that re-appends an (index, term) one of the held completions wrote, or
 * the hold times out. The completion rule (api/write_rules.c) then decides
 * what A's late completion may report, and the check below says whether
 * the report was true.
 *
 * Invariant (persisted reports are true): when the core gets PERSISTED
 * (L, T) and its log holds (L, T), the entry is durable (L at or below the
 * durable snapshot, or the durable log holds (L, T)), and no job still
 * waiting for its sync, all of them submitted before the event, truncates
 * L: the core would count L durable while the disk is about to lose it.
 *
 * Thread: single-threaded, like the rest of the simulation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/sim/sim.h"

/* One completion waiting for delivery (per node, FIFO). */
struct sim_late_item {
	raft_time due;
	struct sim_req req; /* kind, seq, ents (own refs), n_ents */
	struct sim_late_item *next;
};

static uint64_t late_next(struct sim *s)
{
	uint64_t z = (s->late.rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t late_range(struct sim *s, uint64_t lo, uint64_t hi)
{
	return lo + late_next(s) % (hi - lo + 1);
}

void sim_late_init(struct sim *s)
{
	s->late.rng = s->p.seed * 0xd1b54a32d192ed03ull + 0x1a7e;
	s->late.on = !s->p.model_disk && late_range(s, 0, 1) == 1;
	s->late.hop_f = -1;
	if (s->p.verbose)
		printf("seed %llu: late completions %s\n", (unsigned long long)s->p.seed,
		       s->late.on ? "yes" : "no");
}

bool sim_late_on(const struct sim *s)
{
	return s->late.on;
}

static void item_free(struct sim_late_item *it)
{
	for (unsigned i = 0; i < it->req.n_ents; i++)
		sim_entry_unref(it->req.ents[i]);
	free(it->req.ents);
	free(it);
}

void sim_late_clear(struct sim_node *n)
{
	while (n->late_head != NULL) {
		struct sim_late_item *next = n->late_head->next;
		item_free(n->late_head);
		n->late_head = next;
	}
	n->late_tail = NULL;
	n->late_hold_until = 0;
}

void sim_late_push(struct sim *s, struct sim_node *n, const struct sim_req *r)
{
	struct sim_late_item *it = calloc(1, sizeof(*it));
	uint64_t pick = late_range(s, 0, 99);
	raft_time delay = pick < 60 ? 0 : pick < 90 ? late_range(s, 1, 10) : late_range(s, 20, 300);

	if (it == NULL)
		abort();
	it->req.kind = r->kind;
	it->req.seq = r->seq;
	if (r->n_ents > 0) {
		it->req.ents = malloc(r->n_ents * sizeof(*it->req.ents));
		if (it->req.ents == NULL)
			abort();
		for (unsigned i = 0; i < r->n_ents; i++) {
			it->req.ents[i] = r->ents[i];
			r->ents[i]->refs++;
		}
		it->req.n_ents = r->n_ents;
	}
	it->due = s->now + delay;
	if (n->late_hold_until > it->due)
		it->due = n->late_hold_until;
	if (n->late_tail != NULL && n->late_tail->due > it->due)
		it->due = n->late_tail->due; /* FIFO, as one writer completes */
	if (n->late_tail != NULL)
		n->late_tail->next = it;
	else
		n->late_head = it;
	n->late_tail = it;
	sim_ev_push(s, it->due, SIM_EV_COMPLETE, n->num, n->inc, NULL, 0);
}

/* The check of a report the core will take (header comment). */
static void check_report(struct sim *s, struct sim_node *n, raft_index index, raft_term term)
{
	bool found;
	raft_term t;

	if (index <= n->dsnap.meta.index)
		return;
	t = sim_log_term(&n->dlog, index, &found);
	if (!found || t != term) {
		sim_fail(s,
			 "persisted report: node %s is told entry %llu (term %llu) is durable but "
			 "the durable log holds %s %llu there",
			 n->id, (unsigned long long)index, (unsigned long long)term,
			 found ? "term" : "nothing, last", (unsigned long long)(found ? t : 0));
		return;
	}
	for (int pass = 0; pass < 2 && !s->failed; pass++) {
		for (const struct sim_req *r = pass == 0 ? n->batch : n->q_head; r != NULL;
		     r = r->next) {
			if (r->kind == SIM_REQ_LOG && r->truncate_from != 0 &&
			    r->truncate_from <= index) {
				sim_fail(s,
					 "persisted report: node %s is told entry %llu (term %llu) "
					 "is durable while its job %llu, submitted before and not "
					 "yet synced, truncates from %llu",
					 n->id, (unsigned long long)index, (unsigned long long)term,
					 (unsigned long long)r->seq,
					 (unsigned long long)r->truncate_from);
				break;
			}
		}
	}
}

void sim_late_deliver(struct sim *s, struct sim_node *n)
{
	while (n->late_head != NULL && n->late_head->due <= s->now && n->up && !s->failed) {
		struct sim_late_item *it = n->late_head;
		struct raft_event e = {.now = s->now};
		bool report = false;

		n->late_head = it->next;
		if (n->late_head == NULL)
			n->late_tail = NULL;
		report = sim_node_persisted_event(s, n, &it->req, &e);
		if (report) {
			bool found;
			raft_term t = sim_log_term(&n->mlog, e.u.persisted.index, &found);
			if (found && t == e.u.persisted.term)
				check_report(s, n, e.u.persisted.index, e.u.persisted.term);
			if (!s->failed)
				sim_node_step(s, n, &e, NULL, NULL);
		}
		item_free(it);
	}
}

void sim_late_flush(struct sim *s, struct sim_node *n)
{
	for (struct sim_late_item *it = n->late_head; it != NULL; it = it->next)
		it->due = s->now;
	sim_late_deliver(s, n);
}

void sim_late_heal(struct sim *s)
{
	for (unsigned i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		n->late_hold_until = 0;
		for (struct sim_late_item *it = n->late_head; it != NULL; it = it->next)
			it->due = s->now;
		if (n->late_head != NULL)
			sim_ev_push(s, s->now, SIM_EV_COMPLETE, n->num, n->inc, NULL, 0);
	}
}

/* While a late hop runs (5 or more nodes): the held follower is heard only
 * by the leader the hop started with, so it never wins an election (it is
 * the most up to date) and others lead in turn, each cut off in its turn. */
void sim_late_links(struct sim *s)
{
	if (s->late.hop_f < 0 || s->now >= s->late.hop_until || s->healing) {
		s->late.hop_f = -1;
		return;
	}
	for (unsigned i = 0; i < s->n_nodes; i++) {
		if ((int)i == s->late.hop_f || (int)i == s->late.hop_l)
			continue;
		s->cut[s->late.hop_f][i] = true;
		/* The first leader stays cut off long enough for others to
		 * elect one without it (an election timeout and a round). */
		if (s->now < s->late.hop_l_until)
			s->cut[s->late.hop_l][i] = s->cut[i][s->late.hop_l] = true;
	}
}

bool sim_late_hop(struct sim *s, struct sim_node *n, raft_time until, int leader)
{
	if (!s->late.on || late_range(s, 0, 3) == 0)
		return false;
	n->late_hold_until = until + late_range(s, 0, 500);
	s->late.holds++;
	if (s->n_nodes >= 5) {
		s->late.hop_f = n->num;
		s->late.hop_l = leader;
		s->late.hop_until = until;
		s->late.hop_l_until = s->now + late_range(s, 500, 1000);
		sim_ev_push(s, s->late.hop_l_until, SIM_EV_HEAL_LINKS, -1, 0, NULL, 0);
		sim_late_links(s);
	}
	if (s->p.trace)
		printf("%8llu %s holds its completions until %llu\n", (unsigned long long)s->now,
		       n->id, (unsigned long long)n->late_hold_until);
	return true;
}

/* True if r re-appends an (index, term) that a held completion wrote and
 * r's truncation removes first (something in between replaced it). */
static bool reappends_held(const struct sim_node *n, const struct sim_req *r)
{
	if (r->kind != SIM_REQ_LOG || r->truncate_from == 0)
		return false;
	for (const struct sim_late_item *it = n->late_head; it != NULL; it = it->next) {
		for (unsigned i = 0; i < it->req.n_ents; i++) {
			const struct sim_entry *a = it->req.ents[i];
			if (a->index < r->truncate_from)
				continue;
			for (unsigned k = 0; k < r->n_ents; k++) {
				if (r->ents[k]->index == a->index && r->ents[k]->term == a->term)
					return true;
			}
		}
	}
	return false;
}

void sim_late_written(struct sim *s, struct sim_node *n, const struct sim_req *batch)
{
	bool release = false;

	if (n->late_hold_until <= s->now)
		return;
	for (const struct sim_req *r = batch; r != NULL && !release; r = r->next)
		release = reappends_held(n, r);
	if (!release)
		return;
	/* The loop catches up while the writer runs the re-append. */
	s->late.releases++;
	if (s->p.trace)
		printf("%8llu %s delivers its held completions during a re-append\n",
		       (unsigned long long)s->now, n->id);
	n->late_hold_until = s->now;
	for (struct sim_late_item *it = n->late_head; it != NULL; it = it->next)
		it->due = s->now;
	sim_ev_push(s, s->now, SIM_EV_COMPLETE, n->num, n->inc, NULL, 0);
}
