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
