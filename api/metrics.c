/*
 * metrics.c: a fixed set of counters and histograms, rendered as Prometheus
 * text. No allocation on the request path: every series is a slot in a
 * static table indexed by route, method and status.
 *
 * Responses are counted by kvd_metrics_observe, which the node registers as
 * the HTTP server's observe hook: every answer is seen, including the
 * server's own protocol errors (400, 408, 431, 401 from the headers), and no
 * response has to pass through this file on its way out.
 */
#include "api/metrics.h"

#include <dirent.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/applier.h"
#include "api/node_internal.h"
#include "api/snapshots.h"

enum route {
	R_KV,
	R_KV_LIST,
	R_TXN,
	R_CLEAR,
	R_HEALTH,
	R_CLUSTER,
	R_LOG,
	R_RAFT,
	R_METRICS,
	R_OTHER,
	R_COUNT
};
static const char *const ROUTES[R_COUNT] = {"kv",      "kv_list", "txn",  "clear",   "health",
					    "cluster", "log",	  "raft", "metrics", "other"};
enum method { M_GET, M_PUT, M_DELETE, M_POST, M_OTHER, M_COUNT };
static const char *const METHODS[M_COUNT] = {"GET", "PUT", "DELETE", "POST", "OTHER"};
static const int STATUSES[] = {200, 307, 400, 401, 404, 405, 408, 409,
			       412, 413, 431, 500, 503, 507, 0};
#define S_COUNT (sizeof(STATUSES) / sizeof(STATUSES[0]))

/* Latency bucket bounds, ms; the last bucket is +Inf. */
static const uint64_t LAT_MS[] = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};
#define LAT_COUNT (sizeof(LAT_MS) / sizeof(LAT_MS[0]))
/* fsync bucket bounds, microseconds. */
static const uint64_t FSYNC_US[] = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1000000};
#define FSYNC_COUNT (sizeof(FSYNC_US) / sizeof(FSYNC_US[0]))

static uint64_t requests[R_COUNT][M_COUNT][S_COUNT];
static uint64_t lat_buckets[R_COUNT][LAT_COUNT + 1];
static uint64_t lat_sum_ms[R_COUNT];
static uint64_t fsync_buckets[FSYNC_COUNT + 1];
static uint64_t fsync_sum_ns, fsync_count;
static uint64_t elections_started, elections_won;

static enum route classify(const char *path, size_t len)
{
	static const struct {
		const char *prefix;
		enum route r;
	} table[] = {
	    {"/kv", R_KV},   {"/clear", R_CLEAR}, {"/health", R_HEALTH},   {"/cluster/", R_CLUSTER},
	    {"/log", R_LOG}, {"/raft/", R_RAFT},  {"/metrics", R_METRICS}, {"/txn", R_TXN}};
	if (len == 3 && memcmp(path, "/kv", 3) == 0)
		return R_KV_LIST; /* GET /kv?prefix=..: range listing */
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		size_t plen = strlen(table[i].prefix);
		if (len >= plen && memcmp(path, table[i].prefix, plen) == 0)
			return table[i].r;
	}
	return R_OTHER;
}

static enum method method_of(int m)
{
	switch (m) {
	case HTTP_GET: return M_GET;
	case HTTP_PUT: return M_PUT;
	case HTTP_DELETE: return M_DELETE;
	case HTTP_POST: return M_POST;
	default: return M_OTHER;
	}
}

void kvd_metrics_observe(const struct http_request *req, int status, void *user)
{
	size_t plen, s = 0, b = 0;
	const char *path;
	enum route r;
	uint64_t ms;

	(void)user;
	while (STATUSES[s] != 0 && STATUSES[s] != status)
		s++;
	if (req == NULL) { /* the server's own answer to a protocol error */
		requests[R_OTHER][M_OTHER][s]++;
		return;
	}
	path = http_request_path(req, &plen);
	r = classify(path, plen);
	requests[r][method_of(http_request_method(req))][s]++;
	ms = uv_now(uv_default_loop()) - http_request_start_ms(req);
	while (b < LAT_COUNT && ms > LAT_MS[b])
		b++;
	lat_buckets[r][b]++;
	lat_sum_ms[r] += ms;
}

