/*
 * test_transport_rules.c: the transport's pairing rules (api/transport_rules.c)
 * with a real Raft core behind them: held messages and their order, exactly
 * one answer per incoming request (result, refusal or failure), the parked
 * last snapshot chunk, how failed answers become core events, channels and
 * timeouts, partitions. The ops record what the rules ask of the outside
 * (the HTTP binding is api/transport.c, tested by the integration tests).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/transport_rules.h"
#include "kvd/errors.h"
#include "raft/raft.h"

#define MAX_REC 64

struct payload {
	struct raft_message m;
};

/* What the rules did, in order. */
struct rec {
	char kind; /* 'r' request, 'a' answer, 'x' refuse, 'f' fail, 's' step */
	struct raft_message m;
	void *handle;
	int status;
	struct kvd_trules_call *call;
	struct raft_event e;
	char unreachable[RAFT_ID_SIZE]; /* e.u.unreachable.id, copied (borrowed for the step) */
};

struct world {
	struct raft_core *core;
	struct rec rec[MAX_REC];
	unsigned n;
	unsigned payloads; /* alive */
	bool step_to_core; /* steps go to the real core (else recorded only) */
};

static struct rec *add(struct world *w, char kind)
{
	ck_assert_uint_lt(w->n, MAX_REC);
	memset(&w->rec[w->n], 0, sizeof(w->rec[w->n]));
	w->rec[w->n].kind = kind;
	return &w->rec[w->n++];
}

static int op_encode(void *ctx, const struct raft_message *m, void **payload, size_t *len)
{
	struct world *w = ctx;
	struct payload *p = calloc(1, sizeof(*p));
	ck_assert_ptr_nonnull(p);
	p->m = *m;
	p->m.u.append.entries = NULL;
	*payload = p;
	*len = m->type == RAFT_MSG_SNAPSHOT ? m->u.snapshot.len : 100;
	w->payloads++;
	return 0;
}

static void op_payload_free(void *ctx, void *payload)
{
	struct world *w = ctx;
	w->payloads--;
	free(payload);
}

static int op_request(void *ctx, struct kvd_trules_call *call, void *payload)
{
	struct world *w = ctx;
	struct rec *r = add(w, 'r');
	r->m = ((struct payload *)payload)->m;
	r->call = call;
	op_payload_free(ctx, payload);
	return 0;
}

static void op_answer(void *ctx, void *handle, void *payload)
{
	struct world *w = ctx;
	struct rec *r = add(w, 'a');
	r->m = ((struct payload *)payload)->m;
	r->handle = handle;
	op_payload_free(ctx, payload);
}

static void op_refuse(void *ctx, void *handle, const struct raft_message *refusal)
{
	struct rec *r = add(ctx, 'x');
	r->m = *refusal;
	r->handle = handle;
}

static void op_fail(void *ctx, void *handle, int status, const char *text)
{
	struct rec *r = add(ctx, 'f');
	(void)text;
	r->handle = handle;
	r->status = status;
}

static void handle_update(struct kvd_trules *t, const struct raft_update *u)
{
	for (unsigned i = 0; i < u->n_messages; i++)
		kvd_trules_send(t, &u->messages[i], 0);
}

static struct kvd_trules *g_rules; /* the rules the world's steps answer through */

static void op_step(void *ctx, struct raft_event *e)
{
	struct world *w = ctx;
	struct rec *r = add(w, 's');
	r->e = *e;
	if (e->type == RAFT_EVENT_UNREACHABLE)
		snprintf(r->unreachable, sizeof(r->unreachable), "%s", e->u.unreachable.id);
	if (w->step_to_core) {
		struct raft_update u;
		ck_assert_int_eq(raft_step(w->core, e, &u), 0);
		handle_update(g_rules, &u);
	}
}

static struct raft_core *op_core(void *ctx)
{
	return ((struct world *)ctx)->core;
}

