/*
 * kvctl_cluster.c: kvctl's cluster commands: status, members, transfer,
 * snapshot, leader (API.md §3, §4).
 *
 * `status` reads GET /cluster/info from every endpoint and from every member
 * their answers name (peers and learners), each asked once with a short
 * timeout, so one dead member costs a second, not the whole --timeout. A
 * member is matched to an endpoint by its address (":8001" is
 * 127.0.0.1:8001). LAG is the leader's commit index minus the member's
 * applied index (with no leader answering, the greatest commit index seen).
 */
#include "tools/kvctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/common/id.h"
#include "kvd/errors.h"

#define STATUS_NODE_TIMEOUT_MS 2000
#define MAX_MEMBERS	       (KVCTL_MAX_ENDPOINTS * 2)

struct member {
	char id[KVD_ID_SIZE]; /* as the cluster names it, or the endpoint's address */
	struct kvctl_endpoint addr;
	bool asked;
	bool dup;     /* another row is this member: not printed */
	json_t *info; /* its /cluster/info, NULL when it did not answer */
};

struct roster {
	struct member m[MAX_MEMBERS];
	int n;
};

static bool same_addr(const struct kvctl_endpoint *a, const struct kvctl_endpoint *b)
{
	return a->port == b->port && strcmp(a->host, b->host) == 0;
}

static struct member *find_addr(struct roster *r, const struct kvctl_endpoint *a)
{
	for (int i = 0; i < r->n; i++)
		if (same_addr(&r->m[i].addr, a))
			return &r->m[i];
	return NULL;
}

/* Adds member id (if new and well formed). */
static void add_id(struct roster *r, const char *id)
{
	struct kvctl_endpoint a;
	struct member *m;

	if (id == NULL || kvd_id_split(id, a.host, sizeof(a.host), &a.port) != 0)
		return;
	for (int i = 0; i < r->n; i++)
		if (strcmp(r->m[i].id, id) == 0)
			return; /* known, maybe reached at another address */
	m = find_addr(r, &a);
	if (m != NULL) {
		snprintf(m->id, sizeof(m->id), "%s", id); /* the cluster's name wins */
		return;
	}
	if (r->n == MAX_MEMBERS)
		return;
	m = &r->m[r->n++];
	memset(m, 0, sizeof(*m));
	snprintf(m->id, sizeof(m->id), "%s", id);
	m->addr = a;
}

