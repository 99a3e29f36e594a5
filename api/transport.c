/*
 * transport.c: Raft RPCs over HTTP between nodes, and partitions.
 *
 * Invariants:
 *  - A message the core flagged needs_sync leaves only after the writer has
 *    completed the sequence recorded with it (persist before send, raft.h).
 *    Held messages leave in the order they were produced.
 *  - Every incoming /raft request gets exactly one HTTP answer: the core's
 *    result for its token, or, when the core produced none, a refusal in the
 *    current term.
 *  - While partitioned, nothing is sent to or accepted from a blocked peer,
 *    and results that arrive from one are dropped. The partition is on disk
 *    (fsynced) before /cluster/partition answers.
 */
#include "api/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "api/cluster_id.h"
#include "api/common/snapfile.h"
#include "api/common/fileutil.h"
#include "api/http/http_client.h"
#include "api/log.h"
#include "api/metrics.h"
#include "api/node_internal.h"
#include "api/rpc.h"
#include "kvd/errors.h"

#define RPC_TIMEOUT_MS		2000 /* per request, plus 1 ms per 8 KiB of body (large entries) */
#define SNAPSHOT_RPC_TIMEOUT_MS 10000
#define PARTITION_FILE		"partition.json"

struct peer {
	struct peer *next;
	char id[RAFT_ID_SIZE];
	struct http_client *client;
	bool failing;	/* last request failed (for logging state changes only) */
	bool json_only; /* refused a binary AppendEntries: send it JSON */
};

struct incoming {
	struct incoming *next;
	uint64_t token;
	struct http_request *req;
	enum raft_msg_type type;
	bool held;   /* its result waits for the writer */
	bool parked; /* the last snapshot chunk: answered after the install */
};

/* A serialized message waiting for the writer. */
struct held {
	struct held *next;
	uint64_t seq;
	struct raft_message head; /* type, ids, term, token, and small fields */
	char *body;
	size_t len;
	char query[512];
};

struct out_ctx {
	struct kvd_transport *t;
	struct raft_message req; /* the request's small fields (no pointers) */
	size_t chunk_len;	 /* bytes of a snapshot chunk */
	bool binary;		 /* an AppendEntries in the binary form */
};

struct kvd_transport {
	struct kvd_node *node;
	struct peer *peers;
	struct incoming *incoming;
	struct held *held, *held_tail;
	uint64_t next_token;
	bool partitioned;
	unsigned n_allowed;
	char allowed[RAFT_MAX_SERVERS * 2][RAFT_ID_SIZE];
	char auth_header[300]; /* "Authorization: Bearer ...\r\n" or "" */
	bool closing;
	struct kvd_rpc_cache append_cache; /* entry records shared by the followers */
};

/* ---- partitions ------------------------------------------------------- */

bool kvd_transport_blocked(const struct kvd_transport *t, const char *peer)
{
	if (!t->partitioned)
		return false;
	for (unsigned i = 0; i < t->n_allowed; i++)
		if (strcmp(t->allowed[i], peer) == 0)
			return false;
	return true;
}

static void partition_path(const struct kvd_transport *t, char *path, size_t size)
{
	snprintf(path, size, "%.4000s/" PARTITION_FILE, t->node->cfg.data_dir);
}

int kvd_transport_partition(struct kvd_transport *t, const char *const *allowed, unsigned n,
			    bool heal, char *errmsg)
{
	char path[PATH_MAX];
	json_t *o = json_object();
	json_t *a = json_array();
	char *text;
	int rv;

	if (n > RAFT_MAX_SERVERS * 2) {
		json_decref(o);
		json_decref(a);
		snprintf(errmsg, KVD_ERRMSG_SIZE, "too many peers");
		return KVD_EINVAL;
	}
	for (unsigned i = 0; i < n; i++)
		json_array_append_new(a, json_string(allowed[i]));
	json_object_set_new(o, "partitioned", json_boolean(!heal));
	json_object_set_new(o, "peers", a);
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (text == NULL)
		return KVD_ENOMEM;
	partition_path(t, path, sizeof(path));
	rv = kvd_write_file_durably(path, text, errmsg);
	free(text);
	if (rv != 0)
		return rv;
	t->partitioned = !heal;
	t->n_allowed = heal ? 0 : n;
	for (unsigned i = 0; i < t->n_allowed; i++)
		snprintf(t->allowed[i], RAFT_ID_SIZE, "%s", allowed[i]);
	if (heal)
		KVD_INFO("partition healed", NULL);
	else
		KVD_INFO("partitioned", "allowed_peers=%u", n);
	return 0;
}

