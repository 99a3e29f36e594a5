/*
 * make_seeds.c: writes the seed corpora of the fuzz targets from the real
 * encoders and storage code, so seeds are valid inputs that mutations start
 * from (a few hostile ones are added by hand). Usage:
 *
 *     build-fuzz/fuzz/make_seeds tests/fuzz/corpus
 *
 * Run it again after a format change and commit the result. Not a fuzz
 * target (no fuzz_ prefix).
 */
#include <inttypes.h>
#include <lz4frame.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/rpc.h"
#include "engine/engine.h"
#include "engine/snapshot.h"
#include "fuzz_util.h"
#include "kvd/errors.h"
#include "raft/log_store.h"
#include "raft/meta.h"

static const char *root;

static void die(const char *what, const char *errmsg)
{
	fprintf(stderr, "make_seeds: %s: %s\n", what, errmsg != NULL ? errmsg : "");
	exit(1);
}

static void seed(const char *target, const char *name, const void *data, size_t len)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/%s", root, target);
	mkdir(dir, 0755);
	fz_write(dir, name, data, len);
}

/* A seed made of a selector byte followed by text. */
static void seed_sel(const char *target, const char *name, uint8_t sel, const char *a, size_t alen,
		     const char *b, size_t blen)
{
	uint8_t *buf = malloc(1 + alen + 1 + blen);
	size_t n = 0;

	buf[n++] = sel;
	memcpy(buf + n, a, alen);
	n += alen;
	if (b != NULL) {
		buf[n++] = '\n';
		memcpy(buf + n, b, blen);
		n += blen;
	}
	seed(target, name, buf, n);
	free(buf);
}

static struct raft_message msg(enum raft_msg_type type)
{
	struct raft_message m;
	memset(&m, 0, sizeof(m));
	m.type = type;
	snprintf(m.from, sizeof(m.from), "127.0.0.1:8001");
	snprintf(m.to, sizeof(m.to), ":8002");
	m.term = 7;
	return m;
}

