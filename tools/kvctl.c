/*
 * kvctl: the command-line client of a kvd cluster (API.md §14).
 *
 *     kvctl [--endpoints A,B,..] [--token T] [--json] [--timeout 10s] COMMAND ARGS
 *
 * This file reads the command line (one getopt_long pass over every flag,
 * global or not, so flags may come before or after the command) and holds
 * the request layer every command goes through: endpoints are tried in
 * turn, 307 answers are followed to the leader, and "503 no leader" (or a
 * refused connection) is retried with backoff until --timeout. The commands
 * live in kvctl_kv.c (keys) and kvctl_cluster.c (members and the log);
 * HTTP framing in kvctl_http.c.
 *
 * Exit codes: 0 done, 1 not found / precondition failed / refused, 2 usage
 * (one line on stderr), 3 cluster unavailable.
 */
#include "tools/kvctl.h"

#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/common/id.h"
#include "tools/kvctl_tls.h"
#include "kvd/errors.h"

#define MAX_HOPS	   5
#define BACKOFF_FIRST_MS   50
#define BACKOFF_MAX_MS	   1000
#define CONNECT_TIMEOUT_MS 1000
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_ENDPOINT   "127.0.0.1:8080"

static const char USAGE[] =
    "usage: kvctl [--endpoints A,B,..] [--token T] [--cacert F] [--cert F --key F] [--json]\n"
    "             [--timeout 10s] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  get KEY                              print a key's value\n"
    "  put KEY [VALUE|-] [--if-match R|--if-absent]\n"
    "                                       write a key (value from stdin with - or none)\n"
    "  del KEY [--if-match R]               delete a key\n"
    "  ls [PREFIX] [--keys-only]            list keys (every page)\n"
    "  watch [PREFIX] [--from R]            print changes as they happen, until interrupted\n"
    "  txn                                  run a transaction given as JSON on stdin\n"
    "  status                               a table of every member\n"
    "  members add|remove ID..              change the membership\n"
    "  transfer [ID]                        hand leadership to ID (or any other voter)\n"
    "  snapshot                             take a snapshot on the first endpoint that answers\n"
    "  leader                               print the leader's id\n"
    "\n"
    "global flags:\n"
    "  --endpoints A,B,..  nodes to ask, host:port, http://host:port or https://host:port\n"
    "                      (default $KVCTL_ENDPOINTS, else " DEFAULT_ENDPOINT ")\n"
    "  --token T           send Authorization: Bearer T (default $KVCTL_TOKEN)\n"
    "  --cacert F          TLS: verify the nodes against this CA (PEM; else the system's)\n"
    "  --cert F, --key F   TLS: present this client certificate and key (mutual TLS)\n"
    "  --json              print JSON instead of text\n"
    "  --timeout D         give up after D (10s, 500ms, 2m or seconds; default 10s)\n"
    "  -h, --help          this text; kvctl COMMAND --help for one command\n"
    "\n"
    "exit status: 0 done, 1 not found or precondition failed, 2 usage, 3 cluster unavailable\n";

struct command {
	const char *name;
	int (*run)(struct kvctl *k);
	int min_args, max_args; /* positional arguments; max -1: any */
	unsigned flags;		/* FLAG_* allowed */
	const char *usage;
};

enum { FLAG_IF_MATCH = 1, FLAG_IF_ABSENT = 2, FLAG_KEYS_ONLY = 4, FLAG_FROM = 8 };

