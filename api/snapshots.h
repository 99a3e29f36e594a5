/*
 * snapshots.h: local snapshots and log compaction for the node. Loop thread.
 */
#ifndef KVD_API_SNAPSHOTS_H
#define KVD_API_SNAPSHOTS_H

#include <limits.h>

#include "engine/snapshot.h"
#include "raft/raft.h"

struct kvd_node;

/* Path of the snapshot file for (index, term); path has PATH_MAX bytes. */
void kvd_snapshot_path(const struct kvd_node *n, uint64_t index, uint64_t term, char *path);

/* Finds the newest snapshot file in dir (borrowed) that reads back whole
 * (engine_snapshot_check). Damaged ones (KVD_ECORRUPT) met on the way are
 * renamed "<name>.corrupt" and skipped; nothing is deleted. Fills *meta
 * (free its config with engine_snapshot_meta_clear) and path (PATH_MAX
 * bytes). Returns 0, KVD_ENOTFOUND (no usable file), KVD_EIO, KVD_ENOMEM.
 * Any thread (file I/O only). */
int kvd_snapshot_choose(const char *dir, struct engine_snapshot_meta *meta, char *path);

/* Starts a snapshot of the applied state on a worker thread. Returns 0,
 * KVD_EBUSY (one is running), KVD_EEXIST (nothing applied since the last
 * one), or an engine error. */
int kvd_snapshot_take(struct kvd_node *n);

/* An install from the leader ended (installed or failed): POST /log/snapshot
 * requests that waited for it (kvd_snapshot_take() said KVD_EBUSY) get a
 * new local snapshot started for them, or their answer now. */
void kvd_snapshot_after_install(struct kvd_node *n);

/* Takes a snapshot when snapshot-threshold entries were applied since the
 * last one. */
void kvd_snapshot_maybe_take(struct kvd_node *n);

/* At startup: finds the newest snapshot, fills *out (index 0 if none), and
 * restores LevelDB from it when LevelDB is behind. Returns 0 or a code with
 * errmsg. */
int kvd_snapshot_recover(struct kvd_node *n, struct raft_snapshot_meta *out, char *errmsg);

/* Answers the POST /log/snapshot requests waiting for the running snapshot
 * (routes.c). status: the snapshot's result. */
void kvd_snapshot_waiters_done(struct kvd_node *n, int status);

/* Removes snapshot files other than the one at keep_index, and temporary
 * files (including a partly received snapshot). */
void kvd_snapshot_prune(struct kvd_node *n, uint64_t keep_index);

/* Removes a directory tree (best effort). */
void kvd_remove_tree(const char *path);

#endif
