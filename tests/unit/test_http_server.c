/*
 * test_http_server.c: the HTTP server against real sockets on 127.0.0.1.
 *
 * The server runs on a libuv loop in the test's thread; a client thread
 * speaks raw HTTP over blocking sockets and records the first failed check,
 * which the test then asserts once the loop has stopped.
 */
#include <check.h>
#include <signal.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <http_parser.h>

#include "api/http/http_server.h"
#include "kvd/errors.h"

/* ---- harness ---- */

struct fixture;
typedef void (*client_fn)(struct fixture *f);

struct held {
	struct http_request *req;
	char name[32];
};

struct fixture {
	uv_loop_t loop;
	uv_async_t done_async;
	struct http_server *server;
	uint16_t port;
	client_fn fn;
	char failure[256];
	struct held held[64];
	int nheld;
	int shutdown_results; /* KVD_ESHUTDOWN seen from late answers */
	bool closed;	      /* the close callback ran */
	struct http_server_stats stats;
	uint64_t close_timeout_ms;
	int marks;		    /* /mark requests handled (atomic) */
	int handled;		    /* requests handled (atomic) */
	int observed;		    /* responses seen by observe_cb (atomic) */
	struct http_stream *stream; /* /stream's, until /end or its close_cb */
	int stream_closed;	    /* close_cb calls (loop thread) */
	int after_reads;	    /* after_read_cb calls (atomic) */
};

#define CHECKT(f, cond)                                                                            \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			if (!(f)->failure[0])                                                      \
				snprintf((f)->failure, sizeof((f)->failure), "%s:%d: %s",          \
					 __FILE__, __LINE__, #cond);                               \
			return;                                                                    \
		}                                                                                  \
	} while (0)

struct delayed {
	uv_timer_t timer;
	struct http_request *req;
	struct fixture *f;
};

static void on_delayed_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_delay(uv_timer_t *t)
{
	struct delayed *d = t->data;
	size_t plen;
	const char *path = http_request_path(d->req, &plen);
	int rc = http_response_send(d->req, 200, "text/plain", NULL, path, plen);

	if (rc == KVD_ESHUTDOWN)
		d->f->shutdown_results++;
	t->data = d;
	uv_close((uv_handle_t *)t, on_delayed_closed);
}

static void answer_held_reverse(struct fixture *f)
{
	while (f->nheld > 0) {
		struct held *h = &f->held[--f->nheld];
		if (http_response_send(h->req, 200, "text/plain", NULL, h->name, strlen(h->name)) ==
		    KVD_ESHUTDOWN)
			f->shutdown_results++;
	}
}

static void on_stream_closed(struct http_stream *st, void *user)
{
	struct fixture *f = user;

	if (f->stream == st)
		f->stream = NULL;
	f->stream_closed++;
}

/*
 * Routes: /stream (a streaming response: "hello\n" at once), /push (writes
 * "x\n" to it), /end (closes it), /closed (close_cb calls so far); /hello; /echo (body back, method
 * in X-Method); /hold/N (answered by /release, in reverse order); /delay/N (answered N ms later).
 */
static void handler(struct http_request *req, void *user)
{
	struct fixture *f = user;
	size_t plen, blen;
	const char *path = http_request_path(req, &plen);
	const char *body = http_request_body(req, &blen);
	char extra[128];

	__atomic_add_fetch(&f->handled, 1, __ATOMIC_SEQ_CST);
	if (strcmp(path, "/stream") == 0) {
		if (http_stream_start(req, 200, "text/event-stream", "X-S: 1\r\n", on_stream_closed,
				      f, &f->stream) == 0)
			http_stream_write(f->stream, "hello\n", 6);
	} else if (strcmp(path, "/push") == 0 || strcmp(path, "/end") == 0 ||
		   strcmp(path, "/closed") == 0) {
		char out[16];
		int n = snprintf(out, sizeof(out), "%d", f->stream_closed);
		if (f->stream != NULL && path[1] == 'p')
			http_stream_write(f->stream, "x\n", 2);
		if (f->stream != NULL && path[1] == 'e') {
			http_stream_close(f->stream);
			f->stream = NULL;
		}
		http_response_send(req, 200, "text/plain", NULL, out, (size_t)n);
	} else if (strcmp(path, "/mark") == 0) {
		__atomic_add_fetch(&f->marks, 1, __ATOMIC_SEQ_CST);
		http_response_send(req, 200, "text/plain", NULL, "marked", 6);
	} else if (strncmp(path, "/big/", 5) == 0) {
		size_t n = strtoull(path + 5, NULL, 10);
		char *out = malloc(n + 1);
		memset(out, 'b', n);
		http_response_send(req, 200, "text/plain", NULL, out, n);
		free(out);
	} else if (strcmp(path, "/hello") == 0) {
		http_response_send(req, 200, "text/plain; charset=utf-8", NULL, "hello", 5);
	} else if (strcmp(path, "/echo") == 0) {
		const char *q = http_request_query(req, NULL);
		const char *auth = http_request_header(req, "authorization", NULL);
		snprintf(extra, sizeof(extra), "X-Method: %s\r\nX-Query: %s\r\nX-Auth: %s\r\n",
			 http_request_method_name(req), q, auth ? auth : "-");
		http_response_send(req, 200, "application/octet-stream", extra, body, blen);
	} else if (strncmp(path, "/hold/", 6) == 0 && f->nheld < 64) {
		f->held[f->nheld].req = req;
		snprintf(f->held[f->nheld].name, sizeof(f->held[0].name), "%s", path);
		f->nheld++;
	} else if (strncmp(path, "/p/", 3) == 0) {
		char *out = malloc(plen + 1 + 8192);
		size_t qlen;
		const char *q = http_request_query(req, &qlen);
		int n = snprintf(out, plen + 1 + 8192, "%s?%s", path, q);
		http_response_send(req, 200, "text/plain", NULL, out, (size_t)n);
		free(out);
	} else if (strcmp(path, "/kept") == 0) {
		struct http_server_stats st;
		char out[32];
		int n;
		http_server_stats_get(f->server, &st);
		n = snprintf(out, sizeof(out), "%llu", (unsigned long long)st.kept_bytes);
		http_response_send(req, 200, "text/plain", NULL, out, (size_t)n);
	} else if (strcmp(path, "/count") == 0) {
		char out[16];
		int n = snprintf(out, sizeof(out), "%d", f->nheld);
		http_response_send(req, 200, "text/plain", NULL, out, (size_t)n);
	} else if (strcmp(path, "/release") == 0) {
		http_response_send(req, 200, "text/plain", NULL, "released", 8);
		answer_held_reverse(f);
	} else if (strncmp(path, "/delay/", 7) == 0) {
		struct delayed *d = calloc(1, sizeof(*d));
		d->req = req;
		d->f = f;
		uv_timer_init(&f->loop, &d->timer);
		d->timer.data = d;
		uv_timer_start(&d->timer, on_delay, strtoull(path + 7, NULL, 10), 0);
	} else {
		http_response_send(req, 404, "text/plain; charset=utf-8", NULL, "not found\n", 10);
	}
}

