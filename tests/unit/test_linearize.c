/*
 * test_linearize.c: unit tests for the linearizability checker
 * (tests/sim/linearize.c) on small hand-made histories, both linearizable
 * and not, in the lincheck text format, including revisions and conditional
 * writes (If-Match, If-None-Match and their 412 refusals).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kvd/errors.h"
#include "tests/sim/linearize.h"

/* Builds a history from lines of the text format and checks it. Returns 1
 * linearizable, 0 not, -1 on error. */
static int check_lines(const char *const *lines)
{
	struct linearize_history *h = linearize_history_create();
	bool ok = false;
	int result = -1;

	ck_assert_ptr_nonnull(h);
	for (size_t i = 0; lines[i] != NULL; i++) {
		struct linearize_op op;
		int rc = linearize_op_parse(lines[i], &op);
		if (rc == KVD_ENOTFOUND)
			continue;
		ck_assert_int_eq(rc, 0);
		ck_assert_int_eq(linearize_history_add(h, &op), 0);
	}
	char why[128];
	if (linearize_history_check(h, 0, &ok, why, sizeof(why)) == 0)
		result = ok ? 1 : 0;
	linearize_history_destroy(h);
	return result;
}

START_TEST(test_linearize_history_check_empty)
{
	const char *lines[] = {NULL};
	ck_assert_int_eq(check_lines(lines), 1);
}
END_TEST

START_TEST(test_linearize_history_check_sequential)
{
	const char *lines[] = {
	    "1 get a - 0 1 ok",	   "1 put a x 2 3 ok", "1 get a x 4 5 ok",
	    "1 delete a - 6 7 ok", "1 get a - 8 9 ok", NULL,
	};
	ck_assert_int_eq(check_lines(lines), 1);
}
END_TEST

START_TEST(test_linearize_history_check_concurrent_read_either)
{
	/* A read overlapping a put may see the old or the new value. */
	const char *old_seen[] = {"1 put a x 0 1 ok", "2 put a y 2 10 ok", "3 get a x 3 4 ok",
				  "3 get a y 5 6 ok", NULL};
	const char *new_seen[] = {"1 put a x 0 1 ok", "2 put a y 2 10 ok", "3 get a y 3 4 ok",
				  NULL};
	ck_assert_int_eq(check_lines(old_seen), 1);
	ck_assert_int_eq(check_lines(new_seen), 1);
}
END_TEST

START_TEST(test_linearize_history_check_stale_read)
{
	/* The put of y returned before the read began: reading x is stale. */
	const char *lines[] = {"1 put a x 0 1 ok", "1 put a y 2 3 ok", "2 get a x 4 5 ok", NULL};
	ck_assert_int_eq(check_lines(lines), 0);
}
END_TEST

START_TEST(test_linearize_history_check_read_reordering)
{
	/* Two sequential reads during a long put: new then old is impossible. */
	const char *lines[] = {"1 put a x 0 1 ok", "2 put a y 2 20 ok", "3 get a y 3 4 ok",
			       "3 get a x 5 6 ok", NULL};
	ck_assert_int_eq(check_lines(lines), 0);
}
END_TEST

START_TEST(test_linearize_history_check_value_never_written)
{
	const char *lines[] = {"1 put a x 0 1 ok", "2 get a z 2 3 ok", NULL};
	ck_assert_int_eq(check_lines(lines), 0);
}
END_TEST

START_TEST(test_linearize_history_check_failed_write_seen)
{
	/* A failed write certainly did not happen: nobody may read it. */
	const char *lines[] = {"1 put a x 0 1 ok", "2 put a y 2 3 fail", "3 get a y 4 5 ok", NULL};
	ck_assert_int_eq(check_lines(lines), 0);
}
END_TEST

START_TEST(test_linearize_history_check_unknown_write_late)
{
	/* An unknown write may take effect long after its client gave up, or
	 * never. */
	const char *late[] = {"1 put a x 0 1 ok", "2 put a y 2 3 unknown", "3 get a x 4 5 ok",
			      "3 get a y 6 7 ok", NULL};
	const char *never[] = {"1 put a x 0 1 ok", "2 put a y 2 3 unknown", "3 get a x 4 5 ok",
			       NULL};
	ck_assert_int_eq(check_lines(late), 1);
	ck_assert_int_eq(check_lines(never), 1);
}
END_TEST

START_TEST(test_linearize_history_check_unknown_write_not_twice)
{
	/* An unknown write takes effect at most once: y, x, y again needs a
	 * second y. */
	const char *lines[] = {"1 put a y 0 1 unknown", "2 put a x 2 3 ok", "3 get a y 4 5 ok",
			       "4 put a x 6 7 ok",	"3 get a y 8 9 ok", NULL};
	ck_assert_int_eq(check_lines(lines), 0);
}
END_TEST

