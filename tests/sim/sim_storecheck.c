/*
 * sim_storecheck.c: the real log store and meta files alone over the
 * simulated disk (sim --store-seeds N): a random mix of appends, syncs,
 * truncations, head removals, resets, term/vote writes, reads, injected disk
 * faults and power failures, checked against a model of what was
 * acknowledged durable.
 *
 * Why besides the cluster runs: a crash here can fall between any two
 * operations, with unsynced data of any shape on the disk, so recovery meets
 * far more crash states per second than in the cluster, and a failure points
 * at the storage code alone.
 *
 * Checks: every reopen succeeds (recovery never refuses what a crash and the
 * loss of unsynced data can produce); every entry acknowledged (a successful
 * sync, truncate, reset) is there with its contents; entries beyond it are
 * ones that were appended; the term/vote read back is the last acknowledged
 * one or a later write.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/log_store.h"
#include "raft/meta.h"
#include "tests/sim/sim.h"
#include "tests/sim/sim_disk.h"

#define SC_MAX 4096 /* entries the model tracks */

struct sc_entry {
	raft_term term;
	uint32_t len;
	uint64_t seed; /* contents are a function of (index, term, seed) */
};

struct sc {
	uint64_t rng;
	struct sim_disk *disk;
	struct raft_log_store *store;
	struct raft_log_store_options opts;
	/* Model: what the store holds in memory (first..last) and what is acked. */
	struct sc_entry e[SC_MAX]; /* by index */
	raft_index first, last, acked_last;
	raft_term prev_term; /* term of first - 1 */
	raft_term meta_term, acked_term;
	char why[1024];
	bool failed;
	bool trace; /* env SIM_TRACE: print every operation */
	unsigned long crashes, mid_op_crashes, faults_seen, ops;
};

