/*
 * watch.h: the watcher hub (API.md §13): GET /watch streams as Server-Sent
 * Events, fed with the changes of every applied entry, in log order, by the
 * applier; recent events kept in a bounded ring for watches that start in
 * the past (from=R, Last-Event-ID) and for resuming.
 *
 * Thread: every function on the loop thread.
 */
#ifndef KVD_API_WATCH_H
#define KVD_API_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

struct kvd_watch_hub;
struct http_request;

#define KVD_WATCH_MAX_UNSENT   ((size_t)8 << 20)  /* bytes: a watcher past it is cut */
#define KVD_WATCH_KEEPALIVE_MS 10000		  /* ": keep-alive" period */
#define KVD_WATCH_RING_EVENTS  (1u << 20)	  /* events kept for replay, at most */
#define KVD_WATCH_RING_BYTES   ((size_t)64 << 20) /* their keys and values, at most */

/* Creates the hub, holding no revision yet (kvd_watch_hub_reset() says
 * which the store holds). keepalive_ms: 0 takes KVD_WATCH_KEEPALIVE_MS;
 * ring_events: 0 takes KVD_WATCH_RING_EVENTS. Returns 0 with *out (free
 * with kvd_watch_hub_destroy()) or KVD_ENOMEM. */
int kvd_watch_hub_create(uint64_t keepalive_ms, size_t ring_events, struct kvd_watch_hub **out);

/* Ends every watch: each connection closes once its queued events are sent
 * (node shutdown). Watches started later are served as usual. */
void kvd_watch_hub_end_all(struct kvd_watch_hub *h);

/* Frees the hub (its watches ended, their streams closed); NULL does
 * nothing. */
void kvd_watch_hub_destroy(struct kvd_watch_hub *h);

/* Loop time now (ms): sends ": keep-alive" when the period has passed. */
void kvd_watch_hub_tick(struct kvd_watch_hub *h, uint64_t now);

/* Saves the ring to path (a clean stop: the store holds exactly the
 * revision the ring ends at), so that watches resume across a restart.
 * Returns 0 or KVD_EIO / KVD_ENOSPC. */
int kvd_watch_hub_save(struct kvd_watch_hub *h, const char *path);

/* Loads the ring saved at path if it ends exactly at applied (else ignores
 * it), then removes the file: a later crash must not find it stale.
 * Called right after the first kvd_watch_hub_reset(). Returns whether a
 * ring was loaded. */
bool kvd_watch_hub_load(struct kvd_watch_hub *h, const char *path, uint64_t applied);

/* The store now holds exactly revision applied, reached without the hub
 * seeing its changes (start, snapshot install, reinit): every watch ends
 * (it could not go on exactly; its client resumes with Last-Event-ID), the
 * ring is emptied and earlier revisions answer 410 from now on. */
void kvd_watch_hub_reset(struct kvd_watch_hub *h, uint64_t applied);

/* Entries up to last_index were applied with results[0..n) (borrowed for
 * the call): their changes go to the ring and to every matching watcher. */
void kvd_watch_hub_applied(struct kvd_watch_hub *h, const struct engine_result *results, size_t n,
			   uint64_t last_index);

/* Serves GET /watch (API.md §13) for req (answered before it returns):
 * validates the parameters (400), answers 410 for a start at or below
 * floor (revisions no longer in the log) or older than the ring, else
 * starts the stream and replays what the ring holds from the start. */
void kvd_watch_serve(struct kvd_watch_hub *h, struct http_request *req, uint64_t floor);

/* Watchers connected now. */
size_t kvd_watch_count(const struct kvd_watch_hub *h);

#endif
