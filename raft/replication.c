/*
 * replication.c: log replication and commitment (Raft paper §5.3, §5.4.2;
 * thesis §3.5, §10.2), plus the leader's per-follower progress and
 * check-quorum (thesis §6.2).
 *
 * The leader tracks each other server (progress.c) in one of three states:
 *  - probe: one AppendEntries at a time (paused until answered or the next
 *    heartbeat), used after election and after any rejection;
 *  - replicate: pipelined, up to max_inflight_msgs messages and
 *    max_inflight_bytes entry bytes not yet acknowledged; next advances
 *    optimistically;
 *  - snapshot: the follower needs entries before the first one in memory, an
 *    InstallSnapshot stream runs (snapshot.c).
 * Each AppendEntries carries as many entries as fit in max_msg_bytes (at
 * least one). A rejection carries conflict_term / conflict_index so the
 * leader skips a whole term per round trip (§5.3, "fast backtracking").
 *
 * The leader sends before its own write is durable (thesis §10.2.1) and
 * counts itself only up to its persisted index. An index commits when a
 * majority of every voter set (both, in a joint configuration) holds it and
 * its entry is of the leader's current term (§5.4.2: older entries commit
 * only indirectly, Figure 8).
 *
 * Followers truncate a conflicting suffix (never a committed entry), append,
 * advance commit to min(leader_commit, last entry the request matched), and
 * answer only after the log write is durable (needs_sync).
 */
#include "raft/core.h"
#include "raft/plant.h"

#include <stdlib.h>
#include <string.h>

/* Sends one AppendEntries after prev, with entries if with_entries. Returns
 * the last index carried (prev if none), or 0 if prev is no longer in
 * memory (the caller then needs a snapshot). */
static raft_index send_append(struct raft_core *r, struct raft_progress *p, raft_index prev,
			      bool with_entries, size_t *bytes)
{
	raft_index last = raft_log_last_index(&r->log);
	raft_index i = prev + 1;
	struct raft_message *m;
	size_t sum = 0;

	if (prev < r->log.offset || prev > last)
		return 0;
	if (with_entries) {
		for (; i <= last; i++) {
			size_t len = raft_log_get(&r->log, i)->len;
			if (i > prev + 1 && sum + len > r->o.max_msg_bytes)
				break;
			sum += len;
		}
	}
	m = raft_core_msg(r, RAFT_MSG_APPEND, p->id, prev + 1);
	m->u.append.prev_log_index = prev;
	m->u.append.prev_log_term = raft_log_term_at(&r->log, prev);
	m->u.append.leader_commit = r->commit;
	m->u.append.seq = r->seq;
	m->u.append.n_entries = (unsigned)(i - prev - 1);
	if (bytes != NULL)
		*bytes = sum;
	return i - 1;
}

/* An empty AppendEntries that only asserts leadership (and carries commit
 * and the heartbeat round); prev = match so that it normally succeeds. */
static void send_keepalive(struct raft_core *r, struct raft_progress *p)
{
	raft_index prev = p->match;

	if (prev < r->log.offset)
		prev = r->log.offset;
	if (prev > raft_log_last_index(&r->log))
		prev = raft_log_last_index(&r->log);
	send_append(r, p, prev, false, NULL);
}

void raft_replication_send(struct raft_core *r, struct raft_progress *p, bool heartbeat)
{
	raft_index last = raft_log_last_index(&r->log);

	switch (p->state) {
	case RAFT_PROGRESS_SNAPSHOT:
		if (heartbeat)
			send_keepalive(r, p);
		return;
	case RAFT_PROGRESS_PROBE:
		if (p->paused && !heartbeat)
			return;
		if (p->next - 1 < r->log.offset) {
			raft_snapshot_send(r, p);
			return;
		}
		send_append(r, p, p->next - 1, true, NULL);
		p->paused = true;
		return;
	case RAFT_PROGRESS_REPLICATE:
		if (p->next - 1 < r->log.offset) {
			raft_snapshot_send(r, p);
			return;
		}
		if (heartbeat && p->next == p->match + 1) {
			send_keepalive(r, p);
			if (p->next > last)
				return;
		} else if (heartbeat && (raft_progress_inflight_full(r, p) || p->next > last)) {
			/* Entries are outstanding: an empty request after the
			 * last one sent is rejected if any of them was lost,
			 * which sends the follower back to probe. */
			send_append(r, p, p->next - 1, false, NULL);
			return;
		}
		while (!raft_progress_inflight_full(r, p) && p->next <= last) {
			size_t bytes = 0;
			raft_index sent = send_append(r, p, p->next - 1, true, &bytes);
			if (sent == 0)
				break;
			raft_progress_inflight_add(r, p, sent, bytes);
			p->next = sent + 1;
		}
		return;
	}
}

void raft_replication_flush(struct raft_core *r)
{
	for (unsigned i = 0; i < r->n_peers; i++)
		raft_replication_send(r, &r->peers[i], false);
}

void raft_replication_heartbeat(struct raft_core *r)
{
	for (unsigned i = 0; i < r->n_peers; i++)
		raft_replication_send(r, &r->peers[i], true);
	r->heartbeat_deadline = r->now + r->o.heartbeat_interval;
}

