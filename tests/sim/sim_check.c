/*
 * sim_check.c: the safety invariants checked after every step of every core
 * (Raft paper fig. 3 and §5.4, thesis §4.3 for joint consensus), plus the
 * driver-contract checks (persist before send).
 *
 * All checks are incremental so that a step costs O(entries touched):
 *  - election safety: one leader per term, recorded when a node reports
 *    itself leader;
 *  - leader append-only: a leader that stays leader in its term never
 *    truncates;
 *  - log matching: a global table maps (index, term) to (content hash, term
 *    of the previous entry); every appended entry must agree with it, which
 *    by induction makes logs that share an (index, term) identical up to it;
 *  - leader completeness: an entry first reported committed by a node in
 *    term C (an upper bound of the term it was committed in) is in the log
 *    of every leader of a term above C (unless its snapshot covers it):
 *    checked when a node becomes leader and when the entry is recorded;
 *  - state machine safety: the committed table is (index -> term, hash); each
 *    applied entry must match it, and the hash of the key-value state after
 *    each index must be equal on every node, snapshots included;
 *  - terms and commit indexes never decrease; durable term never decreases
 *    and a durable vote never changes within a term (across restarts);
 *  - applied <= commit, applied advances by one;
 *  - persist before send (see sim_check_send);
 *  - one pending configuration change (checked in sim_node.c where the
 *    leader appends) and joint majorities: the entry a leader reports
 *    committed must be durable on a majority of the new voters and, while
 *    joint, of the old voters too.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/sim/sim.h"

void sim_fail(struct sim *s, const char *fmt, ...)
{
	if (s->failed)
		return;
	s->failed = true;
	int off = snprintf(s->why, sizeof(s->why), "step %lu, t=%llu ms: ", s->step,
			   (unsigned long long)s->now);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->why + off, sizeof(s->why) - (size_t)off, fmt, ap);
	va_end(ap);
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
	if (need < *cap)
		return p;
	size_t cap2 = *cap ? *cap : 64;
	while (cap2 <= need)
		cap2 *= 2;
	unsigned char *q = realloc(p, cap2 * elem);
	if (q == NULL)
		abort();
	memset(q + *cap * elem, 0, (cap2 - *cap) * elem);
	*cap = cap2;
	return q;
}

static const char *msg_name(enum raft_msg_type t)
{
	static const char *names[] = {"?",
				      "RequestVote",
				      "RequestVoteResult",
				      "Append",
				      "AppendResult",
				      "InstallSnapshot",
				      "InstallSnapshotResult",
				      "TimeoutNow"};
	return t >= 1 && t <= 7 ? names[t] : "?";
}

/* Whether node id holds entry (index, term) durably (log or snapshot). */
static bool durable_has(struct sim *s, const char *id, raft_index index, raft_term term)
{
	for (unsigned i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		if (strcmp(n->id, id) != 0)
			continue;
		if (n->dsnap.meta.index >= index)
			return true;
		bool found;
		raft_term t = sim_log_term(&n->dlog, index, &found);
		return found && t == term;
	}
	return false;
}

static bool majority(struct sim *s, const struct raft_server *sv, unsigned count, raft_index index,
		     raft_term term)
{
	unsigned voters = 0, have = 0;
	for (unsigned i = 0; i < count; i++) {
		if (sv[i].role != RAFT_VOTER)
			continue;
		voters++;
		have += durable_has(s, sv[i].id, index, term);
	}
	return voters == 0 || have * 2 > voters;
}

static bool config_quorum(struct sim *s, const struct raft_config *c, raft_index index,
			  raft_term term)
{
	if (!majority(s, c->servers, c->n, index, term))
		return false;
	return c->n_old == 0 || majority(s, c->old, c->n_old, index, term);
}

/* Checks that leader n's log holds every entry in [from, to] committed in
 * an earlier term than n's. */
static void check_leader_has(struct sim *s, struct sim_node *n, raft_index from, raft_index to)
{
	if (from < n->mlog.first)
		from = n->mlog.first;
	for (raft_index i = from; i <= to && i < s->cap_committed; i++) {
		if (!s->committed[i].set || s->committed[i].commit_term >= n->term)
			continue;
		const struct sim_entry *e = sim_log_get(&n->mlog, i);
		if (e == NULL || e->term != s->committed[i].term ||
		    e->hash != s->committed[i].hash) {
			sim_fail(
			    s,
			    "leader completeness: leader %s of term %llu lacks committed entry "
			    "%llu (term %llu); has term %llu",
			    n->id, (unsigned long long)n->term, (unsigned long long)i,
			    (unsigned long long)s->committed[i].term,
			    (unsigned long long)(e ? e->term : 0));
			return;
		}
	}
}

