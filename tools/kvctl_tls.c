/*
 * kvctl_tls.c: kvctl's TLS byte transport (struct kvctl_transport) over
 * api/common/tls_client.c: the plain transport connects (same address
 * lookup and connect deadline), then the handshake runs on the socket made
 * blocking with send/receive timeouts set from the deadline before each
 * call, so every step still ends by the command's deadline.
 */
#include "tools/kvctl_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "kvd/errors.h"

struct tls_state {
	int fd;
	struct kvd_tls_stream *stream;
};

/* One client for the process (the transport's functions take no context). */
static struct kvd_tls_client *client;

/* Sets the socket's send and receive timeouts to what is left until
 * deadline_ms (-1: none). Returns 0 or KVD_ETIMEDOUT when none is left. */
static int arm(int fd, int64_t deadline_ms)
{
	struct timeval tv = {0, 0};

	if (deadline_ms >= 0) {
		int64_t left = deadline_ms - kvctl_now_ms();
		if (left <= 0)
			return KVD_ETIMEDOUT;
		tv.tv_sec = (time_t)(left / 1000);
		tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return 0;
}

static int tls_connect(const char *host, uint16_t port, int64_t deadline_ms, void **state,
		       char *errmsg, size_t errmsg_size)
{
	char msg[KVD_ERRMSG_SIZE];
	struct tls_state *s = NULL;
	void *tcp = NULL;
	int fd, rv;

	rv = kvctl_transport_tcp()->connect(host, port, deadline_ms, &tcp, errmsg, errmsg_size);
	if (rv != 0)
		goto out;
	fd = (int)(intptr_t)tcp;
	s = calloc(1, sizeof(*s));
	if (s == NULL || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 ||
	    (rv = arm(fd, deadline_ms)) != 0) {
		snprintf(errmsg, errmsg_size, "%s:%u: %s", host, (unsigned)port,
			 rv == KVD_ETIMEDOUT ? "timed out" : "cannot set up the socket");
		rv = rv != 0 ? rv : KVD_EIO;
		goto fail;
	}
	rv = kvd_tls_client_connect(client, fd, host, &s->stream, msg);
	if (rv != 0) {
		snprintf(errmsg, errmsg_size, "%s:%u: %s", host, (unsigned)port, msg);
		goto fail;
	}
	s->fd = fd;
	*state = s;
	goto out;
fail:
	close(fd);
	free(s);
out:
	return rv;
}

/* A timed-out blocking call fails with EAGAIN: the deadline passed. */
static long timed(long n)
{
	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? KVD_ETIMEDOUT : n;
}

static long tls_read(void *state, char *buf, size_t len, int64_t deadline_ms)
{
	struct tls_state *s = state;
	int rv = arm(s->fd, deadline_ms);

	if (rv != 0)
		return rv;
	errno = 0;
	return timed((long)kvd_tls_stream_read(s->stream, buf, len));
}

static long tls_write(void *state, const char *buf, size_t len, int64_t deadline_ms)
{
	struct tls_state *s = state;
	int rv = arm(s->fd, deadline_ms);

	if (rv != 0)
		return rv;
	errno = 0;
	rv = kvd_tls_stream_write(s->stream, buf, len);
	return rv == 0 ? (long)len : timed(rv);
}

static void tls_close(void *state)
{
	struct tls_state *s = state;

	kvd_tls_stream_close(s->stream);
	close(s->fd);
	free(s);
}

static const char *tls_why(void *state)
{
	const struct tls_state *s = state;
	return kvd_tls_stream_why(s->stream);
}

static const struct kvctl_transport TLS = {tls_connect, tls_read, tls_write, tls_close, tls_why};

int kvctl_transport_tls(const struct kvd_tls_client_opts *opts, const struct kvctl_transport **out,
			char *errmsg)
{
	int rv = 0;

	if (client == NULL)
		rv = kvd_tls_client_create(opts, &client, errmsg);
	if (rv == 0)
		*out = &TLS;
	return rv;
}