static int cmp_desc(const void *a, const void *b)
{
	raft_index x = *(const raft_index *)a, y = *(const raft_index *)b;

	return x < y ? 1 : (x > y ? -1 : 0);
}

/* The highest index a majority of the voters in s[0..n) hold; 0 if none. */
static raft_index quorum_match(struct raft_core *r, const struct raft_server *s, unsigned n)
{
	raft_index m[RAFT_MAX_SERVERS];
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++) {
		struct raft_progress *p;
		if (s[i].role != RAFT_VOTER)
			continue;
		if (strcmp(s[i].id, r->id) == 0) {
			m[k++] = r->persisted;
			continue;
		}
		p = raft_progress_find(r, s[i].id);
		m[k++] = p != NULL ? p->match : 0;
	}
	if (k == 0)
		return 0;
	qsort(m, k, sizeof(m[0]), cmp_desc);
	return m[k / 2];
}

void raft_replication_maybe_commit(struct raft_core *r)
{
	raft_index n = quorum_match(r, r->config.servers, r->config.n);

	if (r->config.n_old > 0 && !RAFT_PLANTED(joint_new_majority_only)) {
		raft_index o = quorum_match(r, r->config.old, r->config.n_old);
		if (o < n)
			n = o;
	}
	if (n > raft_log_last_index(&r->log))
		n = raft_log_last_index(&r->log);
	/* §5.4.2: only an entry of the current term commits by counting. */
	if (n > r->commit &&
	    (RAFT_PLANTED(earlier_term_commit) || raft_log_term_at(&r->log, n) == r->term))
		r->commit = n;
}

static void reply_append(struct raft_core *r, const struct raft_message *m, bool success,
			 raft_index last, raft_index reject, raft_term cterm, raft_index cindex)
{
	struct raft_message *out = raft_core_msg(r, RAFT_MSG_APPEND_RESULT, m->from, 0);

	out->token = m->token;
	out->u.append_result.success = success;
	out->u.append_result.last_log_index = last;
	out->u.append_result.reject_index = reject;
	out->u.append_result.conflict_term = cterm;
	out->u.append_result.conflict_index = cindex;
	out->u.append_result.seq = m->u.append.seq;
}

static bool entries_valid(const struct raft_message *m)
{
	const struct raft_append *a = &m->u.append;
	raft_term t = a->prev_log_term;

	if (a->n_entries > 0 && a->entries == NULL)
		return false;
	for (unsigned i = 0; i < a->n_entries; i++) {
		const struct raft_entry *e = &a->entries[i];
		if (e->index != a->prev_log_index + 1 + i || e->term < t || e->term > m->term ||
		    (e->len > 0 && e->data == NULL))
			return false;
		if (e->type != RAFT_ENTRY_COMMAND && e->type != RAFT_ENTRY_NOOP &&
		    e->type != RAFT_ENTRY_CONFIG)
			return false;
		t = e->term;
	}
	return true;
}

/* Appends a's entries after prev (already consistent), truncating a
 * conflicting suffix. Returns false if that would touch a committed entry. */
static bool follower_append(struct raft_core *r, const struct raft_append *a)
{
	bool config = false;

	for (unsigned i = 0; i < a->n_entries; i++) {
		const struct raft_entry *e = &a->entries[i];
		raft_index last = raft_log_last_index(&r->log);
		if (e->index <= r->log.offset)
			continue;
		if (e->index <= last) {
			if (raft_log_term_at(&r->log, e->index) == e->term)
				continue;
			if (RAFT_PLANTED(keep_conflicting_suffix))
				continue;
			if (e->index <= r->commit)
				return false; /* safety: committed entries never change */
			raft_log_truncate(&r->log, e->index);
			if (r->u->truncate_from == 0 || e->index < r->u->truncate_from)
				r->u->truncate_from = e->index;
			if (r->persisted >= e->index)
				r->persisted = e->index - 1;
			if (r->u_append_from >= e->index)
				r->u_append_from = 0;
			config = true; /* the removed suffix may have held one */
		}
		if (raft_log_append(&r->log, e) != 0) {
			r->nomem = KVD_ENOMEM;
			break;
		}
		if (r->u_append_from == 0)
			r->u_append_from = e->index;
		config = config || e->type == RAFT_ENTRY_CONFIG;
	}
	if (config)
		raft_core_config_refresh(r);
	return true;
}

