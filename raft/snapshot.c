/*
 * snapshot.c: log compaction and InstallSnapshot (Raft paper §7; thesis
 * ch. 5).
 *
 * Taking: the driver reports a durable local snapshot (SNAPSHOT_TAKEN); the
 * core keeps its metadata for sending and drops in-memory entries up to
 * index - snapshot_trailing (followers slightly behind still get entries).
 * The snapshot index is at most the applied index, so nothing un-applied is
 * ever dropped.
 *
 * Sending: a follower whose next entry is no longer in memory gets the
 * latest snapshot as a stream of chunks of snapshot_chunk_bytes, one chunk
 * outstanding at a time. The core holds no snapshot bytes: a chunk leaves
 * with data NULL and the driver fills len bytes from offset of the snapshot
 * file identified by (last_index, last_term). Each result carries the next
 * offset the receiver expects, so a restarted stream resumes where the
 * receiver stands. With no result for snapshot_timeout ms the follower falls
 * back to probe and the stream restarts. A newer local snapshot restarts
 * streams of older ones, so the driver needs only its latest snapshot file,
 * and must fill a chunk before its next call to raft_step().
 *
 * Receiving: chunks must arrive in order; each is handed to the driver
 * (snapshot_write) and acknowledged after it is durable (needs_sync). The
 * last chunk is acknowledged only after the driver has built the state
 * machine from the stream (SNAPSHOT_INSTALLED): the core then restarts its
 * log after the snapshot and adopts its configuration and commit index.
 * While a stream is in progress the streaming leader's empty AppendEntries
 * are answered "busy" (refused, last_log_index = prev_log_index, no
 * conflict hint: the leader keeps next where it is) and any other
 * AppendEntries aborts the stream (the log must
 * not grow under a snapshot about to replace it: bug S1 in
 * coord/core-bugs.md); during the install none are processed (all are
 * answered busy). A chunk arriving during the install is refused with the
 * offset expected (the leader waits). A chunk the driver could not write,
 * or an install that failed (SNAPSHOT_FAILED), drops the stream: the
 * waiting last chunk is refused with offset 0 and the stream restarts.
 *
 * Lost chunks: answers come back in order over one connection, so when the
 * leader hears an AppendEntries answer (normal, or "busy" from a follower
 * holding part of the stream) from a follower it is streaming to, and the
 * outstanding chunk left a heartbeat interval ago or more, that chunk was
 * lost (a partition drops it silently) and is sent again at once;
 * snapshot_timeout remains the fallback. Each chunk request carries a serial
 * in its token; a lost request (RAFT_EVENT_UNREACHABLE) ends the stream only
 * if it was the chunk sent last: older copies (resends, or chunks of a stream
 * restarted since) may fail long after, when the heal resets their
 * connection, and their loss says nothing of the outstanding one. A snapshot
 * whose last entry the log already holds is not installed at all (§7,
 * Figure 13 step 6).
 */
#include "raft/core.h"
#include "raft/plant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void send_chunk(struct raft_core *r, struct raft_progress *p)
{
	struct raft_message *m = raft_core_msg(r, RAFT_MSG_SNAPSHOT, p->id, 0);
	uint64_t left = p->snap_size > p->snap_offset ? p->snap_size - p->snap_offset : 0;
	uint64_t len = left < r->o.snapshot_chunk_bytes ? left : r->o.snapshot_chunk_bytes;

	m->u.snapshot.last_index = p->snap_index;
	m->u.snapshot.last_term = p->snap_term;
	m->u.snapshot.offset = p->snap_offset;
	m->u.snapshot.data = NULL;
	m->u.snapshot.len = (size_t)len;
	m->u.snapshot.done = p->snap_offset + len >= p->snap_size;
	m->token = p->snap_serial = ++r->chunk_serial;
	p->snap_waiting = true;
	p->snap_sent = r->now;
}

void raft_snapshot_send(struct raft_core *r, struct raft_progress *p)
{
	if (r->snap.index == 0 || r->snap.size == 0 || r->snap.index < r->log.offset) {
		p->paused = true; /* nothing to send yet; retried on heartbeat */
		return;
	}
	p->state = RAFT_PROGRESS_SNAPSHOT;
	p->snap_index = r->snap.index;
	p->snap_term = r->snap.term;
	p->snap_size = r->snap.size;
	p->snap_offset = 0;
	p->snap_time = r->now;
	r->stats.snapshots_sent++;
	raft_core_note(r, RAFT_NOTE_PEER_SNAPSHOT_SENT, p->id, p->snap_term, p->snap_index, "");
	send_chunk(r, p);
}

