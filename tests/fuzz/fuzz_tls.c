/*
 * fuzz_tls.c: libFuzzer target for TLS on the node's port (api/http/tls.c
 * and the TLS hook points of api/http/http_server.c).
 *
 * The first input byte picks a mode, the rest is the payload:
 * - 0: the payload is a hostile client's raw bytes to the real server with
 *   TLS on (a socketpair end adopted by http_server_adopt_fd, as fuzz_http):
 *   ClientHellos, records, plain HTTP, garbage, split across reads.
 * - 1: a real handshake over the socketpair (a kvd_tls_conn client on memory
 *   BIOs, pumped by hand), then the payload encrypted as the client's
 *   plaintext: HTTP requests through the server's decrypt, parse, answer,
 *   encrypt path (pipelining, backpressure with TLS buffers holding input).
 * - 2: memory BIOs only: a handshake between a client and a server
 *   kvd_tls_conn, then the payload as plaintext through the record layer
 *   (it must come out unchanged); with the payload's first byte odd, one
 *   ciphertext byte is flipped first (the server must fail cleanly); then
 *   the payload fed raw to a fresh server (handshake parser).
 *
 * The certificate (P-256, self-signed, IP SAN 127.0.0.1) is made at start
 * in the scratch directory. Whatever the bytes: no crash, no sanitizer
 * report, no leak, every connection closes, and decrypted plaintext equals
 * what was encrypted.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "api/http/http_server.h"
#include "api/http/http_server_internal.h"
#include "api/http/tls.h"
#include "tests/fuzz/fuzz_util.h"

static uv_loop_t loop;
static struct http_server *server;
static struct kvd_tls_ctx *srv_ctx, *cli_ctx;

static void handler(struct http_request *req, void *user)
{
	size_t blen;
	const char *body = http_request_body(req, &blen);

	(void)user;
	http_response_send(req, 200, "application/octet-stream", NULL, body, blen);
}

/* Writes a fresh self-signed certificate and its key into dir. */
static void make_cert(const char *dir, char *crt, char *key, size_t size)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	X509_EXTENSION *ext;
	X509V3_CTX v3;
	FILE *f;

	if (pk == NULL || x == NULL)
		abort();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1,
				   0);
	X509_set_issuer_name(x, name);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
	if (ext == NULL)
		abort();
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (X509_sign(x, pk, EVP_sha256()) == 0)
		abort();
	snprintf(crt, size, "%s/fuzz.crt", dir);
	snprintf(key, size, "%s/fuzz.key", dir);
	f = fopen(crt, "w");
	if (f == NULL || PEM_write_X509(f, x) != 1)
		abort();
	fclose(f);
	f = fopen(key, "w");
	if (f == NULL || PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) != 1)
		abort();
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
}

static void teardown(void)
{
	kvd_tls_set_process(NULL, NULL, NULL);
	kvd_tls_ctx_destroy(srv_ctx);
	kvd_tls_ctx_destroy(cli_ctx);
}

static void setup(void)
{
	struct http_server_opts opts = {0};
	char crt[PATH_MAX], key[PATH_MAX], errmsg[512];

	make_cert(fz_scratch(), crt, key, sizeof(crt));
	if (kvd_tls_ctx_create(true, crt, key, NULL, &srv_ctx, errmsg) != 0 ||
	    kvd_tls_ctx_create(false, NULL, NULL, crt, &cli_ctx, errmsg) != 0) {
		fprintf(stderr, "fuzz_tls: %s\n", errmsg);
		abort();
	}
	kvd_tls_set_process(srv_ctx, NULL, NULL);
	opts.max_body_bytes = 64 * 1024;
	opts.max_output_bytes = 32 * 1024;
	opts.max_pipeline = 8;
	/* deadlines longer than a handshake under ASan on a busy machine; inputs
	 * end with a half-close anyway, so they do not slow the run */
	opts.header_timeout_ms = 2000;
	opts.body_timeout_ms = 2000;
	opts.idle_timeout_ms = 200;
	if (uv_loop_init(&loop) != 0 ||
	    http_server_start(&loop, "127.0.0.1", 0, &opts, handler, NULL, &server, errmsg) != 0) {
		fprintf(stderr, "fuzz_tls: cannot start: %s\n", errmsg);
		abort();
	}
	atexit(teardown);
}

static unsigned open_connections(void)
{
	struct http_server_stats st;

	http_server_stats_get(server, &st);
	return st.connections;
}

static void send_all(int fd, const void *p, size_t len)
{
	const char *c = p;

	while (len > 0) {
		ssize_t w = send(fd, c, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w <= 0) {
			uv_run(&loop, UV_RUN_NOWAIT); /* let the server read */
			if (w < 0 && open_connections() == 0)
				return;
			continue;
		}
		c += w;
		len -= (size_t)w;
	}
}

/* Sends what the client TLS produced. */
static void client_flush(struct kvd_tls_conn *c, int fd)
{
	char *out = NULL;
	size_t n = kvd_tls_take(c, &out);

	if (out != NULL)
		send_all(fd, out, n);
	free(out);
}

