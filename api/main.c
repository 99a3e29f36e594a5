/*
 * main.c: the kvd daemon. Parses flags and environment (exit 2 with one
 * stderr line on bad input), raises the open-file limit, starts the node, and
 * on SIGTERM or SIGINT shuts it down gracefully and exits 0. With TLS, the
 * certificate files are read here (a bad file is a startup error, exit 2)
 * and read again on SIGHUP: new connections, served and made, use the new
 * ones; open connections stay up; a failed reload keeps the old ones.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <uv.h>

#include "api/config.h"
#include "api/http/tls.h"
#include "api/log.h"
#include "api/node.h"
#include "kvd/errors.h"

static const char USAGE[] =
    "usage: kvd [flags]\n"
    "  --port N                  HTTP port (default: port of own id, else 8080)\n"
    "  --working-dir D           data directory (env DATA_DIR; default ./data)\n"
    "  --peers LIST              ids of all members, this node included\n"
    "  --addr ID                 this node's id host:port (env ADDR; PEERS: the others)\n"
    "  --join ID                 join the cluster that ID belongs to\n"
    "  --listen HOST             bind address\n"
    "  --election-timeout-ms A-B election timeout range (default 500-1000)\n"
    "  --heartbeat-ms N          heartbeat interval (default 100)\n"
    "  --max-value-bytes N       largest accepted value (default 1048576)\n"
    "  --snapshot-threshold N    log entries between snapshots (default 10000)\n"
    "  --cluster-token T         shared secret (env CLUSTER_TOKEN; not empty)\n"
    "  --max-connections N       HTTP connections open at once (default 20000)\n"
    "  --tls-cert F --tls-key F  serve HTTPS only and speak TLS to peers (PEM)\n"
    "  --tls-ca F                CA for mutual TLS (clients and peers need certificates)\n"
    "  --client-token T          token for the key-value API (env KVD_CLIENT_TOKEN)\n"
    "  --log-level L             debug, info, warn or error (default info)\n";

static uv_signal_t sig_term, sig_int, sig_hup;
static struct kvd_tls_ctx *tls_server, *tls_client;
static struct kvd_node *node;
static int signals_seen;

static void shutdown_done(struct kvd_node *n)
{
	(void)n;
	uv_close((uv_handle_t *)&sig_term, NULL);
	uv_close((uv_handle_t *)&sig_int, NULL);
	uv_close((uv_handle_t *)&sig_hup, NULL);
}

static void tls_log(int level, const char *msg, const char *detail)
{
	kvd_log((enum kvd_log_level)level, msg, "%s", detail);
}

/* SIGHUP: reads the certificate, key and CA files again. */
static void on_hup(uv_signal_t *s, int signum)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";

	(void)s;
	(void)signum;
	if (tls_server == NULL) {
		kvd_log(KVD_LOG_INFO, "SIGHUP: nothing to reload (no TLS)", NULL);
		return;
	}
	if (kvd_tls_ctx_reload(tls_server, errmsg) != 0 ||
	    kvd_tls_ctx_reload(tls_client, errmsg) != 0)
		kvd_log(KVD_LOG_ERROR, "tls reload failed; keeping the old certificate",
			"error=\"%s\"", errmsg);
	else
		kvd_log(KVD_LOG_INFO, "tls certificate reloaded", NULL);
}

/* Builds the TLS contexts from the configuration (none without --tls-cert). */
static int tls_setup(const struct kvd_config *cfg, char *errmsg)
{
	const char *ca = cfg->tls_ca[0] ? cfg->tls_ca : NULL;
	int rc = 0;

	if (cfg->tls_cert[0] == '\0')
		goto out;
	rc = kvd_tls_ctx_create(true, cfg->tls_cert, cfg->tls_key, ca, &tls_server, errmsg);
	if (rc == 0)
		rc =
		    kvd_tls_ctx_create(false, cfg->tls_cert, cfg->tls_key, ca, &tls_client, errmsg);
	if (rc == 0)
		kvd_tls_set_process(tls_server, tls_client, tls_log);
out:
	return rc;
}

static void on_signal(uv_signal_t *s, int signum)
{
	(void)s;
	if (++signals_seen > 1) {
		kvd_log(KVD_LOG_WARN, "second signal; exiting now", "signal=%d", signum);
		exit(0);
	}
	kvd_log(KVD_LOG_INFO, "signal received; stopping", "signal=%d", signum);
	kvd_node_shutdown(node, shutdown_done);
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	struct kvd_config cfg;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	uv_loop_t *loop = uv_default_loop();
	int rv;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(USAGE, stdout);
			return 0;
		}
	}
	if (kvd_config_parse(argc, argv, &cfg, errmsg) != 0) {
		fprintf(stderr, "kvd: %s\n", errmsg);
		return 2;
	}
	kvd_log_set_level(cfg.log_level);
	if (tls_setup(&cfg, errmsg) != 0) {
		fprintf(stderr, "kvd: %s\n", errmsg);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	kvd_log(KVD_LOG_INFO, "starting", "id=%s data_dir=%s port=%u", cfg.id, cfg.data_dir,
		(unsigned)cfg.port);

	rv = kvd_node_start(loop, &cfg, &node, errmsg);
	if (rv != 0) {
		kvd_log(KVD_LOG_ERROR, "startup failed", "error=\"%s\" detail=\"%s\"",
			kvd_strerror(rv), errmsg);
		fprintf(stderr, "kvd: %s\n", errmsg[0] ? errmsg : kvd_strerror(rv));
		return 1;
	}
	uv_signal_init(loop, &sig_term);
	uv_signal_init(loop, &sig_int);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_signal_start(&sig_int, on_signal, SIGINT);
	uv_signal_init(loop, &sig_hup);
	uv_signal_start(&sig_hup, on_hup, SIGHUP);

	uv_run(loop, UV_RUN_DEFAULT);
	kvd_node_destroy(node);
	kvd_tls_set_process(NULL, NULL, NULL);
	kvd_tls_ctx_destroy(tls_server);
	kvd_tls_ctx_destroy(tls_client);
	kvd_log(KVD_LOG_INFO, "stopped", NULL);
	return 0;
}
