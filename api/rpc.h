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
 * AppendEntries has a second, binary form (Content-Type KVD_RPC_BINARY_TYPE,
 * docs/formats.md): a fixed header and the entries in the log segment's own
 * record framing, so values travel without JSON escaping and the entry
 * records of a batch are encoded once for every follower (struct
 * kvd_rpc_cache). kvd sends it between kvd nodes; JSON stays accepted.
 *
 * Thread: any; functions keep no state but what the caller passes in.
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

/* Content-Type of the binary AppendEntries body. */
#define KVD_RPC_BINARY_TYPE "application/x-kvd-raft"

/* True when body[0..len) starts like a binary AppendEntries (its magic);
 * a JSON body starts with '{'. */
bool kvd_rpc_body_binary(const void *body, size_t len);

/* True when a Content-Type header value (ctype[0..len), may be NULL) names
 * the binary form; parameters after ';' are ignored, case-insensitive. */
bool kvd_rpc_content_binary(const char *ctype, size_t len);

/*
 * The entry records of the last binary AppendEntries encoded with it, so the
 * next message carrying the same entries (another follower, same batch)
 * copies them instead of encoding them again. Entries are identified by
 * (first index, last index, last term): by the Log Matching property an
 * entry's index and term fix its content and everything before it.
 * Zero-initialize; owned by one caller (thread); free with
 * kvd_rpc_cache_free().
 */
struct kvd_rpc_cache {
	raft_index first, last;
	raft_term last_term;
	unsigned char *rec; /* records of entries first..last */
	size_t len, cap;
	uint64_t hits, misses; /* encodings served from / put into the cache */
};

void kvd_rpc_cache_free(struct kvd_rpc_cache *c);

/*
 * Encodes an AppendEntries request (m->type RAFT_MSG_APPEND) in the binary
 * form into a malloc'ed body (*body, *len; free with free()). cache: NULL or
 * the caller's cache. Returns 0, KVD_ENOMEM or KVD_EINVAL (not an append, an
 * entry above 256 MiB, or an entry that JSON could not carry either).
 */
int kvd_rpc_encode_append_binary(const struct raft_message *m, struct kvd_rpc_cache *cache,
				 char **body, size_t *len);

/*
 * Decodes a binary AppendEntries body with the same checks as the JSON
 * decoder (API.md §7) plus the framing's: magic, version, exact length
 * (truncated or trailing bytes are refused), record checksums. Entry data
 * points into body (configurations included), which must outlive the use
 * of *m; *d holds the entry array. Returns 0, KVD_ENOMEM, or KVD_EINVAL with
 * a one-line message.
 */
int kvd_rpc_decode_append_binary(const void *body, size_t len, const char *self,
				 struct raft_message *m, struct kvd_rpc_decoded *d, char *errmsg);

#endif
