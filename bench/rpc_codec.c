/*
 * rpc_codec.c: CPU cost of the AppendEntries codec (api/rpc.c) per
 * replicated write, JSON against the binary form, away from the noise of a
 * shared machine (thread CPU time of a loop that does only the codec work).
 *
 * One "round" is what one batch costs the cluster in codec work: the leader
 * encodes the batch for each of F followers (binary: through one
 * struct kvd_rpc_cache, as the transport does), each follower decodes it
 * and encodes its result, and the leader decodes F results.
 *
 *     cc -O2 -I. -Iinclude bench/rpc_codec.c build/api/libkvd_api.a \
 *        build/api/common/libkvd_common.a build/raft/libkvd_raft.a \
 *        $(pkg-config --libs jansson) -o /tmp/rpc_codec
 *     /tmp/rpc_codec [ENTRIES_PER_BATCH] [VALUE_BYTES] [FOLLOWERS] [ROUNDS]
 *
 * Defaults 30 entries (about the batch of a 3-node wrk -c64 run), 100-byte
 * values, 2 followers, 20,000 rounds. Prints microseconds of CPU per write
 * for each form.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/rpc.h"

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double run(const struct raft_message *batch, unsigned followers, unsigned rounds,
		  bool binary)
{
	struct kvd_rpc_cache cache = {0};
	struct raft_message res, d;
	struct kvd_rpc_decoded dec;
	double t0 = cpu_now();

	memset(&res, 0, sizeof(res));
	res.type = RAFT_MSG_APPEND_RESULT;
	snprintf(res.from, sizeof(res.from), ":8002");
	res.term = 3;
	res.u.append_result.success = true;
	for (unsigned r = 0; r < rounds; r++) {
		struct raft_message m = *batch;
		/* a new batch each round: the cache helps only across followers */
		for (unsigned i = 0; i < m.u.append.n_entries; i++)
			((struct raft_entry *)m.u.append.entries)[i].index =
			    (uint64_t)r * m.u.append.n_entries + i + 1;
		m.u.append.prev_log_index = (uint64_t)r * m.u.append.n_entries;
		for (unsigned f = 0; f < followers; f++) {
			char *body, *rbody;
			size_t len, rlen;
			int rv = binary ? kvd_rpc_encode_append_binary(&m, &cache, &body, &len)
					: kvd_rpc_encode(&m, &body, &len, NULL, 0);
			if (rv != 0)
				abort();
			rv = binary
				 ? kvd_rpc_decode_append_binary(body, len, ":8002", &d, &dec, NULL)
				 : kvd_rpc_decode_request("/raft/append-entries", "", 0, body, len,
							  ":8002", &d, &dec, NULL);
			if (rv != 0 || d.u.append.n_entries != m.u.append.n_entries)
				abort();
			kvd_rpc_decoded_free(&dec);
			res.u.append_result.last_log_index = m.u.append.prev_log_index + 1;
			if (kvd_rpc_encode(&res, &rbody, &rlen, NULL, 0) != 0 ||
			    kvd_rpc_decode_result(RAFT_MSG_APPEND, rbody, rlen, ":8002", ":8001",
						  &d, NULL) != 0)
				abort();
			free(rbody);
			free(body);
		}
	}
	kvd_rpc_cache_free(&cache);
	return (cpu_now() - t0) * 1e6 / ((double)rounds * batch->u.append.n_entries);
}

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 30;
	size_t vlen = argc > 2 ? (size_t)atol(argv[2]) : 100;
	unsigned followers = argc > 3 ? (unsigned)atoi(argv[3]) : 2;
	unsigned rounds = argc > 4 ? (unsigned)atoi(argv[4]) : 20000;
	struct raft_entry *es = calloc(n, sizeof(*es));
	char **cmds = calloc(n, sizeof(*cmds));
	struct raft_message m;

	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_APPEND;
	m.term = 3;
	snprintf(m.from, sizeof(m.from), ":8001");
	snprintf(m.to, sizeof(m.to), ":8002");
	for (unsigned i = 0; i < n; i++) {
		cmds[i] = malloc(vlen + 32);
		int k = snprintf(cmds[i], 32, "PUT k%05u ", i);
		for (size_t j = 0; j < vlen; j++)
			cmds[i][k + j] = (char)('0' + j % 10);
		es[i] = (struct raft_entry){0, 3, RAFT_ENTRY_COMMAND, cmds[i], (size_t)k + vlen};
	}
	m.u.append.entries = es;
	m.u.append.n_entries = n;
	printf("entries/batch=%u value=%zu followers=%u rounds=%u\n", n, vlen, followers, rounds);
	for (int rep = 0; rep < 3; rep++)
		printf("json   %.3f us/write   binary %.3f us/write\n",
		       run(&m, followers, rounds, false), run(&m, followers, rounds, true));
	for (unsigned i = 0; i < n; i++)
		free(cmds[i]);
	free(cmds);
	free(es);
	return 0;
}
