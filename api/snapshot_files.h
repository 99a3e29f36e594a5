/*
 * snapshot_files.h: the file steps of the snapshot procedure (issue 7), apart
 * from the node, LevelDB and the threads, over struct raft_log_io so that the
 * daemon runs them on the real file system (raft_log_io_posix) and the
 * simulation (tests/sim) on its faulty disk, with crashes between steps:
 *  - receive: each chunk of the leader's stream is written at its offset
 *    into <dir>/incoming.tmp (created afresh at offset 0), the last one
 *    fsynced; a failure is reported (the caller refuses the stream, so no
 *    chunk lands after a hole);
 *  - place: once the caller has checked the file, it is renamed to its
 *    snapshot name and the directory fsynced, so the name is durable before
 *    anything (the log reset) relies on it;
 *  - prune: other snapshot files and stale temporary files go;
 *  - choose (recovery): the newest snapshot file that passes the caller's
 *    check; a damaged one is renamed "<name>.corrupt" and skipped, and
 *    nothing is deleted, so an older good one is still there; the chosen
 *    name is made durable (directory fsync), since a crash may have kept a
 *    rename whose own fsync never ran.
 * Names are those of api/common/snapfile.h.
 *
 * Depends on raft/log_io.h, api/common/snapfile.h and kvd/errors.h only.
 *
 * Thread: any one thread at a time per directory (the writer thread for the
 * chunk writes, the applier thread for place, the loop for prune); the
 * functions keep no state.
 */
#ifndef KVD_API_SNAPSHOT_FILES_H
#define KVD_API_SNAPSHOT_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/log_io.h"

#define KVD_SNAPFILES_INCOMING "incoming.tmp"

/*
 * Writes len bytes of data at offset of <dir>/incoming.tmp (offset 0 starts
 * the file afresh); done: fsyncs the file. Returns 0, KVD_ENOSPC or KVD_EIO
 * with errmsg (KVD_ERRMSG_SIZE bytes) saying why. Nothing written counts
 * unless 0 is returned.
 */
int kvd_snapfiles_write_chunk(const struct raft_log_io *io, const char *dir, uint64_t offset,
			      const void *data, size_t len, bool done, char *errmsg);

/* Path of <dir>/incoming.tmp into path (PATH_MAX bytes). */
void kvd_snapfiles_incoming_path(const char *dir, char *path);

/*
 * Gives the checked incoming file its snapshot name (index, term) and fsyncs
 * the directory: on 0 the name is durable. Returns 0 or KVD_EIO with errmsg.
 */
int kvd_snapfiles_place(const struct raft_log_io *io, const char *dir, uint64_t index,
			uint64_t term, char *errmsg);

/* Unlinks the snapshot files of dir other than keep_index's (0: all), and
 * temporary files ("*.tmp") unless keep_tmp (a local snapshot is being
 * written), but never incoming.tmp (a stream may be arriving; the next
 * stream's offset 0 starts it afresh). Best effort: errors are ignored. */
void kvd_snapfiles_prune(const struct raft_log_io *io, const char *dir, uint64_t keep_index,
			 bool keep_tmp);

/* The caller's check of one snapshot file (path): 0 when it reads back
 * whole, KVD_ECORRUPT when damaged, another kvd_error to stop the search. */
typedef int (*kvd_snapfiles_check_cb)(void *ctx, const char *path);

/*
 * Finds the newest snapshot file of dir that check accepts: 0 with *index,
 * *term and path (PATH_MAX bytes) filled; KVD_ENOTFOUND when none (or no
 * dir); the check's error; KVD_EIO when a damaged file cannot be moved aside
 * or the directory cannot be fsynced (the chosen name made durable);
 * KVD_ENOMEM. Damaged files met on the way are renamed "<name>.corrupt"
 * (names no scan picks up again); nothing is deleted.
 */
int kvd_snapfiles_choose(const struct raft_log_io *io, const char *dir,
			 kvd_snapfiles_check_cb check, void *ctx, uint64_t *index, uint64_t *term,
			 char *path);

/*
 * The install's start (item 5 of issue 7), shared by api/snapshots.c and the
 * simulation: the last chunk of a leader's snapshot is durable; local_running
 * says a local snapshot (or POST /log/snapshot) is running, holding a view of
 * LevelDB that cannot be swapped under it. The answer: START the ordered
 * install now, or WAIT until the local snapshot ends (then start it; never
 * interrupt the local one). FAIL is only ever answered by the planted bug
 * install-busy-fails (the simulator's copy, KVD_SNAPFILES_PLANTS): the old
 * daemon tried the install anyway, engine_swap() returned busy and the node
 * exited.
 */
enum kvd_snapfiles_install {
	KVD_SNAPFILES_INSTALL_START = 1,
	KVD_SNAPFILES_INSTALL_WAIT,
	KVD_SNAPFILES_INSTALL_FAIL,
};
enum kvd_snapfiles_install kvd_snapfiles_install_rule(bool local_running);

#ifdef KVD_SNAPFILES_PLANTS
/* Planted bug install-busy-fails (docs/simulation.md): WAIT becomes FAIL. */
extern bool kvd_snapfiles_plant_install_busy_fails;
#endif

#endif
