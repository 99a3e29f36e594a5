/*
 * tls_client.c: blocking client TLS for the tools (see tls_client.h).
 *
 * Why separate from api/http/tls.c: tools must not link the daemon, and a
 * tool's simplest correct client is a blocking socket with SSL_set_fd. The
 * policy is the same as the daemon's peer client: TLS 1.2 or 1.3, the
 * server verified and its host checked, ALPN http/1.1.
 */
#include "api/common/tls_client.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "kvd/errors.h"

static const unsigned char ALPN_HTTP11[] = "\x08http/1.1";

struct kvd_tls_client {
	SSL_CTX *ctx;
	SSL_SESSION *session; /* last one, offered on the next connect */
};

struct kvd_tls_stream {
	struct kvd_tls_client *client;
	SSL *ssl;
	char why[160]; /* the last read or write failure's reason, or "" */
};

/* Keeps the reason of the failed call (the queued OpenSSL error, e.g. the
 * peer's "tlsv13 alert certificate required"), then clears the queue. */
static void note_failure(struct kvd_tls_stream *s)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

	snprintf(s->why, sizeof(s->why), "%s", r != NULL ? r : "");
	ERR_clear_error();
}

static int fail(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(char *errmsg, const char *fmt, ...)
{
	va_list ap;

	if (errmsg) {
		va_start(ap, fmt);
		vsnprintf(errmsg, KVD_ERRMSG_SIZE, fmt, ap);
		va_end(ap);
	}
	return KVD_EINVAL;
}

int kvd_tls_client_flag(struct kvd_tls_client_opts *o, const char *name, const char *value,
			char *errmsg)
{
	char *dst = NULL;
	size_t size = 0;

	if (strcmp(name, "cacert") == 0) {
		dst = o->cacert;
		size = sizeof(o->cacert);
	} else if (strcmp(name, "cert") == 0) {
		dst = o->cert;
		size = sizeof(o->cert);
	} else if (strcmp(name, "key") == 0) {
		dst = o->key;
		size = sizeof(o->key);
	} else if (strcmp(name, "token") == 0) {
		dst = o->token;
		size = sizeof(o->token);
	}
	if (dst == NULL)
		return 0;
	if (value == NULL || *value == '\0' || strlen(value) >= size) {
		fail(errmsg, "--%s: '%.200s' is empty or too long", name, value ? value : "");
		return -1;
	}
	snprintf(dst, size, "%s", value);
	return 1;
}

int kvd_tls_client_check(const struct kvd_tls_client_opts *o, char *errmsg)
{
	const char *files[3] = {o->cacert, o->cert, o->key};
	const char *names[3] = {"--cacert", "--cert", "--key"};

	if ((o->cert[0] == '\0') != (o->key[0] == '\0'))
		return fail(errmsg, "--cert and --key go together (one is missing)");
	for (int i = 0; i < 3; i++)
		if (files[i][0] != '\0' && access(files[i], R_OK) != 0)
			return fail(errmsg, "%s: cannot read '%.300s'", names[i], files[i]);
	for (const char *t = o->token; *t != '\0'; t++)
		if (*t < 0x21 || *t > 0x7e)
			return fail(errmsg, "--token must be visible ASCII without spaces");
	return 0;
}

void kvd_tls_client_auth_header(const struct kvd_tls_client_opts *o, char *buf, size_t size)
{
	if (o->token[0] != '\0')
		snprintf(buf, size, "Authorization: Bearer %s\r\n", o->token);
	else if (size > 0)
		buf[0] = '\0';
}

static const char *ssl_reason(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	snprintf(buf, size, "%s", r ? r : "error");
	ERR_clear_error();
	return buf;
}

int kvd_tls_client_create(const struct kvd_tls_client_opts *o, struct kvd_tls_client **out,
			  char *errmsg)
{
	struct kvd_tls_client *c = calloc(1, sizeof(*c));
	char reason[256];
	int rc = 0;

	ERR_clear_error();
	if (c == NULL || (c->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		rc = KVD_ENOMEM;
		goto out;
	}
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(c->ctx, TLS1_3_VERSION);
	SSL_CTX_set_alpn_protos(c->ctx, ALPN_HTTP11, sizeof(ALPN_HTTP11) - 1);
	SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_CLIENT);
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	if (o->cacert[0] != '\0' ? SSL_CTX_load_verify_locations(c->ctx, o->cacert, NULL) != 1
				 : SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
		rc = fail(errmsg, "--cacert %.300s: %s", o->cacert,
			  ssl_reason(reason, sizeof(reason)));
		goto out;
	}
	if (o->cert[0] != '\0' &&
	    (SSL_CTX_use_certificate_chain_file(c->ctx, o->cert) != 1 ||
	     SSL_CTX_use_PrivateKey_file(c->ctx, o->key, SSL_FILETYPE_PEM) != 1 ||
	     SSL_CTX_check_private_key(c->ctx) != 1)) {
		rc = fail(errmsg, "--cert/--key %.300s: %s", o->cert,
			  ssl_reason(reason, sizeof(reason)));
		goto out;
	}
out:
	if (rc != 0) {
		kvd_tls_client_destroy(c);
		c = NULL;
	}
	*out = c;
	return rc;
}

void kvd_tls_client_destroy(struct kvd_tls_client *c)
{
	if (c == NULL)
		return;
	SSL_SESSION_free(c->session);
	SSL_CTX_free(c->ctx);
	free(c);
}

int kvd_tls_client_connect(struct kvd_tls_client *c, int fd, const char *host,
			   struct kvd_tls_stream **out, char *errmsg)
{
	struct kvd_tls_stream *s = calloc(1, sizeof(*s));
	unsigned char ip[16];
	char reason[256];
	int rc = 0;
	long v;

	ERR_clear_error();
	if (s == NULL || (s->ssl = SSL_new(c->ctx)) == NULL) {
		rc = KVD_ENOMEM;
		goto out;
	}
	s->client = c;
	SSL_set_fd(s->ssl, fd);
	if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), host);
	} else {
		SSL_set_tlsext_host_name(s->ssl, host);
		SSL_set1_host(s->ssl, host);
	}
	if (c->session)
		SSL_set_session(s->ssl, c->session);
	if (SSL_connect(s->ssl) != 1) {
		v = SSL_get_verify_result(s->ssl);
		ssl_reason(reason, sizeof(reason));
		if (errmsg && v != X509_V_OK)
			snprintf(errmsg, KVD_ERRMSG_SIZE, "TLS handshake with %s failed: %s (%s)",
				 host, reason, X509_verify_cert_error_string(v));
		else if (errmsg)
			snprintf(errmsg, KVD_ERRMSG_SIZE, "TLS handshake with %s failed: %s", host,
				 reason);
		rc = KVD_EIO;
	}
