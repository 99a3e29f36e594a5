/*
 * workq.h: a single worker thread fed from the event loop, with completions
 * posted back to the loop through an eventfd (workq.c says why not uv_async).
 *
 * The disk writer (log appends, fsyncs, term/vote) and the state-machine
 * applier are each one workq: jobs run in submission order, one thread, so
 * log operations happen in order through one writer (ARCHITECTURE.md). The
 * worker takes every queued job at once and hands the whole batch to run_cb,
 * which is how many appends share one fdatasync (group commit).
 *
 * Threads: kvd_workq_submit() and the done callback run on the loop thread;
 * run_cb runs on the worker thread.
 */
#ifndef KVD_API_WORKQ_H
#define KVD_API_WORKQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct kvd_workq_job {
	struct kvd_workq_job *next;
	uint64_t seq; /* submission number, from 1 */
	int status;   /* set by run_cb: 0 or a kvd_error code */
};

struct kvd_workq;

/* Runs a batch of jobs (a linked list in submission order) on the worker. */
typedef void (*kvd_workq_run_cb)(struct kvd_workq *q, struct kvd_workq_job *batch);
/* Receives finished jobs, in submission order, on the loop thread. The job
 * belongs to the callback from then on. */
typedef void (*kvd_workq_done_cb)(struct kvd_workq *q, struct kvd_workq_job *job);

struct kvd_workq {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct kvd_workq_job *pending, *pending_tail; /* guarded by mu */
	struct kvd_workq_job *done, *done_tail;	      /* guarded by mu */
	bool stopping;				      /* guarded by mu */
	bool waiting;	    /* guarded by mu: the worker sleeps on cond, not yet signalled */
	bool notified;	    /* written under mu (atomic stores): the eventfd is written,
			       deliver() not yet run; kvd_workq_poll() reads it without mu */
	uint64_t submitted; /* loop thread only */
	uint64_t completed; /* loop thread only */
	int efd;	    /* eventfd: completions posted */
	uv_poll_t poll;	    /* on efd, loop thread */
	kvd_workq_run_cb run_cb;
	kvd_workq_done_cb done_cb;
	void *data; /* user data for the callbacks */
	bool started;
};

/* Starts the worker thread. Returns 0 or KVD_EIO. */
int kvd_workq_start(struct kvd_workq *q, uv_loop_t *loop, kvd_workq_run_cb run_cb,
		    kvd_workq_done_cb done_cb, void *data);

/* Queues a job (ownership passes to the queue until done_cb). Returns its
 * sequence number. */
uint64_t kvd_workq_submit(struct kvd_workq *q, struct kvd_workq_job *job);

/*
 * Loop thread: delivers the completions posted so far, if any, without
 * waiting for the loop to see the eventfd. Called between other events of a
 * busy loop iteration (after each client read), so that a finished fsync or
 * apply is carried on within tens of microseconds instead of after every
 * other event of the iteration (docs/benchmarks.md, "Completions between
 * reads"). Costs one atomic load when there is none.
 */
void kvd_workq_poll(struct kvd_workq *q);

/* True when every submitted job has completed. */
bool kvd_workq_idle(const struct kvd_workq *q);

/*
 * Lets the worker finish what is queued, joins it, delivers the remaining
 * completions, and closes the poll handle (freed by the loop) and the eventfd.
 * Call once.
 */
void kvd_workq_stop(struct kvd_workq *q);

#endif
