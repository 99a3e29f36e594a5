/*
 * test_textutil.c: percent decoding, UTF-8 validation and query lookup
 * (api/textutil.c), the checks behind API.md §2's "invalid key" and "value
 * must be UTF-8 text".
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "api/config.h"
#include "api/textutil.h"
#include "kvd/errors.h"

START_TEST(test_kvd_percent_decode_decodes_escapes)
{
	char out[32];
	long n = kvd_percent_decode("a%20b%2Fc%41", 12, out);
	ck_assert_int_eq(n, 6);
	ck_assert(memcmp(out, "a b/cA", 6) == 0);
}
END_TEST

START_TEST(test_kvd_percent_decode_rejects_broken_escapes)
{
	char out[32];
	ck_assert_int_eq(kvd_percent_decode("abc%", 4, out), -1);
	ck_assert_int_eq(kvd_percent_decode("abc%4", 5, out), -1);
	ck_assert_int_eq(kvd_percent_decode("%zz", 3, out), -1);
}
END_TEST

START_TEST(test_kvd_utf8_valid_accepts_text)
{
	const char *ok[] = {"plain", "tab\tand\nnewline", "caf\xc3\xa9", "\xf0\x9f\x98\x80",
			    "\xe2\x82\xac"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		ck_assert(kvd_utf8_valid(ok[i], strlen(ok[i])));
}
END_TEST

START_TEST(test_kvd_utf8_valid_rejects_bad_sequences)
{
	const char *bad[] = {"\xff",
			     "\xc3",
			     "\xc0\xaf" /* overlong */,
			     "\xed\xa0\x80" /* surrogate */,
			     "\xf4\x90\x80\x80" /* > U+10FFFF */,
			     "\xe2\x82",
			     "a\x80"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!kvd_utf8_valid(bad[i], strlen(bad[i])), "case %zu", i);
}
END_TEST

START_TEST(test_kvd_query_get_finds_parameters)
{
	const char *q = "from=5&limit=&consistency=stale&flag";
	const char *v;
	size_t vl;

	ck_assert(kvd_query_get(q, strlen(q), "from", &v, &vl));
	ck_assert_uint_eq(vl, 1);
	ck_assert(kvd_query_get(q, strlen(q), "limit", &v, &vl));
	ck_assert_uint_eq(vl, 0);
	ck_assert(kvd_query_get(q, strlen(q), "consistency", &v, &vl));
	ck_assert(vl == 5 && memcmp(v, "stale", 5) == 0);
	ck_assert(kvd_query_get(q, strlen(q), "flag", &v, &vl));
	ck_assert(!kvd_query_get(q, strlen(q), "fro", &v, &vl));
}
END_TEST

