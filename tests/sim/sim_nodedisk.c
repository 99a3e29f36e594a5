/*
 * sim_nodedisk.c: a simulated node's log and term/vote kept by the real log
 * store (raft/log_store.c, segment.c, log_recovery.c) and meta files
 * (raft/meta.c) over the node's simulated disk (sim_disk.c).
 *
 * Why the durable model stays: n->dlog, d_term and d_vote are what the node
 * acknowledged durable (a batch whose sync succeeded). The invariants of
 * sim_check.c keep reading them, and at every restart the state recovered
 * from the disk must contain them ("no acknowledged write lost"); then the
 * recovered state replaces them, unsynced leftovers included.
 *
 * The writer's batch rule is api/write_rules.c's own kvd_writer_batch_end(),
 * called by sim_node.c; this file does the per-request writes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/meta.h"
#include "tests/sim/sim.h"

#define ND_DIR "raft"

/* Per-run disk parameters from their own generator (seeded by the seed), so
 * the choices do not shift the rest of the run's random draws. */
void sim_nd_params(struct sim *s)
{
	static const uint64_t sizes[] = {512, 2048, 16384};
	uint64_t rng = s->p.seed * 0x9e3779b97f4a7c15ull + 0x5eed;
	struct sim tmp = {.rng = rng};

	s->real_disk = !s->p.model_disk;
	s->disk_mode = sim_chance(&tmp, 50) ? SIM_DISK_CRASH_PAGES : SIM_DISK_CRASH_LOSE;
	s->disk_page = sim_chance(&tmp, 50) ? 512 : 4096;
	s->segment_size = sizes[sim_rand_range(&tmp, 0, 2)];
	memset(&s->disk_faults, 0, sizeof(s->disk_faults));
	if (sim_chance(&tmp, 60)) {
		s->disk_faults.pwrite_eio = (unsigned)sim_rand_range(&tmp, 0, 8);
		s->disk_faults.pwrite_enospc = (unsigned)sim_rand_range(&tmp, 0, 8);
		s->disk_faults.fsync_eio = (unsigned)sim_rand_range(&tmp, 0, 8);
		s->disk_faults.read_eio = (unsigned)sim_rand_range(&tmp, 0, 2);
	}
}

static struct raft_log_store_options nd_options(struct sim *s, struct sim_node *n)
{
	struct raft_log_store_options o = {.segment_size = s->segment_size,
					   .strict_recovery = s->p.plants.strict_recovery,
					   .io = sim_disk_io(n->disk)};
	return o;
}

void sim_nd_boot(struct sim *s, struct sim_node *n)
{
	struct raft_log_store_options o;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_meta m = {.term = n->d_term};
	int rv = 0;

	n->disk = sim_disk_create(sim_rand(s), (enum sim_disk_crash_mode)s->disk_mode, s->disk_page,
				  &s->disk_faults);
	if (n->disk == NULL) {
		abort();
	}
	sim_disk_plant_fsync_ignored(n->disk, s->p.plants.fsync_ignored);
	sim_sf_boot(n);
	if (n->dsnap.meta.index > 0 && sim_sf_take(s, n, &n->dsnap) != 0)
		sim_fail(s, "node %s: writing the initial snapshot file", n->id);
	o = nd_options(s, n);
	rv = raft_log_store_open(ND_DIR, &o, &n->store, errmsg);
	for (size_t i = 0; rv == 0 && i < n->dlog.n; i++) {
		const struct sim_entry *x = n->dlog.e[i];
		struct raft_entry e = {x->index, x->term, x->type, x->data, x->len};
		rv = raft_log_store_append(n->store, &e, 1, errmsg);
	}
	if (rv == 0) {
		rv = raft_log_store_sync(n->store, errmsg);
	}
	if (rv == 0 && m.term > 0) {
		rv = raft_meta_store_io(sim_disk_io(n->disk), ND_DIR, &m, errmsg);
	}
	if (rv != 0) {
		sim_fail(s, "node %s: writing the initial state: %s (%s)", n->id, kvd_strerror(rv),
			 errmsg);
	}
	raft_log_store_close(n->store);
	n->store = NULL;
}

