/*
 * tls.c: TLS state machine on memory BIOs for the libuv server and client.
 *
 * Why memory BIOs: the sockets belong to libuv (non-blocking, read and write
 * callbacks), so OpenSSL must never read or write a descriptor itself. Each
 * connection has a read BIO (ciphertext in, filled from libuv's read
 * callback) and a write BIO (ciphertext out, drained into libuv writes).
 *
 * Why one SSL_CTX swapped whole on reload: loading a new certificate into a
 * live SSL_CTX would leave it half-updated if the key does not match; a new
 * SSL_CTX is built and checked first, then replaces the old one. SSL objects
 * hold a reference to the SSL_CTX they were made from, so open connections
 * are not disturbed. The session ticket keys are copied so tickets issued
 * before a reload still resume.
 */
#include "api/http/tls.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "kvd/errors.h"

#define TLS_RECORD_HANDSHAKE 0x16
#define TICKET_KEYS_BYTES    80 /* OpenSSL's name + HMAC + AES keys */

/* TLS 1.2 suites: forward secrecy and AEAD only. (TLS 1.3 suites are all
 * AEAD; OpenSSL's defaults are kept.) */
static const char CIPHERS_12[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
				 "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
				 "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const unsigned char ALPN_HTTP11[] = "\x08http/1.1";
static const unsigned char SESSION_CTX_ID[] = "kvd";

struct kvd_tls_ctx {
	SSL_CTX *ssl; /* the current one; replaced on reload */
	bool server;
	char *cert, *key, *ca; /* paths, NULL if not given */
};

struct kvd_tls_conn {
	SSL *ssl;
	BIO *rbio, *wbio; /* owned by ssl */
	bool server, seen_input, established;
};

/* A uv_write of ciphertext with its own buffer, freed in its callback. */
struct tls_wreq {
	uv_write_t w;
	size_t len;
	char data[];
};

static struct kvd_tls_ctx *process_server, *process_client;
static kvd_tls_log_cb process_log;

void kvd_tls_set_process(struct kvd_tls_ctx *server, struct kvd_tls_ctx *client, kvd_tls_log_cb log)
{
	process_server = server;
	process_client = client;
	process_log = log;
}

struct kvd_tls_ctx *kvd_tls_process_server(void)
{
	return process_server;
}

struct kvd_tls_ctx *kvd_tls_process_client(void)
{
	return process_client;
}

void kvd_tls_log(int level, const char *msg, const char *fmt, ...)
{
	char detail[1024];
	va_list ap;

	if (process_log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	process_log(level, msg, detail);
}

/* The reason of the oldest queued OpenSSL error, or fallback; clears the queue. */
static const char *err_reason(const char *fallback, char *buf, size_t size)
{
	unsigned long e = ERR_get_error();

	if (e == 0) {
		snprintf(buf, size, "%s", fallback);
	} else {
		const char *r = ERR_reason_error_string(e);
		snprintf(buf, size, "%s", r ? r : fallback);
	}
	ERR_clear_error();
	return buf;
}

static int ctx_fail(char *errmsg, const char *what, const char *path)
{
	char reason[256];

	if (errmsg)
		snprintf(errmsg, KVD_ERRMSG_SIZE, "TLS: cannot use %s %s: %s", what,
			 path ? path : "", err_reason("error", reason, sizeof(reason)));
	return KVD_EINVAL;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned char *o = NULL;

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&o, outlen, ALPN_HTTP11, sizeof(ALPN_HTTP11) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK; /* no ALPN answer; the client may go on */
	*out = o;
	return SSL_TLSEXT_ERR_OK;
}

/* Builds an SSL_CTX from the context's files. Returns 0 or KVD_EINVAL/ENOMEM. */
static int ctx_build(const struct kvd_tls_ctx *c, SSL_CTX **out, char *errmsg)
{
	SSL_CTX *s = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
	int rc = 0;

	ERR_clear_error();
	if (s == NULL) {
		rc = KVD_ENOMEM;
		goto out;
	}
	SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(s, TLS1_3_VERSION);
	SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
				   SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(s, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(s, CIPHERS_12) != 1) {
		rc = ctx_fail(errmsg, "cipher list", NULL);
		goto out;
	}
	if (c->cert && SSL_CTX_use_certificate_chain_file(s, c->cert) != 1) {
		rc = ctx_fail(errmsg, "certificate", c->cert);
		goto out;
	}
	if (c->key && SSL_CTX_use_PrivateKey_file(s, c->key, SSL_FILETYPE_PEM) != 1) {
		if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
			rc = ctx_fail(errmsg, "key (it does not match the certificate)", c->key);
		else
			rc = ctx_fail(errmsg, "key", c->key);
		goto out;
	}
	if (c->cert && c->key && SSL_CTX_check_private_key(s) != 1) {
		rc = ctx_fail(errmsg, "key (it does not match the certificate)", c->key);
		goto out;
	}
	if (c->ca) {
		if (SSL_CTX_load_verify_locations(s, c->ca, NULL) != 1) {
			rc = ctx_fail(errmsg, "CA file", c->ca);
			goto out;
		}
	} else if (!c->server) {
		SSL_CTX_set_default_verify_paths(s);
	}
	if (c->server) {
		SSL_CTX_set_alpn_select_cb(s, alpn_select, NULL);
		SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_SERVER);
		SSL_CTX_set_session_id_context(s, SESSION_CTX_ID, sizeof(SESSION_CTX_ID) - 1);
		if (c->ca) {
			STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->ca);
			if (names)
				SSL_CTX_set_client_CA_list(s, names);
			SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
					   NULL);
		}
	} else {
		SSL_CTX_set_alpn_protos(s, ALPN_HTTP11, sizeof(ALPN_HTTP11) - 1);
		SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
	}
