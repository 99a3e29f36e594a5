/*
 * http_server.h: the HTTP/1.1 server on libuv + http-parser.
 *
 * Serves kvd's public API and the Raft RPCs. One server runs on one libuv
 * loop; every function here must be called on that loop's thread.
 *
 * Lifecycle of a request (struct http_request, opaque):
 * - The server owns it. It is handed to the handler once the whole request
 *   (headers and the complete, de-chunked body) has arrived.
 * - The handler must answer it exactly once with http_response_send(), either
 *   inside the callback or later (e.g. after a Raft commit). Until then every
 *   accessor below stays valid, even if the client has disconnected
 *   (http_request_is_connected() tells). After http_response_send() the
 *   request must not be touched again.
 * - Responses on one connection go out in request order, whatever the order in
 *   which the handler answers (pipelining).
 * - A request that is never answered leaks, and keeps the server's memory
 *   alive after http_server_close() has reported completion.
 * - When the client closes its end (EOF) or the connection fails, the
 *   connection is closed at once: unanswered requests are detached (answer
 *   them anyway; the answer is dropped), answered-but-unsent ones are freed.
 *
 * Connection rules: HTTP/1.1 keep-alive unless "Connection: close" (the
 * connection ends after that response; requests pipelined after it are
 * ignored) or HTTP/1.0 without "Connection: keep-alive". Protocol errors are
 * answered by the server itself, after the earlier responses, and end the
 * connection: malformed 400 "bad request\n", headers over the limit (or more
 * than 64 of them) 431 "request header fields too large\n", body over the
 * limit 413 with opts.too_large_body. A connection that must end is
 * half-closed and drained for up to 2 s so the client reads the response.
 * "Expect: 100-continue" gets its interim response once the request is at the
 * head of the connection's queue. Handlers must not block the loop.
 *
 * Framing is strict whatever the parser library allows: a CR not followed by
 * LF, a folded header line (obs-fold), anything but CRLF after chunk data,
 * Content-Length with Transfer-Encoding, a repeated or signed Content-Length
 * and a Transfer-Encoding whose last coding is not chunked all get 400, and
 * nothing after them on the connection is handled. Chunked trailers are
 * read, counted against the header limit and discarded: they never become
 * headers.
 *
 * Hostile clients: the request line and headers must arrive within
 * header_timeout_ms of the request's first byte, and a body may not pause for
 * more than body_timeout_ms (408, then the connection closes). Reading from a
 * connection pauses while its unsent output passes max_output_bytes, or
 * while it has some and all connections together pass max_total_output_bytes
 * (a client that does not read its answers stops being read, however many
 * connections it opens), and a write still
 * pending idle_timeout_ms after the connection's last activity closes it. At most max_connections
 * are open at once, fewer when the open-file limit is low: a quarter of
 * RLIMIT_NOFILE (at least 64 descriptors) stays free for the process's own
 * files (log segments, LevelDB, peers); a connection over the cap first
 * displaces the
 * longest-idle keep-alive connection with no request in progress, else it is
 * closed at accept. EMFILE at accept (the process's own files took the
 * headroom) first closes an idle connection; failing that, accepting pauses
 * for 100 ms and pending connections wait in the kernel's backlog.
 * Bodies grow as their bytes arrive: Content-Length preallocates nothing
 * (it only stops the doubling at the announced size). Bodies being received
 * share max_total_body_bytes over all connections: a request whose body
 * would pass it gets 503 "server busy" and its connection closes.
 *
 * The process must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)): libuv writes
 * with write(2), which raises it when the peer has gone.
 */
#ifndef KVD_API_HTTP_SERVER_H
#define KVD_API_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_server;
struct http_request;

/* Called on the loop thread with a complete request. See the lifecycle above. */
typedef void (*http_handler_cb)(struct http_request *req, void *user);

/*
 * Called once the request line and headers are in, before the body is read.
 * Returns the largest body, in bytes, accepted for this request; a larger
 * Content-Length (or chunked body) gets 413 and the connection is closed. Only
 * the method, path, query and headers accessors may be used here.
 */
typedef size_t (*http_body_limit_cb)(const struct http_request *req, void *user);

/*
 * Called once the request line and headers are in, before any body byte is
 * read, buffered or acknowledged with 100 Continue. Returns 0 to go on, or an
 * HTTP status (e.g. 401) that the server answers at once with *body
 * (borrowed, static; "unauthorized\n" if left NULL) before closing the
 * connection. Only the method, path, query and headers accessors may be used.
 */