void kvd_metrics_fsync(uint64_t ns)
{
	size_t b = 0;
	while (b < FSYNC_COUNT && ns / 1000 > FSYNC_US[b])
		b++;
	__atomic_fetch_add(&fsync_buckets[b], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&fsync_sum_ns, ns, __ATOMIC_RELAXED);
	__atomic_fetch_add(&fsync_count, 1, __ATOMIC_RELAXED);
}

void kvd_metrics_election(int won)
{
	if (won)
		elections_won++;
	else
		elections_started++;
}

/* A growable text buffer for the exposition. */
struct text {
	char *buf;
	size_t len, cap;
};

static void emit(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		if (t->buf != NULL) {
			va_start(ap, fmt);
			n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
			va_end(ap);
			if (n >= 0 && (size_t)n < t->cap - t->len) {
				t->len += (size_t)n;
				return;
			}
		}
		size_t cap = t->cap ? t->cap * 2 : 16384;
		char *nb = realloc(t->buf, cap);
		if (nb == NULL)
			return;
		t->buf = nb;
		t->cap = cap;
	}
}

static uint64_t dir_bytes(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t total = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char path[PATH_MAX];
		struct stat st;
		if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
			continue;
		snprintf(path, sizeof(path), "%.4000s/%.255s", dir, de->d_name);
		if (stat(path, &st) == 0)
			total += (uint64_t)st.st_size;
	}
	closedir(d);
	return total;
}

static void emit_gauges(struct text *t, struct kvd_node *n)
{
	enum raft_role role = raft_role(n->raft);

	emit(t,
	     "# HELP kvd_raft_term Current Raft term.\n# TYPE kvd_raft_term gauge\n"
	     "kvd_raft_term %" PRIu64 "\n",
	     raft_current_term(n->raft));
	emit(t,
	     "# HELP kvd_raft_leader 1 when this node is the leader.\n"
	     "# TYPE kvd_raft_leader gauge\nkvd_raft_leader %d\n",
	     role == RAFT_LEADER);
	emit(t,
	     "# HELP kvd_raft_commit_index Highest log index known committed.\n"
	     "# TYPE kvd_raft_commit_index gauge\nkvd_raft_commit_index %" PRIu64 "\n",
	     raft_commit_index(n->raft));
	emit(t,
	     "# HELP kvd_raft_applied_index Highest log index applied to LevelDB.\n"
	     "# TYPE kvd_raft_applied_index gauge\nkvd_raft_applied_index %" PRIu64 "\n",
	     kvd_applier_applied(n->applier));
	emit(t,
	     "# HELP kvd_raft_last_index Last index in the log.\n"
	     "# TYPE kvd_raft_last_index gauge\nkvd_raft_last_index %" PRIu64 "\n",
	     raft_last_index(n->raft));
	emit(t,
	     "# HELP kvd_log_bytes Bytes of log segment files.\n"
	     "# TYPE kvd_log_bytes gauge\nkvd_log_bytes %" PRIu64 "\n",
	     dir_bytes(n->raft_dir, "seg-"));
	emit(t,
	     "# HELP kvd_snapshot_bytes Bytes of the newest snapshot file.\n"
	     "# TYPE kvd_snapshot_bytes gauge\nkvd_snapshot_bytes %" PRIu64 "\n",
	     kvd_snapshot_last(n).size);
	emit(t,
	     "# HELP kvd_snapshot_index Last index covered by the newest snapshot.\n"
	     "# TYPE kvd_snapshot_index gauge\nkvd_snapshot_index %" PRIu64 "\n",
	     kvd_snapshot_last(n).index);
	emit(t,
	     "# HELP kvd_elections_started_total Elections this node started as candidate.\n"
	     "# TYPE kvd_elections_started_total counter\n"
	     "kvd_elections_started_total %" PRIu64 "\n",
	     elections_started);
	emit(t,
	     "# HELP kvd_elections_won_total Elections this node won.\n"
	     "# TYPE kvd_elections_won_total counter\nkvd_elections_won_total %" PRIu64 "\n",
	     elections_won);
}

