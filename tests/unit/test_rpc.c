/*
 * test_rpc.c: the Raft RPC codec (api/rpc.c) against API.md §5: every message
 * survives encode -> decode, the wire names are the public ones, entries
 * travel as text commands, and malformed bodies are refused, never trusted.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/rpc.h"
#include "raft/crc32c.h"
#include "kvd/errors.h"

static struct raft_message message(enum raft_msg_type type)
{
	struct raft_message m;
	memset(&m, 0, sizeof(m));
	m.type = type;
	snprintf(m.from, sizeof(m.from), ":8001");
	snprintf(m.to, sizeof(m.to), ":8002");
	m.term = 7;
	return m;
}

START_TEST(test_kvd_rpc_encode_request_vote_uses_public_names)
{
	struct raft_message m = message(RAFT_MSG_REQUEST_VOTE), d;
	struct kvd_rpc_decoded dec;
	char *body;
	size_t len;
	json_t *o;

	m.u.request_vote.last_log_index = 12;
	m.u.request_vote.last_log_term = 6;
	m.u.request_vote.pre_vote = true;
	ck_assert_int_eq(kvd_rpc_encode(&m, &body, &len, NULL, 0), 0);
	o = json_loadb(body, len, 0, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(o, "term")), 7);
	ck_assert_str_eq(json_string_value(json_object_get(o, "candidate-id")), ":8001");
	ck_assert_int_eq(json_integer_value(json_object_get(o, "last-log-index")), 12);
	ck_assert_int_eq(json_integer_value(json_object_get(o, "last-log-term")), 6);
	ck_assert(json_is_true(json_object_get(o, "pre-vote")));
	json_decref(o);
	ck_assert_int_eq(
	    kvd_rpc_decode_request("/raft/request-vote", "", 0, body, len, ":8002", &d, &dec, NULL),
	    0);
	ck_assert_int_eq(d.type, RAFT_MSG_REQUEST_VOTE);
	ck_assert_str_eq(d.from, ":8001");
	ck_assert_str_eq(d.to, ":8002");
	ck_assert_int_eq(d.term, 7);
	ck_assert_int_eq(d.u.request_vote.last_log_index, 12);
	ck_assert(d.u.request_vote.pre_vote);
	kvd_rpc_decoded_free(&dec);
	free(body);
}
END_TEST

START_TEST(test_kvd_rpc_encode_append_entries_round_trip)
{
	struct raft_message m = message(RAFT_MSG_APPEND), d;
	struct kvd_rpc_decoded dec;
	struct raft_config c;
	struct raft_entry es[3];
	void *conf;
	size_t conf_len;
	char *body;
	size_t len;
	const char *put = "PUT k a value\twith tabs and \xf0\x9f\x98\x80";

	memset(&c, 0, sizeof(c));
	raft_config_add(&c, ":8001", RAFT_VOTER);
	raft_config_add(&c, ":8004", RAFT_LEARNER);
	ck_assert_int_eq(raft_config_encode(&c, &conf, &conf_len), 0);
	es[0] = (struct raft_entry){5, 7, RAFT_ENTRY_NOOP, NULL, 0};
	es[1] = (struct raft_entry){6, 7, RAFT_ENTRY_COMMAND, put, strlen(put)};
	es[2] = (struct raft_entry){7, 7, RAFT_ENTRY_CONFIG, conf, conf_len};
	m.u.append.prev_log_index = 4;
	m.u.append.prev_log_term = 6;
	m.u.append.leader_commit = 3;
	m.u.append.seq = 99;
	m.u.append.entries = es;
	m.u.append.n_entries = 3;
	ck_assert_int_eq(kvd_rpc_encode(&m, &body, &len, NULL, 0), 0);
	ck_assert_ptr_nonnull(strstr(body, "\"command\":\"NOOP\""));
	ck_assert_ptr_nonnull(strstr(body, "\"leader-id\":\":8001\""));
	ck_assert_int_eq(kvd_rpc_decode_request("/raft/append-entries", "", 0, body, len, ":8002",
						&d, &dec, NULL),
			 0);
	ck_assert_int_eq(d.u.append.prev_log_index, 4);
	ck_assert_int_eq(d.u.append.prev_log_term, 6);
	ck_assert_int_eq(d.u.append.leader_commit, 3);
	ck_assert_int_eq(d.u.append.seq, 99);
	ck_assert_uint_eq(d.u.append.n_entries, 3);
	ck_assert_int_eq(d.u.append.entries[0].type, RAFT_ENTRY_NOOP);
	ck_assert_int_eq(d.u.append.entries[1].type, RAFT_ENTRY_COMMAND);
	ck_assert_uint_eq(d.u.append.entries[1].len, strlen(put));
	ck_assert(memcmp(d.u.append.entries[1].data, put, strlen(put)) == 0);
	ck_assert_int_eq(d.u.append.entries[2].type, RAFT_ENTRY_CONFIG);
	{
		struct raft_config back;
		ck_assert_int_eq(raft_config_decode(d.u.append.entries[2].data,
						    d.u.append.entries[2].len, &back),
				 0);
		ck_assert(raft_config_is_voter(&back, ":8001"));
		ck_assert_ptr_nonnull(raft_config_get(&back, ":8004"));
		ck_assert(!raft_config_is_voter(&back, ":8004"));
	}
	kvd_rpc_decoded_free(&dec);
	free(body);
	free(conf);
}
END_TEST

START_TEST(test_kvd_rpc_decode_request_rejects_gaps_in_entries)
{
	struct raft_message d;
	struct kvd_rpc_decoded dec;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	const char *body =
	    "{\"term\":1,\"leader-id\":\":1\",\"prev-log-index\":4,\"prev-log-term\":1,"
	    "\"leader-commit\":0,\"entries\":[{\"index\":6,\"term\":1,\"command\":\"NOOP\"}]}";

	ck_assert_int_eq(kvd_rpc_decode_request("/raft/append-entries", "", 0, body, strlen(body),
						":2", &d, &dec, errmsg),
			 KVD_EINVAL);
	ck_assert_ptr_nonnull(strstr(errmsg, "contiguous"));
}
END_TEST

START_TEST(test_kvd_rpc_decode_request_rejects_malformed_bodies)
{
	static const char *const bodies[] = {
	    "",
	    "not json",
	    "[]",
	    "{\"term\":-1,\"candidate-id\":\":1\",\"last-log-index\":0,\"last-log-term\":0}",
	    "{\"term\":1,\"last-log-index\":0,\"last-log-term\":0}",
	    "{\"term\":\"1\",\"candidate-id\":\":1\",\"last-log-index\":0,\"last-log-term\":0}",
	    "{\"term\":1,\"candidate-id\":\"\",\"last-log-index\":0,\"last-log-term\":0}",
	};
	struct raft_message d;
	struct kvd_rpc_decoded dec;

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
		ck_assert_int_eq(kvd_rpc_decode_request("/raft/request-vote", "", 0, bodies[i],
							strlen(bodies[i]), ":2", &d, &dec, NULL),
				 KVD_EINVAL);
	ck_assert_int_eq(kvd_rpc_decode_request("/raft/unknown", "", 0, "{\"term\":1}", 10, ":2",
						&d, &dec, NULL),
			 KVD_EINVAL);
}
END_TEST

START_TEST(test_kvd_rpc_snapshot_chunk_travels_in_query_and_body)
{
	struct raft_message m = message(RAFT_MSG_SNAPSHOT), d;
	struct kvd_rpc_decoded dec;
	char query[512];
	char *body = NULL;
	size_t len = 0;

	m.u.snapshot.last_index = 100;
	m.u.snapshot.last_term = 5;
	m.u.snapshot.offset = 4096;
	m.u.snapshot.done = true;
	ck_assert_int_eq(kvd_rpc_encode(&m, &body, &len, query, sizeof(query)), 0);
	ck_assert_ptr_null(body);
	ck_assert_int_eq(kvd_rpc_decode_request("/raft/install-snapshot", query, strlen(query),
						"bytes", 5, ":8002", &d, &dec, NULL),
			 0);
	ck_assert_int_eq(d.term, 7);
	ck_assert_str_eq(d.from, ":8001");
	ck_assert_int_eq(d.u.snapshot.last_index, 100);
	ck_assert_int_eq(d.u.snapshot.last_term, 5);
	ck_assert_int_eq(d.u.snapshot.offset, 4096);
	ck_assert(d.u.snapshot.done);
	ck_assert_uint_eq(d.u.snapshot.len, 5);
	ck_assert_int_eq(kvd_rpc_decode_request("/raft/install-snapshot", "term=1", 6, "", 0, ":2",
						&d, &dec, NULL),
			 KVD_EINVAL);
}
END_TEST

START_TEST(test_kvd_rpc_decode_result_of_each_request)
{
	struct raft_message d;
	const char *vote = "{\"term\":9,\"vote-granted\":true}";
	const char *append = "{\"term\":9,\"success\":false,\"last-log-index\":3}";
	const char *snap = "{\"term\":9,\"success\":true}";

	ck_assert_int_eq(
	    kvd_rpc_decode_result(RAFT_MSG_REQUEST_VOTE, vote, strlen(vote), ":2", ":1", &d, NULL),
	    0);
	ck_assert_int_eq(d.type, RAFT_MSG_REQUEST_VOTE_RESULT);
	ck_assert(d.u.request_vote_result.granted);
	ck_assert_str_eq(d.from, ":2");
	ck_assert_int_eq(
	    kvd_rpc_decode_result(RAFT_MSG_APPEND, append, strlen(append), ":2", ":1", &d, NULL),
	    0);
	ck_assert(!d.u.append_result.success);
	ck_assert_int_eq(d.u.append_result.last_log_index, 3);
	ck_assert_int_eq(
	    kvd_rpc_decode_result(RAFT_MSG_SNAPSHOT, snap, strlen(snap), ":2", ":1", &d, NULL), 0);
	ck_assert(d.u.snapshot_result.success);
	ck_assert_int_eq(
	    kvd_rpc_decode_result(RAFT_MSG_APPEND, "{\"term\":9}", 10, ":2", ":1", &d, NULL),
	    KVD_EINVAL);
}
END_TEST

/* Decodes path/query/body and returns the status; frees what was decoded. */
static int decode(const char *path, const char *query, const char *body)
{
	struct raft_message m;
	struct kvd_rpc_decoded dec;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv = kvd_rpc_decode_request(path, query, strlen(query), body, strlen(body), ":2", &m,
					&dec, errmsg);
	if (rv == 0)
		kvd_rpc_decoded_free(&dec);
	else
		ck_assert_msg(errmsg[0] != '\0' && strchr(errmsg, '\n') == NULL,
			      "no one-line reason for %s %s %s", path, query, body);
	return rv;
}

