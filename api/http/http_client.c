/*
 * http_client.c: keep-alive, pipelining HTTP/1.1 client for one peer.
 *
 * State of the client (c->state):
 *   IDLE        no connection; the next request starts an attempt
 *   RESOLVING   uv_getaddrinfo in flight (names only)
 *   CONNECTING  uv_tcp_connect (and with TLS the handshake) in flight, bounded
 *               by connect_timeout_ms
 *   CONNECTED   requests are written as they come, pipelined
 *   BACKOFF     the last attempt failed; the next waits for backoff_timer
 *
 * Requests move pending -> inflight (once handed to uv_write) -> completed.
 * Responses are matched to inflight in order. A failed attempt fails every
 * pending request with KVD_EIO at once (the peer is unreachable now) and
 * doubles the backoff; requests submitted during the backoff wait for the
 * next attempt, bounded by their own timeouts. A broken or timed-out
 * connection fails what is in flight on it and is replaced on demand.
 *
 * Invariants:
 * - Every request's callback runs exactly once; a request's memory is freed
 *   only once its callback has run and no uv_write still holds its buffer.
 * - User callbacks may submit requests or close the client; after each one,
 *   code re-checks c->closing and the connection before going on.
 * - The client is freed only when every handle (timers, idle, connections)
 *   has been closed and no getaddrinfo is outstanding.
 *
 * TLS (when the process has a client context, see tls.h): the handshake is
 * part of connecting (a failed one is a failed attempt: pending requests fail
 * and the client backs off; its reason is logged once per change); requests
 * are encrypted into one ciphertext buffer per write, responses decrypted
 * before the parser sees them. The peer's certificate must name its host.
 */
#include "api/http/http_client.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "api/http/tls.h"
#include "kvd/errors.h"

#define READ_BUF_BYTES (64 * 1024)
#define WRITE_MAX_BUFS 64

enum client_state { C_IDLE, C_RESOLVING, C_CONNECTING, C_CONNECTED, C_BACKOFF };

struct creq {
	struct creq *next;
	http_client_cb cb;
	void *user;
	uint64_t deadline; /* loop time in ms; 0 = none */
	char *buf;	   /* serialized request */
	size_t len;	   /* bytes */
	int status;	   /* for deferred completions */
	bool is_head;
	bool in_write;	/* buf referenced by an active uv_write */
	bool completed; /* callback has run */
};

struct creq_list {
	struct creq *head, *tail;
};

struct cconn {
	uv_tcp_t tcp; /* first */
	uv_connect_t connect_req;
	uv_write_t write_req;
	http_parser parser;
	struct http_client *client;
	struct creq *wbatch[WRITE_MAX_BUFS];
	unsigned wn;
	struct kvd_tls_conn *tls; /* NULL: plain HTTP */
	char *tls_out;		  /* ciphertext held by the uv_write in flight */
	bool tls_failed;	  /* a TLS error ended it: its session is not reused */
	bool writing, closing, no_keep, failed;
};

struct http_client {
	uv_loop_t *loop;
	struct http_client_opts opts;
	struct kvd_tls_ctx *tls;	 /* NULL: plain HTTP (borrowed) */
	char tls_err[128];		 /* last handshake failure logged, "" after a success */
	struct kvd_tls_session *session; /* offered on the next connection (owned) */
	char host[256];
	char hostport[300]; /* Host header */
	char port[8];
	struct sockaddr_storage addr;
	bool numeric;
	uv_getaddrinfo_t gai;
	bool resolving;
	uv_timer_t timer; /* deadlines: requests and connect */
	uint64_t armed;	  /* deadline the timer is armed for; 0 = none */
	uv_timer_t backoff_timer;
	uv_idle_t idle; /* runs deferred completions */
	unsigned handles_open;
	struct creq_list pending, inflight, deferred;
	unsigned nqueued; /* pending + inflight */
	struct cconn *conn;
	enum client_state state;
	uint64_t connect_deadline;
	uint64_t backoff_ms;
	http_parser_settings settings;
	char *rbuf;
	char *body;
	size_t body_len, body_cap;
	bool interim;
	bool closing;
	struct http_client_stats stats;
};