static void emit_connections(struct text *t, const struct kvd_node *n)
{
	struct http_server_stats st;

	http_server_stats_get(n->http, &st);
	emit(t,
	     "# HELP kvd_http_connections HTTP connections open now.\n"
	     "# TYPE kvd_http_connections gauge\nkvd_http_connections %" PRIu32 "\n"
	     "# HELP kvd_http_connections_refused_total Connections closed at accept (over "
	     "--max-connections, the descriptor limit, or the cap of TLS handshakes in "
	     "progress).\n# TYPE "
	     "kvd_http_connections_refused_total counter\n"
	     "kvd_http_connections_refused_total %" PRIu64 "\n"
	     "# HELP kvd_http_connections_evicted_total Idle connections closed to make room.\n"
	     "# TYPE kvd_http_connections_evicted_total counter\n"
	     "kvd_http_connections_evicted_total %" PRIu64 "\n"
	     "# HELP kvd_http_requests_timed_out_total Requests ended by the header or body "
	     "deadline.\n# TYPE kvd_http_requests_timed_out_total counter\n"
	     "kvd_http_requests_timed_out_total %" PRIu64 "\n",
	     st.connections, st.refused, st.evicted, st.timed_out);
}

static void emit_requests(struct text *t)
{
	emit(t, "# HELP kvd_http_requests_total HTTP requests answered, by route, method "
		"and status.\n# TYPE kvd_http_requests_total counter\n");
	for (int r = 0; r < R_COUNT; r++)
		for (int m = 0; m < M_COUNT; m++)
			for (size_t s = 0; s < S_COUNT; s++) {
				char status[8];
				if (requests[r][m][s] == 0)
					continue;
				if (STATUSES[s] != 0)
					snprintf(status, sizeof(status), "%d", STATUSES[s]);
				else
					snprintf(status, sizeof(status), "other");
				emit(t,
				     "kvd_http_requests_total{route=\"%s\",method=\"%s\",status=\"%"
				     "s\"} "
				     "%" PRIu64 "\n",
				     ROUTES[r], METHODS[m], status, requests[r][m][s]);
			}
	emit(t, "# HELP kvd_http_request_duration_seconds Time from a complete request to its "
		"answer.\n# TYPE kvd_http_request_duration_seconds histogram\n");
	for (int r = 0; r < R_COUNT; r++) {
		uint64_t cum = 0;
		for (size_t b = 0; b <= LAT_COUNT; b++) {
			cum += lat_buckets[r][b];
			if (b < LAT_COUNT)
				emit(t,
				     "kvd_http_request_duration_seconds_bucket{route=\"%s\",le=\"%"
				     "g\"} "
				     "%" PRIu64 "\n",
				     ROUTES[r], (double)LAT_MS[b] / 1000.0, cum);
			else
				emit(t,
				     "kvd_http_request_duration_seconds_bucket{route=\"%s\",le=\"+"
				     "Inf\"} "
				     "%" PRIu64 "\n",
				     ROUTES[r], cum);
		}
		emit(t, "kvd_http_request_duration_seconds_sum{route=\"%s\"} %g\n", ROUTES[r],
		     (double)lat_sum_ms[r] / 1000.0);
		emit(t, "kvd_http_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n",
		     ROUTES[r], cum);
	}
}

static void emit_fsync(struct text *t)
{
	uint64_t cum = 0;

	emit(t, "# HELP kvd_fsync_duration_seconds Log fdatasync latency.\n"
		"# TYPE kvd_fsync_duration_seconds histogram\n");
	for (size_t b = 0; b <= FSYNC_COUNT; b++) {
		cum += __atomic_load_n(&fsync_buckets[b], __ATOMIC_RELAXED);
		if (b < FSYNC_COUNT)
			emit(t, "kvd_fsync_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
			     (double)FSYNC_US[b] / 1e6, cum);
		else
			emit(t, "kvd_fsync_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
			     cum);
	}
	emit(t, "kvd_fsync_duration_seconds_sum %g\n",
	     (double)__atomic_load_n(&fsync_sum_ns, __ATOMIC_RELAXED) / 1e9);
	emit(t, "kvd_fsync_duration_seconds_count %" PRIu64 "\n",
	     __atomic_load_n(&fsync_count, __ATOMIC_RELAXED));
}

void kvd_metrics_respond(struct kvd_node *n, struct http_request *req)
{
	struct text t = {0};

	emit_gauges(&t, n);
	emit_requests(&t);
	emit_connections(&t, n);
	emit_fsync(&t);
	if (t.buf == NULL) {
		kvd_reply_text(req, 503, "out of memory\n");
		return;
	}
	http_response_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, t.buf,
			   t.len);
	free(t.buf);
}
