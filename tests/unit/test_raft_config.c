/*
 * test_raft_config.c: configuration helpers and their byte encoding (thesis
 * ch. 4). Decoding takes bytes from disk or the network, so every malformed
 * input must give KVD_ECORRUPT, never a crash.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft.h"

static void make(struct raft_config *c, bool joint)
{
	memset(c, 0, sizeof(*c));
	ck_assert_int_eq(raft_config_add(c, "10.0.0.1:7001", RAFT_VOTER), 0);
	ck_assert_int_eq(raft_config_add(c, "10.0.0.2:7001", RAFT_VOTER), 0);
	ck_assert_int_eq(raft_config_add(c, "10.0.0.3:7001", RAFT_LEARNER), 0);
	if (joint) {
		strcpy(c->old[0].id, "10.0.0.9:7001");
		c->old[0].role = RAFT_VOTER;
		c->n_old = 1;
	}
}

START_TEST(test_raft_config_add_rejects_duplicates_and_bad_ids)
{
	struct raft_config c;
	char big[RAFT_ID_SIZE + 1];

	make(&c, false);
	ck_assert_int_eq(raft_config_add(&c, "10.0.0.1:7001", RAFT_LEARNER), KVD_EEXIST);
	ck_assert_int_eq(raft_config_add(&c, "", RAFT_VOTER), KVD_EINVAL);
	memset(big, 'a', RAFT_ID_SIZE);
	big[RAFT_ID_SIZE] = '\0';
	ck_assert_int_eq(raft_config_add(&c, big, RAFT_VOTER), KVD_EINVAL);
	ck_assert_int_eq(raft_config_add(&c, "x", 7), KVD_EINVAL);
	ck_assert(raft_config_is_voter(&c, "10.0.0.2:7001"));
	ck_assert(!raft_config_is_voter(&c, "10.0.0.3:7001"));
	ck_assert_ptr_null(raft_config_get(&c, "nope"));
	for (unsigned i = c.n; i < RAFT_MAX_SERVERS; i++) {
		char id[16];
		snprintf(id, sizeof(id), "s%u", i);
		ck_assert_int_eq(raft_config_add(&c, id, RAFT_VOTER), 0);
	}
	ck_assert_int_eq(raft_config_add(&c, "one-too-many", RAFT_VOTER), KVD_ETOOBIG);
}
END_TEST

START_TEST(test_raft_config_encode_roundtrip)
{
	for (int joint = 0; joint < 2; joint++) {
		struct raft_config c, d;
		void *buf;
		size_t len;

		make(&c, joint);
		ck_assert_int_eq(raft_config_encode(&c, &buf, &len), 0);
		memset(&d, 0xff, sizeof(d));
		ck_assert_int_eq(raft_config_decode(buf, len, &d), 0);
		ck_assert_uint_eq(d.n, 3);
		ck_assert_uint_eq(d.n_old, (unsigned)joint);
		for (unsigned i = 0; i < c.n; i++) {
			ck_assert_str_eq(d.servers[i].id, c.servers[i].id);
			ck_assert_int_eq(d.servers[i].role, c.servers[i].role);
		}
		if (joint)
			ck_assert(raft_config_is_voter(&d, "10.0.0.9:7001"));
		free(buf);
	}
}
END_TEST

/* Every truncation, every single-byte corruption and trailing garbage are
 * either rejected with KVD_ECORRUPT or decode to a valid configuration. */
START_TEST(test_raft_config_decode_rejects_malformed)
{
	struct raft_config c, d;
	unsigned char *buf, *m;
	size_t len;

	make(&c, true);
	ck_assert_int_eq(raft_config_encode(&c, (void **)&buf, &len), 0);
	m = malloc(len + 1);
	for (size_t cut = 0; cut < len; cut++)
		ck_assert_int_eq(raft_config_decode(buf, cut, &d), KVD_ECORRUPT);
	memcpy(m, buf, len);
	m[len] = 0;
	ck_assert_int_eq(raft_config_decode(m, len + 1, &d), KVD_ECORRUPT);
	ck_assert_int_eq(raft_config_decode(NULL, 0, &d), KVD_ECORRUPT);
	memcpy(m, buf, len);
	m[0] = 2; /* unknown version */
	ck_assert_int_eq(raft_config_decode(m, len, &d), KVD_ECORRUPT);
	memcpy(m, buf, len);
	m[1] = RAFT_MAX_SERVERS + 1; /* count too large */
	ck_assert_int_eq(raft_config_decode(m, len, &d), KVD_ECORRUPT);
	memcpy(m, buf, len);
	m[2] = 9; /* bad role */
	ck_assert_int_eq(raft_config_decode(m, len, &d), KVD_ECORRUPT);
	memcpy(m, buf, len);
	m[5] = '\0'; /* NUL inside an id */
	ck_assert_int_eq(raft_config_decode(m, len, &d), KVD_ECORRUPT);
	for (size_t i = 0; i < len; i++) {
		for (unsigned v = 0; v < 256; v += 17) {
			int rv;
			memcpy(m, buf, len);
			m[i] = (unsigned char)v;
			rv = raft_config_decode(m, len, &d);
			ck_assert(rv == 0 || rv == KVD_ECORRUPT);
			if (rv == 0)
				ck_assert_uint_le(d.n, RAFT_MAX_SERVERS);
		}
	}
	/* Duplicate ids. */
	{
		struct raft_config dup;
		void *b2;
		size_t l2;
		memset(&dup, 0, sizeof(dup));
		dup.n = 2;
		strcpy(dup.servers[0].id, "a");
		strcpy(dup.servers[1].id, "a");
		dup.servers[0].role = dup.servers[1].role = RAFT_VOTER;
		ck_assert_int_eq(raft_config_encode(&dup, &b2, &l2), 0);
		ck_assert_int_eq(raft_config_decode(b2, l2, &d), KVD_ECORRUPT);
		free(b2);
	}
	free(m);
	free(buf);
}
END_TEST

START_TEST(test_raft_bootstrap_entry_is_index_1_term_1)
{
	struct raft_config c, d;
	struct raft_entry e;
	void *buf;

	make(&c, false);
	ck_assert_int_eq(raft_bootstrap_entry(&c, &e, &buf), 0);
	ck_assert_uint_eq(e.index, 1);
	ck_assert_uint_eq(e.term, 1);
	ck_assert_int_eq(e.type, RAFT_ENTRY_CONFIG);
	ck_assert_ptr_eq(e.data, buf);
	ck_assert_int_eq(raft_config_decode(e.data, e.len, &d), 0);
	ck_assert_uint_eq(d.n, 3);
	free(buf);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("raft_config");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_raft_config_add_rejects_duplicates_and_bad_ids);
	tcase_add_test(tc, test_raft_config_encode_roundtrip);
	tcase_add_test(tc, test_raft_config_decode_rejects_malformed);
	tcase_add_test(tc, test_raft_bootstrap_entry_is_index_1_term_1);
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
	return failed == 0 ? 0 : 1;
}
