/*
 * sim_main.c: command line of the deterministic Raft simulation.
 *
 *   sim --seed N [--steps S] [--nodes K] [-v] [--history FILE]
 *   sim --seeds COUNT [--first F] [--steps S] [--nodes K] [--replay-check]
 *   sim --seeds-from-env VAR [--first F] [--steps S]   (exit 77 if VAR unset)
 *   sim --store-seeds COUNT [--first F] [--steps S]    (log store alone)
 *   any of them with --plant NAME (repeatable) and --model-disk
 *
 * --replay-check runs every seed twice and fails if the two runs differ in
 * any event (a digest of every event's time, kind and node) or outcome.
 *
 * A run stops at the first failing seed, prints the seed, the broken
 * invariant and the command that replays it exactly, and exits 1.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/sim/sim.h"

static volatile uint64_t current_seed;
static volatile unsigned current_steps;

static void on_crash(int sig)
{
	char buf[160];
	int len = snprintf(buf, sizeof(buf),
			   "\nsim: signal %d while running seed %llu; replay: sim --seed %llu "
			   "--steps %u\n",
			   sig, (unsigned long long)current_seed, (unsigned long long)current_seed,
			   current_steps);
	if (len > 0 && write(2, buf, (size_t)len) < 0)
		_exit(3);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: sim --seed N [--steps S] [--nodes K] [-v] [--history FILE]\n"
		"       sim --seeds COUNT [--first F] [--steps S] [--nodes K] [--replay-check]\n"
		"       sim --seeds-from-env VAR [--first F] [--steps S]\n"
		"       sim --store-seeds COUNT [--first F] [--steps S]\n"
		"options: --plant batch-ack|strict-recovery|completion-match|fsync-ignored|"
		"chunk-fail-ignored|install-unordered|stale-chunk-loss|"
		"parked-answered|held-early|append-oom-success|one-connection|txn-torn|no-seal|"
		"install-busy-fails|no-barrier|keep-writes|ack-other-term|ack-before-apply|fail-"
		"handed-over "
		"(repeatable), "
		"--model-disk\n");
}

static double wall_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool plant_parse(const char *name, struct sim_plants *p)
{
	bool ok = true;
	if (strcmp(name, "batch-ack") == 0) {
		p->batch_ack = true;
	} else if (strcmp(name, "strict-recovery") == 0) {
		p->strict_recovery = true;
	} else if (strcmp(name, "completion-match") == 0) {
		p->completion_match = true;
	} else if (strcmp(name, "chunk-fail-ignored") == 0) {
		p->chunk_fail_ignored = true;
	} else if (strcmp(name, "install-unordered") == 0) {
		p->install_unordered = true;
	} else if (strcmp(name, "fsync-ignored") == 0) {
		p->fsync_ignored = true;
	} else if (strcmp(name, "parked-answered") == 0) {
		p->parked_answered = true;
	} else if (strcmp(name, "held-early") == 0) {
		p->held_early = true;
	} else if (strcmp(name, "append-oom-success") == 0) {
		p->append_oom_success = true;
	} else if (strcmp(name, "one-connection") == 0) {
		p->one_connection = true;
	} else if (strcmp(name, "stale-chunk-loss") == 0) {
		p->stale_chunk_loss = true;
	} else if (strcmp(name, "txn-torn") == 0) {
		p->txn_torn = true;
	} else if (strcmp(name, "no-seal") == 0) {
		p->no_seal = true;
	} else if (strcmp(name, "install-busy-fails") == 0) {
		p->install_busy_fails = true;
	} else if (strcmp(name, "no-barrier") == 0) {
		p->no_barrier = true;
	} else if (strcmp(name, "keep-writes") == 0) {
		p->keep_writes = true;
	} else if (strcmp(name, "ack-other-term") == 0) {
		p->ack_other_term = true;
	} else if (strcmp(name, "ack-before-apply") == 0) {
		p->ack_before_apply = true;
	} else if (strcmp(name, "fail-handed-over") == 0) {
		p->fail_handed_over = true;
	} else {
		ok = false;
	}
	return ok;
}

/* sim --store-seeds: the log store alone over the simulated disk. */
static int store_seeds(const struct sim_params *p, uint64_t first, uint64_t count, bool single)
{
	char why[1024];
	double t0 = wall_seconds();
	for (uint64_t seed = first; seed < first + count; seed++) {
		current_seed = seed;
		if (sim_storecheck_run(seed, p->steps, &p->plants, single || p->verbose, why,
				       sizeof(why)) != 0) {
			printf("FAIL store seed %llu: %s\n", (unsigned long long)seed, why);
			printf(
			    "replay: sim --store-seed %llu --steps %u\n(%llu seeds run, %.1f s)\n",
			    (unsigned long long)seed, p->steps,
			    (unsigned long long)(seed - first + 1), wall_seconds() - t0);
			return 1;
		}
	}
	printf("sim: store seeds %llu..%llu passed, %u steps each, %.1f s\n",
	       (unsigned long long)first, (unsigned long long)(first + count - 1), p->steps,
	       wall_seconds() - t0);
	return 0;
}

