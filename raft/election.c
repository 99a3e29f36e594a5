/*
 * election.c: leader election (Raft paper §5.2, §5.4.1; thesis §9.6 pre-vote,
 * §6.2 / §9.6 check-quorum and leader leases against disruptive servers).
 *
 * Followers wait a randomized election timeout in [election_timeout_min,
 * election_timeout_max) ms; when it passes without hearing from a leader they
 * forget the leader and, if they are voters, campaign. With pre-vote the
 * campaign first asks "would you vote for me at term+1?" without changing
 * any state; only a majority of yeses starts a real election (term+1, vote
 * for self, both persisted before RequestVote leaves: needs_sync).
 *
 * A server that heard from a live leader within election_timeout_min (a
 * leader always does) refuses votes and pre-votes and does not adopt the
 * requester's term, unless the request carries transfer (thesis §3.10).
 *
 * Invariants: at most one vote per term (voted_for persisted with the term
 * before the grant is sent); a vote goes only to a candidate whose log is at
 * least as up to date (§5.4.1). Joint configurations need a majority of both
 * voter sets (§6).
 */
#include "raft/core.h"
#include "raft/plant.h"

#include <stdio.h>
#include <string.h>

void raft_election_reset_timer(struct raft_core *r)
{
	raft_time span = r->o.election_timeout_max - r->o.election_timeout_min;

	r->election_deadline = r->now + r->o.election_timeout_min + raft_core_random(r) % span;
}

bool raft_election_in_lease(const struct raft_core *r)
{
	if (!r->o.check_quorum)
		return false;
	if (r->role == RAFT_LEADER)
		return true;
	return r->leader[0] != '\0' && r->now < r->leader_contact + r->o.election_timeout_min;
}

static bool majority(const struct raft_core *r, const struct raft_server *s, unsigned n,
		     bool (*has)(const struct raft_core *, const char *, void *), void *ctx)
{
	unsigned voters = 0, yes = 0;

	for (unsigned i = 0; i < n; i++) {
		if (s[i].role != RAFT_VOTER)
			continue;
		voters++;
		yes += has(r, s[i].id, ctx);
	}
	return voters > 0 && yes > voters / 2;
}

bool raft_election_quorum(const struct raft_core *r,
			  bool (*has)(const struct raft_core *, const char *, void *), void *ctx)
{
	if (!majority(r, r->config.servers, r->config.n, has, ctx))
		return false;
	if (r->config.n_old > 0 && !majority(r, r->config.old, r->config.n_old, has, ctx))
		return false;
	return true;
}

void raft_election_become_follower(struct raft_core *r, raft_term term, const char *leader,
				   const char *reason)
{
	bool was_leader = r->role == RAFT_LEADER;

	if (r->role != RAFT_FOLLOWER) {
		r->stats.step_downs++;
		raft_core_note(r, RAFT_NOTE_STEPPED_DOWN, leader, term, 0, reason);
	}

	if (term > r->term)
		raft_core_meta_set(r, term, "");
	r->role = RAFT_FOLLOWER;
	r->pre_candidate = false;
	snprintf(r->leader, sizeof(r->leader), "%s", leader ? leader : "");
	if (r->leader[0] != '\0')
		r->leader_contact = r->now;
	if (was_leader) {
		raft_read_fail_all(r, KVD_ENOTLEADER);
		raft_membership_abort(r, KVD_EUNKNOWN);
		raft_transfer_abort(r);
		raft_progress_free_all(r);
	}
	raft_election_reset_timer(r);
}

static bool has_vote(const struct raft_core *r, const char *id, void *ctx)
{
	(void)ctx;
	for (unsigned i = 0; i < r->n_votes; i++) {
		if (strcmp(r->votes[i], id) == 0)
			return true;
	}
	return false;
}

static void add_vote(struct raft_core *r, const char *id)
{
	if (has_vote(r, id, NULL) || r->n_votes >= RAFT_MAX_PEERS)
		return;
	size_t len = strnlen(id, RAFT_ID_SIZE - 1);
	memmove(r->votes[r->n_votes], id, len); /* id may live inside r */
	r->votes[r->n_votes++][len] = '\0';
}