#define SNAP_PATH "/raft/install-snapshot"
#define SNAP_TAIL "&last-included-index=1&last-included-term=1&offset=0&done=false"

START_TEST(test_kvd_rpc_refuses_the_brick_request)
{
	/* The request that persisted term 2^64-1 and a leader id with CR/LF. */
	const char *q = "term=99999999999999999999&leader-id=a%0d%0aX-Inj:1%0d%0ab:1" SNAP_TAIL;
	ck_assert_int_eq(decode(SNAP_PATH, q, "x"), KVD_EINVAL);
	ck_assert_int_eq(decode(SNAP_PATH, "term=99999999999999999999&leader-id=:1" SNAP_TAIL, "x"),
			 KVD_EINVAL);
	ck_assert_int_eq(
	    decode(SNAP_PATH, "term=1&leader-id=a%0d%0aX-Inj:1%0d%0ab:1" SNAP_TAIL, "x"),
	    KVD_EINVAL);
}
END_TEST

START_TEST(test_kvd_rpc_query_numbers_are_below_2_63)
{
	static const char *const bad[] = {"9223372036854775808",
					  "18446744073709551615",
					  "18446744073709551616",
					  "-1",
					  "+1",
					  " 1",
					  "1 ",
					  "0x10",
					  ""};
	char q[512];

	for (int k = 0; k < 4; k++) {
		const char *vals[4] = {"1", "1", "1", "0"};
		vals[k] = "9223372036854775807";
		snprintf(q, sizeof(q),
			 "term=%s&leader-id=:1&last-included-index=%s&last-included-term=%s&"
			 "offset=%s&done=true",
			 vals[0], vals[1], vals[2], vals[3]);
		ck_assert_msg(decode(SNAP_PATH, q, "x") == 0, "refused %s", q);
		for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
			vals[k] = bad[b];
			snprintf(
			    q, sizeof(q),
			    "term=%s&leader-id=:1&last-included-index=%s&last-included-term=%s&"
			    "offset=%s&done=true",
			    vals[0], vals[1], vals[2], vals[3]);
			ck_assert_msg(decode(SNAP_PATH, q, "x") == KVD_EINVAL, "accepted %s", q);
		}
	}
	ck_assert_int_eq(decode(SNAP_PATH,
				"term=1&leader-id=:1&last-included-index=1&last-included-term=1&"
				"offset=0&done=maybe",
				"x"),
			 KVD_EINVAL);
}
END_TEST

