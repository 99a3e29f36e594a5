/*
 * progress.c: the leader's view of each other server (thesis §3.5, §10.2).
 *
 * One struct raft_progress per server of the configuration (both sets of a
 * joint one) other than the leader itself, created when the leader is
 * elected or a configuration adds a server, dropped when a configuration
 * removes it. match is the highest index known replicated there; next the
 * next index to send. States: probe (one message outstanding, next moves
 * back on rejection), replicate (pipelined: a ring of in-flight messages,
 * bounded by max_inflight_msgs and max_inflight_bytes, next moves forward
 * optimistically), snapshot (see snapshot.c). Invariant: match < next.
 */
#include "raft/core.h"

#include <stdlib.h>
#include <string.h>

struct raft_progress *raft_progress_find(struct raft_core *r, const char *id)
{
	for (unsigned i = 0; i < r->n_peers; i++) {
		if (strcmp(r->peers[i].id, id) == 0)
			return &r->peers[i];
	}
	return NULL;
}

static void inflight_reset(struct raft_progress *p)
{
	p->inflight_head = 0;
	p->inflight_count = 0;
	p->inflight_bytes = 0;
}

void raft_progress_become_probe(struct raft_progress *p)
{
	p->state = RAFT_PROGRESS_PROBE;
	p->paused = false;
	p->next = p->match + 1;
	p->snap_waiting = false;
	inflight_reset(p);
}

void raft_progress_become_replicate(struct raft_progress *p)
{
	p->state = RAFT_PROGRESS_REPLICATE;
	p->paused = false;
	p->next = p->match + 1;
	inflight_reset(p);
}

static bool in_config(const struct raft_config *c, const char *id)
{
	if (raft_config_get(c, id) != NULL)
		return true;
	for (unsigned i = 0; i < c->n_old; i++) {
		if (strcmp(c->old[i].id, id) == 0)
			return true;
	}
	return false;
}

static void progress_add(struct raft_core *r, const char *id)
{
	struct raft_progress *p;

	if (r->n_peers >= RAFT_MAX_PEERS || raft_progress_find(r, id) != NULL)
		return;
	p = &r->peers[r->n_peers];
	memset(p, 0, sizeof(*p));
	p->inflight = calloc(r->o.max_inflight_msgs, sizeof(*p->inflight));
	if (p->inflight == NULL) {
		r->nomem = KVD_ENOMEM;
		return;
	}
	strcpy(p->id, id);
	p->next = raft_log_last_index(&r->log) + 1;
	p->state = RAFT_PROGRESS_PROBE;
	p->last_contact = r->now;
	p->catchup_time = r->now;
	r->n_peers++;
}

void raft_progress_sync(struct raft_core *r)
{
	const struct raft_config *c = &r->config;

	for (unsigned i = 0; i < r->n_peers;) {
		if (in_config(c, r->peers[i].id)) {
			i++;
			continue;
		}
		free(r->peers[i].inflight);
		r->peers[i] = r->peers[--r->n_peers];
	}
	for (unsigned i = 0; i < c->n; i++) {
		if (strcmp(c->servers[i].id, r->id) != 0)
			progress_add(r, c->servers[i].id);
	}
	for (unsigned i = 0; i < c->n_old; i++) {
		if (strcmp(c->old[i].id, r->id) != 0)
			progress_add(r, c->old[i].id);
	}
}

void raft_progress_free_all(struct raft_core *r)
{
	for (unsigned i = 0; i < r->n_peers; i++)
		free(r->peers[i].inflight);
	r->n_peers = 0;
}

void raft_progress_reset_all(struct raft_core *r)
{
	raft_progress_free_all(r);
	raft_progress_sync(r);
}

bool raft_progress_inflight_full(const struct raft_core *r, const struct raft_progress *p)
{
	return p->inflight_count >= r->o.max_inflight_msgs ||
	       (r->o.max_inflight_bytes > 0 && p->inflight_bytes >= r->o.max_inflight_bytes);
}

void raft_progress_inflight_add(struct raft_core *r, struct raft_progress *p, raft_index last,
				size_t bytes)
{
	unsigned slot = (p->inflight_head + p->inflight_count) % r->o.max_inflight_msgs;

	p->inflight[slot].last = last;
	p->inflight[slot].bytes = bytes;
	p->inflight_count++;
	p->inflight_bytes += bytes;
}

void raft_progress_inflight_free_to(struct raft_core *r, struct raft_progress *p, raft_index index)
{
	while (p->inflight_count > 0 && p->inflight[p->inflight_head].last <= index) {
		p->inflight_bytes -= p->inflight[p->inflight_head].bytes;
		p->inflight_head = (p->inflight_head + 1) % r->o.max_inflight_msgs;
		p->inflight_count--;
	}
}
