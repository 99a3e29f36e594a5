/*
 * transport_rules.c: the peer transport's pairing logic, without HTTP
 * (transport_rules.h). Split from transport.c so that the simulation runs
 * these rules over its own simulated HTTP layer: every defect of this file
 * that once reached the daemon (the parked last chunk answered at once,
 * held messages leaving before their write) is one the simulation can see.
 *
 * Invariants:
 *  - A message the core flagged needs_sync leaves only after the writer has
 *    completed the sequence recorded with it. Held messages leave in the
 *    order they were produced.
 *  - Every incoming request gets exactly one answer: the core's result for
 *    its token, or, when the core produced none, a refusal in the current
 *    term; the parked last chunk waits for the install.
 *  - While partitioned, nothing is sent to a blocked peer, and results that
 *    arrive from one are dropped.
 */
#include "api/transport_rules.h"

#include <stdlib.h>
#include <string.h>

#include "kvd/errors.h"

#ifdef KVD_TRULES_PLANTS
unsigned kvd_trules_plants;
#endif

struct incoming {
	struct incoming *next;
	uint64_t token;
	void *handle;
	enum raft_msg_type type;
	bool held;   /* its result waits for the writer */
	bool parked; /* the last snapshot chunk: answered after the install */
};

/* A serialized message waiting for the writer. */
struct held {
	struct held *next;
	uint64_t seq;
	struct raft_message head; /* type, ids, term, token, and small fields */
	void *payload;
	size_t len;
};

struct kvd_trules {
	struct kvd_trules_ops ops;
	struct incoming *incoming;
	struct held *held, *held_tail;
	uint64_t next_token;
	bool partitioned;
	unsigned n_allowed;
	char allowed[RAFT_MAX_SERVERS * 2][RAFT_ID_SIZE];
	bool closing;
	struct kvd_trules_stats stats;
};

/* ---- partitions ------------------------------------------------------- */

bool kvd_trules_blocked(const struct kvd_trules *r, const char *peer)
{
	bool blocked = r->partitioned;

	for (unsigned i = 0; blocked && i < r->n_allowed; i++)
		if (strcmp(r->allowed[i], peer) == 0)
			blocked = false;
	return blocked;
}

void kvd_trules_set_partition(struct kvd_trules *r, bool partitioned, const char *const *allowed,
			      unsigned n)
{
	if (n > RAFT_MAX_SERVERS * 2)
		n = RAFT_MAX_SERVERS * 2;
	r->partitioned = partitioned;
	r->n_allowed = partitioned ? n : 0;
	for (unsigned i = 0; i < r->n_allowed; i++) {
		size_t len = strnlen(allowed[i], RAFT_ID_SIZE - 1);
		memcpy(r->allowed[i], allowed[i], len);
		r->allowed[i][len] = '\0';
	}
}

/* ---- outgoing requests -------------------------------------------------- */

uint64_t kvd_trules_timeout_ms(enum raft_msg_type type, size_t len)
{
	return type == RAFT_MSG_SNAPSHOT ? KVD_TRULES_SNAPSHOT_TIMEOUT_MS
					 : KVD_TRULES_RPC_TIMEOUT_MS + (uint64_t)(len >> 13);
}

static void health(struct kvd_trules *r, const char *peer, bool ok, int status)
{
	if (r->ops.health != NULL)
		r->ops.health(r->ops.ctx, peer, ok, status);
}

void kvd_trules_call_free(struct kvd_trules_call *call)
{
	free(call);
}

/* A 200 answer with a decoded result: fills what a peer may leave out and
 * steps the core with it. */
static void result_ok(struct kvd_trules *r, const struct kvd_trules_call *call,
		      const struct raft_message *result)
{
	const struct raft_message *q = &call->req;
	struct raft_event e;

	memset(&e, 0, sizeof(e));
	r->stats.results++;
	health(r, q->to, true, 200);
	e.u.receive = *result;
	/* Fill what a peer of another implementation may leave out. */
	switch (q->type) {
	case RAFT_MSG_REQUEST_VOTE:
		e.u.receive.u.request_vote_result.pre_vote = q->u.request_vote.pre_vote;
		break;
	case RAFT_MSG_APPEND: {
		struct raft_append_result *a = &e.u.receive.u.append_result;
		if (!a->success && a->reject_index == 0)
			a->reject_index = q->u.append.prev_log_index;
		if (a->seq == 0)
			a->seq = q->u.append.seq;
		break;
	}
	case RAFT_MSG_SNAPSHOT: {
		struct raft_snapshot_result *s = &e.u.receive.u.snapshot_result;
		if (s->last_index == 0)
			s->last_index = q->u.snapshot.last_index;
		if (s->success && s->offset == 0)
			s->offset = q->u.snapshot.offset + call->len;
		break;
	}
	default: break;
	}
	e.type = RAFT_EVENT_RECEIVE;
	r->ops.step(r->ops.ctx, &e);
}

