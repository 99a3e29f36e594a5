/*
 * node.c: drives the pure Raft core with real disks, threads and timers.
 *
 * The write path (ARCHITECTURE.md "The request path"): routes.c queues each
 * client write; at the end of the loop iteration (uv_check) every queued
 * write is proposed in one RAFT_EVENT_PROPOSE; the update's entries go to the
 * writer thread, which appends everything queued and fdatasyncs once (group
 * commit); RAFT_EVENT_PERSISTED lets the core commit; committed entries go to
 * the applier thread (one LevelDB WriteBatch per batch, carrying the applied
 * index); when the applier reports back the client gets its 200.
 *
 * Rules kept for the core (raft.h): persistence runs in update order on one
 * writer; messages flagged needs_sync wait until the writer has finished
 * every job submitted before them; completion events carry the entry term so
 * the core recognizes stale ones.
 *
 * Recovery: the log store cuts a torn tail; LevelDB's applied index says
 * where replay starts; the core is given the log tail and commits what a sole
 * voter holds once its no-op is durable. The port opens only after that.
 */
#include "api/node_internal.h"
#include "api/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/cluster_id.h"
#include "api/fileutil.h"
#include "api/log.h"
#include "api/membership.h"
#include "api/snapshots.h"
#include "api/writer.h"
#include "raft/meta.h"
#include "kvd/errors.h"

/* ---- node state ---------------------------------------------------------- */

void kvd_node_set_state(struct kvd_node *n, enum kvd_node_state to)
{
	(void)kvd_node_mode_set(&n->mode, to);
}

/* ---- storage jobs ------------------------------------------------------ */

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
	/* WRITER_SNAPSHOT_CHUNK (data/n reuse the fields above) */
	struct raft_snapshot chunk;
	raft_term reset_term;
	struct apply_job *install; /* WRITER_RESET: the install's swap step */
};

/*
 * Installing a snapshot received from the leader is one ordered procedure
 * (ARCHITECTURE.md "Snapshots"), so that a crash at any point leaves a node
 * that starts:
 *   1. INSTALL_CHECK (applier): the durable incoming file is restored into a
 *      side directory (which reads and checks every byte), then renamed to
 *      its snapshot name and the directory fsynced;
 *   2. WRITER_RESET (writer): the stored log restarts after the snapshot;
 *   3. INSTALL_SWAP (applier): the side directory replaces LevelDB;
 *   4. the core is told (SNAPSHOT_INSTALLED) and answers the last chunk.
 * It starts only once no local snapshot holds a view of LevelDB (a running
 * one is waited for: KVD_SNAP_INSTALL_WAIT), and no local snapshot starts
 * until it ends (enum kvd_snapshot_state in node_internal.h). A crash after
 * step 1 finds the snapshot file newer than LevelDB and restores from it at
 * start. A failure at step 1 reports SNAPSHOT_FAILED: the leader restarts
 * the stream; a failed log reset stops the core (disk error) and a failed
 * swap stops the node, whose restart restores from the file.
 */
enum install_step {
	INSTALL_NONE = 0,
	INSTALL_CHECK,
	INSTALL_SWAP,
};

struct apply_job {
	struct kvd_workq_job base;
	struct engine_entry *entries;
	unsigned n;
	char *data;
	raft_index last_index;
	char errmsg[KVD_ERRMSG_SIZE];
	/* A step of installing a received snapshot instead of entries. */
	enum install_step install;
	raft_term install_term;
	uint64_t install_size; /* bytes of the checked file */
	char install_path[PATH_MAX];
};

void kvd_node_incoming_path(const struct kvd_node *n, char *path)
{
	snprintf(path, PATH_MAX, "%.4000s/incoming.tmp", n->snap_dir);
}

static void start_install(struct kvd_node *n, const struct raft_snapshot *s);

/* Copies entries and their bytes into one allocation pair. */
static int copy_entries(const struct raft_entry *src, unsigned n, struct raft_entry **out,
			char **data)
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

static void writer_job_free(struct writer_job *j)
{
	free(j->entries);
	free(j->data);
	free(j);
}

/* Bytes of entry data one GET /log answer carries at most (always at least
 * one entry): bounds the read on the writer thread and the JSON built on the
 * loop thread, whatever limit asks for (API.md §7, docs/api.md). */
#define LOG_READ_MAX_BYTES (4u << 20)

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
	char path[PATH_MAX];
	int fd, rv = 0;
	int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (j->chunk.offset == 0 ? O_TRUNC : 0);

	kvd_node_incoming_path(n, path);
	fd = open(path, flags, 0644);
	if (fd < 0) {
		snprintf(j->errmsg, sizeof(j->errmsg), "cannot open %s: %s", path, strerror(errno));
		return errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
	}
	if (j->chunk.len > 0 &&
	    pwrite(fd, j->data, j->chunk.len, (off_t)j->chunk.offset) != (ssize_t)j->chunk.len)
		rv = errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
	else if (j->chunk.done && fsync(fd) != 0)
		rv = errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
	if (rv != 0)
		snprintf(j->errmsg, sizeof(j->errmsg), "cannot write %s at offset %" PRIu64 ": %s",
			 path, j->chunk.offset, strerror(errno));
	close(fd);
	return rv;
}