/* Checks the recovered log against the acknowledged one and rebuilds dlog
 * from the store. */
static bool nd_load_log(struct sim *s, struct sim_node *n)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	raft_index first = raft_log_store_first_index(n->store);
	raft_index last = raft_log_store_last_index(n->store);
	raft_index snap = n->dsnap.meta.index;
	struct raft_entry *ents = NULL;
	struct sim_log fresh = {0};
	size_t got = 0;
	int rv = 0;

	if (last >= first) {
		rv = raft_log_store_read(n->store, first, last, 0, &ents, &got, errmsg);
	}
	if (rv != 0) {
		sim_fail(s, "node %s: reading the recovered log %" PRIu64 "..%" PRIu64 ": %s (%s)",
			 n->id, first, last, kvd_strerror(rv), errmsg);
		return false;
	}
	fresh.first = first;
	fresh.prev_term = 0;
	if (first > 1 || last >= first) {
		raft_term t = 0;
		if (raft_log_store_term_at(n->store, first - 1, &t, errmsg) == 0) {
			fresh.prev_term = t;
		}
	}
	for (size_t i = 0; i < got; i++) {
		struct sim_entry *x = sim_entry_new(ents[i].index, ents[i].term, ents[i].type,
						    ents[i].data, ents[i].len);
		sim_log_push(&fresh, x);
		sim_entry_unref(x);
	}
	free(ents);
	/* No acknowledged entry lost (those under the snapshot excepted). */
	for (size_t i = 0; i < n->dlog.n && !s->failed; i++) {
		const struct sim_entry *want = n->dlog.e[i];
		const struct sim_entry *have = sim_log_get(&fresh, want->index);
		if (want->index <= snap) {
			continue;
		}
		if (have == NULL || have->term != want->term || have->hash != want->hash) {
			sim_fail(s,
				 "node %s: acknowledged entry %" PRIu64 " (term %" PRIu64
				 ") lost at restart: the recovered log holds %" PRIu64 "..%" PRIu64
				 "%s",
				 n->id, want->index, want->term, first, last,
				 have == NULL ? "" : " with another entry there");
		}
	}
	sim_log_free(&n->dlog);
	n->dlog = fresh;
	return !s->failed;
}

/* The snapshot and the log must meet: the log continues the snapshot, or
 * it is reset to start right after it (what an interrupted install or a
 * log that fell behind leaves). */
static bool nd_fit_snapshot(struct sim *s, struct sim_node *n)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	raft_index snap = n->dsnap.meta.index;
	raft_term t = 0;
	int rv;
	if (snap == 0) {
		return true;
	}
	rv = raft_log_store_term_at(n->store, snap, &t, errmsg);
	if (rv == 0 && t == n->dsnap.meta.term) {
		return true;
	}
	rv = raft_log_store_reset(n->store, snap, n->dsnap.meta.term, errmsg);
	if (rv != 0) {
		sim_fail(s, "node %s: resetting the log to snapshot %" PRIu64 ": %s (%s)", n->id,
			 snap, kvd_strerror(rv), errmsg);
		return false;
	}
	sim_log_reset(&n->dlog, snap, n->dsnap.meta.term);
	return true;
}

