/*
 * http_client.h: a keep-alive, pipelining HTTP/1.1 client for one peer.
 *
 * kvd keeps one client per peer address for the Raft RPCs (and for requests
 * a node forwards to the leader). Requests are written in submission order on
 * one persistent connection and may be pipelined; responses are matched in
 * order. A connection that fails is replaced on demand; while the peer
 * refuses connections, attempts are spaced by an exponential backoff. Nothing
 * here blocks the loop. All functions run on the loop's thread.
 *
 * Failure semantics:
 * - A failed connection attempt (refused, unresolvable, or not established
 *   within connect_timeout_ms) fails every request waiting for it with
 *   KVD_EIO at once; the next attempt waits backoff_min_ms, doubling up to
 *   backoff_max_ms, and the delay resets on a successful connect. Requests
 *   submitted meanwhile wait for that next attempt (or their timeout).
 * - A request that times out after being written resets the connection; the
 *   other requests in flight on it fail with KVD_EIO. Nothing is retried:
 *   a request is sent at most once.
 * - One connection carries everything, in order: a slow request (a large
 *   snapshot chunk, a long-polling call) delays those behind it. Use a
 * separate client for traffic that must not wait behind another.
 * - TLS: with a process client context (api/http/tls.h) every connection
 *   speaks TLS; the handshake is part of connecting (a refused one is a
 *   failed attempt), the peer's certificate must name its host, and a
 *   reconnection offers the last connection's session (resumption).
 */
#ifndef KVD_API_HTTP_CLIENT_H
#define KVD_API_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_client;

/*
 * Completion of one request, called exactly once, never from inside
 * http_client_request(). status: the HTTP status (100..999), or a negative
 * code: KVD_ETIMEDOUT (no full answer within the timeout; the connection was
 * reset), KVD_EIO (could not connect, or the connection broke before the
 * answer), KVD_EBUSY (the queue was full), KVD_ECORRUPT (malformed response),
 * KVD_ETOOBIG (response body over the limit), KVD_ESHUTDOWN (the client was
 * closed). body/len: the response body, borrowed and valid only during the
 * call (NULL/0 on errors; NUL-terminated otherwise).
 */
typedef void (*http_client_cb)(int status, const char *body, size_t len, void *user);

struct http_client_opts {
	uint64_t connect_timeout_ms; /* 0 = 1000 ms */
	uint64_t backoff_min_ms;     /* first delay after a failed connect; 0 = 50 ms */
	uint64_t backoff_max_ms;     /* delay cap, doubling from min; 0 = 1000 ms */
	unsigned max_queue;	     /* requests queued or in flight; 0 = 1024 */
	size_t max_response_bytes;   /* response body limit; 0 = 64 MiB */
};

struct http_client_stats {
	uint64_t connect_attempts; /* connection attempts started */
	uint64_t connects;	   /* attempts that succeeded */
	uint64_t responses;	   /* responses delivered */
	uint64_t failures;	   /* requests completed with a negative status */
	uint64_t tls_resumed;	   /* TLS connections that resumed a session */
};

/*
 * Creates a client for address "host:port", "[v6]:port" or ":port" (meaning
 * 127.0.0.1). Numeric hosts are used directly; names are resolved with
 * uv_getaddrinfo before every connection attempt. No connection is made until
 * the first request. opts may be NULL. Returns 0 (*out set; the caller owns
 * the client and ends it with http_client_close()), KVD_EINVAL (bad address;
 * errmsg says why) or KVD_ENOMEM. errmsg: NULL or KVD_ERRMSG_SIZE bytes.
 */
int http_client_create(uv_loop_t *loop, const char *address, const struct http_client_opts *opts,
		       struct http_client **out, char *errmsg);

/*
 * Queues a request. method: e.g. "POST". path_and_query: e.g.
 * "/raft/append-entries" (copied). headers: NULL or complete header lines each
 * ending in "\r\n" (copied); Host and Content-Length are added. body: len
 * bytes (copied; may be NULL when len is 0). timeout_ms: deadline from now for
 * the complete response, covering connect and queueing time (0: none).
 * Returns 0 and cb(status, body, len, user) will run exactly once later; or
 * KVD_ESHUTDOWN (client closing) / KVD_ENOMEM, and cb will never run.
 */
int http_client_request(struct http_client *client, const char *method, const char *path_and_query,
			const char *headers, const void *body, size_t len, uint64_t timeout_ms,
			http_client_cb cb, void *user);

/* Copies the counters into *stats. */
void http_client_stats_get(const struct http_client *client, struct http_client_stats *stats);

/*
 * Fails every queued and in-flight request with KVD_ESHUTDOWN (callbacks run
 * inside this call; requests they submit get KVD_ESHUTDOWN returned), closes
 * the connection and frees the client once its handles are closed (the loop
 * must keep running for that). The client must not be used afterwards.
 * Does nothing for NULL.
 */
void http_client_close(struct http_client *client);

#endif