/* Worker thread: carries out a batch in order, one fdatasync at the end. */
static void writer_run(struct kvd_workq *q, struct kvd_workq_job *batch)
{
	struct kvd_node *n = q->data;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	bool need_sync = false;
	int failed = 0;
	struct kvd_workq_job *it;
	uint64_t t0;
	int end;

	for (it = batch; it != NULL; it = it->next) {
		struct writer_job *j = (struct writer_job *)it;
		int rv = 0;

		if (failed != 0) {
			j->base.status = failed;
			continue;
		}
		switch (j->type) {
		case WRITER_META: {
			struct raft_meta meta = {.term = j->term};
			snprintf(meta.voted_for, sizeof(meta.voted_for), "%s", j->voted_for);
			rv = raft_meta_store(n->raft_dir, &meta, j->errmsg);
			break;
		}
		case WRITER_APPEND:
			if (j->truncate_from != 0) {
				rv = raft_log_store_truncate(n->store, j->truncate_from, j->errmsg);
				if (rv != 0)
					break;
			}
			if (j->n_entries > 0) {
				rv = raft_log_store_append(n->store, j->entries, j->n_entries,
							   j->errmsg);
				need_sync = true;
			}
			break;
		case WRITER_REMOVE_HEAD:
			rv = raft_log_store_remove_head(n->store, j->remove_up_to, j->errmsg);
			break;
		case WRITER_READ_LOG:
			read_log(n, j);
			continue; /* a read failure is the reader's, not the log's */
		case WRITER_SNAPSHOT_CHUNK: rv = write_chunk(n, j); break;
		case WRITER_RESET:
			rv = raft_log_store_reset(n->store, j->remove_up_to, j->reset_term,
						  j->errmsg);
			break;
		}
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

static void node_io_failed(struct kvd_node *n, int rv, const char *what, const char *errmsg)
{
	struct raft_event e = {.type = RAFT_EVENT_IO_FAILED};

	KVD_ERROR("disk write failed; refusing writes", "op=%s error=\"%s\" detail=\"%s\"", what,
		  kvd_strerror(rv), errmsg);
	if (kvd_node_rules(n) == KVD_NODE_IO_FAILED)
		return;
	kvd_node_set_state(n, KVD_NODE_IO_FAILED);
	n->io_error = rv;
	kvd_node_step(n, &e);
}

static int start_core(struct kvd_node *n, char *errmsg);
static void fail_pending_writes(struct kvd_node *n, int status, const char *why);
static void fail_pending_reads(struct kvd_node *n);

/*
 * Disk full (API.md §6). The log store has cut back to its last durable
 * record, so entries the core holds past it were never persisted. Writes
 * waiting for them get 507, new writes get 507 at once, reads keep being
 * served, and every second, once the workers are idle, the core is started
 * again from what is durable, exactly as a restart would (always safe in
 * Raft). When the restarted core's first append is durable, space is back.
 */
static void disk_timer_cb(uv_timer_t *t)
{
	struct kvd_node *n = t->data;
	char errmsg[KVD_ERRMSG_SIZE] = "";

	if (kvd_node_rules(n) == KVD_NODE_IO_FAILED) {
		uv_timer_stop(t); /* final: no restart brings writes back */
		return;
	}
	if (!kvd_workq_idle(&n->writer) || !kvd_workq_idle(&n->applier) ||
	    n->snapshot_state != KVD_SNAP_IDLE || n->reinit_pending)
		return;
	kvd_node_drop_core(n);
	kvd_node_set_state(n, KVD_NODE_DISK_RECOVERING);
	if (kvd_node_restart_core(n, errmsg) != 0) {
		KVD_ERROR("cannot restart the raft core after a full disk; exiting",
			  "detail=\"%s\"", errmsg);
		exit(1);
	}
}

void kvd_node_drop_core(struct kvd_node *n)
{
	fail_pending_writes(n, 503, "raft core restarted: write outcome unknown\n");
	fail_pending_reads(n);
	kvd_transport_drop_held(n->transport);
	kvd_transport_refuse_parked(n->transport);
	raft_destroy(n->raft);
	n->raft = NULL;
}

int kvd_node_restart_core(struct kvd_node *n, char *errmsg)
{
	kvd_writer_track_clear(&n->writer_track); /* the workers are idle */
	return start_core(n, errmsg);
}

static void node_disk_full(struct kvd_node *n, const char *errmsg)
{
	if (!kvd_node_disk_full(n))
		KVD_ERROR("disk full; refusing writes until space returns", "detail=\"%s\"",
			  errmsg);
	kvd_node_set_state(n, KVD_NODE_DISK_FULL);
	fail_pending_writes(n, 507, "insufficient storage\n");
	if (!uv_is_active((uv_handle_t *)&n->disk_timer))
		uv_timer_start(&n->disk_timer, disk_timer_cb, 1000, 1000);
}

/* Loop thread: one writer job finished. */
static void writer_done(struct kvd_workq *q, struct kvd_workq_job *job)
{
	struct kvd_node *n = q->data;
	struct writer_job *j = (struct writer_job *)job;
	raft_index unused_index;
	raft_term unused_term;

	if (j->type == WRITER_APPEND &&
	    (j->base.status != 0 || j->n_entries == 0 || kvd_node_rules(n) == KVD_NODE_IO_FAILED ||
	     kvd_node_rules(n) == KVD_NODE_DISK_FULL))
		(void)kvd_writer_track_done(&n->writer_track, j->base.seq, NULL, 0, &unused_index,
					    &unused_term); /* nothing to report: forget it */
	if (j->type == WRITER_RESET && j->base.status != 0 && j->install != NULL) {
		/* Step 2 of an install failed: the install ends here (the file
		 * is durable; a restart restores from it); the disk error is
		 * handled below like any log write's. */
		struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_FAILED};
		free(j->install);
		j->install = NULL;
		n->snapshot_state = KVD_SNAP_IDLE;
		if (n->raft != NULL && kvd_node_rules(n) != KVD_NODE_IO_FAILED)
			kvd_node_step(n, &e);
		kvd_snapshot_after_install(n);
	}
	if (j->type == WRITER_READ_LOG) {
		kvd_routes_log_reply(n, j->req, j->base.status, j->errmsg, j->read, j->n_read,
				     j->store_last);
		free(j->read);
	} else if (j->base.status != 0 && j->type == WRITER_SNAPSHOT_CHUNK) {
		/* A chunk that could not be written is not acknowledged: its
		 * held result is replaced by a refusal, and the leader retries
		 * the stream. */
		struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_FAILED};
		KVD_WARN("cannot write snapshot chunk", "detail=\"%s\"", j->errmsg);
		kvd_transport_drop_held(n->transport);
		/* The core forgets the stream, so no later chunk lands after a
		 * hole; the leader restarts it at offset 0. */
		if (n->raft != NULL && kvd_node_rules(n) != KVD_NODE_IO_FAILED)
			kvd_node_step(n, &e);
		writer_job_free(j);
		return;
	} else if (j->base.status != 0) {
		/* Nothing that depended on this write may go out. */
		kvd_transport_drop_held(n->transport);
		if (j->base.status == KVD_ENOSPC && kvd_node_rules(n) != KVD_NODE_IO_FAILED)
			node_disk_full(n, j->errmsg);
		else if (!kvd_node_disk_full(n))
			node_io_failed(n, j->base.status, j->type == WRITER_META ? "meta" : "log",
				       j->errmsg);
		writer_job_free(j);
		return;
	} else if (j->type == WRITER_APPEND && j->n_entries > 0 &&
		   kvd_node_rules(n) == KVD_NODE_RUNNING) {
		/* Only what no later job truncates counts (api/writer.h). */
		struct raft_event e = {.type = RAFT_EVENT_PERSISTED};
		if (kvd_writer_track_done(&n->writer_track, j->base.seq, j->entries, j->n_entries,
					  &e.u.persisted.index, &e.u.persisted.term))
			kvd_node_step(n, &e);
	} else if (j->type == WRITER_APPEND && j->n_entries > 0 &&
		   kvd_node_rules(n) == KVD_NODE_DISK_RECOVERING) {
		/* The restarted core's first write went through: space is back. */
		struct raft_event e = {.type = RAFT_EVENT_PERSISTED};
		kvd_node_set_state(n, KVD_NODE_RUNNING);
		uv_timer_stop(&n->disk_timer);
		KVD_INFO("disk has space again; accepting writes", NULL);
		if (kvd_writer_track_done(&n->writer_track, j->base.seq, j->entries, j->n_entries,
					  &e.u.persisted.index, &e.u.persisted.term))
			kvd_node_step(n, &e);
	} else if (j->type == WRITER_SNAPSHOT_CHUNK && j->chunk.done) {
		start_install(n, &j->chunk);
	} else if (j->type == WRITER_RESET && j->install != NULL) {
		/* Step 3: no local snapshot can hold a view (none starts
		 * during an install). */
		n->snapshot_state = KVD_SNAP_INSTALL_SWAP;
		kvd_workq_submit(&n->applier, &j->install->base);
	}
	kvd_transport_flush(n->transport, q->completed);
	writer_job_free(j);
}

/* Applier thread: step 1 of the install procedure (see enum install_step):
 * restore the received file into the side directory fresh (which checks
 * every byte), check what it holds, give it its snapshot name durably. */