void kvd_trules_result(struct kvd_trules_call *call, int status, const struct raft_message *result)
{
	struct kvd_trules *r = call->rules;
	const struct raft_message *q = &call->req;
	struct raft_event e;

	memset(&e, 0, sizeof(e));
	if (r->closing || kvd_trules_blocked(r, q->to)) {
		/* dropped: the transport closes, or the peer is partitioned */
	} else if (q->type == RAFT_MSG_TIMEOUT_NOW) { /* no result for the core */
		health(r, q->to, status == 200, status);
	} else if (status != 200 || result == NULL) {
		r->stats.failures++;
		health(r, q->to, false, status);
		if (q->type == RAFT_MSG_APPEND || q->type == RAFT_MSG_SNAPSHOT) {
			e.type = RAFT_EVENT_UNREACHABLE;
			e.u.unreachable.id = q->to;
			e.u.unreachable.snapshot = q->type == RAFT_MSG_SNAPSHOT;
			/* The token says which chunk was lost (issue 7). */
			if (q->type == RAFT_MSG_SNAPSHOT &&
			    !KVD_TRULES_PLANTED(KVD_TRULES_PLANT_STALE_CHUNK_LOSS))
				e.u.unreachable.token = q->token;
			r->ops.step(r->ops.ctx, &e);
		}
	} else {
		result_ok(r, call, result);
	}
	free(call);
}

static void send_request(struct kvd_trules *r, const struct raft_message *head, void *payload,
			 size_t len)
{
	struct kvd_trules_call *call = NULL;

	if (!kvd_trules_blocked(r, head->to) && !r->closing)
		call = calloc(1, sizeof(*call));
	if (call == NULL) { /* blocked, closing, or out of memory: dropped */
		r->ops.payload_free(r->ops.ctx, payload);
		goto done;
	}
	call->rules = r;
	call->req = *head;
	if (head->type == RAFT_MSG_APPEND)
		call->req.u.append.entries = NULL;
	if (head->type == RAFT_MSG_SNAPSHOT)
		call->req.u.snapshot.data = NULL;
	call->len = len;
	call->timeout_ms = kvd_trules_timeout_ms(head->type, len);
	call->channel =
	    head->type == RAFT_MSG_SNAPSHOT && !KVD_TRULES_PLANTED(KVD_TRULES_PLANT_ONE_CONNECTION)
		? KVD_TRULES_CHANNEL_SNAPSHOT
		: KVD_TRULES_CHANNEL_RAFT;
	r->stats.requests++;
	if (r->ops.request(r->ops.ctx, call, payload) != 0)
		free(call);
done:
	return;
}

/* ---- incoming requests -------------------------------------------------- */

static struct incoming **find_incoming(struct kvd_trules *r, uint64_t token)
{
	struct incoming **pp = &r->incoming;
	while (*pp != NULL && (*pp)->token != token)
		pp = &(*pp)->next;
	return pp;
}

/* Unlinks and frees in, returning its handle. */
static void *take(struct kvd_trules *r, struct incoming *in)
{
	struct incoming **pp = find_incoming(r, in->token);
	void *handle = in->handle;
	*pp = in->next;
	free(in);
	return handle;
}

static void answer(struct kvd_trules *r, uint64_t token, void *payload)
{
	struct incoming *in = *find_incoming(r, token);

	if (in == NULL) { /* answered already (refused), or the request is gone */
		r->ops.payload_free(r->ops.ctx, payload);
	} else {
		r->stats.answered++;
		r->ops.answer(r->ops.ctx, take(r, in), payload);
	}
}

static void refuse(struct kvd_trules *r, struct incoming *in)
{
	struct raft_core *core = r->ops.core(r->ops.ctx);
	struct raft_message m;

	memset(&m, 0, sizeof(m));
	m.term = core != NULL ? raft_current_term(core) : 0;
	m.token = in->token;
	switch (in->type) {
	case RAFT_MSG_REQUEST_VOTE: m.type = RAFT_MSG_REQUEST_VOTE_RESULT; break;
	case RAFT_MSG_APPEND:
		m.type = RAFT_MSG_APPEND_RESULT;
		m.u.append_result.last_log_index = core != NULL ? raft_last_index(core) : 0;
		break;
	case RAFT_MSG_SNAPSHOT:
		/* Offset 0: the stream restarts from the beginning. */
		m.type = RAFT_MSG_SNAPSHOT_RESULT;
		break;
	default: m.type = in->type; break;
	}
	r->stats.refused++;
	r->ops.refuse(r->ops.ctx, take(r, in), &m);
}

void kvd_trules_answer_orphans(struct kvd_trules *r)
{
	struct incoming *in = r->incoming;
	while (in != NULL) {
		struct incoming *next = in->next;
		if (!in->held && !in->parked)
			refuse(r, in);
		in = next;
	}
}

void kvd_trules_refuse_parked(struct kvd_trules *r)
{
	struct incoming *in = r->incoming;
	while (in != NULL) {
		struct incoming *next = in->next;
		if (in->parked)
			refuse(r, in);
		in = next;
	}
}

