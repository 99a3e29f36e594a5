/*
 * sim_disk.h: an in-memory, deterministic, faulty disk behind struct
 * raft_log_io, so the real log store, segment code, recovery and meta files
 * run in the simulation (docs/simulation.md, "Disk model").
 *
 * Model: each file (inode) has durable contents and current contents (what
 * reads see: durable plus unsynced writes). fsync/fdatasync of a file makes
 * its contents durable; fsync of a directory makes the creations, renames
 * and unlinks of names in it durable. Directories made by mkdir are durable
 * at once. A crash closes every descriptor and keeps, per crash mode, the
 * durable state only, or in addition an arbitrary subset of the unsynced
 * pages (512 or 4096 bytes, 16 bytes for "meta*" files: torn term/vote files),
 * each taken or not independently (the file size is the durable or the
 * current one), and the unsynced name changes up to a random point of the
 * order they were made in (a rename is all or nothing).
 *
 * Faults, while enabled, per call with per-disk probabilities (per mille):
 * EIO or ENOSPC from pwrite (nothing written), EIO from fsync/fdatasync of a
 * file (its unsynced contents are dropped: reads see the durable contents,
 * as when the kernel drops dirty pages after a failed writeback), EIO from
 * pread and map.
 *
 * Thread: single-threaded. Every random choice draws from the disk's own
 * generator, seeded at creation, so a run replays exactly.
 */
#ifndef KVD_SIM_DISK_H
#define KVD_SIM_DISK_H

#include <stdbool.h>
#include <stdint.h>

#include "raft/log_io.h"

enum sim_disk_crash_mode {
	SIM_DISK_CRASH_LOSE = 0, /* nothing unsynced survives */
	SIM_DISK_CRASH_PAGES,	 /* an arbitrary subset of the unsynced pages survives */
};

struct sim_disk_faults {
	unsigned pwrite_eio, pwrite_enospc, fsync_eio, read_eio; /* per mille per call */
};

struct sim_disk_stats {
	unsigned long pwrites, syncs, dir_syncs, reads, faults, crashes, pages_kept, pages_lost;
};

struct sim_disk;

/* A new empty disk. page is 512 or 4096 (bytes). NULL on ENOMEM. Freed by
 * sim_disk_destroy(). */
struct sim_disk *sim_disk_create(uint64_t seed, enum sim_disk_crash_mode mode, unsigned page,
				 const struct sim_disk_faults *faults);
void sim_disk_destroy(struct sim_disk *d); /* NULL ok */

/* The operations on d (borrowed; valid while d lives). */
const struct raft_log_io *sim_disk_io(struct sim_disk *d);

/* Turns fault injection on or off (off when created). */
void sim_disk_faults_enable(struct sim_disk *d, bool on);

/* Sets the behaviour of a failed fsync (the "fsync-ignored" planted bug):
 * when true, an injected fsync failure reports success and still drops the
 * unsynced contents. */
void sim_disk_plant_fsync_ignored(struct sim_disk *d, bool on);

/* Power failure: closes every descriptor and applies the crash mode. */
void sim_disk_crash(struct sim_disk *d);

/* Arms a power failure inside the next n (>= 1) mutating calls (pwrite,
 * fsync, fdatasync, ftruncate, rename, unlink, create): that call and every
 * later one fail with EIO until sim_disk_crash(), so a crash can fall in
 * the middle of any storage operation (a meta overwrite before its
 * fdatasync, a reset between its steps). n = 0 disarms (the heal does). */
void sim_disk_fail_after(struct sim_disk *d, unsigned n);

/* True once an armed power failure has happened. */
bool sim_disk_dead(const struct sim_disk *d);

/* Number of descriptors open (for leak checks). */
unsigned sim_disk_open_fds(const struct sim_disk *d);

const struct sim_disk_stats *sim_disk_stats(const struct sim_disk *d);

#endif
