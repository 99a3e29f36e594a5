/*
 * writer.h: the node's log writer, one part of the driver (issue 7): the
 * thread that does every log and term/vote write, in submission order, with
 * one fdatasync per batch (group commit); the incoming snapshot file's
 * chunks and the log reset of an install; GET /log reads.
 *
 * The part owns its queue and its record of the append jobs in flight
 * (struct kvd_writer, private to writer.c); the driver submits jobs, and the
 * completions go to the core (RAFT_EVENT_PERSISTED through kvd_node_step),
 * to the driver's disk-error handling (kvd_node_disk_error), or to the
 * callback the submitter gave.
 *
 * The writer's two rules (what a batch reports, what a completion reports)
 * live in api/write_rules.h, apart from the loop and the threads, so that
 * unit tests and the simulation use them as they are.
 *
 * Thread: the loop thread, except where a prototype says otherwise.
 */
#ifndef KVD_API_WRITER_H
#define KVD_API_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/write_rules.h"
#include "raft/log_store.h"
#include "raft/raft.h"

struct kvd_node;
struct http_request;
struct kvd_writer;
struct uv_loop_s;

/* Loop thread: a received snapshot chunk was written (status 0; the last
 * chunk is fsynced) or not (status a kvd_error, errmsg says why). Called
 * for a failed chunk and for the last one. chunk: borrowed for the call. */
typedef void (*kvd_writer_chunk_cb)(struct kvd_node *n, int status, const char *errmsg,
				    const struct raft_snapshot *chunk);

/* Loop thread: a log reset finished (status 0 or a kvd_error; errmsg says
 * why). ctx: the submitter's. Called before the disk error (if any) is
 * handled like any log write's. */
typedef void (*kvd_writer_reset_cb)(struct kvd_node *n, int status, void *ctx);

/* Copies n entries and their bytes into *out and one block *data (both
 * malloc'ed, the caller frees both). Returns 0 or KVD_ENOMEM. Any thread. */
int kvd_entries_copy(const struct raft_entry *src, unsigned n, struct raft_entry **out,
		     char **data);

/*
 * Starts the writer thread for node n (borrowed; the store is n->store,
 * which only the writer thread touches from now on). Returns 0 with *out
 * (free with kvd_writer_destroy() after kvd_writer_stop() and the loop's
 * close callbacks) or KVD_ENOMEM / KVD_EIO. Loop thread.
 */
int kvd_writer_create(struct kvd_node *n, struct uv_loop_s *loop, struct kvd_writer **out);

/* Lets the thread finish its queue and joins it (kvd_workq_stop). */
void kvd_writer_stop(struct kvd_writer *w);

/* Frees the part; NULL does nothing. */
void kvd_writer_destroy(struct kvd_writer *w);

/* True when every submitted job has completed. */
bool kvd_writer_idle(const struct kvd_writer *w);

/* Loop thread: carries on the jobs completed so far (kvd_workq_poll()). */
void kvd_writer_poll(struct kvd_writer *w);

/* Jobs completed so far (messages held for a sync wait for this count). */
uint64_t kvd_writer_completed(const struct kvd_writer *w);

/* Forgets the append jobs in flight (the core restarts, workers idle). */
void kvd_writer_clear(struct kvd_writer *w);

/* For a message flagged needs_sync: true with *seq, the job count it must
 * wait for; false when it must be dropped (a job it needs was never
 * submitted). */
bool kvd_writer_sync_seq(const struct kvd_writer *w, uint64_t *seq);

/* Queues the update's term and vote (voted_for copied). Out of memory stops
 * the core (kvd_node_disk_error). */
void kvd_writer_submit_meta(struct kvd_writer *w, raft_term term, const char *voted_for);

/* Queues the update's truncation and entries (copied). Out of memory stops
 * the core. */
void kvd_writer_submit_append(struct kvd_writer *w, const struct raft_update *u);

/* Queues a received snapshot chunk (data copied) for the file path (copied,
 * PATH_MAX bytes at most); cb as above. */
void kvd_writer_submit_chunk(struct kvd_writer *w, const struct raft_snapshot *s, const char *path,
			     kvd_writer_chunk_cb cb);

/* Queues the reset of the stored log to restart after (index, term) (an
 * installed snapshot); entries appended before it must not be reported
 * persisted past index. Returns 0 (cb will be called with ctx) or
 * KVD_ENOMEM (nothing queued). */
int kvd_writer_submit_reset(struct kvd_writer *w, raft_index index, raft_term term,
			    kvd_writer_reset_cb cb, void *ctx);

/* Queues the removal of whole log segments up to index (after a snapshot);
 * out of memory skips it (the next snapshot retries). */
void kvd_writer_remove_head(struct kvd_writer *w, raft_index up_to);

/* Reads [from, from + limit) of the stored log for GET /log on the writer
 * thread; the answer goes out through kvd_routes_log_reply(). req:
 * borrowed until then. */
void kvd_writer_read_log(struct kvd_writer *w, struct http_request *req, raft_index from,
			 raft_index limit);

#endif
