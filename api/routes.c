/*
 * routes.c: the public HTTP API (API.md §2-4, §9) on top of the node.
 *
 * Every /kv, /clear, /health and error response is text/plain; every JSON
 * response is application/json. Validation order for /kv/{key}: empty key,
 * invalid key (after percent-decoding), then for PUT empty value, UTF-8, and
 * size (the server enforces size before the body is read: 413).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>
#include <jansson.h>

#include "api/node_internal.h"
#include "api/applier.h"
#include "api/writer.h"
#include "api/membership.h"
#include "api/metrics.h"
#include "api/rpc.h"
#include "api/snapshots.h"
#include "api/transport.h"
#include "api/textutil.h"
#include "engine/command.h"
#include "kvd/errors.h"

#define TEXT		"text/plain; charset=utf-8"
#define JSON		"application/json"
#define RAFT_BODY_LIMIT (64u * 1024 * 1024) /* bytes: AppendEntries batches, snapshot chunks */

void kvd_reply_text(struct http_request *req, int status, const char *body)
{
	http_response_send(req, status, TEXT, NULL, body, strlen(body));
}

static void reply_json(struct http_request *req, int status, json_t *o)
{
	char *s = kvd_json_dumps(o);
	json_decref(o);
	if (s == NULL) {
		kvd_reply_text(req, 500, "out of memory\n");
		return;
	}
	http_response_send(req, status, JSON, NULL, s, strlen(s));
	free(s);
}

static void method_not_allowed(struct http_request *req, const char *allow)
{
	char hdr[128];
	snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
	http_response_send(req, 405, TEXT, hdr, "method not allowed\n", 19);
}

void kvd_reply_not_leader(struct kvd_node *n, struct http_request *req)
{
	const char *leader = raft_leader(n->raft);
	char host[256];
	char hdr[1024 + 2 * PATH_MAX];
	uint16_t port;
	size_t plen, qlen;
	const char *path, *query;

	if (leader[0] == '\0' || strcmp(leader, n->cfg.id) == 0 ||
	    kvd_config_split_id(leader, host, sizeof(host), &port) != 0) {
		kvd_reply_text(req, 503, "no leader\n");
		return;
	}
	path = http_request_path(req, &plen);
	query = http_request_query(req, &qlen);
	if (plen + qlen > 2 * PATH_MAX) {
		kvd_reply_text(req, 503, "no leader\n");
		return;
	}
	snprintf(hdr, sizeof(hdr), "Location: http://%s%s%s:%u%.*s%s%.*s\r\n",
		 strchr(host, ':') != NULL ? "[" : "", host, strchr(host, ':') != NULL ? "]" : "",
		 (unsigned)port, (int)plen, path, qlen > 0 ? "?" : "", (int)qlen, query);
	http_response_send(req, 307, TEXT, hdr, NULL, 0);
}

bool kvd_routes_ordered(const struct http_request *req, void *user)
{
	size_t len;
	const char *path = http_request_path(req, &len);
	int m = http_request_method(req);

	(void)user;
	/* Raft RPCs pipeline freely: the core orders their effects itself and
	 * results go back in request order anyway. */
	if (len >= 6 && memcmp(path, "/raft/", 6) == 0)
		return false;
	return m != HTTP_GET && m != HTTP_HEAD && m != HTTP_OPTIONS;
}

size_t kvd_routes_body_limit(const struct http_request *req, void *user)
{
	struct kvd_node *n = user;
	size_t len;
	const char *path = http_request_path(req, &len);

	if (kvd_rpc_path_valid(path, len)) {
		/* Any value this node accepts must replicate: the leader sends an
		 * entry larger than its batch size alone, and JSON escapes each
		 * control byte of it as \u00XX (6 bytes). */
		size_t one = 6 * (ENGINE_COMMAND_PUT_SIZE(ENGINE_KEY_MAX, n->cfg.max_value_bytes)) +
			     64 * 1024;
		return one > RAFT_BODY_LIMIT ? one : RAFT_BODY_LIMIT;
	}
	if (len >= 4 && strncmp(path, "/kv/", 4) == 0)
		return n->cfg.max_value_bytes;
	return 1024 * 1024;
}