static json_t *ask_info(struct kvctl *k, const struct kvctl_endpoint *ep)
{
	struct kvctl_http_request req = {.method = "GET",
					 .host = ep->host,
					 .port = ep->port,
					 .path = "/cluster/info",
					 .connect_timeout_ms = 1000};
	struct kvctl_http_response r;
	char err[256];
	int sent;
	int64_t dl = kvctl_now_ms() + STATUS_NODE_TIMEOUT_MS;
	json_t *o = NULL;

	if (dl > k->deadline_ms)
		dl = k->deadline_ms;
	if (kvctl_http_do(k->transport, &req, dl, KVCTL_MAX_BODY, &r, &sent, err, sizeof(err)) != 0)
		return NULL;
	if (r.head.status == 200)
		o = json_loadb(r.body, r.body_len, 0, NULL);
	kvctl_http_response_clear(&r);
	if (!json_is_object(o)) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

static void add_named(struct roster *r, json_t *info)
{
	size_t i;
	json_t *v;

	add_id(r, json_string_value(json_object_get(info, "id")));
	json_array_foreach(json_object_get(info, "peers"), i, v)
	{
		add_id(r, json_string_value(v));
	}
	json_array_foreach(json_object_get(info, "learners"), i, v)
	{
		add_id(r, json_string_value(v));
	}
}

/* Row i answered as member id: it takes that name, and a row added for the
 * same id from another member's answer (an address this host may not
 * reach) is dropped; if that row already answered, row i is the duplicate. */
static void rename_row(struct roster *r, int i, const char *id)
{
	snprintf(r->m[i].id, sizeof(r->m[i].id), "%s", id);
	for (int j = 0; j < r->n; j++) {
		if (j == i || r->m[j].dup || strcmp(r->m[j].id, id) != 0)
			continue;
		if (r->m[j].info != NULL) {
			r->m[i].dup = true;
		} else {
			r->m[j].asked = true;
			r->m[j].dup = true;
		}
	}
}

static void gather(struct kvctl *k, struct roster *r)
{
	bool progress = true;

	for (int i = 0; i < k->n_endpoints; i++) {
		if (find_addr(r, &k->endpoints[i]) != NULL || r->n == MAX_MEMBERS)
			continue;
		memset(&r->m[r->n], 0, sizeof(r->m[0]));
		r->m[r->n].addr = k->endpoints[i];
		snprintf(r->m[r->n].id, sizeof(r->m[0].id), "%s:%u", k->endpoints[i].host,
			 (unsigned)k->endpoints[i].port);
		r->n++;
	}
	while (progress) {
		progress = false;
		for (int i = 0; i < r->n; i++) {
			struct member *m = &r->m[i];
			if (m->asked)
				continue;
			m->asked = true;
			progress = true;
			m->info = ask_info(k, &m->addr);
			if (m->info == NULL)
				continue;
			/* The member answering at this address is the one it names,
			 * even when the address is not its id (a port mapping). */
			if (json_is_string(json_object_get(m->info, "id")))
				rename_row(r, i, json_string_value(json_object_get(m->info, "id")));
			add_named(r, m->info); /* may add members (r->m never moves) */
		}
	}
}

static bool is_learner(const struct roster *r, const char *id)
{
	for (int i = 0; i < r->n; i++) {
		size_t j;
		json_t *v;
		json_array_foreach(json_object_get(r->m[i].info, "learners"), j, v)
		{
			if (json_is_string(v) && strcmp(json_string_value(v), id) == 0)
				return true;
		}
	}
	return false;
}

static int cmp_member(const void *a, const void *b)
{
	return strcmp(((const struct member *)a)->id, ((const struct member *)b)->id);
}

static json_int_t geti(json_t *o, const char *name)
{
	return json_integer_value(json_object_get(o, name));
}

int kvctl_cmd_status(struct kvctl *k)
{
	static struct roster r;
	json_int_t ref = -1;
	int answered = 0, rv;
	json_t *rows = json_array();
	size_t w[8] = {2, 4, 4, 6, 6, 7, 3, 9};
	static const char *const heads[8] = {"ID",     "ROLE",	  "TERM", "LEADER",
					     "COMMIT", "APPLIED", "LAG",  "REACHABLE"};
	size_t i;
	json_t *row;

	gather(k, &r);
	qsort(r.m, (size_t)r.n, sizeof(r.m[0]), cmp_member);
	for (int j = 0; j < r.n; j++) {
		json_t *info = r.m[j].info;
		if (info == NULL)
			continue;
		answered++;
		if (strcmp(json_string_value(json_object_get(info, "role"))
			       ? json_string_value(json_object_get(info, "role"))
			       : "",
			   "leader") == 0)
			ref = geti(info, "commit-index");
	}
	for (int j = 0; ref < 0 && j < r.n; j++)
		if (r.m[j].info != NULL && geti(r.m[j].info, "commit-index") > ref)
			ref = geti(r.m[j].info, "commit-index");
	for (int j = 0; j < r.n; j++) {
		json_t *info = r.m[j].info, *o;
		const char *role = json_string_value(json_object_get(info, "role"));
		json_t *leader = json_object_get(info, "leader");

		if (r.m[j].dup)
			continue;
		o = json_object();

		json_object_set_new(o, "id", json_string(r.m[j].id));
		if (info != NULL) {
			json_int_t lag = ref - geti(info, "last-applied");
			if (role != NULL && strcmp(role, "follower") == 0 &&
			    is_learner(&r, r.m[j].id))
				role = "learner";
			json_object_set_new(o, "role", json_string(role ? role : "?"));
			json_object_set_new(o, "term", json_integer(geti(info, "term")));
			json_object_set(o, "leader", leader ? leader : json_null());
			json_object_set_new(o, "commit-index",
					    json_integer(geti(info, "commit-index")));
			json_object_set_new(o, "last-applied",
					    json_integer(geti(info, "last-applied")));
			json_object_set_new(o, "lag", json_integer(lag > 0 ? lag : 0));
		} else {
			json_object_set_new(o, "role", json_null());
			json_object_set_new(o, "term", json_null());
			json_object_set_new(o, "leader", json_null());
			json_object_set_new(o, "commit-index", json_null());
			json_object_set_new(o, "last-applied", json_null());
			json_object_set_new(o, "lag", json_null());
		}
		json_object_set_new(o, "reachable", json_boolean(info != NULL));
		json_array_append_new(rows, o);
	}
	if (k->json) {
		json_t *o = json_object();
		json_object_set(o, "members", rows);
		kvctl_print_json(o);
	} else {
		static const char *const keys[8] = {"id",     "role",	      "term",
						    "leader", "commit-index", "last-applied",
						    "lag",    "reachable"};
		char cell[8][KVD_ID_SIZE + 8];

		for (int pass = 0; pass < 2; pass++) {
			if (pass == 1) {
				for (int c = 0; c < 8; c++)
					printf("%-*s%s", c < 7 ? (int)w[c] : 0, heads[c],
					       c < 7 ? "  " : "\n");
			}
			json_array_foreach(rows, i, row)
			{
				for (int c = 0; c < 8; c++) {
					json_t *v = json_object_get(row, keys[c]);
					size_t l;
					if (json_is_string(v))
						snprintf(cell[c], sizeof(cell[c]), "%s",
							 json_string_value(v));
					else if (json_is_integer(v))
						snprintf(cell[c], sizeof(cell[c]), "%lld",
							 (long long)json_integer_value(v));
					else if (json_is_boolean(v))
						snprintf(cell[c], sizeof(cell[c]), "%s",
							 json_is_true(v) ? "yes" : "no");
					else
						snprintf(cell[c], sizeof(cell[c]), "-");
					l = strlen(cell[c]);
					if (pass == 0 && l > w[c])
						w[c] = l;
					if (pass == 1)
						printf("%-*s%s", c < 7 ? (int)w[c] : 0, cell[c],
						       c < 7 ? "  " : "\n");
				}
			}
		}
	}
	json_decref(rows);
	for (int j = 0; j < r.n; j++)
		json_decref(r.m[j].info);
	rv = KVCTL_EXIT_OK;
	if (answered == 0)
		rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "status: no member answered");
	return rv;
}

