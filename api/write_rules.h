/*
 * write_rules.h: the two rules of the node's log writer (api/writer.c), apart
 * from the loop and the threads so unit tests and the simulation
 * (tests/sim) run them exactly as the daemon does:
 *  - What a batch reports (worker thread): the writer runs every queued job
 *    and then one fdatasync (group commit). Nothing of a batch counts as
 *    durable unless that fdatasync succeeded: if any job fails, or the sync
 *    does, every job of the batch reports the failure and the log store goes
 *    back to what the last successful sync covered.
 *  - What a completion reports (loop thread): an append job that finished
 *    may only report entries that no later-submitted job truncates. Matching
 *    on (index, term) alone is not enough: job A writes (i, t), job B
 *    truncates i and writes (i, t2), job C writes (i, t) again; when A
 *    finishes, the core already holds C's (i, t) and would count i as
 *    persisted although B is about to replace it on disk.
 *
 * Depends on nothing of api/ but this file's own .c.
 *
 * Thread: kvd_writer_batch_end() runs on the writer thread with the store;
 * struct kvd_writer_track is the loop thread's, not thread-safe.
 */
#ifndef KVD_API_WRITE_RULES_H
#define KVD_API_WRITE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/log_store.h"
#include "raft/raft.h"

/*
 * Ends a writer batch. failed: the first error of a job of the batch (0 if
 * none); appended: some job appended entries. With a failure, entries the
 * store holds beyond its last sync are discarded; otherwise, after appends,
 * the store is synced. Returns the status every job of the batch reports: 0
 * only when everything the batch wrote is durable. errmsg (KVD_ERRMSG_SIZE
 * bytes) gets the sync's or the discard's message, if any.
 */
int kvd_writer_batch_end(struct raft_log_store *store, bool appended, int failed, char *errmsg);

/* One submitted append job, as the loop thread remembers it. */
struct kvd_writer_inflight {
	uint64_t seq;		  /* the writer queue's sequence number of the job */
	raft_index truncate_from; /* 0: no truncation */
};

/* The append jobs submitted and not yet completed, in submission order. */
struct kvd_writer_track {
	struct kvd_writer_inflight *items; /* ring buffer, owned */
	size_t head, n, cap;
	/* A job the core counts on could not be submitted (out of memory): the
	 * node stops the core, and no message that needs a sync may go out. */
	bool lost;
};

/* Records a submitted append job, or a log reset (after a snapshot install)
 * as a truncation from the snapshot index + 1. Returns 0 or KVD_ENOMEM (then
 * lost is set: the caller must treat the job as not submitted). */
int kvd_writer_track_append(struct kvd_writer_track *t, uint64_t seq, raft_index truncate_from);

/* Marks that a job could not be submitted (see lost). */
void kvd_writer_track_lost(struct kvd_writer_track *t);

/*
 * For a message flagged needs_sync: true with *seq = submitted (the writer
 * sequence it must wait for), or false when it must be dropped because a job
 * it depends on was never submitted.
 */
bool kvd_writer_track_sync_seq(const struct kvd_writer_track *t, uint64_t submitted, uint64_t *seq);

/*
 * The append job seq completed successfully with entries (n of them, n may be
 * 0). Forgets jobs up to seq. Returns true with the (index, term) to report
 * persisted: the last of entries that no job submitted after seq truncates
 * away; false when there is nothing to report.
 */
bool kvd_writer_track_done(struct kvd_writer_track *t, uint64_t seq,
			   const struct raft_entry *entries, size_t n, raft_index *index,
			   raft_term *term);

/* Forgets every job and the lost mark (the core restarts with idle workers). */
void kvd_writer_track_clear(struct kvd_writer_track *t);

/* Frees the ring. */
void kvd_writer_track_free(struct kvd_writer_track *t);

#endif
