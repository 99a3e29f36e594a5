/*
 * sim_http.c: the nodes' peer transport in the simulation: the daemon's own
 * transport rules (api/transport_rules.c: held messages, request/response
 * pairing, orphans, the parked last snapshot chunk) over a simulated HTTP/1.1
 * layer that behaves as api/http does:
 *
 *  - keep-alive connections per ordered pair of nodes (a->b carries a's
 *    requests to b and their answers; b->a is another, independent
 *    connection, so the two directions reorder freely against each other),
 *    one per channel of the rules (InstallSnapshot chunks on their own:
 *    enum kvd_trules_channel);
 *  - on a connection, requests and answers arrive in the order sent (TCP);
 *    the server hands each request to the node as it arrives (/raft
 *    requests pipeline: kvd_routes_ordered()), but answers leave in request
 *    order (HTTP/1.1), so a held or parked request holds the answers of
 *    the requests behind it;
 *  - each request has the daemon's deadline (kvd_trules_timeout_ms()); a
 *    request not answered by then fails with KVD_ETIMEDOUT and resets the
 *    connection, failing every other request on it with KVD_EIO (as
 *    http_client.c does); answers to a reset connection are discarded;
 *  - in a third of the seeds (operator partitions), the nemesis's
 *    partitions are set in the transport rules instead of cutting links,
 *    as an operator's /cluster/partition does: a node refuses requests from
 *    the peers it stops hearing (503) and sends them nothing;
 *  - faults from the seed: connection resets (a per-seed per mille of
 *    requests resets its connection within 20 ms), refusals (a per-seed per
 *    mille of requests is answered 503 before the core sees it), a lost
 *    packet or a cut link delays the segment until it is retransmitted
 *    (200-400 ms later, while the link stays cut), long delays as the
 *    network's; a process that stops resets its connections (the peers'
 *    requests to it fail within 1-5 ms). TCP does not duplicate.
 *
 * Invariants checked here (sim_fail): an answer goes only to a request the
 * node received and has not answered yet; a response arrives only for a
 * request that was sent and not answered yet; every request of the client
 * completes exactly once (answer, timeout or reset).
 *
 * Thread: single-threaded, like the rest of the simulation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/transport_rules.h"
#include "tests/sim/sim.h"

/* One request on a connection, from send to completion at the client. */
struct sim_call {
	struct sim_call *next;
	uint64_t id;
	struct kvd_trules_call *tc; /* the client's request */
	struct sim_msg *req;	    /* arrived, waiting to be handed to the server */
	struct sim_msg *out;	    /* answered, waiting for the answers before it */
	struct sim_msg *resp;	    /* arrived, waiting for the requests before it */
	bool arrived, handed, answered, sent;
};

/* Connections per ordered pair: the raft channel's, then the snapshot
 * channel's KVD_TRULES_SNAPSHOT_CONNS (as api/transport.c opens them). */
#define SIM_HTTP_CONNS (1 + KVD_TRULES_SNAPSHOT_CONNS)

struct sim_conn {
	uint32_t gen; /* bumped by each reset: older segments are discarded */
	struct sim_call *head, *tail;
	raft_time req_last, resp_last; /* last arrival times (in-order delivery) */
	bool serving;		       /* serve() runs: answers do not re-enter it */
};

/* A request handed to the server's transport rules (its handle). */
struct sim_handle {
	struct sim_handle *next;
	int from, to, ch;
	uint32_t gen;
	uint64_t call_id;
};

struct sim_http_node {
	struct sim *s;
	int num;
	bool closing; /* the process stops: answers go nowhere */
	struct sim_handle *handles;
};

struct sim_http {
	struct sim_conn conn[SIM_MAX_NODES][SIM_MAX_NODES][SIM_HTTP_CONNS];
	struct sim_http_node node[SIM_MAX_NODES];
	uint64_t next_call;
	unsigned reset_pm;  /* per mille of requests whose connection resets */
	unsigned refuse_pm; /* per mille of requests answered 503 */
	unsigned oom_pm;    /* per mille of follower appends that fail (sim_node.c) */
	/* Operator partitions (a third of the seeds): the partitions of the
	 * nemesis are set in the transport rules, as /cluster/partition does,
	 * instead of cutting links; synced from s->cut. */
	bool operator_cuts;
	bool synced;
	bool cut[SIM_MAX_NODES][SIM_MAX_NODES];
};

