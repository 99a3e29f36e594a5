/*
 * config.h: the daemon's configuration from flags and environment (API.md §1).
 *
 * Flags win over environment variables. Every malformed or unknown input is
 * reported as one line in errmsg, and the caller exits with status 2.
 */
#ifndef KVD_API_CONFIG_H
#define KVD_API_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVD_CONFIG_MAX_PEERS 16
#define KVD_CONFIG_ID_SIZE   128 /* bytes, including the NUL; equals RAFT_ID_SIZE */

enum kvd_log_level {
	KVD_LOG_DEBUG = 0,
	KVD_LOG_INFO = 1,
	KVD_LOG_WARN = 2,
	KVD_LOG_ERROR = 3,
};

struct kvd_config {
	char id[KVD_CONFIG_ID_SIZE]; /* own id, exactly as configured */
	bool id_from_env;	     /* id came from ADDR: peers report excludes self */
	char listen_host[256];	     /* bind address */
	uint16_t port;		     /* HTTP port */
	char data_dir[4096];	     /* data directory */
	unsigned n_members;	     /* all voting members given, self included */
	char members[KVD_CONFIG_MAX_PEERS][KVD_CONFIG_ID_SIZE];
	bool peers_given;	       /* --peers or PEERS was set */
	char join[KVD_CONFIG_ID_SIZE]; /* --join target, "" if none */
	uint64_t election_timeout_min; /* ms */
	uint64_t election_timeout_max; /* ms */
	uint64_t heartbeat_ms;	       /* ms */
	uint64_t max_value_bytes;      /* bytes */
	uint64_t snapshot_threshold;   /* log entries since the last snapshot */
	char cluster_token[256];       /* "" if none; else visible ASCII */
	char client_token[256];	       /* --client-token / KVD_CLIENT_TOKEN; "" if none */
	char tls_cert[1024];	       /* PEM paths; "" if not given (plain HTTP) */
	char tls_key[1024];
	char tls_ca[1024];	  /* "" if none; else mutual TLS against this CA */
	uint64_t max_connections; /* HTTP connections open at once */
	enum kvd_log_level log_level;
};

/*
 * Parses argv (argv[0] is skipped) and the environment (getenv) into *c.
 * Returns 0, or KVD_EINVAL with one line in errmsg (KVD_ERRMSG_SIZE bytes).
 * *c is fully written only on success.
 */
int kvd_config_parse(int argc, char **argv, struct kvd_config *c, char *errmsg);

/* The Authorization header line ("Authorization: Bearer T\r\n") for the
 * cluster token, or "" without one; buf has size bytes. */
void kvd_config_auth_header(const struct kvd_config *c, char *buf, size_t size);

/*
 * Splits an id "host:port" (host may be empty, meaning 127.0.0.1; IPv6
 * literals in brackets). host receives at most host_size bytes. Returns 0 or
 * KVD_EINVAL for a missing or malformed port.
 */
int kvd_config_split_id(const char *id, char *host, size_t host_size, uint16_t *port);

#endif
