/*
 * test_command.c: the text commands: encode/parse round trips (values with
 * spaces, tabs, newlines, NULs, emoji), key validation, rejection of
 * malformed bytes without crashing, the conditional forms (PUT-IF,
 * PUT-ABSENT, DELETE-IF) and the transaction body checks (messages, limits,
 * compact TXN text).
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/command.h"

static void roundtrip_put(const char *key, const char *value, size_t value_len)
{
	struct engine_command cmd;
	void *buf = NULL;
	size_t len = 0;

	ck_assert_int_eq(
	    engine_command_encode_put_alloc(key, strlen(key), value, value_len, &buf, &len), 0);
	ck_assert_uint_eq(len, ENGINE_COMMAND_PUT_SIZE(strlen(key), value_len));
	ck_assert_int_eq(engine_command_parse(buf, len, &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_PUT);
	ck_assert_uint_eq(cmd.key_len, strlen(key));
	ck_assert_mem_eq(cmd.key, key, cmd.key_len);
	ck_assert_uint_eq(cmd.value_len, value_len);
	if (value_len > 0) {
		ck_assert_mem_eq(cmd.value, value, value_len);
	}
	free(buf);
}

START_TEST(test_engine_command_parse_put_roundtrip)
{
	roundtrip_put("a", "b", 1);
	roundtrip_put("user:42.name_x-y", "hello world", 11);
	roundtrip_put("k", "  leading and trailing  ", 24);
	roundtrip_put("k", "tab\there\nnew line\r\n", 20);
	roundtrip_put("k", "emoji \xF0\x9F\x98\x80 caf\xC3\xA9", 16);
	roundtrip_put("k", "nul\0inside", 10);
	roundtrip_put("k", "PUT x y", 7);
	roundtrip_put("k", "", 0);
}
END_TEST

START_TEST(test_engine_command_parse_put_text_form)
{
	const char *text = "PUT greeting hello there\tworld\n";
	struct engine_command cmd;

	ck_assert_int_eq(engine_command_parse(text, strlen(text), &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_PUT);
	ck_assert_uint_eq(cmd.key_len, 8);
	ck_assert_mem_eq(cmd.key, "greeting", 8);
	ck_assert_uint_eq(cmd.value_len, strlen("hello there\tworld\n"));
	ck_assert_mem_eq(cmd.value, "hello there\tworld\n", cmd.value_len);
}
END_TEST

START_TEST(test_engine_command_parse_delete_and_clear)
{
	struct engine_command cmd;
	char buf[64];
	size_t len = 0;

	ck_assert_int_eq(engine_command_encode_delete("some.key", 8, buf, sizeof(buf), &len), 0);
	ck_assert_uint_eq(len, 15);
	ck_assert_mem_eq(buf, "DELETE some.key", 15);
	ck_assert_int_eq(engine_command_parse(buf, len, &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_DELETE);
	ck_assert_mem_eq(cmd.key, "some.key", 8);
	ck_assert_uint_eq(cmd.key_len, 8);

	ck_assert_int_eq(engine_command_encode_clear(buf, sizeof(buf), &len), 0);
	ck_assert_uint_eq(len, 5);
	ck_assert_int_eq(engine_command_parse(buf, len, &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_CLEAR);
}
END_TEST

START_TEST(test_engine_command_parse_malformed)
{
	static const char *bad[] = {
	    "",
	    "PUT",
	    "PUT ",
	    "PUT k",
	    "PUT  v",
	    "put k v",
	    "PUT k/x v",
	    "PUT k\tx v",
	    "DELETE",
	    "DELETE ",
	    "DELETE k ",
	    "DELETE k v",
	    "DELETE a/b",
	    "CLEAR ",
	    "CLEARX",
	    "clear",
	    "NOOP",
	    "GET k",
	    "PUTk v",
	    "DELETEk",
	    " PUT k v",
	    "PUT \xff v",
	    "DELETE \xc3\xa9",
	};
	struct engine_command cmd = {0};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(engine_command_parse(bad[i], strlen(bad[i]), &cmd) == KVD_EINVAL,
			      "accepted malformed command %zu: '%s'", i, bad[i]);
	}
	ck_assert_int_eq(engine_command_parse(NULL, 0, &cmd), KVD_EINVAL);
	ck_assert_int_eq(engine_command_parse("CLEAR\0", 6, &cmd), KVD_EINVAL);
}
END_TEST

START_TEST(test_engine_command_parse_random_bytes)
{
	/* Random input must never crash; whatever parses must re-encode to the
	 * same bytes (parse accepts only what encode produces). */
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	unsigned char buf[64];
	static const char *prefixes[] = {"PUT ", "DELETE ", "CLEAR", ""};

	for (int iter = 0; iter < 20000; iter++) {
		struct engine_command cmd;
		const char *pre = prefixes[iter % 4];
		size_t plen = strlen(pre);
		size_t len;

		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		len = plen + seed % (sizeof(buf) - plen);
		memcpy(buf, pre, plen);
		for (size_t i = plen; i < len; i++) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			/* Bias towards key characters and spaces. */
			buf[i] = (seed & 3) == 0   ? ' '
				 : (seed & 3) == 1 ? 'a'
						   : (unsigned char)(seed >> 8);
		}
		if (engine_command_parse(buf, len, &cmd) == 0) {
			char out[128];
			size_t olen = 0;
			int rv =
			    cmd.type == ENGINE_COMMAND_PUT
				? engine_command_encode_put(cmd.key, cmd.key_len, cmd.value,
							    cmd.value_len, out, sizeof(out), &olen)
			    : cmd.type == ENGINE_COMMAND_DELETE
				? engine_command_encode_delete(cmd.key, cmd.key_len, out,
							       sizeof(out), &olen)
				: engine_command_encode_clear(out, sizeof(out), &olen);
			ck_assert_int_eq(rv, 0);
			ck_assert_uint_eq(olen, len);
			ck_assert_mem_eq(out, buf, len);
		}
	}
}
END_TEST

