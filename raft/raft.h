/*
 * raft.h: the pure Raft core's public interface.
 *
 * The core makes no system call, reads no clock, does no I/O and allocates
 * only with malloc/free. It draws randomness from a seeded generator it owns
 * (seed given at create). One thread, one entry point:
 *
 *     raft_step(core, &event, &update)
 *
 * Events carry the current time in milliseconds (monotonic or virtual). The
 * update tells the driver what to persist, what to send, what to apply, which
 * reads may be served, and when to call again (deadline). Everything the
 * update points to is owned by the core and stays valid only until the next
 * call to raft_step() or raft_destroy(): the driver copies or serializes what
 * it needs before then.
 *
 * Rules the driver keeps (Raft paper §5, thesis §10.2.1 for the leader's
 * parallel write):
 *  - Persistence requests (meta, truncate, append, snapshot chunk) are carried
 *    out in the order updates produced them, by a single writer.
 *  - A message with needs_sync set is sent only after every persistence
 *    request of this update and all earlier updates is durable. Messages
 *    without it (the leader's AppendEntries, heartbeats) may go at once.
 *  - Completion events (persisted, snapshot taken or installed, applied)
 *    carry what identifies the request, so stale ones are recognized.
 *
 * Node ids are strings (the node's advertised "host:port", reported exactly as
 * configured); at most RAFT_ID_SIZE - 1 bytes.
 *
 * Thread: all functions here are called from one thread (the driver's loop).
 */
#ifndef KVD_RAFT_H
#define KVD_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvd/errors.h"

typedef uint64_t raft_term;
typedef uint64_t raft_index;
typedef uint64_t raft_time; /* milliseconds */

#define RAFT_ID_SIZE	 128 /* bytes, including the terminating NUL */
#define RAFT_MAX_SERVERS 16  /* voters + learners in one configuration */

enum raft_role {
	RAFT_FOLLOWER = 1, /* also reported for learners and pre-candidates */
	RAFT_CANDIDATE = 2,
	RAFT_LEADER = 3,
};

enum raft_entry_type {
	RAFT_ENTRY_COMMAND = 1, /* opaque bytes for the state machine */
	RAFT_ENTRY_NOOP = 2,	/* appended by a new leader (§8) */
	RAFT_ENTRY_CONFIG = 3,	/* data = raft_config_encode() bytes */
};

/* A log entry. In events, data is borrowed for the call (the core copies it);
 * in updates, data points into the core's log. */
struct raft_entry {
	raft_index index;
	raft_term term;
	enum raft_entry_type type;
	const void *data;
	size_t len; /* bytes */
};

enum raft_server_role {
	RAFT_VOTER = 1,
	RAFT_LEARNER = 2,
};

struct raft_server {
	char id[RAFT_ID_SIZE];
	enum raft_server_role role;
};

/*
 * A cluster configuration (§6, thesis ch. 4). When joint (n_old > 0) a
 * decision needs a majority of the old voters and a majority of the new
 * voters (servers[] with role RAFT_VOTER).
 */
struct raft_config {
	unsigned n;
	struct raft_server servers[RAFT_MAX_SERVERS];
	unsigned n_old; /* 0 unless joint */
	struct raft_server old[RAFT_MAX_SERVERS];
};

/* Configuration helpers (pure). */
int raft_config_add(struct raft_config *c, const char *id, enum raft_server_role role);
const struct raft_server *raft_config_get(const struct raft_config *c, const char *id);
bool raft_config_is_voter(const struct raft_config *c, const char *id);
/* Serializes c into a malloc'ed buffer (*buf, *len; caller frees with free()).
 * Returns 0 or KVD_ENOMEM. */
int raft_config_encode(const struct raft_config *c, void **buf, size_t *len);
/* Parses bytes from raft_config_encode(). Returns 0 or KVD_ECORRUPT. */
int raft_config_decode(const void *buf, size_t len, struct raft_config *c);