START_TEST(test_kvd_rpc_query_ids_are_validated)
{
	static const char *const bad[] = {"a%0d:1",  "a%0a:1",	"a%00:1",  "a%20b:1", "a b:1",
					  "a%25b:1", "a%26b:1", "a%2bb:1", "a+b:1",   "nohost",
					  "a%zz:1",  "",	"h:0"};
	char q[512];

	for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
		snprintf(q, sizeof(q), "term=1&leader-id=%s" SNAP_TAIL, bad[b]);
		ck_assert_msg(decode(SNAP_PATH, q, "x") == KVD_EINVAL, "accepted %s", q);
	}
	ck_assert_int_eq(decode(SNAP_PATH, "term=1&leader-id=127.0.0.1%3A8001" SNAP_TAIL, "x"), 0);
}
END_TEST

START_TEST(test_kvd_rpc_snapshot_leader_id_round_trips)
{
	static const char *const ids[] = {"[::1]:9000", "host_a.example~x:8001", "[fe80::1]:1",
					  "a=b;c/d?e#f@g!h$i'j(k)l*m,n:2"};
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		struct raft_message m = message(RAFT_MSG_SNAPSHOT), d;
		struct kvd_rpc_decoded dec;
		char query[512];
		char *body = NULL;
		size_t len = 0;

		snprintf(m.from, sizeof(m.from), "%s", ids[i]);
		ck_assert_int_eq(kvd_rpc_encode(&m, &body, &len, query, sizeof(query)), 0);
		{
			const char *v = strstr(query, "leader-id=") + 10;
			size_t vlen = strcspn(v, "&");
			ck_assert_uint_eq(
			    strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				      "0123456789-._~:%"),
			    vlen); /* only unreserved bytes and escapes */
		}
		ck_assert_int_eq(kvd_rpc_decode_request("/raft/install-snapshot", query,
							strlen(query), "b", 1, ":2", &d, &dec,
							NULL),
				 0);
		ck_assert_str_eq(d.from, ids[i]);
	}
}
END_TEST

START_TEST(test_kvd_rpc_json_ids_are_validated)
{
	static const char *const bad[] = {"a\\r\\nX-Inj: 1\\r\\nb:1",
					  "a\\n:1",
					  "a\\u0000b:1",
					  "a b:1",
					  "a%0d:1",
					  "a&b:1",
					  "a+b:1",
					  "nohost",
					  "h:0",
					  "a\\u007f:1"};
	char body[1024];

	for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
		snprintf(body, sizeof(body),
			 "{\"term\":1,\"candidate-id\":\"%s\",\"last-log-index\":0,"
			 "\"last-log-term\":0}",
			 bad[b]);
		ck_assert_msg(decode("/raft/request-vote", "", body) == KVD_EINVAL, "%s", body);
		snprintf(body, sizeof(body),
			 "{\"term\":1,\"leader-id\":\"%s\",\"prev-log-index\":0,"
			 "\"prev-log-term\":0,\"leader-commit\":0,\"entries\":[]}",
			 bad[b]);
		ck_assert_msg(decode("/raft/append-entries", "", body) == KVD_EINVAL, "%s", body);
		snprintf(body, sizeof(body), "{\"term\":1,\"leader-id\":\"%s\"}", bad[b]);
		ck_assert_msg(decode("/raft/timeout-now", "", body) == KVD_EINVAL, "%s", body);
		snprintf(body, sizeof(body),
			 "{\"term\":1,\"leader-id\":\":1\",\"prev-log-index\":0,"
			 "\"prev-log-term\":0,\"leader-commit\":0,\"entries\":[{\"index\":1,"
			 "\"term\":1,\"command\":\"CONFIG {\\\"voters\\\":[\\\"%s\\\"]}\"}]}",
			 bad[b]);
		ck_assert_msg(decode("/raft/append-entries", "", body) == KVD_EINVAL, "%s", body);
	}
	ck_assert_int_eq(
	    decode("/raft/append-entries", "",
		   "{\"term\":1,\"leader-id\":\":1\",\"prev-log-index\":0,"
		   "\"prev-log-term\":0,\"leader-commit\":0,\"entries\":[{\"index\":1,"
		   "\"term\":1,\"command\":\"CONFIG {\\\"voters\\\":[\\\":1\\\"]}\"}]}"),
	    0);
}
END_TEST

