/*
 * kvctl_http.h: the blocking HTTP/1.1 client of kvctl. One request per
 * connection (Connection: close), every step bounded by a deadline, bodies
 * read by Content-Length, chunked transfer coding, or until the server
 * closes; a response body can be read whole or streamed piece by piece (the
 * Server-Sent Events of GET /watch).
 *
 * The byte transport sits behind struct kvctl_transport (connect, read,
 * write, close), so a TLS layer can be plugged in later without touching
 * the HTTP framing. Only the plain TCP transport exists today.
 *
 * Single-threaded: a connection belongs to the thread that opened it.
 */
#ifndef KVD_TOOLS_KVCTL_HTTP_H
#define KVD_TOOLS_KVCTL_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* How bytes move. state: the transport's own object, created by connect.
 * read/write return bytes moved (> 0), 0 for end of stream (read only), or
 * a negative enum kvd_error; both wait at most until deadline_ms
 * (kvctl_now_ms() clock; -1 waits forever) and then give KVD_ETIMEDOUT. */
struct kvctl_transport {
	int (*connect)(const char *host, uint16_t port, int64_t deadline_ms, void **state,
		       char *errmsg, size_t errmsg_size);
	long (*read)(void *state, char *buf, size_t len, int64_t deadline_ms);
	long (*write)(void *state, const char *buf, size_t len, int64_t deadline_ms);
	void (*close)(void *state);
	/* Why the last read or write failed, when the transport knows more
	 * than the error code (TLS alerts), else NULL. May be NULL itself. */
	const char *(*why)(void *state);
};

/* Plain TCP (getaddrinfo, non-blocking connect, poll). Static, never freed. */
const struct kvctl_transport *kvctl_transport_tcp(void);

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t kvctl_now_ms(void);

/* One request. Borrowed pointers; extra_headers is NULL or complete
 * "Name: value\r\n" lines. */
struct kvctl_http_request {
	const char *method;
	const char *host; /* host name or address, no brackets */
	uint16_t port;
	const char *path; /* origin form, already percent-encoded */
	const char *extra_headers;
	const char *body; /* NULL: no body */
	size_t body_len;
	int64_t connect_timeout_ms; /* > 0: connecting gives up after this long */
};

/* A response's head. Header values are copies owned by the struct. */
struct kvctl_http_head {
	int status;
	char *location;	    /* NULL when absent */
	char *etag;	    /* NULL when absent */
	char *content_type; /* NULL when absent */
	char *compacted;    /* X-Kvd-Compacted-Revision, NULL when absent */
};

struct kvctl_http_conn;

/*
 * Connects, sends req, and reads the response head into *head. On 0 the
 * caller owns *conn (read the body with kvctl_http_body_read, then
 * kvctl_http_close) and *head (kvctl_http_head_clear). Errors: KVD_EIO
 * (could not connect or send: *sent says whether any byte of the request
 * left), KVD_ETIMEDOUT, KVD_ECORRUPT (not an HTTP response), KVD_ENOMEM;
 * errmsg (errmsg_size bytes) says what and where.
 */
int kvctl_http_open(const struct kvctl_transport *t, const struct kvctl_http_request *req,
		    int64_t deadline_ms, struct kvctl_http_conn **conn,
		    struct kvctl_http_head *head, int *sent, char *errmsg, size_t errmsg_size);

/* Reads the next piece of the body into buf (at most len bytes). Returns
 * the bytes read, 0 at the end of the body, or a negative enum kvd_error. */
long kvctl_http_body_read(struct kvctl_http_conn *c, char *buf, size_t len, int64_t deadline_ms);

/* Closes the connection and frees c; NULL does nothing. */
void kvctl_http_close(struct kvctl_http_conn *c);

/* Frees the header copies of head and zeroes it. */
void kvctl_http_head_clear(struct kvctl_http_head *head);

/* A whole response: head plus body (NUL-terminated, body_len bytes
 * without the NUL, owned by the struct). */
struct kvctl_http_response {
	struct kvctl_http_head head;
	char *body;
	size_t body_len;
};

/* kvctl_http_open, then the whole body (at most max_body bytes, else
 * KVD_ETOOBIG). Same errors as kvctl_http_open. On 0 the caller frees *resp
 * with kvctl_http_response_clear. */
int kvctl_http_do(const struct kvctl_transport *t, const struct kvctl_http_request *req,
		  int64_t deadline_ms, size_t max_body, struct kvctl_http_response *resp, int *sent,
		  char *errmsg, size_t errmsg_size);

void kvctl_http_response_clear(struct kvctl_http_response *resp);

#endif