static struct kvd_trules *setup(struct world *w)
{
	struct kvd_trules_ops ops = {
	    .ctx = w,
	    .encode = op_encode,
	    .payload_free = op_payload_free,
	    .request = op_request,
	    .answer = op_answer,
	    .refuse = op_refuse,
	    .fail = op_fail,
	    .step = op_step,
	    .core = op_core,
	};
	struct raft_options o;
	struct raft_event e = {.type = RAFT_EVENT_START, .now = 1};
	struct raft_update u;

	memset(w, 0, sizeof(*w));
	raft_options_default(&o);
	w->core = raft_create("n1", &o, 1);
	ck_assert_ptr_nonnull(w->core);
	e.u.start.term = 3;
	ck_assert_int_eq(raft_step(w->core, &e, &u), 0);
	ck_assert_int_eq(kvd_trules_create(&ops, &g_rules), 0);
	return g_rules;
}

static void teardown(struct world *w, struct kvd_trules *t)
{
	kvd_trules_destroy(t);
	raft_destroy(w->core);
	ck_assert_uint_eq(w->payloads, 0); /* every payload freed once */
}

static struct raft_message msg(enum raft_msg_type type, const char *from, const char *to,
			       raft_term term)
{
	struct raft_message m;
	memset(&m, 0, sizeof(m));
	m.type = type;
	snprintf(m.from, sizeof(m.from), "%s", from);
	snprintf(m.to, sizeof(m.to), "%s", to);
	m.term = term;
	return m;
}

START_TEST(test_held_messages_leave_in_order_when_their_write_completes)
{
	struct world w;
	struct kvd_trules *t = setup(&w);
	struct raft_message a = msg(RAFT_MSG_REQUEST_VOTE, "n1", "n2", 4);
	struct raft_message b = msg(RAFT_MSG_APPEND, "n1", "n3", 4);
	struct raft_message c = msg(RAFT_MSG_APPEND, "n1", "n2", 4);

	a.needs_sync = b.needs_sync = true;
	kvd_trules_send(t, &a, 5);
	kvd_trules_send(t, &b, 7);
	kvd_trules_send(t, &c, 0); /* no sync needed: leaves at once */
	ck_assert_uint_eq(w.n, 1);
	ck_assert_str_eq(w.rec[0].m.to, "n2");
	ck_assert_int_eq(w.rec[0].m.type, RAFT_MSG_APPEND);
	kvd_trules_flush(t, 4); /* one sequence short: nothing */
	ck_assert_uint_eq(w.n, 1);
	kvd_trules_flush(t, 6);
	ck_assert_uint_eq(w.n, 2);
	ck_assert_int_eq(w.rec[1].m.type, RAFT_MSG_REQUEST_VOTE);
	kvd_trules_flush(t, 100);
	ck_assert_uint_eq(w.n, 3);
	ck_assert_str_eq(w.rec[2].m.to, "n3");
	for (unsigned i = 0; i < w.n; i++)
		kvd_trules_call_free(w.rec[i].call);
	teardown(&w, t);
}
END_TEST

