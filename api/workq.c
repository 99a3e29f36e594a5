/*
 * workq.c: one worker thread with an ordered job list and loop completions.
 *
 * Invariant: jobs complete in submission order, so "completed" is a prefix
 * of "submitted" and a sequence number says how far durability has reached.
 */
#include "api/workq.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "kvd/errors.h"

/*
 * Hand-offs (docs/benchmarks.md, "Thread hand-offs"): the worker posts a
 * batch's completions and takes the jobs queued meanwhile under one lock,
 * and runs them without sleeping in between; the loop is woken after the
 * lock is released, so its deliver() does not block on a mutex the worker
 * still holds. The submitter signals only a worker that sleeps, after
 * unlocking, so the woken worker does not wake into a held mutex.
 *
 * The loop is woken through an eventfd of our own (uv_poll), written at most
 * once until the loop has taken the completions, not through uv_async:
 * libuv 1.44's uv_async_send marks the handle busy around its write(), and
 * the woken loop spins (pause loop, then sched_yield) while it is busy; with
 * the worker preempted by the loop it woke, on two cores, that spin was 7 %
 * of a follower's loop thread.
 */
static void notify_loop(struct kvd_workq *q)
{
	uint64_t one = 1;
	ssize_t n;

	do
		n = write(q->efd, &one, sizeof(one));
	while (n < 0 && errno == EINTR);
	/* EAGAIN: the counter is full, so the loop is woken anyway */
}

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
			bool notify;

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
			notify = !q->notified;
			__atomic_store_n(&q->notified, true, __ATOMIC_RELEASE);
			pthread_mutex_unlock(&q->mu);
			if (notify)
				notify_loop(q);
			batch = next;
			last = next_last;
		}
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

/* Takes the posted completions (the worker writes the eventfd again for any
 * posted after this) and runs done_cb on each. */
static void deliver(struct kvd_workq *q)
{
	struct kvd_workq_job *list;

	pthread_mutex_lock(&q->mu);
	list = q->done;
	q->done = q->done_tail = NULL;
	__atomic_store_n(&q->notified, false, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&q->mu);
	while (list != NULL) {
		struct kvd_workq_job *next = list->next;
		list->next = NULL;
		q->completed = list->seq;
		q->done_cb(q, list);
		list = next;
	}
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
	struct kvd_workq *q = h->data;
	uint64_t count;

	(void)status;
	(void)events;
	/* cleared before the completions are taken: one posted meanwhile
	 * writes it again */
	while (read(q->efd, &count, sizeof(count)) < 0 && errno == EINTR)
		;
	deliver(q);
}

int kvd_workq_start(struct kvd_workq *q, uv_loop_t *loop, kvd_workq_run_cb run_cb,
		    kvd_workq_done_cb done_cb, void *data)
{
	q->pending = q->pending_tail = q->done = q->done_tail = NULL;
	q->stopping = false;
	q->waiting = false;
	q->notified = false;
	q->submitted = q->completed = 0;
	q->run_cb = run_cb;
	q->done_cb = done_cb;
	q->data = data;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cond, NULL);
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0)
		goto err_sync;
	if (uv_poll_init(loop, &q->poll, q->efd) != 0) {
		close(q->efd);
		goto err_sync;
	}
	q->poll.data = q;
	if (uv_poll_start(&q->poll, UV_READABLE, poll_cb) != 0 ||
	    pthread_create(&q->thread, NULL, worker_main, q) != 0)
		goto err_poll;
	q->started = true;
	return 0;
err_poll:
	uv_close((uv_handle_t *)&q->poll, NULL);
	close(q->efd);
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

void kvd_workq_poll(struct kvd_workq *q)
{
	/* A racy look is enough: a completion missed here wakes the loop
	 * through the eventfd as usual. */
	if (q->started && __atomic_load_n(&q->notified, __ATOMIC_ACQUIRE))
		deliver(q);
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
	uv_close((uv_handle_t *)&q->poll, NULL); /* stops polling the descriptor at once */
	close(q->efd);
	q->started = false;
}