enum raft_msg_type {
	RAFT_MSG_REQUEST_VOTE = 1,
	RAFT_MSG_REQUEST_VOTE_RESULT = 2,
	RAFT_MSG_APPEND = 3,
	RAFT_MSG_APPEND_RESULT = 4,
	RAFT_MSG_SNAPSHOT = 5, /* one InstallSnapshot chunk */
	RAFT_MSG_SNAPSHOT_RESULT = 6,
	RAFT_MSG_TIMEOUT_NOW = 7,
};

struct raft_request_vote {
	raft_index last_log_index;
	raft_term last_log_term;
	bool pre_vote;
	bool transfer; /* sent after TimeoutNow: voters ignore their leader lease */
};

struct raft_request_vote_result {
	bool granted;
	bool pre_vote; /* echoes the request */
};

struct raft_append {
	raft_index prev_log_index;
	raft_term prev_log_term;
	raft_index leader_commit;
	uint64_t seq; /* leader's heartbeat round, echoed (read index, check-quorum) */
	const struct raft_entry *entries;
	unsigned n_entries;
};

struct raft_append_result {
	bool success;
	/* On success: index of the last entry the request made match. On
	 * rejection: the follower's last log index (a hint). */
	raft_index last_log_index;
	raft_index reject_index;   /* prev_log_index of a rejected request */
	raft_term conflict_term;   /* term at reject_index on the follower, 0 if none */
	raft_index conflict_index; /* first index of conflict_term on the follower */
	uint64_t seq;		   /* echoes the request */
};

/*
 * An InstallSnapshot chunk (§7). The core never holds snapshot bytes: on the
 * sending side data is NULL and the driver fills len bytes from offset of the
 * snapshot file for (last_index, last_term) before sending; on the receiving
 * side the driver passes the received bytes in data.
 */
struct raft_snapshot {
	raft_index last_index;
	raft_term last_term;
	uint64_t offset; /* bytes */
	const void *data;
	size_t len; /* bytes */
	bool done;  /* this chunk ends the stream */
};

struct raft_snapshot_result {
	bool success;
	raft_index last_index;
	uint64_t offset; /* bytes: next offset the receiver expects */
};

/* Result offset meaning "the receiver already holds everything the snapshot
 * covers": above any snapshot size, and representable as a JSON integer
 * (signed 64-bit), which UINT64_MAX is not. */
#define RAFT_SNAPSHOT_COVERED ((uint64_t)INT64_MAX)

struct raft_message {
	enum raft_msg_type type;
	char from[RAFT_ID_SIZE];
	char to[RAFT_ID_SIZE];
	raft_term term;
	/* Opaque to the core: copied from a received request into its result so
	 * the driver can answer the right transport request. On an outgoing
	 * InstallSnapshot chunk, the core's serial of that send (handed back in
	 * RAFT_EVENT_UNREACHABLE when the request is lost); not on the wire. */
	uint64_t token;
	/* Send only after all persistence requested so far is durable. */
	bool needs_sync;
	union {
		struct raft_request_vote request_vote;
		struct raft_request_vote_result request_vote_result;
		struct raft_append append;
		struct raft_append_result append_result;
		struct raft_snapshot snapshot;
		struct raft_snapshot_result snapshot_result;
	} u;
};

