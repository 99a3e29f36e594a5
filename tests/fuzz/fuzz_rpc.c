/*
 * fuzz_rpc.c: the Raft RPC decoders (api/rpc.c), the first code that sees a
 * peer's bytes (API.md §5, §7).
 *
 * Input: byte 0 picks the decoder (mod 8): the four request paths, JSON
 * body = the rest; install-snapshot splits the rest at the first '\n' into
 * query string and chunk; 4..6 the result decoders of request-vote,
 * append-entries and install-snapshot; 7 the binary append-entries decoder
 * (Content-Type application/x-kvd-raft), body = the rest.
 *
 * Beyond "no crash, no leak, no UB" it checks the validation contract: an
 * accepted request has a term and indexes below 2^63 and a valid sender id,
 * and re-encoding it decodes to the same message (the encoders and decoders
 * agree for everything the decoders accept). A binary request accepted is
 * also re-encoded in binary (through a cache, twice: the cached records must
 * give the same bytes) and must encode as JSON too (the binary form accepts
 * nothing JSON cannot carry). A violation aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/rpc.h"
#include "api/textutil.h"
#include "kvd/errors.h"

#define LIMIT ((uint64_t)INT64_MAX)

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_rpc: contract violated: %s\n", what);
		abort();
	}
}

static void check_accepted(const struct raft_message *m)
{
	check(m->term <= LIMIT, "term >= 2^63 accepted");
	check(kvd_id_valid(m->from, strlen(m->from)), "invalid sender id accepted");
	switch (m->type) {
	case RAFT_MSG_REQUEST_VOTE:
		check(m->u.request_vote.last_log_index <= LIMIT &&
			  m->u.request_vote.last_log_term <= LIMIT,
		      "request-vote index >= 2^63 accepted");
		break;
	case RAFT_MSG_APPEND:
		check(m->u.append.prev_log_index <= LIMIT && m->u.append.prev_log_term <= LIMIT &&
			  m->u.append.leader_commit <= LIMIT,
		      "append-entries index >= 2^63 accepted");
		for (unsigned i = 0; i < m->u.append.n_entries; i++)
			check(m->u.append.entries[i].index <= LIMIT &&
				  m->u.append.entries[i].term <= LIMIT,
			      "entry index or term >= 2^63 accepted");
		break;
	case RAFT_MSG_SNAPSHOT:
		check(m->u.snapshot.last_index <= LIMIT && m->u.snapshot.last_term <= LIMIT &&
			  m->u.snapshot.offset <= LIMIT,
		      "install-snapshot number >= 2^63 accepted");
		break;
	default: break;
	}
}

/* Encodes an accepted request again and decodes it: same message. */
static void round_trip(const char *path, const struct raft_message *m, const void *chunk,
		       size_t chunk_len)
{
	struct raft_message again;
	struct kvd_rpc_decoded d2;
	char query[1024] = "";
	char *body = NULL;
	size_t len = 0;
	int rv;

	rv = kvd_rpc_encode(m, &body, &len, query, sizeof(query));
	check(rv == 0 || rv == KVD_ENOMEM, "an accepted request does not encode");
	if (rv != 0)
		return;
	if (m->type == RAFT_MSG_SNAPSHOT)
		rv = kvd_rpc_decode_request(path, query, strlen(query), chunk, chunk_len, m->to,
					    &again, &d2, NULL);
	else
		rv = kvd_rpc_decode_request(path, "", 0, body, len, m->to, &again, &d2, NULL);
	check(rv == 0 || rv == KVD_ENOMEM, "a re-encoded request is refused");
	if (rv == 0) {
		check(again.type == m->type && again.term == m->term &&
			  strcmp(again.from, m->from) == 0,
		      "a re-encoded request decodes differently");
		if (m->type == RAFT_MSG_APPEND) {
			check(again.u.append.n_entries == m->u.append.n_entries,
			      "entry count changed in a round trip");
			for (unsigned i = 0; i < m->u.append.n_entries; i++) {
				const struct raft_entry *a = &m->u.append.entries[i];
				const struct raft_entry *b = &again.u.append.entries[i];
				/* Configurations come back with their ids sorted:
				 * same members, other bytes; commands byte for byte. */
				check(
				    a->index == b->index && a->term == b->term &&
					a->type == b->type &&
					(a->type == RAFT_ENTRY_CONFIG ||
					 (a->len == b->len &&
					  (a->len == 0 || memcmp(a->data, b->data, a->len) == 0))),
				    "an entry changed in a round trip");
			}
		}
		if (m->type == RAFT_MSG_SNAPSHOT)
			check(again.u.snapshot.last_index == m->u.snapshot.last_index &&
				  again.u.snapshot.offset == m->u.snapshot.offset &&
				  again.u.snapshot.done == m->u.snapshot.done,
			      "install-snapshot changed in a round trip");
		kvd_rpc_decoded_free(&d2);
	}
	free(body);
}

