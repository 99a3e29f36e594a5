/*
 * snapshots.c: the node's snapshots, one part of the driver (issue 7): local
 * snapshots and log compaction (Raft §7), the snapshot received from the
 * leader (chunks, then the ordered install), the POST /log/snapshot waiters,
 * and recovery from the newest good snapshot file. The part owns the
 * snapshot state (struct kvd_snapshots below); others ask through
 * snapshots.h.
 *
 * A snapshot is a consistent LevelDB view at an applied index, serialized by
 * engine_view_write() on a libuv worker thread into
 * <data>/snapshots/snapshot-<index>-<term>.lz4 (temporary file, fsync,
 * rename). Once it is durable the core is told (RAFT_EVENT_SNAPSHOT_TAKEN),
 * whole log segments below index - trailing are removed through the writer,
 * and older snapshot files are deleted. At most one snapshot runs at a time.
 *
 * Recovery: the newest snapshot file that reads back whole (every checksum,
 * engine_snapshot_check) names the snapshot the core starts from; a damaged
 * newer one is renamed *.corrupt, never trusted, and the older good ones are
 * kept until a valid one is chosen. If LevelDB is behind it (a lost or fresh state machine) the
 * snapshot is restored into a new LevelDB directory and swapped in before
 * anything else runs.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <errno.h>

#include "api/applier.h"
#include "api/common/snapfile.h"
#include "api/common/fileutil.h"
#include "api/log.h"
#include "api/node_internal.h"
#include "api/snapshot_files.h"
#include "api/snapshots.h"
#include "api/transport.h"
#include "api/writer.h"
#include "engine/snapshot.h"
#include "kvd/errors.h"
#include "raft/log_io.h"

/*
 * What the node does with snapshots; one at a time, so that LevelDB is never
 * swapped under a read view and the install steps never overlap:
 *   IDLE -> TAKING               kvd_snapshot_take() started a local snapshot
 *   TAKING -> IDLE               its worker finished (take_done)
 *   IDLE -> INSTALL_CHECK        the last chunk from the leader is durable
 *   TAKING -> INSTALL_WAIT       ... while a local snapshot runs: it is
 *                                waited for (never interrupted)
 *   INSTALL_WAIT -> INSTALL_CHECK   the local snapshot finished
 *   INSTALL_CHECK -> INSTALL_RESET  the file is checked, renamed, durable
 *   INSTALL_RESET -> INSTALL_SWAP   the stored log restarts after it
 *   INSTALL_SWAP -> IDLE         LevelDB swapped, the core told
 *   INSTALL_CHECK -> IDLE        the check failed (RAFT_EVENT_SNAPSHOT_FAILED)
 * A local snapshot starts only from IDLE. From INSTALL_CHECK on, engine reads
 * get 503 (the state machine is about to be replaced).
 */
enum kvd_snapshot_state {
	KVD_SNAP_IDLE = 0,
	KVD_SNAP_TAKING,
	KVD_SNAP_INSTALL_WAIT,
	KVD_SNAP_INSTALL_CHECK,
	KVD_SNAP_INSTALL_RESET,
	KVD_SNAP_INSTALL_SWAP,
};

/* An HTTP request parked until the running snapshot completes. */
struct kvd_waiter {
	struct kvd_waiter *next;
	struct http_request *req;
};

struct kvd_snapshots {
	raft_index index; /* the newest durable snapshot */
	raft_term term;
	uint64_t size;	     /* bytes */
	raft_index trailing; /* log entries kept behind a snapshot */
	enum kvd_snapshot_state state;
	bool wanted;		  /* take one right after start (log reset at recovery) */
	raft_index install_index; /* INSTALL_WAIT: the received snapshot waiting */
	raft_term install_term;
	uv_work_t work;
	struct kvd_waiter *waiters; /* POST /log/snapshot */
};

/* True while a local snapshot's worker runs (it holds a LevelDB view). */
static bool taking(const struct kvd_node *n)
{
	return n->snaps->state == KVD_SNAP_TAKING || n->snaps->state == KVD_SNAP_INSTALL_WAIT;
}

static void snapshot_taken(struct kvd_node *n);
static void waiters_done(struct kvd_node *n, int status);