START_TEST(test_incoming_request_gets_exactly_one_answer)
{
	struct world w;
	struct kvd_trules *t = setup(&w);
	struct raft_message rv = msg(RAFT_MSG_REQUEST_VOTE, "n2", "n1", 2); /* stale term */
	int h1, h2;

	/* The core's step produces nothing for the token: refused at once, in
	 * the core's term (3). */
	ck_assert_int_eq(kvd_trules_receive(t, &h1, &rv), 0);
	ck_assert_uint_eq(w.n, 2);
	ck_assert_int_eq(w.rec[0].kind, 's');
	ck_assert_int_eq(w.rec[1].kind, 'x');
	ck_assert_ptr_eq(w.rec[1].handle, &h1);
	ck_assert_int_eq(w.rec[1].m.type, RAFT_MSG_REQUEST_VOTE_RESULT);
	ck_assert_uint_eq(w.rec[1].m.term, 3);
	/* A result held for the writer: no refusal; dropped: refused once. */
	{
		struct raft_message ap = msg(RAFT_MSG_APPEND, "n2", "n1", 3);
		struct raft_message res = msg(RAFT_MSG_APPEND_RESULT, "n1", "n2", 3);
		ck_assert_int_eq(kvd_trules_receive(t, &h2, &ap), 0);
		ck_assert_int_eq(w.rec[w.n - 1].kind, 'x'); /* nothing from the test core */
		/* Now a request whose result the core holds. */
		w.n = 0;
		res.token = 3; /* the next token */
		res.needs_sync = true;
		kvd_trules_send(t, &res, 9); /* token 3 not received yet: kept */
		ck_assert_int_eq(kvd_trules_receive(t, &h2, &ap), 0);
		ck_assert_uint_eq(w.n, 2); /* step, refusal: the hold came first */
		kvd_trules_flush(t, 9);	   /* the result finds no request: freed */
		ck_assert_uint_eq(w.n, 2);
	}
	kvd_trules_answer_orphans(t); /* nothing left to refuse */
	ck_assert_uint_eq(w.n, 2);
	teardown(&w, t);
}
END_TEST

/* Steps that answer the incoming request with a held result. */
static struct raft_message g_reply;
static bool g_reply_set;
static void op_step_reply(void *ctx, struct raft_event *e)
{
	struct world *w = ctx;
	add(w, 's');
	if (g_reply_set && e->type == RAFT_EVENT_RECEIVE) {
		g_reply.token = e->u.receive.token;
		kvd_trules_send(g_rules, &g_reply, 7);
	}
}

START_TEST(test_held_result_answers_after_flush_or_refused_when_dropped)
{
	struct world w;
	struct kvd_trules_ops ops = {
	    .ctx = &w,
	    .encode = op_encode,
	    .payload_free = op_payload_free,
	    .request = op_request,
	    .answer = op_answer,
	    .refuse = op_refuse,
	    .fail = op_fail,
	    .step = op_step_reply,
	    .core = op_core,
	};
	struct kvd_trules *t = setup(&w);
	struct raft_message ap = msg(RAFT_MSG_APPEND, "n2", "n1", 3);
	int h1, h2;

	kvd_trules_destroy(t);
	ck_assert_int_eq(kvd_trules_create(&ops, &g_rules), 0);
	t = g_rules;
	g_reply = msg(RAFT_MSG_APPEND_RESULT, "n1", "n2", 3);
	g_reply.needs_sync = true;
	g_reply.u.append_result.success = true;
	g_reply_set = true;
	ck_assert_int_eq(kvd_trules_receive(t, &h1, &ap), 0);
	ck_assert_uint_eq(w.n, 1); /* held: not refused */
	kvd_trules_flush(t, 6);
	ck_assert_uint_eq(w.n, 1);
	kvd_trules_flush(t, 7);
	ck_assert_uint_eq(w.n, 2);
	ck_assert_int_eq(w.rec[1].kind, 'a');
	ck_assert_ptr_eq(w.rec[1].handle, &h1);
	ck_assert(w.rec[1].m.u.append_result.success);
	/* The write failed: the held success is dropped, the request refused
	 * (never a success for entries not stored, issue 7 item 9). */
	ck_assert_int_eq(kvd_trules_receive(t, &h2, &ap), 0);
	ck_assert_uint_eq(w.n, 3);
	kvd_trules_drop_held(t);
	ck_assert_uint_eq(w.n, 4);
	ck_assert_int_eq(w.rec[3].kind, 'x');
	ck_assert_ptr_eq(w.rec[3].handle, &h2);
	ck_assert(!w.rec[3].m.u.append_result.success);
	kvd_trules_flush(t, 100);
	ck_assert_uint_eq(w.n, 4);
	g_reply_set = false;
	teardown(&w, t);
}
END_TEST