void raft_snapshot_recv_result(struct raft_core *r, const struct raft_message *m)
{
	const struct raft_snapshot_result *res = &m->u.snapshot_result;
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
	if (p->state != RAFT_PROGRESS_SNAPSHOT || res->last_index != p->snap_index)
		return;
	p->snap_time = r->now;
	if (res->success && res->offset >= p->snap_size) {
		/* Installed (or already covered by the follower's commit). */
		if (p->snap_index > p->match) {
			p->match = p->snap_index;
			p->catchup_time = r->now;
		}
		raft_progress_become_probe(p);
		raft_replication_send(r, p, false);
		return;
	}
	if (res->offset > p->snap_size)
		return;
	/* Answers come back in order, one chunk is outstanding: an offset
	 * not past the outstanding chunk's is a duplicate's answer, and a
	 * refusal naming it means the receiver is busy installing (the
	 * outstanding chunk is answered on its own). */
	if (res->success ? res->offset <= p->snap_offset : res->offset == p->snap_offset)
		return;
	p->snap_offset = res->offset;
	send_chunk(r, p);
}

/* The follower answered an AppendEntries (normally, or busy with our
 * stream), and answers come back in order: if the outstanding chunk left
 * at least a heartbeat interval ago it was lost (a partition drops
 * messages without an error), and is sent again now instead of after
 * snapshot_timeout. The receiver's answer says where it stands, so the
 * stream resumes or restarts there. */
void raft_snapshot_peer_heard(struct raft_core *r, struct raft_progress *p)
{
	if (RAFT_PLANTED(lost_chunk_wait) || p->state != RAFT_PROGRESS_SNAPSHOT ||
	    !p->snap_waiting || r->now < p->snap_sent + r->o.heartbeat_interval)
		return;
	send_chunk(r, p);
}

void raft_snapshot_tick(struct raft_core *r)
{
	for (unsigned i = 0; i < r->n_peers; i++) {
		struct raft_progress *p = &r->peers[i];
		if (p->state == RAFT_PROGRESS_SNAPSHOT &&
		    r->now >= p->snap_time + r->o.snapshot_timeout)
			raft_progress_become_probe(p);
	}
}

static void reply(struct raft_core *r, const char *to, uint64_t token, bool success,
		  raft_index last_index, uint64_t offset)
{
	struct raft_message *out = raft_core_msg(r, RAFT_MSG_SNAPSHOT_RESULT, to, 0);

	out->token = token;
	out->u.snapshot_result.success = success;
	out->u.snapshot_result.last_index = last_index;
	out->u.snapshot_result.offset = offset;
}

void raft_snapshot_recv(struct raft_core *r, const struct raft_message *m)
{
	const struct raft_snapshot *s = &m->u.snapshot;
	void *copy = NULL;

	if (m->term < r->term) {
		reply(r, m->from, m->token, false, s->last_index, 0);
		return;
	}
	raft_election_become_follower(r, m->term, m->from,
				      m->term > r->term ? "higher term seen" : "leader elected");
	if (s->len > 0 && s->data == NULL)
		return;
	if (r->rx.installing) {
		/* Busy: the last chunk's answer follows the install. */
		bool same = s->last_index == r->rx.last_index && s->last_term == r->rx.last_term;
		reply(r, m->from, m->token, false, s->last_index, same ? r->rx.expected : 0);
		return;
	}
	if (s->last_index <= r->commit ||
	    raft_log_term_at(&r->log, s->last_index) == s->last_term) {
		/* Already have everything it covers (§7, Figure 13 step 6: a
		 * log holding the last included entry keeps what follows
		 * it, entries this server may have acknowledged). */
		memset(&r->rx, 0, sizeof(r->rx));
		reply(r, m->from, m->token, true, s->last_index,
		      RAFT_PLANTED(covered_offset) ? UINT64_MAX : RAFT_SNAPSHOT_COVERED);
		return;
	}
	if (!r->rx.active || r->rx.last_index != s->last_index || r->rx.last_term != s->last_term) {
		if (s->offset != 0) {
			reply(r, m->from, m->token, false, s->last_index, 0);
			return;
		}
		memset(&r->rx, 0, sizeof(r->rx));
		r->rx.active = true;
		r->rx.last_index = s->last_index;
		r->rx.last_term = s->last_term;
		snprintf(r->rx.from, sizeof(r->rx.from), "%s", m->from);
		r->rx.term = m->term;
	} else if (s->offset != r->rx.expected) {
		reply(r, m->from, m->token, false, s->last_index, r->rx.expected);
		return;
	}
	if (s->len > 0) {
		copy = malloc(s->len);
		if (copy == NULL) {
			r->nomem = KVD_ENOMEM;
			return;
		}
		memcpy(copy, s->data, s->len);
	}
	free(r->rx_buf);
	r->rx_buf = copy;
	r->rx_write = *s;
	r->rx_write.data = copy;
	r->u->snapshot_write = &r->rx_write;
	r->rx.expected += s->len;
	if (s->done) {
		raft_core_note(r, RAFT_NOTE_SNAPSHOT_RECEIVED, m->from, s->last_term, s->last_index,
			       "");
		r->rx.installing = true;
		snprintf(r->rx.leader, sizeof(r->rx.leader), "%s", m->from);
		r->rx.token = m->token;
		return;
	}
	reply(r, m->from, m->token, true, s->last_index, r->rx.expected);
}