START_TEST(test_engine_command_conditional_roundtrip)
{
	struct engine_command cmd;
	void *buf = NULL;
	size_t len = 0;

	ck_assert_int_eq(engine_command_encode_put_if_alloc(42, "k", 1, "v w", 3, &buf, &len), 0);
	ck_assert_uint_eq(len, 15);
	ck_assert_mem_eq(buf, "PUT-IF 42 k v w", 15);
	ck_assert_int_eq(engine_command_parse(buf, len, &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_PUT_IF);
	ck_assert_uint_eq(cmd.revision, 42);
	ck_assert_mem_eq(cmd.key, "k", 1);
	ck_assert_uint_eq(cmd.value_len, 3);
	ck_assert_mem_eq(cmd.value, "v w", 3);
	free(buf);

	ck_assert_int_eq(engine_command_encode_put_if_alloc(UINT64_MAX, "k", 1, "v", 1, &buf, &len),
			 0);
	ck_assert_int_eq(engine_command_parse(buf, len, &cmd), 0);
	ck_assert_uint_eq(cmd.revision, UINT64_MAX);
	free(buf);

	ck_assert_int_eq(engine_command_encode_put_absent_alloc("a.b", 3, "x", 1, &buf, &len), 0);
	ck_assert_mem_eq(buf, "PUT-ABSENT a.b x", 16);
	ck_assert_int_eq(engine_command_parse(buf, len, &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_PUT_ABSENT);
	ck_assert_uint_eq(cmd.revision, 0);
	free(buf);

	ck_assert_int_eq(engine_command_encode_delete_if_alloc(0, "k", 1, &buf, &len), 0);
	ck_assert_mem_eq(buf, "DELETE-IF 0 k", 13);
	ck_assert_int_eq(engine_command_parse(buf, len, &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_DELETE_IF);
	ck_assert_uint_eq(cmd.revision, 0);
	ck_assert_uint_eq(cmd.key_len, 1);
	free(buf);

	ck_assert_int_eq(engine_command_encode_put_if_alloc(1, "a b", 3, "v", 1, &buf, &len),
			 KVD_EINVAL);
	ck_assert_int_eq(engine_command_encode_delete_if_alloc(1, "", 0, &buf, &len), KVD_EINVAL);
}
END_TEST

START_TEST(test_engine_command_conditional_malformed)
{
	static const char *bad[] = {
	    "PUT-IF",
	    "PUT-IF ",
	    "PUT-IF 1",
	    "PUT-IF 1 k",
	    "PUT-IF x k v",
	    "PUT-IF -1 k v",
	    "PUT-IF +1 k v",
	    "PUT-IF 01 k v",
	    "PUT-IF 18446744073709551616 k v", /* 2^64 */
	    "PUT-IF 99999999999999999999 k v",
	    "PUT-IF  1 k v",
	    "PUT-IF 1  v",
	    "PUT-ABSENT",
	    "PUT-ABSENT k",
	    "PUT-ABSENT  v",
	    "DELETE-IF 1",
	    "DELETE-IF 1 ",
	    "DELETE-IF 1 k ",
	    "DELETE-IF k",
	    "DELETE-IF 1 a/b",
	    "TXN",
	    "TXN ",
	    "txn {}",
	};
	struct engine_command cmd = {0};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(engine_command_parse(bad[i], strlen(bad[i]), &cmd) == KVD_EINVAL,
			      "accepted malformed command %zu: '%s'", i, bad[i]);
	}
	/* "PUT-IF 1 k v" with the value "1 k v"? No: PUT-IF wins over PUT. */
	ck_assert_int_eq(engine_command_parse("PUT-IF 1 k v", 12, &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_PUT_IF);
	/* A PUT of key "x" whose value starts like a condition stays a PUT. */
	ck_assert_int_eq(engine_command_parse("PUT x PUT-IF 1 k v", 18, &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_PUT);
}
END_TEST

/* Checks that body is rejected with code and a message containing want. */
static void assert_txn_bad(const char *body, int code, const char *want)
{
	char msg[KVD_ERRMSG_SIZE] = "";
	int rv = engine_txn_validate(body, strlen(body), 16, msg);

	ck_assert_msg(rv == code, "body %s: got %d (%s), want %d", body, rv, msg, code);
	ck_assert_msg(strstr(msg, want) != NULL, "body %s: message '%s' lacks '%s'", body, msg,
		      want);
}

START_TEST(test_engine_txn_validate_messages)
{
	const char *ok =
	    "{\"compare\": [{\"key\": \"a\", \"revision\": 7}, {\"key\": \"b\", "
	    "\"revision\": 0}], \"success\": [{\"op\": \"put\", \"key\": \"a\", "
	    "\"value\": \"2\"}, {\"op\": \"delete\", \"key\": \"b\"}, {\"op\": \"get\", "
	    "\"key\": \"c\"}], \"failure\": [{\"op\": \"get\", \"key\": \"a\"}]}";
	char msg[KVD_ERRMSG_SIZE] = "";
	char *big;
	size_t n;

	ck_assert_int_eq(engine_txn_validate(ok, strlen(ok), 16, msg), 0);
	ck_assert_int_eq(engine_txn_validate("{}", 2, 0, msg), 0);
	assert_txn_bad("", KVD_EINVAL, "empty body");
	assert_txn_bad("{", KVD_EINVAL, "invalid JSON");
	assert_txn_bad("[]", KVD_EINVAL, "body must be a JSON object");
	assert_txn_bad("{\"compare\": [], \"extra\": 1}", KVD_EINVAL, "unknown field \"extra\"");
	assert_txn_bad("{\"compare\": {}}", KVD_EINVAL, "compare must be an array");
	assert_txn_bad("{\"compare\": [{\"key\": \"a b\", \"revision\": 1}]}", KVD_EINVAL,
		       "compare[0]: invalid key");
	assert_txn_bad("{\"compare\": [{\"key\": \"a\", \"revision\": -1}]}", KVD_EINVAL,
		       "compare[0]: revision must be an integer >= 0");
	assert_txn_bad("{\"compare\": [{\"key\": \"a\", \"revision\": \"1\"}]}", KVD_EINVAL,
		       "compare[0]: revision must be an integer");
	assert_txn_bad("{\"compare\": [{\"key\": \"a\"}]}", KVD_EINVAL, "compare[0]: expected");
	assert_txn_bad("{\"success\": [{\"op\": \"cas\", \"key\": \"a\"}]}", KVD_EINVAL,
		       "success[0]: op must be put, delete or get");
	assert_txn_bad("{\"success\": [{\"op\": \"get\", \"key\": \"\"}]}", KVD_EINVAL,
		       "success[0]: key cannot be empty");
	assert_txn_bad("{\"failure\": [{\"op\": \"get\", \"key\": \"ok\"}, {\"op\": \"put\", "
		       "\"key\": \"a\"}]}",
		       KVD_EINVAL, "failure[1]: value must be a string");
	assert_txn_bad("{\"success\": [{\"op\": \"put\", \"key\": \"a\", \"value\": \"\"}]}",
		       KVD_EINVAL, "success[0]: value cannot be empty");
	assert_txn_bad("{\"success\": [{\"op\": \"put\", \"key\": \"a\", \"value\": "
		       "\"0123456789abcdefg\"}]}",
		       KVD_ETOOBIG, "success[0]: value too large");
	assert_txn_bad("{\"success\": [{\"op\": \"delete\", \"key\": \"a\", \"value\": \"x\"}]}",
		       KVD_EINVAL, "success[0]: unexpected field");
	assert_txn_bad("{\"success\": [{\"op\": \"put\", \"key\": \"a\", \"value\": \"\\u0000\"}]}",
		       KVD_EINVAL, "invalid JSON");
	assert_txn_bad("{\"success\": [], \"success\": []}", KVD_EINVAL, "invalid JSON");

	/* 128 operations in all pass, 129 do not. */
	big = malloc(129 * 40 + 64);
	n = (size_t)sprintf(big, "{\"success\": [");
	for (int i = 0; i < 64; i++) {
		n += (size_t)sprintf(big + n, "%s{\"op\": \"get\", \"key\": \"k\"}", i ? "," : "");
	}
	n += (size_t)sprintf(big + n, "], \"failure\": [");
	for (int i = 0; i < 64; i++) {
		n += (size_t)sprintf(big + n, "%s{\"op\": \"get\", \"key\": \"k\"}", i ? "," : "");
	}
	strcpy(big + n, "]}");
	ck_assert_int_eq(engine_txn_validate(big, strlen(big), 0, msg), 0);
	strcpy(big + n, ",{\"op\": \"get\", \"key\": \"k\"}]}");
	assert_txn_bad(big, KVD_EINVAL, "too many operations (at most 128)");
	free(big);

	/* Over 4 MiB: 413 before any parsing. */
	big = malloc(ENGINE_TXN_BODY_MAX + 2);
	memset(big, ' ', ENGINE_TXN_BODY_MAX + 1);
	big[0] = '{';
	big[ENGINE_TXN_BODY_MAX] = '}';
	ck_assert_int_eq(engine_txn_validate(big, ENGINE_TXN_BODY_MAX + 1, 0, msg), KVD_ETOOBIG);
	ck_assert_int_eq(engine_txn_validate(big, ENGINE_TXN_BODY_MAX, 0, msg), KVD_EINVAL);
	free(big);
}
END_TEST

START_TEST(test_engine_txn_encode_compact)
{
	const char *body =
	    "{ \"success\" : [ {\"op\": \"put\", \"key\": \"a\", \"value\": \"caf\xc3\xa9 "
	    "x\"} ],\n \"compare\": [] }";
	const char *want =
	    "TXN {\"success\":[{\"op\":\"put\",\"key\":\"a\",\"value\":\"caf\xc3\xa9 "
	    "x\"}],\"compare\":[]}";
	struct engine_command cmd;
	char msg[KVD_ERRMSG_SIZE] = "";
	void *buf = NULL;
	size_t len = 0;

	ck_assert_int_eq(engine_command_encode_txn_alloc(body, strlen(body), 0, &buf, &len, msg),
			 0);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert_mem_eq(buf, want, len);
	ck_assert_int_eq(engine_command_parse(buf, len, &cmd), 0);
	ck_assert_int_eq(cmd.type, ENGINE_COMMAND_TXN);
	ck_assert_uint_eq(cmd.value_len, len - 4);
	free(buf);
	buf = NULL;
	ck_assert_int_eq(engine_command_encode_txn_alloc("{\"x\":1}", 7, 0, &buf, &len, msg),
			 KVD_EINVAL);
	ck_assert_ptr_null(buf);
}
END_TEST

START_TEST(test_engine_txn_validate_random_mutations)
{
	/* Mutated bodies never crash and give only the documented codes. */
	const char *ok =
	    "{\"compare\":[{\"key\":\"a\",\"revision\":7}],\"success\":[{\"op\":\"put\","
	    "\"key\":\"a\",\"value\":\"2\"},{\"op\":\"get\",\"key\":\"c\"}],"
	    "\"failure\":[{\"op\":\"delete\",\"key\":\"a\"}]}";
	static const char alphabet[] = "{}[]\",:0123456789-aekyopvlu \\";
	uint64_t seed = 0x2545f4914f6cdd1dull;
	size_t n = strlen(ok);
	char buf[256];

	for (int iter = 0; iter < 20000; iter++) {
		char msg[KVD_ERRMSG_SIZE];
		size_t len = n;
		int rv;
		memcpy(buf, ok, n);
		for (int m = 0; m < 1 + iter % 4; m++) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			if (len == 0) {
				break;
			}
			if ((seed >> 40) % 5 == 0 && len > 1) {
				len = (size_t)(seed >> 20) % len; /* truncate */
			} else {
				buf[(seed >> 8) % len] =
				    (seed >> 32) % 3 == 0
					? (char)(seed >> 48)
					: alphabet[(seed >> 24) % (sizeof(alphabet) - 1)];
			}
		}
		rv = engine_txn_validate(buf, len, 8, msg);
		ck_assert_msg(rv == 0 || rv == KVD_EINVAL || rv == KVD_ETOOBIG, "rv %d", rv);
		ck_assert(rv == 0 || msg[0] != '\0');
	}
}
END_TEST

START_TEST(test_engine_key_valid_rules)
{
	char big[ENGINE_KEY_MAX + 1];

	ck_assert(engine_key_valid("azAZ09:_.-", 10));
	ck_assert(!engine_key_valid("", 0));
	ck_assert(!engine_key_valid(NULL, 3));
	ck_assert(!engine_key_valid("a b", 3));
	ck_assert(!engine_key_valid("a/b", 3));
	ck_assert(!engine_key_valid("a%20", 4));
	ck_assert(!engine_key_valid("caf\xc3\xa9", 5));
	ck_assert(!engine_key_valid("a\0b", 3));
	memset(big, 'k', sizeof(big));
	ck_assert(engine_key_valid(big, ENGINE_KEY_MAX));
	ck_assert(!engine_key_valid(big, ENGINE_KEY_MAX + 1));
}
END_TEST

START_TEST(test_engine_command_encode_errors)
{
	char buf[8];
	size_t len = 0;
	void *p = NULL;

	ck_assert_int_eq(engine_command_encode_put("a b", 3, "v", 1, buf, sizeof(buf), &len),
			 KVD_EINVAL);
	ck_assert_int_eq(engine_command_encode_put("key", 3, "value", 5, buf, sizeof(buf), &len),
			 KVD_ETOOBIG);
	ck_assert_int_eq(engine_command_encode_put("ke", 2, "v", 1, buf, sizeof(buf), &len), 0);
	ck_assert_uint_eq(len, 8);
	ck_assert_int_eq(engine_command_encode_delete("", 0, buf, sizeof(buf), &len), KVD_EINVAL);
	ck_assert_int_eq(engine_command_encode_delete("k", 1, buf, 7, &len), KVD_ETOOBIG);
	ck_assert_int_eq(engine_command_encode_clear(buf, 4, &len), KVD_ETOOBIG);
	ck_assert_int_eq(engine_command_encode_delete_alloc("bad key", 7, &p, &len), KVD_EINVAL);
	ck_assert_ptr_null(p);
	ck_assert_int_eq(engine_command_encode_clear_alloc(&p, &len), 0);
	ck_assert_mem_eq(p, "CLEAR", 5);
	free(p);
}
END_TEST

static Suite *command_suite(void)
{
	Suite *s = suite_create("command");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_engine_command_parse_put_roundtrip);
	tcase_add_test(tc, test_engine_command_parse_put_text_form);
	tcase_add_test(tc, test_engine_command_parse_delete_and_clear);
	tcase_add_test(tc, test_engine_command_parse_malformed);
	tcase_add_test(tc, test_engine_command_parse_random_bytes);
	tcase_add_test(tc, test_engine_key_valid_rules);
	tcase_add_test(tc, test_engine_command_encode_errors);
	tcase_add_test(tc, test_engine_command_conditional_roundtrip);
	tcase_add_test(tc, test_engine_command_conditional_malformed);
	tcase_add_test(tc, test_engine_txn_validate_messages);
	tcase_add_test(tc, test_engine_txn_encode_compact);
	tcase_add_test(tc, test_engine_txn_validate_random_mutations);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(command_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
