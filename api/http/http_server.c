/*
 * http_server.c: HTTP/1.1 server on libuv, parsing with http-parser.
 *
 * Why it looks like this:
 * - Accepting is done by hand (accept4 on a uv_poll'd listening socket), not
 *   with uv_listen: libuv's EMFILE handling accepts and closes pending
 *   connections (resetting them) at random. Here the cap is explicit
 *   (max_conns: opts.max_connections, lowered so that a quarter of
 *   RLIMIT_NOFILE stays for the process's own files: a connection flood must
 *   never make open() of a log segment or snapshot fail). Over the cap the
 *   longest-idle keep-alive connection makes room, else the new one is
 *   closed. On EMFILE/ENFILE/ENOMEM an idle connection is closed, else
 *   accepting pauses for ACCEPT_RETRY_MS and the pending connections wait in
 *   the kernel's backlog. Each readiness accepts until EAGAIN, so a burst of
 *   10,000 connects drains in one pass.
 * - Hostile clients are bounded: the parser pauses after every complete
 *   request, whose framing bytes are then checked (framing_scan: the
 *   system's http-parser is built lenient) before the handler sees it; the
 *   token is checked from the headers (admit_cb) before any body byte; bodies
 *   grow as bytes arrive; a connection's unsent output is capped
 *   (max_output_bytes, node-wide max_total_output_bytes) by pausing its
 *   reads, and an answer waiting to be sent counts at what it holds (its
 *   request object and buffers), not at its bytes alone; input read while
 *   paused is kept in 4 KiB slices, and in slices for every read while the
 *   input kept over all connections passes KEPT_BUDGET_BYTES; header and
 *   body deadlines end slow requests with 408.
 * - Fair turns: a read hands out at most TURN_REQUESTS requests, the rest
 *   waits for the connection's next turn, and each loop iteration resumes
 *   at most RESUMES_PER_ITERATION paused connections, first queued first;
 *   once ITERATION_REQUESTS are handed out in a loop iteration, a read hands
 *   out TURN_MIN: thousands of connections pipelining thousands of requests
 *   each cannot hold the loop, so heartbeats go out and a write's steps
 *   (each a loop iteration) go on.
 * - Per-connection memory is small: the uv_tcp_t, the parser and a few
 *   pointers. Reads land in one shared 64 KiB buffer per server (libuv calls
 *   alloc_cb and read_cb back to back, and parsing is synchronous); only the
 *   fields a request needs are copied out. Request objects (with their header,
 *   body and response buffers) are recycled through a pool, so the steady
 *   state makes no allocation per request.
 * - Responses are queued per connection in request order. A response answered
 *   out of order waits until all earlier ones are done; consecutive finished
 *   responses are written together with uv_try_write and, for what the kernel
 *   does not take at once, a single uv_write. Responses produced while a read
 *   is being parsed are flushed once at the end of that read (batching).
 * - Timeouts cost no timer per connection: one sweep timer walks the open
 *   connections (a list walk, no system call unless one expires) for idle
 *   ones, stalled writes and header/body deadlines. The list is kept in
 *   order of last activity so the longest-idle connection is found first.
 * - A connection that must close after a response (error, Connection: close,
 *   HTTP/1.0) is shut down for writing and then drained ("lingering close")
 *   for at most LINGER_MS, so the client reads the response instead of a RST.
 *
 * Invariants:
 * - conn->qhead..qtail holds, in arrival order, every request of the
 *   connection not yet handed to the kernel; at most the tail is RECEIVING.
 * - A request is in exactly one place: the pool, a connection's queue, a
 *   connection's write batch, or detached (HANDLING, conn == NULL).
 * - libuv handles are freed only in their close callbacks; buffers of a
 *   uv_write stay alive (in conn->wbatch) until its callback.
 */
#include "api/http/http_server.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#include "api/http/http_server_internal.h"
#include "api/http/tls.h"
#include "kvd/errors.h"

#define READ_BUF_BYTES	      (64 * 1024) /* shared read buffer */
#define KEPT_SLICE_BYTES      4096	  /* a read while paused, or kept input over budget */
#define KEPT_BUDGET_BYTES     (32u << 20) /* unparsed input kept over all connections */
#define TURN_REQUESTS	      32	  /* requests parsed per connection per turn */
#define RESUMES_PER_ITERATION 64	  /* paused connections resumed per loop iteration */
#define ITERATION_REQUESTS    1024	  /* requests per loop iteration, then TURN_MIN per read */
#define TURN_MIN	      4		  /* a read's turn once ITERATION_REQUESTS are out */
#define FLUSH_MAX_BUFS	      64	  /* responses per write */
#define ACCEPT_RETRY_MS	      100	  /* pause after EMFILE and friends */
#define LINGER_MS	      2000	  /* drain time after a final response */
#define EVICT_SCAN	      64	  /* connections looked at for an idle one */
#define EVICT_IDLE_MS	      250	  /* quiet time before a connection counts as idle */
#define FD_HEADROOM_MIN	      64	  /* descriptors never given to connections */
/* TLS handshakes in progress at once; more connections are closed at accept.
 * A stalled handshake holds ~46 kB (OpenSSL's state), so 20,000 of them
 * would be ~920 MB: the cap keeps them near 94 MB, and the header deadline
 * (10 s) frees their places. */
#define TLS_HANDSHAKES_MAX 2048

enum conn_list_id { LIST_NONE, LIST_ACTIVE, LIST_LINGER };

struct http_conn {
	uv_tcp_t tcp; /* first: the handle's address is the connection's */
	http_parser parser;
	struct http_server *server;
	struct http_conn *prev, *next; /* active or linger list */
	uint64_t last_ms;	       /* loop time of the last activity */
	struct http_request *qhead, *qtail;
	struct http_request *cur;    /* request being received, or NULL */
	struct http_request *ready;  /* complete, checked before it is handed out */
	struct http_request *wbatch; /* requests whose bytes uv_write holds */
	unsigned nunanswered;	     /* queued requests in HTTP_REQUEST_HANDLING */
	unsigned nunsafe;	     /* of those, handed out with an unsafe method */
	/* An unsafe request (PUT, POST, DELETE...) waits here until every
	 * earlier request is answered, and nothing after an unsafe request is
	 * read until it is answered: pipelined requests see each other's
	 * effects in order (RFC 9112 §9.3.2). */
	struct http_request *deferred;
	struct http_conn *resume_next; /* server's resume list */
	bool resume_queued;
	char *rest; /* unparsed input kept while paused */
	size_t rest_len;
	int err_status;	     /* set by a parser callback that failed */
	const char *err_msg; /* its body, or NULL for the status's default */
	size_t out_pending;  /* bytes of formatted responses not yet sent */
	uint64_t begin_ms;   /* loop time of the current request's first byte */
	uint64_t rx_ms;	     /* loop time of the last byte received */
	/* Strict framing (see framing_scan): bytes of the current execute not
	 * yet checked start at scan; state carried across reads. */
	const char *scan;
	bool last_cr, last_lf, expect_crlf;
	union {
		uv_write_t w;
		uv_shutdown_t s;
	} ureq;
	struct http_stream *stream; /* a streaming response owns the connection */
	uint8_t list;		    /* enum conn_list_id */
	struct kvd_tls_conn *tls;   /* NULL: plain HTTP */
	char *tls_out;		    /* ciphertext held by the uv_write in flight */
	bool tls_handshaking;	    /* counted in server->tls_handshakes */
	bool reading, writing, in_read, bp_paused, no_more_input;
	bool close_when_drained, ending, lingering, closing;
};

struct conn_list {
	struct http_conn *head, *tail;
};

