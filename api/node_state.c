/*
 * node_state.c: the node's mode and its transition table (node_state.h).
 *
 * Why a table: the disk-full recovery, the disk-error stop and the shutdown
 * drain are each a sequence of modes; written as booleans, every callback
 * re-derived the mode from them in its own order (io_failed before
 * disk_full in one place, after in another). Here each move is checked
 * against the documented table and logged, so an impossible sequence shows
 * up in the log instead of as a silently inconsistent node.
 */
#include "api/node_state.h"

#include "api/log.h"
#include "kvd/errors.h"

bool kvd_node_state_allowed(enum kvd_node_state from, enum kvd_node_state to)
{
	bool ok = false;

	if (to == KVD_NODE_STOPPING)
		return from != KVD_NODE_STOPPING;
	switch (from) {
	case KVD_NODE_RUNNING: ok = to == KVD_NODE_DISK_FULL || to == KVD_NODE_IO_FAILED; break;
	case KVD_NODE_DISK_FULL:
		ok = to == KVD_NODE_DISK_RECOVERING || to == KVD_NODE_IO_FAILED;
		break;
	case KVD_NODE_DISK_RECOVERING:
		ok = to == KVD_NODE_RUNNING || to == KVD_NODE_DISK_FULL || to == KVD_NODE_IO_FAILED;
		break;
	case KVD_NODE_IO_FAILED:
	case KVD_NODE_STOPPING: ok = false; break;
	}
	return ok;
}

const char *kvd_node_state_name(enum kvd_node_state s)
{
	switch (s) {
	case KVD_NODE_RUNNING: return "running";
	case KVD_NODE_DISK_FULL: return "disk_full";
	case KVD_NODE_DISK_RECOVERING: return "disk_recovering";
	case KVD_NODE_IO_FAILED: return "io_failed";
	case KVD_NODE_STOPPING: return "stopping";
	}
	return "unknown";
}

int kvd_node_mode_set(struct kvd_node_mode *m, enum kvd_node_state to)
{
	bool stopping = m->state == KVD_NODE_STOPPING;
	enum kvd_node_state *cur = stopping && to != KVD_NODE_STOPPING ? &m->rules : &m->state;
	enum kvd_node_state from = *cur;
	int rv = 0;

	if (from == to)
		return 0;
	if (!kvd_node_state_allowed(from, to)) {
		KVD_ERROR("refused node state transition", "from=%s to=%s",
			  kvd_node_state_name(from), kvd_node_state_name(to));
		rv = KVD_EINVAL;
	} else {
		if (to == KVD_NODE_STOPPING)
			m->rules = from;
		else if (!stopping)
			m->rules = to;
		*cur = to;
		KVD_INFO("node state", "from=%s to=%s%s", kvd_node_state_name(from),
			 kvd_node_state_name(to), stopping ? " stopping=1" : "");
	}
	return rv;
}

enum kvd_node_state kvd_node_mode_rules(const struct kvd_node_mode *m)
{
	return m->rules;
}

bool kvd_node_mode_stopping(const struct kvd_node_mode *m)
{
	return m->state == KVD_NODE_STOPPING;
}