static int load_partition(struct kvd_transport *t, char *errmsg)
{
	char path[PATH_MAX];
	json_error_t jerr;
	json_t *o, *a;
	size_t i;
	json_t *v;

	partition_path(t, path, sizeof(path));
	if (access(path, F_OK) != 0)
		return 0;
	o = json_load_file(path, 0, &jerr);
	a = json_object_get(o, "peers");
	if (!json_is_object(o) || !json_is_array(a) || json_array_size(a) > RAFT_MAX_SERVERS * 2) {
		json_decref(o);
		snprintf(errmsg, KVD_ERRMSG_SIZE, "%s is malformed (%s); remove it to heal", path,
			 jerr.text);
		return KVD_ECORRUPT;
	}
	t->partitioned = json_is_true(json_object_get(o, "partitioned"));
	t->n_allowed = 0;
	json_array_foreach(a, i, v)
	{
		const char *id = json_string_value(v);
		if (id != NULL && strlen(id) < RAFT_ID_SIZE)
			snprintf(t->allowed[t->n_allowed++], RAFT_ID_SIZE, "%s", id);
	}
	json_decref(o);
	if (t->partitioned)
		KVD_INFO("partition restored from disk", "allowed_peers=%u", t->n_allowed);
	return 0;
}

/* ---- peers -------------------------------------------------------------- */

static struct peer *peer_get(struct kvd_transport *t, const char *id)
{
	struct peer *p;
	char errmsg[KVD_ERRMSG_SIZE];

	for (p = t->peers; p != NULL; p = p->next)
		if (strcmp(p->id, id) == 0)
			return p;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	snprintf(p->id, sizeof(p->id), "%s", id);
	/* The client takes ids as they are: host:port, [v6]:port, :port. */
	if (http_client_create(t->node->loop, id, NULL, &p->client, errmsg) != 0) {
		KVD_WARN("cannot create peer client", "peer=%s error=\"%s\"", id, errmsg);
		free(p);
		return NULL;
	}
	p->next = t->peers;
	t->peers = p;
	return p;
}

static bool peer_json_only(const struct kvd_transport *t, const char *id)
{
	for (const struct peer *p = t->peers; p != NULL; p = p->next)
		if (strcmp(p->id, id) == 0)
			return p->json_only;
	return false;
}

static void peer_health(struct kvd_transport *t, const char *id, bool ok, int status)
{
	struct peer *p;
	for (p = t->peers; p != NULL; p = p->next)
		if (strcmp(p->id, id) == 0)
			break;
	if (p == NULL || p->failing == !ok)
		return;
	p->failing = !ok;
	if (ok)
		KVD_INFO("peer reachable", "peer=%s", id);
	else
		KVD_WARN("peer unreachable", "peer=%s error=\"%s\"", id,
			 status < 0 ? kvd_strerror(status) : "bad status");
}

/* ---- outgoing requests -------------------------------------------------- */

static void result_cb(int status, const char *body, size_t len, void *user)
{
	struct out_ctx *c = user;
	struct kvd_transport *t;
	struct kvd_node *n;
	struct raft_event e;
	char errmsg[KVD_ERRMSG_SIZE];

	if (status == KVD_ESHUTDOWN) { /* the transport may be gone already */
		free(c);
		return;
	}
	t = c->t;
	n = t->node;
	if (t->closing) {
		free(c);
		return;
	}
	if (kvd_transport_blocked(t, c->req.to)) {
		free(c);
		return;
	}
	memset(&e, 0, sizeof(e));
	if (c->req.type == RAFT_MSG_TIMEOUT_NOW) { /* no result for the core */
		peer_health(t, c->req.to, status == 200, status);
		free(c);
		return;
	}
	/* A peer that cannot read the binary form (another implementation, an
	 * older kvd) answers 400, 415, 422 or fails with 500/501: send it JSON
	 * from then on. Costs only CPU if the status meant something else. */
	if (c->binary &&
	    (status == 400 || status == 415 || status == 422 || status == 500 || status == 501)) {
		struct peer *p = peer_get(t, c->req.to);
		if (p != NULL && !p->json_only) {
			p->json_only = true;
			KVD_WARN("peer refused binary append-entries; sending it JSON", "peer=%s",
				 c->req.to);
		}
	}
	if (status != 200 || kvd_rpc_decode_result(c->req.type, body, len, c->req.to, n->cfg.id,
						   &e.u.receive, errmsg) != 0) {
		peer_health(t, c->req.to, false, status);
		if (c->req.type == RAFT_MSG_APPEND || c->req.type == RAFT_MSG_SNAPSHOT) {
			e.type = RAFT_EVENT_UNREACHABLE;
			e.u.unreachable.id = c->req.to;
			kvd_node_step(n, &e);
		}
		free(c);
		return;
	}
	peer_health(t, c->req.to, true, status);
	/* Fill what a peer of another implementation may leave out. */
	switch (c->req.type) {
	case RAFT_MSG_REQUEST_VOTE:
		e.u.receive.u.request_vote_result.pre_vote = c->req.u.request_vote.pre_vote;
		break;
	case RAFT_MSG_APPEND: {
		struct raft_append_result *r = &e.u.receive.u.append_result;
		if (!r->success && r->reject_index == 0)
			r->reject_index = c->req.u.append.prev_log_index;
		if (r->seq == 0)
			r->seq = c->req.u.append.seq;
		break;
	}
	case RAFT_MSG_SNAPSHOT: {
		struct raft_snapshot_result *r = &e.u.receive.u.snapshot_result;
		if (r->last_index == 0)
			r->last_index = c->req.u.snapshot.last_index;
		if (r->success && r->offset == 0)
			r->offset = c->req.u.snapshot.offset + c->chunk_len;
		break;
	}
	default: break;
	}
	e.type = RAFT_EVENT_RECEIVE;
	kvd_node_step(n, &e);
	free(c);
}

