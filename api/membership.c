/*
 * membership.c: the cluster administration routes of API.md §3 that change
 * who leads or who is a member, and --join.
 *
 * - POST /cluster/members {"add": [...], "remove": [...]}: on the leader, one
 *   RAFT_EVENT_CHANGE (the core adds new servers as learners, waits for them
 *   to catch up, then uses a single-server change or joint consensus); the
 *   answer waits for the core's changes_done. A second change while one is
 *   pending: 409. On a follower: 307.
 * - POST /cluster/transfer-leadership {"to": id}: RAFT_EVENT_TRANSFER; the
 *   answer waits until the target (or, without "to", another node) leads.
 * - POST /cluster/join {"leader": id} and --join: this node asks the cluster
 *   that id belongs to to add it (/cluster/members on that cluster's leader,
 *   found through /cluster/info), retrying until it is a voting member.
 * - POST /cluster/leave: this node asks the leader to remove it.
 *
 * Thread: loop thread only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>
#include <jansson.h>

#include "api/cluster_id.h"
#include "api/http/http_client.h"
#include "api/log.h"
#include "api/membership.h"
#include "api/metrics.h"
#include "api/node_internal.h"
#include "kvd/errors.h"

#define CHANGE_TIMEOUT_MS    60000 /* learners may need a whole snapshot */
#define TRANSFER_TIMEOUT_MS  5000
#define JOIN_RETRY_MS	     250
#define ADMIN_RPC_TIMEOUT_MS 65000

enum wait_kind { WAIT_CHANGE, WAIT_TRANSFER };

struct admin_wait {
	struct admin_wait *next;
	enum wait_kind kind;
	uint64_t token;
	uint64_t deadline; /* loop time, ms */
	struct http_request *req;
	char target[RAFT_ID_SIZE]; /* transfer: "" = any other node */
};

/* A join or leave carried out by this node against the cluster's leader. */
struct remote_op {
	struct kvd_node *node;
	bool leave;
	bool forever; /* --join: retry until member */
	char contact[RAFT_ID_SIZE];
	struct http_request *req; /* NULL for --join */
	struct http_client *client;
	uv_timer_t timer;
	uint64_t deadline;
	bool asked_leader; /* the last request went to the leader's members route */
};

static struct admin_wait *waits;

static void reply(struct http_request *req, int status, const char *body)
{
	http_response_send(req, status, "text/plain; charset=utf-8", NULL, body, strlen(body));
}

static void reply_ok(struct http_request *req)
{
	http_response_send(req, 200, "application/json", NULL, "{}", 2);
}

static void add_wait(struct kvd_node *n, enum wait_kind kind, uint64_t token,
		     struct http_request *req, const char *target, uint64_t timeout)
{
	struct admin_wait *w = calloc(1, sizeof(*w));
	if (w == NULL) {
		reply(req, 503, "out of memory\n");
		return;
	}
	w->kind = kind;
	w->token = token;
	w->req = req;
	w->deadline = kvd_node_now(n) + timeout;
	snprintf(w->target, sizeof(w->target), "%s", target != NULL ? target : "");
	w->next = waits;
	waits = w;
}

/* Reads a JSON array of ids at key into ids (pointers into o). */
static int read_ids(json_t *o, const char *key, const char **ids, unsigned max, unsigned *n)
{
	json_t *a = json_object_get(o, key);
	size_t i;
	json_t *v;

	*n = 0;
	if (a == NULL)
		return 0;
	if (!json_is_array(a) || json_array_size(a) > max)
		return KVD_EINVAL;
	json_array_foreach(a, i, v)
	{
		const char *id = json_string_value(v);
		uint16_t port;
		if (id == NULL || strlen(id) >= RAFT_ID_SIZE ||
		    kvd_config_split_id(id, NULL, 0, &port) != 0)
			return KVD_EINVAL;
		ids[(*n)++] = id;
	}
	return 0;
}