static void on_server_closed(struct http_server *server, void *user)
{
	struct fixture *f = user;

	http_server_stats_get(server, &f->stats);
	f->closed = true;
	/* late answers to requests whose client is gone are still accepted */
	answer_held_reverse(f);
}

static void on_done(uv_async_t *a)
{
	struct fixture *f = a->data;

	http_server_close(f->server, f->close_timeout_ms, on_server_closed, f);
	uv_close((uv_handle_t *)a, NULL);
}

static void *client_main(void *arg)
{
	struct fixture *f = arg;

	f->fn(f);
	uv_async_send(&f->done_async);
	return NULL;
}

/* Starts a server with opts, runs fn on a client thread, stops everything. */
static void run_with(struct fixture *f, const struct http_server_opts *opts, client_fn fn)
{
	char errmsg[KVD_ERRMSG_SIZE];
	pthread_t th;
	int rc;

	ck_assert_int_eq(uv_loop_init(&f->loop), 0);
	rc = http_server_start(&f->loop, "127.0.0.1", 0, opts, handler, f, &f->server, errmsg);
	ck_assert_msg(rc == 0, "start: %s", errmsg);
	f->port = http_server_port(f->server);
	ck_assert_uint_ne(f->port, 0);
	if (!f->close_timeout_ms)
		f->close_timeout_ms = 1000;
	uv_async_init(&f->loop, &f->done_async, on_done);
	f->done_async.data = f;
	f->fn = fn;
	ck_assert_int_eq(pthread_create(&th, NULL, client_main, f), 0);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	pthread_join(th, NULL);
	ck_assert_msg(f->closed, "server close callback did not run");
	ck_assert_int_eq(uv_loop_close(&f->loop), 0);
	ck_assert_msg(f->failure[0] == '\0', "%s", f->failure);
}

/* ---- blocking client helpers ---- */

static int tcp_connect(uint16_t port)
{
	struct sockaddr_in sa;
	struct timeval tv = {5, 0};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static bool send_str(int fd, const char *s)
{
	return send_all(fd, s, strlen(s));
}

struct resp {
	int status;
	char body[70000];
	size_t body_len;
	char hname[64];
	char headers[2048]; /* "name: value\n" lines, names lower-cased */
	size_t headers_len;
	bool done;
	bool keep_alive;
};

struct reader {
	int fd;
	http_parser parser;
	http_parser_settings settings;
	char buf[65536];
	size_t off, len;
	struct resp *resp;
	bool last_was_value;
};

static int rd_on_header_field(http_parser *p, const char *at, size_t len)
{
	struct reader *r = p->data;
	struct resp *s = r->resp;
	size_t i;

	if (r->last_was_value || s->headers_len == 0) {
		if (s->headers_len)
			s->headers[s->headers_len++] = '\n';
	}
	r->last_was_value = false;
	for (i = 0; i < len && s->headers_len + 2 < sizeof(s->headers); i++)
		s->headers[s->headers_len++] =
		    (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
	s->headers[s->headers_len] = '\0';
	return 0;
}

static int rd_on_header_value(http_parser *p, const char *at, size_t len)
{
	struct reader *r = p->data;
	struct resp *s = r->resp;

	if (!r->last_was_value && s->headers_len + 2 < sizeof(s->headers)) {
		s->headers[s->headers_len++] = ':';
		s->headers[s->headers_len++] = ' ';
	}
	r->last_was_value = true;
	if (s->headers_len + len + 2 < sizeof(s->headers)) {
		memcpy(s->headers + s->headers_len, at, len);
		s->headers_len += len;
	}
	s->headers[s->headers_len] = '\0';
	return 0;
}

static int rd_on_body(http_parser *p, const char *at, size_t len)
{
	struct reader *r = p->data;
	struct resp *s = r->resp;

	if (s->body_len + len < sizeof(s->body)) {
		memcpy(s->body + s->body_len, at, len);
		s->body_len += len;
	}
	s->body[s->body_len] = '\0';
	return 0;
}

static int rd_on_message_complete(http_parser *p)
{
	struct reader *r = p->data;

	r->resp->status = (int)p->status_code;
	r->resp->keep_alive = http_should_keep_alive(p);
	r->resp->done = true;
	http_parser_pause(p, 1);
	return 0;
}

static void reader_init(struct reader *r, int fd)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	http_parser_init(&r->parser, HTTP_RESPONSE);
	r->parser.data = r;
	http_parser_settings_init(&r->settings);
	r->settings.on_header_field = rd_on_header_field;
	r->settings.on_header_value = rd_on_header_value;
	r->settings.on_body = rd_on_body;
	r->settings.on_message_complete = rd_on_message_complete;
}

/* Reads one response into *s. Returns false on EOF, error or timeout. */
static bool read_response(struct reader *r, struct resp *s)
{
	memset(s, 0, sizeof(*s));
	r->resp = s;
	r->last_was_value = false;
	http_parser_pause(&r->parser, 0);
	for (;;) {
		if (r->off < r->len) {
			size_t n = http_parser_execute(&r->parser, &r->settings, r->buf + r->off,
						       r->len - r->off);
			enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
			r->off += n;
			if (s->done)
				return true;
			if (e != HPE_OK)
				return false;
		}
		ssize_t got = recv(r->fd, r->buf, sizeof(r->buf), 0);
		if (got <= 0)
			return false;
		r->off = 0;
		r->len = (size_t)got;
	}
}

static bool has_header(const struct resp *s, const char *line)
{
	return strstr(s->headers, line) != NULL;
}

/* True if the peer closes (EOF or reset) within the receive timeout. */
static bool wait_eof(int fd)
{
	char b[4096];

	for (;;) {
		ssize_t n = recv(fd, b, sizeof(b), 0);
		if (n == 0)
			return true;
		if (n < 0)
			return errno == ECONNRESET;
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- tests ---- */

static void client_roundtrip(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	CHECKT(f, strcmp(s->body, "hello") == 0);
	CHECKT(f, has_header(s, "content-type: text/plain; charset=utf-8"));
	CHECKT(f, has_header(s, "content-length: 5"));
	CHECKT(f, has_header(s, "date: "));
	CHECKT(f, s->keep_alive);
	CHECKT(f,
	       send_str(fd, "PUT /echo?x=1&y=%20 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
			    "Content-Length: 11\r\n\r\nhello world"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	CHECKT(f, strcmp(s->body, "hello world") == 0);
	CHECKT(f, has_header(s, "x-method: PUT"));
	CHECKT(f, has_header(s, "x-query: x=1&y=%20"));
	CHECKT(f, has_header(s, "x-auth: Bearer t"));
	CHECKT(f, send_str(fd, "GET /nope HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 404);
	close(fd);
	free(s);
}

START_TEST(test_http_server_start_get_put_roundtrip)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_roundtrip);
	ck_assert_uint_eq(f->stats.requests, 3);
	free(f);
}
END_TEST

static void client_keep_alive(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port), i;

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	for (i = 0; i < 1000; i++) {
		CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
		CHECKT(f, read_response(&rd, s));
		CHECKT(f, s->status == 200 && strcmp(s->body, "hello") == 0);
	}
	close(fd);
	free(s);
}

START_TEST(test_http_server_keep_alive_many_requests)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_keep_alive);
	ck_assert_uint_eq(f->stats.accepted, 1);
	ck_assert_uint_eq(f->stats.requests, 1000);
	free(f);
}
END_TEST

static void client_pipelined(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char name[32];
	int fd = tcp_connect(f->port), i;

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	/* all in one send: the server sees them in one read */
	CHECKT(f, send_str(fd, "GET /hold/1 HTTP/1.1\r\n\r\nGET /hold/2 HTTP/1.1\r\n\r\n"
			       "GET /hello HTTP/1.1\r\n\r\nGET /hold/3 HTTP/1.1\r\n\r\n"
			       "GET /release HTTP/1.1\r\n\r\n"));
	for (i = 1; i <= 3; i++) {
		CHECKT(f, read_response(&rd, s));
		snprintf(name, sizeof(name), "/hold/%d", i);
		CHECKT(f, s->status == 200 && strcmp(s->body, name) == 0);
		if (i == 2) {
			CHECKT(f, read_response(&rd, s));
			CHECKT(f, strcmp(s->body, "hello") == 0);
		}
	}
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, strcmp(s->body, "released") == 0);
	/* and in separate sends, answered out of order across reads */
	CHECKT(f, send_str(fd, "GET /hold/a HTTP/1.1\r\n\r\n"));
	usleep(20000);
	CHECKT(f, send_str(fd, "GET /delay/30 HTTP/1.1\r\n\r\n"));
	usleep(20000);
	CHECKT(f, send_str(fd, "GET /release HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, strcmp(s->body, "/hold/a") == 0);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, strcmp(s->body, "/delay/30") == 0);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, strcmp(s->body, "released") == 0);
	close(fd);
	free(s);
}

START_TEST(test_http_response_send_pipelined_out_of_order)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_pipelined);
	free(f);
}
END_TEST

static void client_chunked(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			       "5\r\nhello\r\n"));
	usleep(20000);
	CHECKT(f, send_str(fd, "1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	CHECKT(f, strcmp(s->body, "hello 0123456789") == 0);
	CHECKT(f, has_header(s, "content-length: 16"));
	/* the connection stays usable */
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	close(fd);
	free(s);
}

static void client_long_url(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char *req = malloc(8000), *want = malloc(8000);
	int fd = tcp_connect(f->port), i, n;

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	/* path and query long enough to grow the head buffer several times */
	n = snprintf(want, 8000, "/p/");
	for (i = 0; i < 2000; i++)
		want[n++] = (char)('a' + i % 26);
	want[n++] = '?';
	for (i = 0; i < 1000; i++)
		want[n++] = (char)('A' + i % 26);
	want[n] = '\0';
	snprintf(req, 8000, "GET http://host:1%s#frag HTTP/1.1\r\nHost: x\r\n\r\n", want);
	CHECKT(f, send_str(fd, req));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	CHECKT(f, strcmp(s->body, want) == 0);
	/* 65 headers: too many */
	n = snprintf(req, 8000, "GET /hello HTTP/1.1\r\n");
	for (i = 0; i < 65; i++)
		n += snprintf(req + n, (size_t)(8000 - n), "X-H%d: v\r\n", i);
	snprintf(req + n, (size_t)(8000 - n), "\r\n");
	CHECKT(f, send_str(fd, req));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 431);
	close(fd);
	free(req);
	free(want);
	free(s);
}