static uint64_t sc_rand(struct sc *c)
{
	uint64_t z = (c->rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void sc_payload(raft_index i, const struct sc_entry *x, uint8_t *buf)
{
	uint64_t v = x->seed ^ (i * 0x9e3779b97f4a7c15ull) ^ x->term;
	for (uint32_t k = 0; k < x->len; k++) {
		v = v * 6364136223846793005ull + 1442695040888963407ull;
		buf[k] = (uint8_t)(v >> 56);
	}
}

__attribute__((format(printf, 2, 3))) static void sc_fail(struct sc *c, const char *fmt, ...)
{
	va_list ap;
	if (c->failed) {
		return;
	}
	c->failed = true;
	int used = snprintf(c->why, sizeof(c->why), "op %lu: ", c->ops);
	va_start(ap, fmt);
	vsnprintf(c->why + used, sizeof(c->why) - (size_t)used, fmt, ap);
	va_end(ap);
}

/* Brings the model in line with the store after an error or a reopen. */
static void sc_follow(struct sc *c)
{
	c->first = raft_log_store_first_index(c->store);
	c->last = raft_log_store_last_index(c->store);
	if (c->last < c->first) {
		c->prev_term = raft_log_store_last_term(c->store);
	}
	if (c->acked_last > c->last) {
		c->acked_last = c->last; /* checked by the caller where it matters */
	}
}

/* Reads [from, to] and compares with the model. */
static void sc_verify(struct sc *c, raft_index from, raft_index to, const char *when)
{
	struct raft_entry *ents = NULL;
	uint8_t buf[512];
	char errmsg[KVD_ERRMSG_SIZE] = "";
	size_t n = 0;
	int rv;
	if (from > to) {
		return;
	}
	rv = raft_log_store_read(c->store, from, to, 0, &ents, &n, errmsg);
	if (rv == KVD_EIO) {
		return; /* an injected read error */
	}
	if (rv != 0) {
		sc_fail(c, "%s: read %" PRIu64 "..%" PRIu64 ": %s (%s)", when, from, to,
			kvd_strerror(rv), errmsg);
		return;
	}
	for (size_t k = 0; k < n && !c->failed; k++) {
		const struct sc_entry *x = &c->e[ents[k].index];
		sc_payload(ents[k].index, x, buf);
		if (ents[k].index != from + k || ents[k].term != x->term || ents[k].len != x->len ||
		    (x->len > 0 && memcmp(ents[k].data, buf, x->len) != 0)) {
			sc_fail(c,
				"%s: entry %" PRIu64 " read back as term %" PRIu64
				" len %zu, expected term %" PRIu64 " len %u",
				when, ents[k].index, ents[k].term, ents[k].len, x->term, x->len);
		}
	}
	free(ents);
}

/* Closes the store; every descriptor it opened must be closed with it. */
static void sc_close(struct sc *c)
{
	raft_log_store_close(c->store);
	c->store = NULL;
	if (sim_disk_open_fds(c->disk) != 0) {
		sc_fail(c, "%u descriptors left open by a closed store",
			sim_disk_open_fds(c->disk));
	}
}

static int sc_open(struct sc *c, const char *when)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_meta m;
	raft_index acked = c->acked_last;
	int rv;
	sim_disk_faults_enable(c->disk, false);
	rv = raft_log_store_open("raft", &c->opts, &c->store, errmsg);
	while (rv != 0 && sim_disk_dead(c->disk)) {
		/* An armed power failure fell inside recovery: crash again. */
		sim_disk_crash(c->disk);
		c->crashes++;
		c->mid_op_crashes++;
		rv = raft_log_store_open("raft", &c->opts, &c->store, errmsg);
	}
	if (rv != 0) {
		sc_fail(c, "%s: recovery refused the log: %s (%s)", when, kvd_strerror(rv), errmsg);
		return rv;
	}
	rv = raft_meta_load_io(sim_disk_io(c->disk), "raft", &m, errmsg);
	if (rv != 0) {
		sc_fail(c, "%s: term/vote files refused: %s (%s)", when, kvd_strerror(rv), errmsg);
		return rv;
	}
	if (m.term < c->acked_term) {
		sc_fail(c, "%s: acknowledged term %" PRIu64 " lost: loaded %" PRIu64, when,
			c->acked_term, m.term);
	}
	c->meta_term = c->acked_term = m.term;
	if (raft_log_store_last_index(c->store) < acked) {
		sc_fail(c,
			"%s: acknowledged entries lost: log ends at %" PRIu64
			", entries up to %" PRIu64 " were synced",
			when, raft_log_store_last_index(c->store), acked);
	}
	sc_follow(c);
	/* Everything there must be what was appended (acked or unsynced). */
	sc_verify(c, c->first, c->last, when);
	c->acked_last = c->last; /* recovery synced what it kept */
	sim_disk_faults_enable(c->disk, true);
	return 0;
}

static void sc_error(struct sc *c, int rv)
{
	c->faults_seen++;
	(void)rv;
	/* Like the daemon after a disk error: a restart from what is durable,
	 * here as a process restart (the page cache survives). */
	sc_close(c);
	sc_open(c, "reopen after a disk error");
}

static void sc_step(struct sc *c)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	uint64_t r = sc_rand(c) % 100;
	int rv = 0;
	c->ops++;
	if (sc_rand(c) % 100 < 3) {
		sim_disk_fail_after(c->disk, (unsigned)(1 + sc_rand(c) % 20));
	}
	if (r < 40) { /* append 1..6 entries */
		struct raft_entry ents[6];
		uint8_t bufs[6][300];
		unsigned n = (unsigned)(1 + sc_rand(c) % 6);
		raft_term t = c->last >= c->first ? c->e[c->last].term : c->prev_term;
		if (c->last + n >= SC_MAX) {
			return;
		}
		if (sc_rand(c) % 8 == 0) {
			t++;
		}
		if (t == 0) {
			t = 1;
		}
		for (unsigned k = 0; k < n; k++) {
			raft_index i = c->last + 1 + k;
			c->e[i] = (struct sc_entry){
			    .term = t, .len = (uint32_t)(sc_rand(c) % 300), .seed = sc_rand(c)};
			sc_payload(i, &c->e[i], bufs[k]);
			ents[k] = (struct raft_entry){.index = i,
						      .term = t,
						      .type = RAFT_ENTRY_COMMAND,
						      .data = bufs[k],
						      .len = c->e[i].len};
		}
		rv = raft_log_store_append(c->store, ents, n, errmsg);
		if (rv == 0) {
			c->last += n;
		}
	} else if (r < 65) { /* sync */
		rv = raft_log_store_sync(c->store, errmsg);
		if (rv == 0) {
			c->acked_last = c->last;
		}
	} else if (r < 70 && c->last >= c->first) { /* truncate an unacked or acked tail */
		raft_index from = c->first + sc_rand(c) % (c->last - c->first + 1);
		rv = raft_log_store_truncate(c->store, from, errmsg);
		if (rv == 0) {
			c->last = from - 1;
			c->acked_last = c->last;
		} else if (c->acked_last >= from) {
			c->acked_last = from - 1; /* asked away: may or may not come back */
		}
	} else if (r < 75 && c->acked_last >= c->first) { /* head removal */
		rv = raft_log_store_remove_head(
		    c->store, c->first + sc_rand(c) % (c->acked_last - c->first + 1), errmsg);
		if (rv == 0) {
			c->first = raft_log_store_first_index(c->store);
		}
	} else if (r < 77) { /* reset after a snapshot install */
		raft_index idx = c->last + 1 + sc_rand(c) % 20;
		raft_term t = (c->last >= c->first ? c->e[c->last].term : c->prev_term) + 1;
		if (idx + 10 >= SC_MAX) {
			return;
		}
		rv = raft_log_store_reset(c->store, idx, t, errmsg);
		if (rv == 0) {
			c->first = idx + 1;
			c->last = c->acked_last = idx;
			c->prev_term = t;
			c->e[idx].term = t;
		}
	} else if (r < 85) { /* term/vote */
		struct raft_meta m = {.term = c->meta_term + 1};
		snprintf(m.voted_for, sizeof(m.voted_for), "n%u", (unsigned)(sc_rand(c) % 5));
		rv = raft_meta_store_io(sim_disk_io(c->disk), "raft", &m, errmsg);
		if (rv == 0) {
			c->meta_term = c->acked_term = m.term;
		} else {
			c->faults_seen++;
			rv = 0; /* the store is not involved: retry later */
		}
	} else if (r < 95 && c->last >= c->first) { /* read */
		raft_index a = c->first + sc_rand(c) % (c->last - c->first + 1);
		sc_verify(c, a, c->last, "read");
	} else if (r < 100) { /* power failure */
		sc_close(c);
		sim_disk_crash(c->disk);
		c->crashes++;
		sc_open(c, "reopen after a power failure");
	}
	if (c->trace && c->store != NULL) {
		printf("op %lu r=%u rv=%d first %llu last %llu acked %llu store %llu..%llu %s\n",
		       c->ops, (unsigned)r, rv, (unsigned long long)c->first,
		       (unsigned long long)c->last, (unsigned long long)c->acked_last,
		       (unsigned long long)raft_log_store_first_index(c->store),
		       (unsigned long long)raft_log_store_last_index(c->store), errmsg);
	}
	if (sim_disk_dead(c->disk) && !c->failed) {
		/* The armed power failure fell inside that operation. */
		sc_close(c);
		sim_disk_crash(c->disk);
		c->crashes++;
		c->mid_op_crashes++;
		sc_open(c, "reopen after a power failure inside an operation");
	} else if (rv != 0 && !c->failed) {
		sc_error(c, rv);
	}
}