/* Decodes and validates the key of /kv/{key}; answers the error itself. */
static bool kv_key(struct http_request *req, const char *raw, size_t raw_len, char *key,
		   size_t *key_len)
{
	long len;

	if (raw_len == 0) {
		kvd_reply_text(req, 400, "key cannot be empty\n");
		return false;
	}
	if (raw_len > 3 * ENGINE_KEY_MAX) {
		kvd_reply_text(req, 400, "invalid key\n");
		return false;
	}
	len = kvd_percent_decode(raw, raw_len, key);
	if (len == 0) {
		kvd_reply_text(req, 400, "key cannot be empty\n");
		return false;
	}
	if (len < 0 || !engine_key_valid(key, (size_t)len)) {
		kvd_reply_text(req, 400, "invalid key\n");
		return false;
	}
	*key_len = (size_t)len;
	return true;
}

static bool is_leader(struct kvd_node *n)
{
	return raft_role(n->raft) == RAFT_LEADER;
}

static bool stale_read(struct http_request *req)
{
	size_t qlen, vlen;
	const char *q = http_request_query(req, &qlen);
	const char *v;

	return kvd_query_get(q, qlen, "consistency", &v, &vlen) && vlen == 5 &&
	       memcmp(v, "stale", 5) == 0;
}

static void route_kv(struct kvd_node *n, struct http_request *req, int method, const char *raw,
		     size_t raw_len)
{
	char key[3 * ENGINE_KEY_MAX];
	size_t key_len;
	void *cmd;
	size_t cmd_len;
	int rv;

	if (method != HTTP_GET && method != HTTP_PUT && method != HTTP_DELETE) {
		method_not_allowed(req, "GET, PUT, DELETE");
		return;
	}
	if (!kv_key(req, raw, raw_len, key, &key_len))
		return;
	if (method == HTTP_GET) {
		/* A sole voter whose disk is full cannot commit the no-op that
		 * read index needs; its applied state holds every acknowledged
		 * write, so it answers from there. */
		if (stale_read(req) || (kvd_node_disk_full(n) && kvd_node_sole_voter(n)))
			kvd_node_serve_get(n, req, key, key_len);
		else if (!is_leader(n))
			kvd_reply_not_leader(n, req);
		else
			kvd_node_read(n, req, key, key_len);
		return;
	}
	if (method == HTTP_PUT) {
		size_t vlen;
		const char *value = http_request_body(req, &vlen);
		if (vlen == 0) {
			kvd_reply_text(req, 400, "value cannot be empty\n");
			return;
		}
		if (vlen > n->cfg.max_value_bytes) {
			kvd_reply_text(req, 413, "value too large\n");
			return;
		}
		if (!kvd_utf8_valid(value, vlen)) {
			kvd_reply_text(req, 400, "value must be UTF-8 text\n");
			return;
		}
		if (!is_leader(n)) {
			kvd_reply_not_leader(n, req);
			return;
		}
		rv = engine_command_encode_put_alloc(key, key_len, value, vlen, &cmd, &cmd_len);
	} else {
		if (!is_leader(n)) {
			kvd_reply_not_leader(n, req);
			return;
		}
		rv = engine_command_encode_delete_alloc(key, key_len, &cmd, &cmd_len);
	}
	if (rv != 0) {
		kvd_reply_text(req, 503, "out of memory\n");
		return;
	}
	kvd_node_propose(n, req, cmd, cmd_len);
}

static void route_clear(struct kvd_node *n, struct http_request *req, int method)
{
	void *cmd;
	size_t cmd_len;

	if (method != HTTP_DELETE) {
		method_not_allowed(req, "DELETE");
		return;
	}
	if (!is_leader(n)) {
		kvd_reply_not_leader(n, req);
		return;
	}
	if (engine_command_encode_clear_alloc(&cmd, &cmd_len) != 0) {
		kvd_reply_text(req, 503, "out of memory\n");
		return;
	}
	kvd_node_propose(n, req, cmd, cmd_len);
}

static json_t *id_or_null(const char *id)
{
	return id[0] != '\0' ? json_string(id) : json_null();
}

