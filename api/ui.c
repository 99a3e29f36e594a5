/*
 * ui.c: serves the embedded console. The files never change while the node
 * runs, so a strong ETag (from the build's bytes) lets the browser revalidate
 * instead of downloading again; nothing else is cached, so a new binary's
 * page is picked up at the next load.
 */
#include "api/ui.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <http_parser.h>

#include "api/http/http_server.h"

#define TEXT "text/plain; charset=utf-8"

static const struct kvd_ui_asset *find(const char *name, size_t len)
{
	const struct kvd_ui_asset *a;

	for (a = kvd_ui_assets; a->name != NULL; a++) {
		if (strlen(a->name) == len && memcmp(a->name, name, len) == 0)
			return a;
	}
	return NULL;
}

/* FNV-1a over the file: the ETag. */
static uint64_t digest(const struct kvd_ui_asset *a)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; i < a->len; i++) {
		h ^= a->data[i];
		h *= 1099511628211ULL;
	}
	return h;
}

void kvd_ui_serve(struct http_request *req, const char *path, size_t len)
{
	const struct kvd_ui_asset *a;
	const char *inm;
	size_t inm_len;
	char etag[32], headers[160];
	int method = http_request_method(req);

	if (len == 3) {
		http_response_send(req, 308, TEXT, "Location: /ui/\r\n", "moved to /ui/\n", 14);
		return;
	}
	if (method != HTTP_GET && method != HTTP_HEAD) {
		http_response_send(req, 405, TEXT, "Allow: GET, HEAD\r\n", "method not allowed\n",
				   19);
		return;
	}
	path += 4;
	len -= 4;
	a = len == 0 ? find("index.html", 10) : find(path, len);
	if (a == NULL) {
		http_response_send(req, 404, TEXT, NULL, "not found\n", 10);
		return;
	}
	snprintf(etag, sizeof(etag), "\"%016" PRIx64 "\"", digest(a));
	snprintf(headers, sizeof(headers),
		 "ETag: %s\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n",
		 etag);
	inm = http_request_header(req, "If-None-Match", &inm_len);
	if (inm != NULL && inm_len == strlen(etag) && memcmp(inm, etag, inm_len) == 0) {
		http_response_send(req, 304, NULL, headers, NULL, 0);
		return;
	}
	/* The server leaves a HEAD answer's body out (Content-Length stays). */
	http_response_send(req, 200, a->content_type, headers, a->data, a->len);
}
