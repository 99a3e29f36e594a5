/*
 * sim.h: shared state of the deterministic Raft cluster simulation.
 *
 * One struct sim is one seeded run: 3 to 7 Raft cores driven in one process
 * by a virtual clock (a heap of timed events), a virtual network, a virtual
 * disk per node, clients and a fault injector. Everything random draws from
 * one generator seeded by the run's seed, so a seed replays exactly.
 *
 * Files: sim_main.c (CLI, seed loop), sim_world.c (event heap, faults, run
 * loop, healing), sim_node.c (the driver of one node: updates, network, disk,
 * crash, restart), sim_log.c (entries, logs, snapshot streams), sim_check.c
 * (safety invariants), sim_client.c (client workload, history, liveness
 * probe), sim_disk.c (the simulated disk behind struct raft_log_io),
 * sim_nodedisk.c (a node's log and term/vote in the real log store and
 * meta files), sim_storecheck.c (the store alone: sim --store-seeds),
 * sim_converge.c (convergence after the heal, and the faults aimed at
 * snapshot catch-up and learner promotion).
 *
 * Thread: single-threaded.
 */
#ifndef KVD_SIM_H
#define KVD_SIM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/wait_rules.h"
#include "api/write_rules.h"
#include "raft/log_store.h"
#include "raft/raft.h"
#include "tests/sim/sim_disk.h"
#include "tests/sim/linearize.h"

struct kvd_trules; /* api/transport_rules.h */
struct sim_http;   /* sim_http.c */

#define SIM_MAX_NODES 7
#define SIM_KEYS      3
#define SIM_CLIENTS   3
/* A write not handed over by then is answered 503 (api/node_internal.h
 * KVD_WRITE_TIMEOUT_MS). */
#define SIM_WRITE_TIMEOUT_MS 5000
#define SIM_LIVENESS_MS	     10000 /* virtual ms after healing to elect and commit */

/* An immutable log entry shared by logs, disk requests and messages. */
struct sim_entry {
	unsigned refs;
	raft_index index;
	raft_term term;
	enum raft_entry_type type;
	size_t len; /* bytes */
	uint64_t hash;
	unsigned char data[];
};

/* A log: entries first .. first + n - 1; prev_term is the term at first - 1. */
struct sim_log {
	struct sim_entry **e;
	size_t n, cap;
	raft_index first;
	raft_term prev_term;
};

/* A serialized snapshot (the "snapshot file"). */
struct sim_snap {
	struct raft_snapshot_meta meta; /* index 0: none */
	unsigned char *buf;
	size_t len; /* bytes */
};

enum sim_req_kind {
	SIM_REQ_META = 1,
	SIM_REQ_LOG,
	SIM_REQ_SNAP_CHUNK,
	SIM_REQ_SNAP_TAKE,
};

/* One persistence request in a node's single-writer disk queue. */
struct sim_req {
	enum sim_req_kind kind;
	uint64_t seq;
	raft_term term;
	char vote[RAFT_ID_SIZE];
	raft_index truncate_from;
	struct sim_entry **ents;
	unsigned n_ents;
	struct raft_snapshot chunk; /* data owned (malloc'ed) */
	struct sim_snap snap;	    /* SNAP_TAKE: owned buffer */
	bool written;		    /* real store: handed to the store in its batch */
	bool failed;		    /* real store: this job failed or came after a failure */
	struct sim_req *next;
};

/* A message in flight or held for durability; owns its copies. */
struct sim_msg {
	struct raft_message m;
	struct raft_entry *ents;
	struct sim_entry **refs;
	unsigned char *snap_data;
	uint64_t barrier;      /* held until the node's done_seq reaches it */
	raft_term expect_term; /* APPEND_RESULT success: term at last_log_index */
	bool lost;	       /* sim_converge.c: lost in flight (the heal's last casualty) */
	/* sim_http.c: a segment of a simulated HTTP connection (0: none). */
	int http;      /* SIM_HTTP_REQ or SIM_HTTP_RESP */
	int status;    /* SIM_HTTP_RESP: the HTTP status */
	int conn_from; /* the connection conn_from -> conn_to (client -> server) */
	int conn_to;
	int conn_ch;	   /* the connection's channel (enum kvd_trules_channel) */
	uint32_t conn_gen; /* the connection's generation when sent */
	uint64_t call_id;  /* the request it is or answers */
	struct sim_msg *next;
};

