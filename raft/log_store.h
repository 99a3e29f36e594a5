/*
 * log_store.h: the durable Raft log, a directory of segment files.
 *
 * The store keeps entries [first_index, last_index] with contiguous indexes
 * and non-decreasing terms, and knows the term of first_index - 1 (the
 * previous term of the first segment; after a reset, the snapshot's term).
 * Appends are buffered into one write() per batch and made durable by one
 * fdatasync in raft_log_store_sync() (group commit). On-disk format and
 * recovery rules: docs/formats.md. Every file operation goes through the
 * struct raft_log_io of the options (raft/log_io.h).
 *
 * Thread: a store is not thread-safe. All calls on one store must come from
 * one thread at a time (the driver's log writer thread); reads made from
 * another thread need the caller's own mutual exclusion. The calls do
 * synchronous I/O and may block on the disk.
 *
 * Errors: every function that can fail returns 0 or a negative code of enum
 * kvd_error and, when errmsg is not NULL, writes a message of at most
 * KVD_ERRMSG_SIZE bytes naming the file and byte offset involved. Output
 * parameters are written only on success.
 */
#ifndef KVD_RAFT_LOG_STORE_H
#define KVD_RAFT_LOG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "raft/log_io.h"
#include "raft/raft.h"

#define RAFT_LOG_STORE_SEGMENT_SIZE  ((uint64_t)64 << 20) /* bytes, default rollover size */
#define RAFT_LOG_STORE_PREALLOC_SIZE ((uint64_t)1 << 20)  /* bytes, default zeros ahead */

struct raft_log_store_options {
	/* A segment is closed, and the next append starts a new file, once it
	 * holds at least this many bytes. 0 selects RAFT_LOG_STORE_SEGMENT_SIZE.
	 * Small values are for tests. */
	uint64_t segment_size; /* bytes */
	/* Most bytes of zeros written ahead of the records of the last
	 * segment at a time (docs/formats.md, "Preallocation"; smaller chunks
	 * while the segment is young), so that appends overwrite space the
	 * file already has instead of growing it and fdatasync does not also
	 * write the inode. 0 selects RAFT_LOG_STORE_PREALLOC_SIZE; never more
	 * than up to the rollover size plus a seal. */
	uint64_t prealloc_size; /* bytes */
	/* No preallocation: the last segment ends at its last record (tests of
	 * the byte layout). */
	bool no_prealloc;
	/* Also read and verify every record of every closed segment at open,
	 * instead of only its header, seal and last record: startup then costs
	 * a full read of the log. For tools and consistency checks. */
	bool verify_all;
	/* Planted bug, for the simulation only (docs/simulation.md,
	 * "strict-recovery"): recovery refuses a bad record followed by valid
	 * records of the last batch instead of cutting the unsynced batch. */
	bool strict_recovery;
	/* Planted bug, for the simulation only (docs/simulation.md, "no-seal"):
	 * raft_log_store_remove_head() leaves the last segment open even when it
	 * holds entries <= up_to, so up to a whole segment of entries a snapshot
	 * covers stays on disk (the disk-bound defect of issue 7). */
	bool no_seal;
	/* File operations (borrowed; must outlive the store). NULL selects
	 * raft_log_io_posix. */
	const struct raft_log_io *io;
};

struct raft_log_store;

/*
 * Opens (creating dir and an empty log if needed) and recovers the log in dir
 * (borrowed path; copied). Takes an exclusive flock on dir/LOCK, held until
 * close: a second opener gets KVD_ELOCKED. opts may be NULL for defaults.
 *
 * Recovery reads every segment header, the seal and last record of each
 * closed segment (all of it with opts->verify_all), and all of the last
 * segment; a torn write at the end of the
 * last segment (or a last segment whose header never reached the disk) is cut
 * off and described in errmsg, which on success holds "" or such notes for
 * the caller to log. Any other damage is KVD_ECORRUPT, naming file and offset.
 *
 * Returns 0, KVD_ELOCKED, KVD_ECORRUPT, KVD_EIO, KVD_ENOSPC or KVD_ENOMEM. On
 * success *store is a new heap object, freed by raft_log_store_close().
 */
int raft_log_store_open(const char *dir, const struct raft_log_store_options *opts,
			struct raft_log_store **store, char *errmsg);

/* Closes the files, releases the directory lock and frees store. Does not
 * sync: entries appended since the last raft_log_store_sync() may be lost.
 * NULL does nothing. */
void raft_log_store_close(struct raft_log_store *store);

/* Index of the first entry held; last_index + 1 when the log is empty. */
raft_index raft_log_store_first_index(const struct raft_log_store *store);

/* Index of the last entry; first_index - 1 when empty (0 for a new log). */
raft_index raft_log_store_last_index(const struct raft_log_store *store);

/* Term of the last entry; when empty, the term of first_index - 1. */
raft_term raft_log_store_last_term(const struct raft_log_store *store);

/*
 * Appends n entries (borrowed; data copied) with one write(), without sync.
 * entries[0].index must be last_index + 1 and indexes contiguous, terms not
 * lower than last_term nor decreasing, types valid, each payload at most
 * RAFT_LOG_STORE_MAX_ENTRY_SIZE bytes: otherwise KVD_EINVAL (KVD_ETOOBIG for
 * size) and nothing is written. When the current segment reaches the
 * rollover size it is sealed and synced, and the next append opens a new one.
 *
 * On a failed write (KVD_ENOSPC, KVD_ETOOBIG for a file size limit, KVD_EIO)
 * the file is cut back to what the last sync covered and last_index falls
 * back to the last synced entry (earlier unsynced appends are dropped too, as
 * by raft_log_store_discard_unsynced()); the store stays usable and the
 * caller appends again from last_index + 1 once space returns. If the write
 * succeeded but the rollover sync failed, entries not yet synced are
 * dropped as described at raft_log_store_sync(). Returns 0 or the codes above,
 * or KVD_ENOMEM.
 */
