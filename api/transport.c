/*
 * transport.c: Raft RPCs over HTTP between nodes, and partitions: the HTTP
 * binding of api/transport_rules.c, which owns the pairing of messages with
 * requests and answers (held messages, orphans, the parked last chunk) so
 * that the simulation runs the same rules over its simulated HTTP.
 *
 * Here: the JSON codec (api/rpc.c), snapshot chunks read from the snapshot
 * file, one keep-alive http_client per peer, the cluster-id and auth
 * headers, the exact bodies of refusals, and the partition file.
 *
 * Invariants:
 *  - Every incoming /raft request gets exactly one HTTP answer (the rules'
 *    answer, refusal or failure; or here 400, 409 or 503 before the core).
 *  - The partition is on disk (fsynced) before /cluster/partition answers.
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
#include "api/transport_rules.h"
#include "kvd/errors.h"

#define PARTITION_FILE "partition.json"

/* A peer's connections: [0] for votes and AppendEntries, then the snapshot
 * chunks' (transport_rules.h: a parked last chunk must hold neither the
 * heartbeats nor the chunk the leader resends meanwhile). */
#define PEER_CONNS (1 + KVD_TRULES_SNAPSHOT_CONNS)

struct peer {
	struct peer *next;
	char id[RAFT_ID_SIZE];
	struct http_client *client[PEER_CONNS]; /* created on first use */
	unsigned inflight[PEER_CONNS];		/* requests sent, not completed */
	bool failing;	/* last request failed (for logging state changes only) */
	bool json_only; /* refused a binary AppendEntries: send it JSON */
};

/* An encoded message: the body and the query string (snapshot chunks). */
struct payload {
	char *body;
	size_t len;
	char query[512];
	bool binary; /* an AppendEntries in the binary form (api/rpc.h) */
};

struct kvd_transport {
	struct kvd_node *node;
	struct kvd_trules *rules;
	struct peer *peers;
	char auth_header[300]; /* "Authorization: Bearer ...\r\n" or "" */
	bool closing;
	struct kvd_rpc_cache append_cache; /* entry records shared by the followers */
};

/* ---- partitions ------------------------------------------------------- */

bool kvd_transport_blocked(const struct kvd_transport *t, const char *peer)
{
	return kvd_trules_blocked(t->rules, peer);
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
	kvd_trules_set_partition(t->rules, !heal, allowed, heal ? 0 : n);
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
	const char *allowed[RAFT_MAX_SERVERS * 2];
	unsigned n_allowed = 0;
	bool partitioned;

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
	partitioned = json_is_true(json_object_get(o, "partitioned"));
	json_array_foreach(a, i, v)
	{
		const char *id = json_string_value(v);
		if (id != NULL && strlen(id) < RAFT_ID_SIZE)
			allowed[n_allowed++] = id;
	}
	kvd_trules_set_partition(t->rules, partitioned, allowed, n_allowed);
	json_decref(o);
	if (partitioned)
		KVD_INFO("partition restored from disk", "allowed_peers=%u", n_allowed);
	return 0;
}

/* ---- peers -------------------------------------------------------------- */

static struct peer *peer_find(struct kvd_transport *t, const char *id)
{
	struct peer *p;
	for (p = t->peers; p != NULL && strcmp(p->id, id) != 0; p = p->next)
		;
	return p;
}

static struct peer *peer_get(struct kvd_transport *t, const char *id)
{
	struct peer *p = peer_find(t, id);

	if (p == NULL && (p = calloc(1, sizeof(*p))) != NULL) {
		snprintf(p->id, sizeof(p->id), "%s", id);
		p->next = t->peers;
		t->peers = p;
	}
	return p;
}

static bool peer_json_only(const struct kvd_transport *t, const char *id)
{
	for (const struct peer *p = t->peers; p != NULL; p = p->next)
		if (strcmp(p->id, id) == 0)
			return p->json_only;
	return false;
}