static void client_kick(struct http_client *c);
static void timer_arm(struct http_client *c, uint64_t deadline);

/* ---- lists and completions ---- */

static void list_push(struct creq_list *l, struct creq *r)
{
	r->next = NULL;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
}

static struct creq *list_pop(struct creq_list *l)
{
	struct creq *r = l->head;

	if (r) {
		l->head = r->next;
		if (!l->head)
			l->tail = NULL;
		r->next = NULL;
	}
	return r;
}

static void creq_free(struct creq *r)
{
	free(r->buf);
	free(r);
}

/* Runs the callback of a request no longer on any list. */
static void creq_complete(struct http_client *c, struct creq *r, int status, const char *body,
			  size_t len)
{
	if (status < 0) {
		c->stats.failures++;
		body = NULL;
		len = 0;
	} else {
		c->stats.responses++;
	}
	r->completed = true;
	r->cb(status, body, len, r->user);
	if (!r->in_write)
		creq_free(r);
}

/* Detaches the whole list first: callbacks may add requests meanwhile. */
static void list_fail(struct http_client *c, struct creq_list *l, int status, bool queued)
{
	struct creq_list tmp = *l;
	struct creq *r;

	l->head = l->tail = NULL;
	while ((r = list_pop(&tmp))) {
		if (queued)
			c->nqueued--;
		creq_complete(c, r, status, NULL, 0);
	}
}

static void on_idle(uv_idle_t *h)
{
	struct http_client *c = h->data;
	struct creq_list tmp = c->deferred;
	struct creq *r;

	c->deferred.head = c->deferred.tail = NULL;
	uv_idle_stop(h);
	while ((r = list_pop(&tmp)))
		creq_complete(c, r, r->status, NULL, 0);
}

static void client_maybe_free(struct http_client *c)
{
	if (c->closing && c->handles_open == 0 && !c->resolving) {
		kvd_tls_session_destroy(c->session);
		free(c->rbuf);
		free(c->body);
		free(c);
	}
}

static void on_handle_closed(uv_handle_t *h)
{
	struct http_client *c = h->data;

	c->handles_open--;
	client_maybe_free(c);
}

/* ---- connections ---- */

static void on_conn_closed(uv_handle_t *h)
{
	struct cconn *k = (struct cconn *)h;
	struct http_client *c = k->client;

	free(k->tls_out);
	kvd_tls_conn_destroy(k->tls);
	free(k);
	c->handles_open--;
	client_maybe_free(c);
}

/* Drops the current connection; what is in flight on it fails with status. */
static void conn_reset(struct http_client *c, int status)
{
	struct cconn *k = c->conn;

	if (!k)
		return;
	c->conn = NULL;
	c->state = C_IDLE;
	k->closing = true;
	if (k->tls && kvd_tls_established(k->tls) && !k->tls_failed) {
		/* its ticket resumes the next connection; the close_notify keeps
		 * OpenSSL from marking the session unresumable when it is freed */
		struct kvd_tls_session *s;
		kvd_tls_close_notify(k->tls);
		s = kvd_tls_session_take(k->tls);
		if (s != NULL) {
			kvd_tls_session_destroy(c->session);
			c->session = s;
		}
	}
	uv_close((uv_handle_t *)&k->tcp, on_conn_closed);
	list_fail(c, &c->inflight, status, true);
}

static void on_backoff(uv_timer_t *t)
{
	struct http_client *c = t->data;

	c->state = C_IDLE;
	if (c->pending.head)
		client_kick(c);
}

/* The attempt failed: fail what waits for it, then back off. */
static void connect_failed(struct http_client *c)
{
	uint64_t delay = c->backoff_ms;

	c->backoff_ms = delay * 2 > c->opts.backoff_max_ms ? c->opts.backoff_max_ms : delay * 2;
	c->state = C_BACKOFF;
	uv_timer_start(&c->backoff_timer, on_backoff, delay, 0);
	list_fail(c, &c->pending, KVD_EIO, true);
}

