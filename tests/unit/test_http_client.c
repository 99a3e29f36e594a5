/*
 * test_http_client.c: the peer HTTP client against the real HTTP server,
 * both on one libuv loop, over sockets on 127.0.0.1.
 */
#include <check.h>
#include <signal.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/http/http_client.h"
#include "api/http/http_server.h"
#include "kvd/errors.h"

struct env {
	uv_loop_t loop;
	struct http_server *server;
	uint16_t port;
	struct http_request *held[16];
	int nheld;
	int server_closed;
};

struct result {
	int calls;
	int status;
	char body[256];
	int order; /* completion rank */
};

static int completion_rank;

static void on_response(int status, const char *body, size_t len, void *user)
{
	struct result *r = user;

	r->calls++;
	r->status = status;
	r->order = ++completion_rank;
	if (body && len < sizeof(r->body)) {
		memcpy(r->body, body, len);
		r->body[len] = '\0';
	}
}

/* Routes: /echo (body back, with X-Peer header echoed), /never (held). */
static void handler(struct http_request *req, void *user)
{
	struct env *e = user;
	size_t blen;
	const char *path = http_request_path(req, NULL);
	const char *body = http_request_body(req, &blen);

	if (strcmp(path, "/never") == 0 && e->nheld < 16) {
		e->held[e->nheld++] = req;
		return;
	}
	if (strcmp(path, "/echo") == 0) {
		const char *x = http_request_header(req, "X-Peer", NULL);
		char out[300];
		int n = snprintf(out, sizeof(out), "%s|%.*s", x ? x : "-", (int)blen, body);
		http_response_send(req, 200, "text/plain", NULL, out, (size_t)n);
		return;
	}
	http_response_send(req, 404, "text/plain", NULL, "not found\n", 10);
}

static void on_guard(uv_timer_t *t)
{
	*(int *)t->data = 1;
}

/* Runs the loop until *flag is non-zero or timeout_ms passes; returns *flag. */
static int run_until(uv_loop_t *loop, int *flag, uint64_t timeout_ms)
{
	uv_timer_t guard;
	int expired = 0;

	uv_timer_init(loop, &guard);
	guard.data = &expired;
	uv_timer_start(&guard, on_guard, timeout_ms, 0);
	while (!*flag && !expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return *flag;
}

static void server_start(struct env *e, uint16_t port)
{
	char errmsg[KVD_ERRMSG_SIZE];
	int rc =
	    http_server_start(&e->loop, "127.0.0.1", port, NULL, handler, e, &e->server, errmsg);

	ck_assert_msg(rc == 0, "%s", errmsg);
	e->port = http_server_port(e->server);
}

static void on_server_closed(struct http_server *s, void *user)
{
	(void)s;
	((struct env *)user)->server_closed = 1;
}

static void server_stop(struct env *e)
{
	while (e->nheld > 0)
		http_response_send(e->held[--e->nheld], 200, NULL, NULL, NULL, 0);
	e->server_closed = 0;
	http_server_close(e->server, 1000, on_server_closed, e);
	ck_assert(run_until(&e->loop, &e->server_closed, 3000));
	e->server = NULL;
}

static void env_init(struct env *e)
{
	memset(e, 0, sizeof(*e));
	completion_rank = 0;
	ck_assert_int_eq(uv_loop_init(&e->loop), 0);
}

static void env_close(struct env *e)
{
	if (e->server)
		server_stop(e);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&e->loop), 0);
}

static struct http_client *client_new(struct env *e, const char *addr,
				      const struct http_client_opts *opts)
{
	struct http_client *c = NULL;
	char errmsg[KVD_ERRMSG_SIZE];

	ck_assert_int_eq(http_client_create(&e->loop, addr, opts, &c, errmsg), 0);
	return c;
}

