/*
 * node.h: the kvd node, the glue that drives the Raft core with real I/O.
 *
 * A node owns the data directory (the segmented Raft log and term/vote under
 * raft/, LevelDB under kv/, snapshots under snapshots/), one disk-writer
 * thread, one applier thread, the HTTP server and the Raft core. Everything
 * but the two worker threads runs on the loop given to kvd_node_start().
 */
#ifndef KVD_API_NODE_H
#define KVD_API_NODE_H

#include <uv.h>

#include "api/config.h"

struct kvd_node;

/*
 * Recovers the data directory, starts the core and the workers, and opens
 * the HTTP port once recovery is done (for a single-voter cluster: once the
 * node leads and has applied its whole log). Runs the loop internally until
 * ready. On success *out is the running node. Returns 0 or a kvd_error code
 * with one line in errmsg.
 */
int kvd_node_start(uv_loop_t *loop, const struct kvd_config *cfg, struct kvd_node **out,
		   char *errmsg);

/*
 * Graceful stop (SIGTERM/SIGINT): stop accepting, let in-flight requests
 * finish (at most 5 s), flush the log and the state machine, close every
 * handle. done_cb(node) runs on the loop when the node can be destroyed.
 */
void kvd_node_shutdown(struct kvd_node *node, void (*done_cb)(struct kvd_node *node));

/* Frees a node after its shutdown completed. NULL does nothing. */
void kvd_node_destroy(struct kvd_node *node);

#endif
