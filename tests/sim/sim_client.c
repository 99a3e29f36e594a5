/*
 * sim_client.c: the simulated clients, their recorded history, and the
 * liveness probe.
 *
 * SIM_CLIENTS clients each keep at most one operation outstanding on a
 * key-value register map of SIM_KEYS keys. Writes (put with a fresh unique
 * value, delete) are proposed to the node the client believes is leader and
 * complete when that node applies the entry at the proposed (index, term);
 * a refused proposal is a certain failure; a crash, a timeout or a different
 * entry at that index leaves the outcome unknown. Reads use the read index:
 * the value is taken from the serving node's state machine when the core
 * reports the read ready. The history is checked for linearizability at the
 * end of the run (linearize.h).
 *
 * The liveness probe runs after all faults are healed: it proposes a no-op
 * command to the leader until one is applied there.
 */
#include <stdio.h>
#include <string.h>

#include "tests/sim/sim.h"

#define CLIENT_TIMEOUT_MS 1000

static void client_next(struct sim *s, struct sim_client *c)
{
	sim_ev_push(s, s->now + sim_rand_range(s, 5, 120), SIM_EV_CLIENT, -1, 0, NULL,
		    (uint64_t)c->id);
}

static void client_done(struct sim *s, struct sim_client *c, enum linearize_outcome outcome)
{
	c->busy = false;
	if (outcome == LINEARIZE_OK)
		c->hint = c->node;
	else if (outcome == LINEARIZE_UNKNOWN)
		c->hint = -1;
	c->op.outcome = outcome;
	c->op.return_time = s->now;
	if (linearize_history_add(s->history, &c->op) != 0)
		sim_fail(s, "HARNESS BUG: history add failed");
	if (outcome == LINEARIZE_OK)
		s->stats.ops_ok++;
	else if (outcome == LINEARIZE_FAIL)
		s->stats.ops_fail++;
	else
		s->stats.ops_unknown++;
	client_next(s, c);
}

void sim_client_start(struct sim *s)
{
	for (int i = 0; i < SIM_CLIENTS; i++) {
		s->clients[i].id = i;
		s->clients[i].hint = -1;
		client_next(s, &s->clients[i]);
	}
}

static void encode(unsigned char *cmd, enum sim_cmd_op op, unsigned key, int client, uint64_t value,
		   uint64_t token)
{
	memset(cmd, 0, SIM_CMD_SIZE);
	cmd[0] = (unsigned char)op;
	cmd[1] = (unsigned char)key;
	cmd[2] = (unsigned char)client;
	memcpy(cmd + 8, &value, 8);
	memcpy(cmd + 16, &token, 8);
}

void sim_client_act(struct sim *s, int id)
{
	struct sim_client *c = &s->clients[id];
	if (c->busy || s->failed)
		return;
	/* Like a real client: stick to the node that last served us (it may
	 * be a deposed leader), follow redirects, else ask around. */
	int target = c->hint;
	if (target < 0 || sim_rand_range(s, 0, 99) < 5)
		target = sim_rand_range(s, 0, 1) ? sim_leader_guess(s) : -1;
	if (target < 0)
		target = (int)sim_rand_range(s, 0, s->n_nodes - 1);
	struct sim_node *n = &s->nodes[target];
	if (!n->up) {
		client_next(s, c);
		return;
	}
	unsigned r = (unsigned)sim_rand_range(s, 0, 99);
	unsigned key = (unsigned)sim_rand_range(s, 0, SIM_KEYS - 1);
	memset(&c->op, 0, sizeof(c->op));
	c->op.client = (uint64_t)id;
	c->op.kind = r < 45 ? LINEARIZE_GET : r < 85 ? LINEARIZE_PUT : LINEARIZE_DELETE;
	/* Convergence phase (sim_converge.c): reads only, so the log stops
	 * growing and a follower installing a snapshot is not overtaken by
	 * the leader's next one (a newer snapshot restarts the stream). */
	if (s->live)
		c->op.kind = LINEARIZE_GET;
	snprintf(c->op.key, sizeof(c->op.key), "k%u", key);
	c->op.invoke_time = s->now;
	c->busy = true;
	c->op_seq++;
	c->node = target;
	c->inc = n->inc;
	c->index = 0;
	c->term = 0;
	c->token = ++s->next_token;

	struct raft_event e = {.now = s->now};
	struct raft_update u;
	int rc;
	if (c->op.kind == LINEARIZE_GET) {
		e.type = RAFT_EVENT_READ;
		e.u.read.token = c->token;
		sim_node_step(s, n, &e, &rc, &u);
	} else {
		unsigned char cmd[SIM_CMD_SIZE];
		uint64_t value = 0;
		if (c->op.kind == LINEARIZE_PUT) {
			value = ++s->next_value;
			snprintf(c->op.value, sizeof(c->op.value), "v%llu",
				 (unsigned long long)value);
			c->op.has_value = true;
		}
		encode(cmd, c->op.kind == LINEARIZE_PUT ? SIM_CMD_PUT : SIM_CMD_DELETE, key, id,
		       value, c->token);
		struct raft_entry ent = {
		    .type = RAFT_ENTRY_COMMAND, .data = cmd, .len = sizeof(cmd)};
		e.type = RAFT_EVENT_PROPOSE;
		e.u.propose.entries = &ent;
		e.u.propose.n = 1;
		sim_node_step(s, n, &e, &rc, &u);
		if (rc == 0) {
			c->index = u.proposed_index;
			c->term = u.proposed_term;
		}
	}
	if (!c->busy)
		return; /* completed within the step */
	if (rc != 0) {
		c->hint = -1;
		for (unsigned i = 0; i < s->n_nodes; i++)
			if (strcmp(s->nodes[i].id, u.leader) == 0)
				c->hint = (int)i;
		client_done(s, c, LINEARIZE_FAIL);
		return;
	}
	sim_ev_push(s, s->now + CLIENT_TIMEOUT_MS, SIM_EV_CLIENT_TIMEOUT, id, 0, NULL, c->op_seq);
}

