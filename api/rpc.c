/*
 * rpc.c: JSON encoding of Raft messages (API.md §5) with jansson.
 *
 * Invariant: decoding never trusts the wire (API.md §7): every field is
 * type-checked, terms and indexes are below 2^63, ids pass kvd_id_valid
 * (no byte that could end a header line or change a query string), and
 * entries must be contiguous from prev-log-index + 1 (the core relies on
 * it). A refused request leaves nothing behind: the core never sees it.
 *
 * Numbers are written unsigned (kvd_json_u64), never cast to a negative.
 *
 * The binary AppendEntries form (end of file) exists for the CPU it saves:
 * a 100-byte PUT costs the JSON path an escape scan, a UTF-8 check, a
 * jansson parse with one allocation per value and a copy on the follower;
 * the binary form is a header and the log's own records, checked with the
 * same rules and pointed into, not copied.
 */
#include "api/rpc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/textutil.h"
#include "raft/crc32c.h"
#include "kvd/errors.h"

static int fail(char *errmsg, const char *what)
{
	if (errmsg != NULL)
		snprintf(errmsg, KVD_ERRMSG_SIZE, "%s", what);
	return KVD_EINVAL;
}

void kvd_rpc_decoded_free(struct kvd_rpc_decoded *d)
{
	if (d == NULL)
		return;
	for (unsigned i = 0; i < d->n; i++)
		free(d->bufs != NULL ? d->bufs[i] : NULL);
	free(d->bufs);
	free(d->entries);
	json_decref(d->root);
	memset(d, 0, sizeof(*d));
}

const char *kvd_rpc_path(enum raft_msg_type type)
{
	switch (type) {
	case RAFT_MSG_REQUEST_VOTE: return "/raft/request-vote";
	case RAFT_MSG_APPEND: return "/raft/append-entries";
	case RAFT_MSG_SNAPSHOT: return "/raft/install-snapshot";
	case RAFT_MSG_TIMEOUT_NOW: return "/raft/timeout-now";
	default: return NULL;
	}
}

bool kvd_rpc_path_valid(const char *path, size_t len)
{
	static const enum raft_msg_type types[] = {RAFT_MSG_REQUEST_VOTE, RAFT_MSG_APPEND,
						   RAFT_MSG_SNAPSHOT, RAFT_MSG_TIMEOUT_NOW};
	for (unsigned i = 0; i < 4; i++) {
		const char *p = kvd_rpc_path(types[i]);
		if (strlen(p) == len && memcmp(p, path, len) == 0)
			return true;
	}
	return false;
}

json_t *kvd_json_u64(uint64_t v)
{
	return json_integer((json_int_t)v); /* above INT64_MAX: negative until dumped */
}

char *kvd_json_dumps(const json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	char *out, *w;
	const char *r;
	bool in_string = false;

	/* Fast path: jansson writes a negative number only after ':', '[' or
	 * ','; a body without those pairs (strings may hold them too: then the
	 * slow path just finds nothing to change) is already right. */
	if (s == NULL ||
	    (strstr(s, ":-") == NULL && strstr(s, "[-") == NULL && strstr(s, ",-") == NULL))
		return s;
	/* Every number kvd writes is an unsigned quantity held in jansson's
	 * signed integer, so a negative integer literal (outside strings; JSON
	 * strings are skipped with their escapes) is written as the unsigned
	 * value it stands for. 2^64 - x has at most one digit more than -x. */
	out = malloc(2 * strlen(s) + 1);
	if (out == NULL) {
		free(s);
		return NULL;
	}
	r = s;
	w = out;
	while (*r != '\0') {
		if (in_string) {
			if (*r == '\\' && r[1] != '\0')
				*w++ = *r++;
			else if (*r == '"')
				in_string = false;
			*w++ = *r++;
			continue;
		}
		if (*r == '-' && r[1] >= '0' && r[1] <= '9') {
			char *end;
			long long x = strtoll(r, &end, 10);
			if (*end != '.' && *end != 'e' && *end != 'E') {
				w += sprintf(w, "%" PRIu64, (uint64_t)x);
				r = end;
				continue;
			}
		}
		if (*r == '"')
			in_string = true;
		*w++ = *r++;
	}
	*w = '\0';
	free(s);
	return out;
}

static json_t *id_array(const struct raft_server *s, unsigned n, int role)
{
	json_t *a = json_array();
	const char *ids[RAFT_MAX_SERVERS];
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++)
		if (role == 0 || (int)s[i].role == role)
			ids[k++] = s[i].id;
	kvd_ids_sort(ids, k);
	for (unsigned i = 0; i < k; i++)
		json_array_append_new(a, json_string(ids[i]));
	return a;
}

json_t *kvd_rpc_config_json(const struct raft_config *c)
{
	json_t *o = json_object();
	json_object_set_new(o, "voters", id_array(c->servers, c->n, RAFT_VOTER));
	json_object_set_new(o, "learners", id_array(c->servers, c->n, RAFT_LEARNER));
	if (c->n_old > 0)
		json_object_set_new(o, "old-voters", id_array(c->old, c->n_old, RAFT_VOTER));
	return o;
}

