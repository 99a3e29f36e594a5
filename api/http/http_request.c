/*
 * http_request.c: the server's request objects and response formatting.
 *
 * A request keeps everything the handler may read in three buffers that
 * survive recycling: head (url, header names and values, then the path and
 * query copies, each NUL-terminated, addressed by offsets so the buffer may
 * grow), body, and out (the formatted response). The pool hands them back
 * out with their capacity, so steady traffic does not allocate; oversized
 * buffers are dropped instead of pooled, bounding what idle pools hold.
 */
#include "api/http/http_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "kvd/errors.h"

#define POOL_MAX	1024	    /* pooled request objects */
#define KEEP_HEAD_BYTES (8 * 1024)  /* larger head buffers are not kept */
#define KEEP_BODY_BYTES (64 * 1024) /* larger body/out buffers are not kept */

/* ---- pool ---- */

struct http_request *http_request_pool_get(struct http_request_pool *pool,
					   struct http_server *server, size_t body_limit)
{
	struct http_request *r = pool->free;

	if (r) {
		pool->free = r->next;
		pool->n--;
	} else {
		r = calloc(1, sizeof(*r));
		if (!r)
			return NULL;
	}
	r->next = NULL;
	r->conn = NULL;
	r->server = server;
	r->state = HTTP_REQUEST_RECEIVING;
	r->method = 0;
	r->keep_alive = r->close_after = r->send_continue = r->in_value = false;
	r->is_head = r->http10 = r->headers_done = false;
	r->head_len = r->head_bytes = r->url_len = 0;
	r->path_off = r->path_len = r->query_off = r->query_len = 0;
	r->nhdrs = 0;
	r->body_len = 0;
	r->body_limit = body_limit;
	r->body_expect = r->body_counted = 0;
	r->out_len = 0;
	r->counted = 0;
	return r;
}

static void request_free(struct http_request *r)
{
	free(r->head);
	free(r->body);
	free(r->out);
	free(r);
}

void http_request_pool_put(struct http_request_pool *pool, struct http_request *r)
{
	if (pool->n >= POOL_MAX) {
		request_free(r);
		return;
	}
	if (r->head_cap > KEEP_HEAD_BYTES) {
		free(r->head);
		r->head = NULL;
		r->head_cap = 0;
	}
	if (r->body_cap > KEEP_BODY_BYTES) {
		free(r->body);
		r->body = NULL;
		r->body_cap = 0;
	}
	if (r->out_cap > KEEP_BODY_BYTES) {
		free(r->out);
		r->out = NULL;
		r->out_cap = 0;
	}
	r->next = pool->free;
	pool->free = r;
	pool->n++;
}

void http_request_pool_drain(struct http_request_pool *pool)
{
	struct http_request *r;

	while ((r = pool->free)) {
		pool->free = r->next;
		request_free(r);
	}
	pool->n = 0;
}

/* ---- head buffer ---- */

/* Makes room for n more bytes in r->head. Returns 0 or KVD_ENOMEM. */
static int head_reserve(struct http_request *r, size_t n)
{
	size_t need = (size_t)r->head_len + n;
	size_t cap = r->head_cap ? r->head_cap : 512;
	char *nb;

	if (need <= r->head_cap)
		return 0;
	if (need > UINT32_MAX / 2)
		return KVD_ENOMEM;
	while (cap < need)
		cap *= 2;
	nb = realloc(r->head, cap);
	if (!nb)
		return KVD_ENOMEM;
	r->head = nb;
	r->head_cap = (uint32_t)cap;
	return 0;
}

int http_request_head_append(struct http_request *r, const char *p, size_t n)
{
	if (head_reserve(r, n) != 0)
		return KVD_ENOMEM;
	memcpy(r->head + r->head_len, p, n);
	r->head_len += (uint32_t)n;
	return 0;
}

/* Appends a copy of head[off, off + len) to head (which may move). */
static int head_copy(struct http_request *r, uint32_t off, uint32_t len)
{
	if (head_reserve(r, len) != 0)
		return KVD_ENOMEM;
	memcpy(r->head + r->head_len, r->head + off, len);
	r->head_len += len;
	return 0;
}