struct snapshot_task {
	struct kvd_node *node;
	struct engine_view *view;
	uint64_t index, term;
	uint64_t size; /* bytes */
	int status;
	char path[PATH_MAX];
	char errmsg[KVD_ERRMSG_SIZE];
};

void kvd_snapshot_path(const struct kvd_node *n, uint64_t index, uint64_t term, char *path)
{
	kvd_snapfile_path(n->snap_dir, index, term, path);
}

/* Removes snapshot files other than the one at keep_index, and stale
 * temporary files (snapshot_files.c). */
void kvd_snapshot_prune(struct kvd_node *n, uint64_t keep_index)
{
	kvd_snapfiles_prune(&raft_log_io_posix, n->snap_dir, keep_index, taking(n));
}

/* kvd_snapshot_choose's check: the engine reads the file back whole; the
 * meta of the last file read is kept for the caller. */
struct choose_ctx {
	struct engine_snapshot_meta *meta;
};

static int choose_check(void *ctx, const char *path)
{
	struct choose_ctx *c = ctx;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv;

	engine_snapshot_meta_clear(c->meta);
	rv = engine_snapshot_check(path, c->meta, errmsg);
	if (rv == KVD_ECORRUPT)
		KVD_WARN("snapshot file is damaged; using an older one",
			 "file=%s detail=\"%s\" moved_to=%s.corrupt", path, errmsg, path);
	return rv;
}

int kvd_snapshot_choose(const char *dir, struct engine_snapshot_meta *meta, char *path)
{
	struct choose_ctx c = {meta};
	uint64_t index, term;

	return kvd_snapfiles_choose(&raft_log_io_posix, dir, choose_check, &c, &index, &term, path);
}

static void take_work(uv_work_t *w)
{
	struct snapshot_task *t = w->data;
	t->status = engine_view_write(t->view, t->path, &t->size, t->errmsg);
}

static void take_done(uv_work_t *w, int status)
{
	struct snapshot_task *t = w->data;
	struct kvd_node *n = t->node;
	const void *config;
	size_t config_len;

	(void)status;
	if (t->status == 0 && t->index <= n->snaps->index) {
		/* A snapshot installed from the leader meanwhile is newer. */
		unlink(t->path);
		KVD_INFO("local snapshot superseded by an installed one", "index=%" PRIu64,
			 t->index);
	} else if (t->status != 0) {
		KVD_ERROR("snapshot failed", "index=%" PRIu64 " error=\"%s\" detail=\"%s\"",
			  t->index, kvd_strerror(t->status), t->errmsg);
	} else {
		struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_TAKEN};
		engine_view_meta(t->view, &t->index, &t->term, &config, &config_len);
		e.u.snapshot.index = t->index;
		e.u.snapshot.term = t->term;
		e.u.snapshot.size = t->size;
		if (config_len == 0 ||
		    raft_config_decode(config, config_len, &e.u.snapshot.config) != 0) {
			KVD_ERROR("snapshot has no readable configuration; not used",
				  "index=%" PRIu64, t->index);
		} else {
			n->snaps->index = t->index;
			n->snaps->term = t->term;
			n->snaps->size = t->size;
			kvd_node_step(n, &e);
			kvd_snapshot_prune(n, t->index);
			if (kvd_snapshot_floor(n) > 0) {
				/* Outcomes go with their entries: a watch replays
				 * the trailing entries after a crash. */
				kvd_applier_prune_outcomes(n->applier, kvd_snapshot_floor(n));
				kvd_writer_remove_head(n->writer, kvd_snapshot_floor(n));
			}
			KVD_INFO("snapshot taken",
				 "index=%" PRIu64 " term=%" PRIu64 " bytes=%" PRIu64, t->index,
				 t->term, t->size);
		}
	}
	engine_view_release(t->view);
	waiters_done(n, t->status);
	free(t);
	/* IDLE, or the install from the leader that waited for this view. */
	snapshot_taken(n);
}

