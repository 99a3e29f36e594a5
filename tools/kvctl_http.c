/*
 * kvctl_http.c: kvctl's blocking HTTP/1.1 client (kvctl_http.h).
 *
 * Why not api/http's client: that one runs on a libuv loop and keeps
 * connections alive for the daemon's peers; kvctl makes a handful of
 * requests, one after another, each with a deadline, and reads a watch
 * stream until interrupted. A blocking socket with poll() says that in a
 * page.
 *
 * Framing: the request always carries Content-Length (0 without a body) and
 * "Connection: close", so a response body ends at its Content-Length, at
 * the last chunk of a chunked body, or where the server closes. Every read
 * and write waits at most until the caller's deadline.
 */
#include "tools/kvctl_http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kvd/errors.h"

#define HEAD_MAX  (64 * 1024) /* bytes of response head accepted */
#define CHUNK_MAX ((uint64_t)1 << 40)

enum body_mode { BODY_LENGTH, BODY_CHUNKED, BODY_EOF };

struct kvctl_http_conn {
	const struct kvctl_transport *t;
	void *state;
	char buf[16384]; /* bytes read and not yet consumed: buf[pos..end) */
	size_t pos, end;
	enum body_mode mode;
	uint64_t left; /* BODY_LENGTH: body bytes left; BODY_CHUNKED: of this chunk */
	int done;      /* the body ended */
	int chunks;    /* BODY_CHUNKED: chunks begun so far */
};

int64_t kvctl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
	struct pollfd p = {.fd = fd, .events = events};
	int rv;

	for (;;) {
		int wait = -1;
		int64_t left = 1;

		if (deadline_ms >= 0) {
			left = deadline_ms - kvctl_now_ms();
			wait = left <= 0 ? 0 : left > 1000000 ? 1000000 : (int)left;
		}
		rv = poll(&p, 1, wait); /* polled once even past the deadline */
		if (rv > 0)
			return 0;
		if (rv < 0 && errno != EINTR)
			return KVD_EIO;
		if (left <= 0)
			return KVD_ETIMEDOUT;
		/* timeout of this slice or EINTR: the deadline decides */
	}
}

static int tcp_connect(const char *host, uint16_t port, int64_t deadline_ms, void **state,
		       char *errmsg, size_t errmsg_size)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL, *ai;
	char service[8];
	int fd = -1, rv, gai, err = 0;

	snprintf(service, sizeof(service), "%u", (unsigned)port);
	gai = getaddrinfo(host, service, &hints, &res);
	if (gai != 0) {
		snprintf(errmsg, errmsg_size, "%s:%u: %s", host, (unsigned)port, gai_strerror(gai));
		rv = KVD_EIO;
		goto out;
	}
	rv = KVD_EIO;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		socklen_t len = sizeof(err);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			rv = 0;
			break;
		}
		err = errno;
		if (err == EINPROGRESS) {
			rv = wait_fd(fd, POLLOUT, deadline_ms);
			if (rv == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
			    err == 0)
				break;
			if (rv == KVD_ETIMEDOUT)
				err = ETIMEDOUT;
			rv = KVD_EIO;
		}
		close(fd);
		fd = -1;
	}
	if (rv != 0) {
		snprintf(errmsg, errmsg_size, "%s:%u: %s", host, (unsigned)port, strerror(err));
		goto out_free;
	}
	*state = (void *)(intptr_t)fd;
out_free:
	freeaddrinfo(res);
out:
	return rv;
}

static long tcp_read(void *state, char *buf, size_t len, int64_t deadline_ms)
{
	int fd = (int)(intptr_t)state;

	for (;;) {
		ssize_t n = recv(fd, buf, len, 0);
		int rv;

		if (n >= 0)
			return (long)n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return KVD_EIO;
		rv = wait_fd(fd, POLLIN, deadline_ms);
		if (rv != 0)
			return rv;
	}
}

static long tcp_write(void *state, const char *buf, size_t len, int64_t deadline_ms)
{
	int fd = (int)(intptr_t)state;

	for (;;) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		int rv;

		if (n >= 0)
			return (long)n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return KVD_EIO;
		rv = wait_fd(fd, POLLOUT, deadline_ms);
		if (rv != 0)
			return rv;
	}
}

