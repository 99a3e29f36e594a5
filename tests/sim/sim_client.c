/*
 * sim_client.c: the simulated clients, their recorded history, and the
 * liveness probe.
 *
 * SIM_CLIENTS clients each keep at most one operation outstanding on a
 * key-value register map of SIM_KEYS keys. Writes (put with a fresh unique
 * value, delete, the conditional PUT-IF / PUT-ABSENT / DELETE-IF, and
 * transactions over the same keys) are proposed to the node the client
 * believes is leader and wait in that node's waiting-writes table, the
 * daemon's own (api/wait_rules.c): the client's answer is the table's. OK
 * (with the state machine's outcome of the entry the node applied at that
 * index, sim_log.c: applied or refused, a txn's branch and its gets'
 * results) only when the table answers "applied", which it does once the
 * apply job that carried the entry is done; the revision of a write is that
 * index. The table's 503s (another term at the index, leadership lost, its
 * deadline) and a crash or the client's own timeout leave the outcome
 * unknown (if it ever happens, it is at the proposed index, so its revision
 * is still known); a refused proposal is a certain failure. Conditions use the revision the serving
 * node holds when the client acts (a follower's may be stale: refusals happen). Reads use the read
 * index: the value and revision are taken from the serving node's state machine when the core
 * reports the read ready. The history is checked for linearizability at the end of the run
 * (linearize.h).
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
	if (outcome == LINEARIZE_UNKNOWN && c->op.revision == 0 && c->op.kind != LINEARIZE_GET)
		c->op.revision = c->index; /* (0 when never proposed: unknown) */
	if (outcome == LINEARIZE_OK || outcome == LINEARIZE_REFUSED)
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
	else if (outcome == LINEARIZE_REFUSED)
		s->stats.ops_ok++;
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

/* A fresh unique value: its number, and its name in the history. */
static uint64_t fresh_value(struct sim *s, char *name)
{
	uint64_t v = ++s->next_value;
	snprintf(name, LINEARIZE_STR_SIZE, "v%llu", (unsigned long long)v);
	return v;
}

/* Draws a txn over the keys into c->txn and encodes it after the header
 * (layout in sim_log.c); returns the command's length. Comparisons use the
 * serving node's revisions (0 when absent) or 0. */
static size_t write_txn(struct sim *s, struct sim_client *c, const struct sim_node *n,
			unsigned char *cmd)
{
	struct linearize_txn *t = &c->txn;
	unsigned char *p = cmd + 32;

	memset(t, 0, sizeof(*t));
	t->n_cmp = (size_t)sim_rand_range(s, 0, 2);
	t->n_ops[0] = (size_t)sim_rand_range(s, 1, 3);
	t->n_ops[1] = (size_t)sim_rand_range(s, 0, 2);
	for (size_t i = 0; i < t->n_cmp; i++, p += 16) {
		unsigned k = (unsigned)sim_rand_range(s, 0, SIM_KEYS - 1);
		uint64_t rev = sim_chance(s, 80) ? SIM_KV_REV(n->kv[k]) : 0;
		snprintf(t->cmp[i].key, sizeof(t->cmp[i].key), "k%u", k);
		t->cmp[i].revision = rev;
		p[0] = (unsigned char)k;
		memcpy(p + 8, &rev, 8);
	}
	for (int b = 0; b < 2; b++)
		for (size_t i = 0; i < t->n_ops[b]; i++, p += 16) {
			struct linearize_txn_op *o = &t->ops[b][i];
			unsigned k = (unsigned)sim_rand_range(s, 0, SIM_KEYS - 1);
			unsigned r = (unsigned)sim_rand_range(s, 0, 9);
			uint64_t value = 0;
			o->kind = r < 5 ? LINEARIZE_PUT : r < 7 ? LINEARIZE_DELETE : LINEARIZE_GET;
			snprintf(o->key, sizeof(o->key), "k%u", k);
			if (o->kind == LINEARIZE_PUT) {
				value = fresh_value(s, o->value);
				o->has_value = true;
			}
			p[0] = (unsigned char)o->kind;
			p[1] = (unsigned char)k;
			memcpy(p + 8, &value, 8);
		}
	cmd[24] = (unsigned char)t->n_cmp;
	cmd[25] = (unsigned char)t->n_ops[0];
	cmd[26] = (unsigned char)t->n_ops[1];
	c->op.txn = t;
	return (size_t)(p - cmd);
}