static struct sim_node *node_of(struct sim_http_node *h)
{
	return &h->s->nodes[h->num];
}

static int node_by_id(struct sim *s, const char *id)
{
	for (unsigned i = 0; i < s->n_nodes; i++)
		if (strcmp(s->nodes[i].id, id) == 0)
			return (int)i;
	return -1;
}

/* Arrival time of a segment sent now on a connection whose last segment in
 * that direction arrives at *last: never before it (TCP order). */
static raft_time arrival(struct sim *s, raft_time *last)
{
	/* Long delays hold every segment behind them (head-of-line): none
	 * after the heal, whose network is healthy. */
	raft_time d = !s->healing && sim_chance(s, s->long_delay_pct) ? sim_rand_range(s, 30, 300)
								      : sim_rand_range(s, 1, 10);
	raft_time t;
	if (!s->healing && sim_chance(s, s->drop_pct))
		d += sim_rand_range(s, 200, 400); /* lost once, retransmitted */
	t = s->now + d;
	if (t < *last)
		t = *last;
	*last = t;
	return t;
}

static void push_segment(struct sim *s, struct sim_msg *m, int to, raft_time t)
{
	sim_ev_push(s, t, SIM_EV_DELIVER, to, 0, m, 0);
}

static struct sim_call *find_call(struct sim_conn *c, uint64_t id)
{
	struct sim_call *x = c->head;
	while (x != NULL && x->id != id)
		x = x->next;
	return x;
}

static void call_free(struct sim_call *x)
{
	sim_msg_free(x->req);
	sim_msg_free(x->out);
	sim_msg_free(x->resp);
	free(x);
}

/* Resets a->b: every request on it fails (timed_out: KVD_ETIMEDOUT, the
 * others KVD_EIO), in order; later segments of it are discarded. */
static void conn_reset(struct sim *s, int a, int b, int ch, uint64_t timed_out)
{
	struct sim_conn *c = &s->http->conn[a][b][ch];
	struct sim_call *x = c->head;

	c->head = c->tail = NULL;
	c->gen++;
	c->req_last = c->resp_last = s->now;
	c->serving = false;
	if (x != NULL)
		s->stats.http_resets++;
	while (x != NULL) {
		struct sim_call *next = x->next;
		struct kvd_trules_call *tc = x->tc;
		int status = x->id == timed_out ? KVD_ETIMEDOUT : KVD_EIO;
		if (s->p.trace && tc != NULL)
			printf("%8llu %s -> %s request %llu (type %d) fails: %s\n",
			       (unsigned long long)s->now, s->nodes[a].id, s->nodes[b].id,
			       (unsigned long long)x->id, (int)tc->req.type,
			       status == KVD_ETIMEDOUT ? "timeout" : "reset");
		call_free(x);
		if (tc != NULL && !s->failed)
			kvd_trules_result(tc, status, NULL);
		else if (tc != NULL)
			kvd_trules_call_free(tc);
		x = next;
	}
}

static void serve(struct sim *s, int a, int b, int ch);

/* The server b sends the answer to the request of handle h (status, and
 * resp: the result message, or NULL for a status without a result). */
static void respond(struct sim_http_node *hn, struct sim_handle *h, int status,
		    struct sim_msg *resp)
{
	struct sim *s = hn->s;
	struct sim_handle **pp = &hn->handles;
	struct sim_conn *c;
	struct sim_call *x;

