/*
 * workq.c: one worker thread with an ordered job list and loop completions.
 *
 * Invariant: jobs complete in submission order, so "completed" is a prefix
 * of "submitted" and a sequence number says how far durability has reached.
 */
#include "api/workq.h"

#include "kvd/errors.h"

static void *worker_main(void *arg)
{
	struct kvd_workq *q = arg;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		struct kvd_workq_job *batch, *last;

		while (q->pending == NULL && !q->stopping)
			pthread_cond_wait(&q->cond, &q->mu);
		if (q->pending == NULL && q->stopping)
			break;
		batch = q->pending;
		last = q->pending_tail;
		q->pending = q->pending_tail = NULL;
		pthread_mutex_unlock(&q->mu);

		q->run_cb(q, batch);

		pthread_mutex_lock(&q->mu);
		if (q->done_tail != NULL)
			q->done_tail->next = batch;
		else
			q->done = batch;
		q->done_tail = last;
		uv_async_send(&q->async);
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
	job->next = NULL;
	job->seq = ++q->submitted;
	job->status = 0;
	pthread_mutex_lock(&q->mu);
	if (q->pending_tail != NULL)
		q->pending_tail->next = job;
	else
		q->pending = job;
	q->pending_tail = job;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->mu);
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