static int install_check_file(struct kvd_node *n, struct apply_job *j, const char *fresh)
{
	char incoming[PATH_MAX];
	struct engine_snapshot_meta meta = {0};
	int rv;

	kvd_node_incoming_path(n, incoming);
	kvd_remove_tree(fresh);
	rv = engine_snapshot_restore(incoming, fresh, &meta, j->errmsg);
	if (rv == 0 && (meta.index != j->last_index || meta.term != j->install_term)) {
		snprintf(j->errmsg, sizeof(j->errmsg),
			 "%.3000s holds index %" PRIu64 " term %" PRIu64 ", expected %" PRIu64
			 " %" PRIu64,
			 incoming, meta.index, meta.term, j->last_index, j->install_term);
		rv = KVD_ECORRUPT;
	}
	j->install_size = meta.size;
	engine_snapshot_meta_clear(&meta);
	if (rv == 0 && rename(incoming, j->install_path) != 0) {
		snprintf(j->errmsg, sizeof(j->errmsg), "cannot rename %.2000s: %s", incoming,
			 strerror(errno));
		rv = KVD_EIO;
	}
	if (rv == 0 && kvd_fsync_dir(n->snap_dir) != 0) {
		snprintf(j->errmsg, sizeof(j->errmsg), "cannot fsync %.3000s: %s", n->snap_dir,
			 strerror(errno));
		rv = KVD_EIO;
	}
	if (rv != 0) {
		kvd_remove_tree(fresh);
		if (rv == KVD_ECORRUPT)
			unlink(incoming); /* the leader sends it again from offset 0 */
	}
	return rv;
}

/* Applier thread: step 1 (check) or step 3 (swap) of an install. */
static int install_run(struct kvd_node *n, struct apply_job *j)
{
	char fresh[PATH_MAX];

	snprintf(fresh, sizeof(fresh), "%.4000s.restore", n->kv_dir);
	return j->install == INSTALL_SWAP ? engine_swap(n->engine, fresh, j->errmsg)
					  : install_check_file(n, j, fresh);
}

static void apply_run(struct kvd_workq *q, struct kvd_workq_job *batch)
{
	struct kvd_node *n = q->data;

	for (struct kvd_workq_job *it = batch; it != NULL; it = it->next) {
		struct apply_job *j = (struct apply_job *)it;
		int rv;

		if (j->install != INSTALL_NONE) {
			j->base.status = install_run(n, j);
			continue;
		}
		/* A state machine write that fails (disk full) is retried: the
		 * entries are committed and must be applied in order. */
		for (unsigned attempt = 0;; attempt++) {
			rv = engine_apply(n->engine, j->entries, j->n, j->errmsg);
			if (rv == 0 || attempt == 600)
				break;
			if (attempt == 0)
				KVD_ERROR("state machine write failed; retrying",
					  "error=\"%s\" detail=\"%s\"", kvd_strerror(rv),
					  j->errmsg);
			uv_sleep(100);
		}
		j->base.status = rv;
	}
}

static void answer_applied_writes(struct kvd_node *n)
{
	while (n->writes != NULL && n->writes->index <= n->applied_index && n->writes->committed) {
		struct kvd_pending_write *w = n->writes;
		n->writes = w->next;
		if (n->writes == NULL)
			n->writes_tail = NULL;
		kvd_respond(w->req, 200, "text/plain; charset=utf-8", NULL, NULL, 0);
		free(w);
	}
}

static void maybe_snapshot(struct kvd_node *n);

/* Loop thread: the install failed before the swap. The core forgets the
 * stream and refuses the waiting last chunk; the leader starts again. */
static void install_failed(struct kvd_node *n, int rv, const char *errmsg)
{
	struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_FAILED};

	KVD_ERROR("snapshot install failed; the leader will send it again",
		  "error=\"%s\" detail=\"%s\"", kvd_strerror(rv), errmsg);
	n->snapshot_state = KVD_SNAP_IDLE;
	if (n->raft != NULL)
		kvd_node_step(n, &e);
	else
		kvd_transport_refuse_parked(n->transport);
	kvd_snapshot_after_install(n);
}

/* Loop thread: step 1 (check) on the applier. */
static void install_check(struct kvd_node *n, raft_index index, raft_term term)
{
	struct apply_job *a = calloc(1, sizeof(*a));

	if (a == NULL) {
		install_failed(n, KVD_ENOMEM, "out of memory");
	} else {
		KVD_INFO("installing snapshot from leader", "index=%" PRIu64 " term=%" PRIu64,
			 index, term);
		kvd_snapshot_path(n, index, term, a->install_path);
		a->install = INSTALL_CHECK;
		a->last_index = index;
		a->install_term = term;
		n->snapshot_state = KVD_SNAP_INSTALL_CHECK;
		kvd_workq_submit(&n->applier, &a->base);
	}
}

/* Loop thread: the last chunk is durable. A running local snapshot is
 * waited for: it holds a view LevelDB cannot be swapped under. */
static void start_install(struct kvd_node *n, const struct raft_snapshot *s)
{
	if (n->snapshot_state == KVD_SNAP_TAKING) {
		KVD_INFO("snapshot from leader waits for the local snapshot", "index=%" PRIu64,
			 s->last_index);
		n->install_index = s->last_index;
		n->install_term = s->last_term;
		n->snapshot_state = KVD_SNAP_INSTALL_WAIT;
	} else {
		install_check(n, s->last_index, s->last_term);
	}
}

void kvd_node_snapshot_taken(struct kvd_node *n)
{
	if (n->snapshot_state == KVD_SNAP_INSTALL_WAIT)
		install_check(n, n->install_index, n->install_term);
	else
		n->snapshot_state = KVD_SNAP_IDLE;
}

/* Loop thread: step 1 done: the file is checked and durable under its name.
 * Step 2: reset the stored log on the writer. */
static void install_checked(struct kvd_node *n, struct apply_job *j)
{
	struct writer_job *w;

	if (j->base.status != 0) {
		install_failed(n, j->base.status, j->errmsg);
		free(j);
		return;
	}
	/* The newest durable snapshot from now on: a local snapshot finishing
	 * meanwhile is superseded and never prunes this file. */
	n->snapshot_index = j->last_index;
	n->snapshot_term = j->install_term;
	n->snapshot_size = j->install_size;
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		KVD_ERROR("out of memory installing a snapshot; stopping", NULL);
		exit(1); /* the restart restores from the durable file */
	}
	w->type = WRITER_RESET;
	w->remove_up_to = j->last_index;
	w->reset_term = j->install_term;
	j->install = INSTALL_SWAP;
	j->base.status = 0;
	w->install = j;
	n->snapshot_state = KVD_SNAP_INSTALL_RESET;
	/* The reset removes every entry after the snapshot too: earlier appends
	 * completing after it was queued must not report those (writer.h). */
	if (kvd_writer_track_append(&n->writer_track, n->writer.submitted + 1, j->last_index + 1) !=
	    0)
		node_io_failed(n, KVD_ENOMEM, "log", "out of memory");
	kvd_workq_submit(&n->writer, &w->base);
}

/* Loop thread: step 3 done; step 4: tell the core. */
static void finish_install(struct kvd_node *n, struct apply_job *j)
{
	struct engine_snapshot_meta meta = {0};
	struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_INSTALLED};
	int rv;

	n->snapshot_state = KVD_SNAP_IDLE;
	if (j->base.status != 0) {
		KVD_ERROR("snapshot install failed; stopping", "error=\"%s\" detail=\"%s\"",
			  kvd_strerror(j->base.status), j->errmsg);
		exit(1); /* restart recovers from the snapshot file */
	}
	rv = engine_snapshot_read_meta(j->install_path, &meta, NULL);
	if (rv != 0 ||
	    raft_config_decode(meta.config, meta.config_len, &e.u.snapshot.config) != 0) {
		KVD_ERROR("installed snapshot has no configuration; stopping", "file=%s",
			  j->install_path);
		exit(1);
	}
	e.u.snapshot.index = meta.index;
	e.u.snapshot.term = meta.term;
	e.u.snapshot.size = meta.size;
	engine_snapshot_meta_clear(&meta);
	n->applied_index = j->last_index;
	n->apply_submitted = j->last_index;
	n->snapshot_index = e.u.snapshot.index;
	n->snapshot_term = e.u.snapshot.term;
	n->snapshot_size = e.u.snapshot.size;
	kvd_snapshot_prune(n, e.u.snapshot.index);
	KVD_INFO("snapshot installed", "index=%" PRIu64 " term=%" PRIu64, e.u.snapshot.index,
		 e.u.snapshot.term);
	kvd_node_step(n, &e);
	kvd_snapshot_after_install(n);
}