int raft_log_store_append(struct raft_log_store *store, const struct raft_entry *entries, size_t n,
			  char *errmsg);

#define RAFT_LOG_STORE_MAX_ENTRY_SIZE ((size_t)256 << 20) /* bytes of entry data */

/*
 * Makes every appended entry durable: one fdatasync of the current segment,
 * plus one fsync of the directory if a segment file was created since the
 * last sync. Cheap when nothing is pending.
 *
 * If the fdatasync fails (KVD_ENOSPC, KVD_EIO), the kernel may have dropped
 * the unwritten pages, so the store does not pretend otherwise: it cuts the
 * segment back to what the last successful sync covered, and last_index falls
 * back to that point (the caller re-reads raft_log_store_last_index() and must
 * not report those entries persisted). If even that cut fails, the store is
 * failed and every later call returns KVD_EIO.
 */
int raft_log_store_sync(struct raft_log_store *store, char *errmsg);

/*
 * Forgets every entry appended since the last successful sync: cuts the last
 * segment back to what that sync covered (fdatasync) and lowers last_index
 * to the last synced entry. For a caller whose batch failed part-way (a
 * failed meta write, say): nothing of the batch may count as durable, and
 * the caller goes on from raft_log_store_last_index(). Cheap when nothing is
 * pending. Returns 0, or KVD_EIO when the cut fails (the store is failed).
 */
int raft_log_store_discard_unsynced(struct raft_log_store *store, char *errmsg);

/*
 * Reads entries [from, to] into one malloc'ed block: *entries points to *n
 * struct raft_entry followed by their data; each entry's data points inside
 * the block (NULL when len is 0). The caller owns the block and frees it with
 * one free(*entries). If max_bytes is not 0 the read stops before the entry
 * whose data would take the total past max_bytes, but always returns at least
 * one entry, so *n may be less than to - from + 1.
 *
 * The records read are verified again; the first read of a closed segment
 * verifies the whole segment (records are only spot-checked at open).
 * Returns 0, KVD_ECOMPACTED (from < first_index), KVD_ENOTFOUND (to >
 * last_index), KVD_EINVAL (from > to), KVD_ECORRUPT, KVD_EIO, KVD_ENOMEM.
 */
int raft_log_store_read(struct raft_log_store *store, raft_index from, raft_index to,
			size_t max_bytes, struct raft_entry **entries, size_t *n, char *errmsg);

/*
 * Term of the entry at index into *term; index may also be first_index - 1
 * (the term before the log starts; 0 for a new log and index 0). Returns 0,
 * KVD_ECOMPACTED (index < first_index - 1), KVD_ENOTFOUND (index >
 * last_index), KVD_ECORRUPT, KVD_EIO, KVD_ENOMEM.
 */
int raft_log_store_term_at(struct raft_log_store *store, raft_index index, raft_term *term,
			   char *errmsg);

/*
 * Removes entries >= from (a follower's conflicting tail, Raft §5.3): later
 * segment files are unlinked newest first with a directory fsync after each,
 * then the segment holding from is cut at that record's boundary and
 * fdatasynced; it becomes the segment appended to. Everything left is
 * durable afterwards. from == last_index + 1 does nothing.
 * Returns 0, KVD_EINVAL (from > last_index + 1), KVD_ECOMPACTED (from <
 * first_index), KVD_ECORRUPT, KVD_EIO, KVD_ENOSPC.
 */
int raft_log_store_truncate(struct raft_log_store *store, raft_index from, char *errmsg);

/*
 * Removes whole segments, oldest first, whose last index is <= up_to, never
 * the last segment, with a directory fsync after each unlink. Call it only
 * once a snapshot or the state machine covering up_to is durable.
 * first_index grows to the first index of the oldest remaining segment.
 * If the last segment then still holds an entry <= up_to, it is sealed and
 * synced (like a rollover; entries appended before are durable afterwards),
 * so the next append starts a new file and a later call can remove it: at
 * most one segment partly made of entries <= up_to is ever kept, whatever
 * the rollover size (bound in docs/operations.md "Disk use").
 * Returns 0, KVD_EIO or KVD_ENOSPC (the seal's sync failed, handled as in
 * raft_log_store_sync()).
 */
int raft_log_store_remove_head(struct raft_log_store *store, raft_index up_to, char *errmsg);

/*
 * Discards the whole log after a snapshot install: afterwards the log is empty
 * with first_index = index + 1, and the next append must be index + 1 with a
 * term >= term (the snapshot's). Atomic across crashes: a new segment marked
 * as a base is created and synced (file and directory) before the old files
 * are unlinked, and open removes any file older than the newest base. If the
 * base segment cannot be created the old log is left as it was and usable;
 * a failure after that (sync, unlink) fails the store (KVD_EIO from then on)
 * and the next open finishes or undoes the reset.
 * Returns 0, KVD_ENOSPC, KVD_EEXIST (a stray file has the new name), KVD_EIO.
 */
int raft_log_store_reset(struct raft_log_store *store, raft_index index, raft_term term,
			 char *errmsg);

#endif
