/*
 * recovery.c: starting the Raft core from what is durable, at process start
 * and whenever the driver restarts the core (disk full, lone-node reinit).
 *
 * The log store has already cut a torn tail; LevelDB's applied index says
 * where replay starts; the newest good snapshot file names the snapshot the
 * core starts from (snapshots.c restores LevelDB from it when LevelDB is
 * behind). A node that never belonged to a cluster bootstraps one (the
 * founding configuration at index 1); a directory loaded by kvload without
 * --id is adopted. A log that ends before the applied state restarts after
 * it, and a snapshot is taken right after start so peers can be caught up.
 * The core is then given the log tail after its snapshot.
 */
#include "api/recovery.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/applier.h"
#include "api/cluster_id.h"
#include "api/common/datadir.h"
#include "api/log.h"
#include "api/node_internal.h"
#include "api/snapshots.h"
#include "kvd/errors.h"
#include "raft/meta.h"

/* Writes the founding configuration at index 1, term 1 (raft.h). */
static int bootstrap(struct kvd_node *n, char *errmsg)
{
	struct raft_config c;
	struct raft_entry e;
	char id[KVD_CLUSTER_ID_SIZE];
	void *buf = NULL;
	int rv;

	memset(&c, 0, sizeof(c));
	for (unsigned i = 0; i < n->cfg.n_members; i++) {
		rv = raft_config_add(&c, n->cfg.members[i], RAFT_VOTER);
		if (rv != 0) {
			snprintf(errmsg, KVD_ERRMSG_SIZE, "bad member list");
			return rv;
		}
	}
	kvd_cluster_id_derive(&c, id);
	rv = kvd_cluster_id_store(n, id, errmsg);
	if (rv != 0)
		return rv;
	rv = raft_bootstrap_entry(&c, &e, &buf);
	if (rv != 0)
		return rv;
	rv = raft_log_store_append(n->store, &e, 1, errmsg);
	if (rv == 0)
		rv = raft_log_store_sync(n->store, errmsg);
	free(buf);
	if (rv == 0)
		KVD_INFO("bootstrapped cluster", "members=%u", c.n);
	return rv;
}

/*
 * kvload without --id (KVD_ADOPT_FILE): the loaded snapshot names some other
 * single voter. A node started alone on it appends its own one-voter
 * configuration right after the snapshot, as a bootstrap would, and becomes
 * that cluster; then the marker goes.
 */
static int adopt_loaded_state(struct kvd_node *n, const struct raft_snapshot_meta *snap,
			      raft_index applied, raft_index *last, char *errmsg)
{
	char marker[PATH_MAX];
	struct raft_config c;
	struct raft_entry e;
	void *buf = NULL;
	int rv = 0;

	snprintf(marker, sizeof(marker), "%.4000s/" KVD_ADOPT_FILE, n->cfg.data_dir);
	if (access(marker, F_OK) != 0)
		return 0;
	if (n->cfg.peers_given || n->cfg.join[0] != '\0' || snap->index == 0 ||
	    *last != snap->index || applied != snap->index || snap->config.n != 1 ||
	    snap->config.n_old != 0) {
		KVD_WARN("loaded data not adopted: start the node alone (no peers, no --join)",
			 "file=%s", marker);
		return 0;
	}
	if (strcmp(snap->config.servers[0].id, n->cfg.id) != 0) {
		memset(&c, 0, sizeof(c));
		rv = raft_config_add(&c, n->cfg.id, RAFT_VOTER);
		if (rv == 0)
			rv = raft_bootstrap_entry(&c, &e, &buf);
		if (rv == 0) {
			e.index = snap->index + 1;
			e.term = snap->term;
			rv = raft_log_store_append(n->store, &e, 1, errmsg);
		}
		if (rv == 0)
			rv = raft_log_store_sync(n->store, errmsg);
		free(buf);
		if (rv != 0)
			return rv;
		*last = raft_log_store_last_index(n->store);
	}
	if (!kvd_cluster_id_on_disk(n)) { /* a cluster of its own from now on */
		char id[KVD_CLUSTER_ID_SIZE];
		memset(&c, 0, sizeof(c));
		raft_config_add(&c, n->cfg.id, RAFT_VOTER);
		kvd_cluster_id_derive(&c, id);
		rv = kvd_cluster_id_store(n, id, errmsg);
		if (rv != 0)
			return rv;
	}
	if (unlink(marker) != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot remove %s: %s", marker, strerror(errno));
		return KVD_EIO;
	}
	KVD_INFO("adopted the state loaded by kvload", "index=%" PRIu64 " id=%s", snap->index,
		 n->cfg.id);
	return 0;
}

/*
 * The log lost a tail the state machine had applied (a torn last record that
 * had been durable, or a snapshot newer than the log). Applied entries are
 * committed, so the log restarts after the applied index, as after a
 * snapshot, and a snapshot at that point is taken at once so peers can be
 * caught up. When no snapshot covers applied, *sm becomes the state
 * machine's point with the configuration it applied last.
 */
static int continue_after_applied(struct kvd_node *n, raft_index last, uint64_t applied,
				  uint64_t applied_term, raft_index snap_index,
				  struct raft_snapshot_meta *sm, char *errmsg)
{
	int rv;