static const struct command COMMANDS[] = {
    {"get", kvctl_cmd_get, 1, 1, 0,
     "usage: kvctl get KEY\n"
     "Prints the value of KEY exactly as stored (a newline is added only on a terminal).\n"
     "--json: {\"key\", \"value\", \"revision\"}. Exit 1 when the key does not exist.\n"},
    {"put", kvctl_cmd_put, 1, 2, FLAG_IF_MATCH | FLAG_IF_ABSENT,
     "usage: kvctl put KEY [VALUE|-] [--if-match R|--if-absent]\n"
     "Writes VALUE (or stdin, when VALUE is - or missing) to KEY and prints its new revision.\n"
     "--if-match R: only if KEY exists at revision R; --if-absent: only if KEY does not exist.\n"
     "Exit 1 when the condition does not hold (412). A value starting with - goes after --.\n"},
    {"del", kvctl_cmd_del, 1, 1, FLAG_IF_MATCH,
     "usage: kvctl del KEY [--if-match R]\n"
     "Deletes KEY (done also when it did not exist). --if-match R: only if KEY exists at\n"
     "revision R, else exit 1.\n"},
    {"ls", kvctl_cmd_ls, 0, 1, FLAG_KEYS_ONLY,
     "usage: kvctl ls [PREFIX] [--keys-only]\n"
     "Lists the keys starting with PREFIX (every key without), in byte order, reading every\n"
     "page. Text output: a table KEY REVISION VALUE (control bytes in values escaped);\n"
     "--keys-only: one key per line. --json: {\"revision\", \"items\": [..]}.\n"},
    {"watch", kvctl_cmd_watch, 0, 1, FLAG_FROM,
     "usage: kvctl watch [PREFIX] [--from R]\n"
     "Prints each change of a key starting with PREFIX as it happens, one line per event:\n"
     "REVISION EVENT KEY [VALUE], until interrupted; --from R starts at revision R.\n"
     "Reconnects (to any endpoint) where it left off. --json: one JSON object per line.\n"},
    {"txn", kvctl_cmd_txn, 0, 0, 0,
     "usage: kvctl txn < txn.json\n"
     "Runs the transaction read from stdin ({\"compare\": [..], \"success\": [..],\n"
     "\"failure\": [..]}, API.md section 12) and prints which branch ran and its results.\n"
     "Exit 1 when a comparison failed (the failure branch ran).\n"},
    {"status", kvctl_cmd_status, 0, 0, 0,
     "usage: kvctl status\n"
     "Asks every endpoint and every member they name for /cluster/info and prints one row\n"
     "per member: ID ROLE TERM LEADER COMMIT APPLIED LAG REACHABLE. LAG is the leader's\n"
     "commit index minus the member's applied index. Exit 3 when no member answered.\n"},
    {"members", kvctl_cmd_members, 2, -1, 0,
     "usage: kvctl members add|remove ID..\n"
     "Adds or removes members (host:port ids); returns once the new configuration is\n"
     "committed. Exit 1 when the cluster refuses (another change in progress: 409).\n"},
    {"transfer", kvctl_cmd_transfer, 0, 1, 0,
     "usage: kvctl transfer [ID]\n"
     "Hands leadership to ID, or to any other voter, and prints the new leader.\n"},
    {"snapshot", kvctl_cmd_snapshot, 0, 0, 0,
     "usage: kvctl snapshot\n"
     "Makes the first endpoint that answers take a snapshot of its state now and prints\n"
     "its index and term. Give --endpoints to choose the node.\n"},
    {"leader", kvctl_cmd_leader, 0, 0, 0,
     "usage: kvctl leader\n"
     "Prints the id of the current leader; waits up to --timeout for one (exit 3).\n"},
};

int kvctl_fail(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("kvctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

void kvctl_sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) != 0)
		;
}

void kvctl_print_json(json_t *o)
{
	char *s = json_dumps(o, JSON_PRESERVE_ORDER);

	if (s != NULL) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
	json_decref(o);
}

void kvctl_print_escaped(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '\n')
			fputs("\\n", stdout);
		else if (ch == '\t')
			fputs("\\t", stdout);
		else if (ch == '\r')
			fputs("\\r", stdout);
		else if (ch == '\\')
			fputs("\\\\", stdout);
		else if (ch < 0x20 || ch == 0x7f)
			printf("\\x%02x", ch);
		else
			fputc(ch, stdout);
	}
}

uint64_t kvctl_etag_revision(const char *etag)
{
	if (etag == NULL)
		return 0;
	if (*etag == '"')
		etag++;
	return strtoull(etag, NULL, 10);
}

