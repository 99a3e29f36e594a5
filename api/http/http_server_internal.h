/*
 * http_server_internal.h: what http_server.c and http_request.c share.
 *
 * Private to the HTTP server: the request object's layout, its recycling
 * pool, and response formatting. Nothing outside api/http_server.c and
 * api/http_request.c includes this file.
 */
#ifndef KVD_API_HTTP_SERVER_INTERNAL_H
#define KVD_API_HTTP_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "api/http/http_server.h"

#define HTTP_SERVER_MAX_HEADERS 64 /* more headers than this: 431 */

enum http_request_state {
	HTTP_REQUEST_RECEIVING, /* the parser is filling it */
	HTTP_REQUEST_HANDLING,	/* handed to the handler, not answered */
	HTTP_REQUEST_DONE,	/* answered; out holds the response */
};

/* A header's name and value as offsets into http_request.head. */
struct http_header_span {
	uint32_t name_off, name_len, value_off, value_len;
};

struct http_request {
	struct http_request *next; /* queue, write batch or pool link */
	struct http_conn *conn;	   /* NULL once the connection is gone */
	struct http_server *server;
	uint8_t state;	/* enum http_request_state */
	uint8_t method; /* enum http_method */
	bool keep_alive;
	bool close_after;   /* the connection ends after this response */
	bool send_continue; /* a 100 Continue is owed before the body */
	bool in_value;	    /* last header callback was a value */
	bool is_head;
	bool http10;
	bool ordered;		     /* runs alone on its connection (see http_server_opts) */
	bool headers_done;	     /* later header callbacks are trailers */
	uint64_t start_ms;	     /* loop time when handed to the handler */
	char *head;		     /* url, header names and values, path, query;
					each NUL-terminated */
	uint32_t head_len, head_cap; /* bytes */
	uint32_t head_bytes;	     /* bytes of url and headers, for the limit */
	uint32_t url_len;	     /* the raw url is at head[0] */
	uint32_t path_off, path_len, query_off, query_len;
	uint32_t nhdrs;
	struct http_header_span hdrs[HTTP_SERVER_MAX_HEADERS];
	char *body;
	size_t body_len, body_cap, body_limit; /* bytes */
	size_t body_expect;		       /* Content-Length + 1, or 0 (chunked) */
	size_t body_counted;		       /* of body_cap, bytes in the server's body budget */
	char *out;			       /* formatted response */
	size_t out_len, out_cap;	       /* bytes */
	size_t counted; /* of its connection's out_pending, this request's share */
};

/* Recycled request objects, so steady traffic allocates nothing. */
struct http_request_pool {
	struct http_request *free;
	unsigned n;
};

/* Returns a reset request (RECEIVING) from the pool or the heap, or NULL. */
struct http_request *http_request_pool_get(struct http_request_pool *pool,
					   struct http_server *server, size_t body_limit);
/* Takes back a request no longer referenced anywhere. */
void http_request_pool_put(struct http_request_pool *pool, struct http_request *r);
/* Frees every pooled request. */
void http_request_pool_drain(struct http_request_pool *pool);

/* Appends n bytes to r->head. Returns 0 or KVD_ENOMEM. */
int http_request_head_append(struct http_request *r, const char *p, size_t n);
/* Once the url is complete: copies its path and query, NUL-terminated, to
 * the end of r->head. Returns 0 or KVD_ENOMEM. */
int http_request_url_split(struct http_request *r);

/* The IMF-fixdate of the current second, cached. */
struct http_date {
	time_t sec;
	char text[40];
};
const char *http_date_now(struct http_date *d);

/*
 * Formats r's complete response into r->out (status line, Date,
 * Content-Length, Content-Type if ctype, Connection, extra, blank line, body
 * unless r is a HEAD request). close: the connection ends after it (also
 * implied by !r->keep_alive; sets r->close_after). Returns 0 or KVD_ENOMEM.
 */
int http_response_format(struct http_request *r, int status, const char *ctype, const char *extra,
			 const void *body, size_t len, bool close, const char *date);

/*
 * Serves an already connected stream socket fd (any family: the fuzz target
 * and tests pass one end of a socketpair) as if it had been accepted; the
 * server owns fd from here on. Loop thread. Returns 0, or KVD_EIO when the
 * connection could not be set up (fd is closed either way then).
 */
int http_server_adopt_fd(struct http_server *srv, int fd);

#endif