/* While a stream is in progress the follower's log must not grow: entries
 * acknowledged now would be dropped by the install. The streaming leader's
 * keepalives (no entries) are ignored; anything else (another leader or
 * term, or entries: the leader gave up on the stream) aborts the stream, so
 * its remaining chunks are refused and it restarts from offset 0, where the
 * check above sees whether the log already holds the snapshot point. */
bool raft_snapshot_rx_blocks_append(struct raft_core *r, const struct raft_message *m)
{
	if (r->rx.installing)
		return true;
	if (!r->rx.active)
		return false;
	if (m->term == r->rx.term && strcmp(m->from, r->rx.from) == 0 && m->u.append.n_entries == 0)
		return true;
	memset(&r->rx, 0, sizeof(r->rx));
	return false;
}

void raft_snapshot_installed(struct raft_core *r, const struct raft_snapshot_meta *s)
{
	if (!r->rx.installing || s->index != r->rx.last_index || s->term != r->rx.last_term)
		return; /* stale or unexpected */
	raft_log_reset(&r->log, s->index, s->term);
	r->snap = *s;
	r->snap_config = s->config;
	if (s->index > r->commit)
		r->commit = s->index;
	if (s->index > r->applied)
		r->applied = s->index;
	if (s->index + 1 > r->apply_next)
		r->apply_next = s->index + 1;
	r->persisted = s->index;
	r->stats.snapshots_installed++;
	raft_core_config_refresh(r);
	reply(r, r->rx.leader, r->rx.token, true, s->index,
	      s->size > r->rx.expected ? s->size : r->rx.expected);
	memset(&r->rx, 0, sizeof(r->rx));
}

void raft_snapshot_failed(struct raft_core *r)
{
	if (r->rx.installing)
		reply(r, r->rx.leader, r->rx.token, false, r->rx.last_index, 0);
	memset(&r->rx, 0, sizeof(r->rx));
}

uint64_t raft_snapshot_install_token(const struct raft_core *r)
{
	return r->rx.installing ? r->rx.token : 0;
}

void raft_snapshot_taken(struct raft_core *r, const struct raft_snapshot_meta *s)
{
	raft_index cut;

	/* Stale unless newer, or the same point now with a file to send. */
	if (s->index < r->snap.index || (s->index == r->snap.index && r->snap.size != 0) ||
	    s->index >= r->apply_next || s->index > raft_log_last_index(&r->log) ||
	    s->index < r->log.offset || raft_log_term_at(&r->log, s->index) != s->term)
		return; /* stale or not describing our log */
	r->snap = *s;
	cut = s->index > r->o.snapshot_trailing ? s->index - r->o.snapshot_trailing : 0;
	if (cut > r->log.offset) {
		raft_log_compact(&r->log, cut);
		r->snap_config = s->config;
	}
	/* Streams of an older snapshot restart with this one: the driver
	 * need keep only its latest snapshot file to fill chunks from. */
	for (unsigned i = 0; r->role == RAFT_LEADER && i < r->n_peers; i++) {
		struct raft_progress *p = &r->peers[i];
		if (p->state == RAFT_PROGRESS_SNAPSHOT && p->snap_index < s->index) {
			raft_progress_become_probe(p);
			raft_replication_send(r, p, false);
		}
	}
}