bool kvctl_key_valid(const char *s, bool allow_empty)
{
	size_t len = strlen(s);

	if (len == 0)
		return allow_empty;
	if (len > 1024)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == ':' || c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* "http(s)://host:port/..." -> host, port, path (points into loc). The
 * scheme is the cluster's: every node speaks TLS or none does. */
static int parse_location(const char *loc, struct kvctl_endpoint *ep, const char **path)
{
	char id[KVD_ID_SIZE];
	const char *p, *slash;
	size_t len;

	if (loc != NULL && strncmp(loc, "http://", 7) == 0)
		p = loc + 7;
	else if (loc != NULL && strncmp(loc, "https://", 8) == 0)
		p = loc + 8;
	else
		return KVD_EINVAL;
	slash = strchr(p, '/');
	len = slash ? (size_t)(slash - p) : strlen(p);
	if (len == 0 || len >= sizeof(id))
		return KVD_EINVAL;
	memcpy(id, p, len);
	id[len] = '\0';
	if (kvd_id_split(id, ep->host, sizeof(ep->host), &ep->port) != 0)
		return KVD_EINVAL;
	*path = slash ? slash : "/";
	return 0;
}

static bool is_no_leader(const struct kvctl_http_response *r)
{
	return r->head.status == 503 && r->body != NULL && strcmp(r->body, "no leader\n") == 0;
}

/* Reads the rest of an open response's body into r. */
static int read_body(struct kvctl_http_conn *c, int64_t deadline, struct kvctl_http_response *r)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	int rv = 0;

	if (buf == NULL)
		return KVD_ENOMEM;
	for (;;) {
		long n;

		if (cap - len < 2048) {
			char *nb = cap * 2 > KVCTL_MAX_BODY + 4096 ? NULL : realloc(buf, cap * 2);
			if (nb == NULL) {
				rv = KVD_ETOOBIG;
				break;
			}
			buf = nb;
			cap *= 2;
		}
		n = kvctl_http_body_read(c, buf + len, cap - len - 1, deadline);
		if (n <= 0) {
			rv = (int)n;
			break;
		}
		len += (size_t)n;
	}
	if (rv != 0) {
		free(buf);
		return rv;
	}
	buf[len] = '\0';
	r->body = buf;
	r->body_len = len;
	return 0;
}

/* Collects "Authorization" and the call's own headers. */
static char *headers_for(const struct kvctl *k, const struct kvctl_call *call)
{
	char *h = NULL;

	if (asprintf(&h, "%s%s%s%s", k->token ? "Authorization: Bearer " : "",
		     k->token ? k->token : "", k->token ? "\r\n" : "",
		     call->extra_headers ? call->extra_headers : "") < 0)
		return NULL;
	return h;
}

/*
 * One attempt at one endpoint, following redirects. Returns 0 with a final
 * answer in *resp (or an open stream), 1 when the next endpoint should be
 * tried (last error in err), or KVCTL_EXIT_UNAVAILABLE when the outcome of a
 * sent request is unknown and retrying is not safe.
 */
static int attempt(struct kvctl *k, const struct kvctl_call *call, const char *headers,
		   const struct kvctl_endpoint *start, struct kvctl_http_response *resp,
		   struct kvctl_http_conn **stream, char *err, size_t err_size)
{
	struct kvctl_endpoint ep = *start;
	char *path = strdup(call->path);
	int rv = 1;

	if (path == NULL)
		return kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "out of memory");
	for (int hop = 0; hop <= MAX_HOPS; hop++) {
		struct kvctl_http_request req = {
		    .method = call->method,
		    .host = ep.host,
		    .port = ep.port,
		    .path = path,
		    .extra_headers = headers,
		    .body = call->body,
		    .body_len = call->body_len,
		    .connect_timeout_ms = CONNECT_TIMEOUT_MS,
		};
		struct kvctl_http_conn *c = NULL;
		const char *lpath;
		int sent = 0, r;

		memset(resp, 0, sizeof(*resp));
		r = kvctl_http_open(k->transport, &req, k->deadline_ms, &c, &resp->head, &sent, err,
				    err_size);
		if (r == 0 && !(stream != NULL && resp->head.status == 200)) {
			r = read_body(c, k->deadline_ms, resp);
			if (r != 0) {
				snprintf(err, err_size, "%s:%u: %s reading the answer", ep.host,
					 (unsigned)ep.port, kvd_strerror(r));
				kvctl_http_head_clear(&resp->head);
			}
			kvctl_http_close(c);
			c = NULL;
		}
		if (r != 0) {
			if (sent && !(call->flags & KVCTL_RETRY_SENT)) {
				rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE,
						"%s; the request may or may not have taken effect",
						err);
			}
			break;
		}
		if (c != NULL) { /* the stream the caller asked for */
			*stream = c;
			rv = 0;
			break;
		}
		if (resp->head.status == 307 && (call->flags & KVCTL_FOLLOW) &&
		    parse_location(resp->head.location, &ep, &lpath) == 0) {
			char *np = strdup(lpath);
			kvctl_http_response_clear(resp);
			if (np == NULL)
				break;
			free(path);
			path = np;
			snprintf(err, err_size, "too many redirects");
			continue;
		}
		if (is_no_leader(resp) ||
		    (resp->head.status == 503 && (call->flags & KVCTL_RETRY_SENT))) {
			snprintf(err, err_size, "%s:%u: %d %.*s", ep.host, (unsigned)ep.port,
				 resp->head.status,
				 (int)(resp->body_len && resp->body[resp->body_len - 1] == '\n'
					   ? resp->body_len - 1
					   : resp->body_len),
				 resp->body);
			kvctl_http_response_clear(resp);
			break;
		}
		rv = 0;
		break;
	}
	free(path);
	return rv;
}

