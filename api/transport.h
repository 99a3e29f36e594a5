/*
 * transport.h: Raft messages between nodes over HTTP (API.md §5), and the
 * operator's partition switch (API.md §3).
 *
 * Outgoing requests go to the peer's persistent keep-alive connection
 * (http_client); their HTTP response carries the result, which is fed back to
 * the core. Incoming requests are decoded, given to the core with a token,
 * and answered with the result message the core addresses to that token.
 * A message flagged needs_sync is held until the disk writer has completed
 * every job submitted before it (raft.h).
 *
 * Thread: loop thread only.
 */
#ifndef KVD_API_TRANSPORT_H
#define KVD_API_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "api/http_server.h"
#include "raft/raft.h"

struct kvd_node;
struct kvd_transport;

/* Creates the transport; loads the persisted partition from the data
 * directory. Returns 0 or a code with errmsg. */
int kvd_transport_create(struct kvd_node *n, struct kvd_transport **out, char *errmsg);

/* Closes every peer connection (pending requests fail) and frees t. */
void kvd_transport_destroy(struct kvd_transport *t);

/* Sends or holds one message of an update. sync_seq: the writer sequence
 * that must be complete first (0: none). Serializes at once. */
void kvd_transport_send(struct kvd_transport *t, const struct raft_message *m, uint64_t sync_seq);

/* Releases held messages whose writer sequence is complete. */
void kvd_transport_flush(struct kvd_transport *t, uint64_t completed_seq);

/* Handles POST /raft/... (routes.c). */
void kvd_transport_receive(struct kvd_transport *t, struct http_request *req);

/* Answers incoming requests the last step left without a result. */
void kvd_transport_answer_orphans(struct kvd_transport *t);

/* Partition control: allowed ids (n == 0 with heal=true lifts it). Persists
 * (fsync) before returning. Returns 0 or a code with errmsg. */
int kvd_transport_partition(struct kvd_transport *t, const char *const *allowed, unsigned n,
			    bool heal, char *errmsg);

/* True when /raft traffic with peer is blocked by the partition. */
bool kvd_transport_blocked(const struct kvd_transport *t, const char *peer);

#endif
