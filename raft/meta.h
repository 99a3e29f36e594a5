/*
 * meta.h: durable storage of the Raft term and vote (Raft paper §5.1, Figure
 * 2: currentTerm and votedFor must be persisted before answering RPCs).
 *
 * Two files in the data directory, "meta1" and "meta2", hold alternate
 * versions; each store writes the file that does not hold the newest version,
 * so a torn write can only damage the older copy. Format: docs/formats.md.
 *
 * Thread: not thread-safe per directory; the driver calls these from its one
 * writer thread. The functions take no lock: the caller holds the data
 * directory's lock (raft_log_store_open) for as long as it uses them.
 */
#ifndef KVD_RAFT_META_H
#define KVD_RAFT_META_H

#include <stdint.h>

#include "raft/log_io.h"
#include "raft/raft.h"

#define RAFT_META_FILE_SIZE 160 /* bytes */

struct raft_meta {
	raft_term term;		      /* currentTerm; 0 when fresh */
	char voted_for[RAFT_ID_SIZE]; /* NUL-terminated id, "" for no vote */
	uint64_t sequence;	      /* version loaded or stored; 0 when fresh */
};

/*
 * Loads the newest valid version from dir (borrowed path) into *meta.
 * - Neither file exists: *meta is fresh (term 0, no vote, sequence 0).
 * - One or both valid: the valid one with the higher sequence wins, even if
 *   the other exists and is damaged (a torn write of the older copy).
 * - Files exist but none is valid: KVD_ECORRUPT, errmsg names the files and
 *   what is wrong with each.
 * Returns 0, KVD_ECORRUPT or KVD_EIO. errmsg (KVD_ERRMSG_SIZE bytes, may be
 * NULL) is filled on failure. *meta is written only on success.
 */
int raft_meta_load(const char *dir, struct raft_meta *meta, char *errmsg);

/*
 * Durably stores meta->term and meta->voted_for as the next version: one more
 * than the newest valid version found in the files, written into the file
 * that does not hold the newest version, then fdatasync()ed. The first
 * creation of each file goes through a temporary file, rename and a directory
 * fsync, so a file that exists was complete once. meta->sequence is not read
 * (a fresh struct is fine); on success it is set to the version written.
 * Costs two 160-byte reads (normally from the page cache) and one fdatasync.
 * Returns 0, KVD_EINVAL (voted_for not NUL-terminated), KVD_ENOSPC or KVD_EIO.
 */
int raft_meta_store(const char *dir, struct raft_meta *meta, char *errmsg);

/* The same two, doing every file operation through io (borrowed); the
 * functions above use raft_log_io_posix. */
int raft_meta_load_io(const struct raft_log_io *io, const char *dir, struct raft_meta *meta,
		      char *errmsg);
int raft_meta_store_io(const struct raft_log_io *io, const char *dir, struct raft_meta *meta,
		       char *errmsg);

#endif
