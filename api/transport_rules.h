/*
 * transport_rules.h: the peer transport's logic without HTTP (the pairing of
 * Raft messages with requests and responses), apart from api/transport.c so
 * the simulation (tests/sim/sim_http.c) runs it exactly as the daemon does.
 *
 *  - Outgoing requests: each request message of the core (RequestVote,
 *    AppendEntries, InstallSnapshot chunk, TimeoutNow) becomes one request
 *    to its peer; its answer is fed back to the core as the result. A
 *    non-2xx, undecodable or failed answer (timeout, reset) of an
 *    AppendEntries or a chunk becomes RAFT_EVENT_UNREACHABLE (the leader
 *    resends from what the peer matched); of a vote, nothing.
 *  - Incoming requests: each gets a token, goes to the core, and gets
 *    exactly one answer: the result the core addresses to its token, or a
 *    refusal in the current term when the core made none. The last chunk of
 *    a snapshot (raft_snapshot_install_token()) stays open until the install
 *    ends (it is answered then, or refused with offset 0 when the core goes).
 *  - Held messages: a message flagged needs_sync waits until the writer has
 *    completed the sequence recorded with it (persist before send, raft.h);
 *    held messages leave in the order they were produced.
 *  - Partition: nothing is sent to a blocked peer, and its answers are dropped.
 *
 * The outside world (HTTP for the daemon, a simulated HTTP layer in the
 * simulation) is reached through struct kvd_trules_ops. Depends on raft/
 * and kvd/errors.h only.
 *
 * Thread: the driver's loop thread only (not thread-safe).
 */
#ifndef KVD_API_TRANSPORT_RULES_H
#define KVD_API_TRANSPORT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"

/* Request timeouts (the daemon's http_client deadline, from submission):
 * 2 s plus 1 ms per 8 KiB of body for most requests, 10 s for a chunk. */
#define KVD_TRULES_RPC_TIMEOUT_MS      2000
#define KVD_TRULES_SNAPSHOT_TIMEOUT_MS 10000

struct kvd_trules;

/* Connections to a peer. The last chunk of a snapshot stays unanswered until
 * the install ends, and an HTTP server serves one request of a connection at
 * a time (api/http/http_server.c). Behind a parked chunk, AppendEntries would
 * wait until they time out (the follower's "busy" answers never come back),
 * and so would the chunk the leader resends meanwhile (refused at once with
 * the offset expected, which keeps the leader from restarting the stream
 * after snapshot_timeout). So chunks have connections of their own,
 * KVD_TRULES_SNAPSHOT_CONNS of them, and the binding sends each chunk on the
 * first one with no request in flight (the first if all are busy): the
 * core keeps one chunk outstanding, plus its resends. */
enum kvd_trules_channel {
	KVD_TRULES_CHANNEL_RAFT = 0,	 /* votes, AppendEntries, TimeoutNow */
	KVD_TRULES_CHANNEL_SNAPSHOT = 1, /* InstallSnapshot chunks */
};
#define KVD_TRULES_SNAPSHOT_CONNS 2

/* One outgoing request, from kvd_trules_send() to its answer. Allocated by
 * the rules, handed to ops->request(); the binding gives it back exactly once,
 * through kvd_trules_result() or (the rules are gone) kvd_trules_call_free(). */
struct kvd_trules_call {
	struct kvd_trules *rules;
	struct raft_message req;	 /* the request's small fields (no pointers) */
	size_t len;			 /* bytes of the encoded payload */
	uint64_t timeout_ms;		 /* kvd_trules_timeout_ms() of the request */
	enum kvd_trules_channel channel; /* the peer connection it must go on */
	void *binding;			 /* the binding's own (ops->request sets it) */
	unsigned conn;			 /* the binding's: which connection carries it */
	bool binary;			 /* the binding's: the body is in the binary form */
};

/* What the rules ask of the outside. ctx is passed back to every call. */
struct kvd_trules_ops {
	void *ctx;
	/* Serializes m at once (what it points to is the core's until the next
	 * step): *payload (owned by the rules until handed back) and *len.
	 * Returns 0, or an error (the message is dropped). */
	int (*encode)(void *ctx, const struct raft_message *m, void **payload, size_t *len);
	void (*payload_free)(void *ctx, void *payload);
	/* Sends call->req's request to call->req.to on the connection of
	 * call->channel with payload (taken in every case). Returns 0: kvd_trules_result() or
	 * kvd_trules_call_free() follows later, never from inside; or an error: the rules free
	 * call. */
	int (*request)(void *ctx, struct kvd_trules_call *call, void *payload);
	/* Answers the incoming request handle with 200 and payload (taken). */
	void (*answer)(void *ctx, void *handle, void *payload);
	/* Answers handle with a refusal: refusal is a result message (or, for a
	 * TimeoutNow, type RAFT_MSG_TIMEOUT_NOW) with term and, for
	 * AppendEntries, last_log_index set; everything else is zero. */
	void (*refuse)(void *ctx, void *handle, const struct raft_message *refusal);
	/* Answers handle with status (not 2xx) and text (the rules are closing). */
	void (*fail)(void *ctx, void *handle, int status, const char *text);
	/* Steps the core with e (a result, or UNREACHABLE). */
	void (*step)(void *ctx, struct raft_event *e);
	/* The current core, or NULL when there is none. */
	struct raft_core *(*core)(void *ctx);
	/* The peer answered (ok) or failed (status: HTTP status or a negative
	 * code) one request; NULL: not wanted. For logging only. */
	void (*health)(void *ctx, const char *peer, bool ok, int status);
};

