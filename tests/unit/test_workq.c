/*
 * test_workq.c: the worker queue (api/workq.c) on a real libuv loop and a
 * real worker thread: completions arrive on the loop in submission order,
 * none is lost when the loop sleeps between bursts (the eventfd wake-up is
 * written at most once until the loop takes the completions, so a lost
 * wake-up would hang the loop and fail on Check's timeout), stop delivers
 * what is still queued, and kvd_workq_poll() delivers what is posted without
 * the loop.
 */
#include <check.h>
#include <stdlib.h>
#include <unistd.h>

#include "api/workq.h"

struct world {
	uv_loop_t loop;
	struct kvd_workq q;
	unsigned total, submitted, done;
	uint64_t last_seq;
	bool in_order;
	unsigned seed;
};

static void run(struct kvd_workq *q, struct kvd_workq_job *batch)
{
	struct world *w = q->data;

	for (; batch != NULL; batch = batch->next) {
		batch->status = 0;
		if (rand_r(&w->seed) % 32 == 0)
			usleep(20); /* the loop may go to sleep meanwhile */
	}
}

static void submit_burst(struct world *w)
{
	unsigned n = 1 + (unsigned)rand() % 40;

	for (unsigned i = 0; i < n && w->submitted < w->total; i++) {
		struct kvd_workq_job *j = calloc(1, sizeof(*j));
		ck_assert_ptr_nonnull(j);
		kvd_workq_submit(&w->q, j);
		w->submitted++;
	}
}

static void done(struct kvd_workq *q, struct kvd_workq_job *job)
{
	struct world *w = q->data;

	if (job->seq != w->last_seq + 1 || job->status != 0)
		w->in_order = false;
	w->last_seq = job->seq;
	w->done++;
	free(job);
	/* the next burst once all are back (the loop then sleeps until the
	 * worker wakes it), or sometimes while some are still out */
	if (w->submitted < w->total && (w->done == w->submitted || rand() % 8 == 0))
		submit_burst(w);
	else if (w->done == w->total && w->submitted == w->total)
		kvd_workq_stop(q); /* closes the poll handle: the loop ends */
}

START_TEST(test_completions_in_order_none_lost)
{
	struct world w = {.total = 20000, .in_order = true, .seed = 7};

	srand(11);
	ck_assert_int_eq(uv_loop_init(&w.loop), 0);
	ck_assert_int_eq(kvd_workq_start(&w.q, &w.loop, run, done, &w), 0);
	submit_burst(&w);
	ck_assert_int_eq(uv_run(&w.loop, UV_RUN_DEFAULT), 0);
	ck_assert_uint_eq(w.done, w.total);
	ck_assert(w.in_order);
	ck_assert(kvd_workq_idle(&w.q));
	ck_assert_int_eq(uv_loop_close(&w.loop), 0);
}
END_TEST

static void done_count(struct kvd_workq *q, struct kvd_workq_job *job)
{
	struct world *w = q->data;

	if (job->seq != w->last_seq + 1)
		w->in_order = false;
	w->last_seq = job->seq;
	w->done++;
	free(job);
}

START_TEST(test_stop_delivers_what_is_queued)
{
	struct world w = {.total = 1000, .in_order = true, .seed = 3};

	ck_assert_int_eq(uv_loop_init(&w.loop), 0);
	ck_assert_int_eq(kvd_workq_start(&w.q, &w.loop, run, done_count, &w), 0);
	for (unsigned i = 0; i < w.total; i++) {
		struct kvd_workq_job *j = calloc(1, sizeof(*j));
		ck_assert_ptr_nonnull(j);
		kvd_workq_submit(&w.q, j);
	}
	kvd_workq_stop(&w.q); /* the loop never ran: every completion comes from stop */
	ck_assert_uint_eq(w.done, w.total);
	ck_assert(w.in_order);
	ck_assert_int_eq(uv_run(&w.loop, UV_RUN_DEFAULT), 0); /* the closing handle */
	ck_assert_int_eq(uv_loop_close(&w.loop), 0);
}
END_TEST

START_TEST(test_poll_delivers_without_the_loop)
{
	struct world w = {.total = 1, .in_order = true, .seed = 5};
	struct kvd_workq_job *j = calloc(1, sizeof(*j));

	ck_assert_int_eq(uv_loop_init(&w.loop), 0);
	ck_assert_int_eq(kvd_workq_start(&w.q, &w.loop, run, done_count, &w), 0);
	kvd_workq_poll(&w.q); /* nothing posted: nothing delivered */
	ck_assert_uint_eq(w.done, 0);
	kvd_workq_submit(&w.q, j);
	for (int i = 0; i < 5000 && w.done == 0; i++) {
		usleep(1000);
		kvd_workq_poll(&w.q); /* the loop never runs */
	}
	ck_assert_uint_eq(w.done, 1);
	ck_assert(kvd_workq_idle(&w.q));
	kvd_workq_stop(&w.q);
	ck_assert_uint_eq(w.done, 1); /* delivered once */
	ck_assert_int_eq(uv_run(&w.loop, UV_RUN_DEFAULT), 0);
	ck_assert_int_eq(uv_loop_close(&w.loop), 0);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("workq");
	TCase *tc = tcase_create("workq");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_completions_in_order_none_lost);
	tcase_add_test(tc, test_stop_delivers_what_is_queued);
	tcase_add_test(tc, test_poll_delivers_without_the_loop);
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