START_TEST(test_http_request_path_long_absolute_url)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_long_url);
	free(f);
}
END_TEST

START_TEST(test_http_server_chunked_body)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_chunked);
	free(f);
}
END_TEST

static void client_big_headers(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char *big = malloc(20000);
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	memset(big, 'a', 19999);
	big[19999] = '\0';
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\nX-Big: "));
	CHECKT(f, send_str(fd, big));
	send_str(fd, "\r\n\r\n");
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 431);
	CHECKT(f, strcmp(s->body, "request header fields too large\n") == 0);
	CHECKT(f, has_header(s, "connection: close"));
	CHECKT(f, wait_eof(fd));
	close(fd);
	/* just under the limit works */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	big[15000] = '\0';
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\nX-Big: "));
	CHECKT(f, send_str(fd, big));
	CHECKT(f, send_str(fd, "\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	close(fd);
	free(big);
	free(s);
}

START_TEST(test_http_server_oversized_headers_431)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_big_headers);
	free(f);
}
END_TEST

static void client_big_body(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char body[3000];
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	memset(body, 'v', sizeof(body));
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nContent-Length: 3000\r\n\r\n"));
	send_all(fd, body, sizeof(body));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 413);
	CHECKT(f, strcmp(s->body, "value too large\n") == 0);
	CHECKT(f, wait_eof(fd));
	close(fd);
	/* a chunked body crossing the limit */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
	CHECKT(f, send_str(fd, "3e8\r\n"));
	send_all(fd, body, 1000);
	send_str(fd, "\r\n3e8\r\n");
	send_all(fd, body, 1000);
	send_str(fd, "\r\n0\r\n\r\n");
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 413);
	CHECKT(f, wait_eof(fd));
	close(fd);
	/* exactly the limit passes */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nContent-Length: 1500\r\n\r\n"));
	CHECKT(f, send_all(fd, body, 1500));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && s->body_len == 1500);
	close(fd);
	free(s);
}

START_TEST(test_http_server_oversized_body_413)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.max_body_bytes = 1500};

	run_with(f, &opts, client_big_body);
	free(f);
}
END_TEST

static size_t small_limit(const struct http_request *req, void *user)
{
	(void)user;
	return strcmp(http_request_path(req, NULL), "/echo") == 0 &&
		       http_request_header(req, "X-Small", NULL)
		   ? 4
		   : 1500;
}

static void client_route_limit(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	CHECKT(f,
	       send_str(fd, "PUT /echo HTTP/1.1\r\nX-Small: 1\r\nContent-Length: 5\r\n\r\nhello"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 413);
	CHECKT(f, strcmp(s->body, "too big for this route\n") == 0);
	CHECKT(f, wait_eof(fd));
	close(fd);
	free(s);
}

START_TEST(test_http_server_body_limit_cb_per_request)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.body_limit_cb = small_limit,
					.too_large_body = "too big for this route\n"};

	run_with(f, &opts, client_route_limit);
	free(f);
}
END_TEST

static void client_malformed(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "THIS IS NOT HTTP\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 400);
	CHECKT(f, strcmp(s->body, "bad request\n") == 0);
	CHECKT(f, has_header(s, "connection: close"));
	CHECKT(f, wait_eof(fd));
	close(fd);
	/* a good request, then garbage: the first is answered, then 400 */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "GET /hold/x HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nBad Header\r\n\r\n"));
	usleep(20000);
	{
		int fd2 = tcp_connect(f->port);
		struct reader rd2;
		CHECKT(f, fd2 >= 0);
		reader_init(&rd2, fd2);
		CHECKT(f, send_str(fd2, "GET /release HTTP/1.1\r\n\r\n"));
		CHECKT(f, read_response(&rd2, s));
		close(fd2);
	}
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "/hold/x") == 0);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 400);
	CHECKT(f, wait_eof(fd));
	close(fd);
	free(s);
}