START_TEST(test_kvd_config_split_id_forms)
{
	char host[64];
	uint16_t port;

	ck_assert_int_eq(kvd_config_split_id(":8001", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_uint_eq(port, 8001);
	ck_assert_int_eq(kvd_config_split_id("10.0.42.101:8080", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "10.0.42.101");
	ck_assert_int_eq(kvd_config_split_id("[::1]:9000", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_int_eq(kvd_config_split_id("nohost", host, sizeof(host), &port), KVD_EINVAL);
	ck_assert_int_eq(kvd_config_split_id(":0", host, sizeof(host), &port), KVD_EINVAL);
	ck_assert_int_eq(kvd_config_split_id(":65536", host, sizeof(host), &port), KVD_EINVAL);
	ck_assert_int_eq(kvd_config_split_id("a b:1", host, sizeof(host), &port), KVD_EINVAL);
}
END_TEST

static int parse(const char *const *args, int n, struct kvd_config *c, char *errmsg)
{
	char *argv[16];
	argv[0] = "kvd";
	for (int i = 0; i < n; i++)
		argv[i + 1] = (char *)args[i];
	return kvd_config_parse(n + 1, argv, c, errmsg);
}

START_TEST(test_kvd_config_parse_finds_self_among_peers)
{
	struct kvd_config c;
	char errmsg[KVD_ERRMSG_SIZE];
	const char *args[] = {"--port", "8002", "--peers", ":8001,:8002,:8003"};

	unsetenv("ADDR");
	unsetenv("PEERS");
	unsetenv("DATA_DIR");
	ck_assert_int_eq(parse(args, 4, &c, errmsg), 0);
	ck_assert_str_eq(c.id, ":8002");
	ck_assert_uint_eq(c.n_members, 3);
	ck_assert(c.peers_given);
	ck_assert(!c.id_from_env);
	ck_assert_str_eq(c.listen_host, "127.0.0.1");
	ck_assert_str_eq(c.data_dir, "./data");
}
END_TEST

START_TEST(test_kvd_config_parse_env_convention)
{
	struct kvd_config c;
	char errmsg[KVD_ERRMSG_SIZE];
	const char *args[] = {"--working-dir=/tmp/flag-wins"};

	setenv("ADDR", "10.0.42.101:8080", 1);
	setenv("PEERS", "10.0.42.102:8080,10.0.42.103:8080", 1);
	setenv("DATA_DIR", "/tmp/from-env", 1);
	ck_assert_int_eq(parse(args, 1, &c, errmsg), 0);
	ck_assert_str_eq(c.id, "10.0.42.101:8080");
	ck_assert(c.id_from_env);
	ck_assert_uint_eq(c.port, 8080);
	ck_assert_uint_eq(c.n_members, 3);
	ck_assert_str_eq(c.listen_host, "10.0.42.101");
	ck_assert_str_eq(c.data_dir, "/tmp/flag-wins");
	unsetenv("ADDR");
	unsetenv("PEERS");
	unsetenv("DATA_DIR");
}
END_TEST

START_TEST(test_kvd_config_parse_rejects_bad_input_with_one_line)
{
	static const char *const cases[][2] = {
	    {"--bogus", "1"},
	    {"--port", "abc"},
	    {"--election-timeout-ms", "5"},
	    {"--election-timeout-ms", "900-100"},
	    {"--max-value-bytes", "-1"},
	    {"--log-level", "loud"},
	    {"--peers", ":9001,:9002"}, /* no entry for port 8080 */
	};
	struct kvd_config c;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char errmsg[KVD_ERRMSG_SIZE] = "";
		ck_assert_int_eq(parse(cases[i], 2, &c, errmsg), KVD_EINVAL);
		ck_assert(errmsg[0] != '\0');
		ck_assert_ptr_null(strchr(errmsg, '\n'));
	}
}
END_TEST

START_TEST(test_kvd_id_valid_accepts_host_port_ids)
{
	static const char *const ok[] = {":8001",      "127.0.0.1:8001",   "node-3.example:65535",
					 "[::1]:9000", "10.0.42.101:8080", "a:1"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		ck_assert_msg(kvd_id_valid(ok[i], strlen(ok[i])), "%s", ok[i]);
}
END_TEST

START_TEST(test_kvd_id_valid_rejects_hostile_ids)
{
	static const char *const bad[] = {
	    "",
	    "a\r\nX-Inj:1\r\nb:1",
	    "a\n:1",
	    "a\r:1",
	    "a b:1",
	    "a%41:1",
	    "a&b:1",
	    "a+b:1",
	    "a\t:1",
	    "a\x7f:1",
	    "caf\xc3\xa9:1",
	    "nohost",
	    "host:",
	    "host:0",
	    "host:65536",
	    "host:80x",
	    "host:-1",
	    ":999999999",
	    "host:12:ab",
	};
	char nul[] = "a\0b:1";
	char longid[200];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!kvd_id_valid(bad[i], strlen(bad[i])), "accepted '%s'", bad[i]);
	ck_assert(!kvd_id_valid(nul, sizeof(nul) - 1)); /* NUL inside */
	memset(longid, 'a', sizeof(longid));
	memcpy(longid + 150, ":8001", 6);
	ck_assert(!kvd_id_valid(longid, strlen(longid))); /* 155 bytes: above RAFT_ID_SIZE */
}
END_TEST

START_TEST(test_kvd_config_parse_rejects_hostile_ids)
{
	static const char *const cases[][2] = {
	    {"--addr", "a\r\nb:8080"}, {"--addr", "a%0d:8080"}, {"--peers", ":8080,a&b:1"},
	    {"--join", "a+b:1"},       {"--join", "a\nb:1"},
	};
	struct kvd_config c;

	unsetenv("ADDR");
	unsetenv("PEERS");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char errmsg[KVD_ERRMSG_SIZE] = "";
		ck_assert_msg(parse(cases[i], 2, &c, errmsg) == KVD_EINVAL, "accepted %s %s",
			      cases[i][0], cases[i][1]);
		/* One line on stderr: the echoed id's CR/LF do not get through. */
		ck_assert_msg(errmsg[0] != '\0' && strpbrk(errmsg, "\r\n") == NULL, "'%s'", errmsg);
	}
	setenv("ADDR", "x%y:8080", 1);
	ck_assert_int_eq(parse(NULL, 0, &c, NULL), KVD_EINVAL);
	unsetenv("ADDR");
	setenv("PEERS", ":8081,bad\x01host:8082", 1);
	ck_assert_int_eq(parse(NULL, 0, &c, NULL), KVD_EINVAL);
	unsetenv("PEERS");
}
END_TEST

static Suite *textutil_suite(void)
{
	Suite *s = suite_create("textutil");
	TCase *tc = tcase_create("text");

	tcase_add_test(tc, test_kvd_percent_decode_decodes_escapes);
	tcase_add_test(tc, test_kvd_percent_decode_rejects_broken_escapes);
	tcase_add_test(tc, test_kvd_utf8_valid_accepts_text);
	tcase_add_test(tc, test_kvd_utf8_valid_rejects_bad_sequences);
	tcase_add_test(tc, test_kvd_query_get_finds_parameters);
	tcase_add_test(tc, test_kvd_config_split_id_forms);
	tcase_add_test(tc, test_kvd_config_parse_finds_self_among_peers);
	tcase_add_test(tc, test_kvd_config_parse_env_convention);
	tcase_add_test(tc, test_kvd_config_parse_rejects_bad_input_with_one_line);
	tcase_add_test(tc, test_kvd_id_valid_accepts_host_port_ids);
	tcase_add_test(tc, test_kvd_id_valid_rejects_hostile_ids);
	tcase_add_test(tc, test_kvd_config_parse_rejects_hostile_ids);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(textutil_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
