/*
 * metrics.h: counters and histograms exported at GET /metrics in the
 * Prometheus text format (API.md §9).
 *
 * Thread: kvd_metrics_respond and the request counters run on the loop
 * thread; kvd_metrics_fsync is called by the disk writer thread and uses
 * relaxed atomics, so the loop may read it at any time.
 */
#ifndef KVD_API_METRICS_H
#define KVD_API_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "api/http/http_server.h"

struct kvd_node;

/* http_observe_cb, registered on the node's HTTP server: counts every
 * answer by route, method and status, with its latency (loop thread). req is
 * NULL for the server's own protocol errors (counted as route "other"). */
void kvd_metrics_observe(const struct http_request *req, int status, void *user);

/* Records one fdatasync of the log that took ns nanoseconds (writer thread). */
void kvd_metrics_fsync(uint64_t ns);

/* Counts an election started (a real candidacy) or won. */
void kvd_metrics_election(int won);

/* Answers GET /metrics for node n. */
void kvd_metrics_respond(struct kvd_node *n, struct http_request *req);

#endif