bool sim_nd_open(struct sim *s, struct sim_node *n)
{
	struct raft_log_store_options o = nd_options(s, n);
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_meta m;
	int rv;

	sim_disk_faults_enable(n->disk, false);
	sim_disk_fail_after(n->disk, 0); /* no armed power failure left over */
	rv = raft_log_store_open(ND_DIR, &o, &n->store, errmsg);
	while (rv != 0 && sim_disk_dead(n->disk)) {
		/* An armed power failure fell inside recovery: crash again. */
		sim_disk_crash(n->disk);
		rv = raft_log_store_open(ND_DIR, &o, &n->store, errmsg);
	}
	if (rv != 0) {
		sim_fail(s, "node %s: recovery refused its log at restart: %s (%s)", n->id,
			 kvd_strerror(rv), errmsg);
		return false;
	}
	s->recoveries++;
	if (s->p.trace && errmsg[0] != '\0') {
		printf("%8llu %s recovery: %s\n", (unsigned long long)s->now, n->id, errmsg);
	}
	rv = raft_meta_load_io(sim_disk_io(n->disk), ND_DIR, &m, errmsg);
	if (rv != 0) {
		sim_fail(s, "node %s: term/vote files refused at restart: %s (%s)", n->id,
			 kvd_strerror(rv), errmsg);
		return false;
	}
	if (m.term < n->d_term ||
	    (m.term == n->d_term && n->d_vote[0] != '\0' && strcmp(m.voted_for, n->d_vote) != 0)) {
		sim_fail(s,
			 "node %s: acknowledged term/vote %" PRIu64 "/\"%s\" lost at restart: "
			 "loaded %" PRIu64 "/\"%s\"",
			 n->id, n->d_term, n->d_vote, m.term, m.voted_for);
		return false;
	}
	n->d_term = m.term;
	snprintf(n->d_vote, sizeof(n->d_vote), "%s", m.voted_for);
	if (!sim_sf_recover(s, n) || !nd_load_log(s, n) || !nd_fit_snapshot(s, n)) {
		return false;
	}
	sim_disk_faults_enable(n->disk, !s->healing);
	return true;
}

void sim_nd_close(struct sim *s, struct sim_node *n, bool power_loss)
{
	raft_log_store_close(n->store);
	n->store = NULL;
	if (n->disk != NULL && sim_disk_open_fds(n->disk) != 0)
		sim_fail(s, "node %s: %u descriptors left open by a closed log store", n->id,
			 sim_disk_open_fds(n->disk));
	if (power_loss && n->disk != NULL) {
		sim_disk_crash(n->disk);
	}
}

int sim_nd_write(struct sim *s, struct sim_node *n, const struct sim_req *r, bool *appended)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct raft_entry *ents = NULL;
	int rv = 0;

	if (r->kind == SIM_REQ_META) {
		struct raft_meta m = {.term = r->term};
		snprintf(m.voted_for, sizeof(m.voted_for), "%s", r->vote);
		rv = raft_meta_store_io(sim_disk_io(n->disk), ND_DIR, &m, errmsg);
	} else if (r->kind == SIM_REQ_LOG) {
		if (r->truncate_from != 0 &&
		    r->truncate_from <= raft_log_store_last_index(n->store)) {
			rv = raft_log_store_truncate(n->store, r->truncate_from, errmsg);
		}
		if (rv == 0 && r->n_ents > 0) {
			ents = malloc(r->n_ents * sizeof(*ents));
			if (ents == NULL) {
				abort();
			}
			for (unsigned i = 0; i < r->n_ents; i++) {
				const struct sim_entry *x = r->ents[i];
				ents[i] = (struct raft_entry){x->index, x->term, x->type, x->data,
							      x->len};
			}
			rv = raft_log_store_append(n->store, ents, r->n_ents, errmsg);
			*appended = true;
			free(ents);
		}
	}
	if (rv != 0 && s->p.trace) {
		printf("%8llu %s disk error: %s (%s)\n", (unsigned long long)s->now, n->id,
		       kvd_strerror(rv), errmsg);
	}
	return rv;
}

void sim_nd_free(struct sim_node *n)
{
	sim_late_clear(n); /* completions still queued when the run ends */
	raft_log_store_close(n->store);
	n->store = NULL;
	sim_disk_destroy(n->disk);
	n->disk = NULL;
	kvd_writer_track_free(&n->track);
}
