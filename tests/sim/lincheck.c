/*
 * lincheck.c: checks a recorded client history for linearizability.
 *
 * Usage: lincheck [FILE]   (standard input when FILE is absent or "-")
 *
 * One operation per line (see linearize.h for conditional writes,
 * revisions and transactions):
 *     <client> <put|get|delete> <key> <value|-> <invoke> <return> <ok|fail|unknown>
 * Exit status: 0 linearizable, 1 not linearizable, 2 bad input or a search
 * that exceeded its state budget.
 */
#include <stdio.h>
#include <string.h>

#include "kvd/errors.h"
#include "tests/sim/linearize.h"

int main(int argc, char **argv)
{
	FILE *f = stdin;
	struct linearize_history *h = NULL;
	char line[4096], why[256] = "";
	unsigned long lineno = 0;
	int status = 2;
	bool ok = false;

	if (argc > 2 || (argc == 2 && strcmp(argv[1], "--help") == 0)) {
		fprintf(stderr, "usage: lincheck [FILE]\n");
		return 2;
	}
	if (argc == 2 && strcmp(argv[1], "-") != 0) {
		f = fopen(argv[1], "r");
		if (f == NULL) {
			perror(argv[1]);
			return 2;
		}
	}
	h = linearize_history_create();
	if (h == NULL)
		goto out_file;
	while (fgets(line, sizeof(line), f) != NULL) {
		struct linearize_op op;
		lineno++;
		int rc = linearize_op_parse(line, &op);
		if (rc == KVD_ENOTFOUND)
			continue;
		if (rc == 0)
			rc = linearize_history_add(h, &op);
		if (rc != 0) {
			fprintf(stderr, "lincheck: line %lu: %s\n", lineno, kvd_strerror(rc));
			goto out_history;
		}
	}
	int rc = linearize_history_check(h, 0, &ok, why, sizeof(why));
	if (rc != 0) {
		fprintf(stderr, "lincheck: %s\n", kvd_strerror(rc));
		goto out_history;
	}
	if (ok) {
		printf("linearizable (%zu operations)\n", linearize_history_count(h));
		status = 0;
	} else {
		printf("NOT linearizable: %s\n", why);
		status = 1;
	}
out_history:
	linearize_history_destroy(h);
out_file:
	if (f != stdin)
		fclose(f);
	return status;
}
