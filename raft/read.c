/*
 * read.c: linearizable reads by read index (thesis §6.4).
 *
 * A read on the leader waits until (1) the leader has committed an entry of
 * its own term (its commit index is then at least that of any earlier
 * leader), (2) a heartbeat round started after the read arrived has been
 * acknowledged by a majority (it was still leader when the read arrived),
 * and (3) the state machine has applied up to the read index (the commit
 * index when the round started). All reads waiting when a round starts share
 * it; only one round is outstanding at a time, the next one starts when it
 * completes. A round is a sequence number carried in AppendEntries (seq)
 * and echoed in their results. A leader that steps down fails every
 * pending read (KVD_ENOTLEADER).
 */
#include "raft/core.h"
#include "raft/plant.h"

#include <stdlib.h>
#include <string.h>

int raft_read_request(struct raft_core *r, uint64_t token)
{
	struct raft_pending_read *rd;

	if (r->role != RAFT_LEADER)
		return KVD_ENOTLEADER;
	if (r->n_reads == r->cap_reads) {
		unsigned cap = r->cap_reads ? r->cap_reads * 2 : 16;
		struct raft_pending_read *p = realloc(r->reads, cap * sizeof(*p));
		if (p == NULL)
			return KVD_ENOMEM;
		r->reads = p;
		r->cap_reads = cap;
	}
	rd = &r->reads[r->n_reads++];
	rd->token = token;
	rd->index = 0;
	rd->seq = 0;
	rd->confirmed = false;
	return 0;
}

/* Quorum predicate: self, or a follower that acknowledged round *ctx. */
static bool is_self_or_acked(const struct raft_core *r, const char *id, void *ctx)
{
	uint64_t seq = *(const uint64_t *)ctx;
	struct raft_progress *p;

	if (strcmp(id, r->id) == 0)
		return true;
	p = raft_progress_find((struct raft_core *)r, id);
	return p != NULL && p->acked_seq >= seq;
}

void raft_read_advance(struct raft_core *r)
{
	bool outstanding = false, unassigned = false;
	unsigned k = 0;

	if (r->role != RAFT_LEADER || r->n_reads == 0)
		return;
	if (raft_log_term_at(&r->log, r->commit) != r->term)
		return; /* no entry of this term committed yet */
	for (unsigned i = 0; i < r->n_reads; i++) {
		struct raft_pending_read *rd = &r->reads[i];
		if (rd->seq != 0 && !rd->confirmed)
			rd->confirmed = raft_election_quorum(r, is_self_or_acked, &rd->seq);
		outstanding = outstanding || (rd->seq != 0 && !rd->confirmed);
		unassigned = unassigned || rd->seq == 0;
	}
	if (unassigned && !outstanding) {
		bool confirmed;
		uint64_t seq = ++r->seq;
		confirmed = RAFT_PLANTED(read_without_heartbeat) ||
			    raft_election_quorum(r, is_self_or_acked, &seq);
		for (unsigned i = 0; i < r->n_reads; i++) {
			if (r->reads[i].seq == 0) {
				r->reads[i].seq = seq;
				r->reads[i].index = r->commit;
				r->reads[i].confirmed = confirmed;
			}
		}
		if (!confirmed)
			raft_replication_heartbeat(r);
	}
	for (unsigned i = 0; i < r->n_reads; i++) {
		struct raft_pending_read *rd = &r->reads[i];
		if (rd->confirmed && r->applied >= rd->index)
			raft_core_read_ready(r, rd->token, rd->index);
		else
			r->reads[k++] = *rd;
	}
	r->n_reads = k;
}

void raft_read_fail_all(struct raft_core *r, int error)
{
	for (unsigned i = 0; i < r->n_reads; i++)
		raft_core_read_failed(r, r->reads[i].token, error);
	r->n_reads = 0;
}