static void print_stats(const struct sim *s)
{
	printf("  nodes %u, virtual %llu ms, steps %lu: leaders %lu, commits %lu, crashes %lu, "
	       "partitions %lu, stalls %lu, changes %lu, transfers %lu, snapshots taken %lu "
	       "installed %lu, msgs %lu (dropped %lu), client ops ok %lu fail %lu unknown %lu\n",
	       s->n_nodes, (unsigned long long)s->now, s->step, s->stats.leaders, s->stats.commits,
	       s->stats.crashes, s->stats.partitions, s->stats.stalls, s->stats.changes,
	       s->stats.transfers, s->stats.snaps_taken, s->stats.snaps_installed, s->stats.msgs,
	       s->stats.drops, s->stats.ops_ok, s->stats.ops_fail, s->stats.ops_unknown);
	printf("  transport: %lu requests, %lu responses, %lu timeouts, %lu connection resets, "
	       "%lu refusals, %lu retransmits; %lu appends failed (out of memory)\n",
	       s->stats.http_requests, s->stats.http_responses, s->stats.http_timeouts,
	       s->stats.http_resets, s->stats.http_refusals, s->stats.http_retransmits,
	       s->stats.append_ooms);
	if (s->real_disk) {
		unsigned long faults = 0, kept = 0, lost = 0, syncs = 0;
		for (unsigned i = 0; i < s->n_nodes; i++) {
			const struct sim_disk_stats *d;
			if (s->nodes[i].disk == NULL)
				continue;
			d = sim_disk_stats(s->nodes[i].disk);
			faults += d->faults;
			kept += d->pages_kept;
			lost += d->pages_lost;
			syncs += d->syncs;
		}
		printf("  disk: %s crash mode, %u-byte pages, segments of %llu bytes, faults (per "
		       "mille) pwrite EIO %u ENOSPC %u fsync %u read %u; %lu syncs, %lu faults "
		       "injected, %lu disk-error restarts, %lu recoveries, unsynced pages kept "
		       "%lu lost %lu at crashes\n",
		       s->disk_mode == SIM_DISK_CRASH_PAGES ? "pages" : "lose-unsynced",
		       s->disk_page, (unsigned long long)s->segment_size, s->disk_faults.pwrite_eio,
		       s->disk_faults.pwrite_enospc, s->disk_faults.fsync_eio,
		       s->disk_faults.read_eio, syncs, faults, s->disk_errors, s->recoveries, kept,
		       lost);
	}
}

