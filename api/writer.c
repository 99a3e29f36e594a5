/*
 * writer.c: the node's log writer (api/writer.h): its jobs, the thread that
 * runs them in batches with one fdatasync (group commit), their completions
 * on the loop thread, and the two rules a batch and a completion follow.
 *
 * Rules kept for the core (raft.h): persistence runs in update order on one
 * writer; messages flagged needs_sync wait until the writer has finished
 * every job submitted before them (kvd_writer_sync_seq); completion events
 * carry the entry term so the core recognizes stale ones.
 *
 * Why a ring of in-flight append jobs rather than the (index, term) of the
 * completed entries: the writer runs jobs in submission order and completes
 * them in that order, so when a job completes, the jobs still in the ring are
 * exactly those submitted after it. Any truncation among them will cut what
 * the completed job wrote, whatever the terms say, so the completion reports
 * only what lies below the lowest such truncation.
 */
#include "api/writer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/log.h"
#include "api/metrics.h"
#include "api/node_internal.h"
#include "api/snapshot_files.h"
#include "api/transport.h"
#include "api/workq.h"
#include "kvd/errors.h"
#include "raft/log_io.h"
#include "raft/meta.h"

/* Bytes of entry data one GET /log answer carries at most (always at least
 * one entry): bounds the read on the writer thread and the JSON built on the
 * loop thread, whatever limit asks for (API.md §7, docs/api.md). */
#define LOG_READ_MAX_BYTES (4u << 20)

struct kvd_writer {
	struct kvd_workq q;	       /* first: the thread and its jobs */
	struct kvd_writer_track track; /* append jobs in flight (loop thread) */
	struct kvd_node *node;	       /* borrowed */
};

enum writer_job_type {
	WRITER_META = 1,
	WRITER_APPEND, /* optional truncation, then entries */
	WRITER_REMOVE_HEAD,
	WRITER_READ_LOG,       /* GET /log: read a range of persisted entries */
	WRITER_SNAPSHOT_CHUNK, /* a received InstallSnapshot chunk */
	WRITER_RESET,	       /* the log restarts after an installed snapshot */
};

struct writer_job {
	struct kvd_workq_job base; /* first: the queue links jobs through it */
	enum writer_job_type type;
	raft_term term;
	char voted_for[RAFT_ID_SIZE];
	raft_index truncate_from;
	raft_index remove_up_to;
	struct raft_entry *entries;
	unsigned n_entries;
	char *data; /* one block holding every entry's bytes */
	char errmsg[KVD_ERRMSG_SIZE];
	/* WRITER_READ_LOG */
	struct http_request *req;
	raft_index read_from, read_limit;
	struct raft_entry *read; /* one malloc'ed block from the store */
	size_t n_read;
	raft_index store_last;
	/* WRITER_SNAPSHOT_CHUNK (data reuses the field above) */
	struct raft_snapshot chunk;
	char path[PATH_MAX];
	kvd_writer_chunk_cb chunk_cb;
	/* WRITER_RESET */
	raft_term reset_term;
	kvd_writer_reset_cb reset_cb;
	void *reset_ctx;
};

/* ---- the writer's jobs ---------------------------------------------------- */

int kvd_entries_copy(const struct raft_entry *src, unsigned n, struct raft_entry **out, char **data)
{
	size_t total = 0;
	struct raft_entry *es;
	char *block;

	for (unsigned i = 0; i < n; i++)
		total += src[i].len;
	es = malloc(sizeof(*es) * (n ? n : 1));
	block = malloc(total ? total : 1);
	if (es == NULL || block == NULL) {
		free(es);
		free(block);
		return KVD_ENOMEM;
	}
	total = 0;
	for (unsigned i = 0; i < n; i++) {
		es[i] = src[i];
		if (src[i].len > 0)
			memcpy(block + total, src[i].data, src[i].len);
		es[i].data = block + total;
		total += src[i].len;
	}
	*out = es;
	*data = block;
	return 0;
}

static void job_free(struct writer_job *j)
{
	free(j->entries);
	free(j->data);
	free(j);
}