struct sim_node {
	char id[16];
	int num;
	struct raft_core *core;
	bool up;
	uint32_t inc; /* incarnation, bumped by each crash */
	/* The node's clock: local = offset + virtual * rate_ppm / 1e6 (ms).
	 * Rates differ between nodes (drift, or a paused process). */
	uint64_t clock_offset;
	uint64_t rate_ppm;
	raft_time tick_local; /* deadline asked for, in local time */

	/* Durable state (survives crashes). */
	raft_term d_term;
	char d_vote[RAFT_ID_SIZE];
	struct sim_log dlog;
	struct sim_snap dsnap;

	/* Volatile (per incarnation). */
	struct sim_log mlog; /* the log as requested by the core */
	struct sim_req *q_head, *q_tail;
	uint64_t issued_seq, done_seq;
	bool disk_busy;
	raft_time stall_until;
	raft_time tick_at;
	bool snap_taking;
	/* The local snapshot's worker (api/snapshots.c TAKING), beside the disk
	 * queue: its request enters the queue when the worker ends, at
	 * snap_worker_end (SIM_EV_SNAP_WORKER); NULL when none runs. */
	struct sim_req *snap_worker;
	raft_time snap_worker_end;
	/* The process exited on its own (plant install-busy-fails: what the
	 * daemon did): never restarted, not even by the heal. */
	bool exited;
	unsigned char *incoming;
	size_t incoming_len;
	uint64_t kv[SIM_KEYS];
	raft_index applied;
	struct raft_config applied_config;
	enum raft_role role;
	raft_term term;
	raft_index commit;
	raft_index *cfg_idx; /* indexes of CONFIG entries in mlog */
	size_t n_cfg, cap_cfg;
	unsigned char *granted; /* per term: 1 + node number granted a vote */
	size_t cap_granted;

	/* The real storage (sim_nodedisk.c), unless --model-disk. The disk and
	 * its files survive crashes; the store is open while the node is up. */
	struct sim_disk *disk;
	struct raft_log_store *store;
	/* The disk bound (sim_nd_check_bound): the previous head removal of
	 * this store (valid while bound_have): its point, the store's last
	 * index then (UINT64_MAX once a truncation may have reopened a segment
	 * it kept) and the store's first index after it. */
	bool bound_have;
	raft_index bound_up_to, bound_last, bound_first;
	struct kvd_writer_track track; /* append jobs in flight (api/write_rules.h) */
	/* The clients' writes waiting for their entry (api/wait_rules.h, as the
	 * daemon's applier keeps them); per incarnation. */
	struct kvd_wait_table waits;
	struct sim_req *batch; /* written, waiting for the batch's sync */
	int batch_failed;      /* first error of a job of the batch */
	bool batch_appended;
	struct kvd_trules *tr; /* the transport rules (sim_http.c), while up */
	/* Last append acknowledged (index, message term) and the requests
	 * issued when it was sent (sim_check_truncation). Per incarnation. */
	raft_index ack_index;
	raft_term ack_term;
	uint64_t ack_seq;
	/* sim_complete.c: completions waiting for delivery (late seeds). */
	struct sim_late_item *late_head, *late_tail;
	raft_time late_hold_until; /* leader hop: completions held until then */
};

enum sim_ev_kind {
	SIM_EV_DELIVER = 1,
	SIM_EV_TICK,
	SIM_EV_DISK,
	SIM_EV_APPLIED,
	SIM_EV_RESTART,
	SIM_EV_CLIENT,
	SIM_EV_CLIENT_TIMEOUT,
	SIM_EV_FAULT,
	SIM_EV_HEAL_LINKS,
	SIM_EV_PROBE,
	SIM_EV_STRIKE,	     /* isolate (a = 0) or crash (a = 1) one node */
	SIM_EV_PROMOTE,	     /* sim_converge.c: ask the leader again to add node as a voter */
	SIM_EV_INSTALLED,    /* sim_converge.c: a slow install completes */
	SIM_EV_COMPLETE,     /* sim_complete.c: late completions are due */
	SIM_EV_HTTP_TIMEOUT, /* sim_http.c: request a (node -> inc) deadline */
	SIM_EV_HTTP_RESET,   /* sim_http.c: connection node -> inc of generation a resets */
	SIM_EV_IO_FAILED,    /* sim_node.c: an append could not be submitted (out of memory) */
	SIM_EV_SNAP_WORKER,  /* sim_node.c: a local snapshot's worker ends */
};

