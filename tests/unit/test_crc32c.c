/*
 * test_crc32c.c: CRC-32C against published check values, and agreement of
 * the hardware and software paths.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "raft/crc32c.h"

START_TEST(test_raft_crc32c_check_value)
{
	/* The CRC-32C check value (RFC 3720 family, "123456789"). */
	ck_assert_uint_eq(raft_crc32c(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(raft_crc32c_software(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(raft_crc32c(0, "", 0), 0);
}
END_TEST

START_TEST(test_raft_crc32c_rfc3720_vectors)
{
	uint8_t buf[32];
	memset(buf, 0, sizeof(buf));
	ck_assert_uint_eq(raft_crc32c(0, buf, 32), 0x8A9136AAu);
	memset(buf, 0xff, sizeof(buf));
	ck_assert_uint_eq(raft_crc32c(0, buf, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++) {
		buf[i] = (uint8_t)i;
	}
	ck_assert_uint_eq(raft_crc32c(0, buf, 32), 0x46DD794Eu);
	ck_assert_uint_eq(raft_crc32c_software(0, buf, 32), 0x46DD794Eu);
}
END_TEST

START_TEST(test_raft_crc32c_incremental_and_unaligned)
{
	uint8_t buf[1030];
	unsigned seed = 12345;
	for (size_t i = 0; i < sizeof(buf); i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (uint8_t)(seed >> 16);
	}
	for (size_t start = 0; start < 9; start++) {
		for (size_t len = 0; len < 1020; len += 37) {
			uint32_t whole = raft_crc32c_software(0, buf + start, len);
			size_t half = len / 3;
			ck_assert_uint_eq(raft_crc32c(0, buf + start, len), whole);
			ck_assert_uint_eq(raft_crc32c(raft_crc32c(0, buf + start, half),
						      buf + start + half, len - half),
					  whole);
		}
	}
}
END_TEST

static Suite *crc32c_suite(void)
{
	Suite *s = suite_create("raft_crc32c");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_raft_crc32c_check_value);
	tcase_add_test(tc, test_raft_crc32c_rfc3720_vectors);
	tcase_add_test(tc, test_raft_crc32c_incremental_and_unaligned);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(crc32c_suite());
	int failed;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