	KVD_WARN("log ends before the applied state; continuing after it",
		 "last_index=%" PRIu64 " applied_index=%" PRIu64 " dir=%s", last, applied,
		 n->raft_dir);
	rv = raft_log_store_reset(n->store, applied, applied_term, errmsg);
	if (rv != 0)
		return rv;
	if (applied > snap_index) {
		/* Start from the state machine's point, with the
		 * configuration it applied last; the snapshot file
		 * for it follows right after start. */
		void *conf = NULL;
		size_t conf_len = 0;
		if (engine_config_get(n->engine, &conf, &conf_len) != 0 ||
		    raft_config_decode(conf, conf_len, &sm->config) != 0) {
			free(conf);
			snprintf(errmsg, KVD_ERRMSG_SIZE,
				 "the log in %.2000s ends before the applied state and "
				 "the state machine holds no configuration",
				 n->raft_dir);
			return KVD_ECORRUPT;
		}
		free(conf);
		sm->index = applied;
		sm->term = applied_term;
		sm->size = 0;
		kvd_snapshot_want(n);
	}
	return 0;
}

int kvd_recovery_start_core(struct kvd_node *n, raft_index *ready_index, char *errmsg)
{
	struct raft_meta meta;
	struct raft_options opts;
	struct raft_event e = {.type = RAFT_EVENT_START};
	struct raft_entry *entries = NULL;
	size_t n_entries = 0, skip;
	raft_term prev_term = 0;
	uint64_t applied, applied_term;
	raft_index first, last, watch_first;
	struct kvd_snapshot_info snap;
	int rv;

	rv = raft_meta_load(n->raft_dir, &meta, errmsg);
	if (rv != 0)
		return rv;
	rv = kvd_snapshot_recover(n, &e.u.start.snapshot, errmsg);
	if (rv != 0)
		return rv;
	snap = kvd_snapshot_last(n);
	first = raft_log_store_first_index(n->store);
	last = raft_log_store_last_index(n->store);
	engine_applied(n->engine, &applied, &applied_term);
	/* Only a node that never belonged to a cluster bootstraps one. */
	if (last == 0 && snap.index == 0 && applied == 0 && n->cfg.join[0] == '\0' &&
	    !kvd_cluster_id_on_disk(n)) {
		rv = bootstrap(n, errmsg);
		if (rv != 0)
			return rv;
		first = raft_log_store_first_index(n->store);
		last = raft_log_store_last_index(n->store);
	}
	engine_applied(n->engine, &applied, &applied_term);
	rv = adopt_loaded_state(n, &e.u.start.snapshot, applied, &last, errmsg);
	if (rv != 0)
		return rv;
	if (first > applied + 1) {
		snprintf(errmsg, KVD_ERRMSG_SIZE,
			 "the log in %.2000s starts at %" PRIu64
			 " but the state machine has applied only %" PRIu64
			 " and no snapshot covers the gap",
			 n->raft_dir, first, applied);
		return KVD_ECORRUPT;
	}
	if (applied > last) {
		rv = continue_after_applied(n, last, applied, applied_term, snap.index,
					    &e.u.start.snapshot, errmsg);
		if (rv != 0)
			return rv;
		first = raft_log_store_first_index(n->store);
		last = raft_log_store_last_index(n->store);
	}
	/* The core holds the log after its snapshot (raft.h); the watch ring
	 * also gets the trailing entries kept behind it, so that after a crash
	 * a watch reaches as far back as on the running node (routes.c). */
	watch_first = first;
	if (snap.index >= first) {
		raft_index keep = kvd_snapshot_floor(n) + 1;
		watch_first = keep > first ? keep : first;
		first = snap.index + 1;
	}
	if (last >= watch_first && last > 0) {
		rv = raft_log_store_read(n->store, watch_first, last, 0, &entries, &n_entries,
					 errmsg);
		if (rv != 0)
			return rv;
	}
	skip = first - watch_first < n_entries ? first - watch_first : n_entries;
	if (first > 1 && first - 1 == snap.index)
		prev_term = snap.term;
	else if (first > 1 && raft_log_store_term_at(n->store, first - 1, &prev_term, errmsg) != 0)
		prev_term = 0;
	raft_options_default(&opts);
	opts.election_timeout_min = n->cfg.election_timeout_min;
	opts.election_timeout_max = n->cfg.election_timeout_max;
	opts.heartbeat_interval = n->cfg.heartbeat_ms;
	opts.snapshot_trailing = kvd_snapshot_trailing(n);
	n->raft = raft_create(n->cfg.id, &opts, (uint64_t)uv_hrtime() ^ (uint64_t)getpid());
	if (n->raft == NULL) {
		free(entries);
		snprintf(errmsg, KVD_ERRMSG_SIZE, "out of memory");
		return KVD_ENOMEM;
	}
	e.u.start.term = meta.term;
	e.u.start.voted_for = meta.voted_for;
	e.u.start.applied_index = applied;
	e.u.start.prev_index = first > 0 ? first - 1 : 0;
	e.u.start.prev_term = prev_term;
	if (n_entries == skip && snap.index > e.u.start.prev_index) {
		e.u.start.prev_index = snap.index;
		e.u.start.prev_term = snap.term;
	}
	e.u.start.entries = skip > 0 ? entries + skip : entries; /* (entries may be NULL) */
	e.u.start.n_entries = (unsigned)(n_entries - skip);
	/* After a crash the watch ring is rebuilt from these entries. */
	kvd_applier_start(n->applier, applied, watch_first > 0 ? watch_first - 1 : 0, entries,
			  n_entries);
	*ready_index = last;
	KVD_INFO("recovered",
		 "term=%" PRIu64 " first_index=%" PRIu64 " last_index=%" PRIu64
		 " applied_index=%" PRIu64 " replay=%" PRIu64,
		 meta.term, first, last, applied, last - applied);
	rv = kvd_node_step(n, &e);
	free(entries);
	if (rv != 0)
		snprintf(errmsg, KVD_ERRMSG_SIZE, "raft core refused to start: %s",
			 kvd_strerror(rv));
	return rv;
}
