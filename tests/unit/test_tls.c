/*
 * test_tls.c: api/http/tls.c on memory BIOs (handshake, records, refusals,
 * reload), and the HTTP server and peer client speaking TLS to each other on
 * one libuv loop over real sockets on 127.0.0.1. Certificates (P-256,
 * self-signed, IP SAN 127.0.0.1) are made in a temporary directory.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "api/http/http_client.h"
#include "api/http/http_server.h"
#include "api/http/tls.h"
#include "kvd/errors.h"

static char dir[] = "/tmp/kvd-test-tls-XXXXXX";
static char a_crt[256], a_key[256], b_crt[256], b_key[256];

/* Writes a self-signed certificate for cn with subjectAltName san. */
static void make_cert(const char *name, const char *san, char *crt, char *key)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_EXTENSION *ext;
	X509V3_CTX v3;
	FILE *f;

	ck_assert_ptr_nonnull(pk);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)name, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
	ck_assert_ptr_nonnull(ext);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ck_assert_int_ne(X509_sign(x, pk, EVP_sha256()), 0);
	snprintf(crt, 256, "%s/%s.crt", dir, name);
	snprintf(key, 256, "%s/%s.key", dir, name);
	f = fopen(crt, "w");
	ck_assert_int_eq(PEM_write_X509(f, x), 1);
	fclose(f);
	f = fopen(key, "w");
	ck_assert_int_eq(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
}

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	make_cert("a", "IP:127.0.0.1", a_crt, a_key);
	make_cert("b", "IP:127.0.0.1", b_crt, b_key);
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
	strcpy(dir, "/tmp/kvd-test-tls-XXXXXX");
}

/* Moves the pending ciphertext of from into to. */
static void pass(struct kvd_tls_conn *from, struct kvd_tls_conn *to)
{
	char *out = NULL;
	size_t n = kvd_tls_take(from, &out);

	if (out != NULL)
		ck_assert_int_eq(kvd_tls_feed(to, out, n, NULL), 0);
	free(out);
}

/* Runs a handshake between c and s; returns the client's last result. */
static int handshake(struct kvd_tls_conn *c, struct kvd_tls_conn *s, char *cerr, char *serr)
{
	int rc = 0, srv = 0;

	for (int i = 0; i < 10 && rc >= 0 && srv >= 0 && !(rc == 1 && srv == 1); i++) {
		rc = kvd_tls_handshake(c, cerr);
		pass(c, s);
		srv = kvd_tls_handshake(s, serr);
		pass(s, c);
	}
	return rc < 0 ? rc : srv < 0 ? srv : rc;
}

START_TEST(test_kvd_tls_read_returns_what_the_peer_wrote)
{
	struct kvd_tls_ctx *sc, *cc;
	struct kvd_tls_conn *c, *s;
	char buf[64], alpn[16];

	ck_assert_int_eq(kvd_tls_ctx_create(true, a_crt, a_key, b_crt, &sc, NULL), 0);
	ck_assert_int_eq(kvd_tls_ctx_create(false, b_crt, b_key, a_crt, &cc, NULL), 0);
	c = kvd_tls_conn_create(cc, "127.0.0.1");
	s = kvd_tls_conn_create(sc, NULL);
	ck_assert_int_eq(handshake(c, s, NULL, NULL), 1);
	ck_assert(kvd_tls_established(s));
	ck_assert_str_eq(kvd_tls_alpn(s, alpn, sizeof(alpn)), "http/1.1");
	ck_assert_int_eq(kvd_tls_write(c, "GET / HTTP/1.1\r\n\r\n", 18), 0);
	pass(c, s);
	ck_assert_int_eq(kvd_tls_read(s, buf, sizeof(buf), NULL), 18);
	ck_assert_int_eq(memcmp(buf, "GET / HTTP/1.1\r\n\r\n", 18), 0);
	ck_assert_int_eq(kvd_tls_read(s, buf, sizeof(buf), NULL), 0); /* nothing more yet */
	kvd_tls_close_notify(c);
	pass(c, s);
	ck_assert_int_eq(kvd_tls_read(s, buf, sizeof(buf), NULL), KVD_ESHUTDOWN);
	kvd_tls_conn_destroy(c);
	kvd_tls_conn_destroy(s);
	kvd_tls_ctx_destroy(sc);
	kvd_tls_ctx_destroy(cc);
}
END_TEST