	while (*pp != NULL && *pp != h)
		pp = &(*pp)->next;
	if (*pp == NULL) {
		sim_fail(s,
			 "transport pairing: %s answers a request it does not hold "
			 "(answered twice, or never received)",
			 s->nodes[hn->num].id);
		sim_msg_free(resp);
		return;
	}
	*pp = h->next;
	c = &s->http->conn[h->from][h->to][h->ch];
	x = hn->closing || c->gen != h->gen ? NULL : find_call(c, h->call_id);
	if (x == NULL) { /* the connection is gone: the answer goes nowhere */
		if (!hn->closing && c->gen == h->gen)
			sim_fail(s,
				 "transport pairing: %s answers request %llu, which %s never sent",
				 s->nodes[hn->num].id, (unsigned long long)h->call_id,
				 s->nodes[h->from].id);
		sim_msg_free(resp);
		free(h);
		return;
	}
	if (!x->handed || x->answered) {
		sim_fail(s,
			 "transport pairing: %s answers request %llu of %s twice or before "
			 "receiving it",
			 s->nodes[hn->num].id, (unsigned long long)h->call_id,
			 s->nodes[h->from].id);
		sim_msg_free(resp);
		free(h);
		return;
	}
	if (resp == NULL) {
		resp = calloc(1, sizeof(*resp));
		if (resp == NULL)
			abort();
	}
	x->answered = true;
	resp->http = SIM_HTTP_RESP;
	resp->status = status;
	resp->conn_from = h->from;
	resp->conn_to = h->to;
	resp->conn_ch = h->ch;
	resp->conn_gen = h->gen;
	resp->call_id = h->call_id;
	x->out = resp;
	free(h);
	/* Answers leave in request order (HTTP/1.1): this one waits for the
	 * answers to the requests before it. */
	for (x = c->head; x != NULL; x = x->next) {
		if (x->sent)
			continue;
		if (!x->answered)
			break;
		x->sent = true;
		push_segment(s, x->out, x->out->conn_from, arrival(s, &c->resp_last));
		x->out = NULL;
	}
}

/* Hands the requests of a->b that arrived to b, in order, without waiting
 * for answers (kvd_routes_ordered(): /raft requests pipeline freely); the
 * answers go back in order (respond()). */
static void serve(struct sim *s, int a, int b, int ch)
{
	struct sim_conn *c = &s->http->conn[a][b][ch];
	struct sim_node *n = &s->nodes[b];
	struct sim_http_node *hn = &s->http->node[b];
	uint32_t gen = c->gen;

	c->serving = true;
	while (!s->failed && c->gen == gen && n->up && n->tr != NULL) {
		struct sim_call *x = c->head;
		struct sim_msg *m;
		struct sim_handle *h;
		while (x != NULL && x->handed)
			x = x->next;
		if (x == NULL || !x->arrived)
			break;
		x->handed = true;
		m = x->req;
		x->req = NULL;
		h = calloc(1, sizeof(*h));
		if (h == NULL)
			abort();
		h->from = a;
		h->to = b;
		h->ch = ch;
		h->gen = gen;
		h->call_id = x->id;
		h->next = hn->handles;
		hn->handles = h;
		if (s->p.trace && m->m.type == RAFT_MSG_SNAPSHOT)
			printf("%8llu %s receives chunk %llu offset %llu (call %llu, conn %d)%s\n",
			       (unsigned long long)s->now, n->id,
			       (unsigned long long)m->m.u.snapshot.last_index,
			       (unsigned long long)m->m.u.snapshot.offset,
			       (unsigned long long)x->id, ch, m->lost ? ": lost at the heal" : "");
		if (sim_converge_deliver(s, n, m)) {
			/* Lost at the heal: the connection breaks. */
			sim_msg_free(m);
			hn->handles = h->next;
			free(h);
			c->serving = false;
			conn_reset(s, a, b, ch, 0);
			return;
		}
		if (!s->healing && sim_rand(s) % 1000 < s->http->refuse_pm) {
			/* Refused before the core (a node joining, overloaded). */
			s->stats.http_refusals++;
			sim_msg_free(m);
			respond(hn, h, 503, NULL);
			continue;
		}
		if (kvd_trules_blocked(n->tr, m->m.from)) {
			sim_msg_free(m);
			respond(hn, h, 503, NULL);
			continue;
		}
		if (kvd_trules_receive(n->tr, h, &m->m) != 0)
			respond(hn, h, 503, NULL);
		sim_msg_free(m);
	}
	if (c->gen == gen)
		c->serving = false;
}

/* ------------------------------------------------ the rules' operations */