out:
	if (rc != 0) {
		SSL_CTX_free(s);
		s = NULL;
	}
	*out = s;
	return rc;
}

static char *dup_or_null(const char *s, bool *oom)
{
	char *d = NULL;

	if (s) {
		d = strdup(s);
		if (!d)
			*oom = true;
	}
	return d;
}

int kvd_tls_ctx_create(bool server, const char *cert, const char *key, const char *ca,
		       struct kvd_tls_ctx **out, char *errmsg)
{
	struct kvd_tls_ctx *c = calloc(1, sizeof(*c));
	bool oom = c == NULL;
	int rc;

	if (c) {
		c->server = server;
		c->cert = dup_or_null(cert, &oom);
		c->key = dup_or_null(key, &oom);
		c->ca = dup_or_null(ca, &oom);
	}
	rc = oom ? KVD_ENOMEM : ctx_build(c, &c->ssl, errmsg);
	if (rc != 0) {
		kvd_tls_ctx_destroy(c);
		c = NULL;
	}
	*out = c;
	return rc;
}

int kvd_tls_ctx_reload(struct kvd_tls_ctx *ctx, char *errmsg)
{
	unsigned char keys[TICKET_KEYS_BYTES];
	SSL_CTX *s;
	int rc = ctx_build(ctx, &s, errmsg);

	if (rc == 0) {
		if (ctx->server &&
		    SSL_CTX_get_tlsext_ticket_keys(ctx->ssl, keys, sizeof(keys)) == 1)
			SSL_CTX_set_tlsext_ticket_keys(s, keys, sizeof(keys));
		SSL_CTX_free(ctx->ssl); /* open connections keep their reference */
		ctx->ssl = s;
	}
	return rc;
}

void kvd_tls_ctx_destroy(struct kvd_tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl);
	free(ctx->cert);
	free(ctx->key);
	free(ctx->ca);
	free(ctx);
}

/* ---- connections ---- */

struct kvd_tls_conn *kvd_tls_conn_create(struct kvd_tls_ctx *ctx, const char *host)
{
	struct kvd_tls_conn *t = calloc(1, sizeof(*t));
	unsigned char ip[16];