START_TEST(test_http_server_malformed_request_400)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_malformed);
	free(f);
}
END_TEST

static void client_idle(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);
	uint64_t t0, waited;

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	t0 = now_ms();
	CHECKT(f, wait_eof(fd));
	waited = now_ms() - t0;
	CHECKT(f, waited >= 150 && waited < 1500);
	close(fd);
	/* a connection that never sends anything is closed too */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	CHECKT(f, wait_eof(fd));
	close(fd);
	free(s);
}

/* Reads from fd until buf holds want (NUL-terminated); false on EOF/timeout. */
static bool recv_until(int fd, char *buf, size_t cap, size_t *len, const char *want)
{
	while (strstr(buf, want) == NULL) {
		ssize_t n = *len + 1 < cap ? recv(fd, buf + *len, cap - 1 - *len, 0) : -1;
		if (n <= 0)
			return false;
		*len += (size_t)n;
		buf[*len] = '\0';
	}
	return true;
}

static void client_stream(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char buf[4096] = "";
	size_t len = 0;
	int fd = tcp_connect(f->port), fd2, fd3;

	CHECKT(f, fd >= 0);
	/* Headers without a length, then the body as it is written. */
	CHECKT(f, send_str(fd, "GET /stream HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n"));
	CHECKT(f, recv_until(fd, buf, sizeof(buf), &len, "\r\n\r\nhello\n"));
	CHECKT(f, strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
	CHECKT(f, strstr(buf, "Content-Type: text/event-stream\r\n") != NULL);
	CHECKT(f, strstr(buf, "X-S: 1\r\n") != NULL);
	CHECKT(f, strstr(buf, "Connection: close\r\n") != NULL);
	CHECKT(f, strstr(buf, "Content-Length") == NULL);
	/* Quiet past the idle timeout: a stream is not idle. */
	usleep(600000);
	fd2 = tcp_connect(f->port);
	reader_init(&rd, fd2);
	CHECKT(f, send_str(fd2, "GET /push HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, recv_until(fd, buf, sizeof(buf), &len, "hello\nx\n"));
	/* The pipelined GET /hello after it was never answered; /end closes. */
	close(fd2);
	fd2 = tcp_connect(f->port);
	reader_init(&rd, fd2);
	CHECKT(f, send_str(fd2, "GET /end HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, wait_eof(fd));
	CHECKT(f, strstr(buf + 1, "HTTP/1.1") == NULL); /* one response only */
	close(fd);
	/* A client that goes away: close_cb runs (and /end no longer has it). */
	fd3 = tcp_connect(f->port);
	len = 0;
	buf[0] = '\0';
	CHECKT(f, send_str(fd3, "GET /stream HTTP/1.1\r\n\r\n"));
	CHECKT(f, recv_until(fd3, buf, sizeof(buf), &len, "hello\n"));
	close(fd3);
	usleep(100000);
	CHECKT(f, send_str(fd2, "GET /closed HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, strcmp(s->body, "1") == 0);
	close(fd2);
	free(s);
}

START_TEST(test_http_server_streaming_response)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.idle_timeout_ms = 200};

	run_with(f, &opts, client_stream);
	ck_assert_int_eq(f->stream_closed, 1);
	free(f);
}
END_TEST

START_TEST(test_http_server_idle_timeout_closes)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.idle_timeout_ms = 200};

	run_with(f, &opts, client_idle);
	free(f);
}
END_TEST

static void client_http10(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.0\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	CHECKT(f, wait_eof(fd));
	close(fd);
	/* HTTP/1.0 with keep-alive stays open */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, has_header(s, "connection: keep-alive"));
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	close(fd);
	/* Connection: close on 1.1; what follows it is ignored */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n"
			       "GET /hello HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	CHECKT(f, has_header(s, "connection: close"));
	CHECKT(f, wait_eof(fd));
	close(fd);
	free(s);
}

START_TEST(test_http_server_connection_close_honored)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_http10);
	ck_assert_uint_eq(f->stats.requests, 4);
	free(f);
}
END_TEST

static void client_expect(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char line[64];
	ssize_t n;
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nExpect: 100-continue\r\n"
			       "Content-Length: 4\r\n\r\n"));
	n = recv(fd, line, 25, MSG_WAITALL);
	CHECKT(f, n == 25);
	line[n] = '\0';
	CHECKT(f, strcmp(line, "HTTP/1.1 100 Continue\r\n\r\n") == 0);
	CHECKT(f, send_str(fd, "abcd"));
	reader_init(&rd, fd);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "abcd") == 0);
	close(fd);
	free(s);
}

START_TEST(test_http_server_expect_continue)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_expect);
	free(f);
}
END_TEST

#define MANY_CONNS 2000

static void client_many(struct fixture *f)
{
	static int fds[MANY_CONNS];
	struct resp *s = malloc(sizeof(*s));
	struct reader *rd = malloc(sizeof(*rd));
	int i;

	for (i = 0; i < MANY_CONNS; i++) {
		fds[i] = tcp_connect(f->port);
		CHECKT(f, fds[i] >= 0);
	}
	for (i = 0; i < MANY_CONNS; i++)
		CHECKT(f, send_str(fds[i], "GET /hello HTTP/1.1\r\n\r\n"));
	for (i = 0; i < MANY_CONNS; i++) {
		reader_init(rd, fds[i]);
		CHECKT(f, read_response(rd, s));
		CHECKT(f, s->status == 200);
	}
	/* every connection is still usable */
	for (i = 0; i < MANY_CONNS; i += 97) {
		reader_init(rd, fds[i]);
		CHECKT(f, send_str(fds[i], "GET /hello HTTP/1.1\r\n\r\n"));
		CHECKT(f, read_response(rd, s));
		CHECKT(f, s->status == 200);
	}
	for (i = 0; i < MANY_CONNS; i++)
		close(fds[i]);
	free(rd);
	free(s);
}

START_TEST(test_http_server_many_concurrent_connections)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct rlimit rl;

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2 * MANY_CONNS + 100) {
		rl.rlim_cur = rl.rlim_max;
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	ck_assert_uint_ge(rl.rlim_cur, 2 * MANY_CONNS + 100);
	run_with(f, NULL, client_many);
	ck_assert_uint_eq(f->stats.accepted, MANY_CONNS);
	free(f);
}
END_TEST

static void client_graceful(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "GET /delay/300 HTTP/1.1\r\n\r\n"));
	usleep(50000);
	/* ask for the close now: the in-flight request still gets its answer */
	uv_async_send(&f->done_async);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "/delay/300") == 0);
	CHECKT(f, has_header(s, "connection: close"));
	CHECKT(f, wait_eof(fd));
	close(fd);
	free(s);
}

START_TEST(test_http_server_close_finishes_in_flight)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->close_timeout_ms = 5000;
	run_with(f, NULL, client_graceful);
	ck_assert_uint_eq(f->stats.requests, 1);
	ck_assert_uint_eq(f->stats.connections, 0);
	free(f);
}
END_TEST