struct http_server {
	uv_loop_t *loop;
	struct http_server_opts opts;
	struct kvd_tls_ctx *tls; /* NULL: plain HTTP (borrowed) */
	uint64_t tls_log_ms;	 /* loop time of the last TLS refusal logged */
	unsigned tls_unlogged;	 /* refusals not logged since (see conn_tls_fail) */
	char tls_last[64];	 /* the reason last logged */
	unsigned tls_handshakes; /* connections in a TLS handshake now */
	http_handler_cb handler_cb;
	void *user;
	http_parser_settings settings;
	int fd;
	uint16_t port;
	uv_poll_t poll;
	uv_timer_t sweep_timer, retry_timer, deadline_timer;
	/* Resuming a paused connection runs from this idle handle, never from
	 * inside http_response_send(): the handler is not re-entered from its
	 * own answer. */
	uv_idle_t resume_idle;
	uv_prepare_t iteration_prepare; /* resets iteration_requests */
	unsigned iteration_requests;	/* handed out since the last poll phase began */
	struct http_conn *resume_head, *resume_tail; /* in the order queued */
	unsigned handles_open;
	unsigned live;	    /* connections open and not closing */
	unsigned max_conns; /* opts.max_connections, lowered by RLIMIT_NOFILE */
	size_t out_total;   /* sum of every connection's out_pending */
	size_t body_total;  /* sum of body_counted of requests being received */
	size_t kept_total;  /* sum of every connection's rest_len */
	bool accepting, closing, close_reported;
	http_server_close_cb close_cb;
	void *close_user;
	struct conn_list active, linger;
	struct http_request_pool pool;
	struct http_date date;
	struct http_server_stats stats;
	char rbuf[READ_BUF_BYTES];
};

static const char CONTINUE_LINE[] = "HTTP/1.1 100 Continue\r\n\r\n";

static void conn_close(struct http_conn *c);
static void conn_flush(struct http_conn *c);
static void conn_parse(struct http_conn *c, const char *data, size_t len);
static void server_check_closed(struct http_server *srv);
static void server_maybe_free(struct http_server *srv);

/* ---- lists ---- */

static void list_remove(struct http_server *srv, struct http_conn *c)
{
	struct conn_list *l;

	if (c->list == LIST_NONE)
		return;
	l = c->list == LIST_ACTIVE ? &srv->active : &srv->linger;
	if (c->prev)
		c->prev->next = c->next;
	else
		l->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		l->tail = c->prev;
	c->prev = c->next = NULL;
	c->list = LIST_NONE;
}

static void list_append(struct http_server *srv, struct http_conn *c, enum conn_list_id id)
{
	struct conn_list *l = id == LIST_ACTIVE ? &srv->active : &srv->linger;

	list_remove(srv, c);
	c->prev = l->tail;
	c->next = NULL;
	if (l->tail)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
	c->list = (uint8_t)id;
	c->last_ms = uv_now(srv->loop);
}

static void conn_touch(struct http_conn *c)
{
	if (c->list == LIST_ACTIVE && c->server->active.tail != c)
		list_append(c->server, c, LIST_ACTIVE);
	else
		c->last_ms = uv_now(c->server->loop);
}

/* ---- request objects ---- */

static struct http_request *req_get(struct http_server *srv)
{
	return http_request_pool_get(&srv->pool, srv, srv->opts.max_body_bytes);
}

static void req_put(struct http_request *r)
{
	http_request_pool_put(&r->server->pool, r);
}

/* Appends parsed url or header bytes, enforcing the header size limit. */
static int req_head_add(struct http_conn *c, struct http_request *r, const char *p, size_t n)
{
	if (n > c->server->opts.max_header_bytes - r->head_bytes) {
		c->err_status = 431;
		return -1;
	}
	r->head_bytes += (uint32_t)n;
	if (http_request_head_append(r, p, n) != 0) {
		c->err_status = 503;
		return -1;
	}
	return 0;
}

static int req_head_nul(struct http_conn *c, struct http_request *r)
{
	if (http_request_head_append(r, "", 1) != 0) {
		c->err_status = 503;
		return -1;
	}
	return 0;
}

static int resp_format(struct http_request *r, int status, const char *ctype, const char *extra,
		       const void *body, size_t len, bool close)
{
	return http_response_format(r, status, ctype, extra, body, len, close,
				    http_date_now(&r->server->date));
}

/* ---- connection: errors, ending, closing ---- */

static void conn_read_stop(struct http_conn *c)
{
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

static void queue_append(struct http_conn *c, struct http_request *r)
{
	r->next = NULL;
	if (c->qtail)
		c->qtail->next = r;
	else
		c->qhead = r;
	c->qtail = r;
}

static bool conn_may_read(const struct http_conn *c);
static void conn_queue_resume(struct http_conn *c);

/* Counts n more bytes of c's unsent output, held by r (released with it:
 * batch_release() subtracts r->counted). */
static void out_add(struct http_conn *c, struct http_request *r, size_t n)
{
	r->counted += n;
	c->out_pending += n;
	c->server->out_total += n;
}

/*
 * Uncounts up to n bytes of c's unsent output. When the node-wide total
 * falls back under its cap, every connection that paused for it is queued to
 * resume (a walk of the open connections, once per crossing).
 */
static void out_sub(struct http_conn *c, size_t n)
{
	struct http_server *srv = c->server;
	bool was_over = srv->out_total >= srv->opts.max_total_output_bytes;
	struct http_conn *o;

	if (n > c->out_pending)
		n = c->out_pending;
	c->out_pending -= n;
	srv->out_total -= n;
	if (!was_over || srv->out_total >= srv->opts.max_total_output_bytes)
		return;
	for (o = srv->active.head; o; o = o->next)
		if (o->bp_paused && conn_may_read(o))
			conn_queue_resume(o);
}

/*
 * Counts an answered request (queued until the kernel takes its bytes) at
 * what it holds, not only at its response's bytes: the request object, its
 * header, body and response buffers. A client that pipelines small requests
 * without reading would otherwise hold ten times what the caps count.
 */
static void out_add_request(struct http_conn *c, struct http_request *r)
{
	size_t held = sizeof(*r) + r->head_cap + r->body_cap + r->out_cap;

	if (held > r->counted)
		out_add(c, r, held - r->counted);
}

/* Takes r's body out of the server's budget (it is complete, or dropped). */
static void body_uncount(struct http_server *srv, struct http_request *r)
{
	srv->body_total -= r->body_counted;
	r->body_counted = 0;
}

/* Answers a protocol error itself, then the connection closes. */
static void conn_fail(struct http_conn *c, int status)
{
	struct http_server *srv = c->server;
	struct http_request *r = c->cur ? c->cur : c->ready;
	const char *msg;

	c->no_more_input = true;
	c->ready = NULL;
	conn_read_stop(c);
	if (r)
		body_uncount(srv, r);
	if (!r) {
		r = req_get(srv);
		if (!r) {
			conn_close(c);
			return;
		}
		r->conn = c;
		queue_append(c, r);
	}
	c->cur = NULL;
	r->state = HTTP_REQUEST_DONE;
	r->send_continue = false;
	r->is_head = false;
	r->close_after = true;
	switch (status) {
	case 413: msg = srv->opts.too_large_body; break;
	case 401: msg = "unauthorized\n"; break;
	case 408: msg = "request timeout\n"; break;
	case 431: msg = "request header fields too large\n"; break;
	case 503: msg = "out of memory\n"; break;
	default: msg = "bad request\n"; break;
	}
	if (c->err_msg)
		msg = c->err_msg;
	if (srv->opts.observe_cb)
		srv->opts.observe_cb(NULL, status, srv->opts.observe_user);
	if (resp_format(r, status, "text/plain; charset=utf-8", NULL, msg, strlen(msg), true) != 0)
		conn_close(c);
	else
		out_add_request(c, r);
}

/* A streaming response (http_stream_start): what the connection and its
 * writer share. Freed by http_stream_close() or when the connection closes
 * (after close_cb). */
struct http_stream {
	struct http_conn *conn; /* NULL once closed */
	http_stream_close_cb close_cb;
	void *user;
};

static void on_conn_closed(uv_handle_t *h)
{
	struct http_conn *c = (struct http_conn *)h;
	struct http_server *srv = c->server;

	srv->kept_total -= c->rest_len;
	free(c->rest);
	free(c->tls_out);
	kvd_tls_conn_destroy(c->tls);
	free(c);
	srv->stats.connections--;
	server_check_closed(srv);
}

static void conn_close(struct http_conn *c)
{
	struct http_server *srv = c->server;
	struct http_request *r, *next;

	if (c->closing)
		return;
	c->closing = true;
	srv->live--;
	if (c->tls_handshaking) {
		c->tls_handshaking = false;
		srv->tls_handshakes--;
	}
	out_sub(c, c->out_pending);
	if (c->stream != NULL) { /* the stream's owner learns it, then it is freed */
		struct http_stream *s = c->stream;
		c->stream = NULL;
		s->conn = NULL;
		s->close_cb(s, s->user);
		free(s);
	}
	list_remove(srv, c);
	if (c->cur)
		body_uncount(srv, c->cur);
	if (c->ready)
		body_uncount(srv, c->ready);
	c->cur = NULL;
	c->ready = NULL;
	if (c->resume_queued) {
		struct http_conn **pp = &srv->resume_head, *prev = NULL;
		while (*pp != c) {
			prev = *pp;
			pp = &(*pp)->resume_next;
		}
		*pp = c->resume_next;
		if (srv->resume_tail == c)
			srv->resume_tail = prev;
		c->resume_queued = false;
	}
	if (c->deferred != NULL) { /* never handed out: not outstanding */
		c->deferred->state = HTTP_REQUEST_RECEIVING;
		c->deferred = NULL;
		c->nunanswered--;
	}
	for (r = c->qhead; r; r = next) {
		next = r->next;
		if (r->state == HTTP_REQUEST_HANDLING) {
			r->conn = NULL; /* detached: freed when answered */
			r->next = NULL;
		} else {
			req_put(r);
		}
	}
	c->qhead = c->qtail = NULL;
	/* c->wbatch is released by on_write (UV_ECANCELED) before on_conn_closed */
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_read_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct http_conn *c = (struct http_conn *)h;

	(void)hint;
	buf->base = c->server->rbuf;
	buf->len = sizeof(c->server->rbuf);
	/* What a paused connection reads is kept until it resumes: a slice
	 * then, and while kept input is over its budget, for every read. */
	if (c->bp_paused || c->server->kept_total >= KEPT_BUDGET_BYTES)
		buf->len = KEPT_SLICE_BYTES;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void resume_cb(uv_idle_t *h);

static void conn_read_start(struct http_conn *c)
{
	if (!c->reading && !c->closing) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_read_alloc, on_read) != 0) {
			conn_close(c);
			return;
		}
		c->reading = true;
	}
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct http_conn *c = req->data;

	if (c->closing)
		return;
	if (status < 0) {
		conn_close(c);
		return;
	}
	/* Lingering close: drain what the client still sends, until EOF. */
	c->lingering = true;
	list_append(c->server, c, LIST_LINGER);
	conn_read_start(c);
}