/* Worker thread: reads [from, from + limit) clipped to what the store holds,
 * stopping before LOG_READ_MAX_BYTES of data. */
static void read_log(struct kvd_node *n, struct writer_job *j)
{
	raft_index first = raft_log_store_first_index(n->store);
	raft_index last = raft_log_store_last_index(n->store);
	raft_index from = j->read_from > first ? j->read_from : first;
	raft_index to = j->read_limit > 0 ? from + j->read_limit - 1 : from;

	j->store_last = last;
	if (to > last)
		to = last;
	if (j->read_limit == 0 || from > to)
		return;
	j->base.status = raft_log_store_read(n->store, from, to, LOG_READ_MAX_BYTES, &j->read,
					     &j->n_read, j->errmsg);
}

/* Worker thread: writes a received snapshot chunk into the incoming file;
 * the last chunk is fsynced. */
static int write_chunk(struct kvd_node *n, struct writer_job *j)
{
	return kvd_snapfiles_write_chunk(&raft_log_io_posix, n->snap_dir, j->chunk.offset, j->data,
					 j->chunk.len, j->chunk.done, j->errmsg);
}

/* Worker thread: one job of a batch; *need_sync is set by appends. Returns
 * its status (a failed read is the reader's, not the log's: 0). */
static int run_job(struct kvd_node *n, struct writer_job *j, bool *need_sync)
{
	int rv = 0;

	switch (j->type) {
	case WRITER_META: {
		struct raft_meta meta = {.term = j->term};
		snprintf(meta.voted_for, sizeof(meta.voted_for), "%s", j->voted_for);
		rv = raft_meta_store(n->raft_dir, &meta, j->errmsg);
		break;
	}
	case WRITER_APPEND:
		if (j->truncate_from != 0)
			rv = raft_log_store_truncate(n->store, j->truncate_from, j->errmsg);
		if (rv == 0 && j->n_entries > 0) {
			rv = raft_log_store_append(n->store, j->entries, j->n_entries, j->errmsg);
			*need_sync = true;
		}
		break;
	case WRITER_REMOVE_HEAD:
		rv = raft_log_store_remove_head(n->store, j->remove_up_to, j->errmsg);
		break;
	case WRITER_READ_LOG: read_log(n, j); break;
	case WRITER_SNAPSHOT_CHUNK: rv = write_chunk(n, j); break;
	case WRITER_RESET:
		rv = raft_log_store_reset(n->store, j->remove_up_to, j->reset_term, j->errmsg);
		break;
	}
	return rv;
}

/* Worker thread: carries out a batch in order, one fdatasync at the end. */
static void writer_run(struct kvd_workq *q, struct kvd_workq_job *batch)
{
	struct kvd_writer *w = (struct kvd_writer *)q;
	struct kvd_node *n = w->node;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	bool need_sync = false;
	int failed = 0;
	struct kvd_workq_job *it;
	uint64_t t0;
	int end;

	for (it = batch; it != NULL; it = it->next) {
		struct writer_job *j = (struct writer_job *)it;
		int rv;

		if (failed != 0) {
			j->base.status = failed;
			continue;
		}
		rv = run_job(n, j, &need_sync);
		if (j->type == WRITER_READ_LOG)
			continue; /* its status is the read's */
		j->base.status = rv;
		if (rv != 0)
			failed = rv;
	}
	/* Nothing of the batch is durable unless its one fdatasync succeeded:
	 * on any failure every job reports it (api/writer.h). */
	t0 = uv_hrtime();
	end = kvd_writer_batch_end(n->store, need_sync, failed, errmsg);
	if (need_sync && failed == 0)
		kvd_metrics_fsync(uv_hrtime() - t0);
	for (it = batch; end != 0 && it != NULL; it = it->next) {
		struct writer_job *j = (struct writer_job *)it;
		/* Reads too: they may have returned entries now dropped. */
		if (j->base.status == 0 || failed == 0)
			j->base.status = end;
		if (j->errmsg[0] == '\0' || failed == 0)
			snprintf(j->errmsg, sizeof(j->errmsg), "%s",
				 errmsg[0] != '\0' ? errmsg
						   : "another write of the same batch failed");
	}
}

