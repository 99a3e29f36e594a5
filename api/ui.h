/*
 * ui.h: the web console (API.md §14), the files of api/ui/ compiled into the
 * binary (tools/embed.cmake generates the table at build time) and served at
 * /ui/ by every node.
 *
 * Thread: loop thread (the table is read-only).
 */
#ifndef KVD_API_UI_H
#define KVD_API_UI_H

#include <stddef.h>

struct http_request;

/* One embedded file. */
struct kvd_ui_asset {
	const char *name; /* "index.html", "console.js", ... */
	const char *content_type;
	const unsigned char *data;
	size_t len;
};

/* The embedded files, ended by an entry whose name is NULL (generated). */
extern const struct kvd_ui_asset kvd_ui_assets[];

/* Answers a request for /ui or /ui/... (path and len as the server gives
 * them): GET or HEAD of a known file (/ui/ is index.html) is 200, /ui is a
 * 308 to /ui/, an unknown file 404, another method 405. */
void kvd_ui_serve(struct http_request *req, const char *path, size_t len);

#endif