/* The last response is out: half-close, then linger. */
static void conn_end(struct http_conn *c)
{
	if (c->ending || c->closing)
		return;
	c->ending = true;
	c->no_more_input = true;
	c->ureq.s.data = c;
	if (uv_shutdown(&c->ureq.s, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		conn_close(c);
}

/* ---- TLS hook points (see tls.h) ---- */

/* "ip:port" of c's peer, for log lines. */
static const char *conn_peer(struct http_conn *c, char *buf, size_t size)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char ip[64] = "?";
	unsigned port = 0;

	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET6) {
			uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		} else {
			uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		}
	}
	snprintf(buf, size, "%s:%u", ip, port);
	return buf;
}

/* A TLS refusal or failure: the alert OpenSSL queued (if any) goes out with
 * a non-blocking write, one log line says why (the same reason at most once
 * a second: a refused peer retries every few hundred ms; the next line
 * counts those left out), and the connection closes. */
static void conn_tls_fail(struct http_conn *c, const char *why)
{
	struct http_server *srv = c->server;
	uint64_t now = uv_now(srv->loop);
	char peer[96];

	kvd_tls_send(c->tls, (uv_stream_t *)&c->tcp);
	if (srv->tls_log_ms == 0 || now - srv->tls_log_ms >= 1000 ||
	    strncmp(srv->tls_last, why, sizeof(srv->tls_last) - 1) != 0) {
		kvd_tls_log(2, "tls connection refused", "peer=%s reason=\"%s\" unlogged=%u",
			    conn_peer(c, peer, sizeof(peer)), why, srv->tls_unlogged);
		srv->tls_log_ms = now;
		srv->tls_unlogged = 0;
		snprintf(srv->tls_last, sizeof(srv->tls_last), "%s", why);
	} else {
		srv->tls_unlogged++;
	}
	conn_close(c);
}

/*
 * Decrypts what the TLS buffers hold and parses it, until they are empty or
 * the connection pauses (backpressure: the rest stays inside the TLS buffers
 * and conn_resume pumps again). Handshake output goes out at once. The
 * plaintext lands in the shared read buffer: the ciphertext was copied into
 * the TLS read buffer before.
 */
static void conn_tls_pump(struct http_conn *c)
{
	struct http_server *srv = c->server;
	char err[KVD_ERRMSG_SIZE] = "";
	ssize_t n;

	while (!c->closing && !c->bp_paused && !c->no_more_input) {
		n = kvd_tls_read(c->tls, srv->rbuf, sizeof(srv->rbuf), err);
		if (c->tls_handshaking && kvd_tls_established(c->tls)) {
			c->tls_handshaking = false;
			srv->tls_handshakes--;
		}
		if (n == KVD_ESHUTDOWN) { /* close_notify: the client is done */
			conn_close(c);
			break;
		}
		if (n < 0) {
			conn_tls_fail(c, err);
			break;
		}
		if (kvd_tls_pending(c->tls) > 0) {
			if (kvd_tls_send(c->tls, (uv_stream_t *)&c->tcp) != 0) {
				conn_close(c);
				break;
			}
			if (c->tcp.write_queue_size > srv->opts.max_output_bytes) {
				conn_tls_fail(c, "client does not read its TLS records");
				break;
			}
		}
		if (n == 0)
			break;
		conn_parse(c, srv->rbuf, (size_t)n);
	}
}

/* A connection closed at accept because TLS_HANDSHAKES_MAX handshakes are
 * in progress: logged like the other refusals (same rate limit). */
static void tls_refused_at_accept(struct http_server *srv)
{
	static const char why[] = "too many TLS handshakes in progress";
	uint64_t now = uv_now(srv->loop);

	if (srv->tls_log_ms == 0 || now - srv->tls_log_ms >= 1000 ||
	    strncmp(srv->tls_last, why, sizeof(srv->tls_last) - 1) != 0) {
		kvd_tls_log(2, "tls connection refused", "reason=\"%s\" limit=%u unlogged=%u", why,
			    TLS_HANDSHAKES_MAX, srv->tls_unlogged);
		srv->tls_log_ms = now;
		srv->tls_unlogged = 0;
		snprintf(srv->tls_last, sizeof(srv->tls_last), "%s", why);
	} else {
		srv->tls_unlogged++;
	}
}

/* Ciphertext read from the socket. */
static void conn_tls_input(struct http_conn *c, const char *data, size_t len)
{
	char err[KVD_ERRMSG_SIZE] = "";

	if (kvd_tls_feed(c->tls, data, len, err) != 0) {
		conn_tls_fail(c, err);
		return;
	}
	conn_tls_pump(c);
}