/* Loop thread: a successful append job: report what no later job truncates
 * (api/writer.h rules), in the node state that lets it count. */
static void append_done(struct kvd_writer *w, struct writer_job *j)
{
	struct kvd_node *n = w->node;
	struct raft_event e = {.type = RAFT_EVENT_PERSISTED};
	enum kvd_node_state s = kvd_node_rules(n);

	if (s != KVD_NODE_RUNNING && s != KVD_NODE_DISK_RECOVERING)
		return;
	if (s == KVD_NODE_DISK_RECOVERING)
		kvd_node_space_back(n); /* the restarted core's first write */
	if (kvd_writer_track_done(&w->track, j->base.seq, j->entries, j->n_entries,
				  &e.u.persisted.index, &e.u.persisted.term))
		kvd_node_step(n, &e);
}

/* Loop thread: one writer job finished. */
static void writer_done(struct kvd_workq *q, struct kvd_workq_job *job)
{
	struct kvd_writer *w = (struct kvd_writer *)q;
	struct kvd_node *n = w->node;
	struct writer_job *j = (struct writer_job *)job;
	enum kvd_node_state s = kvd_node_rules(n);
	raft_index unused_index;
	raft_term unused_term;

	if (j->type == WRITER_APPEND && (j->base.status != 0 || j->n_entries == 0 ||
					 s == KVD_NODE_IO_FAILED || s == KVD_NODE_DISK_FULL))
		(void)kvd_writer_track_done(&w->track, j->base.seq, NULL, 0, &unused_index,
					    &unused_term); /* nothing to report: forget it */
	if (j->type == WRITER_RESET)
		j->reset_cb(n, j->base.status, j->reset_ctx);
	if (j->type == WRITER_READ_LOG) {
		kvd_routes_log_reply(n, j->req, j->base.status, j->errmsg, j->read, j->n_read,
				     j->store_last);
		free(j->read);
	} else if (j->base.status != 0 && j->type == WRITER_SNAPSHOT_CHUNK) {
		/* Not acknowledged: the snapshot part refuses it. */
		j->chunk_cb(n, j->base.status, j->errmsg, &j->chunk);
		job_free(j);
		return;
	} else if (j->base.status != 0) {
		/* Nothing that depended on this write may go out. */
		kvd_node_disk_error(n, j->base.status, j->type == WRITER_META ? "meta" : "log",
				    j->errmsg);
		job_free(j);
		return;
	} else if (j->type == WRITER_APPEND && j->n_entries > 0) {
		append_done(w, j);
	} else if (j->type == WRITER_SNAPSHOT_CHUNK && j->chunk.done) {
		j->chunk_cb(n, 0, "", &j->chunk);
	}
	kvd_transport_flush(n->transport, q->completed);
	job_free(j);
}

int kvd_writer_create(struct kvd_node *n, struct uv_loop_s *loop, struct kvd_writer **out)
{
	struct kvd_writer *w = calloc(1, sizeof(*w));
	int rv = KVD_ENOMEM;

	if (w != NULL) {
		w->node = n;
		rv = kvd_workq_start(&w->q, loop, writer_run, writer_done, n);
		if (rv == 0)
			*out = w;
		else
			free(w);
	}
	return rv;
}

void kvd_writer_stop(struct kvd_writer *w)
{
	kvd_workq_stop(&w->q);
}

void kvd_writer_destroy(struct kvd_writer *w)
{
	if (w == NULL)
		return;
	kvd_writer_track_free(&w->track);
	free(w);
}

void kvd_writer_poll(struct kvd_writer *w)
{
	kvd_workq_poll(&w->q);
}

bool kvd_writer_idle(const struct kvd_writer *w)
{
	return kvd_workq_idle(&w->q);
}

uint64_t kvd_writer_completed(const struct kvd_writer *w)
{
	return w->q.completed;
}

void kvd_writer_clear(struct kvd_writer *w)
{
	kvd_writer_track_clear(&w->track);
}