void sim_client_timeout(struct sim *s, int id, uint64_t op_seq)
{
	struct sim_client *c = &s->clients[id];
	if (c->busy && c->op_seq == op_seq)
		client_done(s, c, LINEARIZE_UNKNOWN);
}

void sim_client_applied(struct sim *s, struct sim_node *n, const struct sim_entry *e)
{
	uint64_t token = 0;
	if (e->type == RAFT_ENTRY_COMMAND && e->len == SIM_CMD_SIZE)
		memcpy(&token, e->data + 16, 8);
	for (int i = 0; i < SIM_CLIENTS; i++) {
		struct sim_client *c = &s->clients[i];
		if (!c->busy || c->op.kind == LINEARIZE_GET || c->node != n->num ||
		    c->inc != n->inc || c->index != e->index || c->index == 0)
			continue;
		bool mine = e->term == c->term && token == c->token;
		client_done(s, c, mine ? LINEARIZE_OK : LINEARIZE_UNKNOWN);
	}
	if (s->probe_token != 0 && s->probe_node == n->num && s->probe_inc == n->inc &&
	    s->probe_index == e->index) {
		if (e->term == s->probe_term && token == s->probe_token)
			s->live = true;
		s->probe_token = 0;
	}
}

void sim_client_read_done(struct sim *s, struct sim_node *n, uint64_t token, bool ok,
			  raft_index index)
{
	(void)index;
	for (int i = 0; i < SIM_CLIENTS; i++) {
		struct sim_client *c = &s->clients[i];
		if (!c->busy || c->op.kind != LINEARIZE_GET || c->token != token ||
		    c->node != n->num)
			continue;
		if (ok) {
			unsigned key = (unsigned)(c->op.key[1] - '0');
			c->op.has_value = n->kv[key] != 0;
			if (c->op.has_value)
				snprintf(c->op.value, sizeof(c->op.value), "v%llu",
					 (unsigned long long)n->kv[key]);
		}
		client_done(s, c, ok ? LINEARIZE_OK : LINEARIZE_FAIL);
	}
}

void sim_client_node_crashed(struct sim *s, struct sim_node *n)
{
	for (int i = 0; i < SIM_CLIENTS; i++) {
		struct sim_client *c = &s->clients[i];
		if (c->busy && c->node == n->num && c->inc == n->inc)
			client_done(s, c, LINEARIZE_UNKNOWN);
	}
	if (s->probe_node == n->num)
		s->probe_token = 0;
}

void sim_probe_tick(struct sim *s)
{
	if (s->live || s->failed)
		return;
	if (s->probe_token != 0 && s->now < s->probe_at + 1000)
		return;
	int l = sim_leader_guess(s);
	if (l < 0)
		return;
	struct sim_node *n = &s->nodes[l];
	unsigned char cmd[SIM_CMD_SIZE];
	uint64_t token = ++s->next_token;
	encode(cmd, SIM_CMD_PROBE, 0, 255, 0, token);
	struct raft_entry ent = {.type = RAFT_ENTRY_COMMAND, .data = cmd, .len = sizeof(cmd)};
	struct raft_event e = {.type = RAFT_EVENT_PROPOSE, .now = s->now};
	e.u.propose.entries = &ent;
	e.u.propose.n = 1;
	struct raft_update u;
	int rc;
	sim_node_step(s, n, &e, &rc, &u);
	if (rc == 0) {
		s->probe_token = token;
		s->probe_node = l;
		s->probe_inc = n->inc;
		s->probe_index = u.proposed_index;
		s->probe_term = u.proposed_term;
		s->probe_at = s->now;
	}
}

void sim_client_finish(struct sim *s)
{
	for (int i = 0; i < SIM_CLIENTS; i++)
		if (s->clients[i].busy)
			client_done(s, &s->clients[i], LINEARIZE_UNKNOWN);
	bool ok = false;
	char why[256] = "";
	int rc = linearize_history_check(s->history, 0, &ok, why, sizeof(why));
	if (rc != 0)
		sim_fail(s, "linearizability check could not finish: %s", kvd_strerror(rc));
	else if (!ok)
		sim_fail(s, "linearizability: %s", why);
}
