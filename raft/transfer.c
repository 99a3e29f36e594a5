/*
 * transfer.c: leadership transfer (thesis §3.10).
 *
 * The leader stops accepting proposals and changes, brings the target's log
 * up to date, then sends it TimeoutNow. The target starts an election at
 * once (no pre-vote) with transfer set, so voters that still hear from the
 * old leader grant it anyway. If the target has not taken over within
 * election_timeout_max ms the leader aborts and accepts proposals again.
 */
#include "raft/core.h"

#include <stdio.h>
#include <string.h>

int raft_transfer_start(struct raft_core *r, const char *to)
{
	struct raft_progress *p = NULL;

	if (r->role != RAFT_LEADER)
		return KVD_ENOTLEADER;
	if (r->transfer_to[0] != '\0' || r->change.phase != RAFT_CHANGE_NONE)
		return KVD_EBUSY;
	if (to == NULL || to[0] == '\0') {
		for (unsigned i = 0; i < r->n_peers; i++) {
			struct raft_progress *q = &r->peers[i];
			if (raft_core_is_voter(r, q->id) && (p == NULL || q->match > p->match))
				p = q;
		}
		if (p == NULL)
			return KVD_EINVAL;
	} else {
		if (strcmp(to, r->id) == 0)
			return 0;
		p = raft_progress_find(r, to);
		if (p == NULL || !raft_core_is_voter(r, to))
			return KVD_EINVAL;
	}
	snprintf(r->transfer_to, sizeof(r->transfer_to), "%s", p->id);
	r->transfer_deadline = r->now + r->o.election_timeout_max;
	r->transfer_sent = false;
	r->stats.transfers_started++;
	raft_core_note(r, RAFT_NOTE_TRANSFER_STARTED, p->id, r->term, 0, "");
	if (p->match < raft_log_last_index(&r->log))
		raft_replication_send(r, p, false);
	return 0;
}

void raft_transfer_advance(struct raft_core *r)
{
	struct raft_progress *p;

	if (r->transfer_to[0] == '\0')
		return;
	if (r->now >= r->transfer_deadline) {
		raft_core_note(r, RAFT_NOTE_TRANSFER_ABORTED, r->transfer_to, r->term, 0,
			       "target did not take over in time");
		raft_transfer_abort(r);
		return;
	}
	/* TimeoutNow is resent every heartbeat interval in case it was lost;
	 * a copy arriving after the target's election has a stale term. */
	if (r->transfer_sent && r->now < r->transfer_sent_at + r->o.heartbeat_interval)
		return;
	p = raft_progress_find(r, r->transfer_to);
	if (p == NULL) {
		raft_transfer_abort(r);
		return;
	}
	if (p->match == raft_log_last_index(&r->log)) {
		raft_core_msg(r, RAFT_MSG_TIMEOUT_NOW, p->id, 0);
		r->transfer_sent = true;
		r->transfer_sent_at = r->now;
	}
}

void raft_transfer_abort(struct raft_core *r)
{
	r->transfer_to[0] = '\0';
	r->transfer_sent = false;
}

void raft_transfer_recv_timeout_now(struct raft_core *r, const struct raft_message *m)
{
	if (m->term < r->term)
		return;
	if (m->term > r->term || r->role != RAFT_FOLLOWER)
		raft_election_become_follower(r, m->term, m->from, "higher term seen");
	if (!raft_core_is_voter(r, r->id))
		return;
	raft_election_campaign(r, false, true);
}
