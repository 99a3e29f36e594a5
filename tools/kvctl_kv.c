/*
 * kvctl_kv.c: kvctl's key-value commands: get, put, del, ls, txn (API.md
 * §2, §10-§12) and watch (§13).
 *
 * Keys are checked here against kvd's key rules, so a bad key is a usage
 * error (exit 2) that never reaches the cluster; the allowed bytes need no
 * percent-encoding in a path or query. Values go out and come back byte
 * for byte: `get` prints the value raw; tables escape control bytes so one
 * key stays one line.
 *
 * Retrying: reads and unconditional PUT/DELETE are retried after a failure
 * even when the request may have arrived (writing the same value twice
 * leaves the same state); conditional writes and transactions are retried
 * only when the cluster said it did not take them ("503 no leader").
 */
#include "tools/kvctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvd/errors.h"

#define LS_PAGE	      1000
#define STDIN_MAX     ((size_t)8 << 20) /* bytes of a value or txn read from stdin */
#define SSE_LINE_MAX  ((size_t)16 << 20)
#define WATCH_BACKOFF 1000 /* ms between reconnects of a watch */

static int bad_key(const char *cmd, const char *key)
{
	return kvctl_fail(KVCTL_EXIT_USAGE,
			  "%s: invalid key '%.64s' (1..1024 bytes of A-Z a-z 0-9 : _ . -)", cmd,
			  key);
}

int kvctl_cmd_get(struct kvctl *k)
{
	const char *key = k->args[0];
	char path[1100];
	struct kvctl_call call = {
	    .method = "GET", .path = path, .flags = KVCTL_FOLLOW | KVCTL_RETRY_SENT};
	struct kvctl_http_response r;
	int rv;

	if (!kvctl_key_valid(key, false))
		return bad_key("get", key);
	snprintf(path, sizeof(path), "/kv/%s", key);
	rv = kvctl_call(k, &call, &r, NULL);
	if (rv != 0)
		return rv;
	rv = kvctl_status_exit(&r, key);
	if (rv == 0 && k->json) {
		json_t *o = json_object();
		json_object_set_new(o, "key", json_string(key));
		json_object_set_new(o, "value", json_stringn(r.body, r.body_len));
		json_object_set_new(o, "revision",
				    json_integer((json_int_t)kvctl_etag_revision(r.head.etag)));
		kvctl_print_json(o);
	} else if (rv == 0) {
		fwrite(r.body, 1, r.body_len, stdout);
		if (isatty(STDOUT_FILENO) && (r.body_len == 0 || r.body[r.body_len - 1] != '\n'))
			fputc('\n', stdout);
	}
	kvctl_http_response_clear(&r);
	return rv;
}

/* Reads all of stdin (at most STDIN_MAX bytes). */
static int read_stdin(char **out, size_t *out_len)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap + 1);

	if (buf == NULL)
		return KVD_ENOMEM;
	for (;;) {
		size_t n;

		if (len == cap) {
			char *nb = cap >= STDIN_MAX ? NULL : realloc(buf, cap * 2 + 1);
			if (nb == NULL) {
				free(buf);
				return KVD_ETOOBIG;
			}
			buf = nb;
			cap *= 2;
		}
		n = fread(buf + len, 1, cap - len, stdin);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(stdin)) {
		free(buf);
		return KVD_EIO;
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}