START_TEST(test_kvd_rpc_json_numbers_are_below_2_63)
{
	static const char *const bad[] = {"9223372036854775808",
					  "18446744073709551615",
					  "99999999999999999999",
					  "-1",
					  "1.5",
					  "1e3",
					  "\"1\"",
					  "null"};
	char body[512];

	for (int f = 0; f < 3; f++)
		for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
			const char *v[3] = {"1", "0", "0"};
			v[f] = bad[b];
			snprintf(body, sizeof(body),
				 "{\"term\":%s,\"candidate-id\":\":1\",\"last-log-index\":%s,"
				 "\"last-log-term\":%s}",
				 v[0], v[1], v[2]);
			ck_assert_msg(decode("/raft/request-vote", "", body) == KVD_EINVAL, "%s",
				      body);
		}
	ck_assert_int_eq(decode("/raft/request-vote", "",
				"{\"term\":9223372036854775807,\"candidate-id\":\":1\","
				"\"last-log-index\":0,\"last-log-term\":0}"),
			 0);
	ck_assert_int_eq(decode("/raft/append-entries", "",
				"{\"term\":1,\"leader-id\":\":1\",\"prev-log-index\":"
				"18446744073709551615,\"prev-log-term\":0,\"leader-commit\":0}"),
			 KVD_EINVAL);
	ck_assert_int_eq(decode("/raft/append-entries", "",
				"{\"term\":1,\"leader-id\":\":1\",\"prev-log-index\":0,"
				"\"prev-log-term\":0,\"leader-commit\":0,\"entries\":[{\"index\":1,"
				"\"term\":18446744073709551615,\"command\":\"NOOP\"}]}"),
			 KVD_EINVAL);
}
END_TEST

START_TEST(test_kvd_rpc_writes_numbers_unsigned)
{
	struct raft_message m = message(RAFT_MSG_APPEND_RESULT);
	struct raft_entry e = {.index = UINT64_MAX, .term = (1ULL << 63), .type = RAFT_ENTRY_NOOP};
	char *body;
	size_t len;
	json_t *o;
	char *s;

	m.term = UINT64_MAX;
	m.u.append_result.last_log_index = (1ULL << 63) + 5;
	ck_assert_int_eq(kvd_rpc_encode(&m, &body, &len, NULL, 0), 0);
	ck_assert_ptr_nonnull(strstr(body, "\"term\":18446744073709551615"));
	ck_assert_ptr_nonnull(strstr(body, "\"last-log-index\":9223372036854775813"));
	ck_assert_ptr_null(strstr(body, ":-"));
	free(body);
	o = kvd_rpc_entry_json(&e);
	s = kvd_json_dumps(o);
	ck_assert_str_eq(s, "{\"index\":18446744073709551615,\"term\":9223372036854775808,"
			    "\"command\":\"NOOP\"}");
	free(s);
	json_decref(o);
	/* Strings stay strings, whatever they hold (fuzz_rpc found an earlier
	 * marker scheme writing "command":"\u0001u64:7" as the number 7). */
	o = json_pack("{s:s, s:s, s:o, s:s}", "a", "\x01u64:7", "b", "x\"-5\\\"-6", "c",
		      kvd_json_u64(UINT64_MAX), "d", "-7");
	s = kvd_json_dumps(o);
	ck_assert_str_eq(s, "{\"a\":\"\\u0001u64:7\",\"b\":\"x\\\"-5\\\\\\\"-6\","
			    "\"c\":18446744073709551615,\"d\":\"-7\"}");
	free(s);
	json_decref(o);
}
END_TEST

START_TEST(test_kvd_rpc_append_entries_bytes_match_jansson)
{
	struct raft_message m = message(RAFT_MSG_APPEND);
	struct raft_entry es[3];
	struct raft_config c;
	char cmd[160];
	void *conf;
	size_t conf_len, len, n = 0;
	char *body, *ref;
	json_t *o, *a;

	n += (size_t)snprintf(cmd, sizeof(cmd), "PUT k ");
	for (int ch = 1; ch < 0x80; ch++)
		cmd[n++] = (char)ch;
	memcpy(cmd + n, "caf\xc3\xa9 \xf0\x9f\x98\x80", 10);
	n += 10;
	memset(&c, 0, sizeof(c));
	raft_config_add(&c, ":8001", RAFT_VOTER);
	raft_config_add(&c, ":8002", RAFT_LEARNER);
	ck_assert_int_eq(raft_config_encode(&c, &conf, &conf_len), 0);
	es[0] = (struct raft_entry){.index = 4, .term = 2, .type = RAFT_ENTRY_NOOP};
	es[1] = (struct raft_entry){
	    .index = 5, .term = 3, .type = RAFT_ENTRY_COMMAND, .data = cmd, .len = n};
	es[2] = (struct raft_entry){
	    .index = 6, .term = 3, .type = RAFT_ENTRY_CONFIG, .data = conf, .len = conf_len};
	m.u.append.prev_log_index = 3;
	m.u.append.prev_log_term = 2;
	m.u.append.leader_commit = 3;
	m.u.append.seq = 11;
	m.u.append.entries = es;
	m.u.append.n_entries = 3;
	ck_assert_int_eq(kvd_rpc_encode(&m, &body, &len, NULL, 0), 0);

	/* The same object through jansson, keys in the same order. */
	o = json_object();
	json_object_set_new(o, "term", json_integer(7));
	json_object_set_new(o, "leader-id", json_string(":8001"));
	json_object_set_new(o, "prev-log-index", json_integer(3));
	json_object_set_new(o, "prev-log-term", json_integer(2));
	a = json_array();
	for (int i = 0; i < 3; i++)
		json_array_append_new(a, kvd_rpc_entry_json(&es[i]));
	json_object_set_new(o, "entries", a);
	json_object_set_new(o, "leader-commit", json_integer(3));
	json_object_set_new(o, "seq", json_integer(11));
	ref = json_dumps(o, JSON_COMPACT);
	ck_assert_str_eq(body, ref);
	ck_assert_uint_eq(len, strlen(ref));
	free(ref);
	json_decref(o);
	free(body);

	/* Not UTF-8: JSON cannot carry it; refused, not sent garbled. */
	es[1].data = "PUT k \xff";
	es[1].len = 7;
	ck_assert_int_eq(kvd_rpc_encode(&m, &body, &len, NULL, 0), KVD_EINVAL);
	free(conf);
}
END_TEST