START_TEST(test_http_client_request_roundtrip)
{
	struct env e;
	struct result r[3];
	struct http_client *c;
	struct http_client_stats st;
	struct http_server_stats ss;
	char addr[32];
	int i;

	env_init(&e);
	memset(r, 0, sizeof(r));
	server_start(&e, 0);
	snprintf(addr, sizeof(addr), ":%u", e.port);
	c = client_new(&e, addr, NULL);
	/* three at once: pipelined on one connection, completed in order */
	ck_assert_int_eq(http_client_request(c, "POST", "/echo", "X-Peer: n1\r\n", "abc", 3, 2000,
					     on_response, &r[0]),
			 0);
	ck_assert_int_eq(
	    http_client_request(c, "GET", "/missing", NULL, NULL, 0, 2000, on_response, &r[1]), 0);
	ck_assert_int_eq(
	    http_client_request(c, "PUT", "/echo?q=1", NULL, "xyz", 3, 2000, on_response, &r[2]),
	    0);
	ck_assert_int_eq(r[0].calls, 0); /* never synchronous */
	ck_assert(run_until(&e.loop, &r[2].calls, 3000));
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(r[i].calls, 1);
		ck_assert_int_eq(r[i].order, i + 1);
	}
	ck_assert_int_eq(r[0].status, 200);
	ck_assert_str_eq(r[0].body, "n1|abc");
	ck_assert_int_eq(r[1].status, 404);
	ck_assert_int_eq(r[2].status, 200);
	ck_assert_str_eq(r[2].body, "-|xyz");
	http_client_stats_get(c, &st);
	ck_assert_uint_eq(st.connects, 1);
	ck_assert_uint_eq(st.responses, 3);
	http_server_stats_get(e.server, &ss);
	ck_assert_uint_eq(ss.accepted, 1);
	http_client_close(c);
	env_close(&e);
}
END_TEST

START_TEST(test_http_client_request_reconnects_after_server_restart)
{
	struct env e;
	struct result r;
	struct http_client *c;
	struct http_client_stats st;
	char addr[32];
	uint16_t port;
	int i, ok = 0;

	env_init(&e);
	server_start(&e, 0);
	port = e.port;
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	c = client_new(&e, addr, NULL);
	memset(&r, 0, sizeof(r));
	http_client_request(c, "POST", "/echo", NULL, "1", 1, 2000, on_response, &r);
	ck_assert(run_until(&e.loop, &r.calls, 3000));
	ck_assert_int_eq(r.status, 200);
	server_stop(&e);
	/* down: requests fail fast with an error, not a hang */
	memset(&r, 0, sizeof(r));
	http_client_request(c, "POST", "/echo", NULL, "2", 1, 2000, on_response, &r);
	ck_assert(run_until(&e.loop, &r.calls, 3000));
	ck_assert_int_eq(r.status, KVD_EIO);
	server_start(&e, port);
	for (i = 0; i < 50 && !ok; i++) {
		memset(&r, 0, sizeof(r));
		http_client_request(c, "POST", "/echo", NULL, "3", 1, 2000, on_response, &r);
		ck_assert(run_until(&e.loop, &r.calls, 3000));
		ok = r.status == 200;
		if (!ok) {
			int never = 0;
			ck_assert_int_lt(r.status, 0);
			run_until(&e.loop, &never, 50);
		}
	}
	ck_assert_msg(ok, "no success after the restart");
	ck_assert_str_eq(r.body, "-|3");
	http_client_stats_get(c, &st);
	ck_assert_uint_eq(st.connects, 2);
	http_client_close(c);
	env_close(&e);
}
END_TEST