static void on_write(uv_write_t *w, int status)
{
	struct cconn *k = w->data;
	struct http_client *c = k->client;
	unsigned i;

	for (i = 0; i < k->wn; i++) {
		struct creq *r = k->wbatch[i];
		r->in_write = false;
		if (r->completed)
			creq_free(r);
	}
	k->wn = 0;
	k->writing = false;
	free(k->tls_out);
	k->tls_out = NULL;
	if (k->closing)
		return;
	if (status < 0) {
		conn_reset(c, KVD_EIO);
		client_kick(c);
		return;
	}
	client_kick(c);
}

/* Encrypts the k->wn request buffers into one ciphertext buffer
 * (k->tls_out), which replaces bufs[0]. Returns 0 or a negative code. */
static int conn_tls_seal(struct cconn *k, uv_buf_t *bufs)
{
	unsigned i;
	size_t len;
	int rc = 0;

	for (i = 0; i < k->wn && rc == 0; i++)
		rc = kvd_tls_write(k->tls, bufs[i].base, bufs[i].len);
	if (rc == 0) {
		len = kvd_tls_take(k->tls, &k->tls_out);
		if (k->tls_out == NULL)
			rc = KVD_ENOMEM;
		else
			bufs[0] = uv_buf_init(k->tls_out, (unsigned)len);
	}
	return rc;
}

static void conn_write(struct http_client *c)
{
	struct cconn *k = c->conn;
	uv_buf_t bufs[WRITE_MAX_BUFS];
	struct creq *r;

	if (!k || k->writing || k->no_keep || !c->pending.head)
		return;
	k->wn = 0;
	while (k->wn < WRITE_MAX_BUFS && (r = list_pop(&c->pending))) {
		r->in_write = true;
		list_push(&c->inflight, r);
		k->wbatch[k->wn] = r;
		bufs[k->wn] = uv_buf_init(r->buf, (unsigned)r->len);
		k->wn++;
	}
	k->writing = true;
	k->write_req.data = k;
	if ((k->tls && conn_tls_seal(k, bufs) != 0) ||
	    uv_write(&k->write_req, (uv_stream_t *)&k->tcp, bufs, k->tls ? 1 : k->wn, on_write) !=
		0) {
		unsigned i;
		free(k->tls_out);
		k->tls_out = NULL;
		for (i = 0; i < k->wn; i++)
			k->wbatch[i]->in_write = false;
		k->wn = 0;
		k->writing = false;
		conn_reset(c, KVD_EIO);
	}
}

/* ---- response parsing ---- */

static int on_message_begin(http_parser *p)
{
	struct cconn *k = p->data;

	k->client->body_len = 0;
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct cconn *k = p->data;
	struct http_client *c = k->client;

	c->interim = p->status_code / 100 == 1;
	if (!c->interim && c->inflight.head && c->inflight.head->is_head)
		return 1; /* no body follows a response to HEAD */
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct cconn *k = p->data;
	struct http_client *c = k->client;

	if (len > c->opts.max_response_bytes - c->body_len) {
		k->failed = true;
		return -1;
	}
	if (c->body_len + len + 1 > c->body_cap) {
		size_t cap = c->body_cap ? c->body_cap : 4096;
		char *nb;

		while (cap < c->body_len + len + 1)
			cap *= 2;
		nb = realloc(c->body, cap);
		if (!nb)
			return -1;
		c->body = nb;
		c->body_cap = cap;
	}
	memcpy(c->body + c->body_len, at, len);
	c->body_len += len;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct cconn *k = p->data;
	struct http_client *c = k->client;
	struct creq *r;

	if (c->interim)
		return 0; /* 1xx: the real response follows */
	r = list_pop(&c->inflight);
	if (!r)
		return -1; /* a response nobody asked for */
	c->nqueued--;
	if (!http_should_keep_alive(p))
		k->no_keep = true;
	if (c->body)
		c->body[c->body_len] = '\0';
	creq_complete(c, r, (int)p->status_code, c->body ? c->body : "", c->body_len);
	if (k->closing || k->no_keep)
		http_parser_pause(p, 1);
	return 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct cconn *k = (struct cconn *)h;

	(void)hint;
	buf->base = k->client->rbuf;
	buf->len = READ_BUF_BYTES;
}

