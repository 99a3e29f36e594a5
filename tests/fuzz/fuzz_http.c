/*
 * fuzz_http.c: libFuzzer target for the HTTP server (api/http/http_server.c,
 * api/http/http_request.c) fed raw client bytes.
 *
 * Why a socketpair: the server's code path from read to response is the
 * real one only with a real libuv stream, and http_server_adopt_fd() lets
 * one end of a socketpair stand in for an accepted connection without a
 * listening port per input. Each input is written in up to four pieces (cut
 * where its first bytes say), with loop turns between them, so requests,
 * chunk sizes, trailers and CRLFs split across reads; then the client
 * half-closes and the loop runs until the connection is gone.
 *
 * The handler answers /hold/... later (after the input, like a Raft commit),
 * /big/N with N bytes, everything else at once; an admit hook refuses /raft/
 * without "Authorization: Bearer t" and short deadlines keep inputs fast.
 * Whatever the bytes: no crash, no sanitizer report, no leak (held requests
 * are answered, the pool is drained at exit), and every connection closes.
 *
 * Build (tests/fuzz/CMakeLists.txt globs fuzz_*.c): needs
 * api/http/http_server.c api/http/http_request.c, -lhttp_parser -luv, include dirs
 * `include` and the repository root.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>
#include <uv.h>

#include "api/http/http_server.h"
#include "api/http/http_server_internal.h"

#define MAX_HELD 256

static uv_loop_t loop;
static struct http_server *server;
static struct http_request *held[MAX_HELD];
static unsigned nheld;

static void handler(struct http_request *req, void *user)
{
	size_t plen, blen;
	const char *path = http_request_path(req, &plen);
	const char *body = http_request_body(req, &blen);

	(void)user;
	(void)http_request_query(req, NULL);
	(void)http_request_header(req, "Authorization", NULL);
	if (strncmp(path, "/hold/", 6) == 0 && nheld < MAX_HELD) {
		held[nheld++] = req;
	} else if (strncmp(path, "/big/", 5) == 0) {
		size_t n = strtoul(path + 5, NULL, 10) % (1u << 20);
		char *out = malloc(n + 1);
		if (out != NULL) {
			memset(out, 'b', n);
			http_response_send(req, 200, "text/plain", NULL, out, n);
			free(out);
		} else {
			http_response_send(req, 503, NULL, NULL, NULL, 0);
		}
	} else {
		http_response_send(req, 200, "application/octet-stream", "X-Echo: 1\r\n", body,
				   blen);
	}
}

static int admit(const struct http_request *req, void *user, const char **body)
{
	size_t len;
	const char *path = http_request_path(req, &len);
	const char *auth = http_request_header(req, "Authorization", NULL);

	(void)user;
	(void)body;
	if (len >= 6 && memcmp(path, "/raft/", 6) == 0 &&
	    (auth == NULL || strcmp(auth, "Bearer t") != 0))
		return 401;
	return 0;
}

static void observe(const struct http_request *req, int status, void *user)
{
	(void)req;
	(void)user;
	if (status < 100 || status > 999)
		abort();
}

static void drain_at_exit(void)
{
	struct http_server_stats st;

	http_server_stats_get(server, &st);
	if (st.outstanding != 0)
		abort();
}

static void setup(void)
{
	struct http_server_opts opts = {0};
	char errmsg[256];

	opts.max_header_bytes = 2048;
	opts.max_body_bytes = 64 * 1024;
	opts.max_output_bytes = 32 * 1024;
	opts.max_total_output_bytes = 48 * 1024;
	opts.max_total_body_bytes = 96 * 1024;
	opts.max_pipeline = 8;
	opts.header_timeout_ms = 50;
	opts.body_timeout_ms = 50;
	opts.idle_timeout_ms = 200;
	opts.admit_cb = admit;
	opts.observe_cb = observe;
	if (uv_loop_init(&loop) != 0 ||
	    http_server_start(&loop, "127.0.0.1", 0, &opts, handler, NULL, &server, errmsg) != 0) {
		fprintf(stderr, "fuzz_http: cannot start: %s\n", errmsg);
		abort();
	}
	atexit(drain_at_exit);
}

static void answer_held(void)
{
	while (nheld > 0)
		http_response_send(held[--nheld], 200, "text/plain", NULL, "late", 4);
}

static unsigned open_connections(void)
{
	struct http_server_stats st;

	http_server_stats_get(server, &st);
	return st.connections;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	size_t cuts[5], ncuts = 0, off = 0;
	int sv[2];

	if (!ready) {
		setup();
		ready = 1;
	}
	if (size > 60000)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return 0;
	if (http_server_adopt_fd(server, sv[0]) != 0) {
		close(sv[1]);
		return 0;
	}
	/* up to three cut points from the first bytes (they are sent too) */
	for (size_t i = 0; i < 3 && i < size; i++)
		cuts[ncuts++] = size ? data[i] * size / 256 : 0;
	cuts[ncuts++] = size;
	for (size_t k = 0; k < ncuts; k++) {
		size_t end = cuts[k] < off ? off : cuts[k];
		while (off < end) {
			ssize_t w = send(sv[1], data + off, end - off, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w <= 0)
				break;
			off += (size_t)w;
		}
		uv_run(&loop, UV_RUN_NOWAIT);
		if (k == 1)
			answer_held(); /* some answers arrive mid-input */
	}
	shutdown(sv[1], SHUT_WR);
	for (int turns = 0; open_connections() > 0 && turns < 1000; turns++) {
		char sink[65536];
		while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
		answer_held();
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	answer_held();
	close(sv[1]);
	/* the server side closes on EOF; let its close callbacks run */
	for (int turns = 0; open_connections() > 0 && turns < 100; turns++)
		uv_run(&loop, UV_RUN_NOWAIT);
	if (open_connections() != 0)
		abort();
	return 0;
}