struct sim_ev {
	raft_time t; /* ms */
	uint64_t seq;
	int kind;
	int node;
	uint32_t inc;
	void *p;
	uint64_t a;
};

/* The outcome of one command applied by the state machine (sim_log.c). */
struct sim_sm_result {
	bool applied;			 /* a conditional write's condition held */
	bool succeeded;			 /* a txn's comparisons held */
	uint64_t get[LINEARIZE_TXN_MAX]; /* a txn's gets: the register (0 absent) */
};

struct sim_client {
	int id;
	bool busy;
	uint64_t op_seq;
	struct linearize_op op;
	int node;
	uint32_t inc;
	raft_index index;
	raft_term term;
	uint64_t token;
	int hint; /* node the client believes leads (-1: none), like a real client */
	struct linearize_txn txn; /* op.txn of a txn operation */
	/* The result of the entry its node applied at index (whatever its
	 * term), where the node's answer takes the outcome from, as the
	 * daemon's applier answers from the job's results. */
	bool has_res;
	raft_index res_index;
	raft_term res_term;
	struct sim_sm_result res;
};

/* Per-index global records (committed entries and applied state hashes). */
struct sim_rec {
	raft_term term;
	raft_term commit_term; /* current term of the first node that reported it committed */
	uint64_t hash;
	bool set;
};

/* Planted bugs (sim --plant NAME, docs/simulation.md): each re-introduces a
 * storage or writer defect that the runs must catch. */
struct sim_plants {
	bool batch_ack;	       /* a failed batch reports its earlier jobs durable */
	bool strict_recovery;  /* recovery refuses a bad record inside the last batch */
	bool completion_match; /* completions matched on (index, term) only */
	bool fsync_ignored;    /* a failed fsync is taken for a success */
	/* sim_snapfiles.c: a failed chunk write not reported, the file placed
	 * before it is checked, recovery unchecked and deleting older files */
	bool chunk_fail_ignored;
	bool install_unordered; /* no fsync of the snapshot directory after the rename */
	/* Transport (sim_http.c, api/transport_rules.c). */
	bool parked_answered;	 /* the parked last chunk is refused at once */
	bool held_early;	 /* held messages leave one writer sequence early */
	bool append_oom_success; /* a failed (out of memory) append still acknowledges */
	bool one_connection;	 /* snapshot chunks share the AppendEntries connection */
	bool stale_chunk_loss;	 /* any lost chunk ends the stream (issue 7) */
	bool txn_torn;		 /* the state machine applies half of a txn's branch */
	bool no_seal; /* a head removal leaves the open segment open (raft/log_store.c) */
	/* A leader's snapshot meeting a running local snapshot fails the
	 * install rule (api/snapshot_files.c) and the node exits (item 5). */
	bool install_busy_fails;
	/* The driver's own rules (api/drive_rules.c, api/wait_rules.c). */
	bool no_barrier;       /* a needs_sync message is sent with barrier 0 */
	bool keep_writes;      /* leadership loss does not fail the waiting writes */
	bool ack_other_term;   /* a write whose index got another term is answered 200 */
	bool ack_before_apply; /* a write is answered at hand-over, before its apply job */
	bool fail_handed_over; /* leadership loss fails handed-over writes too */
};

struct sim_params {
	uint64_t seed;
	unsigned steps;
	unsigned nodes; /* 0: chosen by the seed */
	bool verbose;
	bool trace;	   /* env SIM_TRACE: acks, installs, crashes */
	bool replay_check; /* run each seed twice, compare digests */
	bool model_disk;   /* the old in-memory log model instead of the real store */
	struct sim_plants plants;
};

struct sim {
	struct sim_params p;
	uint64_t rng;
	raft_time now;
	uint64_t ev_seq;
	unsigned long step;
	struct sim_ev *heap;
	size_t heap_n, heap_cap;
	unsigned n_nodes;
	struct sim_node nodes[SIM_MAX_NODES];
	bool cut[SIM_MAX_NODES][SIM_MAX_NODES];
	unsigned drop_pct, dup_pct, long_delay_pct;
	struct raft_options opts;
	raft_index snap_threshold;

	struct sim_client clients[SIM_CLIENTS];
	uint64_t next_value;
	uint64_t next_token;
	struct linearize_history *history;