/* Binary append-entries: decode; when accepted, the contract above. */
static void binary_append(const char *body, size_t len)
{
	struct raft_message m, again;
	struct kvd_rpc_decoded d, d2;
	struct kvd_rpc_cache cache = {0};
	char errmsg[KVD_ERRMSG_SIZE];
	char *b1 = NULL, *b2 = NULL, *json = NULL;
	size_t l1 = 0, l2 = 0, jlen = 0;
	int rv;

	if (kvd_rpc_decode_append_binary(body, len, ":8002", &m, &d, errmsg) != 0) {
		check(strchr(errmsg, '\n') == NULL && errmsg[0] != '\0',
		      "a binary refusal without a one-line reason");
		return;
	}
	check(m.type == RAFT_MSG_APPEND && m.u.append.seq <= LIMIT, "binary: seq >= 2^63 accepted");
	check_accepted(&m);
	for (unsigned i = 0; i < m.u.append.n_entries; i++)
		check(m.u.append.entries[i].index == m.u.append.prev_log_index + 1 + i,
		      "binary: entries not contiguous accepted");
	rv = kvd_rpc_encode(&m, &json, &jlen, NULL, 0);
	check(rv == 0 || rv == KVD_ENOMEM, "binary: accepted but JSON cannot carry it");
	free(json);
	rv = kvd_rpc_encode_append_binary(&m, &cache, &b1, &l1);
	check(rv == 0 || rv == KVD_ENOMEM, "binary: an accepted request does not re-encode");
	if (rv == 0) {
		check(l1 == len && memcmp(b1, body, len) == 0,
		      "binary: re-encoding gives other bytes");
		rv = kvd_rpc_encode_append_binary(&m, &cache, &b2, &l2);
		check(rv != 0 || (l2 == l1 && memcmp(b1, b2, l1) == 0),
		      "binary: the cached records differ");
		rv = kvd_rpc_decode_append_binary(b1, l1, ":8002", &again, &d2, NULL);
		check(rv == 0 || rv == KVD_ENOMEM, "binary: a re-encoded request is refused");
		if (rv == 0)
			kvd_rpc_decoded_free(&d2);
	}
	free(b1);
	free(b2);
	kvd_rpc_cache_free(&cache);
	kvd_rpc_decoded_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const paths[] = {"/raft/request-vote", "/raft/append-entries",
					    "/raft/install-snapshot", "/raft/timeout-now"};
	static const enum raft_msg_type results[] = {RAFT_MSG_REQUEST_VOTE, RAFT_MSG_APPEND,
						     RAFT_MSG_SNAPSHOT};
	struct raft_message m;
	struct kvd_rpc_decoded d;
	char errmsg[KVD_ERRMSG_SIZE];
	const char *rest;
	size_t len;
	unsigned sel;

	if (size < 1)
		return 0;
	sel = data[0] % 8;
	rest = (const char *)data + 1;
	len = size - 1;
	if (sel == 7) {
		/* an exact-size copy, so an over-read is caught even inside data */
		char *copy = malloc(len > 0 ? len : 1);
		if (copy != NULL) {
			memcpy(copy, rest, len);
			binary_append(copy, len);
			free(copy);
		}
	} else if (sel < 4) {
		const char *query = "";
		size_t qlen = 0;
		const char *body = rest;
		size_t blen = len;
		int rv;

		if (sel == 2) {
			const char *nl = memchr(rest, '\n', len);
			query = rest;
			qlen = nl != NULL ? (size_t)(nl - rest) : len;
			body = nl != NULL ? nl + 1 : rest + len;
			blen = len - qlen - (nl != NULL ? 1 : 0);
		}
		rv = kvd_rpc_decode_request(paths[sel], query, qlen, body, blen, ":8002", &m, &d,
					    errmsg);
		if (rv == 0) {
			check_accepted(&m);
			round_trip(paths[sel], &m, body, blen);
			kvd_rpc_decoded_free(&d);
		} else {
			check(strchr(errmsg, '\n') == NULL && errmsg[0] != '\0',
			      "a refusal without a one-line reason");
		}
	} else {
		if (kvd_rpc_decode_result(results[sel - 4], rest, len, ":8001", ":8002", &m,
					  NULL) == 0) {
			char *body = NULL;
			size_t blen = 0;
			check(m.term <= LIMIT, "result term >= 2^63 accepted");
			if (kvd_rpc_encode(&m, &body, &blen, NULL, 0) == 0) {
				/* append results take the hand-written path both ways */
				struct raft_message again;
				if (m.type == RAFT_MSG_APPEND_RESULT) {
					check(kvd_rpc_decode_result(RAFT_MSG_APPEND, body, blen,
								    ":8001", ":8002", &again,
								    NULL) == 0 &&
						  again.term == m.term &&
						  memcmp(&again.u.append_result, &m.u.append_result,
							 sizeof(m.u.append_result)) == 0,
					      "an append result changed in a round trip");
				}
				free(body);
			}
		}
	}
	return 0;
}