/* Parses {"voters": [...], "learners": [...], "old-voters": [...]}. */
static int config_from_json(const json_t *o, struct raft_config *c)
{
	static const char *const keys[] = {"voters", "learners", "old-voters"};

	memset(c, 0, sizeof(*c));
	if (!json_is_object(o))
		return KVD_EINVAL;
	for (int k = 0; k < 3; k++) {
		const json_t *a = json_object_get(o, keys[k]);
		size_t i;
		const json_t *v;

		if (a == NULL)
			continue;
		if (!json_is_array(a))
			return KVD_EINVAL;
		json_array_foreach(a, i, v)
		{
			const char *id = json_string_value(v);
			if (id == NULL || !kvd_id_valid(id, json_string_length(v)))
				return KVD_EINVAL;
			if (k < 2) {
				if (raft_config_add(c, id, k == 0 ? RAFT_VOTER : RAFT_LEARNER) != 0)
					return KVD_EINVAL;
			} else {
				if (c->n_old >= RAFT_MAX_SERVERS)
					return KVD_EINVAL;
				snprintf(c->old[c->n_old].id, RAFT_ID_SIZE, "%s", id);
				c->old[c->n_old++].role = RAFT_VOTER;
			}
		}
	}
	return 0;
}

int kvd_rpc_entry_text(const struct raft_entry *e, char **out, size_t *len)
{
	char *s;
	size_t n;

	if (e->type == RAFT_ENTRY_NOOP) {
		s = strdup("NOOP");
		n = 4;
	} else if (e->type == RAFT_ENTRY_CONFIG) {
		struct raft_config c;
		json_t *o;
		char *j;

		if (raft_config_decode(e->data, e->len, &c) != 0)
			return KVD_ECORRUPT;
		o = kvd_rpc_config_json(&c);
		j = json_dumps(o, JSON_COMPACT);
		json_decref(o);
		if (j == NULL)
			return KVD_ENOMEM;
		n = 7 + strlen(j);
		s = malloc(n + 1);
		if (s != NULL)
			snprintf(s, n + 1, "CONFIG %s", j);
		free(j);
	} else {
		n = e->len;
		s = malloc(n + 1);
		if (s != NULL) {
			memcpy(s, e->data, n);
			s[n] = '\0';
		}
	}
	if (s == NULL)
		return KVD_ENOMEM;
	*out = s;
	*len = n;
	return 0;
}

json_t *kvd_rpc_entry_json(const struct raft_entry *e)
{
	char *text;
	size_t len;
	json_t *o;

	if (kvd_rpc_entry_text(e, &text, &len) != 0)
		return NULL;
	o = json_object();
	json_object_set_new(o, "index", kvd_json_u64(e->index));
	json_object_set_new(o, "term", kvd_json_u64(e->term));
	json_object_set_new(o, "command", json_stringn(text, len));
	free(text);
	return o;
}

static void set_u64(json_t *o, const char *k, uint64_t v)
{
	json_object_set_new(o, k, kvd_json_u64(v));
}

/* ---- AppendEntries written by hand --------------------------------------
 * jansson escapes a string through one callback per escape: megabytes of
 * control characters (each written as \u00XX) cost the leader's loop about
 * 0.05 s per MiB. This writer produces the same bytes as json_dumps of the
 * same object (same key order, same escapes) at memory speed. */

struct wbuf {
	char *p;
	size_t len, cap;
};

static bool wb_reserve(struct wbuf *b, size_t n)
{
	if (b->p != NULL && b->cap - b->len > n)
		return true;
	size_t cap = b->cap > 0 ? b->cap : 256;
	while (cap - b->len <= n) {
		if (cap > SIZE_MAX / 2)
			return false;
		cap *= 2;
	}
	char *p = realloc(b->p, cap);
	if (p == NULL)
		return false;
	b->p = p;
	b->cap = cap;
	return true;
}

static bool wb_text(struct wbuf *b, const char *s)
{
	size_t n = strlen(s);
	if (!wb_reserve(b, n))
		return false;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	return true;
}

static bool wb_u64(struct wbuf *b, const char *key, uint64_t v)
{
	char tmp[64];
	snprintf(tmp, sizeof(tmp), "\"%s\":%" PRIu64, key, v);
	return wb_text(b, tmp);
}

/* A JSON string literal of s[0..len) (valid UTF-8), escaped as jansson does:
 * '"' and '\\' backslashed, \b \f \n \r \t, other bytes below 0x20 as \u00XX. */
static bool wb_string(struct wbuf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF"; /* as jansson writes them */
	char *w;

	if (len > (SIZE_MAX - 3) / 6 || !wb_reserve(b, 6 * len + 2))
		return false;
	w = b->p + b->len;
	*w++ = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			*w++ = (char)c;
			continue;
		}
		*w++ = '\\';
		switch (c) {
		case '"': *w++ = '"'; break;
		case '\\': *w++ = '\\'; break;
		case '\b': *w++ = 'b'; break;
		case '\f': *w++ = 'f'; break;
		case '\n': *w++ = 'n'; break;
		case '\r': *w++ = 'r'; break;
		case '\t': *w++ = 't'; break;
		default:
			*w++ = 'u';
			*w++ = '0';
			*w++ = '0';
			*w++ = hex[c >> 4];
			*w++ = hex[c & 15];
		}
	}
	*w++ = '"';
	b->len = (size_t)(w - b->p);
	return true;
}

/* The AppendEntries body. Returns 0, KVD_ENOMEM, KVD_EINVAL (an entry that
 * is not UTF-8 text, which JSON cannot carry) or KVD_ECORRUPT. */
