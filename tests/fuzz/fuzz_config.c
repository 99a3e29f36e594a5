/*
 * fuzz_config.c: flag and environment parsing (api/config.c, API.md §1).
 *
 * The input is split at NUL bytes into strings (at most 32). A string that
 * starts with "ADDR=", "PEERS=", "DATA_DIR=" or "CLUSTER_TOKEN=" sets that
 * environment variable; the others become argv[1..]. Checked: parsing either
 * succeeds with a configuration whose ids all pass kvd_id_valid and whose
 * numbers respect their documented bounds, or fails with one non-empty line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/config.h"
#include "api/textutil.h"
#include "kvd/errors.h"

#define MAX_ARGS 32

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_config: property violated: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const envs[] = {"ADDR", "PEERS", "DATA_DIR", "CLUSTER_TOKEN"};
	char *buf = malloc(size + 1);
	char *argv[MAX_ARGS + 2];
	int argc = 1;
	size_t i = 0;
	struct kvd_config *c = malloc(sizeof(*c));
	char errmsg[KVD_ERRMSG_SIZE] = "";

	if (buf == NULL || c == NULL)
		goto out;
	memcpy(buf, data, size);
	buf[size] = '\0';
	for (unsigned e = 0; e < 4; e++)
		unsetenv(envs[e]);
	argv[0] = "kvd";
	while (i <= size && argc <= MAX_ARGS) {
		char *str = buf + i;
		size_t len = strlen(str);
		unsigned e;

		for (e = 0; e < 4; e++) {
			size_t nlen = strlen(envs[e]);
			if (strncmp(str, envs[e], nlen) == 0 && str[nlen] == '=') {
				setenv(envs[e], str + nlen + 1, 1);
				break;
			}
		}
		if (e == 4)
			argv[argc++] = str;
		i += len + 1;
	}
	argv[argc] = NULL;
	if (kvd_config_parse(argc, argv, c, errmsg) == 0) {
		check(kvd_id_valid(c->id, strlen(c->id)), "own id invalid");
		check(c->n_members >= 1 && c->n_members <= KVD_CONFIG_MAX_PEERS, "member count");
		for (unsigned k = 0; k < c->n_members; k++)
			check(kvd_id_valid(c->members[k], strlen(c->members[k])),
			      "member id invalid");
		check(c->join[0] == '\0' || kvd_id_valid(c->join, strlen(c->join)),
		      "join id invalid");
		check(c->port >= 1, "port 0");
		check(c->election_timeout_min >= 1 &&
			  c->election_timeout_min <= c->election_timeout_max &&
			  c->heartbeat_ms < c->election_timeout_min,
		      "timing bounds");
		check(c->max_value_bytes >= 1, "max value bytes");
	} else {
		check(errmsg[0] != '\0' && strchr(errmsg, '\n') == NULL,
		      "a refusal without one line");
	}
out:
	for (unsigned e = 0; e < 4; e++)
		unsetenv(envs[e]);
	free(buf);
	free(c);
	return 0;
}