/* POSTs body (a JSON object, stolen) to path; prints OK. */
static int post_json(struct kvctl *k, const char *path, json_t *body, int flags, const char *what)
{
	char *s = json_dumps(body, JSON_COMPACT);
	struct kvctl_call call = {.method = "POST",
				  .path = path,
				  .body = s,
				  .body_len = s ? strlen(s) : 0,
				  .extra_headers = "Content-Type: application/json\r\n",
				  .flags = flags};
	struct kvctl_http_response r;
	int rv;

	json_decref(body);
	if (s == NULL)
		return kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "out of memory");
	rv = kvctl_call(k, &call, &r, NULL);
	free(s);
	if (rv != 0)
		return rv;
	rv = kvctl_status_exit(&r, what);
	kvctl_http_response_clear(&r);
	return rv;
}

int kvctl_cmd_members(struct kvctl *k)
{
	const char *verb = k->args[0];
	json_t *ids, *body;
	int rv;

	if (strcmp(verb, "add") != 0 && strcmp(verb, "remove") != 0)
		return kvctl_fail(KVCTL_EXIT_USAGE, "members: expected add or remove, not '%s'",
				  verb);
	ids = json_array();
	for (int i = 1; i < k->n_args; i++) {
		if (!kvd_id_valid(k->args[i], strlen(k->args[i])) || strchr(k->args[i], ',')) {
			json_decref(ids);
			return kvctl_fail(KVCTL_EXIT_USAGE, "members: invalid id '%s' (host:port)",
					  k->args[i]);
		}
		json_array_append_new(ids, json_string(k->args[i]));
	}
	body = json_object();
	json_object_set_new(body, verb, ids);
	rv = post_json(k, "/cluster/members", body, KVCTL_FOLLOW, "members");
	if (rv == 0) {
		if (k->json) {
			json_t *o = json_object();
			json_object_set_new(o, "ok", json_true());
			kvctl_print_json(o);
		} else {
			puts("OK");
		}
	}
	return rv;
}

/* The leader named by the first endpoint that knows one, retried with
 * backoff until the deadline. Returns 0 with *out (a new reference to the
 * answering node's info). */