/* Reads a snapshot chunk for m into a malloc'ed buffer. */
static int read_chunk(struct kvd_transport *t, const struct raft_message *m, char **buf,
		      size_t *len)
{
	char path[PATH_MAX];
	int fd;
	ssize_t got;

	kvd_snapfile_path(t->node->snap_dir, m->u.snapshot.last_index, m->u.snapshot.last_term,
			  path);
	*buf = malloc(m->u.snapshot.len ? m->u.snapshot.len : 1);
	if (*buf == NULL)
		return KVD_ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(*buf);
		return KVD_ENOTFOUND;
	}
	got = pread(fd, *buf, m->u.snapshot.len, (off_t)m->u.snapshot.offset);
	close(fd);
	if (got < 0 || (size_t)got != m->u.snapshot.len) {
		free(*buf);
		return KVD_EIO;
	}
	*len = (size_t)got;
	return 0;
}

static void send_request(struct kvd_transport *t, const struct raft_message *head, char *body,
			 size_t len, const char *query)
{
	struct peer *p;
	struct out_ctx *c;
	char path[700];
	char headers[sizeof(t->auth_header) + KVD_CLUSTER_ID_SIZE + 80];
	int rv;

	if (kvd_transport_blocked(t, head->to) || t->closing) {
		free(body);
		return;
	}
	p = peer_get(t, head->to);
	c = calloc(1, sizeof(*c));
	if (p == NULL || c == NULL) {
		free(body);
		free(c);
		return;
	}
	c->t = t;
	c->req = *head;
	c->req.u.append.entries = NULL;
	c->chunk_len = head->type == RAFT_MSG_SNAPSHOT ? len : 0;
	c->binary = head->type == RAFT_MSG_APPEND && kvd_rpc_body_binary(body, len);
	snprintf(path, sizeof(path), "%s%s%s", kvd_rpc_path(head->type), query[0] ? "?" : "",
		 query);
	snprintf(headers, sizeof(headers), "%s%s", t->auth_header,
		 c->binary ? "Content-Type: " KVD_RPC_BINARY_TYPE "\r\n" : "");
	if (kvd_cluster_id(t->node)[0] != '\0')
		snprintf(headers + strlen(headers), sizeof(headers) - strlen(headers),
			 KVD_CLUSTER_HEADER ": %s\r\n", kvd_cluster_id(t->node));
	rv = http_client_request(p->client, "POST", path, headers[0] ? headers : NULL, body, len,
				 head->type == RAFT_MSG_SNAPSHOT
				     ? SNAPSHOT_RPC_TIMEOUT_MS
				     : RPC_TIMEOUT_MS + (unsigned)(len >> 13),
				 result_cb, c);
	free(body);
	if (rv != 0) {
		free(c);
	}
}

/* ---- incoming requests -------------------------------------------------- */

static struct incoming **find_incoming(struct kvd_transport *t, uint64_t token)
{
	struct incoming **pp = &t->incoming;
	while (*pp != NULL && (*pp)->token != token)
		pp = &(*pp)->next;
	return pp;
}

static void answer(struct kvd_transport *t, uint64_t token, const char *body, size_t len)
{
	struct incoming **pp = find_incoming(t, token);
	struct incoming *in = *pp;

	if (in == NULL)
		return;
	*pp = in->next;
	http_response_send(in->req, 200, "application/json", NULL, body, len);
	free(in);
}

