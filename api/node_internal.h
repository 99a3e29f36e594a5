/*
 * node_internal.h: the handle the driver (node.c) gives its parts (writer.c,
 * applier.c, snapshots.c, membership.c, cluster_id.c, transport.c) and the
 * HTTP routes: the node's shared resources, pointers to the parts (whose
 * state is private to their .c files), and the driver's services (stepping
 * the core, the node state). It includes no part's header, so no part's
 * header depends on another's through it. Not a public header.
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

#include "api/config.h"
#include "api/http/http_server.h"
#include "api/node_state.h"
#include "engine/engine.h"
#include "raft/log_store.h"
#include "raft/raft.h"

struct kvd_batch_item;
struct kvd_transport;
struct kvd_pending_read;

#define KVD_WRITE_TIMEOUT_MS	5000		  /* a write not applied by then gets 503 */
#define KVD_SHUTDOWN_GRACE_MS	5000		  /* in-flight requests finish within this */
#define KVD_SNAPSHOT_TRAILING	1024		  /* log entries kept behind a snapshot */
#define KVD_ENGINE_WRITE_BUFFER ((size_t)1 << 19) /* bytes: LevelDB memtable, and so its log */
#define KVD_TRANSFER_WAIT_MS	2000 /* shutdown: time allowed to hand leadership over */

struct kvd_writer;
struct kvd_applier;
struct kvd_cluster;
struct kvd_snapshots;

/*
 * The node: the resources every part uses (opened by kvd_node_start, closed
 * by kvd_node_destroy), the parts (each owns its state behind its header),
 * and the driver's own fields (node.c only).
 */
struct kvd_node {
	/* Shared resources; read-only after start but for what is noted. */
	uv_loop_t *loop;
	struct kvd_config cfg;
	char raft_dir[PATH_MAX];
	char kv_dir[PATH_MAX];
	char snap_dir[PATH_MAX];
	struct raft_core *raft;	      /* created by recovery.c, dropped by node.c */
	struct raft_log_store *store; /* writer thread only, once started */
	struct engine *engine;	      /* applies on the applier; gets are thread-safe */
	struct http_server *http;
	struct kvd_transport *transport;

	/* The parts. */
	struct kvd_writer *writer;   /* log and meta I/O (writer.h) */
	struct kvd_applier *applier; /* LevelDB applies, waiting writes (applier.h) */
	struct kvd_snapshots *snaps; /* take, receive, install (snapshots.h) */

	struct kvd_cluster *cluster; /* cluster identity (cluster_id.h) */

	/* The driver (node.c only). */
	struct kvd_node_mode mode; /* running, disk full, ..., stopping (node_state.h) */
	int io_error;		   /* IO_FAILED: the kvd_error that stopped the core */
	uv_timer_t tick_timer;	   /* the core's next deadline */
	uv_timer_t sweep_timer;	   /* write and read timeouts */
	uv_check_t batch_check;	   /* proposes the writes collected this iteration */
	uv_timer_t finish_timer;   /* shutdown: transfer, drain, close */
	uv_timer_t disk_timer;	   /* disk full: restart the core from durable state */
	uv_timer_t reinit_timer;   /* discarding a lone node's state */
	uint64_t finish_deadline;  /* loop time, ms */
	struct kvd_batch_item *batch;
	unsigned batch_n, batch_cap;
	struct kvd_pending_read *reads;
	uint64_t next_token;	  /* read and change tokens (kvd_node_token) */
	raft_index ready_index;	  /* open the port once applied reaches this */
	enum raft_role last_role; /* for counting elections */
	void (*shutdown_cb)(struct kvd_node *);
	unsigned closing_handles;
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

/* The driver's services to its parts (node.c). */

/* A log or meta write failed with rv (errmsg says why; what: "log",
 * "meta"): messages held for it are dropped; ENOSPC makes the disk full,
 * anything else stops the core (IO_FAILED). */
void kvd_node_disk_error(struct kvd_node *n, int rv, const char *what, const char *errmsg);

/* The core is stopped for a disk (or memory) failure: IO_FAILED. */
void kvd_node_io_failed(struct kvd_node *n, int rv, const char *what, const char *errmsg);

/* DISK_RECOVERING: the restarted core's first append is durable. */
void kvd_node_space_back(struct kvd_node *n);

/* The applier finished a batch (a snapshot may be due). */
void kvd_node_after_apply(struct kvd_node *n);

/* A new token for an event the core answers later (reads, membership
 * changes): unique for the node's lifetime. */
uint64_t kvd_node_token(struct kvd_node *n);

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

/* Answers a parked POST /log/snapshot with the snapshot's result status
 * (routes.c). */
void kvd_routes_snapshot_answer(struct kvd_node *n, struct http_request *req, int status);

/* Answers GET /log with entries read by the writer (routes.c). */
void kvd_routes_log_reply(struct kvd_node *n, struct http_request *req, int status,
			  const char *errmsg, const struct raft_entry *entries, size_t n_entries,
			  raft_index store_last);

/* Sends a text/plain response. */
void kvd_reply_text(struct http_request *req, int status, const char *body);

/* Answers "not leader": 307 to the known leader, else 503 no leader. */
void kvd_reply_not_leader(struct kvd_node *n, struct http_request *req);

/* Queues a write command (malloc'ed, ownership passes) for the next batch;
 * kind (enum kvd_write_kind, applier.h) says how it is answered. */
void kvd_node_propose(struct kvd_node *n, struct http_request *req, void *command, size_t len,
		      int kind);

/* Starts a linearizable read of key for req; key NULL (len 0): a range
 * listing, served by kvd_routes_serve_list() once confirmed. */
void kvd_node_read(struct kvd_node *n, struct http_request *req, const char *key, size_t len);

/* Serves GET /kv?prefix.. (API.md §11) from the local state machine. */
void kvd_routes_serve_list(struct kvd_node *n, struct http_request *req);

/* A lone node joins another cluster (cluster_id.c): once the parts are
 * idle, the core is dropped, the node's state discarded and a core started
 * on nothing; then kvd_cluster_reinit_done(). */
void kvd_node_discard_state(struct kvd_node *n);

/* True when the state machine holds any key (or cannot tell: installing). */
bool kvd_node_has_data(struct kvd_node *n);

/* True when this node is the only voter of its configuration. */
bool kvd_node_sole_voter(struct kvd_node *n);

/* Serves a read of key from the local state machine. */
void kvd_node_serve_get(struct kvd_node *n, struct http_request *req, const char *key, size_t len);

#endif