int kvctl_call(struct kvctl *k, const struct kvctl_call *call, struct kvctl_http_response *resp,
	       struct kvctl_http_conn **stream)
{
	char err[512] = "no endpoint";
	char *headers = headers_for(k, call);
	int64_t backoff = BACKOFF_FIRST_MS;
	int rv = KVCTL_EXIT_UNAVAILABLE;

	if (headers == NULL)
		return kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "out of memory");
	if (stream != NULL)
		*stream = NULL;
	for (;;) {
		int64_t left;

		for (int i = 0; i < k->n_endpoints; i++) {
			int idx = (k->cur + i) % k->n_endpoints;
			int r = attempt(k, call, headers, &k->endpoints[idx], resp, stream, err,
					sizeof(err));
			if (r == 0) {
				k->cur = idx;
				rv = KVCTL_EXIT_OK;
				goto out;
			}
			if (r != 1)
				goto out; /* already reported */
			if (kvctl_now_ms() >= k->deadline_ms)
				break;
		}
		left = k->deadline_ms - kvctl_now_ms();
		if (left <= 0) {
			rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "cluster unavailable: %s", err);
			goto out;
		}
		kvctl_sleep_ms(backoff < left ? backoff : left);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
		if (kvctl_now_ms() >= k->deadline_ms) {
			/* no attempt at the deadline: it could only time out and
			 * hide the reason of the last one */
			rv = kvctl_fail(KVCTL_EXIT_UNAVAILABLE, "cluster unavailable: %s", err);
			goto out;
		}
	}
out:
	free(headers);
	return rv;
}

int kvctl_status_exit(const struct kvctl_http_response *resp, const char *what)
{
	int st = resp->head.status;
	int len = (int)resp->body_len;
	const char *body = resp->body ? resp->body : "";

	if (st >= 200 && st < 300)
		return KVCTL_EXIT_OK;
	while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r'))
		len--;
	if (len > 300)
		len = 300;
	if (st == 404 || st == 412)
		return kvctl_fail(KVCTL_EXIT_NO, "%s: %.*s", what, len, body);
	return kvctl_fail(st >= 500 ? KVCTL_EXIT_UNAVAILABLE : KVCTL_EXIT_NO, "%s: %d %.*s", what,
			  st, len, body);
}

/* --timeout: kvd_parse_duration_ms() into the signed field kvctl keeps. */
static int parse_timeout(const char *s, int64_t *ms)
{
	uint64_t v;
	int rv = kvd_parse_duration_ms(s, &v);

	if (rv == 0)
		*ms = (int64_t)v;
	return rv;
}