/*
 * Encrypts the n plaintext buffers of a write into one ciphertext buffer
 * (c->tls_out, freed when the write completes) that replaces them in bufs.
 * The plaintext responses stay in the write batch until then, so the
 * connection's out_pending (the 8 MiB cap) keeps counting them. final: a
 * close_notify follows the last response. Returns 0 or a negative code (no
 * handshake yet: nothing may go out in clear, the connection just closes).
 */
static int conn_tls_seal(struct http_conn *c, uv_buf_t *bufs, unsigned *n, bool final)
{
	size_t len;
	unsigned i;
	int rc = kvd_tls_established(c->tls) ? 0 : KVD_EIO;

	for (i = 0; i < *n && rc == 0; i++)
		rc = kvd_tls_write(c->tls, bufs[i].base, bufs[i].len);
	if (rc == 0 && final)
		kvd_tls_close_notify(c->tls);
	if (rc == 0) {
		len = kvd_tls_take(c->tls, &c->tls_out);
		if (c->tls_out == NULL) {
			rc = KVD_ENOMEM;
		} else {
			bufs[0] = uv_buf_init(c->tls_out, (unsigned)len);
			*n = 1;
		}
	}
	return rc;
}

/* ---- writing ---- */

/* Frees sent (or dropped) responses and uncounts their bytes. */
static void batch_release(struct http_conn *c, struct http_request *r)
{
	struct http_request *next;

	for (; r; r = next) {
		next = r->next;
		out_sub(c, r->counted);
		req_put(r);
	}
}

/* Whether c may read more requests now (backpressure, ordering, output
 * caps: a connection with unsent output stops reading while it or the whole
 * server is over its cap; one with none always may, so others are served). */
static bool conn_may_read(const struct http_conn *c)
{
	const struct http_server *srv = c->server;

	return !c->closing && !c->no_more_input && c->nunsafe == 0 && c->deferred == NULL &&
	       c->nunanswered < srv->opts.max_pipeline &&
	       c->out_pending < srv->opts.max_output_bytes &&
	       (c->out_pending == 0 || srv->out_total < srv->opts.max_total_output_bytes);
}

static void conn_queue_resume(struct http_conn *c);

static void on_write(uv_write_t *w, int status)
{
	struct http_conn *c = w->data;

	batch_release(c, c->wbatch);
	c->wbatch = NULL;
	free(c->tls_out);
	c->tls_out = NULL;
	c->writing = false;
	if (c->closing)
		return;
	if (status < 0) {
		conn_close(c);
		return;
	}
	conn_touch(c);
	conn_flush(c);
	if (c->bp_paused && conn_may_read(c))
		conn_queue_resume(c);
}

static void conn_flush(struct http_conn *c)
{
	uv_buf_t bufs[FLUSH_MAX_BUFS];
	struct http_request *batch, **btail, *r;
	unsigned n, i;
	bool final;
	int w;

again:
	if (c->writing || c->closing || c->in_read || c->ending)
		return;
	batch = NULL;
	btail = &batch;
	n = 0;
	final = false;
	while ((r = c->qhead) && n < FLUSH_MAX_BUFS) {
		if (r->state != HTTP_REQUEST_DONE) {
			if (r->send_continue) {
				r->send_continue = false;
				bufs[n++] =
				    uv_buf_init((char *)CONTINUE_LINE, sizeof(CONTINUE_LINE) - 1);
			}
			break;
		}
		c->qhead = r->next;
		if (!c->qhead)
			c->qtail = NULL;
		r->next = NULL;
		*btail = r;
		btail = &r->next;
		bufs[n++] = uv_buf_init(r->out, (unsigned)r->out_len);
		if (r->close_after) {
			final = true;
			break;
		}
	}
	if (n == 0) {
		if (c->close_when_drained && !c->qhead && c->rest_len == 0)
			conn_end(c);
		return;
	}
	if (c->tls && conn_tls_seal(c, bufs, &n, final) != 0) {
		batch_release(c, batch);
		conn_close(c);
		return;
	}
	w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
	if (w == UV_EAGAIN || w == UV_ENOSYS)
		w = 0;
	if (w < 0) {
		batch_release(c, batch);
		conn_close(c);
		return;
	}
	for (i = 0; i < n && (size_t)w >= bufs[i].len; i++)
		w -= (int)bufs[i].len;
	if (i == n) {
		batch_release(c, batch);
		free(c->tls_out);
		c->tls_out = NULL;
		conn_touch(c);
		if (final) {
			c->qhead = c->qtail = NULL; /* nothing after a final response */
			conn_end(c);
			return;
		}
		goto again;
	}
	bufs[i].base += w;
	bufs[i].len -= (size_t)w;
	if (final)
		c->close_when_drained = true;
	c->wbatch = batch;
	c->writing = true;
	c->ureq.w.data = c;
	if (uv_write(&c->ureq.w, (uv_stream_t *)&c->tcp, bufs + i, n - i, on_write) != 0) {
		c->writing = false;
		c->wbatch = NULL;
		free(c->tls_out);
		c->tls_out = NULL;
		batch_release(c, batch);
		conn_close(c);
	}
}

/* ---- parser callbacks ---- */

/*
 * Checks framing bytes [p, end) of the input, that is everything but body
 * data: a CR must be followed by LF, no line may start with SP or HT
 * (obs-fold), and chunk data must be followed by CRLF (or LF). Debian's
 * http-parser is built without HTTP_PARSER_STRICT and lets each of these
 * through, so a request smuggled behind them would run. State carries across
 * reads. Returns false on a violation.
 */
static bool framing_scan(struct http_conn *c, const char *p, const char *end)
{
	for (; p < end; p++) {
		char ch = *p;

		if (c->last_cr && ch != '\n')
			return false;
		if (c->expect_crlf && ch != '\r' && ch != '\n')
			return false;
		if (c->last_lf && (ch == ' ' || ch == '\t'))
			return false;
		c->last_cr = ch == '\r';
		c->last_lf = ch == '\n';
		if (ch == '\n')
			c->expect_crlf = false;
	}
	return true;
}

static int on_message_begin(http_parser *p)
{
	struct http_conn *c = p->data;
	struct http_request *r = req_get(c->server);

	if (!r) {
		c->err_status = 503;
		return -1;
	}
	r->conn = c;
	queue_append(c, r);
	c->cur = r;
	c->begin_ms = uv_now(c->server->loop);
	return 0;
}