out:
	if (rc != 0 && s) {
		SSL_free(s->ssl);
		free(s);
		s = NULL;
	}
	*out = s;
	return rc;
}

bool kvd_tls_stream_resumed(const struct kvd_tls_stream *s)
{
	return SSL_session_reused(s->ssl) == 1;
}

int kvd_tls_stream_write(struct kvd_tls_stream *s, const void *data, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t n = 0;
		if (SSL_write_ex(s->ssl, (const char *)data + done, len - done, &n) != 1) {
			note_failure(s);
			return KVD_EIO;
		}
		done += n;
	}
	return 0;
}

ssize_t kvd_tls_stream_read(struct kvd_tls_stream *s, void *buf, size_t cap)
{
	size_t n = 0;
	int e;

	if (SSL_read_ex(s->ssl, buf, cap, &n) == 1)
		return (ssize_t)n;
	e = SSL_get_error(s->ssl, 0);
	note_failure(s);
	return e == SSL_ERROR_ZERO_RETURN ? 0 : KVD_EIO;
}

const char *kvd_tls_stream_why(const struct kvd_tls_stream *s)
{
	return s->why[0] != '\0' ? s->why : NULL;
}

void kvd_tls_stream_close(struct kvd_tls_stream *s)
{
	SSL_SESSION *sess;

	if (s == NULL)
		return;
	sess = SSL_get1_session(s->ssl);
	if (sess != NULL && SSL_SESSION_is_resumable(sess)) {
		SSL_SESSION_free(s->client->session);
		s->client->session = sess;
	} else {
		SSL_SESSION_free(sess);
	}
	SSL_shutdown(s->ssl);
	ERR_clear_error();
	SSL_free(s->ssl);
	free(s);
}