static void connect_failed(struct http_client *c);

/* Parses len response bytes. Returns false once the connection is gone. */
static bool conn_input(struct cconn *k, const char *data, size_t len)
{
	struct http_client *c = k->client;
	enum http_errno e;

	http_parser_execute(&k->parser, &c->settings, data, len);
	if (k->closing)
		return false;
	e = HTTP_PARSER_ERRNO(&k->parser);
	if (e == HPE_PAUSED || k->no_keep) {
		/* the server ends the connection after that response */
		conn_reset(c, KVD_EIO);
		client_kick(c);
		return false;
	} else if (e != HPE_OK) {
		struct creq *r = list_pop(&c->inflight);
		if (r) {
			c->nqueued--;
			creq_complete(c, r, k->failed ? KVD_ETOOBIG : KVD_ECORRUPT, NULL, 0);
		}
		if (c->conn == k) {
			conn_reset(c, KVD_EIO);
			client_kick(c);
		}
		return false;
	}
	return true;
}

/* Logs a TLS failure with the peer, once until the reason changes or a
 * handshake succeeds (a refused peer is retried every few hundred ms). */
static void tls_err_log(struct http_client *c, const char *err)
{
	if (strncmp(c->tls_err, err, sizeof(c->tls_err) - 1) != 0) {
		snprintf(c->tls_err, sizeof(c->tls_err), "%s", err);
		kvd_tls_log(2, "tls connect failed", "peer=%s reason=\"%s\"", c->hostport, err);
	}
}

/* The TLS handshake finished or failed: the attempt's outcome. */
static void conn_tls_connected(struct cconn *k, const char *err)
{
	struct http_client *c = k->client;

	if (err != NULL) {
		tls_err_log(c, err);
		kvd_tls_send(k->tls, (uv_stream_t *)&k->tcp); /* the alert, if any */
		conn_reset(c, KVD_EIO);
		connect_failed(c);
		return;
	}
	c->stats.connects++;
	if (kvd_tls_resumed(k->tls))
		c->stats.tls_resumed++;
	c->backoff_ms = c->opts.backoff_min_ms;
	c->state = C_CONNECTED;
	conn_write(c);
}

/* Ciphertext from the peer: handshake, then decrypted responses. */
static void conn_tls_input(struct cconn *k, const char *data, size_t len)
{
	struct http_client *c = k->client;
	char err[KVD_ERRMSG_SIZE] = "";
	bool was = kvd_tls_established(k->tls);
	ssize_t n;

	if (kvd_tls_feed(k->tls, data, len, err) != 0) {
		conn_reset(c, KVD_EIO);
		client_kick(c);
		return;
	}
	for (;;) {
		n = kvd_tls_read(k->tls, c->rbuf, READ_BUF_BYTES, err);
		if (kvd_tls_pending(k->tls) > 0 && n >= 0 &&
		    kvd_tls_send(k->tls, (uv_stream_t *)&k->tcp) != 0)
			n = KVD_EIO;
		if (!was && (n < 0 || kvd_tls_established(k->tls))) {
			was = true;
			conn_tls_connected(k, n < 0 ? (err[0] ? err : "handshake failed") : NULL);
			if (n < 0 || k->closing || c->conn != k)
				return;
		}
		if (n < 0) {
			k->tls_failed = n != KVD_ESHUTDOWN;
			if (n != KVD_ESHUTDOWN && err[0])
				tls_err_log(c, err); /* e.g. our certificate refused (TLS 1.3) */
			conn_reset(c, KVD_EIO);
			client_kick(c);
			return;
		}
		if (n == 0 || !conn_input(k, c->rbuf, (size_t)n))
			return;
	}
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct cconn *k = (struct cconn *)s;
	struct http_client *c = k->client;

	if (k->closing || nread == 0)
		return;
	if (nread < 0) {
		/* a body delimited by EOF ends here */
		if (nread == UV_EOF && c->inflight.head)
			http_parser_execute(&k->parser, &c->settings, NULL, 0);
		if (k->closing)
			return;
		if (k->tls && !kvd_tls_established(k->tls)) {
			conn_tls_connected(k, "connection closed during the handshake");
			return;
		}
		conn_reset(c, KVD_EIO);
		client_kick(c);
		return;
	}
	if (k->tls)
		conn_tls_input(k, buf->base, (size_t)nread);
	else
		conn_input(k, buf->base, (size_t)nread);
}