static void rpc_seeds(void)
{
	static const char *const hostile[] = {
	    "term=99999999999999999999&leader-id=a%0d%0aX-Inj:1%0d%0ab:1&last-included-index=1&"
	    "last-included-term=1&offset=0&done=false",
	    "term=9223372036854775807&leader-id=%5B%3A%3A1%5D:9000&last-included-index=1&"
	    "last-included-term=1&offset=0&done=1",
	};
	struct raft_message m = msg(RAFT_MSG_REQUEST_VOTE);
	struct raft_entry es[3];
	struct raft_config c;
	void *conf;
	size_t conf_len;
	char *body;
	size_t len;
	char query[1024];
	char name[32];

	m.u.request_vote.last_log_index = 12;
	m.u.request_vote.last_log_term = 6;
	m.u.request_vote.pre_vote = true;
	if (kvd_rpc_encode(&m, &body, &len, NULL, 0) != 0)
		die("encode", "request-vote");
	seed_sel("fuzz_rpc", "request-vote", 0, body, len, NULL, 0);
	free(body);

	memset(&c, 0, sizeof(c));
	raft_config_add(&c, "127.0.0.1:8001", RAFT_VOTER);
	raft_config_add(&c, ":8002", RAFT_VOTER);
	raft_config_add(&c, "[::1]:8003", RAFT_LEARNER);
	if (raft_config_encode(&c, &conf, &conf_len) != 0)
		die("encode", "config");
	es[0] = (struct raft_entry){.index = 5, .term = 7, .type = RAFT_ENTRY_NOOP};
	es[1] = (struct raft_entry){
	    .index = 6, .term = 7, .type = RAFT_ENTRY_COMMAND, .data = "PUT k a\x01\"b", .len = 11};
	es[2] = (struct raft_entry){
	    .index = 7, .term = 7, .type = RAFT_ENTRY_CONFIG, .data = conf, .len = conf_len};
	m = msg(RAFT_MSG_APPEND);
	m.u.append.prev_log_index = 4;
	m.u.append.prev_log_term = 6;
	m.u.append.leader_commit = 4;
	m.u.append.seq = 9;
	m.u.append.entries = es;
	m.u.append.n_entries = 3;
	if (kvd_rpc_encode(&m, &body, &len, NULL, 0) != 0)
		die("encode", "append-entries");
	seed_sel("fuzz_rpc", "append-entries", 1, body, len, NULL, 0);
	free(body);
	if (kvd_rpc_encode_append_binary(&m, NULL, &body, &len) != 0)
		die("encode", "binary append-entries");
	seed_sel("fuzz_rpc", "append-entries-binary", 7, body, len, NULL, 0);
	free(body);
	free(conf);
	m.u.append.n_entries = 0;
	if (kvd_rpc_encode(&m, &body, &len, NULL, 0) != 0)
		die("encode", "heartbeat");
	seed_sel("fuzz_rpc", "heartbeat", 1, body, len, NULL, 0);
	free(body);
	if (kvd_rpc_encode_append_binary(&m, NULL, &body, &len) != 0)
		die("encode", "binary heartbeat");
	seed_sel("fuzz_rpc", "heartbeat-binary", 7, body, len, NULL, 0);
	free(body);

	m = msg(RAFT_MSG_SNAPSHOT);
	m.u.snapshot.last_index = 100;
	m.u.snapshot.last_term = 5;
	m.u.snapshot.offset = 4096;
	m.u.snapshot.done = true;
	if (kvd_rpc_encode(&m, &body, &len, query, sizeof(query)) != 0)
		die("encode", "install-snapshot");
	seed_sel("fuzz_rpc", "install-snapshot", 2, query, strlen(query), "chunk", 5);
	for (unsigned i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		snprintf(name, sizeof(name), "install-snapshot-%u", i);
		seed_sel("fuzz_rpc", name, 2, hostile[i], strlen(hostile[i]), "x", 1);
	}

	m = msg(RAFT_MSG_TIMEOUT_NOW);
	if (kvd_rpc_encode(&m, &body, &len, NULL, 0) != 0)
		die("encode", "timeout-now");
	seed_sel("fuzz_rpc", "timeout-now", 3, body, len, NULL, 0);
	free(body);

	{
		static const struct {
			uint8_t sel;
			const char *name;
			const char *body;
		} results[] = {
		    {4, "vote-result", "{\"term\":7,\"vote-granted\":true,\"pre-vote\":false}"},
		    {5, "append-result",
		     "{\"term\":7,\"success\":false,\"last-log-index\":3,\"reject-index\":5,"
		     "\"conflict-term\":2,\"conflict-index\":2,\"seq\":4}"},
		    {6, "snapshot-result",
		     "{\"term\":7,\"success\":true,\"last-included-index\":100,\"offset\":8192}"},
		    {0, "vote-hostile-id",
		     "{\"term\":1,\"candidate-id\":\"a\\r\\nX: 1\\u0000:1\",\"last-log-index\":0,"
		     "\"last-log-term\":0}"},
		};
		for (unsigned i = 0; i < sizeof(results) / sizeof(results[0]); i++)
			seed_sel("fuzz_rpc", results[i].name, results[i].sel, results[i].body,
				 strlen(results[i].body), NULL, 0);
	}
}