/* Trailer bytes count against the header limit and are dropped. */
static int trailer_add(struct http_conn *c, struct http_request *r, size_t n)
{
	if (n > c->server->opts.max_header_bytes - r->head_bytes) {
		c->err_status = 431;
		return -1;
	}
	r->head_bytes += (uint32_t)n;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	struct http_request *r = c->cur;

	if (req_head_add(c, r, at, len) != 0)
		return -1;
	r->url_len += (uint32_t)len;
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	struct http_request *r = c->cur;

	if (r->headers_done)
		return trailer_add(c, r, len);
	if (r->nhdrs == 0 || r->in_value) {
		/* a new header: terminate the url or the previous value */
		if (req_head_nul(c, r) != 0)
			return -1;
		if (r->nhdrs == HTTP_SERVER_MAX_HEADERS) {
			c->err_status = 431;
			return -1;
		}
		r->hdrs[r->nhdrs].name_off = r->head_len;
		r->hdrs[r->nhdrs].name_len = 0;
		r->hdrs[r->nhdrs].value_len = 0;
		r->nhdrs++;
		r->in_value = false;
	}
	if (req_head_add(c, r, at, len) != 0)
		return -1;
	r->hdrs[r->nhdrs - 1].name_len += (uint32_t)len;
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	struct http_request *r = c->cur;

	if (r->headers_done)
		return trailer_add(c, r, len);
	if (!r->in_value) {
		if (req_head_nul(c, r) != 0)
			return -1;
		r->hdrs[r->nhdrs - 1].value_off = r->head_len;
		r->in_value = true;
	}
	if (req_head_add(c, r, at, len) != 0)
		return -1;
	r->hdrs[r->nhdrs - 1].value_len += (uint32_t)len;
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_conn *c = p->data;
	struct http_server *srv = c->server;
	struct http_request *r = c->cur;
	const char *expect;
	int status;

	if (r->nhdrs > 0 && !r->in_value) {
		/* a name without a value (http-parser allows "X:") */
		if (req_head_nul(c, r) != 0)
			return -1;
		r->hdrs[r->nhdrs - 1].value_off = r->head_len;
		r->in_value = true;
	}
	if (req_head_nul(c, r) != 0)
		return -1;
	if (http_request_url_split(r) != 0) {
		c->err_status = 503;
		return -1;
	}
	r->method = (uint8_t)p->method;
	r->is_head = p->method == HTTP_HEAD;
	r->http10 = p->http_major == 1 && p->http_minor == 0;
	r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
	r->headers_done = true;
	if (srv->opts.admit_cb) {
		c->err_msg = NULL;
		status = srv->opts.admit_cb(r, srv->user, &c->err_msg);
		if (status != 0) {
			c->err_status = status;
			return -1;
		}
		c->err_msg = NULL;
	}
	if (srv->opts.body_limit_cb)
		r->body_limit = srv->opts.body_limit_cb(r, srv->user);
	/* Nothing is allocated by Content-Length: the body grows as it comes. */
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > r->body_limit) {
		c->err_status = 413;
		return -1;
	}
	if (p->flags & F_CONTENTLENGTH)
		r->body_expect = (size_t)p->content_length + 1;
	expect = http_request_header(r, "Expect", NULL);
	if (expect && strcasecmp(expect, "100-continue") == 0 && !r->http10 &&
	    ((p->flags & F_CHUNKED) || p->content_length > 0))
		r->send_continue = true;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	struct http_server *srv = c->server;
	struct http_request *r = c->cur;

	if (!framing_scan(c, c->scan, at) || c->last_cr) {
		c->err_status = 400;
		return -1;
	}
	c->last_lf = false;
	c->scan = at + len;
	if ((p->flags & F_CHUNKED) && p->content_length == 0)
		c->expect_crlf = true; /* the chunk's data ends here */
	r->send_continue = false;
	if (len > r->body_limit - r->body_len) {
		c->err_status = 413;
		return -1;
	}
	if (r->body_len + len + 1 > r->body_cap) {
		size_t cap = r->body_cap ? r->body_cap : 1024;
		char *nb;

		while (cap < r->body_len + len + 1)
			cap *= 2;
		if (r->body_expect >= r->body_len + len + 1 && cap > r->body_expect)
			cap = r->body_expect; /* no doubling past the announced size */
		if (cap - r->body_cap > srv->opts.max_total_body_bytes - srv->body_total) {
			c->err_status = 503; /* the node-wide budget for bodies is spent */
			c->err_msg = "server busy\n";
			return -1;
		}
		nb = realloc(r->body, cap);
		if (!nb) {
			c->err_status = 503;
			return -1;
		}
		srv->body_total += cap - r->body_cap;
		r->body_counted += cap - r->body_cap;
		r->body = nb;
		r->body_cap = cap;
	}
	memcpy(r->body + r->body_len, at, len);
	r->body_len += len;
	return 0;
}

static bool method_safe(uint8_t method)
{
	return method == HTTP_GET || method == HTTP_HEAD || method == HTTP_OPTIONS;
}

/* A complete request: held in c->ready until conn_parse has checked its
 * framing bytes, then handed out by conn_dispatch. */
static int on_message_complete(http_parser *p)
{
	struct http_conn *c = p->data;
	struct http_request *r = c->cur;

	if (r->body)
		r->body[r->body_len] = '\0';
	r->send_continue = false;
	body_uncount(c->server, r);
	c->cur = NULL;
	c->ready = r;
	http_parser_pause(p, 1);
	return 0;
}

static void conn_dispatch(struct http_conn *c, struct http_request *r)
{
	struct http_server *srv = c->server;
	bool keep_alive = r->keep_alive;

	r->state = HTTP_REQUEST_HANDLING;
	c->nunanswered++;
	srv->stats.requests++;
	r->ordered = srv->opts.ordered_cb != NULL ? srv->opts.ordered_cb(r, srv->user)
						  : !method_safe(r->method);
	if (r->ordered && c->nunanswered > 1) {
		c->deferred = r; /* dispatched once the earlier ones are answered */
	} else {
		if (r->ordered)
			c->nunsafe++;
		srv->stats.outstanding++;
		r->start_ms = uv_now(srv->loop);
		srv->handler_cb(r, srv->user); /* r may be gone from here on */
	}
	if (!keep_alive)
		c->no_more_input = true;
}

/* ---- reading ---- */

/* Keeps n unparsed bytes for conn_resume and stops reading: a paused
 * connection is read no further until its answers let it go on. */
static void conn_keep_rest(struct http_conn *c, const char *p, size_t n)
{
	char *rest = malloc(n);

	conn_read_stop(c);
	if (!rest) {
		conn_fail(c, 503);
		return;
	}
	memcpy(rest, p, n);
	c->rest = rest;
	c->rest_len = n;
	c->server->kept_total += n;
}

/*
 * Parses one read. The parser pauses after each complete request; its
 * framing bytes are checked before it is handed out, so nothing behind a
 * framing error ever runs.
 */
static void conn_parse(struct http_conn *c, const char *data, size_t len)
{
	size_t off = 0, n;
	unsigned turn = 0; /* requests handed out in this call */
	enum http_errno e;

	c->in_read = true;
	for (;;) {
		c->scan = data + off;
		n = http_parser_execute(&c->parser, &c->server->settings, data + off, len - off);
		e = HTTP_PARSER_ERRNO(&c->parser);
		if (c->closing)
			break;
		if (e != HPE_OK && e != HPE_PAUSED) {
			int status = c->err_status;
			if (!status)
				status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
			conn_fail(c, status);
			break;
		}
		if (!framing_scan(c, c->scan, data + off + n)) {
			conn_fail(c, 400);
			break;
		}
		off += n;
		if (c->ready != NULL) {
			struct http_request *r = c->ready;
			c->ready = NULL;
			conn_dispatch(c, r);
			turn++;
			c->server->iteration_requests++;
			if (c->closing)
				break;
		}
		if (c->no_more_input || c->parser.upgrade) {
			c->no_more_input = true;
			conn_read_stop(c);
			break;
		}
		if (e != HPE_PAUSED)
			break; /* all consumed */
		/* A turn ends after TURN_REQUESTS: the rest is parsed from
		 * resume_cb, after every other connection's turn, so a client
		 * pipelining thousands of requests cannot hold the loop. */
		if (!conn_may_read(c) || turn >= TURN_REQUESTS ||
		    (turn >= TURN_MIN && c->server->iteration_requests >= ITERATION_REQUESTS)) {
			c->bp_paused = true;
			if (off < len)
				conn_keep_rest(c, data + off, len - off);
			else if (c->tls)
				conn_read_stop(c);
			/*
			 * Else the read stays armed (a soft pause): a client
			 * that waits for its answer sends nothing meanwhile, and
			 * stopping and restarting the read would cost two
			 * epoll_ctl calls per request. Bytes that do arrive are
			 * kept by on_read, which stops reading then.
			 */
			break;
		}
		http_parser_pause(&c->parser, 0);
		if (off == len)
			break;
	}
	c->in_read = false;
	conn_flush(c);
	if (c->bp_paused && conn_may_read(c))
		conn_queue_resume(c);
	if (c->stream != NULL && !c->closing)
		conn_read_start(c); /* to learn when the client goes (EOF) */
}