START_TEST(test_linearize_history_check_delete)
{
	const char *ok_lines[] = {"1 put a x 0 1 ok", "1 delete a - 2 3 ok", "2 get a - 4 5 ok",
				  NULL};
	const char *bad_lines[] = {"1 put a x 0 1 ok", "2 get a - 2 3 ok", NULL};
	ck_assert_int_eq(check_lines(ok_lines), 1);
	ck_assert_int_eq(check_lines(bad_lines), 0);
}
END_TEST

START_TEST(test_linearize_history_check_keys_independent)
{
	/* Each key alone is fine; the bad read on b fails the whole history. */
	const char *ok_lines[] = {"1 put a x 0 1 ok", "2 put b x 0 1 ok", "3 get a x 2 3 ok",
				  "3 get b x 2 3 ok", NULL};
	const char *bad_lines[] = {"1 put a x 0 1 ok", "2 put b y 0 1 ok", "3 get a x 2 3 ok",
				   "3 get b x 2 3 ok", NULL};
	ck_assert_int_eq(check_lines(ok_lines), 1);
	ck_assert_int_eq(check_lines(bad_lines), 0);
}
END_TEST

START_TEST(test_linearize_history_check_many_concurrent)
{
	/* 14 concurrent writes, then a read after all returned: any value may
	 * be last, but reads of two values after all writes returned are
	 * impossible (the search must exhaust 2^14 subsets to say so). */
	struct linearize_history *h = linearize_history_create();
	struct linearize_op op;
	bool ok = false;
	char line[128];

	for (int i = 0; i < 14; i++) {
		snprintf(line, sizeof(line), "%d put k v%d %d %d ok", i, i, i, 100 + i);
		ck_assert_int_eq(linearize_op_parse(line, &op), 0);
		ck_assert_int_eq(linearize_history_add(h, &op), 0);
	}
	ck_assert_int_eq(linearize_op_parse("50 get k v7 200 201 ok", &op), 0);
	ck_assert_int_eq(linearize_history_add(h, &op), 0);
	ck_assert_int_eq(linearize_history_check(h, 0, &ok, NULL, 0), 0);
	ck_assert(ok);
	ck_assert_int_eq(linearize_op_parse("51 get k v9 202 203 ok", &op), 0);
	ck_assert_int_eq(linearize_history_add(h, &op), 0);
	ck_assert_int_eq(linearize_history_check(h, 0, &ok, NULL, 0), 0);
	ck_assert(!ok);
	linearize_history_destroy(h);
}
END_TEST

START_TEST(test_linearize_history_check_unread_unknown_writes)
{
	/* Unknown writes nobody read are dropped: 500 of them stay fast. */
	struct linearize_history *h = linearize_history_create();
	struct linearize_op op;
	bool ok = false;
	char line[128];

	for (int i = 0; i < 500; i++) {
		snprintf(line, sizeof(line), "%d put k u%d %d %d unknown", i, i, i, i + 1);
		ck_assert_int_eq(linearize_op_parse(line, &op), 0);
		ck_assert_int_eq(linearize_history_add(h, &op), 0);
	}
	ck_assert_int_eq(linearize_op_parse("600 get k - 1000 1001 ok", &op), 0);
	ck_assert_int_eq(linearize_history_add(h, &op), 0);
	ck_assert_int_eq(linearize_op_parse("601 get k u3 1002 1003 ok", &op), 0);
	ck_assert_int_eq(linearize_history_add(h, &op), 0);
	ck_assert_int_eq(linearize_history_check(h, 0, &ok, NULL, 0), 0);
	ck_assert(ok);
	ck_assert_int_eq(linearize_op_parse("602 get k - 1004 1005 ok", &op), 0);
	ck_assert_int_eq(linearize_history_add(h, &op), 0);
	ck_assert_int_eq(linearize_history_check(h, 0, &ok, NULL, 0), 0);
	ck_assert(!ok);
	linearize_history_destroy(h);
}
END_TEST

START_TEST(test_linearize_history_check_state_budget)
{
	struct linearize_history *h = linearize_history_create();
	struct linearize_op op;
	bool ok = false;
	char line[128];

	for (int i = 0; i < 30; i++) {
		snprintf(line, sizeof(line), "%d put k v%d 0 100 ok", i, i);
		ck_assert_int_eq(linearize_op_parse(line, &op), 0);
		ck_assert_int_eq(linearize_history_add(h, &op), 0);
	}
	ck_assert_int_eq(linearize_op_parse("50 get k nope 200 201 ok", &op), 0);
	ck_assert_int_eq(linearize_history_add(h, &op), 0);
	ck_assert_int_eq(linearize_history_check(h, 1000, &ok, NULL, 0), KVD_ETOOBIG);
	linearize_history_destroy(h);
}
END_TEST