int kvctl_cmd_put(struct kvctl *k)
{
	const char *key = k->args[0];
	char path[1100], cond[64] = "";
	struct kvctl_call call = {.method = "PUT", .path = path, .flags = KVCTL_FOLLOW};
	struct kvctl_http_response r;
	char *in = NULL;
	int rv;

	if (!kvctl_key_valid(key, false))
		return bad_key("put", key);
	if (k->n_args == 2 && strcmp(k->args[1], "-") != 0) {
		call.body = k->args[1];
		call.body_len = strlen(k->args[1]);
	} else {
		size_t len;
		rv = read_stdin(&in, &len);
		if (rv != 0)
			return kvctl_fail(KVCTL_EXIT_USAGE, "put: reading the value from stdin: %s",
					  kvd_strerror(rv));
		call.body = in;
		call.body_len = len;
	}
	if (call.body_len == 0) {
		rv = kvctl_fail(KVCTL_EXIT_USAGE, "put: value cannot be empty");
		goto out;
	}
	if (k->if_match != NULL)
		snprintf(cond, sizeof(cond), "If-Match: \"%s\"\r\n", k->if_match);
	else if (k->if_absent)
		snprintf(cond, sizeof(cond), "If-None-Match: *\r\n");
	else
		call.flags |= KVCTL_RETRY_SENT;
	call.extra_headers = cond;
	snprintf(path, sizeof(path), "/kv/%s", key);
	rv = kvctl_call(k, &call, &r, NULL);
	if (rv != 0)
		goto out;
	rv = kvctl_status_exit(&r, key);
	if (rv == 0 && k->json) {
		json_t *o = json_object();
		json_object_set_new(o, "key", json_string(key));
		json_object_set_new(o, "revision",
				    json_integer((json_int_t)kvctl_etag_revision(r.head.etag)));
		kvctl_print_json(o);
	} else if (rv == 0) {
		printf("OK revision %llu\n", (unsigned long long)kvctl_etag_revision(r.head.etag));
	}
	kvctl_http_response_clear(&r);
out:
	free(in);
	return rv;
}

int kvctl_cmd_del(struct kvctl *k)
{
	const char *key = k->args[0];
	char path[1100], cond[64] = "";
	struct kvctl_call call = {.method = "DELETE", .path = path, .flags = KVCTL_FOLLOW};
	struct kvctl_http_response r;
	int rv;

	if (!kvctl_key_valid(key, false))
		return bad_key("del", key);
	if (k->if_match != NULL)
		snprintf(cond, sizeof(cond), "If-Match: \"%s\"\r\n", k->if_match);
	else
		call.flags |= KVCTL_RETRY_SENT;
	call.extra_headers = cond;
	snprintf(path, sizeof(path), "/kv/%s", key);
	rv = kvctl_call(k, &call, &r, NULL);
	if (rv != 0)
		return rv;
	rv = kvctl_status_exit(&r, key);
	if (rv == 0 && k->json) {
		json_t *o = json_object();
		json_object_set_new(o, "key", json_string(key));
		kvctl_print_json(o);
	} else if (rv == 0) {
		puts("OK");
	}
	kvctl_http_response_clear(&r);
	return rv;
}

/* Prints the listing as a table KEY REVISION VALUE (or keys alone). */
static void print_items(const struct kvctl *k, json_t *items)
{
	size_t i, kw = 3, rw = 8;
	json_t *it;

	if (k->keys_only) {
		json_array_foreach(items, i, it)
		{
			puts(json_string_value(json_object_get(it, "key")));
		}
		return;
	}
	if (json_array_size(items) == 0)
		return;
	json_array_foreach(items, i, it)
	{
		char rev[24];
		size_t l = strlen(json_string_value(json_object_get(it, "key")));
		kw = l > kw ? l : kw;
		l = (size_t)snprintf(
		    rev, sizeof(rev), "%lld",
		    (long long)json_integer_value(json_object_get(it, "revision")));
		rw = l > rw ? l : rw;
	}
	printf("%-*s  %-*s  %s\n", (int)kw, "KEY", (int)rw, "REVISION", "VALUE");
	json_array_foreach(items, i, it)
	{
		json_t *v = json_object_get(it, "value");
		printf("%-*s  %-*lld  ", (int)kw, json_string_value(json_object_get(it, "key")),
		       (int)rw, (long long)json_integer_value(json_object_get(it, "revision")));
		kvctl_print_escaped(json_string_value(v), json_string_length(v));
		fputc('\n', stdout);
	}
}

