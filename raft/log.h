/*
 * log.h: the Raft core's in-memory log (entries after a compaction point).
 *
 * Holds entries offset+1 .. offset+n contiguously, each with its own copy of
 * the data. offset and offset_term describe the entry just before the first
 * one held (the snapshot or compaction point), so the term of index offset is
 * always known (§5.3 consistency check, §7 compaction).
 *
 * Thread: the core's thread only.
 */
#ifndef KVD_RAFT_LOG_H
#define KVD_RAFT_LOG_H

#include "raft/raft.h"

struct raft_log {
	struct raft_entry *entries; /* owned; data of each entry owned */
	unsigned n;
	unsigned cap;
	raft_index offset;     /* index before the first entry held */
	raft_term offset_term; /* term of index offset (0 if offset is 0) */
	size_t bytes;	       /* data bytes held */
};

void raft_log_init(struct raft_log *l);
void raft_log_close(struct raft_log *l);

/* Drops all entries and restarts the log after (index, term). */
void raft_log_reset(struct raft_log *l, raft_index index, raft_term term);

/* Appends a copy of e (index must be last + 1). Returns 0 or KVD_ENOMEM. */
int raft_log_append(struct raft_log *l, const struct raft_entry *e);

/* Removes entries >= index (index > offset). */
void raft_log_truncate(struct raft_log *l, raft_index index);

/* Drops entries <= index (offset <= index <= last). */
void raft_log_compact(struct raft_log *l, raft_index index);

raft_index raft_log_last_index(const struct raft_log *l);
raft_term raft_log_last_term(const struct raft_log *l);

/* Term of the entry at index; 0 if not known (compacted or beyond last). */
raft_term raft_log_term_at(const struct raft_log *l, raft_index index);

/* Entry at index (offset < index <= last), else NULL. Valid until the log
 * next changes. */
const struct raft_entry *raft_log_get(const struct raft_log *l, raft_index index);

#endif
