/*
 * transport.h: Raft messages between nodes over HTTP (API.md §5), and the
 * operator's partition switch (API.md §3).
 *
 * Outgoing requests go to the peer's persistent keep-alive connection
 * (http_client); their HTTP response carries the result, which is fed back to
 * the core. Incoming requests are decoded, given to the core with a token,
 * and answered with the result message the core addresses to that token.
 * A message flagged needs_sync is held until the disk writer has completed
 * every job submitted before it (raft.h). That pairing logic is
 * api/transport_rules.c's (shared with the simulation); this file binds it
 * to HTTP and the JSON codec.
 *
 * Thread: loop thread only.
 */
#ifndef KVD_API_TRANSPORT_H
#define KVD_API_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "api/http/http_server.h"
#include "raft/raft.h"

struct kvd_node;
struct kvd_transport;

/* Creates the transport; loads the persisted partition from the data
 * directory. Returns 0 or a code with errmsg. */
int kvd_transport_create(struct kvd_node *n, struct kvd_transport **out, char *errmsg);

/* Closes every peer connection (pending requests fail) and frees t. */
void kvd_transport_destroy(struct kvd_transport *t);

/* Sends or holds one message of an update. sync_seq: the writer sequence
 * that must be complete first (0: none, or complete already: the driver
 * checks with kvd_writer_completed()). Serializes at once. */
void kvd_transport_send(struct kvd_transport *t, const struct raft_message *m, uint64_t sync_seq);

/* Releases held messages whose writer sequence is complete. */
void kvd_transport_flush(struct kvd_transport *t, uint64_t completed_seq);

/* Drops every held message (the write they waited for failed); incoming
 * requests whose result was held get a refusal instead. */
void kvd_transport_drop_held(struct kvd_transport *t);

/* Handles POST /raft/... (routes.c). */
void kvd_transport_receive(struct kvd_transport *t, struct http_request *req);

/* Answers incoming requests the last step left without a result, except
 * the parked last snapshot chunk (raft_snapshot_install_token()). */
void kvd_transport_answer_orphans(struct kvd_transport *t);

/* Refuses the parked last snapshot chunk (offset 0: the leader restarts the
 * stream); for when the core that would answer it is gone. Loop thread. */
void kvd_transport_refuse_parked(struct kvd_transport *t);

/* Partition control: allowed ids (n == 0 with heal=true lifts it). Persists
 * (fsync) before returning. Returns 0 or a code with errmsg. */
int kvd_transport_partition(struct kvd_transport *t, const char *const *allowed, unsigned n,
			    bool heal, char *errmsg);

/* True when /raft traffic with peer is blocked by the partition. */
bool kvd_transport_blocked(const struct kvd_transport *t, const char *peer);

#endif
