/*
 * cluster_id.h: cluster identity, so logs of different clusters never mix,
 * and the discarding of a lone node's bootstrap state when it joins another
 * cluster (API.md §1). Loop thread only.
 */
#ifndef KVD_API_CLUSTER_ID_H
#define KVD_API_CLUSTER_ID_H

#include <stdbool.h>
#include <stddef.h>

#include "raft/raft.h"

#define KVD_CLUSTER_ID_SIZE 40 /* bytes, with the NUL */
#define KVD_CLUSTER_HEADER  "X-Kvd-Cluster"

struct kvd_node;

/* Creates n->cluster (no id known).
 * Returns 0 or KVD_ENOMEM. */
int kvd_cluster_create(struct kvd_node *n);
/* Frees n->cluster (after the close callback); NULL does nothing. */
void kvd_cluster_destroy(struct kvd_node *n);

/* The cluster id ("" : not known yet); valid until the next change. */
const char *kvd_cluster_id(const struct kvd_node *n);
/* True when <data>/cluster-id exists (the node belonged to a cluster). */
bool kvd_cluster_id_on_disk(const struct kvd_node *n);
/* True while a lone node's state is being discarded. */
bool kvd_cluster_reinit_pending(const struct kvd_node *n);
/* The id the node joins once its state is discarded ("" : first leader's). */
const char *kvd_cluster_reinit_id(const struct kvd_node *n);
/* The driver discarded the state and restarted the core (kvd_cluster_reinit
 * asked it to through kvd_node_discard_state()). */
void kvd_cluster_reinit_done(struct kvd_node *n);

/* Reads <data>/cluster-id into n (empty when absent). Returns 0 or a code. */
int kvd_cluster_id_load(struct kvd_node *n, char *errmsg);
/* Writes id (may be "": take the first leader's) durably and adopts it. */
int kvd_cluster_id_store(struct kvd_node *n, const char *id, char *errmsg);
/* The id founding members derive from their configuration (out: SIZE bytes). */
void kvd_cluster_id_derive(const struct raft_config *c, char *out);

/* True when the node's configuration is itself alone. */
bool kvd_cluster_is_lone(struct kvd_node *n);

/*
 * Checks the cluster id a Raft RPC names (remote_id/len; NULL or empty: not
 * named). Returns 0 (same cluster, or adopted now), KVD_EBUSY (this node is
 * discarding its lone bootstrap state to join: the sender should retry) or
 * KVD_EEXIST (this node belongs to another cluster: refuse).
 */
int kvd_cluster_check(struct kvd_node *n, const char *remote_id, size_t len);

/*
 * Discards a lone node's bootstrap state and restarts it with no
 * configuration, to join the cluster named new_id ("" : the first leader
 * that reaches it). Returns 0 (started or already pending) or KVD_EEXIST
 * (not a lone node, or it holds key-value data).
 */
int kvd_cluster_reinit(struct kvd_node *n, const char *new_id);

#endif