static int parse_endpoints(struct kvctl *k, const char *list)
{
	const char *p = list;

	k->n_endpoints = 0;
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char id[KVD_ID_SIZE];

		if (len >= 8 && strncmp(p, "https://", 8) == 0) {
			if (k->n_endpoints > 0 && !k->https)
				return kvctl_fail(KVCTL_EXIT_USAGE,
						  "--endpoints mixes http and https: '%s'", list);
			k->https = true;
			p += 8;
			len -= 8;
		} else if (k->https) {
			return kvctl_fail(KVCTL_EXIT_USAGE,
					  "--endpoints mixes http and https: '%s'", list);
		} else if (len >= 7 && strncmp(p, "http://", 7) == 0) {
			p += 7;
			len -= 7;
		}
		if (len > 0 && p[len - 1] == '/')
			len--;
		if (len == 0 || len >= sizeof(id) || k->n_endpoints == KVCTL_MAX_ENDPOINTS)
			return kvctl_fail(KVCTL_EXIT_USAGE, "invalid --endpoints '%s'", list);
		memcpy(id, p, len);
		id[len] = '\0';
		if (kvd_id_split(id, k->endpoints[k->n_endpoints].host, KVCTL_HOST_SIZE,
				 &k->endpoints[k->n_endpoints].port) != 0)
			return kvctl_fail(KVCTL_EXIT_USAGE,
					  "invalid endpoint '%s' (expected host:port)", id);
		k->n_endpoints++;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return 0;
}

static bool digits(const char *s)
{
	if (*s == '\0' || strlen(s) > 19)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++)
		if (strcmp(COMMANDS[i].name, name) == 0)
			return &COMMANDS[i];
	return NULL;
}

static const char *flag_name(unsigned f)
{
	switch (f) {
	case FLAG_IF_MATCH: return "--if-match";
	case FLAG_IF_ABSENT: return "--if-absent";
	case FLAG_KEYS_ONLY: return "--keys-only";
	default: return "--from";
	}
}

/* Parses argv into k and *cmd. Returns -1 to go on, else the exit code
 * (help printed: 0; usage error printed: 2). */
