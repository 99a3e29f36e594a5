/*
 * test_node_state.c: the node's mode (api/node_state.c): the transition
 * table, refused moves, and the rules a stopping node keeps.
 */
#include <check.h>
#include <stdlib.h>

#include "api/node_state.h"
#include "kvd/errors.h"

START_TEST(test_kvd_node_mode_set_disk_full_cycle)
{
	struct kvd_node_mode m = {0};

	ck_assert_int_eq(kvd_node_mode_rules(&m), KVD_NODE_RUNNING);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_FULL), 0);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_FULL), 0); /* again: no-op */
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_RECOVERING), 0);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_FULL), 0);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_RECOVERING), 0);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_RUNNING), 0);
	ck_assert_int_eq(kvd_node_mode_rules(&m), KVD_NODE_RUNNING);
	ck_assert(!kvd_node_mode_stopping(&m));
}
END_TEST

START_TEST(test_kvd_node_mode_set_refuses_moves_outside_the_table)
{
	struct kvd_node_mode m = {0};

	/* Space comes back only through a restarted core's durable append. */
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_RECOVERING), KVD_EINVAL);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_FULL), 0);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_RUNNING), KVD_EINVAL);
	ck_assert_int_eq(kvd_node_mode_rules(&m), KVD_NODE_DISK_FULL);
	/* IO_FAILED is final. */
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_IO_FAILED), 0);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_RUNNING), KVD_EINVAL);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_FULL), KVD_EINVAL);
	ck_assert_int_eq(kvd_node_mode_rules(&m), KVD_NODE_IO_FAILED);
}
END_TEST

START_TEST(test_kvd_node_mode_set_stopping_keeps_rules)
{
	struct kvd_node_mode m = {0};

	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_FULL), 0);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_STOPPING), 0);
	ck_assert(kvd_node_mode_stopping(&m));
	/* The drain keeps answering writes as a full disk does. */
	ck_assert_int_eq(kvd_node_mode_rules(&m), KVD_NODE_DISK_FULL);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_STOPPING), 0); /* again: no-op */
	/* Disk transitions still apply to the rules while stopping. */
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_DISK_RECOVERING), 0);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_RUNNING), 0);
	ck_assert(kvd_node_mode_stopping(&m));
	ck_assert_int_eq(kvd_node_mode_rules(&m), KVD_NODE_RUNNING);
	ck_assert_int_eq(kvd_node_mode_set(&m, KVD_NODE_IO_FAILED), 0);
	ck_assert_int_eq(kvd_node_mode_rules(&m), KVD_NODE_IO_FAILED);
	ck_assert(kvd_node_mode_stopping(&m));
}
END_TEST

START_TEST(test_kvd_node_state_allowed_table)
{
	enum kvd_node_state all[] = {KVD_NODE_RUNNING, KVD_NODE_DISK_FULL, KVD_NODE_DISK_RECOVERING,
				     KVD_NODE_IO_FAILED, KVD_NODE_STOPPING};
	unsigned allowed = 0;

	for (unsigned i = 0; i < 5; i++)
		for (unsigned j = 0; j < 5; j++)
			allowed += i != j && kvd_node_state_allowed(all[i], all[j]);
	/* 2 + 2 + 3 + 0 disk moves, 4 into STOPPING, none out of it. */
	ck_assert_uint_eq(allowed, 11);
	ck_assert(!kvd_node_state_allowed(KVD_NODE_STOPPING, KVD_NODE_RUNNING));
	ck_assert(!kvd_node_state_allowed(KVD_NODE_IO_FAILED, KVD_NODE_DISK_RECOVERING));
}
END_TEST

static Suite *node_state_suite(void)
{
	Suite *s = suite_create("node_state");
	TCase *tc = tcase_create("mode");

	tcase_add_test(tc, test_kvd_node_mode_set_disk_full_cycle);
	tcase_add_test(tc, test_kvd_node_mode_set_refuses_moves_outside_the_table);
	tcase_add_test(tc, test_kvd_node_mode_set_stopping_keeps_rules);
	tcase_add_test(tc, test_kvd_node_state_allowed_table);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(node_state_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
