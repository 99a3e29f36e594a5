/*
 * recovery.h: starting the Raft core from the durable state (recovery.c), a
 * part of the driver (issue 7). Loop thread; the writer and the applier are
 * idle.
 */
#ifndef KVD_API_RECOVERY_H
#define KVD_API_RECOVERY_H

#include "raft/raft.h"

struct kvd_node;

/*
 * Loads term, vote, the newest snapshot, the log tail and the applied index
 * (bootstrapping or adopting the data directory when that applies), creates
 * n->raft and steps it with RAFT_EVENT_START. *ready_index: the last index
 * of the log, which a sole voter applies before its port opens. Returns 0 or
 * a kvd_error code with one line in errmsg (KVD_ERRMSG_SIZE bytes).
 */
int kvd_recovery_start_core(struct kvd_node *n, raft_index *ready_index, char *errmsg);

#endif
