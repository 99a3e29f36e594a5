/*
 * node_state.h: the node's mode as one explicit state with checked
 * transitions (issue 7), instead of the io_failed / disk_full / recovering /
 * stopping booleans each callback used to test in its own order.
 *
 * The states and what they mean for clients (API.md §6):
 *   RUNNING          writes are proposed, reads served.
 *   DISK_FULL        a log write hit ENOSPC: waiting writes and new writes get
 *                    507, reads are served; a timer restarts the core from
 *                    durable state once the workers are idle.
 *   DISK_RECOVERING  the core was restarted after a full disk; its first
 *                    durable append means space is back. Writes still 507.
 *   IO_FAILED        a disk write failed otherwise (or memory ran out for
 *                    one): the core was told RAFT_EVENT_IO_FAILED; writes get
 *                    503 (507 if the error was ENOSPC), reads are served.
 *   STOPPING         kvd_node_shutdown() began: in-flight requests drain,
 *                    leadership is handed over, the workers finish.
 *
 * Transitions (anything else is a programming error, logged and refused):
 *   RUNNING         -> DISK_FULL        a log write hit ENOSPC
 *   RUNNING         -> IO_FAILED        any other disk write failure
 *   DISK_FULL       -> DISK_RECOVERING  workers idle: the core restarted
 *   DISK_FULL       -> IO_FAILED        out of memory for a disk job
 *   DISK_RECOVERING -> RUNNING          the restarted core's append is durable
 *   DISK_RECOVERING -> DISK_FULL        ENOSPC again
 *   DISK_RECOVERING -> IO_FAILED        out of memory for a disk job
 *   any but STOPPING -> STOPPING        shutdown
 * A node that stops keeps the rules of the state it stopped from for the
 * drain (a node stopped with a full disk still answers writes with 507), so
 * STOPPING records it ("rules"); the disk transitions above keep applying to
 * the recorded state while stopping. IO_FAILED is final until the process
 * restarts.
 *
 * Thread: loop thread only.
 */
#ifndef KVD_API_NODE_STATE_H
#define KVD_API_NODE_STATE_H

#include <stdbool.h>

enum kvd_node_state {
	KVD_NODE_RUNNING = 0,
	KVD_NODE_DISK_FULL,
	KVD_NODE_DISK_RECOVERING,
	KVD_NODE_IO_FAILED,
	KVD_NODE_STOPPING,
};

/* The node's state; embedded in struct kvd_node, zero-initialized (RUNNING).
 * Only node_state.c touches its fields. */
struct kvd_node_mode {
	enum kvd_node_state state;
	enum kvd_node_state rules; /* the state whose rules apply (!= STOPPING) */
};

/* Whether the table above allows from -> to (from != to). */
bool kvd_node_state_allowed(enum kvd_node_state from, enum kvd_node_state to);

/* Lower-case name of a state for log lines ("disk_full"); never NULL. */
const char *kvd_node_state_name(enum kvd_node_state s);

/*
 * Moves m to state to. Moving to the current state does nothing; while
 * STOPPING, a move to another state applies to the recorded rules. A
 * transition the table does not allow is logged at error level and not made.
 * Every change is logged ("node state", from=..., to=...).
 * Returns 0, or KVD_EINVAL for a refused transition.
 */
int kvd_node_mode_set(struct kvd_node_mode *m, enum kvd_node_state to);

/* The state whose rules apply: the state itself, or while STOPPING the state
 * it stopped from (never STOPPING). */
enum kvd_node_state kvd_node_mode_rules(const struct kvd_node_mode *m);

/* True once shutdown began. */
bool kvd_node_mode_stopping(const struct kvd_node_mode *m);

#endif
