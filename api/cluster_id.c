/*
 * cluster_id.c: which cluster a node's log belongs to, so that nodes of
 * different clusters never mix their logs (API.md §1 Bootstrap).
 *
 * Every founding member of a cluster derives the same id from the sorted
 * member list it bootstraps (FNV-1a, 64 bits), so --peers nodes agree
 * without talking; a lone node's id names itself alone. The id is kept in
 * <data>/cluster-id and sent on every Raft RPC (header X-Kvd-Cluster). A node
 * started to join (or one whose file is empty) takes the id of the first
 * leader that reaches it. A node that hears from another cluster refuses the
 * RPC, unless it is a one-member cluster without key-value data of its own:
 * that node discards its bootstrap state (kvd_cluster_reinit) and joins.
 *
 * Reinitialization, once the workers are idle: LevelDB is swapped for an
 * empty database, snapshot files are removed, the log is reset to empty, the
 * vote is cleared (the term is kept: terms never go back), the new id is
 * written, and the core starts again with no configuration. Every crash point
 * leaves a valid node: before the id file is written it is still the lone
 * cluster it was.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cluster_id.h"
#include "api/common/fileutil.h"
#include "api/log.h"
#include "api/node_internal.h"
#include "api/textutil.h"
#include "engine/engine.h"
#include "kvd/errors.h"
#include "raft/meta.h"

/* The part's state (n->cluster; only this file touches it). */
struct kvd_cluster {
	char id[KVD_CLUSTER_ID_SIZE]; /* "" : not known yet */
	bool file;		      /* <data>/cluster-id exists */
	bool reinit_pending;
	char reinit_id[KVD_CLUSTER_ID_SIZE];
};

int kvd_cluster_create(struct kvd_node *n)
{
	n->cluster = calloc(1, sizeof(*n->cluster));
	if (n->cluster == NULL)
		return KVD_ENOMEM;
	return 0;
}

void kvd_cluster_destroy(struct kvd_node *n)
{
	free(n->cluster);
	n->cluster = NULL;
}

const char *kvd_cluster_id(const struct kvd_node *n)
{
	return n->cluster->id;
}

bool kvd_cluster_id_on_disk(const struct kvd_node *n)
{
	return n->cluster->file;
}

bool kvd_cluster_reinit_pending(const struct kvd_node *n)
{
	return n->cluster->reinit_pending;
}

static void id_path(const struct kvd_node *n, char *path)
{
	snprintf(path, PATH_MAX, "%.4000s/cluster-id", n->cfg.data_dir);
}

int kvd_cluster_id_load(struct kvd_node *n, char *errmsg)
{
	char path[PATH_MAX];
	int rv;

	id_path(n, path);
	rv = kvd_read_small_file(path, n->cluster->id, sizeof(n->cluster->id));
	if (rv == KVD_ENOTFOUND) {
		n->cluster->id[0] = '\0';
		n->cluster->file = false;
		return 0;
	}
	if (rv != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot read %s: %s", path, kvd_strerror(rv));
		return rv == KVD_ETOOBIG ? KVD_ECORRUPT : rv;
	}
	n->cluster->file = true;
	return 0;
}

int kvd_cluster_id_store(struct kvd_node *n, const char *id, char *errmsg)
{
	char path[PATH_MAX];
	char text[KVD_CLUSTER_ID_SIZE + 1];
	int rv;

	id_path(n, path);
	snprintf(text, sizeof(text), "%s\n", id);
	rv = kvd_write_file_durably(path, text, errmsg);
	if (rv == 0) {
		snprintf(n->cluster->id, sizeof(n->cluster->id), "%s", id);
		n->cluster->file = true;
	}
	return rv;
}

void kvd_cluster_id_derive(const struct raft_config *c, char *out)
{
	const char *ids[RAFT_MAX_SERVERS];
	uint64_t h = 1469598103934665603ULL;

	for (unsigned i = 0; i < c->n; i++)
		ids[i] = c->servers[i].id;
	kvd_ids_sort(ids, c->n);
	for (unsigned i = 0; i < c->n; i++) {
		for (const char *p = ids[i]; *p != '\0'; p++) {
			h ^= (unsigned char)*p;
			h *= 1099511628211ULL;
		}
		h ^= ',';
		h *= 1099511628211ULL;
	}
	snprintf(out, KVD_CLUSTER_ID_SIZE, "%016" PRIx64, h);
}

bool kvd_cluster_is_lone(struct kvd_node *n)
{
	const struct raft_config *c = raft_configuration(n->raft);
	return c->n == 1 && c->n_old == 0 && strcmp(c->servers[0].id, n->cfg.id) == 0;
}

const char *kvd_cluster_reinit_id(const struct kvd_node *n)
{
	return n->cluster->reinit_id;
}

void kvd_cluster_reinit_done(struct kvd_node *n)
{
	n->cluster->reinit_pending = false;
	KVD_INFO("bootstrap state discarded; joining another cluster", "cluster=%s",
		 n->cluster->id[0] ? n->cluster->id : "(first leader's)");
}

int kvd_cluster_reinit(struct kvd_node *n, const char *new_id)
{
	if (n->cluster->reinit_pending)
		return 0;
	if (!kvd_cluster_is_lone(n) || kvd_node_has_data(n))
		return KVD_EEXIST;
	n->cluster->reinit_pending = true;
	snprintf(n->cluster->reinit_id, sizeof(n->cluster->reinit_id), "%s", new_id);
	KVD_INFO("discarding bootstrap state to join another cluster", "cluster=%s",
		 new_id[0] ? new_id : "(first leader's)");
	kvd_node_discard_state(n);
	return 0;
}

int kvd_cluster_check(struct kvd_node *n, const char *remote_id, size_t len)
{
	char id[KVD_CLUSTER_ID_SIZE];
	char errmsg[KVD_ERRMSG_SIZE];

	if (remote_id == NULL || len == 0)
		return 0; /* a peer that does not name its cluster */
	if (len >= sizeof(id))
		return KVD_EINVAL;
	for (size_t i = 0; i < len; i++) /* stored and sent back in a header */
		if (remote_id[i] <= ' ' || remote_id[i] >= 0x7f)
			return KVD_EINVAL;
	memcpy(id, remote_id, len);
	id[len] = '\0';
	if (n->cluster->reinit_pending)
		return KVD_EBUSY;
	if (strcmp(id, n->cluster->id) == 0)
		return 0;
	if (n->cluster->id[0] == '\0') {
		if (kvd_cluster_id_store(n, id, errmsg) != 0) {
			KVD_WARN("cannot record the cluster id", "detail=\"%s\"", errmsg);
			return KVD_EBUSY;
		}
		KVD_INFO("joined cluster", "cluster=%s", id);
		return 0;
	}
	if (kvd_cluster_reinit(n, id) == 0)
		return KVD_EBUSY; /* the sender retries once this node has joined */
	return KVD_EEXIST;
}