int kvd_snapshot_take(struct kvd_node *n)
{
	struct snapshot_task *t;
	const void *config;
	size_t config_len;
	int rv;

	if (n->snaps->state != KVD_SNAP_IDLE)
		return KVD_EBUSY;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return KVD_ENOMEM;
	rv = engine_snapshot_begin(n->engine, &t->view);
	if (rv != 0) {
		free(t);
		return rv;
	}
	engine_view_meta(t->view, &t->index, &t->term, &config, &config_len);
	if (t->index == 0 || t->index <= n->snaps->index) {
		engine_view_release(t->view);
		free(t);
		return KVD_EEXIST; /* nothing new to cover */
	}
	t->node = n;
	kvd_snapshot_path(n, t->index, t->term, t->path);
	n->snaps->work.data = t;
	n->snaps->state = KVD_SNAP_TAKING;
	KVD_INFO("snapshot started", "index=%" PRIu64 " term=%" PRIu64, t->index, t->term);
	rv = uv_queue_work(n->loop, &n->snaps->work, take_work, take_done);
	if (rv != 0) {
		n->snaps->state = KVD_SNAP_IDLE;
		engine_view_release(t->view);
		free(t);
		return KVD_EIO;
	}
	return 0;
}

void kvd_snapshot_after_install(struct kvd_node *n)
{
	int rv;

	if (n->snaps->waiters == NULL)
		return;
	rv = kvd_snapshot_take(n);
	if (rv == KVD_EEXIST)
		rv = 0; /* the installed snapshot covers the applied state */
	if (rv != 0 || n->snaps->state == KVD_SNAP_IDLE)
		waiters_done(n, rv);
}

void kvd_snapshot_maybe_take(struct kvd_node *n)
{
	if (n->snaps->state == KVD_SNAP_IDLE && !kvd_node_stopping(n) &&
	    kvd_applier_applied(n->applier) >= n->snaps->index + n->cfg.snapshot_threshold)
		kvd_snapshot_take(n);
}

int kvd_snapshot_recover(struct kvd_node *n, struct raft_snapshot_meta *out, char *errmsg)
{
	struct engine_snapshot_meta meta = {0};
	char path[PATH_MAX];
	uint64_t applied, applied_term;
	int rv;

	memset(out, 0, sizeof(*out));
	rv = kvd_snapshot_choose(n->snap_dir, &meta, path);
	if (rv == KVD_ENOTFOUND)
		return 0;
	if (rv != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot read snapshot %.3000s: %s", path,
			 kvd_strerror(rv));
		return rv;
	}
	out->index = meta.index;
	out->term = meta.term;
	out->size = meta.size;
	if (raft_config_decode(meta.config, meta.config_len, &out->config) != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "snapshot %.3000s holds no valid configuration",
			 path);
		engine_snapshot_meta_clear(&meta);
		return KVD_ECORRUPT;
	}
	engine_snapshot_meta_clear(&meta);
	n->snaps->index = out->index;
	n->snaps->term = out->term;
	n->snaps->size = out->size;
	kvd_snapshot_prune(n, out->index);

	engine_applied(n->engine, &applied, &applied_term);
	if (applied < out->index) {
		char fresh[PATH_MAX];
		snprintf(fresh, sizeof(fresh), "%.3900s.restore", n->kv_dir);
		kvd_remove_tree(fresh);
		KVD_INFO("restoring state machine from snapshot",
			 "index=%" PRIu64 " applied=%" PRIu64 " file=%s", out->index, applied,
			 path);
		rv = engine_snapshot_restore(path, fresh, NULL, errmsg);
		if (rv == 0)
			rv = engine_swap(n->engine, fresh, errmsg);
		if (rv != 0)
			return rv;
	}
	return 0;
}

/* ---- the part's state -------------------------------------------------- */

int kvd_snapshots_create(struct kvd_node *n)
{
	n->snaps = calloc(1, sizeof(*n->snaps));
	if (n->snaps == NULL)
		return KVD_ENOMEM;
	n->snaps->trailing = KVD_SNAPSHOT_TRAILING;
	return 0;
}

void kvd_snapshots_destroy(struct kvd_node *n)
{
	if (n->snaps == NULL)
		return;
	while (n->snaps->waiters != NULL) {
		struct kvd_waiter *w = n->snaps->waiters;
		n->snaps->waiters = w->next;
		free(w);
	}
	free(n->snaps);
	n->snaps = NULL;
}

struct kvd_snapshot_info kvd_snapshot_last(const struct kvd_node *n)
{
	struct kvd_snapshot_info i = {n->snaps->index, n->snaps->term, n->snaps->size};
	return i;
}