static void client_disconnect(struct fixture *f)
{
	int fd = tcp_connect(f->port);
	int fd2;
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));

	CHECKT(f, fd >= 0);
	CHECKT(f, send_str(fd, "GET /hold/gone HTTP/1.1\r\n\r\n"));
	usleep(30000);
	close(fd);
	usleep(30000);
	fd2 = tcp_connect(f->port);
	CHECKT(f, fd2 >= 0);
	reader_init(&rd, fd2);
	CHECKT(f, send_str(fd2, "GET /release HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	close(fd2);
	free(s);
}

START_TEST(test_http_response_send_after_client_disconnect)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_disconnect);
	ck_assert_int_eq(f->shutdown_results, 1);
	free(f);
}
END_TEST

static void client_backpressure(struct fixture *f)
{
	struct reader rd, rd2;
	struct resp *s = malloc(sizeof(*s));
	char *req = malloc(4096), name[32];
	int fd = tcp_connect(f->port), fd2 = tcp_connect(f->port), i, n = 0, got = 0;

	CHECKT(f, fd >= 0 && fd2 >= 0);
	reader_init(&rd, fd);
	reader_init(&rd2, fd2);
	for (i = 0; i < 20; i++)
		n += snprintf(req + n, (size_t)(4096 - n), "GET /hold/%d HTTP/1.1\r\n\r\n", i);
	CHECKT(f, send_str(fd, req));
	while (got < 20) {
		usleep(20000);
		/* never more than max_pipeline (4) handed out at once */
		CHECKT(f, send_str(fd2, "GET /count HTTP/1.1\r\n\r\n"));
		CHECKT(f, read_response(&rd2, s));
		CHECKT(f, atoi(s->body) <= 4);
		CHECKT(f, send_str(fd2, "GET /release HTTP/1.1\r\n\r\n"));
		CHECKT(f, read_response(&rd2, s));
		/* read what was answered so far */
		while (got < 20) {
			struct timeval tv = {0, 200000};
			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			if (!read_response(&rd, s))
				break;
			snprintf(name, sizeof(name), "/hold/%d", got);
			CHECKT(f, s->status == 200 && strcmp(s->body, name) == 0);
			got++;
		}
		if (rd.off >= rd.len)
			reader_init(&rd, fd); /* a timed-out read leaves no partial response */
	}
	close(fd);
	close(fd2);
	free(req);
	free(s);
}

START_TEST(test_http_server_pipeline_backpressure)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.max_pipeline = 4};

	run_with(f, &opts, client_backpressure);
	ck_assert_uint_ge(f->stats.requests, 20);
	free(f);
}
END_TEST

/*
 * A request that arrives in its own read while an unsafe one is unanswered
 * (the read stays armed during that pause) waits: it is not handled until the
 * PUT is answered, and the answers come in order.
 */
static void client_after_unsafe(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "PUT /delay/300 HTTP/1.1\r\nContent-Length: 1\r\n\r\nv"));
	usleep(50000); /* the PUT is handed out, the connection paused */
	CHECKT(f, send_str(fd, "GET /mark HTTP/1.1\r\n\r\n"));
	usleep(100000);
	CHECKT(f, __atomic_load_n(&f->marks, __ATOMIC_SEQ_CST) == 0);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "/delay/300") == 0);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "marked") == 0);
	CHECKT(f, __atomic_load_n(&f->marks, __ATOMIC_SEQ_CST) == 1);
	/* and the connection goes on as before */
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "hello") == 0);
	close(fd);
	free(s);
}

START_TEST(test_http_server_request_after_unsafe_waits)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_after_unsafe);
	ck_assert_uint_eq(f->stats.requests, 3);
	free(f);
}
END_TEST

/* A client that half-closes after an unsafe request still gets its answer:
 * the EOF seen during the pause closes the connection only after it. */
static void client_half_close_unsafe(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "PUT /delay/200 HTTP/1.1\r\nContent-Length: 1\r\n\r\nv"));
	usleep(50000); /* the PUT is handed out, the connection paused */
	CHECKT(f, shutdown(fd, SHUT_WR) == 0);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "/delay/200") == 0);
	CHECKT(f, wait_eof(fd));
	close(fd);
	free(s);
}

START_TEST(test_http_server_half_close_after_unsafe_answered)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_half_close_unsafe);
	ck_assert_uint_eq(f->stats.requests, 1);
	free(f);
}
END_TEST

/* What a paused connection sends is read in one 4 KiB slice and kept; the
 * rest waits in the kernel, and nothing of it is lost. */
#define PIPELINED_MARKS 2000
static void client_kept_slice(struct fixture *f)
{
	static const char mark[] = "GET /mark HTTP/1.1\r\n\r\n";
	size_t n = PIPELINED_MARKS * (sizeof(mark) - 1);
	char *burst = malloc(n);
	struct reader rd, rd2;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port), fd2 = tcp_connect(f->port);

	CHECKT(f, fd >= 0 && fd2 >= 0 && burst != NULL);
	for (size_t i = 0; i < PIPELINED_MARKS; i++)
		memcpy(burst + i * (sizeof(mark) - 1), mark, sizeof(mark) - 1);
	reader_init(&rd, fd);
	reader_init(&rd2, fd2);
	CHECKT(f, send_str(fd, "PUT /delay/400 HTTP/1.1\r\nContent-Length: 1\r\n\r\nv"));
	usleep(50000);			   /* the PUT is handed out, the connection paused */
	CHECKT(f, send_all(fd, burst, n)); /* 46 kB: the kernel's buffers take it */
	usleep(100000);
	CHECKT(f, send_str(fd2, "GET /kept HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd2, s));
	CHECKT(f, s->status == 200 && atoi(s->body) > 0 && atoi(s->body) <= 4096);
	CHECKT(f, __atomic_load_n(&f->marks, __ATOMIC_SEQ_CST) == 0);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "/delay/400") == 0);
	for (int i = 0; i < PIPELINED_MARKS; i++) {
		CHECKT(f, read_response(&rd, s));
		CHECKT(f, s->status == 200 && strcmp(s->body, "marked") == 0);
	}
	CHECKT(f, __atomic_load_n(&f->marks, __ATOMIC_SEQ_CST) == PIPELINED_MARKS);
	CHECKT(f, send_str(fd2, "GET /kept HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd2, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "0") == 0);
	close(fd);
	close(fd2);
	free(burst);
	free(s);
}

START_TEST(test_http_server_paused_input_kept_in_a_slice)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_kept_slice);
	ck_assert_uint_eq(f->stats.requests, 3 + PIPELINED_MARKS);
	free(f);
}
END_TEST

/* Many pipelined requests in one read are answered in order, in turns of a
 * few each (TURN_REQUESTS). */
static void client_turns(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char *burst = malloc(300 * 40);
	char want[32];
	size_t n = 0;
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0 && burst != NULL);
	for (int i = 0; i < 300; i++)
		n += (size_t)sprintf(burst + n, "GET /p/%d HTTP/1.1\r\n\r\n", i);
	reader_init(&rd, fd);
	CHECKT(f, send_all(fd, burst, n));
	for (int i = 0; i < 300; i++) {
		CHECKT(f, read_response(&rd, s));
		snprintf(want, sizeof(want), "/p/%d?", i);
		CHECKT(f, s->status == 200 && strcmp(s->body, want) == 0);
	}
	close(fd);
	free(burst);
	free(s);
}