static void apply_done(struct kvd_workq *q, struct kvd_workq_job *job)
{
	struct kvd_node *n = q->data;
	struct apply_job *j = (struct apply_job *)job;

	if (j->install == INSTALL_CHECK) {
		install_checked(n, j);
		return;
	}
	if (j->install == INSTALL_SWAP) {
		finish_install(n, j);
		free(j);
		return;
	}
	if (j->base.status != 0) {
		KVD_ERROR("state machine write failed; stopping", "error=\"%s\" detail=\"%s\"",
			  kvd_strerror(j->base.status), j->errmsg);
		/* The log still holds the entries: a restart replays them. */
		exit(1);
	}
	n->applied_index = j->last_index;
	if (kvd_node_rules(n) != KVD_NODE_IO_FAILED) {
		struct raft_event e = {.type = RAFT_EVENT_APPLIED};
		e.u.applied.index = j->last_index;
		kvd_node_step(n, &e);
	}
	answer_applied_writes(n);
	free(j->entries);
	free(j->data);
	free(j);
	maybe_snapshot(n);
}

/* ---- carrying out an update -------------------------------------------- */

static void tick_cb(uv_timer_t *t);

static void submit_meta(struct kvd_node *n, const struct raft_update *u)
{
	struct writer_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		/* The core counts on this write: what it sends after it must not
		 * go out (a vote granted without a durable vote). */
		kvd_writer_track_lost(&n->writer_track);
		node_io_failed(n, KVD_ENOMEM, "meta", "out of memory");
		return;
	}
	j->type = WRITER_META;
	j->term = u->term;
	snprintf(j->voted_for, sizeof(j->voted_for), "%s", u->voted_for);
	kvd_workq_submit(&n->writer, &j->base);
}

static void submit_chunk(struct kvd_node *n, const struct raft_snapshot *s)
{
	struct writer_job *j = calloc(1, sizeof(*j));
	if (j == NULL || (j->data = malloc(s->len ? s->len : 1)) == NULL) {
		free(j);
		node_io_failed(n, KVD_ENOMEM, "snapshot", "out of memory");
		return;
	}
	j->type = WRITER_SNAPSHOT_CHUNK;
	j->chunk = *s;
	j->chunk.data = NULL;
	if (s->len > 0)
		memcpy(j->data, s->data, s->len);
	kvd_workq_submit(&n->writer, &j->base);
}

static void submit_append(struct kvd_node *n, const struct raft_update *u)
{
	struct writer_job *j = calloc(1, sizeof(*j));
	if (j == NULL || copy_entries(u->entries, u->n_entries, &j->entries, &j->data) != 0 ||
	    kvd_writer_track_append(&n->writer_track, n->writer.submitted + 1, u->truncate_from) !=
		0) {
		/* Never stored: the success reply the core made for these
		 * entries must not go out (handle_update drops it). */
		if (j != NULL)
			writer_job_free(j);
		kvd_writer_track_lost(&n->writer_track);
		node_io_failed(n, KVD_ENOMEM, "log", "out of memory");
		return;
	}
	j->type = WRITER_APPEND;
	j->truncate_from = u->truncate_from;
	j->n_entries = u->n_entries;
	kvd_workq_submit(&n->writer, &j->base);
}

/* Marks the pending writes whose entries are about to be applied. A pending
 * write whose index now holds an entry of another term lost its slot. */
static void match_pending(struct kvd_node *n, const struct raft_entry *e)
{
	struct kvd_pending_write **pp = &n->writes;
	struct kvd_pending_write *prev = NULL;

	while (*pp != NULL && (*pp)->index <= e->index) {
		struct kvd_pending_write *w = *pp;
		if (w->index == e->index && !w->committed) {
			if (w->term == e->term) {
				w->committed = true;
			} else {
				*pp = w->next;
				if (n->writes_tail == w)
					n->writes_tail = prev;
				kvd_reply_text(w->req, 503,
					       "write was not committed: leadership changed\n");
				free(w);
				continue;
			}
		}
		prev = w;
		pp = &w->next;
	}
}

static void submit_apply(struct kvd_node *n, const struct raft_update *u)
{
	struct apply_job *j = calloc(1, sizeof(*j));
	struct raft_entry *copy;

	if (j == NULL || copy_entries(u->apply, u->n_apply, &copy, &j->data) != 0) {
		KVD_ERROR("out of memory applying entries", NULL);
		exit(1);
	}
	j->entries = calloc(u->n_apply, sizeof(*j->entries));
	if (j->entries == NULL) {
		KVD_ERROR("out of memory applying entries", NULL);
		exit(1);
	}
	for (unsigned i = 0; i < u->n_apply; i++) {
		struct engine_entry *ee = &j->entries[i];
		ee->index = copy[i].index;
		ee->term = copy[i].term;
		ee->data = copy[i].data;
		ee->len = copy[i].len;
		switch (copy[i].type) {
		case RAFT_ENTRY_COMMAND: ee->type = ENGINE_ENTRY_COMMAND; break;
		case RAFT_ENTRY_CONFIG: ee->type = ENGINE_ENTRY_CONFIG; break;
		default: ee->type = ENGINE_ENTRY_OTHER; break;
		}
		match_pending(n, &u->apply[i]);
	}
	free(copy);
	j->n = u->n_apply;
	j->last_index = u->apply[u->n_apply - 1].index;
	n->apply_submitted = j->last_index;
	kvd_workq_submit(&n->applier, &j->base);
}

