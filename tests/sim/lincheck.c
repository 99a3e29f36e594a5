/*
 * lincheck.c: checks a recorded client history for linearizability.
 *
 * Usage: lincheck [FILE]   (standard input when FILE is absent or "-")
 *        lincheck --watch APPLIED EVENTS [--prefix P | --key K] [--from R] [--complete]
 *
 * The second form checks a watcher's event stream (EVENTS) against the
 * applied sequence of changes (APPLIED), both in the change format of
 * linearize.h ("<revision> put <key> <value>", "<revision> delete <key>",
 * "<revision> clear"): linearize_watch_check(). Exit status as below
 * (1: the stream differs).
 *
 * One operation per line (see linearize.h for conditional writes,
 * revisions and transactions):
 *     <client> <put|get|delete> <key> <value|-> <invoke> <return> <ok|fail|unknown>
 * Exit status: 0 linearizable, 1 not linearizable, 2 bad input or a search
 * that exceeded its state budget.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvd/errors.h"
#include "tests/sim/linearize.h"

/* Reads the change lines of path into a malloc'd array. Returns 0 or 2
 * (message printed). */
static int read_changes(const char *path, struct linearize_change **out, size_t *n)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	unsigned long lineno = 0;
	size_t cap = 0;
	int status = 0;

	*out = NULL;
	*n = 0;
	if (f == NULL) {
		perror(path);
		return 2;
	}
	while (status == 0 && fgets(line, sizeof(line), f) != NULL) {
		struct linearize_change c;
		lineno++;
		int rc = linearize_change_parse(line, &c);
		if (rc == KVD_ENOTFOUND)
			continue;
		if (rc == 0 && *n == cap) {
			cap = cap ? 2 * cap : 256;
			struct linearize_change *p = realloc(*out, cap * sizeof(*p));
			if (p == NULL)
				rc = KVD_ENOMEM;
			else
				*out = p;
		}
		if (rc != 0) {
			fprintf(stderr, "lincheck: %s: line %lu: %s\n", path, lineno,
				kvd_strerror(rc));
			status = 2;
		} else {
			(*out)[(*n)++] = c;
		}
	}
	fclose(f);
	return status;
}

/* lincheck --watch APPLIED EVENTS [options]. */
static int watch_main(int argc, char **argv)
{
	struct linearize_watch w = {NULL, NULL, 0, false};
	struct linearize_change *applied = NULL, *events = NULL;
	size_t n_applied = 0, n_events = 0;
	char why[512] = "";
	bool ok = false;
	int status = 2;

	for (int i = 4; i < argc; i++) {
		char *end = NULL;
		if (strcmp(argv[i], "--complete") == 0) {
			w.complete = true;
		} else if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc) {
			w.prefix = argv[++i];
		} else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
			w.key = argv[++i];
		} else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
			w.from = strtoull(argv[++i], &end, 10);
			if (*argv[i] < '0' || *argv[i] > '9' || *end != '\0') {
				fprintf(stderr, "lincheck: invalid --from \"%s\"\n", argv[i]);
				return 2;
			}
		} else {
			fprintf(stderr, "lincheck: unknown watch option \"%s\"\n", argv[i]);
			return 2;
		}
	}
	if (read_changes(argv[2], &applied, &n_applied) == 0 &&
	    read_changes(argv[3], &events, &n_events) == 0) {
		int rc = linearize_watch_check(applied, n_applied, events, n_events, &w, &ok, why,
					       sizeof(why));
		if (rc != 0) {
			fprintf(stderr, "lincheck: %s: changes out of revision order\n", argv[2]);
		} else if (ok) {
			printf("stream matches (%zu events of %zu changes)\n", n_events, n_applied);
			status = 0;
		} else {
			printf("stream DIFFERS: %s\n", why);
			status = 1;
		}
	}
	free(applied);
	free(events);
	return status;
}

int main(int argc, char **argv)
{
	FILE *f = stdin;
	struct linearize_history *h = NULL;
	char line[4096], why[256] = "";
	unsigned long lineno = 0;
	int status = 2;
	bool ok = false;

	if (argc >= 4 && strcmp(argv[1], "--watch") == 0)
		return watch_main(argc, argv);
	if (argc > 2 ||
	    (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "--watch") == 0))) {
		fprintf(stderr, "usage: lincheck [FILE]\n"
				"       lincheck --watch APPLIED EVENTS [--prefix P | --key K] "
				"[--from R] [--complete]\n");
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
