/*
 * node_internal.h: the node's state, shared by node.c (Raft driving and
 * recovery), routes.c (HTTP handlers) and storage jobs. Not a public header.
 *
 * Thread: every field is touched on the loop thread only, except what the
 * worker threads reach through their jobs (the log store on the writer, the
 * engine's apply on the applier; engine gets are thread-safe in LevelDB).
 */
#ifndef KVD_API_NODE_INTERNAL_H
#define KVD_API_NODE_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "api/cluster_id.h"
#include "api/config.h"
#include "api/http_server.h"
#include "api/node.h"
#include "api/node_state.h"
#include "api/transport.h"
#include "api/workq.h"
#include "api/writer.h"
#include "engine/engine.h"
#include "raft/log_store.h"
#include "raft/raft.h"

#define KVD_WRITE_TIMEOUT_MS	5000		  /* a write not applied by then gets 503 */
#define KVD_SHUTDOWN_GRACE_MS	5000		  /* in-flight requests finish within this */
#define KVD_SNAPSHOT_TRAILING	1024		  /* log entries kept behind a snapshot */
#define KVD_ENGINE_WRITE_BUFFER ((size_t)1 << 20) /* bytes: LevelDB memtable, and so its log */
#define KVD_TRANSFER_WAIT_MS	2000 /* shutdown: time allowed to hand leadership over */

/* A client write waiting for its entry to be applied. */
struct kvd_pending_write {
	struct kvd_pending_write *next;
	raft_index index;
	raft_term term;
	uint64_t deadline; /* loop time, ms */
	struct http_request *req;
	bool committed; /* its entry was handed to the applier with its term */
};

/* A linearizable read waiting for its read index. */
struct kvd_pending_read {
	struct kvd_pending_read *next;
	uint64_t token;
	uint64_t deadline; /* loop time, ms */
	struct http_request *req;
	size_t key_len;
	char key[]; /* decoded key */
};

/* A write collected during one loop iteration, proposed with the others. */
struct kvd_batch_item {
	struct http_request *req;
	void *command; /* malloc'ed command text */
	size_t len;
};

/*
 * What the node does with snapshots; one at a time, so that LevelDB is never
 * swapped under a read view and the install steps never overlap:
 *   IDLE -> TAKING               kvd_snapshot_take() started a local snapshot
 *   TAKING -> IDLE               its worker finished (snapshots.c take_done)
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

struct kvd_node {
	uv_loop_t *loop;
	struct kvd_config cfg;
	char raft_dir[PATH_MAX];
	char kv_dir[PATH_MAX];
	char snap_dir[PATH_MAX];

	struct raft_core *raft;
	struct raft_log_store *store; /* writer thread only, once started */
	struct engine *engine;
	struct http_server *http;
	struct kvd_transport *transport;
	struct kvd_workq writer;
	struct kvd_writer_track writer_track; /* append jobs in flight (api/writer.h) */
	struct kvd_workq applier;

	uv_timer_t tick_timer;	 /* the core's next deadline */
	uv_timer_t sweep_timer;	 /* write and read timeouts */
	uv_check_t batch_check;	 /* proposes the writes collected this iteration */
	uv_timer_t finish_timer; /* shutdown: transfer, drain, close */
	uv_timer_t disk_timer;	 /* disk full: restart the core from durable state */
	uv_timer_t reinit_timer; /* discarding a lone node's state (cluster_id.c) */
	bool reinit_pending;
	char reinit_id[KVD_CLUSTER_ID_SIZE];
	char cluster_id[KVD_CLUSTER_ID_SIZE]; /* "" : not known yet */
	bool cluster_id_file;		      /* <data>/cluster-id exists */
	uint64_t finish_deadline;	      /* loop time, ms */

	struct kvd_batch_item *batch;
	unsigned batch_n, batch_cap;

	struct kvd_pending_write *writes, *writes_tail; /* by index */
	struct kvd_pending_read *reads;
	uint64_t next_token;

	raft_index applied_index;   /* as last reported by the applier */
	raft_index apply_submitted; /* last index handed to the applier */
	raft_index ready_index;	    /* open the port once applied reaches this */
	enum raft_role last_role;   /* for counting elections */
	struct kvd_node_mode mode;  /* running, disk full, ..., stopping (node_state.h) */
	int io_error;		    /* IO_FAILED: the kvd_error that stopped the core */
	void (*shutdown_cb)(struct kvd_node *);
	unsigned closing_handles;

	/* Snapshot state. */
	raft_index snapshot_index;
	raft_term snapshot_term;
	uint64_t snapshot_size;	      /* bytes */
	raft_index snapshot_trailing; /* log entries kept behind a snapshot */
	enum kvd_snapshot_state snapshot_state;
	bool snapshot_wanted;	  /* take one right after start (log reset at recovery) */
	raft_index install_index; /* INSTALL_WAIT: the received snapshot waiting */
	raft_term install_term;
	uv_work_t snapshot_work;
	struct kvd_waiter *snapshot_waiters; /* POST /log/snapshot */
};