	bool healing;
	raft_time heal_time;
	bool live;
	uint64_t probe_token; /* liveness proposal outstanding */
	int probe_node;
	uint32_t probe_inc;
	raft_index probe_index;
	raft_term probe_term;
	raft_time probe_at;
	raft_index converge_index; /* the applied probe every voter must reach */
	int hop_node;		   /* leader hop: the stalled follower */
	raft_time hop_until;	   /* leader hop: active until then */

	/* Global records for the invariants. */
	unsigned char *leader_of; /* per term: 1 + node number */
	size_t cap_leader_of;
	struct sim_rec *committed;
	size_t cap_committed;
	raft_index max_committed;
	struct sim_rec *state_hash;
	size_t cap_state_hash;
	/* Log matching: (index, term) -> (hash, prev term). */
	struct sim_lm *lm;
	size_t lm_cap, lm_n;

	/* sim_converge.c: the convergence phase and the faults aimed at
	 * snapshot catch-up and learner promotion. Draws from its own
	 * generator so the main stream of choices stays as it was. */
	struct {
		uint64_t rng;
		raft_time install_ms;	/* slow install: disk held this long (0: off) */
		unsigned heal_loss_pct; /* chunks in flight at the heal are lost */
		int isolated;		/* node kept cut off by a learner fault, -1 */
		raft_time isolated_until;
		raft_time live_time;		   /* when the probe applied (0: not yet) */
		raft_time stall_end;		   /* the last disk stall cut short by the heal */
		raft_index target;		   /* highest index reported committed when live */
		unsigned streams[SIM_MAX_NODES];   /* snapshot streams started since heal */
		unsigned redundant[SIM_MAX_NODES]; /* ... of a snapshot it already held */
		int install_from[SIM_MAX_NODES];   /* sender of the stream being installed */
		struct raft_snapshot_meta install_meta[SIM_MAX_NODES]; /* slow install */
		uint32_t pending_inc[SIM_MAX_NODES]; /* 1 + incarnation installing, 0 */
		raft_term install_term[SIM_MAX_NODES];
		unsigned long learner_faults, slow_installs, heal_losses;
	} conv;

	/* sim_complete.c: late writer completions (own generator). */
	struct {
		uint64_t rng;
		bool on;
		unsigned long holds, releases;
		int hop_f, hop_l; /* late hop: held follower, first leader (-1: none) */
		raft_time hop_until, hop_l_until;
	} late;

	struct sim_http *http; /* sim_http.c: connections and transport faults */
	uint64_t digest;       /* of every event run, to check that a seed replays */
	/* Disk model of this run (sim_nodedisk.c). */
	bool real_disk;
	int disk_mode; /* enum sim_disk_crash_mode */
	unsigned disk_page;
	uint64_t segment_size;
	uint64_t snap_rng; /* the local snapshots' durations (own generator) */
	struct sim_disk_faults disk_faults;
	unsigned long disk_errors, recoveries;

	bool failed;
	char why[1024];
	struct {
		unsigned long leaders, crashes, partitions, stalls, changes, transfers, snaps_taken,
		    snaps_installed, commits, ops_ok, ops_fail, ops_unknown, msgs, drops;
		unsigned long http_requests, http_responses, http_timeouts, http_resets,
		    http_refusals, http_retransmits, append_ooms;
		unsigned long install_waits; /* installs that waited for a local snapshot */
	} stats;
};

struct sim_lm {
	raft_index index;
	raft_term term;
	uint64_t hash;
	raft_term prev_term;
	bool used;
};

/* A register of the state machine: value << 32 | revision (the index of the
 * entry that wrote it), 0 absent. */
#define SIM_KV_VALUE(kv) ((kv) >> 32)
#define SIM_KV_REV(kv)	 ((kv)&0xffffffffu)

/* sim_log.c: entries, logs (first .. last), snapshot streams, the state
 * machine. */
/* Applies COMMAND entry e to n's registers (like engine/: conditions at
 * apply time, revision = index, a txn atomically) and fills *res. */
void sim_sm_apply(struct sim *s, struct sim_node *n, const struct sim_entry *e,
		  struct sim_sm_result *res);
struct sim_entry *sim_entry_new(raft_index index, raft_term term, enum raft_entry_type type,
				const void *data, size_t len); /* refs = 1 */