START_TEST(test_http_server_pipeline_answered_in_turns)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_turns);
	ck_assert_uint_eq(f->stats.requests, 300);
	free(f);
}
END_TEST

static void count_after_read(void *user)
{
	struct fixture *f = user;

	__atomic_add_fetch(&f->after_reads, 1, __ATOMIC_SEQ_CST);
}

/* after_read_cb runs after each read is handled: a request's answer is
 * already out when the hook of its read runs (it is answered inline). */
static void client_after_read(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	for (int i = 0; i < 3; i++) {
		CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\n\r\n"));
		CHECKT(f, read_response(&rd, s));
		CHECKT(f, s->status == 200);
		usleep(10000);
		CHECKT(f, __atomic_load_n(&f->after_reads, __ATOMIC_SEQ_CST) == i + 1);
	}
	close(fd);
	free(s);
}

START_TEST(test_http_server_after_read_cb_per_read)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.after_read_cb = count_after_read};

	run_with(f, &opts, client_after_read);
	ck_assert_int_ge(f->after_reads, 3);
	free(f);
}
END_TEST

/* One past the highest open descriptor, after filling the holes below it
 * (so that a limit just above it leaves no spare room); the fillers are
 * returned in holes[] for closing. */
static int fds_fill(int *holes, int max_holes, int *nholes)
{
	int top = 0, fd;

	*nholes = 0;
	for (fd = 0; fd < 4096; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			top = fd + 1;
	for (fd = 0; fd < top && *nholes < max_holes; fd++)
		if (fcntl(fd, F_GETFD) == -1)
			holes[(*nholes)++] = dup(0);
	return top;
}

#define EMFILE_CONNS 20

static void client_emfile(struct fixture *f)
{
	int fds[EMFILE_CONNS], i;
	struct reader *rd = malloc(sizeof(*rd));
	struct resp *s = malloc(sizeof(*s));
	struct sockaddr_in sa;
	struct timeval tv = {5, 0};
	struct rlimit rl;
	static int holes[4096];
	int nholes;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(f->port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (i = 0; i < EMFILE_CONNS; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		CHECKT(f, fds[i] >= 0);
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	/* the server may now open only half as many sockets as we connect */
	CHECKT(f, getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rl.rlim_cur = (rlim_t)fds_fill(holes, 4096, &nholes) + EMFILE_CONNS / 2;
	CHECKT(f, setrlimit(RLIMIT_NOFILE, &rl) == 0);
	for (i = 0; i < EMFILE_CONNS; i++) {
		CHECKT(f, connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) == 0);
		CHECKT(f, send_str(fds[i], "GET /hello HTTP/1.1\r\n\r\n"));
	}
	for (i = 0; i < EMFILE_CONNS; i++) {
		reader_init(rd, fds[i]);
		CHECKT(f, read_response(rd, s));
		CHECKT(f, s->status == 200);
		/* closing frees a server descriptor for the next one waiting */
		close(fds[i]);
	}
	while (nholes > 0)
		close(holes[--nholes]);
	free(rd);
	free(s);
}

START_TEST(test_http_server_accept_survives_emfile)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct rlimit old;

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	run_with(f, NULL, client_emfile);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	ck_assert_uint_gt(f->stats.accept_paused, 0);
	ck_assert_uint_eq(f->stats.accepted, EMFILE_CONNS);
	free(f);
}
END_TEST

static void client_bytewise(struct fixture *f)
{
	static const char req[] = "PUT /echo?q=1 HTTP/1.1\r\nAuthorization: Bearer tok\r\n"
				  "Content-Length: 5\r\n\r\nhelloGET /hello HTTP/1.1\r\n\r\n";
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);
	size_t i;

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	/* every element arrives split across many reads */
	for (i = 0; i < sizeof(req) - 1; i++) {
		CHECKT(f, send_all(fd, req + i, 1));
		usleep(200);
	}
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "hello") == 0);
	CHECKT(f, has_header(s, "x-auth: Bearer tok"));
	CHECKT(f, has_header(s, "x-query: q=1"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "hello") == 0);
	close(fd);
	free(s);
}

START_TEST(test_http_server_request_split_across_reads)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_bytewise);
	free(f);
}
END_TEST

static void client_garbage(struct fixture *f)
{
	static const char *const pieces[] = {"GET ",
					     "/hello",
					     " HTTP/1.1\r\n",
					     "Host: x\r\n",
					     "\r\n",
					     "Content-Length: ",
					     "Transfer-Encoding: chunked\r\n",
					     "5\r\nhello\r\n",
					     "0\r\n\r\n",
					     "\x00\xff",
					     "PUT /echo HTTP/1.1\r\n",
					     ": :\r\n",
					     "Expect: 100-continue\r\n",
					     "zz\r\n",
					     "HTTP/1.1 200 OK\r\n",
					     "-1\r\n",
					     "99999999999999999999\r\n"};
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char buf[512];
	unsigned seed = 12345;
	int round, fd;

	for (round = 0; round < 300; round++) {
		size_t n = 0;
		int k, parts = 1 + (int)(rand_r(&seed) % 8);
		struct timeval tv = {0, 20000};

		for (k = 0; k < parts; k++) {
			const char *p =
			    pieces[rand_r(&seed) % (sizeof(pieces) / sizeof(pieces[0]))];
			size_t len = strlen(p);
			if (rand_r(&seed) % 4 == 0)
				len = rand_r(&seed) % (len + 1); /* truncated */
			if (n + len < sizeof(buf)) {
				memcpy(buf + n, p, len);
				n += len;
			}
		}
		fd = tcp_connect(f->port);
		CHECKT(f, fd >= 0);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		send_all(fd, buf, n);
		if (rand_r(&seed) % 2)
			shutdown(fd, SHUT_WR);
		recv(fd, buf, sizeof(buf), 0); /* whatever comes, or nothing */
		close(fd);
	}
	/* the server is still fine */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	close(fd);
	free(s);
}

START_TEST(test_http_server_survives_garbage)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.idle_timeout_ms = 100};

	run_with(f, &opts, client_garbage);
	free(f);
}
END_TEST

/* ---- hostile clients: framing, deadlines, output cap, trailers, admit ---- */

/* Each must give 400 and close; the /mark pipelined behind it never runs. */
static const char *const FRAMING_BAD[] = {
    "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "POST /echo HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "POST /echo HTTP/1.1\r\nX-A: a\r\n\tfolded\r\nContent-Length: 0\r\n\r\n",
    "PUT /echo HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
    "PUT /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "PUT /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "PUT /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n",
    "GET /hello HTTP/1.1\r\nHost: x\r\n\r\rGET /hello HTTP/1.1\r\n\r\n",
    "GET /hello HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
};