static void tcp_close(void *state)
{
	close((int)(intptr_t)state);
}

static const struct kvctl_transport TCP = {tcp_connect, tcp_read, tcp_write, tcp_close, NULL};

/* ": <the transport's reason>" for an error message, or "". */
static const char *why(const struct kvctl_http_conn *c, char *buf, size_t size)
{
	const char *w = c->t->why != NULL ? c->t->why(c->state) : NULL;

	snprintf(buf, size, "%s%s", w != NULL ? ": " : "", w != NULL ? w : "");
	return buf;
}

const struct kvctl_transport *kvctl_transport_tcp(void)
{
	return &TCP;
}

static int write_all(struct kvctl_http_conn *c, const char *p, size_t len, int64_t deadline_ms)
{
	while (len > 0) {
		long n = c->t->write(c->state, p, len, deadline_ms);
		if (n < 0)
			return (int)n;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads more bytes into buf, compacting it first. 0 at EOF means KVD_EIO
 * for callers that need more. */
static long fill(struct kvctl_http_conn *c, int64_t deadline_ms)
{
	long n;

	if (c->pos > 0) {
		memmove(c->buf, c->buf + c->pos, c->end - c->pos);
		c->end -= c->pos;
		c->pos = 0;
	}
	if (c->end == sizeof(c->buf))
		return KVD_ETOOBIG;
	n = c->t->read(c->state, c->buf + c->end, sizeof(c->buf) - c->end, deadline_ms);
	if (n > 0)
		c->end += (size_t)n;
	return n;
}

/* Returns one line (without CRLF, NUL-terminated in place) from buf, or
 * NULL with *rv set. */
static char *read_line(struct kvctl_http_conn *c, int64_t deadline_ms, int *rv)
{
	for (;;) {
		char *nl = memchr(c->buf + c->pos, '\n', c->end - c->pos);
		long n;

		if (nl != NULL) {
			char *line = c->buf + c->pos;
			c->pos = (size_t)(nl - c->buf) + 1;
			*nl = '\0';
			if (nl > line && nl[-1] == '\r')
				nl[-1] = '\0';
			return line;
		}
		n = fill(c, deadline_ms);
		if (n <= 0) {
			*rv = n == 0 ? KVD_EIO : (int)n;
			return NULL;
		}
	}
}

static char *dup_value(const char *v)
{
	while (*v == ' ' || *v == '\t')
		v++;
	return strdup(v);
}

/* Parses the status line and headers; sets the body mode. */
static int read_head(struct kvctl_http_conn *c, struct kvctl_http_head *head, int64_t deadline_ms,
		     char *errmsg, size_t errmsg_size)
{
	int rv = 0, chunked = 0, have_length = 0;
	uint64_t length = 0;
	size_t total = 0;
	char *line = read_line(c, deadline_ms, &rv);

	if (line == NULL)
		goto fail;
	if (strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12 || line[8] != ' ' ||
	    sscanf(line + 9, "%3d", &head->status) != 1 || head->status < 100) {
		rv = KVD_ECORRUPT;
		goto fail;
	}
	for (;;) {
		char *colon, *v;

		line = read_line(c, deadline_ms, &rv);
		if (line == NULL)
			goto fail;
		total += strlen(line) + 2;
		if (total > HEAD_MAX) {
			rv = KVD_ECORRUPT;
			goto fail;
		}
		if (*line == '\0')
			break;
		colon = strchr(line, ':');
		if (colon == NULL) {
			rv = KVD_ECORRUPT;
			goto fail;
		}
		*colon = '\0';
		v = colon + 1;
		if (strcasecmp(line, "Content-Length") == 0) {
			char *end;
			length = strtoull(v, &end, 10);
			have_length = 1;
		} else if (strcasecmp(line, "Transfer-Encoding") == 0) {
			chunked = strstr(v, "chunked") != NULL;
		} else if (strcasecmp(line, "Location") == 0 && head->location == NULL) {
			head->location = dup_value(v);
		} else if (strcasecmp(line, "ETag") == 0 && head->etag == NULL) {
			head->etag = dup_value(v);
		} else if (strcasecmp(line, "Content-Type") == 0 && head->content_type == NULL) {
			head->content_type = dup_value(v);
		} else if (strcasecmp(line, "X-Kvd-Compacted-Revision") == 0 &&
			   head->compacted == NULL) {
			head->compacted = dup_value(v);
		}
	}
	if (chunked) {
		c->mode = BODY_CHUNKED;
		c->left = 0;
	} else if (have_length) {
		c->mode = BODY_LENGTH;
		c->left = length;
		c->done = length == 0;
	} else {
		c->mode = BODY_EOF;
	}
	if (head->status == 204 || head->status == 304)
		c->done = 1;
	return 0;
fail : {
	char w[200];
	snprintf(errmsg, errmsg_size, "%s reading the response%s",
		 rv == KVD_ECORRUPT ? "not an HTTP response" : kvd_strerror(rv),
		 why(c, w, sizeof(w)));
}
	return rv;
}

void kvctl_http_head_clear(struct kvctl_http_head *head)
{
	free(head->location);
	free(head->etag);
	free(head->content_type);
	free(head->compacted);
	memset(head, 0, sizeof(*head));
}

void kvctl_http_close(struct kvctl_http_conn *c)
{
	if (c == NULL)
		return;
	c->t->close(c->state);
	free(c);
}

int kvctl_http_open(const struct kvctl_transport *t, const struct kvctl_http_request *req,
		    int64_t deadline_ms, struct kvctl_http_conn **conn,
		    struct kvctl_http_head *head, int *sent, char *errmsg, size_t errmsg_size)
{
	struct kvctl_http_conn *c = calloc(1, sizeof(*c));
	char *hdr = NULL;
	int rv, len;
	int v6 = strchr(req->host, ':') != NULL;
	int64_t connect_deadline = deadline_ms;

	*sent = 0;
	memset(head, 0, sizeof(*head));
	if (c == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	c->t = t;
	if (req->connect_timeout_ms > 0) {
		int64_t cd = kvctl_now_ms() + req->connect_timeout_ms;
		if (deadline_ms < 0 || cd < deadline_ms)
			connect_deadline = cd;
	}
	rv = t->connect(req->host, req->port, connect_deadline, &c->state, errmsg, errmsg_size);
	if (rv != 0) {
		free(c);
		goto out;
	}
	len = asprintf(&hdr,
		       "%s %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nUser-Agent: kvctl\r\n"
		       "Connection: close\r\nContent-Length: %zu\r\n%s\r\n",
		       req->method, req->path, v6 ? "[" : "", req->host, v6 ? "]" : "",
		       (unsigned)req->port, req->body ? req->body_len : 0,
		       req->extra_headers ? req->extra_headers : "");
	if (len < 0) {
		rv = KVD_ENOMEM;
		goto out_close;
	}
	*sent = 1;
	rv = write_all(c, hdr, (size_t)len, deadline_ms);
	if (rv == 0 && req->body != NULL)
		rv = write_all(c, req->body, req->body_len, deadline_ms);
	if (rv != 0) {
		char w[200];
		snprintf(errmsg, errmsg_size, "%s:%u: %s sending the request%s", req->host,
			 (unsigned)req->port, kvd_strerror(rv), why(c, w, sizeof(w)));
		goto out_close;
	}
	rv = read_head(c, head, deadline_ms, errmsg, errmsg_size);
	if (rv != 0) {
		char what[256];
		snprintf(what, sizeof(what), "%s", errmsg);
		snprintf(errmsg, errmsg_size, "%s:%u: %s", req->host, (unsigned)req->port, what);
		kvctl_http_head_clear(head);
		goto out_close;
	}
	*conn = c;
	c = NULL;
out_close:
	kvctl_http_close(c);
out:
	free(hdr);
	if (rv != 0 && rv != KVD_ENOMEM && rv != KVD_ETIMEDOUT && rv != KVD_ECORRUPT)
		rv = KVD_EIO;
	return rv;
}

/* Starts the next chunk of a chunked body: reads its size line (and the
 * CRLF ending the previous chunk). */
static int next_chunk(struct kvctl_http_conn *c, int64_t deadline_ms, int first)
{
	int rv = 0;
	char *line, *end;
	uint64_t size;

	if (!first) {
		line = read_line(c, deadline_ms, &rv); /* CRLF after the data */
		if (line == NULL)
			return rv;
		if (*line != '\0')
			return KVD_ECORRUPT;
	}
	line = read_line(c, deadline_ms, &rv);
	if (line == NULL)
		return rv;
	size = strtoull(line, &end, 16);
	if (end == line || size > CHUNK_MAX)
		return KVD_ECORRUPT;
	if (size == 0) {
		c->done = 1; /* trailers, if any, are not read: the connection closes */
		return 0;
	}
	c->left = size;
	return 0;
}

long kvctl_http_body_read(struct kvctl_http_conn *c, char *buf, size_t len, int64_t deadline_ms)
{
	size_t avail, n;

	if (c->done || len == 0)
		return 0;
	if (c->mode == BODY_CHUNKED && c->left == 0) {
		int rv = next_chunk(c, deadline_ms, c->chunks++ == 0);
		if (rv != 0)
			return rv;
		if (c->done)
			return 0;
	}
	if (c->pos == c->end) {
		long r = fill(c, deadline_ms);
		if (r < 0)
			return r;
		if (r == 0) {
			c->done = 1;
			return c->mode == BODY_EOF ? 0 : KVD_EIO;
		}
	}
	avail = c->end - c->pos;
	n = avail < len ? avail : len;
	if (c->mode != BODY_EOF && n > c->left)
		n = (size_t)c->left;
	memcpy(buf, c->buf + c->pos, n);
	c->pos += n;
	if (c->mode != BODY_EOF) {
		c->left -= n;
		if (c->mode == BODY_LENGTH && c->left == 0)
			c->done = 1;
	}
	return (long)n;
}

void kvctl_http_response_clear(struct kvctl_http_response *resp)
{
	kvctl_http_head_clear(&resp->head);
	free(resp->body);
	resp->body = NULL;
	resp->body_len = 0;
}

int kvctl_http_do(const struct kvctl_transport *t, const struct kvctl_http_request *req,
		  int64_t deadline_ms, size_t max_body, struct kvctl_http_response *resp, int *sent,
		  char *errmsg, size_t errmsg_size)
{
	struct kvctl_http_conn *c = NULL;
	char *body = NULL;
	size_t len = 0, cap = 0;
	int rv;

	memset(resp, 0, sizeof(*resp));
	rv = kvctl_http_open(t, req, deadline_ms, &c, &resp->head, sent, errmsg, errmsg_size);
	if (rv != 0)
		goto out;
	for (;;) {
		long n;

		if (cap - len < 4097) {
			char *nb;
			cap = cap ? cap * 2 : 8192;
			nb = realloc(body, cap);
			if (nb == NULL) {
				rv = KVD_ENOMEM;
				goto out_head;
			}
			body = nb;
		}
		n = kvctl_http_body_read(c, body + len, cap - len - 1, deadline_ms);
		if (n == 0)
			break;
		if (n < 0) {
			rv = (int)n == KVD_ETIMEDOUT ? KVD_ETIMEDOUT : KVD_EIO;
			snprintf(errmsg, errmsg_size, "%s:%u: %s reading the response body",
				 req->host, (unsigned)req->port, kvd_strerror((int)n));
			goto out_head;
		}
		len += (size_t)n;
		if (len > max_body) {
			rv = KVD_ETOOBIG;
			snprintf(errmsg, errmsg_size, "%s:%u: response body over %zu bytes",
				 req->host, (unsigned)req->port, max_body);
			goto out_head;
		}
	}
	body[len] = '\0';
	resp->body = body;
	resp->body_len = len;
	body = NULL;
	goto out_conn;
out_head:
	kvctl_http_head_clear(&resp->head);
out_conn:
	kvctl_http_close(c);
	free(body);
out:
	return rv;
}
