/*
 * tls_client.h: client-side TLS for the command-line tools (kvbench, kvctl).
 *
 * Tools take --cacert F, --cert F, --key F and --token T (API.md §7,
 * docs/operations.md). This module checks those flags the same way in every
 * tool and speaks TLS on a connected, blocking socket (tools are allowed to
 * block; the daemon uses api/http/tls.c on the libuv loop instead). The
 * server is always verified: against --cacert when given, else the system's
 * trust store, and its certificate must name the host dialled (IP SAN for an
 * IP address). A session is kept and offered again on the next connection
 * (resumption). Single-threaded use per client object.
 */
#ifndef KVD_API_COMMON_TLS_CLIENT_H
#define KVD_API_COMMON_TLS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The tools' TLS and token flags; "" when not given. */
struct kvd_tls_client_opts {
	char cacert[1024];
	char cert[1024];
	char key[1024];
	char token[256];
};

/*
 * Stores one flag (name without dashes: "cacert", "cert", "key", "token")
 * into o. Returns 1 when name is one of them (0 stored, or -1 with a line in
 * errmsg for an empty or too long value), 0 when it is not a TLS flag.
 */
int kvd_tls_client_flag(struct kvd_tls_client_opts *o, const char *name, const char *value,
			char *errmsg);

/* Checks the flags together (--cert and --key go together; files exist and
 * are readable; the token is visible ASCII). Returns 0 or KVD_EINVAL
 * (errmsg: one line). */
int kvd_tls_client_check(const struct kvd_tls_client_opts *o, char *errmsg);

/* The "Authorization: Bearer T\r\n" line for the token, or "". */
void kvd_tls_client_auth_header(const struct kvd_tls_client_opts *o, char *buf, size_t size);

struct kvd_tls_client;
struct kvd_tls_stream;

/* A client from checked options. Returns 0 (*out), KVD_EINVAL (a file is
 * unusable; errmsg says which and why) or KVD_ENOMEM. */
int kvd_tls_client_create(const struct kvd_tls_client_opts *o, struct kvd_tls_client **out,
			  char *errmsg);
void kvd_tls_client_destroy(struct kvd_tls_client *c);

/*
 * Runs the handshake on fd (connected, blocking; not owned) with host the
 * name or address dialled. Returns 0 (*out; the stream borrows fd) or
 * KVD_EIO with errmsg, e.g. "TLS handshake with 127.0.0.1 failed:
 * certificate verify failed (unable to get local issuer certificate)".
 */
int kvd_tls_client_connect(struct kvd_tls_client *c, int fd, const char *host,
			   struct kvd_tls_stream **out, char *errmsg);
/* Whether the stream's session was resumed. */
bool kvd_tls_stream_resumed(const struct kvd_tls_stream *s);
/* Blocking write of all len bytes: 0 or KVD_EIO. */
int kvd_tls_stream_write(struct kvd_tls_stream *s, const void *data, size_t len);
/* Blocking read: bytes read (> 0), 0 at the end of the stream, KVD_EIO. */
ssize_t kvd_tls_stream_read(struct kvd_tls_stream *s, void *buf, size_t cap);
/* Why the last read or write failed, as OpenSSL says (e.g. "tlsv13 alert
 * certificate required": the node refused the client's certificate), or
 * NULL when it did not say. Borrowed from s. */
const char *kvd_tls_stream_why(const struct kvd_tls_stream *s);
/* Sends close_notify, keeps the session for the next connect, frees s (the
 * descriptor stays open: the caller closes it). */
void kvd_tls_stream_close(struct kvd_tls_stream *s);

#endif