static void client_framing(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char buf[512];
	size_t i;
	int fd;

	for (i = 0; i < sizeof(FRAMING_BAD) / sizeof(FRAMING_BAD[0]); i++) {
		for (int split = 0; split < 2; split++) {
			size_t len = strlen(FRAMING_BAD[i]);
			fd = tcp_connect(f->port);
			CHECKT(f, fd >= 0);
			reader_init(&rd, fd);
			snprintf(buf, sizeof(buf), "%sPOST /mark HTTP/1.1\r\n\r\n", FRAMING_BAD[i]);
			if (split) { /* byte by byte: the checks hold across reads */
				for (size_t k = 0; k < strlen(buf); k++) {
					if (!send_all(fd, buf + k, 1))
						break;
					if (k > len - 8)
						usleep(2000);
				}
			} else {
				CHECKT(f, send_str(fd, buf));
			}
			CHECKT(f, read_response(&rd, s));
			if (s->status != 400)
				fprintf(stderr, "framing case %zu (split %d): %d\n", i, split,
					s->status);
			CHECKT(f, s->status == 400);
			CHECKT(f, !read_response(&rd, s)); /* nothing else, then EOF */
			close(fd);
			CHECKT(f, __atomic_load_n(&f->marks, __ATOMIC_SEQ_CST) == 0);
		}
	}
	/* well-formed chunking, pipelined, still works */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			       "5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\nPOST /mark HTTP/1.1\r\n\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "hello!") == 0);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "marked") == 0);
	close(fd);
	free(s);
}

START_TEST(test_http_server_strict_framing_400)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_framing);
	ck_assert_int_eq(f->marks, 1);
	free(f);
}
END_TEST

static void client_deadlines(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	uint64_t t0;
	int fd;

	/* one byte, then nothing: 408 at the header deadline */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	t0 = now_ms();
	CHECKT(f, send_str(fd, "G"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 408);
	CHECKT(f, now_ms() - t0 >= 300);
	CHECKT(f, wait_eof(fd));
	close(fd);
	/* headers trickling in, each byte in time, still miss the deadline */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	t0 = now_ms();
	for (int i = 0; i < 100 && send_str(fd, "X"); i++)
		usleep(20000);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 400 || s->status == 408); /* "XXX..." is no method */
	close(fd);
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\n"));
	for (int i = 0; i < 100 && send_str(fd, "X-A: b\r\n"); i++)
		usleep(20000);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 408);
	close(fd);
	/* a body that stops: 408 at the body deadline */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 408);
	close(fd);
	/* a slow body that keeps moving is served */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n"));
	for (int i = 0; i < 10; i++) {
		CHECKT(f, send_str(fd, "z"));
		usleep(100000); /* 1 s in all, each gap under the 300 ms deadline */
	}
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "zzzzzzzzzz") == 0);
	close(fd);
	free(s);
}

START_TEST(test_http_server_header_and_body_deadlines_408)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {
	    .header_timeout_ms = 300, .body_timeout_ms = 300, .idle_timeout_ms = 60000};

	run_with(f, &opts, client_deadlines);
	ck_assert_uint_ge(f->stats.timed_out, 3);
	free(f);
}
END_TEST

#define CAP_REQS 20000

static void client_output_cap(struct fixture *f)
{
	static char req[1100];
	struct timeval tv = {1, 0};
	int rcv = 4096, fd = socket(AF_INET, SOCK_STREAM, 0), sent = 0, handled;
	struct sockaddr_in sa;

	CHECKT(f, fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(f->port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECKT(f, connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	snprintf(req, sizeof(req), "GET /big/16384 HTTP/1.1\r\nX-Pad: %01000d\r\n\r\n", 0);
	/* never read: the server must stop reading, so our send blocks */
	while (sent < CAP_REQS && send_str(fd, req))
		sent++;
	handled = __atomic_load_n(&f->handled, __ATOMIC_SEQ_CST);
	fprintf(stderr, "output cap: %d requests sent before send blocked, %d handled\n", sent,
		handled);
	CHECKT(f, sent < CAP_REQS);
	CHECKT(f, handled < 1000); /* 16 KiB each: some MB of socket buffers at most */
	close(fd);
}

START_TEST(test_http_server_output_cap_pauses_reading)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.max_output_bytes = 64 * 1024};

	run_with(f, &opts, client_output_cap);
	free(f);
}
END_TEST

/* Three connections pipeline without reading: the node-wide cap stops them
 * all well before their own caps would; a fourth, reading one is served. */
static void client_total_output_cap(struct fixture *f)
{
	static char req[1100];
	struct timeval tv = {1, 0};
	int rcv = 4096, fds[3], sent = 0, handled, i;
	struct sockaddr_in sa;
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(f->port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	snprintf(req, sizeof(req), "GET /big/16384 HTTP/1.1\r\nX-Pad: %01000d\r\n\r\n", 0);
	for (i = 0; i < 3; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		CHECKT(f, fds[i] >= 0);
		setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
		setsockopt(fds[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		CHECKT(f, connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) == 0);
		for (int k = 0; k < CAP_REQS && send_str(fds[i], req); k++)
			sent++;
	}
	handled = __atomic_load_n(&f->handled, __ATOMIC_SEQ_CST);
	fprintf(stderr, "total output cap: %d requests sent on 3 connections, %d handled\n", sent,
		handled);
	CHECKT(f, sent < 3 * CAP_REQS);
	/* each connection alone could hold 512 answers; together they hold a
	 * few (plus what the socket buffers took: about 180 each) */
	CHECKT(f, handled < 1000);
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	for (i = 0; i < 3; i++) {
		CHECKT(f, send_str(fd, "GET /hello HTTP/1.1\r\n\r\n"));
		CHECKT(f, read_response(&rd, s));
		CHECKT(f, s->status == 200);
	}
	close(fd);
	for (i = 0; i < 3; i++)
		close(fds[i]);
	free(s);
}

START_TEST(test_http_server_total_output_cap)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.max_output_bytes = 8 * 1024 * 1024,
					.max_total_output_bytes = 64 * 1024};

	run_with(f, &opts, client_total_output_cap);
	free(f);
}
END_TEST

/* Bodies being received share a node-wide budget: past it, 503. */
static void client_body_budget(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char *body = malloc(200000);
	int a = tcp_connect(f->port), b;

	memset(body, 'q', 200000);
	CHECKT(f, a >= 0);
	CHECKT(f, send_str(a, "PUT /echo HTTP/1.1\r\nContent-Length: 200000\r\n\r\n"));
	CHECKT(f, send_all(a, body, 199999)); /* all but the last byte */
	usleep(200000);
	b = tcp_connect(f->port);
	CHECKT(f, b >= 0);
	reader_init(&rd, b);
	CHECKT(f, send_str(b, "PUT /echo HTTP/1.1\r\nContent-Length: 200000\r\n\r\n"));
	send_all(b, body, 200000);
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 503 && strcmp(s->body, "server busy\n") == 0);
	close(b);
	reader_init(&rd, a);
	CHECKT(f, send_all(a, "q", 1));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && has_header(s, "content-length: 200000"));
	/* the budget is free again */
	CHECKT(f, send_str(a, "PUT /echo HTTP/1.1\r\nContent-Length: 200000\r\n\r\n"));
	CHECKT(f, send_all(a, body, 200000));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && has_header(s, "content-length: 200000"));
	close(a);
	free(body);
	free(s);
}