START_TEST(test_parked_last_chunk_waits_and_is_refused_with_offset_zero)
{
	struct world w;
	struct kvd_trules *t = setup(&w);
	struct raft_message c = msg(RAFT_MSG_SNAPSHOT, "n2", "n1", 4);
	char data[16] = "snapshot bytes";
	int h;

	w.step_to_core = true;
	c.u.snapshot.last_index = 10;
	c.u.snapshot.last_term = 2;
	c.u.snapshot.data = data;
	c.u.snapshot.len = sizeof(data);
	c.u.snapshot.done = true;
	ck_assert_int_eq(kvd_trules_receive(t, &h, &c), 0);
	ck_assert_uint_ne(raft_snapshot_install_token(w.core), 0);
	for (unsigned i = 0; i < w.n; i++)
		ck_assert_int_ne(w.rec[i].kind, 'x'); /* parked, not refused */
	kvd_trules_answer_orphans(t);
	for (unsigned i = 0; i < w.n; i++)
		ck_assert_int_ne(w.rec[i].kind, 'x');
	kvd_trules_refuse_parked(t);
	ck_assert_int_eq(w.rec[w.n - 1].kind, 'x');
	ck_assert_ptr_eq(w.rec[w.n - 1].handle, &h);
	ck_assert_int_eq(w.rec[w.n - 1].m.type, RAFT_MSG_SNAPSHOT_RESULT);
	ck_assert_uint_eq(w.rec[w.n - 1].m.u.snapshot_result.offset, 0);
	ck_assert(!w.rec[w.n - 1].m.u.snapshot_result.success);
	teardown(&w, t);
}
END_TEST

START_TEST(test_answers_become_core_events)
{
	struct world w;
	struct kvd_trules *t = setup(&w);
	struct raft_message ap = msg(RAFT_MSG_APPEND, "n1", "n2", 3);
	struct raft_message rv = msg(RAFT_MSG_REQUEST_VOTE, "n1", "n3", 3);
	struct raft_message sn = msg(RAFT_MSG_SNAPSHOT, "n1", "n2", 3);
	struct raft_message ok;

	ap.u.append.prev_log_index = 41;
	ap.u.append.seq = 9;
	sn.u.snapshot.offset = 1000;
	sn.u.snapshot.len = 500;
	kvd_trules_send(t, &ap, 0);
	kvd_trules_send(t, &rv, 0);
	kvd_trules_send(t, &sn, 0);
	ck_assert_uint_eq(w.n, 3);
	ck_assert_int_eq(w.rec[0].call->channel, KVD_TRULES_CHANNEL_RAFT);
	ck_assert_int_eq(w.rec[2].call->channel, KVD_TRULES_CHANNEL_SNAPSHOT);
	ck_assert_uint_eq(w.rec[0].call->timeout_ms, KVD_TRULES_RPC_TIMEOUT_MS);
	ck_assert_uint_eq(w.rec[2].call->timeout_ms, KVD_TRULES_SNAPSHOT_TIMEOUT_MS);
	ck_assert_uint_eq(kvd_trules_timeout_ms(RAFT_MSG_APPEND, 8192 * 10),
			  KVD_TRULES_RPC_TIMEOUT_MS + 10);
	/* A non-2xx answer of an AppendEntries: UNREACHABLE for n2. */
	kvd_trules_result(w.rec[0].call, 503, NULL);
	ck_assert_int_eq(w.rec[3].kind, 's');
	ck_assert_int_eq(w.rec[3].e.type, RAFT_EVENT_UNREACHABLE);
	ck_assert_str_eq(w.rec[3].unreachable, "n2");
	/* A failed vote: nothing for the core. */
	kvd_trules_result(w.rec[1].call, KVD_ETIMEDOUT, NULL);
	ck_assert_uint_eq(w.n, 4);
	/* A successful chunk answer without an offset: offset + len. */
	ok = msg(RAFT_MSG_SNAPSHOT_RESULT, "n2", "n1", 3);
	ok.u.snapshot_result.success = true;
	kvd_trules_result(w.rec[2].call, 200, &ok);
	ck_assert_int_eq(w.rec[4].e.type, RAFT_EVENT_RECEIVE);
	ck_assert_uint_eq(w.rec[4].e.u.receive.u.snapshot_result.offset, 1500);
	/* A refused AppendEntries without a reject index: prev_log_index,
	 * and the request's seq. */
	kvd_trules_send(t, &ap, 0);
	ok = msg(RAFT_MSG_APPEND_RESULT, "n2", "n1", 3);
	kvd_trules_result(w.rec[5].call, 200, &ok);
	ck_assert_uint_eq(w.rec[6].e.u.receive.u.append_result.reject_index, 41);
	ck_assert_uint_eq(w.rec[6].e.u.receive.u.append_result.seq, 9);
	/* Undecodable 200: UNREACHABLE too. */
	kvd_trules_send(t, &ap, 0);
	kvd_trules_result(w.rec[7].call, 200, NULL);
	ck_assert_int_eq(w.rec[8].e.type, RAFT_EVENT_UNREACHABLE);
	teardown(&w, t);
}
END_TEST

