/*
 * tls.h: TLS for the HTTP server and the peer client, on memory BIOs.
 *
 * OpenSSL never touches a socket here: the caller feeds ciphertext read from
 * the socket in (kvd_tls_feed), takes plaintext out (kvd_tls_read), puts
 * plaintext in (kvd_tls_write) and sends the ciphertext that piles up
 * (kvd_tls_send, or kvd_tls_take for a caller with its own write path).
 * Nothing blocks, so it runs on the libuv loop. Loop thread only.
 *
 * A context (struct kvd_tls_ctx) holds the certificate, key and CA of one
 * side (server or client); kvd_tls_ctx_reload swaps in freshly read files:
 * new connections use them, open ones keep theirs (OpenSSL reference-counts
 * the old SSL_CTX). Session tickets keep working across a reload (the ticket
 * keys are carried over).
 *
 * Policy: TLS 1.2 and 1.3 only; for 1.2 only ECDHE with AES-GCM or
 * ChaCha20-Poly1305; no renegotiation, no compression; ALPN "http/1.1".
 * With a CA the server requires and verifies a client certificate (mutual
 * TLS). The client always verifies the server: against the CA if given, else
 * the system's trust store, and checks the peer's host (IP SAN for an IP
 * address, DNS name otherwise).
 */
#ifndef KVD_API_HTTP_TLS_H
#define KVD_API_HTTP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

struct kvd_tls_ctx;
struct kvd_tls_conn;

/* Where TLS events are logged (level 0 debug .. 3 error, as kvd_log_level);
 * msg is a short event, detail "key=value ..." text. */
typedef void (*kvd_tls_log_cb)(int level, const char *msg, const char *detail);

/*
 * Creates a context from PEM files. server: accepting side, else connecting.
 * cert/key: may be NULL for a client without a certificate. ca: NULL or a
 * PEM bundle (server: require client certificates signed by it; client:
 * trust only it). Returns 0 (*out set; free with kvd_tls_ctx_destroy),
 * KVD_EINVAL (a file is missing, unreadable or does not match; errmsg says
 * which and why) or KVD_ENOMEM. errmsg: NULL or KVD_ERRMSG_SIZE bytes.
 */
int kvd_tls_ctx_create(bool server, const char *cert, const char *key, const char *ca,
		       struct kvd_tls_ctx **out, char *errmsg);

/* Reads the context's files again and uses them for new connections. On
 * error (KVD_EINVAL, errmsg says why) the old ones stay in use. */
int kvd_tls_ctx_reload(struct kvd_tls_ctx *ctx, char *errmsg);

/* Frees ctx (connections made from it stay valid). NULL is fine. */
void kvd_tls_ctx_destroy(struct kvd_tls_ctx *ctx);

/*
 * The process's contexts: set once by main before the server starts (and
 * borrowed, never freed, by the HTTP server and every peer client created
 * afterwards; NULL: plain HTTP). log may be NULL.
 */
void kvd_tls_set_process(struct kvd_tls_ctx *server, struct kvd_tls_ctx *client,
			 kvd_tls_log_cb log);
struct kvd_tls_ctx *kvd_tls_process_server(void);
struct kvd_tls_ctx *kvd_tls_process_client(void);

/* Logs through the process's log hook (no-op without one). */
void kvd_tls_log(int level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A connection's TLS state. host: for a client context, the peer's host to
 * verify (and to send as SNI when it is a name); ignored for a server.
 * Returns NULL when out of memory.
 */
struct kvd_tls_conn *kvd_tls_conn_create(struct kvd_tls_ctx *ctx, const char *host);
void kvd_tls_conn_destroy(struct kvd_tls_conn *t);

/*
 * Ciphertext from the socket. A server connection whose first byte is not a
 * TLS handshake record is refused: returns KVD_EINVAL (errmsg: "plain HTTP
 * on a TLS port" or similar). Returns 0 or KVD_ENOMEM otherwise.
 */
int kvd_tls_feed(struct kvd_tls_conn *t, const void *data, size_t len, char *errmsg);

/*
 * Advances the handshake, then decrypts: returns the plaintext bytes written
 * to buf (> 0), 0 when more ciphertext is needed, or a negative code:
 * KVD_ESHUTDOWN (the peer sent close_notify), KVD_EIO (handshake or record
 * failure; errmsg says why, e.g. "certificate verify failed: unable to get
 * local issuer certificate"). Output the handshake produced is left pending
 * (send it, even after an error: it may carry the alert).
 */
ssize_t kvd_tls_read(struct kvd_tls_conn *t, char *buf, size_t cap, char *errmsg);

/* Starts or advances the handshake (a client calls this once connected).
 * Returns 1 when established, 0 in progress, KVD_EIO (errmsg) on failure. */
int kvd_tls_handshake(struct kvd_tls_conn *t, char *errmsg);
bool kvd_tls_established(const struct kvd_tls_conn *t);

/* Encrypts len plaintext bytes (the handshake must be established). Returns 0,
 * KVD_EIO or KVD_ENOMEM. */
int kvd_tls_write(struct kvd_tls_conn *t, const void *data, size_t len);
/* Queues a close_notify alert. */
void kvd_tls_close_notify(struct kvd_tls_conn *t);

/* Ciphertext bytes waiting to be sent. */
size_t kvd_tls_pending(const struct kvd_tls_conn *t);
/* Moves all pending ciphertext into a new heap buffer (*out, caller frees;
 * NULL when nothing is pending). Returns its length; *out NULL and 0 when out
 * of memory (the connection is then unusable). */
size_t kvd_tls_take(struct kvd_tls_conn *t, char **out);
/* Sends all pending ciphertext on s: uv_try_write, the rest with a uv_write
 * of its own (queued behind earlier writes). Returns 0, KVD_EIO or
 * KVD_ENOMEM. */
int kvd_tls_send(struct kvd_tls_conn *t, uv_stream_t *s);

/*
 * Client session resumption: kvd_tls_session_take returns the session of an
 * established client connection (with TLS 1.3 the ticket arrives after the
 * handshake, so take it when the connection ends), or NULL; the caller owns
 * it and frees it with kvd_tls_session_destroy (NULL is fine).
 * kvd_tls_session_offer offers s (borrowed) in t's coming handshake.
 */
struct kvd_tls_session;
struct kvd_tls_session *kvd_tls_session_take(struct kvd_tls_conn *t);
void kvd_tls_session_offer(struct kvd_tls_conn *t, struct kvd_tls_session *s);
void kvd_tls_session_destroy(struct kvd_tls_session *s);

/* Whether the session was resumed (a ticket), and the ALPN protocol chosen
 * ("" if none). */
bool kvd_tls_resumed(const struct kvd_tls_conn *t);
const char *kvd_tls_alpn(const struct kvd_tls_conn *t, char *buf, size_t size);

#endif