/* An HTTP request parked until something completes. */
struct kvd_waiter {
	struct kvd_waiter *next;
	struct http_request *req;
};

/* Moves the node to state to (node_state.h table; a refused move is logged
 * and not made). Loop thread. */
void kvd_node_set_state(struct kvd_node *n, enum kvd_node_state to);

/* The state whose rules apply (while stopping: the state it stopped from). */
static inline enum kvd_node_state kvd_node_rules(const struct kvd_node *n)
{
	return kvd_node_mode_rules(&n->mode);
}

/* True once kvd_node_shutdown() began. */
static inline bool kvd_node_stopping(const struct kvd_node *n)
{
	return kvd_node_mode_stopping(&n->mode);
}

/* True while writes get 507 because the disk is (or was just) full. */
static inline bool kvd_node_disk_full(const struct kvd_node *n)
{
	enum kvd_node_state s = kvd_node_rules(n);
	return s == KVD_NODE_DISK_FULL || s == KVD_NODE_DISK_RECOVERING;
}

/* True while a received snapshot is being installed (engine reads 503). */
static inline bool kvd_node_installing(const struct kvd_node *n)
{
	return n->snapshot_state >= KVD_SNAP_INSTALL_CHECK;
}

/* True while a local snapshot's worker runs (it holds a LevelDB view). */
static inline bool kvd_node_snapshot_taking(const struct kvd_node *n)
{
	return n->snapshot_state == KVD_SNAP_TAKING || n->snapshot_state == KVD_SNAP_INSTALL_WAIT;
}

/* Loop thread: a local snapshot's worker finished (snapshots.c): back to
 * IDLE, or on to an install that waited for it (node.c). */
void kvd_node_snapshot_taken(struct kvd_node *n);

/* Path of the file receiving a snapshot from the leader (PATH_MAX bytes). */
void kvd_node_incoming_path(const struct kvd_node *n, char *path);

/* Queues removal of whole log segments up to index (after a snapshot). */
void kvd_node_remove_log_head(struct kvd_node *n, raft_index up_to);

/* Answers GET /log from the writer thread's view of the log. */
void kvd_node_read_log(struct kvd_node *n, struct http_request *req, raft_index from,
		       raft_index limit);

/* Loop time in ms. */
uint64_t kvd_node_now(struct kvd_node *n);

/* Feeds one event to the core and carries out the update. Returns the core's
 * result code. */
int kvd_node_step(struct kvd_node *n, struct raft_event *e);

/* HTTP entry point (routes.c). */
void kvd_routes_handle(struct http_request *req, void *user);
size_t kvd_routes_body_limit(const struct http_request *req, void *user);
bool kvd_routes_ordered(const struct http_request *req, void *user);
/* http_admit_cb: 401 for a protected request without the cluster token. */
int kvd_routes_admit(const struct http_request *req, void *user, const char **body);

/* Answers GET /log with entries read by the writer (routes.c). */
void kvd_routes_log_reply(struct kvd_node *n, struct http_request *req, int status,
			  const char *errmsg, const struct raft_entry *entries, size_t n_entries,
			  raft_index store_last);

/* Sends a text/plain response. */
void kvd_reply_text(struct http_request *req, int status, const char *body);

/* Answers "not leader": 307 to the known leader, else 503 no leader. */
void kvd_reply_not_leader(struct kvd_node *n, struct http_request *req);

/* Queues a write command (malloc'ed, ownership passes) for the next batch. */
void kvd_node_propose(struct kvd_node *n, struct http_request *req, void *command, size_t len);

/* Starts a linearizable read of key for req. */
void kvd_node_read(struct kvd_node *n, struct http_request *req, const char *key, size_t len);

/* Fails what waits on the core (writes 503, reads served or 503), drops held
 * messages and destroys the core; kvd_node_restart_core() starts a new one
 * from the durable state. Workers must be idle. */
void kvd_node_drop_core(struct kvd_node *n);
int kvd_node_restart_core(struct kvd_node *n, char *errmsg);

/* True when this node is the only voter of its configuration. */
bool kvd_node_sole_voter(struct kvd_node *n);

/* Serves a read of key from the local state machine. */
void kvd_node_serve_get(struct kvd_node *n, struct http_request *req, const char *key, size_t len);

#endif