/* ---- binary AppendEntries (docs/formats.md) ---------------------------- */

#define BIN_HDR 56 /* bytes of the fixed header */

static void *bin_conf;
static size_t bin_conf_len;
static struct raft_entry bin_es[3];
static const char bin_put[] = "PUT k v\n\"quoted\" \\ \x01\x1f and \xf0\x9f\x98\x80";

/* A binary append-entries from :8001 with prev 4/6, commit 3, seq 99 and
 * the entries 5 (no-op), 6 (command), 7 (configuration), all term 7. */
static struct raft_message bin_message(void)
{
	struct raft_message m = message(RAFT_MSG_APPEND);
	struct raft_config c;

	memset(&c, 0, sizeof(c));
	raft_config_add(&c, ":8001", RAFT_VOTER);
	raft_config_add(&c, ":8004", RAFT_LEARNER);
	free(bin_conf);
	ck_assert_int_eq(raft_config_encode(&c, &bin_conf, &bin_conf_len), 0);
	bin_es[0] = (struct raft_entry){5, 7, RAFT_ENTRY_NOOP, NULL, 0};
	bin_es[1] = (struct raft_entry){6, 7, RAFT_ENTRY_COMMAND, bin_put, strlen(bin_put)};
	bin_es[2] = (struct raft_entry){7, 7, RAFT_ENTRY_CONFIG, bin_conf, bin_conf_len};
	m.u.append.prev_log_index = 4;
	m.u.append.prev_log_term = 6;
	m.u.append.leader_commit = 3;
	m.u.append.seq = 99;
	m.u.append.entries = bin_es;
	m.u.append.n_entries = 3;
	return m;
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* Offset of record i in a body made by bin_message() (leader id ":8001"). */
static size_t rec_off(const unsigned char *b, unsigned i)
{
	size_t off = BIN_HDR + 5;
	for (unsigned k = 0; k < i; k++)
		off += 32 + (size_t)(b[off] | b[off + 1] << 8 | b[off + 2] << 16 |
				     (uint32_t)b[off + 3] << 24);
	return off;
}

/* Recomputes the checksum of the record at off (after a test changed it). */
static void rec_recrc(unsigned char *b, size_t off)
{
	uint32_t len =
	    (uint32_t)(b[off] | b[off + 1] << 8 | b[off + 2] << 16 | (uint32_t)b[off + 3] << 24);
	uint32_t crc = raft_crc32c(0, b + off, 4);
	put32(b + off + 4, raft_crc32c(crc, b + off + 8, 24 + (size_t)len));
}

static int bin_decode(const void *body, size_t len, char *errmsg)
{
	struct raft_message d;
	struct kvd_rpc_decoded dec;
	int rv = kvd_rpc_decode_append_binary(body, len, ":8002", &d, &dec, errmsg);
	if (rv == 0)
		kvd_rpc_decoded_free(&dec);
	return rv;
}

START_TEST(test_kvd_rpc_binary_append_round_trip)
{
	struct raft_message m = bin_message(), d;
	struct kvd_rpc_decoded dec;
	char *body;
	size_t len;
	const unsigned char *b;

	ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, NULL, &body, &len), 0);
	b = (const unsigned char *)body;
	ck_assert(kvd_rpc_body_binary(body, len));
	ck_assert(memcmp(body, "KVDA", 4) == 0);
	ck_assert_uint_eq(len, BIN_HDR + 5 + 3 * 32 + strlen(bin_put) + bin_conf_len);
	/* the command's bytes travel as they are, no escaping */
	ck_assert(memmem(body, len, bin_put, strlen(bin_put)) != NULL);
	/* records in the log's framing: length, crc, index, term, type, tag */
	ck_assert_uint_eq(b[rec_off(b, 1)], strlen(bin_put));
	ck_assert_uint_eq(b[rec_off(b, 1) + 8], 6);
	ck_assert_uint_eq(b[rec_off(b, 1) + 16], 7);
	ck_assert_uint_eq(b[rec_off(b, 1) + 24], RAFT_ENTRY_COMMAND);
	ck_assert_int_eq(kvd_rpc_decode_append_binary(body, len, ":8002", &d, &dec, NULL), 0);
	ck_assert_int_eq(d.type, RAFT_MSG_APPEND);
	ck_assert_str_eq(d.from, ":8001");
	ck_assert_str_eq(d.to, ":8002");
	ck_assert_int_eq(d.term, 7);
	ck_assert_int_eq(d.u.append.prev_log_index, 4);
	ck_assert_int_eq(d.u.append.prev_log_term, 6);
	ck_assert_int_eq(d.u.append.leader_commit, 3);
	ck_assert_int_eq(d.u.append.seq, 99);
	ck_assert_uint_eq(d.u.append.n_entries, 3);
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_int_eq(d.u.append.entries[i].index, bin_es[i].index);
		ck_assert_int_eq(d.u.append.entries[i].term, bin_es[i].term);
		ck_assert_int_eq(d.u.append.entries[i].type, bin_es[i].type);
		ck_assert_uint_eq(d.u.append.entries[i].len, bin_es[i].len);
		ck_assert(bin_es[i].len == 0 ||
			  memcmp(d.u.append.entries[i].data, bin_es[i].data, bin_es[i].len) == 0);
	}
	kvd_rpc_decoded_free(&dec);
	free(body);

	/* a heartbeat: no entries */
	m.u.append.n_entries = 0;
	m.u.append.prev_log_index = (uint64_t)INT64_MAX;
	ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, NULL, &body, &len), 0);
	ck_assert_uint_eq(len, BIN_HDR + 5);
	ck_assert_int_eq(kvd_rpc_decode_append_binary(body, len, ":8002", &d, &dec, NULL), 0);
	ck_assert_uint_eq(d.u.append.n_entries, 0);
	ck_assert_uint_eq(d.u.append.prev_log_index, (uint64_t)INT64_MAX);
	kvd_rpc_decoded_free(&dec);
	free(body);
}
END_TEST