/* Encodes c's write (kind already drawn) on key; returns its length. */
static size_t write_command(struct sim *s, struct sim_client *c, const struct sim_node *n,
			    unsigned key, unsigned char *cmd)
{
	static const enum sim_cmd_op ops[] = {
	    [LINEARIZE_PUT] = SIM_CMD_PUT,
	    [LINEARIZE_DELETE] = SIM_CMD_DELETE,
	    [LINEARIZE_PUT_IF] = SIM_CMD_PUT_IF,
	    [LINEARIZE_PUT_ABSENT] = SIM_CMD_PUT_ABSENT,
	    [LINEARIZE_DELETE_IF] = SIM_CMD_DELETE_IF,
	    [LINEARIZE_TXN] = SIM_CMD_TXN,
	};
	enum linearize_kind kind = c->op.kind;
	uint64_t value = 0;
	size_t len = SIM_CMD_SIZE;

	if (kind == LINEARIZE_PUT || kind == LINEARIZE_PUT_IF || kind == LINEARIZE_PUT_ABSENT) {
		value = fresh_value(s, c->op.value);
		c->op.has_value = true;
	}
	encode(cmd, ops[kind], key, c->id, value, c->token);
	if (kind == LINEARIZE_PUT_IF || kind == LINEARIZE_DELETE_IF) {
		/* the serving node's revision of the key (1 when absent: refused) */
		uint64_t rev = SIM_KV_REV(n->kv[key]);
		c->op.if_revision = rev != 0 ? rev : 1;
		memcpy(cmd + SIM_CMD_SIZE, &c->op.if_revision, 8);
		len += 8;
	} else if (kind == LINEARIZE_TXN) {
		len = write_txn(s, c, n, cmd);
	}
	return len;
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
	c->op.kind = r < 35   ? LINEARIZE_GET
		     : r < 55 ? LINEARIZE_PUT
		     : r < 63 ? LINEARIZE_DELETE
		     : r < 73 ? LINEARIZE_PUT_IF
		     : r < 79 ? LINEARIZE_PUT_ABSENT
		     : r < 85 ? LINEARIZE_DELETE_IF
			      : LINEARIZE_TXN;
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
	c->has_res = false;

	struct raft_event e = {.now = s->now};
	struct raft_update u;
	int rc;
	if (c->op.kind == LINEARIZE_GET) {
		e.type = RAFT_EVENT_READ;
		e.u.read.token = c->token;
		sim_node_step(s, n, &e, &rc, &u);
	} else {
		unsigned char cmd[32 + 16 * 3 * LINEARIZE_TXN_MAX];
		size_t len = write_command(s, c, n, key, cmd);
		struct raft_entry ent = {.type = RAFT_ENTRY_COMMAND, .data = cmd, .len = len};
		e.type = RAFT_EVENT_PROPOSE;
		e.u.propose.entries = &ent;
		e.u.propose.n = 1;
		sim_node_propose(s, n, &e, c, c->op_seq, &rc, &u);
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

/* Records the state machine's outcome of c's write, applied at index. */
static void write_outcome(struct sim_client *c, raft_index index, const struct sim_sm_result *res)
{
	enum linearize_kind kind = c->op.kind;

	if (kind == LINEARIZE_PUT || kind == LINEARIZE_DELETE || kind == LINEARIZE_TXN ||
	    res->applied)
		c->op.revision = index; /* (a refused write records none) */
	if (kind == LINEARIZE_TXN) {
		struct linearize_txn *t = &c->txn;
		int b = res->succeeded ? 0 : 1;
		t->succeeded = res->succeeded;
		for (size_t i = 0; i < t->n_ops[b]; i++) {
			struct linearize_txn_op *o = &t->ops[b][i];
			if (o->kind != LINEARIZE_GET)
				continue;
			o->has_result = true;
			o->has_value = res->get[i] != 0;
			o->revision = SIM_KV_REV(res->get[i]);
			if (o->has_value)
				snprintf(o->value, sizeof(o->value), "v%llu",
					 (unsigned long long)SIM_KV_VALUE(res->get[i]));
		}
	}
}

void sim_client_applied(struct sim *s, struct sim_node *n, const struct sim_entry *e,
			const struct sim_sm_result *res)
{
	uint64_t token = 0;
	if (e->type == RAFT_ENTRY_COMMAND && e->len >= SIM_CMD_SIZE)
		memcpy(&token, e->data + 16, 8);
	/* The result of the entry at a waiting client's index, whatever its
	 * term: what the node's answer will carry (sim_client_write_answer). */
	for (int i = 0; i < SIM_CLIENTS; i++) {
		struct sim_client *c = &s->clients[i];
		if (!c->busy || c->op.kind == LINEARIZE_GET || c->node != n->num ||
		    c->inc != n->inc || c->index != e->index || c->index == 0)
			continue;
		c->has_res = true;
		c->res_index = e->index;
		c->res_term = e->term;
		c->res = *res;
	}
	if (s->probe_token != 0 && s->probe_node == n->num && s->probe_inc == n->inc &&
	    s->probe_index == e->index) {
		if (e->term == s->probe_term && token == s->probe_token)
			s->live = true;
		s->probe_token = 0;
	}
}

void sim_client_write_answer(void *ctx, const struct kvd_wait_write *w, enum kvd_wait_end end,
			     void *arg)
{
	struct sim *s = ctx;
	struct sim_client *c = w->req;
	enum linearize_outcome outcome = LINEARIZE_UNKNOWN; /* a 503 */
	bool have = c->has_res && c->res_index == w->index;

	(void)arg;
	if (!c->busy || c->op_seq != w->tag || s->failed) {
		/* The client gave up (its own timeout): nobody listens. */
	} else if (end == KVD_WAIT_APPLIED && !have) {
		sim_fail(s,
			 "node %s answers the write at %llu (term %llu) applied before its entry "
			 "is applied (applied %llu)",
			 s->nodes[c->node].id, (unsigned long long)w->index,
			 (unsigned long long)w->term,
			 (unsigned long long)s->nodes[c->node].applied);
	} else if (end != KVD_WAIT_APPLIED && have && c->res_term == w->term) {
		/* Its own entry applied, the node knows the outcome: a 503
		 * "outcome unknown" is a lie (a handed-over write must be
		 * answered). */
		sim_fail(s,
			 "node %s answers 503 (outcome unknown) for the write at %llu (term %llu) "
			 "whose entry it has applied",
			 s->nodes[c->node].id, (unsigned long long)w->index,
			 (unsigned long long)w->term);
	} else {
		if (end == KVD_WAIT_APPLIED) {
			outcome = LINEARIZE_OK;
			write_outcome(c, w->index, &c->res);
			if (c->op.kind >= LINEARIZE_PUT_IF && c->op.kind <= LINEARIZE_DELETE_IF &&
			    !c->res.applied)
				outcome = LINEARIZE_REFUSED; /* 412 */
		}
		client_done(s, c, outcome);
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
			c->op.revision = SIM_KV_REV(n->kv[key]);
			if (c->op.has_value)
				snprintf(c->op.value, sizeof(c->op.value), "v%llu",
					 (unsigned long long)SIM_KV_VALUE(n->kv[key]));
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