static void route_cluster_info(struct kvd_node *n, struct http_request *req)
{
	const struct raft_config *c = raft_configuration(n->raft);
	json_t *o = json_object();
	json_t *peers = json_array();
	json_t *learners = json_array();
	const char *ids[RAFT_MAX_SERVERS];
	unsigned k = 0;

	for (unsigned i = 0; i < c->n; i++) {
		const char *id = c->servers[i].id;
		if (c->servers[i].role == RAFT_LEARNER) {
			json_array_append_new(learners, json_string(id));
			continue;
		}
		if (n->cfg.id_from_env && strcmp(id, n->cfg.id) == 0)
			continue;
		ids[k++] = id;
	}
	kvd_ids_sort(ids, k);
	for (unsigned i = 0; i < k; i++)
		json_array_append_new(peers, json_string(ids[i]));
	json_object_set_new(o, "id", json_string(n->cfg.id));
	json_object_set_new(o, "role",
			    json_string(raft_role(n->raft) == RAFT_LEADER      ? "leader"
					: raft_role(n->raft) == RAFT_CANDIDATE ? "candidate"
									       : "follower"));
	json_object_set_new(o, "term", kvd_json_u64(raft_current_term(n->raft)));
	json_object_set_new(o, "leader", id_or_null(raft_leader(n->raft)));
	json_object_set_new(o, "voted-for", id_or_null(raft_voted_for(n->raft)));
	json_object_set_new(o, "peers", peers);
	json_object_set_new(o, "learners", learners);
	json_object_set_new(o, "commit-index", kvd_json_u64(raft_commit_index(n->raft)));
	json_object_set_new(o, "last-applied", kvd_json_u64(kvd_applier_applied(n->applier)));
	reply_json(req, 200, o);
}

/* Parses a non-negative decimal query parameter; *out keeps its value when
 * the parameter is absent. Returns false for a malformed value. */