int main(int argc, char **argv)
{
	struct sim_params p = {.steps = 5000};
	uint64_t first = 1, count = 0;
	bool single = false;
	bool store = false;
	const char *history = NULL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
			p.verbose = true;
			continue;
		}
		if (strcmp(a, "--model-disk") == 0) {
			p.model_disk = true;
			continue;
		}
		if (strcmp(a, "--replay-check") == 0) {
			p.replay_check = true;
			continue;
		}
		if (v == NULL) {
			usage();
			return 2;
		}
		i++;
		if (strcmp(a, "--seed") == 0) {
			p.seed = strtoull(v, NULL, 10);
			single = true;
		} else if (strcmp(a, "--store-seed") == 0) {
			p.seed = strtoull(v, NULL, 10);
			single = true;
			store = true;
		} else if (strcmp(a, "--store-seeds") == 0) {
			count = strtoull(v, NULL, 10);
			store = true;
		} else if (strcmp(a, "--plant") == 0) {
			if (!plant_parse(v, &p.plants)) {
				fprintf(stderr, "sim: unknown plant \"%s\"\n", v);
				return 2;
			}
		} else if (strcmp(a, "--seeds") == 0) {
			count = strtoull(v, NULL, 10);
		} else if (strcmp(a, "--seeds-from-env") == 0) {
			const char *e = getenv(v);
			if (e == NULL || *e == '\0') {
				printf("sim: %s not set, skipping the long run\n", v);
				return 77;
			}
			count = strtoull(e, NULL, 10);
		} else if (strcmp(a, "--first") == 0) {
			first = strtoull(v, NULL, 10);
		} else if (strcmp(a, "--steps") == 0) {
			p.steps = (unsigned)strtoul(v, NULL, 10);
		} else if (strcmp(a, "--nodes") == 0) {
			p.nodes = (unsigned)strtoul(v, NULL, 10);
			if (p.nodes < 3 || p.nodes > SIM_MAX_NODES) {
				fprintf(stderr, "sim: --nodes must be 3..%d\n", SIM_MAX_NODES);
				return 2;
			}
		} else if (strcmp(a, "--history") == 0) {
			history = v;
		} else {
			usage();
			return 2;
		}
	}
	if (!single && count == 0) {
		usage();
		return 2;
	}
	if (single) {
		first = p.seed;
		count = 1;
	}
	p.trace = getenv("SIM_TRACE") != NULL;
	signal(SIGABRT, on_crash);
	signal(SIGSEGV, on_crash);
	if (store)
		return store_seeds(&p, first, count, single);

	double t0 = wall_seconds();
	for (uint64_t seed = first; seed < first + count; seed++) {
		struct sim *s = malloc(sizeof(*s));
		if (s == NULL)
			return 3;
		p.seed = seed;
		current_seed = seed;
		current_steps = p.steps;
		int rc = sim_run(&p, s);
		if (p.replay_check) {
			struct sim *again = malloc(sizeof(*again));
			if (again == NULL)
				return 3;
			int rc2 = sim_run(&p, again);
			bool same = rc2 == rc && again->digest == s->digest &&
				    strcmp(again->why, s->why) == 0;
			uint64_t digest2 = again->digest;
			sim_free(again);
			free(again);
			if (!same) {
				printf(
				    "FAIL seed %llu does not replay: digest %016llx then %016llx\n",
				    (unsigned long long)seed, (unsigned long long)s->digest,
				    (unsigned long long)digest2);
				sim_free(s);
				free(s);
				return 1;
			}
		}
		if (single || rc != 0)
			print_stats(s);
		if (history != NULL) {
			/* Written by the checker's own format for lincheck. */
			FILE *f = fopen(history, "w");
			if (f != NULL) {
				linearize_history_dump(s->history, f);
				fclose(f);
			}
		}
		if (rc != 0) {
			printf("FAIL seed %llu: %s\n", (unsigned long long)seed, s->why);
			printf("replay: sim --seed %llu --steps %u%s", (unsigned long long)seed,
			       p.steps, p.nodes ? "" : "\n");
			if (p.nodes)
				printf(" --nodes %u\n", p.nodes);
			printf("(%llu seeds run, %.1f s)\n", (unsigned long long)(seed - first + 1),
			       wall_seconds() - t0);
			sim_free(s);
			free(s);
			return 1;
		}
		sim_free(s);
		free(s);
	}
	printf("sim: seeds %llu..%llu passed, %u steps each, %.1f s\n", (unsigned long long)first,
	       (unsigned long long)(first + count - 1), p.steps, wall_seconds() - t0);
	return 0;
}