void sim_entry_unref(struct sim_entry *e);		       /* NULL ok */
void sim_log_push(struct sim_log *l, struct sim_entry *e);     /* takes a new ref */
void sim_log_truncate(struct sim_log *l, raft_index from);
void sim_log_reset(struct sim_log *l, raft_index index, raft_term term);
void sim_log_compact(struct sim_log *l, raft_index keep_after);
void sim_log_free(struct sim_log *l);
void sim_cfg_rebuild(struct sim_node *n);
/* Serializes n's state machine at its applied index (term of that entry). */
void sim_snap_build(struct sim_node *n, raft_term term, struct sim_snap *out);
/* Parses a stream; false if malformed (bytes from the network: no assert). */
bool sim_snap_parse(const unsigned char *buf, size_t len, struct raft_snapshot_meta *meta,
		    uint64_t *kv);

/* sim_node.c: the driver of one node, its disk and the network. */
void sim_node_crash(struct sim *s, struct sim_node *n); /* power failure */
/* The process stops (power_loss: and the machine loses power). */
void sim_node_stop(struct sim *s, struct sim_node *n, bool power_loss);
void sim_node_restart(struct sim *s, struct sim_node *n);
/* A SIM_EV_SNAP_WORKER: the local snapshot's request enters the disk queue. */
void sim_node_snap_worker_done(struct sim *s, struct sim_node *n);
void sim_msg_free(struct sim_msg *m);
void sim_req_free(struct sim_req *r);
/* Completes the request at the head of n's disk queue (a SIM_EV_DISK). */
void sim_disk_complete(struct sim *s, struct sim_node *n);

/* sim_node.c: copies an outgoing message out of the core's update (NULL:
 * a snapshot chunk of a snapshot no longer held). */
struct sim_msg *sim_msg_copy(struct sim *s, struct sim_node *n, const struct raft_message *src);
/* A disk or submission error (rv) on n: what the daemon does (api/node.c). */
void sim_node_disk_error(struct sim *s, struct sim_node *n, int rv);

/* sim_http.c: the transport rules over simulated HTTP connections. */
#define SIM_HTTP_REQ  1
#define SIM_HTTP_RESP 2
void sim_http_init(struct sim *s);
void sim_http_free(struct sim *s);
void sim_http_node_up(struct sim *s, struct sim_node *n);   /* creates n->tr */
void sim_http_node_down(struct sim *s, struct sim_node *n); /* before the core goes */
void sim_http_deliver(struct sim *s, struct sim_msg *m);    /* takes m */
void sim_http_timeout(struct sim *s, int a, int b, uint64_t call_id);
/* gen_ch: the generation, and the channel in bits 32 and up. */
void sim_http_reset(struct sim *s, int a, int b, uint64_t gen_ch);
/* Operator partitions: mirrors s->cut into the nodes' transport rules. */
void sim_http_sync(struct sim *s);
/* True when a follower's append job fails to be submitted (out of memory). */
bool sim_http_append_fails(struct sim *s);

/* sim_world.c */
bool sim_chance(struct sim *s, unsigned pct); /* true with pct % probability */
uint64_t sim_rand(struct sim *s);
uint64_t sim_rand_range(struct sim *s, uint64_t lo, uint64_t hi); /* [lo, hi] */
int sim_run(const struct sim_params *p, struct sim *s);
void sim_free(struct sim *s);
void sim_node_step(struct sim *s, struct sim_node *n, const struct raft_event *e, int *rc_out,
		   struct raft_update *u_out);
/* A client's proposal e (sim_node.c): as sim_node_step, and when the core
 * accepts it the write waits in the node's table (api/wait_rules.h) as
 * (req, tag) before the update is carried out, as api/node.c's batch does. */
void sim_node_propose(struct sim *s, struct sim_node *n, const struct raft_event *e, void *req,
		      uint64_t tag, int *rc_out, struct raft_update *u_out);
int sim_leader_guess(struct sim *s);
/* Cuts n off from every node but keep, for 150-400 ms. */
void sim_isolate_except(struct sim *s, struct sim_node *n, int keep);
void sim_ev_push(struct sim *s, raft_time t, int kind, int node, uint32_t inc, void *p, uint64_t a);
uint64_t sim_kv_hash(const uint64_t *kv);
uint64_t sim_bytes_hash(const void *p, size_t len);
const struct sim_entry *sim_log_get(const struct sim_log *l, raft_index i);
raft_index sim_log_last(const struct sim_log *l);
raft_term sim_log_term(const struct sim_log *l, raft_index i, bool *found);