static void record_committed(struct sim *s, struct sim_node *n, raft_term now_term, raft_index i)
{
	const struct sim_entry *e = sim_log_get(&n->mlog, i);
	if (e == NULL)
		return; /* covered by the node's snapshot */
	s->committed = grow(s->committed, &s->cap_committed, i, sizeof(*s->committed));
	struct sim_rec *r = &s->committed[i];
	if (r->set) {
		if (r->term != e->term || r->hash != e->hash)
			sim_fail(s,
				 "state machine safety: node %s commits index %llu term %llu, but "
				 "term %llu was committed there",
				 n->id, (unsigned long long)i, (unsigned long long)e->term,
				 (unsigned long long)r->term);
		return;
	}
	r->set = true;
	r->term = e->term;
	r->commit_term = now_term;
	r->hash = e->hash;
	if (i > s->max_committed)
		s->max_committed = i;
	s->stats.commits++;
	for (unsigned k = 0; k < s->n_nodes && !s->failed; k++) {
		struct sim_node *l = &s->nodes[k];
		if (l->up && l->role == RAFT_LEADER && l->term > now_term && l != n)
			check_leader_has(s, l, i, i);
	}
}

static void check_update(struct sim *s, struct sim_node *n, const struct raft_update *u,
			 enum raft_role prev_role, raft_term prev_term, raft_index prev_commit,
			 const struct raft_config *cfg_before);

void sim_check_update(struct sim *s, struct sim_node *n, const struct raft_update *u,
		      enum raft_role prev_role, raft_term prev_term, raft_index prev_commit,
		      const struct raft_config *cfg_before)
{
	check_update(s, n, u, prev_role, prev_term, prev_commit, cfg_before);
	if (!s->failed)
		sim_converge_update(s, n, u, cfg_before);
}

static void check_update(struct sim *s, struct sim_node *n, const struct raft_update *u,
			 enum raft_role prev_role, raft_term prev_term, raft_index prev_commit,
			 const struct raft_config *cfg_before)
{
	if (s->failed)
		return;
	if (u->current_term < prev_term || u->current_term < n->d_term) {
		sim_fail(s, "node %s: term went from %llu to %llu (durable %llu)", n->id,
			 (unsigned long long)prev_term, (unsigned long long)u->current_term,
			 (unsigned long long)n->d_term);
		return;
	}
	if (u->commit_index < prev_commit) {
		sim_fail(s, "node %s: commit index went from %llu to %llu", n->id,
			 (unsigned long long)prev_commit, (unsigned long long)u->commit_index);
		return;
	}
	if (u->commit_index > sim_log_last(&n->mlog)) {
		sim_fail(s, "node %s: commit index %llu beyond its last log index %llu", n->id,
			 (unsigned long long)u->commit_index,
			 (unsigned long long)sim_log_last(&n->mlog));
		return;
	}
	if (prev_role == RAFT_LEADER && u->role == RAFT_LEADER && prev_term == u->current_term &&
	    u->truncate_from != 0) {
		sim_fail(s, "leader append-only: leader %s of term %llu truncates from %llu", n->id,
			 (unsigned long long)u->current_term, (unsigned long long)u->truncate_from);
		return;
	}
	if (u->role == RAFT_LEADER) {
		raft_term t = u->current_term;
		s->leader_of = grow(s->leader_of, &s->cap_leader_of, t, 1);
		if (s->leader_of[t] != 0 && s->leader_of[t] != n->num + 1) {
			sim_fail(s, "election safety: %s and %s are both leaders of term %llu",
				 s->nodes[s->leader_of[t] - 1].id, n->id, (unsigned long long)t);
			return;
		}
		if (s->leader_of[t] == 0)
			s->stats.leaders++;
		s->leader_of[t] = (unsigned char)(n->num + 1);
		if (prev_role != RAFT_LEADER || prev_term != t) {
			raft_term saved = n->term;
			n->term = t;
			check_leader_has(s, n, 1, s->max_committed);
			n->term = saved;
			if (s->p.verbose)
				printf("%8llu %s leader of term %llu\n", (unsigned long long)s->now,
				       n->id, (unsigned long long)t);
		}
	}
	for (raft_index i = prev_commit + 1; i <= u->commit_index && !s->failed; i++)
		record_committed(s, n, u->current_term, i);
	if (s->failed)
		return;
	if (u->role == RAFT_LEADER && u->commit_index > prev_commit) {
		raft_index c = u->commit_index;
		bool found;
		raft_term t = sim_log_term(&n->mlog, c, &found);
		const struct raft_config *after = raft_configuration(n->core);
		if (found && !config_quorum(s, after, c, t) &&
		    (cfg_before == NULL || !config_quorum(s, cfg_before, c, t))) {
			char who[256] = "";
			size_t off = 0;
			for (unsigned i = 0; i < after->n && off < sizeof(who) - 40; i++)
				off += (size_t)snprintf(
				    who + off, sizeof(who) - off, " %s%s:%s", after->servers[i].id,
				    after->servers[i].role == RAFT_VOTER ? "" : "(l)",
				    durable_has(s, after->servers[i].id, c, t) ? "yes" : "no");
			for (unsigned i = 0; i < after->n_old && off < sizeof(who) - 40; i++)
				off += (size_t)snprintf(
				    who + off, sizeof(who) - off, " old:%s:%s", after->old[i].id,
				    durable_has(s, after->old[i].id, c, t) ? "yes" : "no");
			sim_fail(s,
				 "commit quorum: leader %s committed %llu (term %llu) which is not "
				 "durable on a majority of its %sconfiguration (durable:%s)",
				 n->id, (unsigned long long)c, (unsigned long long)t,
				 after->n_old > 0 ? "joint (old and new) " : "", who);
		}
	}
}