START_TEST(test_kvd_rpc_binary_append_cache_shares_records)
{
	struct raft_message m = bin_message();
	struct kvd_rpc_cache cache = {0};
	char *a, *b, *c;
	size_t alen, blen, clen;

	ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, &cache, &a, &alen), 0);
	/* another follower, same batch: other header, records from the cache */
	m.u.append.seq = 100;
	m.u.append.leader_commit = 4;
	ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, &cache, &b, &blen), 0);
	ck_assert_uint_eq(cache.misses, 1);
	ck_assert_uint_eq(cache.hits, 1);
	ck_assert_uint_eq(alen, blen);
	ck_assert(memcmp(a + BIN_HDR, b + BIN_HDR, alen - BIN_HDR) == 0);
	ck_assert(memcmp(a, b, BIN_HDR) != 0);
	/* other entries (a new leader's term at the same indexes): re-encoded */
	bin_es[2].term = 8;
	ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, &cache, &c, &clen), 0);
	ck_assert_uint_eq(cache.misses, 2);
	ck_assert_int_eq(bin_decode(c, clen, NULL), 0);
	{
		struct raft_message d;
		struct kvd_rpc_decoded dec;
		ck_assert_int_eq(kvd_rpc_decode_append_binary(c, clen, ":8002", &d, &dec, NULL), 0);
		ck_assert_int_eq(d.u.append.entries[2].term, 8);
		kvd_rpc_decoded_free(&dec);
	}
	kvd_rpc_cache_free(&cache);
	free(a);
	free(b);
	free(c);
}
END_TEST

START_TEST(test_kvd_rpc_binary_append_encode_refuses_what_json_cannot_carry)
{
	struct raft_message m = bin_message();
	char *body = NULL;
	size_t len;

	bin_es[1].data = "PUT k \xff";
	bin_es[1].len = 7;
	ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, NULL, &body, &len), KVD_EINVAL);
	ck_assert_int_eq(kvd_rpc_encode(&m, &body, &len, NULL, 0), KVD_EINVAL);
	m = bin_message();
	m.type = RAFT_MSG_REQUEST_VOTE;
	ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, NULL, &body, &len), KVD_EINVAL);
}
END_TEST

/* Every prefix is refused as truncated, a byte more as trailing. */
START_TEST(test_kvd_rpc_binary_append_refuses_truncated_and_trailing)
{
	struct raft_message m = bin_message();
	char errmsg[KVD_ERRMSG_SIZE];
	char *body, *longer;
	size_t len;

	ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, NULL, &body, &len), 0);
	for (size_t n = 0; n < len; n++) {
		char *copy = malloc(n + 1); /* exact size: ASan sees any over-read */
		memcpy(copy, body, n);
		errmsg[0] = '\0';
		ck_assert_msg(bin_decode(copy, n, errmsg) == KVD_EINVAL, "prefix %zu accepted", n);
		ck_assert(errmsg[0] != '\0' && strchr(errmsg, '\n') == NULL);
		free(copy);
	}
	longer = malloc(len + 1);
	memcpy(longer, body, len);
	longer[len] = 0;
	ck_assert_int_eq(bin_decode(longer, len + 1, errmsg), KVD_EINVAL);
	ck_assert_ptr_nonnull(strstr(errmsg, "trailing"));
	/* one entry fewer announced than carried: trailing; one more: truncated */
	put32((unsigned char *)longer + 48, 2);
	ck_assert_int_eq(bin_decode(longer, len, errmsg), KVD_EINVAL);
	ck_assert_ptr_nonnull(strstr(errmsg, "trailing"));
	put32((unsigned char *)longer + 48, 4);
	ck_assert_int_eq(bin_decode(longer, len, errmsg), KVD_EINVAL);
	ck_assert_ptr_nonnull(strstr(errmsg, "truncated"));
	put32((unsigned char *)longer + 48, UINT32_MAX);
	ck_assert_int_eq(bin_decode(longer, len, errmsg), KVD_EINVAL);
	free(longer);
	free(body);
}
END_TEST