void raft_replication_recv_append(struct raft_core *r, const struct raft_message *m)
{
	const struct raft_append *a = &m->u.append;
	raft_index last, prev = a->prev_log_index, matched;
	raft_term t;

	if (m->term < r->term) {
		/* A stale leader learns the new term from this answer (§5.1). */
		reply_append(r, m, false, raft_log_last_index(&r->log), prev, 0, 0);
		return;
	}
	raft_election_become_follower(r, m->term, m->from,
				      m->term > r->term ? "higher term seen" : "leader elected");
	if (!entries_valid(m))
		return;
	if (raft_snapshot_rx_blocks_append(r, m)) {
		/* Busy receiving a snapshot: a refusal that claims prev, so the
		 * leader neither walks next back nor takes it as a mismatch. */
		reply_append(r, m, false, prev, prev, 0, 0);
		return;
	}
	last = raft_log_last_index(&r->log);
	if (prev > last) {
		reply_append(r, m, false, last, prev, 0, last + 1);
		return;
	}
	if (prev >= r->log.offset) {
		t = raft_log_term_at(&r->log, prev);
		if (t != a->prev_log_term) {
			raft_index first = prev;
			while (first - 1 > r->log.offset &&
			       raft_log_term_at(&r->log, first - 1) == t)
				first--;
			reply_append(r, m, false, last, prev, t, first);
			return;
		}
	}
	if (!follower_append(r, a))
		return;
	matched = prev + a->n_entries;
	if (matched < r->log.offset)
		matched = r->log.offset;
	if (a->leader_commit > r->commit) {
		raft_index c = a->leader_commit < matched ? a->leader_commit : matched;
		if (c > r->commit)
			r->commit = c;
	}
	reply_append(r, m, true, matched, 0, 0, 0);
}

/* Next index to try after a rejection, from the follower's hints (§5.3). */
static raft_index backtrack(struct raft_core *r, const struct raft_append_result *res)
{
	raft_index next;

	if (res->conflict_term != 0) {
		raft_index i = res->reject_index;
		if (i > raft_log_last_index(&r->log))
			i = raft_log_last_index(&r->log);
		while (i > r->log.offset && raft_log_term_at(&r->log, i) > res->conflict_term)
			i--;
		if (i > r->log.offset && raft_log_term_at(&r->log, i) == res->conflict_term)
			next = i + 1;
		else
			next = res->conflict_index;
	} else {
		next = res->last_log_index + 1;
	}
	if (next > res->reject_index)
		next = res->reject_index;
	return next;
}

void raft_replication_recv_result(struct raft_core *r, const struct raft_message *m)
{
	const struct raft_append_result *res = &m->u.append_result;
	struct raft_progress *p;

	if (m->term > r->term) {
		raft_election_become_follower(r, m->term, "", "higher term seen");
		return;
	}
	if (m->term < r->term || r->role != RAFT_LEADER)
		return;
	p = raft_progress_find(r, m->from);
	if (p == NULL)
		return;
	p->last_contact = r->now;
	if (res->seq > p->acked_seq && res->seq <= r->seq)
		p->acked_seq = res->seq;
	if (res->success) {
		raft_index idx = res->last_log_index;
		bool progressed = idx > p->match;
		if (idx > raft_log_last_index(&r->log))
			return; /* we never sent that */
		if (progressed) {
			p->match = idx;
			p->catchup_time = r->now;
		}
		if (p->state == RAFT_PROGRESS_PROBE) {
			raft_progress_become_replicate(p);
		} else if (p->state == RAFT_PROGRESS_REPLICATE) {
			raft_progress_inflight_free_to(r, p, p->match);
			if (p->next <= p->match)
				p->next = p->match + 1;
		} else if (p->match >= p->snap_index) {
			raft_progress_become_probe(p);
		} else {
			raft_snapshot_peer_heard(r, p);
		}
		raft_replication_send(r, p, false);
		return;
	}
	r->stats.appends_rejected++;
	if (!RAFT_PLANTED(busy_walkback) && res->conflict_term == 0 && res->conflict_index == 0 &&
	    res->last_log_index >= res->reject_index) {
		/* Busy with a snapshot: next stays (retried on the next
		 * heartbeat), and a chunk of ours lost mid-stream is resent. */
		raft_snapshot_peer_heard(r, p);
		return;
	}
	if (p->state == RAFT_PROGRESS_SNAPSHOT) {
		raft_snapshot_peer_heard(r, p);
		return;
	}
	if (res->reject_index <= p->match)
		return; /* stale */
	if (p->state == RAFT_PROGRESS_PROBE && res->reject_index != p->next - 1)
		return; /* answer to an earlier probe */
	{
		raft_index next = backtrack(r, res);
		raft_progress_become_probe(p);
		if (next > p->match + 1)
			p->next = next;
	}
	raft_replication_send(r, p, false);
}

static bool recently_heard(const struct raft_core *r, const char *id, void *ctx)
{
	struct raft_progress *p;

	(void)ctx;
	if (strcmp(id, r->id) == 0)
		return true;
	p = raft_progress_find((struct raft_core *)r, id);
	return p != NULL && p->last_contact + r->o.election_timeout_min > r->now;
}

void raft_replication_tick(struct raft_core *r)
{
	/* Check-quorum (thesis §6.2): a leader cut off from a majority for an
	 * election timeout steps down, so clients can find the real leader. */
	if (r->o.check_quorum && r->now >= r->leader_since + r->o.election_timeout_min &&
	    !raft_election_quorum(r, recently_heard, NULL)) {
		raft_election_become_follower(r, r->term, "", "check-quorum lost");
		return;
	}
	if (r->now >= r->heartbeat_deadline)
		raft_replication_heartbeat(r);
}