/* SIM_PLANT_NO_BARRIER_CHECK=1: messages carry no barrier, so the harness's
 * own "needs_sync before its barrier" check never fires and a held-early
 * plant must be caught by the persist-before-send invariants proper. */
static bool barrier_check_off(void)
{
	static int off = -1;
	if (off < 0) {
		const char *e = getenv("SIM_PLANT_NO_BARRIER_CHECK");
		off = e != NULL && strcmp(e, "1") == 0;
	}
	return off == 1;
}

static int op_encode(void *ctx, const struct raft_message *m, void **payload, size_t *len)
{
	struct sim_http_node *hn = ctx;
	struct sim_node *n = node_of(hn);
	struct sim_msg *x = sim_msg_copy(hn->s, n, m);

	if (x == NULL)
		return KVD_ENOTFOUND;
	if (m->needs_sync && !barrier_check_off())
		x->barrier = n->issued_seq;
	*payload = x;
	*len = m->type == RAFT_MSG_SNAPSHOT ? x->m.u.snapshot.len : 0;
	return 0;
}

static void op_payload_free(void *ctx, void *payload)
{
	(void)ctx;
	sim_msg_free(payload);
}

/* The connection of a->b a request of channel goes on: a chunk on the first
 * snapshot connection with nothing in flight, else the first (the rule of
 * api/transport.c). */
static int conn_pick(struct sim *s, int a, int b, enum kvd_trules_channel channel)
{
	if (channel != KVD_TRULES_CHANNEL_SNAPSHOT)
		return 0;
	for (int ch = 1; ch < SIM_HTTP_CONNS; ch++)
		if (s->http->conn[a][b][ch].head == NULL)
			return ch;
	return 1;
}

static int op_request(void *ctx, struct kvd_trules_call *tc, void *payload)
{
	struct sim_http_node *hn = ctx;
	struct sim *s = hn->s;
	struct sim_node *n = node_of(hn);
	struct sim_msg *m = payload;
	int to = node_by_id(s, m->m.to);
	struct sim_conn *c;
	struct sim_call *x;
	int ch;

	if (to < 0) {
		sim_fail(s, "node %s sent a message to unknown node \"%s\"", n->id, m->m.to);
		sim_msg_free(m);
		return KVD_EINVAL;
	}
	sim_check_send(s, n, m);
	s->stats.msgs++;
	ch = conn_pick(s, n->num, to, tc->channel);
	c = &s->http->conn[n->num][to][ch];
	x = calloc(1, sizeof(*x));
	if (x == NULL)
		abort();
	x->id = ++s->http->next_call;
	x->tc = tc;
	if (c->tail != NULL)
		c->tail->next = x;
	else
		c->head = x;
	c->tail = x;
	m->http = SIM_HTTP_REQ;
	m->conn_from = n->num;
	m->conn_to = to;
	m->conn_ch = ch;
	m->conn_gen = c->gen;
	m->call_id = x->id;
	s->stats.http_requests++;
	if (s->p.trace && m->m.type == RAFT_MSG_SNAPSHOT)
		printf(
		    "%8llu %s -> %s chunk %llu/%llu offset %llu len %zu%s (call %llu, conn %d)\n",
		    (unsigned long long)s->now, n->id, m->m.to,
		    (unsigned long long)m->m.u.snapshot.last_index,
		    (unsigned long long)m->m.u.snapshot.last_term,
		    (unsigned long long)m->m.u.snapshot.offset, m->m.u.snapshot.len,
		    m->m.u.snapshot.done ? " done" : "", (unsigned long long)x->id, ch);
	push_segment(s, m, to, arrival(s, &c->req_last));
	sim_ev_push(s, s->now + tc->timeout_ms, SIM_EV_HTTP_TIMEOUT, n->num, (uint32_t)to, NULL,
		    x->id);
	if (!s->healing && sim_rand(s) % 1000 < s->http->reset_pm)
		sim_ev_push(s, s->now + sim_rand_range(s, 0, 20), SIM_EV_HTTP_RESET, n->num,
			    (uint32_t)to, NULL, c->gen | (uint64_t)ch << 32);
	return 0;
}

