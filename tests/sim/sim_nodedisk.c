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
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/snapshot_files.h"
#include "raft/log_store_internal.h"
#include "raft/meta.h"
#include "tests/sim/sim.h"

#define ND_DIR "raft"

/* The local snapshots' generator constant; SIM_SNAP_SALT (hex or decimal)
 * replaces it, so other timings of the same seeds can be run without a
 * rebuild. 0x10ca2 once hid the stream defect of issue 7 (other constants
 * failed, and 0x10ca2 itself at seed 19,518); since its fix every constant
 * tried passes 10,000 seeds, and 0x10ca2 passes 30,000. Plants caught only
 * with another constant set it in their ctest (tests/sim/CMakeLists.txt). */
static uint64_t sim_nd_snap_salt(void)
{
	const char *v = getenv("SIM_SNAP_SALT");
	return v != NULL && *v != '\0' ? strtoull(v, NULL, 0) : 0x10ca2;
}

/* Per-run disk parameters from their own generator (seeded by the seed), so
 * the choices do not shift the rest of the run's random draws. */
void sim_nd_params(struct sim *s)
{
	static const uint64_t sizes[] = {512, 2048, 16384};
	uint64_t rng = s->p.seed * 0x9e3779b97f4a7c15ull + 0x5eed;
	struct sim tmp = {.rng = rng};

	s->real_disk = !s->p.model_disk;
	s->snap_rng = s->p.seed * 0xd1b54a32d192ed03ull + sim_nd_snap_salt();
	kvd_snapfiles_plant_install_busy_fails = s->p.plants.install_busy_fails;
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
					   .prealloc_size = s->segment_size / 4 + 1,
					   .strict_recovery = s->p.plants.strict_recovery,
					   .no_seal = s->p.plants.no_seal,
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
	n->bound_have = false; /* what the old store removed is not this one's */
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
			/* The segment cut becomes the open one again, even one the
			 * last head removal kept for its later entries. */
			n->bound_last = UINT64_MAX;
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

/* ------------------------------------------------------------ disk bound */

struct nd_bytes {
	struct sim_disk *disk;
	int dir_fd;
	uint64_t bytes;
	unsigned files;
};

static int nd_bytes_add(void *arg, const char *name)
{
	struct nd_bytes *b = arg;
	const struct raft_log_io *io = sim_disk_io(b->disk);
	uint64_t seq, size = 0;
	int fd;
	if (!raft_segment_name_parse(name, &seq))
		return 0;
	fd = io->openat(io->ctx, b->dir_fd, name, O_RDONLY, 0);
	if (fd >= 0 && io->fsize(io->ctx, fd, &size) == 0) {
		b->bytes += size;
		b->files++;
	}
	if (fd >= 0)
		io->close(io->ctx, fd);
	return 0;
}

/* Bytes of g's records of entries >= floor (the whole record area when the
 * segment's entry index is not in memory: a looser bound, never a false
 * alarm). */
static uint64_t nd_records_from(const struct raft_segment *g, raft_index floor)
{
	uint64_t end = g->size - (g->sealed ? RAFT_SEGMENT_SEAL_SIZE : 0);
	if (g->last_index < g->first_index || g->last_index < floor)
		return 0;
	if (g->first_index >= floor || g->offsets == NULL)
		return end - RAFT_SEGMENT_HEADER_SIZE;
	return end - g->offsets[floor - g->first_index];
}

/*
 * The bound (docs/operations.md "Disk use", with the sim's threshold T and a
 * trailing window of 0: the sim removes the log up to its snapshot index u).
 * A removal at u seals the open segment if it holds an entry <= u, so every
 * entry appended after it goes to a segment starting above u. At the next
 * removal u' the store may therefore keep, besides the entries after u'
 * (the log the node still needs), only entries above u (one segment's
 * entries since the previous removal: about T plus the writes that arrived
 * while the snapshot was taken), or, when the previous removal's last index
 * L is above u' (a segment it kept still holds needed entries), nothing
 * older than what that removal kept. In bytes: the segment files hold at
 * most a header and a seal per segment plus the records of the entries from
 * that floor on. Without the seal (plant no-seal) the open segment keeps
 * every entry since its size rollover, up to the sim's segment size.
 */
void sim_nd_check_bound(struct sim *s, struct sim_node *n, raft_index up_to)
{
	struct raft_log_store *st = n->store;
	struct nd_bytes b = {.disk = n->disk, .dir_fd = st->dir_fd};
	const struct raft_log_io *io = sim_disk_io(n->disk);
	raft_index first = raft_log_store_first_index(st);
	raft_index floor = first;
	uint64_t bound = 0;

	if (n->bound_have) {
		floor = n->bound_last > up_to ? n->bound_first : n->bound_up_to + 1;
	}
	/* The store never removes its last segment: alone, it is kept whole. */
	if (st->n_segs == 1 && st->segs[0].last_index <= up_to) {
		floor = first;
	}
	for (size_t i = 0; i < st->n_segs; i++) {
		bound += RAFT_SEGMENT_HEADER_SIZE + RAFT_SEGMENT_SEAL_SIZE +
			 nd_records_from(&st->segs[i], floor);
	}
	/* The open segment also holds up to prealloc bytes of zeros after its
	 * records (docs/formats.md, "Preallocation"). */
	if (st->fd >= 0) {
		bound += st->prealloc;
	}
	(void)io->list(io->ctx, st->dir_fd, nd_bytes_add, &b);
	if (b.bytes > bound) {
		sim_fail(s,
			 "disk bound: node %s keeps %" PRIu64 " bytes in %u segment files after "
			 "removing the log up to %" PRIu64 ", bound %" PRIu64 " (entries %" PRIu64
			 "..%" PRIu64 ", none below %" PRIu64 " needed; segment size %" PRIu64
			 ", threshold %" PRIu64 ")",
			 n->id, b.bytes, b.files, up_to, bound, first,
			 raft_log_store_last_index(st), floor, s->segment_size,
			 (uint64_t)s->snap_threshold);
	}
	n->bound_have = true;
	n->bound_up_to = up_to;
	n->bound_last = raft_log_store_last_index(st);
	n->bound_first = first;
}
