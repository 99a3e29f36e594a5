/*
 * kvctl.h: what kvctl's parts share: the parsed command line, the request
 * layer that finds a node that answers (endpoint rotation, 307 following,
 * 503 retry with backoff), and output helpers. Single-threaded.
 *
 * Exit codes (API.md §14): KVCTL_EXIT_OK done; KVCTL_EXIT_NO not found,
 * precondition failed or another refusal (4xx); KVCTL_EXIT_USAGE bad
 * usage; KVCTL_EXIT_UNAVAILABLE no node answered, no leader within
 * --timeout, or a 5xx answer.
 */
#ifndef KVD_TOOLS_KVCTL_H
#define KVD_TOOLS_KVCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "api/common/tls_client.h"
#include "tools/kvctl_http.h"

enum {
	KVCTL_EXIT_OK = 0,
	KVCTL_EXIT_NO = 1,
	KVCTL_EXIT_USAGE = 2,
	KVCTL_EXIT_UNAVAILABLE = 3,
};

#define KVCTL_MAX_ENDPOINTS 64
#define KVCTL_HOST_SIZE	    256
#define KVCTL_MAX_BODY	    ((size_t)64 << 20) /* bytes of one response kept in memory */

struct kvctl_endpoint {
	char host[KVCTL_HOST_SIZE];
	uint16_t port;
};

/* The command line, parsed. Strings are borrowed from argv/environ. */
struct kvctl {
	struct kvctl_endpoint endpoints[KVCTL_MAX_ENDPOINTS];
	int n_endpoints;
	int cur; /* the endpoint that answered last: tried first next time */
	const char *token;
	bool json;
	int64_t timeout_ms;
	int64_t deadline_ms;  /* kvctl_now_ms() + timeout_ms, set before the command runs */
	const char *if_match; /* digits, or NULL */
	bool if_absent;
	bool keys_only;
	const char *from; /* digits, or NULL */
	char **args;	  /* the command's positional arguments */
	int n_args;
	const struct kvctl_transport *transport;
	struct kvd_tls_client_opts tls; /* --cacert, --cert, --key */
	bool https;			/* endpoints given as https:// */
};

/* Request flags. */
enum {
	KVCTL_FOLLOW = 1, /* follow 307 to the leader */
	/* Retrying is safe even when the request may have reached a node
	 * (reads, unconditional PUT and DELETE, snapshots): a transport error
	 * after sending or any 503 moves on to the next endpoint. Without it,
	 * only failures before a byte left and "503 no leader" (the write was
	 * not accepted) are retried; anything else is an unknown outcome. */
	KVCTL_RETRY_SENT = 2,
};

struct kvctl_call {
	const char *method;
	const char *path;
	const char *body; /* NULL: none */
	size_t body_len;
	const char *extra_headers; /* NULL or "Name: value\r\n" lines */
	int flags;
};

/*
 * Sends call to the cluster: endpoints in turn starting with k->cur,
 * following 307 (up to 5 hops) when asked, retrying with backoff (50 ms
 * doubling to 1 s) until k->deadline_ms. Returns KVCTL_EXIT_OK with *resp
 * (any final status; free with kvctl_http_response_clear), or
 * KVCTL_EXIT_UNAVAILABLE after printing one line on stderr. With stream
 * non-NULL, a 200 answer's body is left unread: *stream is the open
 * connection (the caller reads and closes it) and resp->body is NULL.
 */
int kvctl_call(struct kvctl *k, const struct kvctl_call *call, struct kvctl_http_response *resp,
	       struct kvctl_http_conn **stream);

/* Maps a final answer to an exit code, printing "kvctl: <what>: <message>"
 * on stderr for anything but 2xx. */
int kvctl_status_exit(const struct kvctl_http_response *resp, const char *what);

/* Prints "kvctl: " + the message + "\n" on stderr; returns code. */
int kvctl_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sleeps ms milliseconds, at most until k->deadline_ms. */
void kvctl_sleep_ms(int64_t ms);

/* Writes o (stolen) as one line of JSON on stdout. */
void kvctl_print_json(json_t *o);

/* Writes s[0..len) with control bytes and backslash escaped (\n, \t, \r,
 * \\, \xNN), so that one value stays on one line of a table. */
void kvctl_print_escaped(const char *s, size_t len);

/* The revision in an ETag header ("\"42\"" -> 42), or 0. */
uint64_t kvctl_etag_revision(const char *etag);

/* True when s is a key kvd accepts (1..1024 bytes of [A-Za-z0-9:_.-]);
 * with allow_empty, "" too (a prefix). */
bool kvctl_key_valid(const char *s, bool allow_empty);

/* The commands. Each returns an exit code and prints its own errors. */
int kvctl_cmd_get(struct kvctl *k);
int kvctl_cmd_put(struct kvctl *k);
int kvctl_cmd_del(struct kvctl *k);
int kvctl_cmd_ls(struct kvctl *k);
int kvctl_cmd_watch(struct kvctl *k);
int kvctl_cmd_txn(struct kvctl *k);
int kvctl_cmd_status(struct kvctl *k);
int kvctl_cmd_members(struct kvctl *k);
int kvctl_cmd_transfer(struct kvctl *k);
int kvctl_cmd_snapshot(struct kvctl *k);
int kvctl_cmd_leader(struct kvctl *k);

#endif