static void fail_pending_writes(struct kvd_node *n, int status, const char *why)
{
	struct kvd_pending_write **pp = &n->writes;

	n->writes_tail = NULL;
	while (*pp != NULL) {
		struct kvd_pending_write *w = *pp;
		if (w->committed) { /* applied soon: keep */
			n->writes_tail = w;
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		kvd_reply_text(w->req, status, why);
		free(w);
	}
}

/* Pending linearizable reads: the core that would confirm them is gone;
 * a sole voter serves them from its state, which holds every acknowledged
 * write; otherwise they get 503. */
static void fail_pending_reads(struct kvd_node *n)
{
	while (n->reads != NULL) {
		struct kvd_pending_read *r = n->reads;
		n->reads = r->next;
		if (kvd_node_sole_voter(n))
			kvd_node_serve_get(n, r->req, r->key, r->key_len);
		else
			kvd_reply_text(r->req, 503,
				       "read not confirmed: node restarting its raft core\n");
		free(r);
	}
}

bool kvd_node_sole_voter(struct kvd_node *n)
{
	const struct raft_config *c = raft_configuration(n->raft);
	unsigned voters = 0;
	for (unsigned i = 0; i < c->n; i++)
		voters += c->servers[i].role == RAFT_VOTER;
	return voters == 1 && raft_config_is_voter(c, n->cfg.id);
}

static void serve_reads(struct kvd_node *n, const struct raft_update *u)
{
	for (unsigned i = 0; i < u->n_reads + u->n_reads_failed; i++) {
		bool ok = i < u->n_reads;
		uint64_t token = ok ? u->reads[i].token : u->reads_failed[i - u->n_reads].token;
		struct kvd_pending_read **pp = &n->reads;

		while (*pp != NULL && (*pp)->token != token)
			pp = &(*pp)->next;
		if (*pp == NULL)
			continue;
		struct kvd_pending_read *r = *pp;
		*pp = r->next;
		if (ok)
			kvd_node_serve_get(n, r->req, r->key, r->key_len);
		else
			kvd_reply_not_leader(n, r->req);
		free(r);
	}
}

static const char *role_name(enum raft_role role)
{
	switch (role) {
	case RAFT_LEADER: return "leader";
	case RAFT_CANDIDATE: return "candidate";
	default: return "follower";
	}
}

/* One operator log line per core note (API.md §9). */
static void log_note(const struct raft_note *note)
{
	const char *reason = note->reason != NULL ? note->reason : "";

	switch (note->kind) {
	case RAFT_NOTE_VOTE_GRANTED:
	case RAFT_NOTE_PRE_VOTE_GRANTED:
		KVD_INFO(note->kind == RAFT_NOTE_VOTE_GRANTED ? "vote granted" : "pre-vote granted",
			 "candidate=%s term=%" PRIu64, note->peer, note->term);
		break;
	case RAFT_NOTE_VOTE_REFUSED:
	case RAFT_NOTE_PRE_VOTE_REFUSED:
		KVD_INFO(note->kind == RAFT_NOTE_VOTE_REFUSED ? "vote refused" : "pre-vote refused",
			 "candidate=%s term=%" PRIu64 " reason=\"%s\"", note->peer, note->term,
			 reason);
		break;
	case RAFT_NOTE_ELECTION_STARTED:
		KVD_INFO("election started", "term=%" PRIu64 " kind=%s", note->term, reason);
		break;
	case RAFT_NOTE_ELECTION_WON: KVD_INFO("election won", "term=%" PRIu64, note->term); break;
	case RAFT_NOTE_STEPPED_DOWN:
		KVD_INFO("stepped down", "term=%" PRIu64 " reason=\"%s\"", note->term, reason);
		break;
	case RAFT_NOTE_PEER_SNAPSHOT_SENT:
		KVD_INFO("sending snapshot to peer", "peer=%s index=%" PRIu64, note->peer,
			 note->index);
		break;
	case RAFT_NOTE_SNAPSHOT_RECEIVED:
		KVD_INFO("snapshot received from leader", "leader=%s index=%" PRIu64, note->peer,
			 note->index);
		break;
	case RAFT_NOTE_TRANSFER_STARTED:
		KVD_INFO("leadership transfer started", "target=%s", note->peer);
		break;
	case RAFT_NOTE_TRANSFER_ABORTED:
		KVD_WARN("leadership transfer aborted", "target=%s reason=\"%s\"", note->peer,
			 reason);
		break;
	case RAFT_NOTE_CONFIG_APPENDED:
		KVD_INFO("configuration entry appended", "index=%" PRIu64 " kind=%s", note->index,
			 reason);
		break;
	default: break;
	}
}

static void handle_update(struct kvd_node *n, const struct raft_update *u)
{
	bool dropped = false;

	if (u->meta_changed)
		submit_meta(n, u);
	if (u->truncate_from != 0 || u->n_entries > 0)
		submit_append(n, u);
	if (u->snapshot_write != NULL)
		submit_chunk(n, u->snapshot_write);
	for (unsigned i = 0; i < u->n_messages; i++) {
		uint64_t seq = 0;
		if (u->messages[i].needs_sync &&
		    !kvd_writer_track_sync_seq(&n->writer_track, n->writer.submitted, &seq)) {
			dropped = true; /* its write was never submitted */
			continue;
		}
		kvd_transport_send(n->transport, &u->messages[i], seq);
	}
	if (dropped) {
		kvd_transport_drop_held(n->transport);
		kvd_transport_answer_orphans(n->transport);
	}
	if (u->n_apply > 0)
		submit_apply(n, u);
	if (u->n_reads > 0 || u->n_reads_failed > 0)
		serve_reads(n, u);
	for (unsigned i = 0; i < u->n_changes_done; i++)
		kvd_members_done(n, u->changes_done[i].token, u->changes_done[i].error);
	for (unsigned i = 0; i < u->n_notes; i++)
		log_note(&u->notes[i]);
	if (u->state_changed && u->role != n->last_role) {
		if (u->role == RAFT_CANDIDATE)
			kvd_metrics_election(0);
		else if (u->role == RAFT_LEADER && n->last_role != RAFT_CANDIDATE)
			kvd_metrics_election(0); /* a sole voter leads without a candidacy */
		if (u->role == RAFT_LEADER)
			kvd_metrics_election(1);
		n->last_role = u->role;
	}
	if (u->state_changed) {
		KVD_INFO("raft state", "role=%s term=%" PRIu64 " leader=%s commit=%" PRIu64,
			 role_name(u->role), u->current_term, u->leader[0] ? u->leader : "none",
			 u->commit_index);
		if (u->role != RAFT_LEADER)
			fail_pending_writes(
			    n, 503, "leadership lost before commit: write outcome unknown\n");
		kvd_membership_tick(n);
	}
	if (u->deadline != 0) {
		uint64_t now = kvd_node_now(n);
		uint64_t delay = u->deadline > now ? u->deadline - now : 0;
		uv_timer_start(&n->tick_timer, tick_cb, delay, 0);
	}
}

int kvd_node_step(struct kvd_node *n, struct raft_event *e)
{
	struct raft_update u;
	int rv;

	e->now = kvd_node_now(n);
	rv = raft_step(n->raft, e, &u);
	handle_update(n, &u);
	return rv;
}

uint64_t kvd_node_now(struct kvd_node *n)
{
	uv_update_time(n->loop);
	return uv_now(n->loop);
}

static void tick_cb(uv_timer_t *t)
{
	struct kvd_node *n = t->data;
	struct raft_event e = {.type = RAFT_EVENT_TICK};
	kvd_node_step(n, &e);
}

/* ---- proposals and reads ----------------------------------------------- */

void kvd_node_propose(struct kvd_node *n, struct http_request *req, void *command, size_t len)
{
	if (n->batch_n == n->batch_cap) {
		unsigned cap = n->batch_cap ? n->batch_cap * 2 : 64;
		struct kvd_batch_item *b = realloc(n->batch, cap * sizeof(*b));
		if (b == NULL) {
			free(command);
			kvd_reply_text(req, 503, "out of memory\n");
			return;
		}
		n->batch = b;
		n->batch_cap = cap;
	}
	n->batch[n->batch_n++] = (struct kvd_batch_item){req, command, len};
}

static void batch_check_cb(uv_check_t *c)
{
	struct kvd_node *n = c->data;
	struct raft_entry *es;
	struct raft_event e = {.type = RAFT_EVENT_PROPOSE};
	struct raft_update u;
	unsigned count = n->batch_n;
	int rv;

	if (count == 0)
		return;
	n->batch_n = 0;
	es = calloc(count, sizeof(*es));
	if (es == NULL || kvd_node_rules(n) != KVD_NODE_RUNNING) {
		for (unsigned i = 0; i < count; i++) {
			if (kvd_node_disk_full(n) ||
			    (kvd_node_rules(n) == KVD_NODE_IO_FAILED && n->io_error == KVD_ENOSPC))
				kvd_reply_text(n->batch[i].req, 507, "insufficient storage\n");
			else
				kvd_reply_text(n->batch[i].req, 503,
					       es == NULL
						   ? "out of memory\n"
						   : "disk write failed; node is read-only\n");
			free(n->batch[i].command);
		}
		free(es);
		return;
	}
	for (unsigned i = 0; i < count; i++) {
		es[i].type = RAFT_ENTRY_COMMAND;
		es[i].data = n->batch[i].command;
		es[i].len = n->batch[i].len;
	}
	e.u.propose.entries = es;
	e.u.propose.n = count;
	e.now = kvd_node_now(n);
	rv = raft_step(n->raft, &e, &u);
	for (unsigned i = 0; i < count; i++) {
		struct http_request *req = n->batch[i].req;
		free(n->batch[i].command);
		if (rv != 0) {
			if (rv == KVD_ENOTLEADER)
				kvd_reply_not_leader(n, req);
			else
				kvd_reply_text(req, 503,
					       "write not accepted: leadership transfer "
					       "in progress\n");
			continue;
		}
		struct kvd_pending_write *w = calloc(1, sizeof(*w));
		if (w == NULL) {
			kvd_reply_text(req, 503, "out of memory: write outcome unknown\n");
			continue;
		}
		w->index = u.proposed_index + i;
		w->term = u.proposed_term;
		w->deadline = e.now + KVD_WRITE_TIMEOUT_MS;
		w->req = req;
		if (n->writes_tail != NULL)
			n->writes_tail->next = w;
		else
			n->writes = w;
		n->writes_tail = w;
	}
	free(es);
	handle_update(n, &u);
}

void kvd_node_read(struct kvd_node *n, struct http_request *req, const char *key, size_t len)
{
	struct kvd_pending_read *r = malloc(sizeof(*r) + len);
	struct raft_event e = {.type = RAFT_EVENT_READ};
	int rv;

	if (r == NULL) {
		kvd_reply_text(req, 503, "out of memory\n");
		return;
	}
	r->token = ++n->next_token;
	r->req = req;
	r->key_len = len;
	memcpy(r->key, key, len);
	r->deadline = kvd_node_now(n) + KVD_WRITE_TIMEOUT_MS;
	r->next = n->reads;
	n->reads = r;
	e.u.read.token = r->token;
	rv = kvd_node_step(n, &e);
	if (rv != 0) {
		struct kvd_pending_read **pp = &n->reads;
		while (*pp != NULL && *pp != r)
			pp = &(*pp)->next;
		if (*pp == r) {
			*pp = r->next;
			kvd_reply_not_leader(n, req);
			free(r);
		}
	}
}

void kvd_node_serve_get(struct kvd_node *n, struct http_request *req, const char *key, size_t len)
{
	void *value;
	size_t vlen;
	int rv;

	if (kvd_node_installing(n)) {
		kvd_reply_text(req, 503, "installing a snapshot from the leader; retry\n");
		return;
	}
	rv = engine_get(n->engine, key, len, &value, &vlen);
	if (rv == KVD_ENOTFOUND) {
		kvd_reply_text(req, 404, "key not found\n");
	} else if (rv != 0) {
		kvd_reply_text(req, 500, "state machine read failed\n");
	} else {
		kvd_respond(req, 200, "text/plain; charset=utf-8", NULL, value, vlen);
		free(value);
	}
}

/* Answers writes and reads that outlived KVD_WRITE_TIMEOUT_MS with 503. */
static void sweep_cb(uv_timer_t *t)
{
	struct kvd_node *n = t->data;
	uint64_t now = kvd_node_now(n);
	struct kvd_pending_write **wp = &n->writes;

	kvd_membership_tick(n);
	struct kvd_pending_read **rp = &n->reads;

	n->writes_tail = NULL;
	while (*wp != NULL) {
		struct kvd_pending_write *w = *wp;
		if (w->deadline <= now && !w->committed) {
			*wp = w->next;
			kvd_reply_text(w->req, 503,
				       "commit not reached within 5 s: write outcome unknown\n");
			free(w);
			continue;
		}
		n->writes_tail = w;
		wp = &w->next;
	}
	while (*rp != NULL) {
		struct kvd_pending_read *r = *rp;
		if (r->deadline <= now) {
			*rp = r->next;
			kvd_reply_text(r->req, 503, "read not confirmed within 5 s\n");
			free(r);
			continue;
		}
		rp = &r->next;
	}
}

/* ---- log reads and compaction -------------------------------------------- */

static void maybe_snapshot(struct kvd_node *n)
{
	kvd_snapshot_maybe_take(n);
}

void kvd_node_remove_log_head(struct kvd_node *n, raft_index up_to)
{
	struct writer_job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return; /* compaction is retried with the next snapshot */
	j->type = WRITER_REMOVE_HEAD;
	j->remove_up_to = up_to;
	kvd_workq_submit(&n->writer, &j->base);
}

void kvd_node_read_log(struct kvd_node *n, struct http_request *req, raft_index from,
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
	kvd_workq_submit(&n->writer, &j->base);
}

/* ---- start and stop -------------------------------------------------------- */

/* mkdir -p: creates path and any missing parent. */
static int make_dir(const char *path, char *errmsg)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf)) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "bad data directory path '%.400s'", path);
		return KVD_EINVAL;
	}
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
			snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot create %.400s: %s", buf,
				 strerror(errno));
			return errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
		}
		buf[i] = path[i];
	}
	return 0;
}