static bool query_u64(struct http_request *req, const char *name, uint64_t *out)
{
	size_t qlen, vlen;
	const char *q = http_request_query(req, &qlen);
	const char *v;
	uint64_t x = 0;

	if (!kvd_query_get(q, qlen, name, &v, &vlen))
		return true;
	if (vlen == 0 || vlen > 19)
		return false;
	for (size_t i = 0; i < vlen; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return true;
}

static bool authorized(struct kvd_node *n, struct http_request *req);

void kvd_routes_log_reply(struct kvd_node *n, struct http_request *req, int status,
			  const char *errmsg, const struct raft_entry *entries, size_t n_entries,
			  raft_index store_last)
{
	json_t *o, *a;

	if (status != 0) {
		char body[KVD_ERRMSG_SIZE + 64];
		snprintf(body, sizeof(body), "log read failed: %s\n", errmsg);
		kvd_reply_text(req, 500, body);
		return;
	}
	o = json_object();
	a = json_array();
	for (size_t i = 0; i < n_entries; i++) {
		json_t *e;
		if (entries[i].index <= kvd_snapshot_last(n).index)
			continue;
		e = kvd_rpc_entry_json(&entries[i]);
		if (e != NULL)
			json_array_append_new(a, e);
	}
	json_object_set_new(o, "first-index", kvd_json_u64(kvd_snapshot_last(n).index + 1));
	json_object_set_new(o, "last-index", kvd_json_u64(store_last));
	json_object_set_new(o, "commit-index", kvd_json_u64(raft_commit_index(n->raft)));
	json_object_set_new(o, "last-applied", kvd_json_u64(kvd_applier_applied(n->applier)));
	json_object_set_new(o, "entries", a);
	reply_json(req, 200, o);
}

static void route_log(struct kvd_node *n, struct http_request *req, int method)
{
	uint64_t from = 0, limit = 1000;

	if (method != HTTP_GET) {
		method_not_allowed(req, "GET");
		return;
	}
	if (!query_u64(req, "from", &from) || !query_u64(req, "limit", &limit)) {
		kvd_reply_text(req, 400, "from and limit must be non-negative integers\n");
		return;
	}
	if (limit > 10000)
		limit = 10000;
	if (from <= kvd_snapshot_last(n).index)
		from = kvd_snapshot_last(n).index + 1;
	kvd_writer_read_log(n->writer, req, from, limit);
}

static json_t *snapshot_json(struct kvd_node *n)
{
	json_t *o = json_object();
	json_object_set_new(o, "last-included-index", kvd_json_u64(kvd_snapshot_last(n).index));
	json_object_set_new(o, "last-included-term", kvd_json_u64(kvd_snapshot_last(n).term));
	return o;
}

void kvd_routes_snapshot_answer(struct kvd_node *n, struct http_request *req, int status)
{
	if (status == 0)
		reply_json(req, 200, snapshot_json(n));
	else if (status == KVD_ENOSPC)
		kvd_reply_text(req, 507, "insufficient storage\n");
	else
		kvd_reply_text(req, 500, "snapshot failed\n");
}

static void route_log_snapshot(struct kvd_node *n, struct http_request *req, int method)
{
	int rv;

	if (method == HTTP_GET) {
		reply_json(req, 200, snapshot_json(n));
		return;
	}
	if (method != HTTP_POST) {
		method_not_allowed(req, "GET, POST");
		return;
	}
	if (!authorized(n, req))
		return;
	rv = kvd_snapshot_take(n);
	if (rv == KVD_EEXIST) {
		reply_json(req, 200, snapshot_json(n));
		return;
	}
	if (rv != 0 && rv != KVD_EBUSY) {
		kvd_reply_text(req, 500, "snapshot failed\n");
		return;
	}
	if (kvd_snapshot_wait(n, req) != 0)
		kvd_reply_text(req, 503, "out of memory\n");
}

static bool path_is(const char *path, size_t len, const char *what)
{
	return strlen(what) == len && memcmp(path, what, len) == 0;
}

/*
 * Whether req carries "Authorization: Bearer <token>". The comparison takes
 * the same time whatever the bytes (it depends on the lengths only), so
 * timing tells an attacker nothing about how much of a guess was right.
 */
static bool token_ok(const struct kvd_node *n, const struct http_request *req)
{
	const char *tok = n->cfg.cluster_token;
	size_t len, tlen = strlen(tok);
	const char *h = http_request_header(req, "Authorization", &len);
	unsigned char diff = 0;

	if (h == NULL || len < 7 || strncmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	len -= 7;
	for (size_t i = 0; i < tlen; i++)
		diff |= (unsigned char)(tok[i] ^ (i < len ? h[i] : 0));
	return diff == 0 && len == tlen;
}

/* Requests that need the cluster token: everything under /raft/ and every
 * mutating request under /cluster/ or /log/ (API.md §7). */
static bool needs_token(const struct http_request *req)
{
	size_t len;
	const char *path = http_request_path(req, &len);
	int m = http_request_method(req);
	bool mutating = m != HTTP_GET && m != HTTP_HEAD;

	return (len >= 6 && memcmp(path, "/raft/", 6) == 0) ||
	       (mutating && len >= 8 && memcmp(path, "/cluster", 8) == 0 &&
		(len == 8 || path[8] == '/')) ||
	       (mutating && len >= 4 && memcmp(path, "/log", 4) == 0 && len > 4 && path[4] == '/');
}

int kvd_routes_admit(const struct http_request *req, void *user, const char **body)
{
	const struct kvd_node *n = user;

	if (n->cfg.cluster_token[0] == '\0' || !needs_token(req) || token_ok(n, req))
		return 0;
	*body = "unauthorized\n";
	return 401;
}

/* With a cluster token, protected requests need "Authorization: Bearer T".
 * The server already refused them from the headers (kvd_routes_admit); this
 * stays as a second check at the route. */
static bool authorized(struct kvd_node *n, struct http_request *req)
{
	if (n->cfg.cluster_token[0] == '\0' || token_ok(n, req))
		return true;
	kvd_reply_text(req, 401, "unauthorized\n");
	return false;
}

static void route_partition(struct kvd_node *n, struct http_request *req, bool heal)
{
	const char *ids[RAFT_MAX_SERVERS * 2] = {0};
	unsigned k = 0;
	json_t *o = NULL;
	char errmsg[KVD_ERRMSG_SIZE];
	char body[KVD_ERRMSG_SIZE + 2];
	int rv;

	if (!heal) {
		size_t blen, i;
		const char *b = http_request_body(req, &blen);
		json_t *a, *v;

		o = json_loadb(b, blen, 0, NULL);
		a = json_object_get(o, "peers");
		if (!json_is_array(a) || json_array_size(a) > RAFT_MAX_SERVERS * 2) {
			json_decref(o);
			kvd_reply_text(req, 400, "body must be {\"peers\": [ids]}\n");
			return;
		}
		json_array_foreach(a, i, v)
		{
			if (!json_is_string(v) ||
			    !kvd_id_valid(json_string_value(v), json_string_length(v))) {
				json_decref(o);
				kvd_reply_text(req, 400, "peers must be ids (host:port)\n");
				return;
			}
			ids[k++] = json_string_value(v);
		}
	}
	rv = kvd_transport_partition(n->transport, ids, k, heal, errmsg);
	json_decref(o);
	if (rv != 0) {
		snprintf(body, sizeof(body), "%s\n", errmsg);
		kvd_reply_text(req, rv == KVD_ENOSPC ? 507 : 500, body);
		return;
	}
	reply_json(req, 200, json_object());
}

void kvd_routes_handle(struct http_request *req, void *user)
{
	struct kvd_node *n = user;
	int method = http_request_method(req);
	size_t len;
	const char *path = http_request_path(req, &len);

	if (len >= 4 && memcmp(path, "/kv/", 4) == 0) {
		route_kv(n, req, method, path + 4, len - 4);
	} else if (path_is(path, len, "/kv")) {
		if (method != HTTP_GET && method != HTTP_PUT && method != HTTP_DELETE)
			method_not_allowed(req, "GET, PUT, DELETE");
		else
			kvd_reply_text(req, 400, "key cannot be empty\n");
	} else if (path_is(path, len, "/clear")) {
		route_clear(n, req, method);
	} else if (path_is(path, len, "/health")) {
		if (method != HTTP_GET)
			method_not_allowed(req, "GET");
		else
			http_response_send(req, 200, TEXT, NULL, "ok\n", 3);
	} else if (path_is(path, len, "/cluster/info")) {
		if (method != HTTP_GET)
			method_not_allowed(req, "GET");
		else
			route_cluster_info(n, req);
	} else if (path_is(path, len, "/raft/status")) {
		if (method != HTTP_GET)
			method_not_allowed(req, "GET");
		else if (authorized(n, req))
			kvd_raft_status_route(n, req);
	} else if (len > 6 && memcmp(path, "/raft/", 6) == 0 && kvd_rpc_path_valid(path, len)) {
		if (method != HTTP_POST)
			method_not_allowed(req, "POST");
		else if (authorized(n, req))
			kvd_transport_receive(n->transport, req);
	} else if (path_is(path, len, "/cluster/partition") ||
		   path_is(path, len, "/cluster/heal")) {
		if (method != HTTP_POST)
			method_not_allowed(req, "POST");
		else if (authorized(n, req))
			route_partition(n, req, path_is(path, len, "/cluster/heal"));
	} else if (path_is(path, len, "/cluster/members") ||
		   path_is(path, len, "/cluster/transfer-leadership") ||
		   path_is(path, len, "/cluster/join") || path_is(path, len, "/cluster/leave")) {
		if (method != HTTP_POST)
			method_not_allowed(req, "POST");
		else if (!authorized(n, req))
			return;
		else if (path_is(path, len, "/cluster/members"))
			kvd_members_route(n, req);
		else if (path_is(path, len, "/cluster/transfer-leadership"))
			kvd_transfer_route(n, req);
		else if (path_is(path, len, "/cluster/join"))
			kvd_join_route(n, req);
		else
			kvd_leave_route(n, req);
	} else if (path_is(path, len, "/metrics")) {
		if (method != HTTP_GET)
			method_not_allowed(req, "GET");
		else
			kvd_metrics_respond(n, req);
	} else if (path_is(path, len, "/log")) {
		route_log(n, req, method);
	} else if (path_is(path, len, "/log/snapshot")) {
		route_log_snapshot(n, req, method);
	} else {
		kvd_reply_text(req, 404, "not found\n");
	}
}