int sim_storecheck_run(uint64_t seed, unsigned steps, const struct sim_plants *plants, bool verbose,
		       char *why, size_t why_len)
{
	struct sc *c = calloc(1, sizeof(*c));
	struct sim_disk_faults f = {0};
	enum sim_disk_crash_mode mode;
	unsigned page;
	int rv;
	if (c == NULL) {
		abort();
	}
	c->rng = seed * 0x2545f4914f6cdd1dull + 7;
	c->trace = getenv("SIM_TRACE") != NULL;
	mode = sc_rand(c) % 2 == 0 ? SIM_DISK_CRASH_PAGES : SIM_DISK_CRASH_LOSE;
	page = sc_rand(c) % 2 == 0 ? 512 : 4096;
	if (sc_rand(c) % 3 != 0) {
		f.pwrite_eio = (unsigned)(sc_rand(c) % 6);
		f.pwrite_enospc = (unsigned)(sc_rand(c) % 6);
		f.fsync_eio = (unsigned)(sc_rand(c) % 6);
		f.read_eio = (unsigned)(sc_rand(c) % 3);
	}
	static const uint64_t sizes[] = {300, 1024, 4096, 65536};
	c->opts.segment_size = sizes[sc_rand(c) % 4];
	c->opts.strict_recovery = plants->strict_recovery;
	c->disk = sim_disk_create(sc_rand(c), mode, page, &f);
	if (c->disk == NULL) {
		abort();
	}
	sim_disk_plant_fsync_ignored(c->disk, plants->fsync_ignored);
	c->opts.io = sim_disk_io(c->disk);
	c->first = 1;
	sc_open(c, "first open");
	for (unsigned i = 0; i < steps && !c->failed; i++) {
		sc_step(c);
	}
	if (!c->failed) {
		sc_close(c);
		sim_disk_crash(c->disk);
		sc_open(c, "final reopen");
	}
	if (verbose || c->failed) {
		const struct sim_disk_stats *st = sim_disk_stats(c->disk);
		printf(
		    "  store seed %" PRIu64 ": %s crash mode, %u-byte pages, segments of %" PRIu64
		    " bytes, faults (per mille) pwrite EIO %u ENOSPC %u fsync %u read %u; %lu ops, "
		    "%lu power failures (%lu inside an operation), %lu disk errors handled, "
		    "pages kept %lu lost %lu\n",
		    seed, mode == SIM_DISK_CRASH_PAGES ? "pages" : "lose-unsynced", page,
		    c->opts.segment_size, f.pwrite_eio, f.pwrite_enospc, f.fsync_eio, f.read_eio,
		    c->ops, c->crashes, c->mid_op_crashes, c->faults_seen, st->pages_kept,
		    st->pages_lost);
	}
	snprintf(why, why_len, "%s", c->why);
	rv = c->failed ? 1 : 0;
	raft_log_store_close(c->store);
	sim_disk_destroy(c->disk);
	free(c);
	return rv;
}