/* §5.2 / §8: a new leader initializes every follower's progress, appends a
 * no-op of its term (so that it can commit, and so serve reads, §6.4) and
 * asserts itself with an immediate AppendEntries round. */
static void become_leader(struct raft_core *r)
{
	r->role = RAFT_LEADER;
	r->pre_candidate = false;
	strcpy(r->leader, r->id);
	r->stats.elections_won++;
	raft_core_note(r, RAFT_NOTE_ELECTION_WON, "", r->term, 0, "");
	r->leader_since = r->now;
	r->transfer_to[0] = '\0';
	memset(&r->change, 0, sizeof(r->change));
	raft_progress_reset_all(r);
	raft_core_append(r, RAFT_ENTRY_NOOP, NULL, 0);
	raft_replication_heartbeat(r);
}

static void send_requests(struct raft_core *r, bool pre_vote, bool transfer)
{
	const struct raft_config *c = &r->config;
	char sent[RAFT_MAX_PEERS][RAFT_ID_SIZE];
	unsigned n_sent = 0;

	for (unsigned set = 0; set < 2; set++) {
		const struct raft_server *s = set == 0 ? c->servers : c->old;
		unsigned n = set == 0 ? c->n : c->n_old;
		for (unsigned i = 0; i < n; i++) {
			struct raft_message *m;
			bool dup = false;
			if (s[i].role != RAFT_VOTER || strcmp(s[i].id, r->id) == 0)
				continue;
			for (unsigned k = 0; k < n_sent; k++)
				dup = dup || strcmp(sent[k], s[i].id) == 0;
			if (dup)
				continue;
			strcpy(sent[n_sent++], s[i].id);
			m = raft_core_msg(r, RAFT_MSG_REQUEST_VOTE, s[i].id, 0);
			m->term = pre_vote ? r->term + 1 : r->term;
			m->u.request_vote.last_log_index = raft_log_last_index(&r->log);
			m->u.request_vote.last_log_term = raft_log_last_term(&r->log);
			m->u.request_vote.pre_vote = pre_vote;
			m->u.request_vote.transfer = transfer;
			m->needs_sync = !pre_vote;
		}
	}
}

void raft_election_campaign(struct raft_core *r, bool pre_vote, bool transfer)
{
	if (!raft_core_is_voter(r, r->id))
		return;
	r->n_votes = 0;
	r->transfer_campaign = transfer;
	r->leader[0] = '\0';
	if (pre_vote) {
		r->role = RAFT_FOLLOWER;
		r->pre_candidate = true;
	} else {
		r->role = RAFT_CANDIDATE;
		r->pre_candidate = false;
		raft_core_meta_set(r, r->term + 1, r->id);
	}
	if (pre_vote)
		r->stats.pre_votes_started++;
	else
		r->stats.elections_started++;
	raft_core_note(r, RAFT_NOTE_ELECTION_STARTED, "", pre_vote ? r->term + 1 : r->term, 0,
		       pre_vote ? "pre-vote" : (transfer ? "transfer" : "election"));
	add_vote(r, r->id);
	raft_election_reset_timer(r);
	if (raft_election_quorum(r, has_vote, NULL)) {
		if (pre_vote)
			raft_election_campaign(r, false, transfer);
		else
			become_leader(r);
		return;
	}
	send_requests(r, pre_vote, transfer);
}

void raft_election_tick(struct raft_core *r)
{
	if (r->now < r->election_deadline)
		return;
	/* No word from a leader for a whole election timeout (§5.2). */
	r->leader[0] = '\0';
	if (raft_core_is_voter(r, r->id))
		raft_election_campaign(r, r->o.pre_vote, false);
	else
		raft_election_reset_timer(r);
}

