/*
 * config.c: flags and environment into struct kvd_config (API.md §1).
 *
 * Precedence: a flag wins over its environment variable, which wins over the
 * default. Ids are kept exactly as the operator wrote them (":8001" stays
 * ":8001"); only the listen address and the HTTP port are derived from them.
 *
 * Self identification: --addr or ADDR names this node. Without them, with
 * --peers, the node is the entry whose port equals --port (default 8080); when
 * several entries share that port, --listen picks the one with that host.
 */
#include "api/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/textutil.h"
#include "kvd/errors.h"

#define DEFAULT_PORT	8080
#define MAX_VALUE_LIMIT (256u * 1024 * 1024) /* bytes */

static int fail(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(char *errmsg, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (errmsg != NULL) {
		vsnprintf(errmsg, KVD_ERRMSG_SIZE, fmt, ap);
		for (char *p = errmsg; *p != '\0'; p++) /* one line: no echoed controls */
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
	}
	va_end(ap);
	return KVD_EINVAL;
}

int kvd_config_split_id(const char *id, char *host, size_t host_size, uint16_t *port)
{
	return kvd_id_split(id, host, host_size, port);
}

/* Adds id to the member list unless present. */
static int add_member(struct kvd_config *c, const char *id, char *errmsg)
{
	for (unsigned i = 0; i < c->n_members; i++)
		if (strcmp(c->members[i], id) == 0)
			return 0;
	if (c->n_members >= KVD_CONFIG_MAX_PEERS)
		return fail(errmsg, "too many members (at most %d)", KVD_CONFIG_MAX_PEERS);
	memmove(c->members[c->n_members++], id, strlen(id) + 1); /* id may be c->id */
	return 0;
}

/* Splits a comma-separated id list into the member list. */
static int parse_list(struct kvd_config *c, const char *what, const char *list, char *errmsg)
{
	const char *p = list;

	while (*p != '\0') {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		char id[KVD_CONFIG_ID_SIZE];
		uint16_t port;

		while (len > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len == 0 || len >= sizeof(id))
			return fail(errmsg, "%s: malformed member list '%s'", what, list);
		memcpy(id, p, len);
		id[len] = '\0';
		if (kvd_config_split_id(id, NULL, 0, &port) != 0)
			return fail(errmsg, "%s: '%s' is not host:port or :port", what, id);
		if (add_member(c, id, errmsg) != 0)
			return KVD_EINVAL;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return 0;
}

struct flag_values {
	const char *port, *working_dir, *peers, *addr, *join, *listen, *election, *heartbeat,
	    *max_value, *snapshot_threshold, *token, *log_level, *max_connections, *tls_cert,
	    *tls_key, *tls_ca, *client_token;
};

static const struct {
	const char *name;
	size_t offset;
} FLAGS[] = {
    {"port", offsetof(struct flag_values, port)},
    {"working-dir", offsetof(struct flag_values, working_dir)},
    {"peers", offsetof(struct flag_values, peers)},
    {"addr", offsetof(struct flag_values, addr)},
    {"join", offsetof(struct flag_values, join)},
    {"listen", offsetof(struct flag_values, listen)},
    {"election-timeout-ms", offsetof(struct flag_values, election)},
    {"heartbeat-ms", offsetof(struct flag_values, heartbeat)},
    {"max-value-bytes", offsetof(struct flag_values, max_value)},
    {"snapshot-threshold", offsetof(struct flag_values, snapshot_threshold)},
    {"cluster-token", offsetof(struct flag_values, token)},
    {"log-level", offsetof(struct flag_values, log_level)},
    {"max-connections", offsetof(struct flag_values, max_connections)},
    {"tls-cert", offsetof(struct flag_values, tls_cert)},
    {"tls-key", offsetof(struct flag_values, tls_key)},
    {"tls-ca", offsetof(struct flag_values, tls_ca)},
    {"client-token", offsetof(struct flag_values, client_token)},
};

static int read_flags(int argc, char **argv, struct flag_values *f, char *errmsg)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *eq;
		const char *value;
		size_t nlen;
		size_t k;

		if (strncmp(arg, "--", 2) != 0)
			return fail(errmsg, "unexpected argument '%s' (flags start with --)", arg);
		arg += 2;
		eq = strchr(arg, '=');
		nlen = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
		for (k = 0; k < sizeof(FLAGS) / sizeof(FLAGS[0]); k++)
			if (strlen(FLAGS[k].name) == nlen && strncmp(FLAGS[k].name, arg, nlen) == 0)
				break;
		if (k == sizeof(FLAGS) / sizeof(FLAGS[0]))
			return fail(errmsg, "unknown flag '--%.*s' (see --help)", (int)nlen, arg);
		if (eq != NULL) {
			value = eq + 1;
		} else {
			if (i + 1 >= argc)
				return fail(errmsg, "flag '--%s' needs a value", FLAGS[k].name);
			value = argv[++i];
		}
		*(const char **)((char *)f + FLAGS[k].offset) = value;
	}
	return 0;
}