/* sim_check.c: each returns false and fills s->why on a violation. */
void sim_fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_check_update(struct sim *s, struct sim_node *n, const struct raft_update *u,
		      enum raft_role prev_role, raft_term prev_term, raft_index prev_commit,
		      const struct raft_config *cfg_before);
void sim_check_appended(struct sim *s, struct sim_node *n, const struct sim_entry *e,
			raft_term prev_term);
void sim_check_send(struct sim *s, struct sim_node *n, const struct sim_msg *m);
/* A LOG job (seq) truncating from `from` completes: it must not remove an
 * entry acknowledged after the job was submitted (item 8 of issue 7). */
void sim_check_truncation(struct sim *s, struct sim_node *n, uint64_t seq, raft_index from);
void sim_check_durable_meta(struct sim *s, struct sim_node *n, raft_term term, const char *vote);
void sim_check_applied(struct sim *s, struct sim_node *n, const struct sim_entry *e);
void sim_check_snapshot_state(struct sim *s, struct sim_node *n);
void sim_check_free(struct sim *s);

/* sim_converge.c: convergence after the heal, and its faults. */
#define SIM_CONVERGE_MS		   2000 /* virtual ms after live, + 2 slow installs */
#define SIM_CONVERGE_MAX_STREAMS   3	/* snapshot streams to one follower after heal */
#define SIM_CONVERGE_MAX_REDUNDANT 1	/* ... of a snapshot it already holds */
void sim_converge_init(struct sim *s);
/* Before a message is delivered to n; true if it is lost instead. */
bool sim_converge_deliver(struct sim *s, struct sim_node *n, const struct sim_msg *m);
void sim_converge_fault(struct sim *s); /* the learner-promotion fault */
void sim_converge_promote(struct sim *s, int node);
void sim_converge_links(struct sim *s); /* re-applies a learner fault's cut */
void sim_converge_heal(struct sim *s);
/* A received snapshot is durable on n: true if its SNAPSHOT_INSTALLED is
 * reported later (a slow install), by sim_converge_installed(). */
bool sim_converge_install_later(struct sim *s, struct sim_node *n);
void sim_converge_installed(struct sim *s, struct sim_node *n, uint32_t inc);
void sim_converge_update(struct sim *s, struct sim_node *n, const struct raft_update *u,
			 const struct raft_config *cfg_before);
/* After the cluster is live: true once converged; fails past the bound. */
bool sim_converge_done(struct sim *s);

/* sim_complete.c: late writer completions and the persisted-report check. */
struct sim_late_item;
void sim_late_init(struct sim *s);
bool sim_late_on(const struct sim *s);
/* Queues the completion of append job r (synced). */
void sim_late_push(struct sim *s, struct sim_node *n, const struct sim_req *r);
void sim_late_deliver(struct sim *s, struct sim_node *n); /* a SIM_EV_COMPLETE */
void sim_late_clear(struct sim_node *n);		  /* the core stops */
void sim_late_heal(struct sim *s);			  /* ends every hold */
/* Delivers every queued completion now (before a snapshot job's own). */
void sim_late_flush(struct sim *s, struct sim_node *n);
/* Leader hop on n until `until`: true if n holds its completions instead of
 * stalling its disk. */
bool sim_late_hop(struct sim *s, struct sim_node *n, raft_time until, int leader);
void sim_late_links(struct sim *s); /* re-applies a late hop's cut */
/* A batch was written (not synced yet). */
void sim_late_written(struct sim *s, struct sim_node *n, const struct sim_req *batch);
/* sim_node.c: the PERSISTED event job r reports now, if any. */
bool sim_node_persisted_event(struct sim *s, struct sim_node *n, const struct sim_req *r,
			      struct raft_event *e);

/* sim_snapfiles.c: the node's snapshot files on its disk, by the daemon's
 * file steps (api/snapshot_files.c); the install's crash points. */