static void op_answer(void *ctx, void *handle, void *payload)
{
	struct sim_http_node *hn = ctx;
	struct sim_msg *m = payload;
	if (!hn->closing)
		sim_check_send(hn->s, node_of(hn), m);
	hn->s->stats.msgs++;
	respond(hn, handle, 200, m);
}

static void op_refuse(void *ctx, void *handle, const struct raft_message *refusal)
{
	struct sim_http_node *hn = ctx;
	struct sim_handle *h = handle;
	struct sim_msg *m = calloc(1, sizeof(*m));

	if (m == NULL)
		abort();
	m->m = *refusal;
	snprintf(m->m.from, sizeof(m->m.from), "%s", hn->s->nodes[hn->num].id);
	snprintf(m->m.to, sizeof(m->m.to), "%s", hn->s->nodes[h->from].id);
	if (refusal->type == RAFT_MSG_TIMEOUT_NOW)
		m->m.type = RAFT_MSG_TIMEOUT_NOW;
	respond(hn, h, 200, m);
}

static void op_fail(void *ctx, void *handle, int status, const char *text)
{
	(void)text;
	respond(ctx, handle, status, NULL);
}

static void op_step(void *ctx, struct raft_event *e)
{
	struct sim_http_node *hn = ctx;
	struct sim_node *n = node_of(hn);
	if (n->up && n->core != NULL && !hn->s->failed)
		sim_node_step(hn->s, n, e, NULL, NULL);
}

static struct raft_core *op_core(void *ctx)
{
	struct sim_http_node *hn = ctx;
	return node_of(hn)->core;
}

/* ------------------------------------------------------------ the world */

void sim_http_init(struct sim *s)
{
	static const unsigned resets[] = {0, 1, 5};
	static const unsigned refusals[] = {0, 2, 10};
	static const unsigned ooms[] = {0, 0, 2, 10};
	s->http = calloc(1, sizeof(*s->http));
	if (s->http == NULL)
		abort();
	for (unsigned i = 0; i < SIM_MAX_NODES; i++) {
		s->http->node[i].s = s;
		s->http->node[i].num = (int)i;
	}
	s->http->reset_pm = resets[sim_rand_range(s, 0, 2)];
	s->http->refuse_pm = refusals[sim_rand_range(s, 0, 2)];
	s->http->oom_pm = ooms[sim_rand_range(s, 0, 3)];
	/* Not from the run's generator: the other seeds run as before. */
	s->http->operator_cuts = (s->p.seed * 0x9e3779b97f4a7c15ull) >> 62 == 0 ||
				 ((s->p.seed * 0x9e3779b97f4a7c15ull) >> 60) == 4;
	kvd_trules_plants = (s->p.plants.parked_answered ? KVD_TRULES_PLANT_PARKED_ANSWERED : 0) |
			    (s->p.plants.held_early ? KVD_TRULES_PLANT_HELD_EARLY : 0) |
			    (s->p.plants.one_connection ? KVD_TRULES_PLANT_ONE_CONNECTION : 0) |
			    (s->p.plants.stale_chunk_loss ? KVD_TRULES_PLANT_STALE_CHUNK_LOSS : 0);
}

void sim_http_sync(struct sim *s)
{
	struct sim_http *h = s->http;
	if (!h->operator_cuts || (h->synced && memcmp(h->cut, s->cut, sizeof(h->cut)) == 0))
		return;
	memcpy(h->cut, s->cut, sizeof(h->cut));
	h->synced = true;
	for (unsigned i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		const char *allowed[SIM_MAX_NODES];
		unsigned k = 0;
		bool partitioned = false;
		if (n->tr == NULL)
			continue;
		/* n stops hearing j: it refuses j's requests (503) and sends
		 * nothing to j. */
		for (unsigned j = 0; j < s->n_nodes; j++) {
			if (j != i && s->cut[j][i])
				partitioned = true;
			else
				allowed[k++] = s->nodes[j].id;
		}
		kvd_trules_set_partition(n->tr, partitioned, allowed, k);
	}
}

bool sim_http_append_fails(struct sim *s)
{
	return !s->healing && s->http->oom_pm > 0 && sim_rand(s) % 1000 < s->http->oom_pm;
}