/* Creates the rules. Returns 0 or KVD_ENOMEM. */
int kvd_trules_create(const struct kvd_trules_ops *ops, struct kvd_trules **out);

/* Closes: drops held messages, refuses the incoming requests waiting for
 * a result, fails the rest with 503 "shutting down"; later results of
 * requests in flight are ignored (the binding frees their calls). Frees r. */
void kvd_trules_destroy(struct kvd_trules *r);

/* The request deadline for a message of type with a len-byte body. */
uint64_t kvd_trules_timeout_ms(enum raft_msg_type type, size_t len);

/* Sends or holds one message of an update (serialized at once). sync_seq:
 * the writer sequence that must be complete first (0: none). */
void kvd_trules_send(struct kvd_trules *r, const struct raft_message *m, uint64_t sync_seq);

/* Releases held messages whose writer sequence is complete, in order. */
void kvd_trules_flush(struct kvd_trules *r, uint64_t completed_seq);

/* Drops every held message (the write they waited for failed); incoming
 * requests whose result was held get a refusal instead. */
void kvd_trules_drop_held(struct kvd_trules *r);

/* An incoming request, decoded (token ignored), from a peer that is not
 * blocked: it gets a token and goes to the core; handle is answered exactly
 * once through ops. Returns 0, or KVD_ENOMEM (nothing was kept: the binding
 * answers handle itself). */
int kvd_trules_receive(struct kvd_trules *r, void *handle, const struct raft_message *m);

/* The answer to call: status (HTTP status, or a negative code from the
 * binding) and result (the decoded body of a 200, NULL when undecodable or
 * not 200). Frees call. */
void kvd_trules_result(struct kvd_trules_call *call, int status, const struct raft_message *result);

/* Frees a call whose rules are gone (or closing), without touching them. */
void kvd_trules_call_free(struct kvd_trules_call *call);

/* Refuses incoming requests the last step left without a result, except
 * the parked last snapshot chunk and those whose result is held. */
void kvd_trules_answer_orphans(struct kvd_trules *r);

/* Refuses the parked last snapshot chunk (offset 0: the leader restarts the
 * stream); for when the core that would answer it is gone. */
void kvd_trules_refuse_parked(struct kvd_trules *r);

/* Partition: when partitioned, only the n peers of allowed are reached. */
void kvd_trules_set_partition(struct kvd_trules *r, bool partitioned, const char *const *allowed,
			      unsigned n);

/* True when traffic with peer is blocked by the partition. */
bool kvd_trules_blocked(const struct kvd_trules *r, const char *peer);

/* Counters (for tests and the simulation's report). */
struct kvd_trules_stats {
	uint64_t requests, results, failures; /* outgoing */
	uint64_t received, answered, refused; /* incoming */
	uint64_t held, dropped;		      /* needs_sync messages */
};
void kvd_trules_stats_get(const struct kvd_trules *r, struct kvd_trules_stats *out);

/*
 * Planted bugs (tests/sim only; docs/simulation.md): compiled in only where
 * KVD_TRULES_PLANTS is defined (the simulator's copy of this file), where
 * kvd_trules_plants selects them; a constant false everywhere else.
 */
#define KVD_TRULES_PLANT_PARKED_ANSWERED  1u /* the parked last chunk is refused at once */
#define KVD_TRULES_PLANT_HELD_EARLY	  2u /* held messages leave one sequence early */
#define KVD_TRULES_PLANT_ONE_CONNECTION	  4u /* chunks share the AppendEntries connection */
#define KVD_TRULES_PLANT_STALE_CHUNK_LOSS 8u /* a lost chunk's token is not passed back */
#ifdef KVD_TRULES_PLANTS
extern unsigned kvd_trules_plants;
#define KVD_TRULES_PLANTED(bit) ((kvd_trules_plants & (bit)) != 0)
#else
#define KVD_TRULES_PLANTED(bit) false
#endif

#endif