static void snapshot_seeds(const char *tmp)
{
	char dbdir[PATH_MAX], path[PATH_MAX], errmsg[KVD_ERRMSG_SIZE];
	struct engine *e;
	struct engine_view *v;
	struct engine_entry es[5];
	static const char conf[] = "config-blob";
	uint8_t *file, *content, *buf;
	size_t file_len, content_len, cap;
	FILE *f;
	LZ4F_dctx *dctx;

	snprintf(dbdir, sizeof(dbdir), "%s/db", tmp);
	snprintf(path, sizeof(path), "%s/snap", tmp);
	if (engine_open(dbdir, NULL, &e, errmsg) != 0)
		die("engine_open", errmsg);
	es[0] = (struct engine_entry){1, 1, ENGINE_ENTRY_CONFIG, conf, sizeof(conf) - 1};
	es[1] = (struct engine_entry){2, 1, ENGINE_ENTRY_COMMAND, "PUT alpha 1", 11};
	es[2] = (struct engine_entry){3, 1, ENGINE_ENTRY_COMMAND, "PUT beta two words", 18};
	es[3] = (struct engine_entry){4, 2, ENGINE_ENTRY_COMMAND, "PUT gamma:x.y_z-3 \xc3\xa9", 20};
	es[4] = (struct engine_entry){5, 2, ENGINE_ENTRY_COMMAND, "DELETE beta", 11};
	if (engine_apply(e, es, 5, errmsg) != 0)
		die("engine_apply", errmsg);
	if (engine_snapshot_begin(e, &v) != 0)
		die("engine_snapshot_begin", "");
	if (engine_view_write(v, path, NULL, errmsg) != 0)
		die("engine_view_write", errmsg);
	engine_view_release(v);
	engine_close(e);

	f = fopen(path, "rb");
	if (f == NULL)
		die("fopen", path);
	file = malloc(1 + 65536);
	file_len = fread(file + 1, 1, 65536, f);
	fclose(f);
	file[0] = 0; /* mode 0: the file as is */
	seed("fuzz_snapshot_stream", "stream", file, 1 + file_len);

	/* Mode 1: the decompressed content, which the target re-frames. */
	cap = 1 << 20;
	buf = malloc(cap);
	content = buf + 1;
	buf[0] = 1;
	if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)))
		die("lz4", "context");
	{
		size_t dst = cap - 1, src = file_len;
		size_t r = LZ4F_decompress(dctx, content, &dst, file + 1, &src, NULL);
		if (LZ4F_isError(r))
			die("lz4", LZ4F_getErrorName(r));
		content_len = dst;
	}
	LZ4F_freeDecompressionContext(dctx);
	seed("fuzz_snapshot_stream", "content", buf, 1 + content_len);
	/* The same content cut short: a truncated stream. */
	seed("fuzz_snapshot_stream", "content-truncated", buf, 1 + content_len / 2);
	free(buf);
	free(file);
}

/* Appends dir/name as one [kind][len16][bytes] record to out. */
static void pack(uint8_t *out, size_t *n, const char *dir, const char *name, uint8_t kind)
{
	char p[PATH_MAX];
	FILE *f;
	size_t len;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "rb");
	if (f == NULL)
		die("fopen", p);
	len = fread(out + *n + 3, 1, 65535, f);
	fclose(f);
	out[*n] = kind;
	out[*n + 1] = (uint8_t)(len & 0xff);
	out[*n + 2] = (uint8_t)(len >> 8);
	*n += 3 + len;
}