/* Writes the founding configuration at index 1, term 1 (raft.h). */
static int bootstrap(struct kvd_node *n, char *errmsg)
{
	struct raft_config c;
	struct raft_entry e;
	char id[KVD_CLUSTER_ID_SIZE];
	void *buf = NULL;
	int rv;

	memset(&c, 0, sizeof(c));
	for (unsigned i = 0; i < n->cfg.n_members; i++) {
		rv = raft_config_add(&c, n->cfg.members[i], RAFT_VOTER);
		if (rv != 0) {
			snprintf(errmsg, KVD_ERRMSG_SIZE, "bad member list");
			return rv;
		}
	}
	kvd_cluster_id_derive(&c, id);
	rv = kvd_cluster_id_store(n, id, errmsg);
	if (rv != 0)
		return rv;
	rv = raft_bootstrap_entry(&c, &e, &buf);
	if (rv != 0)
		return rv;
	rv = raft_log_store_append(n->store, &e, 1, errmsg);
	if (rv == 0)
		rv = raft_log_store_sync(n->store, errmsg);
	free(buf);
	if (rv == 0)
		KVD_INFO("bootstrapped cluster", "members=%u", c.n);
	return rv;
}

/*
 * kvload without --id (KVD_ADOPT_FILE): the loaded snapshot names some other
 * single voter. A node started alone on it appends its own one-voter
 * configuration right after the snapshot, as a bootstrap would, and becomes
 * that cluster; then the marker goes.
 */