static const char *pick(const char *flag, const char *env)
{
	if (flag != NULL)
		return flag;
	return getenv(env);
}

/* Chooses this node's id among the --peers entries by port (and host). */
static int find_self(struct kvd_config *c, const char *listen, char *errmsg)
{
	int found = -1;

	for (unsigned i = 0; i < c->n_members; i++) {
		char host[256];
		uint16_t port;

		if (kvd_config_split_id(c->members[i], host, sizeof(host), &port) != 0 ||
		    port != c->port)
			continue;
		if (found >= 0 && listen == NULL)
			return fail(
			    errmsg,
			    "--peers has several entries with port %u; give --addr or --listen",
			    (unsigned)c->port);
		if (listen != NULL && strcmp(host, listen) != 0 && found >= 0)
			continue;
		found = (int)i;
	}
	if (found < 0)
		return fail(errmsg, "no --peers entry has this node's port %u", (unsigned)c->port);
	memcpy(c->id, c->members[found], sizeof(c->id));
	return 0;
}

static int parse_numbers(const struct flag_values *f, struct kvd_config *c, char *errmsg)
{
	if (f->election != NULL) {
		const char *dash = strchr(f->election, '-');
		char a[32];
		size_t alen = dash != NULL ? (size_t)(dash - f->election) : 0;

		if (dash == NULL || alen == 0 || alen >= sizeof(a))
			return fail(errmsg, "--election-timeout-ms: '%s' is not A-B (ms)",
				    f->election);
		memcpy(a, f->election, alen);
		a[alen] = '\0';
		if (kvd_parse_u64(a, 1, 600000, &c->election_timeout_min) != 0 ||
		    kvd_parse_u64(dash + 1, 1, 600000, &c->election_timeout_max) != 0 ||
		    c->election_timeout_min > c->election_timeout_max)
			return fail(errmsg,
				    "--election-timeout-ms: '%s' is not A-B with 0 < A <= B",
				    f->election);
	}
	if (f->heartbeat != NULL && kvd_parse_u64(f->heartbeat, 1, 600000, &c->heartbeat_ms) != 0)
		return fail(errmsg, "--heartbeat-ms: '%s' is not a positive number", f->heartbeat);
	if (c->heartbeat_ms >= c->election_timeout_min)
		return fail(errmsg, "--heartbeat-ms %llu must be below the election timeout %llu",
			    (unsigned long long)c->heartbeat_ms,
			    (unsigned long long)c->election_timeout_min);
	if (f->max_value != NULL &&
	    kvd_parse_u64(f->max_value, 1, MAX_VALUE_LIMIT, &c->max_value_bytes) != 0)
		return fail(errmsg, "--max-value-bytes: '%s' is not a number in 1..%u",
			    f->max_value, MAX_VALUE_LIMIT);
	if (f->snapshot_threshold != NULL &&
	    kvd_parse_u64(f->snapshot_threshold, 1, UINT32_MAX, &c->snapshot_threshold) != 0)
		return fail(errmsg, "--snapshot-threshold: '%s' is not a positive number",
			    f->snapshot_threshold);
	if (f->max_connections != NULL &&
	    kvd_parse_u64(f->max_connections, 1, 1000000, &c->max_connections) != 0)
		return fail(errmsg, "--max-connections: '%s' is not a number in 1..1000000",
			    f->max_connections);
	if (f->log_level != NULL) {
		static const char *const names[] = {"debug", "info", "warn", "error"};
		unsigned i;
		for (i = 0; i < 4; i++)
			if (strcmp(f->log_level, names[i]) == 0)
				break;
		if (i == 4)
			return fail(errmsg, "--log-level: '%s' is not debug, info, warn or error",
				    f->log_level);
		c->log_level = (enum kvd_log_level)i;
	}
	return 0;
}