/* Resumes parsing after backpressure, once answers have drained. */
static void conn_resume(struct http_conn *c)
{
	char *rest = c->rest;
	size_t len = c->rest_len;

	c->bp_paused = false;
	c->server->kept_total -= len;
	c->rest = NULL;
	c->rest_len = 0;
	c->rx_ms = uv_now(c->server->loop); /* the wait was ours, not the client's */
	http_parser_pause(&c->parser, 0);
	if (rest) {
		conn_parse(c, rest, len);
		free(rest);
	}
	if (c->tls)
		conn_tls_pump(c); /* plaintext still inside the TLS buffers */
	if (!c->bp_paused && !c->no_more_input && !c->closing)
		conn_read_start(c);
}

/* Queues c for resume_cb (loop thread, next iteration). */
static void conn_queue_resume(struct http_conn *c)
{
	struct http_server *srv = c->server;

	if (c->resume_queued || c->closing)
		return;
	c->resume_queued = true;
	c->resume_next = NULL;
	if (srv->resume_tail != NULL)
		srv->resume_tail->resume_next = c;
	else
		srv->resume_head = c;
	srv->resume_tail = c;
	uv_idle_start(&srv->resume_idle, resume_cb);
}

static void resume_cb(uv_idle_t *h)
{
	struct http_server *srv = h->data;
	unsigned budget = RESUMES_PER_ITERATION;

	/* First queued, first resumed; at most RESUMES_PER_ITERATION turns per
	 * loop iteration, so that with thousands of connections pipelining,
	 * each iteration (and so each step of a write: proposed, durable,
	 * applied) still comes round quickly. A connection whose turn ends
	 * again is queued behind the others. */
	while (srv->resume_head != NULL && budget-- > 0) {
		struct http_conn *c = srv->resume_head;
		srv->resume_head = c->resume_next;
		if (srv->resume_head == NULL)
			srv->resume_tail = NULL;
		c->resume_queued = false;
		if (c->closing)
			continue;
		if (c->deferred != NULL && c->nunanswered == 1) {
			struct http_request *r = c->deferred;
			c->deferred = NULL;
			c->nunsafe++;
			srv->stats.outstanding++;
			r->start_ms = uv_now(srv->loop);
			srv->handler_cb(r, srv->user);
			if (c->closing)
				continue;
		}
		if (c->bp_paused && conn_may_read(c))
			conn_resume(c);
	}
	if (srv->resume_head == NULL)
		uv_idle_stop(&srv->resume_idle);
}

/* Before each poll phase: the reads of this iteration share a fresh
 * ITERATION_REQUESTS. */
static void iteration_begin(uv_prepare_t *h)
{
	struct http_server *srv = h->data;

	srv->iteration_requests = 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct http_conn *c = (struct http_conn *)s;

	if (c->closing)
		return;
	if (c->stream != NULL) { /* input after a streaming request is dropped */
		if (nread < 0)
			conn_close(c);
		return;
	}
	if (c->lingering) {
		if (nread < 0)
			conn_close(c);
		return;
	}
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF) {
			conn_close(c);
			return;
		}
		if (c->bp_paused) {
			/* soft pause: the EOF is seen again when reading resumes,
			 * after the answers, as if reading had been stopped */
			conn_read_stop(c);
			return;
		}
		/*
		 * The client closed (a half-close cannot be told apart): drop
		 * the connection; unanswered requests are detached, and their
		 * handlers learn it from http_request_is_connected().
		 */
		conn_close(c);
		return;
	}
	conn_touch(c);
	c->rx_ms = c->last_ms;
	if (c->bp_paused) { /* soft pause (conn_parse): keep the bytes, read no more */
		conn_keep_rest(c, buf->base, (size_t)nread);
		return;
	}
	if (c->tls)
		conn_tls_input(c, buf->base, (size_t)nread);
	else
		conn_parse(c, buf->base, (size_t)nread);
	if (c->server->opts.after_read_cb != NULL)
		c->server->opts.after_read_cb(c->server->user);
}

/* ---- accepting ---- */

static void conn_open(struct http_server *srv, int fd)
{
	struct http_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return;
	}
	c->server = srv;
	if (uv_tcp_init(srv->loop, &c->tcp) != 0) {
		free(c);
		close(fd);
		return;
	}
	srv->stats.connections++;
	srv->stats.accepted++;
	srv->live++;
	if (uv_tcp_open(&c->tcp, fd) != 0) {
		srv->live--;
		close(fd);
		c->closing = true;
		uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	if (srv->tls && (c->tls = kvd_tls_conn_create(srv->tls, NULL)) == NULL) {
		conn_close(c);
		return;
	}
	if (c->tls) {
		c->tls_handshaking = true;
		srv->tls_handshakes++;
	}
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	list_append(srv, c, LIST_ACTIVE);
	c->rx_ms = c->last_ms;
	c->begin_ms = c->last_ms; /* a TLS handshake's deadline runs from here */
	conn_read_start(c);
}

/* Closes the longest-idle connection with nothing in progress and no byte
 * for EVICT_IDLE_MS (a just-accepted one has not been read yet), looking at
 * the EVICT_SCAN least recently active ones. Returns whether one closed (its
 * descriptor is closed at once by uv_close). */
static bool evict_idle(struct http_server *srv)
{
	uint64_t now = uv_now(srv->loop);
	struct http_conn *c = srv->active.head;
	unsigned i;

	for (i = 0; c && i < EVICT_SCAN; i++, c = c->next) {
		if (!c->qhead && !c->writing && !c->ending && c->rest_len == 0 && !c->stream &&
		    now - c->last_ms >= EVICT_IDLE_MS) {
			srv->stats.evicted++;
			conn_close(c);
			return true;
		}
	}
	return false;
}

/* Takes a new connection, or closes it when over the cap. Over the cap an
 * operator set (--max-connections, API.md §7) the new connection is closed;
 * over the lower cap the descriptor limit imposes, an idle connection may be
 * closed instead to make room, so a node that hit its open-file limit still
 * serves new clients. */
static void accept_one(struct http_server *srv, int fd)
{
	bool fd_bound = srv->max_conns < srv->opts.max_connections;

	if (srv->live >= srv->max_conns && (!fd_bound || !evict_idle(srv))) {
		srv->stats.refused++;
		close(fd);
		return;
	}
	if (srv->tls && srv->tls_handshakes >= TLS_HANDSHAKES_MAX) {
		srv->stats.refused++;
		close(fd);
		tls_refused_at_accept(srv);
		return;
	}
	conn_open(srv, fd);
}

int http_server_adopt_fd(struct http_server *srv, int fd)
{
	unsigned before = srv->live;

	conn_open(srv, fd);
	return srv->live > before ? 0 : KVD_EIO;
}

static void on_poll(uv_poll_t *h, int status, int events);

static void on_accept_retry(uv_timer_t *t)
{
	struct http_server *srv = t->data;

	if (srv->accepting)
		uv_poll_start(&srv->poll, UV_READABLE, on_poll);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct http_server *srv = h->data;

	(void)events;
	if (status < 0)
		return;
	while (srv->accepting) {
		int fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			accept_one(srv, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if ((errno == EMFILE || errno == ENFILE) && evict_idle(srv))
			continue; /* its descriptor is free now */
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* leave the connections queued in the kernel; retry soon */
			srv->stats.accept_paused++;
			uv_poll_stop(&srv->poll);
			uv_timer_start(&srv->retry_timer, on_accept_retry, ACCEPT_RETRY_MS, 0);
		}
		break; /* EAGAIN, or an error on one connection */
	}
}

/* ---- timers ---- */

/* Ends a request that missed its header or body deadline: 408, then close. */
static void conn_timeout(struct http_conn *c)
{
	c->server->stats.timed_out++;
	conn_fail(c, 408);
	conn_flush(c);
}

/*
 * Once per sweep period (at most 1 s), over every open connection (a walk of
 * at most max_connections list nodes, no system call unless one expires):
 * header and body deadlines of the request being received, idle keep-alive
 * connections, and writes still pending idle_timeout_ms after the last
 * activity (a client that stopped reading).
 */