static json_t *body_json(struct http_request *req)
{
	size_t len;
	const char *b = http_request_body(req, &len);
	if (len == 0)
		return json_object();
	return json_loadb(b, len, 0, NULL);
}

/* Steps the change itself; the answer waits for changes_done. */
static void start_change(struct kvd_node *n, struct http_request *req, const char *const *add,
			 unsigned n_add, const char *const *remove, unsigned n_remove)
{
	struct raft_event e = {.type = RAFT_EVENT_CHANGE};
	int rv;

	if (raft_role(n->raft) != RAFT_LEADER) {
		kvd_reply_not_leader(n, req);
		return;
	}
	e.u.change.token = kvd_node_token(n);
	e.u.change.add = add;
	e.u.change.n_add = n_add;
	e.u.change.remove = remove;
	e.u.change.n_remove = n_remove;
	/* The wait is registered first: the core may finish at once. */
	add_wait(n, WAIT_CHANGE, e.u.change.token, req, NULL, CHANGE_TIMEOUT_MS);
	rv = kvd_node_step(n, &e);
	if (rv != 0)
		kvd_members_done(n, e.u.change.token, rv);
	else
		KVD_INFO("membership change started", "add=%u remove=%u", n_add, n_remove);
}

/*
 * Before adding servers, the leader asks each (GET /raft/status, 1 s) which
 * cluster it belongs to: one that holds key-value data of another cluster is
 * refused with 409 (API.md §1); an unreachable one may still be added (it
 * catches up when it comes up); a lone one without data discards its state
 * when the leader first reaches it (cluster_id.c).
 */
struct members_probe {
	struct kvd_node *node;
	struct http_request *req;
	json_t *body; /* owns the id strings below */
	const char *add[RAFT_MAX_SERVERS], *remove[RAFT_MAX_SERVERS];
	unsigned n_add, n_remove;
	struct http_client *clients[RAFT_MAX_SERVERS];
	unsigned pending;
	char refused[RAFT_ID_SIZE]; /* "" unless a target holds another cluster's data */
	uv_timer_t close_timer;
};

static void probe_closed(uv_handle_t *h)
{
	struct members_probe *p = h->data;
	json_decref(p->body);
	free(p);
}

static void probe_close_cb(uv_timer_t *t)
{
	struct members_probe *p = t->data;
	for (unsigned i = 0; i < p->n_add; i++)
		if (p->clients[i] != NULL)
			http_client_close(p->clients[i]);
	uv_close((uv_handle_t *)&p->close_timer, probe_closed);
}

/* Every probe has answered (or failed): refuse or go ahead. */
static void probe_finish(struct members_probe *p)
{
	if (p->refused[0] != '\0') {
		char msg[RAFT_ID_SIZE + 80];
		snprintf(msg, sizeof(msg), "%s holds key-value data of another cluster\n",
			 p->refused);
		reply(p->req, 409, msg);
	} else {
		start_change(p->node, p->req, p->add, p->n_add, p->remove, p->n_remove);
	}
	/* The clients are closed outside their own callbacks. */
	uv_timer_start(&p->close_timer, probe_close_cb, 0, 0);
}

static void probe_cb(int status, const char *body, size_t len, void *user)
{
	struct members_probe *p = user;

	if (status == KVD_ESHUTDOWN)
		return;
	if (status == 200) {
		json_t *o = json_loadb(body, len, 0, NULL);
		const char *cid = json_string_value(json_object_get(o, "cluster-id"));
		const char *id = json_string_value(json_object_get(o, "id"));
		if (cid != NULL && cid[0] != '\0' && strcmp(cid, kvd_cluster_id(p->node)) != 0 &&
		    json_is_true(json_object_get(o, "has-data")) && p->refused[0] == '\0')
			snprintf(p->refused, sizeof(p->refused), "%s",
				 id != NULL ? id : "a server");
		json_decref(o);
	}
	if (--p->pending == 0)
		probe_finish(p);
}

