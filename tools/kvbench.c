/*
 * kvbench: a closed-loop load generator for kvd's key-value API (API.md §2).
 *
 * It opens --connections keep-alive connections (one api/http_client each, on
 * one libuv loop and thread) and keeps --pipeline requests outstanding on
 * each: when a response arrives, the next request goes out on the same
 * connection. Requests are PUT /kv/<key> with a --value-bytes body, GET
 * /kv/<key>, or a 50/50 mix, on keys drawn uniformly from --keys names
 * "kvbench-<n>". Redirects are never followed: 307 and 503 answers (sent to a
 * follower, or no leader) are counted like any status.
 *
 * It stops issuing after --duration or once --requests were sent, whichever
 * comes first, waits for what is in flight, and prints to stdout: requests/s,
 * the count of each status (and of transport errors), and latency percentiles
 * p50/p90/p99/p99.9/max over every completed request. Latency runs from the
 * request's submission to its complete response.
 *
 * TLS: an https:// --url speaks TLS (the same memory-BIO client as the
 * daemon's peers, api/http/tls.c), verifying the node against --cacert (else
 * the system's trust store) and presenting --cert/--key when given (mutual
 * TLS); --token adds "Authorization: Bearer T" to every request. A handshake
 * that fails is reported once, before the run, with OpenSSL's reason
 * (api/common/tls_client.c, a blocking probe).
 *
 * Exit status: 0 when at least one request got an HTTP answer, 1 when none
 * did (nothing listening, TLS refused), 2 for bad flags.
 */
#include <getopt.h>
#include <netdb.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "api/common/id.h"
#include "api/common/tls_client.h"
#include "api/http/http_client.h"
#include "api/http/tls.h"
#include "kvd/errors.h"

#define REQUEST_TIMEOUT_MS 10000
#define MAX_CONNECTIONS	   100000
#define N_ERRORS	   17 /* -code of enum kvd_error, 1..16 */

static const char USAGE[] =
    "usage: kvbench [--url http://127.0.0.1:8080] [--op put|get|mixed] [--connections 64]\n"
    "               [--duration 10s] [--keys 10000] [--value-bytes 100] [--requests N]\n"
    "               [--pipeline 1] [--cacert F] [--cert F --key F] [--token T]\n"
    "  (an https:// --url speaks TLS; --cacert/--cert/--key need it)\n";

enum bench_op { OP_PUT, OP_GET, OP_MIXED };

struct bench_args {
	char address[256]; /* host:port for http_client */
	char url[512];
	enum bench_op op;
	unsigned connections;
	uint64_t duration_ms; /* 0: no limit (with --requests) */
	uint64_t keys;
	size_t value_bytes;
	uint64_t requests; /* 0: no limit */
	unsigned pipeline;
	bool tls;			     /* https:// url */
	struct kvd_tls_client_opts tls_opts; /* --cacert, --cert, --key, --token */
	char auth[300];			     /* the Authorization line, or "" */
};

struct bench;

struct bench_conn {
	struct bench *b;
	struct http_client *client;
};

/* One request in flight. */
struct bench_req {
	struct bench_conn *conn;
	uint64_t start_ns;
};

struct bench {
	uv_loop_t *loop;
	struct bench_args args;
	struct bench_conn *conns;
	uv_timer_t timer;
	char *value;
	bool stopping;
	uint64_t issued, completed, in_flight;
	uint64_t start_ns, end_ns;
	uint64_t status[1000];	   /* count per HTTP status */
	uint64_t errors[N_ERRORS]; /* count per -kvd_error */
	uint64_t *latencies;	   /* ns, one per completed request */
	size_t n_latencies, cap_latencies;
	uint64_t rng;
};