START_TEST(test_kvd_tls_feed_refuses_plain_http)
{
	struct kvd_tls_ctx *sc;
	struct kvd_tls_conn *s;
	char err[KVD_ERRMSG_SIZE] = "";

	ck_assert_int_eq(kvd_tls_ctx_create(true, a_crt, a_key, NULL, &sc, NULL), 0);
	s = kvd_tls_conn_create(sc, NULL);
	ck_assert_int_eq(kvd_tls_feed(s, "GET / HTTP/1.1\r\n", 16, err), KVD_EINVAL);
	ck_assert_str_eq(err, "plain HTTP on a TLS port");
	kvd_tls_conn_destroy(s);
	kvd_tls_ctx_destroy(sc);
}
END_TEST

START_TEST(test_kvd_tls_handshake_fails_on_wrong_host_and_untrusted_client)
{
	struct kvd_tls_ctx *sc, *cc, *cc_untrusted;
	struct kvd_tls_conn *c, *s;
	char cerr[KVD_ERRMSG_SIZE] = "", serr[KVD_ERRMSG_SIZE] = "";

	ck_assert_int_eq(kvd_tls_ctx_create(true, a_crt, a_key, b_crt, &sc, NULL), 0);
	ck_assert_int_eq(kvd_tls_ctx_create(false, b_crt, b_key, a_crt, &cc, NULL), 0);
	/* the certificate names 127.0.0.1, not 10.9.8.7 */
	c = kvd_tls_conn_create(cc, "10.9.8.7");
	s = kvd_tls_conn_create(sc, NULL);
	ck_assert_int_eq(handshake(c, s, cerr, serr), KVD_EIO);
	ck_assert_ptr_nonnull(strstr(cerr, "certificate verify failed"));
	ck_assert_ptr_nonnull(strstr(cerr, "IP address mismatch"));
	kvd_tls_conn_destroy(c);
	kvd_tls_conn_destroy(s);
	/* a client presenting a (self-signed) certificate the server does not trust */
	ck_assert_int_eq(kvd_tls_ctx_create(false, a_crt, a_key, a_crt, &cc_untrusted, NULL), 0);
	c = kvd_tls_conn_create(cc_untrusted, "127.0.0.1");
	s = kvd_tls_conn_create(sc, NULL);
	serr[0] = '\0';
	handshake(c, s, cerr, serr);
	ck_assert(!kvd_tls_established(s));
	ck_assert_ptr_nonnull(strstr(serr, "certificate verify failed"));
	kvd_tls_conn_destroy(c);
	kvd_tls_conn_destroy(s);
	kvd_tls_ctx_destroy(sc);
	kvd_tls_ctx_destroy(cc);
	kvd_tls_ctx_destroy(cc_untrusted);
}
END_TEST