static void probe_start(struct members_probe *p)
{
	struct kvd_node *n = p->node;
	char headers[300];

	kvd_config_auth_header(&n->cfg, headers, sizeof(headers));
	for (unsigned i = 0; i < p->n_add; i++) {
		char errmsg[KVD_ERRMSG_SIZE];

		if (raft_config_get(raft_configuration(n->raft), p->add[i]) != NULL)
			continue; /* already a member */
		if (http_client_create(n->loop, p->add[i], NULL, &p->clients[i], errmsg) != 0)
			continue;
		p->pending++;
		if (http_client_request(p->clients[i], "GET", "/raft/status",
					headers[0] ? headers : NULL, NULL, 0, 1000, probe_cb,
					p) != 0)
			p->pending--;
	}
	if (p->pending == 0)
		probe_finish(p);
}

void kvd_members_route(struct kvd_node *n, struct http_request *req)
{
	struct members_probe *p = calloc(1, sizeof(*p));
	json_t *o = body_json(req);

	if (p == NULL) {
		json_decref(o);
		reply(req, 503, "out of memory\n");
		return;
	}
	if (!json_is_object(o) || read_ids(o, "add", p->add, RAFT_MAX_SERVERS, &p->n_add) != 0 ||
	    read_ids(o, "remove", p->remove, RAFT_MAX_SERVERS, &p->n_remove) != 0 ||
	    p->n_add + p->n_remove == 0) {
		json_decref(o);
		free(p);
		reply(req, 400,
		      "body must be {\"add\": [ids], \"remove\": [ids]} with at least one id\n");
		return;
	}
	if (raft_role(n->raft) != RAFT_LEADER) {
		json_decref(o);
		free(p);
		kvd_reply_not_leader(n, req);
		return;
	}
	p->node = n;
	p->req = req;
	p->body = o;
	uv_timer_init(n->loop, &p->close_timer);
	p->close_timer.data = p;
	probe_start(p);
}

void kvd_members_done(struct kvd_node *n, uint64_t token, int error)
{
	struct admin_wait **pp = &waits;
	(void)n;

	while (*pp != NULL && !((*pp)->kind == WAIT_CHANGE && (*pp)->token == token))
		pp = &(*pp)->next;
	if (*pp == NULL)
		return;
	struct admin_wait *w = *pp;
	*pp = w->next;
	switch (error) {
	case 0:
		KVD_INFO("membership change committed", NULL);
		reply_ok(w->req);
		break;
	case KVD_EBUSY: reply(w->req, 409, "another membership change is in progress\n"); break;
	case KVD_ENOTLEADER: kvd_reply_not_leader(n, w->req); break;
	case KVD_EINVAL:
		reply(w->req, 400, "invalid change (unknown id to remove, or no voter left)\n");
		break;
	default: reply(w->req, 503, "membership change not committed: outcome unknown\n"); break;
	}
	free(w);
}

void kvd_transfer_route(struct kvd_node *n, struct http_request *req)
{
	struct raft_event e = {.type = RAFT_EVENT_TRANSFER};
	json_t *o = body_json(req);
	const char *to = NULL;
	int rv;

	if (!json_is_object(o) ||
	    (json_object_get(o, "to") != NULL && !json_is_string(json_object_get(o, "to")))) {
		json_decref(o);
		reply(req, 400, "body must be {\"to\": id} or empty\n");
		return;
	}
	to = json_string_value(json_object_get(o, "to"));
	if (raft_role(n->raft) != RAFT_LEADER) {
		json_decref(o);
		kvd_reply_not_leader(n, req);
		return;
	}
	if (to != NULL && strcmp(to, n->cfg.id) == 0) {
		json_decref(o);
		reply_ok(req); /* already leads */
		return;
	}
	if (to != NULL && !raft_config_is_voter(raft_configuration(n->raft), to)) {
		json_decref(o);
		reply(req, 400, "target is not a voting member\n");
		return;
	}
	e.u.transfer.to = to;
	add_wait(n, WAIT_TRANSFER, 0, req, to, TRANSFER_TIMEOUT_MS);
	rv = kvd_node_step(n, &e);
	json_decref(o);
	if (rv != 0 && waits != NULL && waits->req == req) {
		struct admin_wait *w = waits;
		waits = w->next;
		reply(req, rv == KVD_EBUSY ? 409 : 503,
		      rv == KVD_EBUSY ? "a transfer or change is in progress\n"
				      : "transfer refused\n");
		free(w);
	}
}

