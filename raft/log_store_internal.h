/*
 * log_store_internal.h: what raft/log_store.c and raft/log_recovery.c share.
 * Private to those two files; everyone else includes raft/log_store.h.
 * The invariants of the fields are stated at the top of log_store.c.
 */
#ifndef KVD_RAFT_LOG_STORE_INTERNAL_H
#define KVD_RAFT_LOG_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/log_store.h"
#include "raft/segment.h"

#define RAFT_LOG_STORE_CACHED_INDEXES 4 /* closed segments whose entry index stays in memory */

struct raft_log_store {
	char *dir;
	int dir_fd;
	int lock_fd;
	uint64_t segment_size; /* bytes */
	bool verify_all;       /* open reads every record of closed segments too */
	bool strict_recovery;  /* planted bug (options): see raft_log_store_options */
	bool no_seal;	       /* planted bug (options): see raft_log_store_options */
	struct raft_log_io io; /* file operations (copied from the options) */
	struct raft_segment *segs;
	size_t n_segs;
	size_t cap_segs;
	int fd;		    /* last segment, open for appending; -1 if none or sealed */
	uint64_t prealloc;  /* bytes of zeros to keep ahead of the records; 0: none */
	uint64_t alloc_end; /* bytes: size of fd's file; 0 when not known yet */
	raft_index first_index;
	raft_index last_index;
	raft_term last_term;
	uint64_t next_sequence;
	uint32_t batch;	      /* tag of the records appended until the next sync; never 0 */
	bool batch_used;      /* a record carries that tag: the next sync moves to a new one */
	uint64_t synced_size; /* bytes of the last segment known durable */
	raft_index synced_index;
	raft_term synced_term;
	bool data_dirty;	     /* appended since the last fdatasync */
	bool dir_dirty;		     /* a file was created since the last directory fsync */
	bool failed;		     /* the files are in an unknown state: refuse everything */
	uint8_t *buf;		     /* scratch for encoding and reading */
	size_t buf_cap;		     /* bytes */
	uint64_t clock;		     /* ticks of index use, for eviction */
	char notes[KVD_ERRMSG_SIZE]; /* recovery notes, collected during open */
};

/* The last segment, or NULL when there is none. */
struct raft_segment *raft_log_store_last_segment(struct raft_log_store *s);

/* Makes room for n segments in s->segs. Returns 0 or KVD_ENOMEM. */
int raft_log_store_segs_reserve(struct raft_log_store *s, size_t n);

/* fsyncs the log directory. Returns 0, KVD_EIO or KVD_ENOSPC. */
int raft_log_store_dir_sync(struct raft_log_store *s, char *errmsg);

/* Unlinks segment i's file, drops it from s->segs and fsyncs the directory.
 * Returns 0 or KVD_EIO. */
int raft_log_store_segment_remove(struct raft_log_store *s, size_t i, char *errmsg);

/* Recomputes first/last index and last term from the segments. */
void raft_log_store_bounds_update(struct raft_log_store *s);

/* Records that everything in the files is durable. */
void raft_log_store_mark_synced(struct raft_log_store *s);

/*
 * Recovery at open (raft/log_recovery.c), with the directory open and locked:
 * lists the segments, removes what a crash left half-made, verifies closed
 * segments by seal and the last one fully, cuts a torn tail, opens the last
 * segment for appending and syncs. Notes for the caller go to s->notes.
 * Returns 0, KVD_ECORRUPT, KVD_EIO, KVD_ENOSPC or KVD_ENOMEM.
 */
int raft_log_recovery_run(struct raft_log_store *s, char *errmsg);

#endif