	if (!t)
		goto out;
	t->server = ctx->server;
	t->ssl = SSL_new(ctx->ssl);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->ssl || !t->rbio || !t->wbio) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		SSL_free(t->ssl);
		free(t);
		t = NULL;
		goto out;
	}
	BIO_set_mem_eof_return(t->rbio, -1); /* empty: "retry", not EOF */
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	if (t->server) {
		SSL_set_accept_state(t->ssl);
	} else {
		SSL_set_connect_state(t->ssl);
		if (host && *host) {
			bool is_ip =
			    inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
			if (is_ip) {
				X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host);
			} else {
				SSL_set_tlsext_host_name(t->ssl, host);
				SSL_set1_host(t->ssl, host);
			}
		}
	}
out:
	return t;
}

void kvd_tls_conn_destroy(struct kvd_tls_conn *t)
{
	if (!t)
		return;
	SSL_free(t->ssl); /* frees both BIOs */
	free(t);
}

int kvd_tls_feed(struct kvd_tls_conn *t, const void *data, size_t len, char *errmsg)
{
	const unsigned char *p = data;
	int rc = 0;

	if (t->server && !t->seen_input && len > 0 && p[0] != TLS_RECORD_HANDSHAKE) {
		bool http = len >= 3 && p[0] >= 'A' && p[0] <= 'Z' && p[1] >= 'A' && p[1] <= 'Z';
		if (errmsg)
			snprintf(errmsg, KVD_ERRMSG_SIZE, "%s",
				 http ? "plain HTTP on a TLS port"
				      : "first bytes are not a TLS handshake");
		rc = KVD_EINVAL;
	} else {
		t->seen_input = true;
		if (len > 0 && BIO_write(t->rbio, data, (int)len) != (int)len)
			rc = KVD_ENOMEM;
	}
	return rc;
}

/* Describes why a handshake or record operation failed. */
static void describe_failure(struct kvd_tls_conn *t, int ret, char *errmsg)
{
	char reason[256];
	long v = SSL_get_verify_result(t->ssl);
	int e = SSL_get_error(t->ssl, ret);

	err_reason(e == SSL_ERROR_SYSCALL ? "unexpected end of stream" : "protocol error", reason,
		   sizeof(reason));
	if (errmsg && v != X509_V_OK && !t->established)
		snprintf(errmsg, KVD_ERRMSG_SIZE, "%s: %s", reason,
			 X509_verify_cert_error_string(v));
	else if (errmsg)
		snprintf(errmsg, KVD_ERRMSG_SIZE, "%s", reason);
}

int kvd_tls_handshake(struct kvd_tls_conn *t, char *errmsg)
{
	int ret, e, rc = 1;

	if (!t->established) {
		ERR_clear_error();
		ret = SSL_do_handshake(t->ssl);
		e = SSL_get_error(t->ssl, ret);
		if (ret == 1) {
			t->established = true;
		} else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			rc = 0;
		} else {
			describe_failure(t, ret, errmsg);
			rc = KVD_EIO;
		}
	}
	return rc;
}

bool kvd_tls_established(const struct kvd_tls_conn *t)
{
	return t->established;
}

ssize_t kvd_tls_read(struct kvd_tls_conn *t, char *buf, size_t cap, char *errmsg)
{
	ssize_t rc = kvd_tls_handshake(t, errmsg);
	int ret, e;

	if (rc == 1) {
		ERR_clear_error();
		ret = SSL_read(t->ssl, buf, cap > 0x40000000 ? 0x40000000 : (int)cap);
		e = SSL_get_error(t->ssl, ret);
		if (ret > 0) {
			rc = ret;
		} else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			rc = 0;
		} else if (e == SSL_ERROR_ZERO_RETURN) {
			rc = KVD_ESHUTDOWN;
		} else {
			describe_failure(t, ret, errmsg);
			rc = KVD_EIO;
		}
	}
	return rc;
}