int kvctl_cmd_ls(struct kvctl *k)
{
	const char *prefix = k->n_args > 0 ? k->args[0] : "";
	json_t *items = json_array(), *revision = NULL;
	char *after = NULL;
	int rv = 0;

	if (!kvctl_key_valid(prefix, true)) {
		rv = bad_key("ls", prefix);
		goto out;
	}
	for (;;) {
		char *path = NULL;
		struct kvctl_call call = {.method = "GET",
					  .flags = KVCTL_FOLLOW | KVCTL_RETRY_SENT};
		struct kvctl_http_response r;
		json_t *page, *more, *list;
		json_error_t jerr;
		size_t i;
		json_t *it;

		if (asprintf(&path, "/kv?prefix=%s&limit=%d%s%s%s", prefix, LS_PAGE,
			     k->keys_only ? "&keys-only=true" : "", after ? "&after=" : "",
			     after ? after : "") < 0) {
			rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "out of memory");
			goto out;
		}
		call.path = path;
		rv = kvctl_call(k, &call, &r, NULL);
		free(path);
		if (rv != 0)
			goto out;
		rv = kvctl_status_exit(&r, "ls");
		if (rv != 0) {
			kvctl_http_response_clear(&r);
			goto out;
		}
		page = json_loadb(r.body, r.body_len, 0, &jerr);
		kvctl_http_response_clear(&r);
		list = json_object_get(page, "items");
		more = json_object_get(page, "more");
		if (!json_is_array(list)) {
			json_decref(page);
			rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE,
					"ls: the node's answer is not a listing");
			goto out;
		}
		if (revision == NULL)
			revision = json_incref(json_object_get(page, "revision"));
		json_array_foreach(list, i, it)
		{
			json_array_append(items, it);
		}
		free(after);
		after = NULL;
		if (json_is_true(more) && json_array_size(list) > 0)
			after = strdup(json_string_value(json_object_get(
			    json_array_get(list, json_array_size(list) - 1), "key")));
		json_decref(page);
		if (after == NULL)
			break;
	}
	if (k->json) {
		json_t *o = json_object();
		json_object_set_new(o, "revision", revision ? revision : json_integer(0));
		revision = NULL;
		json_object_set(o, "items", items);
		kvctl_print_json(o);
	} else {
		print_items(k, items);
	}
out:
	json_decref(revision);
	json_decref(items);
	free(after);
	return rv;
}

/* Prints what each operation of the branch that ran gave. */
static void print_txn(json_t *req, json_t *ans)
{
	bool ok = json_is_true(json_object_get(ans, "succeeded"));
	json_t *ops = json_object_get(req, ok ? "success" : "failure");
	json_t *results = json_object_get(ans, "results");
	size_t i;
	json_t *res;

	printf("%s revision %lld\n", ok ? "SUCCEEDED" : "FAILED",
	       (long long)json_integer_value(json_object_get(ans, "revision")));
	json_array_foreach(results, i, res)
	{
		json_t *op = json_array_get(ops, i);
		const char *name = json_string_value(json_object_get(op, "op"));
		const char *key = json_string_value(json_object_get(op, "key"));
		json_t *v = json_object_get(res, "value");

		printf("%s %s", name ? name : "?", key ? key : "?");
		if (name != NULL && strcmp(name, "get") == 0) {
			if (json_is_string(v)) {
				printf(" %lld ", (long long)json_integer_value(
						     json_object_get(res, "revision")));
				kvctl_print_escaped(json_string_value(v), json_string_length(v));
			} else {
				fputs(" (not found)", stdout);
			}
		}
		fputc('\n', stdout);
	}
}