/* The connection a request goes on (transport_rules.h): [0] for the raft
 * channel; a chunk on the first snapshot connection with nothing in
 * flight, else the first. Creates its client on first use; NULL on error. */
static struct http_client *peer_conn(struct kvd_transport *t, struct peer *p,
				     enum kvd_trules_channel channel, unsigned *conn)
{
	char errmsg[KVD_ERRMSG_SIZE];
	unsigned i = 0;

	if (channel == KVD_TRULES_CHANNEL_SNAPSHOT) {
		for (i = 1; i < PEER_CONNS && p->inflight[i] > 0; i++)
			;
		if (i == PEER_CONNS)
			i = 1;
	}
	/* The client takes ids as they are: host:port, [v6]:port, :port. */
	if (p->client[i] == NULL &&
	    http_client_create(t->node->loop, p->id, NULL, &p->client[i], errmsg) != 0) {
		KVD_WARN("cannot create peer client", "peer=%s error=\"%s\"", p->id, errmsg);
		p->client[i] = NULL;
	}
	*conn = i;
	return p->client[i];
}

static void peer_health(void *ctx, const char *id, bool ok, int status)
{
	struct kvd_transport *t = ctx;
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

/* ---- the rules' operations over HTTP ------------------------------------- */

static void payload_free(void *ctx, void *payload)
{
	struct payload *p = payload;
	(void)ctx;
	if (p != NULL)
		free(p->body);
	free(p);
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

static int encode(void *ctx, const struct raft_message *m, void **out, size_t *len)
{
	struct kvd_transport *t = ctx;
	struct payload *p = calloc(1, sizeof(*p));
	int rv = 0;

	if (p == NULL) {
		rv = KVD_ENOMEM;
	} else if (m->type == RAFT_MSG_SNAPSHOT) {
		if (kvd_rpc_encode(m, &p->body, &p->len, p->query, sizeof(p->query)) != 0 ||
		    read_chunk(t, m, &p->body, &p->len) != 0) {
			KVD_WARN("cannot read snapshot chunk", "peer=%s index=%" PRIu64, m->to,
				 m->u.snapshot.last_index);
			rv = KVD_EIO;
		}
	} else if (m->type == RAFT_MSG_APPEND && !peer_json_only(t, m->to) &&
		   kvd_rpc_encode_append_binary(m, &t->append_cache, &p->body, &p->len) == 0) {
		/* binary; an entry the binary form refuses is refused by JSON too */
		p->binary = true;
	} else if (kvd_rpc_encode(m, &p->body, &p->len, NULL, 0) != 0) {
		KVD_ERROR("cannot encode raft message", "type=%d", (int)m->type);
		rv = KVD_EINVAL;
	}
	if (rv == 0) {
		*out = p;
		*len = p->len;
	} else {
		free(p);
	}
	return rv;
}

static void result_cb(int status, const char *body, size_t len, void *user)
{
	struct kvd_trules_call *c = user;
	struct kvd_transport *t;
	struct peer *p;
	struct raft_message result;
	bool decoded = false;
	char errmsg[KVD_ERRMSG_SIZE];

	if (status == KVD_ESHUTDOWN) { /* the transport may be gone already */
		kvd_trules_call_free(c);
		goto done;
	}
	t = c->binding;
	p = peer_find(t, c->req.to);
	if (p != NULL && p->inflight[c->conn] > 0)
		p->inflight[c->conn]--;
	if (t->closing) {
		kvd_trules_call_free(c);
		goto done;
	}
	/* A peer that cannot read the binary form (another implementation, an
	 * older kvd) answers 400, 415, 422 or fails with 500/501: send it JSON
	 * from then on. Costs only CPU if the status meant something else. */
	if (c->binary && p != NULL && !p->json_only &&
	    (status == 400 || status == 415 || status == 422 || status == 500 || status == 501)) {
		p->json_only = true;
		KVD_WARN("peer refused binary append-entries; sending it JSON", "peer=%s",
			 c->req.to);
	}
	memset(&result, 0, sizeof(result));
	if (status == 200 && c->req.type != RAFT_MSG_TIMEOUT_NOW &&
	    !kvd_transport_blocked(t, c->req.to))
		decoded = kvd_rpc_decode_result(c->req.type, body, len, c->req.to, t->node->cfg.id,
						&result, errmsg) == 0;
	kvd_trules_result(c, status, decoded ? &result : NULL);
done:
	return;
}

static int request(void *ctx, struct kvd_trules_call *c, void *payload)
{
	struct kvd_transport *t = ctx;
	struct payload *pl = payload;
	struct peer *p = peer_get(t, c->req.to);
	struct http_client *client = p != NULL ? peer_conn(t, p, c->channel, &c->conn) : NULL;
	char path[700];
	char headers[sizeof(t->auth_header) + KVD_CLUSTER_ID_SIZE + 80];
	int rv;

	if (client == NULL) {
		payload_free(t, pl);
		return KVD_ENOMEM;
	}
	c->binding = t;
	c->binary = pl->binary;
	snprintf(path, sizeof(path), "%s%s%s", kvd_rpc_path(c->req.type), pl->query[0] ? "?" : "",
		 pl->query);
	snprintf(headers, sizeof(headers), "%s%s", t->auth_header,
		 pl->binary ? "Content-Type: " KVD_RPC_BINARY_TYPE "\r\n" : "");
	if (kvd_cluster_id(t->node)[0] != '\0')
		snprintf(headers + strlen(headers), sizeof(headers) - strlen(headers),
			 KVD_CLUSTER_HEADER ": %s\r\n", kvd_cluster_id(t->node));
	rv = http_client_request(client, "POST", path, headers[0] ? headers : NULL, pl->body,
				 pl->len, c->timeout_ms, result_cb, c);
	payload_free(t, pl);
	if (rv == 0)
		p->inflight[c->conn]++;
	return rv;
}

static void answer(void *ctx, void *handle, void *payload)
{
	struct payload *p = payload;
	(void)ctx;
	http_response_send(handle, 200, "application/json", NULL, p->body, p->len);
	payload_free(ctx, p);
}

static void refuse(void *ctx, void *handle, const struct raft_message *m)
{
	char body[128];
	(void)ctx;

	switch (m->type) {
	case RAFT_MSG_REQUEST_VOTE_RESULT:
		snprintf(body, sizeof(body), "{\"term\":%" PRIu64 ",\"vote-granted\":false}",
			 m->term);
		break;
	case RAFT_MSG_APPEND_RESULT:
		snprintf(body, sizeof(body),
			 "{\"term\":%" PRIu64 ",\"success\":false,\"last-log-index\":%" PRIu64 "}",
			 m->term, m->u.append_result.last_log_index);
		break;
	case RAFT_MSG_TIMEOUT_NOW:
		snprintf(body, sizeof(body), "{\"term\":%" PRIu64 "}", m->term);
		break;
	case RAFT_MSG_SNAPSHOT_RESULT:
		/* Offset 0: the stream restarts from the beginning. */
		snprintf(body, sizeof(body),
			 "{\"term\":%" PRIu64 ",\"success\":false,\"last-included-index\":0,"
			 "\"offset\":0}",
			 m->term);
		break;
	default:
		snprintf(body, sizeof(body), "{\"term\":%" PRIu64 ",\"success\":false}", m->term);
		break;
	}
	http_response_send(handle, 200, "application/json", NULL, body, strlen(body));
}

static void fail(void *ctx, void *handle, int status, const char *text)
{
	(void)ctx;
	kvd_reply_text(handle, status, text);
}

static void step(void *ctx, struct raft_event *e)
{
	struct kvd_transport *t = ctx;
	kvd_node_step(t->node, e);
}

static struct raft_core *core(void *ctx)
{
	struct kvd_transport *t = ctx;
	return t->node->raft;
}

/* ---- the driver's calls ------------------------------------------------- */

void kvd_transport_answer_orphans(struct kvd_transport *t)
{
	kvd_trules_answer_orphans(t->rules);
}

void kvd_transport_refuse_parked(struct kvd_transport *t)
{
	kvd_trules_refuse_parked(t->rules);
}

void kvd_transport_receive(struct kvd_transport *t, struct http_request *req)
{
	struct kvd_node *n = t->node;
	struct raft_message m;
	struct kvd_rpc_decoded d;
	const char *path, *query, *body;
	size_t plen, qlen, blen;
	char errmsg[KVD_ERRMSG_SIZE];
	char body_msg[KVD_ERRMSG_SIZE + 2];
	const char *ct;
	size_t ctlen = 0;
	int drv;

	path = http_request_path(req, &plen);
	query = http_request_query(req, &qlen);
	body = http_request_body(req, &blen);
	ct = http_request_header(req, "Content-Type", &ctlen);
	if (kvd_rpc_content_binary(ct, ct != NULL ? ctlen : 0) &&
	    strlen(kvd_rpc_path(RAFT_MSG_APPEND)) == plen &&
	    memcmp(path, kvd_rpc_path(RAFT_MSG_APPEND), plen) == 0)
		drv = kvd_rpc_decode_append_binary(body, blen, n->cfg.id, &m, &d, errmsg);
	else
		drv = kvd_rpc_decode_request(path, query, qlen, body, blen, n->cfg.id, &m, &d,
					     errmsg);
	if (drv != 0) {
		snprintf(body_msg, sizeof(body_msg), "%s\n", errmsg);
		kvd_reply_text(req, 400, body_msg);
		return;
	}
	if (kvd_transport_blocked(t, m.from)) {
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
	if (kvd_trules_receive(t->rules, req, &m) != 0)
		kvd_reply_text(req, 503, "out of memory\n");
	kvd_rpc_decoded_free(&d);
}

void kvd_transport_send(struct kvd_transport *t, const struct raft_message *m, uint64_t sync_seq)
{
	kvd_trules_send(t->rules, m, sync_seq);
}

void kvd_transport_drop_held(struct kvd_transport *t)
{
	kvd_trules_drop_held(t->rules);
}

void kvd_transport_flush(struct kvd_transport *t, uint64_t completed_seq)
{
	kvd_trules_flush(t->rules, completed_seq);
}

/* ---- lifecycle ------------------------------------------------------------- */

int kvd_transport_create(struct kvd_node *n, struct kvd_transport **out, char *errmsg)
{
	struct kvd_transport *t = calloc(1, sizeof(*t));
	struct kvd_trules_ops ops = {
	    .encode = encode,
	    .payload_free = payload_free,
	    .request = request,
	    .answer = answer,
	    .refuse = refuse,
	    .fail = fail,
	    .step = step,
	    .core = core,
	    .health = peer_health,
	};
	int rv;

	if (t == NULL)
		return KVD_ENOMEM;
	t->node = n;
	ops.ctx = t;
	rv = kvd_trules_create(&ops, &t->rules);
	if (rv == 0) {
		kvd_config_auth_header(&n->cfg, t->auth_header, sizeof(t->auth_header));
		rv = load_partition(t, errmsg);
	}
	if (rv != 0) {
		kvd_trules_destroy(t->rules);
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
	kvd_trules_destroy(t->rules);
	t->rules = NULL;
	while (t->peers != NULL) {
		struct peer *p = t->peers;
		t->peers = p->next;
		for (unsigned i = 0; i < PEER_CONNS; i++)
			if (p->client[i] != NULL)
				http_client_close(p->client[i]);
		free(p);
	}
	kvd_rpc_cache_free(&t->append_cache);
	free(t);
}