static void on_connect(uv_connect_t *req, int status)
{
	struct cconn *k = req->data;
	struct http_client *c = k->client;

	if (k->closing)
		return;
	if (status < 0) {
		conn_reset(c, KVD_EIO);
		connect_failed(c);
		return;
	}
	uv_tcp_nodelay(&k->tcp, 1);
	if (uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read) != 0) {
		conn_reset(c, KVD_EIO);
		connect_failed(c);
		return;
	}
	if (c->tls) { /* still connecting until the handshake is done */
		k->tls = kvd_tls_conn_create(c->tls, c->host);
		if (k->tls != NULL)
			kvd_tls_session_offer(k->tls, c->session);
		if (k->tls == NULL || kvd_tls_handshake(k->tls, NULL) < 0 ||
		    kvd_tls_send(k->tls, (uv_stream_t *)&k->tcp) != 0) {
			conn_reset(c, KVD_EIO);
			connect_failed(c);
		}
		return;
	}
	c->stats.connects++;
	c->backoff_ms = c->opts.backoff_min_ms;
	c->state = C_CONNECTED;
	conn_write(c);
}

static void connect_to(struct http_client *c, const struct sockaddr *sa)
{
	struct cconn *k = calloc(1, sizeof(*k));

	if (!k) {
		connect_failed(c);
		return;
	}
	k->client = c;
	uv_tcp_init(c->loop, &k->tcp);
	c->handles_open++;
	http_parser_init(&k->parser, HTTP_RESPONSE);
	k->parser.data = k;
	c->conn = k;
	c->state = C_CONNECTING;
	k->connect_req.data = k;
	if (uv_tcp_connect(&k->connect_req, &k->tcp, sa, on_connect) != 0) {
		conn_reset(c, KVD_EIO);
		connect_failed(c);
		return;
	}
	c->connect_deadline = uv_now(c->loop) + c->opts.connect_timeout_ms;
	timer_arm(c, c->connect_deadline);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct http_client *c = req->data;

	c->resolving = false;
	if (c->closing) {
		uv_freeaddrinfo(res);
		client_maybe_free(c);
		return;
	}
	if (status < 0 || !res) {
		uv_freeaddrinfo(res);
		connect_failed(c);
		return;
	}
	connect_to(c, res->ai_addr);
	uv_freeaddrinfo(res);
}

