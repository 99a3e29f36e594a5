/*
 * test_segment.c: the segment file layout (raft/segment.c): names, record
 * encoding, and that verification catches every single-bit error.
 */
#include <check.h>
#include <string.h>

#include "raft/segment.h"
#include "storage_test_util.h"

START_TEST(test_raft_segment_name_round_trip)
{
	char name[RAFT_SEGMENT_NAME_SIZE];
	uint64_t seq = 0;
	raft_segment_name_format(name, 0x1234abcdULL);
	ck_assert_str_eq(name, "seg-000000001234abcd");
	ck_assert(raft_segment_name_parse(name, &seq));
	ck_assert_uint_eq(seq, 0x1234abcdULL);
	ck_assert(!raft_segment_name_parse("seg-000000001234abc", &seq));
	ck_assert(!raft_segment_name_parse("seg-000000001234ABCD", &seq));
	ck_assert(!raft_segment_name_parse("meta1", &seq));
	ck_assert(!raft_segment_name_parse("seg-000000001234abcd.tmp", &seq));
}
END_TEST

START_TEST(test_raft_segment_record_round_trip)
{
	uint8_t buf[RAFT_SEGMENT_RECORD_HEADER_SIZE + 16];
	struct raft_segment_record r;
	const char *why = NULL;
	size_t n =
	    raft_segment_record_encode(buf, 42, 7, RAFT_ENTRY_CONFIG, 9, "0123456789abcdef", 16);
	ck_assert_uint_eq(n, sizeof(buf));
	ck_assert_int_eq(raft_segment_record_decode(buf, n, &r, &why), 0);
	ck_assert_uint_eq(r.index, 42);
	ck_assert_uint_eq(r.term, 7);
	ck_assert_uint_eq(r.type, RAFT_ENTRY_CONFIG);
	ck_assert_uint_eq(r.batch, 9);
	ck_assert_uint_eq(r.len, 16);
	ck_assert_uint_eq(r.size, n);
	ck_assert_mem_eq(r.payload, "0123456789abcdef", 16);

	n = raft_segment_record_encode(buf, 1, 1, RAFT_ENTRY_NOOP, 1, NULL, 0);
	ck_assert_uint_eq(n, RAFT_SEGMENT_RECORD_HEADER_SIZE);
	ck_assert_int_eq(raft_segment_record_decode(buf, n, &r, &why), 0);
	ck_assert_uint_eq(r.len, 0);
}
END_TEST

START_TEST(test_raft_segment_record_decode_every_bit_flip)
{
	uint8_t buf[RAFT_SEGMENT_RECORD_HEADER_SIZE + 11];
	struct raft_segment_record r;
	size_t n = raft_segment_record_encode(buf, 9, 3, RAFT_ENTRY_COMMAND, 1, "hello world", 11);
	for (size_t byte = 0; byte < n; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			const char *why = NULL;
			buf[byte] ^= (uint8_t)(1u << bit);
			ck_assert_msg(raft_segment_record_decode(buf, n, &r, &why) == KVD_ECORRUPT,
				      "flip of byte %zu bit %d not caught", byte, bit);
			ck_assert_ptr_nonnull(why);
			buf[byte] ^= (uint8_t)(1u << bit);
		}
	}
	ck_assert_int_eq(raft_segment_record_decode(buf, n, &r, &(const char *){NULL}), 0);
}
END_TEST

START_TEST(test_raft_segment_record_decode_short_and_impossible)
{
	uint8_t buf[RAFT_SEGMENT_RECORD_HEADER_SIZE + 4];
	struct raft_segment_record r;
	const char *why = NULL;
	size_t n = raft_segment_record_encode(buf, 1, 1, RAFT_ENTRY_COMMAND, 1, "abcd", 4);
	ck_assert_int_eq(raft_segment_record_decode(buf, 10, &r, &why), KVD_ECORRUPT);
	ck_assert_str_eq(why, "incomplete record header");
	ck_assert_int_eq(raft_segment_record_decode(buf, n - 1, &r, &why), KVD_ECORRUPT);
	ck_assert_str_eq(why, "record extends past the end of the file");
	memset(buf, 0xff, 4); /* length 4 GiB - 1 */
	ck_assert_int_eq(raft_segment_record_decode(buf, n, &r, &why), KVD_ECORRUPT);
	ck_assert_str_eq(why, "impossible record length");
	memset(buf, 0, sizeof(buf)); /* a zeroed tail is not a record */
	ck_assert_int_eq(raft_segment_record_decode(buf, n, &r, &why), KVD_ECORRUPT);
}
END_TEST

START_TEST(test_raft_segment_header_read_detects_damage)
{
	char *dir = tu_mkdtemp();
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_segment seg = {.sequence = 5, .first_index = 100, .prev_term = 4, .flags = 0};
	struct raft_segment got;
	uint64_t size = 0;
	bool torn = true;
	int dir_fd = open(dir, O_RDONLY | O_DIRECTORY);
	int fd = -1;

	ck_assert_int_eq(raft_segment_create(&raft_log_io_posix, dir, dir_fd, &seg, &fd, errmsg),
			 0);
	close(fd);
	ck_assert_int_eq(raft_segment_create(&raft_log_io_posix, dir, dir_fd, &seg, &fd, errmsg),
			 KVD_EEXIST);
	memset(&got, 0, sizeof(got));
	got.sequence = 5;
	raft_segment_name_format(got.name, 5);
	ck_assert_int_eq(
	    raft_segment_header_read(&raft_log_io_posix, dir, dir_fd, &got, &size, &torn, errmsg),
	    0);
	ck_assert(!torn);
	ck_assert_uint_eq(size, RAFT_SEGMENT_HEADER_SIZE);
	ck_assert_uint_eq(got.first_index, 100);
	ck_assert_uint_eq(got.prev_term, 4);
	ck_assert_uint_eq(got.last_index, 99);

	tu_flip(dir, got.name, 17, 2);
	ck_assert_int_eq(
	    raft_segment_header_read(&raft_log_io_posix, dir, dir_fd, &got, &size, &torn, errmsg),
	    KVD_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(errmsg, "seg-0000000000000005"));
	ck_assert_ptr_nonnull(strstr(errmsg, "offset 0"));

	tu_truncate(dir, got.name, 12);
	ck_assert_int_eq(
	    raft_segment_header_read(&raft_log_io_posix, dir, dir_fd, &got, &size, &torn, errmsg),
	    0);
	ck_assert(torn);
	close(dir_fd);
	tu_rmtree(dir);
}
END_TEST

static Suite *segment_suite(void)
{
	Suite *s = suite_create("raft_segment");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_raft_segment_name_round_trip);
	tcase_add_test(tc, test_raft_segment_record_round_trip);
	tcase_add_test(tc, test_raft_segment_record_decode_every_bit_flip);
	tcase_add_test(tc, test_raft_segment_record_decode_short_and_impossible);
	tcase_add_test(tc, test_raft_segment_header_read_detects_damage);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(segment_suite());
	int failed;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
