/*
 * test_precondition.c: the conditional-write headers (api/precondition.c)
 * against API.md §10 and docs/api.md: the one accepted If-Match form, "*" for
 * If-None-Match on PUT only, and every other form refused as malformed.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "api/precondition.h"

static enum kvd_precondition match(const char *v, uint64_t *rev)
{
	return kvd_precondition_parse(v, strlen(v), NULL, 0, true, rev);
}

static enum kvd_precondition none_match(const char *v, bool allow_absent)
{
	uint64_t rev = 0;
	return kvd_precondition_parse(NULL, 0, v, strlen(v), allow_absent, &rev);
}

START_TEST(test_kvd_precondition_absent_headers_are_none)
{
	uint64_t rev = 7;
	ck_assert_int_eq(kvd_precondition_parse(NULL, 0, NULL, 0, true, &rev), KVD_PRECOND_NONE);
	ck_assert_int_eq(kvd_precondition_parse(NULL, 0, NULL, 0, false, &rev), KVD_PRECOND_NONE);
}
END_TEST

START_TEST(test_kvd_precondition_if_match_strong_tag)
{
	uint64_t rev = 0;
	ck_assert_int_eq(match("\"42\"", &rev), KVD_PRECOND_MATCH);
	ck_assert_uint_eq(rev, 42);
	ck_assert_int_eq(match(" \t\"7\" ", &rev), KVD_PRECOND_MATCH);
	ck_assert_uint_eq(rev, 7);
	ck_assert_int_eq(match("\"0\"", &rev), KVD_PRECOND_MATCH);
	ck_assert_uint_eq(rev, 0);
	ck_assert_int_eq(match("\"18446744073709551615\"", &rev), KVD_PRECOND_MATCH);
	ck_assert_uint_eq(rev, UINT64_MAX);
}
END_TEST

START_TEST(test_kvd_precondition_if_match_malformed)
{
	static const char *const bad[] = {"",
					  "\"",
					  "\"\"",
					  "7",
					  "W/\"7\"",
					  "*",
					  "\"-1\"",
					  "\"+1\"",
					  "\"1 2\"",
					  "\"7\", \"8\"",
					  "\"abc\"",
					  "\"7",
					  "7\"",
					  "'7'",
					  "\"18446744073709551616\"",
					  "\"123456789012345678901\""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t rev = 0;
		ck_assert_msg(match(bad[i], &rev) == KVD_PRECOND_BAD, "accepted If-Match: %s",
			      bad[i]);
	}
}
END_TEST

START_TEST(test_kvd_precondition_if_none_match)
{
	ck_assert_int_eq(none_match("*", true), KVD_PRECOND_ABSENT);
	ck_assert_int_eq(none_match(" * ", true), KVD_PRECOND_ABSENT);
	/* DELETE takes no If-None-Match. */
	ck_assert_int_eq(none_match("*", false), KVD_PRECOND_BAD);
	ck_assert_int_eq(none_match("\"7\"", true), KVD_PRECOND_BAD);
	ck_assert_int_eq(none_match("", true), KVD_PRECOND_BAD);
	ck_assert_int_eq(none_match("**", true), KVD_PRECOND_BAD);
	ck_assert_int_eq(none_match("W/*", true), KVD_PRECOND_BAD);
}
END_TEST

START_TEST(test_kvd_precondition_both_headers_malformed)
{
	uint64_t rev = 0;
	ck_assert_int_eq(kvd_precondition_parse("\"1\"", 3, "*", 1, true, &rev), KVD_PRECOND_BAD);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("precondition");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, test_kvd_precondition_absent_headers_are_none);
	tcase_add_test(tc, test_kvd_precondition_if_match_strong_tag);
	tcase_add_test(tc, test_kvd_precondition_if_match_malformed);
	tcase_add_test(tc, test_kvd_precondition_if_none_match);
	tcase_add_test(tc, test_kvd_precondition_both_headers_malformed);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