static int find_leader(struct kvctl *k, json_t **out)
{
	int64_t backoff = 50;

	for (;;) {
		struct kvctl_call call = {
		    .method = "GET", .path = "/cluster/info", .flags = KVCTL_RETRY_SENT};
		struct kvctl_http_response r;
		json_t *info;
		int rv = kvctl_call(k, &call, &r, NULL);
		int64_t left;

		if (rv != 0)
			return rv;
		info = r.head.status == 200 ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
		kvctl_http_response_clear(&r);
		if (json_is_string(json_object_get(info, "leader"))) {
			*out = info;
			return 0;
		}
		json_decref(info);
		k->cur = (k->cur + 1) % k->n_endpoints;
		left = k->deadline_ms - kvctl_now_ms();
		kvctl_sleep_ms(backoff < left ? backoff : left);
		backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
		if (kvctl_now_ms() >= k->deadline_ms)
			return kvctl_fail(KVCTL_EXIT_UNAVAILABLE,
					  "cluster unavailable: no leader within the timeout");
	}
}

static void print_leader_info(const struct kvctl *k, json_t *info)
{
	if (k->json) {
		json_t *o = json_object();
		json_object_set(o, "leader", json_object_get(info, "leader"));
		json_object_set(o, "term", json_object_get(info, "term"));
		kvctl_print_json(o);
	} else {
		puts(json_string_value(json_object_get(info, "leader")));
	}
}

static int print_leader(struct kvctl *k)
{
	json_t *info = NULL;
	int rv = find_leader(k, &info);

	if (rv == 0)
		print_leader_info(k, info);
	json_decref(info);
	return rv;
}

/*
 * The node that answered the transfer knows the new leader; the endpoint
 * asked next may still name the old one for a heartbeat or so. So the
 * leader is asked for until it is the target (or, without one, not the old
 * leader), until the deadline; then whatever is known is printed.
 */
static int print_new_leader(struct kvctl *k, const char *old, const char *target)
{
	json_t *info = NULL;
	int rv;

	for (;;) {
		const char *now;

		rv = find_leader(k, &info);
		if (rv != 0)
			break;
		now = json_string_value(json_object_get(info, "leader"));
		if ((target != NULL && strcmp(now, target) == 0) ||
		    (target == NULL && strcmp(now, old) != 0) || kvctl_now_ms() >= k->deadline_ms) {
			print_leader_info(k, info);
			break;
		}
		json_decref(info);
		info = NULL;
		kvctl_sleep_ms(50);
	}
	json_decref(info);
	return rv;
}

int kvctl_cmd_transfer(struct kvctl *k)
{
	const char *target = k->n_args == 1 ? k->args[0] : NULL;
	json_t *body, *before = NULL;
	char old[KVD_ID_SIZE];
	int rv;

	if (target != NULL && !kvd_id_valid(target, strlen(target)))
		return kvctl_fail(KVCTL_EXIT_USAGE, "transfer: invalid id '%s' (host:port)",
				  target);
	rv = find_leader(k, &before);
	if (rv != 0)
		return rv;
	snprintf(old, sizeof(old), "%s", json_string_value(json_object_get(before, "leader")));
	json_decref(before);
	body = json_object();
	if (target != NULL)
		json_object_set_new(body, "to", json_string(target));
	rv = post_json(k, "/cluster/transfer-leadership", body, KVCTL_FOLLOW, "transfer");
	if (rv == 0)
		rv = print_new_leader(k, old, target);
	return rv;
}

int kvctl_cmd_leader(struct kvctl *k)
{
	return print_leader(k);
}

int kvctl_cmd_snapshot(struct kvctl *k)
{
	struct kvctl_call call = {
	    .method = "POST", .path = "/log/snapshot", .flags = KVCTL_RETRY_SENT};
	struct kvctl_http_response r;
	json_t *o;
	int rv = kvctl_call(k, &call, &r, NULL);

	if (rv != 0)
		return rv;
	rv = kvctl_status_exit(&r, "snapshot");
	if (rv == 0) {
		o = json_loadb(r.body, r.body_len, 0, NULL);
		if (!json_is_object(o)) {
			rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "snapshot: the answer is not JSON");
		} else if (k->json) {
			json_object_set_new(o, "node",
					    json_sprintf("%s:%u", k->endpoints[k->cur].host,
							 (unsigned)k->endpoints[k->cur].port));
			kvctl_print_json(json_incref(o));
		} else {
			printf("snapshot of %s:%u at index %lld term %lld\n",
			       k->endpoints[k->cur].host, (unsigned)k->endpoints[k->cur].port,
			       (long long)geti(o, "last-included-index"),
			       (long long)geti(o, "last-included-term"));
		}
		json_decref(o);
	}
	kvctl_http_response_clear(&r);
	return rv;
}