static int adopt_loaded_state(struct kvd_node *n, const struct raft_snapshot_meta *snap,
			      raft_index applied, raft_index *last, char *errmsg)
{
	char marker[PATH_MAX];
	struct raft_config c;
	struct raft_entry e;
	void *buf = NULL;
	int rv = 0;

	snprintf(marker, sizeof(marker), "%.4000s/" KVD_ADOPT_FILE, n->cfg.data_dir);
	if (access(marker, F_OK) != 0)
		return 0;
	if (n->cfg.peers_given || n->cfg.join[0] != '\0' || snap->index == 0 ||
	    *last != snap->index || applied != snap->index || snap->config.n != 1 ||
	    snap->config.n_old != 0) {
		KVD_WARN("loaded data not adopted: start the node alone (no peers, no --join)",
			 "file=%s", marker);
		return 0;
	}
	if (strcmp(snap->config.servers[0].id, n->cfg.id) != 0) {
		memset(&c, 0, sizeof(c));
		rv = raft_config_add(&c, n->cfg.id, RAFT_VOTER);
		if (rv == 0)
			rv = raft_bootstrap_entry(&c, &e, &buf);
		if (rv == 0) {
			e.index = snap->index + 1;
			e.term = snap->term;
			rv = raft_log_store_append(n->store, &e, 1, errmsg);
		}
		if (rv == 0)
			rv = raft_log_store_sync(n->store, errmsg);
		free(buf);
		if (rv != 0)
			return rv;
		*last = raft_log_store_last_index(n->store);
	}
	if (!n->cluster_id_file) { /* a cluster of its own from now on */
		char id[KVD_CLUSTER_ID_SIZE];
		memset(&c, 0, sizeof(c));
		raft_config_add(&c, n->cfg.id, RAFT_VOTER);
		kvd_cluster_id_derive(&c, id);
		rv = kvd_cluster_id_store(n, id, errmsg);
		if (rv != 0)
			return rv;
	}
	if (unlink(marker) != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot remove %s: %s", marker, strerror(errno));
		return KVD_EIO;
	}
	KVD_INFO("adopted the state loaded by kvload", "index=%" PRIu64 " id=%s", snap->index,
		 n->cfg.id);
	return 0;
}

/* Loads term, vote, log tail and applied index, then starts the core. */
static int start_core(struct kvd_node *n, char *errmsg)
{
	struct raft_meta meta;
	struct raft_options opts;
	struct raft_event e = {.type = RAFT_EVENT_START};
	struct raft_entry *entries = NULL;
	size_t n_entries = 0;
	raft_term prev_term = 0;
	uint64_t applied, applied_term;
	raft_index first, last;
	int rv;

	rv = raft_meta_load(n->raft_dir, &meta, errmsg);
	if (rv != 0)
		return rv;
	rv = kvd_snapshot_recover(n, &e.u.start.snapshot, errmsg);
	if (rv != 0)
		return rv;
	first = raft_log_store_first_index(n->store);
	last = raft_log_store_last_index(n->store);
	engine_applied(n->engine, &applied, &applied_term);
	/* Only a node that never belonged to a cluster bootstraps one. */
	if (last == 0 && n->snapshot_index == 0 && applied == 0 && n->cfg.join[0] == '\0' &&
	    !n->cluster_id_file) {
		rv = bootstrap(n, errmsg);
		if (rv != 0)
			return rv;
		first = raft_log_store_first_index(n->store);
		last = raft_log_store_last_index(n->store);
	}
	engine_applied(n->engine, &applied, &applied_term);
	rv = adopt_loaded_state(n, &e.u.start.snapshot, applied, &last, errmsg);
	if (rv != 0)
		return rv;
	if (first > applied + 1) {
		snprintf(errmsg, KVD_ERRMSG_SIZE,
			 "the log in %.2000s starts at %" PRIu64
			 " but the state machine has applied only %" PRIu64
			 " and no snapshot covers the gap",
			 n->raft_dir, first, applied);
		return KVD_ECORRUPT;
	}
	if (applied > last) {
		/* The log lost a tail the state machine had applied (a torn
		 * last record that had been durable, or a snapshot newer than
		 * the log). Applied entries are committed, so the log restarts
		 * after the applied index, as after a snapshot, and a snapshot
		 * at that point is taken at once so peers can be caught up. */
		KVD_WARN("log ends before the applied state; continuing after it",
			 "last_index=%" PRIu64 " applied_index=%" PRIu64 " dir=%s", last, applied,
			 n->raft_dir);
		rv = raft_log_store_reset(n->store, applied, applied_term, errmsg);
		if (rv != 0)
			return rv;
		first = raft_log_store_first_index(n->store);
		last = raft_log_store_last_index(n->store);
		if (applied > n->snapshot_index) {
			/* Start from the state machine's point, with the
			 * configuration it applied last; the snapshot file
			 * for it follows right after start. */
			void *conf = NULL;
			size_t conf_len = 0;
			struct raft_snapshot_meta *sm = &e.u.start.snapshot;
			if (engine_config_get(n->engine, &conf, &conf_len) != 0 ||
			    raft_config_decode(conf, conf_len, &sm->config) != 0) {
				free(conf);
				snprintf(errmsg, KVD_ERRMSG_SIZE,
					 "the log in %.2000s ends before the applied state and "
					 "the state machine holds no configuration",
					 n->raft_dir);
				return KVD_ECORRUPT;
			}
			free(conf);
			sm->index = applied;
			sm->term = applied_term;
			sm->size = 0;
			n->snapshot_wanted = true;
		}
	}
	/* The core holds the log after its snapshot (raft.h). */
	if (n->snapshot_index >= first)
		first = n->snapshot_index + 1;
	if (last >= first && last > 0) {
		rv = raft_log_store_read(n->store, first, last, 0, &entries, &n_entries, errmsg);
		if (rv != 0)
			return rv;
	}
	if (first > 1 && first - 1 == n->snapshot_index)
		prev_term = n->snapshot_term;
	else if (first > 1 && raft_log_store_term_at(n->store, first - 1, &prev_term, errmsg) != 0)
		prev_term = 0;
	raft_options_default(&opts);
	opts.election_timeout_min = n->cfg.election_timeout_min;
	opts.election_timeout_max = n->cfg.election_timeout_max;
	opts.heartbeat_interval = n->cfg.heartbeat_ms;
	opts.snapshot_trailing = n->snapshot_trailing;
	n->raft = raft_create(n->cfg.id, &opts, (uint64_t)uv_hrtime() ^ (uint64_t)getpid());
	if (n->raft == NULL) {
		free(entries);
		snprintf(errmsg, KVD_ERRMSG_SIZE, "out of memory");
		return KVD_ENOMEM;
	}
	e.u.start.term = meta.term;
	e.u.start.voted_for = meta.voted_for;
	e.u.start.applied_index = applied;
	e.u.start.prev_index = first > 0 ? first - 1 : 0;
	e.u.start.prev_term = prev_term;
	if (n_entries == 0 && n->snapshot_index > e.u.start.prev_index) {
		e.u.start.prev_index = n->snapshot_index;
		e.u.start.prev_term = n->snapshot_term;
	}
	e.u.start.entries = entries;
	e.u.start.n_entries = (unsigned)n_entries;
	n->applied_index = applied;
	n->apply_submitted = applied;
	n->ready_index = last;
	KVD_INFO("recovered",
		 "term=%" PRIu64 " first_index=%" PRIu64 " last_index=%" PRIu64
		 " applied_index=%" PRIu64 " replay=%" PRIu64,
		 meta.term, first, last, applied, last - applied);
	rv = kvd_node_step(n, &e);
	free(entries);
	if (rv != 0)
		snprintf(errmsg, KVD_ERRMSG_SIZE, "raft core refused to start: %s",
			 kvd_strerror(rv));
	return rv;
}