int kvd_tls_write(struct kvd_tls_conn *t, const void *data, size_t len)
{
	const char *p = data;
	int rc = 0;

	ERR_clear_error();
	while (len > 0 && rc == 0) {
		int chunk = len > 0x40000000 ? 0x40000000 : (int)len;
		int ret = SSL_write(t->ssl, p, chunk);
		if (ret <= 0) {
			ERR_clear_error();
			rc = KVD_EIO;
		} else {
			p += ret;
			len -= (size_t)ret;
		}
	}
	return rc;
}

void kvd_tls_close_notify(struct kvd_tls_conn *t)
{
	ERR_clear_error();
	if (t->established)
		SSL_shutdown(t->ssl);
	ERR_clear_error();
}

size_t kvd_tls_pending(const struct kvd_tls_conn *t)
{
	return BIO_ctrl_pending(t->wbio);
}

size_t kvd_tls_take(struct kvd_tls_conn *t, char **out)
{
	size_t n = BIO_ctrl_pending(t->wbio);
	char *b = n > 0 ? malloc(n) : NULL;

	if (b != NULL && BIO_read(t->wbio, b, (int)n) != (int)n) {
		free(b);
		b = NULL;
	}
	*out = b;
	return b != NULL ? n : 0;
}

static void on_tls_write(uv_write_t *w, int status)
{
	(void)status; /* a failed write shows up as a read error too */
	free(w);
}

int kvd_tls_send(struct kvd_tls_conn *t, uv_stream_t *s)
{
	size_t n = BIO_ctrl_pending(t->wbio);
	struct tls_wreq *r = NULL;
	uv_buf_t b;
	int w, rc = 0;

	if (n == 0)
		goto out;
	r = malloc(sizeof(*r) + n);
	if (!r) {
		rc = KVD_ENOMEM;
		goto out;
	}
	if (BIO_read(t->wbio, r->data, (int)n) != (int)n) {
		rc = KVD_EIO;
		goto out_free;
	}
	r->len = n;
	b = uv_buf_init(r->data, (unsigned)n);
	w = uv_try_write(s, &b, 1);
	if (w == UV_EAGAIN || w == UV_ENOSYS)
		w = 0;
	if (w < 0) {
		rc = KVD_EIO;
		goto out_free;
	}
	if ((size_t)w == n)
		goto out_free; /* all of it went out now */
	b.base += w;
	b.len -= (size_t)w;
	if (uv_write(&r->w, s, &b, 1, on_tls_write) != 0) {
		rc = KVD_EIO;
		goto out_free;
	}
	goto out; /* on_tls_write frees r */
out_free:
	free(r);
out:
	return rc;
}

struct kvd_tls_session *kvd_tls_session_take(struct kvd_tls_conn *t)
{
	SSL_SESSION *s = t->established ? SSL_get1_session(t->ssl) : NULL;

	if (s != NULL && SSL_SESSION_is_resumable(s) != 1) {
		SSL_SESSION_free(s);
		s = NULL;
	}
	return (struct kvd_tls_session *)s;
}

void kvd_tls_session_offer(struct kvd_tls_conn *t, struct kvd_tls_session *s)
{
	if (s != NULL)
		SSL_set_session(t->ssl, (SSL_SESSION *)s);
}

void kvd_tls_session_destroy(struct kvd_tls_session *s)
{
	SSL_SESSION_free((SSL_SESSION *)s);
}

bool kvd_tls_resumed(const struct kvd_tls_conn *t)
{
	return SSL_session_reused(t->ssl) == 1;
}

const char *kvd_tls_alpn(const struct kvd_tls_conn *t, char *buf, size_t size)
{
	const unsigned char *p = NULL;
	unsigned int n = 0;

	SSL_get0_alpn_selected(t->ssl, &p, &n);
	snprintf(buf, size, "%.*s", (int)n, p ? (const char *)p : "");
	return buf;
}
