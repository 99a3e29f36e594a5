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
#include "api/precondition.h"
#include "api/rpc.h"
#include "api/snapshots.h"
#include "api/transport.h"
#include "api/watch.h"
#include "api/ui.h"
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

/* Answers o (consumed) as JSON with extra header lines (NULL: none). */
static void reply_json_headers(struct http_request *req, int status, json_t *o, const char *headers)
{
	char *s = kvd_json_dumps(o);
	json_decref(o);
	if (s == NULL) {
		kvd_reply_text(req, 500, "out of memory\n");
		return;
	}
	http_response_send(req, status, JSON, headers, s, strlen(s));
	free(s);
}

static void reply_json(struct http_request *req, int status, json_t *o)
{
	reply_json_headers(req, status, o, NULL);
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
	snprintf(hdr, sizeof(hdr), "Location: %s://%s%s%s:%u%.*s%s%.*s\r\n",
		 n->cfg.tls_cert[0] != '\0' ? "https" : "http",
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

static bool path_is(const char *path, size_t len, const char *what);

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
	if (path_is(path, len, "/txn"))
		return ENGINE_TXN_BODY_MAX;
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

/* Reads If-Match / If-None-Match of a PUT (allow_absent) or DELETE. */
static enum kvd_precondition precondition_of(const struct http_request *req, bool allow_absent,
					     uint64_t *revision)
{
	size_t mlen = 0, nlen = 0;
	const char *m = http_request_header(req, "If-Match", &mlen);
	const char *none = http_request_header(req, "If-None-Match", &nlen);

	return kvd_precondition_parse(m, mlen, none, nlen, allow_absent, revision);
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
	enum kvd_precondition pc;
	uint64_t rev = 0;
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
		pc = precondition_of(req, true, &rev);
		if (pc == KVD_PRECOND_BAD) {
			kvd_reply_text(req, 400, "invalid precondition\n");
			return;
		}
		if (!is_leader(n)) {
			kvd_reply_not_leader(n, req);
			return;
		}
		if (pc == KVD_PRECOND_MATCH)
			rv = engine_command_encode_put_if_alloc(rev, key, key_len, value, vlen,
								&cmd, &cmd_len);
		else if (pc == KVD_PRECOND_ABSENT)
			rv = engine_command_encode_put_absent_alloc(key, key_len, value, vlen, &cmd,
								    &cmd_len);
		else
			rv = engine_command_encode_put_alloc(key, key_len, value, vlen, &cmd,
							     &cmd_len);
	} else {
		pc = precondition_of(req, false, &rev);
		if (pc == KVD_PRECOND_BAD) {
			kvd_reply_text(req, 400, "invalid precondition\n");
			return;
		}
		if (!is_leader(n)) {
			kvd_reply_not_leader(n, req);
			return;
		}
		if (pc == KVD_PRECOND_MATCH)
			rv = engine_command_encode_delete_if_alloc(rev, key, key_len, &cmd,
								   &cmd_len);
		else
			rv = engine_command_encode_delete_alloc(key, key_len, &cmd, &cmd_len);
	}
	if (rv != 0) {
		kvd_reply_text(req, 503, "out of memory\n");
		return;
	}
	kvd_node_propose(n, req, cmd, cmd_len,
			 method == HTTP_PUT ? KVD_WRITE_PUT : KVD_WRITE_PLAIN);
}

static bool query_u64(struct http_request *req, const char *name, uint64_t *out);

/* ---- range listing (API.md §11) ------------------------------------------ */

#define LIST_LIMIT_DEFAULT 1000
#define LIST_LIMIT_MAX	   10000
#define LIST_BYTES_MAX	   (4u * 1024 * 1024) /* a page's keys and values stop here */

/* The parameters of GET /kv?prefix=P&after=K&limit=N&keys-only=true. */
struct list_query {
	char prefix[ENGINE_KEY_MAX];
	size_t prefix_len;
	char after[ENGINE_KEY_MAX];
	size_t after_len;
	size_t limit;
	bool keys_only;
};

/* Decodes an optional key-like parameter (prefix, after): absent or empty is
 * none; otherwise 1..ENGINE_KEY_MAX key characters after percent-decoding. */
static bool list_bound(const char *q, size_t qlen, const char *name, char *out, size_t *out_len)
{
	const char *v;
	size_t vlen;
	char buf[3 * ENGINE_KEY_MAX];
	long len;
	bool ok = true;

	*out_len = 0;
	if (kvd_query_get(q, qlen, name, &v, &vlen) && vlen > 0) {
		ok = vlen <= sizeof(buf);
		len = ok ? kvd_percent_decode(v, vlen, buf) : -1;
		ok = len > 0 && engine_key_valid(buf, (size_t)len);
		if (ok) {
			memcpy(out, buf, (size_t)len);
			*out_len = (size_t)len;
		}
	}
	return ok;
}

/* Parses the listing's query; on a bad parameter answers 400 itself and
 * returns false. */
static bool list_query_parse(struct http_request *req, struct list_query *lq)
{
	size_t qlen, vlen;
	const char *q = http_request_query(req, &qlen);
	const char *v;
	uint64_t limit = LIST_LIMIT_DEFAULT;
	const char *bad = NULL;

	if (!list_bound(q, qlen, "prefix", lq->prefix, &lq->prefix_len))
		bad = "invalid prefix\n";
	else if (!list_bound(q, qlen, "after", lq->after, &lq->after_len))
		bad = "invalid after\n";
	else if (!query_u64(req, "limit", &limit) || limit == 0 || limit > LIST_LIMIT_MAX)
		bad = "invalid limit\n";
	lq->limit = (size_t)limit;
	lq->keys_only = false;
	if (bad == NULL && kvd_query_get(q, qlen, "keys-only", &v, &vlen)) {
		if (vlen == 4 && memcmp(v, "true", 4) == 0)
			lq->keys_only = true;
		else if (!(vlen == 5 && memcmp(v, "false", 5) == 0))
			bad = "invalid keys-only\n";
	}
	if (bad != NULL)
		kvd_reply_text(req, 400, bad);
	return bad == NULL;
}

void kvd_routes_serve_list(struct kvd_node *n, struct http_request *req)
{
	struct list_query lq;
	struct engine_list_result res = {0};
	json_t *o, *items;
	size_t i;
	int rv;

	if (!list_query_parse(req, &lq))
		return;
	if (kvd_snapshot_installing(n)) {
		kvd_reply_text(req, 503, "installing a snapshot from the leader; retry\n");
		return;
	}
	rv = engine_list_bounded(n->engine, lq.prefix, lq.prefix_len, lq.after, lq.after_len,
				 lq.limit, LIST_BYTES_MAX, lq.keys_only, &res);
	if (rv != 0) {
		kvd_reply_text(req, 500, "state machine read failed\n");
		return;
	}
	o = json_object();
	items = json_array();
	for (i = 0; i < res.n_items; i++) {
		const struct engine_list_item *it = &res.items[i];
		json_t *x = json_object();
		json_object_set_new(x, "key", json_stringn(it->key, it->key_len));
		if (!lq.keys_only)
			json_object_set_new(x, "value", json_stringn(it->value, it->value_len));
		json_object_set_new(x, "revision", kvd_json_u64(it->revision));
		json_array_append_new(items, x);
	}
	json_object_set_new(o, "revision", kvd_json_u64(res.revision));
	json_object_set_new(o, "items", items);
	json_object_set_new(o, "more", json_boolean(res.more));
	engine_list_result_clear(&res);
	reply_json(req, 200, o);
}

/* GET /kv?..: validated here (400 from any node), then served like a GET of
 * one key: stale from this node, else through the leader's read index. */
static void route_list(struct kvd_node *n, struct http_request *req)
{
	struct list_query lq;

	if (!list_query_parse(req, &lq))
		return;
	if (stale_read(req) || (kvd_node_disk_full(n) && kvd_node_sole_voter(n)))
		kvd_routes_serve_list(n, req);
	else if (!is_leader(n))
		kvd_reply_not_leader(n, req);
	else
		kvd_node_read(n, req, NULL, 0);
}

/* POST /txn (API.md §12): validated and re-encoded compactly, proposed as
 * one TXN entry; the applier answers with the branch's results. */
static void route_txn(struct kvd_node *n, struct http_request *req, int method)
{
	char msg[KVD_ERRMSG_SIZE];
	char body[KVD_ERRMSG_SIZE + 2];
	size_t blen, cmd_len;
	const char *b;
	void *cmd = NULL;
	int rv;

	if (method != HTTP_POST) {
		method_not_allowed(req, "POST");
		return;
	}
	b = http_request_body(req, &blen);
	msg[0] = '\0';
	rv = engine_command_encode_txn_alloc(b, blen, n->cfg.max_value_bytes, &cmd, &cmd_len, msg);
	/* Too many operations or comparisons is a size limit (413), like a
	 * body over 4 MiB; the engine reports it as invalid with this text. */
	if (rv == KVD_EINVAL && strncmp(msg, "too many ", 9) == 0)
		rv = KVD_ETOOBIG;
	if (rv == KVD_EINVAL || rv == KVD_ETOOBIG) {
		snprintf(body, sizeof(body), "%s\n", msg[0] != '\0' ? msg : "invalid transaction");
		kvd_reply_text(req, rv == KVD_EINVAL ? 400 : 413, body);
	} else if (rv != 0) {
		kvd_reply_text(req, 503, "out of memory\n");
	} else if (!is_leader(n)) {
		free(cmd);
		kvd_reply_not_leader(n, req);
	} else {
		kvd_node_propose(n, req, cmd, cmd_len, KVD_WRITE_TXN);
	}
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
	kvd_node_propose(n, req, cmd, cmd_len, KVD_WRITE_PLAIN);
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
	/* Public and read-only: the console of another member reads it (ui.c). */
	reply_json_headers(req, 200, o, "Access-Control-Allow-Origin: *\r\n");
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
static bool token_match(const char *tok, const struct http_request *req)
{
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

static bool token_ok(const struct kvd_node *n, const struct http_request *req)
{
	return token_match(n->cfg.cluster_token, req);
}

/* Whether path is prefix itself or lies under it ("/kv", "/kv/a"). */
static bool path_under(const char *path, size_t len, const char *prefix)
{
	size_t plen = strlen(prefix);

	return len >= plen && memcmp(path, prefix, plen) == 0 && (len == plen || path[plen] == '/');
}

/*
 * Requests that need the client token (API.md §7): the key-value API (/kv,
 * /clear), /txn, /watch and /ui, by prefix so that routes added under them
 * are covered the day they land, and reading the log (GET /log holds every
 * value). Open: /health, /metrics, reads under /cluster; everything under
 * /raft and mutations under /cluster and /log are the cluster token's.
 */
static bool needs_client_token(const struct http_request *req)
{
	size_t len;
	const char *path = http_request_path(req, &len);
	int m = http_request_method(req);

	return path_under(path, len, "/kv") || path_under(path, len, "/clear") ||
	       path_under(path, len, "/txn") || path_under(path, len, "/watch") ||
	       path_under(path, len, "/ui") ||
	       ((m == HTTP_GET || m == HTTP_HEAD) && path_under(path, len, "/log"));
}

/* The client token, or the cluster token (the stronger credential) when both
 * are set. Both comparisons always run: the time does not tell which failed. */
static bool client_token_ok(const struct kvd_node *n, const struct http_request *req)
{
	bool client = token_match(n->cfg.client_token, req);
	bool cluster = n->cfg.cluster_token[0] != '\0' && token_ok(n, req);

	return client || cluster;
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
	int status = 0;

	if (n->cfg.cluster_token[0] != '\0' && needs_token(req) && !token_ok(n, req))
		status = 401;
	else if (n->cfg.client_token[0] != '\0' && needs_client_token(req) &&
		 !client_token_ok(n, req))
		status = 401;
	if (status != 0)
		*body = "unauthorized\n";
	return status;
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

/* GET /watch (API.md §13): served by any node from its own applied state.
 * Revisions are in the log down to the trailing entries kept behind the
 * last snapshot; older ones answer 410. */
static void route_watch(struct kvd_node *n, struct http_request *req, int method)
{
	if (method != HTTP_GET)
		method_not_allowed(req, "GET");
	else
		kvd_watch_serve(kvd_applier_watch(n->applier), req, kvd_snapshot_floor(n));
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
		else if (method == HTTP_GET)
			route_list(n, req);
		else
			kvd_reply_text(req, 400, "key cannot be empty\n");
	} else if (path_is(path, len, "/clear")) {
		route_clear(n, req, method);
	} else if (path_is(path, len, "/txn")) {
		route_txn(n, req, method);
	} else if (path_is(path, len, "/watch")) {
		route_watch(n, req, method);
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
	} else if (path_is(path, len, "/ui") || (len >= 4 && memcmp(path, "/ui/", 4) == 0)) {
		kvd_ui_serve(req, path, len);
	} else if (path_is(path, len, "/log")) {
		route_log(n, req, method);
	} else if (path_is(path, len, "/log/snapshot")) {
		route_log_snapshot(n, req, method);
	} else {
		kvd_reply_text(req, 404, "not found\n");
	}
}