START_TEST(test_http_client_request_times_out)
{
	struct env e;
	struct result r, r2;
	struct http_client *c;
	char addr[32];
	uint64_t t0;

	env_init(&e);
	server_start(&e, 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", e.port);
	c = client_new(&e, addr, NULL);
	memset(&r, 0, sizeof(r));
	memset(&r2, 0, sizeof(r2));
	uv_update_time(&e.loop);
	t0 = uv_now(&e.loop);
	http_client_request(c, "GET", "/never", NULL, NULL, 0, 200, on_response, &r);
	ck_assert(run_until(&e.loop, &r.calls, 3000));
	ck_assert_int_eq(r.status, KVD_ETIMEDOUT);
	ck_assert_uint_ge(uv_now(&e.loop) - t0, 200);
	ck_assert_uint_lt(uv_now(&e.loop) - t0, 1000);
	/* the connection was reset: the server sees its request orphaned */
	{
		int never = 0;
		run_until(&e.loop, &never, 50);
	}
	ck_assert_int_eq(e.nheld, 1);
	ck_assert(!http_request_is_connected(e.held[0]));
	/* and the next request works on a new connection */
	http_client_request(c, "POST", "/echo", NULL, "ok", 2, 2000, on_response, &r2);
	ck_assert(run_until(&e.loop, &r2.calls, 3000));
	ck_assert_int_eq(r2.status, 200);
	ck_assert_int_eq(r.calls, 1);
	http_client_close(c);
	env_close(&e);
}
END_TEST

struct spam {
	struct http_client *client;
	struct result results[200];
	int n;
	int done;
};

static void on_spam(uv_timer_t *t)
{
	struct spam *s = t->data;

	if (s->n == 100) {
		uv_timer_stop(t);
		s->done = 1;
		return;
	}
	http_client_request(s->client, "GET", "/x", NULL, NULL, 0, 300, on_response,
			    &s->results[s->n++]);
}

static uint16_t unused_port(void)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

static uint64_t cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

START_TEST(test_http_client_request_backs_off_when_nothing_listens)
{
	struct env e;
	struct spam *s = calloc(1, sizeof(*s));
	struct http_client_stats st;
	uv_timer_t tick;
	char addr[32];
	uint64_t cpu0;
	int i, never = 0;

	env_init(&e);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", unused_port());
	s->client = client_new(&e, addr, NULL);
	uv_timer_init(&e.loop, &tick);
	tick.data = s;
	cpu0 = cpu_ms();
	/* one request every 10 ms for 1 s */
	uv_timer_start(&tick, on_spam, 10, 10);
	ck_assert(run_until(&e.loop, &s->done, 5000));
	run_until(&e.loop, &never, 400); /* let the last ones finish */
	http_client_stats_get(s->client, &st);
	/* attempts at ~0, 50, 150, 350, 750 ms (+ one after the spam): no busy loop */
	ck_assert_uint_ge(st.connect_attempts, 3);
	ck_assert_uint_le(st.connect_attempts, 8);
	ck_assert_uint_eq(st.connects, 0);
	ck_assert_uint_lt(cpu_ms() - cpu0, 500);
	for (i = 0; i < s->n; i++) {
		ck_assert_int_eq(s->results[i].calls, 1);
		ck_assert(s->results[i].status == KVD_EIO || s->results[i].status == KVD_ETIMEDOUT);
	}
	uv_close((uv_handle_t *)&tick, NULL);
	http_client_close(s->client);
	env_close(&e);
	free(s);
}
END_TEST

static struct http_client *reentrant_client;
static int reentrant_rc;

static void on_response_resubmit(int status, const char *body, size_t len, void *user)
{
	on_response(status, body, len, user);
	reentrant_rc = http_client_request(reentrant_client, "GET", "/echo", NULL, NULL, 0, 100,
					   on_response, user);
}

START_TEST(test_http_client_close_fails_pending)
{
	struct env e;
	struct result r[4];
	struct http_client_opts opts = {.max_queue = 3};
	struct http_client *c;
	char addr[32];
	int i;

	env_init(&e);
	memset(r, 0, sizeof(r));
	server_start(&e, 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", e.port);
	c = client_new(&e, addr, &opts);
	reentrant_client = c;
	http_client_request(c, "GET", "/never", NULL, NULL, 0, 0, on_response_resubmit, &r[0]);
	http_client_request(c, "GET", "/never", NULL, NULL, 0, 0, on_response, &r[1]);
	http_client_request(c, "GET", "/never", NULL, NULL, 0, 0, on_response, &r[2]);
	/* the queue is full: the fourth fails with EBUSY, asynchronously */
	ck_assert_int_eq(
	    http_client_request(c, "GET", "/never", NULL, NULL, 0, 0, on_response, &r[3]), 0);
	ck_assert_int_eq(r[3].calls, 0);
	ck_assert(run_until(&e.loop, &r[3].calls, 2000));
	ck_assert_int_eq(r[3].status, KVD_EBUSY);
	{
		int never = 0;
		run_until(&e.loop, &never, 100);
	}
	ck_assert_int_eq(e.nheld, 3); /* all three reached the server */
	http_client_close(c);
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(r[i].calls, 1);
		ck_assert_int_eq(r[i].status, KVD_ESHUTDOWN);
	}
	ck_assert_int_eq(reentrant_rc, KVD_ESHUTDOWN);
	env_close(&e);
}
END_TEST

START_TEST(test_http_client_create_rejects_bad_address)
{
	struct env e;
	struct http_client *c = NULL;
	char errmsg[KVD_ERRMSG_SIZE];

	env_init(&e);
	ck_assert_int_eq(http_client_create(&e.loop, "nohost", NULL, &c, errmsg), KVD_EINVAL);
	ck_assert_int_eq(http_client_create(&e.loop, "h:99999", NULL, &c, errmsg), KVD_EINVAL);
	ck_assert_int_eq(http_client_create(&e.loop, "h:", NULL, &c, errmsg), KVD_EINVAL);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(http_client_create(&e.loop, "[::1]:8001", NULL, &c, errmsg), 0);
	http_client_close(c);
	env_close(&e);
}
END_TEST

START_TEST(test_http_client_request_resolves_names)
{
	struct env e;
	struct result r;
	struct http_client *c;
	char addr[32];

	env_init(&e);
	memset(&r, 0, sizeof(r));
	server_start(&e, 0);
	snprintf(addr, sizeof(addr), "localhost:%u", e.port);
	c = client_new(&e, addr, NULL);
	http_client_request(c, "POST", "/echo", NULL, "n", 1, 3000, on_response, &r);
	ck_assert(run_until(&e.loop, &r.calls, 4000));
	/* localhost may resolve to ::1 first, where nothing listens */
	ck_assert(r.status == 200 || r.status == KVD_EIO);
	http_client_close(c);
	env_close(&e);
}
END_TEST

START_TEST(test_http_client_request_after_connection_close)
{
	struct env e;
	struct result r[2];
	struct http_client *c;
	struct http_client_stats st;
	char addr[32];

	env_init(&e);
	memset(r, 0, sizeof(r));
	server_start(&e, 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", e.port);
	c = client_new(&e, addr, NULL);
	/* the server closes after answering: the next request reconnects */
	http_client_request(c, "POST", "/echo", "Connection: close\r\n", "a", 1, 2000, on_response,
			    &r[0]);
	ck_assert(run_until(&e.loop, &r[0].calls, 3000));
	ck_assert_int_eq(r[0].status, 200);
	http_client_request(c, "HEAD", "/echo", NULL, NULL, 0, 2000, on_response, &r[1]);
	ck_assert(run_until(&e.loop, &r[1].calls, 3000));
	ck_assert_int_eq(r[1].status, 200);
	ck_assert_str_eq(r[1].body, ""); /* HEAD: no body read */
	http_client_stats_get(c, &st);
	ck_assert_uint_eq(st.connects, 2);
	http_client_close(c);
	env_close(&e);
}
END_TEST

static Suite *http_client_suite(void)
{
	Suite *s = suite_create("http_client");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_http_client_request_roundtrip);
	tcase_add_test(tc, test_http_client_request_reconnects_after_server_restart);
	tcase_add_test(tc, test_http_client_request_times_out);
	tcase_add_test(tc, test_http_client_request_backs_off_when_nothing_listens);
	tcase_add_test(tc, test_http_client_close_fails_pending);
	tcase_add_test(tc, test_http_client_create_rejects_bad_address);
	tcase_add_test(tc, test_http_client_request_resolves_names);
	tcase_add_test(tc, test_http_client_request_after_connection_close);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(http_client_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN); /* as the daemon does: writes to gone peers fail */
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