enum raft_event_type {
	RAFT_EVENT_START = 1,
	RAFT_EVENT_TICK,
	RAFT_EVENT_RECEIVE,
	RAFT_EVENT_PERSISTED,	       /* log entries durable up to index */
	RAFT_EVENT_SNAPSHOT_TAKEN,     /* a local snapshot is durable */
	RAFT_EVENT_SNAPSHOT_INSTALLED, /* a received snapshot is durable and loaded */
	/* A received chunk could not be written, or the received snapshot could
	 * not be checked or installed: the core forgets the stream (the next
	 * chunk must start at offset 0) and refuses the chunk waiting for the
	 * install with offset 0, so the leader restarts the stream. */
	RAFT_EVENT_SNAPSHOT_FAILED,
	RAFT_EVENT_APPLIED, /* state machine applied up to index */
	RAFT_EVENT_PROPOSE,
	RAFT_EVENT_READ,
	/* Membership change. Refused with KVD_EEXIST (adding a voter),
	 * KVD_EINVAL (removing an unknown server, no voter left, bad id),
	 * KVD_ETOOBIG (more than RAFT_MAX_SERVERS). */
	RAFT_EVENT_CHANGE,
	/* Leadership transfer; KVD_EINVAL if the target is not a voter; 0
	 * and nothing happens if it is this server. */
	RAFT_EVENT_TRANSFER,
	RAFT_EVENT_UNREACHABLE, /* the transport lost a peer: resend from match */
	RAFT_EVENT_IO_FAILED,
};

struct raft_snapshot_meta {
	raft_index index; /* 0: no snapshot */
	raft_term term;
	struct raft_config config;
	/* Bytes of the snapshot stream file; 0: no file to send (yet), e.g.
	 * state recovered without one: followers that need it wait for the
	 * next SNAPSHOT_TAKEN. */
	uint64_t size;
};

struct raft_event {
	enum raft_event_type type;
	raft_time now; /* ms */
	union {
		struct {
			raft_term term;
			const char *voted_for; /* NULL or "" if none */
			struct raft_snapshot_meta snapshot;
			/* The state machine's applied index; entries up to it are
			 * known committed. */
			raft_index applied_index;
			/* Log tail held in memory: entries prev_index+1 ..,
			 * contiguous. Requires applied_index >= prev_index
			 * (else KVD_EINVAL: entries to replay are missing).
			 * The log may start before snapshot.index (its head
			 * not yet removed) or right after it. */
			raft_index prev_index;
			raft_term prev_term;
			const struct raft_entry *entries; /* borrowed */
			unsigned n_entries;
		} start;
		struct raft_message receive; /* borrowed, including entries and data */
		struct {
			raft_index index; /* durable up to and including index */
			raft_term term;	  /* term of the entry at index */
		} persisted;
		struct raft_snapshot_meta snapshot; /* taken or installed */
		struct {
			raft_index index;
		} applied;
		struct {
			/* Only type (COMMAND or NOOP), data and len are read;
			 * entries and their data are borrowed (copied). They
			 * are appended contiguously. */
			const struct raft_entry *entries;
			unsigned n;
		} propose;
		struct {
			uint64_t token;
		} read;
		struct {
			uint64_t token;
			const char *const *add; /* ids to add (as learners first) */
			unsigned n_add;
			const char *const *remove;
			unsigned n_remove;
		} change;
		struct {
			const char *to; /* NULL: the most up-to-date voter */
		} transfer;
		struct {
			const char *id;
			/* The lost request was a snapshot chunk. Any other
			 * loss (a heartbeat's 503, a reset connection) leaves
			 * a snapshot stream to that peer running: its chunk's
			 * own answer, a resend or snapshot_timeout decides. */
			bool snapshot;
			/* The lost chunk's token, as the core set it in the
			 * request (0: unknown). Only the loss of the chunk
			 * sent last to that peer ends its stream: an older
			 * copy (resent, or of a stream restarted since) was
			 * superseded. */
			uint64_t token;
		} unreachable;
	} u;
};

struct raft_read_ready {
	uint64_t token;
	raft_index index; /* applied_index >= index already holds */
};

struct raft_read_failed {
	uint64_t token;
	int error; /* KVD_ENOTLEADER (stepped down), KVD_ESHUTDOWN (I/O failed) */
};

struct raft_change_done {
	uint64_t token;
	/* 0 once the final configuration committed; KVD_ETIMEDOUT: a new
	 * server made no progress catching up (it stays a learner);
	 * KVD_ENOTLEADER: leadership lost before any entry was appended;
	 * KVD_EUNKNOWN: lost after (a later leader may finish a joint change);
	 * KVD_ESHUTDOWN: I/O failed. */
	int error;
};