static void refuse(struct kvd_transport *t, struct incoming *in)
{
	char body[128];
	raft_term term = raft_current_term(t->node->raft);

	switch (in->type) {
	case RAFT_MSG_REQUEST_VOTE:
		snprintf(body, sizeof(body), "{\"term\":%" PRIu64 ",\"vote-granted\":false}", term);
		break;
	case RAFT_MSG_APPEND:
		snprintf(body, sizeof(body),
			 "{\"term\":%" PRIu64 ",\"success\":false,\"last-log-index\":%" PRIu64 "}",
			 term, raft_last_index(t->node->raft));
		break;
	case RAFT_MSG_TIMEOUT_NOW:
		snprintf(body, sizeof(body), "{\"term\":%" PRIu64 "}", term);
		break;
	case RAFT_MSG_SNAPSHOT:
		/* Offset 0: the stream restarts from the beginning. */
		snprintf(body, sizeof(body),
			 "{\"term\":%" PRIu64 ",\"success\":false,\"last-included-index\":0,"
			 "\"offset\":0}",
			 term);
		break;
	default:
		snprintf(body, sizeof(body), "{\"term\":%" PRIu64 ",\"success\":false}", term);
		break;
	}
	answer(t, in->token, body, strlen(body));
}

void kvd_transport_answer_orphans(struct kvd_transport *t)
{
	struct incoming *in = t->incoming;
	while (in != NULL) {
		struct incoming *next = in->next;
		if (!in->held && !in->parked)
			refuse(t, in);
		in = next;
	}
}

void kvd_transport_refuse_parked(struct kvd_transport *t)
{
	struct incoming *in = t->incoming;
	while (in != NULL) {
		struct incoming *next = in->next;
		if (in->parked)
			refuse(t, in);
		in = next;
	}
}

void kvd_transport_receive(struct kvd_transport *t, struct http_request *req)
{
	struct kvd_node *n = t->node;
	struct raft_event e = {.type = RAFT_EVENT_RECEIVE};
	struct kvd_rpc_decoded d;
	struct incoming *in;
	const char *path, *query, *body;
	size_t plen, qlen, blen;
	char errmsg[KVD_ERRMSG_SIZE];
	char body_msg[KVD_ERRMSG_SIZE + 2];
	int drv;

	path = http_request_path(req, &plen);
	query = http_request_query(req, &qlen);
	body = http_request_body(req, &blen);
	{
		size_t ctlen = 0;
		const char *ct = http_request_header(req, "Content-Type", &ctlen);
		if (kvd_rpc_content_binary(ct, ct != NULL ? ctlen : 0) &&
		    strlen(kvd_rpc_path(RAFT_MSG_APPEND)) == plen &&
		    memcmp(path, kvd_rpc_path(RAFT_MSG_APPEND), plen) == 0)
			drv = kvd_rpc_decode_append_binary(body, blen, n->cfg.id, &e.u.receive, &d,
							   errmsg);
		else
			drv = kvd_rpc_decode_request(path, query, qlen, body, blen, n->cfg.id,
						     &e.u.receive, &d, errmsg);
	}
	if (drv != 0) {
		snprintf(body_msg, sizeof(body_msg), "%s\n", errmsg);
		kvd_reply_text(req, 400, body_msg);
		return;
	}
	if (kvd_transport_blocked(t, e.u.receive.from)) {
		kvd_rpc_decoded_free(&d);
		kvd_reply_text(req, 503, "partitioned\n");
		return;
	}
	{
		size_t clen = 0;
		const char *cid = http_request_header(req, KVD_CLUSTER_HEADER, &clen);
		int rv = kvd_cluster_check(n, cid, cid != NULL ? clen : 0);
		if (rv != 0) {
			kvd_rpc_decoded_free(&d);
			if (rv == KVD_EBUSY)
				kvd_reply_text(req, 503, "joining the sender's cluster; retry\n");
			else
				kvd_reply_text(req, 409, "this node belongs to another cluster\n");
			return;
		}
	}
	in = calloc(1, sizeof(*in));
	if (in == NULL) {
		kvd_rpc_decoded_free(&d);
		kvd_reply_text(req, 503, "out of memory\n");
		return;
	}
	in->token = ++t->next_token;
	in->req = req;
	in->type = e.u.receive.type;
	in->next = t->incoming;
	t->incoming = in;
	e.u.receive.token = in->token;
	kvd_node_step(n, &e);
	kvd_rpc_decoded_free(&d);
	in = *find_incoming(t, e.u.receive.token);
	/* The core answers the last chunk of a snapshot only once it is
	 * installed: refusing it now would restart the leader's stream and
	 * the real answer would find no request. */
	if (in != NULL && n->raft != NULL && raft_snapshot_install_token(n->raft) == in->token)
		in->parked = true;
	else if (in != NULL && !in->held)
		refuse(t, in);
}

