/*
 * sim_snapfiles.c: a node's snapshot files on its simulated disk, written,
 * placed, pruned and chosen by the daemon's own file steps
 * (api/snapshot_files.c), and the install procedure's crash points.
 *
 * Why: the order of the install's file steps (chunk written and its failure
 * reported, file checked, renamed, snapshots/ fsynced, then the log reset,
 * then the report) and what recovery picks decide whether a node restarts
 * after a crash between them. The state machine stays the simulation's
 * (a register map serialized by sim_snap_build); the files, their names and
 * their durability are the real procedure's over sim_disk.
 *
 * The model's durable snapshot (n->dsnap) is what the node may rely on: it
 * moves to an installed snapshot once kvd_snapfiles_place() returned (name
 * durable) and to a local one once its file is placed. At restart
 * kvd_snapfiles_choose() must find a snapshot at least as new as dsnap
 * ("every crashed node restarts"); a newer one (a crash inside place that
 * kept the unsynced rename) is adopted, as the daemon would.
 *
 * Plants (sim --plant, docs/simulation.md): chunk-fail-ignored (a failed
 * chunk write is not reported, the file is renamed into place before it is
 * checked, and recovery deletes the older files), install-unordered (no
 * fsync of snapshots/ after the rename: the log reset relies on a name a
 * crash can take back).
 *
 * Thread: single-threaded.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/common/snapfile.h"
#include "api/snapshot_files.h"
#include "kvd/errors.h"
#include "tests/sim/sim.h"

#define SF_DIR "snap"

static const struct raft_log_io *sf_io(struct sim_node *n)
{
	return sim_disk_io(n->disk);
}

void sim_sf_boot(struct sim_node *n)
{
	const struct raft_log_io *io = sf_io(n);

	(void)io->mkdir(io->ctx, SF_DIR, 0700);
}

/* Reads a whole file of the disk into a malloc'ed buffer. */
static int read_file(struct sim_node *n, const char *path, unsigned char **out, size_t *len)
{
	const struct raft_log_io *io = sf_io(n);
	int fd = io->openat(io->ctx, AT_FDCWD, path, O_RDONLY, 0);
	uint64_t size = 0;
	unsigned char *buf = NULL;
	int rv = 0;

	if (fd < 0)
		return KVD_EIO;
	if (io->fsize(io->ctx, fd, &size) != 0)
		rv = KVD_EIO;
	if (rv == 0) {
		buf = malloc(size ? size : 1);
		if (buf == NULL)
			abort();
		if (size > 0 && io->pread(io->ctx, fd, buf, size, 0) != (ssize_t)size)
			rv = KVD_EIO;
	}
	io->close(io->ctx, fd);
	if (rv != 0) {
		free(buf);
		return rv;
	}
	*out = buf;
	*len = size;
	return 0;
}

/* The check of a snapshot file: it parses (the simulation's state machine
 * stream) and holds the snapshot its name says. */
struct sf_check {
	struct sim_node *n;
};

static int check_file(void *ctx, const char *path)
{
	struct sf_check *c = ctx;
	const char *base = strrchr(path, '/');
	unsigned char *buf = NULL;
	size_t len = 0;
	struct raft_snapshot_meta meta;
	uint64_t kv[SIM_KEYS], index = 0, term = 0;
	int rv = read_file(c->n, path, &buf, &len);

	if (rv != 0)
		return rv;
	if (!kvd_snapfile_parse(base != NULL ? base + 1 : path, &index, &term) ||
	    !sim_snap_parse(buf, len, &meta, kv) || meta.index != index || meta.term != term)
		rv = KVD_ECORRUPT;
	free(buf);
	return rv;
}

int sim_sf_chunk(struct sim *s, struct sim_node *n, const struct raft_snapshot *c)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv = kvd_snapfiles_write_chunk(sf_io(n), SF_DIR, c->offset, c->data, c->len, c->done,
					   errmsg);

	if (rv != 0 && s->p.trace)
		printf("%8llu %s snapshot chunk at %llu not written: %s (%s)%s\n",
		       (unsigned long long)s->now, n->id, (unsigned long long)c->offset,
		       kvd_strerror(rv), errmsg,
		       s->p.plants.chunk_fail_ignored ? " [ignored: plant]" : "");
	if (s->p.plants.chunk_fail_ignored && !sim_disk_dead(n->disk))
		rv = 0; /* planted: the failure is not reported */
	return rv;
}

int sim_sf_check(struct sim *s, struct sim_node *n, raft_index index, raft_term term)
{
	char path[PATH_MAX];
	unsigned char *buf = NULL;
	size_t len = 0;
	struct raft_snapshot_meta meta;
	uint64_t kv[SIM_KEYS];
	int rv;

	(void)s;
	kvd_snapfiles_incoming_path(SF_DIR, path);
	rv = read_file(n, path, &buf, &len);
	if (rv == 0 &&
	    (!sim_snap_parse(buf, len, &meta, kv) || meta.index != index || meta.term != term))
		rv = KVD_ECORRUPT;
	free(buf);
	return rv;
}

int sim_sf_check_placed(struct sim *s, struct sim_node *n, raft_index index, raft_term term)
{
	struct sf_check c = {n};
	char path[PATH_MAX];

	(void)s;
	kvd_snapfile_path(SF_DIR, index, term, path);
	return check_file(&c, path);
}

/* The planted install-unordered: the rename, and no fsync of the
 * directory. */