/*
 * Notes for the operator's log (the core cannot log): what happened in this
 * step and why. reason is a static string (never freed), peer "" if none.
 */
enum raft_note_kind {
	RAFT_NOTE_VOTE_GRANTED = 1,   /* peer: candidate; term: election term */
	RAFT_NOTE_VOTE_REFUSED,	      /* reason: "stale term", "leader lease active",
				       * "log not up to date", "already voted in this term",
				       * "is leader" */
	RAFT_NOTE_PRE_VOTE_GRANTED,   /* peer: pre-candidate; term: proposed term */
	RAFT_NOTE_PRE_VOTE_REFUSED,   /* reason as for VOTE_REFUSED */
	RAFT_NOTE_ELECTION_STARTED,   /* reason: "pre-vote", "election", "transfer" */
	RAFT_NOTE_ELECTION_WON,	      /* term: the new leader's term */
	RAFT_NOTE_STEPPED_DOWN,	      /* left leader or candidate; reason: "higher term seen",
				       * "leader elected", "check-quorum lost",
				       * "removed from configuration", "i/o failed" */
	RAFT_NOTE_PEER_SNAPSHOT_SENT, /* peer; index: snapshot index (stream started) */
	RAFT_NOTE_SNAPSHOT_RECEIVED,  /* peer: leader; index: snapshot index (installing) */
	RAFT_NOTE_TRANSFER_STARTED,   /* peer: target */
	RAFT_NOTE_TRANSFER_ABORTED,   /* peer: target; reason */
	RAFT_NOTE_CONFIG_APPENDED,    /* index; reason: "learners", "joint", "final" */
};

#define RAFT_MAX_NOTES 32 /* per update; later notes of a step are dropped */

struct raft_note {
	enum raft_note_kind kind;
	char peer[RAFT_ID_SIZE];
	raft_term term;
	raft_index index;
	const char *reason; /* static string, or "" */
};

/* Counters since raft_create(), for metrics. */
struct raft_stats {
	uint64_t pre_votes_started;
	uint64_t elections_started; /* real elections (term incremented) */
	uint64_t elections_won;
	uint64_t votes_granted; /* by this server, pre-votes excluded */
	uint64_t votes_refused;
	uint64_t step_downs;	 /* left leader or candidate */
	uint64_t snapshots_sent; /* streams started to peers */
	uint64_t snapshots_installed;
	uint64_t appends_rejected; /* AppendEntries rejections received as leader */
	uint64_t transfers_started;
};

struct raft_update {
	/* Persist term and vote (before any needs_sync message). */
	bool meta_changed;
	raft_term term;
	char voted_for[RAFT_ID_SIZE]; /* "" if none */

	/* Log mutation, in this order: remove entries >= truncate_from (0: none),
	 * then append entries[0..n_entries) (contiguous). */
	raft_index truncate_from;
	const struct raft_entry *entries;
	unsigned n_entries;

	/* A received snapshot chunk to write (offset 0 starts a new file);
	 * done: build the state machine from it and then report
	 * RAFT_EVENT_SNAPSHOT_INSTALLED. NULL if none. On that event the core
	 * drops its whole in-memory log and restarts it after the snapshot
	 * (prev = snapshot index/term); the driver resets its stored log the
	 * same way (entries after the snapshot may conflict with the leader). */
	const struct raft_snapshot *snapshot_write;

	struct raft_message *messages;
	unsigned n_messages;

	/* Committed entries to apply, in order. */
	const struct raft_entry *apply;
	unsigned n_apply;

	struct raft_read_ready *reads;
	unsigned n_reads;
	struct raft_read_failed *reads_failed;
	unsigned n_reads_failed;

	struct raft_change_done *changes_done;
	unsigned n_changes_done;

	/* Result of RAFT_EVENT_PROPOSE: where the first entry landed (the
	 * rest follow contiguously, same term). */
	raft_index proposed_index;
	raft_term proposed_term;

