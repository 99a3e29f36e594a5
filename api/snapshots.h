/*
 * snapshots.h: the node's snapshots, one part of the driver (issue 7): local
 * snapshots and log compaction, the snapshot received from the leader and
 * its ordered install, the POST /log/snapshot waiters, recovery. The part
 * owns the snapshot state (private to snapshots.c). Loop thread unless said.
 */
#ifndef KVD_API_SNAPSHOTS_H
#define KVD_API_SNAPSHOTS_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/snapshot.h"
#include "raft/raft.h"

struct kvd_node;
struct http_request;

/* The newest durable snapshot (index 0: none). */
struct kvd_snapshot_info {
	raft_index index;
	raft_term term;
	uint64_t size; /* bytes */
};

/* Creates n->snaps (IDLE, no snapshot). Returns 0 or KVD_ENOMEM. */
int kvd_snapshots_create(struct kvd_node *n);

/* Frees n->snaps and the unanswered waiters; does nothing without it. */
void kvd_snapshots_destroy(struct kvd_node *n);

/* The newest durable snapshot. */
struct kvd_snapshot_info kvd_snapshot_last(const struct kvd_node *n);

/* Log entries kept behind a snapshot. */
raft_index kvd_snapshot_trailing(const struct kvd_node *n);

/* The log's floor: the newest snapshot's index minus the trailing entries
 * (0 when that is not positive). The log, the recorded outcomes of
 * conditional writes and the watch ring keep every entry after it, so a
 * watch can start at floor + 1, before and after a crash alike. */
raft_index kvd_snapshot_floor(const struct kvd_node *n);

/* True when no snapshot is being taken or installed. */
bool kvd_snapshot_idle(const struct kvd_node *n);

/* True while a received snapshot is being installed (engine reads 503). */
bool kvd_snapshot_installing(const struct kvd_node *n);

/* Lone-node reinitialization: every snapshot file goes, none is known. */
void kvd_snapshot_forget(struct kvd_node *n);

/* At start: a snapshot is wanted as soon as the node runs (the log was
 * reset after the applied state); kvd_snapshot_take_wanted() starts it. */
void kvd_snapshot_want(struct kvd_node *n);
void kvd_snapshot_take_wanted(struct kvd_node *n);

/* Path of the file receiving a snapshot from the leader (PATH_MAX bytes). */
void kvd_snapshot_incoming_path(const struct kvd_node *n, char *path);

/* The writer wrote a received chunk (kvd_writer_chunk_cb): a failure
 * refuses the stream (the leader restarts it); the last chunk starts the
 * install. */
void kvd_snapshot_chunk_done(struct kvd_node *n, int status, const char *errmsg,
			     const struct raft_snapshot *chunk);

/* Parks a POST /log/snapshot request (req borrowed until answered through
 * kvd_routes_snapshot_answer()) until the running snapshot or install ends.
 * Returns 0 or KVD_ENOMEM. */
int kvd_snapshot_wait(struct kvd_node *n, struct http_request *req);

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

/* Removes snapshot files other than the one at keep_index, and temporary
 * files (including a partly received snapshot). */
void kvd_snapshot_prune(struct kvd_node *n, uint64_t keep_index);

#endif
