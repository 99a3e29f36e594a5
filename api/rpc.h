/*
 * rpc.h: the Raft RPC codec, raft_message <-> JSON over HTTP (API.md §5).
 *
 * Requests travel as POST /raft/<name> with a JSON body (InstallSnapshot: a
 * query string and the binary chunk as body); results travel back as the HTTP
 * response body. The wire names are the public challenge's; fields the core
 * needs beyond them ("seq", "transfer", "conflict-term", ...) are extra keys
 * that other implementations ignore.
 *
 * Log entries travel as text commands: command entries as their own bytes
 * ("PUT k v", "DELETE k", "CLEAR"), no-ops as "NOOP", configurations as
 * "CONFIG <json>". The same rendering serves GET /log.
 *
 * Thread: any; functions keep no state.
 */
#ifndef KVD_API_RPC_H
#define KVD_API_RPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"

/* Decoded storage that a message's pointers refer to; free with
 * kvd_rpc_decoded_free() after raft_step has consumed the message. */
struct kvd_rpc_decoded {
	json_t *root;
	struct raft_entry *entries;
	void **bufs; /* config payloads, one per entry or NULL */
	unsigned n;
};

void kvd_rpc_decoded_free(struct kvd_rpc_decoded *d);

/* The HTTP path ("/raft/append-entries", ...) of a request message type, or
 * NULL for result types. */
const char *kvd_rpc_path(enum raft_msg_type type);

/* True when path[0..len) is one of the four /raft/ request paths. */
bool kvd_rpc_path_valid(const char *path, size_t len);

/*
 * Renders an entry as its text command into a malloc'ed NUL-terminated string
 * (*out; free with free()). Returns 0, KVD_ENOMEM or KVD_ECORRUPT (a config
 * entry that does not decode).
 */
int kvd_rpc_entry_text(const struct raft_entry *e, char **out, size_t *len);

/* An entry as {"index", "term", "command"} (new reference), or NULL when
 * its configuration does not decode or memory runs out. */
json_t *kvd_rpc_entry_json(const struct raft_entry *e);

/* A configuration as a JSON object {"voters": [...], "learners": [...],
 * "old-voters": [...] (joint only)}; new reference. */
json_t *kvd_rpc_config_json(const struct raft_config *c);

/*
 * A JSON number for an unsigned 64-bit value (new reference). jansson holds
 * only signed integers: values above INT64_MAX are kept negative, and
 * kvd_json_dumps() writes them back as the unsigned value, never negative.
 */
json_t *kvd_json_u64(uint64_t v);

/* json_dumps(o, JSON_COMPACT) that writes every integer as unsigned (all
 * numbers kvd writes are unsigned quantities). Returns a malloc'ed string
 * (free with free()) or NULL. */
char *kvd_json_dumps(const json_t *o);

/*
 * Encodes a message for the wire into a malloc'ed body (*body, *len; free with
 * free()). For RAFT_MSG_SNAPSHOT the body is not produced here (the caller
 * sends the chunk bytes) and query receives the query string instead; query
 * may be NULL for other types. Returns 0, KVD_ENOMEM or KVD_EINVAL.
 */
int kvd_rpc_encode(const struct raft_message *m, char **body, size_t *len, char *query,
		   size_t query_size);

/*
 * Decodes a request received on path (with its query string and body) into
 * *m, addressed from the sender to self. Pointers in *m refer to *d (and, for
 * snapshot chunks, to body). Returns 0, or KVD_EINVAL with a message for
 * malformed input.
 */
int kvd_rpc_decode_request(const char *path, const char *query, size_t query_len, const void *body,
			   size_t len, const char *self, struct raft_message *m,
			   struct kvd_rpc_decoded *d, char *errmsg);

/*
 * Decodes the result of a request of type request_type sent to peer. Fills
 * *m as a message from peer to self. Returns 0 or KVD_EINVAL.
 */
int kvd_rpc_decode_result(enum raft_msg_type request_type, const void *body, size_t len,
			  const char *peer, const char *self, struct raft_message *m, char *errmsg);

#endif