raft_index kvd_snapshot_trailing(const struct kvd_node *n)
{
	return n->snaps->trailing;
}

raft_index kvd_snapshot_floor(const struct kvd_node *n)
{
	return n->snaps->index > n->snaps->trailing ? n->snaps->index - n->snaps->trailing : 0;
}

bool kvd_snapshot_idle(const struct kvd_node *n)
{
	return n->snaps->state == KVD_SNAP_IDLE;
}

bool kvd_snapshot_installing(const struct kvd_node *n)
{
	return n->snaps->state >= KVD_SNAP_INSTALL_CHECK;
}

void kvd_snapshot_forget(struct kvd_node *n)
{
	kvd_snapshot_prune(n, 0);
	n->snaps->index = n->snaps->term = n->snaps->size = 0;
}

void kvd_snapshot_want(struct kvd_node *n)
{
	n->snaps->wanted = true;
}

void kvd_snapshot_take_wanted(struct kvd_node *n)
{
	if (n->snaps->wanted)
		kvd_snapshot_take(n);
}

void kvd_snapshot_incoming_path(const struct kvd_node *n, char *path)
{
	snprintf(path, PATH_MAX, "%.4000s/incoming.tmp", n->snap_dir);
}

/* ---- POST /log/snapshot waiters ------------------------------------------ */

int kvd_snapshot_wait(struct kvd_node *n, struct http_request *req)
{
	struct kvd_waiter *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return KVD_ENOMEM;
	w->req = req;
	w->next = n->snaps->waiters;
	n->snaps->waiters = w;
	return 0;
}

/* Answers the POST /log/snapshot requests waiting for the running snapshot.
 * status: the snapshot's result. */
static void waiters_done(struct kvd_node *n, int status)
{
	struct kvd_waiter *w = n->snaps->waiters;

	n->snaps->waiters = NULL;
	while (w != NULL) {
		struct kvd_waiter *next = w->next;
		kvd_routes_snapshot_answer(n, w->req, status);
		free(w);
		w = next;
	}
}

/* ---- installing a snapshot from the leader ----------------------------- */

/*
 * Installing a snapshot received from the leader is one ordered procedure
 * (ARCHITECTURE.md "Snapshots"), so that a crash at any point leaves a node
 * that starts:
 *   1. INSTALL_CHECK (applier): the durable incoming file is restored into a
 *      side directory (which reads and checks every byte), then renamed to
 *      its snapshot name and the directory fsynced;
 *   2. the log reset (writer): the stored log restarts after the snapshot;
 *   3. INSTALL_SWAP (applier): the side directory replaces LevelDB;
 *   4. the core is told (SNAPSHOT_INSTALLED) and answers the last chunk.
 * It starts only once no local snapshot holds a view of LevelDB (a running
 * one is waited for: KVD_SNAP_INSTALL_WAIT), and no local snapshot starts
 * until it ends. A crash after step 1 finds the snapshot file newer than
 * LevelDB and restores from it at start. A failure at step 1 reports
 * SNAPSHOT_FAILED: the leader restarts the stream; a failed log reset stops
 * the core (disk error) and a failed swap stops the node, whose restart
 * restores from the file.
 */
enum install_step {
	INSTALL_CHECK = 1,
	INSTALL_SWAP,
};

/* One step of the install on the applier thread. */
struct install_task {
	struct kvd_applier_task task; /* first */
	enum install_step step;
	raft_index index;
	raft_term term;
	uint64_t size; /* bytes of the checked file */
	char path[PATH_MAX];
	char errmsg[KVD_ERRMSG_SIZE];
};

static void install_check_done(struct kvd_node *n, struct kvd_applier_task *t, int status);
static void install_swap_done(struct kvd_node *n, struct kvd_applier_task *t, int status);

/* Applier thread: step 1 (see above): restore the received file into the
 * side directory fresh (which checks every byte), check what it holds, give
 * it its snapshot name durably. */