	/* Role, term or leader changed in this step (always filled). */
	bool state_changed;
	enum raft_role role;
	raft_term current_term;
	char leader[RAFT_ID_SIZE]; /* "" if unknown */
	raft_index commit_index;

	/* Call raft_step with RAFT_EVENT_TICK at or after this time (ms). */
	raft_time deadline;

	/* For the operator's log, in the order they happened. */
	const struct raft_note *notes;
	unsigned n_notes;
};

struct raft_options {
	raft_time election_timeout_min; /* ms, default 500 */
	raft_time election_timeout_max; /* ms, default 1000 */
	raft_time heartbeat_interval;	/* ms, default 100 */
	/* Defaults: 32 messages, 1 MiB per message, 8 MiB in flight, 1 MiB
	 * snapshot chunks, 5000 ms snapshot timeout, 1024 trailing entries. */
	unsigned max_inflight_msgs;   /* pipelined AppendEntries per follower */
	size_t max_msg_bytes;	      /* entry bytes per AppendEntries */
	size_t max_inflight_bytes;    /* entry bytes in flight per follower */
	size_t snapshot_chunk_bytes;  /* bytes per InstallSnapshot chunk */
	raft_time snapshot_timeout;   /* ms without progress before retrying */
	raft_index snapshot_trailing; /* entries kept in memory after a snapshot */
	bool pre_vote;		      /* default true */
	bool check_quorum;	      /* default true */
};

struct raft_core;

/* Fills o with the defaults above. */
void raft_options_default(struct raft_options *o);

/* Creates a core for node id (copied). Returns NULL on allocation failure.
 * Nothing happens until RAFT_EVENT_START. */
struct raft_core *raft_create(const char *id, const struct raft_options *o, uint64_t seed);
void raft_destroy(struct raft_core *r);

/*
 * Feeds one event. *u is overwritten (the caller need not clear it) and stays
 * valid until the next call. Returns 0, or a code for an event that was
 * refused (KVD_ENOTLEADER for a proposal, read or change on a non-leader;
 * KVD_EBUSY for a change while one is pending, and for a proposal or change
 * while a leadership transfer is under way; KVD_EINVAL for a malformed
 * event; KVD_ESHUTDOWN after RAFT_EVENT_IO_FAILED). *u is valid either way.
 */
int raft_step(struct raft_core *r, const struct raft_event *e, struct raft_update *u);

/* Read-only views for status reporting (/cluster/info). */
enum raft_role raft_role(const struct raft_core *r);
raft_term raft_current_term(const struct raft_core *r);
const char *raft_voted_for(const struct raft_core *r); /* "" if none */
const char *raft_leader(const struct raft_core *r);    /* "" if unknown */
raft_index raft_commit_index(const struct raft_core *r);
raft_index raft_last_index(const struct raft_core *r);
const struct raft_config *raft_configuration(const struct raft_core *r);
/* The token of the received last chunk whose answer waits for
 * RAFT_EVENT_SNAPSHOT_INSTALLED or RAFT_EVENT_SNAPSHOT_FAILED (the driver
 * must keep that request open); 0 if none. Loop thread. */
uint64_t raft_snapshot_install_token(const struct raft_core *r);
/* Copies the counters into *out. */
void raft_stats_get(const struct raft_core *r, struct raft_stats *out);

/*
 * The configuration a brand-new cluster starts from: the driver of every
 * founding member writes the same entry (index 1, term 1, CONFIG with all
 * voters) before RAFT_EVENT_START, so that logs match (§5.3).
 */
/* Fills *out (index 1, term 1, CONFIG) with data in a malloc'ed buffer
 * returned in *buf, which the caller frees with free() once the entry is
 * written. Returns 0 or KVD_ENOMEM. */
int raft_bootstrap_entry(const struct raft_config *c, struct raft_entry *out, void **buf);

#endif