void sim_http_node_up(struct sim *s, struct sim_node *n)
{
	struct kvd_trules_ops ops = {
	    .ctx = &s->http->node[n->num],
	    .encode = op_encode,
	    .payload_free = op_payload_free,
	    .request = op_request,
	    .answer = op_answer,
	    .refuse = op_refuse,
	    .fail = op_fail,
	    .step = op_step,
	    .core = op_core,
	    .health = NULL,
	};
	if (kvd_trules_create(&ops, &n->tr) != 0)
		abort();
	s->http->synced = false; /* the partition is reloaded, as from partition.json */
	sim_http_sync(s);
}

/* Frees the requests of a->b without completing them (a is gone). */
static void conn_drop(struct sim *s, int a, int b, int ch)
{
	struct sim_conn *c = &s->http->conn[a][b][ch];
	while (c->head != NULL) {
		struct sim_call *x = c->head;
		c->head = x->next;
		if (x->tc != NULL)
			kvd_trules_call_free(x->tc);
		call_free(x);
	}
	c->tail = NULL;
	c->gen++;
	c->req_last = c->resp_last = s->now;
	c->serving = false;
}

void sim_http_node_down(struct sim *s, struct sim_node *n)
{
	struct sim_http_node *hn = &s->http->node[n->num];

	if (n->tr != NULL) {
		hn->closing = true;
		kvd_trules_destroy(n->tr);
		n->tr = NULL;
		hn->closing = false;
	}
	while (hn->handles != NULL) { /* the rules answered all: none left */
		struct sim_handle *h = hn->handles;
		hn->handles = h->next;
		free(h);
	}
	for (unsigned i = 0; i < s->n_nodes; i++) {
		for (int ch = 0; ch < SIM_HTTP_CONNS; ch++) {
			struct sim_conn *c = &s->http->conn[i][n->num][ch];
			conn_drop(s, n->num, (int)i, ch);
			/* The peers' requests to n fail when the reset reaches them. */
			if (c->head != NULL)
				sim_ev_push(s, s->now + sim_rand_range(s, 1, 5), SIM_EV_HTTP_RESET,
					    (int)i, (uint32_t)n->num, NULL,
					    c->gen | (uint64_t)ch << 32);
			else
				c->gen++;
		}
	}
}