/* Answers a (pre-)vote request; reason is "" when granted. */
static void reply_vote(struct raft_core *r, const struct raft_message *m, bool granted,
		       raft_term term, const char *reason)
{
	struct raft_message *out = raft_core_msg(r, RAFT_MSG_REQUEST_VOTE_RESULT, m->from, 0);
	bool pre = m->u.request_vote.pre_vote;

	out->term = term;
	out->token = m->token;
	out->u.request_vote_result.granted = granted;
	out->u.request_vote_result.pre_vote = pre;
	out->needs_sync = !pre;
	if (!pre) {
		if (granted)
			r->stats.votes_granted++;
		else
			r->stats.votes_refused++;
	}
	raft_core_note(r,
		       granted ? (pre ? RAFT_NOTE_PRE_VOTE_GRANTED : RAFT_NOTE_VOTE_GRANTED)
			       : (pre ? RAFT_NOTE_PRE_VOTE_REFUSED : RAFT_NOTE_VOTE_REFUSED),
		       m->from, m->term, m->u.request_vote.last_log_index, reason);
}

void raft_election_recv_vote(struct raft_core *r, const struct raft_message *m)
{
	const struct raft_request_vote *rv = &m->u.request_vote;
	raft_term last_term = raft_log_last_term(&r->log);
	bool up_to_date, free_vote;

	if (m->term < r->term) {
		reply_vote(r, m, false, r->term, "stale term");
		return;
	}
	/* Leader lease (thesis §9.6): a live leader exists, so this request
	 * can only disrupt it. Do not even adopt its term. */
	if (m->term > r->term && raft_election_in_lease(r) && !rv->transfer) {
		reply_vote(r, m, false, r->term, "leader lease active");
		return;
	}
	if (!rv->pre_vote && m->term > r->term)
		raft_election_become_follower(r, m->term, "", "higher term seen");
	up_to_date =
	    rv->last_log_term > last_term ||
	    (rv->last_log_term == last_term && rv->last_log_index >= raft_log_last_index(&r->log));
	if (!up_to_date) {
		reply_vote(r, m, false, r->term, "log not up to date");
		return;
	}
	if (rv->pre_vote) {
		/* §9.6: grant if it could win at term+1; nothing changes here. */
		if (m->term > r->term || (r->voted_for[0] == '\0' && r->leader[0] == '\0'))
			reply_vote(r, m, true, m->term, "");
		else
			reply_vote(r, m, false, r->term, "already voted in this term");
		return;
	}
	if (r->role == RAFT_LEADER) {
		reply_vote(r, m, false, r->term, "is leader");
		return;
	}
	free_vote = r->voted_for[0] == '\0' || strcmp(r->voted_for, m->from) == 0;
	if (!free_vote) {
		reply_vote(r, m, false, r->term, "already voted in this term");
		return;
	}
	if (RAFT_PLANTED(vote_not_persisted))
		snprintf(r->voted_for, sizeof(r->voted_for), "%s", m->from);
	else
		raft_core_meta_set(r, r->term, m->from);
	raft_election_reset_timer(r);
	reply_vote(r, m, true, r->term, "");
}

void raft_election_recv_vote_result(struct raft_core *r, const struct raft_message *m)
{
	const struct raft_request_vote_result *res = &m->u.request_vote_result;

	if (res->pre_vote) {
		if (!r->pre_candidate)
			return;
		if (!res->granted && m->term > r->term) {
			raft_election_become_follower(r, m->term, "", "higher term seen");
			return;
		}
		if (res->granted && m->term == r->term + 1) {
			add_vote(r, m->from);
			if (raft_election_quorum(r, has_vote, NULL))
				raft_election_campaign(r, false, r->transfer_campaign);
		}
		return;
	}
	if (m->term > r->term) {
		raft_election_become_follower(r, m->term, "", "higher term seen");
		return;
	}
	if (m->term < r->term || r->role != RAFT_CANDIDATE || !res->granted)
		return;
	add_vote(r, m->from);
	if (raft_election_quorum(r, has_vote, NULL))
		become_leader(r);
}