START_TEST(test_kvd_tls_ctx_create_rejects_mismatched_key)
{
	struct kvd_tls_ctx *sc = NULL;
	char err[KVD_ERRMSG_SIZE] = "";

	ck_assert_int_eq(kvd_tls_ctx_create(true, a_crt, b_key, NULL, &sc, err), KVD_EINVAL);
	ck_assert_ptr_null(sc);
	ck_assert_ptr_nonnull(strstr(err, "does not match the certificate"));
	ck_assert_int_eq(kvd_tls_ctx_create(true, "/nonexistent.crt", a_key, NULL, &sc, err),
			 KVD_EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent.crt"));
}
END_TEST

START_TEST(test_kvd_tls_ctx_reload_keeps_old_files_on_error)
{
	struct kvd_tls_ctx *sc, *cc;
	struct kvd_tls_conn *c, *s, *open_c, *open_s;
	char err[KVD_ERRMSG_SIZE] = "", live_crt[300], live_key[300], cmd[1024], buf[8];

	snprintf(live_crt, sizeof(live_crt), "%s/live.crt", dir);
	snprintf(live_key, sizeof(live_key), "%s/live.key", dir);
	snprintf(cmd, sizeof(cmd), "cp %s %s && cp %s %s", a_crt, live_crt, a_key, live_key);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(kvd_tls_ctx_create(true, live_crt, live_key, NULL, &sc, NULL), 0);
	ck_assert_int_eq(kvd_tls_ctx_create(false, NULL, NULL, a_crt, &cc, NULL), 0);
	open_c = kvd_tls_conn_create(cc, "127.0.0.1");
	open_s = kvd_tls_conn_create(sc, NULL);
	ck_assert_int_eq(handshake(open_c, open_s, NULL, NULL), 1);
	/* a broken key: the reload fails, the old certificate stays */
	snprintf(cmd, sizeof(cmd), "echo junk > %s", live_key);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(kvd_tls_ctx_reload(sc, err), KVD_EINVAL);
	c = kvd_tls_conn_create(cc, "127.0.0.1");
	s = kvd_tls_conn_create(sc, NULL);
	ck_assert_int_eq(handshake(c, s, NULL, NULL), 1);
	kvd_tls_conn_destroy(c);
	kvd_tls_conn_destroy(s);
	/* certificate b: new handshakes present it (a client trusting only a
	 * fails), the connection opened before keeps working */
	snprintf(cmd, sizeof(cmd), "cp %s %s && cp %s %s", b_crt, live_crt, b_key, live_key);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(kvd_tls_ctx_reload(sc, err), 0);
	c = kvd_tls_conn_create(cc, "127.0.0.1");
	s = kvd_tls_conn_create(sc, NULL);
	ck_assert_int_eq(handshake(c, s, err, NULL), KVD_EIO);
	kvd_tls_conn_destroy(c);
	kvd_tls_conn_destroy(s);
	ck_assert_int_eq(kvd_tls_write(open_c, "still", 5), 0);
	pass(open_c, open_s);
	ck_assert_int_eq(kvd_tls_read(open_s, buf, sizeof(buf), NULL), 5);
	kvd_tls_conn_destroy(open_c);
	kvd_tls_conn_destroy(open_s);
	kvd_tls_ctx_destroy(sc);
	kvd_tls_ctx_destroy(cc);
}
END_TEST

/* ---- server and peer client over sockets ---- */

struct result {
	int calls, status;
	char body[64];
};

static void on_response(int status, const char *body, size_t len, void *user)
{
	struct result *r = user;

	r->calls++;
	r->status = status;
	if (body && len < sizeof(r->body)) {
		memcpy(r->body, body, len);
		r->body[len] = '\0';
	}
}

static void echo(struct http_request *req, void *user)
{
	size_t blen;
	const char *body = http_request_body(req, &blen);

	(void)user;
	http_response_send(req, 200, "text/plain", NULL, body, blen);
}

static void run_until(uv_loop_t *loop, const struct result *r, int calls)
{
	for (int i = 0; i < 2000 && r->calls < calls; i++)
		uv_run(loop, UV_RUN_ONCE);
}

static void server_closed(struct http_server *s, void *user)
{
	(void)s;
	(void)user;
}

/* client_cert/ca: what the peer client presents and trusts. */
static void roundtrip(const char *client_crt, const char *client_key, const char *client_ca,
		      int want_status)
{
	struct kvd_tls_ctx *sc, *cc;
	struct http_server *srv;
	struct http_client *cl;
	struct result r = {0};
	char addr[64];
	uv_loop_t loop;

	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_int_eq(kvd_tls_ctx_create(true, a_crt, a_key, b_crt, &sc, NULL), 0);
	ck_assert_int_eq(kvd_tls_ctx_create(false, client_crt, client_key, client_ca, &cc, NULL),
			 0);
	kvd_tls_set_process(sc, cc, NULL);
	ck_assert_int_eq(http_server_start(&loop, "127.0.0.1", 0, NULL, echo, NULL, &srv, NULL), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", http_server_port(srv));
	ck_assert_int_eq(http_client_create(&loop, addr, NULL, &cl, NULL), 0);
	ck_assert_int_eq(
	    http_client_request(cl, "POST", "/x", NULL, "hello", 5, 5000, on_response, &r), 0);
	run_until(&loop, &r, 1);
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.status, want_status);
	if (want_status == 200)
		ck_assert_str_eq(r.body, "hello");
	http_client_close(cl);
	http_server_close(srv, 100, server_closed, NULL);
	while (uv_run(&loop, UV_RUN_DEFAULT) != 0)
		;
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	kvd_tls_set_process(NULL, NULL, NULL);
	kvd_tls_ctx_destroy(sc);
	kvd_tls_ctx_destroy(cc);
}

START_TEST(test_http_client_request_over_mutual_tls)
{
	roundtrip(b_crt, b_key, a_crt, 200);
}
END_TEST

START_TEST(test_http_client_request_fails_when_server_not_trusted)
{
	roundtrip(b_crt, b_key, b_crt, KVD_EIO);
}
END_TEST

START_TEST(test_http_client_request_fails_without_client_certificate)
{
	roundtrip(NULL, NULL, a_crt, KVD_EIO);
}
END_TEST

START_TEST(test_http_client_reconnect_resumes_the_session)
{
	struct kvd_tls_ctx *sc, *cc;
	struct http_server *srv;
	struct http_client *cl;
	struct http_client_stats st;
	struct result r1 = {0}, r2 = {0};
	char addr[64];
	uv_loop_t loop;

	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_int_eq(kvd_tls_ctx_create(true, a_crt, a_key, b_crt, &sc, NULL), 0);
	ck_assert_int_eq(kvd_tls_ctx_create(false, b_crt, b_key, a_crt, &cc, NULL), 0);
	kvd_tls_set_process(sc, cc, NULL);
	ck_assert_int_eq(http_server_start(&loop, "127.0.0.1", 0, NULL, echo, NULL, &srv, NULL), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", http_server_port(srv));
	ck_assert_int_eq(http_client_create(&loop, addr, NULL, &cl, NULL), 0);
	/* the server ends the first connection after its answer */
	ck_assert_int_eq(http_client_request(cl, "POST", "/x", "Connection: close\r\n", "one", 3,
					     5000, on_response, &r1),
			 0);
	run_until(&loop, &r1, 1);
	ck_assert_int_eq(r1.status, 200);
	ck_assert_int_eq(
	    http_client_request(cl, "POST", "/x", NULL, "two", 3, 5000, on_response, &r2), 0);
	run_until(&loop, &r2, 1);
	ck_assert_int_eq(r2.status, 200);
	ck_assert_str_eq(r2.body, "two");
	http_client_stats_get(cl, &st);
	ck_assert_uint_eq(st.connects, 2);
	ck_assert_uint_eq(st.tls_resumed, 1);
	http_client_close(cl);
	http_server_close(srv, 100, server_closed, NULL);
	while (uv_run(&loop, UV_RUN_DEFAULT) != 0)
		;
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	kvd_tls_set_process(NULL, NULL, NULL);
	kvd_tls_ctx_destroy(sc);
	kvd_tls_ctx_destroy(cc);
}
END_TEST

static Suite *tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("tls");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_kvd_tls_read_returns_what_the_peer_wrote);
	tcase_add_test(tc, test_kvd_tls_feed_refuses_plain_http);
	tcase_add_test(tc, test_kvd_tls_handshake_fails_on_wrong_host_and_untrusted_client);
	tcase_add_test(tc, test_kvd_tls_ctx_create_rejects_mismatched_key);
	tcase_add_test(tc, test_kvd_tls_ctx_reload_keeps_old_files_on_error);
	tcase_add_test(tc, test_http_client_request_over_mutual_tls);
	tcase_add_test(tc, test_http_client_request_fails_when_server_not_trusted);
	tcase_add_test(tc, test_http_client_request_fails_without_client_certificate);
	tcase_add_test(tc, test_http_client_reconnect_resumes_the_session);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(tls_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