void sim_check_appended(struct sim *s, struct sim_node *n, const struct sim_entry *e,
			raft_term prev_term)
{
	if (s->failed)
		return;
	if ((s->lm_n + 1) * 2 > s->lm_cap) {
		size_t cap = s->lm_cap ? s->lm_cap * 2 : 4096;
		struct sim_lm *t = calloc(cap, sizeof(*t));
		if (t == NULL)
			abort();
		for (size_t i = 0; i < s->lm_cap; i++) {
			if (!s->lm[i].used)
				continue;
			size_t j = (s->lm[i].index * 1000003u ^ s->lm[i].term) & (cap - 1);
			while (t[j].used)
				j = (j + 1) & (cap - 1);
			t[j] = s->lm[i];
		}
		free(s->lm);
		s->lm = t;
		s->lm_cap = cap;
	}
	size_t j = (e->index * 1000003u ^ e->term) & (s->lm_cap - 1);
	while (s->lm[j].used) {
		struct sim_lm *x = &s->lm[j];
		if (x->index == e->index && x->term == e->term) {
			if (x->hash != e->hash || x->prev_term != prev_term)
				sim_fail(s,
					 "log matching: node %s has entry %llu term %llu with "
					 "previous term %llu, another node had previous term %llu "
					 "or other content",
					 n->id, (unsigned long long)e->index,
					 (unsigned long long)e->term, (unsigned long long)prev_term,
					 (unsigned long long)x->prev_term);
			return;
		}
		j = (j + 1) & (s->lm_cap - 1);
	}
	s->lm[j] = (struct sim_lm){e->index, e->term, e->hash, prev_term, true};
	s->lm_n++;
}

/* The wire carries unsigned integers below 2^63 only (API.md §7, the JSON
 * codec in api/rpc.c refuses larger ones), so a message with a larger number
 * would be dropped by every real receiver: the simulator, which passes
 * structs, checks the codec's contract instead. Returns the first offending
 * number's name, or NULL. */
static const char *wire_unencodable(const struct raft_message *x)
{
	const uint64_t lim = (uint64_t)INT64_MAX;
	const char *bad = NULL;

	if (x->term > lim)
		bad = "term";
	else if (x->type == RAFT_MSG_SNAPSHOT_RESULT &&
		 (x->u.snapshot_result.offset > lim || x->u.snapshot_result.last_index > lim))
		bad = "install-snapshot result offset or index";
	else if (x->type == RAFT_MSG_SNAPSHOT &&
		 (x->u.snapshot.offset > lim || x->u.snapshot.last_index > lim))
		bad = "install-snapshot offset or index";
	else if (x->type == RAFT_MSG_APPEND_RESULT && x->u.append_result.last_log_index > lim)
		bad = "append-entries result index";
	return bad;
}