int kvd_node_start(uv_loop_t *loop, const struct kvd_config *cfg, struct kvd_node **out,
		   char *errmsg)
{
	struct kvd_node *n = calloc(1, sizeof(*n));
	struct engine_options eopts = {0};
	struct http_server_opts hopts = {0};
	const struct raft_config *conf;
	int rv;

	if (n == NULL) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "out of memory");
		return KVD_ENOMEM;
	}
	n->loop = loop;
	n->cfg = *cfg;
	n->snapshot_trailing = KVD_SNAPSHOT_TRAILING;
	snprintf(n->raft_dir, sizeof(n->raft_dir), "%.4000s/raft", cfg->data_dir);
	snprintf(n->kv_dir, sizeof(n->kv_dir), "%.4000s/kv", cfg->data_dir);
	snprintf(n->snap_dir, sizeof(n->snap_dir), "%.4000s/snapshots", cfg->data_dir);
	if ((rv = make_dir(cfg->data_dir, errmsg)) != 0 ||
	    (rv = make_dir(n->raft_dir, errmsg)) != 0 || (rv = make_dir(n->snap_dir, errmsg)) != 0)
		goto err;

	errmsg[0] = '\0';
	rv = raft_log_store_open(n->raft_dir, NULL, &n->store, errmsg);
	if (rv != 0)
		goto err;
	if (errmsg[0] != '\0') /* recovery notes, e.g. a torn tail cut off */
		KVD_WARN("log recovery", "detail=\"%s\"", errmsg);
	/* LevelDB's own write-ahead log grows to the memtable size before a
	 * flush: keep it small next to the Raft log's bound (docs/operations.md
	 * "Disk use"). */
	eopts.write_buffer_bytes = KVD_ENGINE_WRITE_BUFFER;
	rv = engine_open(n->kv_dir, &eopts, &n->engine, errmsg);
	if (rv != 0)
		goto err_store;

	uv_timer_init(loop, &n->tick_timer);
	n->tick_timer.data = n;
	uv_timer_init(loop, &n->sweep_timer);
	n->sweep_timer.data = n;
	uv_timer_init(loop, &n->finish_timer);
	n->finish_timer.data = n;
	uv_timer_init(loop, &n->disk_timer);
	n->disk_timer.data = n;
	uv_timer_init(loop, &n->reinit_timer);
	n->reinit_timer.data = n;
	uv_check_init(loop, &n->batch_check);
	n->batch_check.data = n;
	uv_check_start(&n->batch_check, batch_check_cb);
	uv_timer_start(&n->sweep_timer, sweep_cb, 250, 250);

	rv = kvd_workq_start(&n->writer, loop, writer_run, writer_done, n);
	if (rv == 0)
		rv = kvd_workq_start(&n->applier, loop, apply_run, apply_done, n);
	if (rv != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot start worker threads");
		goto err_engine;
	}
	rv = kvd_transport_create(n, &n->transport, errmsg);
	if (rv == 0)
		rv = kvd_cluster_id_load(n, errmsg);
	if (rv != 0)
		goto err_engine;
	rv = start_core(n, errmsg);
	if (rv != 0)
		goto err_engine;

	/* A sole voter leads at once and replays its log before opening. */
	conf = raft_configuration(n->raft);
	if (conf->n == 1 && raft_config_is_voter(conf, n->cfg.id)) {
		while (kvd_node_rules(n) != KVD_NODE_IO_FAILED &&
		       (raft_role(n->raft) != RAFT_LEADER || n->applied_index < n->ready_index ||
			n->applied_index < raft_commit_index(n->raft)))
			uv_run(loop, UV_RUN_ONCE);
		if (kvd_node_rules(n) == KVD_NODE_IO_FAILED) {
			snprintf(errmsg, KVD_ERRMSG_SIZE, "disk write failed during recovery: %s",
				 kvd_strerror(n->io_error));
			rv = KVD_EIO;
			goto err_engine;
		}
	}

	hopts.body_limit_cb = kvd_routes_body_limit;
	hopts.ordered_cb = kvd_routes_ordered;
	hopts.admit_cb = kvd_routes_admit;
	hopts.observe_cb = kvd_metrics_observe;
	hopts.max_connections = (unsigned)cfg->max_connections;
	hopts.idle_timeout_ms = 60000;
	rv = http_server_start(loop, cfg->listen_host, cfg->port, &hopts, kvd_routes_handle, n,
			       &n->http, errmsg);
	if (rv != 0)
		goto err_engine;
	if (n->cfg.join[0] != '\0' && kvd_join_start(n) != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "out of memory");
		rv = KVD_ENOMEM;
		goto err_engine;
	}
	if (n->snapshot_wanted)
		kvd_snapshot_take(n);
	KVD_INFO("ready", "id=%s listen=%s:%u data_dir=%s", cfg->id, cfg->listen_host,
		 (unsigned)cfg->port, cfg->data_dir);
	*out = n;
	return 0;

err_engine:
	/* Startup failures end the process; the loop and threads go with it. */
	return rv;
err_store:
	raft_log_store_close(n->store);
err:
	free(n);
	return rv;
}

/* ---- shutdown ------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
	struct kvd_node *n = h->data;
	if (--n->closing_handles == 0 && n->shutdown_cb != NULL)
		n->shutdown_cb(n);
}

/* Whether another voter could take over leadership. */
static bool has_other_voter(struct kvd_node *n)
{
	const struct raft_config *c = raft_configuration(n->raft);
	for (unsigned i = 0; i < c->n; i++)
		if (c->servers[i].role == RAFT_VOTER && strcmp(c->servers[i].id, n->cfg.id) != 0)
			return true;
	return false;
}

/* Shutdown, after every HTTP request is answered: hand leadership over when
 * another voter can take it (at most KVD_TRANSFER_WAIT_MS), let the workers
 * drain, then close. Polled from a timer: the loop is never re-entered. */
static void finish_cb(uv_timer_t *t)
{
	struct kvd_node *n = t->data;
	uint64_t now = kvd_node_now(n);

	if (n->finish_deadline == 0) {
		n->finish_deadline = now + KVD_TRANSFER_WAIT_MS;
		if (raft_role(n->raft) == RAFT_LEADER && has_other_voter(n) &&
		    kvd_node_rules(n) != KVD_NODE_IO_FAILED) {
			struct raft_event e = {.type = RAFT_EVENT_TRANSFER};
			e.u.transfer.to = NULL;
			if (kvd_node_step(n, &e) == 0)
				KVD_INFO("handing leadership over before exit", NULL);
		}
	}
	if (raft_role(n->raft) == RAFT_LEADER && has_other_voter(n) &&
	    kvd_node_rules(n) != KVD_NODE_IO_FAILED && now < n->finish_deadline)
		return;
	if (!kvd_workq_idle(&n->writer) || !kvd_workq_idle(&n->applier))
		return;
	uv_timer_stop(t);
	kvd_workq_stop(&n->writer);
	kvd_workq_stop(&n->applier);
	kvd_transport_destroy(n->transport);
	n->transport = NULL;
	n->closing_handles = 6;
	uv_close((uv_handle_t *)&n->reinit_timer, handle_closed);
	uv_close((uv_handle_t *)&n->disk_timer, handle_closed);
	uv_close((uv_handle_t *)&n->tick_timer, handle_closed);
	uv_close((uv_handle_t *)&n->sweep_timer, handle_closed);
	uv_close((uv_handle_t *)&n->batch_check, handle_closed);
	uv_close((uv_handle_t *)&n->finish_timer, handle_closed);
}

static void http_closed(struct http_server *server, void *user)
{
	struct kvd_node *n = user;
	(void)server;

	uv_timer_start(&n->finish_timer, finish_cb, 0, 10);
}

void kvd_node_shutdown(struct kvd_node *n, void (*done_cb)(struct kvd_node *node))
{
	if (kvd_node_stopping(n))
		return;
	kvd_node_set_state(n, KVD_NODE_STOPPING);
	n->shutdown_cb = done_cb;
	KVD_INFO("shutting down", "id=%s", n->cfg.id);
	http_server_close(n->http, KVD_SHUTDOWN_GRACE_MS, http_closed, n);
}

void kvd_node_destroy(struct kvd_node *n)
{
	if (n == NULL)
		return;
	raft_destroy(n->raft);
	engine_close(n->engine);
	raft_log_store_close(n->store);
	kvd_writer_track_free(&n->writer_track);
	free(n->batch);
	free(n);
}
