/*
 * membership.c: cluster membership changes (thesis ch. 4; paper §6).
 *
 * A CHANGE event names servers to add and to remove. The leader:
 *  1. waits until it has committed an entry of its own term and no
 *     configuration entry is uncommitted (thesis §4.1, the fix for the
 *     single-server change bug: at most one change in flight);
 *  2. if servers are added, appends a configuration with them as learners
 *     (they get entries but neither vote nor count) and, as for servers
 *     that already are learners (an earlier change timed out), waits until each
 *     one's match index is within RAFT_CATCHUP_GAP entries of the leader's
 *     last index (thesis §4.2.1), failing with KVD_ETIMEDOUT if a learner
 *     makes no progress for RAFT_CATCHUP_TIMEOUT_FACTOR election timeouts;
 *  3. if the voter sets differ by one server, appends the new configuration
 *     directly (single-server change, §4.1); otherwise appends the joint
 *     configuration C_old,new and, once that commits, C_new (§4.3).
 * Every configuration takes effect as soon as it is appended, committed or
 * not. The change completes (changes_done, error 0) when the final
 * configuration commits; a leader that is not a voter in it then steps down.
 * A new leader that finds a committed joint configuration finishes it by
 * appending C_new.
 */
#include "raft/core.h"
#include "raft/plant.h"

#include <stdlib.h>
#include <string.h>

#define RAFT_CATCHUP_GAP	    16 /* entries */
#define RAFT_CATCHUP_TIMEOUT_FACTOR 10 /* x election_timeout_max without progress */

static bool id_valid(const char *id)
{
	return id != NULL && id[0] != '\0' && strlen(id) < RAFT_ID_SIZE;
}

/* Builds the target configuration from the current (simple) one. */
static int build_target(struct raft_core *r, const struct raft_event *e, struct raft_config *t)
{
	struct raft_config c;
	unsigned voters = 0;

	memset(&c, 0, sizeof(c));
	for (unsigned i = 0; i < e->u.change.n_remove; i++) {
		if (!id_valid(e->u.change.remove[i]) ||
		    raft_config_get(&r->config, e->u.change.remove[i]) == NULL)
			return KVD_EINVAL;
	}
	for (unsigned i = 0; i < r->config.n; i++) {
		bool removed = false;
		for (unsigned k = 0; k < e->u.change.n_remove; k++)
			removed =
			    removed || strcmp(e->u.change.remove[k], r->config.servers[i].id) == 0;
		if (!removed)
			c.servers[c.n++] = r->config.servers[i];
	}
	for (unsigned i = 0; i < e->u.change.n_add; i++) {
		const char *id = e->u.change.add[i];
		const struct raft_server *s;
		int rv;
		if (!id_valid(id))
			return KVD_EINVAL;
		s = raft_config_get(&c, id);
		if (s != NULL && s->role == RAFT_VOTER)
			return KVD_EEXIST;
		if (s != NULL) {
			((struct raft_server *)s)->role = RAFT_VOTER;
			continue;
		}
		for (unsigned k = 0; k < e->u.change.n_remove; k++) {
			if (strcmp(e->u.change.remove[k], id) == 0)
				return KVD_EINVAL;
		}
		rv = raft_config_add(&c, id, RAFT_VOTER);
		if (rv != 0)
			return rv;
	}
	for (unsigned i = 0; i < c.n; i++)
		voters += c.servers[i].role == RAFT_VOTER;
	if (voters == 0)
		return KVD_EINVAL;
	*t = c;
	return 0;
}

int raft_membership_change(struct raft_core *r, const struct raft_event *e)
{
	int rv;

	if (r->role != RAFT_LEADER)
		return KVD_ENOTLEADER;
	if (r->change.phase != RAFT_CHANGE_NONE || r->transfer_to[0] != '\0' || r->config.n_old > 0)
		return KVD_EBUSY;
	if (e->u.change.n_add + e->u.change.n_remove == 0 ||
	    (e->u.change.n_add > 0 && e->u.change.add == NULL) ||
	    (e->u.change.n_remove > 0 && e->u.change.remove == NULL))
		return KVD_EINVAL;
	rv = build_target(r, e, &r->change.target);
	if (rv != 0)
		return rv;
	r->change.phase = RAFT_CHANGE_WAIT_TERM;
	r->change.token = e->u.change.token;
	r->change.started = r->now;
	r->change.index = 0;
	return 0;
}

/* Appends configuration c; returns its index or 0 on failure. */
static raft_index append_config(struct raft_core *r, const struct raft_config *c, const char *what)
{
	void *buf;
	size_t len;
	int rv = raft_config_encode(c, &buf, &len);

	if (rv != 0) {
		r->nomem = rv;
		return 0;
	}
	rv = raft_core_append(r, RAFT_ENTRY_CONFIG, buf, len);
	free(buf);
	if (rv != 0)
		return 0;
	raft_replication_flush(r);
	raft_core_note(r, RAFT_NOTE_CONFIG_APPENDED, "", r->term, raft_log_last_index(&r->log),
		       what);
	return raft_log_last_index(&r->log);
}

static unsigned voter_diff(const struct raft_config *a, const struct raft_config *b)
{
	unsigned d = 0;

	for (unsigned i = 0; i < a->n; i++) {
		if (a->servers[i].role == RAFT_VOTER && !raft_config_is_voter(b, a->servers[i].id))
			d++;
	}
	for (unsigned i = 0; i < b->n; i++) {
		if (b->servers[i].role == RAFT_VOTER && !raft_config_is_voter(a, b->servers[i].id))
			d++;
	}
	return d;
}