static int encode_append(const struct raft_message *m, char **body, size_t *len)
{
	struct wbuf b = {0};
	bool ok;
	int rv = KVD_ENOMEM;

	ok = wb_text(&b, "{") && wb_u64(&b, "term", m->term) && wb_text(&b, ",\"leader-id\":") &&
	     wb_string(&b, m->from, strlen(m->from)) && wb_text(&b, ",") &&
	     wb_u64(&b, "prev-log-index", m->u.append.prev_log_index) && wb_text(&b, ",") &&
	     wb_u64(&b, "prev-log-term", m->u.append.prev_log_term) &&
	     wb_text(&b, ",\"entries\":[");
	for (unsigned i = 0; ok && i < m->u.append.n_entries; i++) {
		const struct raft_entry *e = &m->u.append.entries[i];
		char *text = NULL;
		const char *t;
		size_t tlen;

		if (e->type == RAFT_ENTRY_COMMAND) {
			t = e->data;
			tlen = e->len;
		} else {
			rv = kvd_rpc_entry_text(e, &text, &tlen);
			if (rv != 0) {
				ok = false;
				break;
			}
			t = text;
		}
		if (!kvd_utf8_valid(t, tlen)) {
			free(text);
			rv = KVD_EINVAL;
			ok = false;
			break;
		}
		ok = wb_text(&b, i > 0 ? ",{" : "{") && wb_u64(&b, "index", e->index) &&
		     wb_text(&b, ",") && wb_u64(&b, "term", e->term) &&
		     wb_text(&b, ",\"command\":") && wb_string(&b, t, tlen) && wb_text(&b, "}");
		free(text);
		rv = KVD_ENOMEM;
	}
	ok = ok && wb_text(&b, "],") && wb_u64(&b, "leader-commit", m->u.append.leader_commit) &&
	     wb_text(&b, ",") && wb_u64(&b, "seq", m->u.append.seq) && wb_text(&b, "}");
	if (!ok) {
		free(b.p);
		return rv;
	}
	b.p[b.len] = '\0'; /* wb_reserve always leaves a byte spare */
	*body = b.p;
	*len = b.len;
	return 0;
}

/* ---- AppendEntries results without jansson ------------------------------
 * One result per AppendEntries per follower: the follower built it as a
 * jansson object and the leader parsed it back (about 3 % of a follower's
 * and 4 % of a leader's CPU in bench/profile.sh). The encoder writes the bytes
 * json_dumps wrote (same key order); the decoder reads exactly that form and
 * leaves anything else (another implementation's spacing, key order, extra
 * keys) to jansson, so what is accepted does not change. */

#define APPEND_RESULT_FMT                                                                          \
	"{\"term\":%" PRIu64 ",\"success\":%s,\"last-log-index\":%" PRIu64                         \
	",\"reject-index\":%" PRIu64 ",\"conflict-term\":%" PRIu64 ",\"conflict-index\":%" PRIu64  \
	",\"seq\":%" PRIu64 "}"

static int encode_append_result(const struct raft_message *m, char **body, size_t *len)
{
	const struct raft_append_result *r = &m->u.append_result;
	char *s = malloc(200); /* 7 numbers of at most 20 digits and 95 bytes of text */
	int n;

	if (s == NULL)
		return KVD_ENOMEM;
	n = snprintf(s, 200, APPEND_RESULT_FMT, m->term, r->success ? "true" : "false",
		     r->last_log_index, r->reject_index, r->conflict_term, r->conflict_index,
		     r->seq);
	if (n < 0 || n >= 200) {
		free(s);
		return KVD_EINVAL;
	}
	*body = s;
	*len = (size_t)n;
	return 0;
}

/* Reads `"key":` then a JSON number as jansson accepts it for get_u64 (no
 * sign, no leading zero, no fraction or exponent, below 2^63). */
static bool fast_u63(const char **p, const char *end, const char *key, uint64_t *out)
{
	size_t klen = strlen(key);
	const char *q = *p;
	uint64_t x = 0;
	size_t digits = 0;

	if ((size_t)(end - q) < klen + 3 || q[0] != '"' || memcmp(q + 1, key, klen) != 0 ||
	    q[klen + 1] != '"' || q[klen + 2] != ':')
		return false;
	q += klen + 3;
	while (q < end && *q >= '0' && *q <= '9') {
		if (digits == 18 && x > ((uint64_t)INT64_MAX - (uint64_t)(*q - '0')) / 10)
			return false;
		if (digits == 19)
			return false;
		x = x * 10 + (uint64_t)(*q - '0');
		digits++;
		q++;
	}
	if (digits == 0 || (digits > 1 && (*p)[klen + 3] == '0'))
		return false;
	*out = x;
	*p = q;
	return true;
}

static bool fast_lit(const char **p, const char *end, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
		return false;
	*p += n;
	return true;
}

/* The result as encode_append_result() writes it, or false. */
static bool fast_append_result(const char *body, size_t len, struct raft_message *m)
{
	struct raft_append_result *r = &m->u.append_result;
	const char *p = body, *end = body + len;

	if (!fast_lit(&p, end, "{") || !fast_u63(&p, end, "term", &m->term) ||
	    !fast_lit(&p, end, ",\"success\":"))
		return false;
	if (fast_lit(&p, end, "true"))
		r->success = true;
	else if (fast_lit(&p, end, "false"))
		r->success = false;
	else
		return false;
	return fast_lit(&p, end, ",") && fast_u63(&p, end, "last-log-index", &r->last_log_index) &&
	       fast_lit(&p, end, ",") && fast_u63(&p, end, "reject-index", &r->reject_index) &&
	       fast_lit(&p, end, ",") && fast_u63(&p, end, "conflict-term", &r->conflict_term) &&
	       fast_lit(&p, end, ",") && fast_u63(&p, end, "conflict-index", &r->conflict_index) &&
	       fast_lit(&p, end, ",") && fast_u63(&p, end, "seq", &r->seq) &&
	       fast_lit(&p, end, "}") && p == end;
}

