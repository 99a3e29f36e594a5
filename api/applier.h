/*
 * applier.h: the node's applier, one part of the driver (issue 7): the
 * thread that applies committed entries to LevelDB in order (one
 * WriteBatch per job, carrying the applied index), the client writes
 * waiting for their entry to be applied, and the applied index.
 *
 * Other parts run their own steps on the applier thread as tasks (the
 * snapshot install's check and swap), so that nothing else touches LevelDB
 * while entries are applied.
 *
 * Thread: every function on the loop thread; a task's run_cb on the applier
 * thread.
 */
#ifndef KVD_API_APPLIER_H
#define KVD_API_APPLIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/workq.h"
#include "raft/raft.h"

struct kvd_node;
struct kvd_applier;
struct http_request;
struct uv_loop_s;

/* A step another part runs on the applier thread, in order with the entries.
 * Embed it first in the part's own job struct. */
struct kvd_applier_task {
	struct kvd_workq_job base; /* the applier's */
	/* Applier thread: does the work; returns 0 or a kvd_error. */
	int (*run_cb)(struct kvd_node *n, struct kvd_applier_task *t);
	/* Loop thread: the task finished with status (run_cb's result); the
	 * task belongs to the callback from then on. */
	void (*done_cb)(struct kvd_node *n, struct kvd_applier_task *t, int status);
};

/* Starts the applier thread for node n (borrowed; it applies to
 * n->engine). Returns 0 with *out (free with kvd_applier_destroy() after
 * kvd_applier_stop()) or KVD_ENOMEM / KVD_EIO. */
int kvd_applier_create(struct kvd_node *n, struct uv_loop_s *loop, struct kvd_applier **out);

/* Lets the thread finish its queue and joins it. */
void kvd_applier_stop(struct kvd_applier *a);

/* Saves the watch ring when every job is applied (a clean stop), then
 * frees the part, its watcher hub and any write still waiting
 * (unanswered); NULL does nothing. */
void kvd_applier_destroy(struct kvd_applier *a);

/* True when every submitted job has completed. */
bool kvd_applier_idle(const struct kvd_applier *a);

/* Loop thread: carries on the jobs completed so far (kvd_workq_poll()). */
void kvd_applier_poll(struct kvd_applier *a);

/* The index the applier last reported applied. */
raft_index kvd_applier_applied(const struct kvd_applier *a);

/* The state machine now holds exactly index (start, install, reinit); the
 * watch hub starts there too (at the start: with the ring a clean stop
 * saved, when it ends at index). */
void kvd_applier_reset(struct kvd_applier *a, raft_index index);

/* The start's reset (kvd_recovery_start_core()): the state machine holds
 * exactly applied; entries[0..n) (borrowed for the call) are the log after
 * prev_index (the latest snapshot's index, or where the log starts), in
 * order. When no ring saved by a clean stop ends at applied (a crash, or a
 * core restart), the watch ring is refilled with the changes of the entries
 * in (prev_index, applied], rebuilt from the log and the engine's recorded
 * outcomes (engine_entry_changes()), within the ring's bounds; if one
 * cannot be rebuilt the ring starts empty at applied, as a reset does. */
void kvd_applier_start(struct kvd_applier *a, raft_index applied, raft_index prev_index,
		       const struct raft_entry *entries, size_t n);

/* Queues the deletion of the engine's recorded outcomes below index below
 * (engine_outcomes_prune(), on the applier thread): called once a snapshot
 * covers them. A failure is logged and left for the next snapshot. */
void kvd_applier_prune_outcomes(struct kvd_applier *a, raft_index below);

/* The watcher hub (api/watch.h) the applier feeds with every applied job's
 * changes; owned by the applier. Its ring is saved at destroy (a clean
 * stop) in <data>/watch-ring and loaded at the start's reset. */
struct kvd_watch_hub *kvd_applier_watch(struct kvd_applier *a);

/* Queues the update's committed entries (copied) and marks the waiting
 * writes they carry; a waiting write whose index got another term's entry
 * gets 503. Out of memory ends the process (committed entries must apply). */
void kvd_applier_submit_entries(struct kvd_applier *a, const struct raft_update *u);

/* Queues a task (ownership passes until done_cb). */
void kvd_applier_submit_task(struct kvd_applier *a, struct kvd_applier_task *t);

/* How a waiting write is answered once its entry is applied (API.md §10,
 * §12): a condition that did not hold gives 412 for PUT and DELETE. */
enum kvd_write_kind {
	KVD_WRITE_PLAIN = 0, /* DELETE, /clear: 200, empty body */
	KVD_WRITE_PUT = 1,   /* PUT: 200 with ETag: "<new revision>" */
	KVD_WRITE_TXN = 2,   /* POST /txn: 200 with the transaction's JSON answer */
};

/* Records a client write of kind proposed at (index, term) that gets its
 * answer once applied (from the entry's engine_result), or 503 at deadline
 * (loop time, ms). req: borrowed until answered. Returns 0 or KVD_ENOMEM
 * (nothing recorded). */
int kvd_applier_wait_write(struct kvd_applier *a, struct http_request *req, raft_index index,
			   raft_term term, uint64_t deadline, enum kvd_write_kind kind);

/* Answers every waiting write not yet handed over for applying with status
 * and the text why (borrowed); those handed over are applied soon and kept. */
void kvd_applier_fail_writes(struct kvd_applier *a, int status, const char *why);

/* Answers waiting writes past their deadline (now: loop time, ms) with 503. */
void kvd_applier_sweep(struct kvd_applier *a, uint64_t now);

#endif