START_TEST(test_http_server_body_budget_503)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.max_total_body_bytes = 300000};

	run_with(f, &opts, client_body_budget);
	free(f);
}
END_TEST

static void client_trailers(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	char *big = malloc(20000);
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	/* a trailer never becomes a header (and the last one has no NUL) */
	CHECKT(f, send_str(fd, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			       "2\r\nhi\r\n0\r\nAuthorization: Bearer evil\r\nX-T: v\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "hi") == 0);
	CHECKT(f, has_header(s, "x-auth: -"));
	/* trailers count against the header limit */
	memset(big, 'a', 19999);
	big[19999] = '\0';
	CHECKT(f, send_str(fd, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			       "0\r\nX-Big: "));
	CHECKT(f, send_str(fd, big));
	CHECKT(f, send_str(fd, "\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 431);
	close(fd);
	free(big);
	free(s);
}

START_TEST(test_http_server_trailers_are_not_headers)
{
	struct fixture *f = calloc(1, sizeof(*f));

	run_with(f, NULL, client_trailers);
	free(f);
}
END_TEST

static int admit_secret(const struct http_request *req, void *user, const char **body)
{
	const char *auth = http_request_header(req, "Authorization", NULL);

	(void)user;
	(void)body;
	if (strcmp(http_request_path(req, NULL), "/echo") == 0 &&
	    (auth == NULL || strcmp(auth, "Bearer ok") != 0))
		return 401;
	return 0;
}

static void observe(const struct http_request *req, int status, void *user)
{
	struct fixture *f = user;

	(void)req;
	(void)status;
	__atomic_add_fetch(&f->observed, 1, __ATOMIC_SEQ_CST);
}

static void client_admit(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fd = tcp_connect(f->port);

	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	/* refused from the headers: no 100 Continue, no body read */
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nContent-Length: 1000000\r\n"
			       "Expect: 100-continue\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 401 && strcmp(s->body, "unauthorized\n") == 0);
	CHECKT(f, wait_eof(fd));
	close(fd);
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	reader_init(&rd, fd);
	CHECKT(f, send_str(fd, "PUT /echo HTTP/1.1\r\nAuthorization: Bearer ok\r\n"
			       "Content-Length: 2\r\n\r\nok"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200 && strcmp(s->body, "ok") == 0);
	close(fd);
	CHECKT(f, __atomic_load_n(&f->observed, __ATOMIC_SEQ_CST) == 2);
	free(s);
}

START_TEST(test_http_server_admit_cb_before_body)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {
	    .admit_cb = admit_secret, .observe_cb = observe, .observe_user = f};

	run_with(f, &opts, client_admit);
	free(f);
}
END_TEST

static void client_conn_cap(struct fixture *f)
{
	struct reader rd;
	struct resp *s = malloc(sizeof(*s));
	int fds[4], fd, i;

	for (i = 0; i < 4; i++) { /* busy: a request in progress */
		fds[i] = tcp_connect(f->port);
		CHECKT(f, fds[i] >= 0);
		CHECKT(f, send_str(fds[i], "GET /hello HTTP/1.1\r\n"));
	}
	usleep(300000);
	fd = tcp_connect(f->port); /* over the cap, nothing idle: closed */
	CHECKT(f, fd >= 0);
	CHECKT(f, wait_eof(fd));
	close(fd);
	for (i = 0; i < 4; i++) /* finishing makes them idle */
		CHECKT(f, send_str(fds[i], "\r\n"));
	usleep(300000);
	/* The operator's cap refuses newcomers even when the holders are idle:
	 * only the cap the descriptor limit imposes evicts an idle one. */
	fd = tcp_connect(f->port);
	CHECKT(f, fd >= 0);
	CHECKT(f, wait_eof(fd));
	close(fd);
	reader_init(&rd, fds[0]); /* the idle ones are still served */
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	CHECKT(f, send_str(fds[0], "GET /hello HTTP/1.1\r\n\r\n"));
	CHECKT(f, read_response(&rd, s));
	CHECKT(f, s->status == 200);
	for (i = 0; i < 4; i++)
		close(fds[i]);
	free(s);
}

START_TEST(test_http_server_max_connections)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct http_server_opts opts = {.max_connections = 4};

	run_with(f, &opts, client_conn_cap);
	ck_assert_uint_ge(f->stats.refused, 2);
	ck_assert_uint_eq(f->stats.evicted, 0);
	free(f);
}
END_TEST

static Suite *http_server_suite(void)
{
	Suite *s = suite_create("http_server");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_http_server_start_get_put_roundtrip);
	tcase_add_test(tc, test_http_server_keep_alive_many_requests);
	tcase_add_test(tc, test_http_response_send_pipelined_out_of_order);
	tcase_add_test(tc, test_http_server_chunked_body);
	tcase_add_test(tc, test_http_request_path_long_absolute_url);
	tcase_add_test(tc, test_http_server_oversized_headers_431);
	tcase_add_test(tc, test_http_server_oversized_body_413);
	tcase_add_test(tc, test_http_server_body_limit_cb_per_request);
	tcase_add_test(tc, test_http_server_malformed_request_400);
	tcase_add_test(tc, test_http_server_idle_timeout_closes);
	tcase_add_test(tc, test_http_server_connection_close_honored);
	tcase_add_test(tc, test_http_server_expect_continue);
	tcase_add_test(tc, test_http_server_many_concurrent_connections);
	tcase_add_test(tc, test_http_server_close_finishes_in_flight);
	tcase_add_test(tc, test_http_response_send_after_client_disconnect);
	tcase_add_test(tc, test_http_server_pipeline_backpressure);
	tcase_add_test(tc, test_http_server_accept_survives_emfile);
	tcase_add_test(tc, test_http_server_request_split_across_reads);
	tcase_add_test(tc, test_http_server_survives_garbage);
	tcase_add_test(tc, test_http_server_strict_framing_400);
	tcase_add_test(tc, test_http_server_header_and_body_deadlines_408);
	tcase_add_test(tc, test_http_server_output_cap_pauses_reading);
	tcase_add_test(tc, test_http_server_total_output_cap);
	tcase_add_test(tc, test_http_server_body_budget_503);
	tcase_add_test(tc, test_http_server_trailers_are_not_headers);
	tcase_add_test(tc, test_http_server_admit_cb_before_body);
	tcase_add_test(tc, test_http_server_max_connections);
	tcase_add_test(tc, test_http_server_streaming_response);
	tcase_add_test(tc, test_http_server_request_after_unsafe_waits);
	tcase_add_test(tc, test_http_server_half_close_after_unsafe_answered);
	tcase_add_test(tc, test_http_server_after_read_cb_per_read);
	tcase_add_test(tc, test_http_server_paused_input_kept_in_a_slice);
	tcase_add_test(tc, test_http_server_pipeline_answered_in_turns);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(http_server_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN); /* as the daemon does: writes to gone peers fail */
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