/* Reads what the server sent into the client TLS (plaintext discarded). */
static void client_drain(struct kvd_tls_conn *c, int fd)
{
	char buf[65536];
	ssize_t r;

	while ((r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
		if (c == NULL || kvd_tls_feed(c, buf, (size_t)r, NULL) != 0)
			continue;
		while (kvd_tls_read(c, buf, sizeof(buf), NULL) > 0)
			;
	}
}

static void socket_mode(const uint8_t *data, size_t size, bool handshake)
{
	struct kvd_tls_conn *c = NULL;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return;
	/* the loop's cached time may be a whole slow input old: the handshake
	 * deadline runs from the adoption */
	uv_update_time(&loop);
	if (http_server_adopt_fd(server, sv[0]) != 0) {
		close(sv[1]);
		return;
	}
	if (handshake) {
		c = kvd_tls_conn_create(cli_ctx, NULL);
		if (c == NULL)
			abort();
		char err[512] = "";
		for (int turn = 0; turn < 200 && !kvd_tls_established(c); turn++) {
			if (kvd_tls_handshake(c, err) < 0)
				break;
			client_flush(c, sv[1]);
			uv_run(&loop, UV_RUN_NOWAIT);
			client_drain(c, sv[1]);
		}
		if (!kvd_tls_established(c)) { /* our own two ends must agree */
			fprintf(stderr, "fuzz_tls: handshake failed: %s (%u connections)\n", err,
				open_connections());
			abort();
		}
		if (kvd_tls_write(c, data, size) != 0)
			abort();
		client_flush(c, sv[1]);
	} else {
		size_t half = size / 2;
		send_all(sv[1], data, half);
		uv_run(&loop, UV_RUN_NOWAIT);
		send_all(sv[1], data + half, size - half);
	}
	uv_run(&loop, UV_RUN_NOWAIT);
	shutdown(sv[1], SHUT_WR);
	for (int turns = 0; open_connections() > 0 && turns < 1000; turns++) {
		client_drain(c, sv[1]);
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	close(sv[1]);
	for (int turns = 0; open_connections() > 0 && turns < 100; turns++)
		uv_run(&loop, UV_RUN_NOWAIT);
	kvd_tls_conn_destroy(c);
	if (open_connections() != 0)
		abort();
}

/* Moves every pending ciphertext byte from one end to the other. */
static void pass(struct kvd_tls_conn *from, struct kvd_tls_conn *to, size_t flip)
{
	char *out = NULL;
	size_t n = kvd_tls_take(from, &out);

	if (out == NULL)
		return;
	if (flip > 0 && flip <= n)
		out[flip - 1] ^= 0x20;
	kvd_tls_feed(to, out, n, NULL);
	free(out);
}

static void memory_mode(const uint8_t *data, size_t size)
{
	struct kvd_tls_conn *c = kvd_tls_conn_create(cli_ctx, NULL);
	struct kvd_tls_conn *s = kvd_tls_conn_create(srv_ctx, NULL);
	char *plain = malloc(size + 1);
	char *junk = NULL;
	size_t got = 0;
	bool corrupt = size > 0 && (data[0] & 1);
	ssize_t r = 0;

	if (c == NULL || s == NULL || plain == NULL)
		abort();
	for (int turn = 0; turn < 20 && !(kvd_tls_established(c) && kvd_tls_established(s));
	     turn++) {
		kvd_tls_handshake(c, NULL);
		pass(c, s, 0);
		kvd_tls_handshake(s, NULL);
		pass(s, c, 0);
	}
	if (!kvd_tls_established(c) || !kvd_tls_established(s))
		abort();
	if (kvd_tls_write(c, data, size) != 0)
		abort();
	pass(c, s, corrupt ? 1 + (size > 1 ? data[1] : 0) : 0);
	while (got < size && (r = kvd_tls_read(s, plain + got, size + 1 - got, NULL)) > 0)
		got += (size_t)r;
	if (!corrupt && (got != size || memcmp(plain, data, size) != 0))
		abort(); /* the record layer changed the bytes */
	kvd_tls_conn_destroy(c);
	kvd_tls_conn_destroy(s);
	/* the payload as a client's first flight to a fresh server */
	s = kvd_tls_conn_create(srv_ctx, NULL);
	if (s == NULL)
		abort();
	if (kvd_tls_feed(s, data, size, NULL) == 0)
		while (kvd_tls_read(s, plain, size + 1, NULL) > 0)
			;
	kvd_tls_take(s, &junk);
	free(junk);
	free(plain);
	kvd_tls_conn_destroy(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;

	if (!ready) {
		setup();
		ready = 1;
	}
	if (size < 1 || size > 60000)
		return 0;
	switch (data[0] % 3) {
	case 0: socket_mode(data + 1, size - 1, false); break;
	case 1: socket_mode(data + 1, size - 1, true); break;
	default: memory_mode(data + 1, size - 1); break;
	}
	return 0;
}