/*
 * A bearer token from flag (named flag) or environment variable env: an
 * empty token would silently turn authentication off; a byte outside visible
 * ASCII would end up in an Authorization header. dst has size bytes.
 */
static int parse_token(const char *flag, const char *flag_value, const char *env, char *dst,
		       size_t size, char *errmsg)
{
	const char *token = pick(flag_value, env);
	const char *name = flag_value != NULL ? flag : env;
	int rv = 0;

	if (token == NULL)
		goto out;
	if (*token == '\0') {
		rv = fail(errmsg, "%s is empty (leave it unset for no authentication)", name);
		goto out;
	}
	for (const char *t = token; *t != '\0'; t++) {
		if (*t < 0x21 || *t > 0x7e) {
			rv = fail(errmsg, "%s must be visible ASCII without spaces", name);
			goto out;
		}
	}
	if (strlen(token) >= size) {
		rv = fail(errmsg, "%s is too long (at most %zu bytes)", name, size - 1);
		goto out;
	}
	snprintf(dst, size, "%s", token);
out:
	return rv;
}

/* A TLS file flag: a non-empty path that fits. */
static int parse_path(const char *flag, const char *value, char *dst, size_t size, char *errmsg)
{
	if (value == NULL)
		return 0;
	if (*value == '\0' || strlen(value) >= size)
		return fail(errmsg, "%s: '%s' is not a file path", flag, value);
	snprintf(dst, size, "%s", value);
	return 0;
}