void kvd_membership_tick(struct kvd_node *n)
{
	struct admin_wait **pp = &waits;
	uint64_t now = kvd_node_now(n);
	const char *leader = raft_leader(n->raft);

	while (*pp != NULL) {
		struct admin_wait *w = *pp;
		bool done = false;
		if (w->kind == WAIT_TRANSFER && leader[0] != '\0' &&
		    strcmp(leader, n->cfg.id) != 0 &&
		    (w->target[0] == '\0' || strcmp(leader, w->target) == 0)) {
			reply_ok(w->req);
			done = true;
		} else if (w->deadline <= now) {
			reply(w->req, 503,
			      w->kind == WAIT_TRANSFER
				  ? "leadership transfer did not complete in 5 s\n"
				  : "membership change not committed in time: "
				    "outcome unknown\n");
			done = true;
		}
		if (done) {
			*pp = w->next;
			free(w);
		} else {
			pp = &w->next;
		}
	}
}

/* ---- join and leave, carried out by this node ---------------------------- */

static void op_finish(struct remote_op *op, int status, const char *body);
static void op_step(struct remote_op *op);

static void op_timer_cb(uv_timer_t *t)
{
	op_step(t->data);
}

static void op_closed(uv_handle_t *h)
{
	free(h->data);
}

static void op_finish(struct remote_op *op, int status, const char *body)
{
	if (op->req != NULL) {
		if (status == 200)
			reply_ok(op->req);
		else
			reply(op->req, status, body);
	}
	if (status == 200)
		KVD_INFO(op->leave ? "left the cluster" : "joined the cluster", "contact=%s",
			 op->contact);
	if (op->client != NULL)
		http_client_close(op->client);
	op->client = NULL;
	uv_close((uv_handle_t *)&op->timer, op_closed);
}

static void op_retry(struct remote_op *op)
{
	if (!op->forever && kvd_node_now(op->node) >= op->deadline) {
		op_finish(op, 503,
			  op->leave ? "could not reach the leader to leave\n"
				    : "could not join: no leader answered in time\n");
		return;
	}
	uv_timer_start(&op->timer, op_timer_cb, JOIN_RETRY_MS, 0);
}

static void members_cb(int status, const char *body, size_t len, void *user)
{
	struct remote_op *op = user;
	(void)body;
	(void)len;

	if (status == KVD_ESHUTDOWN)
		return;
	if (status == 200) {
		op_finish(op, 200, "");
		return;
	}
	if (status == 400) {
		op_finish(op, 400, "the leader refused the change\n");
		return;
	}
	op_retry(op); /* 307, 409, 503, unreachable: ask again */
}

static int client_for(struct remote_op *op, const char *id)
{
	char errmsg[KVD_ERRMSG_SIZE];

	if (op->client != NULL)
		http_client_close(op->client);
	op->client = NULL;
	return http_client_create(op->node->loop, id, NULL, &op->client, errmsg);
}

static void info_cb(int status, const char *body, size_t len, void *user)
{
	struct remote_op *op = user;
	struct kvd_node *n = op->node;
	json_t *o;
	const char *leader;
	char path[64], payload[RAFT_ID_SIZE + 32], headers[300];

	if (status == KVD_ESHUTDOWN)
		return;
	o = status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
	leader = json_string_value(json_object_get(o, "leader"));
	if (leader == NULL || client_for(op, leader) != 0) {
		json_decref(o);
		op_retry(op);
		return;
	}
	json_decref(o);
	snprintf(path, sizeof(path), "/cluster/members");
	snprintf(payload, sizeof(payload), "{\"%s\": [\"%s\"]}", op->leave ? "remove" : "add",
		 n->cfg.id);
	kvd_config_auth_header(&n->cfg, headers, sizeof(headers));
	if (http_client_request(op->client, "POST", path, headers[0] ? headers : NULL, payload,
				strlen(payload), ADMIN_RPC_TIMEOUT_MS, members_cb, op) != 0)
		op_retry(op);
}