START_TEST(test_partition_blocks_sends_and_answers)
{
	struct world w;
	struct kvd_trules *t = setup(&w);
	const char *allowed[] = {"n3"};
	struct raft_message a2 = msg(RAFT_MSG_APPEND, "n1", "n2", 3);
	struct raft_message a3 = msg(RAFT_MSG_APPEND, "n1", "n3", 3);

	kvd_trules_send(t, &a2, 0);
	ck_assert_uint_eq(w.n, 1);
	kvd_trules_set_partition(t, true, allowed, 1);
	ck_assert(kvd_trules_blocked(t, "n2"));
	ck_assert(!kvd_trules_blocked(t, "n3"));
	kvd_trules_send(t, &a2, 0); /* dropped */
	kvd_trules_send(t, &a3, 0);
	ck_assert_uint_eq(w.n, 2);
	kvd_trules_result(w.rec[0].call, 503, NULL); /* from a blocked peer: dropped */
	ck_assert_uint_eq(w.n, 2);
	kvd_trules_set_partition(t, false, NULL, 0);
	ck_assert(!kvd_trules_blocked(t, "n2"));
	kvd_trules_call_free(w.rec[1].call);
	teardown(&w, t);
}
END_TEST

START_TEST(test_destroy_answers_every_open_request)
{
	struct world w;
	struct kvd_trules *t = setup(&w);
	struct raft_message c = msg(RAFT_MSG_SNAPSHOT, "n2", "n1", 4);
	char data[4] = "abc";
	int h;

	w.step_to_core = true;
	c.u.snapshot.last_index = 10;
	c.u.snapshot.last_term = 2;
	c.u.snapshot.data = data;
	c.u.snapshot.len = sizeof(data);
	c.u.snapshot.done = true;
	ck_assert_int_eq(kvd_trules_receive(t, &h, &c), 0);
	w.n = 0;
	kvd_trules_destroy(t);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_int_eq(w.rec[0].kind, 'f');
	ck_assert_int_eq(w.rec[0].status, 503);
	ck_assert_ptr_eq(w.rec[0].handle, &h);
	raft_destroy(w.core);
	ck_assert_uint_eq(w.payloads, 0);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("transport_rules");
	TCase *tc = tcase_create("rules");
	tcase_add_test(tc, test_held_messages_leave_in_order_when_their_write_completes);
	tcase_add_test(tc, test_incoming_request_gets_exactly_one_answer);
	tcase_add_test(tc, test_held_result_answers_after_flush_or_refused_when_dropped);
	tcase_add_test(tc, test_parked_last_chunk_waits_and_is_refused_with_offset_zero);
	tcase_add_test(tc, test_answers_become_core_events);
	tcase_add_test(tc, test_partition_blocks_sends_and_answers);
	tcase_add_test(tc, test_destroy_answers_every_open_request);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
