/*
 * core.h: the Raft core's private state, shared by its .c files only.
 *
 * raft.c owns the step loop and the update being built; election.c,
 * progress.c, replication.c, read.c, membership.c, transfer.c and
 * snapshot.c implement the algorithm's parts on this one struct; log.c is
 * the in-memory log and config.c the configuration encoding. Nothing here
 * is used outside raft/ (the storage files segment.c, log_store.c and
 * meta.c do not include it).
 */
#ifndef KVD_RAFT_CORE_H
#define KVD_RAFT_CORE_H

#include "raft/log.h"
#include "raft/raft.h"

#define RAFT_MAX_PEERS (2 * RAFT_MAX_SERVERS) /* servers of a joint config */

enum raft_progress_state {
	RAFT_PROGRESS_PROBE = 1,     /* one AppendEntries at a time */
	RAFT_PROGRESS_REPLICATE = 2, /* pipelined */
	RAFT_PROGRESS_SNAPSHOT = 3,  /* InstallSnapshot stream in progress */
};

struct raft_inflight {
	raft_index last; /* last index carried */
	size_t bytes;
};

/* Leader's view of one other server (thesis §3.5, §10.2). */
struct raft_progress {
	char id[RAFT_ID_SIZE];
	enum raft_progress_state state;
	raft_index match;
	raft_index next;
	bool paused;		/* probe: a message is outstanding */
	raft_time last_contact; /* ms: last response in the current term */
	uint64_t acked_seq;	/* highest heartbeat round acknowledged */
	/* Pipelining window (replicate state), a ring. */
	struct raft_inflight *inflight;
	unsigned inflight_head, inflight_count;
	size_t inflight_bytes;
	/* Snapshot stream (snapshot state). */
	raft_index snap_index;
	raft_term snap_term;
	uint64_t snap_size;   /* bytes */
	uint64_t snap_offset; /* bytes: next chunk to send */
	bool snap_waiting;    /* a chunk is outstanding */
	raft_time snap_time;  /* ms: last progress */
	raft_time snap_sent;  /* ms: the outstanding chunk left */
	uint64_t snap_serial; /* token of the chunk sent last (raft_core.chunk_serial) */
	/* Membership catch-up (learners). */
	raft_index catchup_match;
	raft_time catchup_time; /* ms: last time match grew */
};

struct raft_pending_read {
	uint64_t token;
	raft_index index; /* read index (commit index at confirmation start) */
	uint64_t seq;	  /* round that confirms it; 0: not started yet */
	bool confirmed;
};

enum raft_change_phase {
	RAFT_CHANGE_NONE = 0,
	RAFT_CHANGE_WAIT_TERM, /* waiting for a commit in the leader's term */
	RAFT_CHANGE_CATCHUP,   /* learners appended, catching up */
	RAFT_CHANGE_JOINT,     /* C_old,new appended, waiting for its commit */
	RAFT_CHANGE_FINAL,     /* final config appended, waiting for its commit */
};

struct raft_change {
	enum raft_change_phase phase;
	uint64_t token;
	struct raft_config target; /* final configuration (simple) */
	raft_index index;	   /* index of the last config entry appended */
	raft_time started;	   /* ms */
};

struct raft_snapshot_rx {
	bool active;
	raft_index last_index;
	raft_term last_term;
	uint64_t expected;	 /* bytes: next offset */
	bool installing;	 /* the last chunk was handed to the driver */
	char from[RAFT_ID_SIZE]; /* leader streaming it */
	raft_term term;		 /* its term */
	char leader[RAFT_ID_SIZE];
	uint64_t token;
};

/* Growable array of messages, appended during one step. For AppendEntries
 * messages entries are resolved at the end of the step (the log may grow). */
struct raft_msg_slot {
	struct raft_message m;
	raft_index first; /* first entry index carried, 0 if none */
};

struct raft_core {
	char id[RAFT_ID_SIZE];
	struct raft_options o;
	uint64_t prng;
	bool started;
	bool shutdown;

	/* Persistent state (§5, Figure 2). */
	raft_term term;
	char voted_for[RAFT_ID_SIZE];

	enum raft_role role;
	bool pre_candidate;
	char leader[RAFT_ID_SIZE];
	raft_time now;