/* Each malformed field of header and records, one at a time. */
START_TEST(test_kvd_rpc_binary_append_refuses_every_bad_field)
{
	struct raft_message m = bin_message();
	char errmsg[KVD_ERRMSG_SIZE];
	char *body;
	unsigned char *b;
	size_t len;
	enum { N_CASES = 24 };

	ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, NULL, &body, &len), 0);
	b = malloc(len);
	for (int k = 0; k < N_CASES; k++) {
		size_t r0, r1, r2;
		memcpy(b, body, len);
		r0 = rec_off(b, 0);
		r1 = rec_off(b, 1);
		r2 = rec_off(b, 2);
		switch (k) {
		case 0: b[0] = 'X'; break;			 /* magic */
		case 1: put32(b + 4, 2); break;			 /* version */
		case 2: put64(b + 8, (uint64_t)1 << 63); break;	 /* term */
		case 3: put64(b + 16, (uint64_t)1 << 63); break; /* prev-log-index */
		case 4: put64(b + 24, UINT64_MAX); break;	 /* prev-log-term */
		case 5: put64(b + 32, (uint64_t)1 << 63); break; /* leader-commit */
		case 6: put64(b + 40, (uint64_t)1 << 63); break; /* seq */
		case 7: put32(b + 52, 0); break;		 /* empty leader id */
		case 8: put32(b + 52, 128); break;		 /* id too long */
		case 9: put32(b + 52, UINT32_MAX); break;	 /* id past the end */
		case 10: b[BIN_HDR + 1] = '\n'; break;		 /* id with a newline */
		case 11: b[BIN_HDR] = ' '; break;		 /* id with a space */
		case 12: b[r1 + 40] ^= 1; break;		 /* payload bit: crc */
		case 13: b[r1 + 4] ^= 1; break;			 /* the crc itself */
		case 14:
			put64(b + r1 + 8, 7);
			rec_recrc(b, r1);
			break; /* gap */
		case 15:
			put64(b + r0 + 8, 4);
			rec_recrc(b, r0);
			break; /* overlap */
		case 16:
			put64(b + r1 + 16, (uint64_t)1 << 63);
			rec_recrc(b, r1);
			break;
		case 17:
			put32(b + r1 + 24, 0);
			rec_recrc(b, r1);
			break; /* type 0 */
		case 18:
			put32(b + r1 + 24, 0x100);
			rec_recrc(b, r1);
			break; /* seal */
		case 19:
			put32(b + r1 + 28, 5);
			rec_recrc(b, r1);
			break; /* batch tag */
		case 20:
			b[r1 + 32 + 5] = (unsigned char)0xff;
			rec_recrc(b, r1);
			break; /* UTF-8 */
		case 21:
			b[r2 + 32] ^= 0x7f;
			rec_recrc(b, r2);
			break; /* config version */
		case 22:       /* a configuration whose id holds a newline */
			for (size_t i = r2 + 32; i < len; i++)
				if (b[i] == '8') {
					b[i] = '\n';
					break;
				}
			rec_recrc(b, r2);
			break;
		case 23:
			put32(b + r1, UINT32_MAX); /* length; checked before the crc */
			break;
		}
		errmsg[0] = '\0';
		ck_assert_msg(bin_decode(b, len, errmsg) == KVD_EINVAL, "case %d accepted", k);
		ck_assert_msg(errmsg[0] != '\0' && strchr(errmsg, '\n') == NULL,
			      "case %d: no one-line reason", k);
	}
	/* a no-op with data */
	{
		struct raft_entry es[1] = {{5, 7, RAFT_ENTRY_COMMAND, "NOOP", 4}};
		char *nb;
		size_t nlen;
		m.u.append.entries = es;
		m.u.append.n_entries = 1;
		ck_assert_int_eq(kvd_rpc_encode_append_binary(&m, NULL, &nb, &nlen), 0);
		put32((unsigned char *)nb + BIN_HDR + 5 + 24, RAFT_ENTRY_NOOP);
		rec_recrc((unsigned char *)nb, BIN_HDR + 5);
		ck_assert_int_eq(bin_decode(nb, nlen, errmsg), KVD_EINVAL);
		free(nb);
	}
	free(b);
	free(body);
}
END_TEST

START_TEST(test_kvd_rpc_content_binary)
{
	ck_assert(kvd_rpc_content_binary("application/x-kvd-raft", 22));
	ck_assert(kvd_rpc_content_binary("Application/X-KVD-Raft; v=1", 27));
	ck_assert(kvd_rpc_content_binary("application/x-kvd-raft  ", 24));
	ck_assert(!kvd_rpc_content_binary("application/x-kvd-raftx", 23));
	ck_assert(!kvd_rpc_content_binary("application/json", 16));
	ck_assert(!kvd_rpc_content_binary("application/x-kvd", 17));
	ck_assert(!kvd_rpc_content_binary(NULL, 0));
	ck_assert(!kvd_rpc_body_binary("{\"term\":1}", 10));
}
END_TEST

/* The hand-written append-entries result is the bytes jansson wrote. */
START_TEST(test_kvd_rpc_append_result_bytes_match_jansson)
{
	struct raft_message m = message(RAFT_MSG_APPEND_RESULT);
	struct raft_append_result *r = &m.u.append_result;
	char *body, *ref;
	size_t len;
	json_t *o;

	for (int k = 0; k < 2; k++) {
		m.term = k == 0 ? 7 : (uint64_t)INT64_MAX;
		r->success = k == 0;
		r->last_log_index = k == 0 ? 0 : (uint64_t)INT64_MAX;
		r->reject_index = 12;
		r->conflict_term = k == 0 ? 0 : 3;
		r->conflict_index = 9;
		r->seq = k == 0 ? 1 : (uint64_t)INT64_MAX;
		ck_assert_int_eq(kvd_rpc_encode(&m, &body, &len, NULL, 0), 0);
		o = json_object();
		json_object_set_new(o, "term", json_integer((json_int_t)m.term));
		json_object_set_new(o, "success", json_boolean(r->success));
		json_object_set_new(o, "last-log-index",
				    json_integer((json_int_t)r->last_log_index));
		json_object_set_new(o, "reject-index", json_integer(12));
		json_object_set_new(o, "conflict-term", json_integer((json_int_t)r->conflict_term));
		json_object_set_new(o, "conflict-index", json_integer(9));
		json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
		ref = json_dumps(o, JSON_COMPACT);
		ck_assert_str_eq(body, ref);
		ck_assert_uint_eq(len, strlen(ref));
		free(ref);
		json_decref(o);
		free(body);
	}
}
END_TEST

/* The decoder's fast path for that form accepts exactly what jansson does:
 * other spacing, key order or extra keys decode the same; a number jansson
 * refuses or that is out of range is refused. */
