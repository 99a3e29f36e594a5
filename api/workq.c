/*
 * workq.c: one worker thread with an ordered job list and loop completions.
 *
 * Invariant: jobs complete in submission order, so "completed" is a prefix
 * of "submitted" and a sequence number says how far durability has reached.
 */
#include "api/workq.h"

#include "kvd/errors.h"

/*
 * Hand-offs (docs/benchmarks.md, "Thread hand-offs"): the worker posts a
 * batch's completions and takes the jobs queued meanwhile under one lock,
 * and runs them without sleeping in between; the loop is woken after the
 * lock is released, so its deliver() does not block on a mutex the worker
 * still holds. The submitter signals only a worker that sleeps, after
 * unlocking, so the woken worker does not wake into a held mutex.
 */
static void *worker_main(void *arg)
{
	struct kvd_workq *q = arg;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		struct kvd_workq_job *batch, *last;

		while (q->pending == NULL && !q->stopping) {
			q->waiting = true;
			pthread_cond_wait(&q->cond, &q->mu);
		}
		q->waiting = false;
		if (q->pending == NULL && q->stopping)
			break;
		batch = q->pending;
		last = q->pending_tail;
		q->pending = q->pending_tail = NULL;
		pthread_mutex_unlock(&q->mu);

		while (batch != NULL) {
			struct kvd_workq_job *next, *next_last;

			q->run_cb(q, batch);

			pthread_mutex_lock(&q->mu);
			if (q->done_tail != NULL)
				q->done_tail->next = batch;
			else
				q->done = batch;
			q->done_tail = last;
			next = q->pending;
			next_last = q->pending_tail;
			q->pending = q->pending_tail = NULL;
			pthread_mutex_unlock(&q->mu);
			uv_async_send(&q->async);
			batch = next;
			last = next_last;
		}
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

static void deliver(struct kvd_workq *q)
{
	struct kvd_workq_job *list;

	pthread_mutex_lock(&q->mu);
	list = q->done;
	q->done = q->done_tail = NULL;
	pthread_mutex_unlock(&q->mu);
	while (list != NULL) {
		struct kvd_workq_job *next = list->next;
		list->next = NULL;
		q->completed = list->seq;
		q->done_cb(q, list);
		list = next;
	}
}

static void async_cb(uv_async_t *a)
{
	deliver(a->data);
}

int kvd_workq_start(struct kvd_workq *q, uv_loop_t *loop, kvd_workq_run_cb run_cb,
		    kvd_workq_done_cb done_cb, void *data)
{
	q->pending = q->pending_tail = q->done = q->done_tail = NULL;
	q->stopping = false;
	q->waiting = false;
	q->submitted = q->completed = 0;
	q->run_cb = run_cb;
	q->done_cb = done_cb;
	q->data = data;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cond, NULL);
	if (uv_async_init(loop, &q->async, async_cb) != 0)
		goto err_sync;
	q->async.data = q;
	if (pthread_create(&q->thread, NULL, worker_main, q) != 0)
		goto err_async;
	q->started = true;
	return 0;
err_async:
	uv_close((uv_handle_t *)&q->async, NULL);
err_sync:
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->mu);
	return KVD_EIO;
}

uint64_t kvd_workq_submit(struct kvd_workq *q, struct kvd_workq_job *job)
{
	bool wake;

	job->next = NULL;
	job->seq = ++q->submitted;
	job->status = 0;
	pthread_mutex_lock(&q->mu);
	if (q->pending_tail != NULL)
		q->pending_tail->next = job;
	else
		q->pending = job;
	q->pending_tail = job;
	wake = q->waiting;
	q->waiting = false; /* one wake-up is enough for the jobs queued until it runs */
	pthread_mutex_unlock(&q->mu);
	if (wake)
		pthread_cond_signal(&q->cond);
	return job->seq;
}

bool kvd_workq_idle(const struct kvd_workq *q)
{
	return q->completed == q->submitted;
}

void kvd_workq_stop(struct kvd_workq *q)
{
	if (!q->started)
		return;
	pthread_mutex_lock(&q->mu);
	q->stopping = true;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->thread, NULL);
	deliver(q);
	uv_close((uv_handle_t *)&q->async, NULL);
	q->started = false;
}