/* A segment arrives (SIM_EV_DELIVER of a message with http set). Takes m. */
void sim_http_deliver(struct sim *s, struct sim_msg *m)
{
	struct sim_conn *c = &s->http->conn[m->conn_from][m->conn_to][m->conn_ch];
	bool is_req = m->http == SIM_HTTP_REQ;
	int src = is_req ? m->conn_from : m->conn_to, dst = is_req ? m->conn_to : m->conn_from;
	struct sim_call *x;

	if (m->conn_gen != c->gen) { /* the connection was reset */
		sim_msg_free(m);
		return;
	}
	if (!s->http->operator_cuts && s->cut[src][dst]) { /* retransmitted until the link heals */
		raft_time *last = is_req ? &c->req_last : &c->resp_last;
		raft_time t = s->now + sim_rand_range(s, 200, 400);
		if (t < *last)
			t = *last;
		*last = t;
		s->stats.http_retransmits++;
		push_segment(s, m, dst, t);
		return;
	}
	x = find_call(c, m->call_id);
	if (is_req) {
		if (x == NULL || x->arrived) {
			sim_fail(s, "transport pairing: request %llu of %s arrives twice or unsent",
				 (unsigned long long)m->call_id, s->nodes[src].id);
			sim_msg_free(m);
			return;
		}
		x->arrived = true;
		x->req = m;
		if (!s->nodes[dst].up) {
			/* The host answers a segment for a process that is
			 * gone with a reset (connection refused): the request
			 * fails at once instead of staying on its connection,
			 * never served, until its deadline (10 s for a chunk,
			 * which then held every resend behind it: issue 7). */
			if (s->p.trace)
				printf("%8llu request %llu of %s arrives at %s, which is down "
				       "(conn %d): reset\n",
				       (unsigned long long)s->now, (unsigned long long)m->call_id,
				       s->nodes[src].id, s->nodes[dst].id, m->conn_ch);
			sim_ev_push(s, s->now + 1, SIM_EV_HTTP_RESET, m->conn_from,
				    (uint32_t)m->conn_to, NULL,
				    c->gen | (uint64_t)m->conn_ch << 32);
			return;
		}
		if (!c->serving)
			serve(s, m->conn_from, m->conn_to, m->conn_ch);
		return;
	}
	if (x == NULL || !x->answered || x->resp != NULL) {
		sim_fail(s,
			 "transport pairing: a response of %s to %s for request %llu that was "
			 "not sent, not answered, or answered twice",
			 s->nodes[src].id, s->nodes[dst].id, (unsigned long long)m->call_id);
		sim_msg_free(m);
		return;
	}
	if (sim_converge_deliver(s, &s->nodes[dst], m)) {
		int from = m->conn_from, to = m->conn_to, ch = m->conn_ch;
		sim_msg_free(m); /* lost at the heal: the connection breaks */
		conn_reset(s, from, to, ch, 0);
		return;
	}
	x->resp = m;
	/* Responses complete in request order (HTTP/1.1 pairing). */
	{
		uint32_t gen = c->gen;
		while (!s->failed && c->gen == gen && c->head != NULL && c->head->resp != NULL) {
			struct sim_call *h = c->head;
			struct sim_msg *r = h->resp;
			struct kvd_trules_call *tc = h->tc;
			uint64_t hid = h->id;
			c->head = h->next;
			if (c->head == NULL)
				c->tail = NULL;
			h->resp = NULL;
			h->tc = NULL;
			call_free(h);
			s->stats.http_responses++;
			if (s->p.trace &&
			    (tc->req.type == RAFT_MSG_SNAPSHOT ||
			     (r->status == 200 && r->m.type == RAFT_MSG_APPEND_RESULT &&
			      !r->m.u.append_result.success)))
				printf(
				    "%8llu %s <- %s %s status %d success %d offset/last %llu "
				    "(call %llu)\n",
				    (unsigned long long)s->now, s->nodes[m->conn_from].id,
				    s->nodes[m->conn_to].id,
				    tc->req.type == RAFT_MSG_SNAPSHOT ? "chunk result"
								      : "append refusal",
				    r->status,
				    r->status == 200 && tc->req.type == RAFT_MSG_SNAPSHOT
					? r->m.u.snapshot_result.success
					: 0,
				    (unsigned long long)(tc->req.type == RAFT_MSG_SNAPSHOT
							     ? r->m.u.snapshot_result.offset
							     : r->m.u.append_result.last_log_index),
				    (unsigned long long)hid);
			kvd_trules_result(tc, r->status, r->status == 200 ? &r->m : NULL);
			sim_msg_free(r);
		}
	}
}

void sim_http_timeout(struct sim *s, int a, int b, uint64_t call_id)
{
	for (int ch = 0; ch < SIM_HTTP_CONNS; ch++) {
		if (find_call(&s->http->conn[a][b][ch], call_id) != NULL) {
			s->stats.http_timeouts++;
			conn_reset(s, a, b, ch, call_id);
			return;
		}
	}
}

void sim_http_reset(struct sim *s, int a, int b, uint64_t gen_ch)
{
	int ch = (int)(gen_ch >> 32);
	if (ch < SIM_HTTP_CONNS && s->http->conn[a][b][ch].gen == (uint32_t)gen_ch)
		conn_reset(s, a, b, ch, 0);
}

void sim_http_free(struct sim *s)
{
	if (s->http == NULL)
		return;
	for (unsigned i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		struct sim_http_node *hn = &s->http->node[i];
		if (n->tr != NULL) {
			hn->closing = true;
			kvd_trules_destroy(n->tr);
			n->tr = NULL;
		}
		while (hn->handles != NULL) {
			struct sim_handle *h = hn->handles;
			hn->handles = h->next;
			free(h);
		}
	}
	for (unsigned a = 0; a < s->n_nodes; a++)
		for (unsigned b = 0; b < s->n_nodes; b++)
			for (int ch = 0; ch < SIM_HTTP_CONNS; ch++)
				conn_drop(s, (int)a, (int)b, ch);
	free(s->http);
	s->http = NULL;
}