int kvctl_cmd_txn(struct kvctl *k)
{
	struct kvctl_call call = {.method = "POST", .path = "/txn", .flags = KVCTL_FOLLOW};
	struct kvctl_http_response r;
	json_t *req = NULL, *ans;
	json_error_t jerr;
	char *in = NULL;
	size_t len;
	int rv = read_stdin(&in, &len);

	if (rv != 0)
		return kvctl_fail(KVCTL_EXIT_USAGE, "txn: reading stdin: %s", kvd_strerror(rv));
	req = json_loadb(in, len, 0, &jerr);
	if (!json_is_object(req)) {
		rv = kvctl_fail(KVCTL_EXIT_USAGE, "txn: stdin is not a JSON object (line %d: %s)",
				jerr.line, req ? "not an object" : jerr.text);
		goto out;
	}
	call.body = in;
	call.body_len = len;
	call.extra_headers = "Content-Type: application/json\r\n";
	rv = kvctl_call(k, &call, &r, NULL);
	if (rv != 0)
		goto out;
	rv = kvctl_status_exit(&r, "txn");
	if (rv == 0) {
		ans = json_loadb(r.body, r.body_len, 0, &jerr);
		if (!json_is_object(ans)) {
			rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "txn: the answer is not JSON");
		} else {
			if (!json_is_true(json_object_get(ans, "succeeded")))
				rv = KVCTL_EXIT_NO;
			if (k->json)
				kvctl_print_json(json_incref(ans));
			else
				print_txn(req, ans);
		}
		json_decref(ans);
	}
	kvctl_http_response_clear(&r);
out:
	json_decref(req);
	free(in);
	return rv;
}

/* Server-Sent Events: one event's fields as they arrive. */
struct sse {
	char *line; /* the line being read */
	size_t len, cap;
	char id[24];
	char event[32];
	char *data;
	size_t data_len;
	char last_id[24]; /* of the last event printed: the resume point */
};

static void print_event(const struct kvctl *k, struct sse *s)
{
	json_error_t jerr;
	json_t *d = json_loadb(s->data ? s->data : "", s->data_len, 0, &jerr);
	json_t *v = json_object_get(d, "value");
	const char *key = json_string_value(json_object_get(d, "key"));

	if (k->json) {
		json_t *o = json_object();
		json_object_set_new(o, "event", json_string(s->event[0] ? s->event : "message"));
		if (json_is_object(d))
			json_object_update(o, d);
		kvctl_print_json(o);
	} else {
		printf("%lld %s", (long long)json_integer_value(json_object_get(d, "revision")),
		       s->event[0] ? s->event : "message");
		if (key != NULL)
			printf(" %s", key);
		if (json_is_string(v)) {
			fputc(' ', stdout);
			kvctl_print_escaped(json_string_value(v), json_string_length(v));
		}
		fputc('\n', stdout);
	}
	fflush(stdout);
	json_decref(d);
}

/* One complete line of the stream. */
static void sse_line(const struct kvctl *k, struct sse *s, char *line, size_t len)
{
	char *colon, *v;

	if (len > 0 && line[len - 1] == '\r')
		line[--len] = '\0';
	if (len == 0) { /* dispatch */
		if (s->data != NULL) {
			print_event(k, s);
			if (s->id[0])
				memcpy(s->last_id, s->id, sizeof(s->id));
		}
		free(s->data);
		s->data = NULL;
		s->data_len = 0;
		s->event[0] = '\0';
		return;
	}
	if (line[0] == ':')
		return; /* comment: keep-alive */
	colon = strchr(line, ':');
	v = colon ? colon + 1 : line + len;
	if (colon)
		*colon = '\0';
	if (*v == ' ')
		v++;
	if (strcmp(line, "id") == 0) {
		snprintf(s->id, sizeof(s->id), "%s", v);
	} else if (strcmp(line, "event") == 0) {
		snprintf(s->event, sizeof(s->event), "%s", v);
	} else if (strcmp(line, "data") == 0) {
		size_t vl = strlen(v);
		char *nd = realloc(s->data, s->data_len + vl + 2);
		if (nd == NULL)
			return;
		if (s->data_len > 0)
			nd[s->data_len++] = '\n';
		memcpy(nd + s->data_len, v, vl + 1);
		s->data = nd;
		s->data_len += vl;
	}
}