static void client_kick(struct http_client *c)
{
	struct addrinfo hints;

	if (c->closing)
		return;
	if (c->state == C_CONNECTED) {
		conn_write(c);
		return;
	}
	if (c->state != C_IDLE || !c->pending.head)
		return;
	c->stats.connect_attempts++;
	if (c->numeric) {
		connect_to(c, (const struct sockaddr *)&c->addr);
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	c->gai.data = c;
	c->state = C_RESOLVING;
	if (uv_getaddrinfo(c->loop, &c->gai, on_resolved, c->host, c->port, &hints) != 0) {
		connect_failed(c);
		return;
	}
	c->resolving = true;
}

/* ---- deadlines ---- */

static void on_timer(uv_timer_t *t);

static void timer_arm(struct http_client *c, uint64_t deadline)
{
	uint64_t now = uv_now(c->loop);

	if (deadline == 0 || (c->armed && c->armed <= deadline))
		return;
	c->armed = deadline;
	uv_timer_start(&c->timer, on_timer, deadline > now ? deadline - now : 0, 0);
}

static uint64_t list_expire(struct http_client *c, struct creq_list *l, uint64_t now,
			    struct creq_list *expired)
{
	struct creq *r, *next, *prev = NULL;
	uint64_t next_deadline = 0;

	for (r = l->head; r; r = next) {
		next = r->next;
		if (r->deadline && r->deadline <= now) {
			if (prev)
				prev->next = next;
			else
				l->head = next;
			if (l->tail == r)
				l->tail = prev;
			c->nqueued--;
			list_push(expired, r);
			continue;
		}
		if (r->deadline && (!next_deadline || r->deadline < next_deadline))
			next_deadline = r->deadline;
		prev = r;
	}
	return next_deadline;
}

static void on_timer(uv_timer_t *t)
{
	struct http_client *c = t->data;
	uint64_t now = uv_now(c->loop);
	struct creq_list expired = {NULL, NULL}, expired_inflight = {NULL, NULL};
	uint64_t next_p, next_i;

	c->armed = 0;
	if (c->state == C_CONNECTING && c->connect_deadline <= now) {
		conn_reset(c, KVD_EIO);
		connect_failed(c);
		if (c->closing)
			return;
	}
	next_p = list_expire(c, &c->pending, now, &expired);
	next_i = list_expire(c, &c->inflight, now, &expired_inflight);
	if (expired_inflight.head) {
		/* the connection is stuck: reset it; the rest in flight fail too */
		conn_reset(c, KVD_EIO);
		next_i = 0;
	}
	list_fail(c, &expired_inflight, KVD_ETIMEDOUT, false);
	list_fail(c, &expired, KVD_ETIMEDOUT, false);
	if (c->closing)
		return;
	if (next_i && (!next_p || next_i < next_p))
		next_p = next_i;
	if (c->state == C_CONNECTING && (!next_p || c->connect_deadline < next_p))
		next_p = c->connect_deadline;
	timer_arm(c, next_p);
	client_kick(c);
}

/* ---- public ---- */

static int parse_address(struct http_client *c, const char *address, char *errmsg)
{
	const char *colon = strrchr(address, ':');
	const char *h = address;
	size_t hlen;
	char *end;
	unsigned long port;

	if (!colon)
		goto bad;
	port = strtoul(colon + 1, &end, 10);
	if (*end != '\0' || colon[1] == '\0' || port == 0 || port > 65535)
		goto bad;
	hlen = (size_t)(colon - address);
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	if (hlen == 0) {
		h = "127.0.0.1";
		hlen = 9;
	}
	if (hlen >= sizeof(c->host))
		goto bad;
	memcpy(c->host, h, hlen);
	c->host[hlen] = '\0';
	snprintf(c->port, sizeof(c->port), "%lu", port);
	if (strchr(c->host, ':'))
		snprintf(c->hostport, sizeof(c->hostport), "[%s]:%lu", c->host, port);
	else
		snprintf(c->hostport, sizeof(c->hostport), "%s:%lu", c->host, port);
	if (uv_ip4_addr(c->host, (int)port, (struct sockaddr_in *)&c->addr) == 0 ||
	    uv_ip6_addr(c->host, (int)port, (struct sockaddr_in6 *)&c->addr) == 0)
		c->numeric = true;
	return 0;
bad:
	if (errmsg)
		snprintf(errmsg, KVD_ERRMSG_SIZE, "bad peer address \"%s\" (want host:port)",
			 address);
	return KVD_EINVAL;
}

int http_client_create(uv_loop_t *loop, const char *address, const struct http_client_opts *opts,
		       struct http_client **out, char *errmsg)
{
	struct http_client *c = calloc(1, sizeof(*c));
	int rc;

	if (!c) {
		rc = KVD_ENOMEM;
		goto out;
	}
	if (opts)
		c->opts = *opts;
	if (!c->opts.connect_timeout_ms)
		c->opts.connect_timeout_ms = 1000;
	if (!c->opts.backoff_min_ms)
		c->opts.backoff_min_ms = 50;
	if (!c->opts.backoff_max_ms)
		c->opts.backoff_max_ms = 1000;
	if (!c->opts.max_queue)
		c->opts.max_queue = 1024;
	if (!c->opts.max_response_bytes)
		c->opts.max_response_bytes = 64 * 1024 * 1024;
	c->backoff_ms = c->opts.backoff_min_ms;
	c->tls = kvd_tls_process_client();
	rc = parse_address(c, address, errmsg);
	if (rc != 0)
		goto out_free;
	c->rbuf = malloc(READ_BUF_BYTES);
	if (!c->rbuf) {
		rc = KVD_ENOMEM;
		goto out_free;
	}
	c->loop = loop;
	http_parser_settings_init(&c->settings);
	c->settings.on_message_begin = on_message_begin;
	c->settings.on_headers_complete = on_headers_complete;
	c->settings.on_body = on_body;
	c->settings.on_message_complete = on_message_complete;
	uv_timer_init(loop, &c->timer);
	uv_timer_init(loop, &c->backoff_timer);
	uv_idle_init(loop, &c->idle);
	c->timer.data = c->backoff_timer.data = c->idle.data = c;
	c->handles_open = 3;
	*out = c;
	return 0;

out_free:
	free(c->rbuf);
	free(c);
out:
	return rc;
}

int http_client_request(struct http_client *c, const char *method, const char *path_and_query,
			const char *headers, const void *body, size_t len, uint64_t timeout_ms,
			http_client_cb cb, void *user)
{
	struct creq *r;
	size_t hlen = headers ? strlen(headers) : 0;
	size_t cap =
	    strlen(method) + strlen(path_and_query) + strlen(c->hostport) + hlen + 96 + len;
	int n;

	if (c->closing)
		return KVD_ESHUTDOWN;
	r = calloc(1, sizeof(*r));
	if (!r)
		return KVD_ENOMEM;
	r->buf = malloc(cap);
	if (!r->buf) {
		free(r);
		return KVD_ENOMEM;
	}
	n = snprintf(r->buf, cap, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n%s\r\n",
		     method, path_and_query, c->hostport, len, headers ? headers : "");
	if (n < 0 || (size_t)n + len > cap) {
		creq_free(r);
		return KVD_EINVAL;
	}
	if (len)
		memcpy(r->buf + n, body, len);
	r->len = (size_t)n + len;
	r->cb = cb;
	r->user = user;
	r->is_head = strcmp(method, "HEAD") == 0;
	if (c->nqueued >= c->opts.max_queue) {
		r->status = KVD_EBUSY;
		list_push(&c->deferred, r);
		uv_idle_start(&c->idle, on_idle);
		return 0;
	}
	r->deadline = timeout_ms ? uv_now(c->loop) + timeout_ms : 0;
	list_push(&c->pending, r);
	c->nqueued++;
	timer_arm(c, r->deadline);
	client_kick(c);
	return 0;
}

void http_client_stats_get(const struct http_client *client, struct http_client_stats *stats)
{
	*stats = client->stats;
}

void http_client_close(struct http_client *c)
{
	if (!c || c->closing)
		return;
	c->closing = true;
	if (c->resolving)
		uv_cancel((uv_req_t *)&c->gai);
	conn_reset(c, KVD_ESHUTDOWN);
	list_fail(c, &c->pending, KVD_ESHUTDOWN, true);
	list_fail(c, &c->deferred, KVD_ESHUTDOWN, false);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->backoff_timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}