int kvd_config_parse(int argc, char **argv, struct kvd_config *out, char *errmsg)
{
	struct flag_values f = {0};
	struct kvd_config *c;
	const char *addr, *others, *dir;
	char host[256];
	uint16_t port;
	uint64_t p;
	int rv;

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return fail(errmsg, "out of memory");
	c->election_timeout_min = 500;
	c->election_timeout_max = 1000;
	c->heartbeat_ms = 100;
	c->max_value_bytes = 1048576;
	c->snapshot_threshold = 10000;
	c->max_connections = 20000;
	c->log_level = KVD_LOG_INFO;

	rv = read_flags(argc, argv, &f, errmsg);
	if (rv != 0)
		goto out;
	rv = parse_numbers(&f, c, errmsg);
	if (rv != 0)
		goto out;

	addr = f.addr != NULL ? f.addr : getenv("ADDR");
	if (addr != NULL && *addr == '\0')
		addr = NULL;
	if (addr != NULL) {
		if (kvd_config_split_id(addr, NULL, 0, &port) != 0) {
			rv = fail(errmsg, "%s: '%s' is not host:port or :port",
				  f.addr != NULL ? "--addr" : "ADDR", addr);
			goto out;
		}
		snprintf(c->id, sizeof(c->id), "%s", addr);
		c->id_from_env = f.addr == NULL;
	}

	c->port = DEFAULT_PORT;
	if (f.port != NULL) {
		if (kvd_parse_u64(f.port, 1, 65535, &p) != 0) {
			rv = fail(errmsg, "--port: '%s' is not a port number (1-65535)", f.port);
			goto out;
		}
		c->port = (uint16_t)p;
	} else if (addr != NULL) {
		kvd_config_split_id(addr, NULL, 0, &c->port);
	}

	if (f.peers != NULL) {
		rv = parse_list(c, "--peers", f.peers, errmsg);
		if (rv != 0)
			goto out;
		c->peers_given = c->n_members > 0;
		if (addr == NULL) {
			rv = find_self(c, f.listen, errmsg);
			if (rv != 0)
				goto out;
		} else if (add_member(c, c->id, errmsg) != 0) {
			rv = KVD_EINVAL;
			goto out;
		}
	} else {
		others = getenv("PEERS");
		if (c->id[0] == '\0')
			snprintf(c->id, sizeof(c->id), ":%u", (unsigned)c->port);
		if (add_member(c, c->id, errmsg) != 0) {
			rv = KVD_EINVAL;
			goto out;
		}
		if (others != NULL && *others != '\0') {
			rv = parse_list(c, "PEERS", others, errmsg);
			if (rv != 0)
				goto out;
		}
		c->peers_given = c->n_members > 1;
	}

	if (f.listen != NULL) {
		if (*f.listen == '\0' || strlen(f.listen) >= sizeof(c->listen_host)) {
			rv = fail(errmsg, "--listen: '%s' is not a host", f.listen);
			goto out;
		}
		snprintf(c->listen_host, sizeof(c->listen_host), "%s", f.listen);
	} else {
		kvd_config_split_id(c->id, host, sizeof(host), &port);
		snprintf(c->listen_host, sizeof(c->listen_host), "%s", host);
	}

	if (f.join != NULL) {
		if (kvd_config_split_id(f.join, NULL, 0, &port) != 0) {
			rv = fail(errmsg, "--join: '%s' is not host:port or :port", f.join);
			goto out;
		}
		snprintf(c->join, sizeof(c->join), "%s", f.join);
	}

	dir = pick(f.working_dir, "DATA_DIR");
	if (dir == NULL || *dir == '\0')
		dir = "./data";
	if (strlen(dir) >= sizeof(c->data_dir)) {
		rv = fail(errmsg, "data directory path is too long");
		goto out;
	}
	snprintf(c->data_dir, sizeof(c->data_dir), "%s", dir);

	rv = parse_token("--cluster-token", f.token, "CLUSTER_TOKEN", c->cluster_token,
			 sizeof(c->cluster_token), errmsg);
	if (rv != 0)
		goto out;
	rv = parse_token("--client-token", f.client_token, "KVD_CLIENT_TOKEN", c->client_token,
			 sizeof(c->client_token), errmsg);
	if (rv != 0)
		goto out;

	if (parse_path("--tls-cert", f.tls_cert, c->tls_cert, sizeof(c->tls_cert), errmsg) != 0 ||
	    parse_path("--tls-key", f.tls_key, c->tls_key, sizeof(c->tls_key), errmsg) != 0 ||
	    parse_path("--tls-ca", f.tls_ca, c->tls_ca, sizeof(c->tls_ca), errmsg) != 0) {
		rv = KVD_EINVAL;
		goto out;
	}
	if ((c->tls_cert[0] == '\0') != (c->tls_key[0] == '\0')) {
		rv = fail(errmsg, "--tls-cert and --tls-key go together (one is missing)");
		goto out;
	}
	if (c->tls_ca[0] != '\0' && c->tls_cert[0] == '\0') {
		rv = fail(errmsg, "--tls-ca needs --tls-cert and --tls-key");
		goto out;
	}

	*out = *c;
	rv = 0;
out:
	free(c);
	return rv;
}

void kvd_config_auth_header(const struct kvd_config *c, char *buf, size_t size)
{
	if (c->cluster_token[0] != '\0')
		snprintf(buf, size, "Authorization: Bearer %s\r\n", c->cluster_token);
	else if (size > 0)
		buf[0] = '\0';
}