/* Plant 1b (docs/simulation.md): SIM_PLANT_NO_PERSIST_CHECK=1 turns off the
 * check that a granted vote is durable, to see the next line of defence
 * (the double-vote check) catch an unpersisted vote. */
static bool vote_persist_check_off(void)
{
	static int off = -1;
	if (off < 0) {
		const char *e = getenv("SIM_PLANT_NO_PERSIST_CHECK");
		off = e != NULL && strcmp(e, "1") == 0;
	}
	return off == 1;
}

void sim_check_send(struct sim *s, struct sim_node *n, const struct sim_msg *m)
{
	const struct raft_message *x = &m->m;
	bool pre = (x->type == RAFT_MSG_REQUEST_VOTE && x->u.request_vote.pre_vote) ||
		   (x->type == RAFT_MSG_REQUEST_VOTE_RESULT && x->u.request_vote_result.pre_vote);

	if (s->failed)
		return;
	if (x->needs_sync && n->done_seq < m->barrier) {
		sim_fail(s, "HARNESS BUG: %s sends a needs_sync message before its barrier", n->id);
		return;
	}
	if (strcmp(x->from, n->id) != 0) {
		sim_fail(s, "node %s sends a message from \"%s\"", n->id, x->from);
		return;
	}
	if (wire_unencodable(x) != NULL) {
		sim_fail(s,
			 "wire: %s sends %s to %s whose %s is above 2^63-1 (no codec carries it)",
			 n->id, msg_name(x->type), x->to, wire_unencodable(x));
		return;
	}
	if (pre)
		return;
	if (n->d_term < x->term) {
		sim_fail(s,
			 "persist before send: %s sends %s in term %llu to %s, durable term is "
			 "%llu (needs_sync=%d)",
			 n->id, msg_name(x->type), (unsigned long long)x->term, x->to,
			 (unsigned long long)n->d_term, x->needs_sync);
		return;
	}
	if (x->type == RAFT_MSG_REQUEST_VOTE &&
	    (n->d_term != x->term || strcmp(n->d_vote, n->id) != 0)) {
		sim_fail(s,
			 "persist before send: candidate %s asks votes in term %llu but its "
			 "durable term/vote is %llu/\"%s\" (needs_sync=%d)",
			 n->id, (unsigned long long)x->term, (unsigned long long)n->d_term,
			 n->d_vote, x->needs_sync);
		return;
	}
	if (x->type == RAFT_MSG_REQUEST_VOTE_RESULT && x->u.request_vote_result.granted) {
		if (!vote_persist_check_off() &&
		    (n->d_term != x->term || strcmp(n->d_vote, x->to) != 0)) {
			sim_fail(s,
				 "persist before send: %s grants its vote in term %llu to %s but "
				 "its durable term/vote is %llu/\"%s\" (needs_sync=%d)",
				 n->id, (unsigned long long)x->term, x->to,
				 (unsigned long long)n->d_term, n->d_vote, x->needs_sync);
			return;
		}
		if (s->p.trace)
			printf("%8llu %s grants its vote in term %llu to %s\n",
			       (unsigned long long)s->now, n->id, (unsigned long long)x->term,
			       x->to);
		int to = -1;
		for (unsigned i = 0; i < s->n_nodes; i++)
			if (strcmp(s->nodes[i].id, x->to) == 0)
				to = (int)i;
		n->granted = grow(n->granted, &n->cap_granted, x->term, 1);
		if (n->granted[x->term] != 0 && n->granted[x->term] != to + 1) {
			sim_fail(s, "double vote: %s granted votes to %s and %s in term %llu",
				 n->id, s->nodes[n->granted[x->term] - 1].id, x->to,
				 (unsigned long long)x->term);
			return;
		}
		n->granted[x->term] = (unsigned char)(to + 1);
	}
	if (x->type == RAFT_MSG_APPEND_RESULT && x->u.append_result.success) {
		raft_index l = x->u.append_result.last_log_index;
		if (s->p.trace)
			printf("%8llu %s -> %s ack %llu term %llu (msg term %llu), durable log "
			       "%llu..%llu, snapshot %llu\n",
			       (unsigned long long)s->now, n->id, x->to, (unsigned long long)l,
			       (unsigned long long)m->expect_term, (unsigned long long)x->term,
			       (unsigned long long)n->dlog.first,
			       (unsigned long long)sim_log_last(&n->dlog),
			       (unsigned long long)n->dsnap.meta.index);
		bool found;
		raft_term t = sim_log_term(&n->dlog, l, &found);
		if (l > 0 && n->dsnap.meta.index < l && (!found || t != m->expect_term))
			sim_fail(
			    s,
			    "persist before send: %s acknowledges index %llu (term %llu) to %s "
			    "but holds durably only up to %llu (needs_sync=%d)",
			    n->id, (unsigned long long)l, (unsigned long long)m->expect_term, x->to,
			    (unsigned long long)sim_log_last(&n->dlog), x->needs_sync);
		/* Remember the promise: no job submitted before it may remove
		 * that entry (checked by sim_check_truncation). */
		if (l > 0 && x->term >= n->ack_term) {
			n->ack_index = l;
			n->ack_term = x->term;
			/* Requests issued when the core produced it: a held
			 * message's barrier, else (sent at once) those so far. */
			n->ack_seq = m->barrier != 0 ? m->barrier : n->issued_seq;
		}
	}
}