/* Asks the contact who leads, then asks the leader for the change. */
static void op_step(struct remote_op *op)
{
	const char *contact = op->contact;

	if (op->leave) { /* a member knows its leader */
		const char *leader = raft_leader(op->node->raft);
		if (leader[0] == '\0') {
			op_retry(op);
			return;
		}
		contact = leader;
	}
	if (client_for(op, contact) != 0 ||
	    http_client_request(op->client, "GET", "/cluster/info", NULL, NULL, 0, 2000, info_cb,
				op) != 0)
		op_retry(op);
}

static int op_start(struct kvd_node *n, const char *contact, bool leave, bool forever,
		    struct http_request *req)
{
	struct remote_op *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return KVD_ENOMEM;
	op->node = n;
	op->leave = leave;
	op->forever = forever;
	op->req = req;
	op->deadline = kvd_node_now(n) + CHANGE_TIMEOUT_MS;
	snprintf(op->contact, sizeof(op->contact), "%s", contact);
	uv_timer_init(n->loop, &op->timer);
	op->timer.data = op;
	uv_timer_start(&op->timer, op_timer_cb, 0, 0);
	return 0;
}

void kvd_join_route(struct kvd_node *n, struct http_request *req)
{
	json_t *o = body_json(req);
	const char *leader = json_string_value(json_object_get(o, "leader"));
	const struct raft_config *c = raft_configuration(n->raft);
	uint16_t port;

	if (leader == NULL || kvd_config_split_id(leader, NULL, 0, &port) != 0) {
		json_decref(o);
		reply(req, 400, "body must be {\"leader\": id}\n");
		return;
	}
	if (raft_config_is_voter(c, n->cfg.id) && c->n > 1) {
		json_decref(o);
		reply_ok(req); /* already a voting member */
		return;
	}
	if (kvd_node_has_data(n)) {
		json_decref(o);
		reply(req, 409, "this node holds key-value data of its own\n");
		return;
	}
	if (c->n > 0 && kvd_cluster_reinit(n, "") != 0) {
		json_decref(o);
		reply(req, 409, "this node is a member of another cluster\n");
		return;
	}
	if (op_start(n, leader, false, false, req) != 0)
		reply(req, 503, "out of memory\n");
	json_decref(o);
}

void kvd_leave_route(struct kvd_node *n, struct http_request *req)
{
	const struct raft_config *c = raft_configuration(n->raft);

	if (raft_config_get(c, n->cfg.id) == NULL) {
		reply_ok(req); /* not a member */
		return;
	}
	if (op_start(n, n->cfg.id, true, false, req) != 0)
		reply(req, 503, "out of memory\n");
}

int kvd_join_start(struct kvd_node *n)
{
	if (raft_config_get(raft_configuration(n->raft), n->cfg.id) != NULL)
		return 0; /* already a member (restart after joining) */
	KVD_INFO("joining cluster", "contact=%s", n->cfg.join);
	return op_start(n, n->cfg.join, false, true, NULL);
}

void kvd_raft_status_route(struct kvd_node *n, struct http_request *req)
{
	json_t *o = json_object();
	char *text;

	json_object_set_new(o, "id", json_string(n->cfg.id));
	json_object_set_new(o, "cluster-id", json_string(kvd_cluster_id(n)));
	json_object_set_new(o, "lone", json_boolean(kvd_cluster_is_lone(n)));
	json_object_set_new(o, "has-data", json_boolean(kvd_node_has_data(n)));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (text == NULL) {
		reply(req, 503, "out of memory\n");
		return;
	}
	http_response_send(req, 200, "application/json", NULL, text, strlen(text));
	free(text);
}