int kvd_trules_receive(struct kvd_trules *r, void *handle, const struct raft_message *m)
{
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	struct raft_core *core;
	struct incoming *in = calloc(1, sizeof(*in));
	uint64_t token;
	int rv = 0;

	if (in == NULL) {
		rv = KVD_ENOMEM;
		goto done;
	}
	token = ++r->next_token;
	in->token = token;
	in->handle = handle;
	in->type = m->type;
	in->next = r->incoming;
	r->incoming = in;
	r->stats.received++;
	e.u.receive = *m;
	e.u.receive.token = token;
	r->ops.step(r->ops.ctx, &e);
	in = *find_incoming(r, token);
	core = r->ops.core(r->ops.ctx);
	/* The core answers the last chunk of a snapshot only once it is
	 * installed: refusing it now would restart the leader's stream and
	 * the real answer would find no request. */
	if (in != NULL && core != NULL && raft_snapshot_install_token(core) == in->token &&
	    !KVD_TRULES_PLANTED(KVD_TRULES_PLANT_PARKED_ANSWERED))
		in->parked = true;
	else if (in != NULL && !in->held)
		refuse(r, in);
done:
	return rv;
}

/* ---- sending and holding ------------------------------------------------ */

static bool is_result(enum raft_msg_type type)
{
	return type == RAFT_MSG_REQUEST_VOTE_RESULT || type == RAFT_MSG_APPEND_RESULT ||
	       type == RAFT_MSG_SNAPSHOT_RESULT;
}

static void dispatch(struct kvd_trules *r, const struct raft_message *head, void *payload,
		     size_t len)
{
	if (is_result(head->type))
		answer(r, head->token, payload);
	else
		send_request(r, head, payload, len);
}

void kvd_trules_send(struct kvd_trules *r, const struct raft_message *m, uint64_t sync_seq)
{
	void *payload = NULL;
	size_t len = 0;
	struct held *h = NULL;

	if (r->ops.encode(r->ops.ctx, m, &payload, &len) != 0)
		goto done; /* the binding logged why; the core resends */
	if (sync_seq == 0) {
		dispatch(r, m, payload, len);
		goto done;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		r->ops.payload_free(r->ops.ctx, payload);
		goto done;
	}
	h->seq = sync_seq;
	h->head = *m;
	if (m->type == RAFT_MSG_APPEND)
		h->head.u.append.entries = NULL;
	if (m->type == RAFT_MSG_SNAPSHOT)
		h->head.u.snapshot.data = NULL;
	h->payload = payload;
	h->len = len;
	if (is_result(m->type)) {
		struct incoming *in = *find_incoming(r, m->token);
		if (in != NULL)
			in->held = true;
	}
	if (r->held_tail != NULL)
		r->held_tail->next = h;
	else
		r->held = h;
	r->held_tail = h;
	r->stats.held++;
done:
	return;
}

void kvd_trules_drop_held(struct kvd_trules *r)
{
	while (r->held != NULL) {
		struct held *h = r->held;
		r->held = h->next;
		if (is_result(h->head.type)) {
			struct incoming *in = *find_incoming(r, h->head.token);
			if (in != NULL)
				in->held = false;
		}
		r->ops.payload_free(r->ops.ctx, h->payload);
		free(h);
		r->stats.dropped++;
	}
	r->held_tail = NULL;
	kvd_trules_answer_orphans(r);
}

void kvd_trules_flush(struct kvd_trules *r, uint64_t completed_seq)
{
	/* Planted held-early: one writer sequence too early. */
	uint64_t upto = completed_seq + (KVD_TRULES_PLANTED(KVD_TRULES_PLANT_HELD_EARLY) ? 1 : 0);

	while (r->held != NULL && r->held->seq <= upto) {
		struct held *h = r->held;
		r->held = h->next;
		if (r->held == NULL)
			r->held_tail = NULL;
		dispatch(r, &h->head, h->payload, h->len);
		free(h);
	}
}

/* ---- lifecycle ------------------------------------------------------------- */

int kvd_trules_create(const struct kvd_trules_ops *ops, struct kvd_trules **out)
{
	struct kvd_trules *r = calloc(1, sizeof(*r));
	int rv = KVD_ENOMEM;

	if (r != NULL) {
		r->ops = *ops;
		*out = r;
		rv = 0;
	}
	return rv;
}

void kvd_trules_destroy(struct kvd_trules *r)
{
	if (r == NULL)
		goto done;
	r->closing = true;
	while (r->held != NULL) {
		struct held *h = r->held;
		r->held = h->next;
		r->ops.payload_free(r->ops.ctx, h->payload);
		free(h);
	}
	r->held_tail = NULL;
	kvd_trules_answer_orphans(r);
	while (r->incoming != NULL) {
		struct incoming *in = r->incoming;
		r->incoming = in->next;
		r->ops.fail(r->ops.ctx, in->handle, 503, "shutting down\n");
		free(in);
	}
	free(r);
done:
	return;
}

void kvd_trules_stats_get(const struct kvd_trules *r, struct kvd_trules_stats *out)
{
	*out = r->stats;
}