enum sim_sf_step {
	SIM_SF_NONE = 0,
	SIM_SF_AFTER_CHUNK,    /* the last chunk written (and fsynced) */
	SIM_SF_AFTER_CHECK,    /* the incoming file checked */
	SIM_SF_IN_RENAME,      /* power fails at the rename */
	SIM_SF_BEFORE_DIRSYNC, /* renamed; power fails at the directory fsync */
	SIM_SF_AFTER_PLACE,    /* the name durable, before the log reset */
	SIM_SF_AFTER_RESET,    /* the log reset, before the report */
	SIM_SF_STEPS,
};
void sim_sf_boot(struct sim_node *n); /* makes the directory */
/* Each returns 0 or a kvd_error (the disk's; KVD_ECORRUPT from a check). */
int sim_sf_chunk(struct sim *s, struct sim_node *n, const struct raft_snapshot *c);
int sim_sf_check(struct sim *s, struct sim_node *n, raft_index index, raft_term term);
int sim_sf_check_placed(struct sim *s, struct sim_node *n, raft_index index, raft_term term);
int sim_sf_place(struct sim *s, struct sim_node *n, raft_index index, raft_term term);
int sim_sf_take(struct sim *s, struct sim_node *n, const struct sim_snap *snap);
void sim_sf_prune(struct sim *s, struct sim_node *n, raft_index keep);
/* At restart, before the log is fitted: the snapshot recovery chooses; false
 * (and the run fails) when it is older than the durable one. */
bool sim_sf_recover(struct sim *s, struct sim_node *n);
/* Where a crash falls in the install starting now (SIM_SF_NONE: none). */
enum sim_sf_step sim_sf_crash_step(struct sim *s);

/* sim_client.c */
void sim_client_start(struct sim *s);
void sim_client_act(struct sim *s, int client);
void sim_client_timeout(struct sim *s, int client, uint64_t op_seq);
void sim_client_applied(struct sim *s, struct sim_node *n, const struct sim_entry *e,
			const struct sim_sm_result *res);
void sim_client_read_done(struct sim *s, struct sim_node *n, uint64_t token, bool ok,
			  raft_index index);
void sim_client_node_crashed(struct sim *s, struct sim_node *n);
/* The answer of a node's waiting-writes table (kvd_wait_answer_fn; ctx: the
 * sim, w->req: the client, w->tag: its op_seq). */
void sim_client_write_answer(void *ctx, const struct kvd_wait_write *w, enum kvd_wait_end end,
			     void *arg);
void sim_client_finish(struct sim *s);
void sim_probe_tick(struct sim *s);

/* sim_nodedisk.c: a node's log and term/vote in the real log store and meta
 * files over its sim_disk. */
void sim_nd_params(struct sim *s);
/* Creates n's disk holding its initial durable state (dlog, d_term). */
void sim_nd_boot(struct sim *s, struct sim_node *n);
/* At restart: opens the store and loads the meta through the real recovery,
 * checks that nothing acknowledged was lost, and replaces the durable model
 * (dlog, d_term, d_vote) by what was recovered. False on a failure. */
bool sim_nd_open(struct sim *s, struct sim_node *n);
/* Closes the store; power_loss also crashes the disk. */
void sim_nd_close(struct sim *s, struct sim_node *n, bool power_loss);
/* Writes one META or LOG request into the store (no sync); sets *appended. */
int sim_nd_write(struct sim *s, struct sim_node *n, const struct sim_req *r, bool *appended);
void sim_nd_free(struct sim_node *n);
/* After a successful raft_log_store_remove_head(up_to): the bytes of n's
 * segment files on its disk must stay within the bound of docs/operations.md
 * "Disk use" (docs/simulation.md, "Disk bound"); fails the seed otherwise. */
void sim_nd_check_bound(struct sim *s, struct sim_node *n, raft_index up_to);

/* sim_storecheck.c: the log store and meta files alone over sim_disk; 0 or
 * 1 with why filled. */
int sim_storecheck_run(uint64_t seed, unsigned steps, const struct sim_plants *plants, bool verbose,
		       char *why, size_t why_len);

/* Command encoding shared by clients and the state machine (sim_log.c):
 * op, key, client, value (8 at 8), token (8 at 16); conditional writes add
 * the If-Match revision (8 at 24), a txn its parts after 32 (sim_log.c). */
enum sim_cmd_op {
	SIM_CMD_PUT = 1,
	SIM_CMD_DELETE = 2,
	SIM_CMD_PROBE = 3,
	SIM_CMD_PUT_IF = 4,
	SIM_CMD_PUT_ABSENT = 5,
	SIM_CMD_DELETE_IF = 6,
	SIM_CMD_TXN = 7,
};
#define SIM_CMD_SIZE 24

#endif