	struct raft_log log;
	raft_index commit;
	raft_index persisted;  /* local log durable up to here */
	raft_index applied;    /* state machine reported applied */
	raft_index apply_next; /* next index to hand out for apply */

	/* Configuration: the latest in the log (effective on append, §4.1). */
	struct raft_config config;
	raft_index config_index;	/* 0 if from the snapshot/start */
	struct raft_config snap_config; /* config at log.offset or snapshot */
	struct raft_snapshot_meta snap; /* latest local snapshot */
	uint64_t chunk_serial;		/* tokens of the chunks sent (never reused) */

	/* Timers (ms). */
	raft_time election_deadline;
	raft_time leader_contact; /* last time a live leader was heard */
	raft_time heartbeat_deadline;
	raft_time leader_since;

	/* Candidate. */
	unsigned n_votes;
	char votes[RAFT_MAX_PEERS][RAFT_ID_SIZE];
	bool transfer_campaign;

	/* Leader. */
	struct raft_progress peers[RAFT_MAX_PEERS];
	unsigned n_peers;
	uint64_t seq; /* current heartbeat round */
	struct raft_pending_read *reads;
	unsigned n_reads, cap_reads;
	struct raft_change change;
	char transfer_to[RAFT_ID_SIZE]; /* "" if no transfer */
	raft_time transfer_deadline;
	bool transfer_sent;
	raft_time transfer_sent_at; /* ms */

	struct raft_snapshot_rx rx;
	void *rx_buf; /* copy of the chunk handed in snapshot_write */
	struct raft_snapshot rx_write;

	/* The update being built. */
	struct raft_update *u;
	raft_index u_append_from; /* lowest index appended this step, 0 none */
	bool u_meta;
	struct raft_msg_slot *msgs;
	unsigned n_msgs, cap_msgs;
	struct raft_message *out_msgs;
	unsigned cap_out;
	struct raft_read_ready *rd;
	unsigned n_rd, cap_rd;
	struct raft_read_failed *rf;
	unsigned n_rf, cap_rf;
	struct raft_change_done *cd;
	unsigned n_cd, cap_cd;
	int nomem; /* an allocation failed during this step */
	struct raft_note notes[RAFT_MAX_NOTES];
	unsigned n_notes;
	struct raft_stats stats;
};

/*
 * Internal functions. All take the core (never NULL), run on the core's
 * thread inside raft_step(), and report allocation failure by setting
 * r->nomem (raft_step() then returns KVD_ENOMEM) rather than by return
 * code, except where an int is returned. Messages and notes they add belong
 * to the update being built.
 */

/* raft.c: the step's shared services. */
uint64_t raft_core_random(struct raft_core *r); /* next splitmix64 value */
/* Adds a message to the update (from, term and needs_sync by type filled
 * in); first_entry: first log index an AppendEntries carries (resolved to
 * a pointer at the end of the step), 0 if none. The pointer is valid until
 * the next raft_core_msg() call. */
struct raft_message *raft_core_msg(struct raft_core *r, enum raft_msg_type type, const char *to,
				   raft_index first_entry);
/* Sets term (never lower) and vote and marks them to persist. */
void raft_core_meta_set(struct raft_core *r, raft_term term, const char *voted_for);
/* Appends an entry of the current term (data copied); a CONFIG entry takes
 * effect at once. Returns 0 or KVD_ENOMEM. */
int raft_core_append(struct raft_core *r, enum raft_entry_type type, const void *data, size_t len);
/* Recomputes the configuration from the log (latest CONFIG entry). */
void raft_core_config_refresh(struct raft_core *r);
void raft_core_read_ready(struct raft_core *r, uint64_t token, raft_index index);
void raft_core_read_failed(struct raft_core *r, uint64_t token, int error);
void raft_core_change_done(struct raft_core *r, uint64_t token, int error);
bool raft_core_is_voter(const struct raft_core *r, const char *id);
/* Adds an operator note (dropped beyond RAFT_MAX_NOTES); reason static. */
void raft_core_note(struct raft_core *r, enum raft_note_kind kind, const char *peer, raft_term term,
		    raft_index index, const char *reason);