static int place_unordered(struct sim_node *n, raft_index index, raft_term term)
{
	const struct raft_log_io *io = sf_io(n);
	char from[PATH_MAX], to[PATH_MAX];

	kvd_snapfiles_incoming_path(SF_DIR, from);
	kvd_snapfile_path(SF_DIR, index, term, to);
	return io->renameat(io->ctx, AT_FDCWD, from, to) == 0 ? 0 : KVD_EIO;
}

int sim_sf_place(struct sim *s, struct sim_node *n, raft_index index, raft_term term)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv = s->p.plants.install_unordered
		     ? place_unordered(n, index, term)
		     : kvd_snapfiles_place(sf_io(n), SF_DIR, index, term, errmsg);

	if (rv != 0 && s->p.trace)
		printf("%8llu %s snapshot %llu not placed: %s (%s)\n", (unsigned long long)s->now,
		       n->id, (unsigned long long)index, kvd_strerror(rv), errmsg);
	return rv;
}

void sim_sf_prune(struct sim *s, struct sim_node *n, raft_index keep)
{
	(void)s;
	kvd_snapfiles_prune(sf_io(n), SF_DIR, keep, false);
}

int sim_sf_take(struct sim *s, struct sim_node *n, const struct sim_snap *snap)
{
	const struct raft_log_io *io = sf_io(n);
	char tmp[PATH_MAX], path[PATH_MAX];
	int fd, rv = 0;

	/* As engine_view_write: a temporary file, fsync, rename, then the
	 * directory's fsync. Any failure here (an injected error or an armed
	 * power failure) is turned into a power failure by the caller: the
	 * simulation has no failed-local-snapshot path (the daemon logs it and
	 * keeps the older snapshot, which a restart does as well). */
	snprintf(tmp, sizeof(tmp), SF_DIR "/local.tmp");
	kvd_snapfile_path(SF_DIR, snap->meta.index, snap->meta.term, path);
	fd = io->openat(io->ctx, AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return KVD_EIO;
	if (snap->len > 0 && io->pwrite(io->ctx, fd, snap->buf, snap->len, 0) != (ssize_t)snap->len)
		rv = KVD_EIO;
	if (rv == 0 && io->fsync(io->ctx, fd) != 0)
		rv = KVD_EIO;
	io->close(io->ctx, fd);
	if (rv == 0 && io->renameat(io->ctx, AT_FDCWD, tmp, path) != 0)
		rv = KVD_EIO;
	if (rv == 0) {
		fd = io->openat(io->ctx, AT_FDCWD, SF_DIR, O_RDONLY | O_DIRECTORY, 0);
		if (fd < 0 || io->fsync(io->ctx, fd) != 0)
			rv = KVD_EIO;
		if (fd >= 0)
			io->close(io->ctx, fd);
	}
	if (rv != 0 && s->p.trace)
		printf("%8llu %s local snapshot %llu file not written\n",
		       (unsigned long long)s->now, n->id, (unsigned long long)snap->meta.index);
	return rv;
}

/* The planted recovery's check: none. */
static int check_none(void *ctx, const char *path)
{
	(void)ctx;
	(void)path;
	return 0;
}

bool sim_sf_recover(struct sim *s, struct sim_node *n)
{
	struct sf_check c = {n};
	char path[PATH_MAX] = "";
	uint64_t index = 0, term = 0;
	unsigned char *buf = NULL;
	size_t len = 0;
	struct raft_snapshot_meta meta;
	uint64_t kv[SIM_KEYS];
	int rv;

	rv = kvd_snapfiles_choose(sf_io(n), SF_DIR,
				  s->p.plants.chunk_fail_ignored ? check_none : check_file, &c,
				  &index, &term, path);
	if (rv == KVD_ENOTFOUND)
		index = 0;
	else if (rv != 0) {
		sim_fail(s, "node %s: choosing a snapshot at restart: %s", n->id, kvd_strerror(rv));
		return false;
	}
	if (s->p.plants.chunk_fail_ignored && index > 0) {
		kvd_snapfiles_prune(sf_io(n), SF_DIR, index, false); /* planted: deletes older */
		if (check_file(&c, path) != 0) {
			sim_fail(s,
				 "node %s: recovery chose snapshot %" PRIu64
				 " which is corrupt, and deleted the older ones: the node cannot "
				 "start",
				 n->id, index);
			return false;
		}
	}
	if (index < n->dsnap.meta.index) {
		sim_fail(s,
			 "node %s: recovery found snapshot %" PRIu64
			 " on disk but snapshot %" PRIu64 " (term %" PRIu64
			 ") was durable: the node cannot start",
			 n->id, index, n->dsnap.meta.index, n->dsnap.meta.term);
		return false;
	}
	if (index == n->dsnap.meta.index)
		return true;
	/* Newer than the model: a rename a crash kept; the file was checked. */
	if (read_file(n, path, &buf, &len) != 0 || !sim_snap_parse(buf, len, &meta, kv))
		abort(); /* check_file just read it */
	if (s->p.trace)
		printf("%8llu %s recovery adopts snapshot %llu found on disk (durable was %llu)\n",
		       (unsigned long long)s->now, n->id, (unsigned long long)index,
		       (unsigned long long)n->dsnap.meta.index);
	free(n->dsnap.buf);
	n->dsnap.buf = buf;
	n->dsnap.len = len;
	n->dsnap.meta = meta;
	return true;
}

enum sim_sf_step sim_sf_crash_step(struct sim *s)
{
	uint64_t z;

	if (s->healing || !s->real_disk)
		return SIM_SF_NONE;
	z = (s->late.rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	/* 15% of installs crash, at one of the steps. */
	if (z % 100 >= 15)
		return SIM_SF_NONE;
	return (enum sim_sf_step)(1 + (z / 100) % (SIM_SF_STEPS - 1));
}