static void log_seeds(const char *tmp)
{
	char dir[PATH_MAX], errmsg[KVD_ERRMSG_SIZE];
	struct raft_log_store_options opts = {.segment_size = 512};
	struct raft_log_store *s;
	struct raft_meta meta;
	uint8_t *out = malloc(8 * 65540);
	size_t n = 0;

	snprintf(dir, sizeof(dir), "%s/log", tmp);
	if (raft_log_store_open(dir, &opts, &s, errmsg) != 0)
		die("raft_log_store_open", errmsg);
	for (unsigned i = 1; i <= 24; i++) {
		char cmd[64];
		struct raft_entry e = {.index = i, .term = 1 + i / 8, .type = RAFT_ENTRY_COMMAND};
		snprintf(cmd, sizeof(cmd), "PUT key%u value-%u-%s", i, i, "padding-padding");
		e.data = cmd;
		e.len = strlen(cmd);
		if (i == 1) {
			e.type = RAFT_ENTRY_NOOP;
			e.data = NULL;
			e.len = 0;
		}
		if (raft_log_store_append(s, &e, 1, errmsg) != 0)
			die("append", errmsg);
	}
	if (raft_log_store_sync(s, errmsg) != 0)
		die("sync", errmsg);
	raft_log_store_close(s);
	memset(&meta, 0, sizeof(meta));
	meta.term = 4;
	snprintf(meta.voted_for, sizeof(meta.voted_for), "127.0.0.1:8001");
	if (raft_meta_store(dir, &meta, errmsg) != 0 || raft_meta_store(dir, &meta, errmsg) != 0)
		die("raft_meta_store", errmsg);

	pack(out, &n, dir, "meta1", 0);
	pack(out, &n, dir, "meta2", 1);
	seed("fuzz_log_recovery", "meta-only", out, n);
	for (uint8_t k = 2; k < 8; k++) {
		char name[32];
		char p[PATH_MAX];
		struct stat st;
		snprintf(name, sizeof(name), "seg-%016" PRIx64, (uint64_t)(k - 1));
		snprintf(p, sizeof(p), "%s/%s", dir, name);
		if (stat(p, &st) != 0)
			break;
		pack(out, &n, dir, name, k);
	}
	seed("fuzz_log_recovery", "log", out, n);
	out[n - 1] ^= 0x40; /* a damaged last byte: a torn or corrupt tail */
	seed("fuzz_log_recovery", "log-torn-tail", out, n);
	free(out);
}

static void config_seeds(void)
{
	static const struct {
		const char *name;
		const char *args; /* NUL-separated, as the target splits them */
		size_t len;
	} cases[] = {
#define C(name, s) {name, s, sizeof(s) - 1}
	    C("peers", "--port\0008002\0--peers\0:8001,:8002,:8003\0--working-dir\0/tmp/x"),
	    C("env", "ADDR=10.0.42.101:8080\0PEERS=10.0.42.102:8080,10.0.42.103:8080\0DATA_DIR=/d"),
	    C("timing", "--election-timeout-ms=500-1000\0--heartbeat-ms\000100\0--max-value-bytes"
			"\0001048576\0--snapshot-threshold\00010000\0--log-level\0debug"),
	    C("join", "--port=9001\0--join\0127.0.0.1:9000\0--cluster-token\0t0k"),
	    C("listen", "--peers\0a:8080,b:8080\0--listen\0b"),
	    C("hostile", "--addr\0a\r\nX:1\0--peers\0a&b:1,+:2"),
#undef C
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		seed("fuzz_config", cases[i].name, cases[i].args, cases[i].len);
}

static void url_seeds(void)
{
	static const char *const cases[][2] = {
	    {"key", "user%3A42.name_x-y"},
	    {"query", "from=10&limit=1000&consistency=stale"},
	    {"snapshot-query", "term=1&leader-id=127.0.0.1%3A8001&done=true"},
	    {"id", "127.0.0.1:8001"},
	    {"id-v6", "[::1]:9000"},
	    {"id-short", ":8001"},
	    {"bad-escape", "a%zz%4"},
	    {"hostile-id", "a%0d%0aX-Inj:1%0d%0ab:1"},
	    {"utf8", "caf%C3%A9%F0%9F%98%80"},
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		seed("fuzz_url", cases[i][0], cases[i][1], strlen(cases[i][1]));
}

int main(int argc, char **argv)
{
	char tmp[PATH_MAX];

	if (argc != 2) {
		fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
		return 2;
	}
	root = argv[1];
	mkdir(root, 0755);
	snprintf(tmp, sizeof(tmp), "%s", fz_scratch());
	rpc_seeds();
	snapshot_seeds(tmp);
	log_seeds(tmp);
	config_seeds();
	url_seeds();
	return 0;
}