static void on_sweep(uv_timer_t *t)
{
	struct http_server *srv = t->data;
	const struct http_server_opts *o = &srv->opts;
	uint64_t now = uv_now(srv->loop);
	struct http_conn *c, *next;

	for (c = srv->active.head; c; c = next) {
		next = c->next;
		if (c->cur && !c->cur->headers_done && now - c->begin_ms >= o->header_timeout_ms)
			conn_timeout(c);
		else if (c->tls && !kvd_tls_established(c->tls) &&
			 now - c->begin_ms >= o->header_timeout_ms)
			conn_tls_fail(c, "handshake not finished within the header deadline");
		else if (c->cur && c->cur->headers_done && now - c->rx_ms >= o->body_timeout_ms)
			conn_timeout(c);
		else if (now - c->last_ms < o->idle_timeout_ms)
			continue;
		else if (c->stream != NULL && !c->writing)
			continue; /* a stream is quiet, not idle */
		else if (!c->qhead && !c->writing && !c->ending)
			conn_close(c); /* idle */
		else if (c->writing)
			conn_close(c); /* the client stopped reading */
	}
	while ((c = srv->linger.head) && now - c->last_ms >= LINGER_MS)
		conn_close(c);
}

static void on_deadline(uv_timer_t *t)
{
	struct http_server *srv = t->data;

	while (srv->active.head)
		conn_close(srv->active.head);
	while (srv->linger.head)
		conn_close(srv->linger.head);
}

/* ---- server lifecycle ---- */

static void server_free(struct http_server *srv)
{
	http_request_pool_drain(&srv->pool);
	free(srv);
}

static void server_maybe_free(struct http_server *srv)
{
	if (srv->close_reported && srv->handles_open == 0 && srv->stats.outstanding == 0)
		server_free(srv);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct http_server *srv = h->data;

	if (h == (uv_handle_t *)&srv->poll)
		close(srv->fd);
	srv->handles_open--;
	if (srv->handles_open == 0 && srv->closing && !srv->close_reported) {
		srv->close_reported = true;
		if (srv->close_cb)
			srv->close_cb(srv, srv->close_user);
		server_maybe_free(srv);
	}
}

static void server_check_closed(struct http_server *srv)
{
	if (!srv->closing || srv->stats.connections > 0 ||
	    uv_is_closing((uv_handle_t *)&srv->sweep_timer))
		return;
	uv_close((uv_handle_t *)&srv->sweep_timer, on_handle_closed);
	uv_close((uv_handle_t *)&srv->retry_timer, on_handle_closed);
	uv_close((uv_handle_t *)&srv->deadline_timer, on_handle_closed);
	uv_close((uv_handle_t *)&srv->resume_idle, on_handle_closed);
	uv_close((uv_handle_t *)&srv->iteration_prepare, on_handle_closed);
}

static int server_listen(struct http_server *srv, const char *host, uint16_t port, char *errmsg)
{
	struct addrinfo hints, *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char portstr[8];
	int one = 1, rc, fd = -1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
	rc = getaddrinfo(host, portstr, &hints, &ai);
	if (rc != 0 || !ai) {
		if (errmsg)
			snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot resolve listen address %s: %s",
				 host, gai_strerror(rc));
		return KVD_EINVAL;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail_errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
		goto fail_errno;
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
		goto fail_errno;
	if (listen(fd, srv->opts.backlog) != 0)
		goto fail_errno;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		goto fail_errno;
	srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	srv->fd = fd;
	freeaddrinfo(ai);
	return 0;

fail_errno:
	if (errmsg)
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot listen on %s:%u: %s", host,
			 (unsigned)port, strerror(errno));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return KVD_EIO;
}

/* The connection cap: max, lowered so that connections leave a quarter of
 * RLIMIT_NOFILE (at least FD_HEADROOM_MIN descriptors) to the process's own
 * files (log segments, LevelDB, peers). */
static unsigned fd_budget(unsigned max)
{
	struct rlimit rl;
	rlim_t room, budget;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return max;
	room = rl.rlim_cur / 4 > FD_HEADROOM_MIN ? rl.rlim_cur / 4 : FD_HEADROOM_MIN;
	budget = rl.rlim_cur > room + 1 ? rl.rlim_cur - room : 1;
	return budget < max ? (unsigned)budget : max;
}

int http_server_start(uv_loop_t *loop, const char *host, uint16_t port,
		      const struct http_server_opts *opts, http_handler_cb handler_cb, void *user,
		      struct http_server **out, char *errmsg)
{
	struct http_server *srv;
	uint64_t sweep_ms;
	int rc;

	srv = calloc(1, sizeof(*srv));
	if (!srv) {
		rc = KVD_ENOMEM;
		goto out;
	}
	if (opts)
		srv->opts = *opts;
	if (!srv->opts.max_header_bytes)
		srv->opts.max_header_bytes = 16 * 1024;
	if (!srv->opts.max_body_bytes)
		srv->opts.max_body_bytes = 1024 * 1024;
	if (!srv->opts.too_large_body)
		srv->opts.too_large_body = "value too large\n";
	if (!srv->opts.idle_timeout_ms)
		srv->opts.idle_timeout_ms = 60000;
	if (!srv->opts.max_pipeline)
		srv->opts.max_pipeline = 128;
	if (srv->opts.backlog <= 0)
		srv->opts.backlog = 65535;
	if (!srv->opts.header_timeout_ms)
		srv->opts.header_timeout_ms = 10000;
	if (!srv->opts.body_timeout_ms)
		srv->opts.body_timeout_ms = 30000;
	if (!srv->opts.max_output_bytes)
		srv->opts.max_output_bytes = 8u * 1024 * 1024;
	if (!srv->opts.max_total_output_bytes)
		srv->opts.max_total_output_bytes = 64u * 1024 * 1024;
	if (!srv->opts.max_total_body_bytes)
		srv->opts.max_total_body_bytes = 192u * 1024 * 1024;
	if (!srv->opts.max_connections)
		srv->opts.max_connections = 20000;
	srv->max_conns = fd_budget(srv->opts.max_connections);
	srv->tls = kvd_tls_process_server();
	srv->loop = loop;
	srv->handler_cb = handler_cb;
	srv->user = user;
	srv->fd = -1;
	http_parser_settings_init(&srv->settings);
	srv->settings.on_message_begin = on_message_begin;
	srv->settings.on_url = on_url;
	srv->settings.on_header_field = on_header_field;
	srv->settings.on_header_value = on_header_value;
	srv->settings.on_headers_complete = on_headers_complete;
	srv->settings.on_body = on_body;
	srv->settings.on_message_complete = on_message_complete;

	rc = server_listen(srv, host, port, errmsg);
	if (rc != 0)
		goto out_free;
	if (uv_poll_init_socket(loop, &srv->poll, srv->fd) != 0) {
		if (errmsg)
			snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot poll listening socket");
		close(srv->fd);
		rc = KVD_EIO;
		goto out_free;
	}
	srv->poll.data = srv;
	uv_timer_init(loop, &srv->sweep_timer);
	uv_timer_init(loop, &srv->retry_timer);
	uv_timer_init(loop, &srv->deadline_timer);
	uv_idle_init(loop, &srv->resume_idle);
	uv_prepare_init(loop, &srv->iteration_prepare);
	srv->sweep_timer.data = srv->retry_timer.data = srv->deadline_timer.data = srv;
	srv->resume_idle.data = srv->iteration_prepare.data = srv;
	srv->handles_open = 6;
	uv_prepare_start(&srv->iteration_prepare, iteration_begin);
	srv->accepting = true;
	uv_poll_start(&srv->poll, UV_READABLE, on_poll);
	sweep_ms = srv->opts.idle_timeout_ms;
	if (sweep_ms > srv->opts.header_timeout_ms)
		sweep_ms = srv->opts.header_timeout_ms;
	if (sweep_ms > srv->opts.body_timeout_ms)
		sweep_ms = srv->opts.body_timeout_ms;
	sweep_ms /= 4;
	if (sweep_ms < 10)
		sweep_ms = 10;
	if (sweep_ms > 1000)
		sweep_ms = 1000;
	uv_timer_start(&srv->sweep_timer, on_sweep, sweep_ms, sweep_ms);
	*out = srv;
	return 0;

out_free:
	free(srv);
out:
	return rc;
}