START_TEST(test_kvd_rpc_append_result_fast_path_agrees_with_jansson)
{
	static const struct {
		const char *body;
		int rv;
		uint64_t term, last, seq;
		bool success;
	} cases[] = {
	    {"{\"term\":7,\"success\":true,\"last-log-index\":5,\"reject-index\":0,"
	     "\"conflict-term\":0,\"conflict-index\":0,\"seq\":3}",
	     0, 7, 5, 3, true},
	    {"{\"term\":9223372036854775807,\"success\":false,\"last-log-index\":"
	     "9223372036854775807,\"reject-index\":0,\"conflict-term\":0,\"conflict-index\":0,"
	     "\"seq\":9223372036854775807}",
	     0, (uint64_t)INT64_MAX, (uint64_t)INT64_MAX, (uint64_t)INT64_MAX, false},
	    {"{ \"term\": 7, \"success\": true, \"last-log-index\": 5, \"seq\": 3 }", 0, 7, 5, 3,
	     true},
	    {"{\"success\":true,\"term\":7,\"last-log-index\":5,\"seq\":3,\"x\":1}", 0, 7, 5, 3,
	     true},
	    {"{\"term\":7,\"success\":true,\"last-log-index\":5,\"reject-index\":0,"
	     "\"conflict-term\":0,\"conflict-index\":0,\"seq\":3}\n",
	     0, 7, 5, 3, true},
	    {"{\"term\":9223372036854775808,\"success\":true,\"last-log-index\":5,"
	     "\"reject-index\":0,\"conflict-term\":0,\"conflict-index\":0,\"seq\":3}",
	     KVD_EINVAL, 0, 0, 0, false},
	    {"{\"term\":7,\"success\":true,\"last-log-index\":5,\"reject-index\":0,"
	     "\"conflict-term\":0,\"conflict-index\":0,\"seq\":99999999999999999999}",
	     KVD_EINVAL, 0, 0, 0, false},
	    {"{\"term\":07,\"success\":true,\"last-log-index\":5,\"reject-index\":0,"
	     "\"conflict-term\":0,\"conflict-index\":0,\"seq\":3}",
	     KVD_EINVAL, 0, 0, 0, false},
	    {"{\"term\":-1,\"success\":true,\"last-log-index\":5,\"reject-index\":0,"
	     "\"conflict-term\":0,\"conflict-index\":0,\"seq\":3}",
	     KVD_EINVAL, 0, 0, 0, false},
	    {"{\"term\":7,\"success\":1,\"last-log-index\":5,\"reject-index\":0,"
	     "\"conflict-term\":0,\"conflict-index\":0,\"seq\":3}",
	     KVD_EINVAL, 0, 0, 0, false},
	    {"{\"term\":7,\"success\":true,\"last-log-index\":5,\"reject-index\":0,"
	     "\"conflict-term\":0,\"conflict-index\":0,\"seq\":3}}",
	     KVD_EINVAL, 0, 0, 0, false},
	    {"{\"term\":7,\"success\":true,\"last-log-index\":5,\"reject-index\":0,"
	     "\"conflict-term\":0,\"conflict-index\":0,\"seq\":3",
	     KVD_EINVAL, 0, 0, 0, false},
	};

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct raft_message d;
		int rv = kvd_rpc_decode_result(RAFT_MSG_APPEND, cases[i].body,
					       strlen(cases[i].body), ":8002", ":8001", &d, NULL);
		ck_assert_msg(rv == cases[i].rv, "case %u: %d", i, rv);
		if (rv != 0)
			continue;
		ck_assert_int_eq(d.type, RAFT_MSG_APPEND_RESULT);
		ck_assert_str_eq(d.from, ":8002");
		ck_assert_uint_eq(d.term, cases[i].term);
		ck_assert_uint_eq(d.u.append_result.last_log_index, cases[i].last);
		ck_assert_uint_eq(d.u.append_result.seq, cases[i].seq);
		ck_assert(d.u.append_result.success == cases[i].success);
	}
}
END_TEST

static Suite *rpc_suite(void)
{
	Suite *s = suite_create("rpc");
	TCase *tc = tcase_create("codec");

	tcase_add_test(tc, test_kvd_rpc_encode_request_vote_uses_public_names);
	tcase_add_test(tc, test_kvd_rpc_encode_append_entries_round_trip);
	tcase_add_test(tc, test_kvd_rpc_decode_request_rejects_gaps_in_entries);
	tcase_add_test(tc, test_kvd_rpc_decode_request_rejects_malformed_bodies);
	tcase_add_test(tc, test_kvd_rpc_snapshot_chunk_travels_in_query_and_body);
	tcase_add_test(tc, test_kvd_rpc_decode_result_of_each_request);
	tcase_add_test(tc, test_kvd_rpc_refuses_the_brick_request);
	tcase_add_test(tc, test_kvd_rpc_query_numbers_are_below_2_63);
	tcase_add_test(tc, test_kvd_rpc_query_ids_are_validated);
	tcase_add_test(tc, test_kvd_rpc_snapshot_leader_id_round_trips);
	tcase_add_test(tc, test_kvd_rpc_json_ids_are_validated);
	tcase_add_test(tc, test_kvd_rpc_json_numbers_are_below_2_63);
	tcase_add_test(tc, test_kvd_rpc_writes_numbers_unsigned);
	tcase_add_test(tc, test_kvd_rpc_append_entries_bytes_match_jansson);
	tcase_add_test(tc, test_kvd_rpc_binary_append_round_trip);
	tcase_add_test(tc, test_kvd_rpc_binary_append_cache_shares_records);
	tcase_add_test(tc, test_kvd_rpc_binary_append_encode_refuses_what_json_cannot_carry);
	tcase_add_test(tc, test_kvd_rpc_binary_append_refuses_truncated_and_trailing);
	tcase_add_test(tc, test_kvd_rpc_binary_append_refuses_every_bad_field);
	tcase_add_test(tc, test_kvd_rpc_content_binary);
	tcase_add_test(tc, test_kvd_rpc_append_result_bytes_match_jansson);
	tcase_add_test(tc, test_kvd_rpc_append_result_fast_path_agrees_with_jansson);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(rpc_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