/* ---- sending and holding ------------------------------------------------ */

static bool is_result(enum raft_msg_type type)
{
	return type == RAFT_MSG_REQUEST_VOTE_RESULT || type == RAFT_MSG_APPEND_RESULT ||
	       type == RAFT_MSG_SNAPSHOT_RESULT;
}

static void dispatch(struct kvd_transport *t, const struct raft_message *head, char *body,
		     size_t len, const char *query)
{
	if (is_result(head->type)) {
		answer(t, head->token, body, len);
		free(body);
	} else {
		send_request(t, head, body, len, query);
	}
}

void kvd_transport_send(struct kvd_transport *t, const struct raft_message *m, uint64_t sync_seq)
{
	char *body = NULL;
	size_t len = 0;
	char query[512] = "";

	if (m->type == RAFT_MSG_SNAPSHOT) {
		if (kvd_rpc_encode(m, &body, &len, query, sizeof(query)) != 0 ||
		    read_chunk(t, m, &body, &len) != 0) {
			KVD_WARN("cannot read snapshot chunk", "peer=%s index=%" PRIu64, m->to,
				 m->u.snapshot.last_index);
			return;
		}
	} else if (m->type == RAFT_MSG_APPEND && !peer_json_only(t, m->to) &&
		   kvd_rpc_encode_append_binary(m, &t->append_cache, &body, &len) == 0) {
		/* binary; an entry the binary form refuses is refused by JSON too */
	} else if (kvd_rpc_encode(m, &body, &len, NULL, 0) != 0) {
		KVD_ERROR("cannot encode raft message", "type=%d", (int)m->type);
		return;
	}
	if (sync_seq == 0) {
		dispatch(t, m, body, len, query);
		return;
	}
	struct held *h = calloc(1, sizeof(*h));
	if (h == NULL) {
		free(body);
		return;
	}
	h->seq = sync_seq;
	h->head = *m;
	h->head.u.append.entries = NULL;
	h->body = body;
	h->len = len;
	snprintf(h->query, sizeof(h->query), "%s", query);
	if (is_result(m->type)) {
		struct incoming *in = *find_incoming(t, m->token);
		if (in != NULL)
			in->held = true;
	}
	if (t->held_tail != NULL)
		t->held_tail->next = h;
	else
		t->held = h;
	t->held_tail = h;
}

void kvd_transport_drop_held(struct kvd_transport *t)
{
	while (t->held != NULL) {
		struct held *h = t->held;
		t->held = h->next;
		if (is_result(h->head.type)) {
			struct incoming *in = *find_incoming(t, h->head.token);
			if (in != NULL)
				in->held = false;
		}
		free(h->body);
		free(h);
	}
	t->held_tail = NULL;
	kvd_transport_answer_orphans(t);
}

void kvd_transport_flush(struct kvd_transport *t, uint64_t completed_seq)
{
	while (t->held != NULL && t->held->seq <= completed_seq) {
		struct held *h = t->held;
		t->held = h->next;
		if (t->held == NULL)
			t->held_tail = NULL;
		dispatch(t, &h->head, h->body, h->len, h->query);
		free(h);
	}
}

/* ---- lifecycle ------------------------------------------------------------- */

int kvd_transport_create(struct kvd_node *n, struct kvd_transport **out, char *errmsg)
{
	struct kvd_transport *t = calloc(1, sizeof(*t));
	int rv;

	if (t == NULL)
		return KVD_ENOMEM;
	t->node = n;
	kvd_config_auth_header(&n->cfg, t->auth_header, sizeof(t->auth_header));
	rv = load_partition(t, errmsg);
	if (rv != 0) {
		free(t);
		return rv;
	}
	*out = t;
	return 0;
}

void kvd_transport_destroy(struct kvd_transport *t)
{
	if (t == NULL)
		return;
	t->closing = true;
	while (t->held != NULL) {
		struct held *h = t->held;
		t->held = h->next;
		free(h->body);
		free(h);
	}
	kvd_transport_answer_orphans(t);
	while (t->incoming != NULL) {
		struct incoming *in = t->incoming;
		t->incoming = in->next;
		kvd_reply_text(in->req, 503, "shutting down\n");
		free(in);
	}
	while (t->peers != NULL) {
		struct peer *p = t->peers;
		t->peers = p->next;
		http_client_close(p->client);
		free(p);
	}
	kvd_rpc_cache_free(&t->append_cache);
	free(t);
}