bool kvd_writer_sync_seq(const struct kvd_writer *w, uint64_t *seq)
{
	return kvd_writer_track_sync_seq(&w->track, w->q.submitted, seq);
}

void kvd_writer_submit_meta(struct kvd_writer *w, raft_term term, const char *voted_for)
{
	struct writer_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		/* The core counts on this write: what it sends after it must not
		 * go out (a vote granted without a durable vote). */
		kvd_writer_track_lost(&w->track);
		kvd_node_io_failed(w->node, KVD_ENOMEM, "meta", "out of memory");
		return;
	}
	j->type = WRITER_META;
	j->term = term;
	snprintf(j->voted_for, sizeof(j->voted_for), "%s", voted_for);
	kvd_workq_submit(&w->q, &j->base);
}

void kvd_writer_submit_chunk(struct kvd_writer *w, const struct raft_snapshot *s, const char *path,
			     kvd_writer_chunk_cb cb)
{
	struct writer_job *j = calloc(1, sizeof(*j));
	if (j == NULL || (j->data = malloc(s->len ? s->len : 1)) == NULL) {
		free(j);
		kvd_node_io_failed(w->node, KVD_ENOMEM, "snapshot", "out of memory");
		return;
	}
	j->type = WRITER_SNAPSHOT_CHUNK;
	j->chunk = *s;
	j->chunk.data = NULL;
	j->chunk_cb = cb;
	snprintf(j->path, sizeof(j->path), "%s", path);
	if (s->len > 0)
		memcpy(j->data, s->data, s->len);
	kvd_workq_submit(&w->q, &j->base);
}

void kvd_writer_submit_append(struct kvd_writer *w, const struct raft_update *u)
{
	struct writer_job *j = calloc(1, sizeof(*j));
	if (j == NULL || kvd_entries_copy(u->entries, u->n_entries, &j->entries, &j->data) != 0 ||
	    kvd_writer_track_append(&w->track, w->q.submitted + 1, u->truncate_from) != 0) {
		/* Never stored: the success reply the core made for these
		 * entries must not go out (the driver drops it). */
		if (j != NULL)
			job_free(j);
		kvd_writer_track_lost(&w->track);
		kvd_node_io_failed(w->node, KVD_ENOMEM, "log", "out of memory");
		return;
	}
	j->type = WRITER_APPEND;
	j->truncate_from = u->truncate_from;
	j->n_entries = u->n_entries;
	kvd_workq_submit(&w->q, &j->base);
}

int kvd_writer_submit_reset(struct kvd_writer *w, raft_index index, raft_term term,
			    kvd_writer_reset_cb cb, void *ctx)
{
	struct writer_job *j = calloc(1, sizeof(*j));

	if (j == NULL)
		return KVD_ENOMEM;
	j->type = WRITER_RESET;
	j->remove_up_to = index;
	j->reset_term = term;
	j->reset_cb = cb;
	j->reset_ctx = ctx;
	/* The reset removes every entry after the snapshot too: earlier appends
	 * completing after it was queued must not report those. */
	if (kvd_writer_track_append(&w->track, w->q.submitted + 1, index + 1) != 0)
		kvd_node_io_failed(w->node, KVD_ENOMEM, "log", "out of memory");
	kvd_workq_submit(&w->q, &j->base);
	return 0;
}

void kvd_writer_remove_head(struct kvd_writer *w, raft_index up_to)
{
	struct writer_job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return; /* compaction is retried with the next snapshot */
	j->type = WRITER_REMOVE_HEAD;
	j->remove_up_to = up_to;
	kvd_workq_submit(&w->q, &j->base);
}

void kvd_writer_read_log(struct kvd_writer *w, struct http_request *req, raft_index from,
			 raft_index limit)
{
	struct writer_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		kvd_reply_text(req, 503, "out of memory\n");
		return;
	}
	j->type = WRITER_READ_LOG;
	j->req = req;
	j->read_from = from;
	j->read_limit = limit;
	kvd_workq_submit(&w->q, &j->base);
}