typedef int (*http_admit_cb)(const struct http_request *req, void *user, const char **body);

/*
 * Called with every response just before it is queued for the client
 * (including the server's own protocol errors, whose req is then NULL), e.g.
 * to count it. status is the response's status.
 */
typedef void (*http_observe_cb)(const struct http_request *req, int status, void *user);

/* Called once by http_server_close() when every connection has closed. */
typedef void (*http_server_close_cb)(struct http_server *server, void *user);

struct http_server_opts {
	size_t max_header_bytes;	  /* url + header names and values; 0 = 16 KiB */
	size_t max_body_bytes;		  /* 0 = 1 MiB; over: 413 + too_large_body */
	http_body_limit_cb body_limit_cb; /* optional per-request body limit */
	const char *too_large_body;	  /* 413 body; NULL = "value too large\n" (borrowed) */
	/* Whether a request must see every earlier request on its connection
	 * answered before it starts, and hold back later ones until it is
	 * answered. NULL: requests with a method that is not safe (anything
	 * but GET, HEAD, OPTIONS) are ordered (RFC 9112 §9.3.2). Called once
	 * the request is complete. */
	bool (*ordered_cb)(const struct http_request *req, void *user);
	uint64_t idle_timeout_ms;      /* idle keep-alive close; 0 = 60000 ms */
	unsigned max_pipeline;	       /* unanswered requests per connection before
					  reading pauses; 0 = 128 */
	int backlog;		       /* listen(2) backlog; 0 = 65535 (somaxconn caps) */
	http_admit_cb admit_cb;	       /* optional check of the headers (auth) */
	http_observe_cb observe_cb;    /* optional hook on every response */
	void *observe_user;	       /* observe_cb's user (borrowed) */
	uint64_t header_timeout_ms;    /* request line + headers; 0 = 10000 ms */
	uint64_t body_timeout_ms;      /* longest gap between body bytes; 0 = 30000 ms */
	size_t max_output_bytes;       /* unsent output before reading pauses; 0 = 8 MiB */
	size_t max_total_output_bytes; /* the same over all connections; 0 = 64 MiB */
	size_t max_total_body_bytes;   /* bodies being received, all connections;
					  over: 503; 0 = 192 MiB */
	unsigned max_connections;      /* open at once; 0 = 20000 (see below) */
	/* Optional: called with the handler's user after each read of a
	 * connection is handled (its complete requests handed out), between
	 * the loop's other events; lets the user carry on work that finished
	 * meanwhile without waiting for the loop's next turn. */
	void (*after_read_cb)(void *user);
};

struct http_server_stats {
	uint64_t accepted;	/* connections accepted since start */
	uint64_t requests;	/* complete requests handed to the handler */
	uint64_t accept_paused; /* times accepting paused on EMFILE/ENFILE/ENOMEM */
	uint64_t refused;	/* connections closed at accept (over the cap) */
	uint64_t evicted;	/* idle connections closed to make room */
	uint64_t timed_out;	/* requests ended by the header or body deadline */
	uint32_t connections;	/* connections open now */
	uint32_t outstanding;	/* requests handed out and not yet answered */
	uint64_t kept_bytes;	/* input read from paused connections, not yet parsed */
};

/*
 * Binds host:port (SO_REUSEADDR; port 0 picks an ephemeral port), listens and
 * starts accepting. host is a numeric IPv4/IPv6 address or a name (resolved
 * synchronously: call this at startup only). opts may be NULL (defaults).
 * handler_cb(req, user) is called for every complete request.
 * On success *out is the new server, owned by the caller until
 * http_server_close() completes. Returns 0, KVD_EINVAL (bad host), KVD_EIO
 * (socket/bind/listen failed; errmsg names host:port and the reason) or
 * KVD_ENOMEM. errmsg: NULL or KVD_ERRMSG_SIZE bytes.
 */
int http_server_start(uv_loop_t *loop, const char *host, uint16_t port,
		      const struct http_server_opts *opts, http_handler_cb handler_cb, void *user,
		      struct http_server **out, char *errmsg);

/* The bound port (useful after binding port 0). */
uint16_t http_server_port(const struct http_server *server);

/* Copies the counters into *stats. */
void http_server_stats_get(const struct http_server *server, struct http_server_stats *stats);

/* Closes the listening socket; open connections keep being served. Idempotent. */
void http_server_stop_accepting(struct http_server *server);