static void fail_line(const char *fmt, ...)
{
	va_list ap;
	fputs("kvbench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (s[0] < '0' || s[0] > '9')
		return KVD_EINVAL;
	v = strtoull(s, &end, 10);
	if (*end != '\0' || v < min || v > max)
		return KVD_EINVAL;
	*out = v;
	return 0;
}

/* http(s)://host:port[/...] -> host:port; "host:port" alone is accepted too. */
static int parse_url(const char *url, char *address, size_t size, bool *tls)
{
	const char *p = url;
	size_t len;

	*tls = strncmp(p, "https://", 8) == 0;
	if (*tls)
		p += 8;
	else if (strncmp(p, "http://", 7) == 0)
		p += 7;
	else if (strstr(p, "://") != NULL)
		return KVD_EINVAL;
	len = strcspn(p, "/");
	if (len == 0 || len >= size || memchr(p, ':', len) == NULL)
		return KVD_EINVAL;
	memcpy(address, p, len);
	address[len] = '\0';
	return 0;
}

static const struct option BENCH_OPTIONS[] = {
    {"url", required_argument, NULL, 'u'},
    {"op", required_argument, NULL, 'o'},
    {"connections", required_argument, NULL, 'c'},
    {"duration", required_argument, NULL, 'd'},
    {"keys", required_argument, NULL, 'k'},
    {"value-bytes", required_argument, NULL, 'v'},
    {"requests", required_argument, NULL, 'r'},
    {"pipeline", required_argument, NULL, 'p'},
    {"cacert", required_argument, NULL, 'A'},
    {"cert", required_argument, NULL, 'C'},
    {"key", required_argument, NULL, 'K'},
    {"token", required_argument, NULL, 'T'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Returns 0, or 2 after printing the error line. Flags are read with
 * getopt_long, as in every kvd program; it stops at the first argument that
 * is not a flag, which is refused. */
static int parse_args(int argc, char **argv, struct bench_args *a)
{
	const char *url = "http://127.0.0.1:8080";
	bool duration_given = false;
	uint64_t v;
	int c;

	memset(a, 0, sizeof(*a));
	a->op = OP_PUT;
	a->connections = 64;
	a->duration_ms = 10000;
	a->keys = 10000;
	a->value_bytes = 100;
	a->pipeline = 1;
	opterr = 0; /* one line of ours, not getopt's */
	while ((c = getopt_long(argc, argv, "+:h", BENCH_OPTIONS, NULL)) != -1) {
		const char *val = optarg;

		switch (c) {
		case 'h': fputs(USAGE, stdout); exit(0);
		case 'u': url = val; break;
		case 'o':
			if (strcmp(val, "put") == 0)
				a->op = OP_PUT;
			else if (strcmp(val, "get") == 0)
				a->op = OP_GET;
			else if (strcmp(val, "mixed") == 0)
				a->op = OP_MIXED;
			else {
				fail_line("bad --op '%.100s' (put, get or mixed)", val);
				return 2;
			}
			break;
		case 'c':
			if (parse_u64(val, 1, MAX_CONNECTIONS, &v) != 0) {
				fail_line("bad --connections '%.100s' (1..%d)", val,
					  MAX_CONNECTIONS);
				return 2;
			}
			a->connections = (unsigned)v;
			break;
		case 'd':
			if (kvd_parse_duration_ms(val, &a->duration_ms) != 0) {
				fail_line("bad --duration '%.100s' (e.g. 10s, 500ms, 2m)", val);
				return 2;
			}
			duration_given = true;
			break;
		case 'k':
			if (parse_u64(val, 1, UINT32_MAX, &a->keys) != 0) {
				fail_line("bad --keys '%.100s' (1..%u)", val, UINT32_MAX);
				return 2;
			}
			break;
		case 'v':
			if (parse_u64(val, 1, 64 << 20, &v) != 0) {
				fail_line("bad --value-bytes '%.100s' (1..%d)", val, 64 << 20);
				return 2;
			}
			a->value_bytes = (size_t)v;
			break;
		case 'r':
			if (parse_u64(val, 1, UINT64_MAX / 2, &a->requests) != 0) {
				fail_line("bad --requests '%.100s' (a positive number)", val);
				return 2;
			}
			break;
		case 'p':
			if (parse_u64(val, 1, 1000, &v) != 0) {
				fail_line("bad --pipeline '%.100s' (1..1000)", val);
				return 2;
			}
			a->pipeline = (unsigned)v;
			break;
		case 'A':
		case 'C':
		case 'K':
		case 'T': {
			char err[KVD_ERRMSG_SIZE];
			const char *name = c == 'A'   ? "cacert"
					   : c == 'C' ? "cert"
					   : c == 'K' ? "key"
						      : "token";
			if (kvd_tls_client_flag(&a->tls_opts, name, val, err) != 1) {
				fail_line("%s", err);
				return 2;
			}
			break;
		}
		case ':': fail_line("flag %s needs a value", argv[optind - 1]); return 2;
		default:
			fail_line("unknown flag '%.100s' (see --help)", argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fail_line("unknown flag '%.100s' (see --help)", argv[optind]);
		return 2;
	}
	if (parse_url(url, a->address, sizeof(a->address), &a->tls) != 0) {
		fail_line("bad --url '%.200s' (http://host:port or https://host:port)", url);
		return 2;
	}
	{
		char err[KVD_ERRMSG_SIZE];
		const struct kvd_tls_client_opts *o = &a->tls_opts;
		if (!a->tls && (o->cacert[0] || o->cert[0] || o->key[0])) {
			fail_line("--cacert, --cert and --key need an https:// --url");
			return 2;
		}
		if (kvd_tls_client_check(o, err) != 0) {
			fail_line("%s", err);
			return 2;
		}
		kvd_tls_client_auth_header(o, a->auth, sizeof(a->auth));
	}
	snprintf(a->url, sizeof(a->url), "%s", url);
	if (a->requests > 0 && !duration_given)
		a->duration_ms = 0;
	return 0;
}

/* xorshift64*: cheap, good enough for picking keys. */
static uint64_t next_random(struct bench *b)
{
	b->rng ^= b->rng >> 12;
	b->rng ^= b->rng << 25;
	b->rng ^= b->rng >> 27;
	return b->rng * 2685821657736338717ULL;
}

static void issue(struct bench_conn *c);

static void record_latency(struct bench *b, uint64_t ns)
{
	if (b->n_latencies == b->cap_latencies) {
		size_t cap = b->cap_latencies ? b->cap_latencies * 2 : 65536;
		uint64_t *l = realloc(b->latencies, cap * sizeof(*l));
		if (l == NULL)
			return; /* the percentiles then cover fewer samples */
		b->latencies = l;
		b->cap_latencies = cap;
	}
	b->latencies[b->n_latencies++] = ns;
}

static void finish_if_done(struct bench *b)
{
	if (!b->stopping || b->in_flight > 0)
		return;
	b->end_ns = uv_hrtime();
	uv_timer_stop(&b->timer);
	for (unsigned i = 0; i < b->args.connections; i++) {
		http_client_close(b->conns[i].client);
		b->conns[i].client = NULL;
	}
	uv_close((uv_handle_t *)&b->timer, NULL);
}

static void response_cb(int status, const char *body, size_t len, void *user)
{
	struct bench_req *r = user;
	struct bench_conn *c = r->conn;
	struct bench *b = c->b;

	(void)body;
	(void)len;
	if (status == KVD_ESHUTDOWN) { /* closed by us; not counted */
		b->in_flight--;
		free(r);
		return;
	}
	b->completed++;
	b->in_flight--;
	record_latency(b, uv_hrtime() - r->start_ns);
	if (status >= 0 && status < 1000)
		b->status[status]++;
	else if (status < 0 && -status < N_ERRORS)
		b->errors[-status]++;
	free(r);
	if (b->args.requests > 0 && b->issued >= b->args.requests)
		b->stopping = true;
	if (!b->stopping)
		issue(c);
	finish_if_done(b);
}

static void issue(struct bench_conn *c)
{
	struct bench *b = c->b;
	struct bench_req *r = malloc(sizeof(*r));
	char path[64];
	bool put;
	int rv;

	if (r == NULL) {
		fail_line("out of memory");
		b->stopping = true;
		return;
	}
	put = b->args.op == OP_PUT || (b->args.op == OP_MIXED && (next_random(b) & 1) == 0);
	snprintf(path, sizeof(path), "/kv/kvbench-%" PRIu64, next_random(b) % b->args.keys);
	r->conn = c;
	r->start_ns = uv_hrtime();
	rv = http_client_request(c->client, put ? "PUT" : "GET", path,
				 b->args.auth[0] ? b->args.auth : NULL, put ? b->value : NULL,
				 put ? b->args.value_bytes : 0, REQUEST_TIMEOUT_MS, response_cb, r);
	if (rv != 0) {
		free(r);
		fail_line("cannot queue a request: %s", kvd_strerror(rv));
		b->stopping = true;
		return;
	}
	b->issued++;
	b->in_flight++;
}

static void timer_cb(uv_timer_t *t)
{
	struct bench *b = t->data;
	b->stopping = true;
	finish_if_done(b);
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, c = *(const uint64_t *)y;
	return a < c ? -1 : a > c;
}

static double percentile_ms(const struct bench *b, double p)
{
	size_t i;
	if (b->n_latencies == 0)
		return 0.0;
	i = (size_t)(p * (double)(b->n_latencies - 1) + 0.5);
	return (double)b->latencies[i] / 1e6;
}

static void print_report(struct bench *b)
{
	static const char *const OPS[] = {"put", "get", "mixed"};
	double secs = (double)(b->end_ns - b->start_ns) / 1e9;
	uint64_t transport = 0;

	if (secs <= 0)
		secs = 1e-9;
	qsort(b->latencies, b->n_latencies, sizeof(*b->latencies), cmp_u64);
	printf("kvbench: %s %s, %u connections x %u in flight, %" PRIu64 " keys, %zu-byte values\n",
	       OPS[b->args.op], b->args.url, b->args.connections, b->args.pipeline, b->args.keys,
	       b->args.value_bytes);
	printf("requests: %" PRIu64 " in %.2f s\n", b->completed, secs);
	printf("requests/s: %.1f\n", (double)b->completed / secs);
	for (int s = 0; s < 1000; s++)
		if (b->status[s] > 0 || s == 307 || s == 503)
			printf("status %d: %" PRIu64 "\n", s, b->status[s]);
	for (int e = 1; e < N_ERRORS; e++) {
		if (b->errors[e] == 0)
			continue;
		printf("error %s: %" PRIu64 "\n", kvd_strerror(-e), b->errors[e]);
		transport += b->errors[e];
	}
	printf("transport errors: %" PRIu64 "\n", transport);
	printf("latency ms: p50 %.3f p90 %.3f p99 %.3f p999 %.3f max %.3f\n",
	       percentile_ms(b, 0.50), percentile_ms(b, 0.90), percentile_ms(b, 0.99),
	       percentile_ms(b, 0.999), percentile_ms(b, 1.0));
}

static void tls_log_line(int level, const char *msg, const char *detail)
{
	(void)level;
	fail_line("%s %s", msg, detail);
}

/*
 * One blocking connection and handshake before the run, so that a refused
 * certificate is one clear line and exit 1 instead of a run full of
 * transport errors. Returns 0, or 1 after printing the line.
 */
static int tls_probe(const struct bench_args *a)
{
	struct kvd_tls_client *tc = NULL;
	struct kvd_tls_stream *ts = NULL;
	struct addrinfo hints, *ai = NULL;
	char host[256], errmsg[KVD_ERRMSG_SIZE] = "";
	const char *colon = strrchr(a->address, ':');
	size_t hlen = (size_t)(colon - a->address);
	int fd = -1, rc = 1;

	if (hlen >= 2 && a->address[0] == '[') {
		memcpy(host, a->address + 1, hlen - 2);
		host[hlen - 2] = '\0';
	} else {
		snprintf(host, sizeof(host), "%.*s", (int)hlen, hlen ? a->address : "127.0.0.1");
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || ai == NULL) {
		fail_line("cannot resolve %s", host);
		goto out;
	}
	fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		fail_line("cannot connect to %s", a->address);
		goto out;
	}
	if (kvd_tls_client_create(&a->tls_opts, &tc, errmsg) != 0 ||
	    kvd_tls_client_connect(tc, fd, host, &ts, errmsg) != 0) {
		fail_line("%s", errmsg);
		goto out;
	}
	/* With TLS 1.3 a refused client certificate shows only on the first read. */
	if (kvd_tls_stream_write(ts, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 35) != 0 ||
	    kvd_tls_stream_read(ts, errmsg, 16) <= 0) {
		fail_line("TLS: %s refused the connection (client certificate?)", a->address);
		goto out;
	}
	rc = 0;
out:
	kvd_tls_stream_close(ts);
	kvd_tls_client_destroy(tc);
	if (fd >= 0)
		close(fd);
	if (ai)
		freeaddrinfo(ai);
	return rc;
}

int main(int argc, char **argv)
{
	struct bench *b = calloc(1, sizeof(*b));
	struct http_client_opts copts = {0};
	struct kvd_tls_ctx *tls = NULL;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	uint64_t answered = 0;
	int rv, exit_code = 1;

	if (b == NULL) {
		fail_line("out of memory");
		return 1;
	}
	rv = parse_args(argc, argv, &b->args);
	if (rv != 0) {
		free(b);
		return rv;
	}
	signal(SIGPIPE, SIG_IGN);
	if (b->args.tls) {
		const struct kvd_tls_client_opts *o = &b->args.tls_opts;
		if (tls_probe(&b->args) != 0) {
			free(b);
			return 1;
		}
		rv = kvd_tls_ctx_create(false, o->cert[0] ? o->cert : NULL,
					o->key[0] ? o->key : NULL, o->cacert[0] ? o->cacert : NULL,
					&tls, errmsg);
		if (rv != 0) {
			fail_line("%s", errmsg);
			free(b);
			return 2;
		}
		kvd_tls_set_process(NULL, tls, tls_log_line);
	}
	b->loop = uv_default_loop();
	b->rng = uv_hrtime() | 1;
	b->value = malloc(b->args.value_bytes);
	b->conns = calloc(b->args.connections, sizeof(*b->conns));
	if (b->value == NULL || b->conns == NULL) {
		fail_line("out of memory");
		goto out;
	}
	for (size_t i = 0; i < b->args.value_bytes; i++)
		b->value[i] = (char)('a' + i % 26);
	copts.max_queue = b->args.pipeline + 1;
	for (unsigned i = 0; i < b->args.connections; i++) {
		b->conns[i].b = b;
		rv = http_client_create(b->loop, b->args.address, &copts, &b->conns[i].client,
					errmsg);
		if (rv != 0) {
			fail_line("bad --url '%s': %s", b->args.url, errmsg);
			for (unsigned j = 0; j < i; j++)
				http_client_close(b->conns[j].client);
			uv_run(b->loop, UV_RUN_DEFAULT);
			exit_code = 2;
			goto out;
		}
	}
	uv_timer_init(b->loop, &b->timer);
	b->timer.data = b;
	b->start_ns = uv_hrtime();
	if (b->args.duration_ms > 0)
		uv_timer_start(&b->timer, timer_cb, b->args.duration_ms, 0);
	for (unsigned i = 0; i < b->args.connections && !b->stopping; i++)
		for (unsigned k = 0; k < b->args.pipeline && !b->stopping; k++) {
			if (b->args.requests > 0 && b->issued >= b->args.requests) {
				b->stopping = true;
				break;
			}
			issue(&b->conns[i]);
		}
	finish_if_done(b);
	uv_run(b->loop, UV_RUN_DEFAULT);
	print_report(b);
	for (int s = 0; s < 1000; s++)
		answered += b->status[s];
	if (answered == 0)
		fail_line("no request got an HTTP answer from %s", b->args.address);
	exit_code = answered > 0 ? 0 : 1;
out:
	uv_loop_close(b->loop);
	kvd_tls_set_process(NULL, NULL, NULL);
	kvd_tls_ctx_destroy(tls);
	free(b->latencies);
	free(b->conns);
	free(b->value);
	free(b);
	return exit_code;
}