START_TEST(test_linearize_op_parse_valid)
{
	struct linearize_op op;
	ck_assert_int_eq(linearize_op_parse("  7 delete key1 - 10 20 unknown\n", &op), 0);
	ck_assert_uint_eq(op.client, 7);
	ck_assert_int_eq(op.kind, LINEARIZE_DELETE);
	ck_assert_str_eq(op.key, "key1");
	ck_assert(!op.has_value);
	ck_assert_uint_eq(op.invoke_time, 10);
	ck_assert_uint_eq(op.return_time, 20);
	ck_assert_int_eq(op.outcome, LINEARIZE_UNKNOWN);
}
END_TEST

START_TEST(test_linearize_op_parse_malformed)
{
	struct linearize_op op;
	ck_assert_int_eq(linearize_op_parse("# comment", &op), KVD_ENOTFOUND);
	ck_assert_int_eq(linearize_op_parse("\n", &op), KVD_ENOTFOUND);
	ck_assert_int_eq(linearize_op_parse("1 cas a x 0 1 ok", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("1 put a - 0 1 ok", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("1 put a x 5 1 ok", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("1 put a x 0 1 maybe", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("1 put a x 0", &op), KVD_EINVAL);
}
END_TEST

START_TEST(test_linearize_revisions_and_conditional_writes)
{
	/* rev=N: the revision a write was given (ETag) or a get saw; if=N: the
	 * If-Match revision; "refused": 412, the condition did not hold. */
	const char *seq[] = {
	    "1 put a x 0 1 ok rev=3",	     "1 get a x 2 3 ok rev=3",
	    "1 put-if a y 4 5 refused if=2", "1 put-if a y 6 7 ok if=3 rev=8",
	    "1 get a y 8 9 ok rev=8",	     "1 put-absent a z 10 11 refused",
	    "1 delete-if a - 12 13 ok if=8", "1 put-absent a z 14 15 ok rev=20",
	    "1 get a z 16 17 ok rev=20",     NULL,
	};
	/* Two racing If-Match writes on the same revision: one wins. */
	const char *race_ok[] = {
	    "1 put a x 0 1 ok rev=3",
	    "2 put-if a y 2 10 ok if=3 rev=5",
	    "3 put-if a z 2 10 refused if=3",
	    "1 get a y 11 12 ok rev=5",
	    NULL,
	};
	const char *race_both[] = {
	    "1 put a x 0 1 ok rev=3",
	    "2 put-if a y 2 10 ok if=3 rev=5",
	    "3 put-if a z 2 10 ok if=3 rev=6",
	    NULL,
	};
	/* A get whose revision is not the one the value was written with. */
	const char *wrong_rev[] = {"1 put a x 0 1 ok rev=3", "1 get a x 2 3 ok rev=4", NULL};
	/* A 412 for a condition that held (nothing else wrote). */
	const char *bad_refusal[] = {"1 put a x 0 1 ok rev=3", "1 put-if a y 2 3 refused if=3",
				     NULL};
	/* Two PUT-ABSENT both succeeding without a delete between. */
	const char *absent_twice[] = {"1 put-absent a x 0 1 ok rev=2",
				      "2 put-absent a y 2 3 ok rev=4", NULL};
	/* An unknown PUT-ABSENT that nobody read still explains a later 412. */
	const char *unknown_absent[] = {"1 put-absent a x 0 1 unknown",
					"2 put-absent a y 5 6 refused", NULL};

	ck_assert_int_eq(check_lines(seq), 1);
	ck_assert_int_eq(check_lines(race_ok), 1);
	ck_assert_int_eq(check_lines(race_both), 0);
	ck_assert_int_eq(check_lines(wrong_rev), 0);
	ck_assert_int_eq(check_lines(bad_refusal), 0);
	ck_assert_int_eq(check_lines(absent_twice), 0);
	ck_assert_int_eq(check_lines(unknown_absent), 1);
}
END_TEST

START_TEST(test_linearize_op_parse_revisions)
{
	struct linearize_op op;
	char buf[256];
	FILE *f;

	ck_assert_int_eq(linearize_op_parse("4 put-if k v 1 2 ok if=7 rev=9", &op), 0);
	ck_assert_int_eq(op.kind, LINEARIZE_PUT_IF);
	ck_assert_uint_eq(op.if_revision, 7);
	ck_assert_uint_eq(op.revision, 9);
	ck_assert_int_eq(op.outcome, LINEARIZE_OK);
	f = fmemopen(buf, sizeof(buf), "w");
	linearize_op_print(&op, f);
	fclose(f);
	ck_assert_str_eq(buf, "4 put-if k v 1 2 ok if=7 rev=9\n");
	ck_assert_int_eq(linearize_op_parse("4 delete-if k - 1 2 refused if=3", &op), 0);
	ck_assert_int_eq(op.outcome, LINEARIZE_REFUSED);
	ck_assert_int_eq(linearize_op_parse("4 put k v 1 2 ok rev=x", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("4 put k v 1 2 ok if=3", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("4 put-if k v 1 2 ok", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("4 get k v 1 2 refused", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("4 put k v 1 2 ok junk", &op), KVD_EINVAL);
}
END_TEST

/*
 * Transactions (API.md §12), one line each:
 *     <client> txn <compare> <success>/<failure> <invoke> <return> <outcome>
 *         [branch=success|failure] [rev=N]
 * compare: "-" or "key=rev,..." (0: absent); a branch: "-" or a comma list
 * of put:key:value, delete:key, get:key (no result), get:key=value[@rev] or
 * get:key=- (absent).
 */
START_TEST(test_linearize_txn_sequential)
{
	const char *lines[] = {
	    "1 put a x 0 1 ok rev=2",
	    "1 txn a=2,b=0 put:b:y,get:a=x@2/get:a 2 3 ok branch=success rev=4",
	    "1 get b y 4 5 ok rev=4",
	    "1 txn a=2,b=0 put:c:z/get:b=y@4,delete:a,get:a=- 6 7 ok branch=failure rev=6",
	    "1 get a - 8 9 ok",
	    "1 get c - 8 9 ok",
	    NULL,
	};
	ck_assert_int_eq(check_lines(lines), 1);
}
END_TEST

START_TEST(test_linearize_txn_wrong_branch)
{
	/* b=0 holds (b absent) and a=2 holds: the failure branch is wrong. */
	const char *wrong[] = {"1 put a x 0 1 ok rev=2",
			       "1 txn a=2,b=0 put:b:y/- 2 3 ok branch=failure rev=4", NULL};
	/* a's revision is 2, not 3: success is wrong. */
	const char *wrong2[] = {"1 put a x 0 1 ok rev=2",
				"1 txn a=3 put:b:y/- 2 3 ok branch=success rev=4", NULL};
	/* A successful txn's put then read at another revision. */
	const char *wrong_rev[] = {"1 txn - put:b:y/- 2 3 ok branch=success rev=4",
				   "1 get b y 4 5 ok rev=5", NULL};
	ck_assert_int_eq(check_lines(wrong), 0);
	ck_assert_int_eq(check_lines(wrong2), 0);
	ck_assert_int_eq(check_lines(wrong_rev), 0);
}
END_TEST

START_TEST(test_linearize_txn_atomic)
{
	/* A txn writing a and b, and reads during it: seeing the new a and
	 * then (later) the old b could only come from a torn application. */
	const char *torn[] = {"1 txn - put:a:x,put:b:y/- 0 10 ok branch=success rev=5",
			      "2 get a x 1 2 ok rev=5", "2 get b - 3 4 ok", NULL};
	const char *whole[] = {"1 txn - put:a:x,put:b:y/- 0 10 ok branch=success rev=5",
			       "2 get b - 1 2 ok", "2 get a x 3 4 ok rev=5",
			       "2 get b y 5 6 ok rev=5", NULL};
	/* A txn reading both keys while another writes both. */
	const char *torn_txn_read[] = {"1 txn - put:a:x,put:b:y/- 0 10 ok branch=success rev=5",
				       "2 txn - get:a=x@5,get:b=-/- 1 9 ok branch=success rev=6",
				       NULL};
	const char *whole_txn_read[] = {"1 txn - put:a:x,put:b:y/- 0 10 ok branch=success rev=5",
					"2 txn - get:a=x@5,get:b=y@5/- 1 9 ok branch=success rev=6",
					NULL};
	ck_assert_int_eq(check_lines(torn), 0);
	ck_assert_int_eq(check_lines(whole), 1);
	ck_assert_int_eq(check_lines(torn_txn_read), 0);
	ck_assert_int_eq(check_lines(whole_txn_read), 1);
}
END_TEST

START_TEST(test_linearize_txn_compare_atomic)
{
	/* Two CAS-like txns on the same revision of a: both cannot succeed. */
	const char *both[] = {"1 put a x 0 1 ok rev=2",
			      "2 txn a=2 put:a:y/- 2 10 ok branch=success rev=4",
			      "3 txn a=2 put:a:z/- 2 10 ok branch=success rev=5", NULL};
	const char *one[] = {"1 put a x 0 1 ok rev=2",
			     "2 txn a=2 put:a:y/get:a 2 10 ok branch=success rev=4",
			     "3 txn a=2 put:a:z/get:a=y@4 2 10 ok branch=failure rev=5",
			     "1 get a y 11 12 ok rev=4", NULL};
	/* The compare on b sees a's txn's write of b only if after it. */
	const char *cross[] = {"1 txn - put:a:x,put:b:y/- 0 1 ok branch=success rev=3",
			       "2 txn b=0 put:c:z/- 2 3 ok branch=success rev=4", NULL};
	ck_assert_int_eq(check_lines(both), 0);
	ck_assert_int_eq(check_lines(one), 1);
	ck_assert_int_eq(check_lines(cross), 0);
}
END_TEST

START_TEST(test_linearize_txn_unknown)
{
	/* An unknown txn happened entirely or not at all. */
	const char *half[] = {"1 txn - put:a:x,put:b:y/- 0 1 unknown", "2 get a x 2 3 ok",
			      "2 get b - 4 5 ok", NULL};
	const char *all[] = {"1 txn - put:a:x,put:b:y/- 0 1 unknown", "2 get a x 2 3 ok",
			     "2 get b y 4 5 ok", NULL};
	const char *none[] = {"1 txn - put:a:x,put:b:y/- 0 1 unknown", "2 get a - 2 3 ok",
			      "2 get b - 4 5 ok", NULL};
	/* Late: the unknown txn may take effect after its client gave up. */
	const char *late[] = {"1 txn - put:a:x,put:b:y/- 0 1 unknown", "2 get a - 2 3 ok",
			      "2 get b y 4 5 ok", "2 get a x 6 7 ok", NULL};
	/* It runs the branch its comparisons select where it lands: a=0 holds
	 * before the put of a (success writes b), not after (failure writes c). */
	const char *branch_bad[] = {"1 txn a=0 put:b:y/put:c:z 0 1 unknown",
				    "2 put a w 2 3 ok rev=9", "2 get b y 4 5 ok",
				    "2 get c z 6 7 ok", NULL};
	const char *branch_ok[] = {"1 txn a=0 put:b:y/put:c:z 0 1 unknown",
				   "2 put a w 2 3 ok rev=9", "2 get c z 6 7 ok", NULL};
	/* A failed txn did nothing. */
	const char *failed[] = {"1 txn - put:a:x/- 0 1 fail", "2 get a x 2 3 ok", NULL};
	ck_assert_int_eq(check_lines(half), 0);
	ck_assert_int_eq(check_lines(all), 1);
	ck_assert_int_eq(check_lines(none), 1);
	ck_assert_int_eq(check_lines(late), 1);
	ck_assert_int_eq(check_lines(branch_bad), 0);
	ck_assert_int_eq(check_lines(branch_ok), 1);
	ck_assert_int_eq(check_lines(failed), 0);
}
END_TEST

START_TEST(test_linearize_txn_many_keys_fast)
{
	/* 200 rounds of 3 clients over 3 keys, txns joining all keys into one
	 * partition: must finish well within the default state budget. */
	struct linearize_history *h = linearize_history_create();
	struct linearize_op op;
	bool ok = false;
	char line[256];
	unsigned long long rev = 1;

	for (int i = 0; i < 200; i++) {
		unsigned long long t = (unsigned long long)i * 10;
		snprintf(line, sizeof(line), "1 put k%d v%d %llu %llu ok rev=%llu", i % 3, i, t,
			 t + 5, rev);
		ck_assert_int_eq(linearize_op_parse(line, &op), 0);
		ck_assert_int_eq(linearize_history_add(h, &op), 0);
		snprintf(line, sizeof(line),
			 "2 txn k%d=%llu put:k%d:w%d/- %llu %llu ok branch=success rev=%llu", i % 3,
			 rev, (i + 1) % 3, i, t + 6, t + 8, rev + 1);
		ck_assert_int_eq(linearize_op_parse(line, &op), 0);
		ck_assert_int_eq(linearize_history_add(h, &op), 0);
		snprintf(line, sizeof(line), "3 txn - put:k%d:u%d,delete:k%d/- %llu %llu unknown",
			 (i + 2) % 3, i, (i + 2) % 3, t + 1, t + 2);
		ck_assert_int_eq(linearize_op_parse(line, &op), 0);
		ck_assert_int_eq(linearize_history_add(h, &op), 0);
		rev += 3;
	}
	ck_assert_int_eq(linearize_history_check(h, 0, &ok, NULL, 0), 0);
	ck_assert(ok);
	linearize_history_destroy(h);
}
END_TEST

START_TEST(test_linearize_op_parse_txn)
{
	struct linearize_op op;
	char buf[512];
	FILE *f;
	const char *line = "3 txn a=7,b=0 put:a:x,delete:b,get:c=v@3,get:d=-/get:a 1 2 ok "
			   "branch=success rev=9\n";

	ck_assert_int_eq(linearize_op_parse(line, &op), 0);
	ck_assert_int_eq(op.kind, LINEARIZE_TXN);
	ck_assert_ptr_nonnull(op.txn);
	ck_assert_uint_eq(op.txn->n_cmp, 2);
	ck_assert_str_eq(op.txn->cmp[1].key, "b");
	ck_assert_uint_eq(op.txn->cmp[0].revision, 7);
	ck_assert_uint_eq(op.txn->n_ops[0], 4);
	ck_assert_uint_eq(op.txn->n_ops[1], 1);
	ck_assert_int_eq(op.txn->ops[0][2].kind, LINEARIZE_GET);
	ck_assert(op.txn->ops[0][2].has_result && op.txn->ops[0][2].has_value);
	ck_assert_str_eq(op.txn->ops[0][2].value, "v");
	ck_assert_uint_eq(op.txn->ops[0][2].revision, 3);
	ck_assert(op.txn->ops[0][3].has_result && !op.txn->ops[0][3].has_value);
	ck_assert(op.txn->succeeded);
	ck_assert_uint_eq(op.revision, 9);
	f = fmemopen(buf, sizeof(buf), "w");
	linearize_op_print(&op, f);
	fclose(f);
	ck_assert_str_eq(buf, line);
	ck_assert_int_eq(linearize_op_parse("3 txn - -/- 1 2 unknown", &op), 0);
	ck_assert_uint_eq(op.txn->n_cmp, 0);
	/* ok needs its branch; unknown has none and no results; no refusals */
	ck_assert_int_eq(linearize_op_parse("3 txn - put:a:x/- 1 2 ok", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - get:a=x/- 1 2 unknown", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - put:a:x/- 1 2 unknown branch=success", &op),
			 KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - put:a:x/- 1 2 refused", &op), KVD_EINVAL);
	/* malformed parts */
	ck_assert_int_eq(linearize_op_parse("3 txn a put:a:x/- 1 2 fail", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn a=x put:a:x/- 1 2 fail", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - put:a/- 1 2 fail", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - put:a:x 1 2 fail", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - cas:a:x/- 1 2 fail", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - delete:a:x/- 1 2 fail", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - put:a:x,,get:b/- 1 2 fail", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - get:a=x@0/- 1 2 ok branch=success", &op),
			 KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - -/- 1 2 ok branch=maybe", &op), KVD_EINVAL);
	ck_assert_int_eq(linearize_op_parse("3 txn - -/- 1 2 ok branch=success if=3", &op),
			 KVD_EINVAL);
}
END_TEST

START_TEST(test_linearize_write_index_order)
{
	/* A write's revision is its log index: writes take effect in that
	 * order, so a later write with a lower revision is impossible. */
	const char *backwards[] = {"1 put a x 0 1 ok rev=5", "2 put b y 2 3 ok rev=4",
				   "3 txn - get:a=x@5,get:b=y@4/- 4 5 ok branch=success rev=6",
				   NULL};
	const char *forwards[] = {"1 put a x 0 1 ok rev=4", "2 put b y 2 3 ok rev=5",
				  "3 txn - get:a=x@4,get:b=y@5/- 4 5 ok branch=success rev=6",
				  NULL};
	/* Same key, no txn: the revision order alone. */
	const char *same_key[] = {"1 put a x 0 1 ok rev=5", "2 delete a - 2 3 ok rev=3", NULL};
	/* An unknown write with index 3 cannot land after index 5. */
	const char *late_unknown[] = {"1 put a x 0 1 unknown rev=3",
				      "1 put a y 0 1 ok rev=2",
				      "2 put b z 2 3 ok rev=5",
				      "3 txn - get:a=y@2,get:b=z@5/- 4 5 ok branch=success rev=6",
				      "3 get a x 6 7 ok rev=3",
				      NULL};
	ck_assert_int_eq(check_lines(backwards), 0);
	ck_assert_int_eq(check_lines(forwards), 1);
	ck_assert_int_eq(check_lines(same_key), 0);
	ck_assert_int_eq(check_lines(late_unknown), 0);
}
END_TEST

START_TEST(test_linearize_unknown_writes_with_index_fast)
{
	/* 40 unknown txns with their indexes, then a write of a higher index
	 * and an impossible read: the search must exhaust every possibility.
	 * Retiring the unknown writes the higher index overtook keeps it to a
	 * few states per write instead of 2^40. */
	struct linearize_history *h = linearize_history_create();
	struct linearize_op op;
	bool ok = true;
	char line[256];

	for (int i = 0; i < 40; i++) {
		snprintf(line, sizeof(line), "%d txn - put:k:u%d,put:j:u%d/- %d %d unknown rev=%d",
			 i, i, i, i, i + 1, i + 1);
		ck_assert_int_eq(linearize_op_parse(line, &op), 0);
		ck_assert_int_eq(linearize_history_add(h, &op), 0);
		snprintf(line, sizeof(line), "%d get k - %d %d ok", 100 + i, 2 * i, 2 * i + 1);
		ck_assert_int_eq(linearize_op_parse(line, &op), 0);
		ck_assert_int_eq(linearize_history_add(h, &op), 0);
	}
	ck_assert_int_eq(linearize_op_parse("200 put k z 1000 1001 ok rev=100", &op), 0);
	ck_assert_int_eq(linearize_history_add(h, &op), 0);
	ck_assert_int_eq(linearize_history_check(h, 100000, &ok, NULL, 0), 0);
	ck_assert(ok);
	ck_assert_int_eq(linearize_op_parse("201 get j nope 1002 1003 ok", &op), 0);
	ck_assert_int_eq(linearize_history_add(h, &op), 0);
	ck_assert_int_eq(linearize_history_check(h, 100000, &ok, NULL, 0), 0);
	ck_assert(!ok);
	linearize_history_destroy(h);
}
END_TEST

/* Parses lines into changes (at most 16); returns how many. */
static size_t parse_changes(const char *const *lines, struct linearize_change *out)
{
	size_t n = 0;
	for (size_t i = 0; lines[i] != NULL; i++) {
		ck_assert_uint_lt(n, 16);
		ck_assert_int_eq(linearize_change_parse(lines[i], &out[n]), 0);
		n++;
	}
	return n;
}

/* 1 matches, 0 differs (why logged), -1 error. */
static int watch_lines(const char *const *events, const char *prefix, const char *key,
		       uint64_t from, bool complete)
{
	static const char *const applied_lines[] = {
	    "10 put a 1", "11 put b 2",	 "12 put a 3",	"12 delete b", /* a txn at 12 */
	    "13 clear",	  "14 put ab 5", "15 delete a", "16 put b 6",  NULL};
	struct linearize_change applied[16], ev[16];
	struct linearize_watch w = {prefix, key, from, complete};
	size_t na = parse_changes(applied_lines, applied), ne = parse_changes(events, ev);
	char why[256] = "";
	bool ok = false;
	if (linearize_watch_check(applied, na, ev, ne, &w, &ok, why, sizeof(why)) != 0)
		return -1;
	if (!ok)
		ck_assert(why[0] != '\0');
	return ok ? 1 : 0;
}

START_TEST(test_linearize_watch_check)
{
	const char *exact[] = {"12 put a 3", "13 clear", "14 put ab 5", "15 delete a", NULL};
	const char *cut[] = {"12 put a 3", "13 clear", NULL};
	const char *skipped[] = {"13 clear", "14 put ab 5", "15 delete a", NULL};
	const char *repeated[] = {"12 put a 3", "12 put a 3", "13 clear", NULL};
	const char *reordered[] = {"13 clear", "12 put a 3", NULL};
	const char *invented[] = {"12 put a 3",	 "13 clear",   "14 put ab 5",
				  "15 delete a", "17 put a 9", NULL};
	const char *wrong_value[] = {"12 put a 4", NULL};
	const char *wrong_rev[] = {"12 put a 3", "13 clear", "14 put ab 5", "16 delete a", NULL};
	/* All keys from 12: the txn at 12 is two changes; half of it is a
	 * lost event. */
	const char *whole_txn[] = {"12 put a 3", "12 delete b", "13 clear", NULL};
	const char *half_txn[] = {"12 put a 3", "13 clear", NULL};
	const char *txn_split[] = {"12 put a 3", "13 delete b", "13 clear", NULL};
	/* Exactly key a: not ab. */
	const char *key_a[] = {"10 put a 1", "12 put a 3", "13 clear", "15 delete a", NULL};
	const char *key_a_with_ab[] = {"10 put a 1", "12 put a 3", "13 clear", "14 put ab 5", NULL};
	const char *none[] = {NULL};

	ck_assert_int_eq(watch_lines(exact, "a", NULL, 11, true), 1);
	ck_assert_int_eq(watch_lines(cut, "a", NULL, 11, false), 1);
	ck_assert_int_eq(watch_lines(cut, "a", NULL, 11, true), 0);
	ck_assert_int_eq(watch_lines(skipped, "a", NULL, 11, false), 0);
	ck_assert_int_eq(watch_lines(repeated, "a", NULL, 11, false), 0);
	ck_assert_int_eq(watch_lines(reordered, "a", NULL, 11, false), 0);
	ck_assert_int_eq(watch_lines(invented, "a", NULL, 11, false), 0);
	ck_assert_int_eq(watch_lines(wrong_value, "a", NULL, 11, false), 0);
	ck_assert_int_eq(watch_lines(wrong_rev, "a", NULL, 11, false), 0);
	ck_assert_int_eq(watch_lines(whole_txn, "", NULL, 12, false), 1);
	ck_assert_int_eq(watch_lines(half_txn, "", NULL, 12, false), 0);
	ck_assert_int_eq(watch_lines(txn_split, NULL, NULL, 12, false), 0);
	ck_assert_int_eq(watch_lines(key_a, NULL, "a", 0, true), 1);
	ck_assert_int_eq(watch_lines(key_a_with_ab, NULL, "a", 0, false), 0);
	ck_assert_int_eq(watch_lines(none, "a", NULL, 16, true), 1); /* nothing matches */
	ck_assert_int_eq(watch_lines(none, "a", NULL, 11, true), 0);
}
END_TEST

START_TEST(test_linearize_watch_check_bad_input)
{
	struct linearize_change c[2];
	struct linearize_watch w = {NULL, NULL, 0, false};
	bool ok;
	ck_assert_int_eq(linearize_change_parse("# comment", &c[0]), KVD_ENOTFOUND);
	ck_assert_int_eq(linearize_change_parse("0 put a 1", &c[0]), KVD_EINVAL);
	ck_assert_int_eq(linearize_change_parse("x put a 1", &c[0]), KVD_EINVAL);
	ck_assert_int_eq(linearize_change_parse("3 put a", &c[0]), KVD_EINVAL);
	ck_assert_int_eq(linearize_change_parse("3 delete a 1", &c[0]), KVD_EINVAL);
	ck_assert_int_eq(linearize_change_parse("3 clear a", &c[0]), KVD_EINVAL);
	ck_assert_int_eq(linearize_change_parse("3 move a", &c[0]), KVD_EINVAL);
	ck_assert_int_eq(linearize_change_parse("3 put a 1", &c[0]), 0);
	ck_assert_int_eq(linearize_change_parse("2 delete a", &c[1]), 0);
	/* the applied sequence itself out of revision order */
	ck_assert_int_eq(linearize_watch_check(c, 2, c, 0, &w, &ok, NULL, 0), KVD_EINVAL);
}
END_TEST

static Suite *linearize_suite(void)
{
	Suite *s = suite_create("linearize");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_linearize_history_check_empty);
	tcase_add_test(tc, test_linearize_history_check_sequential);
	tcase_add_test(tc, test_linearize_history_check_concurrent_read_either);
	tcase_add_test(tc, test_linearize_history_check_stale_read);
	tcase_add_test(tc, test_linearize_history_check_read_reordering);
	tcase_add_test(tc, test_linearize_history_check_value_never_written);
	tcase_add_test(tc, test_linearize_history_check_failed_write_seen);
	tcase_add_test(tc, test_linearize_history_check_unknown_write_late);
	tcase_add_test(tc, test_linearize_history_check_unknown_write_not_twice);
	tcase_add_test(tc, test_linearize_history_check_delete);
	tcase_add_test(tc, test_linearize_history_check_keys_independent);
	tcase_add_test(tc, test_linearize_history_check_many_concurrent);
	tcase_add_test(tc, test_linearize_history_check_unread_unknown_writes);
	tcase_add_test(tc, test_linearize_history_check_state_budget);
	tcase_add_test(tc, test_linearize_op_parse_valid);
	tcase_add_test(tc, test_linearize_op_parse_malformed);
	tcase_add_test(tc, test_linearize_revisions_and_conditional_writes);
	tcase_add_test(tc, test_linearize_op_parse_revisions);
	tcase_add_test(tc, test_linearize_txn_sequential);
	tcase_add_test(tc, test_linearize_txn_wrong_branch);
	tcase_add_test(tc, test_linearize_txn_atomic);
	tcase_add_test(tc, test_linearize_txn_compare_atomic);
	tcase_add_test(tc, test_linearize_txn_unknown);
	tcase_add_test(tc, test_linearize_txn_many_keys_fast);
	tcase_add_test(tc, test_linearize_op_parse_txn);
	tcase_add_test(tc, test_linearize_write_index_order);
	tcase_add_test(tc, test_linearize_unknown_writes_with_index_fast);
	tcase_add_test(tc, test_linearize_watch_check);
	tcase_add_test(tc, test_linearize_watch_check_bad_input);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(linearize_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
