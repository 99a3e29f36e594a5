/*
 * membership.h: /cluster/members, /cluster/transfer-leadership,
 * /cluster/join, /cluster/leave and --join (API.md §3). Loop thread only.
 */
#ifndef KVD_API_MEMBERSHIP_H
#define KVD_API_MEMBERSHIP_H

#include <stdint.h>

#include "api/http/http_server.h"

struct kvd_node;

/* POST /cluster/members on this node (307 unless leader). */
void kvd_members_route(struct kvd_node *n, struct http_request *req);
/* The core finished (error 0) or failed a change started with token. */
void kvd_members_done(struct kvd_node *n, uint64_t token, int error);
/* POST /cluster/transfer-leadership. */
void kvd_transfer_route(struct kvd_node *n, struct http_request *req);
/* POST /cluster/join and POST /cluster/leave, carried out by this node. */
void kvd_join_route(struct kvd_node *n, struct http_request *req);
void kvd_leave_route(struct kvd_node *n, struct http_request *req);
/* GET /raft/status: {"id", "cluster-id", "lone", "has-data"}, which a
 * leader asks before adding this node. */
void kvd_raft_status_route(struct kvd_node *n, struct http_request *req);
/* --join: asks the cluster of n->cfg.join to add this node, until it does.
 * Returns 0 or KVD_ENOMEM. */
int kvd_join_start(struct kvd_node *n);
/* Answers transfers that completed and waits that timed out; call after
 * state changes and periodically. */
void kvd_membership_tick(struct kvd_node *n);

#endif