uint16_t http_server_port(const struct http_server *server)
{
	return server->port;
}

void http_server_stats_get(const struct http_server *server, struct http_server_stats *stats)
{
	*stats = server->stats;
	stats->kept_bytes = server->kept_total;
}

void http_server_stop_accepting(struct http_server *server)
{
	if (!server->accepting)
		return;
	server->accepting = false;
	uv_timer_stop(&server->retry_timer);
	uv_close((uv_handle_t *)&server->poll, on_handle_closed);
}

void http_server_close(struct http_server *srv, uint64_t timeout_ms, http_server_close_cb done_cb,
		       void *user)
{
	struct http_conn *c, *next;

	assert(!srv->closing);
	http_server_stop_accepting(srv);
	srv->closing = true;
	srv->close_cb = done_cb;
	srv->close_user = user;
	/* lingering connections end by themselves (EOF or LINGER_MS) */
	/* Idle connections close now. A connection with requests in flight
	 * (being received, pipelined behind others, or waiting for their
	 * answer) keeps being served and closes once it is drained, or at the
	 * deadline. */
	for (c = srv->active.head; c; c = next) {
		next = c->next;
		if (!c->qhead && c->rest_len == 0 && !c->writing && !c->ending) {
			c->no_more_input = true;
			conn_read_stop(c);
			conn_close(c);
		} else {
			c->close_when_drained = true;
			conn_flush(c);
		}
	}
	uv_timer_start(&srv->deadline_timer, on_deadline, timeout_ms, 0);
	server_check_closed(srv);
}

/* ---- requests ---- */

uint64_t http_request_start_ms(const struct http_request *req)
{
	return req->start_ms;
}

bool http_request_is_connected(const struct http_request *req)
{
	return req->conn != NULL && !req->conn->closing;
}

/*
 * What answering req does before its bytes are formatted (a response or a
 * stream's head): counts and observes it, and marks it done. Returns 0, or
 * KVD_ESHUTDOWN when its client is gone (req is released).
 */
static int answer_begin(struct http_request *req, int status)
{
	struct http_server *srv = req->server;
	struct http_conn *c = req->conn;

	assert(req->state == HTTP_REQUEST_HANDLING);
	assert(status >= 100 && status <= 999);
	srv->stats.outstanding--;
	if (srv->opts.observe_cb)
		srv->opts.observe_cb(req, status, srv->opts.observe_user);
	if (!c) {
		req_put(req);
		server_maybe_free(srv);
		return KVD_ESHUTDOWN;
	}
	c->nunanswered--;
	if (req->ordered)
		c->nunsafe--;
	req->state = HTTP_REQUEST_DONE;
	return 0;
}

int http_response_send(struct http_request *req, int status, const char *content_type,
		       const char *extra_headers, const void *body, size_t len)
{
	struct http_server *srv = req->server;
	struct http_conn *c = req->conn;
	int rc = answer_begin(req, status);

	if (rc != 0)
		return rc;
	rc = resp_format(req, status, content_type, extra_headers, body, len,
			 srv->closing && req->next == NULL && !c->cur && c->rest_len == 0);
	if (rc != 0) {
		conn_close(c);
		return rc;
	}
	out_add_request(c, req);
	if (!c->in_read)
		conn_flush(c);
	if (c->deferred != NULL && c->nunanswered == 1)
		conn_queue_resume(c);
	else if (c->bp_paused && conn_may_read(c)) {
		if (c->reading && c->rest == NULL && !c->tls && !c->in_read)
			conn_resume(c); /* soft pause, nothing kept: nothing to parse */
		else
			conn_queue_resume(c);
	}
	return 0;
}

/* ---- streaming responses ---- */

/* Appends n bytes to r->out, growing it. Returns 0 or KVD_ENOMEM. */
static int out_append(struct http_request *r, const void *p, size_t n)
{
	if (r->out_len + n > r->out_cap) {
		size_t cap = r->out_cap ? r->out_cap : 4096;
		char *nb;
		while (cap < r->out_len + n)
			cap *= 2;
		nb = realloc(r->out, cap);
		if (!nb)
			return KVD_ENOMEM;
		r->out = nb;
		r->out_cap = cap;
	}
	memcpy(r->out + r->out_len, p, n);
	r->out_len += n;
	return 0;
}

int http_stream_start(struct http_request *req, int status, const char *content_type,
		      const char *extra_headers, http_stream_close_cb close_cb, void *user,
		      struct http_stream **out)
{
	struct http_server *srv = req->server;
	struct http_conn *c = req->conn;
	struct http_stream *s;
	char line[128];
	int rc = answer_begin(req, status);

	if (rc != 0)
		return rc;
	req->out_len = 0;
	s = calloc(1, sizeof(*s));
	snprintf(line, sizeof(line), "HTTP/1.1 %d OK\r\nDate: %s\r\n", status,
		 http_date_now(&srv->date));
	if (s == NULL || out_append(req, line, strlen(line)) != 0 ||
	    (content_type != NULL && (out_append(req, "Content-Type: ", 14) != 0 ||
				      out_append(req, content_type, strlen(content_type)) != 0 ||
				      out_append(req, "\r\n", 2) != 0)) ||
	    out_append(req, "Cache-Control: no-cache\r\nConnection: close\r\n", 44) != 0 ||
	    (extra_headers != NULL && out_append(req, extra_headers, strlen(extra_headers)) != 0) ||
	    out_append(req, "\r\n", 2) != 0) {
		free(s);
		conn_close(c);
		rc = KVD_ENOMEM;
		goto out;
	}
	s->conn = c;
	s->close_cb = close_cb;
	s->user = user;
	c->stream = s;
	c->no_more_input = true; /* nothing after it is a request */
	out_add(c, req, req->out_len);
	if (!c->in_read) {
		conn_flush(c);
		conn_read_start(c);
	}
	*out = s;
out:
	return rc;
}

int http_stream_write(struct http_stream *s, const void *data, size_t len)
{
	struct http_conn *c = s->conn;
	struct http_request *r;
	int rc = 0;

	if (c == NULL || c->closing || c->ending) {
		rc = KVD_ESHUTDOWN;
		goto out;
	}
	/* Everything queued after the stream's head is its own output: the
	 * tail, if any, is a finished buffer not yet handed to the kernel. */
	r = c->qtail;
	if (r == NULL) {
		r = req_get(c->server);
		if (r == NULL) {
			rc = KVD_ENOMEM;
			goto out;
		}
		r->conn = c;
		r->state = HTTP_REQUEST_DONE;
		queue_append(c, r);
	}
	if (out_append(r, data, len) != 0) {
		rc = KVD_ENOMEM;
		goto out;
	}
	out_add(c, r, len);
	if (!c->in_read)
		conn_flush(c);
out:
	return rc;
}

size_t http_stream_unsent(const struct http_stream *s, bool *server_over)
{
	const struct http_conn *c = s->conn;

	if (server_over != NULL)
		*server_over =
		    c != NULL && c->server->out_total >= c->server->opts.max_total_output_bytes;
	return c != NULL ? c->out_pending : 0;
}

void http_stream_close(struct http_stream *s)
{
	struct http_conn *c = s->conn;

	free(s);
	if (c == NULL || c->closing)
		return;
	c->stream = NULL;
	c->close_when_drained = true; /* ends once the queued output is sent */
	if (c->ending)
		return;
	if (!c->writing && c->qhead == NULL)
		conn_end(c);
	else
		conn_flush(c);
}