int kvd_rpc_encode(const struct raft_message *m, char **body, size_t *len, char *query,
		   size_t query_size)
{
	json_t *o;
	char *s;

	if (m->type == RAFT_MSG_SNAPSHOT) {
		const struct raft_snapshot *sn = &m->u.snapshot;
		char id[3 * RAFT_ID_SIZE];
		size_t k = 0;

		if (query == NULL)
			return KVD_EINVAL;
		/* Percent-encode every byte but unreserved ones and ':', the exact
		 * inverse of the receiver's decoding, whatever the id holds. */
		for (const char *p = m->from; *p != '\0' && k + 4 < sizeof(id); p++) {
			unsigned char c = (unsigned char)*p;
			if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
			    c == '~' || c == ':')
				id[k++] = (char)c;
			else
				k += (size_t)snprintf(id + k, sizeof(id) - k, "%%%02X", c);
		}
		id[k] = '\0';
		snprintf(query, query_size,
			 "term=%" PRIu64 "&leader-id=%s&last-included-index=%" PRIu64
			 "&last-included-term=%" PRIu64 "&offset=%" PRIu64 "&done=%s",
			 m->term, id, sn->last_index, sn->last_term, sn->offset,
			 sn->done ? "true" : "false");
		*body = NULL;
		*len = 0;
		return 0;
	}
	if (m->type == RAFT_MSG_APPEND)
		return encode_append(m, body, len);
	if (m->type == RAFT_MSG_APPEND_RESULT)
		return encode_append_result(m, body, len);
	o = json_object();
	if (o == NULL)
		return KVD_ENOMEM;
	set_u64(o, "term", m->term);
	switch (m->type) {
	case RAFT_MSG_REQUEST_VOTE:
		json_object_set_new(o, "candidate-id", json_string(m->from));
		set_u64(o, "last-log-index", m->u.request_vote.last_log_index);
		set_u64(o, "last-log-term", m->u.request_vote.last_log_term);
		json_object_set_new(o, "pre-vote", json_boolean(m->u.request_vote.pre_vote));
		json_object_set_new(o, "transfer", json_boolean(m->u.request_vote.transfer));
		break;
	case RAFT_MSG_REQUEST_VOTE_RESULT:
		json_object_set_new(o, "vote-granted",
				    json_boolean(m->u.request_vote_result.granted));
		json_object_set_new(o, "pre-vote", json_boolean(m->u.request_vote_result.pre_vote));
		break;
	case RAFT_MSG_APPEND_RESULT:
		json_object_set_new(o, "success", json_boolean(m->u.append_result.success));
		set_u64(o, "last-log-index", m->u.append_result.last_log_index);
		set_u64(o, "reject-index", m->u.append_result.reject_index);
		set_u64(o, "conflict-term", m->u.append_result.conflict_term);
		set_u64(o, "conflict-index", m->u.append_result.conflict_index);
		set_u64(o, "seq", m->u.append_result.seq);
		break;
	case RAFT_MSG_SNAPSHOT_RESULT:
		json_object_set_new(o, "success", json_boolean(m->u.snapshot_result.success));
		set_u64(o, "last-included-index", m->u.snapshot_result.last_index);
		set_u64(o, "offset", m->u.snapshot_result.offset);
		break;
	case RAFT_MSG_TIMEOUT_NOW: json_object_set_new(o, "leader-id", json_string(m->from)); break;
	default: json_decref(o); return KVD_EINVAL;
	}
	s = kvd_json_dumps(o);
	json_decref(o);
	if (s == NULL)
		return KVD_ENOMEM;
	*body = s;
	*len = strlen(s);
	return 0;
}

/* Reads an unsigned integer field below 2^63 (API.md §7); missing is an
 * error unless optional. jansson refuses integers above INT64_MAX at parse
 * time, so every json_int_t >= 0 is in range. */