static int install_check_file(struct kvd_node *n, struct install_task *j, const char *fresh)
{
	char incoming[PATH_MAX];
	struct engine_snapshot_meta meta = {0};
	int rv;

	kvd_snapshot_incoming_path(n, incoming);
	kvd_remove_tree(fresh);
	rv = engine_snapshot_restore(incoming, fresh, &meta, j->errmsg);
	if (rv == 0 && (meta.index != j->index || meta.term != j->term)) {
		snprintf(j->errmsg, sizeof(j->errmsg),
			 "%.3000s holds index %" PRIu64 " term %" PRIu64 ", expected %" PRIu64
			 " %" PRIu64,
			 incoming, meta.index, meta.term, j->index, j->term);
		rv = KVD_ECORRUPT;
	}
	j->size = meta.size;
	engine_snapshot_meta_clear(&meta);
	/* Renamed and the directory fsynced: durable under its name before
	 * the log reset relies on it (snapshot_files.c). */
	if (rv == 0)
		rv = kvd_snapfiles_place(&raft_log_io_posix, n->snap_dir, j->index, j->term,
					 j->errmsg);
	if (rv != 0) {
		kvd_remove_tree(fresh);
		if (rv == KVD_ECORRUPT)
			unlink(incoming); /* the leader sends it again from offset 0 */
	}
	return rv;
}

/* Applier thread: step 1 (check) or step 3 (swap). */
static int install_run(struct kvd_node *n, struct kvd_applier_task *t)
{
	struct install_task *j = (struct install_task *)t;
	char fresh[PATH_MAX];

	snprintf(fresh, sizeof(fresh), "%.4000s.restore", n->kv_dir);
	return j->step == INSTALL_SWAP ? engine_swap(n->engine, fresh, j->errmsg)
				       : install_check_file(n, j, fresh);
}

/* Loop thread: the install failed before the swap. The core forgets the
 * stream and refuses the waiting last chunk; the leader starts again. */
static void install_failed(struct kvd_node *n, int rv, const char *errmsg)
{
	struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_FAILED};

	KVD_ERROR("snapshot install failed; the leader will send it again",
		  "error=\"%s\" detail=\"%s\"", kvd_strerror(rv), errmsg);
	n->snaps->state = KVD_SNAP_IDLE;
	if (n->raft != NULL)
		kvd_node_step(n, &e);
	else
		kvd_transport_refuse_parked(n->transport);
	kvd_snapshot_after_install(n);
}

/* Loop thread: step 1 on the applier. */
static void install_check(struct kvd_node *n, raft_index index, raft_term term)
{
	struct install_task *a = calloc(1, sizeof(*a));

	if (a == NULL) {
		install_failed(n, KVD_ENOMEM, "out of memory");
	} else {
		KVD_INFO("installing snapshot from leader", "index=%" PRIu64 " term=%" PRIu64,
			 index, term);
		kvd_snapshot_path(n, index, term, a->path);
		a->task.run_cb = install_run;
		a->task.done_cb = install_check_done;
		a->step = INSTALL_CHECK;
		a->index = index;
		a->term = term;
		n->snaps->state = KVD_SNAP_INSTALL_CHECK;
		kvd_applier_submit_task(n->applier, &a->task);
	}
}

/* Loop thread: the last chunk is durable. A running local snapshot is
 * waited for: it holds a view LevelDB cannot be swapped under. */
static void start_install(struct kvd_node *n, const struct raft_snapshot *s)
{
	switch (kvd_snapfiles_install_rule(n->snaps->state == KVD_SNAP_TAKING)) {
	case KVD_SNAPFILES_INSTALL_WAIT:
		KVD_INFO("snapshot from leader waits for the local snapshot", "index=%" PRIu64,
			 s->last_index);
		n->snaps->install_index = s->last_index;
		n->snaps->install_term = s->last_term;
		n->snaps->state = KVD_SNAP_INSTALL_WAIT;
		break;
	case KVD_SNAPFILES_INSTALL_START: install_check(n, s->last_index, s->last_term); break;
	default: /* FAIL: only the simulator's planted copy of the rule says it */
		KVD_ERROR("snapshot from leader met a running local snapshot; stopping",
			  "index=%" PRIu64, s->last_index);
		exit(1);
	}
}

void kvd_snapshot_chunk_done(struct kvd_node *n, int status, const char *errmsg,
			     const struct raft_snapshot *chunk)
{
	if (status != 0) {
		/* A chunk that could not be written is not acknowledged: its
		 * held result is replaced by a refusal, and the leader retries
		 * the stream. */
		struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_FAILED};
		KVD_WARN("cannot write snapshot chunk", "detail=\"%s\"", errmsg);
		kvd_transport_drop_held(n->transport);
		/* The core forgets the stream, so no later chunk lands after a
		 * hole; the leader restarts it at offset 0. */
		if (n->raft != NULL && kvd_node_rules(n) != KVD_NODE_IO_FAILED)
			kvd_node_step(n, &e);
	} else if (chunk->done) {
		start_install(n, chunk);
	}
}