static int parse_args(int argc, char **argv, struct kvctl *k, const struct command **cmd)
{
	static const struct option opts[] = {
	    {"endpoints", required_argument, NULL, 'e'},
	    {"token", required_argument, NULL, 'T'},
	    {"cacert", required_argument, NULL, 'a'},
	    {"cert", required_argument, NULL, 'c'},
	    {"key", required_argument, NULL, 'k'},
	    {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 't'},
	    {"if-match", required_argument, NULL, 'M'},
	    {"if-absent", no_argument, NULL, 'A'},
	    {"keys-only", no_argument, NULL, 'K'},
	    {"from", required_argument, NULL, 'F'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *endpoints = getenv("KVCTL_ENDPOINTS");
	const char *timeout = NULL;
	static char if_match[24];
	unsigned seen = 0;
	bool help = false;
	int c, rv;

	k->token = getenv("KVCTL_TOKEN");
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'e':
			endpoints = optarg;
			if (*optarg == '\0')
				return kvctl_fail(KVCTL_EXIT_USAGE, "--endpoints is empty");
			break;
		case 'T': k->token = optarg; break;
		case 'a':
		case 'c':
		case 'k': {
			char err[KVD_ERRMSG_SIZE];
			const char *name = c == 'a' ? "cacert" : c == 'c' ? "cert" : "key";
			if (kvd_tls_client_flag(&k->tls, name, optarg, err) < 0)
				return kvctl_fail(KVCTL_EXIT_USAGE, "%s", err);
			break;
		}
		case 'j': k->json = true; break;
		case 't': timeout = optarg; break;
		case 'M':
			k->if_match = optarg;
			seen |= FLAG_IF_MATCH;
			break;
		case 'A':
			k->if_absent = true;
			seen |= FLAG_IF_ABSENT;
			break;
		case 'K':
			k->keys_only = true;
			seen |= FLAG_KEYS_ONLY;
			break;
		case 'F':
			k->from = optarg;
			seen |= FLAG_FROM;
			break;
		case 'h': help = true; break;
		case ':': return kvctl_fail(KVCTL_EXIT_USAGE, "%s needs a value", argv[optind - 1]);
		default:
			if (optopt != 0)
				return kvctl_fail(KVCTL_EXIT_USAGE, "unknown flag '-%c'", optopt);
			return kvctl_fail(KVCTL_EXIT_USAGE, "unknown flag '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc && strcmp(argv[optind], "help") == 0) {
		help = true;
		optind++;
	}
	*cmd = optind < argc ? find_command(argv[optind]) : NULL;
	if (help) {
		fputs(*cmd ? (*cmd)->usage : USAGE, stdout);
		return KVCTL_EXIT_OK;
	}
	if (optind >= argc)
		return kvctl_fail(KVCTL_EXIT_USAGE, "no command given (kvctl --help lists them)");
	if (*cmd == NULL)
		return kvctl_fail(KVCTL_EXIT_USAGE,
				  "unknown command '%s' (kvctl --help lists them)", argv[optind]);
	k->args = argv + optind + 1;
	k->n_args = argc - optind - 1;
	for (unsigned f = 1; f <= FLAG_FROM; f <<= 1)
		if ((seen & f) && !((*cmd)->flags & f))
			return kvctl_fail(KVCTL_EXIT_USAGE, "%s is not a flag of '%s'",
					  flag_name(f), (*cmd)->name);
	if (k->n_args < (*cmd)->min_args || ((*cmd)->max_args >= 0 && k->n_args > (*cmd)->max_args))
		return kvctl_fail(KVCTL_EXIT_USAGE, "wrong number of arguments: %.*s",
				  (int)strcspn((*cmd)->usage, "\n"), (*cmd)->usage);
	if (k->if_match != NULL && k->if_match[0] == '"') { /* an ETag as the node sends it */
		size_t len = strlen(k->if_match);
		if (len >= 3 && k->if_match[len - 1] == '"' && len - 2 < sizeof(if_match)) {
			memcpy(if_match, k->if_match + 1, len - 2);
			if_match[len - 2] = '\0';
			k->if_match = if_match;
		}
	}
	if (k->if_match != NULL && !digits(k->if_match))
		return kvctl_fail(KVCTL_EXIT_USAGE,
				  "--if-match needs a revision (digits), not '%s'", k->if_match);
	if (k->if_match != NULL && k->if_absent)
		return kvctl_fail(KVCTL_EXIT_USAGE,
				  "--if-match and --if-absent exclude each other");
	if (k->from != NULL && !digits(k->from))
		return kvctl_fail(KVCTL_EXIT_USAGE, "--from needs a revision (digits), not '%s'",
				  k->from);
	if (k->token != NULL && (k->token[0] == '\0' || strpbrk(k->token, " \t\r\n") != NULL))
		return kvctl_fail(KVCTL_EXIT_USAGE, "--token must be non-empty, without spaces");
	k->timeout_ms = DEFAULT_TIMEOUT_MS;
	if (timeout != NULL && parse_timeout(timeout, &k->timeout_ms) != 0)
		return kvctl_fail(KVCTL_EXIT_USAGE,
				  "invalid --timeout '%s' (10s, 500ms, 2m or seconds)", timeout);
	rv = parse_endpoints(k, endpoints && *endpoints ? endpoints : DEFAULT_ENDPOINT);
	if (rv != 0)
		return rv;
	/* TLS with https:// endpoints, or when any TLS flag is given. */
	if (k->tls.cacert[0] != '\0' || k->tls.cert[0] != '\0' || k->tls.key[0] != '\0')
		k->https = true;
	if (k->https) {
		char err[KVD_ERRMSG_SIZE];
		if (kvd_tls_client_check(&k->tls, err) != 0)
			return kvctl_fail(KVCTL_EXIT_USAGE, "%s", err);
	}
	return -1;
}

int main(int argc, char **argv)
{
	static struct kvctl k;
	const struct command *cmd = NULL;
	int rv = parse_args(argc, argv, &k, &cmd);

	if (rv >= 0)
		return rv;
	signal(SIGPIPE, SIG_IGN);
	k.transport = kvctl_transport_tcp();
	if (k.https) {
		char err[KVD_ERRMSG_SIZE];
		if (kvctl_transport_tls(&k.tls, &k.transport, err) != 0)
			return kvctl_fail(KVCTL_EXIT_USAGE, "%s", err);
	}
	k.deadline_ms = kvctl_now_ms() + k.timeout_ms;
	rv = cmd->run(&k);
	if (fflush(stdout) != 0 && rv == KVCTL_EXIT_OK)
		rv = kvctl_fail(KVCTL_EXIT_NO, "writing the output failed");
	return rv;
}