/* election.c: timers, votes, roles. */
void raft_election_reset_timer(struct raft_core *r);
/* Becomes follower of leader ("" unknown) at term (>= current); a leader
 * stepping down fails its reads, change and transfer. */
void raft_election_become_follower(struct raft_core *r, raft_term term, const char *leader,
				   const char *reason);
void raft_election_campaign(struct raft_core *r, bool pre_vote, bool transfer);
void raft_election_tick(struct raft_core *r);
void raft_election_recv_vote(struct raft_core *r, const struct raft_message *m);
void raft_election_recv_vote_result(struct raft_core *r, const struct raft_message *m);
/* True if a live leader was heard within election_timeout_min (or we are
 * it) and check_quorum is on. */
bool raft_election_in_lease(const struct raft_core *r);
/* True if has() holds for a majority of the voters (of both sets when
 * joint). */
bool raft_election_quorum(const struct raft_core *r,
			  bool (*has)(const struct raft_core *, const char *, void *), void *ctx);

/* progress.c: the leader's per-server state. */
struct raft_progress *raft_progress_find(struct raft_core *r, const char *id); /* NULL if none */
void raft_progress_sync(struct raft_core *r); /* add/drop to match r->config */
void raft_progress_reset_all(struct raft_core *r);
void raft_progress_become_probe(struct raft_progress *p);
void raft_progress_become_replicate(struct raft_progress *p);
void raft_progress_free_all(struct raft_core *r);
bool raft_progress_inflight_full(const struct raft_core *r, const struct raft_progress *p);
void raft_progress_inflight_add(struct raft_core *r, struct raft_progress *p, raft_index last,
				size_t bytes);
void raft_progress_inflight_free_to(struct raft_core *r, struct raft_progress *p, raft_index index);

/* replication.c: AppendEntries both ways, commit, check-quorum. */
/* Sends what p's state allows; heartbeat: also when nothing is new. */
void raft_replication_send(struct raft_core *r, struct raft_progress *p, bool heartbeat);
void raft_replication_flush(struct raft_core *r);     /* send new entries to all */
void raft_replication_heartbeat(struct raft_core *r); /* a round to all, rearms the timer */
void raft_replication_maybe_commit(struct raft_core *r);
void raft_replication_recv_append(struct raft_core *r, const struct raft_message *m);
void raft_replication_recv_result(struct raft_core *r, const struct raft_message *m);
void raft_replication_tick(struct raft_core *r);

/* read.c: read index. */
int raft_read_request(struct raft_core *r, uint64_t token); /* 0, KVD_ENOTLEADER, KVD_ENOMEM */
void raft_read_advance(struct raft_core *r);		    /* start rounds, report ready */
void raft_read_fail_all(struct raft_core *r, int error);

/* membership.c: CHANGE events. */
int raft_membership_change(struct raft_core *r, const struct raft_event *e); /* 0 or refusal */
void raft_membership_advance(struct raft_core *r); /* after every leader step */
void raft_membership_abort(struct raft_core *r, int error);

/* transfer.c: leadership transfer. */
int raft_transfer_start(struct raft_core *r, const char *to); /* 0 or refusal */
void raft_transfer_advance(struct raft_core *r);
void raft_transfer_abort(struct raft_core *r);
void raft_transfer_recv_timeout_now(struct raft_core *r, const struct raft_message *m);

/* snapshot.c: compaction and InstallSnapshot. */
void raft_snapshot_send(struct raft_core *r, struct raft_progress *p); /* start a stream */
void raft_snapshot_recv(struct raft_core *r, const struct raft_message *m);
void raft_snapshot_recv_result(struct raft_core *r, const struct raft_message *m);
void raft_snapshot_taken(struct raft_core *r, const struct raft_snapshot_meta *s);
void raft_snapshot_installed(struct raft_core *r, const struct raft_snapshot_meta *s);
void raft_snapshot_failed(struct raft_core *r);
/* Leader: p answered an AppendEntries normally (no stream running there). */
void raft_snapshot_peer_heard(struct raft_core *r, struct raft_progress *p);
void raft_snapshot_tick(struct raft_core *r);
/* True if an AppendEntries must not be processed (a stream or install is
 * under way); may abort the stream. */
bool raft_snapshot_rx_blocks_append(struct raft_core *r, const struct raft_message *m);

#endif