int http_request_url_split(struct http_request *r)
{
	const char *u = r->head;
	uint32_t n = r->url_len, ps = 0, pe, qs = 0, qe = 0, i;
	int rc;

	if (n > 0 && u[0] != '/' && u[0] != '*') {
		/* absolute-form: scheme://authority/path */
		const char *s = memchr(u, ':', n);
		ps = n;
		if (s && (uint32_t)(s - u) + 3 <= n && s[1] == '/' && s[2] == '/') {
			for (i = (uint32_t)(s - u) + 3; i < n && u[i] != '/' && u[i] != '?'; i++)
				;
			ps = i;
		}
	}
	for (pe = ps; pe < n && u[pe] != '?' && u[pe] != '#'; pe++)
		;
	if (pe < n && u[pe] == '?') {
		qs = pe + 1;
		for (qe = qs; qe < n && u[qe] != '#'; qe++)
			;
	}
	r->path_off = r->head_len;
	if (pe == ps) {
		rc = http_request_head_append(r, "/", 1);
		r->path_len = 1;
	} else {
		rc = head_copy(r, ps, pe - ps);
		r->path_len = pe - ps;
	}
	if (rc == 0)
		rc = http_request_head_append(r, "", 1);
	r->query_off = r->head_len;
	r->query_len = qe > qs ? qe - qs : 0;
	if (rc == 0)
		rc = head_copy(r, qs, r->query_len);
	if (rc == 0)
		rc = http_request_head_append(r, "", 1);
	return rc;
}

/* ---- accessors ---- */

int http_request_method(const struct http_request *req)
{
	return req->method;
}

const char *http_request_method_name(const struct http_request *req)
{
	return http_method_str((enum http_method)req->method);
}

const char *http_request_path(const struct http_request *req, size_t *len)
{
	if (len)
		*len = req->path_len;
	return req->head + req->path_off;
}

const char *http_request_query(const struct http_request *req, size_t *len)
{
	if (len)
		*len = req->query_len;
	return req->head + req->query_off;
}

const char *http_request_header(const struct http_request *req, const char *name, size_t *len)
{
	uint32_t i;

	for (i = 0; i < req->nhdrs; i++) {
		const struct http_header_span *h = &req->hdrs[i];
		if (strcasecmp(req->head + h->name_off, name) == 0) {
			if (len)
				*len = h->value_len;
			return req->head + h->value_off;
		}
	}
	return NULL;
}

const char *http_request_body(const struct http_request *req, size_t *len)
{
	if (len)
		*len = req->body_len;
	return req->body_len ? req->body : "";
}

bool http_request_keep_alive(const struct http_request *req)
{
	return req->keep_alive;
}

/* ---- responses ---- */

static const char *status_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 507: return "Insufficient Storage";
	default: return "Status";
	}
}

const char *http_date_now(struct http_date *d)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t now = time(NULL);
	struct tm tm;

	if (now != d->sec && gmtime_r(&now, &tm)) {
		snprintf(d->text, sizeof(d->text), "%s, %02d %s %04d %02d:%02d:%02d GMT",
			 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
			 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
		d->sec = now;
	}
	return d->text;
}

static char *put_str(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

int http_response_format(struct http_request *r, int status, const char *ctype, const char *extra,
			 const void *body, size_t len, bool close, const char *date)
{
	const char *reason = status_reason(status);
	size_t ctype_len = ctype ? strlen(ctype) : 0;
	size_t extra_len = extra ? strlen(extra) : 0;
	size_t body_out = r->is_head ? 0 : len;
	size_t need = 160 + strlen(reason) + strlen(date) + ctype_len + extra_len + body_out;
	char *p;

	if (need > r->out_cap) {
		char *nb = malloc(need);
		if (!nb)
			return KVD_ENOMEM;
		free(r->out);
		r->out = nb;
		r->out_cap = need;
	}
	p = r->out;
	p = put_str(p, "HTTP/1.1 ", 9);
	p = put_u64(p, (uint64_t)status);
	*p++ = ' ';
	p = put_str(p, reason, strlen(reason));
	p = put_str(p, "\r\nDate: ", 8);
	p = put_str(p, date, strlen(date));
	p = put_str(p, "\r\nContent-Length: ", 18);
	p = put_u64(p, len);
	p = put_str(p, "\r\n", 2);
	if (ctype) {
		p = put_str(p, "Content-Type: ", 14);
		p = put_str(p, ctype, ctype_len);
		p = put_str(p, "\r\n", 2);
	}
	if (!r->keep_alive || r->close_after || close) {
		r->close_after = true;
		p = put_str(p, "Connection: close\r\n", 19);
	} else if (r->http10) {
		p = put_str(p, "Connection: keep-alive\r\n", 24);
	}
	if (extra_len)
		p = put_str(p, extra, extra_len);
	p = put_str(p, "\r\n", 2);
	if (body_out)
		p = put_str(p, body, body_out);
	r->out_len = (size_t)(p - r->out);
	return 0;
}