static int get_u64(const json_t *o, const char *k, bool optional, uint64_t *out)
{
	const json_t *v = json_object_get(o, k);
	if (v == NULL && optional) {
		*out = 0;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return KVD_EINVAL;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_bool(const json_t *o, const char *k, bool optional, bool *out)
{
	const json_t *v = json_object_get(o, k);
	if (v == NULL && optional) {
		*out = false;
		return 0;
	}
	if (!json_is_boolean(v))
		return KVD_EINVAL;
	*out = json_is_true(v);
	return 0;
}

/* Reads an id field: a string kvd_id_valid accepts (the length check also
 * catches a NUL inside, which JSON_ALLOW_NUL lets through). */
static int get_id(const json_t *o, const char *k, char *out)
{
	const json_t *v = json_object_get(o, k);
	const char *s = json_string_value(v);
	if (s == NULL || !kvd_id_valid(s, json_string_length(v)))
		return KVD_EINVAL;
	snprintf(out, RAFT_ID_SIZE, "%s", s);
	return 0;
}

/* Turns the "entries" array into raft_entry records held by d. */
static int decode_entries(const json_t *a, raft_index prev, struct kvd_rpc_decoded *d, char *errmsg)
{
	size_t n = json_array_size(a);
	size_t i;
	const json_t *v;

	if (!json_is_array(a))
		return fail(errmsg, "entries must be an array");
	if (n == 0)
		return 0;
	d->entries = calloc(n, sizeof(*d->entries));
	d->bufs = calloc(n, sizeof(*d->bufs));
	if (d->entries == NULL || d->bufs == NULL)
		return KVD_ENOMEM;
	d->n = (unsigned)n;
	json_array_foreach(a, i, v)
	{
		struct raft_entry *e = &d->entries[i];
		const json_t *cmd = json_object_get(v, "command");
		const char *s = json_string_value(cmd);
		size_t len = json_string_length(cmd);

		if (!json_is_object(v) || get_u64(v, "index", false, &e->index) != 0 ||
		    get_u64(v, "term", false, &e->term) != 0 || s == NULL)
			return fail(errmsg,
				    "entry needs index, term (integers below 2^63) and command");
		if (e->index != prev + 1 + i)
			return fail(errmsg, "entries are not contiguous after prev-log-index");
		if (len == 4 && memcmp(s, "NOOP", 4) == 0) {
			e->type = RAFT_ENTRY_NOOP;
		} else if (len > 7 && memcmp(s, "CONFIG ", 7) == 0) {
			struct raft_config c;
			json_t *cj = json_loadb(s + 7, len - 7, 0, NULL);
			int rv = config_from_json(cj, &c);
			json_decref(cj);
			if (rv != 0)
				return fail(errmsg, "malformed CONFIG entry");
			if (raft_config_encode(&c, &d->bufs[i], &e->len) != 0)
				return KVD_ENOMEM;
			e->type = RAFT_ENTRY_CONFIG;
			e->data = d->bufs[i];
		} else {
			e->type = RAFT_ENTRY_COMMAND;
			e->data = s;
			e->len = len;
		}
	}
	return 0;
}

/* Parses a whole decimal number below 2^63 from a query value: digits only
 * (no sign, no spaces, no hex), overflow refused rather than wrapped. */
static int query_u63(const char *v, size_t vlen, uint64_t *out)
{
	uint64_t x = 0;

	if (vlen == 0 || vlen > 19)
		return KVD_EINVAL;
	for (size_t i = 0; i < vlen; i++) {
		if (v[i] < '0' || v[i] > '9')
			return KVD_EINVAL;
		x = x * 10 + (uint64_t)(v[i] - '0'); /* 19 digits fit in 64 bits */
	}
	if (x > (uint64_t)INT64_MAX)
		return KVD_EINVAL;
	*out = x;
	return 0;
}

/* Parses the install-snapshot query string. The leader id may arrive
 * percent-encoded; it is checked after decoding. */
static int decode_snapshot_query(const char *q, size_t qlen, struct raft_message *m)
{
	static const char *const keys[] = {"term", "last-included-index", "last-included-term",
					   "offset"};
	uint64_t vals[4];
	const char *v;
	size_t vlen;
	char idbuf[3 * RAFT_ID_SIZE];
	long n;

	for (int k = 0; k < 4; k++)
		if (!kvd_query_get(q, qlen, keys[k], &v, &vlen) ||
		    query_u63(v, vlen, &vals[k]) != 0)
			return KVD_EINVAL;
	if (!kvd_query_get(q, qlen, "leader-id", &v, &vlen) || vlen == 0 || vlen >= sizeof(idbuf))
		return KVD_EINVAL;
	n = kvd_percent_decode(v, vlen, idbuf);
	if (n <= 0 || !kvd_id_valid(idbuf, (size_t)n))
		return KVD_EINVAL;
	if (!kvd_query_get(q, qlen, "done", &v, &vlen))
		return KVD_EINVAL;
	if ((vlen == 4 && memcmp(v, "true", 4) == 0) || (vlen == 1 && v[0] == '1'))
		m->u.snapshot.done = true;
	else if ((vlen == 5 && memcmp(v, "false", 5) == 0) || (vlen == 1 && v[0] == '0'))
		m->u.snapshot.done = false;
	else
		return KVD_EINVAL;
	memcpy(m->from, idbuf, (size_t)n);
	m->from[n] = '\0';
	m->term = vals[0];
	m->u.snapshot.last_index = vals[1];
	m->u.snapshot.last_term = vals[2];
	m->u.snapshot.offset = vals[3];
	return 0;
}

int kvd_rpc_decode_request(const char *path, const char *query, size_t query_len, const void *body,
			   size_t len, const char *self, struct raft_message *m,
			   struct kvd_rpc_decoded *d, char *errmsg)
{
	json_t *o;
	int rv = KVD_EINVAL;

	memset(m, 0, sizeof(*m));
	memset(d, 0, sizeof(*d));
	snprintf(m->to, RAFT_ID_SIZE, "%s", self);
	if (strcmp(path, "/raft/install-snapshot") == 0) {
		m->type = RAFT_MSG_SNAPSHOT;
		if (decode_snapshot_query(query, query_len, m) != 0)
			return fail(errmsg,
				    "install-snapshot needs term, last-included-index, "
				    "last-included-term, offset (integers below 2^63), leader-id "
				    "(host:port), done (true or false)");
		m->u.snapshot.data = body;
		m->u.snapshot.len = len;
		return 0;
	}
	o = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return fail(errmsg, "body must be a JSON object");
	}
	d->root = o;
	if (get_u64(o, "term", false, &m->term) != 0) {
		fail(errmsg, "term must be an integer in 0..2^63-1");
		goto err;
	}
	if (strcmp(path, "/raft/request-vote") == 0) {
		m->type = RAFT_MSG_REQUEST_VOTE;
		if (get_id(o, "candidate-id", m->from) != 0 ||
		    get_u64(o, "last-log-index", false, &m->u.request_vote.last_log_index) != 0 ||
		    get_u64(o, "last-log-term", false, &m->u.request_vote.last_log_term) != 0 ||
		    get_bool(o, "pre-vote", true, &m->u.request_vote.pre_vote) != 0 ||
		    get_bool(o, "transfer", true, &m->u.request_vote.transfer) != 0) {
			fail(errmsg, "request-vote needs term, candidate-id (host:port), "
				     "last-log-index, last-log-term (integers below 2^63)");
			goto err;
		}
	} else if (strcmp(path, "/raft/append-entries") == 0) {
		m->type = RAFT_MSG_APPEND;
		if (get_id(o, "leader-id", m->from) != 0 ||
		    get_u64(o, "prev-log-index", false, &m->u.append.prev_log_index) != 0 ||
		    get_u64(o, "prev-log-term", false, &m->u.append.prev_log_term) != 0 ||
		    get_u64(o, "leader-commit", false, &m->u.append.leader_commit) != 0 ||
		    get_u64(o, "seq", true, &m->u.append.seq) != 0) {
			fail(errmsg, "append-entries needs term, leader-id (host:port), "
				     "prev-log-index, prev-log-term, leader-commit (integers "
				     "below 2^63), entries");
			goto err;
		}
		if (json_object_get(o, "entries") != NULL) {
			rv = decode_entries(json_object_get(o, "entries"),
					    m->u.append.prev_log_index, d, errmsg);
			if (rv != 0)
				goto err;
		}
		m->u.append.entries = d->entries;
		m->u.append.n_entries = d->n;
	} else if (strcmp(path, "/raft/timeout-now") == 0) {
		m->type = RAFT_MSG_TIMEOUT_NOW;
		if (get_id(o, "leader-id", m->from) != 0) {
			fail(errmsg, "timeout-now needs term and leader-id (host:port)");
			goto err;
		}
	} else {
		fail(errmsg, "unknown raft rpc");
		goto err;
	}
	return 0;
err:
	kvd_rpc_decoded_free(d);
	return rv == KVD_ENOMEM ? rv : KVD_EINVAL;
}

int kvd_rpc_decode_result(enum raft_msg_type request_type, const void *body, size_t len,
			  const char *peer, const char *self, struct raft_message *m, char *errmsg)
{
	json_t *o;
	int rv = KVD_EINVAL;

	memset(m, 0, sizeof(*m));
	snprintf(m->from, RAFT_ID_SIZE, "%s", peer);
	snprintf(m->to, RAFT_ID_SIZE, "%s", self);
	if (request_type == RAFT_MSG_APPEND && body != NULL) {
		m->type = RAFT_MSG_APPEND_RESULT;
		if (fast_append_result(body, len, m))
			return 0;
		memset(&m->u, 0, sizeof(m->u));
		m->term = 0;
	}
	o = json_loadb(body, len, 0, NULL);
	if (!json_is_object(o) || get_u64(o, "term", false, &m->term) != 0)
		goto out;
	switch (request_type) {
	case RAFT_MSG_REQUEST_VOTE:
		m->type = RAFT_MSG_REQUEST_VOTE_RESULT;
		if (get_bool(o, "vote-granted", false, &m->u.request_vote_result.granted) != 0 ||
		    get_bool(o, "pre-vote", true, &m->u.request_vote_result.pre_vote) != 0)
			goto out;
		break;
	case RAFT_MSG_APPEND:
		m->type = RAFT_MSG_APPEND_RESULT;
		if (get_bool(o, "success", false, &m->u.append_result.success) != 0 ||
		    get_u64(o, "last-log-index", false, &m->u.append_result.last_log_index) != 0 ||
		    get_u64(o, "reject-index", true, &m->u.append_result.reject_index) != 0 ||
		    get_u64(o, "conflict-term", true, &m->u.append_result.conflict_term) != 0 ||
		    get_u64(o, "conflict-index", true, &m->u.append_result.conflict_index) != 0 ||
		    get_u64(o, "seq", true, &m->u.append_result.seq) != 0)
			goto out;
		break;
	case RAFT_MSG_SNAPSHOT:
		m->type = RAFT_MSG_SNAPSHOT_RESULT;
		if (get_bool(o, "success", false, &m->u.snapshot_result.success) != 0 ||
		    get_u64(o, "last-included-index", true, &m->u.snapshot_result.last_index) !=
			0 ||
		    get_u64(o, "offset", true, &m->u.snapshot_result.offset) != 0)
			goto out;
		break;
	default: goto out;
	}
	rv = 0;
out:
	json_decref(o);
	if (rv != 0)
		fail(errmsg, "malformed raft rpc result");
	return rv;
}

/* ---- binary AppendEntries (docs/formats.md) -----------------------------
 * Header, then the entries as log segment records (raft/segment.c framing,
 * batch tag 0). Little-endian, written byte by byte like the log. */

#define BIN_MAGIC	   0x4144564bu /* "KVDA" as bytes */
#define BIN_VERSION	   1u
#define BIN_HEADER_SIZE	   56 /* bytes before the leader id */
#define BIN_REC_HEADER	   32 /* bytes of a record before its payload */
#define BIN_MAX_ENTRY_SIZE ((uint32_t)256 << 20)

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32le(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get_u64le(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint32_t record_crc(const unsigned char *p, uint32_t len)
{
	uint32_t crc = raft_crc32c(0, p, 4);
	return raft_crc32c(crc, p + 8, BIN_REC_HEADER - 8 + (size_t)len);
}

/* The checks config_from_json() makes on a configuration that arrives as
 * JSON: every id valid, voters and learners accepted by raft_config_add(). */
static bool config_acceptable(const void *data, size_t len)
{
	struct raft_config c, again;

	if (raft_config_decode(data, len, &c) != 0)
		return false;
	memset(&again, 0, sizeof(again));
	for (unsigned i = 0; i < c.n; i++)
		if (!kvd_id_valid(c.servers[i].id, strlen(c.servers[i].id)) ||
		    raft_config_add(&again, c.servers[i].id, c.servers[i].role) != 0)
			return false;
	for (unsigned i = 0; i < c.n_old; i++)
		if (!kvd_id_valid(c.old[i].id, strlen(c.old[i].id)))
			return false;
	return true;
}

bool kvd_rpc_body_binary(const void *body, size_t len)
{
	return body != NULL && len >= BIN_HEADER_SIZE && get_u32le(body) == BIN_MAGIC;
}

bool kvd_rpc_content_binary(const char *ctype, size_t len)
{
	static const char want[] = KVD_RPC_BINARY_TYPE;
	size_t n = sizeof(want) - 1;

	if (ctype == NULL || len < n || strncasecmp(ctype, want, n) != 0)
		return false;
	for (size_t i = n; i < len && ctype[i] != ';'; i++)
		if (ctype[i] != ' ' && ctype[i] != '\t')
			return false;
	return true;
}

void kvd_rpc_cache_free(struct kvd_rpc_cache *c)
{
	if (c == NULL)
		return;
	free(c->rec);
	memset(c, 0, sizeof(*c));
}

/* Encodes the records of m's entries into c (whose old content is lost). */
static int encode_records(const struct raft_message *m, struct kvd_rpc_cache *c)
{
	const struct raft_entry *es = m->u.append.entries;
	unsigned n = m->u.append.n_entries;
	size_t total = 0;
	unsigned char *w;

	c->len = 0;
	c->first = c->last = 0;
	c->last_term = 0;
	for (unsigned i = 0; i < n; i++) {
		if (es[i].len > BIN_MAX_ENTRY_SIZE || es[i].index > (uint64_t)INT64_MAX ||
		    es[i].term > (uint64_t)INT64_MAX)
			return KVD_EINVAL;
		/* JSON carries commands as text: the binary form accepts no
		 * more, so a follower never holds what GET /log cannot show. */
		if (es[i].type == RAFT_ENTRY_COMMAND && !kvd_utf8_valid(es[i].data, es[i].len))
			return KVD_EINVAL;
		if (es[i].type != RAFT_ENTRY_COMMAND && es[i].type != RAFT_ENTRY_NOOP &&
		    es[i].type != RAFT_ENTRY_CONFIG)
			return KVD_EINVAL;
		total += BIN_REC_HEADER + (es[i].type == RAFT_ENTRY_NOOP ? 0 : es[i].len);
	}
	if (total > c->cap) {
		unsigned char *p = realloc(c->rec, total);
		if (p == NULL)
			return KVD_ENOMEM;
		c->rec = p;
		c->cap = total;
	}
	w = c->rec;
	for (unsigned i = 0; i < n; i++) {
		uint32_t len = es[i].type == RAFT_ENTRY_NOOP ? 0 : (uint32_t)es[i].len;
		put_u32(w, len);
		put_u64(w + 8, es[i].index);
		put_u64(w + 16, es[i].term);
		put_u32(w + 24, (uint32_t)es[i].type);
		put_u32(w + 28, 0);
		if (len > 0)
			memcpy(w + BIN_REC_HEADER, es[i].data, len);
		put_u32(w + 4, record_crc(w, len));
		w += BIN_REC_HEADER + len;
	}
	c->len = total;
	if (n > 0) {
		c->first = es[0].index;
		c->last = es[n - 1].index;
		c->last_term = es[n - 1].term;
	}
	return 0;
}

int kvd_rpc_encode_append_binary(const struct raft_message *m, struct kvd_rpc_cache *cache,
				 char **body, size_t *len)
{
	struct kvd_rpc_cache local = {0};
	struct kvd_rpc_cache *c = cache != NULL ? cache : &local;
	const struct raft_append *a = &m->u.append;
	size_t idlen = strlen(m->from);
	size_t total;
	unsigned char *out;
	int rv = 0;

	if (m->type != RAFT_MSG_APPEND || idlen == 0 || idlen >= RAFT_ID_SIZE)
		return KVD_EINVAL;
	if (a->n_entries > 0 && (c->rec == NULL || c->first != a->entries[0].index ||
				 c->last != a->entries[a->n_entries - 1].index ||
				 c->last_term != a->entries[a->n_entries - 1].term)) {
		rv = encode_records(m, c);
		c->misses++;
	} else if (a->n_entries > 0) {
		c->hits++;
	}
	if (rv != 0)
		goto out;
	total = BIN_HEADER_SIZE + idlen + (a->n_entries > 0 ? c->len : 0);
	out = malloc(total + 1);
	if (out == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	put_u32(out, BIN_MAGIC);
	put_u32(out + 4, BIN_VERSION);
	put_u64(out + 8, m->term);
	put_u64(out + 16, a->prev_log_index);
	put_u64(out + 24, a->prev_log_term);
	put_u64(out + 32, a->leader_commit);
	put_u64(out + 40, a->seq);
	put_u32(out + 48, a->n_entries);
	put_u32(out + 52, (uint32_t)idlen);
	memcpy(out + BIN_HEADER_SIZE, m->from, idlen);
	if (a->n_entries > 0)
		memcpy(out + BIN_HEADER_SIZE + idlen, c->rec, c->len);
	out[total] = '\0';
	*body = (char *)out;
	*len = total;
out:
	if (c == &local)
		kvd_rpc_cache_free(&local);
	return rv;
}

int kvd_rpc_decode_append_binary(const void *body, size_t len, const char *self,
				 struct raft_message *m, struct kvd_rpc_decoded *d, char *errmsg)
{
	const unsigned char *p = body;
	const unsigned char *r;
	size_t left, idlen;
	uint32_t n;
	int rv = KVD_EINVAL;

	memset(m, 0, sizeof(*m));
	memset(d, 0, sizeof(*d));
	snprintf(m->to, RAFT_ID_SIZE, "%s", self);
	m->type = RAFT_MSG_APPEND;
	if (len < BIN_HEADER_SIZE)
		return fail(errmsg, "binary append-entries: truncated header");
	if (get_u32le(p) != BIN_MAGIC || get_u32le(p + 4) != BIN_VERSION)
		return fail(errmsg, "binary append-entries: bad magic or version");
	m->term = get_u64le(p + 8);
	m->u.append.prev_log_index = get_u64le(p + 16);
	m->u.append.prev_log_term = get_u64le(p + 24);
	m->u.append.leader_commit = get_u64le(p + 32);
	m->u.append.seq = get_u64le(p + 40);
	if (m->term > (uint64_t)INT64_MAX || m->u.append.prev_log_index > (uint64_t)INT64_MAX ||
	    m->u.append.prev_log_term > (uint64_t)INT64_MAX ||
	    m->u.append.leader_commit > (uint64_t)INT64_MAX ||
	    m->u.append.seq > (uint64_t)INT64_MAX)
		return fail(errmsg, "binary append-entries: term, prev-log-index, prev-log-term, "
				    "leader-commit and seq must be below 2^63");
	n = get_u32le(p + 48);
	idlen = get_u32le(p + 52);
	if (idlen == 0 || idlen >= RAFT_ID_SIZE || idlen > len - BIN_HEADER_SIZE ||
	    !kvd_id_valid((const char *)p + BIN_HEADER_SIZE, idlen))
		return fail(errmsg, "binary append-entries: leader-id must be host:port");
	memcpy(m->from, p + BIN_HEADER_SIZE, idlen);
	m->from[idlen] = '\0';
	r = p + BIN_HEADER_SIZE + idlen;
	left = len - BIN_HEADER_SIZE - idlen;
	if (n > left / BIN_REC_HEADER)
		return fail(errmsg, "binary append-entries: truncated entries");
	if (n > 0) {
		d->entries = calloc(n, sizeof(*d->entries));
		if (d->entries == NULL)
			return KVD_ENOMEM;
		d->n = n;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct raft_entry *e = &d->entries[i];
		uint32_t elen, type;

		if (left < BIN_REC_HEADER) {
			fail(errmsg, "binary append-entries: truncated entries");
			goto err;
		}
		elen = get_u32le(r);
		if (elen > BIN_MAX_ENTRY_SIZE || elen > left - BIN_REC_HEADER) {
			fail(errmsg, "binary append-entries: truncated entries");
			goto err;
		}
		if (get_u32le(r + 4) != record_crc(r, elen)) {
			fail(errmsg, "binary append-entries: entry checksum mismatch");
			goto err;
		}
		e->index = get_u64le(r + 8);
		e->term = get_u64le(r + 16);
		type = get_u32le(r + 24);
		if (e->index > (uint64_t)INT64_MAX || e->term > (uint64_t)INT64_MAX) {
			fail(errmsg,
			     "binary append-entries: entry index and term must be below 2^63");
			goto err;
		}
		if (e->index != m->u.append.prev_log_index + 1 + i) {
			fail(errmsg, "entries are not contiguous after prev-log-index");
			goto err;
		}
		if (get_u32le(r + 28) != 0) {
			fail(errmsg, "binary append-entries: batch tag must be 0");
			goto err;
		}
		e->data = elen > 0 ? r + BIN_REC_HEADER : NULL;
		e->len = elen;
		if (type == RAFT_ENTRY_COMMAND && kvd_utf8_valid(e->data, elen)) {
			e->type = RAFT_ENTRY_COMMAND;
		} else if (type == RAFT_ENTRY_NOOP && elen == 0) {
			e->type = RAFT_ENTRY_NOOP;
		} else if (type == RAFT_ENTRY_CONFIG && config_acceptable(e->data, elen)) {
			e->type = RAFT_ENTRY_CONFIG;
		} else {
			fail(errmsg,
			     "binary append-entries: entry of unknown type, a command that is "
			     "not UTF-8, a no-op with data or a malformed configuration");
			goto err;
		}
		r += BIN_REC_HEADER + elen;
		left -= BIN_REC_HEADER + elen;
	}
	if (left != 0) {
		fail(errmsg, "binary append-entries: trailing bytes after the entries");
		goto err;
	}
	m->u.append.entries = d->entries;
	m->u.append.n_entries = d->n;
	return 0;
err:
	kvd_rpc_decoded_free(d);
	return rv;
}