void sim_check_truncation(struct sim *s, struct sim_node *n, uint64_t seq, raft_index from)
{
	if (from != 0 && n->ack_index >= from && seq <= n->ack_seq)
		sim_fail(s,
			 "acknowledged entry removed: %s acknowledged index %llu in term %llu, "
			 "then a log job submitted before that acknowledgement (seq %llu <= "
			 "%llu) truncated from %llu",
			 n->id, (unsigned long long)n->ack_index, (unsigned long long)n->ack_term,
			 (unsigned long long)seq, (unsigned long long)n->ack_seq,
			 (unsigned long long)from);
}

void sim_check_durable_meta(struct sim *s, struct sim_node *n, raft_term term, const char *vote)
{
	if (term < n->d_term)
		sim_fail(s, "node %s: durable term goes from %llu to %llu", n->id,
			 (unsigned long long)n->d_term, (unsigned long long)term);
	else if (term == n->d_term && n->d_vote[0] != '\0' && strcmp(vote, n->d_vote) != 0)
		sim_fail(s, "node %s: durable vote in term %llu changes from \"%s\" to \"%s\"",
			 n->id, (unsigned long long)term, n->d_vote, vote);
}

static void check_state_hash(struct sim *s, struct sim_node *n, raft_index i)
{
	uint64_t h = sim_kv_hash(n->kv);
	s->state_hash = grow(s->state_hash, &s->cap_state_hash, i, sizeof(*s->state_hash));
	struct sim_rec *r = &s->state_hash[i];
	if (!r->set) {
		r->set = true;
		r->hash = h;
	} else if (r->hash != h) {
		sim_fail(s, "state machine safety: node %s state after index %llu differs", n->id,
			 (unsigned long long)i);
	}
}

void sim_check_applied(struct sim *s, struct sim_node *n, const struct sim_entry *e)
{
	if (s->failed)
		return;
	if (e->index > n->commit) {
		sim_fail(s, "node %s applies %llu beyond its commit index %llu", n->id,
			 (unsigned long long)e->index, (unsigned long long)n->commit);
		return;
	}
	if (e->index >= s->cap_committed || !s->committed[e->index].set ||
	    s->committed[e->index].term != e->term || s->committed[e->index].hash != e->hash) {
		sim_fail(s,
			 "state machine safety: node %s applies %llu term %llu not the committed "
			 "entry",
			 n->id, (unsigned long long)e->index, (unsigned long long)e->term);
		return;
	}
	check_state_hash(s, n, e->index);
}

void sim_check_snapshot_state(struct sim *s, struct sim_node *n)
{
	if (!s->failed)
		check_state_hash(s, n, n->applied);
}

void sim_check_free(struct sim *s)
{
	free(s->leader_of);
	free(s->committed);
	free(s->state_hash);
	free(s->lm);
}