/* Loop thread: a local snapshot's worker finished: back to IDLE, or on to an
 * install that waited for it. */
static void snapshot_taken(struct kvd_node *n)
{
	if (n->snaps->state == KVD_SNAP_INSTALL_WAIT)
		install_check(n, n->snaps->install_index, n->snaps->install_term);
	else
		n->snaps->state = KVD_SNAP_IDLE;
}

/* Loop thread: step 2 finished on the writer. On success, step 3: no local
 * snapshot can hold a view (none starts during an install). On failure the
 * install ends here (the file is durable; a restart restores from it); the
 * writer handles the disk error like any log write's. */
static void install_reset_done(struct kvd_node *n, int status, void *ctx)
{
	struct install_task *j = ctx;

	if (status != 0) {
		struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_FAILED};
		free(j);
		n->snaps->state = KVD_SNAP_IDLE;
		if (n->raft != NULL && kvd_node_rules(n) != KVD_NODE_IO_FAILED)
			kvd_node_step(n, &e);
		kvd_snapshot_after_install(n);
		return;
	}
	n->snaps->state = KVD_SNAP_INSTALL_SWAP;
	kvd_applier_submit_task(n->applier, &j->task);
}

/* Loop thread: step 1 done: the file is checked and durable under its name.
 * Step 2: reset the stored log on the writer. */
static void install_check_done(struct kvd_node *n, struct kvd_applier_task *t, int status)
{
	struct install_task *j = (struct install_task *)t;

	if (status != 0) {
		install_failed(n, status, j->errmsg);
		free(j);
		return;
	}
	/* The newest durable snapshot from now on: a local snapshot finishing
	 * meanwhile is superseded and never prunes this file. */
	n->snaps->index = j->index;
	n->snaps->term = j->term;
	n->snaps->size = j->size;
	j->step = INSTALL_SWAP;
	j->task.done_cb = install_swap_done;
	j->task.base.status = 0;
	n->snaps->state = KVD_SNAP_INSTALL_RESET;
	if (kvd_writer_submit_reset(n->writer, j->index, j->term, install_reset_done, j) != 0) {
		KVD_ERROR("out of memory installing a snapshot; stopping", NULL);
		exit(1); /* the restart restores from the durable file */
	}
}

/* Loop thread: step 3 done; step 4: tell the core. */
static void install_swap_done(struct kvd_node *n, struct kvd_applier_task *t, int status)
{
	struct install_task *j = (struct install_task *)t;
	struct engine_snapshot_meta meta = {0};
	struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_INSTALLED};
	int rv;

	n->snaps->state = KVD_SNAP_IDLE;
	if (status != 0) {
		KVD_ERROR("snapshot install failed; stopping", "error=\"%s\" detail=\"%s\"",
			  kvd_strerror(status), j->errmsg);
		exit(1); /* restart recovers from the snapshot file */
	}
	rv = engine_snapshot_read_meta(j->path, &meta, NULL);
	if (rv != 0 ||
	    raft_config_decode(meta.config, meta.config_len, &e.u.snapshot.config) != 0) {
		KVD_ERROR("installed snapshot has no configuration; stopping", "file=%s", j->path);
		exit(1);
	}
	e.u.snapshot.index = meta.index;
	e.u.snapshot.term = meta.term;
	e.u.snapshot.size = meta.size;
	engine_snapshot_meta_clear(&meta);
	kvd_applier_reset(n->applier, j->index);
	n->snaps->index = e.u.snapshot.index;
	n->snaps->term = e.u.snapshot.term;
	n->snaps->size = e.u.snapshot.size;
	kvd_snapshot_prune(n, e.u.snapshot.index);
	KVD_INFO("snapshot installed", "index=%" PRIu64 " term=%" PRIu64, e.u.snapshot.index,
		 e.u.snapshot.term);
	kvd_node_step(n, &e);
	kvd_snapshot_after_install(n);
	free(j);
}