static void start_final(struct raft_core *r)
{
	struct raft_config j;
	raft_index idx;

	if (voter_diff(&r->config, &r->change.target) <= 1) {
		idx = append_config(r, &r->change.target, "final");
		r->change.phase = RAFT_CHANGE_FINAL;
	} else {
		j = r->change.target;
		j.n_old = 0;
		for (unsigned i = 0; i < r->config.n; i++) {
			if (r->config.servers[i].role == RAFT_VOTER)
				j.old[j.n_old++] = r->config.servers[i];
		}
		idx = append_config(r, &j, "joint");
		r->change.phase = RAFT_CHANGE_JOINT;
	}
	r->change.index = idx;
}

static void finish(struct raft_core *r, int error)
{
	raft_core_change_done(r, r->change.token, error);
	memset(&r->change, 0, sizeof(r->change));
}

/* Adds the target's new servers as learners; true if any were added. */
static bool add_learners(struct raft_core *r)
{
	struct raft_config c = r->config;
	bool added = false;

	for (unsigned i = 0; i < r->change.target.n; i++) {
		const char *id = r->change.target.servers[i].id;
		if (raft_config_get(&c, id) == NULL && raft_config_add(&c, id, RAFT_LEARNER) == 0)
			added = true;
	}
	if (added)
		r->change.index = append_config(r, &c, "learners");
	return added;
}

/* True if the target makes a voter of a server that is a learner now (one
 * added by an earlier change that timed out): it must catch up first too. */
static bool promotes_learner(const struct raft_core *r)
{
	for (unsigned i = 0; i < r->change.target.n; i++) {
		const struct raft_server *t = &r->change.target.servers[i];
		const struct raft_server *cur = raft_config_get(&r->config, t->id);
		if (t->role == RAFT_VOTER && cur != NULL && cur->role == RAFT_LEARNER)
			return true;
	}
	return false;
}

/* Returns 1 if every server to be promoted has caught up, 0 if not yet,
 * KVD_ETIMEDOUT if one stopped making progress. */
static int catchup_status(struct raft_core *r)
{
	raft_index last = raft_log_last_index(&r->log);
	raft_time limit = RAFT_CATCHUP_TIMEOUT_FACTOR * r->o.election_timeout_max;

	for (unsigned i = 0; i < r->change.target.n; i++) {
		const struct raft_server *s = &r->change.target.servers[i];
		struct raft_progress *p;
		if (s->role != RAFT_VOTER || raft_config_is_voter(&r->config, s->id) ||
		    strcmp(s->id, r->id) == 0)
			continue;
		p = raft_progress_find(r, s->id);
		if (p == NULL)
			return 0;
		if (p->match + RAFT_CATCHUP_GAP >= last && p->match > 0)
			continue;
		if (r->now >= p->catchup_time + limit && r->now >= r->change.started + limit)
			return KVD_ETIMEDOUT;
		return 0;
	}
	return 1;
}

void raft_membership_advance(struct raft_core *r)
{
	bool committed_config = r->config_index <= r->commit;
	int st;

	if (r->role != RAFT_LEADER)
		return;
	/* A joint configuration left by an earlier leader: finish it. */
	if (r->change.phase != RAFT_CHANGE_JOINT && r->config.n_old > 0 && committed_config) {
		struct raft_config c = r->config;
		c.n_old = 0;
		append_config(r, &c, "final");
		return;
	}
	switch (r->change.phase) {
	case RAFT_CHANGE_NONE: break;
	case RAFT_CHANGE_WAIT_TERM:
		if (raft_log_term_at(&r->log, r->commit) != r->term || !committed_config)
			break;
		if (add_learners(r) || (!RAFT_PLANTED(learner_promotion) && promotes_learner(r))) {
			r->change.phase = RAFT_CHANGE_CATCHUP;
			break;
		}
		start_final(r);
		break;
	case RAFT_CHANGE_CATCHUP:
		st = catchup_status(r);
		if (st < 0)
			finish(r, st);
		else if (st == 1 && committed_config)
			start_final(r);
		break;
	case RAFT_CHANGE_JOINT:
		if (r->change.index != 0 && r->commit >= r->change.index) {
			r->change.index = append_config(r, &r->change.target, "final");
			r->change.phase = RAFT_CHANGE_FINAL;
		}
		break;
	case RAFT_CHANGE_FINAL:
		if (r->change.index != 0 && r->commit >= r->change.index)
			finish(r, 0);
		break;
	}
	/* A leader outside the committed final configuration steps down. */
	if (r->role == RAFT_LEADER && r->config.n_old == 0 && r->config_index <= r->commit &&
	    !raft_config_is_voter(&r->config, r->id) && r->change.phase == RAFT_CHANGE_NONE)
		raft_election_become_follower(r, r->term, "", "removed from configuration");
}

void raft_membership_abort(struct raft_core *r, int error)
{
	if (r->change.phase == RAFT_CHANGE_NONE)
		return;
	if (r->change.phase == RAFT_CHANGE_WAIT_TERM && error == KVD_EUNKNOWN)
		error = KVD_ENOTLEADER;
	finish(r, error);
}