/*
 * Graceful close: stops accepting, closes idle connections at once, stops
 * reading new requests, and lets connections with unanswered requests finish
 * writing their responses, up to timeout_ms; then closes whatever is left.
 * done_cb(server, user) (may be NULL) runs once every connection and handle
 * is closed. The server's memory is freed after done_cb returns, or later
 * when the last outstanding request is answered (its response is then
 * discarded). Call once.
 */
void http_server_close(struct http_server *server, uint64_t timeout_ms,
		       http_server_close_cb done_cb, void *user);

/* Request accessors: all returned pointers are borrowed from req and valid
 * until http_response_send(req). Strings are NUL-terminated; *len (may be
 * NULL) receives the length without the NUL. */

/* enum http_method from http_parser.h (HTTP_GET, HTTP_PUT, ...). */
int http_request_method(const struct http_request *req);
/* Method name, e.g. "GET" (static string). */
const char *http_request_method_name(const struct http_request *req);
/* Raw path (not percent-decoded), without query and fragment, e.g. "/kv/a%20b". */
const char *http_request_path(const struct http_request *req, size_t *len);
/* Raw query string after '?', "" if none. */
const char *http_request_query(const struct http_request *req, size_t *len);
/* Value of header `name` (case-insensitive; the first if repeated), or NULL. */
const char *http_request_header(const struct http_request *req, const char *name, size_t *len);
/* Complete body ("" if none; chunked bodies are reassembled). */
const char *http_request_body(const struct http_request *req, size_t *len);
/* Whether the connection stays open after this request's response. */
bool http_request_keep_alive(const struct http_request *req);
/* Loop time (uv_now, ms) when the request was handed to the handler. */
uint64_t http_request_start_ms(const struct http_request *req);
/* False once the client's connection is gone (the answer will be dropped). */
bool http_request_is_connected(const struct http_request *req);

/*
 * Answers req and releases it (req is invalid after the call, whatever the
 * result). status: 100..999. content_type: NULL for none (borrowed).
 * extra_headers: NULL or complete header lines each ending in "\r\n", e.g.
 * "Allow: GET, PUT\r\n" (copied). body: len bytes, copied (may be NULL if len
 * is 0). Content-Length, Date and Connection are added by the server; the
 * status line is HTTP/1.1. The response is written once every earlier
 * response on the connection has been.
 * Returns 0, KVD_ESHUTDOWN (client gone: response discarded) or KVD_ENOMEM
 * (the connection is closed).
 */
int http_response_send(struct http_request *req, int status, const char *content_type,
		       const char *extra_headers, const void *body, size_t len);

/*
 * Streaming responses (Server-Sent Events, API.md §13): a response with
 * headers and no length whose body is written piece by piece, ending when
 * the connection closes. It is the connection's last response: requests
 * pipelined after it are not read (input is read only to learn of EOF), and
 * the connection is exempt from the idle timeout and from eviction; a write
 * still pending after idle_timeout_ms closes it as for any response. Its
 * bytes count in max_output_bytes and max_total_output_bytes like any
 * response's; the writer bounds them (http_stream_unsent()).
 */
struct http_stream;

/* Called once when the connection of s closes by itself (client gone,
 * write error, server deadline); s is freed after the call. Not called
 * after http_stream_close(). */
typedef void (*http_stream_close_cb)(struct http_stream *s, void *user);

/*
 * Answers req (HANDLING; invalid after the call) with status and the
 * headers only: Content-Type (content_type, borrowed; may be NULL),
 * Cache-Control: no-cache, Connection: close, extra_headers (complete lines,
 * copied; may be NULL); no Content-Length. Returns 0 with *out (owned by the
 * caller until http_stream_close() or close_cb), KVD_ESHUTDOWN (client gone)
 * or KVD_ENOMEM (the connection is closed; close_cb is not called).
 */
int http_stream_start(struct http_request *req, int status, const char *content_type,
		      const char *extra_headers, http_stream_close_cb close_cb, void *user,
		      struct http_stream **out);

/* Queues len bytes (copied) of s's body and writes what the socket takes.
 * Returns 0, KVD_ESHUTDOWN (closing) or KVD_ENOMEM. It may close the
 * connection (write error): close_cb then runs before it returns. */
int http_stream_write(struct http_stream *s, const void *data, size_t len);

/* Bytes queued on s's connection and not yet taken by the kernel;
 * *server_over (may be NULL): whether the unsent bytes of every connection
 * together are at or over max_total_output_bytes. */
size_t http_stream_unsent(const struct http_stream *s, bool *server_over);

/* Ends the stream: the connection closes once its queued bytes are sent.
 * s is freed; close_cb is not called. */
void http_stream_close(struct http_stream *s);

#endif