/* Reads the stream until it ends. Returns 0 when it ended (reconnect) or an
 * enum kvd_error. */
static int read_stream(const struct kvctl *k, struct kvctl_http_conn *c, struct sse *s)
{
	char buf[16384];

	for (;;) {
		long n = kvctl_http_body_read(c, buf, sizeof(buf), -1);

		if (n <= 0)
			return n == 0 ? 0 : (int)n;
		for (long i = 0; i < n; i++) {
			if (s->len + 1 >= s->cap) {
				size_t nc = s->cap ? s->cap * 2 : 4096;
				char *nl = nc > SSE_LINE_MAX ? NULL : realloc(s->line, nc);
				if (nl == NULL)
					return KVD_ETOOBIG;
				s->line = nl;
				s->cap = nc;
			}
			if (buf[i] == '\n') {
				s->line[s->len] = '\0';
				sse_line(k, s, s->line, s->len);
				s->len = 0;
			} else {
				s->line[s->len++] = buf[i];
			}
		}
	}
}

int kvctl_cmd_watch(struct kvctl *k)
{
	const char *prefix = k->n_args > 0 ? k->args[0] : "";
	struct sse s = {0};
	int rv;

	if (!kvctl_key_valid(prefix, true))
		return bad_key("watch", prefix);
	for (;;) {
		char path[1200], hdr[64] = "";
		struct kvctl_call call = {.method = "GET",
					  .path = path,
					  .extra_headers = hdr,
					  .flags = KVCTL_FOLLOW | KVCTL_RETRY_SENT};
		struct kvctl_http_response r;
		struct kvctl_http_conn *c = NULL;

		snprintf(path, sizeof(path), "/watch?prefix=%s%s%s", prefix,
			 k->from && !s.last_id[0] ? "&from=" : "",
			 k->from && !s.last_id[0] ? k->from : "");
		if (s.last_id[0])
			snprintf(hdr, sizeof(hdr), "Last-Event-ID: %s\r\n", s.last_id);
		k->deadline_ms = kvctl_now_ms() + k->timeout_ms;
		rv = kvctl_call(k, &call, &r, &c);
		if (rv != 0)
			break;
		if (c == NULL) {
			if (r.head.status == 404)
				rv = kvctl_fail(
				    KVCTL_EXIT_NO, "watch: %s:%u does not serve /watch (404 %.*s)",
				    k->endpoints[k->cur].host, (unsigned)k->endpoints[k->cur].port,
				    (int)strcspn(r.body ? r.body : "", "\n"), r.body);
			else if (r.head.status == 410)
				rv = kvctl_fail(KVCTL_EXIT_NO,
						"watch: revision compacted (oldest available: %s)",
						r.head.compacted ? r.head.compacted : "unknown");
			else
				rv = kvctl_status_exit(&r, "watch");
			if (rv == 0)
				rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE,
						"watch: unexpected answer %d", r.head.status);
			kvctl_http_response_clear(&r);
			break;
		}
		kvctl_http_head_clear(&r.head);
		rv = read_stream(k, c, &s);
		kvctl_http_close(c);
		s.len = 0; /* a partial line or event is sent again on resume */
		free(s.data);
		s.data = NULL;
		s.data_len = 0;
		if (rv == KVD_ETOOBIG) {
			rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "watch: an event line is too long");
			break;
		}
		fprintf(stderr, "kvctl: watch: stream ended, reconnecting%s%s\n",
			s.last_id[0] ? " after revision " : "", s.last_id);
		kvctl_sleep_ms(WATCH_BACKOFF);
	}
	free(s.line);
	free(s.data);
	return rv;
}
